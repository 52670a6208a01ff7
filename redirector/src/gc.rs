//! Garbage collection of `FLOWS`: the XDP program only creates and refreshes
//! entries; user space removes a connection (its forward and reply entries)
//! once it has been idle longer than its state allows, and removes entries
//! whose partner the LRU map evicted under pressure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::Pod;
use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use cutover_workspace::Timeouts;
use redirector_common::{
    DIR_FORWARD, FLOW_ESTABLISHED, FLOW_FIN, FLOW_RST, FlowKeyOf, FlowOf, IPPROTO_UDP, Ip4, Ip6,
};

/// An address type of the flow tables: `Ip4` for `FLOWS` and `EMBRYOS`,
/// `Ip6` for their IPv6 twins. Collection works the same on both.
pub trait Addr: Copy + Eq + std::hash::Hash + std::fmt::Debug + Default + 'static {}
impl Addr for Ip4 {}
impl Addr for Ip6 {}

/// An entry without its partner is left alone this long, because the
/// program writes a new connection's two entries one after the other and a
/// scan may fall between them.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// What becomes of one connection in a collection pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Idle longer than the timeout of its state.
    Expired,
    /// Its partner entry is gone (LRU eviction): the connection can no longer
    /// be translated in one direction, so the other entry goes too.
    Orphan,
}

/// Judges the connection `entry` belongs to. `now_ns` and `last_seen_ns`
/// are both CLOCK_MONOTONIC (the program reads it at tick resolution).
pub fn judge<A>(
    entry: &FlowOf<A>,
    partner: Option<&FlowOf<A>>,
    now_ns: u64,
    t: &Timeouts,
) -> Verdict {
    let Some(partner) = partner else {
        let idle = now_ns.saturating_sub(entry.last_seen_ns);
        return if idle > ORPHAN_GRACE.as_nanos() as u64 {
            Verdict::Orphan
        } else {
            Verdict::Keep
        };
    };
    let flags = entry.tcp_flags | partner.tcp_flags;
    let last_seen = entry.last_seen_ns.max(partner.last_seen_ns);
    let udp = entry.proto == IPPROTO_UDP;
    let timeout_s = if udp && flags & FLOW_ESTABLISHED != 0 {
        t.udp_stream
    } else if udp {
        t.udp
    } else if flags & (FLOW_FIN | FLOW_RST) != 0 {
        t.closing
    } else if flags & FLOW_ESTABLISHED != 0 {
        t.established
    } else {
        t.syn
    };
    let idle = now_ns.saturating_sub(last_seen);
    if idle > timeout_s.saturating_mul(1_000_000_000) {
        Verdict::Expired
    } else {
        Verdict::Keep
    }
}

/// What one pass found and did, per rule id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Connections left in the map afterwards.
    pub active: BTreeMap<u32, u64>,
    /// Of those, connections that have seen neither FIN nor RST: the ones a
    /// detach would cut.
    pub open: u64,
    pub expired: BTreeMap<u32, u64>,
    /// Established connections that lost one or both entries to the LRU.
    pub evicted: BTreeMap<u32, u64>,
    /// Half-open connections that did (a SYN flood overflowing `EMBRYOS`
    /// evicts them by design; no established connection suffers).
    pub half_open_evicted: BTreeMap<u32, u64>,
}

impl Report {
    /// Adds the report of another table's pass.
    pub fn merge(&mut self, other: Report) {
        for (mine, theirs) in [
            (&mut self.active, other.active),
            (&mut self.expired, other.expired),
            (&mut self.evicted, other.evicted),
            (&mut self.half_open_evicted, other.half_open_evicted),
        ] {
            for (id, n) in theirs {
                *mine.entry(id).or_default() += n;
            }
        }
        self.open += other.open;
    }

    /// Counts a connection that stays, judged by one of its entries.
    fn keep<A>(&mut self, entry: &FlowOf<A>) {
        *self.active.entry(entry.rule_id).or_default() += 1;
        if entry.tcp_flags & (FLOW_FIN | FLOW_RST) == 0 {
            self.open += 1;
        }
    }
}

/// A flow table entry: its key and its value.
pub type Entry<A> = (FlowKeyOf<A>, FlowOf<A>);

/// Decides, for a snapshot of the map, which keys to delete. Each connection
/// is judged once, from its forward entry when it has one.
pub fn sweep<A: Addr>(
    snapshot: &HashMap<FlowKeyOf<A>, FlowOf<A>>,
    now_ns: u64,
    t: &Timeouts,
) -> (Vec<Entry<A>>, Report) {
    let mut doomed = Vec::new();
    let mut report = Report::default();
    for (key, entry) in snapshot {
        let partner_key = entry.partner_key();
        let partner = snapshot.get(&partner_key);
        // Pairs are judged from their forward entry; a lone reply entry is
        // judged by itself.
        if entry.direction != DIR_FORWARD && partner.is_some() {
            continue;
        }
        match judge(entry, partner, now_ns, t) {
            Verdict::Keep => report.keep(&FlowOf {
                tcp_flags: entry.tcp_flags | partner.map_or(0, |p| p.tcp_flags),
                ..*entry
            }),
            verdict => {
                let tally = if verdict == Verdict::Expired {
                    &mut report.expired
                } else {
                    &mut report.evicted
                };
                *tally.entry(entry.rule_id).or_default() += 1;
                doomed.push((*key, *entry));
                if let Some(p) = partner {
                    doomed.push((partner_key, *p));
                }
            }
        }
    }
    (doomed, report)
}

/// The current CLOCK_MONOTONIC time in nanoseconds, read like the program
/// reads it (`bpf_ktime_get_coarse_ns`: the same clock at tick resolution),
/// so that an entry written this tick is never seen as from the future.
pub fn monotonic_now_ns() -> Result<u64> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .context("reading CLOCK_MONOTONIC_COARSE")?;
    Ok(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}

/// Reads the whole map, in batches when the kernel can. Entries deleted
/// while it is read are skipped.
pub fn snapshot<A: Addr, T: std::borrow::Borrow<MapData>>(
    flows: &BpfHashMap<T, FlowKeyOf<A>, FlowOf<A>>,
) -> Result<HashMap<FlowKeyOf<A>, FlowOf<A>>>
where
    FlowKeyOf<A>: Pod,
    FlowOf<A>: Pod,
{
    match crate::batch::lookup_all(flows) {
        Ok(entries) => return Ok(entries.into_iter().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => return Err(e).context("reading the FLOWS map in batches"),
    }
    let mut out = HashMap::new();
    for item in flows.iter() {
        match item {
            Ok((k, v)) => {
                out.insert(k, v);
            }
            // The program or another pass removed it between the key and
            // the value lookups.
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("reading the FLOWS map"),
        }
    }
    Ok(out)
}

/// One collection pass over a flow table (`FLOWS`, `EMBRYOS` or their IPv6
/// twins).
pub fn collect<A: Addr>(
    flows: &mut BpfHashMap<MapData, FlowKeyOf<A>, FlowOf<A>>,
    t: &Timeouts,
) -> Result<Report>
where
    FlowKeyOf<A>: Pod,
    FlowOf<A>: Pod,
{
    let snap = snapshot(flows)?;
    let now = monotonic_now_ns()?;
    let (doomed, mut report) = sweep(&snap, now, t);
    delete(flows, &snap, &doomed, &mut report)?;
    Ok(report)
}

/// The daemon's collection pass over both tables. Besides what [`collect`]
/// finds, it counts as evicted the open connections of the last pass that
/// lost both entries since (see [`OpenFlows`]), which no single snapshot
/// can see.
pub fn collect_both<A: Addr>(
    flows: &mut BpfHashMap<MapData, FlowKeyOf<A>, FlowOf<A>>,
    embryos: &mut BpfHashMap<MapData, FlowKeyOf<A>, FlowOf<A>>,
    t: &Timeouts,
    open: &mut OpenFlows<A>,
) -> Result<Report>
where
    FlowKeyOf<A>: Pod,
    FlowOf<A>: Pod,
{
    let established = snapshot(flows)?;
    let half_open = snapshot(embryos)?;
    let now = monotonic_now_ns()?;
    // The two snapshots are not one instant: a connection whose port went
    // to a new one may be in neither. Each candidate is looked up again,
    // and counted only if both its keys are still absent from both tables.
    let present = |k: &FlowKeyOf<A>| flows.get(k, 0).is_ok() || embryos.get(k, 0).is_ok();
    let mut vanished = BTreeMap::new();
    for (forward, reply, rule) in open.vanished(&established, &half_open) {
        if !present(&forward) && !present(&reply) {
            *vanished.entry(rule).or_insert(0u64) += 1;
        }
    }
    let (doomed, mut report) = sweep(&established, now, t);
    let removed = delete(flows, &established, &doomed, &mut report)?;
    open.remember(&established, &removed);
    let (doomed, mut half) = sweep(&half_open, now, t);
    delete(embryos, &half_open, &doomed, &mut half)?;
    half.half_open_evicted = std::mem::take(&mut half.evicted);
    report.merge(half);
    for (id, n) in vanished {
        *report.evicted.entry(id).or_default() += n;
    }
    Ok(report)
}

/// The open connections (no FIN, no RST) of `FLOWS` that the last pass
/// kept, by forward key, with their reply key and rule. Nothing but the LRU
/// removes both entries of an open connection between two passes: the
/// program deletes only closed connections' entries, and when it does, to
/// give their NAT port (the reply key) or the client's port (the forward
/// key) to a new connection, that key is in a table again. So an open
/// connection of the last pass with neither key in either table now was
/// evicted whole. (A connection that closed, gave up its port, and whose
/// successor also ended within one interval would be miscounted; the
/// program keeps the port of the last closed connection until it is
/// needed, which makes that rare.)
#[derive(Debug)]
pub struct OpenFlows<A> {
    by_forward: HashMap<FlowKeyOf<A>, (FlowKeyOf<A>, u32)>,
}

impl<A> Default for OpenFlows<A> {
    fn default() -> Self {
        Self {
            by_forward: HashMap::new(),
        }
    }
}

impl<A: Addr> OpenFlows<A> {
    /// The connections open at the last pass that have no key left in
    /// either snapshot: their forward key, reply key and rule.
    pub fn vanished(
        &self,
        flows: &HashMap<FlowKeyOf<A>, FlowOf<A>>,
        embryos: &HashMap<FlowKeyOf<A>, FlowOf<A>>,
    ) -> Vec<(FlowKeyOf<A>, FlowKeyOf<A>, u32)> {
        let present = |k: &FlowKeyOf<A>| flows.contains_key(k) || embryos.contains_key(k);
        self.by_forward
            .iter()
            .filter(|(forward, (reply, _))| !present(forward) && !present(reply))
            .map(|(forward, (reply, rule))| (*forward, *reply, *rule))
            .collect()
    }

    /// Remembers the open connections of `snap` with both entries there
    /// and neither in `removed`.
    pub fn remember(
        &mut self,
        snap: &HashMap<FlowKeyOf<A>, FlowOf<A>>,
        removed: &HashSet<FlowKeyOf<A>>,
    ) {
        self.by_forward.clear();
        for (key, entry) in snap {
            if entry.direction != DIR_FORWARD || removed.contains(key) {
                continue;
            }
            let reply = entry.partner_key();
            let Some(partner) = snap.get(&reply) else {
                continue;
            };
            if (entry.tcp_flags | partner.tcp_flags) & (FLOW_FIN | FLOW_RST) == 0 {
                self.by_forward.insert(*key, (reply, entry.rule_id));
            }
        }
    }
}

/// Deletes the entries `sweep` doomed, except those of connections that
/// came back to life since the snapshot: a packet refreshed one of their
/// entries, or the partner the snapshot missed was written during the scan.
/// Such a connection is spared whole, so that the time between the snapshot
/// and the deletions never leaves half a connection behind. Each
/// connection's entries are read once and deleted right after: a new
/// connection may take a key within seconds (a client's port, the NAT port
/// of a closed connection, at thousands of connections a second), and the
/// shorter the time between the read and the delete, the less likely its
/// entry is deleted for the old one's.
/// Returns the keys it deleted.
fn delete<A: Addr>(
    flows: &mut BpfHashMap<MapData, FlowKeyOf<A>, FlowOf<A>>,
    snap: &HashMap<FlowKeyOf<A>, FlowOf<A>>,
    doomed: &[Entry<A>],
    report: &mut Report,
) -> Result<HashSet<FlowKeyOf<A>>>
where
    FlowKeyOf<A>: Pod,
    FlowOf<A>: Pod,
{
    let mut removed = HashSet::new();
    let mut i = 0;
    while i < doomed.len() {
        // A connection: its first entry, then its partner when that is
        // doomed too (`sweep` lists them one after the other).
        let (_, seen) = &doomed[i];
        let partner_key = seen.partner_key();
        let n = if doomed.get(i + 1).is_some_and(|(k, _)| *k == partner_key) {
            2
        } else {
            1
        };
        let connection = &doomed[i..i + n];
        i += n;
        let mut alive = None;
        let (mut present, mut gone) = (Vec::with_capacity(2), Vec::new());
        for (key, was) in connection {
            match flows.get(key, 0) {
                Ok(current) if current.last_seen_ns != was.last_seen_ns => {
                    alive = Some(current);
                    break;
                }
                Ok(_) => present.push(*key),
                Err(MapError::KeyNotFound) => gone.push(*key),
                Err(e) => return Err(e).context("reading a FLOWS entry"),
            }
        }
        if alive.is_none() && !snap.contains_key(&partner_key) && flows.get(&partner_key, 0).is_ok()
        {
            alive = Some(*seen);
        }
        if let Some(current) = alive {
            // Take back the verdict `sweep` counted for this connection.
            let tally = if snap.contains_key(&partner_key) {
                &mut report.expired
            } else {
                &mut report.evicted
            };
            if let Some(n) = tally.get_mut(&seen.rule_id) {
                *n = n.saturating_sub(1);
            }
            report.keep(&current);
            continue;
        }
        for key in present {
            match flows.remove(&key) {
                Ok(()) => {}
                Err(e) if crate::maps::is_missing(&e) => {}
                Err(e) => return Err(e).context("deleting an expired FLOWS entry"),
            }
            removed.insert(key);
        }
        removed.extend(gone);
    }
    report.expired.retain(|_, n| *n > 0);
    report.evicted.retain(|_, n| *n > 0);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redirector_common::{DIR_REPLY, FLOW_SYN, FLOW_UDP_ANSWERED, Flow, FlowKey, IPPROTO_TCP};

    const S: u64 = 1_000_000_000;

    fn timeouts() -> Timeouts {
        Timeouts {
            syn: 60,
            established: 7200,
            closing: 10,
            ..Timeouts::default()
        }
    }

    /// A connection client 198.18.0.1:40000 -> OLD 198.18.0.2:80, rewritten
    /// to 198.18.0.2:40000 -> NEW 198.18.0.3:80.
    fn pair(rule_id: u32, flags: u8, fwd_seen: u64, reply_seen: u64) -> [(FlowKey, Flow); 2] {
        pair_on(40000, rule_id, flags, fwd_seen, reply_seen)
    }

    fn pair_on(
        client_port: u16,
        rule_id: u32,
        flags: u8,
        fwd_seen: u64,
        reply_seen: u64,
    ) -> [(FlowKey, Flow); 2] {
        pair_of(
            IPPROTO_TCP,
            client_port,
            rule_id,
            flags,
            fwd_seen,
            reply_seen,
        )
    }

    fn pair_of(
        proto: u8,
        client_port: u16,
        rule_id: u32,
        flags: u8,
        fwd_seen: u64,
        reply_seen: u64,
    ) -> [(FlowKey, Flow); 2] {
        let ip = |d: u8| u32::from_ne_bytes([198, 18, 0, d]);
        let p = |n: u16| n.to_be();
        let fwd_key = FlowKey {
            saddr: ip(1),
            daddr: ip(2),
            sport: p(client_port),
            dport: p(80),
            proto,
            _pad: [0; 3],
        };
        let fwd = Flow {
            saddr: ip(2),
            daddr: ip(3),
            sport: p(client_port),
            dport: p(80),
            rule_id,
            direction: DIR_FORWARD,
            tcp_flags: flags,
            last_seen_ns: fwd_seen,
            proto,
            ..Flow::default()
        };
        let reply_key = fwd.partner_key();
        let reply = Flow {
            saddr: ip(2),
            daddr: ip(1),
            sport: p(80),
            dport: p(client_port),
            rule_id,
            direction: DIR_REPLY,
            tcp_flags: 0,
            last_seen_ns: reply_seen,
            proto,
            ..Flow::default()
        };
        assert_eq!(reply.partner_key(), fwd_key, "the test pair mirrors itself");
        [(fwd_key, fwd), (reply_key, reply)]
    }

    fn table(pairs: &[[(FlowKey, Flow); 2]]) -> HashMap<FlowKey, Flow> {
        pairs.iter().flatten().copied().collect()
    }

    #[test]
    fn an_open_connection_that_lost_both_entries_between_passes_counts_as_evicted() {
        let open = pair_on(40000, 1, FLOW_ESTABLISHED, S, S);
        let closed = pair_on(40001, 1, FLOW_ESTABLISHED | FLOW_FIN, S, S);
        let expired = pair_on(40002, 2, FLOW_ESTABLISHED, S, S);
        let other = pair_on(40003, 1, FLOW_ESTABLISHED, S, S);
        let mut seen = OpenFlows::default();
        let removed: HashSet<FlowKey> = expired.iter().map(|(k, _)| *k).collect();
        seen.remember(&table(&[open, closed, expired, other]), &removed);
        let none = HashMap::new();

        // Both entries of `open` gone: evicted. The closed one gave its
        // ports away, and gc removed `expired` itself: neither counts.
        assert_eq!(
            seen.vanished(&table(&[other]), &none),
            [(open[0].0, open[1].0, 1)]
        );
        // One entry left: the sweep's orphan rule counts it, not this.
        let half: HashMap<FlowKey, Flow> = [open[1], other[0], other[1]].into_iter().collect();
        assert!(seen.vanished(&half, &none).is_empty());
        // Its NAT port (the reply key) belongs to a new, half-open
        // connection: given away after a close, not evicted.
        let reused: HashMap<FlowKey, Flow> = [open[1]].into_iter().collect();
        assert!(seen.vanished(&table(&[other]), &reused).is_empty());
    }

    #[test]
    fn an_unanswered_syn_expires_after_the_syn_timeout() {
        let [(_, f), (_, r)] = pair(1, FLOW_SYN, 100 * S, 100 * S);
        let t = timeouts();
        assert_eq!(judge(&f, Some(&r), 159 * S, &t), Verdict::Keep);
        assert_eq!(judge(&f, Some(&r), 161 * S, &t), Verdict::Expired);
    }

    #[test]
    fn a_udp_flow_lives_as_conntrack_s_until_it_is_a_stream() {
        let t = timeouts();
        // Unanswered, or a lone exchange (answered, in EMBRYOS): 30 s.
        for flags in [0, FLOW_UDP_ANSWERED] {
            let [(_, mut f), (_, mut r)] = pair_of(IPPROTO_UDP, 5353, 1, 0, 100 * S, 100 * S);
            f.tcp_flags = flags;
            r.tcp_flags = flags;
            assert_eq!(judge(&f, Some(&r), 129 * S, &t), Verdict::Keep);
            assert_eq!(judge(&f, Some(&r), 131 * S, &t), Verdict::Expired);
        }
        // A stream (moved to FLOWS, both entries established): 120 s.
        let [(_, mut f), (_, mut r)] = pair_of(IPPROTO_UDP, 5353, 1, 0, 100 * S, 100 * S);
        f.tcp_flags = FLOW_ESTABLISHED | FLOW_UDP_ANSWERED;
        r.tcp_flags = FLOW_ESTABLISHED | FLOW_UDP_ANSWERED;
        assert_eq!(judge(&f, Some(&r), 219 * S, &t), Verdict::Keep);
        assert_eq!(judge(&f, Some(&r), 221 * S, &t), Verdict::Expired);
        assert_eq!(t.udp_stream, 120);
    }

    #[test]
    fn an_established_flow_lives_as_long_as_either_side_talks() {
        let [(_, f), (_, r)] = pair(1, FLOW_SYN | FLOW_ESTABLISHED, 100 * S, 5000 * S);
        let t = timeouts();
        // The client has been silent for long, the server sent recently.
        assert_eq!(judge(&f, Some(&r), 7000 * S, &t), Verdict::Keep);
        assert_eq!(judge(&f, Some(&r), 12201 * S, &t), Verdict::Expired);
    }

    #[test]
    fn fin_or_rst_on_either_side_shortens_the_lifetime() {
        let t = timeouts();
        let [(_, f), (_, mut r)] = pair(1, FLOW_ESTABLISHED, 100 * S, 100 * S);
        r.tcp_flags = FLOW_RST;
        assert_eq!(judge(&f, Some(&r), 111 * S, &t), Verdict::Expired);
        let [(_, f), (_, r)] = pair(1, FLOW_ESTABLISHED | FLOW_FIN, 100 * S, 100 * S);
        assert_eq!(judge(&f, Some(&r), 109 * S, &t), Verdict::Keep);
    }

    #[test]
    fn a_lone_entry_is_an_eviction_only_after_the_grace_period() {
        let [(_, f), _] = pair(1, FLOW_SYN, 100 * S, 100 * S);
        let t = timeouts();
        assert_eq!(judge(&f, None, 101 * S, &t), Verdict::Keep);
        assert_eq!(judge(&f, None, 103 * S, &t), Verdict::Orphan);
    }

    #[test]
    fn a_clock_behind_the_entry_never_expires_it() {
        let [(_, f), (_, r)] = pair(1, FLOW_SYN, 100 * S, 100 * S);
        assert_eq!(judge(&f, Some(&r), 0, &timeouts()), Verdict::Keep);
    }

    #[test]
    fn a_sweep_removes_both_entries_and_counts_per_rule() {
        let mut snap = HashMap::new();
        let idle = pair_on(40000, 1, FLOW_ESTABLISHED | FLOW_FIN, 0, 0);
        let live = pair_on(40001, 2, FLOW_ESTABLISHED, 90 * S, 90 * S);
        snap.extend(idle);
        snap.extend(live);
        // An evicted partner: only the reply entry of this connection is left.
        let lone = pair_on(40002, 2, FLOW_ESTABLISHED, 0, 0)[1];
        snap.insert(lone.0, lone.1);

        let (doomed, report) = sweep(&snap, 100 * S, &timeouts());
        let doomed_keys: Vec<FlowKey> = doomed.iter().map(|(k, _)| *k).collect();
        assert_eq!(doomed.len(), 3);
        assert!(doomed_keys.contains(&idle[0].0) && doomed_keys.contains(&idle[1].0));
        assert!(doomed_keys.contains(&lone.0));
        assert_eq!(report.expired, BTreeMap::from([(1, 1)]));
        assert_eq!(report.evicted, BTreeMap::from([(2, 1)]));
        assert_eq!(report.active, BTreeMap::from([(2, 1)]));
        assert_eq!(report.open, 1);
    }

    /// A real map holding `entries`, as the daemon uses it (needs root).
    fn map_holding<'a>(
        entries: impl IntoIterator<Item = &'a (FlowKey, Flow)>,
    ) -> BpfHashMap<MapData, FlowKey, Flow> {
        let mut map = BpfHashMap::<MapData, FlowKey, Flow>::create(1024, 0)
            .expect("creating a hash map (run as root)");
        for (k, v) in entries {
            map.insert(k, v, 0).unwrap();
        }
        map
    }

    /// A connection that closed a minute ago, at `now`: past `closing`.
    fn closed_a_minute_ago(now: u64) -> [(FlowKey, Flow); 2] {
        pair_on(
            40000,
            1,
            FLOW_ESTABLISHED | FLOW_FIN,
            now - 60 * S,
            now - 60 * S,
        )
    }

    #[test]
    fn a_collection_pass_deletes_idle_and_orphaned_entries_from_the_map() {
        let now = monotonic_now_ns().unwrap();
        let idle = closed_a_minute_ago(now);
        let live = pair_on(40001, 1, FLOW_ESTABLISHED, now - 60 * S, now);
        let lone = pair_on(40002, 2, FLOW_ESTABLISHED, now - 60 * S, now - 60 * S)[0];
        let mut map = map_holding(idle.iter().chain(live.iter()).chain([lone].iter()));

        let report = collect(&mut map, &timeouts()).unwrap();

        let left: HashMap<FlowKey, Flow> = snapshot(&map).unwrap();
        assert_eq!(left.len(), 2);
        assert!(left.contains_key(&live[0].0) && left.contains_key(&live[1].0));
        assert_eq!(report.expired, BTreeMap::from([(1, 1)]));
        assert_eq!(report.evicted, BTreeMap::from([(2, 1)]));
        assert_eq!(report.active, BTreeMap::from([(1, 1)]));
    }

    /// A reply that arrives between the snapshot and the deletions keeps
    /// the whole connection, not just the entry it touched.
    #[test]
    fn a_connection_that_sends_during_the_pass_keeps_both_entries() {
        let now = monotonic_now_ns().unwrap();
        let idle = closed_a_minute_ago(now);
        let mut map = map_holding(&idle);
        let snap = snapshot(&map).unwrap();
        let (doomed, mut report) = sweep(&snap, now, &timeouts());
        assert_eq!(doomed.len(), 2, "the idle connection is doomed");

        let (reply_key, mut reply) = idle[1];
        reply.last_seen_ns = now;
        map.insert(reply_key, reply, 0).unwrap();
        delete(&mut map, &snap, &doomed, &mut report).unwrap();

        assert_eq!(snapshot(&map).unwrap().len(), 2);
        assert!(report.expired.is_empty(), "{report:?}");
        assert_eq!(report.active, BTreeMap::from([(1, 1)]));
    }

    /// The program deletes entries too (a port reused, a client starting
    /// over): one gone between the snapshot and the deletion is no error,
    /// and the pass goes on.
    #[test]
    fn an_entry_the_program_deleted_first_does_not_stop_the_pass() {
        let now = monotonic_now_ns().unwrap();
        let idle = closed_a_minute_ago(now);
        let mut map = map_holding(&idle);
        let snap = snapshot(&map).unwrap();
        let (doomed, mut report) = sweep(&snap, now, &timeouts());
        map.remove(&idle[0].0).unwrap();
        delete(&mut map, &snap, &doomed, &mut report).unwrap();
        assert!(snapshot(&map).unwrap().is_empty());
    }
}
