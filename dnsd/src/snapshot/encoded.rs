//! An RRset pre-encoded for the UDP fast path: each record's wire form
//! without its owner name, so that a response is assembled by copying.

use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

/// An RRset's records in wire form, each without its owner name: TYPE,
/// CLASS, TTL, RDLENGTH and uncompressed RDATA.
#[derive(Debug, Clone)]
pub struct Encoded {
    bytes: Box<[u8]>,
    /// Where each record starts in `bytes`, and where the last ends.
    starts: Box<[u32]>,
}

impl Encoded {
    /// Encodes `records`; `None` if one cannot be encoded (the general path
    /// then reports it).
    pub fn new(records: &[Record]) -> Option<Self> {
        let mut bytes = Vec::new();
        let mut starts = vec![0u32];
        for record in records {
            let mut buf = Vec::with_capacity(64);
            let mut encoder = BinEncoder::new(&mut buf);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            record.emit(&mut encoder).ok()?;
            let owner = wire_len(&record.name);
            bytes.extend_from_slice(buf.get(owner..)?);
            starts.push(u32::try_from(bytes.len()).ok()?);
        }
        Some(Self {
            bytes: bytes.into_boxed_slice(),
            starts: starts.into_boxed_slice(),
        })
    }

    pub fn record(&self, i: usize) -> &[u8] {
        let (start, end) = (self.starts[i] as usize, self.starts[i + 1] as usize);
        &self.bytes[start..end]
    }

    /// The octets of every record together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }
}

/// Uncompressed wire length of a name, root label included.
pub fn wire_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}
