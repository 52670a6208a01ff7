//! A SYN flood from spoofed sources, for the redirector's flood test: raw
//! IPv4 packets built here (IP_HDRINCL), each from another address and
//! port of a range nothing routes back to, bounded in count and in time.
//! No flood tool (hping3, trafgen) is needed on the machine.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

const IPPROTO_RAW: i32 = 255;
const IPPROTO_TCP: u8 = 6;

/// Sends up to `count` SYNs to `targets` in turn from inside `ns`, for at
/// most `limit`, with sources spread over the /16 that starts at
/// `sources`. Returns how many were sent.
pub fn send(
    ns: &Netns,
    targets: &[SocketAddrV4],
    sources: Ipv4Addr,
    count: u64,
    limit: Duration,
) -> Result<u64> {
    anyhow::ensure!(!targets.is_empty(), "no target for the flood");
    ns.run_in(|| {
        // IPPROTO_RAW: the packet carries its own IP header.
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
            .context("a raw socket (root only)")?;
        let deadline = Instant::now() + limit;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut sent = 0;
        while sent < count && (sent % 1024 != 0 || Instant::now() < deadline) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = Ipv4Addr::from(u32::from(sources) + (x as u32 & 0xffff));
            let sport = 1024 + ((x >> 16) as u16 % 60000);
            let target = targets[sent as usize % targets.len()];
            let packet = syn(SocketAddrV4::new(src, sport), target, (x >> 32) as u32);
            let to = SockAddr::from(SocketAddrV4::new(*target.ip(), 0));
            match socket.send_to(&packet, &to) {
                Ok(_) => sent += 1,
                // The device queue is full: give it a moment.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    std::thread::sleep(Duration::from_micros(100))
                }
                Err(e) => return Err(e).context("sending a SYN"),
            }
        }
        Ok(sent)
    })
}

/// An IPv4 + TCP SYN from `from` to `to` with sequence number `seq`; the
/// kernel fills in the IP checksum and identification.
fn syn(from: SocketAddrV4, to: SocketAddrV4, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = IPPROTO_TCP;
    p[12..16].copy_from_slice(&from.ip().octets());
    p[16..20].copy_from_slice(&to.ip().octets());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let check = crate::checksum::l4(*from.ip(), *to.ip(), IPPROTO_TCP, tcp);
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    p
}
