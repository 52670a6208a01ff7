//! Reload: SIGHUP swaps the whole workspace atomically while clients keep
//! asking. A release moves by editing the workspace and sending SIGHUP; a
//! broken zone keeps its previous release while the other zones move on.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use cutover_tests::dig::Query;
use cutover_tests::dnsd::{
    Dnsd, DnsdWorkspace, answer_addresses, header, loopback, query_packet, raw_exchange,
    with_client_subnet,
};

/// The zone of a release: `www` has the release's two addresses.
fn zone(release: [u8; 2]) -> String {
    format!(
        "$TTL 60
@    IN SOA ns1 hostmaster 1 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
www  IN A   198.18.0.{}
www  IN A   198.18.0.{}
",
        release[0], release[1]
    )
}

const OLD: [u8; 2] = [1, 2];
const NEW: [u8; 2] = [3, 4];
const BROKEN: &str =
    "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n  IN NS ns1\nwww IN A 198.18.0.999\n";

fn release_of(addresses: &[Ipv4Addr]) -> Option<[u8; 2]> {
    let set: BTreeSet<u8> = addresses.iter().map(|a| a.octets()[3]).collect();
    [OLD, NEW]
        .into_iter()
        .find(|r| set == BTreeSet::from(*r) && addresses.len() == 2)
}

#[test]
fn a_reload_under_load_answers_every_query_with_the_old_or_the_new_release_never_a_mix()
-> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &zone(OLD))?;
    let dnsd = Dnsd::start(&ws, loopback(30))?;
    let addr = dnsd.addr;

    // A client asking as fast as it can, each query with its own ID and a
    // 1 s timeout, bounded in count and time.
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = done.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = Vec::new();
            let mut unanswered = 0u32;
            let mut id = 0u16;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline && seen.len() < 200_000
            {
                id = id.wrapping_add(1);
                // Every other query carries a Client Subnet option, which
                // dnsd answers on its general path instead of the fast one.
                let mut query = query_packet(id, "www.example.test.", 1, true);
                if id.is_multiple_of(2) {
                    query = with_client_subnet(query);
                }
                match raw_exchange(addr, &query) {
                    Some(reply) => {
                        let ok = header(&reply).is_some_and(|h| h.id == id && h.rcode == 0);
                        let release = answer_addresses(&reply).and_then(|a| release_of(&a));
                        seen.push(release.filter(|_| ok));
                    }
                    None => unanswered += 1,
                }
            }
            (seen, unanswered)
        })
    };

    // Alternate broken and good zone files, ending on the new release: a
    // broken one leaves the zone's previous release in place.
    let steps: [(bool, String); 6] = [
        (false, BROKEN.to_string()),
        (true, zone(NEW)),
        (false, BROKEN.to_string()),
        (true, zone(OLD)),
        (false, "@ IN SOA\n".to_string()),
        (true, zone(NEW)),
    ];
    let mut broken = 0;
    thread::sleep(Duration::from_millis(300));
    for (n, (good, text)) in steps.iter().enumerate() {
        ws.zone("example.test.", text)?;
        dnsd.reload()?;
        dnsd.wait_for_log("reloaded", n + 1)?;
        if !good {
            broken += 1;
            dnsd.wait_for_log("zone not loaded", broken)?;
        }
        thread::sleep(Duration::from_millis(300));
    }
    done.store(true, Ordering::Relaxed);
    let (seen, unanswered) = client.join().expect("the client thread");

    eprintln!("{} queries answered, {unanswered} unanswered", seen.len());
    assert_eq!(unanswered, 0, "every query is answered");
    assert!(
        seen.len() > 100,
        "the client kept asking: {} queries",
        seen.len()
    );
    let bad = seen.iter().filter(|r| r.is_none()).count();
    assert_eq!(bad, 0, "every answer is exactly one release's address set");
    // The answers switch old -> new -> old -> new, each switch once.
    let mut runs: Vec<[u8; 2]> = Vec::new();
    for r in seen.iter().flatten() {
        if runs.last() != Some(r) {
            runs.push(*r);
        }
    }
    assert_eq!(
        runs,
        [OLD, NEW, OLD, NEW],
        "the sequence of releases served"
    );
    Ok(())
}

#[test]
fn a_reload_with_a_broken_zone_keeps_serving_its_previous_version_while_the_others_move_on()
-> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &zone(OLD))?;
    ws.zone("other.test.", &zone(OLD))?;
    let mut dnsd = Dnsd::start(&ws, loopback(31))?;
    ws.zone("example.test.", BROKEN)?;
    ws.zone("other.test.", &zone(NEW))?;
    dnsd.reload()?;
    dnsd.wait_for_log("reloaded", 1)?;
    assert!(
        dnsd.log().contains("example.test.zone:4:"),
        "the log names the file and line:\n{}",
        dnsd.log()
    );
    assert!(dnsd.log().contains("zone not loaded"), "{}", dnsd.log());
    dnsd.assert_running()?;
    let addresses = |name: &str| -> Result<BTreeSet<String>> {
        let m = dnsd.ask(&Query::new(name, "A"))?;
        Ok(m.answer.iter().map(|r| r.rdata.clone()).collect())
    };
    let set = |r: [u8; 2]| BTreeSet::from(r.map(|o| format!("198.18.0.{o}")));
    assert_eq!(
        addresses("www.example.test.")?,
        set(OLD),
        "the broken zone's last good version"
    );
    assert_eq!(
        addresses("www.other.test.")?,
        set(NEW),
        "the other zone moved on"
    );

    // Fixed, it moves on too; broken again, it keeps the fixed version.
    ws.zone("example.test.", &zone(NEW))?;
    dnsd.reload()?;
    dnsd.wait_for_log("reloaded", 2)?;
    assert_eq!(addresses("www.example.test.")?, set(NEW));
    ws.zone("example.test.", BROKEN)?;
    dnsd.reload()?;
    dnsd.wait_for_log("reloaded", 3)?;
    assert_eq!(addresses("www.example.test.")?, set(NEW));
    Ok(())
}

#[test]
fn moving_a_service_to_new_hosts_is_a_toml_edit_and_a_sighup() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &zone(OLD))?;
    let service = |a: &str| {
        format!("[[service]]\nname = \"www.example.test\"\naddresses = [\"{a}\"]\nttl = 60\n")
    };
    ws.toml(&service("198.18.5.1"))?;
    let dnsd = Dnsd::start(&ws, loopback(32))?;
    let first = dnsd.ask(&Query::new("www.example.test.", "A"))?;
    assert_eq!(first.answer[0].rdata, "198.18.5.1", "{first}");
    ws.toml(&service("198.18.6.1"))?;
    dnsd.reload()?;
    dnsd.wait_for_log("reloaded", 1)?;
    let moved = dnsd.ask(&Query::new("www.example.test.", "A"))?;
    assert_eq!(moved.answer.len(), 1, "{moved}");
    assert_eq!(moved.answer[0].rdata, "198.18.6.1", "{moved}");
    Ok(())
}
