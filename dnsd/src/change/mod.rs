//! Changes to the workspace: the control API (`api`), RFC 2136 dynamic
//! updates (`update_handler` around the pure rules of `update`, signed
//! with `tsig`), zone files written (`zone_edit`), and here the one way a
//! zone's data changes: a transaction on the live workspace that the API's
//! `PUT .../rrsets` and updates both run, each supplying only its edit.
//! Holding the change lock, it
//!
//! 1. loads the live workspace as a reload would (a broken `dnsd.toml`, or
//!    the zone's own file not loading, stops it: fix that first);
//! 2. finds the zone, its served records (services applied) and its file's
//!    records;
//! 3. lets the caller's edit check what it needs and change the file's
//!    records, or refuse with its own reason;
//! 4. skips a change that changes nothing (no generation);
//! 5. raises the SOA serial unless the edit set the SOA itself;
//! 6. renders the file, proves it reads back to the same records, and
//!    commits it as one generation whose validator loads the whole staged
//!    workspace and refuses to break a zone that loads now.
//!
//! The caller then serves it (`Reloader::reload`) and turns a
//! [`ChangeError`] into its protocol's answer: an HTTP status, an rcode.

pub mod api;
pub mod tsig;
pub mod update;
pub mod update_handler;
pub mod zone_edit;

use cutover_workspace::{Generation, HistoryError, Service, Workspace};
use hickory_proto::rr::{Name, Record};

use crate::zone::{self, LoadedZone};

/// What an edit sees of the zone it changes.
pub struct Zone<'a> {
    /// The zone as served: the file's records with the services applied.
    pub served: &'a LoadedZone,
    /// Origins of other zones of the workspace inside this one.
    pub children: &'a [Name],
    /// The `[[service]]` entries of `dnsd.toml`.
    pub services: &'a [Service],
    /// The records of the zone file, for the edit to change.
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

/// A change that went through: its generation, or `None` when it changed
/// nothing (RFC 2136 §3.4.2: a no-op succeeds, and makes no generation).
pub type Changed = Option<Generation>;

/// Runs `edit` on zone `origin` of the live workspace `ws` and commits the
/// result, as the module doc says; `author` heads the rewritten file
/// ("dnsd's control API"). Blocking I/O: run it off the async workers, with
/// the change lock held.
pub fn zone<E>(
    ws: &Workspace,
    origin: &str,
    author: &str,
    edit: impl FnOnce(&mut Zone<'_>) -> Result<Edited, E>,
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
            cutover_workspace::ConfigErrors(broken.errors.clone())
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
    let file = zone::load_zone(ws, &zone_file).map_err(|e| {
        ChangeError::LiveBroken(format!(
            "the live zone file does not load, fix it first:\n{}",
            cutover_workspace::ConfigErrors(e)
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
    let mut zone = Zone {
        served,
        children: &children,
        services: &live.config.services,
        file: file.records,
    };
    let before = zone_edit::lines(&zone.file);
    let edited = edit(&mut zone).map_err(ChangeError::Refused)?;
    let mut records = zone.file;
    if zone_edit::lines(&records) == before {
        return Ok(None);
    }
    if !edited.soa_set {
        zone_edit::bump_serial(&mut records);
    }
    let text = zone_edit::render(&served.origin, &records, author).map_err(ChangeError::Failed)?;
    zone_edit::commit(ws, &zone_file, text, &edited.message)
        .map(Some)
        .map_err(ChangeError::Commit)
}
