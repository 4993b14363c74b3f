//! Ingest endpoints: gateway batches and InfluxDB line protocol (v1 and v2 write APIs).

use std::collections::HashMap;
use std::io::Read;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, Principal, Shared};
use crate::config::UnknownMeter;
use crate::ingest::lineproto::Precision;
use crate::ingest::batch::{ingest_batch, BatchError};
use crate::ingest::lines_to_points;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The body, or the reason it could not be read as a JSON error (axum's own rejection is plain
/// text): 413 over `http.max_body_bytes`, counted as `too_large`.
fn read_body(s: &Shared, body: Result<Bytes, BytesRejection>, source: &str) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            s.metrics.rejected.with_label_values(&[source, "too_large"]).inc();
            ApiError { status, message: format!("body exceeds the limit of {} bytes (http.max_body_bytes)", s.max_body_bytes) }
        } else {
            ApiError { status, message: format!("cannot read the request body: {}", e.body_text()) }
        }
    })
}

/// Decompresses a gzip body within the size limit.
fn body_bytes(s: &Shared, headers: &HeaderMap, body: Bytes, source: &str) -> Result<Vec<u8>, ApiError> {
    let enc = headers.get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            let limit = s.max_body_bytes as u64;
            let mut dec = flate2::read::GzDecoder::new(&body[..]).take(limit + 1);
            if let Err(e) = dec.read_to_end(&mut out) {
                s.metrics.rejected.with_label_values(&[source, "bad_gzip"]).inc();
                return Err(ApiError::bad_request(format!("body is not valid gzip: {e}")));
            }
            if out.len() as u64 > limit {
                s.metrics.rejected.with_label_values(&[source, "too_large"]).inc();
                return Err(ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, message: format!("decompressed body exceeds the limit of {limit} bytes") });
            }
            Ok(out)
        }
        other => {
            s.metrics.rejected.with_label_values(&[source, "bad_encoding"]).inc();
            Err(ApiError { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, message: format!("content-encoding `{other}` is not supported (use gzip or none)") })
        }
    }
}

/// `POST /api/v1/ingest`: a gateway batch. Answers 200 only after the commit; idempotent on
/// (gateway, sequence).
/// The rate-limit key of an ingest request: the gateway token's id, else the batch's claimed
/// gateway, else the token's name.
/// `Some(429 answer)` when over the rate.
fn throttle(s: &Shared, principal: &Principal, claimed: Option<&str>) -> Option<Response> {
    let key = principal.gateway.as_deref().or(claimed).unwrap_or(&principal.name);
    let wait = s.ingest_limiter.check(key, std::time::Instant::now()).err()?;
    s.metrics.ingest_throttled.inc();
    Some(super::limits::too_many(key, wait))
}

pub(super) async fn batch(State(s): State<Shared>, principal: Principal, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
        if !ct.starts_with("application/json") {
            s.metrics.rejected.with_label_values(&["batch", "content_type"]).inc();
            return Err(ApiError { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, message: format!("content-type `{ct}` is not application/json") });
        }
    }
    let body = read_body(&s, body, "batch")?;
    let bytes = body_bytes(&s, &headers, body, "batch")?;
    let claimed = energy_wire::batch_identity(&bytes).map(|i| i.0);
    if let Some(g) = &claimed {
        if let Err(e) = principal.require_gateway(g) {
            s.metrics.rejected.with_label_values(&["batch", "wrong_gateway"]).inc();
            return Err(e.into());
        }
    }
    if let Some(r) = throttle(&s, &principal, claimed.as_deref()) {
        return Ok(r);
    }
    // A gateway token's batches must be its own gateway's, whatever the quick look above saw.
    match ingest_batch(&s, &bytes, principal.gateway.as_deref(), now_ms()).await {
        Ok(stored) => {
            let mut v = serde_json::to_value(&stored.outcome).unwrap_or_default();
            v["gateway"] = stored.gateway.into();
            if !stored.unassigned.is_empty() {
                v["unassigned_meters"] = serde_json::json!(stored.unassigned);
                v["warning"] = "some meters are not in the registry; their readings are kept as unassigned".into();
            }
            if stored.too_old > 0 {
                v["samples_too_old"] = stored.too_old.into();
                v["warning"] = format!(
                    "{} samples are older than the retention of raw data ({} days) and were not stored",
                    stored.too_old, s.retention.raw_days
                )
                .into();
            }
            Ok((StatusCode::OK, Json(v)).into_response())
        }
        Err(BatchError::Rejected(r)) => Err(ApiError { status: if r.too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST }, message: r.reason }),
        Err(BatchError::Store(e)) => Err(e.into()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Flavour {
    V1,
    V2,
}

async fn write_lines(s: Shared, principal: Principal, headers: HeaderMap, params: HashMap<String, String>, body: Result<Bytes, BytesRejection>, flavour: Flavour) -> Result<Response, ApiError> {
    let source = "line_protocol";
    if let Some(r) = throttle(&s, &principal, None) {
        return Ok(r);
    }
    let precision = Precision::parse(params.get("precision").map_or("", String::as_str)).map_err(|e| {
        s.metrics.rejected.with_label_values(&[source, "bad_precision"]).inc();
        ApiError::bad_request(e)
    })?;
    let body = read_body(&s, body, source)?;
    let bytes = body_bytes(&s, &headers, body, source)?;
    let accept_unknown = s.ingest.unknown_meter == UnknownMeter::Accept;
    let reg = s.registry.clone();
    let report = lines_to_points(&bytes, precision, now_ms(), s.retention.raw_ms(), &|m| reg.meter(m).is_some(), accept_unknown);
    for e in &report.errors {
        s.metrics.rejected.with_label_values(&[source, e.label]).inc();
    }
    if !report.unassigned.is_empty() {
        s.unassigned.lock().unwrap_or_else(|e| e.into_inner()).extend(report.unassigned.iter().cloned());
    }
    let written = report.points.len();
    if written > 0 {
        s.store.write_points(report.points).await?;
    }
    if report.errors.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let shown: Vec<String> = report.errors.iter().take(20).map(|e| format!("line {}: {} (`{}`)", e.line, e.reason, e.text)).collect();
    let more = report.errors.len().saturating_sub(20);
    let mut message = format!("partial write: {} points written, {} lines rejected: {}", written, report.errors.len(), shown.join("; "));
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    let body = match flavour {
        Flavour::V1 => serde_json::json!({ "error": message }),
        Flavour::V2 => serde_json::json!({ "code": "invalid", "message": message }),
    };
    Ok((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

/// `POST /api/v2/write?bucket=..&precision=..` (InfluxDB 2.x/3.x write API).
pub(super) async fn write_v2(State(s): State<Shared>, principal: Principal, headers: HeaderMap, Query(params): Query<HashMap<String, String>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    write_lines(s, principal, headers, params, body, Flavour::V2).await
}

/// `POST /write?db=..&precision=..` (InfluxDB 1.x write API).
pub(super) async fn write_v1(State(s): State<Shared>, principal: Principal, headers: HeaderMap, Query(params): Query<HashMap<String, String>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    write_lines(s, principal, headers, params, body, Flavour::V1).await
}
