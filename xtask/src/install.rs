//! `cargo xtask install`: the release binaries into PREFIX/bin and the
//! systemd units of deploy/systemd into the unit directory, pointed at
//! them; the `cutover` system user and the workspace directory it owns.
//! Idempotent; `--destdir` stages everything under another root (for a
//! package, or to look before installing).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{cargo, exec, release_bin, root, succeeds};

/// The binaries installed.
const BINARIES: [&str; 3] = ["dnsd", "redirector", "cutover"];
/// Where the units in deploy/systemd expect them.
const UNIT_PREFIX: &str = "/usr/local";
/// The workspace both units serve.
const WORKSPACE: &str = "/var/lib/cutover";

#[derive(clap::Args)]
pub struct Args {
    /// Where the binaries go (PREFIX/bin).
    #[arg(long, default_value = UNIT_PREFIX)]
    prefix: PathBuf,
    /// Stage under this root instead of / (no user is created, systemd is
    /// not told).
    #[arg(long)]
    destdir: Option<PathBuf>,
    /// Install the binaries already built in target/release.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: Args) -> Result<()> {
    if !args.no_build {
        eprintln!(
            "install: building release binaries (the eBPF program needs `cargo xtask setup`)"
        );
        exec(cargo().args([
            "build",
            "--release",
            "-p",
            "dnsd",
            "-p",
            "redirector",
            "-p",
            "cutover",
        ]))?;
    }
    let staged = |path: &Path| -> PathBuf {
        match &args.destdir {
            Some(dest) => dest.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    };
    let bin_dir = args.prefix.join("bin");
    let target = staged(&bin_dir);
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    for name in BINARIES {
        let to = target.join(name);
        // A copy beside the running binary, then a rename: a daemon
        // running the old one keeps it until it restarts.
        let tmp = target.join(format!(".{name}.new"));
        fs::copy(release_bin(name), &tmp)
            .with_context(|| format!("copying {name} (was it built?)"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &to).with_context(|| format!("installing {}", to.display()))?;
        eprintln!("install: {}", to.display());
    }
    let unit_dir = staged(Path::new("/etc/systemd/system"));
    fs::create_dir_all(&unit_dir)?;
    for unit in ["dnsd.service", "redirector@.service"] {
        let text = fs::read_to_string(root().join("deploy/systemd").join(unit))?;
        let text = text.replace(
            &format!("{UNIT_PREFIX}/bin/"),
            &format!("{}/", bin_dir.display()),
        );
        let to = unit_dir.join(unit);
        fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
        eprintln!("install: {}", to.display());
    }
    if args.destdir.is_some() {
        return Ok(());
    }
    if !succeeds(Command::new("id").args(["-u", "cutover"])) {
        exec(Command::new("useradd").args([
            "--system",
            "--home-dir",
            WORKSPACE,
            "--shell",
            "/usr/sbin/nologin",
            "cutover",
        ]))?;
    }
    if !Path::new(WORKSPACE).exists() {
        exec(Command::new("install").args([
            "-d", "-o", "cutover", "-g", "cutover", "-m", "0750", WORKSPACE,
        ]))?;
    }
    if Path::new("/run/systemd/system").exists() {
        exec(Command::new("systemctl").arg("daemon-reload"))?;
    }
    eprintln!(
        "install: done. Put the workspace in {WORKSPACE} (owned by cutover), then\n  \
         systemctl enable --now dnsd\n  systemctl enable --now redirector@eth0   # on an old host\n\
         and `systemctl reload dnsd` after each edit (see docs/deploy.md)."
    );
    Ok(())
}
