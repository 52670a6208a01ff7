//! The next hop: a FIB lookup in the ingress interface's namespace, the
//! MAC rewrite, and the way out (XDP_TX back out of the ingress interface,
//! or XDP_REDIRECT through the `EGRESS` devmap).

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::{bpf_check_mtu, bpf_fib_lookup as fib_lookup},
    programs::XdpContext,
};
use redirector_common::{IPPROTO_TCP, counter};

use network_types::eth::EthHdr;

use crate::{
    counters,
    family::Family,
    maps::{EGRESS, SCRATCH},
    nat::Hop,
};

/// `struct bpf_fib_lookup`, with its unions as the wider member.
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    /// IPv4's `tos` (its first byte, little endian) or IPv6's `flowinfo`.
    flowinfo: u32,
    /// `ipv4_src` is the first word.
    src: [u32; 4],
    dst: [u32; 4],
    tbid: u32,
    /// `smac` then `dmac`, six bytes each, in these 12 bytes.
    mac_a: u32,
    mac_b: u64,
}

const _: () = assert!(size_of::<FibParams>() == size_of::<bpf_fib_lookup>());

/// Where a translated packet goes next.
pub enum NextHop {
    /// Out of `ifindex`, from `smac` to `dmac`.
    Resolved(Hop),
    /// Routable, but XDP cannot send it: the next hop's MAC is not in the
    /// neighbour table yet (`PASS_NO_NEIGH`), or the egress interface is not
    /// in `EGRESS` (`PASS_NO_EGRESS`). The kernel must forward this packet,
    /// which also resolves the neighbour. The value is the counter.
    Kernel(u32),
    /// No usable route: unreachable, blackhole, forwarding disabled on the
    /// ingress interface, or a local destination.
    Unroutable,
}

/// Looks up the route for a packet from `saddr` to `daddr` (network order)
/// that arrived on the context's interface, with the TOS (IPv6: traffic
/// class and flow label) of `ip`.
///
/// The size is left out (`tot_len` 0): the FIB would refuse a GSO packet,
/// whose length is that of all its segments, as too big. The caller checks
/// sizes against the egress MTU the hop carries, knowing which packets are
/// GSO (`size::fit`).
///
#[inline(always)]
pub fn lookup<A: Family>(ctx: &XdpContext, ip: *const A::Hdr, saddr: A, daddr: A) -> NextHop {
    let flowinfo = unsafe { A::fib_flowinfo(ip) };
    // In per-CPU scratch space rather than on the stack (see `SCRATCH`);
    // map memory is initialised, so only the inputs need writing.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return NextHop::Unroutable;
    };
    let p = unsafe { &mut *(&raw mut (*scratch).fib).cast::<FibParams>() };
    p.family = A::AF;
    p.l4_protocol = IPPROTO_TCP;
    p.sport = 0;
    p.dport = 0;
    p.tot_len = 0;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.flowinfo = flowinfo;
    p.src = A::fib_addr(saddr);
    p.dst = A::fib_addr(daddr);
    p.tbid = 0;
    // flags 0: a full lookup that honours policy routing and checks that
    // the ingress interface forwards (net.ipv4.conf.IF.forwarding,
    // net.ipv6.conf.IF.forwarding).
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            (p as *mut FibParams).cast::<bpf_fib_lookup>(),
            size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            // Checked before anything is rewritten: a frame whose MACs were
            // changed can no longer be handed to the kernel.
            if p.ifindex != ctx.ingress_ifindex() as u32 && EGRESS.get_ifindex(p.ifindex).is_none()
            {
                return NextHop::Kernel(counter::PASS_NO_EGRESS);
            }
            let macs = unsafe { &*(&raw const p.mac_a).cast::<[u8; 12]>() };
            NextHop::Resolved(Hop {
                ifindex: p.ifindex,
                smac: [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]],
                dmac: [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]],
                mtu: mtu(ctx, p.ifindex),
                in_mtu: mtu(ctx, 0),
            })
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => NextHop::Kernel(counter::PASS_NO_NEIGH),
        _ => NextHop::Unroutable,
    }
}

/// The MTU of interface `ifindex`, 0 for the ingress interface (the device's
/// MTU; a route's own `mtu` attribute is not seen). 0xffff if unknown, so
/// that nothing is refused for it.
#[inline(always)]
pub fn mtu(ctx: &XdpContext, ifindex: u32) -> u16 {
    // A length of 1 to check: the answer (pass) does not matter, only the
    // MTU the helper reports.
    let mut len: u32 = 1;
    let rc = unsafe { bpf_check_mtu(ctx.as_ptr(), ifindex, &mut len, 0, 0) };
    if rc < 0 || len == 0 || len > 0xffff {
        0xffff
    } else {
        len as u16
    }
}

/// Sends a translated frame to a resolved next hop and counts how.
#[inline(always)]
pub fn send(ctx: &XdpContext, eth: *mut EthHdr, rule_id: u32, hop: &Hop) -> u32 {
    unsafe {
        (*eth).src_addr = hop.smac;
        (*eth).dst_addr = hop.dmac;
    }
    let ifindex = hop.ifindex;
    if ifindex == ctx.ingress_ifindex() as u32 {
        counters::inc(rule_id, counter::TX);
        return xdp_action::XDP_TX;
    }
    // The lower bits of the flags are the action if `ifindex` left the
    // devmap since `lookup` (user space removed it): drop, because the
    // kernel would discard a frame addressed to another MAC anyway.
    match EGRESS.redirect(ifindex, xdp_action::XDP_DROP as u64) {
        Ok(action) => {
            counters::inc(rule_id, counter::REDIRECT);
            action
        }
        Err(action) => {
            counters::inc(rule_id, counter::DROP_NO_ROUTE);
            action
        }
    }
}
