//! `cargo xtask bench ...`: each benchmark runs cutover and its peers side by
//! side in one run and prints one table with ratios. Benchmarks, not tests:
//! they report figures and targets, they do not fail on slow machines.

mod blast;
pub mod connect;
mod dns;
mod procs;
mod redirector;
mod redirector_pps;
mod redirector_shapes;
mod transfers;
mod zone;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Which {
    /// dnsperf against dnsd, NSD and Knot DNS on the same zone.
    Dns(dns::Args),
    /// wrk through the XDP redirector vs iptables NAT vs direct.
    Redirector(redirector::Args),
    /// One large zone in dnsd, NSD and Knot DNS: load time, memory,
    /// changes (API, RFC 2136), dnsd's memory over reloads, and (asked
    /// for) zone transfers to secondaries.
    Zone(zone::Args),
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Dns(args) => dns::run(args),
        Which::Redirector(args) => redirector::run(args),
        Which::Zone(args) => zone::run(args),
    }
}
