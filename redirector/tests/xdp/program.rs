//! The embedded XDP program, loaded (and verified) by the kernel, with
//! direct access to its maps the way the daemon fills them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};
use redirector::rules::{ip6_be, rule_addr};
use redirector_common::{
    Flow, Flow6, FlowKey, FlowKey6, IPPROTO_TCP, LOCAL_PROGRAM_NAME, NatSettings,
    PASS_PROGRAM_NAME, PROGRAM_NAME, PROGRAM6_NAME, RuleKey, RuleValue, SHARE_ALL, counter, maps,
};

/// Network-order u32 of an address, as the maps hold it.
pub fn addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// Network-order u16 of a port, as the maps hold it.
pub fn port(p: u16) -> u16 {
    p.to_be()
}

/// The `FLOWS` key of a TCP packet from `from` to `to`.
pub fn flow_key(from: SocketAddrV4, to: SocketAddrV4) -> FlowKey {
    flow_key_of(IPPROTO_TCP, from, to)
}

/// The `FLOWS` key of a packet of protocol `proto` from `from` to `to`.
pub fn flow_key_of(proto: u8, from: SocketAddrV4, to: SocketAddrV4) -> FlowKey {
    FlowKey {
        saddr: addr(*from.ip()),
        daddr: addr(*to.ip()),
        sport: port(from.port()),
        dport: port(to.port()),
        proto,
        _pad: [0; 3],
    }
}

/// The `FLOWS6` key of a packet of protocol `proto` from `from` to `to`.
pub fn flow_key6(proto: u8, from: SocketAddrV6, to: SocketAddrV6) -> FlowKey6 {
    FlowKey6 {
        saddr: ip6_be(*from.ip()),
        daddr: ip6_be(*to.ip()),
        sport: port(from.port()),
        dport: port(to.port()),
        proto,
        _pad: [0; 3],
    }
}

/// What one test run returned.
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Attaches the object's pass-everything program to `dev` (call inside its
/// namespace); the returned object keeps it attached until dropped.
pub fn attach_pass(dev: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(redirector::program::OBJECT).context("loading the eBPF object")?;
    let program: &mut Xdp = ebpf
        .program_mut(PASS_PROGRAM_NAME)
        .ok_or_else(|| anyhow!("no program {PASS_PROGRAM_NAME}"))?
        .try_into()?;
    program.load()?;
    program
        .attach(dev, XdpMode::default())
        .with_context(|| format!("attaching {PASS_PROGRAM_NAME} to {dev}"))?;
    Ok(ebpf)
}

/// The loaded program and its maps.
pub struct Redirector {
    ebpf: Ebpf,
    pub rules: HashMap<MapData, RuleKey, RuleValue>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub embryos: HashMap<MapData, FlowKey, Flow>,
    pub flows6: HashMap<MapData, FlowKey6, Flow6>,
    pub embryos6: HashMap<MapData, FlowKey6, Flow6>,
    pub settings: Array<MapData, NatSettings>,
    pub counters: PerCpuArray<MapData, u64>,
    pub egress: DevMapHash<MapData>,
}

impl Redirector {
    /// Loads `redirector::program::OBJECT` with the program's log calls of
    /// every level live, so that the verifier checks them too; the kernel's
    /// verifier runs here.
    pub fn load() -> Result<Self> {
        Self::load_with_log_level(aya_log::Level::Trace as u8)
    }

    /// Loads the object as the daemon does at log filter `level` (see
    /// `redirector::program_log::level`): log calls below it are removed.
    pub fn load_with_log_level(level: u8) -> Result<Self> {
        Self::load_with(level, None)
    }

    /// Loads the object with `FLOWS` and `EMBRYOS` this small (entries).
    pub fn load_with_table_sizes(flows: u32, embryos: u32) -> Result<Self> {
        Self::load_with(aya_log::Level::Trace as u8, Some((flows, embryos)))
    }

    fn load_with(level: u8, tables: Option<(u32, u32)>) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &level, true);
        if let Some((flows, embryos)) = tables {
            loader.map_max_entries(maps::FLOWS, flows);
            loader.map_max_entries(maps::EMBRYOS, embryos);
        }
        let mut ebpf = loader
            .load(redirector::program::OBJECT)
            .context("loading the eBPF object")?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} is missing"))
        };
        let rules = HashMap::try_from(take(maps::RULES)?)?;
        let flows = HashMap::try_from(take(maps::FLOWS)?)?;
        let embryos = HashMap::try_from(take(maps::EMBRYOS)?)?;
        let flows6 = HashMap::try_from(take(maps::FLOWS6)?)?;
        let embryos6 = HashMap::try_from(take(maps::EMBRYOS6)?)?;
        let settings = Array::try_from(take(maps::SETTINGS)?)?;
        let counters = PerCpuArray::try_from(take(maps::COUNTERS)?)?;
        let egress = DevMapHash::try_from(take(maps::EGRESS)?)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("no program {PROGRAM_NAME}"))?
            .try_into()?;
        program.load().context("verifying the XDP program")?;
        let local: &mut Xdp = ebpf
            .program_mut(LOCAL_PROGRAM_NAME)
            .ok_or_else(|| anyhow!("no program {LOCAL_PROGRAM_NAME}"))?
            .try_into()?;
        local.load().context("verifying the loopback program")?;
        let pass: &mut Xdp = ebpf
            .program_mut(PASS_PROGRAM_NAME)
            .ok_or_else(|| anyhow!("no program {PASS_PROGRAM_NAME}"))?
            .try_into()?;
        pass.load().context("verifying the pass program")?;
        let v6: &mut Xdp = ebpf
            .program_mut(PROGRAM6_NAME)
            .ok_or_else(|| anyhow!("no program {PROGRAM6_NAME}"))?
            .try_into()?;
        v6.load().context("verifying the IPv6 program")?;
        redirector::loader::install_ipv6(&mut ebpf)?;
        Ok(Self {
            ebpf,
            rules,
            flows,
            embryos,
            flows6,
            embryos6,
            settings,
            counters,
            egress,
        })
    }

    /// Attaches the program natively to `dev` (call inside the namespace).
    /// Test runs then find it already in the kernel's XDP dispatcher instead
    /// of patching the dispatcher twice per run, which costs milliseconds.
    pub fn attach(&mut self, dev: &str) -> Result<()> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("no program {PROGRAM_NAME}"))?
            .try_into()?;
        program
            .attach(dev, XdpMode::default())
            .with_context(|| format!("attaching to {dev}"))?;
        Ok(())
    }

    /// Switches on the TCP redirect `old -> new` with counter slot `rule_id`.
    pub fn add_rule(
        &mut self,
        old: impl Into<SocketAddr>,
        new: impl Into<SocketAddr>,
        rule_id: u32,
    ) -> Result<()> {
        self.add_rule_of(IPPROTO_TCP, old, new, rule_id)
    }

    /// Switches on the redirect `old -> new` of protocol `proto`.
    pub fn add_rule_of(
        &mut self,
        proto: u8,
        old: impl Into<SocketAddr>,
        new: impl Into<SocketAddr>,
        rule_id: u32,
    ) -> Result<()> {
        self.add_partial_rule(proto, old, new, rule_id, SHARE_ALL)
    }

    /// Switches on the redirect `old -> new` for `share` of every
    /// `SHARE_ALL` client addresses.
    pub fn add_partial_rule(
        &mut self,
        proto: u8,
        old: impl Into<SocketAddr>,
        new: impl Into<SocketAddr>,
        rule_id: u32,
        share: u16,
    ) -> Result<()> {
        let (old, new) = (old.into(), new.into());
        let key = RuleKey {
            addr: rule_addr(old.ip()),
            port: port(old.port()),
            proto,
            _pad: 0,
        };
        let value = RuleValue {
            new_addr: rule_addr(new.ip()),
            new_port: port(new.port()),
            share,
            rule_id,
        };
        self.rules.insert(key, value, 0)?;
        Ok(())
    }

    /// Sets the NAT port range; the old host has no ephemeral ports.
    pub fn set_ports(&mut self, port_min: u16, port_max: u16, port_retries: u32) -> Result<()> {
        self.set_settings(NatSettings {
            port_min,
            port_max,
            port_retries,
            local_min: 0,
            local_max: 0,
        })
    }

    pub fn set_settings(&mut self, settings: NatSettings) -> Result<()> {
        self.settings.set(0, settings, 0)?;
        Ok(())
    }

    /// Runs the program once on `frame` as if received on `ifindex`.
    pub fn run(&self, frame: &[u8], ifindex: u32) -> Result<Outcome> {
        self.run_repeat(frame, ifindex, 1).map(|(o, _)| o)
    }

    /// Runs the program `repeat` times; also returns the kernel's average
    /// duration per run in ns.
    pub fn run_repeat(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<(Outcome, u64)> {
        self.run_program(PROGRAM_NAME, frame, ifindex, repeat)
    }

    /// The duration per run in ns of the object's program that does nothing
    /// (returns XDP_PASS), `repeat` runs on `frame`: what BPF_PROG_TEST_RUN
    /// itself costs per run, to tell the program's own cost apart.
    pub fn floor_ns(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<u64> {
        Ok(self
            .run_program(PASS_PROGRAM_NAME, frame, ifindex, repeat)?
            .1)
    }

    /// Runs the loopback program once on `frame` as if received on `lo`.
    pub fn run_local(&self, frame: &[u8]) -> Result<Outcome> {
        // The loopback interface's index in every network namespace.
        const LOOPBACK_IFINDEX: u32 = 1;
        self.run_program(LOCAL_PROGRAM_NAME, frame, LOOPBACK_IFINDEX, 1)
            .map(|(o, _)| o)
    }

    fn run_program(
        &self,
        name: &str,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<(Outcome, u64)> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 256];
        let program: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        Ok((
            Outcome {
                action: result.return_value,
                frame: out,
            },
            result.duration.as_nanos() as u64,
        ))
    }

    /// Counter `idx` of slot `rule_id`, summed over CPUs.
    pub fn counter(&self, rule_id: u32, idx: u32) -> u64 {
        self.counters
            .get(&(rule_id * counter::COUNT + idx), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// All counters of slot `rule_id`, for before/after comparisons.
    pub fn slot(&self, rule_id: u32) -> Vec<u64> {
        (0..counter::COUNT)
            .map(|i| self.counter(rule_id, i))
            .collect()
    }

    /// A flow entry, established or half-open.
    pub fn flow(&self, key: &FlowKey) -> Option<Flow> {
        self.flows
            .get(key, 0)
            .ok()
            .or_else(|| self.embryos.get(key, 0).ok())
    }

    /// How many instructions the verifier walked to accept program `name`.
    pub fn verified_instructions(&self, name: &str) -> Result<u32> {
        let program: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        program
            .info()?
            .verified_instruction_count()
            .ok_or_else(|| anyhow!("the kernel does not report verified instructions"))
    }

    /// Entries of both IPv6 flow tables.
    pub fn flow6_count(&self) -> usize {
        self.flows6.keys().count() + self.embryos6.keys().count()
    }

    /// Entries of both flow tables.
    pub fn flow_count(&self) -> usize {
        self.flows.keys().count() + self.embryos.keys().count()
    }

    /// Entries of established connections only.
    pub fn established_count(&self) -> usize {
        self.flows.keys().count()
    }
}
