//! The one place records cross between the zone-file format (crate
//! `zonefile`: owner, type and rdata as octets) and hickory's `Record`,
//! which the rest of dnsd serves.
//!
//! dnsd keeps typed rdata only where its own logic reads fields — A/AAAA
//! (rotation, services), NS, CNAME, PTR, MX and SRV (targets, glue), SOA
//! (serials, negative TTLs) — and only when hickory encodes it back to
//! exactly the octets of the file. Everything else is carried as the
//! octets themselves (`RData::Unknown` with the record's real type), so no
//! decoder can change data it does not understand: hickory's, for
//! instance, turns `\DDD` escapes into UTF-8 and rewrites CAA values.

use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};

/// Types whose rdata dnsd reads field by field.
fn kept_typed(rtype: RecordType) -> bool {
    use RecordType::*;
    matches!(rtype, A | AAAA | NS | CNAME | PTR | MX | SRV | SOA)
}

/// A hickory name from a zone-file name: the same labels, octet for octet.
pub fn name(n: &zonefile::Name) -> Name {
    // Labels and length were checked when the name was read; an error
    // here would be hickory refusing what the protocol allows.
    Name::from_labels(n.labels()).unwrap_or_else(|_| Name::root())
}

/// A zone-file name from a hickory name.
pub fn zone_name(n: &Name) -> zonefile::Name {
    zonefile::Name::from_labels(n.iter()).unwrap_or_else(|_| zonefile::Name::root())
}

/// `rtype` rdata from its wire octets, typed where dnsd reads it.
pub fn rdata(rtype: RecordType, wire: &[u8]) -> RData {
    // Addresses, most of a large zone, cannot fail to round-trip: no
    // decoder, no re-encoding to compare.
    if let (RecordType::A, Ok(v4)) = (rtype, <[u8; 4]>::try_from(wire)) {
        return RData::A(std::net::Ipv4Addr::from(v4).into());
    }
    if let (RecordType::AAAA, Ok(v6)) = (rtype, <[u8; 16]>::try_from(wire)) {
        return RData::AAAA(std::net::Ipv6Addr::from(v6).into());
    }
    if kept_typed(rtype) {
        let mut decoder = BinDecoder::new(wire);
        if let Ok(Some(len)) = u16::try_from(wire.len()).map(|l| Some(Restrict::new(l)))
            && let Ok(data) = RData::read(&mut decoder, rtype, len)
            && decoder.is_empty()
            && rdata_wire(&data).as_deref() == Some(wire)
        {
            return data;
        }
    }
    RData::Unknown {
        code: rtype,
        rdata: opaque(wire),
    }
}

/// Octets as hickory's generic rdata. Not `NULL::with`, which asserts that
/// there are some: empty rdata (`TYPE65281 \# 0`) is legal (RFC 3597 §5).
fn opaque(wire: &[u8]) -> NULL {
    let mut data = NULL::new();
    data.anything = wire.to_vec();
    data
}

/// The uncompressed wire octets of rdata; `None` if hickory cannot encode
/// it (an empty update placeholder).
pub fn rdata_wire(data: &RData) -> Option<Vec<u8>> {
    if let RData::Unknown { rdata, .. } = data {
        return Some(rdata.anything.clone());
    }
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    data.emit(&mut encoder).ok()?;
    Some(out)
}

/// A served record from a zone-file record.
pub fn to_hickory(r: &zonefile::Record) -> Record {
    let rtype = RecordType::from(r.rtype);
    let mut record = Record::from_rdata(name(&r.owner), r.ttl, rdata(rtype, &r.rdata));
    record.dns_class = DNSClass::from(r.class);
    record
}

/// A zone-file record from a served one (to write or show it); `None` for
/// rdata that cannot be encoded.
pub fn from_hickory(r: &Record) -> Option<zonefile::Record> {
    Some(zonefile::Record {
        owner: zone_name(&r.name),
        class: u16::from(r.dns_class),
        ttl: r.ttl,
        rtype: u16::from(r.record_type()),
        rdata: rdata_wire(&r.data)?,
    })
}

/// The same record in the form dnsd keeps: what a record decoded by
/// hickory from a message (an update) must be turned into before it is
/// compared with zone data.
pub fn canonical(r: &Record) -> Record {
    // An empty rdata placeholder (class ANY/NONE in RFC 2136) stays one.
    if matches!(r.data, RData::Update0(_)) {
        return r.clone();
    }
    match from_hickory(r) {
        Some(z) => {
            let mut out = to_hickory(&z);
            out.dns_class = r.dns_class;
            out
        }
        None => r.clone(),
    }
}

/// Rdata in master-file syntax.
pub fn rdata_text(rtype: RecordType, data: &RData) -> String {
    match rdata_wire(data) {
        Some(wire) => zonefile::format_rdata(u16::from(rtype), &wire),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        let origin = Name::from_ascii("example.test.").unwrap();
        crate::zone::parse_records(text, &origin).unwrap().remove(0)
    }

    #[test]
    fn the_types_dnsd_reads_are_typed_and_the_rest_kept_as_octets() {
        assert!(matches!(record("a 60 IN A 198.18.0.1").data, RData::A(_)));
        assert!(matches!(record("a 60 IN MX 10 mail").data, RData::MX(_)));
        assert!(matches!(
            record("@ 60 IN SOA ns h 1 2 3 4 5").data,
            RData::SOA(_)
        ));
        let txt = record("t 60 IN TXT \"\\065\\066C\\255\"");
        assert_eq!(txt.record_type(), RecordType::TXT);
        assert_eq!(rdata_wire(&txt.data).unwrap(), b"\x04ABC\xff");
        let caa = record("c 60 IN CAA 0 issue \"Ca.Test; x=1\"");
        assert_eq!(
            rdata_text(RecordType::CAA, &caa.data),
            "0 \"issue\" \"Ca.Test; x=1\""
        );
    }

    #[test]
    fn odd_labels_survive_the_crossing() {
        let r = record("under_score.\\233\\000x 60 IN A 198.18.0.1");
        let z = from_hickory(&r).unwrap();
        assert_eq!(z.owner.to_string(), "under_score.\\233\\000x.example.test.");
    }

    #[test]
    fn an_updates_typed_txt_becomes_the_zones_octets() {
        let typed = Record::from_rdata(
            Name::from_ascii("t.example.test.").unwrap(),
            60,
            RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["ab".into()])),
        );
        let zone = record("t 60 IN TXT ab");
        assert_eq!(canonical(&typed), zone);
    }
}
