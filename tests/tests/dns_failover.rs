//! DNS failover with real backends: three addresses of a service on the
//! new host, each an HTTP server the test fails, revives or flaps; dnsd in
//! the client's namespace checks them and answers with those in use.
//!
//! Needs root; the daemon is `target/<profile>/dnsd` (`cargo build --bins`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::bins;
use cutover_tests::http_backend::Backend;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::topology::Topology;

const NAME: &str = "www.example.test";
const ADDRESSES: [&str; 3] = ["198.18.0.3", "198.18.0.4", "198.18.0.5"];
/// Checks every 300 ms; out after two failures, back after two passes.
const QUICK: &str = "[service.health]\ncheck = \"http\"\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\ndegraded_ttl = 5\n";

struct Site {
    net: Topology,
    backends: Vec<Backend>,
    ws: tempfile::TempDir,
    dnsd: Daemon,
}

impl Site {
    /// The service with `addresses` (TOML array items) and `health`, its
    /// backends on the new host, dnsd on the client's host.
    fn start(addresses: &[&str], health: &str) -> Result<Self> {
        Self::start_with(addresses, health, "")
    }

    /// With `extra` appended to dnsd.toml.
    fn start_with(addresses: &[&str], health: &str, extra: &str) -> Result<Self> {
        let net = Topology::new()?;
        for a in &ADDRESSES[1..] {
            net.new
                .ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        let mut backends = Vec::new();
        for a in ADDRESSES {
            backends.push(Backend::start(&net.new, format!("{a}:80").parse()?)?);
        }
        let ws = tempfile::Builder::new()
            .prefix("cutover-failover")
            .tempdir()?;
        cutover_tests::dnsd::add_example_zone(ws.path())?;
        std::fs::write(
            ws.path().join("dnsd.toml"),
            format!("{extra}{}", service_toml(addresses, health)),
        )?;
        let dnsd = spawn_dnsd(&net, ws.path())?;
        let site = Self {
            net,
            backends,
            ws,
            dnsd,
        };
        ensure!(
            wait_until(Duration::from_secs(10), || site.answer().is_ok()),
            "dnsd does not answer"
        );
        Ok(site)
    }

    /// `GET /v1/services` through the control API.
    fn services(&self) -> Result<Vec<cutover_control_api::contract::Service>> {
        let token = std::fs::read_to_string(self.ws.path().join(".cutover/api-token"))?;
        let out = self.net.client.exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "-H",
                &format!("Authorization: Bearer {}", token.trim()),
                "http://127.0.0.1:8053/v1/services",
            ],
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.ws.path().join("dnsd.log")).unwrap_or_default()
    }

    fn backend(&self, address: &str) -> &Backend {
        let addr: SocketAddr = format!("{address}:80").parse().expect("an address");
        self.backends
            .iter()
            .find(|b| b.addr == addr)
            .expect("a backend")
    }

    fn kdig(&self, qtype: &str) -> Result<String> {
        let out = self.net.client.exec(
            "kdig",
            &[
                "@127.0.0.1",
                "-p",
                "5300",
                "+noall",
                "+answer",
                "+timeout=1",
                "+retry=0",
                NAME,
                qtype,
            ],
        )?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The addresses answered (sorted) and their TTL.
    fn answer(&self) -> Result<(Vec<String>, u32)> {
        let text = self.kdig("A")?;
        let mut addresses = Vec::new();
        let mut ttl = 0;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [_, t, _, "A", address] = words.as_slice() {
                ttl = t.parse()?;
                addresses.push(address.to_string());
            }
        }
        if addresses.is_empty() {
            bail!("no A records: {text}");
        }
        addresses.sort();
        Ok((addresses, ttl))
    }

    fn serial(&self) -> Result<u32> {
        let out = self.net.client.exec(
            "kdig",
            &["@127.0.0.1", "-p", "5300", "+short", "example.test", "SOA"],
        )?;
        let text = String::from_utf8(out.stdout)?;
        text.split_whitespace()
            .nth(2)
            .context("no SOA")?
            .parse()
            .context("serial")
    }

    /// Waits up to `limit` until the answer is exactly `want`; how long it
    /// took.
    fn wait_for(&self, want: &[&str], limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < limit {
            let got = self.answer()?.0;
            if got == want {
                return Ok(started.elapsed());
            }
            last = Some(got);
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "after {limit:?} the answer is {last:?}, not {want:?}; log:\n{}",
            self.log()
        )
    }
}

/// dnsd in the client's namespace, logging to WS/dnsd.log (appended).
fn spawn_dnsd(net: &Topology, ws: &std::path::Path) -> Result<Daemon> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ws.join("dnsd.log"))?;
    let mut cmd = net.client.command(bins::path("dnsd"));
    cmd.arg("--workspace")
        .arg(ws)
        .args(["--listen", "127.0.0.1:5300", "--api", "127.0.0.1:8053"])
        .stderr(log);
    Daemon::spawn("dnsd", cmd)
}

fn service_toml(addresses: &[&str], health: &str) -> String {
    format!(
        "[[service]]\nname = \"{NAME}.\"\nttl = 60\naddresses = [{}]\n{health}",
        addresses.join(", ")
    )
}

fn quoted(addresses: &[&str]) -> Vec<String> {
    addresses.iter().map(|a| format!("\"{a}\"")).collect()
}

#[test]
fn a_dead_address_leaves_the_answers_and_comes_back_after_rise() -> Result<()> {
    let all = quoted(&ADDRESSES);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let site = Site::start(&all, QUICK)?;
    // Addresses start up: answers do not wait for a first check.
    assert_eq!(site.answer()?, (ADDRESSES.map(String::from).to_vec(), 60));
    ensure!(
        wait_until(Duration::from_secs(5), || site
            .backends
            .iter()
            .all(|b| b.requests() >= 2)),
        "not every address is checked"
    );
    let serial = site.serial()?;

    // Out within interval x fall (0.6 s) plus a check's timeout; the TTL
    // drops to degraded_ttl, and the zone has a new serial.
    site.backend("198.18.0.4").set_status(503);
    let took = site.wait_for(&["198.18.0.3", "198.18.0.5"], Duration::from_secs(5))?;
    ensure!(took < Duration::from_secs(2), "out only after {took:?}");
    assert_eq!(site.answer()?.1, 5, "degraded TTL");
    let degraded = site.serial()?;
    ensure!(degraded > serial, "serial {serial} -> {degraded}");
    // The API says which address is out and why.
    let services = site.services()?;
    let dead = services[0]
        .members
        .iter()
        .find(|m| m.address == "198.18.0.4")
        .context("no member 198.18.0.4")?;
    let health = dead.health.as_ref().context("no health")?;
    ensure!(
        !dead.in_use
            && !health.up
            && health
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("503")),
        "{dead:?}"
    );
    // Answers are counted per address: the live ones have led some.
    let led: u64 = services[0].members.iter().map(|m| m.answers).sum();
    ensure!(led > 0, "no answer counted: {:?}", services[0].members);

    // Back after rise passes.
    site.backend("198.18.0.4").set_status(200);
    site.wait_for(&ADDRESSES, Duration::from_secs(5))?;
    assert_eq!(site.answer()?.1, 60);
    ensure!(site.serial()? > degraded);

    // All down: every address answered (fail open).
    for b in &site.backends {
        b.set_status(503);
    }
    site.wait_for(&["198.18.0.3", "198.18.0.5"], Duration::from_secs(5))
        .or_else(|_| site.wait_for(&ADDRESSES, Duration::from_secs(5)))?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(site.answer()?, (ADDRESSES.map(String::from).to_vec(), 5));
    ensure!(
        site.log().contains("health check fails"),
        "a change of state is logged:\n{}",
        site.log()
    );
    Ok(())
}

#[test]
fn a_flapping_address_stays_out() -> Result<()> {
    let all = quoted(&ADDRESSES);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    // Back only after six passes in a row (1.8 s): a backend that is up
    // for one second at a time never gets there.
    let health = QUICK.replace("rise = 2", "rise = 6");
    let site = Site::start(&all, &health)?;
    let flapper = site.backend("198.18.0.5");
    flapper.set_status(503);
    site.wait_for(&["198.18.0.3", "198.18.0.4"], Duration::from_secs(5))?;
    let started = Instant::now();
    let mut up = false;
    while started.elapsed() < Duration::from_secs(6) {
        up = !up;
        flapper.set_status(if up { 200 } else { 503 });
        let phase = Instant::now();
        while phase.elapsed() < Duration::from_secs(1) {
            let got = site.answer()?.0;
            ensure!(
                got == ["198.18.0.3", "198.18.0.4"],
                "the flapping address came back: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

#[test]
fn backups_answer_only_when_no_primary_is_up() -> Result<()> {
    let site = Site::start(
        &[
            "\"198.18.0.3\"",
            "\"198.18.0.4\"",
            "{ address = \"198.18.0.5\", backup = true }",
        ],
        QUICK,
    )?;
    assert_eq!(site.answer()?.0, ["198.18.0.3", "198.18.0.4"]);
    site.backend("198.18.0.3").set_status(503);
    site.wait_for(&["198.18.0.4"], Duration::from_secs(5))?;
    site.backend("198.18.0.4").set_status(503);
    site.wait_for(&["198.18.0.5"], Duration::from_secs(5))?;
    site.backend("198.18.0.3").set_status(200);
    site.wait_for(&["198.18.0.3"], Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn a_reload_keeps_known_states_and_stops_checking_removed_addresses() -> Result<()> {
    let all = quoted(&ADDRESSES);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let site = Site::start(&all, QUICK)?;
    site.backend("198.18.0.4").set_status(503);
    site.wait_for(&["198.18.0.3", "198.18.0.5"], Duration::from_secs(5))?;

    // .5 leaves the service; .4 stays out through the reload.
    std::fs::write(
        site.ws.path().join("dnsd.toml"),
        service_toml(&["\"198.18.0.3\"", "\"198.18.0.4\""], QUICK),
    )?;
    site.dnsd.signal(1)?;
    site.wait_for(&["198.18.0.3"], Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(500));
    let checks = site.backend("198.18.0.5").requests();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        site.backend("198.18.0.5").requests(),
        checks,
        "a removed address is still checked"
    );
    assert_eq!(
        site.answer()?.0,
        ["198.18.0.3"],
        "the reload brought .4 back"
    );
    Ok(())
}

#[test]
fn a_secondary_follows_health_changes_and_a_restart_never_takes_the_serial_back() -> Result<()> {
    use cutover_tests::dns_peers;
    let all = quoted(&ADDRESSES);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let secondary: SocketAddr = "127.0.0.2:5302".parse()?;
    let mut site = Site::start_with(
        &all,
        QUICK,
        &format!("[[secondary]]\naddress = \"{secondary}\"\n\n"),
    )?;
    let _knot =
        dns_peers::knot_secondary_in(&site.net.client, secondary, "127.0.0.1:5300".parse()?)?;
    let knot_answer = || -> Vec<String> {
        let out = site.net.client.exec(
            "kdig",
            &[
                "@127.0.0.2",
                "-p",
                "5302",
                "+short",
                "+timeout=1",
                "+retry=0",
                NAME,
                "A",
            ],
        );
        let mut a: Vec<String> = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        a.sort();
        a
    };
    ensure!(
        wait_until(Duration::from_secs(10), || knot_answer() == ADDRESSES),
        "the secondary never served the zone: {:?}",
        knot_answer()
    );
    site.backend("198.18.0.4").set_status(503);
    site.wait_for(&["198.18.0.3", "198.18.0.5"], Duration::from_secs(5))?;
    ensure!(
        wait_until(Duration::from_secs(10), || knot_answer()
            == ["198.18.0.3", "198.18.0.5"]),
        "the secondary did not follow the health change: {:?}",
        knot_answer()
    );
    let degraded = site.serial()?;

    // A reload that changes nothing keeps the serial: nothing to transfer.
    site.dnsd.signal(1)?;
    ensure!(
        wait_until(Duration::from_secs(5), || site.log().contains("reloaded")),
        "no reload"
    );
    assert_eq!(site.serial()?, degraded, "a reload moved the serial");

    // A restart: every address starts up again, under a newer serial, so
    // the secondary follows back.
    site.dnsd.kill_now();
    site.dnsd = spawn_dnsd(&site.net, site.ws.path())?;
    ensure!(
        wait_until(Duration::from_secs(10), || site.serial().is_ok()),
        "dnsd did not come back"
    );
    let restarted = site.serial()?;
    ensure!(
        restarted > degraded,
        "after the restart the serial is {restarted}, was {degraded}"
    );
    Ok(())
}

impl Site {
    /// `cutover shift` in the client's namespace, against this dnsd; the
    /// answers only (this site has no redirector; `migrate_e2e` shifts with
    /// the redirect).
    fn shift(&self, args: &[&str]) -> std::process::Child {
        self.net
            .client
            .command(bins::path("cutover"))
            .arg("--dns")
            .arg("http://127.0.0.1:8053")
            .arg("--token-file")
            .arg(self.ws.path().join(".cutover/api-token"))
            .arg("shift")
            .arg("--no-redirect")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cutover runs")
    }

    /// The leading address of each answer while `child` runs, and how it
    /// ended (its output).
    fn watch(&self, mut child: std::process::Child) -> Result<(Vec<String>, bool, String)> {
        let mut leads = Vec::new();
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "cutover shift did not end"
            );
            let text = self.kdig("A")?;
            if let Some(first) = text
                .lines()
                .find_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            {
                leads.push(first);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((leads, out.status.success(), text))
    }
}

#[test]
fn a_shift_moves_the_answers_step_by_step_to_the_new_address() -> Result<()> {
    let site = Site::start_with(&["\"198.18.0.3\""], QUICK, "[server]\nmax_answers = 1\n\n")?;
    let child = site.shift(&[
        NAME,
        "--to",
        "198.18.0.4",
        "--steps",
        "50,100",
        "--every",
        "3",
        "--poll-ms",
        "200",
    ]);
    let (leads, ok, out) = site.watch(child)?;
    ensure!(ok, "the shift failed: {out}\nlog:\n{}", site.log());
    let count = |a: &str| leads.iter().filter(|l| *l == a).count();
    ensure!(
        count("198.18.0.3") > 0 && count("198.18.0.4") > 0,
        "both releases should have led answers during the shift: {leads:?}"
    );
    assert_eq!(site.answer()?.0, ["198.18.0.4"]);
    let services = site.services()?;
    assert_eq!(services[0].addresses, ["198.18.0.4"]);
    Ok(())
}

#[test]
fn a_failing_canary_is_never_served_and_the_shift_reverts() -> Result<()> {
    let site = Site::start_with(&["\"198.18.0.3\""], QUICK, "[server]\nmax_answers = 1\n\n")?;
    site.backend("198.18.0.4").set_status(503);
    let child = site.shift(&[
        NAME,
        "--to",
        "198.18.0.4",
        "--steps",
        "50,100",
        "--every",
        "5",
        "--poll-ms",
        "200",
    ]);
    let (leads, ok, out) = site.watch(child)?;
    ensure!(
        !ok && out.contains("reverted"),
        "the shift did not revert: {out}"
    );
    ensure!(
        leads.iter().all(|l| l == "198.18.0.3"),
        "the failing canary was served: {leads:?}"
    );
    let services = site.services()?;
    assert_eq!(services[0].addresses, ["198.18.0.3"]);
    Ok(())
}

#[test]
fn clients_behind_a_caching_resolver_see_no_failure_once_the_window_has_passed() -> Result<()> {
    use cutover_tests::unbound::Unbound;
    let all = quoted(&ADDRESSES);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    // A short TTL, so that the window (interval x fall + one TTL) is short.
    let site = Site::start_with(
        &all,
        &QUICK.replace("degraded_ttl = 5", "degraded_ttl = 1"),
        "",
    )?;
    std::fs::write(
        site.ws.path().join("dnsd.toml"),
        service_toml(&all, &QUICK.replace("degraded_ttl = 5", "degraded_ttl = 1"))
            .replace("ttl = 60", "ttl = 2"),
    )?;
    site.dnsd.signal(1)?;
    ensure!(
        wait_until(Duration::from_secs(5), || site
            .answer()
            .is_ok_and(|(_, ttl)| ttl == 2)),
        "the reload with ttl 2 was not served"
    );
    let _unbound = Unbound::start(
        &site.net.client,
        "127.0.0.53:53".parse()?,
        "example.test.",
        "127.0.0.1:5300".parse()?,
    )?;
    // One request: resolve through the resolver, GET the first address.
    let request = || -> bool {
        let Ok(out) = site.net.client.exec(
            "kdig",
            &["@127.0.0.53", "+short", "+timeout=1", "+retry=0", NAME, "A"],
        ) else {
            return false;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let Some(address) = text.lines().next() else {
            return false;
        };
        site.net
            .client
            .exec(
                "curl",
                &[
                    "-sS",
                    "--fail",
                    "--max-time",
                    "2",
                    &format!("http://{address}/"),
                ],
            )
            .is_ok()
    };
    ensure!(request(), "the site does not answer before the failure");

    site.backend("198.18.0.4").set_status(503);
    let failed_at = Instant::now();
    // The window: two failed checks 300 ms apart, a check's timeout, and
    // the 2 s TTL the resolver may still hold the old answer for; then a
    // margin for the machine.
    std::thread::sleep(Duration::from_millis(600 + 200 + 2000 + 1200));
    let mut failures = 0;
    let mut requests = 0;
    while requests < 40 {
        requests += 1;
        if !request() {
            failures += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        failures == 0,
        "{failures} of {requests} requests failed after the window ({:?} since the failure)",
        failed_at.elapsed()
    );
    Ok(())
}
