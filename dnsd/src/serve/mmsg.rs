//! Batched datagram I/O: `recvmmsg` takes every query waiting on a socket
//! in one system call (blocking only for the first), and `sendmmsg` sends
//! the fast path's answers to them in one more, as NSD does. std has no
//! wrapper for these calls, so this module owns the `unsafe` they need:
//! fixed buffers, set up once, whose addresses the kernel writes through.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams taken per system call.
pub const BATCH: usize = 32;

/// Largest datagram read; longer ones are cut (and then fail to decode).
pub const DATAGRAM: usize = 4096;

/// Receive and send buffers for one socket. Heap-allocated once, so the
/// pointers inside the message headers stay valid for its lifetime.
pub struct Batch {
    bufs: Box<[[u8; DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    received: usize,
    /// Replies queued for `flush`: (slot of the query, bytes).
    out: Box<[Vec<u8>]>,
    out_iovs: Box<[libc::iovec]>,
    out_msgs: Box<[libc::mmsghdr]>,
    queued: usize,
}

// SAFETY: the raw pointers in the message headers point only into the
// batch's own boxed buffers, which move with it.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new() -> Self {
        let mut batch = Self {
            bufs: vec![[0u8; DATAGRAM]; BATCH].into_boxed_slice(),
            // SAFETY: all-zero is a valid value of these C structs.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            msgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            received: 0,
            out: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            out_iovs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            out_msgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            queued: 0,
        };
        for i in 0..BATCH {
            batch.iovs[i].iov_base = batch.bufs[i].as_mut_ptr().cast();
            batch.iovs[i].iov_len = DATAGRAM;
            let hdr = &mut batch.msgs[i].msg_hdr;
            hdr.msg_iov = &mut batch.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
        }
        batch
    }

    /// Waits for at least one datagram and takes every one already queued,
    /// up to `BATCH`. Returns how many.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds BATCH headers whose iovecs and name buffers
        // point into this batch's live allocations of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.received = 0;
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Calls `answer` with each datagram of the last `recv`, its sender,
    /// and an empty reply buffer; the reply is queued for `flush` when
    /// `answer` returns true.
    pub fn answer_each(&mut self, mut answer: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool) {
        for i in 0..self.received {
            let m = &self.msgs[i];
            let len = (m.msg_len as usize).min(DATAGRAM);
            let namelen = m.msg_hdr.msg_namelen;
            // SAFETY: the kernel wrote a socket address of `namelen` bytes
            // into this storage.
            let addr = unsafe { socket2::SockAddr::new(self.addrs[i], namelen) };
            let Some(src) = addr.as_socket() else {
                continue;
            };
            let q = self.queued;
            let out = &mut self.out[q];
            out.clear();
            if !answer(&self.bufs[i][..len], src, out) {
                continue;
            }
            self.out_iovs[q].iov_base = out.as_mut_ptr().cast();
            self.out_iovs[q].iov_len = out.len();
            let hdr = &mut self.out_msgs[q].msg_hdr;
            hdr.msg_iov = &mut self.out_iovs[q];
            hdr.msg_iovlen = 1;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = namelen;
            self.queued += 1;
        }
    }

    /// Sends every queued reply. A reply the kernel refuses is dropped, as
    /// a lost datagram would be: the client retries.
    pub fn flush(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.queued {
            // SAFETY: headers `sent..queued` point at live reply buffers and
            // at the senders' addresses, all owned by this batch.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.out_msgs[sent..].as_mut_ptr(),
                    (self.queued - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::debug!(%error, "sending UDP responses");
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
        self.queued = 0;
    }
}
