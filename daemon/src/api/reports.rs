//! Report endpoints, the art. 39 deadlines and the bureau's page at `/`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, Shared};
use crate::reports::{self, Format, Kind, Lang, ReportError, Visible};

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::BadRequest(m) => ApiError::bad_request(m),
            ReportError::NotFound(m) => ApiError::not_found(m),
            ReportError::Engine(e) => e.into(),
            ReportError::Render(m) => ApiError::internal("rendering the report", m),
            ReportError::Xlsx(e) => ApiError::internal("rendering the report", e),
        }
    }
}

/// The agencies the caller may see: all for admin, bureau and engineer (and with authentication
/// off); its own for an agency token. Scores and averages are computed over every agency
/// first; only the rows shown are filtered.
pub fn visible_agencies(parts: &axum::http::request::Parts) -> Visible {
    match parts.extensions.get::<crate::auth::Principal>() {
        Some(p) if p.reads_all() => Visible::All,
        Some(p) => Visible::agencies(p.agency.iter().cloned().collect()),
        None => Visible::agencies(Vec::new()),
    }
}

fn check_keys(p: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    let mut unknown: Vec<&String> = p.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
    unknown.sort();
    match unknown.first() {
        Some(k) => Err(ApiError::bad_request(format!("unknown parameter `{k}`; this endpoint takes {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn parse_year(p: &HashMap<String, String>) -> Result<Option<i32>, ApiError> {
    p.get("year").map(|y| y.parse::<i32>().map_err(|_| ApiError::bad_request(format!("year `{y}` is not a year such as 2025")))).transpose()
}

fn parse_lang(p: &HashMap<String, String>) -> Result<Lang, ApiError> {
    p.get("lang").map_or(Ok(Lang::Zh), |l| l.parse().map_err(ApiError::bad_request))
}

/// The request a query string describes (the parameters in docs/registry.md, "Reports").
pub fn request_of(kind: Kind, p: &HashMap<String, String>) -> Result<reports::Request, ApiError> {
    let mut allowed = vec!["year", "format", "lang", "as_of"];
    if kind == Kind::Annual {
        allowed.push("agency");
    }
    check_keys(p, &allowed)?;
    Ok(reports::Request {
        kind,
        year: parse_year(p)?,
        format: p.get("format").map_or(Ok(Format::Json), |f| f.parse().map_err(ApiError::bad_request))?,
        lang: parse_lang(p)?,
        agency: p.get("agency").cloned(),
        as_of: p.get("as_of").cloned(),
    })
}

async fn report(s: Shared, kind: Kind, parts: axum::http::request::Parts, p: HashMap<String, String>) -> Result<Response, ApiError> {
    let req = request_of(kind, &p)?;
    let visible = visible_agencies(&parts);
    let out = reports::produce(&s.engine, &s.store, &s.registry, s.tz, &req, reports::today(s.tz), &visible).await?;
    let disposition = out.disposition();
    Ok(([(header::CONTENT_TYPE, out.content_type.to_string()), (header::CONTENT_DISPOSITION, disposition)], out.bytes).into_response())
}

/// `GET /api/v1/reports/annual?year=..&format=json|csv|xlsx|html[&agency=..][&lang=..][&as_of=..]`
pub(super) async fn annual(State(s): State<Shared>, parts: axum::http::request::Parts, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    report(s, Kind::Annual, parts, p).await
}

/// `GET /api/v1/reports/assessment?year=..&format=..[&lang=..][&as_of=..]`
pub(super) async fn assessment(State(s): State<Shared>, parts: axum::http::request::Parts, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    report(s, Kind::Assessment, parts, p).await
}

/// `GET /api/v1/reports/statistics?year=..&format=json|csv|xlsx|html[&lang=..][&as_of=..]`: the
/// statistics forms of 公共机构能源资源消费统计调查制度.
pub(super) async fn statistics(State(s): State<Shared>, parts: axum::http::request::Parts, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    report(s, Kind::Statistics, parts, p).await
}

/// `GET /api/v1/plans/energy?year=..&format=..[&lang=..][&as_of=..]` (`year`: the plan year)
pub(super) async fn plan(State(s): State<Shared>, parts: axum::http::request::Parts, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    report(s, Kind::Plan, parts, p).await
}

/// `GET /api/v1/deadlines?year=..[&as_of=..]`
pub(super) async fn deadlines(State(s): State<Shared>, parts: axum::http::request::Parts, Query(p): Query<HashMap<String, String>>) -> Result<Json<reports::model::Deadlines>, ApiError> {
    check_keys(&p, &["year", "as_of"])?;
    let visible = visible_agencies(&parts);
    let d = reports::deadlines(&s.engine, &s.store, &s.registry, s.tz, parse_year(&p)?, p.get("as_of").map(String::as_str), reports::today(s.tz), &visible).await?;
    Ok(Json(d))
}
