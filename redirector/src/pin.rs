//! The pin directory: where a redirector's maps and XDP links live in
//! bpffs, so that they outlive the daemon. A restarted or upgraded daemon
//! finds them there and takes over without cutting a connection;
//! `redirector stats` reads the maps; `redirector detach` removes it all.
//!
//! Layout of `DIR` (default `/sys/fs/bpf/cutover/IFACE`):
//! - `maps-vN/NAME`: the maps of layout version N
//!   ([`redirector_common::LAYOUT_VERSION`]);
//! - `link-IFACE`: the XDP link of each interface. A pinned link keeps the
//!   program attached after the process exits; removing the pin detaches
//!   it (once no process holds the link open).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use redirector_common::LAYOUT_VERSION;
use tracing::{info, warn};

use crate::maps::PINNED;

/// Where bpffs is conventionally mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

const MAPS_PREFIX: &str = "maps-v";
const LINK_PREFIX: &str = "link-";

/// The pin directory used when `--pin-dir` is not given.
pub fn default_dir(iface: &str) -> PathBuf {
    Path::new(BPFFS).join("cutover").join(iface)
}

/// Where the maps of this build's layout are pinned under `dir`.
pub fn maps_dir(dir: &Path) -> PathBuf {
    maps_dir_of(dir, LAYOUT_VERSION)
}

fn maps_dir_of(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("{MAPS_PREFIX}{version}"))
}

/// A pin directory on bpffs that no live daemon owns.
#[derive(Debug, Clone)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// Creates `dir`, mounting bpffs on /sys/fs/bpf when that is where it
    /// should be and nothing is mounted. Call [`refuse_if_owned`] first.
    pub fn create(dir: &Path) -> Result<Self> {
        ensure_bpffs(dir)?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the pin directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// An existing pin directory, for `redirector detach`: nothing is
    /// created or mounted.
    pub fn existing(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "{} does not exist: no redirector left anything pinned there (in this mount \
                 namespace)",
                dir.display()
            );
        }
        refuse_if_owned(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn maps_dir(&self) -> PathBuf {
        maps_dir(&self.dir)
    }

    pub fn link_path(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("{LINK_PREFIX}{iface}"))
    }

    /// Whether the maps of this build's layout are pinned (a daemon ran
    /// here before and left its connections running).
    pub fn has_maps(&self) -> bool {
        self.maps_dir().join(PINNED[0]).exists()
    }

    /// The layout versions other than this build's that have maps pinned
    /// here; `0` stands for maps pinned directly in the directory by a
    /// redirector older than layout versions.
    pub fn other_layouts(&self) -> Vec<u32> {
        let mut found = Vec::new();
        if PINNED.iter().any(|name| self.dir.join(name).exists()) {
            found.push(0);
        }
        for name in self.entries() {
            if let Some(v) = name.strip_prefix(MAPS_PREFIX)
                && let Ok(v) = v.parse::<u32>()
                && v != LAYOUT_VERSION
            {
                found.push(v);
            }
        }
        found.sort_unstable();
        found
    }

    /// The interfaces with a pinned link.
    pub fn linked_ifaces(&self) -> Vec<String> {
        let mut ifaces: Vec<String> = self
            .entries()
            .into_iter()
            .filter_map(|name| name.strip_prefix(LINK_PREFIX).map(str::to_string))
            .collect();
        ifaces.sort();
        ifaces
    }

    /// Unpins the maps of layout `version` (0: the unversioned ones). The
    /// maps go away once no program uses them. A versioned directory is
    /// emptied whole: a build of another layout may have pinned maps this
    /// one does not know (and a pinned program array keeps programs, and
    /// their maps, alive).
    pub fn remove_maps(&self, version: u32) {
        if version == 0 {
            for name in PINNED {
                remove_pin(&self.dir.join(name));
            }
            return;
        }
        let dir = maps_dir_of(&self.dir, version);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            remove_pin(&entry.path());
        }
        remove_empty_dir(&dir);
    }

    /// Removes every pin (links first: the program stops before its maps
    /// go) and then the directory itself when it is empty.
    pub fn remove_all(&self) {
        for iface in self.linked_ifaces() {
            remove_pin(&self.link_path(&iface));
        }
        self.remove_maps(LAYOUT_VERSION);
        for version in self.other_layouts() {
            self.remove_maps(version);
        }
        remove_empty_dir(&self.dir);
    }

    fn entries(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}

/// Refuses a directory whose state file names a daemon that still runs.
pub fn refuse_if_owned(dir: &Path) -> Result<()> {
    if let Ok(path) = crate::state::path_for(dir)
        && let Ok(owner) = crate::state::State::read(&path)
        && owner.pid != std::process::id()
        && owner.daemon_alive()
    {
        bail!(
            "{} belongs to the redirector running as pid {} (on {}): stop it first, or pass \
             another --pin-dir",
            dir.display(),
            owner.pid,
            owner.iface
        );
    }
    Ok(())
}

/// Removes one pin; a missing one is no error.
pub fn remove_pin(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "cannot remove a pin"),
    }
}

/// Only an empty directory: one holding anything else is left alone.
fn remove_empty_dir(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
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
