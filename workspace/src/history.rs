//! Versioned workspace: every change is a new generation, written
//! atomically, with its history kept, so that a rollback restores any earlier
//! generation exactly.
//!
//! ```text
//! WORKSPACE/.cutover/
//!   lock                      flock(2) held by the one writer
//!   current                   number of the generation the live files match
//!   generations/<N>/          full copy of the managed files of generation N:
//!     redirector.toml, dnsd.toml
//!     zones/**                every managed file under zones/, subdirectories kept
//!   generations/<N>/GENERATION.toml   when and why
//! ```
//!
//! The managed files are `redirector.toml`, `dnsd.toml` and every regular
//! file under `zones/` at any depth: the zones and whatever they `$INCLUDE`,
//! since a zone is made of both. Hidden names and editor backups are left
//! out (`zones::is_skipped_name`), and so are symlinks: a generation holds
//! content, and a link's target may lie outside the workspace. A zone may
//! include only a managed file (`Workspace::managed_zone_path`).
//!
//! The daemons keep reading the live files at the workspace root; a commit
//! (1) stages the new generation in `<N>.tmp`, (2) validates it, (3) fsyncs
//! and renames it to `<N>`, (4) replaces each changed live file by
//! temp-file + fsync + rename, creating (and fsyncing) the directories under
//! `zones/` it needs, then removes the managed files the generation does not
//! have and the directories under `zones/` that this leaves empty,
//! (5) records `current`. A crash after (3) leaves a generation newer than
//! `current`; the next writer finishes installing it, because it was
//! validated. A crash during (4) leaves each live file old or new, never
//! torn, and the same finishing repeats (4) whole. Hand edits of the live
//! files are not lost either: the next commit first records them as a
//! generation of their own. Before (1), a change is refused if a live path
//! it writes through is a symlink or a file where a directory is needed
//! (or a directory where its file goes), so that (4) cannot fail on it, nor
//! write through a link to outside the workspace.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::zones::{is_managed_in_zones, is_skipped_name};
use crate::{ConfigError, ConfigErrors, DNSD_FILE, REDIRECTOR_FILE, Workspace, ZONES_DIR};

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

/// One file to write (`Some`) or remove (`None`), relative to the root:
/// `redirector.toml`, `dnsd.toml` or a path under `zones/` (any depth, no
/// `..`); anything else is refused as `HistoryError::Unmanaged`.
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
    /// The new generation does not pass the format's checks or the
    /// caller's validator; each error names its file relative to the
    /// workspace root, as the operator knows it (`dnsd.toml:5:7: ...`),
    /// not by the directory it was checked in.
    #[error("the change was refused, nothing was written:\n{0}")]
    Invalid(ConfigErrors),
    #[error("another writer holds {0} (waited {LOCK_WAIT:?}); try again")]
    Busy(PathBuf),
    #[error("generation {0} does not exist (see the list of generations)")]
    NoSuchGeneration(u64),
    #[error(
        "{0} is not a file the workspace manages (redirector.toml, dnsd.toml, or a file under \
         zones/, named relative to the workspace without `..`, that is not hidden or an editor \
         backup)"
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

    /// The directory holding the managed files of generation `n`, laid out
    /// as a workspace (`Workspace::open` reads it like the live one). It
    /// may not exist: `generation` says whether `n` does.
    pub fn generation_root(&self, n: u64) -> PathBuf {
        self.generations_dir().join(n.to_string())
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
        let path = self.generation_root(n).join(GENERATION_FILE);
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
        let dir = self.generation_root(n);
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
    /// separate directory) and refuses it by returning the errors it found,
    /// which the history names by their live paths (`HistoryError::Invalid`);
    /// the format's own checks run first. Nothing is written when the change is
    /// refused, and a change that changes nothing makes no generation.
    pub fn commit(
        &self,
        changes: &[FileChange],
        message: &str,
        validate: impl FnOnce(&Workspace) -> Result<(), ConfigErrors>,
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
        if let Some(why) = layout_problem(self.root(), &live, &next) {
            return Err(HistoryError::Invalid(why.into()));
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
        validate: impl FnOnce(&Workspace) -> Result<(), ConfigErrors>,
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
        if let Err(errors) = check(&staged).and_then(|ws| validate(&ws)) {
            let _ = fs::remove_dir_all(&staged);
            return Err(HistoryError::Invalid(unstaged(errors, &staged)));
        }
        let generation = Generation {
            number,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            message: message.to_string(),
        };
        let meta_path = staged.join(GENERATION_FILE);
        let meta = toml::to_string(&generation).map_err(|e| HistoryError::Io {
            path: meta_path.clone(),
            source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
        })?;
        write_durably(&meta_path, meta.as_bytes())?;
        let final_dir = dir.join(number.to_string());
        fs::rename(&staged, &final_dir).map_err(io(&final_dir))?;
        sync_dir(&dir)?;
        Ok(generation)
    }

    /// Makes the live files equal to `next`, one atomic rename per file,
    /// then removes the files `next` does not have and the directories
    /// under `zones/` that this empties (a rollback restores the tree, not
    /// only the files' content).
    fn install(&self, live: &Files, next: &Files) -> Result<(), HistoryError> {
        let root = self.root();
        for (rel, bytes) in next {
            if live.get(rel) != Some(bytes) {
                // Checked before the generation was made; checked again
                // because a writer finishing a crashed commit did not, and
                // because writing through a link could land outside.
                if let Some(why) = obstacle(root, rel) {
                    let path = root.join(rel);
                    return Err(HistoryError::Io {
                        path,
                        source: std::io::Error::other(why.to_string()),
                    });
                }
                write_durably(&root.join(rel), bytes)?;
            }
        }
        for rel in live.keys().filter(|p| !next.contains_key(*p)) {
            let path = root.join(rel);
            fs::remove_file(&path).map_err(io(&path))?;
            sync_dir(&parent_of(&path))?;
            let mut dir = rel.parent();
            while let Some(d) = dir
                && d.starts_with(ZONES_DIR)
                && d != Path::new(ZONES_DIR)
            {
                // Fails, and stops here, unless the directory is empty.
                let path = root.join(d);
                if fs::remove_dir(&path).is_err() {
                    break;
                }
                sync_dir(&parent_of(&path))?;
                dir = d.parent();
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
fn check(dir: &Path) -> Result<Workspace, ConfigErrors> {
    let ws = Workspace::open(dir)?;
    ws.load_redirector()?;
    ws.load_dnsd()?;
    ws.zone_files()?;
    Ok(ws)
}

/// `errors` found in the workspace staged at `staged`, each naming its
/// file relative to the workspace root (`zones/a.test.zone`), and any
/// staged path its message quotes ("also in ...") the same way: the
/// staging directory is the history's business, not the operator's.
fn unstaged(errors: ConfigErrors, staged: &Path) -> ConfigErrors {
    let quoted = format!("{}/", staged.display());
    let errors = errors.0.into_iter().map(|mut e| {
        if let Ok(rel) = e.file.strip_prefix(staged) {
            e.file = rel.to_path_buf();
        }
        e.message = e.message.replace(&quoted, "");
        e
    });
    ConfigErrors(errors.collect())
}

/// Whether `rel` (relative to the workspace root) is a path the history
/// manages: `redirector.toml`, `dnsd.toml`, or a managed name under `zones/`
/// (`zones::is_managed_in_zones`).
fn is_managed(rel: &Path) -> bool {
    let mut parts = rel.components();
    match parts.next() {
        Some(Component::Normal(first)) if first == ZONES_DIR => {
            is_managed_in_zones(parts.as_path())
        }
        Some(Component::Normal(first)) => {
            parts.next().is_none() && (first == REDIRECTOR_FILE || first == DNSD_FILE)
        }
        _ => false,
    }
}

/// The managed files found under `root` (the live workspace, a generation).
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
    read_zones_tree(root, Path::new(ZONES_DIR), &mut files)?;
    Ok(files)
}

/// Adds every managed file under `root/rel` to `files`, subdirectories
/// included. Symlinks are neither followed nor kept (see the module doc),
/// except that `zones/` itself may be one: where it lives is the operator's
/// layout, like the workspace root. A file or directory that vanishes while
/// it is read (a hand edit racing the commit) is simply not there.
fn read_zones_tree(root: &Path, rel: &Path, files: &mut Files) -> Result<(), HistoryError> {
    let dir = root.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| !is_skipped_name(n)) else {
            continue;
        };
        let rel = rel.join(name);
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        if kind.is_dir() {
            read_zones_tree(root, &rel, files)?;
        } else if kind.is_file() {
            match fs::read(&path) {
                Ok(bytes) => {
                    files.insert(rel, bytes);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }
    Ok(())
}

/// Why `next` cannot be installed over the live files at `root`, if it
/// cannot: a path that would be both a file and a directory, or a live
/// path in the way (`obstacle`). Checked before the generation is made so
/// that a refused change writes nothing.
fn layout_problem(root: &Path, live: &Files, next: &Files) -> Option<ConfigError> {
    // Paths sort by component, so a file's descendants follow it directly.
    let paths: Vec<&PathBuf> = next.keys().collect();
    if let Some(pair) = paths.windows(2).find(|w| w[1].starts_with(w[0])) {
        return Some(ConfigError::file(
            pair[0],
            format!(
                "cannot be both a file and the directory that holds {}",
                pair[1].display()
            ),
        ));
    }
    next.iter()
        .filter(|(rel, bytes)| live.get(*rel) != Some(*bytes))
        .find_map(|(rel, _)| obstacle(root, rel))
}

/// What on disk stops `rel` from being written at `root`, if anything: a
/// directory under `zones/` on its way that is a symlink or a file (writing
/// through a link could land outside the workspace), or a directory where
/// the file itself goes. Directories that do not exist yet are no obstacle:
/// they are created. `zones/` itself may be a symlink (see
/// `read_zones_tree`).
fn obstacle(root: &Path, rel: &Path) -> Option<ConfigError> {
    let parts: Vec<Component> = rel.components().collect();
    let (file, dirs) = parts.split_last()?;
    let mut at = PathBuf::new();
    for (i, part) in dirs.iter().enumerate() {
        at.push(part);
        if i == 0 {
            continue;
        }
        match fs::symlink_metadata(root.join(&at)) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                let what = if meta.is_symlink() {
                    "a symlink"
                } else {
                    "a file"
                };
                return Some(ConfigError::file(
                    &at,
                    format!(
                        "{what}, not a directory, is in the way of {}; the workspace writes \
                         zone files only into real directories under {ZONES_DIR}/ (replace it \
                         by a directory, or move it)",
                        rel.display()
                    ),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => return Some(ConfigError::file(&at, e.to_string())),
        }
    }
    at.push(file);
    match fs::symlink_metadata(root.join(&at)) {
        Ok(meta) if meta.is_dir() => Some(ConfigError::file(
            &at,
            "a directory is where this file goes; move it away",
        )),
        _ => None,
    }
}

/// temp file in the same directory, fsync, rename over, fsync the directory:
/// a reader sees the old or the new content, never a torn file. Missing
/// directories are created durably (`create_dirs_durably`).
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    let parent = parent_of(path);
    create_dirs_durably(&parent)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!(".{name}.cutover-tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(&parent)
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each
/// one created: a file fsynced inside a new directory is only durable once
/// the directory's own entry is.
fn create_dirs_durably(dir: &Path) -> Result<(), HistoryError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent == dir {
        // `.` that is not a directory: nothing to create it in.
        return Err(io(dir)(ErrorKind::NotFound.into()));
    }
    create_dirs_durably(&parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(&parent),
        // Made by a racing hand edit; the write into it reports any trouble.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// The directory holding `path`, `.` for a bare relative name.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
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

    /// A validator's refusal, for tests that only need one.
    fn refusal(why: impl std::fmt::Display) -> ConfigErrors {
        ConfigError::file(Path::new("validator"), why.to_string()).into()
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
            matches!(err, HistoryError::Invalid(ref m) if m.to_string().contains("rule[0].from")),
            "{err}"
        );
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_A);
        let refused = ws.commit(&[change("redirector.toml", RULE_B)], "vetoed", |_| {
            Err(refusal("no"))
        });
        assert!(refused.is_err());
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_A);
        // only the import of the state as found was recorded
        assert_eq!(ws.generations().unwrap().len(), 1);
    }

    #[test]
    fn a_refusal_names_the_files_as_the_operator_knows_them() {
        let (_d, ws) = ws_with(&[("zones/a.test.zone", "z")]);
        let bad = change("dnsd.toml", "[server]\nmax_answers = \"many\"\n");
        let err = ws.commit(&[bad], "broken", |_| Ok(())).unwrap_err();
        let HistoryError::Invalid(errors) = &err else {
            panic!("{err}")
        };
        assert_eq!(errors.0[0].file, Path::new("dnsd.toml"));
        assert!(err.to_string().contains("\ndnsd.toml:2:"), "{err}");
        let twice = change("zones/A.test.zone", "z");
        let err = ws.commit(&[twice], "twice", |_| Ok(())).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains(HISTORY_DIR), "{text}");
        assert!(text.contains("(also in zones/"), "{text}");
        // and the validator's own errors too
        let err = ws
            .commit(&[change("zones/b.test.zone", "b")], "vetoed", |staged| {
                Err(ConfigError::file(&staged.zones_dir().join("b.test.zone"), "no").into())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the change was refused, nothing was written:\nzones/b.test.zone: no"
        );
    }

    #[test]
    fn the_validator_sees_the_complete_new_workspace() {
        let (_d, ws) = ws_with(&[("redirector.toml", RULE_A), ("zones/a.test.zone", "z")]);
        ws.commit(&[change("dnsd.toml", "")], "add dnsd", |staged| {
            let zones = staged.zone_files()?;
            let rules = staged.load_redirector()?;
            if zones.len() == 1 && rules.rules.len() == 1 && staged.dnsd_path().exists() {
                Ok(())
            } else {
                Err(refusal("incomplete"))
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
            "/etc/passwd",
            "zones/../../x.zone",
            "zones/inc/../../dnsd.toml",
            "./dnsd.toml",
            "other.toml",
            "zones",
            "zones/.a.inc",
            "zones/a.inc~",
            "zones/inc/a.inc.swp",
            "zones/a.zone.tmp",
            "zones/.git/config",
            ".cutover/current",
        ] {
            let err = ws.commit(&[change(p, "x")], "bad", |_| Ok(())).unwrap_err();
            assert!(matches!(err, HistoryError::Unmanaged(_)), "{p}: {err}");
        }
        for p in ["zones/a.txt", "zones/inc/common.inc", "zones/a/b/c.inc"] {
            ws.commit(&[change(p, "x")], "include material", |_| Ok(()))
                .unwrap();
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

    const ZONE_WITH_INCLUDE: &str = "$ORIGIN a.test.\n$INCLUDE extra.inc\n";

    /// The files of generation `n` under zones/, by path.
    fn zone_paths(ws: &Workspace, n: u64) -> Vec<String> {
        ws.generation_files(n)
            .unwrap()
            .keys()
            .filter(|p| p.starts_with(ZONES_DIR))
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn an_included_file_is_in_every_generation() {
        let (_d, ws) = ws_with(&[
            ("zones/a.test.zone", ZONE_WITH_INCLUDE),
            ("zones/extra.inc", "www IN A 198.18.0.2\n"),
        ]);
        ws.commit(&[change("dnsd.toml", "")], "add dnsd", |_| Ok(()))
            .unwrap();
        ws.commit(
            &[change("redirector.toml", RULE_A)],
            "add rules",
            |_| Ok(()),
        )
        .unwrap();
        let gens = ws.generations().unwrap();
        assert_eq!(gens.len(), 3);
        for g in gens {
            assert_eq!(
                ws.generation_files(g.number).unwrap()[Path::new("zones/extra.inc")],
                b"www IN A 198.18.0.2\n",
                "generation {}",
                g.number
            );
        }
    }

    #[test]
    fn a_rollback_restores_an_earlier_include_and_removes_one_added_later() {
        let (_d, ws) = ws_with(&[
            ("zones/a.test.zone", ZONE_WITH_INCLUDE),
            ("zones/extra.inc", "www IN A 198.18.0.2\n"),
        ]);
        ws.commit(
            &[
                change("zones/extra.inc", "www IN A 198.18.0.3\n"),
                change("zones/later.inc", "api IN A 198.18.0.20\n"),
            ],
            "move www, add api",
            |_| Ok(()),
        )
        .unwrap();
        ws.rollback(1, "back to .2").unwrap();
        let zones = ws.zones_dir();
        assert_eq!(
            fs::read_to_string(zones.join("extra.inc")).unwrap(),
            "www IN A 198.18.0.2\n"
        );
        assert!(!zones.join("later.inc").exists());
        assert_eq!(ws.live_files().unwrap(), ws.generation_files(1).unwrap());
    }

    #[test]
    fn a_hand_edit_of_an_included_file_becomes_its_own_generation() {
        let (_d, ws) = ws_with(&[
            ("zones/a.test.zone", ZONE_WITH_INCLUDE),
            ("zones/extra.inc", "www IN A 198.18.0.2\n"),
        ]);
        ws.commit(&[change("dnsd.toml", "")], "add dnsd", |_| Ok(()))
            .unwrap();
        fs::write(ws.zones_dir().join("extra.inc"), "www IN A 198.18.0.9\n").unwrap();
        // an editor's scratch beside it is no edit at all
        fs::write(ws.zones_dir().join(".extra.inc.swp"), "scratch").unwrap();
        fs::write(ws.zones_dir().join("extra.inc~"), "backup").unwrap();
        let g = ws
            .commit(
                &[change("redirector.toml", RULE_A)],
                "add rules",
                |_| Ok(()),
            )
            .unwrap();
        assert_eq!(g.number, 4);
        assert_eq!(
            ws.generation(3).unwrap().message,
            "hand edits since generation 2"
        );
        let hand = ws.generation_files(3).unwrap();
        assert_eq!(hand[Path::new("zones/extra.inc")], b"www IN A 198.18.0.9\n");
        assert_eq!(zone_paths(&ws, 3), ["zones/a.test.zone", "zones/extra.inc"]);
        // the next commit finds no hand edit
        ws.commit(&[change("dnsd.toml", "# quiet\n")], "comment", |_| Ok(()))
            .unwrap();
        assert_eq!(ws.generations().unwrap().len(), 5);
    }

    #[test]
    fn a_subdirectory_of_zones_round_trips() {
        let (_d, ws) = ws_with(&[
            ("zones/a.test.zone", "$INCLUDE inc/common.inc\n"),
            ("zones/inc/common.inc", "ns1 IN A 198.18.0.53\n"),
        ]);
        ws.commit(
            &[
                change("zones/inc/deep/more.inc", "x IN A 198.18.0.7\n"),
                FileChange {
                    path: "zones/inc/common.inc".into(),
                    content: None,
                },
            ],
            "reshape the includes",
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(
            zone_paths(&ws, 2),
            ["zones/a.test.zone", "zones/inc/deep/more.inc"]
        );
        ws.rollback(1, "back").unwrap();
        let zones = ws.zones_dir();
        assert_eq!(
            fs::read_to_string(zones.join("inc/common.inc")).unwrap(),
            "ns1 IN A 198.18.0.53\n"
        );
        assert!(
            !zones.join("inc/deep").exists(),
            "a directory the rollback emptied is removed"
        );
        fs::remove_dir_all(zones.join("inc")).unwrap();
        ws.rollback(2, "forward again, after inc/ was deleted by hand")
            .unwrap();
        assert_eq!(
            fs::read_to_string(zones.join("inc/deep/more.inc")).unwrap(),
            "x IN A 198.18.0.7\n"
        );
        assert!(!zones.join("inc/common.inc").exists());
        assert_eq!(ws.live_files().unwrap(), ws.generation_files(2).unwrap());
    }

    #[test]
    fn the_validator_sees_the_included_files() {
        let (_d, ws) = ws_with(&[
            ("zones/a.test.zone", ZONE_WITH_INCLUDE),
            ("zones/extra.inc", "www IN A 198.18.0.2\n"),
            ("zones/inc/common.inc", "ns1 IN A 198.18.0.53\n"),
        ]);
        ws.commit(&[change("dnsd.toml", "")], "add dnsd", |staged| {
            let zones = staged.zones_dir();
            let extra = fs::read_to_string(zones.join("extra.inc")).map_err(refusal)?;
            let common = fs::read_to_string(zones.join("inc/common.inc")).map_err(refusal)?;
            staged
                .managed_zone_path(Path::new("inc/common.inc"))
                .map_err(refusal)?;
            if extra.contains("198.18.0.2") && common.contains("198.18.0.53") {
                Ok(())
            } else {
                Err(refusal("the staged includes differ from the live ones"))
            }
        })
        .unwrap();
        // and only the .zone file is a zone there
        assert_eq!(ws.zone_files().unwrap().len(), 1);
    }

    #[test]
    fn symlinks_under_zones_are_not_versioned_nor_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let (_d, ws) = ws_with(&[("zones/a.test.zone", ZONE_WITH_INCLUDE)]);
        let zones = ws.zones_dir();
        std::os::unix::fs::symlink("/etc/passwd", zones.join("passwd.inc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), zones.join("inc")).unwrap();
        ws.commit(&[change("dnsd.toml", "")], "add dnsd", |_| Ok(()))
            .unwrap();
        assert_eq!(zone_paths(&ws, 1), ["zones/a.test.zone"]);
        let err = ws
            .commit(&[change("zones/inc/a.inc", "x")], "through a link", |_| {
                Ok(())
            })
            .unwrap_err();
        assert!(
            matches!(err, HistoryError::Invalid(ref m) if m.to_string().contains("zones/inc: a symlink")),
            "{err}"
        );
        assert!(!outside.path().join("a.inc").exists());
        assert_eq!(ws.generations().unwrap().len(), 2);
    }

    #[test]
    fn a_path_cannot_be_both_a_file_and_a_directory() {
        let (_d, ws) = ws_with(&[("zones/inc/a.inc", "x")]);
        let err = ws
            .commit(&[change("zones/inc", "x")], "file over a directory", |_| {
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, HistoryError::Invalid(_)), "{err}");
        assert_eq!(
            fs::read_to_string(ws.zones_dir().join("inc/a.inc")).unwrap(),
            "x"
        );
        let err = ws
            .commit(
                &[change("zones/b", "x"), change("zones/b/c.inc", "y")],
                "both at once",
                |_| Ok(()),
            )
            .unwrap_err();
        assert!(
            matches!(err, HistoryError::Invalid(ref m) if m.to_string().contains("both a file and")),
            "{err}"
        );
    }

    #[test]
    fn a_zones_directory_that_is_a_symlink_is_the_operators_layout() {
        let real = tempfile::tempdir().unwrap();
        fs::write(real.path().join("a.test.zone"), ZONE_WITH_INCLUDE).unwrap();
        let (_d, ws) = ws_with(&[]);
        std::os::unix::fs::symlink(real.path(), ws.zones_dir()).unwrap();
        ws.commit(&[change("zones/inc/extra.inc", "x")], "add", |_| Ok(()))
            .unwrap();
        assert_eq!(
            fs::read_to_string(real.path().join("inc/extra.inc")).unwrap(),
            "x"
        );
        assert_eq!(
            zone_paths(&ws, 2),
            ["zones/a.test.zone", "zones/inc/extra.inc"]
        );
    }
}
