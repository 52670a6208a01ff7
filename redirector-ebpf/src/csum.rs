//! Incremental Internet checksum update (RFC 1624, eqn. 3:
//! `HC' = ~(~HC + ~m + m')`). Ones'-complement sums do not depend on byte
//! order, so words are taken in native order straight from the packet and
//! the result is stored back the same way, without byte swaps.
//!
//! Why not `bpf_csum_diff`: the `*_csum_replace` helpers are for skbs only,
//! and a helper call per field costs more than these few adds.

/// A running sum of `~old + new` over the 16-bit words that change.
#[derive(Clone, Copy)]
pub struct Delta(u32);

impl Delta {
    pub const fn new() -> Self {
        Self(0)
    }

    /// A 16-bit word changes from `old` to `new`.
    #[inline(always)]
    pub const fn word(self, old: u16, new: u16) -> Self {
        Self(self.0 + (!old) as u32 + new as u32)
    }

    /// A 32-bit field (two words) changes from `old` to `new`.
    #[inline(always)]
    pub const fn dword(self, old: u32, new: u32) -> Self {
        self.word(old as u16, new as u16)
            .word((old >> 16) as u16, (new >> 16) as u16)
    }

    /// Adds another delta (the address words are shared by the IP header
    /// and the TCP pseudo-header).
    #[inline(always)]
    pub const fn plus(self, other: Delta) -> Self {
        Self(self.0 + other.0)
    }

    /// The checksum field after the change, given the one before it.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        // At most about 40 terms of 0xffff each (IPv6: two addresses of
        // eight words, old and new, plus ports and checksums): no u32
        // overflow; two folds bring any such sum to 16 bits.
        let mut sum = (!check) as u32 + self.0;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }
}
