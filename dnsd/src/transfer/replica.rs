//! dnsd as a secondary (`[[replica]]`): each replica zone is kept a copy
//! of its primary's.
//!
//! One task per replica zone asks the primary for the zone's SOA serial —
//! at start, when the primary sends NOTIFY (accepted only from its address,
//! and signed when the replica has a key), and every SOA refresh interval
//! (every retry interval after a failure) — and when the serial is newer,
//! transfers the zone: by IXFR from the serial served, applied as a change
//! through the zone's journal like any other (`change::zone`); by AXFR the
//! first time, when IXFR is not given, or when the copy has diverged,
//! written as the zone's whole file (one generation) and reloaded. Each
//! success is recorded (`Workspace::record_replica_refresh`): a copy not
//! refreshed for longer than its SOA's expire is withheld (SERVFAIL, see
//! `zone::replicas`) until a transfer succeeds again, across restarts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use cutover_workspace::{Replica, Workspace, ZoneFile};
use hickory_proto::rr::{Name, Record};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::Transfers;
use super::fetch::{self, Primary, Transferred};
use crate::change::sync::Syncer;
use crate::change::zone_edit::{self, ChangeLock};
use crate::change::{self, ChangeError, Edited};
use crate::clock::unix_now;
use crate::reload::Reloader;
use crate::zone::name_key::NameKey;
use crate::zone::records;

/// How often the replica list of dnsd.toml is looked at.
const LOOK: Duration = Duration::from_secs(1);
/// The wait after a failure before the zone's SOA gives a retry interval.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Refresh and retry intervals are kept between these: an SOA of refresh
/// 0 must not make a busy loop, one of a month must not keep a replica
/// from noticing a primary that lost its NOTIFYs.
const MIN_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The replica zones' tasks and what they report.
#[derive(Default)]
pub struct Replicas {
    /// By zone (fully qualified, lower case): what wakes its task.
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    status: Mutex<HashMap<String, Status>>,
}

/// What a replica zone's task last did, for the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The last refresh that reached the primary (Unix s).
    pub refreshed: Option<u64>,
    /// The last transfer: serial, how (AXFR, IXFR), when.
    pub transferred: Option<(u32, &'static str, u64)>,
    /// The last failure and when; cleared by a success.
    pub failed: Option<(String, u64)>,
}

/// Whether a NOTIFY is taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Notified {
    /// From the zone's primary (signed if it must be): the zone is
    /// refreshed now.
    Taken,
    /// Not a replica zone, or not from its primary: REFUSED.
    NotOurs,
    /// From the primary but not signed by the replica's key: NOTAUTH.
    Unsigned,
}

impl Replicas {
    /// A NOTIFY for `origin` from `ip`, signed (verified) with `key`.
    pub fn notified(
        &self,
        replicas: &[Replica],
        origin: &str,
        ip: IpAddr,
        key: Option<&str>,
    ) -> Notified {
        let Some(replica) = replicas.iter().find(|r| r.zone == origin) else {
            return Notified::NotOurs;
        };
        if !replica.from_primary(ip) {
            return Notified::NotOurs;
        }
        if replica.tsig_key.as_deref().is_some_and(|k| key != Some(k)) {
            return Notified::Unsigned;
        }
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wake) = wake.get(origin) {
            wake.notify_one();
        }
        Notified::Taken
    }

    /// What the task of replica zone `origin` last did.
    pub fn status(&self, origin: &str) -> Status {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.get(origin).cloned().unwrap_or_default()
    }

    fn report(&self, origin: &str, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        change(status.entry(origin.to_string()).or_default());
    }
}

/// What a replica zone's task works with.
#[derive(Clone)]
pub struct Keeper {
    pub transfers: Arc<Transfers>,
    pub reloader: Arc<Reloader>,
    pub changes: ChangeLock,
    pub syncer: Arc<Syncer>,
    /// dnsd's listening address: requests to primaries go out from it.
    pub from: IpAddr,
}

/// Runs until the process ends: one task per `[[replica]]` of dnsd.toml
/// as it stands, restarted when its entry changes, stopped when removed.
pub async fn run(keeper: Keeper) {
    let mut tasks: HashMap<String, (Replica, JoinHandle<()>)> = HashMap::new();
    loop {
        let transfers = Arc::clone(&keeper.transfers);
        let config = tokio::task::spawn_blocking(move || transfers.config())
            .await
            .ok()
            .flatten();
        if let Some(config) = config {
            tasks.retain(|zone, (replica, task)| {
                let keep = config
                    .replicas
                    .iter()
                    .any(|r| r.zone == *zone && same_entry(r, replica));
                if !keep {
                    task.abort();
                }
                keep
            });
            for replica in &config.replicas {
                if tasks.contains_key(&replica.zone) {
                    continue;
                }
                let key = replica.tsig_key.as_deref().and_then(|k| {
                    let key = config.tsig_key(k)?;
                    Some((Name::from_ascii(&key.name).ok()?, key.secret.clone()))
                });
                let primary = Primary {
                    addr: replica.primary,
                    key,
                    from: keeper.from,
                };
                let wake = Arc::new(Notify::new());
                keeper
                    .transfers
                    .replicas
                    .wake
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(replica.zone.clone(), Arc::clone(&wake));
                let task = tokio::spawn(keep(keeper.clone(), replica.zone.clone(), primary, wake));
                tasks.insert(replica.zone.clone(), (replica.clone(), task));
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

/// The same entry but for its line.
fn same_entry(a: &Replica, b: &Replica) -> bool {
    (&a.zone, a.primary, &a.tsig_key) == (&b.zone, b.primary, &b.tsig_key)
}

/// The served zone's SOA serial and its refresh, retry and expire, if it
/// is served.
struct Served {
    serial: u32,
    refresh: Duration,
    retry: Duration,
    expire: u64,
}

fn served(reloader: &Reloader, origin: &Name) -> Option<Served> {
    let key = NameKey::new(origin)?;
    let snapshot = reloader.serving();
    let (zone, _) = snapshot.served(key.as_bytes())?;
    let [serial, refresh, retry, expire, _] =
        zonefile::soa_numbers(zone.soa()?.rdatas.iter().next()?)?;
    let seconds = |s: u32| Duration::from_secs(u64::from(s)).clamp(MIN_WAIT, MAX_WAIT);
    Some(Served {
        serial,
        refresh: seconds(refresh),
        retry: seconds(retry),
        expire: u64::from(expire),
    })
}

/// Keeps zone `zone` a copy of `primary`'s, as the module doc says.
async fn keep(keeper: Keeper, zone: String, primary: Primary, wake: Arc<Notify>) {
    let Ok(origin) = Name::from_ascii(&zone) else {
        return;
    };
    let ws = keeper.transfers.workspace().clone();
    let mut failures: u32 = 0;
    loop {
        let now_served = served(&keeper.reloader, &origin);
        let wait = match refresh(&keeper, &ws, &zone, &origin, &primary, now_served.as_ref()).await
        {
            Ok(()) => {
                failures = 0;
                keeper.transfers.replicas.report(&zone, |s| {
                    s.refreshed = Some(unix_now());
                    s.failed = None;
                });
                served(&keeper.reloader, &origin).map_or(FIRST_RETRY, |s| s.refresh)
            }
            Err(e) => {
                failures += 1;
                // Once a failure, then every tenth: a primary that is down
                // for a day does not fill the log.
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(zone, primary = %primary.addr, failures, "replica not refreshed: {e:#}");
                }
                keeper
                    .transfers
                    .replicas
                    .report(&zone, |s| s.failed = Some((format!("{e:#}"), unix_now())));
                // A copy past its expire is withheld by a reload
                // (`zone::replicas`), once this refresh failed too.
                if let Some(s) = &now_served
                    && ws
                        .replica_refreshed(&zone)
                        .is_some_and(|r| r.saturating_add(s.expire) < unix_now())
                {
                    warn!(zone, primary = %primary.addr, "replica expired: SERVFAIL until a transfer succeeds");
                    let _ = keeper.reloader.reload().await;
                }
                now_served.as_ref().map_or(FIRST_RETRY, |s| s.retry)
            }
        };
        // The copy's expiry, if it comes before the next refresh.
        let until_expiry = now_served.as_ref().and_then(|s| {
            let refreshed = ws.replica_refreshed(&zone)?;
            let at = refreshed.saturating_add(s.expire);
            Some(Duration::from_secs(at.saturating_sub(unix_now()) + 1))
        });
        let wait = until_expiry.map_or(wait, |e| e.min(wait));
        tokio::select! {
            _ = wake.notified() => debug!(zone, "NOTIFY from the primary"),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One refresh: the primary's serial, and a transfer if it is newer.
async fn refresh(
    keeper: &Keeper,
    ws: &Workspace,
    zone: &str,
    origin: &Name,
    primary: &Primary,
    now_served: Option<&Served>,
) -> Result<()> {
    let serial = fetch::soa_serial(primary, origin).await?;
    let have = now_served.map(|s| s.serial);
    if let Some(have) = have
        && !change::update::serial_newer(serial, have)
    {
        debug!(zone, serial, "replica up to date");
        return recorded(ws, zone).await;
    }
    let transferred = fetch::transfer(primary, origin, have).await?;
    match transferred {
        Transferred::UpToDate(_) => {}
        Transferred::Whole { serial, records } => {
            whole(keeper, zone, origin, primary, serial, records).await?;
        }
        Transferred::Incremental {
            serial,
            soa,
            removed,
            added,
        } => {
            let (r, a) = (removed.len(), added.len());
            match incremental(keeper, zone, origin, primary, serial, soa, removed, added).await? {
                true => info!(
                    zone,
                    serial,
                    removed = r,
                    added = a,
                    "replica transferred by IXFR"
                ),
                false => {
                    warn!(
                        zone,
                        serial,
                        "the IXFR does not apply to the copy served: transferring the whole zone"
                    );
                    let again = fetch::transfer(primary, origin, None).await?;
                    let Transferred::Whole { serial, records } = again else {
                        return Err(anyhow!("the primary answered AXFR with no zone"));
                    };
                    whole(keeper, zone, origin, primary, serial, records).await?;
                }
            }
        }
    }
    recorded(ws, zone).await
}

/// Records a refresh that reached the primary.
async fn recorded(ws: &Workspace, zone: &str) -> Result<()> {
    let (ws, zone) = (ws.clone(), zone.to_string());
    tokio::task::spawn_blocking(move || ws.record_replica_refresh(&zone, unix_now()))
        .await?
        .map_err(|e| anyhow!("recording the refresh: {e}"))
}

/// Writes the zone transferred whole as its file, one generation, and
/// serves it.
async fn whole(
    keeper: &Keeper,
    zone: &str,
    origin: &Name,
    primary: &Primary,
    serial: u32,
    records: Vec<zonefile::Record>,
) -> Result<()> {
    if !records
        .iter()
        .all(|r| r.owner.is_at_or_below(&zone_name(origin)))
    {
        return Err(anyhow!("the primary sent records outside {zone}"));
    }
    let count = records.len();
    let one_change = keeper.changes.lock().await;
    let ws = keeper.transfers.workspace().clone();
    let (z, p) = (zone.to_string(), primary.addr);
    let generation = tokio::task::spawn_blocking(move || {
        let header = format!("written by dnsd: replica of {p}, serial {serial} by AXFR");
        let body = zonefile::write_zone(&header, &records);
        drop(records);
        let newest = ws.newest_number().map_err(|e| anyhow!("{e}"))?;
        let text = cutover_workspace::headed(newest, body.as_bytes());
        let file = ZoneFile {
            origin: z.clone(),
            path: ws.zones_dir().join(format!("{z}zone")),
        };
        let message = format!("replica {z}: serial {serial} from {p} by AXFR");
        let generation = zone_edit::commit(&ws, &file, text, &message)
            .map_err(|e| anyhow!("the transferred zone is not taken: {e}"))?;
        // Recorded before the reload, so that the copy is not taken for
        // expired.
        ws.record_replica_refresh(&z, unix_now())
            .map_err(|e| anyhow!("recording the refresh: {e}"))?;
        Ok::<_, anyhow::Error>(generation)
    })
    .await??;
    keeper
        .reloader
        .reload()
        .await
        .map_err(|e| anyhow!("serving the transferred zone: {e}"))?;
    drop(one_change);
    keeper
        .transfers
        .replicas
        .report(zone, |s| s.transferred = Some((serial, "AXFR", unix_now())));
    info!(
        zone,
        serial,
        records = count,
        generation = generation.number,
        "replica transferred by AXFR"
    );
    Ok(())
}

/// Why an IXFR does not apply.
struct Diverged;

/// Applies an IXFR's difference through the zone's journal (or its whole
/// file, `change::zone` decides) and serves it. `false`: the copy does
/// not hold what the difference removes.
#[allow(clippy::too_many_arguments)]
async fn incremental(
    keeper: &Keeper,
    zone: &str,
    origin: &Name,
    primary: &Primary,
    serial: u32,
    soa: zonefile::Record,
    removed: Vec<zonefile::Record>,
    added: Vec<zonefile::Record>,
) -> Result<bool> {
    let apex = zone_name(origin);
    if !removed
        .iter()
        .chain(&added)
        .all(|r| r.owner.is_at_or_below(&apex))
    {
        return Err(anyhow!("the primary sent records outside {zone}"));
    }
    let to_hickory =
        |r: &[zonefile::Record]| -> Vec<Record> { r.iter().map(records::to_hickory).collect() };
    let (removed, added, soa) = (
        to_hickory(&removed),
        to_hickory(&added),
        records::to_hickory(&soa),
    );
    let mut names: Vec<Name> = removed
        .iter()
        .chain(&added)
        .map(|r| r.name.clone())
        .collect();
    names.sort();
    names.dedup();
    let one_change = keeper.changes.lock().await;
    let ws = keeper.transfers.workspace().clone();
    let serving = keeper.reloader.serving();
    let (z, p) = (zone.to_string(), primary.addr);
    let changed = tokio::task::spawn_blocking(move || {
        let author = format!("dnsd: replica of {p}");
        change::zone(&ws, &serving, &z, &names, &author, |view| {
            let without_ttl = |r: &Record| {
                let mut r = r.clone();
                r.ttl = 0;
                zone_edit::record_line(&r)
            };
            for gone in &removed {
                let line = without_ttl(gone);
                let at = view
                    .file
                    .iter()
                    .position(|r| without_ttl(r) == line)
                    .ok_or(Diverged)?;
                view.file.swap_remove(at);
            }
            view.file.retain(|r| {
                r.record_type() != hickory_proto::rr::RecordType::SOA || r.name != soa.name
            });
            view.file.push(soa.clone());
            view.file.extend(added.iter().cloned());
            Ok(Edited {
                message: format!("replica {z}: serial {serial} from {p} by IXFR"),
                soa_set: true,
            })
        })
    })
    .await?;
    let change = match changed {
        Ok(Some(change)) => change,
        Ok(None) => return Ok(true),
        Err(ChangeError::Refused(Diverged)) => return Ok(false),
        Err(ChangeError::Commit(e)) => {
            return Err(anyhow!("the primary's change is not taken: {e}"));
        }
        Err(ChangeError::NoSuchZone(_)) => return Ok(false),
        Err(ChangeError::LiveBroken(why) | ChangeError::Failed(why)) => return Err(anyhow!(why)),
    };
    let generation = change.generation.number;
    keeper
        .reloader
        .serve_change(zone, change.serve, generation)
        .await
        .map_err(|e| anyhow!("serving the transferred change: {e}"))?;
    drop(one_change);
    keeper.syncer.changed(zone);
    keeper
        .transfers
        .replicas
        .report(zone, |s| s.transferred = Some((serial, "IXFR", unix_now())));
    Ok(true)
}

fn zone_name(origin: &Name) -> zonefile::Name {
    zonefile::Name::parse(origin.to_ascii().as_bytes(), &zonefile::Name::root())
        .unwrap_or_else(|_| zonefile::Name::root())
}
