//! A private bpffs instance for a test's (or the demo's) pinned maps. The
//! daemons under test run through `ip netns exec`, which remounts /sys, so
//! /sys/fs/bpf is not shared between two such processes; a bpffs mounted in
//! a temp dir of the host's mount namespace is.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::netns::run;

/// A bpffs mounted at a directory until dropped.
pub struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    pub fn mount(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.to_str().context("bpffs path is not UTF-8")?;
        run("mount", &["-t", "bpf", "bpf", path])?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory to give the redirector as `--pin-dir`.
    pub fn pins(&self) -> PathBuf {
        self.dir.join("redirector")
    }

    /// Where the redirector pins its maps under `pins()`.
    pub fn maps(&self) -> PathBuf {
        self.pins()
            .join(format!("maps-v{}", redirector_common::LAYOUT_VERSION))
    }

    /// Where the redirector pins its XDP link to `iface`.
    pub fn link(&self, iface: &str) -> PathBuf {
        self.pins().join(format!("link-{iface}"))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
