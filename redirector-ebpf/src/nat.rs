//! NAT state in `FLOWS`: following a tracked flow (flags, last-seen time,
//! partner entry), and opening a new one (port allocation, both entries).
//!
//! Each entry holds the tuple its packets are rewritten to; its partner's key
//! is that tuple mirrored, and its partner's value is its own key mirrored.
//! So either entry can rebuild the other when the LRU evicted it.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::XdpContext,
};
use redirector_common::{
    DIR_FORWARD, DIR_REPLY, FLOW_ESTABLISHED, FLOW_FIN, FLOW_RST, FLOW_SYN, Flow, FlowKey,
    IPPROTO_TCP, MAX_PORT_RETRIES, RuleValue, counter,
};

use crate::{
    counters,
    maps::{FLOWS, SETTINGS},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    socket,
};

const CLOSING: u8 = FLOW_FIN | FLOW_RST;

/// A `FLOWS` key for a TCP 4-tuple (network order).
///
/// Built from four words rather than as a struct literal: rustc turns the
/// zeroed 3-byte padding into an out-of-line `memset` loop otherwise.
#[inline(always)]
pub fn flow_key(saddr: u32, daddr: u32, sport: u16, dport: u16) -> FlowKey {
    let words = [
        saddr,
        daddr,
        // bpfel: the lower half is the first in memory.
        sport as u32 | (dport as u32) << 16,
        IPPROTO_TCP as u32,
    ];
    // SAFETY: FlowKey is #[repr(C)], 16 bytes of plain integers with
    // explicit padding (checked by redirector-common's layout test).
    unsafe { core::mem::transmute::<[u32; 4], FlowKey>(words) }
}

/// The key of `flow`'s partner entry (`Flow::partner_key`, memset-free).
#[inline(always)]
fn partner_key(flow: &Flow) -> FlowKey {
    flow_key(flow.daddr, flow.saddr, flow.dport, flow.sport)
}

/// What `FLOWS` says about a received segment.
pub enum Follow {
    /// A tracked flow: rewrite to this entry's tuple.
    Hit(Flow),
    /// No usable state (or a closed flow's client port starting over):
    /// a candidate for a new connection.
    Miss,
    /// Tracked, but the partner entry was evicted and its key now belongs
    /// to another connection: this one can no longer be translated back.
    Broken,
}

/// A pure SYN: opens a connection (ECN bits allowed).
#[inline(always)]
pub fn is_syn(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) == TCP_SYN
}

/// The partner of the entry (`key`, `flow`): its key is `flow`'s tuple
/// mirrored, its tuple is `key` mirrored.
#[inline(always)]
fn partner_of(key: &FlowKey, flow: &Flow) -> Flow {
    Flow {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        rule_id: flow.rule_id,
        direction: if flow.direction == DIR_FORWARD {
            DIR_REPLY
        } else {
            DIR_FORWARD
        },
        tcp_flags: flow.tcp_flags,
        _pad: [0; 2],
        last_seen_ns: flow.last_seen_ns,
    }
}

/// Looks up the segment's flow and records what it saw: FIN/RST on both
/// entries (counted once per flow), the handshake ACK, the time. Repairs a
/// partner that the LRU evicted, counting `LRU_EVICTED`.
#[inline(always)]
pub fn follow(key: &FlowKey, tcp_flags: u8) -> Follow {
    let Some(entry) = FLOWS.get_ptr_mut(key) else {
        return Follow::Miss;
    };
    let flow = unsafe { *entry };
    let forward = flow.direction == DIR_FORWARD;
    if forward && is_syn(tcp_flags) && flow.tcp_flags & CLOSING != 0 {
        // The client reuses its port after a close: start afresh, so the
        // new connection follows the rule as it is now.
        let _ = FLOWS.remove(&partner_key(&flow));
        let _ = FLOWS.remove(key);
        return Follow::Miss;
    }

    let pkey = partner_key(&flow);
    let partner = match FLOWS.get_ptr_mut(&pkey) {
        Some(p) => p,
        None => {
            counters::inc(flow.rule_id, counter::LRU_EVICTED);
            let rebuilt = partner_of(key, &flow);
            if FLOWS.insert(&pkey, &rebuilt, BPF_NOEXIST as u64).is_err() {
                return Follow::Broken;
            }
            match FLOWS.get_ptr_mut(&pkey) {
                Some(p) => p,
                None => return Follow::Broken,
            }
        }
    };
    let back = unsafe { partner_key(&*partner) };
    if back.saddr != key.saddr
        || back.daddr != key.daddr
        || back.sport != key.sport
        || back.dport != key.dport
    {
        counters::inc(flow.rule_id, counter::LRU_EVICTED);
        return Follow::Broken;
    }

    let mut events = 0;
    if tcp_flags & TCP_FIN != 0 {
        events |= FLOW_FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        events |= FLOW_RST;
    }
    let mut flags = flow.tcp_flags | events;
    if forward && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_ACK {
        flags |= FLOW_ESTABLISHED;
    }
    unsafe {
        if events != 0 {
            let partner_flags = (*partner).tcp_flags;
            if (flow.tcp_flags | partner_flags) & CLOSING == 0 {
                counters::inc(flow.rule_id, counter::FLOWS_CLOSING);
            }
            // Both entries carry the close, so garbage collection can
            // judge a flow by whichever entry it meets first.
            if partner_flags | events != partner_flags {
                (*partner).tcp_flags = partner_flags | events;
            }
        }
        if flags != flow.tcp_flags {
            (*entry).tcp_flags = flags;
        }
        (*entry).last_seen_ns = bpf_ktime_get_ns();
    }
    Follow::Hit(flow)
}

/// The result of opening a connection.
pub enum Open {
    /// Both entries were created; rewrite to this forward entry.
    New(Flow),
    /// Another CPU opened the same connection a moment earlier (the same
    /// SYN retransmitted to another queue): use its entry.
    Existing(Flow),
    /// No NAT port was free.
    Exhausted,
}

/// Opens NAT state for a SYN with received tuple `key` under `rule`:
/// claims a reply key (the client's own port if free, else random ports
/// from `SETTINGS`), then inserts the forward entry.
#[inline(always)]
pub fn open(ctx: &XdpContext, key: &FlowKey, rule: &RuleValue) -> Open {
    let now = unsafe { bpf_ktime_get_ns() };
    let mut reply_key = flow_key(rule.new_addr, key.daddr, rule.new_port, key.sport);
    let reply = Flow {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        rule_id: rule.rule_id,
        direction: DIR_REPLY,
        tcp_flags: FLOW_SYN,
        _pad: [0; 2],
        last_seen_ns: now,
    };

    if !claim(ctx, &reply_key, &reply) {
        let Some(settings) = SETTINGS.get(0) else {
            return Open::Exhausted;
        };
        let (min, max) = (settings.port_min as u32, settings.port_max as u32);
        let tries = if min == 0 || max < min {
            0
        } else {
            settings.port_retries
        };
        let span = max - min + 1;
        let mut claimed = false;
        let mut i = 0;
        while i < MAX_PORT_RETRIES && i < tries {
            let port = min
                + unsafe { bpf_get_prandom_u32() }
                    .checked_rem(span)
                    .unwrap_or(0);
            reply_key.dport = (port as u16).to_be();
            if claim(ctx, &reply_key, &reply) {
                claimed = true;
                break;
            }
            i += 1;
        }
        if !claimed {
            return Open::Exhausted;
        }
    }

    let forward = Flow {
        saddr: key.daddr,
        daddr: rule.new_addr,
        sport: reply_key.dport,
        dport: rule.new_port,
        rule_id: rule.rule_id,
        direction: DIR_FORWARD,
        tcp_flags: FLOW_SYN,
        _pad: [0; 2],
        last_seen_ns: now,
    };
    if FLOWS.insert(key, &forward, BPF_NOEXIST as u64).is_ok() {
        return Open::New(forward);
    }
    let _ = FLOWS.remove(&reply_key);
    match FLOWS.get_ptr(key) {
        Some(existing) => Open::Existing(unsafe { *existing }),
        None => Open::Exhausted,
    }
}

/// Takes `reply_key` for a new connection unless a flow or a local socket
/// already uses it. `BPF_NOEXIST` makes the claim atomic: two CPUs cannot
/// take the same port.
#[inline(always)]
fn claim(ctx: &XdpContext, reply_key: &FlowKey, reply: &Flow) -> bool {
    if socket::owned_locally(
        ctx,
        reply_key.saddr,
        reply_key.daddr,
        reply_key.sport,
        reply_key.dport,
    ) {
        return false;
    }
    FLOWS.insert(reply_key, reply, BPF_NOEXIST as u64).is_ok()
}
