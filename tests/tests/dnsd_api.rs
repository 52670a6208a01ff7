//! The control API of dnsd: an operator (or `cutover migrate`) moves a
//! service to the new release with one authorised HTTP request; the change is
//! a new workspace generation, is served at once, and can be rolled back to
//! any earlier generation. A bad request changes nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use anyhow::{Result, ensure};
use cutover_control_api::contract::{GenerationInfo, RecordInfo, Service, ZoneInfo};
use cutover_tests::dnsd::{DnsdWorkspace, loopback};
use cutover_tests::dnsd_api::ApiDnsd;

/// `www.example.test.` as `GET /v1/services` lists it.
fn service(address: &str, ttl: u32) -> Service {
    Service {
        name: "www.example.test.".into(),
        addresses: vec![address.into()],
        ttl,
        members: Vec::new(),
    }
}

const ZONE: &str = "$TTL 60
@    IN SOA ns1 hostmaster 2026112601 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
";

/// `www` is a service on the old release's host; the comment is the
/// operator's and must survive every change the API makes.
const DNSD_TOML: &str = "# www moves between releases: use the API, not an editor
[[service]]
name = \"www.example.test.\"
addresses = [\"198.18.0.2\"]
ttl = 60

[[service]]
name = \"api.example.test.\"
addresses = [\"198.18.0.20\"]
ttl = 30
";

fn workspace() -> Result<DnsdWorkspace> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", ZONE)?;
    ws.toml(DNSD_TOML)?;
    Ok(ws)
}

fn dnsd_toml(ws: &DnsdWorkspace) -> Result<String> {
    Ok(fs::read_to_string(ws.path().join("dnsd.toml"))?)
}

/// Starts dnsd with its API on `loopback(n)`, runs `test` with the API
/// token dnsd made, and adds dnsd's log to a failure.
fn with_api(
    ws: &DnsdWorkspace,
    n: u8,
    test: impl FnOnce(&ApiDnsd, &str) -> Result<()>,
) -> Result<()> {
    let dnsd = ApiDnsd::start(ws, loopback(n), &[])?;
    let run = || test(&dnsd, &dnsd.default_token()?);
    run().map_err(|e| e.context(dnsd.log()))
}

#[test]
fn a_request_without_the_right_token_is_refused_and_changes_nothing() -> Result<()> {
    let ws = workspace()?;
    let token_file = ws.path().with_extension("token");
    fs::write(&token_file, "s3cret-token-for-this-test\n")?;
    let token_arg = token_file.to_string_lossy().into_owned();
    let dnsd = ApiDnsd::start(&ws, loopback(70), &["--api-token-file", &token_arg])?;
    let result = (|| -> Result<()> {
        let r = dnsd.call("GET", "/v1/services", None, None)?;
        ensure!(r.status == 401, "no token: {r:?}");
        ensure!(r.body.contains("\"error\""), "no token: {r:?}");
        let r = dnsd.call(
            "GET",
            "/v1/health",
            Some("s3cret-token-for-this-tesT"),
            None,
        )?;
        ensure!(r.status == 401, "wrong token: {r:?}");
        let body = r#"{"addresses":["198.18.0.3"]}"#;
        let r = dnsd.call(
            "PUT",
            "/v1/services/www.example.test.",
            Some("wrong"),
            Some(body),
        )?;
        ensure!(r.status == 401, "wrong token on a change: {r:?}");
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);
        ensure!(dnsd_toml(&ws)? == DNSD_TOML);

        // The token from --api-token-file opens the door; no default token
        // file is made when another one is given.
        let r = dnsd.call(
            "GET",
            "/v1/health",
            Some("s3cret-token-for-this-test"),
            None,
        )?;
        ensure!(
            r.status == 200 && r.body.contains("\"status\":\"ok\""),
            "{r:?}"
        );
        ensure!(r.body.contains("\"zones\":1"), "{r:?}");
        ensure!(!ws.path().join(".cutover/api-token").exists());
        let r = dnsd.call(
            "GET",
            "/v1/version",
            Some("s3cret-token-for-this-test"),
            None,
        )?;
        ensure!(
            r.status == 200 && r.body.contains("\"name\":\"dnsd\""),
            "{r:?}"
        );
        Ok(())
    })();
    let _ = fs::remove_file(&token_file);
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn a_service_moved_through_the_api_is_served_at_once_and_rolls_back() -> Result<()> {
    let ws = workspace()?;
    with_api(&ws, 71, |dnsd, token| {
        // The default token file is made at start, readable by its owner only.
        let token_path = ws.path().join(".cutover/api-token");
        let mode = fs::metadata(&token_path)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "token file mode {mode:o}");
        ensure!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
        let t = Some(token);

        let r = dnsd.call("GET", "/v1/services", t, None)?;
        ensure!(r.status == 200, "{r:?}");
        ensure!(
            r.json::<Vec<Service>>()?
                .contains(&service("198.18.0.2", 60)),
            "{r:?}"
        );
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);

        // The flip: the response comes once the new answer is served.
        let r = dnsd.call(
            "PUT",
            "/v1/services/www.example.test",
            t,
            Some(r#"{"addresses":["198.18.0.3","198.18.0.4"]}"#),
        )?;
        ensure!(r.status == 200, "{r:?}");
        ensure!(r.body == r#"{"generation":2}"#, "{r:?}");
        ensure!(
            dnsd.kdig("www.example.test.", "A")? == ["198.18.0.3", "198.18.0.4"],
            "not served at once"
        );
        // A new serial for the zone, so that secondaries see the flip.
        ensure!(dnsd.kdig("example.test.", "SOA")?[0].contains(" 2026112602 "));
        let toml = dnsd_toml(&ws)?;
        ensure!(
            toml.contains(r#"addresses = ["198.18.0.3", "198.18.0.4"]"#),
            "{toml}"
        );
        ensure!(
            toml.starts_with("# www moves between releases"),
            "comment lost: {toml}"
        );
        ensure!(toml.contains("ttl = 60"), "TTL not kept: {toml}");
        ensure!(
            toml.contains(r#"addresses = ["198.18.0.20"]"#),
            "other service: {toml}"
        );

        // The TTL can be lowered in the same request.
        let r = dnsd.call(
            "PUT",
            "/v1/services/WWW.example.test.",
            t,
            Some(r#"{"addresses":["198.18.0.3"],"ttl":5}"#),
        )?;
        ensure!(r.body == r#"{"generation":3}"#, "{r:?}");
        let r = dnsd.call("GET", "/v1/services", t, None)?;
        ensure!(
            r.json::<Vec<Service>>()?
                .contains(&service("198.18.0.3", 5)),
            "{r:?}"
        );

        let r = dnsd.call("GET", "/v1/generations", t, None)?;
        ensure!(r.status == 200, "{r:?}");
        let listed: Vec<(u64, String, bool)> = r
            .json::<Vec<GenerationInfo>>()?
            .into_iter()
            .map(|g| (g.number, g.message, g.current))
            .collect();
        ensure!(
            listed.contains(&(1, "the workspace as found".into(), false))
                && listed.contains(&(3, "set www.example.test. to 198.18.0.3".into(), true)),
            "{r:?}"
        );
        let r = dnsd.call("GET", "/v1/health", t, None)?;
        ensure!(r.body.contains("\"generation\":3"), "{r:?}");

        // Rollback to the workspace as it was: the old host is back.
        let r = dnsd.call("POST", "/v1/generations/1/rollback", t, None)?;
        ensure!(r.body == r#"{"generation":4}"#, "{r:?}");
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);
        ensure!(dnsd_toml(&ws)? == DNSD_TOML, "rollback is not exact");

        let r = dnsd.call("GET", "/v1/zones", t, None)?;
        ensure!(
            r.json::<Vec<ZoneInfo>>()?
                == [ZoneInfo {
                    origin: "example.test.".into(),
                    // The data of generation 1, under a serial newer than
                    // the one served before (2026112603: each flip gave the
                    // zone a new serial), so that secondaries and caches
                    // take the rollback.
                    serial: Some(2026112604),
                    records: 5,
                    nameservers: Vec::new(),
                    secondaries: Vec::new(),
                    replica_of: None,
                }],
            "{r:?}"
        );
        let r = dnsd.call("GET", "/v1/zones/example.test./records", t, None)?;
        ensure!(
            r.json::<Vec<RecordInfo>>()?.contains(&RecordInfo {
                name: "www.example.test.".into(),
                rtype: "A".into(),
                ttl: 60,
                data: "198.18.0.2".into(),
            }),
            "{r:?}"
        );
        Ok(())
    })
}

#[test]
fn a_bad_change_gets_a_precise_4xx_and_nothing_changes() -> Result<()> {
    let ws = workspace()?;
    with_api(&ws, 72, |dnsd, token| {
        let t = Some(token);
        let put = |name: &str, body: &str| {
            dnsd.call("PUT", &format!("/v1/services/{name}"), t, Some(body))
        };

        let r = put(
            "www.example.test.",
            r#"{"addresses":["198.18.0.3","198.18.0.999"]}"#,
        )?;
        ensure!(r.status == 400, "{r:?}");
        ensure!(
            r.body.contains("addresses[1]") && r.body.contains("198.18.0.999"),
            "{r:?}"
        );

        // Refused by the workspace's own checks, on the staged copy.
        let r = put(
            "www.example.test.",
            r#"{"addresses":["198.18.0.3"],"ttl":99999999}"#,
        )?;
        ensure!(r.status == 400, "{r:?}");
        ensure!(
            r.body.contains("dnsd.toml") && r.body.contains("ttl"),
            "{r:?}"
        );
        ensure!(!r.body.contains(".tmp"), "names the staging path: {r:?}");

        let r = put("www.example.test.", r#"{"addresses":[]}"#)?;
        ensure!(r.status == 400 && r.body.contains("addresses"), "{r:?}");
        let r = put("www.example.test.", r#"{"address":["198.18.0.3"]}"#)?;
        ensure!(r.status == 400 && r.body.contains("address"), "{r:?}");
        let r = put("nope.example.test.", r#"{"addresses":["198.18.0.3"]}"#)?;
        ensure!(
            r.status == 404 && r.body.contains("nope.example.test."),
            "{r:?}"
        );
        let r = dnsd.call("POST", "/v1/generations/99/rollback", t, None)?;
        ensure!(r.status == 404 && r.body.contains("99"), "{r:?}");
        let r = dnsd.call("GET", "/v1/zones/other.test./records", t, None)?;
        ensure!(r.status == 404, "{r:?}");

        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);
        ensure!(dnsd_toml(&ws)? == DNSD_TOML, "dnsd.toml changed");
        let r = dnsd.call("GET", "/v1/generations", t, None)?;
        ensure!(
            !r.body.contains("\"number\":2"),
            "a refused change made a generation: {r:?}"
        );
        Ok(())
    })
}

#[test]
fn the_pid_file_names_dnsd_while_it_runs_and_goes_with_sigterm() -> Result<()> {
    let ws = workspace()?;
    let mut dnsd = ApiDnsd::start(&ws, loopback(73), &[])?;
    let pid_file = ws.path().join(".cutover/run/dnsd.pid");
    let pid = fs::read_to_string(&pid_file)?;
    ensure!(
        pid.trim() == dnsd.pid().to_string(),
        "pid file says {pid:?}"
    );
    // SIGHUP through the pid file, as an operator tool would.
    ensure!(
        std::process::Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()?
            .success()
    );
    ensure!(
        dnsd.stop()?,
        "dnsd did not exit cleanly on SIGTERM:\n{}",
        dnsd.log()
    );
    ensure!(!pid_file.exists(), "pid file left behind");
    Ok(())
}

#[test]
fn an_rrset_replaced_through_the_api_is_served_at_once_and_a_bad_one_changes_nothing() -> Result<()>
{
    let ws = workspace()?;
    with_api(&ws, 74, |dnsd, token| {
        let t = Some(token);
        let put = |name: &str, rtype: &str, body: &str| {
            let path = format!("/v1/zones/example.test./rrsets/{name}/{rtype}");
            dnsd.call("PUT", &path, t, Some(body))
        };

        // Refusals first: the zone file stays as the operator wrote it.
        let original = fs::read_to_string(ws.path().join("zones/example.test.zone"))?;
        let r = put(
            "app.example.test.",
            "A",
            r#"{"ttl":30,"records":["198.18.0.999"]}"#,
        )?;
        ensure!(r.status == 400 && r.body.contains("records[0]"), "{r:?}");
        let r = put("app.example.test.", "A", r#"{"records":["198.18.0.7"]}"#)?;
        ensure!(r.status == 400 && r.body.contains("ttl"), "{r:?}");
        let r = put(
            "app.other.test.",
            "A",
            r#"{"ttl":30,"records":["198.18.0.7"]}"#,
        )?;
        ensure!(r.status == 400 && r.body.contains("not inside"), "{r:?}");
        let r = put(
            "www.example.test.",
            "A",
            r#"{"ttl":30,"records":["198.18.0.7"]}"#,
        )?;
        ensure!(r.status == 409 && r.body.contains("/v1/services/"), "{r:?}");
        let r = put("app.example.test.", "NOPE", r#"{"ttl":30,"records":["x"]}"#)?;
        ensure!(r.status == 400 && r.body.contains("type"), "{r:?}");
        ensure!(fs::read_to_string(ws.path().join("zones/example.test.zone"))? == original);

        let r = put(
            "app.example.test.",
            "A",
            r#"{"ttl":30,"records":["198.18.0.7","198.18.0.8"]}"#,
        )?;
        ensure!(r.status == 200 && r.body == r#"{"generation":2}"#, "{r:?}");
        ensure!(dnsd.kdig("app.example.test.", "A")? == ["198.18.0.7", "198.18.0.8"]);
        let r = put(
            "note.example.test.",
            "TXT",
            r#"{"ttl":30,"records":["\"a b\" c"]}"#,
        )?;
        ensure!(r.status == 200, "{r:?}");
        ensure!(dnsd.kdig("note.example.test.", "TXT")? == [r#""a b" "c""#]);
        // The serial moved, so that secondaries see the change.
        let r = dnsd.call("GET", "/v1/zones", t, None)?;
        ensure!(r.body.contains("\"serial\":2026112603"), "{r:?}");

        // An empty list deletes the RRset.
        let r = put("app.example.test.", "A", r#"{"records":[]}"#)?;
        ensure!(r.status == 200, "{r:?}");
        ensure!(dnsd.kdig("app.example.test.", "A")?.is_empty());
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);

        // Deleting it again changes nothing: no generation, the same serial.
        let generations = || -> Result<usize> {
            Ok(dnsd
                .call("GET", "/v1/generations", t, None)?
                .json::<Vec<cutover_control_api::contract::GenerationInfo>>()?
                .len())
        };
        let serial = || -> Result<Option<u32>> {
            let r = dnsd.call("GET", "/v1/zones", t, None)?;
            Ok(r.json::<Vec<ZoneInfo>>()?.first().and_then(|z| z.serial))
        };
        let (n, before) = (generations()?, serial()?);
        let r = put("app.example.test.", "A", r#"{"records":[]}"#)?;
        ensure!(r.status == 200, "{r:?}");
        ensure!(
            generations()? == n && serial()? == before,
            "a no-op made a change"
        );

        // A name in the path is taken as written, not trimmed.
        let r = dnsd.call("GET", "/v1/zones/example.test.%0a/records", t, None)?;
        ensure!(r.status == 400 && r.body.contains("origin"), "{r:?}");
        Ok(())
    })
}

/// The operator renamed `old` to `new`: a DNAME sends every name below
/// `old.example.test.` to the same name below `new.example.test.`.
const DNAME_ZONE_TAIL: &str = "old  IN DNAME new
www.new IN A 198.18.0.31
";

#[test]
fn a_dname_is_listed_by_its_target_and_can_be_moved_through_the_api() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &format!("{ZONE}{DNAME_ZONE_TAIL}"))?;
    ws.toml(DNSD_TOML)?;
    with_api(&ws, 75, |dnsd, token| {
        let t = Some(token);
        let records = || dnsd.call("GET", "/v1/zones/example.test./records", t, None);
        let dname_row = |target: &str| RecordInfo {
            name: "old.example.test.".into(),
            rtype: "DNAME".into(),
            ttl: 60,
            data: target.into(),
        };
        let r = records()?;
        ensure!(
            r.json::<Vec<RecordInfo>>()?
                .contains(&dname_row("new.example.test.")),
            "{r:?}"
        );
        ensure!(
            dnsd.kdig("www.old.example.test.", "A")?
                == ["198.18.0.31", "new.example.test.", "www.new.example.test."]
        );

        let put = |name: &str, body: &str| {
            let path = format!("/v1/zones/example.test./rrsets/{name}/DNAME");
            dnsd.call("PUT", &path, t, Some(body))
        };
        // Refused, the zone file untouched: a DNAME with names below it
        // (RFC 6672 §2.3), and two targets at one name.
        let original = fs::read_to_string(ws.path().join("zones/example.test.zone"))?;
        let r = put(
            "new.example.test.",
            r#"{"ttl":60,"records":["elsewhere.test."]}"#,
        )?;
        ensure!(
            r.status == 400 && r.body.contains("below the DNAME"),
            "{r:?}"
        );
        let r = put(
            "old.example.test.",
            r#"{"records":["a.elsewhere.test.","b.elsewhere.test."]}"#,
        )?;
        ensure!(
            r.status == 400 && r.body.contains("at most one DNAME"),
            "{r:?}"
        );
        ensure!(fs::read_to_string(ws.path().join("zones/example.test.zone"))? == original);

        // Moved to another zone: listed and served at once.
        let r = put("old.example.test.", r#"{"records":["elsewhere.test."]}"#)?;
        ensure!(r.status == 200, "{r:?}");
        let r = records()?;
        ensure!(
            r.json::<Vec<RecordInfo>>()?
                .contains(&dname_row("elsewhere.test.")),
            "{r:?}"
        );
        let answer = dnsd.kdig("www.old.example.test.", "A")?;
        ensure!(
            answer == ["elsewhere.test.", "www.elsewhere.test."],
            "{answer:?}"
        );
        Ok(())
    })
}

/// Who made a change and why (cutover's `--by` and `--reason`, sent as
/// headers) are recorded in the generation it makes; a request without
/// them records no more than before, and control characters are not
/// written into the history.
#[test]
fn a_generation_records_who_made_it_and_why() -> Result<()> {
    let ws = workspace()?;
    with_api(&ws, 200, |dnsd, token| {
        let put = |address: &str, headers: &[&str]| -> Result<u16> {
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg("-H")
                .arg(format!("Authorization: Bearer {token}"))
                .args(["-H", "Content-Type: application/json"]);
            for h in headers {
                cmd.arg("-H").arg(h);
            }
            let out = cmd
                .arg("--data-binary")
                .arg(format!("{{\"addresses\":[\"{address}\"]}}"))
                .arg(format!("http://{}/v1/services/www.example.test.", dnsd.api))
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).parse()?)
        };
        ensure!(
            put(
                "198.18.0.31",
                &["X-Cutover-By: alice@ops", "X-Cutover-Reason: release 42"]
            )? == 200
        );
        ensure!(put("198.18.0.32", &[])? == 200);
        let generations: Vec<GenerationInfo> = dnsd
            .call("GET", "/v1/generations", Some(token), None)?
            .json()?;
        let messages: Vec<&str> = generations.iter().map(|g| g.message.as_str()).collect();
        ensure!(
            messages
                .iter()
                .any(|m| *m == "set www.example.test. to 198.18.0.31 (by alice@ops: release 42)"),
            "{messages:?}"
        );
        ensure!(
            messages
                .iter()
                .any(|m| *m == "set www.example.test. to 198.18.0.32"),
            "{messages:?}"
        );
        Ok(())
    })
}
