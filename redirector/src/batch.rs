//! Reads a whole hash map with BPF_MAP_LOOKUP_BATCH: a few syscalls for the
//! flow table instead of two per entry (aya 0.14's iterator does a
//! get-next-key and a lookup for every key). aya does not wrap the batch
//! commands, hence this one hand-written syscall.

use std::borrow::Borrow;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::Pod;
use aya::maps::{HashMap, IterableMap as _, MapData};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries fetched per syscall.
const CHUNK: u32 = 8192;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of `map`. Entries added or removed while it reads may or may
/// not be seen, as with any iteration. `Unsupported` when the kernel lacks
/// batch operations for this map type.
pub fn lookup_all<T: Borrow<MapData>, K: Pod, V: Pod>(
    map: &HashMap<T, K, V>,
) -> io::Result<Vec<(K, V)>> {
    // The typed map checked at creation that K and V have the map's sizes.
    let fd = map.map().fd().as_fd();
    let mut out = Vec::new();
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK as usize);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK as usize);
    // The hash map's cursor is a bucket index (u32); room for a u64 costs
    // nothing and fits any map type's token.
    let mut token_in: u64 = 0;
    let mut token_out: u64 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes buffers of CHUNK keys and values of the
        // map's key and value sizes, and two cursor slots; all outlive the
        // call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let done = if ret == 0 {
            false
        } else {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // The end of the map; `count` says how many came with it.
                Some(libc::ENOENT) => true,
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, err));
                }
                _ => return Err(err),
            }
        };
        let filled = (attr.count.min(CHUNK)) as usize;
        for i in 0..filled {
            // SAFETY: the kernel wrote `filled` keys and values, and any bit
            // pattern is a valid Pod.
            let (k, v) = unsafe {
                (
                    keys.as_ptr().add(i).read().assume_init(),
                    values.as_ptr().add(i).read().assume_init(),
                )
            };
            out.push((k, v));
        }
        if done {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (creates a map), as every test of this crate that touches
    /// the kernel.
    #[test]
    fn a_batched_read_returns_every_entry_once() {
        let mut map = HashMap::<MapData, u32, u64>::create(100_000, 0)
            .expect("creating a hash map (run as root)");
        let n = 20_000u32;
        for k in 0..n {
            map.insert(k, u64::from(k) * 3, 0).unwrap();
        }
        let mut entries = lookup_all(&map).unwrap();
        entries.sort_unstable();
        assert_eq!(entries.len(), n as usize, "more than one chunk, all of it");
        for (i, (k, v)) in entries.iter().enumerate() {
            assert_eq!((*k, *v), (i as u32, u64::from(i as u32) * 3));
        }
    }

    #[test]
    fn an_empty_map_reads_as_empty() {
        let map = HashMap::<MapData, u32, u64>::create(16, 0).expect("creating a hash map");
        assert!(lookup_all(&map).unwrap().is_empty());
    }
}
