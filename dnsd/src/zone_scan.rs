//! A light scan of zone-file text into its record entries — owner, type,
//! line, and the target of a CNAME or DNAME — read the way hickory's zone
//! parser reads them (the same lexing rules, `$ORIGIN`, owners inherited by
//! lines that start with a blank, TTL and class in either order).
//!
//! The scan exists for what that parser cannot tell: it merges each RRset
//! and keeps only the last of two CNAMEs at one name, so a zone's
//! name-level conflicts, and their lines, are only visible in the text; and
//! it does not read DNAME at all, so DNAME entries must be found before it
//! runs. The scan never fails: on text the parser would refuse it reports
//! what it could read, and the parser then reports the syntax error.
//!
//! `$INCLUDE`d files are not scanned (`includes` says whether there were
//! any).

use std::ops::Range;

use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::txt::parse_ttl;

/// One record entry of a zone file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The line the entry starts on (1-based).
    pub line: usize,
    /// The owner, absolute.
    pub owner: Name,
    pub rtype: RecordType,
    /// Where the type's token is in the text (for DNAME, rewritten before
    /// the parser reads the text).
    pub type_span: Range<usize>,
    /// The target of a CNAME or DNAME, absolute; `None` for other types or
    /// when it does not read as a name.
    pub target: Option<Name>,
}

/// Every record entry of one zone file's text, in file order.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    /// Whether the text has `$INCLUDE` directives, whose files are not
    /// scanned.
    pub includes: bool,
}

#[derive(Debug, PartialEq)]
enum Kind {
    /// Whitespace at the start of a line: the previous owner continues.
    Blank,
    Word,
    Quoted,
    At,
    /// `$` and the upper-case word after it.
    Dollar,
    /// End of an entry: a newline outside parentheses.
    Eol,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    span: Range<usize>,
    line: usize,
}

/// Splits `text` into tokens as hickory's lexer does: `;` comments, quoted
/// strings with `\` escapes, parentheses that join lines, `@`, `$WORD`.
fn tokens(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line, mut depth) = (0usize, 1usize, 0usize);
    let mut line_start = true;
    while i < bytes.len() {
        let c = bytes[i];
        if line_start {
            line_start = false;
            if c != b'\n' && c != b'\r' && c.is_ascii_whitespace() && depth == 0 {
                out.push(Token {
                    kind: Kind::Blank,
                    span: i..i + 1,
                    line,
                });
            }
        }
        match c {
            b'\n' => {
                if depth == 0 {
                    out.push(Token {
                        kind: Kind::Eol,
                        span: i..i + 1,
                        line,
                    });
                }
                line += 1;
                line_start = true;
                i += 1;
            }
            b';' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    if bytes.get(i) == Some(&b'\n') {
                        line += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                out.push(Token {
                    kind: Kind::Quoted,
                    span: start..i,
                    line,
                });
            }
            b'@' => {
                out.push(Token {
                    kind: Kind::At,
                    span: i..i + 1,
                    line,
                });
                i += 1;
            }
            b'$' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_uppercase() {
                    i += 1;
                }
                out.push(Token {
                    kind: Kind::Dollar,
                    span: start..i,
                    line,
                });
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                let ends = |b: u8| b.is_ascii_whitespace() || b == b';' || b == b')';
                while i < bytes.len() && !ends(bytes[i]) {
                    i += 1;
                }
                // Never split a UTF-8 sequence: the loop above only stops
                // at ASCII bytes, so `start..i` is on char boundaries.
                out.push(Token {
                    kind: Kind::Word,
                    span: start..i,
                    line,
                });
            }
        }
    }
    out
}

/// Scans `text`, a zone file whose names are relative to `origin`.
pub fn scan(text: &str, origin: &Name) -> Scan {
    let tokens = tokens(text);
    let mut scan = Scan::default();
    let mut origin = origin.clone();
    let mut owner: Option<Name> = None;
    // One entry (or directive) per stretch of tokens ending with an Eol.
    for entry in tokens.split(|t| t.kind == Kind::Eol) {
        let Some(first) = entry.first() else {
            continue;
        };
        let word = |t: &Token| &text[t.span.clone()];
        let mut rest = &entry[1..];
        match first.kind {
            Kind::Dollar => {
                match word(first) {
                    "$ORIGIN" => {
                        if let Some(name) =
                            rest.first().and_then(|t| Name::parse(word(t), None).ok())
                        {
                            origin = name;
                        }
                    }
                    "$INCLUDE" => scan.includes = true,
                    _ => {}
                }
                continue;
            }
            Kind::At => owner = Some(origin.clone()),
            Kind::Word => owner = Name::parse(word(first), Some(&origin)).ok(),
            Kind::Blank => {}
            Kind::Quoted | Kind::Eol => continue,
        }
        let Some(owner) = owner.as_ref() else {
            continue;
        };
        // TTL and class in either order, then the type.
        let (rtype, type_span) = loop {
            let Some((t, tail)) = rest.split_first() else {
                break (None, 0..0);
            };
            rest = tail;
            if t.kind != Kind::Word {
                break (None, 0..0);
            }
            let upper = word(t).to_ascii_uppercase();
            if parse_ttl(&upper).is_ok() || upper.parse::<DNSClass>().is_ok() {
                continue;
            }
            break (upper.parse::<RecordType>().ok(), t.span.clone());
        };
        let Some(rtype) = rtype else {
            continue;
        };
        let target = match rtype {
            RecordType::CNAME | RecordType::DNAME => rest
                .first()
                .filter(|t| t.kind == Kind::Word || t.kind == Kind::At)
                .and_then(|t| match t.kind {
                    Kind::At => Some(origin.clone()),
                    _ => Name::parse(word(t), Some(&origin)).ok(),
                }),
            _ => None,
        };
        scan.entries.push(Entry {
            line: first.line,
            owner: owner.clone(),
            rtype,
            type_span,
            target,
        });
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.test.").unwrap()
    }

    fn show(scan: &Scan) -> Vec<String> {
        scan.entries
            .iter()
            .map(|e| {
                let target = e
                    .target
                    .as_ref()
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default();
                format!("{} {} {}{target}", e.line, e.owner, e.rtype)
            })
            .collect()
    }

    #[test]
    fn owners_types_and_lines_are_read_as_the_parser_reads_them() {
        let text = "$TTL 300
@ IN SOA ns1 hostmaster ( 1 3600
      600 86400 60 ) ; a comment (with a parenthesis
  IN NS ns1
ns1 60 IN A 198.18.0.53
txt IN 60 TXT \"a ; quoted ( text\" \"b\"
    cname www
www IN CNAME @
$ORIGIN sub.example.test.
x in dname target.example.test.
y DNAME z
";
        let scan = scan(text, &origin());
        assert_eq!(
            show(&scan),
            [
                "2 example.test. SOA",
                "4 example.test. NS",
                "5 ns1.example.test. A",
                "6 txt.example.test. TXT",
                "7 txt.example.test. CNAME www.example.test.",
                "8 www.example.test. CNAME example.test.",
                "10 x.sub.example.test. DNAME target.example.test.",
                "11 y.sub.example.test. DNAME z.sub.example.test.",
            ]
        );
        assert!(!scan.includes);
        let dname = &scan.entries[6];
        assert_eq!(&text[dname.type_span.clone()], "dname");
    }

    #[test]
    fn text_the_parser_refuses_is_skipped_not_fatal() {
        let scan = scan(
            "\"quoted owner\" A 1\n  \nx IN\nbad\n$INCLUDE other.zone\nok A 198.18.0.1",
            &origin(),
        );
        assert_eq!(show(&scan), ["6 ok.example.test. A"]);
        assert!(scan.includes);
    }
}
