//! dnsd: authoritative DNS for the config workspace's zones, with rotating
//! low-TTL answers and atomic reload on SIGHUP.
//!
//! Data flows one way, each folder a job, imports only towards the top:
//!
//! - `zone/` — workspace files to checked records: read with the `zonefile`
//!   crate, checked by `name_rules`, turned into hickory records by
//!   `records` (DNAME by `dname`), names keyed by `name_key`;
//! - `snapshot/` — records to the immutable index every query reads (with
//!   `encoded`, the fast path's pre-encoded RRsets);
//! - `answer/` — the pure selection of an answer (with `rotate`);
//! - `serve/` — sockets (`sockets`, `affinity`), the UDP loop (`udp`,
//!   `mmsg`), the fast path and the protocol rules (`server`);
//! - `reload` — a new snapshot from the workspace, swapped in whole;
//! - `transfer/` — zone transfers out and in, NOTIFY, `[[replica]]`
//!   zones;
//! - `clock` — the time and random message IDs, for all of them;
//! - `metrics` — what the others count as they go, for `GET /metrics`;
//! - `privileges` — what binding needed, given up once bound;
//! - `status/` — the status page and the migrations it charts;
//! - `change/` — changes back to the workspace: the one zone-change
//!   transaction, the control API (`api`), RFC 2136 (`update_handler`,
//!   `update`, `tsig`), zone files written (`zone_edit`); then `reload`.
//!
//! The library holds all of it, for the `dnsd` binary (`main.rs`: the
//! command line, start-up and signals) and for the fuzz targets
//! (`fuzz/`), which drive its parsers with bytes nobody wrote.

pub mod answer;
pub mod change;
pub mod clock;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod privileges;
pub mod reload;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod transfer;
pub mod zone;
