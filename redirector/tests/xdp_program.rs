//! The XDP program on crafted frames (`BPF_PROG_TEST_RUN`), in a throw-away
//! namespace that plays the old host: its FIB, neighbour table and sockets
//! are what the program's lookups see. Needs root.
//!
//! Every rewrite is checked against checksums recomputed from scratch; every
//! pass-through must leave the frame byte-identical and count its reason.

mod xdp;

use std::net::SocketAddrV4;

use anyhow::Result;
use redirector_common::counter;

use xdp::frame::{ACK, SYN, Tcp, parse_checked};
use xdp::netns::{self, INGRESS, NEW, NEW_MAC, OLD, OLD_MAC, OldHost, client, client_mac};
use xdp::program::{Redirector, XDP_TX, flow_key};

const RULE: u32 = 1;

fn old() -> SocketAddrV4 {
    SocketAddrV4::new(OLD, 80)
}
fn new() -> SocketAddrV4 {
    SocketAddrV4::new(NEW, 8080)
}

/// A client that cached the old address opens a connection: the SYN leaves
/// for the new host, from the old address, keeping the client's port.
#[test]
fn a_new_connection_is_sent_to_the_new_host() -> Result<()> {
    let host = OldHost::new()?;
    host.run(|| {
        let ifindex = OldHost::ifindex(INGRESS)?;
        let mut r = Redirector::load()?;
        r.add_rule(old(), new(), RULE)?;
        r.set_ports(20000, 29999, 8)?;
        let from = SocketAddrV4::new(client(0), 40000);
        let syn = Tcp::syn(client_mac(0), OLD_MAC, from, old());
        let out = r.run(&syn.bytes(), ifindex)?;
        assert_eq!(out.action, XDP_TX);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.from(), SocketAddrV4::new(OLD, 40000));
        assert_eq!(seen.to(), new());
        assert_eq!(seen.src_mac, OLD_MAC);
        assert_eq!(seen.dst_mac, NEW_MAC);
        assert_eq!(seen.ttl, 63);
        assert_eq!(seen.flags, SYN);
        assert_eq!(r.counter(RULE, counter::NEW_FLOWS), 1);
        assert!(r.flow(&flow_key(from, old())).is_some());
        let _ = (ACK, netns::CLIENTS);
        Ok(())
    })
}
