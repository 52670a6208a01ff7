//! Puts a daemon's routes behind the shared conventions and binds them.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::ApiError;
use crate::access::{Access, authorise};

/// Binds `addr` now, so that a taken port fails the daemon's start instead
/// of leaving a daemon nobody can drive, and returns the server to spawn:
/// `routes`, plus a JSON 404 for any other path, all behind `access`.
/// `hint` tells the operator how to move or turn off the API
/// ("change it with --api ADDR:PORT ...").
///
/// `watch` (what is only read for watching: `GET /metrics`, dnsd's status
/// page) needs the token too, unless the API is bound to a loopback
/// address: whoever can reach that is on the host already, and a
/// Prometheus or a browser beside the daemon (or through an SSH tunnel)
/// then needs no secret. On any other address it is read with the token,
/// as Prometheus's `authorization: { credentials_file: ... }` sends it.
pub async fn listen(
    addr: SocketAddr,
    routes: Router,
    watch: Router,
    access: Access,
    hint: &str,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the control API on {addr} ({hint})"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = guarded(routes, watch, access, bound.ip().is_loopback());
    info!(%bound, "control API listening");
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(%e, "the control API stopped");
        }
    })
}

/// `routes` and a JSON 404 for any other path, all behind `access` (so that
/// without the token not even the list of endpoints leaks);
/// `watch` behind it too unless `open_watch`.
fn guarded(routes: Router, watch: Router, access: Access, open_watch: bool) -> Router {
    let (inside, outside) = if open_watch {
        (routes, watch)
    } else {
        (routes.merge(watch), Router::new())
    };
    inside
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(access, authorise))
        .merge(outside.layer(middleware::from_fn(loopback_host)))
}

/// Middleware of the routes open on loopback: a request must name a
/// loopback host (`127.0.0.1:8053`, `[::1]`, `localhost`), so that a web
/// page elsewhere cannot read them through a browser on this host by
/// pointing a name of its own at 127.0.0.1 (DNS rebinding).
async fn loopback_host(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match host {
        Some(h) if !is_loopback_host(h) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Host {h:?} is not a loopback address: open this API at 127.0.0.1"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether a Host header's host is loopback, whatever its port.
fn is_loopback_host(value: &str) -> bool {
    let host = match value.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => value.rsplit_once(':').map_or(value, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(authorization: Option<&str>, path: &str) -> (StatusCode, String) {
        call_on(false, authorization, path).await
    }

    async fn call_on(
        loopback: bool,
        authorization: Option<&str>,
        path: &str,
    ) -> (StatusCode, String) {
        call_with(loopback, authorization, None, path).await
    }

    async fn call_host(loopback: bool, host: &str, path: &str) -> (StatusCode, String) {
        call_with(loopback, None, Some(host), path).await
    }

    /// A request through the guarded router: with these Authorization and
    /// Host headers, the API bound on loopback or not.
    async fn call_with(
        loopback: bool,
        authorization: Option<&str>,
        host: Option<&str>,
        path: &str,
    ) -> (StatusCode, String) {
        let routes = Router::new().route("/v1/health", get(|| async { "ok" }));
        let metrics = Router::new().route("/metrics", get(|| async { "up 1" }));
        let app = guarded(
            routes,
            metrics,
            Access::new("s3cret".into(), "testd"),
            loopback,
        );
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn only_the_workspace_token_opens_the_api() {
        assert_eq!(
            call(Some("Bearer s3cret"), "/v1/health").await,
            (StatusCode::OK, "ok".to_string())
        );
        // The scheme's name is case-insensitive (RFC 7235 §2.1); the token
        // is not.
        for scheme in ["bearer", "BEARER", "Bearer  "] {
            assert_eq!(
                call(Some(&format!("{scheme} s3cret")), "/v1/health").await,
                (StatusCode::OK, "ok".to_string()),
                "{scheme}"
            );
        }
        let (status, body) = call(Some("Bearer s3creT"), "/v1/health").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"error":"wrong bearer token"}"#);
        let (status, _) = call(Some("Basic s3cret"), "/v1/health").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = call(None, "/v1/health").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            body.contains("api-token") && body.contains("unless testd runs with --api-token-file"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn metrics_need_the_token_unless_the_api_is_on_loopback() {
        let open = (StatusCode::OK, "up 1".to_string());
        assert_eq!(call_on(true, None, "/metrics").await, open);
        assert_eq!(call_on(true, Some("Bearer s3cret"), "/metrics").await, open);
        assert_eq!(
            call_on(false, Some("Bearer s3cret"), "/metrics").await,
            open
        );
        let (status, _) = call_on(false, None, "/metrics").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A page elsewhere that points its own name at 127.0.0.1 gets nothing.
        assert_eq!(
            call_host(true, "localhost:8053", "/metrics").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call_host(true, "[::1]:8053", "/metrics").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call_host(true, "127.0.0.9", "/metrics").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call_host(true, "rebind.example.test:8053", "/metrics")
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        // Only /metrics is open on loopback.
        let (status, _) = call_on(true, None, "/v1/health").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call_on(true, None, "/v1/nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn an_unknown_path_is_a_json_404_but_only_with_the_token() {
        let (status, body) = call(Some("Bearer s3cret"), "/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, r#"{"error":"no such endpoint"}"#);
        let (status, _) = call(None, "/v1/nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
