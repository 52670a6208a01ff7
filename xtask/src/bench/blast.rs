//! A packet generator that costs little per packet: prebuilt Ethernet
//! frames of many flows, sent in batches of 64 with `sendmmsg` on an
//! AF_PACKET socket that bypasses the qdisc, from one thread pinned to one
//! CPU. trafgen (netsniff-ng) is the usual tool, but its TX ring fails on
//! veth with EAGAIN unless it goes through the qdisc, and then sends a few
//! thousand packets per second.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cutover_tests::checksum;
use cutover_tests::netns::Netns;

const BATCH: usize = 64;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const PACKET_QDISC_BYPASS: libc::c_int = 20;

/// What one blast did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub packets: u64,
    pub seconds: f64,
}

/// Sends each of `frames` once out of `iface` in `ns`, eight per
/// millisecond, so that no queue on the way (or the receiver) overflows.
pub fn each_once(ns: &Netns, iface: &str, frames: &[Vec<u8>]) -> Result<Sent> {
    ns.run_in(|| {
        let socket = PacketSocket::open(iface)?;
        let started = Instant::now();
        let mut packets = 0;
        for chunk in frames.chunks(8) {
            let mut done = 0;
            while done < chunk.len() {
                let batch: Vec<&[u8]> = chunk[done..].iter().map(Vec::as_slice).collect();
                done += socket.send_batch(&batch)?;
            }
            packets += chunk.len() as u64;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Sent {
            packets,
            seconds: started.elapsed().as_secs_f64(),
        })
    })
}

/// Sends `frames` over and over out of `iface` in `ns` for `duration`,
/// from a thread pinned to `cpu`.
pub fn blast(
    ns: &Netns,
    iface: &str,
    frames: &[Vec<u8>],
    duration: Duration,
    cpu: usize,
) -> Result<Sent> {
    if frames.is_empty() {
        bail!("no frames to send");
    }
    ns.run_in(|| {
        cutover_tests::cpus::pin_current_thread(cpu)?;
        let socket = PacketSocket::open(iface)?;
        let started = Instant::now();
        let mut packets = 0u64;
        let mut next = 0usize;
        while started.elapsed() < duration {
            let batch: Vec<&[u8]> = (0..BATCH)
                .map(|i| frames[(next + i) % frames.len()].as_slice())
                .collect();
            let sent = socket.send_batch(&batch)?;
            next = (next + sent) % frames.len();
            packets += sent as u64;
        }
        Ok(Sent {
            packets,
            seconds: started.elapsed().as_secs_f64(),
        })
    })
}

struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    fn open(iface: &str) -> Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: plain syscalls on an fd this function owns; the structs
        // passed are zero-initialised and sized as the kernel expects.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            if ifindex == 0 {
                bail!("no interface {iface}");
            }
            // Protocol 0: this socket only sends, it receives nothing.
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let one: libc::c_int = 1;
            if libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            ) != 0
            {
                bail!("PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_IP.to_be();
            addr.sll_ifindex = ifindex as i32;
            if libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                bail!("binding to {iface}: {}", std::io::Error::last_os_error());
            }
            Ok(Self { fd })
        }
    }

    /// Sends as many of `frames` as the device takes now (at least one,
    /// waiting for room when it has none).
    fn send_batch(&self, frames: &[&[u8]]) -> Result<usize> {
        use std::os::fd::AsRawFd;
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: zeroed msghdrs each pointing at one iovec that lives
        // (with its frame) until sendmmsg returns.
        let mut msgs: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        loop {
            // SAFETY: see above; the count is the vector's length.
            let n = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0)
            };
            if n > 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => std::thread::yield_now(),
                _ => return Err(e).context("sendmmsg"),
            }
        }
    }
}

/// A UDP datagram from `from` to `to` with an 18-byte payload: a 60-byte
/// frame over IPv4 (the Ethernet minimum), 80 over IPv6.
pub fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let payload = [0x5au8; 18];
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&from.port().to_be_bytes());
    l4.extend_from_slice(&to.port().to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(&payload);
    let c = match checksum::l4(from.ip(), to.ip(), 17, &l4) {
        0 => 0xffff,
        c => c,
    };
    l4[6..8].copy_from_slice(&c.to_be_bytes());
    frame(dst_mac, src_mac, from.ip(), to.ip(), 17, &l4)
}

/// A TCP segment of an established connection from `from` to `to`: ACK
/// and PSH, sequence `seq`, acknowledging `ack`, with a 6-byte payload: a
/// 60-byte frame over IPv4, 80 over IPv6.
pub fn tcp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    const ACK_PSH: u8 = 0x18;
    let payload = [0x5au8; 6];
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&from.port().to_be_bytes());
    l4.extend_from_slice(&to.port().to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    // Data offset 5 words, a 64 KiB window, no urgent pointer.
    l4.extend_from_slice(&[0x50, ACK_PSH, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(&payload);
    let c = checksum::l4(from.ip(), to.ip(), 6, &l4);
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    frame(dst_mac, src_mac, from.ip(), to.ip(), 6, &l4)
}

/// An Ethernet frame carrying `l4` (protocol `proto`) from `src` to `dst`
/// in an IPv4 header (don't fragment, TTL 64) or an IPv6 one (hop limit
/// 64), by the addresses' family.
fn frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + l4.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            let ip_start = f.len();
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            let c = checksum::ipv4_header(&f[ip_start..ip_start + 20]);
            f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
        }
        (s, d) => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            for a in [s, d] {
                match a {
                    IpAddr::V6(v6) => f.extend_from_slice(&v6.octets()),
                    IpAddr::V4(v4) => f.extend_from_slice(&v4.to_ipv6_mapped().octets()),
                }
            }
        }
    }
    f.extend_from_slice(l4);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_frame_is_minimum_size_with_valid_checksums() {
        let f = udp_frame(
            [2; 6],
            [4; 6],
            "198.18.0.1:10000".parse().unwrap(),
            "198.18.0.2:7".parse().unwrap(),
        );
        assert_eq!(f.len(), 60);
        assert_eq!(checksum::ipv4_header(&f[14..34]), 0, "IPv4 header");
        let (s, d) = (
            std::net::Ipv4Addr::new(198, 18, 0, 1),
            std::net::Ipv4Addr::new(198, 18, 0, 2),
        );
        assert_eq!(checksum::l4(s, d, 17, &f[34..]), 0, "UDP");
    }

    #[test]
    fn tcp_frames_are_minimum_size_with_valid_checksums() {
        let f = tcp_frame(
            [2; 6],
            [4; 6],
            "198.18.0.1:10000".parse().unwrap(),
            "198.18.0.2:7".parse().unwrap(),
            0x1234_5678,
            0x9abc_def0,
        );
        assert_eq!(f.len(), 60);
        assert_eq!(f[23], 6, "protocol");
        assert_eq!(checksum::ipv4_header(&f[14..34]), 0, "IPv4 header");
        let (s, d) = (
            std::net::Ipv4Addr::new(198, 18, 0, 1),
            std::net::Ipv4Addr::new(198, 18, 0, 2),
        );
        assert_eq!(checksum::l4(s, d, 6, &f[34..]), 0, "TCP");
        assert_eq!(&f[38..42], &0x1234_5678u32.to_be_bytes(), "seq");
        let f6 = tcp_frame(
            [2; 6],
            [4; 6],
            "[2001:2::1]:10000".parse().unwrap(),
            "[2001:2::2]:7".parse().unwrap(),
            1,
            2,
        );
        assert_eq!(f6.len(), 80);
        let s: std::net::Ipv6Addr = "2001:2::1".parse().unwrap();
        let d: std::net::Ipv6Addr = "2001:2::2".parse().unwrap();
        assert_eq!(checksum::l4(s, d, 6, &f6[54..]), 0, "TCP over IPv6");
    }

    #[test]
    fn an_ipv6_udp_frame_has_a_valid_checksum_over_the_pseudo_header() {
        let f = udp_frame(
            [2; 6],
            [4; 6],
            "[2001:2::1]:10000".parse().unwrap(),
            "[2001:2::2]:7".parse().unwrap(),
        );
        assert_eq!(f.len(), 80);
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), ETH_P_IPV6);
        let s: std::net::Ipv6Addr = "2001:2::1".parse().unwrap();
        let d: std::net::Ipv6Addr = "2001:2::2".parse().unwrap();
        assert_eq!(checksum::l4(s, d, 17, &f[54..]), 0, "UDP");
    }
}
