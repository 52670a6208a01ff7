//! The XDP program on crafted frames (`BPF_PROG_TEST_RUN`), in a throw-away
//! namespace that plays the old host: its FIB, neighbour table and sockets
//! are what the program's lookups see. Needs root.
//!
//! Every rewrite is checked against checksums recomputed from scratch; every
//! pass-through must leave the frame byte-identical and count its reason.

mod xdp;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redirector_common::{
    DIR_FORWARD, DIR_REPLY, FLOW_CLOSED, FLOW_ESTABLISHED, FLOW_FIN, FLOW_FIN_FORWARD,
    FLOW_FIN_REPLY, FLOW_REPLY_CLOSED_FIRST, FLOW_RST, FLOW_SYN, FLOW_UDP_ANSWERED, Flow,
    FlowKeyOf, FlowOf, LOCAL_PROGRAM_NAME, NEXT_HOP_CACHE_NS, NatSettings, PROGRAM_NAME,
    PROGRAM6_NAME, client_bucket, counter, mapped,
};

use xdp::frame::{
    self, ACK, ETH_ARP, ETH_IPV4, ETH_IPV6, ETH_VLAN, FIN, Ipv4, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
    PSH, RST, SYN, Seen, Tcp, Udp, ethernet, parse_checked, udp_checksum_field,
};
use xdp::frame6::{Ipv6, PROTO_ICMPV6, Tcp6, Udp6, icmp6, parse_checked6, parse_icmp6_checked};
use xdp::netns::{
    INGRESS, LOCAL_CLIENT, Lan, NEW, NEW_MAC, NEW_MOVABLE, NEW_OTHER, NEW_OTHER_MAC,
    NEW_UNREACHABLE, NEW_UNRESOLVED, NEW6, NEW6_OTHER, OLD, OLD_MAC, OLD6, OTHER, OTHER_MAC,
    OldHost, client, client_mac, client6,
};
use xdp::program::{
    Outcome, Redirector, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, addr, attach_pass, flow_key,
    flow_key_of, flow_key6, port,
};

/// OLD:80 -> NEW:8080, the mission's eth0 -> eth0 case.
const RULE: u32 = 1;
/// OLD:81 -> a new host on the link whose MAC is not resolved yet.
const RULE_UNRESOLVED: u32 = 2;
/// OLD:82 -> a new host behind another interface (devmap).
const RULE_OTHER: u32 = 3;
/// OLD:83 -> an unreachable new host.
const RULE_UNREACHABLE: u32 = 4;
/// OLD:84 -> a new host behind a router whose route a test takes away.
const RULE_MOVABLE: u32 = 5;
/// OLD:53/udp -> NEW:5353/udp.
const RULE_UDP: u32 = 6;
const UDP_PORT: u16 = 53;
const NEW_UDP_PORT: u16 = 5353;
/// [OLD6]:80 -> [NEW6]:8080, the IPv6 twin of `RULE`.
const RULE6: u32 = 7;
/// [OLD6]:53/udp -> [NEW6]:5353/udp.
const RULE6_UDP: u32 = 8;
/// [OLD6]:82 -> a new host behind `old1`.
const RULE6_OTHER: u32 = 9;
/// The highest rule id of the set above.
const LAST_RULE: u32 = RULE6_OTHER;

const PORT_MIN: u16 = 20000;
const PORT_MAX: u16 = 29999;

fn old(p: u16) -> SocketAddrV4 {
    SocketAddrV4::new(OLD, p)
}
fn new_host() -> SocketAddrV4 {
    SocketAddrV4::new(NEW, 8080)
}

/// The old host with the program loaded and the rules above switched on.
struct Old<'h> {
    host: &'h OldHost,
    r: Redirector,
    ifindex: u32,
}

impl Old<'_> {
    fn send(&self, frame: &[u8]) -> Result<Outcome> {
        self.r.run(frame, self.ifindex)
    }

    /// Client `n` opens a connection from `sport` to `to`; returns the SYN
    /// it sent and what left the old host.
    fn syn(&self, n: u8, sport: u16, to: SocketAddrV4) -> Result<(Tcp, Outcome)> {
        let syn = Tcp::syn(
            client_mac(n),
            OLD_MAC,
            SocketAddrV4::new(client(n), sport),
            to,
        );
        let out = self.send(&syn.bytes())?;
        Ok((syn, out))
    }

    /// Like `syn`, expecting the SYN to leave for the new host by XDP_TX.
    fn open(&self, n: u8, sport: u16, to: SocketAddrV4) -> Result<Seen> {
        let (_, out) = self.syn(n, sport, to)?;
        assert_eq!(out.action, XDP_TX, "the SYN should leave by XDP_TX");
        Ok(parse_checked(&out.frame))
    }

    /// The new host's answer to a translated segment `seen`.
    fn answer(&self, seen: &Seen, flags: u8, payload: &[u8]) -> Tcp {
        let mut t = Tcp::syn(NEW_MAC, OLD_MAC, seen.to(), seen.from()).with(flags, payload);
        t.seq = 0x5000_0000;
        t.ack = seen.seq.wrapping_add(1);
        t
    }
}

/// Runs `test` on a fresh old host, removed afterwards whatever happens.
fn on_old_host(test: impl FnOnce(&mut Old) -> Result<()> + Send) -> Result<()> {
    on_old_host_loaded(Redirector::load, test)
}

/// `on_old_host` with the program loaded by `load`.
fn on_old_host_loaded(
    load: impl FnOnce() -> Result<Redirector> + Send,
    test: impl FnOnce(&mut Old) -> Result<()> + Send,
) -> Result<()> {
    let host = OldHost::new()?;
    host.run(|| {
        let mut r = load()?;
        let rules = [
            (80, new_host(), RULE),
            (81, SocketAddrV4::new(NEW_UNRESOLVED, 8080), RULE_UNRESOLVED),
            (82, SocketAddrV4::new(NEW_OTHER, 8080), RULE_OTHER),
            (
                83,
                SocketAddrV4::new(NEW_UNREACHABLE, 8080),
                RULE_UNREACHABLE,
            ),
            (84, SocketAddrV4::new(NEW_MOVABLE, 8080), RULE_MOVABLE),
        ];
        for (p, to, id) in rules {
            r.add_rule(old(p), to, id)?;
        }
        r.add_rule_of(
            PROTO_UDP,
            old(UDP_PORT),
            SocketAddrV4::new(NEW, NEW_UDP_PORT),
            RULE_UDP,
        )?;
        // The same for IPv6, in one rule set with the IPv4 rules.
        let v6 = |p: u16| SocketAddrV6::new(OLD6, p, 0, 0);
        r.add_rule(v6(80), SocketAddrV6::new(NEW6, 8080, 0, 0), RULE6)?;
        r.add_rule_of(
            PROTO_UDP,
            v6(UDP_PORT),
            SocketAddrV6::new(NEW6, NEW_UDP_PORT, 0, 0),
            RULE6_UDP,
        )?;
        r.add_rule(
            v6(82),
            SocketAddrV6::new(NEW6_OTHER, 8080, 0, 0),
            RULE6_OTHER,
        )?;
        r.set_ports(PORT_MIN, PORT_MAX, 8)?;
        let mut old = Old {
            host: &host,
            r,
            ifindex: OldHost::ifindex(INGRESS)?,
        };
        test(&mut old)
    })
}

/// Sleeps until every next hop cached so far has expired.
fn wait_for_next_hop_cache() {
    std::thread::sleep(Duration::from_nanos(NEXT_HOP_CACHE_NS) + Duration::from_millis(100));
}

/// Sends `frame` and checks that it went to the kernel byte for byte,
/// that counter `reason` of `slot` (and nothing else) increased, and that
/// no NAT state appeared.
fn assert_untouched(o: &Old, frame: &[u8], slot: u32, reason: u32) -> Result<()> {
    let before: Vec<Vec<u64>> = (0..=LAST_RULE).map(|s| o.r.slot(s)).collect();
    let flows = o.r.flow_count() + o.r.flow6_count();
    let out = o.send(frame)?;
    assert_eq!(
        out.action,
        XDP_PASS,
        "{} should pass",
        counter::NAMES[reason as usize]
    );
    assert_eq!(out.frame, frame, "a passed frame must be byte-identical");
    let mut expected = before.clone();
    expected[slot as usize][reason as usize] += 1;
    let after: Vec<Vec<u64>> = (0..=LAST_RULE).map(|s| o.r.slot(s)).collect();
    assert_eq!(
        after,
        expected,
        "only {} should count",
        counter::NAMES[reason as usize]
    );
    assert_eq!(
        o.r.flow_count() + o.r.flow6_count(),
        flows,
        "a passed frame must not create state"
    );
    Ok(())
}

#[test]
fn a_client_that_cached_the_old_address_reaches_the_new_host() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(0), 40000);
        let (syn, out) = o.syn(0, 40000, old(80))?;
        assert_eq!(out.action, XDP_TX);
        let seen = parse_checked(&out.frame);
        // SNAT to the old address keeping the client's port, DNAT to the
        // new host, next hop's MACs, one hop less.
        assert_eq!(seen.from(), SocketAddrV4::new(OLD, 40000));
        assert_eq!(seen.to(), new_host());
        assert_eq!((seen.src_mac, seen.dst_mac), (OLD_MAC, NEW_MAC));
        assert_eq!(seen.ttl, 63);
        assert_eq!((seen.flags, seen.seq), (SYN, syn.seq));
        assert_eq!(out.frame.len(), syn.bytes().len());

        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 1);
        assert_eq!(o.r.counter(RULE, counter::FWD_PACKETS), 1);
        assert_eq!(
            o.r.counter(RULE, counter::FWD_BYTES),
            out.frame.len() as u64
        );
        assert_eq!(o.r.counter(RULE, counter::TX), 1);

        // One forward and one reply entry, each the other's mirror.
        let fwd =
            o.r.flow(&flow_key(from, old(80)))
                .context("forward entry")?;
        assert_eq!(fwd.direction, DIR_FORWARD);
        assert_eq!(
            (fwd.saddr, fwd.daddr, fwd.sport, fwd.dport, fwd.rule_id),
            (addr(OLD), addr(NEW), port(40000), port(8080), RULE)
        );
        assert_eq!(fwd.tcp_flags, FLOW_SYN);
        assert!(fwd.last_seen_ns > 0);
        let reply = o.r.flow(&fwd.partner_key()).context("reply entry")?;
        assert_eq!(reply.direction, DIR_REPLY);
        assert_eq!(
            (reply.saddr, reply.daddr, reply.sport, reply.dport),
            (addr(OLD), addr(client(0)), port(80), port(40000))
        );
        assert_eq!(o.r.flow_count(), 2);
        Ok(())
    })
}

#[test]
fn the_new_hosts_reply_goes_back_to_the_client_from_the_old_address() -> Result<()> {
    on_old_host(|o| {
        let seen = o.open(0, 40000, old(80))?;
        let syn_ack = o.answer(&seen, SYN | ACK, b"");
        let out = o.send(&syn_ack.bytes())?;
        assert_eq!(out.action, XDP_TX);
        let back = parse_checked(&out.frame);
        assert_eq!(back.from(), old(80));
        assert_eq!(back.to(), SocketAddrV4::new(client(0), 40000));
        assert_eq!((back.src_mac, back.dst_mac), (OLD_MAC, client_mac(0)));
        assert_eq!(back.ttl, 63);
        assert_eq!(
            (back.flags, back.seq, back.ack),
            (SYN | ACK, syn_ack.seq, syn_ack.ack)
        );
        assert_eq!(o.r.counter(RULE, counter::REPLY_PACKETS), 1);
        assert_eq!(
            o.r.counter(RULE, counter::REPLY_BYTES),
            out.frame.len() as u64
        );
        assert_eq!(o.r.counter(RULE, counter::TX), 2);
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 1);
        Ok(())
    })
}

#[test]
fn later_packets_of_a_connection_follow_its_state() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(1), 41000);
        let seen = o.open(1, 41000, old(80))?;
        let first =
            o.r.flow(&flow_key(from, old(80)))
                .context("forward entry")?;

        // The handshake's ACK, then data with an odd length (the checksum
        // must fold the padding byte right).
        let syn = Tcp::syn(client_mac(1), OLD_MAC, from, old(80));
        // The program's clock is coarse (one tick): let a few ticks pass.
        std::thread::sleep(Duration::from_millis(50));
        for (flags, payload) in [
            (ACK, &b""[..]),
            (PSH | ACK, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n!"[..]),
        ] {
            let seg = syn.clone().with(flags, payload);
            let out = o.send(&seg.bytes())?;
            assert_eq!(out.action, XDP_TX);
            let fwd = parse_checked(&out.frame);
            assert_eq!((fwd.from(), fwd.to()), (seen.from(), seen.to()));
            assert_eq!((fwd.flags, fwd.payload.as_slice()), (flags, payload));
        }
        let later =
            o.r.flow(&flow_key(from, old(80)))
                .context("forward entry")?;
        assert_eq!(later.tcp_flags, FLOW_SYN | FLOW_ESTABLISHED);
        assert!(later.last_seen_ns > first.last_seen_ns);
        assert_eq!(o.r.counter(RULE, counter::FWD_PACKETS), 3);
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 1);
        assert_eq!(o.r.flow_count(), 2);
        Ok(())
    })
}

#[test]
fn a_minimum_size_frame_with_ethernet_padding_is_translated() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(0), 40000);
        o.open(0, 40000, old(80))?;
        let mut frame = Tcp::syn(client_mac(0), OLD_MAC, from, old(80))
            .with(ACK, b"")
            .bytes();
        assert_eq!(frame.len(), 54);
        frame.resize(60, 0);
        let out = o.send(&frame)?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.frame.len(), 60, "the padding stays");
        let seen = parse_checked(&out.frame);
        assert_eq!(
            (seen.from(), seen.to()),
            (SocketAddrV4::new(OLD, 40000), new_host())
        );
        assert_eq!(&out.frame[54..], &[0; 6]);
        Ok(())
    })
}

#[test]
fn a_client_port_already_in_use_gets_a_port_from_the_range() -> Result<()> {
    on_old_host(|o| {
        // Two clients with the same source port: the second cannot keep it.
        let a = o.open(0, 45000, old(80))?;
        assert_eq!(a.sport, 45000);
        let b = o.open(1, 45000, old(80))?;
        assert!(
            (PORT_MIN..=PORT_MAX).contains(&b.sport),
            "port {} is outside the range",
            b.sport
        );
        assert_eq!(b.from().ip(), &OLD);
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 2);
        assert_eq!(o.r.flow_count(), 4);

        // Each reply reaches its own client.
        for (seen, n) in [(&a, 0), (&b, 1)] {
            let out = o.send(&o.answer(seen, SYN | ACK, b"").bytes())?;
            assert_eq!(out.action, XDP_TX);
            let back = parse_checked(&out.frame);
            assert_eq!(back.to(), SocketAddrV4::new(client(n), 45000));
            assert_eq!(back.dst_mac, client_mac(n));
        }
        Ok(())
    })
}

#[test]
fn a_client_port_the_old_host_may_pick_for_itself_is_not_kept() -> Result<()> {
    on_old_host(|o| {
        o.r.set_settings(NatSettings {
            port_min: PORT_MIN,
            port_max: PORT_MAX,
            port_retries: 8,
            local_min: 32768,
            local_max: 60999,
        })?;
        let inside = o.open(0, 45000, old(80))?;
        assert!(
            (PORT_MIN..=PORT_MAX).contains(&inside.sport),
            "port {} of the old host's own range was kept",
            inside.sport
        );
        let outside = o.open(1, 61000, old(80))?;
        assert_eq!(outside.sport, 61000, "a port outside it is kept");
        Ok(())
    })
}

#[test]
fn running_out_of_nat_ports_drops_the_syn_and_counts_it() -> Result<()> {
    on_old_host(|o| {
        // A range of one port, which client 0 keeps as its own.
        o.r.set_ports(46000, 46000, 4)?;
        o.open(0, 46000, old(80))?;
        let (_, out) = o.syn(1, 46000, old(80))?;
        assert_eq!(out.action, XDP_DROP);
        assert_eq!(o.r.counter(RULE, counter::NAT_PORT_EXHAUSTED), 1);
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 1);
        let key = flow_key(SocketAddrV4::new(client(1), 46000), old(80));
        assert!(
            o.r.flow(&key).is_none(),
            "no state for a refused connection"
        );
        assert_eq!(o.r.flow_count(), 2);
        Ok(())
    })
}

/// A rule that redirects a share of the clients (a weighted shift): the
/// clients whose bucket is below the share go to NEW, the others to the old
/// host's own stack, each the same way every time; a growing share moves
/// clients only towards NEW and leaves the old host's connections alone; a
/// shrinking one leaves forwarded connections forwarded.
#[test]
fn a_partial_rule_redirects_its_share_of_client_addresses_and_keeps_each_on_its_side() -> Result<()>
{
    const RULE_SHARE: u32 = LAST_RULE + 1;
    const RULE6_SHARE: u32 = LAST_RULE + 2;
    on_old_host(|o| {
        let to = SocketAddrV4::new(NEW, 8080);
        o.r.add_partial_rule(PROTO_TCP, old(85), to, RULE_SHARE, 3_000)?;
        let clients: Vec<SocketAddrV4> = (0..1_000u32)
            .map(|i| SocketAddrV4::new(Ipv4Addr::from(0xc613_0000 + i), 40000))
            .collect();
        let inside = |c: &SocketAddrV4, share: u16| {
            client_bucket(&mapped(u32::from_ne_bytes(c.ip().octets()))) < share
        };
        let syn = |c: SocketAddrV4, sport: u16| {
            Tcp::syn(
                client_mac(0),
                OLD_MAC,
                SocketAddrV4::new(*c.ip(), sport),
                old(85),
            )
            .bytes()
        };
        let mut forwarded = 0;
        for &c in &clients {
            let out = o.send(&syn(c, 40000))?;
            let want = if inside(&c, 3_000) { XDP_TX } else { XDP_PASS };
            assert_eq!(out.action, want, "{c}");
            forwarded += usize::from(want == XDP_TX);
            // The same client, the same side, again.
            assert_eq!(o.send(&syn(c, 40000))?.action, want, "{c} again");
        }
        assert!(
            (250..=350).contains(&forwarded),
            "{forwarded} of 1000 forwarded"
        );
        assert_eq!(
            o.r.counter(RULE_SHARE, counter::NEW_FLOWS),
            forwarded as u64
        );
        assert_eq!(
            o.r.counter(RULE_SHARE, counter::PASS_NOT_IN_SHARE),
            2 * (1_000 - forwarded) as u64
        );

        // 30 % -> 60 %: the old host's connections (no state) stay there,
        // new connections of the clients between 30 and 60 % go to NEW,
        // and a forwarded client stays forwarded.
        o.r.add_partial_rule(PROTO_TCP, old(85), to, RULE_SHARE, 6_000)?;
        let moved = clients
            .iter()
            .find(|c| !inside(c, 3_000) && inside(c, 6_000))
            .context("a client between 30 and 60 %")?;
        let ack = Tcp::syn(client_mac(0), OLD_MAC, *moved, old(85)).with(ACK, b"GET /");
        assert_eq!(o.send(&ack.bytes())?.action, XDP_PASS);
        assert_eq!(o.r.counter(RULE_SHARE, counter::PASS_UNTRACKED), 1);
        assert_eq!(o.send(&syn(*moved, 40001))?.action, XDP_TX);
        let stays = clients
            .iter()
            .find(|c| !inside(c, 6_000))
            .context("one above 60 %")?;
        assert_eq!(o.send(&syn(*stays, 40001))?.action, XDP_PASS);

        // 60 % -> 1 %: a forwarded connection keeps going to NEW.
        o.r.add_partial_rule(PROTO_TCP, old(85), to, RULE_SHARE, 100)?;
        let ack = Tcp::syn(
            client_mac(0),
            OLD_MAC,
            SocketAddrV4::new(*moved.ip(), 40001),
            old(85),
        )
        .with(ACK, b"GET /");
        assert_eq!(o.send(&ack.bytes())?.action, XDP_TX);

        // IPv6 clients are split by the same buckets.
        let to6 = SocketAddrV6::new(NEW6, 8080, 0, 0);
        let old6 = SocketAddrV6::new(OLD6, 85, 0, 0);
        o.r.add_partial_rule(PROTO_TCP, old6, to6, RULE6_SHARE, 5_000)?;
        let mut forwarded6 = 0;
        for i in 0..200u16 {
            // Each client on a /64 of its own (a client is its /64).
            let c = Ipv6Addr::new(0x2001, 2, 0x20, i + 1, 0, 0, 0, 1);
            let syn = Tcp6::syn(
                client_mac(0),
                OLD_MAC,
                SocketAddrV6::new(c, 40000, 0, 0),
                old6,
            );
            let out = o.send(&syn.bytes())?;
            let o6 = c.octets();
            let words = std::array::from_fn(|w| {
                u32::from_ne_bytes([o6[4 * w], o6[4 * w + 1], o6[4 * w + 2], o6[4 * w + 3]])
            });
            let bucket = client_bucket(&words);
            let want = if bucket < 5_000 { XDP_TX } else { XDP_PASS };
            assert_eq!(out.action, want, "{c}");
            forwarded6 += usize::from(want == XDP_TX);
        }
        assert!(
            (70..=130).contains(&forwarded6),
            "{forwarded6} of 200 forwarded"
        );
        assert_eq!(
            o.r.counter(RULE6_SHARE, counter::PASS_NOT_IN_SHARE),
            (200 - forwarded6) as u64
        );
        Ok(())
    })
}

#[test]
fn fin_and_rst_mark_the_flow_closing_once_and_a_new_syn_starts_afresh() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(2), 42000);
        let key = flow_key(from, old(80));
        let seen = o.open(2, 42000, old(80))?;
        let syn = Tcp::syn(client_mac(2), OLD_MAC, from, old(80));

        let out = o.send(&syn.clone().with(FIN | ACK, b"").bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(parse_checked(&out.frame).flags, FIN | ACK);
        let fwd = o.r.flow(&key).context("forward entry")?;
        let reply = o.r.flow(&fwd.partner_key()).context("reply entry")?;
        assert_ne!(fwd.tcp_flags & FLOW_FIN, 0);
        assert_ne!(
            reply.tcp_flags & FLOW_FIN,
            0,
            "both entries carry the close"
        );
        assert_eq!(o.r.counter(RULE, counter::FLOWS_CLOSING), 1);

        // The server's FIN and a RST: still one closing flow.
        let out = o.send(&o.answer(&seen, FIN | ACK, b"").bytes())?;
        assert_eq!(out.action, XDP_TX);
        let out = o.send(&syn.clone().with(RST, b"").bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_ne!(
            o.r.flow(&key).context("forward entry")?.tcp_flags & FLOW_RST,
            0
        );
        assert_eq!(o.r.counter(RULE, counter::FLOWS_CLOSING), 1);

        // The client reuses its port: a new connection with fresh state.
        let again = o.open(2, 42000, old(80))?;
        assert_eq!((again.from(), again.to()), (seen.from(), seen.to()));
        assert_eq!(o.r.flow(&key).context("forward entry")?.tcp_flags, FLOW_SYN);
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 2);
        assert_eq!(o.r.flow_count(), 2);
        Ok(())
    })
}

/// Connects from `LOCAL_CLIENT` to `to` (a local address of the old host).
fn connect_from_local_client(to: SocketAddrV4) -> Result<TcpStream> {
    connect_from(LOCAL_CLIENT, to)
}

/// Connects from address `from` to `to`, giving up after 5 s.
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> Result<TcpStream> {
    // std cannot bind a client socket's source address; plain libc can.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        // Linux applies the send timeout to connect(2) too.
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let sin = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sin(SocketAddrV4::new(from, 0));
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            bail!("bind: {}", std::io::Error::last_os_error());
        }
        let remote = sin(to);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            bail!("connect to {to}: {}", std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Waits (at most 5 s) until the socket `local -> remote` of this
/// namespace is in TCP state `state` (/proc's hex code).
fn wait_for_tcp_state(local: SocketAddrV4, remote: SocketAddrV4, state: &str) -> Result<()> {
    let hex = |a: SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // thread-self: /proc/net follows the process's namespace, not this thread's.
        let table = std::fs::read_to_string("/proc/thread-self/net/tcp")?;
        let found = table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == hex(local) && f[2] == hex(remote) && f[3] == state
        });
        if found {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{local} -> {remote} never reached TCP state {state}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_the_old_host_serves_itself_keep_working() -> Result<()> {
    on_old_host(|o| {
        // The old host's own server on OLD:80, with an established
        // connection from before the rule was switched on.
        let listener = TcpListener::bind(old(80))?;
        let mut client_side = connect_from_local_client(old(80))?;
        let (mut server_side, peer) = listener.accept()?;
        let peer = match peer {
            std::net::SocketAddr::V4(p) => p,
            other => bail!("unexpected peer {other}"),
        };
        let syn = Tcp::syn(client_mac(0), OLD_MAC, peer, old(80));

        // A SYN for that 4-tuple, and its other segments, are the old host's.
        assert_untouched(o, &syn.bytes(), RULE, counter::PASS_LOCAL_SOCKET)?;
        assert_untouched(
            o,
            &syn.clone().with(ACK, b"hello").bytes(),
            RULE,
            counter::PASS_UNTRACKED,
        )?;

        // Closed by the server first: its side lingers in TIME_WAIT, and a
        // SYN for the same 4-tuple is still left to the kernel.
        client_side.write_all(b"bye")?;
        let mut buf = [0u8; 3];
        server_side.read_exact(&mut buf)?;
        drop(server_side);
        let mut rest = Vec::new();
        client_side.read_to_end(&mut rest)?;
        drop(client_side);
        wait_for_tcp_state(old(80), peer, "06")?;
        assert_untouched(o, &syn.bytes(), RULE, counter::PASS_LOCAL_SOCKET)?;

        // A new connection is the rule's, although a listener is there.
        let fresh = Tcp::syn(
            client_mac(0),
            OLD_MAC,
            SocketAddrV4::new(LOCAL_CLIENT, 43000),
            old(80),
        );
        let out = o.send(&fresh.bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(parse_checked(&out.frame).to(), new_host());
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 1);
        Ok(())
    })
}

#[test]
fn segments_without_state_are_left_to_the_old_host() -> Result<()> {
    on_old_host(|o| {
        let syn = Tcp::syn(
            client_mac(0),
            OLD_MAC,
            SocketAddrV4::new(client(0), 44000),
            old(80),
        );
        for flags in [ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK] {
            assert_untouched(
                o,
                &syn.clone().with(flags, b"x").bytes(),
                RULE,
                counter::PASS_UNTRACKED,
            )?;
        }
        Ok(())
    })
}

/// Real TCP through the program attached to the old host's interface: the
/// first packets each way find no neighbour entry and take the kernel's
/// forwarding path translated (which needs `accept_local`, since their new
/// source is the old host's own address); later ones leave by XDP_TX.
#[test]
fn a_real_connection_through_the_old_host_reaches_the_new_host() -> Result<()> {
    let lan = Lan::new()?;
    for s in [
        "net.ipv4.ip_forward=1".to_string(),
        format!("net.ipv4.conf.{INGRESS}.accept_local=1"),
        "net.ipv4.conf.all.send_redirects=0".to_string(),
        format!("net.ipv4.conf.{INGRESS}.send_redirects=0"),
    ] {
        lan.old.sysctl(&s)?;
    }
    // veth wakes the receiving end for XDP_TX frames only if it runs an
    // XDP program (with GRO alone they wait for other traffic).
    let lan_side = lan.lan.run(|| attach_pass("lan0"))?;
    let r = lan.old.run(|| {
        let mut r = Redirector::load()?;
        r.add_rule(old(80), new_host(), RULE)?;
        r.set_ports(PORT_MIN, PORT_MAX, 8)?;
        r.attach(INGRESS)?;
        Ok(r)
    })?;

    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let outcome = lan.lan.run(|| {
        let listener = TcpListener::bind(new_host())?;
        std::thread::scope(|s| {
            let server = s.spawn(|| -> Result<SocketAddrV4> {
                listener.set_nonblocking(true)?;
                let deadline = Instant::now() + Duration::from_secs(10);
                let (mut conn, peer) = loop {
                    match listener.accept() {
                        Ok(c) => break c,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if Instant::now() > deadline {
                                bail!("no connection reached the new host");
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut request = [0u8; 4];
                conn.read_exact(&mut request)?;
                assert_eq!(&request, b"GET ");
                conn.write_all(&body)?;
                match peer {
                    std::net::SocketAddr::V4(p) => Ok(p),
                    other => bail!("unexpected peer {other}"),
                }
            });
            let mut client = connect_from(client(0), old(80))?;
            client.set_read_timeout(Some(Duration::from_secs(10)))?;
            client.write_all(b"GET ")?;
            let mut received = Vec::new();
            client.read_to_end(&mut received)?;
            let peer = server
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            Ok((received, peer))
        })
    });
    let counters = |slot| {
        let values = r.slot(slot);
        let named: Vec<String> = counter::NAMES
            .iter()
            .zip(values)
            .filter(|(_, v)| *v > 0)
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        named.join(" ")
    };
    let (received, peer) = outcome
        .with_context(|| format!("rule counters: {}; slot 0: {}", counters(RULE), counters(0)))?;

    drop(lan_side);
    assert_eq!(peer.ip(), &OLD, "the new host sees the old host's address");
    assert!(
        received == body,
        "the client got {} of {} bytes, or corrupted",
        received.len(),
        body.len()
    );
    assert_eq!(r.counter(RULE, counter::NEW_FLOWS), 1);
    assert!(
        r.counter(RULE, counter::PASS_NO_NEIGH) >= 1,
        "the first packet waited for ARP"
    );
    assert!(
        r.counter(RULE, counter::TX) > 100,
        "the rest left by XDP_TX"
    );
    assert_eq!(r.counter(RULE, counter::DROP_NO_ROUTE), 0);
    Ok(())
}

/// A valid SYN from client 0 to `to`, with IP header fields changed by `ip`.
fn syn_with(to: SocketAddrV4, ip: impl FnOnce(&mut Ipv4)) -> Vec<u8> {
    let mut syn = Tcp::syn(
        client_mac(0),
        OLD_MAC,
        SocketAddrV4::new(client(0), 47000),
        to,
    );
    ip(&mut syn.ip);
    syn.bytes()
}

/// A valid SYN to OLD:80 with bytes changed after it was built.
fn syn_patched(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut f = syn_with(old(80), |_| {});
    patch(&mut f);
    f
}

#[test]
fn everything_else_passes_untouched_and_counted() -> Result<()> {
    on_old_host(|o| {
        let to_rule = |payload: &[u8], proto: u8| {
            ethernet(
                OLD_MAC,
                client_mac(0),
                ETH_IPV4,
                &Ipv4::new(client(0), OLD, proto).bytes(payload),
            )
        };
        let mut icmp_echo = vec![8, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g'];
        let c = frame::checksum(&icmp_echo);
        icmp_echo[2..4].copy_from_slice(&c.to_be_bytes());
        let udp = {
            let mut u = vec![];
            u.extend_from_slice(&47000u16.to_be_bytes());
            u.extend_from_slice(&80u16.to_be_bytes());
            u.extend_from_slice(&12u16.to_be_bytes());
            u.extend_from_slice(&[0, 0, b'q', b'u', b'i', b'c']);
            u
        };
        let arp = {
            let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
            a.extend_from_slice(&client_mac(0));
            a.extend_from_slice(&client(0).octets());
            a.extend_from_slice(&[0; 6]);
            a.extend_from_slice(&OLD.octets());
            a
        };
        let ipv6 = {
            let mut h = vec![0x60, 0, 0, 0, 0, 20, PROTO_TCP, 64];
            h.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            h.extend_from_slice(&[
                0xb7, 0x98, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, SYN, 0xff, 0xff, 0, 0, 0, 0,
            ]);
            h
        };
        let vlan = {
            let mut v = vec![0, 10];
            v.extend_from_slice(&ETH_IPV4.to_be_bytes());
            v.extend_from_slice(&syn_with(old(80), |_| {})[14..]);
            v
        };
        let total_len = |f: &mut Vec<u8>, len: u16| f[16..18].copy_from_slice(&len.to_be_bytes());

        let udp_to_rule = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut f = Udp::new(
                client_mac(0),
                OLD_MAC,
                SocketAddrV4::new(client(0), 47000),
                old(UDP_PORT),
                b"query",
            )
            .bytes();
            patch(&mut f);
            f
        };
        let cases: Vec<(&str, Vec<u8>, u32)> = vec![
            (
                "TCP to a port with a UDP rule only",
                syn_with(old(UDP_PORT), |_| {}),
                counter::PASS_NO_RULE,
            ),
            (
                "GRE",
                to_rule(&[0, 0, 0x08, 0, 0x45, 0], 47),
                counter::PASS_OTHER_PROTOCOL,
            ),
            (
                "a truncated UDP header",
                udp_to_rule(&|f| {
                    f.truncate(14 + 20 + 6);
                    total_len(f, 26)
                }),
                counter::PASS_MALFORMED,
            ),
            (
                "a UDP length below the header",
                udp_to_rule(&|f| f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&7u16.to_be_bytes())),
                counter::PASS_MALFORMED,
            ),
            (
                "a port without a rule",
                syn_with(old(9999), |_| {}),
                counter::PASS_NO_RULE,
            ),
            (
                "another address",
                syn_with(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 9), 80), |_| {}),
                counter::PASS_NO_RULE,
            ),
            (
                "ARP",
                ethernet([0xff; 6], client_mac(0), ETH_ARP, &arp),
                counter::PASS_NOT_IP,
            ),
            (
                "a VLAN tag",
                ethernet(OLD_MAC, client_mac(0), ETH_VLAN, &vlan),
                counter::PASS_NOT_IP,
            ),
            (
                "IPv6 to an address without a rule",
                ethernet(OLD_MAC, client_mac(0), ETH_IPV6, &ipv6),
                counter::PASS_NO_RULE,
            ),
            (
                "a first fragment",
                syn_with(old(80), |ip| ip.frag = 0x2000),
                counter::PASS_FRAGMENT,
            ),
            (
                "a later fragment",
                syn_with(old(80), |ip| ip.frag = 0x0010),
                counter::PASS_FRAGMENT,
            ),
            (
                "IP options",
                syn_with(old(80), |ip| ip.options = vec![1, 1, 1, 0]),
                counter::PASS_IP_OPTIONS,
            ),
            ("ICMP", to_rule(&icmp_echo, PROTO_ICMP), counter::PASS_ICMP),
            (
                "UDP to a port with a TCP rule only",
                to_rule(&udp, PROTO_UDP),
                counter::PASS_NO_RULE,
            ),
            (
                "an Ethernet header alone",
                ethernet(OLD_MAC, client_mac(0), ETH_IPV4, &[]),
                counter::PASS_MALFORMED,
            ),
            (
                "a truncated IP header",
                syn_patched(|f| f.truncate(14 + 19)),
                counter::PASS_MALFORMED,
            ),
            (
                "a truncated TCP header",
                syn_patched(|f| {
                    f.truncate(14 + 20 + 12);
                    total_len(f, 32)
                }),
                counter::PASS_MALFORMED,
            ),
            (
                "IHL below 5",
                syn_patched(|f| f[14] = 0x44),
                counter::PASS_MALFORMED,
            ),
            (
                "IP version 6 in an IPv4 frame",
                syn_patched(|f| f[14] = 0x65),
                counter::PASS_MALFORMED,
            ),
            (
                "total length beyond the frame",
                syn_patched(|f| {
                    let l = (f.len() - 14 + 1) as u16;
                    total_len(f, l)
                }),
                counter::PASS_MALFORMED,
            ),
            (
                "total length below the header",
                syn_patched(|f| total_len(f, 19)),
                counter::PASS_MALFORMED,
            ),
            (
                "TCP data offset below 5",
                syn_patched(|f| f[14 + 20 + 12] = 0x40),
                counter::PASS_MALFORMED,
            ),
            (
                "TCP data offset beyond the packet",
                syn_patched(|f| f[14 + 20 + 12] = 0xf0),
                counter::PASS_MALFORMED,
            ),
        ];
        for (what, frame, reason) in cases {
            assert_untouched(o, &frame, 0, reason).with_context(|| what.to_string())?;
        }
        Ok(())
    })
}

#[test]
fn an_unknown_next_hop_mac_leaves_forwarding_to_the_kernel_fully_translated() -> Result<()> {
    on_old_host(|o| {
        let (syn, out) = o.syn(0, 40000, old(81))?;
        assert_eq!(out.action, XDP_PASS);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.from(), SocketAddrV4::new(OLD, 40000));
        assert_eq!(seen.to(), SocketAddrV4::new(NEW_UNRESOLVED, 8080));
        // The kernel's forwarding path decrements the TTL and fills in the
        // MACs once the neighbour is resolved.
        assert_eq!(seen.ttl, syn.ip.ttl);
        assert_eq!((seen.src_mac, seen.dst_mac), (client_mac(0), OLD_MAC));
        assert_eq!(o.r.counter(RULE_UNRESOLVED, counter::PASS_NO_NEIGH), 1);
        assert_eq!(o.r.counter(RULE_UNRESOLVED, counter::NEW_FLOWS), 1);
        assert_eq!(o.r.counter(RULE_UNRESOLVED, counter::FWD_PACKETS), 1);
        assert_eq!(o.r.flow_count(), 2);
        Ok(())
    })
}

#[test]
fn a_new_host_on_another_interface_is_reached_through_the_devmap() -> Result<()> {
    on_old_host(|o| {
        // Not in EGRESS yet: the kernel forwards the translated frame.
        let (_, out) = o.syn(0, 40000, old(82))?;
        assert_eq!(out.action, XDP_PASS);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.to(), SocketAddrV4::new(NEW_OTHER, 8080));
        assert_eq!(
            seen.dst_mac, OLD_MAC,
            "a frame for the kernel keeps its MACs"
        );
        assert_eq!(o.r.counter(RULE_OTHER, counter::PASS_NO_EGRESS), 1);

        let other = OldHost::ifindex(OTHER)?;
        o.r.egress.insert(other, other, None, 0)?;
        let (_, out) = o.syn(1, 40001, old(82))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.to(), SocketAddrV4::new(NEW_OTHER, 8080));
        assert_eq!((seen.src_mac, seen.dst_mac), (OTHER_MAC, NEW_OTHER_MAC));
        assert_eq!(seen.ttl, 63);
        assert_eq!(o.r.counter(RULE_OTHER, counter::REDIRECT), 1);
        Ok(())
    })
}

#[test]
fn an_unroutable_new_host_leaves_new_connections_to_the_old_host() -> Result<()> {
    on_old_host(|o| {
        let frame = syn_with(old(83), |_| {});
        assert_untouched(o, &frame, RULE_UNREACHABLE, counter::PASS_NO_ROUTE)?;
        // Forwarding switched off on the old host: the same.
        o.host
            .sysctl(&format!("net.ipv4.conf.{INGRESS}.forwarding=0"))?;
        assert_untouched(o, &syn_with(old(80), |_| {}), RULE, counter::PASS_NO_ROUTE)?;
        Ok(())
    })
}

#[test]
fn a_tracked_flow_that_loses_its_route_is_dropped_not_reset() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(3), 40000);
        let seen = o.open(3, 40000, old(84))?;
        assert_eq!(seen.to(), SocketAddrV4::new(NEW_MOVABLE, 8080));
        assert_eq!(seen.dst_mac, [0x02, 0, 0, 0, 0, 0x50], "the router's MAC");
        o.host
            .ip(&["route", "replace", "unreachable", "198.19.50.0/24"])?;
        // Established flows notice once their cached next hop expires.
        wait_for_next_hop_cache();
        let ack = Tcp::syn(client_mac(3), OLD_MAC, from, old(84)).with(ACK, b"");
        let out = o.send(&ack.bytes())?;
        assert_eq!(out.action, XDP_DROP);
        assert_eq!(o.r.counter(RULE_MOVABLE, counter::DROP_NO_ROUTE), 1);
        Ok(())
    })
}

/// An ICMP error from `from` to the old host quoting `quoted` (an IP packet).
fn icmp_error(src_mac: [u8; 6], from: Ipv4Addr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(quoted);
    let c = frame::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(
        OLD_MAC,
        src_mac,
        ETH_IPV4,
        &Ipv4::new(from, OLD, PROTO_ICMP).bytes(&icmp),
    )
}

#[test]
fn on_loopback_only_the_hosts_own_errors_about_translated_packets_are_translated() -> Result<()> {
    on_old_host(|o| {
        let (_, out) = o.syn(0, 40000, old(80))?;
        assert_eq!(out.action, XDP_TX);
        let flows = o.r.flow_count();

        // The old host's own connection to its own rule address crosses
        // loopback: the host's business, never redirected, not counted.
        let before: Vec<Vec<u64>> = (0..=5).map(|s| o.r.slot(s)).collect();
        let own = Tcp::syn([0; 6], [0; 6], SocketAddrV4::new(OLD, 50000), old(80)).bytes();
        let passed = o.r.run_local(&own)?;
        assert_eq!((passed.action, &passed.frame), (XDP_PASS, &own));
        assert_eq!(o.r.flow_count(), flows);
        let after: Vec<Vec<u64>> = (0..=5).map(|s| o.r.slot(s)).collect();
        assert_eq!(before, after, "loopback traffic was counted");

        // The host's stack could not resolve the new host and tells the
        // SYN's source, itself, over loopback (zero MACs): translated back
        // to the client like any ICMP error about the connection.
        let sent = &out.frame[14..];
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(sent);
        let c = frame::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let error = ethernet(
            [0; 6],
            [0; 6],
            ETH_IPV4,
            &Ipv4::new(OLD, OLD, PROTO_ICMP).bytes(&icmp),
        );
        let back = o.r.run_local(&error)?;
        assert_ne!(back.action, XDP_DROP);
        let ip = &back.frame[14..34];
        assert_eq!(frame::checksum(ip), 0, "outer IPv4 checksum");
        assert_eq!(&ip[16..20], &client(0).octets()[..], "to the client");
        let icmp = &back.frame[34..];
        assert_eq!(frame::checksum(icmp), 0, "ICMP checksum");
        assert_eq!((icmp[0], icmp[1]), (3, 1), "host unreachable");
        assert_eq!(
            (&icmp[8 + 12..8 + 16], &icmp[8 + 16..8 + 20]),
            (&client(0).octets()[..], &OLD.octets()[..]),
            "the quote is the client's own SYN"
        );
        assert_eq!(o.r.counter(RULE, counter::ICMP_TRANSLATED), 1);
        Ok(())
    })
}

#[test]
fn icmp_errors_about_a_redirected_connection_reach_the_client() -> Result<()> {
    on_old_host(|o| {
        let (syn, out) = o.syn(0, 40000, old(80))?;
        assert_eq!(out.action, XDP_TX);
        // The new host says "fragmentation needed" about the SYN it got,
        // quoting its IP header and whole TCP header.
        let sent = &out.frame[14..];
        let error = icmp_error(NEW_MAC, NEW, 3, 4, sent);
        let back = o.send(&error)?;
        assert_eq!(back.action, XDP_TX);
        let f = &back.frame;
        assert_eq!((&f[0..6], &f[6..12]), (&client_mac(0)[..], &OLD_MAC[..]));
        let ip = &f[14..34];
        assert_eq!(frame::checksum(ip), 0, "outer IPv4 checksum");
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&NEW.octets()[..], &client(0).octets()[..])
        );
        assert_eq!(ip[8], 63);
        let icmp = &f[34..];
        assert_eq!(frame::checksum(icmp), 0, "ICMP checksum");
        assert_eq!((icmp[0], icmp[1], &icmp[6..8]), (3, 4, &[0x05, 0x78][..]));
        // The quote is now the client's own SYN: its addresses, and its TCP
        // header byte for byte (ports, sequence, checksum).
        let quoted = &icmp[8..];
        assert_eq!(frame::checksum(&quoted[..20]), 0, "quoted IPv4 checksum");
        assert_eq!(
            (&quoted[12..16], &quoted[16..20]),
            (&client(0).octets()[..], &OLD.octets()[..])
        );
        let original = syn.bytes();
        assert_eq!(&quoted[20..], &original[34..], "the quoted TCP header");
        assert_eq!(o.r.counter(RULE, counter::ICMP_TRANSLATED), 1);

        // An error the new host sends about a connection nobody redirected
        // is the old host's business.
        let mut unknown = sent.to_vec();
        unknown[20..22].copy_from_slice(&40999u16.to_be_bytes());
        assert_untouched(
            o,
            &icmp_error(NEW_MAC, NEW, 3, 3, &unknown),
            0,
            counter::PASS_ICMP,
        )?;
        Ok(())
    })
}

/// Closes the connection from client `n`'s `sport` to `to`, translated as
/// `seen`: the client's FIN, the new host's FIN and the last ACK, in the
/// order `client_first` says. Every segment must go through.
fn close(
    o: &Old,
    n: u8,
    sport: u16,
    to: SocketAddrV4,
    seen: &Seen,
    client_first: bool,
) -> Result<()> {
    let from = SocketAddrV4::new(client(n), sport);
    let client = Tcp::syn(client_mac(n), OLD_MAC, from, to);
    let client_fin = client.clone().with(FIN | ACK, b"");
    let client_ack = client.with(ACK, b"");
    let new_fin = o.answer(seen, FIN | ACK, b"");
    let new_ack = o.answer(seen, ACK, b"");
    let order = if client_first {
        [client_fin.bytes(), new_fin.bytes(), client_ack.bytes()]
    } else {
        [new_fin.bytes(), client_fin.bytes(), new_ack.bytes()]
    };
    for segment in order {
        let out = o.send(&segment)?;
        assert_eq!(out.action, XDP_TX, "a closing segment was not forwarded");
    }
    Ok(())
}

#[test]
fn a_closed_connections_nat_port_goes_to_the_next_client_at_once() -> Result<()> {
    on_old_host(|o| {
        // One NAT port, which client 0 keeps as its own.
        o.r.set_ports(46000, 46000, 4)?;
        let first = o.open(0, 46000, old(80))?;
        assert_eq!(first.sport, 46000);

        // Half closed (the client's FIN only): the new host may still be
        // sending, so the port stays taken.
        let c0 = Tcp::syn(
            client_mac(0),
            OLD_MAC,
            SocketAddrV4::new(client(0), 46000),
            old(80),
        );
        assert_eq!(
            o.send(&c0.clone().with(FIN | ACK, b"").bytes())?.action,
            XDP_TX
        );
        let (_, out) = o.syn(1, 46000, old(80))?;
        assert_eq!(
            out.action, XDP_DROP,
            "a half-closed connection's port was taken"
        );
        assert_eq!(o.r.counter(RULE, counter::NAT_PORT_EXHAUSTED), 1);

        // Closed by the client (the usual HTTP client close): the next
        // client gets the port at once, without waiting for collection.
        let fin = o.answer(&first, FIN | ACK, b"");
        assert_eq!(o.send(&fin.bytes())?.action, XDP_TX);
        assert_eq!(o.send(&c0.with(ACK, b"").bytes())?.action, XDP_TX);
        let key0 = flow_key(SocketAddrV4::new(client(0), 46000), old(80));
        let closed = o.r.flow(&key0).context("client 0's entry")?;
        assert_eq!(
            closed.tcp_flags & (FLOW_FIN_FORWARD | FLOW_FIN_REPLY | FLOW_CLOSED),
            FLOW_FIN_FORWARD | FLOW_FIN_REPLY | FLOW_CLOSED
        );
        assert_eq!(closed.tcp_flags & FLOW_REPLY_CLOSED_FIRST, 0);
        let second = o.open(1, 46000, old(80))?;
        assert_eq!(second.sport, 46000);
        assert_eq!(o.r.counter(RULE, counter::PORT_REUSED), 1);
        assert!(
            o.r.flow(&key0).is_none(),
            "the old connection's entry stayed"
        );
        assert_eq!(o.r.flow_count(), 2);
        // The port's replies now reach client 1.
        let out = o.send(&o.answer(&second, SYN | ACK, b"").bytes())?;
        assert_eq!(
            parse_checked(&out.frame).to(),
            SocketAddrV4::new(client(1), 46000)
        );

        // Closed by the new host first: it holds TIME_WAIT and surely takes
        // a new SYN only with a sequence number past the old connection's.
        establish(o, SocketAddrV4::new(client(1), 46000))?;
        close(o, 1, 46000, old(80), &second, false)?;
        let key1 = flow_key(SocketAddrV4::new(client(1), 46000), old(80));
        let flags = o.r.flow(&key1).context("client 1's entry")?.tcp_flags;
        assert_ne!(flags & FLOW_REPLY_CLOSED_FIRST, 0);
        assert_ne!(flags & FLOW_CLOSED, 0);
        // A second port, closed the same way by a client whose FIN came
        // earlier in sequence space.
        o.r.set_ports(46000, 46001, 4)?;
        let third = o.open(4, 46000, old(80))?;
        assert_eq!(third.sport, 46001);
        let from4 = SocketAddrV4::new(client(4), 46000);
        establish(o, from4)?;
        let mut late_fin = Tcp::syn(client_mac(4), OLD_MAC, from4, old(80)).with(FIN | ACK, b"");
        late_fin.seq = late_fin.seq.wrapping_sub(2_000_000);
        assert_eq!(
            o.send(&o.answer(&third, FIN | ACK, b"").bytes())?.action,
            XDP_TX
        );
        assert_eq!(o.send(&late_fin.bytes())?.action, XDP_TX);
        assert_eq!(o.send(&o.answer(&third, ACK, b"").bytes())?.action, XDP_TX);

        // A SYN past the second connection's sequence but not the first's
        // gets the port where it is surely taken, not its own.
        let mut between = Tcp::syn(
            client_mac(2),
            OLD_MAC,
            SocketAddrV4::new(client(2), 46000),
            old(80),
        );
        between.seq = between.seq.wrapping_sub(1_000_000);
        let out = o.send(&between.bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(parse_checked(&out.frame).sport, 46001);
        // With no such port left, the last resort: any closed one (the new
        // host takes it on a newer timestamp too; else the client's
        // retransmission does, as it would after a drop).
        let (_, out) = o.syn(3, 46000, old(80))?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(parse_checked(&out.frame).sport, 46000);
        assert_eq!(o.r.counter(RULE, counter::PORT_REUSED), 3);
        Ok(())
    })
}

/// A frame too big for a 1280-byte link: `payload` bytes of data from
/// client 0's `sport` to `to`, DF set unless `df` is false.
fn big_segment(sport: u16, to: SocketAddrV4, payload: usize, df: bool) -> Tcp {
    let from = SocketAddrV4::new(client(0), sport);
    let mut t = Tcp::syn(client_mac(0), OLD_MAC, from, to).with(ACK, &vec![0x5a; payload]);
    if !df {
        t.ip.frag = 0;
    }
    t
}

/// `t` as a GSO packet: its TCP checksum field holds the kernel's partial
/// sum, as it does before segmentation.
fn as_gso(t: &Tcp) -> Vec<u8> {
    let mut f = t.bytes();
    let len = (t.segment().len()) as u16;
    let partial = frame::gso_partial_checksum(t.ip.saddr, t.ip.daddr, len);
    f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&partial.to_be_bytes());
    f
}

#[test]
fn a_packet_too_big_for_the_next_hop_is_answered_with_fragmentation_needed() -> Result<()> {
    on_old_host(|o| {
        // The way to the new host behind old1 is a 1280-byte link.
        o.host.ip(&["link", "set", OTHER, "mtu", "1280"])?;
        let other = OldHost::ifindex(OTHER)?;
        o.r.egress.insert(other, other, None, 0)?;
        let (_, out) = o.syn(0, 40100, old(82))?;
        assert_eq!(out.action, XDP_REDIRECT);

        let big = big_segment(40100, old(82), 1400, true);
        let out = o.send(&big.bytes())?;
        assert_eq!(out.action, XDP_TX, "the error goes back out of old0");
        let f = &out.frame;
        assert_eq!(f.len(), 14 + 20 + 8 + 28, "IP header, ICMP header, quote");
        assert_eq!((&f[0..6], &f[6..12]), (&client_mac(0)[..], &OLD_MAC[..]));
        let ip = &f[14..34];
        assert_eq!(frame::checksum(ip), 0, "IPv4 checksum");
        assert_eq!(
            (ip[9], &ip[12..16], &ip[16..20]),
            (PROTO_ICMP, &OLD.octets()[..], &client(0).octets()[..])
        );
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, f.len() - 14);
        let icmp = &f[34..];
        assert_eq!(frame::checksum(icmp), 0, "ICMP checksum");
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1280, "next-hop MTU");
        // The quote is what the client sent: its own header and ports.
        let original = big.bytes();
        assert_eq!(&icmp[8..], &original[14..14 + 28]);
        assert_eq!(o.r.counter(RULE_OTHER, counter::ICMP_FRAG_NEEDED_SENT), 1);

        // Without DF the kernel fragments it, translated.
        let out = o.send(&big_segment(40100, old(82), 1400, false).bytes())?;
        assert_eq!(out.action, XDP_PASS);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.daddr, NEW_OTHER);
        assert_eq!(o.r.counter(RULE_OTHER, counter::PASS_FRAGMENT_NEEDED), 1);

        // One that fits goes through the devmap as before.
        let out = o.send(&big_segment(40100, old(82), 1200, true).bytes())?;
        assert_eq!(out.action, XDP_REDIRECT);
        Ok(())
    })
}

#[test]
fn gso_packets_leave_whole_with_their_partial_checksum_translated() -> Result<()> {
    on_old_host(|o| {
        // Longer than old0's MTU: a GSO packet, which only generic mode
        // sees, its segments at most 1500 bytes.
        let gso = big_segment(40200, old(80), 2900, true);
        let seen = o.open(0, 40200, old(80))?;
        // The hop is looked up again for it: once, the FIB's own size check
        // dropped it here.
        wait_for_next_hop_cache();
        let out = o.send(&as_gso(&gso))?;
        assert_eq!(out.action, XDP_TX, "the hairpin sends it whole");
        let f = &out.frame;
        let tcp = &f[34..];
        let partial = u16::from_be_bytes([tcp[16], tcp[17]]);
        assert_eq!(
            partial,
            frame::gso_partial_checksum(OLD, NEW, (tcp.len()) as u16),
            "the partial checksum of the translated addresses"
        );
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), seen.sport);
        assert_eq!(o.r.counter(RULE, counter::PASS_GSO), 0);

        // To another interface: the devmap would drop it, the kernel
        // forwards and segments it.
        let other = OldHost::ifindex(OTHER)?;
        o.r.egress.insert(other, other, None, 0)?;
        assert_eq!(o.syn(0, 40201, old(82))?.1.action, XDP_REDIRECT);
        let gso = big_segment(40201, old(82), 2900, true);
        let out = o.send(&as_gso(&gso))?;
        assert_eq!(out.action, XDP_PASS);
        let tcp = &out.frame[34..];
        assert_eq!(
            u16::from_be_bytes([tcp[16], tcp[17]]),
            frame::gso_partial_checksum(OLD, NEW_OTHER, tcp.len() as u16)
        );
        assert_eq!(o.r.counter(RULE_OTHER, counter::PASS_GSO), 1);

        // Behind a smaller MTU its segments may not fit: the sender is told
        // once, and its GSO packets are then taken to fit.
        o.host.ip(&["link", "set", OTHER, "mtu", "1280"])?;
        assert_eq!(o.syn(0, 40202, old(82))?.1.action, XDP_REDIRECT);
        let gso = big_segment(40202, old(82), 2900, true);
        let out = o.send(&as_gso(&gso))?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.frame[34], 3, "fragmentation needed");
        let key = flow_key(SocketAddrV4::new(client(0), 40202), old(82));
        assert_eq!(o.r.flow(&key).context("entry")?.pmtu_sent, 1280);
        let out = o.send(&as_gso(&gso))?;
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(o.r.counter(RULE_OTHER, counter::PASS_GSO), 2);
        Ok(())
    })
}

#[test]
fn an_expiring_ttl_is_dropped_not_delivered_locally() -> Result<()> {
    on_old_host(|o| {
        let out = o.send(&syn_with(old(80), |ip| ip.ttl = 1))?;
        assert_eq!(out.action, XDP_DROP);
        assert_eq!(o.r.counter(RULE, counter::DROP_TTL_EXPIRED), 1);
        assert_eq!(o.r.flow_count(), 0);

        let seen = o.open(0, 40000, old(80))?;
        let mut late = o.answer(&seen, ACK, b"");
        late.ip.ttl = 1;
        assert_eq!(o.send(&late.bytes())?.action, XDP_DROP);
        assert_eq!(o.r.counter(RULE, counter::DROP_TTL_EXPIRED), 2);
        Ok(())
    })
}

/// The client at `from` (a client(n) address) sends its handshake ACK to
/// OLD:80, which moves its connection among the established ones.
fn establish(o: &Old, from: SocketAddrV4) -> Result<()> {
    let n = from.ip().octets()[3] - 100;
    let ack = Tcp::syn(client_mac(n), OLD_MAC, from, old(80)).with(ACK, b"");
    assert_eq!(o.send(&ack.bytes())?.action, XDP_TX);
    Ok(())
}

#[test]
fn a_syn_flood_evicts_half_open_connections_never_established_ones() -> Result<()> {
    // Tables small enough to overflow in a test: 20 connections fill half
    // of FLOWS, and 2,000 SYNs overflow EMBRYOS many times over (and FLOWS
    // too, were they put there).
    let small = || Redirector::load_with_table_sizes(80, 64);
    on_old_host_loaded(small, |o| {
        let mut live = Vec::new();
        for i in 0..20u16 {
            let from = SocketAddrV4::new(client((i % 4) as u8), 41000 + i);
            let seen = o.open((i % 4) as u8, 41000 + i, old(80))?;
            establish(o, from)?;
            live.push((from, seen));
        }
        assert_eq!(o.r.established_count(), 40);

        // A flood of SYNs from addresses nobody answers.
        for i in 0..2000u32 {
            let from = SocketAddrV4::new(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 100, 0)) + i),
                1024 + (i % 60000) as u16,
            );
            let syn = Tcp::syn([0x02, 0, 0, 0, 0x09, 0x09], OLD_MAC, from, old(80));
            o.send(&syn.bytes())?;
        }
        assert!(o.r.counter(RULE, counter::NEW_FLOWS) >= 2000);

        // Every established connection still goes both ways.
        assert_eq!(
            o.r.established_count(),
            40,
            "established flows were evicted"
        );
        for (i, (from, seen)) in live.iter().enumerate() {
            let n = (i % 4) as u8;
            let data = Tcp::syn(client_mac(n), OLD_MAC, *from, old(80)).with(ACK | PSH, b"GET");
            let out = o.send(&data.bytes())?;
            assert_eq!(out.action, XDP_TX, "connection {i} lost its state");
            assert_eq!(parse_checked(&out.frame).from(), seen.from());
            let back = o.send(&o.answer(seen, ACK, b"200").bytes())?;
            assert_eq!(parse_checked(&back.frame).to(), *from);
        }
        Ok(())
    })
}

#[test]
fn an_evicted_reply_entry_is_rebuilt_from_its_partner() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(0), 40000);
        let seen = o.open(0, 40000, old(80))?;
        establish(o, from)?;
        let fwd =
            o.r.flow(&flow_key(from, old(80)))
                .context("forward entry")?;
        o.r.flows.remove(&fwd.partner_key())?;
        // The partner is checked when the cached next hop is renewed.
        wait_for_next_hop_cache();

        let ack = Tcp::syn(client_mac(0), OLD_MAC, from, old(80)).with(ACK, b"");
        assert_eq!(o.send(&ack.bytes())?.action, XDP_TX);
        assert_eq!(o.r.counter(RULE, counter::LRU_EVICTED), 1);
        let rebuilt: Flow =
            o.r.flow(&fwd.partner_key())
                .context("reply entry is back")?;
        assert_eq!(rebuilt.direction, DIR_REPLY);

        let out = o.send(&o.answer(&seen, ACK, b"ok").bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(parse_checked(&out.frame).to(), from);
        Ok(())
    })
}

#[test]
fn a_flow_whose_nat_port_went_to_another_client_is_dropped() -> Result<()> {
    on_old_host(|o| {
        let from = SocketAddrV4::new(client(0), 40000);
        o.open(0, 40000, old(80))?;
        establish(o, from)?;
        let fwd =
            o.r.flow(&flow_key(from, old(80)))
                .context("forward entry")?;
        // The reply entry is evicted, and another client takes the port.
        o.r.flows.remove(&fwd.partner_key())?;
        let other = o.open(1, 40000, old(80))?;
        assert_eq!(other.sport, 40000);
        wait_for_next_hop_cache();

        let ack = Tcp::syn(client_mac(0), OLD_MAC, from, old(80)).with(ACK, b"");
        assert_eq!(o.send(&ack.bytes())?.action, XDP_DROP);
        assert_eq!(o.r.counter(RULE, counter::LRU_EVICTED), 1);
        Ok(())
    })
}

#[test]
fn flows_are_shared_by_all_cpus_and_not_duplicated_by_a_retransmitted_syn() -> Result<()> {
    on_old_host(|o| {
        let a = o.open(0, 40000, old(80))?;
        let b = o.open(0, 40000, old(80))?;
        assert_eq!((a.from(), a.to()), (b.from(), b.to()));
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 1);
        assert_eq!(o.r.flow_count(), 2);
        Ok(())
    })
}

/// ns per packet of a tracked flow's segment, printed as one line for
/// `cargo xtask bench redirector`.
///
/// `BPF_PROG_TEST_RUN` repeats the program on the same buffer, so each run
/// sees the previous run's output. The flow measured is therefore one whose
/// two entries map a tuple to the other and back: client:40000 ->
/// client:40000 becomes NEW:8080 -> NEW:8080 and vice versa (both hosts are
/// neighbours with known MACs). Every run does a real tracked-flow pass:
/// entry and partner lookups, flags and time, FIB lookup, rewrite with
/// checksums, counters, XDP_TX. The TTL drops by one per run, so each call
/// repeats 200 times on a fresh frame with TTL 255; the kernel times the
/// runs alone, without the syscall, and the kernel's duration is an average
/// over a call's runs in whole ns.
#[test]
#[ignore = "benchmark: cargo xtask bench redirector"]
fn per_packet_cost() -> Result<()> {
    // As a daemon at its default log filter (info) runs it.
    let as_deployed = || Redirector::load_with_log_level(aya_log::Level::Info as u8);
    on_old_host_loaded(as_deployed, |o| {
        o.r.attach("peer1")?;
        let a = SocketAddrV4::new(client(0), 40000);
        let mut seg = Tcp::syn(client_mac(0), OLD_MAC, a, a).with(ACK, &[0x55; 64]);
        seg.ip.ttl = 255;
        let (tcp, floor) = tracked_cost(o, RULE, &seg.bytes(), |r| {
            install_pair(&mut r.flows, PROTO_TCP, a, new_host(), RULE)
        })?;
        let c = SocketAddrV4::new(client(0), 47000);
        let mut datagram = Udp::new(client_mac(0), OLD_MAC, c, c, &[0x55; 64]);
        datagram.ip.ttl = 255;
        let to = SocketAddrV4::new(NEW, NEW_UDP_PORT);
        let (udp, _) = tracked_cost(o, RULE_UDP, &datagram.bytes(), |r| {
            install_pair(&mut r.flows, PROTO_UDP, c, to, RULE_UDP)
        })?;
        // The same over IPv6, in its own program and tables.
        let a6 = client6_at(0, 40000);
        let mut seg6 = Tcp6::syn(client_mac(0), OLD_MAC, a6, a6).with(ACK, &[0x55; 64]);
        seg6.ip.hop_limit = 255;
        let (tcp6, _) = tracked_cost(o, RULE6, &seg6.bytes(), |r| {
            install_pair(&mut r.flows6, PROTO_TCP, a6, new6_host(), RULE6)
        })?;
        let c6 = client6_at(0, 47000);
        let mut datagram6 = Udp6::new(client_mac(0), OLD_MAC, c6, c6, &[0x55; 64]);
        datagram6.ip.hop_limit = 255;
        let to6 = SocketAddrV6::new(NEW6, NEW_UDP_PORT, 0, 0);
        let (udp6, _) = tracked_cost(o, RULE6_UDP, &datagram6.bytes(), |r| {
            install_pair(&mut r.flows6, PROTO_UDP, c6, to6, RULE6_UDP)
        })?;
        println!("ns_per_packet={:.1}", tcp as f64);
        println!("udp_ns_per_packet={:.1}", udp as f64);
        println!("ipv6_ns_per_packet={:.1}", tcp6 as f64);
        println!("ipv6_udp_ns_per_packet={:.1}", udp6 as f64);
        println!("floor_ns={floor}");
        println!("program_ns={}", tcp.saturating_sub(floor));
        println!("ipv6_program_ns={}", tcp6.saturating_sub(floor));
        Ok(())
    })
}

/// An established flow of `proto` between `a` and `b` under `rule`, whose
/// two entries each rewrite to the other's own tuple: a frame from `a` to
/// `a` becomes `b` to `b` and back on each run.
fn install_pair<A, S>(
    table: &mut aya::maps::HashMap<aya::maps::MapData, FlowKeyOf<A>, FlowOf<A>>,
    proto: u8,
    a: S,
    b: S,
    rule: u32,
) -> Result<()>
where
    A: Copy + Default,
    S: Copy + Into<std::net::SocketAddr>,
    FlowKeyOf<A>: aya::Pod,
    FlowOf<A>: aya::Pod,
{
    let words = |s: S| -> A {
        let s: std::net::SocketAddr = s.into();
        let w = redirector::rules::rule_addr(s.ip());
        // Four words for IPv6, the last (mapped) one for IPv4.
        let bytes: Vec<u8> = if std::mem::size_of::<A>() == 16 {
            w.iter().flat_map(|x| x.to_ne_bytes()).collect()
        } else {
            w[3].to_ne_bytes().to_vec()
        };
        // SAFETY: A is u32 or [u32; 4], and `bytes` holds exactly its size.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<A>()) }
    };
    let port_of = |s: S| -> u16 { port(s.into().port()) };
    let key = |s: S| FlowKeyOf {
        saddr: words(s),
        daddr: words(s),
        sport: port_of(s),
        dport: port_of(s),
        proto,
        _pad: [0; 3],
    };
    let entry = |to: S, direction| FlowOf {
        saddr: words(to),
        daddr: words(to),
        sport: port_of(to),
        dport: port_of(to),
        rule_id: rule,
        direction,
        tcp_flags: FLOW_ESTABLISHED,
        proto,
        ..Default::default()
    };
    table.insert(key(a), entry(b, DIR_FORWARD), 0)?;
    table.insert(key(b), entry(a, DIR_REPLY), 0)?;
    Ok(())
}

/// The median ns per run of a packet of an established flow under `rule`
/// (put in place by `install`, see `install_pair`), and the harness's
/// floor: the same runs of a program that only returns. The TTL (hop
/// limit) drops by one per run, so a call repeats 200 times on a fresh
/// frame with TTL 255.
fn tracked_cost(
    o: &mut Old,
    rule: u32,
    frame: &[u8],
    install: impl FnOnce(&mut Redirector) -> Result<()>,
) -> Result<(u64, u64)> {
    install(&mut o.r)?;
    const RUNS: u32 = 1_000_000;
    const PER_CALL: u32 = 200;
    let mut per_call = Vec::with_capacity((RUNS / PER_CALL) as usize);
    for _ in 0..RUNS / PER_CALL {
        let (out, ns) = o.r.run_repeat(frame, o.ifindex, PER_CALL)?;
        assert_eq!(out.action, XDP_TX);
        per_call.push(ns);
    }
    // Every run was a translated, transmitted packet.
    assert_eq!(o.r.counter(rule, counter::TX), RUNS as u64);
    assert_eq!(o.r.counter(rule, counter::FWD_PACKETS), RUNS as u64 / 2);
    // The median call: the machine is shared, and a call that was
    // preempted says nothing about the program.
    per_call.sort_unstable();
    let mut floor: Vec<u64> = (0..RUNS / PER_CALL)
        .map(|_| o.r.floor_ns(frame, o.ifindex, PER_CALL))
        .collect::<Result<_>>()?;
    floor.sort_unstable();
    Ok((per_call[per_call.len() / 2], floor[floor.len() / 2]))
}

/// A datagram from client `n`'s `sport` to the UDP rule's address.
fn datagram(n: u8, sport: u16, payload: &[u8]) -> Udp {
    Udp::new(
        client_mac(n),
        OLD_MAC,
        SocketAddrV4::new(client(n), sport),
        old(UDP_PORT),
        payload,
    )
}

/// The new host's answer to a translated datagram `seen`.
fn udp_answer(seen: &Seen, payload: &[u8]) -> Udp {
    Udp::new(NEW_MAC, OLD_MAC, seen.to(), seen.from(), payload)
}

#[test]
fn a_udp_flow_goes_both_ways_and_becomes_established_as_a_stream() -> Result<()> {
    on_old_host(|o| {
        let client_end = SocketAddrV4::new(client(0), 47000);
        let out = o.send(&datagram(0, 47000, b"query 1").bytes())?;
        assert_eq!(out.action, XDP_TX);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.proto, PROTO_UDP);
        assert_eq!(
            seen.from(),
            SocketAddrV4::new(OLD, 47000),
            "the client's port is kept"
        );
        assert_eq!(seen.to(), SocketAddrV4::new(NEW, NEW_UDP_PORT));
        assert_eq!(
            (seen.dst_mac, seen.src_mac, seen.ttl),
            (NEW_MAC, OLD_MAC, 63)
        );
        assert_eq!(seen.payload, b"query 1");

        // Unanswered, the flow is half-open: a flood of new flows evicts
        // only its own kind.
        let key = flow_key_of(PROTO_UDP, client_end, old(UDP_PORT));
        let unanswered = o.r.embryos.get(&key, 0)?;
        assert_eq!(
            (unanswered.direction, unanswered.tcp_flags),
            (DIR_FORWARD, 0)
        );
        assert!(o.r.flows.get(&key, 0).is_err());

        // Another datagram of the flow follows the same state.
        let again = o.send(&datagram(0, 47000, b"query 2").bytes())?;
        assert_eq!(again.action, XDP_TX);
        assert_eq!(parse_checked(&again.frame).from(), seen.from());

        let back = o.send(&udp_answer(&seen, b"answer").bytes())?;
        assert_eq!(back.action, XDP_TX);
        let answer = parse_checked(&back.frame);
        assert_eq!(
            answer.from(),
            old(UDP_PORT),
            "from the address the client asked"
        );
        assert_eq!(answer.to(), client_end);
        assert_eq!(
            (answer.dst_mac, answer.payload.as_slice()),
            (client_mac(0), &b"answer"[..])
        );

        // Answered once (a DNS query's whole life): still in EMBRYOS, both
        // entries marked, so that lone exchanges never crowd FLOWS.
        let reply_key = flow_key_of(PROTO_UDP, seen.to(), seen.from());
        for k in [key, reply_key] {
            let entry = o.r.embryos.get(&k, 0)?;
            assert_eq!(entry.tcp_flags, FLOW_UDP_ANSWERED);
            assert!(o.r.flows.get(&k, 0).is_err());
        }
        // The client sends again: a stream, moved to FLOWS, established.
        let more = o.send(&datagram(0, 47000, b"query 3").bytes())?;
        assert_eq!(more.action, XDP_TX);
        assert_eq!(parse_checked(&more.frame).from(), seen.from());
        for k in [key, reply_key] {
            let entry = o.r.flows.get(&k, 0)?;
            assert_eq!(entry.tcp_flags, FLOW_UDP_ANSWERED | FLOW_ESTABLISHED);
            assert_eq!(entry.proto, PROTO_UDP);
            assert!(o.r.embryos.get(&k, 0).is_err());
        }
        let back = o.send(&udp_answer(&seen, b"answer 2").bytes())?;
        assert_eq!(parse_checked(&back.frame).to(), client_end);
        assert_eq!(o.r.counter(RULE_UDP, counter::NEW_FLOWS), 1);
        assert_eq!(o.r.counter(RULE_UDP, counter::FWD_PACKETS), 3);
        assert_eq!(o.r.counter(RULE_UDP, counter::REPLY_PACKETS), 2);
        // TCP's rules saw none of it.
        assert_eq!(o.r.counter(RULE, counter::NEW_FLOWS), 0);
        Ok(())
    })
}

#[test]
fn a_udp_checksum_of_none_stays_none_and_a_computed_zero_is_sent_as_ffff() -> Result<()> {
    on_old_host(|o| {
        let mut none = datagram(0, 47000, b"no checksum");
        none.no_checksum = true;
        let out = o.send(&none.bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(udp_checksum_field(&out.frame), 0);
        parse_checked(&out.frame);

        // Pick the last payload word so that the translated datagram's sum
        // comes out as 0: the program must send 0xffff, not "none".
        let mut d = datagram(1, 47001, &[0x11, 0x22, 0, 0]);
        let translated = Udp::new(
            OLD_MAC,
            NEW_MAC,
            SocketAddrV4::new(OLD, 47001),
            SocketAddrV4::new(NEW, NEW_UDP_PORT),
            &d.payload,
        );
        let c = udp_checksum_field(&translated.bytes());
        // c is the complement of the sum so far: as the last data word it
        // makes the sum 0xffff, and the checksum 0.
        d.payload[2..4].copy_from_slice(&c.to_be_bytes());
        let out = o.send(&d.bytes())?;
        assert_eq!(out.action, XDP_TX);
        assert_eq!(udp_checksum_field(&out.frame), 0xffff);
        parse_checked(&out.frame);
        Ok(())
    })
}

#[test]
fn a_udp_nat_port_a_local_socket_holds_is_not_given_to_a_client() -> Result<()> {
    on_old_host(|o| {
        let _own = std::net::UdpSocket::bind(SocketAddrV4::new(OLD, 47002))?;
        let out = o.send(&datagram(0, 47002, b"q").bytes())?;
        assert_eq!(out.action, XDP_TX);
        let seen = parse_checked(&out.frame);
        assert!(
            (PORT_MIN..=PORT_MAX).contains(&seen.sport),
            "port {} is the old host's own",
            seen.sport
        );
        // A client port nobody holds is kept.
        let free = parse_checked(&o.send(&datagram(1, 47003, b"q").bytes())?.frame);
        assert_eq!(free.sport, 47003);
        Ok(())
    })
}

#[test]
fn a_port_unreachable_about_a_udp_flow_reaches_the_client() -> Result<()> {
    on_old_host(|o| {
        let sent_by_client = datagram(0, 47000, b"anyone there?");
        let out = o.send(&sent_by_client.bytes())?;
        assert_eq!(out.action, XDP_TX);
        // Nothing listens on the new host's port: it says so, quoting the
        // whole translated datagram.
        let error = icmp_error(NEW_MAC, NEW, 3, 3, &out.frame[14..]);
        let back = o.send(&error)?;
        assert_eq!(back.action, XDP_TX);
        let f = &back.frame;
        let ip = &f[14..34];
        assert_eq!(frame::checksum(ip), 0, "outer IPv4 checksum");
        assert_eq!(&ip[16..20], &client(0).octets()[..], "to the client");
        let icmp = &f[34..];
        assert_eq!(frame::checksum(icmp), 0, "ICMP checksum");
        assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
        let quoted = &icmp[8..];
        assert_eq!(frame::checksum(&quoted[..20]), 0, "quoted IPv4 checksum");
        assert_eq!(
            (&quoted[12..16], &quoted[16..20]),
            (&client(0).octets()[..], &OLD.octets()[..])
        );
        // The quoted datagram is the client's own, checksum included.
        assert_eq!(&quoted[20..], &sent_by_client.bytes()[34..]);
        assert_eq!(o.r.counter(RULE_UDP, counter::ICMP_TRANSLATED), 1);
        Ok(())
    })
}

#[test]
fn every_new_udp_flow_s_first_datagram_is_forwarded() -> Result<()> {
    on_old_host(|o| {
        for sport in 10000..11024 {
            let out = o.send(&datagram(0, sport, b"first").bytes())?;
            assert_eq!(out.action, XDP_TX, "the first datagram from port {sport}");
            let seen = parse_checked(&out.frame);
            assert_eq!(seen.sport, sport);
        }
        assert_eq!(o.r.counter(RULE_UDP, counter::NEW_FLOWS), 1024);
        assert_eq!(o.r.flow_count(), 2048);
        Ok(())
    })
}

#[test]
fn a_udp_gso_datagram_leaves_whole_with_its_partial_checksum_translated() -> Result<()> {
    on_old_host(|o| {
        // QUIC stacks send with UDP GSO: generic mode sees the datagrams
        // of a flow together, longer than the MTU, with a partial checksum.
        let first = o.send(&datagram(0, 47100, b"hello").bytes())?;
        assert_eq!(first.action, XDP_TX);
        let seen = parse_checked(&first.frame);
        // The hop is looked up again for it, with its size left out.
        wait_for_next_hop_cache();
        let len = 8 + 2900u16;
        let mut gso = datagram(0, 47100, &[0x5a; 2900]).bytes();
        let partial = frame::gso_partial_checksum_of(PROTO_UDP, client(0), OLD, len);
        gso[34 + 6..34 + 8].copy_from_slice(&partial.to_be_bytes());
        let out = o.send(&gso)?;
        assert_eq!(out.action, XDP_TX, "the hairpin sends it whole");
        assert_eq!(out.frame.len(), gso.len());
        assert_eq!(
            udp_checksum_field(&out.frame),
            frame::gso_partial_checksum_of(PROTO_UDP, OLD, NEW, len),
            "the partial checksum of the translated addresses"
        );
        let udp = &out.frame[34..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), seen.sport);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), NEW_UDP_PORT);
        assert_eq!(o.r.counter(RULE_UDP, counter::PASS_GSO), 0);
        Ok(())
    })
}

#[test]
fn a_flood_of_new_udp_flows_evicts_only_flows_that_are_no_stream() -> Result<()> {
    let small = || Redirector::load_with_table_sizes(80, 64);
    on_old_host_loaded(small, |o| {
        // 20 streams (each sent again after an answer): half of FLOWS.
        let mut live = Vec::new();
        for i in 0..20u16 {
            let n = (i % 4) as u8;
            let out = o.send(&datagram(n, 42000 + i, b"q").bytes())?;
            let seen = parse_checked(&out.frame);
            assert_eq!(o.send(&udp_answer(&seen, b"a").bytes())?.action, XDP_TX);
            let again = datagram(n, 42000 + i, b"q2").bytes();
            assert_eq!(o.send(&again)?.action, XDP_TX);
            live.push((n, 42000 + i, seen));
        }
        assert_eq!(o.r.established_count(), 40);

        // 2,000 one-datagram flows nobody answers (a reflection attack's
        // shape): they churn through EMBRYOS only.
        for i in 0..2000u32 {
            let from = SocketAddrV4::new(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 100, 0)) + i),
                1024 + (i % 60000) as u16,
            );
            let flood = Udp::new(
                [0x02, 0, 0, 0, 0x09, 0x09],
                OLD_MAC,
                from,
                old(UDP_PORT),
                b"x",
            );
            o.send(&flood.bytes())?;
        }
        assert!(o.r.counter(RULE_UDP, counter::NEW_FLOWS) >= 2000);
        assert_eq!(o.r.established_count(), 40, "answered flows were evicted");
        for (n, sport, seen) in &live {
            let out = o.send(&datagram(*n, *sport, b"again").bytes())?;
            assert_eq!(out.action, XDP_TX, "flow from {sport} lost its state");
            assert_eq!(parse_checked(&out.frame).from(), seen.from());
            let back = o.send(&udp_answer(seen, b"still").bytes())?;
            assert_eq!(parse_checked(&back.frame).to().port(), *sport);
        }
        Ok(())
    })
}

#[test]
fn a_udp_flow_to_a_new_host_behind_another_interface_goes_through_the_devmap() -> Result<()> {
    on_old_host(|o| {
        let other = OldHost::ifindex(OTHER)?;
        o.r.egress.insert(other, other, None, 0)?;
        o.r.add_rule_of(
            PROTO_UDP,
            old(UDP_PORT + 1),
            SocketAddrV4::new(NEW_OTHER, NEW_UDP_PORT),
            RULE_OTHER,
        )?;
        let d = Udp::new(
            client_mac(0),
            OLD_MAC,
            SocketAddrV4::new(client(0), 47200),
            old(UDP_PORT + 1),
            b"far",
        );
        let out = o.send(&d.bytes())?;
        assert_eq!(out.action, XDP_REDIRECT);
        let seen = parse_checked(&out.frame);
        assert_eq!(seen.to(), SocketAddrV4::new(NEW_OTHER, NEW_UDP_PORT));
        assert_eq!(seen.dst_mac, NEW_OTHER_MAC);
        assert_eq!(o.r.counter(RULE_OTHER, counter::REDIRECT), 1);
        Ok(())
    })
}

#[test]
fn a_udp_flow_a_connected_local_socket_holds_is_left_to_the_old_host() -> Result<()> {
    on_old_host(|o| {
        // A server's unconnected socket on the rule's port is what the rule
        // takes over, as a TCP listener is.
        let server = std::net::UdpSocket::bind(old(UDP_PORT))?;
        let out = o.send(&datagram(0, 47300, b"new flow").bytes())?;
        assert_eq!(out.action, XDP_TX);
        drop(server);

        // A socket connected to a client holds that client's flow: the old
        // host serves it, untouched and counted.
        let own = std::net::UdpSocket::bind(old(UDP_PORT))?;
        own.connect(SocketAddrV4::new(client(0), 47301))?;
        assert_untouched(
            o,
            &datagram(0, 47301, b"held").bytes(),
            RULE_UDP,
            counter::PASS_LOCAL_SOCKET,
        )?;
        // Another client's flow is not that socket's.
        let out = o.send(&datagram(0, 47302, b"other").bytes())?;
        assert_eq!(out.action, XDP_TX);
        Ok(())
    })
}

// IPv6: the same program compiled for the other family, reached by a tail
// call. Every frame is checked against checksums over the IPv6
// pseudo-header recomputed from scratch.

fn old6(p: u16) -> SocketAddrV6 {
    SocketAddrV6::new(OLD6, p, 0, 0)
}
fn new6_host() -> SocketAddrV6 {
    SocketAddrV6::new(NEW6, 8080, 0, 0)
}
fn client6_at(n: u8, sport: u16) -> SocketAddrV6 {
    SocketAddrV6::new(client6(n), sport, 0, 0)
}

#[test]
fn an_ipv6_client_that_cached_the_old_address_reaches_the_new_host_and_back() -> Result<()> {
    on_old_host(|o| {
        let from = client6_at(0, 40000);
        let syn = Tcp6::syn(client_mac(0), OLD_MAC, from, old6(80));
        let out = o.send(&syn.bytes())?;
        assert_eq!(out.action, XDP_TX);
        let seen = parse_checked6(&out.frame);
        assert_eq!(seen.from(), old6(40000), "the client's port is kept");
        assert_eq!(seen.to(), new6_host());
        assert_eq!(
            (seen.dst_mac, seen.src_mac, seen.ttl),
            (NEW_MAC, OLD_MAC, 63),
            "routed: next hop's MAC, hop limit decremented"
        );
        assert_eq!((seen.flags, seen.seq), (SYN, syn.seq));
        let key = flow_key6(PROTO_TCP, from, old6(80));
        assert_eq!(o.r.embryos6.get(&key, 0)?.direction, DIR_FORWARD);
        assert_eq!(o.r.flow_count(), 0, "no IPv4 state");

        // The new host answers the old address's NAT port: back to the
        // client, from the address it asked.
        let synack = Tcp6::syn(NEW_MAC, OLD_MAC, seen.to(), seen.from()).with(SYN | ACK, &[]);
        let back = o.send(&synack.bytes())?;
        assert_eq!(back.action, XDP_TX);
        let answer = parse_checked6(&back.frame);
        assert_eq!((answer.from(), answer.to()), (old6(80), from));
        assert_eq!(
            (answer.dst_mac, answer.ttl, answer.flags),
            (client_mac(0), 63, SYN | ACK)
        );

        // The handshake's ACK establishes it; data goes both ways intact.
        let request = b"GET / HTTP/1.1\r\nHost: www\r\n\r\n";
        let out = o.send(&syn.clone().with(ACK, request).bytes())?;
        assert_eq!(out.action, XDP_TX);
        let sent = parse_checked6(&out.frame);
        assert_eq!(
            (sent.to(), sent.payload.as_slice()),
            (new6_host(), &request[..])
        );
        let entry = o.r.flows6.get(&key, 0)?;
        assert_ne!(entry.tcp_flags & FLOW_ESTABLISHED, 0);
        let response = vec![0x42; 1000];
        let back = o.send(&synack.clone().with(ACK, &response).bytes())?;
        let got = parse_checked6(&back.frame);
        assert_eq!((got.to(), got.payload.len()), (from, 1000));
        assert_eq!(o.r.counter(RULE6, counter::NEW_FLOWS), 1);
        assert_eq!(o.r.counter(RULE6, counter::FWD_PACKETS), 2);
        assert_eq!(o.r.counter(RULE6, counter::REPLY_PACKETS), 2);
        assert_eq!(
            o.r.counter(RULE, counter::NEW_FLOWS),
            0,
            "IPv4's rule saw none"
        );
        Ok(())
    })
}

#[test]
fn ipv4_and_ipv6_clients_of_one_rule_set_share_the_nat_port_range_apart() -> Result<()> {
    on_old_host(|o| {
        // The same client port under both families: separate flows, each
        // keeping its port, each in its family's table.
        let (_, out4) = o.syn(1, 41000, old(80))?;
        let out6 =
            o.send(&Tcp6::syn(client_mac(1), OLD_MAC, client6_at(1, 41000), old6(80)).bytes())?;
        assert_eq!(parse_checked(&out4.frame).sport, 41000);
        assert_eq!(parse_checked6(&out6.frame).sport, 41000);
        assert_eq!((o.r.flow_count(), o.r.flow6_count()), (2, 2));

        // Two IPv6 clients on one port: the second gets a port of the range.
        let out =
            o.send(&Tcp6::syn(client_mac(2), OLD_MAC, client6_at(2, 41000), old6(80)).bytes())?;
        let second = parse_checked6(&out.frame);
        assert!(
            (PORT_MIN..=PORT_MAX).contains(&second.sport),
            "a port of the range, not {}",
            second.sport
        );
        Ok(())
    })
}

#[test]
fn an_ipv6_udp_flow_goes_both_ways_becomes_a_stream_and_hears_port_unreachable() -> Result<()> {
    on_old_host(|o| {
        let from = client6_at(0, 47000);
        let query = Udp6::new(client_mac(0), OLD_MAC, from, old6(UDP_PORT), b"query");
        let out = o.send(&query.bytes())?;
        assert_eq!(out.action, XDP_TX);
        let seen = parse_checked6(&out.frame);
        assert_eq!(seen.proto, PROTO_UDP);
        assert_eq!(
            (seen.from(), seen.to()),
            (old6(47000), SocketAddrV6::new(NEW6, NEW_UDP_PORT, 0, 0))
        );
        let answer = Udp6::new(NEW_MAC, OLD_MAC, seen.to(), seen.from(), b"answer");
        let back = o.send(&answer.bytes())?;
        let got = parse_checked6(&back.frame);
        assert_eq!((got.from(), got.to()), (old6(UDP_PORT), from));
        assert_eq!(got.payload, b"answer");
        // The client sends again after an answer: a stream, in FLOWS6.
        o.send(&query.bytes())?;
        let key = flow_key6(PROTO_UDP, from, old6(UDP_PORT));
        let entry = o.r.flows6.get(&key, 0)?;
        assert_eq!(entry.tcp_flags, FLOW_UDP_ANSWERED | FLOW_ESTABLISHED);

        // The new host's port unreachable about the translated datagram
        // reaches the client, quoting what the client sent.
        let error = icmp6(NEW_MAC, OLD_MAC, NEW6, OLD6, 1, 4, 0, &out.frame[14..]);
        let back = o.send(&error)?;
        assert_eq!(back.action, XDP_TX);
        let e = parse_icmp6_checked(&back.frame);
        assert_eq!((e.saddr, e.daddr, e.kind, e.code), (NEW6, client6(0), 1, 4));
        assert_eq!(e.hop_limit, 63);
        assert_eq!(
            &e.quoted[8..40],
            &query.bytes()[14 + 8..14 + 40],
            "quoted addresses"
        );
        assert_eq!(
            &e.quoted[40..],
            &query.bytes()[14 + 40..],
            "quoted datagram, checksum too"
        );
        assert_eq!(o.r.counter(RULE6_UDP, counter::ICMP_TRANSLATED), 1);
        Ok(())
    })
}

#[test]
fn an_ipv6_packet_too_big_for_the_next_hop_is_answered_with_packet_too_big() -> Result<()> {
    on_old_host(|o| {
        // The way to the new host behind old1 is a 1280-byte link, IPv6's
        // minimum.
        o.host.ip(&["link", "set", OTHER, "mtu", "1280"])?;
        let other = OldHost::ifindex(OTHER)?;
        o.r.egress.insert(other, other, None, 0)?;
        let from = client6_at(0, 40100);
        let syn = Tcp6::syn(client_mac(0), OLD_MAC, from, old6(82));
        let out = o.send(&syn.bytes())?;
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(parse_checked6(&out.frame).daddr, NEW6_OTHER);

        let big = syn.clone().with(ACK, &[0x5a; 1400]);
        let out = o.send(&big.bytes())?;
        assert_eq!(out.action, XDP_TX, "the error goes back out of old0");
        assert_eq!(
            out.frame.len(),
            14 + 40 + 8 + 48,
            "header, ICMPv6 header, quote"
        );
        let e = parse_icmp6_checked(&out.frame);
        assert_eq!((e.dst_mac, e.src_mac), (client_mac(0), OLD_MAC));
        assert_eq!((e.saddr, e.daddr), (OLD6, client6(0)));
        assert_eq!(
            (e.kind, e.code, e.info),
            (2, 0, 1280),
            "packet too big, MTU 1280"
        );
        assert_eq!(
            &e.quoted[..],
            &big.bytes()[14..14 + 48],
            "what the client sent"
        );
        assert_eq!(o.r.counter(RULE6_OTHER, counter::ICMP_FRAG_NEEDED_SENT), 1);

        // One that fits goes through the devmap.
        let out = o.send(&syn.clone().with(ACK, &[0x5a; 1200]).bytes())?;
        assert_eq!(out.action, XDP_REDIRECT);
        Ok(())
    })
}

#[test]
fn icmpv6_errors_about_a_redirected_connection_reach_the_client() -> Result<()> {
    on_old_host(|o| {
        let from = client6_at(0, 40000);
        let syn = Tcp6::syn(client_mac(0), OLD_MAC, from, old6(80));
        let out = o.send(&syn.bytes())?;
        // A router on the way says "packet too big" about the SYN it got,
        // quoting its IPv6 header and whole TCP header.
        let router = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x50);
        let error = icmp6(NEW_MAC, OLD_MAC, router, OLD6, 2, 0, 1400, &out.frame[14..]);
        let back = o.send(&error)?;
        assert_eq!(back.action, XDP_TX);
        let e = parse_icmp6_checked(&back.frame);
        assert_eq!((e.saddr, e.daddr, e.hop_limit), (router, client6(0), 63));
        assert_eq!((e.kind, e.info), (2, 1400));
        // The quote is now the client's own SYN: its header and its TCP
        // header byte for byte (ports, sequence, checksum).
        let original = syn.bytes();
        assert_eq!(&e.quoted[8..40], &original[14 + 8..14 + 40]);
        assert_eq!(&e.quoted[40..], &original[14 + 40..]);
        assert_eq!(o.r.counter(RULE6, counter::ICMP_TRANSLATED), 1);
        Ok(())
    })
}

#[test]
fn ipv6_frames_the_program_does_not_translate_pass_untouched_and_counted() -> Result<()> {
    on_old_host(|o| {
        let syn = Tcp6::syn(client_mac(0), OLD_MAC, client6_at(0, 40000), old6(80));
        // A hop-by-hop header (a PadN option) before TCP.
        let mut hop_by_hop = syn.clone();
        hop_by_hop.ip.ext = vec![PROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        hop_by_hop.ip.ext_next = 0;
        // A fragment header (a first fragment) before TCP.
        let mut fragment = syn.clone();
        fragment.ip.ext = vec![PROTO_TCP, 0, 0, 1, 0, 0, 0, 1];
        fragment.ip.ext_next = 44;
        // Neighbour discovery must never be touched.
        let solicit = {
            let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
            body.extend_from_slice(&OLD6.octets());
            let ip = Ipv6 {
                hop_limit: 255,
                ..Ipv6::new(client6(0), OLD6, PROTO_ICMPV6)
            };
            ethernet(OLD_MAC, client_mac(0), ETH_IPV6, &ip.bytes(&body))
        };
        let cases: Vec<(&str, Vec<u8>, u32, u32)> = vec![
            (
                "a hop-by-hop header",
                hop_by_hop.bytes(),
                0,
                counter::PASS_IPV6_EXTENSIONS,
            ),
            (
                "a fragment header",
                fragment.bytes(),
                0,
                counter::PASS_FRAGMENT,
            ),
            ("a neighbour solicitation", solicit, 0, counter::PASS_ICMP),
            (
                "a segment of a connection the old host serves",
                syn.clone().with(ACK, b"data").bytes(),
                RULE6,
                counter::PASS_UNTRACKED,
            ),
            (
                "a SYN to a port without a rule",
                Tcp6::syn(client_mac(0), OLD_MAC, client6_at(0, 40000), old6(8443)).bytes(),
                0,
                counter::PASS_NO_RULE,
            ),
            (
                // The IPv4 rule's own key in RULES: IPv6 must not match it.
                "a SYN to the IPv4-mapped form of the old IPv4 address",
                Tcp6::syn(
                    client_mac(0),
                    OLD_MAC,
                    client6_at(0, 40000),
                    SocketAddrV6::new(OLD.to_ipv6_mapped(), 80, 0, 0),
                )
                .bytes(),
                0,
                counter::PASS_MALFORMED,
            ),
        ];
        for (what, frame, slot, reason) in cases {
            assert_untouched(o, &frame, slot, reason).with_context(|| what.to_string())?;
        }
        Ok(())
    })
}

/// The verifier walks every path of a program and gives up after a million
/// instructions; both families' paths in one program went past that, which
/// is why IPv6 has a program of its own. Each keeps a third of the budget
/// spare, so that the next feature finds out here, not at load time.
#[test]
fn each_family_s_program_leaves_the_verifier_headroom() -> Result<()> {
    let r = Redirector::load()?;
    for name in [PROGRAM_NAME, PROGRAM6_NAME, LOCAL_PROGRAM_NAME] {
        let walked = r.verified_instructions(name)?;
        eprintln!("{name}: the verifier walked {walked} instructions");
        assert!(
            walked < 666_666,
            "{name}: {walked} of the verifier's 1,000,000"
        );
    }
    Ok(())
}
