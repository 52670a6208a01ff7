//! The migrations `cutover` reports (`PUT /v1/migrations/{name}`): each
//! one's last report and its drain samples of the last 24 hours, for the
//! status page's charts. Kept in `.cutover/migrations/<name>.jsonl`, one
//! JSON line per report or sample appended as it comes, so that a restart
//! keeps the chart; the file is compacted to the last 24 hours when dnsd
//! starts.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::sync::Mutex;

use cutover_control_api::contract::{DrainSample, MigrationReport, MigrationStatus};
use cutover_workspace::Workspace;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// How long samples and finished migrations are kept.
pub const KEEP_SECONDS: u64 = 24 * 3600;
/// Samples are kept one per this many seconds: those of one stretch are
/// merged into its busiest figures as they come.
const SPACING: u64 = 10;
/// At most this many samples per migration: a day of stretches.
const MAX_SAMPLES: usize = (KEEP_SECONDS / SPACING) as usize;
/// At most this many migrations at a time: a report for another is refused.
const MAX_MIGRATIONS: usize = 64;
/// A sample more than this far in the future is refused.
const CLOCK_SKEW: u64 = 300;

/// One line of a migration's file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Report { at: u64, report: MigrationReport },
    Sample(DrainSample),
}

#[derive(Debug)]
struct Entry {
    report: MigrationReport,
    updated_at: u64,
    samples: VecDeque<DrainSample>,
    /// Lines in its file: compacted when well past what is kept.
    lines: usize,
}

impl Entry {
    fn apply(&mut self, line: Line) {
        match line {
            Line::Report { at, report } => {
                self.report = report;
                self.updated_at = at;
            }
            Line::Sample(s) => self.add(s),
        }
    }

    /// Takes a sample in time order: merged into the last one if it falls
    /// in the same stretch, dropped if it is older than the last.
    fn add(&mut self, s: DrainSample) {
        self.updated_at = self.updated_at.max(s.at);
        match self.samples.back_mut() {
            Some(last) if s.at < last.at => {}
            Some(last) if s.at / SPACING == last.at / SPACING => {
                last.at = s.at;
                last.new_flows_per_s = last.new_flows_per_s.max(s.new_flows_per_s);
                last.active_flows = last.active_flows.max(s.active_flows);
                last.distinct_clients = last.distinct_clients.max(s.distinct_clients);
            }
            _ => {
                self.samples.push_back(s);
                if self.samples.len() > MAX_SAMPLES {
                    self.samples.pop_front();
                }
            }
        }
    }

    fn prune(&mut self, now: u64) {
        while self
            .samples
            .front()
            .is_some_and(|s| s.at.saturating_add(KEEP_SECONDS) < now)
        {
            self.samples.pop_front();
        }
    }

    fn kept(&self, now: u64) -> bool {
        self.updated_at.saturating_add(KEEP_SECONDS) >= now
    }

    /// Its file's text: the report, then the samples.
    fn text(&self) -> String {
        let mut text = line(&Line::Report {
            at: self.updated_at,
            report: self.report.clone(),
        });
        for s in &self.samples {
            text.push_str(&line(&Line::Sample(*s)));
        }
        text
    }
}

/// The migrations reported, in memory and in the workspace.
#[derive(Debug)]
pub struct Migrations {
    dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
}

/// Whether `name` can name a file: a domain name's letters only.
fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Migrations {
    /// Reads what earlier runs kept, dropping what is older than a day.
    pub fn open(ws: &Workspace, now: u64) -> Self {
        let dir = ws.root().join(".cutover/migrations");
        let mut entries = BTreeMap::new();
        for file in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = file.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .filter(|n| valid(n))
                .map(str::to_string)
            else {
                continue;
            };
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let mut entry: Option<Entry> = None;
            // A line cut short by a crash is the last one: skipped.
            for line in text
                .lines()
                .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            {
                match (&mut entry, line) {
                    (Some(e), line) => e.apply(line),
                    (None, Line::Report { at, report }) => {
                        entry = Some(Entry {
                            report,
                            updated_at: at,
                            samples: VecDeque::new(),
                            lines: 0,
                        })
                    }
                    (None, Line::Sample(_)) => {}
                }
            }
            match entry {
                Some(mut e) if e.kept(now) => {
                    e.prune(now);
                    entries.insert(name, e);
                }
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let me = Self {
            dir,
            entries: Mutex::new(entries),
        };
        me.compact();
        me
    }

    /// Rewrites each file with what is kept.
    fn compact(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (name, e) in entries.iter_mut() {
            self.rewrite(name, e);
        }
    }

    /// Rewrites `name`'s file with what `e` keeps.
    fn rewrite(&self, name: &str, e: &mut Entry) {
        let path = self.dir.join(format!("{name}.jsonl"));
        let tmp = self.dir.join(format!("{name}.jsonl.tmp"));
        let written = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| private_file(&tmp, false))
            .and_then(|mut f| f.write_all(e.text().as_bytes()))
            .and_then(|()| fs::rename(&tmp, &path));
        match written {
            Ok(()) => e.lines = e.samples.len() + 1,
            Err(err) => warn!(path = %path.display(), %err, "compacting a migration's samples"),
        }
    }

    /// Takes `report` for migration `name` (a fully qualified name) at
    /// `now`. `Err` says why it was refused; nothing was kept then.
    pub fn report(&self, name: &str, mut report: MigrationReport, now: u64) -> Result<(), String> {
        if !valid(name) {
            return Err(format!("{name:?} is not a service name"));
        }
        // A sample from the future or from before the last day is not kept.
        let sample = report.sample.take().filter(|s| {
            s.at <= now.saturating_add(CLOCK_SKEW) && s.at.saturating_add(KEEP_SECONDS) >= now
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.kept(now));
        if !entries.contains_key(name) && entries.len() >= MAX_MIGRATIONS {
            return Err(format!(
                "{MAX_MIGRATIONS} migrations were reported in the last day already"
            ));
        }
        let new = !entries.contains_key(name);
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            report: report.clone(),
            updated_at: now,
            samples: VecDeque::new(),
            lines: 0,
        });
        // The report is written when it changed; a sample always.
        let mut lines = Vec::new();
        if new || entry.report != report {
            lines.push(Line::Report { at: now, report });
        } else {
            entry.updated_at = now;
        }
        lines.extend(sample.map(Line::Sample));
        let mut text = String::new();
        for l in lines {
            text.push_str(&line(&l));
            entry.lines += 1;
            entry.apply(l);
        }
        entry.prune(now);
        // Samples of one stretch are merged in memory but each was
        // appended: the file is rewritten once it holds twice what is kept.
        if entry.lines > 2 * (entry.samples.len() + 1) + 100 {
            self.rewrite(name, entry);
            return Ok(());
        }
        drop(entries);
        // Kept in memory even if the disk refuses it: the chart goes on.
        let path = self.dir.join(format!("{name}.jsonl"));
        let appended = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| private_file(&path, true)?.write_all(text.as_bytes()));
        if let Err(e) = appended {
            warn!(path = %path.display(), %e, "keeping a migration's report");
        }
        Ok(())
    }

    /// Every migration reported in the last day, its samples narrowed to at
    /// most `width` points (the busiest of each stretch), newest report
    /// first.
    pub fn list(&self, now: u64, width: usize) -> Vec<MigrationStatus> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<MigrationStatus> = entries
            .iter()
            .filter(|(_, e)| e.kept(now))
            .map(|(name, e)| MigrationStatus {
                name: name.clone(),
                phase: e.report.phase.clone(),
                from: e.report.from.clone(),
                old: e.report.old.clone(),
                to: e.report.to.clone(),
                ports: e.report.ports.clone(),
                updated_at: e.updated_at,
                samples: narrow(
                    e.samples
                        .iter()
                        .filter(|s| s.at.saturating_add(KEEP_SECONDS) >= now),
                    width,
                ),
            })
            .collect();
        list.sort_by_key(|m| std::cmp::Reverse(m.updated_at));
        list
    }
}

/// A file only dnsd's user reads, as everything under `.cutover/`:
/// appended to, or written anew.
fn private_file(path: &std::path::Path, append: bool) -> std::io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.create(true).mode(0o600);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path)
}

fn line(l: &Line) -> String {
    let mut text = serde_json::to_string(l).unwrap_or_default();
    text.push('\n');
    text
}

/// At most `width` samples: consecutive stretches merged into their
/// busiest figures, at the stretch's last time.
fn narrow<'a>(samples: impl Iterator<Item = &'a DrainSample>, width: usize) -> Vec<DrainSample> {
    let all: Vec<DrainSample> = samples.copied().collect();
    let width = width.max(1);
    if all.len() <= width {
        return all;
    }
    let stretch = all.len().div_ceil(width);
    all.chunks(stretch)
        .map(|chunk| DrainSample {
            at: chunk.last().map_or(0, |s| s.at),
            new_flows_per_s: chunk.iter().map(|s| s.new_flows_per_s).fold(0.0, f64::max),
            active_flows: chunk.iter().map(|s| s.active_flows).max().unwrap_or(0),
            distinct_clients: chunk.iter().map(|s| s.distinct_clients).max().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(phase: &str, sample: Option<DrainSample>) -> MigrationReport {
        MigrationReport {
            phase: phase.into(),
            from: vec!["198.18.0.2".into()],
            old: "198.18.0.2".into(),
            to: "198.18.0.3".into(),
            ports: vec![80],
            sample,
        }
    }

    fn sample(at: u64, clients: u64) -> DrainSample {
        DrainSample {
            at,
            new_flows_per_s: clients as f64 / 2.0,
            active_flows: clients * 2,
            distinct_clients: clients,
        }
    }

    #[test]
    fn reports_and_samples_outlive_a_restart_for_a_day_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let day = KEEP_SECONDS;
        let m = Migrations::open(&ws, 1_000);
        m.report(
            "www.example.test.",
            report("flipped", Some(sample(1_000, 9))),
            1_000,
        )
        .unwrap();
        m.report(
            "www.example.test.",
            report("flipped", Some(sample(1_011, 7))),
            1_011,
        )
        .unwrap();
        m.report("api.example.test.", report("done", None), 1_012)
            .unwrap();
        assert!(
            m.report("../etc/passwd", report("done", None), 1_002)
                .is_err()
        );
        // A line cut short by a crash.
        let path = dir
            .path()
            .join(".cutover/migrations/www.example.test..jsonl");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"sample":{"at":10"#)
            .unwrap();

        let again = Migrations::open(&ws, 2_000);
        let list = again.list(2_000, 100);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "api.example.test.", "newest report first");
        let www = &list[1];
        assert_eq!((www.phase.as_str(), www.samples.len()), ("flipped", 2));
        assert_eq!(www.samples[1].distinct_clients, 7);

        // A day later the samples are gone, and the migrations with them
        // once their last report is a day old too.
        let later = Migrations::open(&ws, 1_012 + day);
        let list = later.list(1_012 + day, 100);
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].samples.is_empty());
        let gone = Migrations::open(&ws, 1_013 + day);
        assert!(gone.list(1_013 + day, 100).is_empty());
    }

    #[test]
    fn a_day_of_samples_a_second_keeps_memory_and_the_file_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let m = Migrations::open(&ws, 0);
        let name = "www.example.test.";
        // Two days of a sample a second, with the same report each time.
        for t in 0..2 * KEEP_SECONDS {
            m.report(name, report("flipped", Some(sample(t, t % 7))), t)
                .unwrap();
        }
        let now = 2 * KEEP_SECONDS - 1;
        // Out of order, from the future, from before the day: not kept.
        for at in [now - 100, now + 10_000, 3] {
            m.report(name, report("flipped", Some(sample(at, 999))), now)
                .unwrap();
        }
        let kept = m.list(now, usize::MAX);
        let samples = &kept[0].samples;
        assert!(
            (MAX_SAMPLES - 1..=MAX_SAMPLES + 1).contains(&samples.len()),
            "{}",
            samples.len()
        );
        assert!(
            samples.iter().all(|s| s.distinct_clients == 6),
            "each stretch's busiest"
        );
        let path = dir
            .path()
            .join(".cutover/migrations/www.example.test..jsonl");
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            lines <= 2 * (MAX_SAMPLES + 1) + 101,
            "{lines} lines on disk"
        );
        // What the file holds reads back as what memory holds.
        let again = Migrations::open(&ws, now);
        assert_eq!(again.list(now, usize::MAX)[0].samples.len(), samples.len());
    }

    #[test]
    fn a_day_of_samples_is_narrowed_to_the_busiest_of_each_stretch() {
        let samples: Vec<DrainSample> = (0..86_400).map(|i| sample(i, 86_400 - i)).collect();
        let narrowed = narrow(samples.iter(), 1_000);
        assert!(
            narrowed.len() <= 1_000 && narrowed.len() > 900,
            "{}",
            narrowed.len()
        );
        assert_eq!(
            narrowed[0].distinct_clients, 86_400,
            "the busiest of the first stretch"
        );
        assert_eq!(narrowed.last().map(|s| s.at), Some(86_399));
    }
}
