//! `cutover status`: what is served, what is moving, what the old host
//! sees — gathered once into a [`Report`], printed for a terminal (lines
//! that fit 80 columns) or, with `--json`, as one JSON document.

use anyhow::Result;
use serde::Serialize;

use crate::Apis;
use crate::api::{Service, Stats, ZoneInfo};
use crate::lease::Holder;
use crate::migration::Migration;

/// Everything `status` shows.
#[derive(Serialize)]
pub struct Report {
    pub dns: String,
    pub services: Vec<Service>,
    /// The workspace generation in force, if any: number and message.
    pub generation: Option<(u64, String)>,
    /// The zones that have secondaries (what each acknowledged and took),
    /// and the zones dnsd keeps copies of (`[[replica]]`).
    pub zones: Vec<ZoneInfo>,
    pub state_dir: String,
    pub migrations: Vec<MigrationReport>,
    pub redirectors: Vec<RedirectorReport>,
}

#[derive(Serialize)]
pub struct MigrationReport {
    #[serde(flatten)]
    pub record: Migration,
    /// Who holds the service's lease, and whether it still runs.
    pub lease: Option<Holder>,
    pub lease_live: bool,
}

#[derive(Serialize)]
pub struct RedirectorReport {
    /// "old host", or the new host of a reverse redirect.
    pub host: String,
    pub url: String,
    pub stats: Option<Stats>,
    pub error: Option<String>,
}

pub fn run(apis: &Apis, json: bool) -> Result<()> {
    let report = gather(apis)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn gather(apis: &Apis) -> Result<Report> {
    let dns = apis.dns()?;
    let services = dns.services()?;
    let generation = dns
        .generations()?
        .into_iter()
        .find(|g| g.current)
        .map(|g| (g.number, g.message));
    let zones = dns
        .zones()?
        .into_iter()
        .filter(|z| !z.secondaries.is_empty() || z.replica_of.is_some())
        .collect();
    let now = crate::migration::now();
    let mut migrations = Vec::new();
    for record in apis.store().all()? {
        let lease = crate::lease::Lease::read(apis.state_dir.as_path(), &record.name)?;
        migrations.push(MigrationReport {
            lease_live: lease.as_ref().is_some_and(|h| h.is_live(now)),
            lease,
            record,
        });
    }
    // The old host's redirects, then those of every new host a rollback put
    // a reverse redirect on (see `loops`).
    let mut redirectors = Vec::new();
    for (i, url) in crate::loops::known_redirectors(apis, &apis.store())?
        .iter()
        .enumerate()
    {
        let host = if i == 0 {
            "old host"
        } else {
            "new host, reverse redirects"
        };
        let (stats, error) = match apis.redirector_at(url)?.stats() {
            Ok(stats) => (Some(stats), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        redirectors.push(RedirectorReport {
            host: host.to_string(),
            url: url.clone(),
            stats,
            error,
        });
    }
    Ok(Report {
        dns: dns.0.base.clone(),
        services,
        generation,
        zones,
        state_dir: apis.state_dir.display().to_string(),
        migrations,
        redirectors,
    })
}

/// The report for a terminal: each line within 80 columns but for names
/// and URLs longer than the space they are given.
fn text(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("services (dnsd at {}):", r.dns));
    for s in &r.services {
        line(format!(
            "  {:<32} ttl {:>6}  {}",
            s.name,
            s.ttl,
            service_addresses(s)
        ));
    }
    match &r.generation {
        Some((n, message)) => line(format!("workspace generation {n}: {message}")),
        None => line("workspace generation: none recorded yet".into()),
    }
    for z in &r.zones {
        let serial = z.serial.map_or("?".into(), |s| s.to_string());
        if let Some(replica) = &z.replica_of {
            let served = if replica.served {
                format!("serial {serial}")
            } else {
                "NOT SERVED: not transferred yet, or expired".into()
            };
            line(format!(
                "{} is a replica of {} ({served}):",
                z.origin, replica.primary
            ));
            if let (Some(n), Some(how), Some(at)) = (
                replica.transferred,
                &replica.transfer,
                replica.transferred_at,
            ) {
                line(format!(
                    "    took {n} by {how} at {}",
                    crate::migration::clock(at)
                ));
            }
            if let Some(at) = replica.refreshed_at {
                line(format!("    refreshed at {}", crate::migration::clock(at)));
            }
            if let (Some(why), Some(at)) = (&replica.failure, replica.failed_at) {
                line(format!(
                    "    failing since {}: {why}",
                    crate::migration::clock(at)
                ));
            }
        }
        if z.secondaries.is_empty() {
            continue;
        }
        line(format!("secondaries of {} (serial {serial}):", z.origin));
        for s in &z.secondaries {
            let told = match (s.notify_acknowledged, s.notify_acknowledged_at) {
                (Some(n), Some(at)) => format!("told {n} at {}", crate::migration::clock(at)),
                _ => "no NOTIFY answered".into(),
            };
            let took = match (s.transferred, &s.transfer) {
                (Some(n), Some(how)) => format!("took {n} by {how}"),
                _ => "took nothing yet".into(),
            };
            line(format!("  {}", s.address));
            line(format!("    {told}"));
            line(format!("    {took}"));
        }
    }
    line(format!("migrations ({}):", r.state_dir));
    if r.migrations.is_empty() {
        line("  none".into());
    }
    for m in &r.migrations {
        let rec = &m.record;
        line(format!(
            "  {}  {} -> {}",
            rec.name,
            rec.olds().join(", "),
            rec.news().join(", ")
        ));
        line(format!("    {}", phase_in_words(rec)));
        for (what, at) in [
            ("TTL lowered", rec.ttl_lowered_at),
            ("redirect on", rec.redirect_on_at),
            ("record flipped", rec.flipped_at),
        ] {
            if let Some(at) = at {
                line(format!("    {what:<15} {}", crate::migration::clock(at)));
            }
        }
        if let Some(ms) = rec.in_sync_after_ms {
            line(format!(
                "    in sync         every name server served the flip {:.1} s after it",
                ms as f64 / 1000.0
            ));
        }
        match &m.lease {
            Some(h) if m.lease_live => line(format!(
                "    being changed by {} (lease until {})",
                h.describe(),
                crate::migration::clock(h.expires)
            )),
            Some(h) => line(format!(
                "    stale lease of {} (it no longer runs; the next command takes it)",
                h.describe()
            )),
            None => {}
        }
        if rec.busy_at_end {
            line(format!(
                "    clients still arrived at {} when --max-cache ran out:",
                rec.olds().join(", ")
            ));
            line(format!(
                "    its redirect stays on until `cutover retire {}`",
                rec.name
            ));
        }
        if let Some(url) = &rec.reverse_on {
            for r in rec.redirects() {
                line(format!(
                    "    reverse redirect {} -> {} (rule {}) on {url};",
                    r.to,
                    r.from,
                    r.reverse_rule()
                ));
            }
            line(format!(
                "    the next `cutover migrate {}` removes it",
                rec.name
            ));
        }
    }
    for red in &r.redirectors {
        let Some(stats) = &red.stats else {
            line(format!(
                "redirects ({} at {}): not available: {}",
                red.host,
                red.url,
                red.error.as_deref().unwrap_or("")
            ));
            continue;
        };
        line(format!("redirects ({} at {}):", red.host, red.url));
        if stats.rules.is_empty() {
            line("  none".into());
        }
        for rule in &stats.rules {
            let draining = if rule.draining {
                "  (removed, draining)"
            } else {
                ""
            };
            let share = if rule.share < 100 {
                format!(" ({} % of the clients)", rule.share)
            } else {
                String::new()
            };
            line(format!(
                "  {}  {} -> {}{share}{draining}",
                rule.name, rule.from, rule.to
            ));
            line(format!(
                "    {:.1} new flows/s, {} active flows, {} clients, {} flows in all",
                rule.new_flows_per_s, rule.active_flows, rule.distinct_clients, rule.new_flows
            ));
            let mut packets = format!(
                "    packets: {} forwarded, {} replies",
                rule.fwd_packets, rule.reply_packets
            );
            if rule.nat_failures > 0 {
                packets.push_str(&format!(", {} refused a NAT port", rule.nat_failures));
            }
            if rule.evictions > 0 {
                packets.push_str(&format!(", {} flows evicted", rule.evictions));
            }
            line(packets);
            if !rule.drops.is_empty() {
                let drops: Vec<String> = rule
                    .drops
                    .iter()
                    .map(|(why, n)| format!("{n} {why}"))
                    .collect();
                line(format!("    dropped: {}", drops.join(", ")));
            }
            if black_hole(rule) {
                line("    WARNING: connections are forwarded and nothing comes back:".into());
                line(format!("    does {} answer the old host?", rule.to));
            }
        }
    }
    out
}

/// Where a migration stands, said as an operator would.
fn phase_in_words(m: &Migration) -> String {
    use crate::migration::Phase;
    if m.shift {
        return match m.phase {
            Phase::Planned => format!(
                "shift to {}: the new addresses are checked, not served yet",
                m.news().join(", ")
            ),
            Phase::Redirecting => format!(
                "shifting to {}: weighted answers, and a share of the clients of {} \
                 redirected (a stopped shift is undone by rollback)",
                m.news().join(", "),
                m.olds().join(", ")
            ),
            Phase::Done => format!(
                "shifted: {} left the answers; its clients are redirected until `cutover retire`",
                m.olds().join(", ")
            ),
            _ => "shift rolled back to the old addresses".into(),
        };
    }
    match m.phase {
        Phase::Planned => "planned: nothing changed yet".into(),
        Phase::TtlLowered => format!(
            "TTL lowered to {} s: waiting for caches of the old TTL to expire",
            m.move_ttl
        ),
        Phase::Redirecting => format!(
            "redirecting {} to {}: the record flips next",
            m.olds().join(", "),
            m.news().join(", ")
        ),
        Phase::Flipped => format!(
            "record flipped: {} drains through its redirect",
            m.olds().join(", ")
        ),
        Phase::Done => "done: the TTL is back, the old host may go".into(),
        Phase::RolledBack => "rolled back to the old addresses".into(),
    }
}

/// Forwarded connections with no reply at all: NEW drops or does not
/// route back what the old host sends it.
fn black_hole(rule: &cutover_control_api::contract::RuleStats) -> bool {
    rule.new_flows > 0 && rule.fwd_packets > 0 && rule.reply_packets == 0
}

/// A service's addresses with what is worth knowing about each: its
/// weight and region when set, a backup, an address whose check fails, one
/// out of the answers (`198.18.0.4 w3 @eu (down, out)`).
fn service_addresses(s: &Service) -> String {
    if s.members.is_empty() {
        return s.addresses.join(", ");
    }
    s.members
        .iter()
        .map(|m| {
            let mut text = m.address.clone();
            if m.weight != 1 {
                text.push_str(&format!(" w{}", m.weight));
            }
            if let Some(region) = &m.region {
                text.push_str(&format!(" @{region}"));
            }
            let mut notes = Vec::new();
            if m.backup {
                notes.push("backup");
            }
            if m.answers > 0 {
                text.push_str(&format!(" [{} answers]", m.answers));
            }
            if m.health.as_ref().is_some_and(|h| !h.up) {
                notes.push("down");
            }
            if !m.in_use {
                notes.push("out");
            }
            if !notes.is_empty() {
                text.push_str(&format!(" ({})", notes.join(", ")));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_control_api::contract::RuleStats;

    fn rule(fwd: u64, replies: u64) -> RuleStats {
        serde_json::from_value(serde_json::json!({
            "id": 1, "name": "cutover-www.example.test", "from": "198.18.0.2:80",
            "to": "198.18.0.3:80", "draining": false, "new_flows_per_s": 12.5,
            "active_flows": 3, "active_clients": 2, "distinct_clients": 2, "new_flows": 40,
            "fwd_packets": fwd, "fwd_bytes": 0, "reply_packets": replies, "reply_bytes": 0,
            "sent_back": 0, "redirected": 0, "nat_failures": 0, "evictions": 0, "expired": 0,
            "passes": {}, "drops": {"drop_no_route": 4}
        }))
        .expect("every field of RuleStats")
    }

    fn report(rules: Vec<RuleStats>) -> Report {
        Report {
            dns: "http://127.0.0.1:8053".into(),
            services: vec![],
            generation: Some((
                7,
                "set www.example.test. to 198.18.0.3 (by alice@ops)".into(),
            )),
            zones: vec![ZoneInfo {
                origin: "example.test.".into(),
                serial: Some(2026120703),
                records: 5,
                nameservers: vec!["127.0.0.1:53".into(), "198.18.0.54:53".into()],
                secondaries: vec![cutover_control_api::contract::SecondaryInfo {
                    address: "198.18.0.54:53".into(),
                    notify_acknowledged: Some(2026120703),
                    notify_acknowledged_at: Some(1_796_620_000),
                    transferred: Some(2026120703),
                    transfer: Some("IXFR (whole zone)".into()),
                    transferred_at: Some(1_796_620_001),
                }],
                replica_of: None,
            }],
            state_dir: "/var/lib/cutover".into(),
            migrations: vec![MigrationReport {
                record: crate::migration::tests::planned(300, 60),
                lease: None,
                lease_live: false,
            }],
            redirectors: vec![RedirectorReport {
                host: "old host".into(),
                url: "http://198.18.0.2:8054".into(),
                stats: Some(Stats {
                    iface: "eth0".into(),
                    daemon_pid: 1,
                    daemon_running: true,
                    sample_seconds: 1.0,
                    rules,
                    unmatched: Default::default(),
                }),
                error: None,
            }],
        }
    }

    #[test]
    fn a_shift_s_record_is_said_as_a_shift() {
        use crate::migration::{Phase, tests::planned};
        let mut m = planned(60, 60);
        m.shift = true;
        m.phase = Phase::Redirecting;
        let words = phase_in_words(&m);
        assert!(words.starts_with("shifting to 198.18.0.3"), "{words}");
        assert!(!words.contains("flips next"), "{words}");
        m.phase = Phase::Done;
        assert!(phase_in_words(&m).contains("cutover retire"));
    }

    #[test]
    fn a_services_addresses_say_weight_region_backup_and_health() {
        use cutover_control_api::contract::{AddressHealth, ServiceMember};
        let member =
            |address: &str, weight, region: Option<&str>, backup, up, in_use| ServiceMember {
                address: address.into(),
                weight,
                region: region.map(str::to_string),
                backup,
                in_use,
                health: Some(AddressHealth {
                    up,
                    checks: 3,
                    last_check_ms: None,
                    last_error: None,
                }),
                answers: 0,
            };
        let s = Service {
            name: "www.example.test.".into(),
            addresses: vec![],
            ttl: 60,
            members: vec![
                member("198.18.0.3", 1, None, false, true, true),
                member("198.18.0.4", 3, Some("eu"), false, false, false),
                member("198.18.0.5", 1, None, true, true, false),
            ],
        };
        assert_eq!(
            service_addresses(&s),
            "198.18.0.3, 198.18.0.4 w3 @eu (down, out), 198.18.0.5 (backup, out)"
        );
    }

    #[test]
    fn replies_and_drops_stand_beside_the_requests_and_a_black_hole_is_flagged() {
        let shown = text(&report(vec![rule(900, 880)]));
        assert!(shown.contains("3 active flows"), "{shown}");
        assert!(shown.contains("planned: nothing changed yet"), "{shown}");
        assert!(
            shown.contains("packets: 900 forwarded, 880 replies"),
            "{shown}"
        );
        assert!(shown.contains("dropped: 4 drop_no_route"), "{shown}");
        assert!(!shown.contains("WARNING"), "{shown}");
        let hole = text(&report(vec![rule(900, 0)]));
        assert!(
            hole.contains("WARNING: connections are forwarded and nothing comes back"),
            "{hole}"
        );
        for l in shown.lines().chain(hole.lines()) {
            assert!(
                l.chars().count() <= 80,
                "{} columns: {l}",
                l.chars().count()
            );
        }
    }

    #[test]
    fn a_replica_zone_shows_its_primary_and_what_it_last_took() {
        let mut r = report(vec![]);
        r.zones.push(ZoneInfo {
            origin: "example.org.".into(),
            serial: None,
            records: 0,
            nameservers: vec![],
            secondaries: vec![],
            replica_of: Some(cutover_control_api::contract::ReplicaInfo {
                primary: "198.18.0.60:53".into(),
                served: false,
                refreshed_at: Some(1_796_620_000),
                transferred: Some(7),
                transfer: Some("IXFR".into()),
                transferred_at: Some(1_796_620_000),
                failure: Some("198.18.0.60:53 did not answer the SOA query".into()),
                failed_at: Some(1_796_620_100),
            }),
        });
        let shown = text(&r);
        assert!(
            shown.contains("example.org. is a replica of 198.18.0.60:53 (NOT SERVED"),
            "{shown}"
        );
        assert!(shown.contains("    took 7 by IXFR at "), "{shown}");
        assert!(shown.contains("    failing since "), "{shown}");
        assert!(!shown.contains("secondaries of example.org."), "{shown}");
    }

    #[test]
    fn the_json_holds_the_same_report() {
        let json = serde_json::to_value(report(vec![rule(900, 0)])).unwrap();
        assert_eq!(
            json["redirectors"][0]["stats"]["rules"][0]["reply_packets"],
            0
        );
        assert_eq!(json["migrations"][0]["name"], "www.example.test.");
        assert_eq!(json["generation"][0], 7);
    }
}
