//! A UDP echo service in a namespace, and a one-shot client: UDP traffic
//! whose answer says which host gave it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// Answers every datagram with `tag` followed by the datagram, until
/// dropped; counts them.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(ns: &Netns, at: SocketAddr, tag: &'static [u8]) -> Result<Self> {
        let socket = ns.run_in(|| UdpSocket::bind(at).with_context(|| format!("binding {at}")))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    n.fetch_add(1, Ordering::Relaxed);
                    let answer = [tag, &buf[..len]].concat();
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        Ok(Self {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// Datagrams answered so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A socket in `ns` on a kernel-chosen port, connected to `to` (so that
/// ICMP errors about its datagrams surface as `ConnectionRefused`), with a
/// 2 s read timeout.
pub fn connected(ns: &Netns, to: SocketAddr) -> Result<UdpSocket> {
    let socket = ns.run_in(|| {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        s.connect(to)?;
        Ok(s)
    })?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(socket)
}

/// Sends `payload` to `to` from a new socket in `ns` (a new flow) and
/// returns the answer.
pub fn ask(ns: &Netns, to: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
    let socket = connected(ns, to)?;
    socket.send(payload)?;
    let mut buf = vec![0u8; 65536];
    let len = socket
        .recv(&mut buf)
        .with_context(|| format!("no answer from {to}"))?;
    buf.truncate(len);
    Ok(buf)
}
