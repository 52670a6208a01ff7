//! nginx as a web backend inside a test namespace: one worker, its own
//! config, pid and logs in a temp dir, a body that names the host, and a
//! large file for download checks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::process::{Daemon, wait_until};

/// The rate nginx sends the files under `/paced/` at, per connection:
/// the bytes of a long download keep crossing the network until its end
/// (a rate limit at the client only stops it reading, and its socket
/// buffer takes in megabytes at once).
pub const PACED_RATE: &str = "256k";
/// [`PACED_RATE`] in bytes per second.
pub const PACED_BYTES_PER_S: usize = 256 * 1024;

/// A running nginx; stops with the guard.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    _daemon: Daemon,
}

impl Nginx {
    /// Serves `body` at `/` and the files in `files` (name, size in bytes,
    /// pseudo-random content) on every `port` of IPv4 and IPv6, inside `ns`;
    /// each file also
    /// as `/paced/NAME`, sent at [`PACED_RATE`].
    pub fn start(ns: &Netns, ports: &[u16], body: &str, files: &[(&str, usize)]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("cutover-nginx").tempdir()?;
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), body)?;
        for (name, size) in files {
            write_random_file(&root.join(name), *size)?;
        }
        let listen: String = ports
            .iter()
            .map(|p| {
                // Both families: IPv6 redirects lead here too.
                format!(
                    "    listen {p} reuseport backlog=4096;\n    \
                     listen [::]:{p} reuseport backlog=4096;\n"
                )
            })
            .collect();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             keepalive_requests 1000000;\n  sendfile on;\n  default_type text/plain;\n\
             server {{\n{listen}    root {root};\n\
             location /paced/ {{ alias {root}/; limit_rate {PACED_RATE}; }}\n  }}\n}}\n",
            d = dir.path().display(),
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = ns.command("nginx");
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"));
        let daemon = Daemon::spawn(&format!("nginx in {}", ns.name), cmd)?;
        let pid_file = dir.path().join("nginx.pid");
        if !wait_until(Duration::from_secs(10), || pid_file.exists()) {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            bail!("nginx in {} did not start: {log}", ns.name);
        }
        Ok(Self {
            dir,
            _daemon: daemon,
        })
    }

    /// Path of a served file, to compare downloads with.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("www").join(name)
    }
}

/// Deterministic pseudo-random content (xorshift), so that a corrupted or
/// reordered byte changes the checksum.
fn write_random_file(path: &Path, size: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut written = 0;
    while written < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let n = (size - written).min(8);
        f.write_all(&bytes[..n])?;
        written += n;
    }
    f.flush()?;
    Ok(())
}
