//! The control API (`redirector run --api ADDR:PORT`): list, add and remove
//! rules and read the counters over HTTP, so that `cutover` can drive an old
//! host that runs no dnsd.
//!
//! Every change is first committed as a new workspace generation (so it
//! survives a restart and can be rolled back), then applied through the same
//! path as SIGHUP: a [`Request`] sent into the daemon's loop, which alone
//! touches the maps. Reads go through the loop too.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use cutover_control_api::contract::{Change, RedirectorHealth, Rule, RuleChange, Version};
use cutover_control_api::{Access, ApiError, attribution, blocking, listen};
use cutover_workspace::{
    ConfigError, ConfigErrors, FileChange, REDIRECTOR_FILE, RuleFields, RuleList, Workspace,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::info;

use crate::state::RuleInfo;
use crate::stats::Report;

/// The default listen address: loopback, so that only local tools (and
/// SSH tunnels) reach it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8054";

/// What `redirector run` is told about the API.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `None`: `WORKSPACE/.cutover/api-token`, created when missing.
    pub token_file: Option<PathBuf>,
}

/// What a handler asks of the daemon's loop; each carries the channel the
/// loop answers on.
pub enum Request {
    /// Re-read the workspace and put it in the maps, as SIGHUP does.
    Apply {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The rules in force and those draining.
    Rules {
        reply: oneshot::Sender<Vec<RuleInfo>>,
    },
    /// The report `redirector stats --json` prints.
    Stats {
        reply: oneshot::Sender<Result<Report, String>>,
    },
}

/// Shared by the handlers.
struct Api {
    workspace: Workspace,
    iface: String,
    daemon: mpsc::Sender<Request>,
    /// Serialises read-modify-commit-apply, so that two concurrent changes
    /// cannot both start from the same file and lose one.
    writer: Mutex<()>,
}

/// The bearer token (see `Workspace::api_token`): from `explicit`, or the
/// workspace's default file, created when missing.
pub use cutover_control_api::load_token as token;

/// Binds the listener (so that a taken port fails the start) and returns the
/// server to spawn.
pub async fn bind(
    settings: &Settings,
    workspace: Workspace,
    iface: String,
    token: String,
    daemon: mpsc::Sender<Request>,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    let api = Arc::new(Api {
        workspace,
        iface,
        daemon,
        writer: Mutex::new(()),
    });
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&api));
    listen(
        settings.listen,
        router(api),
        metrics,
        Access::new(token, "redirector"),
        "change it with --api ADDR:PORT, or turn it off with --no-api",
    )
    .await
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/version", get(version))
        .route("/v1/rules", get(list_rules))
        .route(
            "/v1/rules/{name}",
            axum::routing::put(put_rule).delete(delete_rule),
        )
        .route("/v1/stats", get(stats))
        .route("/v1/probe", axum::routing::post(probe))
        .with_state(api)
}

async fn ask<T>(
    api: &Api,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    api.daemon
        .send(make(tx))
        .await
        .map_err(|_| ApiError::internal("the daemon is stopping"))?;
    rx.await
        .map_err(|_| ApiError::internal("the daemon is stopping"))
}

async fn health(State(api): State<Arc<Api>>) -> Result<Json<RedirectorHealth>, ApiError> {
    let rules = ask(&api, |reply| Request::Rules { reply }).await?;
    let generation = api.workspace.current_generation().ok().flatten();
    Ok(Json(RedirectorHealth {
        status: "ok".into(),
        generation,
        rules: rules.iter().filter(|r| !r.draining).count(),
    }))
}

async fn version(State(api): State<Arc<Api>>) -> Json<Version> {
    Json(Version {
        name: "redirector".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        iface: Some(api.iface.clone()),
    })
}

/// The rules in force (removed rules that still drain are left out: they
/// no longer redirect anything).
async fn list_rules(State(api): State<Arc<Api>>) -> Result<Json<Vec<Rule>>, ApiError> {
    let rules = ask(&api, |reply| Request::Rules { reply }).await?;
    Ok(Json(
        rules
            .into_iter()
            .filter(|r| !r.draining)
            .map(|r| Rule {
                name: r.name,
                from: r.from,
                to: r.to,
                id: r.id,
                endpoints: r.endpoints,
                share: r.share,
            })
            .collect(),
    ))
}

async fn put_rule(
    State(api): State<Arc<Api>>,
    UrlPath(name): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: Result<Json<RuleChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Change>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"from\": \"IP:PORT\", \"to\": \"IP:PORT\"}} (or bare addresses with \"ports\": [80, 443]; \"proto\": [\"tcp\", \"udp\"]; \"share\": 1..100): {}",
            e.body_text()
        ))
    })?;
    let name = checked_name(&name)?;
    let message = format!(
        "redirect {name}: {} -> {}{}{}",
        body.from,
        body.to,
        body.share
            .map(|p| format!(" ({p} % of clients)"))
            .unwrap_or_default(),
        attribution::suffix(&headers)
    );
    change(&api, &message, move |rules| {
        let protocols: Vec<&str> = body.proto.iter().map(|p| p.name()).collect();
        rules.put(
            &name,
            &RuleFields {
                from: &body.from,
                to: &body.to,
                ports: &body.ports,
                protocols: &protocols,
                share: body.share,
            },
        );
        Ok(())
    })
    .await
}

async fn delete_rule(
    State(api): State<Arc<Api>>,
    UrlPath(name): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Change>, ApiError> {
    let name = checked_name(&name)?;
    let message = format!(
        "remove the redirect {name}{}",
        attribution::suffix(&headers)
    );
    change(&api, &message, move |rules| {
        if !rules.remove(&name) {
            return Err(ApiError::not_found(format!(
                "no rule named {name:?} (see GET /v1/rules)"
            )));
        }
        Ok(())
    })
    .await
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed != name {
        return Err(ApiError::bad_request(format!(
            "name: {name:?} must be non-empty without surrounding spaces"
        )));
    }
    Ok(name.to_string())
}

/// Edits the `[[rule]]` list of `redirector.toml` with `edit`, commits the
/// result as a new generation and applies it. `[nat]` and `[timeouts]` are
/// kept; comments are not (see [`RuleList`]).
async fn change(
    api: &Arc<Api>,
    message: &str,
    edit: impl FnOnce(&mut RuleList) -> Result<(), ApiError> + Send + 'static,
) -> Result<Json<Change>, ApiError> {
    let _writer = api.writer.lock().await;
    let workspace = api.workspace.clone();
    let message = message.to_string();
    // File I/O, fsync and the workspace lock (which may wait): off the loop.
    let generation = blocking(move || {
        let path = workspace.redirector_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
        };
        let mut rules = RuleList::parse(&text)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{}: {e}", path.display())))?;
        edit(&mut rules)?;
        let new_text = rules
            .to_text()
            .map_err(|e| ApiError::internal(format!("writing redirector.toml: {e}")))?;
        let change = FileChange {
            path: PathBuf::from(REDIRECTOR_FILE),
            content: Some(new_text.into_bytes()),
        };
        let generation = workspace.commit(&[change], &message, validate)?;
        Ok(generation.number)
    })
    .await?;

    ask(api, |reply| Request::Apply { reply })
        .await?
        .map_err(|e| {
            ApiError::internal(format!(
                "generation {generation} is written but could not be applied: {e}"
            ))
        })?;
    info!(generation, "API change applied");
    Ok(Json(Change {
        generation: Some(generation),
    }))
}

/// Beyond the format's checks (which `commit` runs): the new rules must fit
/// the program's rule table.
fn validate(staged: &Workspace) -> Result<(), ConfigErrors> {
    let cfg = staged.load_redirector()?;
    crate::rules::plan(&Default::default(), &cfg, &Default::default())
        .map(|_| ())
        .map_err(|e| ConfigError::file(&staged.redirector_path(), e.to_string()).into())
}

async fn stats(State(api): State<Arc<Api>>) -> Result<Json<Report>, ApiError> {
    ask(&api, |reply| Request::Stats { reply })
        .await?
        .map(Json)
        .map_err(ApiError::internal)
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<axum::response::Response, ApiError> {
    let report = ask(&api, |reply| Request::Stats { reply })
        .await?
        .map_err(ApiError::internal)?;
    Ok(crate::metrics::scrape(&report).into_response())
}

/// Counter samples taken by the daemon's loop every second, so that
/// `GET /v1/stats` can give rates without waiting.
#[derive(Debug, Default)]
pub struct Samples {
    older: Option<(std::time::Instant, BTreeMap<u32, crate::stats::Counters>)>,
    newer: Option<(std::time::Instant, BTreeMap<u32, crate::stats::Counters>)>,
}

impl Samples {
    pub fn push(
        &mut self,
        at: std::time::Instant,
        counters: BTreeMap<u32, crate::stats::Counters>,
    ) {
        self.older = self.newer.take();
        self.newer = Some((at, counters));
    }

    /// The sample to measure rates against: the older of the last two, so
    /// that the window is one to two ticks long rather than a few
    /// milliseconds.
    pub fn base(&self) -> Option<&(std::time::Instant, BTreeMap<u32, crate::stats::Counters>)> {
        self.older.as_ref().or(self.newer.as_ref())
    }
}

/// `POST /v1/probe {"to": "IP:PORT"}`: whether this host can open a TCP
/// connection to `to` within three seconds. `cutover` asks before it sends
/// clients anywhere: the new host must accept connections from the old host
/// that will forward to it, and the old host's own server must answer
/// before a rollback sends clients back (a connection the host opens itself
/// does not pass through the XDP program, so a redirect cannot hide a dead
/// local server).
async fn probe(
    body: Result<
        Json<cutover_control_api::contract::ProbeRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Result<Json<cutover_control_api::contract::ProbeReport>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"to\": \"IP:PORT\"}}: {}",
            e.body_text()
        ))
    })?;
    let to: SocketAddr = body
        .to
        .parse()
        .map_err(|_| ApiError::bad_request(format!("to: {:?} is not IP:PORT", body.to)))?;
    let from: Option<std::net::IpAddr> = match &body.from {
        Some(f) => Some(
            f.parse()
                .map_err(|_| ApiError::bad_request(format!("from: {f:?} is not an IP address")))?,
        ),
        None => None,
    };
    // From the rule's address when asked: NEW may accept the host's other
    // addresses and refuse the one forwarded connections come from.
    let connect = async {
        let socket = if to.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(from) = from {
            socket.bind(SocketAddr::new(from, 0)).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot connect from {from}: {e}"))
            })?;
        }
        socket.connect(to).await
    };
    let attempt = tokio::time::timeout(std::time::Duration::from_secs(3), connect).await;
    let error = match attempt {
        Ok(Ok(_stream)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 3 s".to_string()),
    };
    Ok(Json(cutover_control_api::contract::ProbeReport {
        to: body.to,
        connected: error.is_none(),
        error,
    }))
}
