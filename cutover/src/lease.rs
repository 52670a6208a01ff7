//! One writer per service: the lease a running `cutover migrate` or
//! `cutover rollback` holds on a service while it changes it.
//!
//! The lease is a small TOML file next to the migration record
//! (`www.example.test.lease` beside `www.example.test.toml`) naming the
//! command, its pid, user@host and until when it holds. Decisions:
//!
//! 1. A command takes the lease before it changes anything and gives it up
//!    when it ends (the file is removed); a killed command leaves it behind.
//! 2. A lease is live until its `expires` time, which its holder pushes
//!    forward every time it looks at the service (at least every poll); one
//!    held by a process of this host that no longer runs is dead at once,
//!    so that a Ctrl-C'd migrate resumes without ceremony.
//! 3. A live lease is taken over only with `--force`, except that a
//!    rollback takes over a running migrate's: a rollback is how an
//!    operator stops a migration, and it must not wait for one that drains
//!    for a day.
//! 4. The holder checks, before every change, that the lease is still its
//!    own and that the record is still what it last wrote. If not, it stops
//!    without changing anything more: a migrate never undoes a rollback.
//!
//! A takeover lands between two of the holder's checks, so the holder may
//! finish the one API call it is in the middle of; a rollback therefore
//! waits for a migrate it took over from to exit before it changes
//! anything itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::migration::now;

/// What the lease file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `migrate` or `rollback`.
    pub command: String,
    pub pid: u32,
    /// user@host.
    pub by: String,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
    pub expires: u64,
    /// Tells two holders apart even if a pid is reused.
    pub token: String,
}

impl Holder {
    /// Whether the holder still holds: not expired, and, on this host, its
    /// process still runs.
    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires && (self.host != this_host() || process_runs(self.pid))
    }

    pub fn describe(&self) -> String {
        format!(
            "`cutover {}` (pid {}, {}, since {})",
            self.command,
            self.pid,
            self.by,
            crate::migration::clock(self.since)
        )
    }
}

/// A lease this process holds; given up when dropped.
pub struct Lease {
    path: PathBuf,
    holder: Holder,
    /// How long a renewal holds.
    hold: Duration,
    /// The holder it took over from, if that one was live.
    pub took_over: Option<Holder>,
}

impl Lease {
    fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{}lease", crate::api::fqdn(name)))
    }

    /// The lease on `name`, if any.
    pub fn read(dir: &Path, name: &str) -> Result<Option<Holder>> {
        let path = Self::path(dir, name);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .with_context(|| format!("{}: not a lease", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Takes the lease on `name` for `command`, renewed at least every
    /// `hold / 3`. A live holder is taken over only with `force`, or when
    /// its command is one of `cancels`.
    pub fn take(
        dir: &Path,
        name: &str,
        command: &str,
        hold: Duration,
        force: bool,
        cancels: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let t = now();
        let took_over = match Self::read(dir, name)? {
            Some(h) if h.is_live(t) => {
                if !force && !cancels.contains(&h.command.as_str()) {
                    bail!(
                        "{} is being changed by {}: wait for it to finish, or take over with --force",
                        crate::api::fqdn(name),
                        h.describe()
                    );
                }
                Some(h)
            }
            _ => None,
        };
        let holder = Holder {
            command: command.to_string(),
            pid: std::process::id(),
            by: format!("{}@{}", user(), this_host()),
            host: this_host(),
            since: t,
            expires: t + hold.as_secs().max(1),
            token: format!("{}-{}", std::process::id(), nanos()),
        };
        let lease = Self {
            path: Self::path(dir, name),
            holder,
            hold,
            took_over,
        };
        lease.write()?;
        Ok(lease)
    }

    fn write(&self) -> Result<()> {
        let tmp = self.path.with_extension("lease-tmp");
        let text = toml::to_string(&self.holder).context("encoding the lease")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))
    }

    /// Fails, naming the new holder, if the lease is no longer this
    /// process's; otherwise pushes its expiry forward.
    pub fn renew(&mut self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches("lease").to_string())
            .unwrap_or_default();
        match Self::read(dir, &name)? {
            Some(h) if h.token == self.holder.token => {}
            Some(h) => bail!("{} took over {name}", h.describe()),
            None => bail!("the lease on {name} was removed ({})", self.path.display()),
        }
        self.holder.expires = now() + self.hold.as_secs().max(1);
        self.write()
    }

    /// Waits (up to `limit`) for the process this lease was taken from to
    /// exit, when it ran on this host.
    pub fn wait_for_previous(&self, limit: Duration) -> bool {
        let Some(h) = &self.took_over else {
            return true;
        };
        if h.host != this_host() {
            return true;
        }
        let deadline = std::time::Instant::now() + limit;
        while process_runs(h.pid) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches("lease").to_string())
            .unwrap_or_default();
        if let Ok(Some(h)) = Self::read(&dir, &name)
            && h.token == self.holder.token
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether a process with this pid runs on this host (in this pid
/// namespace). A zombie (exited, not yet reaped by its parent) does not.
fn process_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lease_is_taken_over_only_with_force_or_by_a_cancelling_command() {
        let dir = tempfile::tempdir().unwrap();
        let hold = Duration::from_secs(30);
        let mut first =
            Lease::take(dir.path(), "www.example.test", "migrate", hold, false, &[]).unwrap();
        let e = Lease::take(dir.path(), "www.example.test", "migrate", hold, false, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("cutover migrate") && e.contains("--force"),
            "{e}"
        );
        let second = Lease::take(
            dir.path(),
            "www.example.test",
            "rollback",
            hold,
            false,
            &["migrate"],
        )
        .unwrap();
        assert!(second.took_over.is_some());
        let e = first.renew().unwrap_err().to_string();
        assert!(e.contains("cutover rollback"), "{e}");
        drop(first);
        // the loser's drop leaves the winner's lease alone
        assert!(
            Lease::read(dir.path(), "www.example.test")
                .unwrap()
                .is_some()
        );
        drop(second);
        assert!(
            Lease::read(dir.path(), "www.example.test")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_lease_whose_process_is_gone_is_dead() {
        let h = Holder {
            command: "migrate".into(),
            pid: u32::MAX - 1,
            by: "x@y".into(),
            host: this_host(),
            since: 0,
            expires: u64::MAX,
            token: "t".into(),
        };
        assert!(!h.is_live(now()));
        let elsewhere = Holder {
            host: "elsewhere".into(),
            ..h.clone()
        };
        assert!(elsewhere.is_live(now()));
        assert!(!elsewhere.is_live(u64::MAX));
    }
}
