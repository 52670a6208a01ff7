//! What `RULES` and `SETTINGS` should hold for a given config, and the
//! difference from what they hold now. Pure: no maps, no syscalls, so that
//! reload semantics are unit-tested.
//!
//! A rule is one counter slot (its id) and one `RULES` entry per
//! (protocol, port) it redirects. Reload semantics, decided here:
//! - a rule keeps its id for as long as a rule of its name stays in the
//!   config, or, renamed, while it keeps one of its (protocol, OLD_IP:PORT),
//!   so its counters and its flows carry over;
//! - a changed `to`, port list or protocol list keeps the id; only the
//!   `RULES` entries change, so established flows keep their own rewrite
//!   and new connections go to the new destination;
//! - a removed rule's entries are deleted (new connections reach the old
//!   host's own stack) and its id *drains*: its flows stay until they
//!   expire, and the id is not handed to another rule while any of them is
//!   left, so the counters of two rules never mix.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cutover_workspace::{FULL_SHARE, Protocol, RedirectorConfig, Rule, describe};
use redirector_common::{
    Ip6, MAX_PORT_RETRIES, MAX_RULES, NatSettings, RuleKey, RuleValue, SHARE_ALL, mapped, unmapped,
};

/// One switched-on rule with the counter slot it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRule {
    /// Counter slot and `RuleValue::rule_id`, 1..=MAX_RULES.
    pub id: u32,
    pub name: String,
    /// OLD_IP.
    pub from: IpAddr,
    /// NEW_IP, of `from`'s family.
    pub to: IpAddr,
    /// (protocol, OLD port, NEW port): one `RULES` entry each.
    pub ports: BTreeSet<(Protocol, u16, u16)>,
    /// Percentage of client addresses redirected (see `Rule::share`).
    pub share: u8,
}

impl ActiveRule {
    /// `rule` under counter slot `id`.
    pub fn of(id: u32, rule: &Rule) -> Self {
        Self {
            id,
            name: rule.name.clone(),
            from: rule.from,
            to: rule.to,
            ports: rule
                .endpoints()
                .map(|e| (e.protocol, e.from.port(), e.to.port()))
                .collect(),
            share: rule.share,
        }
    }

    /// Its `RULES` entries.
    pub fn entries(&self) -> impl Iterator<Item = (RuleKey, RuleValue)> + '_ {
        self.ports.iter().map(|&(protocol, old, new)| {
            (
                rule_key(protocol, self.from, old),
                RuleValue {
                    new_addr: rule_addr(self.to),
                    new_port: new.to_be(),
                    share: share_value(self.share),
                    rule_id: self.id,
                },
            )
        })
    }

    /// `from` as the config writes it (see `cutover_workspace::describe`).
    pub fn from_text(&self) -> String {
        self.text(self.from, |&(_, old, _)| old)
    }

    pub fn to_text(&self) -> String {
        self.text(self.to, |&(_, _, new)| new)
    }

    /// One `describe` when every protocol has the same ports (always, for
    /// a rule from a config), else one per protocol.
    fn text(&self, ip: IpAddr, port: impl Fn(&(Protocol, u16, u16)) -> u16) -> String {
        let mut by_protocol: BTreeMap<Protocol, Vec<u16>> = BTreeMap::new();
        for p in &self.ports {
            by_protocol.entry(p.0).or_default().push(port(p));
        }
        let mut lists = by_protocol.values();
        let first = lists.next().cloned().unwrap_or_default();
        if lists.all(|l| *l == first) {
            let protocols: Vec<Protocol> = by_protocol.keys().copied().collect();
            return describe(ip, first.into_iter(), &protocols);
        }
        by_protocol
            .iter()
            .map(|(protocol, ports)| describe(ip, ports.iter().copied(), &[*protocol]))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `RuleValue::share` for a percentage of clients.
pub fn share_value(percent: u8) -> u16 {
    u16::from(percent.min(FULL_SHARE)) * (SHARE_ALL / u16::from(FULL_SHARE))
}

/// The percentage of clients a `RuleValue::share` redirects.
pub fn share_percent(value: u16) -> u8 {
    (value.min(SHARE_ALL) / (SHARE_ALL / u16::from(FULL_SHARE))) as u8
}

/// The rules and settings as they are in the kernel (after a plan is applied).
/// Invariant: ids are unique and in 1..=MAX_RULES; no two rules share a
/// `RULES` key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub settings: Option<NatSettings>,
    /// Keyed by name.
    pub rules: BTreeMap<String, ActiveRule>,
}

impl RuleSet {
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.rules.values().map(|r| r.id)
    }

    /// Every `RULES` entry, in rule-name order.
    pub fn entries(&self) -> impl Iterator<Item = (RuleKey, RuleValue)> + '_ {
        self.rules.values().flat_map(ActiveRule::entries)
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
    let entries: usize = cfg.rules.iter().map(|r| r.endpoints().count()).sum();
    if cfg.rules.len() > MAX_RULES as usize || entries > MAX_RULES as usize {
        return Err(TooManyRules {
            rules: cfg.rules.len(),
            entries,
        });
    }

    // Who is who: the same name first, then, for renamed rules, a shared
    // (protocol, OLD_IP:PORT).
    let mut kept: BTreeMap<String, &ActiveRule> = BTreeMap::new();
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    for rule in &cfg.rules {
        if let Some(old) = current.rules.get(&rule.name) {
            kept.insert(rule.name.clone(), old);
            claimed.insert(&old.name);
        }
    }
    for rule in &cfg.rules {
        if kept.contains_key(&rule.name) {
            continue;
        }
        let wanted: BTreeSet<(Protocol, u16)> = rule
            .endpoints()
            .map(|e| (e.protocol, e.from.port()))
            .collect();
        let renamed = current.rules.values().find(|old| {
            !claimed.contains(old.name.as_str())
                && old.from == rule.from
                && old
                    .ports
                    .iter()
                    .any(|&(p, port, _)| wanted.contains(&(p, port)))
        });
        if let Some(old) = renamed {
            kept.insert(rule.name.clone(), old);
            claimed.insert(&old.name);
        }
    }
    let removed: Vec<ActiveRule> = current
        .rules
        .values()
        .filter(|r| !claimed.contains(r.name.as_str()))
        .cloned()
        .collect();

    let mut next = RuleSet {
        settings: Some(nat_settings(cfg)),
        rules: BTreeMap::new(),
    };
    let mut ids = IdAllocator::new(
        kept.values().map(|r| r.id).collect(),
        draining,
        removed.iter().map(|r| r.id).collect(),
    );
    let mut fresh_ids = Vec::new();
    // File order, so that a fresh workspace numbers its rules 1, 2, 3...
    for rule in &cfg.rules {
        let id = match kept.get(&rule.name) {
            Some(old) => old.id,
            None => {
                let id = ids.take().ok_or(TooManyRules {
                    rules: cfg.rules.len(),
                    entries,
                })?;
                fresh_ids.push(id);
                id
            }
        };
        next.rules
            .insert(rule.name.clone(), ActiveRule::of(id, rule));
    }

    let before: HashMap<RuleKey, RuleValue> = current.entries().collect();
    let after: HashMap<RuleKey, RuleValue> = next.entries().collect();
    let upserts = next
        .entries()
        .filter(|(k, v)| before.get(k) != Some(v))
        .collect();
    let removes = current
        .entries()
        .map(|(k, _)| k)
        .filter(|k| !after.contains_key(k))
        .collect();
    let settings = (current.settings != next.settings)
        .then_some(next.settings)
        .flatten();
    Ok(Plan {
        next,
        settings,
        fresh_ids,
        upserts,
        removes,
        removed,
    })
}

/// More rules, or more (rule, protocol, port) entries, than the program's
/// maps hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRules {
    pub rules: usize,
    pub entries: usize,
}

impl std::fmt::Display for TooManyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rules redirecting {} (protocol, port) pairs, but the XDP program holds at most \
             {MAX_RULES} of each",
            self.rules, self.entries
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

/// `RULES` key for a protocol on OLD_IP:PORT.
pub fn rule_key(protocol: Protocol, ip: IpAddr, port: u16) -> RuleKey {
    RuleKey {
        addr: rule_addr(ip),
        port: port.to_be(),
        proto: protocol.number(),
        _pad: 0,
    }
}

/// An IPv4 address as the program sees it in a packet: network order in
/// memory.
pub fn ip_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The reverse of [`ip_be`].
pub fn ip_from_be(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr.to_ne_bytes())
}

/// An IPv6 address as the program sees it: four words in network order.
pub fn ip6_be(ip: Ipv6Addr) -> Ip6 {
    let o = ip.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// The reverse of [`ip6_be`].
pub fn ip6_from_be(addr: Ip6) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in addr.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

/// An address as `RULES` keeps it: IPv6, or IPv4 in its mapped form.
pub fn rule_addr(ip: IpAddr) -> Ip6 {
    match ip {
        IpAddr::V4(v4) => mapped(ip_be(v4)),
        IpAddr::V6(v6) => ip6_be(v6),
    }
}

/// The reverse of [`rule_addr`].
pub fn from_rule_addr(addr: Ip6) -> IpAddr {
    match unmapped(addr) {
        Some(v4) => IpAddr::V4(ip_from_be(v4)),
        None => IpAddr::V6(ip6_from_be(addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_workspace::{NatConfig, Timeouts};
    use redirector_common::{IPPROTO_TCP, IPPROTO_UDP};
    use std::net::SocketAddr;

    /// A `RULES` address as the bytes the program compares.
    fn bytes(a: Ip6) -> Vec<u8> {
        a.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn ipv6_keys_are_the_address_as_is_and_ipv4_keys_are_mapped() {
        let v6: Ipv6Addr = "2001:2::2".parse().unwrap();
        let k = rule_key(Protocol::Udp, v6.into(), 443);
        assert_eq!(bytes(k.addr), v6.octets());
        assert_eq!(k.proto, IPPROTO_UDP);
        assert_eq!(from_rule_addr(k.addr), IpAddr::V6(v6));
        let v4 = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(from_rule_addr(rule_addr(v4.into())), IpAddr::V4(v4));
    }

    /// TCP rules (name, OLD_IP:PORT, NEW_IP:PORT).
    fn cfg(rules: &[(&str, &str, &str)]) -> RedirectorConfig {
        RedirectorConfig {
            nat: NatConfig::default(),
            timeouts: Timeouts::default(),
            rules: rules
                .iter()
                .map(|(name, from, to)| {
                    let from: SocketAddr = from.parse().unwrap();
                    let to: SocketAddr = to.parse().unwrap();
                    Rule {
                        name: name.to_string(),
                        from: from.ip(),
                        to: to.ip(),
                        ports: vec![(from.port(), to.port())],
                        protocols: vec![Protocol::Tcp],
                        share: FULL_SHARE,
                    }
                })
                .collect(),
        }
    }

    fn tcp_key(from: &str) -> RuleKey {
        let from: SocketAddr = from.parse().unwrap();
        rule_key(Protocol::Tcp, from.ip(), from.port())
    }

    fn apply(current: &RuleSet, c: &RedirectorConfig) -> Plan {
        plan(current, c, &BTreeSet::new()).unwrap()
    }

    fn id_of(set: &RuleSet, from: &str) -> u32 {
        set.rules
            .values()
            .find(|r| r.from_text() == from)
            .unwrap_or_else(|| panic!("no rule from {from}"))
            .id
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
    fn a_changed_share_keeps_the_rule_and_rewrites_only_its_entries() {
        let rules = [
            ("www", "198.18.0.2:80", "198.18.0.3:80"),
            ("tls", "198.18.0.2:443", "198.18.0.3:443"),
        ];
        let first = apply(&RuleSet::default(), &cfg(&rules));
        assert!(first.upserts.iter().all(|(_, v)| v.share == SHARE_ALL));
        let mut shifted = cfg(&rules);
        shifted.rules[1].share = 30;
        let p = apply(&first.next, &shifted);
        assert!(p.fresh_ids.is_empty() && p.removes.is_empty() && p.removed.is_empty());
        assert_eq!(p.upserts.len(), 1, "{:?}", p.upserts);
        assert_eq!(p.upserts[0].1.share, 3_000);
        assert_eq!(p.upserts[0].1.rule_id, id_of(&first.next, "198.18.0.2:443"));
        assert_eq!(share_percent(share_value(30)), 30);
        assert_eq!(share_value(FULL_SHARE), SHARE_ALL);
    }

    #[test]
    fn keys_and_values_are_in_network_order() {
        let p = apply(
            &RuleSet::default(),
            &cfg(&[("www", "198.18.0.2:80", "198.18.0.3:8080")]),
        );
        let (k, v) = p.upserts[0];
        assert_eq!(
            bytes(k.addr),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2]
        );
        assert_eq!(k.port.to_ne_bytes(), 80u16.to_be_bytes());
        assert_eq!(k.proto, IPPROTO_TCP);
        assert_eq!(from_rule_addr(v.new_addr), Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(v.new_port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(v.rule_id, 1);
        assert_eq!(
            from_rule_addr(v.new_addr),
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
        assert_eq!(second.removes, [tcp_key("198.18.0.2:80")]);
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
        assert_eq!(
            from_rule_addr(second.upserts[0].1.new_addr),
            Ipv4Addr::new(198, 18, 0, 4)
        );
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
        assert_eq!(err.rules, MAX_RULES as usize + 1);

        // Few rules, but more entries than RULES holds.
        let mut wide = cfg(&[("wide", "198.18.0.2:1", "198.18.0.3:1")]);
        wide.rules[0].ports = (1..=MAX_RULES as u16 / 2 + 1).map(|p| (p, p)).collect();
        wide.rules[0].protocols = vec![Protocol::Tcp, Protocol::Udp];
        let err = plan(&RuleSet::default(), &wide, &BTreeSet::new()).unwrap_err();
        assert_eq!((err.rules, err.entries), (1, MAX_RULES as usize + 2));
    }

    fn site(ports: &[u16], protocols: &[Protocol], to: [u8; 4]) -> RedirectorConfig {
        let mut c = cfg(&[("site", "198.18.0.2:1", "198.18.0.3:1")]);
        c.rules[0].ports = ports.iter().map(|&p| (p, p)).collect();
        c.rules[0].protocols = protocols.to_vec();
        c.rules[0].to = Ipv4Addr::from(to).into();
        c
    }

    #[test]
    fn a_rule_with_several_ports_and_protocols_is_one_id_and_an_entry_each() {
        let both = [Protocol::Tcp, Protocol::Udp];
        let first = apply(
            &RuleSet::default(),
            &site(&[80, 443], &both, [198, 18, 0, 3]),
        );
        assert_eq!(first.fresh_ids, [1]);
        let mut keys: Vec<(u8, u16)> = first
            .upserts
            .iter()
            .map(|(k, v)| {
                assert_eq!(v.rule_id, 1);
                (k.proto, u16::from_be(k.port))
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                (IPPROTO_TCP, 80),
                (IPPROTO_TCP, 443),
                (IPPROTO_UDP, 80),
                (IPPROTO_UDP, 443)
            ]
        );
        let rule = &first.next.rules["site"];
        assert_eq!(rule.from_text(), "198.18.0.2:80,443/tcp+udp");
        assert_eq!(rule.to_text(), "198.18.0.3:80,443/tcp+udp");

        // Dropping UDP 80 and 443 deletes exactly their entries; the id stays.
        let tcp_only = apply(
            &first.next,
            &site(&[80, 443], &[Protocol::Tcp], [198, 18, 0, 3]),
        );
        assert!(tcp_only.upserts.is_empty() && tcp_only.fresh_ids.is_empty());
        let mut gone: Vec<(u8, u16)> = tcp_only
            .removes
            .iter()
            .map(|k| (k.proto, u16::from_be(k.port)))
            .collect();
        gone.sort_unstable();
        assert_eq!(gone, [(IPPROTO_UDP, 80), (IPPROTO_UDP, 443)]);

        // A new destination rewrites every entry, under the same id.
        let moved = apply(
            &tcp_only.next,
            &site(&[80, 443], &[Protocol::Tcp], [198, 18, 0, 4]),
        );
        assert_eq!(moved.upserts.len(), 2);
        assert!(moved.removes.is_empty());
        assert!(moved.upserts.iter().all(|(_, v)| v.rule_id == 1));
    }

    #[test]
    fn a_port_moving_from_one_rule_to_another_is_overwritten_not_deleted() {
        let mut c = cfg(&[
            ("a", "198.18.0.2:80", "198.18.0.3:80"),
            ("b", "198.18.0.2:81", "198.18.0.4:81"),
        ]);
        let first = apply(&RuleSet::default(), &c);
        // Port 80 goes to rule b: a's removal must not delete b's new entry.
        c.rules.remove(0);
        c.rules[0].ports = vec![(80, 80), (81, 81)];
        let second = apply(&first.next, &c);
        assert!(second.removes.is_empty(), "{:?}", second.removes);
        assert_eq!(second.upserts.len(), 1);
        assert_eq!(second.upserts[0].0, tcp_key("198.18.0.2:80"));
        assert_eq!(second.upserts[0].1.rule_id, 2);
        assert_eq!(second.removed.len(), 1);
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
