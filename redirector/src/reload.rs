//! Keeps the maps in step with the workspace: the first load, every SIGHUP,
//! and the draining of removed rules. A config that fails validation, or
//! that the maps cannot take, leaves the previous rules in force. The
//! workspace is read settled (`Workspace::settled`): never half a commit,
//! and an interrupted commit is finished, or its generation read from its
//! copy, first.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result, anyhow, bail};
use cutover_workspace::{
    ConfigErrors, Protocol, RedirectorConfig, Settlement, Timeouts, Workspace,
};
use tracing::{error, info, warn};

use crate::gc;
use crate::maps::Maps;
use crate::rules::{self, ActiveRule, RuleSet};
use crate::state::{RuleInfo, State};
use crate::sync;

/// The rules the daemon has put in the maps, and those still draining.
pub struct Rules {
    workspace: Workspace,
    /// The interfaces the program runs on (IPv6 rules need them prepared).
    ifaces: Vec<String>,
    current: RuleSet,
    /// The config in force; `current` is its image in the maps.
    config: RedirectorConfig,
    /// Removed rules whose flows were still in the table at the last
    /// collection pass, by id.
    draining: BTreeMap<u32, RuleInfo>,
}

/// Validates the workspace's `redirector.toml`, turning every error (each
/// naming file, line and field) into one message.
pub fn load_config(workspace: &Workspace) -> Result<RedirectorConfig> {
    read_settled(workspace)
        .map_err(|errors| anyhow!("the workspace is invalid:\n{}", indent(&errors)))
}

/// `redirector.toml` as it is settled (see the module doc), with what
/// settling it did logged.
fn read_settled(workspace: &Workspace) -> Result<RedirectorConfig, ConfigErrors> {
    let settled = workspace.settled();
    match settled.settlement() {
        Settlement::Live => {}
        Settlement::Finished(_) => {
            info!(workspace = %workspace.root().display(), "{}", settled.settlement())
        }
        _ => warn!(workspace = %workspace.root().display(), "{}", settled.settlement()),
    }
    settled.workspace().load_redirector()
}

fn indent(errors: &ConfigErrors) -> String {
    errors
        .0
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Rules {
    /// Applies a first, already validated config.
    pub fn start(
        workspace: Workspace,
        ifaces: &[String],
        cfg: &RedirectorConfig,
        maps: &mut Maps,
    ) -> Result<Self> {
        let mut rules = Self {
            workspace,
            ifaces: ifaces.to_vec(),
            current: RuleSet::default(),
            config: cfg.clone(),
            draining: BTreeMap::new(),
        };
        rules.apply(cfg, maps)?;
        Ok(rules)
    }

    /// Takes over the rules an earlier daemon left in the maps it pinned
    /// (named as its state file `previous` names them), then applies `cfg`
    /// as a reload would: a rule whose name (or one of whose OLD_IP:PORT) is
    /// unchanged keeps its id and counters, a removed one drains. Rule ids that flows in the tables
    /// still count under, but that no rule holds, drain too, so that no new
    /// rule mixes its counters with them.
    pub fn adopt(
        workspace: Workspace,
        ifaces: &[String],
        cfg: &RedirectorConfig,
        maps: &mut Maps,
        previous: Option<&State>,
    ) -> Result<Self> {
        let known: BTreeMap<u32, &RuleInfo> = previous
            .map(|p| p.rules.iter().map(|r| (r.id, r)).collect())
            .unwrap_or_default();
        let name_of = |id: u32| {
            known
                .get(&id)
                .map_or_else(|| format!("rule {id}"), |r| r.name.clone())
        };
        let mut current = RuleSet {
            settings: maps.settings.get(&0, 0).ok(),
            rules: BTreeMap::new(),
        };
        let mut by_id: BTreeMap<u32, ActiveRule> = BTreeMap::new();
        for entry in maps.rules.iter() {
            let (key, value) = entry.context("reading the pinned RULES")?;
            let Some(protocol) = Protocol::from_number(key.proto) else {
                continue;
            };
            let id = value.rule_id;
            let rule = by_id.entry(id).or_insert_with(|| ActiveRule {
                id,
                name: name_of(id),
                from: rules::from_rule_addr(key.addr),
                to: rules::from_rule_addr(value.new_addr),
                ports: BTreeSet::new(),
                share: rules::share_percent(value.share),
            });
            rule.ports.insert((
                protocol,
                u16::from_be(key.port),
                u16::from_be(value.new_port),
            ));
        }
        current.rules = by_id.into_values().map(|r| (r.name.clone(), r)).collect();
        let mut in_flight =
            gc::collect(&mut maps.flows, &cfg.timeouts).context("reading the pinned FLOWS")?;
        in_flight.merge(
            gc::collect(&mut maps.embryos, &cfg.timeouts).context("reading the pinned EMBRYOS")?,
        );
        in_flight.merge(
            gc::collect(&mut maps.flows6, &cfg.timeouts).context("reading the pinned FLOWS6")?,
        );
        in_flight.merge(
            gc::collect(&mut maps.embryos6, &cfg.timeouts)
                .context("reading the pinned EMBRYOS6")?,
        );
        let held: BTreeSet<u32> = current.ids().collect();
        let draining = in_flight
            .active
            .keys()
            .filter(|id| !held.contains(id))
            .map(|&id| {
                let info = known.get(&id).map_or_else(
                    || RuleInfo {
                        id,
                        name: name_of(id),
                        from: "?".into(),
                        to: "?".into(),
                        draining: true,
                        endpoints: Vec::new(),
                        share: cutover_workspace::FULL_SHARE,
                    },
                    |&r| RuleInfo {
                        draining: true,
                        ..r.clone()
                    },
                );
                (id, info)
            })
            .collect();
        info!(
            rules = current.rules.len(),
            connections = in_flight.open,
            "took over the rules and connections the earlier daemon left in the maps"
        );
        let mut rules = Self {
            workspace,
            ifaces: ifaces.to_vec(),
            current,
            config: cfg.clone(),
            draining,
        };
        rules.apply(cfg, maps)?;
        Ok(rules)
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.config.timeouts
    }

    /// Removes every rule, as a config without rules would: new connections
    /// reach this host's own stack, existing flows drain.
    pub fn switch_off(&mut self, maps: &mut Maps) -> Result<()> {
        let mut cfg = self.config.clone();
        cfg.rules.clear();
        self.apply(&cfg, maps)
    }

    pub fn current(&self) -> &RuleSet {
        &self.current
    }

    /// SIGHUP: re-reads the workspace. `Ok` once the new config is in
    /// force; on failure every error is logged, returned (one per line) and
    /// nothing changes.
    pub fn reload(&mut self, maps: &mut Maps) -> Result<(), String> {
        let cfg = match read_settled(&self.workspace) {
            Ok(cfg) => cfg,
            Err(errors) => {
                for e in &errors.0 {
                    error!("{e}");
                }
                error!(
                    errors = errors.0.len(),
                    "reload rejected: the previous rules stay in force"
                );
                return Err(format!("{errors}\nthe previous rules stay in force"));
            }
        };
        self.apply(&cfg, maps).map_err(|e| {
            error!(
                "reload failed: {e:#}; the previous rules stay in force as far as the maps allow"
            );
            format!("{e:#}; the previous rules stay in force as far as the maps allow")
        })
    }

    fn apply(&mut self, cfg: &RedirectorConfig, maps: &mut Maps) -> Result<()> {
        // Packets translated to one of this host's own addresses would be
        // delivered here, not forwarded: the old host would answer its own
        // redirect.
        for r in &cfg.rules {
            if crate::host::is_local(r.to) {
                bail!(
                    "rule {}: `to` {} is an address of this host; a redirect must lead to another host",
                    r.name,
                    r.to_text()
                );
            }
        }
        // Only now: the IPv6 settings change how the whole host treats
        // router advertisements (see `host`), which an IPv4-only redirector
        // has no business doing.
        if cfg.rules.iter().any(|r| r.from.is_ipv6()) {
            crate::host::prepare_ipv6(&self.ifaces)
                .context("preparing the host to forward IPv6")?;
        }
        let draining = self.draining.keys().copied().collect();
        let plan = rules::plan(&self.current, cfg, &draining).with_context(|| {
            format!(
                "planning the rules of {}",
                self.workspace.redirector_path().display()
            )
        })?;
        if let Err(e) = sync::apply(maps.rule_maps(), &plan) {
            // Part of the plan may be in the maps: put the previous rules
            // back so that the maps and `current` agree again.
            sync::restore(maps.rule_maps(), &self.current, &plan.next);
            return Err(e);
        }
        for r in plan.removed.iter() {
            info!(rule = %r.name, from = %r.from_text(), "rule removed: new connections reach this host; its flows drain");
            self.draining.insert(r.id, info_of(r, true));
        }
        for id in &plan.fresh_ids {
            self.draining.remove(id);
        }
        let before: BTreeMap<u32, &ActiveRule> =
            self.current.rules.values().map(|r| (r.id, r)).collect();
        for r in plan.next.rules.values() {
            let (from, to) = (r.from_text(), r.to_text());
            // A fresh id may be a removed rule's, reused: still a new rule.
            let old = before
                .get(&r.id)
                .filter(|_| !plan.fresh_ids.contains(&r.id));
            match old {
                None => {
                    info!(rule = %r.name, id = r.id, %from, %to, "rule added");
                    if !crate::host::is_local(r.from) {
                        warn!(rule = %r.name, %from, "{} is not an address of this host: the rule sees no traffic until it is", r.from);
                    }
                    warn_if_unroutable(r);
                }
                Some(old) if old.to != r.to || old.ports != r.ports => {
                    info!(rule = %r.name, %from, was = %old.to_text(), %to, "rule changed: new connections go to the new destination");
                    warn_if_unroutable(r);
                }
                Some(_) => {}
            }
        }
        crate::host::warm_neighbours(plan.next.rules.values().map(|r| r.to));
        self.config = cfg.clone();
        self.current = plan.next;
        info!(
            rules = self.current.rules.len(),
            draining = self.draining.len(),
            "rules in force"
        );
        Ok(())
    }

    /// Ends the draining of removed rules that have no flow left.
    pub fn after_collection(&mut self, report: &gc::Report) {
        self.draining.retain(|id, rule| {
            let left = report.active.get(id).copied().unwrap_or(0);
            if left == 0 {
                info!(rule = %rule.name, "the removed rule's last flow is gone");
            }
            left > 0
        });
    }

    /// The rules for the state file, active ones first.
    pub fn infos(&self) -> Vec<RuleInfo> {
        let active = self.current.rules.values().map(|r| info_of(r, false));
        let draining = self.draining.values().cloned();
        let mut all: Vec<RuleInfo> = active.chain(draining).collect();
        all.sort_by_key(|r| (r.draining, r.id));
        all
    }

    /// Fills the rule part of the state file.
    pub fn fill_state(&self, state: &mut State) {
        state.rules = self.infos();
    }
}

/// The program leaves a new connection to the old host when its `to` has
/// no route (`pass_no_route`): worth saying when the rule goes in rather
/// than finding out from the counters.
fn warn_if_unroutable(r: &ActiveRule) {
    if let Some(why) = crate::host::no_route(r.to) {
        warn!(
            rule = %r.name,
            to = %r.to,
            "this host has no route to {} ({why}): new connections stay with this host until it has one",
            r.to
        );
    }
}

fn info_of(r: &ActiveRule, draining: bool) -> RuleInfo {
    RuleInfo {
        id: r.id,
        name: r.name.clone(),
        from: r.from_text(),
        to: r.to_text(),
        draining,
        share: r.share,
        endpoints: r
            .ports
            .iter()
            .map(
                |&(protocol, old, new)| cutover_control_api::contract::RuleEndpoint {
                    proto: match protocol {
                        Protocol::Tcp => cutover_control_api::contract::Proto::Tcp,
                        Protocol::Udp => cutover_control_api::contract::Proto::Udp,
                    },
                    from: std::net::SocketAddr::new(r.from, old).to_string(),
                    to: std::net::SocketAddr::new(r.to, new).to_string(),
                },
            )
            .collect(),
    }
}
