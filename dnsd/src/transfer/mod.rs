//! Serving past one machine: zone transfers to the secondaries (and to the
//! readers `[transfer]` allows), and the NOTIFYs that tell secondaries a
//! zone changed; and dnsd as a secondary itself (`replica`, with `fetch`
//! asking its primaries). Who is who comes from `dnsd.toml` (`[[secondary]]`,
//! `[transfer]`), read as it stands now for every request, as the TSIG keys
//! are for updates.

pub mod fetch;
pub mod notify;
pub mod out;
pub mod replica;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use cutover_workspace::{DnsdConfig, Workspace};

use crate::change::keys::Keys;
use crate::clock::unix_now;

/// What the TCP server needs to answer transfer requests, and what the
/// secondaries have been told and have taken.
pub struct Transfers {
    config: Keys,
    /// Where the zones' journals are: IXFR sends their differences.
    workspace: Workspace,
    /// By zone (fully qualified, lower case) and the secondary's address.
    seen: Mutex<HashMap<(String, IpAddr), Seen>>,
    /// The zones dnsd keeps copies of (`[[replica]]`).
    pub replicas: replica::Replicas,
}

/// What one secondary has done with one zone since dnsd started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The serial of the last NOTIFY it acknowledged, and when (Unix s).
    pub acknowledged: Option<(u32, u64)>,
    /// The serial it last transferred, how (AXFR, IXFR, or the whole
    /// zone for an IXFR), and when.
    pub transferred: Option<(u32, &'static str, u64)>,
}

impl Transfers {
    pub fn new(workspace: Workspace) -> Self {
        Self {
            config: Keys::new(workspace.clone()),
            workspace,
            seen: Mutex::new(HashMap::new()),
            replicas: replica::Replicas::default(),
        }
    }

    /// What the secondary at `ip` has done with zone `origin`.
    pub fn seen(&self, origin: &str, ip: IpAddr) -> Seen {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(origin.to_string(), ip))
            .copied()
            .unwrap_or_default()
    }

    fn update(&self, origin: &str, ip: IpAddr, change: impl FnOnce(&mut Seen)) {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        change(seen.entry((origin.to_string(), ip)).or_default());
    }

    /// The secondary at `ip` acknowledged a NOTIFY of `serial`.
    pub fn acknowledged(&self, origin: &str, ip: IpAddr, serial: u32) {
        self.update(origin, ip, |s| s.acknowledged = Some((serial, unix_now())));
    }

    /// The client at `ip` transferred `serial` of `origin`, by `kind`.
    pub fn transferred(&self, origin: &str, ip: IpAddr, serial: u32, kind: &'static str) {
        self.update(origin, ip, |s| {
            s.transferred = Some((serial, kind, unix_now()));
        });
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// dnsd.toml as it stands now; `None` while it does not load (every
    /// transfer is then refused). Blocking I/O: a `stat` per file.
    pub fn config(&self) -> Option<Arc<DnsdConfig>> {
        self.config.current().ok()
    }
}
