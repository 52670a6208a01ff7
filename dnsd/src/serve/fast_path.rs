//! The UDP fast path: the common queries answered straight from the wire.
//!
//! Most traffic is a plain QUERY for one name in class IN, without EDNS
//! options, whose answer is an RRset, NODATA or NXDOMAIN. For those, the
//! response is assembled from bytes prepared when the snapshot was built:
//! the header, the question copied from the query, each record pre-encoded
//! without its owner name (the owner becomes a compression pointer into the
//! question, which also echoes the asker's case), and a fixed OPT record.
//! No allocation, no parsing into objects, no encoder.
//!
//! Everything else — CNAMEs, wildcards, referrals, additional data, ANY,
//! EDNS options or versions, truncation, malformed input — returns `None`
//! and takes the general path (`server::Handler`), which is the reference:
//! the fast path must produce exactly what it would, byte order of records
//! aside.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::answer::{rotate, steer};
use crate::serve::MAX_UDP_PAYLOAD;
use crate::snapshot::encoded::wire_len;
use crate::snapshot::{Lookup, RrSet, Snapshot};
use crate::zone::name_key::NameKey;

/// The parts of a query the fast path understands.
struct Parsed {
    id: [u8; 2],
    rd: bool,
    key: NameKey,
    /// End of the question (after QTYPE and QCLASS).
    question_end: usize,
    qname_len: usize,
    qtype: u16,
    /// The EDNS payload and DO bit, if the query had an OPT record.
    edns: Option<(u16, bool)>,
}

const CLASS_IN: u16 = zonefile::codes::IN;
const TYPE_OPT: u16 = zonefile::codes::OPT;

/// Types the general path treats specially: CNAME is answered as an
/// ordinary type; the reserved type 0 and every meta type or QTYPE (OPT,
/// TSIG, IXFR, AXFR, ANY, ...) are not.
fn is_special(qtype: u16) -> bool {
    qtype == 0 || zonefile::is_meta(qtype)
}

fn parse(query: &[u8]) -> Option<Parsed> {
    let h = query.get(..12)?;
    // QR clear, opcode QUERY, TC clear; the Z/AD/CD bits are ignored.
    if h[2] & 0xfa != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    // The name: plain labels only, no compression.
    let at = crate::zone::name_key::plain_name_end(query, 12)?;
    let qname_len = at - 12;
    let key = NameKey::from_wire(query.get(12..at)?)?;
    let fixed = query.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN || is_special(qtype) {
        return None;
    }
    let question_end = at + 4;
    let edns = if count(10) == 1 {
        // Exactly an OPT record for the root, version 0, no options.
        let opt = query.get(question_end..)?;
        if opt.len() != 11 || opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
            return None;
        }
        let (version, flags, rdlen) = (opt[6], opt[7], u16::from_be_bytes([opt[9], opt[10]]));
        if version != 0 || rdlen != 0 {
            return None;
        }
        Some((u16::from_be_bytes([opt[3], opt[4]]), flags & 0x80 != 0))
    } else if query.len() != question_end {
        return None;
    } else {
        None
    };
    Some(Parsed {
        id: [h[0], h[1]],
        rd: h[2] & 0x01 != 0,
        key,
        question_end,
        qname_len,
        qtype,
        edns,
    })
}

/// A record's octets before its RDLENGTH: the owner as a compression
/// pointer, TYPE, CLASS and TTL.
const RECORD_HEAD: usize = 2 + 2 + 2 + 4;

/// What every record of `set` owned by the name at `pointer` starts with:
/// the owner as that pointer, TYPE, CLASS and TTL. Its RDLENGTH and RDATA
/// follow, as `Rdatas` keeps them.
fn record_head(pointer: u16, set: &RrSet) -> [u8; RECORD_HEAD] {
    let mut head = [0; RECORD_HEAD];
    head[..2].copy_from_slice(&pointer.to_be_bytes());
    head[2..4].copy_from_slice(&u16::from(set.rtype).to_be_bytes());
    head[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
    head[6..].copy_from_slice(&set.ttl.to_be_bytes());
    head
}

/// Answers `query` into `out` if it is one the fast path serves; `out`
/// then holds the whole response. Takes a number from `rotation` only when
/// it answers, so that the general path numbers the others.
pub fn answer(
    snapshot: &Snapshot,
    query: &[u8],
    src: IpAddr,
    rotation: &AtomicU64,
    out: &mut Vec<u8>,
) -> bool {
    let Some(q) = parse(query) else {
        return false;
    };
    let qtype = hickory_proto::rr::RecordType::from(q.qtype);
    let crate::snapshot::ZoneLookup::Serving(zone) = snapshot.find_zone(q.key.as_bytes(), qtype)
    else {
        return false;
    };
    let (rcode, answer, soa): (u8, Option<&RrSet>, bool) =
        match zone.lookup(q.key.as_bytes(), qtype) {
            Lookup::Node(node) => {
                if qtype != hickory_proto::rr::RecordType::CNAME
                    && node.get(hickory_proto::rr::RecordType::CNAME).is_some()
                {
                    return false;
                }
                match node.get(qtype) {
                    // NS, MX and SRV answers may carry their targets'
                    // addresses: general path.
                    Some(set)
                        if matches!(
                            set.rtype,
                            hickory_proto::rr::RecordType::NS
                                | hickory_proto::rr::RecordType::MX
                                | hickory_proto::rr::RecordType::SRV
                        ) =>
                    {
                        return false;
                    }
                    Some(set) => (0, Some(set), false),
                    None => (0, None, true),
                }
            }
            Lookup::NxDomain => (3, None, true),
            // Names below a DNAME get a synthesized CNAME: general path.
            Lookup::Referral { .. } | Lookup::Wildcard(_) | Lookup::Dname { .. } => return false,
        };
    let soa = soa.then_some(&*zone.negative_soa);

    // The size depends on neither the rotation nor a steered choice
    // (address records all have one length, and a choice takes at most the
    // cap), so a response too big for the client is left to the general
    // path, which truncates it, before a rotation number is taken or a
    // choice counted.
    let cap = snapshot.max_answers;
    let answer_len = answer.map_or(0, |set| {
        let take = rotate::window(set.rtype, set.len(), 0, cap).take;
        match set.rdatas.wire().next() {
            _ if take == set.len() => set.rdatas.byte_len() + RECORD_HEAD * take,
            Some(first) => take * (RECORD_HEAD + first.len()),
            None => 0,
        }
    });
    let soa_len = soa.map_or(0, |set| RECORD_HEAD + set.rdatas.byte_len());
    let (opt_len, limit) = match q.edns {
        Some((payload, _)) => (11, usize::from(payload.clamp(512, MAX_UDP_PAYLOAD))),
        None => (0, 512),
    };
    if q.question_end + answer_len + soa_len + opt_len > limit {
        return false;
    }
    // A steered service's addresses go in the order chosen for this client
    // (`answer::steer`); every other RRset is rotated.
    let cx = crate::answer::Context {
        rotation: 0,
        client: Some(steer::Client {
            addr: src,
            ecs_prefix: None,
        }),
    };
    let order = answer.map(|set| {
        let order = match crate::answer::steered(snapshot, q.key.as_bytes(), set, cx, cap) {
            Some(picked) => Order::Picked(picked),
            None => {
                let n = rotation.fetch_add(1, Ordering::Relaxed);
                Order::Window(rotate::window(set.rtype, set.len(), n, cap))
            }
        };
        (set, order)
    });

    out.clear();
    out.extend_from_slice(&q.id);
    out.push(0x80 | 0x04 | u8::from(q.rd));
    out.push(rcode);
    let ancount = order.as_ref().map_or(0, |(_, o)| o.len()) as u16;
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
    out.extend_from_slice(&u16::from(q.edns.is_some()).to_be_bytes());
    out.extend_from_slice(&query[12..q.question_end]);
    if let Some((set, order)) = order {
        // Owner: a pointer to the question name at offset 12.
        let head = record_head(0xc00c, set);
        let mut put = |rdata: &[u8]| {
            out.extend_from_slice(&head);
            out.extend_from_slice(rdata);
        };
        match order {
            Order::Window(w) => set.rdatas.window(w).for_each(&mut put),
            Order::Picked(p) => p
                .indices()
                .filter_map(|i| set.rdatas.wire().nth(i))
                .for_each(&mut put),
        }
    }
    if let Some(set) = soa {
        // Owner: the apex, a suffix of the question name.
        let apex = wire_len(&zone.origin);
        let Some(offset) = (12 + q.qname_len).checked_sub(apex) else {
            return false;
        };
        let head = record_head(0xc000 | offset as u16, set);
        for rdata in set.rdatas.wire() {
            out.extend_from_slice(&head);
            out.extend_from_slice(rdata);
        }
    }
    write_opt(&q, out);
    debug_assert!(out.len() <= limit);
    // Counted here, where the type and code are known (the fast path
    // answers UDP only).
    crate::metrics::query(
        crate::metrics::Transport::Udp,
        crate::metrics::AnswerPath::Fast,
        q.qtype,
        rcode.into(),
    );
    true
}

/// The order an answer's records go in.
enum Order {
    Window(rotate::Window),
    Picked(steer::Picked),
}

impl Order {
    fn len(&self) -> usize {
        match self {
            Order::Window(w) => w.take,
            Order::Picked(p) => p.len(),
        }
    }
}

/// The OPT record of a response to an EDNS query.
fn write_opt(q: &Parsed, out: &mut Vec<u8>) {
    if let Some((_, dnssec_ok)) = q.edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The asker's address where it does not matter.
    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    use crate::answer::{self, Context, Question};
    use hickory_proto::op::Message;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::{DNSClass, RecordType};
    use hickory_proto::serialize::binary::BinDecodable;

    const ZONE: &str = "$TTL 300
@        IN SOA ns1 hostmaster 7 3600 600 86400 120
@        IN NS  ns1
ns1      IN A   198.18.0.53
www   60 IN A   198.18.0.1
www   60 IN A   198.18.0.2
www   30 IN A   198.18.0.3
www      IN AAAA 2001:2::1
txt      IN TXT \"hello world\"
alias    IN CNAME www
*.wild   IN A   198.18.0.77
";

    fn snapshot() -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/example.test.zone"), ZONE).unwrap();
        let ws = crate::zone::load(dir.path()).unwrap();
        Snapshot::build(&ws, None)
    }

    fn query(name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some((payload, dnssec_ok)) = edns {
            p.push(0);
            p.extend_from_slice(&TYPE_OPT.to_be_bytes());
            p.extend_from_slice(&payload.to_be_bytes());
            p.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        }
        p
    }

    /// The fast path's response, decoded, next to what the general answer
    /// function selects for the same question.
    fn both(s: &Snapshot, name: &str, qtype: u16, rotation: u64) -> Option<(Message, Vec<String>)> {
        let q = query(name, qtype, Some((1232, false)));
        let mut out = Vec::new();
        if !answer(s, &q, LOCAL, &AtomicU64::new(rotation), &mut out) {
            return None;
        }
        let msg = Message::from_bytes(&out).unwrap();
        let qname = Name::from_ascii(name).unwrap();
        let general = answer::answer(
            s,
            &Question {
                name: &qname,
                qtype: RecordType::from(qtype),
                qclass: DNSClass::IN,
            },
            Context {
                rotation,
                client: None,
            },
        );
        let mut expected: Vec<String> = general
            .records(&general.answer)
            .chain(general.records(&general.authority))
            .map(crate::change::zone_edit::record_line)
            .collect();
        expected.sort();
        Some((msg, expected))
    }

    fn records(msg: &Message) -> Vec<String> {
        let mut got: Vec<String> = msg
            .answers
            .iter()
            .chain(msg.authorities.iter())
            .map(crate::change::zone_edit::record_line)
            .collect();
        got.sort();
        got
    }

    #[test]
    fn positive_nodata_and_nxdomain_match_the_general_path() {
        let s = snapshot();
        for (name, qtype, rcode) in [
            ("www.example.test.", 1, 0),
            ("WwW.Example.Test.", 28, 0),
            ("txt.example.test.", 16, 0),
            ("www.example.test.", 16, 0),
            ("nope.example.test.", 1, 3),
            ("alias.example.test.", 5, 0),
        ] {
            let (msg, expected) = both(&s, name, qtype, 4).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(msg.metadata.response_code.low(), rcode, "{name}");
            assert!(msg.metadata.authoritative);
            assert!(msg.metadata.recursion_desired, "RD echoed");
            assert_eq!(records(&msg), expected, "{name} {qtype}");
            assert_eq!(
                msg.queries[0].name().to_ascii(),
                name,
                "question echoed as asked"
            );
            assert_eq!(msg.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        }
    }

    #[test]
    fn an_answer_is_counted_under_its_question_type_and_response_code() {
        use crate::metrics::{AnswerPath, Transport, total};
        let s = snapshot();
        // Other tests answer on the fast path too, in parallel: at least
        // this one's answers are counted.
        for (name, qtype, rcode) in [("nope.example.test.", 1, 3), ("WwW.Example.Test.", 28, 0)] {
            let before = total(Transport::Udp, AnswerPath::Fast, qtype, rcode);
            both(&s, name, qtype, 0).unwrap_or_else(|| panic!("{name}"));
            let after = total(Transport::Udp, AnswerPath::Fast, qtype, rcode);
            assert!(after > before, "{name} {qtype}: {before} -> {after}");
        }
    }

    #[test]
    fn answers_rotate_like_the_general_path() {
        let s = snapshot();
        let first = |rotation| {
            let mut out = Vec::new();
            let counter = AtomicU64::new(rotation);
            assert!(answer(
                &s,
                &query("www.example.test.", 1, None),
                LOCAL,
                &counter,
                &mut out
            ));
            Message::from_bytes(&out).unwrap().answers[0]
                .data
                .to_string()
        };
        assert_eq!(
            [first(0), first(1), first(2)],
            ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
        );
    }

    #[test]
    fn everything_else_takes_the_general_path() {
        let s = snapshot();
        let mut out = Vec::new();
        for q in [
            query("alias.example.test.", 1, None),
            query("x.wild.example.test.", 1, None),
            query("example.test.", 255, None),
            query("example.org.", 1, None),
            query("www.example.test.", 1, Some((1232, false)))[..20].to_vec(),
        ] {
            assert!(!answer(&s, &q, LOCAL, &AtomicU64::new(0), &mut out));
        }
        let mut badvers = query("www.example.test.", 1, Some((1232, false)));
        let n = badvers.len();
        badvers[n - 5] = 1;
        assert!(!answer(&s, &badvers, LOCAL, &AtomicU64::new(0), &mut out));
        let mut notify = query("www.example.test.", 1, None);
        notify[2] = 4 << 3;
        assert!(!answer(&s, &notify, LOCAL, &AtomicU64::new(0), &mut out));
    }
}
