//! Makes the running program's maps reachable to `redirector stats`: pins
//! them in a bpffs directory and removes the pins again on a clean exit.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::Ebpf;
use tracing::{info, warn};

use crate::maps::PINNED;

/// Where bpffs is conventionally mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The pin directory used when `--pin-dir` is not given.
pub fn default_dir(iface: &str) -> PathBuf {
    Path::new(BPFFS).join("cutover").join(iface)
}

/// The pinned maps; dropping it unpins them (the maps themselves live on
/// for as long as the program holds them).
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Pins every map of the contract under `dir`, replacing pins a crashed
    /// daemon left behind.
    pub fn create(ebpf: &Ebpf, dir: &Path) -> Result<Self> {
        ensure_bpffs(dir)?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the pin directory {}", dir.display()))?;
        // Pins left by a crashed daemon are replaced; those of a live one
        // are not taken over.
        if let Ok(path) = crate::state::path_for(dir)
            && let Ok(owner) = crate::state::State::read(&path)
            && owner.pid != std::process::id()
            && owner.daemon_alive()
        {
            bail!(
                "{} belongs to the redirector running as pid {} (on {}): pass another --pin-dir",
                dir.display(),
                owner.pid,
                owner.iface
            );
        }
        let pins = Self {
            dir: dir.to_path_buf(),
        };
        pins.remove_files();
        for name in PINNED {
            let map = ebpf
                .map(name)
                .with_context(|| format!("the XDP object has no map {name}"))?;
            let path = dir.join(name);
            map.pin(&path)
                .with_context(|| format!("pinning map {name} at {}", path.display()))?;
        }
        info!(dir = %dir.display(), "maps pinned for `redirector stats`");
        Ok(pins)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn remove_files(&self) {
        for name in PINNED {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(path = %path.display(), error = %e, "cannot remove a pin"),
            }
        }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.remove_files();
        // Only our own, now empty, directory; a busy one is left alone.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Makes sure `dir` would be on a bpf filesystem, mounting bpffs on
/// /sys/fs/bpf when that is where it should be and nothing is mounted yet
/// (as bpftool does).
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .context("the pin directory has no existing ancestor")?;
    if is_bpffs(existing)? {
        return Ok(());
    }
    let bpffs = Path::new(BPFFS);
    if dir.starts_with(bpffs) && bpffs.is_dir() && !is_bpffs(bpffs)? {
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting bpffs on {BPFFS}"))?;
        info!("mounted bpffs on {BPFFS} to pin the maps");
        return Ok(());
    }
    bail!(
        "{} is not on a bpf filesystem: pick a --pin-dir under {BPFFS} or mount one with \
         `mount -t bpf bpf DIR`",
        dir.display()
    )
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let fs =
        nix::sys::statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
