//! IPv6 end to end: clients that cached the old host's AAAA record reach
//! the new host through the XDP program, as the IPv4 ones do beside them.
//! Offloads on (GSO packets on the hairpin and the devmap path), 100 MiB
//! both ways, a 1280-byte link towards the new host that only the old
//! host's ICMPv6 "packet too big" lets the client cross, UDP, and IPv4 and
//! IPv6 clients on one rule set.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::iperf3::{self, Iperf3Server};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::wait_until;
use cutover_tests::redirector_site::{
    Site, SlowDownload, curl, file_len, json_map, json_number, sha256,
};
use cutover_tests::topology::{OLD_IP, Topology};
use cutover_tests::udp_echo::{UdpEcho, ask};

const BIG: usize = 100 * 1024 * 1024;
const NEW_BODY: &str = "served by the new host\n";
const FAR_BODY: &str = "served by the far host\n";

/// The hosts' IPv6 addresses: the bridge is 2001:2::/64, the far host's
/// link behind the old host's eth1 2001:2:0:1::/64.
const CLIENT6: &str = "2001:2::1";
const OLD6: &str = "2001:2::2";
const NEW6: &str = "2001:2::3";
const OLD_FAR6: &str = "2001:2:0:1::1";
const FAR6: &str = "2001:2:0:1::3";
const ECHO_PORT: u16 = 7007;

const RULES: &str = r#"
[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:80"

[[rule]]
name = "www6"
from = "[2001:2::2]:80"
to = "[2001:2::3]:80"

[[rule]]
name = "perf6"
from = "[2001:2::2]:5201"
to = "[2001:2::3]:5201"

[[rule]]
name = "far6"
from = "[2001:2::2]:81"
to = "[2001:2:0:1::3]:80"

[[rule]]
name = "farperf6"
from = "[2001:2::2]:5202"
to = "[2001:2:0:1::3]:5201"

[[rule]]
name = "echo6"
from = "[2001:2::2]:7"
to = "[2001:2::3]:7007"
proto = "udp"
"#;

/// The site with offloads on and IPv6 on every link, the far host's
/// included; the daemon starts once the addresses exist.
fn dual_stack_site() -> Result<Site> {
    let net = Topology::with_offloads()?;
    for (host, addr) in [(&net.client, CLIENT6), (&net.old, OLD6), (&net.new, NEW6)] {
        add6(host, "eth0", addr)?;
    }
    let site = Site::build(net, RULES, true, &[])?;
    let far = site.far.as_ref().context("no far host")?;
    add6(&site.net.old, "eth1", OLD_FAR6)?;
    add6(far, "eth0", FAR6)?;
    far.ip(&["-6", "route", "add", "default", "via", OLD_FAR6])?;
    // The far network came after the daemon's start: a reload warms its
    // neighbour and checks the rules' routes again.
    site.reload(RULES)?;
    Ok(site)
}

/// `addr`/64 on `dev`, usable at once (no duplicate address detection).
fn add6(host: &Netns, dev: &str, addr: &str) -> Result<()> {
    host.ip(&["addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"])?;
    Ok(())
}

fn url6(port: u16, path: &str) -> String {
    format!("http://[{OLD6}]:{port}{path}")
}

/// Waits until `url` answers `body` from the client.
fn wait_for(site: &Site, url: &str, body: &str) -> Result<()> {
    ensure!(
        wait_until(Duration::from_secs(15), || curl(&site.net.client, url)
            .is_ok_and(|b| b == body)),
        "{url} never answered through the redirect; log:\n{}",
        site.redirector.log()
    );
    Ok(())
}

#[test]
fn with_offloads_on_100_mib_cross_both_paths_both_ways_intact_over_ipv6() -> Result<()> {
    let site = dual_stack_site()?;
    let far = site.far.as_ref().context("no far host")?;
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("big.bin", BIG)])?;
    let far_web = Nginx::start(far, &[80], FAR_BODY, &[("big.bin", BIG)])?;
    let _new_perf = Iperf3Server::start(&site.net.new)?;
    let _far_perf = Iperf3Server::start(far)?;
    wait_for(&site, &url6(80, "/"), NEW_BODY)?;
    wait_for(&site, &url6(81, "/"), FAR_BODY)?;

    download_intact(&site, 80, &new_web)?;
    download_intact(&site, 81, &far_web)?;
    upload(&site.net.client, 5201, "100M")?;
    upload(&site.net.client, 5202, "100M")?;

    let json = site.stats_json()?;
    for rule in ["www6", "perf6", "far6", "farperf6"] {
        let drops = json_map(&json, rule, "drops")?;
        ensure!(drops == "{}", "{rule} dropped packets: {json}");
        ensure!(
            json_number(&json, rule, "new_flows")? > 0,
            "{rule} forwarded nothing: {json}"
        );
    }
    Ok(())
}

#[test]
fn an_ipv6_client_learns_a_1280_byte_path_mtu_from_the_old_host() -> Result<()> {
    let site = dual_stack_site()?;
    let far = site.far.as_ref().context("no far host")?;
    // A tunnel-sized link (IPv6's minimum MTU) between the old host and
    // the far host.
    site.net.old.ip(&["link", "set", "eth1", "mtu", "1280"])?;
    far.ip(&["link", "set", "eth0", "mtu", "1280"])?;
    // The far host offers the client a full-size MSS, as a server whose own
    // link is not the small one would: the client's segments are too big
    // for the tunnel, and IPv6 TCP learns a path MTU only then (a PMTU at
    // or above what its MSS already allows is ignored).
    far.ip(&[
        "-6", "route", "replace", "default", "via", OLD_FAR6, "advmss", "1440",
    ])?;
    let far_web = Nginx::start(far, &[80], FAR_BODY, &[("big.bin", 20 * 1024 * 1024)])?;
    let _far_perf = Iperf3Server::start(far)?;
    wait_for(&site, &url6(81, "/"), FAR_BODY)?;

    // Routers never fragment IPv6: only the old host's packet too big
    // tells the client that 1280 bytes is the most that gets through.
    upload(&site.net.client, 5202, "20M")?;
    download_intact(&site, 81, &far_web)?;
    let json = site.stats_json()?;
    let events = json_map(&json, "farperf6", "events")?;
    ensure!(
        events.contains("icmp_frag_needed_sent"),
        "no packet too big was sent: {json}"
    );
    let route = site.net.client.ip(&["-6", "route", "get", OLD6])?;
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    let cache = site.net.client.ip(&["-6", "route", "show", "cache"])?;
    let icmp = site.net.client.exec("nstat", &["-az", "Icmp6*"])?;
    ensure!(
        route.contains("mtu 1280"),
        "the client did not learn the path MTU: {route}\n{}\n{}",
        String::from_utf8_lossy(&cache.stdout),
        String::from_utf8_lossy(&icmp.stdout)
    );
    Ok(())
}

#[test]
fn ipv4_and_ipv6_clients_of_one_rule_set_reach_the_new_host_and_udp_too() -> Result<()> {
    let site = dual_stack_site()?;
    let _web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    let echo = UdpEcho::start(
        &site.net.new,
        format!("[{NEW6}]:{ECHO_PORT}").parse()?,
        b"new ",
    )?;
    wait_for(&site, &url6(80, "/"), NEW_BODY)?;
    wait_for(&site, &format!("http://{OLD_IP}/"), NEW_BODY)?;

    // Both families at once, from kernel-chosen ports.
    std::thread::scope(|s| -> Result<()> {
        let runs: Vec<_> = [format!("http://{OLD_IP}/"), url6(80, "/")]
            .into_iter()
            .map(|url| {
                let client = &site.net.client;
                s.spawn(move || -> Result<()> {
                    for _ in 0..20 {
                        let body = curl(client, &url)?;
                        ensure!(body == NEW_BODY, "{url} answered {body:?}");
                    }
                    Ok(())
                })
            })
            .collect();
        for run in runs {
            run.join().expect("a client thread panicked")?;
        }
        Ok(())
    })?;

    let to: SocketAddr = format!("[{OLD6}]:7").parse()?;
    for payload in [&b"ping"[..], &[0x5a; 1400][..]] {
        let answer = ask(&site.net.client, to, payload)?;
        ensure!(
            answer == [&b"new "[..], payload].concat(),
            "the echo answered {answer:?}"
        );
    }
    ensure!(echo.seen() >= 2, "the echo saw {} datagrams", echo.seen());

    let json = site.stats_json()?;
    ensure!(json_number(&json, "www", "new_flows")? >= 20, "{json}");
    ensure!(json_number(&json, "www6", "new_flows")? >= 20, "{json}");
    ensure!(json_number(&json, "echo6", "new_flows")? >= 1, "{json}");
    for rule in ["www", "www6", "echo6"] {
        let drops = json_map(&json, rule, "drops")?;
        ensure!(drops == "{}", "{rule} dropped packets: {json}");
    }
    // The endpoints read back as written, IPv6 in brackets.
    let rules = site.stats(&[])?;
    ensure!(
        rules.contains("[2001:2::2]:80") && rules.contains("[2001:2::3]:80"),
        "{rules}"
    );
    Ok(())
}

/// Downloads big.bin from the redirect on `port` and checks it is `web`'s.
fn download_intact(site: &Site, port: u16, web: &Nginx) -> Result<()> {
    site.download_intact_from(&format!("http://[{OLD6}]:{port}"), "big.bin", web)
}

/// Sends `bytes` (iperf3's notation) through the redirect on `port`.
fn upload(client: &Netns, port: u16, bytes: &str) -> Result<()> {
    iperf3::upload(client, OLD6, port, bytes)
}

/// A sysctl's value in `ns`.
fn sysctl(ns: &Netns, name: &str) -> Result<String> {
    let out = ns.exec("sysctl", &["-n", name])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn ipv6_host_settings_change_only_once_a_rule_is_ipv6_and_keep_router_advertisements() -> Result<()>
{
    let net = Topology::new()?;
    for (host, addr) in [(&net.client, CLIENT6), (&net.old, OLD6), (&net.new, NEW6)] {
        add6(host, "eth0", addr)?;
    }
    // A second interface of the old host that takes its IPv6 from router
    // advertisements, as a management NIC may.
    net.old.ip(&[
        "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt1",
    ])?;
    let ipv4_only = "[[rule]]\nname = \"www\"\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.3:80\"\n";
    let site = Site::build(net, ipv4_only, false, &[])?;
    let old = &site.net.old;
    let before: Vec<String> = ["all.forwarding", "eth0.accept_ra", "mgmt0.accept_ra"]
        .iter()
        .map(|k| sysctl(old, &format!("net.ipv6.conf.{k}")))
        .collect::<Result<_>>()?;
    ensure!(
        before == ["0", "1", "1"],
        "an IPv4-only redirector changed IPv6 settings: {before:?}"
    );

    let _web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    let with_ipv6 = format!(
        "{ipv4_only}[[rule]]\nname = \"www6\"\nfrom = \"[{OLD6}]:80\"\nto = \"[{NEW6}]:80\"\n"
    );
    site.reload(&with_ipv6)?;
    wait_for(&site, &url6(80, "/"), NEW_BODY)?;
    for (key, want) in [
        ("all.forwarding", "1"),
        ("eth0.forwarding", "1"),
        // Turned to 2 before forwarding went on, on every interface and
        // for those to come: their routes from advertisements stay.
        ("eth0.accept_ra", "2"),
        ("mgmt0.accept_ra", "2"),
        ("default.accept_ra", "2"),
    ] {
        let got = sysctl(old, &format!("net.ipv6.conf.{key}"))?;
        ensure!(got == want, "net.ipv6.conf.{key} is {got}, not {want}");
    }
    Ok(())
}

#[test]
fn an_ipv6_client_of_a_dead_new_host_is_told_at_once() -> Result<()> {
    let site = dual_stack_site()?;
    let _web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    wait_for(&site, &url6(80, "/"), NEW_BODY)?;

    // The new host dies: nothing answers neighbour solicitations for it.
    // Once the old host's entry is gone, its stack reports the redirected
    // SYN as address unreachable (ICMPv6) to the SYN's source, the old host
    // itself; the program on loopback translates that back to the client.
    site.net.new.ip(&["link", "set", "eth0", "down"])?;
    site.net.old.ip(&["-6", "neigh", "flush", "to", NEW6])?;
    site.assert_told_unreachable(&url6(80, "/"), "www6")
}

#[test]
fn ipv6_streams_and_new_ipv6_clients_survive_a_stop_and_a_takeover() -> Result<()> {
    // 32 MiB at the slow download's 2 MB/s: still streaming across both.
    const STREAM: usize = 32 * 1024 * 1024;
    let mut site = dual_stack_site()?;
    let web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("stream.bin", STREAM)])?;
    wait_for(&site, &url6(80, "/"), NEW_BODY)?;
    let copy = site.scratch.path().join("stream6.bin");
    let mut stream = SlowDownload::start(&site.net.client, &url6(80, "/stream.bin"), &copy)?;
    std::thread::sleep(Duration::from_secs(1));

    // With no daemon, IPv6 still reaches its program through the pinned
    // program array (an array nobody holds is emptied by the kernel).
    site.redirector.stop()?;
    // curl's rate limit reads in bursts seconds apart.
    let grown = file_len(&copy);
    ensure!(
        wait_until(Duration::from_secs(10), || file_len(&copy) > grown),
        "the IPv6 stream stalled with no daemon at {} bytes (running: {:?}, a new \
         connection: {:?}); stats: {:?}",
        file_len(&copy),
        stream.running(),
        curl(&site.net.client, &url6(80, "/")),
        site.stats_json()
    );
    ensure!(
        curl(&site.net.client, &url6(80, "/"))? == NEW_BODY,
        "a new IPv6 connection with no daemon"
    );

    // The next daemon takes over and puts its own IPv6 program in place.
    site.start_again(&[])?;
    ensure!(
        curl(&site.net.client, &url6(80, "/"))? == NEW_BODY,
        "a new IPv6 connection after the takeover"
    );
    ensure!(stream.running()?, "the stream ended early");
    stream.finish(Duration::from_secs(60))?;
    ensure!(
        sha256(&copy)? == sha256(&web.file("stream.bin"))?,
        "the IPv6 stream arrived corrupted across the stop and the takeover"
    );
    Ok(())
}
