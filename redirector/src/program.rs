//! The compiled XDP program, embedded at build time.

/// The eBPF object built from `redirector-ebpf` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirector"));
