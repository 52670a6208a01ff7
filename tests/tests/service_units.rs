//! Running the daemons as services: the systemd units in deploy/systemd
//! pass `systemd-analyze verify`; dnsd speaks systemd's notify protocol
//! (ready once serving, reloading and ready again, stopping, watchdog
//! keep-alives) to a socket the test holds, as systemd would; `dnsd
//! reload` and `redirector reload` (the units' ExecReload=) return when the
//! reload is done and fail when it was refused; and dnsd gives up what it
//! needed to bind port 53: root becomes `--user`, an unprivileged dnsd
//! with CAP_NET_BIND_SERVICE drops it, on every thread.
//!
//! Needs root; the daemons are `target/<profile>/{dnsd,redirector}`
//! (`cargo build --bins`).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::bins;
use cutover_tests::dnsd::{DnsdWorkspace, add_example_zone, kdig_short, loopback};
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::redirector_site::{RULE_WWW, Site};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd");

#[test]
fn the_units_pass_systemd_analyze_verify() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("cutover-units").tempdir()?;
    let bin_dir = bins::path("dnsd")
        .parent()
        .context("the binaries' directory")?
        .to_path_buf();
    // As `cargo xtask install --prefix` writes them: the binaries' paths
    // are the only thing that changes.
    for unit in ["dnsd.service", "redirector@.service"] {
        let text = std::fs::read_to_string(Path::new(UNITS).join(unit))?;
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        std::fs::write(dir.path().join(unit), text)?;
    }
    for unit in ["dnsd.service", "redirector@eth0.service"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(unit))
            .output()
            .context("running systemd-analyze")?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Unknown keys are only warned about: any word on our unit fails.
        ensure!(
            out.status.success() && !said.contains(unit.replace("eth0", "").as_str()),
            "systemd-analyze verify {unit}: {said}"
        );
    }
    Ok(())
}

/// The notify socket systemd would hold: every message dnsd sends.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Result<Self> {
        let socket = UnixDatagram::bind(path)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Self {
            socket,
            seen: Vec::new(),
        })
    }

    /// Reads until a message has a line `line`, within `limit`; returns
    /// the messages read.
    fn until(&mut self, line: &str, limit: Duration) -> Result<Vec<String>> {
        let start = Instant::now();
        let mut read = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(message.clone());
                let done = message.lines().any(|l| l == line);
                read.push(message);
                if done {
                    return Ok(read);
                }
            }
        }
        bail!("no {line} within {limit:?}; read {read:?}");
    }
}

fn dnsd_reload(ws: &Path) -> Result<std::process::Output> {
    Command::new(bins::path("dnsd"))
        .args(["reload", "--timeout", "30", "--workspace"])
        .arg(ws)
        .output()
        .context("running dnsd reload")
}

#[test]
fn dnsd_tells_systemd_it_is_ready_reloading_and_stopping_and_feeds_the_watchdog() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    add_example_zone(ws.path())?;
    ws.toml("")?;
    let socket_path = ws.path().with_extension("notify");
    let mut notes = Notifications::bind(&socket_path)?;
    let ip = loopback(63);
    let addr = SocketAddr::new(ip, cutover_tests::dns_peers::free_port(ip)?);
    let mut cmd = Command::new(bins::path("dnsd"));
    cmd.arg("--workspace")
        .arg(ws.path())
        .args(["--listen", &addr.to_string(), "--no-api"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let dnsd = Daemon::spawn("dnsd", cmd)?;

    let ready = notes.until("READY=1", Duration::from_secs(15))?;
    // Ready means serving: the first answer needs no retry.
    ensure!(
        !kdig_short(addr, "ns1.example.test", "A")?.is_empty(),
        "READY=1 before dnsd answers"
    );
    ensure!(
        ready.iter().any(|m| m.contains("STATUS=serving")),
        "{ready:?}"
    );
    // 200 ms watchdog: a keep-alive every 100 ms.
    let start = Instant::now();
    let mut fed = 0;
    while start.elapsed() < Duration::from_secs(1) {
        notes.until("WATCHDOG=1", Duration::from_secs(1))?;
        fed += 1;
    }
    ensure!(fed >= 5, "{fed} keep-alives in a second");

    // A reload: `dnsd reload` returns once it is done, and systemd hears
    // RELOADING=1 (with the time) then READY=1.
    let out = dnsd_reload(ws.path())?;
    ensure!(out.status.success(), "{out:?}");
    let reload = notes.until("READY=1", Duration::from_secs(5))?;
    let joined = reload.join("");
    ensure!(
        joined.contains("RELOADING=1") && joined.contains("MONOTONIC_USEC="),
        "{reload:?}"
    );

    // A refused reload: `dnsd reload` fails with dnsd's reason, and the
    // previous state keeps serving.
    ws.toml("[server\n")?;
    let out = dnsd_reload(ws.path())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("refused the reload") && err.contains("dnsd.toml"),
        "{out:?}"
    );
    ensure!(!kdig_short(addr, "ns1.example.test", "A")?.is_empty());

    dnsd.signal(15)?;
    notes.until("STOPPING=1", Duration::from_secs(5))?;
    Ok(())
}

/// A thread's name, uid line and capability sets (effective, permitted,
/// ambient), as /proc/PID/task/TID/status gives them.
type Thread = (String, String, String, String, String);

/// Each thread's uid and capability sets, from /proc/PID/task/*/status.
fn threads(pid: u32) -> Result<Vec<Thread>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A blocking-pool thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(entry?.path().join("status")) else {
            continue;
        };
        let field = |name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        out.push((
            field("Name:"),
            field("Uid:"),
            field("CapEff:"),
            field("CapPrm:"),
            field("CapAmb:"),
        ));
    }
    Ok(out)
}

/// Starts dnsd run by `wrapper` on port 53 of `ip` (only root or
/// CAP_NET_BIND_SERVICE may bind it) with `args` more, for a workspace
/// that belongs to nobody; returns once it answers.
fn dnsd_on_port_53(wrapper: &[&str], ip: IpAddr, args: &[&str]) -> Result<(Daemon, DnsdWorkspace)> {
    let ws = DnsdWorkspace::new()?;
    add_example_zone(ws.path())?;
    ws.toml("")?;
    let status = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(ws.path())
        .status()?;
    ensure!(status.success(), "chown");
    // nobody must reach the workspace through its parents too.
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(bins::path("dnsd"))
        .arg("--workspace")
        .arg(ws.path())
        .args(["--listen", &SocketAddr::new(ip, 53).to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.path().with_extension("log"))?);
    let dnsd = Daemon::spawn("dnsd", cmd)?;
    let addr = SocketAddr::new(ip, 53);
    ensure!(
        wait_until(Duration::from_secs(15), || kdig_short(
            addr,
            "ns1.example.test",
            "A"
        )
        .is_ok_and(|a| !a.is_empty())),
        "dnsd does not answer on port 53; log:\n{}",
        std::fs::read_to_string(ws.path().with_extension("log")).unwrap_or_default()
    );
    Ok((dnsd, ws))
}

fn assert_unprivileged(pid: u32) -> Result<()> {
    // The API thread and the UDP threads start after the first check;
    // give the last of them a moment.
    std::thread::sleep(Duration::from_millis(200));
    let all = threads(pid)?;
    ensure!(all.len() > 2, "{all:?}");
    let nobody = "65534 65534 65534 65534";
    let none = "0000000000000000";
    for (name, uid, eff, prm, amb) in &all {
        ensure!(
            uid == nobody && eff == none && prm == none && amb == none,
            "thread {name}: uid {uid}, CapEff {eff}, CapPrm {prm}, CapAmb {amb} (all: {all:?})"
        );
    }
    let names: HashSet<&str> = all.iter().map(|t| t.0.as_str()).collect();
    ensure!(names.iter().any(|n| n.starts_with("dnsd-udp")), "{names:?}");
    Ok(())
}

#[test]
fn dnsd_started_as_root_with_user_binds_port_53_then_runs_as_that_user() -> Result<()> {
    let api = SocketAddr::new(loopback(64), 8053).to_string();
    let (dnsd, ws) = dnsd_on_port_53(&["env"], loopback(64), &["--api", &api, "--user", "nobody"])?;
    assert_unprivileged(dnsd.pid())?;
    // Everything dnsd made in the workspace is nobody's (the API token, the
    // pid file, the reload record), and it still writes there: a reload is
    // recorded.
    let out = dnsd_reload(ws.path())?;
    ensure!(out.status.success(), "{out:?}");
    let made = Command::new("find")
        .arg(ws.path())
        .args(["-not", "-user", "nobody"])
        .output()?;
    let not_nobodys = String::from_utf8_lossy(&made.stdout);
    ensure!(not_nobodys.trim().is_empty(), "not nobody's: {not_nobodys}");
    ensure!(ws.path().join(".cutover/api-token").exists());
    Ok(())
}

#[test]
fn dnsd_with_an_ambient_capability_gives_it_up_once_port_53_is_bound() -> Result<()> {
    let setpriv = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+net_bind_service",
        "--ambient-caps=+net_bind_service",
    ];
    // The API (an unprivileged port) is served too, from its own thread.
    let api = SocketAddr::new(loopback(65), 8053).to_string();
    let (dnsd, _ws) = dnsd_on_port_53(&setpriv, loopback(65), &["--api", &api])?;
    assert_unprivileged(dnsd.pid())?;
    Ok(())
}

#[test]
fn redirector_reload_returns_once_the_rules_are_in_force_and_fails_when_refused() -> Result<()> {
    let site = Site::start(RULE_WWW)?;
    let reload = || -> Result<std::process::Output> {
        Command::new(bins::path("redirector"))
            .args([
                "reload",
                "--iface",
                "eth0",
                "--timeout",
                "30",
                "--workspace",
            ])
            .arg(&site.workspace)
            .output()
            .context("running redirector reload")
    };
    let out = reload()?;
    ensure!(out.status.success(), "{out:?}");
    std::fs::write(
        site.workspace.join("redirector.toml"),
        "[[rule]]\nname = \n",
    )?;
    let out = reload()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("refused the reload"),
        "{out:?}"
    );
    // With the daemon's own reason, naming the file.
    ensure!(err.contains("redirector.toml"), "{out:?}");
    // Not running on that interface: said at once.
    let out = Command::new(bins::path("redirector"))
        .args(["reload", "--iface", "eth9", "--workspace"])
        .arg(&site.workspace)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("does not run"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn the_redirector_forwards_as_an_unprivileged_user_with_the_units_four_capabilities() -> Result<()>
{
    use cutover_tests::bpffs::Bpffs;
    use cutover_tests::nginx::Nginx;
    use cutover_tests::redirector::Redirector;
    use cutover_tests::redirector_site::curl;
    use cutover_tests::topology::{OLD_IP, Topology};

    let net = Topology::new()?;
    let _new_web = Nginx::start(&net.new, &[80], "new\n", &[])?;
    let _old_web = Nginx::start(&net.old, &[80], "old\n", &[])?;
    let scratch = tempfile::Builder::new()
        .prefix("cutover-unpriv")
        .tempdir()?;
    let bpffs = Bpffs::mount(&scratch.path().join("bpf"))?;
    let workspace = scratch.path().join("ws");
    std::fs::create_dir_all(&workspace)?;
    std::fs::write(workspace.join("redirector.toml"), RULE_WWW)?;
    // As the unit's ExecStartPre= and RuntimeDirectory= prepare them: the
    // workspace, the pin directory and /run/cutover belong to the user.
    std::fs::create_dir_all("/run/cutover")?;
    std::fs::create_dir_all(bpffs.pins())?;
    // The host's /run/cutover goes back to root however the test ends.
    struct RootAgain;
    impl Drop for RootAgain {
        fn drop(&mut self) {
            let _ = Command::new("chown")
                .args(["-R", "root:root", "/run/cutover"])
                .status();
        }
    }
    let _root_again = RootAgain;
    for path in [
        scratch.path(),
        bpffs.pins().as_path(),
        Path::new("/run/cutover"),
    ] {
        let status = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(path)
            .status()?;
        ensure!(status.success(), "chown {}", path.display());
    }
    // The unit's four, less CAP_SYS_RESOURCE where this machine's bounding
    // set lacks it (only kernels before 5.11 charge BPF maps to memlock).
    let bounding = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("CapBnd")?;
    const CAP_SYS_RESOURCE: u32 = 24;
    let caps = if bounding & (1 << CAP_SYS_RESOURCE) != 0 {
        "+bpf,+net_admin,+perfmon,+sys_resource"
    } else {
        "+bpf,+net_admin,+perfmon"
    };
    let (inh, amb) = (
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
    );
    let setpriv = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        &inh,
        &amb,
    ];
    let mut redirector = Redirector::start_wrapped(
        &setpriv,
        &net.old,
        &["eth0"],
        &workspace,
        &bpffs.pins(),
        scratch.path(),
        &[],
    )?;
    let url = format!("http://{OLD_IP}/");
    ensure!(
        wait_until(Duration::from_secs(10), || curl(&net.client, &url)
            .is_ok_and(|b| b == "new\n")),
        "not forwarded; log:\n{}",
        redirector.log()
    );
    // A reload as nobody: the rule removed, the old host serves again.
    std::fs::write(workspace.join("redirector.toml"), "")?;
    redirector.signal(1)?;
    ensure!(
        wait_until(Duration::from_secs(10), || curl(&net.client, &url)
            .is_ok_and(|b| b == "old\n")),
        "the reload did not apply; log:\n{}",
        redirector.log()
    );
    redirector.assert_running()?;
    Ok(())
}
