//! Rewrites a segment's addresses and ports to a flow entry's tuple and
//! keeps the IPv4 and TCP checksums right without recomputing them.
//!
//! A GSO packet's TCP checksum field is not a checksum yet: the kernel
//! keeps the sum of the pseudo-header there (uncomplemented, without the
//! ports, which are in the part the device or the segmentation sums up),
//! and completes it when it segments. So for such a packet only the
//! addresses change it, in the opposite sense.

use redirector_common::FlowKey;

use crate::{csum::Delta, nat::Rewrite, parse::Segment};

/// Rewrites `seg`, whose 4-tuple is `from`, to `to`'s 4-tuple. `forwarding`
/// also decrements the TTL, as a router does; a frame handed to the kernel
/// keeps its TTL because the kernel's forwarding path decrements it. `gso`:
/// the TCP checksum is a GSO packet's partial one.
#[inline(always)]
pub fn translate(seg: &Segment, from: &FlowKey, to: &Rewrite, forwarding: bool, gso: bool) {
    unsafe {
        let ip = seg.ip;
        let tcp = seg.tcp;
        let (old_saddr, old_daddr) = (from.saddr, from.daddr);
        let (old_sport, old_dport) = (from.sport, from.dport);

        // The addresses are in both the IP header and the TCP pseudo-header.
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

        (*tcp).source = to.sport.to_ne_bytes();
        (*tcp).dest = to.dport.to_ne_bytes();
        let check = u16::from_ne_bytes((*tcp).check);
        (*tcp).check = if gso {
            Delta::new()
                .dword(to.saddr, old_saddr)
                .dword(to.daddr, old_daddr)
                .apply(check)
        } else {
            addrs.plus(ports).apply(check)
        }
        .to_ne_bytes();
    }
}
