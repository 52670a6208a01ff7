//! dnsd under test: a throw-away config workspace, a dnsd serving it on a
//! loopback address, and a raw DNS packet toolkit for what dig cannot send
//! (malformed queries) or cannot send fast enough (a bounded query load).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins;
use crate::dig::{self, Message, Query, Reply};
use crate::dns_peers::free_port;
use crate::process::{Daemon, wait_until};

/// A config workspace directory, removed on drop.
pub struct DnsdWorkspace {
    root: PathBuf,
}

impl DnsdWorkspace {
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("cutover-dnsd-ws-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("zones"))
            .with_context(|| format!("creating {}", root.display()))?;
        Ok(Self { root })
    }

    /// A workspace at `root` (made if missing, e.g. on a small tmpfs),
    /// removed on drop like the others.
    pub fn at(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("zones"))
            .with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `zones/<origin>.zone` (origin without its final dot).
    pub fn zone(&self, origin: &str, text: &str) -> Result<PathBuf> {
        let path = self
            .root
            .join("zones")
            .join(format!("{}.zone", origin.trim_end_matches('.')));
        write_atomically(&path, text)?;
        Ok(path)
    }

    /// Writes `dnsd.toml`.
    pub fn toml(&self, text: &str) -> Result<PathBuf> {
        let path = self.root.join("dnsd.toml");
        write_atomically(&path, text)?;
        Ok(path)
    }
}

impl Drop for DnsdWorkspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Writes through a rename, as an operator's deploy tool should, so that a
/// reload never reads a half-written file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A loopback address of its own for each test, so that tests running in
/// parallel never share a port space.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 54, n))
}

/// A running dnsd, stopped on drop.
pub struct Dnsd {
    pub addr: SocketAddr,
    daemon: Daemon,
    log: PathBuf,
}

/// Starts dnsd serving `ws` on `addr` with `args` more and the
/// environment `env` (`CUTOVER_FAULT`; an empty `RUST_LOG` leaves dnsd's
/// own default filter), its output in `log`, and waits
/// until it answers over UDP and `tcp` (its DNS or API port) accepts
/// connections. A dnsd that exits or stays silent for 15 s fails with its
/// log.
pub(crate) fn spawn_ready(
    ws: &DnsdWorkspace,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
    tcp: SocketAddr,
    log: &Path,
) -> Result<Daemon> {
    spawn_wrapped(&[], ws, addr, args, env, tcp, log)
}

/// [`spawn_ready`] with dnsd run by `wrapper` (`prlimit --nofile=1024:1024
/// --`), if not empty.
pub(crate) fn spawn_wrapped(
    wrapper: &[&str],
    ws: &DnsdWorkspace,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
    tcp: SocketAddr,
    log: &Path,
) -> Result<Daemon> {
    let out = fs::File::create(log).context("creating the dnsd log")?;
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(bins::path("dnsd"));
            cmd
        }
        None => Command::new(bins::path("dnsd")),
    };
    cmd.arg("--workspace")
        .arg(ws.path())
        .arg("--listen")
        .arg(addr.to_string())
        .args(args)
        .env("RUST_LOG", "info,hickory_server=warn")
        .envs(env.iter().copied())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    if env.contains(&("RUST_LOG", "")) {
        cmd.env_remove("RUST_LOG");
    }
    let mut daemon = Daemon::spawn("dnsd", cmd)?;
    // TCP first: refused at once while dnsd is starting, where a query
    // sent too early would wait a whole second for its answer.
    let ready = wait_until(Duration::from_secs(15), || {
        daemon.assert_running().is_err()
            || (TcpStream::connect_timeout(&tcp, Duration::from_millis(200)).is_ok()
                && raw_exchange(addr, &query_packet(1, ".", 6, false)).is_some())
    });
    let log_text = || fs::read_to_string(log).unwrap_or_default();
    if let Err(e) = daemon.assert_running() {
        bail!("{e}; log:\n{}", log_text());
    }
    if !ready {
        bail!(
            "dnsd on {addr} is not ready within 15 s; log:\n{}",
            log_text()
        );
    }
    Ok(daemon)
}

impl Dnsd {
    /// Starts dnsd on `ip` (a free port) serving `ws`, and waits until it
    /// answers over UDP and accepts TCP connections.
    pub fn start(ws: &DnsdWorkspace, ip: IpAddr) -> Result<Self> {
        let addr = SocketAddr::new(ip, free_port(ip)?);
        let log = ws.path().with_extension("log");
        // The API's default port would be shared by every test's dnsd.
        let daemon = spawn_ready(ws, addr, &["--no-api"], &[], addr, &log)?;
        Ok(Self { addr, daemon, log })
    }

    /// As [`Dnsd::start`], with the environment `env` more.
    pub fn start_with_env(ws: &DnsdWorkspace, ip: IpAddr, env: &[(&str, &str)]) -> Result<Self> {
        let addr = SocketAddr::new(ip, free_port(ip)?);
        let log = ws.path().with_extension("log");
        let daemon = spawn_ready(ws, addr, &["--no-api"], env, addr, &log)?;
        Ok(Self { addr, daemon, log })
    }

    /// Stops it with SIGTERM, and returns its whole log.
    pub fn stop(mut self) -> Result<String> {
        self.daemon.signal(15)?;
        let exited = wait_until(Duration::from_secs(10), || {
            self.daemon.assert_running().is_err()
        });
        anyhow::ensure!(exited, "dnsd did not stop within 10 s of SIGTERM");
        Ok(self.log())
    }

    /// Asks with dig; no answer at all is an error.
    pub fn ask(&self, query: &Query) -> Result<Message> {
        match dig::ask(self.addr, query)? {
            Reply::Message(m) => Ok(m),
            Reply::Silence(why) => bail!("no answer to {query}: {why}; log:\n{}", self.log()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Sends `signal` (SIGSTOP 19 and SIGCONT 18 freeze and thaw it).
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.daemon.signal(signal)
    }

    /// Sends SIGHUP.
    pub fn reload(&self) -> Result<()> {
        self.daemon.signal(1)
    }

    pub fn assert_running(&mut self) -> Result<()> {
        self.daemon.assert_running()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines containing `needle`.
    pub fn wait_for_log(&self, needle: &str, n: usize) -> Result<()> {
        if !wait_until(Duration::from_secs(10), || {
            self.log().matches(needle).count() >= n
        }) {
            bail!(
                "dnsd did not log {needle:?} {n} times; log:\n{}",
                self.log()
            );
        }
        Ok(())
    }
}

impl Drop for Dnsd {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.log);
    }
}

/// A copy of the workspace at `ws`, history and all, as `cp -a` makes it.
pub fn copy_of(ws: &Path) -> Result<DnsdWorkspace> {
    let copy = DnsdWorkspace::new()?;
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", ws.display()))
        .arg(format!("{}/", copy.path().display()))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(copy)
}

/// Copies the example workspace's `example.test` zone (the one the README
/// and the demo use) into workspace `ws`.
pub fn add_example_zone(ws: &Path) -> Result<()> {
    let zones = ws.join("zones");
    fs::create_dir_all(&zones).with_context(|| format!("creating {}", zones.display()))?;
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/workspace/zones/example.test.zone"
    );
    fs::copy(example, zones.join("example.test.zone"))
        .with_context(|| format!("copying {example}"))?;
    Ok(())
}

/// What kdig gets from `server` for `name` of `qtype`: its `+short` lines,
/// sorted, so that a test compares record sets, not orders.
pub fn kdig_short(server: SocketAddr, name: &str, qtype: &str) -> Result<Vec<String>> {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+short", "+timeout=2"])
        .args([name, qtype])
        .output()
        .context("running kdig (install knot-dnsutils)")?;
    if !out.status.success() {
        bail!(
            "kdig {name} {qtype} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    Ok(lines)
}

/// Runs `dnsd check DIR`.
pub fn check(dir: &Path) -> Result<Output> {
    Command::new(bins::path("dnsd"))
        .arg("check")
        .arg(dir)
        .output()
        .context("running dnsd check")
}

/// Starts dnsd on `ws` and waits for it to exit (a broken workspace must
/// stop it before it serves anything).
pub fn run_to_exit(ws: &DnsdWorkspace, addr: SocketAddr) -> Result<Output> {
    let mut child = Command::new(bins::path("dnsd"))
        .arg("--workspace")
        .arg(ws.path())
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--no-api")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting dnsd")?;
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        bail!("dnsd kept running on a broken workspace");
    }
    child.wait_with_output().context("collecting dnsd's output")
}

/// A query in wire form: one question, RD clear, with an OPT record
/// (payload 1232) when `edns`.
pub fn query_packet(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    encode_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    p
}

/// Adds an EDNS Client Subnet option (198.18.1.0/24) to a query made by
/// `query_packet` with `edns`: such queries take dnsd's general path rather
/// than its fast path.
pub fn with_client_subnet(mut packet: Vec<u8>) -> Vec<u8> {
    let option = [0, 8, 0, 7, 0, 1, 24, 0, 198, 18, 1];
    let n = packet.len();
    packet[n - 2..].copy_from_slice(&(option.len() as u16).to_be_bytes());
    packet.extend_from_slice(&option);
    packet
}

/// Appends `name` in uncompressed wire form.
pub fn encode_name(p: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
}

/// Sends one datagram and waits up to 1 s for a reply.
pub fn raw_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    raw_exchange_within(server, packet, Duration::from_secs(1))
}

/// Sends one datagram and waits up to `timeout` for a reply.
pub fn raw_exchange_within(
    server: SocketAddr,
    packet: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((server.ip(), 0)).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.send_to(packet, server).ok()?;
    let mut buf = vec![0; 65535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The header of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub qr: bool,
    pub aa: bool,
    pub tc: bool,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
}

pub fn header(packet: &[u8]) -> Option<Header> {
    let b = packet.get(..12)?;
    let word = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    Some(Header {
        id: word(0),
        qr: b[2] & 0x80 != 0,
        aa: b[2] & 0x04 != 0,
        tc: b[2] & 0x02 != 0,
        rcode: b[3] & 0x0f,
        qdcount: word(4),
        ancount: word(6),
    })
}

/// The IPv4 addresses of the A records in a response's answer section.
pub fn answer_addresses(packet: &[u8]) -> Option<Vec<Ipv4Addr>> {
    let h = header(packet)?;
    let mut at = 12;
    for _ in 0..h.qdcount {
        at = skip_name(packet, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..h.ancount {
        at = skip_name(packet, at)?;
        let fixed = packet.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = packet.get(at + 10..at + 10 + len)?;
        if rtype == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Some(out)
}

/// The offset after the name at `at` (a pointer ends a name).
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}
