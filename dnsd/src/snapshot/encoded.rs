//! An RRset's records as the snapshot keeps them: the wire form of each
//! one's RDATA, length first, all in one allocation. The owner is the
//! node's and type, class and TTL are the RRset's, so none is repeated per
//! record; the UDP fast path copies these octets into a response as they
//! are, and the general path decodes them into hickory records only for
//! the records it sends.

use crate::answer::rotate::Window;

/// RDLENGTH and RDATA of each record of an RRset, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rdatas {
    bytes: Box<[u8]>,
    len: u32,
}

impl Rdatas {
    /// The records whose rdata `rdatas` gives; `None` if one is longer
    /// than RDLENGTH can say.
    pub fn new<'a>(rdatas: impl Iterator<Item = &'a [u8]> + Clone) -> Option<Self> {
        // Sized exactly up front: the one allocation is the one kept.
        let size = rdatas.clone().map(|r| 2 + r.len()).sum();
        let mut bytes = Vec::with_capacity(size);
        let mut len = 0u32;
        for rdata in rdatas {
            bytes.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
            bytes.extend_from_slice(rdata);
            len = len.checked_add(1)?;
        }
        Some(Self {
            bytes: bytes.into_boxed_slice(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each record's RDLENGTH and RDATA, as they go on the wire.
    pub fn wire(&self) -> Wire<'_> {
        Wire { rest: &self.bytes }
    }

    /// Each record's RDATA.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.wire().map(|w| &w[2..])
    }

    /// The records `w` selects, in order, as [`Rdatas::wire`] gives them:
    /// a walk from the first record, which costs what copying them does.
    pub fn window(&self, w: Window) -> impl Iterator<Item = &[u8]> + Clone {
        self.wire().cycle().skip(w.start).take(w.take)
    }

    /// The octets of every record's RDLENGTH and RDATA together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Iterator over the records of [`Rdatas`], RDLENGTH included.
#[derive(Debug, Clone)]
pub struct Wire<'r> {
    rest: &'r [u8],
}

impl<'r> Iterator for Wire<'r> {
    type Item = &'r [u8];

    fn next(&mut self) -> Option<&'r [u8]> {
        let len = self.rest.get(..2)?;
        let end = 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        // `new` wrote every length; a shorter rest cannot happen.
        let (record, rest) = self.rest.split_at_checked(end)?;
        self.rest = rest;
        Some(record)
    }
}

/// Uncompressed wire length of a name, root label included.
pub fn wire_len(name: &hickory_proto::rr::Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_given_and_windows_wrap() {
        let given: [&[u8]; 3] = [b"\x01\x02\x03\x04", b"", b"\x05"];
        let r = Rdatas::new(given.into_iter()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.iter().collect::<Vec<_>>(), given);
        assert_eq!(r.byte_len(), 2 * 3 + 5);
        let w: Vec<&[u8]> = r.window(Window { start: 2, take: 3 }).collect();
        assert_eq!(
            w,
            [
                &b"\x00\x01\x05"[..],
                b"\x00\x04\x01\x02\x03\x04",
                b"\x00\x00"
            ]
        );
        assert_eq!(
            Rdatas::default()
                .window(Window { start: 0, take: 2 })
                .count(),
            0
        );
    }

    #[test]
    fn rdata_too_long_for_its_length_field_is_refused() {
        let long = vec![0u8; 65536];
        assert!(Rdatas::new(std::iter::once(&long[..])).is_none());
    }
}
