//! The redirector's daemon comes and goes; the forwarding does not. A
//! stopped or crashed daemon leaves its program attached and its maps
//! pinned, and the next one takes them over (swapping its own program into
//! the pinned links in one step), so that no connection in flight is cut.
//! Maps of another layout version are never read by the wrong program.
//!
//! Needs root; the daemon is `target/<profile>/redirector` (`cargo build --bins`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::nginx::{Nginx, PACED_BYTES_PER_S};
use cutover_tests::redirector_site::{RULE_WWW, Site, SlowDownload, json_number, sha256};
use cutover_tests::topology::OLD_IP;

const NEW_BODY: &str = "served by the new host\n";
const OLD_BODY: &str = "served by the old host\n";
/// Each stream lasts about 20 s at nginx's paced rate: long enough to span
/// two takeovers and the gaps between daemons.
const STREAM: usize = 20 * PACED_BYTES_PER_S;
const STREAMS: usize = 50;

/// 50 rate-limited downloads through the redirect.
struct Streams {
    downloads: Vec<SlowDownload>,
}

impl Streams {
    fn start(site: &Site) -> Result<Self> {
        let mut downloads = Vec::new();
        for i in 0..STREAMS {
            let to = site.scratch.path().join(format!("stream-{i}.bin"));
            downloads.push(SlowDownload::start(
                &site.net.client,
                &format!("http://{OLD_IP}/paced/stream.bin"),
                &to,
            )?);
        }
        let streams = Self { downloads };
        ensure!(
            cutover_tests::process::wait_until(Duration::from_secs(20), || streams
                .sizes()
                .iter()
                .all(|&n| n > 0)),
            "not every stream started: {:?}",
            streams.sizes()
        );
        Ok(streams)
    }

    fn sizes(&self) -> Vec<u64> {
        self.downloads
            .iter()
            .map(|d| std::fs::metadata(&d.to).map_or(0, |m| m.len()))
            .collect()
    }

    /// Fails unless every stream, over `within`, either received more
    /// bytes or ended intact: forwarding went on. (Over a shorter window a
    /// stream on a loaded machine may wait out a retransmission.)
    fn assert_flowing(&mut self, within: Duration, when: &str) -> Result<()> {
        let before = self.sizes();
        std::thread::sleep(within);
        let after = self.sizes();
        for (i, d) in self.downloads.iter_mut().enumerate() {
            if d.running()? {
                ensure!(
                    after[i] > before[i],
                    "stream {i} stalled for {within:?} {when} (at {} bytes)",
                    after[i]
                );
            } else {
                d.finish(Duration::ZERO)
                    .with_context(|| format!("stream {i} ended {when}"))?;
            }
        }
        Ok(())
    }

    /// Waits for every stream to end and checks each copy byte for byte.
    fn finish(mut self, original: &Path) -> Result<()> {
        let want = sha256(original)?;
        for (i, d) in self.downloads.iter_mut().enumerate() {
            d.finish(Duration::from_secs(90))
                .with_context(|| format!("stream {i}"))?;
            ensure!(sha256(&d.to)? == want, "stream {i} arrived corrupted");
        }
        Ok(())
    }
}

#[test]
fn fifty_streams_survive_a_stop_a_restart_a_crash_and_a_second_takeover() -> Result<()> {
    let mut site = Site::start(RULE_WWW)?;
    let new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[("stream.bin", STREAM)])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;
    let mut streams = Streams::start(&site)?;
    let first = site.xdp_prog_id()?.context("no XDP program on eth0")?;

    // SIGTERM: the daemon exits 0 and its program keeps forwarding, the
    // streams and new connections alike.
    site.redirector.stop()?;
    ensure!(
        site.redirector.log().contains("stays attached"),
        "{}",
        site.redirector.log()
    );
    assert_eq!(
        site.xdp_prog_id()?,
        Some(first),
        "the program changed on stop"
    );
    streams.assert_flowing(Duration::from_secs(3), "with no daemon running")?;
    assert_eq!(site.get("/")?, NEW_BODY, "a new connection with no daemon");

    // The next daemon takes the maps over and swaps its program in.
    site.start_again(&[])?;
    let log = site.redirector.log();
    ensure!(
        log.contains("XDP program replaced in the pinned link")
            && log.contains("took over the rules and connections"),
        "{log}"
    );
    let second = site
        .xdp_prog_id()?
        .context("no XDP program after the restart")?;
    ensure!(
        second != first,
        "the restarted daemon's program is not the one attached"
    );
    streams.assert_flowing(Duration::from_secs(3), "after the restart")?;
    // Its rule kept its name and its counters: the 50 streams and the GET
    // above were counted by the first daemon's program.
    let stats = site.stats_json()?;
    let new_flows = json_number(&stats, "www", "new_flows")?;
    ensure!(
        new_flows >= STREAMS as u64 + 2,
        "counters were reset by the takeover: {stats}"
    );

    // A crash (SIGKILL) loses nothing either.
    site.redirector.kill()?;
    assert_eq!(
        site.xdp_prog_id()?,
        Some(second),
        "the program changed on a crash"
    );
    streams.assert_flowing(Duration::from_secs(3), "after the daemon crashed")?;
    site.start_again(&[])?;
    let third = site
        .xdp_prog_id()?
        .context("no XDP program after the crash")?;
    ensure!(
        third != second,
        "the program was not replaced after the crash"
    );

    streams.finish(&new_web.file("stream.bin"))?;
    assert_eq!(site.get("/")?, NEW_BODY);
    Ok(())
}

#[test]
fn maps_of_another_layout_are_never_loaded_against() -> Result<()> {
    let mut site = Site::start(RULE_WWW)?;
    let _new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;
    site.redirector.stop()?;
    let running = site
        .xdp_prog_id()?
        .context("no XDP program left attached")?;

    // As a redirector of another layout version would have left them.
    let other = site.bpffs.pins().join("maps-v999");
    std::fs::rename(site.bpffs.maps(), &other)?;
    let refused = site.start_again(&[]);
    let err = format!(
        "{:#}",
        refused
            .err()
            .context("a start over layout 999 was accepted")?
    );
    ensure!(
        err.contains("layout version [999]") && err.contains("--replace-maps"),
        "the refusal does not say why and what to do: {err}"
    );
    // A refused start changes nothing: the running program still forwards.
    assert_eq!(site.xdp_prog_id()?, Some(running));
    assert_eq!(site.get("/")?, NEW_BODY);
    ensure!(
        other.join("FLOWS").exists(),
        "the refused start removed the other layout's maps"
    );

    // Told to, it takes over with maps of its own and removes the others.
    site.start_again(&["--replace-maps"])?;
    ensure!(
        site.xdp_prog_id()? != Some(running),
        "the program was not replaced"
    );
    ensure!(!other.exists(), "the other layout's maps are still pinned");
    assert_eq!(site.get("/")?, NEW_BODY);
    Ok(())
}

#[test]
fn detach_removes_what_a_stopped_daemon_left_and_is_refused_while_one_runs() -> Result<()> {
    let mut site = Site::start(RULE_WWW)?;
    let _new_web = Nginx::start(&site.net.new, &[80], NEW_BODY, &[])?;
    let _old_web = Nginx::start(&site.net.old, &[80], OLD_BODY, &[])?;
    site.wait_for_body(NEW_BODY)?;

    let err = format!(
        "{:#}",
        site.detach()
            .err()
            .context("detach under a running daemon")?
    );
    ensure!(err.contains("belongs to the redirector running"), "{err}");
    assert_eq!(site.get("/")?, NEW_BODY);

    site.redirector.stop()?;
    assert_eq!(
        site.get("/")?,
        NEW_BODY,
        "forwarding stopped with the daemon"
    );
    let out = site.detach()?;
    ensure!(out.contains("detached from eth0"), "{out}");
    assert_eq!(site.xdp_prog_id()?, None, "XDP still attached after detach");
    ensure!(
        !site.bpffs.pins().exists(),
        "pins left after detach: {:?}",
        std::fs::read_dir(site.bpffs.pins()).map(|d| d.count())
    );
    assert_eq!(site.get("/")?, OLD_BODY);
    Ok(())
}
