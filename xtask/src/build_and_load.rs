//! `cargo xtask build-and-load`: release build, then the redirector in the
//! foreground on one interface.

use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::util::{cargo, display, exec, release_bin};

pub fn run(iface: &str, workspace: &Path) -> Result<()> {
    exec(cargo().args(["build", "--release", "--bins"]))?;
    let workspace = workspace
        .canonicalize()
        .with_context(|| format!("workspace {}", workspace.display()))?;
    let mut cmd = std::process::Command::new(release_bin("redirector"));
    cmd.arg("run")
        .arg("--iface")
        .arg(iface)
        .arg("--workspace")
        .arg(workspace)
        // A development loop: Ctrl-C should leave the interface as it was,
        // not a program forwarding without a daemon.
        .arg("--detach");
    eprintln!("+ {}", display(&cmd));
    // Become the redirector (cargo run already exec'd us), so that Ctrl-C
    // reaches it alone and the terminal waits until it has detached.
    let err = cmd.exec();
    Err(err).with_context(|| format!("starting {}", display(&cmd)))
}
