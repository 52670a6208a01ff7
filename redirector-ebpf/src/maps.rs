//! Every map of the program, in one place. Names, sizes and layouts are the
//! contract in `redirector-common`; user space fills `RULES`, `SETTINGS` and
//! `EGRESS`, reads `COUNTERS` and garbage-collects `FLOWS`.

use crate::nat::{Rewrite, Syn};
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray},
};
use redirector_common::{
    COUNTER_SLOTS, Flow, Flow6, FlowKey, FlowKey6, Ip6, MAX_EGRESS_IFACES, MAX_EMBRYO_ENTRIES,
    MAX_EMBRYO6_ENTRIES, MAX_FLOW_ENTRIES, MAX_FLOW6_ENTRIES, MAX_RULES, NatSettings, RuleKey,
    RuleValue,
};

/// The switched-on redirects, keyed by the old address (IPv4 mapped into
/// IPv6) and port.
#[map]
pub static RULES: HashMap<RuleKey, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);

/// NAT state of established connections: a forward and a reply entry per
/// connection. One map shared by all CPUs (not per-CPU), because a reply
/// often arrives on another CPU than its request; LRU so that more
/// connections than it holds evict idle ones instead of failing new ones.
#[map]
pub static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(MAX_FLOW_ENTRIES, 0);

/// NAT state of connections in their handshake, apart so that a SYN flood
/// evicts only its own kind (see `redirector_common::maps::EMBRYOS`).
#[map]
pub static EMBRYOS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(MAX_EMBRYO_ENTRIES, 0);

/// `FLOWS` and `EMBRYOS` for IPv6: tables of their own, so that IPv4's
/// keep 16-byte keys.
#[map]
pub static FLOWS6: LruHashMap<FlowKey6, Flow6> = LruHashMap::with_max_entries(MAX_FLOW6_ENTRIES, 0);

#[map]
pub static EMBRYOS6: LruHashMap<FlowKey6, Flow6> =
    LruHashMap::with_max_entries(MAX_EMBRYO6_ENTRIES, 0);

/// `SETTINGS[0]`: the NAT port range.
#[map]
pub static SETTINGS: Array<NatSettings> = Array::with_max_entries(1, 0);

/// Per-rule counters, `rule_id * counter::COUNT + counter::X`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Room for values too big for the program's stack, which the verifier
/// limits to 512 bytes along a whole call chain: a flow entry being built,
/// the FIB lookup's parameters, and what a new flow is opened with. One per
/// CPU, used within one run.
/// `flow` has room for either family's entry.
#[repr(C)]
pub struct Scratch {
    pub flow: Flow6,
    pub fib: [u64; 8],
    /// The packet's flow key and a partner key, of either family: off the
    /// stack, which IPv6's 40-byte keys would fill.
    pub key: FlowKey6,
    pub partner: FlowKey6,
    /// What the packet's flow entry rewrites to (`nat::Tracked::to`).
    pub to: Rewrite<Ip6>,
    /// What `untracked` found for a new flow, for `open`.
    pub rule: RuleValue,
    pub syn: Syn,
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The IPv6 program, at `FAMILY_IPV6` (see `redirector_common::PROGRAM6_NAME`).
#[map]
pub static FAMILIES: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Egress interfaces for XDP_REDIRECT, keyed by ifindex.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_EGRESS_IFACES, 0);
