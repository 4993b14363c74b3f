//! Series and consumption queries.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::Json;
use chrono::DateTime;
use energy_wire::{Carrier, Quantity};
use serde_json::{json, Value};

use super::{ApiError, Shared};
use crate::accounting::calendar::{boundaries, parse_time, Interval};
use crate::accounting::consumption::consumption as counter_consumption;
use crate::accounting::rollup::{counter_readings, hour_of, HourRollup, HOUR_MS};

/// Readings further apart than this make the split of consumption between periods an estimate.
pub(super) const MAX_GAP_MS: i64 = 3_600_000;
/// Most periods one consumption query may ask for.
const MAX_PERIODS: usize = 20_000;
/// Most raw points one series query returns without a step.
const MAX_RAW_POINTS: usize = 200_000;

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

/// Parses `90s`, `15m`, `1h`, `1d` or a number of seconds.
fn parse_step(s: &str) -> Result<i64, ApiError> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1_000),
        Some((i, 'm')) => (&s[..i], 60_000),
        Some((i, 'h')) => (&s[..i], 3_600_000),
        Some((i, 'd')) => (&s[..i], 86_400_000),
        _ => (s, 1_000),
    };
    match num.parse::<i64>() {
        Ok(n) if n > 0 => n.checked_mul(mult).ok_or_else(|| ApiError::bad_request(format!("step `{s}` is too large"))),
        _ => Err(ApiError::bad_request(format!("step `{s}` is not a positive duration such as 15m, 1h or 1d"))),
    }
}

/// `GET /api/v1/series?meter=..&quantity=..&from=..&to=..[&step=..&agg=mean|min|max|last]`
pub(super) async fn series(State(s): State<Shared>, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let meter = param(&p, "meter")?.to_string();
    let q: Quantity = param(&p, "quantity")?.parse().map_err(|e: energy_wire::UnknownQuantity| ApiError::bad_request(e.to_string()))?;
    if s.registry.meter(&meter).is_none() && s.store.last_seen(&meter).is_none() {
        return Err(ApiError::not_found(format!("meter `{meter}` is not in the registry and has no readings")));
    }
    let (from, to) = time_range(&s, &p)?;
    let step = p.get("step").map(|v| parse_step(v)).transpose()?;
    let agg = p.get("agg").map_or("mean", String::as_str);
    if !matches!(agg, "mean" | "min" | "max" | "last" | "first" | "sum" | "count") {
        return Err(ApiError::bad_request(format!("agg `{agg}` is not one of mean, min, max, last, first, sum, count")));
    }
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let tz = s.tz;
    let fmt = |ms: i64| DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339());
    // Whole-hour steps on whole-hour ranges come from the hourly roll-ups.
    if let Some(step) = step.filter(|st| st % HOUR_MS == 0 && from_ms == hour_of(from_ms) && to_ms == hour_of(to_ms)) {
        let mut buckets: BTreeMap<i64, HourRollup> = BTreeMap::new();
        for r in s.store.rollups(&meter, q, from_ms, to_ms).await? {
            let k = from_ms + (r.hour - from_ms).div_euclid(step) * step;
            buckets.entry(k).and_modify(|x| *x = x.merge(&r)).or_insert(r);
        }
        let points: Vec<Value> = buckets.into_iter().map(|(k, r)| json!({ "t": fmt(k), "v": rollup_value(&r, agg) })).collect();
        s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
        return Ok(series_json(&meter, q, &from, &to, Some(step), agg, points));
    }
    // A backend that aggregates itself (InfluxDB: GROUP BY time) answers stepped queries.
    if let Some(step) = step {
        if let Some(rows) = s.store.aggregate(&meter, q, from_ms, to_ms, step, agg).await? {
            let points: Vec<Value> = rows.into_iter().map(|(t, v)| json!({ "t": fmt(t), "v": v })).collect();
            s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
            return Ok(series_json(&meter, q, &from, &to, Some(step), agg, points));
        }
    }
    let pts = s.store.points(&meter, q, from_ms, to_ms).await?;
    let points: Vec<Value> = match step {
        None => {
            if pts.len() > MAX_RAW_POINTS {
                return Err(ApiError::bad_request(format!(
                    "{} points in range, more than {MAX_RAW_POINTS}; give a step (e.g. step=1h) or a narrower range",
                    pts.len()
                )));
            }
            pts.iter().map(|&(t, v)| json!({ "t": fmt(t), "v": v })).collect()
        }
        Some(step) => {
            let origin = from.timestamp_millis();
            let mut buckets: BTreeMap<i64, HourRollup> = BTreeMap::new();
            for &(t, v) in &pts {
                let k = origin + (t - origin).div_euclid(step) * step;
                let r = HourRollup::of_point(t, v);
                buckets.entry(k).and_modify(|x| *x = x.merge(&r)).or_insert(r);
            }
            buckets.into_iter().map(|(k, r)| json!({ "t": fmt(k), "v": rollup_value(&r, agg) })).collect()
        }
    };
    s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
    Ok(series_json(&meter, q, &from, &to, step, agg, points))
}

/// The aggregate `agg` of a summary (its `hour` field is unused here).
fn rollup_value(r: &HourRollup, agg: &str) -> f64 {
    match agg {
        "min" => r.min,
        "max" => r.max,
        "last" => r.last_v,
        "first" => r.first_v,
        "sum" => r.sum,
        "count" => r.count as f64,
        _ => r.mean(),
    }
}

fn series_json(meter: &str, q: Quantity, from: &DateTime<chrono_tz::Tz>, to: &DateTime<chrono_tz::Tz>, step: Option<i64>, agg: &str, points: Vec<Value>) -> Json<Value> {
    Json(json!({
        "meter": meter, "quantity": q.name(), "unit": q.unit(),
        "from": from.to_rfc3339(), "to": to.to_rfc3339(), "step_seconds": step.map(|x| x / 1000), "agg": step.map(|_| agg),
        "points": points,
    }))
}

/// `GET /api/v1/consumption?(agency|building|meter)=..&from=..&to=..&interval=hour|day|month|year[&carrier=..]`
pub(super) async fn consumption(State(s): State<Shared>, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let reg = s.registry.clone();
    let scopes: Vec<(&str, &String)> = ["agency", "building", "meter"].iter().filter_map(|k| p.get(*k).map(|v| (*k, v))).collect();
    let (kind, id) = match scopes.as_slice() {
        [one] => *one,
        [] => return Err(ApiError::bad_request("give one of `agency`, `building` or `meter`")),
        _ => return Err(ApiError::bad_request("give only one of `agency`, `building` or `meter`")),
    };
    // (meter, share) pairs in scope.
    let meters: Vec<(&crate::registry::Meter, f64)> = match kind {
        "agency" => {
            reg.agency(id).ok_or_else(|| ApiError::not_found(format!("agency `{id}` is not in the registry")))?;
            reg.meters_of_agency(id)
        }
        "building" => {
            reg.building(id).ok_or_else(|| ApiError::not_found(format!("building `{id}` is not in the registry")))?;
            reg.meters_of_building(id).into_iter().map(|m| (m, 1.0)).collect()
        }
        _ => vec![(reg.meter(id).ok_or_else(|| ApiError::not_found(format!("meter `{id}` is not in the registry")))?, 1.0)],
    };
    let carrier: Option<Carrier> = p.get("carrier").map(|c| c.parse::<Carrier>().map_err(ApiError::bad_request)).transpose()?;
    let end_use = p.get("end_use").cloned();
    let (from, to) = time_range(&s, &p)?;
    let interval: Interval = param(&p, "interval")?.parse().map_err(ApiError::bad_request)?;
    let bounds = boundaries(from, to, interval, MAX_PERIODS)
        .ok_or_else(|| ApiError::bad_request(format!("more than {MAX_PERIODS} periods; choose a longer interval or a shorter range")))?;
    let bounds_ms: Vec<i64> = bounds.iter().map(DateTime::timestamp_millis).collect();
    let n = bounds.len().saturating_sub(1);

    struct Acc {
        values: Vec<f64>,
        coverage: Vec<f64>,
        estimated: Vec<bool>,
        meters: usize,
    }
    let mut by_carrier: BTreeMap<Carrier, Acc> = BTreeMap::new();
    let mut meter_rows = Vec::new();
    let meters: Vec<(&crate::registry::Meter, f64)> = meters
        .into_iter()
        .filter(|(m, _)| carrier.is_none_or(|c| c == m.carrier) && end_use.as_ref().is_none_or(|e| *e == m.end_use))
        .collect();
    let (from_ms, to_ms) = (bounds_ms[0], *bounds_ms.last().unwrap_or(&bounds_ms[0]));
    // Hour-aligned windows (every calendar boundary in a whole-hour time zone) are answered from
    // the hourly roll-ups, all meters at once over the read connections; the raw points are read
    // only when those cannot give the same answer (a bad reading in the window) or the
    // boundaries are not whole hours.
    let mut from_rollups: Vec<Option<Vec<(i64, f64)>>> = vec![None; meters.len()];
    if bounds_ms.iter().all(|&b| b == hour_of(b)) {
        let series = meters.iter().map(|(m, _)| (m.id.clone(), m.counter())).collect();
        for (slot, (before, hours, after)) in from_rollups.iter_mut().zip(s.store.counter_rollups_many(series, from_ms, to_ms).await?) {
            *slot = counter_readings(before, &hours, after);
        }
    }
    for ((m, share), readings) in meters.into_iter().zip(from_rollups) {
        let q = m.counter();
        let readings = match readings {
            Some(r) => r,
            None => s.store.counter_window(&m.id, q, from_ms, to_ms).await?,
        };
        let c = counter_consumption(&readings, &bounds_ms, MAX_GAP_MS);
        let acc = by_carrier.entry(m.carrier).or_insert_with(|| Acc { values: vec![0.0; n], coverage: vec![0.0; n], estimated: vec![false; n], meters: 0 });
        acc.meters += 1;
        let mut total = 0.0;
        for (i, pc) in c.periods.iter().enumerate() {
            let v = pc.value * m.multiplier * share;
            acc.values[i] += v;
            acc.coverage[i] += pc.coverage;
            acc.estimated[i] |= pc.estimated;
            total += v;
        }
        let cov = if n == 0 { 0.0 } else { c.periods.iter().map(|p| p.coverage).sum::<f64>() / n as f64 };
        meter_rows.push(json!({
            "id": m.id, "carrier": m.carrier, "share": share, "multiplier": m.multiplier,
            "total": total, "unit": q.unit(), "coverage": cov, "rejected_readings": c.rejected_readings,
        }));
    }
    let carriers: Vec<Value> = by_carrier
        .into_iter()
        .map(|(c, acc)| {
            let periods: Vec<Value> = (0..n)
                .map(|i| {
                    json!({
                        "start": bounds[i].to_rfc3339(), "end": bounds[i + 1].to_rfc3339(),
                        "value": acc.values[i], "coverage": acc.coverage[i] / acc.meters as f64, "estimated": acc.estimated[i],
                    })
                })
                .collect();
            let total: f64 = acc.values.iter().sum();
            let coverage = if n == 0 { 0.0 } else { acc.coverage.iter().sum::<f64>() / (n * acc.meters) as f64 };
            json!({ "carrier": c, "unit": c.counter().unit(), "total": total, "coverage": coverage, "meters": acc.meters, "periods": periods })
        })
        .collect();
    s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
    Ok(Json(json!({
        "scope": { kind: id },
        "from": from.to_rfc3339(), "to": to.to_rfc3339(),
        "interval": interval, "timezone": s.tz.name(),
        "carriers": carriers,
        "meters": meter_rows,
    })))
}
