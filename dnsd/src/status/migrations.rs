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
/// At most this many samples per migration (one a second for a day).
const MAX_SAMPLES: usize = 90_000;
/// At most this many migrations at a time: a report for another is refused.
const MAX_MIGRATIONS: usize = 256;

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
}

impl Entry {
    fn apply(&mut self, line: Line) {
        match line {
            Line::Report { at, report } => {
                self.report = report;
                self.updated_at = at;
            }
            Line::Sample(s) => {
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
            .is_some_and(|s| s.at + KEEP_SECONDS < now)
        {
            self.samples.pop_front();
        }
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
                        })
                    }
                    (None, Line::Sample(_)) => {}
                }
            }
            match entry {
                Some(mut e) if e.updated_at + KEEP_SECONDS >= now => {
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
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (name, e) in entries.iter() {
            let mut text = line(&Line::Report {
                at: e.updated_at,
                report: e.report.clone(),
            });
            for s in &e.samples {
                text.push_str(&line(&Line::Sample(*s)));
            }
            let path = self.dir.join(format!("{name}.jsonl"));
            let tmp = self.dir.join(format!("{name}.jsonl.tmp"));
            let written = private_file(&tmp, false)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .and_then(|()| fs::rename(&tmp, &path));
            if let Err(e) = written {
                warn!(path = %path.display(), %e, "compacting a migration's samples");
            }
        }
    }

    /// Takes `report` for migration `name` (a fully qualified name) at
    /// `now`. `Err` says why it was refused; nothing was kept then.
    pub fn report(&self, name: &str, mut report: MigrationReport, now: u64) -> Result<(), String> {
        if !valid(name) {
            return Err(format!("{name:?} is not a service name"));
        }
        let sample = report.sample.take();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.updated_at + KEEP_SECONDS >= now);
        if !entries.contains_key(name) && entries.len() >= MAX_MIGRATIONS {
            return Err(format!(
                "{MAX_MIGRATIONS} migrations were reported in the last day already"
            ));
        }
        let mut lines = Vec::new();
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            report: report.clone(),
            updated_at: now,
            samples: VecDeque::new(),
        });
        lines.push(Line::Report { at: now, report });
        if let Some(s) = sample {
            lines.push(Line::Sample(s));
        }
        let mut text = String::new();
        for l in lines {
            text.push_str(&line(&l));
            entry.apply(l);
        }
        entry.prune(now);
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
            .filter(|(_, e)| e.updated_at + KEEP_SECONDS >= now)
            .map(|(name, e)| MigrationStatus {
                name: name.clone(),
                phase: e.report.phase.clone(),
                from: e.report.from.clone(),
                old: e.report.old.clone(),
                to: e.report.to.clone(),
                ports: e.report.ports.clone(),
                updated_at: e.updated_at,
                samples: narrow(
                    e.samples.iter().filter(|s| s.at + KEEP_SECONDS >= now),
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
            report("flipped", Some(sample(1_001, 7))),
            1_001,
        )
        .unwrap();
        m.report("api.example.test.", report("done", None), 1_002)
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
        let later = Migrations::open(&ws, 1_001 + day + 1);
        let list = later.list(1_001 + day + 1, 100);
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].samples.is_empty());
        let gone = Migrations::open(&ws, 1_002 + day + 1);
        assert!(gone.list(1_002 + day + 1, 100).is_empty());
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
