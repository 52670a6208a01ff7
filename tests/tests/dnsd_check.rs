//! Broken zone files and broken TOML: `dnsd check` names the file, the line
//! and the problem; a broken zone is not served (SERVFAIL) while every other
//! zone is, and a broken `dnsd.toml` stops dnsd from starting. And an
//! address another dnsd already serves: the second refuses to start.

use std::net::SocketAddr;

use anyhow::Result;
use cutover_tests::bins;
use cutover_tests::dig::Query;
use cutover_tests::dns_peers::{free_port, sbin};
use cutover_tests::dnsd::{
    Dnsd, DnsdWorkspace, check, header, loopback, query_packet, raw_exchange, run_to_exit,
};

const GOOD: &str = "$TTL 300
@    IN SOA ns1 hostmaster 1 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
www  IN A   198.18.0.1
";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_accepts_a_good_workspace_and_summarises_it() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", GOOD)?;
    ws.zone("other.test.", GOOD)?;
    ws.toml("[[service]]\nname = \"api.example.test\"\naddresses = [\"198.18.0.7\"]\nttl = 60\n")?;
    let out = check(ws.path())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("ok: 2 zones, 9 records, 1 services"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn check_says_a_replica_is_not_yet_transferred_and_refuses_a_service_inside_it() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", GOOD)?;
    ws.toml("[[replica]]\nzone = \"example.org.\"\nprimary = \"198.18.0.60\"\n")?;
    let out = check(ws.path())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("example.org.: replica of 198.18.0.60:53: not transferred yet"),
        "{stdout}"
    );
    ws.toml(
        "[[replica]]\nzone = \"example.org.\"\nprimary = \"198.18.0.60\"\n\
         [[service]]\nname = \"www.example.org.\"\naddresses = [\"198.18.0.7\"]\nttl = 60\n",
    )?;
    let out = check(ws.path())?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "dnsd.toml:5:8: field `service[0].name`: www.example.org. is inside example.org., a replica of 198.18.0.60:53"
        ),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// Each broken zone and the `file:line` and words its error must carry.
const BROKEN_ZONES: &[(&str, &str, &str, &str)] = &[
    (
        "bad-address.test.",
        "www  IN A   198.18.0.300\n",
        ":6:",
        "198.18.0.300",
    ),
    (
        "bad-type.test.",
        "www  IN BOGUS foo\nok IN A 198.18.0.2\n",
        ":6:",
        "BOGUS",
    ),
    ("unclosed.test.", "txt  IN TXT ( \"a\"\n\"b\"\n", ":6:", ""),
    (
        "outside.test.",
        "ok IN A 198.18.0.2\nwww.elsewhere.test. IN A 198.18.0.2\n",
        ":7:",
        "outside the zone",
    ),
    (
        "cname-and-data.test.",
        "mail IN A 198.18.0.25\nmail IN CNAME www\n",
        ":7:",
        "CNAME and other data at the same name (CNAME on line 7, A on line 6)",
    ),
];

#[test]
fn check_names_the_file_line_and_problem_of_each_broken_zone() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    for (origin, tail, _, _) in BROKEN_ZONES {
        ws.zone(origin, &format!("{GOOD}{tail}"))?;
    }
    ws.zone("no-soa.test.", "$TTL 60\nwww IN A 198.18.0.1\n")?;
    let out = check(ws.path())?;
    assert!(!out.status.success());
    let err = stderr(&out);
    for (origin, _, line, words) in BROKEN_ZONES {
        let file = format!("{}.zone{line}", origin.trim_end_matches('.'));
        let hit = err
            .lines()
            .find(|l| l.contains(&file))
            .unwrap_or_else(|| panic!("no error naming {file}:\n{err}"));
        assert!(hit.contains(words), "{hit}");
    }
    assert!(
        err.contains("no-soa.test.zone: the zone has no SOA"),
        "{err}"
    );
    Ok(())
}

#[test]
fn check_names_the_file_line_and_field_of_broken_toml() -> Result<()> {
    let cases = [
        (
            "[server]\nlisten = [\"127.0.0.1:53\"\nmax_answers = 8\n",
            "dnsd.toml:3:",
        ),
        ("[server]\nmax_answer = 8\n", "dnsd.toml:2:"),
        (
            "[[service]]\nname = \"www.example.test\"\naddresses = [\"198.18.0.1\", \"nope\"]\nttl = 60\n",
            "dnsd.toml:3:",
        ),
        (
            "\n\n[[service]]\nname = \"www.not-served.test\"\naddresses = [\"198.18.0.1\"]\nttl = 60\n",
            "dnsd.toml:3:",
        ),
    ];
    for (toml, location) in cases {
        let ws = DnsdWorkspace::new()?;
        ws.zone("example.test.", GOOD)?;
        ws.toml(toml)?;
        let out = check(ws.path())?;
        assert!(!out.status.success(), "{toml}");
        let err = stderr(&out);
        assert!(
            err.contains(location),
            "{toml}\nwanted {location} in:\n{err}"
        );
    }
    Ok(())
}

#[test]
fn a_broken_zone_at_start_gets_servfail_and_every_other_zone_is_served() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &format!("{GOOD}bad IN A 198.18.0.999\n"))?;
    ws.zone("good.test.", GOOD)?;
    let mut dnsd = Dnsd::start(&ws, loopback(40))?;
    dnsd.wait_for_log("zone not loaded", 1)?;
    assert!(
        dnsd.log().contains("example.test.zone:6:"),
        "{}",
        dnsd.log()
    );
    dnsd.assert_running()?;
    let good = dnsd.ask(&Query::new("www.good.test.", "A"))?;
    assert_eq!(good.rcode, "NOERROR", "{good}");
    assert_eq!(good.answer.len(), 1, "{good}");
    // The zone is dnsd's, but it has no data to give: SERVFAIL, as NSD and
    // Knot answer, so that resolvers ask another server (REFUSED would say
    // this server is not authoritative for it at all).
    for q in [
        Query::new("www.example.test.", "A"),
        Query::new("www.example.test.", "A").tcp(),
        Query::new("example.test.", "SOA").edns(cutover_tests::dig::Edns::Off),
    ] {
        let m = dnsd.ask(&q)?;
        assert_eq!(m.rcode, "SERVFAIL", "{q}: {m}");
        assert!(m.answer.is_empty(), "{m}");
    }
    // Outside every zone is still REFUSED.
    let other = dnsd.ask(&Query::new("www.example.org.", "A"))?;
    assert_eq!(other.rcode, "REFUSED", "{other}");
    // `dnsd check` still fails and lists the problem.
    let out = check(ws.path())?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("example.test.zone:6:"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn dnsd_refuses_to_start_on_a_broken_dnsd_toml_and_serves_nothing() -> Result<()> {
    let ip = loopback(40);
    let addr = SocketAddr::new(ip, free_port(ip)?);
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", GOOD)?;
    ws.toml("[server\n")?;
    let out = run_to_exit(&ws, addr)?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("dnsd.toml:1:"), "{}", stderr(&out));
    assert!(
        raw_exchange(addr, &query_packet(1, "www.example.test.", 1, false)).is_none(),
        "nothing may answer on {addr}"
    );
    Ok(())
}

#[test]
fn a_second_dnsd_on_an_address_already_served_refuses_to_start_and_the_first_keeps_answering()
-> Result<()> {
    let first_ws = DnsdWorkspace::new()?;
    first_ws.zone("example.test.", GOOD)?;
    let first = Dnsd::start(&first_ws, loopback(77))?;

    // Without the check its SO_REUSEPORT sockets would join the first's
    // group and take a share of the queries.
    let second_ws = DnsdWorkspace::new()?;
    second_ws.zone("example.test.", GOOD)?;
    let out = run_to_exit(&second_ws, first.addr)?;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("UDP {} is already in use", first.addr)),
        "{err}"
    );
    for id in 0..50 {
        let reply = raw_exchange(first.addr, &query_packet(id, "www.example.test.", 1, false))
            .map(|r| header(&r));
        assert!(
            matches!(reply, Some(Some(h)) if h.id == id && h.rcode == 0),
            "query {id}: {reply:?}"
        );
    }
    Ok(())
}

/// Conflicts at one name: each broken zone, the line dnsd must name (the
/// later of the two conflicting records, where NSD names it too), and
/// dnsd's words (the owner as that line writes it).
const NAME_CONFLICTS: &[(&str, &str, usize, &str)] = &[
    (
        "two-cnames.test.",
        "x IN CNAME www\nok IN A 198.18.0.2\nX IN CNAME ns1\n",
        8,
        "X.two-cnames.test.: multiple CNAMEs at the same name (this one to \
         ns1.two-cnames.test., another on line 6)",
    ),
    (
        "cname-then-data.test.",
        "mail IN CNAME www\n     IN MX 10 www\n",
        7,
        "mail.cname-then-data.test.: CNAME and other data at the same name \
         (CNAME on line 6, MX on line 7)",
    ),
    (
        "cname-at-apex.test.",
        "@ IN CNAME www.elsewhere.test.\n",
        6,
        "cname-at-apex.test.: CNAME at the zone apex (line 6)",
    ),
    (
        "dname-children.test.",
        "old IN DNAME www\nx.old IN A 198.18.0.3\n",
        7,
        "x.old.dname-children.test.: data below the DNAME at old.dname-children.test. (line 6)",
    ),
    (
        "dname-and-cname.test.",
        "old IN DNAME www\nold IN CNAME www\n",
        7,
        "old.dname-and-cname.test.: DNAME and CNAME at the same name",
    ),
    (
        "two-dnames.test.",
        "old IN DNAME www\nold IN DNAME ns1\n",
        7,
        "old.two-dnames.test.: multiple DNAMEs at the same name",
    ),
];

#[test]
fn two_cnames_or_a_cname_beside_other_data_are_refused_on_their_line_as_nsd_refuses_them()
-> Result<()> {
    let ws = DnsdWorkspace::new()?;
    let mut files = Vec::new();
    for (origin, tail, _, _) in NAME_CONFLICTS {
        files.push(ws.zone(origin, &format!("{GOOD}{tail}"))?);
    }
    let out = check(ws.path())?;
    assert!(!out.status.success());
    let err = stderr(&out);
    for (origin, _, line, words) in NAME_CONFLICTS {
        let at = format!("{}.zone:{line}: ", origin.trim_end_matches('.'));
        let hit = err
            .lines()
            .find(|l| l.contains(&at))
            .unwrap_or_else(|| panic!("no error at {at}:\n{err}"));
        assert!(hit.contains(words), "wanted {words:?} in:\n{hit}");
    }
    assert_eq!(
        err.lines().filter(|l| l.contains(".zone:")).count(),
        NAME_CONFLICTS.len(),
        "one error per broken zone:\n{err}"
    );

    // NSD refuses each of these files too, on the same line.
    if !bins::have("nsd-checkzone") && !std::path::Path::new("/usr/sbin/nsd-checkzone").exists() {
        println!("nsd-checkzone is not installed: not compared with NSD");
        return Ok(());
    }
    for ((origin, _, line, _), file) in NAME_CONFLICTS.iter().zip(&files) {
        let nsd = std::process::Command::new(sbin("nsd-checkzone"))
            .arg(origin)
            .arg(file)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&nsd.stdout),
            String::from_utf8_lossy(&nsd.stderr)
        );
        assert!(!nsd.status.success(), "NSD loads {origin}:\n{text}");
        // NSD looks for names below a DNAME once the file is read, and names
        // the line after the last; dnsd names the line of the name below.
        if *origin == "dname-children.test." {
            continue;
        }
        assert!(
            text.contains(&format!(".zone:{line}: ")),
            "NSD on {origin}:\n{text}"
        );
    }
    Ok(())
}

#[test]
fn a_zone_that_declares_aname_is_refused_and_a_dname_at_a_delegation_too() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("aname.test.", &format!("{GOOD}@ IN ANAME www\n"))?;
    ws.zone(
        "dname-ns.test.",
        &format!("{GOOD}d IN NS ns.elsewhere.test.\nd IN DNAME www\n"),
    )?;
    let out = check(ws.path())?;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        // ANAME is an expired draft that neither NSD nor Knot loads.
        err.contains("aname.test.zone:6: `ANAME` is not a record type"),
        "{err}"
    );
    // Knot refuses a DNAME beside NS below the apex; NSD loads it.
    assert!(
        err.contains("dname-ns.test.zone:7: d.dname-ns.test.: DNAME and NS at the same name"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_zone_with_two_cnames_at_one_name_is_not_served_and_the_log_says_where() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.zone(
        "example.test.",
        &format!("{GOOD}alias IN CNAME www\nalias IN CNAME ns1\n"),
    )?;
    let dnsd = Dnsd::start(&ws, loopback(41))?;
    dnsd.wait_for_log("zone not loaded", 1)?;
    assert!(
        dnsd.log()
            .contains("example.test.zone:7: alias.example.test.: multiple CNAMEs"),
        "{}",
        dnsd.log()
    );
    let m = dnsd.ask(&Query::new("alias.example.test.", "A"))?;
    assert_eq!(m.rcode, "SERVFAIL", "{m}");
    Ok(())
}
