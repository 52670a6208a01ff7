//! The immutable, pre-indexed form of a loaded workspace that every query
//! reads. Built once per (re)load, off the query path, and swapped in whole:
//! everything a query needs — the node of a name, its RRsets by type, the
//! delegation above it, the negative-answer SOA, the glue of an NS set — is
//! precomputed here so that answering is lookups and slicing.

pub mod encoded;

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use crate::snapshot::encoded::Encoded;
use crate::zone::name_key::{self, NameKey};
use crate::zone::{BrokenZone, LoadedWorkspace};

/// The served state, shared by every thread that answers and by the
/// reloader, which swaps it whole.
pub type SharedSnapshot = Arc<arc_swap::ArcSwap<Snapshot>>;

type Map<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// Everything dnsd serves at one moment.
#[derive(Debug)]
pub struct Snapshot {
    zones: Map<Held>,
    /// Cap on A/AAAA records per answer; 0 means none.
    pub max_answers: usize,
}

/// What a snapshot holds for one zone of the workspace.
#[derive(Debug)]
enum Held {
    /// Its index; shared with the snapshot before when its file did not
    /// load this time, so that the zone keeps its last good version.
    Serving(Arc<Zone>),
    /// Its file has never loaded: dnsd is authoritative for it by
    /// configuration but has no data (SERVFAIL).
    Unavailable,
}

/// The zone a query falls into.
pub enum ZoneLookup<'s> {
    Serving(&'s Zone),
    /// A zone whose file has not loaded: answer SERVFAIL.
    Unavailable,
    /// No zone of the workspace encloses the name: REFUSED.
    NotServed,
}

/// One served zone.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    /// Every name that exists: names with records, and the empty
    /// non-terminals between them and the apex (RFC 8020 makes those NODATA,
    /// not NXDOMAIN).
    nodes: Map<Node>,
    /// The apex SOA with TTL min(SOA TTL, MINIMUM): the authority record of
    /// every negative answer (RFC 2308 §3).
    pub negative_soa: RrSet,
    has_wildcards: bool,
    has_dnames: bool,
}

/// The records at one name.
#[derive(Debug, Default)]
pub struct Node {
    /// Sorted by type code, so answers to ANY come out in a stable order.
    pub rrsets: Vec<RrSet>,
    /// The key of the highest zone cut at or above this name (excluding the
    /// apex): a query here is answered with a referral to it.
    delegation: Option<Box<[u8]>>,
}

impl Node {
    pub fn get(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// The records of one name and type.
#[derive(Debug)]
pub struct RrSet {
    pub rtype: RecordType,
    /// The records, all with one TTL: the lowest the zone file gives any of
    /// them (RFC 2181 §5.2: an RRset whose TTLs differ is treated as if all
    /// had the lowest; serving that keeps every path — fast path included —
    /// consistent).
    pub records: Box<[Record]>,
    /// The address RRsets of the in-zone names this RRset points at (NS,
    /// MX, SRV targets, each A then AAAA, targets in record order): the
    /// glue of a referral, the additional section of an answer.
    pub additional: Box<[Additional]>,
    /// Encoded size of `records` without name compression: an upper bound
    /// on what they add to a response.
    pub wire_len: usize,
    /// The records pre-encoded for the UDP fast path.
    pub encoded: Option<Encoded>,
}

impl RrSet {
    fn new(mut records: Vec<Record>) -> Self {
        let rtype = records[0].record_type();
        if let Some(lowest) = records.iter().map(|r| r.ttl).min() {
            for r in &mut records {
                r.ttl = lowest;
            }
        }
        Self {
            rtype,
            wire_len: wire_len(&records),
            encoded: Encoded::new(&records),
            records: records.into_boxed_slice(),
            additional: Box::default(),
        }
    }
}

/// An address RRset (A or AAAA) of a name that an NS, MX or SRV RRset
/// points at, owned by that name as the pointing record writes it (a target
/// covered by a wildcard gets the wildcard's records under its own name,
/// RFC 1034 §4.3.2 step 6, as NSD and Knot add them).
#[derive(Debug)]
pub struct Additional {
    pub records: Box<[Record]>,
    pub wire_len: usize,
    /// The target is at or below the owner of an NS set: in a referral this
    /// is the glue of an in-domain name server, which a referral must carry
    /// whole or be truncated (RFC 9471 §3). Glue of other names (sibling
    /// glue) and the addresses added to answers are optional.
    pub required: bool,
}

/// Upper bound of the encoded size of `records`.
pub fn wire_len(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| {
            // A record that cannot encode cannot be sent either; the bound
            // only has to be generous.
            r.to_bytes().map_or(usize::from(u16::MAX), |b| b.len()) + r.name.len() + 2
        })
        .sum()
}

/// Sorts records by owner (case-insensitive, as names compare) and type,
/// keeping the file's order within an RRset. The order is sorted as
/// indexes, then applied by swapping along its cycles: a stable sort of the
/// records themselves would need a scratch copy of half of them.
fn sort_by_owner(records: &mut [Record]) {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (ra, rb) = (&records[a], &records[b]);
        ra.name
            .cmp(&rb.name)
            .then_with(|| u16::from(ra.record_type()).cmp(&u16::from(rb.record_type())))
            .then(a.cmp(&b))
    });
    // Position i takes the record at order[i]; a done position is marked
    // with usize::MAX.
    for start in 0..order.len() {
        let mut at = start;
        while order[at] != usize::MAX {
            let from = order[at];
            order[at] = usize::MAX;
            if from == start {
                break;
            }
            records.swap(at, from);
            at = from;
        }
    }
}

/// The RRsets of one name's records (sorted by type), each in its own
/// exactly sized allocation.
fn rrsets_of(mut records: Vec<Record>) -> Vec<RrSet> {
    let types = 1 + records
        .windows(2)
        .filter(|w| w[0].record_type() != w[1].record_type())
        .count();
    let mut rrsets = Vec::with_capacity(types);
    while let Some(last) = records.last() {
        let rtype = last.record_type();
        let start = records
            .iter()
            .rposition(|r| r.record_type() != rtype)
            .map_or(0, |i| i + 1);
        rrsets.push(RrSet::new(records.drain(start..).collect()));
    }
    rrsets.reverse();
    rrsets
}

/// Where a name leads in its zone.
pub enum Lookup<'s> {
    /// The name exists and this zone is authoritative for it.
    Node(&'s Node),
    /// The name is at or below a zone cut: refer to the cut's NS set.
    Referral(&'s RrSet),
    /// The name does not exist, but a wildcard covers it (RFC 4592).
    Wildcard(&'s Node),
    /// The name is below a DNAME (this RRset, of one record): it is
    /// rewritten into the DNAME's target (RFC 6672 §3.2).
    Dname(&'s RrSet),
    NxDomain,
}

impl Snapshot {
    /// Indexes a loaded workspace, which it consumes: each zone's records
    /// move into the index and the loaded copy shrinks as they go, so that
    /// building holds about one copy of the records, not two (see
    /// [`Zone::build`]). Never fails: everything was checked when it was
    /// loaded. A zone whose file did not load keeps the version `previous`
    /// serves, if any (the same index, not a copy). Load and reload use
    /// this.
    pub fn from_workspace(ws: LoadedWorkspace, previous: Option<&Snapshot>) -> Self {
        let max_answers = ws.config.server.max_answers;
        let zones = ws.zones.into_iter().map(|zone| (zone.origin, zone.records));
        Self::index(zones, &ws.broken, previous, max_answers)
    }

    /// Indexes a copy of a loaded workspace's records, leaving it whole; as
    /// [`Snapshot::from_workspace`] otherwise. For tests.
    #[cfg(test)]
    pub fn build(ws: &LoadedWorkspace, previous: Option<&Snapshot>) -> Self {
        let zones = ws
            .zones
            .iter()
            .map(|zone| (zone.origin.clone(), zone.records.to_vec()));
        Self::index(zones, &ws.broken, previous, ws.config.server.max_answers)
    }

    fn index(
        loaded: impl Iterator<Item = (Name, Vec<Record>)>,
        broken: &[BrokenZone],
        previous: Option<&Snapshot>,
        max_answers: usize,
    ) -> Self {
        let mut zones = Map::default();
        for (origin, records) in loaded {
            if let Some(key) = NameKey::new(&origin)
                && let Some(z) = Zone::build(origin, records)
            {
                zones.insert(Box::from(key.as_bytes()), Held::Serving(Arc::new(z)));
            }
        }
        for broken in broken {
            let Some(key) = NameKey::new(&broken.origin) else {
                continue;
            };
            let held = match previous.and_then(|p| p.zones.get(key.as_bytes())) {
                Some(Held::Serving(zone)) => Held::Serving(Arc::clone(zone)),
                _ => Held::Unavailable,
            };
            zones.insert(Box::from(key.as_bytes()), held);
        }
        Self { zones, max_answers }
    }

    /// The zone that answers `qtype` at the name with key `key`: the
    /// closest enclosing zone, except that DS at the apex of a served child
    /// zone belongs to the parent side of the cut (RFC 4035 §3.1.4.1) when
    /// the parent is served too.
    pub fn find_zone(&self, key: &[u8], qtype: RecordType) -> ZoneLookup<'_> {
        if qtype == RecordType::DS
            && let Some(parent) = name_key::parent(key)
            && let Some(held) = self.closest_zone(parent)
        {
            return held.into();
        }
        self.closest_zone(key)
            .map_or(ZoneLookup::NotServed, ZoneLookup::from)
    }

    /// The closest enclosing zone of a name, by its key; a zone that is
    /// unavailable still encloses its names.
    fn closest_zone(&self, key: &[u8]) -> Option<&Held> {
        let mut k = key;
        loop {
            if let Some(z) = self.zones.get(k) {
                return Some(z);
            }
            k = name_key::parent(k)?;
        }
    }

    /// Whether the name with key `key` is the apex of a zone of the
    /// workspace (served or unavailable).
    pub fn serves_zone(&self, key: &[u8]) -> bool {
        self.zones.contains_key(key)
    }

    /// Zones whose file has never loaded.
    pub fn unavailable_count(&self) -> usize {
        self.zones
            .values()
            .filter(|z| matches!(z, Held::Unavailable))
            .count()
    }

    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }
}

impl<'s> From<&'s Held> for ZoneLookup<'s> {
    fn from(held: &'s Held) -> Self {
        match held {
            Held::Serving(zone) => ZoneLookup::Serving(zone),
            Held::Unavailable => ZoneLookup::Unavailable,
        }
    }
}

impl Zone {
    /// Indexes one zone's records, which it takes over. They are grouped
    /// by owner through a sort, not a map of growing vectors (which, at four
    /// records' room for the one record most names have, once cost four
    /// times the zone), then moved name by name from the end of the sorted
    /// vector into the index, the vector given back as it empties.
    fn build(origin: Name, mut records: Vec<Record>) -> Option<Self> {
        let apex = NameKey::new(&origin)?;
        let apex = apex.as_bytes();
        sort_by_owner(&mut records);
        let names = 1 + records
            .windows(2)
            .filter(|w| w[0].name.cmp(&w[1].name).is_ne())
            .count();
        let mut nodes: Map<Node> = Map::with_capacity_and_hasher(names, Default::default());
        let mut shrunk_at = records.len();
        while let Some(last) = records.last() {
            let start = records
                .iter()
                .rposition(|r| r.name.cmp(&last.name).is_ne())
                .map_or(0, |i| i + 1);
            let Some(key) = NameKey::new(&last.name) else {
                records.truncate(start);
                continue;
            };
            let key = key.as_bytes();
            // Every ancestor up to the apex exists, if only as an empty
            // non-terminal.
            let mut k = name_key::parent(key);
            while let Some(p) = k {
                if p.len() < apex.len() {
                    break;
                }
                nodes.entry(Box::from(p)).or_default();
                k = name_key::parent(p);
            }
            let node = nodes.entry(Box::from(key)).or_default();
            node.rrsets = rrsets_of(records.drain(start..).collect());
            // Give back what the moved records held (large blocks shrink in
            // place), so that the two copies never coexist.
            if records.len() + shrunk_at / 16 < shrunk_at {
                records.shrink_to_fit();
                shrunk_at = records.len();
            }
        }
        drop(records);

        // Zone cuts: NS sets below the apex. A name's delegation is its
        // highest cut, since everything below a cut is glue or occluded.
        let cuts: Vec<Box<[u8]>> = nodes
            .iter()
            .filter(|(k, n)| k.as_ref() != apex && n.get(RecordType::NS).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if !cuts.is_empty() {
            for (key, node) in nodes.iter_mut() {
                node.delegation = cuts
                    .iter()
                    .filter(|c| name_key::is_at_or_below(key, c))
                    .min_by_key(|c| c.len())
                    .cloned();
            }
        }

        // Additional data: address RRsets of in-zone NS/MX/SRV targets.
        let has_wildcards = nodes.keys().any(|k| k.starts_with(b"\x01*"));
        let mut extras: Vec<(Box<[u8]>, usize, Vec<Additional>)> = Vec::new();
        for (key, node) in &nodes {
            for (i, set) in node.rrsets.iter().enumerate() {
                let add = additional_of(&nodes, apex, key, set, has_wildcards);
                if !add.is_empty() {
                    extras.push((key.clone(), i, add));
                }
            }
        }
        for (key, i, add) in extras {
            if let Some(set) = nodes.get_mut(&key).and_then(|n| n.rrsets.get_mut(i)) {
                set.additional = add.into_boxed_slice();
            }
        }

        let soa = nodes.get(apex)?.get(RecordType::SOA)?.records.first()?;
        let mut negative = soa.clone();
        if let RData::SOA(data) = &soa.data {
            negative.ttl = soa.ttl.min(data.minimum);
        }
        let has_dnames = nodes.values().any(|n| n.get(RecordType::DNAME).is_some());
        Some(Self {
            origin,
            nodes,
            negative_soa: RrSet::new(vec![negative]),
            has_wildcards,
            has_dnames,
        })
    }

    /// Where `key` (a name at or below the apex) leads for a query of
    /// `qtype`.
    pub fn lookup(&self, key: &[u8], qtype: RecordType) -> Lookup<'_> {
        if let Some(node) = self.nodes.get(key) {
            match &node.delegation {
                // DS lives on the parent side of a cut (RFC 4035 §3.1.4.1).
                Some(cut) if !(qtype == RecordType::DS && cut.as_ref() == key) => {
                    return self.referral(cut);
                }
                _ => return Lookup::Node(node),
            }
        }
        // The closest encloser: the nearest ancestor that exists. The apex
        // always exists, so the walk ends inside the zone.
        let mut encloser = key;
        let node = loop {
            let Some(p) = name_key::parent(encloser) else {
                return Lookup::NxDomain;
            };
            encloser = p;
            if let Some(node) = self.nodes.get(encloser) {
                break node;
            }
        };
        if let Some(cut) = &node.delegation {
            return self.referral(cut);
        }
        // Nothing exists below a DNAME (checked at load), so a name below
        // one always has the DNAME's owner as its closest encloser.
        if self.has_dnames
            && let Some(dname) = node.get(RecordType::DNAME)
        {
            return Lookup::Dname(dname);
        }
        if self.has_wildcards
            && let Some(w) = NameKey::wildcard_of(encloser)
            && let Some(node) = self.nodes.get(w.as_bytes())
        {
            return Lookup::Wildcard(node);
        }
        Lookup::NxDomain
    }

    fn referral(&self, cut: &[u8]) -> Lookup<'_> {
        match self.nodes.get(cut).and_then(|n| n.get(RecordType::NS)) {
            Some(ns) => Lookup::Referral(ns),
            None => Lookup::NxDomain,
        }
    }
}

/// The address RRsets that `set`, owned by the name with key `owner`, adds
/// to a response: for each in-zone target of its NS, MX or SRV records (once
/// per name), the target's A then AAAA RRset.
fn additional_of(
    nodes: &Map<Node>,
    apex: &[u8],
    owner: &[u8],
    set: &RrSet,
    has_wildcards: bool,
) -> Vec<Additional> {
    let mut add = Vec::new();
    let mut seen: Vec<NameKey> = Vec::new();
    for r in set.records.iter() {
        let target = match &r.data {
            RData::NS(ns) => &ns.0,
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            _ => continue,
        };
        let Some(tk) = NameKey::new(target) else {
            continue;
        };
        let tk_bytes = tk.as_bytes();
        if !name_key::is_at_or_below(tk_bytes, apex)
            || seen.iter().any(|k| k.as_bytes() == tk_bytes)
        {
            continue;
        }
        seen.push(tk);
        let Some((node, synthesized)) = address_node(nodes, tk_bytes, has_wildcards) else {
            continue;
        };
        let required = set.rtype == RecordType::NS
            && owner != apex
            && name_key::is_at_or_below(tk_bytes, owner);
        for rtype in [RecordType::A, RecordType::AAAA] {
            let Some(s) = node.get(rtype) else {
                continue;
            };
            let records: Vec<Record> = s
                .records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if synthesized {
                        r.name = target.clone();
                    }
                    r
                })
                .collect();
            add.push(Additional {
                wire_len: wire_len(&records),
                records: records.into_boxed_slice(),
                required,
            });
        }
    }
    add
}

/// The node that holds the addresses of the in-zone name with key `key`,
/// and whether it is a wildcard that covers the name: the name's own node
/// (glue below a zone cut included), else the wildcard at its closest
/// encloser (RFC 4592 §3.3.1), unless that encloser is at or below a cut or
/// owns a DNAME, where nothing is synthesized.
fn address_node<'n>(
    nodes: &'n Map<Node>,
    key: &[u8],
    has_wildcards: bool,
) -> Option<(&'n Node, bool)> {
    if let Some(node) = nodes.get(key) {
        return Some((node, false));
    }
    if !has_wildcards {
        return None;
    }
    let mut encloser = key;
    let node = loop {
        encloser = name_key::parent(encloser)?;
        if let Some(node) = nodes.get(encloser) {
            break node;
        }
    };
    if node.delegation.is_some() || node.get(RecordType::DNAME).is_some() {
        return None;
    }
    let wildcard = NameKey::wildcard_of(encloser)?;
    nodes.get(wildcard.as_bytes()).map(|node| (node, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, TXT};

    fn a(name: &str, last: u8) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            60,
            RData::A(A::new(198, 18, 0, last)),
        )
    }

    #[test]
    fn records_group_by_owner_without_case_keeping_the_file_order_of_each_rrset() {
        let txt = Record::from_rdata(
            Name::from_ascii("a.test.").unwrap(),
            60,
            RData::TXT(TXT::new(vec!["x".into()])),
        );
        let mut records = vec![
            a("b.test.", 1),
            txt,
            a("A.test.", 2),
            a("b.test.", 3),
            a("a.test.", 4),
            a("B.TEST.", 5),
        ];
        sort_by_owner(&mut records);
        let got: Vec<String> = records
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => format!("{} {}", r.name.to_lowercase(), a.octets()[3]),
                _ => format!("{} {}", r.name.to_lowercase(), r.record_type()),
            })
            .collect();
        assert_eq!(
            got,
            [
                "a.test. 2",
                "a.test. 4",
                "a.test. TXT",
                "b.test. 1",
                "b.test. 3",
                "b.test. 5"
            ]
        );
        let rrsets = rrsets_of(records.drain(..3).collect());
        assert_eq!(rrsets.len(), 2);
        assert_eq!(rrsets[0].rtype, RecordType::A);
        assert_eq!(rrsets[0].records.len(), 2);
        assert_eq!(rrsets[1].rtype, RecordType::TXT);
    }
}
