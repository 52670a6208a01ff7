//! The kinds of fields rdata is made of, each read from tokens and written
//! back from wire form.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use data_encoding::{Encoding, HEXLOWER_PERMISSIVE, HEXUPPER, Specification};

use super::cursor::{Tokens, Wire, char_string, decode_escapes, number, period, quote, unquoted};
use crate::lexer::Token;
use crate::name::Name;
use crate::types;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    U8,
    U16,
    U32,
    /// A 32-bit count of seconds, also written with units (`1h`).
    Period,
    /// A signature time: `YYYYMMDDHHmmSS` (UTC) or seconds since the epoch.
    Time,
    /// A type mnemonic (RRSIG's type covered).
    Type,
    /// A DNSSEC algorithm, by number or mnemonic.
    Algorithm,
    /// A CERT type, by number or mnemonic.
    CertType,
    A,
    Aaaa,
    CharString,
    /// A last <character-string> that may be left out (ISDN's subaddress).
    OptionalCharString,
    /// One or more <character-string>s (TXT).
    CharStrings,
    /// One string without a length octet, the rest of the rdata (CAA's
    /// value, URI's target).
    LongText,
    /// CAA's tag: letters and digits, with a length octet.
    Tag,
    /// Hexadecimal to the end, spaces allowed.
    Hex,
    /// Hexadecimal with a length octet; `-` is empty (NSEC3 salt).
    HexWithLength,
    /// Base32hex with a length octet (NSEC3's next hashed owner).
    Base32WithLength,
    /// Base64 to the end, spaces allowed.
    Base64,
    /// NSEC-style type bitmap (RFC 4034 §4.1.2) to the end; may be empty.
    Bitmap,
    /// Four groups of up to four hex digits (NID, L64; RFC 6742).
    Ilnp64,
    Eui48,
    Eui64,
}

/// Base64 as NSD reads it: padding required, unused trailing bits ignored.
static BASE64: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols
        .push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    spec.padding = Some('=');
    spec.check_trailing_bits = false;
    spec.encoding().expect("a valid base64 specification")
});

/// Base32 with the extended hex alphabet (RFC 4648 §7), either case, no
/// padding, as NSEC3 hashes are written.
static BASE32HEX: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("0123456789ABCDEFGHIJKLMNOPQRSTUV");
    spec.translate.from.push_str("abcdefghijklmnopqrstuv");
    spec.translate.to.push_str("ABCDEFGHIJKLMNOPQRSTUV");
    spec.check_trailing_bits = false;
    spec.encoding().expect("a valid base32hex specification")
});

const ALGORITHMS: &[(u8, &str)] = &[
    (1, "RSAMD5"),
    (2, "DH"),
    (3, "DSA"),
    (5, "RSASHA1"),
    (6, "DSA-NSEC3-SHA1"),
    (7, "RSASHA1-NSEC3-SHA1"),
    (8, "RSASHA256"),
    (10, "RSASHA512"),
    (12, "ECC-GOST"),
    (13, "ECDSAP256SHA256"),
    (14, "ECDSAP384SHA384"),
    (15, "ED25519"),
    (16, "ED448"),
    (252, "INDIRECT"),
    (253, "PRIVATEDNS"),
    (254, "PRIVATEOID"),
];

const CERT_TYPES: &[(u16, &str)] = &[
    (1, "PKIX"),
    (2, "SPKI"),
    (3, "PGP"),
    (4, "IPKIX"),
    (5, "ISPKI"),
    (6, "IPGP"),
    (7, "ACPKIX"),
    (8, "IACPKIX"),
    (253, "URI"),
    (254, "OID"),
];

fn mnemonic<T: Copy + Into<u64>>(
    t: &Token,
    what: &str,
    table: &[(T, &str)],
    max: u64,
) -> Result<u64, String> {
    if let Some((code, _)) = table
        .iter()
        .find(|(_, n)| !t.quoted && n.as_bytes().eq_ignore_ascii_case(t.text))
    {
        return Ok((*code).into());
    }
    number(t, what, max)
}

impl Field {
    /// Reads this field from `tokens`, appending its wire form to `wire`.
    pub fn parse(
        self,
        tokens: &mut Tokens,
        origin: &Name,
        wire: &mut Vec<u8>,
    ) -> Result<(), String> {
        use Field::*;
        let what = self.what();
        match self {
            OptionalCharString => {
                if let Some(t) = tokens.next_opt() {
                    let s = char_string(&t, what)?;
                    wire.push(s.len() as u8);
                    wire.extend_from_slice(&s);
                }
                return Ok(());
            }
            CharStrings => {
                let all = tokens.rest();
                if all.is_empty() {
                    return Err(format!("missing {what}"));
                }
                for t in all {
                    let s = char_string(t, what)?;
                    wire.push(s.len() as u8);
                    wire.extend_from_slice(&s);
                }
                return Ok(());
            }
            Hex | Base64 => {
                let all = tokens.rest();
                if all.is_empty() {
                    return Err(format!("missing {what}"));
                }
                let mut text = Vec::new();
                for t in all {
                    text.extend_from_slice(unquoted(t, what)?);
                }
                let decoded = if self == Hex {
                    HEXLOWER_PERMISSIVE.decode(&text)
                } else {
                    BASE64.decode(&text)
                };
                let bytes = decoded.map_err(|_| {
                    format!("{what}: `{}` is not valid", String::from_utf8_lossy(&text))
                })?;
                wire.extend_from_slice(&bytes);
                return Ok(());
            }
            Bitmap => {
                let mut types = Vec::new();
                for t in tokens.rest() {
                    let text = unquoted(t, what)?;
                    types.push(
                        types::type_code(text).ok_or_else(|| {
                            format!("{what}: `{}` is not a record type", t.show())
                        })?,
                    );
                }
                write_bitmap(&types, wire);
                return Ok(());
            }
            _ => {}
        }
        let t = tokens.next(what)?;
        match self {
            Name => {
                let text = unquoted(&t, what)?;
                let name =
                    crate::name::Name::parse(text, origin).map_err(|e| format!("{what}: {e}"))?;
                wire.extend_from_slice(name.wire());
            }
            U8 => wire.push(number(&t, what, 0xff)? as u8),
            U16 => wire.extend_from_slice(&(number(&t, what, 0xffff)? as u16).to_be_bytes()),
            U32 => wire
                .extend_from_slice(&(number(&t, what, u64::from(u32::MAX))? as u32).to_be_bytes()),
            Period => wire.extend_from_slice(&period(&t, what)?.to_be_bytes()),
            Time => wire.extend_from_slice(&time(&t, what)?.to_be_bytes()),
            Type => {
                let code = types::type_code(unquoted(&t, what)?)
                    .ok_or_else(|| format!("{what}: `{}` is not a record type", t.show()))?;
                wire.extend_from_slice(&code.to_be_bytes());
            }
            Algorithm => wire.push(mnemonic(&t, what, ALGORITHMS, 0xff)? as u8),
            CertType => wire
                .extend_from_slice(&(mnemonic(&t, what, CERT_TYPES, 0xffff)? as u16).to_be_bytes()),
            A => wire.extend_from_slice(&ipv4(&t, what)?.octets()),
            Aaaa => wire.extend_from_slice(&ipv6(&t, what)?.octets()),
            CharString => {
                let s = char_string(&t, what)?;
                wire.push(s.len() as u8);
                wire.extend_from_slice(&s);
            }
            LongText => {
                wire.extend_from_slice(&decode_escapes(t.text).map_err(|e| format!("{what}: {e}"))?)
            }
            Tag => {
                let s = char_string(&t, what)?;
                if s.is_empty() || !s.iter().all(u8::is_ascii_alphanumeric) {
                    return Err(format!("{what}: `{}` must be letters and digits", t.show()));
                }
                wire.push(s.len() as u8);
                wire.extend_from_slice(&s);
            }
            HexWithLength => {
                let text = unquoted(&t, what)?;
                let bytes = if text == b"-" {
                    Vec::new()
                } else {
                    HEXLOWER_PERMISSIVE
                        .decode(text)
                        .map_err(|_| format!("{what}: `{}` is not hexadecimal octets", t.show()))?
                };
                push_with_length(wire, &bytes, what)?;
            }
            Base32WithLength => {
                let bytes = BASE32HEX
                    .decode(unquoted(&t, what)?)
                    .map_err(|_| format!("{what}: `{}` is not base32hex", t.show()))?;
                push_with_length(wire, &bytes, what)?;
            }
            Ilnp64 => wire.extend_from_slice(&ilnp64(&t, what)?),
            Eui48 => wire.extend_from_slice(&eui(&t, what, 6)?),
            Eui64 => wire.extend_from_slice(&eui(&t, what, 8)?),
            OptionalCharString | CharStrings | Hex | Base64 | Bitmap => {
                unreachable!("handled above")
            }
        }
        Ok(())
    }

    /// Reads this field from wire form and appends its presentation form
    /// to `out`; `None` if the wire data does not hold one.
    pub fn format(self, r: &mut Wire, out: &mut Vec<String>) -> Option<()> {
        use Field::*;
        let text = match self {
            Name => r.name()?.to_string(),
            U8 | Algorithm => r.u8()?.to_string(),
            U16 | CertType => r.u16()?.to_string(),
            U32 | Period => r.u32()?.to_string(),
            Time => format_time(r.u32()?),
            Type => types::type_name(r.u16()?),
            A => Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?).to_string(),
            Aaaa => Ipv6Addr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?).to_string(),
            CharString | Tag => quote(r.char_string()?),
            OptionalCharString => {
                if r.is_empty() {
                    return Some(());
                }
                quote(r.char_string()?)
            }
            CharStrings => {
                let mut all = Vec::new();
                while !r.is_empty() {
                    all.push(quote(r.char_string()?));
                }
                all.join(" ")
            }
            LongText => quote(r.rest()),
            Hex => HEXUPPER.encode(r.rest()),
            Base64 => BASE64.encode(r.rest()),
            HexWithLength => {
                let len = r.u8()?;
                let bytes = r.take(usize::from(len))?;
                if bytes.is_empty() {
                    "-".into()
                } else {
                    HEXUPPER.encode(bytes)
                }
            }
            Base32WithLength => {
                let len = r.u8()?;
                BASE32HEX.encode(r.take(usize::from(len))?)
            }
            Bitmap => {
                let types = read_bitmap(r.rest())?;
                types
                    .into_iter()
                    .map(types::type_name)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            Ilnp64 => {
                let b = r.take(8)?;
                b.chunks(2)
                    .map(|g| format!("{:04x}", u16::from_be_bytes([g[0], g[1]])))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            Eui48 => hyphenated(r.take(6)?),
            Eui64 => hyphenated(r.take(8)?),
        };
        if !text.is_empty() {
            out.push(text);
        }
        Some(())
    }

    fn what(self) -> &'static str {
        use Field::*;
        match self {
            Name => "a domain name",
            U8 => "an 8-bit number",
            U16 => "a 16-bit number",
            U32 => "a 32-bit number",
            Period => "a number of seconds",
            Time => "a time (YYYYMMDDHHmmSS)",
            Type => "a record type",
            Algorithm => "an algorithm",
            CertType => "a certificate type",
            A => "an IPv4 address",
            Aaaa => "an IPv6 address",
            CharString | OptionalCharString | CharStrings => "a character-string",
            LongText => "a string",
            Tag => "a tag",
            Hex | HexWithLength => "hexadecimal data",
            Base32WithLength => "base32hex data",
            Base64 => "base64 data",
            Bitmap => "a list of record types",
            Ilnp64 => "a 64-bit locator (xxxx:xxxx:xxxx:xxxx)",
            Eui48 => "an EUI-48 address (xx-xx-xx-xx-xx-xx)",
            Eui64 => "an EUI-64 address (xx-xx-xx-xx-xx-xx-xx-xx)",
        }
    }
}

fn push_with_length(wire: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), String> {
    let len = u8::try_from(bytes.len()).map_err(|_| format!("{what}: more than 255 octets"))?;
    wire.push(len);
    wire.extend_from_slice(bytes);
    Ok(())
}

pub fn ipv4(t: &Token, what: &str) -> Result<Ipv4Addr, String> {
    std::str::from_utf8(unquoted(t, what)?)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: `{}` is not an IPv4 address", t.show()))
}

pub fn ipv6(t: &Token, what: &str) -> Result<Ipv6Addr, String> {
    std::str::from_utf8(unquoted(t, what)?)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: `{}` is not an IPv6 address", t.show()))
}

fn ilnp64(t: &Token, what: &str) -> Result<[u8; 8], String> {
    let bad = || format!("{what}: `{}` is not four groups of hex digits", t.show());
    let text = std::str::from_utf8(unquoted(t, what)?).map_err(|_| bad())?;
    let groups: Vec<&str> = text.split(':').collect();
    if groups.len() != 4 {
        return Err(bad());
    }
    let mut out = [0u8; 8];
    for (i, g) in groups.iter().enumerate() {
        if g.is_empty() || g.len() > 4 {
            return Err(bad());
        }
        let v = u16::from_str_radix(g, 16).map_err(|_| bad())?;
        out[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
    }
    Ok(out)
}

fn eui(t: &Token, what: &str, octets: usize) -> Result<Vec<u8>, String> {
    let bad = || {
        format!(
            "{what}: `{}` is not {octets} hex pairs joined by `-`",
            t.show()
        )
    };
    let text = std::str::from_utf8(unquoted(t, what)?).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split('-').collect();
    if parts.len() != octets || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    parts
        .iter()
        .map(|p| u8::from_str_radix(p, 16).map_err(|_| bad()))
        .collect()
}

fn hyphenated(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes the types as an RFC 4034 §4.1.2 bitmap: one window per 256
/// types, each only as long as its highest type needs.
pub fn write_bitmap(types: &[u16], wire: &mut Vec<u8>) {
    let mut sorted = types.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut i = 0;
    while i < sorted.len() {
        let window = sorted[i] >> 8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < sorted.len() && sorted[i] >> 8 == window {
            let low = usize::from(sorted[i] & 0xff);
            bits[low / 8] |= 0x80 >> (low % 8);
            len = low / 8 + 1;
            i += 1;
        }
        wire.push(window as u8);
        wire.push(len as u8);
        wire.extend_from_slice(&bits[..len]);
    }
}

/// The types of a bitmap; `None` if it is malformed (windows out of order,
/// a length of 0 or over 32, truncated).
pub fn read_bitmap(mut bytes: &[u8]) -> Option<Vec<u16>> {
    let mut types = Vec::new();
    let mut last_window: Option<u8> = None;
    while !bytes.is_empty() {
        let (&window, &len) = (bytes.first()?, bytes.get(1)?);
        if last_window.is_some_and(|w| w >= window) || len == 0 || len > 32 {
            return None;
        }
        last_window = Some(window);
        let bits = bytes.get(2..2 + usize::from(len))?;
        for (byte, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b & (0x80 >> bit) != 0 {
                    types.push(u16::from(window) << 8 | (byte * 8 + bit) as u16);
                }
            }
        }
        bytes = &bytes[2 + usize::from(len)..];
    }
    Some(types)
}

/// RRSIG times: 14 digits are a UTC date, anything else seconds. Dates
/// past 2106 wrap, as the serial arithmetic of RFC 4034 §3.1.5 intends.
fn time(t: &Token, what: &str) -> Result<u32, String> {
    let text = unquoted(t, what)?;
    if text.len() != 14 || !text.iter().all(u8::is_ascii_digit) {
        return number(t, what, u64::from(u32::MAX)).map(|v| v as u32);
    }
    let n = |range: std::ops::Range<usize>| -> i64 {
        text[range]
            .iter()
            .fold(0, |v, d| v * 10 + i64::from(d - b'0'))
    };
    let (year, month, day) = (n(0..4), n(4..6), n(6..8));
    let (hour, minute, second) = (n(8..10), n(10..12), n(12..14));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("{what}: `{}` is not a valid date", t.show()));
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(seconds as u32)
}

fn format_time(t: u32) -> String {
    let t = i64::from(t);
    let (days, rest) = (t / 86_400, t % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm, public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_times_round_trip() {
        for s in ["20261206233151", "19700101000000", "21060207062815"] {
            let t = Token {
                text: s.as_bytes(),
                quoted: false,
                line: 1,
            };
            assert_eq!(format_time(time(&t, "t").unwrap()), s);
        }
    }

    #[test]
    fn bitmaps_round_trip() {
        let types = [1, 2, 6, 46, 47, 48, 257, 65280];
        let mut wire = Vec::new();
        write_bitmap(&types, &mut wire);
        assert_eq!(read_bitmap(&wire).unwrap(), types);
        assert_eq!(&wire[..2], [0, 7], "window 0 up to type 48");
    }
}
