//! Typed handles on the XDP program's maps (named in `redirector_common::maps`),
//! taken from the loaded object by the daemon or opened from their bpffs pins
//! by `redirector stats`.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, MapInfo, PerCpuArray};
use redirector_common::{
    Flow, Flow6, FlowKey, FlowKey6, LAYOUT_VERSION, NatSettings, RuleKey, RuleValue, maps,
};

use crate::pin;

/// Every map the daemon writes. Owning them keeps them alive for as long as
/// the program runs.
pub struct Maps {
    pub rules: HashMap<MapData, RuleKey, RuleValue>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub embryos: HashMap<MapData, FlowKey, Flow>,
    pub flows6: HashMap<MapData, FlowKey6, Flow6>,
    pub embryos6: HashMap<MapData, FlowKey6, Flow6>,
    pub settings: Array<MapData, NatSettings>,
    pub counters: PerCpuArray<MapData, u64>,
    pub egress: DevMapHash<MapData>,
}

/// The maps pinned for other processes, in the order they are pinned.
pub const PINNED: [&str; 9] = [
    maps::RULES,
    maps::FLOWS,
    maps::EMBRYOS,
    maps::FLOWS6,
    maps::EMBRYOS6,
    maps::FAMILIES,
    maps::SETTINGS,
    maps::COUNTERS,
    maps::EGRESS,
];

impl Maps {
    /// Takes the maps out of a loaded object. Fails, naming the map, when the
    /// object does not match the contract in `redirector-common`.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            rules: typed(take(ebpf, maps::RULES)?, maps::RULES)?,
            flows: typed(take(ebpf, maps::FLOWS)?, maps::FLOWS)?,
            embryos: typed(take(ebpf, maps::EMBRYOS)?, maps::EMBRYOS)?,
            flows6: typed(take(ebpf, maps::FLOWS6)?, maps::FLOWS6)?,
            embryos6: typed(take(ebpf, maps::EMBRYOS6)?, maps::EMBRYOS6)?,
            settings: typed(take(ebpf, maps::SETTINGS)?, maps::SETTINGS)?,
            counters: typed(take(ebpf, maps::COUNTERS)?, maps::COUNTERS)?,
            egress: typed(take(ebpf, maps::EGRESS)?, maps::EGRESS)?,
        })
    }
}

/// The maps `redirector stats` reads, opened from their pins.
pub struct PinnedMaps {
    pub rules: HashMap<MapData, RuleKey, RuleValue>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub embryos: HashMap<MapData, FlowKey, Flow>,
    pub flows6: HashMap<MapData, FlowKey6, Flow6>,
    pub embryos6: HashMap<MapData, FlowKey6, Flow6>,
    pub counters: PerCpuArray<MapData, u64>,
}

impl PinnedMaps {
    /// Opens the maps of this build's layout pinned under the pin
    /// directory `pins`.
    pub fn open(pins: &Path) -> Result<Self> {
        let dir = pin::maps_dir(pins);
        if !dir.is_dir() && pins.is_dir() {
            let others = pin::PinDir::existing(pins)
                .map(|p| p.other_layouts())
                .unwrap_or_default();
            if let Some(v) = others.last() {
                bail!(
                    "{} holds maps of layout version {v}, this redirector reads version \
                     {LAYOUT_VERSION}: use the `redirector` that runs there",
                    pins.display()
                );
            }
        }
        let dir = dir.as_path();
        Ok(Self {
            rules: typed(open_pinned(dir, maps::RULES)?, maps::RULES)?,
            flows: typed(open_pinned(dir, maps::FLOWS)?, maps::FLOWS)?,
            embryos: typed(open_pinned(dir, maps::EMBRYOS)?, maps::EMBRYOS)?,
            flows6: typed(open_pinned(dir, maps::FLOWS6)?, maps::FLOWS6)?,
            embryos6: typed(open_pinned(dir, maps::EMBRYOS6)?, maps::EMBRYOS6)?,
            counters: typed(open_pinned(dir, maps::COUNTERS)?, maps::COUNTERS)?,
        })
    }
}

/// Whether `e` says the key is not in the map: a lookup says so with
/// `KeyNotFound`, a deletion with the syscall's ENOENT (the program or a
/// collection pass removed it first).
pub fn is_missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name).ok_or_else(|| {
        anyhow!(
            "the XDP object has no map {name}: the program and this daemon disagree on \
             redirector-common's contract (rebuild both)"
        )
    })
}

fn open_pinned(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is `redirector run` running with this --pin-dir, in this mount namespace?)",
            path.display()
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("{} is not a map", path.display()))
}

fn typed<T>(map: Map, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(map).with_context(|| {
        format!("map {name} has another type or layout than redirector-common says")
    })
}

/// Checks the maps pinned in `dir` against the definitions of the embedded
/// object, so that a program is never loaded against maps it would read
/// with another layout (same `LAYOUT_VERSION`, but a build that changed a
/// map without bumping it). Returns whether any map is pinned there.
pub fn check_pinned(dir: &Path, object: &[u8]) -> Result<bool> {
    let parsed = aya_obj::Object::parse(object).context("parsing the embedded XDP object")?;
    let mut any = false;
    for name in PINNED {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let def = parsed
            .maps
            .get(name)
            .with_context(|| format!("the XDP object has no map {name}"))?;
        let info = MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?;
        let pinned = (
            info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let wanted = (
            def.map_type(),
            def.key_size(),
            def.value_size(),
            def.max_entries(),
        );
        if pinned != wanted {
            bail!(
                "the pinned map {} (type, key, value, entries) = {pinned:?} differs from this \
                 build's {wanted:?} although both say layout version {LAYOUT_VERSION}",
                path.display()
            );
        }
    }
    Ok(any)
}
