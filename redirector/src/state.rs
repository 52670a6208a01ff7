//! The daemon's small public state file: which rule owns which counter slot,
//! and what garbage collection removed. bpffs holds only maps, so this JSON
//! file lives in /run, at a path derived from the pin directory so that
//! `redirector stats --pin-dir DIR` needs nothing else.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Directory of the state files.
pub const RUN_DIR: &str = "/run/cutover";

/// The state file that goes with an existing pin directory:
/// `/sys/fs/bpf/cutover/eth0` on bpffs device 0x2a →
/// `/run/cutover/sys_fs_bpf_cutover_eth0@2a.json`. The device tells bpffs
/// instances apart: daemons in different mount namespaces (`ip netns exec`
/// mounts a private /sys) may use the same pin path, while every process
/// that sees one daemon's pins sees the same device.
pub fn path_for(pin_dir: &Path) -> Result<PathBuf> {
    let dev = std::fs::metadata(pin_dir)
        .with_context(|| {
            format!(
                "{} (is `redirector run` running with this --pin-dir, in this mount namespace?)",
                pin_dir.display()
            )
        })?
        .dev();
    Ok(file_name(pin_dir, dev))
}

fn file_name(pin_dir: &Path, dev: u64) -> PathBuf {
    let flat: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    Path::new(RUN_DIR).join(format!("{flat}@{dev:x}.json"))
}

/// What the daemon publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub iface: String,
    /// The daemon's pid; 0 once it exited leaving the program attached.
    pub pid: u32,
    /// Switched-on rules and removed rules whose flows still drain.
    pub rules: Vec<RuleInfo>,
    /// Garbage collection totals since the daemon started, by rule id.
    pub gc_expired: BTreeMap<u32, u64>,
    pub gc_evicted: BTreeMap<u32, u64>,
    /// Half-open connections the collection found evicted (a SYN flood).
    #[serde(default)]
    pub gc_half_open_evicted: BTreeMap<u32, u64>,
}

/// One counter slot's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub id: u32,
    pub name: String,
    pub from: String,
    pub to: String,
    /// The rule left the config; its existing flows still run.
    pub draining: bool,
    /// One per (protocol, port); empty when not known (a rule adopted
    /// from maps without a state file naming it).
    #[serde(default)]
    pub endpoints: Vec<cutover_control_api::contract::RuleEndpoint>,
    /// Percentage of client addresses redirected.
    #[serde(default = "cutover_control_api::contract::full_share")]
    pub share: u8,
}

impl State {
    /// Writes the file atomically (a reader never sees half of it).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path.parent().context("the state file has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).context("encoding the state file")?;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&body)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }

    /// Whether the daemon that wrote this state still runs (signal 0 probes
    /// without sending).
    pub fn daemon_alive(&self) -> bool {
        // 0: the daemon exited and left its program attached.
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        if pid == 0 {
            return false;
        }
        let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            // It exists but belongs to someone else.
            Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        };
        // After a crash the pid may have gone to another program.
        exists && cutover_workspace::runs_program(self.pid, "redirector")
    }

    pub fn read(path: &Path) -> Result<Self> {
        let body = std::fs::read(path).with_context(|| {
            format!(
                "reading {} (is `redirector run` running with this --pin-dir?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&body).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_is_named_after_the_pin_dir() {
        assert_eq!(
            file_name(Path::new("/sys/fs/bpf/cutover/eth0"), 0x2a),
            Path::new("/run/cutover/sys_fs_bpf_cutover_eth0@2a.json")
        );
    }

    #[test]
    fn the_state_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("cutover-state-{}", std::process::id()));
        let path = dir.join("s.json");
        let state = State {
            iface: "eth0".into(),
            pid: 7,
            rules: vec![RuleInfo {
                id: 1,
                name: "www".into(),
                from: "198.18.0.2:80".into(),
                to: "198.18.0.3:80".into(),
                draining: false,
                endpoints: Vec::new(),
                share: 40,
            }],
            gc_expired: BTreeMap::from([(1, 3)]),
            gc_evicted: BTreeMap::new(),
            gc_half_open_evicted: BTreeMap::new(),
        };
        state.write(&path).unwrap();
        assert_eq!(State::read(&path).unwrap(), state);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
