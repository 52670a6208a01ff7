//! `cutover shift NAME --to NEW[,NEW...] --steps 10,50,100 --every 5m`: a
//! canary release by DNS weights, judged by the service's own health check.
//!
//! 1. The new addresses join the service as backups: dnsd checks them (from
//!    its host, with the service's check) but serves none while an old
//!    address is up. A new address that does not pass `rise` checks in a
//!    row within `--every` ends the shift there, before any client saw it.
//! 2. Each step gives the new addresses that share of the answers (the
//!    first address of each answer, see dnsd's weights), and is held for
//!    `--every`; a new address whose check fails meanwhile reverts the
//!    service to its old addresses and weights, and the shift fails.
//! 3. After the last step (100 %) the old addresses leave the service.
//!
//! Clients that resolved an old address keep it for the TTL (a resolver
//! often for longer). The old host's redirect is on throughout, for the
//! step's share of them: each old address (paired with a new one as
//! `cutover migrate` pairs them) redirects that percentage of client
//! addresses to NEW, chosen by the client's address, so that a client
//! stays on one release and only moves towards the new one, and the
//! clients holding the old address are split as the DNS answers are. A
//! revert switches the redirect off; after the last step it redirects
//! everyone, and the shift is recorded as a finished migration:
//! `cutover retire` switches the redirect off once the old host is quiet,
//! `cutover rollback` goes back. `--no-redirect` shifts the answers only.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cutover_control_api::contract::fqdn;

use crate::Apis;
use crate::api::{Dns, Redirector, Service};
use crate::lease::Lease;
use crate::loops;
use crate::migration::{Migration, Phase, Store, now};
use crate::preflight;

#[derive(clap::Args)]
pub struct Args {
    /// The service (a `[[service]]` of dnsd with a `[service.health]` check).
    name: String,
    /// The new addresses.
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<IpAddr>,
    /// The new addresses' share of the answers at each step, in percent,
    /// rising, the last 100.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    steps: Vec<u32>,
    /// How long each step is held (and how long the new addresses have to
    /// pass their first checks).
    #[arg(long, value_parser = crate::parse_duration, default_value = "5m")]
    every: Duration,
    /// How often the new addresses' health is looked at.
    #[arg(long, value_parser = parse_millis, default_value = "1000")]
    poll_ms: Duration,
    /// The old addresses the old host redirects, one per --to, in the same
    /// order (default: paired as `cutover migrate` pairs them).
    #[arg(long, value_delimiter = ',')]
    from: Vec<IpAddr>,
    /// The ports the old host redirects (`--port 80,443`) [default: 80].
    #[arg(long, value_delimiter = ',')]
    port: Vec<u16>,
    /// Redirect UDP on the same ports too (QUIC).
    #[arg(long)]
    udp: bool,
    /// Shift the answers only: the old host keeps serving every client that
    /// cached its address, and no migration is recorded.
    #[arg(long)]
    no_redirect: bool,
    /// Take the service over from another running cutover.
    #[arg(long)]
    force: bool,
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))
}

pub fn run(apis: &Apis, args: Args) -> Result<()> {
    check_steps(&args.steps)?;
    let dns = apis.dns()?;
    let service = dns.service(&args.name)?;
    if service.members.iter().all(|m| m.health.is_none()) {
        bail!(
            "{} has no health check: a shift judges the new addresses by it (add \
             [service.health] to its [[service]])",
            service.name
        );
    }
    let new: Vec<String> = args.to.iter().map(IpAddr::to_string).collect();
    // The service as it is, to put back: every address in its order.
    let before: Vec<(String, u32)> = service
        .members
        .iter()
        .map(|m| (m.address.clone(), m.weight))
        .collect();
    let before_backups: Vec<String> = service
        .members
        .iter()
        .filter(|m| m.backup)
        .map(|m| m.address.clone())
        .collect();
    let old: Vec<(String, u32)> = before
        .iter()
        .filter(|(a, _)| !new.contains(a))
        .cloned()
        .collect();
    let old_backups: Vec<String> = before_backups
        .iter()
        .filter(|a| !new.contains(a))
        .cloned()
        .collect();
    if old.iter().all(|(a, _)| old_backups.contains(a)) {
        bail!(
            "{} has no address besides {} that is not a backup: nothing to shift from",
            service.name,
            new.join(", ")
        );
    }
    // Stops the shift: the answers first (no client is sent to a failing
    // canary by DNS a moment longer than needed), then the redirect; a
    // lost lease changes nothing more (whoever took it acts now).
    let revert = |redirect: Option<&mut Canary>, halt: Halt| -> Result<()> {
        let why = match halt {
            Halt::Lost(e) => {
                return Err(e.context(format!(
                    "stopped the shift of {}; it changed nothing more",
                    service.name
                )));
            }
            Halt::Failed(why) => why,
        };
        let answers = dns
            .set_weights(&args.name, &before, &before_backups)
            .context("putting the old addresses back");
        let redirect = match redirect {
            Some(r) => r.off(answers.is_ok()).context("switching the redirect off"),
            None => Ok(()),
        };
        if let Err(e) = answers.and(redirect) {
            bail!(
                "{why}; reverting failed half-way: {e:#}. Run `cutover rollback {}` to finish it",
                service.name
            );
        }
        bail!(
            "{why}: reverted {} to {}",
            service.name,
            join(before.iter().map(|(a, _)| a))
        )
    };

    // Every check of the redirect before anything changes.
    let mut redirect = if args.no_redirect {
        None
    } else {
        Some(Canary::plan(apis, &dns, &args, (&before, &before_backups)).with_context(|| {
            format!(
                "refusing to shift {}; nothing was changed (--no-redirect shifts the answers only)",
                service.name
            )
        })?)
    };

    // 1. Checked, not served.
    let mut trial = old.clone();
    trial.extend(new.iter().map(|a| (a.clone(), 1)));
    let mut backups = old_backups.clone();
    backups.extend(new.iter().cloned());
    if let Err(e) = dns.set_weights(&args.name, &trial, &backups) {
        return revert(
            redirect.as_mut(),
            Halt::Failed(format!("adding {}: {e:#}", new.join(", "))),
        );
    }
    say(&format!(
        "{}: {} checked by dnsd, not served yet",
        service.name,
        new.join(", ")
    ));
    if let Err(why) = await_passing(&dns, &args, &new, redirect.as_mut()) {
        return revert(redirect.as_mut(), why);
    }

    // 2. The steps: the redirect's share first, so that no client holding
    // an old address lags behind the answers. With the redirect, a client
    // reaches NEW by its answer or, answered with OLD, by the redirect: each
    // gets `part` so that together they make the step.
    for &percent in &args.steps {
        let part = if redirect.is_some() {
            each_of_two(percent)
        } else {
            percent
        };
        if let Some(r) = redirect.as_mut()
            && let Err(e) = r.share(part)
        {
            return revert(redirect.as_mut(), e.step(percent));
        }
        let weights = split(&old, &old_backups, &new, part);
        if let Err(e) = dns.set_weights(&args.name, &weights, &old_backups) {
            return revert(
                redirect.as_mut(),
                Halt::Failed(format!("the {percent} % step: {e:#}")),
            );
        }
        say(&format!(
            "{}: {percent} % step: {part} % of the answers lead with {}{}",
            service.name,
            new.join(", "),
            match &redirect {
                Some(_) => format!(
                    ", and {part} % of the clients holding an old address are redirected to it"
                ),
                None => String::new(),
            }
        ));
        if let Err(why) = hold(&dns, &args, &new, redirect.as_mut()) {
            return revert(redirect.as_mut(), why);
        }
    }

    // 3. The old addresses leave.
    let only_new: Vec<(String, u32)> = new.iter().map(|a| (a.clone(), 1)).collect();
    if let Err(e) = dns.set_weights(&args.name, &only_new, &[]) {
        return revert(
            redirect.as_mut(),
            Halt::Failed(format!("removing the old addresses: {e:#}")),
        );
    }
    match redirect {
        Some(r) => {
            let (text, olds) = (r.m.redirects_text(), r.m.olds().join(", "));
            r.done()?;
            say(&format!(
                "{}: shifted to {}; {} left the answers, and the old host redirects every \
                 client of {olds} ({text}). `cutover status` shows them drain; `cutover retire \
                 {}` switches the redirect off, `cutover rollback {}` goes back",
                service.name,
                new.join(", "),
                join(old.iter().map(|(a, _)| a)),
                service.name,
                service.name
            ));
        }
        None => say(&format!(
            "{}: shifted to {}; {} left the answers (clients that cached them reach them for \
             the TTL)",
            service.name,
            new.join(", "),
            join(old.iter().map(|(a, _)| a))
        )),
    }
    Ok(())
}

/// Why a shift stops before its end.
enum Halt {
    /// A check, a new address or a change failed: revert.
    Failed(String),
    /// Another command took the service's lease (a rollback cancels a
    /// shift) or its record: change nothing more.
    Lost(anyhow::Error),
}

impl Halt {
    /// A failure while putting a step's redirect.
    fn step(self, percent: u32) -> Self {
        match self {
            Halt::Failed(why) => Halt::Failed(format!("the {percent} % step's redirect: {why}")),
            lost => lost,
        }
    }
}

/// The share each of the answers and the redirect gives NEW so that
/// together they make `percent`: a client reaches NEW when its answer leads
/// with NEW, or when it leads with OLD and the client is in the redirect's
/// share, `1 - (1 - p)^2` of the clients for `p` each.
fn each_of_two(percent: u32) -> u32 {
    let p = f64::from(percent.min(100)) / 100.0;
    let each = 1.0 - (1.0 - p).sqrt();
    ((each * 100.0).round() as u32).clamp(1, 100)
}

/// The old host's redirect during a shift, recorded as a migration from
/// its checks on: a rollback undoes a shift stopped anywhere, and a
/// finished one is a finished migration.
struct Canary {
    old: Redirector,
    store: Store,
    lease: Lease,
    /// The migration the shift becomes: its redirects are the rules put.
    m: Migration,
    /// The rules put so far.
    put: Vec<String>,
}

impl Canary {
    /// Takes the service's lease and checks, before anything changes, what
    /// `cutover migrate` checks before its redirect: the old host's API,
    /// the pairs, no migration in progress, no loop, and every NEW:port
    /// accepting connections from the old host. Then records the shift,
    /// with the service's `weights` and `backups` for a rollback.
    fn plan(
        apis: &Apis,
        dns: &Dns,
        args: &Args,
        (weights, backups): (&[(String, u32)], &[String]),
    ) -> Result<Self> {
        let store = apis.store();
        let old = apis.old()?;
        let hold = Duration::from_secs(30).max(args.poll_ms * 3);
        let mut lease = Lease::take(store.dir(), &args.name, "shift", hold, args.force, &[])?;
        let service = preflight::apis(dns, &old, &args.name)?;
        let previous = store.load(&args.name)?;
        if let Some(p) = &previous
            && !matches!(p.phase, Phase::Planned | Phase::Done | Phase::RolledBack)
        {
            bail!(
                "a migration of {} to {} is in progress ({:?}): let it finish, or `cutover \
                 rollback {}` first",
                p.name,
                p.news().join(", "),
                p.phase,
                p.name
            );
        }
        let olds = preflight::old_addresses(&service, &args.from, &args.to)?;
        let news: Vec<String> = args.to.iter().map(IpAddr::to_string).collect();
        if let Some(o) = olds.iter().find(|o| news.contains(o)) {
            bail!("{o} is both an old and a new address");
        }
        let mut pairs = olds.into_iter().zip(news);
        let (first_old, first_new) = pairs.next().context("--to names no address")?;
        let ports = crate::migrate::ports_or_default(&args.port);
        let name = fqdn(&service.name);
        let m = Migration {
            rule: format!("cutover-{}", name.trim_end_matches('.')),
            name,
            from: service.addresses.clone(),
            old: first_old,
            to: first_new,
            port: ports[0],
            new_port: ports[0],
            more_ports: ports[1..].to_vec(),
            more_pairs: pairs.collect(),
            udp: args.udp,
            original_ttl: service.ttl,
            move_ttl: service.ttl,
            max_cache: crate::migrate::DEFAULT_MAX_CACHE.as_secs(),
            quiet_period: crate::migrate::DEFAULT_QUIET.as_secs(),
            shift: true,
            weights: weights.to_vec(),
            backups: backups.to_vec(),
            ..Migration::default()
        };
        // Every check first; the reverse rule a rollback of this service
        // left is removed only once they all passed.
        let leftovers = loops::before_redirect(apis, &store, &m, previous.as_ref())?;
        crate::migrate::new_accepts_all(&old, &m)?;
        for f in leftovers {
            crate::migrate::remove_leftover(&f)?;
        }
        crate::migrate::checked_save(&mut lease, &store, &m)?;
        Ok(Self {
            old,
            store,
            lease,
            m,
            put: Vec::new(),
        })
    }

    /// Every redirect at `percent` % of the clients.
    fn share(&mut self, percent: u32) -> Result<(), Halt> {
        self.still_ours()?;
        let share = u8::try_from(percent).ok().filter(|&p| p < 100);
        for r in self.m.redirects() {
            self.old
                .put_rule(&r.rule, &r.from, &r.to, &self.m.protocols(), share)
                .map_err(|e| Halt::Failed(format!("{e:#}")))?;
            if !self.put.contains(&r.rule) {
                self.put.push(r.rule);
            }
        }
        if self.m.phase == Phase::Planned {
            self.m.phase = Phase::Redirecting;
            self.m.redirect_on_at = Some(now());
            crate::migrate::checked_save(&mut self.lease, &self.store, &self.m)
                .map_err(Halt::Lost)?;
        }
        Ok(())
    }

    /// The rules this shift put, off (their open connections drain); the
    /// record says rolled back once `answers_back` too.
    fn off(&mut self, answers_back: bool) -> Result<()> {
        for rule in &self.put {
            self.old.delete_rule(rule)?;
        }
        self.put.clear();
        if answers_back {
            self.m.phase = Phase::RolledBack;
            self.store.save(&self.m)?;
        }
        Ok(())
    }

    /// The lease is still this shift's and the record the one it wrote.
    fn still_ours(&mut self) -> Result<(), Halt> {
        crate::migrate::still_ours(&mut self.lease, &self.store, &self.m).map_err(Halt::Lost)
    }

    /// Records the finished shift as a finished migration, for `status`,
    /// `retire` and `rollback`.
    fn done(mut self) -> Result<()> {
        crate::migrate::still_ours(&mut self.lease, &self.store, &self.m)?;
        self.m.phase = Phase::Done;
        self.m.flipped_at = Some(now());
        self.store.save(&self.m)
    }
}

/// Steps in 1..=100, rising, ending at 100.
fn check_steps(steps: &[u32]) -> Result<()> {
    if steps.is_empty() || steps.iter().any(|&s| s == 0 || s > 100) {
        bail!("--steps: percentages from 1 to 100");
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--steps: each step above the one before");
    }
    if steps.last() != Some(&100) {
        bail!("--steps: the last step is 100");
    }
    Ok(())
}

/// Weights that give the `new` addresses `percent` % of the answers
/// between them, the old ones (served, that is not `backups`) keeping their
/// proportions among themselves; an old weight 0 stays 0, and backups keep
/// their weights (they are not served while anything else is up).
fn split(
    old: &[(String, u32)],
    backups: &[String],
    new: &[String],
    percent: u32,
) -> Vec<(String, u32)> {
    let served = |a: &String| !backups.contains(a);
    let old_sum: u64 = old
        .iter()
        .filter(|(a, _)| served(a))
        .map(|&(_, w)| u64::from(w))
        .sum();
    let n_new = new.len() as u64;
    // new share / old share = percent / (100 - percent): each new address
    // weighs `w_new`, old weights are scaled by `scale`.
    let (w_new, scale) = if old_sum == 0 {
        (1, 0)
    } else {
        (
            u64::from(percent) * old_sum,
            u64::from(100 - percent) * n_new,
        )
    };
    let mut weights: Vec<(String, u64)> = old
        .iter()
        .map(|(a, w)| {
            let w = u64::from(*w);
            (a.clone(), if served(a) { w * scale } else { w })
        })
        .collect();
    weights.extend(new.iter().map(|a| (a.clone(), w_new)));
    let g = weights.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let max = weights.iter().map(|(_, w)| w / g).max().unwrap_or(1).max(1);
    // dnsd takes weights up to MAX_WEIGHT: scale down, keeping every
    // nonzero one.
    let cap = u64::from(cutover_control_api::contract::MAX_WEIGHT);
    weights
        .into_iter()
        .map(|(a, w)| {
            let w = w / g;
            let w = if max > cap {
                (w * cap).div_ceil(max)
            } else {
                w
            };
            (a, w as u32)
        })
        .collect()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Waits, up to `--every`, until dnsd reports every new address checked at
/// least twice and passing; `Err` once one is down (`fall` failures).
fn await_passing(
    dns: &Dns,
    args: &Args,
    new: &[String],
    mut redirect: Option<&mut Canary>,
) -> Result<(), Halt> {
    let deadline = Instant::now() + args.every;
    loop {
        let states = look(dns, args, new, redirect.as_deref_mut())?;
        // Two checks at least, the last one passed.
        if states
            .iter()
            .all(|(_, up, checks, error)| *up && *checks >= 2 && error.is_none())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Halt::Failed(format!(
                "{} not checked often enough within {:?}",
                new.join(", "),
                args.every
            )));
        }
        std::thread::sleep(args.poll_ms);
    }
}

/// Holds a step for `--every`; `Err` as soon as a new address fails.
fn hold(
    dns: &Dns,
    args: &Args,
    new: &[String],
    mut redirect: Option<&mut Canary>,
) -> Result<(), Halt> {
    let deadline = Instant::now() + args.every;
    while Instant::now() < deadline {
        look(dns, args, new, redirect.as_deref_mut())?;
        std::thread::sleep(
            args.poll_ms
                .min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    Ok(())
}

/// One look at the shift while it waits: still this shift's (with the
/// redirect), and the new addresses' states, `Err` once one of them fails.
fn look(
    dns: &Dns,
    args: &Args,
    new: &[String],
    redirect: Option<&mut Canary>,
) -> Result<Vec<State>, Halt> {
    if let Some(r) = redirect {
        r.still_ours()?;
    }
    let service = dns
        .service(&args.name)
        .map_err(|e| Halt::Failed(format!("{e:#}")))?;
    let states = states(&service, new);
    match failing(&states) {
        Some(why) => Err(Halt::Failed(why)),
        None => Ok(states),
    }
}

/// A new address as dnsd's checks see it: up, checks run, last error.
type State = (String, bool, u64, Option<String>);

/// Each new address: up, checks run, last error.
fn states(service: &Service, new: &[String]) -> Vec<State> {
    new.iter()
        .map(|a| {
            let h = service
                .members
                .iter()
                .find(|m| &m.address == a)
                .and_then(|m| m.health.as_ref());
            match h {
                Some(h) => (a.clone(), h.up, h.checks, h.last_error.clone()),
                None => (a.clone(), true, 0, None),
            }
        })
        .collect()
}

fn failing(states: &[State]) -> Option<String> {
    states
        .iter()
        .find(|(_, up, _, _)| !up)
        .map(|(a, _, _, why)| {
            format!(
                "{a} fails its health check ({})",
                why.as_deref().unwrap_or("no reason given")
            )
        })
}

fn join<'a>(addresses: impl Iterator<Item = &'a String>) -> String {
    addresses.cloned().collect::<Vec<_>>().join(", ")
}

fn say(line: &str) {
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(w: &[(String, u32)], new: &[&str], backups: &[&str]) -> f64 {
        let served: Vec<&(String, u32)> = w
            .iter()
            .filter(|(a, _)| !backups.contains(&a.as_str()))
            .collect();
        let total: u32 = served.iter().map(|(_, w)| w).sum();
        let n: u32 = served
            .iter()
            .filter(|(a, _)| new.contains(&a.as_str()))
            .map(|(_, w)| w)
            .sum();
        f64::from(n) / f64::from(total)
    }

    fn weight(w: &[(String, u32)], a: &str) -> u32 {
        w.iter().find(|(x, _)| x == a).map(|(_, w)| *w).unwrap()
    }

    #[test]
    fn a_step_gives_the_new_addresses_their_share() {
        let old = vec![
            ("198.18.0.3".to_string(), 1),
            ("198.18.0.4".to_string(), 3),
            ("198.18.0.6".to_string(), 0),
            ("198.18.0.7".to_string(), 1),
        ];
        let backups = ["198.18.0.7".to_string()];
        let new = ["198.18.0.5".to_string()];
        for p in [10, 50, 90, 100] {
            let w = split(&old, &backups, &new, p);
            let got = share(&w, &["198.18.0.5"], &["198.18.0.7"]);
            assert!((got - f64::from(p) / 100.0).abs() < 0.01, "{p}: {w:?}");
            if p < 100 {
                // The old addresses keep their 1:3, and 0 stays 0.
                assert_eq!(
                    weight(&w, "198.18.0.4"),
                    3 * weight(&w, "198.18.0.3"),
                    "{w:?}"
                );
            }
            assert_eq!(weight(&w, "198.18.0.6"), 0);
            assert!(w.iter().all(|(_, x)| *x <= 1000));
            // In the service's order, the new address last.
            assert_eq!(w.last().unwrap().0, "198.18.0.5");
        }
    }

    #[test]
    fn the_answers_and_the_redirect_together_make_the_step() {
        for step in [1u32, 5, 10, 25, 50, 75, 90, 100] {
            let each = f64::from(each_of_two(step)) / 100.0;
            let together = 1.0 - (1.0 - each) * (1.0 - each);
            assert!(
                (together - f64::from(step) / 100.0).abs() <= 0.015,
                "{step}: {each} each gives {together}"
            );
        }
        assert_eq!(each_of_two(50), 29);
        assert_eq!(each_of_two(100), 100);
    }

    #[test]
    fn steps_rise_to_100() {
        assert!(check_steps(&[10, 50, 100]).is_ok());
        assert!(check_steps(&[50, 10, 100]).is_err());
        assert!(check_steps(&[10, 50]).is_err());
        assert!(check_steps(&[0, 100]).is_err());
    }
}
