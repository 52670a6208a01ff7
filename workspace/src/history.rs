//! Versioned workspace: every change is a new generation, written
//! atomically, with its history kept, so that a rollback restores any earlier
//! generation exactly.
//!
//! ```text
//! WORKSPACE/.cutover/
//!   lock                      flock(2) held by the one writer
//!   current                   number of the generation the live files match
//!   generations/<N>/          full copy of the managed files of generation N
//!   generations/<N>/GENERATION.toml   when and why
//! ```
//!
//! The daemons keep reading the live files at the workspace root; a commit
//! (1) stages the new generation in `<N>.tmp`, (2) validates it, (3) fsyncs
//! and renames it to `<N>`, (4) replaces each changed live file by
//! temp-file + fsync + rename, (5) records `current`. A crash after (3)
//! leaves a generation newer than `current`; the next writer finishes
//! installing it, because it was validated. Hand edits of the live files are
//! not lost either: the next commit first records them as a generation of
//! their own.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{DNSD_FILE, REDIRECTOR_FILE, Workspace, ZONE_SUFFIX, ZONES_DIR};

/// Directory of the history inside a workspace.
pub const HISTORY_DIR: &str = ".cutover";
const GENERATION_FILE: &str = "GENERATION.toml";
/// How long a writer waits for another one to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The managed files of a workspace, by path relative to its root.
pub type Files = BTreeMap<PathBuf, Vec<u8>>;

/// One generation of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Why it was made ("flip www to 198.18.0.3", "rollback to 4").
    pub message: String,
}

/// One file to write (`Some`) or remove (`None`), relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: PathBuf,
    pub content: Option<Vec<u8>>,
}

/// Why a commit, a rollback or a read of the history failed; each names
/// the file or generation concerned.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the change was refused, nothing was written:\n{0}")]
    Invalid(String),
    #[error("another writer holds {0} (waited {LOCK_WAIT:?}); try again")]
    Busy(PathBuf),
    #[error("generation {0} does not exist (see the list of generations)")]
    NoSuchGeneration(u64),
    #[error(
        "{0} is not a file the workspace manages (redirector.toml, dnsd.toml, zones/<origin>.zone)"
    )]
    Unmanaged(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Workspace {
    fn history_dir(&self) -> PathBuf {
        self.root().join(HISTORY_DIR)
    }

    fn generations_dir(&self) -> PathBuf {
        self.history_dir().join("generations")
    }

    /// The generations kept, oldest first.
    pub fn generations(&self) -> Result<Vec<Generation>, HistoryError> {
        let mut out = Vec::new();
        for n in self.generation_numbers()? {
            out.push(self.generation(n)?);
        }
        Ok(out)
    }

    /// Metadata of generation `n`.
    pub fn generation(&self, n: u64) -> Result<Generation, HistoryError> {
        let path = self
            .generations_dir()
            .join(n.to_string())
            .join(GENERATION_FILE);
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(HistoryError::NoSuchGeneration(n));
            }
            other => other.map_err(io(&path))?,
        };
        toml::from_str(&text).map_err(|e| HistoryError::Io {
            path,
            source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// The generation the live files were last set to, if any.
    pub fn current_generation(&self) -> Result<Option<u64>, HistoryError> {
        let path = self.history_dir().join("current");
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The managed files of generation `n`.
    pub fn generation_files(&self, n: u64) -> Result<Files, HistoryError> {
        let dir = self.generations_dir().join(n.to_string());
        if !dir.is_dir() {
            return Err(HistoryError::NoSuchGeneration(n));
        }
        read_managed(&dir)
    }

    /// The managed files as they are now at the workspace root.
    pub fn live_files(&self) -> Result<Files, HistoryError> {
        read_managed(self.root())
    }

    /// Applies `changes` as a new generation and installs it in the live
    /// files. `validate` sees the complete new workspace (staged in a
    /// separate directory) and refuses it by returning an error message; the
    /// format's own checks run first. Nothing is written when the change is
    /// refused, and a change that changes nothing makes no generation.
    pub fn commit(
        &self,
        changes: &[FileChange],
        message: &str,
        validate: impl FnOnce(&Workspace) -> Result<(), String>,
    ) -> Result<Generation, HistoryError> {
        for c in changes {
            if !is_managed(&c.path) {
                return Err(HistoryError::Unmanaged(c.path.clone()));
            }
        }
        let _lock = self.lock()?;
        let current = self.recover()?;
        let live = self.live_files()?;
        let mut base = current;
        if current.is_none_or(|n| self.generation_files(n).ok().as_ref() != Some(&live)) {
            let why = match current {
                None => "the workspace as found".to_string(),
                Some(n) => format!("hand edits since generation {n}"),
            };
            let imported = self.write_generation(&live, &why, |_| Ok(()))?;
            self.set_current(imported.number)?;
            base = Some(imported.number);
        }
        let mut next = live.clone();
        for c in changes {
            match &c.content {
                Some(bytes) => next.insert(c.path.clone(), bytes.clone()),
                None => next.remove(&c.path),
            };
        }
        if next == live
            && let Some(n) = base
        {
            return self.generation(n);
        }
        let generation = self.write_generation(&next, message, validate)?;
        self.install(&live, &next)?;
        self.set_current(generation.number)?;
        Ok(generation)
    }

    /// Restores generation `n` exactly, as a new generation (history only
    /// grows, so a rollback can itself be rolled back).
    pub fn rollback(&self, n: u64, message: &str) -> Result<Generation, HistoryError> {
        let target = self.generation_files(n)?;
        let live = self.live_files()?;
        let mut changes: Vec<FileChange> = target
            .iter()
            .filter(|(p, b)| live.get(*p) != Some(*b))
            .map(|(p, b)| FileChange {
                path: p.clone(),
                content: Some(b.clone()),
            })
            .collect();
        changes.extend(
            live.keys()
                .filter(|p| !target.contains_key(*p))
                .map(|p| FileChange {
                    path: p.clone(),
                    content: None,
                }),
        );
        self.commit(&changes, message, |_| Ok(()))
    }

    fn generation_numbers(&self) -> Result<Vec<u64>, HistoryError> {
        let dir = self.generations_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut numbers: Vec<u64> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Finishes a commit that was interrupted after its generation was
    /// made durable; returns the current generation.
    fn recover(&self) -> Result<Option<u64>, HistoryError> {
        let current = self.current_generation()?;
        let newest = self.generation_numbers()?.last().copied();
        if let Some(newest) = newest
            && current.is_none_or(|c| newest > c)
        {
            let files = self.generation_files(newest)?;
            let live = self.live_files()?;
            self.install(&live, &files)?;
            self.set_current(newest)?;
            return Ok(Some(newest));
        }
        Ok(current)
    }

    fn write_generation(
        &self,
        files: &Files,
        message: &str,
        validate: impl FnOnce(&Workspace) -> Result<(), String>,
    ) -> Result<Generation, HistoryError> {
        let dir = self.generations_dir();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let number = self.generation_numbers()?.last().map_or(1, |n| n + 1);
        let staged = dir.join(format!("{number}.tmp"));
        if staged.exists() {
            fs::remove_dir_all(&staged).map_err(io(&staged))?;
        }
        for (rel, bytes) in files {
            write_durably(&staged.join(rel), bytes)?;
        }
        fs::create_dir_all(&staged).map_err(io(&staged))?;
        if let Err(msg) = check(&staged).and_then(|ws| validate(&ws)) {
            let _ = fs::remove_dir_all(&staged);
            return Err(HistoryError::Invalid(msg));
        }
        let generation = Generation {
            number,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            message: message.to_string(),
        };
        let meta =
            toml::to_string(&generation).map_err(|e| HistoryError::Invalid(e.to_string()))?;
        write_durably(&staged.join(GENERATION_FILE), meta.as_bytes())?;
        let final_dir = dir.join(number.to_string());
        fs::rename(&staged, &final_dir).map_err(io(&final_dir))?;
        sync_dir(&dir)?;
        Ok(generation)
    }

    /// Makes the live files equal to `next`, one atomic rename per file.
    fn install(&self, live: &Files, next: &Files) -> Result<(), HistoryError> {
        for (rel, bytes) in next {
            if live.get(rel) != Some(bytes) {
                write_durably(&self.root().join(rel), bytes)?;
            }
        }
        for rel in live.keys().filter(|p| !next.contains_key(*p)) {
            let path = self.root().join(rel);
            fs::remove_file(&path).map_err(io(&path))?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn set_current(&self, n: u64) -> Result<(), HistoryError> {
        write_durably(
            &self.history_dir().join("current"),
            format!("{n}\n").as_bytes(),
        )
    }

    fn lock(&self) -> Result<WriterLock, HistoryError> {
        let dir = self.history_dir();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(WriterLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::WouldBlock {
                return Err(io(&path)(err));
            }
            if Instant::now() > deadline {
                return Err(HistoryError::Busy(path));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Held while writing; the kernel releases the flock when the file closes,
/// even if the writer crashes.
struct WriterLock {
    _file: File,
}

/// The format's own checks on a staged workspace.
fn check(dir: &Path) -> Result<Workspace, String> {
    let ws = Workspace::open(dir).map_err(|e| e.to_string())?;
    ws.load_redirector().map_err(|e| e.to_string())?;
    ws.load_dnsd().map_err(|e| e.to_string())?;
    ws.zone_files().map_err(|e| e.to_string())?;
    Ok(ws)
}

fn is_managed(rel: &Path) -> bool {
    let parts: Vec<_> = rel.components().collect();
    let name = |c: &std::path::Component| c.as_os_str().to_str().map(str::to_string);
    match parts.as_slice() {
        [f] => matches!(name(f).as_deref(), Some(REDIRECTOR_FILE | DNSD_FILE)),
        [d, f] => {
            name(d).as_deref() == Some(ZONES_DIR)
                && name(f).is_some_and(|n| n.ends_with(ZONE_SUFFIX) && !n.starts_with('.'))
        }
        _ => false,
    }
}

fn read_managed(root: &Path) -> Result<Files, HistoryError> {
    let mut files = Files::new();
    for name in [REDIRECTOR_FILE, DNSD_FILE] {
        let path = root.join(name);
        match fs::read(&path) {
            Ok(b) => {
                files.insert(PathBuf::from(name), b);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    let zones = root.join(ZONES_DIR);
    match fs::read_dir(&zones) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io(&zones))?;
                let rel = Path::new(ZONES_DIR).join(entry.file_name());
                if is_managed(&rel) && entry.path().is_file() {
                    let bytes = fs::read(entry.path()).map_err(io(&entry.path()))?;
                    files.insert(rel, bytes);
                }
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(&zones)(e)),
    }
    Ok(files)
}

/// temp file in the same directory, fsync, rename over, fsync the directory:
/// a reader sees the old or the new content, never a torn file.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!(".{name}.cutover-tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<(), HistoryError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = dir.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, c).unwrap();
        }
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    fn change(path: &str, content: &str) -> FileChange {
        FileChange {
            path: path.into(),
            content: Some(content.as_bytes().to_vec()),
        }
    }

    const RULE_A: &str = "[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.3:80\"\n";
    const RULE_B: &str = "[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.4:80\"\n";

    #[test]
    fn a_commit_records_the_previous_state_and_installs_the_new_one() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A), ("zones/a.test.zone", "z")]);
        let g = ws
            .commit(&[change("redirector.toml", RULE_B)], "move to .4", |_| {
                Ok(())
            })
            .unwrap();
        assert_eq!(g.number, 2);
        assert_eq!(g.message, "move to .4");
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_B);
        let gens = ws.generations().unwrap();
        assert_eq!(gens.len(), 2);
        assert_eq!(ws.current_generation().unwrap(), Some(2));
        let first = ws.generation_files(1).unwrap();
        assert_eq!(first[Path::new("redirector.toml")], RULE_A.as_bytes());
        assert_eq!(first[Path::new("zones/a.test.zone")], b"z");
    }

    #[test]
    fn a_rollback_restores_an_earlier_generation_exactly() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A)]);
        ws.commit(
            &[
                change("redirector.toml", RULE_B),
                change("zones/b.test.zone", "b"),
            ],
            "two changes",
            |_| Ok(()),
        )
        .unwrap();
        let g = ws.rollback(1, "back").unwrap();
        assert_eq!(g.number, 3);
        assert_eq!(ws.live_files().unwrap(), ws.generation_files(1).unwrap());
        assert!(!ws.zones_dir().join("b.test.zone").exists());
        // and the rollback itself can be undone
        ws.rollback(2, "forward again").unwrap();
        assert_eq!(ws.live_files().unwrap(), ws.generation_files(2).unwrap());
    }

    #[test]
    fn an_invalid_change_writes_nothing() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A)]);
        let bad = change(
            "redirector.toml",
            "[[rule]]\nfrom = \"nope\"\nto = \"198.18.0.3:80\"\n",
        );
        let err = ws.commit(&[bad], "broken", |_| Ok(())).unwrap_err();
        assert!(
            matches!(err, HistoryError::Invalid(ref m) if m.contains("rule[0].from")),
            "{err}"
        );
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_A);
        let refused = ws.commit(&[change("redirector.toml", RULE_B)], "vetoed", |_| {
            Err("no".into())
        });
        assert!(refused.is_err());
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_A);
        // only the import of the state as found was recorded
        assert_eq!(ws.generations().unwrap().len(), 1);
    }

    #[test]
    fn the_validator_sees_the_complete_new_workspace() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A), ("zones/a.test.zone", "z")]);
        ws.commit(&[change("dnsd.toml", "")], "add dnsd", |staged| {
            let zones = staged.zone_files().map_err(|e| e.to_string())?;
            let rules = staged.load_redirector().map_err(|e| e.to_string())?;
            if zones.len() == 1 && rules.rules.len() == 1 && staged.dnsd_path().exists() {
                Ok(())
            } else {
                Err("incomplete".into())
            }
        })
        .unwrap();
    }

    #[test]
    fn hand_edits_are_kept_as_their_own_generation() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A)]);
        ws.commit(&[change("dnsd.toml", "")], "one", |_| Ok(()))
            .unwrap();
        fs::write(ws.redirector_path(), RULE_B).unwrap();
        let g = ws
            .commit(&[change("zones/x.test.zone", "x")], "two", |_| Ok(()))
            .unwrap();
        assert_eq!(g.number, 4);
        let hand = ws.generation(3).unwrap();
        assert_eq!(hand.message, "hand edits since generation 2");
        assert_eq!(
            ws.generation_files(3).unwrap()[Path::new("redirector.toml")],
            RULE_B.as_bytes()
        );
    }

    #[test]
    fn a_commit_that_changes_nothing_makes_no_generation() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A)]);
        let g1 = ws
            .commit(&[change("redirector.toml", RULE_A)], "same", |_| Ok(()))
            .unwrap();
        let g2 = ws
            .commit(&[change("redirector.toml", RULE_A)], "same", |_| Ok(()))
            .unwrap();
        assert_eq!(g1.number, g2.number);
        assert_eq!(ws.generations().unwrap().len(), 1);
    }

    #[test]
    fn an_interrupted_commit_is_finished_by_the_next_writer() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A)]);
        ws.commit(&[change("dnsd.toml", "")], "one", |_| Ok(()))
            .unwrap();
        // Simulate a crash after the generation became durable but before
        // the live files were installed.
        let mut files = ws.live_files().unwrap();
        files.insert("redirector.toml".into(), RULE_B.as_bytes().to_vec());
        ws.write_generation(&files, "crashed", |_| Ok(())).unwrap();
        ws.commit(&[change("zones/x.test.zone", "x")], "next", |_| Ok(()))
            .unwrap();
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_B);
        assert!(
            ws.generations()
                .unwrap()
                .iter()
                .all(|g| !g.message.contains("hand edits"))
        );
    }

    #[test]
    fn only_managed_files_can_be_changed() {
        let (_d, ws) = ws_with(&[]);
        for p in [
            "../etc/passwd",
            "zones/../../x.zone",
            "other.toml",
            "zones/a.txt",
            ".cutover/current",
        ] {
            let err = ws.commit(&[change(p, "x")], "bad", |_| Ok(())).unwrap_err();
            assert!(matches!(err, HistoryError::Unmanaged(_)), "{p}: {err}");
        }
    }

    #[test]
    fn concurrent_writers_never_lose_a_change() {
        let (_d, ws) = ws_with(&[]);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let ws = ws.clone();
                std::thread::spawn(move || {
                    let path = format!("zones/t{i}.test.zone");
                    ws.commit(&[change(&path, "z")], &format!("writer {i}"), |_| Ok(()))
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ws.zone_files().unwrap().len(), 8);
        let numbers: Vec<u64> = ws.generations().unwrap().iter().map(|g| g.number).collect();
        assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    }
}
