//! Loads the embedded XDP object and attaches it to one interface; the
//! program is detached when the [`Attached`] value is dropped.

use std::os::fd::AsRawFd as _;

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use redirector_common::PROGRAM_NAME;
use tracing::{debug, info, warn};

use crate::program::OBJECT;

/// The loaded object with its program attached to `iface`.
pub struct Attached {
    ebpf: Ebpf,
    iface: String,
    link: Option<XdpLinkId>,
}

impl Attached {
    /// Loads the object, starts forwarding the program's aya-log records to
    /// `tracing`, and attaches the program to `iface`.
    pub fn load(iface: &str) -> Result<Self> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the XDP object into the kernel")?;
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_log_reader(logger),
            // The program may not log at all.
            Err(e) => debug!(error = %e, "the XDP program has no log map"),
        }
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .with_context(|| format!("the XDP object has no program {PROGRAM_NAME}"))?
            .try_into()
            .with_context(|| format!("{PROGRAM_NAME} is not an XDP program"))?;
        program
            .load()
            .context("the kernel refused the XDP program (verifier)")?;
        let link = program.attach(iface, XdpMode::default()).with_context(|| {
            format!("attaching XDP to {iface} (does it exist, is another XDP program on it?)")
        })?;
        info!(%iface, "XDP program attached");
        Ok(Self {
            ebpf,
            iface: iface.to_string(),
            link: Some(link),
        })
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Detaches the program; traffic then reaches the kernel stack untouched.
    pub fn detach(&mut self) -> Result<()> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .context("the XDP program disappeared")?
            .try_into()
            .context("the program is no longer XDP")?;
        program
            .detach(link)
            .with_context(|| format!("detaching XDP from {}", self.iface))?;
        info!(iface = %self.iface, "XDP program detached");
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            warn!(error = format!("{e:#}"), "detaching on drop");
        }
    }
}

/// Reads the program's log ring buffer whenever it has records; records go
/// through the `log` facade into `tracing`.
fn spawn_log_reader(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
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
            });
        }
        Err(e) => warn!(fd, error = %e, "cannot watch the XDP program's log buffer"),
    }
}
