//! Hostile input: whatever arrives — random bytes, cut-off headers,
//! compression-pointer loops, zero or several questions, oversized names,
//! responses — dnsd answers FORMERR or nothing, never crashes, and keeps
//! serving the clients that ask properly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use cutover_tests::dig::Query;
use cutover_tests::dnsd::{
    Dnsd, DnsdWorkspace, encode_name, header, loopback, query_packet, raw_exchange,
    raw_exchange_within,
};

/// How long to wait for a reply that should mostly not come: on loopback a
/// reply takes well under a millisecond.
const SILENCE: Duration = Duration::from_millis(200);

fn hostile_exchange(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    raw_exchange_within(addr, packet, SILENCE)
}

const ZONE: &str = "$TTL 60
@    IN SOA ns1 hostmaster 1 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
www  IN A   198.18.0.1
";

fn serve(n: u8) -> Result<(DnsdWorkspace, Dnsd)> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", ZONE)?;
    let dnsd = Dnsd::start(&ws, loopback(n))?;
    Ok((ws, dnsd))
}

/// A header with this ID, flags and section counts.
fn header_bytes(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        p.extend_from_slice(&c.to_be_bytes());
    }
    p
}

/// Crafted malformed queries, each with what it is.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let question = |p: &mut Vec<u8>| {
        encode_name(p, "www.example.test.");
        p.extend_from_slice(&[0, 1, 0, 1]);
    };
    let mut cases = Vec::new();

    let mut p = header_bytes(1, 0, [0, 0, 0, 0]);
    cases.push(("no question", p.clone()));
    p = header_bytes(2, 0, [2, 0, 0, 0]);
    question(&mut p);
    question(&mut p);
    cases.push(("two questions", p));

    // A name that is a pointer to itself, and two pointers to each other.
    let mut p = header_bytes(3, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    cases.push(("self-pointing compression pointer", p));
    let mut p = header_bytes(4, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    cases.push(("compression pointer loop", p));
    let mut p = header_bytes(5, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
    cases.push(("pointer past the end", p));
    // A name that points into the header: it decodes (offset 4 holds the
    // question count, 0x00 0x01: the root), but echoed raw it would point
    // at other bytes of the response.
    let mut p = header_bytes(15, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[0xc0, 4, 0, 1, 0, 1]);
    cases.push(("compression pointer into the header", p));
    let mut p = header_bytes(6, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[0x03, b'w', b'w', b'w', 0xc0, 12, 0, 1, 0, 1]);
    cases.push(("pointer back to a label that points on", p));

    // Names beyond 255 bytes, labels beyond 63, reserved label types.
    let mut p = header_bytes(7, 0, [1, 0, 0, 0]);
    for _ in 0..5 {
        p.push(63);
        p.extend_from_slice(&[b'a'; 63]);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    cases.push(("a 320-byte name", p));
    for (n, len) in [(8u16, 0x40u8), (9, 0x80)] {
        let mut p = header_bytes(n, 0, [1, 0, 0, 0]);
        p.push(len);
        p.extend_from_slice(&[b'a'; 70]);
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        cases.push(("a reserved label type", p));
    }

    // Counts that promise more than the packet holds.
    let mut p = header_bytes(10, 0, [1, 3, 0, 0]);
    question(&mut p);
    cases.push(("an answer count with no answers", p));
    let mut p = header_bytes(11, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[3, b'w', b'w']);
    cases.push(("a question cut inside a label", p));
    let mut p = header_bytes(12, 0, [1, 0, 0, 0]);
    encode_name(&mut p, "www.example.test.");
    p.push(0);
    cases.push(("a question without its class", p));
    let mut p = header_bytes(13, 0, [1, 0, 0, 1]);
    question(&mut p);
    p.extend_from_slice(&[0, 0, 41, 4]);
    cases.push(("an OPT record cut short", p));
    cases
}

/// A deterministic stream of random bytes (xorshift64*), so that a failure
/// can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn assert_still_serving(dnsd: &mut Dnsd, after: &str) -> Result<()> {
    dnsd.assert_running()
        .with_context(|| format!("dnsd died after {after}"))?;
    let reply = raw_exchange(dnsd.addr, &query_packet(999, "www.example.test.", 1, true))
        .with_context(|| format!("no answer to a proper query after {after}"))?;
    let h = header(&reply).context("a header")?;
    assert_eq!((h.id, h.rcode, h.ancount), (999, 0, 1), "after {after}");
    Ok(())
}

#[test]
fn malformed_queries_get_formerr_or_silence_and_the_server_keeps_answering() -> Result<()> {
    let (_ws, mut dnsd) = serve(50)?;
    for (what, packet) in malformed() {
        if let Some(reply) = hostile_exchange(dnsd.addr, &packet) {
            let h = header(&reply).with_context(|| format!("{what}: a reply without a header"))?;
            assert!(h.qr, "{what}: the reply is a response");
            assert_eq!(h.id, u16::from_be_bytes([packet[0], packet[1]]), "{what}");
            assert_eq!(
                h.rcode, 1,
                "{what}: FORMERR or silence, got rcode {}",
                h.rcode
            );
            assert_eq!(h.ancount, 0, "{what}");
            // A question that could not be read is not echoed (as NSD).
            assert_eq!(h.qdcount, 0, "{what}");
        }
        assert_still_serving(&mut dnsd, what)?;
    }
    Ok(())
}

#[test]
fn cut_off_headers_and_responses_get_silence() -> Result<()> {
    let (_ws, mut dnsd) = serve(51)?;
    let valid = query_packet(21, "www.example.test.", 1, false);
    for len in 0..12 {
        assert!(
            hostile_exchange(dnsd.addr, &valid[..len]).is_none(),
            "a {len}-byte packet is not a query"
        );
    }
    // A response (QR set) is never answered: no reflection loops.
    let mut response = valid.clone();
    response[2] |= 0x80;
    assert!(hostile_exchange(dnsd.addr, &response).is_none());
    assert_still_serving(&mut dnsd, "cut-off headers and a response")
}

#[test]
fn random_bytes_never_crash_it_and_never_get_more_than_an_error() -> Result<()> {
    let (_ws, mut dnsd) = serve(52)?;
    let mut random = Random(0x5eed_cafe_f00d_d00d);
    let mut replies = 0;
    for i in 0..300 {
        let len = (random.next() % 600) as usize;
        let mut packet = random.bytes(len);
        // Half of them with a plausible query header, to get past the
        // first checks and exercise the name and record decoders.
        if i % 2 == 0 && packet.len() > 12 {
            packet[2] &= 0x01;
            packet[3] = 0;
            packet[4] = 0;
            packet[5] = 1;
        }
        let not_a_query = packet.len() < 12 || packet[2] & 0x80 != 0;
        if let Some(reply) = hostile_exchange(dnsd.addr, &packet) {
            assert!(
                !not_a_query,
                "packet {i} is not a query and must get no reply"
            );
            replies += 1;
            let h = header(&reply).context("a reply without a header")?;
            assert!(h.qr, "packet {i}: a response");
            assert_eq!(
                h.id,
                u16::from_be_bytes([packet[0], packet[1]]),
                "packet {i}"
            );
        }
        if i % 50 == 49 {
            assert_still_serving(&mut dnsd, &format!("{} random packets", i + 1))?;
        }
    }
    eprintln!("300 random packets, {replies} replies");
    assert_still_serving(&mut dnsd, "300 random packets")
}

fn tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(out)
}

#[test]
fn garbage_over_tcp_and_stalled_connections_do_not_stop_other_clients() -> Result<()> {
    let (_ws, mut dnsd) = serve(53)?;
    // A connection that sends half a length prefix and stalls.
    let mut stalled = TcpStream::connect(dnsd.addr)?;
    stalled.write_all(&[0])?;
    // A declared length with garbage behind it, and a zero length.
    let mut garbage = vec![0, 40];
    garbage.extend(Random(7).bytes(40));
    for bytes in [garbage, vec![0, 0], vec![0, 5, 1, 2, 3, 4, 5]] {
        let reply = tcp_exchange(dnsd.addr, &bytes)?;
        if reply.len() >= 14 {
            let h = header(&reply[2..]).context("a header")?;
            assert!(h.qr && h.ancount == 0, "{h:?}");
        }
    }
    let m = dnsd.ask(&Query::new("www.example.test.", "A").tcp())?;
    assert_eq!(m.answer.len(), 1, "{m}");
    drop(stalled);
    assert_still_serving(&mut dnsd, "garbage over TCP")
}

/// A flood of malformed queries (a bad EDNS option each, as in a 100,000
/// packet burst that once wrote 53,668 warnings) leaves the log as it was
/// at dnsd's default level, but for one summary line with the count.
#[test]
fn a_flood_of_malformed_queries_is_summarized_not_logged_one_by_one() -> Result<()> {
    use std::net::UdpSocket;
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", ZONE)?;
    let dnsd = Dnsd::start_with_env(&ws, loopback(38), &[("RUST_LOG", "")])?;
    let before = dnsd.log().lines().count();
    // A query with an OPT record whose one option claims more octets than
    // it has.
    let mut packet = header_bytes(7, 0, [1, 0, 0, 1]);
    encode_name(&mut packet, "www.example.test.");
    packet.extend_from_slice(&[0, 1, 0, 1]);
    packet.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 8, 0, 8, 0, 40, 0, 1, 0]);
    let socket = UdpSocket::bind((loopback(38), 0))?;
    socket.set_nonblocking(true)?;
    let mut sent = 0u32;
    for _ in 0..20_000 {
        if socket.send_to(&packet, dnsd.addr).is_ok() {
            sent += 1;
        }
        if sent % 500 == 0 {
            // Paced, so that most reach dnsd rather than a full queue.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let log = dnsd.stop()?;
    let lines: Vec<&str> = log.lines().skip(before).collect();
    let summary = lines
        .iter()
        .find(|l| l.contains("malformed queries since the last summary"))
        .with_context(|| format!("no summary in:\n{log}"))?;
    let counted: u32 = summary
        .split("count=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| summary.to_string())?;
    anyhow::ensure!(counted > 0 && counted <= sent, "{summary}");
    anyhow::ensure!(
        lines.len() <= 6,
        "{} lines for {sent} malformed queries:\n{log}",
        lines.len()
    );
    println!(
        "{sent} malformed queries sent, {counted} counted, {} log lines",
        lines.len()
    );
    Ok(())
}

/// Under systemd's default limit of 1024 open files, 1100 TCP connections
/// held open leave dnsd answering: UDP, a new TCP query, the control API
/// and a signed update, while its CPU stays low (hickory-server's accept
/// loop spun on EMFILE at a full core, and the API and updates starved).
#[test]
fn held_tcp_connections_past_the_file_limit_leave_dnsd_answering() -> Result<()> {
    use cutover_tests::dnsd_api::ApiDnsd;
    use cutover_tests::dnsd_update::{Key, knsupdate};
    use std::net::TcpStream;
    const KEY: Key = Key {
        name: "ops-key.",
        secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    };
    const HELD: usize = 1100;
    // This test holds more connections than 1024 itself.
    raise_own_file_limit(HELD as u64 + 256)?;
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", ZONE)?;
    ws.toml(&format!(
        "[[tsig_key]]\nname = \"{}\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{}\"\nzones = [\"example.test.\"]\n",
        KEY.name, KEY.secret
    ))?;
    let prlimit = ["prlimit", "--nofile=1024:1024", "--"];
    let dnsd = ApiDnsd::start_wrapped(&prlimit, &ws, loopback(39), &[], &[])?;
    let run = || -> Result<()> {
        let mut held = Vec::with_capacity(HELD);
        let query = {
            let q = query_packet(9, "www.example.test.", 1, false);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            framed
        };
        for _ in 0..HELD {
            let Ok(mut c) = TcpStream::connect_timeout(&dnsd.dns, Duration::from_secs(2)) else {
                break;
            };
            let _ = c.write_all(&query);
            held.push(c);
        }
        anyhow::ensure!(held.len() > 1024, "only {} connections opened", held.len());
        let cpu_before = cpu_seconds(dnsd.pid())?;
        let started = std::time::Instant::now();
        // UDP, a new TCP connection, the API, a signed update.
        anyhow::ensure!(
            dnsd.kdig("www.example.test.", "A")? == ["198.18.0.1"],
            "UDP"
        );
        let tcp = std::process::Command::new("kdig")
            .arg(format!("@{}", dnsd.dns.ip()))
            .args([
                "-p",
                &dnsd.dns.port().to_string(),
                "+tcp",
                "+short",
                "+timeout=5",
            ])
            .args(["www.example.test.", "A"])
            .output()?;
        anyhow::ensure!(
            String::from_utf8_lossy(&tcp.stdout).trim() == "198.18.0.1",
            "TCP: {}{}",
            String::from_utf8_lossy(&tcp.stdout),
            String::from_utf8_lossy(&tcp.stderr)
        );
        let token = dnsd.default_token()?;
        let r = dnsd.call("GET", "/v1/health", Some(&token), None)?;
        anyhow::ensure!(r.status == 200, "the API: {r:?}");
        let status = knsupdate(
            dnsd.dns,
            Some(KEY),
            "example.test.",
            "update add held.example.test. 60 A 198.18.0.77",
            true,
        )?;
        anyhow::ensure!(status == "NOERROR", "a signed update: {status}");
        anyhow::ensure!(dnsd.kdig("held.example.test.", "A")? == ["198.18.0.77"]);
        // Busy a second more with the connections held, then the CPU it
        // took over the whole time.
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu_seconds(dnsd.pid())? - cpu_before;
        let share = used / started.elapsed().as_secs_f64();
        anyhow::ensure!(share < 0.5, "dnsd used {:.0} % of a CPU", share * 100.0);
        println!(
            "{} connections held; UDP, TCP, the API and an update answered; dnsd at {:.0} % of a CPU",
            held.len(),
            share * 100.0
        );
        drop(held);
        Ok(())
    };
    run().map_err(|e| e.context(dnsd.log()))
}

/// Raises this process's soft limit on open files to at least `want`.
fn raise_own_file_limit(want: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0,
            "getrlimit"
        );
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max.max(want));
            limit.rlim_max = limit.rlim_max.max(want);
            anyhow::ensure!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0,
                "setrlimit {want}"
            );
        }
    }
    Ok(())
}

/// The CPU time (user and system) process `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command, which may hold spaces, in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: a plain query of a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / per_second)
}

/// A burst of clients larger than the TCP cap, each from a port the kernel
/// chose, all connecting and then all asking at once: every one is answered, the ones past the cap
/// after a short wait in the backlog (a newcomer closes only a connection
/// that has been idle a while, never one about to ask). The build before
/// answered the cap's worth and closed the rest unanswered.
#[test]
fn a_burst_of_tcp_clients_past_the_cap_is_answered_whole() -> Result<()> {
    use std::sync::{Arc, Barrier};
    const CAP: usize = 40;
    const CLIENTS: usize = 300;
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", ZONE)?;
    ws.toml(&format!("[server]\ntcp_connections = {CAP}\n"))?;
    let dnsd = Dnsd::start(&ws, loopback(40))?;
    let query = {
        let q = query_packet(7, "www.example.test.", 1, false);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        framed
    };
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (start, query, addr) = (Arc::clone(&start), query.clone(), dnsd.addr);
            std::thread::spawn(move || -> bool {
                let ask = || -> std::io::Result<Vec<u8>> {
                    let connected = TcpStream::connect_timeout(&addr, Duration::from_secs(10));
                    // All connected (past the cap, in the backlog), then all
                    // asking: as a crowd arrives, not one at a time.
                    start.wait();
                    let mut c = connected?;
                    c.set_read_timeout(Some(Duration::from_secs(10)))?;
                    c.write_all(&query)?;
                    let mut len = [0u8; 2];
                    c.read_exact(&mut len)?;
                    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    c.read_exact(&mut reply)?;
                    Ok(reply)
                };
                ask().is_ok_and(|r| header(&r).is_some_and(|h| h.rcode == 0 && h.id == 7))
            })
        })
        .collect();
    let answered = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(false))
        .filter(|&ok| ok)
        .count();
    anyhow::ensure!(
        answered == CLIENTS,
        "{answered} of {CLIENTS} clients answered with a cap of {CAP}; log:\n{}",
        dnsd.log()
    );
    Ok(())
}
