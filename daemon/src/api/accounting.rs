//! Accounting endpoints: indicators per agency and year, and meter events.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::Datelike;
use serde_json::{json, Value};

use super::{ApiError, Principal, Shared};
use crate::accounting::engine::EngineError;
use crate::accounting::indicators::AgencyIndicators;
use crate::registry::{scope_members, Agency, EventFields, EventRecord, Scope};
use crate::time::rfc3339_ms;

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::Year(_) | EngineError::Event { .. } | EngineError::Rejected(_) | EngineError::NotPhysical(_) | EngineError::Invalid(_) => ApiError::bad_request(e.to_string()),
            EngineError::Log { .. } => ApiError::internal("writing the meter events log failed", e),
        }
    }
}

/// The year asked (default: the current year) and the instant figures run to: the start of the
/// local day of `as_of` (default today), the same "as of" as the page and the reports
/// ([`crate::time::as_of_cut`]); a past year runs to its end.
pub fn year_and_now(s: &Shared, p: &HashMap<String, String>) -> Result<(i32, i64), ApiError> {
    let now = chrono::Utc::now().with_timezone(&s.tz);
    let year = match p.get("year") {
        Some(y) => y.parse::<i32>().map_err(|_| ApiError::bad_request(format!("year `{y}` is not a year such as 2026")))?,
        None => now.year(),
    };
    if !(1970..=2200).contains(&year) {
        return Err(ApiError::bad_request(format!("year {year} is outside 1970-2200")));
    }
    let (_, now_ms) = crate::time::as_of_cut(s.tz, now.date_naive(), p.get("as_of").map(String::as_str)).map_err(|e| ApiError::bad_request(format!("as_of: {e}")))?;
    Ok((year, now_ms))
}

/// The `as_of` instant in the time zone, for the answers.
fn as_of_text(s: &Shared, now_ms: i64) -> Option<String> {
    crate::time::rfc3339(now_ms, s.tz)
}

/// Indicators of the given agencies (each over its scope).
pub async fn compute(s: &Shared, year: i32, now_ms: i64, agencies: &[&Agency], scope: Scope) -> Result<Vec<AgencyIndicators>, ApiError> {
    let reg = s.registry.clone();
    let list: Vec<(&Agency, Vec<&str>)> = agencies.iter().map(|a| (*a, scope_members(&reg, a, scope))).collect();
    let started = std::time::Instant::now();
    let out = s.engine.indicators(&s.store, &reg, year, now_ms, &list).await?;
    s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
    Ok(out)
}

/// `GET /api/v1/agencies/{id}/indicators?year=..[&scope=agency|level|tree][&as_of=..]`
pub(super) async fn agency_indicators(
    State(s): State<Shared>,
    principal: Principal,
    Path(id): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let reg = s.registry.clone();
    principal.require_agency(&reg, &id)?;
    let agency = reg.agency(&id).ok_or_else(|| ApiError::not_found(format!("agency `{id}` is not in the registry")))?;
    let scope: Scope = p.get("scope").map_or(Ok(Scope::Agency), |v| v.parse().map_err(|e: crate::registry::UnknownScope| ApiError::bad_request(e.to_string())))?;
    // A jurisdiction's figures hold other agencies' data.
    if scope != Scope::Agency {
        principal.require_read_all()?;
    }
    let (year, now_ms) = year_and_now(&s, &p)?;
    let mut out = compute(&s, year, now_ms, &[agency], scope).await?;
    let ind = out.pop().ok_or_else(|| ApiError::internal("indicators", "no result computed"))?;
    let members = scope_members(&reg, agency, scope);
    let mut v = serde_json::to_value(&ind).map_err(|e| ApiError::internal("encoding indicators", e))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("scope".into(), json!(scope.as_str()));
        o.insert("members".into(), json!(members));
        o.insert("timezone".into(), json!(s.tz.name()));
        o.insert("as_of".into(), json!(as_of_text(&s, now_ms)));
        o.insert("as_of_rule".into(), json!(crate::time::AS_OF_RULE));
    }
    Ok(Json(v))
}

/// `GET /api/v1/indicators?year=..[&as_of=..]`: every agency's own indicators, in registry order
/// (an agency token sees its own only).
pub(super) async fn all_indicators(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let reg = s.registry.clone();
    principal.require_read()?;
    let (year, now_ms) = year_and_now(&s, &p)?;
    let agencies: Vec<&Agency> = reg.file.agencies.iter().filter(|a| principal.sees_agency(&a.id)).collect();
    let out = compute(&s, year, now_ms, &agencies, Scope::Agency).await?;
    Ok(Json(json!({ "year": year, "timezone": s.tz.name(), "as_of": as_of_text(&s, now_ms), "as_of_rule": crate::time::AS_OF_RULE, "items": out })))
}

/// `POST /api/v1/meters/{id}/events`: a replacement, a manual reading or an exclusion, with who
/// and why. Stored durably before the answer; the meter's figures are recomputed.
/// `by` defaults to the token's name. The event is written to the audit log too.
///
/// A `reading` event is also the correction of the stored reading at its time (of its
/// `quantity`, by default the meter's counter): the only way a stored reading changes (ingest
/// never replaces one). The store takes the value, the conflicts at that time are settled, and
/// the audit record keeps the value stored before (`correction.previous`).
pub(super) async fn post_event(
    State(s): State<Shared>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    Ok((axum::http::StatusCode::CREATED, Json(record_event(&s, &principal, &id, v).await?)))
}

/// Records meter `id`'s event `v` (the JSON body of `POST /api/v1/meters/{id}/events`) for
/// `principal`: checks, the store's correction for a reading, the event log, the audit log and
/// the warnings; the answer of the endpoint. The page's forms call it too.
pub async fn record_event(s: &Shared, principal: &Principal, id: &str, mut v: Value) -> Result<Value, ApiError> {
    let id = id.to_string();
    principal.require_role(crate::auth::Role::Engineer)?;
    match v.as_object_mut() {
        Some(o) => {
            if let Some(m) = o.get("meter").and_then(Value::as_str) {
                if m != id {
                    return Err(ApiError::bad_request(format!("body names meter `{m}`, the path `{id}`")));
                }
            }
            o.insert("meter".into(), json!(id));
            o.remove("recorded_at");
            if !o.contains_key("by") && s.auth.is_some() {
                o.insert("by".into(), json!(principal.name));
            }
        }
        None => return Err(ApiError::bad_request("body must be a JSON object")),
    }
    let fields: EventFields = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("event: {e}")))?;
    let reg = s.registry.clone();
    if reg.meter(&id).is_none() {
        return Err(ApiError::not_found(format!("meter `{id}` is not in the registry")));
    }
    // The order of the checks, and so which message a wrong event gets, is the one the API has
    // always had: a virtual meter first; a reading's own fault as `event: ..` (it is also a
    // correction of the store); any other event's fault as it is.
    if reg.meter(&id).is_some_and(|m| m.is_virtual()) {
        return Err(ApiError::bad_request(format!("`{id}` is not a physical meter of the registry")));
    }
    let reading = fields.kind == "reading";
    let rec = EventRecord::try_from(fields).map_err(|e| ApiError::bad_request(if reading { format!("event: {e}") } else { e.to_string() }))?;
    let correction = crate::accounting::events::correction_of(&reg, &rec, s.tz).map_err(|e| ApiError::bad_request(format!("event: {e}")))?;
    let corrected = match &correction {
        Some(c) => s.store.correct(c.clone()).await?.corrected,
        None => None,
    };
    let engine = s.engine.clone();
    let recorded = tokio::task::spawn_blocking(move || engine.record_event(&reg, rec)).await.map_err(|e| ApiError::internal("recording the event", e));
    let (stored, correction) = match (recorded, correction, corrected) {
        (Ok(Ok(stored)), Some(c), Some(done)) => (Ok(stored), Some(correction_json(s, &c, &done))),
        (Ok(Ok(stored)), _, _) => (Ok(stored), None),
        // The store was corrected but the event log failed: the audit log still says so.
        (Ok(Err(e)), Some(c), Some(done)) => (Err(ApiError::from(e)), Some(correction_json(s, &c, &done))),
        (Ok(Err(e)), _, _) => (Err(ApiError::from(e)), None),
        (Err(e), c, done) => (Err(e), c.zip(done).map(|(c, d)| correction_json(s, &c, &d))),
    };
    if stored.is_err() && correction.is_some() {
        s.record(principal, "meter.correction", &id, json!({ "correction": correction, "event_log": "failed" })).await;
    }
    let stored = stored?;
    let mut detail = serde_json::to_value(&stored).unwrap_or_default();
    if let (Some(o), Some(c)) = (detail.as_object_mut(), &correction) {
        o.insert("correction".into(), c.clone());
    }
    s.record(principal, "meter.event", &id, detail).await;
    let warnings = crate::accounting::events::replacement_warnings(&s.engine, &s.store, &s.registry, &stored).await;
    let mut answer = json!({ "stored": stored, "warnings": warnings });
    if let Some(c) = correction {
        answer["correction"] = c;
    }
    Ok(answer)
}

fn correction_json(s: &Shared, c: &crate::store::Correction, done: &crate::store::Corrected) -> Value {
    json!({
        "quantity": c.quantity, "time": rfc3339_ms(c.ts, s.tz), "value": c.value,
        "previous": done.previous, "changed": done.previous.is_some_and(|p| p.to_bits() != c.value.to_bits()),
        "conflicts_resolved": done.conflicts_resolved,
    })
}

/// `GET /api/v1/meters/{id}/events`
pub(super) async fn list_events(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if s.registry.meter(&id).is_none() {
        return Err(ApiError::not_found(format!("meter `{id}` is not in the registry")));
    }
    Ok(Json(json!({ "meter": id, "items": s.engine.event_records(Some(&id)) })))
}

/// `GET /api/v1/meters/{id}/flags?year=..`: what the engine found in a meter's counter that
/// year (replacements, rollovers, spikes, and decreases an engineer must explain), its gaps
/// (`gaps`: from, to, the estimated amount) and each reading set aside (`rejected`: time,
/// value, reason).
pub(super) async fn meter_flags(State(s): State<Shared>, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let reg = s.registry.clone();
    if reg.meter(&id).is_none() {
        return Err(ApiError::not_found(format!("meter `{id}` is not in the registry")));
    }
    let (year, _) = year_and_now(&s, &p)?;
    let years = s.engine.meter_years(&s.store, &reg, year).await?;
    let y = years.get(&id);
    let mut out = json!({
        "meter": id, "year": year,
        "flags": y.map(|y| y.flags.clone()).unwrap_or_default(),
        "rejected_readings": y.map_or(0, |y| y.rejected),
    });
    if let (Some(o), Some(y), Some(m)) = (out.as_object_mut(), y, reg.meter(&id)) {
        o.extend(gaps_and_rejected(y, m.multiplier, m.counter().unit(), s.tz));
    }
    add_conflicts(&s, &id, &mut out).await?;
    Ok(Json(out))
}

/// Conflicts listed at most in a meter's flags.
const CONFLICTS_LISTED: usize = 1000;

/// Adds to a meter's flags its conflicts (every year; open ones until a correction settles
/// them): `conflicts` (meter, quantity, time, stored and offered values, source, received,
/// and the resolution once settled) and `open_conflicts` (their number).
async fn add_conflicts(s: &Shared, id: &str, out: &mut Value) -> Result<(), ApiError> {
    let list = s.store.conflicts(id, CONFLICTS_LISTED).await?;
    let tz = s.tz;
    let open = list.iter().filter(|c| c.resolved_ms.is_none()).count();
    let items: Vec<Value> = list
        .iter()
        .map(|c| {
            let k = &c.conflict;
            json!({
                "meter": k.meter, "quantity": k.quantity, "time": rfc3339_ms(k.ts, tz), "time_ms": k.ts,
                "stored_value": k.stored, "offered_value": k.offered, "source": k.source,
                "received": rfc3339_ms(k.received_ms, tz),
                "open": c.resolved_ms.is_none(),
                "resolved": c.resolved_ms.and_then(|t| rfc3339_ms(t, tz)), "resolved_value": c.resolved_value, "resolved_by": c.resolved_by,
            })
        })
        .collect();
    if let Some(o) = out.as_object_mut() {
        o.insert("conflicts".into(), Value::Array(items));
        o.insert("open_conflicts".into(), json!(open));
    }
    Ok(())
}

/// A meter year's gaps (with the estimated amount after the multiplier) and its rejected
/// readings (as read, in the meter's own units), times in RFC 3339 of the time zone.
pub fn gaps_and_rejected(y: &crate::accounting::ledger::MeterYear, multiplier: f64, unit: &str, tz: chrono_tz::Tz) -> serde_json::Map<String, Value> {
    let time = |ms: i64| crate::time::rfc3339(ms, tz);
    let gaps: Vec<Value> = y
        .gaps
        .iter()
        .map(|g| json!({ "from": time(g.from), "to": time(g.to), "hours": (g.to - g.from) as f64 / crate::time::HOUR_MS as f64, "estimated": g.estimated * multiplier, "unit": unit }))
        .collect();
    let rejected: Vec<Value> = y.rejected_readings.iter().map(|r| json!({ "time": time(r.at), "value": r.value, "reason": r.reason })).collect();
    let mut m = serde_json::Map::new();
    m.insert("gaps".into(), json!(gaps));
    m.insert("rejected".into(), json!(rejected));
    m
}
