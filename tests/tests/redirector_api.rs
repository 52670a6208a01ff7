//! The redirector's control API, driven as `cutover` drives an old host that
//! runs no dnsd: an operator switches a redirect on and off over HTTP, every
//! change lands in the workspace as a generation, and a bad request changes
//! nothing. Real nginx on both hosts, real curl from the client.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::bpffs::Bpffs;
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::wait_until;
use cutover_tests::redirector::Redirector;
use cutover_tests::topology::{OLD_IP, Topology};

const NEW_BODY: &str = "served by the new host\n";
const OLD_BODY: &str = "served by the old host\n";
const API: &str = "http://127.0.0.1:8054";
/// Kept open during the stats check, so that the rule has a client to count.
const SLOW: usize = 8 * 1024 * 1024;

/// The workspace before the API touches it: no rule, but settings the API
/// must keep when it rewrites the file.
const START: &str = "[timeouts]\nsyn = 30\nestablished = 600\nclosing = 10\n";
const WWW: &str = r#"{"from": "198.18.0.2:80", "to": "198.18.0.3:80"}"#;

#[test]
fn an_operator_switches_a_redirect_on_and_off_through_the_api() -> Result<()> {
    let site = Site::start()?;
    let _new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("slow.bin", SLOW)])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    assert_eq!(site.get()?, OLD_BODY, "before any rule");

    // Without the token, or with a wrong one, nothing is answered.
    let (status, body) = site.api_as(None, "GET", "/v1/rules", None)?;
    assert_eq!(status, 401, "no token: {body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = site.api_as(Some("0123456789abcdef"), "GET", "/v1/rules", None)?;
    assert_eq!(status, 401, "wrong token");
    let (status, _) = site.api_as(None, "PUT", "/v1/rules/www", Some(WWW))?;
    assert_eq!(status, 401, "no token on a change");
    assert_eq!(
        site.get()?,
        OLD_BODY,
        "an unauthorised change changed something"
    );

    let (status, body) = site.api("GET", "/v1/version", None)?;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"name\":\"redirector\"") && body.contains("\"iface\":\"eth0\""),
        "{body}"
    );

    // The probe connects from the address asked for (the rule's OLD
    // address, which forwarded connections come from), and says when it
    // cannot.
    let probe = |body: &str| -> Result<(u16, String)> { site.api("POST", "/v1/probe", Some(body)) };
    let (status, body) = probe(r#"{"to":"198.18.0.3:80","from":"198.18.0.2"}"#)?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"connected\":true"),
        "from the old address: {body}"
    );
    let (status, body) = probe(r#"{"to":"198.18.0.3:80","from":"198.18.0.250"}"#)?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"connected\":false") && body.contains("cannot connect from 198.18.0.250"),
        "from an address the host does not have: {body}"
    );
    let (status, body) = probe(r#"{"to":"198.18.0.3:80","from":"not an address"}"#)?;
    assert_eq!(status, 400, "{body}");

    // Switching the redirect on: the client that still has the old address
    // reaches the new host.
    let (status, body) = site.api("PUT", "/v1/rules/www", Some(WWW))?;
    assert_eq!(status, 200, "{body}");
    let on = json_number(&body, "generation")?;
    site.wait_for_body(NEW_BODY)?;
    let (_, rules) = site.api("GET", "/v1/rules", None)?;
    assert!(
        rules.contains("\"name\":\"www\"")
            && rules.contains("\"from\":\"198.18.0.2:80\"")
            && rules.contains("\"to\":\"198.18.0.3:80\""),
        "{rules}"
    );
    // ... and the change is a workspace generation, in the live file too,
    // with the settings that were there kept.
    assert_eq!(site.current_generation()?, on);
    let file = site.redirector_toml()?;
    let parsed: toml::Table = toml::from_str(&file)?;
    let rule = &parsed["rule"].as_array().context("no [[rule]]")?[0];
    assert_eq!(rule["name"].as_str(), Some("www"), "{file}");
    assert_eq!(rule["to"].as_str(), Some("198.18.0.3:80"), "{file}");
    assert_eq!(parsed["timeouts"]["syn"].as_integer(), Some(30), "{file}");

    // A bad `from` is refused with the field named, and nothing changes.
    let (status, body) = site.api(
        "PUT",
        "/v1/rules/api",
        Some(r#"{"from": "198.18.0.2", "to": "198.18.0.3:81"}"#),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("rule[1].from") && body.contains("IP:PORT"),
        "{body}"
    );
    assert_eq!(
        site.current_generation()?,
        on,
        "a refused change made a generation"
    );
    assert_eq!(
        site.redirector_toml()?,
        file,
        "a refused change touched the file"
    );
    let (_, after) = site.api("GET", "/v1/rules", None)?;
    assert_eq!(after, rules);
    // A body that is not a rule at all is refused too.
    let (status, body) = site.api("PUT", "/v1/rules/www", Some(r#"{"from": 1}"#))?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(site.get()?, NEW_BODY);

    // A whole site in one rule: two ports, TCP and UDP. The listing says
    // what it redirects, one endpoint each, for tools.
    let (status, body) = site.api(
        "PUT",
        "/v1/rules/site",
        Some(r#"{"from": "198.18.0.2", "to": "198.18.0.3", "ports": [443, 8443], "proto": ["tcp", "udp"]}"#),
    )?;
    assert_eq!(status, 200, "{body}");
    let (_, rules) = site.api("GET", "/v1/rules", None)?;
    let listed: Vec<cutover_control_api::contract::Rule> = serde_json::from_str(&rules)?;
    let rule = listed
        .iter()
        .find(|r| r.name == "site")
        .with_context(|| format!("no rule site in {rules}"))?;
    assert_eq!(rule.from, "198.18.0.2:443,8443/tcp+udp");
    let endpoints: Vec<String> = rule
        .endpoints
        .iter()
        .map(|e| format!("{} {} -> {}", e.proto.name(), e.from, e.to))
        .collect();
    assert_eq!(
        endpoints,
        [
            "tcp 198.18.0.2:443 -> 198.18.0.3:443",
            "tcp 198.18.0.2:8443 -> 198.18.0.3:8443",
            "udp 198.18.0.2:443 -> 198.18.0.3:443",
            "udp 198.18.0.2:8443 -> 198.18.0.3:8443",
        ]
    );
    assert!(rule.listens_on("198.18.0.2:8443".parse()?));
    let file = site.redirector_toml()?;
    assert!(file.contains("ports = [443, 8443]"), "{file}");
    // A protocol the redirector does not forward is refused by name.
    let (status, body) = site.api(
        "PUT",
        "/v1/rules/sctp",
        Some(r#"{"from": "198.18.0.2:9", "to": "198.18.0.3", "proto": ["sctp"]}"#),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("proto[0]")
            && body.contains("sctp")
            && body.contains("expected `tcp` or `udp`"),
        "{body}"
    );
    let (status, body) = site.api("DELETE", "/v1/rules/site", None)?;
    assert_eq!(status, 200, "{body}");

    // The counters show the rule's traffic: new flows and the client still
    // arriving at the old address (one download held open).
    for _ in 0..3 {
        assert_eq!(site.get()?, NEW_BODY);
    }
    let _slow = SlowDownload::start(&site.net.client, &format!("http://{OLD_IP}/slow.bin"))?;
    let mut stats = String::new();
    let counted = wait_until(Duration::from_secs(15), || {
        stats = site
            .api("GET", "/v1/stats", None)
            .map(|r| r.1)
            .unwrap_or_default();
        rule_number(&stats, "www", "active_flows").is_ok_and(|n| n >= 1)
    });
    ensure!(counted, "the held-open download is not counted: {stats}");
    assert!(rule_number(&stats, "www", "new_flows")? >= 4, "{stats}");
    assert!(
        rule_number(&stats, "www", "distinct_clients")? >= 1,
        "{stats}"
    );
    assert!(stats.contains("\"new_flows_per_s\":"), "{stats}");

    // Switching it off: the old host answers for itself again.
    let (status, body) = site.api("DELETE", "/v1/rules/www", None)?;
    assert_eq!(status, 200, "{body}");
    let off = json_number(&body, "generation")?;
    assert!(off > on, "generation {off} after {on}");
    site.wait_for_body(OLD_BODY)?;
    let (_, rules) = site.api("GET", "/v1/rules", None)?;
    assert_eq!(rules, "[]");
    assert!(!site.redirector_toml()?.contains("198.18.0.3"));
    assert_eq!(site.current_generation()?, off);

    // Removing a rule that is not there is a 404 and no generation.
    let (status, body) = site.api("DELETE", "/v1/rules/www", None)?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("www"), "{body}");
    assert_eq!(site.current_generation()?, off);

    let (status, body) = site.api("GET", "/v1/health", None)?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert_eq!(json_number(&body, "generation")?, off, "{body}");
    site.assert_running()
}

/// Client, old and new host; the redirector on the old host's eth0 with
/// its API on the old host's loopback. Fields drop in order: the daemon
/// first, the namespaces last.
struct Site {
    redirector: Redirector,
    workspace: PathBuf,
    token: String,
    _bpffs: Bpffs,
    _scratch: tempfile::TempDir,
    net: Topology,
}

impl Site {
    fn start() -> Result<Self> {
        let net = Topology::new()?;
        let scratch = tempfile::Builder::new().prefix("cutover-api").tempdir()?;
        let bpffs = Bpffs::mount(&scratch.path().join("bpf"))?;
        let workspace = scratch.path().join("ws");
        std::fs::create_dir_all(&workspace)?;
        std::fs::write(workspace.join("redirector.toml"), START)?;
        let redirector = Redirector::start(
            &net.old,
            &["eth0"],
            &workspace,
            &bpffs.pins(),
            scratch.path(),
            &["--api", "127.0.0.1:8054"],
        )?;
        let token_path = workspace.join(".cutover").join("api-token");
        // The daemon writes it before it pins its maps.
        ensure!(
            token_path.exists(),
            "the redirector wrote no API token; log:\n{}",
            redirector.log()
        );
        let token = std::fs::read_to_string(&token_path)?.trim().to_string();
        ensure!(token.len() == 64, "token {token:?}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_path)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "the token file has mode {mode:o}");
        Ok(Self {
            redirector,
            workspace,
            token,
            _bpffs: bpffs,
            _scratch: scratch,
            net,
        })
    }

    fn log(&self) -> String {
        self.redirector.log()
    }

    fn assert_running(mut self) -> Result<()> {
        self.redirector.assert_running()
    }

    /// A request with the workspace's token; (status, body).
    fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        self.api_as(Some(&self.token), method, path, body)
    }

    /// A request from the old host itself (the API is on its loopback),
    /// with `token` as the bearer token, or none.
    fn api_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let mut cmd = self.net.old.command("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data", b]);
        }
        let out = cmd.arg(format!("{API}{path}")).output()?;
        ensure!(
            out.status.success(),
            "curl {method} {path}: {}; log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let text = String::from_utf8(out.stdout)?;
        let (body, status) = text
            .rsplit_once('\n')
            .with_context(|| format!("no status in {text:?}"))?;
        Ok((status.trim().parse()?, body.to_string()))
    }

    /// GET http://OLD_IP/ from the client.
    fn get(&self) -> Result<String> {
        let out = self.net.client.exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "5",
                &format!("http://{OLD_IP}/"),
            ],
        )?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Waits until http://OLD_IP/ answers `body` (a change is applied
    /// asynchronously on the kernel side: ARP, the first SYN).
    fn wait_for_body(&self, body: &str) -> Result<()> {
        let seen = wait_until(Duration::from_secs(15), || {
            self.get().is_ok_and(|b| b == body)
        });
        ensure!(
            seen,
            "http://{OLD_IP}/ never answered {body:?}; last {:?}; log:\n{}",
            self.get(),
            self.log()
        );
        Ok(())
    }

    fn current_generation(&self) -> Result<u64> {
        let text = std::fs::read_to_string(self.workspace.join(".cutover").join("current"))?;
        Ok(text.trim().parse()?)
    }

    fn redirector_toml(&self) -> Result<String> {
        Ok(std::fs::read_to_string(
            self.workspace.join("redirector.toml"),
        )?)
    }
}

/// A rate-limited download held open in the client, killed on drop.
struct SlowDownload(Child);

impl SlowDownload {
    fn start(client: &Netns, url: &str) -> Result<Self> {
        let child = client
            .command("curl")
            .args(["-sS", "--limit-rate", "200K", "-o", "/dev/null", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the slow download")?;
        Ok(Self(child))
    }
}

impl Drop for SlowDownload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number after `"field":` in compact JSON (the API's own format; the
/// tests crate has no JSON parser).
fn json_number(json: &str, field: &str) -> Result<u64> {
    number_after(json, &format!("\"{field}\":"))
        .with_context(|| format!("no number {field} in {json}"))
}

/// The number `field` inside the rule object named `rule` of `/v1/stats`.
fn rule_number(json: &str, rule: &str, field: &str) -> Result<u64> {
    let start = json
        .find(&format!("\"name\":\"{rule}\""))
        .with_context(|| format!("no rule {rule} in {json}"))?;
    json_number(&json[start..], field)
}

fn number_after(json: &str, key: &str) -> Option<u64> {
    let at = json.find(key)? + key.len();
    json[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}
