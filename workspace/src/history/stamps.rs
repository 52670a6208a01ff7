//! What the live files looked like when the history last saw them: for
//! each managed file, what identifies its content without reading it
//! (device, inode, size, modification and change times). A change through
//! the journal compares them with the live files' — a stat of each, not a
//! read — and only when they differ reads the workspace to record hand
//! edits as a generation of their own first, so that every generation
//! stays restorable exactly. The record is a cache: a lost or stale one
//! only costs that read.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{HistoryError, walk_managed};
use crate::Workspace;
use crate::durable;

const STAMPS_FILE: &str = "stamps";

type Stamps = BTreeMap<PathBuf, [i128; 5]>;

impl Workspace {
    fn stamps_path(&self) -> PathBuf {
        self.history_dir().join(STAMPS_FILE)
    }

    fn live_stamps(&self) -> Result<Stamps, HistoryError> {
        let mut out = Stamps::new();
        walk_managed(self.root(), &mut |rel, path| {
            if let Some(s) = stamp(path) {
                out.insert(rel, s);
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn recorded_stamps(&self) -> Option<Stamps> {
        serde_json::from_slice(&fs::read(self.stamps_path()).ok()?).ok()
    }

    fn record_stamps(&self, stamps: &Stamps) {
        let path = self.stamps_path();
        if let Ok(bytes) = serde_json::to_vec(stamps)
            && let Ok(temp) = durable::prepare_beside(&path, &bytes, true)
        {
            let _ = durable::rename_into_place(&temp, &path);
        }
    }

    /// Records the live files as the history has seen them: after a commit
    /// installed them. Best effort.
    pub(super) fn stamp_live(&self) {
        if let Ok(stamps) = self.live_stamps() {
            self.record_stamps(&stamps);
        }
    }

    /// Records that the history wrote the live file `rel` (a zone file
    /// rewritten from the journal) and nothing else changed. Best effort.
    pub(super) fn stamp_one(&self, rel: &Path, live: &Path) {
        let Some(mut stamps) = self.recorded_stamps() else {
            return;
        };
        match stamp(live) {
            Some(s) => stamps.insert(rel.to_path_buf(), s),
            None => stamps.remove(rel),
        };
        self.record_stamps(&stamps);
    }

    /// Whether the live files are as the history last saw them.
    pub(super) fn seen_as_live(&self) -> Result<bool, HistoryError> {
        Ok(self
            .recorded_stamps()
            .is_some_and(|recorded| self.live_stamps().is_ok_and(|live| live == recorded)))
    }
}

fn stamp(path: &Path) -> Option<[i128; 5]> {
    let m = fs::metadata(path).ok()?;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Some([
        i128::from(m.dev()),
        i128::from(m.ino()),
        i128::from(m.size()),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
    ])
}
