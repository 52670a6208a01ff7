//! The control API: HTTP/JSON on a loopback port, every request authorised
//! by a bearer token read from a file. Reads report the live workspace and
//! the served snapshot; every change is first committed as a new workspace
//! generation, validated by building the complete dnsd state from the
//! staged files, and then applied through the same reload as SIGHUP. A
//! change is acknowledged only once its snapshot is answering queries.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use cutover_control_api::contract::{
    AddressHealth, Change, DnsHealth, GenerationInfo, MigrationReport, MigrationStatus, RecordInfo,
    ReplicaInfo, RrsetChange, SecondaryInfo, Service, ServiceChange, ServiceMember, StatusPage,
    Version, ZoneInfo, fqdn,
};
use cutover_control_api::metrics::Scrape;
use cutover_control_api::{Access, ApiError, attribution, blocking, listen};
use cutover_workspace::{HistoryError, Workspace};
use hickory_proto::rr::{Name, Record, RecordType};
use tracing::info;

use crate::change::service;
use crate::change::sync::{self, Syncer};
use crate::change::zone_edit::{self, ChangeLock};
use crate::change::{self, ChangeError, Edited};
use crate::clock::unix_now;
use crate::reload::Reloader;
use crate::status::migrations::Migrations;
use crate::transfer::Transfers;
use crate::zone;
use crate::zone::name_key::NameKey;
use crate::zone::records;

/// Everything a request handler needs.
pub struct Api {
    workspace: Workspace,
    reloader: Arc<Reloader>,
    /// The bearer token every request must carry.
    access: Access,
    /// Changes are committed and applied one at a time (with dynamic
    /// updates too), so that the snapshot a change acknowledges is the one
    /// it made.
    changes: ChangeLock,
    /// Rewrites the zone files from the journal after changes.
    syncer: Arc<Syncer>,
    /// What the secondaries were told and took.
    transfers: Arc<Transfers>,
    /// The addresses dnsd answers on (flags or dnsd.toml, as bound): the
    /// name servers a change must reach besides the secondaries.
    listening: Vec<SocketAddr>,
    /// The migrations `cutover` reports, for the status page.
    migrations: Migrations,
}

type Reply<T> = Result<axum::Json<T>, ApiError>;

// The API's limit is dnsd.toml's: a weight the API takes always loads.
const _: () = assert!(cutover_workspace::MAX_WEIGHT == cutover_control_api::contract::MAX_WEIGHT);

/// The bearer token (see `Workspace::api_token`): from `explicit`, or the
/// workspace's default file, created when missing.
pub fn load_token(root: &Path, explicit: Option<&Path>) -> Result<String> {
    cutover_control_api::load_token(&Workspace::open(root)?, explicit)
}

/// Binds `addr` and serves the API on the current runtime until the process
/// exits. Binding fails loudly: a daemon that cannot be controlled should
/// not pretend to be.
pub async fn start(addr: SocketAddr, api: Api) -> Result<()> {
    let access = api.access.clone();
    let api = Arc::new(api);
    let routes = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/version", get(version))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}", put(put_service))
        .route("/v1/generations", get(generations))
        .route("/v1/generations/{n}/rollback", post(rollback))
        .route("/v1/zones", get(zones))
        .route("/v1/zones/{origin}/records", get(records))
        .route("/v1/zones/{origin}/rrsets/{name}/{rtype}", put(put_rrset))
        .route("/v1/migrations", get(migrations))
        .route("/v1/migrations/{name}", put(put_migration))
        .with_state(Arc::clone(&api));
    // What is only read for watching: open on loopback (see `listen`).
    let watch = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .route("/status.json", get(status))
        .with_state(api);
    let serve = listen(
        addr,
        routes,
        watch,
        access,
        "change it with --api ADDR:PORT or dnsd.toml's [api] listen, or turn it off with \
         --no-api or [api] enabled = false",
    )
    .await?;
    tokio::spawn(serve);
    Ok(())
}

impl Api {
    pub fn new(
        workspace: Workspace,
        reloader: Arc<Reloader>,
        token: String,
        changes: ChangeLock,
        syncer: Arc<Syncer>,
        transfers: Arc<Transfers>,
        listening: Vec<SocketAddr>,
    ) -> Self {
        Self {
            migrations: Migrations::open(&workspace, unix_now()),
            workspace,
            reloader,
            access: Access::new(token, "dnsd"),
            changes,
            syncer,
            transfers,
            listening,
        }
    }
}

async fn health(State(api): State<Arc<Api>>) -> Reply<DnsHealth> {
    let ws = api.workspace.clone();
    let generation = blocking(move || Ok(ws.current_generation()?)).await?;
    Ok(axum::Json(DnsHealth {
        status: "ok".into(),
        generation,
        zones: api.reloader.serving_zones(),
    }))
}

/// `GET /metrics`: what dnsd counted, and the states it serves (zone
/// serials, the generation, each checked address's health).
async fn metrics(State(api): State<Arc<Api>>) -> Result<axum::response::Response, ApiError> {
    let ws = api.workspace.clone();
    let generation = blocking(move || Ok(ws.current_generation()?)).await?;
    // As `GET /v1/services` lists them; a dnsd.toml that does not load
    // leaves the services out, not the rest.
    let services = service_list(&api).await.unwrap_or_default();
    let mut scrape = Scrape::default();
    crate::metrics::add_counters(&mut scrape);
    let serving = api.reloader.serving();
    let serials = scrape.gauge(
        "dnsd_zone_serial",
        "The SOA serial each zone is served with.",
    );
    for (_, zone) in serving.zones() {
        if let Some(serial) = zone.serial() {
            serials.sample([("zone", zone.origin.to_ascii())], serial);
        }
    }
    scrape
        .gauge(
            "dnsd_zones_unavailable",
            "Zones answered SERVFAIL: a file that never loaded, a replica not transferred \
             yet or expired.",
        )
        .value(serving.unavailable_count());
    if let Some(generation) = generation {
        scrape
            .gauge(
                "dnsd_workspace_generation",
                "The workspace generation in force (the last committed change).",
            )
            .value(generation);
    }
    service_metrics(&mut scrape, &services);
    scrape
        .gauge(
            "dnsd_build_info",
            "dnsd's version: 1, with the version as a label.",
        )
        .sample([("version", env!("CARGO_PKG_VERSION"))], true);
    Ok(scrape.into_response())
}

/// Each steered service's addresses, as [`members`] describes them: up,
/// in the answers, checks run and answers led.
fn service_metrics(scrape: &mut Scrape, services: &[Service]) {
    let members: Vec<_> = services
        .iter()
        .flat_map(|s| {
            s.members.iter().map(|m| {
                (
                    [("service", s.name.clone()), ("address", m.address.clone())],
                    m,
                )
            })
        })
        .collect();
    let up = scrape.gauge(
        "dnsd_address_up",
        "Whether an address passes its service's health check (1 when not checked).",
    );
    for (labels, m) in &members {
        up.sample(labels.clone(), m.health.as_ref().is_none_or(|h| h.up));
    }
    let in_use = scrape.gauge(
        "dnsd_address_in_use",
        "Whether an address is among those its service answers with now (healthy \
         primaries, else backups, else all).",
    );
    for (labels, m) in &members {
        in_use.sample(labels.clone(), m.in_use);
    }
    let checks = scrape.counter(
        "dnsd_health_checks",
        "Health checks run against an address for its service.",
    );
    for (labels, m) in &members {
        if let Some(h) = &m.health {
            checks.sample(labels.clone(), h.checks);
        }
    }
    let led = scrape.counter(
        "dnsd_answers_led",
        "Answers of a weighted or regional service that put this address first.",
    );
    for (labels, m) in &members {
        led.sample(labels.clone(), m.answers);
    }
}

/// The status page's width in chart points: a day's samples are narrowed
/// to this many.
const CHART_POINTS: usize = 720;

/// `GET /`: the status page; it reads `status.json`.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(crate::status::PAGE)
}

async fn status(State(api): State<Arc<Api>>) -> Reply<StatusPage> {
    let ws = api.workspace.clone();
    let generation = blocking(move || Ok(ws.current_generation()?)).await?;
    let now = unix_now();
    Ok(axum::Json(StatusPage {
        now,
        generation,
        services: service_list(&api).await?,
        migrations: api.migrations.list(now, CHART_POINTS),
    }))
}

async fn migrations(State(api): State<Arc<Api>>) -> Reply<Vec<MigrationStatus>> {
    let now = unix_now();
    Ok(axum::Json(api.migrations.list(now, CHART_POINTS)))
}

/// `PUT /v1/migrations/{name}`: `cutover` reporting a migration's step and
/// its latest drain sample.
async fn put_migration(
    State(api): State<Arc<Api>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let report: MigrationReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"phase\", \"from\", \"old\", \"to\", \"ports\", \"sample\" \
             (optional)}}: {e}"
        ))
    })?;
    api.migrations
        .report(&fqdn(&name), report, unix_now())
        .map_err(ApiError::bad_request)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn version() -> Reply<Version> {
    Ok(axum::Json(Version {
        name: "dnsd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        iface: None,
    }))
}

async fn services(State(api): State<Arc<Api>>) -> Reply<Vec<Service>> {
    Ok(axum::Json(service_list(&api).await?))
}

/// The services of the live dnsd.toml, each steered one with its members.
async fn service_list(api: &Api) -> Result<Vec<Service>, ApiError> {
    let ws = api.workspace.clone();
    let config = blocking(move || {
        ws.load_dnsd()
            .map_err(|e| ApiError::internal(format!("the live dnsd.toml is not valid: {e}")))
    })
    .await?;
    let health = api.reloader.health();
    let tally = api.reloader.serving().steers.tally();
    let list = config
        .services
        .iter()
        .map(|s| Service {
            name: s.name.clone(),
            addresses: s.addresses.iter().map(ToString::to_string).collect(),
            ttl: s.ttl,
            // A plain service is its addresses; the others say more.
            members: if s.is_steered() {
                members(s, health, &tally)
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(list)
}

/// Each address of `service`: how it is used, and its health.
fn members(
    service: &cutover_workspace::Service,
    health: &crate::health::Monitor,
    tally: &crate::answer::steer::Tally,
) -> Vec<ServiceMember> {
    let in_use = crate::health::in_use(service, health);
    service
        .members
        .iter()
        .map(|m| {
            let checked = service.health.as_ref().map(|check| {
                let state = health.state(m.address, check);
                let last = state.as_ref().and_then(|s| s.last.as_ref());
                AddressHealth {
                    up: state.as_ref().is_none_or(|s| s.up),
                    checks: state.as_ref().map_or(0, |s| s.checks),
                    last_check_ms: last.and_then(|(at, _)| {
                        at.duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_millis() as u64)
                    }),
                    last_error: last.and_then(|(_, r)| r.as_ref().err().cloned()),
                }
            });
            ServiceMember {
                address: m.address.to_string(),
                weight: m.weight,
                region: m.region.clone(),
                backup: m.backup,
                in_use: in_use.addresses.contains(&m.address),
                health: checked,
                answers: tally.led(&service.name, m.address),
            }
        })
        .collect()
}

async fn put_service(
    State(api): State<Arc<Api>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply<Change> {
    let change: ServiceChange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"addresses\": [\"IP\", ...], \"ttl\": SECONDS (optional), \
             \"weights\": {{\"IP\": 0..1000}} (optional)}}: {e}"
        ))
    })?;
    let mut addresses = Vec::with_capacity(change.addresses.len());
    for (i, a) in change.addresses.iter().enumerate() {
        let ip: IpAddr = a.trim().parse().map_err(|_| {
            ApiError::bad_request(format!(
                "addresses[{i}]: {a:?} is not an IPv4 or IPv6 address"
            ))
        })?;
        addresses.push(ip);
    }
    if addresses.is_empty() {
        return Err(ApiError::bad_request(
            "addresses: a service needs at least one address",
        ));
    }
    let mut weights = std::collections::HashMap::new();
    for (a, w) in change.weights.iter().flatten() {
        let ip: IpAddr = a.trim().parse().map_err(|_| {
            ApiError::bad_request(format!("weights: {a:?} is not an IPv4 or IPv6 address"))
        })?;
        if !addresses.contains(&ip) {
            return Err(ApiError::bad_request(format!(
                "weights: {ip} is not one of the addresses"
            )));
        }
        if *w > cutover_workspace::MAX_WEIGHT {
            return Err(ApiError::bad_request(format!(
                "weights: {ip}: {w} is above {}",
                cutover_workspace::MAX_WEIGHT
            )));
        }
        weights.insert(ip, *w);
    }
    let mut backups = None;
    if let Some(list) = &change.backups {
        let mut set = std::collections::HashSet::new();
        for a in list {
            let ip: IpAddr = a.trim().parse().map_err(|_| {
                ApiError::bad_request(format!("backups: {a:?} is not an IPv4 or IPv6 address"))
            })?;
            if !addresses.contains(&ip) {
                return Err(ApiError::bad_request(format!(
                    "backups: {ip} is not one of the addresses"
                )));
            }
            set.insert(ip);
        }
        backups = Some(set);
    }
    let name = path_name(&name, "name")?;
    let _one_change = api.changes.lock().await;
    let ws = api.workspace.clone();
    let message = format!(
        "set {name} to {}{}",
        addresses
            .iter()
            .map(|a| match weights.get(a) {
                Some(w) if *w != 1 => format!("{a} (weight {w})"),
                _ => a.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        attribution::suffix(&headers)
    );
    let edit = Edit {
        addresses,
        weights,
        backups,
    };
    let serving = api.reloader.serving();
    let by_name = api.reloader.as_served(None);
    let reloader = Arc::clone(&api.reloader);
    // The zone's next serial: secondaries and caches see the flip by it.
    let serial = Name::from_ascii(&name)
        .ok()
        .and_then(|n| NameKey::new(&n))
        .and_then(
            |key| match serving.find_zone(key.as_bytes(), RecordType::A) {
                crate::snapshot::ZoneLookup::Serving(zone) => zone.serial(),
                _ => None,
            },
        )
        .map(|s| s.wrapping_add(1));
    let committed = blocking(move || {
        let path = ws.dnsd_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
        };
        let new_text = edit_service(&text, &name, &edit, change.ttl, serial)?.ok_or_else(|| {
            ApiError::not_found(format!(
                "no service {name} in dnsd.toml (see GET /v1/services)"
            ))
        })?;
        Ok(service::commit(
            &ws,
            &serving,
            reloader.health(),
            &name,
            new_text,
            &message,
            by_name,
        )?)
    })
    .await?;
    let generation = committed.generation.number;
    match committed.serve {
        Some((zone, serve)) => {
            api.reloader.config_written();
            api.reloader
                .serve_change(&zone, serve, generation)
                .await
                .map_err(|e| not_served(generation, &e))?;
            api.reloader
                .services_changed()
                .await
                .map_err(|e| not_served(generation, &e))?;
            info!(generation, "applied a change made through the API");
            Ok(axum::Json(Change {
                generation: Some(generation),
            }))
        }
        None => apply(&api, generation).await,
    }
}

/// Rewrites `source` with service `name`'s addresses (and TTL, if given)
/// replaced, touching nothing else, so that the operator's comments and
/// layout survive. `None`: there is no such service.
/// A service's new addresses, with the weights and backup flags that
/// change (`None`: every address keeps its flag).
struct Edit {
    addresses: Vec<IpAddr>,
    weights: std::collections::HashMap<IpAddr, u32>,
    backups: Option<std::collections::HashSet<IpAddr>>,
}

fn edit_service(
    source: &str,
    name: &str,
    edit: &Edit,
    ttl: Option<u32>,
    serial: Option<u32>,
) -> Result<Option<String>, ApiError> {
    let mut doc: toml_edit::DocumentMut = source
        .parse()
        .map_err(|e| ApiError::internal(format!("the live dnsd.toml does not parse: {e}")))?;
    let Some(services) = doc
        .get_mut("service")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
    else {
        return Ok(None);
    };
    let Some(entry) = services.iter_mut().find(|t| {
        t.get("name")
            .and_then(toml_edit::Item::as_str)
            .is_some_and(|n| fqdn(n) == name)
    }) else {
        return Ok(None);
    };
    // What each address had besides itself (weight, region, backup), to
    // keep; a table whose address does not parse is left to validation.
    let mut had: std::collections::HashMap<IpAddr, toml_edit::InlineTable> =
        std::collections::HashMap::new();
    if let Some(old) = entry.get("addresses").and_then(toml_edit::Item::as_array) {
        for item in old.iter() {
            if let Some(table) = item.as_inline_table()
                && let Some(ip) = table
                    .get("address")
                    .and_then(|a| a.as_str())
                    .and_then(|a| a.trim().parse::<IpAddr>().ok())
            {
                had.insert(ip, table.clone());
            }
        }
    }
    let mut list = toml_edit::Array::new();
    for address in &edit.addresses {
        let mut table = had.remove(address).unwrap_or_default();
        table.insert("address", address.to_string().into());
        if let Some(w) = edit.weights.get(address) {
            table.insert("weight", i64::from(*w).into());
        }
        match &edit.backups {
            Some(b) if b.contains(address) => {
                table.insert("backup", true.into());
            }
            Some(_) => {
                table.remove("backup");
            }
            None => {}
        }
        if table.get("weight").and_then(|w| w.as_integer()) == Some(1) {
            table.remove("weight");
        }
        let plain = table.len() == 1;
        if plain {
            list.push(address.to_string());
        } else {
            table.fmt();
            list.push(toml_edit::Value::InlineTable(table));
        }
    }
    entry["addresses"] = toml_edit::value(list);
    if let Some(ttl) = ttl {
        entry["ttl"] = toml_edit::value(i64::from(ttl));
    }
    if let Some(serial) = serial {
        entry["serial"] = toml_edit::value(i64::from(serial));
    }
    Ok(Some(doc.to_string()))
}

/// A domain name from the request path, fully qualified. Whitespace and
/// control characters are refused, not trimmed: `example.test%0a` is a
/// mistake, not `example.test.` (escapes such as `\032` spell such octets).
fn path_name(raw: &str, what: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "{what}: {raw:?} is not a domain name (write other octets as \\DDD)"
        )));
    }
    Ok(fqdn(raw))
}

/// Why a change recorded as `generation` is not served.
fn not_served(generation: u64, why: &str) -> ApiError {
    ApiError::internal(format!(
        "generation {generation} was written but does not load; the previous zones keep being served: {why}"
    ))
}

/// Serves the generation just committed and acknowledges it.
async fn apply(api: &Api, generation: u64) -> Reply<Change> {
    api.reloader
        .reload()
        .await
        .map_err(|e| not_served(generation, &e))?;
    info!(generation, "applied a change made through the API");
    Ok(axum::Json(Change {
        generation: Some(generation),
    }))
}

async fn generations(State(api): State<Arc<Api>>) -> Reply<Vec<GenerationInfo>> {
    let ws = api.workspace.clone();
    let (list, current) =
        blocking(move || Ok((ws.generations()?, ws.current_generation()?))).await?;
    let list = list
        .into_iter()
        .map(|g| GenerationInfo {
            current: Some(g.number) == current,
            number: g.number,
            created_unix: g.created_unix,
            message: g.message,
        })
        .collect();
    Ok(axum::Json(list))
}

async fn rollback(
    State(api): State<Arc<Api>>,
    UrlPath(n): UrlPath<String>,
    headers: HeaderMap,
) -> Reply<Change> {
    let by = attribution::suffix(&headers);
    let n: u64 = n.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{n:?} is not a generation number (see GET /v1/generations)"
        ))
    })?;
    let _one_change = api.changes.lock().await;
    let ws = api.workspace.clone();
    let serving = api.reloader.serving();
    let generation = blocking(move || {
        // The files of generation n, each zone as it was then (its
        // journal replayed), committed whole: history only grows.
        ws.generation(n)?;
        let served = |origin: &str| {
            let key = NameKey::new(&Name::from_ascii(origin).ok()?)?;
            serving.served(key.as_bytes())?.0.serial()
        };
        let changes =
            sync::restore(&ws, n, served).map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
        // A generation imported from hand edits was never validated: the
        // commit's validator checks it before it replaces what is serving.
        ws.commit(
            &changes,
            &format!("rollback to {n}{by}"),
            zone_edit::validator(&ws),
        )
        .map_err(|e| match e {
            HistoryError::Invalid(why) => ApiError::bad_request(format!(
                "generation {n} does not load, so it is not restored:\n{why}"
            )),
            other => ApiError::from(other),
        })
    })
    .await?;
    apply(&api, generation.number).await
}

async fn zones(State(api): State<Arc<Api>>) -> Reply<Vec<ZoneInfo>> {
    let loaded = load_live(&api).await?;
    let list = loaded
        .zones
        .iter()
        .map(|z| {
            let origin = records::zone_name(&z.origin).to_string();
            let config = &loaded.config;
            let lower = origin.to_ascii_lowercase();
            let secondaries: Vec<SecondaryInfo> = config
                .secondaries_of(&lower)
                .map(|s| {
                    let seen = api.transfers.seen(&lower, s.address.ip());
                    SecondaryInfo {
                        address: s.address.to_string(),
                        notify_acknowledged: seen.acknowledged.map(|(serial, _)| serial),
                        notify_acknowledged_at: seen.acknowledged.map(|(_, at)| at),
                        transferred: seen.transferred.map(|(serial, _, _)| serial),
                        transfer: seen.transferred.map(|(_, kind, _)| kind.to_string()),
                        transferred_at: seen.transferred.map(|(_, _, at)| at),
                    }
                })
                .collect();
            let nameservers = if secondaries.is_empty() {
                Vec::new()
            } else {
                // A wildcard address is asked on loopback (cutover beside
                // dnsd; elsewhere, it is given --nameservers).
                let own = api.listening.iter().map(|a| {
                    let ip = match a.ip() {
                        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                        ip => ip,
                    };
                    SocketAddr::new(ip, a.port()).to_string()
                });
                own.chain(secondaries.iter().map(|s| s.address.clone()))
                    .collect()
            };
            ZoneInfo {
                replica_of: replica_info(&api, config, &lower, true),
                origin,
                serial: z.serial(),
                records: z.records.len(),
                nameservers,
                secondaries,
            }
        })
        .collect::<Vec<_>>();
    // Replica zones not served (not transferred yet, or expired) are
    // listed too: that is what an operator looks for.
    let mut list = list;
    for z in loaded.broken.iter().filter(|z| z.withheld) {
        let origin = records::zone_name(&z.origin).to_string();
        let lower = origin.to_ascii_lowercase();
        list.push(ZoneInfo {
            replica_of: replica_info(&api, &loaded.config, &lower, false),
            origin,
            serial: None,
            records: 0,
            nameservers: Vec::new(),
            secondaries: Vec::new(),
        });
    }
    Ok(axum::Json(list))
}

/// What `GET /v1/zones` says of zone `origin` if it is a replica.
fn replica_info(
    api: &Api,
    config: &cutover_workspace::DnsdConfig,
    origin: &str,
    served: bool,
) -> Option<ReplicaInfo> {
    let replica = config.replica(origin)?;
    let status = api.transfers.replicas.status(origin);
    Some(ReplicaInfo {
        primary: replica.primary.to_string(),
        served,
        refreshed_at: status.refreshed,
        transferred: status.transferred.map(|(serial, _, _)| serial),
        transfer: status.transferred.map(|(_, kind, _)| kind.to_string()),
        transferred_at: status.transferred.map(|(_, _, at)| at),
        failure: status.failed.as_ref().map(|(why, _)| why.clone()),
        failed_at: status.failed.as_ref().map(|(_, at)| *at),
    })
}

async fn records(
    State(api): State<Arc<Api>>,
    UrlPath(origin): UrlPath<String>,
) -> Reply<Vec<RecordInfo>> {
    let loaded = load_live(&api).await?;
    let origin = path_name(&origin, "origin")?;
    let zone = loaded
        .zones
        .iter()
        .find(|z| z.origin.to_string().to_ascii_lowercase() == origin)
        .ok_or_else(|| ApiError::not_found(format!("no zone {origin} (see GET /v1/zones)")))?;
    let list = zone
        .in_file_order()
        .into_iter()
        .map(|r| RecordInfo {
            name: r.owner.to_string(),
            rtype: zonefile::type_name(r.rtype),
            ttl: r.ttl,
            data: zonefile::format_rdata(r.rtype, &r.rdata),
        })
        .collect();
    Ok(axum::Json(list))
}

async fn put_rrset(
    State(api): State<Arc<Api>>,
    UrlPath((origin, name, rtype)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply<Change> {
    let by = attribution::suffix(&headers);
    let change: RrsetChange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"ttl\": SECONDS, \"records\": [\"RDATA\", ...]}}: {e}"
        ))
    })?;
    let rtype: RecordType = zonefile::type_code(rtype.as_bytes())
        .filter(|&t| !zonefile::is_meta(t))
        .map(RecordType::from)
        .ok_or_else(|| ApiError::bad_request(format!("type: {rtype:?} is not a record type")))?;
    // Said here in the API's own terms; the zone's rules would refuse it
    // too, on the rewritten file.
    if matches!(rtype, RecordType::CNAME | RecordType::DNAME) && change.records.len() > 1 {
        return Err(ApiError::bad_request(format!(
            "records: a name has at most one {rtype} (RFC 1034 §3.6.2, RFC 6672 §2.4)"
        )));
    }
    let origin = path_name(&origin, "origin")?;
    let name = path_name(&name, "name")?;
    let owner = zonefile::Name::parse(name.as_bytes(), &zonefile::Name::root())
        .map(|n| records::name(&n))
        .map_err(|e| ApiError::bad_request(format!("name: {name:?}: {e}")))?;
    if let Some(config) = api.transfers.config()
        && let Some(replica) = config.replica(&origin)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{origin} is a replica of {}: change it at that primary",
                replica.primary
            ),
        ));
    }
    let _one_change = api.changes.lock().await;
    let ws = api.workspace.clone();
    let serving = api.reloader.serving();
    let zone = origin.clone();
    let changed = blocking(move || {
        let names = [owner.clone()];
        let changed = change::zone(
            &ws,
            &serving,
            &origin,
            &names,
            "dnsd's control API",
            |zone| {
                edit_rrset(zone, &owner, rtype, &change).map(|mut edited| {
                    edited.message.push_str(&by);
                    edited
                })
            },
        );
        match changed {
            Ok(changed) => Ok(changed),
            Err(ChangeError::Refused(e)) => Err(e),
            Err(ChangeError::NoSuchZone(origin)) => Err(ApiError::not_found(format!(
                "no zone {origin} (see GET /v1/zones)"
            ))),
            Err(ChangeError::LiveBroken(why) | ChangeError::Failed(why)) => {
                Err(ApiError::internal(why))
            }
            Err(ChangeError::Commit(e)) => Err(ApiError::from(e)),
        }
    })
    .await?;
    match changed {
        Some(change) => {
            let generation = change.generation.number;
            api.reloader
                .serve_change(&zone, change.serve, generation)
                .await
                .map_err(|e| not_served(generation, &e))?;
            info!(generation, "applied a change made through the API");
            api.syncer.changed(&zone);
            Ok(axum::Json(Change {
                generation: Some(generation),
            }))
        }
        // Nothing to change: the generation in force already has it.
        None => {
            let ws = api.workspace.clone();
            let generation = blocking(move || Ok(ws.current_generation()?)).await?;
            Ok(axum::Json(Change { generation }))
        }
    }
}

/// The API's edit of a zone: `owner`'s `rtype` RRset becomes the records
/// of `change` (none deletes it).
fn edit_rrset(
    zone: &mut change::Zone<'_>,
    owner: &Name,
    rtype: RecordType,
    change: &RrsetChange,
) -> Result<Edited, ApiError> {
    let origin = zone.origin;
    let name = records::zone_name(owner).to_string();
    if !origin.zone_of(owner) {
        return Err(ApiError::bad_request(format!(
            "name: {name} is not inside the zone {}",
            records::zone_name(origin)
        )));
    }
    if matches!(rtype, RecordType::A | RecordType::AAAA)
        && zone.services.iter().any(|s| s.name == name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{name} is a service: its addresses change with PUT /v1/services/{name}"),
        ));
    }
    let old_ttl = zone
        .file
        .iter()
        .find(|r| r.name == *owner && r.record_type() == rtype)
        .map(|r| r.ttl);
    let ttl = match (change.ttl, old_ttl) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) if change.records.is_empty() => 0,
        (None, None) => return Err(ApiError::bad_request("ttl: required for a new RRset")),
    };
    let mut wanted = Vec::with_capacity(change.records.len());
    for (i, rdata) in change.records.iter().enumerate() {
        if rdata.contains(['\n', ';', '(', ')']) {
            return Err(ApiError::bad_request(format!(
                "records[{i}]: {rdata:?}: one record per entry, without comments or parentheses"
            )));
        }
        let wire = zonefile::parse_rdata(u16::from(rtype), rdata, &records::zone_name(origin))
            .map_err(|e| ApiError::bad_request(format!("records[{i}]: {rdata:?}: {e}")))?;
        wanted.push(Record::from_rdata(
            owner.clone(),
            ttl,
            records::rdata(rtype, &wire),
        ));
    }
    zone.file
        .retain(|r| !(r.name == *owner && r.record_type() == rtype));
    zone.file.extend(wanted);
    let message = match change.records.len() {
        0 => format!("delete {name} {rtype}"),
        n => format!("set {name} {rtype} to {n} record(s)"),
    };
    // Secondaries notice a change by the serial; a new SOA sets its own.
    Ok(Edited {
        message,
        soa_set: rtype == RecordType::SOA,
    })
}

/// The live workspace as dnsd reads it, services applied.
async fn load_live(api: &Api) -> Result<zone::LoadedWorkspace, ApiError> {
    let root = api.workspace.root().to_path_buf();
    blocking(move || {
        zone::load(&root)
            .map_err(|e| ApiError::internal(format!("the live workspace does not load: {e}")))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "# moved by cutover\n[server]\nmax_answers = 8\n\n[[service]]\nname = \"www.example.test.\"\naddresses = [\"198.18.0.2\"] # old host\nttl = 60\n\n[[service]]\nname = \"api.example.test.\"\naddresses = [\"198.18.0.9\"]\nttl = 30\n";

    #[test]
    fn a_service_edit_replaces_only_that_entry_and_keeps_comments() {
        let addrs = ["198.18.0.3".parse().unwrap(), "2001:2::3".parse().unwrap()];
        let none = std::collections::HashMap::new();
        let edit = Edit {
            addresses: addrs.to_vec(),
            weights: none,
            backups: None,
        };
        let out = edit_service(TOML, "www.example.test.", &edit, None, Some(7))
            .ok()
            .flatten()
            .unwrap();
        assert!(out.starts_with("# moved by cutover\n"));
        assert!(out.contains("addresses = [\"198.18.0.3\", \"2001:2::3\"]"));
        assert!(out.contains("ttl = 60"));
        assert!(out.contains("serial = 7"));
        assert!(out.contains("addresses = [\"198.18.0.9\"]\nttl = 30"));
    }

    #[test]
    fn an_unknown_service_is_not_edited() {
        let addrs = ["198.18.0.3".parse().unwrap()];
        assert!(matches!(
            edit_service(
                TOML,
                "nope.example.test.",
                &Edit {
                    addresses: addrs.to_vec(),
                    weights: std::collections::HashMap::new(),
                    backups: None,
                },
                None,
                None
            ),
            Ok(None)
        ));
    }

    #[test]
    fn weights_are_written_and_regions_and_backups_kept() {
        let toml = "[regions]\n\"198.18.64.0/18\" = \"eu\"\n[[service]]\nname = \"www.example.test.\"\nttl = 60\naddresses = [\"198.18.0.2\", { address = \"198.18.0.5\", backup = true }, { address = \"198.18.0.6\", region = \"eu\", weight = 2 }]\n";
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let addrs = [
            ip("198.18.0.2"),
            ip("198.18.0.3"),
            ip("198.18.0.5"),
            ip("198.18.0.6"),
        ];
        let weights =
            std::collections::HashMap::from([(ip("198.18.0.2"), 9), (ip("198.18.0.3"), 1)]);
        let edit = Edit {
            addresses: addrs.to_vec(),
            weights,
            backups: None,
        };
        let out = edit_service(toml, "www.example.test.", &edit, None, None)
            .ok()
            .flatten()
            .unwrap();
        let cfg = cutover_workspace::parse_dnsd(std::path::Path::new("dnsd.toml"), &out).unwrap();
        let m = &cfg.services[0].members;
        assert_eq!(
            m.iter().map(|m| m.weight).collect::<Vec<_>>(),
            [9, 1, 1, 2],
            "{out}"
        );
        assert!(m[2].backup && m[3].region.as_deref() == Some("eu"), "{out}");
        assert!(
            out.contains("\"198.18.0.3\""),
            "a plain address stays plain: {out}"
        );
    }
}
