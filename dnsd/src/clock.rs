//! What several layers ask of the system: the time as TSIG, SOA expiry and
//! the transfer records count it, and message IDs no one can guess.

/// Seconds since the Unix epoch (0 on a clock set before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A message ID no one can guess in advance: std's per-process random
/// hashing keys, drawn afresh for each.
pub fn random_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16
}
