//! Series and consumption queries.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::Json;
use chrono::DateTime;
use energy_wire::{Carrier, Quantity};
use serde_json::{json, Value};

use super::{ApiError, Principal, Shared};
use crate::time::{boundaries, parse_step, parse_time, Interval};
use crate::accounting::consumption::consumption as counter_consumption;
use crate::accounting::rollup::HourRollup;
use crate::time::{hour_of, HOUR_MS};

/// Readings further apart than this make the split of consumption between periods an estimate.
pub(super) const MAX_GAP_MS: i64 = HOUR_MS;
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
    let agg = p.get("agg").map_or("mean", String::as_str);
    if !matches!(agg, "mean" | "min" | "max" | "last" | "first" | "sum" | "count") {
        return Err(ApiError::bad_request(format!("agg `{agg}` is not one of mean, min, max, last, first, sum, count")));
    }
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let tz = s.tz;
    let fmt = |ms: i64| crate::time::rfc3339(ms, tz);
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

/// The answer of `GET /api/v1/consumption` (serialized as it is built: no map per row).
#[derive(serde::Serialize)]
pub(super) struct ConsumptionOut {
    scope: BTreeMap<&'static str, String>,
    from: String,
    to: String,
    interval: Interval,
    timezone: &'static str,
    carrier: Option<Carrier>,
    end_use: Option<crate::registry::EndUse>,
    carriers: Vec<CarrierOut>,
    meters: Vec<MeterRow>,
}

/// One carrier's totals and periods in [`ConsumptionOut`].
#[derive(serde::Serialize)]
struct CarrierOut {
    carrier: Carrier,
    unit: &'static str,
    total: f64,
    estimated: f64,
    measured_share: f64,
    coverage: f64,
    meters: usize,
    end_uses: Vec<EndUseOut>,
    periods: Vec<PeriodOut>,
}

#[derive(serde::Serialize)]
struct EndUseOut {
    end_use: crate::registry::EndUse,
    total: f64,
}

#[derive(serde::Serialize)]
struct PeriodOut {
    start: String,
    end: String,
    value: f64,
    estimated_value: f64,
    coverage: f64,
    estimated: bool,
}

/// One meter's row in [`ConsumptionOut`].
#[derive(serde::Serialize)]
struct MeterRow {
    id: String,
    carrier: Carrier,
    end_use: crate::registry::EndUse,
    share: f64,
    multiplier: f64,
    part: &'static str,
    #[serde(rename = "virtual")]
    is_virtual: bool,
    total: f64,
    unit: &'static str,
    coverage: f64,
    rejected_readings: usize,
    flags: Vec<crate::accounting::counter::Flag>,
}

/// Consumption of one meter per period.
#[derive(Clone)]
struct Periods {
    value: Vec<f64>,
    estimated_value: Vec<f64>,
    coverage: Vec<f64>,
    estimated: Vec<bool>,
    rejected: usize,
    flags: Vec<crate::accounting::counter::Flag>,
}

impl Periods {
    fn zero(n: usize) -> Periods {
        Periods { value: vec![0.0; n], estimated_value: vec![0.0; n], coverage: vec![0.0; n], estimated: vec![false; n], rejected: 0, flags: Vec::new() }
    }
    fn add(&mut self, o: &Periods, k: f64, first: bool) {
        for i in 0..self.value.len() {
            self.value[i] += k * o.value[i];
            self.estimated_value[i] += k.abs() * o.estimated_value[i];
            self.coverage[i] = if first { o.coverage[i] } else { self.coverage[i].min(o.coverage[i]) };
            self.estimated[i] |= o.estimated[i];
        }
    }
}

/// `GET /api/v1/consumption?(agency|building|meter)=..&from=..&to=..&interval=hour|day|month|year[&carrier=..][&end_use=..]`
///
/// A meter's figure is its full consumption (after its multiplier; a virtual meter's from its
/// formula). A building's or an agency's is the sum of the **own** parts of the accounted meters
/// (a meter less its sub-meters), an agency's times its allocation share, so that nothing is
/// counted twice. Meter events (replacements, manual readings, exclusions) apply.
pub(super) async fn consumption(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Json<ConsumptionOut>, ApiError> {
    use crate::registry::{parse_formula, EndUse, Meter};
    let started = Instant::now();
    let reg = s.registry.clone();
    let scopes: Vec<(&str, &String)> = ["agency", "building", "meter"].iter().filter_map(|k| p.get(*k).map(|v| (*k, v))).collect();
    let (kind, id) = match scopes.as_slice() {
        [one] => *one,
        [] => return Err(ApiError::bad_request("give one of `agency`, `building` or `meter`")),
        _ => return Err(ApiError::bad_request("give only one of `agency`, `building` or `meter`")),
    };
    // Before the existence checks, so that an agency token cannot probe other ids.
    match kind {
        "agency" => principal.require_agency(&reg, id)?,
        "building" => principal.require_building(&reg, id)?,
        _ => principal.require_meter(&reg, id)?,
    }
    let carrier: Option<Carrier> = p.get("carrier").map(|c| c.parse::<Carrier>().map_err(ApiError::bad_request)).transpose()?;
    let end_use: Option<EndUse> = p.get("end_use").map(|c| c.parse::<EndUse>().map_err(ApiError::bad_request)).transpose()?;
    // (meter, share, own part?) in scope.
    let scope: Vec<(&Meter, f64, bool)> = match kind {
        "agency" => {
            reg.agency(id).ok_or_else(|| ApiError::not_found(format!("agency `{id}` is not in the registry")))?;
            // Every meter of a building it occupies at any time; dated splits are applied per
            // period below.
            reg.file.meters.iter().filter(|m| m.accounted).map(|m| (m, reg.share(m, id), true)).filter(|(m, sh, _)| *sh > 0.0 || (reg.split_is_dated(m) && reg.ever_served(m, id))).collect()
        }
        "building" => {
            reg.building(id).ok_or_else(|| ApiError::not_found(format!("building `{id}` is not in the registry")))?;
            reg.meters_of_building(id).into_iter().filter(|m| m.accounted).map(|m| (m, 1.0, true)).collect()
        }
        _ => vec![(reg.meter(id).ok_or_else(|| ApiError::not_found(format!("meter `{id}` is not in the registry")))?, 1.0, false)],
    };
    let scope: Vec<(&Meter, f64, bool)> =
        scope.into_iter().filter(|(m, _, _)| carrier.is_none_or(|c| c == m.carrier) && end_use.is_none_or(|e| e == m.end_use())).collect();
    let (from, to) = time_range(&s, &p)?;
    let interval: Interval = param(&p, "interval")?.parse().map_err(|e: crate::time::TimeError| ApiError::bad_request(e.to_string()))?;
    let bounds = boundaries(from, to, interval, MAX_PERIODS)
        .ok_or_else(|| ApiError::bad_request(format!("more than {MAX_PERIODS} periods; choose a longer interval or a shorter range")))?;
    let bounds_ms: Vec<i64> = bounds.iter().map(DateTime::timestamp_millis).collect();
    let n = bounds.len().saturating_sub(1);

    // Physical meters to read: the scope's, their sub-meters (for own parts) and the operands
    // of virtual meters.
    let mut ids: Vec<String> = Vec::new();
    // Each once, in order (a set: an agency can have thousands of meters).
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (m, _, own) in &scope {
        let mut push = |id: &str| {
            if seen.insert(id.to_string()) {
                ids.push(id.to_string());
            }
        };
        for (op, _) in m.formula.as_deref().map(parse_formula).and_then(Result::ok).unwrap_or_default() {
            push(&op);
        }
        push(&m.id);
        if *own {
            for c in reg.children(&m.id) {
                push(&c.id);
            }
        }
    }
    let needed: Vec<&Meter> = ids.iter().filter_map(|id| reg.meter(id)).filter(|m| !m.is_virtual()).collect();
    let (from_ms, to_ms) = (bounds_ms[0], *bounds_ms.last().unwrap_or(&bounds_ms[0]));
    // Hour-aligned windows (every calendar boundary in a whole-hour time zone) are answered from
    // the hourly roll-ups, all meters at once over the read connections; the raw points are read
    // only when the boundaries are not whole hours.
    let mut windows: Vec<Option<Vec<(i64, f64)>>> = vec![None; needed.len()];
    if bounds_ms.iter().all(|&b| b == hour_of(b)) {
        let series = needed.iter().map(|m| (m.id.clone(), m.counter())).collect();
        for (slot, (before, hours, after)) in windows.iter_mut().zip(s.store.counter_rollups_many(series, from_ms, to_ms).await?) {
            let mut r: Vec<(i64, f64)> = before.into_iter().collect();
            for h in &hours {
                r.push((h.first_ts, h.first_v));
                if h.last_ts != h.first_ts {
                    r.push((h.last_ts, h.last_v));
                }
            }
            r.extend(after);
            *slot = Some(r);
        }
    }
    let events = s.engine.events_by_meter();
    let mut full: HashMap<String, Periods> = HashMap::new();
    for (m, readings) in needed.iter().zip(windows) {
        let readings = match readings {
            Some(r) => r,
            None => s.store.counter_window(&m.id, m.counter(), from_ms, to_ms).await?,
        };
        let ev = events.get(&m.id).cloned().unwrap_or_default();
        let c = crate::accounting::counter::continuous(&readings, &ev, m.rollover, m.max_per_hour.map(|x| x / m.multiplier), m.multiplier);
        let pc = counter_consumption(&c.readings, &bounds_ms, MAX_GAP_MS);
        let per = Periods {
            value: pc.periods.iter().map(|x| x.value * m.multiplier).collect(),
            estimated_value: pc.periods.iter().map(|x| x.estimated_value * m.multiplier).collect(),
            coverage: pc.periods.iter().map(|x| x.coverage).collect(),
            estimated: pc.periods.iter().map(|x| x.estimated).collect(),
            rejected: c.rejected + pc.rejected_readings,
            flags: c.flags,
        };
        full.insert(m.id.clone(), per);
    }
    // Virtual meters in scope.
    for (m, _, _) in &scope {
        if let Some(f) = &m.formula {
            let mut per = Periods::zero(n);
            for (i, (op, k)) in parse_formula(f).unwrap_or_default().iter().enumerate() {
                if let Some(o) = full.get(op) {
                    let o = o.clone();
                    per.add(&o, *k * m.multiplier, i == 0);
                }
            }
            full.insert(m.id.clone(), per);
        }
    }

    struct Acc {
        values: Vec<f64>,
        estimated_values: Vec<f64>,
        coverage: Vec<f64>,
        estimated: Vec<bool>,
        meters: usize,
        end_uses: BTreeMap<EndUse, f64>,
    }
    let mut by_carrier: BTreeMap<Carrier, Acc> = BTreeMap::new();
    let mut meter_rows = Vec::new();
    for (m, share, own) in &scope {
        let Some(f) = full.get(&m.id) else { continue };
        // The own part: the meter less its sub-meters (copied only when it has some).
        let subs: Vec<&Periods> = if *own { reg.children(&m.id).filter_map(|c| full.get(&c.id)).collect() } else { Vec::new() };
        let part: std::borrow::Cow<Periods> = if subs.is_empty() {
            std::borrow::Cow::Borrowed(f)
        } else {
            let mut p = f.clone();
            for cp in subs {
                p.add(cp, -1.0, false);
            }
            std::borrow::Cow::Owned(p)
        };
        let acc = by_carrier.entry(m.carrier).or_insert_with(|| Acc {
            values: vec![0.0; n],
            estimated_values: vec![0.0; n],
            coverage: vec![0.0; n],
            estimated: vec![false; n],
            meters: 0,
            end_uses: BTreeMap::new(),
        });
        acc.meters += 1;
        // An agency's share of each period: on the period's first local day where the split
        // changes with the date (dated occupancy, headcount keys), else the one share.
        let shares: Vec<f64> = if kind == "agency" && reg.split_is_dated(m) {
            bounds[..n].iter().map(|b| reg.share_on(m, id, b.date_naive())).collect()
        } else {
            vec![*share; n]
        };
        let mut total = 0.0;
        for (i, &share) in shares.iter().enumerate() {
            let v = part.value[i] * share;
            acc.values[i] += v;
            acc.estimated_values[i] += part.estimated_value[i] * share;
            acc.coverage[i] += part.coverage[i];
            acc.estimated[i] |= part.estimated[i];
            total += v;
        }
        *acc.end_uses.entry(m.end_use()).or_insert(0.0) += total;
        let cov = if n == 0 { 0.0 } else { part.coverage.iter().sum::<f64>() / n as f64 };
        meter_rows.push(MeterRow {
            id: m.id.clone(),
            carrier: m.carrier,
            end_use: m.end_use(),
            share: if n == 0 { *share } else { shares.iter().sum::<f64>() / n as f64 },
            multiplier: m.multiplier,
            part: if *own { "own" } else { "full" },
            is_virtual: m.is_virtual(),
            total,
            unit: m.counter().unit(),
            coverage: cov,
            rejected_readings: part.rejected,
            flags: part.flags.clone(),
        });
    }
    let carriers: Vec<CarrierOut> = by_carrier
        .into_iter()
        .map(|(c, acc)| {
            let periods: Vec<PeriodOut> = (0..n)
                .map(|i| PeriodOut {
                    start: bounds[i].to_rfc3339(),
                    end: bounds[i + 1].to_rfc3339(),
                    value: acc.values[i],
                    estimated_value: acc.estimated_values[i],
                    coverage: acc.coverage[i] / acc.meters as f64,
                    estimated: acc.estimated[i],
                })
                .collect();
            let total: f64 = acc.values.iter().sum();
            let estimated: f64 = acc.estimated_values.iter().sum();
            let coverage = if n == 0 { 0.0 } else { acc.coverage.iter().sum::<f64>() / (n * acc.meters) as f64 };
            CarrierOut {
                carrier: c,
                unit: c.counter().unit(),
                total,
                estimated,
                measured_share: if total > 0.0 { (1.0 - estimated / total).clamp(0.0, 1.0) } else { 1.0 },
                coverage,
                meters: acc.meters,
                end_uses: acc.end_uses.into_iter().map(|(end_use, total)| EndUseOut { end_use, total }).collect(),
                periods,
            }
        })
        .collect();
    s.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
    Ok(Json(ConsumptionOut {
        scope: BTreeMap::from([(kind, id.clone())]),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        interval,
        timezone: s.tz.name(),
        carrier,
        end_use,
        carriers,
        meters: meter_rows,
    }))
}
