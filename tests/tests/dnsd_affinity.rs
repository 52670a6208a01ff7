//! `[server] cpu_affinity`: with it (the default), a UDP query is answered
//! by the thread that runs on the CPU that received it; without it, the
//! kernel spreads queries by flow hash and the threads run anywhere.
//!
//! Over loopback a datagram is received on the CPU that sent it, so a
//! client thread pinned to one CPU stands for a NIC queue bound to it.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::cpus::{self, ThreadInfo};
use cutover_tests::dnsd::{Dnsd, DnsdWorkspace, add_example_zone, header, loopback, query_packet};

/// Queries sent from each CPU, each after the previous one's answer.
const QUERIES: u64 = 300;

fn start(toml: &str, ip: u8) -> Result<(DnsdWorkspace, Dnsd)> {
    let ws = DnsdWorkspace::new()?;
    add_example_zone(ws.path())?;
    ws.toml(toml)?;
    let dnsd = Dnsd::start(&ws, loopback(ip))?;
    Ok((ws, dnsd))
}

fn udp_threads(dnsd: &Dnsd) -> Result<Vec<ThreadInfo>> {
    let threads = cpus::threads(dnsd.pid(), "dnsd-udp")?;
    ensure!(
        threads.len() == 2,
        "expected 2 UDP threads, found {threads:?}"
    );
    Ok(threads)
}

/// Sends `QUERIES` queries from a thread pinned to `cpu`, each after the
/// previous one's answer.
fn ask_from_cpu(server: SocketAddr, cpu: usize) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            cpus::pin_current_thread(cpu)?;
            let socket = UdpSocket::bind((server.ip(), 0)).context("binding the client")?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0u8; 1500];
            for id in 0..QUERIES as u16 {
                socket.send_to(&query_packet(id, "api.example.test.", 1, false), server)?;
                let n = socket
                    .recv(&mut buf)
                    .with_context(|| format!("no answer to query {id} sent from CPU {cpu}"))?;
                let h = header(&buf[..n]).context("a reply without a header")?;
                ensure!(h.id == id && h.rcode == 0, "unexpected reply {h:?}");
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    })
}

#[test]
fn each_query_is_answered_on_the_cpu_that_received_it() -> Result<()> {
    let allowed = cpus::allowed()?;
    if allowed.len() < 2 {
        // Steering needs two CPUs to show; one CPU is all there is.
        eprintln!("skipped: this process may use only CPUs {allowed:?}");
        return Ok(());
    }
    let (_ws, dnsd) = start("[server]\nudp_sockets = 2\n", 74)?;
    dnsd.wait_for_log("answered on the CPU that received them", 1)?;

    // The CPUs are dealt to the two sockets in turn.
    let threads = udp_threads(&dnsd)?;
    let mut by_cpu = Vec::new();
    for cpu in &allowed[..2] {
        let owner = threads
            .iter()
            .position(|t| t.cpus.contains(cpu))
            .with_context(|| format!("no UDP thread may run on CPU {cpu}: {threads:?}"))?;
        by_cpu.push((*cpu, owner));
    }
    ensure!(
        by_cpu[0].1 != by_cpu[1].1,
        "one thread serves both CPUs: {threads:?}"
    );
    for t in &threads {
        ensure!(t.cpus.len() < allowed.len(), "thread {t:?} is not pinned");
    }
    ensure!(
        threads[0].cpus.iter().all(|c| !threads[1].cpus.contains(c)),
        "the UDP threads share CPUs: {threads:?}"
    );

    for (cpu, owner) in by_cpu {
        let before = udp_threads(&dnsd)?;
        ask_from_cpu(dnsd.addr, cpu)?;
        let after = udp_threads(&dnsd)?;
        let switches: Vec<u64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.context_switches - b.context_switches)
            .collect();
        // The owner shares its CPU with the client, so it must give the CPU
        // up for every query; the other thread has nothing to do. (Slack
        // for whatever else the kernel schedules.)
        let other = 1 - owner;
        if switches[owner] < QUERIES * 9 / 10 || switches[other] > QUERIES / 10 {
            bail!(
                "{QUERIES} queries sent from CPU {cpu}: the thread on CPUs {:?} left its CPU {} \
                 times, the one on CPUs {:?} {} times",
                after[owner].cpus,
                switches[owner],
                after[other].cpus,
                switches[other]
            );
        }
    }
    Ok(())
}

#[test]
fn without_cpu_affinity_the_threads_may_run_anywhere() -> Result<()> {
    let allowed = cpus::allowed()?;
    let (_ws, dnsd) = start("[server]\nudp_sockets = 2\ncpu_affinity = false\n", 75)?;
    for t in udp_threads(&dnsd)? {
        ensure!(
            t.cpus == allowed,
            "thread {t:?} is pinned; allowed {allowed:?}"
        );
    }
    ensure!(
        !dnsd
            .log()
            .contains("answered on the CPU that received them"),
        "dnsd says it steers by CPU:\n{}",
        dnsd.log()
    );
    Ok(())
}
