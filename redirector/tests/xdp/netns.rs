//! A throw-away network namespace for `BPF_PROG_TEST_RUN`: the program's
//! FIB, neighbour and socket lookups run in the namespace of the interface
//! given as `ingress_ifindex`, which the kernel resolves in the calling
//! thread's namespace. So the tests run their body on a thread that entered
//! the namespace with setns(2).

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Runs `ip args...`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The old host's interface that frames "arrive" on.
pub const INGRESS: &str = "old0";
/// A second interface of the old host, for the devmap path.
pub const OTHER: &str = "old1";
pub const OLD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];

/// The old host's address, on `old0`.
pub const OLD: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The new host, a neighbour on `old0` with a known MAC (the eth0 -> eth0 case).
pub const NEW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const NEW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x00, 0x02];
/// A new host on the same link whose MAC nobody has resolved yet.
pub const NEW_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// A new host behind `old1`.
pub const NEW_OTHER: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
pub const NEW_OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
/// A new host in an unreachable network.
pub const NEW_UNREACHABLE: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 1);
/// A network whose route a test may take away (`ip route replace ... unreachable`).
pub const NEW_MOVABLE: Ipv4Addr = Ipv4Addr::new(198, 19, 50, 1);
/// Clients that cached the old address: 198.18.0.100 + n, neighbours on `old0`.
pub fn client(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 100 + n)
}
pub fn client_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x00, 100 + n]
}
/// How many clients have neighbour entries.
pub const CLIENTS: u8 = 8;
/// The IPv6 addresses of the same hosts: the old host's on `old0`
/// (2001:2::/64) ...
pub const OLD6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// ... the new host there, with `NEW_MAC` ...
pub const NEW6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// ... a new host behind `old1` (2001:2:0:1::/64), with `NEW_OTHER_MAC` ...
pub const NEW6_OTHER: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
/// ... and client `n` at 2001:2::100 + n, with `client_mac(n)`.
pub fn client6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100 + n as u16)
}

/// A local address of the old host's own clients (for connections the old
/// host serves itself).
pub const LOCAL_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A network namespace, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with loopback up.
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "xdpt{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-qw", setting])
            .output()
            .context("running sysctl")?;
        if !out.status.success() {
            bail!(
                "sysctl {setting}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `program args...` inside the namespace, failing with its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // setns(2) moves only this thread, which ends with the scope.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The old host, alone in a namespace: its FIB and neighbour table are set
/// up for test runs; nothing listens on the other ends of its links.
pub struct OldHost {
    pub ns: Netns,
}

impl std::ops::Deref for OldHost {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl OldHost {
    /// Creates the namespace: `old0` (198.18.0.1/24) and `old1`
    /// (198.19.1.1/24), each a veth whose peer stays in the namespace,
    /// forwarding on, permanent neighbours for the clients and the new
    /// hosts, an unreachable network and one route that tests may change.
    pub fn new() -> Result<Self> {
        let host = Self { ns: Netns::new()? };
        host.setup()
            .with_context(|| format!("setting up namespace {}", host.ns.name))?;
        Ok(host)
    }

    /// The ifindex of `dev` (call from inside the namespace).
    pub fn ifindex(dev: &str) -> Result<u32> {
        let name = std::ffi::CString::new(dev)?;
        let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if idx == 0 {
            bail!("no interface {dev}: {}", std::io::Error::last_os_error());
        }
        Ok(idx)
    }

    fn setup(&self) -> Result<()> {
        let n = self.ns.name.as_str();
        for (dev, peer, m, addr) in [
            (INGRESS, "peer0", OLD_MAC, "198.18.0.1/24"),
            (OTHER, "peer1", OTHER_MAC, "198.19.1.1/24"),
        ] {
            ip(&[
                "-n", n, "link", "add", dev, "type", "veth", "peer", "name", peer,
            ])?;
            ip(&["-n", n, "link", "set", dev, "address", &mac(m)])?;
            ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
            ip(&["-n", n, "link", "set", peer, "up"])?;
        }
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{LOCAL_CLIENT}/32"),
            "dev",
            "lo",
        ])?;
        let mut neighbours = vec![
            (NEW, NEW_MAC, INGRESS),
            (NEW_OTHER, NEW_OTHER_MAC, OTHER),
            (
                Ipv4Addr::new(198, 18, 0, 50),
                [0x02, 0, 0, 0, 0, 0x50],
                INGRESS,
            ),
        ];
        for c in 0..CLIENTS {
            neighbours.push((client(c), client_mac(c), INGRESS));
        }
        for (addr, m, dev) in neighbours {
            ip(&[
                "-n",
                n,
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac(m),
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        // IPv6 beside IPv4 on both links, without duplicate address
        // detection (nothing answers on the other ends).
        for (dev, addr) in [(INGRESS, "2001:2::1/64"), (OTHER, "2001:2:0:1::1/64")] {
            ip(&["-n", n, "addr", "add", addr, "dev", dev, "nodad"])?;
        }
        let mut neighbours6 = vec![(NEW6, NEW_MAC, INGRESS), (NEW6_OTHER, NEW_OTHER_MAC, OTHER)];
        for c in 0..CLIENTS {
            neighbours6.push((client6(c), client_mac(c), INGRESS));
        }
        for (addr, m, dev) in neighbours6 {
            #[rustfmt::skip]
            ip(&[
                "-n", n, "neigh", "replace", &addr.to_string(), "lladdr", &mac(m), "dev", dev,
                "nud", "permanent",
            ])?;
        }
        self.ns.sysctl("net.ipv6.conf.all.forwarding=1")?;
        ip(&["-n", n, "route", "add", "unreachable", "198.19.200.0/24"])?;
        ip(&[
            "-n",
            n,
            "route",
            "add",
            "198.19.50.0/24",
            "via",
            "198.18.0.50",
            "dev",
            INGRESS,
        ])?;
        self.ns.sysctl("net.ipv4.ip_forward=1")
    }
}

/// The old host and a LAN namespace on one veth link (`old0` <-> `lan0`).
/// The LAN holds the client (198.18.0.100) and the new host (198.18.0.2)
/// as addresses of `lan0`; the old host knows none of their MACs yet.
pub struct Lan {
    pub old: Netns,
    pub lan: Netns,
}

impl Lan {
    pub fn new() -> Result<Self> {
        let lan = Self {
            old: Netns::new()?,
            lan: Netns::new()?,
        };
        let (o, l) = (&lan.old, &lan.lan);
        #[rustfmt::skip]
        o.ip(&[
            "link", "add", INGRESS, "type", "veth", "peer", "name", "lan0", "netns", &l.name,
        ])?;
        o.ip(&["link", "set", INGRESS, "address", &mac(OLD_MAC)])?;
        o.ip(&["addr", "add", "198.18.0.1/24", "dev", INGRESS])?;
        o.ip(&["link", "set", INGRESS, "up"])?;
        for a in ["198.18.0.100/24", "198.18.0.2/24"] {
            l.ip(&["addr", "add", a, "dev", "lan0"])?;
        }
        l.ip(&["link", "set", "lan0", "up"])?;
        // A partially checksummed frame loses that state when XDP sends it.
        for (ns, dev) in [(o, INGRESS), (l, "lan0")] {
            ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
        }
        Ok(lan)
    }
}
