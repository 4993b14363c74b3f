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
use crate::auth::Role;
use crate::ingest::batch::{ingest_batch, BatchError, Sender, Stored};
use crate::ingest::{conflicts_message, lines_to_points};

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
    // A gateway token's batches must be its own gateway's, whatever the quick look above saw,
    // and hold only its meters.
    let sender = (principal.role == Role::Gateway).then(|| Sender {
        who: &principal,
        gateway: principal.gateway.as_deref().unwrap_or_default(),
        listed: &principal.meters,
        settle_refused: false,
        unassigned_ok: false,
    });
    match ingest_batch(&s, &bytes, principal.gateway.as_deref(), sender, now_ms()).await {
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
                    stored.too_old, s.retention.raw_days
                )
                .into();
            }
            Ok(partial_batch_answer(&stored, v).into_response())
        }
        Err(BatchError::Rejected(r)) => Err(ApiError { status: if r.too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST }, message: r.reason }),
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
        s.metrics.rejected.with_label_values(&[source, "bad_precision"]).inc();
        ApiError::bad_request(e)
    })?;
    let body = read_body(&s, body, source)?;
    let bytes = body_bytes(&s, &headers, body, source)?;
    let accept_unknown = s.ingest.unknown_meter == UnknownMeter::Accept;
    let reg = s.registry.clone();
    let mut report = lines_to_points(&bytes, precision, now_ms(), s.retention.raw_ms(), &|m| reg.meter(m).is_some(), accept_unknown);
    for e in &report.errors {
        s.metrics.rejected.with_label_values(&[source, e.label]).inc();
    }
    let refused = refuse_foreign_meters(&s, &principal, &mut report.points).await;
    if !report.unassigned.is_empty() {
        s.unassigned.lock().unwrap_or_else(|e| e.into_inner()).extend(report.unassigned.iter().cloned());
    }
    let sent = report.points.len();
    let mut outcome = crate::store::WriteOutcome::default();
    if sent > 0 {
        let from = if s.auth.is_some() { format!("line protocol (token `{}`)", principal.name) } else { "line protocol".to_string() };
        outcome = s.store.write_points_from(report.points, from).await?;
    }
    if report.errors.is_empty() && refused.is_empty() && outcome.points_conflicting == 0 {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let written = sent as u64 - outcome.points_conflicting;
    let mut message = format!("partial write: {written} points written");
    if !report.errors.is_empty() {
        let shown: Vec<String> = report.errors.iter().take(20).map(|e| format!("line {}: {} (`{}`)", e.line, e.reason, e.text)).collect();
        let more = report.errors.len().saturating_sub(20);
        message.push_str(&format!(", {} lines rejected: {}", report.errors.len(), shown.join("; ")));
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
    }
    if !refused.is_empty() {
        let n: u64 = refused.values().map(|(_, n)| n).sum();
        let shown: Vec<String> = refused.values().map(|(reason, k)| format!("{reason} ({k} points)")).collect();
        message.push_str(&format!("; {n} points refused: {}", shown.join("; ")));
    }
    if outcome.points_conflicting > 0 {
        message.push_str("; ");
        message.push_str(&conflicts_message(&outcome.conflicts, outcome.points_conflicting));
    }
    // Refused meters are an authorization refusal (403); the rest a partial write (400).
    let status = if refused.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::FORBIDDEN };
    let body = match flavour {
        Flavour::V1 => serde_json::json!({ "error": message }),
        Flavour::V2 => serde_json::json!({ "code": "invalid", "message": message }),
    };
    Ok((status, Json(body)).into_response())
}

/// Takes out of `points` those of meters a gateway token may not write (the rule in
/// crate::auth); counted and audited. Returns, per refused meter, the reason and the number of
/// points.
async fn refuse_foreign_meters(s: &Shared, principal: &Principal, points: &mut Vec<crate::store::Point>) -> std::collections::BTreeMap<String, (String, u64)> {
    let mut refused: std::collections::BTreeMap<String, (String, u64)> = Default::default();
    if principal.role != Role::Gateway {
        return refused;
    }
    let mut allowed: HashMap<std::sync::Arc<str>, bool> = HashMap::new();
    points.retain(|p| {
        let ok = *allowed.entry(p.meter.clone()).or_insert_with(|| match principal.meter_refusal(&s.registry, &p.meter) {
            None => true,
            Some(reason) => {
                refused.insert(p.meter.to_string(), (reason, 0));
                false
            }
        });
        if !ok {
            if let Some(r) = refused.get_mut(&*p.meter) {
                r.1 += 1;
            }
        }
        ok
    });
    if !refused.is_empty() {
        let n: u64 = refused.values().map(|(_, n)| n).sum();
        s.metrics.rejected.with_label_values(&["line_protocol", "meter_not_assigned"]).inc_by(n);
        tracing::warn!(token = %principal.name, meters = ?refused.keys().collect::<Vec<_>>(), points = n, "line protocol points of meters not assigned to the gateway refused");
        let detail = serde_json::json!({
            "gateway": principal.gateway, "points_refused": n,
            "meters": refused.iter().map(|(m, (r, k))| serde_json::json!({ "meter": m, "reason": r, "points": k })).collect::<Vec<_>>(),
        });
        let (st, who) = (s.clone(), principal.clone());
        let _ = tokio::task::spawn_blocking(move || st.audit.record_ingest_refusal(&who, "line protocol", detail)).await;
    }
    refused
}

/// `POST /api/v2/write?bucket=..&precision=..` (InfluxDB 2.x/3.x write API).
pub(super) async fn write_v2(State(s): State<Shared>, principal: Principal, headers: HeaderMap, Query(params): Query<HashMap<String, String>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    write_lines(s, principal, headers, params, body, Flavour::V2).await
}

/// `POST /write?db=..&precision=..` (InfluxDB 1.x write API).
pub(super) async fn write_v1(State(s): State<Shared>, principal: Principal, headers: HeaderMap, Query(params): Query<HashMap<String, String>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    write_lines(s, principal, headers, params, body, Flavour::V1).await
}
