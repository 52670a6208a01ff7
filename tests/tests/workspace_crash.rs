//! Crash-safe, atomic commits (issue 10), end to end. A commit that changes
//! `dnsd.toml`, a zone and `redirector.toml` at once — a rollback through
//! dnsd's API — is killed at every step of the history's protocol (dnsd
//! kills itself there: `CUTOVER_FAULT=after:STEP:N`, no timing involved),
//! or runs out of disk at every free-space level of a small tmpfs that
//! matters. Afterwards `dnsd check` and `redirector check` pass, and dnsd
//! and the redirector start and serve the whole old or the whole new
//! generation, never a mix, with the last acknowledged change in it. And a
//! commit keeps the files' modes and owners, keeps a linked zone file a
//! link, and keeps `.cutover/` private.
//!
//! Needs root (tmpfs, network namespaces, XDP); the daemons are
//! `target/<profile>/{dnsd,redirector}` (`cargo build --bins`).

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_control_api::contract::{Change, Rule};
use cutover_tests::bins;
use cutover_tests::bpffs::Bpffs;
use cutover_tests::dnsd::{Dnsd, DnsdWorkspace, check, copy_of, kdig_short, loopback};
use cutover_tests::dnsd_api::{ApiDnsd, Response};
use cutover_tests::process::wait_until;
use cutover_tests::redirector::Redirector;
use cutover_tests::tmpfs::Tmpfs;
use cutover_tests::topology::Topology;

/// The hook points of the commit protocol, in order (`workspace/src/fault.rs`).
const STEPS: [&str; 7] = [
    "stage", "validate", "prepare", "seal", "install", "remove", "record",
];

/// What a generation serves: two services of `dnsd.toml`, a record of
/// the zone, and the redirector's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Data {
    www: &'static str,
    api: &'static str,
    app: &'static str,
    redirect_to: &'static str,
}

/// Generation 2 of the history `two_generations` makes.
const FIRST: Data = Data {
    www: "198.18.0.2",
    api: "198.18.0.20",
    app: "198.18.0.1",
    redirect_to: "198.18.0.3:80",
};

/// Generation 4, live when the history is made.
const SECOND: Data = Data {
    www: "198.18.0.3",
    api: "198.18.0.21",
    app: "198.18.0.11",
    redirect_to: "198.18.0.4:80",
};

fn dnsd_toml(www: &str, api: &str) -> String {
    format!(
        "[[service]]\nname = \"www.example.test.\"\naddresses = [\"{www}\"]\nttl = 60\n\n\
         [[service]]\nname = \"api.example.test.\"\naddresses = [\"{api}\"]\nttl = 30\n"
    )
}

/// The zone, with `padding` more records to make it several pages long.
fn zone(app: &str, padding: usize) -> String {
    let mut text = format!(
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n  IN NS ns1\nns1 IN A 198.18.0.53\n\
         app IN A {app}\n"
    );
    for i in 0..padding {
        text.push_str(&format!("host{i} IN A 198.18.1.{}\n", i % 250 + 1));
    }
    text
}

fn redirector_toml(to: &str) -> String {
    format!("[[rule]]\nname = \"www\"\nfrom = \"198.18.0.2:80\"\nto = \"{to}\"\n")
}

/// Makes the history every test starts from, through dnsd's API: FIRST
/// as generation 2 (1 is the workspace as found), hand edits towards
/// SECOND as 3, and SECOND as 4, live. dnsd is stopped again.
fn two_generations(ws: &DnsdWorkspace, dnsd_ip: u8, padding: usize) -> Result<()> {
    ws.toml(&dnsd_toml(FIRST.www, "198.18.0.19"))?;
    ws.zone("example.test.", &zone(FIRST.app, padding))?;
    fs::write(
        ws.path().join("redirector.toml"),
        redirector_toml(FIRST.redirect_to),
    )?;
    let mut dnsd = ApiDnsd::start(ws, loopback(dnsd_ip), &[])?;
    let token = dnsd.default_token()?;
    let set_api = |to: &str| -> Result<u64> {
        let body = format!("{{\"addresses\": [\"{to}\"]}}");
        let r = dnsd.call(
            "PUT",
            "/v1/services/api.example.test",
            Some(&token),
            Some(&body),
        )?;
        ensure!(r.status == 200, "{r:?}");
        r.json::<Change>()?.generation.context("no generation")
    };
    ensure!(set_api(FIRST.api)? == 2);
    ws.toml(&dnsd_toml(SECOND.www, FIRST.api))?;
    ws.zone("example.test.", &zone(SECOND.app, padding))?;
    fs::write(
        ws.path().join("redirector.toml"),
        redirector_toml(SECOND.redirect_to),
    )?;
    ensure!(set_api(SECOND.api)? == 4);
    ensure!(dnsd.stop()?, "dnsd did not stop cleanly");
    Ok(())
}

/// The three files the commit changes.
const CHANGED: [&str; 3] = ["dnsd.toml", "redirector.toml", "zones/example.test.zone"];

/// Which of `generations` the live files of `ws` are, exactly; an error
/// if they are none of them (a mix).
fn live_generation(ws: &Path, generations: &[u64]) -> Result<u64> {
    let read = |root: &Path| -> Result<Vec<Vec<u8>>> {
        CHANGED
            .iter()
            .map(|f| fs::read(root.join(f)).with_context(|| format!("{}", root.join(f).display())))
            .collect()
    };
    let live = read(ws)?;
    for &n in generations {
        let copy = ws.join(format!(".cutover/generations/{n}"));
        if copy.is_dir() && read(&copy)? == live {
            return Ok(n);
        }
    }
    bail!(
        "the live files of {} are none of generations {generations:?}: {}",
        ws.display(),
        String::from_utf8_lossy(&live.concat())
    )
}

/// What dnsd at `dns` answers for the generation's names.
fn answers(dns: SocketAddr) -> Result<[Vec<String>; 3]> {
    Ok([
        kdig_short(dns, "www.example.test.", "A")?,
        kdig_short(dns, "api.example.test.", "A")?,
        kdig_short(dns, "app.example.test.", "A")?,
    ])
}

fn answers_of(d: Data) -> [Vec<String>; 3] {
    [vec![d.www.into()], vec![d.api.into()], vec![d.app.into()]]
}

/// `redirector check` on `ws` passes and names the rule's destination.
fn redirector_check(ws: &Path) -> Result<String> {
    let out = Command::new(bins::path("redirector"))
        .arg("check")
        .arg(ws)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "redirector check: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let to = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("www: 198.18.0.2:80 -> "))
        .with_context(|| format!("no rule www in {stdout}"))?;
    Ok(to.to_string())
}

/// A host to start the redirector on: the old host of the mission's
/// topology, and a private bpffs for its maps.
struct RedirectorHost {
    net: Topology,
    bpffs: Bpffs,
    scratch: tempfile::TempDir,
    runs: u32,
}

impl RedirectorHost {
    fn new() -> Result<Self> {
        let net = Topology::new()?;
        let scratch = tempfile::Builder::new().prefix("cutover-crash").tempdir()?;
        let bpffs = Bpffs::mount(&scratch.path().join("bpf"))?;
        Ok(Self {
            net,
            bpffs,
            scratch,
            runs: 0,
        })
    }

    /// Starts the redirector on `ws` and returns the destination of its
    /// rule `www` as its API reports it, then stops it.
    fn rule_served(&mut self, ws: &Path) -> Result<String> {
        self.runs += 1;
        let pins = self
            .bpffs
            .pins()
            .with_file_name(format!("run{}", self.runs));
        let mut redirector = Redirector::start(
            &self.net.old,
            &["eth0"],
            ws,
            &pins,
            self.scratch.path(),
            // Each run starts clean: its program goes with it.
            &["--api", "127.0.0.1:8054", "--detach"],
        )?;
        let token = fs::read_to_string(ws.join(".cutover/api-token"))?;
        let mut rules = Err(anyhow::anyhow!("no answer"));
        wait_until(Duration::from_secs(10), || {
            let out = self
                .net
                .old
                .command("curl")
                .args(["-sS", "--max-time", "2", "-H"])
                .arg(format!("Authorization: Bearer {}", token.trim()))
                .arg("http://127.0.0.1:8054/v1/rules")
                .output();
            rules = out
                .context("curl")
                .and_then(|o| Ok(serde_json::from_slice::<Vec<Rule>>(&o.stdout)?));
            rules.is_ok()
        });
        let rules = rules.with_context(|| format!("GET /v1/rules; log:\n{}", redirector.log()))?;
        redirector.stop()?;
        let www = rules
            .iter()
            .find(|r| r.name == "www")
            .with_context(|| format!("no rule www: {rules:?}"))?;
        Ok(www.to.clone())
    }
}

/// Everything a daemon makes of a crashed workspace `crashed`, each on a
/// copy of its own: `dnsd check`, `redirector check`, dnsd's start and the
/// redirector's start. Each must finish the interrupted commit to the same
/// generation of `generations` and serve exactly its `Data`; returns it.
fn recovered(
    crashed: &Path,
    generations: &[(u64, Data)],
    dnsd_ip: u8,
    redirector: &mut RedirectorHost,
) -> Result<u64> {
    let numbers: Vec<u64> = generations.iter().map(|g| g.0).collect();
    let data = |n: u64| generations.iter().find(|g| g.0 == n).map(|g| g.1).unwrap();

    let checked = copy_of(crashed)?;
    let out = check(checked.path())?;
    ensure!(
        out.status.success(),
        "dnsd check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let n = live_generation(checked.path(), &numbers)?;

    let copy = copy_of(crashed)?;
    ensure!(redirector_check(copy.path())? == data(n).redirect_to);
    ensure!(live_generation(copy.path(), &numbers)? == n);

    let copy = copy_of(crashed)?;
    let dnsd = Dnsd::start(&copy, loopback(dnsd_ip))?;
    ensure!(
        answers(dnsd.addr)? == answers_of(data(n)),
        "dnsd serves {:?}, not generation {n}; log:\n{}",
        answers(dnsd.addr)?,
        dnsd.log()
    );
    ensure!(live_generation(copy.path(), &numbers)? == n);
    drop(dnsd);

    let copy = copy_of(crashed)?;
    ensure!(redirector.rule_served(copy.path())? == data(n).redirect_to);
    ensure!(live_generation(copy.path(), &numbers)? == n);
    Ok(n)
}

#[test]
fn a_three_file_commit_killed_at_every_step_leaves_the_whole_old_or_new_generation() -> Result<()> {
    let started = Instant::now();
    let template = DnsdWorkspace::new()?;
    two_generations(&template, 160, 0)?;
    let mut redirector = RedirectorHost::new()?;
    let mut points = Vec::new();
    for step in STEPS {
        for nth in 1.. {
            let at = format!("after:{step}:{nth}");
            let run = copy_of(template.path())?;
            let mut dnsd =
                ApiDnsd::start_with_env(&run, loopback(160), &[], &[("CUTOVER_FAULT", &at)])?;
            let token = dnsd.default_token()?;
            // Generation 2 (FIRST) back over 4 (SECOND): the three files
            // change. dnsd dies where the fault says, before it answers.
            let r = dnsd.call("POST", "/v1/generations/2/rollback", Some(&token), None);
            if let Ok(Response { status: 200, .. }) = r {
                // The step has fewer occurrences: the commit went through.
                ensure!(!dnsd.exited(), "{at}");
                ensure!(answers(dnsd.dns)? == answers_of(FIRST), "{at}");
                break;
            }
            ensure!(
                wait_until(Duration::from_secs(5), || dnsd.exited()),
                "{at}: dnsd neither answered nor died: {r:?}"
            );
            dnsd.kill();
            points.push(at.clone());
            // Sealed (from `seal` on), generation 5 is the commit's.
            let sealed = run.path().join(".cutover/generations/5").is_dir();
            let generations = [(4, SECOND), (5, FIRST)];
            let n = recovered(run.path(), &generations, 161, &mut redirector)
                .with_context(|| format!("after the crash at {at}"))?;
            ensure!(n == if sealed { 5 } else { 4 }, "{at}: generation {n}");
            println!("{at}: generation {n}");
        }
    }
    // stage: three files and GENERATION.toml; prepare: three files and
    // `current`; install: three files; remove: none.
    let counts: Vec<usize> = STEPS
        .iter()
        .map(|s| {
            points
                .iter()
                .filter(|p| p.split(':').nth(1) == Some(s))
                .count()
        })
        .collect();
    ensure!(counts == [4, 1, 4, 1, 3, 0, 1], "{points:?}");
    println!(
        "{} fault points, each recovered by dnsd check, redirector check, dnsd and the \
         redirector, in {:?}",
        points.len(),
        started.elapsed()
    );
    Ok(())
}

/// Pages of the tmpfs, as the free-space levels count them.
const PAGE: u64 = 4096;

#[test]
fn a_full_disk_at_every_level_leaves_a_workspace_dnsd_serves_with_the_last_acknowledged_change()
-> Result<()> {
    let started = Instant::now();
    let scratch = tempfile::Builder::new().prefix("cutover-full").tempdir()?;
    let disk = Tmpfs::mount(&scratch.path().join("disk"), 8 << 20)?;
    // The workspace is the whole tmpfs; dnsd's log is beside it.
    let ws = DnsdWorkspace::at(disk.path())?;
    // A zone of several pages, so that the commit allocates at many levels.
    two_generations(&ws, 162, 700)?;
    let zone_pages = fs::metadata(ws.path().join("zones/example.test.zone"))?.len() / PAGE + 1;
    let mut dnsd = ApiDnsd::start(&ws, loopback(162), &[])?;
    let token = dnsd.default_token()?;
    // The generation in force and its data; each level rolls back to a
    // generation holding the other data: the three files change.
    let mut acked = (4, SECOND);
    let mut other = (2, FIRST);
    let (mut refused, mut made) = (Vec::new(), Vec::new());
    // Twice what the commit needs: its staged copy and its temp files.
    let levels = 2 * (zone_pages + 4) + 4;
    for free in 0..=levels {
        let filler = disk.leave_free(free * PAGE)?;
        let r = dnsd.call(
            "POST",
            &format!("/v1/generations/{}/rollback", other.0),
            Some(&token),
            None,
        )?;
        match r.status {
            200 => {
                let g = r.json::<Change>()?.generation.context("no generation")?;
                (acked, other) = ((g, other.1), acked);
                made.push(free);
            }
            500 if r.body.contains("No space left on device") => refused.push(free),
            _ => bail!("{free} pages free: {r:?}"),
        }
        let at = format!("{free} pages free");
        ensure!(
            answers(dnsd.dns)? == answers_of(acked.1),
            "{at}: dnsd serves {:?}, not generation {}",
            answers(dnsd.dns)?,
            acked.0
        );
        // A crash now, and a restart on the full disk: the workspace is
        // whole, `dnsd check` passes, dnsd starts and serves the last
        // acknowledged change.
        dnsd.kill();
        ensure!(live_generation(ws.path(), &[acked.0])? == acked.0, "{at}");
        let out = check(ws.path())?;
        ensure!(
            out.status.success(),
            "{at}: dnsd check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(redirector_check(ws.path())? == acked.1.redirect_to, "{at}");
        dnsd = ApiDnsd::start(&ws, loopback(162), &[]).with_context(|| at.clone())?;
        ensure!(
            answers(dnsd.dns)? == answers_of(acked.1),
            "{at}: after the restart"
        );
        drop(filler);
    }
    ensure!(
        !refused.is_empty() && !made.is_empty(),
        "refused at {refused:?}, made at {made:?}"
    );
    ensure!(
        refused.iter().max() < made.iter().min(),
        "refused at {refused:?}, made at {made:?}"
    );
    println!(
        "{} free-space levels (0 to {levels} pages): refused, nothing written, at {refused:?}; \
         made at {made:?}; in {:?}",
        levels + 1,
        started.elapsed()
    );
    Ok(())
}

#[test]
fn a_commit_that_cannot_be_finished_on_a_full_disk_is_served_from_its_copy() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("cutover-full").tempdir()?;
    let disk = Tmpfs::mount(&scratch.path().join("disk"), 4 << 20)?;
    let ws = DnsdWorkspace::at(disk.path())?;
    two_generations(&ws, 163, 0)?;
    // Killed after the first file is installed...
    let mut dnsd = ApiDnsd::start_with_env(
        &ws,
        loopback(163),
        &[],
        &[("CUTOVER_FAULT", "after:install:1")],
    )?;
    let token = dnsd.default_token()?;
    let r = dnsd.call("POST", "/v1/generations/2/rollback", Some(&token), None);
    ensure!(
        wait_until(Duration::from_secs(5), || dnsd.exited()),
        "{r:?}"
    );
    dnsd.kill();
    // ...with the other files' prepared content lost, and the disk full:
    // the live files are half old, half new, and cannot be completed.
    for temp in [
        ".redirector.toml.cutover-tmp",
        "zones/.example.test.zone.cutover-tmp",
    ] {
        fs::remove_file(ws.path().join(temp)).with_context(|| temp.to_string())?;
    }
    ensure!(live_generation(ws.path(), &[4, 5]).is_err(), "not a mix");
    let _filler = disk.leave_free(0)?;
    let out = check(ws.path())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "dnsd check: {stderr}");
    ensure!(
        stderr.contains("reading generation 5 from its copy"),
        "{stderr}"
    );
    ensure!(redirector_check(ws.path())? == FIRST.redirect_to);
    // dnsd starts on it and serves the whole new generation.
    let dnsd = Dnsd::start(&ws, loopback(163))?;
    ensure!(
        answers(dnsd.addr)? == answers_of(FIRST),
        "log:\n{}",
        dnsd.log()
    );
    ensure!(dnsd.log().contains("from its copy"), "{}", dnsd.log());
    drop(dnsd);
    // Once there is room, the next one to read it finishes the commit.
    drop(_filler);
    let out = check(ws.path())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.contains("finished installing generation 5"),
        "{stderr}"
    );
    ensure!(live_generation(ws.path(), &[4, 5])? == 5);
    Ok(())
}

#[test]
fn a_commit_keeps_modes_owners_and_a_linked_zone_and_the_history_private() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    let elsewhere = tempfile::Builder::new().prefix("cutover-zones").tempdir()?;
    let target = elsewhere.path().join("example.test.zone");
    fs::write(&target, zone(FIRST.app, 0))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640))?;
    let link = ws.path().join("zones/example.test.zone");
    std::os::unix::fs::symlink(&target, &link)?;
    // The zone file is rewritten from the journal right after a change.
    let toml = ws.toml(&format!(
        "{}\n[history]\nzonefile_sync = 0\n",
        dnsd_toml(FIRST.www, FIRST.api)
    ))?;
    // It may hold a TSIG secret: 0600, and its owner's.
    fs::set_permissions(&toml, fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(&toml, Some(4321), Some(4322))?;
    let redirector = ws.path().join("redirector.toml");
    fs::write(&redirector, redirector_toml(FIRST.redirect_to))?;
    // A history made before it was kept private.
    fs::create_dir(ws.path().join(".cutover"))?;
    fs::set_permissions(
        ws.path().join(".cutover"),
        fs::Permissions::from_mode(0o755),
    )?;

    let dnsd = ApiDnsd::start(&ws, loopback(164), &[])?;
    let token = dnsd.default_token()?;
    let call = |method: &str, path: &str, body: Option<&str>| -> Result<u64> {
        let r = dnsd.call(method, path, Some(&token), body)?;
        ensure!(r.status == 200, "{method} {path}: {r:?}");
        r.json::<Change>()?.generation.context("no generation")
    };
    call(
        "PUT",
        "/v1/services/www.example.test",
        Some(&format!("{{\"addresses\": [\"{}\"]}}", SECOND.www)),
    )?;
    call(
        "PUT",
        "/v1/zones/example.test/rrsets/app.example.test/A",
        Some(&format!(
            "{{\"ttl\": 60, \"records\": [\"{}\"]}}",
            SECOND.app
        )),
    )?;
    ensure!(dnsd.kdig("www.example.test.", "A")? == [SECOND.www]);
    ensure!(dnsd.kdig("app.example.test.", "A")? == [SECOND.app]);

    let meta = fs::metadata(&toml)?;
    ensure!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()) == (0o600, 4321, 4322),
        "dnsd.toml is now {:o} {}:{}",
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    ensure!(
        fs::symlink_metadata(&link)?.is_symlink(),
        "the zone's link was replaced"
    );
    let rewritten = || fs::read_to_string(&target).is_ok_and(|t| t.contains(SECOND.app));
    ensure!(
        wait_until(Duration::from_secs(10), rewritten),
        "written through the link"
    );
    ensure!(fs::metadata(&target)?.mode() & 0o7777 == 0o640);
    ensure!(fs::metadata(&redirector)?.mode() & 0o7777 == 0o644);
    let leftovers: Vec<_> = fs::read_dir(elsewhere.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(leftovers.len() == 1, "{leftovers:?}");

    // Everything under .cutover/ — generations, current, lock, token, pid
    // file — is 0600, every directory 0700.
    let mut seen = 0;
    for path in tree(&ws.path().join(".cutover"))? {
        let meta = fs::symlink_metadata(&path)?;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        ensure!(
            meta.mode() & 0o7777 == want,
            "{} is {:o}",
            path.display(),
            meta.mode() & 0o7777
        );
        seen += 1;
    }
    ensure!(seen > 10, "{seen} entries under .cutover");

    // A rollback restores the zone through its link too.
    call("POST", "/v1/generations/1/rollback", None)?;
    ensure!(fs::symlink_metadata(&link)?.is_symlink());
    // Byte for byte but for the serial, which goes forward (the flips
    // raised it) so that secondaries take the rollback.
    let restored = fs::read_to_string(&target)?;
    let serial: u32 = restored
        .split("hostmaster ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .context("no serial in the restored zone")?;
    ensure!(serial > 1, "the rollback's serial {serial}");
    ensure!(
        restored.replacen(&format!("hostmaster {serial} "), "hostmaster 1 ", 1)
            == zone(FIRST.app, 0),
        "{restored}"
    );
    ensure!(dnsd.kdig("app.example.test.", "A")? == [FIRST.app]);
    Ok(())
}

/// `dir` itself and everything under it.
fn tree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(tree(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}
