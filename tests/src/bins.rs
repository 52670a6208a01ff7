//! Where the daemons under test are. `cargo xtask test` builds every binary
//! before it runs the tests; a plain `cargo test` needs `cargo build --bins`.

use std::path::PathBuf;

/// Path of the workspace binary `name` in the current profile's target dir.
pub fn path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let p = target.join(profile).join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --bins` (cargo xtask test does it)",
        p.display()
    );
    p
}

/// Whether an external tool (nginx, kdig, nsd, ...) is installed.
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
