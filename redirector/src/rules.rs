//! What `RULES` and `SETTINGS` should hold for a given config, and the
//! difference from what they hold now. Pure: no maps, no syscalls, so that
//! reload semantics are unit-tested.
//!
//! Reload semantics, decided here:
//! - a rule keeps its id for as long as its `from` stays in the config, so its
//!   counters and its flows carry over;
//! - a changed `to` (or name) keeps the id; only the `RULES` value changes, so
//!   established flows keep their own rewrite and new connections go to the
//!   new destination;
//! - a removed rule's key is deleted (new connections reach the old host's own
//!   stack) and its id *drains*: its flows stay until they expire, and the id
//!   is not handed to another rule while any of them is left, so the counters
//!   of two rules never mix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;

use cutover_workspace::RedirectorConfig;
use redirector_common::{
    IPPROTO_TCP, MAX_PORT_RETRIES, MAX_RULES, NatSettings, RuleKey, RuleValue,
};

/// One switched-on rule with the counter slot it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRule {
    /// Counter slot and `RuleValue::rule_id`, 1..=MAX_RULES.
    pub id: u32,
    pub name: String,
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
}

impl ActiveRule {
    pub fn key(&self) -> RuleKey {
        rule_key(self.from)
    }

    pub fn value(&self) -> RuleValue {
        RuleValue {
            new_addr: addr_be(self.to),
            new_port: self.to.port().to_be(),
            _pad: 0,
            rule_id: self.id,
        }
    }
}

/// The rules and settings as they are in the kernel (after a plan is applied).
/// Invariant: ids are unique and in 1..=MAX_RULES.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub settings: Option<NatSettings>,
    /// Keyed by `from`: the identity of a rule across reloads.
    pub rules: BTreeMap<SocketAddrV4, ActiveRule>,
}

impl RuleSet {
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.rules.values().map(|r| r.id)
    }
}

/// The map updates that turn one `RuleSet` into the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The state once the plan is applied.
    pub next: RuleSet,
    /// `SETTINGS[0]`, when it changes.
    pub settings: Option<NatSettings>,
    /// Ids handed to rules that did not exist before: their counters are
    /// reset before the rule is inserted.
    pub fresh_ids: Vec<u32>,
    /// `RULES` inserts and overwrites.
    pub upserts: Vec<(RuleKey, RuleValue)>,
    /// `RULES` deletions.
    pub removes: Vec<RuleKey>,
    /// Rules that left the config; their ids start draining.
    pub removed: Vec<ActiveRule>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.settings.is_none()
            && self.upserts.is_empty()
            && self.removes.is_empty()
            && self.removed.is_empty()
    }
}

// The format accepts `nat.port_retries` up to its own limit; the program
// stops at its loop bound. Were the format's limit higher, a valid config
// would be cut short without a word.
const _: () = assert!(cutover_workspace::MAX_PORT_RETRIES as u32 <= MAX_PORT_RETRIES);

/// The program's NAT settings for a config, on this host (its own
/// ephemeral port range, read at every reload).
pub fn nat_settings(cfg: &RedirectorConfig) -> NatSettings {
    let (local_min, local_max) = crate::host::local_port_range().unwrap_or((0, 0));
    NatSettings {
        port_min: cfg.nat.port_min,
        port_max: cfg.nat.port_max,
        port_retries: u32::from(cfg.nat.port_retries),
        local_min,
        local_max,
    }
}

/// Computes the updates from `current` to `cfg`. `draining` are ids of
/// removed rules that still have flows; they are reused only when nothing
/// else is free.
pub fn plan(
    current: &RuleSet,
    cfg: &RedirectorConfig,
    draining: &BTreeSet<u32>,
) -> Result<Plan, TooManyRules> {
    if cfg.rules.len() > MAX_RULES as usize {
        return Err(TooManyRules(cfg.rules.len()));
    }
    let wanted: BTreeMap<SocketAddrV4, &cutover_workspace::Rule> =
        cfg.rules.iter().map(|r| (r.from, r)).collect();

    let mut next = RuleSet {
        settings: Some(nat_settings(cfg)),
        rules: BTreeMap::new(),
    };
    let mut upserts = Vec::new();
    let mut removed = Vec::new();
    for (from, old) in &current.rules {
        match wanted.get(from) {
            Some(rule) => {
                let kept = ActiveRule {
                    id: old.id,
                    name: rule.name.clone(),
                    from: *from,
                    to: rule.to,
                };
                if kept.to != old.to {
                    upserts.push((kept.key(), kept.value()));
                }
                next.rules.insert(*from, kept);
            }
            None => removed.push(old.clone()),
        }
    }

    let mut ids = IdAllocator::new(
        next.ids().collect(),
        draining,
        removed.iter().map(|r| r.id).collect(),
    );
    let mut fresh_ids = Vec::new();
    // File order, so that a fresh workspace numbers its rules 1, 2, 3...
    for rule in &cfg.rules {
        if next.rules.contains_key(&rule.from) {
            continue;
        }
        let id = ids.take().ok_or(TooManyRules(cfg.rules.len()))?;
        let added = ActiveRule {
            id,
            name: rule.name.clone(),
            from: rule.from,
            to: rule.to,
        };
        fresh_ids.push(id);
        upserts.push((added.key(), added.value()));
        next.rules.insert(rule.from, added);
    }

    let settings = (current.settings != next.settings)
        .then_some(next.settings)
        .flatten();
    Ok(Plan {
        removes: removed.iter().map(ActiveRule::key).collect(),
        next,
        settings,
        fresh_ids,
        upserts,
        removed,
    })
}

/// More rules than the program's `RULES` map holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRules(pub usize);

impl std::fmt::Display for TooManyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rules, but the XDP program holds at most {MAX_RULES}",
            self.0
        )
    }
}

impl std::error::Error for TooManyRules {}

/// Hands out the lowest free id, preferring ids no flow can still refer to.
struct IdAllocator {
    taken: BTreeSet<u32>,
    /// Ids with flows left, in the order they are to be reused when needed.
    fallback: Vec<u32>,
}

impl IdAllocator {
    fn new(taken: BTreeSet<u32>, draining: &BTreeSet<u32>, just_removed: Vec<u32>) -> Self {
        let mut fallback: Vec<u32> = draining.iter().copied().collect();
        fallback.extend(just_removed);
        fallback.retain(|id| !taken.contains(id));
        let mut taken = taken;
        taken.extend(fallback.iter().copied());
        Self { taken, fallback }
    }

    fn take(&mut self) -> Option<u32> {
        let id = match (1..=MAX_RULES).find(|id| !self.taken.contains(id)) {
            Some(id) => id,
            None if !self.fallback.is_empty() => self.fallback.remove(0),
            None => return None,
        };
        self.taken.insert(id);
        Some(id)
    }
}

/// `RULES` key for an OLD_IP:PORT.
pub fn rule_key(from: SocketAddrV4) -> RuleKey {
    RuleKey {
        addr: addr_be(from),
        port: from.port().to_be(),
        proto: IPPROTO_TCP,
        _pad: 0,
    }
}

/// An address as the program sees it in a packet: network order in memory.
pub fn addr_be(a: SocketAddrV4) -> u32 {
    u32::from_ne_bytes(a.ip().octets())
}

/// The reverse of [`addr_be`] for a bare address.
pub fn ip_from_be(addr: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(addr.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_workspace::{NatConfig, Rule, Timeouts};

    fn cfg(rules: &[(&str, &str, &str)]) -> RedirectorConfig {
        RedirectorConfig {
            nat: NatConfig::default(),
            timeouts: Timeouts::default(),
            rules: rules
                .iter()
                .map(|(name, from, to)| Rule {
                    name: name.to_string(),
                    from: from.parse().unwrap(),
                    to: to.parse().unwrap(),
                })
                .collect(),
        }
    }

    fn apply(current: &RuleSet, c: &RedirectorConfig) -> Plan {
        plan(current, c, &BTreeSet::new()).unwrap()
    }

    fn id_of(set: &RuleSet, from: &str) -> u32 {
        set.rules[&from.parse::<SocketAddrV4>().unwrap()].id
    }

    #[test]
    fn a_first_load_numbers_rules_in_file_order_and_sets_everything() {
        let p = apply(
            &RuleSet::default(),
            &cfg(&[
                ("www", "198.18.0.2:80", "198.18.0.3:80"),
                ("tls", "198.18.0.2:443", "198.18.0.3:443"),
            ]),
        );
        assert_eq!(id_of(&p.next, "198.18.0.2:80"), 1);
        assert_eq!(id_of(&p.next, "198.18.0.2:443"), 2);
        assert_eq!(p.fresh_ids, [1, 2]);
        assert_eq!(p.upserts.len(), 2);
        assert!(p.removes.is_empty());
        assert_eq!(p.settings, Some(nat_settings(&cfg(&[]))));
    }

    #[test]
    fn keys_and_values_are_in_network_order() {
        let p = apply(
            &RuleSet::default(),
            &cfg(&[("www", "198.18.0.2:80", "198.18.0.3:8080")]),
        );
        let (k, v) = p.upserts[0];
        assert_eq!(k.addr.to_ne_bytes(), [198, 18, 0, 2]);
        assert_eq!(k.port.to_ne_bytes(), 80u16.to_be_bytes());
        assert_eq!(k.proto, IPPROTO_TCP);
        assert_eq!(v.new_addr.to_ne_bytes(), [198, 18, 0, 3]);
        assert_eq!(v.new_port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(v.rule_id, 1);
        assert_eq!(
            ip_from_be(v.new_addr),
            std::net::Ipv4Addr::new(198, 18, 0, 3)
        );
    }

    #[test]
    fn reloading_the_same_config_changes_nothing() {
        let c = cfg(&[("www", "198.18.0.2:80", "198.18.0.3:80")]);
        let first = apply(&RuleSet::default(), &c);
        let again = apply(&first.next, &c);
        assert!(again.is_noop(), "{again:?}");
        assert_eq!(again.next, first.next);
    }

    #[test]
    fn an_unchanged_rule_keeps_its_id_when_others_come_and_go() {
        let first = apply(
            &RuleSet::default(),
            &cfg(&[
                ("a", "198.18.0.2:80", "198.18.0.3:80"),
                ("b", "198.18.0.2:81", "198.18.0.3:81"),
            ]),
        );
        // "a" goes, "c" arrives before "b" in the file.
        let second = apply(
            &first.next,
            &cfg(&[
                ("c", "198.18.0.2:82", "198.18.0.3:82"),
                ("b", "198.18.0.2:81", "198.18.0.3:81"),
            ]),
        );
        assert_eq!(id_of(&second.next, "198.18.0.2:81"), 2);
        assert_eq!(second.removes, [rule_key("198.18.0.2:80".parse().unwrap())]);
        assert_eq!(second.removed[0].id, 1);
        // Id 1 is draining (just removed), so "c" gets a never-used one.
        assert_eq!(id_of(&second.next, "198.18.0.2:82"), 3);
        assert_eq!(second.fresh_ids, [3]);
        assert_eq!(second.upserts.len(), 1);
    }

    #[test]
    fn a_changed_destination_keeps_the_id_and_overwrites_the_value() {
        let first = apply(
            &RuleSet::default(),
            &cfg(&[("www", "198.18.0.2:80", "198.18.0.3:80")]),
        );
        let second = apply(
            &first.next,
            &cfg(&[("www", "198.18.0.2:80", "198.18.0.4:80")]),
        );
        assert!(second.fresh_ids.is_empty());
        assert!(second.removes.is_empty());
        assert_eq!(second.upserts.len(), 1);
        assert_eq!(second.upserts[0].1.rule_id, 1);
        assert_eq!(second.upserts[0].1.new_addr.to_ne_bytes(), [198, 18, 0, 4]);
        assert!(second.settings.is_none());
    }

    #[test]
    fn a_renamed_rule_needs_no_map_update() {
        let first = apply(
            &RuleSet::default(),
            &cfg(&[("www", "198.18.0.2:80", "198.18.0.3:80")]),
        );
        let second = apply(
            &first.next,
            &cfg(&[("web", "198.18.0.2:80", "198.18.0.3:80")]),
        );
        assert!(second.upserts.is_empty() && second.removes.is_empty());
        assert_eq!(second.next.rules.values().next().unwrap().name, "web");
    }

    #[test]
    fn draining_ids_are_reused_only_when_nothing_else_is_free() {
        let draining: BTreeSet<u32> = [1].into();
        let p = plan(
            &RuleSet::default(),
            &cfg(&[("a", "198.18.0.2:80", "198.18.0.3:80")]),
            &draining,
        )
        .unwrap();
        assert_eq!(p.fresh_ids, [2]);

        let all_but_one: Vec<(String, String, String)> = (0..MAX_RULES)
            .map(|i| {
                (
                    format!("r{i}"),
                    format!("198.18.1.2:{}", 1000 + i),
                    "198.18.0.3:80".to_string(),
                )
            })
            .collect();
        let rules: Vec<(&str, &str, &str)> = all_but_one
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        let full = plan(&RuleSet::default(), &cfg(&rules), &draining).unwrap();
        let ids: BTreeSet<u32> = full.next.ids().collect();
        assert_eq!(ids.len(), MAX_RULES as usize);
        assert!(ids.contains(&1), "the draining id is the last resort");
    }

    #[test]
    fn too_many_rules_is_an_error_not_a_truncation() {
        let many: Vec<(String, String)> = (0..=MAX_RULES)
            .map(|i| (format!("198.18.1.2:{}", 1000 + i), format!("r{i}")))
            .collect();
        let rules: Vec<(&str, &str, &str)> = many
            .iter()
            .map(|(from, name)| (name.as_str(), from.as_str(), "198.18.0.3:80"))
            .collect();
        let err = plan(&RuleSet::default(), &cfg(&rules), &BTreeSet::new()).unwrap_err();
        assert_eq!(err, TooManyRules(MAX_RULES as usize + 1));
    }

    #[test]
    fn changed_nat_settings_are_written_once() {
        let mut c = cfg(&[]);
        let first = apply(&RuleSet::default(), &c);
        assert!(first.settings.is_some());
        c.nat.port_min = 30000;
        let second = apply(&first.next, &c);
        assert_eq!(second.settings.map(|s| s.port_min), Some(30000));
        assert!(apply(&second.next, &c).settings.is_none());
    }
}
