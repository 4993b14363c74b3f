//! `energyd`: ingests meter readings, stores time series, and accounts energy per agency.
//!
//! ```text
//! HTTP (axum) ── /api/v1/ingest, /write, /api/v2/write ──> store writer thread (SQLite, group commit)
//!             └─ /api/v1/series, /consumption, registry ──> store readers ──> accounting (pure)
//! ```

pub mod accounting;
pub mod api;
pub mod config;
pub mod demo;
pub mod ingest;
pub mod metrics;
pub mod registry;
pub mod reports;
pub mod store;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::config::Loaded;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("accounting: {0}")]
    Engine(#[from] accounting::engine::EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A daemon whose store is open and whose listener is bound, ready to serve.
pub struct Daemon {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    mqtt: Option<config::MqttConfig>,
}

impl Daemon {
    /// Opens the store and binds the HTTP listener.
    pub async fn bind(loaded: Loaded) -> Result<Daemon, DaemonError> {
        let metrics = metrics::Metrics::new();
        let retention = loaded.config.retention;
        let options = store::StoreOptions { raw_retention_ms: Some(retention.raw_ms()), rollup_retention_ms: retention.rollup_ms(), ..Default::default() };
        let store = store::open_with(&loaded.config.data_dir, metrics.clone(), options)?;
        let listen = loaded.config.http.listen.clone();
        let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|source| DaemonError::Listen { addr: listen.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| DaemonError::Listen { addr: listen, source })?;
        let engine = accounting::engine::Engine::open(&loaded.config.data_dir, &loaded.registry, loaded.tz)?;
        let state = Arc::new(AppState {
            engine: Arc::new(engine),
            store,
            registry: Arc::new(loaded.registry),
            tz: loaded.tz,
            metrics,
            ingest: loaded.config.ingest.clone(),
            retention,
            max_body_bytes: loaded.config.http.max_body_bytes,
            unassigned: Mutex::new(BTreeSet::new()),
            gateways: Mutex::new(Default::default()),
        });
        let mqtt = loaded.config.mqtt.clone();
        Ok(Daemon { addr, state, listener, mqtt })
    }

    /// Serves until `cancel` fires; then stops accepting, finishes the requests in flight, and
    /// closes the store after its last commit.
    pub async fn serve(self, cancel: CancellationToken) -> Result<(), DaemonError> {
        let app = api::app(self.state.clone());
        tracing::info!(addr = %self.addr, "energyd listening");
        println!("energyd listening on http://{}", self.addr);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let mqtt_cancel = CancellationToken::new();
        let mqtt_task = self.mqtt.clone().map(|m| tokio::spawn(ingest::mqtt::run(self.state.clone(), m, mqtt_cancel.clone())));
        let res = axum::serve(self.listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
        mqtt_cancel.cancel();
        if let Some(t) = mqtt_task {
            let _ = t.await;
        }
        let store = self.state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("store closed");
        res.map_err(DaemonError::Serve)
    }
}
