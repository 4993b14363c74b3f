//! `GET /api/v1/savings`: weather-normalised savings of a meter, a building, an agency or a
//! registered project (issue 23; [`crate::reports::mv`]).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use energy_wire::Carrier;

use super::{ApiError, Principal, Shared};
use crate::registry::projects::parse_range;
use crate::reports::mv::{savings_of, MvError, MvRequest, MvSubject, SavingsOut};
use crate::reports::mv_report::render_mv;
use crate::reports::{Format, Lang};

impl From<MvError> for ApiError {
    fn from(e: MvError) -> ApiError {
        match e {
            MvError::NotFound(m) => ApiError::not_found(m),
            MvError::Invalid(m) => ApiError::bad_request(m),
            MvError::Query(q) => q.into(),
            MvError::Store(s) => s.into(),
        }
    }
}

/// The request's subject and periods, access checked.
pub(super) fn request<'a>(s: &'a Shared, principal: &Principal, p: &'a HashMap<String, String>) -> Result<MvRequest<'a>, ApiError> {
    let reg = &s.registry;
    let given: Vec<(&str, &String)> = ["meter", "building", "agency", "project"].into_iter().filter_map(|k| p.get(k).map(|v| (k, v))).collect();
    let subject = match given.as_slice() {
        [("meter", id)] => {
            principal.require_meter(reg, id)?;
            let m = reg.meter(id).ok_or_else(|| ApiError::not_found(format!("meter `{id}` is not in the registry")))?;
            if crate::registry::is_weather_meter(m) {
                return Err(ApiError::bad_request(format!("meter `{id}` is a weather meter (outdoor_temperature); savings are of consumption meters")));
            }
            MvSubject::Meter(id)
        }
        [("building", id)] => {
            principal.require_building(reg, id)?;
            reg.building(id).ok_or_else(|| ApiError::not_found(format!("building `{id}` is not in the registry")))?;
            MvSubject::Building(id)
        }
        [("agency", id)] => {
            principal.require_agency(reg, id)?;
            reg.agency(id).ok_or_else(|| ApiError::not_found(format!("agency `{id}` is not in the registry")))?;
            MvSubject::Agency(id)
        }
        [("project", id)] => {
            let proj = reg.project(id).ok_or_else(|| ApiError::not_found(format!("project `{id}` is not in the registry")))?;
            for m in &proj.meters {
                principal.require_meter(reg, m)?;
            }
            for b in &proj.buildings {
                principal.require_building(reg, b)?;
            }
            MvSubject::Project(proj)
        }
        [] => return Err(ApiError::bad_request("give one of `meter`, `building`, `agency` or `project`")),
        _ => return Err(ApiError::bad_request("give only one of `meter`, `building`, `agency` or `project`")),
    };
    let range = |k: &str| p.get(k).filter(|v| !v.is_empty()).map(|v| parse_range(v).map_err(|e| ApiError::bad_request(format!("{k}: {e}")))).transpose();
    let carrier: Option<Carrier> = p.get("carrier").map(|c| c.parse::<Carrier>().map_err(ApiError::bad_request)).transpose()?;
    Ok(MvRequest { subject, baseline: range("baseline")?, reporting: range("reporting")?, carrier })
}

/// `GET /api/v1/savings?(meter|building|agency|project)=ID&baseline=FROM/TO&reporting=FROM/TO[&carrier=..]`
pub(super) async fn savings(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Json<SavingsOut>, ApiError> {
    let req = request(&s, &principal, &p)?;
    Ok(Json(savings_of(&s.store, &s.engine, &s.registry, s.tz, &req).await?))
}

/// `GET /api/v1/reports/mv?(project|meter|building|agency)=ID[&baseline=..][&reporting=..][&format=json|csv|xlsx|html][&lang=zh|en]`:
/// the M&V report (Chinese by default).
pub(crate) async fn mv_report(State(s): State<Shared>, principal: Principal, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let format: Format = p.get("format").map_or(Ok(Format::Json), |f| f.parse().map_err(ApiError::bad_request))?;
    let lang: Lang = p.get("lang").map_or(Ok(Lang::Zh), |l| l.parse().map_err(ApiError::bad_request))?;
    let req = request(&s, &principal, &p)?;
    let out = savings_of(&s.store, &s.engine, &s.registry, s.tz, &req).await?;
    let doc = render_mv(&out, format, lang, crate::time::today(s.tz))?;
    Ok(([(header::CONTENT_TYPE, doc.content_type.to_string()), (header::CONTENT_DISPOSITION, doc.disposition())], doc.bytes).into_response())
}
