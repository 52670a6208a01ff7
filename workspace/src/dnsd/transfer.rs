//! The `[[secondary]]` entries and the `[transfer]` section of `dnsd.toml`:
//! the name servers that copy zones from dnsd (they are sent NOTIFY when a
//! zone changes and may transfer it), and who else may transfer.
//!
//! ```toml
//! [[secondary]]                   # a server that copies zones from this dnsd
//! address = "198.18.0.54:53"      # port optional (53); gets NOTIFY, may transfer
//! tsig_key = "xfr-key."           # optional: its transfers and NOTIFYs signed with it
//! zones = ["example.test."]       # optional: default every zone
//!
//! [transfer]
//! allow = ["127.0.0.0/8", "key:xfr-key."]   # other readers: networks, or keys
//! ```
//!
//! A transfer (AXFR, IXFR) of a zone is allowed to a secondary of that zone
//! asking from its address (signed with its key, if it has one); from any
//! address in a network `allow` lists; or signed with a key `allow` lists.
//! Everyone else is refused. Keys are `[[tsig_key]]` names; a key only for
//! transfers needs no `zones`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use super::fields::{normalize_name, normalize_zone};
use super::network::Network;
use super::tsig_key::TsigKey;
use crate::problems::Problems;

/// The port a secondary is sent NOTIFY on when its address has none.
pub const DNS_PORT: u16 = 53;

/// A name server that copies zones from dnsd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secondary {
    pub address: SocketAddr,
    /// The `[[tsig_key]]` its transfers and NOTIFYs are signed with.
    pub tsig_key: Option<String>,
    /// The zones it copies (fully qualified, lower case); empty: every one.
    pub zones: Vec<String>,
    /// 1-based line of the `[[secondary]]` entry.
    pub line: usize,
}

impl Secondary {
    /// Whether it copies zone `origin` (fully qualified, lower case).
    pub fn copies(&self, origin: &str) -> bool {
        self.zones.is_empty() || self.zones.iter().any(|z| z == origin)
    }
}

/// Who may transfer besides the secondaries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferConfig {
    pub allow: Vec<Allow>,
}

/// One entry of `[transfer] allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// Any address in this network.
    Net(Network),
    /// Any request signed with this `[[tsig_key]]`.
    Key(String),
}

impl Allow {
    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Allow::Net(net) => net.contains(ip),
            Allow::Key(_) => false,
        }
    }
}

impl std::fmt::Display for Allow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allow::Net(net) => write!(f, "{net}"),
            Allow::Key(name) => write!(f, "key:{name}"),
        }
    }
}

/// Whether a transfer of zone `origin` (fully qualified, lower case) may be
/// given to a client at `ip` whose request was signed with `key` (checked
/// by the caller), under `secondaries` and `transfer`.
pub fn may_transfer(
    secondaries: &[Secondary],
    transfer: &TransferConfig,
    origin: &str,
    ip: IpAddr,
    key: Option<&str>,
) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let as_secondary = secondaries.iter().any(|s| {
        s.address.ip() == ip
            && s.copies(origin)
            && s.tsig_key.as_deref().is_none_or(|k| key == Some(k))
    });
    as_secondary
        || transfer.allow.iter().any(|a| match a {
            Allow::Net(_) => a.contains(ip),
            Allow::Key(k) => key == Some(k.as_str()),
        })
}

/// One `[[secondary]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecondary {
    address: Spanned<String>,
    tsig_key: Option<Spanned<String>>,
    zones: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[transfer]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransfer {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

/// A key name `field` refers to: one of `keys`, normalized.
pub(super) fn known_key(
    name: &Spanned<String>,
    field: &str,
    keys: &[TsigKey],
    problems: &mut Problems<'_>,
) -> Option<String> {
    let normalized = match normalize_name(name.get_ref()) {
        Ok(n) => n,
        Err(m) => {
            problems.at(name.span(), field, m);
            return None;
        }
    };
    if !keys.iter().any(|k| k.name == normalized) {
        problems.at(
            name.span(),
            field,
            format!("{normalized} is not a [[tsig_key]] of this file"),
        );
        return None;
    }
    Some(normalized)
}

pub(super) fn parse_secondaries(
    raw: &[Spanned<RawSecondary>],
    keys: &[TsigKey],
    problems: &mut Problems<'_>,
) -> Vec<Secondary> {
    let mut out = Vec::with_capacity(raw.len());
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, s) in raw.iter().enumerate() {
        let line = problems.line(s.span().start);
        let s = s.get_ref();
        let field = format!("secondary[{i}].address");
        let address = match super::replica::server_address(s.address.get_ref(), "send NOTIFY to") {
            Ok(a) => a,
            Err(m) => {
                problems.at(s.address.span(), field, m);
                continue;
            }
        };
        if let Some(first) = seen.insert(address, i) {
            problems.at(
                s.address.span(),
                field,
                format!("{address} is already secondary[{first}]"),
            );
            continue;
        }
        let tsig_key = match &s.tsig_key {
            Some(k) => match known_key(k, &format!("secondary[{i}].tsig_key"), keys, problems) {
                Some(k) => Some(k),
                None => continue,
            },
            None => None,
        };
        let mut zones = Vec::new();
        if let Some(list) = &s.zones {
            for (j, written) in list.get_ref().iter().enumerate() {
                let field = format!("secondary[{i}].zones[{j}]");
                match normalize_zone(written.get_ref()) {
                    Ok(z) if !zones.contains(&z) => zones.push(z),
                    Ok(z) => problems.at(written.span(), field, format!("{z} is listed twice")),
                    Err(m) => problems.at(written.span(), field, m),
                }
            }
        }
        out.push(Secondary {
            address,
            tsig_key,
            zones,
            line,
        });
    }
    out
}

pub(super) fn parse_transfer(
    raw: RawTransfer,
    keys: &[TsigKey],
    problems: &mut Problems<'_>,
) -> TransferConfig {
    let mut allow = Vec::with_capacity(raw.allow.len());
    for (i, entry) in raw.allow.iter().enumerate() {
        let field = format!("transfer.allow[{i}]");
        let text = entry.get_ref().trim();
        let parsed = if let Some(key) = text.strip_prefix("key:") {
            let name = Spanned::new(entry.span(), key.to_string());
            known_key(&name, &field, keys, problems).map(Allow::Key)
        } else {
            match net(text) {
                Ok(n) => Some(n),
                Err(m) => {
                    problems.at(entry.span(), field, m);
                    None
                }
            }
        };
        match parsed {
            Some(a) if allow.contains(&a) => problems.at(
                entry.span(),
                format!("transfer.allow[{i}]"),
                format!("{a} is listed twice"),
            ),
            Some(a) => allow.push(a),
            None => {}
        }
    }
    TransferConfig { allow }
}

/// A network, `198.18.0.0/15` or an address alone (all its bits).
fn net(text: &str) -> Result<Allow, String> {
    if !text.contains('/') && text.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{text:?} is neither a network (127.0.0.0/8, 2001:2::/48, 198.18.0.5) nor a key (key:xfr-key.)"
        ));
    }
    Network::parse(text).map(Allow::Net)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{only_error, parse_str};
    use super::*;

    const KEY: &str = "[[tsig_key]]\nname = \"xfr-key.\"\nalgorithm = \"hmac-sha256\"\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";

    #[test]
    fn secondaries_and_readers_parse_and_decide_who_may_transfer() {
        let cfg = parse_str(&format!(
            "{KEY}
[[secondary]]
address = \"198.18.0.54\"
tsig_key = \"XFR-key\"
zones = [\"Example.Test\"]

[[secondary]]
address = \"[2001:2::55]:5353\"

[transfer]
allow = [\"127.0.0.0/8\", \"key:xfr-key.\", \"2001:2::/48\"]
"
        ))
        .unwrap();
        let s = &cfg.secondaries;
        assert_eq!(s[0].address, "198.18.0.54:53".parse().unwrap());
        assert_eq!(s[0].tsig_key.as_deref(), Some("xfr-key."));
        assert_eq!(s[0].zones, ["example.test."]);
        assert_eq!(s[0].line, 6);
        assert!(s[1].copies("other.test."));
        let may = |origin: &str, ip: &str, key: Option<&str>| {
            may_transfer(s, &cfg.transfer, origin, ip.parse().unwrap(), key)
        };
        // The secondary, with its key; not without it, not another zone.
        assert!(may("example.test.", "198.18.0.54", Some("xfr-key.")));
        assert!(!may("other.test.", "198.18.0.54", None));
        assert!(may("other.test.", "2001:2::55", None));
        assert!(may("other.test.", "127.0.0.9", None));
        assert!(may("other.test.", "::ffff:127.0.0.9", None));
        assert!(may("other.test.", "198.18.3.3", Some("xfr-key.")));
        assert!(!may("other.test.", "198.18.3.3", None));
        assert!(!may("example.test.", "198.18.0.55", None));
    }

    #[test]
    fn a_key_that_is_not_defined_or_an_address_that_is_not_one_is_refused() {
        let (line, field, message) =
            only_error("[[secondary]]\naddress = \"198.18.0.54\"\ntsig_key = \"nokey.\"\n");
        assert_eq!((line, field.as_str()), (3, "secondary[0].tsig_key"));
        assert!(message.contains("not a [[tsig_key]]"), "{message}");
        let (_, field, message) = only_error("[[secondary]]\naddress = \"ns2.example.test\"\n");
        assert_eq!(field, "secondary[0].address");
        assert!(message.contains("is not an address"), "{message}");
        let (_, field, message) = only_error("[transfer]\nallow = [\"198.18.0.0/40\"]\n");
        assert_eq!(field, "transfer.allow[0]");
        assert!(message.contains("at most 32 bits"), "{message}");
        let (_, _, message) = only_error("[transfer]\nallow = [\"key:none.\"]\n");
        assert!(message.contains("not a [[tsig_key]]"), "{message}");
    }

    #[test]
    fn a_key_without_zones_signs_transfers_and_updates_nothing() {
        let cfg = parse_str(KEY).unwrap();
        assert!(cfg.tsig_keys[0].zones.is_empty());
    }
}
