//! CPU affinity for the UDP sockets: a query is answered on the CPU that
//! received it.
//!
//! By default the kernel picks a socket of a SO_REUSEPORT group by flow
//! hash, so a query that arrived on one CPU often wakes a thread that last
//! ran on another; on virtual machines that cross-CPU wake-up (an
//! inter-processor interrupt) costs more than answering. With affinity on,
//! the CPUs dnsd may use are dealt out to the sockets in turn, each
//! socket's thread runs only on its CPUs, and a classic BPF program
//! attached to the group hands each datagram to the socket of the CPU
//! processing it. The packet, the wake-up and the answer then stay on one
//! CPU, as with Knot DNS's `socket-affinity`. A datagram processed on a CPU
//! dnsd may not use gets an index past the group, and the kernel falls back
//! to the flow hash for it.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Which CPUs belong to which socket of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPlan {
    /// The CPUs dnsd may run on, ascending; the k-th goes to socket
    /// k mod `sockets`.
    cpus: Vec<usize>,
    sockets: usize,
}

impl CpuPlan {
    /// Deals the CPUs this process may run on to `sockets` sockets.
    pub fn for_this_process(sockets: usize) -> io::Result<Self> {
        Ok(Self::new(allowed_cpus()?, sockets))
    }

    pub fn new(mut cpus: Vec<usize>, sockets: usize) -> Self {
        cpus.sort_unstable();
        cpus.dedup();
        Self {
            cpus,
            sockets: sockets.max(1),
        }
    }

    /// The CPUs whose datagrams go to socket `index`.
    pub fn cpus_of_socket(&self, index: usize) -> Vec<usize> {
        self.cpus
            .iter()
            .enumerate()
            .filter(|(k, _)| k % self.sockets == index)
            .map(|(_, &cpu)| cpu)
            .collect()
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The steering program: the socket index for the processing CPU, or
    /// `sockets` (out of range: the flow hash decides) for any other CPU.
    fn program(&self) -> Vec<libc::sock_filter> {
        let mut program = Vec::with_capacity(2 * self.cpus.len() + 2);
        // A = the CPU the datagram is being processed on.
        program.push(stmt(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ));
        for (k, &cpu) in self.cpus.iter().enumerate() {
            // if A == cpu: return its socket; else skip that return.
            program.push(libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: cpu as u32,
            });
            program.push(stmt(libc::BPF_RET | libc::BPF_K, (k % self.sockets) as u32));
        }
        program.push(stmt(libc::BPF_RET | libc::BPF_K, self.sockets as u32));
        program
    }

    /// Attaches the steering program to the reuseport group of `socket`
    /// (any member: the program belongs to the group).
    pub fn steer(&self, socket: &UdpSocket) -> io::Result<()> {
        let program = self.program();
        let fprog = libc::sock_fprog {
            len: u16::try_from(program.len())
                .map_err(|_| io::Error::other("too many CPUs for a steering program"))?,
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
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The CPUs this process may run on, in ascending order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the steering program for a datagram processed on `cpu`, with
    /// the semantics of the three instructions it uses.
    fn run(program: &[libc::sock_filter], cpu: u32) -> u32 {
        let load_cpu = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                c if c == load_cpu => {
                    assert_eq!(i.k, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32);
                    a = cpu;
                }
                c if c == jeq => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                c if c == ret => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn each_cpu_steers_to_the_socket_pinned_to_it() {
        for (cpus, sockets) in [
            (vec![0, 1], 2),
            (vec![0, 2], 2),
            (vec![2, 3, 5, 8, 9], 2),
            (vec![0, 1, 2, 3], 3),
            (vec![4], 1),
        ] {
            let plan = CpuPlan::new(cpus.clone(), sockets);
            let program = plan.program();
            for index in 0..sockets {
                for cpu in plan.cpus_of_socket(index) {
                    assert_eq!(run(&program, cpu as u32) as usize, index, "{cpus:?}");
                }
            }
            // Every CPU belongs to exactly one socket.
            let mut dealt: Vec<usize> = (0..sockets).flat_map(|i| plan.cpus_of_socket(i)).collect();
            dealt.sort();
            assert_eq!(dealt, cpus);
        }
    }

    #[test]
    fn cpus_are_dealt_in_turn_even_when_numbers_skip() {
        // CPUs 0 and 2 (a cpuset, say): CPU number modulo 2 would put both
        // on socket 0.
        let plan = CpuPlan::new(vec![2, 0], 2);
        assert_eq!(plan.cpus_of_socket(0), vec![0]);
        assert_eq!(plan.cpus_of_socket(1), vec![2]);
    }

    #[test]
    fn other_cpus_fall_back_to_the_flow_hash() {
        let plan = CpuPlan::new(vec![2, 3], 2);
        // An index past the group makes the kernel choose by hash.
        assert_eq!(run(&plan.program(), 0), 2);
        assert_eq!(run(&plan.program(), 7), 2);
    }
}
