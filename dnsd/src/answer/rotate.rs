//! Round robin: which records of an RRset an answer carries, and in what
//! order.
//!
//! Like BIND's `cyclic` order, an address RRset of n records is sent starting
//! at record `rotation mod n` and wrapping around, so successive answers lead
//! with each address in turn and clients that take the first address spread
//! over all of them. An optional cap keeps only the first few of that order
//! (Route 53's multivalue answers carry at most 8): over successive answers
//! every address still gets its turn.

use hickory_proto::rr::{Record, RecordType};

/// A window over an RRset: `take` records starting at `start`, wrapping.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: usize,
    pub take: usize,
}

/// The window of an RRset of `rtype` with `len` records for the answer
/// numbered `rotation`, with at most `cap` addresses (0 = no cap).
pub fn window(rtype: RecordType, len: usize, rotation: u64, cap: usize) -> Window {
    if !matches!(rtype, RecordType::A | RecordType::AAAA) || len <= 1 {
        return Window {
            start: 0,
            take: len,
        };
    }
    let take = if cap == 0 { len } else { len.min(cap) };
    Window {
        start: (rotation % len as u64) as usize,
        take,
    }
}

/// The records of `records` that `w` selects, in order.
pub fn iter(records: &[Record], w: Window) -> impl Iterator<Item = &Record> + Clone {
    let len = records.len();
    (0..w.take).filter_map(move |i| records.get((w.start + i) % len.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RData, rdata::A};

    fn addresses(n: u8) -> Vec<Record> {
        (1..=n)
            .map(|i| Record::from_rdata(Name::root(), 60, RData::A(A::new(198, 18, 0, i))))
            .collect()
    }

    fn order(records: &[Record], w: Window) -> Vec<String> {
        iter(records, w).map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn successive_answers_lead_with_each_address_in_turn() {
        let rs = addresses(3);
        let firsts: Vec<_> = (0..6)
            .map(|n| order(&rs, window(RecordType::A, 3, n, 0))[0].clone())
            .collect();
        assert_eq!(
            firsts,
            [
                "198.18.0.1",
                "198.18.0.2",
                "198.18.0.3",
                "198.18.0.1",
                "198.18.0.2",
                "198.18.0.3"
            ]
        );
        assert_eq!(
            order(&rs, window(RecordType::A, 3, 2, 0)),
            ["198.18.0.3", "198.18.0.1", "198.18.0.2"]
        );
    }

    #[test]
    fn a_cap_keeps_the_first_of_the_rotated_order() {
        let rs = addresses(10);
        let w = window(RecordType::A, 10, 7, 8);
        let got = order(&rs, w);
        assert_eq!(got.len(), 8);
        assert_eq!(got[0], "198.18.0.8");
        assert_eq!(got[3], "198.18.0.1");
    }

    #[test]
    fn other_types_keep_their_order() {
        let w = window(RecordType::MX, 3, 5, 1);
        assert_eq!((w.start, w.take), (0, 3));
    }
}
