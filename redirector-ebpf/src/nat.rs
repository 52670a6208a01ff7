//! NAT state in `FLOWS`: following a tracked flow (flags, last-seen time,
//! partner entry), and opening a new one (port allocation, both entries).
//!
//! TCP and UDP flows are the same but for what opens and establishes them:
//! a SYN and the client's handshake ACK for TCP; for UDP any datagram to a
//! rule's address, and the client sending again after the new host
//! answered (see `redirector_common::FLOW_UDP_ANSWERED`).
//!
//! Each entry holds the tuple its packets are rewritten to; its partner's key
//! is that tuple mirrored, and its partner's value is its own key mirrored.
//! So either entry can rebuild the other when the LRU evicted it.
//!
//! Written once for both families: `A` is the address type (see
//! `family`), and IPv4 and IPv6 flows live in tables of their own.

use core::ptr::write_volatile;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
    programs::XdpContext,
};
use redirector_common::{
    DIR_FORWARD, DIR_REPLY, FLOW_CLOSED, FLOW_ESTABLISHED, FLOW_FIN, FLOW_FIN_FORWARD,
    FLOW_FIN_REPLY, FLOW_REPLY_CLOSED_FIRST, FLOW_RST, FLOW_SYN, FLOW_UDP_ANSWERED, FlowKeyOf,
    FlowOf, IPPROTO_TCP, IPPROTO_UDP, MAX_PORT_RETRIES, NEXT_HOP_CACHE_NS, NatSettings, RuleValue,
    counter,
};

use crate::{
    counters,
    family::Family,
    maps::{SCRATCH, SETTINGS},
    parse::{Segment, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    socket,
};

const CLOSING: u8 = FLOW_FIN | FLOW_RST;
const BOTH_FINS: u8 = FLOW_FIN_FORWARD | FLOW_FIN_REPLY;

/// The key of the partner of an entry that rewrites to `to`
/// (`FlowOf::partner_key`, memset-free).
#[inline(always)]
fn partner_key<A: Family>(to: &Rewrite<A>) -> FlowKeyOf<A> {
    A::key(to.daddr, to.saddr, to.dport, to.sport, to.proto)
}

/// Whether `entry`'s partner key is `key`: the entry rewrites to `key`'s
/// tuple mirrored. Compared field by field, without building the key on
/// the stack (IPv6's is 40 bytes).
#[inline(always)]
fn mirrors<A: Family>(entry: *const FlowOf<A>, key: &FlowKeyOf<A>) -> bool {
    unsafe {
        A::same((*entry).daddr, key.saddr)
            && A::same((*entry).saddr, key.daddr)
            && (*entry).dport == key.sport
            && (*entry).sport == key.dport
            && (*entry).proto == key.proto
    }
}

/// A next hop as cached in a flow entry.
#[derive(Clone, Copy)]
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The egress interface's MTU.
    pub mtu: u16,
    /// The ingress interface's MTU.
    pub in_mtu: u16,
}

impl Hop {
    /// No next hop (ifindex 0, as in a flow entry without one).
    pub const NONE: Hop = Hop {
        ifindex: 0,
        smac: [0; 6],
        dmac: [0; 6],
        mtu: 0,
        in_mtu: 0,
    };
}

/// Which per-CPU key slot (see `maps::Scratch`).
#[derive(Clone, Copy)]
pub enum Slot {
    /// The packet's own key, for the whole of `follow`, `untracked` or
    /// `open`.
    Packet,
    /// A partner key, for as long as one step needs it.
    Partner,
}

/// Puts `key` in per-CPU scratch space and returns it there.
#[inline(always)]
pub fn stash<A: Family>(slot: Slot, key: FlowKeyOf<A>) -> Option<&'static FlowKeyOf<A>> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // Room for either family's key, 8-byte aligned.
    let place = unsafe {
        match slot {
            Slot::Packet => (&raw mut (*scratch).key).cast::<FlowKeyOf<A>>(),
            Slot::Partner => (&raw mut (*scratch).partner).cast::<FlowKeyOf<A>>(),
        }
    };
    unsafe {
        place.write(key);
        Some(&*place)
    }
}

/// Copies what `entry` rewrites to into per-CPU scratch space.
#[inline(always)]
fn stash_rewrite<A: Family>(entry: *const FlowOf<A>) -> Option<&'static Rewrite<A>> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // Room for either family's, 8-byte aligned.
    let place = unsafe { (&raw mut (*scratch).to).cast::<Rewrite<A>>() };
    unsafe {
        place.write(Rewrite::of(entry));
        Some(&*place)
    }
}

/// A per-CPU place to build a flow entry in before it goes into its table.
#[inline(always)]
fn scratch_flow<A: Family>() -> Option<*mut FlowOf<A>> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // Room for the larger (IPv6) entry, 8-byte aligned.
    Some(unsafe { (&raw mut (*scratch).flow).cast() })
}

/// Writes a flow entry in place, as words rather than as a struct literal:
/// zeroed byte arrays in a literal, or a copy of a value LLVM knows to be
/// partly zero, become an out-of-line memset loop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_flow<A: Family>(
    flow: *mut FlowOf<A>,
    to: (A, A, u16, u16),
    rule_id: u32,
    direction: u8,
    tcp_flags: u8,
    now: u64,
    hop: Option<Hop>,
    proto: u8,
) {
    let (saddr, daddr, sport, dport) = to;
    let (ifindex, s, d, mtu, in_mtu, checked) = match hop {
        Some(h) => (h.ifindex, h.smac, h.dmac, h.mtu, h.in_mtu, now),
        None => (0, [0; 6], [0; 6], 0, 0, 0),
    };
    // SAFETY: FlowOf is #[repr(C)], plain integers whose offsets
    // redirector-common's layout test pins (bpfel is little endian): the
    // address words and the seven after them, the same for both families,
    // initialise all of it. Volatile keeps LLVM from merging the zero words
    // into a memset call; one store each, no array on the stack.
    unsafe {
        let out = A::write_addrs(flow.cast::<u64>(), saddr, daddr);
        write_volatile(
            out,
            sport as u64 | (dport as u64) << 16 | (rule_id as u64) << 32,
        );
        write_volatile(
            out.add(1),
            direction as u64
                | (tcp_flags as u64) << 8
                | (mtu as u64) << 16
                | (ifindex as u64) << 32,
        );
        write_volatile(out.add(2), now);
        write_volatile(
            out.add(3),
            u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], d[0], d[1]]),
        );
        write_volatile(
            out.add(4),
            u64::from_le_bytes([d[2], d[3], d[4], d[5], 0, 0, 0, 0]),
        );
        write_volatile(out.add(5), checked);
        write_volatile(out.add(6), (in_mtu as u64) << 16 | (proto as u64) << 32);
    }
}

const _: () = assert!(core::mem::size_of::<FlowOf<u32>>() == 8 + 7 * 8);
const _: () = assert!(core::mem::size_of::<FlowOf<[u32; 4]>>() == 32 + 7 * 8);

/// What a packet of a flow is rewritten to, and whose counters it counts in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Rewrite<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub rule_id: u32,
    pub direction: u8,
    pub proto: u8,
}

impl<A: Family> Rewrite<A> {
    #[inline(always)]
    pub fn of(flow: *const FlowOf<A>) -> Self {
        unsafe {
            Self {
                saddr: (*flow).saddr,
                daddr: (*flow).daddr,
                sport: (*flow).sport,
                dport: (*flow).dport,
                rule_id: (*flow).rule_id,
                direction: (*flow).direction,
                proto: (*flow).proto,
            }
        }
    }
}

/// A tracked flow's entry as found for a segment.
pub struct Tracked<A: 'static> {
    /// The entry in its table, for caching the next hop.
    pub entry: *mut FlowOf<A>,
    /// A copy of what the entry rewrites to, in scratch space (IPv6's is
    /// 48 bytes, and the stack is the verifier's scarcest resource).
    pub to: &'static Rewrite<A>,
    /// The cached next hop, if still fresh.
    pub hop: Option<Hop>,
    pub now: u64,
}

/// What `FLOWS` says about a received segment.
pub enum Follow<A: 'static> {
    /// A tracked flow: rewrite to this entry's tuple.
    Hit(Tracked<A>),
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

/// Looks up the segment's flow and records what it saw: the time, the
/// handshake ACK, FIN/RST and the close on both entries (counted once per
/// flow).
///
/// The partner entry is checked only when the cached next hop is renewed
/// (every `NEXT_HOP_CACHE_NS`) or on a new close event, because a lookup is
/// a third of a packet's cost. A missing partner is rebuilt (counting
/// `LRU_EVICTED`).
#[inline(always)]
pub fn follow<A: Family>(seg: &Segment<A>, key: &FlowKeyOf<A>, tcp_flags: u8) -> Follow<A> {
    let entry = match A::flows().get_ptr_mut(key) {
        Some(entry) => entry,
        None => {
            // Maybe a connection still in its handshake (TCP) or a UDP
            // flow that is no stream yet: the client's handshake ACK, or its
            // datagram after an answer, moves it here; anything else is
            // translated from EMBRYOS.
            let Some(embryo) = A::embryos().get_ptr_mut(key) else {
                return Follow::Miss;
            };
            let Some(to) = stash_rewrite(embryo) else {
                return Follow::Broken;
            };
            let seen = unsafe { (*embryo).tcp_flags };
            let establishes = to.direction == DIR_FORWARD
                && if key.proto == IPPROTO_TCP {
                    tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK
                } else {
                    seen & FLOW_UDP_ANSWERED != 0
                };
            if !establishes {
                if key.proto != IPPROTO_TCP && to.direction == DIR_REPLY {
                    answered(embryo, to, seen);
                }
                return half_open(embryo, to, tcp_flags);
            }
            match establish(key, embryo, to) {
                Some(entry) => entry,
                // Another CPU moved it a moment ago, or its partner was
                // evicted by a flood and it cannot be translated back.
                None => match A::flows().get_ptr_mut(key) {
                    Some(entry) => entry,
                    None => return Follow::Miss,
                },
            }
        }
    };
    let Some(to) = stash_rewrite(entry) else {
        return Follow::Broken;
    };
    let seen = unsafe { (*entry).tcp_flags };
    let forward = to.direction == DIR_FORWARD;
    if forward && is_syn(tcp_flags) && seen & CLOSING != 0 {
        // The client reuses its port after a close: start afresh, so the
        // new connection follows the rule as it is now.
        let _ = A::flows().remove(partner_key(to));
        let _ = A::flows().remove(key);
        return Follow::Miss;
    }

    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let events = close_events(seen, forward, tcp_flags) & !seen;
    let (hop_ifindex, hop_checked_ns) = unsafe { ((*entry).hop_ifindex, (*entry).hop_checked_ns) };
    let fresh = hop_ifindex != 0 && now.wrapping_sub(hop_checked_ns) < NEXT_HOP_CACHE_NS;
    if !fresh || events != 0 {
        let Some(partner) = partner(key, to, seen, now) else {
            return Follow::Broken;
        };
        if events != 0 {
            let partner_flags = unsafe { (*partner).tcp_flags };
            if (seen | partner_flags) & CLOSING == 0 && events & CLOSING != 0 {
                counters::inc(to.rule_id, counter::FLOWS_CLOSING);
            }
            // Both entries carry the close, so garbage collection and port
            // reuse can judge a flow by whichever entry they meet.
            unsafe {
                if events & FLOW_FIN_FORWARD != 0 {
                    let close_seq = seg.seq_end();
                    (*entry).close_seq = close_seq;
                    (*partner).close_seq = close_seq;
                }
                if partner_flags | events != partner_flags {
                    (*partner).tcp_flags = partner_flags | events;
                }
            }
        }
    }

    let mut flags = seen | events;
    if forward && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_ACK {
        flags |= FLOW_ESTABLISHED;
    }
    let hop = unsafe {
        if flags != seen {
            (*entry).tcp_flags = flags;
        }
        // The coarse clock moves once per tick: most packets need no store
        // (and leave the cache line clean for the other CPUs).
        if (*entry).last_seen_ns != now {
            (*entry).last_seen_ns = now;
        }
        if fresh { Some(cached_hop(entry)) } else { None }
    };
    Follow::Hit(Tracked {
        entry,
        to,
        hop,
        now,
    })
}

/// The next hop an entry caches (whether still fresh is the caller's
/// question).
#[inline(always)]
fn cached_hop<A>(entry: *const FlowOf<A>) -> Hop {
    unsafe {
        Hop {
            ifindex: (*entry).hop_ifindex,
            smac: (*entry).hop_smac,
            dmac: (*entry).hop_dmac,
            mtu: (*entry).hop_mtu,
            in_mtu: (*entry).hop_in_mtu,
        }
    }
}

/// Follows a segment of a connection still in its handshake (SYN-ACK, a
/// retransmitted SYN, a RST) from its entry in `EMBRYOS`: the next hop
/// cached, a RST recorded so that collection ends it after
/// `timeouts.closing`.
#[inline(always)]
fn half_open<A: Family>(
    entry: *mut FlowOf<A>,
    to: &'static Rewrite<A>,
    tcp_flags: u8,
) -> Follow<A> {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let hop = unsafe {
        if tcp_flags & TCP_RST != 0 {
            (*entry).tcp_flags |= FLOW_RST | FLOW_CLOSED;
        }
        (*entry).last_seen_ns = now;
        let (ifindex, checked) = ((*entry).hop_ifindex, (*entry).hop_checked_ns);
        if ifindex != 0 && now.wrapping_sub(checked) < NEXT_HOP_CACHE_NS {
            Some(cached_hop(entry))
        } else {
            None
        }
    };
    Follow::Hit(Tracked {
        entry,
        to,
        hop,
        now,
    })
}

/// Marks both entries of a UDP flow in `EMBRYOS` answered, at the new
/// host's first answer (`seen`: the entry's flags).
#[inline(always)]
fn answered<A: Family>(entry: *mut FlowOf<A>, to: &Rewrite<A>, seen: u8) {
    if seen & FLOW_UDP_ANSWERED != 0 {
        return;
    }
    unsafe {
        (*entry).tcp_flags = seen | FLOW_UDP_ANSWERED;
        if let Some(partner) = A::embryos().get_ptr_mut(partner_key(to)) {
            (*partner).tcp_flags |= FLOW_UDP_ANSWERED;
        }
    }
}

/// Moves a connection whose handshake completed (a UDP flow that became a
/// stream) from `EMBRYOS` to `FLOWS` (into `FLOWS` first, so that its
/// ports are never free in between).
#[inline(always)]
fn establish<A: Family>(
    key: &FlowKeyOf<A>,
    entry: *mut FlowOf<A>,
    to: &Rewrite<A>,
) -> Option<*mut FlowOf<A>> {
    let (flows, embryos) = (A::flows(), A::embryos());
    let pkey = stash(Slot::Partner, partner_key(to))?;
    let partner = embryos.get_ptr_mut(pkey)?;
    if to.proto == IPPROTO_UDP {
        // Both entries: collection judges a UDP flow by either.
        unsafe {
            (*entry).tcp_flags |= FLOW_ESTABLISHED;
            (*partner).tcp_flags |= FLOW_ESTABLISHED;
        }
    }
    flows.insert(pkey, unsafe { &*partner }, 0).ok()?;
    flows.insert(key, unsafe { &*entry }, 0).ok()?;
    let _ = embryos.remove(pkey);
    let _ = embryos.remove(key);
    flows.get_ptr_mut(key)
}

/// The close events a segment with `tcp_flags` brings to a flow that has
/// seen `seen`, from the client (`forward`) or from the new host.
#[inline(always)]
fn close_events(seen: u8, forward: bool, tcp_flags: u8) -> u8 {
    let mut events = 0;
    if tcp_flags & TCP_FIN != 0 {
        if forward {
            events |= FLOW_FIN | FLOW_FIN_FORWARD;
        } else {
            events |= FLOW_FIN | FLOW_FIN_REPLY;
            if seen & FLOW_FIN_FORWARD == 0 {
                events |= FLOW_REPLY_CLOSED_FIRST;
            }
        }
    } else if seen & BOTH_FINS == BOTH_FINS {
        // After both FINs, a segment without one is the last ACK.
        events |= FLOW_CLOSED;
    }
    if tcp_flags & TCP_RST != 0 {
        events |= FLOW_RST | FLOW_CLOSED;
    }
    events
}

/// The partner entry of (`key`, `flow`), rebuilt if the LRU evicted it;
/// `None` if its key now belongs to another connection.
#[inline(always)]
fn partner<A: Family>(
    key: &FlowKeyOf<A>,
    to: &Rewrite<A>,
    tcp_flags: u8,
    now: u64,
) -> Option<*mut FlowOf<A>> {
    let pkey = stash(Slot::Partner, partner_key(to))?;
    let partner = match A::flows().get_ptr_mut(pkey) {
        Some(p) => p,
        None => {
            counters::inc(to.rule_id, counter::LRU_EVICTED);
            // A new connection in its handshake took the key meanwhile.
            if A::embryos().get_ptr(pkey).is_some() {
                return None;
            }
            // Its key is this entry's tuple mirrored, its tuple this
            // entry's key mirrored.
            let direction = if to.direction == DIR_FORWARD {
                DIR_REPLY
            } else {
                DIR_FORWARD
            };
            let rebuilt = scratch_flow::<A>()?;
            write_flow(
                rebuilt,
                (key.daddr, key.saddr, key.dport, key.sport),
                to.rule_id,
                direction,
                tcp_flags,
                now,
                None,
                key.proto,
            );
            A::flows()
                .insert(pkey, unsafe { &*rebuilt }, BPF_NOEXIST as u64)
                .ok()?;
            A::flows().get_ptr_mut(pkey)?
        }
    };
    if !mirrors(partner, key) {
        counters::inc(to.rule_id, counter::LRU_EVICTED);
        return None;
    }
    Some(partner)
}

/// Caches a freshly looked-up next hop in a flow entry.
#[inline(always)]
pub fn remember_hop<A>(entry: *mut FlowOf<A>, hop: &Hop, now: u64) {
    unsafe {
        (*entry).hop_ifindex = hop.ifindex;
        (*entry).hop_mtu = hop.mtu;
        (*entry).hop_in_mtu = hop.in_mtu;
        (*entry).hop_smac = hop.smac;
        (*entry).hop_dmac = hop.dmac;
        (*entry).hop_checked_ns = now;
    }
}

/// What `open` needs to know about the SYN (or a UDP flow's first
/// datagram) besides its tuple (one argument: a BPF call takes at most
/// five).
pub struct Syn {
    /// `Segment::seq_end` of the SYN; 0 for UDP.
    pub seq_end: u32,
    /// The next hop to cache in the forward entry; `Hop::NONE` if not
    /// resolved.
    pub hop: Hop,
}

/// The result of opening a connection; the packet then follows its state.
pub enum Open {
    /// Both entries were created.
    New,
    /// Another CPU opened the same connection a moment earlier (the same
    /// SYN retransmitted to another queue).
    Existing,
    /// No NAT port was free.
    Exhausted,
}

/// Opens NAT state for a SYN (or a UDP flow's first datagram) with received
/// tuple `key` under `rule`:
/// claims a reply key (the client's own port if free, else ports from
/// `SETTINGS`), then inserts the forward entry.
#[inline(always)]
pub fn open<A: Family>(ctx: &XdpContext, key: &FlowKeyOf<A>, rule: &RuleValue, syn: &Syn) -> Open {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let syn_end = syn.seq_end;
    let hop = if syn.hop.ifindex != 0 {
        Some(syn.hop)
    } else {
        None
    };
    let proto = key.proto;
    let opened = if proto == IPPROTO_TCP { FLOW_SYN } else { 0 };
    let new_addr = A::of_rule(rule.new_addr);
    let mut reply_key = A::key(new_addr, key.daddr, rule.new_port, key.sport, proto);
    let Some(entry) = scratch_flow::<A>() else {
        return Open::Exhausted;
    };
    write_flow(
        entry,
        (key.daddr, key.saddr, key.dport, key.sport),
        rule.rule_id,
        DIR_REPLY,
        opened,
        now,
        None,
        proto,
    );
    let reply = unsafe { &*entry };

    // Free ports first (a connection the client closed counts as free);
    // only when none is, those of connections the new host closed, which
    // it may still hold in TIME_WAIT: first those it will surely take the
    // SYN on, then any (see `reusable`).
    let start = unsafe { bpf_get_prandom_u32() };
    let Some(settings) = SETTINGS.get(0) else {
        return Open::Exhausted;
    };
    // A UDP flow is never closed: only free ports are to be had.
    let last = if proto == IPPROTO_TCP {
        ANY_CLOSED
    } else {
        FREE
    };
    let mut level = FREE;
    let claimed = loop {
        if pick(ctx, &mut reply_key, reply, syn_end, settings, start, level) {
            break true;
        }
        if level >= last {
            break false;
        }
        level += 1;
    };
    if !claimed {
        return Open::Exhausted;
    }

    let to = (key.daddr, new_addr, reply_key.dport, rule.new_port);
    // The reply entry is in the map: its place becomes the forward entry's.
    write_flow(
        entry,
        to,
        rule.rule_id,
        DIR_FORWARD,
        opened,
        now,
        hop,
        proto,
    );
    let embryos = A::embryos();
    if embryos
        .insert(key, unsafe { &*entry }, BPF_NOEXIST as u64)
        .is_ok()
    {
        return Open::New;
    }
    let _ = embryos.remove(reply_key);
    match embryos.get_ptr(key) {
        Some(_) => Open::Existing,
        None => Open::Exhausted,
    }
}

/// Claims a reply key for a new connection: the client's own port (already
/// in `reply_key`) unless it is one the old host may pick for its own
/// connections, else `nat.port_retries` consecutive ports of the range
/// from a random one (`start`), as the kernel's NAT picks them, so that in a
/// small range every try is a different port. `level`: which closed
/// connections' ports count as free (`reusable`).
/// Leaves the claimed port in `reply_key`.
#[inline(always)]
fn pick<A: Family>(
    ctx: &XdpContext,
    reply_key: &mut FlowKeyOf<A>,
    reply: &FlowOf<A>,
    syn_end: u32,
    settings: &NatSettings,
    start: u32,
    level: u8,
) -> bool {
    let own = reply_key.dport;
    let own_host = u16::from_be(own);
    let local = own_host >= settings.local_min && own_host <= settings.local_max;
    if !local && claim(ctx, reply_key, reply, syn_end, level) {
        return true;
    }
    let (min, max) = (settings.port_min as u32, settings.port_max as u32);
    if min == 0 || max < min {
        return false;
    }
    let span = max - min + 1;
    let start = start.checked_rem(span).unwrap_or(0);
    let mut i = 0;
    while i < MAX_PORT_RETRIES && i < settings.port_retries && i < span {
        let port = min + (start + i).checked_rem(span).unwrap_or(0);
        reply_key.dport = (port as u16).to_be();
        if claim(ctx, reply_key, reply, syn_end, level) {
            return true;
        }
        i += 1;
    }
    reply_key.dport = own;
    false
}

/// Takes `reply_key` for a new connection unless a live flow or a local
/// socket uses it. `BPF_NOEXIST` makes the claim atomic: two CPUs cannot
/// take the same port. A closed connection's port is taken over (see
/// `reusable`): otherwise ports would stay reserved until garbage
/// collection, and clients that open many short connections would run out
/// of them.
#[inline(always)]
fn claim<A: Family>(
    ctx: &XdpContext,
    reply_key: &FlowKeyOf<A>,
    reply: &FlowOf<A>,
    syn_end: u32,
    level: u8,
) -> bool {
    let (flows, embryos) = (A::flows(), A::embryos());
    if socket::owned_locally::<A>(
        ctx,
        (reply_key.saddr, reply_key.daddr),
        (reply_key.sport, reply_key.dport),
        reply_key.proto,
        socket::Udp::Bound,
    ) {
        return false;
    }
    // Taken by an established (or closed) connection in FLOWS, unless that
    // one may give it up; by a half-open one in EMBRYOS, always.
    let mut reused = None;
    if let Some(old) = flows.get_ptr(reply_key) {
        let (flags, close_seq) = unsafe { ((*old).tcp_flags, (*old).close_seq) };
        if !reusable(flags, close_seq, syn_end, level) {
            return false;
        }
        // The old connection's forward entry goes too, unless its key
        // already belongs to another connection (the same client starting
        // over).
        let old_forward = partner_key(&Rewrite::of(old));
        if let Some(f) = flows.get_ptr(&old_forward)
            && mirrors(f, reply_key)
        {
            let _ = flows.remove(&old_forward);
        }
        reused = Some(unsafe { (*old).rule_id });
        let _ = flows.remove(reply_key);
    }
    if embryos
        .insert(reply_key, reply, BPF_NOEXIST as u64)
        .is_err()
    {
        return false;
    }
    if let Some(rule_id) = reused {
        counters::inc(rule_id, counter::PORT_REUSED);
    }
    true
}

/// Which closed connections' ports `pick` may take: only free ones (a
/// connection the client closed or reset counts as free: the new host
/// keeps nothing of it)...
const FREE: u8 = 0;
/// ...also those the new host closed first, where the new SYN's sequence
/// number is past the old connection's: the new host holds such a port in
/// TIME_WAIT and takes a SYN on it when its sequence number is past (RFC
/// 6191; conntrack reuses a TIME_WAIT entry only then)...
const PAST_SEQUENCE: u8 = 1;
/// ...and, as the last resort, any closed one: the new host also takes the
/// SYN when its timestamp is newer (always, for the same client), and when
/// it takes it on neither count, its answer makes the client reset the old
/// connection and retransmit its SYN a second later, which is all that
/// dropping the SYN would have achieved.
const ANY_CLOSED: u8 = 2;
// `open` tries the levels in turn by counting up.
const _: () = assert!(PAST_SEQUENCE == FREE + 1 && ANY_CLOSED == PAST_SEQUENCE + 1);

/// Whether a closed connection's NAT port may go, at `level`, to a new
/// connection whose SYN ends at `syn_end`.
#[inline(always)]
fn reusable(flags: u8, close_seq: u32, syn_end: u32, level: u8) -> bool {
    if flags & FLOW_CLOSED == 0 {
        return false;
    }
    if flags & FLOW_REPLY_CLOSED_FIRST == 0 {
        return true;
    }
    match level {
        FREE => false,
        PAST_SEQUENCE => (syn_end.wrapping_sub(close_seq) as i32) > 0,
        _ => true,
    }
}
