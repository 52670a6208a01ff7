//! Pid files of the daemons serving a workspace, so that an operator tool can
//! tell them to reload (SIGHUP) without knowing how they were started.
//!
//! `WORKSPACE/.cutover/run/<daemon>.pid` holds the pid in decimal (0600, in
//! 0700 directories, as everything under `.cutover/`). A daemon writes it
//! when it starts serving and removes it when it exits cleanly; a stale file
//! (the process is gone) is treated as "not running".

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::durable::{self, PRIVATE_DIR, PRIVATE_FILE};
use crate::{HISTORY_DIR, Workspace};

/// A pid file owned by the running daemon; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Workspace {
    /// Path of the pid file of `daemon` (e.g. "dnsd", "redirector-eth0").
    pub fn pid_path(&self, daemon: &str) -> PathBuf {
        self.root()
            .join(HISTORY_DIR)
            .join("run")
            .join(format!("{daemon}.pid"))
    }

    /// Records this process as `daemon`. Fails if another live process
    /// already holds the pid file: two daemons must not serve one workspace
    /// under the same name.
    pub fn write_pid(&self, daemon: &str) -> std::io::Result<PidFile> {
        let path = self.pid_path(daemon);
        if let Some(pid) = self.running_pid(daemon)?
            && pid != std::process::id()
        {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{daemon} already runs as pid {pid} ({})", path.display()),
            ));
        }
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR)
                .create(dir)?;
            durable::narrow(&self.root().join(HISTORY_DIR));
        }
        let text = format!("{}\n", std::process::id());
        let tmp = path.with_extension("pid.tmp");
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        match written {
            Ok(()) => fs::rename(&tmp, &path)?,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                // A full disk must not stop a DNS server: a stale pid file
                // (its daemon was killed) is rewritten where it is, in the
                // block it already has.
                if e.raw_os_error() != Some(libc::ENOSPC) || rewrite_in_place(&path, &text).is_err()
                {
                    return Err(e);
                }
            }
        }
        Ok(PidFile { path })
    }

    /// The pid of `daemon` if its pid file names a live process that runs
    /// the daemon's program (`dnsd`, `redirector` for "redirector-eth0"): a
    /// daemon killed without removing its file leaves a pid that may go to
    /// any other process, which must not be signalled as the daemon.
    pub fn running_pid(&self, daemon: &str) -> std::io::Result<Option<u32>> {
        let path = self.pid_path(daemon);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return Ok(None);
        };
        let program = daemon.split('-').next().unwrap_or(daemon);
        Ok((pid == std::process::id() || runs_program(pid, program)).then_some(pid))
    }
}

/// Whether process `pid` exists and runs `program` (by /proc/PID/comm, the
/// program's name cut to 15 bytes): a pid a daemon left behind may have
/// gone to any other process since.
pub fn runs_program(pid: u32, program: &str) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.trim_end();
    !comm.is_empty() && program.starts_with(comm)
}

/// Overwrites the existing file `path` with `text`, allocating nothing
/// new for a text as short as a pid.
fn rewrite_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.set_len(text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_another_program_names_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        // A live process that is not dnsd, as a recycled pid would be.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let path = ws.pid_path("dnsd");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", other.id())).unwrap();
        let found = ws.running_pid("dnsd").unwrap();
        // A new dnsd may take the file over.
        let taken = ws.write_pid("dnsd").map(|_| ());
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(found, None);
        assert!(taken.is_ok(), "{taken:?}");
    }

    #[test]
    fn a_pid_file_names_this_process_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.running_pid("dnsd").unwrap(), None);
        let guard = ws.write_pid("dnsd").unwrap();
        assert_eq!(ws.running_pid("dnsd").unwrap(), Some(std::process::id()));
        drop(guard);
        assert_eq!(ws.running_pid("dnsd").unwrap(), None);
    }

    #[test]
    fn a_stale_pid_file_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let path = ws.pid_path("redirector-eth0");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        fs::write(&path, "4999999\n").unwrap();
        assert_eq!(ws.running_pid("redirector-eth0").unwrap(), None);
        ws.write_pid("redirector-eth0").unwrap();
    }

    #[test]
    fn a_live_daemon_keeps_its_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let path = ws.pid_path("dnsd");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A live process whose program is named dnsd.
        let bin = dir.path().join("dnsd");
        fs::copy("/bin/sleep", &bin).unwrap();
        let mut dnsd = std::process::Command::new(&bin).arg("30").spawn().unwrap();
        // Until it has exec'd, the child still carries this thread's name.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !runs_program(dnsd.id(), "dnsd") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        fs::write(&path, format!("{}\n", dnsd.id())).unwrap();
        let err = ws.write_pid("dnsd").map(|_| ());
        let _ = dnsd.kill();
        let _ = dnsd.wait();
        let err = err.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }
}
