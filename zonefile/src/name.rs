//! Domain names between presentation form (RFC 1035 §5.1: `\.`, `\X` and
//! `\DDD` escapes, relative names, `@`) and uncompressed wire form. Any octet
//! is legal in a label (RFC 2181 §11); only lengths are limited.

use std::fmt;

/// Longest label, in octets (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;
/// Longest name in wire form, length octets and root included.
pub const MAX_NAME: usize = 255;

/// An absolute domain name in uncompressed wire form, case preserved.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

impl Name {
    pub fn root() -> Self {
        Self(Box::new([0]))
    }

    /// The wire form, ending with the root's zero octet.
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    /// Takes a wire-form name that starts `bytes`, returning it and its
    /// length; `None` if it is not a well-formed uncompressed name.
    pub fn from_wire_prefix(bytes: &[u8]) -> Option<(Self, usize)> {
        let mut i = 0;
        loop {
            let len = usize::from(*bytes.get(i)?);
            if len > MAX_LABEL {
                return None;
            }
            i += 1 + len;
            if i > MAX_NAME || i > bytes.len() {
                return None;
            }
            if len == 0 {
                return Some((Self(bytes[..i].into()), i));
            }
        }
    }

    /// Builds a name from its labels, leftmost first (the root omitted).
    pub fn from_labels<'l>(labels: impl IntoIterator<Item = &'l [u8]>) -> Result<Self, String> {
        let mut wire = Vec::new();
        for label in labels {
            push_label(&mut wire, label)?;
        }
        wire.push(0);
        check_length(&wire)?;
        Ok(Self(wire.into()))
    }

    /// The labels, leftmost first, the root excluded.
    pub fn labels(&self) -> Labels<'_> {
        Labels { wire: &self.0 }
    }

    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// Reads `text` as a name, relative names completed with `origin`.
    /// `@` alone is the origin.
    pub fn parse(text: &[u8], origin: &Name) -> Result<Self, String> {
        if text == b"@" {
            return Ok(origin.clone());
        }
        if text.is_empty() {
            return Err("an empty name".into());
        }
        if text == b"." {
            return Ok(Self::root());
        }
        let shown = || String::from_utf8_lossy(text).into_owned();
        // Room for the origin a relative name ends with.
        let mut wire = Vec::with_capacity(text.len() + 2 + origin.0.len());
        let mut label = Vec::with_capacity(MAX_LABEL);
        let mut absolute = false;
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b'.' => {
                    if label.is_empty() {
                        return Err(format!("`{}` has an empty label", shown()));
                    }
                    push_label(&mut wire, &label).map_err(|e| format!("`{}`: {e}", shown()))?;
                    label.clear();
                    i += 1;
                    if i == text.len() {
                        absolute = true;
                    }
                }
                b'\\' => {
                    let (octet, used) =
                        unescape(&text[i..]).map_err(|e| format!("`{}`: {e}", shown()))?;
                    label.push(octet);
                    i += used;
                }
                c => {
                    label.push(c);
                    i += 1;
                }
            }
        }
        if !label.is_empty() {
            push_label(&mut wire, &label).map_err(|e| format!("`{}`: {e}", shown()))?;
        }
        if absolute {
            wire.push(0);
        } else {
            wire.extend_from_slice(&origin.0);
        }
        check_length(&wire).map_err(|e| format!("`{}`: {e}", shown()))?;
        Ok(Self(wire.into()))
    }

    /// Whether `self` is `other` or below it, compared without ASCII case.
    pub fn is_at_or_below(&self, other: &Name) -> bool {
        let (a, b) = (self.label_list(), other.label_list());
        a.len() >= b.len()
            && a[a.len() - b.len()..]
                .iter()
                .zip(&b)
                .all(|(x, y)| x.eq_ignore_ascii_case(y))
    }

    fn label_list(&self) -> Vec<&[u8]> {
        self.labels().collect()
    }

    /// The name relative to `origin` in presentation form (`@` for the
    /// origin itself), or absolute when it is not below `origin`.
    pub fn relative_to(&self, origin: &Name) -> String {
        if !self.is_at_or_below(origin) {
            return self.to_string();
        }
        let keep = self.label_count() - origin.label_count();
        if keep == 0 {
            return "@".into();
        }
        let mut out = String::new();
        for (n, label) in self.labels().take(keep).enumerate() {
            if n > 0 {
                out.push('.');
            }
            write_label(&mut out, label);
        }
        out
    }
}

/// Whether presentation text names an absolute name: it ends with a dot
/// that is not escaped (or is the root, `.`).
pub fn is_absolute(text: &[u8]) -> bool {
    let mut i = 0;
    let mut last_plain_dot = false;
    while i < text.len() {
        if text[i] == b'\\' {
            i += unescape(&text[i..]).map_or(text.len(), |(_, used)| used);
            last_plain_dot = false;
        } else {
            last_plain_dot = text[i] == b'.';
            i += 1;
        }
    }
    last_plain_dot
}

/// The labels of a wire-form name.
pub struct Labels<'n> {
    wire: &'n [u8],
}

impl<'n> Iterator for Labels<'n> {
    type Item = &'n [u8];
    fn next(&mut self) -> Option<&'n [u8]> {
        let len = usize::from(*self.wire.first()?);
        if len == 0 {
            return None;
        }
        let label = self.wire.get(1..1 + len)?;
        self.wire = &self.wire[1 + len..];
        Some(label)
    }
}

fn push_label(wire: &mut Vec<u8>, label: &[u8]) -> Result<(), String> {
    if label.is_empty() {
        return Err("an empty label".into());
    }
    if label.len() > MAX_LABEL {
        return Err(format!(
            "a label of {} octets (at most {MAX_LABEL})",
            label.len()
        ));
    }
    wire.push(label.len() as u8);
    wire.extend_from_slice(label);
    Ok(())
}

fn check_length(wire: &[u8]) -> Result<(), String> {
    if wire.len() > MAX_NAME {
        return Err(format!(
            "a name of {} octets in wire form (at most {MAX_NAME})",
            wire.len()
        ));
    }
    Ok(())
}

/// Decodes the escape that starts `text` (which begins with `\`): `\DDD`
/// is the octet DDD, `\X` is X. Returns the octet and the bytes used.
pub fn unescape(text: &[u8]) -> Result<(u8, usize), String> {
    match text.get(1) {
        None => Err("a `\\` at the end".into()),
        Some(d) if d.is_ascii_digit() => {
            let digits = text.get(1..4).filter(|d| d.iter().all(u8::is_ascii_digit));
            let Some(digits) = digits else {
                return Err("`\\DDD` needs three decimal digits".into());
            };
            let value = digits
                .iter()
                .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
            u8::try_from(value)
                .map(|octet| (octet, 4))
                .map_err(|_| format!("`\\{value}` is more than 255"))
        }
        Some(&c) => Ok((c, 2)),
    }
}

/// Appends one label in presentation form: printable ASCII as itself, the
/// specials of master files escaped with `\`, every other octet as `\DDD`.
fn write_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' | b'"' | b';' | b'(' | b')' | b'@' | b'$' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
}

/// Presentation form, absolute (with the final dot), ASCII only.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() == 1 {
            return f.write_str(".");
        }
        let mut out = String::with_capacity(self.0.len() + 8);
        for label in self.labels() {
            write_label(&mut out, label);
            out.push('.');
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::parse(b"example.test.", &Name::root()).unwrap()
    }

    fn parse(text: &str) -> Result<Name, String> {
        Name::parse(text.as_bytes(), &origin())
    }

    #[test]
    fn any_octet_is_legal_in_a_label() {
        for text in [
            "under_score",
            "-lead",
            "\\233x",
            "a\\032b",
            "\\000",
            "a\\.b",
            "_dmarc",
        ] {
            let name = parse(text).unwrap();
            assert_eq!(parse(&name.to_string()).unwrap(), name, "{text}");
        }
        let name = parse("a\\.b\\032c").unwrap();
        assert_eq!(name.labels().next().unwrap(), b"a.b c");
        assert_eq!(name.to_string(), "a\\.b\\032c.example.test.");
    }

    #[test]
    fn relative_absolute_and_at() {
        assert_eq!(parse("www").unwrap().to_string(), "www.example.test.");
        assert_eq!(parse("www.other.").unwrap().to_string(), "www.other.");
        assert_eq!(parse("@").unwrap(), origin());
        assert_eq!(parse(".").unwrap(), Name::root());
        assert_eq!(parse("www").unwrap().relative_to(&origin()), "www");
        assert_eq!(origin().relative_to(&origin()), "@");
    }

    #[test]
    fn lengths_and_bad_escapes_are_refused() {
        assert!(parse(&"a".repeat(64)).unwrap_err().contains("64 octets"));
        assert!(parse(&"a".repeat(63)).is_ok());
        let long = vec!["abcdefghi"; 25].join(".");
        assert!(parse(&long).unwrap_err().contains("wire form"));
        assert!(parse("a..b").is_err());
        assert!(parse("\\256").unwrap_err().contains("more than 255"));
        assert!(parse("\\12").is_err());
    }

    #[test]
    fn absolute_text_ends_with_a_plain_dot() {
        assert!(is_absolute(b"a.b."));
        assert!(is_absolute(b"."));
        assert!(is_absolute(b"a\\\\."));
        assert!(!is_absolute(b"a\\."));
        assert!(!is_absolute(b"a.b"));
        assert!(!is_absolute(b"a\\046"));
    }

    #[test]
    fn wire_prefix_reads_one_name() {
        let name = parse("www").unwrap();
        let mut wire = name.wire().to_vec();
        wire.extend_from_slice(&[1, 2]);
        assert_eq!(
            Name::from_wire_prefix(&wire),
            Some((name.clone(), name.wire().len()))
        );
        assert_eq!(Name::from_wire_prefix(&[3, b'a']), None);
    }
}
