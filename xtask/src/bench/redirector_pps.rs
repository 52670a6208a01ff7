//! `bench redirector --parts pps`: forwarding capacity in packets per
//! second per core, as Katran and Cilium state it. A generator (`blast`)
//! sends small UDP datagrams of many established flows to OLD:7, over IPv4
//! and over IPv6;
//! the old host forwards them to the sink (NEW:7007 behind its eth1), whose
//! XDP program drops them. The old host's receive processing runs on CPU 1
//! (RPS), the generator on CPU 0, so CPU 1's busy time is what forwarding
//! costs. Paths: iptables DNAT + MASQUERADE, the redirector in generic
//! mode, and in native mode (veth NAPI: its work runs where the generator
//! sends, on CPU 0, so only its rate is shown). Alternating rounds, medians.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cutover_tests::netns::{Netns, run};
use cutover_tests::topology::OLD_IP;
use cutover_tests::udp_echo::UdpEcho;
use cutover_tests::xdp_pass::XdpPass;

use super::blast::{self, udp_frame};
use super::redirector::{Guard, Via, enable_forwarding, switch_on_protocol};

const GEN_IP: &str = "198.18.0.1";
const OLD_FAR_IP: &str = "198.18.1.1";
const SINK_IP: &str = "198.18.1.3";
const GEN6: &str = "2001:2::1";
const OLD6: &str = "2001:2::2";
const OLD_FAR6: &str = "2001:2:0:1::1";
const SINK6: &str = "2001:2:0:1::3";

/// The address family a run's flows are of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// (generator, old host, sink) addresses.
    fn addresses(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Family::V4 => (GEN_IP, OLD_IP, SINK_IP),
            Family::V6 => (GEN6, OLD6, SINK6),
        }
    }

    fn at(addr: &str, port: u16) -> SocketAddr {
        SocketAddr::new(addr.parse().expect("an address"), port)
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];
const GENERATOR_CPU: usize = 0;
const FORWARDING_CPU: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Iptables,
    Generic,
    Native,
}

const PATHS: [Path; 3] = [Path::Generic, Path::Iptables, Path::Native];

/// One measured run.
#[derive(Clone, Copy, Default, Debug)]
struct Run {
    sent_pps: f64,
    forwarded_pps: f64,
    /// CPU 1's busy share during the run.
    busy: f64,
}

impl Run {
    /// Packets forwarded per second of CPU 1's time.
    fn per_core(&self) -> f64 {
        if self.busy > 0.0 {
            self.forwarded_pps / self.busy
        } else {
            0.0
        }
    }
}

/// Generator, old host (eth0 towards the generator, eth1 towards the sink)
/// and sink, on veth pairs.
struct Line {
    generator: Netns,
    old: Netns,
    sink: Netns,
    old_mac: [u8; 6],
    generator_mac: [u8; 6],
}

impl Line {
    fn build() -> Result<Self> {
        let generator = Netns::new("ppgen")?;
        let old = Netns::new("ppold")?;
        let sink = Netns::new("ppsink")?;
        #[rustfmt::skip]
        run("ip", &["link", "add", "gen0", "netns", &generator.name, "type", "veth",
            "peer", "name", "eth0", "netns", &old.name])?;
        #[rustfmt::skip]
        run("ip", &["link", "add", "eth1", "netns", &old.name, "type", "veth",
            "peer", "name", "sink0", "netns", &sink.name])?;
        for (ns, dev, addr, addr6) in [
            (&generator, "gen0", GEN_IP, GEN6),
            (&old, "eth0", OLD_IP, OLD6),
            (&old, "eth1", OLD_FAR_IP, OLD_FAR6),
            (&sink, "sink0", SINK_IP, SINK6),
        ] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.ip(&["addr", "add", &format!("{addr6}/64"), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        sink.ip(&["route", "add", "default", "via", OLD_FAR_IP])?;
        sink.ip(&["-6", "route", "add", "default", "via", OLD_FAR6])?;
        enable_forwarding(&old)?;
        old.sysctl("net.ipv6.conf.all.forwarding=1")?;
        // The old host's receive work on CPU 1, everything else's on CPU 0.
        for (ns, dev, cpus) in [
            (&old, "eth0", "2"),
            (&old, "eth1", "2"),
            (&sink, "sink0", "1"),
            (&generator, "gen0", "1"),
        ] {
            ns.exec(
                "sh",
                &[
                    "-c",
                    &format!("echo {cpus} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                ],
            )?;
        }
        for (from, to) in [
            (&generator, OLD_IP),
            (&old, SINK_IP),
            (&generator, OLD6),
            (&old, SINK6),
        ] {
            from.exec("ping", &["-c1", "-W2", to])?;
        }
        Ok(Self {
            old_mac: mac(&old, "eth0")?,
            generator_mac: mac(&generator, "gen0")?,
            generator,
            old,
            sink,
        })
    }

    /// One datagram per flow, client port 10000 + i to OLD:7.
    fn frames(&self, family: Family, flows: u16) -> Vec<Vec<u8>> {
        let (generator, old, _) = family.addresses();
        (0..flows)
            .map(|i| {
                udp_frame(
                    self.old_mac,
                    self.generator_mac,
                    Family::at(generator, 10000 + i),
                    Family::at(old, 7),
                )
            })
            .collect()
    }
}

fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let text = ns.exec("cat", &[&format!("/sys/class/net/{dev}/address")])?;
    let text = String::from_utf8_lossy(&text.stdout);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("the MAC of {dev}: {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the MAC of {dev}: {text:?}"))
}

fn counter(ns: &Netns, dev: &str, name: &str) -> Result<u64> {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{dev}/statistics/{name}")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// (busy, total) jiffies of one CPU from /proc/stat.
fn cpu_jiffies(cpu: usize) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{cpu} ")))
        .with_context(|| format!("no cpu{cpu} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let total = busy + at(3) + at(4);
    Ok((busy, total))
}

/// Switches `path` on: the redirect of UDP OLD:7 to the sink's 7007.
fn switch_on(line: &Line, path: Path, family: Family) -> Result<Guard<'_>> {
    let (via, mode) = match path {
        Path::Iptables => (Via::Iptables, "generic"),
        Path::Generic => (Via::Xdp, "generic"),
        Path::Native => (Via::Xdp, "native"),
    };
    let (_, old, sink) = family.addresses();
    let redirects = [(7, Family::at(sink, 7007).to_string())];
    let ifaces = ["eth0", "eth1"];
    switch_on_protocol(&line.old, via, "udp", old, &redirects, &ifaces, mode)
}

/// Establishes `flows` UDP flows of `family` through `path` (one datagram
/// each, echoed by the sink), then blasts them for `seconds`.
fn measure(line: &Line, path: Path, family: Family, flows: u16, seconds: u64) -> Result<Run> {
    let frames = line.frames(family, flows);
    // XDP on the generator's and the sink's ends: in native mode frames
    // redirected to a veth are delivered only when its peer runs XDP, and
    // every path pays the same for it.
    let _gen_xdp = XdpPass::attach(&line.generator, "gen0")?;
    let on = switch_on(line, path, family)?;
    {
        let _pass = XdpPass::attach(&line.sink, "sink0")?;
        let (_, _, sink) = family.addresses();
        let echo = UdpEcho::start(&line.sink, Family::at(sink, 7007), b"")?;
        // Twice: a veth ring under XDP loses the odd frame of a burst, and
        // a flow that misses its first answer is set up by its second.
        blast::each_once(&line.generator, "gen0", &frames)?;
        std::thread::sleep(Duration::from_millis(100));
        blast::each_once(&line.generator, "gen0", &frames)?;
        let want = 2 * u64::from(flows);
        cutover_tests::process::wait_until(Duration::from_secs(5), || echo.seen() >= want);
        // A flow whose datagrams all went missing is set up during the
        // run like any new flow; a few make no measurable difference.
        if echo.seen() < want * 99 / 100 {
            bail!(
                "{path:?}, {}: only {} of {want} setup datagrams reached the sink",
                family.name(),
                echo.seen()
            );
        }
        // The answers on their way back establish the flows.
        std::thread::sleep(Duration::from_millis(300));
    }
    let _sink = XdpPass::attach_sink(&line.sink, "sink0")?;
    let before = counter(&line.sink, "sink0", "rx_packets")?;
    let cpu_before = cpu_jiffies(FORWARDING_CPU)?;
    let sent = blast::blast(
        &line.generator,
        "gen0",
        &frames,
        Duration::from_secs(seconds),
        GENERATOR_CPU,
    )?;
    let cpu_after = cpu_jiffies(FORWARDING_CPU)?;
    // Frames in flight when the generator stops.
    std::thread::sleep(Duration::from_millis(100));
    let after = counter(&line.sink, "sink0", "rx_packets")?;
    drop(on);
    let busy = (cpu_after.0 - cpu_before.0) as f64 / (cpu_after.1 - cpu_before.1).max(1) as f64;
    Ok(Run {
        sent_pps: sent.packets as f64 / sent.seconds,
        forwarded_pps: (after - before) as f64 / sent.seconds,
        busy,
    })
}

/// The pps rows, for each family: `rounds` alternating rounds of
/// `seconds` each.
pub fn pps(flows: u16, seconds: u64, rounds: u32) -> Result<()> {
    // Client ports 10000 on.
    let flows = flows.clamp(1, 50_000);
    let line = Line::build()?;
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); PATHS.len()]; FAMILIES.len()];
    for round in 1..=rounds {
        for (f, family) in FAMILIES.iter().enumerate() {
            for (i, path) in PATHS.iter().enumerate() {
                eprintln!("pps, round {round}/{rounds}: {path:?}, {}", family.name());
                match measure(&line, *path, *family, flows, seconds) {
                    Ok(r) => runs[f][i].push(r),
                    Err(e) => eprintln!("{path:?}, {}: {e:#}", family.name()),
                }
            }
        }
    }
    println!(
        "\npackets per second: {flows} established UDP flows (IPv4: 60-byte frames, IPv6: 80), \
         generator on CPU {GENERATOR_CPU}, the old host's receive work on CPU \
         {FORWARDING_CPU}, {seconds} s, median of {rounds} rounds"
    );
    println!(
        "| family | path | sent pps | forwarded pps | CPU {FORWARDING_CPU} busy | ns/packet | pps per core | ratio to iptables |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut targets = Vec::new();
    for (f, family) in FAMILIES.iter().enumerate() {
        targets.push(table(family.name(), &runs[f]));
    }
    for (family, ratio) in FAMILIES.iter().zip(targets) {
        println!(
            "target: redirector >= 3 x iptables packets/s per core, {} [{ratio:.2}]",
            family.name()
        );
    }
    Ok(())
}

/// Prints one family's rows; returns the generic redirector's ratio to
/// iptables per core.
fn table(family: &str, runs: &[Vec<Run>]) -> f64 {
    let median = |rs: &[Run], f: fn(&Run) -> f64| -> f64 {
        let mut v: Vec<f64> = rs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let iptables = PATHS.iter().position(|p| *p == Path::Iptables).unwrap_or(0);
    let generic = PATHS.iter().position(|p| *p == Path::Generic).unwrap_or(0);
    let base = median(&runs[iptables], Run::per_core);
    for (i, path) in PATHS.iter().enumerate() {
        let rs = &runs[i];
        if rs.is_empty() {
            println!("| {family} | {path:?} | n/a | | | | | |");
            continue;
        }
        let fwd = median(rs, |r| r.forwarded_pps);
        if *path == Path::Native {
            // Its NAPI runs on the generator's CPU: no separate figure.
            println!(
                "| {family} | redirector, native | {:.0} | {fwd:.0} | (shares CPU {GENERATOR_CPU}) | | | |",
                median(rs, |r| r.sent_pps)
            );
            continue;
        }
        let per_core = median(rs, Run::per_core);
        let name = if *path == Path::Iptables {
            "iptables DNAT + MASQUERADE"
        } else {
            "redirector, generic"
        };
        println!(
            "| {family} | {name} | {:.0} | {fwd:.0} | {:.0} % | {:.0} | {per_core:.0} | {:.2} |",
            median(rs, |r| r.sent_pps),
            median(rs, |r| r.busy) * 100.0,
            1e9 / per_core.max(1.0),
            per_core / base.max(1.0)
        );
    }
    median(&runs[generic], Run::per_core) / base.max(1.0)
}
