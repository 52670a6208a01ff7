//! SVCB and HTTPS rdata (RFC 9460): a priority, a target name and
//! `key=value` parameters, stored sorted by key.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::cursor::{Tokens, Wire, decode_escapes, number, quote, unquoted};
use super::field::Field;
use crate::name::Name;

const KEYS: &[(u16, &str)] = &[
    (0, "mandatory"),
    (1, "alpn"),
    (2, "no-default-alpn"),
    (3, "port"),
    (4, "ipv4hint"),
    (5, "ech"),
    (6, "ipv6hint"),
    (7, "dohpath"),
];

fn key_code(name: &[u8]) -> Option<u16> {
    if let Some((code, _)) = KEYS.iter().find(|(_, n)| n.as_bytes() == name) {
        return Some(*code);
    }
    let digits = name.strip_prefix(b"key")?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // key65535 is reserved (RFC 9460 §14.3.2).
    std::str::from_utf8(digits)
        .ok()?
        .parse()
        .ok()
        .filter(|&k| k != 65535)
}

fn key_name(code: u16) -> String {
    KEYS.iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("key{code}"), |(_, n)| (*n).to_string())
}

pub fn parse(tokens: &mut Tokens, origin: &Name, wire: &mut Vec<u8>) -> Result<(), String> {
    Field::U16.parse(tokens, origin, wire)?;
    Field::Name.parse(tokens, origin, wire)?;
    let mut params: Vec<(u16, Vec<u8>)> = Vec::new();
    while let Some(t) = tokens.next_opt() {
        let text = unquoted(&t, "a service parameter")?;
        let (key, value) = match text.iter().position(|&c| c == b'=') {
            // `key="value"`: the quote starts a token of its own.
            Some(eq) if eq + 1 == text.len() => {
                let v = tokens
                    .next_opt()
                    .filter(|v| v.quoted)
                    .ok_or_else(|| format!("`{}` needs a value", t.show()))?;
                (&text[..eq], Some(decode_escapes(v.text)?))
            }
            Some(eq) => (&text[..eq], Some(decode_escapes(&text[eq + 1..])?)),
            None => (text, None),
        };
        let code = key_code(key).ok_or_else(|| {
            format!(
                "`{}` is not a service parameter key",
                String::from_utf8_lossy(key)
            )
        })?;
        if params.iter().any(|(k, _)| *k == code) {
            return Err(format!("the key {} is given twice", key_name(code)));
        }
        let data =
            value_wire(code, value.as_deref()).map_err(|e| format!("{}: {e}", key_name(code)))?;
        params.push((code, data));
    }
    params.sort_by_key(|(k, _)| *k);
    for (key, data) in params {
        wire.extend_from_slice(&key.to_be_bytes());
        let len = u16::try_from(data.len())
            .map_err(|_| "a parameter value over 65535 octets".to_string())?;
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(&data);
    }
    Ok(())
}

/// Splits a comma-separated list in which `\,` is a comma inside an item
/// and `\\` a backslash (RFC 9460 Appendix A.1).
fn value_list(value: &[u8]) -> Vec<Vec<u8>> {
    let mut items = vec![Vec::new()];
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if i + 1 < value.len() => {
                items.last_mut().expect("never empty").push(value[i + 1]);
                i += 2;
            }
            b',' => {
                items.push(Vec::new());
                i += 1;
            }
            c => {
                items.last_mut().expect("never empty").push(c);
                i += 1;
            }
        }
    }
    items
}

fn plain_list(value: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(value).map_err(|_| "not ASCII".to_string())?;
    Ok(text.split(',').collect())
}

fn value_wire(key: u16, value: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let needs = || "needs a value".to_string();
    let mut out = Vec::new();
    match key {
        0 => {
            let mut keys = Vec::new();
            for k in plain_list(value.ok_or_else(needs)?)? {
                let code = key_code(k.as_bytes()).ok_or_else(|| format!("`{k}` is not a key"))?;
                if code == 0 || keys.contains(&code) {
                    return Err(format!("`{k}` may not be listed"));
                }
                keys.push(code);
            }
            keys.sort_unstable();
            for k in keys {
                out.extend_from_slice(&k.to_be_bytes());
            }
        }
        1 => {
            for id in value_list(value.ok_or_else(needs)?) {
                if id.is_empty() || id.len() > 255 {
                    return Err("an ALPN identifier is 1 to 255 octets".into());
                }
                out.push(id.len() as u8);
                out.extend_from_slice(&id);
            }
        }
        2 => {
            if value.is_some_and(|v| !v.is_empty()) {
                return Err("takes no value".into());
            }
        }
        3 => {
            let v = value.ok_or_else(needs)?;
            let t = crate::lexer::Token {
                text: v,
                quoted: false,
                line: 0,
            };
            out.extend_from_slice(&(number(&t, "port", 65535)? as u16).to_be_bytes());
        }
        4 => {
            for a in plain_list(value.ok_or_else(needs)?)? {
                let a: Ipv4Addr = a
                    .parse()
                    .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
                out.extend_from_slice(&a.octets());
            }
        }
        6 => {
            for a in plain_list(value.ok_or_else(needs)?)? {
                let a: Ipv6Addr = a
                    .parse()
                    .map_err(|_| format!("`{a}` is not an IPv6 address"))?;
                out.extend_from_slice(&a.octets());
            }
        }
        5 => {
            let t = crate::lexer::Token {
                text: value.ok_or_else(needs)?,
                quoted: false,
                line: 0,
            };
            Field::Base64.parse(&mut Tokens::new(&[t]), &Name::root(), &mut out)?;
        }
        _ => out.extend_from_slice(value.unwrap_or_default()),
    }
    Ok(out)
}

pub fn format(r: &mut Wire) -> Option<String> {
    let mut parts = Vec::new();
    Field::U16.format(r, &mut parts)?;
    Field::Name.format(r, &mut parts)?;
    while !r.is_empty() {
        let key = r.u16()?;
        let len = r.u16()?;
        let v = r.take(usize::from(len))?;
        let name = key_name(key);
        let text = match key {
            0 => Some(
                v.chunks(2)
                    .map(|c| Some(key_name(u16::from_be_bytes(c.try_into().ok()?))))
                    .collect::<Option<Vec<_>>>()?
                    .join(","),
            ),
            1 => {
                let mut w = Wire::new(v);
                let mut ids = Vec::new();
                while !w.is_empty() {
                    let id = w.char_string()?;
                    let mut escaped = Vec::new();
                    for &b in id {
                        if b == b',' || b == b'\\' {
                            escaped.push(b'\\');
                        }
                        escaped.push(b);
                    }
                    ids.push(escaped);
                }
                Some(quote(&ids.join(&b',')))
            }
            2 if v.is_empty() => None,
            3 => Some(u16::from_be_bytes(v.try_into().ok()?).to_string()),
            4 if v.len() % 4 == 0 && !v.is_empty() => Some(
                v.chunks(4)
                    .map(|c| Ipv4Addr::from(<[u8; 4]>::try_from(c).expect("4 octets")).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            6 if v.len() % 16 == 0 && !v.is_empty() => Some(
                v.chunks(16)
                    .map(|c| {
                        Ipv6Addr::from(<[u8; 16]>::try_from(c).expect("16 octets")).to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            5 => {
                let mut out = Vec::new();
                Field::Base64.format(&mut Wire::new(v), &mut out)?;
                Some(out.concat())
            }
            2 | 4 | 6 => return None,
            _ => Some(quote(v)),
        };
        parts.push(match text {
            Some(t) => format!("{name}={t}"),
            None => name,
        });
    }
    Some(parts.join(" "))
}
