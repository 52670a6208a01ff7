//! What differs between IPv4 and IPv6 for the program: the IP header's
//! fields, the flow tables, the checksum words an address change touches,
//! the FIB and socket lookups' address formats, and the ICMP errors. The
//! rest of the program is written once, generic over the address type
//! (`Ip4`, one word; `Ip6`, four), and compiled once for each.

use aya_ebpf::{maps::LruHashMap, programs::XdpContext};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use redirector_common::{FlowKeyOf, FlowOf, Ip4, Ip6, counter, mapped, unmapped};

use crate::{
    csum::Delta,
    maps::{EMBRYOS, EMBRYOS6, FLOWS, FLOWS6},
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6},
    size,
};

/// IPv4 flags/fragment-offset word: More Fragments bit and the offset.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// The IPv6 fragment header; the other extension headers are listed where
/// they are passed (RFC 8200 and IANA's registry).
const IPV6_FRAGMENT: u8 = 44;

/// An address family, implemented by its address type.
pub trait Family: Copy + 'static {
    /// The IP header.
    type Hdr;
    const ETHER_TYPE: u16;
    const HDR_LEN: usize;
    /// `AF_INET` or `AF_INET6`, for `bpf_fib_lookup`.
    const AF: u8;
    /// Bytes of `bpf_sock_tuple` the socket lookups read.
    const TUPLE_LEN: u32;

    fn flows() -> &'static LruHashMap<FlowKeyOf<Self>, FlowOf<Self>>;
    fn embryos() -> &'static LruHashMap<FlowKeyOf<Self>, FlowOf<Self>>;

    /// Word by word: `==` on arrays may become a `bcmp` call, which BPF
    /// cannot make.
    fn same(a: Self, b: Self) -> bool;

    /// A flow-table key for a 4-tuple (network order), built from words
    /// rather than as a struct literal: rustc turns the zeroed 3-byte
    /// padding into an out-of-line `memset` loop otherwise.
    fn key(saddr: Self, daddr: Self, sport: u16, dport: u16, proto: u8) -> FlowKeyOf<Self>;
    /// The address as `RULES` keeps it (IPv4 mapped into IPv6).
    fn rule_addr(self) -> Ip6;
    /// The address of this family in a `RuleValue::new_addr`.
    fn of_rule(addr: Ip6) -> Self;
    /// Adds the checksum change of one address to `d`.
    fn delta(d: Delta, old: Self, new: Self) -> Delta;
    /// Writes source and destination as the first words of a flow entry
    /// (`2 * size_of::<Self>() / 8` of them); returns the next word.
    ///
    /// # Safety
    /// `out` points at a whole, 8-byte aligned `FlowOf<Self>`.
    unsafe fn write_addrs(out: *mut u64, saddr: Self, daddr: Self) -> *mut u64;
    /// `bpf_sock_tuple` for the socket lookups (`TUPLE_LEN` bytes used).
    fn sock_tuple(saddr: Self, daddr: Self, sport: u16, dport: u16) -> [u32; 9];
    /// Source and destination in `bpf_fib_lookup`'s address unions.
    fn fib_addr(addr: Self) -> [u32; 4];

    /// # Safety (all header accessors)
    /// `ip` points at a whole header inside the packet.
    unsafe fn src(ip: *const Self::Hdr) -> Self;
    unsafe fn dst(ip: *const Self::Hdr) -> Self;
    /// TTL or hop limit.
    unsafe fn ttl(ip: *const Self::Hdr) -> u8;
    /// The packet's length, header included.
    unsafe fn ip_len(ip: *const Self::Hdr) -> u16;
    /// Whether a router may fragment it (never IPv6).
    unsafe fn dont_fragment(ip: *const Self::Hdr) -> bool;
    /// TOS (IPv4) or flow information (IPv6) for `bpf_fib_lookup`.
    unsafe fn fib_flowinfo(ip: *const Self::Hdr) -> u32;
    /// Sets the addresses, with the checksum change `addrs` of exactly this
    /// change, and, `forwarding`, decrements the TTL (hop limit).
    unsafe fn rewrite(ip: *mut Self::Hdr, saddr: Self, daddr: Self, addrs: Delta, forwarding: bool);

    /// Checks the header at `ip`, with `room` bytes from it to the frame's
    /// end: returns the transport protocol and the packet's length, or the
    /// pass-through counter (`PASS_ICMP` for ICMP and ICMPv6).
    fn check(ip: *const Self::Hdr, room: usize) -> Result<(u8, usize), u32>;

    /// Turns the frame into the ICMP error that tells its sender the path
    /// MTU, addressed back to it; the action to take.
    fn too_big(ctx: &XdpContext, mtu: u16) -> Option<u32>;
    /// Whether an ICMP type is an error `icmp::translate` translates:
    /// destination unreachable, packet too big, time exceeded.
    fn is_icmp_error(kind: u8) -> bool;
    /// The transport protocol of a packet quoted in an ICMP error, if its
    /// header is one the program could have sent (no options, no extension
    /// headers).
    unsafe fn quoted_proto(ip: *const Self::Hdr) -> Option<u8>;
    /// The header's checksum field (0 for IPv6, which has none).
    unsafe fn header_check(ip: *const Self::Hdr) -> u16;
    /// Whether the ICMP checksum covers the outer addresses (ICMPv6's
    /// pseudo-header).
    const ICMP_PSEUDO_HEADER: bool;
}

impl Family for Ip4 {
    type Hdr = Ipv4Hdr;
    const ETHER_TYPE: u16 = 0x0800;
    const HDR_LEN: usize = Ipv4Hdr::LEN;
    const AF: u8 = 2;
    const TUPLE_LEN: u32 = 12;

    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKeyOf<Self>, FlowOf<Self>> {
        &FLOWS
    }
    #[inline(always)]
    fn embryos() -> &'static LruHashMap<FlowKeyOf<Self>, FlowOf<Self>> {
        &EMBRYOS
    }
    #[inline(always)]
    fn same(a: Self, b: Self) -> bool {
        a == b
    }
    #[inline(always)]
    fn key(saddr: Self, daddr: Self, sport: u16, dport: u16, proto: u8) -> FlowKeyOf<Self> {
        let words = [
            saddr,
            daddr,
            // bpfel: the lower half is the first in memory.
            sport as u32 | (dport as u32) << 16,
            proto as u32,
        ];
        // SAFETY: FlowKeyOf<Ip4> is #[repr(C)], 16 bytes of plain integers
        // with explicit padding (redirector-common's layout test).
        unsafe { core::mem::transmute::<[u32; 4], FlowKeyOf<Self>>(words) }
    }
    #[inline(always)]
    fn rule_addr(self) -> Ip6 {
        mapped(self)
    }
    #[inline(always)]
    fn of_rule(addr: Ip6) -> Self {
        addr[3]
    }
    #[inline(always)]
    fn delta(d: Delta, old: Self, new: Self) -> Delta {
        d.dword(old, new)
    }
    #[inline(always)]
    unsafe fn write_addrs(out: *mut u64, saddr: Self, daddr: Self) -> *mut u64 {
        unsafe {
            core::ptr::write_volatile(out, saddr as u64 | (daddr as u64) << 32);
            out.add(1)
        }
    }
    #[inline(always)]
    fn sock_tuple(saddr: Self, daddr: Self, sport: u16, dport: u16) -> [u32; 9] {
        let ports = sport as u32 | (dport as u32) << 16;
        [saddr, daddr, ports, 0, 0, 0, 0, 0, 0]
    }
    #[inline(always)]
    fn fib_addr(addr: Self) -> [u32; 4] {
        [addr, 0, 0, 0]
    }
    #[inline(always)]
    unsafe fn src(ip: *const Ipv4Hdr) -> Self {
        unsafe { u32::from_ne_bytes((*ip).src_addr) }
    }
    #[inline(always)]
    unsafe fn dst(ip: *const Ipv4Hdr) -> Self {
        unsafe { u32::from_ne_bytes((*ip).dst_addr) }
    }
    #[inline(always)]
    unsafe fn ttl(ip: *const Ipv4Hdr) -> u8 {
        unsafe { (*ip).ttl }
    }
    #[inline(always)]
    unsafe fn ip_len(ip: *const Ipv4Hdr) -> u16 {
        unsafe { u16::from_be_bytes((*ip).tot_len) }
    }
    #[inline(always)]
    unsafe fn dont_fragment(ip: *const Ipv4Hdr) -> bool {
        unsafe { (*ip).frags[0] & 0x40 != 0 }
    }
    #[inline(always)]
    unsafe fn fib_flowinfo(ip: *const Ipv4Hdr) -> u32 {
        // `tos` is the first byte of the union (little endian).
        unsafe { (*ip).tos as u32 }
    }
    #[inline(always)]
    unsafe fn rewrite(ip: *mut Ipv4Hdr, saddr: Self, daddr: Self, addrs: Delta, forwarding: bool) {
        unsafe {
            let mut delta = addrs;
            if forwarding {
                // TTL shares its 16-bit word with the protocol byte.
                let ttl = (*ip).ttl;
                let old = u16::from_ne_bytes([ttl, (*ip).proto]);
                let new = u16::from_ne_bytes([ttl.wrapping_sub(1), (*ip).proto]);
                delta = delta.word(old, new);
                (*ip).ttl = ttl.wrapping_sub(1);
            }
            (*ip).src_addr = saddr.to_ne_bytes();
            (*ip).dst_addr = daddr.to_ne_bytes();
            (*ip).check = delta.apply(u16::from_ne_bytes((*ip).check)).to_ne_bytes();
        }
    }
    #[inline(always)]
    fn check(ip: *const Ipv4Hdr, room: usize) -> Result<(u8, usize), u32> {
        let vihl = unsafe { (*ip).vihl };
        if vihl >> 4 != 4 || vihl & 0x0f < 5 {
            return Err(counter::PASS_MALFORMED);
        }
        if vihl & 0x0f != 5 {
            return Err(counter::PASS_IP_OPTIONS);
        }
        // Shorter than the frame is Ethernet padding; longer is a lie.
        let ip_len = u16::from_be_bytes(unsafe { (*ip).tot_len }) as usize;
        if ip_len < Ipv4Hdr::LEN || ip_len > room {
            return Err(counter::PASS_MALFORMED);
        }
        if u16::from_be_bytes(unsafe { (*ip).frags }) & (IP_MF | IP_OFFSET) != 0 {
            return Err(counter::PASS_FRAGMENT);
        }
        match unsafe { (*ip).proto } {
            IPPROTO_ICMP => Err(counter::PASS_ICMP),
            proto => Ok((proto, ip_len)),
        }
    }
    #[inline(always)]
    fn too_big(ctx: &XdpContext, mtu: u16) -> Option<u32> {
        size::frag_needed(ctx, mtu)
    }
    #[inline(always)]
    fn is_icmp_error(kind: u8) -> bool {
        // Destination unreachable (fragmentation needed among them), time
        // exceeded.
        kind == 3 || kind == 11
    }
    #[inline(always)]
    unsafe fn quoted_proto(ip: *const Ipv4Hdr) -> Option<u8> {
        unsafe {
            if (*ip).vihl == 0x45 {
                Some((*ip).proto)
            } else {
                None
            }
        }
    }
    #[inline(always)]
    unsafe fn header_check(ip: *const Ipv4Hdr) -> u16 {
        unsafe { u16::from_ne_bytes((*ip).check) }
    }
    const ICMP_PSEUDO_HEADER: bool = false;
}

impl Family for Ip6 {
    type Hdr = Ipv6Hdr;
    const ETHER_TYPE: u16 = 0x86dd;
    const HDR_LEN: usize = Ipv6Hdr::LEN;
    const AF: u8 = 10;
    const TUPLE_LEN: u32 = 36;

    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKeyOf<Self>, FlowOf<Self>> {
        &FLOWS6
    }
    #[inline(always)]
    fn embryos() -> &'static LruHashMap<FlowKeyOf<Self>, FlowOf<Self>> {
        &EMBRYOS6
    }
    #[inline(always)]
    fn same(a: Self, b: Self) -> bool {
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
    }
    #[inline(always)]
    fn key(saddr: Self, daddr: Self, sport: u16, dport: u16, proto: u8) -> FlowKeyOf<Self> {
        let words = [
            saddr[0],
            saddr[1],
            saddr[2],
            saddr[3],
            daddr[0],
            daddr[1],
            daddr[2],
            daddr[3],
            sport as u32 | (dport as u32) << 16,
            proto as u32,
        ];
        // SAFETY: as for Ip4; FlowKeyOf<Ip6> is 40 bytes.
        unsafe { core::mem::transmute::<[u32; 10], FlowKeyOf<Self>>(words) }
    }
    #[inline(always)]
    fn rule_addr(self) -> Ip6 {
        self
    }
    #[inline(always)]
    fn of_rule(addr: Ip6) -> Self {
        addr
    }
    #[inline(always)]
    fn delta(d: Delta, old: Self, new: Self) -> Delta {
        d.dword(old[0], new[0])
            .dword(old[1], new[1])
            .dword(old[2], new[2])
            .dword(old[3], new[3])
    }
    #[inline(always)]
    unsafe fn write_addrs(out: *mut u64, saddr: Self, daddr: Self) -> *mut u64 {
        let pair = |a: u32, b: u32| a as u64 | (b as u64) << 32;
        unsafe {
            core::ptr::write_volatile(out, pair(saddr[0], saddr[1]));
            core::ptr::write_volatile(out.add(1), pair(saddr[2], saddr[3]));
            core::ptr::write_volatile(out.add(2), pair(daddr[0], daddr[1]));
            core::ptr::write_volatile(out.add(3), pair(daddr[2], daddr[3]));
            out.add(4)
        }
    }
    #[inline(always)]
    fn sock_tuple(saddr: Self, daddr: Self, sport: u16, dport: u16) -> [u32; 9] {
        let ports = sport as u32 | (dport as u32) << 16;
        [
            saddr[0], saddr[1], saddr[2], saddr[3], daddr[0], daddr[1], daddr[2], daddr[3], ports,
        ]
    }
    #[inline(always)]
    fn fib_addr(addr: Self) -> [u32; 4] {
        addr
    }
    #[inline(always)]
    unsafe fn src(ip: *const Ipv6Hdr) -> Self {
        // The header is 4-byte aligned in every frame the program sees
        // (Ethernet's 14 bytes after a 2-byte aligned start), and x86 and
        // arm64 load unaligned words anyway; word loads, not 16 byte loads.
        unsafe { *(&raw const (*ip).src_addr).cast::<Ip6>() }
    }
    #[inline(always)]
    unsafe fn dst(ip: *const Ipv6Hdr) -> Self {
        unsafe { *(&raw const (*ip).dst_addr).cast::<Ip6>() }
    }
    #[inline(always)]
    unsafe fn ttl(ip: *const Ipv6Hdr) -> u8 {
        unsafe { (*ip).hop_limit }
    }
    #[inline(always)]
    unsafe fn ip_len(ip: *const Ipv6Hdr) -> u16 {
        // Saturating: a BIG TCP packet past 64 KiB is a GSO packet all the
        // same (`size::fit` takes anything over the MTU for one).
        unsafe { u16::from_be_bytes((*ip).payload_len).saturating_add(Ipv6Hdr::LEN as u16) }
    }
    #[inline(always)]
    unsafe fn dont_fragment(_ip: *const Ipv6Hdr) -> bool {
        true
    }
    #[inline(always)]
    unsafe fn fib_flowinfo(ip: *const Ipv6Hdr) -> u32 {
        // Traffic class and flow label, as the kernel's own forwarding
        // looks routes up with them (`ip6_flowinfo`).
        unsafe { *(&raw const (*ip).vcf).cast::<u32>() & u32::from_be(0x0fff_ffff) }
    }
    #[inline(always)]
    unsafe fn rewrite(ip: *mut Ipv6Hdr, saddr: Self, daddr: Self, _addrs: Delta, forwarding: bool) {
        // No header checksum: the addresses count only in TCP's and UDP's.
        unsafe {
            if forwarding {
                (*ip).hop_limit = (*ip).hop_limit.wrapping_sub(1);
            }
            *(&raw mut (*ip).src_addr).cast::<Ip6>() = saddr;
            *(&raw mut (*ip).dst_addr).cast::<Ip6>() = daddr;
        }
    }
    #[inline(always)]
    fn check(ip: *const Ipv6Hdr, room: usize) -> Result<(u8, usize), u32> {
        if unsafe { (*ip).vcf[0] } >> 4 != 6 {
            return Err(counter::PASS_MALFORMED);
        }
        // A payload length of 0 with a hop-by-hop header is a jumbogram:
        // an extension header, passed as such below.
        let ip_len = u16::from_be_bytes(unsafe { (*ip).payload_len }) as usize + Ipv6Hdr::LEN;
        if ip_len > room {
            return Err(counter::PASS_MALFORMED);
        }
        // IPv4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2);
        // `RULES` holds IPv4 rules under them, which IPv6 must not match.
        let (src, dst) = unsafe { (Self::src(ip), Self::dst(ip)) };
        if unmapped(src).is_some() || unmapped(dst).is_some() {
            return Err(counter::PASS_MALFORMED);
        }
        match unsafe { (*ip).next_hdr } {
            IPPROTO_ICMPV6 => Err(counter::PASS_ICMP),
            IPV6_FRAGMENT => Err(counter::PASS_FRAGMENT),
            0 | 43 | 50 | 51 | 60 | 135 | 139 | 140 => Err(counter::PASS_IPV6_EXTENSIONS),
            next => Ok((next, ip_len)),
        }
    }
    #[inline(always)]
    fn too_big(ctx: &XdpContext, mtu: u16) -> Option<u32> {
        size::packet_too_big(ctx, mtu)
    }
    #[inline(always)]
    fn is_icmp_error(kind: u8) -> bool {
        // Destination unreachable, packet too big, time exceeded.
        (1..=3).contains(&kind)
    }
    #[inline(always)]
    unsafe fn quoted_proto(ip: *const Ipv6Hdr) -> Option<u8> {
        unsafe { Some((*ip).next_hdr) }
    }
    #[inline(always)]
    unsafe fn header_check(_ip: *const Ipv6Hdr) -> u16 {
        0
    }
    const ICMP_PSEUDO_HEADER: bool = true;
}
