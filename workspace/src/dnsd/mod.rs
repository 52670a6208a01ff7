//! `dnsd.toml` as a whole: which sections it has and `DnsdConfig`, the
//! checked file; each section is read by a module of its own.
//!
//! ```toml
//! [server]       # where and how dnsd answers queries      server.rs
//! [api]          # the control API (HTTP/JSON)             api.rs
//! [[service]]    # names whose addresses cutover manages   service.rs
//! [[tsig_key]]   # keys that may send dynamic updates      tsig_key.rs
//! [history]      # the zones' journal                      history.rs
//! [[secondary]]  # servers that copy zones from dnsd       transfer.rs
//! [transfer]     # who else may transfer zones             transfer.rs
//! [[replica]]    # zones dnsd copies from another primary  replica.rs
//! ```
//!
//! Every section is optional and every unknown key is refused. Each section's
//! module owns its raw (serde) form, its checked value and
//! `fn parse(raw, &mut Problems) -> T`; this file deserializes the text, hands
//! each section to its module (server, services, api, keys: the order in
//! which problems are listed) and returns the value or every problem at once. A new section (health, secondaries, replicas, regions) is
//! a new module and one line in `RawFile` and in `parse`. The checks the
//! sections share, on names and on lists, are in `fields.rs`.

mod api;
mod fields;
mod health;
mod history;
mod network;
mod regions;
mod replica;
mod server;
mod service;
mod transfer;
mod tsig_key;

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

pub use api::{ApiConfig, DEFAULT_API_LISTEN};
pub use health::{CheckKind, HealthCheck};
pub use history::HistoryConfig;
pub use network::Network;
pub use regions::Regions;
pub use replica::Replica;
pub use server::ServerConfig;
pub use service::{MAX_WEIGHT, Member, Service};
pub use transfer::{Allow, DNS_PORT, Secondary, TransferConfig, may_transfer};
pub use tsig_key::{HMAC_SHA256, TsigKey};

use crate::problems::Problems;
use crate::{ConfigErrors, toml_file};

/// A validated `dnsd.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsdConfig {
    pub server: ServerConfig,
    /// Services in file order; names are unique (case-insensitively).
    pub services: Vec<Service>,
    pub api: ApiConfig,
    /// Keys in file order; names are unique (case-insensitively).
    pub tsig_keys: Vec<TsigKey>,
    pub history: HistoryConfig,
    /// The servers that copy zones from dnsd, in file order.
    pub secondaries: Vec<Secondary>,
    pub transfer: TransferConfig,
    /// The zones dnsd serves a copy of, in file order.
    pub replicas: Vec<Replica>,
    /// Client networks by region, for services with regional addresses.
    pub regions: Regions,
}

impl DnsdConfig {
    /// Whether a transfer of zone `origin` (fully qualified, lower case)
    /// may be given to a client at `ip` whose request was signed with
    /// `key` (already checked).
    pub fn may_transfer(&self, origin: &str, ip: std::net::IpAddr, key: Option<&str>) -> bool {
        may_transfer(&self.secondaries, &self.transfer, origin, ip, key)
    }

    /// The secondaries that copy zone `origin`.
    pub fn secondaries_of<'c>(&'c self, origin: &'c str) -> impl Iterator<Item = &'c Secondary> {
        self.secondaries.iter().filter(move |s| s.copies(origin))
    }

    /// The `[[replica]]` of zone `origin` (any case, with or without the
    /// final dot), if dnsd serves a copy of it.
    pub fn replica(&self, origin: &str) -> Option<&Replica> {
        let origin = fields::normalize_zone(origin).ok()?;
        self.replicas.iter().find(|r| r.zone == origin)
    }

    /// The key named `name` (any case, with or without the final dot).
    pub fn tsig_key(&self, name: &str) -> Option<&TsigKey> {
        let name = fields::normalize_name(name).ok()?;
        self.tsig_keys.iter().find(|k| k.name == name)
    }
}

/// The file as written. The sections' raw types keep their names: serde
/// shows them in its messages (``expected struct RawServer``).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    service: Vec<Spanned<service::RawService>>,
    #[serde(default)]
    api: api::RawApi,
    #[serde(default)]
    tsig_key: Vec<Spanned<tsig_key::RawTsigKey>>,
    #[serde(default)]
    history: history::RawHistory,
    #[serde(default)]
    secondary: Vec<Spanned<transfer::RawSecondary>>,
    #[serde(default)]
    transfer: transfer::RawTransfer,
    #[serde(default)]
    replica: Vec<Spanned<replica::RawReplica>>,
    #[serde(default)]
    regions: regions::RawRegions,
}

pub(crate) fn parse(path: &Path, source: &str) -> Result<DnsdConfig, ConfigErrors> {
    let raw: RawFile = toml_file::parse(path, source)?;
    let mut problems = Problems::new(path, source);
    let server = server::parse(raw.server, &mut problems);
    let regions = regions::parse(&raw.regions, &mut problems);
    let services = service::parse(&raw.service, &regions, &mut problems);
    let api = api::parse(raw.api, &mut problems);
    let tsig_keys = tsig_key::parse(&raw.tsig_key, &mut problems);
    let history = history::parse(raw.history, &mut problems);
    let secondaries = transfer::parse_secondaries(&raw.secondary, &tsig_keys, &mut problems);
    let transfer = transfer::parse_transfer(raw.transfer, &tsig_keys, &mut problems);
    let replicas = replica::parse(&raw.replica, &tsig_keys, &mut problems);
    replica::check_services(&raw.service, &replicas, &mut problems);
    let config = DnsdConfig {
        server,
        services,
        api,
        tsig_keys,
        history,
        secondaries,
        transfer,
        replicas,
        regions,
    };
    problems.into_result(config)
}

/// What the sections' tests share: parsing a whole file and reading where
/// its errors point.
#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse_str(s: &str) -> Result<DnsdConfig, ConfigErrors> {
        parse(Path::new("ws/dnsd.toml"), s)
    }

    /// Where each error points: its line and its field.
    pub(super) fn lines_and_fields(err: &ConfigErrors) -> Vec<(usize, String)> {
        err.0
            .iter()
            .map(|e| (e.line.unwrap(), e.field.clone().unwrap()))
            .collect()
    }

    /// The one error of parsing `text`: its line, field and message.
    pub(super) fn only_error(text: &str) -> (usize, String, String) {
        let err = parse_str(text).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let e = &err.0[0];
        (e.line.unwrap(), e.field.clone().unwrap(), e.message.clone())
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = parse_str(
            r#"
[server]
listen = ["127.0.0.1:5300", "[::1]:5300"]
udp_sockets = 2
max_answers = 8
cpu_affinity = false

[[service]]
name = "WWW.Example.Test"
addresses = ["198.18.0.3", "198.18.0.4", "2001:2::3"]
ttl = 60
"#,
        )
        .unwrap();
        assert_eq!(cfg.server.listen.len(), 2);
        assert_eq!(cfg.server.max_answers, 8);
        assert!(!cfg.server.cpu_affinity);
        assert_eq!(cfg.services[0].name, "www.example.test.");
        assert_eq!(cfg.services[0].addresses.len(), 3);
        assert_eq!(cfg.services[0].line, 8);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse_str("").unwrap(), DnsdConfig::default());
    }

    #[test]
    fn sections_are_reported_in_file_order_and_all_at_once() {
        let err = parse_str(
            "[server]\nlisten = []\n[[service]]\nname = \"a.test\"\naddresses = []\nttl = 1\n\
             [api]\nlisten = \"x\"\n[[tsig_key]]\nname = \"k\"\nalgorithm = \"md5\"\n\
             secret = \"MDEyMzQ1Njc4OWFiY2RlZg==\"\nzones = [\"a.test\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            lines_and_fields(&err),
            [
                (2, "server.listen".to_string()),
                (5, "service[0].addresses".to_string()),
                (8, "api.listen".to_string()),
                (11, "tsig_key[0].algorithm".to_string()),
            ]
        );
    }

    #[test]
    fn an_unknown_section_or_a_section_of_the_wrong_type_is_refused() {
        let (line, field, message) = only_error("\n[health]\n");
        assert_eq!((line, field.as_str()), (2, "health"));
        assert!(message.contains("expected one of `server`"), "{message}");
        let err = parse_str("server = 1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ws/dnsd.toml:1:10: invalid type: integer `1`, expected struct RawServer"
        );
    }
}
