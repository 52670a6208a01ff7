//! Signed updates that may not be played again: each MAC dnsd accepts is
//! remembered until its signature's time window has passed — after that
//! the time check refuses it anyway — and a repeat of one (the same bytes,
//! or with another message ID, which the MAC does not cover) gets BADTIME
//! (RFC 8945 §5.2.3). The MACs are written to `.cutover/tsig-accepted` and
//! fsynced before the update is applied, so that a restart keeps them: a
//! captured update cannot be replayed after one either.
//!
//! Only repeats are refused, not older signatures: an update signed by a
//! clock ahead of the others (within the fudge) locks nobody out. The
//! window a client may claim is capped (`MAX_FUDGE`), so that no signature
//! stays playable, or remembered, for long.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hickory_proto::rr::Name;

/// The longest time window a request may claim, in seconds, whatever its
/// fudge says: RFC 8945 §10 recommends 300.
pub const MAX_FUDGE: u64 = 300;

/// The MACs accepted and not yet expired, and the file that keeps them.
pub struct ReplayGuard {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Key name and MAC, hex → the Unix time after which it cannot pass
    /// the time check any more.
    seen: HashMap<String, u64>,
    /// Lines in the file, for when to rewrite it without expired ones.
    lines: usize,
    file: Option<File>,
}

/// What checking a request did.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// New: remembered, durably.
    Fresh,
    /// Accepted before: a replay.
    Repeat,
}

impl ReplayGuard {
    /// The guard kept at `path`, with what it holds that has not expired
    /// at `now`. A file that cannot be read is started afresh (logged by
    /// the caller through the error of the next write, if any).
    pub fn open(path: PathBuf, now: u64) -> Self {
        let mut state = State::default();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                state.lines += 1;
                let mut parts = line.split_whitespace();
                if let (Some(id), Some(until)) = (parts.next(), parts.next())
                    && let Ok(until) = until.parse::<u64>()
                    && until >= now
                {
                    state.seen.insert(id.to_string(), until);
                }
            }
        }
        Self {
            path,
            state: Mutex::new(state),
        }
    }

    /// Checks a verified request signed by `key` with `mac` at `signed`
    /// (Unix time) with window `fudge`, at `now`: a repeat, or fresh — and
    /// then remembered on disk before this returns (an error: it could not
    /// be, and the request must not be applied).
    pub fn check(
        &self,
        key: &Name,
        mac: &[u8],
        signed: u64,
        fudge: u64,
        now: u64,
    ) -> std::io::Result<Seen> {
        let id = format!("{}/{}", key.to_lowercase(), hex(mac));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen.retain(|_, until| *until >= now);
        if state.seen.contains_key(&id) {
            return Ok(Seen::Repeat);
        }
        let until = signed.saturating_add(fudge.min(MAX_FUDGE));
        if state.lines > 2 * state.seen.len() + 1024 {
            self.rewrite(&mut state)?;
        }
        let file = match &mut state.file {
            Some(f) => f,
            None => state.file.insert(open_append(&self.path)?),
        };
        file.write_all(format!("{id} {until}\n").as_bytes())?;
        file.sync_data()?;
        state.lines += 1;
        state.seen.insert(id, until);
        Ok(Seen::Fresh)
    }

    /// Rewrites the file with the unexpired MACs only.
    fn rewrite(&self, state: &mut State) -> std::io::Result<()> {
        let temp = self.path.with_extension("tmp");
        let mut text = String::new();
        for (id, until) in &state.seen {
            text.push_str(&format!("{id} {until}\n"));
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        state.file = None;
        state.lines = state.seen.len();
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Name {
        Name::from_ascii("ops-key.").unwrap()
    }

    #[test]
    fn a_mac_is_accepted_once_and_older_signatures_are_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let guard = ReplayGuard::open(dir.path().join("seen"), 1000);
        assert_eq!(
            guard.check(&key(), b"a", 1000, 300, 1000).unwrap(),
            Seen::Fresh
        );
        assert_eq!(
            guard.check(&key(), b"a", 1000, 300, 1001).unwrap(),
            Seen::Repeat
        );
        // Signed by a clock 250 s ahead, then by a correct one: both pass.
        assert_eq!(
            guard.check(&key(), b"b", 1250, 300, 1002).unwrap(),
            Seen::Fresh
        );
        assert_eq!(
            guard.check(&key(), b"c", 1002, 300, 1002).unwrap(),
            Seen::Fresh
        );
        // Another key's identical MAC is another request.
        let other = Name::from_ascii("other.").unwrap();
        assert_eq!(
            guard.check(&other, b"a", 1000, 300, 1003).unwrap(),
            Seen::Fresh
        );
    }

    #[test]
    fn a_restart_keeps_what_has_not_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let guard = ReplayGuard::open(path.clone(), 1000);
        guard.check(&key(), b"a", 1000, 300, 1000).unwrap();
        // A fudge of 65535 is remembered for the capped window only.
        guard.check(&key(), b"b", 1000, 65535, 1000).unwrap();
        drop(guard);
        let guard = ReplayGuard::open(path.clone(), 1200);
        assert_eq!(
            guard.check(&key(), b"a", 1000, 300, 1200).unwrap(),
            Seen::Repeat
        );
        assert_eq!(
            guard.check(&key(), b"b", 1000, 65535, 1200).unwrap(),
            Seen::Repeat
        );
        let guard = ReplayGuard::open(path, 1301);
        assert_eq!(
            guard.check(&key(), b"b", 1000, 65535, 1301).unwrap(),
            Seen::Fresh
        );
    }

    #[test]
    fn the_file_is_rewritten_without_what_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let guard = ReplayGuard::open(path.clone(), 0);
        for i in 0..3000u64 {
            let mac = i.to_be_bytes();
            guard.check(&key(), &mac, i, 1, i).unwrap();
        }
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 2000, "{lines} lines");
    }
}
