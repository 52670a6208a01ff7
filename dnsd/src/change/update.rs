//! RFC 2136 dynamic update semantics as pure functions over record lists:
//! which names an update may touch, its prerequisites (§2.4, §3.2), the
//! prescan of its update section (§3.4.1) and applying it (§3.4.2). The
//! transaction around them (authentication, locking, committing, serving)
//! is `update_handler`'s.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

pub use crate::zone::serial_newer;

/// The zone an update is for, as far as these rules need it.
pub struct Zone<'a> {
    pub origin: &'a Name,
    /// Origins of other served zones inside this one: their names belong
    /// to them, not to this zone.
    pub children: &'a [Name],
}

impl Zone<'_> {
    /// Whether `name` belongs to this zone (its closest enclosing zone).
    pub fn owns(&self, name: &Name) -> bool {
        self.origin.zone_of(name) && !self.children.iter().any(|c| c.zone_of(name))
    }
}

/// RFC 2136 §3.2: every prerequisite holds in `records` (the zone as it is
/// served now), or the first that fails gives the response code.
pub fn check_prerequisites(
    zone: &Zone<'_>,
    records: &[Record],
    prerequisites: &[Record],
) -> Result<(), ResponseCode> {
    // Value-dependent prerequisites, gathered into RRsets first (§3.2.3).
    let mut wanted: Vec<&Record> = Vec::new();
    for p in prerequisites {
        if p.ttl != 0 {
            return Err(ResponseCode::FormErr);
        }
        if !zone.owns(&p.name) {
            return Err(ResponseCode::NotZone);
        }
        let empty = matches!(p.data, RData::Update0(_));
        let rtype = p.record_type();
        match p.dns_class {
            DNSClass::ANY | DNSClass::NONE if !empty => return Err(ResponseCode::FormErr),
            DNSClass::ANY if rtype == RecordType::ANY => {
                if !name_in_use(records, &p.name) {
                    return Err(ResponseCode::NXDomain);
                }
            }
            DNSClass::ANY => {
                if !rrset(records, &p.name, rtype).any(|_| true) {
                    return Err(ResponseCode::NXRRSet);
                }
            }
            DNSClass::NONE if rtype == RecordType::ANY => {
                if name_in_use(records, &p.name) {
                    return Err(ResponseCode::YXDomain);
                }
            }
            DNSClass::NONE => {
                if rrset(records, &p.name, rtype).any(|_| true) {
                    return Err(ResponseCode::YXRRSet);
                }
            }
            DNSClass::IN if !empty && rtype != RecordType::ANY => wanted.push(p),
            _ => return Err(ResponseCode::FormErr),
        }
    }
    // Each gathered RRset must equal the zone's exactly (TTLs aside).
    for p in &wanted {
        let expected: Vec<&RData> = wanted
            .iter()
            .filter(|q| q.name == p.name && q.record_type() == p.record_type())
            .map(|q| &q.data)
            .collect();
        let actual: Vec<&RData> = rrset(records, &p.name, p.record_type())
            .map(|r| &r.data)
            .collect();
        let same = expected.iter().all(|d| actual.contains(d))
            && actual.iter().all(|d| expected.contains(d));
        if !same {
            return Err(ResponseCode::NXRRSet);
        }
    }
    Ok(())
}

/// RFC 2136 §3.4.1: the update section is well formed and inside the zone.
pub fn prescan(zone: &Zone<'_>, updates: &[Record]) -> Result<(), ResponseCode> {
    for u in updates {
        if !zone.owns(&u.name) {
            return Err(ResponseCode::NotZone);
        }
        let rtype = u.record_type();
        // ANY is a meta type too, but a delete names it on purpose.
        let meta = zonefile::is_meta(u16::from(rtype)) && rtype != RecordType::ANY;
        let empty = matches!(u.data, RData::Update0(_));
        // Data to add must be what a zone file could hold: an EUI48 of five
        // octets is a malformed request, not a server failure.
        let fits = || {
            crate::zone::records::rdata_wire(&u.data)
                .is_some_and(|wire| zonefile::rdata_fits(u16::from(rtype), &wire))
        };
        let ok = match u.dns_class {
            DNSClass::IN => !meta && rtype != RecordType::ANY && !empty && fits(),
            DNSClass::ANY => !meta && u.ttl == 0 && empty,
            DNSClass::NONE => !meta && rtype != RecordType::ANY && u.ttl == 0 && !empty,
            _ => false,
        };
        if !ok {
            return Err(ResponseCode::FormErr);
        }
    }
    Ok(())
}

/// The first update (by its owner) that would change the A/AAAA records
/// of a name that `is_service` says dnsd.toml manages.
pub fn touches_service(updates: &[Record], is_service: impl Fn(&Name) -> bool) -> Option<&Record> {
    updates.iter().find(|u| {
        matches!(
            u.record_type(),
            RecordType::A | RecordType::AAAA | RecordType::ANY
        ) && is_service(&u.name)
    })
}

/// What applying an update did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The update set a newer SOA itself: its serial is not bumped.
    pub soa_replaced: bool,
}

/// RFC 2136 §3.4.2: applies `updates` (already prescanned) to `records`,
/// in order. Updates the RFC says to ignore are skipped silently: deleting
/// the apex SOA or NS RRset or its last NS record, an SOA whose serial is
/// not newer, a CNAME added beside other data or other data beside a
/// CNAME. An added SOA, CNAME or DNAME replaces the one there. An added record takes over the TTL of its whole RRset, so that
/// an RRset keeps one TTL (RFC 2181 §5.2).
pub fn apply(zone: &Zone<'_>, records: &mut Vec<Record>, updates: &[Record]) -> Applied {
    let apex = zone.origin;
    let mut applied = Applied::default();
    for u in updates {
        let rtype = u.record_type();
        match u.dns_class {
            DNSClass::IN => {
                let at_name = |r: &&Record| r.name == u.name;
                let has_cname = records
                    .iter()
                    .filter(at_name)
                    .any(|r| r.record_type() == RecordType::CNAME);
                let has_other = records
                    .iter()
                    .filter(at_name)
                    .any(|r| r.record_type() != RecordType::CNAME);
                if (rtype == RecordType::CNAME && has_other)
                    || (rtype != RecordType::CNAME && has_cname)
                {
                    continue;
                }
                let mut add = u.clone();
                add.dns_class = DNSClass::IN;
                if rtype == RecordType::SOA {
                    let current = records
                        .iter()
                        .find(|r| r.name == u.name && r.record_type() == RecordType::SOA)
                        .and_then(|r| match &r.data {
                            RData::SOA(soa) => Some(soa.serial),
                            _ => None,
                        });
                    let newer = match (&u.data, current) {
                        (RData::SOA(new), Some(old)) => serial_newer(new.serial, old),
                        _ => false,
                    };
                    if !newer {
                        continue;
                    }
                    applied.soa_replaced = true;
                }
                if matches!(
                    rtype,
                    RecordType::SOA | RecordType::CNAME | RecordType::DNAME
                ) {
                    // One record per RRset (RFC 6672 §2.4 for DNAME): the
                    // new one replaces it.
                    records.retain(|r| !(r.name == u.name && r.record_type() == rtype));
                } else {
                    records.retain(|r| {
                        !(r.name == u.name && r.record_type() == rtype && r.data == u.data)
                    });
                }
                for r in records.iter_mut() {
                    if r.name == u.name && r.record_type() == rtype {
                        r.ttl = u.ttl;
                    }
                }
                records.push(add);
            }
            DNSClass::ANY if rtype == RecordType::ANY => {
                let at_apex = u.name == *apex;
                records.retain(|r| {
                    r.name != u.name
                        || (at_apex && matches!(r.record_type(), RecordType::SOA | RecordType::NS))
                });
            }
            DNSClass::ANY => {
                if u.name == *apex && matches!(rtype, RecordType::SOA | RecordType::NS) {
                    continue;
                }
                records.retain(|r| !(r.name == u.name && r.record_type() == rtype));
            }
            DNSClass::NONE => {
                if rtype == RecordType::SOA {
                    continue;
                }
                if rtype == RecordType::NS && u.name == *apex {
                    let others = records
                        .iter()
                        .filter(|r| r.name == u.name && r.record_type() == RecordType::NS)
                        .filter(|r| r.data != u.data)
                        .count();
                    if others == 0 {
                        continue;
                    }
                }
                records.retain(|r| {
                    !(r.name == u.name && r.record_type() == rtype && r.data == u.data)
                });
            }
            // The prescan let no other class through.
            _ => {}
        }
    }
    applied
}

/// Whether any record is owned by `name` (an empty non-terminal is not in
/// use, RFC 2136 §2.4.4).
fn name_in_use(records: &[Record], name: &Name) -> bool {
    records.iter().any(|r| r.name == *name)
}

fn rrset<'r>(
    records: &'r [Record],
    name: &'r Name,
    rtype: RecordType,
) -> impl Iterator<Item = &'r Record> + 'r {
    records
        .iter()
        .filter(move |r| r.name == *name && r.record_type() == rtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::zone_edit;
    use crate::zone;
    use crate::zone::serial_newer;

    const ZONE: &str = "$TTL 300
@ IN SOA ns1 hostmaster 10 3600 600 86400 60
  IN NS ns1
  IN NS ns2
ns1 IN A 198.18.0.53
ns2 IN A 198.18.0.54
www 60 IN A 198.18.0.1
www 60 IN A 198.18.0.2
alias IN CNAME www
";

    fn origin() -> Name {
        Name::from_ascii("example.test.").unwrap()
    }

    fn zone_records() -> Vec<Record> {
        zone::parse_records(ZONE, &origin()).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// A record in update form: `class` IN with rdata from text, or
    /// ANY/NONE with rdata text (or none, for RDLENGTH 0).
    fn rr(owner: &str, class: DNSClass, ttl: u32, rtype: RecordType, data: Option<&str>) -> Record {
        let mut r = match data {
            Some(text) => {
                let line = format!("{owner} {ttl} IN {rtype} {text}\n");
                zone::parse_records(&line, &origin()).unwrap().remove(0)
            }
            None => {
                let mut r = Record::update0(name(owner), ttl, rtype);
                r.ttl = ttl;
                r
            }
        };
        r.dns_class = class;
        r.ttl = ttl;
        r
    }

    fn check(prereqs: &[Record]) -> Result<(), ResponseCode> {
        let origin = origin();
        let zone = Zone {
            origin: &origin,
            children: &[],
        };
        check_prerequisites(&zone, &zone_records(), prereqs)
    }

    #[test]
    fn rrset_exists_value_independent() {
        let www_a = rr("www.example.test.", DNSClass::ANY, 0, RecordType::A, None);
        assert_eq!(check(&[www_a]), Ok(()));
        let www_txt = rr("www.example.test.", DNSClass::ANY, 0, RecordType::TXT, None);
        assert_eq!(check(&[www_txt]), Err(ResponseCode::NXRRSet));
    }

    #[test]
    fn rrset_exists_value_dependent_needs_the_whole_set() {
        let one = rr(
            "www.example.test.",
            DNSClass::IN,
            0,
            RecordType::A,
            Some("198.18.0.1"),
        );
        let two = rr(
            "www.example.test.",
            DNSClass::IN,
            0,
            RecordType::A,
            Some("198.18.0.2"),
        );
        assert_eq!(check(&[one.clone(), two.clone()]), Ok(()));
        assert_eq!(
            check(std::slice::from_ref(&one)),
            Err(ResponseCode::NXRRSet)
        );
        let other = rr(
            "www.example.test.",
            DNSClass::IN,
            0,
            RecordType::A,
            Some("198.18.0.9"),
        );
        assert_eq!(check(&[one, two, other]), Err(ResponseCode::NXRRSet));
    }

    #[test]
    fn rrset_does_not_exist() {
        let www_a = rr("www.example.test.", DNSClass::NONE, 0, RecordType::A, None);
        assert_eq!(check(&[www_a]), Err(ResponseCode::YXRRSet));
        let new = rr("new.example.test.", DNSClass::NONE, 0, RecordType::A, None);
        assert_eq!(check(&[new]), Ok(()));
    }

    #[test]
    fn name_in_use_and_not_in_use() {
        let used = rr(
            "alias.example.test.",
            DNSClass::ANY,
            0,
            RecordType::ANY,
            None,
        );
        assert_eq!(check(&[used]), Ok(()));
        let unused = rr(
            "nope.example.test.",
            DNSClass::ANY,
            0,
            RecordType::ANY,
            None,
        );
        assert_eq!(check(&[unused]), Err(ResponseCode::NXDomain));
        let taken = rr(
            "www.example.test.",
            DNSClass::NONE,
            0,
            RecordType::ANY,
            None,
        );
        assert_eq!(check(&[taken]), Err(ResponseCode::YXDomain));
    }

    #[test]
    fn malformed_or_foreign_prerequisites() {
        let ttl = rr("www.example.test.", DNSClass::ANY, 5, RecordType::A, None);
        assert_eq!(check(&[ttl]), Err(ResponseCode::FormErr));
        let outside = rr("www.other.test.", DNSClass::ANY, 0, RecordType::A, None);
        assert_eq!(check(&[outside]), Err(ResponseCode::NotZone));
        let with_data = rr(
            "www.example.test.",
            DNSClass::ANY,
            0,
            RecordType::A,
            Some("198.18.0.1"),
        );
        assert_eq!(check(&[with_data]), Err(ResponseCode::FormErr));
    }

    #[test]
    fn a_child_zone_owns_its_names() {
        let origin = origin();
        let children = [name("sub.example.test.")];
        let zone = Zone {
            origin: &origin,
            children: &children,
        };
        let add = rr(
            "a.sub.example.test.",
            DNSClass::IN,
            60,
            RecordType::A,
            Some("198.18.0.3"),
        );
        assert_eq!(prescan(&zone, &[add]), Err(ResponseCode::NotZone));
        let add = rr(
            "a.example.test.",
            DNSClass::IN,
            60,
            RecordType::A,
            Some("198.18.0.3"),
        );
        assert_eq!(prescan(&zone, &[add]), Ok(()));
    }

    #[test]
    fn the_prescan_refuses_what_rfc_2136_calls_formerr() {
        let origin = origin();
        let zone = Zone {
            origin: &origin,
            children: &[],
        };
        let delete_with_ttl = rr("www.example.test.", DNSClass::ANY, 60, RecordType::A, None);
        assert_eq!(
            prescan(&zone, &[delete_with_ttl]),
            Err(ResponseCode::FormErr)
        );
        let add_any = rr("www.example.test.", DNSClass::IN, 60, RecordType::ANY, None);
        assert_eq!(prescan(&zone, &[add_any]), Err(ResponseCode::FormErr));
        let add_empty = rr("www.example.test.", DNSClass::IN, 60, RecordType::A, None);
        assert_eq!(prescan(&zone, &[add_empty]), Err(ResponseCode::FormErr));
        let chaos = rr("www.example.test.", DNSClass::CH, 0, RecordType::A, None);
        assert_eq!(prescan(&zone, &[chaos]), Err(ResponseCode::FormErr));
    }

    fn applied(updates: &[Record]) -> (Vec<String>, Applied) {
        let origin = origin();
        let zone = Zone {
            origin: &origin,
            children: &[],
        };
        let mut records = zone_records();
        assert_eq!(prescan(&zone, updates), Ok(()));
        let a = apply(&zone, &mut records, updates);
        (zone_edit::lines(&records), a)
    }

    fn has(lines: &[String], line: &str) -> bool {
        lines.iter().any(|l| l == line)
    }

    #[test]
    fn adding_a_record_joins_its_rrset_with_the_new_ttl() {
        let add = rr(
            "www.example.test.",
            DNSClass::IN,
            30,
            RecordType::A,
            Some("198.18.0.3"),
        );
        let (lines, a) = applied(&[add]);
        assert!(!a.soa_replaced);
        for ip in ["198.18.0.1", "198.18.0.2", "198.18.0.3"] {
            assert!(
                has(&lines, &format!("www.example.test. 30 IN A {ip}")),
                "{lines:#?}"
            );
        }
    }

    #[test]
    fn adding_an_existing_record_only_sets_its_ttl() {
        let add = rr(
            "www.example.test.",
            DNSClass::IN,
            60,
            RecordType::A,
            Some("198.18.0.1"),
        );
        let (lines, _) = applied(&[add]);
        assert_eq!(lines, zone_edit::lines(&zone_records()));
    }

    #[test]
    fn deleting_an_rrset_a_name_and_one_record() {
        let rrset = rr("www.example.test.", DNSClass::ANY, 0, RecordType::A, None);
        let (lines, _) = applied(&[rrset]);
        assert!(!lines.iter().any(|l| l.starts_with("www.")), "{lines:#?}");

        let name = rr(
            "alias.example.test.",
            DNSClass::ANY,
            0,
            RecordType::ANY,
            None,
        );
        let (lines, _) = applied(&[name]);
        assert!(!lines.iter().any(|l| l.starts_with("alias.")), "{lines:#?}");

        let one = rr(
            "www.example.test.",
            DNSClass::NONE,
            0,
            RecordType::A,
            Some("198.18.0.1"),
        );
        let (lines, _) = applied(&[one]);
        assert!(!has(&lines, "www.example.test. 60 IN A 198.18.0.1"));
        assert!(has(&lines, "www.example.test. 60 IN A 198.18.0.2"));
    }

    #[test]
    fn the_apex_soa_and_ns_survive_deletes() {
        let before = zone_edit::lines(&zone_records());
        let updates = [
            rr("example.test.", DNSClass::ANY, 0, RecordType::SOA, None),
            rr("example.test.", DNSClass::ANY, 0, RecordType::NS, None),
            rr(
                "example.test.",
                DNSClass::NONE,
                0,
                RecordType::SOA,
                Some("ns1 hostmaster 10 3600 600 86400 60"),
            ),
        ];
        assert_eq!(applied(&updates).0, before);
        // Everything at the apex but SOA and NS goes with a name delete.
        let all = rr("example.test.", DNSClass::ANY, 0, RecordType::ANY, None);
        assert_eq!(applied(&[all]).0, before);
        // One NS may go, the last may not.
        let ns1 = rr(
            "example.test.",
            DNSClass::NONE,
            0,
            RecordType::NS,
            Some("ns1"),
        );
        let ns2 = rr(
            "example.test.",
            DNSClass::NONE,
            0,
            RecordType::NS,
            Some("ns2"),
        );
        let (lines, _) = applied(&[ns1, ns2]);
        assert!(
            !has(&lines, "example.test. 300 IN NS ns1.example.test."),
            "{lines:#?}"
        );
        assert!(
            has(&lines, "example.test. 300 IN NS ns2.example.test."),
            "{lines:#?}"
        );
    }

    #[test]
    fn an_soa_replaces_only_with_a_newer_serial() {
        let older = rr(
            "example.test.",
            DNSClass::IN,
            300,
            RecordType::SOA,
            Some("ns1 hostmaster 9 1 1 1 1"),
        );
        let (lines, a) = applied(&[older]);
        assert!(!a.soa_replaced);
        assert_eq!(lines, zone_edit::lines(&zone_records()));
        let newer = rr(
            "example.test.",
            DNSClass::IN,
            300,
            RecordType::SOA,
            Some("ns1 hostmaster 20 1 1 1 1"),
        );
        let (lines, a) = applied(&[newer]);
        assert!(a.soa_replaced);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("SOA") && l.contains(" 20 1 1 1 1")),
            "{lines:#?}"
        );
        assert!(serial_newer(0, u32::MAX));
        assert!(!serial_newer(u32::MAX, 0));
    }

    #[test]
    fn cname_conflicts_are_ignored() {
        let before = zone_edit::lines(&zone_records());
        let a_at_alias = rr(
            "alias.example.test.",
            DNSClass::IN,
            60,
            RecordType::A,
            Some("198.18.0.5"),
        );
        let cname_at_www = rr(
            "www.example.test.",
            DNSClass::IN,
            60,
            RecordType::CNAME,
            Some("ns1"),
        );
        assert_eq!(applied(&[a_at_alias, cname_at_www]).0, before);
        let new_target = rr(
            "alias.example.test.",
            DNSClass::IN,
            60,
            RecordType::CNAME,
            Some("ns2"),
        );
        let (lines, _) = applied(&[new_target]);
        assert!(
            has(&lines, "alias.example.test. 60 IN CNAME ns2.example.test."),
            "{lines:#?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("CNAME ns1") || l.contains("CNAME www"))
        );
    }

    #[test]
    fn a_new_dname_replaces_the_one_at_its_name() {
        let dname = |target: &str| {
            let mut r = rr(
                "www.example.test.",
                DNSClass::IN,
                60,
                RecordType::A,
                Some("198.18.0.9"),
            );
            r.name = name("old.example.test.");
            r.data = crate::zone::dname::rdata(&name(target)).unwrap();
            r
        };
        let (lines, _) = applied(&[dname("a.test."), dname("b.test.")]);
        let dnames: Vec<_> = lines.iter().filter(|l| l.contains("DNAME")).collect();
        assert_eq!(dnames.len(), 1, "{lines:#?}");
        assert!(dnames[0].contains("b.test."), "{lines:#?}");
    }

    #[test]
    fn service_addresses_are_recognised() {
        let services = [name("www.example.test.")];
        let is_service = |n: &Name| services.contains(n);
        let txt = rr(
            "www.example.test.",
            DNSClass::IN,
            60,
            RecordType::TXT,
            Some("\"x\""),
        );
        assert!(touches_service(std::slice::from_ref(&txt), is_service).is_none());
        let a = rr(
            "WWW.example.test.",
            DNSClass::NONE,
            0,
            RecordType::A,
            Some("198.18.0.1"),
        );
        assert!(touches_service(&[txt, a], is_service).is_some());
        let any = rr("www.example.test.", DNSClass::ANY, 0, RecordType::ANY, None);
        assert!(touches_service(&[any], is_service).is_some());
    }
}
