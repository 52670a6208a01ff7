//! The `dnsd` binary: the command line (`dnsd [serve]`, `dnsd check`),
//! start-up — the first snapshot, the sockets, the API on a runtime of its
//! own — and the signals (SIGHUP reloads, SIGTERM stops). Everything else
//! is the library (`lib.rs`).

use tikv_jemallocator::Jemalloc;

/// jemalloc, set up by `memory` (every snapshot built in an arena of its
/// own); the binary's allocator, not the library's, so that the fuzz
/// targets keep theirs.
#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use arc_swap::ArcSwap;
use clap::{CommandFactory, Parser, Subcommand};
use cutover_control_api::lifecycle::{self, Lifecycle};
use cutover_control_api::signals::{Event, Signals};
use hickory_server::Server;
use tracing::{info, warn};

use cutover_workspace::{Settlement, Workspace};

use dnsd::change::{api, sync, update_handler, zone_edit};
use dnsd::health;
use dnsd::serve::{server, sockets, tcp};
use dnsd::snapshot::Snapshot;
use dnsd::{memory, privileges, reload, zone};

/// Authoritative DNS server for a cutover config workspace.
///
/// Serves every zone file `zones/<origin>.zone` of the workspace over UDP
/// (one SO_REUSEPORT socket per core) and TCP, with the `[[service]]`
/// shorthands of `dnsd.toml` replacing their names' A/AAAA records.
/// Multi-address answers rotate. SIGHUP reloads the workspace; a broken one
/// is logged and the previous zones keep being served. SIGTERM stops.
///
/// The control API (HTTP/JSON, bearer token) lists and changes services,
/// RRsets and workspace generations; every change is a new generation,
/// applied like a SIGHUP. Its defaults come from dnsd.toml's [api]
/// section (127.0.0.1:8053, on); the flags below override it.
///
/// Dynamic updates (RFC 2136) are accepted over UDP and TCP when signed
/// with TSIG (hmac-sha256) by a key that dnsd.toml's [[tsig_key]] lists for
/// the zone; each accepted update is a new generation too.
///
/// The pid is in WORKSPACE/.cutover/run/dnsd.pid.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The config workspace directory (dnsd.toml, zones/*.zone).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,

    /// Listen on ADDR:PORT (UDP and TCP) instead of dnsd.toml's
    /// `server.listen`. Repeat for several addresses.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,

    /// Serve the control API (HTTP, JSON, bearer token) on ADDR:PORT, even
    /// if dnsd.toml says `[api] enabled = false` [default: dnsd.toml's
    /// `[api] listen`, or 127.0.0.1:8053].
    #[arg(long, value_name = "ADDR:PORT")]
    api: Option<SocketAddr>,

    /// Read the API's bearer token from PATH instead of dnsd.toml's
    /// `[api] token_file` or WORKSPACE/.cutover/api-token (which is created
    /// when missing).
    #[arg(long, value_name = "PATH")]
    api_token_file: Option<PathBuf>,

    /// Do not serve the control API.
    #[arg(long, conflicts_with_all = ["api", "api_token_file"])]
    no_api: bool,

    /// Started as root: run as USER from the start (the workspace must be
    /// USER's), keeping only CAP_NET_BIND_SERVICE until the sockets are
    /// bound. Started as another user with CAP_NET_BIND_SERVICE (systemd's
    /// AmbientCapabilities=), dnsd gives the capability up once bound
    /// without this flag.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
}

/// How the command line asks for the control API; dnsd.toml's `[api]`
/// fills in what it leaves out.
struct ApiFlags {
    off: bool,
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
}

/// How the control API is served, flags and dnsd.toml combined.
struct ApiOptions {
    listen: SocketAddr,
    token_file: Option<PathBuf>,
}

impl ApiFlags {
    /// The flags win; `[api]`'s relative token_file is relative to the
    /// workspace. `None`: no API.
    fn resolve(self, config: &cutover_workspace::ApiConfig, root: &Path) -> Option<ApiOptions> {
        if self.off || (!config.enabled && self.listen.is_none()) {
            return None;
        }
        Some(ApiOptions {
            listen: self.listen.unwrap_or(config.listen),
            token_file: self
                .token_file
                .or_else(|| config.token_file.as_ref().map(|f| root.join(f))),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check a workspace without serving it: prints a summary and exits 0,
    /// or prints every problem (file:line: what is wrong) and exits 1. A
    /// commit to the workspace that was interrupted (a crash, a full disk)
    /// is finished first, as dnsd's start would.
    Check {
        /// The config workspace directory.
        dir: PathBuf,
    },
    /// Reload the dnsd serving a workspace and wait until the reload is
    /// done: exits 0 once the workspace is in force, 1 with dnsd's reasons
    /// when it refused it (the previous state keeps serving). What
    /// systemd's ExecReload= runs, so that `systemctl reload dnsd` returns
    /// when the reload did.
    Reload {
        /// The config workspace directory.
        #[arg(long, value_name = "DIR")]
        workspace: PathBuf,
        /// Give up waiting after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { dir }) => check(&dir),
        Some(Command::Reload { workspace, timeout }) => {
            match lifecycle::reload_and_wait(&workspace, "dnsd", Duration::from_secs(timeout)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dnsd reload: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let Some(workspace) = cli.workspace else {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "pass --workspace DIR to serve, or `check DIR` to validate",
                    )
                    .exit()
            };
            init_logging();
            let api = ApiFlags {
                off: cli.no_api,
                listen: cli.api,
                token_file: cli.api_token_file,
            };
            match serve(&workspace, &cli.listen, api, cli.user.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dnsd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A runtime thread: it never binds, so it keeps no capability.
fn unprivileged_thread() {
    if let Err(e) = privileges::drop_thread_capabilities() {
        tracing::error!(%e, "a thread could not give up its capabilities");
    }
}

fn init_logging() {
    // hickory logs two info events per query and a warning per malformed
    // packet (a flood of bad EDNS options wrote 53,668 lines in a second):
    // only its errors reach the log.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,hickory_server=error,hickory_net=error,hickory_proto=error",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn check(dir: &Path) -> ExitCode {
    // Settled as dnsd's start would: an interrupted commit is finished, or
    // the generation it was installing is checked from its copy.
    let settled = Workspace::open(dir).map(|ws| ws.settled());
    if let Ok(settled) = &settled
        && settled.settlement() != &Settlement::Live
    {
        eprintln!("{}: {}", dir.display(), settled.settlement());
    }
    let read = settled.as_ref().map_or(dir, |s| s.root());
    let live = Workspace::open(dir).map_err(|e| e.to_string());
    let loaded = match (&settled, &live) {
        (Ok(settled), Ok(live)) => zone::load_settled(live, settled),
        _ => zone::load(read),
    };
    match loaded {
        Ok(ws) => {
            for zone in &ws.zones {
                println!(
                    "{}: zone {} with {} records",
                    zone.file.display(),
                    zone.origin,
                    zone.records.len()
                );
            }
            for w in ws.warnings() {
                println!("{}", warning(w));
            }
            // A key for a zone not served is harmless (its updates get
            // NOTAUTH) but most likely a typo.
            for key in &ws.config.tsig_keys {
                for zone in &key.zones {
                    if !ws
                        .zones
                        .iter()
                        .any(|z| z.origin.to_string().eq_ignore_ascii_case(zone))
                    {
                        println!(
                            "{}:{}: warning: tsig_key {} lists {zone}, which is not a served zone",
                            dir.join(cutover_workspace::DNSD_FILE).display(),
                            key.line,
                            key.name
                        );
                    }
                }
            }
            println!(
                "ok: {} zones, {} records, {} services, {} TSIG keys",
                ws.zones.len(),
                ws.record_count(),
                ws.config.services.len(),
                ws.config.tsig_keys.len()
            );
            for zone in ws.broken.iter().filter(|z| z.withheld) {
                for e in &zone.errors {
                    println!("{}: {}", zone.origin, e.message);
                }
            }
            if ws.faulty().next().is_none() {
                return ExitCode::SUCCESS;
            }
            for e in ws.problems() {
                eprintln!("{e}");
            }
            let names: Vec<String> = ws.faulty().map(|z| z.origin.to_string()).collect();
            eprintln!(
                "{}: {} problem(s); zone(s) {} would not be served (SERVFAIL), the others would",
                dir.display(),
                ws.problems().count(),
                names.join(", ")
            );
            ExitCode::FAILURE
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} problem(s); nothing would be served",
                dir.display(),
                errors.0.len()
            );
            ExitCode::FAILURE
        }
    }
}

/// A problem that does not stop a zone from being served, as `dnsd check`
/// prints it: `file:line: warning: what`.
fn warning(e: &cutover_workspace::ConfigError) -> String {
    let mut w = e.clone();
    w.message = format!("warning: {}", e.message);
    w.to_string()
}

/// Serves each change of a health check's state (see `health`). Changes
/// that come together (a backend with several services, a switch that
/// failed) are served in one new snapshot.
async fn serve_health_changes(
    reloader: Arc<reload::Reloader>,
    one_change: zone_edit::ChangeLock,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<health::Target>,
) {
    while changes.recv().await.is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        while changes.try_recv().is_ok() {}
        // A change that cannot be served now (dnsd.toml unreadable for a
        // moment) is tried again: a dead address must not stay served
        // until the next change of state.
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            let served = {
                let _one_change = one_change.lock().await;
                reloader.serve_health().await
            };
            match served {
                Ok(()) => break,
                Err(e) => {
                    warn!("serving a health change, trying again in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }
}

fn serve(workspace: &Path, listen: &[SocketAddr], api: ApiFlags, user: Option<&str>) -> Result<()> {
    // First thing, while dnsd has one thread: with --user, everything it
    // creates in the workspace from here on is that user's.
    privileges::become_user(user)?;
    let ws = Workspace::open(workspace).map_err(|e| anyhow!("{e}"))?;
    // Before anything is bound or written: one dnsd per workspace (the pid
    // file itself is written once dnsd serves).
    if let Some(pid) = ws
        .running_pid("dnsd")
        .with_context(|| format!("reading {}", ws.pid_path("dnsd").display()))?
        && pid != std::process::id()
    {
        bail!(
            "dnsd already serves {} as pid {pid} ({})",
            workspace.display(),
            ws.pid_path("dnsd").display()
        );
    }
    let settled = reload::settled(&ws);
    let config_stamp = reload::Reloader::config_stamp(workspace);
    let mut loaded = zone::load_settled(&ws, &settled)
        .map_err(|errors| anyhow!("{errors}"))
        .with_context(|| format!("the workspace {} is not valid", workspace.display()))?;
    health::keep_serials_rising(&mut loaded, &ws, None);
    drop(settled);
    for w in loaded.warnings() {
        warn!("{w}");
    }
    reload::report_broken(&loaded);
    // The socket settings in effect, for reload to tell changes that need a
    // restart.
    let sockets_config = loaded.config.server.clone();
    let cpu_affinity = sockets_config.cpu_affinity;
    let tcp_connections = sockets_config.tcp_connections;
    let from_cli = !listen.is_empty();
    let listen = if listen.is_empty() {
        loaded.config.server.listen.clone()
    } else {
        listen.to_vec()
    };
    let sockets = match loaded.config.server.udp_sockets {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let records = loaded.record_count();
    let services = loaded.config.services.clone();
    let api = api.resolve(&loaded.config.api, workspace);
    let arenas = memory::SnapshotArenas::new();
    let (snapshot, arena) = arenas.build(|| Snapshot::from_workspace(loaded, None));
    arenas.serve(arena);
    let state = Arc::new(ArcSwap::from_pointee(snapshot));
    // What loading freed goes back now, not over the allocator's decay.
    memory::release();
    let token = match &api {
        Some(options) => Some(api::load_token(workspace, options.token_file.as_deref())?),
        None => None,
    };

    // No thread but this one binds: the others give up their capabilities
    // as they start (see `privileges`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(unprivileged_thread)
        .build()
        .context("starting the async runtime")?;
    // The control API has a runtime of its own, so that no query load, TCP
    // flood or update burst on the main one can keep it from answering.
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dnsd-api")
        .enable_all()
        .on_thread_start(unprivileged_thread)
        .build()
        .context("starting the control API's runtime")?;
    let api_handle = api_runtime.handle().clone();
    let served = runtime.block_on(async {
        // Signal handlers first: a SIGHUP that arrives once the sockets
        // answer must reload, not kill the process.
        let mut signals = Signals::install()?;

        let zones = state.load().zone_count();
        let (health, health_changes) = health::Monitor::new();
        let reloader = Arc::new(reload::Reloader::new(
            workspace.to_path_buf(),
            state.clone(),
            sockets_config,
            from_cli,
            arenas,
            config_stamp,
            health.clone(),
        ));
        health.reconcile(&services);
        // The API and dynamic updates change the workspace one at a time;
        // health changes wait their turn too, so that none is built on a
        // service or serial another change is replacing.
        let changes = zone_edit::ChangeLock::default();
        tokio::spawn(serve_health_changes(
            reloader.clone(),
            changes.clone(),
            health_changes,
        ));
        let syncer = sync::Syncer::new(ws.clone(), reloader.clone(), changes.clone());
        let updater = Arc::new(update_handler::Updater::new(
            ws.clone(),
            reloader.clone(),
            changes.clone(),
            syncer.clone(),
        ));
        let transfers = Arc::new(dnsd::transfer::Transfers::new(ws.clone()));
        // NOTIFY and requests to primaries go out from the address the
        // other servers know dnsd by.
        let notify_from = listen
            .first()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        tokio::spawn(dnsd::transfer::notify::run(
            state.clone(),
            Arc::clone(&transfers),
            notify_from,
        ));
        tokio::spawn(dnsd::transfer::replica::run(
            dnsd::transfer::replica::Keeper {
                transfers: Arc::clone(&transfers),
                reloader: reloader.clone(),
                changes: changes.clone(),
                syncer: syncer.clone(),
                from: notify_from,
            },
        ));
        let handler = server::Handler::new(state)
            .with_updates(updater)
            .with_transfers(Arc::clone(&transfers));
        let mut server = Server::new(handler.clone());
        let fd_limit = tcp::raise_fd_limit();
        let tcp_limits = tcp::Limits::new(tcp_connections, fd_limit);
        for addr in &listen {
            let bound = sockets::listen(
                &mut server,
                &handler,
                *addr,
                sockets,
                cpu_affinity,
                tcp_limits,
            )?;
            info!(
                %bound, udp_sockets = sockets, tcp_connections = tcp_limits.max_connections,
                fd_limit, "listening on UDP and TCP"
            );
        }
        info!(zones, records, workspace = %workspace.display(), "serving");
        dnsd::serve::malformed::start();
        if let (Some(options), Some(token)) = (api, token) {
            let api = api::Api::new(
                ws.clone(),
                reloader.clone(),
                token,
                changes,
                syncer,
                Arc::clone(&transfers),
                listen.clone(),
            );
            api_handle
                .spawn(api::start(options.listen, api))
                .await
                .context("the control API's runtime")??;
        }
        privileges::after_binding()?;
        memory::start_background_threads();
        // Kept until serve returns, so the file names a live dnsd exactly
        // as long as one runs (a tool that sends SIGHUP reads it); written
        // as the user dnsd serves as.
        let _pid = ws
            .write_pid("dnsd")
            .with_context(|| format!("writing {}", ws.pid_path("dnsd").display()))?;
        let lifecycle = Arc::new(Lifecycle::new(&ws, "dnsd"));
        lifecycle.ready(&format!("serving {zones} zones"));
        tokio::spawn(lifecycle::keep_alive());
        let signal = loop {
            match signals.next().await {
                // On a task of its own, so that a stop does not wait for a
                // long reload; reloads queue behind one another.
                Event::Reload => {
                    let reloader = reloader.clone();
                    let lifecycle = Arc::clone(&lifecycle);
                    let ticket = lifecycle.reloading();
                    // Failures are logged by `reload`; dnsd keeps serving.
                    tokio::spawn(async move {
                        let result = reloader.reload().await;
                        lifecycle.reloaded(ticket, result);
                    });
                }
                Event::Shutdown(signal) => break signal,
            }
        };
        lifecycle.stopping();
        info!(signal, "stopping");
        dnsd::serve::malformed::summarize("since the last summary");
        let token = server.shutdown_token().clone();
        token.cancel();
        if tokio::time::timeout(Duration::from_secs(5), server.block_until_done())
            .await
            .is_err()
        {
            warn!("connections still open after 5 s; exiting anyway");
        }
        Ok(())
    });
    api_runtime.shutdown_background();
    served
}
