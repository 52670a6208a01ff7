//! A SYN flood through the redirect does not cost established connections
//! their state: half-open connections live in a table of their own
//! (`EMBRYOS`), which the flood overflows, while established ones (`FLOWS`)
//! are untouched. With one table, 330k spoofed SYNs over five rules
//! evicted idle keep-alive connections, which were then reset. (Over one
//! rule a flood runs out of NAT ports first: the 64k ports towards one
//! destination hold about 32k half-open connections, which `EMBRYOS`
//! holds.)
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::nginx::Nginx;
use cutover_tests::redirector_site::{Site, json_number};
use cutover_tests::syn_flood;
use cutover_tests::topology::OLD_IP;
use redirector_common::{MAX_EMBRYO_ENTRIES, MAX_FLOW_ENTRIES};

const NEW_BODY: &str = "served by the new host\n";
const IDLE: usize = 20;
/// Five redirects, OLD:80-84 to NEW:80-84: five NAT port spaces.
const PORTS: [u16; 5] = [80, 81, 82, 83, 84];

fn rules() -> String {
    PORTS
        .iter()
        .map(|p| {
            format!(
                "[[rule]]\nname = \"r{p}\"\nfrom = \"198.18.0.2:{p}\"\nto = \"198.18.0.3:{p}\"\n"
            )
        })
        .collect()
}

/// One GET on a kept-alive connection; the body, once it has arrived.
fn get(stream: &mut TcpStream) -> Result<()> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: www\r\n\r\n")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).ends_with(NEW_BODY) {
        let n = stream.read(&mut buf).context("reading the answer")?;
        ensure!(
            n > 0,
            "the connection was closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

#[test]
fn idle_keep_alive_connections_outlive_a_syn_flood_that_overflows_the_tables() -> Result<()> {
    let site = Site::start(&rules())?;
    let _web = Nginx::start(&site.net.new, &PORTS, NEW_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;
    let old: Ipv4Addr = OLD_IP.parse()?;

    let mut idle: Vec<TcpStream> = site.net.client.run_in(|| {
        (0..IDLE)
            .map(|i| {
                let port = PORTS[i % PORTS.len()];
                let mut s = TcpStream::connect(SocketAddrV4::new(old, port))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                get(&mut s)?;
                Ok(s)
            })
            .collect()
    })?;

    // More half-open connections than both tables hold together (two
    // entries each), from a /16 that nothing routes back to: the new
    // host's answers die at the old host.
    let wanted = u64::from(MAX_FLOW_ENTRIES / 2 + MAX_EMBRYO_ENTRIES);
    let targets: Vec<SocketAddrV4> = PORTS.iter().map(|&p| SocketAddrV4::new(old, p)).collect();
    let sent = syn_flood::send(
        &site.net.client,
        &targets,
        Ipv4Addr::new(198, 19, 0, 0),
        wanted,
        Duration::from_secs(60),
    )?;
    ensure!(
        sent == wanted,
        "only {sent} of {wanted} SYNs went out in 60 s"
    );
    let stats = site.stats_json()?;
    let sum = |field: &str| -> Result<u64> {
        PORTS
            .iter()
            .map(|p| json_number(&stats, &format!("r{p}"), field))
            .sum()
    };
    let opened = sum("new_flows")?;
    ensure!(
        opened > u64::from(MAX_EMBRYO_ENTRIES),
        "the flood opened {opened} half-open connections, too few to overflow the table: {stats}"
    );

    for (i, s) in idle.iter_mut().enumerate() {
        get(s).with_context(|| format!("idle connection {i} after the flood"))?;
    }
    // The flood's half-open connections were evicted by one another, which
    // is no loss; no established one was.
    std::thread::sleep(Duration::from_millis(2500));
    let stats = site.stats_json()?;
    let mut half_open_lost = 0;
    for p in PORTS {
        let rule = format!("r{p}");
        ensure!(
            json_number(&stats, &rule, "evictions")? == 0,
            "established connections were evicted: {stats}"
        );
        half_open_lost += json_number(&stats, &rule, "half_open_evicted").unwrap_or(0);
    }
    // Counted all the same, apart.
    ensure!(half_open_lost > 0, "no half-open eviction counted: {stats}");
    Ok(())
}
