//! Named hook points in the commit protocol (`history.rs`), so that a test
//! can crash a writer, or fill its disk, at every step of a commit without
//! relying on timing.
//!
//! Each step of the protocol runs through [`step`] under one of the names
//! of [`STEPS`]. `CUTOVER_FAULT` (read once per process) holds
//! comma-separated `KIND:STEP[:N]`:
//!
//! - `after:STEP:N` — the process kills itself with SIGKILL right after the
//!   N-th time (default: the first) STEP completes in it, as `kill -9` or a
//!   power cut there would: no destructor, no cleanup, no unlock but the
//!   kernel's;
//! - `enospc:STEP:N` — the N-th time STEP starts, it fails with ENOSPC, as
//!   a full disk would.
//!
//! Unset, as in production, a hook costs one check of a `OnceLock`. In
//! this crate's own tests a thread may [`arm`] a plan instead, and the
//! crash is a panic carrying [`Crash`] (caught with `catch_unwind`): it
//! unwinds without running the protocol's error paths, which is what a
//! crash skips too.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::HistoryError;

/// The steps a commit and its recovery go through, in order (see the
/// module doc of `history.rs` for what each one does).
pub const STEPS: &[&str] = &[
    "stage", "validate", "prepare", "seal", "install", "remove", "record",
    // The journal's (`journal.rs`): a change's number, its frame; a zone
    // file rewritten from the journal; a checkpoint.
    "reserve", "journal", "sync", "compact",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Die right after the step.
    After,
    /// Fail the step with ENOSPC before it does anything.
    NoSpace,
}

#[derive(Debug)]
struct Fault {
    kind: Kind,
    step: &'static str,
    /// 1-based: which occurrence of the step.
    nth: u32,
}

/// The faults asked for, and how many times each step has started.
#[derive(Debug)]
struct Plan {
    faults: Vec<Fault>,
    started: Vec<AtomicU32>,
}

impl Plan {
    fn parse(spec: &str) -> Result<Self, String> {
        let mut faults = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut parts = item.split(':');
            let kind = match parts.next() {
                Some("after") => Kind::After,
                Some("enospc") => Kind::NoSpace,
                _ => return Err(format!("{item:?}: the kind is `after` or `enospc`")),
            };
            let name = parts.next().unwrap_or_default();
            let Some(step) = STEPS.iter().copied().find(|s| *s == name) else {
                return Err(format!("{item:?}: the step is one of {}", STEPS.join(", ")));
            };
            let nth = match parts.next() {
                None => 1,
                Some(n) => n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{item:?}: N counts from 1"))?,
            };
            if parts.next().is_some() {
                return Err(format!("{item:?}: KIND:STEP[:N]"));
            }
            faults.push(Fault { kind, step, nth });
        }
        Ok(Self {
            faults,
            started: STEPS.iter().map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Counts one start of `step`; the fault planned for this occurrence.
    fn start(&self, step: &str) -> (u32, Option<Kind>) {
        let i = STEPS.iter().position(|s| *s == step).expect("a known step");
        let nth = self.started[i].fetch_add(1, Ordering::Relaxed) + 1;
        let kind = self
            .faults
            .iter()
            .find(|f| f.step == step && f.nth == nth && f.kind == Kind::NoSpace)
            .map(|f| f.kind);
        (nth, kind)
    }

    fn dies_after(&self, step: &str, nth: u32) -> bool {
        self.faults
            .iter()
            .any(|f| f.step == step && f.nth == nth && f.kind == Kind::After)
    }
}

fn from_env() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var("CUTOVER_FAULT").ok()?;
        // A test that misspells its fault must not pass for want of one.
        Some(Plan::parse(&spec).unwrap_or_else(|e| panic!("CUTOVER_FAULT: {e}")))
    })
    .as_ref()
}

/// Runs step `name` of the protocol, which acts on `path`, with whatever
/// fault is planned for this occurrence of it.
pub(crate) fn step<T>(
    name: &'static str,
    path: &Path,
    run: impl FnOnce() -> Result<T, HistoryError>,
) -> Result<T, HistoryError> {
    let mut run = Some(run);
    #[cfg(test)]
    if let Some(result) = armed::step(name, path, &mut run) {
        return result;
    }
    let run = run.take().expect("not run yet");
    let Some(plan) = from_env() else {
        return run();
    };
    let (nth, fault) = plan.start(name);
    if fault == Some(Kind::NoSpace) {
        return Err(no_space(path));
    }
    let value = run()?;
    if plan.dies_after(name, nth) {
        // SAFETY: signals this very process; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    Ok(value)
}

fn no_space(path: &Path) -> HistoryError {
    HistoryError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    }
}

/// What an armed test crash panics with.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Crash;

/// A plan for the calling thread only, in force until the guard drops.
#[cfg(test)]
pub(crate) fn arm(spec: &str) -> armed::Guard {
    armed::arm(spec)
}

#[cfg(test)]
pub(crate) mod armed {
    use std::cell::RefCell;
    use std::path::Path;

    use super::{Crash, Kind, Plan, no_space};
    use crate::HistoryError;

    thread_local! {
        static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
    }

    /// Disarms on drop.
    pub(crate) struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            PLAN.with(|p| p.borrow_mut().take());
        }
    }

    pub(super) fn arm(spec: &str) -> Guard {
        let plan = Plan::parse(spec).expect("a valid fault plan");
        PLAN.with(|p| *p.borrow_mut() = Some(plan));
        Guard
    }

    /// `None` when this thread has no plan.
    pub(super) fn step<T>(
        name: &'static str,
        path: &Path,
        run: &mut Option<impl FnOnce() -> Result<T, HistoryError>>,
    ) -> Option<Result<T, HistoryError>> {
        let (nth, fault) = PLAN.with(|p| p.borrow().as_ref().map(|plan| plan.start(name)))?;
        if fault == Some(Kind::NoSpace) {
            return Some(Err(no_space(path)));
        }
        let result = (run.take().expect("run once"))();
        let dies = PLAN.with(|p| {
            p.borrow()
                .as_ref()
                .is_some_and(|plan| plan.dies_after(name, nth))
        });
        if result.is_ok() && dies {
            std::panic::panic_any(Crash);
        }
        Some(result)
    }

    /// How many times `name` started under the current plan.
    #[allow(dead_code)]
    pub(crate) fn started(name: &str) -> u32 {
        PLAN.with(|p| {
            p.borrow().as_ref().map_or(0, |plan| {
                let i = super::STEPS.iter().position(|s| *s == name).unwrap();
                plan.started[i].load(std::sync::atomic::Ordering::Relaxed)
            })
        })
    }
}
