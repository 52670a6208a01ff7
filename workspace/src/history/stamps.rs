//! What the live files looked like when the history last saw them: for
//! each managed file, what identifies its content without reading it
//! (device, inode, size, modification and change times). A change through
//! the journal compares them with the live files' — a stat of each, not a
//! read — and only when they differ reads the workspace to record hand
//! edits as a generation of their own first, so that every generation
//! stays restorable exactly. The record is a cache: a lost or stale one
//! only costs that read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::{HistoryError, walk_managed};
use crate::Workspace;
use crate::durable;
use crate::file_stamp::{Stamp, stamp};

const STAMPS_FILE: &str = "stamps";

type Stamps = BTreeMap<PathBuf, Stamp>;

/// The record: the live files' stamps, and which of them dnsd has
/// rewritten from the journal since the last commit (their content is not
/// in the installed generation's copy).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Record {
    stamps: Stamps,
    rewritten: BTreeSet<PathBuf>,
}

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

    fn recorded(&self) -> Option<Record> {
        serde_json::from_slice(&fs::read(self.stamps_path()).ok()?).ok()
    }

    fn write_record(&self, record: &Record) {
        let path = self.stamps_path();
        if let Ok(bytes) = serde_json::to_vec(record)
            && let Ok(temp) = durable::prepare_beside(&path, &bytes, true)
        {
            let _ = durable::rename_into_place(&temp, &path);
        }
    }

    /// Records the live files as the history has seen them: after a commit
    /// installed them, when they are its copy. Best effort.
    pub(super) fn stamp_live(&self) {
        if let Ok(stamps) = self.live_stamps() {
            self.write_record(&Record {
                stamps,
                rewritten: BTreeSet::new(),
            });
        }
    }

    /// Records that the history wrote the live file `rel` (a zone file
    /// rewritten from the journal) and nothing else changed. Best effort.
    pub(super) fn stamp_one(&self, rel: &Path, live: &Path) {
        let Some(mut record) = self.recorded() else {
            return;
        };
        match stamp(live) {
            Some(s) => record.stamps.insert(rel.to_path_buf(), s),
            None => record.stamps.remove(rel),
        };
        record.rewritten.insert(rel.to_path_buf());
        self.write_record(&record);
    }

    /// Whether the live files are as the history last saw them.
    pub(super) fn seen_as_live(&self) -> Result<bool, HistoryError> {
        Ok(self.unchanged_since_commit().is_some())
    }

    /// When the live files are as the history last saw them: the ones
    /// rewritten from the journal since the last commit; every other one
    /// is as that commit's copy holds it.
    pub(super) fn unchanged_since_commit(&self) -> Option<BTreeSet<PathBuf>> {
        let recorded = self.recorded()?;
        let live = self.live_stamps().ok()?;
        (live == recorded.stamps).then_some(recorded.rewritten)
    }
}
