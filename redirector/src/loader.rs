//! Loads the embedded XDP object and attaches its program to the
//! interfaces clients and new hosts are reached through, and its loopback
//! program (the errors the host sends itself about translated packets) to
//! `lo`.
//!
//! With a pin directory, the maps and the XDP links are pinned and outlive
//! the process: a daemon that starts where another one ran reuses its maps
//! (every connection in flight is in them) and swaps its own program into
//! the existing links in one step (`BPF_LINK_UPDATE`), so that a restart or
//! an upgrade never leaves a packet without a program or a flow without its
//! entry. Maps of another layout version are never loaded against.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode, xdp::XdpLink, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use redirector_common::{
    FAMILY_IPV6, LAYOUT_VERSION, LOCAL_PROGRAM_NAME, PROGRAM_NAME, PROGRAM6_NAME,
};
use tracing::{info, warn};

use crate::maps::{self, PINNED};
use crate::pin::{PinDir, remove_pin};
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
    std::path::Path::new("/sys/devices/virtual/net")
        .join(iface)
        .exists()
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

/// Where [`LOCAL_PROGRAM_NAME`] runs.
const LOOPBACK: &str = "lo";

/// What [`Attached::load`] is told.
pub struct Load<'a> {
    pub ifaces: &'a [String],
    pub mode: AttachMode,
    /// Where maps and links are pinned; `None` when bpffs is not usable:
    /// the program then lives only as long as the process.
    pub pins: Option<&'a PinDir>,
    /// Take over from a redirector whose maps have another layout (or
    /// differ from this build's), cutting the connections they hold.
    pub replace_maps: bool,
}

/// The loaded object with its program attached to each interface. One
/// program and one set of maps serve them all, so that a flow that enters
/// on one interface and is answered on another is still one flow.
pub struct Attached {
    ebpf: Ebpf,
    links: Vec<AttachedLink>,
    adopted: bool,
}

struct AttachedLink {
    iface: String,
    /// The program in the link: `PROGRAM_NAME`, or `LOCAL_PROGRAM_NAME` on
    /// loopback.
    program: &'static str,
    link: Link,
    /// Attached by this process, rather than taken over from a link an
    /// earlier daemon pinned.
    fresh: bool,
}

enum Link {
    /// Pinned at `path`: stays attached after the process exits, until the
    /// pin is removed.
    Pinned { fd: FdLink, path: PathBuf },
    /// Owned by the program: detached when the process exits.
    Owned(XdpLinkId),
}

impl Attached {
    /// Loads the object (reusing the pinned maps of an earlier daemon when
    /// there are any), starts forwarding its log records to `tracing`
    /// (`program_log`), and attaches its program to every interface,
    /// replacing the earlier daemon's program in its pinned links.
    pub fn load(req: &Load<'_>) -> Result<Self> {
        let adopted = match req.pins {
            Some(pins) => prepare_maps(pins, req.replace_maps)?,
            None => false,
        };
        let maps_dir = req.pins.map(PinDir::maps_dir);
        let level = program_log::level();
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &level, true);
        if let Some(dir) = &maps_dir {
            for name in PINNED {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader
            .load(OBJECT)
            .context("loading the XDP object into the kernel")?;
        program_log::forward(&mut ebpf);
        for name in [PROGRAM_NAME, PROGRAM6_NAME, LOCAL_PROGRAM_NAME] {
            program(&mut ebpf, name)?
                .load()
                .with_context(|| format!("the kernel refused the XDP program {name} (verifier)"))?;
        }
        install_ipv6(&mut ebpf)?;
        let mut attached = Self {
            ebpf,
            links: Vec::new(),
            adopted,
        };
        for iface in req.ifaces {
            let mode = req.mode.resolve(iface);
            if let Err(e) = attached.attach(iface, PROGRAM_NAME, mode, req.pins) {
                attached.undo();
                return Err(e);
            }
        }
        // Without it a client of a dead new host waits for its own timeout;
        // everything else works, so a loopback already taken (by another
        // redirector) is only worth a warning.
        if let Err(e) = attached.attach(LOOPBACK, LOCAL_PROGRAM_NAME, XdpMode::Skb, req.pins) {
            warn!(
                "{e:#}: clients of a new host that stops answering ARP will not be told, \
                 and wait for their own timeout"
            );
        }
        Ok(attached)
    }

    /// Once the daemon runs: detaches from the interfaces an earlier daemon
    /// ran on and this one is not given, and unpins the maps of another
    /// layout (their program is in no link any more). Not before: a start
    /// that fails leaves the earlier daemon's setup as it was.
    pub fn settle(&self, pins: &PinDir, ifaces: &[String]) {
        for iface in pins.linked_ifaces() {
            if iface != LOOPBACK && !ifaces.contains(&iface) {
                info!(%iface, "detaching from an interface the earlier daemon ran on and this one is not given");
                remove_pin(&pins.link_path(&iface));
            }
        }
        for version in pins.other_layouts() {
            warn!(version, "removing the maps of another layout version");
            pins.remove_maps(version);
        }
    }

    /// Whether some link was taken over from an earlier daemon (its
    /// program is this one's now).
    pub fn took_over(&self) -> bool {
        self.links.iter().any(|l| !l.fresh)
    }

    /// Whether the maps were pinned by an earlier daemon, connections in
    /// flight and rules included.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches program `name` to `iface`: into its pinned link when there
    /// is one (an atomic swap of the program), else afresh, pinning the new
    /// link.
    fn attach(
        &mut self,
        iface: &str,
        name: &'static str,
        kernel_mode: XdpMode,
        pins: Option<&PinDir>,
    ) -> Result<()> {
        if let Some(pins) = pins {
            let path = pins.link_path(iface);
            if path.exists() {
                match self.replace_in(&path, name) {
                    Ok(fd) => {
                        info!(%iface, program = name, "XDP program replaced in the pinned link: connections in flight keep flowing");
                        self.links.push(AttachedLink {
                            iface: iface.to_string(),
                            program: name,
                            link: Link::Pinned { fd, path },
                            fresh: false,
                        });
                        return Ok(());
                    }
                    Err(e) => {
                        warn!(%iface, "the pinned link is unusable ({e:#}): attaching afresh");
                        remove_pin(&path);
                    }
                }
            }
        }
        let id = program(&mut self.ebpf, name)?
            .attach(iface, kernel_mode)
            .with_context(|| {
                let busy = match pins {
                    Some(pins) => format!(
                        "another XDP program is on it: a redirector left attached under another \
                         pin directory (`redirector detach --pin-dir DIR`; this one uses {})?",
                        pins.dir().display()
                    ),
                    None => "another XDP program is on it?".to_string(),
                };
                format!(
                    "attaching XDP to {iface} in {} mode (does it exist, does its driver support \
                     this mode, {busy})",
                    mode_name(kernel_mode)
                )
            })?;
        info!(%iface, program = name, mode = mode_name(kernel_mode), "XDP program attached");
        let link = match pins {
            Some(pins) => self.pin(name, id, pins.link_path(iface))?,
            None => Link::Owned(id),
        };
        self.links.push(AttachedLink {
            iface: iface.to_string(),
            program: name,
            link,
            fresh: true,
        });
        Ok(())
    }

    /// Swaps this object's program `name` into the link pinned at `path`.
    fn replace_in(&mut self, path: &std::path::Path, name: &str) -> Result<FdLink> {
        let pinned = PinnedLink::from_pin(path).context("opening the pinned link")?;
        let link = XdpLink::try_from(FdLink::from(pinned)).context("not an XDP link")?;
        let prog = program(&mut self.ebpf, name)?;
        let id = prog
            .attach_to_link(link)
            .context("replacing the program in the link")?;
        let link = prog.take_link(id).context("taking the link back")?;
        FdLink::try_from(link).context("the link has no file descriptor")
    }

    /// Moves a freshly attached link out of the program's keeping into a
    /// pin, so that it outlives the process.
    fn pin(&mut self, name: &str, id: XdpLinkId, path: PathBuf) -> Result<Link> {
        let prog = program(&mut self.ebpf, name)?;
        let link = prog.take_link(id).context("taking the new link")?;
        let fd = FdLink::try_from(link).context(
            "the kernel attached XDP without a BPF link (Linux before 5.9?): it cannot outlive \
             the daemon",
        )?;
        let pinned = fd
            .pin(&path)
            .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
        Ok(Link::Pinned {
            fd: FdLink::from(pinned),
            path,
        })
    }

    /// Undoes what this process attached afresh, after a failed start; the
    /// links taken over stay (with this program in them: the maps and the
    /// connections are the earlier daemon's).
    pub fn undo(&mut self) {
        let fresh: Vec<AttachedLink> = {
            let (fresh, kept) = std::mem::take(&mut self.links)
                .into_iter()
                .partition(|l| l.fresh);
            self.links = kept;
            fresh
        };
        for link in fresh {
            if let Err(e) = self.detach_one(link) {
                warn!("{e:#}");
            }
        }
    }

    /// Detaches the program from every interface; traffic then reaches the
    /// kernel stack untouched. Reports the first failure after trying all.
    pub fn detach(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(link) = self.links.pop() {
            if let Err(e) = self.detach_one(link) {
                warn!("{e:#}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn detach_one(&mut self, link: AttachedLink) -> Result<()> {
        let iface = link.iface;
        match link.link {
            Link::Pinned { fd, path } => {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the link pin {}", path.display()))?;
                // The last reference: closing it detaches.
                drop(fd);
            }
            Link::Owned(id) => {
                program(&mut self.ebpf, link.program)?
                    .detach(id)
                    .with_context(|| format!("detaching XDP from {iface}"))?;
            }
        }
        info!(%iface, "XDP program detached");
        Ok(())
    }

    /// Leaves the program attached where its link is pinned, for the next
    /// daemon to take over; links that could not be pinned go with the
    /// process. Returns whether anything stays attached.
    pub fn release(mut self) -> bool {
        let mut kept = false;
        for link in std::mem::take(&mut self.links) {
            match link.link {
                Link::Pinned { .. } => kept = true,
                Link::Owned(_) => {
                    warn!(iface = %link.iface, "the link is not pinned: exiting detaches it")
                }
            }
        }
        kept
    }
}

/// Makes the pin directory ready for a load: refuses (unless told to
/// replace them) maps of another layout and maps that differ from this
/// build's, and creates the maps directory. Returns whether maps of this
/// layout are there to adopt.
fn prepare_maps(pins: &PinDir, replace: bool) -> Result<bool> {
    let others = pins.other_layouts();
    if !others.is_empty() && !replace {
        bail!(
            "{} holds maps of layout version {others:?}, written by another version of the \
             redirector whose program may still forward connections; this one uses version \
             {LAYOUT_VERSION} and cannot read them. Start with --replace-maps to take over \
             anyway (the connections they hold are cut), or let them drain and run \
             `redirector detach` first",
            pins.dir().display()
        );
    }
    let dir = pins.maps_dir();
    let adopted = match maps::check_pinned(&dir, OBJECT) {
        Ok(any) => any,
        Err(e) if replace => {
            warn!("{e:#}: replacing them (--replace-maps)");
            pins.remove_maps(LAYOUT_VERSION);
            false
        }
        Err(e) => {
            return Err(e.context(
                "refusing to load the program against these maps: start with --replace-maps to \
                 take over anyway (the connections they hold are cut)",
            ));
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if adopted {
        info!(dir = %dir.display(), "reusing the pinned maps: connections in flight are kept");
    }
    Ok(adopted)
}

/// Puts the IPv6 program where the main one tail-calls it (see
/// `redirector_common::PROGRAM6_NAME`). Before the main program is
/// attached, so that no IPv6 frame finds the slot empty; an adopted
/// (pinned) `FAMILIES` gets this build's program in place of the last one.
pub fn install_ipv6(ebpf: &mut Ebpf) -> Result<()> {
    let fd = program(ebpf, PROGRAM6_NAME)?
        .fd()
        .context("the IPv6 program has no file descriptor")?
        .try_clone()
        .context("duplicating the IPv6 program's file descriptor")?;
    let map = ebpf
        .map_mut(redirector_common::maps::FAMILIES)
        .context("the XDP object has no map FAMILIES")?;
    let mut families =
        aya::maps::ProgramArray::try_from(map).context("FAMILIES is not a program array")?;
    families
        .set(FAMILY_IPV6, &fd, 0)
        .context("putting the IPv6 program into FAMILIES")
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("the XDP object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}
