//! Serving past one machine: zone transfers to the secondaries (and to the
//! readers `[transfer]` allows), and the NOTIFYs that tell secondaries a
//! zone changed. Who is who comes from `dnsd.toml` (`[[secondary]]`,
//! `[transfer]`), read as it stands now for every request, as the TSIG keys
//! are for updates.

pub mod notify;
pub mod out;

use std::sync::Arc;

use cutover_workspace::{DnsdConfig, Workspace};

use crate::change::keys::Keys;

/// What the TCP server needs to answer transfer requests.
pub struct Transfers {
    config: Keys,
    /// Where the zones' journals are: IXFR sends their differences.
    workspace: Workspace,
}

impl Transfers {
    pub fn new(workspace: Workspace) -> Self {
        Self {
            config: Keys::new(workspace.clone()),
            workspace,
        }
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
