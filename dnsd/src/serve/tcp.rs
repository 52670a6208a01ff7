//! DNS over TCP (RFC 7766): dnsd's own accept loop and connections.
//!
//! Why not hickory-server's: it accepts without bound, so a client holding
//! more connections than dnsd has file descriptors makes accept fail with
//! EMFILE, which it retries at once — a core spent spinning, and nothing
//! left for the control API, updates or reloads. Here:
//!
//! - at most `max_connections` are open (`[server] tcp_connections`, by
//!   default half the descriptors dnsd may open, which it raises to its
//!   hard limit at start); the rest are for everything else;
//! - at the cap, a new connection takes the place of the one that has been
//!   idle longest, if it has been idle a second (as servers do under load,
//!   RFC 7766 §6.2.3), so that clients holding connections open cannot
//!   keep new ones out, while a burst of clients waits its turn;
//! - a connection idle for `idle` is closed, and a query must arrive whole
//!   within `QUERY_READ` once its length has;
//! - an accept that fails for want of descriptors or memory backs off
//!   (`BACKOFF`) instead of spinning, and says so once a minute at most.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::serve::server::Handler;
use crate::serve::{malformed, udp};
use crate::transfer::out;

/// A connection with no query for this long is closed (RFC 7766 §6.2.3
/// suggests seconds, not minutes).
pub const IDLE: Duration = Duration::from_secs(10);
/// How long a query may take to arrive once its length has.
const QUERY_READ: Duration = Duration::from_secs(5);
/// How long writing one response may take.
const WRITE: Duration = Duration::from_secs(5);
/// How long accepting waits after running out of descriptors or memory.
const BACKOFF: Duration = Duration::from_millis(100);

/// The bounds of the TCP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// A connection with no query for this long is closed.
    pub idle: Duration,
}

impl Limits {
    /// `configured` connections (`[server] tcp_connections`), or, for 0,
    /// half of the `fd_limit` descriptors dnsd may open: the other half is
    /// for UDP sockets, zone files, reloads, the control API and updates.
    pub fn new(configured: usize, fd_limit: u64) -> Self {
        let auto = usize::try_from(fd_limit / 2)
            .unwrap_or(usize::MAX)
            .clamp(16, 65536);
        Self {
            max_connections: if configured == 0 { auto } else { configured },
            idle: IDLE,
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one (as NSD and
/// Knot do) and returns it.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// Serves DNS over TCP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let table = Arc::new(Connections::new(limits.max_connections));
    let mut warned: Option<Instant> = None;
    loop {
        // A slot first, the oldest idle connection closed for it if need
        // be: what waits meanwhile waits in the kernel's backlog.
        let slot = tokio::select! {
            slot = table.slot() => slot,
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, src) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if out_of_resources(&error) => {
                if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                    warn!(%error, open = table.open(), "TCP accept failed for want of resources; backing off");
                    warned = Some(Instant::now());
                }
                drop(slot);
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(error) => {
                debug!(%error, "TCP accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        let table = Arc::clone(&table);
        let shutdown = shutdown.clone();
        // Registered before the next accept, so that it can be evicted.
        let (id, evicted) = table.register();
        tokio::spawn(async move {
            tokio::select! {
                () = connection(stream, src, handler, limits.idle, &table, id) => {}
                () = evicted.notified() => debug!(%src, "closed the longest idle TCP connection for a new one"),
                () = shutdown.cancelled() => {}
            }
            table.unregister(id);
            drop(slot);
        });
    }
}

/// Whether an accept failed for want of descriptors or memory: retrying
/// at once would spin.
fn out_of_resources(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) || error.kind() == ErrorKind::OutOfMemory
}

/// One connection: queries read one at a time, each answered before the
/// next is read (an UPDATE answers later, from its own task).
async fn connection(
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    handler: Handler,
    idle: Duration,
    table: &Connections,
    id: u64,
) {
    let _ = stream.set_nodelay(true);
    let (mut read, write) = stream.into_split();
    let write = Arc::new(tokio::sync::Mutex::new(write));
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(idle, read.read_u16()).await else {
            return;
        };
        table.set_busy(id, true);
        let mut query = vec![0u8; usize::from(len)];
        let Ok(Ok(_)) = tokio::time::timeout(QUERY_READ, read.read_exact(&mut query)).await else {
            return;
        };
        // A zone transfer is many messages, written here as they are made.
        if out::is_transfer(&query)
            && let Some((transfers, serving)) = handler.transfers()
        {
            let mut write = write.lock().await;
            let sent = out::serve(&query, src, serving, transfers, &mut *write).await;
            if let Err(e) = sent {
                debug!(%src, %e, "a zone transfer ended early");
                return;
            }
            table.set_busy(id, false);
            continue;
        }
        // The header, for the FORMERR of a query that does not decode.
        let head: Option<[u8; 12]> = query.get(..12).and_then(|h| h.try_into().ok());
        match Request::from_bytes(query, src, Protocol::Tcp) {
            Ok(request) => {
                let reply = TcpReply {
                    write: Arc::clone(&write),
                };
                handler
                    .handle_request::<_, TokioTime>(&request, reply)
                    .await;
            }
            Err(error) => {
                malformed::seen(src, &error);
                let Some(head) = head.filter(|h| udp::is_query(h)) else {
                    return;
                };
                // As over UDP: a bare FORMERR header, and on to the next.
                let mut framed = 12u16.to_be_bytes().to_vec();
                framed.extend_from_slice(&udp::formerr(&head));
                let mut write = write.lock().await;
                if !matches!(
                    tokio::time::timeout(WRITE, write.write_all(&framed)).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
            }
        }
        table.set_busy(id, false);
    }
}

/// Writes one response, with its length first.
#[derive(Clone)]
struct TcpReply {
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
}

#[async_trait::async_trait]
impl ResponseHandler for TcpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // Encoded on its own (compression pointers count from the message's
        // first octet), then framed with its length.
        let mut message = Vec::with_capacity(512);
        let info = response.destructive_emit(&mut BinEncoder::new(&mut message))?;
        let len = u16::try_from(message.len())
            .map_err(|_| NetError::from("a response over 65535 octets"))?;
        let mut bytes = Vec::with_capacity(message.len() + 2);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&message);
        let mut write = self.write.lock().await;
        match tokio::time::timeout(WRITE, write.write_all(&bytes)).await {
            Ok(Ok(())) => Ok(info),
            Ok(Err(e)) => Err(NetError::from(e)),
            Err(_) => Err(NetError::from("writing a TCP response timed out")),
        }
    }
}

/// The open connections: a slot each, and since when each has waited for
/// a query, so that at the cap the one idle longest can be closed.
struct Connections {
    slots: Arc<Semaphore>,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

/// One open connection.
struct Open {
    /// Since when it has waited for a query; `None` while it reads or
    /// answers one (never closed for a new connection then).
    idle_since: Option<Instant>,
    close: Arc<Notify>,
}

/// How long a connection must have waited for a query before a new one may
/// take its place: a burst of clients larger than the cap then waits its
/// turn in the kernel's backlog, each answered as slots free, instead of
/// each newcomer closing one that was about to ask.
const EVICT_AFTER: Duration = Duration::from_secs(1);

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A free slot; at the cap, the connection idle longest (for at least
    /// `EVICT_AFTER`) is told to close, and its slot is taken when it has.
    async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        loop {
            if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                return slot;
            }
            let now = Instant::now();
            let idlest = self.open.lock().ok().and_then(|open| {
                open.values()
                    .filter_map(|o| Some((o.idle_since?, &o.close)))
                    .filter(|(since, _)| now.duration_since(*since) >= EVICT_AFTER)
                    .min_by_key(|(since, _)| *since)
                    .map(|(_, close)| Arc::clone(close))
            });
            if let Some(close) = idlest {
                close.notify_one();
            }
            let wait = Duration::from_millis(100);
            if let Ok(Ok(slot)) =
                tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await
            {
                return slot;
            }
        }
    }

    /// A new connection, idle until its first query arrives.
    fn register(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        if let Ok(mut open) = self.open.lock() {
            let idle_since = Some(Instant::now());
            open.insert(
                id,
                Open {
                    idle_since,
                    close: Arc::clone(&close),
                },
            );
        }
        (id, close)
    }

    /// Connection `id` reads or answers a query (`busy`), or waits for the
    /// next one.
    fn set_busy(&self, id: u64, busy: bool) {
        if let Ok(mut open) = self.open.lock()
            && let Some(o) = open.get_mut(&id)
        {
            o.idle_since = (!busy).then(Instant::now);
        }
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    fn open(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }
}
