//! Answer selection: a pure function from (snapshot, question, rotation
//! number) to the parts of a response — rcode, AA, and the records
//! of the answer, authority and additional sections. No sockets, no clock:
//! unit tests drive it directly.
//!
//! Semantics follow RFC 1034 §4.3.2 as NSD and Knot implement it, with
//! Knot's minimal positive answers: an answer carries no NS set in its
//! authority section; NS, MX and SRV answers carry the in-zone addresses of
//! their targets in the additional section, also of targets a wildcard
//! covers. Negative answers carry the SOA with TTL min(SOA TTL, MINIMUM);
//! referrals carry the cut's NS set and glue without AA, the glue of
//! in-domain name servers marked as required (what `server` may not drop
//! without TC, RFC 9471 §3); CNAME chains are followed inside the zone;
//! every RRset has one TTL (the snapshot's); wildcards are
//! expanded per RFC 4592; ANY gets a single RRset (RFC 8482 §4.1, as NSD
//! and Knot answer it over UDP and TCP alike). A name below a DNAME gets
//! the DNAME and a CNAME synthesized from it, then the CNAME is followed
//! like any other (RFC 6672 §3.2); when the rewritten name would be too
//! long the answer is YXDOMAIN with the DNAME, as NSD sends it (Knot says
//! NXDOMAIN).

pub mod rotate;
pub mod steer;

use std::borrow::Cow;
use std::ops::Range;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::snapshot::{Lookup, Node, RrSet, Snapshot, Zone, ZoneLookup, wire_len};
use crate::zone::dname::{self, Substitution};
use crate::zone::name_key;
use crate::zone::name_key::NameKey;

/// Longest CNAME chain followed inside a zone, as a guard against loops
/// that revisit no name twice only by being very long.
const MAX_CHAIN: usize = 16;

/// What is asked.
pub struct Question<'q> {
    pub name: &'q Name,
    pub qtype: RecordType,
    pub qclass: DNSClass,
}

/// What an answer depends on besides the question: the transport is not
/// part of it (truncation is `server`'s).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The answer's number in the rotation sequence.
    pub rotation: u64,
    /// Who asks, for services answered by region (`steer`); `None` when
    /// it does not matter.
    pub client: Option<steer::Client>,
}

/// The parts of a response: its records, decoded from the snapshot's wire
/// form as the answer is chosen (the UDP fast path copies that form and
/// never gets here), and how they divide into sections and RRsets.
#[derive(Debug)]
pub struct Response {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answer: Section,
    pub authority: Section,
    pub additional: Section,
    records: Vec<Record>,
    /// The EDNS Client Subnet scope the answer holds for: set when a
    /// service's answer was chosen by the client's region (`steer`).
    pub ecs_scope: Option<u8>,
}

/// The records of one section, as RRsets of the response's records.
#[derive(Debug, Default)]
pub struct Section {
    /// One part per RRset, in the order they are sent.
    parts: Vec<Part>,
    wire_len: usize,
}

/// One RRset of a section.
#[derive(Debug)]
struct Part {
    records: Range<usize>,
    /// Glue that a referral must carry whole, or be truncated (RFC 9471
    /// §3); every other RRset of the additional section is optional.
    required: bool,
}

impl Section {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The number of RRsets in the section.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether RRset number `i` is glue that a referral must carry: a
    /// response that cannot hold it is truncated, not sent without it.
    pub fn is_required(&self, i: usize) -> bool {
        self.parts.get(i).is_some_and(|p| p.required)
    }
}

impl Response {
    fn new(rcode: ResponseCode, authoritative: bool) -> Self {
        Self {
            rcode,
            authoritative,
            answer: Section::default(),
            authority: Section::default(),
            additional: Section::default(),
            records: Vec::new(),
            ecs_scope: None,
        }
    }

    /// The records of `section` (one of this response's) in order.
    pub fn records<'r>(&'r self, section: &'r Section) -> impl Iterator<Item = &'r Record> + 'r {
        (0..section.len()).flat_map(move |i| self.rrset(section, i))
    }

    /// The records of RRset number `i` of `section` (none past its end).
    pub fn rrset<'r>(&'r self, section: &'r Section, i: usize) -> &'r [Record] {
        section
            .parts
            .get(i)
            .and_then(|p| self.records.get(p.records.clone()))
            .unwrap_or_default()
    }

    /// Adds `records` to `section` as one RRset.
    fn push(&mut self, section: Which, records: impl Iterator<Item = Record>, required: bool) {
        let start = self.records.len();
        self.records.extend(records);
        let range = start..self.records.len();
        let wire_len = wire_len(&self.records[range.clone()]);
        let section = match section {
            Which::Answer => &mut self.answer,
            Which::Authority => &mut self.authority,
            Which::Additional => &mut self.additional,
        };
        section.wire_len += wire_len;
        section.parts.push(Part {
            records: range,
            required,
        });
    }

    /// Adds the addresses of the names `set`, owned by the name with key
    /// `owner` in `zone`, points at; in a referral (`glue`), those of
    /// in-domain name servers are required.
    fn push_additional(&mut self, zone: &Zone, owner: &[u8], set: &RrSet, glue: bool) {
        if !matches!(set.rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
            return;
        }
        for add in zone.additional(owner, set) {
            let all = add.set.all(&add.owner);
            self.push(Which::Additional, all.into_iter(), glue && add.required);
        }
    }

    /// Adds `set` to the answer, rotated, owned by `owner` as asked (which
    /// echoes the asker's case, as clients that randomize it check).
    fn answer_with(&mut self, set: &RrSet, owner: &Name, cx: Context, cap: usize) {
        let window = rotate::window(set.rtype, set.len(), cx.rotation, cap);
        self.push(Which::Answer, set.records(owner, window), false);
    }

    /// Adds `set` in the order `picked` chose (a steered service's
    /// addresses).
    fn answer_picked(&mut self, set: &RrSet, owner: &Name, picked: &steer::Picked) {
        self.ecs_scope = Some(picked.scope);
        self.push(Which::Answer, set.picked(owner, picked), false);
    }

    /// Adds the zone's SOA to the authority section, owned by the apex as
    /// `name` (a name in the zone, as asked) writes it.
    fn negative(&mut self, zone: &Zone, name: &Name, rcode: ResponseCode) {
        self.rcode = rcode;
        let apex = name.trim_to(zone.origin.iter().count());
        let soa = zone.negative_soa.all(&apex);
        self.push(Which::Authority, soa.into_iter(), false);
    }

    /// Whether a CNAME owned by `name` is already in the answer: a loop.
    fn has_cname_at(&self, name: &Name) -> bool {
        self.records(&self.answer)
            .any(|r| r.record_type() == RecordType::CNAME && r.name == *name)
    }

    /// Upper bound of the encoded size of the three sections.
    pub fn wire_len(&self) -> usize {
        self.answer.wire_len + self.authority.wire_len + self.additional.wire_len
    }
}

/// A section of a response, to add to.
#[derive(Clone, Copy)]
enum Which {
    Answer,
    Authority,
    Additional,
}

/// What to do after answering at one name.
enum Step {
    Done,
    /// Follow a CNAME (or one synthesized from a DNAME) to this in-zone
    /// name.
    Follow(Name),
}

/// Answers `q` from `snapshot`.
pub fn answer(snapshot: &Snapshot, q: &Question<'_>, cx: Context) -> Response {
    let refused = || Response::new(ResponseCode::Refused, false);
    if !matches!(q.qclass, DNSClass::IN | DNSClass::ANY) {
        return refused();
    }
    // Zone transfers over TCP are served by `transfer::out` before a query
    // gets here, and over UDP by `transfer_over_udp`; one that still comes
    // here (transfers are not served at all) is refused.
    if matches!(q.qtype, RecordType::AXFR | RecordType::IXFR) {
        return refused();
    }
    let Some(key) = NameKey::new(q.name) else {
        return Response::new(ResponseCode::FormErr, false);
    };
    let zone = match snapshot.find_zone(key.as_bytes(), q.qtype) {
        ZoneLookup::Serving(zone) => zone,
        // The zone is ours, but its file has never loaded.
        ZoneLookup::Unavailable => return Response::new(ResponseCode::ServFail, false),
        ZoneLookup::NotServed => return refused(),
    };
    let mut resp = Response::new(ResponseCode::NoError, true);
    let mut name: Cow<'_, Name> = Cow::Borrowed(q.name);
    for _ in 0..MAX_CHAIN {
        let Some(key) = NameKey::new(&name) else {
            break;
        };
        let step = match zone.lookup(key.as_bytes(), q.qtype) {
            Lookup::Node(node) | Lookup::Wildcard(node) => {
                at_node(&mut resp, zone, node, &name, q.qtype, cx, snapshot)
            }
            Lookup::Dname { labels, dname } => {
                below_dname(&mut resp, zone, (labels, dname), &name, q.qtype, cx)
            }
            Lookup::Referral { cut, ns } => {
                // A referral is not an authoritative answer, unless the
                // zone already answered with a CNAME leading there.
                if resp.answer.is_empty() {
                    resp.authoritative = false;
                }
                let owner = name.trim_to(name_key::labels(cut));
                resp.push(Which::Authority, ns.all(&owner).into_iter(), false);
                resp.push_additional(zone, cut, ns, true);
                Step::Done
            }
            Lookup::NxDomain => {
                resp.negative(zone, &name, ResponseCode::NXDomain);
                Step::Done
            }
        };
        match step {
            Step::Done => break,
            Step::Follow(target) => name = Cow::Owned(target),
        }
    }
    resp
}

/// Answers a zone transfer asked over UDP, as NSD and Knot do: AXFR is only
/// defined over TCP (RFC 5936 §4.2), so it is NOTIMP, whatever the name.
/// IXFR may be asked over UDP (RFC 1995 §2): a name that is no zone dnsd
/// serves is NOTAUTH (both peers); a served zone that `may` not give this
/// client is REFUSED, the policy refusal of RFC 5936 §2.2.1 (NSD's; Knot
/// says NOTAUTH); to one that may, the answer is the zone's SOA alone —
/// "up to date" if the client has that serial, "ask over TCP" if not
/// (RFC 1995 §2, §4): the differences are only sent over TCP.
pub fn transfer_over_udp(
    snapshot: &Snapshot,
    q: &Question<'_>,
    may: impl FnOnce(&Zone) -> bool,
) -> Response {
    let rcode = if !matches!(q.qclass, DNSClass::IN | DNSClass::ANY) {
        ResponseCode::Refused
    } else if q.qtype == RecordType::AXFR {
        ResponseCode::NotImp
    } else {
        match NameKey::new(q.name).and_then(|key| snapshot.served(key.as_bytes())) {
            Some((zone, _)) if may(zone) => {
                let mut resp = Response::new(ResponseCode::NoError, true);
                if let Some(soa) = zone.soa() {
                    resp.push(Which::Answer, soa.all(q.name).into_iter(), false);
                }
                return resp;
            }
            _ if NameKey::new(q.name).is_some_and(|key| snapshot.serves_zone(key.as_bytes())) => {
                ResponseCode::Refused
            }
            _ => ResponseCode::NotAuth,
        }
    };
    Response::new(rcode, false)
}

/// Answers at `name`, a name below the DNAME `set` owned by its ancestor
/// of `owner_labels` labels: the DNAME (owned by that suffix, in the case
/// asked) and the CNAME synthesized from it, with the DNAME's TTL.
fn below_dname(
    resp: &mut Response,
    zone: &Zone,
    (owner_labels, set): (usize, &RrSet),
    name: &Name,
    qtype: RecordType,
    cx: Context,
) -> Step {
    let Some(target) = set.data().next().and_then(|d| dname::target_of(&d)) else {
        return Step::Done;
    };
    let owner = name.trim_to(owner_labels);
    resp.answer_with(set, &owner, cx, 0);
    let rewritten = match dname::substitute(name, owner_labels, &target) {
        Substitution::Name(rewritten) => rewritten,
        Substitution::TooLong => {
            resp.rcode = ResponseCode::YXDomain;
            return Step::Done;
        }
    };
    // A target below the DNAME's own owner would be rewritten by the same
    // DNAME again and again: NSD stops after one rewrite, and so does dnsd.
    let loops = owner.zone_of(&rewritten) || resp.has_cname_at(&rewritten);
    let cname = Record::from_rdata(
        name.clone(),
        set.ttl,
        RData::CNAME(CNAME(rewritten.clone())),
    );
    resp.push(Which::Answer, std::iter::once(cname), false);
    if qtype == RecordType::CNAME || loops || !zone.origin.zone_of(&rewritten) {
        return Step::Done;
    }
    Step::Follow(rewritten)
}

fn at_node(
    resp: &mut Response,
    zone: &Zone,
    node: &Node,
    owner: &Name,
    qtype: RecordType,
    cx: Context,
    snapshot: &Snapshot,
) -> Step {
    let cap = snapshot.max_answers;
    let owner_key = NameKey::new(owner);
    let owner_key = owner_key.as_ref().map_or(&[][..], NameKey::as_bytes);
    if qtype == RecordType::ANY {
        if node.rrsets.is_empty() {
            resp.negative(zone, owner, ResponseCode::NoError);
        }
        if let Some(set) = node.rrsets.first() {
            resp.answer_with(set, owner, cx, cap);
            resp.push_additional(zone, owner_key, set, false);
        }
        return Step::Done;
    }
    if qtype != RecordType::CNAME
        && let Some(cname) = node.get(RecordType::CNAME)
    {
        resp.answer_with(cname, owner, cx, cap);
        let Some(RData::CNAME(target)) = cname.data().next() else {
            return Step::Done;
        };
        if zone.origin.zone_of(&target.0) && !resp.has_cname_at(&target.0) {
            return Step::Follow(target.0);
        }
        return Step::Done;
    }
    match node.get(qtype) {
        Some(set) => {
            match steered(snapshot, owner_key, set, cx, cap) {
                Some(picked) => resp.answer_picked(set, owner, &picked),
                None => resp.answer_with(set, owner, cx, cap),
            }
            resp.push_additional(zone, owner_key, set, false);
        }
        None => resp.negative(zone, owner, ResponseCode::NoError),
    }
    Step::Done
}

/// The order a steered service's addresses go in (`steer`); `None` for
/// every other RRset, which is rotated.
pub fn steered(
    snapshot: &Snapshot,
    owner_key: &[u8],
    set: &RrSet,
    cx: Context,
    cap: usize,
) -> Option<steer::Picked> {
    if !matches!(set.rtype, RecordType::A | RecordType::AAAA) || set.len() > steer::MAX_STEERED {
        return None;
    }
    let steering = snapshot.steers.get(owner_key)?;
    Some(snapshot.steers.pick(steering, &set.rdatas, cx.client, cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The asker's address where it does not matter.
    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    use hickory_proto::op::{Message, MessageType, OpCode};

    const ZONE: &str = "$TTL 300
@        IN SOA ns1 hostmaster 7 3600 600 86400 120
@        IN NS  ns1
@        IN MX  10 mail
ns1      IN A   198.18.0.53
mail     IN A   198.18.0.25
www   60 IN A   198.18.0.1
www   60 IN A   198.18.0.2
www   30 IN A   198.18.0.3
www      IN AAAA 2001:2::1
alias    IN CNAME www
chain    IN CNAME alias
away     IN CNAME www.elsewhere.test.
dangling IN CNAME nothere
loop1    IN CNAME loop2
loop2    IN CNAME loop1
a.b.c    IN TXT \"deep\"
*.wild   IN A   198.18.0.77
*.wild   IN TXT \"wild\"
*.wc     IN CNAME www
sub      IN NS  ns.sub
sub      IN NS  ns.outside.test.
ns.sub   IN A   198.18.1.53
";

    fn snapshot(zone: &str, toml: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/example.test.zone"), zone).unwrap();
        std::fs::write(dir.path().join("dnsd.toml"), toml).unwrap();
        let ws = crate::zone::load(dir.path()).unwrap();
        Snapshot::build(&ws, None)
    }

    fn ask(s: &Snapshot, name: &str, qtype: RecordType, rotation: u64) -> Response {
        let name = Name::from_ascii(name).unwrap();
        let q = Question {
            name: &name,
            qtype,
            qclass: DNSClass::IN,
        };
        answer(
            s,
            &q,
            Context {
                rotation,
                client: None,
            },
        )
    }

    fn show(r: &Response, section: &Section) -> Vec<String> {
        r.records(section)
            .map(|rec| {
                format!(
                    "{} {} {} {}",
                    rec.name,
                    rec.ttl,
                    rec.record_type(),
                    crate::zone::records::rdata_text(rec.record_type(), &rec.data)
                )
            })
            .collect()
    }

    #[test]
    fn an_existing_name_is_answered_minimally_with_aa() {
        let s = snapshot(ZONE, "");
        let r = ask(&s, "WWW.example.TEST.", RecordType::AAAA, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(
            show(&r, &r.answer),
            ["WWW.example.TEST. 300 AAAA 2001:2::1"],
            "the answer echoes the case of the question"
        );
        assert!(r.authority.is_empty() && r.additional.is_empty());
    }

    #[test]
    fn an_rrset_is_served_with_its_lowest_ttl_and_rotates() {
        let s = snapshot(ZONE, "");
        let r = ask(&s, "www.example.test.", RecordType::A, 1);
        assert_eq!(
            show(&r, &r.answer),
            [
                "www.example.test. 30 A 198.18.0.2",
                "www.example.test. 30 A 198.18.0.3",
                "www.example.test. 30 A 198.18.0.1",
            ],
            "RFC 2181 §5.2: one TTL per RRset, the lowest of its records"
        );
    }

    #[test]
    fn the_cap_limits_the_addresses_of_one_answer() {
        let s = snapshot(ZONE, "[server]\nmax_answers = 2\n");
        let r = ask(&s, "www.example.test.", RecordType::A, 2);
        assert_eq!(
            show(&r, &r.answer),
            [
                "www.example.test. 30 A 198.18.0.3",
                "www.example.test. 30 A 198.18.0.1"
            ]
        );
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
        let s = snapshot(ZONE, "");
        let soa =
            "example.test. 120 SOA ns1.example.test. hostmaster.example.test. 7 3600 600 86400 120";
        let r = ask(&s, "nope.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert!(r.answer.is_empty());
        assert_eq!(show(&r, &r.authority), [soa]);
        let r = ask(&s, "www.example.test.", RecordType::TXT, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answer.is_empty());
        assert_eq!(show(&r, &r.authority), [soa]);
    }

    #[test]
    fn empty_non_terminals_are_nodata_not_nxdomain() {
        let s = snapshot(ZONE, "");
        for name in ["b.c.example.test.", "c.example.test."] {
            let r = ask(&s, name, RecordType::A, 0);
            assert_eq!(r.rcode, ResponseCode::NoError, "{name}");
            assert_eq!(r.authority.parts.len(), 1);
        }
    }

    #[test]
    fn cname_chains_are_followed_inside_the_zone() {
        let s = snapshot(ZONE, "");
        let r = ask(&s, "chain.example.test.", RecordType::AAAA, 0);
        assert_eq!(
            show(&r, &r.answer),
            [
                "chain.example.test. 300 CNAME alias.example.test.",
                "alias.example.test. 300 CNAME www.example.test.",
                "www.example.test. 300 AAAA 2001:2::1",
            ]
        );
        let r = ask(&s, "away.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(show(&r, &r.answer).len(), 1);
        assert!(r.authority.is_empty());
        let r = ask(&s, "dangling.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(show(&r, &r.answer).len(), 1);
        assert_eq!(show(&r, &r.authority).len(), 1);
        let r = ask(&s, "loop1.example.test.", RecordType::A, 0);
        assert_eq!(show(&r, &r.answer).len(), 2);
        let r = ask(&s, "alias.example.test.", RecordType::CNAME, 0);
        assert_eq!(
            show(&r, &r.answer),
            ["alias.example.test. 300 CNAME www.example.test."]
        );
    }

    #[test]
    fn wildcards_synthesize_the_asked_name() {
        let s = snapshot(ZONE, "");
        let r = ask(&s, "x.y.wild.example.test.", RecordType::A, 0);
        assert!(r.authoritative);
        assert_eq!(
            show(&r, &r.answer),
            ["x.y.wild.example.test. 300 A 198.18.0.77"]
        );
        let r = ask(&s, "x.wild.example.test.", RecordType::MX, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answer.is_empty());
        // The wildcard name itself matches as an ordinary name.
        let r = ask(&s, "*.wild.example.test.", RecordType::TXT, 0);
        assert_eq!(
            show(&r, &r.answer),
            ["*.wild.example.test. 300 TXT \"wild\""]
        );
        // A wildcard CNAME is synthesized, then followed.
        let r = ask(&s, "app.wc.example.test.", RecordType::AAAA, 0);
        assert_eq!(
            show(&r, &r.answer),
            [
                "app.wc.example.test. 300 CNAME www.example.test.",
                "www.example.test. 300 AAAA 2001:2::1"
            ]
        );
        // A wildcard does not cover names below an existing name (RFC 4592 §2.2.1).
        let r = ask(&s, "x.www.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn delegations_refer_without_aa_with_glue() {
        let s = snapshot(ZONE, "");
        for name in [
            "sub.example.test.",
            "deep.below.sub.example.test.",
            "ns.sub.example.test.",
        ] {
            let r = ask(&s, name, RecordType::A, 0);
            assert_eq!(r.rcode, ResponseCode::NoError, "{name}");
            assert!(!r.authoritative, "{name}");
            assert!(r.answer.is_empty(), "{name}");
            assert_eq!(show(&r, &r.authority).len(), 2, "{name}");
            assert_eq!(
                show(&r, &r.additional),
                ["ns.sub.example.test. 300 A 198.18.1.53"]
            );
        }
        // DS is answered by the parent side of the cut.
        let r = ask(&s, "sub.example.test.", RecordType::DS, 0);
        assert!(r.authoritative);
        assert_eq!(show(&r, &r.authority).len(), 1);
    }

    #[test]
    fn a_served_child_zone_answers_below_its_cut_but_ds_comes_from_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/example.test.zone"), ZONE).unwrap();
        let child = "$TTL 60
@    IN SOA ns.sub.example.test. hostmaster 1 3600 600 86400 60
     IN NS  ns
ns   IN A   198.18.1.53
host IN A   198.18.1.80
";
        std::fs::write(dir.path().join("zones/sub.example.test.zone"), child).unwrap();
        let s = Snapshot::build(&crate::zone::load(dir.path()).unwrap(), None);
        let r = ask(&s, "host.sub.example.test.", RecordType::A, 0);
        assert!(r.authoritative);
        assert_eq!(
            show(&r, &r.answer),
            ["host.sub.example.test. 60 A 198.18.1.80"]
        );
        let r = ask(&s, "sub.example.test.", RecordType::DS, 0);
        assert!(r.authoritative);
        let soa = show(&r, &r.authority);
        assert!(soa[0].starts_with("example.test. 120 SOA"), "{soa:?}");
        let r = ask(&s, "sub.example.test.", RecordType::SOA, 0);
        assert!(show(&r, &r.answer)[0].starts_with("sub.example.test. 60 SOA"));
    }

    #[test]
    fn mx_answers_carry_in_zone_addresses_as_additional() {
        let s = snapshot(ZONE, "");
        let r = ask(&s, "example.test.", RecordType::MX, 0);
        assert_eq!(
            show(&r, &r.additional),
            ["mail.example.test. 300 A 198.18.0.25"]
        );
    }

    #[test]
    fn any_is_answered_with_a_single_rrset() {
        let s = snapshot(ZONE, "");
        let r = ask(&s, "www.example.test.", RecordType::ANY, 0);
        assert_eq!(show(&r, &r.answer).len(), 3);
        assert!(show(&r, &r.answer).iter().all(|l| l.contains(" A ")));
        let r = ask(&s, "example.test.", RecordType::ANY, 0);
        assert_eq!(
            show(&r, &r.answer),
            ["example.test. 300 NS ns1.example.test."]
        );
        assert_eq!(
            show(&r, &r.additional),
            ["ns1.example.test. 300 A 198.18.0.53"]
        );
    }

    #[test]
    fn names_outside_the_zones_are_refused() {
        let s = snapshot(ZONE, "");
        for name in ["example.org.", "test.", "."] {
            let r = ask(&s, name, RecordType::A, 0);
            assert_eq!(r.rcode, ResponseCode::Refused, "{name}");
            assert!(!r.authoritative);
        }
    }

    const DNAMES: &str = "dn       IN DNAME target
dn       IN A     198.18.0.60
target   IN A     198.18.0.61
www.target 60 IN A 198.18.0.62
alias.target IN CNAME www.target
dn2      IN DNAME dn
out  600 IN DNAME elsewhere.test.
to-dn    IN CNAME www.dn
self     IN DNAME x.self
dloop1   IN DNAME dloop2
dloop2   IN DNAME dloop1
sub-dn   IN DNAME sub
long     IN DNAME a23456789012345678901234567890123456789012345678901234567890123.b23456789012345678901234567890123456789012345678901234567890123.c23456789012345678901234567890123456789012345678901234567890123.test.
";

    fn dname_snapshot() -> Snapshot {
        snapshot(&format!("{ZONE}{DNAMES}"), "")
    }

    #[test]
    fn a_name_below_a_dname_gets_the_dname_a_synthesized_cname_and_the_target() {
        let s = dname_snapshot();
        let r = ask(&s, "WwW.Dn.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(
            show(&r, &r.answer),
            [
                "Dn.example.test. 300 DNAME 0sQoAAAAAAAAAAAAAAAAAA==",
                "WwW.Dn.example.test. 300 CNAME WwW.target.example.test.",
                "WwW.target.example.test. 60 A 198.18.0.62",
            ]
            .map(|l| l.replace(
                "0sQoAAAAAAAAAAAAAAAAAA==",
                &dname_rdata("target.example.test.")
            ))
        );
        let owners: Vec<_> = r.records(&r.answer).map(|r| r.name.to_string()).collect();
        assert_eq!(
            owners,
            [
                "Dn.example.test.",
                "WwW.Dn.example.test.",
                "WwW.target.example.test."
            ],
            "owners keep the case asked"
        );
        assert!(r.authority.is_empty());
    }

    fn dname_rdata(target: &str) -> String {
        let name = Name::from_ascii(target).unwrap();
        let data = crate::zone::parse_records(&format!("x 1 IN DNAME {name}\n"), &name)
            .unwrap()
            .remove(0)
            .data;
        crate::zone::records::rdata_text(data.record_type(), &data)
    }

    #[test]
    fn the_dname_owner_answers_normally() {
        let s = dname_snapshot();
        let r = ask(&s, "dn.example.test.", RecordType::A, 0);
        assert_eq!(show(&r, &r.answer), ["dn.example.test. 300 A 198.18.0.60"]);
        let r = ask(&s, "dn.example.test.", RecordType::DNAME, 0);
        assert_eq!(show(&r, &r.answer).len(), 1);
        let r = ask(&s, "dn.example.test.", RecordType::TXT, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answer.is_empty());
        assert_eq!(show(&r, &r.authority).len(), 1);
    }

    #[test]
    fn dname_chains_nxdomain_cname_questions_and_out_of_zone_targets() {
        let s = dname_snapshot();
        let types = |r: &Response| -> Vec<String> {
            r.records(&r.answer)
                .map(|r| format!("{} {}", r.name, r.record_type()))
                .collect()
        };
        // DNAME, then a CNAME at the rewritten name.
        let r = ask(&s, "alias.dn.example.test.", RecordType::A, 0);
        assert_eq!(
            types(&r),
            [
                "dn.example.test. DNAME",
                "alias.dn.example.test. CNAME",
                "alias.target.example.test. CNAME",
                "www.target.example.test. A"
            ]
        );
        // DNAME to a DNAME.
        let r = ask(&s, "www.dn2.example.test.", RecordType::A, 0);
        assert_eq!(types(&r).len(), 5, "{:?}", types(&r));
        // A CNAME into a DNAME.
        let r = ask(&s, "to-dn.example.test.", RecordType::A, 0);
        assert_eq!(
            types(&r),
            [
                "to-dn.example.test. CNAME",
                "dn.example.test. DNAME",
                "www.dn.example.test. CNAME",
                "www.target.example.test. A"
            ]
        );
        // The rewritten name does not exist.
        let r = ask(&s, "nope.dn.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(types(&r).len(), 2);
        assert_eq!(show(&r, &r.authority).len(), 1);
        // A CNAME question is answered by the synthesized CNAME alone.
        let r = ask(&s, "www.dn.example.test.", RecordType::CNAME, 0);
        assert_eq!(types(&r).len(), 2);
        // Out of the zone: the DNAME's TTL on both records, not followed.
        let r = ask(&s, "a.b.out.example.test.", RecordType::A, 0);
        assert_eq!(
            show(&r, &r.answer)[1],
            "a.b.out.example.test. 600 CNAME a.b.elsewhere.test."
        );
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authority.is_empty());
        // Into a delegation: a referral after the synthesized CNAME, with AA.
        let r = ask(&s, "www.sub-dn.example.test.", RecordType::A, 0);
        assert!(r.authoritative);
        assert_eq!(types(&r).len(), 2);
        assert_eq!(show(&r, &r.authority).len(), 2);
    }

    #[test]
    fn dname_loops_stop_as_nsd_stops_them() {
        let s = dname_snapshot();
        let r = ask(&s, "a.self.example.test.", RecordType::A, 0);
        assert_eq!(
            show(&r, &r.answer).len(),
            2,
            "one rewrite below its own owner"
        );
        assert_eq!(r.rcode, ResponseCode::NoError);
        let r = ask(&s, "x.dloop1.example.test.", RecordType::A, 0);
        assert_eq!(show(&r, &r.answer).len(), 4, "{:?}", show(&r, &r.answer));
    }

    #[test]
    fn an_overlong_rewrite_is_yxdomain_with_the_dname() {
        let s = dname_snapshot();
        let label = "x".repeat(60);
        let r = ask(&s, &format!("{label}.long.example.test."), RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::YXDomain);
        assert!(r.authoritative);
        assert_eq!(show(&r, &r.answer).len(), 1);
        assert!(r.authority.is_empty());
        let r = ask(&s, "x.long.example.test.", RecordType::A, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(show(&r, &r.answer).len(), 2);
    }

    #[test]
    fn names_below_a_dname_never_take_the_fast_path() {
        let s = dname_snapshot();
        // Encoded by hickory, so that the fast path reads a query its own
        // tests did not build.
        let query = |name: &str, qtype: u16| {
            let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = true;
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::from(qtype),
            ));
            m.to_vec().unwrap()
        };
        let rotation = std::sync::atomic::AtomicU64::new(0);
        let mut out = Vec::new();
        for name in [
            "www.dn.example.test.",
            "nope.dn.example.test.",
            "a.b.out.example.test.",
        ] {
            assert!(
                !crate::serve::fast_path::answer(&s, &query(name, 1), LOCAL, &rotation, &mut out),
                "{name}"
            );
        }
        // The owner itself is an ordinary name: the fast path may answer it.
        assert!(crate::serve::fast_path::answer(
            &s,
            &query("dn.example.test.", 1),
            LOCAL,
            &rotation,
            &mut out
        ));
        assert!(crate::serve::fast_path::answer(
            &s,
            &query("dn.example.test.", 39),
            LOCAL,
            &rotation,
            &mut out
        ));
    }

    /// Issue 9's answer classes.
    const EDGES: &str = "*.wmail   IN A     198.18.13.1
*.wmail   IN AAAA  2001:2::13:1
mx-wild   IN MX    10 host.wmail
mx-wild   IN MX    20 mail
mx-wild   IN MX    30 HOST.wmail
mx-cname  IN MX    10 a.wc
mx-below  IN MX    10 x.www
mx-cut    IN MX    10 x.sub
srv-wild  IN SRV   0 0 443 sip.wmail
wdel      IN NS    ns.wmail
mixed     IN NS    ns1.mixed
mixed     IN NS    ns.sub
mixed     IN NS    ns.elsewhere.test.
ns1.mixed 70 IN A  198.18.2.1
ns1.mixed 20 IN A  198.18.2.2
mttl  100 IN A     198.18.17.1
mttl  200 IN A     198.18.17.2
mttl   50 IN A     198.18.17.3
*.mttlw 100 IN TXT \"a\"
*.mttlw  20 IN TXT \"b\"
mttlmx 300 IN MX   10 mttl
mttlmx  60 IN MX   20 mail
";

    fn edges() -> Snapshot {
        snapshot(&format!("{ZONE}{EDGES}"), "")
    }

    #[test]
    fn targets_covered_by_a_wildcard_get_its_addresses_under_their_own_name() {
        let s = edges();
        let r = ask(&s, "mx-wild.example.test.", RecordType::MX, 0);
        assert_eq!(
            show(&r, &r.additional),
            [
                "host.wmail.example.test. 300 A 198.18.13.1",
                "host.wmail.example.test. 300 AAAA 2001:2::13:1",
                "mail.example.test. 300 A 198.18.0.25",
            ],
            "each target once (names compare without case), A then AAAA"
        );
        let r = ask(&s, "srv-wild.example.test.", RecordType::SRV, 0);
        assert_eq!(show(&r, &r.additional).len(), 2);
        assert!(show(&r, &r.additional)[0].starts_with("sip.wmail.example.test. "));
        // A referral to a name server covered by a wildcard carries its
        // addresses too, as optional glue: the name is not below the cut.
        let r = ask(&s, "x.wdel.example.test.", RecordType::A, 0);
        assert!(!r.authoritative);
        assert_eq!(show(&r, &r.additional).len(), 2);
        assert!((0..r.additional.len()).all(|i| !r.additional.is_required(i)));
    }

    #[test]
    fn a_wildcard_gives_no_addresses_where_it_does_not_apply() {
        let s = edges();
        for name in [
            // *.wc is a CNAME: additional processing does not follow it.
            "mx-cname.example.test.",
            // www exists: *.example.test would not cover x.www anyway, and
            // no wildcard exists below www.
            "mx-below.example.test.",
            // Below a zone cut only glue that exists counts.
            "mx-cut.example.test.",
        ] {
            let r = ask(&s, name, RecordType::MX, 0);
            assert_eq!(show(&r, &r.answer).len(), 1, "{name}");
            assert!(
                r.additional.is_empty(),
                "{name}: {:?}",
                show(&r, &r.additional)
            );
        }
    }

    #[test]
    fn only_the_glue_of_in_domain_name_servers_of_a_referral_is_required() {
        let s = edges();
        let r = ask(&s, "www.mixed.example.test.", RecordType::A, 0);
        assert!(!r.authoritative);
        assert_eq!(show(&r, &r.authority).len(), 3);
        let glue: Vec<(String, bool)> = (0..r.additional.len())
            .map(|i| {
                let owner = r.rrset(&r.additional, i).first().unwrap().name.to_string();
                (owner, r.additional.is_required(i))
            })
            .collect();
        assert_eq!(
            glue,
            [
                ("ns1.mixed.example.test.".to_string(), true),
                ("ns.sub.example.test.".to_string(), false),
            ],
            "ns1.mixed is below the cut (RFC 9471 §3), ns.sub is sibling glue"
        );
        // The same addresses in an answer are optional data.
        let r = ask(&s, "example.test.", RecordType::NS, 0);
        assert!(!r.additional.is_empty());
        assert!((0..r.additional.len()).all(|i| !r.additional.is_required(i)));
        // Glue that a CNAME leads to is still the referral's.
        let s = snapshot(&format!("{ZONE}{EDGES}to-mixed IN CNAME x.mixed\n"), "");
        let r = ask(&s, "to-mixed.example.test.", RecordType::A, 0);
        assert!(r.authoritative);
        assert!(r.additional.is_required(0));
    }

    #[test]
    fn rrsets_with_mixed_ttls_are_served_with_the_lowest_on_every_path() {
        let s = edges();
        let ttls = |r: &Response, section: &Section| -> Vec<u32> {
            r.records(section).map(|rec| rec.ttl).collect()
        };
        let r = ask(&s, "mttl.example.test.", RecordType::A, 0);
        assert_eq!(ttls(&r, &r.answer), [50, 50, 50]);
        let r = ask(&s, "x.mttlw.example.test.", RecordType::TXT, 0);
        assert_eq!(ttls(&r, &r.answer), [20, 20], "at a wildcard");
        let r = ask(&s, "x.mixed.example.test.", RecordType::A, 0);
        assert_eq!(ttls(&r, &r.additional), [20, 20, 300], "in glue");
        let r = ask(&s, "mttlmx.example.test.", RecordType::MX, 0);
        assert_eq!(ttls(&r, &r.answer), [60, 60]);
        assert_eq!(
            ttls(&r, &r.additional)[..3],
            [50, 50, 50],
            "in the addresses an answer adds"
        );
    }

    fn transfer(s: &Snapshot, name: &str, qtype: RecordType, qclass: DNSClass) -> ResponseCode {
        let name = Name::from_ascii(name).unwrap();
        let q = Question {
            name: &name,
            qtype,
            qclass,
        };
        let r = transfer_over_udp(s, &q, |_| false);
        assert!(!r.authoritative && r.answer.is_empty() && r.authority.is_empty());
        r.rcode
    }

    #[test]
    fn an_ixfr_over_udp_from_a_reader_allowed_gets_the_soa_alone() {
        let s = edges();
        let name = Name::from_ascii("Example.TEST.").unwrap();
        let q = Question {
            name: &name,
            qtype: RecordType::IXFR,
            qclass: DNSClass::IN,
        };
        let r = transfer_over_udp(&s, &q, |zone| zone.origin.to_ascii() == "example.test.");
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        let answer = show(&r, &r.answer);
        assert_eq!(answer.len(), 1, "{answer:?}");
        assert!(
            answer[0].starts_with("Example.TEST. ") && answer[0].contains(" SOA "),
            "{answer:?}"
        );
    }

    #[test]
    fn transfers_over_udp_are_answered_as_nsd_answers_them() {
        let s = edges();
        let (axfr, ixfr, class_in) = (RecordType::AXFR, RecordType::IXFR, DNSClass::IN);
        for name in ["example.test.", "Www.Example.Test.", "example.org."] {
            assert_eq!(
                transfer(&s, name, axfr, class_in),
                ResponseCode::NotImp,
                "{name}"
            );
        }
        assert_eq!(
            transfer(&s, "Example.TEST.", ixfr, class_in),
            ResponseCode::Refused
        );
        for name in [
            "www.example.test.",
            "sub.example.test.",
            "example.org.",
            ".",
        ] {
            assert_eq!(
                transfer(&s, name, ixfr, class_in),
                ResponseCode::NotAuth,
                "{name}"
            );
        }
        let class_ch = DNSClass::CH;
        assert_eq!(
            transfer(&s, "example.test.", axfr, class_ch),
            ResponseCode::Refused
        );
        // Over TCP the answer path refuses both, as before.
        let r = ask(&s, "example.test.", RecordType::AXFR, 0);
        assert_eq!(r.rcode, ResponseCode::Refused);
    }
}
