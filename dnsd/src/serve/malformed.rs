//! Queries that do not decode or break the protocol's form, counted, not
//! logged one by one: anyone can send a hundred thousand a second, and a
//! line each would fill the disk. Once a minute, if any came, one line
//! says how many and gives one of them as an example; and one more at
//! shutdown.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::info;

/// How often the summary is logged.
pub const PERIOD: Duration = Duration::from_secs(60);

static COUNT: AtomicU64 = AtomicU64::new(0);
static EXAMPLE: Mutex<Option<String>> = Mutex::new(None);

/// Counts one malformed query from `src`; `why` describes it.
pub fn seen(src: SocketAddr, why: &dyn std::fmt::Display) {
    crate::metrics::malformed();
    if COUNT.fetch_add(1, Ordering::Relaxed) == 0
        && let Ok(mut example) = EXAMPLE.try_lock()
    {
        *example = Some(format!("from {src}: {why}"));
    }
}

/// Logs how many were counted since the last summary, if any, and starts
/// counting afresh.
pub fn summarize(period: &str) {
    let n = COUNT.swap(0, Ordering::Relaxed);
    let example = EXAMPLE
        .lock()
        .map(|mut e| e.take())
        .unwrap_or_default()
        .unwrap_or_default();
    if n > 0 {
        info!(
            count = n,
            "{n} malformed queries {period} (answered FORMERR or dropped), e.g. {example}"
        );
    }
}

/// Logs the summary every `PERIOD`, for as long as the runtime runs.
pub fn start() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(PERIOD);
        every.tick().await;
        loop {
            every.tick().await;
            summarize("in the last minute");
        }
    });
}
