//! Crafted IPv6 frames and a from-scratch checker: the IPv6 counterpart of
//! `frame`. As there, checksums are always computed over the whole
//! pseudo-header and segment, never incrementally, so they are an
//! independent check of the program's RFC 1624 updates. IPv6 has no header
//! checksum, so the upper-layer checksum is the only one to check.

#![allow(dead_code)]

use std::net::{Ipv6Addr, SocketAddrV6};

use super::frame::{
    ETH_IPV6, Header, PROTO_TCP, PROTO_UDP, SeenOf, TcpOf, UdpOf, checksum, ethernet,
    read_transport,
};

/// ICMPv6's Next Header value (RFC 4443).
pub const PROTO_ICMPV6: u8 = 58;

/// The RFC 8200 §8.1 pseudo-header: source, destination, upper-layer
/// length as 32 bits, three zero bytes and the Next Header value.
fn pseudo_header(saddr: Ipv6Addr, daddr: Ipv6Addr, next: u8, len: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(40);
    buf.extend_from_slice(&saddr.octets());
    buf.extend_from_slice(&daddr.octets());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0]);
    buf.push(next);
    buf
}

/// TCP/UDP/ICMPv6 checksum: pseudo-header plus `payload` (with its checksum
/// field). With the field zeroed it is the value to write; over a correct
/// segment it is 0.
pub fn l6_checksum(saddr: Ipv6Addr, daddr: Ipv6Addr, next: u8, payload: &[u8]) -> u16 {
    let mut buf = pseudo_header(saddr, daddr, next, payload.len() as u32);
    buf.extend_from_slice(payload);
    checksum(&buf)
}

/// What the kernel keeps in the checksum field of a GSO packet of protocol
/// `proto`: the pseudo-header's sum for a segment of `len` bytes, folded,
/// not complemented; segmentation completes it.
pub fn gso_partial_checksum6(proto: u8, saddr: Ipv6Addr, daddr: Ipv6Addr, len: u16) -> u16 {
    !checksum(&pseudo_header(saddr, daddr, proto, len as u32))
}

/// An IPv6 packet's fields (there is no header checksum to compute).
#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub saddr: Ipv6Addr,
    pub daddr: Ipv6Addr,
    /// The upper-layer protocol. With extension headers this is what the
    /// caller wrote into the last one of `ext`; the header carries `ext_next`.
    pub next: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// The low 20 bits are used.
    pub flow_label: u32,
    /// Raw extension-header bytes placed between the fixed header and the
    /// payload; written as they are, so malformed chains can be crafted too.
    pub ext: Vec<u8>,
    /// The first extension header's type (0 hop-by-hop, 43 routing, 44
    /// fragment, 60 destination options), written as the fixed header's Next
    /// Header; used only when `ext` is non-empty.
    pub ext_next: u8,
}

impl Ipv6 {
    /// A header from `saddr` to `daddr` carrying `next`, hop limit 64, no
    /// traffic class, no flow label, no extension headers.
    pub fn new(saddr: Ipv6Addr, daddr: Ipv6Addr, next: u8) -> Self {
        Self {
            saddr,
            daddr,
            next,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            ext: Vec::new(),
            ext_next: 0,
        }
    }

    /// The 40-byte fixed header, then `ext`, then `payload`; the Payload
    /// Length covers both `ext` and `payload`.
    pub fn bytes(&self, payload: &[u8]) -> Vec<u8> {
        let payload_len = self.ext.len() + payload.len();
        assert!(
            payload_len <= 0xffff,
            "IPv6 payload too long (no jumbograms)"
        );
        let mut h = Vec::with_capacity(40 + payload_len);
        let word =
            (6u32 << 28) | ((self.traffic_class as u32) << 20) | (self.flow_label & 0xf_ffff);
        h.extend_from_slice(&word.to_be_bytes());
        h.extend_from_slice(&(payload_len as u16).to_be_bytes());
        h.push(if self.ext.is_empty() {
            self.next
        } else {
            self.ext_next
        });
        h.push(self.hop_limit);
        h.extend_from_slice(&self.saddr.octets());
        h.extend_from_slice(&self.daddr.octets());
        h.extend_from_slice(&self.ext);
        h.extend_from_slice(payload);
        h
    }
}

impl Header for Ipv6 {
    type Socket = SocketAddrV6;
    const ETHER_TYPE: u16 = ETH_IPV6;
    /// 1500 - 40 - 20 = 1440.
    const MSS_OPTION: [u8; 4] = [2, 4, 0x05, 0xa0];
    fn new(from: SocketAddrV6, to: SocketAddrV6, proto: u8) -> Self {
        Ipv6::new(*from.ip(), *to.ip(), proto)
    }
    fn port(s: SocketAddrV6) -> u16 {
        s.port()
    }
    fn proto(&self) -> u8 {
        self.next
    }
    fn checksum(&self, proto: u8, segment: &[u8]) -> u16 {
        l6_checksum(self.saddr, self.daddr, proto, segment)
    }
    fn bytes(&self, payload: &[u8]) -> Vec<u8> {
        Ipv6::bytes(self, payload)
    }
}

/// A TCP segment in an Ethernet/IPv6 frame (see `frame::TcpOf`).
pub type Tcp6 = TcpOf<Ipv6>;
/// A UDP datagram in an Ethernet/IPv6 frame (see `frame::UdpOf`).
pub type Udp6 = UdpOf<Ipv6>;

/// The checksum field of the UDP datagram in an Ethernet/IPv6 frame without
/// extension headers.
pub fn udp6_checksum_field(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[14 + 40 + 6], f[14 + 40 + 7]])
}

/// An IPv6 frame read back (`ttl` is its hop limit).
pub type Seen6 = SeenOf<Ipv6Addr>;

impl Seen6 {
    /// The sender's socket address (flow info and scope 0).
    pub fn from(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.saddr, self.sport, 0, 0)
    }
    /// The receiver's socket address (flow info and scope 0).
    pub fn to(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.daddr, self.dport, 0, 0)
    }
}

/// Checks the Ethernet/IPv6 framing common to every parser here and returns
/// the IPv6 header and its payload (without any Ethernet padding).
fn ipv6_checked(f: &[u8]) -> (&[u8], &[u8]) {
    assert!(f.len() >= 14 + 40, "frame too short: {} bytes", f.len());
    assert_eq!(
        u16::from_be_bytes([f[12], f[13]]),
        ETH_IPV6,
        "not IPv6 (ether type {:#06x})",
        u16::from_be_bytes([f[12], f[13]])
    );
    let ip = &f[14..];
    assert_eq!(ip[0] >> 4, 6, "IP version is {}, not 6", ip[0] >> 4);
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    assert!(
        ip.len() >= 40 + payload_len,
        "IPv6 payload length {payload_len} but only {} bytes follow the header",
        ip.len() - 40
    );
    (&ip[..40], &ip[40..40 + payload_len])
}

fn addrs(ip: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let saddr: [u8; 16] = ip[8..24].try_into().unwrap();
    let daddr: [u8; 16] = ip[24..40].try_into().unwrap();
    (Ipv6Addr::from(saddr), Ipv6Addr::from(daddr))
}

/// Parses an Ethernet/IPv6/TCP or UDP frame without extension headers and
/// checks the upper-layer checksum from scratch over the pseudo-header (a
/// UDP checksum of 0 is accepted as "none", as `frame::parse_checked` does);
/// panics with what is wrong. The frame may be longer than the packet only
/// by Ethernet padding.
pub fn parse_checked6(f: &[u8]) -> Seen6 {
    let (ip, seg) = ipv6_checked(f);
    let (saddr, daddr) = addrs(ip);
    let next = ip[6];
    assert!(
        next == PROTO_TCP || next == PROTO_UDP,
        "next header {next} is neither TCP nor UDP (extension headers are not parsed)"
    );
    let header = Ipv6::new(saddr, daddr, next);
    read_transport(f, &header, (saddr, daddr), ip[7], seg)
}

/// An Ethernet/IPv6/ICMPv6 error frame (hop limit 64) from `saddr` to
/// `daddr`: type `kind`, `code`, the 4-byte `info` word (the MTU for Packet
/// Too Big, type 2; unused, 0, for the others) and `quoted`, the invoking
/// packet from its IPv6 header on. The checksum covers the pseudo-header
/// (RFC 4443 §2.3).
#[allow(clippy::too_many_arguments)]
pub fn icmp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    saddr: Ipv6Addr,
    daddr: Ipv6Addr,
    kind: u8,
    code: u8,
    info: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + quoted.len());
    body.push(kind);
    body.push(code);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&info.to_be_bytes());
    body.extend_from_slice(quoted);
    let c = l6_checksum(saddr, daddr, PROTO_ICMPV6, &body);
    body[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(
        dst_mac,
        src_mac,
        ETH_IPV6,
        &Ipv6::new(saddr, daddr, PROTO_ICMPV6).bytes(&body),
    )
}

/// What a test reads back from an ICMPv6 output frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icmp6Seen {
    pub saddr: Ipv6Addr,
    pub daddr: Ipv6Addr,
    pub hop_limit: u8,
    pub kind: u8,
    pub code: u8,
    /// The MTU for Packet Too Big, the pointer for Parameter Problem.
    pub info: u32,
    /// The invoking packet, from its IPv6 header on.
    pub quoted: Vec<u8>,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// Parses an Ethernet/IPv6/ICMPv6 frame without extension headers and
/// checks the ICMPv6 checksum from scratch over the pseudo-header; panics
/// with what is wrong.
pub fn parse_icmp6_checked(f: &[u8]) -> Icmp6Seen {
    let (ip, body) = ipv6_checked(f);
    let (saddr, daddr) = addrs(ip);
    assert_eq!(
        ip[6], PROTO_ICMPV6,
        "next header {} is not ICMPv6 (extension headers are not parsed)",
        ip[6]
    );
    assert!(
        body.len() >= 8,
        "ICMPv6 message too short: {} bytes",
        body.len()
    );
    assert_eq!(
        l6_checksum(saddr, daddr, PROTO_ICMPV6, body),
        0,
        "ICMPv6 checksum is wrong"
    );
    Icmp6Seen {
        saddr,
        daddr,
        hop_limit: ip[7],
        kind: body[0],
        code: body[1],
        info: u32::from_be_bytes(body[4..8].try_into().unwrap()),
        quoted: body[8..].to_vec(),
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
    }
}
