//! The signals that drive both daemons' lifecycle, turned into events:
//! SIGHUP reloads the workspace, SIGINT and SIGTERM stop the daemon
//! cleanly. One type, so that dnsd and the redirector answer signals the
//! same way.

use anyhow::{Context as _, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Reload,
    /// Detach and exit 0; names the signal for the log.
    Shutdown(&'static str),
}

/// The daemon's signal handlers, installed once at start so that a signal
/// that arrives during a reload or a collection pass waits instead of
/// killing the process.
pub struct Signals {
    hup: Signal,
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The next event; cancel-safe, for use in `select!`.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.hup.recv() => Event::Reload,
            _ = self.int.recv() => Event::Shutdown("SIGINT"),
            _ = self.term.recv() => Event::Shutdown("SIGTERM"),
        }
    }
}
