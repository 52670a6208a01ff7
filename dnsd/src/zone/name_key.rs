//! The lookup key of a domain name: its lower-cased wire form without the
//! root label, built on the stack for every query.
//!
//! Wire form puts the length before each label, so every ancestor of a name
//! is a suffix of its key that starts at a label boundary: walking up to the
//! closest encloser is slicing, never allocating.

use hickory_proto::rr::Name;

/// Longest wire-format name (RFC 1035 §2.3.4), root label included.
const MAX_WIRE: usize = 255;

/// A name's key, stored inline.
#[derive(Clone, Copy)]
pub struct NameKey {
    buf: [u8; MAX_WIRE],
    len: usize,
}

impl NameKey {
    /// The key of `name`, lower-cased. `None` only for a name longer than the
    /// protocol allows, which the wire decoder already refuses.
    pub fn new(name: &Name) -> Option<Self> {
        let mut key = Self {
            buf: [0; MAX_WIRE],
            len: 0,
        };
        for label in name.iter() {
            let end = key.len + 1 + label.len();
            // Keep one byte for the root label the wire form would add.
            if label.len() > 63 || end >= MAX_WIRE {
                return None;
            }
            key.buf[key.len] = label.len() as u8;
            for (dst, src) in key.buf[key.len + 1..end].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            key.len = end;
        }
        Some(key)
    }

    /// The key of a name in uncompressed wire form (labels, then the root
    /// label), as it appears in a query. `None` for anything else.
    pub fn from_wire(wire: &[u8]) -> Option<Self> {
        let (last, labels) = wire.split_last()?;
        if *last != 0 || labels.len() >= MAX_WIRE {
            return None;
        }
        let mut key = Self {
            buf: [0; MAX_WIRE],
            len: labels.len(),
        };
        let mut at = 0;
        while at < labels.len() {
            let len = usize::from(labels[at]);
            if len == 0 || len > 63 || at + 1 + len > labels.len() {
                return None;
            }
            key.buf[at] = labels[at];
            for (dst, src) in key.buf[at + 1..=at + len].iter_mut().zip(&labels[at + 1..]) {
                *dst = src.to_ascii_lowercase();
            }
            at += 1 + len;
        }
        Some(key)
    }

    /// The key of `*.<parent>`, the wildcard that could cover a child of
    /// `parent`.
    pub fn wildcard_of(parent: &[u8]) -> Option<Self> {
        let len = parent.len() + 2;
        if len >= MAX_WIRE {
            return None;
        }
        let mut key = Self {
            buf: [0; MAX_WIRE],
            len,
        };
        key.buf[0] = 1;
        key.buf[1] = b'*';
        key.buf[2..len].copy_from_slice(parent);
        Some(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The (lower-case) name whose key is `key`.
pub fn to_name(key: &[u8]) -> Option<Name> {
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut k = key;
    while let Some(&len) = k.first() {
        labels.push(k.get(1..=usize::from(len))?);
        k = parent(k)?;
    }
    Name::from_labels(labels).ok()
}

/// How many labels the name with key `key` has (the root none).
pub fn labels(key: &[u8]) -> usize {
    std::iter::successors(Some(key), |k| parent(k))
        .take_while(|k| !k.is_empty())
        .count()
}

/// The key of the parent name, or `None` for the root.
pub fn parent(key: &[u8]) -> Option<&[u8]> {
    let first = *key.first()? as usize;
    key.get(1 + first..)
}

/// Whether `key` is `ancestor` or lies below it.
pub fn is_at_or_below(key: &[u8], ancestor: &[u8]) -> bool {
    let mut k = key;
    loop {
        if k == ancestor {
            return true;
        }
        match parent(k) {
            Some(p) => k = p,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn keys_are_lower_case_wire_form_and_parents_are_suffixes() {
        let k = NameKey::new(&Name::from_str("WwW.Example.TEST.").unwrap()).unwrap();
        assert_eq!(k.as_bytes(), b"\x03www\x07example\x04test");
        let p = parent(k.as_bytes()).unwrap();
        assert_eq!(p, b"\x07example\x04test");
        assert_eq!(parent(parent(p).unwrap()), Some(&b""[..]));
        assert_eq!(parent(b""), None);
        assert!(is_at_or_below(k.as_bytes(), p));
        assert!(!is_at_or_below(p, k.as_bytes()));
        let wire = NameKey::from_wire(b"\x03WwW\x07example\x04test\x00").unwrap();
        assert_eq!(wire.as_bytes(), k.as_bytes());
        assert!(NameKey::from_wire(b"\x03www\x07exam").is_none());
        assert!(NameKey::from_wire(b"\x05www\x00").is_none());
        assert_eq!(
            to_name(k.as_bytes()).unwrap().to_string(),
            "www.example.test."
        );
        assert!(to_name(b"").unwrap().is_root());
        assert_eq!((labels(k.as_bytes()), labels(p), labels(b"")), (3, 2, 0));
        let w = NameKey::wildcard_of(p).unwrap();
        assert_eq!(w.as_bytes(), b"\x01*\x07example\x04test");
    }
}
