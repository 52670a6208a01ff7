//! `redirector`: the command line. Everything else lives in the library.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use redirector::loader::AttachMode;
use redirector::{daemon, pin, reload, stats};

/// Forwards new TCP connections that still arrive at this (old) host to the
/// new release, in XDP, following the rules of a cutover workspace.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the redirector to an interface and run in the foreground.
    /// SIGHUP re-reads the workspace; SIGINT/SIGTERM exit, leaving the
    /// program forwarding for the next `run` to take over (unless --detach).
    #[command(after_help = RUN_HELP)]
    Run {
        /// The interface clients arrive on. Repeat it for the interfaces new
        /// hosts are reached through, when they are not the same one: the
        /// program must see the replies too.
        #[arg(long, required = true)]
        iface: Vec<String>,
        /// How the program is attached: `native` runs it in the NIC's
        /// driver, `generic` in the kernel's receive path; `auto` picks
        /// native on NICs and generic on virtual devices such as veth.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        xdp_mode: AttachMode,
        /// The config workspace directory (its redirector.toml holds the rules).
        #[arg(long)]
        workspace: PathBuf,
        /// Log per-rule figures every S seconds.
        #[arg(long, value_name = "S")]
        stats_interval: Option<f64>,
        /// Where to pin the maps for `redirector stats`
        /// [default: /sys/fs/bpf/cutover/IFACE].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// How often idle flows are looked for, in seconds. Each pass reads
        /// the whole flow table (about 0.1 s for 120k entries).
        #[arg(long, value_name = "S", default_value_t = 10.0)]
        gc_interval: f64,
        /// On SIGINT/SIGTERM, detach the program and remove its pins, cutting
        /// the connections it still forwards. Without it the program stays
        /// attached and forwarding, for the next `redirector run` to take
        /// over without cutting any.
        #[arg(long)]
        detach: bool,
        /// Detach on SIGINT/SIGTERM (implies --detach), but first stop
        /// redirecting new connections and wait up to S seconds for those
        /// in flight to finish (a second signal detaches at once).
        #[arg(long, value_name = "S")]
        drain_on_stop: Option<f64>,
        /// Take over from a redirector of another version whose pinned maps
        /// have another layout: its program is replaced and the connections
        /// in its maps are cut. Without it such a start is refused.
        #[arg(long)]
        replace_maps: bool,
        /// Where the control API listens (see README, "Control API").
        #[arg(long, value_name = "ADDR:PORT", default_value = redirector::api::DEFAULT_LISTEN)]
        api: std::net::SocketAddr,
        /// Run without the control API.
        #[arg(long, conflicts_with_all = ["api", "api_token_file"])]
        no_api: bool,
        /// The API's bearer token file [default: WORKSPACE/.cutover/api-token,
        /// created with a random token when missing].
        #[arg(long, value_name = "PATH")]
        api_token_file: Option<PathBuf>,
    },
    /// Print per-rule figures of a running redirector.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The running daemon's pin directory [default: /sys/fs/bpf/cutover/IFACE,
        /// or the only one there is].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// The interface the daemon runs on (selects the default pin directory).
        #[arg(long, conflicts_with = "pin_dir")]
        iface: Option<String>,
        /// Rates are measured over this many seconds.
        #[arg(long, value_name = "S", default_value_t = 1.0)]
        interval: f64,
    },
    /// Detach a redirector that `run` left attached, and remove its pins and
    /// state file: new and existing connections then reach this host's own
    /// stack. Refused while a daemon runs there (stop it with --detach).
    Detach {
        /// The pin directory [default: /sys/fs/bpf/cutover/IFACE].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// The interface the daemon ran on (its first --iface).
        #[arg(long, conflicts_with = "pin_dir", required_unless_present = "pin_dir")]
        iface: Option<String>,
    },
    /// Validate a workspace's redirector.toml and print the rules. A commit
    /// to the workspace that was interrupted (a crash, a full disk) is
    /// finished first, as the daemon's start would.
    Check {
        /// The config workspace directory.
        dir: PathBuf,
    },
    /// Reload the redirector running on an interface for a workspace and
    /// wait until the reload is done: exits 0 once the rules are in force,
    /// 1 when they were refused (the previous rules stay). What systemd's
    /// ExecReload= runs, so that `systemctl reload` returns when the
    /// reload did.
    Reload {
        /// The config workspace directory.
        #[arg(long, value_name = "DIR")]
        workspace: PathBuf,
        /// The (first) interface the daemon was started with.
        #[arg(long)]
        iface: String,
        /// Give up waiting after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
    },
}

const RUN_HELP: &str = "\
Reload (SIGHUP): a rule whose `from` is unchanged keeps its id, its counters and
its flows; a changed `to` applies to new connections only; a removed rule stops
redirecting at once (new connections reach this host's own stack) while its
existing connections keep flowing until they close or go idle. A workspace
that fails validation is logged (file:line: field: problem) and the rules in
force stay.

Host settings changed on start (and left so on exit): net.ipv4.ip_forward=1,
conf.IFACE.forwarding=1, conf.{all,IFACE}.send_redirects=0,
conf.IFACE.accept_local=1, conf.{all,IFACE}.rp_filter=0.

Stopping (SIGINT/SIGTERM) leaves the program attached and its maps pinned
under --pin-dir: forwarding goes on without a daemon (no collection, no API),
and the next `redirector run` with the same --pin-dir takes over its rules and
connections without cutting one, swapping its own program in atomically (an
upgrade too, as long as the map layout version is the same). --detach
detaches instead, cutting the connections in flight, unless --drain-on-stop S
lets them finish first (no new connection is redirected meanwhile; a second
signal detaches at once). `redirector detach` removes what a daemon left.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redirector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run {
            iface,
            xdp_mode,
            workspace,
            stats_interval,
            pin_dir,
            gc_interval,
            detach,
            drain_on_stop,
            replace_maps,
            api,
            no_api,
            api_token_file,
        } => {
            let first = iface.first().context("--iface is required")?;
            let opts = daemon::Options {
                pin_dir: pin_dir.unwrap_or_else(|| pin::default_dir(first)),
                ifaces: iface,
                xdp_mode,
                workspace,
                stats_interval: stats_interval.map(seconds).transpose()?,
                gc_interval: seconds(gc_interval)?,
                on_stop: match (detach, drain_on_stop) {
                    (_, Some(s)) => daemon::Stop::Detach {
                        drain: Some(seconds(s)?),
                    },
                    (true, None) => daemon::Stop::Detach { drain: None },
                    (false, None) => daemon::Stop::Leave,
                },
                replace_maps,
                api: (!no_api).then_some(redirector::api::Settings {
                    listen: api,
                    token_file: api_token_file,
                }),
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(daemon::run(opts))
        }
        Command::Stats {
            json,
            pin_dir,
            iface,
            interval,
        } => {
            let dir = match (pin_dir, iface) {
                (Some(dir), _) => dir,
                (None, Some(iface)) => pin::default_dir(&iface),
                (None, None) => only_pin_dir()?,
            };
            stats::run(&dir, seconds(interval)?, json)
        }
        Command::Detach { pin_dir, iface } => {
            let dir = match (pin_dir, iface) {
                (Some(dir), _) => dir,
                (None, Some(iface)) => pin::default_dir(&iface),
                (None, None) => bail!("pass --iface or --pin-dir"),
            };
            detach(&dir)
        }
        Command::Reload {
            workspace,
            iface,
            timeout,
        } => cutover_control_api::lifecycle::reload_and_wait(
            &workspace,
            &format!("redirector-{iface}"),
            std::time::Duration::from_secs(timeout),
        ),
        Command::Check { dir } => {
            let workspace = cutover_workspace::Workspace::open(&dir)
                .with_context(|| format!("opening the workspace {}", dir.display()))?;
            let cfg = reload::load_config(&workspace)?;
            println!(
                "{}: {} rule(s), NAT ports {}-{}",
                workspace.redirector_path().display(),
                cfg.rules.len(),
                cfg.nat.port_min,
                cfg.nat.port_max
            );
            for r in &cfg.rules {
                println!("  {}: {} -> {}", r.name, r.from_text(), r.to_text());
            }
            Ok(())
        }
    }
}

/// `redirector detach`: removes every pin (the links first) and the state
/// file of a pin directory no daemon runs on.
fn detach(dir: &std::path::Path) -> Result<()> {
    let pins = pin::PinDir::existing(dir)?;
    let ifaces = pins.linked_ifaces();
    let state = redirector::state::path_for(dir).ok();
    pins.remove_all();
    if let Some(path) = state
        && let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        bail!("removing the state file {}: {e}", path.display());
    }
    if ifaces.is_empty() {
        println!("nothing was attached; pins under {} removed", dir.display());
    } else {
        println!(
            "detached from {}; pins under {} removed",
            ifaces.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// A command-line number of seconds, refused unless positive and finite.
fn seconds(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{s} is not a positive number of seconds"))
}

/// With neither --pin-dir nor --iface: the one daemon there is.
fn only_pin_dir() -> Result<PathBuf> {
    let root = pin::default_dir("");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| {
            format!(
                "no redirector found under {} (pass --iface or --pin-dir)",
                root.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no redirector runs (nothing under {})", root.display()),
        _ => bail!(
            "several redirectors run ({}): pass --iface",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
