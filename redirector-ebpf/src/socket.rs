//! Asks the local TCP stack whether it already owns a 4-tuple, so that the
//! redirector only takes new connections, like iptables' nat table does.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_CURRENT_NETNS, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Ipv4Tuple,
    },
    helpers::{bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};

/// `TCP_LISTEN` from the kernel's TCP state enum.
const TCP_LISTEN: u32 = 10;

/// Whether a local socket other than a listener (established, SYN-received,
/// TIME-WAIT, ...) owns the connection a packet from `saddr:sport` to
/// `daddr:dport` (network order) belongs to. A listener does not count: a
/// rule takes over the new connections it would have accepted.
#[inline(always)]
pub fn owned_locally(ctx: &XdpContext, saddr: u32, daddr: u32, sport: u16, dport: u16) -> bool {
    // Only the IPv4 part of the tuple union: the helper reads `size` bytes.
    let mut tuple = Ipv4Tuple {
        saddr,
        daddr,
        sport,
        dport,
    };
    unsafe {
        let sk = bpf_skc_lookup_tcp(
            ctx.as_ptr(),
            (&mut tuple as *mut Ipv4Tuple).cast::<bpf_sock_tuple>(),
            size_of::<Ipv4Tuple>() as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sk.is_null() {
            return false;
        }
        let state = (*sk).state;
        bpf_sk_release(sk.cast());
        state != TCP_LISTEN
    }
}
