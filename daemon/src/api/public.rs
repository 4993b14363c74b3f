//! Public disclosure (art. 40): `/public` (printable page), `/public/data.json`,
//! `/public/data.csv` and `/public/data.xlsx`, without login. Mounted only when `[public]
//! enabled = true` ([`router`]); otherwise these paths answer 404 like any unknown one.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, Shared};
use crate::reports::public::{default_year, disclosure, render, PublicConfig};
use crate::reports::{Format, Lang};

#[derive(Clone)]
struct PublicState {
    app: Shared,
    cfg: Arc<PublicConfig>,
}

async fn answer(s: PublicState, p: HashMap<String, String>, format: Format) -> Result<Response, ApiError> {
    if let Some(k) = p.keys().find(|k| !["year", "lang"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown parameter `{k}`; this page takes year, lang")));
    }
    let today = crate::time::today(s.app.tz);
    let year = match p.get("year") {
        Some(y) => y.parse::<i32>().map_err(|_| ApiError::bad_request(format!("year `{y}` is not a year such as 2025")))?,
        None => default_year(today),
    };
    let lang: Lang = p.get("lang").map_or(Ok(Lang::Zh), |l| l.parse().map_err(ApiError::bad_request))?;
    let d = disclosure(&s.app.engine, &s.app.store, &s.app.registry, s.app.tz, year, today, &s.cfg).await?;
    let out = render(&d, format, lang, &s.cfg)?;
    Ok(([(header::CONTENT_TYPE, out.content_type.to_string()), (header::CONTENT_DISPOSITION, out.disposition())], out.bytes).into_response())
}

/// The public routes, for [`crate::Daemon`] to merge when `[public] enabled`.
pub fn router(app: Shared, cfg: PublicConfig) -> Router {
    let st = PublicState { app, cfg: Arc::new(cfg) };
    Router::new()
        .route("/public", get(|State(s): State<PublicState>, Query(p): Query<HashMap<String, String>>| async move { answer(s, p, Format::Html).await }))
        .route("/public/data.json", get(|State(s): State<PublicState>, Query(p): Query<HashMap<String, String>>| async move { answer(s, p, Format::Json).await }))
        .route("/public/data.csv", get(|State(s): State<PublicState>, Query(p): Query<HashMap<String, String>>| async move { answer(s, p, Format::Csv).await }))
        .route("/public/data.xlsx", get(|State(s): State<PublicState>, Query(p): Query<HashMap<String, String>>| async move { answer(s, p, Format::Xlsx).await }))
        .with_state(st)
}
