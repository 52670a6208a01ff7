//! Reading a workspace into checked DNS data: every zone file read with the
//! project's own master-file reader (crate `zonefile`, exact to the octet),
//! its `$INCLUDE`s resolved inside the workspace's versioned `zones/`, then
//! checked the way NSD and Knot check a zone (`name_rules` for what may
//! share a name), then the `[[service]]` shorthands of `dnsd.toml` applied
//! on top.
//!
//! Every problem is reported, each with its file, its line where it has one,
//! and what is wrong, so that one `dnsd check` shows an operator all of them.

pub mod checks;
pub mod dname;
pub mod journal;
pub mod name_key;
pub mod name_rules;
pub mod records;
pub mod replicas;

use crate::clock::unix_now;
use crate::health;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cutover_workspace::{
    ConfigError, ConfigErrors, DnsdConfig, Service, Settled, Settlement, Workspace, ZoneFile,
};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

use self::journal::{JournalView, Replayed};
use self::name_key::NameKey;

use cutover_workspace::Stamps;

/// One zone, read and checked.
#[derive(Debug)]
pub struct LoadedZone {
    /// The zone's apex, from the file name (`zones/<origin>.zone`).
    pub origin: Name,
    pub file: PathBuf,
    /// Every record of the zone, each once, in wire form, with where it
    /// was written (a service's records on line 0): grouped by owner
    /// (`checks::group`), the records of a name in the order read. Each
    /// keeps its own TTL.
    pub records: Vec<zonefile::ZoneRecord>,
    /// Worth an operator's attention, but served: an RRset whose records
    /// carry different TTLs (served with the lowest, RFC 2181 §5.2).
    pub warnings: Vec<ConfigError>,
    /// The files it was read from (the zone file, its includes) as they
    /// stood.
    pub stamps: Stamps,
    /// Its file's sync header and the journal replayed onto it.
    pub replayed: Replayed,
}

/// A zone file that does not load: it is not served from this file (its
/// previous good version keeps serving, or its queries get SERVFAIL), and
/// every other zone is, as NSD and Knot isolate zones.
#[derive(Debug)]
pub struct BrokenZone {
    /// The zone's apex, from the file name.
    pub origin: Name,
    pub file: PathBuf,
    /// Every problem, each with its file and line.
    pub errors: Vec<ConfigError>,
    /// Not served by choice rather than for a fault of its file: a replica
    /// zone not yet transferred, or expired (`replicas`). Its queries get
    /// SERVFAIL; no previous version stands in for it.
    pub withheld: bool,
}

/// A whole workspace, read and checked: what a snapshot is built from.
#[derive(Debug)]
pub struct LoadedWorkspace {
    pub config: DnsdConfig,
    /// The zones that loaded, services applied.
    pub zones: Vec<LoadedZone>,
    /// The zones that did not.
    pub broken: Vec<BrokenZone>,
}

impl LoadedZone {
    /// The serial of its SOA record.
    pub fn serial(&self) -> Option<u32> {
        Some(self.soa_numbers()?[0])
    }

    /// Its SOA's expire (RFC 1035 §3.3.13), in seconds.
    pub fn expire(&self) -> Option<u32> {
        Some(self.soa_numbers()?[3])
    }

    fn soa_numbers(&self) -> Option<[u32; 5]> {
        self.records.iter().find_map(|zr| {
            let r = &zr.record;
            (r.rtype == zonefile::codes::SOA).then(|| zonefile::soa_numbers(&r.rdata))?
        })
    }

    /// Its records in the order of the files they were read from (a
    /// service's first).
    pub fn in_file_order(&self) -> Vec<&zonefile::Record> {
        let mut in_files: Vec<&zonefile::ZoneRecord> = self.records.iter().collect();
        in_files.sort_by_key(|zr| (zr.file, zr.line));
        in_files.into_iter().map(|zr| &zr.record).collect()
    }

    /// The records as hickory records, in the order of the files they
    /// were read from (a service's first): for the changes, which edit a
    /// few of them, and the zone file's rewrite.
    pub fn hickory_records(&self) -> Vec<Record> {
        self.in_file_order()
            .into_iter()
            .map(records::to_hickory)
            .collect()
    }
}

impl LoadedWorkspace {
    pub fn record_count(&self) -> usize {
        self.zones.iter().map(|z| z.records.len()).sum()
    }

    /// Every warning of every zone.
    pub fn warnings(&self) -> impl Iterator<Item = &ConfigError> {
        self.zones.iter().flat_map(|z| z.warnings.iter())
    }

    /// Every problem of every broken zone (not of a replica withheld).
    pub fn problems(&self) -> impl Iterator<Item = &ConfigError> {
        self.broken
            .iter()
            .filter(|z| !z.withheld)
            .flat_map(|z| z.errors.iter())
    }

    /// The zones that do not load for a fault of their files.
    pub fn faulty(&self) -> impl Iterator<Item = &BrokenZone> {
        self.broken.iter().filter(|z| !z.withheld)
    }
}

/// Reads, parses and checks the live workspace at `root`, each zone's
/// journal replayed onto its file. Fails as a whole only for what every
/// zone depends on (`dnsd.toml`, its services, the list of zones); a zone
/// file that does not load is set aside in `broken`.
pub fn load(root: &Path) -> Result<LoadedWorkspace, ConfigErrors> {
    let live = Workspace::open(root)?;
    load_with(root, &JournalView::all(live))
}

/// Reads the workspace as `Workspace::settled` gave it (`live` settled):
/// the live files, or a generation's copy, with the journal up to it.
pub fn load_settled(live: &Workspace, settled: &Settled) -> Result<LoadedWorkspace, ConfigErrors> {
    load_settled_seen(live, settled, &health::AllUp)
}

/// `load_settled`, each service serving the addresses `health` says are
/// in use (`health::in_use`).
pub fn load_settled_seen(
    live: &Workspace,
    settled: &Settled,
    health: &dyn health::View,
) -> Result<LoadedWorkspace, ConfigErrors> {
    let upto = match settled.settlement() {
        Settlement::FromCopy { number, .. } => Some(*number),
        _ => None,
    };
    let view = JournalView {
        live: live.clone(),
        upto,
    };
    load_seen(settled.root(), &view, health)
}

/// Reads the workspace at `root` (the live one, a staged commit, a
/// generation's copy), with the changesets `view` gives, every address
/// taken to be up.
pub fn load_with(root: &Path, view: &JournalView) -> Result<LoadedWorkspace, ConfigErrors> {
    load_seen(root, view, &health::AllUp)
}

/// `load_with`, each service serving the addresses `health` says are in
/// use.
pub fn load_seen(
    root: &Path,
    view: &JournalView,
    health: &dyn health::View,
) -> Result<LoadedWorkspace, ConfigErrors> {
    let ws = Workspace::open(root)?;
    let mut errors = Vec::new();
    let config = match ws.load_dnsd() {
        Ok(c) => Some(c),
        Err(e) => {
            errors.extend(e.0);
            None
        }
    };
    let files = match ws.zone_files() {
        Ok(files) => files,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let mut zones = Vec::with_capacity(files.len());
    let mut broken = Vec::new();
    for file in &files {
        match load_zone(&ws, file, view) {
            Ok(zone) => zones.push(zone),
            Err(errors) => broken.push(BrokenZone {
                origin: Name::from_ascii(&file.origin).unwrap_or_else(|_| Name::root()),
                file: file.path.clone(),
                errors,
                withheld: false,
            }),
        }
    }
    if let Some(config) = &config {
        replicas::withhold(
            &view.live,
            &ws.zones_dir(),
            &config.replicas,
            &mut zones,
            &mut broken,
            unix_now(),
        );
        apply_services(
            &ws.dnsd_path(),
            &config.services,
            health,
            &mut zones,
            &broken,
            &mut errors,
        );
        if files.is_empty() && config.replicas.is_empty() && errors.is_empty() {
            errors.push(ConfigError::file(
                &ws.zones_dir(),
                "no zone files: dnsd serves zones/<origin>.zone, e.g. zones/example.test.zone",
            ));
        }
    }
    match config {
        Some(config) if errors.is_empty() => Ok(LoadedWorkspace {
            config,
            zones,
            broken,
        }),
        _ => {
            // What the workspace-wide problems may stem from is worth
            // seeing beside them.
            errors.extend(broken.into_iter().flat_map(|z| z.errors));
            Err(ConfigErrors(errors))
        }
    }
}

/// RFC 1982 serial number arithmetic: whether `new` follows `old`.
pub fn serial_newer(new: u32, old: u32) -> bool {
    new != old && (new.wrapping_sub(old) as i32) > 0
}

/// Raises the SOA serial of `records` to `serial` if that is newer: a
/// service changed through the API carries its zone's serial then.
pub fn raise_serial(records: &mut [zonefile::ZoneRecord], serial: u32) {
    for zr in records {
        let r = &mut zr.record;
        if RecordType::from(r.rtype) != RecordType::SOA {
            continue;
        }
        if let Some([now, ..]) = zonefile::soa_numbers(&r.rdata)
            && serial_newer(serial, now)
        {
            let _ = zonefile::set_soa_serial(&mut r.rdata, serial);
        }
    }
}

/// Origins of the zones that do not load in the workspace at `root`; the
/// error if the workspace as a whole does not.
pub fn broken_zones(root: &Path) -> Result<Vec<Name>, ConfigErrors> {
    load(root).map(|ws| ws.broken.into_iter().map(|z| z.origin).collect())
}

fn error_at(file: &Path, line: Option<usize>, message: impl Into<String>) -> ConfigError {
    let mut e = ConfigError::file(file, message);
    e.line = line;
    e
}

/// `$INCLUDE` as dnsd allows it: a path relative to the workspace's
/// `zones/` directory that stays inside it, so that every included file is
/// versioned with the zone (see `Workspace::managed_zone_path`).
struct WorkspaceIncludes<'w> {
    workspace: &'w Workspace,
}

impl zonefile::Includes for WorkspaceIncludes<'_> {
    fn read(&mut self, path: &[u8], _from: &Path) -> Result<(PathBuf, Vec<u8>), String> {
        let rel = Path::new(OsStr::from_bytes(path));
        let resolved = self.workspace.managed_zone_path(rel).map_err(|e| {
            format!("{e} (an included file must be inside the workspace's zones/ directory, named relative to it)")
        })?;
        let text = std::fs::read(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
        Ok((resolved, text))
    }
}

/// Parses zone-file text relative to `origin` into records, in file
/// order, refusing `$INCLUDE`: for text that is not a workspace file.
pub fn parse_records(text: &str, origin: &Name) -> Result<Vec<Record>, String> {
    let origin = records::zone_name(origin);
    zonefile::read(
        text.as_bytes(),
        Path::new("-"),
        &origin,
        &mut zonefile::NoIncludes,
    )
    .map(|zone| {
        zone.records
            .iter()
            .map(|r| records::to_hickory(&r.record))
            .collect()
    })
    .map_err(|errors| {
        errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Reads and checks one zone of `workspace`, its file and the changesets
/// of its journal that `view` gives, without the services.
pub fn load_zone(
    workspace: &Workspace,
    zf: &ZoneFile,
    view: &JournalView,
) -> Result<LoadedZone, Vec<ConfigError>> {
    load_zone_from(workspace, zf, None, view)
}

/// As `load_zone`, with the zone's changesets replayed after generation
/// `from` whatever the file's header says (`None`: as it says): for a file
/// that holds the zone at a known generation (a generation's copy, a
/// checkpoint; `zf.path` is that file).
pub fn load_zone_from(
    workspace: &Workspace,
    zf: &ZoneFile,
    from: Option<u64>,
    view: &JournalView,
) -> Result<LoadedZone, Vec<ConfigError>> {
    let file = zf.path.as_path();
    let stamped = Stamps::of(std::slice::from_ref(&zf.path));
    let text = std::fs::read(file)
        .map_err(|e| vec![ConfigError::file(file, format!("cannot read: {e}"))])?;
    let synced = from.or_else(|| cutover_workspace::synced_at(&text));
    let origin =
        zonefile::Name::parse(zf.origin.as_bytes(), &zonefile::Name::root()).map_err(|e| {
            vec![ConfigError::file(
                file,
                format!("the file name does not give a valid zone origin: {e}"),
            )]
        })?;
    let mut includes = WorkspaceIncludes { workspace };
    let mut zone = zonefile::read(&text, file, &origin, &mut includes).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| error_at(&e.file, Some(e.line), e.message))
            .collect::<Vec<_>>()
    })?;
    // What is not needed any more is given back at once: a reload holds the
    // zone being served beside the one being read.
    drop(text);
    // Stamped as read: the zone file before reading it (a write meanwhile
    // shows as a change), its includes after.
    let stamps = stamped.with(&zone.files[1..]);
    let replayed = journal::replay(&mut zone, &origin, &zf.origin, synced, view)?;
    let apex = NameKey::from_wire(origin.wire()).ok_or_else(|| {
        vec![ConfigError::file(
            file,
            "the file name does not give a valid zone origin",
        )]
    })?;
    let mut records = std::mem::take(&mut zone.records);
    let keys = checks::group(&mut records);
    let at = |i: usize| {
        let zr = records.get(i);
        let path = zr
            .and_then(|zr| zone.files.get(zr.file))
            .map_or(zf.path.as_path(), PathBuf::as_path);
        error_at(path, zr.map(|zr| zr.line), "")
    };
    let mut errors: Vec<ConfigError> =
        checks::check_zone(&origin, apex.as_bytes(), &records, &keys)
            .into_iter()
            .map(|(place, message)| match place {
                Some(i) => ConfigError { message, ..at(i) },
                None => ConfigError::file(file, message),
            })
            .collect();
    let place = |f: usize, line: usize| {
        let path = zone
            .files
            .get(f)
            .map_or(zf.path.as_path(), PathBuf::as_path);
        error_at(path, Some(line), "")
    };
    errors.extend(
        name_rules::check(apex.as_bytes(), &records, &keys)
            .into_iter()
            .map(|p| ConfigError {
                message: p.message,
                ..place(p.file, p.line)
            }),
    );
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(errors);
    }
    let mut warnings: Vec<ConfigError> = checks::ttl_warnings(&records, &keys)
        .into_iter()
        .map(|(i, message)| ConfigError { message, ..at(i) })
        .collect();
    warnings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    drop(keys);
    Ok(LoadedZone {
        origin: records::name(&origin),
        file: file.to_path_buf(),
        records,
        warnings,
        stamps,
        replayed,
    })
}

/// Problems of `records` (hickory's, each at line 0 of file 0) in the
/// zone whose apex is `origin`, as loading checks a whole zone: the checks
/// of a change made at a few names.
pub(crate) fn check_records(origin: &Name, records: &[Record]) -> Vec<String> {
    let mut zone: Vec<zonefile::ZoneRecord> = records
        .iter()
        .filter_map(records::from_hickory)
        .map(|record| zonefile::ZoneRecord {
            record,
            file: 0,
            line: 0,
        })
        .collect();
    let keys = checks::group(&mut zone);
    let wire = records::zone_name(origin);
    let Some(apex) = NameKey::from_wire(wire.wire()) else {
        return vec![format!("{origin} is not a valid zone origin")];
    };
    let mut problems: Vec<String> = checks::check_zone(&wire, apex.as_bytes(), &zone, &keys)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    problems.extend(
        name_rules::check(apex.as_bytes(), &zone, &keys)
            .into_iter()
            .map(|p| p.message),
    );
    problems
}

/// Replaces each service's A/AAAA RRsets in the zone that contains it with
/// the addresses it has in use (`health::in_use`). A service of a broken
/// zone is left to that zone: it is not served, and whether it fits the
/// zone cannot be told.
fn apply_services(
    toml: &Path,
    services: &[Service],
    health: &dyn health::View,
    zones: &mut [LoadedZone],
    broken: &[BrokenZone],
    errors: &mut Vec<ConfigError>,
) {
    // The newest serial of a service changed through the API, by zone.
    let mut raised: std::collections::HashMap<Name, u32> = std::collections::HashMap::new();
    for service in services {
        let fail = |message: String| error_at(toml, Some(service.line), message);
        let name = match Name::from_ascii(&service.name) {
            Ok(name) => name,
            Err(e) => {
                errors.push(fail(format!("{}: {e}", service.name)));
                continue;
            }
        };
        // The closest enclosing zone owns the name.
        let closest_broken = broken
            .iter()
            .filter(|z| z.origin.zone_of(&name))
            .map(|z| z.origin.num_labels())
            .max();
        let closest_loaded = zones
            .iter()
            .filter(|z| z.origin.zone_of(&name))
            .map(|z| z.origin.num_labels())
            .max();
        if closest_broken.is_some() && closest_broken >= closest_loaded {
            continue;
        }
        let Some(zone) = zones
            .iter_mut()
            .filter(|z| z.origin.zone_of(&name))
            .max_by_key(|z| z.origin.num_labels())
        else {
            errors.push(fail(format!(
                "service {name} is not inside any served zone: add zones/<zone>.zone for it"
            )));
            continue;
        };
        let wire = records::zone_name(&name);
        let (Some(key), Some(apex)) = (NameKey::new(&name), NameKey::new(&zone.origin)) else {
            errors.push(fail(format!("{name}: not a name a zone can hold")));
            continue;
        };
        let (key, apex) = (key.as_bytes(), apex.as_bytes());
        let conflict = zone.records.iter().find_map(|zr| {
            let r = &zr.record;
            let rtype = RecordType::from(r.rtype);
            if !matches!(
                rtype,
                RecordType::NS | RecordType::CNAME | RecordType::DNAME
            ) {
                return None;
            }
            let owner = NameKey::from_wire(r.owner.wire())?;
            let owner = owner.as_bytes();
            let above = name_key::is_at_or_below(key, owner);
            match rtype {
                RecordType::NS if owner != apex && above => {
                    Some(format!("it is delegated away at {}", r.owner))
                }
                RecordType::CNAME if owner == key => Some("the zone gives it a CNAME".to_string()),
                RecordType::DNAME if owner != key && above => Some(format!(
                    "it is below the DNAME at {}, where no name may exist",
                    r.owner
                )),
                _ => None,
            }
        });
        if let Some(why) = conflict {
            errors.push(fail(format!(
                "service {name} cannot be served from {}: {why}",
                zone.file.display()
            )));
            continue;
        }
        // Its addresses replace the zone's, beside the name's other records
        // (which keeps the records grouped by owner).
        let at_name =
            |zr: &zonefile::ZoneRecord| zr.record.owner.wire().eq_ignore_ascii_case(wire.wire());
        let is_address = |zr: &zonefile::ZoneRecord| {
            matches!(
                RecordType::from(zr.record.rtype),
                RecordType::A | RecordType::AAAA
            )
        };
        zone.records.retain(|zr| !(is_address(zr) && at_name(zr)));
        let at = zone
            .records
            .iter()
            .rposition(at_name)
            .map_or(zone.records.len(), |i| i + 1);
        let in_use = health::in_use(service, health);
        let added = in_use.addresses.iter().map(|address| {
            let (rtype, rdata) = match address {
                std::net::IpAddr::V4(v4) => (RecordType::A, v4.octets().to_vec()),
                std::net::IpAddr::V6(v6) => (RecordType::AAAA, v6.octets().to_vec()),
            };
            zonefile::ZoneRecord {
                record: zonefile::Record {
                    owner: wire.clone(),
                    class: u16::from(DNSClass::IN),
                    ttl: in_use.ttl,
                    rtype: u16::from(rtype),
                    rdata,
                },
                file: 0,
                line: 0,
            }
        });
        zone.records.splice(at..at, added);
        if let Some(serial) = service.serial {
            let newest = raised.entry(zone.origin.clone()).or_insert(serial);
            if serial_newer(serial, *newest) {
                *newest = serial;
            }
        }
    }
    // Once per zone, its newest: finding the SOA is a pass over the zone.
    for zone in zones.iter_mut() {
        if let Some(&serial) = raised.get(&zone.origin) {
            raise_serial(&mut zone.records, serial);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(zone: &str, toml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/example.test.zone"), zone).unwrap();
        std::fs::write(dir.path().join("dnsd.toml"), toml).unwrap();
        dir
    }

    /// The workspace if every zone loads, as `dnsd check` requires.
    fn complete(root: &Path) -> Result<LoadedWorkspace, ConfigErrors> {
        let ws = load(root)?;
        if ws.broken.is_empty() {
            Ok(ws)
        } else {
            Err(ConfigErrors(ws.problems().cloned().collect()))
        }
    }

    const GOOD: &str = "$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
  IN NS ns1
ns1 IN A 198.18.0.53
www 60 IN A 198.18.0.1
www 60 IN A 198.18.0.2
";

    #[test]
    fn a_zone_is_served_with_the_newest_serial_its_services_carry() {
        let toml = "[[service]]\nname = \"www.example.test.\"\naddresses = [\"198.18.0.3\"]\nttl = 60\nserial = 7\n\
                    [[service]]\nname = \"api.example.test.\"\naddresses = [\"198.18.0.4\"]\nttl = 60\nserial = 5\n";
        let dir = workspace(GOOD, toml);
        let ws = complete(dir.path()).unwrap();
        assert_eq!(ws.zones[0].serial(), Some(7));
        // A serial below the file's leaves the file's.
        let dir = workspace(&GOOD.replace(" 1 3600", " 9 3600"), toml);
        assert_eq!(complete(dir.path()).unwrap().zones[0].serial(), Some(9));
    }

    #[test]
    fn a_good_zone_loads_with_every_record() {
        let dir = workspace(GOOD, "");
        let ws = load(dir.path()).unwrap();
        assert_eq!(ws.zones.len(), 1);
        assert_eq!(ws.record_count(), 5);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let zone = format!("{GOOD}mail IN MX ten mail\nok IN A 198.18.0.9\n");
        let dir = workspace(&zone, "");
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(7), "{err}");
        assert!(err.0[0].file.ends_with("zones/example.test.zone"));
    }

    #[test]
    fn a_bad_address_inside_parentheses_names_the_first_line_of_its_entry() {
        let zone = format!("{GOOD}txt IN TXT ( \"a\"\n \"b\" )\nbad IN A 198.18.0.300\n");
        let dir = workspace(&zone, "");
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0[0].line, Some(9), "{err}");
    }

    #[test]
    fn semantic_errors_name_their_lines() {
        let zone = format!("{GOOD}www IN CNAME ns1\nother.test. IN A 198.18.0.7\n");
        let dir = workspace(&zone, "");
        let err = complete(dir.path()).unwrap_err();
        let mut lines: Vec<_> = err.0.iter().map(|e| e.line).collect();
        lines.sort();
        assert_eq!(lines, [Some(7), Some(8)], "{err}");
    }

    #[test]
    fn a_zone_without_soa_or_ns_is_refused() {
        let dir = workspace("$TTL 60\nwww IN A 198.18.0.1\n", "");
        let err = complete(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no SOA"), "{err}");
        assert!(err.contains("no NS"), "{err}");
    }

    #[test]
    fn services_replace_address_records() {
        let toml = "[[service]]\nname = \"www.example.test\"\naddresses = [\"198.18.0.3\", \"2001:2::3\"]\nttl = 30\n";
        let dir = workspace(GOOD, toml);
        let ws = load(dir.path()).unwrap();
        let www: Vec<_> = ws.zones[0]
            .hickory_records()
            .iter()
            .filter(|r| r.name.to_ascii() == "www.example.test.")
            .map(|r| (r.data.to_string(), r.ttl))
            .collect();
        assert_eq!(www, [("198.18.0.3".into(), 30), ("2001:2::3".into(), 30)]);
    }

    #[test]
    fn a_service_outside_every_zone_names_its_toml_line() {
        let toml = "\n[[service]]\nname = \"www.elsewhere.test\"\naddresses = [\"198.18.0.3\"]\nttl = 30\n";
        let dir = workspace(GOOD, toml);
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0[0].line, Some(2), "{err}");
        assert!(err.0[0].file.ends_with("dnsd.toml"));
    }

    #[test]
    fn dname_records_load_and_two_cnames_do_not() {
        let zone = format!("{GOOD}dn 60 IN DNAME target\n");
        let dir = workspace(&zone, "");
        let ws = load(dir.path()).unwrap();
        let dname: Vec<_> = ws.zones[0]
            .hickory_records()
            .into_iter()
            .filter(|r| r.record_type() == RecordType::DNAME)
            .collect();
        assert_eq!(dname.len(), 1);
        assert_eq!(dname[0].ttl, 60);
        assert_eq!(
            crate::zone::dname::target(&dname[0]).map(|n| n.to_string()),
            Some("target.example.test.".to_string())
        );
        let zone = format!("{GOOD}x IN CNAME www\nx IN CNAME ns1\n");
        let dir = workspace(&zone, "");
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(8), "{err}");
        assert!(err.to_string().contains("multiple CNAMEs"), "{err}");
    }

    #[test]
    fn an_included_file_is_read_from_zones_and_its_errors_name_it() {
        let dir = workspace(&format!("{GOOD}$INCLUDE inc/more.inc\n"), "");
        std::fs::create_dir(dir.path().join("zones/inc")).unwrap();
        std::fs::write(
            dir.path().join("zones/inc/more.inc"),
            "dn IN DNAME www\nx IN TXT \"\\065\"\n",
        )
        .unwrap();
        let ws = load(dir.path()).unwrap();
        assert_eq!(ws.record_count(), 7);
        std::fs::write(
            dir.path().join("zones/inc/more.inc"),
            "ok IN A 198.18.0.1\nbad IN A 1.2.3\n",
        )
        .unwrap();
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].file.ends_with("zones/inc/more.inc"), "{err}");
        assert_eq!(err.0[0].line, Some(2), "{err}");
    }

    #[test]
    fn an_include_outside_zones_is_refused() {
        for path in ["/etc/passwd", "../dnsd.toml", "missing.inc"] {
            let dir = workspace(&format!("{GOOD}$INCLUDE {path}\n"), "");
            let err = complete(dir.path()).unwrap_err();
            assert_eq!(err.0[0].line, Some(7), "{path}: {err}");
            assert!(err.to_string().contains("$INCLUDE"), "{path}: {err}");
        }
    }

    #[test]
    fn records_written_twice_are_one_and_mixed_ttls_warn() {
        let zone = format!(
            "{GOOD}www 60 IN A 198.18.0.1\nalias IN CNAME www\nalias IN CNAME WWW\nmix 60 IN A 198.18.0.8\nmix 30 IN A 198.18.0.9\n"
        );
        let dir = workspace(&zone, "");
        let ws = load(dir.path()).unwrap();
        assert_eq!(ws.record_count(), 8);
        let warnings: Vec<_> = ws.warnings().collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].line, Some(11));
        assert!(warnings[0].message.contains("lowest, 30"), "{warnings:?}");
    }

    #[test]
    fn a_service_below_a_dname_is_refused() {
        let zone = format!("{GOOD}old IN DNAME www\n");
        let toml = "[[service]]\nname = \"api.old.example.test\"\naddresses = [\"198.18.0.3\"]\nttl = 30\n";
        let dir = workspace(&zone, toml);
        let err = complete(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("below the DNAME at old.example.test."),
            "{err}"
        );
    }

    #[test]
    fn a_cname_beside_data_from_an_included_file_names_the_included_line() {
        let dir = workspace(&format!("{GOOD}x IN CNAME www\n$INCLUDE more.inc\n"), "");
        std::fs::write(dir.path().join("zones/more.inc"), "\nx IN A 198.18.0.9\n").unwrap();
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.to_string().contains("CNAME and other data"), "{err}");
        assert!(err.0[0].file.ends_with("zones/more.inc"), "{err}");
        assert_eq!(err.0[0].line, Some(2), "{err}");
    }

    #[test]
    fn a_broken_zone_is_set_aside_and_the_others_load() {
        let dir = workspace(
            GOOD,
            "[[service]]\nname = \"www.broken.test\"\naddresses = [\"198.18.0.3\"]\nttl = 30\n",
        );
        std::fs::write(
            dir.path().join("zones/broken.test.zone"),
            "@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nx IN A 1.2.3\n",
        )
        .unwrap();
        let ws = load(dir.path()).unwrap();
        assert_eq!(ws.zones.len(), 1);
        assert_eq!(ws.broken.len(), 1);
        assert_eq!(ws.broken[0].origin.to_string(), "broken.test.");
        assert_eq!(ws.broken[0].errors[0].line, Some(3));
        // The service of the broken zone waits for it; it is not misplaced.
        assert_eq!(broken_zones(dir.path()).unwrap().len(), 1);
        let err = complete(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
    }
}
