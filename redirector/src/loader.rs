//! Loads the embedded XDP object and attaches its program to the
//! interfaces clients and new hosts are reached through; the program is
//! detached when the [`Attached`] value is dropped.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use redirector_common::PROGRAM_NAME;
use tracing::{info, warn};

use crate::program::OBJECT;
use crate::program_log;

/// How the program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// Native on physical NICs, generic on virtual devices (veth and the
    /// like), each interface on its own.
    #[default]
    Auto,
    /// In the driver: the fastest path on a NIC whose driver supports XDP.
    Native,
    /// In the kernel's receive path, on the socket buffer.
    Generic,
}

impl AttachMode {
    /// The kernel mode for `iface`. Why generic on virtual devices: their
    /// frames come from a local network stack as socket buffers, so native
    /// XDP on a veth first copies every frame into a page of its own, and a
    /// frame sent back out with XDP_TX is only delivered if the veth's peer
    /// runs an XDP program too. Generic XDP works on the socket buffer as
    /// it is and transmits it like any other; `cargo xtask bench
    /// redirector` measures the difference.
    pub fn resolve(self, iface: &str) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
            Self::Auto if is_virtual(iface) => XdpMode::Skb,
            Self::Auto => XdpMode::Driver,
        }
    }
}

/// Whether `iface` is a software device rather than a NIC. Sysfs lists
/// software devices under /sys/devices/virtual/net.
fn is_virtual(iface: &str) -> bool {
    Path::new("/sys/devices/virtual/net").join(iface).exists()
}

/// The name `ip link` shows for an attach mode.
fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Skb => "generic",
        XdpMode::Driver => "native",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "default",
    }
}

/// The loaded object with its program attached to each interface in
/// `links`. One program and one set of maps serve them all, so a flow that
/// enters on one interface and is answered on another is still one flow.
pub struct Attached {
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
}

impl Attached {
    /// Loads the object, starts forwarding its log records to `tracing`
    /// (`program_log`), and attaches its program to every interface of
    /// `ifaces`. Any failure detaches what was attached.
    pub fn load(ifaces: &[String], mode: AttachMode) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &program_log::level(), true)
            .load(OBJECT)
            .context("loading the XDP object into the kernel")?;
        program_log::forward(&mut ebpf);
        program(&mut ebpf)?
            .load()
            .context("the kernel refused the XDP program (verifier)")?;
        let mut attached = Self {
            ebpf,
            links: Vec::new(),
        };
        for iface in ifaces {
            let kernel_mode = mode.resolve(iface);
            let link = program(&mut attached.ebpf)?
                .attach(iface, kernel_mode)
                .with_context(|| {
                    format!(
                        "attaching XDP to {iface} in {} mode (does it exist, is another XDP \
                         program on it, does its driver support this mode?)",
                        mode_name(kernel_mode)
                    )
                })?;
            info!(%iface, mode = mode_name(kernel_mode), "XDP program attached");
            attached.links.push((iface.clone(), link));
        }
        Ok(attached)
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Detaches the program from every interface; traffic then reaches the
    /// kernel stack untouched. Reports the first failure after trying all.
    pub fn detach(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some((iface, link)) = self.links.pop() {
            let result = program(&mut self.ebpf).and_then(|p| {
                p.detach(link)
                    .with_context(|| format!("detaching XDP from {iface}"))
            });
            match result {
                Ok(()) => info!(%iface, "XDP program detached"),
                Err(e) => {
                    warn!("{e:#}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .with_context(|| format!("the XDP object has no program {PROGRAM_NAME}"))?
        .try_into()
        .with_context(|| format!("{PROGRAM_NAME} is not an XDP program"))
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Failures were logged one by one.
        let _ = self.detach();
    }
}
