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
//! A service replaces the name's A/AAAA RRsets in the zone that contains it.
//! Dynamic updates (RFC 2136) of a service's A/AAAA records are refused: they
//! change with the API or this file.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::fields::{distinct_values, unique_name};
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
}

/// Upper bound on a service TTL: RFC 2181 §8 caps TTLs at 2^31 - 1, and a
/// record meant to move should never be cached for more than a week.
pub const MAX_SERVICE_TTL: u32 = 7 * 24 * 3600;

/// One entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    ttl: Spanned<u32>,
    serial: Option<u32>,
}

/// Where the name of `raw` is written, and the name as written.
pub(super) fn written_name(raw: &RawService) -> (std::ops::Range<usize>, &str) {
    (raw.name.span(), raw.name.get_ref())
}

/// The services in file order. An entry whose name is bad or already taken
/// is reported and left out, its other fields unchecked.
pub(super) fn parse(raw: &[Spanned<RawService>], problems: &mut Problems<'_>) -> Vec<Service> {
    let mut services = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.iter().enumerate() {
        let line = problems.line(s.span().start);
        let s = s.get_ref();
        let Some(name) = unique_name(&s.name, "service", i, &mut seen, problems) else {
            continue;
        };
        let addresses = distinct_values(
            &s.addresses,
            &format!("service[{i}].addresses"),
            |a| {
                a.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))
            },
            "a service needs at least one address",
            problems,
        );
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
        });
    }
    services
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
}
