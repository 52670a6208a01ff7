//! A DNS client for tests: runs `dig` (BIND's, a real and independent
//! implementation) and parses its output into a structured [`Message`], so
//! that answers are compared field by field instead of as text.
//!
//! dig rather than kdig: kdig lower-cases the query name before sending it,
//! and the case of the question is part of what the tests check.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The EDNS part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edns {
    /// No OPT record at all.
    Off,
    /// EDNS version 0 with this UDP payload size.
    Payload(u16),
    /// An OPT record with an unknown version (the server must say BADVERS).
    Version(u8),
}

/// One query, with everything that changes how a server must answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name exactly as sent (case preserved).
    pub name: String,
    /// The type mnemonic dig understands (A, AAAA, ANY, TYPE65534, ...).
    pub qtype: String,
    /// Class mnemonic; IN unless set.
    pub class: String,
    pub tcp: bool,
    pub edns: Edns,
    /// EDNS Client Subnet to send, as `addr/prefix`.
    pub subnet: Option<String>,
    /// The DO bit.
    pub dnssec: bool,
    /// A non-QUERY opcode (dig's names: status, iquery, notify, update).
    pub opcode: Option<String>,
    /// Further dig options that set header bits or EDNS fields
    /// (`+cdflag`, `+rec`, `+ednsopt=65001:abcd`, ...).
    pub extra: Vec<String>,
}

impl Query {
    /// A plain UDP query with EDNS (payload 1232), as a modern resolver sends.
    pub fn new(name: &str, qtype: &str) -> Self {
        Self {
            name: name.to_string(),
            qtype: qtype.to_string(),
            class: "IN".to_string(),
            tcp: false,
            edns: Edns::Payload(1232),
            subnet: None,
            dnssec: false,
            opcode: None,
            extra: Vec::new(),
        }
    }

    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    pub fn edns(mut self, edns: Edns) -> Self {
        self.edns = edns;
        self
    }

    pub fn subnet(mut self, subnet: &str) -> Self {
        self.subnet = Some(subnet.to_string());
        self
    }

    pub fn dnssec(mut self) -> Self {
        self.dnssec = true;
        self
    }

    pub fn class(mut self, class: &str) -> Self {
        self.class = class.to_string();
        self
    }

    pub fn opcode(mut self, opcode: &str) -> Self {
        self.opcode = Some(opcode.to_string());
        self
    }

    /// Adds a dig option (`+cdflag`, `+rec`, `+ednsopt=...`).
    pub fn dig_option(mut self, option: &str) -> Self {
        self.extra.push(option.to_string());
        self
    }

    /// dig turns an AXFR question into a zone transfer, which it always
    /// makes over TCP and prints as records, not as a message; asked over
    /// UDP, the question goes out with mdig (BIND's plain query tool, the
    /// same output) instead.
    fn needs_mdig(&self) -> bool {
        !self.tcp && self.qtype.eq_ignore_ascii_case("AXFR")
    }

    /// The program that sends this query: dig, or mdig where dig cannot.
    pub fn program(&self) -> &'static str {
        if self.needs_mdig() { "mdig" } else { "dig" }
    }

    /// The program's arguments for this query (without server and port).
    pub fn args(&self) -> Vec<String> {
        if self.needs_mdig() {
            self.mdig_args()
        } else {
            self.dig_args()
        }
    }

    /// mdig's arguments: dig's query options without the display and retry
    /// ones mdig lacks (it neither retries over TCP on TC nor renegotiates
    /// EDNS), and the name last. No opcodes.
    fn mdig_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["+norec", "+nocookie", "+noadflag", "+tries=2", "+timeout=3"]
            .map(String::from)
            .to_vec();
        args.push(match self.edns {
            Edns::Off => "+noedns".into(),
            Edns::Payload(size) => format!("+bufsize={size}"),
            Edns::Version(v) => format!("+edns={v}"),
        });
        if let Some(subnet) = &self.subnet {
            args.push(format!("+subnet={subnet}"));
        }
        if self.dnssec {
            args.push("+dnssec".into());
        }
        args.extend(self.extra.iter().cloned());
        args.extend([
            "-c".to_string(),
            self.class.clone(),
            "-t".to_string(),
            self.qtype.clone(),
            self.name.clone(),
        ]);
        args
    }

    /// dig's arguments for this query (without server and port).
    pub fn dig_args(&self) -> Vec<String> {
        let mut args = self.dig_options();
        args.extend([
            "-c".to_string(),
            self.class.clone(),
            "-t".to_string(),
            self.qtype.clone(),
            "-q".to_string(),
            self.name.clone(),
        ]);
        args
    }

    /// dig's options for this query, without the question.
    fn dig_options(&self) -> Vec<String> {
        // +norec: an authoritative server is asked without RD, as a resolver
        // asks it. No cookies and no AD bit: neither peer is configured for
        // them, so they only add noise. +ignore: report TC as received instead
        // of retrying over TCP. +noednsnegotiation: report BADVERS as received.
        let mut args: Vec<String> = [
            "+norec",
            "+nocookie",
            "+noadflag",
            "+ignore",
            "+noednsnegotiation",
            // One retry after 3 s: on a loaded 2-core machine a lost UDP
            // datagram is not the server's silence.
            "+tries=2",
            "+timeout=3",
            "+nocmd",
            "+nostats",
        ]
        .map(String::from)
        .to_vec();
        if self.tcp {
            args.push("+tcp".into());
        } else if self.qtype.to_ascii_uppercase().starts_with("IXFR") {
            // dig asks IXFR=serial over TCP unless told, and prints the
            // reply as a transfer (records only) unless asked for the
            // header and question.
            args.extend(["+notcp", "+comments", "+question"].map(String::from));
        }
        match self.edns {
            Edns::Off => args.push("+noedns".into()),
            Edns::Payload(size) => args.push(format!("+bufsize={size}")),
            Edns::Version(v) => args.push(format!("+edns={v}")),
        }
        if let Some(subnet) = &self.subnet {
            args.push(format!("+subnet={subnet}"));
        }
        if self.dnssec {
            args.push("+dnssec".into());
        }
        if let Some(op) = &self.opcode {
            args.push(format!("+opcode={op}"));
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.class, self.qtype)?;
        write!(f, " over {}", if self.tcp { "TCP" } else { "UDP" })?;
        match self.edns {
            Edns::Off => write!(f, ", no EDNS")?,
            Edns::Payload(size) => write!(f, ", EDNS bufsize {size}")?,
            Edns::Version(v) => write!(f, ", EDNS version {v}")?,
        }
        if let Some(s) = &self.subnet {
            write!(f, ", ECS {s}")?;
        }
        if self.dnssec {
            write!(f, ", DO")?;
        }
        if let Some(op) = &self.opcode {
            write!(f, ", opcode {op}")?;
        }
        for option in &self.extra {
            write!(f, ", {option}")?;
        }
        Ok(())
    }
}

/// One resource record as dig prints it. The owner is lower-cased (names
/// compare case-insensitively; servers may copy the case of the question
/// through name compression), and so is the RDATA of every type but TXT.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub class: String,
    pub rtype: String,
    pub rdata: String,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.name, self.ttl, self.class, self.rtype, self.rdata
        )
    }
}

/// The OPT record of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub version: u8,
    /// Flag mnemonics (`do`), sorted.
    pub flags: BTreeSet<String>,
    pub udp_payload: u16,
    /// Options as dig names them (`CLIENT-SUBNET`, `EDE`, ...) with their
    /// presentation, in message order.
    pub options: Vec<(String, String)>,
}

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OPT version {} flags [{}] udp {}",
            self.version,
            self.flags.iter().cloned().collect::<Vec<_>>().join(" "),
            self.udp_payload
        )?;
        for (name, value) in &self.options {
            write!(f, "; {name}: {value}")?;
        }
        Ok(())
    }
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub opcode: String,
    /// Including extended rcodes (BADVERS).
    pub rcode: String,
    /// Header flag mnemonics (`qr aa tc rd ra ad cd`), sorted.
    pub flags: BTreeSet<String>,
    /// Question entries as `name class type`, name case preserved.
    pub question: Vec<String>,
    pub answer: Vec<Record>,
    pub authority: Vec<Record>,
    /// Without the OPT record, which is in `opt`.
    pub additional: Vec<Record>,
    pub opt: Option<Opt>,
    /// dig's complaints about the message (a malformed packet, a mismatched
    /// question): any of them is a server bug.
    pub warnings: Vec<String>,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "    opcode {} rcode {} flags [{}]",
            self.opcode,
            self.rcode,
            self.flags.iter().cloned().collect::<Vec<_>>().join(" ")
        )?;
        for q in &self.question {
            writeln!(f, "    question: {q}")?;
        }
        if let Some(opt) = &self.opt {
            writeln!(f, "    {opt}")?;
        }
        for (section, records) in [
            ("answer", &self.answer),
            ("authority", &self.authority),
            ("additional", &self.additional),
        ] {
            for r in records {
                writeln!(f, "    {section}: {r}")?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "    dig warning: {w}")?;
        }
        Ok(())
    }
}

/// What came back for a query.
// One Reply per dig process: its size never matters, and an unboxed Message
// keeps `Reply::Message(m)` patterns simple for every test that matches on it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Message(Message),
    /// No response within dig's timeout, or the TCP connection closed.
    Silence(String),
}

impl Reply {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Reply::Message(m) => Some(m),
            Reply::Silence(_) => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Message(m) => m.fmt(f),
            Reply::Silence(why) => writeln!(f, "    no response ({why})"),
        }
    }
}

/// Sends `query` to `server` with dig (or mdig, see [`Query::program`])
/// and parses the response.
pub fn ask(server: SocketAddr, query: &Query) -> Result<Reply> {
    ask_in(None, server, query)
}

/// As `ask`, from network namespace `netns` if there is one.
pub fn ask_in(netns: Option<&str>, server: SocketAddr, query: &Query) -> Result<Reply> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, query.program()]);
            cmd
        }
        None => Command::new(query.program()),
    };
    let out = cmd
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(query.args())
        .output()
        .context("running dig (install bind9-dnsutils)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // dig exits 9 when no reply came, and reports a TCP connection the
    // server closed as a communications error; mdig exits 1 without a
    // message.
    let mdig_silent = query.program() == "mdig" && !stdout.contains("->>HEADER<<-");
    if out.status.code() == Some(9)
        || mdig_silent
        || stdout.contains("no servers could be reached")
        || stdout.contains("communications error")
    {
        let why = stdout
            .lines()
            .find(|l| l.starts_with(";;"))
            .unwrap_or("timed out")
            .trim_start_matches(";; ")
            .to_string();
        return Ok(Reply::Silence(why));
    }
    if !out.status.success() {
        bail!(
            "dig {query} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&stdout)
        .with_context(|| format!("parsing dig's output for {query}:\n{stdout}"))
        .map(Reply::Message)
}

/// Sends several questions, one after the other, over a single TCP
/// connection (dig `+keepopen`), with EDNS as [`Query::new`] sets it; returns
/// the replies in order. A connection the server closes early shows as
/// fewer replies, which is an error.
pub fn ask_on_one_tcp_connection(
    server: SocketAddr,
    questions: &[(&str, &str)],
) -> Result<Vec<Message>> {
    let mut args = Query::new(".", "SOA").tcp().dig_options();
    args.push("+keepopen".into());
    for (name, qtype) in questions {
        args.extend([name.to_string(), qtype.to_string(), "IN".to_string()]);
    }
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(&args)
        .output()
        .context("running dig (install bind9-dnsutils)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut replies = Vec::new();
    for chunk in stdout.split(";; Got answer:").skip(1) {
        replies.push(parse(chunk).with_context(|| format!("parsing dig's output:\n{chunk}"))?);
    }
    if replies.len() != questions.len() {
        bail!(
            "{} replies to {} questions on one TCP connection:\n{stdout}",
            replies.len(),
            questions.len()
        );
    }
    Ok(replies)
}

/// The whole zone `zone` from `server` by AXFR over TCP, the SOA once
/// (dig `+onesoa`), in transfer order, with further dig `options`
/// (`+unknownformat` prints every RDATA in RFC 3597 hex, octet for octet).
/// Records are parsed as in a message (owner lower-cased). A refused or
/// failed transfer, or a message dig cannot parse, is an error.
pub fn axfr(server: SocketAddr, zone: &str, options: &[&str]) -> Result<Vec<Record>> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+onesoa", "+nocmd", "+nostats", "+tries=2", "+timeout=3"])
        .args(options)
        .args(["-t", "AXFR", "-q", zone])
        .output()
        .context("running dig (install bind9-dnsutils)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.contains("; Transfer failed.") {
        bail!(
            "AXFR {zone} from {server} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let records = stdout
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(parse_record)
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("parsing dig's AXFR of {zone} from {server}:\n{stdout}"))?;
    if records.is_empty() {
        bail!("AXFR {zone} from {server} gave no records:\n{stdout}");
    }
    Ok(records)
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    None,
    Question,
    Answer,
    Authority,
    Additional,
    Opt,
}

/// Parses dig's default (`+nocmd +nostats`) output.
pub fn parse(text: &str) -> Result<Message> {
    let mut msg = Message {
        opcode: String::new(),
        rcode: String::new(),
        flags: BTreeSet::new(),
        question: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        opt: None,
        warnings: Vec::new(),
    };
    let mut section = Section::None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix(";; ->>HEADER<<- ") {
            for field in header.split(", ") {
                if let Some(v) = field.strip_prefix("opcode: ") {
                    msg.opcode = v.to_string();
                } else if let Some(v) = field.strip_prefix("status: ") {
                    msg.rcode = v.to_string();
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            msg.flags = flags.split_whitespace().map(String::from).collect();
            continue;
        }
        match line {
            ";; OPT PSEUDOSECTION:" => {
                section = Section::Opt;
                continue;
            }
            ";; QUESTION SECTION:" => {
                section = Section::Question;
                continue;
            }
            ";; ANSWER SECTION:" => {
                section = Section::Answer;
                continue;
            }
            ";; AUTHORITY SECTION:" => {
                section = Section::Authority;
                continue;
            }
            ";; ADDITIONAL SECTION:" => {
                section = Section::Additional;
                continue;
            }
            _ => {}
        }
        // dig says "Warning:" when the message itself is wrong (malformed,
        // ID or opcode mismatch) and "WARNING:" when it only advises (no
        // recursion available, retry without EDNS).
        if let Some(w) = line.strip_prefix(";; Warning: ") {
            msg.warnings.push(w.to_string());
            continue;
        }
        if line.starts_with(";;") {
            continue;
        }
        match section {
            Section::Opt => parse_opt_line(line, &mut msg)?,
            Section::Question => {
                let fields: Vec<&str> = line.trim_start_matches(';').split_whitespace().collect();
                msg.question.push(fields.join(" "));
            }
            Section::Answer => msg.answer.push(parse_record(line)?),
            Section::Authority => msg.authority.push(parse_record(line)?),
            Section::Additional => msg.additional.push(parse_record(line)?),
            Section::None => {}
        }
    }
    if msg.rcode.is_empty() {
        bail!("no header in dig's output");
    }
    Ok(msg)
}

fn parse_opt_line(line: &str, msg: &mut Message) -> Result<()> {
    let body = line.trim_start_matches(';').trim();
    if let Some(edns) = body.strip_prefix("EDNS: ") {
        // "version: 0, flags: do; udp: 1232" (an MBZ field may come between)
        let mut opt = Opt {
            version: 0,
            flags: BTreeSet::new(),
            udp_payload: 0,
            options: Vec::new(),
        };
        for field in edns.split([',', ';']).map(str::trim) {
            if let Some(v) = field.strip_prefix("version:") {
                opt.version = v.trim().parse().context("EDNS version")?;
            } else if let Some(v) = field.strip_prefix("flags:") {
                opt.flags = v.split_whitespace().map(String::from).collect();
            } else if let Some(v) = field.strip_prefix("udp:") {
                opt.udp_payload = v.trim().parse().context("EDNS udp size")?;
            } else if !field.is_empty() {
                opt.options.push(("EDNS-HEADER".into(), field.to_string()));
            }
        }
        msg.opt = Some(opt);
        return Ok(());
    }
    let Some(opt) = msg.opt.as_mut() else {
        bail!("EDNS option before the EDNS line: {line}");
    };
    let (name, value) = body.split_once(':').unwrap_or((body, ""));
    opt.options
        .push((name.trim().to_string(), value.trim().to_string()));
    Ok(())
}

fn parse_record(line: &str) -> Result<Record> {
    let mut fields = line.split_whitespace();
    let mut next = |what: &str| {
        fields
            .next()
            .map(String::from)
            .with_context(|| format!("record without {what}: {line}"))
    };
    let name = next("a name")?.to_ascii_lowercase();
    let ttl = next("a TTL")?
        .parse()
        .with_context(|| format!("bad TTL in {line}"))?;
    let class = next("a class")?;
    let rtype = next("a type")?;
    let rest: Vec<&str> = fields.collect();
    let mut rdata = rest.join(" ");
    if rtype != "TXT" {
        rdata = rdata.to_ascii_lowercase();
    }
    Ok(Record {
        name,
        ttl,
        class,
        rtype,
        rdata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_referral_with_edns_options() {
        let text = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 31513
;; flags: qr; QUERY: 1, ANSWER: 0, AUTHORITY: 2, ADDITIONAL: 3

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags: do; udp: 1232
; CLIENT-SUBNET: 198.18.1.0/24/0
;; QUESTION SECTION:
;Www.Child.example.test.\t\tIN\tA

;; AUTHORITY SECTION:
child.Example.test.\t300\tIN\tNS\tns.child.Example.test.
child.example.test.\t300\tIN\tNS\tns.elsewhere.test.

;; ADDITIONAL SECTION:
ns.child.example.test.\t300\tIN\tA\t198.18.2.53
";
        let m = parse(text).unwrap();
        assert_eq!(m.rcode, "NOERROR");
        assert_eq!(m.flags, BTreeSet::from(["qr".to_string()]));
        assert_eq!(m.question, ["Www.Child.example.test. IN A"]);
        assert!(m.answer.is_empty());
        assert_eq!(m.authority.len(), 2);
        assert_eq!(m.authority[0].name, "child.example.test.");
        assert_eq!(m.authority[0].rdata, "ns.child.example.test.");
        assert_eq!(m.additional[0].rtype, "A");
        let opt = m.opt.unwrap();
        assert_eq!(opt.udp_payload, 1232);
        assert!(opt.flags.contains("do"));
        assert_eq!(
            opt.options,
            [("CLIENT-SUBNET".to_string(), "198.18.1.0/24/0".to_string())]
        );
    }

    #[test]
    fn keeps_txt_case_and_reports_dig_warnings() {
        let text = "\
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; flags: qr aa; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0
;; Warning: Message parser reports malformed message packet.

;; ANSWER SECTION:
static.example.test.\t300\tIN\tTXT\t\"One Address\"
";
        let m = parse(text).unwrap();
        assert_eq!(m.answer[0].rdata, "\"One Address\"");
        assert_eq!(m.warnings.len(), 1);
        assert!(m.opt.is_none());
    }
}
