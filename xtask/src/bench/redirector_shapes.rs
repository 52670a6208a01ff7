//! The shapes of `bench redirector` beyond one wrk client: many clients on
//! their own addresses opening short connections (connections/s and
//! failures), and bulk transfers with offloads on through both of the old
//! host's paths (the eth0 -> eth0 hairpin and eth0 -> eth1), in Gbit/s with
//! retransmits. Each row: direct, iptables DNAT + MASQUERADE, the redirector,
//! in alternating rounds, medians.

use anyhow::{Context, Result};
use cutover_tests::iperf3::Iperf3Server;
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::redirector_site::{FAR_IP, far_host_behind};
use cutover_tests::topology::{NEW_IP, OLD_IP, Topology};

use super::redirector::{Via, enable_forwarding, switch_on_redirects};

const PATHS: [Via; 3] = [Via::Direct, Via::Iptables, Via::Xdp];
const NAMES: [&str; 3] = ["direct", "iptables", "redirector"];

/// Connections/s and failures of the many-clients load.
#[derive(Clone, Copy, Default)]
struct Crowd {
    per_sec: f64,
    failures: u64,
}

/// `clients` addresses (198.18.0.4 on) opening short connections to port 80
/// for `seconds`, `rounds` times per path.
pub fn many_clients(clients: u32, seconds: u64, rounds: u32, xdp_mode: &str) -> Result<()> {
    let net = Topology::new()?;
    let _nginx = Nginx::start(&net.new, &[80], "served by new\n", &[])?;
    enable_forwarding(&net.old)?;
    let first = std::net::Ipv4Addr::new(198, 18, 0, 4);
    for n in 0..clients.min(250) {
        let a = std::net::Ipv4Addr::from(u32::from(first) + n);
        net.client
            .ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
    }
    let redirects = [(80, format!("{NEW_IP}:80"))];
    let mut runs: Vec<Vec<Crowd>> = vec![Vec::new(); 3];
    for round in 1..=rounds {
        for (i, path) in PATHS.iter().enumerate() {
            eprintln!("many clients, round {round}/{rounds}: {path:?}");
            // The new host's TIME_WAIT sockets from the path before would
            // refuse this path's first connections on the same tuples.
            for host in [&net.new, &net.client] {
                host.exec("ss", &["-K", "-t", "state", "time-wait"])?;
            }
            let _on = switch_on_redirects(&net.old, *path, &redirects, &["eth0"], xdp_mode)?;
            let target = if *path == Via::Direct { NEW_IP } else { OLD_IP };
            runs[i].push(connect(
                &net.client,
                target,
                first,
                clients.min(250),
                seconds,
            )?);
        }
    }
    let m: Vec<Crowd> = runs.iter().map(|r| median(r, |c| c.per_sec)).collect();
    println!(
        "\nmany clients: {} addresses, short connections (Connection: close, kernel-chosen \
         ports), 32 at a time, {seconds} s, median of {rounds} rounds",
        clients.min(250)
    );
    println!("| path | conn/s | ratio to iptables | failed |");
    println!("|---|---:|---:|---:|");
    for i in 0..3 {
        println!(
            "| {} | {:.0} | {:.2} | {} |",
            NAMES[i],
            m[i].per_sec,
            m[i].per_sec / m[1].per_sec.max(1.0),
            m[i].failures
        );
    }
    println!(
        "targets: redirector >= 1.0 x iptables [{:.2}], no failed connection [{}]",
        m[2].per_sec / m[1].per_sec.max(1.0),
        m[2].failures
    );
    Ok(())
}

/// Runs `cargo xtask connect` in the client's namespace.
fn connect(
    client: &Netns,
    target: &str,
    first: std::net::Ipv4Addr,
    addrs: u32,
    seconds: u64,
) -> Result<Crowd> {
    let exe = std::env::current_exe().context("the xtask binary")?;
    let out = client
        .command(exe)
        .args(["connect", "--target", &format!("{target}:80")])
        .args([
            "--first-addr",
            &first.to_string(),
            "--addrs",
            &addrs.to_string(),
        ])
        .args(["--seconds", &seconds.to_string()])
        .output()
        .context("running the connection load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .with_context(|| format!("no {name} in {text}"))?
            .parse()
            .with_context(|| format!("{name} in {text}"))
    };
    let done = field("connections=")?;
    Ok(Crowd {
        per_sec: done / field("seconds=")?.max(0.001),
        failures: field("failures=")? as u64,
    })
}

/// Throughput and retransmits of one iperf3 run.
#[derive(Clone, Copy, Default)]
struct Bulk {
    gbit_s: f64,
    retransmits: u64,
}

/// iperf3 for `seconds` from the client to the new host (hairpin) and to a
/// host behind the old host's eth1, uploads and downloads, offloads on.
pub fn bulk(seconds: u64, rounds: u32, xdp_mode: &str) -> Result<()> {
    let net = Topology::with_offloads()?;
    let far = far_host_behind(&net)?;
    // The old host too keeps its offloads here, so that the kernel's own
    // forwarding (direct and iptables) passes GSO packets on unsegmented.
    for iface in ["eth0", "eth1"] {
        net.old.exec("ethtool", &["-K", iface, "tx", "on"])?;
    }
    enable_forwarding(&net.old)?;
    net.old.sysctl("net.ipv4.conf.eth1.send_redirects=0")?;
    // Direct to the far host is plain routing through the old host.
    net.client
        .ip(&["route", "add", "198.18.1.0/24", "via", OLD_IP])?;
    let _servers = [Iperf3Server::start(&net.new)?, Iperf3Server::start(&far)?];
    let redirects = [
        (5201, format!("{NEW_IP}:5201")),
        (5202, format!("{FAR_IP}:5201")),
    ];
    // (path name, direct target, port through the old host)
    let ways = [
        ("hairpin eth0 -> eth0", NEW_IP, 5201),
        ("eth0 -> eth1", FAR_IP, 5202),
    ];
    // [way][direction][path] -> runs
    let mut runs = vec![vec![vec![Vec::<Bulk>::new(); 3]; 2]; 2];
    for round in 1..=rounds {
        for (p, path) in PATHS.iter().enumerate() {
            eprintln!("bulk, round {round}/{rounds}: {path:?}");
            let _on =
                switch_on_redirects(&net.old, *path, &redirects, &["eth0", "eth1"], xdp_mode)?;
            for (w, (_, direct, port)) in ways.iter().enumerate() {
                let (host, port) = if *path == Via::Direct {
                    (*direct, 5201)
                } else {
                    (OLD_IP, *port)
                };
                for (d, reverse) in [false, true].into_iter().enumerate() {
                    runs[w][d][p].push(iperf3(&net.client, host, port, seconds, reverse)?);
                }
            }
        }
    }
    println!(
        "\nbulk: iperf3 -t {seconds}, one stream, offloads (TSO/GSO) on everywhere, median of \
         {rounds} rounds"
    );
    println!("| way | direction | path | Gbit/s | ratio to iptables | retransmits |");
    println!("|---|---|---|---:|---:|---:|");
    for (w, (way, _, _)) in ways.iter().enumerate() {
        for (d, direction) in ["upload", "download"].iter().enumerate() {
            let m: Vec<Bulk> = runs[w][d].iter().map(|r| median(r, |b| b.gbit_s)).collect();
            for p in 0..3 {
                println!(
                    "| {way} | {direction} | {} | {:.1} | {:.2} | {} |",
                    NAMES[p],
                    m[p].gbit_s,
                    m[p].gbit_s / m[1].gbit_s.max(0.001),
                    m[p].retransmits
                );
            }
        }
    }
    println!("target: redirector >= 1.0 x iptables on every row");
    Ok(())
}

/// The run whose `key` is the median of `runs` (the default if none).
fn median<T: Copy + Default>(runs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn iperf3(client: &Netns, host: &str, port: u16, seconds: u64, reverse: bool) -> Result<Bulk> {
    let port = port.to_string();
    let secs = seconds.to_string();
    let mut args = vec!["-c", host, "-p", &port, "-t", &secs, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = client.exec("iperf3", &args)?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J printed no JSON")?;
    let sent = &json["end"]["sum_sent"];
    let received = &json["end"]["sum_received"];
    Ok(Bulk {
        gbit_s: received["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        retransmits: sent["retransmits"].as_u64().unwrap_or(0),
    })
}
