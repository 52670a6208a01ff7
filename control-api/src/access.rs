//! Who may use an API: whoever presents the workspace's bearer token
//! (`Authorization: Bearer <token>`), read from `WORKSPACE/.cutover/api-token`
//! or the file `--api-token-file` names.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// The file the daemon's token was last read from, so that a 401 names it.
/// A process-wide value rather than a field of [`Access`]: each daemon reads
/// one token, through [`load_token`], and builds its `Access` elsewhere,
/// from the token alone.
static TOKEN_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The bearer token (see `Workspace::api_token`): from `explicit`, or the
/// workspace's default file, created when missing. Remembers the file for
/// the refusals.
pub fn load_token(workspace: &Workspace, explicit: Option<&Path>) -> Result<String> {
    let (token, created) = workspace
        .api_token(explicit)
        .context("the control API's token")?;
    let path = explicit.map_or_else(|| workspace.api_token_path(), Path::to_path_buf);
    if created {
        info!(path = %path.display(), "created a new API token");
    }
    let absolute = std::path::absolute(&path).unwrap_or(path);
    *TOKEN_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(absolute);
    Ok(token)
}

/// The file the token was read from, as a refusal names it.
fn token_file() -> Option<PathBuf> {
    TOKEN_FILE.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        Some(_) => match token_file() {
            Some(path) => format!(
                "wrong bearer token (the {}'s token is in {})",
                access.daemon,
                path.display()
            ),
            None => "wrong bearer token".to_string(),
        },
        None => match token_file() {
            Some(path) => format!(
                "missing header Authorization: Bearer <token> (the {}'s token is in {})",
                access.daemon,
                path.display()
            ),
            None => format!(
                "missing header Authorization: Bearer <token> (the token is in \
                 WORKSPACE/.cutover/api-token unless {} runs with --api-token-file)",
                access.daemon
            ),
        },
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
