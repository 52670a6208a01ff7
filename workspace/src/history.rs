//! Versioned workspace: every change is a new generation, made durable and
//! validated before any live file changes and then installed whole, with
//! the history kept, so that a rollback restores any earlier generation
//! exactly and no crash or full disk leaves a workspace a daemon refuses.
//!
//! ```text
//! WORKSPACE/.cutover/                 0700; every file under it 0600, every directory 0700
//!   lock                              flock(2): exclusive for the one writer, shared for readers
//!   lock.gate                         flock(2): a waiting writer holds it, so readers queue behind
//!   current                           number of the generation the live files match
//!   generations/<N>/                  full copy of the managed files of generation N:
//!     redirector.toml, dnsd.toml
//!     zones/**                        every managed file under zones/, subdirectories kept
//!   generations/<N>/GENERATION.toml   when and why
//!   generations/<N>.tmp/              generation N while it is staged; never read
//! ```
//!
//! The managed files are `redirector.toml`, `dnsd.toml` and every regular
//! file under `zones/` at any depth: the zones and whatever they
//! `$INCLUDE`, since a zone is made of both. Hidden names and editor
//! backups are left out (`zones::is_skipped_name`), and so are symlinks: a
//! generation holds content, and a link's target may lie outside the
//! workspace. The exceptions are the files the daemons read through a
//! link: `dnsd.toml`, `redirector.toml` and a zone file itself
//! (`zones/<origin>.zone`) that link to a regular file are versioned by
//! their content, and written through the link (beside its target), which
//! stays a link. A zone may include only a managed file
//! (`Workspace::managed_zone_path`).
//!
//! # A commit
//!
//! The daemons read the live files at the workspace root. A writer holds
//! the lock exclusively; it first settles an interrupted commit (below),
//! then records hand edits of the live files as a generation of their own,
//! so that none is lost. Then generation N goes through these steps, each
//! a named hook point for fault injection (`fault.rs`):
//!
//! 1. **stage**: every managed file of N, then its `GENERATION.toml`, is
//!    written into `generations/N.tmp/` and fsynced, its directories too.
//! 2. **validate**: the format's checks and the caller's validator run on
//!    the staged copy; their errors name the live paths
//!    (`HistoryError::Invalid`). A refusal removes the copy.
//! 3. **prepare**: each live file the commit changes gets its new content
//!    in a temp file beside it (`.NAME.cutover-tmp`, beside the target of
//!    a linked file) with the live file's mode and owner, fsynced, after
//!    the directories new files need are created; the new `current` is
//!    prepared the same way. This is the last step that needs free space.
//! 4. **seal**: `N.tmp` is renamed to `N`, and `generations/` fsynced.
//!    This is the commit point.
//! 5. **install**: each temp file is renamed over its live file;
//!    **remove**: the files N does not have are removed, with the
//!    directories under `zones/` this empties; each directory is fsynced.
//! 6. **record**: the prepared `current` is renamed into place.
//!
//! A failure in 1–4 (a full disk, a refusal) removes what the commit
//! wrote, and the live files are the old generation, untouched. Steps 5
//! and 6 only rename, unlink and fsync, which need no free space. What a
//! crash (`kill -9`, a power cut) after each step leaves:
//!
//! - after 1, 2 or 3: the old generation, live and current; `N.tmp` and
//!   perhaps some temp files, which the next writer removes;
//! - after 4, and during 5 or 6: generation N, durable and validated, is
//!   newer than `current`, and each live file is old or new, never torn.
//!   The commit is then *finished* — rolled forward, never undone — by the
//!   next one to settle the workspace: 3 again for the files that are not
//!   new yet, reusing the temp files already prepared (so that this needs
//!   no free space either), then 5 and 6. Only the files in which N
//!   differs from generation `current` are touched.
//!
//! # Readers
//!
//! A reader — dnsd and the redirector at start and at each reload, `dnsd
//! check`, `redirector check` — reads through `Workspace::settled`, which
//! holds the lock shared while it reads. A writer installs only while it
//! holds it exclusively, so a reader sees the live files of one
//! generation, never half a commit. A reader that finds a sealed
//! generation not installed yet finishes it first (as Knot replays its
//! journal). If that fails — the disk is full and the temp files are gone,
//! the file system is read-only, the reader may not write — it reads
//! generation N from its copy in the history instead: a daemon still
//! serves the whole new generation, and the next reader tries again.
//!
//! Before (1), a change is refused if a live path it writes through is a
//! symlinked directory or a file where a directory is needed (or a
//! directory where its file goes), so that (5) cannot fail on it, nor
//! write through a link to outside the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::durable::{self, io, parent_of, sync_dir, temp_beside};
use crate::fault;
use crate::journal;
use crate::zones::{is_managed_in_zones, is_skipped_name};

mod journaled;
mod stamps;
use crate::{
    ConfigError, ConfigErrors, DNSD_FILE, REDIRECTOR_FILE, Workspace, ZONE_SUFFIX, ZONES_DIR,
};
pub use journaled::{PreparedSync, ZoneSource};

/// Directory of the history inside a workspace.
pub const HISTORY_DIR: &str = ".cutover";
const GENERATION_FILE: &str = "GENERATION.toml";
const CURRENT_FILE: &str = "current";
const LOCK_FILE: &str = "lock";
const GATE_FILE: &str = "lock.gate";
/// How long a writer waits for another one to finish, and a reader for
/// the writer.
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
    /// Rebuilding generation `n` needs changesets of a zone's journal
    /// replayed, which dnsd does.
    #[error(
        "generation {0} includes zone changes kept in dnsd's journal: roll it back through dnsd \
         (POST /v1/generations/{0}/rollback)"
    )]
    NeedsJournal(u64),
    /// Generation `n` was a zone's change that its journal dropped when it
    /// was compacted.
    #[error(
        "generation {0} is no longer held: the zone's journal was compacted past it (its size \
         limit is [history] journal_max_bytes in dnsd.toml)"
    )]
    Compacted(u64),
    #[error(
        "{0} is not a file the workspace manages (redirector.toml, dnsd.toml, or a file under \
         zones/, named relative to the workspace without `..`, that is not hidden or an editor \
         backup)"
    )]
    Unmanaged(PathBuf),
    /// Generation `number` is sealed — durable and validated — but the
    /// live files could not all be made its (step 5 or 6 failed).
    #[error(
        "generation {number} is recorded but not yet installed in the live files ({source}); \
         the next change, or a daemon's start, reload or check, finishes it, and reads it from \
         its copy in the history until then"
    )]
    Unfinished {
        number: u64,
        source: Box<HistoryError>,
    },
}

/// The workspace as a reader should read it: one whole generation, kept
/// so by the history's lock until this is dropped (see the module doc).
#[derive(Debug)]
pub struct Settled {
    workspace: Workspace,
    settlement: Settlement,
    _lock: Option<HistoryLock>,
}

/// How `Workspace::settled` found the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// No commit was interrupted: the live files.
    Live,
    /// The interrupted commit of this generation was finished: the live
    /// files are that generation now.
    Finished(u64),
    /// The interrupted commit of generation `number` could not be
    /// finished (`why`): the generation is read from its copy in the
    /// history, and the live files are left as they are.
    FromCopy { number: u64, why: String },
    /// The history could not be read or locked (`why`): the live files,
    /// as they are.
    Unsettled(String),
}

impl Settled {
    /// The workspace to read: the live one, or a generation's copy.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn root(&self) -> &Path {
        self.workspace.root()
    }

    pub fn settlement(&self) -> &Settlement {
        &self.settlement
    }
}

impl fmt::Display for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Live => write!(f, "the live files"),
            Self::Finished(n) => write!(
                f,
                "finished installing generation {n}, whose commit was interrupted"
            ),
            Self::FromCopy { number, why } => write!(
                f,
                "the commit of generation {number} was interrupted and cannot be finished now \
                 ({why}); reading generation {number} from its copy in the history, the live \
                 files are left as they are until it can"
            ),
            Self::Unsettled(why) => write!(f, "{why}; reading the live files as they are"),
        }
    }
}

impl Workspace {
    fn history_dir(&self) -> PathBuf {
        self.root().join(HISTORY_DIR)
    }

    fn generations_dir(&self) -> PathBuf {
        self.history_dir().join("generations")
    }

    fn current_path(&self) -> PathBuf {
        self.history_dir().join(CURRENT_FILE)
    }

    /// The directory holding the managed files of generation `n`, laid out
    /// as a workspace (`Workspace::open` reads it like the live one). It
    /// may not exist: `generation` says whether `n` does.
    pub fn generation_root(&self, n: u64) -> PathBuf {
        self.generations_dir().join(n.to_string())
    }

    /// The generations kept, oldest first: those of whole files and the
    /// zones' changesets (`journal.rs`).
    pub fn generations(&self) -> Result<Vec<Generation>, HistoryError> {
        let mut out = self.journal_generations()?;
        for n in self.generation_numbers()? {
            out.push(self.generation(n)?);
        }
        out.sort_by_key(|g| g.number);
        Ok(out)
    }

    /// Metadata of generation `n`.
    pub fn generation(&self, n: u64) -> Result<Generation, HistoryError> {
        let path = self.generation_root(n).join(GENERATION_FILE);
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let compacted = self
                    .journaled_zones()
                    .iter()
                    .filter_map(|z| self.compacted_through(z))
                    .max();
                return self
                    .journal_generations()?
                    .into_iter()
                    .find(|g| g.number == n)
                    .ok_or(match compacted {
                        Some(c) if n <= c => HistoryError::Compacted(n),
                        _ => HistoryError::NoSuchGeneration(n),
                    });
            }
            other => other.map_err(io(&path))?,
        };
        toml::from_str(&text).map_err(|e| HistoryError::Io {
            path,
            source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// The generation in force: the newest change of a zone's journal, or
    /// the generation the live files were last set to, whichever is newer.
    pub fn current_generation(&self) -> Result<Option<u64>, HistoryError> {
        Ok(self.installed_generation()?.max(self.newest_journaled()?))
    }

    /// Whether generation `n` is a whole-files generation (not a zone
    /// changeset of the journal).
    pub fn has_copy(&self, n: u64) -> bool {
        self.generation_root(n).join(GENERATION_FILE).is_file()
    }

    /// The generation the live files were last set to by a commit, if any.
    fn installed_generation(&self) -> Result<Option<u64>, HistoryError> {
        let path = self.current_path();
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

    /// The workspace to read, settled as the module doc says: with no
    /// history, or no commit interrupted, the live files under a shared
    /// lock; an interrupted commit finished first; or, when it cannot be,
    /// the generation it was installing, from its copy. Never fails: what
    /// it could not do is in the `Settlement`, for the caller to log.
    /// Hold the result while reading; a writer waits for it.
    pub fn settled(&self) -> Settled {
        let settled = |workspace: Workspace, settlement, lock| Settled {
            workspace,
            settlement,
            _lock: lock,
        };
        let live = |settlement, lock| settled(self.clone(), settlement, lock);
        let from_copy = |number: u64, why: String, lock| {
            let copy = Workspace {
                root: self.generation_root(number),
            };
            settled(copy, Settlement::FromCopy { number, why }, lock)
        };
        let generations = self.generations_dir();
        match fs::metadata(&generations) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return live(Settlement::Live, None),
            Err(e) => {
                let why = format!("{}: {e}", generations.display());
                return live(Settlement::Unsettled(why), None);
            }
        }
        let shared = match self.lock_shared() {
            Ok(lock) => lock,
            // Cannot take the lock (it may not even be opened): whether a
            // commit is pending is still known.
            Err(locking) => {
                return match self.pending() {
                    Ok(Some(p)) => from_copy(p.number, locking.to_string(), None),
                    Ok(None) => live(Settlement::Unsettled(locking.to_string()), None),
                    Err(e) => live(Settlement::Unsettled(e.to_string()), None),
                };
            }
        };
        match self.pending() {
            Ok(None) => live(Settlement::Live, Some(shared)),
            Err(e) => live(Settlement::Unsettled(e.to_string()), Some(shared)),
            Ok(Some(pending)) => {
                drop(shared);
                match self.lock() {
                    Ok(lock) => match self.settle_locked() {
                        Ok(Some(n)) => live(Settlement::Finished(n), Some(lock)),
                        // Another reader or writer finished it meanwhile.
                        Ok(None) => live(Settlement::Live, Some(lock)),
                        Err(HistoryError::Unfinished { number, source }) => {
                            from_copy(number, source.to_string(), Some(lock))
                        }
                        Err(e) => live(Settlement::Unsettled(e.to_string()), Some(lock)),
                    },
                    Err(e) => from_copy(pending.number, e.to_string(), None),
                }
            }
        }
    }

    /// Applies `changes` as a new generation and installs it in the live
    /// files. `validate` sees the complete new workspace (staged in a
    /// separate directory) and refuses it by returning the errors it found,
    /// which the history names by their live paths (`HistoryError::Invalid`);
    /// the format's own checks run first. Nothing is written when the change
    /// is refused, nor when the disk fills up before the commit point, and
    /// a change that changes nothing makes no generation.
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
        self.settle_locked()?;
        if let Some(n) = self.installed_generation()?
            && let Some(rewritten) = self.unchanged_since_commit()
        {
            return self.commit_onto(n, &rewritten, changes, message, validate);
        }
        let (base, live, copy) = self.import_hand_edits()?;
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
            self.stamp_live();
            return self.generation(n);
        }
        if let Some(why) = layout_problem(self.root(), &live, &next) {
            return Err(HistoryError::Invalid(why.into()));
        }
        let from = base.map(|n| (n, &copy));
        let made = self.make_generation(&live, &next, message, validate, from, None)?;
        self.stamp_live();
        self.prune();
        Ok(made)
    }

    /// Removes the oldest generations of whole files past dnsd.toml's
    /// `[history] keep_generations` (the default when it does not read).
    /// Best effort, after a commit: what is left is removed next time.
    fn prune(&self) {
        let keep = self
            .load_dnsd()
            .map(|c| c.history.keep_generations)
            .unwrap_or_else(|_| crate::HistoryConfig::default().keep_generations);
        let Ok(numbers) = self.generation_numbers() else {
            return;
        };
        let installed = self.installed_generation().ok().flatten();
        let excess = numbers
            .len()
            .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
        for n in numbers.into_iter().take(excess) {
            if Some(n) != installed {
                let _ = fs::remove_dir_all(self.generation_root(n));
            }
        }
    }

    /// `commit` when nothing was edited by hand since generation `n` was
    /// installed (the files' stamps say so): only the files the change
    /// writes and those `rewritten` from the journal since are read; every
    /// other file of the new generation is a link to `n`'s copy. So a
    /// change to dnsd.toml costs what dnsd.toml holds, not the zones.
    fn commit_onto(
        &self,
        n: u64,
        rewritten: &BTreeSet<PathBuf>,
        changes: &[FileChange],
        message: &str,
        validate: impl FnOnce(&Workspace) -> Result<(), ConfigErrors>,
    ) -> Result<Generation, HistoryError> {
        let mut live = Files::new();
        for rel in changes.iter().map(|c| &c.path).chain(rewritten) {
            let path = self.root().join(rel);
            match fs::read(&path) {
                Ok(bytes) => {
                    live.insert(rel.clone(), bytes);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        let mut next = live.clone();
        for c in changes {
            match &c.content {
                Some(bytes) => next.insert(c.path.clone(), bytes.clone()),
                None => next.remove(&c.path),
            };
        }
        if changes
            .iter()
            .all(|c| live.get(&c.path) == c.content.as_ref())
        {
            return self.generation(n);
        }
        if let Some(why) = layout_problem(self.root(), &live, &next) {
            return Err(HistoryError::Invalid(why.into()));
        }
        let made = self.make_generation(&live, &next, message, validate, None, Some(n))?;
        self.stamp_live();
        self.prune();
        Ok(made)
    }

    /// With the lock held: records the live files as a generation of their
    /// own if they are not the generation installed last (hand edits, or a
    /// workspace without history), and returns that base generation, the
    /// live files and the base's copy of them. Reads every managed file.
    fn import_hand_edits(&self) -> Result<(Option<u64>, Files, Files), HistoryError> {
        let current = self.installed_generation()?;
        let live = self.live_files()?;
        let mut base = current;
        let copy = current
            .and_then(|n| self.generation_files(n).ok())
            .unwrap_or_default();
        if current.is_none() || !same_but_for_syncs(&copy, &live) {
            // Since the newest generation, a zone's change included.
            let why = match current.max(self.newest_journaled()?) {
                None => "the workspace as found".to_string(),
                Some(n) => format!("hand edits since generation {n}"),
            };
            let from = current.map(|n| (n, &copy));
            let imported = self.make_generation(&live, &live, &why, |_| Ok(()), from, None)?;
            base = Some(imported.number);
            return Ok((base, live.clone(), live));
        }
        Ok((base, live, copy))
    }

    /// Restores generation `n` exactly, as a new generation (history only
    /// grows, so a rollback can itself be rolled back). Only a generation
    /// its copy holds whole: one that needs changesets of a zone's journal
    /// replayed is rebuilt by dnsd, which reads zones
    /// (`HistoryError::NeedsJournal`).
    pub fn rollback(&self, n: u64, message: &str) -> Result<Generation, HistoryError> {
        if !self.has_copy(n) {
            self.generation(n)?;
            return Err(HistoryError::NeedsJournal(n));
        }
        let mut target = self.generation_files(n)?;
        for (rel, bytes) in target.iter_mut() {
            let Some(from) = journal::synced_at(bytes) else {
                continue;
            };
            let Some(origin) = zone_origin(rel) else {
                continue;
            };
            let jnl = self.journal(&origin);
            if !jnl.between(from, Some(n))?.is_empty() {
                return Err(HistoryError::NeedsJournal(n));
            }
            // The copy is the zone whole at n: no later changeset may be
            // replayed on top of it once it is live again.
            let newest = jnl.newest()?.unwrap_or(0).max(from);
            *bytes = journal::reheaded(newest, bytes);
        }
        let changes = self.changes_to(&target)?;
        self.commit(&changes, message, |_| Ok(()))
    }

    /// The changes that make the live files `target` exactly: each file
    /// that differs written, each one `target` lacks removed.
    pub fn changes_to(&self, target: &Files) -> Result<Vec<FileChange>, HistoryError> {
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
        Ok(changes)
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

    /// The sealed generation the live files are not known to match, if a
    /// commit was interrupted after its commit point.
    fn pending(&self) -> Result<Option<Pending>, HistoryError> {
        let current = self.installed_generation()?;
        let newest = self.generation_numbers()?.last().copied();
        Ok(newest
            .filter(|n| current.is_none_or(|c| *n > c))
            .map(|number| Pending {
                number,
                base: current,
            }))
    }

    /// With the lock held: removes what a commit that crashed before its
    /// commit point left, and finishes the install of a sealed generation
    /// (steps 3, 5 and 6 for the files not new yet). Returns the
    /// generation finished, if there was one.
    fn settle_locked(&self) -> Result<Option<u64>, HistoryError> {
        self.discard_staged();
        let Some(pending) = self.pending()? else {
            return Ok(None);
        };
        let finish = || {
            let to = self.generation_files(pending.number)?;
            let from = match pending.base {
                // A base that is gone: every file of the generation counts.
                Some(n) => self.generation_files(n).unwrap_or_default(),
                None => Files::new(),
            };
            let live = self.live_files()?;
            let plan = Install::plan(self.root(), &live, &from, &to);
            self.prepare(&plan, pending.number, &mut Vec::new())?;
            self.install(&plan)?;
            self.record()
        };
        finish()
            .map(|()| Some(pending.number))
            .map_err(|source| HistoryError::Unfinished {
                number: pending.number,
                source: Box::new(source),
            })
    }

    /// Removes every staged generation (`N.tmp`) and the temp files its
    /// commit may have prepared: what a writer that crashed, or failed,
    /// before its commit point left behind. Best effort: what remains is
    /// hidden, never read, and tried again next time.
    fn discard_staged(&self) {
        let Ok(entries) = fs::read_dir(self.generations_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let staging = name
                .to_str()
                .and_then(|n| n.strip_suffix(".tmp"))
                .is_some_and(|n| n.parse::<u64>().is_ok());
            if !staging {
                continue;
            }
            let staged = entry.path();
            // Its metadata is staged last: only then may temp files exist.
            if staged.join(GENERATION_FILE).exists()
                && let (Ok(files), Ok(live)) = (read_managed(&staged), self.live_files())
            {
                self.unprepare(&Install::plan(self.root(), &live, &live, &files), &[]);
            }
            let _ = fs::remove_dir_all(&staged);
        }
    }

    /// Makes generation N of `next` and installs it over the live files
    /// `live`: steps 1 to 6 of the module doc. Before the commit point a
    /// failure removes what was written; after it, it is `Unfinished`.
    fn make_generation(
        &self,
        live: &Files,
        next: &Files,
        message: &str,
        validate: impl FnOnce(&Workspace) -> Result<(), ConfigErrors>,
        from: Option<(u64, &Files)>,
        rest_from: Option<u64>,
    ) -> Result<Generation, HistoryError> {
        let dir = self.generations_dir();
        durable::private_dir_all(&dir)?;
        let number = self.newest_number()? + 1;
        let staged = dir.join(format!("{number}.tmp"));
        let sealed = self.generation_root(number);
        let generation = Generation {
            number,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            message: message.to_string(),
        };
        let plan = Install::plan(self.root(), live, live, next);
        let mut created = Vec::new();
        let up_to_the_commit_point = || {
            let rest = rest_from.map(|r| (r, live));
            self.stage(&staged, next, &generation, from, rest)?;
            fault::step("validate", &staged, || {
                check(&staged)
                    .and_then(|ws| validate(&ws))
                    .map_err(|errors| HistoryError::Invalid(unstaged(errors, &staged)))
            })?;
            self.prepare(&plan, number, &mut created)?;
            fault::step("seal", &sealed, || {
                fs::rename(&staged, &sealed).map_err(io(&sealed))
            })
        };
        if let Err(e) = up_to_the_commit_point() {
            self.unprepare(&plan, &created);
            let _ = fs::remove_dir_all(&staged);
            return Err(e);
        }
        sync_dir(&dir)
            .and_then(|()| self.install(&plan))
            .and_then(|()| self.record())
            .map_err(|source| HistoryError::Unfinished {
                number,
                source: Box::new(source),
            })?;
        Ok(generation)
    }

    /// Step 1: `files` (a file as `from`'s copy holds it linked to that
    /// copy), then every other file of `rest`'s copy (for a commit that
    /// read only what it changes, with the live files it read), then
    /// `generation`'s metadata, last, into `staged`.
    fn stage(
        &self,
        staged: &Path,
        files: &Files,
        generation: &Generation,
        from: Option<(u64, &Files)>,
        rest: Option<(u64, &Files)>,
    ) -> Result<(), HistoryError> {
        if staged.exists() {
            fs::remove_dir_all(staged).map_err(io(staged))?;
        }
        durable::private_dir_all(staged)?;
        let mut dirs = BTreeSet::from([staged.to_path_buf()]);
        for (rel, bytes) in files {
            let path = staged.join(rel);
            let parent = parent_of(&path);
            if dirs.insert(parent.clone()) {
                durable::private_dir_all(&parent)?;
            }
            // A file as the generation before holds it is a link to that
            // copy (copies are never written again): a change costs what
            // it changes, not a copy of every zone.
            let same = from.filter(|(_, copy)| copy.get(rel) == Some(bytes));
            fault::step("stage", &path, || match same {
                Some((n, _)) if fs::hard_link(self.generation_root(n).join(rel), &path).is_ok() => {
                    Ok(())
                }
                _ => durable::create_private(&path, bytes),
            })?;
        }
        if let Some((r, live)) = rest {
            self.stage_rest(staged, r, live, files)?;
        }
        let path = staged.join(GENERATION_FILE);
        let meta = toml::to_string(generation).map_err(|e| HistoryError::Io {
            path: path.clone(),
            source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
        })?;
        fault::step("stage", &path, || {
            durable::create_private(&path, meta.as_bytes())
        })?;
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    /// Step 1, for a commit that read only the files it changes
    /// (`commit_onto`): every other managed file of generation `r`'s copy,
    /// linked into `staged` (a file `live` has and `next` has not is one the
    /// commit removes).
    fn stage_rest(
        &self,
        staged: &Path,
        r: u64,
        live: &Files,
        next: &Files,
    ) -> Result<(), HistoryError> {
        let copy = self.generation_root(r);
        let mut dirs = BTreeSet::new();
        walk_managed(&copy, &mut |rel, path| {
            if next.contains_key(&rel) || live.contains_key(&rel) {
                return Ok(());
            }
            let to = staged.join(&rel);
            let parent = parent_of(&to);
            if dirs.insert(parent.clone()) {
                durable::private_dir_all(&parent)?;
            }
            fault::step("stage", &to, || match fs::hard_link(path, &to) {
                Ok(()) => Ok(()),
                Err(_) => {
                    let bytes = fs::read(path).map_err(io(path))?;
                    durable::create_private(&to, &bytes)
                }
            })
        })?;
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    /// Step 3: the temp file of each write of `plan`, and of `current`
    /// (generation `number`); directories it creates are added to
    /// `created`.
    fn prepare(
        &self,
        plan: &Install<'_>,
        number: u64,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), HistoryError> {
        let root = self.root();
        for w in &plan.writes {
            fault::step("prepare", &w.target, || {
                // Checked before the generation was made; checked again
                // because a reader finishing a crashed commit did not, and
                // because writing through a link could land outside.
                if let Some(why) = obstacle(root, w.rel) {
                    return Err(HistoryError::Io {
                        path: root.join(w.rel),
                        source: std::io::Error::other(why.to_string()),
                    });
                }
                durable::live_dirs(&parent_of(&w.target), created)?;
                durable::prepare_beside(&w.target, w.bytes, false).map(drop)
            })?;
        }
        let current = self.current_path();
        fault::step("prepare", &current, || {
            durable::prepare_beside(&current, format!("{number}\n").as_bytes(), true).map(drop)
        })
    }

    /// Undoes `prepare`: removes the temp files and the directories it
    /// created. Best effort: what remains is hidden or empty.
    fn unprepare(&self, plan: &Install<'_>, created: &[PathBuf]) {
        for w in &plan.writes {
            let _ = fs::remove_file(temp_beside(&w.target));
        }
        let _ = fs::remove_file(temp_beside(&self.current_path()));
        for dir in created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Step 5: renames each prepared file over its live file, then removes
    /// the files the generation does not have and the directories under
    /// `zones/` that this empties (a rollback restores the tree, not only
    /// the files' content).
    fn install(&self, plan: &Install<'_>) -> Result<(), HistoryError> {
        let root = self.root();
        for w in &plan.writes {
            fault::step("install", &w.target, || {
                durable::rename_into_place(&temp_beside(&w.target), &w.target)
            })?;
        }
        for rel in &plan.removes {
            let path = root.join(rel);
            fault::step("remove", &path, || {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(&path)(e)),
                    _ => {}
                }
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
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Step 6: the prepared `current` into place.
    fn record(&self) -> Result<(), HistoryError> {
        let current = self.current_path();
        fault::step("record", &current, || {
            durable::rename_into_place(&temp_beside(&current), &current)
        })
    }

    /// The writers' lock, held exclusively; `.cutover/` is made (or made
    /// again) private on the way. The gate is held too, so that readers
    /// queue behind a waiting writer instead of starving it.
    fn lock(&self) -> Result<HistoryLock, HistoryError> {
        let dir = self.history_dir();
        durable::private_dir_all(&dir)?;
        durable::narrow(&dir);
        let gate = flock(open_lock(&dir.join(GATE_FILE))?, libc::LOCK_EX)?;
        let lock = flock(open_lock(&dir.join(LOCK_FILE))?, libc::LOCK_EX)?;
        Ok(HistoryLock {
            _files: vec![gate, lock],
        })
    }

    /// The readers' lock, held shared: no writer installs meanwhile. The
    /// gate is passed on the way in (see `lock`).
    fn lock_shared(&self) -> Result<HistoryLock, HistoryError> {
        let dir = self.history_dir();
        let open = |name: &str| {
            let path = dir.join(name);
            match File::open(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => open_lock(&path),
                other => other.map(|file| (file, path.clone())).map_err(io(&path)),
            }
        };
        let gate = flock(open(GATE_FILE)?, libc::LOCK_SH)?;
        let lock = flock(open(LOCK_FILE)?, libc::LOCK_SH)?;
        drop(gate);
        Ok(HistoryLock { _files: vec![lock] })
    }
}

/// A commit interrupted after its commit point: generation `number` is
/// sealed, and the live files were generation `base` before it began.
struct Pending {
    number: u64,
    base: Option<u64>,
}

/// What installing a generation writes and removes.
struct Install<'a> {
    writes: Vec<LiveWrite<'a>>,
    /// Paths relative to the root.
    removes: Vec<PathBuf>,
}

/// One live file to write.
struct LiveWrite<'a> {
    /// Relative to the root.
    rel: &'a Path,
    /// Where the bytes go: `root/rel`, or the target of the link there
    /// (`live_target`).
    target: PathBuf,
    bytes: &'a [u8],
}

impl<'a> Install<'a> {
    /// Going from generation `from` to `to` over the live files `live`:
    /// each file in which `from` and `to` differ that is not yet as `to`
    /// has it. From `live` itself, that is every difference; from the base
    /// of an interrupted commit, what that commit has still to do.
    fn plan(root: &Path, live: &Files, from: &Files, to: &'a Files) -> Self {
        let changed: BTreeSet<&PathBuf> = from
            .keys()
            .chain(to.keys())
            .filter(|p| from.get(*p) != to.get(*p))
            .collect();
        let mut writes = Vec::new();
        let mut removes = Vec::new();
        for rel in changed {
            match to.get_key_value(rel) {
                Some((rel, bytes)) if live.get(rel) != Some(bytes) => writes.push(LiveWrite {
                    rel,
                    target: live_target(root, rel),
                    bytes,
                }),
                Some(_) => {}
                None if live.contains_key(rel) => removes.push(rel.clone()),
                None => {}
            }
        }
        Self { writes, removes }
    }
}

/// Held while writing (exclusively) or reading (shared); the kernel
/// releases the flocks when the files close, even if the process crashes.
#[derive(Debug)]
struct HistoryLock {
    _files: Vec<File>,
}

/// Opens (creating, 0600) the lock file at `path`.
fn open_lock(path: &Path) -> Result<(File, PathBuf), HistoryError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(durable::PRIVATE_FILE)
        .open(path)
        .map(|file| (file, path.to_path_buf()))
        .map_err(io(path))
}

/// Takes `op` (LOCK_EX, LOCK_SH) on the file, waiting up to `LOCK_WAIT`.
fn flock((file, path): (File, PathBuf), op: libc::c_int) -> Result<File, HistoryError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != ErrorKind::WouldBlock {
            return Err(io(&path)(err));
        }
        if Instant::now() > deadline {
            return Err(HistoryError::Busy(path));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where the content of managed file `rel` lives: `root/rel`, or, for a
/// file the daemons read through a link (`dnsd.toml`, `redirector.toml`,
/// a zone file directly in `zones/`) that links to a regular file, the
/// link's target, which a commit writes so that the link stays a link.
fn live_target(root: &Path, rel: &Path) -> PathBuf {
    let path = root.join(rel);
    if is_read_through_link(rel)
        && fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink())
        && fs::metadata(&path).is_ok_and(|m| m.is_file())
        && let Ok(target) = fs::canonicalize(&path)
    {
        return target;
    }
    path
}

/// Whether a link at `rel` is read through rather than skipped: the
/// daemons' two files and the zone files themselves.
fn is_read_through_link(rel: &Path) -> bool {
    let parts: Vec<Component> = rel.components().collect();
    match parts.as_slice() {
        [Component::Normal(name)] => *name == REDIRECTOR_FILE || *name == DNSD_FILE,
        [Component::Normal(dir), Component::Normal(name)] => {
            *dir == ZONES_DIR
                && name
                    .to_str()
                    .is_some_and(|n| n.ends_with(ZONE_SUFFIX) && !is_skipped_name(n))
        }
        _ => false,
    }
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
    walk_managed(root, &mut |rel, path| {
        match fs::read(path) {
            Ok(bytes) => {
                files.insert(rel, bytes);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(path)(e)),
        }
        Ok(())
    })?;
    Ok(files)
}

/// Calls `found` with each managed file under `root` (its path relative to
/// the root, and where to read it): the daemons' two files and every
/// managed file under `zones/`, subdirectories included. Symlinks are
/// neither followed nor kept (see the module doc), except that `zones/`
/// itself may be one (where it lives is the operator's layout, like the
/// workspace root), and that a file the daemons read through a link
/// (`is_read_through_link`) is read through it. A file or directory that
/// vanishes meanwhile (a hand edit racing the commit) is simply not there.
fn walk_managed(
    root: &Path,
    found: &mut dyn FnMut(PathBuf, &Path) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    for name in [REDIRECTOR_FILE, DNSD_FILE] {
        let path = root.join(name);
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            found(PathBuf::from(name), &path)?;
        }
    }
    walk_zones_tree(root, Path::new(ZONES_DIR), found)
}

fn walk_zones_tree(
    root: &Path,
    rel: &Path,
    found: &mut dyn FnMut(PathBuf, &Path) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
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
        let linked_zone = || {
            kind.is_symlink()
                && is_read_through_link(&rel)
                && fs::metadata(&path).is_ok_and(|m| m.is_file())
        };
        if kind.is_dir() {
            walk_zones_tree(root, &rel, found)?;
        } else if kind.is_file() || linked_zone() {
            found(rel, &path)?;
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

/// Whether the live files `live` are the copy `copy` of a generation,
/// but for zone files that dnsd has rewritten from its journal since (a
/// valid sync header): those hold the same zone, and are no hand edit.
fn same_but_for_syncs(copy: &Files, live: &Files) -> bool {
    copy.keys()
        .chain(live.keys())
        .all(|p| match (copy.get(p), live.get(p)) {
            (a, b) if a == b => true,
            (Some(_), Some(l)) => zone_origin(p).is_some() && journal::synced_at(l).is_some(),
            _ => false,
        })
}

/// The origin of the zone whose file is `rel` (`zones/<origin>.zone`), if
/// it is one.
fn zone_origin(rel: &Path) -> Option<String> {
    let mut parts = rel.components();
    let (Some(Component::Normal(dir)), Some(Component::Normal(name)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let stem = name.to_str()?.strip_suffix(ZONE_SUFFIX)?;
    (dir == ZONES_DIR && !stem.is_empty() && !is_skipped_name(stem))
        .then(|| format!("{}.", stem.trim_end_matches('.').to_ascii_lowercase()))
}

#[cfg(test)]
mod crash_tests;

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

    /// Runs `commit` with the fault `plan` armed, which must crash it.
    fn crash_at<T: std::fmt::Debug>(plan: &str, commit: impl FnOnce() -> T) {
        let _armed = fault::arm(plan);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(commit));
        match crashed {
            Err(p) if p.is::<fault::Crash>() => {}
            Err(p) => std::panic::resume_unwind(p),
            Ok(done) => panic!("{plan} did not crash the commit: {done:?}"),
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
        // A crash after the generation became durable but before the live
        // files were installed.
        crash_at("after:seal", || {
            ws.commit(&[change("redirector.toml", RULE_B)], "crashed", |_| Ok(()))
        });
        assert_eq!(fs::read_to_string(ws.redirector_path()).unwrap(), RULE_A);
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
