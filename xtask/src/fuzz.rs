//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (cargo-fuzz, with
//! nightly). `--smoke` runs every target for a few seconds from its seeds
//! (`fuzz/seeds/TARGET/`), as CI does; `cargo xtask fuzz TARGET` runs one
//! for long, keeping what it finds in `fuzz/corpus/TARGET/` and any crash
//! in `fuzz/artifacts/TARGET/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::exec;

/// Every target, in `fuzz/Cargo.toml`'s order.
pub const TARGETS: &[&str] = &[
    "fast_path",
    "message",
    "tsig",
    "update",
    "zone_file",
    "workspace_toml",
    "api_json",
];

#[derive(clap::Args)]
pub struct Args {
    /// Run every target for `--seconds` (default 15) from its seeds only.
    #[arg(long)]
    smoke: bool,
    /// The target to run (see fuzz/fuzz_targets/).
    target: Option<String>,
    /// How long each target runs.
    #[arg(long)]
    seconds: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    match (args.smoke, args.target) {
        (true, None) => smoke(args.seconds.unwrap_or(15)),
        (false, Some(target)) => long(&target, args.seconds.unwrap_or(600)),
        _ => bail!(
            "cargo xtask fuzz --smoke, or cargo xtask fuzz TARGET (one of {})",
            TARGETS.join(", ")
        ),
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir()).args(["+nightly", "fuzz"]);
    cmd
}

/// Every target for `seconds`, each from a scratch copy of its seeds; fails
/// on the first that finds a crash, naming the input it saved.
pub fn smoke(seconds: u64) -> Result<()> {
    exec(cargo_fuzz().args(["build", "-O"]))?;
    let mut report = Vec::new();
    for target in TARGETS {
        let corpus = tempfile::tempdir().context("a scratch corpus")?;
        let seeds = fuzz_dir().join("seeds").join(target);
        for seed in std::fs::read_dir(&seeds).with_context(|| format!("{}", seeds.display()))? {
            let seed = seed?.path();
            if let Some(name) = seed.file_name() {
                std::fs::copy(&seed, corpus.path().join(name))?;
            }
        }
        let out = cargo_fuzz()
            .args(["run", "-O", target])
            .arg(corpus.path())
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("fuzz target {target} failed:\n{}", tail(&log, 40));
        }
        let runs = log
            .lines()
            .rev()
            .find_map(|l| {
                l.strip_prefix("Done ")
                    .and_then(|r| r.split_whitespace().next())
            })
            .unwrap_or("?")
            .to_string();
        report.push(format!("{target}: {runs} runs in {seconds} s, no crash"));
    }
    for line in &report {
        eprintln!("fuzz: {line}");
    }
    Ok(())
}

/// One target for `seconds`, its corpus kept in `fuzz/corpus/TARGET`.
fn long(target: &str, seconds: u64) -> Result<()> {
    if !TARGETS.contains(&target) {
        bail!("no fuzz target {target} (one of {})", TARGETS.join(", "));
    }
    let corpus = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    exec(
        cargo_fuzz()
            .args(["run", "-O", target])
            .arg(&corpus)
            .arg(fuzz_dir().join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}")),
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
