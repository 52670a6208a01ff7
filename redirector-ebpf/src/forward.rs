//! The next hop: a FIB lookup in the ingress interface's namespace, the
//! MAC rewrite, and the way out (XDP_TX back out of the ingress interface,
//! or XDP_REDIRECT through the `EGRESS` devmap).

use core::{mem::size_of, ptr::write_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
};
use redirector_common::{IPPROTO_TCP, counter};

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{counters, maps::EGRESS, nat::Hop};

const AF_INET: u8 = 2;

/// `struct bpf_fib_lookup` for IPv4. The verifier wants every byte the
/// helper reads initialised; zeroing the generated binding's byte arrays
/// (or a long run of zero fields, which LLVM merges) becomes a call to an
/// out-of-line byte-by-byte memset. Few wide fields avoid it.
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    /// `tos` is the first byte of the `flowinfo` union (little endian).
    tos: u32,
    ipv4_src: u32,
    ipv6_src_a: u32,
    ipv6_src_b: u64,
    ipv4_dst: u32,
    ipv6_dst_a: u32,
    ipv6_dst_b: u64,
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
    /// ingress interface, a local destination, or the MTU is too small.
    Unroutable,
}

/// Looks up the route for a packet from `saddr` to `daddr` (network order)
/// that arrived on the context's interface, with the size and TOS of `ip`.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, ip: *const Ipv4Hdr, saddr: u32, daddr: u32) -> NextHop {
    let (tot_len, tos) = unsafe { (u16::from_be_bytes((*ip).tot_len), (*ip).tos) };
    let mut p = FibParams {
        family: AF_INET,
        l4_protocol: IPPROTO_TCP,
        sport: 0,
        dport: 0,
        tot_len,
        ifindex: ctx.ingress_ifindex() as u32,
        tos: tos as u32,
        ipv4_src: saddr,
        ipv6_src_a: 0,
        ipv6_src_b: 0,
        ipv4_dst: daddr,
        ipv6_dst_a: 0,
        ipv6_dst_b: 0,
        tbid: 0,
        mac_a: 0,
        mac_b: 0,
    };
    // Outputs only, but the verifier wants them initialised. Volatile keeps
    // LLVM from merging this run of zero stores into a memset call.
    unsafe {
        write_volatile(&raw mut p.tbid, 0);
        write_volatile(&raw mut p.mac_a, 0);
        write_volatile(&raw mut p.mac_b, 0);
    }
    // flags 0: a full lookup that honours policy routing and checks that
    // the ingress interface forwards (net.ipv4.conf.IF.forwarding).
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            (&mut p as *mut FibParams).cast::<bpf_fib_lookup>(),
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
            })
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => NextHop::Kernel(counter::PASS_NO_NEIGH),
        _ => NextHop::Unroutable,
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
