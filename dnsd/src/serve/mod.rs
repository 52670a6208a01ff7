//! Serving: the sockets (`sockets`, with `affinity` keeping each query on
//! the CPU that received it), the UDP loop (`udp` over `mmsg`), the common
//! queries answered straight from the wire (`fast_path`), TCP with its
//! bounds (`tcp`), the protocol
//! rules around the answer function (`server`), and malformed queries
//! counted, not logged one by one (`malformed`).

pub mod affinity;
pub mod fast_path;
pub mod malformed;
pub mod mmsg;
pub mod server;
pub mod sockets;
pub mod tcp;
pub mod udp;

/// The UDP payload dnsd advertises and never exceeds: the DNS Flag Day 2020
/// size that avoids IP fragmentation on common paths.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
