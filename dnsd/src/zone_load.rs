//! Reading a workspace into checked DNS data: every zone file parsed with
//! hickory-proto's RFC 1035 parser and checked the way NSD and Knot check a
//! zone, then the `[[service]]` shorthands of `dnsd.toml` applied on top.
//! The parser merges RRsets and does not read DNAME, so each file is first
//! scanned as text (`zone_scan`): DNAME entries are read through a stand-in
//! type (`dname`), and the rules on what may share a name are checked on
//! the entries as written (`name_rules`).
//!
//! Every problem is reported, each with its file, its line where it has one,
//! and what is wrong, so that one `dnsd check` shows an operator all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cutover_workspace::{ConfigError, ConfigErrors, DnsdConfig, Service, Workspace, ZoneFile};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;

use crate::{dname, name_rules, zone_scan};

/// One zone, parsed and checked.
#[derive(Debug)]
pub struct LoadedZone {
    /// The zone's apex, from the file name (`zones/<origin>.zone`).
    pub origin: Name,
    pub file: PathBuf,
    /// Every record of the zone, in file order within each RRset; each keeps
    /// its own TTL.
    pub records: Vec<Record>,
}

/// A whole workspace, parsed and checked: what a snapshot is built from.
#[derive(Debug)]
pub struct LoadedWorkspace {
    pub config: DnsdConfig,
    pub zones: Vec<LoadedZone>,
}

impl LoadedWorkspace {
    pub fn record_count(&self) -> usize {
        self.zones.iter().map(|z| z.records.len()).sum()
    }
}

/// Reads, parses and checks the workspace at `root`.
pub fn load(root: &Path) -> Result<LoadedWorkspace, ConfigErrors> {
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
    for file in &files {
        match load_zone(file) {
            Ok(zone) => zones.push(zone),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if let Some(config) = &config {
        // A service outside every zone is only meaningful to report when
        // every zone loaded: a broken zone file would make it look misplaced.
        if errors.is_empty() {
            apply_services(&ws.dnsd_path(), &config.services, &mut zones, &mut errors);
        }
        if zones.is_empty() && errors.is_empty() {
            errors.push(ConfigError::file(
                &ws.zones_dir(),
                "no zone files: dnsd serves zones/<origin>.zone, e.g. zones/example.test.zone",
            ));
        }
    }
    match config {
        Some(config) if errors.is_empty() => Ok(LoadedWorkspace { config, zones }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn error_at(file: &Path, line: Option<usize>, message: impl Into<String>) -> ConfigError {
    let mut e = ConfigError::file(file, message);
    e.line = line;
    e
}

type ParsedZone = BTreeMap<RrKey, RecordSet>;

fn parse(text: &str, file: &Path, origin: &Name) -> Result<ParsedZone, String> {
    Parser::new(text, Some(file.to_path_buf()), Some(origin.clone()))
        .parse()
        .map(|(_, records)| records)
        .map_err(|e| e.to_string())
}

/// Parses zone-file text relative to `origin` into records, in no
/// particular order; DNAME records included.
pub fn parse_records(text: &str, origin: &Name) -> Result<Vec<Record>, String> {
    let scan = zone_scan::scan(text, origin);
    if let Some(e) = dname::own_anames(&scan.entries).next() {
        return Err(aname_refused(e));
    }
    let text = dname::rename_for_parser(text, &scan.entries);
    let mut records: Vec<Record> = parse(&text, Path::new("-"), origin)
        .map(|zone| zone.into_values().flat_map(|set| set.into_iter()).collect())?;
    dname::restore(&mut records);
    Ok(records)
}

fn aname_refused(e: &zone_scan::Entry) -> String {
    format!(
        "{}: ANAME is not a standard record type and is not served \
         (neither NSD nor Knot loads it); use a CNAME below the apex, or A/AAAA records",
        e.owner
    )
}

/// Reads and checks one zone file as written, without the services.
pub fn load_zone(zf: &ZoneFile) -> Result<LoadedZone, Vec<ConfigError>> {
    let file = zf.path.as_path();
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![ConfigError::file(file, format!("cannot read: {e}"))])?;
    let origin = Name::from_ascii(&zf.origin).map_err(|e| {
        vec![ConfigError::file(
            file,
            format!("the file name does not give a valid zone origin: {e}"),
        )]
    })?;
    let scan = zone_scan::scan(&text, &origin);
    let anames: Vec<ConfigError> = dname::own_anames(&scan.entries)
        .map(|e| error_at(file, Some(e.line), aname_refused(e)))
        .collect();
    if !anames.is_empty() {
        return Err(anames);
    }
    // Same length and lines as the file: offsets and lines found in one
    // hold in the other.
    let original = text;
    let text = dname::rename_for_parser(&original, &scan.entries);
    let entries = Entries::split(&text);
    let parsed = match parse(&text, file, &origin) {
        Ok(parsed) => parsed,
        Err(message) => {
            // The parser reports what is wrong but not where: find the first
            // entry whose inclusion makes the file fail to parse.
            let entry = entries.first_where(&text, |prefix| parse(prefix, file, &origin).is_err());
            let line = entry.and_then(|i| entries.lines.get(i).copied());
            let message = if scan.includes && message.contains("DNAME") {
                format!(
                    "{message} (DNAME records are read from the zone file itself, \
                     not from $INCLUDEd files)"
                )
            } else {
                message
            };
            let message = match entry.map(|i| entries.quote(&original, i)) {
                Some(quoted) if !quoted.is_empty() => format!("{message} (in `{quoted}`)"),
                _ => message,
            };
            return Err(vec![error_at(file, line, message)]);
        }
    };
    let mut problems = check_zone(&origin, &parsed);
    if scan.includes {
        problems.extend(included_cname_conflicts(&parsed, &scan.entries));
    }
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(key, message)| {
            let line = key.as_ref().and_then(|key| {
                entries.first_line_where(&text, |prefix| {
                    parse(prefix, file, &origin).map_or(true, |p| p.contains_key(key))
                })
            });
            error_at(file, line, message)
        })
        .collect();
    errors.extend(
        name_rules::check(&origin, &scan.entries)
            .into_iter()
            .map(|p| error_at(file, Some(p.line), p.message)),
    );
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let mut records: Vec<Record> = parsed
        .into_values()
        .flat_map(|set| set.into_iter())
        .collect();
    dname::restore(&mut records);
    Ok(LoadedZone {
        origin,
        file: file.to_path_buf(),
        records,
    })
}

/// Semantic checks NSD and Knot make before serving a zone, on the parsed
/// RRsets (the rules on what may share a name are `name_rules`'). Each
/// problem names the RRset it is about, so that its line can be found.
fn check_zone(origin: &Name, zone: &ParsedZone) -> Vec<(Option<RrKey>, String)> {
    let mut problems = Vec::new();
    for (key, set) in zone {
        let name = set.name();
        if !origin.zone_of(name) {
            problems.push((
                Some(key.clone()),
                format!("{name} is outside the zone {origin} (a missing trailing dot?)"),
            ));
            continue;
        }
        if set.dns_class() != DNSClass::IN {
            problems.push((
                Some(key.clone()),
                format!("{name}: class {} is not served, only IN", set.dns_class()),
            ));
        }
        match set.record_type() {
            RecordType::SOA if name != origin => problems.push((
                Some(key.clone()),
                format!("{name}: an SOA record belongs only at the zone apex {origin}"),
            )),
            _ => {}
        }
    }
    let apex = |rtype| zone.contains_key(&RrKey::new(origin.into(), rtype));
    if !apex(RecordType::SOA) {
        problems.push((
            None,
            format!("the zone has no SOA record at its apex {origin}"),
        ));
    }
    if !apex(RecordType::NS) {
        problems.push((
            None,
            format!("the zone has no NS records at its apex {origin}"),
        ));
    }
    problems
}

/// A CNAME beside other data where one side comes from an `$INCLUDE`d
/// file, which `name_rules` does not see (the scan reads one file): found
/// on the merged RRsets instead, so it cannot say which of two CNAMEs, only
/// that the name has a CNAME and other data.
fn included_cname_conflicts(
    zone: &ParsedZone,
    entries: &[zone_scan::Entry],
) -> Vec<(Option<RrKey>, String)> {
    let in_file: std::collections::HashSet<RrKey> = entries
        .iter()
        .map(|e| {
            // DNAME entries are parsed as the stand-in type.
            let rtype = match e.rtype {
                RecordType::DNAME => RecordType::ANAME,
                t => t,
            };
            RrKey::new((&e.owner).into(), rtype)
        })
        .collect();
    let mut problems = Vec::new();
    for (key, set) in zone {
        if set.record_type() != RecordType::CNAME {
            continue;
        }
        let others: Vec<&RrKey> = zone
            .keys()
            .filter(|k| {
                k.name == key.name
                    && !matches!(
                        k.record_type,
                        RecordType::CNAME
                            | RecordType::RRSIG
                            | RecordType::NSEC
                            | RecordType::NSEC3
                    )
            })
            .collect();
        let from_include = !in_file.contains(key) || others.iter().any(|k| !in_file.contains(*k));
        if !others.is_empty() && from_include {
            let types: Vec<String> = others
                .iter()
                .map(|k| match k.record_type {
                    RecordType::ANAME => "DNAME".to_string(),
                    t => t.to_string(),
                })
                .collect();
            problems.push((
                Some(key.clone()),
                format!(
                    "{}: CNAME and other data at the same name ({}; some in an $INCLUDEd \
                     file): a CNAME must be alone at its name (RFC 1034 §3.6.2)",
                    set.name(),
                    types.join(", ")
                ),
            ));
        }
    }
    problems
}

/// Replaces each service's A/AAAA RRsets in the zone that contains it.
fn apply_services(
    toml: &Path,
    services: &[Service],
    zones: &mut [LoadedZone],
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

/// The logical entries of a zone file (one per line, or several lines
/// joined by parentheses), as byte offsets where each ends and the line
/// where each starts.
struct Entries {
    ends: Vec<usize>,
    lines: Vec<usize>,
}

impl Entries {
    fn split(text: &str) -> Self {
        let mut ends = Vec::new();
        let mut lines = vec![1];
        let (mut line, mut depth) = (1usize, 0usize);
        let (mut quoted, mut escaped, mut comment) = (false, false, false);
        for (i, c) in text.char_indices() {
            if escaped {
                escaped = false;
            } else if comment {
                comment = c != '\n';
            } else if quoted {
                match c {
                    '\\' => escaped = true,
                    '"' => quoted = false,
                    _ => {}
                }
            } else {
                match c {
                    '\\' => escaped = true,
                    '"' => quoted = true,
                    ';' => comment = true,
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            if c == '\n' {
                line += 1;
                if depth == 0 && !quoted {
                    comment = false;
                    ends.push(i + 1);
                    lines.push(line);
                }
            }
        }
        ends.push(text.len());
        Self { ends, lines }
    }

    /// The index of the first entry `e` such that `fails(text up to e)`,
    /// found by bisection: a prefix that fails keeps failing as it grows.
    fn first_where(&self, text: &str, mut fails: impl FnMut(&str) -> bool) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.ends.len());
        if !fails(text) {
            return None;
        }
        // Invariant: the first `hi` entries fail to parse, the first `lo` do not.
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if fails(&text[..self.ends[mid - 1]]) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi - 1)
    }

    fn first_line_where(&self, text: &str, fails: impl FnMut(&str) -> bool) -> Option<usize> {
        self.first_where(text, fails)
            .and_then(|i| self.lines.get(i).copied())
    }

    /// The first line of entry `i`, trimmed and shortened, to quote it.
    fn quote<'t>(&self, text: &'t str, i: usize) -> &'t str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let entry = text.get(start..self.ends[i]).unwrap_or("");
        let line = entry
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        match line.char_indices().nth(80) {
            Some((cut, _)) => &line[..cut],
            None => line,
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
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(7), "{err}");
        assert!(err.0[0].file.ends_with("zones/example.test.zone"));
    }

    #[test]
    fn a_bad_address_inside_parentheses_names_the_first_line_of_its_entry() {
        let zone = format!("{GOOD}txt IN TXT ( \"a\"\n \"b\" )\nbad IN A 198.18.0.300\n");
        let dir = workspace(&zone, "");
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.0[0].line, Some(9), "{err}");
    }

    #[test]
    fn semantic_errors_name_their_lines() {
        let zone = format!("{GOOD}www IN CNAME ns1\nother.test. IN A 198.18.0.7\n");
        let dir = workspace(&zone, "");
        let err = load(dir.path()).unwrap_err();
        let mut lines: Vec<_> = err.0.iter().map(|e| e.line).collect();
        lines.sort();
        assert_eq!(lines, [Some(7), Some(8)], "{err}");
    }

    #[test]
    fn a_zone_without_soa_or_ns_is_refused() {
        let dir = workspace("$TTL 60\nwww IN A 198.18.0.1\n", "");
        let err = load(dir.path()).unwrap_err().to_string();
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
        let err = load(dir.path()).unwrap_err();
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
            crate::dname::target(dname[0]).map(|n| n.to_string()),
            Some("target.example.test.".to_string())
        );
        let zone = format!("{GOOD}x IN CNAME www\nx IN CNAME ns1\n");
        let dir = workspace(&zone, "");
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(8), "{err}");
        assert!(err.to_string().contains("multiple CNAMEs"), "{err}");
    }

    #[test]
    fn a_dname_in_an_included_file_is_explained() {
        let dir = workspace(&format!("{GOOD}$INCLUDE more.inc\n"), "");
        std::fs::write(dir.path().join("zones/more.inc"), "dn IN DNAME www\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not from $INCLUDEd files"), "{err}");
    }

    #[test]
    fn a_service_below_a_dname_is_refused() {
        let zone = format!("{GOOD}old IN DNAME www\n");
        let toml = "[[service]]\nname = \"api.old.example.test\"\naddresses = [\"198.18.0.3\"]\nttl = 30\n";
        let dir = workspace(&zone, toml);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("below the DNAME at old.example.test."),
            "{err}"
        );
    }

    #[test]
    fn a_cname_beside_data_from_an_included_file_is_refused_once() {
        let dir = workspace(&format!("{GOOD}x IN CNAME www\n$INCLUDE more.inc\n"), "");
        std::fs::write(dir.path().join("zones/more.inc"), "x IN A 198.18.0.9\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.to_string().contains("CNAME and other data"), "{err}");
        // Both in the file itself: reported by the text rules alone.
        let zone = format!("{GOOD}x IN CNAME www\nx IN A 198.18.0.9\n$INCLUDE more.inc\n");
        let dir = workspace(&zone, "");
        std::fs::write(dir.path().join("zones/more.inc"), "y IN A 198.18.0.9\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(8), "{err}");
    }
}
