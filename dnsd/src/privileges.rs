//! Giving up what binding port 53 needed, once the sockets are bound.
//!
//! Two ways in, one way through: started as an unprivileged user with
//! `CAP_NET_BIND_SERVICE` as an ambient capability (systemd's
//! `AmbientCapabilities=`), or started as root with `--user NAME`, which
//! becomes NAME first thing, keeping only that capability, so that every
//! file dnsd then creates in the workspace is NAME's. The capability sets
//! belong to each thread, not the process, so a thread that never binds
//! (a tokio worker, a UDP thread) gives them up as it starts, and the main
//! thread once the DNS sockets are bound. The
//! control API binds on its own runtime's thread, already without them:
//! an unprivileged dnsd's API port must be 1024 or above.

use std::ffi::CString;

use anyhow::{Context as _, Result, bail};

/// Whether this process runs as root, which keeps its capabilities on
/// every thread until [`after_binding`] (with `--user`) or for good.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Gives up every capability of the calling thread (effective, permitted,
/// inheritable, ambient). Nothing to do for root without `--user`, whose
/// uid is its privilege.
pub fn drop_thread_capabilities() -> std::io::Result<()> {
    if is_root() {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    set_capabilities(0)
}

/// Sets the calling thread's effective and permitted capabilities to
/// `mask` (capabilities 0..31), its inheritable ones to none.
fn set_capabilities(mask: u32) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        Data {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a valid version-3 header and two data words,
    // for the calling thread (pid 0).
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Once every DNS socket is bound: the calling thread gives its
/// capabilities up (the others gave theirs up as they started).
pub fn after_binding() -> Result<()> {
    drop_thread_capabilities().context("giving up capabilities after binding")
}

/// `--user NAME`, started as root: becomes NAME at once, before the
/// workspace is touched (every file dnsd creates is NAME's), keeping only
/// CAP_NET_BIND_SERVICE, which [`after_binding`] and the threads then give
/// up as an unprivileged dnsd's. Must run while the process has one thread:
/// the capability sets are per thread.
pub fn become_user(user: Option<&str>) -> Result<()> {
    let Some(name) = user else {
        return Ok(());
    };
    if !is_root() {
        bail!("--user {name} needs dnsd to start as root (it then runs as {name})");
    }
    let (uid, gid) = lookup(name)?;
    // SAFETY: plain syscalls with values from the password database, on
    // the process's only thread.
    unsafe {
        if libc::prctl(
            libc::PR_SET_KEEPCAPS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) != 0
        {
            bail!(
                "keeping capabilities across setuid: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::setgroups(1, &gid) != 0 {
            bail!("setgroups for {name}: {}", std::io::Error::last_os_error());
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            bail!("setgid to {name}: {}", std::io::Error::last_os_error());
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            bail!("setuid to {name}: {}", std::io::Error::last_os_error());
        }
        let _ = libc::prctl(
            libc::PR_SET_KEEPCAPS,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        if uid != 0 && libc::setuid(0) == 0 {
            bail!("became {name} but could become root again");
        }
    }
    set_capabilities(1 << CAP_NET_BIND_SERVICE)
        .with_context(|| format!("keeping CAP_NET_BIND_SERVICE as {name}"))
}

const CAP_NET_BIND_SERVICE: u32 = 10;

fn lookup(name: &str) -> Result<(libc::uid_t, libc::gid_t)> {
    let c_name = CString::new(name).context("a user name with a NUL byte")?;
    // SAFETY: passwd is plain data; getpwnam_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r with a valid name, passwd struct and buffer.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        bail!("--user {name}: no such user");
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}
