//! Bulk transfers through the redirector as machines send them: offloads on,
//! so the old host's generic XDP sees GSO packets (many segments in one
//! socket buffer), on the hairpin path (eth0 -> eth0, XDP_TX) and through a
//! second interface (eth0 -> eth1, the devmap); and a way to the new host
//! whose MTU is smaller than the client's link, where only an ICMP
//! "fragmentation needed" from the old host lets the client finish.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::iperf3::{self, Iperf3Server};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::wait_until;
use cutover_tests::redirector_site::{Site, json_map};
use cutover_tests::topology::OLD_IP;

const BIG: usize = 100 * 1024 * 1024;
const NEW_BODY: &str = "served by the new host\n";
const FAR_BODY: &str = "served by the far host\n";

/// Downloads and iperf3 to the new host on the bridge and to the far host
/// behind eth1.
const RULES: &str = r#"
[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:80"

[[rule]]
name = "perf"
from = "198.18.0.2:5201"
to = "198.18.0.3:5201"

[[rule]]
name = "far"
from = "198.18.0.2:81"
to = "198.18.1.3:80"

[[rule]]
name = "farperf"
from = "198.18.0.2:5202"
to = "198.18.1.3:5201"
"#;

#[test]
fn with_offloads_on_100_mib_cross_both_paths_both_ways_intact() -> Result<()> {
    let site = Site::start_with_offloads(RULES)?;
    let far = site.far.as_ref().context("no far host")?;
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("big.bin", BIG)])?;
    let far_web = Nginx::start(far, &[80], FAR_BODY, &[("big.bin", BIG)])?;
    let _new_perf = Iperf3Server::start(&site.net.new)?;
    let _far_perf = Iperf3Server::start(far)?;
    site.wait_for_body(NEW_BODY)?;

    // Downloads: the new hosts' GSO packets, byte for byte.
    download_intact(&site, 80, &new_web)?;
    download_intact(&site, 81, &far_web)?;
    // Uploads: the client's GSO packets.
    upload(&site.net.client, 5201, "100M")?;
    upload(&site.net.client, 5202, "100M")?;

    let json = site.stats_json()?;
    for rule in ["www", "perf", "far", "farperf"] {
        let drops = json_map(&json, rule, "drops")?;
        ensure!(drops == "{}", "{rule} dropped packets: {json}");
    }
    // Through eth1 the kernel segmented what generic XDP's devmap would
    // have dropped.
    ensure!(
        json.contains("\"pass_gso\""),
        "no GSO packet went through the kernel: {json}"
    );
    Ok(())
}

#[test]
fn a_smaller_mtu_towards_the_new_host_is_learnt_by_the_client() -> Result<()> {
    let site = Site::start_with_offloads(RULES)?;
    let far = site.far.as_ref().context("no far host")?;
    // A tunnel-sized link between the old host and the far host.
    site.net.old.ip(&["link", "set", "eth1", "mtu", "1280"])?;
    far.ip(&["link", "set", "eth0", "mtu", "1280"])?;
    let far_web = Nginx::start(far, &[80], FAR_BODY, &[("big.bin", 20 * 1024 * 1024)])?;
    let _far_perf = Iperf3Server::start(far)?;
    ensure!(
        wait_until(Duration::from_secs(15), || site
            .get_port(81, "/")
            .is_ok_and(|b| b == FAR_BODY)),
        "the far host never answered through the redirect; log:\n{}",
        site.redirector.log()
    );

    // The client sends full-size segments; only the old host's ICMP tells
    // it that 1280 bytes is the most that gets through.
    upload(&site.net.client, 5202, "20M")?;
    download_intact(&site, 81, &far_web)?;
    let json = site.stats_json()?;
    let events = json_map(&json, "farperf", "events")?;
    ensure!(
        events.contains("icmp_frag_needed_sent"),
        "no fragmentation-needed was sent: {json}"
    );
    let route = site.net.client.ip(&["route", "get", OLD_IP])?;
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    ensure!(
        route.contains("mtu 1280"),
        "the client did not learn the path MTU: {route}"
    );
    Ok(())
}

/// Downloads big.bin from the redirect on `port` and checks it is `web`'s.
fn download_intact(site: &Site, port: u16, web: &Nginx) -> Result<()> {
    site.download_intact_from(&format!("http://{OLD_IP}:{port}"), "big.bin", web)
}

/// Sends `bytes` (iperf3's notation) through the redirect on `port`.
fn upload(client: &Netns, port: u16, bytes: &str) -> Result<()> {
    iperf3::upload(client, OLD_IP, port, bytes)
}
