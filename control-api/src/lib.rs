//! What dnsd's and the redirector's control APIs have in common, so that a
//! client (the `cutover` CLI, curl) meets one set of conventions on both:
//! every error is `{"error": "..."}` with one status per kind of failure
//! ([`ApiError`]), every request carries the workspace's bearer token
//! ([`Access`]), and the listener is bound before the daemon reports itself
//! started ([`listen`]), and signals mean the same to both ([`signals`]). The JSON of every endpoint is a type of
//! [`contract`], shared with the client; the handlers stay in each daemon.

pub mod attribution;
pub mod contract;

#[cfg(feature = "server")]
mod access;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
pub mod lifecycle;
#[cfg(feature = "server")]
mod listen;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod signals;

#[cfg(feature = "server")]
pub use access::{Access, load_token};
#[cfg(feature = "server")]
pub use error::{ApiError, blocking};
#[cfg(feature = "server")]
pub use listen::listen;
