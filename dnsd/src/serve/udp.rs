//! The UDP path: one OS thread per SO_REUSEPORT socket that blocks until
//! queries arrive, takes all that are waiting (`mmsg`), answers them inline
//! and sends the fast path's replies in one batch.
//!
//! Why not hickory-server's UDP loop: it answers FORMERR to every datagram
//! it cannot decode, responses included, which lets anyone bounce packets
//! off dnsd, and it spawns a task and logs per query. Why not a tokio task:
//! at moderate rates a query then costs an epoll wake-up plus a hand-over
//! between runtime threads, which measured at more than the answer itself.
//! A thread blocked in the kernel is woken once per burst, like NSD's
//! server processes. Queries the fast path does not serve run the general
//! `Handler` on this thread; TCP stays with hickory-server on the runtime.

use std::net::{SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::runtime::Handle;
use tracing::{debug, error};

use crate::serve::affinity::Placement;
use crate::serve::malformed;
use crate::serve::mmsg::{self, Batch};
use crate::serve::server::{self, Handler};

/// Starts the thread serving `socket` (a blocking socket), placed by
/// `placement`. Returns once the thread runs where it should, with whether
/// pinning it worked.
pub fn spawn(
    socket: UdpSocket,
    handler: Handler,
    runtime: Handle,
    mut placement: Placement,
) -> Result<std::io::Result<()>> {
    let name = format!("dnsd-udp-{}", socket.local_addr()?);
    let (settled_tx, settled_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // This thread never binds (see `privileges`).
            if let Err(e) = crate::privileges::drop_thread_capabilities() {
                let _ = settled_tx.send(Err(e));
                return;
            }
            let _ = settled_tx.send(Ok(placement.settle()));
            serve(Arc::new(socket), &handler, &runtime, placement)
        })
        .context("starting a UDP thread")?;
    settled_rx
        .recv()
        .context("a UDP thread ended before it started serving")?
        .context("a UDP thread giving up its capabilities")
}

/// Serves queries arriving on `socket`, for as long as the process runs.
fn serve(socket: Arc<UdpSocket>, handler: &Handler, runtime: &Handle, mut placement: Placement) {
    let mut batch = Batch::new();
    loop {
        let received = match batch.recv(&socket) {
            Ok(n) => n,
            Err(error) => {
                // ICMP errors from earlier sends surface here; keep going.
                debug!(%error, "receiving on a UDP socket");
                continue;
            }
        };
        if let Err(error) = placement.after_receive(received, mmsg::BATCH) {
            debug!(%error, "moving a UDP thread");
        }
        batch.answer_each(|packet, src, out| {
            if !is_query(packet) || src.port() == 0 {
                return false;
            }
            // A bug that panics on one query must not stop this socket
            // (the kernel keeps steering a share of clients to it).
            let answered = panic::catch_unwind(AssertUnwindSafe(|| {
                if handler.fast_answer(packet, src.ip(), out) {
                    return true;
                }
                general(&socket, handler, runtime, packet, src);
                false
            }));
            answered.unwrap_or_else(|_| {
                error!(%src, "answering a query panicked; the query is dropped");
                false
            })
        });
        batch.flush(&socket);
    }
}

/// Answers one query through the general path, sending the reply itself.
fn general(
    socket: &Arc<UdpSocket>,
    handler: &Handler,
    runtime: &Handle,
    packet: &[u8],
    src: SocketAddr,
) {
    match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
        Ok(request) => {
            let reply = UdpReply {
                socket: socket.clone(),
                dst: src,
                question: request.queries.as_bytes().into(),
            };
            // The handler never waits on I/O here (the reply is a plain
            // blocking send), so this only drives it to completion.
            runtime.block_on(handler.handle_request::<_, TokioTime>(&request, reply));
        }
        Err(error) => {
            malformed::seen(src, &error);
            let _ = socket.send_to(&formerr(packet), src);
        }
    }
}

/// Whether a datagram can be a query: a whole header with QR clear.
/// Anything else gets no reply at all.
pub(crate) fn is_query(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[2] & 0x80 == 0
}

/// A bare FORMERR header for a query that does not decode: the ID, opcode
/// and RD echoed, no sections (as NSD).
pub(crate) fn formerr(query: &[u8]) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..2].copy_from_slice(&query[..2]);
    h[2] = 0x80 | (query[2] & 0x79);
    h[3] = 0x01;
    h
}

/// Cuts an encoded response down to its header and question (whose length
/// is `question_len` when the header counts `questions`) with TC set.
fn truncate_to_question(bytes: &mut Vec<u8>, question_len: usize, questions: u16) {
    let keep = if questions == 1 {
        12 + question_len
    } else {
        12
    };
    bytes.truncate(keep);
    if let Some(header) = bytes.get_mut(..12) {
        header[2] |= 0x02;
        header[4..6].copy_from_slice(&u16::from(questions == 1).to_be_bytes());
        header[6..12].fill(0);
    }
}

/// Sends one response back to the client that asked.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    /// The query's question section, as it sent it: a response that echoes
    /// it compresses names into it (`server::response_encoder`).
    question: Arc<[u8]>,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
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
        // RFC 1035 §4.2.1 and RFC 6891 §6.2.5: never more than the client
        // can take. The handler has already fitted the response; the check
        // below is the backstop that sets TC rather than send too much. The
        // encoder itself is not limited: hickory writes a name in full
        // before it compresses it, so a limit would refuse a long name that
        // ends up a two-byte pointer.
        let limit = usize::from(response.edns().map_or(512, |e| e.max_payload().max(512)));
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = server::transport_encoder(
            &mut bytes,
            Protocol::Udp,
            &self.question,
            response.metadata(),
        )?;
        let info = response.destructive_emit(&mut encoder)?;
        if bytes.len() > limit {
            error!(
                dst = %self.dst,
                len = bytes.len(),
                limit,
                "a response exceeds the client's buffer; sent truncated instead"
            );
            truncate_to_question(&mut bytes, self.question.len(), info.counts().queries);
        }
        if let Err(error) = self.socket.send_to(&bytes, self.dst) {
            debug!(%error, dst = %self.dst, "sending a UDP response");
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_headers_with_qr_clear_are_queries() {
        assert!(!is_query(&[0; 11]));
        assert!(is_query(&[0; 12]));
        let mut response = [0u8; 12];
        response[2] = 0x80;
        assert!(!is_query(&response));
    }

    #[test]
    fn the_backstop_keeps_the_header_and_question_with_tc() {
        let question = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01";
        let mut bytes = vec![0xab, 0xcd, 0x84, 0x00, 0, 1, 0, 40, 0, 0, 0, 1];
        bytes.extend_from_slice(question);
        bytes.extend_from_slice(&[0xc0; 600]);
        truncate_to_question(&mut bytes, question.len(), 1);
        assert_eq!(bytes.len(), 12 + question.len());
        assert_eq!(bytes[2], 0x86, "TC set, the rest of the flags kept");
        assert_eq!(&bytes[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[12..], question);
        let mut no_question = vec![0xab, 0xcd, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        truncate_to_question(&mut no_question, question.len(), 0);
        assert_eq!(
            no_question,
            [0xab, 0xcd, 0x83, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn formerr_echoes_id_opcode_and_rd() {
        let query = [0xab, 0xcd, 0x29, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let reply = formerr(&query);
        assert_eq!(&reply[..2], &[0xab, 0xcd]);
        // QR set, opcode 5 and RD kept, AA/TC cleared; rcode FORMERR.
        assert_eq!(reply[2], 0x80 | 0x28 | 0x01);
        assert_eq!(reply[3], 0x01);
        assert_eq!(&reply[4..], &[0; 8]);
    }
}
