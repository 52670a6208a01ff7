//! DNAME records (RFC 6672): how they are read, stored and expanded.
//!
//! hickory-proto has no DNAME rdata. A DNAME record is kept as hickory's
//! generic rdata with the DNAME type: its target in uncompressed wire form,
//! which is how RFC 6672 §2.5 says it is sent, and how the zone-file
//! reader produces it.

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// DNAME rdata pointing at `target`, as the zone-file reader makes it.
#[cfg(test)]
pub fn rdata(target: &Name) -> Option<RData> {
    let wire = crate::zone::records::zone_name(target);
    Some(crate::zone::records::rdata(RecordType::DNAME, wire.wire()))
}

/// The target of a DNAME record; `None` for any other record.
pub fn target(record: &Record) -> Option<Name> {
    target_of(&record.data)
}

/// The target of DNAME rdata; `None` for any other rdata. Zone-file text
/// for a DNAME is `DNAME <target>`: hickory would print the generic rdata
/// as base64.
pub fn target_of(data: &RData) -> Option<Name> {
    match data {
        RData::Unknown {
            code: RecordType::DNAME,
            rdata,
        } => {
            let mut decoder = BinDecoder::new(&rdata.anything);
            Name::read(&mut decoder).ok()
        }
        _ => None,
    }
}

/// What a name below a DNAME owner becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum Substitution {
    /// The name with the owner's labels replaced by the target's.
    Name(Name),
    /// The result would exceed 255 octets: YXDOMAIN (RFC 6672 §2.2).
    TooLong,
}

/// Substitutes `target` for the last `owner_labels` labels of `name` (a
/// name strictly below the DNAME owner). The labels kept are `name`'s, in
/// the case they were asked in.
pub fn substitute(name: &Name, owner_labels: usize, target: &Name) -> Substitution {
    let keep = usize::from(name.num_labels()).saturating_sub(owner_labels);
    let prefix = match Name::from_labels(name.iter().take(keep)) {
        Ok(prefix) => prefix,
        Err(_) => return Substitution::TooLong,
    };
    match prefix.append_domain(target) {
        // hickory checks the length it can encode; check the wire length
        // the protocol allows ourselves.
        Ok(n) if wire_len(&n) <= 255 => Substitution::Name(n),
        _ => Substitution::TooLong,
    }
}

/// Uncompressed wire length of an absolute name, root label included.
fn wire_len(name: &Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn a_dname_record_holds_its_target_uncompressed_and_gives_it_back() {
        let data = rdata(&name("Target.example.test.")).unwrap();
        let r = Record::from_rdata(name("dn.example.test."), 300, data);
        assert_eq!(r.record_type(), RecordType::DNAME);
        let wire = crate::zone::records::rdata_wire(&r.data).unwrap();
        assert_eq!(wire, b"\x06Target\x07example\x04test\x00");
        assert_eq!(target(&r), Some(name("target.example.test.")));
        assert!(target(&r).unwrap().eq_case(&name("Target.example.test.")));
        let a = Record::from_rdata(
            name("a.test."),
            1,
            RData::A(std::net::Ipv4Addr::new(198, 18, 0, 1).into()),
        );
        assert_eq!(target(&a), None);
    }

    #[test]
    fn substitution_keeps_the_asked_labels_and_refuses_overlong_names() {
        let asked = name("WwW.a.Dn.example.test.");
        assert_eq!(
            substitute(&asked, 3, &name("target.test.")),
            Substitution::Name(name("WwW.a.target.test."))
        );
        let Substitution::Name(n) = substitute(&asked, 3, &name("target.test.")) else {
            unreachable!()
        };
        assert!(n.eq_case(&name("WwW.a.target.test.")));
        let label = "l".repeat(63);
        let long = name(&format!("{label}.{label}.{label}.test."));
        let asked = name(&format!("{label}.dn.example.test."));
        assert_eq!(substitute(&asked, 3, &long), Substitution::TooLong);
        let short = name("x.dn.example.test.");
        assert!(matches!(
            substitute(&short, 3, &long),
            Substitution::Name(_)
        ));
    }

    #[test]
    fn dname_records_are_read_with_their_target() {
        let origin = name("example.test.");
        let text = "dn 60 IN dname target\nx IN A 198.18.0.1\n";
        let records = crate::zone::parse_records(text, &origin).unwrap();
        assert_eq!(records[0].record_type(), RecordType::DNAME);
        assert_eq!(target(&records[0]), Some(name("target.example.test.")));
        assert_eq!(records[0].ttl, 60);
    }
}
