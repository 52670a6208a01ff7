//! `cargo xtask test`: the README's test command, and exactly what CI runs.

use anyhow::Result;

use crate::util::{cargo, exec};

pub fn run(extra: &[String]) -> Result<()> {
    crate::setup::run()?;
    // The end-to-end tests start the daemons as processes: build them first.
    exec(cargo().args(["build", "--bins"]))?;
    exec(cargo().args(["test", "--no-fail-fast"]).args(extra))
}
