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

use std::ffi::CStr;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
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

    /// Where the thread of socket `index` runs.
    pub fn placement(&self, index: usize) -> Placement {
        Placement::new(self.cpus_of_socket(index), self.cpus.clone())
    }

    /// The CPUs whose datagrams go to socket `index`.
    fn cpus_of_socket(&self, index: usize) -> Vec<usize> {
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

/// Where one UDP thread runs: its own CPUs while it keeps up, every CPU of
/// the plan while it falls behind; anywhere, unmoved, without affinity.
///
/// Pinning pays when the thread sleeps between queries: each wake-up then
/// stays on one CPU. When the thread is saturated it hardly sleeps, and a
/// pin only keeps it from an idle CPU — as when one NIC queue (or one
/// local sender) delivers everything on the same CPU as its sender. So a
/// thread whose receives keep coming back full lets go of its pin, and
/// takes it back once its receives have stayed small for a while.
#[derive(Debug)]
pub struct Placement {
    own: Vec<usize>,
    all: Vec<usize>,
    floating: bool,
    /// Consecutive receives that filled the batch, or that stayed small.
    full: u32,
    quiet: u32,
}

/// Consecutive full receives after which a pinned thread floats.
const FULL_TO_FLOAT: u32 = 8;
/// Consecutive small receives (under a quarter of a batch) after which a
/// floating thread is pinned again.
const QUIET_TO_PIN: u32 = 256;

impl Placement {
    /// A thread pinned to `own` that may float over `all`; inert when
    /// `own` is empty (no affinity).
    pub fn new(own: Vec<usize>, all: Vec<usize>) -> Self {
        Self {
            own,
            all,
            floating: false,
            full: 0,
            quiet: 0,
        }
    }

    /// A thread the kernel places as it likes.
    pub fn none() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    /// Pins the calling thread to its own CPUs. If that fails the placement
    /// becomes inert: the thread still serves, only its queries may cross
    /// CPUs.
    pub fn settle(&mut self) -> io::Result<()> {
        pin_current_thread(&self.own).map_err(|e| {
            let own = std::mem::take(&mut self.own);
            io::Error::new(
                e.kind(),
                format!("pinning a UDP thread to CPUs {own:?}: {e}"),
            )
        })
    }

    /// Takes the size of a receive (of at most `batch` datagrams) and moves
    /// the calling thread when its load says so.
    pub fn after_receive(&mut self, received: usize, batch: usize) -> io::Result<()> {
        match self.observe(received, batch) {
            Some(cpus) => pin_current_thread(cpus),
            None => Ok(()),
        }
    }

    /// The CPUs to move the thread to after a receive of `received`
    /// datagrams, when it should move.
    fn observe(&mut self, received: usize, batch: usize) -> Option<&[usize]> {
        if self.own.is_empty() {
            return None;
        }
        if received >= batch {
            self.full += 1;
            self.quiet = 0;
        } else if received < batch / 4 {
            self.quiet += 1;
            self.full = 0;
        } else {
            self.full = 0;
            self.quiet = 0;
        }
        if !self.floating && self.full >= FULL_TO_FLOAT {
            self.floating = true;
            self.full = 0;
            return Some(&self.all);
        }
        if self.floating && self.quiet >= QUIET_TO_PIN {
            self.floating = false;
            self.quiet = 0;
            return Some(&self.own);
        }
        None
    }
}

/// Restricts the calling thread to `cpus` (a no-op for an empty list).
fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
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

/// An interface that receives on fewer queues than dnsd has sockets, with
/// no RPS to spread the packets further: all it receives is processed on
/// those queues' CPUs, so with affinity only their sockets' threads answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrowInterface {
    pub name: String,
    pub rx_queues: usize,
}

/// The interfaces that can receive queries sent to `ip` and would leave
/// some of `sockets` sockets idle under affinity. Loopback is never one:
/// a datagram sent over it is received on the sender's CPU.
pub fn narrow_interfaces(ip: IpAddr, sockets: usize) -> io::Result<Vec<NarrowInterface>> {
    let mut narrow = Vec::new();
    for name in interfaces_for(ip)? {
        let queues = std::path::Path::new("/sys/class/net")
            .join(&name)
            .join("queues");
        let Ok(entries) = fs::read_dir(&queues) else {
            continue; // no queue information: nothing to say
        };
        let mut rx_queues = 0;
        let mut rps = false;
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with("rx-") {
                continue;
            }
            rx_queues += 1;
            let mask = fs::read_to_string(entry.path().join("rps_cpus")).unwrap_or_default();
            rps |= !mask_is_empty(&mask);
        }
        if rx_queues > 0 && rx_queues < sockets && !rps {
            narrow.push(NarrowInterface { name, rx_queues });
        }
    }
    Ok(narrow)
}

/// Whether a sysfs CPU mask (`00000000,00000003`) selects no CPU.
fn mask_is_empty(mask: &str) -> bool {
    mask.trim().chars().all(|c| c == '0' || c == ',')
}

/// The non-loopback interfaces that hold `ip`, or every one that is up if
/// `ip` is the unspecified address.
fn interfaces_for(ip: IpAddr) -> io::Result<Vec<String>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        let flags = ifa.ifa_flags;
        if flags & libc::IFF_LOOPBACK as u32 != 0 || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr, when set, points at a sockaddr of its family.
        let addr = unsafe { sockaddr_ip(ifa.ifa_addr) };
        let holds = if ip.is_unspecified() {
            flags & libc::IFF_UP as u32 != 0
        } else {
            addr == Some(ip)
        };
        if holds {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(names)
}

/// The IP address in a sockaddr, if it is IPv4 or IPv6.
///
/// # Safety
/// `sa` is null or points at a socket address whose family field tells its
/// real type.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees the family tells the type.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let v4 = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
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
    fn a_thread_that_falls_behind_floats_and_is_pinned_again_when_quiet() {
        let mut o = Placement::new(vec![1], vec![0, 1]);
        for _ in 0..FULL_TO_FLOAT - 1 {
            assert_eq!(o.observe(32, 32), None);
        }
        // A medium receive breaks the streak.
        assert_eq!(o.observe(16, 32), None);
        for _ in 0..FULL_TO_FLOAT - 1 {
            assert_eq!(o.observe(32, 32), None);
        }
        assert_eq!(o.observe(32, 32), Some(&[0, 1][..]));
        // Full again while floating: nothing to change.
        assert_eq!(o.observe(32, 32), None);
        for _ in 0..QUIET_TO_PIN - 1 {
            assert_eq!(o.observe(1, 32), None);
        }
        assert_eq!(o.observe(1, 32), Some(&[1][..]));
        assert_eq!(o.observe(1, 32), None);
    }

    #[test]
    fn without_affinity_nothing_moves() {
        let mut o = Placement::new(vec![], vec![0, 1]);
        for _ in 0..100 {
            assert_eq!(o.observe(32, 32), None);
        }
    }

    #[test]
    fn rps_masks_with_any_cpu_are_not_empty() {
        assert!(mask_is_empty("00000000,00000000\n"));
        assert!(mask_is_empty("0"));
        assert!(!mask_is_empty("00000000,00000003\n"));
        assert!(!mask_is_empty("f"));
    }

    #[test]
    fn loopback_is_never_narrow() {
        // Whatever the host's interfaces, 127.0.0.1 lives on lo.
        assert_eq!(
            narrow_interfaces("127.0.0.1".parse().unwrap(), 64).unwrap(),
            vec![]
        );
    }

    #[test]
    fn other_cpus_fall_back_to_the_flow_hash() {
        let plan = CpuPlan::new(vec![2, 3], 2);
        // An index past the group makes the kernel choose by hash.
        assert_eq!(run(&plan.program(), 0), 2);
        assert_eq!(run(&plan.program(), 7), 2);
    }
}
