//! `cargo xtask setup`: everything a fresh Debian 12 machine lacks, installed
//! idempotently. The versions are the ones `../shared/TOOLCHAIN.md` found to
//! work together: nightly's LLVM 22 and Debian's llvm-22-dev for bpf-linker.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use crate::util::{exec, succeeds};

/// Debian packages the tests and benchmarks use as peers and tools.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "iptables",
    "nftables",
    "bpftool",
    "ethtool",
    "nginx-light",
    "wrk",
    "curl",
    "iperf3",
    "nsd",
    "knot",
    "knot-dnsutils",
    "bind9-dnsutils",
    // BIND as a secondary of dnsd (tests/tests/dnsd_secondaries.rs).
    "bind9",
    "dnsperf",
    "iputils-ping",
    "procps",
    "unbound",
    // promtool, and a Prometheus that scrapes both daemons (tests/tests/metrics.rs).
    "prometheus",
    // Headless, to load dnsd's status page (tests/tests/migrate_e2e.rs).
    "chromium",
    // dnsd's allocator (tikv-jemalloc-sys) builds jemalloc with make.
    "make",
    // `bench redirector --parts pps` clears iptables' NAT state between rounds.
    "conntrack",
];

/// Set by [`quietly`]: what is already there is not listed.
static QUIET: AtomicBool = AtomicBool::new(false);

fn present(line: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("{line}");
    }
}

/// What the demo needs (not cargo-fuzz), saying only what it installs.
pub fn quietly() -> Result<()> {
    QUIET.store(true, Ordering::Relaxed);
    rust_src()?;
    debian_packages()?;
    bpf_linker()
}

pub fn run() -> Result<()> {
    rust_src()?;
    debian_packages()?;
    bpf_linker()?;
    cargo_fuzz()?;
    present("setup: everything is in place");
    Ok(())
}

fn rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("rustup component list (is rustup installed?)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        present("setup: nightly rust-src is installed");
        return Ok(());
    }
    eprintln!("setup: adding rust-src to nightly (needed for -Z build-std=core)");
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        present("setup: Debian packages are installed");
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-q"]))?;
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

fn bpf_linker() -> Result<()> {
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        present("setup: bpf-linker is installed");
        return Ok(());
    }
    // The default feature links LLVM 23, which Debian 12 does not have.
    eprintln!("setup: building bpf-linker against llvm-22 (about a minute)");
    exec(
        Command::new("cargo")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                "^0.13",
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
    )
}

fn cargo_fuzz() -> Result<()> {
    if succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        present("setup: cargo-fuzz is installed");
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz (about a minute)");
    exec(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", "^0.13"]))
}
