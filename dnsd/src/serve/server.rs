//! The hickory-server `RequestHandler` that turns a parsed request into a
//! response with `answer::answer`.
//!
//! The handler owns the protocol rules around the answer: EDNS (OPT echoed
//! with our 1232-byte payload, BADVERS for versions above 0, Client Subnet
//! echoed with scope 0), UPDATE handed to `update_handler` (NOTIMP when
//! dnsd runs without it), NOTIMP for other opcodes but QUERY, FORMERR for a
//! query without exactly one question, zone transfers asked over UDP (see
//! `answer::transfer_over_udp`), and truncation: over UDP an answer that
//! does not fit the client's buffer keeps what fits of it, RRset by RRset,
//! as NSD and Knot fill a response (`choose_fit`); over TCP it is sent
//! whole. UDP datagrams come through `udp`; TCP connections through
//! hickory-server's `Server`; `sockets` binds both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::ProtoError;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::tsig::TsigError;
use hickory_server::proto::rr::{Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::debug;

use crate::answer::{self, Context, Question, Response, Section, steer};
use crate::change::tsig::{self, Found};
use crate::change::update_handler::Updater;
use crate::clock::unix_now;
use crate::metrics;
use crate::serve::MAX_UDP_PAYLOAD;
use crate::serve::{fast_path, malformed};
use crate::snapshot::SharedSnapshot;
use crate::transfer::Transfers;
use crate::transfer::replica::Notified;

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
    /// Zone transfers over TCP, when they are served at all.
    transfers: Option<Arc<Transfers>>,
}

impl Handler {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        Self {
            snapshot,
            rotation: Arc::new(AtomicU64::new(0)),
            updates: None,
            transfers: None,
        }
    }

    /// Serves zone transfers over TCP with `transfers`.
    pub fn with_transfers(mut self, transfers: Arc<Transfers>) -> Self {
        self.transfers = Some(transfers);
        self
    }

    /// The transfer service, if transfers are served, and the snapshot
    /// served now.
    pub fn transfers(&self) -> Option<(&Transfers, Arc<crate::snapshot::Snapshot>)> {
        let transfers = self.transfers.as_deref()?;
        Some((transfers, self.snapshot.load_full()))
    }

    /// Hands UPDATE requests to `updater`.
    pub fn with_updates(mut self, updater: Arc<Updater>) -> Self {
        self.updates = Some(updater);
        self
    }

    /// Answers a raw UDP query through the fast path into `out`, if it is
    /// one that path serves.
    pub fn fast_answer(&self, query: &[u8], src: std::net::IpAddr, out: &mut Vec<u8>) -> bool {
        fast_path::answer(&self.snapshot.load(), query, src, &self.rotation, out)
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
        // which is true but for services answered by region, whose answers
        // set it (`scope_client_subnet`).
        let echo = ClientSubnet::new(ecs.addr(), ecs.source_prefix(), 0);
        edns.options_mut().insert(EdnsOption::Subnet(echo));
    }
    Some(edns)
}

/// Who asks, for answers chosen by region: the Client Subnet option's
/// network when the query has one (RFC 7871), else the source address.
fn client_of(request: &Request) -> steer::Client {
    if let Some(EdnsOption::Subnet(ecs)) = request
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
    {
        return steer::Client {
            addr: ecs.addr(),
            ecs_prefix: Some(ecs.source_prefix()),
        };
    }
    steer::Client {
        addr: request.src().ip(),
        ecs_prefix: None,
    }
}

/// Sets the scope of the echoed Client Subnet option to the prefix the
/// answer was chosen by.
fn scope_client_subnet(edns: &mut Edns, scope: u8) {
    let echoed = match edns.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(ecs)) => ClientSubnet::new(ecs.addr(), ecs.source_prefix(), scope),
        _ => return,
    };
    // `insert` appends: the echo without a scope goes first.
    edns.options_mut().remove(EdnsCode::Subnet);
    edns.options_mut().insert(EdnsOption::Subnet(echoed));
}

/// Room kept for the TSIG record of a signed answer: a key name of up to
/// 255 octets, hmac-sha256's name, the fixed fields and a 32-octet MAC.
const TSIG_ROOM: usize = 255 + 13 + 10 + 16 + 32;

/// How the answer to a query is signed.
enum QuerySigning {
    Unsigned,
    /// With the key that signed the query, whose signature verified.
    Signed {
        sig: Box<tsig::Signature>,
        secret: Vec<u8>,
        now: u64,
    },
}

/// The answer to a query whose TSIG is wrong: FORMERR for a malformed one,
/// NOTAUTH and the TSIG error (unsigned) for one that does not verify.
struct Refusal {
    rcode: ResponseCode,
    tsig_error: Option<(Box<tsig::Signature>, TsigError)>,
}

impl Handler {
    /// How the answer to `request` is signed: as the query was, with a key
    /// of dnsd.toml (RFC 8945 §5.2: the key, then the MAC, then the time).
    fn query_signing(&self, request: &Request) -> Result<QuerySigning, Refusal> {
        let sig = match tsig::find(request.as_slice()) {
            Found::Unsigned => return Ok(QuerySigning::Unsigned),
            Found::Malformed(_) => {
                return Err(Refusal {
                    rcode: ResponseCode::FormErr,
                    tsig_error: None,
                });
            }
            Found::Signed(sig) => sig,
        };
        let now = unix_now();
        let secret = self
            .transfers
            .as_ref()
            .and_then(|t| t.config())
            .and_then(|c| {
                c.tsig_key(&sig.key_name.to_ascii())
                    .map(|k| k.secret.clone())
            });
        match tsig::verify(request.as_slice(), &sig, secret.as_deref(), now) {
            Ok(()) => Ok(QuerySigning::Signed {
                sig,
                secret: secret.unwrap_or_default(),
                now,
            }),
            Err(error) => {
                debug!(src = %request.src(), key = %sig.key_name, ?error, "a signed query whose TSIG does not verify");
                Err(Refusal {
                    rcode: ResponseCode::NotAuth,
                    tsig_error: Some((sig, error)),
                })
            }
        }
    }
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

/// Which RRsets a response is sent with: the first `answer` and
/// `authority` RRsets of those sections, the additional RRsets `additional`
/// keeps (all of them when `None`), and whether the response is truncated.
struct Fit {
    answer: usize,
    authority: usize,
    additional: Option<Vec<bool>>,
    truncated: bool,
}

impl Fit {
    const FULL: Fit = Fit {
        answer: usize::MAX,
        authority: usize::MAX,
        additional: None,
        truncated: false,
    };

    /// TC, with the answer and authority RRsets before the first one that
    /// did not fit, and no additional data.
    fn truncated(answer: usize, authority: usize) -> Self {
        Self {
            answer,
            authority,
            additional: Some(Vec::new()),
            truncated: true,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let bad_version = request.edns.as_ref().is_some_and(|e| e.version() > 0);
        if !bad_version
            && request.metadata.op_code == OpCode::Update
            && let Some(updates) = &self.updates
        {
            // Counted by the updater once it is answered.
            return updates.start(request, response_handle, response_edns(request));
        }
        let info = self.respond(request, response_handle, bad_version).await;
        let transport = match request.protocol() {
            Protocol::Udp => metrics::Transport::Udp,
            _ => metrics::Transport::Tcp,
        };
        let qtype = request
            .request_info()
            .map_or(0, |i| u16::from(i.query.query_type()));
        metrics::query(
            transport,
            metrics::AnswerPath::General,
            qtype,
            u16::from(info.response_code),
        );
        info
    }
}

impl Handler {
    /// Answers anything but an UPDATE that the updater takes.
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
        bad_version: bool,
    ) -> ResponseInfo {
        let mut edns = response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // NSD and Knot answer with CD clear: dnsd serves no DNSSEC data.
        metadata.checking_disabled = false;

        // NOTIFY is taken for replica zones (`transfer::replica`).
        let notify = request.metadata.op_code == OpCode::Notify && self.transfers.is_some();
        let error = if bad_version {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query && !notify {
            Some(ResponseCode::NotImp)
        } else if request.queries.len() != 1 || compressed(request.queries.as_bytes()) {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        if let Some(rcode) = error {
            if rcode == ResponseCode::FormErr {
                malformed::seen(request.src(), &"not one question, or a compressed one");
            }
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

        // A signed query gets a signed answer (RFC 8945 §5.3); one whose
        // signature does not verify gets NOTAUTH and the TSIG error.
        let signing = match self.query_signing(request) {
            Ok(signing) => signing,
            Err(refusal) => {
                metadata.response_code = refusal.rcode;
                let builder = MessageResponseBuilder::new(&request.queries, None);
                let mut response = builder.build_no_records(metadata);
                if let Some((sig, error)) = refusal.tsig_error
                    && let Some(record) =
                        tsig::response_record(&sig, &[], &[], unix_now(), Some(error))
                {
                    response.set_signature(record);
                }
                return finish(response_handle.send_response(response).await, metadata);
            }
        };

        if notify {
            return self
                .notify(request, response_handle, metadata, signing)
                .await;
        }

        let query = &request.queries.queries()[0];
        let question = Question {
            name: query.original().name(),
            qtype: query.query_type(),
            qclass: query.query_class(),
        };
        let cx = Context {
            rotation: self.rotation.fetch_add(1, Ordering::Relaxed),
            client: Some(client_of(request)),
        };
        let snapshot = self.snapshot.load();
        let transfer = matches!(question.qtype, RecordType::AXFR | RecordType::IXFR);
        let resp = if transfer && request.protocol() == Protocol::Udp {
            let src = request.src().ip();
            answer::transfer_over_udp(&snapshot, &question, |zone| {
                let origin = zone.origin.to_ascii().to_ascii_lowercase();
                self.transfers
                    .as_ref()
                    .and_then(|t| t.config())
                    .is_some_and(|c| c.may_transfer(&origin, src, None))
            })
        } else {
            answer::answer(&snapshot, &question, cx)
        };
        metadata.authoritative = resp.authoritative;
        metadata.response_code = resp.rcode;
        if let (Some(scope), Some(edns)) = (resp.ecs_scope, edns.as_mut()) {
            scope_client_subnet(edns, scope);
        }

        // A signed answer keeps room for its TSIG record.
        let tsig_room = match &signing {
            QuerySigning::Signed { .. } => TSIG_ROOM,
            QuerySigning::Unsigned => 0,
        };
        let limit = size_limit(request).saturating_sub(tsig_room);
        // An OPT record is 11 bytes plus its options; ours carry at most an
        // echoed Client Subnet (4 + 4 + 16 bytes).
        let opt_len = if edns.is_some() { 11 + 24 } else { 0 };
        let asked = request.queries.as_bytes();
        let bound = 12 + asked.len() + opt_len + resp.wire_len();
        let fit = if bound <= limit {
            Fit::FULL
        } else {
            choose_fit(asked, edns.as_ref(), &resp, limit)
        };
        metadata.truncation = fit.truncated;
        let response = message(request, edns.as_ref(), metadata, &resp, &fit);
        match signing {
            QuerySigning::Unsigned => {
                finish(response_handle.send_response(response).await, metadata)
            }
            QuerySigning::Signed { sig, secret, now } => {
                // The MAC covers the response exactly as it is sent, less
                // the TSIG record appended after it.
                let mut unsigned = Vec::with_capacity(512);
                let emitted = transport_encoder(
                    &mut unsigned,
                    request.protocol(),
                    request.queries.as_bytes(),
                    response.metadata(),
                )
                .and_then(|mut encoder| response.destructive_emit(&mut encoder));
                let record = emitted
                    .ok()
                    .and_then(|_| tsig::response_record(&sig, &secret, &unsigned, now, None));
                let mut response = message(request, edns.as_ref(), metadata, &resp, &fit);
                if let Some(record) = record {
                    response.set_signature(record);
                }
                finish(response_handle.send_response(response).await, metadata)
            }
        }
    }
}

impl Handler {
    /// Answers a NOTIFY (RFC 1996): NOERROR for a replica zone's primary
    /// (signed with the replica's key, if it has one), whose zone is then
    /// refreshed; REFUSED for anyone else, NOTAUTH for a primary's NOTIFY
    /// not signed as it must be. Signed as it was.
    async fn notify<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
        mut metadata: Metadata,
        signing: QuerySigning,
    ) -> ResponseInfo {
        let origin = request.queries.queries()[0]
            .original()
            .name()
            .to_ascii()
            .to_ascii_lowercase();
        let key = match &signing {
            QuerySigning::Signed { sig, .. } => Some(sig.key_name.to_ascii().to_ascii_lowercase()),
            QuerySigning::Unsigned => None,
        };
        let src = request.src().ip();
        let verdict = self
            .transfers
            .as_ref()
            .and_then(|t| Some((t, t.config()?)))
            .map_or(Notified::NotOurs, |(t, config)| {
                t.replicas
                    .notified(&config.replicas, &origin, src, key.as_deref())
            });
        debug!(zone = origin, %src, ?verdict, "NOTIFY");
        metadata.response_code = match verdict {
            Notified::Taken => ResponseCode::NoError,
            Notified::NotOurs => ResponseCode::Refused,
            Notified::Unsigned => ResponseCode::NotAuth,
        };
        metadata.authoritative = verdict == Notified::Taken;
        let response =
            MessageResponseBuilder::new(&request.queries, None).build_no_records(metadata);
        let QuerySigning::Signed { sig, secret, now } = signing else {
            return finish(response_handle.send_response(response).await, metadata);
        };
        let mut unsigned = Vec::with_capacity(128);
        let record = transport_encoder(
            &mut unsigned,
            request.protocol(),
            request.queries.as_bytes(),
            response.metadata(),
        )
        .and_then(|mut encoder| response.destructive_emit(&mut encoder))
        .ok()
        .and_then(|_| tsig::response_record(&sig, &secret, &unsigned, now, None));
        let mut response =
            MessageResponseBuilder::new(&request.queries, None).build_no_records(metadata);
        if let Some(record) = record {
            response.set_signature(record);
        }
        finish(response_handle.send_response(response).await, metadata)
    }
}

/// The response message as sent with `fit`.
fn message<'q, 'r>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    metadata: Metadata,
    resp: &'r Response,
    fit: &'r Fit,
) -> MessageResponse<
    'q,
    'r,
    impl Iterator<Item = &'r Record> + Send + 'r,
    impl Iterator<Item = &'r Record> + Send + 'r,
    std::iter::Empty<&'r Record>,
    impl Iterator<Item = &'r Record> + Send + 'r,
> {
    let first = |section: &'r Section, n: usize| {
        (0..section.len().min(n)).flat_map(move |i| resp.rrset(section, i))
    };
    let kept = &fit.additional;
    let additional = (0..resp.additional.len())
        .filter(move |&i| kept.as_ref().is_none_or(|k| k.get(i) == Some(&true)))
        .flat_map(move |i| resp.rrset(&resp.additional, i));
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    builder.build(
        metadata,
        first(&resp.answer, fit.answer),
        first(&resp.authority, fit.authority),
        std::iter::empty(),
        additional,
    )
}

/// The fullest way to send `resp` within `limit` bytes, as NSD and Knot
/// fill a response that must fit a UDP buffer (RFC 2181 §9):
/// - the answer and authority sections keep their RRsets in order, each
///   whole, up to the first that does not fit, which sets TC and ends the
///   response: a CNAME chain keeps the links that fit, and a negative
///   answer whose SOA does not fit is truncated (as NSD; Knot leaves the
///   SOA out without TC, but a resolver cannot cache a negative answer
///   without it, RFC 2308 §5);
/// - the additional section then takes each RRset that still fits, whole,
///   and skips those that do not; when one it skips is the glue of an
///   in-domain name server of a referral, the referral is incomplete and
///   says so with TC (RFC 9471 §3), still carrying the glue that did fit.
///   That is Knot's referral; NSD 4.6 sends it without TC, and its
///   additional section takes records by type (every A, then every AAAA)
///   rather than by name server.
///
/// Each RRset is encoded as the response will encode it (same compression,
/// see `response_encoder`), so the sizes are exact; the OPT record keeps
/// its room. Only responses near the limit pay for this encoding.
fn choose_fit(question: &[u8], edns: Option<&Edns>, resp: &Response, limit: usize) -> Fit {
    let nothing = || Fit::truncated(0, 0);
    let opt_len = edns.map_or(Some(0), |edns| {
        let mut opt = Vec::new();
        Record::from(edns)
            .emit(&mut BinEncoder::new(&mut opt))
            .ok()
            .map(|()| opt.len())
    });
    let Some(room) = opt_len.and_then(|len| limit.checked_sub(len)) else {
        return nothing();
    };
    let mut buf = Vec::with_capacity(limit + 512);
    let Ok(mut encoder) = response_encoder(&mut buf, question) else {
        return nothing();
    };
    let mut kept = [0usize; 2];
    for (s, section) in [&resp.answer, &resp.authority].into_iter().enumerate() {
        for i in 0..section.len() {
            if !emit_within(&mut encoder, resp.rrset(section, i).iter(), room) {
                return Fit::truncated(kept[0], kept[1]);
            }
            kept[s] += 1;
        }
    }
    let mut additional = vec![false; resp.additional.len()];
    let mut truncated = false;
    for (i, keep) in additional.iter_mut().enumerate() {
        *keep = emit_within(&mut encoder, resp.rrset(&resp.additional, i).iter(), room);
        truncated |= !*keep && resp.additional.is_required(i);
    }
    Fit {
        answer: kept[0],
        authority: kept[1],
        additional: Some(additional),
        truncated,
    }
}

/// Emits `records` if the message stays within `room` bytes; if not,
/// leaves the encoder as it was (bytes and compression targets) and says
/// so.
fn emit_within<'r>(
    encoder: &mut BinEncoder<'_>,
    records: impl Iterator<Item = &'r Record>,
    room: usize,
) -> bool {
    let mark = encoder.offset();
    for record in records {
        if record.emit(encoder).is_err() || encoder.offset() > room {
            // `trim` drops the bytes and every compression target that
            // starts past the mark.
            encoder.set_offset(mark);
            encoder.trim();
            return false;
        }
    }
    true
}

/// Most compression targets a question seeds; hickory keeps 64 in all, and
/// later names need some.
const QUESTION_TARGETS: usize = 32;

/// An encoder for a response to a query whose question section is
/// `question` (as the query sent it), positioned after that question, with
/// every suffix of the question name registered as a compression target.
///
/// Why: hickory-server copies the question as one block and registers it
/// whole, type and class included, so no later name can point into it and
/// every response spells out the asked name again. NSD and Knot point the
/// owner of the answer at the question, and a 255-octet name answered at
/// 512 bytes needs that. The response is then emitted over this encoder
/// from offset 0: the header and question are written again, byte for
/// byte the same, so the targets stay valid.
/// The encoder a response goes out through over `protocol`, as the
/// transports send it: over UDP, an answer to a QUERY that echoes its
/// question `question` (anything but FORMERR, which drops it) compresses
/// names into the question (`response_encoder`); everything else — TCP,
/// UPDATE, FORMERR — is encoded plain. A TSIG MAC over a response is
/// computed over these very bytes.
pub fn transport_encoder<'b>(
    buf: &'b mut Vec<u8>,
    protocol: Protocol,
    question: &[u8],
    metadata: &Metadata,
) -> Result<BinEncoder<'b>, ProtoError> {
    let echoes =
        metadata.op_code == OpCode::Query && metadata.response_code != ResponseCode::FormErr;
    if protocol != Protocol::Udp || !echoes {
        return Ok(BinEncoder::new(buf));
    }
    let mut encoder = response_encoder(buf, question)?;
    encoder.set_offset(0);
    Ok(encoder)
}

pub fn response_encoder<'b>(
    buf: &'b mut Vec<u8>,
    question: &[u8],
) -> Result<BinEncoder<'b>, ProtoError> {
    let mut encoder = BinEncoder::new(buf);
    encoder.emit_vec(&[0; 12])?;
    encoder.emit_vec(question)?;
    // Label starts of the question name, up to its root label.
    let mut starts = Vec::new();
    let mut at = 0;
    let root = loop {
        match question.get(at) {
            Some(0) => break Some(at),
            // A compressed or truncated question: register nothing.
            Some(&len) if len < 0x40 => {
                starts.push(at);
                at += 1 + usize::from(len);
            }
            _ => break None,
        }
    };
    if let Some(root) = root {
        // The whole name first, then the suffixes nearest the root, which
        // the zone's other names share.
        let skip = starts.len().saturating_sub(QUESTION_TARGETS);
        for start in starts.iter().take(1).chain(starts.iter().skip(skip.max(1))) {
            encoder.store_label_pointer(12 + start, 12 + root);
        }
    }
    // hickory-server registers the question as a block too (it can never
    // match a name, but it takes a place): the same here keeps the trial
    // encoding in `choose_fit` exactly the sent one.
    if !question.is_empty() {
        encoder.store_label_pointer(12, 12 + question.len());
    }
    Ok(encoder)
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

/// Whether a question's name, as the query wrote it, uses a compression
/// pointer. The question is echoed as raw octets, where a pointer would
/// point at other bytes of the response; no client compresses the one
/// name of a query, so such a query is FORMERR, without its question (as
/// NSD answers it).
fn compressed(question: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&len) = question.get(i) {
        if len == 0 {
            return false;
        }
        if len & 0xc0 != 0 {
            return true;
        }
        i += 1 + usize::from(len);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use hickory_server::proto::op::{Message, MessageType, Query};
    use hickory_server::proto::rr::Name;
    use hickory_server::proto::serialize::binary::BinDecodable;

    const ZONE: &str = "$TTL 300
@        IN SOA ns1 hostmaster 7 3600 600 86400 120
@        IN NS  ns1
ns1      IN A   198.18.0.53
mail     IN A   198.18.0.25
mail     IN AAAA 2001:2::25
c1       IN CNAME c2
c2       IN CNAME c3
c3       IN CNAME big
*.lw     IN A   198.18.12.1
mx       IN MX  10 big6
mx       IN MX  20 mail
sibs     IN NS  ns1.elsewhere-sibs
sibs     IN NS  ns2.elsewhere-sibs
";

    /// `ZONE` with generated RRsets: 40 A at big, 30 AAAA at big6, a
    /// delegation with 16 in-domain name servers (A and AAAA glue each),
    /// and chains of long names into a missing name.
    fn zone() -> String {
        let mut z = ZONE.to_string();
        for i in 1..=40 {
            z.push_str(&format!("big IN A 198.18.3.{i}\n"));
        }
        for i in 1..=30 {
            z.push_str(&format!("big6 IN AAAA 2001:2::3:{i:x}\n"));
        }
        for i in 1..=16 {
            z.push_str(&format!("bigdel IN NS ns{i:02}.bigdel\n"));
            z.push_str(&format!("ns{i:02}.bigdel IN A 198.18.14.{i}\n"));
            z.push_str(&format!("ns{i:02}.bigdel IN AAAA 2001:2::14:{i:x}\n"));
        }
        let long = |n: usize, a: char, b: char| {
            format!(
                "n{n}.{}.{}",
                a.to_string().repeat(63),
                b.to_string().repeat(63)
            )
        };
        z.push_str(&format!("n1 IN CNAME {}\n", long(2, 'a', 'b')));
        z.push_str(&format!(
            "{} IN CNAME {}\n",
            long(2, 'a', 'b'),
            long(3, 'c', 'd')
        ));
        z.push_str(&format!(
            "{} IN CNAME {}\n",
            long(3, 'c', 'd'),
            long(4, 'e', 'f')
        ));
        z
    }

    fn snapshot() -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/example.test.zone"), zone()).unwrap();
        std::fs::write(dir.path().join("dnsd.toml"), "").unwrap();
        Snapshot::build(&crate::zone::load(dir.path()).unwrap(), None)
    }

    /// A UDP query for `name`, with an EDNS buffer of `payload` if any.
    fn query(name: &str, qtype: RecordType, payload: Option<u16>) -> Request {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(payload) = payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            m.edns = Some(edns);
        }
        let src = "127.0.0.1:5353".parse().unwrap();
        Request::from_bytes(m.to_vec().unwrap(), src, Protocol::Udp).unwrap()
    }

    /// What the UDP path sends for `request`, encoded as `udp` encodes it,
    /// always through `choose_fit`: its size and the decoded message.
    fn reply(s: &Snapshot, request: &Request) -> (usize, usize, Message) {
        let edns = response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let q = &request.queries.queries()[0];
        let question = Question {
            name: q.original().name(),
            qtype: q.query_type(),
            qclass: q.query_class(),
        };
        let resp = answer::answer(
            s,
            &question,
            Context {
                rotation: 0,
                client: None,
            },
        );
        metadata.authoritative = resp.authoritative;
        metadata.response_code = resp.rcode;
        let limit = size_limit(request);
        let fit = choose_fit(request.queries.as_bytes(), edns.as_ref(), &resp, limit);
        metadata.truncation = fit.truncated;
        let response = message(request, edns.as_ref(), metadata, &resp, &fit);
        let mut bytes = Vec::new();
        let mut encoder = response_encoder(&mut bytes, request.queries.as_bytes()).unwrap();
        encoder.set_offset(0);
        response.destructive_emit(&mut encoder).unwrap();
        let decoded = Message::from_bytes(&bytes).unwrap();
        (bytes.len(), limit, decoded)
    }

    fn types(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| r.record_type().to_string())
            .collect()
    }

    #[test]
    fn a_truncated_answer_keeps_the_cname_chain_that_fits() {
        let s = snapshot();
        for payload in [None, Some(512)] {
            let (len, limit, m) = reply(&s, &query("c1.example.test.", RecordType::A, payload));
            assert!(len <= limit);
            assert!(m.metadata.truncation, "{payload:?}");
            assert_eq!(types(&m.answers), ["CNAME", "CNAME", "CNAME"]);
            assert!(m.authorities.is_empty() && m.additionals.is_empty());
        }
        let (_, _, m) = reply(&s, &query("c1.example.test.", RecordType::A, Some(1232)));
        assert!(!m.metadata.truncation);
        assert_eq!(
            m.answers.len(),
            43,
            "the whole chain and RRset once it fits"
        );
        // An RRset that does not fit is left out whole: TC and nothing.
        let (_, _, m) = reply(&s, &query("big.example.test.", RecordType::A, None));
        assert!(m.metadata.truncation && m.answers.is_empty());
    }

    #[test]
    fn a_negative_answer_without_room_for_its_soa_is_truncated() {
        let s = snapshot();
        let (len, limit, m) = reply(&s, &query("n1.example.test.", RecordType::A, None));
        assert!(len <= limit);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.truncation);
        assert_eq!(types(&m.answers), ["CNAME", "CNAME", "CNAME"]);
        assert!(m.authorities.is_empty());
        let (_, _, m) = reply(&s, &query("n1.example.test.", RecordType::A, Some(1232)));
        assert!(!m.metadata.truncation);
        assert_eq!(types(&m.authorities), ["SOA"]);
    }

    #[test]
    fn a_255_octet_name_under_a_wildcard_is_answered_in_512_bytes() {
        let s = snapshot();
        let labels = [
            "k".repeat(45),
            "A".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
        ];
        let name = format!("{}.lw.example.test.", labels.join("."));
        let request = query(&name, RecordType::A, None);
        assert_eq!(request.queries.as_bytes().len(), 255 + 4);
        let (len, _, m) = reply(&s, &request);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), name, "the owner as asked");
        assert_eq!(
            len,
            12 + 259 + 2 + 10 + 4,
            "the owner points at the question"
        );
    }

    #[test]
    fn a_referral_without_room_for_in_domain_glue_is_truncated_with_the_glue_that_fits() {
        let s = snapshot();
        for payload in [None, Some(512)] {
            let request = query("x.bigdel.example.test.", RecordType::A, payload);
            let (len, limit, m) = reply(&s, &request);
            assert!(len <= limit);
            assert!(m.metadata.truncation, "RFC 9471 §3");
            assert!(!m.metadata.authoritative);
            assert_eq!(m.authorities.len(), 16);
            let glue: Vec<String> = m
                .additionals
                .iter()
                .map(|r| format!("{} {}", r.name, r.record_type()))
                .collect();
            // Name server by name server in NS order, each A then AAAA; an
            // RRset that does not fit is skipped and a smaller one after it
            // may still fit (as Knot fills it).
            assert_eq!(
                glue[..2],
                [
                    "ns01.bigdel.example.test. A",
                    "ns01.bigdel.example.test. AAAA"
                ]
            );
            let mut sorted = glue.clone();
            sorted.sort();
            assert_eq!(glue, sorted, "{glue:?}");
        }
        let (_, _, m) = reply(
            &s,
            &query("x.bigdel.example.test.", RecordType::A, Some(1232)),
        );
        assert!(!m.metadata.truncation);
        assert_eq!(m.additionals.len(), 32);
    }

    #[test]
    fn optional_additional_data_that_does_not_fit_is_left_out_whole_without_tc() {
        let s = snapshot();
        let (len, limit, m) = reply(&s, &query("mx.example.test.", RecordType::MX, None));
        assert!(len <= limit);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 2);
        // big6's 30 AAAA do not fit; mail's addresses after them do.
        let additional: Vec<String> = m.additionals.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(additional, ["mail.example.test.", "mail.example.test."]);
        let (_, _, m) = reply(&s, &query("mx.example.test.", RecordType::MX, Some(1232)));
        assert_eq!(m.additionals.len(), 32);
    }

    #[test]
    fn a_question_whose_name_uses_a_pointer_is_told_apart() {
        assert!(compressed(b"\xc0\x04\x00\x01\x00\x01"));
        assert!(compressed(b"\x03www\xc0\x0c\x00\x01\x00\x01"));
        assert!(!compressed(
            b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
        ));
        assert!(!compressed(b"\x00\x00\x01\x00\x01"));
    }

    #[test]
    fn a_question_that_is_not_plain_labels_seeds_no_compression() {
        for question in [&b"\xc0\x0c\x00\x01\x00\x01"[..], b"\x05ab", b""] {
            let mut buf = Vec::new();
            let encoder = response_encoder(&mut buf, question).unwrap();
            assert_eq!(encoder.offset(), 12 + question.len());
        }
    }
}
