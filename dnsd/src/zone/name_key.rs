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

/// The keys of many names (the owners of a zone's records, say) in one
/// allocation, each found by its index.
#[derive(Debug, Default)]
pub struct Keys {
    bytes: Vec<u8>,
    /// Where each key is in `bytes`.
    spans: Vec<(u32, u8)>,
}

impl Keys {
    /// Room for `names` keys of `bytes` octets in all.
    pub fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(names),
        }
    }

    /// The octets of every key together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Adds `key`; past 4 GiB of keys, the root's, which no zone's name
    /// has, so that the record is refused as outside its zone rather than
    /// mistaken for another.
    pub fn push(&mut self, key: &[u8]) {
        let span = u32::try_from(self.bytes.len())
            .ok()
            .zip(u8::try_from(key.len()).ok());
        match span {
            Some(span) => {
                self.bytes.extend_from_slice(key);
                self.spans.push(span);
            }
            None => self.spans.push((0, 0)),
        }
    }

    /// Adds the key of the name whose wire form is `wire` (the root's for
    /// one that is malformed, which the zone reader never gives).
    pub fn push_wire(&mut self, wire: &[u8]) {
        match NameKey::from_wire(wire) {
            Some(key) => self.push(key.as_bytes()),
            None => self.push(b""),
        }
    }

    /// The key of name `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let (at, len) = self.spans.get(i).copied().unwrap_or((0, 0));
        let at = at as usize;
        self.bytes
            .get(at..at + usize::from(len))
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The indexes of the names grouped by name: the names in the order
    /// of their first index, the indexes of a name in order. Names are
    /// brought together by sorting on a hash of the key (then the key, for
    /// two keys with one hash), which compares as one integer where the
    /// keys would compare as bytes all over the arena; the groups then go
    /// back to the order they came in, so that whoever walks records in
    /// this order reads memory in about the order it was written.
    pub fn grouped(&self) -> Vec<u32> {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::FixedState::default();
        let mut order: Vec<(u64, u32)> = (0..self.len())
            .map(|i| (hasher.hash_one(self.get(i)), i as u32))
            .collect();
        order.sort_unstable_by(|&(ha, a), &(hb, b)| {
            ha.cmp(&hb)
                .then_with(|| self.get(a as usize).cmp(self.get(b as usize)))
                .then(a.cmp(&b))
        });
        // Each name as (its first index, where its run starts, its length).
        let mut runs: Vec<(u32, u32, u32)> = order
            .chunk_by(|&(ha, a), &(hb, b)| ha == hb && self.get(a as usize) == self.get(b as usize))
            .scan(0u32, |at, run| {
                let start = *at;
                *at += run.len() as u32;
                Some((run[0].1, start, run.len() as u32))
            })
            .collect();
        runs.sort_unstable();
        let mut grouped = Vec::with_capacity(order.len());
        for (_, start, len) in runs {
            let run = &order[start as usize..(start + len) as usize];
            grouped.extend(run.iter().map(|&(_, i)| i));
        }
        grouped
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

/// Where the name that starts at `start` in `message` ends (after its
/// root label), if it is written out in plain labels — no compression, as
/// a question's name is — and fits the protocol's 255 octets.
pub fn plain_name_end(message: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    loop {
        let len = usize::from(*message.get(at)?);
        if len == 0 {
            return (at + 1 - start <= 255).then_some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
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
