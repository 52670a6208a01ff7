//! Reading fields: from the tokens of an entry (presentation form) and from
//! wire-form rdata, one field at a time, with errors that say which field.

use crate::lexer::Token;
use crate::name::{Name, unescape};

/// The rdata tokens of one entry, consumed left to right.
pub struct Tokens<'a, 't> {
    tokens: &'a [Token<'t>],
    pos: usize,
}

impl<'a, 't> Tokens<'a, 't> {
    pub fn new(tokens: &'a [Token<'t>]) -> Self {
        Self { tokens, pos: 0 }
    }

    /// The next token, or an error naming the missing field.
    pub fn next(&mut self, what: &str) -> Result<Token<'t>, String> {
        let t = self
            .tokens
            .get(self.pos)
            .copied()
            .ok_or_else(|| format!("missing {what}"))?;
        self.pos += 1;
        Ok(t)
    }

    /// The next token if there is one.
    pub fn next_opt(&mut self) -> Option<Token<'t>> {
        let t = self.tokens.get(self.pos).copied();
        self.pos += usize::from(t.is_some());
        t
    }

    /// Every token not read yet.
    pub fn rest(&mut self) -> &'a [Token<'t>] {
        let rest = &self.tokens[self.pos.min(self.tokens.len())..];
        self.pos = self.tokens.len();
        rest
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    /// The next token, left unread.
    pub fn peek(&self) -> Option<Token<'t>> {
        self.tokens.get(self.pos).copied()
    }

    /// An error when tokens are left over: `A 198.18.0.1 198.18.0.2` is
    /// not one address.
    pub fn finish(&self) -> Result<(), String> {
        match self.tokens.get(self.pos) {
            None => Ok(()),
            Some(t) => Err(format!(
                "unexpected `{}` after the last field of the record",
                t.show()
            )),
        }
    }
}

/// A decimal number that fits `max`.
pub fn number(t: &Token, what: &str, max: u64) -> Result<u64, String> {
    let text = unquoted(t, what)?;
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return Err(format!("{what}: `{}` is not a decimal number", t.show()));
    }
    let v: u64 = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: `{}` is too large", t.show()))?;
    if v > max {
        return Err(format!("{what}: {v} is more than {max}"));
    }
    Ok(v)
}

/// The token's text, refusing a quoted token where a plain word belongs.
pub fn unquoted<'t>(t: &Token<'t>, what: &str) -> Result<&'t [u8], String> {
    if t.quoted {
        return Err(format!("{what}: `{}` must not be quoted", t.show()));
    }
    Ok(t.text)
}

/// A TTL or period: seconds, or units as in `1h30m`, `2w` (s, m, h, d, w).
pub fn period(t: &Token, what: &str) -> Result<u32, String> {
    let text = unquoted(t, what)?;
    let bad = || {
        format!(
            "{what}: `{}` is not a number of seconds or a duration like 1h30m",
            t.show()
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    if text.iter().all(u8::is_ascii_digit) {
        return number(t, what, u64::from(u32::MAX)).map(|v| v as u32);
    }
    let (mut total, mut current, mut digits) = (0u64, 0u64, false);
    for &c in text {
        if c.is_ascii_digit() {
            current = current * 10 + u64::from(c - b'0');
            digits = true;
            if current > u64::from(u32::MAX) {
                return Err(bad());
            }
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => return Err(bad()),
        };
        if !digits {
            return Err(bad());
        }
        total += current * unit;
        current = 0;
        digits = false;
    }
    total += current;
    u32::try_from(total)
        .map_err(|_| format!("{what}: `{}` is more than {} seconds", t.show(), u32::MAX))
}

/// One <character-string>: a word or a quoted string, escapes decoded, at
/// most 255 octets.
pub fn char_string(t: &Token, what: &str) -> Result<Vec<u8>, String> {
    let bytes = decode_escapes(t.text).map_err(|e| format!("{what}: {e}"))?;
    if bytes.len() > 255 {
        return Err(format!(
            "{what}: a character-string holds at most 255 octets, this one has {}; \
             split it into several quoted strings",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The octets a token stands for: `\DDD` one octet, `\X` the octet X.
pub fn decode_escapes(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            let (octet, used) = unescape(&text[i..])?;
            out.push(octet);
            i += used;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Wire-form rdata, read field by field; every read fails on truncation.
pub struct Wire<'w> {
    bytes: &'w [u8],
    pos: usize,
}

impl<'w> Wire<'w> {
    pub fn new(bytes: &'w [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Option<&'w [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn name(&mut self) -> Option<Name> {
        let (name, used) = Name::from_wire_prefix(&self.bytes[self.pos..])?;
        self.pos += used;
        Some(name)
    }

    /// One length-prefixed string.
    pub fn char_string(&mut self) -> Option<&'w [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    pub fn rest(&mut self) -> &'w [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// A <character-string> in presentation form: always quoted, `"` and `\`
/// escaped, octets outside printable ASCII as `\DDD`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str) -> Token<'_> {
        Token {
            text: text.as_bytes(),
            quoted: false,
            line: 1,
        }
    }

    #[test]
    fn periods_with_units() {
        assert_eq!(period(&word("3600"), "ttl"), Ok(3600));
        assert_eq!(period(&word("1h30m"), "ttl"), Ok(5400));
        assert_eq!(period(&word("1W"), "ttl"), Ok(604_800));
        assert_eq!(period(&word("2d1"), "ttl"), Ok(172_801));
        assert!(period(&word("h"), "ttl").is_err());
        assert!(period(&word("1x"), "ttl").is_err());
        assert!(period(&word("4294967296"), "ttl").is_err());
    }

    #[test]
    fn a_ddd_escape_is_one_octet() {
        assert_eq!(decode_escapes(b"\\065\\066C").unwrap(), b"ABC");
        assert_eq!(
            decode_escapes(b"\\255\\128\\010\\092").unwrap(),
            [255, 128, 10, 92]
        );
        assert_eq!(decode_escapes(b"a\\\"b\\\\").unwrap(), b"a\"b\\");
        assert_eq!(quote(&[b'a', 0, b'"', 200]), "\"a\\000\\\"\\200\"");
    }

    #[test]
    fn a_long_character_string_is_refused() {
        let long = "x".repeat(300);
        let e = char_string(&word(&long), "TXT").unwrap_err();
        assert!(e.contains("300"), "{e}");
        assert!(char_string(&word(&"x".repeat(255)), "TXT").is_ok());
    }
}
