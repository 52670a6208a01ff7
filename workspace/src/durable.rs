//! The file operations the commit protocol (`history.rs`) is made of, each
//! of which a crash leaves done or not done, never half done: a file is
//! written whole to a temporary name and fsynced before it is renamed over
//! the old one, and a directory is fsynced after each entry it gains or
//! loses.
//!
//! Two kinds of file, two rules of ownership:
//! - **the history's own** (`.cutover/**`) is private: 0600 files in 0700
//!   directories, whatever the umask, because a generation holds
//!   `dnsd.toml`, which may hold a TSIG secret;
//! - **a live file** that is rewritten keeps its mode and owner (a 0600
//!   `dnsd.toml` stays 0600 and its owner's); a new one gets the defaults,
//!   as an editor would give it.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::HistoryError;

/// Mode of the history's files.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
/// Mode of the history's directories.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the private directory `dir` and its missing ancestors (0700),
/// fsyncing the parent of each one created.
pub(crate) fn private_dir_all(dir: &Path) -> Result<(), HistoryError> {
    create_dirs(dir, Some(PRIVATE_DIR), &mut Vec::new())
}

/// Makes `dir` 0700 if it is wider (a history made before it was kept
/// private). Best effort: a reader that may not change it reads anyway.
pub(crate) fn narrow(dir: &Path) {
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.is_dir()
        && meta.mode() & 0o077 != 0
    {
        let _ = fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR));
    }
}

/// Creates the live directory `dir` and its missing ancestors with the
/// default mode, fsyncing the parent of each one created, and adds each
/// one created to `created` (outermost first), so that a commit that does
/// not go through can remove them again.
pub(crate) fn live_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), HistoryError> {
    create_dirs(dir, None, created)
}

fn create_dirs(
    dir: &Path,
    mode: Option<u32>,
    created: &mut Vec<PathBuf>,
) -> Result<(), HistoryError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent == dir {
        // `.` that is not a directory: nothing to create it in.
        return Err(io(dir)(ErrorKind::NotFound.into()));
    }
    create_dirs(&parent, mode, created)?;
    let mut builder = DirBuilder::new();
    if let Some(mode) = mode {
        builder.mode(mode);
    }
    match builder.create(dir) {
        Ok(()) => {
            created.push(dir.to_path_buf());
            sync_dir(&parent)
        }
        // Made by a racing hand edit; the write into it reports any trouble.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Creates the private file `path` holding `bytes`, fsynced; a partial
/// file is removed again, so that a full disk is not left fuller. The
/// directory is not fsynced: staging fsyncs its directories once, at the
/// end.
pub(crate) fn create_private(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written.map_err(io(path))
}

/// The temporary name beside `target` that its next content is written
/// under: hidden, so that neither the history nor a zone listing takes it
/// for a file of the workspace.
pub(crate) fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    parent_of(target).join(format!(".{name}.cutover-tmp"))
}

/// Writes `bytes` to the temporary file beside `target`
/// (`temp_beside`), fsynced, and returns its path. It gets `target`'s mode
/// and owner when `target` exists (an owner this process may not give is
/// left as it is), else 0600 if `private`, else the default. A temp file
/// that already holds exactly `bytes` (one that a writer which crashed
/// left behind) is kept: finishing a commit then needs no free space.
/// A partial temp file is removed again.
pub(crate) fn prepare_beside(
    target: &Path,
    bytes: &[u8],
    private: bool,
) -> Result<PathBuf, HistoryError> {
    prepare_as(&temp_beside(target), target, bytes, private)
}

/// As `prepare_beside`, under the temporary name `temp` (beside
/// `target`): for a writer that prepares without the history's lock, so
/// that it never shares a temp file with a commit.
pub(crate) fn prepare_as(
    temp: &Path,
    target: &Path,
    bytes: &[u8],
    private: bool,
) -> Result<PathBuf, HistoryError> {
    let temp = temp.to_path_buf();
    if fs::read(&temp).is_ok_and(|old| old == bytes) {
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io(&temp))?;
        return Ok(temp);
    }
    let like = fs::metadata(target).ok();
    let create_mode = match (&like, private) {
        (Some(meta), _) => meta.mode() & 0o7777,
        (None, true) => PRIVATE_FILE,
        (None, false) => 0o666,
    };
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(create_mode)
        .open(&temp)
        .and_then(|mut f| {
            if let Some(meta) = &like {
                // The umask narrowed the mode it was created with.
                f.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))?;
                match std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid())) {
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
                    other => other?,
                }
            }
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io(&temp)(e));
    }
    Ok(temp)
}

/// Renames `temp` over `target` and fsyncs their directory: the one
/// moment `target` changes, old content to new.
pub(crate) fn rename_into_place(temp: &Path, target: &Path) -> Result<(), HistoryError> {
    fs::rename(temp, target).map_err(io(target))?;
    sync_dir(&parent_of(target))
}

/// The directory holding `path`, `.` for a bare relative name.
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), HistoryError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_file_has_the_mode_of_the_one_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dnsd.toml");
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, Permissions::from_mode(0o640)).unwrap();
        let temp = prepare_beside(&target, b"new", false).unwrap();
        assert_eq!(fs::metadata(&temp).unwrap().mode() & 0o777, 0o640);
        rename_into_place(&temp, &target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let fresh = prepare_beside(&dir.path().join("current"), b"7\n", true).unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_complete_temp_file_is_reused_and_a_stale_one_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.zone");
        let temp = temp_beside(&target);
        fs::write(&temp, "new").unwrap();
        let inode = fs::metadata(&temp).unwrap().ino();
        prepare_beside(&target, b"new", false).unwrap();
        assert_eq!(fs::metadata(&temp).unwrap().ino(), inode);
        prepare_beside(&target, b"newer", false).unwrap();
        assert_eq!(fs::read(&temp).unwrap(), b"newer");
    }
}
