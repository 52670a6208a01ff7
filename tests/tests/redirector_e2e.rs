//! The redirector end to end: a client that still has the old address keeps
//! reaching the release, which now runs on the new host, through the XDP
//! program on the old host's eth0. Real nginx on both hosts, real curl.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::bins;
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::wait_until;
use cutover_tests::redirector_site::{RULE_WWW, Site, curl, json_field, json_number, sha256};
use cutover_tests::topology::{NEW_IP, OLD_IP};
use redirector_common::{FLOW_FIN, FLOW_RST};

const NEW_BODY: &str = "served by the new host\n";
const NEXT_BODY: &str = "served by the next release on the new host\n";
const OLD_BODY: &str = "served by the old host\n";
const BIG: usize = 50 * 1024 * 1024;
/// Long enough, at the client's rate limit, to be in flight across a reload.
const SLOW: usize = 12 * 1024 * 1024;
/// The old host's own slow file differs in size, so it is not mistaken for
/// the new host's.
const OLD_SLOW: usize = SLOW + 4096;

const FAR_BODY: &str = "served by the new host behind another interface\n";

const NO_RULES: &str = "";
const RULE_WWW_NEXT: &str = r#"
[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:8081"
"#;

#[test]
fn a_client_with_the_old_address_reaches_the_new_release() -> Result<()> {
    // The daemon starts with nothing to redirect: the old host serves.
    let mut site = Site::start(NO_RULES)?;
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("big.bin", BIG)])?;
    let old_web = Nginx::start(
        &site.net.old,
        &[80, 8080],
        OLD_BODY,
        &[("slow.bin", OLD_SLOW)],
    )?;
    assert_eq!(site.get("/")?, OLD_BODY);

    // On a veth, `--xdp-mode auto` runs the program in generic mode.
    assert_eq!(site.xdp_mode()?, "xdpgeneric");

    // A download from the old host is in flight when the rule goes on.
    let mut slow = site.slow_download("slow.bin")?;
    site.reload(RULE_WWW)?;
    site.wait_for_body(NEW_BODY)?;
    ensure!(
        slow.running()?,
        "the slow download finished before the rule was on, so this run proves nothing about \
         connections opened before it: make SLOW bigger"
    );

    // The connection opened before the rule survives and completes intact.
    slow.finish(Duration::from_secs(120))?;
    assert_eq!(
        sha256(&slow.to)?,
        sha256(&old_web.file("slow.bin"))?,
        "a download that began before the rule was switched on"
    );

    // A large download through the redirector arrives intact.
    site.download_intact("big.bin", &new_web)?;

    // A port without a rule is still the old host's own.
    assert_eq!(
        curl(&site.net.client, &format!("http://{OLD_IP}:8080/"))?,
        OLD_BODY
    );
    // The new host, asked directly, is the same release.
    assert_eq!(
        curl(&site.net.client, &format!("http://{NEW_IP}/"))?,
        NEW_BODY
    );

    // `redirector stats` sees the rule's traffic from another process.
    let json = site.stats_json()?;
    let new_flows = json_number(&json, "www", "new_flows")?;
    let fwd_packets = json_number(&json, "www", "fwd_packets")?;
    let reply_bytes = json_number(&json, "www", "reply_bytes")?;
    // At least the switch-over check and the 50 MB download.
    assert!(new_flows >= 2, "new flows {new_flows} in {json}");
    assert!(fwd_packets > 0, "{json}");
    // The hairpin (in and out of eth0) is done in XDP, not by the kernel.
    assert!(json_number(&json, "www", "sent_back")? > 0, "{json}");
    assert!(
        reply_bytes >= BIG as u64,
        "reply bytes {reply_bytes} < 50 MB in {json}"
    );

    // The same figures as a table for people.
    let table = site.stats(&[])?;
    assert!(
        table.contains("www") && table.contains("198.18.0.2:80 -> 198.18.0.3:80"),
        "{table}"
    );

    // A broken config on SIGHUP is logged and the rules in force stay.
    site.reload("[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.300:80\"\n")?;
    ensure!(
        wait_until(Duration::from_secs(10), || site
            .redirector
            .log()
            .contains("redirector.toml:3")),
        "the rejected reload was not logged with file and line; log:\n{}",
        site.redirector.log()
    );
    site.redirector.assert_running()?;
    assert_eq!(site.get("/")?, NEW_BODY, "forwarding after a broken reload");

    // SIGTERM leaves the program forwarding (see redirector_restarts.rs);
    // `redirector detach` removes it, and the old host answers for itself.
    site.redirector.stop()?;
    assert_eq!(
        site.get("/")?,
        NEW_BODY,
        "forwarding stopped with the daemon"
    );
    site.detach()?;
    let link = site.net.old.ip(&["link", "show", "eth0"])?;
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdp"),
        "XDP still attached after detach: {link}"
    );
    assert!(
        !site.bpffs.maps().join("RULES").exists(),
        "pins left after detach"
    );
    assert_eq!(site.get("/")?, OLD_BODY);
    Ok(())
}

#[test]
fn in_native_mode_too_the_new_release_answers_and_downloads_arrive_intact() -> Result<()> {
    let site = Site::start_native(RULE_WWW)?;
    assert_eq!(site.xdp_mode()?, "xdp");
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("big.bin", BIG)])?;
    let _old_web = Nginx::start(&site.net.old, &[80, 8080], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;

    site.download_intact("big.bin", &new_web)?;
    assert_eq!(
        curl(&site.net.client, &format!("http://{OLD_IP}:8080/"))?,
        OLD_BODY,
        "a port without a rule"
    );
    let json = site.stats_json()?;
    assert!(json_number(&json, "www", "sent_back")? > 0, "{json}");
    Ok(())
}

#[test]
fn a_first_syn_whose_next_hop_is_unresolved_still_connects() -> Result<()> {
    let site = Site::start(RULE_WWW)?;
    let _new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;

    // A SYN whose next hop the old host has not resolved yet is handed to
    // the kernel, which resolves it and forwards: the client still connects.
    // The daemon re-resolves rule destinations now and then, so the flush
    // may be undone before the SYN arrives: try a few times.
    let mut slow_path_taken = 0;
    for _ in 0..5 {
        site.net.old.ip(&["neigh", "flush", "all"])?;
        assert_eq!(site.get("/")?, NEW_BODY, "with the neighbour table flushed");
        slow_path_taken = json_number(&site.stats_json()?, "www", "pass_no_neigh").unwrap_or(0);
        if slow_path_taken > 0 {
            break;
        }
    }
    assert!(slow_path_taken > 0, "the NO_NEIGH path was never taken");
    // The program says so in the daemon's log (aya-log, debug level).
    let said = "no neighbour entry for the next hop to 198.18.0.3 yet";
    ensure!(
        wait_until(Duration::from_secs(5), || site
            .redirector
            .log()
            .contains(said)),
        "the program's record of the NO_NEIGH path is not in the log:\n{}",
        site.redirector.log()
    );
    Ok(())
}

#[test]
fn a_client_of_a_dead_new_host_is_told_at_once() -> Result<()> {
    let site = Site::start(RULE_WWW)?;
    let _new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;

    // The new host dies: nothing answers ARP for it any more. Once the old
    // host's neighbour entry is gone, its stack reports the redirected SYN
    // as host unreachable to the SYN's source (the old host itself); the
    // program on loopback translates that back to the client, as conntrack
    // would, and the client's connect fails then rather than after its own
    // timeout.
    site.net.new.ip(&["link", "set", "eth0", "down"])?;
    site.net.old.ip(&["neigh", "flush", "to", NEW_IP])?;
    site.assert_told_unreachable(&format!("http://{OLD_IP}/"), "www")
}

#[test]
fn a_connection_the_lru_evicts_whole_is_counted_and_logged() -> Result<()> {
    let site = Site::start(RULE_WWW)?;
    let _new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("slow.bin", SLOW)])?;
    site.wait_for_body(NEW_BODY)?;
    let _slow = site.slow_download("slow.bin")?;
    // Let a collection pass see the connection open (passes run every
    // second here).
    std::thread::sleep(Duration::from_millis(2500));

    // Both entries vanish at once, as an LRU eviction under pressure takes
    // them: no snapshot shows half a connection.
    let flows = site.bpffs.maps().join("FLOWS");
    let flows = flows.to_str().context("path")?;
    let dump = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned", flows])
        .output()?;
    let dump = String::from_utf8(dump.stdout)?;
    // The download's two entries: neither has seen a FIN or a RST
    // (`Flow::tcp_flags`, byte 17 of the value); the GETs before it have.
    let keys: Vec<Vec<String>> = bpftool_entries(&dump)
        .into_iter()
        .filter(|(_, value)| {
            u8::from_str_radix(&value[17], 16).is_ok_and(|f| f & (FLOW_FIN | FLOW_RST) == 0)
        })
        .map(|(key, _)| key)
        .collect();
    ensure!(
        keys.len() == 2,
        "expected one open connection in FLOWS: {dump}"
    );
    for key in &keys {
        let mut args = vec!["map", "delete", "pinned", flows, "key", "hex"];
        args.extend(key.iter().map(String::as_str));
        let out = Command::new("bpftool").args(&args).output()?;
        ensure!(
            out.status.success(),
            "bpftool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    ensure!(
        wait_until(Duration::from_secs(10), || site
            .stats_json()
            .and_then(|s| json_number(&s, "www", "evictions"))
            .is_ok_and(|n| n >= 1)),
        "the eviction was not counted: {}",
        site.stats_json()?
    );
    ensure!(
        site.redirector.log().contains("to LRU eviction"),
        "the eviction was not logged: {}",
        site.redirector.log()
    );
    Ok(())
}

/// The entries of `bpftool -j map dump`: key and value, each as its hex
/// bytes without `0x`.
fn bpftool_entries(dump: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let bytes = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|b| {
                b.trim()
                    .trim_matches('"')
                    .trim_start_matches("0x")
                    .to_string()
            })
            .collect()
    };
    dump.split("\"key\":[")
        .skip(1)
        .filter_map(|rest| {
            let (key, rest) = rest.split_once(']')?;
            let value = rest.split_once("\"value\":[")?.1.split_once(']')?.0;
            Some((bytes(key), bytes(value)))
        })
        .collect()
}

#[test]
fn a_destination_without_a_route_is_reported_when_the_rule_goes_in() -> Result<()> {
    // 198.19.254.0/24: in the benchmarking range, routed nowhere here.
    let site = Site::start(
        "[[rule]]\nname = \"lost\"\nfrom = \"198.18.0.2:80\"\nto = \"198.19.254.3:80\"\n",
    )?;
    let log = site.redirector.log();
    ensure!(
        log.contains("has no route to 198.19.254.3"),
        "no word about the unroutable destination:\n{log}"
    );
    // And the rule is in force: it applies once a route appears.
    ensure!(site.stats(&[])?.contains("lost"));
    Ok(())
}

#[test]
fn a_reload_moves_new_connections_and_lets_running_downloads_finish() -> Result<()> {
    let site = Site::start(RULE_WWW)?;
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("slow.bin", SLOW)])?;
    let _next_web = Nginx::start(&site.net.new, &[8081], NEXT_BODY, &[])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;

    // A download through the redirector is running while the rule changes.
    let mut slow = site.slow_download("slow.bin")?;

    // A changed destination applies to new connections only.
    site.reload(RULE_WWW_NEXT)?;
    site.wait_for_body(NEXT_BODY)?;
    ensure!(
        slow.running()?,
        "the slow download finished before the reload: make SLOW bigger"
    );

    // A removed rule hands new connections back to the old host, and the
    // connections it already forwards drain.
    site.reload(NO_RULES)?;
    site.wait_for_body(OLD_BODY)?;
    ensure!(
        slow.running()?,
        "the slow download finished before the rule was removed: make SLOW bigger"
    );
    let json = site.stats_json()?;
    assert!(
        json_field(&json, "www", "draining")? == "true",
        "a removed rule with a flow left is shown as draining: {json}"
    );
    assert_eq!(
        json_number(&json, "www", "active_clients")?,
        1,
        "the one client still arriving: {json}"
    );
    slow.finish(Duration::from_secs(120))?;
    assert_eq!(
        sha256(&slow.to)?,
        sha256(&new_web.file("slow.bin"))?,
        "a download through a rule that changed, then went away"
    );
    Ok(())
}

#[test]
fn stopping_with_a_drain_lets_forwarded_downloads_finish() -> Result<()> {
    let mut site = Site::start_with_args(RULE_WWW, &["--drain-on-stop", "120"])?;
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("slow.bin", SLOW)])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;
    let mut slow = site.slow_download("slow.bin")?;

    // SIGTERM: new connections reach the old host itself at once...
    site.redirector.signal(15)?;
    site.wait_for_body(OLD_BODY)?;
    ensure!(
        slow.running()?,
        "the slow download finished before the drain began: make SLOW bigger"
    );
    // ... while the forwarded download runs to its end, intact.
    slow.finish(Duration::from_secs(120))?;
    assert_eq!(sha256(&slow.to)?, sha256(&new_web.file("slow.bin"))?);

    // Then the daemon detaches by itself and exits 0.
    let exit = site.redirector.wait_exit(Duration::from_secs(30))?;
    assert!(
        exit.contains("exit status: 0"),
        "{exit}; log:\n{}",
        site.redirector.log()
    );
    assert!(
        site.redirector.log().contains("drained"),
        "{}",
        site.redirector.log()
    );
    let link = site.net.old.ip(&["link", "show", "eth0"])?;
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"));
    Ok(())
}

#[test]
fn a_new_host_behind_another_interface_is_reached_through_the_devmap() -> Result<()> {
    let site = Site::start_with_far_host(
        r#"
[[rule]]
name = "far"
from = "198.18.0.2:80"
to = "198.18.1.3:80"
"#,
    )?;
    let far = site.far.as_ref().context("no far host")?;
    let far_web = Nginx::start(far, &[80], FAR_BODY, &[("big.bin", BIG)])?;
    site.wait_for_body(FAR_BODY)?;

    // 50 MB from a host behind another interface.
    site.download_intact("big.bin", &far_web)?;
    // Both directions left through the other interface: XDP_REDIRECT.
    let json = site.stats_json()?;
    let redirected = json_number(&json, "far", "redirected")?;
    let packets =
        json_number(&json, "far", "fwd_packets")? + json_number(&json, "far", "reply_packets")?;
    assert!(
        redirected > 0 && redirected + 16 >= packets,
        "{redirected} of {packets} packets redirected: {json}"
    );
    Ok(())
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_config_and_names_file_line_and_field() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("cutover-bad").tempdir()?;
    std::fs::write(
        scratch.path().join("redirector.toml"),
        "[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.3:0\"\n",
    )?;
    // In a throw-away namespace, so that a daemon that wrongly started would
    // touch nothing of the host's.
    let host = Netns::new("cobad")?;
    let out = host
        .command(bins::path("redirector"))
        .args(["run", "--iface", "lo", "--workspace"])
        .arg(scratch.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a bad config: {stderr}");
    assert!(
        stderr.contains("redirector.toml:3") && stderr.contains("rule[0].to"),
        "{stderr}"
    );

    let check = Command::new(bins::path("redirector"))
        .arg("check")
        .arg(scratch.path())
        .output()?;
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("rule[0].to"));

    // A `to` that is one of the old host's own addresses: packets sent
    // there would be delivered to it, never forwarded.
    host.ip(&["addr", "add", "198.18.9.9/32", "dev", "lo"])?;
    std::fs::write(
        scratch.path().join("redirector.toml"),
        "[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.9.9:80\"\n",
    )?;
    let out = host
        .command(bins::path("redirector"))
        .args(["run", "--iface", "lo", "--no-api", "--workspace"])
        .arg(scratch.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a local `to`: {stderr}");
    assert!(
        stderr.contains("198.18.9.9:80 is an address of this host"),
        "{stderr}"
    );

    // Fixed, the same workspace checks out and lists its rule.
    std::fs::write(scratch.path().join("redirector.toml"), RULE_WWW)?;
    let check = Command::new(bins::path("redirector"))
        .arg("check")
        .arg(scratch.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(
        stdout.contains("www: 198.18.0.2:80 -> 198.18.0.3:80"),
        "{stdout}"
    );
    Ok(())
}
