//! `GET /metrics` on both daemons: what they count matches what was asked
//! of them, `promtool check metrics` accepts the text, and a real
//! Prometheus scrapes both (dnsd on loopback without a token, the
//! redirector on the old host's address with one) and answers PromQL about
//! them.
//!
//! Needs root; the daemons are `target/<profile>/{dnsd,redirector}`
//! (`cargo build --bins`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::bins;
use cutover_tests::dnsd::{DnsdWorkspace, add_example_zone, loopback};
use cutover_tests::dnsd_api::ApiDnsd;
use cutover_tests::netns::Netns;
use cutover_tests::nginx::Nginx;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::prometheus::{Job, Prometheus, promtool_check, sample};
use cutover_tests::redirector_site::{RULE_WWW, Site, curl};
use cutover_tests::topology::{NEW_IP, OLD_IP};

/// A weighted service (1:3), so that the answers each address led are
/// counted.
const SERVICE: &str = r#"
[[service]]
name = "www.example.test."
ttl = 30
addresses = [
  { address = "198.18.0.30", weight = 1 },
  { address = "198.18.0.31", weight = 3 },
]
"#;

fn kdig(server: SocketAddr, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+timeout=2", "+retry=0"])
        .args(args)
        .output()
        .context("running kdig")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn metrics(dnsd: &ApiDnsd) -> Result<String> {
    let r = dnsd.call("GET", "/metrics", None, None)?;
    ensure!(
        r.status == 200,
        "GET /metrics without a token on loopback: {r:?}"
    );
    Ok(r.body)
}

fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    sample(text, name, labels).unwrap_or(-1.0)
}

#[test]
fn dnsd_counts_queries_by_transport_path_type_and_code() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    add_example_zone(ws.path())?;
    ws.toml(SERVICE)?;
    let dnsd = ApiDnsd::start(&ws, loopback(61), &[])?;

    for _ in 0..8 {
        kdig(dnsd.dns, &["www.example.test", "A"])?;
    }
    for _ in 0..3 {
        kdig(dnsd.dns, &["+tcp", "ns1.example.test", "A"])?;
    }
    kdig(dnsd.dns, &["nope.example.test", "A"])?;
    kdig(dnsd.dns, &["example.test", "AXFR"])?;

    let text = metrics(&dnsd)?;
    promtool_check(&text)?;
    let q = "dnsd_queries_total";
    let udp_fast_a = [
        "transport=\"udp\"",
        "path=\"fast\"",
        "qtype=\"A\"",
        "rcode=\"NOERROR\"",
    ];
    assert_eq!(value(&text, q, &udp_fast_a), 8.0, "{text}");
    let tcp_a = [
        "transport=\"tcp\"",
        "path=\"general\"",
        "qtype=\"A\"",
        "rcode=\"NOERROR\"",
    ];
    assert_eq!(value(&text, q, &tcp_a), 3.0, "{text}");
    let nxdomain: f64 = ["fast", "general"]
        .iter()
        .filter_map(|p| {
            let path = format!("path=\"{p}\"");
            sample(
                &text,
                q,
                &[
                    "transport=\"udp\"",
                    &path,
                    "qtype=\"A\"",
                    "rcode=\"NXDOMAIN\"",
                ],
            )
        })
        .sum();
    assert_eq!(nxdomain, 1.0, "{text}");
    // No secondary is configured: the transfer is refused, and counted.
    let axfr = [
        "transport=\"tcp\"",
        "path=\"transfer\"",
        "qtype=\"AXFR\"",
        "rcode=\"REFUSED\"",
    ];
    assert_eq!(value(&text, q, &axfr), 1.0, "{text}");
    // 8 answers at 1:3: exact shares.
    let led = "dnsd_answers_led_total";
    assert_eq!(
        value(&text, led, &["address=\"198.18.0.30\""]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&text, led, &["address=\"198.18.0.31\""]),
        6.0,
        "{text}"
    );
    let soa = kdig(dnsd.dns, &["+short", "example.test", "SOA"])?;
    let serial: f64 = soa
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no serial in {soa:?}"))?;
    assert_eq!(
        value(&text, "dnsd_zone_serial", &["zone=\"example.test.\""]),
        serial,
        "{text}"
    );

    // A reload, then one refused: both counted, and the zone still served.
    dnsd.reload()?;
    let reloaded = |result: &str, n: f64| {
        let label = format!("result=\"{result}\"");
        wait_until(Duration::from_secs(10), || {
            metrics(&dnsd).is_ok_and(|t| value(&t, "dnsd_reloads_total", &[&label]) == n)
        })
    };
    ensure!(reloaded("ok", 1.0), "{}", metrics(&dnsd)?);
    ws.toml("[server\nbroken")?;
    dnsd.reload()?;
    ensure!(reloaded("failed", 1.0), "{}", metrics(&dnsd)?);
    assert_eq!(
        value(&metrics(&dnsd)?, "dnsd_reloads_total", &["result=\"ok\""]),
        1.0
    );
    ensure!(!kdig(dnsd.dns, &["+short", "www.example.test", "A"])?.is_empty());
    Ok(())
}

#[test]
fn a_prometheus_scrapes_both_daemons_and_answers_promql_about_them() -> Result<()> {
    let site = Site::start_with_args(RULE_WWW, &["--api", &format!("{OLD_IP}:8054")])?;
    let _web = Nginx::start(&site.net.new, &[80], "new\n", &[])?;
    let scratch = tempfile::Builder::new()
        .prefix("cutover-metrics")
        .tempdir()?;

    // dnsd beside Prometheus, in the client's namespace, its API on
    // loopback.
    let client: &Netns = &site.net.client;
    let ws = scratch.path().join("dnsd-ws");
    std::fs::create_dir_all(&ws)?;
    add_example_zone(&ws)?;
    std::fs::write(ws.join("dnsd.toml"), SERVICE)?;
    let mut cmd = client.command(bins::path("dnsd"));
    cmd.arg("--workspace")
        .arg(&ws)
        .args(["--listen", "127.0.0.1:5300", "--api", "127.0.0.1:8053"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scratch.path().join("dnsd.log"))?);
    let _dnsd = Daemon::spawn("dnsd", cmd)?;
    ensure!(
        wait_until(Duration::from_secs(15), || client
            .exec(
                "kdig",
                &["@127.0.0.1", "-p", "5300", "+short", "www.example.test"]
            )
            .is_ok_and(|o| !o.stdout.is_empty())),
        "dnsd does not answer; log:\n{}",
        std::fs::read_to_string(scratch.path().join("dnsd.log")).unwrap_or_default()
    );

    // The redirector's API is on the old host's address: its token is
    // needed, as Prometheus's credentials_file sends it.
    let token = site.workspace.join(".cutover/api-token");
    let url = format!("http://{OLD_IP}:8054/metrics");
    let anonymous = client.exec(
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url],
    )?;
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    for _ in 0..5 {
        assert_eq!(curl(client, &format!("http://{OLD_IP}/"))?, "new\n");
    }
    let auth = format!(
        "Authorization: Bearer {}",
        std::fs::read_to_string(&token)?.trim()
    );
    let text = String::from_utf8(client.exec("curl", &["-sS", "-H", &auth, &url])?.stdout)?;
    promtool_check(&text)?;
    let www = "rule=\"www\"";
    assert_eq!(
        value(&text, "redirector_new_flows_total", &[www]),
        5.0,
        "{text}"
    );
    ensure!(
        value(
            &text,
            "redirector_packets_total",
            &[www, "direction=\"reply\""]
        ) >= 5.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "redirector_nat_failures_total", &[www]),
        0.0,
        "{text}"
    );
    // Every drop reason is listed, zeros included.
    assert_eq!(
        value(
            &text,
            "redirector_drops_total",
            &[www, "reason=\"no_route\""]
        ),
        0.0,
        "{text}"
    );
    ensure!(
        sample(
            &text,
            "redirector_rule_info",
            &[www, &format!("to=\"{NEW_IP}:80\"")]
        ) == Some(1.0),
        "{text}"
    );

    let prometheus = Prometheus::start(
        client,
        &[
            Job {
                name: "dnsd",
                targets: &["127.0.0.1:8053".to_string()],
                token_file: None,
            },
            Job {
                name: "redirector",
                targets: &[format!("{OLD_IP}:8054")],
                token_file: Some(&token),
            },
        ],
        scratch.path(),
    )?;
    let answered = |promql: &str, want: f64| {
        wait_until(Duration::from_secs(30), || {
            prometheus.query(promql).is_ok_and(|v| v == [want])
        })
    };
    ensure!(
        answered("sum(redirector_new_flows_total{rule=\"www\"})", 5.0),
        "PromQL on the redirector's counter: {:?}",
        prometheus.query("redirector_new_flows_total")
    );
    ensure!(
        answered("min(up)", 1.0),
        "a target is down: {:?}",
        prometheus.query("up")
    );
    ensure!(
        answered(
            "count(dnsd_queries_total{transport=\"udp\",qtype=\"A\"} > 0) > bool 0",
            1.0
        ),
        "dnsd's queries: {:?}",
        prometheus.query("dnsd_queries_total")
    );
    Ok(())
}
