//! The redirector's XDP program: stateful NAT of new TCP connections and
//! UDP flows from OLD_IP:PORT to NEW_IP:PORT, IPv4 to IPv4 or IPv6 to IPv6,
//! the in-kernel equivalent of iptables' DNAT plus MASQUERADE, and the
//! translation of their replies back to the client.
//!
//! One forward pass per packet: parse (`parse`), follow or open NAT state
//! (`nat`), route (`forward`), rewrite (`rewrite`), send. Anything the
//! program does not translate goes to the kernel untouched, counted by
//! reason (`counters`). Maps and limits: `maps` and `redirector-common`.
//! The path is written once and compiled for each address family
//! (`family`).
//!
//! What the old host must provide (the daemon sets it up):
//! - `net.ipv4.ip_forward=1` (or `conf.IF.forwarding=1` on the ingress
//!   interface), and `net.ipv6.conf.IF.forwarding=1` for IPv6 rules:
//!   `bpf_fib_lookup` refuses to route for an interface that does not
//!   forward, and then new connections are left to the host.
//! - `net.ipv4.conf.IF.accept_local=1`: while the next hop's MAC is unknown,
//!   the translated packet goes to the kernel to forward (and resolve the
//!   neighbour); its source is the host's own address, a martian otherwise.
//! - `net.ipv4.conf.{all,IF}.send_redirects=0`: such a packet leaves by the
//!   interface it came in on, which would make the kernel send redirects.
//! - An egress interface other than the ingress one must be in `EGRESS`;
//!   otherwise translated packets for it go through the kernel too.

#![no_std]
#![no_main]

mod counters;
mod csum;
mod family;
mod forward;
mod icmp;
mod maps;
mod nat;
mod parse;
mod rewrite;
mod size;
mod socket;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use redirector_common::{
    DIR_FORWARD, FAMILY_IPV6, FlowKeyOf, Ip4, Ip6, RuleKey, SHARE_ALL, client_bucket, counter,
};

use crate::{
    family::Family,
    forward::NextHop,
    maps::{FAMILIES, RULES, SCRATCH},
    nat::{Follow, Hop, Open, Rewrite, Slot, Syn, Tracked},
    parse::Segment,
    size::Fit,
};

#[xdp]
pub fn redirector(ctx: XdpContext) -> u32 {
    match parse::ether_type(&ctx) {
        Some(t) if t == Ip4::ETHER_TYPE => run::<Ip4>(&ctx),
        Some(t) if t == Ip6::ETHER_TYPE => {
            // Returns only if the IPv6 program is not in place.
            let _ = unsafe { FAMILIES.tail_call(&ctx, FAMILY_IPV6) };
            counters::inc(0, counter::PASS_IPV6_UNREADY);
            xdp_action::XDP_PASS
        }
        Some(_) => {
            counters::inc(0, counter::PASS_NOT_IP);
            xdp_action::XDP_PASS
        }
        None => {
            counters::inc(0, counter::PASS_MALFORMED);
            xdp_action::XDP_PASS
        }
    }
}

/// IPv6 frames, tail-called by `redirector` (see
/// `redirector_common::PROGRAM6_NAME`).
#[xdp]
pub fn redirector6(ctx: XdpContext) -> u32 {
    run::<Ip6>(&ctx)
}

/// The program for one address family.
#[inline(always)]
fn run<A: Family>(ctx: &XdpContext) -> u32 {
    match follow::<A>(ctx) {
        UNTRACKED => match untracked::<A>(ctx) {
            OPEN => match open::<A>(ctx) {
                // Its state exists now, and it goes the way of a tracked
                // packet; an evicted one starts over next time.
                OPENED => match follow::<A>(ctx) {
                    UNTRACKED | ICMP | OPEN | OPENED => lost_at_once(),
                    action => action,
                },
                action => action,
            },
            action => action,
        },
        ICMP => match icmp::translate::<A>(ctx) {
            Some(action) => action,
            None => {
                counters::inc(0, counter::PASS_ICMP);
                xdp_action::XDP_PASS
            }
        },
        action => action,
    }
}

/// A flow `open` created was evicted (by a flood, on another CPU) before its
/// first packet could follow it: dropped, counted under its rule, which
/// `open` left in scratch space. Its next packet starts over.
#[inline(never)]
fn lost_at_once() -> u32 {
    if let Some(scratch) = SCRATCH.get_ptr(0) {
        counters::inc(unsafe { (*scratch).rule.rule_id }, counter::LRU_EVICTED);
    }
    xdp_action::XDP_DROP
}

/// `follow`'s answers for a TCP or UDP packet without NAT state and for an ICMP
/// packet; no XDP action has them.
const UNTRACKED: u32 = u32::MAX;
const ICMP: u32 = u32::MAX - 1;
/// `untracked`'s answer for a packet that opens a flow (a SYN, a UDP flow's
/// first datagram) under a rule: `open` does so.
const OPEN: u32 = u32::MAX - 2;
/// `open`'s answer once it did: the packet goes the way of a tracked one.
const OPENED: u32 = u32::MAX - 3;

/// Every packet starts here: parsed, and followed if its flow is tracked.
/// Returns its action, `UNTRACKED` or `ICMP`.
///
/// `follow`, `untracked` and `icmp::translate` are separate calls (each
/// parses the packet) because the verifier limits the stack of a whole call
/// chain to 512 bytes, and each path needs most of that; packet pointers do
/// not survive a trip through the caller's stack either.
#[inline(never)]
fn follow<A: Family>(ctx: &XdpContext) -> u32 {
    let seg = match parse::packet::<A>(ctx) {
        Ok(seg) => seg,
        Err(counter::PASS_ICMP) => return ICMP,
        Err(reason) => {
            counters::inc(0, reason);
            return xdp_action::XDP_PASS;
        }
    };
    let Some(key) = nat::stash(Slot::Packet, seg.key()) else {
        return xdp_action::XDP_DROP;
    };
    match nat::follow(&seg, key, seg.tcp_flags()) {
        Follow::Hit(t) => tracked(ctx, &seg, key, &t),
        // It cannot be translated back; handing it to the stack would
        // only make the old host answer with a RST.
        Follow::Broken => xdp_action::XDP_DROP,
        Follow::Miss => UNTRACKED,
    }
}

#[inline(always)]
fn tracked<A: Family>(
    ctx: &XdpContext,
    seg: &Segment<A>,
    key: &FlowKeyOf<A>,
    t: &Tracked<A>,
) -> u32 {
    let flow = t.to;
    if seg.ttl() <= 1 {
        counters::inc(flow.rule_id, counter::DROP_TTL_EXPIRED);
        return xdp_action::XDP_DROP;
    }
    let hop = match t.hop {
        Some(hop) => NextHop::Resolved(hop),
        None => {
            let hop = forward::lookup(ctx, seg.ip, flow.saddr, flow.daddr);
            if let NextHop::Resolved(h) = &hop {
                nat::remember_hop(t.entry, h, t.now);
            }
            hop
        }
    };
    let hop = match hop {
        NextHop::Resolved(h) => h,
        NextHop::Kernel(reason) => return emit(ctx, seg, key, flow, NextHop::Kernel(reason), None),
        NextHop::Unroutable => {
            // Never hand a tracked packet to the stack untranslated: the
            // old host would reset the connection.
            counters::inc(flow.rule_id, counter::DROP_NO_ROUTE);
            return xdp_action::XDP_DROP;
        }
    };
    let pmtu_sent = unsafe { (*t.entry).pmtu_sent };
    match size::fit(seg, &hop, pmtu_sent) {
        Fit::Send => emit(ctx, seg, key, flow, NextHop::Resolved(hop), Some(false)),
        Fit::Gso if hop.ifindex == ctx.ingress_ifindex() as u32 => {
            emit(ctx, seg, key, flow, NextHop::Resolved(hop), Some(true))
        }
        Fit::Gso => emit(
            ctx,
            seg,
            key,
            flow,
            NextHop::Kernel(counter::PASS_GSO),
            Some(true),
        ),
        Fit::Fragment => emit(
            ctx,
            seg,
            key,
            flow,
            NextHop::Kernel(counter::PASS_FRAGMENT_NEEDED),
            Some(false),
        ),
        Fit::TooBig => {
            unsafe { (*t.entry).pmtu_sent = hop.mtu };
            counters::inc(flow.rule_id, counter::ICMP_FRAG_NEEDED_SENT);
            A::too_big(ctx, hop.mtu).unwrap_or(xdp_action::XDP_DROP)
        }
    }
}

/// A packet without NAT state: a new connection to a rule's address, or
/// something the old host's own stack handles. Out of line (see `follow`).
#[inline(never)]
fn untracked<A: Family>(ctx: &XdpContext) -> u32 {
    // `follow` parsed it already: it is a TCP segment or UDP datagram.
    let Ok(seg) = parse::packet::<A>(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(key) = nat::stash(Slot::Packet, seg.key()) else {
        return xdp_action::XDP_DROP;
    };
    let (seg, tcp_flags) = (&seg, seg.tcp_flags());
    let rule_key = RuleKey {
        addr: key.daddr.rule_addr(),
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    let Some(rule) = (unsafe { RULES.get(rule_key) }).copied() else {
        counters::inc(0, counter::PASS_NO_RULE);
        return xdp_action::XDP_PASS;
    };
    let id = rule.rule_id;
    // Like iptables' nat table, only new connections are redirected. A UDP
    // datagram without state starts a flow, unless a socket connected to
    // its sender holds it: a flow the old host itself already serves.
    if seg.is_tcp() && !nat::is_syn(tcp_flags) {
        // Served by the old host itself (or evicted).
        counters::inc(id, counter::PASS_UNTRACKED);
        return xdp_action::XDP_PASS;
    }
    // A partial redirect (a weighted shift) leaves the clients outside its
    // share to the old host: each new connection of theirs is passed, and
    // their packets after it find no state and are passed too.
    if rule.share < SHARE_ALL && client_bucket(&key.saddr.rule_addr()) >= rule.share {
        counters::inc(id, counter::PASS_NOT_IN_SHARE);
        return xdp_action::XDP_PASS;
    }
    let tuple = ((key.saddr, key.daddr), (key.sport, key.dport));
    if socket::owned_locally(ctx, tuple.0, tuple.1, key.proto, socket::Udp::Connected) {
        counters::inc(id, counter::PASS_LOCAL_SOCKET);
        return xdp_action::XDP_PASS;
    }
    if seg.ttl() <= 1 {
        counters::inc(id, counter::DROP_TTL_EXPIRED);
        return xdp_action::XDP_DROP;
    }
    // Route first: a connection that cannot be forwarded gets no state
    // and stays the old host's business.
    let hop = forward::lookup(ctx, seg.ip, key.daddr, A::of_rule(rule.new_addr));
    if let NextHop::Unroutable = hop {
        counters::inc(id, counter::PASS_NO_ROUTE);
        return xdp_action::XDP_PASS;
    }
    // The state is opened in a frame of its own (`open`): with IPv6's
    // 40-byte keys this one and `nat::open`'s would exceed the verifier's
    // 512 bytes. What it needs waits in per-CPU scratch space.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    unsafe {
        (*scratch).rule = rule;
        (*scratch).syn = Syn {
            seq_end: seg.seq_end(),
            // Every byte defined: the verifier refuses to read back an
            // uninitialised `None` payload.
            hop: match &hop {
                NextHop::Resolved(h) => *h,
                _ => Hop::NONE,
            },
        };
    }
    OPEN
}

/// Opens NAT state for the packet `untracked` found new, with the rule and
/// next hop it left in scratch space; `OPENED` or the action. Out of line
/// (see `follow`).
#[inline(never)]
fn open<A: Family>(ctx: &XdpContext) -> u32 {
    let Ok(seg) = parse::packet::<A>(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(scratch) = SCRATCH.get_ptr(0) else {
        return xdp_action::XDP_DROP;
    };
    let Some(key) = nat::stash(Slot::Packet, seg.key()) else {
        return xdp_action::XDP_DROP;
    };
    let (rule, syn) = unsafe { (&(*scratch).rule, &(*scratch).syn) };
    let id = rule.rule_id;
    match nat::open(ctx, key, rule, syn) {
        Open::New => counters::inc(id, counter::NEW_FLOWS),
        Open::Existing => {}
        Open::Exhausted => {
            counters::inc(id, counter::NAT_PORT_EXHAUSTED);
            log_no_nat_port(ctx, id, key);
            return xdp_action::XDP_DROP;
        }
    }
    OPENED
}

/// Translates a packet to `flow`'s tuple and sends it to `hop`. `gso`: whether
/// it is a GSO packet, `None` when not known yet.
#[inline(always)]
fn emit<A: Family>(
    ctx: &XdpContext,
    seg: &Segment<A>,
    key: &FlowKeyOf<A>,
    flow: &Rewrite<A>,
    hop: NextHop,
    gso: Option<bool>,
) -> u32 {
    let id = flow.rule_id;
    let (packets, bytes) = if flow.direction == DIR_FORWARD {
        (counter::FWD_PACKETS, counter::FWD_BYTES)
    } else {
        (counter::REPLY_PACKETS, counter::REPLY_BYTES)
    };
    match hop {
        NextHop::Resolved(hop) => {
            rewrite::translate(seg, key, flow, true, gso.unwrap_or(false));
            counters::inc(id, packets);
            counters::add(id, bytes, seg.len as u64);
            forward::send(ctx, seg.eth, id, &hop)
        }
        NextHop::Kernel(reason) => {
            if reason == counter::PASS_NO_NEIGH || reason == counter::PASS_NO_EGRESS {
                log_kernel_forwards(ctx, id, &flow.daddr, reason);
            }
            // Fully translated, so the kernel's forwarding path can take it
            // from here (it decrements the TTL and resolves the neighbour).
            let gso = gso.unwrap_or_else(|| size::is_gso(ctx, seg));
            rewrite::translate(seg, key, flow, false, gso);
            counters::inc(id, packets);
            counters::add(id, bytes, seg.len as u64);
            counters::inc(id, reason);
            xdp_action::XDP_PASS
        }
        NextHop::Unroutable => xdp_action::XDP_DROP,
    }
}

/// Records a SYN dropped for want of a NAT port. Out of line, like
/// `log_kernel_forwards`, so that the code for the record stays out of the
/// packet path (the daemon's log level decides whether it exists at all).
#[inline(never)]
fn log_no_nat_port<A: Family>(ctx: &XdpContext, rule_id: u32, key: &FlowKeyOf<A>) {
    let sport = u16::from_be(key.sport);
    let addr = key.saddr.rule_addr();
    // A constant per family: the other branch is not compiled in.
    if A::AF == Ip4::AF {
        debug!(
            ctx,
            "rule {}: no free NAT port for {:i}:{}; its SYN or datagram is dropped",
            rule_id,
            u32::from_be(addr[3]),
            sport
        );
    } else {
        debug!(
            ctx,
            "rule {}: no free NAT port for [{:i}]:{}; its SYN or datagram is dropped",
            rule_id,
            bytes16(addr),
            sport
        );
    }
}

/// Records a translated packet handed to the kernel to forward.
#[inline(never)]
fn log_kernel_forwards<A: Family>(ctx: &XdpContext, rule_id: u32, daddr: &A, reason: u32) {
    let addr = daddr.rule_addr();
    let v4 = A::AF == Ip4::AF;
    if reason == counter::PASS_NO_NEIGH {
        if v4 {
            debug!(
                ctx,
                "rule {}: no neighbour entry for the next hop to {:i} yet; the kernel forwards and resolves it",
                rule_id,
                u32::from_be(addr[3])
            );
        } else {
            debug!(
                ctx,
                "rule {}: no neighbour entry for the next hop to {:i} yet; the kernel forwards and resolves it",
                rule_id,
                bytes16(addr)
            );
        }
    } else if v4 {
        debug!(
            ctx,
            "rule {}: the way to {:i} leaves by an interface the redirector is not on; the kernel forwards",
            rule_id,
            u32::from_be(addr[3])
        );
    } else {
        debug!(
            ctx,
            "rule {}: the way to {:i} leaves by an interface the redirector is not on; the kernel forwards",
            rule_id,
            bytes16(addr)
        );
    }
}

/// An IPv6 address as the log's `{:i}` takes it.
#[inline(always)]
fn bytes16(a: Ip6) -> [u8; 16] {
    // SAFETY: four words are sixteen bytes, in memory (network) order.
    unsafe { core::mem::transmute::<Ip6, [u8; 16]>(a) }
}

/// On the loopback interface. When the next hop towards a new host never
/// answers ARP (the new host is dead), the old host's stack reports it with
/// an ICMP host unreachable about the translated packet, addressed to the
/// packet's source: the old host itself, so it travels over loopback. As
/// conntrack does for a NATed connection, this translates it back to the
/// client, whose connect then fails at once instead of after its own
/// timeout. Everything else on loopback is the host's own traffic: it
/// passes uncounted, and is never redirected.
#[xdp]
pub fn redirector_local(ctx: XdpContext) -> u32 {
    match parse::ether_type(&ctx) {
        Some(t) if t == Ip4::ETHER_TYPE => local::<Ip4>(&ctx),
        Some(t) if t == Ip6::ETHER_TYPE => local::<Ip6>(&ctx),
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn local<A: Family>(ctx: &XdpContext) -> u32 {
    match parse::packet::<A>(ctx) {
        Err(counter::PASS_ICMP) => icmp::translate::<A>(ctx).unwrap_or(xdp_action::XDP_PASS),
        _ => xdp_action::XDP_PASS,
    }
}

/// Passes every frame; not part of the redirector. In native mode, veth
/// wakes its peer for frames sent with XDP_TX only if the peer runs an XDP
/// program (GRO alone leaves them queued until other traffic arrives), so
/// test topologies for native mode attach this to the veth peer of an
/// interface the redirector runs on. Generic mode needs nothing from the peer.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
