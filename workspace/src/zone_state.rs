//! Small per-zone facts dnsd keeps across restarts, each in
//! `WORKSPACE/.cutover/<kind>/<zone>` as one decimal number, apart from the
//! zone's file (which changes only when the zone does):
//! - `replicas/`: when a replica zone was last refreshed from its primary
//!   (Unix s), so that a restart knows how much of the SOA's expire is left;
//! - `served-serials/`: the last serial a zone was served under when health
//!   checks changed it (a change no file holds), and the serial its files
//!   had then, so that a reload or restart never serves an older serial
//!   than secondaries have taken.

use std::fs;
use std::path::PathBuf;

use std::os::unix::fs::DirBuilderExt;

use crate::durable::{self, PRIVATE_DIR};
use crate::{HISTORY_DIR, HistoryError, Workspace};

const REPLICAS: &str = "replicas";
const SERVED_SERIALS: &str = "served-serials";

impl Workspace {
    /// When replica zone `origin` (fully qualified) was last refreshed
    /// (Unix s); `None` if never, or if the record does not read.
    pub fn replica_refreshed(&self, origin: &str) -> Option<u64> {
        self.zone_state(REPLICAS, origin)
    }

    /// Records that replica zone `origin` was refreshed at `at` (Unix s),
    /// durably: written beside and renamed into place.
    pub fn record_replica_refresh(&self, origin: &str, at: u64) -> Result<(), HistoryError> {
        self.record_zone_state(REPLICAS, origin, at)
    }

    /// The serial zone `origin` was last served under after a health
    /// change, and the serial its files had then; `None` if never.
    pub fn served_serial(&self, origin: &str) -> Option<(u32, u32)> {
        let text: String = self.zone_state(SERVED_SERIALS, origin)?;
        let (served, files) = text.split_once(' ')?;
        Some((served.parse().ok()?, files.parse().ok()?))
    }

    /// Records that zone `origin` is served under `served` while its files
    /// say `files`, durably.
    pub fn record_served_serial(
        &self,
        origin: &str,
        served: u32,
        files: u32,
    ) -> Result<(), HistoryError> {
        self.record_zone_state(SERVED_SERIALS, origin, format!("{served} {files}"))
    }

    fn zone_state_path(&self, kind: &str, origin: &str) -> PathBuf {
        self.root()
            .join(HISTORY_DIR)
            .join(kind)
            .join(origin.to_ascii_lowercase())
    }

    fn zone_state<T: std::str::FromStr>(&self, kind: &str, origin: &str) -> Option<T> {
        fs::read_to_string(self.zone_state_path(kind, origin))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn record_zone_state(
        &self,
        kind: &str,
        origin: &str,
        value: impl std::fmt::Display,
    ) -> Result<(), HistoryError> {
        let path = self.zone_state_path(kind, origin);
        let dir = durable::parent_of(&path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(&dir)
            .map_err(durable::io(&dir))?;
        let temp = durable::prepare_beside(&path, format!("{value}\n").as_bytes(), true)?;
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

    #[test]
    fn a_served_serial_is_read_back_apart_from_refreshes() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.served_serial("example.test."), None);
        ws.record_served_serial("example.test.", 7, 5).unwrap();
        assert_eq!(ws.served_serial("EXAMPLE.test."), Some((7, 5)));
        assert_eq!(ws.replica_refreshed("example.test."), None);
    }
}
