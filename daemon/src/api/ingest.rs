//! Ingest endpoints: gateway batches and InfluxDB line protocol (v1 and v2 write APIs).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, Principal, Shared};
use crate::auth::Role;
use crate::ingest::batch::{BatchError, Rejection, Sender, Stored};
use crate::ingest::conflicts_message;
use crate::ingest::lineproto::Precision;
use crate::ingest::BodyError;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The body, or the reason it could not be read as a JSON error (axum's own rejection is plain
/// text): 413 over `http.max_body_bytes`, counted as `too_large`.
fn read_body(s: &Shared, body: Result<Bytes, BytesRejection>, source: &str) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            s.ingest.count_refused(source, "too_large");
            ApiError { status, message: format!("body exceeds the limit of {} bytes (http.max_body_bytes)", s.max_body_bytes) }
        } else {
            ApiError { status, message: format!("cannot read the request body: {}", e.body_text()) }
        }
    })
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let status = match e {
            BodyError::BadGzip(_) => StatusCode::BAD_REQUEST,
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        ApiError { status, message: e.to_string() }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError { status: if r.too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST }, message: r.reason }
    }
}

/// The body decompressed as its `Content-Encoding` says, within the size limit.
fn body_bytes(s: &Shared, headers: &HeaderMap, body: &Bytes, source: &str) -> Result<Vec<u8>, ApiError> {
    let enc = headers.get("content-encoding").map(|v| v.to_str().unwrap_or(""));
    Ok(s.ingest.open_body(enc, body, source)?.into_owned())
}

/// `Some(429 answer)` when over the rate. The rate-limit key of an ingest request: the gateway
/// token's id, else the batch's claimed gateway, else the token's name.
fn throttle(s: &Shared, principal: &Principal, claimed: Option<&str>) -> Option<Response> {
    let key = principal.gateway.as_deref().or(claimed).unwrap_or(&principal.name);
    let wait = s.ingest.throttle(key).err()?;
    Some(super::limits::too_many(key, wait))
}

/// `POST /api/v1/ingest`: a gateway batch. Answers 200 only after the commit; idempotent on
/// (gateway, sequence).
pub(super) async fn batch(State(s): State<Shared>, principal: Principal, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
        if !ct.starts_with("application/json") {
            s.ingest.count_refused("batch", "content_type");
            return Err(ApiError { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, message: format!("content-type `{ct}` is not application/json") });
        }
    }
    let body = read_body(&s, body, "batch")?;
    let bytes = body_bytes(&s, &headers, &body, "batch")?;
    let claimed = energy_wire::batch_identity(&bytes).map(|i| i.0);
    if let Some(g) = &claimed {
        if let Err(e) = principal.require_gateway(g) {
            s.ingest.count_refused("batch", "wrong_gateway");
            return Err(e.into());
        }
    }
    if let Some(r) = throttle(&s, &principal, claimed.as_deref()) {
        return Ok(r);
    }
    // A gateway token's batches must be its own gateway's, whatever the quick look above saw,
    // and hold only its meters.
    let sender = (principal.role == Role::Gateway).then(|| Sender {
        who: &principal,
        gateway: principal.gateway.as_deref().unwrap_or_default(),
        listed: &principal.meters,
        settle_refused: false,
        unassigned_ok: false,
    });
    match s.ingest.batch(&bytes, principal.gateway.as_deref(), sender, now_ms()).await {
        Ok(stored) => {
            let mut v = serde_json::to_value(&stored.outcome).unwrap_or_default();
            v["gateway"] = stored.gateway.clone().into();
            if !stored.unassigned.is_empty() {
                v["unassigned_meters"] = serde_json::json!(stored.unassigned);
                v["warning"] = "some meters are not in the registry; their readings are kept as unassigned".into();
            }
            if stored.too_old > 0 {
                v["samples_too_old"] = stored.too_old.into();
                v["warning"] = format!(
                    "{} samples are older than the retention of raw data ({} days) and were not stored",
                    stored.too_old,
                    s.ingest.raw_days()
                )
                .into();
            }
            Ok(partial_batch_answer(&stored, v).into_response())
        }
        Err(BatchError::Rejected(r)) => Err(r.into()),
        Err(BatchError::Store(e)) => Err(e.into()),
    }
}

/// A stored batch's answer: 200; 403 when samples of meters not assigned to the gateway were
/// refused (the others are stored; the refused ones are not recorded as received, so the
/// gateway keeps them and sends them again until the meter is assigned); 409 when points
/// conflict with stored readings (kept aside; the batch is recorded as received, so that the
/// gateway's retry is answered 200 as a duplicate). The body is the outcome in every case, with
/// `error` saying what was not written.
fn partial_batch_answer(stored: &Stored, mut v: serde_json::Value) -> (StatusCode, Json<serde_json::Value>) {
    let mut parts = Vec::new();
    let mut status = StatusCode::OK;
    if !stored.refused.is_empty() {
        let n: u64 = stored.refused_seqs.iter().map(|r| r.1 - r.0 + 1).sum();
        let reasons: Vec<&str> = stored.refused.iter().map(|(_, r)| r.as_str()).collect();
        parts.push(format!("{n} samples refused, not stored: {}", reasons.join("; ")));
        v["refused_meters"] = serde_json::json!(stored.refused.iter().map(|(m, r)| serde_json::json!({ "meter": m, "reason": r })).collect::<Vec<_>>());
        v["refused_seqs"] = serde_json::json!(stored.refused_seqs.iter().map(|r| [r.0, r.1]).collect::<Vec<_>>());
        status = StatusCode::FORBIDDEN;
    }
    if stored.outcome.points_conflicting > 0 {
        parts.push(conflicts_message(&stored.outcome.conflicts, stored.outcome.points_conflicting));
        v["conflicts"] = serde_json::to_value(&stored.outcome.conflicts).unwrap_or_default();
        if status == StatusCode::OK {
            status = StatusCode::CONFLICT;
        }
    }
    if !parts.is_empty() {
        v["error"] = format!("partial write: {} samples stored; {}", stored.outcome.samples_stored, parts.join("; ")).into();
    }
    (status, Json(v))
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
        s.ingest.count_refused(source, "bad_precision");
        ApiError::bad_request(e.to_string())
    })?;
    let body = read_body(&s, body, source)?;
    let bytes = body_bytes(&s, &headers, &body, source)?;
    let from = if s.auth.is_some() { format!("line protocol (token `{}`)", principal.name) } else { "line protocol".to_string() };
    let written = s.ingest.lines(&bytes, precision, &principal, from, now_ms()).await?;
    if written.complete() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let message = written.message();
    // Refused meters are an authorization refusal (403); the rest a partial write (400).
    let status = if written.refused.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::FORBIDDEN };
    let body = match flavour {
        Flavour::V1 => serde_json::json!({ "error": message }),
        Flavour::V2 => serde_json::json!({ "code": "invalid", "message": message }),
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /api/v2/write?bucket=..&precision=..` (InfluxDB 2.x/3.x write API).
pub(super) async fn write_v2(State(s): State<Shared>, principal: Principal, headers: HeaderMap, Query(params): Query<HashMap<String, String>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    write_lines(s, principal, headers, params, body, Flavour::V2).await
}

/// `POST /write?db=..&precision=..` (InfluxDB 1.x write API).
pub(super) async fn write_v1(State(s): State<Shared>, principal: Principal, headers: HeaderMap, Query(params): Query<HashMap<String, String>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    write_lines(s, principal, headers, params, body, Flavour::V1).await
}
