//! The hickory-server `RequestHandler` that turns a parsed request into a
//! response with `answer::answer`.
//!
//! The handler owns the protocol rules around the answer: EDNS (OPT echoed
//! with our 1232-byte payload, BADVERS for versions above 0, Client Subnet
//! echoed with scope 0), UPDATE handed to `update_handler` (NOTIMP when
//! dnsd runs without it), NOTIMP for other opcodes but QUERY, FORMERR for a
//! query without exactly one question, and truncation (TC with empty
//! sections when the answer does not fit the client's UDP buffer; the full
//! answer over TCP). UDP datagrams come through `udp`; TCP connections
//! through hickory-server's `Server`; `sockets` binds both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::debug;

use crate::answer::{self, Context, EMPTY, Question, Response, Section};
use crate::fast_path;
use crate::snapshot::Snapshot;
use crate::update_handler::Updater;

/// The UDP payload dnsd advertises and never exceeds: the DNS Flag Day 2020
/// size that avoids IP fragmentation on common paths.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The served state, shared with the reloader, which swaps it whole.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Answers every query from the current snapshot. Clones share the
/// snapshot and the rotation counter: the UDP tasks and the TCP server each
/// hold one.
#[derive(Clone)]
pub struct Handler {
    snapshot: SharedSnapshot,
    /// Numbers answers for round robin. One counter for all names keeps the
    /// order cyclic for a client asking one name repeatedly, at the cost of
    /// one shared atomic increment per query.
    rotation: Arc<AtomicU64>,
    /// Dynamic updates (RFC 2136), when they are accepted at all.
    updates: Option<Arc<Updater>>,
}

impl Handler {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        Self {
            snapshot,
            rotation: Arc::new(AtomicU64::new(0)),
            updates: None,
        }
    }

    /// Hands UPDATE requests to `updater`.
    pub fn with_updates(mut self, updater: Arc<Updater>) -> Self {
        self.updates = Some(updater);
        self
    }

    /// Answers a raw UDP query through the fast path into `out`, if it is
    /// one that path serves.
    pub fn fast_answer(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        fast_path::answer(&self.snapshot.load(), query, &self.rotation, out)
    }
}

/// The OPT record of a response to `request`, if it had one.
fn response_edns(request: &Request) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    edns.set_version(0);
    edns.set_dnssec_ok(asked.flags().dnssec_ok);
    if let Some(EdnsOption::Subnet(ecs)) = asked.option(EdnsCode::Subnet) {
        // RFC 7871 §7.2.1: scope 0 says the answer holds for every client,
        // which is true until answers depend on where the client is.
        let echo = ClientSubnet::new(ecs.addr(), ecs.source_prefix(), 0);
        edns.options_mut().insert(EdnsOption::Subnet(echo));
    }
    Some(edns)
}

/// Largest response `request` may get.
fn size_limit(request: &Request) -> usize {
    if request.protocol() != Protocol::Udp {
        return usize::from(u16::MAX);
    }
    match &request.edns {
        Some(edns) => edns.max_payload().clamp(512, MAX_UDP_PAYLOAD).into(),
        None => 512,
    }
}

/// Which sections a response is sent with.
#[derive(Clone, Copy, PartialEq)]
enum Fit {
    Full,
    /// The additional section is optional data: keep only its first
    /// records that fit, as NSD does, before truncating.
    Additional(usize),
    Truncated,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // NSD and Knot answer with CD clear: dnsd serves no DNSSEC data.
        metadata.checking_disabled = false;

        let bad_version = request.edns.as_ref().is_some_and(|e| e.version() > 0);
        if !bad_version
            && request.metadata.op_code == OpCode::Update
            && let Some(updates) = &self.updates
        {
            return updates.start(request, response_handle, edns);
        }
        let error = if bad_version {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        if let Some(rcode) = error {
            // A malformed query's questions are not echoed (as NSD and Knot).
            let no_questions;
            let questions = if rcode == ResponseCode::FormErr {
                no_questions = Queries::read(&mut BinDecoder::new(&[]), 0);
                no_questions.as_ref().unwrap_or(&request.queries)
            } else {
                &request.queries
            };
            let mut builder = MessageResponseBuilder::new(questions, None);
            if let Some(edns) = &edns {
                builder.edns(edns);
            }
            metadata.response_code = rcode;
            let response = builder.build_no_records(metadata);
            return finish(response_handle.send_response(response).await, metadata);
        }

        let query = &request.queries.queries()[0];
        let question = Question {
            name: query.original().name(),
            qtype: query.query_type(),
            qclass: query.query_class(),
        };
        let cx = Context {
            rotation: self.rotation.fetch_add(1, Ordering::Relaxed),
        };
        let snapshot = self.snapshot.load();
        let resp = answer::answer(&snapshot, &question, cx);
        metadata.authoritative = resp.authoritative;
        metadata.response_code = resp.rcode;

        let limit = size_limit(request);
        // An OPT record is 11 bytes plus its options; ours carry at most an
        // echoed Client Subnet (4 + 4 + 16 bytes).
        let opt_len = if edns.is_some() { 11 + 24 } else { 0 };
        let bound = 12 + request.queries.as_bytes().len() + opt_len + resp.wire_len();
        let fit = if bound <= limit {
            Fit::Full
        } else {
            choose_fit(request, edns.as_ref(), metadata, &resp, limit)
        };
        if fit == Fit::Truncated {
            metadata.truncation = true;
        }
        let response = message(request, edns.as_ref(), metadata, &resp, fit);
        finish(response_handle.send_response(response).await, metadata)
    }
}

/// The response message as sent with `fit`: the sections it keeps, and
/// as many additional records as it allows.
fn message<'q, 'r>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    metadata: Metadata,
    resp: &'r Response<'_>,
    fit: Fit,
) -> MessageResponse<
    'q,
    'r,
    impl Iterator<Item = &'r Record> + Send + 'r,
    impl Iterator<Item = &'r Record> + Send + 'r,
    std::iter::Empty<&'r Record>,
    impl Iterator<Item = &'r Record> + Send + 'r,
> {
    let (ans, auth, add, take): (&Section<'_>, &Section<'_>, &Section<'_>, usize) = match fit {
        Fit::Full => (&resp.answer, &resp.authority, &resp.additional, usize::MAX),
        Fit::Additional(n) => (&resp.answer, &resp.authority, &resp.additional, n),
        Fit::Truncated => (&EMPTY, &EMPTY, &EMPTY, 0),
    };
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    builder.build(
        metadata,
        resp.records(ans),
        resp.records(auth),
        std::iter::empty(),
        resp.records(add).take(take),
    )
}

/// The fullest way to send a response that may exceed `limit`: the whole
/// response, or fewer additional records, or TC with empty sections (as NSD
/// and Knot: the client retries over TCP). Only answers near the limit pay
/// for these trial encodings.
fn choose_fit(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    resp: &Response<'_>,
    limit: usize,
) -> Fit {
    let Some(full) = trial(request, edns, metadata, resp, Fit::Full, limit) else {
        return Fit::Truncated;
    };
    if !full.truncation {
        return Fit::Full;
    }
    // The encoder stopped at the first record that did not fit: start from
    // what it managed and back off, since the OPT record must fit too.
    let total = resp.records(&resp.additional).count();
    let mut n = usize::from(full.counts().additionals).min(total);
    loop {
        let fit = Fit::Additional(n);
        if trial(request, edns, metadata, resp, fit, limit).is_some_and(|i| !i.truncation) {
            return fit;
        }
        match n.checked_sub(1) {
            Some(less) => n = less,
            None => return Fit::Truncated,
        }
    }
}

/// Encodes the response as sent with `fit` within `limit` bytes.
fn trial(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    resp: &Response<'_>,
    fit: Fit,
    limit: usize,
) -> Option<ResponseInfo> {
    let message = message(request, edns, metadata, resp, fit);
    let mut buf = Vec::with_capacity(limit);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    message.destructive_emit(&mut encoder).ok()
}

fn finish<E: std::fmt::Display>(sent: Result<ResponseInfo, E>, metadata: Metadata) -> ResponseInfo {
    match sent {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, "sending a response failed");
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}
