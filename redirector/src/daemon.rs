//! `redirector run`: the daemon's lifecycle from start to a clean exit.
//!
//! Start: validate the workspace (refuse to start on errors), set the host
//! up, load and attach the program, pin its maps, fill them. Then wait for
//! signals and timers: SIGHUP reloads, the collection timer expires flows,
//! the stats timer logs figures. SIGINT/SIGTERM detach and exit 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use cutover_workspace::Workspace;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval};
use tracing::{debug, info, warn};

use crate::loader::{AttachMode, Attached};
use crate::maps::Maps;
use crate::pin::Pins;
use crate::reload::{self, Rules};
use crate::signals::{Event, Signals};
use crate::state::{self, State};
use crate::stats::{self, Counters};
use crate::{api, gc, host, sync};

/// Everything `redirector run` is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The interfaces to attach to; the first names the pin directory and
    /// the pid file. Clients arrive on it; list the others when new hosts
    /// are reached (and answer) through them.
    pub ifaces: Vec<String>,
    pub xdp_mode: AttachMode,
    pub workspace: PathBuf,
    pub pin_dir: PathBuf,
    /// Log per-rule figures this often; never when `None`.
    pub stats_interval: Option<Duration>,
    pub gc_interval: Duration,
    /// On SIGINT/SIGTERM, stop redirecting new connections and wait this
    /// long for the ones in flight to finish before detaching.
    pub drain_on_stop: Option<Duration>,
    /// The control API; none with `--no-api`.
    pub api: Option<api::Settings>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(opts: Options) -> Result<()> {
    let workspace = Workspace::open(&opts.workspace)
        .with_context(|| format!("opening the workspace {}", opts.workspace.display()))?;
    let cfg = reload::load_config(&workspace)?;
    let mut signals = Signals::install()?;
    // Lets operator tools find this daemon to send SIGHUP; refuses a second
    // daemon for the same workspace and interface.
    let first = opts.ifaces.first().context("no interface given")?;
    let pid_name = format!("redirector-{first}");
    let _pid_file = workspace
        .write_pid(&pid_name)
        .with_context(|| format!("writing {}", workspace.pid_path(&pid_name).display()))?;

    // The API listens before anything is attached, so that a taken port
    // fails the start instead of leaving a daemon nobody can drive.
    let (api_tx, mut api_rx) = mpsc::channel::<api::Request>(16);
    let server = match &opts.api {
        Some(settings) => {
            let token = api::token(&workspace, settings.token_file.as_deref())?;
            let serve = api::bind(
                settings,
                workspace.clone(),
                opts.ifaces.join(","),
                token,
                api_tx.clone(),
            )
            .await?;
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    // Kept so that the channel never reports closed while the loop runs.
    let _api_tx = api_tx;

    for iface in &opts.ifaces {
        host::prepare(iface)
            .with_context(|| format!("preparing the host for forwarding on {iface}"))?;
    }
    let mut attached = Attached::load(&opts.ifaces, opts.xdp_mode)?;
    let pins = match Pins::create(attached.ebpf(), &opts.pin_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!("`redirector stats` will not reach this daemon: {e:#}");
            None
        }
    };
    let mut maps = Maps::take(attached.ebpf_mut())?;
    sync::sync_egress(&mut maps.egress).context("filling EGRESS")?;
    let mut rules = Rules::start(workspace, &cfg, &mut maps)?;

    // Published only next to pins that `redirector stats` can open.
    let state_path = match pins.as_ref().map(|p| state::path_for(p.dir())) {
        Some(Ok(path)) => Some(path),
        Some(Err(e)) => {
            warn!("`redirector stats` will not know the rule names: {e:#}");
            None
        }
        None => None,
    };
    let mut published = State {
        iface: opts.ifaces.join(","),
        pid: std::process::id(),
        ..State::default()
    };
    publish(&mut published, &rules, state_path.as_deref());
    info!(ifaces = %opts.ifaces.join(","), "redirector running");

    let mut gc_tick = interval(opts.gc_interval);
    gc_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stats_tick = interval(opts.stats_interval.unwrap_or(Duration::from_secs(3600)));
    stats_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_sample: Option<(Instant, BTreeMap<u32, Counters>)> = None;
    let mut api_tick = interval(Duration::from_secs(1));
    api_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = api::Samples::default();

    let reason = loop {
        tokio::select! {
            event = signals.next() => match event {
                Event::Reload => {
                    info!("SIGHUP: reloading the workspace");
                    reload(&mut maps, &mut rules, &mut published, state_path.as_deref());
                }
                Event::Shutdown(signal) => break signal,
            },
            _ = gc_tick.tick() => {
                let _ = collect(&mut maps, &mut rules, &mut published);
                // Interfaces come and go (VPNs, VLANs): keep EGRESS current.
                if let Err(e) = sync::sync_egress(&mut maps.egress) {
                    warn!("refreshing EGRESS: {e:#}");
                }
                publish(&mut published, &rules, state_path.as_deref());
                host::warm_neighbours(rules.current().rules.values().map(|r| r.to));
            }
            _ = stats_tick.tick(), if opts.stats_interval.is_some() => {
                log_stats(&maps, &published, &mut last_sample);
            }
            _ = api_tick.tick(), if server.is_some() => {
                match stats::read_counters(&maps.counters, stats::counter_ids(&published)) {
                    Ok(c) => samples.push(Instant::now(), c),
                    Err(e) => debug!("sampling counters for the API: {e:#}"),
                }
            }
            Some(request) = api_rx.recv() => {
                answer(request, &mut maps, &mut rules, &mut published, state_path.as_deref(), &samples);
            }
        }
    };
    // Requests in flight get "the daemon is stopping" rather than a hang.
    if let Some(server) = server {
        server.abort();
    }
    drop(api_rx);

    info!(signal = reason, "stopping");
    if let Some(limit) = opts.drain_on_stop {
        drain(
            limit,
            &mut maps,
            &mut rules,
            &mut published,
            state_path.as_deref(),
            &mut signals,
        )
        .await;
    }
    // Clean up the pins and the state file even when detaching failed.
    let detached = attached.detach();
    drop(pins);
    if let Some(path) = &state_path
        && let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "removing the state file");
    }
    detached
}

/// Stops redirecting new connections and waits, up to `limit`, until the
/// connections in flight have finished (FIN or RST seen, or idle past their
/// timeout), so that detaching cuts none. Another SIGINT/SIGTERM ends the
/// wait at once.
async fn drain(
    limit: Duration,
    maps: &mut Maps,
    rules: &mut Rules,
    published: &mut State,
    state_path: Option<&Path>,
    signals: &mut Signals,
) {
    if let Err(e) = rules.switch_off(maps) {
        warn!("cannot switch the rules off, detaching now: {e:#}");
        return;
    }
    publish(published, rules, state_path);
    info!(limit = ?limit, "draining: no new connections are redirected; waiting for those in flight");
    let deadline = Instant::now() + limit;
    let mut tick = interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = signals.next() => {
                if let Event::Shutdown(signal) = event {
                    info!(signal, "second signal: detaching without waiting");
                    return;
                }
            }
            _ = tick.tick() => {
                let Some(report) = collect(maps, rules, published) else {
                    return;
                };
                publish(published, rules, state_path);
                if report.open == 0 {
                    info!("drained: no connection in flight");
                    return;
                }
                if Instant::now() >= deadline {
                    warn!(open = report.open, "drain time is up: detaching cuts these connections");
                    return;
                }
                debug!(open = report.open, "draining");
            }
        }
    }
}

/// One garbage collection pass, with its totals added to the state file.
fn collect(maps: &mut Maps, rules: &mut Rules, published: &mut State) -> Option<gc::Report> {
    let started = Instant::now();
    let timeouts = *rules.timeouts();
    match gc::collect(&mut maps.flows, &timeouts) {
        Ok(report) => {
            for (id, n) in &report.expired {
                *published.gc_expired.entry(*id).or_default() += n;
            }
            for (id, n) in &report.evicted {
                *published.gc_evicted.entry(*id).or_default() += n;
            }
            let evicted: u64 = report.evicted.values().sum();
            if evicted > 0 {
                warn!(
                    evicted,
                    "flows lost their partner entry to LRU eviction: FLOWS is too small for the load"
                );
            }
            debug!(
                active = report.active.values().sum::<u64>(),
                expired = report.expired.values().sum::<u64>(),
                took = ?started.elapsed(),
                "flow collection"
            );
            rules.after_collection(&report);
            Some(report)
        }
        Err(e) => {
            warn!("flow collection failed: {e:#}");
            None
        }
    }
}

/// SIGHUP and API changes: re-read the workspace into the maps. Returns
/// whether the new config is in force.
fn reload(maps: &mut Maps, rules: &mut Rules, published: &mut State, path: Option<&Path>) -> bool {
    if let Err(e) = sync::sync_egress(&mut maps.egress) {
        warn!("refreshing EGRESS: {e:#}");
    }
    let applied = rules.reload(maps);
    publish(published, rules, path);
    applied
}

/// Serves one API request; only this loop touches the maps.
fn answer(
    request: api::Request,
    maps: &mut Maps,
    rules: &mut Rules,
    published: &mut State,
    path: Option<&Path>,
    samples: &api::Samples,
) {
    // A requester that went away is no error: the change is made anyway.
    match request {
        api::Request::Apply { reply } => {
            let result = if reload(maps, rules, published, path) {
                Ok(())
            } else {
                Err("the maps refused the new rules (see the daemon's log); the previous rules stay in force".to_string())
            };
            let _ = reply.send(result);
        }
        api::Request::Rules { reply } => {
            let _ = reply.send(rules.infos());
        }
        api::Request::Stats { reply } => {
            let _ = reply.send(api_report(maps, published, samples).map_err(|e| format!("{e:#}")));
        }
    }
}

/// The report of `redirector stats --json`, rates measured since the
/// sample the loop took a second or two ago.
fn api_report(maps: &Maps, state: &State, samples: &api::Samples) -> Result<stats::Report> {
    let now = stats::read_counters(&maps.counters, stats::counter_ids(state))?;
    let at = Instant::now();
    let active = stats::occupancy(&maps.flows)?;
    let empty = BTreeMap::new();
    let (before, elapsed) = match samples.base() {
        Some((then_at, then)) => (then, at - *then_at),
        None => (&empty, Duration::ZERO),
    };
    Ok(stats::build(state, before, &now, elapsed, &active))
}

/// Puts the rules in force into `state` and, when there is a state file,
/// writes it for `redirector stats`.
fn publish(state: &mut State, rules: &Rules, path: Option<&Path>) {
    rules.fill_state(state);
    let Some(path) = path else {
        return;
    };
    if let Err(e) = state.write(path) {
        warn!("`redirector stats` will show stale rule names: {e:#}");
    }
}

/// Logs one line per rule with what changed since the previous tick.
fn log_stats(maps: &Maps, state: &State, last: &mut Option<(Instant, BTreeMap<u32, Counters>)>) {
    let ids: Vec<u32> = state.rules.iter().map(|r| r.id).collect();
    let now = match stats::read_counters(&maps.counters, ids) {
        Ok(c) => c,
        Err(e) => {
            warn!("reading counters: {e:#}");
            return;
        }
    };
    let at = Instant::now();
    if let Some((then_at, then)) = last.as_ref() {
        let report = stats::build(state, then, &now, at - *then_at, &BTreeMap::new());
        for r in &report.rules {
            info!(
                rule = %r.name,
                new_flows_per_s = format!("{:.1}", r.new_flows_per_s),
                new_flows = r.new_flows,
                fwd_packets = r.fwd_packets,
                reply_packets = r.reply_packets,
                nat_failures = r.nat_failures,
                evictions = r.evictions,
                "stats"
            );
        }
    }
    *last = Some((at, now));
}
