//! Who may use an API: whoever presents the workspace's bearer token
//! (`Authorization: Bearer <token>`), read from `WORKSPACE/.cutover/api-token`
//! or the file `--api-token-file` names.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cutover_workspace::{Workspace, token_matches};
use tracing::info;

use crate::ApiError;

/// The token one daemon's API accepts, and the daemon's name, which the
/// refusal uses to say where the token is.
#[derive(Clone)]
pub struct Access {
    token: Arc<str>,
    daemon: &'static str,
}

impl Access {
    pub fn new(token: String, daemon: &'static str) -> Self {
        Self {
            token: token.into(),
            daemon,
        }
    }
}

/// The bearer token (see `Workspace::api_token`): from `explicit`, or the
/// workspace's default file, created when missing.
pub fn load_token(workspace: &Workspace, explicit: Option<&Path>) -> Result<String> {
    let (token, created) = workspace
        .api_token(explicit)
        .context("the control API's token")?;
    if created {
        info!(path = %workspace.api_token_path().display(), "created a new API token");
    }
    Ok(token)
}

/// Middleware: passes a request with the right token on, answers any other
/// with a 401 that says where the token is.
pub(crate) async fn authorise(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let refusal = match presented {
        Some(token) if token_matches(&access.token, token) => return next.run(request).await,
        Some(_) => "wrong bearer token".to_string(),
        None => format!(
            "missing header Authorization: Bearer <token> (the token is in \
             WORKSPACE/.cutover/api-token unless {} runs with --api-token-file)",
            access.daemon
        ),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, refusal).into_response()
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's
/// name is case-insensitive (RFC 7235 §2.1), as curl and proxies may send
/// it in any case.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}
