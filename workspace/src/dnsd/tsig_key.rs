//! The `[[tsig_key]]` entries of `dnsd.toml`: the keys (RFC 8945) that may
//! send dynamic updates (RFC 2136), their secrets (inline or in a secret
//! file) and the base64 those are written in.
//!
//! ```toml
//! [[tsig_key]]
//! name = "ops-key."
//! algorithm = "hmac-sha256"
//! secret_file = "/etc/cutover/ops-key.secret"  # e.g. `openssl rand -base64 32 > ...`
//! zones = ["example.test."]
//! ```
//!
//! Only hmac-sha256. The secret is base64 of at least 16 random bytes (32
//! recommended: `openssl rand -base64 32`, or the secret printed by
//! `tsig-keygen -a hmac-sha256 NAME` / `keymgr -t NAME`). Give it in exactly
//! one of two ways:
//!
//! ```text
//! secret      = "BASE64"         inline: then it is copied into every
//!                                generation (.cutover/generations/N/);
//! secret_file = "/absolute/path" a file holding the base64 (surrounding
//!                                whitespace ignored), kept outside the
//!                                workspace and out of its generations.
//! ```
//!
//! Unsigned updates and updates signed by a key not listed for the zone are
//! refused. A key without `zones` updates nothing: it is for signing zone
//! transfers and NOTIFYs (`[[secondary]]`, `[transfer]`).
//!
//! A `secret_file` is read whenever `dnsd.toml` is parsed, never cached
//! apart from it: at start, on every reload, when a new generation is
//! validated, and when dnsd authenticates a dynamic update (it reads
//! `dnsd.toml` afresh for each one). So a rotated secret (write the new
//! file, then rename it over the old one) signs the next update without a
//! reload. A secret file that has become missing, unreadable or invalid is
//! a broken `dnsd.toml`: reloads and workspace changes fail, dnsd keeps
//! answering queries from the snapshot it has, and updates are refused
//! (SERVFAIL) until the file is fixed. The path must be absolute because
//! generations are validated in a staging copy of the workspace, where a
//! relative path would point elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::ops::Range;
use std::path::Path;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;
use toml::Spanned;

use super::fields::{distinct_values, normalize_zone, unique_name};
use crate::problems::Problems;

/// The only TSIG algorithm dnsd accepts.
pub const HMAC_SHA256: &str = "hmac-sha256";

/// Shortest secret accepted: RFC 8945 §6 asks for keys at least as long as
/// the hash output; 16 bytes is the floor below which a key is guessable.
pub const MIN_TSIG_SECRET: usize = 16;

/// Longest secret file read: a base64 secret of any sensible length fits
/// many times over, and a path like /dev/zero must not hang a reload.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A TSIG key allowed to update some zones. The secret is never printed:
/// `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Fully qualified, lower case, ends with a dot.
    pub name: String,
    /// Always `hmac-sha256` today.
    pub algorithm: String,
    pub secret: Vec<u8>,
    /// Zone origins, fully qualified, lower case, ending with a dot.
    pub zones: Vec<String>,
    /// 1-based line of the `[[tsig_key]]` entry.
    pub line: usize,
    /// The file the secret was read from, if it was (`secret_file`).
    pub secret_file: Option<std::path::PathBuf>,
}

impl TsigKey {
    /// Whether this key may update the zone `origin` (fully qualified).
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.zones.contains(&origin)
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("zones", &self.zones)
            .field("line", &self.line)
            .finish()
    }
}

/// One entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTsigKey {
    name: Spanned<String>,
    algorithm: Spanned<String>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    zones: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The keys in file order. An entry whose name is bad or already taken is
/// reported and left out, its other fields unchecked.
pub(super) fn parse(raw: &[Spanned<RawTsigKey>], problems: &mut Problems<'_>) -> Vec<TsigKey> {
    let mut tsig_keys = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, k) in raw.iter().enumerate() {
        let entry_span = k.span();
        let line = problems.line(entry_span.start);
        let k = k.get_ref();
        let Some(name) = unique_name(&k.name, "tsig_key", i, &mut seen, problems) else {
            continue;
        };
        let algorithm = k
            .algorithm
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if algorithm != HMAC_SHA256 {
            problems.at(
                k.algorithm.span(),
                format!("tsig_key[{i}].algorithm"),
                format!(
                    "{:?} is not supported: dnsd accepts only {HMAC_SHA256:?}",
                    k.algorithm.get_ref()
                ),
            );
        }
        let secret = key_secret(k, i, entry_span, problems).unwrap_or_default();
        // Without `zones`, a key updates nothing: it signs zone transfers
        // and NOTIFYs only (`[[secondary]]`, `[transfer]`).
        let zones = k.zones.as_ref().map_or_else(Vec::new, |zones| {
            distinct_values(
                zones,
                &format!("tsig_key[{i}].zones"),
                normalize_zone,
                "list the zones this key may update, e.g. [\"example.test.\"], or leave `zones` out for a key that signs zone transfers only",
                problems,
            )
        });
        let secret_file = k
            .secret_file
            .as_ref()
            .map(|f| std::path::PathBuf::from(f.get_ref()));
        tsig_keys.push(TsigKey {
            name,
            algorithm,
            secret,
            zones,
            line,
            secret_file,
        });
    }
    tsig_keys
}

/// The decoded secret of `tsig_key[i]`, from `secret` or `secret_file`
/// (exactly one of them); `None`, with the problem reported, otherwise.
fn key_secret(
    k: &RawTsigKey,
    i: usize,
    entry: Range<usize>,
    problems: &mut Problems<'_>,
) -> Option<Vec<u8>> {
    let (text, span, field, origin) = match (&k.secret, &k.secret_file) {
        (Some(_), Some(file)) => {
            problems.at(
                file.span(),
                format!("tsig_key[{i}].secret_file"),
                "give either secret or secret_file, not both",
            );
            return None;
        }
        (None, None) => {
            problems.at(
                entry,
                format!("tsig_key[{i}].secret"),
                "a key needs its secret: add secret_file = \"/absolute/path\" (a file holding the base64 secret, kept out of the workspace) or secret = \"BASE64\"",
            );
            return None;
        }
        (Some(inline), None) => (
            inline.get_ref().clone(),
            inline.span(),
            format!("tsig_key[{i}].secret"),
            String::new(),
        ),
        (None, Some(file)) => {
            let field = format!("tsig_key[{i}].secret_file");
            let path = Path::new(file.get_ref().trim());
            if !path.is_absolute() {
                problems.at(
                    file.span(),
                    field,
                    format!(
                        "{:?} is not an absolute path: generations are checked in a copy of the workspace, so write the full path (and keep the secret outside the workspace)",
                        file.get_ref()
                    ),
                );
                return None;
            }
            match read_secret_file(path) {
                Ok(text) => (text, file.span(), field, format!("{}: ", path.display())),
                Err(e) => {
                    problems.at(
                        file.span(),
                        field,
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
    };
    match decode_base64(&text) {
        Some(bytes) if bytes.len() >= MIN_TSIG_SECRET => Some(bytes),
        Some(bytes) => {
            problems.at(
                span,
                field,
                format!(
                    "{origin}{} bytes is too short: use at least {MIN_TSIG_SECRET} random bytes (32 recommended, e.g. `openssl rand -base64 32`)",
                    bytes.len()
                ),
            );
            None
        }
        None => {
            problems.at(
                span,
                field,
                format!("{origin}not base64 (the standard alphabet, padded with '=')"),
            );
            None
        }
    }
}

/// The text of a secret file, at most `MAX_SECRET_FILE` bytes of UTF-8.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {MAX_SECRET_FILE} bytes: not a base64 secret"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not text: the file should hold the secret in base64",
        )
    })
}

/// Standard base64 (RFC 4648 §4), padded exactly. Bits past the last whole
/// byte are dropped, not refused: the hand-written decoder this replaced did
/// so, and a secret that was accepted must stay accepted.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// The bytes of a base64 secret, whitespace around it ignored; `None` for
/// anything else that is not `SECRET_BASE64`, nothing at all included.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    SECRET_BASE64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnsd::tests::{lines_and_fields, only_error, parse_str};

    const KEY: &str = "[[tsig_key]]
name = \"Ops-Key\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"Example.Test.\", \"other.test\"]
";

    #[test]
    fn a_tsig_key_parses_with_its_secret_decoded() {
        let cfg = parse_str(&format!("[server]\nmax_answers = 1\n\n{KEY}")).unwrap();
        let key = &cfg.tsig_keys[0];
        assert_eq!(key.name, "ops-key.");
        assert_eq!(key.secret, b"0123456789abcdef0123456789abcdef");
        assert_eq!(key.zones, ["example.test.", "other.test."]);
        assert_eq!(key.line, 4);
        assert!(key.allows("EXAMPLE.test."));
        assert!(!key.allows("third.test."));
        assert!(cfg.tsig_key("OPS-KEY").is_some());
        assert!(
            !format!("{key:?}").contains("0123"),
            "Debug leaks the secret"
        );
    }

    #[test]
    fn bad_tsig_keys_name_line_and_field() {
        let text = format!(
            "{KEY}
[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"example.test.\"]

[[tsig_key]]
name = \"short\"
algorithm = \"hmac-md5\"
secret = \"c2hvcnQ=\"
zones = []

[[tsig_key]]
name = \"b\"
algorithm = \"hmac-sha256\"
secret = \"not base64!\"
zones = [\"a..b\"]
"
        );
        let got = lines_and_fields(&parse_str(&text).unwrap_err());
        assert_eq!(
            got,
            [
                (8, "tsig_key[1].name".to_string()),
                (15, "tsig_key[2].algorithm".to_string()),
                (16, "tsig_key[2].secret".to_string()),
                (17, "tsig_key[2].zones".to_string()),
                (22, "tsig_key[3].secret".to_string()),
                (23, "tsig_key[3].zones[0]".to_string()),
            ]
        );
    }

    /// A key whose secret is given by `secret_lines` (TOML), on line 1.
    fn key_with(secret_lines: &str) -> String {
        format!(
            "[[tsig_key]]\nname = \"ops-key.\"\nalgorithm = \"hmac-sha256\"\n{secret_lines}\nzones = [\"example.test.\"]\n"
        )
    }

    /// A key whose secret is read from `path`.
    fn key_from_file(path: &std::path::Path) -> String {
        key_with(&format!("secret_file = {:?}", path.display().to_string()))
    }

    /// A secret file outside any workspace holding `content`.
    fn secret_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, content.as_bytes()).unwrap();
        file
    }

    #[test]
    fn a_secret_file_holds_the_base64_secret_and_debug_never_shows_it() {
        let file = secret_file("  MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n\n");
        let text = key_from_file(file.path());
        let cfg = parse_str(&text).unwrap();
        let key = &cfg.tsig_keys[0];
        assert_eq!(key.secret, b"0123456789abcdef0123456789abcdef");
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("0123") && !debug.contains("MDEy"),
            "Debug leaks the secret: {debug}"
        );
        assert!(debug.contains("<32 bytes>"), "{debug}");
    }

    #[test]
    fn a_rotated_secret_file_is_read_at_the_next_parse() {
        let file = secret_file("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        let text = key_from_file(file.path());
        assert_eq!(
            parse_str(&text).unwrap().tsig_keys[0].secret,
            b"0123456789abcdef0123456789abcdef"
        );
        std::fs::write(file.path(), "cm90YXRlZC1zZWNyZXQtcm90YXRlZC1zZWNyZXQ=\n").unwrap();
        assert_eq!(
            parse_str(&text).unwrap().tsig_keys[0].secret,
            b"rotated-secret-rotated-secret"
        );
    }

    #[test]
    fn a_key_needs_exactly_one_of_secret_and_secret_file() {
        let file = secret_file("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        let both = key_with(&format!(
            "secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\nsecret_file = {:?}",
            file.path().display().to_string()
        ));
        let (line, field, message) = only_error(&both);
        assert_eq!((line, field.as_str()), (5, "tsig_key[0].secret_file"));
        assert!(message.contains("not both"), "{message}");

        let (line, field, message) = only_error(&format!("\n{}", key_with("")));
        assert_eq!((line, field.as_str()), (2, "tsig_key[0].secret"));
        assert!(message.contains("secret_file"), "{message}");
    }

    #[test]
    fn a_relative_secret_file_is_rejected() {
        let (line, field, message) = only_error(&key_with("secret_file = \"secrets/ops.key\""));
        assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret_file"));
        assert!(message.contains("absolute"), "{message}");
    }

    #[test]
    fn an_unreadable_secret_file_is_named_with_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let text = key_from_file(&missing);
        let (line, field, message) = only_error(&text);
        assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret_file"));
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message}");

        // A directory is not a secret either.
        let text = key_from_file(dir.path());
        let (_, _, message) = only_error(&text);
        assert!(message.contains("directory"), "{message}");
    }

    #[test]
    fn a_secret_file_that_is_not_a_long_enough_base64_secret_is_rejected() {
        for (content, expected) in [
            ("not base64!\n", "not base64"),
            ("c2hvcnQ=\n", "5 bytes is too short"),
            ("", "not base64"),
        ] {
            let file = secret_file(content);
            let path = file.path().display().to_string();
            let (line, field, message) = only_error(&key_from_file(file.path()));
            assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret_file"));
            assert!(
                message.contains(expected) && message.contains(&path),
                "{content:?}: {message}"
            );
            assert!(!message.contains("c2hvcnQ"), "the error shows the secret");
        }

        // Reading stops at a bound: a huge file (or /dev/zero) is no secret.
        let huge = secret_file(&"A".repeat(MAX_SECRET_FILE as usize + 4));
        let text = key_from_file(huge.path());
        let (_, _, message) = only_error(&text);
        assert!(message.contains("longer than"), "{message}");
    }

    #[test]
    fn base64_is_decoded_strictly() {
        let accepted: [(&str, &[u8]); 11] = [
            ("aGVsbG8=", b"hello"),
            ("aGVsbG8h", b"hello!"),
            ("aGk=", b"hi"),
            ("aA==", b"h"),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
            // Whitespace around the text is ignored, Unicode's too.
            ("  aGk=\n", b"hi"),
            ("\taGk=\r\n", b"hi"),
            ("\u{3000}aGk=\u{a0}", b"hi"),
            // Bits past the last byte are dropped, not checked.
            ("aGl=", b"hi"),
            ("aB==", b"h"),
            ("aGVsbG9=", b"hello"),
        ];
        for (text, bytes) in accepted {
            assert_eq!(decode_base64(text).as_deref(), Some(bytes), "{text:?}");
        }
        for text in [
            // Nothing at all.
            "",
            "   ",
            "====",
            // Padding missing, too long, or anywhere but the end.
            "aGVsbG8",
            "aGk",
            "aA=",
            "aA",
            "a",
            "a===",
            "aGk==",
            "aGk=====",
            "aA==aA==",
            "a=A=",
            "aG=k",
            // Whitespace inside, or characters outside the standard alphabet.
            "aGV sbG8=",
            "aGVs\nbG8=",
            "aG-k",
            "aG_k",
            "aGk\u{e9}",
            "not base64!",
        ] {
            assert_eq!(decode_base64(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_secret_is_at_least_16_bytes() {
        // 16 bytes: "0123456789abcdef"; 15 bytes: "0123456789abcde".
        let cfg = parse_str(&key_with("secret = \"MDEyMzQ1Njc4OWFiY2RlZg==\"")).unwrap();
        assert_eq!(cfg.tsig_keys[0].secret, b"0123456789abcdef");
        let (line, field, message) = only_error(&key_with("secret = \"MDEyMzQ1Njc4OWFiY2Rl\""));
        assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret"));
        assert_eq!(
            message,
            "15 bytes is too short: use at least 16 random bytes (32 recommended, e.g. `openssl rand -base64 32`)"
        );
        let (_, _, message) = only_error(&key_with("secret = \"MDEy MzQ1Njc4OWFiY2RlZg==\""));
        assert_eq!(
            message,
            "not base64 (the standard alphabet, padded with '=')"
        );
    }
}
