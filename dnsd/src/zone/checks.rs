//! A zone's records as the loader hands them on — grouped by owner, each
//! record once — and the checks NSD and Knot make of them before serving:
//! every record inside the zone and of class IN, one SOA and some NS at
//! the apex, and (a warning) one TTL per RRset. The rules on what may share
//! a name are `name_rules`'.
//!
//! Everything here works on the records' wire form and their owners' keys
//! (`name_key`), one pass over a sort: a million-record zone is checked in
//! a fraction of the time it takes to read it.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use hickory_proto::rr::{DNSClass, RecordType};
use zonefile::ZoneRecord;

use crate::zone::name_key::{self, Keys};

/// A problem of a record (its index in the grouped records), or of the
/// zone as a whole (`None`).
pub type Problem = (Option<usize>, String);

/// Groups `records` by owner (in the order of `Keys::grouped`), the
/// records of a name in the order read, and drops each record that repeats
/// one before it: the same record twice is one record (RFC 2181 §5), as
/// NSD and Knot load it; names compare without case, in rdata too (`CNAME
/// www` and `CNAME WWW` are one record). Returns the owners' keys, in the
/// new order.
pub fn group(records: &mut Vec<ZoneRecord>) -> Keys {
    // A key is its name's wire form without the root label.
    let bytes = records
        .iter()
        .map(|zr| zr.record.owner.wire().len() - 1)
        .sum();
    let mut keys = Keys::with_capacity(records.len(), bytes);
    for zr in records.iter() {
        keys.push_wire(zr.record.owner.wire());
    }
    let mut order = keys.grouped();
    let mut repeat = vec![false; records.len()];
    for name in groups(&order, |i| keys.get(i as usize)) {
        mark_repeats(records, name, &mut repeat);
    }
    // Position i takes the record at order[i], by swapping along the
    // permutation's cycles (no second copy of the records); a done
    // position is marked u32::MAX.
    let mut grouped = Keys::with_capacity(records.len(), keys.byte_len());
    for &i in &order {
        if !repeat[i as usize] {
            grouped.push(keys.get(i as usize));
        }
    }
    drop(keys);
    for start in 0..order.len() {
        let mut at = start;
        while order[at] != u32::MAX {
            let from = order[at] as usize;
            order[at] = u32::MAX;
            if from == start {
                break;
            }
            records.swap(at, from);
            repeat.swap(at, from);
            at = from;
        }
    }
    let mut kept = repeat.iter().map(|r| !r);
    records.retain(|_| kept.next().unwrap_or(true));
    grouped
}

/// The runs of `order` whose items have one key.
fn groups<'o, K: PartialEq + 'o>(
    order: &'o [u32],
    key: impl Fn(u32) -> K + 'o,
) -> impl Iterator<Item = &'o [u32]> + 'o {
    order.chunk_by(move |&a, &b| key(a) == key(b))
}

/// Marks in `repeat` each record of `name` (indexes of one owner's records,
/// in the order read) that repeats an earlier one.
fn mark_repeats(records: &[ZoneRecord], name: &[u32], repeat: &mut [bool]) {
    if name.len() <= 16 {
        for (n, &i) in name.iter().enumerate() {
            let r = Written(&records[i as usize].record);
            if name[..n]
                .iter()
                .any(|&j| Written(&records[j as usize].record) == r)
            {
                repeat[i as usize] = true;
            }
        }
        return;
    }
    let mut seen = HashSet::with_capacity(name.len());
    for &i in name {
        if !seen.insert(Written(&records[i as usize].record)) {
            repeat[i as usize] = true;
        }
    }
}

/// A record as written, compared as served: its type, and its rdata with
/// the case of the name dnsd reads in it folded (a wire-form name's length
/// octets are all below `A`, so folding the name's octets folds only its
/// letters; see [`folded_rdata`]); other rdata compares as octets. Owners
/// are compared by the caller.
struct Written<'z>(&'z zonefile::Record);

impl Written<'_> {
    fn rdata(&self) -> impl Iterator<Item = u8> + '_ {
        folded_rdata(self.0)
    }
}

/// The rdata of `r` as records compare: with the case of the name dnsd
/// reads in it folded.
pub fn folded_rdata(r: &zonefile::Record) -> impl Iterator<Item = u8> + '_ {
    let name_at = match RecordType::from(r.rtype) {
        RecordType::NS | RecordType::CNAME | RecordType::PTR | RecordType::DNAME => 0,
        // After the preference; after priority, weight and port.
        RecordType::MX => 2,
        RecordType::SRV => 6,
        _ => usize::MAX,
    };
    r.rdata.iter().enumerate().map(move |(i, &b)| {
        if i >= name_at {
            b.to_ascii_lowercase()
        } else {
            b
        }
    })
}

impl PartialEq for Written<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.rtype == other.0.rtype
            && self.0.rdata.len() == other.0.rdata.len()
            && self.rdata().eq(other.rdata())
    }
}

impl Eq for Written<'_> {}

impl Hash for Written<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.rtype.hash(state);
        state.write_usize(self.0.rdata.len());
        for b in self.rdata() {
            state.write_u8(b);
        }
    }
}

/// The runs of grouped `records` (see [`group`]) that share an owner, as
/// index ranges.
pub fn names(keys: &Keys) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= keys.len() {
            return None;
        }
        let key = keys.get(start);
        let end = (start + 1..keys.len())
            .find(|&i| keys.get(i) != key)
            .unwrap_or(keys.len());
        let run = start..end;
        start = end;
        Some(run)
    })
}

/// Checks the grouped `records` of the zone whose apex is `origin` (its
/// key `apex`): each inside the zone and of class IN, an SOA only at the
/// apex, exactly one there, and NS records there.
pub fn check_zone(
    origin: &zonefile::Name,
    apex: &[u8],
    records: &[ZoneRecord],
    keys: &Keys,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let (mut soa, mut ns) = (Vec::new(), false);
    for (i, zr) in records.iter().enumerate() {
        let (r, key) = (&zr.record, keys.get(i));
        let name = &r.owner;
        if !name_key::is_at_or_below(key, apex) {
            problems.push((
                Some(i),
                format!("{name} is outside the zone {origin} (a missing trailing dot?)"),
            ));
            continue;
        }
        if r.class != u16::from(DNSClass::IN) {
            problems.push((
                Some(i),
                format!(
                    "{name}: class {} is not served, only IN",
                    DNSClass::from(r.class)
                ),
            ));
        }
        let rtype = RecordType::from(r.rtype);
        if rtype == RecordType::SOA {
            if key == apex {
                soa.push(i);
            } else {
                problems.push((
                    Some(i),
                    format!("{name}: an SOA record belongs only at the zone apex {origin}"),
                ));
            }
        }
        ns |= rtype == RecordType::NS && key == apex;
    }
    match soa[..] {
        [] => problems.push((
            None,
            format!("the zone has no SOA record at its apex {origin}"),
        )),
        [_] => {}
        [_, second, ..] => problems.push((
            Some(second),
            format!("{origin}: a second SOA record; a zone has exactly one"),
        )),
    }
    if !ns {
        problems.push((
            None,
            format!("the zone has no NS records at its apex {origin}"),
        ));
    }
    problems
}

/// RRsets whose records carry different TTLs: each is served with the
/// lowest (RFC 2181 §5.2), reported at its first record (in the order
/// read) with a TTL other than its first's.
pub fn ttl_warnings(records: &[ZoneRecord], keys: &Keys) -> Vec<(usize, String)> {
    let mut warnings = Vec::new();
    let mut types: Vec<u16> = Vec::new();
    for name in names(keys) {
        if name.len() == 1 {
            continue;
        }
        let at = &records[name.clone()];
        types.clear();
        types.extend(at.iter().map(|zr| zr.record.rtype));
        types.sort_unstable();
        types.dedup();
        for &rtype in &types {
            let mut set = at
                .iter()
                .enumerate()
                .filter(|(_, zr)| zr.record.rtype == rtype);
            let Some((_, first)) = set.next() else {
                continue;
            };
            let first_ttl = first.record.ttl;
            let set: Vec<(usize, &ZoneRecord)> = set.collect();
            let Some((i, other)) = set.iter().find(|(_, zr)| zr.record.ttl != first_ttl) else {
                continue;
            };
            let lowest = set
                .iter()
                .map(|(_, zr)| zr.record.ttl)
                .fold(first_ttl, u32::min);
            warnings.push((
                name.start + i,
                format!(
                    "{} {}: the records of one RRset carry different TTLs ({first_ttl} and {}); \
                     all are served with the lowest, {lowest} (RFC 2181 §5.2)",
                    other.record.owner,
                    RecordType::from(rtype),
                    other.record.ttl
                ),
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<ZoneRecord> {
        zonefile::read(
            text.as_bytes(),
            std::path::Path::new("-"),
            &zonefile::Name::parse(b"test.", &zonefile::Name::root()).unwrap(),
            &mut zonefile::NoIncludes,
        )
        .unwrap()
        .records
    }

    #[test]
    fn records_group_by_owner_without_case_in_the_order_read_each_once() {
        let mut records = read(
            "b 60 IN A 198.18.0.1\na 60 IN TXT x\nA 60 IN A 198.18.0.2\nb 60 IN A 198.18.0.3\n\
             a 60 IN A 198.18.0.4\nB 60 IN A 198.18.0.5\nb 30 IN A 198.18.0.1\n\
             c 60 IN CNAME Www\nc 60 IN CNAME www\n",
        );
        let keys = group(&mut records);
        assert_eq!(keys.len(), records.len());
        let names: Vec<Vec<String>> = names(&keys)
            .map(|run| {
                records[run]
                    .iter()
                    .map(|zr| zonefile::write_record(&zr.record))
                    .collect()
            })
            .collect();
        let of = |first: &str| {
            names
                .iter()
                .find(|n| n[0].starts_with(first))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(
            of("a.test."),
            [
                "a.test. 60 IN TXT \"x\"",
                "A.test. 60 IN A 198.18.0.2",
                "a.test. 60 IN A 198.18.0.4"
            ]
        );
        assert_eq!(
            of("b.test."),
            [
                "b.test. 60 IN A 198.18.0.1",
                "b.test. 60 IN A 198.18.0.3",
                "B.test. 60 IN A 198.18.0.5"
            ]
        );
        assert_eq!(of("c.test."), ["c.test. 60 IN CNAME Www.test."]);
    }

    #[test]
    fn many_records_at_one_name_lose_their_repeats_too() {
        let mut text = String::new();
        for round in 0..2 {
            for i in 0..40 {
                text.push_str(&format!("big {} IN A 198.18.1.{i}\n", 60 + round));
            }
        }
        let mut records = read(&text);
        group(&mut records);
        assert_eq!(records.len(), 40);
        assert!(records.iter().all(|zr| zr.record.ttl == 60));
    }

    #[test]
    fn mixed_ttls_warn_once_per_rrset_at_the_first_that_differs() {
        let mut records = read(
            "a 60 IN A 198.18.0.1\nb 60 IN A 198.18.0.9\na 30 IN A 198.18.0.2\na 20 IN A 198.18.0.3\n",
        );
        let keys = group(&mut records);
        let warnings = ttl_warnings(&records, &keys);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(records[warnings[0].0].line, 3);
        assert!(warnings[0].1.contains("(60 and 30)"), "{warnings:?}");
        assert!(warnings[0].1.contains("the lowest, 20"), "{warnings:?}");
    }
}
