//! `GET /metrics`: the report `GET /v1/stats` answers, as Prometheus
//! metrics. Every pass and drop reason the program counts is listed for
//! every rule, zeros included, so that a series exists before its first
//! packet and `rate()` sees that packet.

use std::collections::BTreeMap;

use cutover_control_api::metrics::{Family, Scrape};
use redirector_common::counter;

use crate::stats::{Report, RuleReport};

/// The metrics of one report.
pub fn scrape(report: &Report) -> Scrape {
    let mut s = Scrape::default();
    let info = s.gauge(
        "redirector_rule_info",
        "A rule of the redirector: 1, with where it forwards from and to, and whether it \
         is draining (removed from the config, its flows still forwarded).",
    );
    for r in &report.rules {
        info.sample(
            rule(r).into_iter().chain([
                ("from", r.from.clone()),
                ("to", r.to.clone()),
                ("draining", r.draining.to_string()),
            ]),
            true,
        );
    }
    let new_flows = s.counter("redirector_new_flows", "New connections forwarded.");
    per_rule(new_flows, report, |r| r.new_flows);
    per_rule(
        s.gauge(
            "redirector_active_flows",
            "Connections in the flow tables (established and half-open).",
        ),
        report,
        |r| r.active_flows,
    );
    per_rule(
        s.gauge(
            "redirector_active_clients",
            "Distinct client addresses among the active connections: who still arrives \
             at the old address.",
        ),
        report,
        |r| r.active_clients,
    );
    let packets = s.counter("redirector_packets", "Packets forwarded, by direction.");
    for r in &report.rules {
        packets
            .sample(with(r, "direction", "forward"), r.fwd_packets)
            .sample(with(r, "direction", "reply"), r.reply_packets);
    }
    let bytes = s.counter("redirector_bytes", "Bytes forwarded, by direction.");
    for r in &report.rules {
        bytes
            .sample(with(r, "direction", "forward"), r.fwd_bytes)
            .sample(with(r, "direction", "reply"), r.reply_bytes);
    }
    let sent = s.counter(
        "redirector_transmits",
        "Packets sent out: back through the interface they came in on (tx) or through \
         another (redirect).",
    );
    for r in &report.rules {
        sent.sample(with(r, "action", "tx"), r.sent_back)
            .sample(with(r, "action", "redirect"), r.redirected);
    }
    per_rule(
        s.counter(
            "redirector_nat_failures",
            "New connections refused because no NAT port was free.",
        ),
        report,
        |r| r.nat_failures,
    );
    per_rule(
        s.counter(
            "redirector_evictions",
            "Established connections lost to a full flow table.",
        ),
        report,
        |r| r.evictions,
    );
    per_rule(
        s.counter(
            "redirector_expired",
            "Connections removed by collection after their idle timeout.",
        ),
        report,
        |r| r.expired,
    );
    by_reason(
        s.counter(
            "redirector_passes",
            "Packets of a rule's address handed to the kernel, by reason.",
        ),
        report,
        "pass_",
        |r| &r.passes,
    );
    by_reason(
        s.counter(
            "redirector_drops",
            "Packets of a rule's address dropped, by reason.",
        ),
        report,
        "drop_",
        |r| &r.drops,
    );
    let events = s.counter(
        "redirector_events",
        "Other events: closing connections, ICMP errors translated, fragmentation-needed \
         sent, NAT ports of closed connections reused, half-open connections evicted.",
    );
    for r in &report.rules {
        for (name, n) in &r.events {
            events.sample(with(r, "event", name.clone()), *n);
        }
    }
    let unmatched = s.counter(
        "redirector_unmatched_packets",
        "Packets that matched no rule, by what was done with them.",
    );
    for name in counter::NAMES
        .iter()
        .filter(|n| n.starts_with("pass_") || n.starts_with("drop_"))
    {
        let n = report.unmatched.get(*name).copied().unwrap_or(0);
        unmatched.sample([("reason", *name)], n);
    }
    s.gauge(
        "redirector_build_info",
        "The redirector's version: 1, with the version as a label.",
    )
    .sample([("version", env!("CARGO_PKG_VERSION"))], true);
    s
}

/// One sample per rule.
fn per_rule(family: &mut Family, report: &Report, value: impl Fn(&RuleReport) -> u64) {
    for r in &report.rules {
        family.sample(rule(r), value(r));
    }
}

/// One sample per rule and reason: every counter whose name starts with
/// `prefix`, the report's non-zero ones and zero for the rest.
fn by_reason(
    family: &mut Family,
    report: &Report,
    prefix: &str,
    counts: impl Fn(&RuleReport) -> &BTreeMap<String, u64>,
) {
    for r in &report.rules {
        for name in counter::NAMES.iter().filter(|n| n.starts_with(prefix)) {
            let n = counts(r).get(*name).copied().unwrap_or(0);
            let reason = name.trim_start_matches(prefix);
            family.sample(with(r, "reason", reason), n);
        }
    }
}

/// The labels that name a rule: its name, and its id (a draining rule and
/// its replacement may share a name).
fn rule(r: &RuleReport) -> Vec<(&'static str, String)> {
    vec![("rule", r.name.clone()), ("rule_id", r.id.to_string())]
}

fn with(
    r: &RuleReport,
    key: &'static str,
    value: impl Into<String>,
) -> Vec<(&'static str, String)> {
    let mut labels = rule(r);
    labels.push((key, value.into()));
    labels
}
