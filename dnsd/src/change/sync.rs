//! The zones' journals turned back into files: a zone file rewritten from
//! its journal (after `[history] zonefile_sync`, off the path of the
//! changes), a journal compacted past `[history] journal_max_bytes`, and a
//! zone rebuilt as it was at any generation still held, for a rollback.
//! Each reads the zone as a reload would; none changes what is served.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_workspace::{ConfigErrors, FileChange, Workspace, ZoneFile};
use hickory_proto::rr::{Name, RData, Record};

use tokio::sync::OwnedMutexGuard;
use tracing::{debug, info, warn};

use crate::change::update::serial_newer;
use crate::change::zone_edit::{self, ChangeLock};
use crate::reload::Reloader;
use crate::zone;
use crate::zone::journal::JournalView;
use cutover_workspace::Stamps;

/// Who writes a zone file from the journal, in its first comment.
const WRITER: &str = "dnsd, from its journal";

/// What rewriting a zone file did.
#[derive(Debug)]
pub struct Synced {
    /// The generation the file holds now.
    pub at: u64,
    /// The file as written.
    pub stamps: Stamps,
}

/// Rewrites zone `origin`'s file from its journal if the journal holds
/// changes the file does not. The zone is read and the new file written
/// under a temporary name without any lock; `changes` (the change lock) is
/// taken only to rename it into place — unless the file was written
/// meanwhile, by hand: then nothing is — and is handed back held, for the
/// caller to tell the served snapshot before any change reads it. `None`:
/// nothing to do (a file written by hand, or already up to date).
/// Blocking I/O.
pub fn zone(
    ws: &Workspace,
    origin: &str,
    changes: &ChangeLock,
) -> Result<Option<(Synced, OwnedMutexGuard<()>)>, String> {
    let zf = zone_file(ws, origin)?;
    let loaded = zone::load_zone(ws, &zf, &JournalView::all(ws.clone()))
        .map_err(|e| ConfigErrors(e).to_string())?;
    let (Some(synced), Some(at)) = (loaded.replayed.synced, loaded.replayed.at) else {
        return Ok(None);
    };
    if at == synced {
        return Ok(None);
    }
    let body = zone_edit::render(&loaded.origin, &loaded.hickory_records(), WRITER)?;
    let read_from = loaded.stamps.clone();
    drop(loaded);
    let prepared = ws
        .prepare_sync(origin, body.as_bytes(), at)
        .map_err(|e| e.to_string())?;
    drop(body);
    let held = Arc::clone(changes).blocking_lock_owned();
    let installed = ws
        .install_sync(prepared, || read_from.unchanged())
        .map_err(|e| e.to_string())?;
    if !installed {
        return Ok(None);
    }
    let synced = Synced {
        at,
        stamps: Stamps::of(std::slice::from_ref(&zf.path)),
    };
    Ok(Some((synced, held)))
}

/// Compacts zone `origin`'s journal if it is larger than `max_bytes`;
/// returns how many changesets went.
pub fn compact_if_large(ws: &Workspace, origin: &str, max_bytes: u64) -> Result<usize, String> {
    if ws.journal(origin).size() <= max_bytes {
        return Ok(0);
    }
    compact(ws, origin, max_bytes)
}

/// Compacts zone `origin`'s journal to about half of `max_bytes`: the zone
/// at the generation where the newer changesets fit is written as its
/// checkpoint, and the changesets up to it are dropped. Returns how many.
fn compact(ws: &Workspace, origin: &str, max_bytes: u64) -> Result<usize, String> {
    let entries = ws.journal(origin).read().map_err(|e| e.to_string())?;
    let sizes: Vec<u64> = entries
        .changes
        .iter()
        .map(|c| serde_json::to_vec(c).map_or(0, |b| b.len() as u64 + 12))
        .collect();
    // The oldest changeset that may stay: the newer ones fit in half.
    let mut kept = 0u64;
    let mut first_kept = sizes.len();
    while first_kept > 0 && kept + sizes[first_kept - 1] <= max_bytes / 2 {
        first_kept -= 1;
        kept += sizes[first_kept];
    }
    let Some(through) = first_kept
        .checked_sub(1)
        .map(|i| entries.changes[i].generation)
    else {
        return Ok(0);
    };
    let records = at_generation(ws, origin, through)?;
    let origin_name = Name::from_ascii(origin).map_err(|e| format!("{origin}: {e}"))?;
    let body = zone_edit::render(&origin_name, &records, WRITER)?;
    let base = cutover_workspace::headed(through, body.as_bytes());
    ws.compact_journal(origin, &base, through)
        .map_err(|e| e.to_string())
}

/// The records of zone `origin` (its file's, without the services) as
/// they were at generation `n`, rebuilt from the newest file that holds
/// the zone then and the changesets after it.
pub fn at_generation(ws: &Workspace, origin: &str, n: u64) -> Result<Vec<Record>, String> {
    let source = ws
        .zone_source(origin, n)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "zone {origin} at generation {n} is no longer held (its journal was compacted \
                 past it, or the zone did not exist then)"
            )
        })?;
    // A generation's copy includes from its own zones/; a checkpoint
    // includes nothing.
    let includes = source
        .path
        .parent()
        .filter(|d| d.ends_with("zones"))
        .and_then(Path::parent)
        .and_then(|root| Workspace::open(root).ok())
        .unwrap_or_else(|| ws.clone());
    let zf = ZoneFile {
        origin: origin.to_string(),
        path: source.path.clone(),
    };
    let view = JournalView {
        live: ws.clone(),
        upto: Some(n),
    };
    zone::load_zone_from(&includes, &zf, Some(source.from), &view)
        .map(|z| z.hickory_records())
        .map_err(|e| ConfigErrors(e).to_string())
}

/// The files that restore generation `n` of the workspace exactly: those
/// of the newest generation of whole files at or before it, each zone
/// rewritten as it was at `n` (changesets replayed) with a sync header that
/// lets no older changeset replay onto it. Exactly but for one field: a
/// zone whose SOA serial then is not newer than the one `served` now gets
/// the served serial plus one, so that secondaries and caches take the
/// restored data as the change it is (RFC 1982).
pub fn restore(
    ws: &Workspace,
    n: u64,
    served: impl Fn(&str) -> Option<u32>,
) -> Result<Vec<FileChange>, String> {
    ws.generation(n).map_err(|e| e.to_string())?;
    let whole = ws
        .generations()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|g| g.number)
        .rfind(|g| *g <= n && ws.has_copy(*g))
        .ok_or_else(|| format!("no generation holds the workspace's files at {n}"))?;
    let mut files = ws.generation_files(whole).map_err(|e| e.to_string())?;
    let newest = ws.newest_number().map_err(|e| e.to_string())?;
    let copy = Workspace::open(ws.generation_root(whole)).map_err(|e| e.to_string())?;
    for zf in copy.zone_files().map_err(|e| e.to_string())? {
        let rel =
            Path::new(cutover_workspace::ZONES_DIR).join(zf.path.file_name().unwrap_or_default());
        let Some(held) = files.get_mut(&rel) else {
            continue;
        };
        let from = cutover_workspace::synced_at(held).unwrap_or(whole);
        let replays = ws
            .journal(&zf.origin)
            .between(from, Some(n))
            .map_err(|e| e.to_string())?;
        let now = served(&zf.origin);
        if replays.is_empty() && ws.compacted_through(&zf.origin).is_none_or(|c| from >= c) {
            // The copy holds the zone at n as written: keep its bytes (a
            // header is renewed, so that no later changeset replays), but
            // for the serial.
            let synced = cutover_workspace::synced_at(held).is_some();
            let serial = now.map(|now| (now, zonefile::soa_serial_span(held)));
            if let Some((now, Some((span, then)))) = &serial
                && !serial_newer(*then, *now)
            {
                held.splice(span.clone(), now.wrapping_add(1).to_string().into_bytes());
            }
            if synced {
                *held = cutover_workspace::reheaded(newest, held);
            }
            // A serial written elsewhere (an included file) is given by a
            // rewrite of the whole zone.
            if !matches!(serial, Some((_, None))) {
                continue;
            }
        }
        let mut records = at_generation(ws, &zf.origin, n)?;
        if let Some(now) = now
            && zone_edit::serial(&records).is_some_and(|s| !serial_newer(s, now))
        {
            for r in &mut records {
                if let RData::SOA(soa) = &mut r.data {
                    soa.serial = now.wrapping_add(1);
                }
            }
        }
        let origin = Name::from_ascii(&zf.origin).map_err(|e| format!("{}: {e}", zf.origin))?;
        let body = zone_edit::render(&origin, &records, &format!("dnsd, rollback to {n}"))?;
        files.insert(rel, cutover_workspace::headed(newest, body.as_bytes()));
    }
    ws.changes_to(&files).map_err(|e| e.to_string())
}

fn zone_file(ws: &Workspace, origin: &str) -> Result<ZoneFile, String> {
    ws.zone_files()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|f| f.origin.eq_ignore_ascii_case(origin))
        .ok_or_else(|| format!("no zone {origin}"))
}

/// Rewrites zone files from the journal in the background: `[history]
/// zonefile_sync` seconds after a change (the changes meanwhile are
/// written together), holding the change lock, and tells the served
/// snapshot that the zone's file changed, so that the next change still
/// goes to the journal.
pub struct Syncer {
    ws: Workspace,
    reloader: Arc<Reloader>,
    changes: ChangeLock,
    /// Zones with a rewrite scheduled.
    pending: Mutex<HashSet<String>>,
}

impl Syncer {
    pub fn new(ws: Workspace, reloader: Arc<Reloader>, changes: ChangeLock) -> Arc<Self> {
        Arc::new(Self {
            ws,
            reloader,
            changes,
            pending: Mutex::new(HashSet::new()),
        })
    }

    /// Zone `origin` changed through the journal: schedules its rewrite,
    /// unless one is scheduled already.
    pub fn changed(self: &Arc<Self>, origin: &str) {
        let origin = origin.to_ascii_lowercase();
        let fresh = self
            .pending
            .lock()
            .map(|mut p| p.insert(origin.clone()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let history = me.ws.load_dnsd().map(|c| c.history).unwrap_or_default();
            tokio::time::sleep(Duration::from_secs(history.zonefile_sync)).await;
            if let Ok(mut p) = me.pending.lock() {
                p.remove(&origin);
            }
            let (ws, o, changes) = (me.ws.clone(), origin.clone(), me.changes.clone());
            let done = tokio::task::spawn_blocking(move || zone(&ws, &o, &changes)).await;
            match done {
                Ok(Ok(Some((synced, one_change)))) => {
                    me.reloader
                        .file_rewritten(&origin, synced.stamps, synced.at)
                        .await;
                    drop(one_change);
                    debug!(zone = %origin, generation = synced.at, "zone file written from the journal");
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    warn!(zone = %origin, "the zone file was not written from the journal (the journal keeps the changes): {e}")
                }
                Err(e) => warn!(zone = %origin, "the zone file task failed: {e}"),
            }
            let (ws, o) = (me.ws.clone(), origin.clone());
            let max = history.journal_max_bytes;
            match tokio::task::spawn_blocking(move || compact_if_large(&ws, &o, max)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(dropped)) => info!(zone = %origin, dropped, "journal compacted"),
                Ok(Err(e)) => warn!(zone = %origin, "the journal was not compacted: {e}"),
                Err(e) => warn!(zone = %origin, "the compaction task failed: {e}"),
            }
        });
    }
}
