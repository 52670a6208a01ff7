//! Who made a change and why, as a client says it: every generation made
//! through an API records them in its message ("set www to 198.18.0.3 (by
//! alice@ops: release 42)"), so that the history answers "who moved this,
//! and why" without another log. `cutover` sends them (`--by`, default
//! `$USER@host`, and `--reason`); a request without them records nothing
//! more.

/// The request header naming who asks (`user@host`).
pub const BY_HEADER: &str = "x-cutover-by";
/// The request header saying why.
pub const REASON_HEADER: &str = "x-cutover-reason";

/// The longest text kept from each header.
#[cfg(feature = "server")]
const MAX_LEN: usize = 120;

/// What to append to a generation's message for the request's
/// `headers`: ` (by WHO: WHY)`, ` (by WHO)`, ` (WHY)`, or nothing. Text that
/// is not printable is dropped, not echoed into the history.
#[cfg(feature = "server")]
pub fn suffix(headers: &axum::http::HeaderMap) -> String {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.chars().all(|c| !c.is_control()))
            .map(|t| t.chars().take(MAX_LEN).collect::<String>())
    };
    match (text(BY_HEADER), text(REASON_HEADER)) {
        (Some(by), Some(why)) => format!(" (by {by}: {why})"),
        (Some(by), None) => format!(" (by {by})"),
        (None, Some(why)) => format!(" ({why})"),
        (None, None) => String::new(),
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn who_and_why_are_kept_and_garbage_is_not() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(suffix(&h), "");
        h.insert(BY_HEADER, "alice@ops".parse().unwrap());
        assert_eq!(suffix(&h), " (by alice@ops)");
        h.insert(REASON_HEADER, "release 42".parse().unwrap());
        assert_eq!(suffix(&h), " (by alice@ops: release 42)");
        h.insert(BY_HEADER, "x\ty".parse().unwrap());
        assert_eq!(suffix(&h), " (release 42)");
        h.insert(REASON_HEADER, "a".repeat(500).parse().unwrap());
        assert_eq!(suffix(&h).len(), " ()".len() + MAX_LEN);
    }
}
