//! `redirector.toml`: which connections the old host forwards, and how.
//!
//! ```toml
//! [nat]
//! port_range = [1024, 32767]    # source ports used when the client's is taken
//! port_retries = 16             # ports tried in that range (from a random one on)
//!
//! [timeouts]                    # seconds a flow may stay idle
//! syn = 60                      # handshake not finished
//! established = 7200
//! closing = 10                  # after FIN or RST
//!
//! [[rule]]
//! name = "www"                  # optional, shown by `redirector stats`
//! from = "198.18.0.2:80"        # OLD_IP:PORT, an address of this host
//! to = "198.18.0.3:80"          # NEW_IP:PORT
//! ```

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::problems::Problems;
use crate::{ConfigErrors, toml_file};

/// A validated `redirector.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedirectorConfig {
    pub nat: NatConfig,
    pub timeouts: Timeouts,
    /// Rules in file order; `from` is unique among them.
    pub rules: Vec<Rule>,
}

/// One redirect: new TCP connections to `from` are forwarded to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The operator's name for the rule (defaults to `from`).
    pub name: String,
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
}

/// The `[nat]` section: the source ports the old host picks from when a
/// client's own port is taken towards NEW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatConfig {
    /// Inclusive range of source ports the old host may use towards NEW.
    pub port_min: u16,
    pub port_max: u16,
    /// Random tries in the range before a new connection is refused a port.
    pub port_retries: u8,
}

impl Default for NatConfig {
    fn default() -> Self {
        // Below Linux's default ephemeral range (32768-60999), so that NAT
        // ports do not collide with the old host's own outgoing connections.
        Self {
            port_min: 1024,
            port_max: 32767,
            port_retries: 16,
        }
    }
}

/// Idle times after which user space removes a flow, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub syn: u64,
    pub established: u64,
    pub closing: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            syn: 60,
            established: 7200,
            closing: 10,
        }
    }
}

/// Upper bound on `nat.port_retries`: each retry is a map update in the XDP
/// program's SYN path, whose loop the verifier must be able to bound.
pub const MAX_PORT_RETRIES: u8 = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    nat: Option<Spanned<RawNat>>,
    #[serde(default)]
    timeouts: Option<Spanned<Timeouts>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNat {
    port_range: Option<Spanned<[u16; 2]>>,
    port_retries: Option<Spanned<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    from: Spanned<String>,
    to: Spanned<String>,
}

pub(crate) fn parse(path: &Path, source: &str) -> Result<RedirectorConfig, ConfigErrors> {
    let raw: RawFile = toml_file::parse(path, source)?;
    let mut problems = Problems::new(path, source);

    let mut nat = NatConfig::default();
    if let Some(raw_nat) = raw.nat {
        let raw_nat = raw_nat.into_inner();
        if let Some(range) = raw_nat.port_range {
            let [lo, hi] = *range.get_ref();
            if lo == 0 || lo > hi {
                problems.at(
                    range.span(),
                    "nat.port_range",
                    format!(
                        "[{lo}, {hi}] is not a range of ports: write [LOW, HIGH] with 1 <= LOW <= HIGH"
                    ),
                );
            }
            nat.port_min = lo;
            nat.port_max = hi;
        }
        if let Some(retries) = raw_nat.port_retries {
            let n = *retries.get_ref();
            if n == 0 || n > MAX_PORT_RETRIES {
                problems.at(
                    retries.span(),
                    "nat.port_retries",
                    format!("{n} is out of range 1..={MAX_PORT_RETRIES}"),
                );
            }
            nat.port_retries = n;
        }
    }

    let mut timeouts = Timeouts::default();
    if let Some(t) = raw.timeouts {
        let span = t.span();
        timeouts = t.into_inner();
        for (name, value) in [
            ("syn", timeouts.syn),
            ("established", timeouts.established),
            ("closing", timeouts.closing),
        ] {
            if value == 0 {
                problems.at(
                    span.clone(),
                    format!("timeouts.{name}"),
                    "a timeout of 0 s would expire every flow at once",
                );
            }
        }
    }

    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut seen_from: HashMap<SocketAddrV4, usize> = HashMap::new();
    let mut seen_name: HashMap<String, usize> = HashMap::new();
    for (i, r) in raw.rule.iter().enumerate() {
        let from = parse_endpoint(r.from.get_ref());
        let to = parse_endpoint(r.to.get_ref());
        let (from, to) = match (from, to) {
            (Ok(from), Ok(to)) => (from, to),
            (from, to) => {
                if let Err(m) = from {
                    problems.at(r.from.span(), format!("rule[{i}].from"), m);
                }
                if let Err(m) = to {
                    problems.at(r.to.span(), format!("rule[{i}].to"), m);
                }
                continue;
            }
        };
        if from == to {
            problems.at(
                r.to.span(),
                format!("rule[{i}].to"),
                format!("{to} redirects to itself"),
            );
            continue;
        }
        let ip = to.ip();
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            problems.at(
                r.to.span(),
                format!("rule[{i}].to"),
                format!(
                    "{ip} is not the address of a host to forward to: use NEW's unicast address"
                ),
            );
            continue;
        }
        if let Some(first) = seen_from.insert(from, i) {
            problems.at(
                r.from.span(),
                format!("rule[{i}].from"),
                format!(
                    "{from} already has a rule (rule[{first}]): one OLD_IP:PORT goes to one place"
                ),
            );
            continue;
        }
        let name = match &r.name {
            Some(n) => {
                let name = n.get_ref().trim().to_string();
                if name.is_empty() {
                    problems.at(n.span(), format!("rule[{i}].name"), "the name is empty");
                    continue;
                }
                if let Some(first) = seen_name.insert(name.clone(), i) {
                    problems.at(
                        n.span(),
                        format!("rule[{i}].name"),
                        format!("the name {name:?} is already used by rule[{first}]"),
                    );
                    continue;
                }
                name
            }
            None => {
                // The default name is the `from` address, which another
                // rule may have taken as its explicit name.
                let name = from.to_string();
                if let Some(first) = seen_name.insert(name.clone(), i) {
                    problems.at(
                        r.from.span(),
                        format!("rule[{i}].from"),
                        format!(
                            "this rule's default name {name:?} is already the name of \
                             rule[{first}]: give one of them another `name`"
                        ),
                    );
                    continue;
                }
                name
            }
        };
        rules.push(Rule { name, from, to });
    }

    problems.into_result(RedirectorConfig {
        nat,
        timeouts,
        rules,
    })
}

fn parse_endpoint(s: &str) -> Result<SocketAddrV4, String> {
    let addr: std::net::SocketAddr = s.trim().parse().map_err(|_| {
        format!("{s:?} is not an address with a port: write IP:PORT, e.g. \"198.18.0.2:80\"")
    })?;
    match addr {
        std::net::SocketAddr::V4(v4) if v4.port() == 0 => {
            Err(format!("{s:?}: port 0 cannot be redirected"))
        }
        std::net::SocketAddr::V4(v4)
            if v4.ip().is_unspecified() || v4.ip().is_broadcast() || v4.ip().is_multicast() =>
        {
            Err(format!("{s:?} is not a unicast host address"))
        }
        std::net::SocketAddr::V4(v4) => Ok(v4),
        std::net::SocketAddr::V6(_) => Err(format!("{s:?}: IPv6 rules are not supported yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_to_that_cannot_be_forwarded_to_is_refused_naming_the_field() {
        for to in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
        ] {
            let text = format!("[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"{to}\"\n");
            let errors = parse_str(&text).unwrap_err();
            assert_eq!(errors.0.len(), 1, "{to}: {errors:?}");
            assert_eq!(errors.0[0].field.as_deref(), Some("rule[0].to"), "{to}");
        }
    }

    fn parse_str(s: &str) -> Result<RedirectorConfig, ConfigErrors> {
        parse(Path::new("ws/redirector.toml"), s)
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = parse_str(
            r#"
[nat]
port_range = [40000, 40999]
port_retries = 4

[timeouts]
syn = 5
established = 600
closing = 2

[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:8080"

[[rule]]
from = "198.18.0.2:443"
to = "198.18.0.3:443"
"#,
        )
        .unwrap();
        assert_eq!(cfg.nat.port_min, 40000);
        assert_eq!(cfg.nat.port_max, 40999);
        assert_eq!(cfg.nat.port_retries, 4);
        assert_eq!(cfg.timeouts.closing, 2);
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.rules[0].name, "www");
        assert_eq!(cfg.rules[0].to, "198.18.0.3:8080".parse().unwrap());
        assert_eq!(cfg.rules[1].name, "198.18.0.2:443");
    }

    #[test]
    fn an_empty_file_is_no_rules_with_defaults() {
        let cfg = parse_str("").unwrap();
        assert!(cfg.rules.is_empty());
        assert_eq!(cfg.nat, NatConfig::default());
    }

    #[test]
    fn a_bad_address_names_line_and_field() {
        let err = parse_str("[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.300:80\"\n")
            .unwrap_err();
        assert_eq!(err.0.len(), 1);
        let e = &err.0[0];
        assert_eq!(e.line, Some(3));
        assert_eq!(e.field.as_deref(), Some("rule[0].to"));
        assert!(e.to_string().starts_with("ws/redirector.toml:3:"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_rejected_with_its_name() {
        let err =
            parse_str("[[rule]]\nform = \"198.18.0.2:80\"\nto = \"198.18.0.3:80\"\n").unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.field.as_deref(), Some("form"));
        assert!(e.line.is_some());
    }

    #[test]
    fn a_missing_field_is_rejected() {
        let err = parse_str("[[rule]]\nfrom = \"198.18.0.2:80\"\n").unwrap_err();
        assert_eq!(err.0[0].field.as_deref(), Some("to"), "{err}");
    }

    #[test]
    fn a_syntax_error_has_a_position() {
        let err = parse_str("[[rule]\nfrom = 1\n").unwrap_err();
        assert_eq!(err.0[0].line, Some(1), "{err}");
    }

    #[test]
    fn duplicate_sources_and_names_are_rejected() {
        let err = parse_str(
            r#"
[[rule]]
name = "a"
from = "198.18.0.2:80"
to = "198.18.0.3:80"
[[rule]]
name = "a"
from = "198.18.0.2:81"
to = "198.18.0.3:80"
[[rule]]
from = "198.18.0.2:80"
to = "198.18.0.4:80"
"#,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().filter_map(|e| e.field.clone()).collect();
        assert_eq!(fields, ["rule[1].name", "rule[2].from"]);
    }

    #[test]
    fn a_default_name_cannot_clash_with_an_explicit_one() {
        // Either order: an API call naming a rule would otherwise edit both.
        for (first, second) in [
            (
                "name = \"198.18.0.2:81\"\nfrom = \"198.18.0.2:80\"",
                "from = \"198.18.0.2:81\"",
            ),
            (
                "from = \"198.18.0.2:81\"",
                "name = \"198.18.0.2:81\"\nfrom = \"198.18.0.2:80\"",
            ),
        ] {
            let text = format!(
                "[[rule]]\n{first}\nto = \"198.18.0.3:80\"\n[[rule]]\n{second}\nto = \"198.18.0.3:80\"\n"
            );
            let err = parse_str(&text).unwrap_err();
            assert_eq!(err.0.len(), 1, "{text}: {err}");
            assert!(err.0[0].to_string().contains("198.18.0.2:81"), "{err}");
        }
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = parse_str(
            r#"
[nat]
port_range = [3000, 2000]
port_retries = 200
[[rule]]
from = "198.18.0.2"
to = "[2001:2::1]:80"
"#,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().filter_map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            [
                "nat.port_range",
                "nat.port_retries",
                "rule[0].from",
                "rule[0].to"
            ]
        );
        assert!(err.to_string().contains("IPv6 rules are not supported yet"));
    }

    #[test]
    fn loops_zero_ports_and_zero_timeouts_are_rejected() {
        assert!(parse_str("[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.2:80\"\n").is_err());
        assert!(parse_str("[[rule]]\nfrom = \"198.18.0.2:0\"\nto = \"198.18.0.3:80\"\n").is_err());
        assert!(parse_str("[timeouts]\nsyn = 0\n").is_err());
    }
}
