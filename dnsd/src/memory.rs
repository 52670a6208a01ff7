//! The memory allocator, set up so that a reload costs memory only while it
//! runs: jemalloc, with every snapshot built in an arena of its own.
//!
//! Why (issue 19, a 200,000-record zone reloaded 20 times; heaptrack and
//! jemalloc's statistics, not guesses): the live heap was back at its size
//! after every reload — no leak, no old snapshot kept alive — yet the
//! resident size tripled. glibc's malloc kept what a reload freed: each
//! reload ran on a blocking-pool thread with an arena of its own, and the
//! pages of the arena the old snapshot was freed into stayed resident. With
//! jemalloc and a purge after each reload the size came back, but crept up
//! by about 2 MB a reload (40 MB after 30): the new snapshot's allocations
//! were mixed into pages with the load's short-lived ones, and each reload
//! left more pages partly used. So a snapshot is built, from reading the
//! files to the finished index, in one of two arenas kept for snapshots,
//! the one the served snapshot is not in; freeing a snapshot then empties
//! its arena entirely, whatever was mixed in it, and [`release`] gives all
//! of it back.

use std::ffi::{CStr, CString, c_uint, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the
/// environment adds to them): freed pages go back after about a second
/// (10 s by default), so that memory freed outside a reload returns too.
/// The background threads that do it, without a query thread doing it, are
/// started by [`start_background_threads`] once dnsd gave up its
/// privileges, so that they hold none.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Starts jemalloc's background threads (see [`malloc_conf`]).
pub fn start_background_threads() {
    let mut on = true;
    // SAFETY: `background_thread` writes a bool, given with its size.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"background_thread".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&raw mut on).cast::<c_void>(),
            size_of::<bool>(),
        )
    };
    if rc != 0 {
        tracing::warn!(
            rc,
            "jemalloc would not start its background threads; freed memory returns at the next reload"
        );
    }
}

/// The two arenas snapshots are built in, by turns.
pub struct SnapshotArenas {
    /// `None` if jemalloc would not create them: snapshots are then built
    /// in the building thread's arena, as any other allocation.
    arenas: Option<[c_uint; 2]>,
    /// Which of the two holds the snapshot being served.
    serving: AtomicUsize,
}

/// The arena a snapshot was built in: [`SnapshotArenas::serve`] it once
/// that snapshot is the one served.
#[derive(Clone, Copy)]
pub struct Built(usize);

impl SnapshotArenas {
    pub fn new() -> Self {
        let create = || {
            let arena = read_uint(c"arenas.create")?;
            // What a build frees (the files' text, the parsed records) and
            // a whole freed snapshot go back at once, not after the decay:
            // a reload's peak is then the two snapshots and the load.
            for decay in ["dirty_decay_ms", "muzzy_decay_ms"] {
                let name = CString::new(format!("arena.{arena}.{decay}")).map_err(|_| -1)?;
                write_isize(&name, 0)?;
            }
            Ok::<_, i32>(arena)
        };
        let arenas = match (create(), create()) {
            (Ok(a), Ok(b)) => Some([a, b]),
            (Err(rc), _) | (_, Err(rc)) => {
                tracing::warn!(rc, "jemalloc would not create the snapshot arenas");
                None
            }
        };
        Self {
            arenas,
            serving: AtomicUsize::new(1),
        }
    }

    /// Runs `build` on this thread with every allocation it makes placed in
    /// the arena that does not hold the served snapshot. Reloads must not
    /// overlap (the reloader runs one at a time).
    pub fn build<T>(&self, build: impl FnOnce() -> T) -> (T, Built) {
        let turn = 1 - self.serving.load(Ordering::Acquire);
        let Some(arenas) = self.arenas else {
            return (build(), Built(turn));
        };
        // The thread's cache holds blocks of other arenas: empty it, so
        // that nothing of the snapshot lands outside its arena and nothing
        // else inside it.
        flush_thread_cache();
        let before = swap_uint(c"thread.arena", arenas[turn]);
        let built = build();
        flush_thread_cache();
        if let Ok(before) = before {
            let _ = swap_uint(c"thread.arena", before);
        }
        (built, Built(turn))
    }

    /// Records that the snapshot built in `built` is now the one served.
    pub fn serve(&self, built: Built) {
        self.serving.store(built.0, Ordering::Release);
    }
}

/// Gives every freed page of every arena back to the system now, rather
/// than over the decay time. Call it on the thread that freed a snapshot.
pub fn release() {
    flush_thread_cache();
    // MALLCTL_ARENAS_ALL (4096): every arena.
    let rc = call(c"arena.4096.purge");
    if rc != 0 {
        tracing::warn!(rc, "jemalloc would not give back freed memory");
    }
}

/// Returns the blocks this thread's cache holds to their arenas.
fn flush_thread_cache() {
    // Fails only when the thread has no cache, which is nothing to flush.
    let _ = call(c"thread.tcache.flush");
}

/// A control that takes and gives no value (a flush, a purge).
fn call(name: &CStr) -> i32 {
    // SAFETY: `name` is NUL-terminated; no value is read or written.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    }
}

/// Reads an unsigned control (`arenas.create` creates one and gives its
/// index).
fn read_uint(name: &CStr) -> Result<c_uint, i32> {
    let mut value: c_uint = 0;
    let mut len = size_of::<c_uint>();
    // SAFETY: `value` is a c_uint and `len` its size, as this control
    // reads.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&raw mut value).cast::<c_void>(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc == 0 { Ok(value) } else { Err(rc) }
}

/// Writes a signed control (an arena's decay time).
fn write_isize(name: &CStr, mut value: isize) -> Result<(), i32> {
    // SAFETY: `value` is an isize (ssize_t) and the length its size, as
    // this control writes.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&raw mut value).cast::<c_void>(),
            size_of::<isize>(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// Writes an unsigned control and returns its value before
/// (`thread.arena`).
fn swap_uint(name: &CStr, mut new: c_uint) -> Result<c_uint, i32> {
    let mut old: c_uint = 0;
    let mut len = size_of::<c_uint>();
    // SAFETY: `old` and `new` are c_uints and `len` their size, as this
    // control reads and writes.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&raw mut old).cast::<c_void>(),
            &mut len,
            (&raw mut new).cast::<c_void>(),
            size_of::<c_uint>(),
        )
    };
    if rc == 0 { Ok(old) } else { Err(rc) }
}
