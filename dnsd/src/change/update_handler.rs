//! Dynamic updates (RFC 2136) as transactions on the config workspace.
//!
//! An UPDATE must be signed with TSIG (RFC 8945, hmac-sha256) by a key that
//! `dnsd.toml` lists for the zone; the response to a signed request is
//! signed. Then, holding the change lock shared with the control API: the
//! live workspace is loaded as a reload would, the prerequisites are
//! checked against it (services applied: what is being served), the update
//! is applied to the zone file's records, the serial bumped, and the
//! rewritten file committed as one new generation ("dynamic update of ZONE
//! by key KEY") whose validator loads the whole staged workspace. Only when
//! the new snapshot serves is NOERROR sent. Anything refused changes
//! nothing.
//!
//! A request signed earlier than one already accepted with the same key
//! is a replay and gets BADTIME. At most 32 UPDATEs are processed at once;
//! more are dropped unanswered, since anyone can send them.
//!
//! The A/AAAA records of a `[[service]]` name are managed by dnsd.toml and
//! the control API: updates that would change them are REFUSED, with the
//! reason logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cutover_workspace::{HistoryError, TsigKey, Workspace};
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::change::keys::Keys;
use crate::change::replay::{ReplayGuard, Seen};
use crate::change::sync::Syncer;
use crate::change::tsig::{self, Found, Signature};
use crate::change::update::{self, Zone};
use crate::change::zone_edit::ChangeLock;
use crate::change::{self, ChangeError, Edited};
use crate::clock::unix_now;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::zone::records;

/// Applies authenticated dynamic updates; one per process, shared by the
/// UDP threads and the TCP server.
pub struct Updater {
    workspace: Workspace,
    reloader: Arc<Reloader>,
    changes: ChangeLock,
    /// Rewrites the zone files from the journal after changes.
    syncer: Arc<Syncer>,
    /// The TSIG keys, read again only when dnsd.toml or a secret file
    /// changed.
    keys: Keys,
    /// Bounds the refusals being sent to UPDATEs that do not authenticate:
    /// anyone can send UPDATE packets. Past it they are dropped unanswered.
    answering: Arc<Semaphore>,
    /// Authenticated UPDATEs applied at once; the others wait their turn
    /// (up to `MAX_WAITING`), however many bogus ones arrive meanwhile.
    in_flight: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// The MACs accepted and not expired: a repeat is a replay.
    replays: ReplayGuard,
}

/// Refusals being sent at once; more requests that do not authenticate
/// are dropped.
const MAX_ANSWERING: usize = 1024;
/// Authenticated UPDATEs applied at once.
const MAX_IN_FLIGHT: usize = 32;
/// Authenticated UPDATEs waiting for a turn; more are dropped.
const MAX_WAITING: usize = 1024;

/// How the response is signed.
enum Signing {
    /// The request was not signed, or its TSIG record was malformed.
    None,
    /// RFC 8945 §5.3.2: BADKEY and BADSIG are answered with an unsigned
    /// TSIG record carrying the error.
    ErrorOnly {
        key_name: Name,
        algorithm: TsigAlgorithm,
        time: u64,
        error: TsigError,
    },
    /// Signed with the request's key (BADTIME too, RFC 8945 §5.2.3).
    Key {
        key_name: Name,
        secret: Vec<u8>,
        request_mac: Vec<u8>,
        time: u64,
        error: Option<TsigError>,
        other: Vec<u8>,
    },
}

/// The answer to one UPDATE.
struct Outcome {
    rcode: ResponseCode,
    signing: Signing,
}

/// What becomes of an UPDATE once it was authenticated, or was not.
enum Step {
    /// Refused (unsigned, bad key, MAC or time): answer this.
    Answer(Outcome),
    /// Authenticated: apply it when its turn comes.
    Apply(Box<Authenticated>),
}

/// A request whose signature verified, with its key.
struct Authenticated {
    sig: Signature,
    key: TsigKey,
    /// When it was received (Unix seconds).
    now: u64,
}

impl Authenticated {
    /// A response signed with the request's key.
    fn signed(
        &self,
        rcode: ResponseCode,
        error: Option<TsigError>,
        time: u64,
        other: Vec<u8>,
    ) -> Outcome {
        Outcome {
            rcode,
            signing: Signing::Key {
                key_name: self.sig.key_name.clone(),
                secret: self.key.secret.clone(),
                request_mac: self.sig.tsig.mac.clone(),
                time,
                error,
                other,
            },
        }
    }

    /// RFC 8945 §5.2.3: BADTIME is signed, with our clock in Other Data so
    /// that the client can tell how far off its own is.
    fn bad_time(&self) -> Outcome {
        self.signed(
            ResponseCode::NotAuth,
            Some(TsigError::BadTime),
            self.sig.tsig.time,
            self.now.to_be_bytes()[2..].to_vec(),
        )
    }
}

/// What a refused or accepted transaction tells the client and the log.
struct Verdict {
    rcode: ResponseCode,
    /// Why, for the log; `None` for a success.
    reason: Option<String>,
    generation: Option<u64>,
    /// How to serve the change.
    serve: change::Serve,
}

impl Verdict {
    fn refuse(rcode: ResponseCode, reason: impl Into<String>) -> Self {
        Self {
            rcode,
            reason: Some(reason.into()),
            generation: None,
            serve: change::Serve::default(),
        }
    }
}

/// Where the MACs accepted are kept, in `.cutover/`.
const ACCEPTED_FILE: &str = "tsig-accepted";

impl Updater {
    pub fn new(
        workspace: Workspace,
        reloader: Arc<Reloader>,
        changes: ChangeLock,
        syncer: Arc<Syncer>,
    ) -> Self {
        let accepted = workspace
            .root()
            .join(cutover_workspace::HISTORY_DIR)
            .join(ACCEPTED_FILE);
        let replays = ReplayGuard::open(accepted, unix_now());
        Self {
            keys: Keys::new(workspace.clone()),
            workspace,
            reloader,
            changes,
            syncer,
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            waiting: AtomicUsize::new(0),
            replays,
        }
    }

    /// Answers the UPDATE `request` from a task of its own, so that a UDP
    /// thread goes back to queries while the workspace is written. The
    /// value returned only describes the request: the response is sent by
    /// that task.
    pub fn start<R: ResponseHandler>(
        self: &Arc<Self>,
        request: &Request,
        response: R,
        edns: Option<Edns>,
    ) -> ResponseInfo {
        let info = ResponseInfo::from(Header {
            metadata: Metadata::response_from_request(&request.metadata),
            counts: HeaderCounts::default(),
        });
        let (src, protocol) = (request.src(), request.protocol());
        let (step, permit) = match self.authenticate(request) {
            Ok(auth) => {
                // Signed: it waits for its turn, however many bogus ones
                // arrive meanwhile; only a full queue drops it.
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    debug!(%src, "dropped a signed UPDATE: {MAX_WAITING} already waiting");
                    crate::metrics::update_dropped();
                    return info;
                }
                (Step::Apply(Box::new(auth)), None)
            }
            Err(outcome) => {
                let Ok(permit) = self.answering.clone().try_acquire_owned() else {
                    debug!(%src, "dropped an UPDATE that does not authenticate: {MAX_ANSWERING} refusals being sent");
                    crate::metrics::update_dropped();
                    return info;
                };
                (Step::Answer(outcome), Some(permit))
            }
        };
        let this = self.clone();
        let raw = request.as_slice().to_vec();
        tokio::spawn(async move {
            this.respond(raw, src, protocol, response, edns, step).await;
            drop(permit);
        });
        info
    }

    async fn respond<R: ResponseHandler>(
        self: Arc<Self>,
        raw: Vec<u8>,
        src: SocketAddr,
        protocol: Protocol,
        mut response: R,
        edns: Option<Edns>,
        step: Step,
    ) {
        // It decoded once already, on the path that brought it here.
        let Ok(request) = Request::from_bytes(raw, src, protocol) else {
            if matches!(step, Step::Apply(_)) {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        };
        let outcome = match step {
            Step::Answer(outcome) => outcome,
            Step::Apply(auth) => match self.apply(&request, *auth).await {
                Some(outcome) => outcome,
                None => {
                    crate::metrics::update_dropped();
                    return;
                }
            },
        };
        crate::metrics::update(u16::from(outcome.rcode));
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = outcome.rcode;
        let build = || {
            let mut builder = MessageResponseBuilder::new(&request.queries, None);
            if let Some(edns) = &edns {
                builder.edns(edns);
            }
            builder.build_no_records(metadata)
        };
        let id = request.metadata.id;
        let signature = match outcome.signing {
            Signing::None => None,
            Signing::ErrorOnly {
                key_name,
                algorithm,
                time,
                error,
            } => {
                let tsig = TSIG::new(
                    algorithm,
                    time,
                    tsig::FUDGE,
                    vec![],
                    id,
                    Some(error),
                    vec![],
                );
                Some(tsig::record(key_name, tsig))
            }
            Signing::Key {
                key_name,
                secret,
                request_mac,
                time,
                error,
                other,
            } => {
                let tsig = TSIG::new(
                    TsigAlgorithm::HmacSha256,
                    time,
                    tsig::FUDGE,
                    vec![],
                    id,
                    error,
                    other,
                );
                // The MAC covers the response exactly as it is sent, less
                // the TSIG record appended after it.
                let mut unsigned = Vec::with_capacity(512);
                let emitted = build().destructive_emit(&mut BinEncoder::new(&mut unsigned));
                let mac = emitted.ok().and_then(|_| {
                    tsig::response_mac(&secret, &request_mac, &unsigned, &key_name, &tsig)
                });
                let Some(mac) = mac else {
                    warn!(%src, "could not sign an UPDATE response; none is sent");
                    return;
                };
                Some(tsig::record(key_name, tsig.set_mac(mac)))
            }
        };
        let mut message = build();
        if let Some(signature) = signature {
            message.set_signature(signature);
        }
        if let Err(e) = response.send_response(message).await {
            debug!(%e, %src, "sending an UPDATE response failed");
        }
    }

    /// Authenticates `request`, cheaply — a `stat` of dnsd.toml and its
    /// secret files, a key lookup, an HMAC — on the thread that received
    /// it: the answer to a request that does not authenticate, or what
    /// applying it needs.
    fn authenticate(&self, request: &Request) -> Result<Authenticated, Outcome> {
        let src = request.src();
        let sig = match tsig::find(request.as_slice()) {
            Found::Signed(sig) => *sig,
            Found::Unsigned => {
                debug!(%src, "refused an unsigned UPDATE");
                return Err(unsigned(ResponseCode::Refused));
            }
            Found::Malformed(why) => {
                debug!(%src, why, "refused an UPDATE with a malformed TSIG record");
                return Err(unsigned(ResponseCode::FormErr));
            }
        };
        let config = match self.keys.current() {
            Ok(config) => config,
            Err(e) => {
                warn!(%e, "an UPDATE cannot be authenticated: dnsd.toml does not load");
                return Err(unsigned(ResponseCode::ServFail));
            }
        };
        // RFC 8945 §5.2: the key first, then the MAC, then the time.
        let Some(key) = config.tsig_key(&sig.key_name.to_ascii()).cloned() else {
            debug!(%src, key = %sig.key_name, "refused an UPDATE signed with an unknown key");
            return Err(error_only(&sig, TsigError::BadKey));
        };
        let now = unix_now();
        let auth = Authenticated { sig, key, now };
        match tsig::verify(request.as_slice(), &auth.sig, Some(&auth.key.secret), now) {
            Ok(()) => {}
            Err(TsigError::BadTime) => {
                debug!(%src, key = %auth.sig.key_name, signed = auth.sig.tsig.time, now, "refused an UPDATE signed outside the fudge");
                return Err(auth.bad_time());
            }
            Err(error) => {
                debug!(%src, key = %auth.sig.key_name, ?error, "refused an UPDATE with a bad key or MAC");
                return Err(error_only(&auth.sig, error));
            }
        }
        Ok(auth)
    }

    /// Applies an authenticated request once its turn comes: a repeat of
    /// one accepted before is refused, the rest runs as a transaction.
    /// `None`: dropped, the turns were all taken.
    async fn apply(&self, request: &Request, auth: Authenticated) -> Option<Outcome> {
        let src = request.src();
        let turn = self.in_flight.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(_turn) = turn else {
            return None;
        };
        let (sig, now) = (&auth.sig, auth.now);
        let fudge = u64::from(sig.tsig.fudge);
        // An fsync: off the async workers' hands.
        let seen = tokio::task::block_in_place(|| {
            self.replays
                .check(&sig.key_name, &sig.tsig.mac, sig.tsig.time, fudge, now)
        });
        match seen {
            Ok(Seen::Fresh) => {}
            Ok(Seen::Repeat) => {
                debug!(%src, key = %sig.key_name, signed = sig.tsig.time, "refused a repeat of an UPDATE already accepted (a replay)");
                return Some(auth.bad_time());
            }
            Err(e) => {
                warn!(%e, "an UPDATE cannot be remembered against replays: refused");
                return Some(unsigned(ResponseCode::ServFail));
            }
        }
        let key = &auth.key;
        let zone = request
            .queries
            .queries()
            .first()
            .map(|q| q.name().to_string())
            .unwrap_or_default();
        let verdict = self.transaction(request, key).await;
        match &verdict.reason {
            None => info!(
                %src, key = %key.name, %zone, generation = verdict.generation,
                "applied a dynamic update"
            ),
            Some(reason) => info!(
                %src, key = %key.name, %zone, rcode = ?verdict.rcode,
                "dynamic update refused: {reason}"
            ),
        }
        Some(auth.signed(verdict.rcode, None, now, Vec::new()))
    }

    /// Everything after authentication: the zone, the key's right to it,
    /// prerequisites, update, commit and reload.
    async fn transaction(&self, request: &Request, key: &TsigKey) -> Verdict {
        let queries = request.queries.queries();
        let [zone] = queries else {
            return Verdict::refuse(ResponseCode::FormErr, "the zone section must hold one zone");
        };
        if zone.query_type() != RecordType::SOA {
            return Verdict::refuse(ResponseCode::FormErr, "the zone section's type must be SOA");
        }
        let origin = zone.name().to_string().to_ascii_lowercase();
        if zone.query_class() != DNSClass::IN {
            return Verdict::refuse(
                ResponseCode::NotAuth,
                format!("class {} is not served", zone.query_class()),
            );
        }
        // A replica's zone changes at its primary only (BIND, without
        // update forwarding, refuses as well).
        if let Ok(config) = self.keys.current()
            && let Some(replica) = config.replica(&origin)
        {
            return Verdict::refuse(
                ResponseCode::Refused,
                format!(
                    "{origin} is a replica of {}: update it there",
                    replica.primary
                ),
            );
        }
        let _one_change = self.changes.lock().await;
        let ws = self.workspace.clone();
        let key = key.clone();
        // Compared with zone data, so in the form zone data is kept.
        let prerequisites: Vec<_> = request.answers.iter().map(records::canonical).collect();
        let updates: Vec<_> = request.authorities.iter().map(records::canonical).collect();
        let message = format!(
            "dynamic update of {origin} by key {}: {} change(s)",
            key.name,
            updates.len()
        );
        let serving = self.reloader.serving();
        let zone = origin.clone();
        let worked = tokio::task::spawn_blocking(move || {
            write_update(
                &ws,
                &serving,
                &key,
                &origin,
                &prerequisites,
                &updates,
                &message,
            )
        })
        .await;
        let mut verdict = match worked {
            Ok(v) => v,
            Err(e) => {
                return Verdict::refuse(
                    ResponseCode::ServFail,
                    format!("the update task failed: {e}"),
                );
            }
        };
        if let (Some(generation), None) = (verdict.generation, &verdict.reason) {
            let serve = std::mem::take(&mut verdict.serve);
            if let Err(e) = self.reloader.serve_change(&zone, serve, generation).await {
                return Verdict::refuse(
                    ResponseCode::ServFail,
                    format!(
                        "generation {generation} was written but does not load; the previous zones keep being served: {e}"
                    ),
                );
            }
            self.syncer.changed(&zone);
        }
        verdict
    }
}

fn unsigned(rcode: ResponseCode) -> Outcome {
    Outcome {
        rcode,
        signing: Signing::None,
    }
}

fn error_only(sig: &Signature, error: TsigError) -> Outcome {
    Outcome {
        rcode: ResponseCode::NotAuth,
        signing: Signing::ErrorOnly {
            key_name: sig.key_name.clone(),
            algorithm: sig.tsig.algorithm.clone(),
            time: sig.tsig.time,
            error,
        },
    }
}

/// The blocking part of a transaction, run with the change lock held: the
/// update as an edit of the zone-change transaction (`zone_change`).
fn write_update(
    ws: &Workspace,
    serving: &Snapshot,
    key: &TsigKey,
    origin: &str,
    prerequisites: &[hickory_proto::rr::Record],
    updates: &[hickory_proto::rr::Record],
    message: &str,
) -> Verdict {
    // Every name the update looks at or changes.
    let mut names: Vec<Name> = Vec::new();
    for r in prerequisites.iter().chain(updates) {
        if !names.contains(&r.name) {
            names.push(r.name.clone());
        }
    }
    let author = "dnsd (RFC 2136 dynamic update)";
    let changed = change::zone(ws, serving, origin, &names, author, |zone| {
        // Only now, so that a zone not served is NOTAUTH whatever the key.
        if !key.allows(origin) {
            return Err(Verdict::refuse(
                ResponseCode::Refused,
                format!(
                    "key {} may not update {origin} (its zones: {})",
                    key.name,
                    key.zones.join(", ")
                ),
            ));
        }
        let scope = Zone {
            origin: zone.origin,
            children: zone.children,
        };
        update::check_prerequisites(&scope, zone.served, prerequisites)
            .map_err(|rcode| Verdict::refuse(rcode, "a prerequisite does not hold"))?;
        update::prescan(&scope, updates).map_err(|rcode| {
            Verdict::refuse(rcode, "the update section is malformed or leaves the zone")
        })?;
        let is_service = |name: &Name| {
            zone.services
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(&name.to_string()))
        };
        if let Some(u) = update::touches_service(updates, is_service) {
            return Err(Verdict::refuse(
                ResponseCode::Refused,
                format!(
                    "{} is a [[service]] of dnsd.toml: its A/AAAA records change with the control API (PUT /v1/services) or dnsd.toml, not with UPDATE",
                    u.name
                ),
            ));
        }
        let applied = update::apply(&scope, &mut zone.file, updates);
        Ok(Edited {
            message: message.to_string(),
            soa_set: applied.soa_replaced,
        })
    });
    match changed {
        Ok(change) => {
            let (generation, serve) = match change {
                Some(c) => (Some(c.generation.number), c.serve),
                None => (None, change::Serve::default()),
            };
            Verdict {
                rcode: ResponseCode::NoError,
                reason: None,
                generation,
                serve,
            }
        }
        Err(ChangeError::Refused(verdict)) => verdict,
        Err(ChangeError::NoSuchZone(_)) => Verdict::refuse(
            ResponseCode::NotAuth,
            format!("{origin} is not a served zone"),
        ),
        Err(ChangeError::LiveBroken(why) | ChangeError::Failed(why)) => {
            Verdict::refuse(ResponseCode::ServFail, why)
        }
        // The result would not load (a CNAME beside a service, say).
        Err(ChangeError::Commit(HistoryError::Invalid(why))) => Verdict::refuse(
            ResponseCode::Refused,
            format!("the zone would not load after it:\n{why}"),
        ),
        Err(ChangeError::Commit(e)) => Verdict::refuse(ResponseCode::ServFail, e.to_string()),
    }
}
