//! `redirector.toml`: which connections the old host forwards, and how.
//!
//! ```toml
//! [nat]
//! port_range = [1024, 32767]    # source ports used when the client's is taken
//! port_retries = 16             # ports tried in that range (from a random one on)
//!
//! [timeouts]                    # seconds a flow may stay idle
//! syn = 60                      # TCP handshake not finished
//! established = 7200
//! closing = 10                  # after FIN or RST
//! udp = 30                      # UDP, until the flow is a stream
//! udp_stream = 120              # UDP, the client sent again after an answer
//!
//! [[rule]]
//! name = "www"                  # optional, shown by `redirector stats`
//! from = "198.18.0.2:80"        # OLD_IP:PORT, an address of this host
//! to = "198.18.0.3:80"          # NEW_IP:PORT (NEW_IP alone: the same port)
//!
//! [[rule]]                      # a whole site: several ports, TCP and UDP
//! name = "site"
//! from = "198.18.0.2"
//! to = "198.18.0.3"
//! ports = [80, 443]             # each to the same port on NEW
//! proto = ["tcp", "udp"]        # default "tcp"; "udp" alone is fine too
//!
//! [[rule]]                      # IPv6: to IPv6 only (no NAT64)
//! name = "www-v6"
//! from = "[2001:2::2]:80"
//! to = "[2001:2::3]:80"
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
    /// Rules in file order; no (protocol, OLD_IP:PORT) is in two of them,
    /// and no name.
    pub rules: Vec<Rule>,
}

/// One redirect: new connections (TCP) and flows (UDP) to `from` on each
/// of its ports are forwarded to `to` on the matching port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The operator's name for the rule (defaults to `from` as written).
    pub name: String,
    /// OLD_IP.
    pub from: IpAddr,
    /// NEW_IP, of the same family as `from`.
    pub to: IpAddr,
    /// (OLD port, NEW port) pairs in file order; at least one, no OLD port
    /// twice.
    pub ports: Vec<(u16, u16)>,
    /// At least one, in the order TCP, UDP.
    pub protocols: Vec<Protocol>,
    /// The percentage of client addresses whose new connections are
    /// redirected, 1..=100 (`FULL_SHARE`, the default); the others stay
    /// with the old host. Which clients is fixed by their address, so that
    /// a growing share only moves clients towards NEW: a weighted shift
    /// keeps the clients that cached the old address in the same split as
    /// the DNS answers.
    pub share: u8,
}

/// `Rule::share` of a rule that redirects every client.
pub const FULL_SHARE: u8 = 100;

/// A transport protocol a rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// One (protocol, OLD_IP:PORT) a rule listens on and where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

impl Rule {
    /// Every (protocol, port) the rule redirects.
    pub fn endpoints(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.protocols.iter().flat_map(move |&protocol| {
            self.ports.iter().map(move |&(from, to)| Endpoint {
                protocol,
                from: SocketAddr::new(self.from, from),
                to: SocketAddr::new(self.to, to),
            })
        })
    }

    /// `from` as `redirector stats` and the API show it:
    /// `198.18.0.2:80`, `198.18.0.2:80,443`, `198.18.0.2:443/udp`,
    /// `[2001:2::2]:80`.
    pub fn from_text(&self) -> String {
        describe(self.from, self.ports.iter().map(|p| p.0), &self.protocols)
    }

    /// `to` likewise, its ports in the order of `from`'s.
    pub fn to_text(&self) -> String {
        describe(self.to, self.ports.iter().map(|p| p.1), &self.protocols)
    }
}

/// `IP:PORT[,PORT...]` (`[IPv6]:PORT...`), with `/udp` or `/tcp+udp`
/// unless TCP only.
pub fn describe(ip: IpAddr, ports: impl Iterator<Item = u16>, protocols: &[Protocol]) -> String {
    let ports: Vec<String> = ports.map(|p| p.to_string()).collect();
    let mut text = match ip {
        IpAddr::V4(v4) => format!("{v4}:{}", ports.join(",")),
        IpAddr::V6(v6) => format!("[{v6}]:{}", ports.join(",")),
    };
    if protocols != [Protocol::Tcp] {
        let names: Vec<&str> = protocols.iter().map(|p| p.name()).collect();
        text.push('/');
        text.push_str(&names.join("+"));
    }
    text
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
    /// A UDP flow until it is a stream: unanswered, or a lone exchange
    /// such as a DNS query (conntrack's `udp_timeout`).
    pub udp: u64,
    /// A UDP stream: the client sent again after an answer (conntrack's
    /// `udp_timeout_stream`, whose default it shares).
    pub udp_stream: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            syn: 60,
            established: 7200,
            closing: 10,
            udp: 30,
            udp_stream: 120,
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
    ports: Option<Spanned<Vec<u16>>>,
    /// `"udp"` or `["tcp", "udp"]`, read by `parse_protocols` so that any
    /// other shape gets an error that says what to write.
    proto: Option<Spanned<toml::Value>>,
    /// Any TOML value, so that a string or a fraction gets an error that
    /// says what to write.
    share: Option<Spanned<toml::Value>>,
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
            ("udp", timeouts.udp),
            ("udp_stream", timeouts.udp_stream),
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
    let mut seen_endpoint: HashMap<(Protocol, SocketAddr), usize> = HashMap::new();
    let mut seen_name: HashMap<String, usize> = HashMap::new();
    for (i, r) in raw.rule.iter().enumerate() {
        let Some(rule) = parse_rule(i, r, &mut problems) else {
            continue;
        };
        // Checked against the rules accepted so far; a refused rule claims
        // nothing, so a later clash names the rule that holds the endpoint.
        let taken = rule.endpoints().find_map(|e| {
            seen_endpoint
                .get(&(e.protocol, e.from))
                .map(|&first| (e, first))
        });
        if let Some((e, first)) = taken {
            problems.at(
                r.from.span(),
                format!("rule[{i}].from"),
                format!(
                    "{} {} already has a rule (rule[{first}]): one OLD_IP:PORT goes to one place",
                    e.protocol.name(),
                    e.from
                ),
            );
            continue;
        }
        if let Some(&first) = seen_name.get(&rule.name) {
            let (span, field, message) = match &r.name {
                Some(n) => (
                    n.span(),
                    format!("rule[{i}].name"),
                    format!("the name {:?} is already used by rule[{first}]", rule.name),
                ),
                // The default name is `from` as written, which another
                // rule may have taken as its explicit name.
                None => (
                    r.from.span(),
                    format!("rule[{i}].from"),
                    format!(
                        "this rule's default name {:?} is already the name of \
                         rule[{first}]: give one of them another `name`",
                        rule.name
                    ),
                ),
            };
            problems.at(span, field, message);
            continue;
        }
        for e in rule.endpoints() {
            seen_endpoint.insert((e.protocol, e.from), i);
        }
        seen_name.insert(rule.name.clone(), i);
        rules.push(rule);
    }

    problems.into_result(RedirectorConfig {
        nat,
        timeouts,
        rules,
    })
}

/// Validates one `[[rule]]`, reporting every problem it has.
fn parse_rule(i: usize, r: &RawRule, problems: &mut Problems) -> Option<Rule> {
    let from = parse_address(r.from.get_ref());
    let to = parse_address(r.to.get_ref());
    let protocols = parse_protocols(r.proto.as_ref().map(Spanned::get_ref));
    let (from, to, protocols) = match (from, to, protocols) {
        (Ok(from), Ok(to), Ok(protocols)) => (from, to, protocols),
        (from, to, protocols) => {
            if let Err(m) = from {
                problems.at(r.from.span(), format!("rule[{i}].from"), m);
            }
            if let Err(m) = to {
                problems.at(r.to.span(), format!("rule[{i}].to"), m);
            }
            if let (Err(m), Some(proto)) = (protocols, &r.proto) {
                problems.at(proto.span(), format!("rule[{i}].proto"), m);
            }
            return None;
        }
    };
    let ports = match (from.1, to.1, &r.ports) {
        (Some(old), new, None) => vec![(old, new.unwrap_or(old))],
        (None, None, Some(list)) => {
            let list = list.get_ref();
            let mut ports = Vec::with_capacity(list.len());
            for &p in list {
                if p == 0 || ports.iter().any(|&(q, _)| q == p) {
                    break;
                }
                ports.push((p, p));
            }
            if list.is_empty() || ports.len() != list.len() {
                let span = r.ports.as_ref().map(Spanned::span).unwrap_or_default();
                problems.at(
                    span,
                    format!("rule[{i}].ports"),
                    format!("{list:?}: list one or more ports, none of them 0, none twice"),
                );
                return None;
            }
            ports
        }
        (None, Some(_), None) => {
            problems.at(
                r.from.span(),
                format!("rule[{i}].from"),
                "`to` names a port but `from` does not: write OLD_IP:PORT",
            );
            return None;
        }
        (None, None, None) => {
            problems.at(
                r.from.span(),
                format!("rule[{i}].from"),
                format!(
                    "{:?} names no port: write IP:PORT, e.g. \"198.18.0.2:80\", or add ports = [80, 443]",
                    r.from.get_ref()
                ),
            );
            return None;
        }
        (_, _, Some(list)) => {
            problems.at(
                list.span(),
                format!("rule[{i}].ports"),
                "`ports` goes with bare addresses: drop the port from `from` and `to`",
            );
            return None;
        }
    };
    let (from, to) = (from.0, to.0);
    if from.is_ipv4() != to.is_ipv4() {
        problems.at(
            r.to.span(),
            format!("rule[{i}].to"),
            format!(
                "{} is not of the family of `from` ({from}): the redirector forwards IPv4 to \
                 IPv4 and IPv6 to IPv6 (no NAT64)",
                r.to.get_ref().trim()
            ),
        );
        return None;
    }
    if to.is_loopback() {
        problems.at(
            r.to.span(),
            format!("rule[{i}].to"),
            format!("{to} is not the address of a host to forward to: use NEW's unicast address"),
        );
        return None;
    }
    if from == to && ports.iter().any(|(a, b)| a == b) {
        problems.at(
            r.to.span(),
            format!("rule[{i}].to"),
            format!("{} redirects to itself", r.to.get_ref().trim()),
        );
        return None;
    }
    let share = match &r.share {
        None => FULL_SHARE,
        Some(share) => match share.get_ref().as_integer().map(u8::try_from) {
            Some(Ok(p)) if (1..=FULL_SHARE).contains(&p) => p,
            _ => {
                problems.at(
                    share.span(),
                    format!("rule[{i}].share"),
                    format!(
                        "{} is not a whole percentage of clients from 1 to 100 (remove the \
                         rule to redirect none)",
                        share.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    let name = match &r.name {
        Some(n) => {
            let name = n.get_ref().trim().to_string();
            if name.is_empty() {
                problems.at(n.span(), format!("rule[{i}].name"), "the name is empty");
                return None;
            }
            name
        }
        None => r.from.get_ref().trim().to_string(),
    };
    Some(Rule {
        name,
        from,
        to,
        ports,
        protocols,
        share,
    })
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT` (unicast, global or unique-local: a
/// redirect crosses a router).
fn parse_address(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let t = s.trim();
    let (ip, port) = if let Ok(addr) = t.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{s:?}: port 0 cannot be redirected"));
        }
        (addr.ip(), Some(addr.port()))
    } else {
        match t.parse::<IpAddr>() {
            Ok(ip) => (ip, None),
            Err(_) => {
                return Err(format!(
                    "{s:?} is not an address: write IP:PORT, e.g. \"198.18.0.2:80\" or \
                     \"[2001:2::2]:80\", or IP with `ports`"
                ));
            }
        }
    };
    let unicast = match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return Err(format!(
                    "{s:?} is an IPv4-mapped address: write the IPv4 address itself"
                ));
            }
            // Link-local addresses are ambiguous without an interface.
            !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local())
        }
    };
    if !unicast {
        return Err(format!("{s:?} is not a unicast host address"));
    }
    Ok((ip, port))
}

/// The protocols of `proto`: TCP when absent.
fn parse_protocols(raw: Option<&toml::Value>) -> Result<Vec<Protocol>, String> {
    const SHAPE: &str = "write \"tcp\", \"udp\" or [\"tcp\", \"udp\"]";
    let names: Vec<&str> = match raw {
        None => return Ok(vec![Protocol::Tcp]),
        Some(toml::Value::String(name)) => vec![name.as_str()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("{v} is not a protocol name: {SHAPE}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("{other} is not a protocol: {SHAPE}")),
    };
    let mut protocols = Vec::with_capacity(names.len());
    for name in &names {
        let p = match name.trim().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => {
                return Err(format!(
                    "{name:?} is not a protocol the redirector forwards: \"tcp\" or \"udp\""
                ));
            }
        };
        if protocols.contains(&p) {
            return Err(format!("{name:?} is listed twice"));
        }
        protocols.push(p);
    }
    if protocols.is_empty() {
        return Err("the list is empty: \"tcp\", \"udp\" or both".into());
    }
    protocols.sort();
    Ok(protocols)
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
    fn a_share_is_a_percentage_of_clients_from_1_to_100_and_all_by_default() {
        let rule = |share: &str| {
            parse_str(&format!(
                "[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.3:80\"\n{share}"
            ))
        };
        assert_eq!(rule("").unwrap().rules[0].share, FULL_SHARE);
        assert_eq!(rule("share = 30\n").unwrap().rules[0].share, 30);
        assert_eq!(rule("share = 100\n").unwrap().rules[0].share, 100);
        for bad in ["0", "101", "-5", "300", "\"50%\"", "12.5"] {
            let errors = rule(&format!("share = {bad}\n")).unwrap_err();
            assert_eq!(errors.0.len(), 1, "{bad}: {errors:?}");
            assert!(
                errors.0[0]
                    .field
                    .as_deref()
                    .is_some_and(|f| f.ends_with("share")),
                "{bad}: {errors:?}"
            );
        }
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
        assert_eq!(cfg.rules[0].to_text(), "198.18.0.3:8080");
        assert_eq!(cfg.rules[0].ports, [(80, 8080)]);
        assert_eq!(cfg.rules[0].protocols, [Protocol::Tcp]);
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
from = "198.18.0.300"
to = "[ff02::1]:80"
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
        assert!(err.to_string().contains("not a unicast host address"));
    }

    #[test]
    fn ipv6_rules_take_bracketed_addresses_and_stay_within_their_family() {
        let cfg = parse_str(
            r#"
[[rule]]
name = "www-v6"
from = "[2001:2::2]:80"
to = "[2001:2::3]:8080"

[[rule]]
name = "site-v6"
from = "2001:2::2"
to = "2001:2::3"
ports = [443]
proto = ["tcp", "udp"]

[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:80"
"#,
        )
        .unwrap();
        let texts: Vec<(String, String)> = cfg
            .rules
            .iter()
            .map(|r| (r.from_text(), r.to_text()))
            .collect();
        assert_eq!(
            texts,
            [
                ("[2001:2::2]:80".into(), "[2001:2::3]:8080".into()),
                (
                    "[2001:2::2]:443/tcp+udp".into(),
                    "[2001:2::3]:443/tcp+udp".into()
                ),
                ("198.18.0.2:80".into(), "198.18.0.3:80".into()),
            ]
        );
        let endpoint = cfg.rules[0].endpoints().next().unwrap();
        assert_eq!(endpoint.to.to_string(), "[2001:2::3]:8080");

        for (from, to, says) in [
            ("[2001:2::2]:80", "198.18.0.3:80", "no NAT64"),
            ("198.18.0.2:80", "[2001:2::3]:80", "no NAT64"),
            (
                "[2001:2::2]:80",
                "[fe80::1]:80",
                "not a unicast host address",
            ),
            ("[::ffff:198.18.0.2]:80", "198.18.0.3:80", "IPv4-mapped"),
            ("[2001:2::2]:80", "[::1]:80", "not the address of a host"),
        ] {
            let text = format!("[[rule]]\nfrom = \"{from}\"\nto = \"{to}\"\n");
            let err = parse_str(&text).unwrap_err().to_string();
            assert!(err.contains(says), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn a_site_moves_whole_with_several_ports_and_both_protocols() {
        let cfg = parse_str(
            r#"
[[rule]]
name = "site"
from = "198.18.0.2"
to = "198.18.0.3"
ports = [80, 443]
proto = ["udp", "tcp"]

[[rule]]
from = "198.18.0.2:53"
to = "198.18.0.4"
proto = "udp"
"#,
        )
        .unwrap();
        let site = &cfg.rules[0];
        assert_eq!(site.protocols, [Protocol::Tcp, Protocol::Udp]);
        let endpoints: Vec<String> = site
            .endpoints()
            .map(|e| format!("{} {} -> {}", e.protocol.name(), e.from, e.to))
            .collect();
        assert_eq!(
            endpoints,
            [
                "tcp 198.18.0.2:80 -> 198.18.0.3:80",
                "tcp 198.18.0.2:443 -> 198.18.0.3:443",
                "udp 198.18.0.2:80 -> 198.18.0.3:80",
                "udp 198.18.0.2:443 -> 198.18.0.3:443",
            ]
        );
        assert_eq!(site.from_text(), "198.18.0.2:80,443/tcp+udp");
        let dns = &cfg.rules[1];
        assert_eq!(dns.name, "198.18.0.2:53");
        assert_eq!(
            (dns.from_text(), dns.to_text()),
            (
                "198.18.0.2:53/udp".to_string(),
                "198.18.0.4:53/udp".to_string()
            )
        );
        assert_eq!(cfg.timeouts.udp, 30);
        assert_eq!(cfg.timeouts.udp_stream, 120);
    }

    #[test]
    fn the_same_port_under_another_protocol_is_another_endpoint() {
        let ok = "[[rule]]\nname = \"a\"\nfrom = \"198.18.0.2:443\"\nto = \"198.18.0.3\"\n\
                  [[rule]]\nname = \"b\"\nfrom = \"198.18.0.2:443\"\nto = \"198.18.0.4\"\nproto = \"udp\"\n";
        assert_eq!(parse_str(ok).unwrap().rules.len(), 2);
        let clash = ok.replace("proto = \"udp\"", "proto = [\"udp\", \"tcp\"]");
        let err = parse_str(&clash).unwrap_err();
        assert_eq!(err.0[0].field.as_deref(), Some("rule[1].from"), "{err}");
        assert!(
            err.to_string()
                .contains("tcp 198.18.0.2:443 already has a rule (rule[0])"),
            "{err}"
        );
    }

    #[test]
    fn ports_and_protocols_that_cannot_be_meant_are_refused_naming_the_field() {
        for (rule, field, says) in [
            (
                "from = \"198.18.0.2:80\"\nto = \"198.18.0.3\"\nproto = 6",
                "rule[0].proto",
                "write \"tcp\"",
            ),
            (
                "from = \"198.18.0.2:80\"\nto = \"198.18.0.3\"\nproto = [17]",
                "rule[0].proto",
                "not a protocol name",
            ),
            (
                "from = \"198.18.0.2\"\nto = \"198.18.0.3\"\nports = []",
                "rule[0].ports",
                "one or more",
            ),
            (
                "from = \"198.18.0.2\"\nto = \"198.18.0.3\"\nports = [80, 80]",
                "rule[0].ports",
                "none twice",
            ),
            (
                "from = \"198.18.0.2\"\nto = \"198.18.0.3\"\nports = [0]",
                "rule[0].ports",
                "none of them 0",
            ),
            (
                "from = \"198.18.0.2:80\"\nto = \"198.18.0.3\"\nports = [443]",
                "rule[0].ports",
                "bare addresses",
            ),
            (
                "from = \"198.18.0.2\"\nto = \"198.18.0.3:80\"",
                "rule[0].from",
                "`to` names a port",
            ),
            (
                "from = \"198.18.0.2\"\nto = \"198.18.0.3\"",
                "rule[0].from",
                "names no port",
            ),
            (
                "from = \"198.18.0.2:80\"\nto = \"198.18.0.3\"\nproto = \"sctp\"",
                "rule[0].proto",
                "\"tcp\" or \"udp\"",
            ),
            (
                "from = \"198.18.0.2:80\"\nto = \"198.18.0.3\"\nproto = []",
                "rule[0].proto",
                "empty",
            ),
            (
                "from = \"198.18.0.2:80\"\nto = \"198.18.0.3\"\nproto = [\"udp\", \"UDP\"]",
                "rule[0].proto",
                "twice",
            ),
            (
                "from = \"198.18.0.2\"\nto = \"198.18.0.2\"\nports = [80]",
                "rule[0].to",
                "to itself",
            ),
        ] {
            let err = parse_str(&format!("[[rule]]\n{rule}\n")).unwrap_err();
            assert_eq!(err.0.len(), 1, "{rule}: {err}");
            assert_eq!(err.0[0].field.as_deref(), Some(field), "{rule}: {err}");
            assert!(err.to_string().contains(says), "{rule}: {err}");
        }
    }

    #[test]
    fn the_example_workspace_s_rules_are_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workspace/redirector.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cfg.rules
                .iter()
                .any(|r| r.protocols.contains(&Protocol::Udp))
        );
        assert!(cfg.rules.iter().any(|r| r.from.is_ipv6()), "an IPv6 rule");
    }

    #[test]
    fn loops_zero_ports_and_zero_timeouts_are_rejected() {
        assert!(parse_str("[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.2:80\"\n").is_err());
        assert!(parse_str("[[rule]]\nfrom = \"198.18.0.2:0\"\nto = \"198.18.0.3:80\"\n").is_err());
        assert!(parse_str("[timeouts]\nsyn = 0\n").is_err());
        assert!(parse_str("[timeouts]\nudp_stream = 0\n").is_err());
    }
}
