//! The rules on what may share a name, checked on a zone's records as
//! written, each with its file and line, so that each problem has its line. NSD and
//! Knot DNS refuse to load a zone that breaks one; dnsd refuses it too:
//!
//! - a CNAME is alone at its name (RFC 1034 §3.6.2, RFC 2181 §10.1), except
//!   for the DNSSEC records RRSIG, NSEC and NSEC3, and so never at the apex;
//! - a name has at most one CNAME and at most one DNAME (RFC 6672 §2.4);
//!   the same record twice is one record (RFC 2181 §5);
//! - no name exists below a DNAME (RFC 6672 §2.3);
//! - a DNAME and NS records share a name only at the apex (RFC 6672 §2.3;
//!   Knot refuses it, NSD loads it and lets the delegation win).
//!
//! A problem is reported on the line of the entry that breaks the rule —
//! the later of two conflicting entries, as NSD reports it — and names the
//! other's line.

use std::collections::HashMap;

use hickory_proto::rr::RecordType;
use zonefile::ZoneRecord;

use crate::zone::checks;
use crate::zone::name_key::{self, Keys};

type Hasher = foldhash::fast::RandomState;

/// One broken rule: where (line 0 for a record that is not in a file — a
/// change checked at its names — whose problems then cite no line), and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub file: usize,
    pub message: String,
}

/// The first records of each kind seen at one name.
#[derive(Default)]
struct AtName<'e> {
    cname: Option<&'e ZoneRecord>,
    dname: Option<&'e ZoneRecord>,
    ns: Option<&'e ZoneRecord>,
    /// The first record of a type that may not stand beside a CNAME.
    other: Option<&'e ZoneRecord>,
    /// Already reported for a CNAME beside other data (once per name).
    reported: bool,
}

/// Types allowed beside a CNAME: the DNSSEC records of the name itself.
fn may_share_with_cname(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::CNAME | RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3
    )
}

fn rtype(e: &ZoneRecord) -> RecordType {
    RecordType::from(e.record.rtype)
}

/// Checks the records of one zone whose apex has key `apex`, grouped by
/// owner (`checks::group`; `keys` their owners' keys).
pub fn check(apex: &[u8], records: &[ZoneRecord], keys: &Keys) -> Vec<Problem> {
    let mut problems = Vec::new();
    // The owners of DNAMEs, and the first record of each name.
    let mut dnames: HashMap<&[u8], &ZoneRecord, Hasher> = HashMap::default();
    let mut firsts: Vec<(&[u8], &ZoneRecord)> = Vec::new();
    for name in checks::names(keys) {
        let key = keys.get(name.start);
        let at = check_name(key == apex, &records[name], &mut problems);
        if let Some(dname) = at.dname {
            dnames.insert(key, dname);
        }
        if let Some(first) = [at.cname, at.dname, at.ns, at.other]
            .into_iter()
            .flatten()
            .min_by_key(|e| e.line)
        {
            firsts.push((key, first));
        }
    }
    // Names below a DNAME, once per name.
    if !dnames.is_empty() {
        for (key, first) in firsts {
            let mut ancestor = name_key::parent(key);
            while let Some(k) = ancestor {
                ancestor = name_key::parent(k);
                if let Some(dname) = dnames.get(k) {
                    problems.push(Problem {
                        line: first.line,
                        file: first.file,
                        message: format!(
                            "{}: data below the DNAME at {}{}: no name may exist below a \
                             DNAME (RFC 6672 §2.3)",
                            first.record.owner,
                            dname.record.owner,
                            at_line(dname)
                        ),
                    });
                    break;
                }
            }
        }
    }
    problems.sort_by_key(|p| p.line);
    problems
}

/// Checks the records of one name, in the order read, reporting each
/// problem at the later of the records that break a rule.
fn check_name<'e>(
    is_apex: bool,
    records: &'e [ZoneRecord],
    problems: &mut Vec<Problem>,
) -> AtName<'e> {
    let mut at = AtName::default();
    for e in records {
        let owner = &e.record.owner;
        match rtype(e) {
            RecordType::CNAME => {
                problems.extend(at_most_one(&mut at.cname, e, "RFC 1034 §3.6.2"));
            }
            RecordType::DNAME => {
                problems.extend(at_most_one(&mut at.dname, e, "RFC 6672 §2.4"));
            }
            RecordType::NS => {
                at.ns.get_or_insert(e);
            }
            _ => {}
        }
        if !may_share_with_cname(rtype(e)) && at.other.is_none() {
            at.other = Some(e);
        }

        // A CNAME beside other data, reported once at the later record.
        if !at.reported
            && let (Some(cname), Some(other)) = (at.cname, at.other)
            && (std::ptr::eq(e, cname) || std::ptr::eq(e, other))
        {
            at.reported = true;
            let message = if is_apex {
                format!(
                    "{owner}: CNAME at the zone apex{}, beside its SOA and NS records: a \
                     CNAME must be alone at its name (RFC 1034 §3.6.2)",
                    at_line(cname)
                )
            } else if rtype(other) == RecordType::DNAME {
                format!(
                    "{owner}: DNAME and CNAME at the same name ({}, {}): a DNAME never \
                     shares its name with a CNAME (RFC 6672 §2.4)",
                    on_line("CNAME", cname),
                    on_line("DNAME", other)
                )
            } else {
                format!(
                    "{owner}: CNAME and other data at the same name ({}, {}): a CNAME must \
                     be alone at its name (RFC 1034 §3.6.2, RFC 2181 §10.1)",
                    on_line("CNAME", cname),
                    on_line(rtype(other), other)
                )
            };
            problems.push(Problem {
                line: e.line,
                file: e.file,
                message,
            });
        }

        if let (Some(dname), Some(ns)) = (at.dname, at.ns)
            && (std::ptr::eq(e, dname) || std::ptr::eq(e, ns))
            && !is_apex
        {
            problems.push(Problem {
                line: e.line,
                file: e.file,
                message: format!(
                    "{owner}: DNAME and NS at the same name ({}, {}): below the apex a \
                     DNAME cannot share its name with a delegation (RFC 6672 §2.3)",
                    on_line("DNAME", dname),
                    on_line("NS", ns)
                ),
            });
        }
    }
    at
}

/// Records `e`, of a type a name has at most one of (CNAME, DNAME), in
/// `slot`: a second one to another target breaks the rule `rfc` states;
/// the same record twice is one record (RFC 2181 §5).
fn at_most_one<'e>(
    slot: &mut Option<&'e ZoneRecord>,
    e: &'e ZoneRecord,
    rfc: &str,
) -> Option<Problem> {
    let Some(first) = *slot else {
        *slot = Some(e);
        return None;
    };
    if matches!((target(first), target(e)), (Some(x), Some(y)) if x.wire().eq_ignore_ascii_case(y.wire()))
    {
        return None;
    }
    let (owner, rtype) = (&e.record.owner, rtype(e));
    Some(Problem {
        line: e.line,
        file: e.file,
        message: format!(
            "{owner}: multiple {rtype}s at the same name (this one{}, {}): a name has at \
             most one {rtype} ({rfc})",
            target_text(e),
            on_line("another", first)
        ),
    })
}

/// `what`, and the line of record `e` if it has one: "CNAME on line 6".
fn on_line(what: impl std::fmt::Display, e: &ZoneRecord) -> String {
    match e.line {
        0 => what.to_string(),
        line => format!("{what} on line {line}"),
    }
}

/// " (line 6)" for record `e`, or nothing when it has no line.
fn at_line(e: &ZoneRecord) -> String {
    match e.line {
        0 => String::new(),
        line => format!(" (line {line})"),
    }
}

/// The target of a CNAME or DNAME record.
fn target(e: &ZoneRecord) -> Option<zonefile::Name> {
    zonefile::rdata_target(e.record.rtype, &e.record.rdata)
}

fn target_text(e: &ZoneRecord) -> String {
    target(e).map(|t| format!(" to {t}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use hickory_proto::rr::Name;

    /// The records of a zone file's text, grouped as the loader groups
    /// them, and their problems.
    fn check_text(text: &str, origin: &Name, no_lines: bool) -> Vec<Problem> {
        let origin = crate::zone::records::zone_name(origin);
        let mut zone = zonefile::read(
            text.as_bytes(),
            std::path::Path::new("t"),
            &origin,
            &mut zonefile::NoIncludes,
        )
        .unwrap();
        if no_lines {
            for r in &mut zone.records {
                r.line = 0;
            }
        }
        let keys = checks::group(&mut zone.records);
        let apex = crate::zone::name_key::NameKey::from_wire(origin.wire()).unwrap();
        check(apex.as_bytes(), &zone.records, &keys)
    }

    const HEAD: &str = "$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 198.18.0.53
";

    fn problems(tail: &str) -> Vec<(usize, String)> {
        let origin = Name::from_ascii("example.test.").unwrap();
        let text = format!("{HEAD}{tail}");
        check_text(&text, &origin, false)
            .into_iter()
            .map(|p| (p.line, p.message))
            .collect()
    }

    #[test]
    fn entries_without_a_line_are_cited_without_one() {
        let origin = Name::from_ascii("example.test.").unwrap();
        let text = format!(
            "{HEAD}a IN CNAME b\na IN A 198.18.0.1\nd IN DNAME e.test.\nx.d IN A 198.18.0.2\n"
        );
        let messages: Vec<String> = check_text(&text, &origin, true)
            .into_iter()
            .map(|p| p.message)
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("CNAME and other data at the same name (CNAME, A)")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("data below the DNAME at d.example.test.: no name")),
            "{messages:?}"
        );
        assert!(!messages.iter().any(|m| m.contains("line")), "{messages:?}");
    }

    #[test]
    fn a_good_zone_breaks_no_rule() {
        let tail = "www IN A 198.18.0.1
alias IN CNAME www
alias IN CNAME WWW.example.test.
dn IN DNAME elsewhere.test.
dn IN A 198.18.0.2
dn IN DNAME elsewhere.test.
";
        assert_eq!(problems(tail), []);
    }

    #[test]
    fn two_cnames_at_one_name_are_refused_on_the_second_line() {
        let p = problems("x IN CNAME a\nfoo IN A 198.18.0.1\nX IN CNAME b\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 7);
        assert!(p[0].1.contains("X.example.test.: multiple CNAMEs"), "{p:?}");
        assert!(
            p[0].1
                .contains("this one to b.example.test., another on line 5"),
            "{p:?}"
        );
        assert!(p[0].1.contains("line 5"), "{p:?}");
    }

    #[test]
    fn a_cname_beside_other_data_is_refused_once_on_the_later_line() {
        let p = problems("y IN A 198.18.0.1\ny IN CNAME a\ny IN TXT \"t\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 6);
        assert!(
            p[0].1
                .contains("CNAME and other data at the same name (CNAME on line 6, A on line 5)")
        );
        let p = problems("y IN CNAME a\n  IN MX 10 mail\n");
        assert_eq!(p[0].0, 6, "{p:?}");
    }

    #[test]
    fn a_cname_at_the_apex_conflicts_with_the_soa() {
        let p = problems("@ IN CNAME elsewhere.test.\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 5);
        assert!(p[0].1.contains("CNAME at the zone apex"), "{p:?}");
    }

    #[test]
    fn dname_rules_match_nsd_and_knot() {
        let p = problems("d IN DNAME t\nx.d IN A 198.18.0.1\n*.d IN TXT \"w\"\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .all(|(_, m)| m.contains("data below the DNAME at d.example.test. (line 5)"))
        );
        assert_eq!(p[0].0, 6);
        let p = problems("e IN DNAME t\ne IN DNAME u\n");
        assert!(p[0].1.contains("multiple DNAMEs"), "{p:?}");
        let p = problems("e IN DNAME t\ne IN CNAME t\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].1
                .contains("DNAME and CNAME at the same name (CNAME on line 6, DNAME on line 5)"),
            "{p:?}"
        );
        let p = problems("g IN NS ns.elsewhere.test.\ng IN DNAME t\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 6);
        assert!(p[0].1.contains("DNAME and NS at the same name"), "{p:?}");
    }

    #[test]
    fn a_dname_at_the_apex_is_fine_alone_but_nothing_may_be_below_it() {
        let origin = Name::from_ascii("example.test.").unwrap();
        let text = "@ IN SOA ns1.other.test. h.other.test. 1 2 3 4 5\n\
                    @ IN NS ns1.other.test.\n@ IN DNAME other.test.\n";
        assert_eq!(check_text(text, &origin, false), []);
        let p = problems("@ IN DNAME other.test.\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 4, "ns1 is below the apex DNAME");
    }
}
