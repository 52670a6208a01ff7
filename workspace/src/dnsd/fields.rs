//! The checks that several sections of `dnsd.toml` share: domain names
//! (RFC 1035's limits, one entry per name) and lists without repeats.

use std::collections::HashMap;
use std::fmt;

use toml::Spanned;

use crate::problems::Problems;

/// The name of entry `i` of `table`, whose names must be unique; `seen`
/// maps each name so far to its entry. `None`, with the problem reported,
/// for a bad name or one already taken.
pub(super) fn unique_name(
    name: &Spanned<String>,
    table: &str,
    i: usize,
    seen: &mut HashMap<String, usize>,
    problems: &mut Problems<'_>,
) -> Option<String> {
    let field = format!("{table}[{i}].name");
    let normalized = match normalize_name(name.get_ref()) {
        Ok(n) => n,
        Err(m) => {
            problems.at(name.span(), field, m);
            return None;
        }
    };
    if let Some(first) = seen.insert(normalized.clone(), i) {
        problems.at(
            name.span(),
            field,
            format!("{normalized} is already defined by {table}[{first}]"),
        );
        return None;
    }
    Some(normalized)
}

/// The values of the list `field` (`service[0].addresses`), each read by
/// `parse`, in order and without repeats; a value that does not parse or
/// is listed twice is reported at its index, and an empty list with the
/// message `if_empty`.
pub(super) fn distinct_values<T: PartialEq + fmt::Display>(
    list: &Spanned<Vec<Spanned<String>>>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    if_empty: &str,
    problems: &mut Problems<'_>,
) -> Vec<T> {
    if list.get_ref().is_empty() {
        problems.at(list.span(), field, if_empty);
    }
    let mut values = Vec::new();
    for (j, item) in list.get_ref().iter().enumerate() {
        match parse(item.get_ref()) {
            Ok(v) if values.contains(&v) => problems.at(
                item.span(),
                format!("{field}[{j}]"),
                format!("{v} is listed twice"),
            ),
            Ok(v) => values.push(v),
            Err(m) => problems.at(item.span(), format!("{field}[{j}]"), m),
        }
    }
    values
}

/// A zone origin: a name like any other, except that the root is allowed.
pub(super) fn normalize_zone(name: &str) -> Result<String, String> {
    if name.trim() == "." {
        return Ok(".".into());
    }
    normalize_name(name)
}

/// Lower-cases and fully qualifies a domain name, checking RFC 1035's limits.
pub(super) fn normalize_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    let fqdn = if trimmed.ends_with('.') {
        trimmed.to_ascii_lowercase()
    } else {
        format!("{}.", trimmed.to_ascii_lowercase())
    };
    if fqdn == "." {
        return Err("the root cannot be used here: write a name like www.example.test.".into());
    }
    if fqdn.len() > 254 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in fqdn.trim_end_matches('.').split('.') {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{name:?} has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        {
            return Err(format!(
                "{name:?}: labels may hold letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(fqdn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(normalize_name("a..b").is_err());
        assert!(normalize_name(&"a".repeat(64)).is_err());
        assert!(normalize_name("a b.test").is_err());
        assert_eq!(normalize_name("A.Test").unwrap(), "a.test.");
    }

    #[test]
    fn only_a_zone_may_be_the_root() {
        assert_eq!(normalize_zone(" . ").unwrap(), ".");
        assert!(normalize_name(".").is_err());
    }
}
