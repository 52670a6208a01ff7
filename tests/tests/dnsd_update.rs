//! Dynamic DNS updates (RFC 2136) signed with TSIG: an operator's
//! `knsupdate`/`nsupdate` changes a zone, the change is served at once, is
//! a new workspace generation and survives a restart; updates without the
//! right key, outside the zone, or whose prerequisites fail change nothing.

use anyhow::{Result, ensure};
use cutover_tests::bins;
use cutover_tests::dnsd::DnsdWorkspace;
use cutover_tests::dnsd_update::{Key, UpdateDnsd, loopback};

const EXAMPLE: &str = "$TTL 60
@    IN SOA ns1 hostmaster 2026112601 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
pool IN A   198.18.0.10
pool IN A   198.18.0.11
";

const OTHER: &str = "$TTL 60
@    IN SOA ns1 hostmaster 7 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.54
";

/// `ops-key.` may update example.test.; `other-key.` only other.test.;
/// `www` is a service whose addresses belong to dnsd.toml.
const DNSD_TOML: &str = "[[service]]
name = \"www.example.test.\"
addresses = [\"198.18.0.2\"]
ttl = 60

[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"example.test.\"]

[[tsig_key]]
name = \"other-key.\"
algorithm = \"hmac-sha256\"
secret = \"b3RoZXIta2V5LXNlY3JldC1vdGhlci1rZXktc2VjcmV0\"
zones = [\"other.test.\"]
";

const OPS: Key = Key {
    name: "ops-key.",
    secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
};
const OTHER_KEY: Key = Key {
    name: "other-key.",
    secret: "b3RoZXIta2V5LXNlY3JldC1vdGhlci1rZXktc2VjcmV0",
};

/// The peers these tests drive; `cargo xtask setup` installs them.
fn tools(more: &[&str]) -> Result<()> {
    for tool in ["knsupdate", "nsupdate", "kdig"].iter().chain(more) {
        ensure!(
            bins::have(tool),
            "{tool} is not installed (knot-dnsutils, bind9-dnsutils, curl: run `cargo xtask setup`)"
        );
    }
    Ok(())
}

fn workspace() -> Result<DnsdWorkspace> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", EXAMPLE)?;
    ws.zone("other.test.", OTHER)?;
    ws.toml(DNSD_TOML)?;
    Ok(ws)
}

#[test]
fn a_signed_update_is_served_at_once_is_a_generation_and_survives_a_restart() -> Result<()> {
    tools(&[])?;
    let ws = workspace()?;
    let mut dnsd = UpdateDnsd::start(&ws, loopback(1))?;
    let result = (|| -> Result<()> {
        ensure!(dnsd.serial("example.test.")? == 2026112601);
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add new.example.test. 60 A 198.18.0.7",
            false,
        )?;
        ensure!(status == "NOERROR", "add over UDP: {status}");
        ensure!(dnsd.kdig("new.example.test.", "A")? == ["198.18.0.7"]);
        ensure!(
            dnsd.serial("example.test.")? == 2026112602,
            "the serial is bumped"
        );

        // The update is one generation (after the import of the workspace
        // as it was found), named for its key and zone.
        let state = dnsd.state()?;
        ensure!(state.generations.len() == 2, "{:?}", state.generations);
        let message = &state.generations[1].1;
        ensure!(
            message.contains("ops-key.") && message.contains("example.test."),
            "{message}"
        );
        // The journal holds the change at once; the zone file is rewritten
        // from it right after (`[history] zonefile_sync = 0`).
        let in_file = || {
            dnsd.state().is_ok_and(|s| {
                s.zones
                    .iter()
                    .any(|(_, text)| text.contains("new.example.test. 60 IN A 198.18.0.7"))
            })
        };
        ensure!(
            cutover_tests::process::wait_until(std::time::Duration::from_secs(10), in_file),
            "the zone file holds the record: {:?}",
            dnsd.state()?.zones
        );

        // Over TCP too, and the response is signed (knsupdate checks it).
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add new.example.test. 60 AAAA 2001:2::7\nupdate add new.example.test. 60 TXT \"added over tcp\"",
            true,
        )?;
        ensure!(status == "NOERROR", "add over TCP: {status}");
        ensure!(dnsd.kdig("new.example.test.", "AAAA")? == ["2001:2::7"]);
        ensure!(dnsd.state()?.generations.len() == 3);

        dnsd.restart(&ws)?;
        ensure!(
            dnsd.kdig("new.example.test.", "A")? == ["198.18.0.7"],
            "after a restart"
        );
        ensure!(dnsd.kdig("new.example.test.", "TXT")? == ["\"added over tcp\""]);
        ensure!(dnsd.serial("example.test.")? == 2026112603);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn an_update_deletes_an_rrset_a_record_or_a_name() -> Result<()> {
    tools(&[])?;
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(2))?;
    let result = (|| -> Result<()> {
        ensure!(dnsd.kdig("pool.example.test.", "A")? == ["198.18.0.10", "198.18.0.11"]);
        let one = dnsd.nsupdate(
            Some(OPS),
            "example.test.",
            "update delete pool.example.test. A 198.18.0.10",
        )?;
        ensure!(one == "NOERROR", "{one}");
        ensure!(dnsd.kdig("pool.example.test.", "A")? == ["198.18.0.11"]);

        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add pool.example.test. 60 TXT \"pool\"\nupdate delete pool.example.test. A",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(
            dnsd.kdig("pool.example.test.", "A")?.is_empty(),
            "the A RRset is gone"
        );
        ensure!(dnsd.kdig("pool.example.test.", "TXT")? == ["\"pool\""]);

        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update delete pool.example.test.",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(
            dnsd.kdig("pool.example.test.", "TXT")?.is_empty(),
            "the name is gone"
        );

        // The apex SOA and NS cannot be deleted: the update succeeds as a
        // no-op (RFC 2136 §3.4.2.4) and makes no generation.
        let before = dnsd.state()?;
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update delete example.test. SOA\nupdate delete example.test. NS",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(
            dnsd.state()? == before,
            "a no-op update changed the workspace"
        );
        ensure!(dnsd.kdig("example.test.", "NS")? == ["ns1.example.test."]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn failed_prerequisites_change_nothing() -> Result<()> {
    tools(&[])?;
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(3))?;
    let result = (|| -> Result<()> {
        // A first update, so that there is history to keep unchanged.
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add a.example.test. 60 A 198.18.0.20",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        let before = dnsd.state()?;
        let cases = [
            ("prereq nxrrset pool.example.test. A", "YXRRSET"),
            ("prereq yxrrset missing.example.test. A", "NXRRSET"),
            ("prereq yxrrset pool.example.test. A 198.18.0.10", "NXRRSET"),
            ("prereq yxdomain missing.example.test.", "NXDOMAIN"),
            ("prereq nxdomain pool.example.test.", "YXDOMAIN"),
        ];
        for (prereq, expected) in cases {
            let commands = format!("{prereq}\nupdate add b.example.test. 60 A 198.18.0.21");
            let status = dnsd.knsupdate(Some(OPS), "example.test.", &commands, false)?;
            ensure!(
                status == expected,
                "{prereq}: {status}, expected {expected}"
            );
            ensure!(dnsd.state()? == before, "{prereq} changed the workspace");
        }
        ensure!(dnsd.kdig("b.example.test.", "A")?.is_empty());

        // Prerequisites that hold let the update through.
        let commands = "prereq yxrrset pool.example.test. A 198.18.0.10\nprereq yxrrset pool.example.test. A 198.18.0.11\nprereq nxdomain b.example.test.\nupdate add b.example.test. 60 A 198.18.0.21";
        let status = dnsd.knsupdate(Some(OPS), "example.test.", commands, false)?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(dnsd.kdig("b.example.test.", "A")? == ["198.18.0.21"]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn updates_without_the_right_key_or_outside_the_zone_change_nothing() -> Result<()> {
    tools(&[])?;
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(4))?;
    let result = (|| -> Result<()> {
        let before = dnsd.state()?;
        let add = "update add evil.example.test. 60 A 198.18.0.66";
        let unknown = Key {
            name: "stranger.",
            secret: OPS.secret,
        };
        let wrong_secret = Key {
            name: "ops-key.",
            secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWc=",
        };
        let cases: [(&str, Option<Key>, &str, &str, &str); 7] = [
            ("unsigned", None, "example.test.", add, "REFUSED"),
            (
                "unknown key",
                Some(unknown),
                "example.test.",
                add,
                "NOTAUTH(BADKEY)",
            ),
            (
                "wrong secret",
                Some(wrong_secret),
                "example.test.",
                add,
                "NOTAUTH(BADSIG)",
            ),
            (
                "another zone's key",
                Some(OTHER_KEY),
                "example.test.",
                add,
                "REFUSED",
            ),
            (
                "a name outside the zone",
                Some(OPS),
                "example.test.",
                "update add evil.other.test. 60 A 198.18.0.66",
                "NOTZONE",
            ),
            (
                "a zone not served",
                Some(OPS),
                "elsewhere.test.",
                "update add evil.elsewhere.test. 60 A 198.18.0.66",
                "NOTAUTH",
            ),
            (
                "a service's address",
                Some(OPS),
                "example.test.",
                "update add www.example.test. 60 A 198.18.0.66",
                "REFUSED",
            ),
        ];
        for (what, key, zone, commands, expected) in cases {
            let status = dnsd.nsupdate(key, zone, commands)?;
            ensure!(status == expected, "{what}: {status}, expected {expected}");
            ensure!(dnsd.state()? == before, "{what} changed the workspace");
        }
        ensure!(dnsd.kdig("evil.example.test.", "A")?.is_empty());
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);
        ensure!(before.generations.is_empty(), "{:?}", before.generations);

        // The key of other.test. works there, and only there.
        let status = dnsd.nsupdate(
            Some(OTHER_KEY),
            "other.test.",
            "update add ok.other.test. 60 A 198.18.0.30",
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(dnsd.kdig("ok.other.test.", "A")? == ["198.18.0.30"]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

/// An update signed long ago (a replay, or a client with a wrong clock):
/// its MAC is good but its time is outside the fudge, so dnsd answers
/// NOTAUTH with TSIG error BADTIME, signed, telling its own time, and
/// changes nothing. knsupdate always signs with the current time, so the
/// request is built here: `update add t.example.test. 60 A 198.18.0.7`
/// signed by `ops-key.` at 1764000000 (2025-11-24) with fudge 300; the MAC
/// was computed with Python's `hmac` (see dnsd's tsig.rs tests).
#[test]
fn an_update_signed_outside_the_fudge_is_badtime_and_changes_nothing() -> Result<()> {
    use cutover_tests::dnsd::{header, raw_exchange};
    tools(&[])?;
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(5))?;
    let result = (|| -> Result<()> {
        let before = dnsd.state()?;
        let mut m = vec![0x12, 0x34, 0x28, 0x00, 0, 1, 0, 0, 0, 1, 0, 1];
        m.extend_from_slice(b"\x07example\x04test\x00\x00\x06\x00\x01");
        m.extend_from_slice(b"\x01t\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04");
        m.extend_from_slice(&[198, 18, 0, 7]);
        m.extend_from_slice(b"\x07ops-key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x3d");
        m.extend_from_slice(b"\x0bhmac-sha256\x00");
        m.extend_from_slice(&1_764_000_000u64.to_be_bytes()[2..]);
        m.extend_from_slice(&[0x01, 0x2c, 0x00, 0x20]);
        let mac = "54569c8613b5c153cf12974e6e1043dcb3b1e42610ca278171038fdae5781bfe";
        for i in (0..mac.len()).step_by(2) {
            m.push(u8::from_str_radix(&mac[i..i + 2], 16)?);
        }
        m.extend_from_slice(&[0x12, 0x34, 0, 0, 0, 0]);

        let reply = raw_exchange(dnsd.dns, &m).ok_or_else(|| anyhow::anyhow!("no reply"))?;
        let h = header(&reply).ok_or_else(|| anyhow::anyhow!("no header"))?;
        ensure!(h.id == 0x1234 && h.qr, "{h:?}");
        ensure!(h.rcode == 9, "NOTAUTH expected: {h:?}");
        // The reply ends with the TSIG record: ... MAC, original ID, error,
        // other length, other data (our clock, 6 bytes).
        let n = reply.len();
        let word = |at: usize| u16::from_be_bytes([reply[at], reply[at + 1]]);
        ensure!(
            word(n - 10) == 18,
            "TSIG error BADTIME expected: {reply:02x?}"
        );
        ensure!(
            word(n - 8) == 6,
            "the server's time in Other Data: {reply:02x?}"
        );
        ensure!(
            word(n - 46) == 32,
            "a signed reply (MAC of 32 bytes): {reply:02x?}"
        );
        ensure!(
            dnsd.state()? == before,
            "a stale update changed the workspace"
        );
        ensure!(dnsd.kdig("t.example.test.", "A")?.is_empty());
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

/// dnsd.toml's `[api]` says where the control API listens and which token
/// file guards it, with no flag on the command line; `enabled = false`
/// turns it off (and no token file is made for it).
#[test]
fn the_api_section_of_dnsd_toml_places_and_guards_the_api() -> Result<()> {
    use cutover_tests::dns_peers::free_port;
    use std::net::{SocketAddr, TcpStream};
    use std::process::Command;
    use std::time::Duration;
    tools(&["curl"])?;
    let ip = loopback(6);
    let dns = SocketAddr::new(ip, free_port(ip)?);
    let mut api = SocketAddr::new(ip, free_port(ip)?);
    while api.port() == dns.port() {
        api = SocketAddr::new(ip, free_port(ip)?);
    }

    let ws = workspace()?;
    std::fs::write(ws.path().join("api.token"), "token-from-dnsd-toml\n")?;
    ws.toml(&format!(
        "{DNSD_TOML}\n[api]\nlisten = \"{api}\"\ntoken_file = \"api.token\"\n"
    ))?;
    let dnsd = UpdateDnsd::start_with_config_api(&ws, dns, api)?;
    let result = (|| -> Result<()> {
        let health = |token: &str| -> Result<String> {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                ])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .arg(format!("http://{api}/v1/health"))
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        ensure!(health("token-from-dnsd-toml")? == "200");
        ensure!(health("another-token")? == "401");
        ensure!(!ws.path().join(".cutover/api-token").exists());
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))?;
    drop(dnsd);

    let ws = workspace()?;
    ws.toml(&format!(
        "{DNSD_TOML}\n[api]\nlisten = \"{api}\"\nenabled = false\n"
    ))?;
    let dnsd = UpdateDnsd::start_with_config_api(&ws, dns, dns)?;
    ensure!(
        TcpStream::connect_timeout(&api, Duration::from_millis(500)).is_err(),
        "the API listens although dnsd.toml turned it off:\n{}",
        dnsd.log()
    );
    ensure!(!ws.path().join(".cutover/api-token").exists());
    Ok(())
}

/// A captured update, once accepted, is refused when played again —
/// byte for byte or with another message ID, after another change, and
/// after a restart (the MACs accepted are kept on disk) — while a client
/// whose clock runs ahead locks no other out, and a fudge claimed past
/// 300 s is not honoured (RFC 8945 §5.2.3, §10).
#[test]
fn a_captured_update_is_refused_when_replayed_even_after_a_restart() -> Result<()> {
    use cutover_tests::dnsd::{encode_name, header, raw_exchange};
    use cutover_tests::dnsd_update::{
        capture_knsupdate, sign, sign_with_fudge, unix_now, update_packet,
    };
    tools(&[])?;
    let ws = workspace()?;
    let mut dnsd = UpdateDnsd::start(&ws, loopback(7))?;
    let result = (|| -> Result<()> {
        let captured = capture_knsupdate(
            loopback(7),
            OPS,
            "example.test.",
            "update add replayed.example.test. 60 A 198.18.0.40",
        )?;
        let rcode = |dns, packet: &[u8]| -> Result<u8> {
            let reply = raw_exchange(dns, packet).ok_or_else(|| anyhow::anyhow!("no reply"))?;
            Ok(header(&reply)
                .ok_or_else(|| anyhow::anyhow!("no header"))?
                .rcode)
        };
        ensure!(rcode(dnsd.dns, &captured)? == 0, "the update is accepted");
        ensure!(dnsd.kdig("replayed.example.test.", "A")? == ["198.18.0.40"]);
        // Another change moves the name on; the replay would move it back.
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update delete replayed.example.test. A\nupdate add replayed.example.test. 60 A 198.18.0.41",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        let before = dnsd.state()?;
        ensure!(
            rcode(dnsd.dns, &captured)? == 9,
            "the replay is NOTAUTH (BADTIME)"
        );
        let mut new_id = captured.clone();
        new_id[0] ^= 0x5a;
        ensure!(
            rcode(dnsd.dns, &new_id)? == 9,
            "the replay with another ID too"
        );
        ensure!(dnsd.state()? == before, "a replay changed the workspace");
        ensure!(dnsd.kdig("replayed.example.test.", "A")? == ["198.18.0.41"]);

        dnsd.restart(&ws)?;
        ensure!(
            rcode(dnsd.dns, &captured)? == 9,
            "the replay after a restart"
        );
        ensure!(dnsd.kdig("replayed.example.test.", "A")? == ["198.18.0.41"]);

        // A clock 250 s ahead, within the fudge: accepted, and a correct
        // clock's update right after it too.
        let now = unix_now();
        let mut owner = Vec::new();
        encode_name(&mut owner, "ahead.example.test.");
        let add =
            |id, last: u8| update_packet(id, "example.test.", &owner, 1, 1, 4, &[198, 18, 0, last]);
        ensure!(
            rcode(dnsd.dns, &sign(&add(1, 50), OPS, now + 250)?)? == 0,
            "signed 250 s ahead"
        );
        ensure!(
            rcode(dnsd.dns, &sign(&add(2, 51), OPS, unix_now())?)? == 0,
            "then signed now"
        );
        // A fudge of 65535 claimed by a request signed an hour ago is
        // capped at 300 s: BADTIME.
        let old = sign_with_fudge(&add(3, 52), OPS, now - 3600, 65535)?;
        ensure!(
            rcode(dnsd.dns, &old)? == 9,
            "an hour old with a fudge of 65535"
        );
        let mut served = dnsd.kdig("ahead.example.test.", "A")?;
        served.sort();
        ensure!(served == ["198.18.0.50", "198.18.0.51"], "{served:?}");
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

/// Real updates are all answered while bogus ones (a MAC that does not
/// verify) flood in: those are refused after a key lookup and an HMAC,
/// without taking the turns of signed ones.
#[test]
fn real_updates_are_answered_during_a_flood_of_bogus_signatures() -> Result<()> {
    use cutover_tests::dnsd::encode_name;
    use cutover_tests::dnsd_update::{sign, unix_now, update_packet};
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    tools(&[])?;
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(9))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, dns) = (Arc::clone(&stop), dnsd.dns);
        std::thread::spawn(move || -> Result<u64> {
            let socket = UdpSocket::bind((loopback(9), 0))?;
            socket.set_nonblocking(true)?;
            let mut owner = Vec::new();
            encode_name(&mut owner, "bogus.example.test.");
            let mut sent = 0u64;
            let started = std::time::Instant::now();
            // Bounded in count and time, whatever the test does.
            while !stop.load(Ordering::Relaxed)
                && sent < 2_000_000
                && started.elapsed() < std::time::Duration::from_secs(60)
            {
                let packet = update_packet(
                    sent as u16,
                    "example.test.",
                    &owner,
                    1,
                    1,
                    4,
                    &[198, 18, 0, 9],
                );
                let mut forged = sign(&packet, OPS, unix_now())?;
                let n = forged.len();
                forged[n - 7] ^= 1;
                if socket.send_to(&forged, dns).is_ok() {
                    sent += 1;
                }
            }
            Ok(sent)
        })
    };
    let result = (|| -> Result<()> {
        // Over TCP: a UDP flood past what any server takes fills the
        // socket's queue, and the kernel drops what does not fit, real
        // updates included; what is asked of dnsd is that the bogus ones
        // it does take never keep a real one from its turn.
        for i in 0..10 {
            let add = format!("update add real{i}.example.test. 60 A 198.18.3.{i}");
            let status = dnsd.knsupdate(Some(OPS), "example.test.", &add, true)?;
            ensure!(
                status == "NOERROR",
                "real update {i} during the flood: {status}"
            );
        }
        // The answers are read once the flood is over: kdig asks over UDP,
        // and a UDP query is as likely as a real update to be among the
        // datagrams the kernel drops from a full socket queue.
        stop.store(true, Ordering::Relaxed);
        for i in 0..10 {
            ensure!(
                dnsd.kdig(&format!("real{i}.example.test."), "A")? == [format!("198.18.3.{i}")]
            );
        }
        ensure!(dnsd.kdig("bogus.example.test.", "A")?.is_empty());
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let sent = flood
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;
    println!("{sent} bogus updates sent meanwhile");
    result.map_err(|e| e.context(dnsd.log()))
}

/// An operator's API change and a colleague's dynamic update arriving at
/// the same moment both survive: they take turns on the workspace, so
/// neither rewrites the zone from a copy that misses the other.
#[test]
fn api_changes_and_dynamic_updates_at_once_both_survive() -> Result<()> {
    use cutover_tests::dnsd_api::ApiDnsd;
    use cutover_tests::dnsd_update::knsupdate;
    tools(&["curl"])?;
    const N: usize = 8;
    let ws = workspace()?;
    let dnsd = ApiDnsd::start(&ws, loopback(8), &[])?;
    let result = (|| -> Result<()> {
        let token = dnsd.default_token()?;
        let dns = dnsd.dns;
        let updates = std::thread::spawn(move || -> Result<()> {
            for i in 0..N {
                let add = format!("update add upd{i}.example.test. 60 A 198.18.2.{i}");
                let status = knsupdate(dns, Some(OPS), "example.test.", &add, false)?;
                ensure!(status == "NOERROR", "update {i}: {status}");
            }
            Ok(())
        });
        for i in 0..N {
            let path = format!("/v1/zones/example.test./rrsets/api{i}.example.test./A");
            let body = format!("{{\"ttl\":60,\"records\":[\"198.18.3.{i}\"]}}");
            let r = dnsd.call("PUT", &path, Some(&token), Some(&body))?;
            ensure!(r.status == 200, "API change {i}: {r:?}");
        }
        updates
            .join()
            .map_err(|_| anyhow::anyhow!("the update thread panicked"))??;
        for i in 0..N {
            ensure!(dnsd.kdig(&format!("upd{i}.example.test."), "A")? == [format!("198.18.2.{i}")]);
            ensure!(dnsd.kdig(&format!("api{i}.example.test."), "A")? == [format!("198.18.3.{i}")]);
        }
        let generations = cutover_tests::dnsd_update::WorkspaceState::read(ws.path())?.generations;
        ensure!(generations.len() == 2 * N + 1, "{generations:?}");
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

/// A key whose secret lives in a file outside the workspace
/// (`secret_file`) signs updates like an inline one, the secret never
/// reaches the workspace's generations, and rotating the file changes the
/// secret dnsd checks at the next update.
#[test]
fn a_secret_kept_in_a_file_outside_the_workspace_signs_updates_and_stays_out_of_generations()
-> Result<()> {
    use cutover_tests::dnsd_update::files_containing;
    const FIRST: &str = "c2VjcmV0LWZyb20tYS1maWxlLWtlcHQtb3V0c2lkZSE=";
    const ROTATED: &str = "cm90YXRlZC1zZWNyZXQtZnJvbS1hLWZpbGUta2VwdCE=";
    tools(&[])?;
    let secret = tempfile::NamedTempFile::new()?;
    // As `openssl rand -base64 32 > FILE` writes it: with a newline.
    std::fs::write(secret.path(), format!("{FIRST}\n"))?;
    let ws = workspace()?;
    ensure!(!secret.path().starts_with(ws.path()));
    ws.toml(&format!(
        "{DNSD_TOML}
[[tsig_key]]
name = \"file-key.\"
algorithm = \"hmac-sha256\"
secret_file = {:?}
zones = [\"example.test.\"]
",
        secret.path().display().to_string()
    ))?;
    let dnsd = UpdateDnsd::start(&ws, loopback(9))?;
    let result = (|| -> Result<()> {
        let first = Key {
            name: "file-key.",
            secret: FIRST,
        };
        let status = dnsd.knsupdate(
            Some(first),
            "example.test.",
            "update add filed.example.test. 60 A 198.18.0.9",
            false,
        )?;
        ensure!(
            status == "NOERROR",
            "signed with the file's secret: {status}"
        );
        ensure!(dnsd.kdig("filed.example.test.", "A")? == ["198.18.0.9"]);
        let wrong = Key {
            name: "file-key.",
            secret: OPS.secret,
        };
        let add = "update add wrong.example.test. 60 A 198.18.0.66";
        let status = dnsd.nsupdate(Some(wrong), "example.test.", add)?;
        ensure!(status == "NOTAUTH(BADSIG)", "another secret: {status}");

        // Rotation: the file gets a new secret (written aside, renamed
        // over); the next update must use it, the old one no longer works.
        let staged = secret.path().with_extension("new");
        std::fs::write(&staged, format!("{ROTATED}\n"))?;
        std::fs::rename(&staged, secret.path())?;
        let status = dnsd.nsupdate(Some(first), "example.test.", add)?;
        ensure!(
            status == "NOTAUTH(BADSIG)",
            "the old secret after rotation: {status}"
        );
        let rotated = Key {
            name: "file-key.",
            secret: ROTATED,
        };
        let status = dnsd.knsupdate(
            Some(rotated),
            "example.test.",
            "update add rotated.example.test. 60 A 198.18.0.10",
            true,
        )?;
        ensure!(
            status == "NOERROR",
            "signed with the rotated secret: {status}"
        );
        ensure!(dnsd.kdig("rotated.example.test.", "A")? == ["198.18.0.10"]);
        ensure!(dnsd.kdig("wrong.example.test.", "A")?.is_empty());

        // The generations hold dnsd.toml (naming the file), never the
        // secret: neither the copies of whole files nor the journal.
        let history = ws.path().join(".cutover");
        ensure!(dnsd.state()?.generations.len() == 3);
        let whole = std::fs::read_dir(history.join("generations"))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().join("GENERATION.toml").is_file())
            })
            .count();
        let copies = files_containing(&history.join("generations"), "secret_file")?;
        ensure!(
            whole >= 1 && copies.len() == whole,
            "dnsd.toml in each copy ({whole}): {copies:?}"
        );
        for leaked in [FIRST, ROTATED] {
            let found = files_containing(&history, leaked)?;
            ensure!(found.is_empty(), "the secret is in {found:?}");
        }

        // A secret file gone bad is a broken dnsd.toml: updates are refused
        // and change nothing, queries are still answered.
        std::fs::write(secret.path(), "not base64!\n")?;
        let before = dnsd.state()?;
        let status = dnsd.knsupdate(Some(rotated), "example.test.", add, false)?;
        ensure!(status == "SERVFAIL", "with a broken secret file: {status}");
        ensure!(
            dnsd.state()? == before,
            "a refused update changed the workspace"
        );
        ensure!(dnsd.kdig("rotated.example.test.", "A")? == ["198.18.0.10"]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}
