//! A web client of the site as a user's machine is one: it resolves the
//! name through its caching resolver, then requests the page from the
//! address it got. Used by the mission's tests and the demo.

use std::process::Command;

/// The address `resolver` (`127.0.0.53`, in namespace `ns`) gives first
/// for `name`, the one a client connects to, or "" when it gives none.
pub fn resolve(ns: &str, resolver: &str, name: &str) -> String {
    resolve_type(ns, resolver, name, "A")
}

/// The first address of `rtype` (`A`, `AAAA`) the resolver answers.
pub fn resolve_type(ns: &str, resolver: &str, name: &str, rtype: &str) -> String {
    Command::new("ip")
        .args(["netns", "exec", ns, "kdig", &format!("@{resolver}")])
        .args(["+short", "+timeout=2", "+retry=1", name, rtype])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// `http://IP/` from namespace `ns`: the body, or curl's complaint.
pub fn get(ns: &str, ip: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
        ])
        .arg(if ip.contains(':') {
            format!("http://[{ip}]/")
        } else {
            format!("http://{ip}/")
        })
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
