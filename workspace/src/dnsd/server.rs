//! The `[server]` section of `dnsd.toml`: the addresses dnsd answers on and
//! how it answers there.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:53", "[::1]:53"]   # UDP and TCP on each
//! udp_sockets = 0                          # SO_REUSEPORT sockets per address; 0 = one per core
//! max_answers = 8                          # cap on rotated A/AAAA records per answer; 0 = none
//! cpu_affinity = true                      # steer each UDP query to a thread on the CPU that received it
//! tcp_connections = 0                      # TCP connections open at once; 0 = half the file descriptors dnsd may open
//! ```

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use crate::problems::Problems;

/// The `[server]` section: where and how dnsd answers queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// SO_REUSEPORT UDP sockets per listen address; 0 means one per core.
    pub udp_sockets: usize,
    /// At most this many A (or AAAA) records in one answer; 0 means no cap.
    pub max_answers: usize,
    /// Steer each UDP query to the socket whose thread runs on the CPU
    /// that received it (see the README on when to turn this off).
    pub cpu_affinity: bool,
    /// TCP connections open at once; 0 means half the file descriptors
    /// dnsd may open. At the cap a new one replaces the one idle longest.
    pub tcp_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            udp_sockets: 0,
            max_answers: 0,
            cpu_affinity: true,
            tcp_connections: 0,
        }
    }
}

/// The section as written; a missing section is all `None`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    udp_sockets: Option<usize>,
    max_answers: Option<usize>,
    cpu_affinity: Option<bool>,
    tcp_connections: Option<usize>,
}

pub(super) fn parse(raw: RawServer, problems: &mut Problems<'_>) -> ServerConfig {
    let defaults = ServerConfig::default();
    let mut listen = defaults.listen;
    if let Some(list) = raw.listen {
        if list.get_ref().is_empty() {
            problems.at(
                list.span(),
                "server.listen",
                "dnsd needs at least one address to listen on",
            );
        }
        listen.clear();
        for (i, a) in list.get_ref().iter().enumerate() {
            match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => listen.push(addr),
                Err(_) => problems.at(
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
    ServerConfig {
        listen,
        udp_sockets: raw.udp_sockets.unwrap_or(defaults.udp_sockets),
        max_answers: raw.max_answers.unwrap_or(defaults.max_answers),
        cpu_affinity: raw.cpu_affinity.unwrap_or(defaults.cpu_affinity),
        tcp_connections: raw.tcp_connections.unwrap_or(defaults.tcp_connections),
    }
}

#[cfg(test)]
mod tests {
    use crate::dnsd::tests::parse_str;

    #[test]
    fn the_defaults_listen_on_loopback() {
        let cfg = parse_str("").unwrap();
        assert_eq!(cfg.server.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert!(cfg.server.cpu_affinity);
    }

    #[test]
    fn cpu_affinity_must_be_a_boolean() {
        let err = parse_str("[server]\ncpu_affinity = \"yes\"\n").unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("boolean"), "{}", e.message);
    }

    #[test]
    fn bad_listen_addresses_are_rejected() {
        let err = parse_str("[server]\nlisten = [\"127.0.0.1\"]\n").unwrap_err();
        assert_eq!(err.0[0].field.as_deref(), Some("server.listen[0]"));
        assert_eq!(err.0[0].line, Some(2));
    }

    #[test]
    fn an_empty_listen_list_is_refused() {
        let err = parse_str("[server]\nlisten = []\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ws/dnsd.toml:2:10: field `server.listen`: dnsd needs at least one address to listen on"
        );
    }
}
