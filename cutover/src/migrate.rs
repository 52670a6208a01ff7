//! `cutover migrate` and `cutover rollback`: carry out a migration's plan
//! (`migration::Migration::next_step`) against the daemons, saving the record
//! after every step so that any interruption can be resumed.

use std::io::Write;
use std::net::IpAddr;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cutover_control_api::contract::{DrainSample, MigrationReport};

use crate::Apis;
use crate::api::fqdn;
use crate::lease::Lease;
use crate::migration::{Migration, Phase, Step, Traffic, now};
use crate::{loops, preflight};

#[derive(clap::Args)]
pub struct Args {
    /// The service to move (a `[[service]]` of dnsd).
    name: String,
    /// The new host's address; a pool's addresses, `--to A,B,C`, each
    /// taking the place of one old address.
    #[arg(long, required = true, value_delimiter = ',')]
    to: Vec<IpAddr>,
    /// The old addresses to redirect, one per `--to`, in the same order
    /// (default: the service's addresses of `--to`'s family, when there are
    /// as many).
    #[arg(long, value_delimiter = ',')]
    from: Vec<IpAddr>,
    /// The address the old host receives `--from`'s clients on, when it is
    /// not `--from` itself: on EC2 an Elastic IP arrives translated to the
    /// instance's private address, which the redirect must match.
    #[arg(long, value_name = "ADDR")]
    redirect_from: Option<IpAddr>,
    /// The address the old host forwards to, when it is not `--to`: the new
    /// instance's private address in the same VPC, rather than its Elastic
    /// IP.
    #[arg(long, value_name = "ADDR")]
    redirect_to: Option<IpAddr>,
    /// The ports clients connect to on the old host, each moved by a
    /// redirect of its own (`--port 80,443`) [default: 80].
    #[arg(long, value_delimiter = ',')]
    port: Vec<u16>,
    /// The port on the new host, for one --port (default: the same port).
    #[arg(long)]
    new_port: Option<u16>,
    /// The TTL during the move: a higher TTL is lowered to this and waited
    /// out before anything moves [default: 60].
    #[arg(long)]
    ttl: Option<u32>,
    /// The longest time a client may cache an answer (resolvers, OSes,
    /// browsers); the old host keeps forwarding at least this long unless it
    /// is quiet first [default: 24h].
    #[arg(long, value_parser = crate::parse_duration)]
    max_cache: Option<Duration>,
    /// Stop watching once the old host has seen no traffic for this long
    /// [default: 10m].
    #[arg(long, value_parser = crate::parse_duration)]
    quiet: Option<Duration>,
    /// How often the drain is sampled.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    poll: Duration,
    /// Take the service over from another running cutover (see `status`).
    #[arg(long)]
    force: bool,
    /// When --max-cache runs out while clients still arrive at OLD, switch
    /// the redirect off anyway (by default it stays on, with a warning).
    #[arg(long)]
    retire_anyway: bool,
    /// Forward UDP on the same ports too: QUIC (HTTP/3) on 443, DNS. A
    /// UDP flow follows its 4-tuple: a QUIC client that migrates its
    /// connection to a new address or port starts a new flow.
    #[arg(long)]
    udp: bool,
    #[command(flatten)]
    sync: SyncArgs,
}

/// How a flip waits for every name server to serve it (`insync`).
#[derive(clap::Args)]
pub struct SyncArgs {
    /// The name servers that must serve the flip (`198.18.0.54:53,...`);
    /// default: those dnsd lists for the zone (its own addresses and the
    /// zone's `[[secondary]]`s).
    #[arg(long, value_delimiter = ',')]
    nameservers: Vec<std::net::SocketAddr>,
    /// How long to wait for them.
    #[arg(long, default_value = "2m", value_parser = crate::parse_duration)]
    sync_timeout: Duration,
    /// Go on even if some name servers do not serve the flip in time
    /// (`--force` is taken: it takes a service over).
    #[arg(long)]
    unsynced_ok: bool,
}

/// `cutover sync`: waits until every name server serves `name`'s zone as
/// dnsd does now.
pub fn sync(apis: &Apis, name: &str, args: &SyncArgs) -> Result<()> {
    let dns = apis.dns()?;
    if await_sync(&dns, name, args)?.is_none() {
        println!(
            "no name servers to wait for: the zone has no secondaries (or give --nameservers)"
        );
    }
    Ok(())
}

/// Waits until every name server serves the change just made to `name`;
/// says how long that took. An error names the laggards, unless
/// `--unsynced-ok`, which goes on with a warning.
fn await_sync(dns: &crate::api::Dns, name: &str, args: &SyncArgs) -> Result<Option<Duration>> {
    match crate::insync::wait(dns, name, &args.nameservers, args.sync_timeout) {
        Ok(None) => Ok(None),
        Ok(Some(sync)) => {
            println!(
                "\r   every name server serves it ({} of them) {:.1} s after it was made",
                sync.servers,
                sync.after.as_secs_f64()
            );
            Ok(Some(sync.after))
        }
        Err(e) if args.unsynced_ok => {
            // The line of waiting so far ends here.
            println!();
            eprintln!("\nWARNING: {e:#}; going on (--unsynced-ok)");
            Ok(None)
        }
        Err(e) => Err(e.context(
            "the flip is made but not out everywhere: fix the name servers named and run the same command again (or add --unsynced-ok)",
        )),
    }
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The service to put back.
    name: String,
    /// Also redirect NEW -> OLD on the new host's redirector at this API
    /// URL, for clients that cached the new address meanwhile.
    #[arg(long)]
    reverse_on: Option<String>,
    /// Take the service over from another running rollback (a running
    /// migrate is cancelled without it).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    sync: SyncArgs,
}

pub fn run(apis: &Apis, args: Args) -> Result<()> {
    let store = apis.store();
    let dns = apis.dns()?;
    let old = apis.old()?;
    // Held to the end; renewed (and checked) before every change.
    let hold = Duration::from_secs(30).max(args.poll * 3);
    let mut lease = Lease::take(store.dir(), &args.name, "migrate", hold, args.force, &[])?;
    if let Some(h) = &lease.took_over {
        println!("took {} over from {}", fqdn(&args.name), h.describe());
    }
    let (mut m, leftovers) = start(apis, &store, &dns, &old, &args).with_context(|| {
        format!(
            "refusing to migrate {}; nothing was changed",
            fqdn(&args.name)
        )
    })?;
    // The previous record (which names the reverse rule's host) is replaced
    // only once the reverse rule is gone.
    for f in leftovers {
        remove_leftover(&f)?;
    }

    // Saved once the checks passed, before the first change, so that a crash
    // after it resumes; a first step that fails removes it again.
    store.save(&m)?;

    // The last drain sample, for the warning when --max-cache runs out.
    let mut last: Option<Traffic> = None;
    let mut status = StatusReports::new(&dns);
    // Whether this run has waited for the name servers to serve the flip.
    let mut sync_checked = m.in_sync_after_ms.is_some();
    loop {
        still_ours(&mut lease, &store, &m)?;
        status.tell(&m);
        match m.next_step(now()) {
            Step::LowerTtl => {
                if let Err(e) = dns.set_service(&m.name, &m.from, m.move_ttl) {
                    store.remove_planned(&m.name)?;
                    return Err(e.context("lowering the TTL; nothing was changed"));
                }
                m.phase = Phase::TtlLowered;
                m.ttl_lowered_at = Some(now());
                checked_save(&mut lease, &store, &m)?;
                println!(
                    "1. TTL of {} lowered from {} s to {} s",
                    m.name, m.original_ttl, m.move_ttl
                );
            }
            Step::WaitTtl { remaining } => {
                print!("\r   waiting for caches holding the old TTL: {remaining:>6} s left ");
                flush();
                sleep(Duration::from_secs(1).min(Duration::from_secs(remaining)));
                if remaining <= 1 {
                    println!();
                }
            }
            Step::SwitchOnRedirect => {
                let mut put = Vec::new();
                let on = loops::before_redirect(apis, &store, &m, None)
                    .and_then(|_| new_accepts_all(&old, &m))
                    .and_then(|()| {
                        m.redirects().into_iter().try_for_each(|r| {
                            old.put_rule(&r.rule, &r.from, &r.to, &m.protocols(), None)?;
                            put.push(r.rule);
                            Ok(())
                        })
                    });
                if let Err(e) = on {
                    if m.phase == Phase::Planned {
                        // The redirects put before one failed go too:
                        // nothing was changed.
                        for rule in &put {
                            let _ = old.delete_rule(rule);
                        }
                        store.remove_planned(&m.name)?;
                    }
                    return Err(
                        e.context("switching on the redirect; the record still points at OLD")
                    );
                }
                let listed = old.rules()?;
                for r in m.redirects() {
                    if !listed.iter().any(|l| l.name == r.rule) {
                        bail!(
                            "the old host accepted the rule {} but does not list it",
                            r.rule
                        );
                    }
                }
                m.phase = Phase::Redirecting;
                m.redirect_on_at = Some(now());
                checked_save(&mut lease, &store, &m)?;
                println!("2. redirect on: {}", m.redirects_text());
            }
            Step::Flip => {
                new_accepts_all(&old, &m)
                    .context("refusing to flip the record; the redirect stays on (roll back with `cutover rollback`)")?;
                dns.set_service(&m.name, &m.flipped(), m.move_ttl)?;
                m.phase = Phase::Flipped;
                m.flipped_at = Some(now());
                checked_save(&mut lease, &store, &m)?;
                println!("3. {} now points at {}", m.name, m.news().join(", "));
            }
            Step::Drain { remaining } => {
                // The flip counts once every name server serves it (again
                // after a resume, until it did).
                if !sync_checked {
                    if let Some(after) = await_sync(&dns, &m.name, &args.sync)? {
                        m.in_sync_after_ms = Some(after.as_millis() as u64);
                        checked_save(&mut lease, &store, &m)?;
                    }
                    sync_checked = true;
                }
                let sample = drain_sample(&old, &m);
                if sample.is_err() {
                    // A rollback removes the rule: say that, not "no rule".
                    still_ours(&mut lease, &store, &m)?;
                }
                let (traffic, window) = sample.with_context(|| {
                    format!(
                        "reading the old host's counters; run the same `cutover migrate {} --to {}` again to resume",
                        m.name, m.news().join(", ")
                    )
                })?;
                let t = now();
                m.observe(traffic, t, window);
                last = Some(traffic);
                status.sampled(traffic, t);
                checked_save(&mut lease, &store, &m)?;
                let quiet = m.quiet_since.map_or(0, |q| t.saturating_sub(q));
                print!(
                    "\r4. draining {}: {:>7.1} new flows/s, {:>6} active flows, {:>5} clients, quiet {:>5} s, caches expire in {:>6} s ",
                    m.olds().join(", "),
                    traffic.new_flows_per_s,
                    traffic.active_flows,
                    traffic.distinct_clients,
                    quiet,
                    remaining
                );
                flush();
                sleep(args.poll);
            }
            Step::RestoreTtl {
                clients_still_arriving,
            } => {
                println!();
                dns.set_service(&m.name, &m.flipped(), m.original_ttl)?;
                m.phase = Phase::Done;
                m.busy_at_end = clients_still_arriving;
                checked_save(&mut lease, &store, &m)?;
                if !clients_still_arriving {
                    println!(
                        "5. {} can be retired; TTL of {} restored to {} s",
                        m.olds().join(", "),
                        m.name,
                        m.original_ttl
                    );
                    continue;
                }
                println!("5. TTL of {} restored to {} s", m.name, m.original_ttl);
                let t = last.unwrap_or_default();
                eprintln!(
                    "WARNING: --max-cache ({} s) has run out but clients still arrive at {}: {:.1} new flows/s, {} active flows, {} clients at the last sample.",
                    m.max_cache,
                    m.olds().join(", "),
                    t.new_flows_per_s,
                    t.active_flows,
                    t.distinct_clients
                );
                if args.retire_anyway {
                    for r in m.redirects() {
                        old.delete_rule(&r.rule)?;
                    }
                    eprintln!(
                        "WARNING: --retire-anyway: the redirect {} is off; those clients now reach whatever {} serves itself.",
                        m.redirects_text(),
                        m.olds().join(", ")
                    );
                } else {
                    eprintln!(
                        "WARNING: {} can NOT be retired yet: the redirect {} stays on. Watch it with `cutover status`; switch it off with `cutover retire {}` when you decide.",
                        m.olds().join(", "),
                        m.redirects_text(),
                        m.name
                    );
                }
            }
            Step::Finished => {
                status.tell(&m);
                return Ok(());
            }
        }
    }
}

/// What dnsd's status page is told of a migration: its phase at every step
/// and each drain sample. Best effort: a dnsd that does not take it (an
/// older one) is mentioned once and the migration goes on.
struct StatusReports<'a> {
    dns: &'a crate::api::Dns,
    /// The phase last told, and a sample not told yet.
    told: Option<Phase>,
    sample: Option<DrainSample>,
    warned: bool,
}

impl<'a> StatusReports<'a> {
    fn new(dns: &'a crate::api::Dns) -> Self {
        Self {
            dns,
            told: None,
            sample: None,
            warned: false,
        }
    }

    fn sampled(&mut self, t: Traffic, at: u64) {
        self.sample = Some(DrainSample {
            at,
            new_flows_per_s: t.new_flows_per_s,
            active_flows: t.active_flows,
            distinct_clients: t.distinct_clients,
        });
    }

    /// Tells dnsd, if the phase changed or a sample is new.
    fn tell(&mut self, m: &Migration) {
        if self.told == Some(m.phase) && self.sample.is_none() {
            return;
        }
        let report = report_of(m, self.sample.take());
        match self.dns.report_migration(&m.name, &report) {
            Ok(()) => self.told = Some(m.phase),
            Err(e) if !self.warned => {
                self.warned = true;
                eprintln!("note: dnsd's status page was not told of this migration: {e:#}");
            }
            Err(_) => {}
        }
    }
}

/// A migration as dnsd's status page takes it.
fn report_of(m: &Migration, sample: Option<DrainSample>) -> MigrationReport {
    let phase = serde_json::to_value(m.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    MigrationReport {
        phase,
        from: m.from.clone(),
        old: m.olds().join(", "),
        to: m.news().join(", "),
        ports: m.redirects().iter().map(|r| r.port).collect(),
        sample,
    }
}

/// The migration to carry out: the one in progress (resumed), or a new one
/// once every pre-flight check passed. Changes nothing.
/// Also returns the reverse rules of the service's last rollback, which
/// must go before its redirect goes on (see `loops`).
fn start(
    apis: &Apis,
    store: &crate::migration::Store,
    dns: &crate::api::Dns,
    old: &crate::api::Redirector,
    args: &Args,
) -> Result<(Migration, Vec<loops::Forwarding>)> {
    let service = preflight::apis(dns, old, &args.name)?;
    let previous = store.load(&args.name)?;
    let m = match previous.clone() {
        Some(m) if m.shift && !matches!(m.phase, Phase::Done | Phase::RolledBack) => bail!(
            "a shift of {} to {} stopped half-way ({:?}): `cutover rollback {}` puts the old \
             addresses back first",
            m.name,
            m.news().join(", "),
            m.phase,
            m.name
        ),
        Some(m) if !matches!(m.phase, Phase::Planned | Phase::Done | Phase::RolledBack) => {
            let asked: Vec<String> = args.to.iter().map(IpAddr::to_string).collect();
            if m.news() != asked {
                let news = m.news().join(",");
                bail!(
                    "a migration of {} to {news} is in progress: resume it with --to {news}, or `cutover rollback {}` first",
                    m.name,
                    m.name
                );
            }
            println!(
                "resuming the migration of {} to {} ({:?})",
                m.name,
                m.news().join(", "),
                m.phase
            );
            resumed_with(m, args)?
        }
        _ => plan(&service, args)?,
    };
    let mut leftovers = Vec::new();
    if matches!(m.phase, Phase::Planned | Phase::TtlLowered) {
        leftovers = loops::before_redirect(apis, store, &m, previous.as_ref())?;
    }
    if matches!(
        m.phase,
        Phase::Planned | Phase::TtlLowered | Phase::Redirecting
    ) {
        new_accepts_all(old, &m)?;
    }
    Ok((m, leftovers))
}

/// Defaults of the flags a resume compares with what the migration in
/// progress was started with.
const DEFAULT_PORT: u16 = 80;
const DEFAULT_TTL: u32 = 60;
pub(crate) const DEFAULT_MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
pub(crate) const DEFAULT_QUIET: Duration = Duration::from_secs(600);

impl Args {
    /// The ports asked for, each once, or the default.
    fn ports(&self) -> Vec<u16> {
        ports_or_default(&self.port)
    }
}

/// `--port`'s ports, each once, in order, or the default (80).
pub(crate) fn ports_or_default(asked: &[u16]) -> Vec<u16> {
    let mut ports = Vec::with_capacity(asked.len().max(1));
    for &p in asked {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if ports.is_empty() {
        ports.push(DEFAULT_PORT);
    }
    ports
}

/// The migration in progress `m`, resumed with the flags given now: the
/// drain policy (`--max-cache`, `--quiet`) given anew replaces its own, and
/// says so; what has already happened cannot change — another port or old
/// address is refused, another `--ttl` after the TTL was lowered is said to
/// be ignored.
fn resumed_with(mut m: Migration, args: &Args) -> Result<Migration> {
    let in_progress: Vec<u16> = m.redirects().iter().map(|r| r.port).collect();
    if !args.port.is_empty() && args.ports() != in_progress {
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        bail!(
            "the migration of {} in progress moves port {}, not {}: let it finish, or `cutover rollback {}` first",
            m.name,
            list(&in_progress),
            list(&args.ports()),
            m.name
        );
    }
    if let Some(new_port) = args.new_port
        && new_port != m.new_port
    {
        bail!(
            "the migration of {} in progress forwards to port {}, not {new_port}",
            m.name,
            m.new_port
        );
    }
    if args.udp && !m.udp {
        bail!(
            "the migration of {} in progress forwards TCP only: let it finish, or `cutover rollback {}` first, then migrate with --udp",
            m.name,
            m.name
        );
    }
    let asked: Vec<String> = args.from.iter().map(IpAddr::to_string).collect();
    if !asked.is_empty() && asked != m.olds() {
        bail!(
            "the migration of {} in progress redirects {}, not {}",
            m.name,
            m.olds().join(","),
            asked.join(",")
        );
    }
    for (flag, asked, kept) in [
        ("--redirect-from", args.redirect_from, m.local_old()),
        ("--redirect-to", args.redirect_to, m.local_new()),
    ] {
        if let Some(asked) = asked
            && asked.to_string() != kept
        {
            bail!(
                "the migration of {} in progress redirects {} -> {}, not {flag} {asked}: let it \
                 finish, or `cutover rollback {}` first",
                m.name,
                m.local_old(),
                m.local_new(),
                m.name
            );
        }
    }
    if let Some(ttl) = args.ttl
        && m.original_ttl.min(ttl) != m.move_ttl
    {
        if matches!(m.phase, Phase::Planned) {
            m.move_ttl = m.original_ttl.min(ttl);
            println!("the TTL during the move is now {} s (--ttl)", m.move_ttl);
        } else {
            println!(
                "--ttl {ttl} is ignored: the TTL was already set to {} s for this migration",
                m.move_ttl
            );
        }
    }
    if let Some(max_cache) = args.max_cache
        && max_cache.as_secs() != m.max_cache
    {
        println!(
            "the drain now waits at most {} s for cached answers (--max-cache; was {} s)",
            max_cache.as_secs(),
            m.max_cache
        );
        m.max_cache = max_cache.as_secs();
    }
    if let Some(quiet) = args.quiet
        && quiet.as_secs() != m.quiet_period
    {
        println!(
            "the drain now ends after {} s without traffic (--quiet; was {} s)",
            quiet.as_secs(),
            m.quiet_period
        );
        m.quiet_period = quiet.as_secs();
    }
    Ok(m)
}

/// A new migration's record, from the service as dnsd serves it now.
fn plan(service: &crate::api::Service, args: &Args) -> Result<Migration> {
    let tos: Vec<String> = args.to.iter().map(IpAddr::to_string).collect();
    if service.addresses == tos {
        bail!("{} already points at {}", service.name, tos.join(", "));
    }
    let olds = preflight::old_addresses(service, &args.from, &args.to)?;
    if let Some((o, _)) = olds.iter().zip(&tos).find(|(o, t)| o == t) {
        bail!("{o} is both an old and a new address");
    }
    if tos.len() > 1 && (args.redirect_from.is_some() || args.redirect_to.is_some()) {
        bail!(
            "--redirect-from and --redirect-to map one address; move a pool's addresses one by one"
        );
    }
    let mut pairs = olds.into_iter().zip(tos);
    let Some((old, to)) = pairs.next() else {
        bail!("--to names no address");
    };
    let more_pairs: Vec<(String, String)> = pairs.collect();
    let name = fqdn(&service.name);
    let ports = args.ports();
    if args.new_port.is_some() && ports.len() > 1 {
        bail!("--new-port maps one --port; with several, each goes to the same port on NEW");
    }
    let redirect_from = args.redirect_from.map(|a| a.to_string());
    let redirect_to = args.redirect_to.map(|a| a.to_string());
    Ok(Migration {
        redirect_from: redirect_from.filter(|a| *a != old),
        redirect_to: redirect_to.filter(|a| *a != to),
        more_pairs,
        rule: format!("cutover-{}", name.trim_end_matches('.')),
        name,
        from: service.addresses.clone(),
        old,
        to,
        port: ports[0],
        new_port: args.new_port.unwrap_or(ports[0]),
        more_ports: ports[1..].to_vec(),
        udp: args.udp,
        original_ttl: service.ttl,
        move_ttl: service.ttl.min(args.ttl.unwrap_or(DEFAULT_TTL)),
        max_cache: args.max_cache.unwrap_or(DEFAULT_MAX_CACHE).as_secs(),
        quiet_period: args.quiet.unwrap_or(DEFAULT_QUIET).as_secs(),
        ..Migration::default()
    })
}

/// The rule's figures and the length of the window they were measured over.
fn drain_sample(old: &crate::api::Redirector, m: &Migration) -> Result<(Traffic, f64)> {
    let stats = old.stats()?;
    let mut traffic = Traffic::default();
    for redirect in m.redirects() {
        let rule = &redirect.rule;
        let r = stats
            .rules
            .iter()
            .find(|r| r.name == *rule)
            .with_context(|| format!("the old host has no rule {rule} any more"))?;
        traffic.new_flows_per_s += r.new_flows_per_s;
        traffic.active_flows += r.active_flows;
        // A client on two ports is counted on each: an upper bound.
        traffic.distinct_clients += r.distinct_clients;
    }
    Ok((traffic, stats.sample_seconds))
}

/// Removes the reverse redirect this service's rollback left (see
/// `loops::before_redirect`), saying so.
pub(crate) fn remove_leftover(f: &loops::Forwarding) -> Result<()> {
    f.redirector.delete_rule(&f.rule.name).with_context(|| {
        format!(
            "removing the reverse redirect {} a rollback left on {}",
            f.rule.name, f.redirector.0.base
        )
    })?;
    println!(
        "0. removed the reverse redirect {} -> {} ({}) a rollback left on {}",
        f.rule.from, f.rule.to, f.rule.name, f.redirector.0.base
    );
    Ok(())
}

/// NEW accepts connections on every port the migration moves, from here
/// and from the old host.
pub(crate) fn new_accepts_all(old: &crate::api::Redirector, m: &Migration) -> Result<()> {
    m.redirects().iter().try_for_each(|r| {
        preflight::new_accepts(old, &r.old_ip, &r.new_public, &r.new_ip, r.new_port)
    })
}

/// Before every change: this migrate still holds the service and the
/// record is what it last wrote. Otherwise (a rollback took over) it stops
/// without changing anything more.
pub(crate) fn still_ours(
    lease: &mut Lease,
    store: &crate::migration::Store,
    m: &Migration,
) -> Result<()> {
    let stop = || {
        format!(
            "stopped the migration of {}; it changed nothing more",
            m.name
        )
    };
    lease.renew().with_context(stop)?;
    let now = store.load(&m.name)?;
    if now.as_ref() != Some(m) {
        let phase = now.map_or("removed".to_string(), |r| format!("{:?}", r.phase));
        bail!("{}: its record changed under it (now {phase})", stop());
    }
    Ok(())
}

/// Saves the record if this migrate still holds the service.
pub(crate) fn checked_save(
    lease: &mut Lease,
    store: &crate::migration::Store,
    m: &Migration,
) -> Result<()> {
    lease.renew().with_context(|| {
        format!(
            "stopped the migration of {} before saving its {:?} phase",
            m.name, m.phase
        )
    })?;
    store.save(m)
}

#[derive(clap::Args)]
pub struct RetireArgs {
    /// The service whose finished migration's redirect goes off.
    name: String,
    /// Take the service over from another running cutover.
    #[arg(long)]
    force: bool,
}

/// `cutover retire NAME`: the operator decides that OLD may go; the
/// finished migration's redirect is switched off.
pub fn retire(apis: &Apis, args: RetireArgs) -> Result<()> {
    let store = apis.store();
    let _lease = Lease::take(
        store.dir(),
        &args.name,
        "retire",
        Duration::from_secs(60),
        args.force,
        &[],
    )?;
    let mut m = store.load(&args.name)?.with_context(|| {
        format!(
            "no migration of {} is recorded in {}",
            fqdn(&args.name),
            apis.state_dir.display()
        )
    })?;
    if m.phase != Phase::Done {
        bail!(
            "the migration of {} is {:?}: only a finished migration's redirect is retired (a running one ends with migrate, or is undone with rollback)",
            m.name,
            m.phase
        );
    }
    let old = apis.old()?;
    for r in m.redirects() {
        old.delete_rule(&r.rule)?;
    }
    m.busy_at_end = false;
    store.save(&m)?;
    println!(
        "redirect {} switched off (its open connections drain); {} can be retired",
        m.redirects_text(),
        m.olds().join(", ")
    );
    Ok(())
}

pub fn rollback(apis: &Apis, args: RollbackArgs) -> Result<()> {
    let store = apis.store();
    let lease = Lease::take(
        store.dir(),
        &args.name,
        "rollback",
        Duration::from_secs(60),
        args.force,
        &["migrate", "shift"],
    )?;
    if let Some(h) = &lease.took_over {
        println!("cancelling {}", h.describe());
        if !lease.wait_for_previous(Duration::from_secs(20)) {
            bail!(
                "{} did not stop within 20 s; nothing was changed (run the rollback again)",
                h.describe()
            );
        }
    }
    let mut m = store.load(&args.name)?.with_context(|| {
        format!(
            "no migration of {} is recorded in {}",
            fqdn(&args.name),
            apis.state_dir.display()
        )
    })?;
    let dns = apis.dns()?;
    let old = apis.old()?;
    let reverse = match &args.reverse_on {
        Some(url) => Some(apis.redirector_at(url)?),
        None => None,
    };
    rollback_checks(apis, &store, &dns, &old, reverse.as_ref(), &m)
        .with_context(|| format!("refusing to roll back {}; nothing was changed", m.name))?;

    if m.weights.is_empty() {
        dns.set_service(&m.name, &m.from, m.original_ttl)?;
    } else {
        // A shift's service: its weights and backups as they were.
        dns.set_weights(&m.name, &m.weights, &m.backups)?;
    }
    println!(
        "{} points at {} again (TTL {} s)",
        m.name,
        m.from.join(", "),
        m.original_ttl
    );
    await_sync(&dns, &m.name, &args.sync)?;
    let moved = || {
        format!(
            "{} already points at {} again, but the rest of the rollback failed: run `cutover rollback {}` again",
            m.name,
            m.from.join(", "),
            m.name
        )
    };
    for r in m.redirects() {
        old.delete_rule(&r.rule).with_context(moved)?;
    }
    println!("redirect {} switched off", m.redirects_text());
    if let Some(reverse) = &reverse {
        for r in m.redirects() {
            let name = r.reverse_rule();
            reverse
                .put_rule(&name, &r.to, &r.from, &m.protocols(), None)
                .with_context(moved)?;
            println!(
                "reverse redirect on the new host: {} -> {} (rule {name}; the next `cutover migrate {}` removes it)",
                r.to, r.from, m.name
            );
        }
        m.reverse_on = Some(reverse.0.base.clone());
    }
    m.phase = Phase::RolledBack;
    store.save(&m)?;
    StatusReports::new(&dns).tell(&m);
    Ok(())
}

/// Before a rollback changes anything: dnsd and the old host's redirector
/// answer with their tokens (and the new host's, for `--reverse-on`), and
/// the old host's own server accepts connections.
fn rollback_checks(
    apis: &Apis,
    store: &crate::migration::Store,
    dns: &crate::api::Dns,
    old: &crate::api::Redirector,
    reverse: Option<&crate::api::Redirector>,
    m: &Migration,
) -> Result<()> {
    preflight::apis(dns, old, &m.name)?;
    if let Some(reverse) = reverse {
        reverse
            .rules()
            .with_context(|| format!("the new host's redirector API at {}", reverse.0.base))?;
        // The reverse rules point at OLD: nothing but this migration's own
        // redirects (switched off first) may forward OLD.
        for r in m.redirects() {
            let target = &r.from;
            if let Some(f) = loops::forwarding(apis, store, target, &r.rule)?.first() {
                bail!(
                    "the redirector at {} forwards {} -> {} (rule {}): a reverse redirect into {target} \
                     would loop or chain; remove that rule first: {}",
                    f.redirector.0.base,
                    f.rule.from,
                    f.rule.to,
                    f.rule.name,
                    f.removal()
                );
            }
        }
    }
    m.redirects()
        .iter()
        .try_for_each(|r| preflight::old_accepts(old, &r.old_ip, r.port))
}

fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &str) -> Args {
        let words = std::iter::once("cutover").chain(line.split_whitespace());
        Cli::try_parse_from(words).expect("valid flags").args
    }

    fn in_progress(phase: Phase) -> Migration {
        Migration {
            phase,
            ..crate::migration::tests::planned(300, 60)
        }
    }

    #[test]
    fn a_resume_takes_a_new_drain_policy_and_refuses_another_port_or_address() {
        let m = resumed_with(
            in_progress(Phase::Flipped),
            &args("www --to 198.18.0.3 --max-cache 1h --quiet 30s"),
        )
        .unwrap();
        assert_eq!((m.max_cache, m.quiet_period), (3600, 30));
        // Flags left out keep what the migration was started with.
        let m = resumed_with(in_progress(Phase::Flipped), &args("www --to 198.18.0.3")).unwrap();
        assert_eq!((m.max_cache, m.quiet_period, m.move_ttl), (86400, 600, 60));
        for flags in [
            "--port 443",
            "--port 80,443",
            "--new-port 8080",
            "--from 198.18.0.9",
        ] {
            let refused = resumed_with(
                in_progress(Phase::Redirecting),
                &args(&format!("www --to 198.18.0.3 {flags}")),
            );
            assert!(refused.is_err(), "{flags}");
        }
        // The same ports, in any spelling, resume it.
        let same = resumed_with(
            in_progress(Phase::Redirecting),
            &args("www --to 198.18.0.3 --port 80,80"),
        );
        assert!(same.is_ok());
    }

    #[test]
    fn a_new_ttl_applies_only_before_the_ttl_was_lowered() {
        let line = "www --to 198.18.0.3 --ttl 30";
        assert_eq!(
            resumed_with(in_progress(Phase::Planned), &args(line))
                .unwrap()
                .move_ttl,
            30
        );
        assert_eq!(
            resumed_with(in_progress(Phase::TtlLowered), &args(line))
                .unwrap()
                .move_ttl,
            60
        );
    }
}
