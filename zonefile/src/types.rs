//! Record type and class mnemonics (IANA's registry, as NSD 4.6 and Knot 3.2
//! write them), with the RFC 3597 forms `TYPE123` and `CLASS4` for all.

/// Every type with a mnemonic: the types NSD loads from master files, plus
/// the meta types, which have names but no data.
const TYPES: &[(u16, &str)] = &[
    (1, "A"),
    (2, "NS"),
    (3, "MD"),
    (4, "MF"),
    (5, "CNAME"),
    (6, "SOA"),
    (7, "MB"),
    (8, "MG"),
    (9, "MR"),
    (10, "NULL"),
    (11, "WKS"),
    (12, "PTR"),
    (13, "HINFO"),
    (14, "MINFO"),
    (15, "MX"),
    (16, "TXT"),
    (17, "RP"),
    (18, "AFSDB"),
    (19, "X25"),
    (20, "ISDN"),
    (21, "RT"),
    (22, "NSAP"),
    (23, "NSAP-PTR"),
    (24, "SIG"),
    (25, "KEY"),
    (26, "PX"),
    (27, "GPOS"),
    (28, "AAAA"),
    (29, "LOC"),
    (30, "NXT"),
    (33, "SRV"),
    (35, "NAPTR"),
    (36, "KX"),
    (37, "CERT"),
    (38, "A6"),
    (39, "DNAME"),
    (41, "OPT"),
    (42, "APL"),
    (43, "DS"),
    (44, "SSHFP"),
    (45, "IPSECKEY"),
    (46, "RRSIG"),
    (47, "NSEC"),
    (48, "DNSKEY"),
    (49, "DHCID"),
    (50, "NSEC3"),
    (51, "NSEC3PARAM"),
    (52, "TLSA"),
    (53, "SMIMEA"),
    (55, "HIP"),
    (59, "CDS"),
    (60, "CDNSKEY"),
    (61, "OPENPGPKEY"),
    (62, "CSYNC"),
    (63, "ZONEMD"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (99, "SPF"),
    (104, "NID"),
    (105, "L32"),
    (106, "L64"),
    (107, "LP"),
    (108, "EUI48"),
    (109, "EUI64"),
    (249, "TKEY"),
    (250, "TSIG"),
    (251, "IXFR"),
    (252, "AXFR"),
    (253, "MAILB"),
    (254, "MAILA"),
    (255, "ANY"),
    (256, "URI"),
    (257, "CAA"),
    (258, "AVC"),
    (32769, "DLV"),
];

/// Codes the servers built on this crate compare on the wire, by name.
pub mod codes {
    /// The Internet class.
    pub const IN: u16 = 1;
    pub const SOA: u16 = 6;
    /// EDNS's pseudo-record (RFC 6891).
    pub const OPT: u16 = 41;
    /// Transaction signatures (RFC 8945).
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

pub use codes::IN;

/// Whether `code` is a meta type or QTYPE (RFC 6895 §3.1): it names a
/// query or a transaction, never data in a zone.
pub fn is_meta(code: u16) -> bool {
    code == codes::OPT || (128..=255).contains(&code)
}

/// The mnemonic of a type, or `TYPE<code>`.
pub fn type_name(code: u16) -> String {
    TYPES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("TYPE{code}"), |(_, n)| (*n).to_string())
}

/// The code of a type mnemonic or `TYPE<code>`, without case.
pub fn type_code(text: &[u8]) -> Option<u16> {
    if let Some((code, _)) = TYPES
        .iter()
        .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(text))
    {
        return Some(*code);
    }
    numbered(text, b"TYPE")
}

/// The code of a class mnemonic or `CLASS<code>`, without case.
pub fn class_code(text: &[u8]) -> Option<u16> {
    const CLASSES: &[(u16, &str)] = &[(1, "IN"), (3, "CH"), (4, "HS"), (2, "CS")];
    if let Some((code, _)) = CLASSES
        .iter()
        .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(text))
    {
        return Some(*code);
    }
    numbered(text, b"CLASS")
}

/// `PREFIX<decimal>` as a 16-bit code.
fn numbered(text: &[u8], prefix: &[u8]) -> Option<u16> {
    let digits = text
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &text[prefix.len()..])?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics_and_numbers_both_read() {
        assert_eq!(type_code(b"aaaa"), Some(28));
        assert_eq!(type_code(b"TYPE65280"), Some(65280));
        assert_eq!(type_code(b"type1"), Some(1));
        assert_eq!(type_code(b"TYPE65536"), None);
        assert_eq!(type_code(b"TYPE"), None);
        assert_eq!(type_code(b"BOGUS"), None);
        assert_eq!(type_name(65280), "TYPE65280");
        assert_eq!(type_name(257), "CAA");
        assert_eq!(class_code(b"in"), Some(1));
        assert_eq!(class_code(b"CLASS255"), Some(255));
        assert!(is_meta(252) && is_meta(41) && !is_meta(257));
    }
}
