//! Packet size against the next hop's MTU: GSO packets, fragmentation, and
//! the ICMP "fragmentation needed" (ICMPv6 "packet too big") that path MTU
//! discovery relies on.
//!
//! In generic mode the program sees socket buffers before segmentation: a
//! GSO packet (from the sender's TSO, or GRO on the old host) is longer
//! than any MTU, and its segments are at most the ingress MTU. Such a
//! packet is not too big for an egress at least as large; only its size
//! cannot tell what its segments are when the egress MTU is smaller.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    family::Family,
    forward,
    nat::Hop,
    parse::{IPPROTO_ICMPV6, Segment, ptr_at},
};

/// What to do with a tracked packet, given its next hop.
pub enum Fit {
    /// Fits: send it as usual.
    Send,
    /// A GSO packet whose segments fit. Its TCP or UDP checksum is the
    /// kernel's partial one (see `rewrite`); XDP_TX sends it as it is, but the
    /// devmap of generic XDP would drop it, so another egress goes through
    /// the kernel, which segments it.
    Gso,
    /// Too big and fragmentation allowed: the kernel fragments it.
    Fragment,
    /// Too big with DF set: the sender must be told the MTU.
    TooBig,
}

/// Decides how a packet of `seg`'s size goes to `hop`. `pmtu_sent` is the
/// MTU the flow's sender was told earlier (0 = none): a GSO packet after
/// that is taken to have segments of that size.
#[inline(always)]
pub fn fit<A: Family>(seg: &Segment<A>, hop: &Hop, pmtu_sent: u16) -> Fit {
    let len = seg.ip_len();
    if len > hop.in_mtu {
        if hop.mtu >= hop.in_mtu || (pmtu_sent != 0 && pmtu_sent <= hop.mtu) {
            return Fit::Gso;
        }
        return Fit::TooBig;
    }
    if len <= hop.mtu {
        Fit::Send
    } else if seg.dont_fragment() {
        Fit::TooBig
    } else {
        Fit::Fragment
    }
}

/// Whether `seg` is a GSO packet, for a packet without a looked-up hop.
#[inline(always)]
pub fn is_gso<A: Family>(ctx: &XdpContext, seg: &Segment<A>) -> bool {
    seg.ip_len() > forward::mtu(ctx, 0)
}

const QUOTE: usize = Ipv4Hdr::LEN + 8;
const ICMP_HDR: usize = 8;
/// The whole frame of the error: Ethernet, IPv4, ICMP, quoted header and
/// the first 8 bytes of TCP (RFC 792).
const FRAME: usize = EthHdr::LEN + Ipv4Hdr::LEN + ICMP_HDR + QUOTE;

/// Turns the frame into an ICMP "fragmentation needed" (type 3, code 4,
/// RFC 1191) with next-hop MTU `mtu`, from the address the packet was sent
/// to back to its sender, and returns XDP_TX. The packet is not translated
/// yet, so the quote is what the sender sent and its stack finds the
/// connection. `None` if the frame is too short to rewrite in place.
///
/// Out of line and written in place: the packet path's stack is close to
/// the verifier's limit.
#[inline(never)]
pub fn frag_needed(ctx: &XdpContext, mtu: u16) -> Option<u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    let icmp: *mut [u16; (ICMP_HDR + QUOTE) / 2] = ptr_at(ctx, EthHdr::LEN + Ipv4Hdr::LEN)?;
    unsafe {
        // The quote's place overlaps the headers it quotes: keep them first.
        let saved: [u16; QUOTE / 2] = *ptr_at::<[u16; QUOTE / 2]>(ctx, EthHdr::LEN)?;
        let (src, dst) = ((*eth).src_addr, (*eth).dst_addr);
        (*eth).src_addr = dst;
        (*eth).dst_addr = src;

        let (saddr, daddr) = ((*ip).src_addr, (*ip).dst_addr);
        (*ip).vihl = 0x45;
        // Internetwork control, as the kernel's own ICMP errors.
        (*ip).tos = 0xc0;
        (*ip).tot_len = ((FRAME - EthHdr::LEN) as u16).to_be_bytes();
        (*ip).id = [0; 2];
        (*ip).frags = [0; 2];
        (*ip).ttl = 64;
        (*ip).proto = crate::parse::IPPROTO_ICMP;
        (*ip).check = [0; 2];
        (*ip).src_addr = daddr;
        (*ip).dst_addr = saddr;
        let words = ip as *const [u16; Ipv4Hdr::LEN / 2];
        (*ip).check = fold(sum(&*words)).to_ne_bytes();

        let m = &mut *icmp;
        m[0] = u16::from_ne_bytes([3, 4]);
        m[1] = 0;
        m[2] = 0;
        m[3] = mtu.to_be();
        m[ICMP_HDR / 2..].copy_from_slice(&saved);
        m[1] = fold(sum(m));
    }
    shrink_to(ctx, FRAME)
}

/// IPv6 quotes the header and, as for IPv4, the first 8 bytes after it
/// (the ports and TCP's sequence number, all a stack needs to find the
/// connection); RFC 4443 allows any amount up to the minimum MTU.
const QUOTE6: usize = Ipv6Hdr::LEN + 8;
const FRAME6: usize = EthHdr::LEN + Ipv6Hdr::LEN + ICMP_HDR + QUOTE6;

/// `frag_needed` for IPv6: an ICMPv6 "packet too big" (type 2, RFC 4443
/// and 8201) with MTU `mtu`.
#[inline(never)]
pub fn packet_too_big(ctx: &XdpContext, mtu: u16) -> Option<u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, EthHdr::LEN)?;
    let icmp: *mut [u16; (ICMP_HDR + QUOTE6) / 2] = ptr_at(ctx, EthHdr::LEN + Ipv6Hdr::LEN)?;
    unsafe {
        let saved: [u16; QUOTE6 / 2] = *ptr_at::<[u16; QUOTE6 / 2]>(ctx, EthHdr::LEN)?;
        let (src, dst) = ((*eth).src_addr, (*eth).dst_addr);
        (*eth).src_addr = dst;
        (*eth).dst_addr = src;

        let (saddr, daddr) = ((*ip).src_addr, (*ip).dst_addr);
        let len = (ICMP_HDR + QUOTE6) as u16;
        (*ip).vcf = [0x60, 0, 0, 0];
        (*ip).payload_len = len.to_be_bytes();
        (*ip).next_hdr = IPPROTO_ICMPV6;
        (*ip).hop_limit = 64;
        (*ip).src_addr = daddr;
        (*ip).dst_addr = saddr;

        let m = &mut *icmp;
        m[0] = u16::from_ne_bytes([2, 0]);
        m[1] = 0;
        m[2] = 0;
        m[3] = mtu.to_be();
        m[ICMP_HDR / 2..].copy_from_slice(&saved);
        // ICMPv6 sums a pseudo-header (RFC 8200 8.1): both addresses, the
        // length and the next header.
        let addrs = &*(&raw const (*ip).src_addr).cast::<[u16; 16]>();
        let pseudo = sum(addrs)
            + u16::from_ne_bytes(len.to_be_bytes()) as u32
            + u16::from_ne_bytes([0, IPPROTO_ICMPV6]) as u32;
        m[1] = fold(pseudo + sum(m));
    }
    shrink_to(ctx, FRAME6)
}

/// Cuts the frame to `frame` bytes and sends it back out (XDP_TX).
#[inline(always)]
fn shrink_to(ctx: &XdpContext, frame: usize) -> Option<u32> {
    let len = ctx.data_end() - ctx.data();
    let shrink = frame as i32 - len as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, shrink) } != 0 {
        return Some(xdp_action::XDP_DROP);
    }
    Some(xdp_action::XDP_TX)
}

/// The ones'-complement sum of `words`, unfolded, in native order like the
/// packet's other checksums here.
#[inline(always)]
fn sum<const N: usize>(words: &[u16; N]) -> u32 {
    let mut sum: u32 = 0;
    for w in words {
        sum += *w as u32;
    }
    sum
}

/// The checksum field for an unfolded sum.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
