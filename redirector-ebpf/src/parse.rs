//! Header parsing: Ethernet, IPv4 without options, TCP or UDP. Every packet
//! access goes through `ptr_at`, which the verifier can see is
//! bounds-checked. Anything that is not a well-formed, unfragmented IPv4
//! TCP segment or UDP datagram is reported with the counter that says why
//! it is passed untouched.

use core::{mem::size_of, ptr::NonNull};

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};
use redirector_common::{FlowKey, IPPROTO_TCP, IPPROTO_UDP, counter};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 flags/fragment-offset word: More Fragments bit and the offset.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

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

/// A parsed IPv4 frame with a TCP segment or a UDP datagram. The pointers
/// stay valid for the whole program run (nothing here changes the frame's
/// size).
pub struct Segment {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
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

impl Segment {
    /// The 4-tuple as received, in network order: the `FLOWS` key.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        unsafe {
            let [sport, dport] = *self.ports;
            crate::nat::flow_key(
                u32::from_ne_bytes((*self.ip).src_addr),
                u32::from_ne_bytes((*self.ip).dst_addr),
                sport,
                dport,
                self.proto,
            )
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

    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        unsafe { (*self.ip).ttl }
    }

    /// The IP header's total length: the size on the wire of the packet, or
    /// of the segments together for a GSO packet in generic mode.
    #[inline(always)]
    pub fn ip_len(&self) -> u16 {
        unsafe { u16::from_be_bytes((*self.ip).tot_len) }
    }

    /// Whether the IP header forbids fragmentation.
    #[inline(always)]
    pub fn dont_fragment(&self) -> bool {
        unsafe { (*self.ip).frags[0] & 0x40 != 0 }
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
        let payload = (self.ip_len() as u32).wrapping_sub(Ipv4Hdr::LEN as u32 + doff);
        let flags = self.tcp_flags();
        let control = (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
        self.seq().wrapping_add(payload).wrapping_add(control)
    }
}

/// Finds the IPv4 and TCP or UDP headers, or says which pass-through
/// counter applies.
#[inline(always)]
pub fn ipv4(ctx: &XdpContext) -> Result<Segment, u32> {
    let len = ctx.data_end() - ctx.data();
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(counter::PASS_MALFORMED)?;
    // A VLAN tag would need its own FIB lookup on the VLAN device: such
    // frames go to the kernel like any other non-IPv4 frame.
    match u16::from_be(unsafe { (*eth).ether_type }) {
        ETH_P_IP => {}
        ETH_P_IPV6 => return Err(counter::PASS_IPV6),
        _ => return Err(counter::PASS_NOT_IPV4),
    }

    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).ok_or(counter::PASS_MALFORMED)?;
    let vihl = unsafe { (*ip).vihl };
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Err(counter::PASS_MALFORMED);
    }
    if vihl & 0x0f != 5 {
        return Err(counter::PASS_IP_OPTIONS);
    }
    // Shorter than the frame is Ethernet padding; longer is a lie.
    let ip_len = u16::from_be_bytes(unsafe { (*ip).tot_len }) as usize;
    if ip_len < Ipv4Hdr::LEN || EthHdr::LEN + ip_len > len {
        return Err(counter::PASS_MALFORMED);
    }
    if u16::from_be_bytes(unsafe { (*ip).frags }) & (IP_MF | IP_OFFSET) != 0 {
        return Err(counter::PASS_FRAGMENT);
    }
    let l4 = EthHdr::LEN + Ipv4Hdr::LEN;
    let proto = unsafe { (*ip).proto };
    match proto {
        IPPROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, l4).ok_or(counter::PASS_MALFORMED)?;
            let doff = (unsafe { *(tcp as *const u8).add(12) } >> 4) as usize * 4;
            if doff < TcpHdr::LEN || Ipv4Hdr::LEN + doff > ip_len {
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
                || Ipv4Hdr::LEN + UdpHdr::LEN > ip_len
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
        IPPROTO_ICMP => Err(counter::PASS_ICMP),
        _ => Err(counter::PASS_OTHER_PROTOCOL),
    }
}
