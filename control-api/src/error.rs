//! The one shape of a failed API request: a status and `{"error": message}`,
//! with the status of each workspace-history failure decided here once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cutover_workspace::HistoryError;
use serde_json::json;
use tracing::warn;

/// A refused or failed request: a 4xx when the caller can fix it (the
/// message names the field or the thing that is missing), a 5xx when the
/// daemon failed. Answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A 500; logged too, because it is the daemon's failure, not the
    /// caller's, and the caller may not be watching.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        warn!(%message, "API request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        let status = match &e {
            HistoryError::Invalid(_) | HistoryError::Unmanaged(_) => StatusCode::BAD_REQUEST,
            HistoryError::NoSuchGeneration(_) => StatusCode::NOT_FOUND,
            HistoryError::Compacted(_) => StatusCode::GONE,
            // Asked of a daemon that does not read zones (the redirector).
            HistoryError::NeedsJournal(_) => StatusCode::CONFLICT,
            // The caller's change is fine; it collided with another writer
            // (the other daemon, `cutover`, a dynamic update) and can be
            // sent again as it is.
            HistoryError::Busy(lock) => {
                return Self::new(
                    StatusCode::CONFLICT,
                    format!(
                        "another change is being written to the workspace ({} is held); \
                         nothing was changed, retry",
                        lock.display()
                    ),
                );
            }
            // The daemon's disk failed the change; the message says whether
            // it will yet take effect (`Unfinished`) or not (`Io`).
            HistoryError::Io { .. } | HistoryError::Unfinished { .. } => {
                return Self::internal(e.to_string());
            }
        };
        Self::new(status, e.to_string())
    }
}

/// Runs blocking workspace work (file I/O, fsync, the history lock, which
/// may wait) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the worker running the request failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use cutover_workspace::ConfigError;

    use super::*;

    #[test]
    fn a_busy_workspace_is_a_conflict_to_retry() {
        let e = ApiError::from(HistoryError::Busy(PathBuf::from("/ws/.cutover/lock")));
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("another change"), "{}", e.message);
        assert!(e.message.contains("retry"), "{}", e.message);
        assert!(e.message.contains("/ws/.cutover/lock"), "{}", e.message);
    }

    #[test]
    fn history_failures_get_the_status_of_whose_fault_they_are() {
        let status = |e| ApiError::from(e).status;
        assert_eq!(
            status(HistoryError::Invalid(
                ConfigError::file(Path::new("dnsd.toml"), "no").into()
            )),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(HistoryError::Unmanaged("x.txt".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(HistoryError::NoSuchGeneration(9)),
            StatusCode::NOT_FOUND
        );
        let io = HistoryError::Io {
            path: "/ws/.cutover/current".into(),
            source: std::io::Error::other("disk gone"),
        };
        assert_eq!(status(io), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
