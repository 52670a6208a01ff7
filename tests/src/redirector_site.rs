//! The redirector's test site: client, old and new host on a switch (and a
//! far host behind the old host's second interface when a test needs one),
//! the daemon on the old host, and the client-side tools the tests measure
//! with. Shared by the redirector's end-to-end test files.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::bins;
use crate::bpffs::Bpffs;
use crate::netns::{Netns, run};
use crate::nginx::Nginx;
use crate::process::wait_until;
use crate::redirector::Redirector;
use crate::topology::{OLD_IP, Topology};

/// The mission's redirect, www: OLD_IP:80 -> NEW_IP:80, with the default
/// NAT settings.
pub const RULE_WWW: &str = r#"
[[rule]]
name = "www"
from = "198.18.0.2:80"
to = "198.18.0.3:80"
"#;

/// The rate of `Site::slow_download`.
pub const SLOW_RATE: &str = "2M";
/// The old host's address on its second network, and the host behind it.
pub const OLD_FAR_IP: &str = "198.18.1.1";
pub const FAR_IP: &str = "198.18.1.3";

/// The mission's site: client, old and new host on a switch, the
/// redirector on the old host's eth0 with a workspace the test rewrites.
/// Fields drop in order: the daemon first, the namespaces last.
pub struct Site {
    pub redirector: Redirector,
    /// The interfaces the redirector runs on.
    pub ifaces: Vec<&'static str>,
    /// How many daemons were started (each logs in a directory of its own).
    starts: u32,
    pub bpffs: Bpffs,
    pub workspace: PathBuf,
    pub scratch: tempfile::TempDir,
    /// A host reached through the old host's eth1, when the test needs one.
    pub far: Option<Netns>,
    pub net: Topology,
}

impl Site {
    pub fn start(rules: &str) -> Result<Self> {
        Self::build(Topology::new()?, rules, false, &[])
    }

    /// With extra `redirector run` arguments.
    pub fn start_with_args(rules: &str, args: &[&str]) -> Result<Self> {
        Self::build(Topology::new()?, rules, false, args)
    }

    /// With the program in the veth driver (native XDP) rather than in
    /// generic mode, which `--xdp-mode auto` picks for veth.
    pub fn start_native(rules: &str) -> Result<Self> {
        Self::build(
            Topology::for_native_xdp()?,
            rules,
            false,
            &["--xdp-mode", "native"],
        )
    }

    /// With a second network behind the old host's eth1 (198.18.1.0/24)
    /// holding the `far` host, and the redirector on eth0 and eth1.
    pub fn start_with_far_host(rules: &str) -> Result<Self> {
        Self::build(Topology::new()?, rules, true, &[])
    }

    /// Like `start_with_far_host`, with offloads on at the client, the new
    /// host and the far host (`Topology::with_offloads`).
    pub fn start_with_offloads(rules: &str) -> Result<Self> {
        Self::build(Topology::with_offloads()?, rules, true, &[])
    }

    pub fn build(net: Topology, rules: &str, with_far_host: bool, args: &[&str]) -> Result<Self> {
        let far = if with_far_host {
            Some(far_host_behind(&net)?)
        } else {
            None
        };
        let ifaces = if with_far_host {
            vec!["eth0", "eth1"]
        } else {
            vec!["eth0"]
        };
        let scratch = tempfile::Builder::new().prefix("cutover-e2e").tempdir()?;
        let bpffs = Bpffs::mount(&scratch.path().join("bpf"))?;
        let workspace = scratch.path().join("ws");
        std::fs::create_dir_all(&workspace)?;
        std::fs::write(workspace.join("redirector.toml"), rules)?;
        let redirector = Redirector::start(
            &net.old,
            &ifaces,
            &workspace,
            &bpffs.pins(),
            scratch.path(),
            args,
        )?;
        Ok(Self {
            redirector,
            ifaces,
            starts: 1,
            bpffs,
            workspace,
            scratch,
            far,
            net,
        })
    }

    /// Starts another daemon with the same interfaces, workspace and pins
    /// (the previous one must have exited), logging in a directory of its
    /// own so that its log holds only its own lines.
    pub fn start_again(&mut self, args: &[&str]) -> Result<()> {
        self.starts += 1;
        let log_dir = self.scratch.path().join(format!("run-{}", self.starts));
        std::fs::create_dir_all(&log_dir)?;
        self.redirector = Redirector::start(
            &self.net.old,
            &self.ifaces,
            &self.workspace,
            &self.bpffs.pins(),
            &log_dir,
            args,
        )?;
        Ok(())
    }

    /// The id of the XDP program attached to the old host's eth0, if any
    /// (`ip -d link`: `prog/xdp id N`).
    pub fn xdp_prog_id(&self) -> Result<Option<u32>> {
        let out = self.net.old.ip(&["-d", "link", "show", "eth0"])?;
        let text = String::from_utf8(out.stdout)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(words
            .windows(3)
            .find(|w| w[0] == "prog/xdp" && w[1] == "id")
            .and_then(|w| w[2].parse().ok()))
    }

    /// `redirector detach --pin-dir` for this site's pins, run outside the
    /// namespace as an operator would; its output, or its error.
    pub fn detach(&self) -> Result<String> {
        let pins = self.bpffs.pins();
        let out = run(
            path_str(&bins::path("redirector"))?,
            &["detach", "--pin-dir", path_str(&pins)?],
        )?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// GET http://OLD_IP{path} from the client.
    pub fn get(&self, path: &str) -> Result<String> {
        curl(&self.net.client, &format!("http://{OLD_IP}{path}"))
    }

    /// GET http://OLD_IP:{port}{path} from the client.
    pub fn get_port(&self, port: u16, path: &str) -> Result<String> {
        curl(&self.net.client, &format!("http://{OLD_IP}:{port}{path}"))
    }

    /// Rewrites redirector.toml and sends SIGHUP.
    pub fn reload(&self, rules: &str) -> Result<()> {
        std::fs::write(self.workspace.join("redirector.toml"), rules)?;
        self.redirector.signal(1)
    }

    /// Waits until http://OLD_IP/ answers with `body` (a reload is applied
    /// asynchronously).
    pub fn wait_for_body(&self, body: &str) -> Result<()> {
        let seen = wait_until(Duration::from_secs(15), || {
            self.get("/").is_ok_and(|b| b == body)
        });
        ensure!(
            seen,
            "http://{OLD_IP}/ never answered {body:?}; last answer {:?}; log:\n{}",
            self.get("/"),
            self.redirector.log()
        );
        Ok(())
    }

    /// A rate-limited GET of http://OLD_IP/{file}, once its first bytes
    /// arrived.
    pub fn slow_download(&self, file: &str) -> Result<SlowDownload> {
        let to = self.scratch.path().join(format!("slow-{file}"));
        let slow = SlowDownload::start(&self.net.client, &format!("http://{OLD_IP}/{file}"), &to)?;
        ensure!(
            wait_until(Duration::from_secs(20), || file_len(&to) > 0),
            "the slow download of {file} never started"
        );
        Ok(slow)
    }

    /// Downloads http://OLD_IP/{file} and checks that it is `web`'s copy,
    /// byte for byte.
    pub fn download_intact(&self, file: &str, web: &Nginx) -> Result<()> {
        self.download_intact_from(&format!("http://{OLD_IP}"), file, web)
    }

    /// Downloads `{base}/{file}` (e.g. `http://[2001:2::2]:81`) and checks
    /// that it is `web`'s copy, byte for byte.
    pub fn download_intact_from(&self, base: &str, file: &str, web: &Nginx) -> Result<()> {
        let copy = self.scratch.path().join(format!(
            "{}-{file}",
            base.replace(['/', ':', '[', ']'], "_")
        ));
        self.net.client.exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "120",
                "-o",
                path_str(&copy)?,
                &format!("{base}/{file}"),
            ],
        )?;
        ensure!(
            sha256(&copy)? == sha256(&web.file(file))?,
            "{file} arrived through the redirector ({base}) corrupted"
        );
        Ok(())
    }

    /// Requests `url` from the client while the new host is dead (the
    /// caller took it down) and checks that the client is told at once, by
    /// the ICMP error the old host's own stack sends and the program on
    /// loopback translates, not after its own timeout; and that `rule`
    /// counted it.
    pub fn assert_told_unreachable(&self, url: &str, rule: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let out = self
            .net
            .client
            .command("curl")
            .args(["-sS", "-v", "--connect-timeout", "40", url])
            .output()?;
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "a dead host answered: {stderr}");
        ensure!(
            stderr.contains("No route to host") && took < Duration::from_secs(20),
            "after {took:?}, not told the host is unreachable: {stderr}\nlog:\n{}",
            self.redirector.log()
        );
        let translated = json_number(&self.stats_json()?, rule, "icmp_translated")?;
        ensure!(translated >= 1, "icmp_translated is {translated}");
        Ok(())
    }

    /// How `ip link` says XDP is attached to the old host's eth0: `xdp`
    /// (native) or `xdpgeneric`.
    pub fn xdp_mode(&self) -> Result<String> {
        let out = self.net.old.ip(&["-d", "link", "show", "eth0"])?;
        let text = String::from_utf8(out.stdout)?;
        text.split_whitespace()
            .find(|w| w.starts_with("xdp"))
            .map(str::to_string)
            .with_context(|| format!("no XDP on eth0: {text}"))
    }

    /// `redirector stats --json`, run as a separate process outside the
    /// namespace: it needs only the pins.
    pub fn stats_json(&self) -> Result<String> {
        self.stats(&["--json"])
    }

    pub fn stats(&self, extra: &[&str]) -> Result<String> {
        let pins = self.bpffs.pins();
        let mut args = vec!["stats", "--interval", "0.2", "--pin-dir", path_str(&pins)?];
        args.extend_from_slice(extra);
        let out = run(path_str(&bins::path("redirector"))?, &args)?;
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// A rate-limited curl in the client namespace, killed on drop.
pub struct SlowDownload {
    pub child: Child,
    /// Where the body goes.
    pub to: PathBuf,
}

impl SlowDownload {
    pub fn start(client: &Netns, url: &str, to: &Path) -> Result<Self> {
        // curl's rate limit paces its reads, not the connection: with the
        // default receive buffer (up to 6 MiB) the server sends the last
        // byte, and the connection closes, long before curl is done.
        client.sysctl("net.ipv4.tcp_rmem=4096 131072 262144")?;
        let child = client
            .command("curl")
            .args(["-sS", "--fail", "--limit-rate", SLOW_RATE, "-o"])
            .arg(to)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the slow download")?;
        Ok(Self {
            child,
            to: to.to_path_buf(),
        })
    }

    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    pub fn finish(&mut self, timeout: Duration) -> Result<()> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("the slow download failed ({s}): {err}")
            }
            None => bail!("the slow download did not finish within {timeout:?}"),
        }
    }
}

impl Drop for SlowDownload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host on a network of its own behind the old host's eth1: far eth0
/// 198.18.1.3/24 <-> old eth1 198.18.1.1/24, routed through the old host;
/// with the topology's offloads.
/// Its eth0 runs GRO, which gives the veth the NAPI context that frames
/// redirected into it by XDP need.
pub fn far_host_behind(net: &Topology) -> Result<Netns> {
    let far = Netns::new("cofar")?;
    let tmp = crate::netns::unique_name("v");
    net.old
        .ip(&["link", "add", "eth1", "type", "veth", "peer", "name", &tmp])?;
    net.old.ip(&["link", "set", &tmp, "netns", &far.name])?;
    far.ip(&["link", "set", &tmp, "name", "eth0"])?;
    net.old
        .ip(&["addr", "add", &format!("{OLD_FAR_IP}/24"), "dev", "eth1"])?;
    far.ip(&["addr", "add", &format!("{FAR_IP}/24"), "dev", "eth0"])?;
    net.old.ip(&["link", "set", "eth1", "up"])?;
    far.ip(&["link", "set", "eth0", "up"])?;
    far.ip(&["route", "add", "default", "via", OLD_FAR_IP])?;
    net.old.exec("ethtool", &["-K", "eth1", "tx", "off"])?;
    if net.offloads {
        far.exec("ethtool", &["-K", "eth0", "gro", "on"])?;
    } else {
        far.exec("ethtool", &["-K", "eth0", "tx", "off", "gro", "on"])?;
    }
    Ok(far)
}

/// GET `url` from the client; the body, or an error on any failure.
pub fn curl(client: &Netns, url: &str) -> Result<String> {
    let out = client.exec("curl", &["-sS", "--fail", "--max-time", "5", url])?;
    Ok(String::from_utf8(out.stdout)?)
}

pub fn sha256(path: &Path) -> Result<String> {
    let out = run("sha256sum", &[path_str(path)?])?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// The number `"field": N` inside the rule object named `rule` of
/// `redirector stats --json` (pretty-printed, one field per line). The tests
/// crate has no JSON parser; the format is ours and stable.
pub fn json_number(json: &str, rule: &str, field: &str) -> Result<u64> {
    json_field(json, rule, field)?
        .parse()
        .with_context(|| format!("{field} of {rule} is not a number in {json}"))
}

/// The flat object `"field": { ... }` inside the rule object named `rule`
/// (the pass, drop and event counters), braces included.
pub fn json_map(json: &str, rule: &str, field: &str) -> Result<String> {
    let start = json
        .find(&format!("\"name\": \"{rule}\""))
        .with_context(|| format!("no rule {rule} in {json}"))?;
    let key = format!("\"{field}\": {{");
    let at = json[start..]
        .find(&key)
        .with_context(|| format!("no {field} for {rule} in {json}"))?
        + start
        + key.len()
        - 1;
    let end = json[at..]
        .find('}')
        .with_context(|| format!("{field} of {rule} is not closed in {json}"))?;
    Ok(json[at..=at + end].to_string())
}

/// The scalar `"field": VALUE` inside the rule object named `rule`.
pub fn json_field(json: &str, rule: &str, field: &str) -> Result<String> {
    let start = json
        .find(&format!("\"name\": \"{rule}\""))
        .with_context(|| format!("no rule {rule} in {json}"))?;
    let key = format!("\"{field}\": ");
    let at = json[start..]
        .find(&key)
        .with_context(|| format!("no {field} for {rule} in {json}"))?
        + start
        + key.len();
    Ok(json[at..]
        .chars()
        .take_while(|c| !matches!(c, ',' | '\n' | '}'))
        .collect())
}
