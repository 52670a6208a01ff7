//! `cargo xtask build-and-load`: release build, then the redirector in the
//! foreground on one interface.

use std::path::Path;

use anyhow::{Context, Result};

use crate::util::{cargo, exec, root};

pub fn run(iface: &str, workspace: &Path) -> Result<()> {
    exec(cargo().args(["build", "--release", "--bins"]))?;
    let workspace = workspace
        .canonicalize()
        .with_context(|| format!("workspace {}", workspace.display()))?;
    let bin = root().join("target/release/redirector");
    // Exec-like: the redirector handles SIGINT itself and detaches cleanly.
    exec(
        std::process::Command::new(bin)
            .arg("run")
            .arg("--iface")
            .arg(iface)
            .arg("--workspace")
            .arg(workspace),
    )
}
