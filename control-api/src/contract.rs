//! The JSON both daemons' control APIs speak, as types: the daemons
//! serialize them, `cutover` deserializes them. Every field is required
//! unless it is an `Option`, so a renamed or missing field fails loudly in
//! the client instead of reading as 0 (a busy old host read as drained).
//! Request bodies refuse unknown fields, so a typo is a 400, not ignored.
//!
//! This module needs serde only; the server side of the crate (errors as
//! responses, the token check, the listener) is behind the `server`
//! feature.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every error: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The answer to a change: the workspace generation in force once it is
/// served (`None` only when a change that changed nothing met a workspace
/// with no history yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub generation: Option<u64>,
}

/// `GET /v1/version` of either daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub name: String,
    pub version: String,
    /// The interface a redirector serves; dnsd has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
}

/// One workspace generation, as `GET /v1/generations` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub number: u64,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    pub message: String,
    /// The live files are this generation.
    pub current: bool,
}

// ---- dnsd ----

/// `GET /v1/health` of dnsd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsHealth {
    pub status: String,
    pub generation: Option<u64>,
    /// Zones being served (those whose file has never loaded included).
    pub zones: usize,
}

/// A `[[service]]` of dnsd.toml, as `GET /v1/services` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// Every address configured, whether in the answers now or not.
    pub addresses: Vec<String>,
    pub ttl: u32,
    /// Each address, how it is used and whether it is in the answers now;
    /// empty for a plain service (every address weight 1, no region, no
    /// backup, no health check), and from a dnsd that does not say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ServiceMember>,
}

/// One address of a [`Service`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMember {
    pub address: String,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub backup: bool,
    /// Served now: up (or not checked), and not a backup while a primary
    /// is up; every address when all are down (fail open).
    pub in_use: bool,
    /// Its health check; `None` when the service has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AddressHealth>,
    /// Answers (by dnsd itself, not its secondaries) that led with this
    /// address since dnsd started.
    #[serde(default)]
    pub answers: u64,
}

/// The state of an address's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressHealth {
    pub up: bool,
    /// Checks run since dnsd started checking it.
    pub checks: u64,
    /// When the last check ended (Unix time, ms); `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_ms: Option<u64>,
    /// Why the last check failed; `None` when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The largest weight of a service's address (`ServiceChange::weights`).
pub const MAX_WEIGHT: u32 = 1000;

/// Body of `PUT /v1/services/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceChange {
    pub addresses: Vec<String>,
    /// Left out: the service keeps its TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Weights by address (0..=1000); an address left out keeps the weight
    /// it has (1 when it is new). Regions and backup flags always stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<std::collections::BTreeMap<String, u32>>,
    /// When given, exactly these of the addresses are backups (checked,
    /// served only when no other address is up); left out, every address
    /// keeps its flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<Vec<String>>,
}

/// One zone, as `GET /v1/zones` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneInfo {
    pub origin: String,
    pub serial: Option<u32>,
    pub records: usize,
    /// The name servers that must serve a change before it is out
    /// (`address:port`): the addresses dnsd listens on (a wildcard as
    /// loopback) and the zone's `[[secondary]]`s; empty when the zone has no secondaries (dnsd alone
    /// serves every change once it is acknowledged).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// What each `[[secondary]]` of the zone has done since dnsd started.
    #[serde(default)]
    pub secondaries: Vec<SecondaryInfo>,
    /// Set when the zone is a `[[replica]]`: another primary owns it, and
    /// dnsd serves a copy (changes are refused; make them there).
    #[serde(default)]
    pub replica_of: Option<ReplicaInfo>,
}

/// A replica zone's primary and what its copy has done since dnsd started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// `address:port` of the primary.
    pub primary: String,
    /// Whether the copy is served: `false` before the first transfer and
    /// once expired (queries get SERVFAIL).
    pub served: bool,
    /// The last refresh that reached the primary (Unix s).
    #[serde(default)]
    pub refreshed_at: Option<u64>,
    /// The serial last transferred, how (`AXFR`, `IXFR`), and when.
    #[serde(default)]
    pub transferred: Option<u32>,
    #[serde(default)]
    pub transfer: Option<String>,
    #[serde(default)]
    pub transferred_at: Option<u64>,
    /// The last failure, cleared by the next success, and when.
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub failed_at: Option<u64>,
}

/// One secondary of a zone, as `GET /v1/zones` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryInfo {
    /// `address:port`, as `[[secondary]]` gives it.
    pub address: String,
    /// The serial of the last NOTIFY it acknowledged, and when (Unix s).
    #[serde(default)]
    pub notify_acknowledged: Option<u32>,
    #[serde(default)]
    pub notify_acknowledged_at: Option<u64>,
    /// The serial it last transferred, how (`AXFR`, `IXFR`, `IXFR (whole
    /// zone)`, `IXFR (up to date)`), and when.
    #[serde(default)]
    pub transferred: Option<u32>,
    #[serde(default)]
    pub transfer: Option<String>,
    #[serde(default)]
    pub transferred_at: Option<u64>,
}

/// One record, as `GET /v1/zones/{origin}/records` lists it, in zone-file
/// presentation form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

/// Body of `PUT /v1/zones/{origin}/rrsets/{name}/{type}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrsetChange {
    /// Required for a new RRset; left out, an existing one keeps its TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Rdata in zone-file text form; empty deletes the RRset.
    pub records: Vec<String>,
}

// ---- redirector ----

/// `GET /v1/health` of a redirector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectorHealth {
    pub status: String,
    pub generation: Option<u64>,
    /// Rules in force (draining ones not counted).
    pub rules: usize,
}

/// A redirect rule, as `GET /v1/rules` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// For people: `198.18.0.2:80`, `198.18.0.2:80,443/tcp+udp`.
    pub from: String,
    pub to: String,
    /// The rule's slot in the program's maps.
    pub id: u32,
    /// What it redirects, one (protocol, port) each: for tools.
    #[serde(default)]
    pub endpoints: Vec<RuleEndpoint>,
    /// The percentage of client addresses redirected (a weighted shift);
    /// 100 for a plain redirect.
    #[serde(default = "full_share")]
    pub share: u8,
}

/// `share` of a rule that redirects every client.
pub fn full_share() -> u8 {
    100
}

impl Rule {
    /// Whether the rule takes connections or datagrams to `addr` (any
    /// protocol: a redirect of either kind into it would loop).
    pub fn listens_on(&self, addr: std::net::SocketAddr) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.from.parse::<std::net::SocketAddr>().ok() == Some(addr))
            || self.from.parse::<std::net::SocketAddr>().ok() == Some(addr)
    }
}

/// One (protocol, OLD_IP:PORT) of a rule and where it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEndpoint {
    pub proto: Proto,
    pub from: String,
    pub to: String,
}

/// Body of `PUT /v1/rules/{name}`: the fields of a `[[rule]]` in
/// `redirector.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleChange {
    /// `IP:PORT`, or a bare `IP` with `ports`.
    pub from: String,
    /// `IP:PORT`, or a bare `IP` (the same ports as `from`).
    pub to: String,
    /// Several ports, each to the same port on `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// None means TCP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proto: Vec<Proto>,
    /// The percentage of client addresses redirected, 1..=100; none means
    /// all (see `share` in `redirector.toml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<u8>,
}

/// A transport protocol a redirect forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// As `redirector.toml` and the JSON write it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Body of `POST /v1/probe`: open a TCP connection to `to` from the
/// redirector's host, so that `cutover` checks a target from where clients
/// (or forwarded connections) will reach it, not from the operator's desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// `IP:PORT` (`[IPv6]:PORT`).
    pub to: String,
    /// The address to connect from: the one the redirector rewrites
    /// forwarded connections to (a rule's OLD address), so that the probe
    /// is refused where forwarded clients would be. Default: the address
    /// the host's routing chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The answer to `POST /v1/probe`. A connection the host opens itself
/// leaves through its own stack, never through the XDP program, so a probe
/// of the host's own address reaches its local server even while a rule
/// redirects that address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub to: String,
    /// The three-way handshake completed (within 3 s).
    pub connected: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
}

/// The figures of one rule, in `GET /v1/stats` and `redirector stats --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStats {
    pub id: u32,
    pub name: String,
    pub from: String,
    pub to: String,
    /// Removed from the config; its flows still run.
    pub draining: bool,
    /// The percentage of client addresses redirected.
    #[serde(default = "full_share")]
    pub share: u8,
    pub new_flows_per_s: f64,
    pub active_flows: u64,
    /// Distinct clients among the active flows.
    pub active_clients: u64,
    /// The same figure under the name `cutover` has always read.
    pub distinct_clients: u64,
    pub new_flows: u64,
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// Packets sent back out of the interface they came in on (XDP_TX) and
    /// through another interface (XDP_REDIRECT).
    pub sent_back: u64,
    pub redirected: u64,
    /// New connections refused a NAT port.
    pub nat_failures: u64,
    /// Flows lost to LRU pressure (seen by the program or by collection).
    pub evictions: u64,
    /// Flows removed by collection after their idle timeout.
    pub expired: u64,
    /// Non-zero pass and drop counters by name.
    pub passes: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
    /// Other non-zero event counters by name: closing flows, translated
    /// ICMP errors, fragmentation-needed sent, reused NAT ports.
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
}

/// `GET /v1/stats` of a redirector, and what `redirector stats` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub iface: String,
    /// The daemon that published the rules, and whether it still runs: the
    /// pins of a killed daemon outlive it, frozen.
    pub daemon_pid: u32,
    pub daemon_running: bool,
    pub sample_seconds: f64,
    pub rules: Vec<RuleStats>,
    /// Non-zero counters of packets that matched no rule.
    pub unmatched: BTreeMap<String, u64>,
}

/// One sample of the traffic still arriving at an old host, as `cutover
/// migrate` reads it from the redirector while the old host drains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DrainSample {
    /// Unix time, seconds.
    pub at: u64,
    pub new_flows_per_s: f64,
    pub active_flows: u64,
    pub distinct_clients: u64,
}

/// `PUT /v1/migrations/{name}` on dnsd: where a migration stands, sent by
/// `cutover migrate` and `rollback` at every step, with the latest drain
/// sample while the old host drains; the status page shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// `planned`, `ttl-lowered`, `redirecting`, `flipped`, `done`,
    /// `rolled-back`.
    pub phase: String,
    /// The service's addresses before the move.
    pub from: Vec<String>,
    /// The old address that is redirected, and the new one.
    pub old: String,
    pub to: String,
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<DrainSample>,
}

/// A migration as the status page shows it: its last report and its drain
/// samples of the last 24 hours (at most one per minute's worth of width:
/// the busiest of each stretch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    pub name: String,
    pub phase: String,
    pub from: Vec<String>,
    pub old: String,
    pub to: String,
    pub ports: Vec<u16>,
    /// When the last report came (Unix time, seconds).
    pub updated_at: u64,
    pub samples: Vec<DrainSample>,
}

/// `GET /status.json` on dnsd: what the status page draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusPage {
    /// Unix time, seconds.
    pub now: u64,
    pub generation: Option<u64>,
    pub services: Vec<Service>,
    pub migrations: Vec<MigrationStatus>,
}

/// A domain name as both APIs compare and send it: lower case, fully
/// qualified (`www.Example.test` is `www.example.test.`).
pub fn fqdn(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_field_fails_loudly_instead_of_reading_as_zero() {
        let json = r#"{"iface":"eth0","daemon_pid":1,"daemon_running":true,"sample_seconds":1.0,"rules":[{"id":1,"name":"www","from":"a","to":"b","draining":false,"new_flows_per_s":0.0,"flows_in_flight":7,"active_clients":1,"distinct_clients":1,"new_flows":9,"fwd_packets":0,"fwd_bytes":0,"reply_packets":0,"reply_bytes":0,"sent_back":0,"redirected":0,"nat_failures":0,"evictions":0,"expired":0,"passes":{},"drops":{}}],"unmatched":{}}"#;
        let e = serde_json::from_str::<Stats>(json).unwrap_err().to_string();
        assert!(e.contains("active_flows"), "{e}");
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let e = serde_json::from_str::<RrsetChange>(r#"{"ttl":60,"record":["x"]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `record`"), "{e}");
        let ok: ServiceChange = serde_json::from_str(r#"{"addresses":["198.18.0.3"]}"#).unwrap();
        assert_eq!(ok.ttl, None);
    }

    #[test]
    fn names_are_compared_fully_qualified_in_lower_case() {
        assert_eq!(fqdn(" www.Example.test"), "www.example.test.");
        assert_eq!(fqdn("www.example.test."), "www.example.test.");
    }
}
