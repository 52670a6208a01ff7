//! Master-file entries to records: directives (`$ORIGIN`, `$TTL`,
//! `$INCLUDE`), owners inherited by lines that start with a blank, TTL and
//! class in either order, then the type and its rdata.

use std::path::{Path, PathBuf};

use crate::lexer::{self, Token};
use crate::name::Name;
use crate::{Error, Includes, Record, Zone, ZoneRecord, rdata, types};

/// The TTL of a record that gives none when the file has no `$TTL` yet:
/// NSD's default (RFC 1035 left it to the implementation).
pub const DEFAULT_TTL: u32 = 3600;
/// How deep `$INCLUDE`s may nest, so that a file including itself ends.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Errors reported before giving up on a file: enough to fix a batch, not
/// a flood for a file that is not a zone at all.
const MAX_ERRORS: usize = 100;

struct State<'i> {
    origin: Name,
    default_ttl: u32,
    last_owner: Option<Name>,
    includes: &'i mut dyn Includes,
    zone: Zone,
    errors: Vec<Error>,
}

/// Reads master-file `text` (the content of `file`) with `origin` as the
/// initial `$ORIGIN`. Every entry is read; all problems are returned, each
/// with its file and line, or the records if there were none.
pub fn read(
    text: &[u8],
    file: &Path,
    origin: &Name,
    includes: &mut dyn Includes,
) -> Result<Zone, Vec<Error>> {
    let mut state = State {
        origin: origin.clone(),
        default_ttl: DEFAULT_TTL,
        last_owner: None,
        includes,
        zone: Zone::default(),
        errors: Vec::new(),
    };
    state.file(text, file.to_path_buf(), 0);
    // What directives left unused of the room made below goes back.
    state.zone.records.shrink_to_fit();
    if state.errors.is_empty() {
        Ok(state.zone)
    } else {
        Err(state.errors)
    }
}

impl State<'_> {
    fn file(&mut self, text: &[u8], path: PathBuf, depth: usize) {
        let index = self.zone.files.len();
        self.zone.files.push(path.clone());
        let entries = match lexer::entries(text) {
            Ok(entries) => entries,
            Err(e) => {
                self.errors.push(Error {
                    file: path,
                    line: e.line,
                    message: e.message,
                });
                return;
            }
        };
        // Room for a record per entry, up front: growing a million records
        // by doubling copies them all twice over.
        self.zone.records.reserve(entries.len());
        for entry in entries.iter() {
            if self.errors.len() >= MAX_ERRORS {
                return;
            }
            let result = if !entry.blank_owner
                && entry.tokens[0].text.first() == Some(&b'$')
                && !entry.tokens[0].quoted
            {
                self.directive(entry.tokens, &path, depth)
            } else {
                self.record(&entry).map(|record| {
                    self.zone.records.push(ZoneRecord {
                        record,
                        file: index,
                        line: entry.line,
                    });
                })
            };
            if let Err(message) = result {
                self.errors.push(Error {
                    file: path.clone(),
                    line: entry.line,
                    message,
                });
            }
        }
    }

    fn directive(&mut self, tokens: &[Token], path: &Path, depth: usize) -> Result<(), String> {
        let name = tokens[0];
        let args = &tokens[1..];
        if name.is("$ORIGIN") {
            let [arg] = args else {
                return Err("$ORIGIN takes one domain name".into());
            };
            // NSD and Knot refuse a relative origin, whatever BIND does.
            if !crate::name::is_absolute(arg.text) {
                return Err(format!(
                    "$ORIGIN {}: the origin must be absolute (end with a dot)",
                    arg.show()
                ));
            }
            self.origin =
                Name::parse(arg.text, &self.origin).map_err(|e| format!("$ORIGIN: {e}"))?;
        } else if name.is("$TTL") {
            let [arg] = args else {
                return Err("$TTL takes one TTL".into());
            };
            self.default_ttl = rdata::ttl(arg)?;
        } else if name.is("$INCLUDE") {
            let (file, origin) = match args {
                [file] => (file, self.origin.clone()),
                [file, origin] => (
                    file,
                    Name::parse(origin.text, &self.origin).map_err(|e| format!("$INCLUDE: {e}"))?,
                ),
                _ => return Err("$INCLUDE takes a file name and, optionally, an origin".into()),
            };
            if depth + 1 > MAX_INCLUDE_DEPTH {
                return Err(format!(
                    "$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"
                ));
            }
            let file = rdata::decode_escapes(file.text)?;
            let (included, text) = self
                .includes
                .read(&file, path)
                .map_err(|e| format!("$INCLUDE: {e}"))?;
            // The including file's origin is unaffected (RFC 1035 §5.1).
            let saved = std::mem::replace(&mut self.origin, origin);
            self.file(&text, included, depth + 1);
            self.origin = saved;
        } else {
            return Err(format!(
                "unknown directive `{}` (dnsd reads $ORIGIN, $TTL and $INCLUDE, as NSD)",
                name.show()
            ));
        }
        Ok(())
    }

    fn record(&mut self, entry: &lexer::Entry) -> Result<Record, String> {
        let mut tokens = entry.tokens;
        let owner = if entry.blank_owner {
            self.last_owner
                .clone()
                .ok_or("the first record has no owner (the line starts with a blank)")?
        } else {
            let t = tokens[0];
            tokens = &tokens[1..];
            if t.quoted {
                return Err(format!("the owner {} must not be quoted", t.show()));
            }
            Name::parse(t.text, &self.origin).map_err(|e| format!("the owner: {e}"))?
        };
        self.last_owner = Some(owner.clone());
        let (mut ttl, mut class) = (None, None);
        let rtype = loop {
            let Some((t, rest)) = tokens.split_first() else {
                return Err("missing the record type".into());
            };
            tokens = rest;
            if t.quoted {
                return Err(format!("expected a TTL, class or type, not {}", t.show()));
            }
            if t.text.first().is_some_and(u8::is_ascii_digit) {
                if ttl.is_some() {
                    return Err(format!("a second TTL `{}`", t.show()));
                }
                ttl = Some(rdata::ttl(t)?);
            } else if let Some(c) = types::class_code(t.text).filter(|_| class.is_none()) {
                class = Some(c);
            } else if let Some(code) = types::type_code(t.text) {
                break code;
            } else {
                return Err(format!("`{}` is not a record type, TTL or class", t.show()));
            }
        };
        if types::is_meta(rtype) {
            return Err(format!(
                "{} is a query or meta type, not data a zone can hold",
                types::type_name(rtype)
            ));
        }
        let rdata = rdata::parse(rtype, tokens, &self.origin)
            .map_err(|e| format!("{} rdata: {e}", types::type_name(rtype)))?;
        Ok(Record {
            owner,
            class: class.unwrap_or(types::IN),
            ttl: ttl.unwrap_or(self.default_ttl),
            rtype,
            rdata,
        })
    }
}
