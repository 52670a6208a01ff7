//! The types whose presentation form is not a plain list of fields: LOC
//! (RFC 1876), APL (RFC 3123), WKS (RFC 1035), IPSECKEY (RFC 4025), NSAP
//! (RFC 1706) and NXT (RFC 2535).

use std::net::{Ipv4Addr, Ipv6Addr};

use data_encoding::{HEXLOWER_PERMISSIVE, HEXUPPER};

use super::cursor::{Tokens, Wire, number, unquoted};
use super::field::{self, Field};
use crate::lexer::Token;
use crate::name::Name;
use crate::types;

// ---- LOC ----

/// The equator and prime meridian, in thousandths of an arc second.
const LOC_ORIGIN: i64 = 1 << 31;
/// Altitudes are stored from 100,000 m below the WGS 84 ellipsoid, in cm.
const LOC_ALTITUDE_BASE: i64 = 10_000_000;

/// `d1 [m1 [s1]] N|S d2 [m2 [s2]] E|W alt[m] [siz[m] [hp[m] [vp[m]]]]`.
pub fn parse_loc(tokens: &mut Tokens, wire: &mut Vec<u8>) -> Result<(), String> {
    let latitude = loc_angle(tokens, 90, (b'N', b'S'))?;
    let longitude = loc_angle(tokens, 180, (b'E', b'W'))?;
    let alt = tokens.next("the altitude")?;
    let altitude = meters(&alt, "the altitude", true)? + LOC_ALTITUDE_BASE;
    if !(0..=i64::from(u32::MAX)).contains(&altitude) {
        return Err(format!("the altitude `{}` is out of range", alt.show()));
    }
    // Defaults of RFC 1876: a 1 m sphere, 10 km horizontal, 10 m vertical.
    let mut precision = [0x12u8, 0x16, 0x13];
    for (i, what) in [
        "the size",
        "the horizontal precision",
        "the vertical precision",
    ]
    .into_iter()
    .enumerate()
    {
        let Some(t) = tokens.next_opt() else { break };
        let cm = meters(&t, what, false)?;
        precision[i] =
            precsize(cm).ok_or_else(|| format!("{what}: `{}` is too large", t.show()))?;
    }
    wire.push(0);
    wire.extend_from_slice(&precision);
    wire.extend_from_slice(&(latitude as u32).to_be_bytes());
    wire.extend_from_slice(&(longitude as u32).to_be_bytes());
    wire.extend_from_slice(&(altitude as u32).to_be_bytes());
    Ok(())
}

fn loc_angle(tokens: &mut Tokens, max_degrees: i64, hemispheres: (u8, u8)) -> Result<i64, String> {
    let what = if max_degrees == 90 {
        "the latitude"
    } else {
        "the longitude"
    };
    let bad = |t: &Token| format!("{what}: `{}` is not valid", t.show());
    let mut parts = Vec::new();
    let sign = loop {
        let t = tokens.next(what)?;
        let text = unquoted(&t, what)?;
        if text.len() == 1 && text[0].to_ascii_uppercase() == hemispheres.0 {
            break 1;
        }
        if text.len() == 1 && text[0].to_ascii_uppercase() == hemispheres.1 {
            break -1;
        }
        if parts.len() == 3 {
            return Err(format!(
                "{what}: expected {} or {} after degrees, minutes and seconds",
                char::from(hemispheres.0),
                char::from(hemispheres.1)
            ));
        }
        parts.push(t);
    };
    let Some(degrees) = parts.first() else {
        return Err(format!("{what}: missing degrees"));
    };
    let degrees = number(degrees, what, max_degrees as u64)? as i64;
    let minutes = match parts.get(1) {
        Some(t) => number(t, what, 59)? as i64,
        None => 0,
    };
    let thousandths = match parts.get(2) {
        Some(t) => {
            let v = decimal(unquoted(t, what)?, 3).ok_or_else(|| bad(t))?;
            if v >= 60_000 {
                return Err(bad(t));
            }
            v
        }
        None => 0,
    };
    let value = ((degrees * 60 + minutes) * 60) * 1000 + thousandths;
    if value > max_degrees * 3_600_000 {
        return Err(format!("{what}: more than {max_degrees} degrees"));
    }
    Ok(LOC_ORIGIN + sign * value)
}

/// Meters with up to two decimals and an optional `m`, in centimeters.
fn meters(t: &Token, what: &str, signed: bool) -> Result<i64, String> {
    let text = unquoted(t, what)?;
    let text = text
        .strip_suffix(b"m")
        .or_else(|| text.strip_suffix(b"M"))
        .unwrap_or(text);
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) if signed => (true, rest),
        _ => (false, text),
    };
    let cm = decimal(digits, 2)
        .ok_or_else(|| format!("{what}: `{}` is not a number of meters", t.show()))?;
    Ok(if negative { -cm } else { cm })
}

/// A non-negative decimal with at most `places` decimals, scaled by
/// 10^places.
fn decimal(text: &[u8], places: u32) -> Option<i64> {
    let (int, frac) = match text.iter().position(|&c| c == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b""[..]),
    };
    if int.is_empty() && frac.is_empty() || frac.len() > places as usize || int.len() > 12 {
        return None;
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i64 = int.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0'));
    for i in 0..places as usize {
        v = v * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some(v)
}

/// RFC 1876's size encoding: a digit and a power of ten, in centimeters,
/// the value rounded down as NSD and Knot do.
fn precsize(cm: i64) -> Option<u8> {
    let mut exponent = 0;
    let mut mantissa = cm;
    while mantissa >= 10 {
        mantissa /= 10;
        exponent += 1;
    }
    (exponent <= 9).then_some((mantissa as u8) << 4 | exponent)
}

fn precsize_text(v: u8) -> Option<String> {
    let (mantissa, exponent) = (i64::from(v >> 4), u32::from(v & 0xf));
    if mantissa > 9 || exponent > 9 {
        return None;
    }
    let cm = mantissa * 10i64.pow(exponent);
    Some(format!("{}.{:02}m", cm / 100, cm % 100))
}

pub fn format_loc(r: &mut Wire) -> Option<String> {
    if r.u8()? != 0 {
        return None;
    }
    let (size, hp, vp) = (r.u8()?, r.u8()?, r.u8()?);
    let (lat, lon, alt) = (r.u32()?, r.u32()?, r.u32()?);
    let angle = |v: u32, hemispheres: (char, char)| {
        let v = i64::from(v) - LOC_ORIGIN;
        let h = if v < 0 { hemispheres.1 } else { hemispheres.0 };
        let v = v.abs();
        let (d, rest) = (v / 3_600_000, v % 3_600_000);
        let (m, ms) = (rest / 60_000, rest % 60_000);
        format!("{d} {m} {}.{:03} {h}", ms / 1000, ms % 1000)
    };
    let alt = i64::from(alt) - LOC_ALTITUDE_BASE;
    let sign = if alt < 0 { "-" } else { "" };
    Some(format!(
        "{} {} {sign}{}.{:02}m {} {} {}",
        angle(lat, ('N', 'S')),
        angle(lon, ('E', 'W')),
        alt.abs() / 100,
        alt.abs() % 100,
        precsize_text(size)?,
        precsize_text(hp)?,
        precsize_text(vp)?
    ))
}

// ---- APL ----

/// Items `[!]AFI:ADDRESS/PREFIX`, AFI 1 (IPv4) or 2 (IPv6); the address is
/// stored without its trailing zero octets (RFC 3123 §4).
pub fn parse_apl(tokens: &mut Tokens, wire: &mut Vec<u8>) -> Result<(), String> {
    for t in tokens.rest() {
        let text = std::str::from_utf8(unquoted(t, "an APL item")?).unwrap_or("");
        let bad = || format!("an APL item: `{}` is not [!]AFI:ADDRESS/PREFIX", t.show());
        let (negated, text) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (afi, rest) = text.split_once(':').ok_or_else(bad)?;
        let (address, prefix) = rest.rsplit_once('/').ok_or_else(bad)?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let (afi, mut octets, max): (u16, Vec<u8>, u8) = match afi {
            "1" => (
                1,
                address
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad())?
                    .octets()
                    .to_vec(),
                32,
            ),
            "2" => (
                2,
                address
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad())?
                    .octets()
                    .to_vec(),
                128,
            ),
            _ => return Err(bad()),
        };
        if prefix > max {
            return Err(format!(
                "an APL item: prefix /{prefix} is longer than {max}"
            ));
        }
        while octets.last() == Some(&0) {
            octets.pop();
        }
        wire.extend_from_slice(&afi.to_be_bytes());
        wire.push(prefix);
        wire.push(u8::from(negated) << 7 | octets.len() as u8);
        wire.extend_from_slice(&octets);
    }
    Ok(())
}

pub fn format_apl(r: &mut Wire) -> Option<String> {
    let mut items = Vec::new();
    while !r.is_empty() {
        let (afi, prefix, n) = (r.u16()?, r.u8()?, r.u8()?);
        let data = r.take(usize::from(n & 0x7f))?;
        let negated = if n & 0x80 != 0 { "!" } else { "" };
        let address = match afi {
            1 => {
                let mut o = [0u8; 4];
                o.get_mut(..data.len())?.copy_from_slice(data);
                Ipv4Addr::from(o).to_string()
            }
            2 => {
                let mut o = [0u8; 16];
                o.get_mut(..data.len())?.copy_from_slice(data);
                Ipv6Addr::from(o).to_string()
            }
            _ => return None,
        };
        items.push(format!("{negated}{afi}:{address}/{prefix}"));
    }
    Some(items.join(" "))
}

// ---- WKS ----

/// Service names a WKS record may use besides port numbers. NSD asks the
/// system's services database; these are the names of that database a
/// zone file is likely to hold, so that a host without /etc/services reads
/// the same records.
const SERVICES: &[(&str, u16)] = &[
    ("echo", 7),
    ("discard", 9),
    ("daytime", 13),
    ("ftp-data", 20),
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("time", 37),
    ("domain", 53),
    ("tftp", 69),
    ("gopher", 70),
    ("finger", 79),
    ("http", 80),
    ("www", 80),
    ("kerberos", 88),
    ("pop3", 110),
    ("sunrpc", 111),
    ("auth", 113),
    ("nntp", 119),
    ("ntp", 123),
    ("imap", 143),
    ("imap2", 143),
    ("snmp", 161),
    ("ldap", 389),
    ("https", 443),
    ("submission", 587),
    ("ldaps", 636),
    ("imaps", 993),
    ("pop3s", 995),
];

pub fn parse_wks(tokens: &mut Tokens, wire: &mut Vec<u8>) -> Result<(), String> {
    let address = field::ipv4(&tokens.next("an IPv4 address")?, "an IPv4 address")?;
    let p = tokens.next("a protocol")?;
    let protocol = match unquoted(&p, "a protocol")?.to_ascii_lowercase().as_slice() {
        b"tcp" => 6,
        b"udp" => 17,
        _ => number(&p, "a protocol", 255)? as u8,
    };
    let mut bits: Vec<u8> = Vec::new();
    for t in tokens.rest() {
        let text = unquoted(t, "a service")?;
        let port = match SERVICES
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(text))
        {
            Some((_, port)) => *port,
            None => number(t, "a service (a port number or a well-known name)", 65535)? as u16,
        };
        let byte = usize::from(port / 8);
        if bits.len() <= byte {
            bits.resize(byte + 1, 0);
        }
        bits[byte] |= 0x80 >> (port % 8);
    }
    wire.extend_from_slice(&address.octets());
    wire.push(protocol);
    wire.extend_from_slice(&bits);
    Ok(())
}

pub fn format_wks(r: &mut Wire) -> Option<String> {
    let address = Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?);
    let protocol = r.u8()?;
    let mut out = format!("{address} {protocol}");
    for (byte, b) in r.rest().iter().enumerate() {
        for bit in 0..8 {
            if b & (0x80 >> bit) != 0 {
                out.push_str(&format!(" {}", byte * 8 + bit));
            }
        }
    }
    Some(out)
}

// ---- IPSECKEY ----

/// `precedence gateway-type algorithm gateway [public-key]`; the gateway's
/// form depends on its type: `.` (none), IPv4, IPv6 or a domain name.
pub fn parse_ipseckey(
    tokens: &mut Tokens,
    origin: &Name,
    wire: &mut Vec<u8>,
) -> Result<(), String> {
    Field::U8.parse(tokens, origin, wire)?;
    let t = tokens.next("a gateway type")?;
    let kind = number(&t, "a gateway type", 3)? as u8;
    wire.push(kind);
    Field::U8.parse(tokens, origin, wire)?;
    let g = tokens.next("a gateway")?;
    match kind {
        0 if g.is(".") => {}
        0 => {
            return Err(format!(
                "a gateway of type 0 is written `.`, not `{}`",
                g.show()
            ));
        }
        1 => wire.extend_from_slice(&field::ipv4(&g, "a gateway")?.octets()),
        2 => wire.extend_from_slice(&field::ipv6(&g, "a gateway")?.octets()),
        _ => {
            let name = Name::parse(unquoted(&g, "a gateway")?, origin)
                .map_err(|e| format!("a gateway: {e}"))?;
            wire.extend_from_slice(name.wire());
        }
    }
    if !tokens.is_empty() {
        Field::Base64.parse(tokens, origin, wire)?;
    }
    Ok(())
}

pub fn format_ipseckey(r: &mut Wire) -> Option<String> {
    let (precedence, kind, algorithm) = (r.u8()?, r.u8()?, r.u8()?);
    let gateway = match kind {
        0 => ".".to_string(),
        1 => Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?).to_string(),
        2 => Ipv6Addr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?).to_string(),
        3 => r.name()?.to_string(),
        _ => return None,
    };
    let mut parts = vec![format!("{precedence} {kind} {algorithm} {gateway}")];
    if !r.is_empty() {
        Field::Base64.format(r, &mut parts)?;
    }
    Some(parts.join(" "))
}

// ---- NSAP ----

/// `0x` and hex digits, with `.` allowed between them for readability.
pub fn parse_nsap(tokens: &mut Tokens, wire: &mut Vec<u8>) -> Result<(), String> {
    let t = tokens.next("an NSAP address")?;
    let text = unquoted(&t, "an NSAP address")?;
    let bad = || {
        format!(
            "an NSAP address: `{}` is not 0x followed by hex digits",
            t.show()
        )
    };
    let hex = text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))
        .ok_or_else(bad)?;
    let digits: Vec<u8> = hex.iter().copied().filter(|&c| c != b'.').collect();
    let bytes = HEXLOWER_PERMISSIVE.decode(&digits).map_err(|_| bad())?;
    if bytes.is_empty() {
        return Err(bad());
    }
    wire.extend_from_slice(&bytes);
    Ok(())
}

pub fn format_nsap(r: &mut Wire) -> Option<String> {
    Some(format!("0x{}", HEXUPPER.encode(r.rest())))
}

// ---- NXT ----

/// A name and the types present, as RFC 2535's bitmap of types 1–127.
pub fn parse_nxt(tokens: &mut Tokens, origin: &Name, wire: &mut Vec<u8>) -> Result<(), String> {
    Field::Name.parse(tokens, origin, wire)?;
    let mut bits = Vec::new();
    for t in tokens.rest() {
        let code = types::type_code(unquoted(t, "a record type")?)
            .ok_or_else(|| format!("`{}` is not a record type", t.show()))?;
        if code > 127 {
            return Err(format!("NXT lists types up to 127, not {}", t.show()));
        }
        let byte = usize::from(code / 8);
        if bits.len() <= byte {
            bits.resize(byte + 1, 0u8);
        }
        bits[byte] |= 0x80 >> (code % 8);
    }
    wire.extend_from_slice(&bits);
    Ok(())
}

pub fn format_nxt(r: &mut Wire) -> Option<String> {
    let mut parts = vec![r.name()?.to_string()];
    for (byte, b) in r.rest().iter().enumerate() {
        for bit in 0..8 {
            if b & (0x80 >> bit) != 0 {
                parts.push(types::type_name((byte * 8 + bit) as u16));
            }
        }
    }
    Some(parts.join(" "))
}
