//! RFC 1035 master files ("zone files") read into wire-form records and
//! written back, exactly as NSD and Knot read them: `\DDD` is one octet,
//! any octet may be in a label, every type NSD 4.6 loads has its own
//! syntax, any type may be given in the RFC 3597 form `\# LEN HEX`, and
//! written text reads back to the same octets in NSD, Knot and here.
//!
//! The crate knows text and octets only — no server, no I/O except what the
//! caller's [`Includes`] does — so that every rule of the format is tested
//! here, without sockets.

mod lexer;
mod name;
mod rdata;
mod reader;
mod types;

use std::fmt;
use std::path::{Path, PathBuf};

pub use name::{MAX_LABEL, MAX_NAME, Name};
pub use reader::{DEFAULT_TTL, read};
pub use types::{class_code, codes, is_meta, type_code, type_name};

/// One resource record, its rdata in uncompressed wire form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    pub owner: Name,
    pub class: u16,
    pub ttl: u32,
    pub rtype: u16,
    pub rdata: Vec<u8>,
}

/// A record and where it was written.
#[derive(Debug, Clone)]
pub struct ZoneRecord {
    pub record: Record,
    /// Index into [`Zone::files`].
    pub file: usize,
    /// The line its entry starts on (1-based).
    pub line: usize,
}

/// What a zone file holds: its records in file order, and the files read
/// (the zone file first, then each `$INCLUDE`d file in the order read).
#[derive(Debug, Default)]
pub struct Zone {
    pub records: Vec<ZoneRecord>,
    pub files: Vec<PathBuf>,
}

/// A problem with one entry of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// How `$INCLUDE` finds files: the caller decides which paths are allowed
/// and reads them.
pub trait Includes {
    /// Resolves `path` (as written, escapes decoded) named in a `$INCLUDE`
    /// of the file `from`, and reads it; returns the path to report and
    /// the content, or why it may not be read.
    fn read(&mut self, path: &[u8], from: &Path) -> Result<(PathBuf, Vec<u8>), String>;
}

/// Refuses every `$INCLUDE`: for text that is not a file (an API body).
pub struct NoIncludes;

impl Includes for NoIncludes {
    fn read(&mut self, _: &[u8], _: &Path) -> Result<(PathBuf, Vec<u8>), String> {
        Err("not allowed here".into())
    }
}

/// Reads the rdata of one record of type `rtype` from presentation text
/// (`10 mail`, `"v=spf1 -all"`, `\# 4 c6120001`): for callers that take
/// rdata alone, such as an API.
pub fn parse_rdata(rtype: u16, text: &str, origin: &Name) -> Result<Vec<u8>, String> {
    let entries = lexer::entries(text.as_bytes()).map_err(|e| e.message)?;
    let tokens: Vec<lexer::Token> = entries
        .iter()
        .flat_map(|e| e.tokens.iter().copied())
        .collect();
    rdata::parse(rtype, &tokens, origin)
}

/// The five numbers that end an SOA's RDATA (RFC 1035 §3.3.13): serial,
/// refresh, retry, expire and minimum; `None` for RDATA too short to hold
/// them. Read from the end, so that the names before them need no parsing.
pub fn soa_numbers(rdata: &[u8]) -> Option<[u32; 5]> {
    let tail = rdata.get(rdata.len().checked_sub(20)?..)?;
    let n = |i: usize| u32::from_be_bytes([tail[i], tail[i + 1], tail[i + 2], tail[i + 3]]);
    Some([n(0), n(4), n(8), n(12), n(16)])
}

/// Writes `serial` into an SOA's RDATA; `None` if it is too short.
pub fn set_soa_serial(rdata: &mut [u8], serial: u32) -> Option<()> {
    let at = rdata.len().checked_sub(20)?;
    rdata
        .get_mut(at..at + 4)?
        .copy_from_slice(&serial.to_be_bytes());
    Some(())
}

impl Record {
    /// The serial, if this is an SOA record.
    pub fn soa_serial(&self) -> Option<u32> {
        if self.rtype != codes::SOA {
            return None;
        }
        Some(soa_numbers(&self.rdata)?[0])
    }
}

/// Where the SOA serial of the zone file `text` is written, and its value:
/// the byte range of its token, so that a caller can give the zone a new
/// serial and leave every other byte as it is. `None` when the file writes
/// no SOA itself (it includes it) or the serial is not plain digits.
pub fn soa_serial_span(text: &[u8]) -> Option<(std::ops::Range<usize>, u32)> {
    let entries = lexer::entries(text).ok()?;
    let soa = entries.iter().find_map(|entry| {
        // Not the owner (a name spelled "soa").
        let skip = usize::from(!entry.blank_owner);
        let at = skip + entry.tokens.get(skip..)?.iter().position(|t| t.is("SOA"))?;
        entry.tokens.get(at + 3).copied()
    })?;
    if soa.quoted || !soa.text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let serial = std::str::from_utf8(soa.text).ok()?.parse().ok()?;
    let start = (soa.text.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    Some((start..start + soa.text.len(), serial))
}

/// Rdata in presentation form; the generic form for types without a
/// syntax of their own or rdata that does not fit it.
pub fn format_rdata(rtype: u16, rdata: &[u8]) -> String {
    rdata::format(rtype, rdata)
}

/// Whether `rdata` is well-formed rdata of `rtype`, what a zone file can
/// hold: it reads back from its own syntax (always true for types read
/// only in the generic form).
pub fn rdata_fits(rtype: u16, rdata: &[u8]) -> bool {
    rdata::fits(rtype, rdata)
}

/// The domain name that rdata of these types points at: NS, CNAME, PTR,
/// DNAME targets, MX exchanges, SRV targets.
pub fn rdata_target(rtype: u16, rdata: &[u8]) -> Option<Name> {
    rdata::target(rtype, rdata)
}

/// Types this crate reads in their own syntax but Knot 3.2 does not (it
/// loads them only in the generic form): obsolete or experimental ones.
const NOT_IN_KNOT: &[u16] = &[
    3, 4, 7, 8, 9, 10, 11, 19, 20, 22, 23, 24, 26, 30, 258, 32769,
];

/// The type as a master file should name it: its mnemonic when NSD, Knot
/// and this crate all read that type's own syntax, `TYPE<n>` otherwise.
pub fn type_text(rtype: u16) -> String {
    if written_in_own_syntax(rtype) {
        type_name(rtype)
    } else {
        format!("TYPE{rtype}")
    }
}

/// Whether this crate reads `rtype` in a syntax of its own (any type may
/// also be read in the generic form).
pub fn has_syntax(rtype: u16) -> bool {
    rdata::has_syntax(rtype)
}

/// Whether records of `rtype` are written in their type's syntax (else in
/// the generic form, which every server reads).
fn written_in_own_syntax(rtype: u16) -> bool {
    rdata::has_syntax(rtype) && !NOT_IN_KNOT.contains(&rtype)
}

/// One record as a master-file line, owner and rdata names absolute, so
/// that the line means the same under any `$ORIGIN`.
pub fn write_record(r: &Record) -> String {
    let class = match r.class {
        types::IN => "IN".to_string(),
        c => format!("CLASS{c}"),
    };
    let rdata = if written_in_own_syntax(r.rtype) {
        format_rdata(r.rtype, &r.rdata)
    } else {
        rdata::generic_text(&r.rdata)
    };
    format!(
        "{} {} {class} {} {rdata}",
        r.owner,
        r.ttl,
        type_text(r.rtype)
    )
}

/// A whole zone file holding `records`, in the order given, headed by the
/// comment lines of `header`.
pub fn write_zone(header: &str, records: &[Record]) -> String {
    let mut out = String::with_capacity(records.len() * 64 + header.len());
    for line in header.lines() {
        out.push_str("; ");
        out.push_str(line);
        out.push('\n');
    }
    for r in records {
        out.push_str(&write_record(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod serial_span_tests {
    use super::soa_serial_span;

    #[test]
    fn the_soa_numbers_are_read_and_the_serial_written_from_the_end() {
        // Root names for MNAME and RNAME, then the five numbers.
        let mut rdata = vec![0, 0];
        for n in [7u32, 3600, 600, 86400, 60] {
            rdata.extend_from_slice(&n.to_be_bytes());
        }
        assert_eq!(super::soa_numbers(&rdata), Some([7, 3600, 600, 86400, 60]));
        super::set_soa_serial(&mut rdata, 8).unwrap();
        assert_eq!(super::soa_numbers(&rdata).unwrap()[0], 8);
        assert_eq!(super::soa_numbers(&rdata[..19]), None);
    }

    #[test]
    fn the_serial_is_found_inside_parentheses_and_after_comments() {
        let text = b"; a zone\n$TTL 60\nsoa IN A 198.18.0.9\n@ IN SOA ns1 host ( ; names\n  2026112601 ; serial\n  3600 600 86400 60 )\nwww IN A 198.18.0.1\n";
        let (span, serial) = soa_serial_span(text).unwrap();
        assert_eq!(serial, 2026112601);
        assert_eq!(&text[span], b"2026112601");
        assert!(soa_serial_span(b"$INCLUDE soa.inc\nwww IN A 198.18.0.1\n").is_none());
    }
}
