//! `cargo xtask demo`: the mission in one minute, on three hosts in network
//! namespaces. www.example.test moves from the old host to the new one: the
//! redirect is switched on, the record is flipped, a client that cached the
//! old address still reaches the new release; then everything is rolled
//! back. Every change goes through the versioned workspace and a SIGHUP.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use cutover_tests::bpffs::Bpffs;
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::topology::{NEW_IP, OLD_IP, Topology};
use cutover_workspace::{FileChange, Workspace};

use crate::util::{cargo, exec, release_bin, root};

const DNS: &str = "127.0.0.1";
const DNS_PORT: &str = "5300";
const SIGHUP: i32 = 1;

pub fn run() -> Result<()> {
    exec(cargo().args(["build", "--release", "--bins"]))?;

    say("three hosts on one switch: client 198.18.0.1, old 198.18.0.2, new 198.18.0.3");
    let net = Topology::new()?;
    let _old_web = Nginx::start(&net.old, &[80], "release 1, served by the old host\n", &[])?;
    let _new_web = Nginx::start(&net.new, &[80], "release 2, served by the new host\n", &[])?;

    let dir = tempfile::Builder::new().prefix("cutover-demo").tempdir()?;
    let example = root().join("examples/workspace");
    std::fs::create_dir_all(dir.path().join("zones"))?;
    std::fs::copy(
        example.join("zones/example.test.zone"),
        dir.path().join("zones/example.test.zone"),
    )?;
    std::fs::write(dir.path().join("dnsd.toml"), dnsd_toml(OLD_IP))?;
    let ws = Workspace::open(dir.path())?;
    say(&format!("workspace {}", dir.path().display()));

    // The DNS server runs next to the client here, for brevity.
    let mut dnsd_cmd = net.client.command(release_bin("dnsd"));
    dnsd_cmd.arg("--workspace").arg(dir.path());
    let dnsd = Daemon::spawn("dnsd", dnsd_cmd)?;
    let bpffs = Bpffs::mount(&dir.path().join(".bpffs"))?;
    let mut redirector_cmd = net.old.command(release_bin("redirector"));
    redirector_cmd
        .args(["run", "--iface", "eth0", "--workspace"])
        .arg(dir.path())
        .arg("--pin-dir")
        .arg(bpffs.pins());
    let redirector = Daemon::spawn("redirector", redirector_cmd)?;
    if !wait_until(Duration::from_secs(20), || {
        bpffs.maps().join("RULES").exists()
    }) {
        bail!("the redirector did not start within 20 s");
    }
    if !wait_until(Duration::from_secs(10), || {
        resolve(&net.client).is_ok_and(|a| a == OLD_IP)
    }) {
        bail!("dnsd did not answer within 10 s");
    }

    say("before: the name points at the old host");
    show_dns(&net.client)?;
    show_http(&net.client, OLD_IP)?;
    // Record the state as found, so that the rollback has a target.
    let before = ws.commit(&[], "before the move", |_| Ok(()))?.number;

    say("step 1: switch on the redirect OLD:80 -> NEW:80 on the old host");
    let rule = format!("[[rule]]\nname = \"www\"\nfrom = \"{OLD_IP}:80\"\nto = \"{NEW_IP}:80\"\n");
    let g = ws.commit(
        &[FileChange {
            path: "redirector.toml".into(),
            content: Some(rule.into_bytes()),
        }],
        "redirect www to the new host",
        |_| Ok(()),
    )?;
    say(&format!(
        "  workspace generation {}: {}",
        g.number, g.message
    ));
    redirector.signal(SIGHUP)?;
    std::thread::sleep(Duration::from_millis(500));
    say("  a client that cached the old address:");
    show_http(&net.client, OLD_IP)?;

    say("step 2: flip the record to the new host");
    let g = ws.commit(
        &[FileChange {
            path: "dnsd.toml".into(),
            content: Some(dnsd_toml(NEW_IP).into_bytes()),
        }],
        "www to the new host",
        |_| Ok(()),
    )?;
    say(&format!(
        "  workspace generation {}: {}",
        g.number, g.message
    ));
    dnsd.signal(SIGHUP)?;
    if !wait_until(Duration::from_secs(5), || {
        resolve(&net.client).is_ok_and(|a| a == NEW_IP)
    }) {
        bail!("dnsd did not switch to the new address");
    }
    show_dns(&net.client)?;
    show_http(&net.client, NEW_IP)?;

    say("step 3: watch the old host drain (redirector stats on the old host)");
    let out = net
        .old
        .command(release_bin("redirector"))
        .arg("stats")
        .arg("--pin-dir")
        .arg(bpffs.pins())
        .output()
        .context("redirector stats")?;
    if !out.status.success() {
        bail!("redirector stats: {}", String::from_utf8_lossy(&out.stderr));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));

    say("rollback: restore the workspace as it was before step 1");
    let g = ws.rollback(before, "rollback www to the old host")?;
    say(&format!(
        "  workspace generation {}: {}",
        g.number, g.message
    ));
    redirector.signal(SIGHUP)?;
    dnsd.signal(SIGHUP)?;
    if !wait_until(Duration::from_secs(5), || {
        resolve(&net.client).is_ok_and(|a| a == OLD_IP)
    }) {
        bail!("dnsd did not switch back to the old address");
    }
    std::thread::sleep(Duration::from_millis(500));
    show_dns(&net.client)?;
    show_http(&net.client, OLD_IP)?;

    say("generations kept in the workspace:");
    for g in ws.generations()? {
        println!("  {:>3}  {}", g.number, g.message);
    }
    say("done; removing the namespaces");
    Ok(())
}

fn dnsd_toml(address: &str) -> String {
    format!(
        "[server]\nlisten = [\"{DNS}:{DNS_PORT}\"]\n\n[[service]]\nname = \"www.example.test.\"\naddresses = [\"{address}\"]\nttl = 60\n"
    )
}

fn say(line: &str) {
    println!("\n== {line}");
}

fn resolve(client: &Netns) -> Result<String> {
    let out = client.exec(
        "kdig",
        &[
            "@127.0.0.1",
            "-p",
            DNS_PORT,
            "+short",
            "+timeout=1",
            "+retry=0",
            "www.example.test",
            "A",
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn show_dns(client: &Netns) -> Result<()> {
    let out = client.exec(
        "kdig",
        &[
            "@127.0.0.1",
            "-p",
            DNS_PORT,
            "+noall",
            "+answer",
            "www.example.test",
            "A",
        ],
    )?;
    print!(
        "  $ kdig www.example.test A\n  {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

fn show_http(client: &Netns, ip: &str) -> Result<()> {
    let out = client.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "--resolve",
            &format!("www.example.test:80:{ip}"),
            "http://www.example.test/",
        ],
    )?;
    print!(
        "  $ curl http://www.example.test/   (connecting to {ip})\n  {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}
