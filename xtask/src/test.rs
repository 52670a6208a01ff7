//! `cargo xtask test`: the README's test command, and exactly what CI runs.

use anyhow::Result;

use crate::util::{cargo, exec};

pub fn run(extra: &[String]) -> Result<()> {
    crate::setup::run()?;
    // The end-to-end tests start the daemons as processes: build them first.
    exec(cargo().args(["build", "--bins"]))?;
    let tested = exec(cargo().args(["test", "--no-fail-fast"]).args(extra));
    // The parsers that see outside bytes, each fuzzed for a while; a
    // filtered run (a test name given) is someone after one test.
    if extra.is_empty() {
        crate::fuzz::smoke(15)?;
    }
    tested
}
