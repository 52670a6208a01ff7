//! ICMP and ICMPv6 errors about tracked flows (destination unreachable,
//! including a UDP flow's "port unreachable"; "fragmentation needed" and
//! "packet too big"; time exceeded). They are addressed to the old host and
//! quote a packet it sent for a flow; translated like that flow's packets,
//! they reach the real endpoint, so path MTU discovery and unreachable
//! errors keep working through the redirect.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use network_types::eth::EthHdr;
use redirector_common::{IPPROTO_TCP, IPPROTO_UDP, counter};

use crate::{
    counters,
    csum::Delta,
    family::Family,
    forward::{self, NextHop},
    nat::Rewrite,
    parse::ptr_at,
};

/// Translates an ICMP error about a tracked flow and returns the action, or
/// `None` if the frame is not one (it then passes as plain ICMP).
/// Out of line (see `follow` in main.rs).
///
/// The frame: outer IP header without options or extension headers
/// (checked by the caller), the ICMP header, the quoted IP header, the
/// quoted TCP or UDP ports, and the quoted checksum when the error quotes
/// that much (RFC 792 asks only for the first 8 bytes, which hold UDP's).
#[inline(never)]
pub fn translate<A: Family>(ctx: &XdpContext) -> Option<u32> {
    let icmp_at = EthHdr::LEN + A::HDR_LEN;
    let inner_l4 = icmp_at + 8 + A::HDR_LEN;
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut A::Hdr = ptr_at(ctx, EthHdr::LEN)?;
    let icmp: *mut [u8; 8] = ptr_at(ctx, icmp_at)?;
    let inner: *mut A::Hdr = ptr_at(ctx, icmp_at + 8)?;
    let ports: *mut [u16; 2] = ptr_at(ctx, inner_l4)?;
    unsafe {
        if !A::is_icmp_error((*icmp)[0]) {
            return None;
        }
        let proto = A::quoted_proto(inner)?;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return None;
        }
        // The quoted packet left the old host; its answer would have come
        // back under the mirrored tuple, which is the entry to follow.
        let (isaddr, idaddr) = (A::src(inner), A::dst(inner));
        let [isport, idport] = *ports;
        let key = A::key(idaddr, isaddr, idport, isport, proto);
        // An error about a SYN (a dead new host) concerns a half-open one.
        let entry = A::flows()
            .get_ptr(&key)
            .or_else(|| A::embryos().get_ptr(&key))?;
        let to = Rewrite::of(entry);

        if A::ttl(ip) <= 1 {
            counters::inc(to.rule_id, counter::DROP_TTL_EXPIRED);
            return Some(xdp_action::XDP_DROP);
        }
        let saddr = A::src(ip);
        let hop = forward::lookup(ctx, ip, saddr, to.daddr);
        let forwarding = match hop {
            NextHop::Resolved(_) => true,
            NextHop::Kernel(_) => false,
            NextHop::Unroutable => {
                counters::inc(to.rule_id, counter::DROP_NO_ROUTE);
                return Some(xdp_action::XDP_DROP);
            }
        };

        // The quoted packet becomes the one the endpoint sent: from `to`'s
        // destination to `to`'s source.
        let inner_addrs = A::delta(A::delta(Delta::new(), isaddr, to.daddr), idaddr, to.saddr);
        let inner_ports = Delta::new().word(isport, to.dport).word(idport, to.sport);
        let old_inner_check = A::header_check(inner);
        A::rewrite(inner, to.daddr, to.saddr, inner_addrs, false);
        let new_inner_check = A::header_check(inner);
        *ports = [to.dport, to.sport];

        // ICMP's checksum covers the quote: the quoted addresses, ports and
        // checksums all change.
        let mut icmp_delta = inner_addrs
            .plus(inner_ports)
            .word(old_inner_check, new_inner_check);
        let check_at = if proto == IPPROTO_TCP {
            inner_l4 + 16
        } else {
            inner_l4 + 6
        };
        if let Some(check) = ptr_at::<[u8; 2]>(ctx, check_at) {
            let old = u16::from_ne_bytes(*check);
            // A UDP checksum of 0 is "none", and stays so.
            if old != 0 || proto == IPPROTO_TCP {
                let mut new = inner_addrs.plus(inner_ports).apply(old);
                if new == 0 && proto == IPPROTO_UDP {
                    new = 0xffff;
                }
                *check = new.to_ne_bytes();
                icmp_delta = icmp_delta.word(old, new);
            }
        }
        // The outer header now goes to the endpoint; ICMPv6 sums it too,
        // in its pseudo-header.
        let old_daddr = A::dst(ip);
        let outer_addrs = A::delta(Delta::new(), old_daddr, to.daddr);
        if A::ICMP_PSEUDO_HEADER {
            icmp_delta = icmp_delta.plus(outer_addrs);
        }
        let old_icmp_check = u16::from_ne_bytes([(*icmp)[2], (*icmp)[3]]);
        let [c0, c1] = icmp_delta.apply(old_icmp_check).to_ne_bytes();
        (*icmp)[2] = c0;
        (*icmp)[3] = c1;
        A::rewrite(ip, saddr, to.daddr, outer_addrs, forwarding);

        counters::inc(to.rule_id, counter::ICMP_TRANSLATED);
        Some(match hop {
            NextHop::Resolved(h) => forward::send(ctx, eth, to.rule_id, &h),
            NextHop::Kernel(reason) => {
                counters::inc(to.rule_id, reason);
                xdp_action::XDP_PASS
            }
            NextHop::Unroutable => xdp_action::XDP_DROP,
        })
    }
}
