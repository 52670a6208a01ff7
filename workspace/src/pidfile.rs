//! Pid files of the daemons serving a workspace, so that an operator tool can
//! tell them to reload (SIGHUP) without knowing how they were started.
//!
//! `WORKSPACE/.cutover/run/<daemon>.pid` holds the pid in decimal. A daemon
//! writes it when it starts serving and removes it when it exits cleanly; a
//! stale file (the process is gone) is treated as "not running".

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

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
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("pid.tmp");
        fs::write(&tmp, format!("{}\n", std::process::id()))?;
        fs::rename(&tmp, &path)?;
        Ok(PidFile { path })
    }

    /// The pid of `daemon` if its pid file names a live process.
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
        Ok(PathBuf::from(format!("/proc/{pid}"))
            .exists()
            .then_some(pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        fs::write(&path, "1\n").unwrap(); // init is always alive
        let err = ws.write_pid("dnsd").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }
}
