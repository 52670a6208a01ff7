//! `redirector run`: the [`Daemon`] and its lifecycle from start to a clean
//! exit.
//!
//! Start: validate the workspace (refuse to start on errors), set the host
//! up, load and attach the program, pin its maps, fill them. Then wait for
//! signals, timers and API requests: SIGHUP reloads, the collection timer
//! expires flows, the stats timer logs figures, the API's requests are
//! answered. SIGINT/SIGTERM exit 0, leaving the program forwarding for the
//! next daemon to take over (see `loader`), or detaching when told to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use cutover_workspace::{PidFile, Workspace};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior, interval};
use tracing::{debug, info, warn};

use crate::loader::{AttachMode, Attached, Load};
use crate::maps::Maps;
use crate::pin::{self, PinDir};
use crate::reload::{self, Rules};
use crate::state::{self, State};
use crate::stats::{self, Counters};
use crate::{api, gc, host, sync};
use cutover_control_api::lifecycle::{self, Lifecycle};
use cutover_control_api::signals::{Event, Signals};
use redirector_common::{Ip4, Ip6, MAX_FLOW_ENTRIES, MAX_FLOW6_ENTRIES};

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
    pub on_stop: Stop,
    /// Take over from a redirector whose pinned maps have another layout,
    /// cutting the connections they hold.
    pub replace_maps: bool,
    /// The control API; none with `--no-api`.
    pub api: Option<api::Settings>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(opts: Options) -> Result<()> {
    let mut daemon = Daemon::start(&opts).await?;
    let signal = daemon.run().await;
    daemon.stop(signal, opts.on_stop).await
}

/// What SIGINT/SIGTERM do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Exit, leaving the program attached and forwarding (as iptables
    /// rules outlive the tool that wrote them), for the next daemon to take
    /// over without cutting a connection.
    Leave,
    /// Detach and remove the pins; first, when `drain` says so, stop
    /// redirecting new connections and wait that long for the ones in
    /// flight to finish.
    Detach { drain: Option<Duration> },
}

/// How often housekeeping probes the new hosts' neighbour entries (see
/// `host::warm_neighbours` for why not at every pass).
const WARM_UP_EVERY: Duration = Duration::from_secs(30);

/// A running redirector: the attached program, its maps, the rules in them,
/// the state file that names them, and everything that wakes the loop.
///
/// Invariants: only the loop — a method of this type — touches the maps;
/// the API asks through its request channel and waits for the answer.
/// `rules` is the image of what `maps` hold (every change goes through
/// [`Rules`], which puts the previous rules back when the maps refuse new
/// ones), and `published` is brought up to date with it after every change.
pub struct Daemon {
    signals: Signals,
    timers: Timers,
    /// `None` with `--no-api`.
    api: Option<ApiEnd>,
    /// The counters a second or two ago, which the API's rates are
    /// measured against.
    samples: api::Samples,
    maps: Maps,
    rules: Rules,
    /// What `redirector stats` reads: the rules in force and gc totals.
    published: State,
    /// Where `published` is written; `None` when the maps could not be
    /// pinned (no `redirector stats` could open them anyway).
    state_path: Option<PathBuf>,
    /// The open connections of the last collection pass, to count those
    /// the LRU evicts whole before the next.
    open_flows: gc::OpenFlows<Ip4>,
    open_flows6: gc::OpenFlows<Ip6>,
    /// The counters at the last stats log line, to log what changed since.
    logged: Option<(Instant, BTreeMap<u32, Counters>)>,
    /// `None` when nothing could be pinned.
    pins: Option<PinDir>,
    /// When housekeeping next probes the new hosts' neighbour entries.
    next_warm_up: Instant,
    attached: Attached,
    /// What systemd is told, and the reload record `redirector reload`
    /// waits on; declared before the pid file, which it sits beside.
    lifecycle: Lifecycle,
    /// Declared last, so that it is removed last: operator tools find this
    /// daemon for as long as anything of it is left.
    _pid_file: PidFile,
}

/// What wakes the loop: one value per source, each handed to one method.
enum Wake {
    /// SIGHUP ([`Daemon::reload`]), SIGINT or SIGTERM (the loop ends).
    Signal(Event),
    /// The collection timer: [`Daemon::housekeep`].
    Collect,
    /// The stats timer: [`Daemon::log_stats`].
    LogStats,
    /// The API's sampling timer: [`Daemon::sample`].
    SampleCounters,
    /// A request of the API's handlers: [`Daemon::answer`].
    Request(api::Request),
}

impl Daemon {
    /// Validates the workspace, takes the pid file, binds the API, prepares
    /// the host, loads the program (with the maps an earlier daemon pinned,
    /// when there are any), attaches it, fills the maps, and writes the
    /// state file. Fails at the first step that does, leaving nothing of
    /// its own attached.
    pub async fn start(opts: &Options) -> Result<Self> {
        let workspace = Workspace::open(&opts.workspace)
            .with_context(|| format!("opening the workspace {}", opts.workspace.display()))?;
        let cfg = reload::load_config(&workspace)?;
        let signals = Signals::install()?;
        // Lets operator tools find this daemon to send SIGHUP; refuses a
        // second daemon for the same workspace and interface.
        let first = opts.ifaces.first().context("no interface given")?;
        let pid_name = format!("redirector-{first}");
        let pid_file = workspace
            .write_pid(&pid_name)
            .with_context(|| format!("writing {}", workspace.pid_path(&pid_name).display()))?;
        let lifecycle = Lifecycle::new(&workspace, &pid_name);
        let iface = opts.ifaces.join(",");
        // The API listens before anything is attached, so that a taken port
        // fails the start instead of leaving a daemon nobody can drive.
        let api = match &opts.api {
            Some(settings) => Some(ApiEnd::bind(settings, &workspace, iface.clone()).await?),
            None => None,
        };

        for iface in &opts.ifaces {
            host::prepare(iface)
                .with_context(|| format!("preparing the host for forwarding on {iface}"))?;
        }
        pin::refuse_if_owned(&opts.pin_dir)?;
        let pins = match PinDir::create(&opts.pin_dir) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(
                    "{e:#}: nothing is pinned, so `redirector stats` cannot reach this daemon \
                     and stopping it cuts every connection it forwards"
                );
                None
            }
        };
        let mut attached = Attached::load(&Load {
            ifaces: &opts.ifaces,
            mode: opts.xdp_mode,
            pins: pins.as_ref(),
            replace_maps: opts.replace_maps,
        })?;
        let state_path = pins.as_ref().map(|p| state::path_for(p.dir()));
        let previous = match &state_path {
            Some(Ok(path)) if attached.adopted() => State::read(path).ok(),
            _ => None,
        };
        let filled = (|| -> Result<(Maps, Rules)> {
            let mut maps = Maps::take(attached.ebpf_mut())?;
            sync::sync_egress(&mut maps.egress).context("filling EGRESS")?;
            let rules = if attached.adopted() {
                Rules::adopt(workspace, &opts.ifaces, &cfg, &mut maps, previous.as_ref())?
            } else {
                Rules::start(workspace, &opts.ifaces, &cfg, &mut maps)?
            };
            Ok((maps, rules))
        })();
        let (maps, rules) = match filled {
            Ok(filled) => filled,
            Err(e) => {
                // A first start leaves nothing behind; a takeover leaves the
                // earlier daemon's rules and connections running.
                attached.undo();
                if !attached.adopted()
                    && !attached.took_over()
                    && let Some(pins) = &pins
                {
                    pins.remove_all();
                }
                return Err(e);
            }
        };
        if let Some(pins) = &pins {
            attached.settle(pins, &opts.ifaces);
        }

        // Published only next to pins that `redirector stats` can open.
        let state_path = match state_path {
            Some(Ok(path)) => Some(path),
            Some(Err(e)) => {
                warn!("`redirector stats` will not know the rule names: {e:#}");
                None
            }
            None => None,
        };
        let (gc_expired, gc_evicted, gc_half_open_evicted) = previous
            .map(|p| (p.gc_expired, p.gc_evicted, p.gc_half_open_evicted))
            .unwrap_or_default();
        let mut daemon = Self {
            signals,
            timers: Timers::start(opts, api.is_some()),
            api,
            samples: api::Samples::default(),
            maps,
            rules,
            published: State {
                iface: iface.clone(),
                pid: std::process::id(),
                gc_expired,
                gc_evicted,
                gc_half_open_evicted,
                ..State::default()
            },
            state_path,
            open_flows: gc::OpenFlows::default(),
            open_flows6: gc::OpenFlows::default(),
            logged: None,
            pins,
            next_warm_up: Instant::now() + WARM_UP_EVERY,
            attached,
            lifecycle,
            _pid_file: pid_file,
        };
        daemon.publish();
        info!(ifaces = %iface, "redirector running");
        daemon.lifecycle.ready(&format!("forwarding on {iface}"));
        tokio::spawn(lifecycle::keep_alive());
        Ok(daemon)
    }

    /// The loop: waits for the next wake-up and hands it to its method,
    /// until SIGINT or SIGTERM, whose name it returns.
    pub async fn run(&mut self) -> &'static str {
        loop {
            match self.next().await {
                Wake::Signal(Event::Reload) => {
                    info!("SIGHUP: reloading the workspace");
                    let ticket = self.lifecycle.reloading();
                    let result = self.reload();
                    self.lifecycle.reloaded(ticket, result);
                }
                Wake::Signal(Event::Shutdown(signal)) => return signal,
                Wake::Collect => self.housekeep(),
                Wake::LogStats => self.log_stats(),
                Wake::SampleCounters => self.sample(),
                Wake::Request(request) => self.answer(request),
            }
        }
    }

    /// The next wake-up; cancel-safe, as every source is. A timer that is
    /// off and an absent API never wake the loop.
    async fn next(&mut self) -> Wake {
        tokio::select! {
            event = self.signals.next() => Wake::Signal(event),
            _ = self.timers.collect.tick() => Wake::Collect,
            _ = tick(&mut self.timers.stats) => Wake::LogStats,
            _ = tick(&mut self.timers.sample) => Wake::SampleCounters,
            request = ApiEnd::next(&mut self.api) => Wake::Request(request),
        }
    }

    /// SIGINT/SIGTERM: closes the API, then either leaves the program
    /// attached and its maps pinned, forwarding on, for the next daemon to
    /// take over (`Stop::Leave`), or drains as told, detaches and removes
    /// the pins and the state file (`Stop::Detach`). Consumes the daemon:
    /// the maps are not touched again. Detaching's error is the result;
    /// the pins and the state file are cleaned up even then.
    pub async fn stop(mut self, signal: &'static str, how: Stop) -> Result<()> {
        // Requests in flight get "the daemon is stopping" rather than a hang.
        if let Some(api) = self.api.take() {
            api.server.abort();
        }
        info!(signal, "stopping");
        self.lifecycle.stopping();
        let drain = match how {
            Stop::Leave => {
                self.leave();
                return Ok(());
            }
            Stop::Detach { drain } => drain,
        };
        if let Some(limit) = drain {
            self.drain(limit).await;
        }
        let detached = self.attached.detach();
        if let Some(pins) = self.pins.take() {
            pins.remove_all();
        }
        if let Some(path) = &self.state_path
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %e, "removing the state file");
        }
        detached
    }

    /// Exits leaving the program attached: the state file says no daemon
    /// runs (pid 0) and keeps the rule names and totals for the next one.
    fn leave(mut self) {
        self.published.pid = 0;
        self.publish();
        let dir = self.pins.as_ref().map(|p| p.dir().display().to_string());
        if self.attached.release()
            && let Some(dir) = dir
        {
            info!(
                pin_dir = %dir,
                "the program stays attached and keeps forwarding: `redirector run` takes over, \
                 `redirector detach --pin-dir {dir}` removes it"
            );
        }
    }

    /// Stops redirecting new connections and waits, up to `limit`, until the
    /// connections in flight have finished (FIN or RST seen, or idle past
    /// their timeout), so that detaching cuts none. Another SIGINT/SIGTERM
    /// ends the wait at once.
    async fn drain(&mut self, limit: Duration) {
        if let Err(e) = self.rules.switch_off(&mut self.maps) {
            warn!("cannot switch the rules off, detaching now: {e:#}");
            return;
        }
        self.publish();
        info!(limit = ?limit, "draining: no new connections are redirected; waiting for those in flight");
        let deadline = Instant::now() + limit;
        let mut tick = interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = self.signals.next() => {
                    if let Event::Shutdown(signal) = event {
                        info!(signal, "second signal: detaching without waiting");
                        return;
                    }
                }
                _ = tick.tick() => {
                    let Some(report) = self.collect() else {
                        return;
                    };
                    self.publish();
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

    /// The collection timer's work: expires flows, keeps EGRESS current
    /// (interfaces come and go: VPNs, VLANs), republishes, and keeps the
    /// new hosts' neighbour entries warm.
    fn housekeep(&mut self) {
        let _ = self.collect();
        self.refresh_egress();
        self.publish();
        // An entry once resolved stays valid (STALE) while the table is
        // small; a reload probes every target itself.
        if Instant::now() >= self.next_warm_up {
            host::warm_neighbours(self.rules.current().rules.values().map(|r| r.to));
            self.next_warm_up = Instant::now() + WARM_UP_EVERY;
        }
    }

    /// One garbage collection pass, with its totals added to `published`
    /// (not yet written) and the rules whose last flow went ending their
    /// draining. `None` when the flow table could not be read.
    fn collect(&mut self) -> Option<gc::Report> {
        let started = Instant::now();
        let timeouts = *self.rules.timeouts();
        let maps = &mut self.maps;
        let v4 = gc::collect_both(
            &mut maps.flows,
            &mut maps.embryos,
            &timeouts,
            &mut self.open_flows,
        );
        let v6 = gc::collect_both(
            &mut maps.flows6,
            &mut maps.embryos6,
            &timeouts,
            &mut self.open_flows6,
        );
        // Each family on its own: one table that cannot be read does not
        // lose what the other's pass did.
        let mut report = gc::Report::default();
        let mut complete = true;
        for (collected, capacity, table) in [
            (v4, MAX_FLOW_ENTRIES, "FLOWS"),
            (v6, MAX_FLOW6_ENTRIES, "FLOWS6"),
        ] {
            match collected {
                Ok(part) => {
                    // Two entries per connection; past this, established
                    // connections start to evict one another.
                    let entries = 2 * part.active.values().sum::<u64>();
                    if entries * 10 > u64::from(capacity) * 9 {
                        warn!(
                            entries,
                            capacity,
                            table,
                            "the table of established flows is over 90 % full: idle ones will be \
                             evicted"
                        );
                    }
                    report.merge(part);
                }
                Err(e) => {
                    warn!(table, "flow collection failed: {e:#}");
                    complete = false;
                }
            }
        }
        for (id, n) in &report.expired {
            *self.published.gc_expired.entry(*id).or_default() += n;
        }
        for (id, n) in &report.evicted {
            *self.published.gc_evicted.entry(*id).or_default() += n;
        }
        for (id, n) in &report.half_open_evicted {
            *self.published.gc_half_open_evicted.entry(*id).or_default() += n;
        }
        let evicted: u64 = report.evicted.values().sum();
        if evicted > 0 {
            warn!(
                evicted,
                "connections lost one or both entries to LRU eviction: FLOWS (FLOWS6 for \
                 IPv6) is too small for the load, and their clients will be reset"
            );
        }
        debug!(
            active = report.active.values().sum::<u64>(),
            expired = report.expired.values().sum::<u64>(),
            took = ?started.elapsed(),
            "flow collection"
        );
        // A draining rule ends only when every table says it has no flow.
        if !complete {
            return None;
        }
        self.rules.after_collection(&report);
        Some(report)
    }

    /// SIGHUP and the API's changes: re-reads the workspace into the maps
    /// and republishes. `Ok` once the new config is in force; otherwise why
    /// not, and the previous rules are.
    fn reload(&mut self) -> Result<(), String> {
        self.refresh_egress();
        let applied = self.rules.reload(&mut self.maps);
        self.publish();
        applied
    }

    /// Makes EGRESS hold the host's interfaces as they are now; a failure
    /// is logged and leaves the previous contents.
    fn refresh_egress(&mut self) {
        if let Err(e) = sync::sync_egress(&mut self.maps.egress) {
            warn!("refreshing EGRESS: {e:#}");
        }
    }

    /// Serves one API request. A requester that went away is no error: the
    /// change is made anyway.
    fn answer(&mut self, request: api::Request) {
        match request {
            api::Request::Apply { reply } => {
                let _ = reply.send(self.reload());
            }
            api::Request::Rules { reply } => {
                let _ = reply.send(self.rules.infos());
            }
            api::Request::Stats { reply } => {
                let _ = reply.send(self.api_report().map_err(|e| format!("{e:#}")));
            }
        }
    }

    /// The report of `redirector stats --json`, rates measured since the
    /// sample the loop took a second or two ago.
    fn api_report(&self) -> Result<stats::Report> {
        let state = &self.published;
        let now = stats::read_counters(&self.maps.counters, stats::counter_ids(state))?;
        let at = Instant::now();
        let active = stats::occupancy(stats::FlowTables {
            flows: &self.maps.flows,
            embryos: &self.maps.embryos,
            flows6: &self.maps.flows6,
            embryos6: &self.maps.embryos6,
        })?;
        let empty = BTreeMap::new();
        let (before, elapsed) = match self.samples.base() {
            Some((then_at, then)) => (then, at - *then_at),
            None => (&empty, Duration::ZERO),
        };
        Ok(stats::build(state, before, &now, elapsed, &active))
    }

    /// Takes the counter sample the API's rates are measured against; a
    /// failed read only skips one sample.
    fn sample(&mut self) {
        match stats::read_counters(&self.maps.counters, stats::counter_ids(&self.published)) {
            Ok(c) => self.samples.push(Instant::now(), c),
            Err(e) => debug!("sampling counters for the API: {e:#}"),
        }
    }

    /// Puts the rules in force into `published` and, when there is a state
    /// file, writes it for `redirector stats`. Called after every change of
    /// the rules and every collection pass.
    fn publish(&mut self) {
        self.rules.fill_state(&mut self.published);
        let Some(path) = &self.state_path else {
            return;
        };
        if let Err(e) = self.published.write(path) {
            warn!("`redirector stats` will show stale rule names: {e:#}");
        }
    }

    /// Logs one line per rule with what changed since the previous tick
    /// (nothing on the first tick, which only takes the baseline).
    fn log_stats(&mut self) {
        let ids: Vec<u32> = self.published.rules.iter().map(|r| r.id).collect();
        let now = match stats::read_counters(&self.maps.counters, ids) {
            Ok(c) => c,
            Err(e) => {
                warn!("reading counters: {e:#}");
                return;
            }
        };
        let at = Instant::now();
        if let Some((then_at, then)) = self.logged.as_ref() {
            let report = stats::build(&self.published, then, &now, at - *then_at, &BTreeMap::new());
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
        self.logged = Some((at, now));
    }
}

/// The loop's clocks. Each fires first at once, then every period, and
/// delays a missed tick rather than bursting to catch up.
struct Timers {
    /// Flow collection, EGRESS refresh, the state file.
    collect: Interval,
    /// Per-rule log lines; `None` without `--stats-interval`.
    stats: Option<Interval>,
    /// Counter samples for the API's rates; `None` with `--no-api`.
    sample: Option<Interval>,
}

impl Timers {
    fn start(opts: &Options, api: bool) -> Self {
        Self {
            collect: every(opts.gc_interval),
            stats: opts.stats_interval.map(every),
            sample: api.then(|| every(Duration::from_secs(1))),
        }
    }
}

/// A timer that first fires at once, then every `period`, delaying a
/// missed tick.
fn every(period: Duration) -> Interval {
    let mut timer = interval(period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// The next tick of a timer; never, for a timer that is off.
async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The control API's end of the loop: the HTTP server's task and the
/// requests its handlers send. The server never touches the maps; it asks
/// the loop and waits for the answer.
struct ApiEnd {
    /// Aborted on stop, so that requests in flight fail instead of hanging.
    server: JoinHandle<()>,
    requests: mpsc::Receiver<api::Request>,
    /// Kept so that `requests` never reports closed while the loop runs.
    _sender: mpsc::Sender<api::Request>,
}

impl ApiEnd {
    /// Loads the token, binds the listener (so that a taken port fails the
    /// start) and spawns the server.
    async fn bind(settings: &api::Settings, workspace: &Workspace, iface: String) -> Result<Self> {
        let (sender, requests) = mpsc::channel::<api::Request>(16);
        let token = api::token(workspace, settings.token_file.as_deref())?;
        let serve = api::bind(settings, workspace.clone(), iface, token, sender.clone()).await?;
        Ok(Self {
            server: tokio::spawn(serve),
            requests,
            _sender: sender,
        })
    }

    /// The next request; never, without an API. Cancel-safe.
    async fn next(api: &mut Option<Self>) -> api::Request {
        if let Some(api) = api
            && let Some(request) = api.requests.recv().await
        {
            return request;
        }
        std::future::pending().await
    }
}
