//! What dnsd's and the redirector's control APIs have in common, so that a
//! client (the `cutover` CLI, curl) meets one set of conventions on both:
//! every error is `{"error": "..."}` with one status per kind of failure
//! ([`ApiError`]), every request carries the workspace's bearer token
//! ([`Access`]), and the listener is bound before the daemon reports itself
//! started ([`listen`]). The endpoints themselves stay in each daemon.

mod access;
mod error;
mod listen;

pub use access::{Access, load_token};
pub use error::{ApiError, blocking};
pub use listen::listen;
