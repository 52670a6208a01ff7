//! The config workspace: one directory that both daemons read.
//!
//! ```text
//! WORKSPACE/
//!   redirector.toml      rules OLD_IP:PORT -> NEW_IP:PORT, NAT port range, timeouts
//!   dnsd.toml            listen addresses, answer limits, shorthand services,
//!                        the control API, TSIG keys for dynamic updates
//!   zones/<origin>.zone  RFC 1035 zone files, one per served zone
//!   zones/**             anything they `$INCLUDE` (e.g. zones/inc/common.inc);
//!                        versioned with the zones, never served on its own
//! ```
//!
//! This crate owns the format: it reads the files, validates them and hands
//! out plain, already-checked values. It never touches sockets, maps or
//! signals; the daemons turn what it returns into their own snapshots.

mod dnsd;
mod durable;
mod error;
mod fault;
mod file_stamp;
mod history;
mod journal;
mod pidfile;
mod problems;
mod redirector;
mod rule_list;
mod token;
mod toml_file;
mod zone_state;
mod zones;

use std::path::{Path, PathBuf};

pub use dnsd::{
    Allow, ApiConfig, CheckKind, DEFAULT_API_LISTEN, DNS_PORT, DnsdConfig, HMAC_SHA256,
    HealthCheck, HistoryConfig, MAX_WEIGHT, Member, Network, Regions, Replica, Secondary,
    ServerConfig, Service, TransferConfig, TsigKey,
};
pub use error::{ConfigError, ConfigErrors, line_col};
pub use file_stamp::{Stamp, Stamps, stamp};
pub use history::{
    FileChange, Files, Generation, HISTORY_DIR, HistoryError, PreparedSync, Settled, Settlement,
    ZoneSource,
};
pub use journal::{Changeset, Entries, Journal, headed, reheaded, synced_at, without_header};
pub use pidfile::{PidFile, runs_program};
pub use redirector::{
    Endpoint, FULL_SHARE, MAX_PORT_RETRIES, NatConfig, Protocol, RedirectorConfig, Rule, Timeouts,
    describe,
};
pub use rule_list::{RuleFields, RuleList, RuleListError};
pub use token::token_matches;
pub use zones::{ZoneFile, ZonePathError};

/// Reads `source` as the `dnsd.toml` at `path` (which errors name), as
/// `Workspace::load_dnsd` reads the file.
pub fn parse_dnsd(path: &Path, source: &str) -> Result<DnsdConfig, ConfigErrors> {
    dnsd::parse(path, source)
}

/// Reads `source` as the `redirector.toml` at `path`, as
/// `Workspace::load_redirector` reads the file.
pub fn parse_redirector(path: &Path, source: &str) -> Result<RedirectorConfig, ConfigErrors> {
    redirector::parse(path, source)
}

/// File names inside a workspace, in one place.
pub const REDIRECTOR_FILE: &str = "redirector.toml";
pub const DNSD_FILE: &str = "dnsd.toml";
pub const ZONES_DIR: &str = "zones";
pub const ZONE_SUFFIX: &str = ".zone";

/// A workspace directory. Cheap to create; every `load_*` reads the files
/// afresh, so a reload is simply another call.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Opens the workspace at `root`, which must be a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(ConfigError::file(
                &root,
                "not a directory: a workspace is the directory that holds redirector.toml, \
                 dnsd.toml and zones/",
            ));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn redirector_path(&self) -> PathBuf {
        self.root.join(REDIRECTOR_FILE)
    }

    pub fn dnsd_path(&self) -> PathBuf {
        self.root.join(DNSD_FILE)
    }

    pub fn zones_dir(&self) -> PathBuf {
        self.root.join(ZONES_DIR)
    }

    /// Reads and validates `redirector.toml`. A missing file means "no
    /// rules": an old host with nothing to redirect is a valid state.
    pub fn load_redirector(&self) -> Result<RedirectorConfig, ConfigErrors> {
        let path = self.redirector_path();
        match toml_file::read_optional(&path)? {
            Some(source) => redirector::parse(&path, &source),
            None => Ok(RedirectorConfig::default()),
        }
    }

    /// Reads and validates `dnsd.toml`. A missing file means the defaults.
    pub fn load_dnsd(&self) -> Result<DnsdConfig, ConfigErrors> {
        let path = self.dnsd_path();
        match toml_file::read_optional(&path)? {
            Some(source) => dnsd::parse(&path, &source),
            None => Ok(DnsdConfig::default()),
        }
    }

    /// The zone files of the workspace, sorted by origin: the
    /// `<origin>.zone` files directly in `zones/`. Other files under
    /// `zones/` are what zones include (see `managed_zone_path`). Their
    /// content is parsed by dnsd, which owns the DNS data model.
    pub fn zone_files(&self) -> Result<Vec<ZoneFile>, ConfigError> {
        zones::list(&self.zones_dir())
    }
}
