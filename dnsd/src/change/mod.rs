//! Changes to the workspace: the control API (`api`), RFC 2136 dynamic
//! updates (`update_handler` around the pure rules of `update`, signed
//! with `tsig`), zone files written (`zone_edit`), and here the one way a
//! zone's data changes: a transaction that the API's `PUT .../rrsets` and
//! updates both run, each supplying only the names it touches and its
//! edit. Holding the change lock, it takes one of two paths.
//!
//! **Through the journal**, the usual one, costs what the change changes:
//! when the zone is served from a file dnsd wrote (a valid sync header)
//! that nobody has written since it was read,
//!
//! 1. the records at the touched names (and the apex) are taken from the
//!    served snapshot, the file's being those without the services;
//! 2. the edit checks what it needs and changes them, or refuses;
//! 3. a change that changes nothing ends here (no generation);
//! 4. the SOA serial is raised unless the edit set the SOA itself;
//! 5. the zone's rules are checked at those names (what may share a name,
//!    the apex's SOA and NS, no name below a DNAME above them);
//! 6. the removed and added records are appended to the zone's journal as
//!    one generation, durable before anything answers from it.
//!
//! **Through the whole file** otherwise, and for what the names alone
//! cannot check (a DNAME added, which may have names below it; a
//! delegation added, which may hide a service): the live workspace is
//! loaded, the edit runs on the whole zone, the file is rendered (with a
//! sync header, so the next change takes the journal) and committed as one
//! generation whose validator loads the whole staged workspace.
//!
//! The caller then serves it (`Reloader::reload`) and turns a
//! [`ChangeError`] into its protocol's answer: an HTTP status, an rcode.

pub mod api;
pub mod keys;
pub mod replay;
pub mod service;
pub mod sync;
pub mod tsig;
pub mod update;
pub mod update_handler;
pub mod zone_edit;

use std::path::Path;

use cutover_workspace::{
    ConfigError, ConfigErrors, DNSD_FILE, Generation, HistoryError, Service, Workspace,
};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::snapshot::Snapshot;
use crate::zone;
use crate::zone::journal::{self as zone_journal, JournalView};
use crate::zone::name_key::{self, NameKey};
use cutover_workspace::Stamps;

/// What an edit sees of the zone it changes.
pub struct Zone<'a> {
    pub origin: &'a Name,
    /// The records served at the names the change touches and at the apex
    /// (the whole zone on the whole-file path): the file's with the
    /// services applied.
    pub served: &'a [Record],
    /// Origins of other zones of the workspace inside this one.
    pub children: &'a [Name],
    /// The `[[service]]` entries of `dnsd.toml`.
    pub services: &'a [Service],
    /// The zone file's records at those names, for the edit to change.
    pub file: Vec<Record>,
}

/// What an edit did.
pub struct Edited {
    /// Why, for the generation's message ("set www A to 2 record(s)").
    pub message: String,
    /// The edit set the SOA (its serial) itself: leave it as it is.
    pub soa_set: bool,
}

/// Why a change was not made. Nothing was written in any case.
#[derive(Debug)]
pub enum ChangeError<E> {
    /// No zone of the workspace has this origin.
    NoSuchZone(String),
    /// The live workspace, or the zone's own file, does not load: the
    /// change cannot be computed from it.
    LiveBroken(String),
    /// The edit refused the change, for its own reason.
    Refused(E),
    /// The commit refused it (it would break a zone: `Invalid`, naming file
    /// and line; another writer holds the workspace: `Busy`) or failed.
    Commit(HistoryError),
    /// Reading the workspace or rendering the zone failed.
    Failed(String),
}

/// A change that went through, or `None` when it changed nothing (RFC
/// 2136 §3.4.2: a no-op succeeds, and makes no generation).
pub type Changed = Option<Change>;

/// What a change recorded, for the caller to serve it.
#[derive(Debug)]
pub struct Change {
    pub generation: Generation,
    pub serve: Serve,
}

/// How a change is served (`Reloader::serve_change`).
#[derive(Debug, Default)]
pub struct Serve {
    /// On the journal's path, the records served at each name it touched
    /// once it is served (services applied; none where a name has none
    /// left): the snapshot is updated at those names only. `None` on the
    /// whole file's path: a reload serves it.
    pub names: Option<Vec<(Name, Vec<Record>)>>,
    /// The zone's file, written by hand, was taken into the journal's
    /// keeping first: how it stands now, and the generation its header
    /// names.
    pub adopted: Option<(Stamps, u64)>,
}

/// Runs `edit` on zone `origin` and records the result, as the module doc
/// says: `names` are the names the edit may look at or change, `serving`
/// what is served now, `author` heads a rewritten file ("dnsd's control
/// API"). The edit may run twice (the journal's path may hand over to the
/// whole file's). Blocking I/O: run it off the async workers, with the
/// change lock held.
pub fn zone<E>(
    ws: &Workspace,
    serving: &Snapshot,
    origin: &str,
    names: &[Name],
    author: &str,
    edit: impl Fn(&mut Zone<'_>) -> Result<Edited, E>,
) -> Result<Changed, ChangeError<E>> {
    match through_journal(ws, serving, origin, names, &edit)? {
        Journaled::Done(changed) => Ok(changed),
        Journaled::NotHere => through_file(ws, origin, author, &edit),
    }
}

enum Journaled {
    Done(Changed),
    /// The journal's path cannot make or check this change.
    NotHere,
}

fn through_journal<E>(
    ws: &Workspace,
    serving: &Snapshot,
    origin: &str,
    names: &[Name],
    edit: &impl Fn(&mut Zone<'_>) -> Result<Edited, E>,
) -> Result<Journaled, ChangeError<E>> {
    let Ok(apex) = Name::from_ascii(origin) else {
        return Ok(Journaled::NotHere);
    };
    let Some(apex_key) = NameKey::new(&apex) else {
        return Ok(Journaled::NotHere);
    };
    let Some((zone, source)) = serving.served(apex_key.as_bytes()) else {
        return Ok(Journaled::NotHere);
    };
    if !source.stamps.unchanged() {
        return Ok(Journaled::NotHere);
    }
    // A zone file written by hand with includes is rewritten whole, which
    // inlines them (see the adoption below).
    if source.replayed.synced.is_none() && source.stamps.len() != 1 {
        return Ok(Journaled::NotHere);
    }
    let config = ws.load_dnsd().map_err(|e| {
        ChangeError::LiveBroken(format!(
            "the live dnsd.toml does not load, fix it first:\n{e}"
        ))
    })?;
    let services = &config.services;
    let is_service = |n: &Name| {
        services
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(&n.to_string()))
    };
    let children = children_of(serving, &zone.origin);

    // The names, each once, the apex first.
    let mut keys: Vec<(Name, NameKey)> = vec![(zone.origin.clone(), apex_key)];
    for n in names {
        if let Some(k) = NameKey::new(n)
            && !keys.iter().any(|(_, have)| have.as_bytes() == k.as_bytes())
        {
            keys.push((n.clone(), k));
        }
    }
    let mut served = Vec::new();
    let mut above = Vec::new();
    for (_, k) in &keys {
        served.extend(zone.records_at(k.as_bytes()));
        above.extend(zone.dnames_above(k.as_bytes()));
    }
    let from_service = |r: &Record| {
        matches!(r.record_type(), RecordType::A | RecordType::AAAA) && is_service(&r.name)
    };
    let file: Vec<Record> = served
        .iter()
        .filter(|r| !from_service(r))
        .cloned()
        .collect();
    let before = zone_edit::lines(&file);
    let mut view = Zone {
        origin: &zone.origin,
        served: &served,
        children: &children,
        services,
        file,
    };
    let edited = edit(&mut view).map_err(ChangeError::Refused)?;
    let mut after = view.file;
    if zone_edit::lines(&after) == before {
        return Ok(Journaled::Done(None));
    }
    // What the names alone cannot check goes the whole file's way.
    let widens = |r: &Record| {
        r.record_type() == RecordType::DNAME
            || (r.record_type() == RecordType::NS && r.name != zone.origin)
    };
    let touched_away = after
        .iter()
        .any(|r| !keys.iter().any(|(n, _)| *n == r.name));
    if touched_away
        || after
            .iter()
            .any(|r| widens(r) && !before.contains(&zone_edit::record_line(r)))
    {
        return Ok(Journaled::NotHere);
    }
    if !edited.soa_set {
        zone_edit::bump_serial(&mut after);
    }
    let mut checked: Vec<Record> = served.iter().filter(|r| from_service(r)).cloned().collect();
    checked.extend(after.iter().cloned());
    // Named as the operator knows it, relative to the workspace (a listing
    // of zones/, only for a change that is refused).
    let zone_file = || ws.zone_rel(origin);
    let mut errors: Vec<ConfigError> = services
        .iter()
        .filter(|s| {
            after.iter().any(|r| {
                r.record_type() == RecordType::CNAME
                    && r.name.to_string().eq_ignore_ascii_case(&s.name)
            })
        })
        .map(|s| {
            let mut e = ConfigError::file(
                Path::new(DNSD_FILE),
                format!(
                    "service {} cannot be served from {}: the zone gives it a CNAME",
                    s.name,
                    zone_file().display()
                ),
            );
            e.line = Some(s.line);
            e
        })
        .collect();
    errors.extend(
        check_names(&zone.origin, &checked, &above)
            .into_iter()
            .map(|m| ConfigError::file(&zone_file(), m)),
    );
    if !errors.is_empty() {
        return Err(ChangeError::Commit(HistoryError::Invalid(ConfigErrors(
            errors,
        ))));
    }
    // A zone file written by hand and served as it stands is taken into
    // the journal's keeping as it is (a header added), once, and only for
    // a change that goes through: a refusal writes nothing.
    let mut adopted = None;
    if source.replayed.synced.is_none() {
        let at = ws
            .adopt_zone_file(origin, || source.stamps.unchanged())
            .map_err(ChangeError::Commit)?;
        let Some(at) = at else {
            return Ok(Journaled::NotHere);
        };
        adopted = Some((source.stamps.restamped(), at));
    }
    let (removed, added) = zone_journal::diff(&before, &zone_edit::lines(&after));
    let generation = ws
        .append_change(
            &origin.to_ascii_lowercase(),
            &edited.message,
            removed,
            added,
        )
        .map_err(ChangeError::Commit)?;
    let names = keys
        .into_iter()
        .map(|(name, _)| {
            let at: Vec<Record> = checked.iter().filter(|r| r.name == name).cloned().collect();
            (name, at)
        })
        .collect();
    Ok(Journaled::Done(Some(Change {
        generation,
        serve: Serve {
            names: Some(names),
            adopted,
        },
    })))
}

/// The zone's rules at the names of `records` (every record at each of
/// them, the apex's among them): as loading checks the whole zone, with
/// the DNAMEs `above` those names.
fn check_names(origin: &Name, records: &[Record], above: &[Record]) -> Vec<String> {
    let mut all: Vec<Record> = records.to_vec();
    all.extend(above.iter().cloned());
    all.sort_by_key(zone_edit::record_line);
    all.dedup_by_key(|r| zone_edit::record_line(r));
    zone::check_records(origin, &all)
}

/// Origins of the zones of `serving` inside `origin`.
fn children_of(serving: &Snapshot, origin: &Name) -> Vec<Name> {
    let own = NameKey::new(origin);
    serving
        .apexes()
        .filter(|k| own.as_ref().is_none_or(|o| o.as_bytes() != *k))
        .filter_map(name_key::to_name)
        .filter(|n| origin.zone_of(n))
        .collect()
}

fn through_file<E>(
    ws: &Workspace,
    origin: &str,
    author: &str,
    edit: &impl Fn(&mut Zone<'_>) -> Result<Edited, E>,
) -> Result<Changed, ChangeError<E>> {
    let live = zone::load(ws.root()).map_err(|e| {
        ChangeError::LiveBroken(format!(
            "the live workspace does not load, fix it first:\n{e}"
        ))
    })?;
    let wanted = |o: &Name| o.to_string().eq_ignore_ascii_case(origin);
    if let Some(broken) = live.broken.iter().find(|z| wanted(&z.origin)) {
        return Err(ChangeError::LiveBroken(format!(
            "the live zone file does not load, fix it first:\n{}",
            ConfigErrors(broken.errors.clone())
        )));
    }
    let Some(served) = live.zones.iter().find(|z| wanted(&z.origin)) else {
        return Err(ChangeError::NoSuchZone(origin.to_string()));
    };
    let files = ws
        .zone_files()
        .map_err(|e| ChangeError::Failed(e.to_string()))?;
    let Some(zone_file) = files
        .into_iter()
        .find(|f| f.origin.eq_ignore_ascii_case(origin))
    else {
        return Err(ChangeError::NoSuchZone(origin.to_string()));
    };
    let file = zone::load_zone(ws, &zone_file, &JournalView::all(ws.clone())).map_err(|e| {
        ChangeError::LiveBroken(format!(
            "the live zone file does not load, fix it first:\n{}",
            ConfigErrors(e)
        ))
    })?;
    let children: Vec<Name> = live
        .zones
        .iter()
        .map(|z| &z.origin)
        .chain(live.broken.iter().map(|z| &z.origin))
        .filter(|o| **o != served.origin && served.origin.zone_of(o))
        .cloned()
        .collect();
    let served_records = served.hickory_records();
    let mut zone = Zone {
        origin: &served.origin,
        served: &served_records,
        children: &children,
        services: &live.config.services,
        file: file.hickory_records(),
    };
    let before = zone_edit::lines(&zone.file);
    let edited = edit(&mut zone).map_err(ChangeError::Refused)?;
    let mut records = zone.file;
    if zone_edit::lines(&records) == before {
        return Ok(None);
    }
    if !edited.soa_set {
        // From the serial served, which a service may have raised above
        // the file's (`zone::raise_serial`).
        if let Some(now) = zone_edit::serial(&served_records) {
            for r in &mut records {
                if let RData::SOA(soa) = &mut r.data
                    && zone::serial_newer(now, soa.serial)
                {
                    soa.serial = now;
                }
            }
        }
        zone_edit::bump_serial(&mut records);
    }
    let body = zone_edit::render(&served.origin, &records, author).map_err(ChangeError::Failed)?;
    // Every changeset so far is in the body: none may replay onto it.
    let newest = ws.newest_number().map_err(ChangeError::Commit)?;
    let text = cutover_workspace::headed(newest, body.as_bytes());
    zone_edit::commit(ws, &zone_file, text, &edited.message)
        .map(|generation| {
            Some(Change {
                generation,
                serve: Serve::default(),
            })
        })
        .map_err(ChangeError::Commit)
}
