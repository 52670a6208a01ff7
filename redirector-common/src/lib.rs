//! The contract between the XDP program and the redirector daemon: map
//! names, limits, key and value layouts, and counter indexes. Everything a
//! reader needs to know about the program's state is in this one file.
//!
//! Addresses and ports inside map keys and values are in network byte order,
//! exactly as they appear in the packet, so that the program never swaps
//! bytes on its hot path. Settings (`NatSettings`) are in host order.
//!
//! IPv4 and IPv6 flows live in separate tables of the same shape
//! (`FlowOf<A>` for an address `A`: one word, or four), so that an IPv4
//! packet hashes and compares a 16-byte key, not a 40-byte one. Rules share
//! one table, with IPv4 addresses in their IPv4-mapped IPv6 form
//! (`::ffff:a.b.c.d`, which never appears on the wire).

#![no_std]

/// Map names in the eBPF object.
pub mod maps {
    /// `HashMap<RuleKey, RuleValue>`: the switched-on redirects, IPv4 and
    /// IPv6.
    pub const RULES: &str = "RULES";
    /// `LruHashMap<FlowKey, Flow>`: NAT state of established connections,
    /// one forward and one reply entry per connection. Shared by all CPUs,
    /// because a reply is often received on another CPU than its request.
    pub const FLOWS: &str = "FLOWS";
    /// `LruHashMap<FlowKey, Flow>`: the same for connections still in their
    /// handshake. A connection moves to `FLOWS` with the client's handshake
    /// ACK, so that a flood of SYNs evicts half-open connections, never
    /// established ones.
    pub const EMBRYOS: &str = "EMBRYOS";
    /// `LruHashMap<FlowKey6, Flow6>`: `FLOWS` for IPv6.
    pub const FLOWS6: &str = "FLOWS6";
    /// `LruHashMap<FlowKey6, Flow6>`: `EMBRYOS` for IPv6.
    pub const EMBRYOS6: &str = "EMBRYOS6";
    /// `Array<NatSettings>` with one element.
    pub const SETTINGS: &str = "SETTINGS";
    /// `PerCpuArray<u64>`: counters, see [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// `DevMapHash<ifindex>`: egress interfaces for XDP_REDIRECT.
    pub const EGRESS: &str = "EGRESS";
    /// `ProgramArray`: `PROGRAM6_NAME` at `FAMILY_IPV6`, which
    /// `PROGRAM_NAME` tail-calls for IPv6 frames.
    pub const FAMILIES: &str = "FAMILIES";
}

/// Index of the IPv6 program in `FAMILIES`.
pub const FAMILY_IPV6: u32 = 0;

/// The version of everything a running program keeps in its maps: the map
/// set, each map's type, key, value and capacity, and what their fields and
/// flags mean. A restarted or upgraded daemon reuses the pinned maps (and
/// with them every connection in flight) only when their version is its
/// own; they are pinned under `maps-v{LAYOUT_VERSION}`. Bump it with any
/// such change: the test `the_layout_version_names_this_layout` fails until
/// then.
pub const LAYOUT_VERSION: u32 = 4;

/// The program's section/function name.
pub const PROGRAM_NAME: &str = "redirector";
/// The same for IPv6 frames, reached by a tail call through `FAMILIES`: a
/// program of its own so that each family gets the verifier's whole budget
/// (a million instructions walked) and stack (512 bytes).
pub const PROGRAM6_NAME: &str = "redirector6";
/// The program for the loopback interface: it translates the ICMP errors
/// the old host sends itself about translated packets (a dead new host).
pub const LOCAL_PROGRAM_NAME: &str = "redirector_local";
/// A program in the same object that passes every frame, for the veth peer
/// of an interface the redirector runs on in native mode: veth delivers
/// natively XDP_TX'd frames to its peer promptly only if the peer runs an
/// XDP program (GRO is not enough: they wait for other traffic to wake the
/// peer). Generic mode (the default on veth) sends them like any other
/// frame and needs no such peer.
pub const PASS_PROGRAM_NAME: &str = "xdp_pass";

/// Capacity of `RULES`. Rule ids run from 1 to `MAX_RULES`; id 0 stands
/// for "no rule" in the counters.
pub const MAX_RULES: u32 = 256;
/// Capacity of `FLOWS` in entries (two per connection).
pub const MAX_FLOW_ENTRIES: u32 = 1 << 19;
/// Capacity of `EMBRYOS` in entries (two per half-open connection).
pub const MAX_EMBRYO_ENTRIES: u32 = 1 << 16;
/// Capacity of `FLOWS6` and `EMBRYOS6`: a quarter of the IPv4 tables'
/// (an IPv6 entry is 128 bytes, an IPv4 one 80).
pub const MAX_FLOW6_ENTRIES: u32 = 1 << 17;
pub const MAX_EMBRYO6_ENTRIES: u32 = 1 << 14;
/// Capacity of `EGRESS`.
pub const MAX_EGRESS_IFACES: u32 = 64;
/// How long a flow entry trusts its cached next hop (and its partner's
/// existence) before it asks the FIB again: a route or neighbour change
/// reaches established flows within this time.
pub const NEXT_HOP_CACHE_NS: u64 = 1_000_000_000;
/// Upper bound on random NAT port tries, whatever the settings say; keeps
/// the SYN path's loop bounded for the verifier.
pub const MAX_PORT_RETRIES: u32 = 32;

/// IP protocol numbers used in `RuleKey::proto`, `FlowKey::proto` and
/// `Flow::proto`.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// An IPv4 address as a flow table keeps it: one word, network order.
pub type Ip4 = u32;
/// An IPv6 address: four words, network order.
pub type Ip6 = [u32; 4];

/// The IPv4-mapped form (`::ffff:a.b.c.d`) of an IPv4 address, as `RULES`
/// keeps it.
#[inline(always)]
pub const fn mapped(v4: Ip4) -> Ip6 {
    // Network order in memory: bytes 10 and 11 are 0xff.
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), v4]
}

/// The IPv4 address in an IPv4-mapped one, if it is one.
#[inline(always)]
pub const fn unmapped(a: Ip6) -> Option<Ip4> {
    if a[0] == 0 && a[1] == 0 && a[2] == mapped(0)[2] {
        Some(a[3])
    } else {
        None
    }
}

/// Key of `RULES`: the old address and port a redirect listens on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    /// OLD_IP, network order; IPv4 in its mapped form (see `mapped`).
    pub addr: Ip6,
    /// OLD port, network order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `RULES`: where new connections go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// NEW_IP, network order, of the same family as the key's (mapped for
    /// IPv4): the redirector does not translate between families.
    pub new_addr: Ip6,
    /// NEW port, network order.
    pub new_port: u16,
    /// How many of every `SHARE_ALL` client addresses the rule redirects:
    /// a client's new connections and flows go to NEW when its
    /// `client_bucket` is below this, else to the old host's own stack
    /// (a weighted shift keeps both releases serving the clients that still
    /// hold the old address). `SHARE_ALL` redirects every client.
    pub share: u16,
    /// Index of the rule's counters, 1..=MAX_RULES, stable across reloads
    /// for as long as the rule exists.
    pub rule_id: u32,
}

/// `RuleValue::share` of a rule that redirects every client.
pub const SHARE_ALL: u16 = 10_000;

/// A client's place in `0..SHARE_ALL`, fixed for the client, so that it
/// stays on one side of a partial redirect and only moves towards NEW as the
/// share grows. An IPv4 client is its address (as `RULES` keys it, mapped);
/// an IPv6 client is its /64, because its interface identifier changes
/// (temporary addresses, RFC 8981) while its network does not. The words
/// are hashed as they lie in memory (network order), so the program and
/// user space agree on any little-endian host.
#[inline(always)]
pub fn client_bucket(addr: &Ip6) -> u16 {
    let client = if unmapped(*addr).is_some() {
        [0, 0, addr[2], addr[3]]
    } else {
        [addr[0], addr[1], 0, 0]
    };
    let mut h: u64 = 0;
    let mut i = 0;
    while i < 4 {
        h = (h ^ client[i] as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        i += 1;
    }
    // splitmix64's finaliser: every input bit reaches the top word.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (((h >> 32) * SHARE_ALL as u64) >> 32) as u16
}

/// Key of the flow tables: a packet's 4-tuple and protocol as received.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyOf<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Key of `FLOWS` and `EMBRYOS`.
pub type FlowKey = FlowKeyOf<Ip4>;
/// Key of `FLOWS6` and `EMBRYOS6`.
pub type FlowKey6 = FlowKeyOf<Ip6>;

/// Direction of a `Flow` entry.
pub const DIR_FORWARD: u8 = 0;
pub const DIR_REPLY: u8 = 1;

/// TCP events seen on a flow (`Flow::tcp_flags`), OR-ed together. All but
/// `FLOW_SYN` and `FLOW_ESTABLISHED` are set on both entries of a flow.
/// UDP flows use two of them for their own states (see `FLOW_UDP_ANSWERED`).
pub const FLOW_SYN: u8 = 1;
/// A FIN in either direction.
pub const FLOW_FIN: u8 = 2;
pub const FLOW_RST: u8 = 4;
/// Set on the forward entry once the client's handshake ACK went through.
/// On both entries of a UDP flow that moved to `FLOWS`.
pub const FLOW_ESTABLISHED: u8 = 8;
/// UDP only, on both entries: the new host answered. A UDP flow is
/// unreplied (only the client has sent) and then answered in `EMBRYOS`, and
/// moves to `FLOWS` (`FLOW_ESTABLISHED`) when the client sends again after
/// an answer: a stream, like conntrack's assured UDP entries. A lone query
/// and its answer (DNS) never reach `FLOWS`, so a busy UDP service cannot
/// crowd established TCP connections out of it.
pub const FLOW_UDP_ANSWERED: u8 = 16;
/// The client sent a FIN.
pub const FLOW_FIN_FORWARD: u8 = 16;
/// The new host sent a FIN.
pub const FLOW_FIN_REPLY: u8 = 32;
/// The new host's FIN came first: it, not the client, holds the connection
/// in TIME_WAIT afterwards.
pub const FLOW_REPLY_CLOSED_FIRST: u8 = 64;
/// The connection is over: a RST, or both FINs and the last ACK after them.
/// Its NAT port may go to a new connection at once (see `Flow::close_seq`),
/// as conntrack lets a new connection take over a TIME_WAIT entry.
pub const FLOW_CLOSED: u8 = 128;

/// Value of the flow tables: how to rewrite a packet whose 4-tuple is the key. The
/// forward entry (client -> OLD) rewrites to OLD:nat_port -> NEW; the reply
/// entry (NEW -> OLD:nat_port) rewrites to OLD -> client.
///
/// Each entry also caches its next hop (the FIB lookup's answer) for
/// `NEXT_HOP_CACHE_NS`, and checks that its partner still exists when it
/// renews the cache: a FIB lookup costs more than the rest of the packet's
/// path. User space never needs to write the `hop_*` fields (zero = none).
///
/// Everything after the addresses has the same layout for both families,
/// starting 8-byte aligned, so the program writes it the same way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOf<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub rule_id: u32,
    pub direction: u8,
    /// FLOW_* bits: TCP events, or a UDP flow's state
    /// (`FLOW_UDP_ANSWERED`, `FLOW_ESTABLISHED`).
    pub tcp_flags: u8,
    /// MTU of the cached next hop's interface; valid when `hop_ifindex` is.
    pub hop_mtu: u16,
    /// Egress ifindex of the cached next hop; 0 = none cached.
    pub hop_ifindex: u32,
    /// Last packet seen in this direction, `bpf_ktime_get_coarse_ns`:
    /// CLOCK_MONOTONIC_COARSE, the same clock as CLOCK_MONOTONIC at tick
    /// resolution (a precise read costs half a packet's budget in a VM).
    pub last_seen_ns: u64,
    /// Source and destination MAC of the cached next hop.
    pub hop_smac: [u8; 6],
    pub hop_dmac: [u8; 6],
    /// The client's sequence number just past its FIN (host order), on
    /// both entries; 0 before. When the new host closed first it holds
    /// TIME_WAIT, and accepts a new SYN on the same tuple only if that SYN's
    /// sequence number is past this one: a NAT port is reused only then.
    pub close_seq: u32,
    /// When the cached next hop was looked up (same clock as `last_seen_ns`).
    pub hop_checked_ns: u64,
    /// The path MTU this entry's sender was told in an ICMP
    /// fragmentation-needed; 0 = none. Later GSO packets of the flow are
    /// taken to be segmented to it (XDP cannot see their segment size).
    pub pmtu_sent: u16,
    /// MTU of the interface the packets of this entry arrive on, looked up
    /// with the next hop: a longer packet is a GSO packet.
    pub hop_in_mtu: u16,
    /// IPPROTO_TCP or IPPROTO_UDP, as in the key.
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `FLOWS` and `EMBRYOS`.
pub type Flow = FlowOf<Ip4>;
/// Value of `FLOWS6` and `EMBRYOS6`.
pub type Flow6 = FlowOf<Ip6>;

impl<A: Copy> FlowOf<A> {
    /// The key of this entry's partner: the packet that comes back after
    /// this entry's rewrite has the rewritten 4-tuple mirrored.
    pub const fn partner_key(&self) -> FlowKeyOf<A> {
        FlowKeyOf {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Value of `SETTINGS[0]`, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSettings {
    pub port_min: u16,
    pub port_max: u16,
    /// Ports of the range tried after the client's own is taken; at most
    /// MAX_PORT_RETRIES.
    pub port_retries: u32,
    /// The old host's own ephemeral ports (`ip_local_port_range`); 0, 0 for
    /// none. A client's port in it is not kept: the old host's own
    /// connections to NEW pick their ports there, unaware of the program's,
    /// and would collide with a redirected connection holding one.
    pub local_min: u16,
    pub local_max: u16,
}

/// Counters: `COUNTERS[rule_id * counter::COUNT + counter::X]`, per CPU.
/// Slot 0 collects what matched no rule.
pub mod counter {
    /// Packets and bytes client -> NEW (rewritten and sent).
    pub const FWD_PACKETS: u32 = 0;
    pub const FWD_BYTES: u32 = 1;
    /// Packets and bytes NEW -> client (rewritten and sent).
    pub const REPLY_PACKETS: u32 = 2;
    pub const REPLY_BYTES: u32 = 3;
    /// Connections that got NAT state.
    pub const NEW_FLOWS: u32 = 4;
    /// New connections refused because no NAT port was free.
    pub const NAT_PORT_EXHAUSTED: u32 = 5;
    /// FIN or RST seen on a flow (its lifetime is shortened).
    pub const FLOWS_CLOSING: u32 = 6;
    /// A flow entry whose partner had been evicted from the LRU map, found
    /// when the entry renews its next hop (at most every NEXT_HOP_CACHE_NS)
    /// or sees FIN/RST. The partner is rebuilt from the entry; if another
    /// connection took its key meanwhile, the packet is dropped.
    pub const LRU_EVICTED: u32 = 7;
    /// Sent back out of the ingress interface.
    pub const TX: u32 = 8;
    /// Sent through the devmap to another interface.
    pub const REDIRECT: u32 = 9;
    /// Translated, then handed to the kernel because the next hop's MAC is
    /// not known yet: the kernel forwards it and resolves the neighbour.
    pub const PASS_NO_NEIGH: u32 = 10;
    /// A SYN to a rule's address that a local socket already owns, or a
    /// UDP datagram there that a socket connected to its sender holds.
    pub const PASS_LOCAL_SOCKET: u32 = 11;
    /// A non-SYN TCP packet to a rule's address without NAT state: a
    /// connection the old host serves itself.
    pub const PASS_UNTRACKED: u32 = 12;
    /// A tracked or new flow's packet whose TTL would expire on forwarding.
    /// Dropped: its destination is a local address, so handing it to the
    /// kernel would deliver it locally (and the stack would answer with a
    /// RST) instead of sending ICMP time-exceeded.
    pub const DROP_TTL_EXPIRED: u32 = 13;
    /// The FIB has no usable route (or forwarding is off) for a new flow.
    pub const PASS_NO_ROUTE: u32 = 14;
    /// A tracked flow's packet that cannot be routed any more (or whose
    /// egress interface left `EGRESS` between lookup and redirect).
    pub const DROP_NO_ROUTE: u32 = 15;
    /// Slot 0 only: frames that are not for any rule (`PASS_NOT_IP`: neither
    /// IPv4 nor IPv6; `PASS_IPV6_EXTENSIONS`: IPv6 with extension headers
    /// before TCP or UDP; ICMP: other than errors about tracked flows, so
    /// neighbour discovery among them; `PASS_OTHER_PROTOCOL`: neither TCP
    /// nor UDP).
    pub const PASS_NOT_IP: u32 = 16;
    pub const PASS_IPV6_EXTENSIONS: u32 = 17;
    pub const PASS_FRAGMENT: u32 = 18;
    pub const PASS_IP_OPTIONS: u32 = 19;
    pub const PASS_ICMP: u32 = 20;
    pub const PASS_OTHER_PROTOCOL: u32 = 21;
    pub const PASS_MALFORMED: u32 = 22;
    pub const PASS_NO_RULE: u32 = 23;
    /// Translated, then handed to the kernel because the egress interface
    /// the FIB chose is not in `EGRESS`: the kernel forwards it.
    pub const PASS_NO_EGRESS: u32 = 24;
    /// ICMP errors (unreachable, fragmentation needed, time exceeded) about
    /// a tracked flow, translated and sent on to its other endpoint.
    pub const ICMP_TRANSLATED: u32 = 25;
    /// A new connection took the NAT port of a closed one (TIME_WAIT reuse).
    pub const PORT_REUSED: u32 = 26;
    /// A GSO packet (longer than the ingress MTU: generic XDP sees the
    /// socket buffer before segmentation) of a tracked flow, translated and
    /// handed to the kernel, which segments it on the way out. The devmap
    /// path of generic XDP would drop it as too long for the egress MTU.
    pub const PASS_GSO: u32 = 27;
    /// A tracked packet too big for the next hop's MTU with DF set (any
    /// IPv6 packet: routers never fragment it): dropped, and an ICMP
    /// fragmentation-needed (ICMPv6 packet too big) sent back to its sender.
    pub const ICMP_FRAG_NEEDED_SENT: u32 = 28;
    /// A tracked packet too big for the next hop's MTU without DF: handed
    /// translated to the kernel, which fragments it.
    pub const PASS_FRAGMENT_NEEDED: u32 = 29;
    /// Slot 0 only: IPv6 frames passed because the IPv6 program is not in
    /// `FAMILIES` (a loader that did not put it there).
    pub const PASS_IPV6_UNREADY: u32 = 30;
    /// A new connection or flow to a rule that redirects only a share of
    /// the clients, from a client outside that share: the old host serves it.
    pub const PASS_NOT_IN_SHARE: u32 = 31;
    /// Number of counters per slot.
    pub const COUNT: u32 = 32;

    /// Names for user space, indexed by counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "fwd_packets",
        "fwd_bytes",
        "reply_packets",
        "reply_bytes",
        "new_flows",
        "nat_port_exhausted",
        "flows_closing",
        "lru_evicted",
        "tx",
        "redirect",
        "pass_no_neigh",
        "pass_local_socket",
        "pass_untracked",
        "drop_ttl_expired",
        "pass_no_route",
        "drop_no_route",
        "pass_not_ip",
        "pass_ipv6_extensions",
        "pass_fragment",
        "pass_ip_options",
        "pass_icmp",
        "pass_other_protocol",
        "pass_malformed",
        "pass_no_rule",
        "pass_no_egress",
        "icmp_translated",
        "port_reused",
        "pass_gso",
        "icmp_frag_needed_sent",
        "pass_fragment_needed",
        "pass_ipv6_unready",
        "pass_not_in_share",
    ];
}

/// Size of `COUNTERS`.
pub const COUNTER_SLOTS: u32 = (MAX_RULES + 1) * counter::COUNT;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these types are #[repr(C)], made of integers, with explicit
    // padding fields, so every bit pattern is valid and none is uninitialised.
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for FlowKey6 {}
    unsafe impl aya::Pod for Flow6 {}
    unsafe impl aya::Pod for NatSettings {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<RuleKey>(), 20);
        assert_eq!(size_of::<RuleValue>(), 24);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<Flow>(), 64);
        assert_eq!(size_of::<FlowKey6>(), 40);
        assert_eq!(size_of::<Flow6>(), 88);
        assert_eq!(size_of::<NatSettings>(), 12);
    }

    #[test]
    fn flow_fields_sit_where_the_program_expects_them() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(Flow, hop_mtu), 18);
        assert_eq!(offset_of!(Flow, hop_ifindex), 20);
        assert_eq!(offset_of!(Flow, last_seen_ns), 24);
        assert_eq!(offset_of!(Flow, hop_smac), 32);
        assert_eq!(offset_of!(Flow, close_seq), 44);
        assert_eq!(offset_of!(Flow, hop_checked_ns), 48);
        assert_eq!(offset_of!(Flow, pmtu_sent), 56);
        assert_eq!(offset_of!(Flow, hop_in_mtu), 58);
        assert_eq!(offset_of!(Flow, proto), 60);
        // The same fields after the addresses, 24 bytes further on.
        assert_eq!(offset_of!(Flow6, sport), offset_of!(Flow, sport) + 24);
        assert_eq!(offset_of!(Flow6, proto), offset_of!(Flow, proto) + 24);
    }

    #[test]
    fn a_mapped_address_round_trips_and_is_ffff_prefixed_on_the_wire() {
        let v4 = u32::from_ne_bytes([198, 18, 0, 2]);
        let m = mapped(v4);
        let bytes: [u8; 16] = unsafe { core::mem::transmute(m) };
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2]
        );
        assert_eq!(unmapped(m), Some(v4));
        assert_eq!(unmapped([0x20010002u32.to_be(), 0, 0, 2u32.to_be()]), None);
    }

    #[test]
    fn client_buckets_spread_neighbouring_addresses_evenly() {
        // Clients come from neighbouring addresses (one subnet, one
        // prefix): each share of the buckets must take its share of them.
        let v4 = (0..20_000u32).map(|i| mapped((0xc612_0000 + i).to_be()));
        // IPv6 clients by /64: 2001:2:i::/64.
        let v6 =
            (0..20_000u32).map(|i| [0x2001_0002u32.to_be(), (i << 16).to_be(), 0, 1u32.to_be()]);
        for (family, buckets) in [
            (
                "IPv4",
                v4.map(|a| client_bucket(&a)).collect::<std::vec::Vec<_>>(),
            ),
            ("IPv6", v6.map(|a| client_bucket(&a)).collect()),
        ] {
            assert!(buckets.iter().all(|&b| b < SHARE_ALL), "{family}");
            for share in [100u16, 1_000, 5_000, 9_000] {
                let n = buckets.iter().filter(|&&b| b < share).count() as f64;
                let want = buckets.len() as f64 * f64::from(share) / f64::from(SHARE_ALL);
                assert!(
                    (n - want).abs() < want * 0.1 + 10.0,
                    "{family}: {n} of {} under {share}, want {want}",
                    buckets.len()
                );
            }
        }
    }

    #[test]
    fn an_ipv6_client_keeps_its_bucket_across_its_interface_identifiers() {
        let at = |iid: u32| {
            [
                0x2001_0002u32.to_be(),
                0x0000_0020u32.to_be(),
                0,
                iid.to_be(),
            ]
        };
        let b = client_bucket(&at(1));
        assert!((2..1_000).all(|iid| client_bucket(&at(iid)) == b));
        // IPv4 clients are each their own.
        let v4 = |x: u32| client_bucket(&mapped((0xc612_0000 + x).to_be()));
        assert!((1..100).any(|x| v4(x) != v4(0)));
    }

    /// FNV-1a over every size, offset, capacity and flag of the contract.
    fn layout_fingerprint() -> u64 {
        use core::mem::offset_of;
        let parts = [
            size_of::<RuleKey>(),
            size_of::<RuleValue>(),
            offset_of!(RuleValue, share),
            SHARE_ALL as usize,
            size_of::<FlowKey>(),
            size_of::<Flow>(),
            size_of::<NatSettings>(),
            size_of::<FlowKey6>(),
            size_of::<Flow6>(),
            offset_of!(Flow6, sport),
            offset_of!(Flow6, last_seen_ns),
            offset_of!(Flow6, proto),
            MAX_FLOW6_ENTRIES as usize,
            MAX_EMBRYO6_ENTRIES as usize,
            offset_of!(Flow, saddr),
            offset_of!(Flow, daddr),
            offset_of!(Flow, sport),
            offset_of!(Flow, dport),
            offset_of!(Flow, rule_id),
            offset_of!(Flow, direction),
            offset_of!(Flow, tcp_flags),
            offset_of!(Flow, hop_mtu),
            offset_of!(Flow, hop_ifindex),
            offset_of!(Flow, last_seen_ns),
            offset_of!(Flow, hop_smac),
            offset_of!(Flow, hop_dmac),
            offset_of!(Flow, close_seq),
            offset_of!(Flow, hop_checked_ns),
            offset_of!(Flow, pmtu_sent),
            offset_of!(Flow, hop_in_mtu),
            offset_of!(Flow, proto),
            offset_of!(NatSettings, port_min),
            offset_of!(NatSettings, port_max),
            offset_of!(NatSettings, port_retries),
            offset_of!(NatSettings, local_min),
            offset_of!(NatSettings, local_max),
            MAX_RULES as usize,
            MAX_FLOW_ENTRIES as usize,
            MAX_EMBRYO_ENTRIES as usize,
            MAX_EGRESS_IFACES as usize,
            counter::COUNT as usize,
            COUNTER_SLOTS as usize,
            usize::from(FLOW_SYN),
            usize::from(FLOW_FIN),
            usize::from(FLOW_RST),
            usize::from(FLOW_ESTABLISHED),
            usize::from(FLOW_FIN_FORWARD),
            usize::from(FLOW_FIN_REPLY),
            usize::from(FLOW_REPLY_CLOSED_FIRST),
            usize::from(FLOW_CLOSED),
            usize::from(FLOW_UDP_ANSWERED),
            usize::from(DIR_FORWARD),
            usize::from(DIR_REPLY),
            usize::from(IPPROTO_TCP),
            usize::from(IPPROTO_UDP),
        ];
        parts.iter().fold(0xcbf2_9ce4_8422_2325, |h, &p| {
            (h ^ p as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn the_layout_version_names_this_layout() {
        // A failure here means the maps' layout changed: bump
        // LAYOUT_VERSION (a daemon of the new version must not adopt maps
        // pinned by the old one), then record the new pair.
        assert_eq!(
            (LAYOUT_VERSION, layout_fingerprint()),
            (4, 0xc016_b390_8054_c869)
        );
    }

    #[test]
    fn partner_key_mirrors_the_rewrite() {
        let f = Flow {
            saddr: 1,
            daddr: 2,
            sport: 3,
            dport: 4,
            ..Default::default()
        };
        let k = f.partner_key();
        assert_eq!((k.saddr, k.daddr, k.sport, k.dport), (2, 1, 4, 3));
    }
}
