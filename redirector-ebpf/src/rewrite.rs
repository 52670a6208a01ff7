//! Rewrites a segment's addresses and ports to a flow entry's tuple and
//! keeps the IPv4 and TCP or UDP checksums right without recomputing them.
//!
//! A GSO packet's checksum field is not a checksum yet: the kernel keeps
//! the sum of the pseudo-header there (uncomplemented, without the ports,
//! which are in the part the device or the segmentation sums up), and
//! completes it when it segments. So for such a packet only the addresses
//! change it, in the opposite sense.
//!
//! A UDP checksum of 0 means "none" (RFC 768) and stays 0; a computed 0 is
//! sent as 0xffff, its other representation.

use redirector_common::{FlowKey, IPPROTO_UDP};

use crate::{csum::Delta, nat::Rewrite, parse::Segment};

/// Rewrites `seg`, whose 4-tuple is `from`, to `to`'s 4-tuple. `forwarding`
/// also decrements the TTL, as a router does; a frame handed to the kernel
/// keeps its TTL because the kernel's forwarding path decrements it. `gso`:
/// the checksum is a GSO packet's partial one.
#[inline(always)]
pub fn translate(seg: &Segment, from: &FlowKey, to: &Rewrite, forwarding: bool, gso: bool) {
    unsafe {
        let ip = seg.ip;
        let (old_saddr, old_daddr) = (from.saddr, from.daddr);
        let (old_sport, old_dport) = (from.sport, from.dport);

        // The addresses are in both the IP header and the pseudo-header.
        let addrs = Delta::new()
            .dword(old_saddr, to.saddr)
            .dword(old_daddr, to.daddr);
        let ports = Delta::new()
            .word(old_sport, to.sport)
            .word(old_dport, to.dport);

        let mut ip_delta = addrs;
        if forwarding {
            // TTL shares its 16-bit word with the protocol byte.
            let ttl = (*ip).ttl;
            let old = u16::from_ne_bytes([ttl, (*ip).proto]);
            let new = u16::from_ne_bytes([ttl.wrapping_sub(1), (*ip).proto]);
            ip_delta = ip_delta.word(old, new);
            (*ip).ttl = ttl.wrapping_sub(1);
        }

        (*ip).src_addr = to.saddr.to_ne_bytes();
        (*ip).dst_addr = to.daddr.to_ne_bytes();
        (*ip).check = ip_delta
            .apply(u16::from_ne_bytes((*ip).check))
            .to_ne_bytes();

        *seg.ports = [to.sport, to.dport];
        let check = *seg.check;
        let udp = seg.proto == IPPROTO_UDP;
        if udp && check == 0 {
            return;
        }
        let new = if gso {
            Delta::new()
                .dword(to.saddr, old_saddr)
                .dword(to.daddr, old_daddr)
                .apply(check)
        } else {
            addrs.plus(ports).apply(check)
        };
        *seg.check = if udp && new == 0 { 0xffff } else { new };
    }
}
