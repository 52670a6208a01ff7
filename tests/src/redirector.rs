//! The redirector daemon on a test host: its maps pinned on a private bpffs
//! (see `bpffs`), its log in a file a failing test shows, and started only
//! when its rules are in the kernel.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::bins;
use crate::netns::Netns;
use crate::process::{Daemon, wait_until};

/// A running `redirector run`; killed when dropped.
pub struct Redirector {
    daemon: Option<Daemon>,
    log_path: PathBuf,
}

impl Redirector {
    /// Runs the redirector in `host` on `ifaces` for `workspace`, pinning
    /// its maps under `pins` and logging to `log_dir/redirector.log`;
    /// `args` are extra `redirector run` arguments (the API is off unless
    /// they ask for it). Returns once the maps are pinned.
    pub fn start(
        host: &Netns,
        ifaces: &[&str],
        workspace: &Path,
        pins: &Path,
        log_dir: &Path,
        args: &[&str],
    ) -> Result<Self> {
        Self::start_wrapped(&[], host, ifaces, workspace, pins, log_dir, args)
    }

    /// [`Redirector::start`], run by `wrapper` (`setpriv --reuid=...`) if
    /// not empty.
    pub fn start_wrapped(
        wrapper: &[&str],
        host: &Netns,
        ifaces: &[&str],
        workspace: &Path,
        pins: &Path,
        log_dir: &Path,
        args: &[&str],
    ) -> Result<Self> {
        let log_path = log_dir.join("redirector.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = host.command(program);
                cmd.args(rest).arg(bins::path("redirector"));
                cmd
            }
            None => host.command(bins::path("redirector")),
        };
        cmd.arg("run");
        for iface in ifaces {
            cmd.args(["--iface", iface]);
        }
        if !args.contains(&"--api") {
            cmd.arg("--no-api");
        }
        cmd.args(args)
            .args(["--gc-interval", "1", "--workspace"])
            .arg(workspace)
            .arg("--pin-dir")
            .arg(pins)
            // The program's own records of rare events (target `redirector`,
            // debug level) help explain a failing test.
            .env("RUST_LOG", "info,redirector=debug")
            .stdout(Stdio::null())
            .stderr(log);
        let mut me = Self {
            daemon: Some(Daemon::spawn("redirector", cmd)?),
            log_path,
        };
        // Not the pins: a daemon that takes over finds them already there.
        if !wait_until(Duration::from_secs(20), || {
            me.log().contains("redirector running") || me.has_exited()
        }) || me.has_exited()
        {
            bail!("the redirector did not come up; log:\n{}", me.log());
        }
        me.assert_running()?;
        Ok(me)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn daemon(&self) -> Result<&Daemon> {
        self.daemon.as_ref().context("the redirector was stopped")
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        self.daemon()?.signal(signal)
    }

    fn has_exited(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_none_or(|d| d.assert_running().is_err())
    }

    /// Fails, with the log, if the daemon has exited.
    pub fn assert_running(&mut self) -> Result<()> {
        let log = self.log();
        self.daemon
            .as_mut()
            .context("the redirector was stopped")?
            .assert_running()
            .with_context(|| format!("log:\n{log}"))
    }

    /// Waits for the daemon to exit on its own; returns how it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<String> {
        let daemon = self.daemon.as_mut().context("the redirector was stopped")?;
        let mut exit = None;
        wait_until(timeout, || {
            // The harness reports an exit as an error naming the status.
            exit = daemon.assert_running().err().map(|e| e.to_string());
            exit.is_some()
        });
        exit.with_context(|| format!("the redirector still runs after {timeout:?}"))
    }

    /// SIGKILL: a crash, as far as the daemon can tell.
    pub fn kill(&mut self) -> Result<()> {
        self.daemon
            .take()
            .context("the redirector was stopped")?
            .kill();
        Ok(())
    }

    /// SIGTERM; fails unless the daemon exits 0.
    pub fn stop(&mut self) -> Result<()> {
        let daemon = self.daemon.take().context("the redirector was stopped")?;
        let clean = daemon.stop(Duration::from_secs(10))?;
        ensure!(
            clean,
            "redirector exit status on SIGTERM; log:\n{}",
            self.log()
        );
        Ok(())
    }
}
