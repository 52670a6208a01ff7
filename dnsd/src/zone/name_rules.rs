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

use hickory_proto::rr::{Name, RecordType};

use crate::zone::name_key::{self, NameKey};

type Hasher = foldhash::fast::RandomState;

/// One record of a zone as written: where, its owner and type, and the
/// target of a CNAME or DNAME.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The line the record's entry starts on (1-based); 0 for a record
    /// that is not in a file (a change checked at its names), whose
    /// problems then cite no line.
    pub line: usize,
    /// Which file of the zone (the zone file, or an `$INCLUDE`d one).
    pub file: usize,
    pub owner: Name,
    pub rtype: RecordType,
    pub target: Option<Name>,
}

/// One broken rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub file: usize,
    pub message: String,
}

/// The first entries of each kind seen at one name.
#[derive(Default)]
struct AtName<'e> {
    cname: Option<&'e Entry>,
    dname: Option<&'e Entry>,
    ns: Option<&'e Entry>,
    /// The first entry of a type that may not stand beside a CNAME.
    other: Option<&'e Entry>,
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

/// Checks the entries of one zone file whose apex is `origin`.
pub fn check(origin: &Name, entries: &[Entry]) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Keyed by lower-cased wire form: ancestors are suffixes (`name_key`).
    let mut names: HashMap<Box<[u8]>, AtName<'_>, Hasher> = HashMap::default();
    for e in entries {
        let Some(key) = NameKey::new(&e.owner) else {
            continue;
        };
        let at = names.entry(Box::from(key.as_bytes())).or_default();
        let owner = &e.owner;
        match e.rtype {
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
        if !may_share_with_cname(e.rtype) && at.other.is_none() {
            at.other = Some(e);
        }

        // A CNAME beside other data, reported once at the later entry.
        if !at.reported
            && let (Some(cname), Some(other)) = (at.cname, at.other)
            && (std::ptr::eq(e, cname) || std::ptr::eq(e, other))
        {
            at.reported = true;
            let message = if owner == origin {
                format!(
                    "{owner}: CNAME at the zone apex{}, beside its SOA and NS records: a \
                     CNAME must be alone at its name (RFC 1034 §3.6.2)",
                    at_line(cname)
                )
            } else if other.rtype == RecordType::DNAME {
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
                    on_line(other.rtype, other)
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
            && owner != origin
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

    // Names below a DNAME, once per name.
    let dnames: HashMap<&[u8], &Entry, Hasher> = names
        .iter()
        .filter_map(|(key, at)| at.dname.map(|d| (key.as_ref(), d)))
        .collect();
    if !dnames.is_empty() {
        for (key, at) in &names {
            let Some(first) = first_entry(at) else {
                continue;
            };
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
                            first.owner,
                            dname.owner,
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

/// Records `e`, of a type a name has at most one of (CNAME, DNAME), in
/// `slot`: a second one to another target breaks the rule `rfc` states;
/// the same record twice is one record (RFC 2181 §5).
fn at_most_one<'e>(slot: &mut Option<&'e Entry>, e: &'e Entry, rfc: &str) -> Option<Problem> {
    let Some(first) = *slot else {
        *slot = Some(e);
        return None;
    };
    if matches!((&first.target, &e.target), (Some(x), Some(y)) if x == y) {
        return None;
    }
    let (owner, rtype) = (&e.owner, e.rtype);
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

/// `what`, and the line of entry `e` if it has one: "CNAME on line 6".
/// Entries checked outside a file (a change at a few names) have line 0.
fn on_line(what: impl std::fmt::Display, e: &Entry) -> String {
    match e.line {
        0 => what.to_string(),
        line => format!("{what} on line {line}"),
    }
}

/// " (line 6)" for entry `e`, or nothing when it has no line.
fn at_line(e: &Entry) -> String {
    match e.line {
        0 => String::new(),
        line => format!(" (line {line})"),
    }
}

/// The earliest entry recorded at a name.
fn first_entry<'e>(at: &AtName<'e>) -> Option<&'e Entry> {
    [at.cname, at.dname, at.ns, at.other]
        .into_iter()
        .flatten()
        .min_by_key(|e| e.line)
}

fn target_text(e: &Entry) -> String {
    e.target
        .as_ref()
        .map(|t| format!(" to {t}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of a zone file's text, as the loader makes them.
    fn scan(text: &str, origin: &Name) -> Vec<Entry> {
        let origin = crate::zone::records::zone_name(origin);
        let zone = zonefile::read(
            text.as_bytes(),
            std::path::Path::new("t"),
            &origin,
            &mut zonefile::NoIncludes,
        )
        .unwrap();
        zone.records
            .iter()
            .map(|r| Entry {
                line: r.line,
                file: r.file,
                owner: crate::zone::records::name(&r.record.owner),
                rtype: RecordType::from(r.record.rtype),
                target: zonefile::rdata_target(r.record.rtype, &r.record.rdata)
                    .filter(|_| {
                        matches!(
                            RecordType::from(r.record.rtype),
                            RecordType::CNAME | RecordType::DNAME
                        )
                    })
                    .map(|t| crate::zone::records::name(&t)),
            })
            .collect()
    }

    const HEAD: &str = "$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 198.18.0.53
";

    fn problems(tail: &str) -> Vec<(usize, String)> {
        let origin = Name::from_ascii("example.test.").unwrap();
        let text = format!("{HEAD}{tail}");
        check(&origin, &scan(&text, &origin))
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
        let mut entries = scan(&text, &origin);
        for e in &mut entries {
            e.line = 0;
        }
        let messages: Vec<String> = check(&origin, &entries)
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
        assert_eq!(check(&origin, &scan(text, &origin)), []);
        let p = problems("@ IN DNAME other.test.\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 4, "ns1 is below the apex DNAME");
    }
}
