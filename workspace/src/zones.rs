//! The files under `zones/`: the zones dnsd serves and the material they
//! `$INCLUDE`.
//!
//! Two rules live here, and nowhere else:
//! - **Zones.** Only `<origin>.zone` files directly in `zones/` are zones
//!   (`list`); every other file is include material, served only through a
//!   zone that includes it.
//! - **Managed files.** Every regular file under `zones/`, at any depth, is
//!   versioned by the workspace history (`history.rs`), except names an
//!   editor or cutover itself leaves behind (`is_skipped_name`). A zone may
//!   `$INCLUDE` only a managed file (`Workspace::managed_zone_path`), so that
//!   a rollback restores every byte a zone is made of, the staged copy a
//!   change is validated in holds every file a zone reads, and no zone can
//!   make dnsd (which runs as root) read a file from outside the workspace.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::{ConfigError, Workspace, ZONE_SUFFIX};

/// One zone file: `zones/example.test.zone` serves origin `example.test.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFile {
    /// The zone's origin, lower case, fully qualified (ends with a dot).
    pub origin: String,
    pub path: PathBuf,
}

pub(crate) fn list(dir: &Path) -> Result<Vec<ZoneFile>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ConfigError::file(dir, format!("cannot list zones: {e}"))),
    };
    let mut zones = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::file(dir, format!("cannot list zones: {e}")))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Editor backups and temporary files are not zones.
        let Some(stem) = name.strip_suffix(ZONE_SUFFIX) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if stem.is_empty() {
            return Err(ConfigError::file(
                &path,
                "a zone file is named <origin>.zone, e.g. example.test.zone",
            ));
        }
        let origin = format!("{}.", stem.trim_end_matches('.').to_ascii_lowercase());
        zones.push(ZoneFile { origin, path });
    }
    zones.sort_by(|a, b| a.origin.cmp(&b.origin));
    if let Some(pair) = zones.windows(2).find(|w| w[0].origin == w[1].origin) {
        return Err(ConfigError::file(
            &pair[1].path,
            format!(
                "zone {} is defined twice (also in {})",
                pair[1].origin,
                pair[0].path.display()
            ),
        ));
    }
    Ok(zones)
}

/// Names under `zones/` that are not managed, file or directory: hidden
/// names (`.x`, which also covers editor swap files and cutover's own
/// temporary files) and editor backups (`x~`, `x.swp`, `x.tmp`). They are
/// an editor's scratch, not part of a zone: versioning them would record a
/// "hand edit" each time an editor saves, and restore stale swap files on
/// rollback.
pub(crate) fn is_skipped_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp")
}

/// Whether `rel`, relative to `zones/`, names a file the history manages:
/// one or more plain components (no `..`, `.`, root or prefix), each valid
/// UTF-8 and not skipped (`is_skipped_name`). A name that is not UTF-8 is
/// not managed because it could not be named in a message or a
/// `FileChange` made from text. Says nothing about what is on disk.
pub(crate) fn is_managed_in_zones(rel: &Path) -> bool {
    let mut any = false;
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return false;
        };
        if name.to_str().is_none_or(is_skipped_name) {
            return false;
        }
        any = true;
    }
    any
}

/// Why a path named relative to `zones/` (an `$INCLUDE` target) is not a
/// managed file. Each names the path as it was written.
#[derive(Debug, thiserror::Error)]
pub enum ZonePathError {
    #[error(
        "{0}: an absolute path; a zone includes only files inside the workspace's zones/ \
         directory, named relative to it (e.g. inc/common.inc)"
    )]
    Absolute(PathBuf),
    #[error(
        "{path}: leaves the workspace's zones/ directory{}; a zone includes only files inside \
         zones/, which the workspace history versions",
        resolved.as_ref().map(|r| format!(" (it resolves to {})", r.display())).unwrap_or_default()
    )]
    Outside {
        path: PathBuf,
        /// Where a symlink led, when it was a symlink that left.
        resolved: Option<PathBuf>,
    },
    #[error(
        "{0}: hidden files, editor backups (~, .swp, .tmp) and names that are not UTF-8 are \
         not versioned by the workspace history, so a zone may not include them; rename it"
    )]
    Unversioned(PathBuf),
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    #[error("{path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Workspace {
    /// The absolute, canonical path of the managed file `rel` names,
    /// relative to `zones/`: what dnsd may open for `$INCLUDE rel`. Refused
    /// when `rel` is absolute, climbs out of `zones/` with `..`, resolves
    /// (through a symlink) to anything outside `zones/`, names a hidden or
    /// backup file (`is_skipped_name`, at any depth), or is not an existing
    /// regular file.
    ///
    /// The canonical path is returned, not `zones_dir().join(rel)`, so that
    /// what the caller opens is the very file that was checked even if a
    /// directory on the way is swapped for a symlink afterwards. A symlink
    /// inside `zones/` to a managed file is accepted: the history versions
    /// its target (symlinks themselves are not versioned).
    ///
    /// `..` is checked on the text before the file system is touched, so
    /// that a zone cannot probe which files exist outside the workspace.
    pub fn managed_zone_path(&self, rel: &Path) -> Result<PathBuf, ZonePathError> {
        let mut depth = 0usize;
        for part in rel.components() {
            match part {
                Component::Prefix(_) | Component::RootDir => {
                    return Err(ZonePathError::Absolute(rel.to_path_buf()));
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    depth = depth.checked_sub(1).ok_or_else(|| ZonePathError::Outside {
                        path: rel.to_path_buf(),
                        resolved: None,
                    })?;
                }
                Component::Normal(name) => {
                    if name.to_str().is_none_or(is_skipped_name) {
                        return Err(ZonePathError::Unversioned(rel.to_path_buf()));
                    }
                    depth += 1;
                }
            }
        }
        let unreadable = |path: PathBuf| move |source| ZonePathError::Unreadable { path, source };
        let zones = self.zones_dir();
        let zones = zones.canonicalize().map_err(unreadable(zones))?;
        let target = zones
            .join(rel)
            .canonicalize()
            .map_err(unreadable(rel.to_path_buf()))?;
        let Ok(inside) = target.strip_prefix(&zones) else {
            return Err(ZonePathError::Outside {
                path: rel.to_path_buf(),
                resolved: Some(target),
            });
        };
        if inside.as_os_str().is_empty() {
            return Err(ZonePathError::NotAFile(rel.to_path_buf()));
        }
        // A symlink may lead to a name that is itself skipped.
        if !is_managed_in_zones(inside) {
            return Err(ZonePathError::Unversioned(rel.to_path_buf()));
        }
        let meta = target.metadata().map_err(unreadable(rel.to_path_buf()))?;
        if !meta.is_file() {
            return Err(ZonePathError::NotAFile(rel.to_path_buf()));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_zone_files_by_origin_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.test.zone",
            "a.test.zone",
            "a.test.zone~",
            ".x.zone.swp",
            "README",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let zones = list(dir.path()).unwrap();
        let origins: Vec<_> = zones.iter().map(|z| z.origin.as_str()).collect();
        assert_eq!(origins, ["a.test.", "b.test."]);
    }

    #[test]
    fn origins_differing_only_in_case_clash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.test.zone"), "").unwrap();
        std::fs::write(dir.path().join("A.test.zone"), "").unwrap();
        let err = list(dir.path()).unwrap_err();
        assert!(err.message.contains("defined twice"), "{err}");
    }

    #[test]
    fn a_missing_zones_directory_means_no_zones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("zones")).unwrap().is_empty());
    }

    /// A workspace whose zone includes `inc/a.inc`, beside a `dnsd.toml`
    /// that no zone may include.
    fn include_workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let zones = dir.path().join("zones");
        std::fs::create_dir_all(zones.join("inc")).unwrap();
        std::fs::write(zones.join("a.test.zone"), "$INCLUDE inc/a.inc\n").unwrap();
        std::fs::write(zones.join("inc/a.inc"), "www IN A 198.18.0.2\n").unwrap();
        std::fs::write(dir.path().join("dnsd.toml"), "").unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    #[test]
    fn an_include_inside_zones_is_the_managed_file_itself() {
        let (dir, ws) = include_workspace();
        let expected = dir.path().join("zones/inc/a.inc").canonicalize().unwrap();
        for rel in ["inc/a.inc", "./inc/a.inc", "inc/../inc/a.inc"] {
            assert_eq!(
                ws.managed_zone_path(Path::new(rel)).unwrap(),
                expected,
                "{rel}"
            );
        }
        // a zone file may be included too: it is managed like the rest
        assert!(ws.managed_zone_path(Path::new("a.test.zone")).is_ok());
    }

    #[test]
    fn an_include_cannot_reach_the_workspace_config_or_the_host() {
        let (_dir, ws) = include_workspace();
        for rel in [
            "../dnsd.toml",
            "inc/../../dnsd.toml",
            "../../../../etc/passwd",
        ] {
            let err = ws.managed_zone_path(Path::new(rel)).unwrap_err();
            assert!(
                matches!(err, ZonePathError::Outside { resolved: None, .. }),
                "{rel}: {err}"
            );
            assert!(
                err.to_string().contains("leaves the workspace's zones/"),
                "{err}"
            );
        }
        let err = ws.managed_zone_path(Path::new("/etc/shadow")).unwrap_err();
        assert!(matches!(err, ZonePathError::Absolute(_)), "{err}");
        assert!(err.to_string().starts_with("/etc/shadow: "), "{err}");
    }

    #[test]
    fn a_symlink_out_of_zones_is_refused_and_one_inside_is_followed() {
        let (dir, ws) = include_workspace();
        let zones = dir.path().join("zones");
        std::os::unix::fs::symlink("/etc/passwd", zones.join("passwd.inc")).unwrap();
        std::os::unix::fs::symlink("/etc", zones.join("etc")).unwrap();
        std::os::unix::fs::symlink("../dnsd.toml", zones.join("config.inc")).unwrap();
        std::os::unix::fs::symlink("inc/a.inc", zones.join("alias.inc")).unwrap();
        for rel in ["passwd.inc", "etc/passwd", "config.inc"] {
            let err = ws.managed_zone_path(Path::new(rel)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ZonePathError::Outside {
                        resolved: Some(_),
                        ..
                    }
                ),
                "{rel}: {err}"
            );
        }
        let err = ws.managed_zone_path(Path::new("passwd.inc")).unwrap_err();
        assert!(err.to_string().contains("resolves to /etc/passwd"), "{err}");
        assert_eq!(
            ws.managed_zone_path(Path::new("alias.inc")).unwrap(),
            zones.join("inc/a.inc").canonicalize().unwrap(),
            "the target of a link inside zones/ is the versioned file"
        );
    }

    #[test]
    fn hidden_backup_missing_and_directory_targets_are_refused() {
        let (dir, ws) = include_workspace();
        let zones = dir.path().join("zones");
        for name in [".hidden.inc", "a.inc~", "a.inc.swp", "a.inc.tmp"] {
            std::fs::write(zones.join(name), "").unwrap();
        }
        std::fs::create_dir(zones.join(".git")).unwrap();
        std::fs::write(zones.join(".git/config"), "").unwrap();
        std::os::unix::fs::symlink(".hidden.inc", zones.join("shown.inc")).unwrap();
        for rel in [
            ".hidden.inc",
            "a.inc~",
            "a.inc.swp",
            "a.inc.tmp",
            ".git/config",
            "shown.inc",
        ] {
            let err = ws.managed_zone_path(Path::new(rel)).unwrap_err();
            assert!(matches!(err, ZonePathError::Unversioned(_)), "{rel}: {err}");
        }
        let err = ws
            .managed_zone_path(Path::new("inc/missing.inc"))
            .unwrap_err();
        assert!(matches!(err, ZonePathError::Unreadable { .. }), "{err}");
        assert!(err.to_string().starts_with("inc/missing.inc: "), "{err}");
        for rel in ["inc", ".", "inc/.."] {
            let err = ws.managed_zone_path(Path::new(rel)).unwrap_err();
            assert!(matches!(err, ZonePathError::NotAFile(_)), "{rel}: {err}");
        }
    }

    #[test]
    fn managed_names_are_plain_relative_paths_without_editor_scratch() {
        for rel in ["a.test.zone", "extra.inc", "inc/common.inc", "a/b/c"] {
            assert!(is_managed_in_zones(Path::new(rel)), "{rel}");
        }
        for rel in [
            "", "../x", "/x", "./x", "inc/../x", ".x", "x~", "x.swp", "x.tmp", ".d/x", "d~/x",
        ] {
            assert!(!is_managed_in_zones(Path::new(rel)), "{rel}");
        }
    }
}
