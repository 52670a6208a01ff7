//! A zone's journal read into its records: the changesets the workspace
//! keeps (`cutover_workspace::Journal`) replayed onto the records of the
//! zone file they follow, and what a changeset is made of (`lines`).
//!
//! A changeset removes records by what they are — owner and rdata without
//! case where names compare so, type; not TTL (as an IXFR deletion
//! matches, RFC 1995) — and adds records whole. Replaying changesets is
//! "the last changeset to touch a record decides whether it is there", so
//! replaying them onto a file that already holds some of them (a crash
//! between rewriting a zone file and anything after it) gives the same
//! zone.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cutover_workspace::{ConfigError, Workspace};

use super::checks;

/// Where the changesets of a zone being read come from: the journals of
/// the live workspace `live`, up to generation `upto` (`None`: all), for
/// the workspace being read is the live one, a staged commit of it, or a
/// generation's copy.
#[derive(Debug, Clone)]
pub struct JournalView {
    pub live: Workspace,
    pub upto: Option<u64>,
}

impl JournalView {
    /// Every changeset of `live`'s journals.
    pub fn all(live: Workspace) -> Self {
        Self { live, upto: None }
    }
}

/// What replaying a zone's journal did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The generation the zone file was written at (its sync header), if
    /// dnsd wrote it; `None` for a file written by hand, which is the zone
    /// whole.
    pub synced: Option<u64>,
    /// The newest generation applied: the zone's state is at least this.
    pub at: Option<u64>,
}

/// Applies to `zone` (read from a file whose sync header says `synced`)
/// the changesets of its journal after `synced`, as `view` allows.
pub fn replay(
    zone: &mut zonefile::Zone,
    origin: &zonefile::Name,
    origin_text: &str,
    synced: Option<u64>,
    view: &JournalView,
) -> Result<Replayed, Vec<ConfigError>> {
    let Some(from) = synced else {
        return Ok(Replayed::default());
    };
    let journal = view.live.journal(origin_text);
    let changes = journal
        .between(from, view.upto)
        .map_err(|e| vec![ConfigError::file(journal.path(), e.to_string())])?;
    let at = changes.last().map_or(from, |c| c.generation);
    if changes.is_empty() {
        return Ok(Replayed {
            synced,
            at: Some(at),
        });
    }
    // The last word on each record: Some(added), None (removed). The SOA
    // is kept apart: a zone has one, and the one a changeset removes may
    // carry a serial its file never held (raised by a service, see
    // `zone::raise_serial`), so the last one added replaces whatever the
    // file has.
    let mut last: HashMap<Key, Option<(zonefile::Record, u64)>> = HashMap::new();
    let mut soa: Option<(zonefile::Record, u64)> = None;
    let mut errors = Vec::new();
    for c in &changes {
        let parse = |line: &String, errors: &mut Vec<ConfigError>| {
            parse_line(line, origin).map_err(|why| {
                let mut e = ConfigError::file(
                    journal.path(),
                    format!("generation {}: {line:?}: {why}", c.generation),
                );
                e.line = None;
                errors.push(e);
            })
        };
        for line in &c.removed {
            if let Ok(r) = parse(line, &mut errors)
                && r.rtype != zonefile::codes::SOA
            {
                last.insert(Key::of(&r), None);
            }
        }
        for line in &c.added {
            match parse(line, &mut errors) {
                Ok(r) if r.rtype == zonefile::codes::SOA => soa = Some((r, c.generation)),
                Ok(r) => {
                    last.insert(Key::of(&r), Some((r, c.generation)));
                }
                Err(()) => {}
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Every record of the zone is looked at, the few the changesets touch
    // compared whole: an owner is lower-cased on the stack, not allocated.
    let owners: HashSet<Vec<u8>> = last.keys().map(|k| k.owner.clone()).collect();
    let mut lower = [0u8; 255];
    zone.records.retain(|zr| {
        let wire = zr.record.owner.wire();
        let Some(owner) = lower.get_mut(..wire.len()) else {
            return true;
        };
        for (l, b) in owner.iter_mut().zip(wire) {
            *l = b.to_ascii_lowercase();
        }
        let replaced_soa = soa.is_some() && zr.record.rtype == zonefile::codes::SOA;
        !(replaced_soa || (owners.contains(&*owner) && last.contains_key(&Key::of(&zr.record))))
    });
    let file = zone.files.len();
    zone.files.push(journal.path().to_path_buf());
    let mut added: Vec<(zonefile::Record, u64)> = last.into_values().flatten().collect();
    added.extend(soa);
    // In the order they were added, for a stable file order.
    added.sort_by_key(|(_, g)| *g);
    zone.records
        .extend(added.into_iter().map(|(record, g)| zonefile::ZoneRecord {
            record,
            file,
            line: usize::try_from(g).unwrap_or(usize::MAX),
        }));
    Ok(Replayed {
        synced,
        at: Some(at),
    })
}

/// How a zone differs between two serials, condensed (RFC 1995 §5): what
/// an IXFR sends.
#[derive(Debug)]
pub struct Difference {
    /// The SOA the asker holds, the first one it is told to delete.
    pub from_soa: zonefile::Record,
    /// Records removed since, and added since (a record removed and added
    /// back is in neither; one whose TTL changed is in both), the SOA in
    /// neither.
    pub removed: Vec<zonefile::Record>,
    pub added: Vec<zonefile::Record>,
}

/// The difference between zone `origin` at serial `from` and at serial
/// `to`, which it has at generation `upto`, from the changesets of its
/// journal in `live`; `None` unless they lead, unbroken, from one to the
/// other (a hand edit or a rollback in between, or a compacted journal,
/// leave a gap: the asker then gets the whole zone).
pub fn difference(
    live: &Workspace,
    origin_text: &str,
    origin: &zonefile::Name,
    from: u32,
    to: u32,
    upto: u64,
) -> Option<Difference> {
    let entries = live.journal(origin_text).read().ok()?;
    // Each changeset as (serial before, serial after, removed, added).
    let mut chain = Vec::new();
    for c in entries.changes.iter().filter(|c| c.generation <= upto) {
        let parse = |lines: &[String]| -> Option<Vec<zonefile::Record>> {
            lines.iter().map(|l| parse_line(l, origin).ok()).collect()
        };
        let (removed, added) = (parse(&c.removed)?, parse(&c.added)?);
        let before = removed.iter().find_map(zonefile::Record::soa_serial);
        let after = added.iter().find_map(zonefile::Record::soa_serial);
        chain.push((before, after, removed, added));
    }
    let start = chain
        .iter()
        .position(|(before, ..)| *before == Some(from))?;
    let chain = &chain[start..];
    let linked = chain
        .windows(2)
        .all(|w| w[0].1.is_some() && w[0].1 == w[1].0);
    if !linked || chain.last()?.1 != Some(to) {
        return None;
    }
    let from_soa = chain[0]
        .2
        .iter()
        .find(|r| r.soa_serial() == Some(from))?
        .clone();
    let (removed, added) = condense(
        chain
            .iter()
            .map(|(_, _, removed, added)| (&removed[..], &added[..])),
    );
    Some(Difference {
        from_soa,
        removed,
        added,
    })
}

/// The records a chain of changes removed and added, each step's
/// (removed, added) in order, condensed into one (RFC 1995 §5): a record
/// added and removed again is in neither, one removed and added back as
/// it was in neither, one whose TTL changed in both. SOA records are left
/// out (the caller knows the serials).
pub fn condense<'r>(
    steps: impl IntoIterator<Item = (&'r [zonefile::Record], &'r [zonefile::Record])>,
) -> (Vec<zonefile::Record>, Vec<zonefile::Record>) {
    // The last word on each record: removed, added, or both (its TTL).
    let mut net: HashMap<Key, (Option<zonefile::Record>, Option<zonefile::Record>)> =
        HashMap::new();
    let mut order: Vec<Key> = Vec::new();
    for (removed, added) in steps {
        for r in removed.iter().filter(|r| r.soa_serial().is_none()) {
            let key = Key::of(r);
            match net.get_mut(&key) {
                // Added since `from`, removed again: nothing happened.
                Some((None, Some(_))) => {
                    net.remove(&key);
                }
                Some((_, new)) => *new = None,
                None => {
                    order.push(key.clone());
                    net.insert(key, (Some(r.clone()), None));
                }
            }
        }
        for a in added.iter().filter(|a| a.soa_serial().is_none()) {
            let key = Key::of(a);
            match net.get_mut(&key) {
                // Removed since `from`, back as it was: nothing happened.
                Some((Some(old), None)) if old.ttl == a.ttl => {
                    net.remove(&key);
                }
                Some((_, new)) => *new = Some(a.clone()),
                None => {
                    order.push(key.clone());
                    net.insert(key, (None, Some(a.clone())));
                }
            }
        }
    }
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for key in &order {
        if let Some((old, new)) = net.remove(key) {
            removed.extend(old);
            added.extend(new);
        }
    }
    (removed, added)
}

/// One changeset line (a record with an absolute owner) as a record.
fn parse_line(line: &str, origin: &zonefile::Name) -> Result<zonefile::Record, String> {
    let zone = zonefile::read(
        line.as_bytes(),
        Path::new("journal"),
        origin,
        &mut zonefile::NoIncludes,
    )
    .map_err(|errors| {
        errors
            .into_iter()
            .map(|e| e.message)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    match <[zonefile::ZoneRecord; 1]>::try_from(zone.records) {
        Ok([one]) => Ok(one.record),
        Err(_) => Err("not one record".into()),
    }
}

/// A record's identity in a changeset: as the loader tells repeated
/// records apart (`checks::group`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    rtype: u16,
    owner: Vec<u8>,
    rdata: Vec<u8>,
}

impl Key {
    fn of(r: &zonefile::Record) -> Self {
        Self {
            rtype: r.rtype,
            owner: r.owner.wire().to_ascii_lowercase(),
            rdata: checks::folded_rdata(r).collect(),
        }
    }
}

/// The generation's changeset of a zone going from the records `before`
/// to `after` (zone-file lines, as `zone_edit::lines` gives them): the
/// lines only before, and the lines only after.
pub fn diff(before: &[String], after: &[String]) -> (Vec<String>, Vec<String>) {
    let b: HashSet<&String> = before.iter().collect();
    let a: HashSet<&String> = after.iter().collect();
    (
        before.iter().filter(|l| !a.contains(l)).cloned().collect(),
        after.iter().filter(|l| !b.contains(l)).cloned().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_changeset_to_touch_a_record_decides() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let origin = zonefile::Name::parse(b"example.test.", &zonefile::Name::root()).unwrap();
        let text = "$ORIGIN example.test.\n@ 60 IN SOA ns1 h 1 1 1 1 1\nwww 60 IN A 198.18.0.1\nWWW 60 IN A 198.18.0.2\nmx 60 IN MX 10 MAIL\n";
        let read = || {
            zonefile::read(
                text.as_bytes(),
                Path::new("z"),
                &origin,
                &mut zonefile::NoIncludes,
            )
            .unwrap()
        };
        let line = |s: &str| s.to_string();
        ws.append_change(
            "example.test.",
            "1",
            vec![
                line("www.example.test. 60 IN A 198.18.0.1"),
                line("mx.example.test. 60 IN MX 10 mail.example.test."),
            ],
            vec![line("www.example.test. 30 IN A 198.18.0.3")],
        )
        .unwrap();
        let second = ws
            .append_change(
                "example.test.",
                "2",
                vec![line("www.example.test. 30 IN A 198.18.0.3")],
                vec![line("www.example.test. 30 IN A 198.18.0.1")],
            )
            .unwrap();
        let view = JournalView::all(ws.clone());
        let show = |z: &zonefile::Zone| {
            let mut v: Vec<String> = z
                .records
                .iter()
                .map(|r| zonefile::write_record(&r.record))
                .collect();
            v.sort();
            v
        };
        // Twice: replaying onto a zone that already has them changes nothing.
        for _ in 0..2 {
            let mut zone = read();
            let done = replay(&mut zone, &origin, "example.test.", Some(0), &view).unwrap();
            assert_eq!(done.at, Some(second.number));
            let got = show(&zone);
            assert!(
                got.iter()
                    .any(|l| l.starts_with("www.example.test. 30 IN A 198.18.0.1")),
                "{got:?}"
            );
            assert!(
                got.iter()
                    .any(|l| l.starts_with("WWW.example.test. 60 IN A 198.18.0.2")),
                "{got:?}"
            );
            assert!(
                !got.iter()
                    .any(|l| l.contains("MX") || l.contains("198.18.0.3")),
                "{got:?}"
            );
        }
        // A hand-written file is the zone whole; a bound stops the replay.
        let mut zone = read();
        assert_eq!(
            replay(&mut zone, &origin, "example.test.", None, &view).unwrap(),
            Replayed::default()
        );
        assert_eq!(zone.records.len(), 4);
        let first_only = JournalView {
            live: ws,
            upto: Some(second.number - 1),
        };
        let mut zone = read();
        replay(&mut zone, &origin, "example.test.", Some(0), &first_only).unwrap();
        assert!(show(&zone).iter().any(|l| l.contains("198.18.0.3")));
    }

    #[test]
    fn a_diff_is_the_lines_on_each_side_only() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (removed, added) = diff(&l(&["a", "b", "c"]), &l(&["b", "c", "d"]));
        assert_eq!((removed, added), (l(&["a"]), l(&["d"])));
    }
}
