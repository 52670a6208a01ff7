//! Applies a [`Plan`](crate::rules::Plan) to the maps, and keeps `EGRESS`
//! listing the host's interfaces. Map updates are individually atomic; the
//! order (settings, fresh counters, deletes, inserts) means a packet never
//! sees a rule whose counters still belong to a previous owner, and a map
//! near its capacity never has to hold the old and the new entries at once
//! (the deletes are of keys the next rules do not have).

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use aya::maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues};
use redirector_common::{MAX_EGRESS_IFACES, NatSettings, RuleKey, RuleValue, counter};
use tracing::{debug, warn};

use crate::maps::Maps;
use crate::rules::{Plan, RuleSet};

/// The maps a plan writes, borrowed from [`Maps`] (or made by a test).
pub struct RuleMaps<'a> {
    pub rules: &'a mut HashMap<MapData, RuleKey, RuleValue>,
    pub settings: &'a mut Array<MapData, NatSettings>,
    pub counters: &'a mut PerCpuArray<MapData, u64>,
}

impl Maps {
    pub fn rule_maps(&mut self) -> RuleMaps<'_> {
        RuleMaps {
            rules: &mut self.rules,
            settings: &mut self.settings,
            counters: &mut self.counters,
        }
    }
}

/// Writes the plan's updates. On error the maps may hold part of the plan;
/// the caller reports it and keeps its previous view of the maps.
pub fn apply(maps: RuleMaps<'_>, plan: &Plan) -> Result<()> {
    if let Some(settings) = plan.settings {
        maps.settings
            .set(0, settings, 0)
            .context("writing SETTINGS[0]")?;
    }
    for &id in &plan.fresh_ids {
        reset_counters(maps.counters, id)?;
    }
    for key in &plan.removes {
        match maps.rules.remove(key) {
            Ok(()) => {}
            Err(e) if crate::maps::is_missing(&e) => {}
            Err(e) => return Err(e).context("deleting a removed rule from RULES"),
        }
    }
    for (key, value) in &plan.upserts {
        maps.rules
            .insert(key, value, 0)
            .with_context(|| format!("writing rule {} into RULES", value.rule_id))?;
    }
    Ok(())
}

/// Best effort after a failed [`apply`]: makes `RULES` and `SETTINGS` hold
/// `previous` again, whatever part of `attempted` got in.
pub fn restore(maps: RuleMaps<'_>, previous: &RuleSet, attempted: &RuleSet) {
    if let Some(settings) = previous.settings
        && let Err(e) = maps.settings.set(0, settings, 0)
    {
        warn!(error = %e, "restoring SETTINGS[0]");
    }
    let kept: std::collections::HashSet<RuleKey> = previous.entries().map(|(k, _)| k).collect();
    for (key, value) in attempted.entries() {
        if !kept.contains(&key)
            && let Err(e) = maps.rules.remove(&key)
            && !crate::maps::is_missing(&e)
        {
            warn!(error = %e, rule = value.rule_id, "removing a half-added rule entry");
        }
    }
    for (key, value) in previous.entries() {
        if let Err(e) = maps.rules.insert(key, value, 0) {
            warn!(error = %e, rule = value.rule_id, "restoring a rule entry");
        }
    }
}

/// Zeroes a counter slot on every CPU, so that a reused id starts from 0.
fn reset_counters(counters: &mut PerCpuArray<MapData, u64>, id: u32) -> Result<()> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("counting possible CPUs")?;
    for c in 0..counter::COUNT {
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("building per-CPU zeros")?;
        counters
            .set(id * counter::COUNT + c, zeros, 0)
            .with_context(|| format!("resetting counters of rule {id}"))?;
    }
    Ok(())
}

/// Makes `EGRESS` hold exactly the host's interfaces (but loopback), so that
/// the program can redirect to whichever one the FIB picks.
pub fn sync_egress(egress: &mut DevMapHash<MapData>) -> Result<()> {
    let mut wanted = BTreeSet::new();
    for iface in nix::net::if_::if_nameindex()
        .context("listing network interfaces")?
        .iter()
    {
        let name = iface.name().to_string_lossy();
        if name == "lo" {
            continue;
        }
        wanted.insert(iface.index());
    }
    if wanted.len() > MAX_EGRESS_IFACES as usize {
        warn!(
            interfaces = wanted.len(),
            max = MAX_EGRESS_IFACES,
            "more interfaces than EGRESS holds: redirects to the rest are handed to the kernel"
        );
        wanted = wanted
            .into_iter()
            .take(MAX_EGRESS_IFACES as usize)
            .collect();
    }
    let present: BTreeSet<u32> = egress
        .keys()
        .collect::<Result<_, _>>()
        .context("reading EGRESS")?;
    for gone in present.difference(&wanted) {
        match egress.remove(*gone) {
            Ok(()) => {}
            Err(e) if crate::maps::is_missing(&e) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing ifindex {gone} from EGRESS"));
            }
        }
    }
    for &new in wanted.difference(&present) {
        // An interface that cannot transmit XDP frames is refused by the
        // kernel; the program then hands such packets to the stack.
        if let Err(e) = egress.insert(new, new, None, 0) {
            debug!(ifindex = new, error = %e, "interface not usable for XDP_REDIRECT");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use cutover_workspace::{NatConfig, Protocol, RedirectorConfig, Rule, Timeouts};
    use redirector_common::{COUNTER_SLOTS, MAX_RULES};
    use std::collections::BTreeSet;

    /// Standalone maps shaped like the program's (needs root).
    struct TestMaps {
        rules: HashMap<MapData, RuleKey, RuleValue>,
        settings: Array<MapData, NatSettings>,
        counters: PerCpuArray<MapData, u64>,
    }

    impl TestMaps {
        fn new() -> Self {
            Self {
                rules: HashMap::create(MAX_RULES, 0).expect("creating RULES (run as root)"),
                settings: Array::create(1, 0).unwrap(),
                counters: PerCpuArray::create(COUNTER_SLOTS, 0).unwrap(),
            }
        }

        fn view(&mut self) -> RuleMaps<'_> {
            RuleMaps {
                rules: &mut self.rules,
                settings: &mut self.settings,
                counters: &mut self.counters,
            }
        }

        fn rule_ids(&self) -> BTreeSet<(u16, u32)> {
            self.rules
                .iter()
                .map(|e| e.unwrap())
                .map(|(k, v)| (u16::from_be(k.port), v.rule_id))
                .collect()
        }
    }

    fn cfg(ports: &[u16]) -> RedirectorConfig {
        RedirectorConfig {
            nat: NatConfig::default(),
            timeouts: Timeouts::default(),
            rules: ports
                .iter()
                .map(|&p| Rule {
                    name: format!("r{p}"),
                    from: [198, 18, 0, 2].into(),
                    to: [198, 18, 0, 3].into(),
                    ports: vec![(p, 80)],
                    protocols: vec![Protocol::Tcp],
                    share: cutover_workspace::FULL_SHARE,
                })
                .collect(),
        }
    }

    #[test]
    fn plans_applied_in_turn_leave_the_maps_holding_exactly_the_config() {
        let mut maps = TestMaps::new();
        let none = BTreeSet::new();
        let first = rules::plan(&RuleSet::default(), &cfg(&[80, 81]), &none).unwrap();
        apply(maps.view(), &first).unwrap();
        assert_eq!(maps.rule_ids(), BTreeSet::from([(80, 1), (81, 2)]));
        assert_eq!(
            maps.settings.get(&0, 0).unwrap(),
            first.next.settings.unwrap()
        );

        // Rule 1 leaves and its id drains; a stale count in a fresh slot is
        // wiped before the slot's new rule goes in.
        let stale = PerCpuValues::try_from(vec![7u64; aya::util::nr_cpus().unwrap()]).unwrap();
        maps.counters
            .set(3 * counter::COUNT + counter::NEW_FLOWS, stale, 0)
            .unwrap();
        let second = rules::plan(&first.next, &cfg(&[81, 82]), &none).unwrap();
        apply(maps.view(), &second).unwrap();
        assert_eq!(maps.rule_ids(), BTreeSet::from([(81, 2), (82, 3)]));
        let fresh = maps
            .counters
            .get(&(3 * counter::COUNT + counter::NEW_FLOWS), 0)
            .unwrap();
        assert!(fresh.iter().all(|v| *v == 0));
    }

    #[test]
    fn a_reload_of_a_full_rules_map_fits_because_deletes_come_first() {
        let mut maps = TestMaps::new();
        let none = BTreeSet::new();
        let full: Vec<u16> = (1..=MAX_RULES as u16).collect();
        let first = rules::plan(&RuleSet::default(), &cfg(&full), &none).unwrap();
        apply(maps.view(), &first).unwrap();
        // One port swapped for another: the map would need one entry more
        // than it holds if the new one went in before the old one left.
        let mut swapped = full.clone();
        swapped[0] = 9999;
        let second = rules::plan(&first.next, &cfg(&swapped), &none).unwrap();
        apply(maps.view(), &second).unwrap();
        let ports: BTreeSet<u16> = maps.rule_ids().into_iter().map(|(p, _)| p).collect();
        assert_eq!(ports, swapped.into_iter().collect());
    }

    #[test]
    fn restore_puts_the_previous_rules_back() {
        let mut maps = TestMaps::new();
        let none = BTreeSet::new();
        let first = rules::plan(&RuleSet::default(), &cfg(&[80]), &none).unwrap();
        apply(maps.view(), &first).unwrap();
        let second = rules::plan(&first.next, &cfg(&[81]), &none).unwrap();
        apply(maps.view(), &second).unwrap();
        restore(maps.view(), &first.next, &second.next);
        assert_eq!(maps.rule_ids(), BTreeSet::from([(80, 1)]));
    }
}
