//! Broken zone files and broken TOML: `dnsd check` names the file, the line
//! and the problem, and dnsd refuses to serve anything from them.

use std::net::SocketAddr;

use anyhow::Result;
use cutover_tests::dns_peers::free_port;
use cutover_tests::dnsd::{
    DnsdWorkspace, check, loopback, query_packet, raw_exchange, run_to_exit,
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
        ":",
        "CNAME and other data",
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
    // The CNAME conflict is located at one of its two lines.
    assert!(
        err.contains("cname-and-data.test.zone:6:") || err.contains("cname-and-data.test.zone:7:"),
        "{err}"
    );
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
fn dnsd_refuses_to_start_on_a_broken_workspace_and_serves_nothing() -> Result<()> {
    let ip = loopback(40);
    let addr = SocketAddr::new(ip, free_port(ip)?);
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", &format!("{GOOD}bad IN A 198.18.0.999\n"))?;
    let out = run_to_exit(&ws, addr)?;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("example.test.zone:6:"), "{err}");
    assert!(
        raw_exchange(addr, &query_packet(1, "www.example.test.", 1, false)).is_none(),
        "nothing may answer on {addr}"
    );

    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", GOOD)?;
    ws.toml("[server\n")?;
    let out = run_to_exit(&ws, addr)?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("dnsd.toml:1:"), "{}", stderr(&out));
    Ok(())
}
