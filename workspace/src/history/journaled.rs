//! The history's side of the zone journal (`journal.rs`): changes appended
//! as generations, numbered in one sequence with the generations of whole
//! files; zone files rewritten from the journal; checkpoints and
//! compaction.
//!
//! A change through the journal is durable when its frame is fsynced
//! (`append_change`); nothing else is written on its path. Generation
//! numbers come from `sequence`, which is raised (durably) before the
//! frame is appended, so that a crash between the two leaves a gap in the
//! numbers, never a number used twice.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Generation, HistoryError, live_target};
use crate::durable::{self, io};
use crate::fault;
use crate::journal::{self, Changeset, JOURNAL_DIR, Journal};
use crate::{Workspace, ZONE_SUFFIX, ZONES_DIR};

const SEQUENCE_FILE: &str = "sequence";
/// Per zone: the generation its journal was compacted through (changesets
/// up to it are gone; its checkpoint holds the zone at it).
const COMPACTED_SUFFIX: &str = ".compacted";

impl Workspace {
    /// The journal of the zone with origin `origin` (lower case, with its
    /// final dot, as in `zones/<origin>.zone`).
    pub fn journal(&self, origin: &str) -> Journal {
        Journal::new(&self.history_dir(), origin)
    }

    /// The origins of the zones that have a journal.
    pub fn journaled_zones(&self) -> Vec<String> {
        let dir = self.history_dir().join(JOURNAL_DIR);
        let mut out: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                name.to_str()?.strip_suffix(".jnl").map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }

    /// Every changeset of every journal, as generations.
    pub(super) fn journal_generations(&self) -> Result<Vec<Generation>, HistoryError> {
        let mut out = Vec::new();
        for origin in self.journaled_zones() {
            for c in self.journal(&origin).read()?.changes {
                out.push(Generation {
                    number: c.generation,
                    created_unix: c.created_unix,
                    message: c.message,
                });
            }
        }
        Ok(out)
    }

    /// The newest changeset of any journal.
    pub(super) fn newest_journaled(&self) -> Result<Option<u64>, HistoryError> {
        let mut newest = None;
        for origin in self.journaled_zones() {
            newest = newest.max(self.journal(&origin).newest()?);
        }
        Ok(newest)
    }

    /// The highest generation number taken so far, by a sealed generation
    /// or a changeset (its reservation): a zone file written now with this
    /// in its sync header has no changeset replayed onto it but later ones.
    pub fn newest_number(&self) -> Result<u64, HistoryError> {
        let path = self.history_dir().join(SEQUENCE_FILE);
        let reserved = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&path)(e)),
        };
        let sealed = self.generation_numbers()?.last().copied().unwrap_or(0);
        Ok(reserved.max(sealed))
    }

    /// Appends a change of zone `origin` — `removed` and `added` records,
    /// as zone-file lines — to its journal as a new generation, durable
    /// when this returns. The caller (dnsd) has checked that the zone stays
    /// valid; this only records.
    pub fn append_change(
        &self,
        origin: &str,
        message: &str,
        removed: Vec<String>,
        added: Vec<String>,
    ) -> Result<Generation, HistoryError> {
        let _lock = self.lock()?;
        self.settle_locked()?;
        self.record_hand_edits()?;
        let number = self.newest_number()? + 1;
        let sequence = self.history_dir().join(SEQUENCE_FILE);
        fault::step("reserve", &sequence, || {
            let temp = durable::prepare_beside(&sequence, format!("{number}\n").as_bytes(), true)?;
            durable::rename_into_place(&temp, &sequence)
        })?;
        let change = Changeset {
            generation: number,
            created_unix: unix_now(),
            message: message.to_string(),
            removed,
            added,
        };
        self.journal(origin).append(&change)?;
        Ok(Generation {
            number,
            created_unix: change.created_unix,
            message: change.message,
        })
    }

    /// Prepares the rewrite of zone `origin`'s live file as `body` headed by
    /// the sync header of generation `at` (the zone's state at `at`, every
    /// changeset of it up to `at` applied): written whole and fsynced under
    /// a temporary name beside the file (beside its target, if the zone
    /// file is a link), without the history's lock, which `install_sync`
    /// takes only to rename it. Not a generation: the zone's state does not
    /// change, only where it is kept.
    pub fn prepare_sync(
        &self,
        origin: &str,
        body: &[u8],
        at: u64,
    ) -> Result<PreparedSync, HistoryError> {
        let rel = self.zone_rel(origin);
        let target = live_target(self.root(), &rel);
        let text = journal::headed(at, body);
        let temp = sync_temp(&target);
        durable::prepare_as(&temp, &target, &text, false)?;
        Ok(PreparedSync { rel, target, temp })
    }

    /// Renames a prepared rewrite into place, under the history's lock,
    /// if `still_current` says the live file is still the one the body was
    /// read from (else a hand edit would be lost: the rewrite is dropped,
    /// and `false` returned).
    pub fn install_sync(
        &self,
        prepared: PreparedSync,
        still_current: impl FnOnce() -> bool,
    ) -> Result<bool, HistoryError> {
        let _lock = self.lock()?;
        self.settle_locked()?;
        if !still_current() {
            let _ = fs::remove_file(&prepared.temp);
            return Ok(false);
        }
        let seen = self.seen_as_live()?;
        fault::step("sync", &prepared.target, || {
            durable::rename_into_place(&prepared.temp, &prepared.target)
        })?;
        if seen {
            self.stamp_one(&prepared.rel, &prepared.target);
        }
        Ok(true)
    }

    /// Takes zone `origin`'s file, written by hand, into the journal's
    /// keeping without changing a byte of what it says: its exact text gets
    /// a sync header naming the newest generation, so that the changes that
    /// follow go to the journal and replay onto it. `still_current` says
    /// whether the file is still the one the served zone was read from;
    /// `None` when it is not (nothing is written). Returns the generation
    /// the header names.
    pub fn adopt_zone_file(
        &self,
        origin: &str,
        still_current: impl FnOnce() -> bool,
    ) -> Result<Option<u64>, HistoryError> {
        let rel = self.zone_rel(origin);
        let _lock = self.lock()?;
        self.settle_locked()?;
        if !still_current() {
            return Ok(None);
        }
        let target = live_target(self.root(), &rel);
        let body = fs::read(&target).map_err(io(&target))?;
        if let Some(at) = journal::synced_at(&body) {
            return Ok(Some(at));
        }
        // The file is an operator's: once it carries a valid header it is
        // no hand edit any more, so it is recorded as one first.
        self.record_hand_edits()?;
        let at = self.newest_number()?;
        let text = journal::reheaded(at, &body);
        drop(body);
        fault::step("sync", &target, || {
            let temp = durable::prepare_as(&sync_temp(&target), &target, &text, false)?;
            durable::rename_into_place(&temp, &target)
        })?;
        self.stamp_one(&rel, &target);
        Ok(Some(at))
    }

    /// With the lock held: hand edits of any file since the history last
    /// saw the live files are recorded as a generation of their own, so
    /// that every generation stays restorable as it was live.
    fn record_hand_edits(&self) -> Result<(), HistoryError> {
        if !self.seen_as_live()? {
            self.import_hand_edits()?;
            self.stamp_live();
        }
        Ok(())
    }

    /// Prepares and installs a rewrite at once (`prepare_sync`).
    pub fn sync_zone(&self, origin: &str, body: &[u8], at: u64) -> Result<PathBuf, HistoryError> {
        let prepared = self.prepare_sync(origin, body, at)?;
        let target = prepared.target.clone();
        self.install_sync(prepared, || true)?;
        Ok(target)
    }

    /// The generation zone `origin`'s journal was compacted through, if it
    /// was: its changesets up to there are gone, and its checkpoint holds
    /// the zone at that generation.
    pub fn compacted_through(&self, origin: &str) -> Option<u64> {
        let path = self.compacted_path(origin);
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Compacts zone `origin`'s journal: `base` is the zone's file at
    /// generation `through` (with its sync header), kept as the zone's
    /// checkpoint; the changesets up to `through` are then dropped, and
    /// older checkpoints with them. Returns how many changesets went. Each
    /// step is durable before the next: a crash leaves the old journal with
    /// the new checkpoint (harmless), or the new journal.
    pub fn compact_journal(
        &self,
        origin: &str,
        base: &[u8],
        through: u64,
    ) -> Result<usize, HistoryError> {
        if journal::synced_at(base) != Some(through) {
            return Err(HistoryError::Io {
                path: self.zone_rel(origin),
                source: std::io::Error::new(
                    ErrorKind::InvalidData,
                    "a checkpoint needs the sync header of its generation",
                ),
            });
        }
        let _lock = self.lock()?;
        let jnl = self.journal(origin);
        let checkpoint = jnl.base_path(through);
        fault::step("compact", &checkpoint, || {
            let temp = durable::prepare_beside(&checkpoint, base, true)?;
            durable::rename_into_place(&temp, &checkpoint)?;
            let marker = self.compacted_path(origin);
            let temp = durable::prepare_beside(&marker, format!("{through}\n").as_bytes(), true)?;
            durable::rename_into_place(&temp, &marker)
        })?;
        let dropped = jnl.drop_through(through)?;
        for older in jnl.bases().into_iter().filter(|b| *b < through) {
            let _ = fs::remove_file(jnl.base_path(older));
        }
        Ok(dropped)
    }

    fn compacted_path(&self, origin: &str) -> PathBuf {
        self.history_dir()
            .join(JOURNAL_DIR)
            .join(format!("{}{COMPACTED_SUFFIX}", origin.to_ascii_lowercase()))
    }

    /// Where zone `origin` at generation `n` can be rebuilt from: a file
    /// (a generation's copy, or the journal's checkpoint) holding the zone
    /// at generation `from`, to which the zone's changesets in `(from, n]`
    /// apply. `None`: nothing holds it any more (compacted away, or the
    /// zone did not exist at `n`).
    pub fn zone_source(&self, origin: &str, n: u64) -> Result<Option<ZoneSource>, HistoryError> {
        let rel = self.zone_rel(origin);
        let mut best: Option<ZoneSource> = None;
        // The newest generation of whole files at or before n holds the
        // zone as its live file was then.
        if let Some(f) = self.generation_numbers()?.into_iter().rfind(|f| *f <= n) {
            let path = self.generation_root(f).join(&rel);
            match fs::read(&path) {
                Ok(text) => {
                    let from = journal::synced_at(&text).unwrap_or(f);
                    best = Some(ZoneSource { path, from });
                }
                // The zone did not exist then.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(&path)(e)),
            }
        }
        let compacted = self.compacted_through(origin);
        if let Some(c) = compacted.filter(|c| *c <= n)
            && best.as_ref().is_none_or(|b| b.from < c)
        {
            best = Some(ZoneSource {
                path: self.journal(origin).base_path(c),
                from: c,
            });
        }
        Ok(best.filter(|b| compacted.is_none_or(|c| b.from >= c)))
    }
}

/// A zone file's rewrite from the journal, written under a temporary name
/// (`prepare_sync`).
#[derive(Debug)]
pub struct PreparedSync {
    rel: PathBuf,
    target: PathBuf,
    temp: PathBuf,
}

/// The temporary name of a zone file's rewrite: hidden, and not the one a
/// commit prepares under.
fn sync_temp(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("zone");
    durable::parent_of(target).join(format!(".{name}.cutover-sync"))
}

/// A file holding a zone at generation `from` (see `zone_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSource {
    pub path: PathBuf,
    pub from: u64,
}

impl Workspace {
    /// The path of zone `origin`'s file relative to the root, as the
    /// operator knows it: the live one's name (`zones/example.test.zone`),
    /// or that name for a zone that is not live.
    pub fn zone_rel(&self, origin: &str) -> PathBuf {
        let live = self.zone_files().ok().and_then(|files| {
            files
                .into_iter()
                .find(|f| f.origin.eq_ignore_ascii_case(origin))
                .and_then(|f| Some(Path::new(ZONES_DIR).join(f.path.file_name()?)))
        });
        live.unwrap_or_else(|| {
            Path::new(ZONES_DIR).join(format!("{}{ZONE_SUFFIX}", origin.trim_end_matches('.')))
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileChange;

    const ZONE: &str = "$ORIGIN example.test.\n@ 60 IN SOA ns1 hostmaster 1 1 1 1 1\n";

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("zones")).unwrap();
        fs::write(dir.path().join("zones/example.test.zone"), ZONE).unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    fn commit(ws: &Workspace, path: &str, content: &str) -> u64 {
        ws.commit(
            &[FileChange {
                path: path.into(),
                content: Some(content.as_bytes().to_vec()),
            }],
            "by hand",
            |_| Ok(()),
        )
        .unwrap()
        .number
    }

    fn assert_no_hand_edits(ws: &Workspace) {
        let generations = ws.generations().unwrap();
        assert!(
            !generations.iter().any(|g| g.message.contains("hand edits")),
            "{generations:?}"
        );
    }

    fn add(ws: &Workspace, n: u8) -> u64 {
        ws.append_change(
            "example.test.",
            &format!("add {n}"),
            vec![],
            vec![format!("www.example.test. 60 IN A 198.18.0.{n}")],
        )
        .unwrap()
        .number
    }

    #[test]
    fn changes_and_commits_share_one_sequence_of_generations() {
        let (_d, ws) = ws();
        let first = commit(&ws, "dnsd.toml", "");
        assert_eq!(first, 2, "1 is the workspace as found");
        assert_eq!(add(&ws, 1), 3);
        assert_eq!(add(&ws, 2), 4);
        assert_eq!(ws.current_generation().unwrap(), Some(4));
        assert_eq!(commit(&ws, "dnsd.toml", "# x\n"), 5);
        assert_eq!(add(&ws, 3), 6);
        let listed: Vec<(u64, String)> = ws
            .generations()
            .unwrap()
            .into_iter()
            .map(|g| (g.number, g.message))
            .collect();
        assert_eq!(listed.len(), 6);
        assert_eq!(listed[2], (3, "add 1".to_string()));
        assert_eq!(ws.generation(6).unwrap().message, "add 3");
        assert!(ws.has_copy(5) && !ws.has_copy(6));
        // The journal's changes are not hand edits of the zone file.
        assert_no_hand_edits(&ws);
    }

    #[test]
    fn a_generation_links_the_files_it_does_not_change_to_the_copy_before() {
        use std::os::unix::fs::MetadataExt;
        let (_d, ws) = ws();
        let a = commit(&ws, "dnsd.toml", "# a\n");
        let b = commit(&ws, "dnsd.toml", "# b\n");
        let inode =
            |n: u64, rel: &str| fs::metadata(ws.generation_root(n).join(rel)).unwrap().ino();
        assert_eq!(
            inode(a, "zones/example.test.zone"),
            inode(b, "zones/example.test.zone")
        );
        assert_ne!(inode(a, "dnsd.toml"), inode(b, "dnsd.toml"));
        assert_eq!(
            ws.generation_files(b).unwrap()[Path::new("dnsd.toml")],
            b"# b\n"
        );
        // A rollback restores the linked copy's content exactly.
        ws.rollback(a, "back").unwrap();
        assert_eq!(fs::read(ws.root().join("dnsd.toml")).unwrap(), b"# a\n");
    }

    #[test]
    fn a_commit_that_reads_only_what_it_changes_still_holds_every_file() {
        let (_d, ws) = ws();
        fs::create_dir(ws.root().join("zones/inc")).unwrap();
        fs::write(ws.root().join("zones/inc/a.inc"), "; a\n").unwrap();
        commit(&ws, "dnsd.toml", "# 1\n");
        // A zone file rewritten from the journal since: its new content is
        // in the next copy, not a link to the old one.
        let n = add(&ws, 1);
        let body = format!("{ZONE}www 60 IN A 198.18.0.1\n");
        let zone = ws.sync_zone("example.test.", body.as_bytes(), n).unwrap();
        let g = commit(&ws, "dnsd.toml", "# 2\n");
        let copy = ws.generation_files(g).unwrap();
        assert_eq!(
            copy[Path::new("zones/example.test.zone")],
            fs::read(&zone).unwrap()
        );
        assert_eq!(copy[Path::new("zones/inc/a.inc")], b"; a\n");
        assert_eq!(copy[Path::new("dnsd.toml")], b"# 2\n");
        // A removal, and a new file.
        let g = ws
            .commit(
                &[
                    FileChange {
                        path: "zones/inc/a.inc".into(),
                        content: None,
                    },
                    FileChange {
                        path: "zones/inc/b.inc".into(),
                        content: Some(b"; b\n".to_vec()),
                    },
                ],
                "swap",
                |_| Ok(()),
            )
            .unwrap()
            .number;
        let copy = ws.generation_files(g).unwrap();
        assert!(!copy.contains_key(Path::new("zones/inc/a.inc")));
        assert_eq!(copy[Path::new("zones/inc/b.inc")], b"; b\n");
        assert!(!ws.root().join("zones/inc/a.inc").exists());
        assert_eq!(ws.live_files().unwrap(), copy);
        // Nothing edited by hand along the way.
        assert_no_hand_edits(&ws);
    }

    #[test]
    fn only_the_newest_generations_of_whole_files_are_kept() {
        let (_d, ws) = ws();
        let keep = "[history]\nkeep_generations = 3\n";
        let mut made = Vec::new();
        for i in 0..6 {
            made.push(commit(&ws, "dnsd.toml", &format!("{keep}# {i}\n")));
        }
        let kept: Vec<u64> = ws.generations().unwrap().iter().map(|g| g.number).collect();
        assert_eq!(kept, made[3..]);
        ws.rollback(made[3], "back").unwrap();
        assert!(
            fs::read_to_string(ws.root().join("dnsd.toml"))
                .unwrap()
                .ends_with("# 3\n")
        );
        assert!(matches!(
            ws.rollback(made[0], "x"),
            Err(HistoryError::NoSuchGeneration(_))
        ));
    }

    #[test]
    fn a_hand_edit_below_a_stale_header_is_its_own_generation_before_it_is_adopted() {
        let (_d, ws) = ws();
        commit(&ws, "dnsd.toml", "");
        // dnsd takes the hand-written file into the journal's keeping and
        // appends a change to it...
        let at = ws
            .adopt_zone_file("example.test.", || true)
            .unwrap()
            .unwrap();
        let n = add(&ws, 1);
        let file = ws.root().join("zones/example.test.zone");
        let adopted = fs::read(&file).unwrap();
        assert_eq!(journal::synced_at(&adopted), Some(at));
        // ...the operator edits the file before it is rewritten, keeping
        // the header line, which no longer matches...
        let edited = [&adopted[..], b"note 60 IN TXT \"hand\"\n"].concat();
        fs::write(&file, &edited).unwrap();
        // ...and dnsd, reading it as written by hand, takes it again.
        ws.adopt_zone_file("example.test.", || true)
            .unwrap()
            .unwrap();
        let generations = ws.generations().unwrap();
        let hand = generations
            .iter()
            .find(|g| g.number > n && g.message.contains("hand edits"))
            .unwrap_or_else(|| panic!("the hand edit is no generation: {generations:?}"));
        assert_eq!(
            ws.generation_files(hand.number).unwrap()[Path::new("zones/example.test.zone")],
            edited
        );
        // The stale header is not kept below the new one.
        let live = fs::read_to_string(&file).unwrap();
        assert_eq!(
            live.matches("; cutover: written from the journal").count(),
            1,
            "{live}"
        );
    }

    #[test]
    fn a_hand_edit_of_any_file_becomes_a_generation_before_a_change_goes_to_the_journal() {
        let (_d, ws) = ws();
        commit(&ws, "dnsd.toml", "");
        let n = add(&ws, 1);
        assert_eq!(add(&ws, 2), n + 1, "nothing edited: no generation between");
        fs::write(ws.root().join("redirector.toml"), "# edited by hand\n").unwrap();
        let m = add(&ws, 3);
        assert_eq!(m, n + 3);
        assert_eq!(
            ws.generation(n + 2).unwrap().message,
            format!("hand edits since generation {}", n + 1)
        );
        assert_eq!(
            ws.generation_files(n + 2).unwrap()[Path::new("redirector.toml")],
            b"# edited by hand\n"
        );
    }

    #[test]
    fn a_zone_file_synced_from_the_journal_is_no_hand_edit_but_an_edit_below_its_header_is() {
        let (_d, ws) = ws();
        commit(&ws, "dnsd.toml", "");
        let n = add(&ws, 1);
        let body = format!("{ZONE}www 60 IN A 198.18.0.1\n");
        let path = ws.sync_zone("example.test.", body.as_bytes(), n).unwrap();
        assert_eq!(ws.current_generation().unwrap(), Some(n));
        let g = commit(&ws, "dnsd.toml", "# 1\n");
        assert_eq!(ws.generation(g - 1).unwrap().message, "add 1");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("198.18.0.1", "198.18.0.9")).unwrap();
        let g = commit(&ws, "dnsd.toml", "# 2\n");
        assert!(ws.generation(g - 1).unwrap().message.contains("hand edits"));
    }

    #[test]
    fn a_rollback_that_needs_the_journal_is_left_to_dnsd() {
        let (_d, ws) = ws();
        let whole = commit(&ws, "dnsd.toml", "");
        let n = add(&ws, 1);
        assert!(matches!(
            ws.rollback(n, "x"),
            Err(HistoryError::NeedsJournal(g)) if g == n
        ));
        // Whole at `whole`: its copy suffices, and later changes are not
        // replayed on top of it once restored.
        let body = format!("{ZONE}www 60 IN A 198.18.0.1\n");
        ws.sync_zone("example.test.", body.as_bytes(), n).unwrap();
        add(&ws, 2);
        // The copy has no sync header: it is the zone whole, as found.
        ws.rollback(whole, "back").unwrap();
        let live = fs::read(ws.root().join("zones/example.test.zone")).unwrap();
        assert_eq!(live, ZONE.as_bytes());
        // A copy written from the journal gets a header past every
        // changeset of its zone.
        let synced = commit(&ws, "dnsd.toml", "# synced\n");
        let c = add(&ws, 3);
        ws.sync_zone("example.test.", body.as_bytes(), c).unwrap();
        let synced_copy = commit(&ws, "dnsd.toml", "# synced copy\n");
        add(&ws, 4);
        ws.rollback(synced_copy, "back again").unwrap();
        let live = fs::read(ws.root().join("zones/example.test.zone")).unwrap();
        assert_eq!(journal::without_header(&live), body.as_bytes());
        let at = journal::synced_at(&live).unwrap();
        assert!(
            ws.journal("example.test.")
                .between(at, None)
                .unwrap()
                .is_empty()
        );
        assert!(synced < at);
    }

    #[test]
    fn a_zone_is_rebuilt_from_the_newest_file_that_holds_it_and_not_past_a_compaction() {
        let (_d, ws) = ws();
        let whole = commit(&ws, "dnsd.toml", "");
        let a = add(&ws, 1);
        let src = ws.zone_source("example.test.", a).unwrap().unwrap();
        assert_eq!(src.from, whole);
        assert!(src.path.starts_with(ws.generation_root(whole)));
        let b = add(&ws, 2);
        let body = format!("{ZONE}www 60 IN A 198.18.0.1\nwww 60 IN A 198.18.0.2\n");
        let base = journal::headed(b, body.as_bytes());
        assert_eq!(ws.compact_journal("example.test.", &base, b).unwrap(), 2);
        let c = add(&ws, 3);
        assert_eq!(ws.compacted_through("example.test."), Some(b));
        let src = ws.zone_source("example.test.", c).unwrap().unwrap();
        assert_eq!((src.from, fs::read(&src.path).unwrap()), (b, base.clone()));
        // Older than the compaction: gone.
        assert_eq!(ws.zone_source("example.test.", a).unwrap(), None);
        assert_eq!(ws.zone_source("example.test.", whole).unwrap(), None);
        assert_eq!(
            ws.journal("example.test.").between(0, None).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_crash_between_the_reservation_and_the_frame_leaves_a_gap_not_a_duplicate() {
        let (_d, ws) = ws();
        commit(&ws, "dnsd.toml", "");
        let n = add(&ws, 1);
        let crashed = std::panic::catch_unwind(|| {
            let _plan = fault::arm("after:reserve:1");
            let _ = add(&ws, 2);
        });
        assert!(crashed.is_err());
        assert_eq!(ws.current_generation().unwrap(), Some(n));
        assert_eq!(add(&ws, 3), n + 2);
        let full = std::panic::catch_unwind(|| {
            let _plan = fault::arm("enospc:journal:1");
            ws.append_change("example.test.", "full", vec![], vec!["x".into()])
        });
        assert!(full.unwrap().is_err());
        let kept = ws.journal("example.test.").read().unwrap();
        assert!(!kept.torn);
        assert_eq!(kept.changes.len(), 2);
    }
}
