//! dnsd answers real clients (dig, and raw packets where dig cannot say
//! what is needed) the way an authoritative server must: one test per rule
//! of issue 3, each against its own dnsd and workspace.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::Result;
use cutover_tests::dig::{Edns, Message, Query};
use cutover_tests::dnsd::{
    Dnsd, DnsdWorkspace, answer_addresses, encode_name, header, loopback, query_packet,
    raw_exchange,
};

const ZONE: &str = "$TTL 300
@          IN SOA ns1 hostmaster 2026112601 7200 3600 1209600 120
@     3600 IN NS  ns1
ns1        IN A   198.18.0.53
www     60 IN A   198.18.0.1
www     60 IN A   198.18.0.2
www     30 IN A   198.18.0.3
pool    60 IN A   198.18.0.11
pool    60 IN A   198.18.0.12
pool    60 IN A   198.18.0.13
pool    60 IN A   198.18.0.14
pool    60 IN A   198.18.0.15
alias      IN CNAME chain
chain      IN CNAME www
gone       IN CNAME nowhere
a.b.deep   IN TXT \"below an empty non-terminal\"
*.apps     IN A   198.18.0.80
sub        IN NS  ns.sub
ns.sub     IN A   198.18.1.53
";

fn serve(n: u8, toml: &str, extra: &str) -> Result<(DnsdWorkspace, Dnsd)> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &format!("{ZONE}{extra}"))?;
    ws.toml(toml)?;
    let dnsd = Dnsd::start(&ws, loopback(n))?;
    Ok((ws, dnsd))
}

fn flags(m: &Message) -> Vec<&str> {
    m.flags.iter().map(String::as_str).collect()
}

fn rdata(records: &[cutover_tests::dig::Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.ttl, r.rtype, r.rdata))
        .collect()
}

const NEGATIVE_SOA: &str = "example.test. 120 IN SOA ns1.example.test. hostmaster.example.test. 2026112601 7200 3600 1209600 120";

#[test]
fn a_client_gets_every_address_with_the_rrsets_one_ttl_and_its_question_as_asked() -> Result<()> {
    let (_ws, dnsd) = serve(10, "", "")?;
    let m = dnsd.ask(&Query::new("WwW.Example.TEST.", "A"))?;
    assert_eq!(m.rcode, "NOERROR", "{m}");
    assert_eq!(flags(&m), ["aa", "qr"], "{m}");
    assert_eq!(m.question, ["WwW.Example.TEST. IN A"], "{m}");
    // The zone gives the records 60, 60 and 30: an RRset has one TTL, the
    // lowest (RFC 2181 §5.2).
    assert_eq!(
        rdata(&m.answer),
        BTreeSet::from([
            "30 A 198.18.0.1".to_string(),
            "30 A 198.18.0.2".into(),
            "30 A 198.18.0.3".into()
        ]),
        "{m}"
    );
    // Minimal positive answers, as Knot: no NS set in the authority section.
    assert!(m.authority.is_empty() && m.additional.is_empty(), "{m}");

    // RD is echoed (dig always clears it here: use a raw query).
    let mut q = query_packet(77, "www.example.test.", 1, false);
    q[2] |= 0x01;
    let reply = raw_exchange(dnsd.addr, &q).expect("an answer");
    assert_eq!(reply[2] & 0x01, 0x01, "RD echoed");
    assert_eq!(reply[3] & 0x80, 0, "RA clear: dnsd does not recurse");
    Ok(())
}

#[test]
fn a_missing_name_is_nxdomain_and_a_missing_type_nodata_both_with_the_negative_ttl_soa()
-> Result<()> {
    let (_ws, dnsd) = serve(11, "", "")?;
    for (name, qtype, rcode) in [
        ("nope.example.test.", "A", "NXDOMAIN"),
        ("www.example.test.", "AAAA", "NOERROR"),
        ("x.www.example.test.", "A", "NXDOMAIN"),
    ] {
        for query in [
            Query::new(name, qtype),
            Query::new(name, qtype).tcp(),
            Query::new(name, qtype).edns(Edns::Off),
        ] {
            let m = dnsd.ask(&query)?;
            assert_eq!(m.rcode, rcode, "{query}: {m}");
            assert_eq!(flags(&m), ["aa", "qr"], "{query}: {m}");
            assert!(m.answer.is_empty(), "{query}: {m}");
            let authority: Vec<String> = m.authority.iter().map(|r| r.to_string()).collect();
            assert_eq!(authority, [NEGATIVE_SOA], "{query}: {m}");
            assert!(m.additional.is_empty(), "{query}: {m}");
        }
    }
    Ok(())
}

#[test]
fn an_empty_non_terminal_exists_and_is_nodata() -> Result<()> {
    let (_ws, dnsd) = serve(12, "", "")?;
    for name in ["deep.example.test.", "b.deep.example.test."] {
        let m = dnsd.ask(&Query::new(name, "A"))?;
        assert_eq!(m.rcode, "NOERROR", "{name}: {m}");
        assert!(m.answer.is_empty(), "{m}");
        assert_eq!(m.authority.len(), 1, "{m}");
    }
    Ok(())
}

#[test]
fn a_cname_chain_inside_the_zone_is_followed_to_the_addresses() -> Result<()> {
    let (_ws, dnsd) = serve(13, "", "")?;
    let m = dnsd.ask(&Query::new("alias.example.test.", "A"))?;
    assert_eq!(m.rcode, "NOERROR", "{m}");
    let types: Vec<&str> = m.answer.iter().map(|r| r.rtype.as_str()).collect();
    assert_eq!(types, ["CNAME", "CNAME", "A", "A", "A"], "{m}");
    assert_eq!(m.answer[0].rdata, "chain.example.test.");
    assert_eq!(m.answer[1].rdata, "www.example.test.");
    // A chain ending at a missing name is NXDOMAIN, with the CNAME.
    let m = dnsd.ask(&Query::new("gone.example.test.", "A"))?;
    assert_eq!(m.rcode, "NXDOMAIN", "{m}");
    assert_eq!(m.answer.len(), 1, "{m}");
    assert_eq!(m.authority.len(), 1, "{m}");
    Ok(())
}

#[test]
fn a_wildcard_answers_for_names_that_do_not_exist_under_it() -> Result<()> {
    let (_ws, dnsd) = serve(14, "", "")?;
    let m = dnsd.ask(&Query::new("shop.apps.example.test.", "A"))?;
    assert_eq!(m.rcode, "NOERROR", "{m}");
    assert_eq!(flags(&m), ["aa", "qr"], "{m}");
    assert_eq!(m.answer.len(), 1, "{m}");
    assert_eq!(m.answer[0].name, "shop.apps.example.test.", "{m}");
    assert_eq!(m.answer[0].rdata, "198.18.0.80", "{m}");
    // The wildcard has no TXT: NODATA, not NXDOMAIN.
    let m = dnsd.ask(&Query::new("shop.apps.example.test.", "TXT"))?;
    assert_eq!((m.rcode.as_str(), m.answer.len()), ("NOERROR", 0), "{m}");
    Ok(())
}

#[test]
fn a_delegated_name_gets_a_referral_without_aa_with_glue() -> Result<()> {
    let (_ws, dnsd) = serve(15, "", "")?;
    for name in ["sub.example.test.", "host.sub.example.test."] {
        let m = dnsd.ask(&Query::new(name, "A"))?;
        assert_eq!(m.rcode, "NOERROR", "{m}");
        assert_eq!(
            flags(&m),
            ["qr"],
            "{name}: a referral is not authoritative: {m}"
        );
        assert!(m.answer.is_empty(), "{m}");
        let ns: Vec<String> = m.authority.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            ns,
            ["sub.example.test. 300 IN NS ns.sub.example.test."],
            "{m}"
        );
        let glue: Vec<String> = m.additional.iter().map(|r| r.to_string()).collect();
        assert_eq!(glue, ["ns.sub.example.test. 300 IN A 198.18.1.53"], "{m}");
    }
    Ok(())
}

#[test]
fn any_is_answered_with_a_single_rrset() -> Result<()> {
    let (_ws, dnsd) = serve(16, "", "")?;
    for query in [
        Query::new("example.test.", "ANY"),
        Query::new("example.test.", "ANY").tcp(),
    ] {
        let m = dnsd.ask(&query)?;
        assert_eq!(m.rcode, "NOERROR", "{m}");
        let types: BTreeSet<&str> = m.answer.iter().map(|r| r.rtype.as_str()).collect();
        assert_eq!(types.len(), 1, "RFC 8482: one RRset: {m}");
    }
    Ok(())
}

#[test]
fn edns_is_echoed_with_a_1232_byte_payload_the_do_bit_and_the_client_subnet_at_scope_0()
-> Result<()> {
    let (_ws, dnsd) = serve(17, "", "")?;
    let m = dnsd.ask(
        &Query::new("www.example.test.", "A")
            .edns(Edns::Payload(4096))
            .subnet("198.18.7.0/24")
            .dnssec(),
    )?;
    let opt = m.opt.as_ref().expect("an OPT record in the response");
    assert_eq!(opt.version, 0, "{m}");
    assert_eq!(opt.udp_payload, 1232, "{m}");
    assert!(opt.flags.contains("do"), "{m}");
    let ecs: Vec<&str> = opt
        .options
        .iter()
        .filter(|(name, _)| name == "CLIENT-SUBNET")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ecs, ["198.18.7.0/24/0"], "{m}");
    // No OPT in, no OPT out.
    let m = dnsd.ask(&Query::new("www.example.test.", "A").edns(Edns::Off))?;
    assert!(m.opt.is_none(), "{m}");
    Ok(())
}

#[test]
fn an_unknown_edns_version_gets_badvers() -> Result<()> {
    let (_ws, dnsd) = serve(18, "", "")?;
    let m = dnsd.ask(&Query::new("www.example.test.", "A").edns(Edns::Version(1)))?;
    assert_eq!(m.rcode, "BADVERS", "{m}");
    assert!(m.answer.is_empty(), "{m}");
    assert_eq!(m.opt.as_ref().map(|o| o.version), Some(0), "{m}");
    Ok(())
}

#[test]
fn an_answer_too_big_for_udp_is_truncated_and_complete_over_tcp() -> Result<()> {
    let many: String = (1..=100)
        .map(|i| format!("many IN A 198.18.2.{i}\n"))
        .collect();
    let (_ws, dnsd) = serve(19, "", &many)?;
    for edns in [Edns::Off, Edns::Payload(1232), Edns::Payload(4096)] {
        let m = dnsd.ask(&Query::new("many.example.test.", "A").edns(edns))?;
        assert!(m.flags.contains("tc"), "{edns:?}: {m}");
        assert!(m.answer.is_empty(), "{m}");
    }
    let m = dnsd.ask(&Query::new("many.example.test.", "A").tcp())?;
    assert!(!m.flags.contains("tc"), "{m}");
    assert_eq!(m.answer.len(), 100, "{m}");
    Ok(())
}

#[test]
fn names_outside_the_served_zones_are_refused() -> Result<()> {
    let (_ws, dnsd) = serve(20, "", "")?;
    for name in ["example.org.", "test.", "."] {
        let m = dnsd.ask(&Query::new(name, "A"))?;
        assert_eq!(m.rcode, "REFUSED", "{name}: {m}");
        assert_eq!(flags(&m), ["qr"], "{m}");
        assert!(m.answer.is_empty() && m.authority.is_empty(), "{m}");
    }
    Ok(())
}

#[test]
fn opcodes_not_served_get_notimp_a_stray_notify_and_an_unsigned_update_are_refused() -> Result<()> {
    let (_ws, dnsd) = serve(21, "", "")?;
    let m = dnsd.ask(&Query::new("example.test.", "SOA").opcode("status"))?;
    assert_eq!(m.rcode, "NOTIMP", "{m}");
    assert_eq!(m.opcode, "STATUS", "{m}");
    // NOTIFY is taken for a [[replica]] zone from its primary only: this
    // zone is none, so it is refused (as BIND refuses it).
    let m = dnsd.ask(&Query::new("example.test.", "SOA").opcode("notify"))?;
    assert_eq!(m.rcode, "REFUSED", "{m}");
    assert_eq!(m.opcode, "NOTIFY", "{m}");
    // UPDATE is served (RFC 2136, TSIG-signed only): an unsigned one is
    // refused, as NSD and Knot refuse it without an ACL.
    let m = dnsd.ask(&Query::new("example.test.", "SOA").opcode("update"))?;
    assert_eq!(m.rcode, "REFUSED", "{m}");
    assert_eq!(m.opcode, "UPDATE", "{m}");
    Ok(())
}

#[test]
fn a_query_without_exactly_one_question_gets_formerr() -> Result<()> {
    let (_ws, dnsd) = serve(22, "", "")?;
    let none = [0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut two = vec![0x12, 0x35, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
    for _ in 0..2 {
        encode_name(&mut two, "www.example.test.");
        two.extend_from_slice(&[0, 1, 0, 1]);
    }
    for (what, packet) in [("no question", &none[..]), ("two questions", &two[..])] {
        let reply = raw_exchange(dnsd.addr, packet).expect("a FORMERR reply");
        let h = header(&reply).expect("a header");
        assert!(h.qr, "{what}");
        assert_eq!(h.rcode, 1, "{what}: FORMERR");
        assert_eq!(h.id, u16::from_be_bytes([packet[0], packet[1]]), "{what}");
    }
    Ok(())
}

/// The first address of each of `n` successive answers for `name`.
fn first_addresses(dnsd: &Dnsd, name: &str, n: u16) -> Vec<Vec<Ipv4Addr>> {
    (0..n)
        .map(|id| {
            let reply = raw_exchange(dnsd.addr, &query_packet(id, name, 1, true)).expect("answer");
            answer_addresses(&reply).expect("a parsable answer")
        })
        .collect()
}

/// Whether `answer` is `all` rotated: a run of `all` starting anywhere.
fn is_rotation_of(answer: &[Ipv4Addr], all: &[Ipv4Addr]) -> bool {
    let Some(start) = all.iter().position(|a| *a == answer[0]) else {
        return false;
    };
    answer
        .iter()
        .enumerate()
        .all(|(i, a)| *a == all[(start + i) % all.len()])
}

#[test]
fn successive_answers_lead_with_each_address_in_turn() -> Result<()> {
    let (_ws, dnsd) = serve(23, "", "")?;
    let all: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(198, 18, 0, i)).collect();
    let answers = first_addresses(&dnsd, "www.example.test.", 9);
    for pair in answers.windows(2) {
        assert_eq!(pair[0].len(), 3);
        assert!(is_rotation_of(&pair[0], &all), "{answers:?}");
        // Cyclic: the next answer starts one address further on.
        let next = all[(all.iter().position(|a| *a == pair[0][0]).unwrap() + 1) % 3];
        assert_eq!(pair[1][0], next, "{answers:?}");
    }
    Ok(())
}

#[test]
fn the_cap_limits_each_answer_and_every_address_still_gets_its_turn() -> Result<()> {
    let (_ws, dnsd) = serve(24, "[server]\nmax_answers = 2\n", "")?;
    let all: Vec<Ipv4Addr> = (11..=15).map(|i| Ipv4Addr::new(198, 18, 0, i)).collect();
    let answers = first_addresses(&dnsd, "pool.example.test.", 10);
    for a in &answers {
        assert_eq!(a.len(), 2, "{answers:?}");
        assert!(is_rotation_of(a, &all), "{answers:?}");
    }
    let firsts: BTreeSet<Ipv4Addr> = answers.iter().map(|a| a[0]).collect();
    assert_eq!(
        firsts.len(),
        5,
        "every address leads an answer: {answers:?}"
    );
    Ok(())
}

#[test]
fn a_service_in_dnsd_toml_replaces_the_addresses_of_the_zone_file() -> Result<()> {
    let toml = "[[service]]\nname = \"www.example.test\"\naddresses = [\"198.18.9.1\", \"198.18.9.2\"]\nttl = 20\n";
    let (_ws, dnsd) = serve(25, toml, "")?;
    let m = dnsd.ask(&Query::new("www.example.test.", "A"))?;
    assert_eq!(
        rdata(&m.answer),
        BTreeSet::from(["20 A 198.18.9.1".to_string(), "20 A 198.18.9.2".into()]),
        "{m}"
    );
    Ok(())
}

/// A renamed subtree: `old` moved to `new` with one DNAME, a subtree moved
/// out of the zone, and a target so long that long names cannot follow it.
const DNAMES: &str = "old        IN DNAME new
old        IN TXT \"the old name still answers for itself\"
www.new 60 IN A   198.18.0.90
api.new    IN CNAME www.new
away   900 IN DNAME elsewhere.test.
far        IN DNAME a123456789012345678901234567890123456789012345678901234567890.b123456789012345678901234567890123456789012345678901234567890.c123456789012345678901234567890123456789012345678901234567890.test.
";

fn records(m: &Message) -> Vec<String> {
    m.answer.iter().map(|r| r.to_string()).collect()
}

#[test]
fn a_client_asking_an_old_name_below_a_dname_is_led_to_the_new_one() -> Result<()> {
    let (_ws, dnsd) = serve(26, "", DNAMES)?;
    for query in [
        Query::new("WwW.Old.Example.TEST.", "A"),
        Query::new("WwW.Old.Example.TEST.", "A").tcp(),
        Query::new("WwW.Old.Example.TEST.", "A").edns(Edns::Off),
    ] {
        let m = dnsd.ask(&query)?;
        assert_eq!(m.rcode, "NOERROR", "{query}: {m}");
        assert_eq!(flags(&m), ["aa", "qr"], "{query}: {m}");
        assert_eq!(m.question, ["WwW.Old.Example.TEST. IN A"], "{query}: {m}");
        assert_eq!(
            records(&m),
            [
                "old.example.test. 300 IN DNAME new.example.test.",
                "www.old.example.test. 300 IN CNAME www.new.example.test.",
                "www.new.example.test. 60 IN A 198.18.0.90",
            ],
            "{query}: the DNAME, the CNAME synthesized with its TTL, the address"
        );
        assert!(m.authority.is_empty() && m.additional.is_empty(), "{m}");
    }
    // The rewritten name's own CNAME is followed too.
    let m = dnsd.ask(&Query::new("api.old.example.test.", "A"))?;
    assert_eq!(m.answer.len(), 4, "{m}");
    // A CNAME question stops at the synthesized CNAME.
    let m = dnsd.ask(&Query::new("www.old.example.test.", "CNAME"))?;
    assert_eq!(m.answer.len(), 2, "{m}");
    // An old name whose new name does not exist: NXDOMAIN, with the SOA.
    let m = dnsd.ask(&Query::new("nope.old.example.test.", "A"))?;
    assert_eq!(m.rcode, "NXDOMAIN", "{m}");
    assert_eq!(m.answer.len(), 2, "{m}");
    let authority: Vec<String> = m.authority.iter().map(|r| r.to_string()).collect();
    assert_eq!(authority, [NEGATIVE_SOA], "{m}");
    Ok(())
}

#[test]
fn a_dname_owner_answers_for_itself() -> Result<()> {
    let (_ws, dnsd) = serve(27, "", DNAMES)?;
    let m = dnsd.ask(&Query::new("old.example.test.", "TXT"))?;
    assert_eq!(
        records(&m),
        ["old.example.test. 300 IN TXT \"the old name still answers for itself\""],
        "{m}"
    );
    let m = dnsd.ask(&Query::new("Old.Example.Test.", "DNAME"))?;
    assert_eq!(
        records(&m),
        ["old.example.test. 300 IN DNAME new.example.test."],
        "{m}"
    );
    assert_eq!(m.question, ["Old.Example.Test. IN DNAME"], "{m}");
    let m = dnsd.ask(&Query::new("old.example.test.", "A"))?;
    assert_eq!(m.rcode, "NOERROR", "{m}");
    assert!(m.answer.is_empty(), "NODATA at the owner: {m}");
    assert_eq!(m.authority.len(), 1, "{m}");
    Ok(())
}

#[test]
fn a_dname_out_of_the_zone_or_too_long_to_follow() -> Result<()> {
    let (_ws, dnsd) = serve(28, "", DNAMES)?;
    // Out of the zone: the client's resolver follows the CNAME itself.
    let m = dnsd.ask(&Query::new("a.b.away.example.test.", "AAAA"))?;
    assert_eq!(m.rcode, "NOERROR", "{m}");
    assert_eq!(
        records(&m),
        [
            "away.example.test. 900 IN DNAME elsewhere.test.",
            "a.b.away.example.test. 900 IN CNAME a.b.elsewhere.test.",
        ],
        "{m}"
    );
    assert!(m.authority.is_empty(), "{m}");
    // Too long: YXDOMAIN with the DNAME (RFC 6672 §2.2), over UDP and TCP.
    let long = format!("{}.far.example.test.", "x".repeat(63));
    for query in [Query::new(&long, "A"), Query::new(&long, "A").tcp()] {
        let m = dnsd.ask(&query)?;
        assert_eq!(m.rcode, "YXDOMAIN", "{query}: {m}");
        assert_eq!(flags(&m), ["aa", "qr"], "{query}: {m}");
        assert_eq!(m.answer.len(), 1, "{query}: {m}");
        assert_eq!(m.answer[0].rtype, "DNAME", "{m}");
        assert!(m.authority.is_empty(), "{m}");
    }
    // A shorter name below the same DNAME fits.
    let m = dnsd.ask(&Query::new("x.far.example.test.", "A"))?;
    assert_eq!(m.rcode, "NOERROR", "{m}");
    assert_eq!(m.answer.len(), 2, "{m}");
    Ok(())
}
