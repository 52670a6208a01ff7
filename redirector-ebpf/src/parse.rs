//! Header parsing: Ethernet, IPv4 without options or IPv6 without extension
//! headers, then TCP or UDP. Every packet access goes through `ptr_at`,
//! which the verifier can see is bounds-checked. Anything that is not a
//! well-formed, unfragmented TCP segment or UDP datagram is reported with
//! the counter that says why it is passed untouched.

use core::{mem::size_of, ptr::NonNull};

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr};
use redirector_common::{FlowKeyOf, IPPROTO_TCP, IPPROTO_UDP, counter};

use crate::family::Family;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// TCP flag bits in byte 13 of the header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A pointer to a `T` at `offset` in the frame, if the whole `T` lies in it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The frame's Ethernet type (host order), if it has a whole header.
#[inline(always)]
pub fn ether_type(ctx: &XdpContext) -> Option<u16> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    Some(u16::from_be(unsafe { (*eth).ether_type }))
}

/// A parsed IPv4 or IPv6 frame with a TCP segment or a UDP datagram. The
/// pointers stay valid for the whole program run (nothing here changes the
/// frame's size).
pub struct Segment<A: Family> {
    pub eth: *mut EthHdr,
    pub ip: *mut A::Hdr,
    /// Source and destination port: the first four bytes of TCP and UDP.
    pub ports: *mut [u16; 2],
    /// The TCP or UDP checksum field.
    pub check: *mut u16,
    /// The TCP header; none for UDP.
    pub tcp: Option<NonNull<TcpHdr>>,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    /// Frame length in bytes, for the byte counters.
    pub len: u32,
}

impl<A: Family> Segment<A> {
    /// The 4-tuple as received, in network order: the flow table's key.
    #[inline(always)]
    pub fn key(&self) -> FlowKeyOf<A> {
        unsafe {
            let [sport, dport] = *self.ports;
            A::key(A::src(self.ip), A::dst(self.ip), sport, dport, self.proto)
        }
    }

    /// The TCP flags byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR); none
    /// for UDP.
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        let Some(tcp) = self.tcp else {
            return 0;
        };
        // Byte 13 of the TCP header; `tcp` points at 20 readable bytes.
        unsafe { *tcp.as_ptr().cast::<u8>().add(13) }
    }

    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP
    }

    /// TTL or hop limit.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        unsafe { A::ttl(self.ip) }
    }

    /// The packet's length, IP header included: its size on the wire, or
    /// that of the segments together for a GSO packet in generic mode.
    #[inline(always)]
    pub fn ip_len(&self) -> u16 {
        unsafe { A::ip_len(self.ip) }
    }

    /// Whether routers may not fragment it (DF, or any IPv6 packet).
    #[inline(always)]
    pub fn dont_fragment(&self) -> bool {
        unsafe { A::dont_fragment(self.ip) }
    }

    /// The sequence number (host order); 0 for UDP.
    #[inline(always)]
    pub fn seq(&self) -> u32 {
        let Some(tcp) = self.tcp else {
            return 0;
        };
        unsafe { u32::from_be_bytes((*tcp.as_ptr()).seq) }
    }

    /// The sequence number just past this segment: its payload, and one for
    /// a SYN or a FIN (host order); 0 for UDP.
    #[inline(always)]
    pub fn seq_end(&self) -> u32 {
        let Some(tcp) = self.tcp else {
            return 0;
        };
        let doff = (unsafe { *tcp.as_ptr().cast::<u8>().add(12) } >> 4) as u32 * 4;
        let payload = (self.ip_len() as u32).wrapping_sub(A::HDR_LEN as u32 + doff);
        let flags = self.tcp_flags();
        let control = (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
        self.seq().wrapping_add(payload).wrapping_add(control)
    }
}

/// Finds the IP and TCP or UDP headers of a frame of family `A`, or says
/// which pass-through counter applies.
#[inline(always)]
pub fn packet<A: Family>(ctx: &XdpContext) -> Result<Segment<A>, u32> {
    let len = ctx.data_end() - ctx.data();
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(counter::PASS_MALFORMED)?;
    // A VLAN tag would need its own FIB lookup on the VLAN device: such
    // frames go to the kernel like any other frame that is not IP.
    if u16::from_be(unsafe { (*eth).ether_type }) != A::ETHER_TYPE {
        return Err(counter::PASS_NOT_IP);
    }
    let ip: *mut A::Hdr = ptr_at(ctx, EthHdr::LEN).ok_or(counter::PASS_MALFORMED)?;
    let (proto, ip_len) = A::check(ip, len - EthHdr::LEN)?;
    let l4 = EthHdr::LEN + A::HDR_LEN;
    match proto {
        IPPROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, l4).ok_or(counter::PASS_MALFORMED)?;
            let doff = (unsafe { *(tcp as *const u8).add(12) } >> 4) as usize * 4;
            if doff < TcpHdr::LEN || A::HDR_LEN + doff > ip_len {
                return Err(counter::PASS_MALFORMED);
            }
            Ok(Segment {
                eth,
                ip,
                ports: tcp.cast(),
                check: unsafe { &raw mut (*tcp).check }.cast(),
                tcp: NonNull::new(tcp),
                proto,
                len: len as u32,
            })
        }
        IPPROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, l4).ok_or(counter::PASS_MALFORMED)?;
            // A GSO datagram's length field holds one segment's; only a
            // length below the header is a lie in every case.
            if (u16::from_be_bytes(unsafe { (*udp).len }) as usize) < UdpHdr::LEN
                || A::HDR_LEN + UdpHdr::LEN > ip_len
            {
                return Err(counter::PASS_MALFORMED);
            }
            Ok(Segment {
                eth,
                ip,
                ports: udp.cast(),
                check: unsafe { &raw mut (*udp).check }.cast(),
                tcp: None,
                proto,
                len: len as u32,
            })
        }
        _ => Err(counter::PASS_OTHER_PROTOCOL),
    }
}
