//! Rdata between presentation form and wire form, for every type NSD 4.6
//! loads, and for any type in the RFC 3597 generic form `\# LEN HEX`.
//!
//! Most types are a list of fields of a few kinds ([`Field`]); the table
//! [`schema`] gives each type's list, so reading and writing a type are the
//! same loop over it. The types whose syntax is not a field list (LOC, APL,
//! WKS, IPSECKEY, NSAP, NXT, SVCB/HTTPS) have their own module.
//!
//! Writing is checked by reading back: text that would not read back to the
//! same octets is never produced; such rdata is written in the generic form,
//! which every server reads.

mod cursor;
mod field;
mod special;
mod svcb;

use data_encoding::HEXLOWER_PERMISSIVE;

pub(crate) use cursor::Tokens;
use field::Field;

use crate::lexer::Token;
use crate::name::Name;

/// How a type's rdata is written in presentation form.
#[derive(Debug, Clone, Copy)]
enum Schema {
    Fields(&'static [Field]),
    Loc,
    Apl,
    Wks,
    IpsecKey,
    Nsap,
    Nxt,
    Svcb,
    /// Types with no presentation form of their own (NULL, A6 in NSD 4.6,
    /// and every type not listed): only `\# LEN HEX`.
    GenericOnly,
}

fn schema(rtype: u16) -> Schema {
    use Field::*;
    Schema::Fields(match rtype {
        1 => &[A],
        2..=5 | 7..=9 | 12 | 23 | 39 => &[Name],
        6 => &[Name, Name, Period, Period, Period, Period, Period],
        13 => &[CharString, CharString],
        14 | 17 | 58 => &[Name, Name],
        15 | 18 | 21 | 36 | 107 => &[U16, Name],
        16 | 99 | 258 => &[CharStrings],
        19 => &[CharString],
        20 => &[CharString, OptionalCharString],
        24 | 46 => &[Type, Algorithm, U8, Period, Time, Time, U16, Name, Base64],
        25 | 48 | 60 => &[U16, U8, Algorithm, Base64],
        26 => &[U16, Name, Name],
        28 => &[Aaaa],
        33 => &[U16, U16, U16, Name],
        35 => &[U16, U16, CharString, CharString, CharString, Name],
        37 => &[CertType, U16, Algorithm, Base64],
        43 | 59 | 32769 => &[U16, Algorithm, U8, Hex],
        44 => &[U8, U8, Hex],
        47 => &[Name, Bitmap],
        49 | 61 => &[Base64],
        50 => &[U8, U8, U16, HexWithLength, Base32WithLength, Bitmap],
        51 => &[U8, U8, U16, HexWithLength],
        52 | 53 => &[U8, U8, U8, Hex],
        62 => &[U32, U16, Bitmap],
        63 => &[Period, U8, U8, Hex],
        104 | 106 => &[U16, Ilnp64],
        105 => &[U16, A],
        108 => &[Eui48],
        109 => &[Eui64],
        256 => &[U16, U16, LongText],
        257 => &[U8, Tag, LongText],
        22 => return Schema::Nsap,
        29 => return Schema::Loc,
        11 => return Schema::Wks,
        30 => return Schema::Nxt,
        42 => return Schema::Apl,
        45 => return Schema::IpsecKey,
        64 | 65 => return Schema::Svcb,
        _ => return Schema::GenericOnly,
    })
}

/// Reads the rdata tokens of a record of type `rtype` into wire form.
/// Relative names are completed with `origin`.
pub fn parse(rtype: u16, tokens: &[Token], origin: &Name) -> Result<Vec<u8>, String> {
    let mut tokens = Tokens::new(tokens);
    // Room for an address, or a short name, from the start.
    let mut wire = Vec::with_capacity(16);
    if tokens.peek().is_some_and(|t| !t.quoted && t.text == b"\\#") {
        tokens.next_opt();
        let data = generic(&mut tokens)?;
        // Generic rdata of a type with a syntax must still be valid rdata
        // of that type, as NSD checks.
        if !matches!(schema(rtype), Schema::GenericOnly) && format_known(rtype, &data).is_none() {
            return Err(format!(
                "`\\# {}` is not valid rdata for type {}",
                data.len(),
                crate::types::type_name(rtype)
            ));
        }
        return Ok(data);
    }
    match schema(rtype) {
        Schema::Fields(fields) => {
            for field in fields {
                field.parse(&mut tokens, origin, &mut wire)?;
            }
        }
        Schema::Loc => special::parse_loc(&mut tokens, &mut wire)?,
        Schema::Apl => special::parse_apl(&mut tokens, &mut wire)?,
        Schema::Wks => special::parse_wks(&mut tokens, &mut wire)?,
        Schema::IpsecKey => special::parse_ipseckey(&mut tokens, origin, &mut wire)?,
        Schema::Nsap => special::parse_nsap(&mut tokens, &mut wire)?,
        Schema::Nxt => special::parse_nxt(&mut tokens, origin, &mut wire)?,
        Schema::Svcb => svcb::parse(&mut tokens, origin, &mut wire)?,
        Schema::GenericOnly => {
            return Err(format!(
                "type {} is only read in the RFC 3597 form `\\# LENGTH HEX`",
                crate::types::type_name(rtype)
            ));
        }
    }
    tokens.finish()?;
    if wire.len() > usize::from(u16::MAX) {
        return Err(format!("rdata of {} octets (at most 65535)", wire.len()));
    }
    Ok(wire)
}

/// `\# LENGTH HEX...` (RFC 3597 §5), after the `\#`.
fn generic(tokens: &mut Tokens) -> Result<Vec<u8>, String> {
    let len = cursor::number(
        &tokens.next("the length after `\\#`")?,
        "generic rdata length",
        65535,
    )?;
    let mut hex = Vec::new();
    for t in tokens.rest() {
        hex.extend_from_slice(cursor::unquoted(t, "generic rdata")?);
    }
    let data = HEXLOWER_PERMISSIVE.decode(&hex).map_err(|_| {
        format!(
            "generic rdata: `{}` is not hexadecimal octets",
            String::from_utf8_lossy(&hex)
        )
    })?;
    if data.len() as u64 != len {
        return Err(format!(
            "generic rdata: the length says {len} octets but {} follow",
            data.len()
        ));
    }
    Ok(data)
}

/// The RFC 3597 generic form of any rdata.
pub fn generic_text(wire: &[u8]) -> String {
    if wire.is_empty() {
        return "\\# 0".into();
    }
    format!(
        "\\# {} {}",
        wire.len(),
        data_encoding::HEXUPPER.encode(wire)
    )
}

/// Rdata in presentation form: the type's own syntax when it has one and
/// it reads back to exactly `wire`, the generic form otherwise.
pub fn format(rtype: u16, wire: &[u8]) -> String {
    format_known(rtype, wire).unwrap_or_else(|| generic_text(wire))
}

fn format_known(rtype: u16, wire: &[u8]) -> Option<String> {
    let text = format_unchecked(rtype, wire)?;
    // Read back with the root as origin: every name was written absolute.
    let entries = crate::lexer::entries(text.as_bytes()).ok()?;
    let all: Vec<_> = entries.iter().collect();
    let tokens = match all.as_slice() {
        [] => &[][..],
        [one] if !one.blank_owner => one.tokens,
        _ => return None,
    };
    match parse(rtype, tokens, &Name::root()) {
        Ok(back) if back == wire => Some(text),
        _ => None,
    }
}

fn format_unchecked(rtype: u16, wire: &[u8]) -> Option<String> {
    let mut r = cursor::Wire::new(wire);
    let mut parts: Vec<String> = Vec::new();
    match schema(rtype) {
        Schema::Fields(fields) => {
            for field in fields {
                field.format(&mut r, &mut parts)?;
            }
        }
        Schema::Loc => parts.push(special::format_loc(&mut r)?),
        Schema::Apl => parts.push(special::format_apl(&mut r)?),
        Schema::Wks => parts.push(special::format_wks(&mut r)?),
        Schema::IpsecKey => parts.push(special::format_ipseckey(&mut r)?),
        Schema::Nsap => parts.push(special::format_nsap(&mut r)?),
        Schema::Nxt => parts.push(special::format_nxt(&mut r)?),
        Schema::Svcb => parts.push(svcb::format(&mut r)?),
        Schema::GenericOnly => return None,
    }
    if !r.is_empty() {
        return None;
    }
    Some(parts.join(" "))
}

/// The domain names in `wire` rdata of type `rtype` that a server looks
/// up for additional data or follows: the target of NS, CNAME, DNAME, PTR,
/// MX, SRV and the like. Empty for other types and malformed rdata.
pub fn target(rtype: u16, wire: &[u8]) -> Option<Name> {
    let mut r = cursor::Wire::new(wire);
    match rtype {
        2 | 5 | 12 | 39 => r.name(),
        15 => {
            r.u16()?;
            r.name()
        }
        33 => {
            r.take(6)?;
            r.name()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;

/// A record's TTL: seconds or units (`1h30m`).
pub fn ttl(t: &Token) -> Result<u32, String> {
    cursor::period(t, "TTL")
}

pub use cursor::decode_escapes;

/// Whether `wire` is valid rdata of `rtype` (types without a syntax here
/// take any octets).
pub fn fits(rtype: u16, wire: &[u8]) -> bool {
    !has_syntax(rtype) || format_known(rtype, wire).is_some()
}

/// Whether `rtype` has a presentation syntax here (else only `\#`).
pub fn has_syntax(rtype: u16) -> bool {
    !matches!(schema(rtype), Schema::GenericOnly)
}
