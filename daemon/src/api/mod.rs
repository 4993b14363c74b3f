//! The HTTP API (axum). `app(state)` builds the router; tests drive it without a socket.

pub mod accounting;
mod error;
mod ingest;
mod query;
mod registry;
pub mod reports;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;

use crate::config::{IngestConfig, RetentionConfig};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

/// Everything a handler needs.
pub struct AppState {
    pub store: Store,
    /// The accounting engine: meters' years, cached; meter events.
    pub engine: Arc<crate::accounting::engine::Engine>,
    pub registry: Arc<Registry>,
    pub tz: chrono_tz::Tz,
    pub metrics: Metrics,
    pub ingest: IngestConfig,
    pub retention: RetentionConfig,
    pub max_body_bytes: usize,
    /// Meters seen in input but absent from the registry.
    pub unassigned: Mutex<BTreeSet<String>>,
    /// Gateways seen over MQTT: site, online (from their status topic), since when.
    pub gateways: Mutex<std::collections::BTreeMap<String, GatewayState>>,
}

/// What the daemon knows of a gateway's connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayState {
    pub site: String,
    pub online: Option<bool>,
    pub since_ms: i64,
}

impl AppState {
    pub fn set_gateway_online(&self, gateway: &str, site: &str, online: bool) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        let e = g.entry(gateway.to_string()).or_insert(GatewayState { site: site.to_string(), online: None, since_ms: now });
        if e.online != Some(online) {
            e.online = Some(online);
            e.since_ms = now;
        }
        e.site = site.to_string();
        self.metrics.gateway_up.with_label_values(&[gateway]).set(i64::from(online));
    }

    pub fn set_gateway_seen(&self, gateway: &str, site: &str) {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        if !g.contains_key(gateway) {
            g.insert(gateway.to_string(), GatewayState { site: site.to_string(), online: None, since_ms: chrono::Utc::now().timestamp_millis() });
        }
    }
}

pub type Shared = Arc<AppState>;

/// The daemon's router.
pub fn app(state: Shared) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/", get(reports::index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/ingest", post(ingest::batch))
        .route("/api/v2/write", post(ingest::write_v2))
        .route("/write", post(ingest::write_v1))
        .route("/api/v1/agencies", get(registry::agencies))
        .route("/api/v1/buildings", get(registry::buildings))
        .route("/api/v1/meters", get(registry::meters))
        .route("/api/v1/gateways", get(registry::gateways))
        .route("/api/v1/quantities", get(registry::quantities))
        .route("/api/v1/series", get(query::series))
        .route("/api/v1/consumption", get(query::consumption))
        .route("/api/v1/indicators", get(accounting::all_indicators))
        .route("/api/v1/agencies/{id}/indicators", get(accounting::agency_indicators))
        .route("/api/v1/meters/{id}/events", get(accounting::list_events).post(accounting::post_event))
        .route("/api/v1/meters/{id}/flags", get(accounting::meter_flags))
        .route("/api/v1/store/compact", post(compact))
        .route("/api/v1/reports/annual", get(reports::annual))
        .route("/api/v1/reports/assessment", get(reports::assessment))
        .route("/api/v1/plans/energy", get(reports::plan))
        .route("/api/v1/deadlines", get(reports::deadlines))
        .fallback(|| async { ApiError::not_found("no such endpoint; see the README's contract section") })
        .layer(DefaultBodyLimit::max(limit))
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

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let bytes = s.store.bytes();
    s.metrics.store_bytes.set(bytes as i64);
    let points = s.metrics.store_points.get();
    s.metrics.bytes_per_point.set(if points > 0 { bytes as f64 / points as f64 } else { 0.0 });
    s.metrics.meters_known.set(s.registry.file.meters.len() as i64);
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

/// `POST /api/v1/store/compact`: seals every day older than the head into compressed chunks now
/// (the writer does it by itself in the background); answers after the last commit.
async fn compact(State(s): State<Shared>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let out = s.store.compact().await?;
    Ok(axum::Json(serde_json::json!({ "points_sealed": out.points_sealed, "store_bytes": s.store.bytes() })))
}

#[cfg(test)]
mod tests;
