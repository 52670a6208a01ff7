//! The XDP program's own log: records of rare events (a SYN dropped for want
//! of a NAT port, a packet the kernel must forward because the next hop is
//! not resolved yet) that `aya-log` carries from the program to `tracing`,
//! under the target `redirector`. Steady traffic is counted, never logged.

use std::os::fd::AsRawFd as _;

use aya::Ebpf;
use aya_log::{EbpfLogger, Level};
use tracing::{debug, warn};

/// The most verbose level the program should emit: the most verbose one
/// the daemon's log filter lets through for the program's target. It is
/// written into the program before it is loaded, so the verifier drops
/// every log call below it and a quiet daemon pays nothing for them.
pub fn level() -> u8 {
    let level = if tracing::enabled!(target: "redirector", tracing::Level::TRACE) {
        Level::Trace
    } else if tracing::enabled!(target: "redirector", tracing::Level::DEBUG) {
        Level::Debug
    } else if tracing::enabled!(target: "redirector", tracing::Level::INFO) {
        Level::Info
    } else if tracing::enabled!(target: "redirector", tracing::Level::WARN) {
        Level::Warn
    } else if tracing::enabled!(target: "redirector", tracing::Level::ERROR) {
        Level::Error
    } else {
        return 0;
    };
    level as u8
}

/// Starts forwarding the loaded program's records to `tracing` for as long
/// as the runtime runs; the reader owns the log buffer, which the program
/// needs to stay loaded.
pub fn forward(ebpf: &mut Ebpf) {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            warn!(error = %e, "the XDP program's log cannot be read; its counters still work");
            return;
        }
    };
    let fd = logger.as_raw_fd();
    // SAFETY: the logger owns the ring buffer's fd and keeps it open and
    // unchanged for as long as the AsyncFd that owns the logger exists.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    match registered {
        Ok(mut fd_guard) => {
            tokio::spawn(async move {
                loop {
                    let Ok(mut ready) = fd_guard.readable_mut().await else {
                        break;
                    };
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                }
                debug!("the XDP program's log reader stopped");
            });
        }
        Err(e) => warn!(fd, error = %e, "cannot watch the XDP program's log buffer"),
    }
}
