//! Per-rule figures from the program's per-CPU counters and its flow table,
//! as a table for people and as JSON for scripts.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use redirector_common::{DIR_FORWARD, Flow, Flow6, FlowKey, FlowKey6, FlowKeyOf, FlowOf, counter};

use crate::maps::PinnedMaps;
use crate::state::{self, State};

/// One counter slot summed over CPUs, indexed by `counter::*`.
pub type Counters = [u64; counter::COUNT as usize];

/// Sums the per-CPU counters of each slot in `ids`.
pub fn read_counters<T: Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
    ids: impl IntoIterator<Item = u32>,
) -> Result<BTreeMap<u32, Counters>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let mut sums = [0u64; counter::COUNT as usize];
        for (c, sum) in sums.iter_mut().enumerate() {
            let index = id * counter::COUNT + c as u32;
            let per_cpu = map
                .get(&index, 0)
                .with_context(|| format!("reading COUNTERS[{index}]"))?;
            *sum = per_cpu.iter().fold(0u64, |acc, v| acc.wrapping_add(*v));
        }
        out.insert(id, sums);
    }
    Ok(out)
}

/// The counter slots a report reads: slot 0 (packets for no rule) and the
/// slot of every rule `state` names.
pub fn counter_ids(state: &State) -> Vec<u32> {
    std::iter::once(0)
        .chain(state.rules.iter().map(|r| r.id))
        .collect()
}

/// What the flow table holds for one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Connections (forward entries).
    pub flows: u64,
    /// Distinct client addresses among them: who still arrives at OLD.
    pub clients: u64,
}

/// The flow tables of both families, established and half-open, as the
/// daemon (`Maps`) or `redirector stats` (`PinnedMaps`) holds them.
pub struct FlowTables<'a, T> {
    pub flows: &'a BpfHashMap<T, FlowKey, Flow>,
    pub embryos: &'a BpfHashMap<T, FlowKey, Flow>,
    pub flows6: &'a BpfHashMap<T, FlowKey6, Flow6>,
    pub embryos6: &'a BpfHashMap<T, FlowKey6, Flow6>,
}

/// The connections and clients per rule of the flow tables.
pub fn occupancy<T: Borrow<MapData>>(
    tables: FlowTables<'_, T>,
) -> Result<BTreeMap<u32, Occupancy>> {
    let mut out = count(&[tables.flows, tables.embryos])?;
    // A rule is of one family: its figures come from one of the two.
    for (id, o) in count(&[tables.flows6, tables.embryos6])? {
        let sum = out.entry(id).or_default();
        sum.flows += o.flows;
        sum.clients += o.clients;
    }
    Ok(out)
}

fn count<A: crate::gc::Addr, T: Borrow<MapData>>(
    tables: &[&BpfHashMap<T, FlowKeyOf<A>, FlowOf<A>>],
) -> Result<BTreeMap<u32, Occupancy>>
where
    FlowKeyOf<A>: aya::Pod,
    FlowOf<A>: aya::Pod,
{
    let mut per_rule: BTreeMap<u32, (u64, HashSet<A>)> = BTreeMap::new();
    for table in tables {
        for (key, flow) in crate::gc::snapshot(*table)? {
            if flow.direction == DIR_FORWARD {
                let (n, clients) = per_rule.entry(flow.rule_id).or_default();
                *n += 1;
                // A forward entry's key is the packet as the client sent it.
                clients.insert(key.saddr);
            }
        }
    }
    Ok(per_rule
        .into_iter()
        .map(|(id, (flows, clients))| {
            (
                id,
                Occupancy {
                    flows,
                    clients: clients.len() as u64,
                },
            )
        })
        .collect())
}

/// What `redirector stats` prints and `GET /v1/stats` answers: the API
/// contract's types, so that `cutover` reads exactly what is written.
pub use cutover_control_api::contract::{RuleStats as RuleReport, Stats as Report};

/// Builds the report from two counter samples `elapsed` apart.
pub fn build(
    state: &State,
    before: &BTreeMap<u32, Counters>,
    after: &BTreeMap<u32, Counters>,
    elapsed: Duration,
    active: &BTreeMap<u32, Occupancy>,
) -> Report {
    let zero = [0u64; counter::COUNT as usize];
    let secs = elapsed.as_secs_f64();
    let rules = state
        .rules
        .iter()
        .map(|r| {
            let now = after.get(&r.id).unwrap_or(&zero);
            let then = before.get(&r.id).unwrap_or(&zero);
            let c = |i: u32| now[i as usize];
            let new_delta = c(counter::NEW_FLOWS).saturating_sub(then[counter::NEW_FLOWS as usize]);
            let gc_evicted = state.gc_evicted.get(&r.id).copied().unwrap_or(0);
            RuleReport {
                id: r.id,
                name: r.name.clone(),
                from: r.from.clone(),
                to: r.to.clone(),
                draining: r.draining,
                share: r.share,
                new_flows_per_s: if secs > 0.0 {
                    new_delta as f64 / secs
                } else {
                    0.0
                },
                active_flows: active.get(&r.id).map_or(0, |o| o.flows),
                active_clients: active.get(&r.id).map_or(0, |o| o.clients),
                distinct_clients: active.get(&r.id).map_or(0, |o| o.clients),
                new_flows: c(counter::NEW_FLOWS),
                fwd_packets: c(counter::FWD_PACKETS),
                fwd_bytes: c(counter::FWD_BYTES),
                reply_packets: c(counter::REPLY_PACKETS),
                reply_bytes: c(counter::REPLY_BYTES),
                sent_back: c(counter::TX),
                redirected: c(counter::REDIRECT),
                nat_failures: c(counter::NAT_PORT_EXHAUSTED),
                evictions: c(counter::LRU_EVICTED) + gc_evicted,
                expired: state.gc_expired.get(&r.id).copied().unwrap_or(0),
                passes: named(now, "pass_"),
                drops: named(now, "drop_"),
                events: EVENTS
                    .iter()
                    .filter(|&&i| c(i) > 0)
                    .map(|&i| (counter::NAMES[i as usize].to_string(), c(i)))
                    .chain(
                        state
                            .gc_half_open_evicted
                            .get(&r.id)
                            .filter(|&&n| n > 0)
                            .map(|&n| ("half_open_evicted".to_string(), n)),
                    )
                    .collect(),
            }
        })
        .collect();
    let slot0 = after.get(&0).unwrap_or(&zero);
    Report {
        iface: state.iface.clone(),
        daemon_pid: state.pid,
        daemon_running: true,
        sample_seconds: secs,
        rules,
        unmatched: named(slot0, ""),
    }
}

/// The counters `RuleReport::events` lists (the others have fields, or are
/// passes and drops).
const EVENTS: [u32; 4] = [
    counter::FLOWS_CLOSING,
    counter::ICMP_TRANSLATED,
    counter::ICMP_FRAG_NEEDED_SENT,
    counter::PORT_REUSED,
];

fn named(c: &Counters, prefix: &str) -> BTreeMap<String, u64> {
    counter::NAMES
        .iter()
        .zip(c.iter())
        .filter(|(name, v)| name.starts_with(prefix) && **v > 0)
        .map(|(name, v)| ((*name).to_string(), *v))
        .collect()
}

/// The report as a table, one block per rule.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<40} {:>8} {:>7} {:>7} {:>10} {:>12} {:>10} {:>12} {:>6} {:>7}",
        "RULE",
        "FROM -> TO",
        "NEW/S",
        "ACTIVE",
        "CLIENTS",
        "FWD PKTS",
        "FWD BYTES",
        "REPLY PKTS",
        "REPLY BYTES",
        "NATERR",
        "EVICTED"
    );
    for rule in &r.rules {
        let name = if rule.draining {
            format!("{} (removed)", rule.name)
        } else {
            rule.name.clone()
        };
        let _ = writeln!(
            out,
            "{:<16} {:<40} {:>8.1} {:>7} {:>7} {:>10} {:>12} {:>10} {:>12} {:>6} {:>7}",
            name,
            if rule.share < 100 {
                format!("{} -> {} ({} %)", rule.from, rule.to, rule.share)
            } else {
                format!("{} -> {}", rule.from, rule.to)
            },
            rule.new_flows_per_s,
            rule.active_flows,
            rule.active_clients,
            rule.fwd_packets,
            rule.fwd_bytes,
            rule.reply_packets,
            rule.reply_bytes,
            rule.nat_failures,
            rule.evictions
        );
        let reasons: Vec<String> = rule
            .passes
            .iter()
            .chain(rule.drops.iter())
            .chain(rule.events.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !reasons.is_empty() {
            let _ = writeln!(out, "{:<16} {}", "", reasons.join(" "));
        }
    }
    if r.rules.is_empty() {
        let _ = writeln!(out, "(no rules)");
    }
    if !r.unmatched.is_empty() {
        let reasons: Vec<String> = r
            .unmatched
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "not for any rule: {}", reasons.join(" "));
    }
    out
}

/// `redirector stats`: samples the pinned counters twice, `interval` apart.
pub fn run(pin_dir: &Path, interval: Duration, json: bool) -> Result<()> {
    let state = State::read(&state::path_for(pin_dir)?)?;
    let maps = PinnedMaps::open(pin_dir)?;
    let ids = counter_ids(&state);
    let started = Instant::now();
    let before = read_counters(&maps.counters, ids.iter().copied())?;
    std::thread::sleep(interval);
    let after = read_counters(&maps.counters, ids.iter().copied())?;
    let elapsed = started.elapsed();
    let active = occupancy(FlowTables {
        flows: &maps.flows,
        embryos: &maps.embryos,
        flows6: &maps.flows6,
        embryos6: &maps.embryos6,
    })?;
    let mut report = build(&state, &before, &after, elapsed, &active);
    report.daemon_running = state.daemon_alive();
    if !report.daemon_running {
        eprintln!(
            "redirector: warning: the daemon (pid {}) is gone; these are the figures it left pinned in {}",
            state.pid,
            pin_dir.display()
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RuleInfo;

    fn state() -> State {
        State {
            iface: "eth0".into(),
            pid: 1,
            rules: vec![RuleInfo {
                id: 1,
                name: "www".into(),
                from: "198.18.0.2:80".into(),
                to: "198.18.0.3:80".into(),
                draining: false,
                endpoints: Vec::new(),
                share: 100,
            }],
            gc_expired: BTreeMap::from([(1, 4)]),
            gc_evicted: BTreeMap::from([(1, 2)]),
            gc_half_open_evicted: BTreeMap::from([(1, 5)]),
        }
    }

    #[test]
    fn the_report_turns_counter_deltas_into_rates_and_names_reasons() {
        let mut before = [0u64; counter::COUNT as usize];
        before[counter::NEW_FLOWS as usize] = 10;
        let mut after = before;
        after[counter::NEW_FLOWS as usize] = 30;
        after[counter::FWD_PACKETS as usize] = 100;
        after[counter::LRU_EVICTED as usize] = 1;
        after[counter::PASS_NO_NEIGH as usize] = 3;
        after[counter::DROP_NO_ROUTE as usize] = 5;
        let mut slot0 = [0u64; counter::COUNT as usize];
        slot0[counter::PASS_NO_RULE as usize] = 7;
        let report = build(
            &state(),
            &BTreeMap::from([(1, before)]),
            &BTreeMap::from([(0, slot0), (1, after)]),
            Duration::from_secs(2),
            &BTreeMap::from([(
                1,
                Occupancy {
                    flows: 6,
                    clients: 2,
                },
            )]),
        );
        let r = &report.rules[0];
        assert_eq!(r.new_flows_per_s, 10.0);
        assert_eq!(r.new_flows, 30);
        assert_eq!(r.active_flows, 6);
        assert_eq!(r.active_clients, 2);
        assert_eq!(r.evictions, 3, "program-seen plus collected evictions");
        assert_eq!(
            r.events.get("half_open_evicted"),
            Some(&5),
            "half-open losses apart from established ones"
        );
        assert_eq!(r.expired, 4);
        assert_eq!(r.passes, BTreeMap::from([("pass_no_neigh".into(), 3)]));
        assert_eq!(r.drops, BTreeMap::from([("drop_no_route".into(), 5)]));
        assert_eq!(
            report.unmatched,
            BTreeMap::from([("pass_no_rule".into(), 7)])
        );

        let table = render_table(&report);
        assert!(table.contains("198.18.0.2:80 -> 198.18.0.3:80"), "{table}");
        assert!(table.contains("pass_no_neigh=3"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rules"][0]["new_flows"], 30);
        assert_eq!(json["rules"][0]["name"], "www");
    }
}
