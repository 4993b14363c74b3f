//! Registry endpoints.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, Principal, Shared};

fn rfc3339(ms: i64, tz: chrono_tz::Tz) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339())
}

/// Lists are filtered to what the principal may see (an agency token: its own agency, the
/// buildings it occupies, the meters serving it).
pub(super) async fn agencies(State(s): State<Shared>, principal: Principal) -> Json<Value> {
    let r = &s.registry;
    let items: Vec<Value> = r
        .file
        .agencies
        .iter()
        .filter(|a| principal.sees_agency(&a.id))
        .map(|a| {
            let buildings: Vec<Value> = r
                .file
                .buildings
                .iter()
                .filter_map(|b| b.occupants.iter().find(|o| o.agency == a.id).map(|o| json!({ "building": b.id, "share": o.share })))
                .collect();
            let areas = r.agency_areas(&a.id);
            json!({
                "id": a.id, "name": a.name, "level": a.level, "parent": a.parent, "kind": a.kind,
                "headcount": a.headcount, "floor_area": areas.floor_area, "heated_area": areas.heated_area,
                "buildings": buildings,
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

pub(super) async fn buildings(State(s): State<Shared>, principal: Principal) -> Json<Value> {
    let r = &s.registry;
    let items: Vec<Value> = r
        .file
        .buildings
        .iter()
        .filter(|b| principal.sees_building(r, &b.id))
        .map(|b| {
            let meters: Vec<&str> = r.meters_of_building(&b.id).iter().filter(|m| principal.sees_meter(r, &m.id)).map(|m| m.id.as_str()).collect();
            json!({
                "id": b.id, "name": b.name, "floor_area": b.floor_area,
                "heated_area": b.heated_area.unwrap_or(b.floor_area), "indicator_area": b.indicator_area(),
                "excluded": b.excluded, "climate_zone": b.climate_zone, "building_type": b.building_type, "heating": b.heating,
                "occupants": b.occupants.iter().map(|o| json!({ "agency": o.agency, "share": o.share, "area": o.area })).collect::<Vec<_>>(),
                "meters": meters,
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

pub(super) async fn meters(State(s): State<Shared>, principal: Principal) -> Result<Json<Value>, ApiError> {
    let r = &s.registry;
    let items: Vec<Value> = r
        .file
        .meters
        .iter()
        .filter(|m| principal.sees_meter(r, &m.id))
        .map(|m| {
            let q = m.counter();
            json!({
                "id": m.id, "name": m.name, "building": m.building, "carrier": m.carrier, "quantity": q.name(), "unit": q.unit(),
                "multiplier": m.multiplier, "end_use": m.end_use(), "agency": m.agency, "parent": m.parent,
                "rollover": m.rollover, "max_per_hour": m.max_per_hour, "formula": m.formula, "virtual": m.is_virtual(),
                "accounted": m.accounted,
                "last_reading": s.store.last_seen(&m.id).and_then(|t| rfc3339(t, s.tz)),
            })
        })
        .collect();
    if !principal.reads_all() {
        return Ok(Json(json!({ "items": items, "unassigned": [] })));
    }
    // Meters with stored readings that the registry does not know.
    let mut unassigned: std::collections::BTreeSet<String> = s.ingest.unassigned();
    unassigned.extend(s.store.stored_meters().await?.into_iter().filter(|m| r.meter(m).is_none()));
    let unassigned: Vec<Value> = unassigned
        .into_iter()
        .map(|m| json!({ "id": m, "last_reading": s.store.last_seen(&m).and_then(|t| rfc3339(t, s.tz)) }))
        .collect();
    Ok(Json(json!({ "items": items, "unassigned": unassigned })))
}

pub(super) async fn gateways(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let seen = s.ingest.gateways().snapshot();
    let stored = s.store.gateways().await?;
    let mut ids: std::collections::BTreeSet<String> = seen.keys().cloned().collect();
    ids.extend(stored.iter().map(|(g, _)| g.clone()));
    let items: Vec<Value> = ids
        .into_iter()
        .map(|g| {
            let epochs = stored.iter().find(|(x, _)| *x == g).map(|(_, e)| e.as_slice()).unwrap_or_default();
            // The current queue is the epoch of the latest batch; `acked_through` and
            // `stored_ranges` are its own, as before epochs.
            let current = epochs.last();
            let ranges = current.map(|e| e.ranges.as_slice()).unwrap_or_default();
            let st = seen.get(&g);
            json!({
                "id": g,
                "epoch": current.and_then(|e| e.epoch.clone()),
                "acked_through": ranges.first().map_or(0, |r| r.1),
                "stored_ranges": ranges.iter().map(|r| [r.0, r.1]).collect::<Vec<_>>(),
                "epochs": epochs.iter().map(|e| json!({
                    "epoch": e.epoch,
                    "acked_through": e.ranges.first().map_or(0, |r| r.1),
                    "stored_ranges": e.ranges.iter().map(|r| [r.0, r.1]).collect::<Vec<_>>(),
                    "samples": e.ranges.iter().map(|r| r.1 - r.0 + 1).sum::<u64>(),
                    "first_batch": e.first_ms.and_then(|t| rfc3339(t, s.tz)),
                    "last_batch": e.last_ms.and_then(|t| rfc3339(t, s.tz)),
                })).collect::<Vec<_>>(),
                "site": st.map(|x| x.site.clone()),
                "online": st.and_then(|x| x.online),
                "online_since": st.filter(|x| x.online.is_some()).and_then(|x| rfc3339(x.since_ms, s.tz)),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/registry/accounting`: the accounting parameters in force (electricity basis,
/// coefficients, densities, CO2 and grid factors, tariffs, quota bands, budgets, reduction
/// targets, heating season), defaults filled in.
pub(super) async fn accounting(State(s): State<Shared>) -> Json<Value> {
    let f = &s.registry.file;
    Json(json!({
        "accounting": f.accounting, "coefficients": f.coefficients, "densities": f.densities, "co2": f.co2,
        "grid_factors": s.registry.grid_factors(), "tariffs": f.tariffs, "quotas": f.quotas, "budgets": f.budgets,
        "reductions": f.reductions, "events": f.events.len(),
    }))
}

pub(super) async fn quantities() -> Json<Value> {
    let items: Vec<Value> = energy_wire::Quantity::ALL
        .iter()
        .map(|q| json!({ "id": q.name(), "unit": q.unit(), "kind": q.kind(), "carrier": q.carrier() }))
        .collect();
    Json(json!({ "items": items }))
}
