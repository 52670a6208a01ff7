//! Which replica zones (`[[replica]]`) are served: one whose copy has not
//! yet been transferred, or has expired — no refresh from its primary for
//! longer than its SOA's expire (RFC 1035 §3.3.13) — is withheld, and its
//! queries get SERVFAIL as BIND's and NSD's do, rather than answers that
//! may be stale beyond what the zone's owner allows.

use std::path::Path;

use cutover_workspace::{ConfigError, Replica, Workspace};
use hickory_proto::rr::Name;

use super::{BrokenZone, LoadedZone};

/// Moves the replica zones of `replicas` that must not be served from
/// `zones` to `broken`, withheld, at Unix time `now`. `live` keeps when
/// each was refreshed; `zones_dir` names a copy not yet transferred.
pub fn withhold(
    live: &Workspace,
    zones_dir: &Path,
    replicas: &[Replica],
    zones: &mut Vec<LoadedZone>,
    broken: &mut Vec<BrokenZone>,
    now: u64,
) {
    for replica in replicas {
        let is_it = |origin: &Name| origin.to_ascii().eq_ignore_ascii_case(&replica.zone);
        let why = match zones.iter().position(|z| is_it(&z.origin)) {
            Some(at) => match expired(live, &zones[at], now) {
                Some(since) => {
                    let zone = zones.remove(at);
                    broken.retain(|b| !is_it(&b.origin));
                    let message = format!(
                        "replica of {}: expired, not refreshed since {since} (Unix time) and the \
                         SOA's expire is {} s; SERVFAIL until a transfer succeeds",
                        replica.primary,
                        zone.expire().unwrap_or(0)
                    );
                    Some((zone.file, message))
                }
                None => None,
            },
            // A copy that does not load stays broken (its previous version
            // serves): the next transfer replaces it.
            None if broken.iter().any(|b| is_it(&b.origin)) => None,
            None => Some((
                zones_dir.join(format!("{}zone", replica.zone)),
                format!(
                    "replica of {}: not transferred yet; SERVFAIL until it is",
                    replica.primary
                ),
            )),
        };
        if let Some((file, message)) = why {
            let origin = Name::from_ascii(&replica.zone).unwrap_or_else(|_| Name::root());
            broken.push(BrokenZone {
                origin,
                errors: vec![ConfigError::file(&file, message)],
                file,
                withheld: true,
            });
        }
    }
}

/// When `zone`, a replica, was last refreshed, if that is longer ago than
/// its expire. A copy without a record of its refresh (one put in place by
/// hand) counts from its file's modification.
fn expired(live: &Workspace, zone: &LoadedZone, now: u64) -> Option<u64> {
    let origin = zone.origin.to_ascii();
    let refreshed = live.replica_refreshed(&origin).or_else(|| {
        let modified = std::fs::metadata(&zone.file).ok()?.modified().ok()?;
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    })?;
    let expire = u64::from(zone.expire()?);
    (now > refreshed.saturating_add(expire)).then_some(refreshed)
}
