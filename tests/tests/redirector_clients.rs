//! Many clients through a small NAT port range: a closed connection's port
//! goes to the next client at once (as conntrack reuses a TIME_WAIT entry),
//! instead of staying reserved until garbage collection.
//!
//! Clients on different addresses all use the same source port, so every
//! connection collides with the one before it on the old host's side: the
//! shape many clients behind kernel-chosen ports produce by chance, made
//! certain. Needs root; the daemon is `target/<profile>/redirector`.

use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::wait_until;
use cutover_tests::redirector_site::{RULE_WWW, Site, json_map, json_number};
use cutover_tests::topology::{CLIENT_IP, NEW_IP, OLD_IP};

const NEW_BODY: &str = "served by the new host\n";
/// Ten NAT ports, all tried before a connection is refused.
const RULES: &str = r#"
[nat]
port_range = [20000, 20009]
port_retries = 16

[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:80"
"#;

/// The client's extra addresses: 198.18.0.100 and on.
fn client_addr(i: usize) -> String {
    format!("198.18.0.{}", 100 + i)
}

#[test]
fn clients_get_the_ports_of_closed_connections_at_once() -> Result<()> {
    let site = Site::start(RULES)?;
    let _web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("slow.bin", 1 << 20)])?;
    site.wait_for_body(NEW_BODY)?;
    for i in 0..60 {
        site.net.client.ip(&[
            "addr",
            "add",
            &format!("{}/24", client_addr(i)),
            "dev",
            "eth0",
        ])?;
    }

    // One at a time, each from another address, all from port 41000: each
    // takes the port the one before it just closed.
    for i in 0..30 {
        let body = get_from(&site.net.client, &client_addr(i), 41000)
            .with_context(|| format!("sequential connection {i}"))?;
        ensure!(body == NEW_BODY, "connection {i} answered {body:?}");
    }

    // Ten at a time, three rounds, all from port 42000: one keeps it, nine
    // take the range's ports; each round needs the ports of the one before.
    for round in 0..3 {
        let mut downloads = (0..10)
            .map(|k| SlowGet::start(&site.net.client, &client_addr(30 + round * 10 + k), 42000))
            .collect::<Result<Vec<_>>>()?;
        for (k, d) in downloads.iter_mut().enumerate() {
            d.finish()
                .with_context(|| format!("round {round}, concurrent connection {k}"))?;
        }
    }

    let json = site.stats_json()?;
    ensure!(json_number(&json, "www", "nat_failures")? == 0, "{json}");
    let events = json_map(&json, "www", "events")?;
    ensure!(events.contains("port_reused"), "no port was reused: {json}");
    Ok(())
}

#[test]
fn the_old_hosts_own_connection_to_the_new_host_is_not_taken_by_a_client() -> Result<()> {
    let site = Site::start(RULE_WWW)?;
    let _web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("slow.bin", 4 << 20)])?;
    site.wait_for_body(NEW_BODY)?;
    // A client whose port is one the old host also picks its own from
    // (Linux: 32768-60999), in a connection that stays open.
    let mut download = SlowGet::start(&site.net.client, CLIENT_IP, 45000)?;
    ensure!(
        wait_until(Duration::from_secs(10), || site.stats_json().is_ok_and(
            |j| json_number(&j, "www", "active_flows").is_ok_and(|n| n > 0)
        )),
        "the client's download never went through the redirect"
    );
    // The old host's own request to the new host from that port (a health
    // check, say) gets its own answer.
    let out = site.net.old.exec(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "5",
            "--local-port",
            "45000",
            &format!("http://{NEW_IP}/"),
        ],
    )?;
    ensure!(String::from_utf8(out.stdout)? == NEW_BODY);
    download.finish()?;
    Ok(())
}

/// GET http://OLD_IP/ from `addr`:`port`.
fn get_from(client: &Netns, addr: &str, port: u16) -> Result<String> {
    let port = port.to_string();
    let out = client.exec(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "5",
            "--interface",
            addr,
            "--local-port",
            &port,
            &format!("http://{OLD_IP}/"),
        ],
    )?;
    Ok(String::from_utf8(out.stdout)?)
}

/// A GET of slow.bin at 512 KiB/s from `addr`:`port`.
struct SlowGet {
    child: Child,
}

impl SlowGet {
    fn start(client: &Netns, addr: &str, port: u16) -> Result<Self> {
        let child = client
            .command("curl")
            .args(["-sS", "--fail", "--max-time", "30", "--limit-rate", "512K"])
            .args(["--interface", addr, "--local-port", &port.to_string()])
            .args(["-o", "/dev/null", &format!("http://{OLD_IP}/slow.bin")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting curl")?;
        Ok(Self { child })
    }

    fn finish(&mut self) -> Result<()> {
        let mut status = None;
        wait_until(Duration::from_secs(30), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        let status = status.context("curl did not finish")?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            anyhow::bail!("curl failed ({status}): {err}");
        }
        Ok(())
    }
}

impl Drop for SlowGet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
