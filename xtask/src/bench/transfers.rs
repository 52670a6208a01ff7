//! `cargo xtask bench zone --parts transfers`: the large zone copied to
//! secondaries (issue 14).
//!
//! - **AXFR to Knot**: Knot DNS started as a secondary of dnsd, timed from
//!   its start until it answers the zone's SOA (the transfer and Knot's
//!   load of it), beside the same from a Knot primary; each copy is then
//!   checked record for record against its primary's AXFR; and dnsd as
//!   the secondary (`[[replica]]`) of that Knot, timed the same way;
//! - **in sync**: dnsd with Knot, NSD and BIND as its secondaries (each
//!   having copied the whole zone), then `--syncs` API changes, each timed
//!   from the request until the last secondary answers the new address
//!   (dnsd sends NOTIFY, each asks IXFR), then as many service flips.
//!   Target: 1 s. Each copy is checked against dnsd's AXFR first, and
//!   its answers to 2,000 queries against dnsd's.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cutover_tests::dns_peers::{self, DnsServer, Primary, ServerOptions};
use cutover_tests::xfr::addresses;

const TARGET_IN_SYNC_S: f64 = 1.0;
/// The service the flips move (its zone is the benchmark's).
const SERVICE: &str = "svc";
/// A secondary may take this long to copy the zone.
const COPY_WITHIN: Duration = Duration::from_secs(900);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 57, last))
}

/// The records of zone `origin` as an AXFR from `server` gives them,
/// sorted (the closing SOA left out).
fn axfr(server: SocketAddr, origin: &str) -> Result<Vec<String>> {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+timeout=60",
            "AXFR",
            origin,
        ])
        .output()
        .context("running kdig")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !text.contains(";; ERROR"),
        "AXFR from {server}: {}",
        text.lines().find(|l| l.contains(";; ERROR")).unwrap_or("")
    );
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    records.sort();
    records.dedup();
    Ok(records)
}

/// How many queries the answers of each secondary are compared on.
const QUERIES: usize = 2000;

/// A dig batch file: names of the zone spread over it (A, which they have;
/// AAAA, which they have not), names it does not have, and the apex's SOA
/// and NS.
fn query_file(_zone: &Path, origin: &str, records: usize) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    let mut text = format!("{origin} SOA\n{origin} NS\n");
    for i in 0..QUERIES {
        let n = i * 7919 % records.max(1);
        let _ = match i % 4 {
            0 | 1 => writeln!(text, "h{n}.{origin} A"),
            2 => writeln!(text, "h{n}.{origin} AAAA"),
            _ => writeln!(text, "nothing{n}.{origin} A"),
        };
    }
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(file)
}

/// What `server` answers the queries of `file`, reply by reply: its status
/// and answer records, and its authority records when it has no answer
/// (what a negative answer is). NSD and BIND add the zone's NS records to
/// positive answers, dnsd and Knot do not: a difference of style, not of
/// data.
fn answers(server: SocketAddr, file: &Path) -> Result<Vec<String>> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+norec", "+tries=2"])
        .args(["+noall", "+comments", "+answer", "+authority", "-f"])
        .arg(file)
        .output()
        .context("running dig")?;
    let mut replies = Vec::new();
    let (mut status, mut answer, mut authority) = (String::new(), Vec::new(), Vec::new());
    let mut section = "";
    let mut flush = |status: &mut String, answer: &mut Vec<String>, authority: &mut Vec<String>| {
        if !status.is_empty() {
            let mut reply = std::mem::take(status);
            let shown = if answer.is_empty() {
                &*authority
            } else {
                &*answer
            };
            for r in shown {
                reply.push('\n');
                reply.push_str(r);
            }
            replies.push(reply);
        }
        answer.clear();
        authority.clear();
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.split_once("status: ") {
            flush(&mut status, &mut answer, &mut authority);
            status = rest.1.split(',').next().unwrap_or("").to_string();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let record = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                "answer" => answer.push(record),
                "authority" => authority.push(record),
                _ => {}
            }
        }
    }
    flush(&mut status, &mut answer, &mut authority);
    ensure!(
        replies.len() == QUERIES + 2,
        "{server} answered {} of {} queries",
        replies.len(),
        QUERIES + 2
    );
    Ok(replies)
}

fn options(zone: &Path, origin: &str) -> ServerOptions {
    ServerOptions {
        zones: vec![(origin.to_string(), zone.to_path_buf())],
        allow_axfr: true,
        ready_within: COPY_WITHIN,
        ..ServerOptions::default()
    }
}

/// A secondary of `primary`, on `ip`, timed from its start to its first
/// answer from the copy.
fn secondary(
    start: fn(IpAddr, &ServerOptions) -> Result<DnsServer>,
    ip: IpAddr,
    port: u16,
    zone: &Path,
    origin: &str,
    primary: SocketAddr,
) -> Result<(DnsServer, Duration)> {
    let options = ServerOptions {
        port: Some(port),
        primary: Some(Primary {
            addr: primary,
            key: None,
        }),
        ..options(zone, origin)
    };
    let t = Instant::now();
    let server = start(ip, &options)?;
    Ok((server, t.elapsed()))
}

/// The figures, as the part's lines of the report.
pub fn table(dnsd: &Path, zone: &Path, origin: &str, syncs: usize) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "\nzone transfers (issue 14)");
    let free = |ip| dns_peers::free_port(ip);

    // dnsd -> Knot, then Knot -> Knot.
    let knot_ip = ip(2);
    let knot_port = free(knot_ip)?;
    let toml = format!(
        "[[secondary]]\naddress = \"{knot_ip}:{knot_port}\"\n[transfer]\nallow = [\"127.0.0.0/8\"]\n"
    );
    let dnsd_primary = dns_peers::start_dnsd(
        dnsd,
        ip(1),
        &ServerOptions {
            dnsd_toml: toml,
            ..options(zone, origin)
        },
    )?;
    let (knot, from_dnsd) = secondary(
        dns_peers::start_knot,
        knot_ip,
        knot_port,
        zone,
        origin,
        dnsd_primary.addr,
    )?;
    let whole = axfr(dnsd_primary.addr, origin)?;
    let same_dnsd = axfr(knot.addr, origin)? == whole;
    drop(knot);
    let knot_primary = dns_peers::start_knot(ip(3), &options(zone, origin))?;
    let (knot, from_knot) = secondary(
        dns_peers::start_knot,
        knot_ip,
        free(knot_ip)?,
        zone,
        origin,
        knot_primary.addr,
    )?;
    let at_knot = axfr(knot_primary.addr, origin)?;
    let same_knot = axfr(knot.addr, origin)? == at_knot;
    drop(knot);
    // dnsd as the secondary ([[replica]]) of the same Knot.
    let replica_options = ServerOptions {
        primary: Some(Primary {
            addr: knot_primary.addr,
            key: None,
        }),
        dnsd_toml: "[transfer]\nallow = [\"127.0.0.0/8\"]\n".into(),
        ..options(zone, origin)
    };
    let t = Instant::now();
    let replica = dns_peers::start_dnsd(dnsd, ip(5), &replica_options)?;
    let into_dnsd = t.elapsed();
    let same_replica = axfr(replica.addr, origin)? == at_knot;
    drop((replica, knot_primary));
    let _ = writeln!(
        out,
        "  AXFR of {} records to Knot: from dnsd {:.2} s ({}), from Knot {:.2} s ({}): {:.2} x Knot",
        whole.len(),
        from_dnsd.as_secs_f64(),
        if same_dnsd {
            "copy identical"
        } else {
            "COPY DIFFERS"
        },
        from_knot.as_secs_f64(),
        if same_knot {
            "copy identical"
        } else {
            "COPY DIFFERS"
        },
        from_dnsd.as_secs_f64() / from_knot.as_secs_f64().max(1e-9),
    );
    let _ = writeln!(
        out,
        "  AXFR from Knot into dnsd as a replica: {:.2} s ({}): {:.2} x Knot into Knot",
        into_dnsd.as_secs_f64(),
        if same_replica {
            "copy identical"
        } else {
            "COPY DIFFERS"
        },
        into_dnsd.as_secs_f64() / from_knot.as_secs_f64().max(1e-9),
    );
    drop(dnsd_primary);

    // dnsd with three secondaries; changes until all serve them.
    let (kip, nip, bip) = (ip(2), ip(4), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (kport, nport, bport) = (free(kip)?, free(nip)?, free(bip)?);
    let api = SocketAddr::new(ip(1), free(ip(1))?);
    let toml = format!(
        "[[secondary]]\naddress = \"{kip}:{kport}\"\n[[secondary]]\naddress = \"{nip}:{nport}\"\n\
         [[secondary]]\naddress = \"{bip}:{bport}\"\n[transfer]\nallow = [\"127.0.0.0/8\"]\n\
         [[service]]\nname = \"{SERVICE}.{origin}\"\naddresses = [\"198.19.255.1\"]\nttl = 60\n"
    );
    let primary = dns_peers::start_dnsd(
        dnsd,
        ip(1),
        &ServerOptions {
            dnsd_toml: toml,
            dnsd_api: Some(api),
            ..options(zone, origin)
        },
    )?;
    let mut copies = Vec::new();
    let mut secondaries = Vec::new();
    for (start, ip, port) in [
        (dns_peers::start_knot as fn(_, &_) -> _, kip, kport),
        (dns_peers::start_nsd, nip, nport),
        (dns_peers::start_bind, bip, bport),
    ] {
        let (server, took) = secondary(start, ip, port, zone, origin, primary.addr)?;
        copies.push(format!("{} {:.1} s", server.label(), took.as_secs_f64()));
        secondaries.push(server);
    }
    let whole = axfr(primary.addr, origin)?;
    let queries = query_file(zone, origin, whole.len())?;
    let asked = answers(primary.addr, queries.path())?;
    for (copy, server) in copies.iter_mut().zip(&secondaries) {
        let same = axfr(server.addr, origin)? == whole;
        copy.push_str(if same { ", identical" } else { ", DIFFERS" });
        let theirs = answers(server.addr, queries.path())?;
        match asked.iter().zip(&theirs).find(|(a, b)| a != b) {
            None if theirs.len() == asked.len() => copy.push_str(", answers as dnsd"),
            first => {
                let _ = write!(copy, ", ANSWERS DIFFER: {first:?}");
            }
        }
    }
    let _ = writeln!(out, "  whole-zone copies from dnsd: {}", copies.join(", "));
    let token = std::fs::read_to_string(primary.workspace().join(".cutover/api-token"))
        .context("reading dnsd's API token")?;
    let token = token.trim();
    for kind in [Change::Rrset, Change::Flip] {
        out.push_str(&in_sync(api, token, origin, kind, syncs, &secondaries)?);
    }
    Ok(out)
}

/// What the in-sync part changes through dnsd's API.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// `PUT .../rrsets/NAME/A` (through the zone's journal).
    Rrset,
    /// `PUT /v1/services/NAME` (cutover's flip; a new serial in dnsd.toml).
    Flip,
}

/// `syncs` changes of `kind`, each timed until every secondary serves it:
/// the report's lines.
fn in_sync(
    api: SocketAddr,
    token: &str,
    origin: &str,
    kind: Change,
    syncs: usize,
    secondaries: &[DnsServer],
) -> Result<String> {
    let mut times = Vec::with_capacity(syncs);
    let mut each: Vec<Vec<Duration>> = vec![Vec::new(); secondaries.len()];
    for n in 0..syncs {
        let address = format!("198.19.254.{}", n % 250 + 1);
        let t = Instant::now();
        let name = match kind {
            Change::Rrset => {
                let name = format!("h{}.{origin}", n * 7919 % 1000);
                let body = format!("{{\"ttl\":60,\"records\":[\"{address}\"]}}");
                put(
                    api,
                    token,
                    &format!("/v1/zones/{origin}/rrsets/{name}/A"),
                    &body,
                )?;
                name
            }
            Change::Flip => {
                let name = format!("{SERVICE}.{origin}");
                let body = format!("{{\"addresses\":[\"{address}\"]}}");
                put(api, token, &format!("/v1/services/{name}"), &body)?;
                name
            }
        };
        // Each is asked in turn until all serve it: when each first did.
        let mut served: Vec<Option<Duration>> = vec![None; secondaries.len()];
        while served.iter().any(Option::is_none) {
            for (i, server) in secondaries.iter().enumerate() {
                if served[i].is_none() && addresses(server.addr, &name)? == [address.clone()] {
                    served[i] = Some(t.elapsed());
                }
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("change {n} is not served by every secondary after 60 s");
            }
        }
        for (i, at) in served.iter().enumerate() {
            each[i].push(at.unwrap_or_default());
        }
        times.push(t.elapsed());
    }
    let medians: Vec<String> = secondaries
        .iter()
        .zip(&mut each)
        .map(|(server, times)| {
            times.sort();
            format!(
                "{} {:.0} ms",
                server.label(),
                times
                    .get(times.len() / 2)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            )
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::new();
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let median = times[times.len() / 2];
        let _ = writeln!(
            out,
            "  {} until all three secondaries serve it ({syncs} changes): \
             min {:.0} ms, median {:.0} ms, max {:.0} ms (target {:.0} ms: {})",
            match kind {
                Change::Rrset => "API rrset change",
                Change::Flip => "service flip",
            },
            ms(*first),
            ms(median),
            ms(*last),
            TARGET_IN_SYNC_S * 1000.0,
            if last.as_secs_f64() <= TARGET_IN_SYNC_S {
                "met"
            } else {
                "not met"
            }
        );
        let _ = writeln!(out, "    median per secondary: {}", medians.join(", "));
    }
    Ok(out)
}

/// `PUT path` with `body` to dnsd's API.
fn put(api: SocketAddr, token: &str, path: &str, body: &str) -> Result<()> {
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "120", "-X", "PUT"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--data-binary", body])
        .arg(format!("http://{api}{path}"))
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "PUT {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
