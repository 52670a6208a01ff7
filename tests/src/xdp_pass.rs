//! A trivial XDP program (`return XDP_PASS`) attached to a veth end.
//!
//! Why: when an XDP program on one veth end sends a frame back out with
//! XDP_TX, the kernel queues it on the peer's receive ring but only kicks
//! the peer's NAPI if the peer has an XDP program of its own. With GRO alone
//! the frame waits for the next unrelated packet (seconds, in a quiet test
//! network), so the switch ports facing an XDP host need this program.
//!
//! The program is two instructions loaded with the bpf(2) syscall, so the
//! harness needs no compiler and no object file; it is attached with a BPF
//! link that lives as long as the returned guard. Its sibling returns
//! XDP_DROP: a packet sink for benchmarks, which costs next to nothing and
//! makes a veth end accept frames redirected to it in native mode.

use std::ffi::{CString, c_char, c_int, c_long};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

#[cfg(target_arch = "x86_64")]
const SYS_BPF: c_long = 321;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: c_long = 280;

const BPF_PROG_LOAD: c_long = 5;
const BPF_LINK_CREATE: c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

unsafe extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
    fn if_nametoindex(name: *const c_char) -> u32;
}

/// An XDP_PASS (or XDP_DROP) program attached to one interface; detached
/// on drop.
pub struct XdpPass {
    _link: OwnedFd,
    _prog: OwnedFd,
}

const XDP_DROP: u64 = 1;
const XDP_PASS: u64 = 2;

impl XdpPass {
    /// Attaches the program to `iface` inside `ns`.
    pub fn attach(ns: &Netns, iface: &str) -> Result<Self> {
        ns.run_in(|| attach_here(ns, iface, XDP_PASS))
    }

    /// Attaches a program that drops every frame, in native mode.
    pub fn attach_sink(ns: &Netns, iface: &str) -> Result<Self> {
        ns.run_in(|| attach_here(ns, iface, XDP_DROP))
    }
}

fn attach_here(ns: &Netns, iface: &str, action: u64) -> Result<XdpPass> {
    let c_iface = CString::new(iface)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let ifindex = unsafe { if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface} in {}", ns.name);
    }

    // r0 = action; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7 | action << 32, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading the XDP_PASS/DROP program")?;

    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
    let link = bpf(BPF_LINK_CREATE, &mut attr)
        .with_context(|| format!("attaching XDP_PASS/DROP to {iface}"))?;
    Ok(XdpPass {
        _link: link,
        _prog: prog,
    })
}

/// Readies a switch namespace (bridge `br0`) for hosts that forward with
/// XDP: XDP_PASS on every port, so that frames a host sends back out with
/// XDP_TX are delivered at once, and no tx checksum offload on the ports,
/// because a port that re-segments a GRO'd stream hands the host frames with
/// partial checksums, which XDP forwards as they are (corrupt). Keep the
/// returned guards for as long as the topology lives.
pub fn ready_switch(switch: &Netns) -> Result<Vec<XdpPass>> {
    let out = switch.ip(&["-o", "link", "show", "master", "br0"])?;
    let mut guards = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let port = name.split('@').next().unwrap_or(name);
        switch.exec("ethtool", &["-K", port, "tx", "off"])?;
        guards.push(XdpPass::attach(switch, port)?);
    }
    if guards.is_empty() {
        bail!("no ports on br0 in {}", switch.name);
    }
    Ok(guards)
}

/// bpf(2) for commands that return a new fd.
fn bpf(cmd: c_long, attr: &mut [u8; 128]) -> Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr for `cmd`, its pointers point
    // to live buffers, and the kernel reads at most its 128 bytes.
    let fd = unsafe { syscall(SYS_BPF, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if fd < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}
