//! Builds the XDP program (redirector-ebpf) with nightly and bpf-linker and
//! leaves the object in OUT_DIR, where `src/program.rs` embeds it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "redirector-ebpf")
        .ok_or_else(|| anyhow!("redirector-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("redirector-ebpf has no directory"))?
        .as_str();
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
