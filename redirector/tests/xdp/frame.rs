//! Crafted frames and a from-scratch checker. Checksums here are always
//! computed over the whole header/segment, never incrementally, so they are
//! an independent check of the program's RFC 1624 updates.

use std::fmt::Debug;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_VLAN: u16 = 0x8100;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP/UDP checksum: pseudo-header plus segment (with its checksum field).
fn l4_checksum(saddr: Ipv4Addr, daddr: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut buf = Vec::with_capacity(12 + segment.len());
    buf.extend_from_slice(&saddr.octets());
    buf.extend_from_slice(&daddr.octets());
    buf.push(0);
    buf.push(proto);
    buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    buf.extend_from_slice(segment);
    checksum(&buf)
}

/// What the kernel keeps in the TCP checksum field of a GSO packet: the
/// pseudo-header's sum for a segment of `len` bytes, folded, not
/// complemented; segmentation completes it.
pub fn gso_partial_checksum(saddr: Ipv4Addr, daddr: Ipv4Addr, len: u16) -> u16 {
    gso_partial_checksum_of(PROTO_TCP, saddr, daddr, len)
}

/// The same for a datagram of protocol `proto` (UDP GSO keeps it too).
pub fn gso_partial_checksum_of(proto: u8, saddr: Ipv4Addr, daddr: Ipv4Addr, len: u16) -> u16 {
    let mut buf = Vec::with_capacity(12);
    buf.extend_from_slice(&saddr.octets());
    buf.extend_from_slice(&daddr.octets());
    buf.push(0);
    buf.push(proto);
    buf.extend_from_slice(&len.to_be_bytes());
    !checksum(&buf)
}

/// An Ethernet frame with `ether_type` and `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet fields (the header checksum is computed by `bytes`).
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset word (0x4000 = DF).
    pub frag: u16,
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(saddr: Ipv4Addr, daddr: Ipv4Addr, proto: u8) -> Self {
        Self {
            saddr,
            daddr,
            proto,
            ttl: 64,
            tos: 0,
            id: 0x1234,
            frag: 0x4000,
            options: Vec::new(),
        }
    }

    /// Header (with a correct checksum) followed by `payload`.
    pub fn bytes(&self, payload: &[u8]) -> Vec<u8> {
        assert!(
            self.options.len().is_multiple_of(4),
            "IP options come in words"
        );
        let hlen = 20 + self.options.len();
        let total = (hlen + payload.len()) as u16;
        let mut h = Vec::with_capacity(hlen + payload.len());
        h.push(0x40 | (hlen / 4) as u8);
        h.push(self.tos);
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.saddr.octets());
        h.extend_from_slice(&self.daddr.octets());
        h.extend_from_slice(&self.options);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// What the TCP and UDP builders need of an IP header, IPv4 (`Ipv4`) or
/// IPv6 (`frame6::Ipv6`).
pub trait Header: Clone + Debug {
    /// `SocketAddrV4` or `SocketAddrV6`.
    type Socket: Copy;
    const ETHER_TYPE: u16;
    /// The MSS option of a SYN as Linux sends it on a 1500-byte link.
    const MSS_OPTION: [u8; 4];
    fn new(from: Self::Socket, to: Self::Socket, proto: u8) -> Self;
    fn port(s: Self::Socket) -> u16;
    /// The transport protocol the header says.
    fn proto(&self) -> u8;
    /// The TCP or UDP checksum of `segment` over this header's
    /// pseudo-header.
    fn checksum(&self, proto: u8, segment: &[u8]) -> u16;
    /// The header followed by `payload`.
    fn bytes(&self, payload: &[u8]) -> Vec<u8>;
}

impl Header for Ipv4 {
    type Socket = SocketAddrV4;
    const ETHER_TYPE: u16 = ETH_IPV4;
    const MSS_OPTION: [u8; 4] = [2, 4, 0x05, 0xb4];
    fn new(from: SocketAddrV4, to: SocketAddrV4, proto: u8) -> Self {
        Ipv4::new(*from.ip(), *to.ip(), proto)
    }
    fn port(s: SocketAddrV4) -> u16 {
        s.port()
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn checksum(&self, proto: u8, segment: &[u8]) -> u16 {
        l4_checksum(self.saddr, self.daddr, proto, segment)
    }
    fn bytes(&self, payload: &[u8]) -> Vec<u8> {
        Ipv4::bytes(self, payload)
    }
}

/// A TCP segment over IPv4.
pub type Tcp = TcpOf<Ipv4>;
/// A UDP datagram over IPv4.
pub type Udp = UdpOf<Ipv4>;

/// A TCP segment in an Ethernet frame, as a client or server would send it.
#[derive(Clone, Debug)]
pub struct TcpOf<H> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ip: H,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl<H: Header> TcpOf<H> {
    /// A SYN from `from` to `to` with an MSS option, as Linux sends one.
    pub fn syn(src_mac: [u8; 6], dst_mac: [u8; 6], from: H::Socket, to: H::Socket) -> Self {
        Self {
            src_mac,
            dst_mac,
            ip: H::new(from, to, PROTO_TCP),
            sport: H::port(from),
            dport: H::port(to),
            seq: 0x0102_0304,
            ack: 0,
            flags: SYN,
            window: 64240,
            options: H::MSS_OPTION.to_vec(),
            payload: Vec::new(),
        }
    }

    /// The same segment with other flags and a payload.
    pub fn with(mut self, flags: u8, payload: &[u8]) -> Self {
        self.flags = flags;
        self.options.clear();
        self.payload = payload.to_vec();
        if flags & ACK != 0 {
            self.ack = 0x0a0b_0c0d;
        }
        self
    }

    /// The TCP segment alone, checksummed for the IP addresses.
    pub fn segment(&self) -> Vec<u8> {
        assert!(
            self.options.len().is_multiple_of(4),
            "TCP options come in words"
        );
        let hlen = 20 + self.options.len();
        let mut s = Vec::with_capacity(hlen + self.payload.len());
        s.extend_from_slice(&self.sport.to_be_bytes());
        s.extend_from_slice(&self.dport.to_be_bytes());
        s.extend_from_slice(&self.seq.to_be_bytes());
        s.extend_from_slice(&self.ack.to_be_bytes());
        s.push(((hlen / 4) as u8) << 4);
        s.push(self.flags);
        s.extend_from_slice(&self.window.to_be_bytes());
        s.extend_from_slice(&[0, 0, 0, 0]);
        s.extend_from_slice(&self.options);
        s.extend_from_slice(&self.payload);
        let c = self.ip.checksum(PROTO_TCP, &s);
        s[16..18].copy_from_slice(&c.to_be_bytes());
        s
    }

    pub fn bytes(&self) -> Vec<u8> {
        ethernet(
            self.dst_mac,
            self.src_mac,
            H::ETHER_TYPE,
            &self.ip.bytes(&self.segment()),
        )
    }
}

/// A UDP datagram in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct UdpOf<H> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ip: H,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// Send a checksum of 0 ("none", RFC 768) instead of the real one
    /// (over IPv6, where it is mandatory, a datagram a receiver drops).
    pub no_checksum: bool,
}

impl<H: Header> UdpOf<H> {
    pub fn new(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        from: H::Socket,
        to: H::Socket,
        payload: &[u8],
    ) -> Self {
        Self {
            src_mac,
            dst_mac,
            ip: H::new(from, to, PROTO_UDP),
            sport: H::port(from),
            dport: H::port(to),
            payload: payload.to_vec(),
            no_checksum: false,
        }
    }

    /// The datagram alone, checksummed for the IP addresses.
    pub fn datagram(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(8 + self.payload.len());
        d.extend_from_slice(&self.sport.to_be_bytes());
        d.extend_from_slice(&self.dport.to_be_bytes());
        d.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.payload);
        if !self.no_checksum {
            let c = match self.ip.checksum(PROTO_UDP, &d) {
                0 => 0xffff,
                c => c,
            };
            d[6..8].copy_from_slice(&c.to_be_bytes());
        }
        d
    }

    pub fn bytes(&self) -> Vec<u8> {
        ethernet(
            self.dst_mac,
            self.src_mac,
            H::ETHER_TYPE,
            &self.ip.bytes(&self.datagram()),
        )
    }
}

/// The checksum field of the UDP datagram in an Ethernet/IPv4 frame.
pub fn udp_checksum_field(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[14 + 20 + 6], f[14 + 20 + 7]])
}

/// What a test reads back from an output frame, of either family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenOf<A> {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub saddr: A,
    pub daddr: A,
    /// TTL, or IPv6's hop limit.
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP only (0 for UDP).
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    pub proto: u8,
}

/// An IPv4 frame read back.
pub type Seen = SeenOf<Ipv4Addr>;

impl Seen {
    pub fn from(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.saddr, self.sport)
    }
    pub fn to(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.daddr, self.dport)
    }
}

/// Parses an Ethernet/IPv4/TCP or UDP frame and checks both checksums from
/// scratch (a UDP checksum of 0 is "none"); panics with what is wrong.
pub fn parse_checked(f: &[u8]) -> Seen {
    assert!(f.len() >= 14 + 20 + 8, "frame too short: {} bytes", f.len());
    assert_eq!(u16::from_be_bytes([f[12], f[13]]), ETH_IPV4, "not IPv4");
    let ip = &f[14..];
    let hlen = ((ip[0] & 0x0f) * 4) as usize;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(checksum(&ip[..hlen]), 0, "IPv4 header checksum is wrong");
    let saddr = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let daddr = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let header = Ipv4::new(saddr, daddr, ip[9]);
    read_transport(f, &header, (saddr, daddr), ip[8], &ip[hlen..total])
}

/// The TCP segment or UDP datagram `seg` (protocol `ip.proto`-like, as
/// `header` says) of frame `f`, with its checksum checked from scratch over
/// `header`'s pseudo-header (a UDP checksum of 0 is "none"): the
/// family-independent half of `parse_checked` and `frame6::parse_checked6`.
pub fn read_transport<H: Header, A>(
    f: &[u8],
    header: &H,
    (saddr, daddr): (A, A),
    ttl: u8,
    seg: &[u8],
) -> SeenOf<A> {
    let proto = header.proto();
    let mut seen = SeenOf {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        saddr,
        daddr,
        ttl,
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        flags: 0,
        payload: Vec::new(),
        proto,
    };
    if proto == PROTO_UDP {
        assert!(
            seg.len() >= 8,
            "UDP datagram too short: {} bytes",
            seg.len()
        );
        assert_eq!(
            u16::from_be_bytes([seg[4], seg[5]]) as usize,
            seg.len(),
            "UDP length"
        );
        if seg[6..8] != [0, 0] {
            assert_eq!(header.checksum(PROTO_UDP, seg), 0, "UDP checksum is wrong");
        }
        seen.payload = seg[8..].to_vec();
    } else {
        assert_eq!(proto, PROTO_TCP, "protocol {proto} is neither TCP nor UDP");
        assert!(
            seg.len() >= 20,
            "TCP segment too short: {} bytes",
            seg.len()
        );
        assert_eq!(header.checksum(PROTO_TCP, seg), 0, "TCP checksum is wrong");
        let doff = ((seg[12] >> 4) * 4) as usize;
        assert!(
            (20..=seg.len()).contains(&doff),
            "TCP data offset {doff} in a {}-byte segment",
            seg.len()
        );
        seen.seq = u32::from_be_bytes(seg[4..8].try_into().unwrap());
        seen.ack = u32::from_be_bytes(seg[8..12].try_into().unwrap());
        seen.flags = seg[13];
        seen.payload = seg[doff..].to_vec();
    }
    seen.sport = u16::from_be_bytes([seg[0], seg[1]]);
    seen.dport = u16::from_be_bytes([seg[2], seg[3]]);
    seen
}
