//! The zone journal (issue 10), end to end, through dnsd's API: a change
//! costs an append to the zone's journal; the zone file is rewritten from
//! it in the background and the journal compacted past its size limit.
//! Killed at every step of that (dnsd kills itself there:
//! `CUTOVER_FAULT=after:STEP:N`, no timing involved) or out of disk at
//! every level that matters, `dnsd check` passes and dnsd starts and
//! serves the last acknowledged change; a rollback reaches back across a
//! compaction to every generation still held, and refuses older ones; the
//! journal stays within its limit.
//!
//! Needs root (tmpfs); dnsd is `target/<profile>/dnsd` (`cargo build --bins`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cutover_control_api::contract::Change;
use cutover_tests::dnsd::{Dnsd, DnsdWorkspace, check, copy_of, loopback};
use cutover_tests::dnsd_api::ApiDnsd;
use cutover_tests::process::wait_until;
use cutover_tests::tmpfs::Tmpfs;
use cutover_workspace::Workspace;

/// The journal's hook points (`workspace/src/fault.rs`): a change's
/// number, its frame; a zone file rewritten from the journal; a
/// checkpoint at a compaction.
const STEPS: [&str; 4] = ["reserve", "journal", "sync", "compact"];

/// The smallest journal dnsd allows, so that a few changes compact it.
const MAX_JOURNAL: u64 = 64 << 10;

const ORIGIN: &str = "example.test.";

fn toml() -> String {
    format!("[history]\nzonefile_sync = 0\njournal_max_bytes = {MAX_JOURNAL}\n")
}

fn zone() -> String {
    let mut text = String::from(
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n  IN NS ns1\nns1 IN A 198.18.0.53\n",
    );
    for r in version(0) {
        text.push_str(&format!("app IN TXT {r}\n"));
    }
    text
}

/// Version `v` of `app`'s TXT RRset: sixteen records of 200 octets, so that
/// a change (the old set out, the new in) is about 8 KB of journal.
fn version(v: u32) -> Vec<String> {
    (0..16)
        .map(|j| format!("\"v{v}-{j:02}-{}\"", "x".repeat(192)))
        .collect()
}

/// The version of `app` dnsd at `dns` serves (over TCP: 3 KB of TXT).
fn served(dns: std::net::SocketAddr) -> Result<u32> {
    let out = Command::new("kdig")
        .arg(format!("@{}", dns.ip()))
        .args([
            "-p",
            &dns.port().to_string(),
            "+short",
            "+tcp",
            "+timeout=2",
        ])
        .args(["app.example.test.", "TXT"])
        .output()
        .context("kdig")?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let first = lines.first().context("no TXT for app")?;
    let v = first
        .trim_start_matches('"')
        .strip_prefix('v')
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{first:?}"))?;
    ensure!(
        lines.len() == 16 && lines.iter().all(|l| l.starts_with(&format!("\"v{v}-"))),
        "a mix of versions: {lines:?}"
    );
    Ok(v)
}

/// Sets `app` to version `v` through the API; the generation, or `None`
/// when dnsd did not acknowledge it (it died).
fn put(dnsd: &ApiDnsd, token: &str, v: u32) -> Result<Option<u64>> {
    let body = serde_json::json!({ "ttl": 60, "records": version(v) }).to_string();
    let path = format!("/v1/zones/{ORIGIN}/rrsets/app.{ORIGIN}/TXT");
    match dnsd.call("PUT", &path, Some(token), Some(&body)) {
        Ok(r) if r.status == 200 => Ok(r.json::<Change>()?.generation),
        Ok(r) if r.status == 500 && r.body.contains("No space left on device") => Ok(None),
        Ok(r) => bail!("PUT version {v}: {r:?}"),
        Err(_) => Ok(None),
    }
}

fn workspace(root: &Path) -> Result<Workspace> {
    Workspace::open(root).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Whether dnsd's background work after the changes up to version `v` is
/// done: the zone file rewritten with it, the journal within its limit.
fn settled(root: &Path, v: u32) -> bool {
    let file = fs::read_to_string(root.join("zones/example.test.zone")).unwrap_or_default();
    let journal = workspace(root).map_or(u64::MAX, |ws| ws.journal(ORIGIN).size());
    file.contains(&format!("\"v{v}-00-")) && journal <= MAX_JOURNAL
}

/// What a restart makes of a workspace dnsd died on: `dnsd check` passes,
/// dnsd serves one of `versions`, and takes the next change.
fn recovered(root: &DnsdWorkspace, versions: &[u32], ip: u8) -> Result<u32> {
    let out = check(root.path())?;
    ensure!(
        out.status.success(),
        "dnsd check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dnsd = ApiDnsd::start(root, loopback(ip), &[])?;
    let v = served(dnsd.dns)?;
    ensure!(
        versions.contains(&v),
        "serves version {v}, not one of {versions:?}; log:\n{}",
        dnsd.log()
    );
    let token = dnsd.default_token()?;
    ensure!(
        put(&dnsd, &token, 99)?.is_some(),
        "a change after the restart; log:\n{}",
        dnsd.log()
    );
    ensure!(served(dnsd.dns)? == 99);
    Ok(v)
}

#[test]
fn a_change_killed_at_every_step_of_the_journal_leaves_the_last_acknowledged_one_served()
-> Result<()> {
    const CHANGES: u32 = 10;
    let template = DnsdWorkspace::new()?;
    template.toml(&toml())?;
    template.zone(ORIGIN, &zone())?;
    let mut points: Vec<String> = Vec::new();
    for step in STEPS {
        for nth in 1.. {
            let at = format!("after:{step}:{nth}");
            let run = copy_of(template.path())?;
            let mut dnsd =
                ApiDnsd::start_with_env(&run, loopback(170), &[], &[("CUTOVER_FAULT", &at)])?;
            let token = dnsd.default_token()?;
            let mut acked = 0;
            for v in 1..=CHANGES {
                if put(&dnsd, &token, v)?.is_none() {
                    break;
                }
                acked = v;
            }
            // The rewrite and the compaction follow in the background:
            // either they finish or the fault stops dnsd in one.
            let done = || dnsd.exited() || settled(run.path(), CHANGES);
            ensure!(
                wait_until(Duration::from_secs(20), done),
                "{at}: neither done nor dead"
            );
            if !dnsd.exited() {
                // The step has fewer occurrences: all went through. A
                // query may time out while the background compaction holds
                // the (busy, two-core) machine: asked again, not failed.
                ensure!(acked == CHANGES, "{at}: acknowledged {acked}");
                ensure!(
                    wait_until(Duration::from_secs(10), || served(dnsd.dns)
                        .is_ok_and(|v| v == CHANGES)),
                    "{at}: serves {:?}, not {CHANGES}",
                    served(dnsd.dns)
                );
                break;
            }
            dnsd.kill();
            points.push(at.clone());
            // Died after a frame was durable but before the answer: that
            // change may be served too, never an older one.
            let v = recovered(&run, &[acked, acked + 1], 171).with_context(|| at.clone())?;
            println!("{at}: acknowledged {acked}, serves {v}");
        }
    }
    for step in STEPS {
        ensure!(
            points.iter().any(|p| p.split(':').nth(1) == Some(step)),
            "no crash at {step}: {points:?}"
        );
    }
    println!("{} fault points, each recovered", points.len());
    Ok(())
}

/// Pages of the tmpfs, as the free-space levels count them.
const PAGE: u64 = 4096;

#[test]
fn a_full_disk_refuses_a_change_whole_and_the_last_acknowledged_one_survives() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("cutover-jfull").tempdir()?;
    let disk = Tmpfs::mount(&scratch.path().join("disk"), 4 << 20)?;
    let ws = DnsdWorkspace::at(disk.path())?;
    // The change's own path on a full disk: no rewrite in the background
    // meanwhile (the crash test covers it).
    ws.toml(&format!(
        "[history]\nzonefile_sync = 3600\njournal_max_bytes = {MAX_JOURNAL}\n"
    ))?;
    ws.zone(ORIGIN, &zone())?;
    let mut dnsd = ApiDnsd::start(&ws, loopback(172), &[])?;
    let token = dnsd.default_token()?;
    // Taken into the journal's keeping with room to spare.
    ensure!(put(&dnsd, &token, 1)?.is_some());
    let mut acked = 1;
    let (mut refused, mut made) = (Vec::new(), Vec::new());
    for free in 0..=8u64 {
        let v = acked + 1;
        let filler = disk.leave_free(free * PAGE)?;
        match put(&dnsd, &token, v)? {
            Some(_) => {
                acked = v;
                made.push(free);
            }
            None => refused.push(free),
        }
        let at = format!("{free} pages free");
        ensure!(
            served(dnsd.dns)? == acked,
            "{at}: serves {}",
            served(dnsd.dns)?
        );
        let journal = workspace(ws.path())?.journal(ORIGIN).read()?;
        ensure!(!journal.torn, "{at}: the journal ends in a torn frame");
        // A crash now and a restart on the full disk.
        dnsd.kill();
        let out = check(ws.path())?;
        ensure!(
            out.status.success(),
            "{at}: dnsd check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dnsd = ApiDnsd::start(&ws, loopback(172), &[]).with_context(|| at.clone())?;
        ensure!(served(dnsd.dns)? == acked, "{at}: after the restart");
        drop(filler);
    }
    ensure!(
        !refused.is_empty() && !made.is_empty() && refused.iter().max() < made.iter().min(),
        "refused at {refused:?}, made at {made:?}"
    );
    println!("refused at {refused:?} pages free, made at {made:?}");
    Ok(())
}

#[test]
fn a_rollback_reaches_across_a_compaction_and_the_journal_keeps_its_limit() -> Result<()> {
    const CHANGES: u32 = 30;
    let ws = DnsdWorkspace::new()?;
    ws.toml(&toml())?;
    ws.zone(ORIGIN, &zone())?;
    let dnsd = ApiDnsd::start(&ws, loopback(173), &[])?;
    let token = dnsd.default_token()?;
    let mut generations = vec![0u64];
    for v in 1..=CHANGES {
        let g = put(&dnsd, &token, v)?.with_context(|| format!("change {v}"))?;
        generations.push(g);
        // Each change's rewrite and compaction, before the next: the limit
        // holds between changes, not only at the end.
        ensure!(
            wait_until(Duration::from_secs(20), || settled(ws.path(), v)),
            "change {v}"
        );
    }
    let history = workspace(ws.path())?;
    let size = history.journal(ORIGIN).size();
    ensure!(size <= MAX_JOURNAL, "the journal is {size} bytes");
    let through = history
        .compacted_through(ORIGIN)
        .context("30 changes of 8 KB were not compacted")?;
    // The oldest change still held, and one before the compaction point.
    let held = (1..=CHANGES)
        .find(|&v| generations[v as usize] > through)
        .context("nothing held past the compaction")?;
    let gone = (1..=CHANGES)
        .rev()
        .find(|&v| generations[v as usize] < through)
        .context("nothing before the compaction")?;
    let rollback = |v: u32| {
        let path = format!("/v1/generations/{}/rollback", generations[v as usize]);
        dnsd.call("POST", &path, Some(&token), None)
    };
    for v in [held, held + 1, CHANGES - 1] {
        let r = rollback(v)?;
        ensure!(r.status == 200, "rollback to version {v}: {r:?}");
        ensure!(
            served(dnsd.dns)? == v,
            "rollback to version {v} serves {}",
            served(dnsd.dns)?
        );
    }
    let r = rollback(gone)?;
    ensure!(
        r.status == 410 && r.body.contains("no longer held"),
        "rollback past the compaction: {r:?}"
    );
    ensure!(
        served(dnsd.dns)? == CHANGES - 1,
        "a refused rollback changed nothing"
    );
    // And a restart serves the last rollback.
    drop(dnsd);
    let restarted = Dnsd::start(&ws, loopback(174))?;
    ensure!(served(restarted.addr)? == CHANGES - 1);
    println!(
        "journal {size} bytes (limit {MAX_JOURNAL}), compacted through generation {through}; \
         rolled back to versions {held}, {}, {} and refused {gone}",
        held + 1,
        CHANGES - 1
    );
    Ok(())
}

/// An operator edits a zone file that dnsd has not yet rewritten from its
/// journal (the file still holds an older version under dnsd's header),
/// then reloads: the edit is the zone whole, as the README says, and the
/// next change records it as a generation of its own before it builds on
/// it — so that what was live can be rolled back to — and survives a
/// kill -9.
#[test]
fn a_hand_edit_of_a_file_the_journal_is_ahead_of_is_kept_as_its_own_generation() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.toml(&format!(
        "[history]\nzonefile_sync = 3600\njournal_max_bytes = {MAX_JOURNAL}\n"
    ))?;
    ws.zone(ORIGIN, &zone())?;
    let mut dnsd = ApiDnsd::start(&ws, loopback(175), &[])?;
    let token = dnsd.default_token()?;
    let run = |dnsd: &ApiDnsd| -> Result<()> {
        ensure!(put(dnsd, &token, 1)?.is_some());
        ensure!(served(dnsd.dns)? == 1);
        // The file still holds version 0 (its rewrite is an hour away).
        let file = ws.path().join("zones/example.test.zone");
        let mut text = fs::read_to_string(&file)?;
        ensure!(text.contains("\"v0-00-"), "the file was rewritten already");
        text.push_str("note 60 IN TXT \"edited by hand\"\n");
        fs::write(&file, &text)?;
        dnsd.reload()?;
        ensure!(
            wait_until(Duration::from_secs(10), || served(dnsd.dns)
                .is_ok_and(|v| v == 0)),
            "the hand edit is not served"
        );
        let hand_edit = put(dnsd, &token, 2)?.context("the change after the hand edit")?;
        let generations = workspace(ws.path())?.generations()?;
        let recorded = generations
            .iter()
            .find(|g| g.number < hand_edit && g.message.contains("hand edits"))
            .with_context(|| format!("the hand edit is no generation: {generations:?}"))?;
        let copy = workspace(ws.path())?.generation_files(recorded.number)?;
        ensure!(
            copy[Path::new("zones/example.test.zone")] == text.as_bytes(),
            "generation {} is not the file as edited",
            recorded.number
        );
        Ok(())
    };
    run(&dnsd).map_err(|e| e.context(dnsd.log()))?;
    dnsd.kill();
    let restarted = Dnsd::start(&ws, loopback(176))?;
    ensure!(
        served(restarted.addr)? == 2,
        "the last change after a restart"
    );
    let note = Command::new("kdig")
        .arg(format!("@{}", restarted.addr.ip()))
        .args(["-p", &restarted.addr.port().to_string(), "+short"])
        .args(["note.example.test.", "TXT"])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&note.stdout).trim() == "\"edited by hand\"",
        "the hand edit after a restart: {}",
        String::from_utf8_lossy(&note.stdout)
    );
    Ok(())
}
