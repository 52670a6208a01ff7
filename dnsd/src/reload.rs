//! Reload: the whole workspace is read, checked and indexed on a blocking
//! thread, off the query path, and the new snapshot replaces the old one in
//! a single atomic swap. A query holds one snapshot from start to finish, so
//! it sees the old data or the new, never a mix. A broken workspace is
//! logged file by file and line by line, and the previous snapshot keeps
//! serving. SIGHUP and the control API share this one path. The workspace
//! is read settled (`Workspace::settled`): never half a commit, and an
//! interrupted commit is finished, or its generation read from its copy,
//! before anything is read.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, info, warn};

use cutover_workspace::{ServerConfig, Settled, Settlement, Workspace};

use crate::snapshot::SharedSnapshot;
use crate::snapshot::Snapshot;
use crate::zone;

/// Rebuilds the served snapshot from the workspace; one per process.
pub struct Reloader {
    root: PathBuf,
    state: SharedSnapshot,
    /// The `[server]` section the sockets were opened with: sockets are not
    /// reopened on reload, so a change there is reported as needing a
    /// restart.
    sockets: ServerConfig,
    /// The listen addresses came from `--listen`, not from dnsd.toml.
    listen_from_cli: bool,
    /// One reload at a time, so that two reloads finishing out of order can
    /// never leave the older workspace serving.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        root: PathBuf,
        state: SharedSnapshot,
        sockets: ServerConfig,
        listen_from_cli: bool,
    ) -> Self {
        Self {
            root,
            state,
            sockets,
            listen_from_cli,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The number of zones being served now.
    pub fn serving_zones(&self) -> usize {
        self.state.load().zone_count()
    }

    /// Reloads the workspace; once this returns `Ok`, queries are answered
    /// from it. On `Err` (every problem, one per line) the previous snapshot
    /// keeps serving.
    pub async fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.running.lock().await;
        let dir = self.root.clone();
        // A zone whose file does not load keeps this snapshot's version.
        let previous = self.state.load_full();
        let built = tokio::task::spawn_blocking(move || {
            let settled = Workspace::open(&dir).map(|ws| settled(&ws))?;
            let loaded = zone::load(settled.root());
            // Read: writers may go on while the snapshot is built.
            drop(settled);
            loaded.map(|ws| {
                for w in ws.warnings() {
                    warn!("{w}");
                }
                report_broken(&ws);
                let records = ws.record_count();
                let server = ws.config.server.clone();
                (Snapshot::build(&ws, Some(&previous)), records, server)
            })
        })
        .await;
        match built {
            Ok(Ok((snapshot, records, server))) => {
                let listen_changed = !self.listen_from_cli && server.listen != self.sockets.listen;
                if listen_changed
                    || server.udp_sockets != self.sockets.udp_sockets
                    || server.cpu_affinity != self.sockets.cpu_affinity
                {
                    warn!(
                        "server.listen, server.udp_sockets and server.cpu_affinity take \
                         effect on restart; the zones and max_answers are reloaded"
                    );
                }
                let zones = snapshot.zone_count();
                let unavailable = snapshot.unavailable_count();
                let old = self.state.swap(Arc::new(snapshot));
                // The last reference to a big snapshot may be freed here,
                // on the reloader, rather than by a query.
                drop(old);
                info!(zones, unavailable, records, workspace = %self.root.display(), "reloaded");
                Ok(())
            }
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    error!("{e}");
                }
                warn!(
                    workspace = %self.root.display(),
                    problems = errors.0.len(),
                    "reload refused: the previous zones keep being served"
                );
                Err(errors.to_string())
            }
            Err(e) => {
                error!(%e, "reload task failed: the previous zones keep being served");
                Err(format!("reload task failed: {e}"))
            }
        }
    }
}

/// The workspace to read, settled (see the module doc), with what
/// settling it did logged.
pub fn settled(ws: &Workspace) -> Settled {
    let settled = ws.settled();
    match settled.settlement() {
        Settlement::Live => {}
        Settlement::Finished(_) => {
            info!(workspace = %ws.root().display(), "{}", settled.settlement())
        }
        _ => warn!(workspace = %ws.root().display(), "{}", settled.settlement()),
    }
    settled
}

/// Logs every zone that did not load, each problem with its file and line:
/// those zones keep their previous version, or get SERVFAIL, until fixed.
pub fn report_broken(ws: &zone::LoadedWorkspace) {
    for zone in &ws.broken {
        for e in &zone.errors {
            error!("{e}");
        }
        warn!(
            zone = %zone.origin,
            file = %zone.file.display(),
            problems = zone.errors.len(),
            "zone not loaded: its previous version keeps being served, or SERVFAIL if it has none"
        );
    }
}
