//! Health checks of services' addresses, and what they change.
//!
//! Checks run in tasks of their own, never on the answer path: one per
//! distinct target (address and check), however many services share it,
//! each first fired at a random point of its interval so that they do not
//! fire together. An address starts up (as Route 53's do), so that no
//! answer waits for a first check and a reload or restart changes no
//! answer by itself; it goes down after `fall` failures in a row and comes
//! back after `rise` passes in a row, which keeps a flapping address out.
//! A target no service names any more stops being checked at the reload
//! that removes it.
//!
//! What a state means for a service is [`in_use`]: the addresses it
//! serves. That is zone content, so a change of state is a change of the
//! zone, under a new serial that secondaries follow (`Reloader::
//! serve_health`); weights and regions only order the answers dnsd gives
//! (`answer::steer`).

pub mod check;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use cutover_workspace::{HealthCheck, Service, Workspace};
use hickory_proto::rr::RecordType;

use crate::snapshot::Snapshot;
use crate::zone::LoadedWorkspace;
use crate::zone::name_key::NameKey;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What the zones are built with: whether an address passes its check.
pub trait View: Sync {
    fn is_up(&self, address: IpAddr, check: &HealthCheck) -> bool;
}

/// Every address up: before any check ran, and where health does not
/// matter (checking a staged change).
pub struct AllUp;

impl View for AllUp {
    fn is_up(&self, _: IpAddr, _: &HealthCheck) -> bool {
        true
    }
}

/// The addresses a service serves now, and with what TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    pub addresses: Vec<IpAddr>,
    pub ttl: u32,
    /// How many of its addresses fail their check.
    pub down: usize,
}

/// The addresses `service` serves under `view`: its primaries that are up;
/// if none is, its backups that are up; if none is either, every address
/// (fail open: an answer that may work beats none, as gdnsd and Route 53
/// have it). While any address is down the TTL is `degraded_ttl`, when set,
/// so that resolvers come back soon for the recovery.
pub fn in_use(service: &Service, view: &dyn View) -> InUse {
    let up = |address: IpAddr| {
        service
            .health
            .as_ref()
            .is_none_or(|h| view.is_up(address, h))
    };
    let pick = |backup: bool| -> Vec<IpAddr> {
        service
            .members
            .iter()
            .filter(|m| m.backup == backup && up(m.address))
            .map(|m| m.address)
            .collect()
    };
    let mut addresses = pick(false);
    if addresses.is_empty() {
        addresses = pick(true);
    }
    if addresses.is_empty() {
        addresses = service.addresses.clone();
    }
    let down = service.members.iter().filter(|m| !up(m.address)).count();
    let ttl = match service.health.as_ref().and_then(|h| h.degraded_ttl) {
        Some(degraded) if down > 0 => degraded.min(service.ttl),
        _ => service.ttl,
    };
    InUse {
        addresses,
        ttl,
        down,
    }
}

/// A zone that health checks changed is served under a serial its files do
/// not have (`Reloader::serve_health` records it, with the files' serial
/// then, in the workspace). A load must never take it back, or secondaries
/// would keep what they took. Per such zone, with `S` the newest serial
/// served (recorded, or by `previous`) and `F` the files' serial now:
/// - `F` past `S`: the files moved on; served as they say;
/// - a reload (`previous` given) with `F` as recorded: the same zone as
///   served (the health states carry over), under `S` again;
/// - else (a restart, whose addresses all start up again; or files changed
///   without passing `S`): one past `S`, recorded.
pub fn keep_serials_rising(
    ws: &mut LoadedWorkspace,
    live: &Workspace,
    previous: Option<&Snapshot>,
) {
    for zone in &mut ws.zones {
        let origin = zone.origin.to_ascii();
        let Some((recorded, files_then)) = live.served_serial(&origin) else {
            continue;
        };
        let before = previous
            .zip(NameKey::new(&zone.origin))
            .and_then(|(p, key)| p.served(key.as_bytes()).and_then(|(z, _)| z.serial()));
        let served = match before {
            Some(b) if crate::zone::serial_newer(b, recorded) => b,
            _ => recorded,
        };
        let Some(files) = zone
            .records
            .iter()
            .find(|r| RecordType::from(r.record.rtype) == RecordType::SOA)
            .and_then(|r| zonefile::soa_numbers(&r.record.rdata))
            .map(|[serial, ..]| serial)
        else {
            continue;
        };
        if crate::zone::serial_newer(files, served) {
            continue;
        }
        if previous.is_some() && files == files_then {
            crate::zone::raise_serial(&mut zone.records, served);
            continue;
        }
        let raised = served.wrapping_add(1);
        crate::zone::raise_serial(&mut zone.records, raised);
        if let Err(e) = live.record_served_serial(&origin, raised, files) {
            warn!(zone = origin, "recording the served serial: {e}");
        }
    }
}

/// One address under one check: the unit that is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: IpAddr,
    /// The service's check, with `degraded_ttl` cleared: that is about
    /// answers, not checking, and must not split one target in two.
    pub check: HealthCheck,
}

impl Target {
    pub fn new(address: IpAddr, check: &HealthCheck) -> Self {
        Self {
            address,
            check: HealthCheck {
                degraded_ttl: None,
                ..check.clone()
            },
        }
    }

    /// The targets of `service`.
    pub fn of(service: &Service) -> Vec<Target> {
        let Some(check) = &service.health else {
            return Vec::new();
        };
        service
            .addresses
            .iter()
            .map(|&a| Target::new(a, check))
            .collect()
    }
}

/// A target's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub up: bool,
    /// Results in a row that disagree with `up`: at `fall` (or `rise`) the
    /// state changes.
    pub streak: u32,
    /// The latest check: when it ended, and why it failed if it did.
    pub last: Option<(SystemTime, Result<(), String>)>,
    /// Checks run since the target was first named.
    pub checks: u64,
}

impl State {
    fn new() -> Self {
        Self {
            up: true,
            streak: 0,
            last: None,
            checks: 0,
        }
    }

    /// Takes one result; returns whether the state changed.
    fn record(&mut self, result: Result<(), String>, check: &HealthCheck) -> bool {
        let passed = result.is_ok();
        self.checks += 1;
        self.last = Some((SystemTime::now(), result));
        if passed == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { check.fall } else { check.rise };
        if self.streak < needed {
            return false;
        }
        self.up = passed;
        self.streak = 0;
        true
    }
}

/// The checks of every target, their states, and the channel their changes
/// go out on.
#[derive(Clone)]
pub struct Monitor {
    states: Arc<RwLock<HashMap<Target, State>>>,
    tasks: Arc<Mutex<HashMap<Target, JoinHandle<()>>>>,
    changes: mpsc::UnboundedSender<Target>,
}

impl View for Monitor {
    fn is_up(&self, address: IpAddr, check: &HealthCheck) -> bool {
        let target = Target::new(address, check);
        self.states
            .read()
            .map_or(true, |s| s.get(&target).is_none_or(|s| s.up))
    }
}

impl Monitor {
    /// A monitor with nothing to check yet, and the receiving end of the
    /// targets whose state changes.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Target>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let monitor = Self {
            states: Arc::default(),
            tasks: Arc::default(),
            changes,
        };
        (monitor, receiver)
    }

    /// Checks exactly the targets of `services` from now on: new ones start
    /// (up, first checked within one interval), gone ones stop at once and
    /// are forgotten, the others carry on with their state.
    pub fn reconcile(&self, services: &[Service]) {
        let wanted: std::collections::HashSet<Target> =
            services.iter().flat_map(Target::of).collect();
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        tasks.retain(|target, task| {
            let keep = wanted.contains(target);
            if !keep {
                task.abort();
                info!(address = %target.address, port = target.check.port, "no service names it any more: no longer checked");
            }
            keep
        });
        if let Ok(mut states) = self.states.write() {
            states.retain(|target, _| wanted.contains(target));
            for target in &wanted {
                states.entry(target.clone()).or_insert_with(State::new);
            }
        }
        for target in wanted {
            if tasks.contains_key(&target) {
                continue;
            }
            let task = tokio::spawn(self.clone().watch(target.clone()));
            tasks.insert(target, task);
        }
    }

    /// Every target and its state, for the API.
    pub fn states(&self) -> HashMap<Target, State> {
        self.states.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The state of `address` under `check`, if it is checked.
    pub fn state(&self, address: IpAddr, check: &HealthCheck) -> Option<State> {
        let target = Target::new(address, check);
        self.states.read().ok()?.get(&target).cloned()
    }

    /// Checks `target` every interval, forever (the task is aborted when
    /// the target goes).
    async fn watch(self, target: Target) {
        let interval = target.check.interval;
        tokio::time::sleep(jitter(&target, interval)).await;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = check::run(target.address, &target.check).await;
            let changed = {
                let Ok(mut states) = self.states.write() else {
                    return;
                };
                let Some(state) = states.get_mut(&target) else {
                    // Forgotten by a reconcile that is about to abort us.
                    return;
                };
                let why = result.as_ref().err().cloned();
                let changed = state.record(result, &target.check);
                if changed {
                    let (address, port) = (target.address, target.check.port);
                    if state.up {
                        info!(%address, port, "health check passes again: the address is back in the answers");
                    } else {
                        warn!(%address, port, why = why.unwrap_or_default(), "health check fails: the address leaves the answers");
                    }
                }
                changed
            };
            if changed && self.changes.send(target.clone()).is_err() {
                return;
            }
        }
    }
}

/// `www.example.test.` with `members`, TTL 60, for tests.
#[cfg(test)]
pub(crate) fn service_of(
    members: Vec<cutover_workspace::Member>,
    health: Option<HealthCheck>,
) -> Service {
    Service {
        name: "www.example.test.".into(),
        addresses: members.iter().map(|m| m.address).collect(),
        ttl: 60,
        line: 1,
        serial: None,
        members,
        health,
    }
}

/// A delay in [0, interval) that differs from target to target and from
/// run to run, so that checks spread over their interval.
fn jitter(target: &Target, interval: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
    let mut h = foldhash::fast::RandomState::default().build_hasher();
    target.hash(&mut h);
    SystemTime::now().hash(&mut h);
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h.finish() % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_workspace::{CheckKind, Member};

    fn check(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise,
            fall,
            degraded_ttl: Some(10),
        }
    }

    #[test]
    fn an_address_goes_after_fall_failures_and_comes_back_after_rise_passes() {
        let c = check(2, 3);
        let mut s = State::new();
        let fail = || Err("refused".to_string());
        assert!(!s.record(fail(), &c) && !s.record(fail(), &c));
        // A pass in between starts the count again: a flapping address
        // never reaches `fall`, nor, once out, `rise`.
        assert!(!s.record(Ok(()), &c));
        assert!(!s.record(fail(), &c) && !s.record(fail(), &c));
        assert!(s.record(fail(), &c) && !s.up);
        assert!(!s.record(Ok(()), &c) && !s.up);
        assert!(!s.record(fail(), &c));
        assert!(!s.record(Ok(()), &c));
        assert!(s.record(Ok(()), &c) && s.up);
        assert_eq!(s.checks, 10);
    }

    struct Down(Vec<IpAddr>);
    impl View for Down {
        fn is_up(&self, address: IpAddr, _: &HealthCheck) -> bool {
            !self.0.contains(&address)
        }
    }

    fn service() -> Service {
        let member = |a: &str, backup: bool| Member {
            address: a.parse().unwrap(),
            weight: 1,
            region: None,
            backup,
        };
        let members = vec![
            member("198.18.0.3", false),
            member("198.18.0.4", false),
            member("198.18.0.5", true),
        ];
        service_of(members, Some(check(2, 3)))
    }

    #[test]
    fn primaries_then_backups_then_everything() {
        let s = service();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let all_up = in_use(&s, &AllUp);
        assert_eq!(all_up.addresses, [ip("198.18.0.3"), ip("198.18.0.4")]);
        assert_eq!((all_up.ttl, all_up.down), (60, 0));

        let one_down = in_use(&s, &Down(vec![ip("198.18.0.3")]));
        assert_eq!(one_down.addresses, [ip("198.18.0.4")]);
        assert_eq!((one_down.ttl, one_down.down), (10, 1));

        let primaries_down = in_use(&s, &Down(vec![ip("198.18.0.3"), ip("198.18.0.4")]));
        assert_eq!(primaries_down.addresses, [ip("198.18.0.5")]);

        let all_down = in_use(&s, &Down(s.addresses.clone()));
        assert_eq!(all_down.addresses, s.addresses, "fail open");
        assert_eq!(all_down.down, 3);

        let mut unchecked = s.clone();
        unchecked.health = None;
        assert_eq!(
            in_use(&unchecked, &Down(s.addresses.clone())).addresses,
            [ip("198.18.0.3"), ip("198.18.0.4")],
            "without a check every address counts as up; backups wait"
        );
    }
}
