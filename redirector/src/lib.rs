//! The redirector's user space: loads the XDP program, keeps its maps in step
//! with the workspace, collects garbage flows and reports counters.
//!
//! One job per module: `loader` (object and attachment), `program_log` (the
//! program's own log records into `tracing`), `maps` (typed map
//! handles), `pin` (bpffs pins for other processes), `rules` (config ->
//! desired map contents, pure), `sync` (desired contents -> maps), `gc`
//! (flow expiry), `batch` (bulk map reads), `stats` (counters -> report), `metrics` (report ->
//! Prometheus),
//! `state` (the published rule names), `host` (sysctls, neighbour warm-up),
//! `reload` (lifecycle; signals come from `cutover_control_api::signals`,
//! shared with dnsd), `api` (the HTTP control API), `daemon` (the
//! `Daemon` and its event loop).

pub mod api;
pub mod batch;
pub mod daemon;
pub mod gc;
pub mod host;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod pin;
pub mod program;
pub mod program_log;
pub mod reload;
pub mod rules;
pub mod state;
pub mod stats;
pub mod sync;
