//! `iperf3 -s` in a test host's namespace, on port 5201: the far end of
//! bulk transfers in the redirector's tests and benchmark.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::netns::Netns;
use crate::process::{Daemon, wait_until};

/// The port the server listens on.
pub const PORT: u16 = 5201;

/// A running `iperf3 -s`, killed on drop.
pub struct Iperf3Server {
    _daemon: Daemon,
}

impl Iperf3Server {
    /// Starts the server in `host`; returns once it listens.
    pub fn start(host: &Netns) -> Result<Self> {
        let mut cmd = host.command("iperf3");
        cmd.args(["-s", "-p", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let daemon = Daemon::spawn("iperf3", cmd)?;
        let filter = format!("sport = :{PORT}");
        let listening = wait_until(Duration::from_secs(5), || {
            host.exec("ss", &["-Hltn", &filter])
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        ensure!(listening, "iperf3 did not start in {}", host.name);
        Ok(Self { _daemon: daemon })
    }
}

/// Sends `bytes` (iperf3's notation) from `client` to the iperf3 server
/// at `host` (IPv4 or IPv6) and `port`, through whatever redirect is
/// there; fails unless all of it arrives within 60 s.
pub fn upload(client: &Netns, host: &str, port: u16, bytes: &str) -> Result<()> {
    let port = port.to_string();
    let family = if host.contains(':') { "-6" } else { "-4" };
    client
        .exec(
            "timeout",
            &["60", "iperf3", family, "-c", host, "-p", &port, "-n", bytes],
        )
        .with_context(|| format!("uploading {bytes} to {host} port {port}"))?;
    Ok(())
}
