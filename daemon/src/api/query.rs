//! Series and consumption queries.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::Json;
use chrono::DateTime;
use energy_wire::{Carrier, Quantity};
use serde_json::{json, Value};

use super::{ApiError, Principal, Shared};
use crate::accounting::query::{self, ConsumptionOut, QueryError, Subject};
use crate::accounting::series::{self, Agg, SeriesError};
use crate::registry::EndUse;
use crate::time::{parse_step, parse_time, Interval};

fn param<'a>(p: &'a HashMap<String, String>, k: &str) -> Result<&'a str, ApiError> {
    p.get(k).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::bad_request(format!("missing query parameter `{k}`")))
}

fn time_range(s: &Shared, p: &HashMap<String, String>) -> Result<(DateTime<chrono_tz::Tz>, DateTime<chrono_tz::Tz>), ApiError> {
    let from = parse_time(param(p, "from")?, s.tz).map_err(|e| ApiError::bad_request(format!("from: {e}")))?;
    let to = parse_time(param(p, "to")?, s.tz).map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
    if to < from {
        return Err(ApiError::bad_request("`to` is before `from`"));
    }
    Ok((from, to))
}

/// `GET /api/v1/series?meter=..&quantity=..&from=..&to=..[&step=..&agg=mean|min|max|last]`
pub(super) async fn series(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let meter = param(&p, "meter")?.to_string();
    principal.require_meter(&s.registry, &meter)?;
    let q: Quantity = param(&p, "quantity")?.parse().map_err(|e: energy_wire::UnknownQuantity| ApiError::bad_request(e.to_string()))?;
    if s.registry.meter(&meter).is_none() && s.store.last_seen(&meter).is_none() {
        return Err(ApiError::not_found(format!("meter `{meter}` is not in the registry and has no readings")));
    }
    let (from, to) = time_range(&s, &p)?;
    let step = p.get("step").map(|v| parse_step(v).map_err(|e| ApiError::bad_request(e.to_string()))).transpose()?;
    let agg: Agg = p.get("agg").map_or(Ok(Agg::Mean), |a| a.parse().map_err(|e: series::UnknownAgg| ApiError::bad_request(e.to_string())))?;
    let rows = series::points(&s.store, &meter, q, (from.timestamp_millis(), to.timestamp_millis()), step, agg).await?;
    let tz = s.tz;
    let points: Vec<Value> = rows.into_iter().map(|(t, v)| json!({ "t": crate::time::rfc3339(t, tz), "v": v })).collect();
    s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
    Ok(series_json(&meter, q, &from, &to, step, agg, points))
}

fn series_json(meter: &str, q: Quantity, from: &DateTime<chrono_tz::Tz>, to: &DateTime<chrono_tz::Tz>, step: Option<i64>, agg: Agg, points: Vec<Value>) -> Json<Value> {
    Json(json!({
        "meter": meter, "quantity": q.name(), "unit": q.unit(),
        "from": from.to_rfc3339(), "to": to.to_rfc3339(), "step_seconds": step.map(|x| x / 1000), "agg": step.map(|_| agg.as_str()),
        "points": points,
    }))
}

/// `GET /api/v1/consumption?(agency|building|meter)=..&from=..&to=..&interval=15min|hour|day|month|year[&carrier=..][&end_use=..]`
/// ([`crate::accounting::query`]).
pub(super) async fn consumption(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Json<ConsumptionOut>, ApiError> {
    let started = Instant::now();
    let reg = s.registry.clone();
    let subjects: Vec<Subject> = [p.get("agency").map(|v| Subject::Agency(v)), p.get("building").map(|v| Subject::Building(v)), p.get("meter").map(|v| Subject::Meter(v))]
        .into_iter()
        .flatten()
        .collect();
    let subject = match subjects.as_slice() {
        [one] => *one,
        [] => return Err(ApiError::bad_request("give one of `agency`, `building` or `meter`")),
        _ => return Err(ApiError::bad_request("give only one of `agency`, `building` or `meter`")),
    };
    // Before the existence checks, so that an agency token cannot probe other ids.
    match subject {
        Subject::Agency(id) => principal.require_agency(&reg, id)?,
        Subject::Building(id) => principal.require_building(&reg, id)?,
        Subject::Meter(id) => principal.require_meter(&reg, id)?,
    }
    let carrier: Option<Carrier> = p.get("carrier").map(|c| c.parse::<Carrier>().map_err(ApiError::bad_request)).transpose()?;
    let end_use: Option<EndUse> = p.get("end_use").map(|c| c.parse::<EndUse>().map_err(|e| ApiError::bad_request(e.to_string()))).transpose()?;
    let mut scope = query::scope_meters(&reg, subject, carrier, end_use)?;
    if let Some(code) = p.get("item_code") {
        if crate::registry::national::item(code).is_none() {
            return Err(ApiError::bad_request(format!("item_code `{code}` is not an energy item code of the national table (e.g. 01000, 01A00, 01B10, 02000)")));
        }
        scope = query::within_item_code(scope, code);
    }
    let range = time_range(&s, &p)?;
    let interval: Interval = param(&p, "interval")?.parse().map_err(|e: crate::time::TimeError| ApiError::bad_request(e.to_string()))?;
    let events = s.engine.events_by_meter();
    let out = query::consumption(&s.store, &reg, &events, subject, &scope, (carrier, end_use), range, interval).await?;
    s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
    Ok(Json(out))
}

impl From<SeriesError> for ApiError {
    fn from(e: SeriesError) -> ApiError {
        match e {
            SeriesError::TooManyPoints(_) => ApiError::bad_request(e.to_string()),
            SeriesError::Store(s) => s.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::NotFound(_) => ApiError::not_found(e.to_string()),
            QueryError::TooManyPeriods => ApiError::bad_request(e.to_string()),
            QueryError::Store(s) => s.into(),
        }
    }
}
