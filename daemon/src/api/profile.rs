//! Read-only building views for dashboards, from the hourly roll-ups:
//!
//! * `GET /api/v1/buildings/{id}/summary`: per carrier, consumption today and this month so far
//!   against the same periods last year, and the live electric power;
//! * `GET /api/v1/buildings/{id}/profile[?carrier=electricity&weeks=4&night=0-5]`: the mean load
//!   by hour of the week over the last weeks, and the night base load of each day.
//!
//! * `GET /api/v1/indicators/ranking?indicator=..[&year=..]`: every agency's value of one
//!   indicator, year to date and projected, ranked lowest projected first.
//!
//! A building's consumption here is the sum of its top meters (physical meters without a
//! parent meter), so sub-meters are not counted twice.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use energy_wire::{Carrier, Quantity};
use serde_json::{json, Value};

use super::{ApiError, Shared};
use crate::alerts::rules::hourly_consumption;
use crate::registry::Meter;

use energy_wire::time::HOUR_MS;

fn top_meters<'a>(s: &'a Shared, building: &str) -> Result<Vec<&'a Meter>, ApiError> {
    s.registry.building(building).ok_or_else(|| ApiError::not_found(format!("building `{building}` is not in the registry")))?;
    Ok(s.registry.meters_of_building(building).into_iter().filter(|m| !m.is_virtual() && m.parent.is_none() && m.accounted).collect())
}

/// Hourly consumption of `meters` summed, over `[from, to)`.
async fn summed(s: &Shared, meters: &[&Meter], from: i64, to: i64) -> Result<BTreeMap<i64, f64>, ApiError> {
    let mut out: BTreeMap<i64, f64> = BTreeMap::new();
    for m in meters {
        let r = s.store.rollups(&m.id, m.counter(), from, to + HOUR_MS).await?;
        for (h, v) in hourly_consumption(&r, m.multiplier) {
            if h >= from && h < to {
                *out.entry(h).or_default() += v;
            }
        }
    }
    Ok(out)
}

fn local_midnight(tz: chrono_tz::Tz, d: NaiveDate) -> Option<i64> {
    d.and_hms_opt(0, 0, 0).and_then(|t| tz.from_local_datetime(&t).earliest()).map(|t| t.timestamp_millis())
}

fn same_day_last_year(d: NaiveDate) -> NaiveDate {
    d.with_year(d.year() - 1).unwrap_or_else(|| d - chrono::Duration::days(365))
}

fn pct(now: f64, before: f64) -> Option<f64> {
    (before > 0.0).then(|| (now / before - 1.0) * 100.0)
}

/// Newest active power (kW) of the electricity meters, from the last hour's roll-ups.
async fn live_power(s: &Shared, meters: &[&Meter], now: i64) -> Result<Option<f64>, ApiError> {
    let mut total: Option<f64> = None;
    for m in meters.iter().filter(|m| m.carrier == Carrier::Electricity) {
        let r = s.store.rollups(&m.id, Quantity::ActivePower, now - HOUR_MS, now + HOUR_MS).await?;
        if let Some(last) = r.last() {
            *total.get_or_insert(0.0) += last.last_v * m.multiplier;
        }
    }
    Ok(total)
}

/// `GET /api/v1/buildings/{id}/summary`
pub(super) async fn summary(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let meters = top_meters(&s, &id)?;
    let now_utc = chrono::Utc::now();
    let now = now_utc.timestamp_millis();
    let local = now_utc.with_timezone(&s.tz);
    let today = local.date_naive();
    let bad = || ApiError::bad_request("the current date has no local midnight in the configured time zone");
    let day0 = local_midnight(s.tz, today).ok_or_else(bad)?;
    let month0 = local_midnight(s.tz, today.with_day(1).unwrap_or(today)).ok_or_else(bad)?;
    let ly_day0 = local_midnight(s.tz, same_day_last_year(today)).ok_or_else(bad)?;
    let ly_month0 = local_midnight(s.tz, same_day_last_year(today.with_day(1).unwrap_or(today))).ok_or_else(bad)?;
    let elapsed_day = now - day0;
    let elapsed_month = now - month0;
    let mut items = Vec::new();
    let mut carriers: Vec<Carrier> = meters.iter().map(|m| m.carrier).collect();
    carriers.sort();
    carriers.dedup();
    for c in carriers {
        let ms: Vec<&Meter> = meters.iter().copied().filter(|m| m.carrier == c).collect();
        let sum = |m: &BTreeMap<i64, f64>| m.values().sum::<f64>();
        let t = sum(&summed(&s, &ms, day0, now + HOUR_MS).await?);
        let tl = sum(&summed(&s, &ms, ly_day0, ly_day0 + elapsed_day).await?);
        let mo = sum(&summed(&s, &ms, month0, now + HOUR_MS).await?);
        let mol = sum(&summed(&s, &ms, ly_month0, ly_month0 + elapsed_month).await?);
        items.push(json!({
            "carrier": c.as_str(),
            "unit": c.counter().unit(),
            "today": t, "today_last_year": tl, "today_change_pct": pct(t, tl),
            "month": mo, "month_last_year": mol, "month_change_pct": pct(mo, mol),
        }));
    }
    let power = live_power(&s, &meters, now).await?;
    Ok(Json(json!({ "building": id, "as_of": local.to_rfc3339(), "live_power_kw": power, "items": items })))
}

fn parse_night(v: Option<&String>) -> Result<[u32; 2], ApiError> {
    let Some(v) = v else { return Ok([0, 5]) };
    let bad = || ApiError::bad_request(format!("night `{v}` is not local hours such as 0-5"));
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a < b && b <= 24 {
        Ok([a, b])
    } else {
        Err(bad())
    }
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `GET /api/v1/buildings/{id}/profile[?carrier=electricity&weeks=4&night=0-5]`
pub(super) async fn profile(State(s): State<Shared>, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let carrier: Carrier = p.get("carrier").map_or(Ok(Carrier::Electricity), |c| c.parse::<Carrier>().map_err(ApiError::bad_request))?;
    let weeks: i64 = match p.get("weeks") {
        None => 4,
        Some(w) => w.parse::<i64>().ok().filter(|w| (1..=52).contains(w)).ok_or_else(|| ApiError::bad_request(format!("weeks `{w}` is not 1-52")))?,
    };
    let night = parse_night(p.get("night"))?;
    let meters: Vec<&Meter> = top_meters(&s, &id)?.into_iter().filter(|m| m.carrier == carrier).collect();
    let now_utc = chrono::Utc::now();
    let today = now_utc.with_timezone(&s.tz).date_naive();
    let start_day = today - chrono::Duration::days(weeks * 7);
    let from = local_midnight(s.tz, start_day).ok_or_else(|| ApiError::bad_request("no local midnight"))?;
    let to = local_midnight(s.tz, today).ok_or_else(|| ApiError::bad_request("no local midnight"))?;
    let cons = summed(&s, &meters, from, to).await?;
    // Mean per hour of the week (Monday 0 h = 0).
    let mut how: [(f64, u32); 168] = [(0.0, 0); 168];
    let mut nights: BTreeMap<NaiveDate, (f64, u32)> = BTreeMap::new();
    for (h, v) in &cons {
        let Some(t) = chrono::DateTime::from_timestamp_millis(*h).map(|t| t.with_timezone(&s.tz)) else { continue };
        let i = t.weekday().num_days_from_monday() as usize * 24 + t.hour() as usize;
        how[i].0 += v;
        how[i].1 += 1;
        if (night[0]..night[1]).contains(&t.hour()) {
            let e = nights.entry(t.date_naive()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    let unit = carrier.counter().unit();
    let hour_of_week: Vec<Value> = how
        .iter()
        .enumerate()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(i, (sum, n))| json!({ "how": i, "day": DAYS[i / 24], "hour": i % 24, "label": format!("{} {:02}h", DAYS[i / 24], i % 24), "mean": sum / f64::from(*n), "samples": n }))
        .collect();
    let full = night[1] - night[0];
    let night_base: Vec<Value> = nights
        .iter()
        .filter(|(_, (_, n))| *n == full)
        .map(|(d, (sum, n))| json!({ "date": d.to_string(), "time": local_midnight(s.tz, *d).and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.with_timezone(&s.tz).to_rfc3339()), "base": sum / f64::from(*n) }))
        .collect();
    Ok(Json(json!({
        "building": id, "carrier": carrier.as_str(), "unit": format!("{unit}/h"), "weeks": weeks, "night": night,
        "hour_of_week": hour_of_week, "night_base": night_base,
    })))
}

/// Sets the per-meter gauges: age of the newest reading, and the newest active power (W) of
/// electricity meters within the last hour.
pub(super) async fn set_meter_gauges(s: &Shared) {
    let now = chrono::Utc::now().timestamp_millis();
    s.metrics.meter_reading_age.reset();
    s.metrics.meter_power.reset();
    for m in s.registry.file.meters.iter().filter(|m| !m.is_virtual()) {
        if let Some(t) = s.store.last_seen(&m.id) {
            s.metrics.meter_reading_age.with_label_values(&[m.id.as_str(), m.building.as_str()]).set((now - t) as f64 / 1000.0);
        }
        if m.carrier == Carrier::Electricity {
            // As of the head's last flush (at most seconds old): a scrape does not flush the
            // head once per meter while ingest goes on.
            if let Ok(r) = s.store.rollups_settled(&m.id, Quantity::ActivePower, now - HOUR_MS, now + HOUR_MS).await {
                if let Some(last) = r.last() {
                    s.metrics.meter_power.with_label_values(&[m.id.as_str(), m.building.as_str()]).set(last.last_v * m.multiplier * 1000.0);
                }
            }
        }
    }
}

/// `GET /api/v1/indicators/ranking?indicator=..[&year=..][&as_of=..]`
pub(super) async fn ranking(State(s): State<Shared>, Query(p): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    use crate::registry::Indicator;
    let name = p.get("indicator").map_or("energy_per_person", String::as_str);
    let ind = Indicator::ALL.into_iter().find(|i| i.name() == name).ok_or_else(|| {
        ApiError::bad_request(format!("indicator `{name}` is not one of {}", Indicator::ALL.map(Indicator::name).join(", ")))
    })?;
    let (year, now_ms) = super::accounting::year_and_now(&s, &p)?;
    let reg = s.registry.clone();
    let agencies: Vec<&crate::registry::Agency> = reg.file.agencies.iter().collect();
    let all = super::accounting::compute(&s, year, now_ms, &agencies, crate::registry::Scope::Agency).await?;
    // Only complete figures are ranked; the others are listed apart with why.
    let not_ranked: Vec<Value> = all
        .iter()
        .filter_map(|a| a.get(ind).filter(|v| v.data != crate::accounting::indicators::DataStatus::Complete).map(|v| json!({ "agency": a.agency, "name": a.name, "data": v.data })))
        .collect();
    let mut rows: Vec<(f64, Value)> = all
        .iter()
        .filter_map(|a| {
            let v = a.get(ind).filter(|v| v.data == crate::accounting::indicators::DataStatus::Complete)?;
            let projected = v.projected.or(v.value)?;
            Some((
                projected,
                json!({
                    "agency": a.agency, "name": a.name, "kind": a.kind, "value": v.value, "projected": projected, "unit": v.unit,
                    "band_class": v.band.as_ref().map(|b| b.class), "target": v.target.as_ref().map(|t| t.value),
                }),
            ))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let items: Vec<Value> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut v))| {
            if let Some(o) = v.as_object_mut() {
                o.insert("rank".into(), json!(i + 1));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "year": year, "indicator": ind.name(), "unit": ind.unit(), "items": items, "not_ranked": not_ranked })))
}
