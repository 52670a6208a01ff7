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

use crate::server::SharedSnapshot;
use crate::snapshot::Snapshot;
use crate::zone_load;

/// Reloads `root` into `state` on every SIGHUP delivered to `hup`, until the
/// signal stream ends.
pub async fn run(root: PathBuf, state: SharedSnapshot, mut hup: Signal) {
    while hup.recv().await.is_some() {
        let dir = root.clone();
        let built = tokio::task::spawn_blocking(move || {
            zone_load::load(&dir).map(|ws| {
                let records = ws.record_count();
                (Snapshot::build(&ws), records)
            })
        })
        .await;
        match built {
            Ok(Ok((snapshot, records))) => {
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
