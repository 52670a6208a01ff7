//! unbound as the client's caching resolver: it asks dnsd for the test zone
//! and caches every answer for its TTL, like the resolvers that keep a
//! moved service's old address.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::netns::Netns;
use crate::process::{Daemon, wait_until};

/// A running unbound; stops with the guard.
pub struct Unbound {
    pub listen: SocketAddr,
    pub dir: tempfile::TempDir,
    _daemon: Daemon,
}

impl Unbound {
    /// Starts unbound in `ns` on `listen`, sending queries for `zone` to the
    /// authoritative server `upstream`.
    pub fn start(ns: &Netns, listen: SocketAddr, zone: &str, upstream: SocketAddr) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cutover-unbound")
            .tempdir()?;
        let conf = format!(
            "server:\n  interface: {ip}@{port}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  \
             chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  \
             logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  do-ip6: no\n  access-control: 0.0.0.0/0 allow\n  \
             do-not-query-localhost: no\n  num-threads: 1\n  prefetch: no\n  serve-expired: no\n  \
             cache-min-ttl: 0\n  harden-referral-path: no\n  qname-minimisation: no\n  \
             module-config: \"iterator\"\n  domain-insecure: \"{zone}\"\n  \
             local-zone: \"test.\" nodefault\n\
             stub-zone:\n  name: \"{zone}\"\n  stub-addr: {uip}@{uport}\n  stub-first: no\n\
             remote-control:\n  control-enable: no\n",
            ip = listen.ip(),
            port = listen.port(),
            d = dir.path().display(),
            uip = upstream.ip(),
            uport = upstream.port(),
        );
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = ns.command("unbound");
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let daemon = Daemon::spawn(&format!("unbound in {}", ns.name), cmd)?;
        let pid_file = dir.path().join("unbound.pid");
        if !wait_until(Duration::from_secs(10), || pid_file.exists()) {
            let log = std::fs::read_to_string(dir.path().join("unbound.log")).unwrap_or_default();
            bail!("unbound in {} did not start: {log}", ns.name);
        }
        Ok(Self {
            listen,
            dir,
            _daemon: daemon,
        })
    }
}
