//! A service's addresses changed (`PUT /v1/services/NAME`, cutover's push
//! button): dnsd.toml is committed with the one entry rewritten, and the
//! change is checked and served at the service's name only — against the
//! zone that serves it now (no CNAME there, no delegation or DNAME above
//! it), and by replacing that name's addresses in the served snapshot — so
//! that a flip costs what it changes, whatever the zones hold. When dnsd
//! cannot tell that the served state is what dnsd.toml says (it was edited
//! since it was read), the commit is checked by loading the whole staged
//! workspace and served by a reload, as before.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use cutover_workspace::{
    ConfigError, ConfigErrors, DNSD_FILE, FileChange, Generation, HistoryError, Service, Workspace,
};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::change::{Serve, zone_edit};
use crate::health;
use crate::snapshot::{Lookup, Snapshot, ZoneLookup};
use crate::zone::name_key::{self, NameKey};
use crate::zone::records;

/// A service change committed: its generation, and the zone and names to
/// serve it at (`None`: a reload serves it).
pub struct Committed {
    pub generation: Generation,
    pub serve: Option<(String, Serve)>,
}

/// Commits `toml` (dnsd.toml with service `name` rewritten). `by_name`:
/// the served state is dnsd.toml's as dnsd last read it, so the service
/// can be checked and served at its name alone.
pub fn commit(
    ws: &Workspace,
    serving: &Snapshot,
    health: &dyn health::View,
    name: &str,
    toml: String,
    message: &str,
    by_name: bool,
) -> Result<Committed, HistoryError> {
    let change = FileChange {
        path: PathBuf::from(DNSD_FILE),
        content: Some(toml.into_bytes()),
    };
    if !by_name {
        let generation = ws.commit(&[change], message, zone_edit::validator(ws))?;
        return Ok(Committed {
            generation,
            serve: None,
        });
    }
    let planned: RefCell<Option<(String, Names)>> = RefCell::new(None);
    let check = |staged: &Workspace| -> Result<(), ConfigErrors> {
        let config = staged.load_dnsd()?;
        let Some(service) = config.services.iter().find(|s| s.name == name) else {
            return Ok(());
        };
        let served = served_at(serving, service, health).map_err(|why| {
            let zone = ws.zone_rel(&why.origin);
            let mut e = ConfigError::file(
                Path::new(DNSD_FILE),
                format!(
                    "service {} cannot be served from {}: {}",
                    service.name,
                    zone.display(),
                    why.message
                ),
            );
            e.line = Some(service.line);
            ConfigErrors(vec![e])
        })?;
        match served {
            Some(plan) => {
                *planned.borrow_mut() = Some(plan);
                Ok(())
            }
            // No served zone holds it: the whole workspace's check says
            // why (or that a zone loads it after all).
            None => zone_edit::validator(ws)(staged),
        }
    };
    let generation = ws.commit(&[change], message, check)?;
    let serve = planned.into_inner().map(|(origin, names)| {
        (
            origin,
            Serve {
                names: Some(names),
                adopted: None,
            },
        )
    });
    Ok(Committed { generation, serve })
}

/// Why a service cannot be served where it is.
pub struct Conflict {
    pub origin: String,
    pub message: String,
}

/// The records served at each name a service change changes.
pub type Names = Vec<(Name, Vec<Record>)>;

/// The records `service` makes its name serve in the zone that serves it
/// now, with the addresses it has in use under `health` — and the apex's,
/// when the service's serial raises the zone's — and that zone's origin;
/// `None` when no served zone holds it (the whole workspace's check then
/// says why).
pub fn served_at(
    serving: &Snapshot,
    service: &Service,
    health: &dyn health::View,
) -> Result<Option<(String, Names)>, Conflict> {
    let Ok(name) = Name::from_ascii(&service.name) else {
        return Ok(None);
    };
    let Some(key) = NameKey::new(&name) else {
        return Ok(None);
    };
    let ZoneLookup::Serving(zone) = serving.find_zone(key.as_bytes(), RecordType::A) else {
        return Ok(None);
    };
    let origin = records::zone_name(&zone.origin).to_string();
    let conflict = |message: String| Conflict {
        origin: origin.clone(),
        message,
    };
    match zone.lookup(key.as_bytes(), RecordType::A) {
        Lookup::Referral { cut, .. } => {
            let at = name_key::to_name(cut).unwrap_or_default();
            return Err(conflict(format!("it is delegated away at {at}")));
        }
        Lookup::Dname { labels, .. } => {
            let at = name.trim_to(labels);
            return Err(conflict(format!(
                "it is below the DNAME at {at}, where no name may exist"
            )));
        }
        _ => {}
    }
    let mut records: Vec<Record> = zone
        .records_at(key.as_bytes())
        .into_iter()
        .filter(|r| !matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .collect();
    if records.iter().any(|r| r.record_type() == RecordType::CNAME) {
        return Err(conflict("the zone gives it a CNAME".into()));
    }
    let in_use = health::in_use(service, health);
    for address in &in_use.addresses {
        let data = match address {
            std::net::IpAddr::V4(v4) => RData::A(A(*v4)),
            std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
        };
        records.push(Record::from_rdata(name.clone(), in_use.ttl, data));
    }
    let raise = |records: &mut Vec<Record>| {
        for r in records {
            if let (RData::SOA(soa), Some(serial)) = (&mut r.data, service.serial)
                && crate::zone::serial_newer(serial, soa.serial)
            {
                soa.serial = serial;
            }
        }
    };
    let mut names = Vec::with_capacity(2);
    if name == zone.origin {
        raise(&mut records);
    } else if service.serial.is_some()
        && let Some(apex) = NameKey::new(&zone.origin)
    {
        let mut at_apex = zone.records_at(apex.as_bytes());
        raise(&mut at_apex);
        names.push((zone.origin.clone(), at_apex));
    }
    names.insert(0, (name, records));
    Ok(Some((origin, names)))
}
