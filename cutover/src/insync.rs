//! Waiting for the world to see a change, as Route 53 reports INSYNC: every
//! name server of the zone is asked for its SOA serial until each serves
//! the serial the change made, or the wait runs out.
//!
//! The name servers are those given (`--nameservers`), else those dnsd
//! lists for the zone (`GET /v1/zones`: its own listening addresses and the
//! zone's `[[secondary]]`s; none when the zone has no secondaries, as dnsd
//! serves a change once it has acknowledged it).

use std::net::{SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::api::Dns;

/// How long one SOA query waits for its answer.
const ASK: Duration = Duration::from_millis(500);
/// How often the name servers are asked again.
const AGAIN: Duration = Duration::from_millis(250);

/// What the wait saw.
pub struct InSync {
    /// From the start of the wait until the last name server served it.
    pub after: Duration,
    pub servers: usize,
}

/// Waits until every name server of the zone holding `name` serves the
/// zone's current serial (read from dnsd now, right after a change), or
/// `timeout` passes; `explicit` overrides dnsd's list. `None`: there is no
/// one to wait for. An error names the name servers still behind.
pub fn wait(
    dns: &Dns,
    name: &str,
    explicit: &[SocketAddr],
    timeout: Duration,
) -> Result<Option<InSync>> {
    let zone = dns
        .zone_of(name)
        .with_context(|| format!("finding the zone of {name}"))?;
    let Some(serial) = zone.serial else {
        bail!("dnsd gives no serial for the zone {}", zone.origin);
    };
    let servers: Vec<SocketAddr> = if explicit.is_empty() {
        zone.nameservers
            .iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("dnsd lists the name server {s:?}"))
            })
            .collect::<Result<_>>()?
    } else {
        explicit.to_vec()
    };
    if servers.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    loop {
        let behind: Vec<(SocketAddr, Option<u32>)> = servers
            .iter()
            .map(|&s| (s, soa_serial(s, &zone.origin)))
            .filter(|(_, has)| !has.is_some_and(|h| serial_at_least(h, serial)))
            .collect();
        if behind.is_empty() {
            return Ok(Some(InSync {
                after: started.elapsed(),
                servers: servers.len(),
            }));
        }
        let lagging: Vec<String> = behind
            .iter()
            .map(|(s, has)| match has {
                Some(h) => format!("{s} has serial {h}"),
                None => format!("{s} does not answer"),
            })
            .collect();
        if started.elapsed() > timeout {
            bail!(
                "after {} s not every name server of {} serves serial {serial}: {}",
                timeout.as_secs(),
                zone.origin,
                lagging.join(", ")
            );
        }
        print!(
            "\r   in sync on {} of {} name servers; waiting for {} ",
            servers.len() - behind.len(),
            servers.len(),
            lagging.join(", ")
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        sleep(AGAIN);
    }
}

/// `a` is `b` or newer in serial arithmetic (RFC 1982).
fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}

/// The SOA serial `server` gives for `zone`, asked over UDP; `None` if it
/// gives none in time.
fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.set_read_timeout(Some(ASK)).ok()?;
    let id: u16 = std::process::id() as u16 ^ (Instant::now().elapsed().subsec_nanos() as u16);
    let query = soa_query(id, zone)?;
    socket.send_to(&query, server).ok()?;
    let mut reply = [0u8; 1232];
    loop {
        let (n, from) = socket.recv_from(&mut reply).ok()?;
        if from == server && n >= 12 && reply[..2] == id.to_be_bytes() {
            return answer_serial(&reply[..n]);
        }
    }
}

/// A query for `zone`'s SOA, without recursion.
fn soa_query(id: u16, zone: &str) -> Option<Vec<u8>> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in zone
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        q.push(u8::try_from(label.len()).ok().filter(|&l| l <= 63)?);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 6, 0, 1]);
    Some(q)
}

/// The serial of the first SOA record in the answer section of `reply`.
fn answer_serial(reply: &[u8]) -> Option<u32> {
    let count = |i: usize| u16::from_be_bytes([reply[i], reply[i + 1]]);
    if reply[3] & 0x0f != 0 || count(6) == 0 {
        return None;
    }
    let mut at = skip_name(reply, 12)? + 4;
    for _ in 0..count(6) {
        at = skip_name(reply, at)?;
        let fixed = reply.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = reply.get(at + 10..at + 10 + rdlength)?;
        if rtype == 6 {
            let serial = rdata.get(rdata.len().checked_sub(20)?..rdata.len() - 16)?;
            return Some(u32::from_be_bytes(serial.try_into().ok()?));
        }
        at += 10 + rdlength;
    }
    None
}

/// Where the name at `at` ends (a compression pointer ends it).
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *message.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soa_answer_gives_its_serial() {
        let mut reply = soa_query(7, "example.test.").unwrap();
        reply[2] = 0x84;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0]);
        reply.extend_from_slice(&42u32.to_be_bytes());
        reply.extend_from_slice(&[0; 16]);
        assert_eq!(answer_serial(&reply), Some(42));
        reply[3] = 5;
        assert_eq!(answer_serial(&reply), None);
        assert!(serial_at_least(1, u32::MAX) && !serial_at_least(41, 42));
    }
}
