//! The redirector's XDP program: stateful NAT of new TCP connections and
//! UDP flows from OLD_IP:PORT to NEW_IP:PORT, the in-kernel equivalent of
//! iptables' DNAT plus MASQUERADE, and the translation of their replies
//! back to the client.
//!
//! One forward pass per packet: parse (`parse`), follow or open NAT state
//! (`nat`), route (`forward`), rewrite (`rewrite`), send. Anything the
//! program does not translate goes to the kernel untouched, counted by
//! reason (`counters`). Maps and limits: `maps` and `redirector-common`.
//!
//! What the old host must provide (the daemon sets it up):
//! - `net.ipv4.ip_forward=1` (or `conf.IF.forwarding=1` on the ingress
//!   interface): `bpf_fib_lookup` refuses to route for an interface that
//!   does not forward, and then new connections are left to the host.
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
use redirector_common::{DIR_FORWARD, FlowKey, RuleKey, counter};

use crate::{
    forward::NextHop,
    maps::RULES,
    nat::{Follow, Open, Rewrite, Syn, Tracked},
    parse::Segment,
    size::Fit,
};

#[xdp]
pub fn redirector(ctx: XdpContext) -> u32 {
    match follow(&ctx) {
        UNTRACKED => match untracked(&ctx) {
            // Its state exists now; an evicted one starts over next time.
            OPENED => match follow(&ctx) {
                UNTRACKED | ICMP | OPENED => xdp_action::XDP_DROP,
                action => action,
            },
            action => action,
        },
        ICMP => match icmp::translate(&ctx) {
            Some(action) => action,
            None => {
                counters::inc(0, counter::PASS_ICMP);
                xdp_action::XDP_PASS
            }
        },
        action => action,
    }
}

/// `follow`'s answers for a TCP or UDP packet without NAT state and for an ICMP
/// packet; no XDP action has them.
const UNTRACKED: u32 = u32::MAX;
const ICMP: u32 = u32::MAX - 1;
/// `untracked`'s answer for a UDP datagram that opened a flow: it goes the
/// way of a tracked one (which checks its size against the next hop, as
/// a SYN's needs no check).
const OPENED: u32 = u32::MAX - 2;

/// Every packet starts here: parsed, and followed if its flow is tracked.
/// Returns its action, `UNTRACKED` or `ICMP`.
///
/// `follow`, `untracked` and `icmp::translate` are separate calls (each
/// parses the packet) because the verifier limits the stack of a whole call
/// chain to 512 bytes, and each path needs most of that; packet pointers do
/// not survive a trip through the caller's stack either.
#[inline(never)]
fn follow(ctx: &XdpContext) -> u32 {
    let seg = match parse::ipv4(ctx) {
        Ok(seg) => seg,
        Err(counter::PASS_ICMP) => return ICMP,
        Err(reason) => {
            counters::inc(0, reason);
            return xdp_action::XDP_PASS;
        }
    };
    let key = seg.key();
    match nat::follow(&seg, &key, seg.tcp_flags()) {
        Follow::Hit(t) => tracked(ctx, &seg, &key, &t),
        // It cannot be translated back; handing it to the stack would
        // only make the old host answer with a RST.
        Follow::Broken => xdp_action::XDP_DROP,
        Follow::Miss => UNTRACKED,
    }
}

#[inline(always)]
fn tracked(ctx: &XdpContext, seg: &Segment, key: &FlowKey, t: &Tracked) -> u32 {
    let flow = &t.to;
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
            size::frag_needed(ctx, hop.mtu).unwrap_or(xdp_action::XDP_DROP)
        }
    }
}

/// A packet without NAT state: a new connection to a rule's address, or
/// something the old host's own stack handles. Out of line (see `follow`).
#[inline(never)]
fn untracked(ctx: &XdpContext) -> u32 {
    // `follow` parsed it already: it is an IPv4 TCP segment or UDP datagram.
    let Ok(seg) = parse::ipv4(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let (seg, key, tcp_flags) = (&seg, &seg.key(), seg.tcp_flags());
    let rule_key = RuleKey {
        addr: key.daddr,
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
    let hop = forward::lookup(ctx, seg.ip, key.daddr, rule.new_addr);
    if let NextHop::Unroutable = hop {
        counters::inc(id, counter::PASS_NO_ROUTE);
        return xdp_action::XDP_PASS;
    }
    let cached = match &hop {
        NextHop::Resolved(h) => Some(*h),
        _ => None,
    };
    let syn = Syn {
        seq_end: seg.seq_end(),
        hop: cached,
    };
    let flow = match nat::open(ctx, key, &rule, &syn) {
        Open::New(flow) => {
            counters::inc(id, counter::NEW_FLOWS);
            flow
        }
        Open::Existing(flow) => flow,
        Open::Exhausted => {
            counters::inc(id, counter::NAT_PORT_EXHAUSTED);
            log_no_nat_port(ctx, id, key);
            return xdp_action::XDP_DROP;
        }
    };
    if !seg.is_tcp() {
        return OPENED;
    }
    // A SYN is never a GSO packet.
    emit(ctx, seg, key, &flow, hop, Some(false))
}

/// Translates a packet to `flow`'s tuple and sends it to `hop`. `gso`: whether
/// it is a GSO packet, `None` when not known yet.
#[inline(always)]
fn emit(
    ctx: &XdpContext,
    seg: &Segment,
    key: &FlowKey,
    flow: &Rewrite,
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
                log_kernel_forwards(ctx, id, flow.daddr, reason);
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
fn log_no_nat_port(ctx: &XdpContext, rule_id: u32, key: &FlowKey) {
    debug!(
        ctx,
        "rule {}: no free NAT port for {:i}:{}; its SYN or datagram is dropped",
        rule_id,
        u32::from_be(key.saddr),
        u16::from_be(key.sport)
    );
}

/// Records a translated packet handed to the kernel to forward.
#[inline(never)]
fn log_kernel_forwards(ctx: &XdpContext, rule_id: u32, daddr: u32, reason: u32) {
    if reason == counter::PASS_NO_NEIGH {
        debug!(
            ctx,
            "rule {}: no neighbour entry for the next hop to {:i} yet; the kernel forwards and resolves it",
            rule_id,
            u32::from_be(daddr)
        );
    } else {
        debug!(
            ctx,
            "rule {}: the way to {:i} leaves by an interface the redirector is not on; the kernel forwards",
            rule_id,
            u32::from_be(daddr)
        );
    }
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
    match parse::ipv4(&ctx) {
        Err(counter::PASS_ICMP) => icmp::translate(&ctx).unwrap_or(xdp_action::XDP_PASS),
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
