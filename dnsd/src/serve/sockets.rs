//! The network edge: binding the UDP sockets (one SO_REUSEPORT group per
//! listen address, each socket served by its own `udp` thread) and the TCP
//! listener that hickory-server's `Server` accepts on.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use hickory_server::Server;
use socket2::{Domain, Socket, Type};
use tracing::{debug, info, warn};

use crate::serve::affinity::{self, CpuPlan, Placement};
use crate::serve::server::Handler;
use crate::serve::{tcp, udp};

/// Binds `udp_sockets` SO_REUSEPORT UDP sockets, each served by its own
/// thread, and one TCP listener handed to `server`, on `addr`. With
/// `cpu_affinity`, each query is steered to the thread of the CPU that
/// received it (`affinity`). Returns the bound address (its port resolved
/// if `addr` asked for port 0).
pub fn listen(
    server: &mut Server<Handler>,
    handler: &Handler,
    addr: SocketAddr,
    udp_sockets: usize,
    cpu_affinity: bool,
    tcp_limits: tcp::Limits,
) -> Result<SocketAddr> {
    ensure_unused(addr)?;
    let sockets = udp_sockets.max(1);
    let mut plan = if cpu_affinity && sockets > 1 {
        CpuPlan::for_this_process(sockets)
            .map_err(|error| warn!(%error, "reading the CPUs dnsd may use; no CPU affinity"))
            .ok()
    } else {
        None
    };
    let mut bound = addr;
    for i in 0..sockets {
        let socket = udp_socket(bound).with_context(|| format!("binding UDP {bound}"))?;
        bound = socket
            .local_addr()
            .context("reading the bound UDP address")?;
        // The program belongs to the whole group, so the first socket
        // carries it; sockets joining later are chosen by it too.
        if i == 0
            && let Some(p) = &plan
            && let Err(error) = p.steer(&socket)
        {
            warn!(%error, %bound, "steering UDP queries by CPU; the kernel spreads them by flow hash");
            plan = None;
        }
        let placement = plan
            .as_ref()
            .map_or_else(Placement::none, |p| p.placement(i));
        let runtime = tokio::runtime::Handle::current();
        if let Err(error) = udp::spawn(socket, handler.clone(), runtime, placement)? {
            warn!(%error, "a UDP thread runs unpinned");
        }
    }
    if let Some(p) = &plan {
        report_affinity(p, bound, sockets);
    }
    let listener = tcp_listener(bound).with_context(|| format!("binding TCP {bound}"))?;
    let shutdown = server.shutdown_token().clone();
    tokio::spawn(tcp::serve(listener, handler.clone(), tcp_limits, shutdown));
    Ok(bound)
}

/// Says how queries are steered, and where affinity cannot do its job:
/// sockets without a CPU, or an interface whose packets all arrive on
/// fewer CPUs than there are sockets.
fn report_affinity(plan: &CpuPlan, bound: SocketAddr, sockets: usize) {
    let cpus = plan.cpus();
    info!(%bound, sockets, ?cpus, "UDP queries are steered to the thread of the CPU that received them");
    if cpus.len() < sockets {
        warn!(
            %bound,
            sockets,
            cpus = cpus.len(),
            "more UDP sockets than CPUs: with cpu_affinity the extra sockets get no queries"
        );
    }
    match affinity::narrow_interfaces(bound.ip(), sockets) {
        Ok(narrow) => {
            for n in narrow {
                warn!(
                    interface = %n.name,
                    rx_queues = n.rx_queues,
                    sockets,
                    "this interface receives on fewer queues than dnsd has UDP sockets and RPS is \
                     off: with cpu_affinity, only the threads of those queues' CPUs answer its \
                     queries; set server.cpu_affinity = false or spread them with RPS"
                );
            }
        }
        Err(error) => debug!(%error, "listing interfaces to check their receive queues"),
    }
}

/// Refuses an address that another process already serves over UDP: a
/// SO_REUSEPORT socket would silently join that process's group, and the
/// two would split the queries (and this one would replace its steering
/// program) instead of failing as a second server should.
fn ensure_unused(addr: SocketAddr) -> Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "UDP {addr} is already in use by another process (is another dnsd still running?)"
        ),
        Err(e) => Err(e).with_context(|| format!("binding UDP {addr}")),
    }
}

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Several sockets on the same address: the kernel hands each datagram
    // to one of them, by flow hash or by the affinity program, so that
    // each core serves its own queue.
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A burst of queries should wait in the socket, not be dropped; the
    // kernel caps this at net.core.rmem_max, which is fine.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}
