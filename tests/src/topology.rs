//! The mission's topology: a client, the old host and the new host on one
//! bridge, like three machines on a cloud subnet. The old host's `eth0` is
//! where the redirector attaches; forwarded traffic leaves through the same
//! interface it came in on (eth0 -> eth0), as on a real cloud host.

use anyhow::Result;

use crate::netns::{Bridge, Netns};
use crate::xdp_pass::{XdpPass, ready_switch};

pub const CLIENT_IP: &str = "198.18.0.1";
pub const OLD_IP: &str = "198.18.0.2";
pub const NEW_IP: &str = "198.18.0.3";
pub const PREFIX_LEN: u8 = 24;

/// Three hosts on one switch. Dropping it removes every namespace.
pub struct Topology {
    pub client: Netns,
    pub old: Netns,
    pub new: Netns,
    /// XDP_PASS on the switch ports, when the old host runs XDP in native
    /// mode (see `xdp_pass`); empty otherwise.
    _xdp_pass: Vec<XdpPass>,
    /// Whether hosts other than the old one keep their offloads.
    pub offloads: bool,
    /// Declared last so that it is dropped after the hosts.
    pub switch: Netns,
}

impl Topology {
    /// For a redirector in generic XDP mode, which veth interfaces get by
    /// default (`--xdp-mode auto`): the switch is a plain bridge.
    pub fn new() -> Result<Self> {
        Self::build(false, false)
    }

    /// Like `new`, with the client's and the new host's offloads left on,
    /// as a machine has them: their TCP sends GSO packets (TSO on veth),
    /// which generic XDP on the old host sees whole. The old host's own
    /// eth0 sends with checksums computed in software, so that a wrong
    /// partial checksum of a GSO packet it forwards shows as loss.
    pub fn with_offloads() -> Result<Self> {
        Self::build(false, true)
    }

    /// For a redirector in native XDP mode (`--xdp-mode native`): frames the
    /// old host sends back out with XDP_TX reach the switch only if its
    /// ports run an XDP program too.
    pub fn for_native_xdp() -> Result<Self> {
        Self::build(true, false)
    }

    fn build(native_xdp: bool, offloads: bool) -> Result<Self> {
        let switch = Netns::new("cosw")?;
        let client = Netns::new("cocl")?;
        let old = Netns::new("coold")?;
        let new = Netns::new("conew")?;
        {
            let mut bridge = Bridge::new(&switch)?;
            for (host, ip) in [(&client, CLIENT_IP), (&old, OLD_IP), (&new, NEW_IP)] {
                bridge.attach(host, &[&format!("{ip}/{PREFIX_LEN}")])?;
                // XDP forwards frames as they are; a small frame whose TCP
                // checksum was left to offload would leave with a partial
                // checksum (only GSO packets are known to carry one).
                if !offloads || host.name == old.name {
                    host.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
                }
            }
        }
        let xdp_pass = if native_xdp {
            ready_switch(&switch)?
        } else {
            Vec::new()
        };
        Ok(Self {
            client,
            old,
            new,
            _xdp_pass: xdp_pass,
            offloads,
            switch,
        })
    }
}
