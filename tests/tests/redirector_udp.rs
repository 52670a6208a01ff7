//! UDP and several ports per rule, end to end: a client that still has the
//! old address sends datagrams (a DNS query to a real server, an echo
//! exchange from kernel-chosen ports) and opens connections to two ports,
//! and the new host answers through the XDP program on the old host.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::dig::{self, Query};
use cutover_tests::dns_peers::{ServerOptions, start_nsd};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::redirector_site::{Site, curl, json_number};
use cutover_tests::topology::{NEW_IP, OLD_IP};
use cutover_tests::udp_echo::{UdpEcho, connected};

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

/// Sends `count` numbered datagrams of `size` bytes one at a time and
/// checks that each comes back whole and in turn, after `tag`.
fn exchange(socket: &UdpSocket, tag: &[u8], count: u32, size: usize) -> Result<()> {
    let mut buf = vec![0u8; size + 64];
    for i in 0..count {
        let mut datagram = vec![(i % 251) as u8; size];
        datagram[..4].copy_from_slice(&i.to_be_bytes());
        socket.send(&datagram)?;
        let len = socket
            .recv(&mut buf)
            .with_context(|| format!("datagram {i} of {size} bytes did not come back"))?;
        ensure!(
            buf[..len] == [tag, &datagram].concat()[..],
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
    let echo = UdpEcho::start(&site.net.new, format!("{NEW_IP}:{ECHO_PORT}").parse()?, b"")?;

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
    let old_echo: SocketAddr = format!("{OLD_IP}:7").parse()?;
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| connected(&site.net.client, old_echo))
        .collect::<Result<_>>()?;
    for round in 0..5 {
        for c in &clients {
            exchange(c, b"", 4, if round % 2 == 0 { 32 } else { 1472 })
                .context("echo through the redirect")?;
        }
    }
    assert_eq!(echo.seen(), 3 * 5 * 4);

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
    let _new = UdpEcho::start(
        &site.net.new,
        format!("{NEW_IP}:{ECHO_PORT}").parse()?,
        b"new ",
    )?;
    let old = UdpEcho::start(&site.net.old, format!("{OLD_IP}:7").parse()?, b"old ")?;
    let old_echo: SocketAddr = format!("{OLD_IP}:7").parse()?;
    let client = connected(&site.net.client, old_echo)?;
    exchange(&client, b"new ", 3, 100)?;
    assert_eq!(old.seen(), 0, "the rule was on");

    // Without the rule, a new flow is the old host's. Each try is a new
    // socket: one that opened a flow to the new host before the reload was
    // applied keeps it, as a connection would.
    site.reload("")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let again = loop {
        let socket = connected(&site.net.client, old_echo)?;
        if exchange(&socket, b"old ", 1, 10).is_ok() {
            break socket;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the old host never answered a new flow after the rule went off"
        );
    };
    exchange(&again, b"old ", 3, 100)?;
    assert!(old.seen() >= 4);
    Ok(())
}

/// QUIC (HTTP/3's transport) on 443: the client holds the old address, a
/// quinn server answers on the new host. Offloads are on, so quinn's UDP
/// GSO sends reach the old host as datagrams of several segments.
const QUIC_RULES: &str = r#"
[[rule]]
name = "quic"
from = "198.18.0.2:443"
to = "198.18.0.3"
proto = "udp"
"#;

const QUIC_NAME: &str = "www.example.test";

/// A quinn server on the new host: each stream's request is a byte count,
/// answered with that many bytes of a pattern after a marker line.
fn quic_server(ns: &Netns, at: SocketAddr, cert: &rcgen::CertifiedKey) -> Result<quinn::Endpoint> {
    let socket = ns.run_in(|| UdpSocket::bind(at).with_context(|| format!("binding {at}")))?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let config = quinn::ServerConfig::with_single_cert(vec![cert.cert.der().clone()], key.into())?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(request) = recv.read_to_end(64).await else {
                        return;
                    };
                    let size: usize = String::from_utf8_lossy(&request)
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    let _ = send.write_all(b"served over QUIC by the new host\n").await;
                    let _ = send.write_all(&pattern(size)).await;
                    let _ = send.finish();
                }
            });
        }
    });
    Ok(endpoint)
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 253) as u8).collect()
}

/// A quinn client in `ns` on a kernel-chosen port, trusting `cert`.
fn quic_client(ns: &Netns, cert: &rcgen::CertifiedKey) -> Result<quinn::Endpoint> {
    let socket = ns.run_in(|| Ok(UdpSocket::bind("0.0.0.0:0")?))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Asks for `size` bytes on a new stream of `conn` and checks what comes.
async fn fetch(conn: &quinn::Connection, size: usize) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(size.to_string().as_bytes()).await?;
    send.finish()?;
    let body = recv.read_to_end(size + 64).await?;
    let marker = b"served over QUIC by the new host\n";
    ensure!(body.starts_with(marker), "not the new host's answer");
    ensure!(
        body[marker.len()..] == pattern(size)[..],
        "{} bytes came instead of {size}, or other bytes",
        body.len() - marker.len()
    );
    Ok(())
}

#[test]
fn quic_connections_to_the_old_address_are_served_by_the_new_host() -> Result<()> {
    let site = Site::build(
        cutover_tests::topology::Topology::with_offloads()?,
        QUIC_RULES,
        false,
        &[],
    )?;
    let cert = rcgen::generate_simple_self_signed(vec![QUIC_NAME.to_string()])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _server = quic_server(&site.net.new, format!("{NEW_IP}:443").parse()?, &cert)?;
        let old: SocketAddr = format!("{OLD_IP}:443").parse()?;
        // Three clients, each its own connection (and UDP flow), at once:
        // small answers and 4 MiB ones, several streams each.
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let client = quic_client(&site.net.client, &cert)?;
            tasks.push(tokio::spawn(async move {
                let conn =
                    tokio::time::timeout(Duration::from_secs(10), client.connect(old, QUIC_NAME)?)
                        .await
                        .context("the QUIC handshake through the redirect timed out")??;
                for size in [100, 4 << 20, 10, 1 << 20] {
                    tokio::time::timeout(Duration::from_secs(30), fetch(&conn, size))
                        .await
                        .with_context(|| format!("a {size}-byte answer timed out"))??;
                }
                conn.close(0u32.into(), b"done");
                client.wait_idle().await;
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;

    let json = site.stats_json()?;
    assert_eq!(json_number(&json, "quic", "new_flows")?, 3, "{json}");
    let (bytes, packets) = (
        json_number(&json, "quic", "reply_bytes")?,
        json_number(&json, "quic", "reply_packets")?,
    );
    assert!(bytes > 3 * (5 << 20), "{json}");
    // quinn sends with UDP GSO: the old host forwarded datagrams of
    // several segments whole (generic XDP sees them before segmentation).
    assert!(
        bytes / packets > 1500,
        "{bytes} bytes in {packets} packets: no GSO datagram was tested"
    );
    Ok(())
}

#[test]
fn a_hundred_and_fifty_clients_on_one_source_port_each_get_their_own_answers() -> Result<()> {
    let site = Site::start(RULES)?;
    let _echo = UdpEcho::start(&site.net.new, format!("{NEW_IP}:{ECHO_PORT}").parse()?, b"")?;
    // Clients on their own addresses, all from port 41000: every flow but
    // the first collides with another on the old host's side and needs a
    // NAT port of its own, the shape many clients behind kernel-chosen
    // ports produce by chance, made certain.
    let old_echo: SocketAddr = format!("{OLD_IP}:7").parse()?;
    let mut clients = Vec::new();
    for i in 0..150u32 {
        let addr = format!("198.18.0.{}", 100 + i);
        site.net
            .client
            .ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        let at: SocketAddr = format!("{addr}:41000").parse()?;
        let socket = site.net.client.run_in(|| {
            let s = UdpSocket::bind(at)?;
            s.connect(old_echo)?;
            Ok(s)
        })?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        clients.push(socket);
    }
    // All send before any reads: 150 flows open at once.
    for (i, c) in clients.iter().enumerate() {
        c.send(format!("client {i}").as_bytes())?;
    }
    let mut buf = [0u8; 64];
    for (i, c) in clients.iter().enumerate() {
        let len = c
            .recv(&mut buf)
            .with_context(|| format!("client {i} got no answer"))?;
        ensure!(
            buf[..len] == *format!("client {i}").as_bytes(),
            "client {i} got another's answer: {:?}",
            String::from_utf8_lossy(&buf[..len])
        );
    }
    // And a second round on the same flows.
    for (i, c) in clients.iter().enumerate() {
        exchange(c, b"", 1, 100).with_context(|| format!("client {i}, second round"))?;
    }
    let json = site.stats_json()?;
    assert_eq!(json_number(&json, "echo", "new_flows")?, 150, "{json}");
    assert_eq!(json_number(&json, "echo", "nat_failures")?, 0, "{json}");
    Ok(())
}

#[test]
fn a_udp_stream_keeps_its_flow_and_its_counters_across_a_restart() -> Result<()> {
    let mut site = Site::start(RULES)?;
    let _new = UdpEcho::start(
        &site.net.new,
        format!("{NEW_IP}:{ECHO_PORT}").parse()?,
        b"new ",
    )?;
    let _old = UdpEcho::start(&site.net.old, format!("{OLD_IP}:7").parse()?, b"old ")?;
    let client = connected(&site.net.client, format!("{OLD_IP}:7").parse()?)?;
    exchange(&client, b"new ", 3, 100)?;
    // SIGTERM leaves the program forwarding from the pinned maps...
    site.redirector.stop()?;
    exchange(&client, b"new ", 2, 100).context("with the daemon stopped")?;
    // ...and the next daemon adopts the UDP rule and its flows.
    site.start_again(&[])?;
    exchange(&client, b"new ", 3, 100).context("after the restart")?;
    let json = site.stats_json()?;
    assert_eq!(json_number(&json, "echo", "new_flows")?, 1, "{json}");
    assert_eq!(json_number(&json, "echo", "fwd_packets")?, 8, "{json}");
    let table = site.stats(&[])?;
    assert!(
        table.contains("198.18.0.2:7/udp -> 198.18.0.3:7007/udp"),
        "the adopted rule lost its protocol: {table}"
    );
    Ok(())
}
