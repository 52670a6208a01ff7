//! The checks `cutover migrate` and `cutover rollback` run before they change
//! anything. Each names what failed; a command whose check fails changes
//! nothing — no TTL lowered, no redirect, no record written — so that a
//! wrong token or a dead host costs a retry, not an hour of waiting out a
//! TTL with the service half-moved.
//!
//! Targets are checked from where they will be reached: NEW from the old
//! host that forwards to it (the redirector's `POST /v1/probe`) as well as
//! from here, and OLD from the old host itself, because while a redirect is
//! on, a connection to OLD from anywhere else is forwarded to NEW and would
//! hide a dead old server.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::api::{Dns, Redirector, Service};

/// Both APIs answer with their tokens; dnsd serves `name`. Returns the
/// service as dnsd serves it now.
pub fn apis(dns: &Dns, old: &Redirector, name: &str) -> Result<Service> {
    let service = dns.service(name).context("dnsd's API")?;
    old.rules()
        .with_context(|| format!("the old host's redirector API at {}", old.0.base))?;
    Ok(service)
}

/// The old addresses to redirect, one per new address in `to`: `--from`,
/// each one of the service's addresses, or for a pool, family by family,
/// the service's addresses of each family `to` names, as many as it names
/// of it, in the service's order (a dual-stack pool moves A and AAAA
/// together; a family `to` leaves out is kept as it is).
pub fn old_addresses(service: &Service, from: &[IpAddr], to: &[IpAddr]) -> Result<Vec<String>> {
    match (from, to) {
        (_, []) => bail!("--to names no address"),
        ([], [one]) => Ok(vec![old_address(service, None, *one)?]),
        ([], many) => {
            let of_family = |v4: bool| -> Vec<String> {
                service
                    .addresses
                    .iter()
                    .filter(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4() == v4))
                    .cloned()
                    .collect()
            };
            let (olds4, olds6) = (of_family(true), of_family(false));
            for (v4, olds, name) in [(true, &olds4, "IPv4"), (false, &olds6, "IPv6")] {
                let news = many.iter().filter(|a| a.is_ipv4() == v4).count();
                if news > 0 && olds.len() != news {
                    bail!(
                        "{} has {} {name} addresses ({}) for {news} new ones: say which move \
                         where with --from, one per --to",
                        service.name,
                        olds.len(),
                        olds.join(", "),
                    );
                }
            }
            // Paired in --to's order, each with the next old address of its
            // family.
            let (mut olds4, mut olds6) = (olds4.into_iter(), olds6.into_iter());
            Ok(many
                .iter()
                .filter_map(|a| {
                    if a.is_ipv4() {
                        olds4.next()
                    } else {
                        olds6.next()
                    }
                })
                .collect())
        }
        (from, to) if from.len() != to.len() => bail!(
            "--from names {} addresses and --to {}: one old address per new one",
            from.len(),
            to.len()
        ),
        (from, to) => {
            let mut olds = Vec::with_capacity(from.len());
            for (f, t) in from.iter().zip(to) {
                let old = old_address(service, Some(*f), *t)?;
                if olds.contains(&old) {
                    bail!("--from names {old} twice");
                }
                olds.push(old);
            }
            Ok(olds)
        }
    }
}

/// The old address to redirect: `--from`, which must be one of the
/// service's addresses, or the service's only address.
pub fn old_address(service: &Service, from: Option<IpAddr>, to: IpAddr) -> Result<String> {
    // Without --from, the one address of the new one's family (a v4 move
    // leaves the AAAA records alone).
    let same_family: Vec<&String> = service
        .addresses
        .iter()
        .filter(|a| {
            a.parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_ipv4() == to.is_ipv4())
        })
        .collect();
    if from.is_none()
        && let [only] = same_family.as_slice()
    {
        return Ok((*only).clone());
    }
    match (from, service.addresses.as_slice()) {
        (Some(from), addresses) => {
            let from = from.to_string();
            if !addresses.contains(&from) {
                bail!(
                    "--from {from} is not an address of {} (it has {}): a redirect of {from} would \
                     never see the service's clients",
                    service.name,
                    addresses.join(", ")
                );
            }
            Ok(from)
        }
        (None, [only]) => Ok(only.clone()),
        (None, many) => bail!(
            "{} has {} addresses ({}): say which one to redirect with --from",
            service.name,
            many.len(),
            many.join(", ")
        ),
    }
}

/// NEW:port accepts connections from here and from the old host, which
/// will forward clients to it from `old_ip` (the rule's OLD address, which
/// the redirector rewrites their source to).
pub fn new_accepts(
    old: &Redirector,
    old_ip: &str,
    ip: &str,
    local_ip: &str,
    port: u16,
) -> Result<()> {
    let addr = socket(ip, port)?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map(drop)
        .with_context(|| format!("the new host {addr} does not accept connections from here"))?;
    // As the old host will forward: to NEW's address as it reaches it.
    let addr = socket(local_ip, port)?;
    probe(old, &addr, Some(old_ip)).with_context(|| {
        format!(
            "the new host {addr} does not accept connections from the old host's {old_ip}, \
             which forwarded clients come from (asked {})",
            old.0.base
        )
    })
}

/// OLD:port accepts connections, asked of the old host itself (a
/// connection from here would be forwarded to NEW while the redirect is on).
pub fn old_accepts(old: &Redirector, ip: &str, port: u16) -> Result<()> {
    let addr = socket(ip, port)?;
    probe(old, &addr, None).with_context(|| {
        format!(
            "the old host's server {addr} does not accept connections (asked {})",
            old.0.base
        )
    })
}

fn probe(host: &Redirector, addr: &SocketAddr, source: Option<&str>) -> Result<()> {
    let report = host.probe(&addr.to_string(), source)?;
    if !report.connected {
        bail!("{}", report.error.unwrap_or_else(|| "refused".into()));
    }
    Ok(())
}

fn socket(ip: &str, port: u16) -> Result<SocketAddr> {
    let ip: IpAddr = ip
        .parse()
        .with_context(|| format!("{ip} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(addresses: &[&str]) -> Service {
        Service {
            name: "www.example.test.".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            ttl: 60,
            members: Vec::new(),
        }
    }

    #[test]
    fn a_pool_moves_address_by_address_in_order() {
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
        let pool = service(&["198.18.0.2", "198.18.0.12", "198.18.0.22", "2001:2::2"]);
        let to = ips(&["198.18.0.3", "198.18.0.13", "198.18.0.23"]);
        // Without --from: the service's addresses of the family, in order.
        assert_eq!(
            old_addresses(&pool, &[], &to).unwrap(),
            ["198.18.0.2", "198.18.0.12", "198.18.0.22"]
        );
        // With it: paired as given.
        let from = ips(&["198.18.0.22", "198.18.0.2", "198.18.0.12"]);
        assert_eq!(
            old_addresses(&pool, &from, &to).unwrap(),
            ["198.18.0.22", "198.18.0.2", "198.18.0.12"]
        );
        // A dual-stack pool: both families at once, each in the service's
        // order, paired in --to's.
        let dual = ips(&["2001:2::3", "198.18.0.3", "198.18.0.13", "198.18.0.23"]);
        assert_eq!(
            old_addresses(&pool, &[], &dual).unwrap(),
            ["2001:2::2", "198.18.0.2", "198.18.0.12", "198.18.0.22"]
        );
        for (from, to, why) in [
            (
                ips(&["198.18.0.2"]),
                to.clone(),
                "one old address per new one",
            ),
            (
                ips(&["198.18.0.2", "198.18.0.2", "198.18.0.12"]),
                to.clone(),
                "twice",
            ),
            (
                ips(&["198.18.0.9", "198.18.0.2", "198.18.0.12"]),
                to.clone(),
                "not an address",
            ),
            (
                vec![],
                ips(&["198.18.0.3", "198.18.0.13"]),
                "say which move where",
            ),
            (
                vec![],
                ips(&["198.18.0.3", "2001:2::3"]),
                "3 IPv4 addresses",
            ),
            (
                vec![],
                ips(&[
                    "198.18.0.3",
                    "198.18.0.13",
                    "198.18.0.23",
                    "2001:2::3",
                    "2001:2::4",
                ]),
                "1 IPv6 addresses",
            ),
        ] {
            let e = old_addresses(&pool, &from, &to).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_old_address_is_the_one_of_the_new_ones_family_unless_told() {
        let to: IpAddr = "198.18.0.3".parse().unwrap();
        let dual = service(&["198.18.0.2", "2001:2::2"]);
        assert_eq!(old_address(&dual, None, to).unwrap(), "198.18.0.2");
        let pool = service(&["198.18.0.2", "198.18.0.9"]);
        assert!(
            old_address(&pool, None, to)
                .unwrap_err()
                .to_string()
                .contains("--from")
        );
        let from = Some("198.18.0.9".parse().unwrap());
        assert_eq!(old_address(&pool, from, to).unwrap(), "198.18.0.9");
        let stranger = Some("198.18.0.7".parse().unwrap());
        assert!(old_address(&pool, stranger, to).is_err());
    }
}
