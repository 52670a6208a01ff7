//! Reading a workspace into checked DNS data: every zone file read with the
//! project's own master-file reader (crate `zonefile`, exact to the octet),
//! its `$INCLUDE`s resolved inside the workspace's versioned `zones/`, then
//! checked the way NSD and Knot check a zone (`name_rules` for what may
//! share a name), then the `[[service]]` shorthands of `dnsd.toml` applied
//! on top.
//!
//! Every problem is reported, each with its file, its line where it has one,
//! and what is wrong, so that one `dnsd check` shows an operator all of them.

pub mod dname;
pub mod journal;
pub mod name_key;
pub mod name_rules;
pub mod records;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cutover_workspace::{
    ConfigError, ConfigErrors, DnsdConfig, Service, Settled, Settlement, Workspace, ZoneFile,
};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use self::journal::{JournalView, Replayed};
use self::name_rules::Entry;

/// The hasher of the loader's tables: keyed by names from the zone files
/// being read, not by what strangers send, so a fast one (SipHash cost a
/// tenth of a large zone's load).
type Fast = foldhash::fast::RandomState;
use cutover_workspace::Stamps;

/// One zone, read and checked.
#[derive(Debug)]
pub struct LoadedZone {
    /// The zone's apex, from the file name (`zones/<origin>.zone`).
    pub origin: Name,
    pub file: PathBuf,
    /// Every record of the zone, in file order; each keeps its own TTL.
    pub records: Vec<Record>,
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

impl LoadedWorkspace {
    pub fn record_count(&self) -> usize {
        self.zones.iter().map(|z| z.records.len()).sum()
    }

    /// Every warning of every zone.
    pub fn warnings(&self) -> impl Iterator<Item = &ConfigError> {
        self.zones.iter().flat_map(|z| z.warnings.iter())
    }

    /// Every problem of every broken zone.
    pub fn problems(&self) -> impl Iterator<Item = &ConfigError> {
        self.broken.iter().flat_map(|z| z.errors.iter())
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
    let upto = match settled.settlement() {
        Settlement::FromCopy { number, .. } => Some(*number),
        _ => None,
    };
    let view = JournalView {
        live: live.clone(),
        upto,
    };
    load_with(settled.root(), &view)
}

/// Reads the workspace at `root` (the live one, a staged commit, a
/// generation's copy), with the changesets `view` gives.
pub fn load_with(root: &Path, view: &JournalView) -> Result<LoadedWorkspace, ConfigErrors> {
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
            }),
        }
    }
    if let Some(config) = &config {
        apply_services(
            &ws.dnsd_path(),
            &config.services,
            &mut zones,
            &broken,
            &mut errors,
        );
        if files.is_empty() && errors.is_empty() {
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
    let origin = records::name(&origin);
    let (records, entries) = dedup(&zone);
    drop(std::mem::take(&mut zone.records));
    let at = |file: usize, line: usize| {
        let path = zone
            .files
            .get(file)
            .map_or(zf.path.as_path(), PathBuf::as_path);
        error_at(path, Some(line), "")
    };
    let mut errors: Vec<ConfigError> = check_zone(&origin, &records, &entries)
        .into_iter()
        .map(|(place, message)| match place {
            Some((f, line)) => ConfigError {
                message,
                ..at(f, line)
            },
            None => ConfigError::file(file, message),
        })
        .collect();
    errors.extend(
        name_rules::check(&origin, &entries)
            .into_iter()
            .map(|p| ConfigError {
                message: p.message,
                ..at(p.file, p.line)
            }),
    );
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(errors);
    }
    let warnings = ttl_warnings(&records, &entries)
        .into_iter()
        .map(|(f, line, message)| ConfigError {
            message,
            ..at(f, line)
        })
        .collect();
    Ok(LoadedZone {
        origin,
        file: file.to_path_buf(),
        records,
        warnings,
        stamps,
        replayed,
    })
}

/// The records of a zone as served, and where each was written. The same
/// record written twice is one record (RFC 2181 §5), as NSD and Knot load
/// it; names compare without case, in rdata too (`CNAME www` and `CNAME
/// WWW` are one record).
fn dedup(zone: &zonefile::Zone) -> (Vec<Record>, Vec<Entry>) {
    // The keys borrow the records they stand for: owned copies of every
    // owner and rdata cost more than the zone itself while it loads.
    let mut seen: HashSet<Written<'_>, Fast> =
        HashSet::with_capacity_and_hasher(zone.records.len(), Fast::default());
    let mut records = Vec::with_capacity(zone.records.len());
    let mut entries = Vec::with_capacity(zone.records.len());
    for zr in &zone.records {
        let r = &zr.record;
        if !seen.insert(Written(r)) {
            continue;
        }
        let record = records::to_hickory(r);
        entries.push(Entry {
            line: zr.line,
            file: zr.file,
            owner: record.name.clone(),
            rtype: record.record_type(),
            target: zonefile::rdata_target(r.rtype, &r.rdata)
                .filter(|_| matches!(record.record_type(), RecordType::CNAME | RecordType::DNAME))
                .map(|t| records::name(&t)),
        });
        records.push(record);
    }
    (records, entries)
}

/// A record as written, compared as served: its owner without case, its
/// type, and its rdata with the case of the name dnsd reads in it folded (a
/// wire-form name's length octets are all below `A`, so folding the name's
/// octets folds only its letters); other rdata compares as octets.
struct Written<'z>(&'z zonefile::Record);

impl Written<'_> {
    /// The rdata as compared.
    fn rdata(&self) -> impl Iterator<Item = u8> + '_ {
        let name_at = match RecordType::from(self.0.rtype) {
            RecordType::NS | RecordType::CNAME | RecordType::PTR | RecordType::DNAME => 0,
            // After the preference; after priority, weight and port.
            RecordType::MX => 2,
            RecordType::SRV => 6,
            _ => usize::MAX,
        };
        self.0.rdata.iter().enumerate().map(move |(i, &b)| {
            if i >= name_at {
                b.to_ascii_lowercase()
            } else {
                b
            }
        })
    }
}

impl PartialEq for Written<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.rtype == other.0.rtype
            && self
                .0
                .owner
                .wire()
                .eq_ignore_ascii_case(other.0.owner.wire())
            && self.0.rdata.len() == other.0.rdata.len()
            && self.rdata().eq(other.rdata())
    }
}

impl Eq for Written<'_> {}

impl Hash for Written<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.rtype.hash(state);
        // A wire-form owner ends with its root label: no length needed.
        for b in self.0.owner.wire() {
            state.write_u8(b.to_ascii_lowercase());
        }
        state.write_usize(self.0.rdata.len());
        for b in self.rdata() {
            state.write_u8(b);
        }
    }
}

/// Semantic checks NSD and Knot make before serving a zone (the rules on
/// what may share a name are `name_rules`'). Each problem names the file
/// and line of the record it is about, when there is one.
pub(crate) fn check_zone(
    origin: &Name,
    records: &[Record],
    entries: &[Entry],
) -> Vec<(Option<(usize, usize)>, String)> {
    let mut problems = Vec::new();
    for (r, e) in records.iter().zip(entries) {
        let place = Some((e.file, e.line));
        let name = &r.name;
        if !origin.zone_of(name) {
            problems.push((
                place,
                format!("{name} is outside the zone {origin} (a missing trailing dot?)"),
            ));
            continue;
        }
        if r.dns_class != DNSClass::IN {
            problems.push((
                place,
                format!("{name}: class {} is not served, only IN", r.dns_class),
            ));
        }
        if r.record_type() == RecordType::SOA && name != origin {
            problems.push((
                place,
                format!("{name}: an SOA record belongs only at the zone apex {origin}"),
            ));
        }
    }
    let at_apex = |rtype| {
        records
            .iter()
            .filter(move |r| r.record_type() == rtype && r.name == *origin)
    };
    match at_apex(RecordType::SOA).count() {
        0 => problems.push((
            None,
            format!("the zone has no SOA record at its apex {origin}"),
        )),
        1 => {}
        _ => {
            let second = records
                .iter()
                .zip(entries)
                .filter(|(r, _)| r.record_type() == RecordType::SOA && r.name == *origin)
                .nth(1)
                .map(|(_, e)| (e.file, e.line));
            problems.push((
                second,
                format!("{origin}: a second SOA record; a zone has exactly one"),
            ));
        }
    }
    if at_apex(RecordType::NS).next().is_none() {
        problems.push((
            None,
            format!("the zone has no NS records at its apex {origin}"),
        ));
    }
    problems
}

/// RRsets whose records carry different TTLs: each is served with the
/// lowest (RFC 2181 §5.2), reported at its first record with another TTL.
fn ttl_warnings(records: &[Record], entries: &[Entry]) -> Vec<(usize, usize, String)> {
    // Two passes, so that a zone of many such RRsets costs linear time:
    // each RRset's first and lowest TTL, then a warning at the first record
    // that differs. Names hash and compare without case; the keys borrow.
    let mut ttls: HashMap<(&Name, RecordType), (u32, u32), Fast> =
        HashMap::with_capacity_and_hasher(records.len(), Fast::default());
    for r in records {
        ttls.entry((&r.name, r.record_type()))
            .and_modify(|(_, lowest)| *lowest = (*lowest).min(r.ttl))
            .or_insert((r.ttl, r.ttl));
    }
    let mut reported: HashSet<(&Name, RecordType), Fast> = HashSet::default();
    let mut warnings = Vec::new();
    for (r, e) in records.iter().zip(entries) {
        let key = (&r.name, r.record_type());
        let Some(&(first, lowest)) = ttls.get(&key) else {
            continue;
        };
        if first != r.ttl && reported.insert(key) {
            warnings.push((
                e.file,
                e.line,
                format!(
                    "{} {}: the records of one RRset carry different TTLs ({first} and {}); \
                     all are served with the lowest, {lowest} (RFC 2181 §5.2)",
                    r.name,
                    r.record_type(),
                    r.ttl
                ),
            ));
        }
    }
    warnings
}

/// Replaces each service's A/AAAA RRsets in the zone that contains it. A
/// service of a broken zone is left to that zone: it is not served, and
/// whether it fits the zone cannot be told.
fn apply_services(
    toml: &Path,
    services: &[Service],
    zones: &mut [LoadedZone],
    broken: &[BrokenZone],
    errors: &mut Vec<ConfigError>,
) {
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
        let conflict = zone.records.iter().find_map(|r| {
            let delegated =
                r.record_type() == RecordType::NS && r.name != zone.origin && r.name.zone_of(&name);
            if delegated {
                Some(format!("it is delegated away at {}", r.name))
            } else if r.record_type() == RecordType::CNAME && r.name == name {
                Some("the zone gives it a CNAME".to_string())
            } else if r.record_type() == RecordType::DNAME
                && r.name != name
                && r.name.zone_of(&name)
            {
                Some(format!(
                    "it is below the DNAME at {}, where no name may exist",
                    r.name
                ))
            } else {
                None
            }
        });
        if let Some(why) = conflict {
            errors.push(fail(format!(
                "service {name} cannot be served from {}: {why}",
                zone.file.display()
            )));
            continue;
        }
        zone.records.retain(|r| {
            !(r.name == name && matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        });
        for address in &service.addresses {
            let data = match address {
                std::net::IpAddr::V4(v4) => RData::A(A(*v4)),
                std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            zone.records
                .push(Record::from_rdata(name.clone(), service.ttl, data));
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
            .records
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
            .records
            .iter()
            .filter(|r| r.record_type() == RecordType::DNAME)
            .collect();
        assert_eq!(dname.len(), 1);
        assert_eq!(dname[0].ttl, 60);
        assert_eq!(
            crate::zone::dname::target(dname[0]).map(|n| n.to_string()),
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
