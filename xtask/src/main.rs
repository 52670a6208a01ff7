//! Developer commands for cutover. `cargo xtask --help` lists them.

mod bench;
mod build_and_load;
mod demo;
mod fuzz;
mod install;
mod setup;
mod test;
mod util;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set up, test, run and benchmark cutover"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The mission in one minute: move www.example.test from an old host to a
    /// new one in network namespaces, with dnsd and the redirector, then roll back.
    Demo,
    /// Install what a fresh machine lacks: rust-src for nightly, llvm-22-dev,
    /// bpf-linker, cargo-fuzz, and the Debian packages the tests and
    /// benchmarks use.
    /// Idempotent: does nothing for what is already there.
    Setup,
    /// Run the whole test suite (runs `setup` first, then builds every binary),
    /// then every fuzz target for a few seconds.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything in release mode and run the redirector on IFACE in the
    /// foreground; Ctrl-C detaches it.
    BuildAndLoad {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        workspace: PathBuf,
    },
    /// Install the release binaries and the systemd units (dnsd.service,
    /// redirector@.service), the `cutover` user and /var/lib/cutover.
    Install(install::Args),
    /// Run the fuzz targets of fuzz/ (cargo-fuzz): `--smoke` each for a few
    /// seconds, as CI does, or one TARGET for long.
    Fuzz(fuzz::Args),
    /// Run a benchmark against its peers and print a table with ratios.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// The many-clients load of `bench redirector`, run in the client's
    /// namespace.
    #[command(hide = true)]
    Connect(bench::connect::Args),
}

/// An error is one line (`error: what: why`). The backtrace only when
/// asked for with RUST_BACKTRACE=full: many shells export
/// RUST_BACKTRACE=1 for good, and a user who did not ask should not get
/// forty lines.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v == "full") {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => demo::run(),
        Command::Setup => setup::run(),
        Command::Test { args } => test::run(&args),
        Command::BuildAndLoad { iface, workspace } => build_and_load::run(&iface, &workspace),
        Command::Install(args) => install::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Bench { which } => bench::run(which),
        Command::Connect(args) => bench::connect::run(args),
    }
}
