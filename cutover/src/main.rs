//! `cutover`: the operator's command. Its subcommands are the mission's
//! steps: `migrate` a service to a new host, `rollback`, `status`.

mod api;
mod insync;
mod lease;
mod loops;
mod migrate;
mod migration;
mod preflight;
mod shift;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::api::{Dns, Endpoint, Redirector};

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "Move a service to a new host without losing a client"
)]
struct Cli {
    #[command(flatten)]
    apis: Apis,
    #[command(subcommand)]
    command: Command,
}

/// Where the daemons' control APIs are and how to authenticate.
#[derive(Args)]
pub struct Apis {
    /// dnsd's API.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8053",
        env = "CUTOVER_DNS"
    )]
    dns: String,
    /// The old host's redirector API.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8054",
        env = "CUTOVER_OLD"
    )]
    old: String,
    /// File holding the bearer token of both APIs (the daemons create
    /// WORKSPACE/.cutover/api-token).
    #[arg(long, global = true, env = "CUTOVER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// File holding the old host's token, when it differs.
    #[arg(long, global = true)]
    old_token_file: Option<PathBuf>,
    /// Who makes the changes, recorded in every generation they make
    /// (default: $USER@host).
    #[arg(long, global = true, env = "CUTOVER_BY")]
    by: Option<String>,
    /// Why, recorded beside who in every generation made.
    #[arg(long, global = true, env = "CUTOVER_REASON")]
    reason: Option<String>,
    /// Where migration records are kept, so that a migration can resume.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/cutover",
        env = "CUTOVER_STATE"
    )]
    state_dir: PathBuf,
}

impl Apis {
    /// The bearer token from `path`, else from `CUTOVER_TOKEN`, and where
    /// it came from (a 401 names it). The daemons refuse every request
    /// without one, so a missing or empty token is an error here rather
    /// than a 401 that does not say why.
    fn token(path: Option<&PathBuf>) -> Result<(String, String)> {
        let (token, source) = match path {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the API token {}", path.display()))?,
                format!("the file {}", path.display()),
            ),
            None => (
                std::env::var("CUTOVER_TOKEN").unwrap_or_default(),
                "the variable CUTOVER_TOKEN".to_string(),
            ),
        };
        let token = token.trim();
        if token.is_empty() {
            match path {
                Some(path) => bail!("the API token file {} is empty", path.display()),
                None => bail!(
                    "no API token: pass --token-file WORKSPACE/.cutover/api-token or set CUTOVER_TOKEN"
                ),
            }
        }
        Ok((token.to_string(), source))
    }

    pub fn dns(&self) -> Result<Dns> {
        let (token, source) = Self::token(self.token_file.as_ref())?;
        Ok(Dns(
            self.attributed(Endpoint::new(&self.dns, &token, &source))
        ))
    }

    /// `endpoint`, sending who asks and why with every request.
    fn attributed(&self, endpoint: Endpoint) -> Endpoint {
        let by = self.by.clone().unwrap_or_else(default_by);
        endpoint.attributed(by, self.reason.clone())
    }

    /// The old host's redirector.
    pub fn old(&self) -> Result<Redirector> {
        self.redirector_at(&self.old)
    }

    /// A redirector at `url` (the new host's, for a reverse redirect),
    /// reached with the old host's token.
    pub fn redirector_at(&self, url: &str) -> Result<Redirector> {
        let file = self.old_token_file.as_ref().or(self.token_file.as_ref());
        let (token, source) = Self::token(file)?;
        Ok(Redirector(
            self.attributed(Endpoint::new(url, &token, &source)),
        ))
    }

    pub fn store(&self) -> migration::Store {
        migration::Store::new(&self.state_dir)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Move NAME to NEW: lower the TTL if needed and wait it out, switch on
    /// the redirect OLD -> NEW on the old host, flip the record, watch the old
    /// host drain, restore the TTL. Resumes where it stopped when run again.
    Migrate(migrate::Args),
    /// Put NAME back on its old addresses and switch the redirect off.
    Rollback(migrate::RollbackArgs),
    /// Switch off a finished migration's redirect: OLD may go (after a
    /// migrate that ended with clients still arriving).
    Retire(migrate::RetireArgs),
    /// Wait until every name server of NAME's zone (dnsd and the zone's
    /// secondaries, or --nameservers) serves the zone's serial dnsd serves
    /// now; fail naming those that do not in time.
    Sync {
        /// A name in the zone (a service, or the zone's origin).
        name: String,
        #[command(flatten)]
        sync: migrate::SyncArgs,
    },
    /// Move NAME's answers to new addresses step by step (a canary release
    /// by DNS weights), reverting when a new address fails its health check.
    Shift(shift::Args),
    /// Services, migrations, redirects and their counters, the workspace generation.
    Status {
        /// One JSON document instead of lines for a terminal.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate(args) => migrate::run(&cli.apis, args),
        Command::Rollback(args) => migrate::rollback(&cli.apis, args),
        Command::Retire(args) => migrate::retire(&cli.apis, args),
        Command::Sync { name, sync } => migrate::sync(&cli.apis, &name, &sync),
        Command::Shift(args) => shift::run(&cli.apis, args),
        Command::Status { json } => status::run(&cli.apis, json),
    };
    if let Err(e) = result {
        eprintln!("cutover: {e:#}");
        std::process::exit(1);
    }
}

/// Parses "90s", "10m", "24h", "2d" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (write 90s, 10m, 24h or 2d)"))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("999999999999999999d").is_err());
    }
}

/// `$USER@host`, as an audit trail names who ran a command.
fn default_by() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
