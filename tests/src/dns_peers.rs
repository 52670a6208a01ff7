//! Authoritative DNS servers to compare dnsd with: NSD and Knot DNS, started
//! as child processes on a 127.0.0.0/8 address and a free high port, each
//! with its own scratch directory for configuration, pid file, database and
//! log, and dnsd itself started the same way. The differential test, the
//! zone-fidelity test and `cargo xtask bench dns` start their servers here,
//! so all compare the peers in one configuration. The peers' own zone
//! checkers (`nsd-checkzone`, `knotc zone-check`) are here too.
//!
//! Every peer runs with response rate limiting off (NSD enables it by
//! default) and, unless asked, without answer rotation, so that its answers
//! are a function of the zone alone.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::dig::{self, Query, Reply};
use crate::process::{Daemon, wait_until};

/// The origin of the shared test zone.
pub const TEST_ORIGIN: &str = "example.test.";

/// The zone file every server is given: `tests/data/example.test.zone`.
pub fn test_zone() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/example.test.zone")
}

/// Which server implementation a [`DnsServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    Nsd,
    Knot,
    Bind,
    Dnsd,
}

impl Implementation {
    pub fn label(self) -> &'static str {
        match self {
            Implementation::Nsd => "NSD",
            Implementation::Knot => "Knot DNS",
            Implementation::Bind => "BIND",
            Implementation::Dnsd => "dnsd",
        }
    }
}

/// How a server is configured, the same way for every implementation.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// UDP workers: NSD server processes, Knot UDP threads, dnsd
    /// SO_REUSEPORT sockets.
    pub workers: usize,
    /// Rotate the order of multi-record RRsets between answers (NSD
    /// `round-robin`, Knot `answer-rotation`). dnsd always rotates; the
    /// comparison ignores the order inside an RRset.
    pub rotate: bool,
    /// Zone files to serve, as (origin, file).
    pub zones: Vec<(String, PathBuf)>,
    /// Keep each worker on its own CPU: NSD `cpu-affinity` with one CPU per
    /// server process, Knot `socket-affinity`, dnsd `cpu_affinity` (which
    /// also steers each query to the socket of the CPU that received it).
    /// `None` leaves each server at its own default (on only for dnsd).
    pub cpu_affinity: Option<bool>,
    /// Give the whole zone by AXFR to any client on 127.0.0.0/8 (NSD
    /// `provide-xfr`, a Knot ACL), so that a test can compare what each
    /// peer loaded. dnsd has no such setting and ignores it.
    pub allow_axfr: bool,
    /// The port to listen on; `None` picks a free one.
    pub port: Option<u16>,
    /// Serve the zones as a secondary of this primary (NSD `request-xfr`
    /// and `allow-notify`, Knot `master` and a notify ACL, dnsd
    /// `[[replica]]`) instead of from their files.
    pub primary: Option<Primary>,
    /// Knot only: send NOTIFY for the zones to these servers, signed with
    /// `transfer_key`, keep a journal of changes so that IXFR can be
    /// served, and load an edited zone file as a difference
    /// (`DnsServer::knot_reload`).
    pub notify: Vec<SocketAddr>,
    /// Knot only: transfers are given to requests signed with this key
    /// (hmac-sha256: name and base64 secret), from any address.
    pub transfer_key: Option<(String, String)>,
    /// How long the server may take to answer its first zone's SOA (a
    /// secondary: to transfer it).
    pub ready_within: Duration,
    /// Run the server in this network namespace (its name), and ask it
    /// from there.
    pub netns: Option<String>,
    /// Added to dnsd's `dnsd.toml`; the others ignore it.
    pub dnsd_toml: String,
    /// dnsd's control API on this address (its token in the workspace's
    /// `.cutover/api-token`); off when `None`.
    pub dnsd_api: Option<SocketAddr>,
}

/// The primary a secondary copies its zones from.
#[derive(Debug, Clone)]
pub struct Primary {
    pub addr: SocketAddr,
    /// A TSIG key (hmac-sha256): its name and base64 secret.
    pub key: Option<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            rotate: false,
            cpu_affinity: None,
            zones: vec![(TEST_ORIGIN.to_string(), test_zone())],
            allow_axfr: false,
            port: None,
            primary: None,
            notify: Vec::new(),
            transfer_key: None,
            ready_within: Duration::from_secs(15),
            netns: None,
            dnsd_toml: String::new(),
            dnsd_api: None,
        }
    }
}

/// A running authoritative server, stopped (and its scratch directory
/// removed) when dropped.
pub struct DnsServer {
    pub implementation: Implementation,
    /// UDP and TCP on the same address and port.
    pub addr: SocketAddr,
    daemon: Daemon,
    scratch: Scratch,
    /// How to start it again on the same files (`restart`).
    relaunch: Relaunch,
}

/// How the server was started: its command line, the zone whose SOA tells
/// it is ready, and how long that may take.
struct Relaunch {
    command: Box<dyn Fn() -> Command + Send + Sync>,
    origin: String,
    within: Duration,
    netns: Option<String>,
}

impl DnsServer {
    pub fn label(&self) -> &'static str {
        self.implementation.label()
    }

    /// The pid of the server's main process. NSD forks its workers: count
    /// the whole process tree when measuring it.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Fails if the server has exited, naming the tail of its log.
    pub fn assert_running(&mut self) -> Result<()> {
        self.daemon
            .assert_running()
            .with_context(|| format!("log:\n{}", self.log_tail()))
    }

    /// The last lines of the server's own log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.scratch.path.join("server.log"))
    }

    /// dnsd's config workspace (the others have none).
    pub fn workspace(&self) -> PathBuf {
        self.scratch.path.join("workspace")
    }

    /// Sends the server signal `signal` (`libc::SIGHUP`: reload).
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.daemon.signal(signal)
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.scratch.path.join("server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL, as a crash); `restart` starts it again.
    pub fn crash(&mut self) {
        self.daemon.kill_now();
    }

    /// Kills the server if it runs (SIGKILL, as a crash) and starts it
    /// again on the same files and address (its zone files, journal, dnsd's
    /// workspace), ready once it answers the SOA of its first zone.
    pub fn restart(&mut self) -> Result<()> {
        self.daemon.kill_now();
        let cmd = in_netns((self.relaunch.command)(), self.relaunch.netns.as_deref());
        self.daemon = spawn_logged(self.implementation, cmd, &self.scratch)?;
        wait_ready(self)
    }

    /// Knot only: the copy of zone `origin`'s file it serves (rewrite it,
    /// then `knot_reload`).
    pub fn knot_zone_file(&self, origin: &str) -> PathBuf {
        self.scratch
            .path
            .join(format!("{}.zone", origin.trim_end_matches('.')))
    }

    /// Knot only: loads its copy of zone `origin`'s file again (`knotc
    /// zone-reload`), as a difference when `notify` is set.
    pub fn knot_reload(&self, origin: &str) -> Result<()> {
        let out = Command::new(sbin("knotc"))
            .arg("-c")
            .arg(self.scratch.path.join("knot.conf"))
            .args(["zone-reload", origin])
            .output()
            .context("running knotc")?;
        ensure!(
            out.status.success(),
            "knotc zone-reload {origin}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Stops the server with SIGTERM.
    pub fn stop(self) -> Result<()> {
        let name = self.label();
        self.daemon
            .stop(Duration::from_secs(5))
            .with_context(|| format!("stopping {name}"))
            .map(|_| ())
    }
}

/// Starts NSD on `ip` (a free port is chosen).
pub fn start_nsd(ip: IpAddr, options: &ServerOptions) -> Result<DnsServer> {
    let scratch = Scratch::new("nsd")?;
    let dir = scratch.path.clone();
    let port = port_for(ip, options)?;
    let d = dir.display();
    // One CPU per server process, in turn.
    let mut affinity = String::new();
    if options.cpu_affinity == Some(true) {
        let cpus = crate::cpus::allowed()?;
        let list: Vec<String> = cpus.iter().map(ToString::to_string).collect();
        writeln!(affinity, "    cpu-affinity: {}", list.join(" "))?;
        for n in 1..=options.workers {
            let cpu = cpus[(n - 1) % cpus.len()];
            writeln!(affinity, "    server-{n}-cpu-affinity: {cpu}")?;
        }
    }
    let mut conf = format!(
        "server:
    ip-address: {ip}@{port}
    port: {port}
    do-ip4: {v4}
    do-ip6: {v6}
    # Run as the invoking user, outside any chroot, with every file here.
    username: \"\"
    chroot: \"\"
    zonesdir: \"{d}\"
    database: \"\"
    pidfile: \"{d}/nsd.pid\"
    xfrdfile: \"{d}/xfrd.state\"
    zonelistfile: \"{d}/zone.list\"
    xfrdir: \"{d}\"
    server-count: {workers}
    reuseport: yes
    # Debian's default rate limit would drop a benchmark's queries.
    rrl-ratelimit: 0
    round-robin: {rotate}
    verbosity: 1
    # A secondary serves a transfer at once: by default NSD reloads at
    # most once a second.
    xfrd-reload-timeout: 0
{affinity}remote-control:
    control-enable: no
",
        v4 = yes_no(ip.is_ipv4()),
        v6 = yes_no(ip.is_ipv6()),
        workers = options.workers,
        rotate = yes_no(options.rotate),
    );
    if let Some((name, secret)) = options.primary.as_ref().and_then(|p| p.key.as_ref()) {
        write!(
            conf,
            "key:\n    name: \"{name}\"\n    algorithm: hmac-sha256\n    secret: \"{secret}\"\n"
        )?;
    }
    for (origin, file) in &options.zones {
        if let Some(primary) = &options.primary {
            let key = primary
                .key
                .as_ref()
                .map_or("NOKEY", |(name, _)| name.as_str());
            let (pip, pport) = (primary.addr.ip(), primary.addr.port());
            write!(
                conf,
                "zone:\n    name: \"{origin}\"\n    zonefile: \"{d}/{origin}zone\"\n    \
                 request-xfr: {pip}@{pport} {key}\n    allow-notify: {pip} {key}\n    \
                 outgoing-interface: {ip}\n"
            )?;
        } else {
            let copy = copy_zone(&dir, origin, file)?;
            write!(
                conf,
                "zone:\n    name: \"{origin}\"\n    zonefile: \"{}\"\n",
                copy.display()
            )?;
        }
        if options.allow_axfr {
            conf.push_str("    provide-xfr: 127.0.0.0/8 NOKEY\n");
        }
    }
    let conf_path = dir.join("nsd.conf");
    fs::write(&conf_path, conf).context("writing nsd.conf")?;
    let command = move || {
        let mut cmd = Command::new(sbin("nsd"));
        cmd.arg("-d").arg("-c").arg(&conf_path);
        cmd
    };
    start(
        Implementation::Nsd,
        Box::new(command),
        scratch,
        SocketAddr::new(ip, port),
        options,
    )
}

/// Knot as a secondary of the dnsd at `primary`, answering at `at`, in
/// namespace `ns` (the demo's and the tests' hidden-primary setup).
pub fn knot_secondary_in(
    ns: &crate::netns::Netns,
    at: SocketAddr,
    primary: SocketAddr,
) -> Result<DnsServer> {
    start_knot(
        at.ip(),
        &ServerOptions {
            port: Some(at.port()),
            primary: Some(Primary {
                addr: primary,
                key: None,
            }),
            netns: Some(ns.name.clone()),
            ..ServerOptions::default()
        },
    )
}

/// Starts Knot DNS on `ip` (a free port is chosen).
pub fn start_knot(ip: IpAddr, options: &ServerOptions) -> Result<DnsServer> {
    let scratch = Scratch::new("knot")?;
    let dir = scratch.path.clone();
    let port = port_for(ip, options)?;
    let d = dir.display();
    let mut acl = String::new();
    if options.allow_axfr {
        acl.push_str("acl:\n  - id: axfr\n    address: 127.0.0.0/8\n    action: transfer\n");
    }
    if let Some(primary) = &options.primary {
        let key_ref = match &primary.key {
            Some((name, secret)) => {
                acl = format!(
                    "key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n{acl}"
                );
                format!("\n    key: {name}")
            }
            None => String::new(),
        };
        let (pip, pport) = (primary.addr.ip(), primary.addr.port());
        if !acl.contains("acl:") {
            acl.push_str("acl:\n");
        }
        write!(
            acl,
            "  - id: notify\n    address: {pip}\n    action: notify{key_ref}\n\
             remote:\n  - id: primary\n    address: {pip}@{pport}\n    via: {ip}{key_ref}\n"
        )?;
    }
    let mut zone_extra = String::new();
    if let Some((name, secret)) = &options.transfer_key {
        if !acl.contains("key:\n") {
            acl = format!(
                "key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n{acl}"
            );
        }
        if !acl.contains("acl:") {
            acl.push_str("acl:\n");
        }
        write!(
            acl,
            "  - id: keyed\n    key: {name}\n    action: transfer\n"
        )?;
        zone_extra.push_str("    acl: keyed\n");
    }
    if !options.notify.is_empty() {
        let key_ref = options
            .transfer_key
            .as_ref()
            .map_or(String::new(), |(name, _)| format!("\n    key: {name}"));
        let mut ids = Vec::new();
        let mut remotes = String::from("remote:\n");
        for (i, to) in options.notify.iter().enumerate() {
            write!(
                remotes,
                "  - id: notify{i}\n    address: {}@{}\n    via: {ip}{key_ref}\n",
                to.ip(),
                to.port()
            )?;
            ids.push(format!("notify{i}"));
        }
        acl.push_str(&remotes);
        write!(
            zone_extra,
            "    notify: [{}]\n    zonefile-load: difference\n    journal-content: changes\n",
            ids.join(", ")
        )?;
    }
    let mut conf = format!(
        "server:
    rundir: \"{d}\"
    listen: {ip}@{port}
    udp-workers: {workers}
    tcp-workers: 1
    background-workers: 1
    answer-rotation: {rotate}
    socket-affinity: {affinity}
database:
    storage: \"{d}\"
log:
  - target: stderr
    any: warning
{acl}template:
  - id: default
    storage: \"{d}\"
    # Serve the file as it is and never write to it; no journal.
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
",
        workers = options.workers,
        rotate = if options.rotate { "on" } else { "off" },
        affinity = if options.cpu_affinity == Some(true) {
            "on"
        } else {
            "off"
        },
    );
    // Knot's RRL is a module (mod-rrl) that is only active when configured:
    // nothing to turn off.
    for (origin, file) in &options.zones {
        if options.primary.is_some() {
            write!(
                conf,
                "  - domain: \"{origin}\"\n    file: \"{d}/{origin}zone\"\n    master: primary\n    acl: notify\n"
            )?;
        } else {
            let copy = copy_zone(&dir, origin, file)?;
            write!(
                conf,
                "  - domain: \"{origin}\"\n    file: \"{}\"\n",
                copy.display()
            )?;
        }
        if options.allow_axfr {
            conf.push_str("    acl: axfr\n");
        }
        conf.push_str(&zone_extra);
    }
    let conf_path = dir.join("knot.conf");
    fs::write(&conf_path, conf).context("writing knot.conf")?;
    let command = move || {
        let mut cmd = Command::new(sbin("knotd"));
        cmd.arg("-c").arg(&conf_path);
        cmd
    };
    start(
        Implementation::Knot,
        Box::new(command),
        scratch,
        SocketAddr::new(ip, port),
        options,
    )
}

/// Starts BIND (`named`) on `ip` as a secondary of `options.primary`,
/// which it must name (a free port is chosen unless `options.port` says).
/// named listens only on addresses an interface has (127.0.0.1 on lo, not
/// the rest of 127.0.0.0/8).
pub fn start_bind(ip: IpAddr, options: &ServerOptions) -> Result<DnsServer> {
    let Some(primary) = &options.primary else {
        bail!("BIND is only started as a secondary here: give ServerOptions::primary");
    };
    let scratch = Scratch::new("bind")?;
    let dir = scratch.path.clone();
    let port = port_for(ip, options)?;
    let d = dir.display();
    let (pip, pport) = (primary.addr.ip(), primary.addr.port());
    let mut conf = format!(
        "options {{
    directory \"{d}\";
    pid-file \"{d}/named.pid\";
    listen-on port {port} {{ {ip}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ {axfr}; }};
    // Transfers are asked from this address, as a primary's ACL expects.
    transfer-source {ip};
}};
controls {{ }};
",
        axfr = if options.allow_axfr {
            "127.0.0.0/8"
        } else {
            "none"
        },
    );
    let key = match &primary.key {
        Some((name, secret)) => {
            writeln!(
                conf,
                "key \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};"
            )?;
            format!(" key \"{name}\"")
        }
        None => String::new(),
    };
    for (origin, _) in &options.zones {
        write!(
            conf,
            "zone \"{origin}\" {{
    type secondary;
    primaries {{ {pip} port {pport}{key}; }};
    file \"{d}/{origin}zone\";
    allow-notify {{ {pip}; }};
}};
"
        )?;
    }
    let conf_path = dir.join("named.conf");
    fs::write(&conf_path, conf).context("writing named.conf")?;
    let command = move || {
        let mut cmd = Command::new(sbin("named"));
        // In the foreground, logging to stderr, as the invoking user.
        cmd.arg("-g").arg("-c").arg(&conf_path);
        cmd
    };
    start(
        Implementation::Bind,
        Box::new(command),
        scratch,
        SocketAddr::new(ip, port),
        options,
    )
}

/// Starts the dnsd binary at `bin` on `ip` with a fresh config workspace
/// holding the zones (and `dnsd.toml` with the worker count).
pub fn start_dnsd(bin: &Path, ip: IpAddr, options: &ServerOptions) -> Result<DnsServer> {
    let scratch = Scratch::new("dnsd")?;
    let dir = scratch.path.clone();
    let port = port_for(ip, options)?;
    let addr = SocketAddr::new(ip, port);
    let workspace = dir.join("workspace");
    let zones = workspace.join("zones");
    fs::create_dir_all(&zones).context("creating the dnsd workspace")?;
    let mut replicas = String::new();
    match &options.primary {
        None => {
            for (origin, file) in &options.zones {
                copy_zone(&zones, origin, file)?;
            }
        }
        Some(primary) => {
            if let Some((name, secret)) = &primary.key {
                write!(
                    replicas,
                    "[[tsig_key]]\nname = \"{name}\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{secret}\"\n"
                )?;
            }
            for (origin, _) in &options.zones {
                write!(
                    replicas,
                    "[[replica]]\nzone = \"{origin}\"\nprimary = \"{}\"\n",
                    primary.addr
                )?;
                if let Some((name, _)) = &primary.key {
                    writeln!(replicas, "tsig_key = \"{name}\"")?;
                }
            }
        }
    }
    fs::write(
        workspace.join("dnsd.toml"),
        format!(
            "[server]\nlisten = [\"{addr}\"]\nudp_sockets = {}\n{}{}{replicas}",
            options.workers,
            options
                .cpu_affinity
                .map_or(String::new(), |on| format!("cpu_affinity = {on}\n")),
            options.dnsd_toml,
        ),
    )
    .context("writing dnsd.toml")?;
    let (bin, api) = (bin.to_path_buf(), options.dnsd_api);
    let command = move || dnsd_command(&bin, &workspace, addr, api);
    start(
        Implementation::Dnsd,
        Box::new(command),
        scratch,
        addr,
        options,
    )
}

fn dnsd_command(
    bin: &Path,
    workspace: &Path,
    addr: SocketAddr,
    api: Option<SocketAddr>,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--workspace")
        .arg(workspace)
        .arg("--listen")
        .arg(addr.to_string())
        // DNSD_LOG=info shows what dnsd did in a test's log.
        .env(
            "RUST_LOG",
            std::env::var("DNSD_LOG").unwrap_or_else(|_| "warn".into()),
        );
    match api {
        Some(api) => cmd.arg("--api").arg(api.to_string()),
        // The API's default port would be shared by every test's dnsd.
        None => cmd.arg("--no-api"),
    };
    cmd
}

/// The zone whose SOA tells that a server is ready: the first one it
/// serves (the test zone unless told otherwise).
fn probe_origin(options: &ServerOptions) -> &str {
    options
        .zones
        .first()
        .map_or(TEST_ORIGIN, |(origin, _)| origin.as_str())
}

fn start(
    implementation: Implementation,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    scratch: Scratch,
    addr: SocketAddr,
    options: &ServerOptions,
) -> Result<DnsServer> {
    let netns = options.netns.clone();
    let daemon = spawn_logged(
        implementation,
        in_netns(command(), netns.as_deref()),
        &scratch,
    )?;
    let mut server = DnsServer {
        implementation,
        addr,
        daemon,
        scratch,
        relaunch: Relaunch {
            command,
            origin: probe_origin(options).to_string(),
            within: options.ready_within,
            netns,
        },
    };
    wait_ready(&mut server)?;
    Ok(server)
}

/// `cmd`, run in network namespace `netns` if there is one.
fn in_netns(cmd: Command, netns: Option<&str>) -> Command {
    let Some(ns) = netns else {
        return cmd;
    };
    let mut wrapped = Command::new("ip");
    wrapped
        .args(["netns", "exec", ns])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// Starts `cmd` with its output appended to the server's log.
fn spawn_logged(
    implementation: Implementation,
    mut cmd: Command,
    scratch: &Scratch,
) -> Result<Daemon> {
    let log_path = scratch.path.join("server.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .context("opening the server log")?;
    cmd.stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    Daemon::spawn(implementation.label(), cmd)
}

/// Waits until `server` answers the SOA of its first zone over UDP and
/// TCP.
fn wait_ready(server: &mut DnsServer) -> Result<()> {
    let (addr, implementation) = (server.addr, server.implementation);
    let (origin, within) = (server.relaunch.origin.clone(), server.relaunch.within);
    let netns = server.relaunch.netns.clone();
    let probe = Query::new(&origin, "SOA");
    let mut last = String::from("no query sent");
    let tcp_answers = || match &netns {
        None => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        Some(ns) => matches!(
            dig::ask_in(Some(ns), addr, &Query::new(&origin, "SOA").tcp()),
            Ok(Reply::Message(_))
        ),
    };
    let ready = wait_until(within, || {
        if server.daemon.assert_running().is_err() {
            return true;
        }
        let udp = match dig::ask_in(netns.as_deref(), addr, &probe) {
            Ok(Reply::Message(m)) if m.rcode == "NOERROR" && !m.answer.is_empty() => true,
            Ok(other) => {
                last = other.to_string();
                false
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        };
        udp && tcp_answers()
    });
    server.assert_running()?;
    if !ready {
        bail!(
            "{} on {addr} does not answer SOA {origin} over UDP and TCP within {within:?} \
             (last reply: {last}); log:\n{}",
            implementation.label(),
            server.log_tail()
        );
    }
    Ok(())
}

/// The port `options` asks for, or a free one.
fn port_for(ip: IpAddr, options: &ServerOptions) -> Result<u16> {
    options.port.map_or_else(|| free_port(ip), Ok)
}

/// A port free for both UDP and TCP on `ip`. Another process may take it
/// before the server binds; the server then fails to start and says so.
pub fn free_port(ip: IpAddr) -> Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).with_context(|| format!("binding UDP on {ip}"))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on {ip}")
}

/// Copies a zone file into `dir` as `<origin>.zone` (origin without the
/// final dot), the name dnsd's workspace expects.
fn copy_zone(dir: &Path, origin: &str, file: &Path) -> Result<PathBuf> {
    let copy = dir.join(format!("{}.zone", origin.trim_end_matches('.')));
    fs::copy(file, &copy)
        .with_context(|| format!("copying {} to {}", file.display(), copy.display()))?;
    Ok(copy)
}

/// What NSD's own checker says of `file` as the zone `origin`
/// (`nsd-checkzone`, run in the file's directory so that a relative
/// `$INCLUDE` is looked up beside it). It exits 0 when NSD would load the
/// zone; errors and warnings are on stderr as `file:line: message`.
pub fn nsd_checkzone(origin: &str, file: &Path) -> Result<Output> {
    let mut cmd = Command::new(sbin("nsd-checkzone"));
    cmd.arg(origin).arg(file);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        cmd.current_dir(dir);
    }
    cmd.output().context("running nsd-checkzone (install nsd)")
}

/// What Knot DNS says of `file` as the zone `origin`: `knotc zone-check`
/// on a configuration of that zone alone (Debian's knot package has no
/// `kzonecheck`), run in the file's directory. It exits 0 when Knot would
/// load the zone; errors are on stderr with the file and line.
pub fn knot_zone_check(origin: &str, file: &Path) -> Result<Output> {
    let scratch = Scratch::new("knotc")?;
    let d = scratch.path.display();
    let file = fs::canonicalize(file).with_context(|| format!("finding {}", file.display()))?;
    let conf = format!(
        "server:\n    rundir: \"{d}\"\ndatabase:\n    storage: \"{d}\"\n\
         template:\n  - id: default\n    storage: \"{d}\"\n\
         zone:\n  - domain: \"{origin}\"\n    file: \"{}\"\n",
        file.display()
    );
    let conf_path = scratch.path.join("knot.conf");
    fs::write(&conf_path, conf).context("writing knot.conf")?;
    let mut cmd = Command::new(sbin("knotc"));
    cmd.arg("-c").arg(&conf_path).arg("zone-check").arg(origin);
    if let Some(dir) = file.parent() {
        cmd.current_dir(dir);
    }
    cmd.output().context("running knotc (install knot)")
}

/// A daemon or tool from /usr/sbin, which an unprivileged user's PATH
/// often lacks.
pub fn sbin(program: &str) -> PathBuf {
    let path = Path::new("/usr/sbin").join(program);
    if !crate::bins::have(program) && path.exists() {
        return path;
    }
    PathBuf::from(program)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A directory under the system temp dir, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(prefix: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("cutover-{prefix}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
