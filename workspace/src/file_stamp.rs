//! What identifies a file's content without reading it — device, inode,
//! size, modification and change times — so that a reader can tell by a
//! `stat` whether someone has written a file since it was read: the
//! history (hand edits since the last commit), dnsd (a zone or dnsd.toml
//! edited since it was loaded, a TSIG secret file rotated).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp([i128; 5]);

/// The stamp of `path` now; `None` when it is gone (links are followed).
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Some(Stamp([
        i128::from(m.dev()),
        i128::from(m.ino()),
        i128::from(m.size()),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
    ]))
}

/// Some files, and how each stood when they were stamped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamps(Vec<(PathBuf, Option<Stamp>)>);

impl Stamps {
    /// The stamps of `paths` now (a file that is gone has none).
    pub fn of(paths: &[PathBuf]) -> Self {
        Self(paths.iter().map(|p| (p.clone(), stamp(p))).collect())
    }

    /// These and the stamps of `more` now.
    pub fn with(mut self, more: &[PathBuf]) -> Self {
        self.0.extend(Self::of(more).0);
        self
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same files' stamps now.
    pub fn restamped(&self) -> Self {
        Self(self.0.iter().map(|(p, _)| (p.clone(), stamp(p))).collect())
    }

    /// Whether there are stamps and every file is as it was stamped.
    pub fn unchanged(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|(p, s)| stamp(p) == *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_a_rename_over_and_a_removal_show() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "1").unwrap();
        let stamps = Stamps::of(std::slice::from_ref(&a));
        assert!(stamps.unchanged());
        let b = dir.path().join("b");
        std::fs::write(&b, "1").unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert!(!stamps.unchanged(), "renamed over: another inode");
        let stamps = stamps.restamped();
        std::fs::write(&a, "22").unwrap();
        assert!(!stamps.unchanged());
        std::fs::remove_file(&a).unwrap();
        assert!(!stamps.unchanged());
        let gone = stamps.restamped();
        assert!(gone.unchanged(), "gone, and still gone");
        std::fs::write(&a, "3").unwrap();
        assert!(!gone.unchanged(), "back");
        assert!(!Stamps::default().unchanged());
    }
}
