//! Rewrites a segment's addresses and ports to a flow entry's tuple and
//! keeps the IPv4 and TCP or UDP checksums right without recomputing them
//! (IPv6 has no header checksum; its addresses count in TCP's and UDP's
//! pseudo-header all the same).
//!
//! A GSO packet's checksum field is not a checksum yet: the kernel keeps
//! the sum of the pseudo-header there (uncomplemented, without the ports,
//! which are in the part the device or the segmentation sums up), and
//! completes it when it segments. So for such a packet only the addresses
//! change it, in the opposite sense.
//!
//! A UDP checksum of 0 means "none" (RFC 768) and stays 0; a computed 0 is
//! sent as 0xffff, its other representation.

use redirector_common::{FlowKeyOf, IPPROTO_UDP};

use crate::{csum::Delta, family::Family, nat::Rewrite, parse::Segment};

/// Rewrites `seg`, whose 4-tuple is `from`, to `to`'s 4-tuple. `forwarding`
/// also decrements the TTL (hop limit), as a router does; a frame handed to
/// the kernel keeps it because the kernel's forwarding path decrements it.
/// `gso`: the checksum is a GSO packet's partial one.
#[inline(always)]
pub fn translate<A: Family>(
    seg: &Segment<A>,
    from: &FlowKeyOf<A>,
    to: &Rewrite<A>,
    forwarding: bool,
    gso: bool,
) {
    unsafe {
        let (old_saddr, old_daddr) = (from.saddr, from.daddr);
        let (old_sport, old_dport) = (from.sport, from.dport);

        // The addresses are in both the IP header and the pseudo-header.
        let addrs = A::delta(
            A::delta(Delta::new(), old_saddr, to.saddr),
            old_daddr,
            to.daddr,
        );
        let ports = Delta::new()
            .word(old_sport, to.sport)
            .word(old_dport, to.dport);
        A::rewrite(seg.ip, to.saddr, to.daddr, addrs, forwarding);

        *seg.ports = [to.sport, to.dport];
        let check = *seg.check;
        let udp = seg.proto == IPPROTO_UDP;
        if udp && check == 0 {
            return;
        }
        let new = if gso {
            A::delta(
                A::delta(Delta::new(), to.saddr, old_saddr),
                to.daddr,
                old_daddr,
            )
            .apply(check)
        } else {
            addrs.plus(ports).apply(check)
        };
        *seg.check = if udp && new == 0 { 0xffff } else { new };
    }
}
