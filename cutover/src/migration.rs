//! A migration's record and its plan.
//!
//! The record is persisted after every step (temp file + rename), so that a
//! migration interrupted by a crash or Ctrl-C resumes where it stopped.
//! `next_step` is a pure function of the record, the clock and what the old
//! host reports: every decision of `cutover migrate` is in it and is
//! unit-tested without daemons.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where a migration stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Recorded, nothing changed yet.
    #[default]
    Planned,
    /// The TTL was lowered; caches holding the old TTL are expiring.
    TtlLowered,
    /// The old host forwards new connections to the new one.
    Redirecting,
    /// The name points at the new host; the old host drains.
    Flipped,
    /// The TTL is back to its original value.
    Done,
    /// `cutover rollback` put the old addresses back.
    RolledBack,
}

/// One redirect rule of a migration on the old host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub rule: String,
    /// The old host's address it matches, the new host's it forwards to
    /// (as the old host reaches it), and the new address in DNS.
    pub old_ip: String,
    pub new_ip: String,
    pub new_public: String,
    /// `OLD:PORT`.
    pub from: String,
    /// `NEW:PORT`.
    pub to: String,
    pub port: u16,
    pub new_port: u16,
}

impl Redirect {
    /// The name of its reverse rule NEW -> OLD, after a rollback.
    pub fn reverse_rule(&self) -> String {
        format!("{}-reverse", self.rule)
    }
}

impl Migration {
    /// The protocols of its redirects for the rules API (none: TCP).
    pub fn protocols(&self) -> Vec<cutover_control_api::contract::Proto> {
        use cutover_control_api::contract::Proto;
        if self.udp {
            vec![Proto::Tcp, Proto::Udp]
        } else {
            Vec::new()
        }
    }
}

/// The persisted record of one migration (`Default`: the base of a plan,
/// every field empty, `Planned`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// Fully qualified service name.
    pub name: String,
    /// Addresses before the move (restored by a rollback).
    pub from: Vec<String>,
    /// The old address that is redirected.
    pub old: String,
    pub to: String,
    pub port: u16,
    pub new_port: u16,
    /// More ports moved with `port`, each to the same port on NEW, each by
    /// a rule of its own (`Migration::redirects`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_ports: Vec<u16>,
    /// The redirects forward UDP on the same ports too (QUIC, DNS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
    pub original_ttl: u32,
    /// TTL in force during the move (= original_ttl if it was low enough).
    pub move_ttl: u32,
    /// Name of the rule on the old host's redirector.
    pub rule: String,
    pub phase: Phase,
    pub ttl_lowered_at: Option<u64>,
    pub flipped_at: Option<u64>,
    /// Since when the old host has seen no traffic, while draining.
    pub quiet_since: Option<u64>,
    /// Drain policy, seconds.
    pub max_cache: u64,
    pub quiet_period: u64,
    /// The new host's redirector API where a rollback put the reverse rule
    /// NEW -> OLD ([`Migration::reverse_rule`]); the next migrate of the
    /// service removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_on: Option<String>,
    /// When the redirect went on: drain samples count as quiet only once a
    /// whole sample window lies after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_on_at: Option<u64>,
    /// How long after the flip every name server of the zone served it, in
    /// milliseconds (`insync`); `None` until they all did, or when there
    /// were none to wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_after_ms: Option<u64>,
    /// `--max-cache` ran out while clients still arrived at OLD: the
    /// redirect was left on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy_at_end: bool,
    /// The old host's own address for `old`, when it is not `old` (an
    /// Elastic IP arrives translated to the instance's private address):
    /// what the redirect matches and forwards from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_from: Option<String>,
    /// NEW's address as the old host reaches it, when it is not `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// A pool's other addresses, each old one with the new one that takes
    /// its place (`--to A,B,C`), each moved by redirects of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_pairs: Vec<(String, String)>,
    /// Made by `cutover shift`: its redirects may cover a share of the
    /// clients, and only a rollback (not a migrate) takes over from a shift
    /// that stopped half-way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shift: bool,
    /// The service's addresses with their weights, and its backups, before
    /// a shift: what a rollback restores, weights and backups included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<(String, u32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<String>,
}

/// What `cutover migrate` does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    LowerTtl,
    /// Caches may still hold the original TTL for this many seconds.
    WaitTtl {
        remaining: u64,
    },
    SwitchOnRedirect,
    Flip,
    /// Keep watching; `remaining` until the longest cache time has passed.
    Drain {
        remaining: u64,
    },
    /// The drain is over: restore the TTL. `clients_still_arriving`: it
    /// ended because `--max-cache` ran out, not because OLD went quiet.
    RestoreTtl {
        clients_still_arriving: bool,
    },
    Finished,
}

/// What the old host reports while draining.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub new_flows_per_s: f64,
    pub active_flows: u64,
    pub distinct_clients: u64,
}

impl Traffic {
    pub fn is_idle(&self) -> bool {
        self.new_flows_per_s == 0.0 && self.active_flows == 0
    }
}

impl Migration {
    /// The service's addresses once flipped: those it had, with the old
    /// address replaced by the new one in its place; the other members of
    /// a pool, and addresses of the other family, stay.
    pub fn flipped(&self) -> Vec<String> {
        let mut after: Vec<String> = Vec::with_capacity(self.from.len());
        for a in &self.from {
            let a = if *a == self.old {
                &self.to
            } else {
                self.more_pairs
                    .iter()
                    .find(|(o, _)| o == a)
                    .map_or(a, |(_, n)| n)
            };
            if !after.contains(a) {
                after.push(a.clone());
            }
        }
        after
    }

    /// The name of the reverse rule NEW -> OLD a rollback puts on the new host.
    pub fn reverse_rule(&self) -> String {
        format!("{}-reverse", self.rule)
    }

    /// The address the old host sees its clients arrive at.
    pub fn local_old(&self) -> &str {
        self.redirect_from.as_deref().unwrap_or(&self.old)
    }

    /// The address the old host forwards to.
    pub fn local_new(&self) -> &str {
        self.redirect_to.as_deref().unwrap_or(&self.to)
    }

    /// Every old address in DNS that moves, in order.
    pub fn olds(&self) -> Vec<String> {
        std::iter::once(self.old.clone())
            .chain(self.more_pairs.iter().map(|(o, _)| o.clone()))
            .collect()
    }

    /// Every new address in DNS, in the order of [`Migration::olds`].
    pub fn news(&self) -> Vec<String> {
        std::iter::once(self.to.clone())
            .chain(self.more_pairs.iter().map(|(_, n)| n.clone()))
            .collect()
    }

    /// The redirects the migration puts on the old host, one per old
    /// address and port: the first address's rules are named `rule` and
    /// `rule-PORT` (each of `more_ports`), a pool's next ones `rule-2`,
    /// `rule-2-PORT`, and so on.
    pub fn redirects(&self) -> Vec<Redirect> {
        let first = (
            self.local_old().to_string(),
            self.local_new().to_string(),
            self.to.clone(),
        );
        let rest = self
            .more_pairs
            .iter()
            .map(|(o, n)| (o.clone(), n.clone(), n.clone()));
        let mut all = Vec::new();
        for (i, (old, new, public)) in std::iter::once(first).chain(rest).enumerate() {
            let base = match i {
                0 => self.rule.clone(),
                i => format!("{}-{}", self.rule, i + 1),
            };
            let ports = std::iter::once((base.clone(), self.port, self.new_port)).chain(
                self.more_ports
                    .iter()
                    .map(|&p| (format!("{base}-{p}"), p, p)),
            );
            for (rule, port, new_port) in ports {
                all.push(Redirect {
                    rule,
                    old_ip: old.clone(),
                    new_ip: new.clone(),
                    new_public: public.clone(),
                    from: endpoint(&old, port),
                    to: endpoint(&new, new_port),
                    port,
                    new_port,
                });
            }
        }
        all
    }

    /// `OLD:PORT -> NEW:PORT` of every redirect, for messages.
    pub fn redirects_text(&self) -> String {
        self.redirects()
            .iter()
            .map(|r| format!("{} -> {}", r.from, r.to))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The next step at time `now` (seconds since the epoch).
    pub fn next_step(&self, now: u64) -> Step {
        match self.phase {
            Phase::Planned if self.move_ttl < self.original_ttl => Step::LowerTtl,
            Phase::Planned => Step::SwitchOnRedirect,
            Phase::TtlLowered => {
                let since = self.ttl_lowered_at.unwrap_or(now);
                let until = since + u64::from(self.original_ttl);
                if now < until {
                    Step::WaitTtl {
                        remaining: until - now,
                    }
                } else {
                    Step::SwitchOnRedirect
                }
            }
            Phase::Redirecting => Step::Flip,
            Phase::Flipped => {
                let flipped = self.flipped_at.unwrap_or(now);
                let all_expired = now >= flipped + self.max_cache;
                let quiet = self
                    .quiet_since
                    .is_some_and(|q| now >= q + self.quiet_period);
                if quiet || all_expired {
                    Step::RestoreTtl {
                        clients_still_arriving: !quiet && self.quiet_since.is_none(),
                    }
                } else {
                    Step::Drain {
                        remaining: (flipped + self.max_cache).saturating_sub(now),
                    }
                }
            }
            Phase::Done | Phase::RolledBack => Step::Finished,
        }
    }

    /// Records a drain observation taken at `now` over the old host's last
    /// `window` seconds: the quiet period starts with the first idle sample
    /// whose whole window lies after the redirect went on (a sample taken
    /// just after, of a rule with no history, always reads zero), and any
    /// traffic resets it.
    pub fn observe(&mut self, traffic: Traffic, now: u64, window: f64) {
        if !traffic.is_idle() {
            self.quiet_since = None;
            return;
        }
        // `redirect_on_at` is truncated to the second: one more second makes
        // sure the window starts after the redirect.
        let on = self.redirect_on_at.or(self.flipped_at).unwrap_or(now);
        if now >= on + 1 + window.max(0.0).ceil() as u64 {
            self.quiet_since.get_or_insert(now);
        }
    }
}

/// The directory of migration records, one `<fqdn>toml` file each
/// (`www.example.test.toml`).
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory, where leases live beside the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}toml", crate::api::fqdn(name)))
    }

    pub fn load(&self, name: &str) -> Result<Option<Migration>> {
        let path = self.path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .with_context(|| format!("{}: not a migration record", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn all(&self) -> Result<Vec<Migration>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // Nothing migrated yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix("toml")
                && let Some(m) = self.load(stem)?
            {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the record of a migration that changed nothing yet, so that
    /// a refused start leaves no trace; a record further along is kept.
    pub fn remove_planned(&self, name: &str) -> Result<()> {
        if self.load(name)?.is_some_and(|m| m.phase == Phase::Planned) {
            let path = self.path(name);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    /// Saves atomically: a crash leaves the previous or the new record.
    pub fn save(&self, m: &Migration) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.path(&m.name);
        let tmp = path.with_extension("tmp");
        let text = toml::to_string(m).context("encoding the migration record")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }
}

/// A record's timestamp as UTC, `2026-12-07 00:35:00 UTC` (the civil
/// calendar from days since the epoch, H. Hinnant's algorithm; a date crate
/// for one line of output is not worth its weight).
pub fn clock(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch: the clock of the record's timestamps.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `IP:PORT`, IPv6 in brackets, as the redirector's rules take it.
fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A migration of www.example.test. from 198.18.0.2 to .3, planned,
    /// with these TTLs: for the tests of every module.
    pub(crate) fn planned(original_ttl: u32, move_ttl: u32) -> Migration {
        Migration {
            name: "www.example.test.".into(),
            from: vec!["198.18.0.2".into()],
            old: "198.18.0.2".into(),
            to: "198.18.0.3".into(),
            port: 80,
            new_port: 80,
            more_ports: Vec::new(),
            udp: false,
            original_ttl,
            move_ttl,
            rule: "cutover-www.example.test".into(),
            max_cache: 86_400,
            quiet_period: 600,
            ..Migration::default()
        }
    }

    #[test]
    fn a_pool_has_a_redirect_per_old_address_and_port_and_flips_each_in_place() {
        let mut m = planned(60, 60);
        m.from = vec![
            "198.18.0.2".into(),
            "2001:2::2".into(),
            "198.18.0.12".into(),
        ];
        m.more_pairs = vec![("198.18.0.12".into(), "198.18.0.13".into())];
        m.more_ports = vec![443];
        let rules: Vec<(String, String)> = m
            .redirects()
            .into_iter()
            .map(|r| (r.rule, format!("{} -> {}", r.from, r.to)))
            .collect();
        let want = [
            ("cutover-www.example.test", "198.18.0.2:80 -> 198.18.0.3:80"),
            (
                "cutover-www.example.test-443",
                "198.18.0.2:443 -> 198.18.0.3:443",
            ),
            (
                "cutover-www.example.test-2",
                "198.18.0.12:80 -> 198.18.0.13:80",
            ),
            (
                "cutover-www.example.test-2-443",
                "198.18.0.12:443 -> 198.18.0.13:443",
            ),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(rules, want);
        // Each in place; the AAAA record stays.
        assert_eq!(m.flipped(), ["198.18.0.3", "2001:2::2", "198.18.0.13"]);
        assert_eq!(m.olds(), ["198.18.0.2", "198.18.0.12"]);
        assert_eq!(m.news(), ["198.18.0.3", "198.18.0.13"]);
        // The record keeps the pool.
        let back: Migration = toml::from_str(&toml::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn an_aaaa_migration_redirects_ipv6_endpoints_in_brackets() {
        let mut m = planned(60, 60);
        m.from = vec!["2001:2::2".into()];
        m.old = "2001:2::2".into();
        m.to = "2001:2::3".into();
        m.more_ports = vec![443];
        assert_eq!(
            m.redirects_text(),
            "[2001:2::2]:80 -> [2001:2::3]:80, [2001:2::2]:443 -> [2001:2::3]:443"
        );
        for r in m.redirects() {
            let from: std::net::SocketAddr = r.from.parse().unwrap();
            assert_eq!(from.ip().to_string(), "2001:2::2");
        }
    }

    #[test]
    fn the_redirect_uses_the_hosts_own_addresses_when_dns_holds_others() {
        let mut m = planned(60, 60);
        m.more_ports = vec![443];
        // Elastic IPs in DNS (198.19.0.x), private addresses on the hosts.
        m.from = vec!["198.19.0.2".into()];
        m.old = "198.19.0.2".into();
        m.to = "198.19.0.3".into();
        m.redirect_from = Some("198.18.0.2".into());
        m.redirect_to = Some("198.18.0.3".into());
        assert_eq!(
            m.redirects_text(),
            "198.18.0.2:80 -> 198.18.0.3:80, 198.18.0.2:443 -> 198.18.0.3:443"
        );
        // The flip is in DNS terms.
        assert_eq!(m.flipped(), vec!["198.19.0.3".to_string()]);
        // A record without them reads as before.
        let text = toml::to_string(&planned(60, 60)).unwrap();
        assert!(!text.contains("redirect_"), "{text}");
    }

    #[test]
    fn a_high_ttl_is_lowered_and_waited_out_before_anything_moves() {
        let mut m = planned(3600, 60);
        assert_eq!(m.next_step(1000), Step::LowerTtl);
        m.phase = Phase::TtlLowered;
        m.ttl_lowered_at = Some(1000);
        assert_eq!(m.next_step(1000), Step::WaitTtl { remaining: 3600 });
        // resumed after a crash half-way: only the rest is waited
        assert_eq!(m.next_step(2800), Step::WaitTtl { remaining: 1800 });
        assert_eq!(m.next_step(4600), Step::SwitchOnRedirect);
    }

    #[test]
    fn a_low_ttl_goes_straight_to_the_redirect() {
        let m = planned(60, 60);
        assert_eq!(m.next_step(0), Step::SwitchOnRedirect);
    }

    #[test]
    fn the_record_flips_only_after_the_redirect_is_on() {
        let mut m = planned(60, 60);
        m.phase = Phase::Redirecting;
        assert_eq!(m.next_step(0), Step::Flip);
    }

    #[test]
    fn draining_ends_when_the_longest_cache_time_has_passed() {
        let mut m = planned(60, 60);
        m.phase = Phase::Flipped;
        m.flipped_at = Some(100);
        m.observe(
            Traffic {
                new_flows_per_s: 3.0,
                active_flows: 5,
                distinct_clients: 2,
            },
            150,
            1.0,
        );
        assert_eq!(m.next_step(150), Step::Drain { remaining: 86_350 });
        // clients still arrived at the last sample: said so
        assert_eq!(
            m.next_step(100 + 86_400),
            Step::RestoreTtl {
                clients_still_arriving: true
            }
        );
    }

    #[test]
    fn draining_ends_after_a_quiet_period_without_traffic() {
        let mut m = planned(60, 60);
        m.phase = Phase::Flipped;
        m.flipped_at = Some(0);
        m.observe(Traffic::default(), 10, 1.0);
        assert!(matches!(m.next_step(500), Step::Drain { .. }));
        // traffic comes back: the quiet period starts over
        m.observe(
            Traffic {
                active_flows: 1,
                ..Default::default()
            },
            500,
            1.0,
        );
        m.observe(Traffic::default(), 700, 1.0);
        assert!(matches!(m.next_step(1200), Step::Drain { .. }));
        assert_eq!(
            m.next_step(1300),
            Step::RestoreTtl {
                clients_still_arriving: false
            }
        );
    }

    #[test]
    fn quiet_is_measured_only_after_a_full_window_with_the_redirect_on() {
        let mut m = planned(60, 60);
        m.phase = Phase::Flipped;
        m.redirect_on_at = Some(100);
        m.flipped_at = Some(100);
        m.quiet_period = 1;
        // milliseconds after the redirect went on, a 2 s window reads zero
        m.observe(Traffic::default(), 100, 2.0);
        m.observe(Traffic::default(), 102, 2.0);
        assert_eq!(m.quiet_since, None);
        assert!(matches!(m.next_step(102), Step::Drain { .. }));
        m.observe(Traffic::default(), 103, 2.0);
        assert_eq!(m.quiet_since, Some(103));
        assert!(matches!(m.next_step(104), Step::RestoreTtl { .. }));
    }

    #[test]
    fn timestamps_read_as_utc() {
        assert_eq!(clock(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(clock(1_796_603_700), "2026-12-07 00:35:00 UTC");
        assert_eq!(clock(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn finished_migrations_do_nothing() {
        let mut m = planned(60, 60);
        m.phase = Phase::Done;
        assert_eq!(m.next_step(0), Step::Finished);
        m.phase = Phase::RolledBack;
        assert_eq!(m.next_step(0), Step::Finished);
    }

    #[test]
    fn records_survive_a_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut m = planned(3600, 60);
        m.phase = Phase::TtlLowered;
        m.ttl_lowered_at = Some(42);
        store.save(&m).unwrap();
        assert_eq!(store.load("WWW.example.test").unwrap(), Some(m.clone()));
        assert_eq!(store.all().unwrap(), vec![m]);
        assert_eq!(store.load("other.test").unwrap(), None);
    }

    #[test]
    fn a_flip_replaces_the_old_address_and_keeps_the_pool_and_the_other_family() {
        let mut m = planned(300, 60);
        m.from = vec!["198.18.0.9".into(), "198.18.0.2".into(), "2001:2::2".into()];
        assert_eq!(m.flipped(), ["198.18.0.9", "198.18.0.3", "2001:2::2"]);
        // Already in the pool: listed once.
        m.from = vec!["198.18.0.2".into(), "198.18.0.3".into()];
        assert_eq!(m.flipped(), ["198.18.0.3"]);
    }

    #[test]
    fn each_port_is_a_redirect_of_its_own_and_one_port_keeps_the_old_rule_name() {
        let mut m = planned(300, 60);
        let one = m.redirects();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].rule, m.rule);
        assert_eq!(one[0].reverse_rule(), m.reverse_rule());
        m.more_ports = vec![443];
        let two = m.redirects();
        assert_eq!(two[1].rule, format!("{}-443", m.rule));
        assert_eq!(
            (two[1].from.as_str(), two[1].to.as_str()),
            ("198.18.0.2:443", "198.18.0.3:443")
        );
        assert_eq!(
            m.redirects_text(),
            "198.18.0.2:80 -> 198.18.0.3:80, 198.18.0.2:443 -> 198.18.0.3:443"
        );
        // A record written before several ports were known reads back.
        let text = toml::to_string(&planned(300, 60)).unwrap();
        assert!(!text.contains("more_ports"), "{text}");
        let back: Migration = toml::from_str(&text).unwrap();
        assert!(back.more_ports.is_empty());
    }
}
