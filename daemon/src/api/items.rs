//! `GET /api/v1/reports/items?year=..[&as_of=..][&format=json|html][&lang=zh|en]`: 分项能耗,
//! each building's consumption by national energy item code from the start of the year to the
//! as-of day (issue 21; [`crate::reports::items`]).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use chrono::Datelike;

use super::error::ApiError;
use super::reports::visible_agencies;
use super::Shared;
use crate::reports::{self, items, labels::Lang};

pub(super) async fn items(State(s): State<Shared>, parts: axum::http::request::Parts, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    if let Some(k) = p.keys().find(|k| !["year", "as_of", "format", "lang"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown parameter `{k}` (year, as_of, format, lang)")));
    }
    let lang: Lang = p.get("lang").map_or(Ok(Lang::Zh), |l| l.parse()).map_err(ApiError::bad_request)?;
    let as_of = reports::as_of_day(s.tz, p.get("as_of").map(String::as_str), reports::today(s.tz))?;
    let year = match p.get("year") {
        Some(y) => y.parse::<i32>().map_err(|_| ApiError::bad_request(format!("year `{y}` is not a year")))?,
        None => as_of.year(),
    };
    let (day, to_ms) = reports::year_cut(s.tz, year, as_of)?;
    let from_ms = reports::year_start_ms(s.tz, year)?;
    let visible = visible_agencies(&parts);
    let by = items::building_items(&s.engine, &s.store, &s.registry, s.tz, (from_ms, to_ms), &visible).await?;
    match p.get("format").map_or("json", String::as_str) {
        "json" => Ok(Json(serde_json::json!({ "year": year, "as_of": day.to_string(), "timezone": s.tz.name(), "buildings": by })).into_response()),
        "html" => Ok(Html(items::section(lang, year, &day.to_string(), &by)).into_response()),
        f => Err(ApiError::bad_request(format!("format `{f}`: json or html"))),
    }
}
