//! The immutable, pre-indexed form of a loaded workspace that every query
//! reads. Built once per (re)load, off the query path, and swapped in whole:
//! everything a query needs — the node of a name, its RRsets by type, the
//! delegation above it, the negative-answer SOA, the glue of an NS set — is
//! precomputed here so that answering is lookups and slicing.

pub mod encoded;

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};

use crate::answer::rotate::Window;
use crate::answer::steer::{Picked, Steers};
use crate::snapshot::encoded::Rdatas;
use crate::zone::journal::Replayed;
use crate::zone::name_key::{self, NameKey};
use crate::zone::records;
use crate::zone::{BrokenZone, LoadedWorkspace};
use cutover_workspace::Stamps;

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
    /// The services whose answers are chosen by weight and region.
    pub steers: Arc<Steers>,
}

/// What a snapshot holds for one zone of the workspace.
#[derive(Debug)]
enum Held {
    /// Its index, shared with the snapshot before when its file did not
    /// load this time, so that the zone keeps its last good version; and
    /// where that was read from.
    Serving(Arc<Zone>, Source),
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
    /// not NXDOMAIN); as read from the files, shared by every version of
    /// the zone that changes made since (`with_names`).
    nodes: Arc<Map<Node>>,
    /// The names changes have made, changed or removed (`None`) since the
    /// zone was read: looked up before `nodes`. Each change copies this,
    /// not `nodes`; a reload folds it in.
    changed: Map<Option<Arc<Node>>>,
    /// The apex SOA with TTL min(SOA TTL, MINIMUM): the authority record of
    /// every negative answer (RFC 2308 §3).
    pub negative_soa: Arc<RrSet>,
    has_wildcards: bool,
    has_dnames: bool,
    /// The changes served by name since the zone was read, oldest first,
    /// each from one serial to the next: what an IXFR sends, whether or not
    /// the zone's journal holds the change (a service flip is in dnsd.toml).
    steps: Vec<Arc<Step>>,
}

/// One change served by name: the zone went from serial `from` to `to` by
/// removing and adding these records (the SOA in neither), owners in lower
/// case as a transfer sends them.
#[derive(Debug)]
pub struct Step {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<zonefile::Record>,
    pub added: Vec<zonefile::Record>,
}

/// The steps a zone keeps: the newest, up to this many, and as many of
/// those as hold this many records in all. Older serials get the whole
/// zone, or the journal's difference.
const STEPS: usize = 64;
const STEP_RECORDS: usize = 100_000;
/// A reload that changes a zone's serial is a step too when neither
/// version has more names than this (a million, with room for its empty
/// non-terminals): comparing them name by name, in wire form, added
/// 0.08 s to a reload of 200,000 names.
const COMPARED_NAMES: usize = 1_200_000;

/// What a served zone was read from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Its files as they stood when read.
    pub stamps: Stamps,
    /// Its file's sync header and the journal replayed onto it.
    pub replayed: Replayed,
}

/// The records at one name. The name itself is the node's key: records
/// keep no owner of their own, and an answer owns them by the name asked
/// (which echoes the asker's case).
#[derive(Debug, Default, Clone)]
pub struct Node {
    /// Sorted by type code, so answers to ANY come out in a stable order.
    pub rrsets: Box<[RrSet]>,
    /// The key of the highest zone cut at or above this name (excluding the
    /// apex): a query here is answered with a referral to it.
    delegation: Option<Box<[u8]>>,
    /// How many names exist directly below this one: a name with none and
    /// no records does not exist.
    children: u32,
}

impl Node {
    pub fn get(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// The records of one name and type, in wire form: what a zone holds
/// costs the octets it sends, not a decoded record apiece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    pub rtype: RecordType,
    /// The TTL of every record: the lowest the zone file gives any of them
    /// (RFC 2181 §5.2: an RRset whose TTLs differ is treated as if all had
    /// the lowest; serving that keeps every path — fast path included —
    /// consistent).
    pub ttl: u32,
    pub rdatas: Rdatas,
}

impl RrSet {
    /// The RRset of `records`, which share owner and type. Rdata hickory
    /// cannot encode (only an update's empty placeholder, which never
    /// reaches a zone) is left out.
    fn new(records: &[Record]) -> Self {
        let rtype = records
            .first()
            .map_or(RecordType::NULL, Record::record_type);
        let wires: Vec<Vec<u8>> = records
            .iter()
            .filter_map(|r| records::rdata_wire(&r.data))
            .collect();
        Self {
            rtype,
            ttl: records.iter().map(|r| r.ttl).min().unwrap_or(0),
            rdatas: Rdatas::new(wires.iter().map(Vec::as_slice)).unwrap_or_default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rdatas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rdatas.is_empty()
    }

    /// The records `w` selects, as hickory records owned by `owner`.
    pub fn records<'a>(&'a self, owner: &'a Name, w: Window) -> impl Iterator<Item = Record> + 'a {
        self.rdatas
            .window(w)
            .map(move |wire| self.record(owner, &wire[2..]))
    }

    /// The records `picked` selects, in its order, owned by `owner`.
    pub fn picked<'a>(
        &'a self,
        owner: &'a Name,
        picked: &'a Picked,
    ) -> impl Iterator<Item = Record> + 'a {
        let all: Vec<&[u8]> = self.rdatas.iter().collect();
        picked
            .indices()
            .filter_map(move |i| all.get(i).map(|rdata| self.record(owner, rdata)))
    }

    /// Every record, owned by `owner`.
    pub fn all(&self, owner: &Name) -> Vec<Record> {
        let all = Window {
            start: 0,
            take: self.len(),
        };
        self.records(owner, all).collect()
    }

    /// Each record's data, decoded.
    pub fn data(&self) -> impl Iterator<Item = RData> + '_ {
        self.rdatas
            .iter()
            .map(|rdata| records::rdata(self.rtype, rdata))
    }

    fn record(&self, owner: &Name, rdata: &[u8]) -> Record {
        Record::from_rdata(owner.clone(), self.ttl, records::rdata(self.rtype, rdata))
    }
}

/// An address RRset (A or AAAA) of a name that an NS, MX or SRV RRset
/// points at, owned by that name as the pointing record writes it (a target
/// covered by a wildcard gets the wildcard's records under its own name,
/// RFC 1034 §4.3.2 step 6, as NSD and Knot add them).
pub struct Additional<'z> {
    pub owner: Name,
    pub set: &'z RrSet,
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

/// The RRsets of one name's records, sorted by type (the order read kept
/// within an RRset).
fn rrsets_of(records: &mut [Record]) -> Box<[RrSet]> {
    records.sort_by_key(|r| u16::from(r.record_type()));
    records
        .chunk_by(|a, b| a.record_type() == b.record_type())
        .map(RrSet::new)
        .collect()
}

/// The RRsets of one name's records as the loader gives them (wire form),
/// sorted by type (the order read kept within an RRset).
fn rrsets_of_wire(records: &mut [zonefile::ZoneRecord]) -> Box<[RrSet]> {
    records.sort_by_key(|zr| zr.record.rtype);
    let sets = || records.chunk_by(|a, b| a.record.rtype == b.record.rtype);
    // Sized exactly up front: the one allocation is the one kept.
    let mut rrsets = Vec::with_capacity(sets().count());
    rrsets.extend(sets().map(|set| RrSet {
        rtype: RecordType::from(set[0].record.rtype),
        ttl: set.iter().map(|zr| zr.record.ttl).min().unwrap_or(0),
        // The reader refuses rdata longer than RDLENGTH can say.
        rdatas: Rdatas::new(set.iter().map(|zr| zr.record.rdata.as_slice())).unwrap_or_default(),
    }));
    rrsets.into_boxed_slice()
}

/// `steps` and then `step`, of which a zone keeps the newest (`STEPS`,
/// `STEP_RECORDS`).
fn stepped(steps: &[Arc<Step>], step: Step) -> Vec<Arc<Step>> {
    let mut steps = steps.to_vec();
    steps.push(Arc::new(step));
    let mut records = 0;
    let keep = steps
        .iter()
        .rev()
        .take(STEPS)
        .take_while(|s| {
            records += s.removed.len() + s.added.len();
            records <= STEP_RECORDS
        })
        .count();
    steps.split_off(steps.len() - keep)
}

/// Adds to `removed` and `added` how a name's served records go from
/// `old` to `new` (owners lower-cased, the SOA left out: a step carries
/// the serials).
fn step_at(
    old: &[Record],
    new: &[Record],
    removed: &mut Vec<zonefile::Record>,
    added: &mut Vec<zonefile::Record>,
) {
    let wire = |records: &[Record]| -> Vec<zonefile::Record> {
        records
            .iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .filter_map(crate::zone::records::from_hickory)
            .map(|mut r| {
                // Length octets are below 64: lower-casing leaves them.
                let lower = r.owner.wire().to_ascii_lowercase();
                if let Some((owner, _)) = zonefile::Name::from_wire_prefix(&lower) {
                    r.owner = owner;
                }
                r
            })
            .collect()
    };
    let (old, new) = (wire(old), wire(new));
    removed.extend(old.iter().filter(|r| !new.contains(r)).cloned());
    added.extend(new.iter().filter(|r| !old.contains(r)).cloned());
}

/// Where a name leads in its zone.
pub enum Lookup<'s> {
    /// The name exists and this zone is authoritative for it.
    Node(&'s Node),
    /// The name is at or below a zone cut (the key of the cut's name):
    /// refer to its NS set.
    Referral {
        cut: &'s [u8],
        ns: &'s RrSet,
    },
    /// The name does not exist, but a wildcard covers it (RFC 4592).
    Wildcard(&'s Node),
    /// The name is below a DNAME (this RRset, of one record, owned by the
    /// name's ancestor of `labels` labels): it is rewritten into the
    /// DNAME's target (RFC 6672 §3.2).
    Dname {
        labels: usize,
        dname: &'s RrSet,
    },
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
        let tally = previous.map(|p| p.steers.tally()).unwrap_or_default();
        let steers = Arc::new(Steers::new(&ws.config.services, &ws.config.regions, tally));
        let zones = ws.zones.into_iter().map(|zone| {
            let source = Source {
                stamps: zone.stamps,
                replayed: zone.replayed,
            };
            (zone.origin, zone.records, source)
        });
        Self::index(zones, &ws.broken, previous, max_answers, steers)
    }

    /// Indexes a copy of a loaded workspace's records, leaving it whole; as
    /// [`Snapshot::from_workspace`] otherwise. For tests.
    #[cfg(test)]
    pub fn build(ws: &LoadedWorkspace, previous: Option<&Snapshot>) -> Self {
        let zones = ws.zones.iter().map(|zone| {
            let source = Source {
                stamps: zone.stamps.clone(),
                replayed: zone.replayed,
            };
            (zone.origin.clone(), zone.records.to_vec(), source)
        });
        let tally = previous.map(|p| p.steers.tally()).unwrap_or_default();
        let steers = Arc::new(Steers::new(&ws.config.services, &ws.config.regions, tally));
        Self::index(
            zones,
            &ws.broken,
            previous,
            ws.config.server.max_answers,
            steers,
        )
    }

    fn index(
        loaded: impl Iterator<Item = (Name, Vec<zonefile::ZoneRecord>, Source)>,
        broken: &[BrokenZone],
        previous: Option<&Snapshot>,
        max_answers: usize,
        steers: Arc<Steers>,
    ) -> Self {
        let mut zones = Map::default();
        for (origin, records, source) in loaded {
            if let Some(key) = NameKey::new(&origin)
                && let Some(mut z) = Zone::build(origin, records)
            {
                if let Some((before, _)) = previous.and_then(|p| p.served(key.as_bytes())) {
                    z.follow(before);
                }
                zones.insert(
                    Box::from(key.as_bytes()),
                    Held::Serving(Arc::new(z), source),
                );
            }
        }
        for broken in broken {
            let Some(key) = NameKey::new(&broken.origin) else {
                continue;
            };
            let held = match previous.and_then(|p| p.zones.get(key.as_bytes())) {
                Some(Held::Serving(zone, source)) if !broken.withheld => {
                    Held::Serving(Arc::clone(zone), source.clone())
                }
                _ => Held::Unavailable,
            };
            zones.insert(Box::from(key.as_bytes()), held);
        }
        Self {
            zones,
            max_answers,
            steers,
        }
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

    /// The zone served at apex key `key` and where it was read from; `None`
    /// when it is not served (no such zone, or its file has never loaded).
    pub fn served(&self, key: &[u8]) -> Option<(&Arc<Zone>, &Source)> {
        match self.zones.get(key)? {
            Held::Serving(zone, source) => Some((zone, source)),
            Held::Unavailable => None,
        }
    }

    /// This snapshot with zone `key` (served) replaced by `zone`, read from
    /// `source`; every other zone shared, not copied.
    pub fn with_zone(&self, key: &[u8], zone: Arc<Zone>, source: Source) -> Self {
        let mut zones = self.zones_shared();
        zones.insert(Box::from(key), Held::Serving(zone, source));
        Self {
            zones,
            max_answers: self.max_answers,
            steers: Arc::clone(&self.steers),
        }
    }

    /// Every zone of this snapshot, each shared with it.
    fn zones_shared(&self) -> Map<Held> {
        let mut zones = Map::with_capacity_and_hasher(self.zones.len(), Default::default());
        for (k, held) in &self.zones {
            let held = match held {
                Held::Serving(z, s) => Held::Serving(Arc::clone(z), s.clone()),
                Held::Unavailable => Held::Unavailable,
            };
            zones.insert(k.clone(), held);
        }
        zones
    }

    /// This snapshot with `steers` choosing the services' answers.
    pub fn with_steers(&self, steers: Arc<Steers>) -> Self {
        Self {
            zones: self.zones_shared(),
            max_answers: self.max_answers,
            steers,
        }
    }

    /// Each served zone, by its apex key.
    pub fn zones(&self) -> impl Iterator<Item = (&[u8], &Arc<Zone>)> {
        self.zones.iter().filter_map(|(k, held)| match held {
            Held::Serving(zone, _) => Some((k.as_ref(), zone)),
            Held::Unavailable => None,
        })
    }

    /// Each served zone's apex key and where it was read from.
    pub fn sources(&self) -> impl Iterator<Item = (&[u8], &Source)> {
        self.zones.iter().filter_map(|(k, held)| match held {
            Held::Serving(_, source) => Some((k.as_ref(), source)),
            Held::Unavailable => None,
        })
    }

    /// The keys of the apexes of every zone (served or unavailable).
    pub fn apexes(&self) -> impl Iterator<Item = &[u8]> {
        self.zones.keys().map(|k| k.as_ref())
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
            Held::Serving(zone, _) => ZoneLookup::Serving(zone),
            Held::Unavailable => ZoneLookup::Unavailable,
        }
    }
}

impl Zone {
    /// Indexes one zone's records, which it takes over: grouped by owner,
    /// as the loader gives them (`zone::checks::group`). They are moved
    /// name by name from the end of the vector into the index, the vector
    /// given back as it empties, so that the two never coexist whole.
    fn build(origin: Name, mut records: Vec<zonefile::ZoneRecord>) -> Option<Self> {
        let apex = NameKey::new(&origin)?;
        let apex = apex.as_bytes();
        let same_owner = |a: &zonefile::ZoneRecord, b: &zonefile::ZoneRecord| {
            a.record
                .owner
                .wire()
                .eq_ignore_ascii_case(b.record.owner.wire())
        };
        // Sized once: the names with records, and room for a few empty
        // non-terminals.
        let names = records.chunk_by(same_owner).count();
        let mut tree = Tree {
            nodes: Map::with_capacity_and_hasher(names + names / 64 + 1, Default::default()),
            apex,
            empty: Keys::default(),
            tally: (Vec::new(), 0),
        };
        // The names below the apex with NS records: the zone cuts.
        let mut cuts: Vec<Box<[u8]>> = Vec::new();
        let (mut has_wildcards, mut has_dnames) = (false, false);
        let mut shrunk_at = records.len();
        while let Some(last) = records.last() {
            let key = NameKey::from_wire(last.record.owner.wire());
            let start = records
                .chunk_by(same_owner)
                .next_back()
                .map_or(0, |name| records.len() - name.len());
            if let Some(key) = key {
                let key = key.as_bytes();
                let rrsets = rrsets_of_wire(&mut records[start..]);
                let has = |t: RecordType| rrsets.iter().any(|s| s.rtype == t);
                if has(RecordType::NS) && key != apex {
                    cuts.push(Box::from(key));
                }
                has_dnames |= has(RecordType::DNAME);
                has_wildcards |= key.starts_with(b"\x01*");
                tree.add(key, rrsets);
            }
            records.truncate(start);
            // Give back what the moved records held (large blocks shrink in
            // place), so that the two copies never coexist.
            if records.len() + shrunk_at / 4 < shrunk_at {
                records.shrink_to_fit();
                shrunk_at = records.len();
            }
        }
        drop(records);
        let mut nodes = tree.finish();

        // Zone cuts: NS sets below the apex. A name's delegation is its
        // highest cut, since everything below a cut is glue or occluded.
        if !cuts.is_empty() {
            for (key, node) in nodes.iter_mut() {
                node.delegation = cuts
                    .iter()
                    .filter(|c| name_key::is_at_or_below(key, c))
                    .min_by_key(|c| c.len())
                    .cloned();
            }
        }

        let negative_soa = negative_soa(nodes.get(apex)?)?;
        Some(Self {
            origin,
            nodes: Arc::new(nodes),
            changed: Map::default(),
            negative_soa: Arc::new(negative_soa),
            has_wildcards,
            has_dnames,
            steps: Vec::new(),
        })
    }

    /// The node of the name with key `key`, if the name exists.
    fn node(&self, key: &[u8]) -> Option<&Node> {
        if !self.changed.is_empty()
            && let Some(changed) = self.changed.get(key)
        {
            return changed.as_deref();
        }
        self.nodes.get(key)
    }

    /// Every name of the zone with its node, each once, changes made since
    /// it was read included: what a zone transfer sends.
    pub fn names(&self) -> impl Iterator<Item = (&[u8], &Node)> {
        let changed = self
            .changed
            .iter()
            .filter_map(|(k, n)| n.as_deref().map(|n| (k.as_ref(), n)));
        let read = self
            .nodes
            .iter()
            .filter(|(k, _)| !self.changed.contains_key(k.as_ref()))
            .map(|(k, n)| (k.as_ref(), n));
        changed.chain(read)
    }

    /// The zone's SOA RRset (its one record, with the TTL it was given).
    pub fn soa(&self) -> Option<&RrSet> {
        let apex = NameKey::new(&self.origin)?;
        self.node(apex.as_bytes())?.get(RecordType::SOA)
    }

    /// The zone's SOA serial.
    pub fn serial(&self) -> Option<u32> {
        let rdata = self.soa()?.rdatas.iter().next()?;
        Some(zonefile::soa_numbers(rdata)?[0])
    }

    /// How many names changes have touched since the zone was read: a
    /// reload folds them into the index.
    pub fn changed_names(&self) -> usize {
        self.changed.len()
    }

    /// How many names it had when it was read.
    pub fn names_read(&self) -> usize {
        self.nodes.len()
    }

    /// This zone with the records at each of `names` replaced by the
    /// records given (served records: services applied; none removes the
    /// name's records), sharing everything else with this one: the cost is
    /// the change's, not the zone's. `None` when the change reaches past
    /// those names — a delegation made, moved or removed (every name below
    /// it changes), or the addresses or wildcard behind other names'
    /// additional data — and the zone has to be indexed whole again.
    pub fn with_names(&self, names: Vec<(Name, Vec<Record>)>) -> Option<Self> {
        let apex_key = NameKey::new(&self.origin)?;
        let apex = apex_key.as_bytes();
        let mut next = Self {
            origin: self.origin.clone(),
            nodes: Arc::clone(&self.nodes),
            changed: self.changed.clone(),
            negative_soa: Arc::clone(&self.negative_soa),
            has_wildcards: self.has_wildcards,
            has_dnames: self.has_dnames,
            steps: Vec::new(),
        };
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for (name, mut records) in names {
            let key = NameKey::new(&name)?;
            let k = key.as_bytes();
            if !name_key::is_at_or_below(k, apex) || records.iter().any(|r| r.name != name) {
                return None;
            }
            step_at(&self.records_at(k), &records, &mut removed, &mut added);
            let old = next.node(k).cloned();
            let is_wildcard = k.starts_with(b"\x01*");
            let ns_here = records.iter().any(|r| r.record_type() == RecordType::NS)
                || old
                    .as_ref()
                    .is_some_and(|n| n.get(RecordType::NS).is_some());
            if k != apex && ns_here {
                return None;
            }
            let children = old.as_ref().map_or(0, |n| n.children);
            if records.is_empty() {
                match &old {
                    None => {}
                    Some(n) if n.rrsets.is_empty() => {}
                    Some(n) if children > 0 || k == apex => {
                        let ent = Node {
                            rrsets: Box::default(),
                            delegation: n.delegation.clone(),
                            children,
                        };
                        next.changed.insert(Box::from(k), Some(Arc::new(ent)));
                    }
                    Some(_) => next.remove_leaf(k, apex),
                }
                continue;
            }
            let rrsets = rrsets_of(&mut records);
            let delegation = match &old {
                Some(n) => n.delegation.clone(),
                None => next.delegation_above(k, apex),
            };
            if old.is_none() {
                next.add_to_parents(k, apex);
            }
            next.has_wildcards |= is_wildcard;
            next.has_dnames |= rrsets.iter().any(|s| s.rtype == RecordType::DNAME);
            let node = Node {
                rrsets,
                delegation,
                children,
            };
            if k == apex {
                next.negative_soa = Arc::new(negative_soa(&node)?);
            }
            next.changed.insert(Box::from(k), Some(Arc::new(node)));
        }
        // A change that keeps the serial breaks the chain: a secondary at
        // that serial cannot be told it.
        if let (Some(from), Some(to)) = (self.serial(), next.serial())
            && from != to
        {
            next.steps = stepped(
                &self.steps,
                Step {
                    from,
                    to,
                    removed,
                    added,
                },
            );
        }
        Some(next)
    }

    /// Carries the steps of `before`, the version this one replaces on a
    /// reload, over to this one: as they are when the serial did not
    /// change (another zone was reloaded, changes were folded in), with one
    /// more when it did (a hand edit, a rollback) and both versions are
    /// small enough to compare name by name; else none (IXFR then falls
    /// back on the journal, or the whole zone).
    fn follow(&mut self, before: &Zone) {
        let (Some(from), Some(to)) = (before.serial(), self.serial()) else {
            return;
        };
        if from == to {
            self.steps = before.steps.clone();
            return;
        }
        let size = |z: &Zone| z.nodes.len() + z.changed.len();
        if size(before).max(size(self)) > COMPARED_NAMES {
            return;
        }
        // Compared in wire form, name by name; decoded only where they
        // differ: every name this version has, then those it lost.
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        let mut differs = |key: &[u8]| {
            let (old, new) = (before.records_at(key), self.records_at(key));
            step_at(&old, &new, &mut removed, &mut added);
        };
        for (key, node) in self.names() {
            if before.node(key).map(|n| &n.rrsets) != Some(&node.rrsets) {
                differs(key);
            }
        }
        for (key, _) in before.names() {
            if self.node(key).is_none() {
                differs(key);
            }
        }
        self.steps = stepped(
            &before.steps,
            Step {
                from,
                to,
                removed,
                added,
            },
        );
    }

    /// The difference from serial `from` to the serial served, condensed,
    /// if the steps served since the zone was read lead from one to the
    /// other: (removed, added), the SOA in neither.
    pub fn served_since(
        &self,
        from: u32,
    ) -> Option<(Vec<zonefile::Record>, Vec<zonefile::Record>)> {
        let to = self.serial()?;
        let start = self.steps.iter().position(|s| s.from == from)?;
        let chain = &self.steps[start..];
        let linked = chain.windows(2).all(|w| w[0].to == w[1].from);
        if !linked || chain.last()?.to != to {
            return None;
        }
        Some(crate::zone::journal::condense(
            chain.iter().map(|s| (&s.removed[..], &s.added[..])),
        ))
    }

    /// The highest zone cut strictly above `key` (below the apex), for a
    /// name that is new.
    fn delegation_above(&self, key: &[u8], apex: &[u8]) -> Option<Box<[u8]>> {
        let mut cut = None;
        let mut k = name_key::parent(key);
        while let Some(p) = k {
            if p.len() <= apex.len() {
                break;
            }
            if let Some(node) = self.node(p) {
                // Its own delegation is the highest cut at or above it.
                if node.delegation.is_some() {
                    return node.delegation.clone();
                }
                if node.get(RecordType::NS).is_some() {
                    cut = Some(Box::from(p));
                }
            }
            k = name_key::parent(p);
        }
        cut
    }

    /// A new name's ancestors: each that does not exist is made an empty
    /// non-terminal, and each gains a child.
    fn add_to_parents(&mut self, key: &[u8], apex: &[u8]) {
        let mut k = key;
        while k.len() > apex.len()
            && let Some(p) = name_key::parent(k)
        {
            match self.node(p).cloned() {
                Some(mut parent) => {
                    parent.children += 1;
                    self.changed.insert(Box::from(p), Some(Arc::new(parent)));
                    return;
                }
                None => {
                    let ent = Node {
                        rrsets: Box::default(),
                        delegation: self.delegation_above(p, apex),
                        children: 1,
                    };
                    self.changed.insert(Box::from(p), Some(Arc::new(ent)));
                }
            }
            k = p;
        }
    }

    /// Removes the name `key`, which has no records left and nothing below
    /// it, and each empty non-terminal above it that this leaves without a
    /// child (RFC 8020: a name with nothing at or below it does not exist).
    fn remove_leaf(&mut self, key: &[u8], apex: &[u8]) {
        self.changed.insert(Box::from(key), None);
        let mut k = key;
        while let Some(p) = name_key::parent(k) {
            if p.len() < apex.len() {
                return;
            }
            let Some(mut parent) = self.node(p).cloned() else {
                return;
            };
            parent.children = parent.children.saturating_sub(1);
            if parent.children == 0 && parent.rrsets.is_empty() && p != apex {
                self.changed.insert(Box::from(p), None);
                k = p;
            } else {
                self.changed.insert(Box::from(p), Some(Arc::new(parent)));
                return;
            }
        }
    }

    /// Every record at the name with key `key`, as served (services
    /// applied, each RRset with its one TTL), owned by the name in lower
    /// case.
    pub fn records_at(&self, key: &[u8]) -> Vec<Record> {
        let (Some(node), Some(owner)) = (self.node(key), name_key::to_name(key)) else {
            return Vec::new();
        };
        node.rrsets.iter().flat_map(|s| s.all(&owner)).collect()
    }

    /// The DNAME records owned by names strictly above `key` in this zone:
    /// a name below one of them may not exist (RFC 6672 §2.3).
    pub fn dnames_above(&self, key: &[u8]) -> Vec<Record> {
        if !self.has_dnames {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut k = key;
        while let Some(p) = name_key::parent(k) {
            if let Some(d) = self.node(p).and_then(|n| n.get(RecordType::DNAME))
                && let Some(owner) = name_key::to_name(p)
            {
                out.extend(d.all(&owner));
            }
            k = p;
        }
        out
    }

    /// Where `key` (a name at or below the apex) leads for a query of
    /// `qtype`.
    pub fn lookup(&self, key: &[u8], qtype: RecordType) -> Lookup<'_> {
        if let Some(node) = self.node(key) {
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
            if let Some(node) = self.node(encloser) {
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
            return Lookup::Dname {
                labels: name_key::labels(encloser),
                dname,
            };
        }
        if self.has_wildcards
            && let Some(w) = NameKey::wildcard_of(encloser)
            && let Some(node) = self.node(w.as_bytes())
        {
            return Lookup::Wildcard(node);
        }
        Lookup::NxDomain
    }

    /// The address RRsets that `set`, owned by the name with key `owner`,
    /// adds to a response: for each in-zone target of its NS, MX or SRV
    /// records (once per name), the target's A then AAAA RRset. Looked up
    /// as the answer is made, so that a change to a target's addresses is
    /// a change at that name alone.
    pub fn additional(&self, owner: &[u8], set: &RrSet) -> Vec<Additional<'_>> {
        let mut add = Vec::new();
        let Some(apex) = NameKey::new(&self.origin) else {
            return add;
        };
        let apex = apex.as_bytes();
        let mut seen: Vec<NameKey> = Vec::new();
        for (tk, target) in pointed_at(set) {
            let tk_bytes = tk.as_bytes();
            if !name_key::is_at_or_below(tk_bytes, apex)
                || seen.iter().any(|k| k.as_bytes() == tk_bytes)
            {
                continue;
            }
            let Some(node) = self.address_node(tk_bytes) else {
                seen.push(tk);
                continue;
            };
            let required = set.rtype == RecordType::NS
                && owner != apex
                && name_key::is_at_or_below(tk_bytes, owner);
            seen.push(tk);
            // Owned by the target as the pointing record writes it.
            let Ok(target) = Name::read(&mut BinDecoder::new(target)) else {
                continue;
            };
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = node.get(rtype) {
                    add.push(Additional {
                        owner: target.clone(),
                        set,
                        required,
                    });
                }
            }
        }
        add
    }

    /// The node that holds the addresses of the in-zone name with key
    /// `key`: the name's own node (glue below a zone cut included), else
    /// the wildcard at its closest encloser (RFC 4592 §3.3.1), unless that
    /// encloser is at or below a cut or owns a DNAME, where nothing is
    /// synthesized.
    fn address_node(&self, key: &[u8]) -> Option<&Node> {
        if let Some(node) = self.node(key) {
            return Some(node);
        }
        if !self.has_wildcards {
            return None;
        }
        let mut encloser = key;
        let node = loop {
            encloser = name_key::parent(encloser)?;
            if let Some(node) = self.node(encloser) {
                break node;
            }
        };
        if node.delegation.is_some() || node.get(RecordType::DNAME).is_some() {
            return None;
        }
        let wildcard = NameKey::wildcard_of(encloser)?;
        self.node(wildcard.as_bytes())
    }

    fn referral<'z>(&'z self, cut: &'z [u8]) -> Lookup<'z> {
        match self.node(cut).and_then(|n| n.get(RecordType::NS)) {
            Some(ns) => Lookup::Referral { cut, ns },
            None => Lookup::NxDomain,
        }
    }
}

/// The names of a zone being indexed, with the counts of their children.
struct Tree<'a> {
    nodes: Map<Node>,
    apex: &'a [u8],
    /// The names made empty non-terminals so far: the only names that can
    /// be in `nodes` before their records come (a name's records come
    /// together), so the only ones looked up before an insert.
    empty: Keys,
    /// Children counted for one parent and not yet added to its node: a
    /// run of names under one parent (a flat zone is one) costs one lookup
    /// of the parent, not one each.
    tally: (Vec<u8>, u32),
}

type Keys = std::collections::HashSet<Box<[u8]>, foldhash::fast::RandomState>;

impl Tree<'_> {
    /// Puts `rrsets` at the name with key `key`. A name new to the zone
    /// gets every ancestor up to the apex (an empty non-terminal where it
    /// has no records of its own, RFC 8020) and counts as a child of its
    /// parent.
    fn add(&mut self, key: &[u8], rrsets: Box<[RrSet]>) {
        if !self.empty.is_empty() && self.empty.remove(key) {
            if let Some(node) = self.nodes.get_mut(key) {
                node.rrsets = rrsets;
            }
            return;
        }
        self.nodes.insert(
            Box::from(key),
            Node {
                rrsets,
                ..Node::default()
            },
        );
        let mut k = key;
        while k.len() > self.apex.len()
            && let Some(p) = name_key::parent(k)
        {
            if self.tally.0 == p {
                self.tally.1 += 1;
                return;
            }
            self.settle();
            self.tally = (p.to_vec(), 1);
            if self.nodes.contains_key(p) {
                return;
            }
            self.nodes.insert(Box::from(p), Node::default());
            self.empty.insert(Box::from(p));
            k = p;
        }
    }

    /// Adds the children tallied to their parent's node.
    fn settle(&mut self) {
        let (parent, children) = std::mem::take(&mut self.tally);
        if children > 0
            && let Some(node) = self.nodes.get_mut(parent.as_slice())
        {
            node.children += children;
        }
    }

    fn finish(mut self) -> Map<Node> {
        self.settle();
        self.nodes
    }
}

/// The names the records of `set` point at, if it is an NS, MX or SRV set:
/// each one's key, and its wire form as the record writes it. Read from
/// the rdata where the name stands (after MX's preference, SRV's priority,
/// weight and port), uncompressed as stored, without decoding a record.
fn pointed_at(set: &RrSet) -> impl Iterator<Item = (NameKey, &[u8])> {
    let name_at = match set.rtype {
        RecordType::NS => Some(0),
        RecordType::MX => Some(2),
        RecordType::SRV => Some(6),
        _ => None,
    };
    name_at.into_iter().flat_map(move |at| {
        set.rdatas.iter().filter_map(move |rdata| {
            let wire = rdata.get(at..)?;
            Some((NameKey::from_wire(wire)?, wire))
        })
    })
}

/// The authority record of negative answers, from the apex node's SOA:
/// its TTL is min(SOA TTL, MINIMUM).
fn negative_soa(apex: &Node) -> Option<RrSet> {
    let soa = apex.get(RecordType::SOA)?;
    let first = soa.rdatas.iter().next()?;
    let minimum = match records::rdata(RecordType::SOA, first) {
        RData::SOA(data) => data.minimum,
        _ => soa.ttl,
    };
    Some(RrSet {
        rtype: RecordType::SOA,
        ttl: soa.ttl.min(minimum),
        rdatas: Rdatas::new(std::iter::once(first))?,
    })
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
    fn a_names_records_become_rrsets_by_type_keeping_the_order_of_each() {
        let txt = Record::from_rdata(
            Name::from_ascii("a.test.").unwrap(),
            60,
            RData::TXT(TXT::new(vec!["x".into()])),
        );
        let mut records = vec![a("a.test.", 2), txt, a("A.test.", 4), a("a.test.", 1)];
        let rrsets = rrsets_of(&mut records);
        assert_eq!(rrsets.len(), 2);
        assert_eq!(rrsets[0].rtype, RecordType::A);
        let order: Vec<&[u8]> = rrsets[0].rdatas.iter().collect();
        assert_eq!(
            order,
            [&[198, 18, 0, 2][..], &[198, 18, 0, 4], &[198, 18, 0, 1]]
        );
        assert_eq!(rrsets[1].rtype, RecordType::TXT);
    }
}

#[cfg(test)]
mod change_tests {
    //! A zone changed by name (`Zone::with_names`) answers exactly as the
    //! zone indexed whole from the same records.

    use super::*;
    use crate::zone::parse_records;

    const ZONE: &str = "$ORIGIN example.test.
@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 60
@ 300 IN NS ns1
@ 300 IN MX 10 mail
ns1 300 IN A 198.18.0.53
mail 300 IN A 198.18.0.25
www 60 IN A 198.18.0.1
a.b.c 60 IN TXT \"deep\"
*.wild 60 IN TXT \"covered\"
sub 300 IN NS ns.sub
ns.sub 300 IN A 198.18.0.54
";

    fn origin() -> Name {
        Name::from_ascii("example.test.").unwrap()
    }

    fn zone_of(text: &str) -> Zone {
        let mut records = zonefile::read(
            text.as_bytes(),
            std::path::Path::new("-"),
            &crate::zone::records::zone_name(&origin()),
            &mut zonefile::NoIncludes,
        )
        .unwrap()
        .records;
        crate::zone::checks::group(&mut records);
        Zone::build(origin(), records).unwrap()
    }

    /// How the zone answers each of `names` for each type: the kind of
    /// answer and its records.
    fn answers(zone: &Zone, names: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for n in names {
            let name = Name::from_ascii(n).unwrap();
            let key = NameKey::new(&name).unwrap();
            for qtype in [
                RecordType::A,
                RecordType::TXT,
                RecordType::MX,
                RecordType::NS,
            ] {
                let show = |s: &RrSet| {
                    let mut v: Vec<String> = s.all(&name).iter().map(|r| r.to_string()).collect();
                    v.extend(
                        zone.additional(key.as_bytes(), s)
                            .iter()
                            .flat_map(|a| a.set.all(&a.owner).into_iter().map(|r| format!("+{r}"))),
                    );
                    v.join(" | ")
                };
                let line = match zone.lookup(key.as_bytes(), qtype) {
                    Lookup::Node(node) => {
                        format!("node {}", node.get(qtype).map_or("nodata".into(), show))
                    }
                    Lookup::Referral { ns, .. } => format!("referral {}", show(ns)),
                    Lookup::Wildcard(node) => {
                        format!("wildcard {}", node.get(qtype).map_or("nodata".into(), show))
                    }
                    Lookup::Dname { dname, .. } => format!("dname {}", show(dname)),
                    Lookup::NxDomain => "nxdomain".into(),
                };
                out.push(format!("{n} {qtype}: {line}"));
            }
        }
        out.push(format!(
            "negative {:?}",
            zone.negative_soa.all(&zone.origin)
        ));
        out
    }

    const NAMES: &[&str] = &[
        "example.test.",
        "www.example.test.",
        "new.example.test.",
        "x.y.new.example.test.",
        "y.new.example.test.",
        "b.c.example.test.",
        "c.example.test.",
        "a.b.c.example.test.",
        "q.wild.example.test.",
        "mail.example.test.",
        "ns1.example.test.",
        "sub.example.test.",
        "x.sub.example.test.",
        "gone.example.test.",
    ];

    /// Applies `edits` (name, records as zone text) one by one by name, and
    /// checks each step against the whole zone built from the same text.
    fn check(edits: &[(&str, &str)]) -> Option<()> {
        let mut text: Vec<String> = ZONE.lines().map(str::to_string).collect();
        let mut zone = zone_of(ZONE);
        for (owner, records) in edits {
            let name = Name::from_ascii(owner).unwrap();
            let short = owner
                .trim_end_matches("example.test.")
                .trim_end_matches('.');
            let short = if short.is_empty() { "@" } else { short };
            text.retain(|l| l.split_whitespace().next() != Some(short));
            let mut added = Vec::new();
            for r in records.lines().filter(|l| !l.is_empty()) {
                text.push(format!("{short} {r}"));
                added.push(format!("{short} {r}"));
            }
            let recs = parse_records(
                &format!("$ORIGIN example.test.\n{}\n", added.join("\n")),
                &origin(),
            )
            .unwrap();
            zone = zone.with_names(vec![(name, recs)])?;
            let whole = zone_of(&text.join("\n"));
            assert_eq!(
                answers(&zone, NAMES),
                answers(&whole, NAMES),
                "after {owner}"
            );
        }
        Some(())
    }

    #[test]
    fn a_change_by_name_answers_as_the_zone_indexed_whole() {
        check(&[
            ("www.example.test.", "60 IN A 198.18.0.2\n60 IN A 198.18.0.3"),
            ("x.y.new.example.test.", "60 IN TXT \"new\""),
            ("new.example.test.", "60 IN A 198.18.0.9"),
            ("x.y.new.example.test.", ""),
            ("new.example.test.", ""),
            ("a.b.c.example.test.", ""),
            ("www.example.test.", ""),
            ("example.test.", "300 IN SOA ns1 hostmaster 2 3600 600 86400 30\n300 IN NS ns1\n300 IN MX 10 mail\n300 IN TXT \"apex\""),
            ("c.example.test.", "60 IN A 198.18.0.7"),
            ("x.sub.example.test.", "60 IN A 198.18.0.8"),
            ("q.wild.example.test.", "60 IN TXT \"own\""),
        ])
        .expect("each change is local");
    }

    #[test]
    fn a_change_that_reaches_other_names_asks_for_a_whole_index() {
        // A delegation made or removed: every name below it changes.
        assert!(check(&[("www.example.test.", "60 IN NS ns1.example.test.")]).is_none());
        assert!(check(&[("sub.example.test.", "")]).is_none());
        // A target's addresses, a wildcard's, and the target's other
        // records are the name's own: other names' additional data is
        // looked up as they are answered.
        check(&[("mail.example.test.", "300 IN A 198.18.0.26")]).unwrap();
        check(&[(
            "mail.example.test.",
            "300 IN A 198.18.0.25\n300 IN TXT \"mx\"",
        )])
        .unwrap();
        check(&[("*.wild.example.test.", "60 IN A 198.18.0.99")]).unwrap();
    }

    /// Replaces, in one change, the records at each owner with its records
    /// (zone-file lines relative to the zone).
    fn changed(zone: &Zone, edits: &[(&str, &str)]) -> Zone {
        let names = edits
            .iter()
            .map(|(owner, records)| {
                let recs = parse_records(&format!("$ORIGIN example.test.\n{records}\n"), &origin())
                    .unwrap();
                (Name::from_ascii(owner).unwrap(), recs)
            })
            .collect();
        zone.with_names(names).unwrap()
    }

    fn lines(records: &[zonefile::Record]) -> Vec<String> {
        let mut lines: Vec<String> = records.iter().map(zonefile::write_record).collect();
        lines.sort();
        lines
    }

    #[test]
    fn changes_by_name_are_kept_as_steps_an_ixfr_condenses() {
        let apex = "example.test.";
        let soa = |serial: u32| {
            format!(
                "@ 300 IN SOA ns1 hostmaster {serial} 3600 600 86400 60\n@ 300 IN NS ns1\n@ 300 IN MX 10 mail"
            )
        };
        // 1 -> 2: www's address (owners kept lower case).
        let zone = changed(
            &zone_of(ZONE),
            &[
                ("WWW.example.test.", "www 60 IN A 198.18.0.2"),
                (apex, &soa(2)),
            ],
        );
        let (removed, added) = zone.served_since(1).unwrap();
        assert_eq!(lines(&removed), ["www.example.test. 60 IN A 198.18.0.1"]);
        assert_eq!(lines(&added), ["www.example.test. 60 IN A 198.18.0.2"]);
        // 2 -> 3: back, and a new name: from 1, only the new name.
        let zone = changed(
            &zone,
            &[
                ("www.example.test.", "www 60 IN A 198.18.0.1"),
                ("new.example.test.", "new 60 IN TXT \"n\""),
                (apex, &soa(3)),
            ],
        );
        let (removed, added) = zone.served_since(1).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(lines(&added), ["new.example.test. 60 IN TXT \"n\""]);
        let (removed, _) = zone.served_since(2).unwrap();
        assert_eq!(lines(&removed), ["www.example.test. 60 IN A 198.18.0.2"]);
        // A serial it never had; one from before the zone was read; a
        // change that keeps the serial breaks the chain.
        assert!(zone.served_since(7).is_none());
        assert!(zone_of(ZONE).served_since(1).is_none());
        let kept = changed(&zone, &[("www.example.test.", "www 60 IN A 198.18.0.5")]);
        assert!(kept.served_since(1).is_none());
    }

    #[test]
    fn a_reload_that_changes_the_serial_is_a_step_and_one_that_does_not_keeps_them() {
        let before = changed(
            &zone_of(ZONE),
            &[
                ("www.example.test.", "www 60 IN A 198.18.0.2"),
                (
                    "example.test.",
                    "@ 300 IN SOA ns1 hostmaster 2 3600 600 86400 60\n@ 300 IN NS ns1\n@ 300 IN MX 10 mail",
                ),
            ],
        );
        // The file edited by hand to serial 3: www moved on, a name gone.
        let edited = ZONE
            .replace(" 1 3600 ", " 3 3600 ")
            .replace("www 60 IN A 198.18.0.1", "www 60 IN A 198.18.0.3")
            .replace("a.b.c 60 IN TXT \"deep\"\n", "");
        let mut after = zone_of(&edited);
        after.follow(&before);
        let (removed, added) = after.served_since(1).unwrap();
        assert_eq!(
            lines(&removed),
            [
                "a.b.c.example.test. 60 IN TXT \"deep\"",
                "www.example.test. 60 IN A 198.18.0.1"
            ]
        );
        assert_eq!(lines(&added), ["www.example.test. 60 IN A 198.18.0.3"]);
        assert_eq!(lines(&after.served_since(2).unwrap().1), lines(&added));
        // The same serial: the steps as they were.
        let mut again = zone_of(&edited);
        again.follow(&after);
        assert_eq!(again.steps.len(), 2);
    }

    #[test]
    fn the_zone_before_a_change_is_untouched() {
        let before = zone_of(ZONE);
        let snapshot = answers(&before, NAMES);
        let name = Name::from_ascii("www.example.test.").unwrap();
        let after = before.with_names(vec![(name, Vec::new())]).unwrap();
        assert_eq!(answers(&before, NAMES), snapshot);
        assert_ne!(answers(&after, NAMES), snapshot);
        assert!(
            Arc::ptr_eq(&before.nodes, &after.nodes),
            "the index is shared, not copied"
        );
    }
}
