//! dnsd as the primary of standard secondaries (issue 14): Knot DNS and
//! BIND (their transfers signed with TSIG) and NSD copy dnsd's zone by zone
//! transfer,
//! hold exactly what dnsd serves, and follow a change within seconds
//! because dnsd sends them NOTIFY (their SOA refresh is two hours away);
//! transfers are refused to an address and a key dnsd.toml does not allow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::bins;
use cutover_tests::dns_peers::{self, DnsServer, Primary, ServerOptions, free_port};
use cutover_tests::xfr::{addresses, api_call, axfr, transfer};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const WRONG: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 61, n))
}

/// What kdig prints for the SOA of example.test. asked of `server` signed
/// with `xfr-key.` and `secret`.
fn signed_soa(server: SocketAddr, secret: &str, tcp: bool) -> Result<String> {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+timeout=2", "+retry=0"])
        .arg(if tcp { "+tcp" } else { "+notcp" })
        .args(["-y", &format!("hmac-sha256:xfr-key.:{secret}")])
        .args(["example.test.", "SOA"])
        .output()
        .context("running kdig")?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Runs `cutover sync www.example.test.` against dnsd's API at `api`
/// (its token in `workspace`) with `more` arguments: whether it succeeded,
/// and what it printed.
fn cutover_sync(
    api: SocketAddr,
    workspace: &std::path::Path,
    more: &[&str],
) -> Result<(bool, String)> {
    let out = Command::new(bins::path("cutover"))
        .args(["--dns", &format!("http://{api}")])
        .arg("--token-file")
        .arg(workspace.join(".cutover/api-token"))
        .args(["sync", "www.example.test."])
        .args(more)
        .output()
        .context("running cutover")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn secondary(
    start: fn(IpAddr, &ServerOptions) -> Result<DnsServer>,
    ip: IpAddr,
    port: u16,
    primary: SocketAddr,
    key: bool,
) -> Result<DnsServer> {
    let options = ServerOptions {
        port: Some(port),
        allow_axfr: true,
        primary: Some(Primary {
            addr: primary,
            key: key.then(|| ("xfr-key.".to_string(), SECRET.to_string())),
        }),
        ..ServerOptions::default()
    };
    start(ip, &options)
}

#[test]
fn knot_nsd_and_bind_copy_the_zone_and_follow_changes_by_notify() -> Result<()> {
    let (primary_ip, knot_ip, nsd_ip, reader) = (address(1), address(2), address(3), address(4));
    // named listens only on addresses its interfaces have: lo's own.
    let bind_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (knot_port, nsd_port, bind_port) =
        (free_port(knot_ip)?, free_port(nsd_ip)?, free_port(bind_ip)?);
    let toml = format!(
        "
[[tsig_key]]
name = \"xfr-key.\"
algorithm = \"hmac-sha256\"
secret = \"{SECRET}\"

[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"{WRONG}\"
zones = [\"example.test.\"]

[[secondary]]
address = \"{knot_ip}:{knot_port}\"
tsig_key = \"xfr-key.\"

[[secondary]]
address = \"{nsd_ip}:{nsd_port}\"

[[secondary]]
address = \"{bind_ip}:{bind_port}\"
tsig_key = \"xfr-key.\"

[transfer]
allow = [\"{reader}\"]

[[service]]
name = \"svc.example.test.\"
addresses = [\"198.18.9.20\"]
ttl = 60
"
    );
    let api = SocketAddr::new(primary_ip, free_port(primary_ip)?);
    let dnsd = dns_peers::start_dnsd(
        &bins::path("dnsd"),
        primary_ip,
        &ServerOptions {
            dnsd_toml: toml,
            dnsd_api: Some(api),
            ..ServerOptions::default()
        },
    )?;
    let knot = secondary(dns_peers::start_knot, knot_ip, knot_port, dnsd.addr, true)?;
    let nsd = secondary(dns_peers::start_nsd, nsd_ip, nsd_port, dnsd.addr, false)?;
    let mut bind = secondary(dns_peers::start_bind, bind_ip, bind_port, dnsd.addr, true)?;
    let result = (|| -> Result<()> {
        let whole = axfr(dnsd.addr, reader, None)?.map_err(anyhow::Error::msg)?;
        ensure!(whole.len() > 20, "dnsd's zone: {whole:?}");
        for server in [&knot, &nsd, &bind] {
            let copy = axfr(server.addr, reader, None)?.map_err(anyhow::Error::msg)?;
            ensure!(
                copy == whole,
                "{} holds another zone: {copy:#?}\nthan dnsd's {whole:#?}",
                server.label()
            );
        }

        // A signed query gets a signed answer, over UDP and TCP (kdig
        // checks the MAC); a wrong secret gets NOTAUTH with BADSIG, which
        // kdig shows as the status.
        for tcp in [false, true] {
            let signed = signed_soa(dnsd.addr, SECRET, tcp)?;
            ensure!(
                signed.contains("NOERROR")
                    && !signed.contains("WARNING")
                    && signed.contains("TSIG"),
                "a signed SOA query (tcp {tcp}): {signed}"
            );
            let forged = signed_soa(dnsd.addr, WRONG, tcp)?;
            ensure!(
                (forged.contains("NOTAUTH") || forged.contains("BADSIG")),
                "a query signed with a wrong secret (tcp {tcp}): {forged}"
            );
        }

        // Refused: an address dnsd.toml does not name, unsigned; a key it
        // does not know the secret of. Allowed: the key, from anywhere.
        let stranger = address(9);
        let refused = axfr(dnsd.addr, stranger, None)?;
        ensure!(
            matches!(&refused, Err(e) if e.contains("REFUSED")),
            "{refused:?}"
        );
        let forged = axfr(dnsd.addr, stranger, Some(WRONG))?;
        ensure!(
            forged.is_err(),
            "a transfer signed with a wrong secret: {forged:?}"
        );
        let signed = axfr(dnsd.addr, stranger, Some(SECRET))?;
        ensure!(
            matches!(&signed, Err(e) if e.contains("REFUSED")),
            "the key is a secondary's, not [transfer]'s: {signed:?}"
        );

        // A change: the next serial and new addresses for www, then a
        // reload. Both secondaries serve it long before their SOA refresh.
        let file = dnsd.workspace().join("zones/example.test.zone");
        let text = std::fs::read_to_string(&file)?;
        let changed = text
            .replace("2026112601", "2026112602")
            .replace("198.18.0.1\n", "198.18.9.1\n");
        ensure!(changed != text, "the zone file did not change");
        std::fs::write(&file, changed)?;
        let changed_at = Instant::now();
        dnsd.signal(libc::SIGHUP)?;
        let want = ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.9.1"];
        for server in [&knot, &nsd, &bind] {
            loop {
                if addresses(server.addr, "www.example.test.")? == want {
                    println!(
                        "{} serves the change {:?} after it was made",
                        server.label(),
                        changed_at.elapsed()
                    );
                    break;
                }
                if changed_at.elapsed() > Duration::from_secs(30) {
                    bail!("{} does not serve the change after 30 s", server.label());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // A dynamic update is in the journal: its serial is told to the
        // secondaries, which ask for the difference (IXFR) and get it. BIND
        // is down meanwhile (killed): it catches up once it is back.
        bind.crash();
        let status = cutover_tests::dnsd_update::knsupdate(
            dnsd.addr,
            Some(cutover_tests::dnsd_update::Key {
                name: "ops-key.",
                secret: WRONG,
            }),
            "example.test.",
            "update add added.example.test. 60 A 198.18.9.9",
            true,
        )?;
        ensure!(status == "NOERROR", "the update: {status}");
        let updated_at = Instant::now();
        for server in [&knot, &nsd] {
            loop {
                if addresses(server.addr, "added.example.test.")? == ["198.18.9.9"] {
                    println!(
                        "{} serves the update {:?} after it was made",
                        server.label(),
                        updated_at.elapsed()
                    );
                    break;
                }
                if updated_at.elapsed() > Duration::from_secs(30) {
                    bail!("{} does not serve the update after 30 s", server.label());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bind.restart()?;
        let back_at = Instant::now();
        while addresses(bind.addr, "added.example.test.")? != ["198.18.9.9"] {
            ensure!(
                back_at.elapsed() < Duration::from_secs(30),
                "BIND did not catch up within 30 s of its restart:\n{}",
                bind.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "BIND, down during the update, serves it {:?} after its restart",
            back_at.elapsed()
        );
        let diff = transfer(dnsd.addr, reader, None, "IXFR=2026112602", false)?
            .map_err(anyhow::Error::msg)?;
        let kinds: Vec<&str> = diff
            .iter()
            .map(|l| l.split_whitespace().nth(3).unwrap_or(""))
            .collect();
        ensure!(
            kinds == ["SOA", "SOA", "SOA", "A", "SOA"],
            "the IXFR from the last reload: {diff:#?}"
        );
        ensure!(
            diff[1].contains(" 2026112602 ") && diff[0].contains(" 2026112603 "),
            "{diff:#?}"
        );
        // From before the hand edit the journal has no way: the whole zone.
        // `cutover sync`: dnsd and its three secondaries serve the serial.
        let (ok, said) = cutover_sync(api, &dnsd.workspace(), &["--sync-timeout", "20s"])?;
        ensure!(
            ok && said.contains("every name server serves it (4 of them)"),
            "{said}"
        );

        let whole = axfr(dnsd.addr, reader, None)?.map_err(anyhow::Error::msg)?;
        // From before the hand edit too, a difference: dnsd compared the
        // zone it reloaded with the one it served.
        let from_before = transfer(dnsd.addr, reader, None, "IXFR=2026112601", false)?
            .map_err(anyhow::Error::msg)?;
        let mut changed: Vec<&str> = from_before
            .iter()
            .filter(|l| !l.contains(" SOA "))
            .map(|l| l.as_str())
            .collect();
        changed.sort();
        ensure!(
            from_before.len() == 7
                && from_before[1].contains(" 2026112601 ")
                && changed
                    == [
                        "added.example.test. 60 IN A 198.18.9.9",
                        "www.example.test. 60 IN A 198.18.0.1",
                        "www.example.test. 60 IN A 198.18.9.1",
                    ],
            "the IXFR from before the reload: {from_before:#?}"
        );
        for server in [&knot, &nsd, &bind] {
            let copy = axfr(server.addr, reader, None)?.map_err(anyhow::Error::msg)?;
            ensure!(
                copy == whole,
                "{} after the changes: {copy:#?}",
                server.label()
            );
        }
        // The API says what each secondary acknowledged and took.
        let token = std::fs::read_to_string(dnsd.workspace().join(".cutover/api-token"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("curl")
                .args([
                    "-sf",
                    "-H",
                    &format!("Authorization: Bearer {}", token.trim()),
                ])
                .arg(format!("http://{api}/v1/zones"))
                .output()
                .context("running curl")?;
            let zones: Vec<cutover_control_api::contract::ZoneInfo> =
                serde_json::from_slice(&out.stdout).context("GET /v1/zones")?;
            let zone = zones.first().context("no zone listed")?;
            let current = |s: &cutover_control_api::contract::SecondaryInfo| {
                s.notify_acknowledged == Some(2026112603)
                    && s.transferred == Some(2026112603)
                    && s.transfer.as_deref().is_some_and(|t| t.starts_with("IXFR"))
            };
            if zone.secondaries.len() == 3 && zone.secondaries.iter().all(current) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the secondaries as the API shows them: {zone:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // `cutover status` says the same.
        let state = tempfile::tempdir()?;
        let out = Command::new(bins::path("cutover"))
            .args(["--dns", &format!("http://{api}")])
            .arg("--token-file")
            .arg(dnsd.workspace().join(".cutover/api-token"))
            .arg("--state-dir")
            .arg(state.path())
            .arg("status")
            .output()
            .context("running cutover status")?;
        let said = String::from_utf8_lossy(&out.stdout);
        ensure!(
            said.contains("secondaries of example.test. (serial 2026112603):")
                && said.matches("took 2026112603 by IXFR").count() == 3
                && said.matches("told 2026112603 at ").count() == 3,
            "cutover status: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // A name server that stops answering is named, and the wait fails.
        let stopped = format!("{knot_ip}:{knot_port} does not answer");
        knot.signal(libc::SIGSTOP)?;
        let waited = cutover_sync(api, &dnsd.workspace(), &["--sync-timeout", "2s"]);
        knot.signal(libc::SIGCONT)?;
        let (ok, said) = waited?;
        ensure!(!ok && said.contains(&stopped), "{said}");

        // A service flip (cutover's push button), then a rollback to before
        // it: each a new serial, which every secondary serves.
        let generation = |body: &str| -> Result<u64> {
            let v: serde_json::Value = serde_json::from_str(body)?;
            v["generation"].as_u64().context("no generation")
        };
        let (status, body) = api_call(api, &dnsd.workspace(), "GET", "/v1/health", None)?;
        ensure!(status == 200, "{status} {body}");
        let before_flip = generation(&body)?;
        for (what, method, path, body, want) in [
            (
                "flip",
                "PUT",
                "/v1/services/svc.example.test.".to_string(),
                Some(r#"{"addresses":["198.18.9.21"]}"#),
                "198.18.9.21",
            ),
            (
                "rollback",
                "POST",
                format!("/v1/generations/{before_flip}/rollback"),
                None,
                "198.18.9.20",
            ),
        ] {
            let (status, said) = api_call(api, &dnsd.workspace(), method, &path, body)?;
            ensure!(status == 200, "the {what}: {status} {said}");
            let made = Instant::now();
            for server in [&knot, &nsd, &bind] {
                while addresses(server.addr, "svc.example.test.")? != [want] {
                    ensure!(
                        made.elapsed() < Duration::from_secs(30),
                        "{} does not serve the {what} after 30 s",
                        server.label()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                println!(
                    "{} serves the {what} {:?} after it was made",
                    server.label(),
                    made.elapsed()
                );
            }
            // Both go by IXFR: dnsd keeps the changes it served, by name
            // (the flip) or by a reload that changed the serial (the
            // rollback).
            {
                let zones = cutover_tests::xfr::zones(api, &dnsd.workspace())?;
                let zone = zones.first().context("no zone listed")?;
                ensure!(
                    zone.secondaries.iter().all(|s| {
                        s.transfer.as_deref() == Some("IXFR") && s.transferred == zone.serial
                    }),
                    "the {what}'s transfers: {zone:#?}"
                );
            }
        }
        Ok(())
    })();
    result.map_err(|e| {
        e.context(format!(
            "dnsd's log:\n{}\nKnot's log:\n{}\nNSD's log:\n{}\nBIND's log:\n{}",
            dnsd.log(),
            knot.log_tail(),
            nsd.log_tail(),
            bind.log_tail()
        ))
    })
}
