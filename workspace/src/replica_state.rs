//! When each replica zone was last refreshed from its primary:
//! `WORKSPACE/.cutover/replicas/<zone>` holds the Unix time in decimal.
//! Kept apart from the zone's file, which changes only when the zone does,
//! so that a restart knows how much of the SOA's expire is left.

use std::fs;
use std::path::PathBuf;

use std::os::unix::fs::DirBuilderExt;

use crate::durable::{self, PRIVATE_DIR};
use crate::{HISTORY_DIR, HistoryError, Workspace};

impl Workspace {
    fn replica_state_path(&self, origin: &str) -> PathBuf {
        self.root()
            .join(HISTORY_DIR)
            .join("replicas")
            .join(origin.to_ascii_lowercase())
    }

    /// When replica zone `origin` (fully qualified) was last refreshed
    /// (Unix s); `None` if never, or if the record does not read.
    pub fn replica_refreshed(&self, origin: &str) -> Option<u64> {
        fs::read_to_string(self.replica_state_path(origin))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records that replica zone `origin` was refreshed at `at` (Unix s),
    /// durably: written beside and renamed into place.
    pub fn record_replica_refresh(&self, origin: &str, at: u64) -> Result<(), HistoryError> {
        let path = self.replica_state_path(origin);
        let dir = durable::parent_of(&path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(&dir)
            .map_err(durable::io(&dir))?;
        let temp = durable::prepare_beside(&path, format!("{at}\n").as_bytes(), true)?;
        durable::rename_into_place(&temp, &path)
    }
}

#[cfg(test)]
mod tests {
    use crate::Workspace;

    #[test]
    fn a_refresh_is_read_back_and_none_before_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.replica_refreshed("example.org."), None);
        ws.record_replica_refresh("Example.ORG.", 1_700_000_000)
            .unwrap();
        ws.record_replica_refresh("example.org.", 1_700_000_060)
            .unwrap();
        assert_eq!(ws.replica_refreshed("example.org."), Some(1_700_000_060));
    }
}
