//! The alerts over HTTP (the domain service is `crate::alerts::actions`):
//!
//! * `GET /api/v1/alerts[?state=firing|pending|resolved][&agency=..][&building=..][&meter=..][&kind=..]`:
//!   the alert engine's active and recently resolved alerts, with labels, annotations (English
//!   and Chinese summaries), times, `id`, `acknowledged`, `silenced` and `history`; an agency
//!   token sees its agency's alerts only;
//! * `POST /api/v1/alerts/{id}/ack` `{"reason": ".."}`;
//! * `POST /api/v1/alerts/{id}/silence` `{"reason": "..", "hours": N}` or `{"reason": "..", "until": "<RFC 3339>"}`;
//! * `DELETE /api/v1/alerts/{id}/silence`.
//!
//! The actions answer with the alert as listed.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, Principal, Shared};
use crate::alerts::actions::{ActionError, AlertFilter, AlertView, SilenceFor};
use crate::alerts::state::State as AlertState;

fn rfc3339(ms: i64, tz: chrono_tz::Tz) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound(m) => ApiError::not_found(m),
            ActionError::Forbidden(m) => ApiError::forbidden(m),
            ActionError::Invalid(m) => ApiError::bad_request(m),
            ActionError::Conflict(m) => ApiError { status: StatusCode::CONFLICT, message: m },
            ActionError::Storage(m) => ApiError::internal("recording the alert action failed; nothing was changed", m),
        }
    }
}

pub(super) async fn list(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let state = match p.get("state").map(String::as_str) {
        None | Some("") => None,
        Some("firing") => Some(AlertState::Firing),
        Some("pending") => Some(AlertState::Pending),
        Some("resolved") => Some(AlertState::Resolved),
        Some(x) => return Err(ApiError::bad_request(format!("state `{x}` is not one of firing, pending, resolved"))),
    };
    let kinds = s.alerts.config.rules.iter().map(|r| (r.name.clone(), r.kind.as_str().to_string())).collect();
    let filter = AlertFilter { state, agency: p.get("agency").cloned(), building: p.get("building").cloned(), meter: p.get("meter").cloned(), kind: p.get("kind").cloned(), kinds };
    let items = s.alerts.list(&principal, &filter, now_ms());
    let tz = s.tz;
    let evaluated = *s.alerts.evaluated_at.lock().unwrap_or_else(|e| e.into_inner());
    // Rule errors name meters and agencies: for those who read everything.
    let errors = if principal.reads_all() { s.alerts.errors.lock().unwrap_or_else(|e| e.into_inner()).clone() } else { Default::default() };
    let rules: Vec<Value> = s.alerts.config.rules.iter().map(|r| json!({ "name": r.name, "kind": r.kind, "severity": r.severity, "for": r.for_ })).collect();
    Ok(Json(json!({
        "enabled": s.alerts.config.enabled,
        "evaluated_at": evaluated.and_then(|t| rfc3339(t, tz)),
        "alerts": items,
        "rules": rules,
        "rule_errors": errors,
    })))
}

/// The body of an action: a JSON object.
fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request("body must be a JSON object such as {\"reason\": \"...\"}")),
        Err(e) => Err(ApiError::bad_request(format!("body is not JSON: {e}"))),
    }
}

fn reason_of(o: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match o.get("reason") {
        Some(Value::String(r)) => Ok(r.clone()),
        Some(_) => Err(ApiError::bad_request("`reason` must be a string")),
        None => Err(ApiError::bad_request("`reason` is required: say why (it is kept and audited)")),
    }
}

/// Runs a blocking action (fsyncs) off the async threads.
async fn blocking(f: impl FnOnce() -> Result<AlertView, ActionError> + Send + 'static) -> Result<Json<AlertView>, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(Json(r?)),
        Err(e) => Err(ApiError::internal("alert action", e)),
    }
}

pub(super) async fn ack(State(s): State<Shared>, principal: Principal, Path(id): Path<String>, body: axum::body::Bytes) -> Result<Json<AlertView>, ApiError> {
    let o = body_object(&body)?;
    let reason = reason_of(&o)?;
    if let Some(k) = o.keys().find(|k| *k != "reason") {
        return Err(ApiError::bad_request(format!("unknown field `{k}`: an acknowledgement takes only `reason`")));
    }
    let (alerts, audit) = (s.alerts.clone(), s.audit.clone());
    blocking(move || alerts.acknowledge(&audit, &principal, &id, &reason, now_ms())).await
}

pub(super) async fn silence(State(s): State<Shared>, principal: Principal, Path(id): Path<String>, body: axum::body::Bytes) -> Result<Json<AlertView>, ApiError> {
    let o = body_object(&body)?;
    let reason = reason_of(&o)?;
    if let Some(k) = o.keys().find(|k| !["reason", "hours", "until"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field `{k}`: a silence takes `reason` and `hours` or `until`")));
    }
    let how = match (o.get("hours"), o.get("until")) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give `hours` or `until`, not both")),
        (None, None) => return Err(ApiError::bad_request("`hours` (a number) or `until` (an RFC 3339 time) is required")),
        (Some(h), None) => SilenceFor::Hours(h.as_f64().ok_or_else(|| ApiError::bad_request("`hours` must be a number"))?),
        (None, Some(u)) => {
            let text = u.as_str().ok_or_else(|| ApiError::bad_request("`until` must be an RFC 3339 time such as \"2026-12-01T08:00:00+08:00\""))?;
            let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| ApiError::bad_request(format!("`until` `{text}` is not an RFC 3339 time ({e}), e.g. \"2026-12-01T08:00:00+08:00\"")))?;
            SilenceFor::Until(t.timestamp_millis())
        }
    };
    let (alerts, audit) = (s.alerts.clone(), s.audit.clone());
    blocking(move || alerts.silence(&audit, &principal, &id, &reason, how, now_ms())).await
}

pub(super) async fn unsilence(State(s): State<Shared>, principal: Principal, Path(id): Path<String>) -> Result<Json<AlertView>, ApiError> {
    let (alerts, audit) = (s.alerts.clone(), s.audit.clone());
    blocking(move || alerts.unsilence(&audit, &principal, &id, now_ms())).await
}
