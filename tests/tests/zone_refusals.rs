//! A record that NSD refuses is refused however it reaches dnsd (issue 9):
//! written into a zone file and reloaded, sent through the control API, or
//! sent as an RFC 2136 update. Each refusal says where the record is (the
//! file and line, the request's field) and why, and changes nothing: every
//! zone keeps answering what it answered and no generation is made. One
//! broken zone never blocks a change to another zone through the control
//! plane.
//!
//! The records are the files of `tests/data/zones/invalid/`, one refused
//! record each (`zone_fidelity.rs` keeps what nsd-checkzone and Knot say of
//! them, and checks `dnsd check` on them). [`CASES`] says how the API
//! expresses each one, or why it cannot. Updates carry wire data rather
//! than text, so their cases are the same mistakes made in wire form
//! ([`WIRE`]), plus the updates RFC 2136 says to ignore because they would
//! break a zone.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cutover_control_api::contract::{Change, ErrorBody, GenerationInfo};
use cutover_tests::bins;
use cutover_tests::dnsd::{Dnsd, DnsdWorkspace, encode_name, header, kdig_short, raw_exchange};
use cutover_tests::dnsd_api::{ApiDnsd, Response};
use cutover_tests::dnsd_update::unix_now;
use cutover_tests::dnsd_update::{Key, UpdateDnsd, WorkspaceState, capture_knsupdate, sign};
use cutover_tests::process::wait_until;

/// The origin of every file in `invalid/`.
const ORIGIN: &str = "invalid.test.";

/// invalid.test. as served before any refused change: the head every
/// invalid file shares, with a serial and a `www` address none of them
/// has, so that an invalid file loaded even in part would show.
const GOOD: &str = "; the version every refusal must leave served
$ORIGIN invalid.test.
$TTL 300
@       IN SOA  ns1 hostmaster 2024060100 7200 3600 1209600 300
@       IN NS   ns1
ns1     IN A    198.18.12.53
www     IN A    198.18.12.100
alias   IN CNAME www
";

/// The zone beside it, which must move on while invalid.test. is refused:
/// `release` names the step.
fn other_zone(release: &str) -> String {
    format!(
        "$TTL 300
@       IN SOA  ns1 hostmaster 1 7200 3600 1209600 300
@       IN NS   ns1
ns1     IN A    198.18.12.54
release IN TXT  \"{release}\"
"
    )
}

/// `svc.invalid.test.` is a service: dnsd.toml owns its address. The key
/// may update both zones.
const DNSD_TOML: &str = "[[service]]
name = \"svc.invalid.test.\"
addresses = [\"198.18.12.200\"]
ttl = 60

[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"invalid.test.\", \"other.test.\"]
";

const KEY: Key = Key {
    name: "ops-key.",
    secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
};

/// 127.0.57.n: no other test uses that /24.
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 57, n))
}

/// One file of `invalid/`.
struct Case {
    file: &'static str,
    /// The line of the refused record, which dnsd names.
    line: usize,
    api: Api,
}

/// How `PUT /v1/zones/invalid.test./rrsets/{name}/{type}` says the same
/// thing, and what the 400 it gets says: its error starts with the field
/// (`records[0]`, `name`, `type`) and gives the reason.
enum Api {
    /// The file's record on its line, sent as it stands (owner, TTL, type
    /// and rdata as written).
    Record {
        field: &'static str,
        reason: &'static str,
    },
    /// A request of its own, where the record alone is not the mistake.
    Request {
        name: &'static str,
        rtype: &'static str,
        records: &'static [&'static str],
        field: &'static str,
        reason: &'static str,
    },
    /// The API has no way to say it: why.
    Cannot(&'static str),
}

/// Errors from the zone's own rules (what may share a name) come from the
/// commit, which loads the staged workspace: they name its file and line.
const COMMIT: &str = "the change was refused, nothing was written:";

/// A TTL is a JSON number: serde's error names the value and its column,
/// not the key.
const BODY: &str = "the body must be";

const DIRECTIVE: &str = "a master-file directive, not a record: the API takes records, one per entry, each owner named in full";

/// Every file of `invalid/` (the test checks that none is missing).
const CASES: &[Case] = &[
    Case {
        file: "txt-300-octets.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "holds at most 255 octets, this one has 300",
        },
    },
    Case {
        file: "a-extra-token.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "unexpected `198.18.12.2` after the last field",
        },
    },
    Case {
        file: "generic-length-short.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "the length says 3 octets but 4 follow",
        },
    },
    Case {
        file: "generic-length-long.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "the length says 5 octets but 4 follow",
        },
    },
    Case {
        file: "generic-zero-with-data.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "the length says 0 octets but 1 follow",
        },
    },
    Case {
        file: "generic-odd-hex.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`deadbee` is not hexadecimal octets",
        },
    },
    Case {
        file: "generic-bad-a.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "is not valid rdata for type A",
        },
    },
    Case {
        file: "label-64-octets.zone",
        line: 7,
        api: Api::Record {
            field: "name",
            reason: "a label of 64 octets (at most 63)",
        },
    },
    Case {
        file: "name-256-octets.zone",
        line: 7,
        api: Api::Record {
            field: "name",
            reason: "octets in wire form (at most 255)",
        },
    },
    Case {
        file: "empty-label.zone",
        line: 7,
        api: Api::Record {
            field: "name",
            reason: "has an empty label",
        },
    },
    Case {
        file: "short-ddd-owner.zone",
        line: 7,
        api: Api::Record {
            field: "name",
            reason: "needs three decimal digits",
        },
    },
    Case {
        file: "ddd-256.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`\\256` is more than 255",
        },
    },
    Case {
        file: "unknown-type.zone",
        line: 7,
        api: Api::Record {
            field: "type",
            reason: "\"FOO\" is not a record type",
        },
    },
    Case {
        file: "type-65536.zone",
        line: 7,
        api: Api::Record {
            field: "type",
            reason: "\"TYPE65536\" is not a record type",
        },
    },
    Case {
        file: "class-ch.zone",
        line: 7,
        api: Api::Cannot("the API has no class: every record it writes is IN"),
    },
    Case {
        file: "include-etc-passwd.zone",
        line: 7,
        api: Api::Cannot(DIRECTIVE),
    },
    Case {
        file: "include-missing.zone",
        line: 7,
        api: Api::Cannot(DIRECTIVE),
    },
    Case {
        file: "relative-origin.zone",
        line: 7,
        api: Api::Cannot(DIRECTIVE),
    },
    Case {
        file: "bad-ipv4.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`198.18.12.256` is not an IPv4 address",
        },
    },
    Case {
        file: "bad-ipv6.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`2001:2::12:g` is not an IPv6 address",
        },
    },
    Case {
        file: "bad-ttl.zone",
        line: 7,
        api: Api::Record {
            field: BODY,
            reason: "invalid type: string",
        },
    },
    Case {
        file: "ttl-2-32.zone",
        line: 7,
        api: Api::Record {
            field: BODY,
            reason: "integer `4294967296`, expected u32",
        },
    },
    Case {
        file: "cname-and-other-data.zone",
        line: 8,
        // `www` has an address in the zone already.
        api: Api::Record {
            field: COMMIT,
            reason: "CNAME and other data at the same name",
        },
    },
    Case {
        file: "two-cnames.zone",
        line: 8,
        api: Api::Request {
            name: "www.invalid.test.",
            rtype: "CNAME",
            records: &["ns1", "ns2"],
            field: "records",
            reason: "at most one CNAME",
        },
    },
    Case {
        file: "second-soa.zone",
        line: 7,
        // One SOA in the request replaces the zone's: it takes two.
        api: Api::Request {
            name: "invalid.test.",
            rtype: "SOA",
            records: &[
                "ns1 hostmaster 2024060101 7200 3600 1209600 300",
                "ns1 hostmaster 2024060102 7200 3600 1209600 300",
            ],
            field: COMMIT,
            reason: "a second SOA record; a zone has exactly one",
        },
    },
    Case {
        file: "out-of-zone.zone",
        line: 7,
        api: Api::Record {
            field: "name",
            reason: "is not inside the zone invalid.test.",
        },
    },
    Case {
        file: "mx-no-preference.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`mail` is not a decimal number",
        },
    },
    Case {
        file: "srv-port-65536.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "65536 is more than 65535",
        },
    },
    Case {
        file: "bad-base64.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`!!!notbase64` is not valid",
        },
    },
    Case {
        file: "loc-latitude-91.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "the latitude: 91 is more than 90",
        },
    },
    Case {
        file: "eui48-short.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "is not 6 hex pairs",
        },
    },
    Case {
        file: "svcb-duplicate-key.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "the key port is given twice",
        },
    },
    Case {
        file: "caa-bad-tag.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "`is-sue` must be letters and digits",
        },
    },
    Case {
        file: "unterminated-string.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "a quoted string is not closed",
        },
    },
    Case {
        file: "unclosed-paren.zone",
        line: 7,
        api: Api::Record {
            field: "records[0]",
            reason: "without comments or parentheses",
        },
    },
];

/// `tests/data/zones/invalid/`.
fn invalid_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/zones/invalid")
}

fn read_case(case: &Case) -> Result<String> {
    let path = invalid_dir().join(case.file);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn every_invalid_file_has_a_case() -> Result<()> {
    let mut on_disk = Vec::new();
    for entry in fs::read_dir(invalid_dir())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".zone") {
            on_disk.push(name);
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    listed.sort();
    ensure!(on_disk == listed, "the files of invalid/ and CASES differ");
    Ok(())
}

/// What a client gets for each of `questions` (kdig `+short`, sorted).
fn answers(dns: SocketAddr, questions: &[(&str, &str)]) -> Result<Vec<Vec<String>>> {
    questions
        .iter()
        .map(|(name, qtype)| kdig_short(dns, name, qtype))
        .collect()
}

/// What invalid.test. answers, enough to tell any change: the SOA (every
/// change raises its serial) and names the cases write to.
const INVALID_QUESTIONS: &[(&str, &str)] = &[
    ("invalid.test.", "SOA"),
    ("www.invalid.test.", "A"),
    ("www.invalid.test.", "CNAME"),
    ("alias.invalid.test.", "CNAME"),
    ("alias.invalid.test.", "A"),
];

/// invalid.test.'s answers as GOOD has them.
fn good_answers() -> Vec<Vec<String>> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        strings(&["ns1.invalid.test. hostmaster.invalid.test. 2024060100 7200 3600 1209600 300"]),
        strings(&["198.18.12.100"]),
        vec![],
        strings(&["www.invalid.test."]),
        strings(&["198.18.12.100", "www.invalid.test."]),
    ]
}

// ---------------------------------------------------------------------
// 1. Reload
// ---------------------------------------------------------------------

#[test]
fn a_reload_refuses_each_invalid_file_at_its_line_and_every_zone_keeps_answering() -> Result<()> {
    let started = Instant::now();
    let ws = DnsdWorkspace::new()?;
    ws.toml("")?;
    ws.zone(ORIGIN, GOOD)?;
    ws.zone("other.test.", &other_zone("start"))?;
    let mut dnsd = Dnsd::start(&ws, loopback(1))?;
    ensure!(answers(dnsd.addr, INVALID_QUESTIONS)? == good_answers());

    let mut wrong = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let text = read_case(case)?;
        let release = format!("after {}", case.file);
        let log_before = dnsd.log().len();
        // The operator's deploy writes both files, then signals.
        ws.zone(ORIGIN, &text)?;
        ws.zone("other.test.", &other_zone(&release))?;
        dnsd.reload()?;
        dnsd.wait_for_log("reloaded", n + 1)?;
        dnsd.assert_running()?;
        let log = dnsd.log();
        let this_reload = &log[log_before..];
        let location = format!("/zones/{ORIGIN}zone:{}:", case.line);
        let named = this_reload
            .lines()
            .find(|l| l.contains(&location))
            .map(str::to_string);
        let set_aside = this_reload
            .lines()
            .any(|l| l.contains("zone not loaded") && l.contains(&format!("zone={ORIGIN}")));
        let served = answers(dnsd.addr, INVALID_QUESTIONS)?;
        let other = kdig_short(dnsd.addr, "release.other.test.", "TXT")?;
        let mut problems = Vec::new();
        if named.is_none() {
            problems.push(format!("the log does not name {location}"));
        }
        if !set_aside {
            problems.push("the log does not say the zone was not loaded".to_string());
        }
        if served != good_answers() {
            problems.push(format!("invalid.test. answers {served:?}"));
        }
        if other != [format!("\"{release}\"")] {
            problems.push(format!(
                "other.test. answers {other:?}, not the new release"
            ));
        }
        println!(
            "  {:<28} line {}: {}",
            case.file,
            case.line,
            named.as_deref().map_or("(not named)", |l| l
                .split_once(&location)
                .map_or(l, |(_, why)| why.trim()))
        );
        if !problems.is_empty() {
            wrong.push(format!(
                "{}: {}\nthis reload's log:\n{this_reload}",
                case.file,
                problems.join("; ")
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {} invalid files:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );

    // Fixed, the zone moves on at the next reload.
    ws.zone(ORIGIN, &GOOD.replace("2024060100", "2024060199"))?;
    dnsd.reload()?;
    dnsd.wait_for_log("reloaded", CASES.len() + 1)?;
    let soa = kdig_short(dnsd.addr, ORIGIN, "SOA")?;
    ensure!(
        soa.first().is_some_and(|s| s.contains(" 2024060199 ")),
        "the fixed zone is served: {soa:?}"
    );
    println!(
        "{} reloads in {:.1} s",
        CASES.len() + 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------
// 2. The control API
// ---------------------------------------------------------------------

/// The record on `line` of a zone file as the API takes it: the URL path
/// after `rrsets/` and the JSON body.
fn as_request(text: &str, line: usize) -> Result<(String, String)> {
    let record = text
        .lines()
        .nth(line - 1)
        .with_context(|| format!("no line {line}"))?;
    let (owner, rest) = token(record);
    let (mut ttl, mut rest) = ("300", rest);
    let (next, after) = token(rest);
    if next.starts_with(|c: char| c.is_ascii_digit()) {
        (ttl, rest) = (next, after);
    }
    let (class, after) = token(rest);
    ensure!(class == "IN", "line {line} is not an IN record: {record}");
    let (rtype, rdata) = token(after);
    let name = match owner {
        "@" => ORIGIN.to_string(),
        o if o.ends_with('.') => o.to_string(),
        o => format!("{o}.{ORIGIN}"),
    };
    let ttl = if ttl.bytes().all(|b| b.is_ascii_digit()) {
        ttl.to_string()
    } else {
        json_string(ttl)
    };
    Ok((
        rrset_path(&name, rtype),
        format!("{{\"ttl\":{ttl},\"records\":[{}]}}", json_string(rdata)),
    ))
}

/// The first whitespace-separated token of `s`, and the rest, trimmed.
fn token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

fn json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `/v1/zones/invalid.test./rrsets/{name}/{type}`, the name percent-encoded
/// (a `\DDD` escape's backslash, say).
fn rrset_path(name: &str, rtype: &str) -> String {
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("/v1/zones/{ORIGIN}/rrsets/{encoded}/{rtype}")
}

/// What a refused API change must leave as it was: the generations, the
/// zone file's bytes, and the answers.
#[derive(Debug, PartialEq, Eq)]
struct ApiState {
    generations: Vec<GenerationInfo>,
    zone_file: String,
    answers: Vec<Vec<String>>,
}

fn api_state(dnsd: &ApiDnsd, token: &str) -> Result<ApiState> {
    let r = dnsd.call("GET", "/v1/generations", Some(token), None)?;
    ensure!(r.status == 200, "{r:?}");
    Ok(ApiState {
        generations: r.json()?,
        zone_file: fs::read_to_string(dnsd.workspace().join("zones/invalid.test.zone"))?,
        answers: answers(dnsd.dns, INVALID_QUESTIONS)?,
    })
}

/// Whether `r` is a 400 whose error starts with `field` and gives `reason`.
fn refused_for(r: &Response, field: &str, reason: &str) -> bool {
    r.status == 400
        && r.json::<ErrorBody>()
            .is_ok_and(|b| b.error.starts_with(field) && b.error.contains(reason))
}

#[test]
fn the_api_refuses_each_invalid_record_by_its_field_and_nothing_changes() -> Result<()> {
    let ws = DnsdWorkspace::new()?;
    ws.toml(DNSD_TOML)?;
    ws.zone(ORIGIN, GOOD)?;
    ws.zone("other.test.", &other_zone("start"))?;
    let dnsd = ApiDnsd::start(&ws, loopback(2), &[])?;
    let run = || -> Result<()> {
        let token = dnsd.default_token()?;
        let put = |path: &str, body: &str| dnsd.call("PUT", path, Some(&token), Some(body));

        // The API works: a good change is served, and there is a history
        // for the refusals to leave alone.
        let r = put(
            &rrset_path("ok.invalid.test.", "A"),
            r#"{"ttl":60,"records":["198.18.12.7"]}"#,
        )?;
        ensure!(r.status == 200, "{r:?}");
        ensure!(kdig_short(dnsd.dns, "ok.invalid.test.", "A")? == ["198.18.12.7"]);
        let before = api_state(&dnsd, &token)?;

        let mut wrong = Vec::new();
        let mut check = |what: &str,
                         path: &str,
                         body: &str,
                         field: &str,
                         reason: &str|
         -> Result<()> {
            let r = put(path, body)?;
            let after = api_state(&dnsd, &token)?;
            println!("  {what:<28} {} {}", r.status, r.body);
            if !refused_for(&r, field, reason) {
                wrong.push(format!(
                    "{what}: PUT {path} {body}: expected 400 naming {field:?} with {reason:?}, got {r:?}"
                ));
            }
            if after != before {
                wrong.push(format!("{what}: changed {before:?} into {after:?}"));
            }
            Ok(())
        };
        let mut cannot = Vec::new();
        for case in CASES {
            match &case.api {
                Api::Record { field, reason } => {
                    let (path, body) = as_request(&read_case(case)?, case.line)?;
                    check(case.file, &path, &body, field, reason)?;
                }
                Api::Request {
                    name,
                    rtype,
                    records,
                    field,
                    reason,
                } => {
                    let list: Vec<String> = records.iter().map(|r| json_string(r)).collect();
                    let body = format!("{{\"ttl\":300,\"records\":[{}]}}", list.join(","));
                    check(case.file, &rrset_path(name, rtype), &body, field, reason)?;
                }
                Api::Cannot(why) => cannot.push(format!("  {:<28} {why}", case.file)),
            }
        }
        // Changes that would break the zone, which no file of invalid/ is.
        check(
            "an SOA off the apex",
            &rrset_path("sub.invalid.test.", "SOA"),
            r#"{"ttl":300,"records":["ns1 hostmaster 1 7200 3600 1209600 300"]}"#,
            COMMIT,
            "an SOA record belongs only at the zone apex",
        )?;
        check(
            "a CNAME at a service's name",
            &rrset_path("svc.invalid.test.", "CNAME"),
            r#"{"ttl":300,"records":["www"]}"#,
            COMMIT,
            "service svc.invalid.test. cannot be served from zones/invalid.test.zone: the zone gives it a CNAME",
        )?;
        check(
            "data beside a CNAME",
            &rrset_path("alias.invalid.test.", "TXT"),
            r#"{"ttl":300,"records":["\"beside\""]}"#,
            COMMIT,
            "CNAME and other data at the same name",
        )?;
        println!("not expressible through the API:\n{}", cannot.join("\n"));
        ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
        Ok(())
    };
    run().map_err(|e| e.context(dnsd.log()))
}

// ---------------------------------------------------------------------
// 3. RFC 2136 updates
// ---------------------------------------------------------------------

fn update_packet(
    id: u16,
    owner: &[u8],
    rtype: u16,
    class: u16,
    rdlength: u16,
    rdata: &[u8],
) -> Vec<u8> {
    cutover_tests::dnsd_update::update_packet(id, ORIGIN, owner, rtype, class, rdlength, rdata)
}

/// `labels` followed by invalid.test., in wire form, lengths as given.
fn owner(labels: &[&[u8]]) -> Vec<u8> {
    let mut o = Vec::new();
    for l in labels {
        o.push(l.len() as u8);
        o.extend_from_slice(l);
    }
    encode_name(&mut o, ORIGIN);
    o
}

/// The offset of the update section's owner in `update_packet`: the header
/// and the zone section (invalid.test. SOA IN).
const OWNER_AT: u8 = 12 + 14 + 4;

/// One update section in wire form with a mistake NSD or Knot refuses.
struct Wire {
    what: &'static str,
    /// The file of `invalid/` with the same mistake in text, if any.
    like: &'static str,
    owner: fn() -> Vec<u8>,
    rtype: u16,
    class: u16,
    rdlength: u16,
    rdata: &'static [u8],
    /// `Undecodable`: a bare FORMERR, signed or not. `Decodes(rcode)`:
    /// what dnsd answers once the signature is checked.
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Undecodable,
    Decodes(u8),
}

const FORMERR: u8 = 1;
const NOTAUTH: u8 = 9;
const REFUSED: u8 = 5;

fn a_owner() -> Vec<u8> {
    owner(&[b"a"])
}

/// Malformed update sections. NSD implements no dynamic update (its
/// REQUIREMENTS, §C.3 "Incoming DNS Message processing": "OPCODE 5
/// (UPDATE) results in RCODE=4 NOTIMPL"), and of any message it cannot
/// parse says "Non parsable messages are replied to with a FORMERR". dnsd
/// does that for every message its decoder refuses: a FORMERR header,
/// before it looks for a TSIG record, so signed, unsigned or forged makes
/// no difference. What decodes but is still wrong (a class, a length the
/// type does not allow) is judged after the signature, in a signed reply.
const WIRE: &[Wire] = &[
    Wire {
        what: "A with RDLENGTH 5",
        like: "a-extra-token.zone",
        owner: a_owner,
        rtype: 1,
        class: 1,
        rdlength: 5,
        rdata: &[198, 18, 12, 1, 2],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "A with RDLENGTH 3",
        like: "generic-bad-a.zone",
        owner: a_owner,
        rtype: 1,
        class: 1,
        rdlength: 3,
        rdata: &[198, 18, 12],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "TXT string overrunning RDATA",
        like: "txt-300-octets.zone",
        owner: a_owner,
        rtype: 16,
        class: 1,
        rdlength: 4,
        rdata: b"\x0aabc",
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "RDLENGTH past the message",
        like: "generic-length-long.zone",
        owner: a_owner,
        rtype: 65280,
        class: 1,
        rdlength: 5,
        rdata: &[0xde, 0xad, 0xbe, 0xef],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "EUI48 of 5 octets",
        like: "eui48-short.zone",
        owner: a_owner,
        rtype: 108,
        class: 1,
        rdlength: 5,
        rdata: &[0, 0, 0x5e, 0, 0x53],
        verdict: Verdict::Decodes(FORMERR),
    },
    Wire {
        what: "LOC at latitude 91",
        like: "loc-latitude-91.zone",
        owner: a_owner,
        rtype: 29,
        class: 1,
        rdlength: 16,
        // Version 0, 1 m, 10 km, 10 m; 91° N, 0° E, 0 m.
        rdata: &[
            0, 0x12, 0x16, 0x13, 0x93, 0x86, 0xc7, 0x80, 0x80, 0, 0, 0, 0, 0x98, 0x96, 0x80,
        ],
        verdict: Verdict::Decodes(FORMERR),
    },
    Wire {
        what: "CAA tag with '-'",
        like: "caa-bad-tag.zone",
        owner: a_owner,
        rtype: 257,
        class: 1,
        rdlength: 18,
        rdata: b"\x00\x06is-sueca.example",
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "SVCB with key port twice",
        like: "svcb-duplicate-key.zone",
        owner: a_owner,
        rtype: 64,
        class: 1,
        rdlength: 15,
        rdata: &[0, 1, 0, 0, 3, 0, 2, 0x01, 0xbb, 0, 3, 0, 2, 0x20, 0xfb],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "owner label of 64 octets",
        like: "label-64-octets.zone",
        // 64 in a length octet is the reserved extended label type.
        owner: || owner(&[&[b'a'; 64]]),
        rtype: 1,
        class: 1,
        rdlength: 4,
        rdata: &[198, 18, 12, 1],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "owner of 270 octets",
        like: "name-256-octets.zone",
        owner: || owner(&[&[b'a'; 63], &[b'a'; 63], &[b'a'; 63], &[b'a'; 63]]),
        rtype: 1,
        class: 1,
        rdlength: 4,
        rdata: &[198, 18, 12, 1],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "owner pointing at itself",
        like: "",
        owner: || vec![0xc0, OWNER_AT],
        rtype: 1,
        class: 1,
        rdlength: 4,
        rdata: &[198, 18, 12, 1],
        verdict: Verdict::Undecodable,
    },
    Wire {
        what: "a record of class CH",
        like: "class-ch.zone",
        owner: a_owner,
        rtype: 1,
        class: 3,
        rdlength: 4,
        rdata: &[198, 18, 12, 1],
        // RFC 2136 §3.4.1.3: an update of another class is FORMERR.
        verdict: Verdict::Decodes(FORMERR),
    },
];

/// `case` sent unsigned, signed, and signed with one bit of the MAC
/// flipped: (rcode, whether the reply is signed) over UDP and over TCP.
fn three_ways(
    dns: SocketAddr,
    case: &Wire,
    id: u16,
) -> Result<[(&'static str, [(u8, bool); 2]); 3]> {
    // Over UDP with `id`, over TCP with the next: a signed request is
    // accepted once, and the same bytes again are a replay.
    let packet = |id| {
        update_packet(
            id,
            &(case.owner)(),
            case.rtype,
            case.class,
            case.rdlength,
            case.rdata,
        )
    };
    let both = |make: &dyn Fn(u16) -> Result<Vec<u8>>| -> Result<[(u8, bool); 2]> {
        Ok([
            rcode_over(dns, &make(id)?, false)?,
            rcode_over(dns, &make(id.wrapping_add(1))?, true)?,
        ])
    };
    Ok([
        ("unsigned", both(&|id| Ok(packet(id)))?),
        ("signed", both(&|id| sign(&packet(id), KEY, unix_now()))?),
        (
            "signed, bad MAC",
            both(&|id| Ok(forge(&sign(&packet(id), KEY, unix_now())?)))?,
        ),
    ])
}

/// What [`three_ways`] gets for a verdict. Undecodable: a bare FORMERR
/// header each time, nothing verified, nothing signed. Decodable: REFUSED
/// unsigned (dnsd takes signed updates only), the verdict signed, NOTAUTH
/// (BADSIG) with a bad MAC.
fn expected(verdict: Verdict) -> [(u8, bool); 3] {
    match verdict {
        Verdict::Undecodable => [(FORMERR, false); 3],
        Verdict::Decodes(rcode) => [(REFUSED, false), (rcode, true), (NOTAUTH, true)],
    }
}

/// `signed` with the last octet of its MAC flipped (the TSIG record ends
/// with the MAC, then original ID, error and other length, two octets
/// each).
fn forge(signed: &[u8]) -> Vec<u8> {
    let mut forged = signed.to_vec();
    let n = forged.len();
    forged[n - 7] ^= 1;
    forged
}

/// Sends `packet` over TCP (two-octet length first) and reads one reply.
fn tcp_exchange(server: SocketAddr, packet: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// The rcode of dnsd's reply to `packet` over UDP and over TCP, and
/// whether each reply is signed: for requests dnsd does not accept (a
/// signed one accepted once is a replay the second time).
fn rcodes(dns: SocketAddr, packet: &[u8]) -> Result<[(u8, bool); 2]> {
    Ok([
        rcode_over(dns, packet, false)?,
        rcode_over(dns, packet, true)?,
    ])
}

/// The rcode of dnsd's reply to `packet` over UDP (`tcp` false) or over
/// TCP, and whether the reply is signed.
fn rcode_over(dns: SocketAddr, packet: &[u8], tcp: bool) -> Result<(u8, bool)> {
    let reply = if tcp {
        tcp_exchange(dns, packet).context("no reply over TCP")?
    } else {
        raw_exchange(dns, packet).context("no reply over UDP")?
    };
    let read = |reply: &[u8]| -> Result<(u8, bool)> {
        let h = header(reply).context("a reply without a header")?;
        ensure!(
            h.qr && h.id == u16::from_be_bytes([packet[0], packet[1]]),
            "{h:?}"
        );
        ensure!(
            reply[2] >> 3 & 0x0f == 5,
            "the reply's opcode is not UPDATE: {reply:02x?}"
        );
        let arcount = u16::from_be_bytes([reply[10], reply[11]]);
        // No OPT record is sent back to a request without one: a record
        // in the additional section is the TSIG.
        Ok((h.rcode, arcount > 0))
    };
    read(&reply)
}

/// What a refused update must leave as it was: the workspace and the
/// answers.
/// The good zone and another one, served by a dnsd that takes updates
/// signed with `KEY` (on loopback slot `slot`).
fn update_server(slot: u8) -> Result<(DnsdWorkspace, UpdateDnsd)> {
    ensure!(
        bins::have("knsupdate"),
        "knsupdate is not installed (knot-dnsutils)"
    );
    let ws = DnsdWorkspace::new()?;
    ws.toml(DNSD_TOML)?;
    ws.zone(ORIGIN, GOOD)?;
    ws.zone("other.test.", &other_zone("start"))?;
    let dnsd = UpdateDnsd::start(&ws, loopback(slot))?;
    Ok((ws, dnsd))
}

fn update_state(dnsd: &UpdateDnsd) -> Result<(WorkspaceState, Vec<Vec<String>>)> {
    Ok((dnsd.state()?, answers(dnsd.dns, INVALID_QUESTIONS)?))
}

#[test]
fn an_update_with_malformed_wire_data_is_formerr_signed_or_not_and_changes_nothing() -> Result<()> {
    let (_ws, dnsd) = update_server(3)?;
    let run = || -> Result<()> {
        // The packets built here are right when they are well formed: the
        // same update unsigned is REFUSED (dnsd takes signed updates only),
        // signed here is applied, and with one bit of its MAC flipped it
        // is NOTAUTH (BADSIG).
        let good = |id| update_packet(id, &owner(&[b"signed"]), 1, 1, 4, &[198, 18, 12, 8]);
        ensure!(rcodes(dnsd.dns, &good(1))? == [(REFUSED, false); 2]);
        let forged = forge(&sign(&good(2), KEY, unix_now())?);
        ensure!(rcodes(dnsd.dns, &forged)? == [(NOTAUTH, true); 2]);
        let reply =
            raw_exchange(dnsd.dns, &sign(&good(3), KEY, unix_now())?).context("no reply")?;
        ensure!(header(&reply).is_some_and(|h| h.rcode == 0), "{reply:02x?}");
        ensure!(kdig_short(dnsd.dns, "signed.invalid.test.", "A")? == ["198.18.12.8"]);
        let before = update_state(&dnsd)?;

        let mut wrong = Vec::new();
        for (i, case) in WIRE.iter().enumerate() {
            let seen = three_ways(dnsd.dns, case, 100 + 2 * i as u16)?;
            println!("  {:<30} ({:<25}) {seen:?}", case.what, case.like);
            for ((how, got), want) in seen.into_iter().zip(expected(case.verdict)) {
                let right = got == [want; 2];
                if !right {
                    wrong.push(format!(
                        "{} ({how}): (rcode, signed reply) over UDP and TCP {got:?}, expected {want:?}",
                        case.what
                    ));
                }
            }
            if update_state(&dnsd)? != before {
                wrong.push(format!("{} changed the zone or the workspace", case.what));
            }
        }

        // knsupdate sends some of them too, signed as an operator would:
        // it checks the length of generic rdata only for some types.
        for (what, commands) in [
            (
                "TXT string overrunning RDATA",
                "update add t.invalid.test. 60 TXT \\# 4 0a616263",
            ),
            (
                "CAA tag with '-'",
                "update add c.invalid.test. 60 CAA \\# 18 000669732d73756563612e6578616d706c65",
            ),
            (
                "SVCB with key port twice",
                "update add s.invalid.test. 60 SVCB \\# 15 000100000300 0201bb00030002 20fb",
            ),
        ] {
            let packet = capture_knsupdate(loopback(3), KEY, ORIGIN, commands)?;
            let got = rcodes(dnsd.dns, &packet)?;
            println!("  {what:<30} (knsupdate) {got:?}");
            if got != [(FORMERR, false); 2] {
                wrong.push(format!("{what} from knsupdate: {got:?}"));
            }
            if update_state(&dnsd)? != before {
                wrong.push(format!("{what} from knsupdate changed the zone"));
            }
        }
        ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
        Ok(())
    };
    run().map_err(|e| e.context(dnsd.log()))
}

#[test]
fn an_update_that_would_break_the_zone_changes_nothing() -> Result<()> {
    let (_ws, dnsd) = update_server(4)?;
    let run = || -> Result<()> {
        ensure!(answers(dnsd.dns, INVALID_QUESTIONS)? == good_answers());
        // A first update, so that there is a history to leave alone (the
        // first change records the workspace as found, even when refused).
        let status = dnsd.knsupdate(
            Some(KEY),
            ORIGIN,
            "update add ok.invalid.test. 300 A 198.18.12.7",
            false,
        )?;
        ensure!(status == "NOERROR", "a good update: {status}");
        let before = update_state(&dnsd)?;
        ensure!(
            before.0.generations.len() == 2,
            "{:?}",
            before.0.generations
        );
        let soa = "ns1.invalid.test. hostmaster.invalid.test.";
        let cases = [
            // RFC 2136 §3.4.2.2: a CNAME added where other data is, or
            // other data where a CNAME is, is silently ignored; the update
            // succeeds.
            (
                "a CNAME beside an address (cname-and-other-data)",
                "update add www.invalid.test. 300 CNAME ns1.invalid.test.".to_string(),
                "NOERROR",
            ),
            (
                "an address beside a CNAME",
                "update add alias.invalid.test. 300 A 198.18.12.9".to_string(),
                "NOERROR",
            ),
            // §3.4.2.2: an SOA replaces the zone's only with a newer
            // serial; off the apex there is none to replace.
            (
                "a second SOA, off the apex (second-soa)",
                format!(
                    "update add sub.invalid.test. 300 SOA {soa} 2024060200 7200 3600 1209600 300"
                ),
                "NOERROR",
            ),
            (
                "an SOA with an older serial",
                format!("update add invalid.test. 300 SOA {soa} 2024060000 7200 3600 1209600 300"),
                "NOERROR",
            ),
            // §3.4.1.3: outside the zone.
            (
                "data outside the zone (out-of-zone)",
                "update add www.elsewhere.test. 300 A 198.18.12.1".to_string(),
                "NOTZONE",
            ),
            // The zone would not load after it: the service's address
            // comes from dnsd.toml.
            (
                "a CNAME at a service's name",
                "update add svc.invalid.test. 300 CNAME ns1.invalid.test.".to_string(),
                "REFUSED",
            ),
        ];
        let mut wrong = Vec::new();
        for (what, commands, expected) in &cases {
            let status = dnsd.knsupdate(Some(KEY), ORIGIN, commands, false)?;
            println!("  {what:<50} {status}");
            if status != *expected {
                wrong.push(format!("{what}: {status}, expected {expected}"));
            }
            if update_state(&dnsd)? != before {
                wrong.push(format!("{what} changed the zone or the workspace"));
            }
        }
        ensure!(wrong.is_empty(), "{}", wrong.join("\n"));

        // two-cnames: in one update the second CNAME replaces the first
        // (§3.4.2.2), so the name ends with one.
        let status = dnsd.knsupdate(
            Some(KEY),
            ORIGIN,
            "update add two.invalid.test. 300 CNAME ns1.invalid.test.\nupdate add two.invalid.test. 300 CNAME www.invalid.test.",
            false,
        )?;
        ensure!(status == "NOERROR", "two CNAMEs: {status}");
        ensure!(kdig_short(dnsd.dns, "two.invalid.test.", "CNAME")? == ["www.invalid.test."]);
        Ok(())
    };
    run().map_err(|e| e.context(dnsd.log()))
}

// ---------------------------------------------------------------------
// 4. Isolation through the control plane
// ---------------------------------------------------------------------

const ALPHA: &str = "$TTL 300
@    IN SOA ns1 hostmaster 1 7200 3600 1209600 300
     IN NS  ns1
ns1  IN A   198.18.13.53
app  IN A   198.18.13.1
";

const BETA: &str = "$TTL 300
@    IN SOA ns1 hostmaster 1 7200 3600 1209600 300
     IN NS  ns1
ns1  IN A   198.18.14.53
app  IN A   198.18.14.1
";

/// A hand edit with a typo on line 5.
fn broken(zone: &str) -> String {
    zone.replace("app  IN A   198.18.1", "app  IN A   198.18.1999.")
}

const ISOLATION_TOML: &str = "[[service]]
name = \"www.alpha.test.\"
addresses = [\"198.18.13.10\"]
ttl = 60

[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"alpha.test.\", \"beta.test.\"]
";

/// The generation a change that went through is served as.
fn generation(r: &Response) -> Result<u64> {
    ensure!(r.status == 200, "{r:?}");
    r.json::<Change>()?
        .generation
        .with_context(|| format!("no generation in {r:?}"))
}

/// The message of generation `n` in `list`.
fn generation_message(list: &[GenerationInfo], n: u64) -> Option<&str> {
    list.iter()
        .find(|g| g.number == n)
        .map(|g| g.message.as_str())
}

fn sighup(pid: u32) -> Result<()> {
    ensure!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?
            .success()
    );
    Ok(())
}

fn count_in_log(dnsd: &ApiDnsd, needle: &str) -> usize {
    dnsd.log().matches(needle).count()
}

#[test]
fn a_broken_zone_blocks_no_change_to_another_and_no_rollback_may_break_one() -> Result<()> {
    ensure!(
        bins::have("knsupdate") && bins::have("curl"),
        "knsupdate and curl are needed"
    );
    let ws = DnsdWorkspace::new()?;
    ws.toml(ISOLATION_TOML)?;
    ws.zone("alpha.test.", ALPHA)?;
    ws.zone("beta.test.", BETA)?;
    let dnsd = ApiDnsd::start(&ws, loopback(5), &[])?;
    let alpha_file = ws.path().join("zones/alpha.test.zone");
    let beta_file = ws.path().join("zones/beta.test.zone");
    let run = || -> Result<()> {
        let token = dnsd.default_token()?;
        let t = Some(token.as_str());
        let put_rrset = |zone: &str, name: &str, body: &str| {
            let path = format!("/v1/zones/{zone}/rrsets/{name}/A");
            dnsd.call("PUT", &path, t, Some(body))
        };
        let generations = || -> Result<Vec<GenerationInfo>> {
            dnsd.call("GET", "/v1/generations", t, None)?.json()
        };
        let a = |name: &str| kdig_short(dnsd.dns, name, "A");

        // Generation 1 is the workspace as found, 2 a first change.
        let g = generation(&put_rrset(
            "alpha.test.",
            "one.alpha.test.",
            r#"{"ttl":60,"records":["198.18.13.2"]}"#,
        )?)?;
        ensure!(g == 2, "generation {g}");

        // Someone breaks beta.test. by hand and reloads: beta keeps its
        // last good version.
        fs::write(&beta_file, broken(BETA))?;
        sighup(dnsd.pid())?;
        ensure!(
            wait_until(Duration::from_secs(10), || count_in_log(
                &dnsd,
                "zone not loaded"
            ) >= 1),
            "no reload"
        );
        ensure!(a("app.beta.test.")? == ["198.18.14.1"]);

        // A change to alpha goes through and is served; the hand edit of
        // beta is recorded first, as a generation of its own (3).
        let g = generation(&put_rrset(
            "alpha.test.",
            "two.alpha.test.",
            r#"{"ttl":60,"records":["198.18.13.3"]}"#,
        )?)?;
        ensure!(g == 4, "generation {g}");
        ensure!(a("two.alpha.test.")? == ["198.18.13.3"]);
        let history = generations()?;
        ensure!(
            generation_message(&history, 3) == Some("hand edits since generation 2"),
            "{history:?}"
        );
        ensure!(
            a("app.beta.test.")? == ["198.18.14.1"],
            "beta's last good version"
        );

        // A change to beta is refused: its file does not load, and the
        // refusal says where.
        let r = put_rrset(
            "beta.test.",
            "two.beta.test.",
            r#"{"ttl":60,"records":["198.18.14.3"]}"#,
        )?;
        println!("a change to the broken zone: {} {}", r.status, r.body);
        ensure!(
            (400..600).contains(&r.status) && r.body.contains("beta.test.zone:5:"),
            "a change to the broken zone: {r:?}"
        );
        ensure!(
            generations()? == history,
            "a refused change made a generation"
        );
        ensure!(a("two.beta.test.")?.is_empty());

        // So is an update of beta (SERVFAIL: the zone is ours, but its
        // data cannot be changed now); an update of alpha goes through.
        let named = count_in_log(&dnsd, "beta.test.zone:5:");
        let status = knsupdate_to(
            &dnsd,
            "beta.test.",
            "update add three.beta.test. 60 A 198.18.14.4",
        )?;
        ensure!(
            status == "SERVFAIL",
            "an update of the broken zone: {status}"
        );
        ensure!(
            count_in_log(&dnsd, "beta.test.zone:5:") > named,
            "the refusal of the update is logged with beta's file and line"
        );
        ensure!(
            generations()? == history,
            "a refused update made a generation"
        );
        ensure!(a("three.beta.test.")?.is_empty());
        let status = knsupdate_to(
            &dnsd,
            "alpha.test.",
            "update add three.alpha.test. 60 A 198.18.13.4",
        )?;
        ensure!(status == "NOERROR", "an update of alpha: {status}");
        ensure!(a("three.alpha.test.")? == ["198.18.13.4"]);

        // A service moves.
        let g_service = generation(&dnsd.call(
            "PUT",
            "/v1/services/www.alpha.test.",
            t,
            Some(r#"{"addresses":["198.18.13.11"]}"#),
        )?)?;
        ensure!(a("www.alpha.test.")? == ["198.18.13.11"]);

        // A rollback to generation 4, where beta is just as broken and
        // alpha loads, goes through.
        let g = generation(&dnsd.call("POST", "/v1/generations/4/rollback", t, None)?)?;
        ensure!(g == g_service + 1, "generation {g}");
        ensure!(
            a("www.alpha.test.")? == ["198.18.13.10"],
            "the service's old address"
        );
        ensure!(a("three.alpha.test.")?.is_empty(), "the update rolled back");
        ensure!(a("two.alpha.test.")? == ["198.18.13.3"]);

        // alpha is broken by hand, then repaired by a rollback to the
        // generation just made: the hand edit is recorded first (alpha
        // broken, beta broken), the rollback after it.
        fs::write(&alpha_file, broken(ALPHA))?;
        let alpha_broken = g + 1;
        let g =
            generation(&dnsd.call("POST", &format!("/v1/generations/{g}/rollback"), t, None)?)?;
        ensure!(g == alpha_broken + 1, "generation {g}");
        let history = generations()?;
        ensure!(
            generation_message(&history, alpha_broken)
                == Some(format!("hand edits since generation {}", alpha_broken - 1).as_str()),
            "{history:?}"
        );
        ensure!(a("app.alpha.test.")? == ["198.18.13.1"]);

        // A rollback to that generation would break alpha: refused,
        // naming alpha's file and line, and nothing changes.
        let r = dnsd.call(
            "POST",
            &format!("/v1/generations/{alpha_broken}/rollback"),
            t,
            None,
        )?;
        println!("a rollback that breaks alpha: {} {}", r.status, r.body);
        ensure!(
            r.status == 400
                && r.body
                    .contains(&format!("generation {alpha_broken} does not load"))
                && r.body.contains("alpha.test.zone:5:"),
            "a rollback that breaks alpha: {r:?}"
        );
        ensure!(
            !r.body.contains("beta.test.zone"),
            "beta's brokenness is not the reason: {r:?}"
        );
        ensure!(
            generations()? == history,
            "a refused rollback made a generation"
        );
        ensure!(a("app.alpha.test.")? == ["198.18.13.1"]);
        ensure!(a("www.alpha.test.")? == ["198.18.13.10"]);
        ensure!(
            a("app.beta.test.")? == ["198.18.14.1"],
            "beta's last good version"
        );
        Ok(())
    };
    run().map_err(|e| e.context(dnsd.log()))
}

fn knsupdate_to(dnsd: &ApiDnsd, zone: &str, commands: &str) -> Result<String> {
    cutover_tests::dnsd_update::knsupdate(dnsd.dns, Some(KEY), zone, commands, false)
}
