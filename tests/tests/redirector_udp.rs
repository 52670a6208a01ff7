//! UDP and several ports per rule, end to end: a client that still has the
//! old address sends datagrams (a DNS query to a real server, an echo
//! exchange from kernel-chosen ports) and opens connections to two ports,
//! and the new host answers through the XDP program on the old host.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::dig::{self, Query};
use cutover_tests::dns_peers::{ServerOptions, start_nsd};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::redirector_site::{Site, curl, json_number};
use cutover_tests::topology::{NEW_IP, OLD_IP};

const NEW_BODY: &str = "served by the new host\n";
const OLD_BODY: &str = "served by the old host\n";

/// A whole site (80 and 443 in one rule), a DNS server and an echo
/// service, each on the new host.
const RULES: &str = r#"
[[rule]]
name = "site"
from = "198.18.0.2"
to = "198.18.0.3"
ports = [80, 443]

[[rule]]
name = "dns"
from = "198.18.0.2:53"
to = "198.18.0.3"
proto = "udp"

[[rule]]
name = "echo"
from = "198.18.0.2:7"
to = "198.18.0.3:7007"
proto = "udp"
"#;

const ECHO_PORT: u16 = 7007;

/// Echoes every datagram back to its sender until dropped; counts them.
struct Echo {
    stop: Arc<AtomicBool>,
    pub seen: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &Netns, at: SocketAddrV4) -> Result<Self> {
        let socket = ns.run_in(|| UdpSocket::bind(at).with_context(|| format!("binding {at}")))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    n.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        Ok(Self {
            stop,
            seen,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client socket on a kernel-chosen port, connected to `to`, so that it
/// sees ICMP errors about its datagrams as `ConnectionRefused`.
fn connected_client(client: &Netns, to: &str) -> Result<UdpSocket> {
    let to: SocketAddr = to.parse()?;
    let socket = client.run_in(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        Ok(s)
    })?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(socket)
}

/// Sends `count` numbered datagrams of `size` bytes one at a time and
/// checks that each comes back whole and in turn.
fn exchange(socket: &UdpSocket, count: u32, size: usize) -> Result<()> {
    let mut buf = vec![0u8; size + 64];
    for i in 0..count {
        let mut datagram = vec![(i % 251) as u8; size];
        datagram[..4].copy_from_slice(&i.to_be_bytes());
        socket.send(&datagram)?;
        let len = socket
            .recv(&mut buf)
            .with_context(|| format!("datagram {i} of {size} bytes did not come back"))?;
        ensure!(
            buf[..len] == datagram[..],
            "datagram {i} came back as {len} other bytes"
        );
    }
    Ok(())
}

#[test]
fn udp_flows_and_a_two_port_rule_reach_the_new_host_and_come_back() -> Result<()> {
    let site = Site::start(RULES)?;
    let _new_web = Nginx::start(&site.net.new, &[80, 443], NEW_BODY, &[])?;
    let _old_web = Nginx::start(&site.net.old, &[80, 443, 8080], OLD_BODY, &[])?;
    let nsd = start_nsd(
        NEW_IP.parse()?,
        &ServerOptions {
            port: Some(53),
            netns: Some(site.net.new.name.clone()),
            ..ServerOptions::default()
        },
    )?;
    let echo = Echo::start(&site.net.new, SocketAddrV4::new(NEW_IP.parse()?, ECHO_PORT))?;

    // Both ports of the site rule go to the new host; a port it does not
    // list stays the old host's own.
    site.wait_for_body(NEW_BODY)?;
    assert_eq!(
        curl(&site.net.client, &format!("http://{OLD_IP}:443/"))?,
        NEW_BODY
    );
    assert_eq!(
        curl(&site.net.client, &format!("http://{OLD_IP}:8080/"))?,
        OLD_BODY
    );

    // A DNS query to the old address is answered by the new host's NSD,
    // from the address it was sent to (dig checks that).
    let old_dns: SocketAddr = format!("{OLD_IP}:53").parse()?;
    let reply = dig::ask_in(
        Some(&site.net.client.name),
        old_dns,
        &Query::new("example.test.", "A"),
    )?;
    let answer = reply
        .message()
        .with_context(|| format!("no answer through the redirect: {reply:?}"))?;
    ensure!(
        answer.rcode == "NOERROR" && answer.flags.contains("aa") && answer.warnings.is_empty(),
        "{answer}"
    );
    ensure!(
        answer.answer.iter().any(|r| r.rdata == "198.18.0.10"),
        "{answer}"
    );
    drop(nsd);

    // Echo from three sockets on kernel-chosen ports, small datagrams and
    // ones of a full Ethernet MTU, interleaved.
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| connected_client(&site.net.client, &format!("{OLD_IP}:7")))
        .collect::<Result<_>>()?;
    for round in 0..5 {
        for c in &clients {
            exchange(c, 4, if round % 2 == 0 { 32 } else { 1472 })
                .context("echo through the redirect")?;
        }
    }
    assert_eq!(echo.seen.load(Ordering::Relaxed), 3 * 5 * 4);

    let json = site.stats_json()?;
    assert_eq!(json_number(&json, "echo", "new_flows")?, 3, "{json}");
    assert_eq!(json_number(&json, "echo", "fwd_packets")?, 60, "{json}");
    assert_eq!(json_number(&json, "echo", "reply_packets")?, 60, "{json}");
    assert!(json_number(&json, "dns", "new_flows")? >= 1, "{json}");
    assert!(json_number(&json, "site", "new_flows")? >= 2, "{json}");
    let table = site.stats(&[])?;
    for line in [
        "198.18.0.2:80,443 -> 198.18.0.3:80,443",
        "198.18.0.2:7/udp -> 198.18.0.3:7007/udp",
        "198.18.0.2:53/udp -> 198.18.0.3:53/udp",
    ] {
        assert!(table.contains(line), "no {line:?} in\n{table}");
    }

    // Nothing listens any more: the new host's port unreachable reaches
    // the client translated, and its socket fails at once instead of
    // waiting for its timeout.
    drop(echo);
    let c = &clients[0];
    c.send(b"anyone?")?;
    let mut buf = [0u8; 64];
    let err = c
        .recv(&mut buf)
        .expect_err("an answer came from a stopped echo service");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the port unreachable did not reach the client: {err}"
    );
    let json = site.stats_json()?;
    assert!(
        json_number(&json, "echo", "icmp_translated")? >= 1,
        "{json}"
    );
    Ok(())
}

#[test]
fn a_udp_rule_switched_off_leaves_datagrams_to_the_old_host() -> Result<()> {
    let site = Site::start(RULES)?;
    let _new = Echo::start(&site.net.new, SocketAddrV4::new(NEW_IP.parse()?, ECHO_PORT))?;
    let old = Echo::start(&site.net.old, SocketAddrV4::new(OLD_IP.parse()?, 7))?;
    let client = connected_client(&site.net.client, &format!("{OLD_IP}:7"))?;
    exchange(&client, 3, 100)?;
    assert_eq!(old.seen.load(Ordering::Relaxed), 0, "the rule was on");

    // Without the rule, a new flow from a new port is the old host's.
    site.reload("")?;
    let again = connected_client(&site.net.client, &format!("{OLD_IP}:7"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old.seen.load(Ordering::Relaxed) == 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the old host never got a datagram after the rule went off"
        );
        let _ = exchange(&again, 1, 10);
    }
    exchange(&again, 3, 100)?;
    Ok(())
}
