//! `cargo xtask bench dns`: dnsperf against dnsd, NSD and Knot DNS in one
//! run. All three serve the shared test zone (`tests/data/example.test.zone`)
//! on their own 127.0.54.x address with the same number of UDP workers (dnsd
//! SO_REUSEPORT sockets, NSD server processes with reuseport, Knot UDP
//! threads), rate limiting off and answer rotation on (dnsd always rotates,
//! so the peers do the same work), and get the same query file: rotating
//! names, static names, NXDOMAIN and NODATA.
//!
//! Two figures per server, each the median over alternating rounds:
//! - queries/s with dnsperf unbounded (`-l` seconds, `-c` clients, `-T`
//!   threads: one per worker, so that dnsperf is not the bottleneck and
//!   queries are sent, hence received, on every CPU, as from a multi-queue
//!   NIC rather than from a single sending thread);
//! - server CPU per query at a fixed rate (`-Q`): the growth of utime+stime
//!   of the server's whole process tree (NSD forks its workers) in
//!   /proc/PID/stat, divided by the queries answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use cutover_tests::dig::{self, Query, Reply};
use cutover_tests::dns_peers::{self, DnsServer, Implementation, ServerOptions};

use super::procs;
use crate::util::{cargo, display, exec, release_bin, root};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per dnsperf run (each server gets one unbounded and one
    /// fixed-rate run per round).
    #[arg(long, default_value_t = 8)]
    duration: u32,
    /// dnsperf clients (UDP sockets) in the unbounded run.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// dnsperf threads in the unbounded run; 0 means one per UDP worker.
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Queries/s of the fixed-rate run that measures CPU per query.
    #[arg(long, default_value_t = 50_000)]
    rate: u32,
    /// Rounds over the three servers; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// UDP workers of every server.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Benchmark this dnsd binary instead of building the release one.
    #[arg(long)]
    dnsd: Option<PathBuf>,
    /// Workers kept on their own CPUs: `default` leaves every server at its
    /// default (on for dnsd, off for NSD and Knot); `on` turns on NSD's
    /// cpu-affinity, Knot's socket-affinity and dnsd's cpu_affinity; `off`
    /// turns them all off.
    #[arg(long, value_enum, default_value_t = Affinity::Default)]
    affinity: Affinity,
}

impl Args {
    /// dnsperf threads of the unbounded run.
    fn dnsperf_threads(&self) -> u32 {
        match self.threads {
            0 => u32::try_from(self.workers).unwrap_or(u32::MAX),
            n => n,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Affinity {
    Default,
    On,
    Off,
}

impl Affinity {
    fn option(self) -> Option<bool> {
        match self {
            Affinity::Default => None,
            Affinity::On => Some(true),
            Affinity::Off => Some(false),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Affinity::Default => "each server's default (dnsd on, NSD and Knot off)",
            Affinity::On => "on for every server",
            Affinity::Off => "off for every server",
        }
    }
}

/// Targets from issue 3, relative to NSD.
const TARGET_QPS_RATIO: f64 = 1.0;
const TARGET_CPU_RATIO: f64 = 0.8;

/// What one dnsperf run reported.
#[derive(Debug, Clone, Default)]
pub(super) struct Perf {
    pub(super) sent: u64,
    pub(super) completed: u64,
    pub(super) lost: u64,
    pub(super) qps: f64,
    /// Response codes and their counts.
    pub(super) rcodes: BTreeMap<String, u64>,
}

/// One server's results over all rounds.
#[derive(Default)]
struct Results {
    max: Vec<Perf>,
    fixed: Vec<Perf>,
    /// µs of server CPU per answered query, one per fixed-rate run.
    cpu_us: Vec<f64>,
}

pub fn run(args: Args) -> Result<()> {
    for tool in ["dnsperf", "nsd", "knotd", "dig"] {
        let in_sbin = Path::new("/usr/sbin").join(tool).exists();
        if !cutover_tests::bins::have(tool) && !in_sbin {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let queries = scratch.path().join("queries.txt");
    fs::write(&queries, query_file()).context("writing the dnsperf query file")?;

    let options = ServerOptions {
        workers: args.workers,
        rotate: true,
        cpu_affinity: args.affinity.option(),
        // For dnsd only (the others serve the zone file's two records).
        dnsd_toml: STEERED_API.to_string(),
        ..ServerOptions::default()
    };
    let mut servers: Vec<Result<DnsServer, String>> = vec![
        dns_peers::start_nsd(ip(1), &options).map_err(|e| format!("{e:#}")),
        dns_peers::start_knot(ip(2), &options).map_err(|e| format!("{e:#}")),
        args.dnsd
            .clone()
            .map_or_else(build_dnsd, Ok)
            .and_then(|bin| {
                dns_peers::start_dnsd(&bin, ip(3), &options).map_err(|e| format!("{e:#}"))
            }),
    ];
    for server in servers.iter_mut() {
        if let Ok(s) = server
            && let Err(e) = sanity_check(s)
        {
            *server = Err(format!("{e:#}"));
        }
    }
    let labels = [
        Implementation::Nsd,
        Implementation::Knot,
        Implementation::Dnsd,
    ]
    .map(Implementation::label);
    let mut results: Vec<Results> = (0..servers.len()).map(|_| Results::default()).collect();
    let ticks = clock_ticks()?;
    for round in 1..=args.rounds {
        for (i, server) in servers.iter_mut().enumerate() {
            let Ok(s) = server else { continue };
            match measure(s, &queries, &args, ticks) {
                Ok((max, fixed, cpu)) => {
                    // The raw figures behind each median, to judge the noise.
                    eprintln!(
                        "round {round}/{}: {:<9} {:>8.0} qps unbounded; at -Q {}: {} answered, \
                         {:.3} s CPU, {cpu:.2} µs/query",
                        args.rounds,
                        labels[i],
                        max.qps,
                        args.rate,
                        fixed.completed,
                        cpu * fixed.completed as f64 / 1e6,
                    );
                    results[i].max.push(max);
                    results[i].fixed.push(fixed);
                    results[i].cpu_us.push(cpu);
                }
                Err(e) => *server = Err(format!("{e:#}")),
            }
        }
    }
    print!("{}", table(&args, &labels, &servers, &results));
    Ok(())
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 54, last))
}

/// Builds dnsd in release mode; a failure makes dnsd "not available".
fn build_dnsd() -> Result<PathBuf, String> {
    exec(cargo().args(["build", "--release", "-p", "dnsd"]))
        .map_err(|e| format!("release build failed: {e:#}"))?;
    let bin = release_bin("dnsd");
    if !bin.exists() {
        return Err(format!("{} is missing after the build", bin.display()));
    }
    Ok(bin)
}

/// `api.example.test.` as a service with the zone file's two addresses,
/// health-checked, weighted and tied to a region that holds the load
/// generator's address: its answers go through every step of `steer` on
/// dnsd's fast path. The checks fail (nothing listens there), so both
/// addresses are served (fail open), as the peers serve them.
const STEERED_API: &str = r#"
[regions]
"127.0.0.0/8" = "here"

[[service]]
name = "api.example.test."
ttl = 120
addresses = [
  { address = "198.18.1.1", weight = 3, region = "here" },
  { address = "198.18.1.2", weight = 1 },
]
[service.health]
check = "tcp"
port = 9
interval = "5s"
timeout = "1s"
"#;

/// The query mix: rotating names (several A/AAAA), static names, NXDOMAIN
/// and NODATA. dnsperf cycles through the file in order.
fn query_file() -> String {
    // (name, type, share in percent)
    const MIX: &[(&str, &str, usize)] = &[
        ("www.example.test.", "A", 30),
        ("www.example.test.", "AAAA", 10),
        ("api.example.test.", "A", 10),
        ("static.example.test.", "A", 15),
        ("ns1.example.test.", "A", 5),
        ("mail.example.test.", "AAAA", 5),
        ("", "A", 15), // NXDOMAIN, a different name each time
        ("static.example.test.", "AAAA", 5),
        ("www.example.test.", "TXT", 5),
    ];
    let mut lines = Vec::new();
    let mut nx = 0;
    // Interleave: in each block of 100 lines, spread every entry's share
    // evenly so that no run of the file is all one kind.
    let mut slots: Vec<(f64, &str, &str)> = Vec::new();
    for &(name, qtype, share) in MIX {
        for k in 0..share {
            slots.push(((k as f64 + 0.5) / share as f64, name, qtype));
        }
    }
    slots.sort_by(|a, b| a.0.total_cmp(&b.0));
    for _block in 0..10 {
        for &(_, name, qtype) in &slots {
            if name.is_empty() {
                lines.push(format!("nx{nx}.example.test. {qtype}"));
                nx += 1;
            } else {
                lines.push(format!("{name} {qtype}"));
            }
        }
    }
    lines.join("\n") + "\n"
}

/// A server that answers wrongly must not be measured: check one name of
/// each kind of the mix first.
fn sanity_check(server: &DnsServer) -> Result<()> {
    let expect = [
        ("www.example.test.", "A", "NOERROR", 4),
        ("api.example.test.", "A", "NOERROR", 2),
        ("static.example.test.", "A", "NOERROR", 1),
        ("nx1.example.test.", "A", "NXDOMAIN", 0),
        ("www.example.test.", "TXT", "NOERROR", 0),
    ];
    for (name, qtype, rcode, answers) in expect {
        let q = Query::new(name, qtype);
        let reply = dig::ask(server.addr, &q)?;
        let ok = match &reply {
            Reply::Message(m) => m.rcode == rcode && m.answer.len() == answers,
            Reply::Silence(_) => false,
        };
        if !ok {
            bail!(
                "{} answers {q} wrongly (expected {rcode} with {answers} records):\n{reply}",
                server.label()
            );
        }
    }
    Ok(())
}

/// One round for one server: the unbounded run, then the fixed-rate run
/// with the server's CPU time around it.
fn measure(
    server: &mut DnsServer,
    queries: &Path,
    args: &Args,
    ticks: f64,
) -> Result<(Perf, Perf, f64)> {
    let threads = args.dnsperf_threads();
    let max = dnsperf(
        server.addr,
        queries,
        args.duration,
        args.clients,
        threads,
        None,
    )?;
    server.assert_running()?;
    let before = tree_cpu_ticks(server.pid())?;
    let fixed = dnsperf(server.addr, queries, args.duration, 1, 1, Some(args.rate))?;
    let after = tree_cpu_ticks(server.pid())?;
    server.assert_running()?;
    if fixed.completed == 0 {
        bail!("{} answered no query at {} qps", server.label(), args.rate);
    }
    let cpu_us = (after - before) as f64 / ticks * 1e6 / fixed.completed as f64;
    Ok((max, fixed, cpu_us))
}

fn dnsperf(
    addr: SocketAddr,
    queries: &Path,
    seconds: u32,
    clients: u32,
    threads: u32,
    rate: Option<u32>,
) -> Result<Perf> {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string()])
        .args(["-c", &clients.to_string()])
        .args(["-T", &threads.to_string()])
        // EDNS0, as resolvers send it; 1 s timeout: a late answer is lost.
        .arg("-e")
        .args(["-t", "1"]);
    if let Some(rate) = rate {
        cmd.args(["-Q", &rate.to_string()]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", display(&cmd)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            display(&cmd),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_dnsperf(&text).with_context(|| format!("reading the output of {}", display(&cmd)))
}

pub(super) fn parse_dnsperf(text: &str) -> Result<Perf> {
    let mut perf = Perf::default();
    let first_number = |s: &str| -> Result<f64> {
        s.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no number in {s:?}"))
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Queries sent:") {
            perf.sent = first_number(v)? as u64;
        } else if let Some(v) = line.strip_prefix("Queries completed:") {
            perf.completed = first_number(v)? as u64;
        } else if let Some(v) = line.strip_prefix("Queries lost:") {
            perf.lost = first_number(v)? as u64;
        } else if let Some(v) = line.strip_prefix("Queries per second:") {
            perf.qps = first_number(v)?;
        } else if let Some(v) = line.strip_prefix("Response codes:") {
            // "NOERROR 1135342 (80.00%), NXDOMAIN 283836 (20.00%)"
            for part in v.split(',') {
                let mut f = part.split_whitespace();
                if let (Some(code), Some(n)) = (f.next(), f.next()) {
                    perf.rcodes.insert(code.to_string(), n.parse().unwrap_or(0));
                }
            }
        }
    }
    if perf.sent == 0 {
        bail!("dnsperf sent no query:\n{text}");
    }
    Ok(perf)
}

/// utime+stime (in clock ticks) of `pid` and all its descendants.
fn tree_cpu_ticks(pid: u32) -> Result<u64> {
    let procs = procs::all()?;
    let tree = procs::tree(pid, &procs)?;
    Ok(procs
        .iter()
        .filter(|p| tree.contains(&p.pid))
        .map(|p| p.ticks)
        .sum())
}

fn clock_ticks() -> Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("reading CLK_TCK")
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn table(
    args: &Args,
    labels: &[&str],
    servers: &[Result<DnsServer, String>],
    results: &[Results],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nDNS: dnsperf -e, unbounded for {d} s with {c} clients in {t} threads (qps), then -Q {r} \
         for {d} s with 1 client (server CPU per answered query); median of {n} rounds; {w} UDP \
         workers each; CPU affinity {a}; RRL off, rotation on; zone tests/data/example.test.zone",
        d = args.duration,
        c = args.clients,
        t = args.dnsperf_threads(),
        a = args.affinity.label(),
        r = args.rate,
        n = args.rounds,
        w = args.workers,
    );
    let _ = writeln!(out, "cutover at {}, {}", revision(), versions());
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:>7} {:>14} {:>7} {:>20}",
        "server", "qps", "vs NSD", "µs CPU/query", "vs NSD", "lost (max / fixed)"
    );
    let qps: Vec<f64> = results
        .iter()
        .map(|r| median(&r.max.iter().map(|p| p.qps).collect::<Vec<_>>()))
        .collect();
    let cpu: Vec<f64> = results.iter().map(|r| median(&r.cpu_us)).collect();
    let nsd_ok = servers[0].is_ok();
    for (i, label) in labels.iter().enumerate() {
        match &servers[i] {
            Err(reason) => {
                let first = reason.lines().next().unwrap_or("");
                let _ = writeln!(out, "{label:<10} not available: {first}");
            }
            Ok(_) => {
                let ratio = |x: f64, base: f64| {
                    if nsd_ok {
                        format!("{:.2}", x / base)
                    } else {
                        "-".into()
                    }
                };
                let lost_max: u64 = results[i].max.iter().map(|p| p.lost).sum();
                let lost_fixed: u64 = results[i].fixed.iter().map(|p| p.lost).sum();
                let _ = writeln!(
                    out,
                    "{label:<10} {:>10.0} {:>7} {:>14.2} {:>7} {:>20}",
                    qps[i],
                    ratio(qps[i], qps[0]),
                    cpu[i],
                    ratio(cpu[i], cpu[0]),
                    format!("{lost_max} / {lost_fixed}"),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "targets: dnsd >= {TARGET_QPS_RATIO:.1} x NSD qps, <= {TARGET_CPU_RATIO:.1} x NSD µs CPU/query"
    );
    if nsd_ok && let Ok(_) = &servers[2] {
        let q = qps[2] / qps[0];
        let c = cpu[2] / cpu[0];
        let _ = writeln!(
            out,
            "dnsd: {q:.2} x NSD qps ({}), {c:.2} x NSD CPU/query ({})",
            met(q >= TARGET_QPS_RATIO),
            met(c <= TARGET_CPU_RATIO)
        );
    }
    // Noise shows in the spread between rounds: a ratio is only as good as
    // the ranges it comes from.
    for (i, label) in labels.iter().enumerate() {
        if servers[i].is_err() || results[i].max.is_empty() {
            continue;
        }
        let range = |v: Vec<f64>| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min, max)
        };
        let (qmin, qmax) = range(results[i].max.iter().map(|p| p.qps).collect());
        let (cmin, cmax) = range(results[i].cpu_us.clone());
        let _ = writeln!(
            out,
            "spread over rounds, {label}: {qmin:.0}-{qmax:.0} qps, {cmin:.2}-{cmax:.2} µs CPU/query"
        );
    }
    // The same query file must give the same mix of response codes: a
    // server that is fast because it answers wrongly shows up here.
    for (i, label) in labels.iter().enumerate() {
        if servers[i].is_err() {
            continue;
        }
        let mut total: BTreeMap<String, u64> = BTreeMap::new();
        for p in &results[i].max {
            for (code, n) in &p.rcodes {
                *total.entry(code.clone()).or_default() += n;
            }
        }
        let sum: u64 = total.values().sum::<u64>().max(1);
        let mix: Vec<String> = total
            .iter()
            .map(|(code, n)| format!("{code} {:.1}%", *n as f64 * 100.0 / sum as f64))
            .collect();
        let _ = writeln!(out, "response codes, {label}: {}", mix.join(", "));
    }
    out
}

/// The commit the benchmark ran on, so that a table can be traced back.
pub(super) fn revision() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "an unknown commit".into())
}

/// The peers' and dnsperf's versions, as they print them.
pub(super) fn versions() -> String {
    // (program, argument, a word on the line that holds the version)
    let tools = [
        ("nsd", "-v", "NSD"),
        ("knotd", "--version", "Knot"),
        ("dnsperf", "-h", "Version"),
    ];
    tools
        .iter()
        .filter_map(|(program, arg, needle)| {
            let out = Command::new(program).arg(arg).output().ok()?;
            let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
            let line = text
                .lines()
                .find(|l| l.contains(needle))?
                .trim()
                .to_string();
            Some(if *program == "dnsperf" {
                format!("dnsperf {}", line.trim_start_matches("Version ").trim())
            } else {
                line
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dnsperf_statistics() {
        let text = "\
Statistics:

  Queries sent:         1419178
  Queries completed:    1419170 (100.00%)
  Queries lost:         8 (0.00%)

  Response codes:       NOERROR 1135342 (80.00%), NXDOMAIN 283828 (20.00%)
  Average packet size:  request 34, response 91
  Run time (s):         10.000106
  Queries per second:   141916.290
";
        let p = parse_dnsperf(text).unwrap();
        assert_eq!(p.sent, 1419178);
        assert_eq!(p.completed, 1419170);
        assert_eq!(p.lost, 8);
        assert!((p.qps - 141916.29).abs() < 0.01);
        assert_eq!(p.rcodes["NXDOMAIN"], 283828);
    }

    #[test]
    fn the_query_mix_has_every_kind() {
        let file = query_file();
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.len(), 1000);
        let nx = lines.iter().filter(|l| l.starts_with("nx")).count();
        assert_eq!(nx, 150);
        assert_eq!(
            lines
                .iter()
                .filter(|l| **l == "www.example.test. A")
                .count(),
            300
        );
    }
}
