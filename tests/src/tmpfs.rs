//! A small tmpfs for tests that fill a disk: mounted in a temp dir,
//! unmounted on drop, with a filler file that leaves an exact amount of
//! free space.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::netns::run;

/// A tmpfs mounted at a directory until dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `dir` (made if missing).
    pub fn mount(dir: &Path, bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.to_str().context("tmpfs path is not UTF-8")?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
                path,
            ],
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bytes a writer may still allocate.
    pub fn free(&self) -> Result<u64> {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())?;
        // SAFETY: a NUL-terminated path and a statvfs we own.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error()).context("statvfs");
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Takes all the free space but `bytes` with a file of its own,
    /// removed when the returned guard drops.
    pub fn leave_free(&self, bytes: u64) -> Result<Filler> {
        let path = self.dir.join("filler");
        let free = self.free()?;
        if free < bytes {
            bail!("only {free} bytes are free, {bytes} asked for");
        }
        let file = fs::File::create(&path)?;
        let len = free - bytes;
        if len > 0 {
            // SAFETY: a file descriptor we own.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("fallocate");
            }
        }
        let left = self.free()?;
        if left != bytes {
            bail!("{left} bytes left free, not {bytes}");
        }
        Ok(Filler { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The file that fills a tmpfs; removed on drop.
pub struct Filler {
    path: PathBuf,
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
