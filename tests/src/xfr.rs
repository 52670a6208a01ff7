//! Zone transfers and answers as `kdig` sees them, for the tests of
//! dnsd's secondaries and replicas: the records of an AXFR or IXFR
//! (normalized, TSIG records left out) and the addresses of a name.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use anyhow::{Context, Result};

/// The TSIG key name the transfer tests sign with (hmac-sha256).
pub const KEY_NAME: &str = "xfr-key.";

/// What an AXFR from `server` gives, asked from `from` and signed with
/// `key` (hmac-sha256 `xfr-key.`): its records, normalized and sorted (the
/// TSIG records left out), or the error kdig reports.
pub fn axfr(
    server: SocketAddr,
    from: IpAddr,
    key: Option<&str>,
) -> Result<Result<Vec<String>, String>> {
    transfer(server, from, key, "AXFR", true)
}

/// The records of a transfer of type `kind` (`AXFR`, `IXFR=serial`),
/// normalized (the TSIG records left out): sorted and each once if `set`,
/// else as sent; or the error kdig reports.
pub fn transfer(
    server: SocketAddr,
    from: IpAddr,
    key: Option<&str>,
    kind: &str,
    set: bool,
) -> Result<Result<Vec<String>, String>> {
    let mut cmd = Command::new("kdig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "-b", &from.to_string()])
        .args(["+timeout=5", "+retry=0", kind, "example.test."]);
    if let Some(secret) = key {
        cmd.args(["-y", &format!("hmac-sha256:{KEY_NAME}:{secret}")]);
    }
    let out = cmd.output().context("running kdig")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(error) = text
        .lines()
        .find(|l| l.contains(";; ERROR") || l.contains(";; WARNING"))
    {
        return Ok(Err(error.to_string()));
    }
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let owner = fields.next().unwrap_or_default().to_ascii_lowercase();
            let rest: Vec<&str> = fields.collect();
            format!("{owner} {}", rest.join(" "))
        })
        .filter(|l| !l.contains(" TSIG "))
        .collect();
    if set {
        records.sort();
        // The SOA opens and closes a transfer: once is enough to compare.
        records.dedup();
    }
    Ok(Ok(records))
}

/// The answer `server` gives for `name` A, sorted.
pub fn addresses(server: SocketAddr, name: &str) -> Result<Vec<String>> {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+short",
            "+timeout=1",
            name,
            "A",
        ])
        .output()
        .context("running kdig")?;
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    Ok(got)
}

/// A call to dnsd's control API at `api` with the token of `workspace`:
/// the HTTP status and the body.
pub fn api_call(
    api: SocketAddr,
    workspace: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let token = std::fs::read_to_string(workspace.join(".cutover/api-token"))
        .context("reading the API token")?;
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()));
    if let Some(body) = body {
        cmd.args(["-d", body]);
    }
    let out = cmd
        .arg(format!("http://{api}{path}"))
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// `GET /v1/zones` of the dnsd whose API is at `api`.
pub fn zones(
    api: SocketAddr,
    workspace: &std::path::Path,
) -> Result<Vec<cutover_control_api::contract::ZoneInfo>> {
    let (status, body) = api_call(api, workspace, "GET", "/v1/zones", None)?;
    anyhow::ensure!(status == 200, "GET /v1/zones: {status} {body}");
    serde_json::from_str(&body).context("GET /v1/zones")
}
