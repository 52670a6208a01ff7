//! dnsd with its control API switched on: starts it on a loopback DNS port
//! and a loopback API port, and talks to the API with curl, the client an
//! operator would use, and to the DNS side with kdig.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::dns_peers::free_port;
use crate::dnsd::{DnsdWorkspace, spawn_wrapped};
use crate::process::Daemon;

/// A running dnsd with its API, stopped on drop.
pub struct ApiDnsd {
    pub dns: SocketAddr,
    pub api: SocketAddr,
    daemon: Option<Daemon>,
    log: PathBuf,
    workspace: PathBuf,
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body as one of the API contract's types (crate
    /// `cutover-control-api`), read as strictly as `cutover` reads it.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("the body is not the contract's type: {}", self.body))
    }
}

impl ApiDnsd {
    /// Starts dnsd serving `ws` on `ip`, with the API on another free port of
    /// `ip`; `extra` are further dnsd arguments (`--api-token-file ...`).
    pub fn start(ws: &DnsdWorkspace, ip: IpAddr, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(ws, ip, extra, &[])
    }

    /// `start` with the environment `env` added (`CUTOVER_FAULT`).
    pub fn start_with_env(
        ws: &DnsdWorkspace,
        ip: IpAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_wrapped(&[], ws, ip, extra, env)
    }

    /// `start` with dnsd run by `wrapper` (`prlimit --nofile=1024:1024 --`).
    pub fn start_wrapped(
        wrapper: &[&str],
        ws: &DnsdWorkspace,
        ip: IpAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dns = SocketAddr::new(ip, free_port(ip)?);
        let mut api = SocketAddr::new(ip, free_port(ip)?);
        while api.port() == dns.port() {
            api = SocketAddr::new(ip, free_port(ip)?);
        }
        let log = ws.path().with_extension("api.log");
        let api_text = api.to_string();
        let mut args = vec!["--api", api_text.as_str()];
        args.extend_from_slice(extra);
        let daemon = spawn_wrapped(wrapper, ws, dns, &args, env, api, &log)?;
        Ok(Self {
            dns,
            api,
            daemon: Some(daemon),
            log,
            workspace: ws.path().to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }

    /// Sends SIGHUP.
    pub fn reload(&self) -> Result<()> {
        match &self.daemon {
            Some(d) => d.signal(1),
            None => bail!("dnsd is not running"),
        }
    }

    /// The token dnsd created in the workspace at start.
    pub fn default_token(&self) -> Result<String> {
        let path = self.workspace.join(".cutover/api-token");
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// `curl -X method` on the API; `token` None sends no Authorization.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<Response> {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{}{path}", self.api));
        if let Some(token) = token {
            cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
        }
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = cmd.output().context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {method} {path} failed: {}; log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text
            .rsplit_once('\n')
            .with_context(|| format!("curl printed no status: {text:?}"))?;
        Ok(Response {
            status: status.trim().parse().context("curl's status code")?,
            body: body.to_string(),
        })
    }

    /// The addresses kdig gets for `name` of `qtype`, sorted.
    pub fn kdig(&self, name: &str, qtype: &str) -> Result<Vec<String>> {
        crate::dnsd::kdig_short(self.dns, name, qtype)
    }

    /// SIGTERM, then waits for the exit; true if dnsd exited successfully.
    pub fn stop(&mut self) -> Result<bool> {
        match self.daemon.take() {
            Some(d) => d.stop(Duration::from_secs(10)),
            None => Ok(false),
        }
    }

    /// Whether dnsd has exited (a fault it was given killed it).
    pub fn exited(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_none_or(|d| d.assert_running().is_err())
    }

    /// `kill -9`, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn workspace(&self) -> &Path {
        &self.workspace
    }
}

impl Drop for ApiDnsd {
    fn drop(&mut self) {
        self.daemon.take();
        let _ = fs::remove_file(&self.log);
    }
}
