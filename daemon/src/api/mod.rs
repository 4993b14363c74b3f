//! The HTTP API (axum). `app(state)` builds the router; tests drive it without a socket.

mod collectors;
mod items;
pub mod accounting;
mod auth;
mod alerts;
mod error;
mod profile;
mod influx_api;
mod ingest;
pub mod limits;
mod query;
mod registry;
pub(crate) mod savings;
pub mod public;
pub mod reports;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use auth::{access, Access, ConnAuth};
pub use error::ApiError;
pub use crate::auth::{Principal, Role};

use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

/// Everything a handler needs: the services' handles, and the HTTP layer's own settings.
pub struct AppState {
    pub store: Store,
    /// The accounting engine: meters' years, cached; meter events.
    pub engine: Arc<crate::accounting::engine::Engine>,
    pub registry: Arc<Registry>,
    pub tz: chrono_tz::Tz,
    pub metrics: Metrics,
    /// Ingest: batches, line protocol; the gateways seen, the meters not in the registry.
    pub ingest: Arc<Ingest>,
    /// `http.max_body_bytes`.
    pub max_body_bytes: usize,
    /// Bearer tokens; `None`: authentication off, every request acts as an implicit admin.
    pub auth: Option<crate::auth::Tokens>,
    /// The audit log (`<data_dir>/audit.log`).
    pub audit: Arc<crate::audit::AuditLog>,
    /// `http.request_timeout_ms`.
    pub request_timeout: std::time::Duration,
    /// The alert engine's rules and alerts.
    pub alerts: Arc<crate::alerts::Alerts>,
    /// The national-protocol collectors seen (issue 21).
    pub collectors: Arc<crate::collector::Collectors>,
}

impl AppState {
    /// What the alert rules read: the same store, engine and registry as the handlers, and the
    /// gateways ingest has seen.
    pub fn alert_sources(&self) -> crate::alerts::Sources {
        crate::alerts::Sources {
            store: self.store.clone(),
            engine: self.engine.clone(),
            registry: self.registry.clone(),
            tz: self.tz,
            metrics: self.metrics.clone(),
            gateways: self.ingest.gateways().clone(),
        }
    }

    /// Appends to the audit log off the async threads (it fsyncs); a failure is logged, and
    /// the action it records has happened anyway. Handlers that must not act unrecorded call
    /// `self.audit.record` directly and fail on its error.
    pub async fn record(self: &Arc<Self>, who: &Principal, action: &str, target: &str, detail: serde_json::Value) {
        let (s, who, action, target) = (self.clone(), who.clone(), action.to_string(), target.to_string());
        match tokio::task::spawn_blocking(move || s.audit.record(&who, &action, &target, detail)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("audit log: {e}"),
        }
    }
}

pub type Shared = Arc<AppState>;

/// The daemon's router.
pub fn app(state: Shared) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/ingest", post(ingest::batch))
        .route("/api/v2/write", post(ingest::write_v2))
        .route("/write", post(ingest::write_v1))
        .route("/ping", get(influx_api::ping))
        .route("/health", get(influx_api::health))
        .route("/query", get(influx_api::query).post(influx_api::query))
        .route("/api/v1/agencies", get(registry::agencies))
        .route("/api/v1/buildings", get(registry::buildings))
        .route("/api/v1/meters", get(registry::meters))
        .route("/api/v1/gateways", get(registry::gateways))
        .route("/api/v1/collectors", get(collectors::list))
        .route("/api/v1/quantities", get(registry::quantities))
        .route("/api/v1/series", get(query::series))
        .route("/api/v1/consumption", get(query::consumption))
        .route("/api/v1/indicators", get(accounting::all_indicators))
        .route("/api/v1/registry/accounting", get(registry::accounting))
        .route("/api/v1/agencies/{id}/indicators", get(accounting::agency_indicators))
        .route("/api/v1/meters/{id}/events", get(accounting::list_events).post(accounting::post_event))
        .route("/api/v1/meters/{id}/flags", get(accounting::meter_flags))
        .route("/api/v1/store/compact", post(compact))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/{id}/ack", post(alerts::ack))
        .route("/api/v1/alerts/{id}/silence", post(alerts::silence).delete(alerts::unsilence))
        .route("/api/v1/indicators/ranking", get(profile::ranking))
        .route("/api/v1/buildings/{id}/summary", get(profile::summary))
        .route("/api/v1/buildings/{id}/profile", get(profile::profile))
        .route("/api/v1/reports/annual", get(reports::annual))
        .route("/api/v1/reports/assessment", get(reports::assessment))
        .route("/api/v1/reports/statistics", get(reports::statistics))
        .route("/api/v1/reports/items", get(items::items))
        .route("/api/v1/plans/energy", get(reports::plan))
        .route("/api/v1/deadlines", get(reports::deadlines))
        .route("/api/v1/savings", get(savings::savings))
        .route("/api/v1/reports/mv", get(savings::mv_report))
        .fallback(|| async { ApiError::not_found("no such endpoint; see the README's contract section") })
        .method_not_allowed_fallback(|| async {
            ApiError { status: axum::http::StatusCode::METHOD_NOT_ALLOWED, message: "this endpoint does not take that method; see the README's contract section".into() }
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    let class = format!("{}xx", resp.status().as_u16() / 100);
    s.metrics.requests.with_label_values(&[route.as_str(), class.as_str()]).inc();
    resp
}

/// `GET /metrics`: every series for whoever reads everything (admin, bureau, engineer, and
/// everyone without `[auth]`); an agency token gets the agency series (labelled `agency`,
/// `building` or `meter`) of what it may read only; without a token with read rights (possible
/// with `auth.metrics = "open"`) none of them (see crate::auth::MetricsAccess).
async fn metrics(State(s): State<Shared>, req: Request) -> impl IntoResponse {
    let principal = req.extensions().get::<Principal>().filter(|p| p.require_read().is_ok()).cloned();
    let bytes = s.store.bytes();
    s.metrics.store_bytes.set(bytes as i64);
    let points = s.metrics.store_points.get();
    s.metrics.bytes_per_point.set(if points > 0 { bytes as f64 / points as f64 } else { 0.0 });
    s.metrics.meters_known.set(s.registry.file.meters.len() as i64);
    if s.alerts.config.per_meter_metrics {
        profile::set_meter_gauges(&s).await;
    }
    let reg = s.registry.clone();
    let body = match principal {
        Some(p) if p.reads_all() => s.metrics.render(),
        Some(p) => s.metrics.render_scoped(&|label, value| match label {
            "agency" => p.sees_agency(value),
            "building" => p.sees_building(&reg, value),
            _ => p.sees_meter(&reg, value),
        }),
        None => s.metrics.render_scoped(&|_, _| false),
    };
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// `POST /api/v1/store/compact`: seals every day older than the head into compressed chunks now
/// (the writer does it by itself in the background); answers after the last commit.
async fn compact(State(s): State<Shared>, principal: Principal) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let out = s.store.compact().await?;
    let detail = serde_json::json!({ "points_sealed": out.points_sealed, "store_bytes": s.store.bytes() });
    s.record(&principal, "store.compact", "store", detail.clone()).await;
    Ok(axum::Json(detail))
}

/// `GET /api/v1/audit?offset=0&limit=100` (admin, bureau): audit records in the order written.
async fn audit(State(s): State<Shared>, Query(p): Query<std::collections::HashMap<String, String>>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let num = |k: &str, default: usize| -> Result<usize, ApiError> {
        p.get(k).map_or(Ok(default), |v| v.parse::<usize>().map_err(|_| ApiError::bad_request(format!("`{k}` must be a whole number 0 or more"))))
    };
    let offset = num("offset", 0)?;
    let limit = num("limit", 100)?;
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("`limit` must be 1..=1000"));
    }
    let st = s.clone();
    let (items, total) = tokio::task::spawn_blocking(move || st.audit.read_page(offset, limit))
        .await
        .map_err(|e| ApiError::internal("reading the audit log", e))?
        .map_err(|e| ApiError::internal("reading the audit log", e))?;
    let next = (offset + items.len() < total).then_some(offset + items.len());
    Ok(axum::Json(serde_json::json!({ "items": items, "offset": offset, "total": total, "next": next })))
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod auth_tests;
