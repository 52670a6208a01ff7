//! The processes of a server as /proc shows them: a peer such as NSD forks
//! workers, so what a server costs is the sum over its process tree.

use std::fs;

use anyhow::{Context, Result, bail};

/// One process: its id, its parent's, and the CPU it has used.
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Every process now running.
pub fn all() -> Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we read: skip the ones that went.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, ticks)) = parse_stat(&stat) {
            procs.push(Proc { pid, ppid, ticks });
        }
    }
    Ok(procs)
}

/// `pid` and every process below it, parents first.
pub fn tree(pid: u32, procs: &[Proc]) -> Result<Vec<u32>> {
    if !procs.iter().any(|p| p.pid == pid) {
        bail!("process {pid} is gone");
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    Ok(tree)
}

/// (ppid, utime + stime) from a /proc/PID/stat line. The command name may
/// hold spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), 1-based.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_with_a_tricky_name() {
        let stat = "4242 (nsd: xfrd) S 4200 4242 4200 0 -1 4194624 500 0 0 0 17 5 0 0 20 0 1 0";
        assert_eq!(parse_stat(stat), Some((4200, 22)));
    }

    #[test]
    fn a_tree_holds_its_descendants_only() {
        let p = |pid, ppid| Proc {
            pid,
            ppid,
            ticks: 0,
        };
        let procs = [p(1, 0), p(10, 1), p(11, 10), p(12, 10), p(20, 1)];
        assert_eq!(tree(10, &procs).unwrap(), [10, 11, 12]);
        assert!(tree(99, &procs).is_err());
    }
}
