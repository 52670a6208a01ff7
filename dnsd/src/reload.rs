//! Reload: the whole workspace is read, checked and indexed on a blocking
//! thread, off the query path, and the new snapshot replaces the old one in
//! a single atomic swap. A query holds one snapshot from start to finish, so
//! it sees the old data or the new, never a mix. A broken workspace is
//! logged file by file and line by line, and the previous snapshot keeps
//! serving. SIGHUP and the control API share this one path. The workspace
//! is read settled (`Workspace::settled`): never half a commit, and an
//! interrupted commit is finished, or its generation read from its copy,
//! before anything is read.
//!
//! Memory: a reload holds the old snapshot and the new one side by side,
//! and no more (the loaded records move into the new index, see
//! `Snapshot::from_workspace`). The new one is built, from the files read
//! to the finished index, in the snapshot arena the old one is not in
//! (`memory::SnapshotArenas`). The old one is then freed on a blocking
//! thread once the queries still reading it are done, never by a query,
//! and its pages are handed back to the system (`memory::release`) before
//! the next reload may start, so that the resident size after any number
//! of reloads is the size after the first load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use cutover_workspace::{ConfigErrors, ServerConfig, Service, Settled, Settlement, Workspace};

use crate::answer::steer::Steers;
use crate::change::Serve;
use crate::change::service::served_at;
use crate::health::{self, Monitor};
use crate::memory::{self, SnapshotArenas};
use crate::snapshot::SharedSnapshot;
use crate::snapshot::{Snapshot, Source};
use crate::zone;
use crate::zone::journal::Replayed;
use crate::zone::name_key::NameKey;
use cutover_workspace::Stamps;
use hickory_proto::rr::{Name, Record, RecordType};

/// Rebuilds the served snapshot from the workspace; one per process (its
/// clones share everything).
#[derive(Clone)]
pub struct Reloader {
    root: PathBuf,
    state: SharedSnapshot,
    /// The `[server]` section the sockets were opened with: sockets are not
    /// reopened on reload, so a change there is reported as needing a
    /// restart.
    sockets: ServerConfig,
    /// The listen addresses came from `--listen`, not from dnsd.toml.
    listen_from_cli: bool,
    /// Where snapshots are built: the one served was built in the other.
    arenas: Arc<SnapshotArenas>,
    /// One reload at a time, so that two reloads finishing out of order can
    /// never leave the older workspace serving; held until the replaced
    /// snapshot is freed, so that a reload never builds beside two.
    running: Arc<tokio::sync::Mutex<()>>,
    /// dnsd.toml as it stood when it was last read or written by dnsd:
    /// while it stands so, the served services are its services.
    config: Arc<Mutex<Stamps>>,
    /// The health checks: what the zones are built with, and what
    /// `serve_health` serves.
    health: Monitor,
}

impl Reloader {
    pub fn new(
        root: PathBuf,
        state: SharedSnapshot,
        sockets: ServerConfig,
        listen_from_cli: bool,
        arenas: SnapshotArenas,
        config: Stamps,
        health: Monitor,
    ) -> Self {
        Self {
            root,
            state,
            sockets,
            listen_from_cli,
            arenas: Arc::new(arenas),
            running: Arc::new(tokio::sync::Mutex::new(())),
            config: Arc::new(Mutex::new(config)),
            health,
        }
    }

    pub fn health(&self) -> &Monitor {
        &self.health
    }

    /// dnsd.toml's services changed and were served by name
    /// (`serve_change`): their weights and regions (`Snapshot::steers`) and
    /// the addresses to check follow it too.
    pub async fn services_changed(&self) -> Result<(), String> {
        // Under `running`, read and applied together, so that a reload in
        // between cannot leave this older view over its newer zones.
        let _one_at_a_time = self.running.lock().await;
        let config = self.read_config().await?;
        let current = self.state.load_full();
        let steers = Arc::new(Steers::new(
            &config.services,
            &config.regions,
            current.steers.tally(),
        ));
        self.state.store(Arc::new(current.with_steers(steers)));
        self.health.reconcile(&config.services);
        Ok(())
    }

    /// dnsd.toml as it is now, read off the async threads.
    async fn read_config(&self) -> Result<cutover_workspace::DnsdConfig, String> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            Workspace::open(&root)
                .map_err(|e| e.to_string())?
                .load_dnsd()
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Serves the addresses the health-checked services have in use now
    /// (`health::in_use`): each service whose served addresses differ is
    /// replaced at its name, its zone's serial one up, so that secondaries
    /// follow; all of them in one new snapshot. When the files were edited
    /// since they were read, a reload serves them together with the health
    /// state instead.
    pub async fn serve_health(&self) -> Result<(), String> {
        if !self.as_served(None) {
            return self.reload().await;
        }
        let config = self.read_config().await?;
        let _one_at_a_time = self.running.lock().await;
        let mut next = self.state.load_full();
        let mut changed = false;
        for service in config.services.iter().filter(|s| s.health.is_some()) {
            match self.health_change(&next, service) {
                Some(snapshot) => {
                    next = Arc::new(snapshot);
                    changed = true;
                }
                None => continue,
            }
        }
        if changed {
            // Each zone changed: its origin, the serial before and after.
            let before = self.state.load_full();
            let zones: Vec<(String, Option<u32>, u32)> = next
                .zones()
                .filter_map(|(key, zone)| {
                    let was = current_serial(&before, key);
                    let now = zone.serial()?;
                    (was != Some(now)).then(|| (zone.origin.to_ascii(), was, now))
                })
                .collect();
            self.state.store(next);
            let root = self.root.clone();
            // So that no reload or restart serves an older serial than the
            // secondaries took (`health::keep_serials_rising`).
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(ws) = Workspace::open(&root) else {
                    return;
                };
                for (origin, was, now) in zones {
                    // The files' serial: as recorded at the first change,
                    // else the one served before it.
                    let Some(files) = ws.served_serial(&origin).map(|(_, f)| f).or(was) else {
                        continue;
                    };
                    if let Err(e) = ws.record_served_serial(&origin, now, files) {
                        warn!(zone = origin, "recording the served serial: {e}");
                    }
                }
            })
            .await;
        }
        Ok(())
    }

    /// `serving` with `service` serving the addresses it has in use, under
    /// its zone's next serial; `None` when that is what it serves already
    /// (or it cannot be served by name).
    fn health_change(&self, serving: &Snapshot, service: &Service) -> Option<Snapshot> {
        let name = Name::from_ascii(&service.name).ok()?;
        let key = NameKey::new(&name)?;
        let crate::snapshot::ZoneLookup::Serving(zone) =
            serving.find_zone(key.as_bytes(), RecordType::A)
        else {
            return None;
        };
        let next_serial = zone.serial()?.wrapping_add(1);
        let raised = Service {
            serial: Some(next_serial),
            ..service.clone()
        };
        let (origin, names) = served_at(serving, &raised, &self.health).ok()??;
        let addresses = |records: &[Record]| {
            let mut a: Vec<(String, u32)> = records
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                .map(|r| (r.data.to_string(), r.ttl))
                .collect();
            a.sort();
            a
        };
        let wanted = addresses(&names.first()?.1);
        if wanted == addresses(&zone.records_at(key.as_bytes())) {
            return None;
        }
        let apex = NameKey::new(&Name::from_ascii(&origin).ok()?)?;
        let (zone, source) = serving.served(apex.as_bytes())?;
        let zone = zone.with_names(names)?;
        info!(
            service = %service.name,
            serial = next_serial,
            in_use = %wanted.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>().join(", "),
            "health changed what the service serves"
        );
        Some(serving.with_zone(apex.as_bytes(), Arc::new(zone), source.clone()))
    }

    /// The stamp of `root`'s dnsd.toml now, to take before reading it.
    pub fn config_stamp(root: &Path) -> Stamps {
        Stamps::of(&[root.join(cutover_workspace::DNSD_FILE)])
    }

    /// Whether the workspace is as dnsd serves it: dnsd.toml as dnsd last
    /// read or wrote it, and every served zone's files as they were read
    /// (but zone `except`'s, whose change says how they stand). While it
    /// is, a change can be checked and served at the names it touches;
    /// else what was edited by hand is served too, by a reload.
    pub fn as_served(&self, except: Option<&[u8]>) -> bool {
        self.config.lock().is_ok_and(|s| s.unchanged())
            && self.state.load().sources().all(|(apex, source)| {
                except.is_some_and(|e| e == apex) || source.stamps.unchanged()
            })
    }

    /// dnsd wrote dnsd.toml, and serves what it wrote.
    pub fn config_written(&self) {
        if let Ok(mut s) = self.config.lock() {
            *s = Self::config_stamp(&self.root);
        }
    }

    /// What is served now.
    pub fn serving(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Zone `origin`'s file was rewritten from its journal (`change::sync`)
    /// and holds generation `at`: the served zone is the same, its source is
    /// now that file, so that the next change knows the file is dnsd's.
    pub async fn file_rewritten(&self, origin: &str, stamps: Stamps, at: u64) {
        let _one_at_a_time = self.running.lock().await;
        let Some(key) = Name::from_ascii(origin)
            .ok()
            .as_ref()
            .and_then(NameKey::new)
        else {
            return;
        };
        let current = self.state.load_full();
        let Some((zone, source)) = current.served(key.as_bytes()) else {
            return;
        };
        let source = Source {
            stamps,
            replayed: Replayed {
                synced: Some(at),
                at: source.replayed.at.max(Some(at)),
            },
        };
        let next = current.with_zone(key.as_bytes(), Arc::clone(zone), source);
        self.state.store(Arc::new(next));
    }

    /// Serves a change just recorded as generation `generation` of zone
    /// `origin`: at the names it replaced only, when the change names them
    /// and the zone can take it that way (`Zone::with_names`), in a new
    /// snapshot that shares every other name and zone with this one; else
    /// by a reload. Once this returns `Ok`, queries are answered from it.
    pub async fn serve_change(
        &self,
        origin: &str,
        serve: Serve,
        generation: u64,
    ) -> Result<(), String> {
        if let Some(names) = serve.names
            && let Some(key) = Name::from_ascii(origin)
                .ok()
                .as_ref()
                .and_then(NameKey::new)
            && self.as_served(Some(key.as_bytes()))
        {
            let one_at_a_time = self.running.lock().await;
            let current = self.state.load_full();
            let next = current.served(key.as_bytes()).and_then(|(zone, source)| {
                let zone = zone.with_names(names)?;
                let (stamps, synced) = match serve.adopted {
                    Some((stamps, at)) => (stamps, Some(at)),
                    None => (source.stamps.clone(), source.replayed.synced),
                };
                let source = Source {
                    stamps,
                    replayed: Replayed {
                        synced,
                        at: Some(generation),
                    },
                };
                Some((zone, source))
            });
            if let Some((zone, source)) = next {
                // Changes pile up beside the index until a reload folds
                // them in: once they are many, one does, off this path.
                let fold = zone.changed_names() > FOLD_AT.max(zone.names_read() / 8);
                let snapshot = current.with_zone(key.as_bytes(), Arc::new(zone), source);
                self.state.store(Arc::new(snapshot));
                drop(one_at_a_time);
                debug!(zone = origin, generation, "served a change by name");
                if fold {
                    let me = self.clone();
                    tokio::spawn(async move { me.reload().await });
                }
                return Ok(());
            }
        }
        self.reload().await
    }

    /// The number of zones being served now.
    pub fn serving_zones(&self) -> usize {
        self.state.load().zone_count()
    }

    /// Reloads the workspace; once this returns `Ok`, queries are answered
    /// from it. On `Err` (every problem, one per line) the previous snapshot
    /// keeps serving.
    pub async fn reload(&self) -> Result<(), String> {
        let one_at_a_time = Arc::clone(&self.running).lock_owned().await;
        let dir = self.root.clone();
        // A zone whose file does not load keeps this snapshot's version.
        let previous = self.state.load_full();
        let arenas = Arc::clone(&self.arenas);
        let config = Self::config_stamp(&self.root);
        let health = self.health.clone();
        let built = tokio::task::spawn_blocking(move || {
            let (loaded, arena) = arenas.build(|| -> Result<_, ConfigErrors> {
                let live = Workspace::open(&dir)?;
                let settled = settled(&live);
                let loaded = zone::load_settled_seen(&live, &settled, &health);
                // Read: writers may go on while the snapshot is built.
                drop(settled);
                loaded.map(|mut ws| {
                    for w in ws.warnings() {
                        warn!("{w}");
                    }
                    report_broken(&ws);
                    health::keep_serials_rising(&mut ws, &live, Some(&previous));
                    let records = ws.record_count();
                    let server = ws.config.server.clone();
                    let services = ws.config.services.clone();
                    (
                        Snapshot::from_workspace(ws, Some(&previous)),
                        records,
                        server,
                        services,
                    )
                })
            });
            loaded.map(|(snapshot, records, server, services)| {
                (snapshot, records, server, services, arena)
            })
        })
        .await;
        match built {
            Ok(Ok((snapshot, records, server, services, arena))) => {
                let listen_changed = !self.listen_from_cli && server.listen != self.sockets.listen;
                if listen_changed
                    || server.udp_sockets != self.sockets.udp_sockets
                    || server.cpu_affinity != self.sockets.cpu_affinity
                    || server.tcp_connections != self.sockets.tcp_connections
                {
                    warn!(
                        "server.listen, server.udp_sockets, server.cpu_affinity and \
                         server.tcp_connections take effect on restart; the zones and \
                         max_answers are reloaded"
                    );
                }
                let zones = snapshot.zone_count();
                let unavailable = snapshot.unavailable_count();
                let old = self.state.swap(Arc::new(snapshot));
                if let Ok(mut s) = self.config.lock() {
                    *s = config;
                }
                self.arenas.serve(arena);
                self.health.reconcile(&services);
                info!(zones, unavailable, records, workspace = %self.root.display(), "reloaded");
                crate::metrics::reload(true);
                tokio::task::spawn_blocking(move || {
                    retire(old);
                    drop(one_at_a_time);
                });
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
                crate::metrics::reload(false);
                Err(errors.to_string())
            }
            Err(e) => {
                error!(%e, "reload task failed: the previous zones keep being served");
                crate::metrics::reload(false);
                Err(format!("reload task failed: {e}"))
            }
        }
    }
}

/// The serial the snapshot serves zone `key` under.
fn current_serial(snapshot: &Snapshot, key: &[u8]) -> Option<u32> {
    snapshot.served(key).and_then(|(zone, _)| zone.serial())
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

/// Names changed beside a zone's index that a reload folds in, at least
/// (an eighth of the zone's names, if more).
const FOLD_AT: usize = 1024;

/// How long a replaced snapshot waits for the queries still reading it
/// (each holds it for microseconds) before the last of them is left to free
/// it.
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// Frees a snapshot that has just been replaced, once no query reads it any
/// more, and gives its pages back to the system. Freeing a large zone takes
/// tens of milliseconds, so it is done here, on a blocking thread, and not
/// by whichever query happened to drop the last reference.
fn retire(mut old: Arc<Snapshot>) {
    let started = Instant::now();
    loop {
        match Arc::try_unwrap(old) {
            Ok(snapshot) => {
                drop(snapshot);
                break;
            }
            Err(still_read) if started.elapsed() < RETIRE_WAIT => {
                old = still_read;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => {
                warn!(
                    "a query still holds the replaced snapshot after {RETIRE_WAIT:?}: it frees it"
                );
                break;
            }
        }
    }
    memory::release();
    debug!(
        ms = started.elapsed().as_millis(),
        "freed the replaced snapshot"
    );
}

/// Logs every zone that did not load, each problem with its file and line:
/// those zones keep their previous version, or get SERVFAIL, until fixed.
pub fn report_broken(ws: &zone::LoadedWorkspace) {
    for zone in ws.broken.iter().filter(|z| z.withheld) {
        for e in &zone.errors {
            warn!(zone = %zone.origin, "{}", e.message);
        }
    }
    for zone in ws.faulty() {
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
