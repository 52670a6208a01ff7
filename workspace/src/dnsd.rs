//! `dnsd.toml`: where dnsd listens, answer limits, and shorthand services.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:53", "[::1]:53"]   # UDP and TCP on each
//! udp_sockets = 0                          # SO_REUSEPORT sockets per address; 0 = one per core
//! max_answers = 8                          # cap on rotated A/AAAA records per answer; 0 = none
//!
//! # A service is a name whose A and AAAA records cutover manages: moving it
//! # never means editing a zone file. It replaces the name's A/AAAA RRsets in
//! # the zone that contains it.
//! [[service]]
//! name = "www.example.test."
//! addresses = ["198.18.0.3", "2001:2::3"]
//! ttl = 60
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, ConfigErrors, toml_file};

/// A validated `dnsd.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsdConfig {
    pub server: ServerConfig,
    /// Services in file order; names are unique (case-insensitively).
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// SO_REUSEPORT UDP sockets per listen address; 0 means one per core.
    pub udp_sockets: usize,
    /// At most this many A (or AAAA) records in one answer; 0 means no cap.
    pub max_answers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            udp_sockets: 0,
            max_answers: 0,
        }
    }
}

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
}

/// Upper bound on a service TTL: RFC 2181 §8 caps TTLs at 2^31 - 1, and a
/// record meant to move should never be cached for more than a week.
pub const MAX_SERVICE_TTL: u32 = 7 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: Option<RawServer>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    udp_sockets: Option<usize>,
    max_answers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    ttl: Spanned<u32>,
}

pub(crate) fn parse(path: &Path, source: &str) -> Result<DnsdConfig, ConfigErrors> {
    let raw: RawFile = toml_file::parse(path, source)?;
    let mut errors = Vec::new();
    let mut err = |span: std::ops::Range<usize>, field: String, msg: String| {
        errors.push(ConfigError::at(path, source, Some(span), Some(field), msg));
    };

    let mut server = ServerConfig::default();
    if let Some(raw_server) = raw.server {
        if let Some(listen) = raw_server.listen {
            if listen.get_ref().is_empty() {
                err(
                    listen.span(),
                    "server.listen".into(),
                    "dnsd needs at least one address to listen on".into(),
                );
            }
            server.listen.clear();
            for (i, a) in listen.get_ref().iter().enumerate() {
                match a.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => server.listen.push(addr),
                    Err(_) => err(
                        a.span(),
                        format!("server.listen[{i}]"),
                        format!(
                            "{:?} is not IP:PORT (write \"127.0.0.1:53\" or \"[::1]:53\")",
                            a.get_ref()
                        ),
                    ),
                }
            }
        }
        server.udp_sockets = raw_server.udp_sockets.unwrap_or(0);
        server.max_answers = raw_server.max_answers.unwrap_or(0);
    }

    let mut services = Vec::with_capacity(raw.service.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.service.iter().enumerate() {
        let line = crate::line_col(source, s.span().start).0;
        let s = s.get_ref();
        let name = match normalize_name(s.name.get_ref()) {
            Ok(n) => n,
            Err(m) => {
                err(s.name.span(), format!("service[{i}].name"), m);
                continue;
            }
        };
        if let Some(first) = seen.insert(name.clone(), i) {
            err(
                s.name.span(),
                format!("service[{i}].name"),
                format!("{name} is already defined by service[{first}]"),
            );
            continue;
        }
        let mut addresses = Vec::new();
        for (j, a) in s.addresses.get_ref().iter().enumerate() {
            match a.get_ref().trim().parse::<IpAddr>() {
                Ok(ip) if addresses.contains(&ip) => err(
                    a.span(),
                    format!("service[{i}].addresses[{j}]"),
                    format!("{ip} is listed twice"),
                ),
                Ok(ip) => addresses.push(ip),
                Err(_) => err(
                    a.span(),
                    format!("service[{i}].addresses[{j}]"),
                    format!("{:?} is not an IPv4 or IPv6 address", a.get_ref()),
                ),
            }
        }
        if s.addresses.get_ref().is_empty() {
            err(
                s.addresses.span(),
                format!("service[{i}].addresses"),
                "a service needs at least one address".into(),
            );
        }
        let ttl = *s.ttl.get_ref();
        if ttl > MAX_SERVICE_TTL {
            err(
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
        });
    }

    if errors.is_empty() {
        Ok(DnsdConfig { server, services })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Lower-cases and fully qualifies a domain name, checking RFC 1035's limits.
fn normalize_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    let fqdn = if trimmed.ends_with('.') {
        trimmed.to_ascii_lowercase()
    } else {
        format!("{}.", trimmed.to_ascii_lowercase())
    };
    if fqdn == "." {
        return Err("a service cannot be the root".into());
    }
    if fqdn.len() > 254 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in fqdn.trim_end_matches('.').split('.') {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{name:?} has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        {
            return Err(format!(
                "{name:?}: labels may hold letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(fqdn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<DnsdConfig, ConfigErrors> {
        parse(Path::new("ws/dnsd.toml"), s)
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = parse_str(
            r#"
[server]
listen = ["127.0.0.1:5300", "[::1]:5300"]
udp_sockets = 2
max_answers = 8

[[service]]
name = "WWW.Example.Test"
addresses = ["198.18.0.3", "198.18.0.4", "2001:2::3"]
ttl = 60
"#,
        )
        .unwrap();
        assert_eq!(cfg.server.listen.len(), 2);
        assert_eq!(cfg.server.max_answers, 8);
        assert_eq!(cfg.services[0].name, "www.example.test.");
        assert_eq!(cfg.services[0].addresses.len(), 3);
        assert_eq!(cfg.services[0].line, 7);
    }

    #[test]
    fn the_defaults_listen_on_loopback() {
        let cfg = parse_str("").unwrap();
        assert_eq!(cfg.server.listen, vec!["127.0.0.1:53".parse().unwrap()]);
    }

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
        let got: Vec<_> = err
            .0
            .iter()
            .map(|e| (e.line.unwrap(), e.field.clone().unwrap()))
            .collect();
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
    fn bad_listen_addresses_are_rejected() {
        let err = parse_str("[server]\nlisten = [\"127.0.0.1\"]\n").unwrap_err();
        assert_eq!(err.0[0].field.as_deref(), Some("server.listen[0]"));
        assert_eq!(err.0[0].line, Some(2));
    }

    #[test]
    fn names_are_checked() {
        assert!(normalize_name("a..b").is_err());
        assert!(normalize_name(&"a".repeat(64)).is_err());
        assert!(normalize_name("a b.test").is_err());
        assert_eq!(normalize_name("A.Test").unwrap(), "a.test.");
    }
}
