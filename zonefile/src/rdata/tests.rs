//! Every type's syntax read and written back; exact octets where the RFCs
//! give them.

use super::*;
use crate::types::type_code;

fn origin() -> Name {
    Name::parse(b"example.test.", &Name::root()).unwrap()
}

fn wire(rtype: &str, text: &str) -> Result<Vec<u8>, String> {
    crate::parse_rdata(type_code(rtype.as_bytes()).unwrap(), text, &origin())
}

fn hex(rtype: &str, text: &str) -> String {
    data_encoding::HEXLOWER.encode(&wire(rtype, text).unwrap())
}

/// Samples of every type with a syntax, as zone files write them.
const SAMPLES: &[(&str, &str)] = &[
    ("A", "198.18.0.1"),
    ("NS", "ns1"),
    ("MD", "md.example.test."),
    ("MF", "mf"),
    ("CNAME", "www"),
    ("SOA", "ns1 hostmaster 2026120601 1h 15m 1w 300"),
    ("MB", "mb"),
    ("MG", "mg"),
    ("MR", "mr"),
    ("WKS", "198.18.0.1 tcp 22 25 http 443"),
    ("PTR", "host.example.test."),
    ("HINFO", "\"INTEL-386\" Unix"),
    ("MINFO", "rmail emails"),
    ("MX", "10 mail"),
    ("TXT", "\"v=spf1 -all\" word \"\" \"\\065\\066C\\255\""),
    ("RP", "mbox.example.test. txt"),
    ("AFSDB", "1 afs"),
    ("X25", "311061700956"),
    ("ISDN", "150862028003217 004"),
    ("ISDN", "150862028003217"),
    ("RT", "10 relay"),
    ("NSAP", "0x47.0005.80.005a00.0000.0001.e133.ffffff000162.00"),
    ("NSAP-PTR", "nsap.example.test."),
    (
        "SIG",
        "A 8 3 300 20261231000000 20261201000000 12345 example.test. AQID",
    ),
    ("KEY", "256 3 8 AwEAAQ=="),
    ("PX", "10 map822 mapx400"),
    ("AAAA", "2001:2::1"),
    (
        "LOC",
        "52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m",
    ),
    ("LOC", "42 21 54 N 71 06 18 W -24m 30m"),
    ("LOC", "37 S 144 58 E 10m"),
    ("NXT", "next.example.test. A MX NXT"),
    ("SRV", "0 5 5060 sip"),
    (
        "NAPTR",
        "100 10 \"u\" \"E2U+sip\" \"!^.*$!sip:info@example.test!\" .",
    ),
    ("KX", "10 kx"),
    ("CERT", "PGP 0 0 AQID"),
    ("CERT", "1 12345 RSASHA256 AQIDBA=="),
    ("DNAME", "target.example.test."),
    ("APL", "1:198.18.0.0/15 !2:2001:2::/48 1:0.0.0.0/0"),
    ("DS", "60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118"),
    ("DS", "12345 RSASHA256 2 2bb183af5f225881 79a53b0a98631fad"),
    ("SSHFP", "2 1 123456789abcdef67890123456789abcdef67890"),
    ("IPSECKEY", "10 0 2 . AQID"),
    ("IPSECKEY", "10 1 2 198.18.0.1 AQID"),
    ("IPSECKEY", "10 2 2 2001:2::1 AQID"),
    ("IPSECKEY", "10 3 2 gw.example.test. AQID"),
    ("IPSECKEY", "10 3 0 gw"),
    (
        "RRSIG",
        "SOA 13 2 3600 20261231235959 1764547200 2371 example.test. AQIDBAUG",
    ),
    (
        "NSEC",
        "next.example.test. A NS SOA RRSIG NSEC DNSKEY TYPE65280",
    ),
    ("NSEC", "next.example.test."),
    (
        "DNSKEY",
        "257 3 ED25519 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=",
    ),
    ("DHCID", "AAIBY2/AuCccgoJbsaxcQc9TUapptP69lOjxfNuVAA2kjEA="),
    (
        "NSEC3",
        "1 1 12 aabbccdd 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR A RRSIG",
    ),
    ("NSEC3", "1 0 0 - 2t7b4g4vsa5smi47k61mv5bv1a22bojr"),
    ("NSEC3PARAM", "1 0 0 -"),
    ("NSEC3PARAM", "1 0 10 D399EAAB"),
    (
        "TLSA",
        "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    ("SMIMEA", "3 0 0 30820123"),
    ("CDS", "0 0 0 00"),
    ("CDNSKEY", "0 3 0 AA=="),
    (
        "OPENPGPKEY",
        "mQINBFit2jsBEADrbl5vjVxYeAE0g0IDYCBpHirv1Sjlqxx5gjtPhb2YhvyDMXjq",
    ),
    ("CSYNC", "66 3 A NS AAAA"),
    (
        "ZONEMD",
        "2026120601 1 1 AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF001122334455",
    ),
    (
        "SVCB",
        "1 . alpn=h2,h3 port=8443 ipv4hint=198.18.0.1,198.18.0.2",
    ),
    ("SVCB", "0 svc.example.test."),
    (
        "HTTPS",
        "1 . mandatory=alpn,ipv4hint alpn=\"h2,h3\" no-default-alpn ipv4hint=198.18.0.1 ech=AQID ipv6hint=2001:2::1 key65000=\"x y\"",
    ),
    (
        "HTTPS",
        "16 foo.example.test. alpn=\"f\\\\\\\\oo\\\\,bar,h2\"",
    ),
    ("SPF", "\"v=spf1 -all\""),
    ("NID", "10 0014:4fff:ff20:ee64"),
    ("L32", "10 198.18.0.1"),
    ("L64", "10 2001:0DB8:1140:1000"),
    ("LP", "10 l64-subnet1.example.test."),
    ("EUI48", "00-00-5e-00-53-2a"),
    ("EUI64", "00-00-5e-ef-10-00-00-2a"),
    ("URI", "10 1 \"ftp://ftp1.example.test/public\""),
    ("CAA", "0 issue \"ca.example.test; account=230123\""),
    ("CAA", "128 iodef \"mailto:security@example.test\""),
    ("CAA", "0 issue \"\""),
    ("AVC", "\"app-name:WOLFGANG|app-class:OAM\""),
    ("DLV", "60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118"),
];

#[test]
fn every_sample_reads_and_writes_back_to_the_same_octets() {
    for (rtype, text) in SAMPLES {
        let code = type_code(rtype.as_bytes()).unwrap();
        let data = wire(rtype, text).unwrap_or_else(|e| panic!("{rtype} {text}: {e}"));
        let written = format(code, &data);
        assert!(
            !written.starts_with("\\#"),
            "{rtype} {text} written generically: {written}"
        );
        let back = crate::parse_rdata(code, &written, &Name::root())
            .unwrap_or_else(|e| panic!("{rtype} {written}: {e}"));
        assert_eq!(back, data, "{rtype} {text} -> {written}");
    }
}

#[test]
fn the_generic_form_reads_for_any_type_and_must_fit_known_ones() {
    assert_eq!(hex("TYPE65280", "\\# 4 deadbeef"), "deadbeef");
    assert_eq!(hex("TYPE1", "\\# 4 c0000201"), "c0000201");
    assert_eq!(hex("A", "\\# 4 C6 12 00 01"), "c6120001");
    assert_eq!(hex("TYPE65280", "\\# 0"), "");
    assert_eq!(hex("NULL", "\\# 2 0102"), "0102");
    assert!(
        wire("A", "\\# 3 c00002")
            .unwrap_err()
            .contains("not valid rdata for type A")
    );
    assert!(
        wire("TYPE65280", "\\# 3 deadbeef")
            .unwrap_err()
            .contains("length says 3")
    );
    assert!(wire("TYPE65280", "\\# 4 xyzw").is_err());
    assert!(wire("NULL", "something").unwrap_err().contains("RFC 3597"));
    assert_eq!(format(65280, &[0xde, 0xad]), "\\# 2 DEAD");
    assert_eq!(format(65280, &[]), "\\# 0");
}

#[test]
fn exact_octets() {
    // RFC 1035 §5.1: \DDD is one octet.
    assert_eq!(hex("TXT", "\"\\065\\066C\""), "03414243");
    assert_eq!(hex("TXT", "a \"b c\""), "0161036220 63".replace(' ', ""));
    assert_eq!(
        hex("MX", "10 mail"),
        "000a046d61696c076578616d706c650474657374 00".replace(' ', "")
    );
    // 42°21'54" N = 2^31 + 152,514,000 ms; -24 m = 10,000,000 - 2,400 cm.
    assert_eq!(
        hex("LOC", "42 21 54 N 71 06 18 W -24m 30m"),
        "0033161389172dd070be15f000988d20"
    );
    // RFC 3123: trailing zero octets of the address are left out.
    assert_eq!(hex("APL", "1:198.18.0.0/15"), "00010f02c612");
    assert_eq!(hex("APL", "!1:0.0.0.0/0"), "00010080");
    assert_eq!(hex("EUI48", "00-00-5e-00-53-2a"), "00005e00532a");
    assert_eq!(
        hex("CAA", "0 issue \"ca.test\""),
        "0005697373756563612e74657374"
    );
    assert_eq!(hex("NSEC3PARAM", "1 0 0 -"), "0100000000");
    assert_eq!(
        hex("HTTPS", "1 . alpn=h2 port=443"),
        "000100000100030268320003000201bb"
    );
    // Parameters are stored sorted by key, whatever the written order.
    assert_eq!(
        hex("HTTPS", "1 . port=443 alpn=h2"),
        "000100000100030268320003000201bb"
    );
    assert_eq!(
        hex("WKS", "198.18.0.1 6 0 1 9"),
        "c6120001 06 c040".replace(' ', "")
    );
}

#[test]
fn invalid_rdata_is_refused_with_the_field() {
    for (rtype, text, says) in [
        ("A", "198.18.0.1 198.18.0.2", "unexpected `198.18.0.2`"),
        ("A", "198.18.0.300", "not an IPv4 address"),
        ("A", "", "missing an IPv4 address"),
        (
            "TXT",
            &format!("\"{}\"", "x".repeat(300)),
            "at most 255 octets",
        ),
        ("TXT", "", "missing"),
        ("MX", "ten mail", "not a decimal number"),
        ("MX", "65536 mail", "more than 65535"),
        ("SOA", "ns1 hostmaster 1 2 3 4", "missing"),
        ("CAA", "0 is-sue \"x\"", "letters and digits"),
        ("DS", "1 8 2 xyz", "not valid"),
        ("LOC", "91 N 0 E 0m", "more than 90"),
        ("SVCB", "1 . alpn=h2 alpn=h3", "twice"),
        ("SVCB", "1 . bogus=1", "not a service parameter key"),
        ("HTTPS", "1 . key65535=x", "not a service parameter key"),
        ("EUI48", "00-00-5e-00-53", "6 hex pairs"),
        (
            "RRSIG",
            "A 8 2 300 20261341000000 1 1 . AA==",
            "not a valid date",
        ),
        ("NSEC", "next.example.test. BOGUS", "not a record type"),
    ] {
        let e = wire(rtype, text).expect_err(&format!("{rtype} {text} was accepted"));
        assert!(e.contains(says), "{rtype} {text}: {e}");
    }
}
