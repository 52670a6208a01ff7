//! `[regions]`: which client networks make up which region, for services
//! whose addresses name one (`{ address = "198.18.0.4", region = "eu" }`).
//!
//! ```toml
//! [regions]               # client network -> region; the longest prefix wins
//! "198.18.64.0/18" = "eu"
//! "2001:2:0:8000::/49" = "eu"
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use toml::Spanned;

use super::network::Network;
use crate::problems::Problems;

/// The client networks of each region, longest prefix first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Regions {
    networks: Vec<(Network, String)>,
}

impl Regions {
    /// The region of a client known by its first `known` bits (the ECS
    /// source prefix, or the address's width), and the scope the answer
    /// holds for (RFC 7871 §7.2.1): the longest network of `known` bits or
    /// fewer that holds the client decides; the scope is its prefix, made
    /// longer until the client's network of that length overlaps no
    /// network of another region (nor, undecided, of any region), so that
    /// a resolver never gives this answer to a client another region owns.
    pub fn decide(&self, ip: IpAddr, known: u8) -> (Option<&str>, u8) {
        let decided = self
            .networks
            .iter()
            .find(|(net, _)| net.prefix <= known && net.contains(ip));
        let region = decided.map(|(_, r)| r.as_str());
        let mut scope = decided.map_or(0, |(net, _)| net.prefix);
        for (net, r) in &self.networks {
            if net.prefix <= scope || Some(r.as_str()) == region {
                continue;
            }
            let Some(common) = net.common_bits(ip) else {
                continue;
            };
            if common < scope {
                // The client's network of `scope` bits excludes it already.
                continue;
            }
            // The first bit where the client leaves it, or, for a network
            // inside the client's known bits, all the client says.
            scope = if common >= net.prefix {
                scope.max(known)
            } else {
                scope.max(common + 1)
            };
        }
        (region, scope)
    }

    /// Whether some network belongs to `region`.
    pub fn names(&self, region: &str) -> bool {
        self.networks.iter().any(|(_, r)| r == region)
    }
}

pub(super) type RawRegions = BTreeMap<Spanned<String>, Spanned<String>>;

pub(super) fn parse(raw: &RawRegions, problems: &mut Problems<'_>) -> Regions {
    let mut networks = Vec::new();
    for (net, region) in raw {
        let field = format!("regions.{:?}", net.get_ref());
        let parsed = match Network::parse(net.get_ref()) {
            Ok(n) => n,
            Err(m) => {
                problems.at(net.span(), field, m);
                continue;
            }
        };
        let name = region.get_ref().trim();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.at(region.span(), field, "a region's name is one word");
            continue;
        }
        if networks
            .iter()
            .any(|(n, _): &(Network, String)| *n == parsed)
        {
            problems.at(net.span(), field, format!("{parsed} is listed twice"));
            continue;
        }
        networks.push((parsed, name.to_string()));
    }
    // Longest prefix first, so that the first match is the best one; an
    // IPv4 network never contains an IPv6 client (but mapped ones), so the
    // two families need no other order.
    networks.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix));
    Regions { networks }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{only_error, parse_str};

    #[test]
    fn the_longest_prefix_decides_the_region() {
        let cfg = parse_str(
            "[regions]\n\"198.18.0.0/15\" = \"world\"\n\"198.18.64.0/18\" = \"eu\"\n\"2001:2:0:8000::/49\" = \"eu\"\n",
        )
        .unwrap();
        let r = &cfg.regions;
        let of = |a: &str| r.decide(a.parse().unwrap(), 128).0;
        assert_eq!(of("198.18.64.9"), Some("eu"));
        assert_eq!(of("198.18.0.9"), Some("world"));
        assert_eq!(of("2001:2:0:8000::9"), Some("eu"));
        assert_eq!(of("2001:2::9"), None);
    }

    #[test]
    fn the_scope_keeps_other_regions_out() {
        let cfg = parse_str(
            "[regions]\n\"198.18.0.0/16\" = \"world\"\n\"198.18.64.0/18\" = \"eu\"\n\"198.18.128.0/18\" = \"us\"\n",
        )
        .unwrap();
        let r = &cfg.regions;
        let ip = |a: &str| a.parse().unwrap();
        // eu decides, and nothing else lies inside its /18.
        assert_eq!(r.decide(ip("198.18.64.0"), 24), (Some("eu"), 18));
        // world decides, but its /16 holds eu and us: the scope narrows to
        // the client's /18 (198.18.192.0/18), which holds neither.
        assert_eq!(r.decide(ip("198.18.200.0"), 24), (Some("world"), 18));
        // Outside every region: the scope that keeps them all out
        // (198.19.0.0/16 holds no region).
        assert_eq!(r.decide(ip("198.19.0.0"), 24), (None, 16));
        // A client known to /16 only cannot be placed in eu (an /18); the
        // scope, longer than its source prefix, says so (RFC 7871 §7.2.1:
        // "not specific enough to select the most appropriate" answer).
        assert_eq!(r.decide(ip("198.18.64.0"), 16), (Some("world"), 17));
    }

    #[test]
    fn a_bad_network_is_named() {
        let (line, field, message) = only_error("[regions]\n\"198.18.0.0/40\" = \"eu\"\n");
        assert_eq!((line, field.as_str()), (2, "regions.\"198.18.0.0/40\""));
        assert!(message.contains("prefix of at most 32"), "{message}");
        let (_, _, message) = only_error("[regions]\n\"198.18.0.0/16\" = \"e u\"\n");
        assert!(message.contains("one word"), "{message}");
    }
}
