//! Weighted and regional answers for services whose addresses say so
//! (`{ address = ..., weight = 3, region = "eu" }`).
//!
//! Which addresses a service serves is zone content (`health::in_use`:
//! healthy primaries, else backups, else all), the same on every server;
//! this only chooses, per answer, among the records the zone holds:
//! - of the client's region, when any record is tied to it: those and the
//!   records tied to no region; else all (a client of no region, or of a
//!   region with no address in use, gets every region's);
//! - the first record by weight: over every run of `sum of weights`
//!   answers each record leads exactly `weight` times, spread out rather
//!   than bunched (the positions are walked with a stride coprime to the
//!   sum); weight 0 leads only when no record of weight above 0 is left,
//!   as with Route 53;
//! - the others after it in zone order, wrapping, up to `max_answers`.
//!
//! The region comes from the EDNS Client Subnet option when the query has
//! one (deciding only with networks no longer than its source prefix),
//! else from the source address; the answer's scope prefix
//! (`Regions::decide`) is the deciding network's prefix, lengthened until
//! the client's network of that length holds no network of another region
//! (RFC 7871 §7.2.1), and 0 for services without regions, whose answers do
//! not depend on the client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cutover_workspace::{Regions, Service};

use crate::snapshot::encoded::Rdatas;

/// The most records of one RRset steering orders; a larger RRset is
/// rotated as any other.
pub const MAX_STEERED: usize = 64;

/// Where a query comes from, as far as regions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub addr: IpAddr,
    /// The EDNS Client Subnet source prefix, when the address came from
    /// one; `None` for the query's own source address.
    pub ecs_prefix: Option<u8>,
}

/// How many answers each address of each steered service led, since dnsd
/// started: shared by every snapshot's `Steers`, so that reloads and
/// changes keep counting.
#[derive(Debug, Default)]
pub struct Tally {
    led: Mutex<HashMap<(String, IpAddr), Arc<AtomicU64>>>,
}

impl Tally {
    /// The counter of `address` in service `name` (fully qualified, lower
    /// case), made on first use.
    fn counter(&self, name: &str, address: IpAddr) -> Arc<AtomicU64> {
        let Ok(mut led) = self.led.lock() else {
            return Arc::default();
        };
        Arc::clone(led.entry((name.to_string(), address)).or_default())
    }

    /// Answers `address` of service `name` led so far.
    pub fn led(&self, name: &str, address: IpAddr) -> u64 {
        self.led
            .lock()
            .ok()
            .and_then(|led| {
                led.get(&(name.to_string(), address))
                    .map(|c| c.load(Ordering::Relaxed))
            })
            .unwrap_or(0)
    }
}

/// The steered services of a snapshot, by name key, and the regions.
#[derive(Debug, Default)]
pub struct Steers {
    by_name: HashMap<Box<[u8]>, Steering, foldhash::fast::RandomState>,
    regions: Regions,
    tally: Arc<Tally>,
}

impl Steers {
    /// The services of `services` whose answers are chosen here: all but
    /// the plain ones (`Service::is_steered`: weights, regions, backups or
    /// a health check), so that their answers are also counted in `tally`.
    pub fn new(services: &[Service], regions: &Regions, tally: Arc<Tally>) -> Self {
        let mut by_name = HashMap::default();
        for service in services {
            if !service.is_steered() {
                continue;
            }
            let Some(key) = hickory_proto::rr::Name::from_ascii(&service.name)
                .ok()
                .as_ref()
                .and_then(crate::zone::name_key::NameKey::new)
            else {
                continue;
            };
            by_name.insert(Box::from(key.as_bytes()), Steering::new(&tally, service));
        }
        Self {
            by_name,
            regions: regions.clone(),
            tally,
        }
    }

    /// The answers counted so far, shared with the snapshots to come.
    pub fn tally(&self) -> Arc<Tally> {
        Arc::clone(&self.tally)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The steering of the name with key `key`, if its answers are chosen.
    pub fn get(&self, key: &[u8]) -> Option<&Steering> {
        if self.by_name.is_empty() {
            return None;
        }
        self.by_name.get(key)
    }

    /// The order of `rdatas`' records for `client`, and the ECS scope.
    pub fn pick(
        &self,
        steering: &Steering,
        rdatas: &Rdatas,
        client: Option<Client>,
        cap: usize,
    ) -> Picked {
        let (region, scope) = match (client, steering.has_regions) {
            (Some(c), true) => {
                let width = if c.addr.is_ipv4() { 32 } else { 128 };
                self.regions.decide(c.addr, c.ecs_prefix.unwrap_or(width))
            }
            _ => (None, 0),
        };
        steering.pick(rdatas, region, cap, scope)
    }
}

/// One service's weights and regions, by address.
#[derive(Debug)]
pub struct Steering {
    /// Each address's octets, weight and region.
    members: Vec<(Box<[u8]>, u32, Option<String>)>,
    /// The answers each address led, in `members` order.
    led: Vec<Arc<AtomicU64>>,
    has_regions: bool,
    /// The regions its addresses name, in first-seen order.
    regions: Vec<String>,
    /// Answers chosen so far, one sequence per address family and client
    /// region (slot 0: no region of its own), because each chooses among
    /// other records: one shared sequence, read by A and AAAA queries in
    /// turn, would give each only every other position and skew the
    /// shares.
    next: Vec<AtomicU64>,
}

/// Records of an RRset, by index, in the order an answer carries them.
#[derive(Debug, Clone, Copy)]
pub struct Picked {
    order: [u8; MAX_STEERED],
    len: usize,
    /// The ECS scope prefix the answer holds for.
    pub scope: u8,
}

impl Picked {
    pub fn indices(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        self.order[..self.len].iter().map(|&i| usize::from(i))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Steering {
    fn new(tally: &Tally, service: &Service) -> Self {
        let members = service
            .members
            .iter()
            .map(|m| {
                let octets: Box<[u8]> = match m.address {
                    IpAddr::V4(a) => Box::new(a.octets()),
                    IpAddr::V6(a) => Box::new(a.octets()),
                };
                (octets, m.weight, m.region.clone())
            })
            .collect();
        let led = service
            .members
            .iter()
            .map(|m| tally.counter(&service.name, m.address))
            .collect();
        let mut regions: Vec<String> = Vec::new();
        for m in &service.members {
            if let Some(r) = &m.region
                && !regions.contains(r)
            {
                regions.push(r.clone());
            }
        }
        let next = (0..2 * (regions.len() + 1))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self {
            members,
            led,
            has_regions: !regions.is_empty(),
            regions,
            next,
        }
    }

    /// The order of `rdatas`' records for a client of `region` (see the
    /// module doc), at most `cap` (0: no cap).
    fn pick(&self, rdatas: &Rdatas, region: Option<&str>, cap: usize, scope: u8) -> Picked {
        let mut picked = Picked {
            order: [0; MAX_STEERED],
            len: 0,
            scope,
        };
        let n = rdatas.len().min(MAX_STEERED);
        // Each record's weight and whether it may go to this client.
        let mut weights = [0u32; MAX_STEERED];
        let mut tied = [None::<&str>; MAX_STEERED];
        let mut which = [None::<usize>; MAX_STEERED];
        for (i, rdata) in rdatas.iter().take(n).enumerate() {
            which[i] = self
                .members
                .iter()
                .position(|(octets, _, _)| **octets == *rdata);
            let member = which[i].map(|m| &self.members[m]);
            weights[i] = member.map_or(1, |m| m.1);
            tied[i] = member.and_then(|m| m.2.as_deref());
        }
        let regional = region.is_some_and(|r| tied[..n].contains(&Some(r)));
        let eligible = |i: usize| !regional || tied[i].is_none() || tied[i] == region;
        let positive = (0..n).any(|i| eligible(i) && weights[i] > 0);
        let weight = |i: usize| match (eligible(i), positive) {
            (false, _) => 0,
            (true, true) => weights[i],
            (true, false) => 1,
        };
        let total: u64 = (0..n).map(|i| u64::from(weight(i))).sum();
        if total == 0 {
            return picked;
        }
        let family = usize::from(rdatas.iter().next().is_some_and(|r| r.len() != 4));
        let slot = match region {
            Some(r) if regional => self
                .regions
                .iter()
                .position(|x| x == r)
                .map_or(0, |i| i + 1),
            _ => 0,
        };
        let k = self.next[family * (self.regions.len() + 1) + slot].fetch_add(1, Ordering::Relaxed);
        let mut at = k.wrapping_mul(stride(total)) % total;
        let mut first = 0;
        for i in 0..n {
            let w = u64::from(weight(i));
            if at < w {
                first = i;
                break;
            }
            at -= w;
        }
        if let Some(counter) = which[first].and_then(|m| self.led.get(m)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let take = if cap == 0 { n } else { cap.min(n) };
        for step in 0..n {
            let i = (first + step) % n;
            if picked.len == take {
                break;
            }
            // The leader by weight, then every other eligible record that
            // may lead at all.
            if weight(i) > 0 {
                picked.order[picked.len] = i as u8;
                picked.len += 1;
            }
        }
        picked
    }
}

/// A step through `0..total` that visits every position once per round
/// and spreads each record's positions over it: the integer nearest to
/// `total` times the golden ratio's fraction that is coprime to `total`.
fn stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let mut s = ((total as f64) * 0.618_033_988_75).round() as u64;
    s = s.clamp(1, total - 1);
    while gcd(s, total) != 1 {
        s += 1;
        if s >= total {
            s = 1;
        }
    }
    s
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_workspace::Member;

    fn service(members: &[(&str, u32, Option<&str>)]) -> Service {
        let members: Vec<Member> = members
            .iter()
            .map(|(a, w, r)| Member {
                address: a.parse().unwrap(),
                weight: *w,
                region: r.map(str::to_string),
                backup: false,
            })
            .collect();
        crate::health::service_of(members, None)
    }

    fn rdatas(addresses: &[&str]) -> Rdatas {
        let octets: Vec<Vec<u8>> = addresses
            .iter()
            .map(|a| match a.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            })
            .collect();
        Rdatas::new(octets.iter().map(Vec::as_slice)).unwrap()
    }

    #[test]
    fn weights_give_exact_shares_spread_over_each_round() {
        let s = Steering::new(
            &Tally::default(),
            &service(&[
                ("198.18.0.3", 1, None),
                ("198.18.0.4", 3, None),
                ("198.18.0.5", 0, None),
            ]),
        );
        let set = rdatas(&["198.18.0.3", "198.18.0.4", "198.18.0.5"]);
        let firsts: Vec<usize> = (0..400)
            .map(|_| s.pick(&set, None, 1, 0).indices().next().unwrap())
            .collect();
        let count = |i| firsts.iter().filter(|&&f| f == i).count();
        assert_eq!((count(0), count(1), count(2)), (100, 300, 0));
        // Spread: the weight-1 record never leads twice in a row.
        assert!(firsts.windows(2).all(|w| !(w[0] == 0 && w[1] == 0)));
        // Without a cap the others follow, weight 0 left out.
        let all = s.pick(&set, None, 0, 0);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn a_and_aaaa_queries_in_turn_each_keep_their_shares() {
        let s = Steering::new(
            &Tally::default(),
            &service(&[
                ("198.18.0.3", 1, None),
                ("198.18.0.4", 3, None),
                ("2001:2::3", 1, None),
                ("2001:2::4", 3, None),
            ]),
        );
        let v4 = rdatas(&["198.18.0.3", "198.18.0.4"]);
        let v6 = rdatas(&["2001:2::3", "2001:2::4"]);
        let mut led = [0; 2];
        for _ in 0..400 {
            led[s.pick(&v4, None, 1, 0).indices().next().unwrap()] += 1;
            s.pick(&v6, None, 1, 0);
        }
        assert_eq!(led, [100, 300]);
    }

    #[test]
    fn weight_zero_leads_only_when_nothing_else_is_left() {
        let s = Steering::new(
            &Tally::default(),
            &service(&[("198.18.0.3", 5, None), ("198.18.0.5", 0, None)]),
        );
        // The weighted address is down: the zone holds only the other.
        let set = rdatas(&["198.18.0.5"]);
        assert_eq!(s.pick(&set, None, 0, 0).indices().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_region_keeps_its_clients_and_the_rest_get_every_region() {
        let s = Steering::new(
            &Tally::default(),
            &service(&[
                ("198.18.0.3", 1, Some("us")),
                ("198.18.0.4", 1, Some("eu")),
                ("198.18.0.5", 1, None),
            ]),
        );
        let set = rdatas(&["198.18.0.3", "198.18.0.4", "198.18.0.5"]);
        for _ in 0..10 {
            let eu: Vec<usize> = s.pick(&set, Some("eu"), 0, 18).indices().collect();
            let mut sorted = eu.clone();
            sorted.sort();
            assert_eq!(sorted, [1, 2], "eu's address and the untied one");
        }
        let nowhere: Vec<usize> = s.pick(&set, None, 0, 0).indices().collect();
        assert_eq!(nowhere.len(), 3);
        // A region whose addresses are all out of the zone: every region.
        let set = rdatas(&["198.18.0.3", "198.18.0.5"]);
        assert_eq!(s.pick(&set, Some("eu"), 0, 18).len(), 2);
    }

    #[test]
    fn strides_are_coprime_with_the_total() {
        for total in 1..200 {
            let s = stride(total);
            assert_eq!(gcd(s, total), 1, "{total}");
        }
    }
}
