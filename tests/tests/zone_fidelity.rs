//! dnsd reads a zone file exactly as NSD and Knot DNS read it (issue 9).
//!
//! The corpus in `tests/data/zones/` is zone files written the way people
//! write them: every escape of RFC 1035 §5.1 in TXT data and in owner names,
//! labels made of any octet (RFC 2181 §11), RFC 3597 generic records, DS
//! records at delegations, every type NSD 4.6 loads in its presentation
//! form, and the master-file syntax around them ($TTL, $ORIGIN, TTL units,
//! parentheses, comments). A file is named after its zone
//! (`escapes.test.zone` serves `escapes.test.`) and says in its comments what
//! it covers and which records were left out because a peer refuses them.
//!
//! For each zone, NSD and Knot serve the file and give it whole by AXFR,
//! printed with dig's `+unknownformat`: every RDATA as RFC 3597 hex, so two
//! transfers compare octet for octet. The peers must agree; a disagreement
//! is a fault of the corpus, not of dnsd. dnsd then serves the same file and
//! is asked for every (owner, type) of the transfer over UDP with EDNS, UDP
//! without EDNS, UDP with a 512-octet buffer, and TCP. Its RRset must be the
//! transfer's, octet for octet and TTL for TTL:
//! - in the answer section, with AA, for the data the zone is authoritative
//!   for (a DS at a delegation included: RFC 4035 §3.1.4.1);
//! - in a referral for what lies at or below a delegation: the NS RRset in
//!   the authority section, glue in the additional section.
//!
//! A truncated reply (TC) is compared with nothing. It is a fault unless
//! the reply could not fit the transport even uncompressed.
//!
//! `nsd-only/` holds what NSD loads and Knot 3.2 refuses (the presentation
//! forms of the types Knot does not know, raw UTF-8), compared with NSD
//! alone; `knot-only/` what only Knot loads (RRSIG times in seconds),
//! compared with Knot alone.
//!
//! `invalid/` holds one small file per record a peer refuses: `dnsd check`
//! must refuse each one and name the file and the offending record's line.
//! [`INVALID`] records what nsd-checkzone and Knot say of each file, and the
//! test keeps that record true.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;

use anyhow::{Context, Result, bail};
use cutover_tests::bins;
use cutover_tests::dig::{self, Edns, Message, Query, Record, Reply};
use cutover_tests::dns_peers::{self, DnsServer, Implementation, ServerOptions};
use cutover_tests::dnsd::{DnsdWorkspace, check};
use cutover_tests::dnsd_api::ApiDnsd;

use Implementation::{Knot, Nsd};

/// The zones both peers load, relative to the corpus directory.
const BOTH_PEERS: &[&str] = &[
    "escapes.test.zone",
    "names.test.zone",
    "generic.test.zone",
    "types.test.zone",
    "dnssec.test.zone",
    "delegation.test.zone",
    "svcb.test.zone",
    "legacy.test.zone",
    "syntax.test.zone",
];

/// The zones only NSD loads.
const NSD_ONLY: &[&str] = &["nsd-only/legacy.test.zone", "nsd-only/utf8.test.zone"];

/// The zones only Knot loads.
const KNOT_ONLY: &[&str] = &["knot-only/dnssec-times.test.zone"];

#[test]
fn txt_escapes_and_strings_are_served_octet_for_octet() -> Result<()> {
    served_as_the_peers_serve_it("escapes.test.zone", &[Nsd, Knot], 1)
}

#[test]
fn owner_names_of_any_octet_are_served() -> Result<()> {
    served_as_the_peers_serve_it("names.test.zone", &[Nsd, Knot], 2)
}

#[test]
fn rfc3597_generic_records_are_served_octet_for_octet() -> Result<()> {
    served_as_the_peers_serve_it("generic.test.zone", &[Nsd, Knot], 3)
}

#[test]
fn every_type_both_peers_load_is_served() -> Result<()> {
    served_as_the_peers_serve_it("types.test.zone", &[Nsd, Knot], 4)
}

#[test]
fn dnssec_records_are_served_as_data() -> Result<()> {
    served_as_the_peers_serve_it("dnssec.test.zone", &[Nsd, Knot], 5)
}

#[test]
fn a_parent_serves_the_ds_records_of_its_delegations() -> Result<()> {
    served_as_the_peers_serve_it("delegation.test.zone", &[Nsd, Knot], 6)
}

#[test]
fn svcb_and_https_parameters_are_served() -> Result<()> {
    served_as_the_peers_serve_it("svcb.test.zone", &[Nsd, Knot], 7)
}

#[test]
fn obsolete_types_in_rfc3597_form_are_served() -> Result<()> {
    served_as_the_peers_serve_it("legacy.test.zone", &[Nsd, Knot], 8)
}

#[test]
fn master_file_syntax_is_read_as_the_peers_read_it() -> Result<()> {
    served_as_the_peers_serve_it("syntax.test.zone", &[Nsd, Knot], 9)
}

/// NSD reads the presentation forms of the types Knot does not know to the
/// same data as their RFC 3597 forms in `legacy.test.zone`, and dnsd serves
/// them as NSD does.
#[test]
fn obsolete_types_in_presentation_form_are_served_as_nsd_serves_them() -> Result<()> {
    let dir = corpus_dir();
    let presentation = agreed_transfer(&dir.join("nsd-only/legacy.test.zone"), &[Nsd], 10)?;
    let generic = agreed_transfer(&dir.join("legacy.test.zone"), &[Nsd], 10)?;
    if let Some(diff) = difference(&presentation, &generic) {
        bail!("NSD reads nsd-only/legacy.test.zone and legacy.test.zone differently:\n{diff}");
    }
    dnsd_serves_the_transfer(&dir.join("nsd-only/legacy.test.zone"), &presentation, 10)
}

#[test]
fn raw_utf8_is_served_as_nsd_serves_it() -> Result<()> {
    served_as_the_peers_serve_it("nsd-only/utf8.test.zone", &[Nsd], 11)
}

#[test]
fn rrsig_times_in_seconds_are_served_as_knot_serves_them() -> Result<()> {
    served_as_the_peers_serve_it("knot-only/dnssec-times.test.zone", &[Knot], 12)
}

/// The zone files dnsd writes read the same in NSD and Knot: each corpus
/// zone both peers load is served by dnsd and changed through its API,
/// which rewrites the file from the records dnsd holds; NSD and Knot then
/// load the rewritten file and transfer it, and it must hold exactly the
/// records of the original (every escape, label octet and generic type),
/// the one RRset added, and the SOA with its serial raised.
#[test]
fn zone_files_dnsd_writes_are_read_the_same_by_nsd_and_knot() -> Result<()> {
    let mut problems = Vec::new();
    for file in BOTH_PEERS {
        let path = corpus_dir().join(file);
        let origin = origin_of(&path);
        let before = agreed_transfer(&path, &[Nsd, Knot], 13)?;
        let ws = DnsdWorkspace::new()?;
        // The change goes to the zone's journal; the file is rewritten
        // from it right after.
        ws.toml("[history]\nzonefile_sync = 0\n")?;
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let live = ws.path().join("zones").join(format!("{origin}zone"));
        fs::write(&live, &text)?;
        let dnsd = ApiDnsd::start(&ws, loopback(13, 3), &[])?;
        let token = dnsd.default_token()?;
        let added = format!("written-by-dnsd.{origin}");
        let reply = dnsd.call(
            "PUT",
            &format!("/v1/zones/{origin}/rrsets/{added}/TXT"),
            Some(&token),
            Some(r#"{"ttl": 60, "records": ["\"rewritten\\255\""]}"#),
        )?;
        if reply.status != 200 {
            problems.push(format!(
                "{file}: the API change failed: {} {}",
                reply.status, reply.body
            ));
            continue;
        }
        let rewritten = || {
            fs::read_to_string(&live)
                .is_ok_and(|t| t.contains("; written by dnsd") && t.contains(&added))
        };
        if !cutover_tests::process::wait_until(std::time::Duration::from_secs(10), rewritten) {
            problems.push(format!(
                "{file}: the zone file was not rewritten from the journal"
            ));
            continue;
        }
        drop(dnsd);
        let written = fs::read(&live)?;
        if !written.is_ascii() {
            problems.push(format!("{file}: dnsd wrote octets outside ASCII"));
        }
        let after = agreed_transfer(&live, &[Nsd, Knot], 13)
            .with_context(|| format!("the file dnsd wrote for {file}"))?;
        let without = |set: &BTreeSet<Record>| -> BTreeSet<Record> {
            set.iter()
                .filter(|r| r.rtype != "TYPE6" && r.name != added)
                .cloned()
                .collect()
        };
        if let Some(diff) = difference(&without(&before), &without(&after)) {
            problems.push(format!(
                "{file}: the rewritten zone differs from the original:\n{diff}"
            ));
        }
        let txt: Vec<&Record> = after.iter().filter(|r| r.name == added).collect();
        if txt.len() != 1
            || txt[0].rtype != "TYPE16"
            || txt[0].rdata.replace(' ', "") != "\\#110a72657772697474656eff"
        {
            problems.push(format!("{file}: the added TXT is {txt:?}"));
        }
        let serial = |set: &BTreeSet<Record>| -> Option<u64> {
            let soa = set.iter().find(|r| r.rtype == "TYPE6")?;
            let hex: String = soa.rdata.split_whitespace().skip(2).collect();
            u64::from_str_radix(hex.get(hex.len() - 40..hex.len() - 32)?, 16).ok()
        };
        if serial(&after) != serial(&before).map(|s| (s + 1) % (1 << 32)) {
            problems.push(format!(
                "{file}: serial {:?} after {:?}",
                serial(&after),
                serial(&before)
            ));
        }
        println!(
            "{file}: {} records rewritten by dnsd, read back by NSD and Knot",
            after.len()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The corpus is what its directories say: both peers load every file at
/// the top, only NSD those in `nsd-only/`, only Knot those in `knot-only/`;
/// and every file has its test.
#[test]
fn each_peer_loads_exactly_the_corpus_zones_meant_for_it() -> Result<()> {
    let dir = corpus_dir();
    for (subdir, listed) in [
        ("", BOTH_PEERS),
        ("nsd-only", NSD_ONLY),
        ("knot-only", KNOT_ONLY),
    ] {
        let mut on_disk = zone_files(&dir.join(subdir))?
            .into_iter()
            .map(|f| Path::new(subdir).join(f).display().to_string())
            .collect::<Vec<_>>();
        on_disk.sort();
        let mut listed = listed.iter().map(ToString::to_string).collect::<Vec<_>>();
        listed.sort();
        assert_eq!(
            on_disk,
            listed,
            "corpus files in {}/{subdir}",
            dir.display()
        );
    }
    let mut problems = Vec::new();
    for (files, nsd_loads, knot_loads) in [
        (BOTH_PEERS, true, true),
        (NSD_ONLY, true, false),
        (KNOT_ONLY, false, true),
    ] {
        for file in files {
            let path = dir.join(file);
            let origin = origin_of(&path);
            for (peer, out, wanted) in [
                (
                    "nsd-checkzone",
                    dns_peers::nsd_checkzone(&origin, &path)?,
                    nsd_loads,
                ),
                (
                    "knotc zone-check",
                    dns_peers::knot_zone_check(&origin, &path)?,
                    knot_loads,
                ),
            ] {
                if out.status.success() != wanted {
                    problems.push(format!(
                        "{file}: {peer} {} it:\n{}",
                        if wanted { "refuses" } else { "loads" },
                        output_text(&out)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// What a peer says of an invalid file.
#[derive(Debug, Clone, Copy)]
enum Says {
    /// It refuses the file, with these words (`:line: message` for
    /// nsd-checkzone, `line N (reason)` for Knot).
    Refuses(&'static str),
    /// It loads the file.
    Loads,
}

/// One file of `invalid/` (zone `invalid.test.`), the line of its offending
/// record, and what NSD 4.6.1 and Knot 3.2.6 say of it.
struct Invalid {
    file: &'static str,
    line: usize,
    nsd: Says,
    knot: Says,
}

/// Every file of `invalid/`. Each one is refused by NSD or Knot (most by
/// both); where one peer loads it, the file breaks a rule of the RFCs all
/// the same (a length that lies, a field too wide for its octets), and dnsd
/// must refuse it too.
const INVALID: &[Invalid] = &[
    Invalid {
        file: "txt-300-octets.zone",
        line: 7,
        nsd: Says::Refuses(
            ":7: text string is longer than 255 characters, try splitting it into multiple parts",
        ),
        // Knot splits the string in two (255 and 45 octets).
        knot: Says::Loads,
    },
    Invalid {
        file: "a-extra-token.zone",
        line: 7,
        nsd: Says::Refuses(":7: syntax error"),
        knot: Says::Refuses("line 7 (unexpected data)"),
    },
    Invalid {
        file: "generic-length-short.zone",
        line: 7,
        // NSD ignores the length statement and loads the four octets.
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (the rdata length statement is incorrect)"),
    },
    Invalid {
        file: "generic-length-long.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (the rdata length statement is incorrect)"),
    },
    Invalid {
        file: "generic-zero-with-data.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (unexpected data)"),
    },
    Invalid {
        file: "generic-odd-hex.zone",
        line: 7,
        nsd: Says::Refuses(":7: number of hex digits must be a multiple of 2"),
        knot: Says::Refuses("line 7 (invalid hexadecimal character)"),
    },
    Invalid {
        file: "generic-bad-a.zone",
        line: 7,
        nsd: Says::Refuses(":7: bad unknown RDATA"),
        // knotc's check passes, but knotd then fails to load the zone.
        knot: Says::Loads,
    },
    Invalid {
        file: "label-64-octets.zone",
        line: 7,
        nsd: Says::Refuses(":7: label exceeds 63 character limit"),
        knot: Says::Refuses("line 7 (maximal domain name label length has exceeded)"),
    },
    Invalid {
        file: "name-256-octets.zone",
        line: 7,
        nsd: Says::Refuses(":7: domain name exceeds 255 character limit"),
        knot: Says::Refuses("line 7 (maximal domain name length has exceeded)"),
    },
    Invalid {
        file: "empty-label.zone",
        line: 7,
        nsd: Says::Refuses(":7: syntax error"),
        knot: Says::Refuses("line 7 (invalid domain name character)"),
    },
    Invalid {
        file: "short-ddd-owner.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (invalid number)"),
    },
    Invalid {
        file: "ddd-256.zone",
        line: 7,
        // Only a warning: "text escape \DDD overflow".
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (number is bigger than 8 bits)"),
    },
    Invalid {
        file: "unknown-type.zone",
        line: 7,
        nsd: Says::Refuses(":7: unrecognized RR type 'FOO'"),
        knot: Says::Refuses("line 7 (invalid number)"),
    },
    Invalid {
        file: "type-65536.zone",
        line: 7,
        nsd: Says::Refuses(":7: unrecognized RR type 'TYPE65536'"),
        knot: Says::Refuses("line 7 (number is bigger than 16 bits)"),
    },
    Invalid {
        file: "class-ch.zone",
        line: 7,
        nsd: Says::Refuses(":7: only class IN is supported"),
        knot: Says::Refuses("line 7 (unsupported record type)"),
    },
    Invalid {
        file: "include-etc-passwd.zone",
        line: 7,
        // Both read /etc/passwd as zone data and fail on its lines.
        nsd: Says::Refuses("/etc/passwd:"),
        knot: Says::Refuses("file '/etc/passwd', line"),
    },
    Invalid {
        file: "include-missing.zone",
        line: 7,
        nsd: Says::Refuses(":7: cannot open include file 'missing.inc'"),
        knot: Says::Refuses("line 7 (file open error)"),
    },
    Invalid {
        file: "relative-origin.zone",
        line: 7,
        nsd: Says::Refuses(":7: $ORIGIN directive requires absolute domain name"),
        knot: Says::Refuses("line 7 (invalid FQDN zone origin)"),
    },
    Invalid {
        file: "bad-ipv4.zone",
        line: 7,
        nsd: Says::Refuses(":7: invalid IPv4 address '198.18.12.256'"),
        knot: Says::Refuses("line 7 (invalid IPv4 address)"),
    },
    Invalid {
        file: "bad-ipv6.zone",
        line: 7,
        nsd: Says::Refuses(":7: invalid IPv6 address '2001:2::12:g'"),
        knot: Says::Refuses("line 7 (invalid address character)"),
    },
    Invalid {
        file: "bad-ttl.zone",
        line: 7,
        nsd: Says::Refuses(":7: unrecognized RR type '1x'"),
        knot: Says::Refuses("line 7 (invalid time unit)"),
    },
    Invalid {
        file: "ttl-2-32.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (number is bigger than 32 bits)"),
    },
    Invalid {
        file: "cname-and-other-data.zone",
        line: 8,
        nsd: Says::Refuses(":8: CNAME and other data at the same name"),
        knot: Says::Refuses("another record exists beside CNAME"),
    },
    Invalid {
        file: "two-cnames.zone",
        line: 8,
        nsd: Says::Refuses(":8: multiple CNAMEs at the same name"),
        knot: Says::Refuses("multiple CNAME records"),
    },
    Invalid {
        file: "second-soa.zone",
        line: 7,
        nsd: Says::Refuses(":7: this SOA record was already encountered"),
        knot: Says::Loads,
    },
    Invalid {
        file: "out-of-zone.zone",
        line: 7,
        nsd: Says::Refuses(":7: out of zone data"),
        // Knot leaves the record out and loads the rest.
        knot: Says::Loads,
    },
    Invalid {
        file: "mx-no-preference.zone",
        line: 7,
        // NSD notices at the end of the file.
        nsd: Says::Refuses(":8: syntax error"),
        knot: Says::Refuses("line 7 (invalid number)"),
    },
    Invalid {
        file: "srv-port-65536.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (number is bigger than 16 bits)"),
    },
    Invalid {
        file: "bad-base64.zone",
        line: 7,
        nsd: Says::Refuses(":7: invalid base64 data"),
        knot: Says::Refuses("line 7 (invalid record data)"),
    },
    Invalid {
        file: "loc-latitude-91.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 7 (invalid number)"),
    },
    Invalid {
        file: "eui48-short.zone",
        line: 7,
        nsd: Says::Refuses(":7: eui48: wrong number of hex numbers"),
        knot: Says::Refuses("line 7 (invalid EUI length)"),
    },
    Invalid {
        file: "svcb-duplicate-key.zone",
        line: 7,
        nsd: Says::Refuses(":7: Duplicate key found: port"),
        knot: Says::Refuses("line 7 (duplicate parameter name)"),
    },
    Invalid {
        file: "caa-bad-tag.zone",
        line: 7,
        nsd: Says::Refuses(":7: invalid tag is-sue: contains invalid char -"),
        // Knot loads it, and serves a CAA record dig cannot parse.
        knot: Says::Loads,
    },
    Invalid {
        file: "unterminated-string.zone",
        line: 7,
        nsd: Says::Refuses(":8: EOF inside quoted string"),
        knot: Says::Refuses("line 7 (invalid text character)"),
    },
    Invalid {
        file: "unclosed-paren.zone",
        line: 7,
        nsd: Says::Loads,
        knot: Says::Refuses("line 8 (unclosed last multiline block)"),
    },
];

/// The origin of every file in `invalid/`.
const INVALID_ORIGIN: &str = "invalid.test.";

#[test]
fn dnsd_check_refuses_each_invalid_record_at_its_line() -> Result<()> {
    let dir = corpus_dir().join("invalid");
    let mut on_disk = zone_files(&dir)?;
    on_disk.sort();
    let mut listed: Vec<String> = INVALID.iter().map(|c| c.file.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk,
        listed,
        "the files of {} and INVALID",
        dir.display()
    );

    let mut peers_differ = Vec::new();
    let mut dnsd_wrong = Vec::new();
    let mut table = String::new();
    for case in INVALID {
        let path = dir.join(case.file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for (peer, out, says) in [
            (
                "nsd-checkzone",
                dns_peers::nsd_checkzone(INVALID_ORIGIN, &path)?,
                case.nsd,
            ),
            (
                "Knot",
                dns_peers::knot_zone_check(INVALID_ORIGIN, &path)?,
                case.knot,
            ),
        ] {
            if let Some(why) = says_differently(&out, says) {
                peers_differ.push(format!("{}: {peer} {why}", case.file));
            }
        }
        if matches!((case.nsd, case.knot), (Says::Loads, Says::Loads)) {
            peers_differ.push(format!(
                "{}: both peers load it; it is not invalid",
                case.file
            ));
        }
        let record = text.lines().nth(case.line - 1).unwrap_or_default().trim();
        let ws = DnsdWorkspace::new()?;
        ws.toml("")?;
        ws.zone(INVALID_ORIGIN, &text)?;
        let out = check(ws.path())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let location = format!("{}zone:{}:", INVALID_ORIGIN, case.line);
        let verdict = if out.status.code() != Some(1) {
            dnsd_wrong.push(format!(
                "{} (line {}: {record}): dnsd check exits {} instead of refusing it:\n{}",
                case.file,
                case.line,
                out.status,
                output_text(&out)
            ));
            "accepts"
        } else if !stderr.contains(&location) {
            dnsd_wrong.push(format!(
                "{} (line {}: {record}): dnsd check refuses it without naming {location}:\n{stderr}",
                case.file, case.line
            ));
            "refuses, elsewhere"
        } else {
            "refuses"
        };
        writeln!(
            table,
            "  {:<28} line {:<2} NSD {:<8} Knot {:<8} dnsd {verdict}",
            case.file,
            case.line,
            label(case.nsd),
            label(case.knot)
        )?;
    }
    println!("invalid zone files ({} cases):\n{table}", INVALID.len());
    assert!(
        peers_differ.is_empty(),
        "INVALID no longer says what the peers say:\n{}",
        peers_differ.join("\n")
    );
    assert!(
        dnsd_wrong.is_empty(),
        "{} of {} invalid files are not refused at their line:\n{}",
        dnsd_wrong.len(),
        INVALID.len(),
        dnsd_wrong.join("\n")
    );
    Ok(())
}

fn label(says: Says) -> &'static str {
    match says {
        Says::Refuses(_) => "refuses",
        Says::Loads => "loads",
    }
}

/// Why a checker's output does not match what INVALID says of it, if it
/// does not.
fn says_differently(out: &Output, says: Says) -> Option<String> {
    let text = output_text(out);
    match says {
        Says::Loads if !out.status.success() => Some(format!("refuses it:\n{text}")),
        Says::Refuses(_) if out.status.success() => Some(format!("loads it:\n{text}")),
        Says::Refuses(words) if !text.contains(words) => {
            Some(format!("refuses it without saying {words:?}:\n{text}"))
        }
        _ => None,
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `tests/data/zones/`.
fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/zones")
}

/// The names of the `.zone` files in `dir` (not below it).
fn zone_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".zone") {
            files.push(name);
        }
    }
    Ok(files)
}

/// The zone a corpus file serves: its name without `zone`.
fn origin_of(file: &Path) -> String {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.strip_suffix("zone").unwrap_or(name).to_string()
}

/// The addresses of one test (`slot`): the peers on .1 and .2, dnsd on .3.
fn loopback(slot: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 56, slot * 4 + n))
}

fn zone_options(path: &Path) -> ServerOptions {
    ServerOptions {
        zones: vec![(origin_of(path), path.to_path_buf())],
        allow_axfr: true,
        ..ServerOptions::default()
    }
}

/// Serves the corpus file `file` from each of `peers`, takes the transfer
/// they agree on, and compares dnsd's answers with it.
fn served_as_the_peers_serve_it(file: &str, peers: &[Implementation], slot: u8) -> Result<()> {
    let path = corpus_dir().join(file);
    let transfer = agreed_transfer(&path, peers, slot)?;
    dnsd_serves_the_transfer(&path, &transfer, slot)
}

/// The zone of `path` as each of `peers` gives it by AXFR, every RDATA in
/// RFC 3597 hex; the peers must give the same records.
fn agreed_transfer(path: &Path, peers: &[Implementation], slot: u8) -> Result<BTreeSet<Record>> {
    let origin = origin_of(path);
    let options = zone_options(path);
    let mut transfers: Vec<(Implementation, BTreeSet<Record>)> = Vec::new();
    for (n, &peer) in (1..).zip(peers) {
        let ip = loopback(slot, n);
        let server: DnsServer = match peer {
            Nsd => dns_peers::start_nsd(ip, &options),
            Knot => dns_peers::start_knot(ip, &options),
            Implementation::Dnsd => bail!("dnsd is compared with the peers, not one of them"),
            Implementation::Bind => bail!("BIND is started here only as a secondary of dnsd"),
        }
        .with_context(|| format!("{} does not serve {}", peer.label(), path.display()))?;
        let records = dig::axfr(server.addr, &origin, &["+unknownformat"])
            .with_context(|| format!("{} log:\n{}", peer.label(), server.log_tail()))?;
        server.stop()?;
        transfers.push((peer, records.into_iter().collect()));
    }
    let (first, reference) = &transfers[0];
    for (peer, other) in &transfers[1..] {
        if let Some(diff) = difference(reference, other) {
            bail!(
                "{} and {} read {} differently (fix the corpus):\n{diff}",
                first.label(),
                peer.label(),
                path.display()
            );
        }
    }
    Ok(reference.clone())
}

/// The records only one of two transfers has, if any.
fn difference(a: &BTreeSet<Record>, b: &BTreeSet<Record>) -> Option<String> {
    if a == b {
        return None;
    }
    let mut text = String::new();
    for r in a.difference(b) {
        let _ = writeln!(text, "  only in the first:  {r}");
    }
    for r in b.difference(a) {
        let _ = writeln!(text, "  only in the second: {r}");
    }
    Some(text)
}

/// Where dnsd must give one RRset of the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the answer section, with AA.
    Answer,
    /// In a referral (no AA, no answer): the delegation's NS RRset in the
    /// authority section.
    ReferralNs,
    /// In a referral: glue in the additional section.
    Glue,
}

/// One RRset of the transfer and how dnsd must give it.
struct RRset {
    owner: String,
    rtype: String,
    records: BTreeSet<Record>,
    place: Place,
    /// The size of the reply uncompressed, without OPT: a transport whose
    /// limit is at least this must not truncate it.
    size: usize,
}

/// Groups the transfer into RRsets and says where each is served. Data
/// below a delegation other than glue addresses is never served: it is left
/// out, and counted (the corpus has none).
fn rrsets(origin: &str, transfer: &BTreeSet<Record>) -> (Vec<RRset>, usize) {
    let mut sets: BTreeMap<(String, String), BTreeSet<Record>> = BTreeMap::new();
    for r in transfer {
        sets.entry((r.name.clone(), r.rtype.clone()))
            .or_default()
            .insert(r.clone());
    }
    let origin_labels = labels(origin);
    let cuts: Vec<Vec<String>> = sets
        .keys()
        .filter(|(owner, rtype)| rtype == "TYPE2" && labels(owner) != origin_labels)
        .map(|(owner, _)| labels(owner))
        .collect();
    // The topmost delegation a name is at or below.
    let cut_of = |owner: &[String]| {
        cuts.iter()
            .filter(|cut| owner.ends_with(cut))
            .min_by_key(|cut| cut.len())
            .cloned()
    };
    let rr_size = |r: &Record| name_length(&r.name) + 10 + rdata_length(&r.rdata);
    let mut out = Vec::new();
    let mut occluded = 0;
    for ((owner, rtype), records) in &sets {
        let owner_labels = labels(owner);
        let question = 12 + name_length(owner) + 4;
        let (place, size) = match cut_of(&owner_labels) {
            None => (
                Place::Answer,
                question + records.iter().map(rr_size).sum::<usize>(),
            ),
            Some(cut) if cut == owner_labels && rtype == "TYPE43" => (
                Place::Answer,
                question + records.iter().map(rr_size).sum::<usize>(),
            ),
            Some(cut) => {
                let place = if cut == owner_labels && rtype == "TYPE2" {
                    Place::ReferralNs
                } else if rtype == "TYPE1" || rtype == "TYPE28" {
                    Place::Glue
                } else {
                    occluded += 1;
                    continue;
                };
                // The referral: the NS RRset and every address below the cut.
                let referral: usize = transfer
                    .iter()
                    .filter(|r| {
                        let l = labels(&r.name);
                        (l == cut && r.rtype == "TYPE2")
                            || (l.ends_with(&cut) && (r.rtype == "TYPE1" || r.rtype == "TYPE28"))
                    })
                    .map(rr_size)
                    .sum();
                (place, question + referral)
            }
        };
        out.push(RRset {
            owner: owner.clone(),
            rtype: rtype.clone(),
            records: records.clone(),
            place,
            size,
        });
    }
    (out, occluded)
}

/// The labels of a name in dig's presentation form, escapes kept as
/// written (dig writes one octet one way only), the root label left out.
fn labels(name: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut label = String::new();
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                label.push(c);
                if let Some(next) = chars.next() {
                    label.push(next);
                }
            }
            '.' => labels.push(std::mem::take(&mut label)),
            _ => label.push(c),
        }
    }
    if !label.is_empty() {
        labels.push(label);
    }
    labels
}

/// The octets of a name in presentation form on the wire.
fn name_length(name: &str) -> usize {
    labels(name)
        .iter()
        .map(|l| 1 + label_length(l))
        .sum::<usize>()
        + 1
}

/// The octets of one label: `\DDD` and `\X` are one octet each.
fn label_length(label: &str) -> usize {
    let bytes = label.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < bytes.len() {
        i += match bytes[i] {
            b'\\' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => 4,
            b'\\' => 2,
            _ => 1,
        };
        n += 1;
    }
    n
}

/// The RDATA length of a record printed in RFC 3597 form (`\# N hex`).
fn rdata_length(rdata: &str) -> usize {
    rdata
        .strip_prefix("\\# ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The four ways each RRset is asked for, with each one's size limit.
fn transports(query: Query) -> [(Query, usize); 4] {
    [
        (query.clone(), 1232 - 11),
        (query.clone().edns(Edns::Off), 512),
        (query.clone().edns(Edns::Payload(512)), 512 - 11),
        (query.tcp(), 65535 - 11),
    ]
}

/// dnsd's answers compared with one zone's transfer.
#[derive(Default)]
struct Tally {
    asked: usize,
    matched: usize,
    /// Truncated replies that could not have fitted.
    truncated: usize,
    /// Per RRset that did not match: the first difference, and the
    /// transports it did not match over.
    wrong: Vec<(String, Vec<String>)>,
}

/// Starts dnsd on `path` and asks it for every RRset of `transfer` over
/// every transport.
fn dnsd_serves_the_transfer(path: &Path, transfer: &BTreeSet<Record>, slot: u8) -> Result<()> {
    let origin = origin_of(path);
    let (sets, occluded) = rrsets(&origin, transfer);
    let dnsd =
        match dns_peers::start_dnsd(&bins::path("dnsd"), loopback(slot, 3), &zone_options(path)) {
            Ok(dnsd) => dnsd,
            Err(e) => bail!(
                "{origin}: dnsd does not serve the zone ({} RRsets, {} queries not asked); \
                 dnsd check says:\n{}\n{e:#}",
                sets.len(),
                4 * sets.len(),
                dnsd_check_says(&origin, path)?
            ),
        };
    let queries: Vec<(usize, Query, usize)> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, set)| {
            let query = Query::new(&set.owner, &set.rtype).dig_option("+unknownformat");
            transports(query).map(|(q, limit)| (i, q, limit))
        })
        .collect();
    let replies = ask_all(&dnsd, &queries)?;
    let mut tally = Tally::default();
    let mut wrong: BTreeMap<usize, (String, Vec<String>)> = BTreeMap::new();
    for ((i, query, limit), reply) in queries.iter().zip(&replies) {
        tally.asked += 1;
        let set = &sets[*i];
        match judge(set, reply, *limit) {
            Judgement::Matches => tally.matched += 1,
            Judgement::TruncatedAsItMust => tally.truncated += 1,
            Judgement::Wrong(why) => {
                let entry = wrong.entry(*i).or_insert_with(|| (why, Vec::new()));
                entry.1.push(transport_label(query));
            }
        }
    }
    tally.wrong = wrong.into_values().collect();
    println!(
        "{origin}: {} RRsets ({occluded} below a delegation, never served), {} queries \
         compared: {} match, {} truncated (too big for the transport), {} RRsets wrong",
        sets.len(),
        tally.asked,
        tally.matched,
        tally.truncated,
        tally.wrong.len()
    );
    if tally.wrong.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for (why, over) in &tally.wrong {
        writeln!(text, "- over {}: {why}", over.join(", "))?;
    }
    bail!(
        "{origin}: dnsd serves {} of {} RRsets unlike NSD and Knot ({} of {} queries):\n{text}",
        tally.wrong.len(),
        sets.len(),
        tally.asked - tally.matched - tally.truncated,
        tally.asked
    )
}

/// The first lines of what `dnsd check` says of the zone file `path`
/// alone (the server's log shows only the tail of a panic's backtrace).
fn dnsd_check_says(origin: &str, path: &Path) -> Result<String> {
    let ws = DnsdWorkspace::new()?;
    ws.toml("")?;
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ws.zone(origin, &text)?;
    let out = check(ws.path())?;
    let text = output_text(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).take(5).collect();
    Ok(format!("  ({}) {}", out.status, lines.join("\n  ")))
}

fn transport_label(query: &Query) -> String {
    match (query.tcp, query.edns) {
        (true, _) => "TCP".into(),
        (false, Edns::Off) => "UDP without EDNS".into(),
        (false, Edns::Payload(size)) => format!("UDP EDNS {size}"),
        (false, Edns::Version(v)) => format!("UDP EDNS version {v}"),
    }
}

/// Asks dnsd every query, from a few clients at once, and returns the
/// replies in query order.
fn ask_all(dnsd: &DnsServer, queries: &[(usize, Query, usize)]) -> Result<Vec<Reply>> {
    const CLIENTS: usize = 4;
    let chunk = queries.len().div_ceil(CLIENTS).max(1);
    thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> Result<Vec<Reply>> {
                    part.iter()
                        .map(|(_, q, _)| {
                            dig::ask(dnsd.addr, q).with_context(|| format!("asking dnsd {q}"))
                        })
                        .collect()
                })
            })
            .collect();
        let mut replies = Vec::with_capacity(queries.len());
        for h in handles {
            replies.extend(h.join().expect("a query thread panicked")?);
        }
        Ok(replies)
    })
}

enum Judgement {
    Matches,
    TruncatedAsItMust,
    Wrong(String),
}

/// Whether `reply` gives `set` as NSD and Knot do, over a transport whose
/// replies may hold `limit` octets (OPT aside).
fn judge(set: &RRset, reply: &Reply, limit: usize) -> Judgement {
    let what = format!("{} {}", set.owner, set.rtype);
    let m: &Message = match reply {
        Reply::Message(m) => m,
        Reply::Silence(why) => return Judgement::Wrong(format!("{what}: no reply ({why})")),
    };
    if !m.warnings.is_empty() || m.rcode != "NOERROR" {
        return Judgement::Wrong(format!("{what}: a broken or failed reply\n{m}"));
    }
    if m.flags.contains("tc") {
        return if set.size > limit {
            Judgement::TruncatedAsItMust
        } else {
            Judgement::Wrong(format!(
                "{what}: TC, though the reply fits in {} octets uncompressed\n{m}",
                set.size
            ))
        };
    }
    let aa = m.flags.contains("aa");
    let (got, shape_ok): (BTreeSet<Record>, bool) = match set.place {
        Place::Answer => (m.answer.iter().cloned().collect(), aa),
        Place::ReferralNs => (
            m.authority
                .iter()
                .filter(|r| r.rtype == "TYPE2")
                .cloned()
                .collect(),
            !aa && m.answer.is_empty(),
        ),
        Place::Glue => (
            m.additional
                .iter()
                .filter(|r| r.name == set.owner && r.rtype == set.rtype)
                .cloned()
                .collect(),
            !aa && m.answer.is_empty(),
        ),
    };
    if shape_ok && got == set.records {
        return Judgement::Matches;
    }
    let mut text = format!("{what} ({:?}): wanted\n", set.place);
    for r in &set.records {
        let _ = writeln!(text, "    {r}");
    }
    let _ = write!(text, "  dnsd answered\n{m}");
    Judgement::Wrong(text)
}
