//! Read-only building views for dashboards, HTTP only: the rules are in
//! [`crate::accounting::buildings`] and [`crate::accounting::ranking`].
//!
//! * `GET /api/v1/buildings/{id}/summary`: per carrier, consumption today and this month so far
//!   against the same periods last year, and the live electric power;
//! * `GET /api/v1/buildings/{id}/profile[?carrier=electricity&weeks=4&night=0-5]`: the mean load
//!   by hour of the week over the last weeks, and the night base load of each day.
//!
//! * `GET /api/v1/indicators/ranking?indicator=..[&year=..]`: every agency's value of one
//!   indicator, year to date and projected, ranked lowest projected first.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use energy_wire::{Carrier, Quantity};
use serde_json::{json, Value};

use super::{ApiError, Shared};
use crate::accounting::buildings::{self, BuildingError};
use crate::accounting::ranking;

use energy_wire::time::HOUR_MS;

/// The answer to a [`BuildingError`]; `no_midnight` is the message when a midnight is missing.
fn building_error(e: BuildingError, no_midnight: &str) -> ApiError {
    match e {
        BuildingError::UnknownBuilding(_) => ApiError::not_found(e.to_string()),
        BuildingError::NoMidnight => ApiError::bad_request(no_midnight.to_string()),
        BuildingError::Store(e) => e.into(),
    }
}

/// `GET /api/v1/buildings/{id}/summary`
pub(super) async fn summary(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let now_utc = chrono::Utc::now();
    let sum = buildings::summary(&s.store, &s.registry, s.tz, &id, now_utc)
        .await
        .map_err(|e| building_error(e, "the current date has no local midnight in the configured time zone"))?;
    let items: Vec<Value> = sum
        .items
        .iter()
        .map(|c| {
            json!({
                "carrier": c.carrier.as_str(),
                "unit": c.carrier.counter().unit(),
                "today": c.today, "today_last_year": c.today_last_year, "today_change_pct": c.today_change_pct(),
                "month": c.month, "month_last_year": c.month_last_year, "month_change_pct": c.month_change_pct(),
            })
        })
        .collect();
    let local = now_utc.with_timezone(&s.tz);
    Ok(Json(json!({ "building": id, "as_of": local.to_rfc3339(), "live_power_kw": sum.live_power_kw, "items": items })))
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
    let prof = buildings::profile(&s.store, &s.registry, s.tz, &id, buildings::ProfileOf { carrier, weeks, night }, chrono::Utc::now()).await.map_err(|e| building_error(e, "no local midnight"))?;
    let unit = carrier.counter().unit();
    let hour_of_week: Vec<Value> = prof
        .hour_of_week
        .iter()
        .map(|h| {
            let i = h.how;
            json!({ "how": i, "day": DAYS[i / 24], "hour": i % 24, "label": format!("{} {:02}h", DAYS[i / 24], i % 24), "mean": h.mean, "samples": h.samples })
        })
        .collect();
    let night_base: Vec<Value> = prof.night_base.iter().map(|n| json!({ "date": n.date.to_string(), "time": n.midnight.map(|t| t.to_rfc3339()), "base": n.base })).collect();
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
    let name = p.get("indicator").map_or("energy_per_person", String::as_str);
    let ind = ranking::indicator_named(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (year, now_ms) = super::accounting::year_and_now(&s, &p)?;
    let reg = s.registry.clone();
    let agencies: Vec<&crate::registry::Agency> = reg.file.agencies.iter().collect();
    let all = super::accounting::compute(&s, year, now_ms, &agencies, crate::registry::Scope::Agency).await?;
    let r = ranking::rank(&all, ind);
    let not_ranked: Vec<Value> = r.not_ranked.iter().map(|(a, v)| json!({ "agency": a.agency, "name": a.name, "data": v.data })).collect();
    let items: Vec<Value> = r
        .ranked
        .iter()
        .map(|x| {
            let (a, v) = (x.agency, x.value);
            json!({
                "agency": a.agency, "name": a.name, "kind": a.kind, "value": v.value, "projected": x.projected, "unit": v.unit,
                "band_class": v.band.as_ref().map(|b| b.class), "target": v.target.as_ref().map(|t| t.value),
                "rank": x.rank,
            })
        })
        .collect();
    Ok(Json(json!({ "year": year, "indicator": ind.name(), "unit": ind.unit(), "items": items, "not_ranked": not_ranked })))
}
