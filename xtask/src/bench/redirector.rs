//! `cargo xtask bench redirector`: in one topology (client, old, new on a
//! bridge, nginx with one worker on new), wrk from the client
//!   (a) straight to the new host,
//!   (b) through the old host with the mission's iptables DNAT + MASQUERADE,
//!   (c) through the old host with the XDP redirector,
//! with keep-alive (requests/s, p99) and with `Connection: close`
//! (connections/s); plus ns/packet of a tracked flow from `BPF_PROG_TEST_RUN`;
//! then the shapes of `redirector_shapes` (many clients, bulk with offloads).
//! The three paths run in alternating rounds and the table shows medians, so
//! that a noisy neighbour hurts all of them alike.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::topology::{NEW_IP, OLD_IP, Topology};

use crate::util::{cargo, exec, release_bin};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u32,
    /// Rounds over the three paths; the table shows the median.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// The redirector's `--xdp-mode` (auto is generic on the test's veth).
    /// With native, the switch ports run XDP_PASS so that XDP_TX'd frames
    /// are delivered, which every path then pays for.
    #[arg(long, default_value = "auto", value_parser = ["auto", "native", "generic"])]
    xdp_mode: String,
    /// Client addresses of the many-clients rows (at most 250).
    #[arg(long, default_value_t = 250)]
    clients: u32,
    /// Seconds per bulk (iperf3) run.
    #[arg(long, default_value_t = 5)]
    bulk_duration: u64,
    /// Which parts to run: wrk (one wrk client), clients (many clients),
    /// bulk (iperf3 with offloads on), pps (packets per second per core).
    #[arg(long, value_delimiter = ',', default_value = "wrk,clients,bulk,pps")]
    parts: Vec<String>,
    /// Established UDP flows of the pps part.
    #[arg(long, default_value_t = 1024)]
    flows: u16,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Via {
    Direct,
    Iptables,
    Xdp,
}

#[derive(Default, Clone, Copy)]
struct Wrk {
    per_sec: f64,
    p99_ms: f64,
    errors: u64,
}

pub fn run(args: Args) -> Result<()> {
    exec(cargo().args(["build", "--release", "--bins"]))?;
    let wants = |part: &str| args.parts.iter().any(|p| p == part);
    if wants("wrk") {
        one_client(&args)?;
    }
    let mode = &args.xdp_mode;
    if wants("clients") {
        super::redirector_shapes::many_clients(
            args.clients,
            args.duration.into(),
            args.rounds,
            mode,
        )?;
    }
    if wants("bulk") {
        super::redirector_shapes::bulk(args.bulk_duration, args.rounds, mode)?;
    }
    if wants("pps") {
        super::redirector_pps::pps(args.flows, args.bulk_duration, args.rounds)?;
    }
    Ok(())
}

/// The wrk rows and the per-packet cost.
fn one_client(args: &Args) -> Result<()> {
    let ns_per_packet = per_packet_cost();

    let net = if args.xdp_mode == "native" {
        Topology::for_native_xdp()?
    } else {
        Topology::new()?
    };
    let _nginx = Nginx::start(&net.new, &[80], "served by new\n", &[])?;
    tune_client(&net.client)?;
    enable_forwarding(&net.old)?;

    let paths = [Via::Direct, Via::Iptables, Via::Xdp];
    let mut keepalive: Vec<Vec<Wrk>> = vec![Vec::new(); 3];
    let mut close: Vec<Vec<Wrk>> = vec![Vec::new(); 3];
    // A path that cannot be set up is reported as such, not measured as 0.
    let mut unavailable: Vec<Option<String>> = vec![None; 3];
    for round in 1..=args.rounds {
        for (i, path) in paths.iter().enumerate() {
            if unavailable[i].is_some() {
                continue;
            }
            eprintln!("round {round}/{}: {path:?}", args.rounds);
            let _guard = match switch_on(&net, *path, &args.xdp_mode) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("{path:?} is not available: {e:#}");
                    unavailable[i] = Some(format!("{e:#}"));
                    continue;
                }
            };
            let target = match path {
                Via::Direct => NEW_IP,
                _ => OLD_IP,
            };
            keepalive[i].push(wrk(&net.client, target, args, false)?);
            close[i].push(wrk(&net.client, target, args, true)?);
        }
    }

    let ka: Vec<Wrk> = keepalive.iter().map(|r| median(r)).collect();
    let cl: Vec<Wrk> = close.iter().map(|r| median(r)).collect();
    println!();
    println!(
        "redirector benchmark: wrk -t1 -c{} -d{}s, nginx 1 worker, median of {} rounds, \
         --xdp-mode {}",
        args.connections, args.duration, args.rounds, args.xdp_mode
    );
    println!(
        "| path | keep-alive req/s | ratio to direct | p99 ms | close conn/s | ratio to iptables | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, name) in [
        "(a) direct to new",
        "(b) iptables DNAT+MASQUERADE",
        "(c) XDP redirector",
    ]
    .iter()
    .enumerate()
    {
        if let Some(reason) = &unavailable[i] {
            println!("| {name} | not available: {reason} | | | | | |");
            continue;
        }
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {} |",
            ka[i].per_sec,
            ka[i].per_sec / ka[0].per_sec,
            ka[i].p99_ms,
            cl[i].per_sec,
            cl[i].per_sec / cl[1].per_sec,
            ka[i].errors + cl[i].errors,
        );
    }
    match ns_per_packet {
        Ok(c) => println!(
            "\ntracked-flow packet, BPF_PROG_TEST_RUN repeat=1e6, ns/packet: IPv4 TCP {:.1}, UDP \
             {:.1}; IPv6 TCP {:.1}, UDP {:.1}; of which {:.0} ns the harness's floor (a program \
             that only returns): the program {:.1} / {:.1} / {:.1} / {:.1} (target <= 50)",
            c.tcp,
            c.udp,
            c.tcp6,
            c.udp6,
            c.floor,
            c.tcp - c.floor,
            c.udp - c.floor,
            c.tcp6 - c.floor,
            c.udp6 - c.floor
        ),
        Err(e) => println!("\ntracked-flow packet cost: not measured: {e:#}"),
    }
    let ratio = |num: f64, den: f64| {
        if num > 0.0 && den > 0.0 {
            format!("{:.2}", num / den)
        } else {
            "n/a".to_string()
        }
    };
    println!(
        "targets: (c) >= 0.97 x (a) keep-alive [{}], (c) >= 1.5 x (b) conn/s [{}], <= 100 ns/packet",
        ratio(ka[2].per_sec, ka[0].per_sec),
        ratio(cl[2].per_sec, cl[1].per_sec),
    );
    // The old host can only add work to the direct path, so (a) is the
    // ceiling of (c): say how much of the gap iptables leaves (c) closes,
    // and whether the conn/s target fits under the ceiling at all.
    let closed = |a: f64, b: f64, c: f64| {
        if a > b && b > 0.0 {
            format!("{:.0} %", 100.0 * (c - b) / (a - b))
        } else {
            "n/a".to_string()
        }
    };
    println!(
        "ceiling: (a) is {} x (b) in conn/s; of the gap between (b) and (a), (c) closes {} \
         with keep-alive and {} in conn/s",
        ratio(cl[0].per_sec, cl[1].per_sec),
        closed(ka[0].per_sec, ka[1].per_sec, ka[2].per_sec),
        closed(cl[0].per_sec, cl[1].per_sec, cl[2].per_sec),
    );
    Ok(())
}

/// What a path needs switched on while it is measured; switched off on drop.
pub(super) enum Guard<'a> {
    Nothing,
    Iptables(&'a Netns),
    Redirector {
        _daemon: Daemon,
        _workspace: tempfile::TempDir,
    },
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Guard::Iptables(old) = self {
            for iptables in ["iptables", "ip6tables"] {
                let _ = old.exec(iptables, &["-t", "nat", "-F"]);
                let _ = old.exec(iptables, &["-F", "FORWARD"]);
            }
            // Its NAT state too, so that the next round starts alike.
            let _ = old.exec("conntrack", &["-F"]);
        }
    }
}

/// The mission's redirect of port 80 to the new host, on eth0.
fn www() -> Vec<(u16, String)> {
    vec![(80, format!("{NEW_IP}:80"))]
}

fn switch_on<'a>(net: &'a Topology, path: Via, xdp_mode: &str) -> Result<Guard<'a>> {
    switch_on_redirects(&net.old, path, &www(), &["eth0"], xdp_mode)
}

/// Switches `path` on for `redirects` (OLD_IP:port -> address:port, TCP)
/// on the old host's `ifaces`.
pub(super) fn switch_on_redirects<'a>(
    old: &'a Netns,
    path: Via,
    redirects: &[(u16, String)],
    ifaces: &[&str],
    xdp_mode: &str,
) -> Result<Guard<'a>> {
    switch_on_protocol(old, path, "tcp", OLD_IP, redirects, ifaces, xdp_mode)
}

/// `switch_on_redirects` for `proto` (`tcp` or `udp`).
/// `old_ip` is the address redirected from, IPv4 or IPv6 (then `to` is
/// `[IPv6]:PORT`, and iptables is ip6tables).
pub(super) fn switch_on_protocol<'a>(
    old: &'a Netns,
    path: Via,
    proto: &str,
    old_ip: &str,
    redirects: &[(u16, String)],
    ifaces: &[&str],
    xdp_mode: &str,
) -> Result<Guard<'a>> {
    let v6 = old_ip.contains(':');
    match path {
        Via::Direct => Ok(Guard::Nothing),
        Via::Iptables => {
            let iptables = if v6 { "ip6tables" } else { "iptables" };
            // The mission's recipe, verbatim, once per redirect.
            for (port, to) in redirects {
                let port = port.to_string();
                #[rustfmt::skip]
                old.exec(iptables, &[
                    "-t", "nat", "-A", "PREROUTING", "-p", proto, "-d", old_ip, "--dport", &port,
                    "-j", "DNAT", "--to", to,
                ])?;
            }
            old.exec(
                iptables,
                &["-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE"],
            )?;
            old.exec(iptables, &["-A", "FORWARD", "-j", "ACCEPT"])?;
            Ok(Guard::Iptables(old))
        }
        Via::Xdp => {
            let ws = tempfile::Builder::new().prefix("cutover-bench").tempdir()?;
            let from = |port: &u16| {
                if v6 {
                    format!("[{old_ip}]:{port}")
                } else {
                    format!("{old_ip}:{port}")
                }
            };
            let rules: String = redirects
                .iter()
                .map(|(port, to)| {
                    format!(
                        "[[rule]]\nname = \"p{port}\"\nfrom = \"{}\"\nto = \"{to}\"\n\
                         proto = \"{proto}\"\n",
                        from(port)
                    )
                })
                .collect();
            std::fs::write(ws.path().join("redirector.toml"), rules)?;
            let daemon = start_redirector(old, ws.path(), ifaces, xdp_mode)?;
            Ok(Guard::Redirector {
                _daemon: daemon,
                _workspace: ws,
            })
        }
    }
}

pub(super) fn start_redirector(
    old: &Netns,
    ws: &Path,
    ifaces: &[&str],
    xdp_mode: &str,
) -> Result<Daemon> {
    let bin = release_bin("redirector");
    let mut cmd = old.command(&bin);
    cmd.arg("run");
    for iface in ifaces {
        cmd.args(["--iface", iface]);
    }
    cmd.args(["--xdp-mode", xdp_mode, "--no-api"])
        .arg("--workspace")
        .arg(ws);
    cmd.env("RUST_LOG", "warn");
    let mut daemon = Daemon::spawn("redirector", cmd)?;
    let attached = wait_until(Duration::from_secs(20), || {
        old.exec("ip", &["link", "show", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
            .unwrap_or(false)
    });
    daemon.assert_running()?;
    if !attached {
        bail!("the redirector did not attach to eth0 within 20 s");
    }
    Ok(daemon)
}

fn tune_client(client: &Netns) -> Result<()> {
    // `Connection: close` opens tens of thousands of connections from one
    // address: let TIME_WAIT ports be reused and widen the port range.
    client.sysctl("net.ipv4.tcp_tw_reuse=1")?;
    client.sysctl("net.ipv4.ip_local_port_range=1024 65000")
}

pub(super) fn enable_forwarding(old: &Netns) -> Result<()> {
    // Needed by the iptables recipe; the redirector sets the same itself.
    old.sysctl("net.ipv4.ip_forward=1")?;
    old.sysctl("net.ipv4.conf.all.send_redirects=0")?;
    old.sysctl("net.ipv4.conf.eth0.send_redirects=0")
}

fn wrk(client: &Netns, target: &str, args: &Args, close: bool) -> Result<Wrk> {
    let url = format!("http://{target}/");
    let conns = args.connections.to_string();
    let secs = format!("{}s", args.duration);
    let mut cmd = client.command("wrk");
    cmd.args([
        "-t1",
        "-c",
        &conns,
        "-d",
        &secs,
        "--latency",
        "--timeout",
        "5s",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(&url);
    let out = cmd.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("parsing wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let mut have_rate = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.per_sec = v.trim().parse()?;
            have_rate = true;
        } else if let Some(v) = line.strip_prefix("99%") {
            w.p99_ms = parse_duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>()?;
        }
    }
    if !have_rate {
        bail!("no Requests/sec line");
    }
    Ok(w)
}

fn parse_duration_ms(v: &str) -> Result<f64> {
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .context("latency without a unit")?;
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown unit {unit}"),
    })
}

fn median(runs: &[Wrk]) -> Wrk {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// ns/packet of a tracked-flow packet of each family and protocol.
struct Cost {
    tcp: f64,
    udp: f64,
    tcp6: f64,
    udp6: f64,
    /// The same runs of a program that only returns.
    floor: f64,
}

/// `Cost`, measured by the program test `per_packet_cost` with
/// BPF_PROG_TEST_RUN and repeat.
fn per_packet_cost() -> Result<Cost> {
    let out = cargo()
        .args([
            "test",
            "--release",
            "-p",
            "redirector",
            "--test",
            "xdp_program",
            "--",
            "--ignored",
            "--exact",
            "per_packet_cost",
            "--nocapture",
        ])
        .output()
        .context("running the per_packet_cost program test")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .with_context(|| format!("per_packet_cost printed no {key} line"))?
            .trim()
            .parse()
            .with_context(|| format!("{key} is not a number"))
    };
    Ok(Cost {
        tcp: value("ns_per_packet=")?,
        udp: value("udp_ns_per_packet=")?,
        tcp6: value("ipv6_ns_per_packet=")?,
        udp6: value("ipv6_udp_ns_per_packet=")?,
        floor: value("floor_ns=")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://198.18.0.3/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   836.54us  205.01us   6.03ms   83.21%
  Latency Distribution
     50%  795.00us
     75%  0.92ms
     90%    1.08ms
     99%    1.61ms
  599183 requests in 10.10s, 140.87MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
Requests/sec:  59325.04
Transfer/sec:     13.95MB
";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.per_sec, 59325.04);
        assert_eq!(w.p99_ms, 1.61);
        assert_eq!(w.errors, 5);
    }

    #[test]
    fn parses_latency_units() {
        assert_eq!(parse_duration_ms("795.00us").unwrap(), 0.795);
        assert_eq!(parse_duration_ms("1.20s").unwrap(), 1200.0);
    }
}
