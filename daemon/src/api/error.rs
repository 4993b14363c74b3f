//! One error type for every handler: a status and a message that names the problem. Internal
//! details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `Retry-After` (seconds) of a write refused because the disk is full.
const DISK_FULL_RETRY_AFTER: &str = "30";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: m.into() }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: m.into() }
    }
    /// 401: no or bad credentials. The response carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, message: m.into() }
    }
    /// 403: authenticated, but not allowed.
    pub fn forbidden(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::FORBIDDEN, message: m.into() }
    }
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {e}");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("{context}; see the daemon's log") }
    }
    pub fn unavailable(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!("{context}: {e}");
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: format!("{context}; retry later") }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer realm=\"energyd\""));
        }
        if self.status == StatusCode::INSUFFICIENT_STORAGE {
            r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static(DISK_FULL_RETRY_AFTER));
        }
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Closed => ApiError::unavailable("the store is shutting down", e),
            crate::store::StoreError::SpoolFull { .. } => {
                let message = e.to_string();
                tracing::warn!("{message}");
                ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message }
            }
            crate::store::StoreError::Remote(_) => ApiError::unavailable("the InfluxDB backend did not answer (see the daemon's log)", e),
            // 507: the sender keeps the data and retries (the gateway never sets it aside).
            crate::store::StoreError::DiskFull(message) => ApiError { status: StatusCode::INSUFFICIENT_STORAGE, message },
            other => ApiError::internal("storage failed", other),
        }
    }
}
