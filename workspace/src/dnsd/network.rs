//! An IP network as `dnsd.toml` writes it (`198.18.0.0/15`, `2001:2::/48`,
//! or an address alone), for the sections that match clients by address:
//! `[transfer] allow` and `[regions]`.

use std::net::IpAddr;

/// A network: the addresses whose first `prefix` bits are `addr`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    /// Reads `198.18.0.0/15`, `2001:2::/48` or `198.18.0.5` (all its bits).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not a network (198.18.0.0/15, 2001:2::/48, 198.18.0.5)");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                Some(p.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (text.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let bits = Self::bits_of(addr);
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(format!("{text:?}: a prefix of at most {bits} bits"));
        }
        Ok(Self { addr, prefix })
    }

    fn bits_of(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is in the network. An IPv4 client seen on an IPv6
    /// socket (`::ffff:a.b.c.d`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.common_bits(ip)
            .is_some_and(|common| common >= self.prefix)
    }

    /// How many leading bits `ip` shares with the network's address (at
    /// most the family's width); `None` for the other family.
    pub fn common_bits(&self, ip: IpAddr) -> Option<u8> {
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            (IpAddr::V4(n), IpAddr::V6(i)) => {
                let i = i.to_ipv4_mapped()?;
                (u32::from(n) as u128, u32::from(i) as u128, 32)
            }
            _ => return None,
        };
        let differing = (net ^ ip) << (128 - bits);
        Some((differing.leading_zeros().min(bits)) as u8)
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_match_by_their_prefix() {
        let n = Network::parse("198.18.64.0/18").unwrap();
        assert!(n.contains("198.18.127.255".parse().unwrap()));
        assert!(!n.contains("198.18.128.0".parse().unwrap()));
        assert!(n.contains("::ffff:198.18.64.1".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("198.19.0.1".parse().unwrap()));
        let v6 = Network::parse("2001:2:0:8000::/49").unwrap();
        assert!(v6.contains("2001:2:0:8000::1".parse().unwrap()));
        assert!(!v6.contains("2001:2::1".parse().unwrap()));
        assert_eq!(Network::parse("198.18.0.5").unwrap().prefix, 32);
        assert!(Network::parse("198.18.0.0/33").is_err());
        assert!(Network::parse("eu").is_err());
    }
}
