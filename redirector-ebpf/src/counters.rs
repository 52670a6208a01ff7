//! Per-CPU counters: named indexes (`redirector_common::counter`) into one
//! array, one slot of `counter::COUNT` per rule and slot 0 for traffic that
//! matched no rule.

use redirector_common::{MAX_RULES, counter};

use crate::maps::COUNTERS;

/// Adds `n` to counter `idx` of `rule_id`'s slot. An id out of range (a
/// rule removed and its slot reused is still in range) lands in slot 0.
#[inline(always)]
pub fn add(rule_id: u32, idx: u32, n: u64) {
    let slot = if rule_id <= MAX_RULES { rule_id } else { 0 };
    if let Some(c) = COUNTERS.get_ptr_mut(slot * counter::COUNT + idx) {
        // Per-CPU memory: no other writer, a plain add is enough.
        unsafe { *c += n };
    }
}

/// Counts one event.
#[inline(always)]
pub fn inc(rule_id: u32, idx: u32) {
    add(rule_id, idx, 1);
}
