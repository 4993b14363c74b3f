//! Request limits: the 429 answer of the ingest rate limit (the token buckets are ingest's,
//! `crate::ingest::rate`), and the request timeout middleware. (The body limit is axum's
//! `DefaultBodyLimit`; connection count and header read timeout are in the serve loop,
//! `crate::serve`.)

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Shared};

/// 429 with `Retry-After` (whole seconds, at least 1).
pub fn too_many(key: &str, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut r = ApiError { status: StatusCode::TOO_MANY_REQUESTS, message: format!("ingest rate limit of gateway `{key}` reached (ingest.rate_per_gateway); retry in {secs} s") }
        .into_response();
    if let Ok(v) = secs.to_string().parse() {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

/// Answers 503 when the handler has not answered within `http.request_timeout_ms` (reading
/// the body included). An ingest that times out may still be committed: the sender's retry is
/// deduplicated.
pub(super) async fn timeout(State(s): State<Shared>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(s.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the request was not answered within {} ms (http.request_timeout_ms)", s.request_timeout.as_millis()),
        }
        .into_response(),
    }
}
