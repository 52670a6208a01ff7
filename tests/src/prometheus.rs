//! A real Prometheus server (Debian's `prometheus`) that scrapes the
//! daemons every second, for the metrics tests; and `promtool check
//! metrics`, the format's own checker.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::process::{Daemon, wait_until};

/// One scrape job: its name, its targets, and a file holding the bearer
/// token to send, if any.
pub struct Job<'a> {
    pub name: &'a str,
    pub targets: &'a [String],
    pub token_file: Option<&'a Path>,
}

/// Prometheus in a namespace, its web API on loopback; killed on drop.
pub struct Prometheus {
    _daemon: Daemon,
    ns_name: String,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus in `ns` scraping `jobs` every second, with its data
    /// and log under `dir`; returns once it is ready.
    pub fn start(ns: &Netns, jobs: &[Job<'_>], dir: &Path) -> Result<Self> {
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        for job in jobs {
            config.push_str(&format!("  - job_name: {}\n", job.name));
            if let Some(file) = job.token_file {
                config.push_str(&format!(
                    "    authorization:\n      credentials_file: {}\n",
                    file.display()
                ));
            }
            config.push_str("    static_configs:\n      - targets: [");
            let quoted: Vec<String> = job.targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&quoted.join(", "));
            config.push_str("]\n");
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = 9090;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let mut cmd = ns.command("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log);
        let daemon = Daemon::spawn("prometheus", cmd)?;
        let me = Self {
            _daemon: daemon,
            ns_name: ns.name.clone(),
            port,
        };
        if !wait_until(Duration::from_secs(30), || {
            me.get("/-/ready").is_ok_and(|b| b.contains("Ready"))
        }) {
            bail!(
                "prometheus is not ready within 30 s; log:\n{}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        Ok(me)
    }

    fn get(&self, path_and_query: &str) -> Result<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "curl",
                "-sS",
                "--max-time",
                "5",
            ])
            .arg(format!("http://127.0.0.1:{}{path_and_query}", self.port))
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {path_and_query}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The values of an instant PromQL query, one per series.
    pub fn query(&self, promql: &str) -> Result<Vec<f64>> {
        let mut encoded = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        let body = self.get(&format!("/api/v1/query?query={encoded}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        if json["status"] != "success" {
            bail!("query {promql}: {body}");
        }
        json["data"]["result"]
            .as_array()
            .with_context(|| format!("no result: {body}"))?
            .iter()
            .map(|series| {
                series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("no value in {series}"))
            })
            .collect()
    }
}

/// `promtool check metrics` on `text`: its findings, or an error when it
/// rejects the text.
pub fn promtool_check(text: &str) -> Result<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian package prometheus)")?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool check metrics rejects the metrics: {said}");
    }
    Ok(said)
}

/// The value of the sample of `name` whose labels include every one of
/// `labels` (`key="value"`), from a text exposition.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse().ok())
                .flatten()
        })
        .next()
}
