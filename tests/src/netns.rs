//! Network namespaces and links for test topologies, removed on drop.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Runs a command, failing with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A unique name: `prefix` + pid + a counter, at most 15 bytes (IFNAMSIZ - 1)
/// so it also fits an interface name.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    name.chars().take(15).collect()
}

/// A network namespace that exists until dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a namespace named `prefix`+unique suffix, with loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a thread of its own that has entered the namespace
    /// (setns changes only the calling thread's namespace, so the test's
    /// threads stay where they are). Sockets `f` opens belong to the
    /// namespace for good and may be used from any thread afterwards.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        const CLONE_NEWNET: std::ffi::c_int = 0x4000_0000;
        unsafe extern "C" {
            fn setns(fd: std::ffi::c_int, nstype: std::ffi::c_int) -> std::ffi::c_int;
        }
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: a valid fd of a network namespace; affects this
                // thread only.
                if unsafe { setns(std::os::fd::AsRawFd::as_raw_fd(&ns), CLONE_NEWNET) } != 0 {
                    bail!("setns {path}: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {} panicked", self.name))?
        })
    }

    /// A command that will run inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args...` in the namespace, failing with its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{program} {} in {} failed: {}{}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out)
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", setting]).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then remove the namespace; its
        // veth ends disappear with it.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A bridge in namespace `ns` joining one veth per attached namespace.
/// `attach` moves one end of a fresh veth pair into the host namespace as
/// `eth0` with the given addresses and the other end onto the bridge.
pub struct Bridge<'a> {
    pub ns: &'a Netns,
    pub name: String,
    ports: u32,
}

impl<'a> Bridge<'a> {
    pub fn new(ns: &'a Netns) -> Result<Self> {
        let name = "br0".to_string();
        ns.ip(&["link", "add", &name, "type", "bridge"])?;
        ns.ip(&["link", "set", &name, "up"])?;
        // A switch forwards frames; it does not run them through iptables.
        // With br_netfilter loaded (iptables' own tests load it) every
        // bridged frame would, which costs the paths that cross the bridge
        // twice (through the old host) more than the direct one.
        if ns.exec("test", &["-e", "/proc/sys/net/bridge"]).is_ok() {
            for table in ["iptables", "ip6tables", "arptables"] {
                ns.sysctl(&format!("net.bridge.bridge-nf-call-{table}=0"))?;
            }
        }
        Ok(Self { ns, name, ports: 0 })
    }

    /// Plugs `host` into the bridge with interface `eth0` carrying `addrs`
    /// (CIDR, e.g. "198.18.0.2/24"). Returns the bridge-side port name.
    pub fn attach(&mut self, host: &Netns, addrs: &[&str]) -> Result<String> {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        let tmp = unique_name("v");
        self.ns
            .ip(&["link", "add", &port, "type", "veth", "peer", "name", &tmp])?;
        self.ns.ip(&["link", "set", &tmp, "netns", &host.name])?;
        host.ip(&["link", "set", &tmp, "name", "eth0"])?;
        for a in addrs {
            host.ip(&["addr", "add", a, "dev", "eth0"])?;
        }
        host.ip(&["link", "set", "eth0", "up"])?;
        self.ns.ip(&["link", "set", &port, "master", &self.name])?;
        self.ns.ip(&["link", "set", &port, "up"])?;
        Ok(port)
    }
}
