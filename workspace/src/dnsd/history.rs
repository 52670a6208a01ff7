//! The `[history]` section of `dnsd.toml`: how dnsd keeps the zones'
//! journal (`journal.rs` in this crate).
//!
//! ```toml
//! [history]
//! zonefile_sync = 10                # seconds after a change until the zone file is rewritten from the journal
//! journal_max_bytes = 16777216      # a zone's journal is compacted to half of this when it grows past it
//! keep_generations = 1000           # copies of whole files kept (config changes, hand edits, rollbacks)
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::problems::Problems;

/// The `[history]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Seconds after a change before its zone file is rewritten from the
    /// journal (changes meanwhile are written together), off the change's
    /// path; as Knot's `zonefile-sync`, 0 is "right after each change".
    /// Rewriting costs what the zone holds, so the default lets a burst of
    /// changes share one.
    pub zonefile_sync: u64,
    /// A zone's journal is compacted when it grows past this many bytes,
    /// down to about half: older changes are folded into a checkpoint and
    /// can no longer be rolled back to one by one.
    pub journal_max_bytes: u64,
    /// Generations of whole files (config changes, hand edits, rollbacks;
    /// each a directory whose unchanged files are links) kept; older ones
    /// are removed and can no longer be rolled back to.
    pub keep_generations: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            zonefile_sync: 10,
            journal_max_bytes: 16 << 20,
            keep_generations: 1000,
        }
    }
}

/// The section as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    zonefile_sync: Option<u64>,
    journal_max_bytes: Option<Spanned<u64>>,
    keep_generations: Option<Spanned<u64>>,
}

/// Below this a journal could not hold a few changes of a large RRset.
const MIN_JOURNAL: u64 = 64 << 10;

pub(super) fn parse(raw: RawHistory, problems: &mut Problems<'_>) -> HistoryConfig {
    let defaults = HistoryConfig::default();
    let journal_max_bytes = match raw.journal_max_bytes {
        Some(max) if *max.get_ref() < MIN_JOURNAL => {
            problems.at(
                max.span(),
                "history.journal_max_bytes",
                format!("at least {MIN_JOURNAL} bytes (64 KiB)"),
            );
            defaults.journal_max_bytes
        }
        Some(max) => *max.get_ref(),
        None => defaults.journal_max_bytes,
    };
    let keep_generations = match raw.keep_generations {
        Some(keep) if *keep.get_ref() < 2 => {
            problems.at(
                keep.span(),
                "history.keep_generations",
                "at least 2: the generation in force and one to roll back to",
            );
            defaults.keep_generations
        }
        Some(keep) => *keep.get_ref(),
        None => defaults.keep_generations,
    };
    HistoryConfig {
        zonefile_sync: raw.zonefile_sync.unwrap_or(defaults.zonefile_sync),
        journal_max_bytes,
        keep_generations,
    }
}

#[cfg(test)]
mod tests {
    use crate::dnsd::tests::{only_error, parse_str};

    #[test]
    fn the_defaults_and_a_setting() {
        let cfg = parse_str("").unwrap();
        assert_eq!(cfg.history.zonefile_sync, 10);
        assert_eq!(cfg.history.journal_max_bytes, 16 << 20);
        assert_eq!(cfg.history.keep_generations, 1000);
        let cfg =
            parse_str("[history]\nzonefile_sync = 30\njournal_max_bytes = 1048576\n").unwrap();
        assert_eq!(
            (cfg.history.zonefile_sync, cfg.history.journal_max_bytes),
            (30, 1 << 20)
        );
    }

    #[test]
    fn keeping_fewer_than_two_generations_is_refused() {
        let (line, field, _) = only_error("[history]\nkeep_generations = 1\n");
        assert_eq!((line, field.as_str()), (2, "history.keep_generations"));
    }

    #[test]
    fn a_tiny_journal_is_refused() {
        let (line, field, message) = only_error("[history]\njournal_max_bytes = 100\n");
        assert_eq!((line, field.as_str()), (2, "history.journal_max_bytes"));
        assert!(message.contains("64 KiB"), "{message}");
    }
}
