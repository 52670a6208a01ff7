//! CPU affinity for the UDP sockets: a query is answered on the CPU that
//! received it.
//!
//! By default the kernel picks a socket of a SO_REUSEPORT group by flow
//! hash, so a query that arrived on one CPU often wakes a thread that last
//! ran on another; on virtual machines that cross-CPU wake-up (an
//! inter-processor interrupt) costs more than answering. With affinity on,
//! a classic BPF program attached to the group chooses the socket whose
//! index is the receiving CPU modulo the group's size, and the thread
//! serving socket `i` runs only on those CPUs. The packet, the wake-up and
//! the answer then stay on one CPU, as with Knot DNS's `socket-affinity`.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is empty; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// The CPUs, of `allowed`, whose queries go to socket `index` of `sockets`.
pub fn cpus_of_socket(allowed: &[usize], index: usize, sockets: usize) -> Vec<usize> {
    allowed
        .iter()
        .copied()
        .filter(|cpu| cpu % sockets == index)
        .collect()
}

/// Restricts the calling thread to `cpus` (a no-op for an empty list).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: an all-zero cpu_set_t is empty.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU numbers come from sched_getaffinity, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size passed; 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Steers each datagram arriving at the reuseport group of `socket` (any
/// member) to the socket whose index is the receiving CPU modulo `sockets`.
pub fn steer_by_cpu(socket: &UdpSocket, sockets: usize) -> io::Result<()> {
    let modulus = u32::try_from(sockets.max(1)).unwrap_or(u32::MAX);
    let program = [
        // A = the CPU the datagram is being processed on.
        stmt(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ),
        // A %= sockets: the index of a socket in the group.
        stmt(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, modulus),
        stmt(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_cpu_belongs_to_exactly_one_socket() {
        let allowed = [0, 1, 2, 3, 6, 7];
        for sockets in 1..=4 {
            let mut seen: Vec<usize> = (0..sockets)
                .flat_map(|i| cpus_of_socket(&allowed, i, sockets))
                .collect();
            seen.sort();
            assert_eq!(seen, allowed, "{sockets} sockets");
        }
        assert_eq!(cpus_of_socket(&allowed, 1, 2), vec![1, 3, 7]);
    }
}
