//! `GET /api/v1/alerts[?state=firing|pending|resolved][&agency=..][&building=..][&meter=..]`: the
//! alert engine's active and recently resolved alerts, with labels, annotations (English and
//! Chinese summaries) and times.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, Shared};
use crate::alerts::state::State as AlertState;

fn rfc3339(ms: i64, tz: chrono_tz::Tz) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339())
}

pub(super) async fn list(State(s): State<Shared>, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let want = match p.get("state").map(String::as_str) {
        None | Some("") => None,
        Some("firing") => Some(AlertState::Firing),
        Some("pending") => Some(AlertState::Pending),
        Some("resolved") => Some(AlertState::Resolved),
        Some(x) => return Err(ApiError::bad_request(format!("state `{x}` is not one of firing, pending, resolved"))),
    };
    let label_is = |a: &crate::alerts::state::Alert, k: &str| -> bool {
        match p.get(k).filter(|v| !v.is_empty()) {
            None => true,
            // The agency label of a shared building lists its occupants, comma-separated.
            Some(v) => a.labels.get(k).is_some_and(|l| l.split(',').any(|x| x == v)),
        }
    };
    let mut alerts: Vec<_> = s
        .alerts
        .book
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .alerts
        .values()
        .filter(|a| want.is_none_or(|w| a.state == w) && label_is(a, "agency") && label_is(a, "building") && label_is(a, "meter"))
        .cloned()
        .collect();
    let rank = |st: AlertState| match st {
        AlertState::Firing => 0,
        AlertState::Pending => 1,
        AlertState::Resolved => 2,
    };
    alerts.sort_by(|a, b| rank(a.state).cmp(&rank(b.state)).then(b.active_at.cmp(&a.active_at)).then(a.rule.cmp(&b.rule)).then(a.key.cmp(&b.key)));
    let tz = s.tz;
    let items: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let l = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
            json!({
                "alertname": a.rule,
                "key": a.key,
                "state": a.state,
                "severity": l("severity"),
                "agency": l("agency"),
                "building": l("building"),
                "meter": l("meter"),
                "gateway": l("gateway"),
                "summary": a.annotations.get("summary"),
                "summary_zh": a.annotations.get("summary_zh"),
                "labels": a.labels,
                "annotations": a.annotations,
                "value": a.value,
                "activeAt": rfc3339(a.active_at, tz),
                "startsAt": a.starts_at.and_then(|t| rfc3339(t, tz)),
                "endsAt": a.ends_at.and_then(|t| rfc3339(t, tz)),
            })
        })
        .collect();
    let evaluated = *s.alerts.evaluated_at.lock().unwrap_or_else(|e| e.into_inner());
    let errors = s.alerts.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let rules: Vec<Value> = s.alerts.config.rules.iter().map(|r| json!({ "name": r.name, "kind": r.kind, "severity": r.severity, "for": r.for_ })).collect();
    Ok(Json(json!({
        "enabled": s.alerts.config.enabled,
        "evaluated_at": evaluated.and_then(|t| rfc3339(t, tz)),
        "alerts": items,
        "rules": rules,
        "rule_errors": errors,
    })))
}
