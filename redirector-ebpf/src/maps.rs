//! Every map of the program, in one place. Names, sizes and layouts are the
//! contract in `redirector-common`; user space fills `RULES`, `SETTINGS` and
//! `EGRESS`, reads `COUNTERS` and garbage-collects `FLOWS`.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use redirector_common::{
    COUNTER_SLOTS, Flow, FlowKey, MAX_EGRESS_IFACES, MAX_EMBRYO_ENTRIES, MAX_FLOW_ENTRIES,
    MAX_RULES, NatSettings, RuleKey, RuleValue,
};

/// The switched-on redirects, keyed by the old address and port.
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

/// `SETTINGS[0]`: the NAT port range.
#[map]
pub static SETTINGS: Array<NatSettings> = Array::with_max_entries(1, 0);

/// Per-rule counters, `rule_id * counter::COUNT + counter::X`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Room for values too big for the program's stack, which the verifier
/// limits to 512 bytes along a whole call chain: a flow entry being built,
/// and the FIB lookup's parameters. One per CPU, used within one run.
#[repr(C)]
pub struct Scratch {
    pub flow: Flow,
    pub fib: [u64; 8],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Egress interfaces for XDP_REDIRECT, keyed by ifindex.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_EGRESS_IFACES, 0);
