//! A daemon's lifecycle as a service manager sees it: ready, reloading,
//! reloaded, stopping (systemd's `Type=notify` protocol, a no-op without
//! `NOTIFY_SOCKET`), the watchdog's keep-alives, and the outcome of each
//! SIGHUP reload recorded in the workspace so that `dnsd reload` and
//! `redirector reload` (systemd's `ExecReload=`) return only once the
//! reload they asked for is done, and fail when it was refused.
//!
//! systemd 253's `Type=notify-reload` would wait on `RELOADING=1` and
//! `READY=1` by itself; Debian 12 has 252, where a reload job ends when
//! `ExecReload=` exits. Both are served: the messages are sent, and the
//! reload command waits.
//!
//! The record is `WORKSPACE/.cutover/run/<daemon>.reload`: the number of
//! reloads started, the number of the last one finished, its result, and
//! its message. A reload asked for after reading "started = n" is done
//! once "finished >= n + 1": that reload began after the request.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cutover_workspace::Workspace;
use sd_notify::NotifyState;
use tracing::debug;

/// What one daemon tells its service manager, and records of its reloads.
#[derive(Debug)]
pub struct Lifecycle {
    record: PathBuf,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    started: u64,
    finished: u64,
    ok: bool,
    message: String,
}

impl Counts {
    fn parse(text: &str) -> Option<Self> {
        let (first, message) = text.split_once('\n').unwrap_or((text, ""));
        let mut words = first.split_whitespace();
        let started = words.next()?.parse().ok()?;
        let finished = words.next()?.parse().ok()?;
        let ok = words.next()? == "ok";
        Some(Self {
            started,
            finished,
            ok,
            message: message.trim_end().to_string(),
        })
    }

    fn text(&self) -> String {
        let result = if self.ok { "ok" } else { "failed" };
        format!(
            "{} {} {result}\n{}\n",
            self.started, self.finished, self.message
        )
    }
}

/// A reload in progress: its number, handed back to [`Lifecycle::reloaded`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

fn record_path(ws: &Workspace, daemon: &str) -> PathBuf {
    ws.pid_path(daemon).with_extension("reload")
}

impl Lifecycle {
    /// For `daemon` ("dnsd", "redirector-eth0", as its pid file), whose
    /// pid file exists already (the record sits beside it).
    pub fn new(ws: &Workspace, daemon: &str) -> Self {
        let me = Self {
            record: record_path(ws, daemon),
            counts: Mutex::new(Counts {
                ok: true,
                ..Counts::default()
            }),
        };
        me.write(&Counts {
            ok: true,
            ..Counts::default()
        });
        me
    }

    /// Serving: the sockets are bound, the program attached, the first
    /// workspace in force.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A SIGHUP reload begins.
    pub fn reloading(&self) -> Ticket {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.started += 1;
        let ticket = Ticket(counts.started);
        self.write(&counts);
        drop(counts);
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        send(&states);
        ticket
    }

    /// The reload `ticket` ended: in force, or refused with `why` (the
    /// previous state serving on).
    pub fn reloaded(&self, ticket: Ticket, result: Result<(), String>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        // Reloads may end out of the order they began in: the record keeps
        // the newest one's result.
        if ticket.0 < counts.finished {
            return;
        }
        counts.finished = ticket.0;
        let status = match &result {
            Ok(()) => "serving; the last reload is in force".to_string(),
            Err(why) => format!("serving; the last reload was refused: {}", first_line(why)),
        };
        counts.ok = result.is_ok();
        counts.message = result.err().unwrap_or_default();
        self.write(&counts);
        drop(counts);
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// Stopping on SIGTERM or SIGINT.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    fn write(&self, counts: &Counts) {
        let tmp = self.record.with_extension("reload.tmp");
        // Private, as everything under `.cutover/`.
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(counts.text().as_bytes()))
            .and_then(|()| fs::rename(&tmp, &self.record));
        if let Err(e) = written {
            debug!(path = %self.record.display(), %e, "recording a reload");
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.record);
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(%e, "notifying the service manager");
    }
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for
/// (`WatchdogSec=`), for as long as the runtime it runs on makes progress:
/// a wedged runtime stops the keep-alives and systemd restarts the daemon.
pub async fn keep_alive() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

/// `dnsd reload` / `redirector reload`: sends SIGHUP to `daemon` of
/// workspace `root` and waits until a reload that began after it is done.
/// `Ok` with the reload in force; `Err` with the daemon's reason when it
/// was refused, or when the daemon does not run or does not finish within
/// `timeout`.
pub fn reload_and_wait(root: &Path, daemon: &str, timeout: Duration) -> Result<()> {
    let ws = Workspace::open(root).with_context(|| format!("opening {}", root.display()))?;
    let pid = ws
        .running_pid(daemon)
        .with_context(|| format!("reading {}", ws.pid_path(daemon).display()))?
        .with_context(|| {
            format!(
                "{daemon} does not run for {} (no live pid in {})",
                root.display(),
                ws.pid_path(daemon).display()
            )
        })?;
    let record = record_path(&ws, daemon);
    let read = || {
        fs::read_to_string(&record)
            .ok()
            .and_then(|t| Counts::parse(&t))
    };
    let before = read().with_context(|| {
        format!(
            "{daemon} (pid {pid}) keeps no reload record at {}: is it older than this command?",
            record.display()
        )
    })?;
    // SAFETY: kill(2) with a pid read from the daemon's own pid file.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
        bail!(
            "sending SIGHUP to {daemon} (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(now) = read()
            && now.finished > before.started
        {
            if now.ok {
                return Ok(());
            }
            bail!(
                "{daemon} refused the reload; the previous state keeps serving:\n{}",
                now.message
            );
        }
        if ws.running_pid(daemon).ok().flatten() != Some(pid) {
            bail!("{daemon} (pid {pid}) exited during the reload");
        }
        if Instant::now() >= deadline {
            bail!("{daemon} (pid {pid}) did not finish the reload within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_reads_back_as_written() {
        let counts = Counts {
            started: 7,
            finished: 6,
            ok: false,
            message: "dnsd.toml:3: nope\nzones/a.zone:1: nope".into(),
        };
        assert_eq!(Counts::parse(&counts.text()), Some(counts));
        assert_eq!(Counts::parse("garbage"), None);
    }
}
