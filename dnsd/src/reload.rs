//! Reload on SIGHUP: the whole workspace is read, checked and indexed on a
//! blocking thread, off the query path, and the new snapshot replaces the
//! old one in a single atomic swap. A query holds one snapshot from start to
//! finish, so it sees the old data or the new, never a mix. A broken
//! workspace is logged file by file and line by line, and the previous
//! snapshot keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::Signal;
use tracing::{error, info, warn};

use cutover_workspace::ServerConfig;

use crate::server::SharedSnapshot;
use crate::snapshot::Snapshot;
use crate::zone_load;

/// Reloads `root` into `state` on every SIGHUP delivered to `hup`, until the
/// signal stream ends. `sockets` is the `[server]` section the sockets were
/// opened with (`listen_from_cli`: its addresses were replaced by
/// `--listen`): sockets are not reopened on reload, so a change there is
/// reported as needing a restart.
pub async fn run(
    root: PathBuf,
    state: SharedSnapshot,
    mut hup: Signal,
    sockets: ServerConfig,
    listen_from_cli: bool,
) {
    while hup.recv().await.is_some() {
        let dir = root.clone();
        let built = tokio::task::spawn_blocking(move || {
            zone_load::load(&dir).map(|ws| {
                let records = ws.record_count();
                let server = ws.config.server.clone();
                (Snapshot::build(&ws), records, server)
            })
        })
        .await;
        match built {
            Ok(Ok((snapshot, records, server))) => {
                let listen_changed = !listen_from_cli && server.listen != sockets.listen;
                if listen_changed || server.udp_sockets != sockets.udp_sockets {
                    warn!(
                        "server.listen and server.udp_sockets take effect on restart; \
                         the zones and max_answers are reloaded"
                    );
                }
                let zones = snapshot.zone_count();
                let old = state.swap(Arc::new(snapshot));
                // The last reference to a big snapshot may be freed here,
                // on the reloader, rather than by a query.
                drop(old);
                info!(zones, records, workspace = %root.display(), "reloaded");
            }
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    error!("{e}");
                }
                warn!(
                    workspace = %root.display(),
                    problems = errors.0.len(),
                    "reload refused: the previous zones keep being served"
                );
            }
            Err(e) => error!(%e, "reload task failed: the previous zones keep being served"),
        }
    }
}
