//! ICMP errors about tracked flows (destination unreachable, including
//! "fragmentation needed" and a UDP flow's "port unreachable", and time
//! exceeded). They are addressed to the old
//! host and quote a packet it sent for a flow; translated like that flow's
//! packets, they reach the real endpoint, so path MTU discovery and
//! unreachable errors keep working through the redirect.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use redirector_common::{IPPROTO_TCP, IPPROTO_UDP, counter};

use crate::{
    counters,
    csum::Delta,
    forward::{self, NextHop},
    maps::{EMBRYOS, FLOWS},
    nat::{Rewrite, flow_key},
    parse::ptr_at,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// Offsets in the frame: outer IPv4 without options (checked by the
/// caller), ICMP header, quoted IPv4 header, quoted TCP or UDP ports.
const OUTER_IP: usize = EthHdr::LEN;
const ICMP: usize = OUTER_IP + Ipv4Hdr::LEN;
const INNER_IP: usize = ICMP + 8;
const INNER_L4: usize = INNER_IP + Ipv4Hdr::LEN;
/// Offsets of the quoted TCP or UDP checksum (when the error quotes that
/// much: RFC 792 asks only for the first 8 bytes, which hold UDP's).
const INNER_TCP_CHECK: usize = INNER_L4 + 16;
const INNER_UDP_CHECK: usize = INNER_L4 + 6;

/// Translates an ICMP error about a tracked flow and returns the action, or
/// `None` if the frame is not one (it then passes as plain ICMP).
/// Out of line (see `follow` in main.rs).
#[inline(never)]
pub fn translate(ctx: &XdpContext) -> Option<u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, OUTER_IP)?;
    let icmp: *mut [u8; 8] = ptr_at(ctx, ICMP)?;
    let inner: *mut Ipv4Hdr = ptr_at(ctx, INNER_IP)?;
    let ports: *mut [u16; 2] = ptr_at(ctx, INNER_L4)?;
    unsafe {
        let kind = (*icmp)[0];
        if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
            return None;
        }
        let proto = (*inner).proto;
        if (*inner).vihl != 0x45 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
            return None;
        }
        // The quoted packet left the old host; its answer would have come
        // back under the mirrored tuple, which is the entry to follow.
        let (isaddr, idaddr) = (
            u32::from_ne_bytes((*inner).src_addr),
            u32::from_ne_bytes((*inner).dst_addr),
        );
        let [isport, idport] = *ports;
        let key = flow_key(idaddr, isaddr, idport, isport, proto);
        // An error about a SYN (a dead new host) concerns a half-open one.
        let entry = FLOWS.get_ptr(&key).or_else(|| EMBRYOS.get_ptr(&key))?;
        let to = Rewrite::of(entry);

        if (*ip).ttl <= 1 {
            counters::inc(to.rule_id, counter::DROP_TTL_EXPIRED);
            return Some(xdp_action::XDP_DROP);
        }
        let saddr = u32::from_ne_bytes((*ip).src_addr);
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
        let inner_addrs = Delta::new().dword(isaddr, to.daddr).dword(idaddr, to.saddr);
        let inner_ports = Delta::new().word(isport, to.dport).word(idport, to.sport);
        let old_inner_check = u16::from_ne_bytes((*inner).check);
        let new_inner_check = inner_addrs.apply(old_inner_check);
        (*inner).src_addr = to.daddr.to_ne_bytes();
        (*inner).dst_addr = to.saddr.to_ne_bytes();
        (*inner).check = new_inner_check.to_ne_bytes();
        *ports = [to.dport, to.sport];

        // ICMP's checksum covers the quote (no pseudo-header): the quoted
        // addresses, ports and checksums all change.
        let mut icmp_delta = inner_addrs
            .plus(inner_ports)
            .word(old_inner_check, new_inner_check);
        let check_at = if proto == IPPROTO_TCP {
            INNER_TCP_CHECK
        } else {
            INNER_UDP_CHECK
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
        let old_icmp_check = u16::from_ne_bytes([(*icmp)[2], (*icmp)[3]]);
        let [c0, c1] = icmp_delta.apply(old_icmp_check).to_ne_bytes();
        (*icmp)[2] = c0;
        (*icmp)[3] = c1;

        // The outer header now goes to the endpoint.
        let old_daddr = u32::from_ne_bytes((*ip).dst_addr);
        let mut ip_delta = Delta::new().dword(old_daddr, to.daddr);
        if forwarding {
            let ttl = (*ip).ttl;
            ip_delta = ip_delta.word(
                u16::from_ne_bytes([ttl, (*ip).proto]),
                u16::from_ne_bytes([ttl.wrapping_sub(1), (*ip).proto]),
            );
            (*ip).ttl = ttl.wrapping_sub(1);
        }
        (*ip).dst_addr = to.daddr.to_ne_bytes();
        (*ip).check = ip_delta
            .apply(u16::from_ne_bytes((*ip).check))
            .to_ne_bytes();

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
