//! The host settings the data path depends on, and neighbour warm-up.
//!
//! - `bpf_fib_lookup` answers "forwarding disabled" unless IPv4 forwarding is
//!   on for the interface, so `ip_forward` and `conf.IF.forwarding` go to 1.
//! - Redirected traffic leaves through the interface it came in on; the stack
//!   must not answer the packets it forwards that way (the NO_NEIGH slow
//!   path) with ICMP redirects: `send_redirects` goes to 0 (`all` and IF).
//! - When the next hop's MAC is unknown, the program hands the translated
//!   packet to the kernel, whose source is now a local address (OLD_IP):
//!   `accept_local` lets the kernel accept and forward it, and reverse path
//!   filtering (the effective value is the max of `all` and IF) must be off.
//!
//! - IPv6, only once a rule is IPv6 (`prepare_ipv6`): `bpf_fib_lookup`
//!   needs `conf.IF.forwarding`, and the kernel forwards (the NO_NEIGH path)
//!   only with `conf.all.forwarding`, which sets every interface's. Any
//!   write of 1 to a `forwarding` makes the kernel drop the routes learnt
//!   from router advertisements on every interface whose `accept_ra` is not
//!   2, and a forwarding interface ignores advertisements unless it is 2:
//!   so every interface (and `default`, for those to come) with
//!   `accept_ra=1` gets 2 first, which changes nothing on an interface that
//!   does not forward. Hosts that take their IPv6 default route from
//!   advertisements (EC2, SLAAC) keep it.
//!
//! Values are changed, never restored on exit: they are what the iptables
//! recipe needs too, and an operator may rely on them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tracing::{debug, info};

/// One sysctl under /proc/sys/net and the value the data path needs.
struct Setting {
    path: PathBuf,
    wanted: &'static str,
    /// Changed only from this value (`None`: from any).
    only_from: Option<&'static str>,
    /// Logged with the change, for the operator who wonders.
    why: &'static str,
}

fn settings(iface: &str) -> Vec<Setting> {
    let conf = |dev: &str, key: &str| PathBuf::from("/proc/sys/net/ipv4/conf").join(dev).join(key);
    vec![
        Setting {
            path: PathBuf::from("/proc/sys/net/ipv4/ip_forward"),
            wanted: "1",
            only_from: None,
            why: "bpf_fib_lookup needs IPv4 forwarding",
        },
        Setting {
            path: conf(iface, "forwarding"),
            wanted: "1",
            only_from: None,
            why: "bpf_fib_lookup needs IPv4 forwarding on the interface",
        },
        Setting {
            path: conf("all", "send_redirects"),
            wanted: "0",
            only_from: None,
            why: "redirected traffic leaves where it came in; no ICMP redirects",
        },
        Setting {
            path: conf(iface, "send_redirects"),
            wanted: "0",
            only_from: None,
            why: "redirected traffic leaves where it came in; no ICMP redirects",
        },
        Setting {
            path: conf(iface, "accept_local"),
            wanted: "1",
            only_from: None,
            why: "the kernel forwards translated packets whose source is local (NO_NEIGH path)",
        },
        Setting {
            path: conf(iface, "rp_filter"),
            wanted: "0",
            only_from: None,
            why: "translated packets with a local source fail reverse path filtering",
        },
        Setting {
            path: conf("all", "rp_filter"),
            wanted: "0",
            only_from: None,
            why: "rp_filter's effective value is the max of `all` and the interface",
        },
    ]
}

fn conf6(dev: &str, key: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv6/conf").join(dev).join(key)
}

/// The IPv6 settings for forwarding on `ifaces`, in the order they must
/// be made (see the module doc).
fn settings6(ifaces: &[String]) -> Result<Vec<Setting>> {
    let mut settings = Vec::new();
    let devs = std::fs::read_dir("/proc/sys/net/ipv6/conf")
        .context("reading /proc/sys/net/ipv6/conf (is IPv6 disabled on this host?)")?;
    let mut names: Vec<String> = devs
        .filter_map(|d| d.ok()?.file_name().into_string().ok())
        .filter(|name| name != "all")
        .collect();
    names.sort();
    for dev in names {
        settings.push(Setting {
            path: conf6(&dev, "accept_ra"),
            wanted: "2",
            only_from: Some("1"),
            why: "forwarding drops routes learnt from router advertisements unless accept_ra is 2",
        });
    }
    settings.push(Setting {
        path: conf6("all", "forwarding"),
        wanted: "1",
        only_from: None,
        why: "the kernel forwards translated IPv6 packets (NO_NEIGH path) only with it",
    });
    for iface in ifaces {
        settings.push(Setting {
            path: conf6(iface, "forwarding"),
            wanted: "1",
            only_from: None,
            why: "bpf_fib_lookup needs IPv6 forwarding on the interface",
        });
    }
    Ok(settings)
}

/// Applies the IPv6 sysctls for forwarding on `ifaces`, logging every
/// change; for a config with IPv6 rules (at start and at each reload: a
/// value already right is left alone). Fails, changing nothing, when an
/// interface has no IPv6.
pub fn prepare_ipv6(ifaces: &[String]) -> Result<()> {
    for iface in ifaces {
        if !conf6(iface, "forwarding").exists() {
            anyhow::bail!("{iface} has no IPv6 (disabled?): IPv6 rules cannot be forwarded");
        }
    }
    apply(settings6(ifaces)?)
}

/// Applies the sysctls for `iface`, logging every change.
pub fn prepare(iface: &str) -> Result<()> {
    // Checked first, so that a typo changes nothing on the host.
    if !PathBuf::from("/proc/sys/net/ipv4/conf")
        .join(iface)
        .is_dir()
    {
        anyhow::bail!("there is no interface {iface} with IPv4 in this network namespace");
    }
    apply(settings(iface))
}

/// Makes each setting, in order, logging what changes.
fn apply(settings: Vec<Setting>) -> Result<()> {
    for s in settings {
        let current = match std::fs::read_to_string(&s.path) {
            Ok(text) => text,
            // Another interface's, gone since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && s.only_from.is_some() => {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", s.path.display())),
        };
        let current = current.trim();
        if current == s.wanted || s.only_from.is_some_and(|from| from != current) {
            debug!(sysctl = %s.path.display(), value = current, "left as it is");
            continue;
        }
        std::fs::write(&s.path, s.wanted)
            .with_context(|| format!("setting {} to {}", s.path.display(), s.wanted))?;
        info!(
            sysctl = %s.path.display(),
            from = current,
            to = s.wanted,
            why = s.why,
            "changed a host setting"
        );
    }
    Ok(())
}

/// Makes the kernel resolve the next hop towards each destination now, so
/// that the first SYN of a redirected connection rarely takes the slow path:
/// an empty UDP datagram to the discard port makes the stack look up the
/// route and send an ARP request. NEW answers with an ICMP port unreachable
/// at worst, which nobody reads; but that answer spends NEW's ICMP budget
/// towards this host (1/s, burst 6 per peer by default), which the port
/// unreachables of redirected UDP flows need too: probe each address once,
/// and rarely (see `Daemon::housekeep`).
pub fn warm_neighbours(targets: impl IntoIterator<Item = IpAddr>) {
    let targets: std::collections::BTreeSet<IpAddr> = targets.into_iter().collect();
    let (mut v4, mut v6) = (None, None);
    for to in targets {
        let socket = if to.is_ipv4() { &mut v4 } else { &mut v6 };
        let socket = match socket {
            Some(s) => s,
            None => match UdpSocket::bind(unspecified(to)) {
                Ok(s) => socket.insert(s),
                Err(e) => {
                    debug!(error = %e, "no socket for neighbour warm-up");
                    continue;
                }
            },
        };
        let probe = SocketAddr::new(to, 9);
        if let Err(e) = socket.send_to(&[], probe) {
            debug!(%probe, error = %e, "neighbour warm-up failed");
        }
    }
}

/// Why this host cannot route to `ip`, or `None` when it can: connecting a
/// UDP socket asks the routing table and sends nothing.
pub fn no_route(ip: IpAddr) -> Option<std::io::Error> {
    let socket = UdpSocket::bind(unspecified(ip)).ok()?;
    socket.connect(SocketAddr::new(ip, 9)).err()
}

/// Any address, port 0, of `ip`'s family.
fn unspecified(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    }
}

/// The ports this host's own connections pick theirs from
/// (`net.ipv4.ip_local_port_range`, in this network namespace).
pub fn local_port_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|p| p.parse::<u16>());
    match (ports.next(), ports.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// Whether `ip` is an address of this host (in this network namespace):
/// only those can be bound. A rule whose `from` is not local sees no
/// traffic, which is worth a warning rather than an error (the address may
/// be added after the rule).
pub fn is_local(ip: IpAddr) -> bool {
    match UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrNotAvailable,
    }
}
