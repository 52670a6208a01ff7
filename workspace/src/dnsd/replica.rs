//! The `[[replica]]` entries of `dnsd.toml`: zones that another primary
//! owns and dnsd serves a copy of, kept by zone transfers.
//!
//! ```toml
//! [[replica]]
//! zone = "example.org."
//! primary = "198.18.0.60:53"      # port optional (53)
//! tsig_key = "xfr-key."           # optional: transfers and NOTIFYs signed with it
//! ```
//!
//! The copy is the zone's file, `zones/<zone>.zone`, written by dnsd (by
//! AXFR whole, by IXFR through the zone's journal) and served as any other;
//! when it was last refreshed from the primary is kept in
//! `.cutover/replicas/<zone>` so that the SOA's expire holds across
//! restarts. A replica zone is changed only by its primary: the API and
//! dynamic updates refuse it, and no `[[service]]` may live inside it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use super::fields::normalize_zone;
use super::transfer::{DNS_PORT, known_key};
use super::tsig_key::TsigKey;
use crate::problems::Problems;

/// A zone dnsd serves a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The zone (fully qualified, lower case).
    pub zone: String,
    /// Where it is transferred from; NOTIFY for it is accepted only from
    /// this address.
    pub primary: SocketAddr,
    /// The `[[tsig_key]]` its transfers, SOA queries and NOTIFYs are
    /// signed with.
    pub tsig_key: Option<String>,
    /// 1-based line of the `[[replica]]` entry.
    pub line: usize,
}

impl Replica {
    /// Whether a message from `ip` may come from this replica's primary.
    pub fn from_primary(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip == self.primary.ip()
    }
}

/// One `[[replica]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplica {
    zone: Spanned<String>,
    primary: Spanned<String>,
    tsig_key: Option<Spanned<String>>,
}

/// An address with an optional port (53): `198.18.0.60`,
/// `198.18.0.60:5300`, `[2001:2::60]:53`. `what` names its use in the
/// message of an address that is none.
pub(super) fn server_address(text: &str, what: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    match text.parse::<SocketAddr>().or_else(|_| {
        text.parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, DNS_PORT))
    }) {
        Ok(a) if a.ip().is_unspecified() || a.port() == 0 => {
            Err(format!("{a} is no address to {what}"))
        }
        Ok(a) => Ok(a),
        Err(_) => Err(format!(
            "{text:?} is not an address (198.18.0.54, 198.18.0.54:53, [2001:2::54]:53)"
        )),
    }
}

pub(super) fn parse(
    raw: &[Spanned<RawReplica>],
    keys: &[TsigKey],
    problems: &mut Problems<'_>,
) -> Vec<Replica> {
    let mut out = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let line = problems.line(r.span().start);
        let r = r.get_ref();
        let zone = match normalize_zone(r.zone.get_ref()) {
            Ok(z) => z,
            Err(m) => {
                problems.at(r.zone.span(), format!("replica[{i}].zone"), m);
                continue;
            }
        };
        if let Some(first) = seen.insert(zone.clone(), i) {
            problems.at(
                r.zone.span(),
                format!("replica[{i}].zone"),
                format!("{zone} is already replica[{first}]"),
            );
            continue;
        }
        let primary = match server_address(r.primary.get_ref(), "transfer from") {
            Ok(a) => a,
            Err(m) => {
                problems.at(r.primary.span(), format!("replica[{i}].primary"), m);
                continue;
            }
        };
        let tsig_key = match &r.tsig_key {
            Some(k) => match known_key(k, &format!("replica[{i}].tsig_key"), keys, problems) {
                Some(k) => Some(k),
                None => continue,
            },
            None => None,
        };
        out.push(Replica {
            zone,
            primary,
            tsig_key,
            line,
        });
    }
    out
}

/// Refuses every `[[service]]` whose name is inside a replica zone: its
/// records come from the primary, which dnsd cannot change.
pub(super) fn check_services(
    services: &[Spanned<super::service::RawService>],
    replicas: &[Replica],
    problems: &mut Problems<'_>,
) {
    for (i, s) in services.iter().enumerate() {
        let (span, written) = super::service::written_name(s.get_ref());
        let Ok(name) = super::fields::normalize_name(written) else {
            continue;
        };
        if let Some(r) = replicas.iter().find(|r| inside(&name, &r.zone)) {
            problems.at(
                span,
                format!("service[{i}].name"),
                format!(
                    "{name} is inside {}, a replica of {}: its records come from the primary",
                    r.zone, r.primary
                ),
            );
        }
    }
}

/// Whether `name` is `zone` or below it (both fully qualified, lower case).
pub(super) fn inside(name: &str, zone: &str) -> bool {
    zone == "."
        || name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{only_error, parse_str};

    const KEY: &str = "[[tsig_key]]\nname = \"xfr-key.\"\nalgorithm = \"hmac-sha256\"\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";

    #[test]
    fn replicas_parse_with_their_primary_and_key() {
        let cfg = parse_str(&format!(
            "{KEY}[[replica]]\nzone = \"Example.ORG\"\nprimary = \"198.18.0.60\"\ntsig_key = \"xfr-key\"\n\n\
             [[replica]]\nzone = \"other.test.\"\nprimary = \"[2001:2::60]:5300\"\n"
        ))
        .unwrap();
        let r = &cfg.replicas;
        assert_eq!(r[0].zone, "example.org.");
        assert_eq!(r[0].primary, "198.18.0.60:53".parse().unwrap());
        assert_eq!(r[0].tsig_key.as_deref(), Some("xfr-key."));
        assert_eq!(r[0].line, 5);
        assert!(r[0].from_primary("::ffff:198.18.0.60".parse().unwrap()));
        assert!(!r[0].from_primary("198.18.0.61".parse().unwrap()));
        assert_eq!(r[1].primary, "[2001:2::60]:5300".parse().unwrap());
        assert_eq!(cfg.replica("OTHER.test").map(|r| r.line), Some(10));
        assert!(cfg.replica("example.test.").is_none());
    }

    #[test]
    fn a_zone_twice_a_bad_primary_or_an_unknown_key_is_refused() {
        let (line, field, message) = only_error(
            "[[replica]]\nzone = \"a.test\"\nprimary = \"198.18.0.60\"\n\
             [[replica]]\nzone = \"A.test.\"\nprimary = \"198.18.0.61\"\n",
        );
        assert_eq!((line, field.as_str()), (5, "replica[1].zone"));
        assert!(message.contains("already replica[0]"), "{message}");
        let (_, field, message) =
            only_error("[[replica]]\nzone = \"a.test\"\nprimary = \"ns1.a.test\"\n");
        assert_eq!(field, "replica[0].primary");
        assert!(message.contains("is not an address"), "{message}");
        let (_, field, message) = only_error(
            "[[replica]]\nzone = \"a.test\"\nprimary = \"198.18.0.60\"\ntsig_key = \"k.\"\n",
        );
        assert_eq!(field, "replica[0].tsig_key");
        assert!(message.contains("not a [[tsig_key]]"), "{message}");
    }

    #[test]
    fn a_service_inside_a_replica_zone_is_refused() {
        let (line, field, message) = only_error(
            "[[service]]\nname = \"www.example.org\"\naddresses = [\"198.18.0.3\"]\nttl = 60\n\
             [[replica]]\nzone = \"example.org\"\nprimary = \"198.18.0.60\"\n",
        );
        assert_eq!((line, field.as_str()), (2, "service[0].name"));
        assert!(
            message.contains("inside example.org., a replica of 198.18.0.60:53"),
            "{message}"
        );
    }
}
