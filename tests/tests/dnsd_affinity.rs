//! `[server] cpu_affinity`: with it (the default), a UDP query is answered
//! by the thread that runs on the CPU that received it; without it, the
//! kernel spreads queries by flow hash and the threads run anywhere.
//!
//! Over loopback a datagram is received on the CPU that sent it, so a
//! client thread pinned to one CPU stands for a NIC queue bound to it.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::bins;
use cutover_tests::cpus::{self, ThreadInfo};
use cutover_tests::dnsd::{Dnsd, DnsdWorkspace, add_example_zone, header, loopback, query_packet};
use cutover_tests::netns::Netns;
use cutover_tests::process::{Daemon, wait_until};

/// Queries sent from each CPU, each after the previous one's answer.
const QUERIES: u64 = 320;

/// Client sockets per CPU, used in turn: flows the kernel's hash would
/// spread over both dnsd sockets, so broken steering cannot pass by luck.
const CLIENT_SOCKETS: usize = 16;

/// What dnsd logs when it steers queries by CPU.
const STEERING: &str = "steered to the thread of the CPU that received them";

fn start(toml: &str, ip: u8) -> Result<(DnsdWorkspace, Dnsd)> {
    let ws = DnsdWorkspace::new()?;
    add_example_zone(ws.path())?;
    ws.toml(toml)?;
    let dnsd = Dnsd::start(&ws, loopback(ip))?;
    Ok((ws, dnsd))
}

/// dnsd with two UDP sockets on loopback address `ip`, once it steers by
/// CPU, and the CPUs this process may use; `None` (the test is skipped)
/// when that is a single CPU, where steering has nothing to show.
fn start_on_two_cpus(ip: u8) -> Result<Option<(DnsdWorkspace, Dnsd, Vec<usize>)>> {
    let allowed = cpus::allowed()?;
    if allowed.len() < 2 {
        eprintln!("skipped: this process may use only CPUs {allowed:?}");
        return Ok(None);
    }
    let (ws, dnsd) = start("[server]\nudp_sockets = 2\n", ip)?;
    dnsd.wait_for_log(STEERING, 1)?;
    Ok(Some((ws, dnsd, allowed)))
}

fn udp_threads(dnsd: &Dnsd) -> Result<Vec<ThreadInfo>> {
    let threads = cpus::threads(dnsd.pid(), "dnsd-udp")?;
    ensure!(
        threads.len() == 2,
        "expected 2 UDP threads, found {threads:?}"
    );
    Ok(threads)
}

/// Runs `client` on a thread of its own pinned to `cpu`.
fn on_cpu<T: Send>(cpu: usize, client: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            cpus::pin_current_thread(cpu)?;
            client()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    })
}

/// `CLIENT_SOCKETS` client sockets for `server`, each waiting at most
/// `timeout` for a reply.
fn client_sockets(server: SocketAddr, timeout: Duration) -> Result<Vec<UdpSocket>> {
    (0..CLIENT_SOCKETS)
        .map(|_| {
            let socket = UdpSocket::bind((server.ip(), 0)).context("binding a client")?;
            socket.set_read_timeout(Some(timeout))?;
            Ok(socket)
        })
        .collect()
}

/// The query with ID `id`.
fn query(id: u16) -> Vec<u8> {
    query_packet(id, "api.example.test.", 1, false)
}

/// Sends `QUERIES` queries from a thread pinned to `cpu`, each after the
/// previous one's answer, from `CLIENT_SOCKETS` sockets in turn.
fn ask_from_cpu(server: SocketAddr, cpu: usize) -> Result<()> {
    on_cpu(cpu, || {
        let sockets = client_sockets(server, Duration::from_secs(2))?;
        let mut buf = [0u8; 1500];
        for id in 0..QUERIES as u16 {
            let socket = &sockets[usize::from(id) % CLIENT_SOCKETS];
            socket.send_to(&query(id), server)?;
            let n = socket
                .recv(&mut buf)
                .with_context(|| format!("no answer to query {id} sent from CPU {cpu}"))?;
            let h = header(&buf[..n]).context("a reply without a header")?;
            ensure!(h.id == id && h.rcode == 0, "unexpected reply {h:?}");
        }
        Ok(())
    })
}

#[test]
fn each_query_is_answered_on_the_cpu_that_received_it() -> Result<()> {
    let Some((_ws, dnsd, allowed)) = start_on_two_cpus(74)? else {
        return Ok(());
    };

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

/// Sends `n` queries from a thread pinned to `cpu` while dnsd is frozen,
/// so that they wait in its socket, then thaws it; returns the replies.
fn burst_from_cpu(dnsd: &Dnsd, cpu: usize, n: u16) -> Result<usize> {
    let server = dnsd.addr;
    on_cpu(cpu, || {
        let sockets = client_sockets(server, Duration::from_millis(20))?;
        dnsd.signal(19)?;
        let sent = (0..n).try_for_each(|id| {
            let socket = &sockets[usize::from(id) % CLIENT_SOCKETS];
            socket.send_to(&query(id), server).map(|_| ())
        });
        dnsd.signal(18)?;
        sent?;
        let mut replies = 0;
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(5);
        while replies < usize::from(n) && Instant::now() < deadline {
            for socket in &sockets {
                while socket.recv(&mut buf).is_ok() {
                    replies += 1;
                }
            }
        }
        Ok(replies)
    })
}

#[test]
fn a_thread_that_falls_behind_may_use_every_cpu_until_its_load_is_light_again() -> Result<()> {
    let Some((_ws, dnsd, allowed)) = start_on_two_cpus(78)? else {
        return Ok(());
    };
    let cpu = allowed[0];
    let owner_cpus = || -> Result<Vec<usize>> {
        let threads = udp_threads(&dnsd)?;
        let owner = threads
            .iter()
            .find(|t| t.cpus.contains(&cpu))
            .with_context(|| format!("no UDP thread may run on CPU {cpu}: {threads:?}"))?;
        Ok(owner.cpus.clone())
    };
    let own = owner_cpus()?;
    ensure!(
        own.len() < allowed.len(),
        "the thread of CPU {cpu} is not pinned: {own:?}"
    );

    // A backlog of 400 queries on one CPU: its thread receives full
    // batches, one after another, and lets go of its pin.
    let replies = burst_from_cpu(&dnsd, cpu, 400)?;
    ensure!(replies == 400, "{replies} of 400 queries answered");
    let floating = owner_cpus()?;
    ensure!(
        floating == allowed,
        "after a backlog the thread of CPU {cpu} may run on {floating:?}, not on every CPU"
    );

    // One query at a time: small receives, and the pin comes back.
    ask_from_cpu(dnsd.addr, cpu)?;
    let again = owner_cpus()?;
    ensure!(
        again == own,
        "once quiet the thread runs on {again:?}, not on {own:?} again"
    );
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

/// dnsd in its own namespace, listening on `ADDR` of a veth, which
/// receives on one queue.
const ADDR: &str = "198.18.7.1";

fn dnsd_in_namespace(ns: &Netns, ws: &DnsdWorkspace) -> Result<(Daemon, String)> {
    let log = ws.path().with_extension("log");
    let out = fs::File::create(&log)?;
    let mut cmd = ns.command(bins::path("dnsd"));
    cmd.arg("--workspace")
        .arg(ws.path())
        .args(["--listen", &format!("{ADDR}:5300"), "--no-api"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    let mut daemon = Daemon::spawn("dnsd", cmd)?;
    let read = || fs::read_to_string(&log).unwrap_or_default();
    let serving = wait_until(Duration::from_secs(15), || read().contains("serving"));
    daemon.assert_running()?;
    ensure!(serving, "dnsd did not start; log:\n{}", read());
    let text = read();
    let _ = fs::remove_file(&log);
    Ok((daemon, text))
}

#[test]
fn an_interface_with_fewer_receive_queues_than_sockets_and_no_rps_is_named_at_start() -> Result<()>
{
    let ns = Netns::new("codaff")?;
    ns.ip(&[
        "link", "add", "dns0", "type", "veth", "peer", "name", "dns0p",
    ])?;
    ns.ip(&["addr", "add", &format!("{ADDR}/24"), "dev", "dns0"])?;
    ns.ip(&["link", "set", "dns0p", "up"])?;
    ns.ip(&["link", "set", "dns0", "up"])?;
    let ws = DnsdWorkspace::new()?;
    add_example_zone(ws.path())?;
    ws.toml("[server]\nudp_sockets = 2\n")?;

    let (daemon, log) = dnsd_in_namespace(&ns, &ws)?;
    drop(daemon);
    ensure!(
        log.contains("fewer queues than dnsd has UDP sockets") && log.contains("dns0"),
        "no warning about dns0's single queue; log:\n{log}"
    );

    // RPS spreads what the queue receives over the CPUs: nothing to say.
    ns.exec(
        "sh",
        &["-c", "echo 3 > /sys/class/net/dns0/queues/rx-0/rps_cpus"],
    )?;
    let (daemon, log) = dnsd_in_namespace(&ns, &ws)?;
    drop(daemon);
    ensure!(
        log.contains(STEERING) && !log.contains("fewer queues"),
        "dnsd warned although RPS is on; log:\n{log}"
    );
    Ok(())
}
