//! The zone journal: each zone's changes made through dnsd (its control
//! API, RFC 2136 updates), one changeset per generation — the records
//! removed and the records added, the model of an IXFR (RFC 1995) — so
//! that a change costs what it changes, not what the zone holds.
//!
//! ```text
//! WORKSPACE/.cutover/
//!   sequence                  the highest generation number a change took
//!   journal/<origin>.jnl      one zone's changesets, oldest first, appended
//! ```
//!
//! A zone's state is its file plus its journal: the zone file's first line
//! may be a *sync header* that dnsd writes (`headed`), naming the
//! generation the file was written at and a hash of the rest of it; when
//! the header is there and the hash matches, the changesets after that
//! generation are applied on top (`Journal::read`). A file without a valid
//! header — written by an operator, or edited below dnsd's header — is the
//! whole zone as it stands: a hand edit wins over the journal, and is kept
//! as a generation of its own at the next commit.
//!
//! Each changeset is one frame, appended and fsynced before the change is
//! acknowledged: `len (u32 LE) | crc32 (u32 LE) | body (JSON) | len`. A
//! crash while appending leaves a torn last frame, which readers ignore
//! and the next writer cuts off: what was not fsynced was never
//! acknowledged. The trailing length lets the newest entry be read from
//! the end without reading the journal.
//!
//! The zone files are rewritten from the journal lazily, by dnsd, and the
//! journal is compacted to a size limit (`Journal::compact`): a changeset
//! is dropped only once a zone file or a checkpoint (`<origin>.<N>.base`, a
//! zone file as dnsd wrote it at generation N) holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::HistoryError;
use crate::durable::{self, PRIVATE_FILE, io, sync_dir};

/// Directory of the journals inside `.cutover/`.
pub(crate) const JOURNAL_DIR: &str = "journal";
const SUFFIX: &str = ".jnl";
const BASE_SUFFIX: &str = ".base";
/// Frames larger than this are taken for garbage (a torn length).
const MAX_FRAME: u32 = 256 << 20;

/// One zone's change: generation `generation` removed `removed` and added
/// `added` (zone-file lines with absolute owner names, as dnsd writes
/// them; the SOA lines carry the serials, from and to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changeset {
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Why ("set www.example.test. A to 2 record(s)").
    pub message: String,
    pub removed: Vec<String>,
    pub added: Vec<String>,
}

/// A zone's journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

/// What a journal holds.
#[derive(Debug, Default)]
pub struct Entries {
    pub changes: Vec<Changeset>,
    /// Bytes of good frames: where a torn last frame, if any, begins.
    pub good_len: u64,
    /// A torn or corrupt frame follows the good ones (a crash while
    /// appending): it was never acknowledged, and is ignored.
    pub torn: bool,
}

impl Journal {
    pub(crate) fn new(history: &Path, origin: &str) -> Self {
        Self {
            path: history
                .join(JOURNAL_DIR)
                .join(format!("{}{SUFFIX}", origin.to_ascii_lowercase())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes (0 when there is none).
    pub fn size(&self) -> u64 {
        fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Every good changeset, oldest first.
    pub fn read(&self) -> Result<Entries, HistoryError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Entries::default()),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let mut entries = Entries::default();
        let mut at = 0usize;
        while at < bytes.len() {
            match frame_at(&bytes, at) {
                Some((change, next)) => {
                    entries.changes.push(change);
                    at = next;
                }
                None => {
                    entries.torn = true;
                    break;
                }
            }
        }
        entries.good_len = at as u64;
        Ok(entries)
    }

    /// The changesets with a generation in `(after, upto]` (`upto` `None`:
    /// every later one), oldest first.
    pub fn between(&self, after: u64, upto: Option<u64>) -> Result<Vec<Changeset>, HistoryError> {
        Ok(self
            .read()?
            .changes
            .into_iter()
            .filter(|c| c.generation > after && upto.is_none_or(|u| c.generation <= u))
            .collect())
    }

    /// The newest changeset's generation, read from the end; a torn end
    /// falls back to reading the whole journal.
    pub fn newest(&self) -> Result<Option<u64>, HistoryError> {
        let tail = || -> std::io::Result<Option<u64>> {
            let mut f = File::open(&self.path)?;
            let len = f.metadata()?.len();
            if len < 4 {
                return Ok(None);
            }
            let mut word = [0u8; 4];
            f.seek(SeekFrom::Start(len - 4))?;
            f.read_exact(&mut word)?;
            let body = u64::from(u32::from_le_bytes(word));
            let Some(start) = len.checked_sub(body + 12) else {
                return Ok(None);
            };
            let mut frame = vec![0u8; (body + 12) as usize];
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut frame)?;
            Ok(frame_at(&frame, 0)
                .filter(|(_, end)| *end == frame.len())
                .map(|(c, _)| c.generation))
        };
        match tail() {
            Ok(Some(n)) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            _ => Ok(self.read()?.changes.last().map(|c| c.generation)),
        }
    }

    /// Appends `change` durably: a torn frame a crash left is cut off
    /// first, and the frame is fsynced before this returns. Only the
    /// history's writer calls it, under the lock.
    pub(crate) fn append(&self, change: &Changeset) -> Result<(), HistoryError> {
        let body = serde_json::to_vec(change).map_err(|e| HistoryError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
        })?;
        let frame = encode(&body);
        let dir = durable::parent_of(&self.path);
        durable::private_dir_all(&dir)?;
        let good = self.read()?;
        let created = !self.path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE)
            .open(&self.path)
            .map_err(io(&self.path))?;
        let write = |file: &mut File| -> std::io::Result<()> {
            if good.torn {
                file.set_len(good.good_len)?;
            }
            file.seek(SeekFrom::Start(good.good_len))?;
            file.write_all(&frame)?;
            file.sync_data()
        };
        if let Err(e) = crate::fault::step("journal", &self.path, || {
            write(&mut file).map_err(io(&self.path))
        }) {
            // A frame cut short by a full disk is not acknowledged: cut
            // it off again, so the journal ends on a good frame.
            let _ = file.set_len(good.good_len);
            let _ = file.sync_data();
            return Err(e);
        }
        if created {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Keeps only the changesets after generation `after`, rewriting the
    /// journal whole (temp file, fsync, rename). Whoever drops them must
    /// hold the zone's state at `after` elsewhere (its file, a checkpoint).
    pub(crate) fn drop_through(&self, after: u64) -> Result<usize, HistoryError> {
        let entries = self.read()?;
        let keep: Vec<&Changeset> = entries
            .changes
            .iter()
            .filter(|c| c.generation > after)
            .collect();
        let dropped = entries.changes.len() - keep.len();
        if dropped == 0 {
            return Ok(0);
        }
        let mut bytes = Vec::new();
        for c in keep {
            let body = serde_json::to_vec(c).map_err(|e| HistoryError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
            })?;
            bytes.extend(encode(&body));
        }
        let temp = durable::prepare_beside(&self.path, &bytes, true)?;
        durable::rename_into_place(&temp, &self.path)?;
        Ok(dropped)
    }

    /// The checkpoint of this zone at generation `n`: its zone file as dnsd
    /// wrote it then.
    pub fn base_path(&self, n: u64) -> PathBuf {
        let stem = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
            .unwrap_or("zone");
        durable::parent_of(&self.path).join(format!("{stem}.{n}{BASE_SUFFIX}"))
    }

    /// The generations of this zone's checkpoints, oldest first.
    pub fn bases(&self) -> Vec<u64> {
        let dir = durable::parent_of(&self.path);
        let Some(stem) = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
        else {
            return Vec::new();
        };
        let prefix = format!("{stem}.");
        let mut out: Vec<u64> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_prefix(&prefix)?
                    .strip_suffix(BASE_SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// The frame of `body`.
fn encode(body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_le_bytes();
    let mut frame = Vec::with_capacity(body.len() + 12);
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    frame.extend_from_slice(body);
    frame.extend_from_slice(&len);
    frame
}

/// The changeset framed at `at`, and where the next frame begins; `None`
/// for a torn or corrupt frame.
fn frame_at(bytes: &[u8], at: usize) -> Option<(Changeset, usize)> {
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    let len = word(at)?;
    if len > MAX_FRAME {
        return None;
    }
    let crc = word(at + 4)?;
    let body = bytes.get(at + 8..at + 8 + len as usize)?;
    let end = at + 12 + len as usize;
    if word(at + 8 + len as usize)? != len || crc32fast::hash(body) != crc {
        return None;
    }
    let change = serde_json::from_slice(body).ok()?;
    Some((change, end))
}

/// How dnsd's sync header begins: a zone-file comment, so that NSD, Knot
/// and an editor read the file as it is.
const HEADER: &str = "; cutover: written from the journal at generation ";

/// The zone file dnsd writes holding the zone at generation `n`: `body`
/// below a first line that names the generation and a hash of the body, so
/// that an edit below it shows (see the module doc).
pub fn headed(n: u64, body: &[u8]) -> Vec<u8> {
    let mut text = format!(
        "{HEADER}{n}, sha256 {} (an edit below this line makes it a hand edit)\n",
        hex(&Sha256::digest(body))
    )
    .into_bytes();
    text.extend_from_slice(body);
    text
}

/// `text` (a zone file, with a sync header or without) headed as holding
/// the zone at generation `n` instead, its body unchanged: for a file that
/// holds the zone whole (a copy, a file written by hand), so that no
/// changeset before `n` replays onto it. A stale header — an edit below it
/// broke its hash — goes too, rather than linger as a comment.
pub fn reheaded(n: u64, text: &[u8]) -> Vec<u8> {
    let body = match text.strip_prefix(HEADER.as_bytes()) {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |eol| &rest[eol + 1..]),
        None => text,
    };
    headed(n, body)
}

/// The generation a zone file was written at by dnsd, if its first line
/// is a sync header that matches the rest of the file.
pub fn synced_at(text: &[u8]) -> Option<u64> {
    let rest = text.strip_prefix(HEADER.as_bytes())?;
    let eol = rest.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&rest[..eol]).ok()?;
    let (number, rest_of_line) = line.split_once(", sha256 ")?;
    let hash = rest_of_line.split(' ').next()?;
    let body = &text[HEADER.len() + eol + 1..];
    (hash == hex(&Sha256::digest(body)))
        .then(|| number.parse().ok())
        .flatten()
}

/// The length of `text`'s sync header line, 0 without a valid one.
fn header_len(text: &[u8]) -> usize {
    if synced_at(text).is_none() {
        return 0;
    }
    text.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// `text` without its sync header, if it has a valid one.
pub fn without_header(text: &[u8]) -> &[u8] {
    &text[header_len(text)..]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u64) -> Changeset {
        Changeset {
            generation: n,
            created_unix: 1,
            message: format!("change {n}"),
            removed: vec![format!("www.example.test. 60 IN A 198.18.0.{n}")],
            added: vec![format!("www.example.test. 60 IN A 198.18.1.{n}")],
        }
    }

    #[test]
    fn changesets_come_back_in_order_and_the_newest_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path(), "Example.Test.");
        assert!(j.path().ends_with("journal/example.test..jnl"));
        assert_eq!(j.newest().unwrap(), None);
        for n in [3, 4, 7] {
            j.append(&change(n)).unwrap();
        }
        let read = j.read().unwrap();
        assert_eq!(read.changes, vec![change(3), change(4), change(7)]);
        assert!(!read.torn);
        assert_eq!(j.newest().unwrap(), Some(7));
        let between: Vec<u64> = j
            .between(3, Some(7))
            .unwrap()
            .iter()
            .map(|c| c.generation)
            .collect();
        assert_eq!(between, [4, 7]);
    }

    #[test]
    fn a_torn_frame_is_ignored_and_cut_off_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path(), "example.test.");
        j.append(&change(1)).unwrap();
        let good = j.size();
        for cut in [1u64, 5, 20] {
            let frame = encode(&serde_json::to_vec(&change(2)).unwrap());
            let mut f = OpenOptions::new().append(true).open(j.path()).unwrap();
            f.write_all(&frame[..frame.len() - cut as usize]).unwrap();
            drop(f);
            let read = j.read().unwrap();
            assert_eq!(read.changes, vec![change(1)]);
            assert!(read.torn && read.good_len == good);
            assert_eq!(j.newest().unwrap(), Some(1));
            fs::OpenOptions::new()
                .write(true)
                .open(j.path())
                .unwrap()
                .set_len(good)
                .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(b"\x05\0\0\0garbage").unwrap();
        drop(f);
        j.append(&change(2)).unwrap();
        let read = j.read().unwrap();
        assert_eq!(read.changes, vec![change(1), change(2)]);
        assert!(!read.torn);
    }

    #[test]
    fn a_flipped_bit_ends_the_journal_there() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path(), "example.test.");
        j.append(&change(1)).unwrap();
        j.append(&change(2)).unwrap();
        let mut bytes = fs::read(j.path()).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        fs::write(j.path(), &bytes).unwrap();
        assert_eq!(j.read().unwrap().changes, vec![change(1)]);
    }

    #[test]
    fn dropping_keeps_the_later_changesets() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path(), "example.test.");
        for n in 1..=5 {
            j.append(&change(n)).unwrap();
        }
        assert_eq!(j.drop_through(3).unwrap(), 3);
        assert_eq!(j.read().unwrap().changes, vec![change(4), change(5)]);
        assert_eq!(j.drop_through(3).unwrap(), 0);
    }

    #[test]
    fn the_sync_header_matches_only_its_own_body() {
        let body = b"$ORIGIN example.test.\nwww 60 IN A 198.18.0.1\n";
        let text = headed(42, body);
        assert_eq!(without_header(&text), body);
        assert_eq!(synced_at(&reheaded(43, &text)), Some(43));
        assert_eq!(synced_at(&text), Some(42));
        let edited = String::from_utf8(text.clone())
            .unwrap()
            .replace("198.18.0.1", "198.18.0.2");
        assert_eq!(synced_at(edited.as_bytes()), None);
        assert_eq!(synced_at(body), None);
        assert_eq!(synced_at(&text[..text.len() - 1]), None);
    }
}
