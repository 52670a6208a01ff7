//! Asks the local stack whether it already owns a 4-tuple, so that the
//! redirector only takes new connections, like iptables' nat table does,
//! and never gives a NAT port the old host's own sockets use.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple},
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};
use redirector_common::IPPROTO_TCP;

use crate::family::Family;

const _: () = assert!(size_of::<[u32; 9]>() <= size_of::<bpf_sock_tuple>());

/// `TCP_LISTEN` from the kernel's TCP state enum.
const TCP_LISTEN: u32 = 10;

/// Which UDP sockets `owned_locally` counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Udp {
    /// Any socket bound to the destination: for a NAT port, which no local
    /// socket may be using.
    Bound,
    /// Only a socket connected to the source, which the old host's kernel
    /// holds for this very flow: for a rule's own address, whose server
    /// (unconnected, as a QUIC or DNS server is) the rule takes over.
    Connected,
}

/// Whether a local socket owns the flow a packet from `saddr:sport` to
/// `daddr:dport` (network order) of protocol `proto` belongs to. For TCP,
/// a listener does not count (a rule takes over the new connections it
/// would have accepted), every other state does (established,
/// SYN-received, TIME-WAIT, ...). For UDP, as `udp` says.
#[inline(always)]
pub fn owned_locally<A: Family>(
    ctx: &XdpContext,
    (saddr, daddr): (A, A),
    (sport, dport): (u16, u16),
    proto: u8,
    udp: Udp,
) -> bool {
    // The family's part of the tuple union: the helper reads `size` bytes.
    let mut tuple = A::sock_tuple(saddr, daddr, sport, dport);
    let tuple = (&mut tuple as *mut [u32; 9]).cast::<bpf_sock_tuple>();
    let size = A::TUPLE_LEN;
    unsafe {
        if proto != IPPROTO_TCP {
            let sk = bpf_sk_lookup_udp(ctx.as_ptr(), tuple, size, BPF_F_CURRENT_NETNS as u64, 0);
            if sk.is_null() {
                return false;
            }
            // An unconnected socket has no peer port.
            let connected = (*sk).dst_port != 0;
            bpf_sk_release(sk.cast());
            return udp == Udp::Bound || connected;
        }
        let sk = bpf_skc_lookup_tcp(ctx.as_ptr(), tuple, size, BPF_F_CURRENT_NETNS as u64, 0);
        if sk.is_null() {
            return false;
        }
        let state = (*sk).state;
        bpf_sk_release(sk.cast());
        state != TCP_LISTEN
    }
}
