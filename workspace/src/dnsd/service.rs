//! The `[[service]]` entries of `dnsd.toml`: names whose A and AAAA records
//! cutover manages, so that moving one never means editing a zone file.
//!
//! ```toml
//! [[service]]
//! name = "www.example.test."
//! addresses = ["198.18.0.3", "2001:2::3"]
//! ttl = 60
//! ```
//!
//! An address may also be written as a table, to weigh it, tie it to a
//! region of `[regions]`, or keep it as a backup, used only when no other
//! address is up; `[service.health]` (see `health`) says how addresses are
//! checked:
//!
//! ```toml
//! [[service]]
//! name = "www.example.test."
//! ttl = 60
//! addresses = [
//!   "198.18.0.3",                                      # weight 1, every region
//!   { address = "198.18.0.4", weight = 3, region = "eu" },
//!   { address = "198.18.0.5", backup = true },
//! ]
//! [service.health]
//! check = "http"
//! ```
//!
//! A service replaces the name's A/AAAA RRsets in the zone that contains it.
//! Dynamic updates (RFC 2136) of a service's A/AAAA records are refused: they
//! change with the API or this file.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::fields::unique_name;
use super::health::{self, HealthCheck, RawHealth};
use super::regions::Regions;
use crate::problems::Problems;

/// A shorthand for a name's address records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Fully qualified, lower case, ends with a dot.
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub ttl: u32,
    /// 1-based line of the `[[service]]` entry, for errors found later
    /// (for example a name outside every served zone).
    pub line: usize,
    /// The serial its zone had when dnsd's API last changed it: the zone
    /// is served with at least this SOA serial, so that a change of the
    /// service's addresses is a new serial to secondaries and resolvers
    /// (the zone's file does not change). Written by dnsd.
    pub serial: Option<u32>,
    /// How each address of `addresses` is used, in the same order.
    pub members: Vec<Member>,
    /// `None`: every address is taken to be up.
    pub health: Option<HealthCheck>,
}

/// One address of a service and how it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub address: IpAddr,
    /// Its share of the answers among the addresses in use: weight / sum.
    pub weight: u32,
    /// Answered to clients of this region first (`[regions]`).
    pub region: Option<String>,
    /// Answered only when no address that is not a backup is up.
    pub backup: bool,
}

impl Member {
    fn plain(address: IpAddr) -> Self {
        Self {
            address,
            weight: 1,
            region: None,
            backup: false,
        }
    }
}

impl Service {
    /// Whether its answers depend on anything but the addresses: weights,
    /// regions, backups or a health check.
    pub fn is_steered(&self) -> bool {
        self.health.is_some()
            || self
                .members
                .iter()
                .any(|m| m.weight != 1 || m.region.is_some() || m.backup)
    }
}

/// The largest weight: the answers' shares are computed over sums of them.
pub const MAX_WEIGHT: u32 = 1000;

/// Upper bound on a service TTL: RFC 2181 §8 caps TTLs at 2^31 - 1, and a
/// record meant to move should never be cached for more than a week.
pub const MAX_SERVICE_TTL: u32 = 7 * 24 * 3600;

/// One entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<toml::Value>>>,
    ttl: Spanned<u32>,
    serial: Option<u32>,
    health: Option<RawHealth>,
}

/// Where the name of `raw` is written, and the name as written.
pub(super) fn written_name(raw: &RawService) -> (std::ops::Range<usize>, &str) {
    (raw.name.span(), raw.name.get_ref())
}

/// The services in file order. An entry whose name is bad or already taken
/// is reported and left out, its other fields unchecked.
pub(super) fn parse(
    raw: &[Spanned<RawService>],
    regions: &Regions,
    problems: &mut Problems<'_>,
) -> Vec<Service> {
    let mut services = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.iter().enumerate() {
        let line = problems.line(s.span().start);
        let s = s.get_ref();
        let Some(name) = unique_name(&s.name, "service", i, &mut seen, problems) else {
            continue;
        };
        let members = members(&s.addresses, i, regions, problems);
        let addresses = members.iter().map(|m| m.address).collect();
        let health = s
            .health
            .as_ref()
            .and_then(|h| health::parse(h, i, problems));
        let ttl = *s.ttl.get_ref();
        if ttl > MAX_SERVICE_TTL {
            problems.at(
                s.ttl.span(),
                format!("service[{i}].ttl"),
                format!("{ttl} s is above the limit of {MAX_SERVICE_TTL} s"),
            );
        }
        services.push(Service {
            name,
            addresses,
            ttl,
            line,
            serial: s.serial,
            members,
            health,
        });
    }
    services
}

/// The addresses of service `i`, each a string or a table; an address that
/// does not parse, or is listed twice, is reported at its index.
fn members(
    list: &Spanned<Vec<Spanned<toml::Value>>>,
    i: usize,
    regions: &Regions,
    problems: &mut Problems<'_>,
) -> Vec<Member> {
    let field = format!("service[{i}].addresses");
    if list.get_ref().is_empty() {
        problems.at(list.span(), &field, "a service needs at least one address");
    }
    let mut members: Vec<Member> = Vec::new();
    for (j, item) in list.get_ref().iter().enumerate() {
        let here = format!("{field}[{j}]");
        let Some(member) = member(item.get_ref(), regions)
            .map_err(|m| problems.at(item.span(), &here, m))
            .ok()
        else {
            continue;
        };
        if members.iter().any(|m| m.address == member.address) {
            problems.at(
                item.span(),
                here,
                format!("{} is listed twice", member.address),
            );
            continue;
        }
        members.push(member);
    }
    members
}

fn member(value: &toml::Value, regions: &Regions) -> Result<Member, String> {
    let address = |text: &str| {
        text.trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address"))
    };
    let table = match value {
        toml::Value::String(text) => return address(text).map(Member::plain),
        toml::Value::Table(t) => t,
        _ => return Err("an address: \"198.18.0.3\", or { address = \"198.18.0.3\", weight = 3, region = \"eu\", backup = false }".into()),
    };
    let mut member = match table.get("address") {
        Some(toml::Value::String(text)) => Member::plain(address(text)?),
        _ => return Err("the table needs `address = \"IP\"`".into()),
    };
    for (key, value) in table {
        match (key.as_str(), value) {
            ("address", _) => {}
            ("weight", toml::Value::Integer(w)) if (0..=i64::from(MAX_WEIGHT)).contains(w) => {
                member.weight = *w as u32
            }
            ("weight", _) => {
                return Err(format!("`weight` is a whole number from 0 to {MAX_WEIGHT}"));
            }
            ("region", toml::Value::String(r)) if regions.names(r) => {
                member.region = Some(r.clone())
            }
            ("region", toml::Value::String(r)) => {
                return Err(format!("region {r:?} has no network in [regions]"));
            }
            ("region", _) => return Err("`region` is a name from [regions]".into()),
            ("backup", toml::Value::Boolean(b)) => member.backup = *b,
            ("backup", _) => return Err("`backup` is true or false".into()),
            (other, _) => {
                return Err(format!(
                    "unknown key `{other}`: an address takes `address`, `weight`, `region`, `backup`"
                ));
            }
        }
    }
    Ok(member)
}

#[cfg(test)]
mod tests {
    use crate::dnsd::tests::{lines_and_fields, only_error, parse_str};

    #[test]
    fn bad_services_name_line_and_field() {
        let err = parse_str(
            r#"[[service]]
name = "www.example.test."
addresses = ["198.18.0.3", "not-an-ip"]
ttl = 60

[[service]]
name = "www.EXAMPLE.test"
addresses = []
ttl = 99999999
"#,
        )
        .unwrap_err();
        let got = lines_and_fields(&err);
        assert_eq!(
            got,
            [
                (3, "service[0].addresses[1]".to_string()),
                (7, "service[1].name".to_string())
            ]
        );
    }

    #[test]
    fn empty_addresses_and_huge_ttls_are_rejected() {
        let err = parse_str("[[service]]\nname = \"a.test\"\naddresses = []\nttl = 99999999\n")
            .unwrap_err();
        let fields: Vec<_> = err.0.iter().filter_map(|e| e.field.clone()).collect();
        assert_eq!(fields, ["service[0].addresses", "service[0].ttl"]);
    }

    #[test]
    fn an_address_listed_twice_is_named_at_its_index() {
        let (line, field, message) = only_error(
            "[[service]]\nname = \"a.test\"\naddresses = [\"::1\", \" ::1\"]\nttl = 1\n",
        );
        assert_eq!((line, field.as_str()), (3, "service[0].addresses[1]"));
        assert_eq!(message, "::1 is listed twice");
    }

    const STEERED: &str = r#"
[regions]
"198.18.64.0/18" = "eu"

[[service]]
name = "www.example.test."
ttl = 60
addresses = [
  "198.18.0.3",
  { address = "198.18.0.4", weight = 3, region = "eu" },
  { address = "198.18.0.5", backup = true },
]
[service.health]
check = "http"
path = "/healthz"
interval = "2s"
timeout = "500ms"
fall = 2
degraded_ttl = 10
"#;

    #[test]
    fn addresses_take_weights_regions_and_backups_and_a_health_check() {
        use super::Member;
        use crate::dnsd::CheckKind;
        use std::time::Duration;
        let cfg = parse_str(STEERED).unwrap();
        let s = &cfg.services[0];
        assert_eq!(s.addresses.len(), 3);
        assert_eq!(
            s.members[1],
            Member {
                address: "198.18.0.4".parse().unwrap(),
                weight: 3,
                region: Some("eu".into()),
                backup: false
            }
        );
        assert!(s.members[2].backup && s.members[0].weight == 1);
        assert!(s.is_steered());
        let h = s.health.as_ref().unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                expect: (200, 399)
            }
        );
        assert_eq!((h.port, h.rise, h.fall), (80, 2, 2));
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        assert_eq!(h.degraded_ttl, Some(10));

        let plain =
            parse_str("[[service]]\nname = \"a.test\"\naddresses = [\"198.18.0.3\"]\nttl = 1\n")
                .unwrap();
        assert!(!plain.services[0].is_steered());
    }

    #[test]
    fn bad_members_and_checks_name_the_field() {
        let cases = [
            (
                "addresses = [{ address = \"198.18.0.4\", region = \"us\" }]",
                "service[0].addresses[0]",
                "region \"us\" has no network",
            ),
            (
                "addresses = [{ address = \"198.18.0.4\", weight = 5000 }]",
                "service[0].addresses[0]",
                "from 0 to 1000",
            ),
            (
                "addresses = [{ address = \"198.18.0.4\", colour = \"red\" }]",
                "service[0].addresses[0]",
                "unknown key `colour`",
            ),
            (
                "addresses = [{ weight = 2 }]",
                "service[0].addresses[0]",
                "needs `address",
            ),
            (
                "addresses = [\"198.18.0.4\"]\n[service.health]\ncheck = \"ping\"",
                "service[0].health.check",
                "not a check",
            ),
            (
                "addresses = [\"198.18.0.4\"]\n[service.health]\nport = 8080",
                "service[0].health.check",
                "missing",
            ),
            (
                "addresses = [\"198.18.0.4\"]\n[service.health]\ncheck = \"tcp\"\npath = \"/\"",
                "service[0].health.path",
                "only an http check",
            ),
            (
                "addresses = [\"198.18.0.4\"]\n[service.health]\ncheck = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                "service[0].health.timeout",
                "below the interval",
            ),
            (
                "addresses = [\"198.18.0.4\"]\n[service.health]\ncheck = \"http\"\ninterval = \"soon\"",
                "service[0].health.interval",
                "a duration",
            ),
            (
                "addresses = [\"198.18.0.4\"]\n[service.health]\ncheck = \"http\"\nexpect = \"2xx\"",
                "service[0].health.expect",
                "not an HTTP status",
            ),
        ];
        for (lines, want_field, want) in cases {
            let text = format!(
                "[regions]\n\"198.18.64.0/18\" = \"eu\"\n[[service]]\nname = \"a.test\"\nttl = 1\n{lines}\n"
            );
            let (_, field, message) = only_error(&text);
            assert_eq!(field, want_field, "{text}");
            assert!(message.contains(want), "{text}: {message}");
        }
    }
}
