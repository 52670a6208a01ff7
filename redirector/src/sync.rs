//! Applies a [`Plan`](crate::rules::Plan) to the maps, and keeps `EGRESS`
//! listing the host's interfaces. Map updates are individually atomic; the
//! order (settings, fresh counters, inserts, deletes) means a packet never
//! sees a rule whose counters still belong to a previous owner.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use aya::maps::{MapError, PerCpuValues};
use redirector_common::{MAX_EGRESS_IFACES, counter};
use tracing::{debug, warn};

use crate::maps::Maps;
use crate::rules::{Plan, RuleSet};

/// Writes the plan's updates. On error the maps may hold part of the plan;
/// the caller reports it and keeps its previous view of the maps.
pub fn apply(maps: &mut Maps, plan: &Plan) -> Result<()> {
    if let Some(settings) = plan.settings {
        maps.settings
            .set(0, settings, 0)
            .context("writing SETTINGS[0]")?;
    }
    for &id in &plan.fresh_ids {
        reset_counters(maps, id)?;
    }
    for (key, value) in &plan.upserts {
        maps.rules
            .insert(key, value, 0)
            .with_context(|| format!("writing rule {} into RULES", value.rule_id))?;
    }
    for key in &plan.removes {
        match maps.rules.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("deleting a removed rule from RULES"),
        }
    }
    Ok(())
}

/// Best effort after a failed [`apply`]: makes `RULES` and `SETTINGS` hold
/// `previous` again, whatever part of `attempted` got in.
pub fn restore(maps: &mut Maps, previous: &RuleSet, attempted: &RuleSet) {
    if let Some(settings) = previous.settings
        && let Err(e) = maps.settings.set(0, settings, 0)
    {
        warn!(error = %e, "restoring SETTINGS[0]");
    }
    for (from, rule) in &attempted.rules {
        if !previous.rules.contains_key(from)
            && let Err(e) = maps.rules.remove(&rule.key())
            && !matches!(e, MapError::KeyNotFound)
        {
            warn!(error = %e, rule = %rule.name, "removing a half-added rule");
        }
    }
    for rule in previous.rules.values() {
        if let Err(e) = maps.rules.insert(rule.key(), rule.value(), 0) {
            warn!(error = %e, rule = %rule.name, "restoring a rule");
        }
    }
}

/// Zeroes a counter slot on every CPU, so that a reused id starts from 0.
fn reset_counters(maps: &mut Maps, id: u32) -> Result<()> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("counting possible CPUs")?;
    for c in 0..counter::COUNT {
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("building per-CPU zeros")?;
        maps.counters
            .set(id * counter::COUNT + c, zeros, 0)
            .with_context(|| format!("resetting counters of rule {id}"))?;
    }
    Ok(())
}

/// Makes `EGRESS` hold exactly the host's interfaces (but loopback), so that
/// the program can redirect to whichever one the FIB picks.
pub fn sync_egress(maps: &mut Maps) -> Result<()> {
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
    let present: BTreeSet<u32> = maps
        .egress
        .keys()
        .collect::<Result<_, _>>()
        .context("reading EGRESS")?;
    for gone in present.difference(&wanted) {
        match maps.egress.remove(*gone) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing ifindex {gone} from EGRESS"));
            }
        }
    }
    for &new in wanted.difference(&present) {
        // An interface that cannot transmit XDP frames is refused by the
        // kernel; the program then hands such packets to the stack.
        if let Err(e) = maps.egress.insert(new, new, None, 0) {
            debug!(ifindex = new, error = %e, "interface not usable for XDP_REDIRECT");
        }
    }
    Ok(())
}
