//! Dynamic updates (RFC 2136) sent to dnsd the way an operator's tooling
//! sends them: `knsupdate` (Knot) and `nsupdate` (BIND), signed with TSIG or
//! not; and what an update leaves behind in the workspace (zone files,
//! generations) to prove that a refused one changed nothing.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::dns_peers::free_port;
use crate::dnsd::{DnsdWorkspace, spawn_ready};
use crate::process::Daemon;

/// A loopback address of its own for each update test (127.0.55.n: no
/// other test uses that /24).
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 55, n))
}

/// A TSIG key as the update tools take it.
#[derive(Clone, Copy)]
pub struct Key<'a> {
    pub name: &'a str,
    /// Base64.
    pub secret: &'a str,
}

impl Key<'_> {
    fn arg(&self) -> String {
        format!("hmac-sha256:{}:{}", self.name, self.secret)
    }
}

/// A dnsd without its API, that can be stopped and started again on the
/// same address.
pub struct UpdateDnsd {
    pub dns: SocketAddr,
    daemon: Option<Daemon>,
    log: PathBuf,
    /// What the runs before the last restart logged.
    earlier_log: String,
    root: PathBuf,
}

impl UpdateDnsd {
    /// Starts dnsd on a free port of `ip`, its control API off.
    pub fn start(ws: &DnsdWorkspace, ip: IpAddr) -> Result<Self> {
        let dns = SocketAddr::new(ip, free_port(ip)?);
        Self::spawn(ws, dns, &["--no-api"], dns)
    }

    /// Starts dnsd on `dns` without `--no-api` (dnsd.toml's `[api]`
    /// decides), ready once `ready` accepts TCP connections.
    pub fn start_with_config_api(
        ws: &DnsdWorkspace,
        dns: SocketAddr,
        ready: SocketAddr,
    ) -> Result<Self> {
        Self::spawn(ws, dns, &[], ready)
    }

    /// Starts dnsd on `dns` with `args`, ready once `ready` accepts TCP
    /// connections; it logs next to the workspace.
    fn spawn(
        ws: &DnsdWorkspace,
        dns: SocketAddr,
        args: &[&str],
        ready: SocketAddr,
    ) -> Result<Self> {
        let log = ws.path().with_extension("update.log");
        let daemon = spawn_ready(ws, dns, args, &[], ready, &log)?;
        Ok(Self {
            dns,
            daemon: Some(daemon),
            log,
            earlier_log: String::new(),
            root: ws.path().to_path_buf(),
        })
    }

    /// Stops dnsd (SIGTERM) and starts it again on the same address.
    pub fn restart(&mut self, ws: &DnsdWorkspace) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop(Duration::from_secs(10))?;
        }
        self.earlier_log = format!("{}--- restarted ---\n", self.log());
        let daemon = spawn_ready(ws, self.dns, &["--no-api"], &[], self.dns, &self.log)?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Everything dnsd logged, across restarts.
    pub fn log(&self) -> String {
        let now = fs::read_to_string(&self.log).unwrap_or_default();
        format!("{}{now}", self.earlier_log)
    }

    /// What kdig gets for `name` of `qtype` (`+short`, sorted).
    pub fn kdig(&self, name: &str, qtype: &str) -> Result<Vec<String>> {
        crate::dnsd::kdig_short(self.dns, name, qtype)
    }

    /// The SOA serial kdig gets for `zone`.
    pub fn serial(&self, zone: &str) -> Result<u32> {
        let soa = self.kdig(zone, "SOA")?;
        soa.first()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no SOA serial in {soa:?}"))
    }

    /// `knsupdate` (below) to this dnsd.
    pub fn knsupdate(
        &self,
        key: Option<Key<'_>>,
        zone: &str,
        commands: &str,
        tcp: bool,
    ) -> Result<String> {
        knsupdate(self.dns, key, zone, commands, tcp)
    }

    /// `nsupdate` (below) to this dnsd.
    pub fn nsupdate(&self, key: Option<Key<'_>>, zone: &str, commands: &str) -> Result<String> {
        nsupdate(self.dns, key, zone, commands)
    }

    /// The workspace as an update may change it: every zone file's bytes
    /// and the generations made so far.
    pub fn state(&self) -> Result<WorkspaceState> {
        WorkspaceState::read(&self.root)
    }
}

impl Drop for UpdateDnsd {
    fn drop(&mut self) {
        self.daemon.take();
        let _ = fs::remove_file(&self.log);
    }
}

/// Sends `commands` (nsupdate syntax, without `server` and `send`) for
/// zone `zone` to `server` with `knsupdate`, over TCP if `tcp`. Returns the
/// status knsupdate reports ("NOERROR", "YXRRSET", ...) after checking
/// that it verified the response's TSIG when `key` signed the request.
pub fn knsupdate(
    server: SocketAddr,
    key: Option<Key<'_>>,
    zone: &str,
    commands: &str,
    tcp: bool,
) -> Result<String> {
    let script = script(server, zone, commands, "answer\n");
    let mut cmd = Command::new("knsupdate");
    cmd.args(["-t", "3", "-r", "0"]);
    if tcp {
        cmd.arg("-v");
    }
    if let Some(key) = key {
        cmd.args(["-y", &key.arg()]);
    }
    let (stdout, stderr) = run_with_stdin(cmd, &script, "knsupdate (install knot-dnsutils)")?;
    if stderr.contains("failed to verify TSIG") {
        bail!("knsupdate could not verify dnsd's signature:\n{stdout}{stderr}");
    }
    stdout
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|rest| rest.split(';').next())
        .map(|s| s.trim().to_string())
        .with_context(|| format!("knsupdate printed no status:\n{stdout}{stderr}"))
}

/// Like `knsupdate` with BIND's `nsupdate` over UDP; returns "NOERROR" or
/// what nsupdate reports after "update failed:" (for example
/// "NOTAUTH(BADSIG)").
pub fn nsupdate(
    server: SocketAddr,
    key: Option<Key<'_>>,
    zone: &str,
    commands: &str,
) -> Result<String> {
    let script = script(server, zone, commands, "");
    let mut cmd = Command::new("nsupdate");
    cmd.args(["-t", "3", "-u", "3", "-r", "0"]);
    if let Some(key) = key {
        cmd.args(["-y", &key.arg()]);
    }
    let (stdout, stderr) = run_with_stdin(cmd, &script, "nsupdate (install bind9-dnsutils)")?;
    let all = format!("{stdout}{stderr}");
    if let Some(rest) = all.split("update failed: ").nth(1) {
        return Ok(rest.lines().next().unwrap_or("").trim().to_string());
    }
    if all.contains("timed out") || all.contains("could not") {
        bail!("nsupdate got no answer:\n{all}");
    }
    Ok("NOERROR".into())
}

fn script(server: SocketAddr, zone: &str, commands: &str, tail: &str) -> String {
    format!(
        "server {} {}\nzone {zone}\n{commands}\nsend\n{tail}",
        server.ip(),
        server.port()
    )
}

/// The UPDATE request knsupdate sends for `commands` to zone `zone`,
/// signed with `key`, captured by a socket standing in for the server on
/// `ip` (knsupdate gets no answer and gives up after a second).
pub fn capture_knsupdate(ip: IpAddr, key: Key<'_>, zone: &str, commands: &str) -> Result<Vec<u8>> {
    let socket = std::net::UdpSocket::bind((ip, 0)).context("binding the capture socket")?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let server = socket.local_addr()?;
    let script = format!(
        "server {} {}\nzone {zone}\n{commands}\nsend\n",
        server.ip(),
        server.port()
    );
    let mut cmd = Command::new("knsupdate");
    cmd.args(["-t", "1", "-r", "0", "-y", &key.arg()]);
    let sender = std::thread::spawn(move || run_with_stdin(cmd, &script, "knsupdate"));
    let mut buf = vec![0; 65535];
    let received = socket.recv_from(&mut buf);
    let _ = sender.join();
    let (n, _) = received.context("knsupdate sent nothing")?;
    buf.truncate(n);
    Ok(buf)
}

/// Signs `message`, a whole request as it would go out unsigned, with
/// `key` at `time` (seconds since the epoch): appends the TSIG record of
/// RFC 8945 §4.2 (fudge 300, no error, no other data) and counts it in
/// ARCOUNT. For requests that no update tool sends: knsupdate and nsupdate
/// check the records they are given (lengths, classes) before signing.
pub fn sign(message: &[u8], key: Key<'_>, time: u64) -> Result<Vec<u8>> {
    sign_with_fudge(message, key, time, 300)
}

/// An UPDATE of zone `origin` with message ID `id` and one record in its
/// update section — `owner` (wire form), `rtype`, `class`, TTL 60,
/// `rdlength` and `rdata` as given, consistent or not — unsigned.
pub fn update_packet(
    id: u16,
    origin: &str,
    owner: &[u8],
    rtype: u16,
    class: u16,
    rdlength: u16,
    rdata: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    // Opcode UPDATE; one zone, no prerequisite, one update, no additional.
    p.extend_from_slice(&[0x28, 0x00, 0, 1, 0, 0, 0, 1, 0, 0]);
    crate::dnsd::encode_name(&mut p, origin);
    p.extend_from_slice(&[0, 6, 0, 1]);
    p.extend_from_slice(owner);
    p.extend_from_slice(&rtype.to_be_bytes());
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&60u32.to_be_bytes());
    p.extend_from_slice(&rdlength.to_be_bytes());
    p.extend_from_slice(rdata);
    p
}

/// Seconds since the Unix epoch, as a request's Time Signed counts them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// As [`sign`], with the fudge (the time window) the request claims.
pub fn sign_with_fudge(message: &[u8], key: Key<'_>, time: u64, fudge: u16) -> Result<Vec<u8>> {
    use base64::Engine as _;
    use hmac::{Hmac, Mac as _};
    let header = message
        .get(..12)
        .context("a message has a 12-byte header")?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(key.secret)
        .context("the key's secret is not base64")?;
    let mut key_name = Vec::new();
    crate::dnsd::encode_name(&mut key_name, &key.name.to_ascii_lowercase());
    let mut algorithm = Vec::new();
    crate::dnsd::encode_name(&mut algorithm, "hmac-sha256.");
    let time_signed = &time.to_be_bytes()[2..];
    let fudge = fudge.to_be_bytes();
    // RFC 8945 §4.3.3: what the MAC covers after the message itself.
    let mut variables = key_name.clone();
    variables.extend_from_slice(&[0, 255, 0, 0, 0, 0]); // class ANY, TTL 0
    variables.extend_from_slice(&algorithm);
    variables.extend_from_slice(time_signed);
    variables.extend_from_slice(&fudge);
    variables.extend_from_slice(&[0, 0, 0, 0]); // error, other length
    let mut hmac = Hmac::<sha2::Sha256>::new_from_slice(&secret)
        .map_err(|_| anyhow::anyhow!("hmac-sha256 takes a key of any length"))?;
    hmac.update(message);
    hmac.update(&variables);
    let mac = hmac.finalize().into_bytes();

    let mut rdata = algorithm;
    rdata.extend_from_slice(time_signed);
    rdata.extend_from_slice(&fudge);
    rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rdata.extend_from_slice(&mac);
    rdata.extend_from_slice(&header[..2]); // original ID
    rdata.extend_from_slice(&[0, 0, 0, 0]); // error, other length
    let mut signed = message.to_vec();
    let arcount = u16::from_be_bytes([header[10], header[11]]) + 1;
    signed[10..12].copy_from_slice(&arcount.to_be_bytes());
    signed.extend_from_slice(&key_name);
    signed.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]); // TSIG, ANY, TTL 0
    signed.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    signed.extend_from_slice(&rdata);
    Ok(signed)
}

/// Runs `cmd` with `input` on stdin, bounded by the tools' own timeouts;
/// returns stdout and stderr whatever the exit status (failures are what
/// several tests expect).
fn run_with_stdin(mut cmd: Command, input: &str, what: &str) -> Result<(String, String)> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Zone files and generations of a workspace at one moment.
#[derive(Debug, PartialEq, Eq)]
pub struct WorkspaceState {
    pub zones: Vec<(String, String)>,
    /// `(number, message)` of each generation, oldest first.
    pub generations: Vec<(u64, String)>,
}

impl WorkspaceState {
    pub fn read(root: &Path) -> Result<Self> {
        let mut zones = Vec::new();
        for entry in fs::read_dir(root.join("zones"))? {
            let path = entry?.path();
            zones.push((
                path.display().to_string(),
                fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?,
            ));
        }
        zones.sort();
        let generations = cutover_workspace::Workspace::open(root)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .generations()?
            .into_iter()
            .map(|g| (g.number, g.message))
            .collect();
        Ok(Self { zones, generations })
    }
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if fs::read(&path)?
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    Ok(found)
}
