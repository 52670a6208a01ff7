//! One health check of one address: a TCP connection, or an HTTP GET whose
//! status must be in the expected range; bounded by the check's timeout.

use std::net::{IpAddr, SocketAddr};

use cutover_workspace::{CheckKind, HealthCheck};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The most of an HTTP answer read to find its status line.
const STATUS_LINE_MAX: usize = 1024;

/// Checks `address` once; `Err` says why it failed.
pub async fn run(address: IpAddr, check: &HealthCheck) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, attempt(address, check)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn attempt(address: IpAddr, check: &HealthCheck) -> Result<(), String> {
    let to = SocketAddr::new(address, check.port);
    let mut stream = TcpStream::connect(to)
        .await
        .map_err(|e| format!("connecting to {to}: {e}"))?;
    let CheckKind::Http { path, expect } = &check.kind else {
        return Ok(());
    };
    let host = match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dnsd-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request to {to}: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < STATUS_LINE_MAX {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer of {to}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status = status(&head).ok_or_else(|| format!("{to} did not answer HTTP"))?;
    if (expect.0..=expect.1).contains(&status) {
        Ok(())
    } else {
        Err(format!("{to}{path} answered {status}"))
    }
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_gives_the_code() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status(b"HTTP/1.0 503 Service Unavailable\r\nX: y"),
            Some(503)
        );
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 20 OK\r\n"), None);
    }
}
