//! dnsd as a secondary (`[[replica]]`, issue 14): it copies a zone from
//! Knot DNS and from another dnsd by signed zone transfers, holds exactly
//! what its primary serves (the differential zone's every odd type among
//! them), follows each change by NOTIFY and IXFR (the SOA refresh is hours
//! away), refuses changes of its own and NOTIFYs from anyone but its
//! primary, serves its copy at once after a crash with the primary down,
//! and stops serving it (SERVFAIL) once the SOA's expire has passed without
//! a refresh, until the primary is back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_control_api::contract::ReplicaInfo;
use cutover_tests::dig::{self, Query, Reply};
use cutover_tests::dns_peers::{self, DnsServer, Primary, ServerOptions, free_port};
use cutover_tests::dnsd_update::{Key, knsupdate};
use cutover_tests::xfr::{KEY_NAME, addresses, api_call, axfr, zones};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const ORIGIN: &str = "example.test.";

fn address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 62, n))
}

fn key() -> Option<(String, String)> {
    Some((KEY_NAME.to_string(), SECRET.to_string()))
}

/// The differential test's zone with serial `serial`, SOA timers `timers`
/// (refresh retry expire minimum) and `bulk` more names (so that a
/// transfer takes several messages), then `extra` lines.
fn zone_text(serial: u32, timers: &str, bulk: usize, extra: &str) -> Result<String> {
    let base = std::fs::read_to_string(dns_peers::test_zone())?;
    let soa = "2026112601 7200 3600 1209600 120";
    ensure!(base.contains(soa), "the test zone's SOA changed");
    let mut text = base.replace(soa, &format!("{serial} {timers}"));
    for i in 0..bulk {
        text.push_str(&format!(
            "bulk{i} 300 IN A 198.18.{}.{}\nbulk{i} 300 IN TXT \"record {i} of the bulk\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    text.push_str(extra);
    Ok(text)
}

/// What `GET /v1/zones` of the replica at `api` says of its copy.
fn replica_info(api: SocketAddr, workspace: &Path) -> Result<ReplicaInfo> {
    let zones = zones(api, workspace)?;
    zones
        .into_iter()
        .find(|z| z.origin == ORIGIN)
        .and_then(|z| z.replica_of)
        .context("the API does not show the zone as a replica")
}

/// The SOA serial `server` answers for the zone, if it answers one.
fn serial(server: SocketAddr) -> Option<u32> {
    match dig::ask(server, &Query::new(ORIGIN, "SOA")) {
        Ok(Reply::Message(m)) if m.rcode == "NOERROR" => m
            .answer
            .first()
            .and_then(|r| r.rdata.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok()),
        _ => None,
    }
}

/// The rcode `server` answers the zone's SOA with.
fn soa_rcode(server: SocketAddr) -> String {
    match dig::ask(server, &Query::new(ORIGIN, "SOA")) {
        Ok(Reply::Message(m)) => m.rcode,
        Ok(other) => other.to_string(),
        Err(e) => format!("{e:#}"),
    }
}

/// Waits until `replica` serves serial `want`: how long it took.
fn until_serial(replica: &DnsServer, want: u32) -> Result<Duration> {
    let started = Instant::now();
    while serial(replica.addr) != Some(want) {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "{} still serves {:?}, not {want}; log:\n{}",
                replica.label(),
                serial(replica.addr),
                replica.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

/// The whole zone as `server` gives it by AXFR to `reader` (signed when
/// `signed`).
fn whole(server: SocketAddr, reader: IpAddr, signed: bool) -> Result<Vec<String>> {
    axfr(server, reader, signed.then_some(SECRET))?.map_err(anyhow::Error::msg)
}

/// The rcode of a NOTIFY for the zone sent to `to` from `from`, unsigned.
fn notify_rcode(to: SocketAddr, from: IpAddr) -> Result<u8> {
    let socket = UdpSocket::bind((from, 0)).context("binding the NOTIFY sender")?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut m = vec![0x4e, 0x21, 0x24, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(b"\x07example\x04test\x00\x00\x06\x00\x01");
    socket.send_to(&m, to)?;
    let mut reply = [0u8; 512];
    let (n, _) = socket
        .recv_from(&mut reply)
        .context("no answer to the NOTIFY")?;
    ensure!(
        n >= 12 && reply[..2] == m[..2],
        "not an answer to the NOTIFY"
    );
    Ok(reply[3] & 0x0f)
}

/// dnsd on `ip`:`port`, its API on `api`, as the replica of the zone at
/// `primary` (signed with the test key), its copy readable from 127/8.
fn start_replica(ip: IpAddr, port: u16, api: SocketAddr, primary: SocketAddr) -> Result<DnsServer> {
    dns_peers::start_dnsd(
        &cutover_tests::bins::path("dnsd"),
        ip,
        &ServerOptions {
            port: Some(port),
            primary: Some(Primary {
                addr: primary,
                key: key(),
            }),
            dnsd_toml: "[transfer]\nallow = [\"127.0.0.0/8\"]\n".into(),
            dnsd_api: Some(api),
            ..ServerOptions::default()
        },
    )
}

#[test]
fn dnsd_copies_a_zone_from_knot_and_follows_it_by_notify_and_ixfr() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("example.test.zone");
    std::fs::write(
        &file,
        zone_text(2026112601, "7200 3600 1209600 120", 2000, "")?,
    )?;
    let replica_ip = address(2);
    let replica_port = free_port(replica_ip)?;
    let replica_addr = SocketAddr::new(replica_ip, replica_port);
    let knot = dns_peers::start_knot(
        address(1),
        &ServerOptions {
            zones: vec![(ORIGIN.into(), file.clone())],
            notify: vec![replica_addr],
            transfer_key: key(),
            ..ServerOptions::default()
        },
    )?;
    let api = SocketAddr::new(replica_ip, free_port(replica_ip)?);
    let mut replica = start_replica(replica_ip, replica_port, api, knot.addr)?;
    let reader = address(9);
    let at_knot = whole(knot.addr, reader, true)?;
    ensure!(at_knot.len() > 4000, "Knot gives {} records", at_knot.len());
    ensure!(
        whole(replica.addr, reader, false)? == at_knot,
        "the copy differs from Knot's zone"
    );
    let info = replica_info(api, &replica.workspace())?;
    ensure!(
        info.transfer.as_deref() == Some("AXFR") && info.served,
        "{info:?}"
    );

    // A change at Knot: Knot loads it as a difference and sends NOTIFY.
    let changed = zone_text(
        2026112602,
        "7200 3600 1209600 120",
        1990,
        "www 60 IN A 198.18.7.7\nnew 300 IN TXT \"added at the primary\"\n",
    )?
    .replace("www           60 IN A     198.18.0.1\n", "");
    std::fs::write(knot.knot_zone_file(ORIGIN), changed)?;
    knot.knot_reload(ORIGIN)?;
    let took = until_serial(&replica, 2026112602)?;
    println!(
        "Knot -> dnsd replica: change served {} ms after the reload",
        took.as_millis()
    );
    let at_knot = whole(knot.addr, reader, true)?;
    ensure!(
        whole(replica.addr, reader, false)? == at_knot,
        "the copy differs from Knot's zone after the change"
    );
    ensure!(addresses(replica.addr, "www.example.test.")?.contains(&"198.18.7.7".to_string()));
    let info = replica_info(api, &replica.workspace())?;
    ensure!(
        info.transfer.as_deref() == Some("IXFR") && info.transferred == Some(2026112602),
        "the change did not come by IXFR: {info:?}"
    );

    // A crash with the primary gone: the copy is served at once.
    knot.stop()?;
    replica.restart()?;
    ensure!(serial(replica.addr) == Some(2026112602));
    ensure!(
        whole(replica.addr, reader, false)? == at_knot,
        "the copy differs after a restart"
    );
    Ok(())
}

#[test]
fn dnsd_copies_dnsd_refuses_changes_of_its_own_and_expires_without_its_primary() -> Result<()> {
    let bin = cutover_tests::bins::path("dnsd");
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("example.test.zone");
    // Refresh 1 h (NOTIFY must do it), retry 1 s, expire 8 s.
    std::fs::write(&file, zone_text(2026112601, "3600 1 8 120", 200, "")?)?;
    let (primary_ip, replica_ip) = (address(3), address(4));
    let replica_port = free_port(replica_ip)?;
    let keys = format!(
        "[[tsig_key]]\nname = \"{KEY_NAME}\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{SECRET}\"\nzones = [\"{ORIGIN}\"]\n"
    );
    let primary_api = SocketAddr::new(primary_ip, free_port(primary_ip)?);
    let mut primary = dns_peers::start_dnsd(
        &bin,
        primary_ip,
        &ServerOptions {
            zones: vec![(ORIGIN.into(), file.clone())],
            dnsd_toml: format!(
                "{keys}[[secondary]]\naddress = \"{replica_ip}:{replica_port}\"\ntsig_key = \"{KEY_NAME}\"\n\
                 [transfer]\nallow = [\"key:{KEY_NAME}\"]\n\
                 [[service]]\nname = \"svc.example.test.\"\naddresses = [\"198.18.9.20\"]\nttl = 60\n"
            ),
            dnsd_api: Some(primary_api),
            ..ServerOptions::default()
        },
    )?;
    let api = SocketAddr::new(replica_ip, free_port(replica_ip)?);
    let replica = start_replica(replica_ip, replica_port, api, primary.addr)?;
    let reader = address(9);
    ensure!(whole(replica.addr, reader, false)? == whole(primary.addr, reader, true)?);

    // An API change, an RFC 2136 update and a rollback at the primary:
    // each reaches the replica by NOTIFY and IXFR.
    let (status, body) = api_call(
        primary_api,
        &primary.workspace(),
        "PUT",
        "/v1/zones/example.test./rrsets/www.example.test./A",
        Some(r#"{"ttl":60,"records":["198.18.9.9"]}"#),
    )?;
    ensure!(status == 200, "{status} {body}");
    let rrset_change = body;
    let flip = until_serial(&replica, 2026112602)?;
    ensure!(addresses(replica.addr, "www.example.test.")? == ["198.18.9.9"]);
    let update = knsupdate(
        primary.addr,
        Some(Key {
            name: KEY_NAME,
            secret: SECRET,
        }),
        ORIGIN,
        "update add fresh.example.test. 60 A 198.18.9.10",
        false,
    )?;
    ensure!(update == "NOERROR", "the update at the primary: {update}");
    let updated = until_serial(&replica, 2026112603)?;
    ensure!(addresses(replica.addr, "fresh.example.test.")? == ["198.18.9.10"]);
    let info = replica_info(api, &replica.workspace())?;
    ensure!(
        info.transfer.as_deref() == Some("IXFR") && info.transferred == Some(2026112603),
        "{info:?}"
    );
    // A service flip (what `cutover migrate` does) is a new serial too,
    // and an IXFR: the primary keeps the changes it served by name.
    let (status, body) = api_call(
        primary_api,
        &primary.workspace(),
        "PUT",
        "/v1/services/svc.example.test.",
        Some(r#"{"addresses":["198.18.9.21"]}"#),
    )?;
    ensure!(status == 200, "the flip at the primary: {status} {body}");
    let flipped = until_serial(&replica, 2026112604)?;
    ensure!(addresses(replica.addr, "svc.example.test.")? == ["198.18.9.21"]);
    let info = replica_info(api, &replica.workspace())?;
    ensure!(
        info.transfer.as_deref() == Some("IXFR") && info.transferred == Some(2026112604),
        "the flip did not come by IXFR: {info:?}"
    );

    // Back to the API change's generation: the update is undone, under a
    // newer serial, by IXFR (the primary compares the zone it reloaded
    // with the one it served).
    let generation: serde_json::Value = serde_json::from_str(&rrset_change)?;
    let generation = generation["generation"].as_u64().context("no generation")?;
    let (status, body) = api_call(
        primary_api,
        &primary.workspace(),
        "POST",
        &format!("/v1/generations/{generation}/rollback"),
        None,
    )?;
    ensure!(
        status == 200,
        "the rollback at the primary: {status} {body}"
    );
    let rolled = serial(primary.addr).context("the primary's serial")?;
    ensure!(rolled > 2026112604, "the rollback's serial {rolled}");
    let rolled_back = until_serial(&replica, rolled)?;
    ensure!(addresses(replica.addr, "fresh.example.test.")?.is_empty());
    let info = replica_info(api, &replica.workspace())?;
    ensure!(
        info.transfer.as_deref() == Some("IXFR"),
        "the rollback did not come by IXFR: {info:?}"
    );
    ensure!(whole(replica.addr, reader, false)? == whole(primary.addr, reader, true)?);
    println!(
        "dnsd -> dnsd replica: API rrset change {} ms, RFC 2136 update {} ms, service flip {} ms, rollback {} ms",
        flip.as_millis(),
        updated.as_millis(),
        flipped.as_millis(),
        rolled_back.as_millis()
    );

    // The replica's own API and updates refuse the zone, naming the
    // primary; a NOTIFY from a stranger is refused, one from the primary's
    // address without the key is NOTAUTH.
    let (status, body) = api_call(
        api,
        &replica.workspace(),
        "PUT",
        "/v1/zones/example.test./rrsets/www.example.test./A",
        Some(r#"{"ttl":60,"records":["198.18.9.8"]}"#),
    )?;
    ensure!(
        status == 409 && body.contains(&primary.addr.to_string()),
        "a change at the replica: {status} {body}"
    );
    ensure!(addresses(replica.addr, "www.example.test.")? == ["198.18.9.9"]);
    let update = knsupdate(
        replica.addr,
        Some(Key {
            name: KEY_NAME,
            secret: SECRET,
        }),
        ORIGIN,
        "update add other.example.test. 60 A 198.18.9.11",
        false,
    );
    ensure!(
        update
            .as_deref()
            .is_ok_and(|s| s == "REFUSED" || s == "NOTAUTH"),
        "an update at the replica: {update:?}"
    );
    ensure!(
        notify_rcode(replica.addr, address(99))? == 5,
        "a stranger's NOTIFY"
    );
    ensure!(
        notify_rcode(replica.addr, primary_ip)? == 9,
        "an unsigned NOTIFY"
    );

    // The primary goes away: the replica serves its copy until the SOA's
    // expire (8 s) has passed without a refresh, then SERVFAIL; and back
    // once the primary is.
    primary.crash();
    let started = Instant::now();
    while soa_rcode(replica.addr) == "NOERROR" {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the copy never expired; log:\n{}",
            replica.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let expired_after = started.elapsed();
    ensure!(
        soa_rcode(replica.addr) == "SERVFAIL",
        "an expired copy: {}",
        soa_rcode(replica.addr)
    );
    let info = replica_info(api, &replica.workspace())?;
    ensure!(!info.served && info.failure.is_some(), "{info:?}");
    primary.restart()?;
    let back = until_serial(&replica, rolled)?;
    println!(
        "expired {} ms after the primary went away; served again {} ms after it came back",
        expired_after.as_millis(),
        back.as_millis()
    );
    ensure!(whole(replica.addr, reader, false)? == whole(primary.addr, reader, true)?);
    Ok(())
}
