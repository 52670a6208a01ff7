//! CPUs as tests see them: which ones a process may use, pinning a test
//! thread to one, and the per-thread scheduler counters of another process
//! (to tell which of its threads did the work).

use std::fs;
use std::io;

use anyhow::{Context, Result, bail};

/// The CPUs this process may run on, ascending.
pub fn allowed() -> Result<Vec<usize>> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    allowed_in(&status).context("reading Cpus_allowed_list of this process")
}

/// The `Cpus_allowed_list` of a /proc status file.
fn allowed_in(status: &str) -> Result<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .context("no Cpus_allowed_list")?;
    parse_list(list.trim())
}

/// Reads a kernel CPU list such as `0-3,6`.
pub fn parse_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| -> Result<usize> {
            s.trim()
                .parse()
                .with_context(|| format!("CPU list {list:?}"))
        };
        cpus.extend(number(first)?..=number(last)?);
    }
    Ok(cpus)
}

/// Restricts the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    pin_thread(0, cpu)
}

/// Restricts thread `tid` (of any process; 0: the calling thread) to `cpu`.
pub fn pin_thread(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} is beyond CPU_SETSIZE");
    }
    // SAFETY: `cpu` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("pinning thread {tid} to CPU {cpu}"));
    }
    Ok(())
}

/// One thread of another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    pub tid: u32,
    /// The thread's name (at most 15 bytes).
    pub name: String,
    /// The CPUs it may run on.
    pub cpus: Vec<usize>,
    /// Times it left its CPU, waiting (for a datagram, say) or preempted.
    /// A thread that shares one CPU with its client leaves it at least once
    /// per request, so that the client can run.
    pub context_switches: u64,
}

/// The threads of process `pid` whose name starts with `prefix`, by tid.
pub fn threads(pid: u32, prefix: &str) -> Result<Vec<ThreadInfo>> {
    let dir = format!("/proc/{pid}/task");
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry?.path();
        let Ok(status) = fs::read_to_string(path.join("status")) else {
            continue; // the thread has exited
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .with_context(|| format!("no {key} in {}", path.display()))
        };
        let name = field("Name:")?.to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        found.push(ThreadInfo {
            tid: field("Pid:")?.parse().context("a thread id")?,
            name,
            cpus: allowed_in(&status)?,
            context_switches: field("voluntary_ctxt_switches:")?
                .parse::<u64>()
                .context("voluntary_ctxt_switches")?
                + field("nonvoluntary_ctxt_switches:")?
                    .parse::<u64>()
                    .context("nonvoluntary_ctxt_switches")?,
        });
    }
    found.sort_by_key(|t| t.tid);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_lists() {
        assert_eq!(parse_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_list("1").unwrap(), vec![1]);
        assert!(parse_list("0-x").is_err());
    }
}
