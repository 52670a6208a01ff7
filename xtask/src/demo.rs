//! `cargo xtask demo`: the mission in a few minutes, on three hosts in
//! network namespaces. Clients resolve www.example.test through a caching
//! resolver and request it in a loop while `cutover migrate` moves it from
//! the old host to the new one (TTL lowered, redirect on, record flipped,
//! the old host watched until it drains) and `cutover rollback` moves it
//! back. A line every two seconds says where the requests went; a report
//! at the end says how many failed and how long the move took.
//!
//! It installs what it needs first (`setup`, quietly) and hides the build's
//! output in a log file. Ctrl-C, or any failure, removes the namespaces.

use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::bpffs::Bpffs;
use cutover_tests::dns_peers::{self, DnsServer};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::redirector::Redirector;
use cutover_tests::topology::{NEW_IP, OLD_IP, Topology};
use cutover_tests::unbound::Unbound;

use crate::util::{cargo, release_bin, root};

const NAME: &str = "www.example.test";
const OLD_BODY: &str = "release 1 on the old host\n";
const NEW_BODY: &str = "release 2 on the new host\n";
const OLD_API: &str = "http://198.18.0.2:8054";
/// Knot, the secondary the clients' resolver asks, beside dnsd.
const SECONDARY: &str = "127.0.0.2:5300";
/// How many clients request the site, each every `PACE`.
const CLIENTS: usize = 3;
const PACE: Duration = Duration::from_millis(200);
/// The service's TTL before the move: `migrate` lowers it and waits this
/// long for caches holding it to expire.
const TTL: u32 = 20;
/// The move's own timers, short for a demo.
const MIGRATE: [&str; 8] = [
    "--ttl",
    "5",
    "--max-cache",
    "60s",
    "--quiet",
    "5s",
    "--poll",
    "1s",
];

/// Set by Ctrl-C: every wait gives up, and the namespaces are removed.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn run() -> Result<()> {
    ctrlc::set_handler(|| {
        if !STOP.swap(true, Ordering::Relaxed) {
            eprintln!("\ninterrupted: stopping and removing the namespaces");
        }
    })
    .context("installing the Ctrl-C handler")?;
    crate::setup::quietly()?;
    build()?;

    say(&format!(
        "three hosts on one switch: client {}, old host {OLD_IP}, new host {NEW_IP}",
        cutover_tests::topology::CLIENT_IP
    ));
    let site = Site::start()?;
    say(&format!(
        "{CLIENTS} clients resolve {NAME} through a caching resolver and request it, each every \
         {} ms",
        PACE.as_millis()
    ));
    let clients = Clients::start(&site.net.client);
    stoppable_sleep(Duration::from_secs(3))?;
    clients.report_line();

    say(&format!(
        "cutover migrate {NAME} --to {NEW_IP} {}",
        MIGRATE.join(" ")
    ));
    let started = Instant::now();
    let mut args = vec!["migrate", NAME, "--to", NEW_IP];
    args.extend_from_slice(&MIGRATE);
    site.cutover(&args, &clients)?;
    let migrated_in = started.elapsed();
    site.cutover(&["status"], &clients)?;

    say(&format!("cutover rollback {NAME}"));
    site.cutover(&["rollback", NAME], &clients)?;
    // The clients whose resolver cached the new address come back as it
    // expires.
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(8) {
        stoppable_sleep(Duration::from_secs(2))?;
        clients.report_line();
    }

    let samples = clients.finish();
    report(&samples, migrated_in, &site.record()?);
    say("done; removing the namespaces");
    Ok(())
}

/// Builds the release binaries with a one-line progress report; the
/// build's own output (the eBPF build warns a lot) goes to a log file,
/// shown in part if the build fails.
fn build() -> Result<()> {
    let log_path = root().join("target/demo-build.log");
    std::fs::create_dir_all(root().join("target"))?;
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = cargo()
        .args(["build", "--release", "--bins", "--color", "never"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("running cargo build")?;
    let start = Instant::now();
    // A progress line rewritten in place on a terminal; one line in a log.
    let terminal = std::io::stdout().is_terminal();
    if !terminal {
        println!(
            "== building the release binaries (log: {})",
            log_path.display()
        );
    }
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if STOP.load(Ordering::Relaxed) {
            let _ = child.kill();
            bail!("interrupted");
        }
        if terminal {
            print!(
                "\r== building the release binaries ({} s; log: {})",
                start.elapsed().as_secs(),
                log_path.display()
            );
            let _ = std::io::stdout().flush();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if terminal {
        println!();
    } else {
        println!("   built in {} s", start.elapsed().as_secs());
    }
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        bail!("the build failed; the whole log is {}", log_path.display());
    }
    Ok(())
}

/// The hosts, their daemons and the workspace; dropped in reverse order of
/// start, the namespaces last.
struct Site {
    _unbound: Unbound,
    _knot: DnsServer,
    _redirector: Redirector,
    _dnsd: Daemon,
    _bpffs: Bpffs,
    _old_web: Nginx,
    _new_web: Nginx,
    ws: tempfile::TempDir,
    state: tempfile::TempDir,
    net: Topology,
}

impl Site {
    fn start() -> Result<Self> {
        let net = Topology::new()?;
        let old_web = Nginx::start(&net.old, &[80], OLD_BODY, &[])?;
        let new_web = Nginx::start(&net.new, &[80], NEW_BODY, &[])?;
        let ws = tempfile::Builder::new().prefix("cutover-demo").tempdir()?;
        std::fs::create_dir_all(ws.path().join("zones"))?;
        std::fs::copy(
            root().join("examples/workspace/zones/example.test.zone"),
            ws.path().join("zones/example.test.zone"),
        )?;
        std::fs::write(
            ws.path().join("dnsd.toml"),
            format!(
                "[[service]]\nname = \"{NAME}.\"\naddresses = [\"{OLD_IP}\"]\nttl = {TTL}\n\n\
                 [[secondary]]\naddress = \"{SECONDARY}\"\n"
            ),
        )?;
        // Closed connections leave the old host's table within seconds, so
        // that its counters fall to zero while you watch.
        std::fs::write(
            ws.path().join("redirector.toml"),
            "[timeouts]\nsyn = 5\nestablished = 30\nclosing = 1\n",
        )?;
        say(&format!("workspace {}", ws.path().display()));

        // dnsd runs beside the client's resolver, for brevity.
        let mut cmd = net.client.command(release_bin("dnsd"));
        cmd.arg("--workspace")
            .arg(ws.path())
            .args(["--listen", "127.0.0.1:5300", "--api", "127.0.0.1:8053"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(ws.path().join("dnsd.log"))?);
        let dnsd = Daemon::spawn("dnsd", cmd)?;
        let token = ws.path().join(".cutover/api-token");
        ensure!(
            wait_until(Duration::from_secs(10), || token.exists()),
            "dnsd did not start; see {}",
            ws.path().join("dnsd.log").display()
        );
        let bpffs = Bpffs::mount(&ws.path().join(".bpffs"))?;
        let state = tempfile::Builder::new()
            .prefix("cutover-demo-state")
            .tempdir()?;
        let redirector = Redirector::start(
            &net.old,
            &["eth0"],
            ws.path(),
            &bpffs.pins(),
            ws.path(),
            &["--api", "198.18.0.2:8054"],
        )?;
        // dnsd as a hidden primary: Knot copies the zone (NOTIFY, IXFR) and
        // the clients' resolver asks Knot.
        let secondary: std::net::SocketAddr = SECONDARY.parse()?;
        let knot = dns_peers::knot_secondary_in(&net.client, secondary, "127.0.0.1:5300".parse()?)?;
        let unbound = Unbound::start(
            &net.client,
            "127.0.0.53:53".parse()?,
            "example.test.",
            secondary,
        )?;
        let site = Self {
            _unbound: unbound,
            _knot: knot,
            _redirector: redirector,
            _dnsd: dnsd,
            _bpffs: bpffs,
            _old_web: old_web,
            _new_web: new_web,
            ws,
            state,
            net,
        };
        ensure!(
            wait_until(Duration::from_secs(10), || resolve(&site.net.client.name)
                == OLD_IP),
            "the resolver does not answer {NAME}"
        );
        Ok(site)
    }

    /// Runs `cutover ARGS` from the client's namespace to the end, its
    /// lines indented, with the clients' line every two seconds.
    fn cutover(&self, args: &[&str], clients: &Clients) -> Result<()> {
        let mut cmd = self.net.client.command(release_bin("cutover"));
        cmd.args([
            "--dns",
            "http://127.0.0.1:8053",
            "--old",
            OLD_API,
            "--token-file",
        ])
        .arg(self.ws.path().join(".cutover/api-token"))
        .arg("--state-dir")
        .arg(self.state.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("running cutover")?;
        let lines = echo(&mut child);
        let mut last = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if STOP.load(Ordering::Relaxed) {
                // cutover saw the Ctrl-C too: it stops where it is.
                let _ = child.wait();
                bail!("interrupted");
            }
            if last.elapsed() >= Duration::from_secs(2) {
                clients.report_line();
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for l in lines {
            let _ = l.join();
        }
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        ensure!(
            status.success(),
            "cutover {} failed ({status})",
            args.join(" ")
        );
        Ok(())
    }

    /// The migration record `cutover` keeps.
    fn record(&self) -> Result<toml::Table> {
        let path = self.state.path().join(format!("{NAME}.toml"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text.parse()?)
    }
}

/// Prints a child's output lines, indented, as they come. A progress line
/// that cutover rewrites in place (`\r`) is shown every five seconds.
fn echo(child: &mut Child) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    for stream in [out, err].into_iter().flatten() {
        threads.push(std::thread::spawn(move || {
            let mut progress_shown: Option<Instant> = None;
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let parts: Vec<&str> = line.split('\r').filter(|p| !p.trim().is_empty()).collect();
                let Some((last, rewritten)) = parts.split_last() else {
                    continue;
                };
                for p in rewritten {
                    if progress_shown.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        println!("   | {}", p.trim_end());
                        progress_shown = Some(Instant::now());
                    }
                }
                println!("   | {}", last.trim_end());
            }
        }));
    }
    threads
}

/// One request of a client: where the resolver sent it and what came back.
#[derive(Clone)]
struct Sample {
    /// When the client started resolving, as Unix time in ms (the
    /// record's times are Unix times).
    wall_ms: u64,
    ip: String,
    result: Result<String, String>,
}

impl Sample {
    /// Which host served it, and how.
    fn path(&self) -> &'static str {
        match (self.ip.as_str(), self.result.as_deref()) {
            (_, Err(_)) => "failed",
            (OLD_IP, Ok(OLD_BODY)) => "old",
            (OLD_IP, Ok(NEW_BODY)) => "via redirector",
            (NEW_IP, Ok(NEW_BODY)) => "new",
            _ => "unexpected",
        }
    }
}

/// The clients' request loops, bounded in time and count.
struct Clients {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Where the last line left off.
    reported: Mutex<(usize, Instant)>,
}

impl Clients {
    fn start(client: &Netns) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (samples, stop, ns) = (samples.clone(), stop.clone(), client.name.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(600);
                    for _ in 0..5000 {
                        if stop.load(Ordering::Relaxed) || STOP.load(Ordering::Relaxed) {
                            break;
                        }
                        if Instant::now() > deadline {
                            break;
                        }
                        let wall_ms = unix_ms();
                        let ip = resolve(&ns);
                        let result = if ip.is_empty() {
                            Err("the resolver gave no address".into())
                        } else {
                            cutover_tests::site_client::get(&ns, &ip)
                        };
                        if let Ok(mut s) = samples.lock() {
                            s.push(Sample {
                                wall_ms,
                                ip,
                                result,
                            });
                        }
                        std::thread::sleep(PACE);
                    }
                })
            })
            .collect();
        Self {
            samples,
            stop,
            threads,
            reported: Mutex::new((0, Instant::now())),
        }
    }

    /// "requests/s: old 10.0  via redirector 0.0  new 5.0  failed 0" since
    /// the last line.
    fn report_line(&self) {
        let Ok(all) = self.samples.lock() else { return };
        let Ok(mut reported) = self.reported.lock() else {
            return;
        };
        let (from, since) = *reported;
        let secs = since.elapsed().as_secs_f64().max(0.1);
        let recent = &all[from.min(all.len())..];
        let rate = |path: &str| recent.iter().filter(|s| s.path() == path).count() as f64 / secs;
        let failed = all.iter().filter(|s| s.result.is_err()).count();
        println!(
            "   requests/s: old host {:>5.1}   via the redirector {:>5.1}   new host {:>5.1}   \
             (failed so far: {failed})",
            rate("old"),
            rate("via redirector"),
            rate("new"),
        );
        *reported = (all.len(), Instant::now());
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The final report: requests by path, failures, and the move's times.
fn report(samples: &[Sample], migrated_in: Duration, record: &toml::Table) {
    say("report");
    let count = |path: &str| samples.iter().filter(|s| s.path() == path).count();
    println!(
        "   requests: {} (old host {}, through the redirector {}, new host {}), failed: {}",
        samples.len(),
        count("old"),
        count("via redirector"),
        count("new"),
        count("failed") + count("unexpected"),
    );
    for s in samples.iter().filter(|s| s.result.is_err()).take(3) {
        println!("   failed: {} -> {:?}", s.ip, s.result);
    }
    match record
        .get("in_sync_after_ms")
        .and_then(toml::Value::as_integer)
    {
        Some(ms) => {
            println!("   time to in-sync: every name server served the flip {ms} ms after it")
        }
        None => println!("   time to in-sync: not recorded"),
    }
    // Drained: the last request that still arrived at the old address
    // and was forwarded, counted from the flip (the record's time, in s).
    let flipped_ms = record
        .get("flipped_at")
        .and_then(toml::Value::as_integer)
        .and_then(|t| u64::try_from(t).ok())
        .map(|t| t * 1000);
    let last_forwarded = samples
        .iter()
        .filter(|s| s.path() == "via redirector")
        .map(|s| s.wall_ms)
        .max();
    match (flipped_ms, last_forwarded) {
        (Some(flip), Some(last)) => println!(
            "   time to drained: the last client still arriving at the old address came {:.1} s \
             after the flip ({} requests forwarded in all)",
            last.saturating_sub(flip) as f64 / 1000.0,
            count("via redirector"),
        ),
        _ => println!("   time to drained: no client came through the redirector"),
    }
    println!(
        "   cutover migrate took {:.0} s in all",
        migrated_in.as_secs_f64()
    );
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn say(line: &str) {
    println!("\n== {line}");
}

fn stoppable_sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The address the client's resolver gives for the site.
fn resolve(ns: &str) -> String {
    cutover_tests::site_client::resolve(ns, "127.0.0.53", NAME)
}
