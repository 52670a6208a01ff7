//! dnsd answers like NSD and Knot DNS: the three servers serve the same zone
//! file (`tests/data/example.test.zone`) and are asked the same corpus of
//! queries, and every answer is compared structurally (dig parses them).
//!
//! What must match (issue 3): the rcode, the opcode, the header flags, the
//! question as asked (case preserved), the answer section, and the authority
//! and additional sections of everything that is not a positive answer
//! (negative answers, referrals, errors), and the OPT record (version,
//! payload size, flags, options).
//!
//! What is normalised, and why:
//! - the order of records inside a section (an RRset has no order; dnsd
//!   rotates);
//! - a positive answer may carry the zone's NS set in the authority section
//!   and its addresses in the additional section (NSD) or not (Knot); if
//!   present it must be exactly the apex NS set. The rest of the additional
//!   section of a positive answer (MX/SRV targets) is optional data: a
//!   difference there is reported as a note, not a failure. A positive
//!   answer that ends in a referral (a CNAME into a delegation) is compared
//!   in full, like a referral;
//! - EDNS Client Subnet: neither peer implements it, dnsd echoes it with
//!   scope 0. An echoed ECS option must carry the query's subnet with scope
//!   0; a missing echo is a note;
//! - Extended DNS Errors: NSD and Knot add them to some refusals (NSD also to
//!   a wrong class, Knot not); a difference is a note;
//! - ANY (RFC 8482): NSD and Knot each answer with one RRset of the name, but
//!   not the same one (at the apex NSD picks the SOA, Knot the A). An ANY
//!   answer must therefore be exactly one complete RRset that exists at the
//!   name (checked against NSD's answer for that type); header and the other
//!   sections compare as usual;
//! - opcodes other than QUERY: both peers say NOTIMP, but NSD drops the
//!   question and OPT while Knot echoes them. The peers are compared on
//!   opcode, rcode and flags; dnsd must match one of them exactly;
//! - a CNAME into another zone the server serves: NSD follows it, Knot
//!   does not. Compared like the opcodes: dnsd must match one of them;
//! - DNAME (RFC 6672) where the peers disagree, dnsd answers as NSD does:
//!   a rewritten name too long for the protocol is YXDOMAIN with the DNAME
//!   and an empty authority section (RFC 6672 §2.2; Knot says NXDOMAIN with
//!   the SOA), and a DNAME loop stops at the first repeated name, or after
//!   one rewrite when a DNAME's target is below its own owner (Knot follows
//!   either for several rounds). Those cases are compared with NSD only.
//!
//! Answers at the edges (issue 9), asked over UDP with a 1232-byte buffer,
//! without EDNS, with a 512-byte buffer, and over TCP:
//! - truncation keeps the CNAME chain (RFC 2181 §9): both peers send the
//!   RRsets that fit, whole, with TC, and nothing after them. Where the
//!   CNAMEs fit but a negative answer's SOA does not, NSD sets TC and Knot
//!   leaves the SOA out without it; dnsd answers as NSD (a resolver cannot
//!   cache a negative answer without its SOA, RFC 2308 §5): `LikeNsd`;
//! - a referral that cannot carry the glue of its in-domain name servers:
//!   Knot sets TC (RFC 9471 §3) and fills the additional section name server
//!   by name server, NSD 4.6 sends it without TC and fills it by type (every
//!   A first); dnsd answers as Knot, which follows the RFC: `LikeKnot`.
//!   Sibling glue is optional for both, and compared strictly;
//! - the addresses of MX, SRV and NS targets covered by a wildcard are
//!   additional data both peers add (RFC 1034 §4.3.2 step 6): for those
//!   questions the additional section of a positive answer is compared
//!   strictly, less NSD's apex NS addresses (`StrictAdditional`);
//! - an RRset whose records carry different TTLs: NSD serves each record's
//!   own TTL, Knot the TTL of the last one in the file; dnsd serves the
//!   lowest, which RFC 2181 §5.2 tells a client to use. `LowestTtl`: every
//!   section is compared with NSD's TTLs lowered to the lowest of their
//!   RRset, and with Knot's TTLs set aside;
//! - AXFR over UDP is NOTIMP from both; IXFR over UDP is NOTAUTH from both
//!   for a name that is not a served zone, and at the apex REFUSED (NSD,
//!   RFC 5936 §2.2.1's policy refusal) or NOTAUTH (Knot): dnsd says REFUSED
//!   there (`LikeNsd`).

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::thread;

use anyhow::{Context, Result};
use cutover_tests::bins;
use cutover_tests::dig::{self, Edns, Message, Query, Record, Reply};
use cutover_tests::dns_peers::{self, DnsServer, Implementation, ServerOptions, TEST_ORIGIN};

/// How the answers to one query are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Strict,
    /// RFC 8482: one complete RRset of the name, any one.
    MinimalAny,
    /// Peers differ in the sections; compare the header, and dnsd must equal
    /// one of them.
    EitherPeer,
    /// Peers differ in everything (DNAME corner cases, a negative answer
    /// truncated before its SOA, IXFR at the apex): dnsd must equal NSD.
    LikeNsd,
    /// Peers differ (a referral without room for its in-domain glue): dnsd
    /// must equal Knot.
    LikeKnot,
    /// Like `Strict`, and the additional section of a positive answer is
    /// compared too, less NSD's optional apex NS addresses.
    StrictAdditional,
    /// RRsets with mixed TTLs: like `StrictAdditional`, with NSD's TTLs
    /// lowered to the lowest of each RRset and Knot's set aside.
    LowestTtl,
}

struct Case {
    query: Query,
    rule: Rule,
}

/// Questions asked in every transport variant (UDP with EDNS, UDP without,
/// TCP with EDNS). Names are relative to example.test.
const QUESTIONS: &[(&str, &str)] = &[
    // The apex: positive answers, NODATA (DS, CAA, AAAA), ANY.
    ("@", "SOA"),
    ("@", "NS"),
    ("@", "A"),
    ("@", "AAAA"),
    ("@", "MX"),
    ("@", "TXT"),
    ("@", "DS"),
    ("@", "CAA"),
    ("@", "ANY"),
    // Name servers and mail hosts.
    ("ns1", "A"),
    ("ns1", "AAAA"),
    ("ns2", "AAAA"),
    ("mail", "A"),
    ("host-mx", "MX"),
    // Several A and AAAA records on one name; NODATA beside them.
    ("www", "A"),
    ("www", "AAAA"),
    ("www", "TXT"),
    ("www", "CNAME"),
    ("www", "ANY"),
    ("www", "TYPE65280"),
    ("www", "RRSIG"),
    ("@", "DNSKEY"),
    ("api", "A"),
    ("static", "A"),
    ("static", "TXT"),
    ("v6only", "A"),
    ("v6only", "AAAA"),
    // CNAME chains: inside the zone, to a missing name, out of the zone,
    // into a delegation, onto a wildcard; the CNAME itself; ANY at a CNAME.
    ("alias", "A"),
    ("alias", "AAAA"),
    ("alias", "TXT"),
    ("alias", "CNAME"),
    ("alias", "ANY"),
    ("chain1", "A"),
    ("chain1", "AAAA"),
    ("chain2", "MX"),
    ("chain3", "TXT"),
    ("dangling", "A"),
    ("dangling2", "TXT"),
    ("outside", "A"),
    ("to-delegation", "A"),
    ("to-wild", "A"),
    ("to-wild", "AAAA"),
    // NXDOMAIN: plain, below an existing name, several labels deep.
    ("nope", "A"),
    ("nope.www", "A"),
    ("a.b.c.nope", "AAAA"),
    // Wildcards (RFC 4592).
    ("a.wild", "A"),
    ("a.wild", "TXT"),
    ("a.wild", "AAAA"),
    ("a.wild", "ANY"),
    ("b.c.wild", "A"),
    ("*.wild", "A"),
    ("*.wild", "MX"),
    ("wild", "A"),
    ("sub.wild", "A"),
    ("sub.wild", "TXT"),
    ("x.sub.wild", "A"),
    ("ent.wild", "A"),
    ("y.ent.wild", "A"),
    ("x.ent.wild", "A"),
    ("a.cwild", "A"),
    ("a.cwild", "AAAA"),
    ("a.cwild", "CNAME"),
    ("x.cwild-out", "A"),
    ("q.multi", "A"),
    ("q.multi", "AAAA"),
    ("q.multi", "TXT"),
    // Empty non-terminals and what is below them.
    ("deep", "A"),
    ("a.deep", "A"),
    ("b.a.deep", "TXT"),
    ("c.b.a.deep", "A"),
    ("c.b.a.deep", "TXT"),
    ("d.c.b.a.deep", "A"),
    ("zz.deep", "A"),
    ("_udp", "SRV"),
    ("_sip._udp", "SRV"),
    // Delegations: referrals without AA, with glue; DS answered by the parent.
    ("child", "NS"),
    ("child", "A"),
    ("child", "DS"),
    ("www.child", "A"),
    ("ns.child", "A"),
    ("ns.child", "AAAA"),
    ("a.b.child", "MX"),
    ("far", "NS"),
    ("x.far", "A"),
    ("far", "DS"),
    // Large RRsets: TC over UDP without EDNS, and past 1232 bytes.
    ("big", "A"),
    ("big", "AAAA"),
    ("bigtxt", "TXT"),
    // DNAME (RFC 6672): the owner answers for itself; a name below it gets
    // the DNAME, a synthesized CNAME and what the rewritten name has.
    ("dn", "A"),
    ("dn", "AAAA"),
    ("dn", "TXT"),
    ("dn", "DNAME"),
    ("dn", "CNAME"),
    ("dn", "ANY"),
    ("www.dn", "A"),
    ("www.dn", "AAAA"),
    ("www.dn", "CNAME"),
    ("www.dn", "DNAME"),
    ("nope.dn", "A"),
    ("a.b.dn", "TXT"),
    ("dtarget.dn", "A"),
    ("alias.dn", "A"),
    ("alias.dn", "AAAA"),
    ("mx.dn", "MX"),
    ("www.dn2", "A"),
    ("x.y.dn2", "A"),
    ("to-dn", "A"),
    ("to-dn", "TXT"),
    ("www.dn-out", "A"),
    ("a.b.dn-out", "AAAA"),
    ("dn-out", "DNAME"),
    ("www.dn-other", "A"),
    ("www.dn-child", "A"),
    ("ns.dn-child", "AAAA"),
    ("a.dn-wild", "TXT"),
    ("x.sub.dn-wild", "A"),
    ("a.wdn", "A"),
    ("a.wdn", "DNAME"),
    ("www.a.wdn", "A"),
    ("x.dd.far", "A"),
];

/// DNAME cases where NSD and Knot disagree (see the module comment): dnsd
/// answers as NSD does. Names relative to example.test.
const DNAME_LIKE_NSD: &[(&str, &str)] = &[
    (
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.dn-long",
        "A",
    ),
    (
        "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy.x.dn-long",
        "TXT",
    ),
    ("a.dn-self", "A"),
    ("x.dloop1", "A"),
    ("x.dloop2", "AAAA"),
];

/// Queries for names outside the served zone: REFUSED.
const OUTSIDE: &[(&str, &str)] = &[
    ("www.example.org.", "A"),
    ("test.", "SOA"),
    ("elsewhere.test.", "A"),
    (".", "NS"),
    ("xexample.test.", "A"),
];

/// Truncation keeps the CNAME chain (RFC 2181 §9): chains that end in an
/// RRset too big for 512 bytes (big, bigv6, the wildcard *.bigw, bigmx) or
/// for 1232 (bigtxt), a chain of long names of which only the first links
/// fit in 512 bytes, and a chain into a delegation whose NS set does not
/// fit. NSD and Knot agree on all of them.
const TRUNCATED_CHAINS: &[(&str, &str)] = &[
    ("tc-chain1", "A"),
    ("tc-chain2", "A"),
    ("tc-chain3", "A"),
    ("tc-chain4", "A"),
    ("TC-Chain1", "A"),
    ("tc-chain1", "AAAA"),
    ("tc-chain3", "CNAME"),
    ("tc-v6", "AAAA"),
    ("tc-v6", "A"),
    ("tc-txt", "TXT"),
    ("tc-txt2", "TXT"),
    ("tc-wild", "A"),
    ("x.tcw", "A"),
    ("Y.Z.TCW", "A"),
    ("x.tcw", "TXT"),
    ("tc-mx", "MX"),
    ("bigv6", "AAAA"),
    ("y.bigw", "A"),
    ("tc-long1", "A"),
    ("tc-long1", "TXT"),
    ("to-hugedel", "A"),
    ("x.hugedel", "A"),
    ("hugedel", "NS"),
];

/// Chains whose CNAMEs fit in 512 bytes but whose negative answer's SOA
/// does not: NSD truncates, Knot drops the SOA (module comment).
const TRUNCATED_NEGATIVE: &[(&str, &str)] = &[("tc-nx1", "A"), ("tc-nodata1", "A")];

/// Long names under wildcards: (wildcard parent, type); each is asked with
/// names of 245 to 255 octets.
const LONG_NAME_PARENTS: &[(&str, &str)] = &[
    ("lw", "A"),
    ("lw", "AAAA"),
    ("lw", "TXT"),
    ("lw", "MX"),
    ("lw", "SRV"),
    ("lwc", "A"),
    ("lwt", "TXT"),
    ("wild", "TXT"),
    ("multi", "AAAA"),
    ("bigw", "A"),
    ("nolw", "A"),
];

/// Names whose MX, SRV or NS targets a wildcard covers (or does not: a
/// wildcard CNAME, a name that exists, an empty non-terminal), and plain
/// in-zone targets next to them.
const WILDCARD_TARGETS: &[(&str, &str)] = &[
    ("mx-wild", "MX"),
    ("mx-wild2", "MX"),
    ("mx-wild-v4", "MX"),
    ("mx-wild-cname", "MX"),
    ("mx-wild-blocked", "MX"),
    ("a.wmx", "MX"),
    ("B.C.WMX", "MX"),
    ("_sip._tcp.srv-wild", "SRV"),
    ("srv-wild2", "SRV"),
    ("wdel", "NS"),
    ("x.wdel", "A"),
    ("wdel2", "A"),
    ("wdel2", "NS"),
    ("@", "MX"),
    ("host-mx", "MX"),
    ("_sip._udp", "SRV"),
];

/// Referrals with many name servers: (name, type, the largest buffer at
/// which the required glue does not fit, 0 if it always fits).
const BIG_REFERRALS: &[(&str, &str, u16)] = &[
    ("x.bigdel", "A", 1232),
    ("bigdel", "NS", 1232),
    ("a.b.bigdel", "MX", 1232),
    ("ns01.bigdel", "A", 1232),
    ("to-bigdel", "A", 1232),
    ("x.middel", "A", 512),
    ("middel", "NS", 512),
    ("to-middel", "A", 512),
    ("x.sibdel", "A", 0),
    ("sibdel", "NS", 0),
    ("bigdel", "DS", 0),
    ("middel", "DS", 0),
];

/// RRsets whose records carry different TTLs, on every answer path.
const MIXED_TTLS: &[(&str, &str)] = &[
    ("mttl", "A"),
    ("mttl", "AAAA"),
    ("mttl", "TXT"),
    ("mttl2", "A"),
    ("mttl3", "A"),
    ("Mttl3", "A"),
    ("x.mttlw", "A"),
    ("y.z.mttlw", "A"),
    ("mttldel", "NS"),
    ("x.mttldel", "A"),
    ("ns.mttldel", "A"),
    ("mttlmx", "MX"),
    ("to-mttl", "A"),
];

/// Zone transfers asked over UDP: (name, type, rule).
const TRANSFERS_OVER_UDP: &[(&str, &str, Rule)] = &[
    ("@", "AXFR", Rule::Strict),
    ("Example.Test.", "AXFR", Rule::Strict),
    ("www", "AXFR", Rule::Strict),
    ("child", "AXFR", Rule::Strict),
    ("nope", "AXFR", Rule::Strict),
    ("example.org.", "AXFR", Rule::Strict),
    ("@", "IXFR=2026112601", Rule::LikeNsd),
    ("@", "IXFR=1", Rule::LikeNsd),
    ("www", "IXFR=1", Rule::Strict),
    ("child", "IXFR=1", Rule::Strict),
    ("x.child", "IXFR=1", Rule::Strict),
    ("nope", "IXFR=1", Rule::Strict),
    ("a.wild", "IXFR=1", Rule::Strict),
    ("example.org.", "IXFR=1", Rule::Strict),
];

/// A name of exactly `octets` octets in wire form (root label included)
/// below `parent` (a name relative to example.test): labels of `label`
/// repeated, as long as they go (63), or one octet each when `short`.
fn long_name(octets: usize, parent: &str, label: char, short: bool) -> String {
    let parent = in_zone(parent);
    let mut extra = octets - (parent.len() + 1);
    let mut labels = Vec::new();
    while extra > 0 {
        let mut len = if short { 1 } else { (extra - 1).min(63) };
        // A label takes its length plus one; never leave one octet over.
        if extra - (len + 1) == 1 {
            len = if len > 1 { len - 1 } else { len + 1 };
        }
        labels.push(label.to_string().repeat(len));
        extra -= len + 1;
    }
    format!("{}.{parent}", labels.join("."))
}

/// The cases of issue 9's answer classes (module comment).
fn answer_edges() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut ask = |name: &str, qtype: &str, rule: Rule, cut: Rule, cut_at: u16| {
        cases.extend(over_four_transports(
            Query::new(&in_zone(name), qtype),
            rule,
            cut,
            cut_at,
        ));
    };
    for &(name, qtype) in TRUNCATED_CHAINS {
        ask(name, qtype, Rule::Strict, Rule::Strict, 512);
    }
    for &(name, qtype) in TRUNCATED_NEGATIVE {
        ask(name, qtype, Rule::Strict, Rule::LikeNsd, 512);
    }
    for &(parent, qtype) in LONG_NAME_PARENTS {
        for (octets, label, short) in [
            (245, 'k', false),
            (250, 'L', false),
            (253, 'm', false),
            (255, 'n', false),
            (247, 'q', true),
            (255, 'R', true),
        ] {
            let name = long_name(octets, parent, label, short);
            ask(&name, qtype, Rule::Strict, Rule::Strict, 512);
        }
    }
    for &(name, qtype) in WILDCARD_TARGETS {
        let rule = Rule::StrictAdditional;
        ask(name, qtype, rule, rule, 512);
    }
    for &(name, qtype, cut_at) in BIG_REFERRALS {
        ask(name, qtype, Rule::Strict, Rule::LikeKnot, cut_at);
    }
    for &(name, qtype) in MIXED_TTLS {
        ask(name, qtype, Rule::LowestTtl, Rule::LowestTtl, 512);
    }
    for &(name, qtype, rule) in TRANSFERS_OVER_UDP {
        let query = Query::new(&in_zone(name), qtype);
        for edns in [Edns::Payload(1232), Edns::Off, Edns::Payload(512)] {
            cases.push(Case {
                query: query.clone().edns(edns),
                rule,
            });
        }
    }
    cases
}

/// A name of the corpus: relative to the test zone, `@` its apex, or absolute.
fn in_zone(name: &str) -> String {
    match name {
        "@" => TEST_ORIGIN.to_string(),
        n if n.ends_with('.') => n.to_string(),
        n => format!("{n}.{TEST_ORIGIN}"),
    }
}

fn rule_for(qtype: &str) -> Rule {
    if qtype == "ANY" {
        Rule::MinimalAny
    } else {
        Rule::Strict
    }
}

/// `query` over UDP with EDNS, over UDP without and over TCP.
fn over_every_transport(query: Query, rule: Rule) -> [Case; 3] {
    [query.clone(), query.clone().edns(Edns::Off), query.tcp()].map(|query| Case { query, rule })
}

/// `query` over UDP and over TCP.
fn over_udp_and_tcp(query: Query, rule: Rule) -> [Case; 2] {
    [query.clone(), query.tcp()].map(|query| Case { query, rule })
}

/// `query` over UDP with EDNS (1232), without EDNS, with a 512-byte EDNS
/// buffer, and over TCP: under `cut` over UDP with a buffer of at most
/// `cut_at` bytes (where the answer does not fit), under `rule` otherwise.
fn over_four_transports(query: Query, rule: Rule, cut: Rule, cut_at: u16) -> [Case; 4] {
    let rule_at = |size: u16| if size <= cut_at { cut } else { rule };
    [
        Case {
            query: query.clone(),
            rule: rule_at(1232),
        },
        Case {
            query: query.clone().edns(Edns::Off),
            rule: rule_at(512),
        },
        Case {
            query: query.clone().edns(Edns::Payload(512)),
            rule: rule_at(512),
        },
        Case {
            query: query.tcp(),
            rule,
        },
    ]
}

/// The whole corpus: every question over UDP with and without EDNS and over
/// TCP, then the cases that only make sense once (case, ECS, payload sizes,
/// EDNS versions, DO, classes, opcodes).
fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let strict = |query: Query| Case {
        query,
        rule: Rule::Strict,
    };
    for &(name, qtype) in QUESTIONS.iter().chain(OUTSIDE) {
        let query = Query::new(&in_zone(name), qtype);
        cases.extend(over_every_transport(query, rule_for(qtype)));
    }
    for &(name, qtype) in DNAME_LIKE_NSD {
        let query = Query::new(&in_zone(name), qtype);
        cases.extend(over_every_transport(query, Rule::LikeNsd));
    }
    cases.extend(answer_edges());
    // ANY below a DNAME: both peers rewrite and follow it like any type
    // (one RRset at the end of the chain), so it is compared strictly.
    // Near 512 bytes NSD and Knot compress the long rewrite differently
    // (NSD sets TC without EDNS, Knot fits): that one only with EDNS/TCP.
    for (name, qtype) in [("www.dn", "ANY"), ("alias.dn", "ANY"), ("x.dn-long", "A")] {
        let base = Query::new(&in_zone(name), qtype);
        cases.extend(over_udp_and_tcp(base.clone(), Rule::Strict));
        if qtype == "ANY" {
            cases.push(strict(base.edns(Edns::Off)));
        }
    }
    // TCP without EDNS: the full answer even past 512 bytes.
    for (name, qtype) in [("big", "A"), ("bigtxt", "TXT"), ("www", "A"), ("nope", "A")] {
        cases.push(strict(
            Query::new(&in_zone(name), qtype).tcp().edns(Edns::Off),
        ));
    }
    // Names match case-insensitively; the question is echoed as asked.
    for (name, qtype) in [
        ("WwW.ExAmPlE.TeSt.", "A"),
        ("WWW.EXAMPLE.TEST.", "AAAA"),
        ("Example.Test.", "SOA"),
        ("example.TEST.", "NS"),
        ("A.WILD.example.test.", "A"),
        ("Q.Multi.Example.Test.", "AAAA"),
        ("ChAiN1.example.test.", "A"),
        ("Alias.Example.Test.", "A"),
        ("NoPe.Example.Test.", "A"),
        ("Deep.Example.Test.", "A"),
        ("CHILD.example.test.", "NS"),
        ("Www.Child.Example.Test.", "A"),
        ("Static.example.test.", "AAAA"),
        ("Dangling.Example.Test.", "A"),
        ("WWW.EXAMPLE.ORG.", "A"),
        ("WwW.Dn.ExAmPlE.TeSt.", "A"),
        ("A.Dn-Out.Example.Test.", "A"),
        ("To-Dn.Example.Test.", "A"),
        ("Nope.DN.example.test.", "A"),
        ("DN.Example.Test.", "DNAME"),
    ] {
        cases.extend(over_udp_and_tcp(Query::new(name, qtype), Rule::Strict));
    }
    // EDNS Client Subnet, over UDP and TCP, v4 and v6, positive and negative.
    for (name, qtype, subnet) in [
        ("www", "A", "198.18.1.0/24"),
        ("www", "AAAA", "2001:2::/48"),
        ("nope", "A", "198.18.1.0/24"),
        ("static", "AAAA", "198.18.1.0/24"),
        ("www.child", "A", "198.18.1.0/24"),
        ("a.wild", "A", "0.0.0.0/0"),
        ("q.multi", "AAAA", "::/0"),
    ] {
        let q = Query::new(&in_zone(name), qtype).subnet(subnet);
        cases.extend(over_udp_and_tcp(q, Rule::Strict));
    }
    // Payload sizes: TC when the answer does not fit, the OPT still there;
    // sizes below 512 count as 512; the server caps its payload at 1232.
    for (name, qtype, size) in [
        ("big", "A", 512),
        ("big", "A", 100),
        ("www", "A", 0),
        ("big", "A", 1232),
        ("big", "A", 4096),
        ("bigtxt", "TXT", 512),
        ("bigtxt", "TXT", 1232),
        ("bigtxt", "TXT", 4096),
        ("bigtxt", "TXT", 65535),
        ("www", "A", 512),
        ("nope", "A", 512),
        ("www.child", "A", 512),
    ] {
        cases.push(strict(
            Query::new(&in_zone(name), qtype).edns(Edns::Payload(size)),
        ));
    }
    // An unknown EDNS version: BADVERS, over UDP and TCP.
    for (name, qtype) in [("www", "A"), ("nope", "A"), ("www.example.org.", "A")] {
        let q = Query::new(&in_zone(name), qtype).edns(Edns::Version(1));
        cases.extend(over_udp_and_tcp(q, Rule::Strict));
    }
    // The DO bit on an unsigned zone: echoed, no DNSSEC records.
    for (name, qtype) in [
        ("www", "A"),
        ("nope", "A"),
        ("static", "AAAA"),
        ("child", "NS"),
    ] {
        cases.push(strict(Query::new(&in_zone(name), qtype).dnssec()));
    }
    // Header bits: RD is echoed (and RA stays clear), AD and CD in a query
    // do not make an unsigned answer authenticated or checked.
    for (name, qtype, option) in [
        ("www", "A", "+rec"),
        ("nope", "A", "+rec"),
        ("www", "A", "+adflag"),
        ("www", "A", "+cdflag"),
        ("nope", "A", "+cdflag"),
        ("www.child", "A", "+cdflag"),
    ] {
        let q = Query::new(&in_zone(name), qtype).dig_option(option);
        cases.extend(over_udp_and_tcp(q, Rule::Strict));
    }
    // Unknown EDNS options, EDNS flag bits and the header's Z bit are
    // ignored, not echoed; nobody pads or announces keepalive unasked.
    // (A malformed ECS option is left out: dnsd may say FORMERR as RFC 7871
    // allows, while the peers, which do not implement ECS, ignore it.)
    for option in [
        "+ednsopt=65001:abcd",
        "+ednsflags=0x10",
        "+zflag",
        "+padding=64",
    ] {
        for name in ["www", "nope"] {
            cases.push(strict(Query::new(&in_zone(name), "A").dig_option(option)));
        }
    }
    for name in ["www", "nope"] {
        let q = Query::new(&in_zone(name), "A")
            .tcp()
            .dig_option("+keepalive");
        cases.push(strict(q));
    }
    // Another class than IN: REFUSED. (Not HS: NSD drops the question
    // there, Knot echoes it, and no client asks.)
    let ch = Query::new(TEST_ORIGIN, "SOA").class("CH");
    cases.extend(over_udp_and_tcp(ch, Rule::Strict));
    // Opcodes that are not served.
    for opcode in ["status", "iquery"] {
        let query = Query::new(TEST_ORIGIN, "SOA").opcode(opcode);
        cases.extend(over_udp_and_tcp(query, Rule::EitherPeer));
    }
    cases
}

/// Differences between two replies to one query: `failures` break the
/// test, `notes` are printed only.
#[derive(Default)]
struct Differences {
    failures: Vec<String>,
    notes: Vec<String>,
}

impl Differences {
    fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What the comparison needs to know about the zones beyond the two replies.
struct ZoneFacts<'a> {
    /// The apex NS RRset of every served zone; NSD adds the one of the
    /// answering zone to positive answers.
    apex_ns: &'a [Vec<Record>],
    /// The reference server (NSD), asked about the RRset an ANY answer chose.
    reference: &'a DnsServer,
}

fn sorted(records: &[Record]) -> Vec<Record> {
    let mut v = records.to_vec();
    v.sort();
    v
}

fn is_positive(m: &Message) -> bool {
    m.rcode == "NOERROR" && !m.answer.is_empty()
}

/// The additional section of a positive answer without the addresses of
/// NSD's optional apex NS set, or None if the authority section holds
/// anything but that set (a partial referral after a CNAME into a
/// delegation, or a wrong record), which is then compared as it is. With
/// `ttls_set_aside` (a `LowestTtl` comparison that set every TTL to 0) the
/// set is recognised by everything but its TTL.
fn additional_without_apex_ns(
    m: &Message,
    ctx: &ZoneFacts,
    ttls_set_aside: bool,
) -> Option<Vec<Record>> {
    if m.authority.is_empty() {
        return Some(m.additional.clone());
    }
    let authority = sorted(&m.authority);
    let ttl = |r: &Record| if ttls_set_aside { 0 } else { r.ttl };
    let apex_ns = ctx.apex_ns.iter().map(|set| sorted(set)).find(|set| {
        set.len() == authority.len()
            && set.iter().zip(&authority).all(|(a, b)| {
                (&a.name, ttl(a), &a.class, &a.rtype, &a.rdata)
                    == (&b.name, b.ttl, &b.class, &b.rtype, &b.rdata)
            })
    })?;
    let targets: BTreeSet<&str> = apex_ns.iter().map(|r| r.rdata.as_str()).collect();
    let additional = m
        .additional
        .iter()
        .filter(|r| {
            !(matches!(r.rtype.as_str(), "A" | "AAAA") && targets.contains(r.name.as_str()))
        })
        .cloned()
        .collect();
    Some(additional)
}

fn list(records: &[Record]) -> String {
    if records.is_empty() {
        return "(empty)".into();
    }
    records
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn compare_section(out: &mut Vec<String>, name: &str, a: &[Record], b: &[Record]) {
    let (a, b) = (sorted(a), sorted(b));
    if a != b {
        out.push(format!("{name} section: {} vs {}", list(&a), list(&b)));
    }
}

/// Checks a reply on its own: dig found it well-formed, and an echoed ECS
/// option repeats the query's subnet with scope 0.
fn check_alone(query: &Query, m: &Message, out: &mut Differences, who: &str) {
    for w in &m.warnings {
        out.failures.push(format!("{who}: dig says: {w}"));
    }
    let Some(opt) = &m.opt else { return };
    for (name, value) in &opt.options {
        if name != "CLIENT-SUBNET" {
            continue;
        }
        match &query.subnet {
            Some(sent) if *value == format!("{sent}/0") => {}
            Some(sent) => out.failures.push(format!(
                "{who}: ECS echoed as {value}, expected {sent}/0 (scope 0)"
            )),
            None => out.failures.push(format!(
                "{who}: ECS {value} in a reply to a query without ECS"
            )),
        }
    }
}

fn opt_without(opt: &dig::Opt, skip: &[&str]) -> dig::Opt {
    let mut o = opt.clone();
    o.options.retain(|(name, _)| !skip.contains(&name.as_str()));
    o
}

fn compare_header(a: &Message, b: &Message, out: &mut Vec<String>) {
    if a.opcode != b.opcode {
        out.push(format!("opcode {} vs {}", a.opcode, b.opcode));
    }
    if a.rcode != b.rcode {
        out.push(format!("rcode {} vs {}", a.rcode, b.rcode));
    }
    if a.flags != b.flags {
        out.push(format!("flags {:?} vs {:?}", a.flags, b.flags));
    }
}

/// `m` with the TTLs of every section set to 0.
fn without_ttls(m: &Message) -> Message {
    let mut m = m.clone();
    for section in [&mut m.answer, &mut m.authority, &mut m.additional] {
        for r in section.iter_mut() {
            r.ttl = 0;
        }
    }
    m
}

/// `m` with every RRset of every section served with the lowest TTL of
/// its records (RFC 2181 §5.2).
fn with_lowest_ttls(m: &Message) -> Message {
    let mut m = m.clone();
    for section in [&mut m.answer, &mut m.authority, &mut m.additional] {
        let lowest = |r: &Record, all: &[Record]| {
            all.iter()
                .filter(|o| o.name == r.name && o.rtype == r.rtype && o.class == r.class)
                .map(|o| o.ttl)
                .min()
                .unwrap_or(r.ttl)
        };
        let all = section.clone();
        for r in section.iter_mut() {
            r.ttl = lowest(r, &all);
        }
    }
    m
}

/// Compares the replies `a` (from server `names.0`, an `implementation`)
/// and `b` (`names.1`) to one case under its rule.
fn compare(
    case: &Case,
    (a, b): (&Reply, &Reply),
    names: (&str, &str),
    implementation: Implementation,
    ctx: &ZoneFacts,
    peers_only: bool,
) -> Result<Differences> {
    let mut d = Differences::default();
    // Mixed TTLs: the peers each serve their own (module comment); dnsd
    // must serve NSD's lowest, and is compared with Knot on the rest.
    let views: [Reply; 2];
    let ttls_set_aside =
        case.rule == Rule::LowestTtl && (peers_only || implementation != Implementation::Nsd);
    let (a, b) = match (a, b) {
        (Reply::Message(ma), Reply::Message(mb)) if case.rule == Rule::LowestTtl => {
            views = if ttls_set_aside {
                [without_ttls(ma), without_ttls(mb)].map(Reply::Message)
            } else {
                [with_lowest_ttls(ma), mb.clone()].map(Reply::Message)
            };
            (&views[0], &views[1])
        }
        _ => (a, b),
    };
    let (ma, mb) = match (a, b) {
        // Every query of the corpus deserves an answer.
        (Reply::Silence(_), Reply::Silence(_)) => {
            d.failures.push("neither answered".into());
            return Ok(d);
        }
        (Reply::Message(ma), Reply::Message(mb)) => (ma, mb),
        _ => {
            d.failures
                .push("one answered, the other stayed silent".into());
            return Ok(d);
        }
    };
    check_alone(&case.query, ma, &mut d, names.0);
    check_alone(&case.query, mb, &mut d, names.1);
    if matches!(case.rule, Rule::LikeNsd | Rule::LikeKnot) && peers_only {
        // The peers' disagreement is documented, not compared.
        return Ok(d);
    }
    compare_header(ma, mb, &mut d.failures);
    if case.rule == Rule::EitherPeer && peers_only {
        return Ok(d);
    }
    if ma.question != mb.question {
        d.failures
            .push(format!("question {:?} vs {:?}", ma.question, mb.question));
    }
    match (&ma.opt, &mb.opt) {
        (None, None) => {}
        (Some(oa), Some(ob)) => {
            let skip = ["CLIENT-SUBNET", "EDE"];
            if opt_without(oa, &skip) != opt_without(ob, &skip) {
                d.failures.push(format!("{oa} vs {ob}"));
            }
            let ecs = |o: &dig::Opt| o.options.iter().any(|(n, _)| n == "CLIENT-SUBNET");
            if case.query.subnet.is_some() && ecs(oa) != ecs(ob) {
                d.notes
                    .push(format!("ECS echoed: {} vs {}", ecs(oa), ecs(ob)));
            }
            let ede = |o: &dig::Opt| {
                o.options
                    .iter()
                    .filter(|(n, _)| n == "EDE")
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>()
            };
            if ede(oa) != ede(ob) {
                d.notes.push(format!("EDE {:?} vs {:?}", ede(oa), ede(ob)));
            }
        }
        (oa, ob) => d
            .failures
            .push(format!("OPT present: {} vs {}", oa.is_some(), ob.is_some())),
    }

    if case.rule == Rule::MinimalAny && is_positive(ma) && is_positive(mb) {
        for (who, m) in [(names.0, ma), (names.1, mb)] {
            if let Some(problem) = check_minimal_any(&case.query, m, ctx)? {
                d.failures.push(format!("{who}: {problem}"));
            }
        }
    } else {
        compare_section(&mut d.failures, "answer", &ma.answer, &mb.answer);
    }

    if is_positive(ma) && is_positive(mb) {
        match (
            additional_without_apex_ns(ma, ctx, ttls_set_aside),
            additional_without_apex_ns(mb, ctx, ttls_set_aside),
        ) {
            (Some(adda), Some(addb)) => {
                let strict = matches!(case.rule, Rule::StrictAdditional | Rule::LowestTtl);
                let out = if strict {
                    &mut d.failures
                } else {
                    &mut d.notes
                };
                compare_section(out, "additional (positive answer)", &adda, &addb)
            }
            _ => {
                compare_section(&mut d.failures, "authority", &ma.authority, &mb.authority);
                compare_section(
                    &mut d.failures,
                    "additional",
                    &ma.additional,
                    &mb.additional,
                );
            }
        }
    } else {
        compare_section(&mut d.failures, "authority", &ma.authority, &mb.authority);
        compare_section(
            &mut d.failures,
            "additional",
            &ma.additional,
            &mb.additional,
        );
    }
    Ok(d)
}

/// RFC 8482: an ANY answer is one complete RRset that exists at the name.
fn check_minimal_any(query: &Query, m: &Message, ctx: &ZoneFacts) -> Result<Option<String>> {
    let sets: BTreeSet<(&str, &str)> = m
        .answer
        .iter()
        .map(|r| (r.name.as_str(), r.rtype.as_str()))
        .collect();
    let [(owner, rtype)] = sets.into_iter().collect::<Vec<_>>()[..] else {
        return Ok(Some(format!(
            "ANY answered with more than one RRset: {}",
            list(&m.answer)
        )));
    };
    let check = Query::new(&query.name, rtype).tcp();
    let reply = dig::ask(ctx.reference.addr, &check)?;
    let Some(direct) = reply.message() else {
        anyhow::bail!("the reference server did not answer {check}");
    };
    let expected: Vec<Record> = direct
        .answer
        .iter()
        .filter(|r| r.name == owner && r.rtype == rtype)
        .cloned()
        .collect();
    if sorted(&expected) != sorted(&m.answer) {
        return Ok(Some(format!(
            "ANY answered with {} but {} {rtype} is {}",
            list(&m.answer),
            owner,
            list(&expected)
        )));
    }
    Ok(None)
}

/// Every server's reply to every case, in corpus order. Each server is
/// asked by two clients at once (alternate cases), so that replies to
/// concurrent queries must still reach the right client.
fn ask_all(servers: &[&DnsServer], cases: &[Case]) -> Result<Vec<Vec<Reply>>> {
    const CLIENTS: usize = 2;
    thread::scope(|s| {
        let handles: Vec<Vec<_>> = servers
            .iter()
            .map(|server| {
                (0..CLIENTS)
                    .map(|client| {
                        s.spawn(move || -> Result<Vec<Reply>> {
                            cases
                                .iter()
                                .skip(client)
                                .step_by(CLIENTS)
                                .map(|c| {
                                    dig::ask(server.addr, &c.query).with_context(|| {
                                        format!("asking {} {}", server.label(), c.query)
                                    })
                                })
                                .collect()
                        })
                    })
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|per_client| -> Result<Vec<Reply>> {
                let mut parts = Vec::new();
                for h in per_client {
                    parts.push(h.join().expect("a query thread panicked")?.into_iter());
                }
                // Interleave the clients' replies back into corpus order.
                let mut replies = Vec::with_capacity(cases.len());
                for i in 0..cases.len() {
                    if let Some(r) = parts[i % CLIENTS].next() {
                        replies.push(r);
                    }
                }
                Ok(replies)
            })
            .collect()
    })
}

/// The apex NS RRset of each zone of `options`, as `server` serves it.
fn apex_ns(server: &DnsServer, options: &ServerOptions) -> Result<Vec<Vec<Record>>> {
    let mut sets = Vec::new();
    for (origin, _) in &options.zones {
        let reply = dig::ask(server.addr, &Query::new(origin, "NS").tcp())?;
        let m = reply
            .message()
            .with_context(|| format!("{} did not answer NS {origin}", server.label()))?;
        anyhow::ensure!(!m.answer.is_empty(), "no apex NS set in {m}");
        sets.push(m.answer.clone());
    }
    Ok(sets)
}

fn dig_line(server: &DnsServer, q: &Query) -> String {
    format!(
        "{} @{} -p {} {}",
        q.program(),
        server.addr.ip(),
        server.addr.port(),
        q.args().join(" ")
    )
}

/// Compares `candidate`'s replies against each of `peers`; returns the
/// report of every case that fails, and prints notes.
fn report(
    cases: &[Case],
    replies: &[Vec<Reply>],
    servers: &[&DnsServer],
    candidate: usize,
    peers: &[usize],
    ctx: &ZoneFacts,
    peers_only: bool,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let mut notes = 0;
    for (i, case) in cases.iter().enumerate() {
        let got = &replies[candidate][i];
        let mut per_peer = Vec::new();
        for &p in peers {
            let names = (servers[p].label(), servers[candidate].label());
            let implementation = servers[p].implementation;
            let d = compare(
                case,
                (&replies[p][i], got),
                names,
                implementation,
                ctx,
                peers_only,
            )?;
            per_peer.push((p, d));
        }
        // A case with its own rule for peers that disagree passes if the
        // candidate matches any one of them.
        let passed = match case.rule {
            Rule::EitherPeer if !peers_only => per_peer.iter().any(|(_, d)| d.is_empty()),
            Rule::LikeNsd if !peers_only => per_peer
                .iter()
                .filter(|(p, _)| servers[*p].implementation == Implementation::Nsd)
                .all(|(_, d)| d.is_empty()),
            Rule::LikeKnot if !peers_only => per_peer
                .iter()
                .filter(|(p, _)| servers[*p].implementation == Implementation::Knot)
                .all(|(_, d)| d.is_empty()),
            _ => per_peer.iter().all(|(_, d)| d.is_empty()),
        };
        for (p, d) in &per_peer {
            for n in &d.notes {
                notes += 1;
                println!(
                    "note: {} ({} vs {}): {n}",
                    case.query,
                    servers[*p].label(),
                    servers[candidate].label()
                );
            }
        }
        if passed {
            continue;
        }
        let mut text = format!(
            "MISMATCH #{} {}\n  {}\n",
            failures.len() + 1,
            case.query,
            dig_line(servers[candidate], &case.query)
        );
        for (p, d) in &per_peer {
            if d.failures.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "  {} vs {}:\n",
                servers[*p].label(),
                servers[candidate].label()
            ));
            for f in &d.failures {
                text.push_str(&format!("    - {f}\n"));
            }
            text.push_str(&format!(
                "  {} answered:\n{}",
                servers[*p].label(),
                replies[*p][i]
            ));
        }
        text.push_str(&format!(
            "  {} answered:\n{}",
            servers[candidate].label(),
            got
        ));
        failures.push(text);
    }
    println!(
        "{} queries compared ({} vs {}): {} mismatches, {notes} notes",
        cases.len(),
        servers[candidate].label(),
        peers
            .iter()
            .map(|&p| servers[p].label())
            .collect::<Vec<_>>()
            .join(" and "),
        failures.len()
    );
    Ok(failures)
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 53, last))
}

fn assert_no_mismatch(failures: &[String]) {
    for f in failures {
        println!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} queries answered differently (each listed above with the query and both answers)",
        failures.len()
    );
}

/// The corpus is big enough to mean something, and the two reference
/// implementations agree on all of it under the rules above: if they did
/// not, the rules (or the corpus) would be wrong, not dnsd.
#[test]
fn nsd_and_knot_agree_on_the_whole_corpus() -> Result<()> {
    let cases = corpus();
    assert!(cases.len() >= 200, "only {} queries", cases.len());
    let options = ServerOptions::default();
    let nsd = dns_peers::start_nsd(loopback(1), &options)?;
    let knot = dns_peers::start_knot(loopback(2), &options)?;
    let servers = [&nsd, &knot];
    let replies = ask_all(&servers, &cases)?;
    let apex = apex_ns(&nsd, &options)?;
    let ctx = ZoneFacts {
        apex_ns: &apex,
        reference: &nsd,
    };
    let failures = report(&cases, &replies, &servers, 1, &[0], &ctx, true)?;
    assert_no_mismatch(&failures);
    Ok(())
}

/// dnsd, given the same zone file, answers every query of the corpus as NSD
/// and Knot DNS do.
#[test]
fn dnsd_answers_every_query_like_nsd_and_knot() -> Result<()> {
    let cases = corpus();
    let options = ServerOptions::default();
    let nsd = dns_peers::start_nsd(loopback(11), &options)?;
    let knot = dns_peers::start_knot(loopback(12), &options)?;
    let mut dnsd = dns_peers::start_dnsd(&bins::path("dnsd"), loopback(13), &options)
        .context("dnsd is not ready to be compared with NSD and Knot DNS")?;
    let replies = ask_all(&[&nsd, &knot, &dnsd], &cases)?;
    dnsd.assert_running()
        .context("dnsd died while answering the corpus")?;
    let apex = apex_ns(&nsd, &options)?;
    let ctx = ZoneFacts {
        apex_ns: &apex,
        reference: &nsd,
    };
    let servers = [&nsd, &knot, &dnsd];
    let failures = report(&cases, &replies, &servers, 2, &[0, 1], &ctx, false)?;
    assert_no_mismatch(&failures);
    Ok(())
}

/// The comparison is not blind: a server whose copy of the zone lacks one
/// address of www, has a shorter negative TTL and lost a glue record is
/// caught on exactly the queries those records answer, and not elsewhere.
#[test]
fn the_comparison_catches_a_server_serving_a_slightly_different_zone() -> Result<()> {
    let original = fs::read_to_string(dns_peers::test_zone()).context("reading the test zone")?;
    let mut altered = original.clone();
    for (from, to) in [
        ("www           60 IN A     198.18.0.4\n", ""),
        ("1209600 120 )", "1209600 60 )"),
        ("ns.child         IN AAAA  2001:2::253\n", ""),
    ] {
        assert!(
            altered.contains(from),
            "the test zone no longer has {from:?}"
        );
        altered = altered.replace(from, to);
    }
    let path = std::env::temp_dir().join(format!(
        "cutover-altered-{}.example.test.zone",
        std::process::id()
    ));
    fs::write(&path, altered).context("writing the altered zone")?;
    let altered_options = ServerOptions {
        zones: vec![(TEST_ORIGIN.to_string(), path.clone())],
        ..ServerOptions::default()
    };
    let result = (|| -> Result<Vec<String>> {
        let nsd = dns_peers::start_nsd(loopback(21), &ServerOptions::default())?;
        let knot = dns_peers::start_knot(loopback(22), &altered_options)?;
        let cases = corpus();
        let servers = [&nsd, &knot];
        let replies = ask_all(&servers, &cases)?;
        let apex = apex_ns(&nsd, &ServerOptions::default())?;
        let ctx = ZoneFacts {
            apex_ns: &apex,
            reference: &nsd,
        };
        report(&cases, &replies, &servers, 1, &[0], &ctx, true)
    })();
    let _ = fs::remove_file(&path);
    let failures = result?;
    for caught in [
        "MISMATCH #", // anything at all
        " www.example.test. IN A over UDP, EDNS bufsize 1232\n",
        " nope.example.test. IN A over TCP",
        " www.child.example.test. IN A over UDP, no EDNS\n",
        " x.sub.wild.example.test. IN A over UDP",
    ] {
        assert!(
            failures.iter().any(|f| f.contains(caught)),
            "no mismatch reported for{caught}"
        );
    }
    for unaffected in [
        " static.example.test. IN A over",
        " example.test. IN MX over",
    ] {
        assert!(
            !failures.iter().any(|f| f.contains(unaffected)),
            "a mismatch reported for{unaffected}, whose answer did not change"
        );
    }
    Ok(())
}

/// With rotation on in the peers (NSD `round-robin: yes`, Knot
/// `answer-rotation: on`), dnsd rotates like them: every answer carries the
/// whole RRset in the zone's cyclic order, starting at a different record,
/// and over a run of answers every record comes first. Knot starts at a
/// pseudo-random record, hence 48 answers per name (the chance that one of
/// 4 records never comes first is below 1e-5). Not through a CNAME: NSD's
/// rotation counter advances once per RRset written, so behind a CNAME it
/// skips every other start.
#[test]
fn dnsd_rotates_multi_address_answers_like_nsd_and_knot() -> Result<()> {
    const ANSWERS: usize = 48;
    // (name, type, the RRset in zone order)
    let rrsets: [(&str, &str, &[&str]); 4] = [
        (
            "www",
            "A",
            &["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"],
        ),
        ("www", "AAAA", &["2001:2::1", "2001:2::2", "2001:2::3"]),
        ("q.multi", "A", &["198.18.0.40", "198.18.0.41"]),
        ("api", "A", &["198.18.1.1", "198.18.1.2"]),
    ];
    let options = ServerOptions {
        rotate: true,
        ..ServerOptions::default()
    };
    let nsd = dns_peers::start_nsd(loopback(31), &options)?;
    let knot = dns_peers::start_knot(loopback(32), &options)?;
    let dnsd = dns_peers::start_dnsd(&bins::path("dnsd"), loopback(33), &options)
        .context("dnsd is not ready to be compared with NSD and Knot DNS")?;
    let servers = [&nsd, &knot, &dnsd];
    let mut cases = Vec::new();
    for (name, qtype, _) in rrsets {
        for _ in 0..ANSWERS {
            cases.push(Case {
                query: Query::new(&in_zone(name), qtype),
                rule: Rule::Strict,
            });
        }
    }
    let replies = ask_all(&servers, &cases)?;
    let mut problems = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for (k, (name, qtype, zone_order)) in rrsets.iter().enumerate() {
            let mut first = BTreeSet::new();
            for reply in &replies[s][k * ANSWERS..(k + 1) * ANSWERS] {
                let order: Vec<&str> = reply
                    .message()
                    .map(|m| {
                        m.answer
                            .iter()
                            .filter(|r| r.rtype == *qtype)
                            .map(|r| r.rdata.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let is_rotation = order.len() == zone_order.len()
                    && (0..zone_order.len()).any(|shift| {
                        order
                            .iter()
                            .enumerate()
                            .all(|(i, a)| *a == zone_order[(i + shift) % zone_order.len()])
                    });
                if !is_rotation {
                    problems.push(format!(
                        "{}: {name} {qtype} answered {order:?}, not a rotation of {zone_order:?}",
                        server.label()
                    ));
                }
                if let Some(a) = order.first() {
                    first.insert(a.to_string());
                }
            }
            if first.len() != zone_order.len() {
                problems.push(format!(
                    "{}: over {ANSWERS} answers for {name} {qtype} only {first:?} came first",
                    server.label()
                ));
            }
        }
    }
    for p in &problems {
        println!("{p}");
    }
    assert!(problems.is_empty(), "{} rotation problems", problems.len());
    Ok(())
}

/// The zones of the multi-zone case: example.test, its child
/// sub.example.test (delegated from it and served by the same server), and
/// an unrelated other.test.
fn multi_zone_options() -> ServerOptions {
    let data = dns_peers::test_zone()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    ServerOptions {
        zones: vec![
            (TEST_ORIGIN.to_string(), dns_peers::test_zone()),
            (
                "sub.example.test.".to_string(),
                data.join("sub.example.test.zone"),
            ),
            ("other.test.".to_string(), data.join("other.test.zone")),
        ],
        ..ServerOptions::default()
    }
}

/// Queries whose answers depend on which of several served zones is the
/// closest enclosing one.
fn multi_zone_corpus() -> Vec<Case> {
    let questions = [
        // Below the cut the child answers, with AA; DS at the cut comes
        // from the parent.
        ("www.sub.example.test.", "A"),
        ("WWW.SUB.Example.Test.", "A"),
        ("sub.example.test.", "NS"),
        ("sub.example.test.", "SOA"),
        ("sub.example.test.", "A"),
        ("sub.example.test.", "AAAA"),
        ("sub.example.test.", "DS"),
        ("sub.example.test.", "ANY"),
        ("ns.sub.example.test.", "A"),
        ("nope.sub.example.test.", "A"),
        ("back.sub.example.test.", "A"),
        // A delegation inside the child zone.
        ("x.deeper.sub.example.test.", "A"),
        ("deeper.sub.example.test.", "DS"),
        // The parent still answers for itself.
        ("www.example.test.", "A"),
        ("nope.example.test.", "A"),
        ("www.child.example.test.", "A"),
        // An unrelated zone, with CNAMEs into another served zone.
        ("other.test.", "SOA"),
        ("other.test.", "NS"),
        ("other.test.", "A"),
        ("other.test.", "AAAA"),
        ("www.other.test.", "A"),
        ("mail.other.test.", "MX"),
        ("nope.other.test.", "A"),
        // A DNAME into another served zone, and one into the child zone.
        ("www.dn-other.example.test.", "A"),
        ("www.dn-child.example.test.", "A"),
        // Names in none of them.
        ("test.", "SOA"),
        ("x.test.", "A"),
        ("sub.other2.test.", "A"),
    ];
    // NSD follows a CNAME into another zone it serves, Knot stops at the
    // zone's edge (both allowed: the resolver asks again).
    let crosses_zones = [
        "back.sub.example.test.",
        "www.other.test.",
        "www.dn-other.example.test.",
    ];
    let mut cases = Vec::new();
    for (name, qtype) in questions {
        let rule = if crosses_zones.contains(&name) {
            Rule::EitherPeer
        } else {
            rule_for(qtype)
        };
        cases.extend(over_every_transport(Query::new(name, qtype), rule));
    }
    cases
}

/// With a parent zone, its child and an unrelated zone on one server, dnsd
/// picks the closest enclosing zone as NSD and Knot do (and those two agree
/// on every query first).
#[test]
fn dnsd_serves_parent_child_and_unrelated_zones_like_nsd_and_knot() -> Result<()> {
    let options = multi_zone_options();
    let cases = multi_zone_corpus();
    let nsd = dns_peers::start_nsd(loopback(41), &options)?;
    let knot = dns_peers::start_knot(loopback(42), &options)?;
    let dnsd = dns_peers::start_dnsd(&bins::path("dnsd"), loopback(43), &options)
        .context("dnsd is not ready to be compared with NSD and Knot DNS")?;
    let servers = [&nsd, &knot, &dnsd];
    let replies = ask_all(&servers, &cases)?;
    let apex = apex_ns(&nsd, &options)?;
    let ctx = ZoneFacts {
        apex_ns: &apex,
        reference: &nsd,
    };
    let mut failures = report(&cases, &replies, &servers, 1, &[0], &ctx, true)?;
    failures.extend(report(&cases, &replies, &servers, 2, &[0, 1], &ctx, false)?);
    assert_no_mismatch(&failures);
    Ok(())
}

/// Several queries on one TCP connection (as a resolver reuses it) are
/// each answered as NSD and Knot answer them.
#[test]
fn dnsd_answers_several_queries_on_one_tcp_connection_like_nsd_and_knot() -> Result<()> {
    let questions = [
        ("www.example.test.", "A"),
        ("nope.example.test.", "A"),
        ("www.child.example.test.", "A"),
        ("bigtxt.example.test.", "TXT"),
        ("chain1.example.test.", "A"),
        ("static.example.test.", "AAAA"),
        ("Example.Test.", "SOA"),
        ("www.example.org.", "A"),
        ("big.example.test.", "A"),
        ("a.wild.example.test.", "TXT"),
    ];
    let options = ServerOptions::default();
    let nsd = dns_peers::start_nsd(loopback(51), &options)?;
    let knot = dns_peers::start_knot(loopback(52), &options)?;
    let dnsd = dns_peers::start_dnsd(&bins::path("dnsd"), loopback(53), &options)
        .context("dnsd is not ready to be compared with NSD and Knot DNS")?;
    let servers = [&nsd, &knot, &dnsd];
    let mut replies = Vec::new();
    for server in servers {
        let messages = dig::ask_on_one_tcp_connection(server.addr, &questions)
            .with_context(|| format!("asking {} over one TCP connection", server.label()))?;
        replies.push(messages.into_iter().map(Reply::Message).collect());
    }
    let cases: Vec<Case> = questions
        .iter()
        .map(|(name, qtype)| Case {
            query: Query::new(name, qtype).tcp(),
            rule: rule_for(qtype),
        })
        .collect();
    let apex = apex_ns(&nsd, &options)?;
    let ctx = ZoneFacts {
        apex_ns: &apex,
        reference: &nsd,
    };
    let mut failures = report(&cases, &replies, &servers, 1, &[0], &ctx, true)?;
    failures.extend(report(&cases, &replies, &servers, 2, &[0, 1], &ctx, false)?);
    assert_no_mismatch(&failures);
    Ok(())
}
