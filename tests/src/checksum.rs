//! The Internet checksum (RFC 1071) of headers and segments the harness
//! builds byte by byte (the SYN flood, the benchmark's packet generator).

use std::net::IpAddr;

/// The checksum of an IPv4 header (its checksum field zero).
pub fn ipv4_header(header: &[u8]) -> u16 {
    fold(sum(header, 0))
}

/// The TCP or UDP checksum of `segment` (its checksum field zero) from
/// `saddr` to `daddr`, over the IPv4 or IPv6 pseudo-header (their sums
/// differ only in the addresses' length).
pub fn l4(saddr: impl Into<IpAddr>, daddr: impl Into<IpAddr>, proto: u8, segment: &[u8]) -> u16 {
    let octets = |a: IpAddr| match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut pseudo = sum(&octets(saddr.into()), 0);
    pseudo = sum(&octets(daddr.into()), pseudo);
    pseudo += u32::from(proto) + segment.len() as u32;
    fold(sum(segment, pseudo))
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    for pair in data.chunks(2) {
        let lo = pair.get(1).copied().unwrap_or(0);
        acc += u32::from(u16::from_be_bytes([pair[0], lo]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_its_checksum_sums_to_zero() {
        let mut h = [
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        let c = ipv4_header(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ipv4_header(&h), 0);
    }
}
