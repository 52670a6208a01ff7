//! The mission, replayed: a client resolving through a caching resolver keeps
//! requesting www.example.test while `cutover migrate` moves it from the old
//! host to the new one, and while `cutover rollback` moves it back. No request
//! may fail. Real dnsd, redirector, unbound, nginx and curl.
//!
//! Hosts: the client runs unbound (127.0.0.53) and dnsd (127.0.0.1:5300, API
//! 127.0.0.1:8053); the old host runs the redirector (API on 198.18.0.2:8054);
//! both daemons share one workspace, as they would share a synced directory.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::bins;
use cutover_tests::bpffs::Bpffs;
use cutover_tests::dns_peers::{self, DnsServer, Primary, ServerOptions};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::redirector::Redirector;
use cutover_tests::redirector_site::curl;
use cutover_tests::site_client::get;
use cutover_tests::topology::{NEW_IP, OLD_IP, Topology};
use cutover_tests::udp_echo::{self, UdpEcho};
use cutover_tests::unbound::Unbound;

const OLD_BODY: &str = "release 1 on the old host\n";
const NEW_BODY: &str = "release 2 on the new host\n";
const NAME: &str = "www.example.test";
const OLD_API: &str = "http://198.18.0.2:8054";

struct Mission {
    _unbound: Unbound,
    /// Knot and NSD copying the zone from dnsd, when asked for; the
    /// resolver then asks Knot.
    _secondaries: Vec<DnsServer>,
    redirector: Redirector,
    dnsd: Daemon,
    _bpffs: Bpffs,
    /// Dropped to stop the old release (a dead old server).
    old_web: Option<Nginx>,
    _new_web: Nginx,
    ws: tempfile::TempDir,
    state: tempfile::TempDir,
    net: Topology,
}

/// A migration's timers for a test: TTL 2 s, quiet after 3 s.
const QUICK: [&str; 6] = ["--ttl", "2", "--max-cache", "60s", "--quiet", "3s"];

/// The secondaries' addresses, in the client's namespace beside dnsd.
const SECONDARIES: [&str; 2] = ["127.0.0.2:5300", "127.0.0.3:5300"];

impl Mission {
    fn start(ttl: u32) -> Result<Self> {
        Self::start_with(ttl, false, &[80])
    }

    /// The site, served on `ports` by both releases, with `secondaries`
    /// (Knot, NSD) serving the zone beside dnsd and the resolver asking
    /// them.
    fn start_with(ttl: u32, secondaries: bool, ports: &[u16]) -> Result<Self> {
        let net = Topology::new()?;
        let old_web = Nginx::start(&net.old, ports, OLD_BODY, &[])?;
        let new_web = Nginx::start(&net.new, ports, NEW_BODY, &[])?;
        let ws = tempfile::Builder::new()
            .prefix("cutover-mission")
            .tempdir()?;
        cutover_tests::dnsd::add_example_zone(ws.path())?;
        let mut toml =
            format!("[[service]]\nname = \"{NAME}.\"\naddresses = [\"{OLD_IP}\"]\nttl = {ttl}\n");
        if secondaries {
            for address in SECONDARIES {
                toml.push_str(&format!("[[secondary]]\naddress = \"{address}\"\n"));
            }
        }
        std::fs::write(ws.path().join("dnsd.toml"), toml)?;
        // Closed flows leave the table within a second or two, so that the
        // old host's counters can fall to zero within the test.
        std::fs::write(
            ws.path().join("redirector.toml"),
            "[timeouts]\nsyn = 5\nestablished = 30\nclosing = 1\nudp = 2\nudp_stream = 2\n",
        )?;

        let mut cmd = net.client.command(bins::path("dnsd"));
        cmd.arg("--workspace").arg(ws.path()).args([
            "--listen",
            "127.0.0.1:5300",
            "--api",
            "127.0.0.1:8053",
        ]);
        let dnsd = Daemon::spawn("dnsd", cmd)?;
        let token = token_path(ws.path());
        ensure!(
            wait_until(Duration::from_secs(10), || token.exists()),
            "dnsd created no API token"
        );

        let bpffs = Bpffs::mount(&ws.path().join(".bpffs"))?;
        let state = tempfile::tempdir()?;
        let redirector = Redirector::start(
            &net.old,
            &["eth0"],
            ws.path(),
            &bpffs.pins(),
            state.path(),
            &["--api", "198.18.0.2:8054"],
        )?;
        let mut started = Vec::new();
        if secondaries {
            let primary: std::net::SocketAddr = "127.0.0.1:5300".parse()?;
            for (start, address) in [
                (dns_peers::start_knot as fn(_, &_) -> _, SECONDARIES[0]),
                (dns_peers::start_nsd, SECONDARIES[1]),
            ] {
                let address: std::net::SocketAddr = address.parse()?;
                let options = ServerOptions {
                    port: Some(address.port()),
                    primary: Some(Primary {
                        addr: primary,
                        key: None,
                    }),
                    netns: Some(net.client.name.clone()),
                    ..ServerOptions::default()
                };
                started.push(start(address.ip(), &options)?);
            }
        }
        let upstream = if secondaries {
            SECONDARIES[0]
        } else {
            "127.0.0.1:5300"
        };
        let unbound = Unbound::start(
            &net.client,
            "127.0.0.53:53".parse()?,
            "example.test.",
            upstream.parse()?,
        )?;
        let m = Self {
            _unbound: unbound,
            _secondaries: started,
            redirector,
            dnsd,
            _bpffs: bpffs,
            old_web: Some(old_web),
            _new_web: new_web,
            state,
            ws,
            net,
        };
        ensure!(
            wait_until(Duration::from_secs(10), || m.resolve() == OLD_IP
                && m.cutover(&["status"]).is_ok_and(|o| o.status.success())),
            "the site did not come up: {}",
            m.cutover(&["status"])
                .map(|o| describe(&o))
                .unwrap_or_default()
        );
        Ok(m)
    }

    /// `cutover ARGS...` from the client, pointed at this site's daemons.
    fn cutover_command(&self, args: &[&str]) -> std::process::Command {
        self.cutover_via(OLD_API, args)
    }

    /// `cutover ARGS...` with the old host's API at `old_api`. The binary is
    /// `$CUTOVER_BIN` when set, so that a test can be replayed against an
    /// older cutover to see it fail.
    fn cutover_via(&self, old_api: &str, args: &[&str]) -> std::process::Command {
        let bin = std::env::var_os("CUTOVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| bins::path("cutover"));
        let mut cmd = self.net.client.command(bin);
        cmd.args([
            "--dns",
            "http://127.0.0.1:8053",
            "--old",
            old_api,
            "--token-file",
        ])
        .arg(token_path(self.ws.path()))
        .arg("--state-dir")
        .arg(self.state.path())
        .args(args);
        cmd
    }

    /// Runs `cutover ARGS...` to the end.
    fn cutover(&self, args: &[&str]) -> Result<Output> {
        self.cutover_command(args)
            .output()
            .context("running cutover")
    }

    /// A migration to NEW with short timers: TTL 2 s, quiet after 3 s.
    fn migrate_quickly(&self) -> Result<()> {
        let mut args = vec!["migrate", NAME, "--to", NEW_IP];
        args.extend_from_slice(&QUICK);
        let out = self.cutover(&args)?;
        ensure!(out.status.success(), "migrate failed: {}", describe(&out));
        ensure!(wait_until(Duration::from_secs(10), || self.resolve() == NEW_IP));
        Ok(())
    }

    /// `cutover migrate` with short timers (TTL 2 s, quiet after 3 s, a
    /// sample a second) and `more` flags, while the client keeps
    /// requesting (a second before it, and three after, as the last cached
    /// answers expire): what it printed and every request's outcome.
    fn migrate_under_load(&self, more: &[&str]) -> Result<(Output, Vec<Sample>)> {
        let load = Load::start(&self.net.client);
        std::thread::sleep(Duration::from_secs(1));
        let mut args = vec!["migrate", NAME, "--to", NEW_IP, "--poll", "1s"];
        args.extend_from_slice(&QUICK);
        args.extend_from_slice(more);
        let out = self.cutover(&args)?;
        std::thread::sleep(Duration::from_secs(3));
        Ok((out, load.finish()))
    }

    /// The service's address and TTL as dnsd serves them (not the cache).
    fn served(&self) -> (String, u32) {
        let out = self.net.client.exec(
            "kdig",
            &["@127.0.0.1", "-p", "5300", "+noall", "+answer", NAME, "A"],
        );
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let fields: Vec<&str> = text.split_whitespace().collect();
        (
            fields.get(4).unwrap_or(&"").to_string(),
            fields.get(1).and_then(|t| t.parse().ok()).unwrap_or(0),
        )
    }

    /// `PUT url` with JSON `body` and the workspace's token, from the
    /// client, as an operator would with curl.
    fn put(&self, url: &str, body: &str) -> Result<()> {
        let token = std::fs::read_to_string(token_path(self.ws.path()))?;
        let auth = format!("Authorization: Bearer {}", token.trim());
        self.net.client.exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "-X",
                "PUT",
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                url,
            ],
        )?;
        Ok(())
    }

    /// Whether cutover left a migration record.
    fn has_record(&self) -> bool {
        self.state.path().join(format!("{NAME}.toml")).exists()
    }

    /// What the client's resolver says now.
    fn resolve(&self) -> String {
        resolve(&self.net.client)
    }

    /// The migration record's phase, as saved by cutover.
    fn phase(&self) -> String {
        let path = self.state.path().join(format!("{NAME}.toml"));
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("phase")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn token_path(ws: &Path) -> PathBuf {
    ws.join(".cutover/api-token")
}

fn resolve(client: &Netns) -> String {
    client
        .exec(
            "kdig",
            &["@127.0.0.53", "+short", "+timeout=2", "+retry=1", NAME, "A"],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn describe(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One request of the client's loop: the address it resolved and what came
/// back (or why nothing did).
#[derive(Debug, Clone)]
struct Sample {
    /// When the client started resolving.
    at: Instant,
    ip: String,
    body: Result<String, String>,
}

/// The client's request loop: resolve through the caching resolver, request
/// the page; bounded in time and count.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(client: &Netns) -> Self {
        Self::start_resolving(client, resolve_in)
    }

    /// The loop of a client that connects to the AAAA record's address.
    fn start_v6(client: &Netns) -> Self {
        Self::start_resolving(client, |ns| {
            cutover_tests::site_client::resolve_type(ns, "127.0.0.53", NAME, "AAAA")
        })
    }

    fn start_resolving(client: &Netns, resolve: fn(&str) -> String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns_name = client.name.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline && samples.len() < 3000
            {
                let at = Instant::now();
                let ip = resolve(&ns_name);
                let body = if ip.is_empty() {
                    Err("the resolver gave no address".to_string())
                } else {
                    get(&ns_name, &ip)
                };
                samples.push(Sample { at, ip, body });
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn resolve_in(ns: &str) -> String {
    cutover_tests::site_client::resolve(ns, "127.0.0.53", NAME)
}

fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.body.is_err()).collect()
}

/// No request of `samples` failed; else how many did, and the first few.
fn none_failed(samples: &[Sample]) -> Result<()> {
    let failed = failures(samples);
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    Ok(())
}

fn count(samples: &[Sample], ip: &str, body: &str) -> usize {
    samples
        .iter()
        .filter(|s| s.ip == ip && s.body.as_deref() == Ok(body))
        .count()
}

#[test]
fn a_migration_and_its_rollback_lose_no_request() -> Result<()> {
    let m = Mission::start(2)?;
    let (out, samples) = m.migrate_under_load(&[])?;
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    none_failed(&samples).context("during the migration")?;
    ensure!(
        count(&samples, OLD_IP, OLD_BODY) > 0,
        "no request reached the old release first"
    );
    ensure!(
        count(&samples, OLD_IP, NEW_BODY) > 0,
        "no client with the cached old address was forwarded to the new release"
    );
    ensure!(
        count(&samples, NEW_IP, NEW_BODY) > 0,
        "no request went to the new host directly"
    );
    // Once clients went to the new address they never went back.
    let first_new = samples.iter().position(|s| s.ip == NEW_IP).unwrap_or(0);
    ensure!(
        samples[first_new..].iter().all(|s| s.ip == NEW_IP),
        "a client went back to the old address after the flip"
    );
    ensure!(
        m.phase() == "done",
        "the migration record says {:?}",
        m.phase()
    );
    ensure!(m.resolve() == NEW_IP);
    // The old host's counters fell to zero: that is how migrate ended early.
    let status = m.cutover(&["status"])?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(text.contains("0 active flows"), "status: {text}");

    // Rollback, under the same load.
    let load = Load::start(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    let out = m.cutover(&["rollback", NAME])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    ensure!(
        wait_until(Duration::from_secs(15), || m.resolve() == OLD_IP),
        "the name did not go back to the old host"
    );
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    ensure!(
        failures(&samples).is_empty(),
        "{} of {} requests failed during the rollback: {:?}",
        failures(&samples).len(),
        samples.len(),
        failures(&samples).iter().take(5).collect::<Vec<_>>()
    );
    ensure!(
        count(&samples, OLD_IP, OLD_BODY) > 0,
        "the old release is not served again"
    );
    ensure!(m.phase() == "rolled-back");
    drop(m.redirector);
    drop(m.dnsd);
    Ok(())
}

#[test]
fn a_migration_waits_for_two_secondaries_and_loses_no_request() -> Result<()> {
    // The resolver asks Knot, a secondary: clients see the flip only once
    // it has the zone's new serial.
    let m = Mission::start_with(2, true, &[80])?;
    let (out, samples) = m.migrate_under_load(&[])?;
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let in_sync = said
        .lines()
        .find(|l| l.contains("every name server serves it (3 of them)"))
        .with_context(|| format!("migrate waited for no secondary: {said}"))?;
    println!("{}", in_sync.trim_start_matches('\r').trim());
    none_failed(&samples).context("during the migration")?;
    ensure!(
        count(&samples, NEW_IP, NEW_BODY) > 0,
        "no request went to the new host"
    );
    ensure!(m.resolve() == NEW_IP);
    let status = String::from_utf8_lossy(&m.cutover(&["status"])?.stdout).into_owned();
    ensure!(
        status.contains("every name server served the flip"),
        "status: {status}"
    );
    Ok(())
}

#[test]
fn a_site_on_two_ports_with_quic_moves_whole_and_rolls_back_whole() -> Result<()> {
    let m = Mission::start_with(2, false, &[80, 443])?;
    // UDP 443 (QUIC) on both hosts: an echo whose answer names the host.
    let _old_udp = UdpEcho::start(&m.net.old, format!("{OLD_IP}:443").parse()?, b"old ")?;
    let _new_udp = UdpEcho::start(&m.net.new, format!("{NEW_IP}:443").parse()?, b"new ")?;
    let udp_443: std::net::SocketAddr = format!("{OLD_IP}:443").parse()?;
    ensure!(udp_echo::ask(&m.net.client, udp_443, b"hello")? == b"old hello");
    let on_443 = |ip: &str| -> Result<String> {
        let out = m.net.client.exec(
            "curl",
            &["-s", "--max-time", "5", &format!("http://{ip}:443/")],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ensure!(on_443(OLD_IP)? == OLD_BODY);
    let (out, samples) = m.migrate_under_load(&["--port", "80,443", "--udp"])?;
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    none_failed(&samples).context("during the migration")?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        said.contains("198.18.0.2:80 -> 198.18.0.3:80, 198.18.0.2:443 -> 198.18.0.3:443"),
        "{said}"
    );
    // A client that still holds the old address reaches the new release on
    // both ports: one redirect each.
    ensure!(curl_old(&m, 80)? == NEW_BODY);
    ensure!(on_443(OLD_IP)? == NEW_BODY);
    // ... and a new UDP flow to 443 (a QUIC client) the new host's service.
    ensure!(udp_echo::ask(&m.net.client, udp_443, b"hello")? == b"new hello");
    // The same ports are asked to resume it; another set is refused.
    let other = m.cutover(&["migrate", NAME, "--to", NEW_IP, "--port", "443"])?;
    ensure!(!other.status.success(), "{}", describe(&other));
    let out = m.cutover(&["rollback", NAME])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    ensure!(on_443(OLD_IP)? == OLD_BODY, "port 443 after the rollback");
    ensure!(
        udp_echo::ask(&m.net.client, udp_443, b"hello")? == b"old hello",
        "UDP 443 after the rollback"
    );
    ensure!(curl_old(&m, 80)? == OLD_BODY, "port 80 after the rollback");
    Ok(())
}

/// What the client gets from the old address on `port`.
fn curl_old(m: &Mission, port: u16) -> Result<String> {
    let out = m.net.client.exec(
        "curl",
        &["-s", "--max-time", "5", &format!("http://{OLD_IP}:{port}/")],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_flip_keeps_the_addresses_that_do_not_move() -> Result<()> {
    let m = Mission::start(2)?;
    // The service also has an IPv6 address, which this move leaves alone.
    let token = std::fs::read_to_string(token_path(m.ws.path()))?;
    let out = m.net.client.exec(
        "curl",
        &[
            "-sf",
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            "-d",
            &format!(r#"{{"addresses":["{OLD_IP}","2001:2::2"]}}"#),
            &format!("http://127.0.0.1:8053/v1/services/{NAME}."),
        ],
    )?;
    ensure!(out.status.success(), "{}", describe(&out));
    m.migrate_quickly()?;
    let aaaa = m.net.client.exec(
        "kdig",
        &["@127.0.0.1", "-p", "5300", "+short", NAME, "AAAA"],
    )?;
    ensure!(
        String::from_utf8_lossy(&aaaa.stdout).trim() == "2001:2::2",
        "the AAAA after the flip: {}",
        describe(&aaaa)
    );
    ensure!(m.served().0 == NEW_IP);
    // The rollback puts both back.
    let out = m.cutover(&["rollback", NAME])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    ensure!(m.served().0 == OLD_IP);
    Ok(())
}

#[test]
fn an_aaaa_record_moves_and_its_cached_ipv6_clients_are_forwarded() -> Result<()> {
    const OLD6: &str = "2001:2::2";
    const NEW6: &str = "2001:2::3";
    let m = Mission::start(2)?;
    for (host, addr) in [
        (&m.net.client, "2001:2::1"),
        (&m.net.old, OLD6),
        (&m.net.new, NEW6),
    ] {
        host.ip(&["addr", "add", &format!("{addr}/64"), "dev", "eth0", "nodad"])?;
    }
    m.put(
        &format!("http://127.0.0.1:8053/v1/services/{NAME}."),
        &format!(r#"{{"addresses":["{OLD_IP}","{OLD6}"]}}"#),
    )?;

    let mut args = vec!["migrate", NAME, "--from", OLD6, "--to", NEW6];
    args.extend_from_slice(&QUICK);
    let out = m.cutover(&args)?;
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    let aaaa = m.net.client.exec(
        "kdig",
        &["@127.0.0.1", "-p", "5300", "+short", NAME, "AAAA"],
    )?;
    ensure!(
        String::from_utf8_lossy(&aaaa.stdout).trim() == NEW6,
        "the AAAA after the flip: {}",
        describe(&aaaa)
    );
    ensure!(m.served().0 == OLD_IP, "the A record moved too");
    // A client that cached the old AAAA reaches the new release through
    // the old host's IPv6 redirect, which migrate leaves on.
    let body = curl(&m.net.client, &format!("http://[{OLD6}]/"))?;
    ensure!(body == NEW_BODY, "through the old IPv6 address: {body:?}");
    let status = m.cutover(&["status"])?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(text.contains("[2001:2::2]:80"), "status: {text}");
    Ok(())
}

#[test]
fn a_migration_to_an_unreachable_host_refuses_to_flip() -> Result<()> {
    let m = Mission::start(2)?;
    let out = m.cutover(&[
        "migrate",
        NAME,
        "--to",
        "198.18.0.99",
        "--ttl",
        "2",
        "--quiet",
        "1s",
    ])?;
    ensure!(
        !out.status.success(),
        "migrate to a host that does not exist succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("does not accept connections"), "{err}");
    ensure!(m.resolve() == OLD_IP, "the record moved anyway");
    let status = m.cutover(&["status"])?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(
        !text.contains("198.18.0.99:80"),
        "a redirect was switched on: {text}"
    );
    ensure!(get(&m.net.client.name, OLD_IP) == Ok(OLD_BODY.to_string()));
    Ok(())
}

/// NEW lets the old host's other addresses in but refuses OLD's own, the
/// address the redirector rewrites forwarded connections to (a firewall
/// written for the old release's address, say). The probe from the old
/// host connects from that address, so migrate refuses before anything
/// moves (issue 11, item 4); a probe from the host's default address
/// would have passed, and every forwarded request failed.
#[test]
fn a_new_host_refusing_the_old_address_is_found_before_anything_moves() -> Result<()> {
    let m = Mission::start(2)?;
    // The old host's own connections leave from a second address...
    m.net
        .old
        .ip(&["addr", "add", "198.18.0.12/24", "dev", "eth0"])?;
    m.net.old.ip(&[
        "route",
        "replace",
        "198.18.0.0/24",
        "dev",
        "eth0",
        "proto",
        "kernel",
        "scope",
        "link",
        "src",
        "198.18.0.12",
    ])?;
    // ...and NEW refuses connections from OLD's address only.
    m.net
        .new
        .exec("nft", &["add", "table", "inet", "cutover_test"])?;
    m.net.new.exec(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "cutover_test",
            "input",
            "{ type filter hook input priority 0 ; }",
        ],
    )?;
    m.net.new.exec(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "cutover_test",
            "input",
            "ip",
            "saddr",
            OLD_IP,
            "tcp",
            "dport",
            "80",
            "reject",
            "with",
            "tcp",
            "reset",
        ],
    )?;
    let out = m.cutover(&[
        "migrate", NAME, "--to", NEW_IP, "--ttl", "2", "--quiet", "1s",
    ])?;
    ensure!(!out.status.success(), "it went ahead: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("does not accept connections from the old host's 198.18.0.2"),
        "{err}"
    );
    ensure!(m.resolve() == OLD_IP, "the record moved anyway");
    ensure!(get(&m.net.client.name, OLD_IP) == Ok(OLD_BODY.to_string()));
    Ok(())
}

#[test]
fn an_interrupted_migration_resumes_where_it_stopped() -> Result<()> {
    // A TTL above the move's: cutover lowers it and waits the old one out,
    // which is where this test interrupts it.
    let m = Mission::start(6)?;
    let mut first = m
        .cutover_command(&[
            "migrate", NAME, "--to", NEW_IP, "--ttl", "2", "--quiet", "2s",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let lowered = wait_until(Duration::from_secs(15), || m.phase() == "ttl-lowered");
    let _ = first.kill();
    let _ = first.wait();
    ensure!(
        lowered,
        "cutover never lowered the TTL (phase {:?})",
        m.phase()
    );
    ensure!(
        m.resolve() == OLD_IP,
        "the record moved before the old TTL expired"
    );

    let out = m.cutover(&[
        "migrate", NAME, "--to", NEW_IP, "--ttl", "2", "--quiet", "2s",
    ])?;
    ensure!(
        out.status.success(),
        "the resumed migrate failed: {}",
        describe(&out)
    );
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("resuming"),
        "{}",
        describe(&out)
    );
    ensure!(m.phase() == "done");
    ensure!(wait_until(Duration::from_secs(10), || m.resolve() == NEW_IP));
    // The TTL is back to what it was.
    let answer = m.net.client.exec(
        "kdig",
        &["@127.0.0.1", "-p", "5300", "+noall", "+answer", NAME, "A"],
    )?;
    let text = String::from_utf8_lossy(&answer.stdout).into_owned();
    ensure!(
        text.split_whitespace().nth(1) == Some("6"),
        "TTL not restored: {text}"
    );
    if get(&m.net.client.name, NEW_IP) != Ok(NEW_BODY.to_string()) {
        bail!("the new host does not serve");
    }
    Ok(())
}

/// A refused command: it failed, said `why`, and changed nothing.
fn refused(out: &Output, why: &str) -> Result<()> {
    ensure!(!out.status.success(), "it went ahead: {}", describe(out));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains(why),
        "the refusal does not say {why:?}: {}",
        describe(out)
    );
    ensure!(err.contains("nothing was changed"), "{}", describe(out));
    Ok(())
}

/// Issue 11, item 6: a wrong old-host token, an unreachable old API and a
/// dead NEW are found before the TTL is lowered (the old cutover lowered it,
/// waited the old TTL out, then failed).
#[test]
fn a_migrate_that_cannot_succeed_is_refused_before_the_ttl_is_lowered() -> Result<()> {
    let m = Mission::start(6)?;
    let wrong = m.state.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n")?;
    let wrong = wrong.to_string_lossy().into_owned();
    let migrate = [
        "migrate", NAME, "--to", NEW_IP, "--ttl", "2", "--quiet", "1s",
    ];

    let mut args = vec!["--old-token-file", wrong.as_str()];
    args.extend(migrate);
    let out = m.cutover(&args)?;
    refused(&out, "401")?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains(&wrong),
        "the 401 does not name the token file: {}",
        describe(&out)
    );
    ensure!(m.served() == (OLD_IP.to_string(), 6), "{:?}", m.served());
    ensure!(!m.has_record(), "a record was written");

    let out = m.cutover_via("http://198.18.0.2:8099", &migrate).output()?;
    refused(&out, "not reachable")?;
    ensure!(m.served() == (OLD_IP.to_string(), 6), "{:?}", m.served());
    ensure!(!m.has_record(), "a record was written");

    let out = m.cutover(&["migrate", NAME, "--to", "198.18.0.99", "--ttl", "2"])?;
    refused(&out, "does not accept connections")?;
    ensure!(m.served() == (OLD_IP.to_string(), 6), "{:?}", m.served());
    ensure!(!m.has_record(), "a record was written");
    Ok(())
}

/// Issue 11, item 8: an old address the service does not have is refused
/// (the old cutover redirected it, which matched nothing, and flipped).
#[test]
fn a_from_address_the_service_does_not_hold_is_refused() -> Result<()> {
    let m = Mission::start(2)?;
    let out = m.cutover(&[
        "migrate",
        NAME,
        "--to",
        NEW_IP,
        "--from",
        "198.18.0.77",
        "--ttl",
        "2",
        "--quiet",
        "1s",
        "--max-cache",
        "5s",
    ])?;
    refused(&out, "is not an address of")?;
    ensure!(m.served() == (OLD_IP.to_string(), 2), "{:?}", m.served());
    ensure!(!m.has_record(), "a record was written");
    Ok(())
}

/// Issue 11, item 9: a refused migrate leaves no record behind, so the next
/// migrate (elsewhere) goes ahead (the old cutover left a `planned` record
/// that refused it as "in progress").
#[test]
fn a_refused_migrate_leaves_no_record_to_block_the_next() -> Result<()> {
    let m = Mission::start(2)?;
    let out = m.cutover(&["migrate", NAME, "--to", "198.18.0.99", "--ttl", "2"])?;
    ensure!(!out.status.success(), "{}", describe(&out));
    ensure!(!m.has_record(), "a record was left: phase {:?}", m.phase());
    let load = Load::start(&m.net.client);
    m.migrate_quickly()?;
    let samples = load.finish();
    ensure!(failures(&samples).is_empty(), "{:?}", failures(&samples));
    ensure!(m.phase() == "done");
    Ok(())
}

/// Issue 11, item 3: a rollback first checks that the old server accepts
/// connections (asked of the old host: from anywhere else the redirect
/// would answer for it); the old cutover flipped back to a dead server.
#[test]
fn a_rollback_to_a_dead_old_server_is_refused() -> Result<()> {
    let mut m = Mission::start(2)?;
    m.migrate_quickly()?;
    drop(m.old_web.take());
    let load = Load::start(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    let out = m.cutover(&["rollback", NAME])?;
    std::thread::sleep(Duration::from_secs(4));
    let samples = load.finish();
    refused(&out, "does not accept connections")?;
    ensure!(m.served() == (NEW_IP.to_string(), 2), "{:?}", m.served());
    ensure!(m.phase() == "done", "the record says {:?}", m.phase());
    none_failed(&samples)?;
    Ok(())
}

/// Issue 11, item 12: with the old host's API down, a rollback checks first
/// and changes nothing (the old cutover moved DNS, then failed, and left
/// the record `done`).
#[test]
fn a_rollback_with_the_old_api_down_changes_nothing() -> Result<()> {
    let m = Mission::start(2)?;
    m.migrate_quickly()?;
    let out = m
        .cutover_via("http://198.18.0.2:8099", &["rollback", NAME])
        .output()?;
    refused(&out, "not reachable")?;
    ensure!(m.served() == (NEW_IP.to_string(), 2), "{:?}", m.served());
    ensure!(m.phase() == "done", "the record says {:?}", m.phase());
    Ok(())
}

const NEW_API: &str = "http://198.18.0.3:8054";

/// A redirector on the new host too (its own workspace and maps, the
/// site's token), for rollbacks with `--reverse-on`.
struct NewHostRedirector {
    redirector: Redirector,
    _bpffs: Bpffs,
    _ws: tempfile::TempDir,
}

impl NewHostRedirector {
    fn start(m: &Mission) -> Result<Self> {
        let ws = tempfile::Builder::new()
            .prefix("cutover-newhost")
            .tempdir()?;
        std::fs::write(
            ws.path().join("redirector.toml"),
            "[timeouts]\nsyn = 5\nestablished = 30\nclosing = 1\nudp = 2\nudp_stream = 2\n",
        )?;
        let bpffs = Bpffs::mount(&ws.path().join(".bpffs"))?;
        let token = token_path(m.ws.path()).to_string_lossy().into_owned();
        let redirector = Redirector::start(
            &m.net.new,
            &["eth0"],
            ws.path(),
            &bpffs.pins(),
            ws.path(),
            &["--api", "198.18.0.3:8054", "--api-token-file", &token],
        )?;
        Ok(Self {
            redirector,
            _bpffs: bpffs,
            _ws: ws,
        })
    }
}

/// Issue 11, item 1: after `rollback --reverse-on NEW`, the new host forwards
/// NEW back to OLD. The old cutover's next migrate to NEW switched OLD -> NEW
/// on beside it, a loop in which every request to OLD timed out. Now
/// `status` shows the reverse rule and the next migrate removes it before
/// its redirect goes on: no request fails.
#[test]
fn a_migration_after_a_reverse_rollback_does_not_loop() -> Result<()> {
    let m = Mission::start(2)?;
    let new_host = NewHostRedirector::start(&m)?;
    m.migrate_quickly()?;
    let out = m.cutover(&["rollback", NAME, "--reverse-on", NEW_API])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    ensure!(wait_until(Duration::from_secs(10), || m.resolve() == OLD_IP));
    let status = m.cutover(&["status"])?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(
        text.contains("cutover-www.example.test-reverse")
            && text.contains(&format!("{NEW_IP}:80 -> {OLD_IP}:80")),
        "status does not show the reverse redirect: {text}"
    );

    let load = Load::start(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    let out = m.cutover(&[
        "migrate",
        NAME,
        "--to",
        NEW_IP,
        "--ttl",
        "2",
        "--max-cache",
        "60s",
        "--quiet",
        "3s",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    let out = out?;
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    none_failed(&samples)?;
    ensure!(
        count(&samples, OLD_IP, NEW_BODY) > 0,
        "nothing was forwarded"
    );
    let status = m.cutover(&["status"])?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(
        !text.contains("reverse redirect"),
        "the reverse redirect is still there: {text}"
    );
    drop(new_host.redirector);
    Ok(())
}

/// Issue 11, item 1: a rule cutover did not leave that forwards NEW is
/// refused, named with the command that removes it, and nothing changes.
#[test]
fn a_redirect_into_an_address_that_redirects_is_refused() -> Result<()> {
    let m = Mission::start(2)?;
    let new_host = NewHostRedirector::start(&m)?;
    m.migrate_quickly()?;
    let out = m.cutover(&["rollback", NAME, "--reverse-on", NEW_API])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    // Someone replaces the reverse rule with one of their own, forwarding NEW.
    let token = std::fs::read_to_string(token_path(m.ws.path()))?;
    let auth = format!("Authorization: Bearer {}", token.trim());
    let reverse = format!("{NEW_API}/v1/rules/cutover-www.example.test-reverse");
    m.net.client.exec(
        "curl",
        &["-sS", "--fail", "-X", "DELETE", "-H", &auth, &reverse],
    )?;
    m.put(
        &format!("{NEW_API}/v1/rules/by-hand"),
        &format!("{{\"from\":\"{NEW_IP}:80\",\"to\":\"{OLD_IP}:80\"}}"),
    )?;
    let out = m.cutover(&[
        "migrate",
        NAME,
        "--to",
        NEW_IP,
        "--ttl",
        "2",
        "--max-cache",
        "60s",
        "--quiet",
        "3s",
    ])?;
    refused(&out, "rule by-hand")?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("DELETE"),
        "{}",
        describe(&out)
    );
    ensure!(m.served() == (OLD_IP.to_string(), 2), "{:?}", m.served());
    ensure!(
        m.phase() == "rolled-back",
        "the record says {:?}",
        m.phase()
    );
    drop(new_host.redirector);
    Ok(())
}

/// Issue 11, item 2: one writer per service. While a migrate drains, a
/// second migrate is refused naming the holder and `status` shows the
/// lease; a rollback cancels the running migrate, which stops without
/// undoing it (the old cutover's migrate went on and pointed the name back
/// at NEW).
#[test]
fn a_rollback_while_migrate_drains_is_not_undone() -> Result<()> {
    let m = Mission::start(2)?;
    let load = Load::start(&m.net.client);
    let mut migrate = m
        .cutover_command(&[
            "migrate",
            NAME,
            "--to",
            NEW_IP,
            "--ttl",
            "2",
            "--max-cache",
            "15s",
            "--quiet",
            "60s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let flipped = wait_until(Duration::from_secs(15), || m.phase() == "flipped");
    let second = m.cutover(&["migrate", NAME, "--to", NEW_IP, "--ttl", "2"])?;
    let status = m.cutover(&["status"])?;
    let rollback = m.cutover(&["rollback", NAME])?;
    let stopped = wait_until(Duration::from_secs(15), || {
        migrate.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        let _ = migrate.kill();
    }
    let migrate = migrate.wait_with_output()?;
    // Past the moment the old migrate would have ended its drain.
    std::thread::sleep(Duration::from_secs(6));
    let samples = load.finish();

    ensure!(flipped, "migrate never flipped: {}", describe(&migrate));
    ensure!(
        !second.status.success(),
        "a second migrate ran beside the first: {}",
        describe(&second)
    );
    let err = String::from_utf8_lossy(&second.stderr);
    ensure!(
        err.contains("cutover migrate") && err.contains("--force"),
        "{}",
        describe(&second)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(
        text.contains("being changed by `cutover migrate`"),
        "status: {text}"
    );
    ensure!(
        rollback.status.success(),
        "rollback failed: {}",
        describe(&rollback)
    );
    ensure!(
        String::from_utf8_lossy(&rollback.stdout).contains("cancelling"),
        "{}",
        describe(&rollback)
    );
    ensure!(stopped, "migrate did not stop after the rollback");
    ensure!(
        String::from_utf8_lossy(&migrate.stderr).contains("took over"),
        "{}",
        describe(&migrate)
    );
    ensure!(
        m.phase() == "rolled-back",
        "the record says {:?}",
        m.phase()
    );
    ensure!(m.served() == (OLD_IP.to_string(), 2), "{:?}", m.served());
    none_failed(&samples)?;
    Ok(())
}

/// Waits until the client's resolver has just fetched the answer (its TTL
/// reads the full `ttl`), so that clients keep OLD for a whole TTL after a
/// flip that follows at once.
fn wait_fresh_cache(client: &Netns, ttl: u32) -> Result<()> {
    let fresh = wait_until(Duration::from_secs(u64::from(ttl) + 5), || {
        client
            .exec("kdig", &["@127.0.0.53", "+noall", "+answer", NAME, "A"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1)
                    == Some(ttl.to_string().as_str())
            })
            .unwrap_or(false)
    });
    ensure!(fresh, "the resolver never fetched a fresh answer");
    Ok(())
}

/// The moment the last request that resolved to OLD started.
fn last_to_old(samples: &[Sample]) -> Option<Instant> {
    samples
        .iter()
        .filter(|s| s.ip == OLD_IP)
        .map(|s| s.at)
        .max()
}

/// Issue 11, item 7: with a short `--quiet`, the drain goes on while
/// clients that cached OLD still arrive (the old cutover took its first
/// sample, milliseconds after the redirect went on, as quiet and ended the
/// drain a second after the flip).
#[test]
fn a_short_quiet_is_measured_only_after_a_full_window() -> Result<()> {
    let m = Mission::start(8)?;
    let load = Load::start(&m.net.client);
    wait_fresh_cache(&m.net.client, 8)?;
    let out = m.cutover(&[
        "migrate",
        NAME,
        "--to",
        NEW_IP,
        "--ttl",
        "8",
        "--max-cache",
        "60s",
        "--quiet",
        "1s",
    ]);
    let ended = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let samples = load.finish();
    let out = out?;
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    eprintln!("migrate: {}", describe(&out));
    let last = last_to_old(&samples).context("no request went to OLD")?;
    ensure!(
        last < ended,
        "the drain ended {:?} before the last client that cached OLD arrived: {}",
        last - ended,
        describe(&out)
    );
    none_failed(&samples)?;
    Ok(())
}

/// Issue 11, item 5: `--max-cache` running out while clients still arrive
/// at OLD is said loudly and the redirect stays on (the old cutover printed
/// "OLD can be retired"); `cutover retire` switches it off when the
/// operator decides. No request fails.
#[test]
fn max_cache_running_out_with_clients_still_arriving_keeps_the_redirect() -> Result<()> {
    let m = Mission::start(8)?;
    let load = Load::start(&m.net.client);
    wait_fresh_cache(&m.net.client, 8)?;
    let out = m.cutover(&[
        "migrate",
        NAME,
        "--to",
        NEW_IP,
        "--ttl",
        "8",
        "--max-cache",
        "2s",
        "--quiet",
        "60s",
    ]);
    let status = m.cutover(&["status"]);
    // Every cached OLD has expired (TTL 8) by now.
    std::thread::sleep(Duration::from_secs(9));
    let samples = load.finish();
    let (out, status) = (out?, status?);
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stdout.contains("can be retired")
            && stderr.contains("clients still arrive")
            && stderr.contains("can NOT be retired"),
        "{}",
        describe(&out)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(
        text.contains(&format!("{OLD_IP}:80 -> {NEW_IP}:80")) && text.contains("cutover retire"),
        "status: {text}"
    );
    ensure!(
        last_to_old(&samples).is_some() && count(&samples, OLD_IP, NEW_BODY) > 0,
        "no client was forwarded"
    );
    none_failed(&samples)?;

    let out = m.cutover(&["retire", NAME])?;
    ensure!(out.status.success(), "retire failed: {}", describe(&out));
    let rules = m.cutover(&["status"])?;
    let text = String::from_utf8_lossy(&rules.stdout);
    ensure!(!text.contains("cutover retire"), "status: {text}");
    Ok(())
}

/// Issue 11, item 14: a 401 names the token file, as the README says: the
/// daemon's answer names the file it reads, and cutover adds the file it
/// sent (the old daemons said only "wrong bearer token").
#[test]
fn a_wrong_token_is_refused_naming_the_token_files() -> Result<()> {
    let m = Mission::start(2)?;
    let daemons_file = std::path::absolute(token_path(m.ws.path()))?;
    let daemons_file = daemons_file.to_string_lossy().into_owned();
    for (url, header) in [
        (format!("{OLD_API}/v1/rules"), "Authorization: Bearer wrong"),
        (
            "http://127.0.0.1:8053/v1/services".to_string(),
            "X-No-Token: 1",
        ),
    ] {
        let out = m
            .net
            .client
            .command("curl")
            .args(["-sS", "-H", header, &url])
            .output()?;
        let body = String::from_utf8_lossy(&out.stdout);
        ensure!(
            body.contains(&daemons_file),
            "{url}: the 401 does not name {daemons_file}: {body}"
        );
    }
    let wrong = m.state.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n")?;
    let wrong = wrong.to_string_lossy().into_owned();
    let out = m.cutover(&["--old-token-file", &wrong, "migrate", NAME, "--to", NEW_IP])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains(&wrong) && err.contains(&daemons_file),
        "{}",
        describe(&out)
    );
    Ok(())
}

/// The colours the status page draws its two series with (page.html).
const FLOWS_RGB: [u8; 3] = [0xe4, 0x57, 0x2e];
const CLIENTS_RGB: [u8; 3] = [0x2e, 0x6f, 0xde];

#[test]
fn the_status_page_shows_a_migration_draining_with_its_chart() -> Result<()> {
    // TTL 5, not lowered: after the flip, the resolver's cached old
    // address keeps clients arriving at OLD for up to 5 s, so that the
    // first drain samples have them.
    let m = Mission::start(5)?;
    let load = Load::start(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    // A drain long enough to look at: quiet only after 60 s.
    let mut migrate = m.cutover_command(&[
        "migrate",
        NAME,
        "--to",
        NEW_IP,
        "--poll",
        "1s",
        "--ttl",
        "5",
        "--max-cache",
        "120s",
        "--quiet",
        "60s",
    ]);
    migrate
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _migrate = Daemon::spawn("cutover migrate", migrate)?;

    // dnsd hears of each step and sample, and keeps one per 10 s stretch:
    // wait for three.
    let status = || -> Result<cutover_control_api::contract::StatusPage> {
        let out = m.net.client.exec(
            "curl",
            &[
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:8053/status.json",
            ],
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    ensure!(
        wait_until(Duration::from_secs(60), || status().is_ok_and(|s| s
            .migrations
            .first()
            .is_some_and(|g| g.phase == "flipped" && g.samples.len() >= 3))),
        "no draining migration on the status page: {:?}",
        status()
    );
    let page = status()?;
    let migration = &page.migrations[0];
    assert_eq!(
        (
            migration.name.as_str(),
            migration.old.as_str(),
            migration.to.as_str()
        ),
        ("www.example.test.", OLD_IP, NEW_IP)
    );
    ensure!(
        migration.samples.iter().any(|s| s.new_flows_per_s > 0.0),
        "the clients that cached OLD are in the samples: {migration:?}"
    );
    // Kept in the workspace, as private as the rest of `.cutover/`.
    let kept = m.ws.path().join(".cutover/migrations");
    for (path, mode) in [
        (kept.clone(), 0o700),
        (kept.join("www.example.test..jsonl"), 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let found = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        ensure!(found == mode, "{} is {found:o}", path.display());
    }

    // The page in a real browser, from the client's namespace (its API is
    // on loopback there: no token).
    let profile = tempfile::tempdir()?;
    let url = "http://127.0.0.1:8053/";
    let dom = cutover_tests::browser::dom(&m.net.client, url, profile.path(), 4000)?;
    ensure!(
        dom.contains(r#"<tr data-name="www.example.test.">"#),
        "the service is not listed: {dom}"
    );
    ensure!(
        dom.contains(r#"<div class="migration" data-name="www.example.test.">"#)
            && dom.contains(r#"<span class="phase">flipped</span>"#),
        "the migration is not shown: {dom}"
    );
    let points: usize = dom
        .split(r#"data-points=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no chart: {dom}"))?;
    ensure!(points >= 3, "{points} points in the chart");
    let flows_line = dom
        .split(r#"class="flows" points=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    ensure!(
        flows_line.split_whitespace().count() == points,
        "the new-connections line has not every point: {flows_line:?}"
    );

    // And what it looks like: the chart has both lines drawn. Kept beside
    // the binaries for a human to look at.
    let shot = bins::path("dnsd").with_file_name("status-page.png");
    cutover_tests::browser::screenshot(
        &m.net.client,
        url,
        profile.path(),
        4000,
        (1000, 700),
        &shot,
    )?;
    let flows = cutover_tests::browser::pixels_near(&shot, FLOWS_RGB, 40)?;
    let clients = cutover_tests::browser::pixels_near(&shot, CLIENTS_RGB, 40)?;
    ensure!(
        flows > 60 && clients > 60,
        "the chart looks empty in {}: {flows} pixels of the new-connections colour, {clients} of \
         the clients colour",
        shot.display()
    );
    none_failed(&load.finish())?;
    Ok(())
}

/// Elastic IPs, as EC2 gives them: the record holds them, the hosts only
/// ever see their private addresses (OLD_IP, NEW_IP).
const OLD_EIP: &str = "198.19.0.2";
const NEW_EIP: &str = "198.19.0.3";

#[test]
fn a_site_on_elastic_ips_moves_with_the_hosts_private_addresses() -> Result<()> {
    let m = Mission::start(2)?;
    // EC2's one-to-one NAT, done at the client: a packet to an Elastic IP
    // arrives at the host with its private address as the destination. The
    // route lets the client send to the Elastic IPs at all.
    m.net
        .client
        .ip(&["route", "add", "198.19.0.0/24", "dev", "eth0"])?;
    for (public, private) in [(OLD_EIP, OLD_IP), (NEW_EIP, NEW_IP)] {
        m.net.client.exec(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                public,
                "-j",
                "DNAT",
                "--to-destination",
                private,
            ],
        )?;
    }
    m.put(
        "http://127.0.0.1:8053/v1/services/www.example.test.",
        &format!("{{\"addresses\":[\"{OLD_EIP}\"]}}"),
    )?;
    ensure!(wait_until(Duration::from_secs(10), || m.resolve() == OLD_EIP));
    let before = get(&m.net.client.name, OLD_EIP);
    ensure!(before == Ok(OLD_BODY.to_string()), "{before:?}");

    // Without the hosts' own addresses the old host cannot probe from the
    // Elastic IP, and nothing moves.
    let mut args = vec!["migrate", NAME, "--to", NEW_EIP];
    args.extend_from_slice(&QUICK);
    let out = m.cutover(&args)?;
    refused(
        &out,
        "does not accept connections from the old host's 198.19.0.2",
    )?;
    ensure!(m.served().0 == OLD_EIP && !m.has_record());

    // With them: the redirect between private addresses, the record
    // between public ones, and no request lost.
    let load = Load::start(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    let mut args = vec![
        "migrate",
        NAME,
        "--to",
        NEW_EIP,
        "--redirect-from",
        OLD_IP,
        "--redirect-to",
        NEW_IP,
        "--poll",
        "1s",
    ];
    args.extend_from_slice(&QUICK);
    let out = m.cutover(&args)?;
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    ensure!(
        describe(&out).contains(&format!("redirect on: {OLD_IP}:80 -> {NEW_IP}:80")),
        "{}",
        describe(&out)
    );
    none_failed(&samples)?;
    ensure!(m.served().0 == NEW_EIP, "{:?}", m.served());
    ensure!(
        count(&samples, OLD_EIP, NEW_BODY) > 0 && count(&samples, NEW_EIP, NEW_BODY) > 0,
        "clients of the old Elastic IP went through the redirector, then to the new one"
    );

    let load = Load::start(&m.net.client);
    let out = m.cutover(&["rollback", NAME])?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    none_failed(&load.finish())?;
    ensure!(m.served().0 == OLD_EIP, "{:?}", m.served());
    Ok(())
}

/// The A records dnsd serves for the site, sorted.
fn served_pool(m: &Mission) -> Result<Vec<String>> {
    served_records(m, "A")
}

/// The records of `rtype` dnsd serves for the site, sorted.
fn served_records(m: &Mission, rtype: &str) -> Result<Vec<String>> {
    let out = m
        .net
        .client
        .exec("kdig", &["@127.0.0.1", "-p", "5300", "+short", NAME, rtype])?;
    let mut pool: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    pool.sort();
    Ok(pool)
}

#[test]
fn a_three_address_pool_on_two_ports_moves_whole_and_rolls_back_whole() -> Result<()> {
    const OLD_POOL: [&str; 3] = [OLD_IP, "198.18.0.12", "198.18.0.22"];
    const NEW_POOL: [&str; 3] = [NEW_IP, "198.18.0.13", "198.18.0.23"];
    let m = Mission::start_with(2, false, &[80, 443])?;
    for (host, pool) in [(&m.net.old, &OLD_POOL), (&m.net.new, &NEW_POOL)] {
        for a in &pool[1..] {
            host.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
    }
    m.put(
        "http://127.0.0.1:8053/v1/services/www.example.test.",
        &format!("{{\"addresses\":{}}}", serde_json::to_string(&OLD_POOL)?),
    )?;
    let mut old_sorted = OLD_POOL.to_vec();
    old_sorted.sort();
    ensure!(served_pool(&m)? == old_sorted, "{:?}", served_pool(&m));
    // Caches holding the one-address answer expire.
    std::thread::sleep(Duration::from_secs(3));

    let load = Load::start(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    let to = NEW_POOL.join(",");
    let mut args = vec![
        "migrate", NAME, "--to", &to, "--port", "80,443", "--poll", "1s",
    ];
    args.extend_from_slice(&QUICK);
    let out = m.cutover(&args)?;
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    none_failed(&samples).context("during the migration")?;
    let said = String::from_utf8_lossy(&out.stdout);
    for (old, new) in OLD_POOL.iter().zip(NEW_POOL) {
        for port in [80, 443] {
            ensure!(
                said.contains(&format!("{old}:{port} -> {new}:{port}")),
                "no redirect {old}:{port}: {said}"
            );
        }
    }
    let mut new_sorted = NEW_POOL.to_vec();
    new_sorted.sort();
    ensure!(served_pool(&m)? == new_sorted, "{:?}", served_pool(&m));
    // Clients came to every old address, and each reached the new release.
    for old in OLD_POOL {
        ensure!(
            count(&samples, old, NEW_BODY) + count(&samples, old, OLD_BODY) > 0,
            "no client used {old}"
        );
    }
    // A client holding any old address reaches the new release on both
    // ports.
    for old in OLD_POOL {
        for port in [80, 443] {
            let out = m.net.client.exec(
                "curl",
                &["-s", "--max-time", "5", &format!("http://{old}:{port}/")],
            )?;
            ensure!(
                String::from_utf8_lossy(&out.stdout) == NEW_BODY,
                "{old}:{port} after the move"
            );
        }
    }

    let load = Load::start(&m.net.client);
    let out = m.cutover(&["rollback", NAME])?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    none_failed(&load.finish()).context("during the rollback")?;
    ensure!(served_pool(&m)? == old_sorted, "{:?}", served_pool(&m));
    Ok(())
}

/// The AAAA records dnsd serves for the site, sorted.
fn served_aaaa(m: &Mission) -> Result<Vec<String>> {
    served_records(m, "AAAA")
}

/// The body `url` answers the client with.
fn body_at(m: &Mission, url: &str) -> Result<String> {
    let out = m.net.client.exec("curl", &["-s", "--max-time", "5", url])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_dual_stack_three_address_pool_on_two_ports_moves_whole_and_rolls_back_whole() -> Result<()> {
    // Two A records and an AAAA, each moving to its own new address.
    const OLD_POOL: [&str; 3] = [OLD_IP, "198.18.0.12", "2001:2::2"];
    const NEW_POOL: [&str; 3] = [NEW_IP, "198.18.0.13", "2001:2::3"];
    let m = Mission::start_with(2, false, &[80, 443])?;
    m.net
        .client
        .ip(&["addr", "add", "2001:2::1/64", "dev", "eth0", "nodad"])?;
    for (host, pool) in [(&m.net.old, &OLD_POOL), (&m.net.new, &NEW_POOL)] {
        for a in &pool[1..] {
            let prefix = if a.contains(':') { "64" } else { "24" };
            #[rustfmt::skip]
            host.ip(&["addr", "add", &format!("{a}/{prefix}"), "dev", "eth0", "nodad"])?;
        }
    }
    m.put(
        "http://127.0.0.1:8053/v1/services/www.example.test.",
        &format!("{{\"addresses\":{}}}", serde_json::to_string(&OLD_POOL)?),
    )?;
    ensure!(served_aaaa(&m)? == ["2001:2::2"], "{:?}", served_aaaa(&m));
    // Caches holding the one-address answer expire.
    std::thread::sleep(Duration::from_secs(3));

    // Clients of both families, each through the caching resolver.
    let load = Load::start(&m.net.client);
    let load6 = Load::start_v6(&m.net.client);
    std::thread::sleep(Duration::from_secs(1));
    let to = NEW_POOL.join(",");
    let mut args = vec![
        "migrate", NAME, "--to", &to, "--port", "80,443", "--poll", "1s",
    ];
    args.extend_from_slice(&QUICK);
    let out = m.cutover(&args)?;
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    let samples6 = load6.finish();
    ensure!(out.status.success(), "migrate failed: {}", describe(&out));
    none_failed(&samples).context("during the migration")?;
    none_failed(&samples6).context("IPv6 clients, during the migration")?;
    ensure!(
        count(&samples6, "2001:2::2", NEW_BODY) > 0,
        "no IPv6 client with the cached old AAAA was forwarded to the new release"
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let url = |ip: &str, port: u16| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (old, new) in OLD_POOL.iter().zip(NEW_POOL) {
        for port in [80, 443] {
            let redirect = format!("{} -> {}", url(old, port), url(new, port));
            ensure!(said.contains(&redirect), "no redirect {redirect}: {said}");
        }
    }
    // Sorted as text.
    ensure!(
        served_pool(&m)? == ["198.18.0.13", NEW_IP],
        "{:?}",
        served_pool(&m)
    );
    ensure!(served_aaaa(&m)? == ["2001:2::3"], "{:?}", served_aaaa(&m));
    // A client holding any old address, of either family, reaches the new
    // release on both ports.
    for old in OLD_POOL {
        for port in [80, 443] {
            let got = body_at(&m, &format!("http://{}/", url(old, port)))?;
            ensure!(
                got == NEW_BODY,
                "{} after the move: {got:?}",
                url(old, port)
            );
        }
    }

    let load = Load::start(&m.net.client);
    let load6 = Load::start_v6(&m.net.client);
    let out = m.cutover(&["rollback", NAME])?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    none_failed(&load.finish()).context("during the rollback")?;
    none_failed(&load6.finish()).context("IPv6 clients, during the rollback")?;
    ensure!(
        served_pool(&m)? == ["198.18.0.12", OLD_IP],
        "{:?}",
        served_pool(&m)
    );
    ensure!(served_aaaa(&m)? == ["2001:2::2"], "{:?}", served_aaaa(&m));
    for port in [80, 443] {
        let got = body_at(&m, &format!("http://[2001:2::2]:{port}/"))?;
        ensure!(
            got == OLD_BODY,
            "[2001:2::2]:{port} after the rollback: {got:?}"
        );
    }
    Ok(())
}

/// `GET url` with the workspace's token, from the client.
fn get_api(m: &Mission, url: &str) -> Result<String> {
    let token = std::fs::read_to_string(token_path(m.ws.path()))?;
    let auth = format!("Authorization: Bearer {}", token.trim());
    let out = m
        .net
        .client
        .exec("curl", &["-sS", "--fail", "-H", &auth, url])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The share of the old host's rule `name`, if it has one.
fn rule_share(m: &Mission, name: &str) -> Result<Option<u8>> {
    let text = get_api(m, &format!("{OLD_API}/v1/rules"))?;
    let rules: Vec<cutover_control_api::contract::Rule> = serde_json::from_str(&text)?;
    Ok(rules.into_iter().find(|r| r.name == name).map(|r| r.share))
}

/// Waits for the shift's first step: its redirect's share (of the clients
/// holding the old address), below 100.
fn partial_share(m: &Mission) -> Result<u8> {
    let mut share = None;
    ensure!(
        wait_until(Duration::from_secs(20), || {
            share = rule_share(m, SHIFT_RULE)
                .ok()
                .flatten()
                .filter(|&p| p < 100);
            share.is_some()
        }),
        "the step's redirect did not go on"
    );
    share.context("no share")
}

/// What a client at `source` that cached the old address gets from it.
fn curl_old_from(m: &Mission, source: &str) -> Result<String> {
    let out = m.net.client.exec(
        "curl",
        &[
            "-s",
            "--max-time",
            "5",
            "--interface",
            source,
            &format!("http://{OLD_IP}/"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The mission with a health-checked service (checked on `check_port`),
/// served by both releases on 80 and `check_port`, and 40 clients on
/// addresses of their own (198.18.0.160-199) that cached the old address.
fn checked_mission(check_port: u16) -> Result<(Mission, Vec<String>)> {
    let ports: &[u16] = if check_port == 80 {
        &[80]
    } else {
        &[80, check_port]
    };
    let m = Mission::start_with(2, false, ports)?;
    std::fs::write(
        m.ws.path().join("dnsd.toml"),
        format!(
            "[[service]]\nname = \"{NAME}.\"\naddresses = [\"{OLD_IP}\"]\nttl = 2\n\
             [service.health]\ncheck = \"tcp\"\nport = {check_port}\ninterval = \"300ms\"\n\
             timeout = \"200ms\"\nrise = 2\nfall = 2\n"
        ),
    )?;
    m.dnsd.signal(1)?;
    ensure!(
        wait_until(Duration::from_secs(10), || get_api(
            &m,
            "http://127.0.0.1:8053/v1/services"
        )
        .is_ok_and(|t| t.contains("\"checks\""))),
        "the reload with the health check was not served"
    );
    let sources: Vec<String> = (160..200).map(|i| format!("198.18.0.{i}")).collect();
    for s in &sources {
        m.net
            .client
            .ip(&["addr", "add", &format!("{s}/24"), "dev", "eth0"])?;
    }
    Ok((m, sources))
}

/// `cutover shift NAME --to NEW --steps 50,100 --every 8`, started.
fn start_shift(m: &Mission) -> Result<std::process::Child> {
    Ok(m.cutover_command(&[
        "shift",
        NAME,
        "--to",
        NEW_IP,
        "--steps",
        "50,100",
        "--every",
        "8",
        "--poll-ms",
        "200",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()?)
}

/// The shift's redirect rule on the old host.
const SHIFT_RULE: &str = "cutover-www.example.test";

/// A weighted shift with the old host's redirect on throughout: at each
/// step the clients that cached the old address are split as the answers
/// are, each client by its address (exactly the clients the program's
/// bucket puts inside the share), with no failed request from the client
/// resolving through the cache; after the last step the old host redirects
/// everyone, the shift is a finished migration, and `retire` switches the
/// redirect off.
#[test]
fn a_shift_redirects_its_share_of_the_clients_that_cached_the_old_address() -> Result<()> {
    const RULE: &str = SHIFT_RULE;
    let (m, sources) = checked_mission(80)?;
    let inside = |source: &str, percent: u16| -> Result<bool> {
        let ip: std::net::Ipv4Addr = source.parse()?;
        let bucket = redirector_common::client_bucket(&redirector_common::mapped(
            u32::from_ne_bytes(ip.octets()),
        ));
        Ok(bucket < percent * 100)
    };

    let load = Load::start(&m.net.client);
    let shift = start_shift(&m)?;
    // The 50 % step: 29 % of the answers lead with NEW, and 29 % of the
    // clients holding OLD are redirected, 50 % of the clients in all.
    let share = partial_share(&m)?;
    ensure!(share == 29, "the 50 % step redirects {share} %");
    let mut moved = 0;
    for s in &sources {
        let want = if inside(s, u16::from(share))? {
            NEW_BODY
        } else {
            OLD_BODY
        };
        moved += usize::from(want == NEW_BODY);
        ensure!(curl_old_from(&m, s)? == want, "{s} at {share} %");
    }
    ensure!(
        rule_share(&m, RULE)? == Some(share),
        "the step ended while the clients were asked: lengthen --every"
    );
    ensure!(
        (3..=22).contains(&moved),
        "{moved} of 40 clients in the {share} % share"
    );

    let out = shift.wait_with_output()?;
    ensure!(out.status.success(), "shift failed: {}", describe(&out));
    std::thread::sleep(Duration::from_secs(3));
    none_failed(&load.finish()).context("during the shift")?;
    ensure!(m.served().0 == NEW_IP);
    ensure!(rule_share(&m, RULE)? == Some(100));
    for s in &sources {
        ensure!(curl_old_from(&m, s)? == NEW_BODY, "{s} after the shift");
    }
    ensure!(m.phase() == "done", "the record: {}", m.phase());
    let said = describe(&out);
    ensure!(said.contains("cutover retire"), "{said}");

    let out = m.cutover(&["retire", NAME])?;
    ensure!(out.status.success(), "retire failed: {}", describe(&out));
    ensure!(rule_share(&m, RULE)?.is_none(), "the redirect is still on");
    ensure!(curl_old_from(&m, &sources[0])? == OLD_BODY);
    Ok(())
}

/// A canary that fails its health check during a step: the shift switches
/// the redirect off and puts the answers back, every client of the old
/// address reaches the old release again, and the client resolving through
/// the cache saw no failure (the check runs on a port of its own, which is
/// what fails; the site on port 80 keeps serving).
#[test]
fn a_shift_whose_canary_fails_switches_the_redirect_off_and_reverts() -> Result<()> {
    let (m, sources) = checked_mission(8081)?;
    let load = Load::start(&m.net.client);
    let shift = start_shift(&m)?;
    partial_share(&m)?;
    m.net.new.exec(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "8081",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )?;
    let out = shift.wait_with_output()?;
    let said = describe(&out);
    ensure!(
        !out.status.success() && said.contains("reverted"),
        "the shift did not revert: {said}"
    );
    std::thread::sleep(Duration::from_secs(3));
    none_failed(&load.finish()).context("during the shift and its revert")?;
    ensure!(
        rule_share(&m, SHIFT_RULE)?.is_none(),
        "the redirect is still on"
    );
    ensure!(m.served().0 == OLD_IP);
    for s in &sources {
        ensure!(curl_old_from(&m, s)? == OLD_BODY, "{s} after the revert");
    }
    ensure!(m.phase() == "rolled-back", "the record: {}", m.phase());
    Ok(())
}

/// A shift killed at a step (kill -9: no revert runs) leaves a record that
/// says so: `migrate` refuses to take over from it, and `rollback` puts the
/// service's addresses back as they were and switches the redirect off.
#[test]
fn a_shift_killed_at_a_step_is_undone_by_rollback() -> Result<()> {
    let (m, sources) = checked_mission(80)?;
    let mut shift = start_shift(&m)?;
    partial_share(&m)?;
    shift.kill()?;
    let _ = shift.wait();
    ensure!(m.phase() == "redirecting", "the record: {}", m.phase());
    let out = m.cutover(&["migrate", NAME, "--to", NEW_IP, "--force"])?;
    ensure!(
        !out.status.success() && describe(&out).contains("cutover rollback"),
        "migrate took over a stopped shift: {}",
        describe(&out)
    );
    // The killed shift's lease has not run out, and a rollback takes it
    // over as it cancels a running shift.
    let out = m.cutover(&["rollback", NAME])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    ensure!(
        rule_share(&m, SHIFT_RULE)?.is_none(),
        "the redirect is still on"
    );
    let services = get_api(&m, "http://127.0.0.1:8053/v1/services")?;
    let services: Vec<cutover_control_api::contract::Service> = serde_json::from_str(&services)?;
    let members: Vec<(&str, u32, bool)> = services[0]
        .members
        .iter()
        .map(|s| (s.address.as_str(), s.weight, s.backup))
        .collect();
    ensure!(
        members == [(OLD_IP, 1, false)],
        "the service after the rollback: {members:?}"
    );
    for s in &sources[..5] {
        ensure!(curl_old_from(&m, s)? == OLD_BODY, "{s} after the rollback");
    }
    Ok(())
}

/// An operator who rolls back while the shift still runs: the rollback
/// cancels it (the shift stops at its next look, changing nothing more),
/// then switches the redirect off and restores the service; the shift
/// exits saying it stopped.
#[test]
fn a_rollback_during_a_shift_cancels_it_and_undoes_it() -> Result<()> {
    let (m, sources) = checked_mission(80)?;
    let shift = start_shift(&m)?;
    partial_share(&m)?;
    let out = m.cutover(&["rollback", NAME])?;
    ensure!(out.status.success(), "rollback failed: {}", describe(&out));
    let stopped = shift.wait_with_output()?;
    ensure!(
        !stopped.status.success() && describe(&stopped).contains("changed nothing more"),
        "the shift did not stop: {}",
        describe(&stopped)
    );
    ensure!(
        rule_share(&m, SHIFT_RULE)?.is_none(),
        "the redirect is still on"
    );
    ensure!(m.phase() == "rolled-back", "the record: {}", m.phase());
    ensure!(m.served().0 == OLD_IP);
    for s in &sources[..5] {
        ensure!(curl_old_from(&m, s)? == OLD_BODY, "{s} after the rollback");
    }
    Ok(())
}
