//! What dnsd counts as it goes — queries by transport, path, type and
//! response code; reloads; dynamic updates by outcome — for `GET
//! /metrics`. The states it reports there (serials, the generation,
//! health) are read at the scrape from where they live.
//!
//! Query counting is on the answer path, so it costs one uncontended
//! atomic add: every thread counts into a shard of its own (each UDP
//! socket has its thread), and a scrape sums the shards.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cutover_control_api::metrics::Scrape;

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Which code answered it: the pre-encoded answers straight from the wire
/// (UDP only) or the general path (hickory's message, TCP, everything the
/// fast path declines), or a zone transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerPath {
    Fast,
    General,
    Transfer,
}

const TRANSPORTS: [&str; 2] = ["udp", "tcp"];
const PATHS: [&str; 3] = ["fast", "general", "transfer"];

/// The query types counted by name; any other is `other`.
const QTYPES: [(u16, &str); 19] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (35, "NAPTR"),
    (39, "DNAME"),
    (43, "DS"),
    (48, "DNSKEY"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (251, "IXFR"),
    (252, "AXFR"),
    (255, "ANY"),
    (257, "CAA"),
];
const QTYPE_SLOTS: usize = QTYPES.len() + 1;

/// Response codes by number (RFC 6895's names), then BADVERS (an extended
/// code, 16), then any other.
const RCODES: [&str; 13] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "BADVERS", "other",
];
const BADVERS: u16 = 16;

const CELLS: usize = TRANSPORTS.len() * PATHS.len() * QTYPE_SLOTS * RCODES.len();

/// Enough that the UDP threads (one per socket, a few per CPU) rarely
/// share one; the tokio workers share the rest.
const SHARDS: usize = 32;

/// One thread's counters, on cache lines of their own.
#[repr(align(128))]
struct Shard([AtomicU64; CELLS]);

static QUERIES: [Shard; SHARDS] = [const { Shard([const { AtomicU64::new(0) }; CELLS]) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

fn shard() -> &'static Shard {
    let i = SHARD.with(|s| {
        s.get().unwrap_or_else(|| {
            let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(Some(i));
            i
        })
    });
    &QUERIES[i]
}

fn qtype_slot(qtype: u16) -> usize {
    QTYPES
        .iter()
        .position(|&(t, _)| t == qtype)
        .unwrap_or(QTYPES.len())
}

fn rcode_slot(rcode: u16) -> usize {
    match rcode {
        0..=10 => usize::from(rcode),
        BADVERS => 11,
        _ => 12,
    }
}

fn cell(transport: Transport, path: AnswerPath, qtype: u16, rcode: u16) -> usize {
    let t = transport as usize;
    let p = path as usize;
    ((t * PATHS.len() + p) * QTYPE_SLOTS + qtype_slot(qtype)) * RCODES.len() + rcode_slot(rcode)
}

/// Counts one query answered with `rcode` (the whole 12-bit code).
pub fn query(transport: Transport, path: AnswerPath, qtype: u16, rcode: u16) {
    shard().0[cell(transport, path, qtype, rcode)].fetch_add(1, Ordering::Relaxed);
}

/// The sum of one cell over every shard, for tests of what counts.
#[cfg(test)]
pub(crate) fn total(transport: Transport, path: AnswerPath, qtype: u16, rcode: u16) -> u64 {
    let c = cell(transport, path, qtype, rcode);
    QUERIES.iter().map(|s| s.0[c].load(Ordering::Relaxed)).sum()
}

static MALFORMED: AtomicU64 = AtomicU64::new(0);

/// Counts one query that did not decode or broke the protocol's form.
pub fn malformed() {
    MALFORMED.fetch_add(1, Ordering::Relaxed);
}

static RELOADS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts one reload of the workspace (SIGHUP, the API, a health change).
pub fn reload(ok: bool) {
    RELOADS[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

/// RFC 2136 updates by outcome: their response code, or dropped unanswered
/// (too many waiting).
static UPDATES: [AtomicU64; RCODES.len() + 1] = [const { AtomicU64::new(0) }; RCODES.len() + 1];

/// Counts one UPDATE answered with `rcode`.
pub fn update(rcode: u16) {
    UPDATES[rcode_slot(rcode)].fetch_add(1, Ordering::Relaxed);
}

/// Counts one UPDATE dropped without an answer.
pub fn update_dropped() {
    UPDATES[RCODES.len()].fetch_add(1, Ordering::Relaxed);
}

/// Adds the counters to `scrape`. Every transport, path, type and code that
/// was seen is listed; the common ones always are, so that their series
/// exist before the first query.
pub fn add_counters(scrape: &mut Scrape) {
    let mut sums = vec![0u64; CELLS];
    for shard in &QUERIES {
        for (sum, n) in sums.iter_mut().zip(&shard.0) {
            *sum += n.load(Ordering::Relaxed);
        }
    }
    let queries = scrape.counter(
        "dnsd_queries",
        "Queries answered, by transport, answer path (fast: pre-encoded answers on the \
         wire; general; transfer: AXFR and IXFR), query type and response code.",
    );
    for (t, transport) in TRANSPORTS.iter().enumerate() {
        for (p, path) in PATHS.iter().enumerate() {
            for q in 0..QTYPE_SLOTS {
                for (r, rcode) in RCODES.iter().enumerate() {
                    let n = sums[((t * PATHS.len() + p) * QTYPE_SLOTS + q) * RCODES.len() + r];
                    let always = r == 0 && q < 2 && p < 2 && !(t == 1 && p == 0);
                    if n == 0 && !always {
                        continue;
                    }
                    let qtype = QTYPES.get(q).map_or("other", |(_, name)| name);
                    queries.sample(
                        [
                            ("transport", *transport),
                            ("path", *path),
                            ("qtype", qtype),
                            ("rcode", *rcode),
                        ],
                        n,
                    );
                }
            }
        }
    }
    scrape
        .counter(
            "dnsd_malformed_queries",
            "Queries that did not decode or broke the protocol's form (answered FORMERR \
             or dropped).",
        )
        .value(MALFORMED.load(Ordering::Relaxed));
    scrape
        .counter(
            "dnsd_reloads",
            "Reloads of the workspace, by result (a failed one leaves the previous state \
             serving).",
        )
        .sample([("result", "ok")], RELOADS[0].load(Ordering::Relaxed))
        .sample([("result", "failed")], RELOADS[1].load(Ordering::Relaxed));
    let updates = scrape.counter(
        "dnsd_updates",
        "RFC 2136 updates by result: the response code, or dropped unanswered.",
    );
    for (i, n) in UPDATES.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        // NOERROR and REFUSED always, the others once seen.
        if n == 0 && i != 0 && i != 5 {
            continue;
        }
        updates.sample([("result", RCODES.get(i).copied().unwrap_or("dropped"))], n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_counted_in_its_cell_from_any_thread() {
        // DNAME NXDOMAIN: a cell no other test counts into.
        let before = total(Transport::Tcp, AnswerPath::General, 39, 3);
        query(Transport::Tcp, AnswerPath::General, 39, 3);
        std::thread::spawn(|| query(Transport::Tcp, AnswerPath::General, 39, 3))
            .join()
            .unwrap();
        assert_eq!(
            total(Transport::Tcp, AnswerPath::General, 39, 3),
            before + 2
        );
    }

    #[test]
    fn every_cell_is_distinct_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for transport in [Transport::Udp, Transport::Tcp] {
            for path in [AnswerPath::Fast, AnswerPath::General, AnswerPath::Transfer] {
                for qtype in QTYPES.iter().map(|&(t, _)| t).chain([99]) {
                    for rcode in (0..=10).chain([BADVERS, 23]) {
                        let c = cell(transport, path, qtype, rcode);
                        assert!(c < CELLS);
                        seen.insert(c);
                    }
                }
            }
        }
        assert_eq!(seen.len(), CELLS);
    }
}
