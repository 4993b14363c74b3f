//! `energyd`: ingests meter readings, stores time series, and accounts energy per agency.
//!
//! ```text
//! HTTP (axum) ── /api/v1/ingest, /write, /api/v2/write ──> store writer thread (SQLite, group commit)
//!             └─ /api/v1/series, /consumption, registry ──> store readers ──> accounting (pure)
//! ```

pub mod accounting;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod collector;
pub mod config;
pub mod demo;
pub mod ingest;
pub mod metrics;
pub mod registry;
pub mod serve;
pub mod reports;
pub mod savings;
pub mod store;
pub mod time;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
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
    #[error(transparent)]
    Tls(#[from] serve::TlsError),
    #[error("{0}")]
    Audit(#[from] audit::AuditError),
    #[error("storage.influxdb: {0}")]
    Influx(String),
    #[error("alerts: {0}")]
    Alerts(#[from] alerts::actions::ActionError),
}

/// A daemon whose store is open and whose listener is bound, ready to serve.
pub struct Daemon {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    mqtt: Option<ingest::config::MqttConfig>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: serve::ConnLimits,
    /// The InfluxDB backend, when configured: its forwarder runs while the daemon serves.
    influx: Option<Arc<store::influx::Influx>>,
    /// `[auth]`, for reloading its tokens file.
    auth_cfg: Option<auth::AuthConfig>,
    /// The national-protocol collector port (`[collector]`), bound.
    collector: Option<collector::listener::Listener>,
    /// `[[upstream]]`: the data centres above, reported to.
    upstream: Vec<collector::upstream::UpstreamConfig>,
    data_dir: std::path::PathBuf,
    /// `[public]`: the public disclosure pages, mounted when enabled.
    public: reports::public::PublicConfig,
    /// The page's settings (users file, session idle time, HTTPS).
    web: web::WebSetup,
}

/// Per meter of the registry, its InfluxDB tags besides `meter`: `building`, `carrier`, and
/// `agency` for a sub-meter serving one agency.
fn influx_tags(reg: &registry::Registry) -> std::collections::HashMap<String, String> {
    reg.file
        .meters
        .iter()
        .map(|m| {
            let tags = [("building", m.building.as_str()), ("carrier", m.carrier.as_str()), ("agency", m.agency.as_deref().unwrap_or_default())];
            (m.id.clone(), store::influx::encode::tag_suffix(&tags))
        })
        .collect()
}

/// Opens the store: the embedded one, or the embedded one forwarding to InfluxDB (returned too,
/// for its forwarder).
fn open_store(loaded: &Loaded, metrics: &metrics::Metrics) -> Result<(store::Store, Option<Arc<store::influx::Influx>>), DaemonError> {
    let retention = loaded.config.retention;
    let mut options = store::StoreOptions {
        raw_retention_ms: Some(retention.raw_ms()),
        rollup_retention_ms: retention.rollup_ms(),
        min_free_bytes: loaded.config.storage.min_free_bytes,
        ..Default::default()
    };
    Ok(match loaded.config.storage.influx() {
        None => (store::open_with(&loaded.config.data_dir, metrics.clone(), options)?, None),
        Some(cfg) => {
            if let Some(days) = cfg.local_raw_days {
                options.raw_retention_ms = Some(options.raw_retention_ms.unwrap_or(i64::MAX).min(i64::from(days) * 86_400_000));
            }
            let influx = Arc::new(store::influx::Influx::new(cfg.clone(), metrics.clone()).map_err(|e| DaemonError::Influx(e.to_string()))?);
            let forwarding = store::Forwarding { measurement: cfg.measurement.clone(), tags: influx_tags(&loaded.registry), max_bytes: cfg.max_spool_bytes };
            let local = store::open_forwarding(&loaded.config.data_dir, metrics.clone(), options, Some(forwarding))?;
            tracing::info!(url = %cfg.url, api = ?cfg.api, read = ?cfg.read, "storage backend: InfluxDB (local store keeps the spool and the roll-ups)");
            (store::Store::with_influx(local, influx.clone()), Some(influx))
        }
    })
}

/// Opens the audit log and records this start in it.
fn open_audit(loaded: &Loaded) -> Result<audit::AuditLog, DaemonError> {
    let audit = audit::AuditLog::open(&loaded.config.data_dir)?;
    match record_config(&audit, loaded) {
        Ok(()) => {}
        // On a full disk the daemon still starts (read-only, see the store); the record of
        // this start is what is lost, and said so.
        Err(audit::AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::StorageFull => {
            tracing::error!("the audit log cannot record this start: the disk is full ({source})");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(audit)
}

/// The background tasks of a serving daemon, stopped in order by [`Tasks::stop`].
struct Tasks {
    /// Stops the MQTT ingest, the alerts and the tokens watch.
    cancel: CancellationToken,
    mqtt: Option<JoinHandle<()>>,
    alerts: Option<JoinHandle<()>>,
    tokens: JoinHandle<()>,
    warm: JoinHandle<()>,
    /// The InfluxDB forwarder, stopped on its own after the others.
    forward_cancel: CancellationToken,
    forward: Option<JoinHandle<()>>,
}

impl Tasks {
    /// Stops the tasks: ingest first (nothing new arrives), then the alerts and the tokens watch,
    /// then the forwarder (what it has not sent stays in the spool for the next start).
    async fn stop(self) {
        self.cancel.cancel();
        self.warm.abort();
        if let Some(t) = self.mqtt {
            let _ = t.await;
        }
        if let Some(t) = self.alerts {
            let _ = t.await;
        }
        let _ = self.tokens.await;
        self.forward_cancel.cancel();
        if let Some(t) = self.forward {
            let _ = t.await;
        }
    }
}

/// Warms the accounting cache (this year and last) in the background, so that the first
/// indicators asked for do not wait for every meter's year to be computed; then writes the disk
/// cache's rows as they fall due (`accounting::cache`). The warming waits while a bulk ingest
/// streams in ([`metrics::Metrics::wait_for_quiet_writer`]): its computation flushes the
/// store's head, and the years it would compute are changed by every group that arrives.
fn warm_accounting(st: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        use chrono::Datelike;
        st.metrics.wait_for_quiet_writer(WARM_QUIET, metrics::BULK_POINTS_PER_SECOND, WARM_WAIT_MAX).await;
        let year = chrono::Utc::now().with_timezone(&st.tz).year();
        for y in [year, year - 1] {
            let started = std::time::Instant::now();
            match st.engine.year(&st.store, &st.registry, y).await {
                Ok(_) => tracing::info!(year = y, seconds = started.elapsed().as_secs_f64(), "accounting cache warm"),
                Err(e) => tracing::warn!(year = y, "warming the accounting cache failed: {e}"),
            }
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            let engine = st.engine.clone();
            let _ = tokio::task::spawn_blocking(move || engine.write_cache(false)).await;
        }
    })
}

/// Over how long the ingest rate is measured before the warming starts.
const WARM_QUIET: std::time::Duration = std::time::Duration::from_secs(1);
/// The warming starts after this much waiting even if a bulk ingest goes on (one flush then
/// costs little against what the ingest itself flushes).
const WARM_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10 * 60);

impl Daemon {
    /// Opens the store and binds the HTTP listener.
    pub async fn bind(loaded: Loaded) -> Result<Daemon, DaemonError> {
        let metrics = metrics::Metrics::new();
        let http = &loaded.config.http;
        let tls = match (&http.tls_cert_file, &http.tls_key_file) {
            (Some(c), Some(k)) => Some(serve::tls_acceptor(c, k)?),
            _ => None,
        };
        let audit = Arc::new(open_audit(&loaded)?);
        let (store, influx) = open_store(&loaded, &metrics)?;
        let listen = http.listen.clone();
        let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|source| DaemonError::Listen { addr: listen.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| DaemonError::Listen { addr: listen, source })?;
        let engine = accounting::engine::Engine::open(&loaded.config.data_dir, &loaded.registry, loaded.tz)?;
        let (mqtt, limits, auth_cfg) = (loaded.config.mqtt.clone(), http.conn_limits(), loaded.config.auth.clone());
        let (upstream, data_dir) = (loaded.config.upstream.clone(), loaded.config.data_dir.clone());
        let web = web::WebSetup {
            users_file: loaded.config.users_file(),
            session_idle_ms: auth_cfg.as_ref().map_or(30 * 60_000, auth::AuthConfig::session_idle_ms),
            secure: tls.is_some(),
        };
        let registry = Arc::new(loaded.registry);
        let options = ingest::IngestOptions { config: loaded.config.ingest.clone(), raw_days: loaded.config.retention.raw_days, max_body_bytes: loaded.config.http.max_body_bytes };
        let ingest = Arc::new(ingest::Ingest::new(store.clone(), registry.clone(), metrics.clone(), audit.clone(), options));
        let collectors = Arc::new(collector::Collectors::new(&metrics.registry));
        let collector = bind_collector(&loaded.config, &registry, &ingest, &collectors, &audit, loaded.tz).await?;
        let state = Arc::new(AppState {
            engine: Arc::new(engine),
            store,
            registry,
            tz: loaded.tz,
            metrics,
            ingest,
            max_body_bytes: loaded.config.http.max_body_bytes,
            request_timeout: std::time::Duration::from_millis(loaded.config.http.request_timeout_ms),
            auth: loaded.tokens,
            audit,
            alerts: Arc::new(alerts::Alerts::open(loaded.config.alerts.clone(), &loaded.config.data_dir, loaded.tz)?),
            collectors,
        });
        let public = loaded.config.public.clone();
        Ok(Daemon { addr, state, listener, mqtt, tls, limits, influx, auth_cfg, collector, upstream, data_dir, public, web })
    }

    /// Says where the daemon listens and whether authentication is on (on stdout too, for
    /// operators and tests waiting for it).
    fn announce(&self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.addr, "energyd listening");
        println!("energyd listening on {scheme}://{}", self.addr);
        match &self.state.auth {
            None => println!("authentication is off: every request acts as admin (allowed on loopback, or with http.allow_insecure_open)"),
            Some(t) => println!("authentication is on: {} tokens", t.len()),
        }
        if let Some(a) = self.collector.as_ref().and_then(|c| c.local_addr()) {
            let scheme = if self.collector.as_ref().is_some_and(|c| c.tls.is_some()) { "tls" } else { "tcp" };
            tracing::info!(addr = %a, "energyd collector port listening");
            println!("energyd collector port listening on {scheme}://{a}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }

    /// Starts the background tasks: tokens watch, MQTT ingest, accounting warm-up, alerts, the
    /// InfluxDB forwarder.
    fn spawn_tasks(&self) -> Tasks {
        let s = &self.state;
        let cancel = CancellationToken::new();
        let tokens = tokio::spawn(watch_tokens(s.clone(), self.auth_cfg.clone(), cancel.clone()));
        let mqtt = self.mqtt.clone().map(|m| tokio::spawn(ingest::mqtt::run(s.ingest.clone(), s.auth.clone(), m, cancel.clone())));
        let warm = warm_accounting(s.clone());
        let alerts = s.alerts.config.enabled.then(|| tokio::spawn(alerts::run(s.alerts.clone(), s.alert_sources(), cancel.clone())));
        let forward_cancel = CancellationToken::new();
        let forward = self.influx.clone().map(|i| tokio::spawn(store::forward(s.store.local().clone(), i, s.metrics.clone(), forward_cancel.clone())));
        Tasks { cancel, mqtt, alerts, tokens, warm, forward_cancel, forward }
    }

    /// Serves until `cancel` fires; then stops accepting, finishes the requests in flight, stops
    /// the background tasks, and closes the store after its last commit.
    pub async fn serve(mut self, cancel: CancellationToken) -> Result<(), DaemonError> {
        let app = web::app(self.state.clone(), self.web.clone());
        // Public disclosure (art. 40): no login; absent unless `[public] enabled`.
        let app = if self.public.enabled { app.merge(api::public::router(self.state.clone(), self.public.clone())) } else { app };
        self.announce();
        let tasks = self.spawn_tasks();
        let collector_cancel = CancellationToken::new();
        let collector = self.collector.take().map(|l| tokio::spawn(l.run(collector_cancel.clone())));
        let upstream: Vec<JoinHandle<()>> = std::mem::take(&mut self.upstream)
            .into_iter()
            .map(|u| {
                let s = &self.state;
                let parts = collector::upstream::UpParts { store: s.store.clone(), registry: s.registry.clone(), engine: s.engine.clone(), tz: s.tz, data_dir: self.data_dir.clone(), metrics: s.metrics.registry.clone() };
                tokio::spawn(collector::upstream::run(u, parts, collector_cancel.clone()))
            })
            .collect();
        let res = serve::serve(self.listener, app, self.tls, self.limits, self.state.metrics.clone(), cancel).await;
        collector_cancel.cancel();
        if let Some(t) = collector {
            let _ = t.await;
        }
        for t in upstream {
            let _ = t.await;
        }
        tasks.stop().await;
        // The accounting cache's rows still waiting, before the store closes.
        let engine = self.state.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.write_cache(true)).await;
        let store = self.state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("store closed");
        res.map_err(DaemonError::Serve)
    }
}

/// Binds the national-protocol collector port when `[collector]` is configured (TLS with its
/// own certificate, built by the same function as the HTTP server's).
async fn bind_collector(
    cfg: &config::DaemonConfig,
    registry: &Arc<registry::Registry>,
    ingest: &Arc<ingest::Ingest>,
    status: &Arc<collector::Collectors>,
    audit: &Arc<audit::AuditLog>,
    tz: chrono_tz::Tz,
) -> Result<Option<collector::listener::Listener>, DaemonError> {
    let Some(c) = &cfg.collector else { return Ok(None) };
    let tls = match (&c.tls_cert_file, &c.tls_key_file) {
        (Some(cert), Some(key)) => Some(serve::tls_acceptor(cert, key)?),
        _ => None,
    };
    let parts = collector::listener::Parts { registry: registry.clone(), ingest: ingest.clone(), status: status.clone(), audit: audit.clone(), tz };
    collector::listener::Listener::bind(c, tls, parts).await.map(Some).map_err(|e| DaemonError::Config(config::ConfigErrors(vec![e])))
}

/// How often the tokens file is looked at for a change.
const TOKENS_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the token table in step with `auth.tokens_file`: reloads it on SIGHUP and when the
/// file changes (its modification time, size or inode, looked at every [`TOKENS_POLL`]), so that
/// a token removed from the file is refused (401) within seconds. A file that does not load
/// (unreadable, invalid, or an entry the checks refuse) changes nothing: the tokens in force
/// stay, and the log and the audit log say why. The tokens of `[auth]` in the main file stay as
/// started (a restart reads them). Without `[auth]` a SIGHUP is logged and changes nothing (it
/// never stops the daemon, so `systemctl reload` is safe either way).
async fn watch_tokens(state: Arc<AppState>, cfg: Option<auth::AuthConfig>, cancel: CancellationToken) {
    let (Some(tokens), Some(cfg)) = (state.auth.clone(), cfg) else {
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    Some(()) = hup.recv() => tracing::info!("SIGHUP: nothing to reload (no [auth])"),
                }
            }
        }
        return;
    };
    let stamp = |p: Option<&std::path::Path>| {
        use std::os::unix::fs::MetadataExt as _;
        p.and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.modified().ok(), m.len(), m.ino()))
    };
    let file = cfg.tokens_file.clone();
    let mut seen = stamp(file.as_deref());
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP ({e}); the tokens file is still reloaded when it changes");
            None
        }
    };
    let mut tick = tokio::time::interval(TOKENS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            () = cancel.cancelled() => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = stamp(file.as_deref());
                if now == seen {
                    continue;
                }
                "the tokens file changed"
            }
        };
        seen = stamp(file.as_deref());
        reload_tokens(&state, &tokens, &cfg, trigger).await;
    }
}

/// Loads the tokens again and puts them in force, or keeps the old ones when they do not load.
async fn reload_tokens(state: &Arc<AppState>, tokens: &auth::Tokens, cfg: &auth::AuthConfig, trigger: &str) {
    let (c, reg) = (cfg.clone(), state.registry.clone());
    let loaded = tokio::task::spawn_blocking(move || auth::Tokens::load(&c, std::path::Path::new("."), Some(&reg))).await;
    let before = tokens.names();
    let who = auth::Principal::system();
    let target = cfg.tokens_file.as_ref().map_or_else(|| "[auth]".to_string(), |f| f.display().to_string());
    match loaded {
        Ok(Ok(fresh)) => {
            tokens.replace(&fresh);
            let after = tokens.names();
            let removed: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
            let added: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
            state.metrics.auth_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(trigger, tokens = after.len(), ?added, ?removed, "tokens reloaded");
            let detail = serde_json::json!({ "trigger": trigger, "tokens": after.len(), "added": added, "removed": removed,
                "sha256": cfg.tokens_file.as_deref().map(audit::file_sha256) });
            state.record(&who, "auth.reload", &target, detail).await;
        }
        Ok(Err(errors)) => {
            state.metrics.auth_reloads.with_label_values(&["failed"]).inc();
            tracing::error!(trigger, tokens_in_force = before.len(), "reloading the tokens failed; the tokens in force stay: {}", errors.join("; "));
            state.record(&who, "auth.reload_failed", &target, serde_json::json!({ "trigger": trigger, "errors": errors, "tokens_in_force": before.len() })).await;
        }
        Err(e) => tracing::error!("reloading the tokens: {e}"),
    }
}

/// Records the configuration at startup in the audit log: each file's SHA-256, whether
/// authentication and TLS are on; `config.change` when the hashes differ from the last start.
fn record_config(audit: &audit::AuditLog, loaded: &Loaded) -> Result<(), audit::AuditError> {
    let c = &loaded.config;
    let mut files = serde_json::Map::new();
    if let Some(p) = &loaded.source {
        files.insert(p.display().to_string(), audit::file_sha256(p).into());
    }
    files.insert(c.registry.display().to_string(), audit::file_sha256(&c.registry).into());
    if let Some(f) = c.auth.as_ref().and_then(|a| a.tokens_file.as_ref()) {
        files.insert(f.display().to_string(), audit::file_sha256(f).into());
    }
    let detail = serde_json::json!({
        "files": files,
        "listen": c.http.listen,
        "auth": loaded.tokens.as_ref().map_or(0, auth::Tokens::len),
        "tls": c.http.tls_cert_file.is_some(),
        "allow_insecure_open": c.http.allow_insecure_open,
    });
    let target = loaded.source.as_ref().map_or_else(|| "(built-in)".to_string(), |p| p.display().to_string());
    let who = auth::Principal::system();
    if let Some(prev) = audit.last_detail("config.load") {
        if prev.get("files") != detail.get("files") {
            audit.record(&who, "config.change", &target, serde_json::json!({ "before": prev["files"], "after": detail["files"] }))?;
        }
    }
    audit.record(&who, "config.load", &target, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_loads_and_changes_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("r.toml"), "").unwrap();
        std::fs::write(d.join("energyd.toml"), "data_dir = \"data\"\nregistry = \"r.toml\"\n").unwrap();
        let audit = audit::AuditLog::open(d).unwrap();
        let load = || config::DaemonConfig::load(&d.join("energyd.toml")).unwrap();
        record_config(&audit, &load()).unwrap();
        record_config(&audit, &load()).unwrap();
        std::fs::write(d.join("r.toml"), "[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"city\"\n").unwrap();
        record_config(&audit, &load()).unwrap();
        let (items, _) = audit.read_page(0, 10).unwrap();
        let actions: Vec<&str> = items.iter().filter_map(|r| r["action"].as_str()).collect();
        assert_eq!(actions, ["config.load", "config.load", "config.change", "config.load"]);
        assert_eq!(items[0]["who"], "energyd");
        let files = items[0]["detail"]["files"].as_object().unwrap();
        assert!(files.values().all(|h| h.as_str().is_some_and(|h| h.len() == 64)), "{files:?}");
        assert_ne!(items[2]["detail"]["before"], items[2]["detail"]["after"]);
    }
}
