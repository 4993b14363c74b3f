//! `energy-gateway`: polls building meters and forwards their readings to `energyd` without loss.
//!
//! Data path inside the gateway:
//!
//! ```text
//! poll (one task per Modbus bus) --mpsc--> queue writer (thread: append + fsync)
//!     --notify--> uplink (task: peek batch, POST, ack on 2xx) --> energyd
//! ```
//!
//! See ARCHITECTURE.md at the repository root for what is durable when.

pub mod backoff;
pub mod broker;
pub mod config;
pub mod field;
pub mod metrics;
pub mod mqtt_in;
pub mod poll;
pub mod probe;
pub mod profile;
pub mod queue;
pub mod time;
pub mod tls;
pub mod transport;
pub mod uplink;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use energy_wire::Sample;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::poll::{DeviceStatus, StatusMap};
use crate::profile::mqtt::{load_mqtt_dir, MqttProfile};
use crate::profile::Profile;
use crate::queue::{Queue, SharedQueue};
use crate::uplink::{Common, UplinkStatus};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{0}")]
    Profiles(#[from] profile::ProfileErrors),
    #[error("{0}")]
    Queue(#[from] queue::QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// What `/status` and `energy-gateway status` show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub gateway_id: String,
    pub queue_depth: u64,
    pub queue_bytes: u64,
    pub queue_dropped: u64,
    pub next_seq: u64,
    pub oldest_unsent_ms: Option<i64>,
    pub uplink: UplinkStatus,
    pub devices: Vec<DeviceStatus>,
}

/// A running gateway's shared state.
#[derive(Clone)]
pub struct Handle {
    pub gateway_id: String,
    pub metrics: Metrics,
    queue: SharedQueue,
    devices: StatusMap,
    uplink: Arc<Mutex<UplinkStatus>>,
    reload: mpsc::Sender<Reload>,
}

impl Handle {
    /// Replaces the device list of the running gateway (SIGHUP). The queue is not touched.
    pub async fn reload(&self, r: Reload) -> bool {
        self.reload.send(r).await.is_ok()
    }

    pub fn status(&self) -> Status {
        let (depth, bytes, dropped, next_seq, oldest) = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let oldest = q.peek(1).ok().and_then(|r| r.first().and_then(|r| serde_json::from_slice::<Sample>(&r.body).ok())).map(|s| s.t);
            (q.depth(), q.bytes(), q.dropped, q.next_seq(), oldest)
        };
        Status {
            gateway_id: self.gateway_id.clone(),
            queue_depth: depth,
            queue_bytes: bytes,
            queue_dropped: dropped,
            next_seq,
            oldest_unsent_ms: oldest,
            uplink: self.uplink.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            devices: self.devices.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect(),
        }
    }
}

/// Loads profiles and validates the configuration against them; every problem at once.
pub fn load_and_validate(cfg: &GatewayConfig) -> Result<BTreeMap<String, Profile>, GatewayError> {
    let profiles = profile::load_dir(&cfg.profiles_dir)?;
    let mqtt = load_mqtt_dir(&cfg.profiles_dir)?;
    let field = field::profile::load_field_dir(&cfg.profiles_dir)?;
    cfg.validate_full(&profiles, &mqtt, &field)?;
    Ok(profiles)
}

/// The MQTT meter profiles a configuration needs (none when it has no MQTT meters).
fn mqtt_profiles_for(cfg: &GatewayConfig) -> BTreeMap<String, MqttProfile> {
    if cfg.mqtt_devices.is_empty() {
        return BTreeMap::new();
    }
    load_mqtt_dir(&cfg.profiles_dir).unwrap_or_else(|e| {
        tracing::error!("MQTT profiles: {e}");
        BTreeMap::new()
    })
}

/// Runs the gateway until `cancel` fires, then stops polling, syncs the queue and gives the
/// uplink `drain_on_shutdown_ms` to send what is queued. Returns once everything has stopped.
pub async fn run(cfg: GatewayConfig, profiles: BTreeMap<String, Profile>, cancel: CancellationToken) -> Result<(), GatewayError> {
    run_with_reload(cfg, profiles, cancel, None).await
}

/// Like [`run`]; with a configuration path, SIGHUP re-reads it and replaces the device list
/// (an invalid file is reported and the running list kept).
pub async fn run_with_reload(
    cfg: GatewayConfig,
    profiles: BTreeMap<String, Profile>,
    cancel: CancellationToken,
    config_path: Option<std::path::PathBuf>,
) -> Result<(), GatewayError> {
    let (queue_dir, uplink_url) = (cfg.queue.dir.clone(), cfg.uplink.url.clone());
    let (handle, tasks) = start(cfg, profiles, cancel.clone()).await?;
    #[cfg(unix)]
    if let Some(path) = config_path {
        let h = handle.clone();
        let c = cancel.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = c.cancelled() => break,
                        r = hup.recv() => if r.is_none() { break },
                    }
                    match GatewayConfig::load(&path).map_err(GatewayError::from).and_then(|cfg| load_and_validate(&cfg).map(|p| (cfg, p))) {
                        Ok((cfg, profiles)) => {
                            if cfg.queue.dir != queue_dir || cfg.uplink.url != uplink_url {
                                tracing::warn!("SIGHUP reloads the device list only; queue and uplink changes take effect at the next start");
                            }
                            let mqtt_profiles = mqtt_profiles_for(&cfg);
                            let field_profiles = field_profiles_for(&cfg);
                            h.reload(Reload { cfg, profiles, mqtt_profiles, field_profiles }).await;
                        }
                        Err(e) => tracing::error!("SIGHUP: {} is not valid, keeping the running device list:\n{e}", path.display()),
                    }
                }
            });
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let st = handle.status();
    tracing::info!(queued = st.queue_depth, acked_through = st.uplink.acked_through, "gateway stopped");
    Ok(())
}

/// Starts the gateway's tasks; returns its handle and the tasks to await after cancelling.
pub async fn start(
    cfg: GatewayConfig,
    profiles: BTreeMap<String, Profile>,
    cancel: CancellationToken,
) -> Result<(Handle, Vec<tokio::task::JoinHandle<()>>), GatewayError> {
    let metrics = Metrics::new();
    let queue = open_queue(&cfg, &metrics)?;
    let queue: SharedQueue = Arc::new(Mutex::new(queue));
    let notify = Arc::new(Notify::new());
    let devices: StatusMap = Arc::new(Mutex::new(BTreeMap::new()));
    let uplink_status = Arc::new(Mutex::new(UplinkStatus { acked_through: queue.lock().map(|q| q.acked()).unwrap_or(0), ..Default::default() }));
    let handle = Handle {
        gateway_id: cfg.gateway_id.clone(),
        metrics: metrics.clone(),
        queue: queue.clone(),
        devices: devices.clone(),
        uplink: uplink_status.clone(),
        reload: mpsc::channel(1).0,
    };

    if let Some(addr) = &cfg.health.listen {
        serve_health(addr, handle.clone(), cancel.clone()).await?;
    }

    // Pollers -> channel -> queue writer thread.
    let (tx, rx) = mpsc::channel::<Sample>(4096);
    let mut poll_cancel = CancellationToken::new();
    let first = Reload { profiles, mqtt_profiles: mqtt_profiles_for(&cfg), field_profiles: field_profiles_for(&cfg), cfg: cfg.clone() };
    let mut pollers = spawn_pollers(&first, &tx, &metrics, &devices, &poll_cancel);
    let (reload_tx, mut reload_rx) = mpsc::channel::<Reload>(4);
    let writer = queue::writer::spawn(rx, queue.clone(), notify.clone(), metrics.clone(), cfg.queue.when_full, cfg.queue.thin_period_ms)
        .map_err(|e| GatewayError::Queue(queue::QueueError::Io { path: cfg.queue.dir.clone(), source: e }))?;

    let common = Common::new(
        cfg.uplink.clone(),
        cfg.gateway_id.clone(),
        queue.clone(),
        notify.clone(),
        metrics.clone(),
        uplink_status,
        cfg.queue.dir.join("dead-letter.jsonl"),
    );
    // The uplink starts its drain only after pollers have stopped and the writer has synced.
    let uplink_cancel = CancellationToken::new();
    let uplink_task = if cfg.uplink.is_mqtt() {
        tokio::spawn(uplink::mqtt::run(common, uplink_cancel.clone()))
    } else {
        tokio::spawn(uplink::http::run(common, uplink_cancel.clone()))
    };
    let (sup_metrics, sup_devices) = (metrics.clone(), devices.clone());
    let supervisor = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(r) = reload_rx.recv() => {
                    // Stop the pollers, then start the new device list; the queue, the writer
                    // and the uplink go on untouched, so nothing queued is lost.
                    poll_cancel.cancel();
                    for p in pollers.drain(..) {
                        let _ = p.await;
                    }
                    sup_devices.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    poll_cancel = CancellationToken::new();
                    pollers = spawn_pollers(&r, &tx, &sup_metrics, &sup_devices, &poll_cancel);
                    tracing::info!(devices = r.cfg.devices.len(), mqtt_devices = r.cfg.mqtt_devices.len(), "device list reloaded");
                }
            }
        }
        poll_cancel.cancel();
        for p in pollers {
            let _ = p.await;
        }
        drop(tx);
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        notify.notify_one();
        uplink_cancel.cancel();
        let _ = uplink_task.await;
    });
    let handle = Handle { reload: reload_tx, ..handle };
    Ok((handle, vec![supervisor]))
}

/// Opens the queue, and reports in the log and the metrics what its recovery found.
fn open_queue(cfg: &GatewayConfig, metrics: &Metrics) -> Result<Queue, GatewayError> {
    let queue = Queue::open(&cfg.queue.dir, cfg.queue.segment_bytes, cfg.queue.max_bytes)?;
    metrics.queue_max_bytes.set(i64::try_from(cfg.queue.max_bytes).unwrap_or(i64::MAX));
    metrics.queue_depth.set(queue.depth() as i64);
    metrics.queue_bytes.set(queue.bytes() as i64);
    if queue.recovery.truncated_bytes > 0 {
        metrics.queue_truncated_bytes.inc_by(queue.recovery.truncated_bytes);
    }
    if queue.recovery.lost_samples > 0 {
        metrics.queue_lost_samples.inc_by(queue.recovery.lost_samples);
        let seqs: Vec<String> = queue.recovery.lost_ranges.iter().map(|&(a, z)| if a == z { a.to_string() } else { format!("{a}..={z}") }).collect();
        tracing::error!(
            lost_samples = queue.recovery.lost_samples,
            lost_seqs = %seqs.join(", "),
            removed_bytes = queue.recovery.truncated_bytes,
            "corrupt records in the queue: these unsent samples are lost; every other record is kept"
        );
    }
    if queue.recovery.created {
        tracing::warn!(
            dir = %cfg.queue.dir.display(),
            epoch = queue.epoch().unwrap_or_default(),
            "made a new queue (no queue in the directory): sequence numbers start at 1 under a new queue epoch"
        );
    }
    tracing::info!(
        gateway = %cfg.gateway_id,
        queued = queue.depth(),
        next_seq = queue.next_seq(),
        epoch = queue.epoch().unwrap_or("none"),
        truncated_bytes = queue.recovery.truncated_bytes,
        "queue opened"
    );
    Ok(queue)
}

/// A new device list for a running gateway: the configuration it comes from and its profiles.
/// Only `device`, `mqtt_device`, `mqtt_input` and `modbus` take effect on a reload.
pub struct Reload {
    pub cfg: GatewayConfig,
    pub profiles: BTreeMap<String, Profile>,
    pub mqtt_profiles: BTreeMap<String, MqttProfile>,
    /// DL/T 645 and CJ/T 188 profiles.
    pub field_profiles: BTreeMap<String, field::profile::FieldProfile>,
}

/// The DL/T 645 and CJ/T 188 profiles a configuration needs (none when no device uses one).
fn field_profiles_for(cfg: &GatewayConfig) -> BTreeMap<String, field::profile::FieldProfile> {
    let all = field::profile::load_field_dir(&cfg.profiles_dir).unwrap_or_else(|e| {
        tracing::error!("DL/T 645 / CJ/T 188 profiles: {e}");
        BTreeMap::new()
    });
    all.into_iter().filter(|(n, _)| cfg.devices.iter().any(|d| &d.profile == n)).collect()
}

/// Starts one poller per Modbus endpoint, and the MQTT meter input when configured.
fn spawn_pollers(
    r: &Reload,
    tx: &mpsc::Sender<Sample>,
    metrics: &Metrics,
    status: &StatusMap,
    cancel: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut by_bus: BTreeMap<String, (transport::Transport, Vec<_>)> = BTreeMap::new();
    for d in &r.cfg.devices {
        if let (Some(p), Ok(t)) = (r.profiles.get(&d.profile), d.transport()) {
            by_bus.entry(t.bus()).or_insert_with(|| (t, Vec::new())).1.push((d.clone(), Arc::new(p.clone())));
        }
    }
    let mut tasks: Vec<_> = by_bus
        .into_iter()
        .map(|(_, (transport, devs))| {
            tokio::spawn(poll::run_bus(transport, devs, r.cfg.modbus.clone(), tx.clone(), metrics.clone(), status.clone(), cancel.clone()))
        })
        .collect();
    let mut field_buses: BTreeMap<String, (transport::Transport, Vec<_>)> = BTreeMap::new();
    for d in &r.cfg.devices {
        if let Some(p) = r.field_profiles.get(&d.profile) {
            if let Ok(t) = d.transport_with(p.line()) {
                field_buses.entry(t.bus()).or_insert_with(|| (t, Vec::new())).1.push((d.clone(), Arc::new(p.clone())));
            }
        }
    }
    tasks.extend(field_buses.into_iter().map(|(_, (transport, devs))| {
        tokio::spawn(field::poll::run_field_bus(transport, devs, r.cfg.modbus.clone(), tx.clone(), metrics.clone(), status.clone(), cancel.clone()))
    }));
    if let Some(input) = &r.cfg.mqtt_input {
        if !r.cfg.mqtt_devices.is_empty() {
            tasks.push(tokio::spawn(mqtt_in::run(
                input.clone(),
                r.cfg.mqtt_devices.clone(),
                r.mqtt_profiles.clone(),
                r.cfg.gateway_id.clone(),
                tx.clone(),
                metrics.clone(),
                cancel.clone(),
            )));
        }
    }
    tasks
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves `/healthz`, `/metrics` and `/status` on `addr` until `cancel`.
async fn serve_health(addr: &str, handle: Handle, cancel: CancellationToken) -> Result<(), GatewayError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| GatewayError::Listen { addr: addr.to_string(), source })?;
    let app = health_app(handle);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
    });
    Ok(())
}

fn health_app(handle: Handle) -> axum::Router {
    use axum::routing::get;
    let h1 = handle.clone();
    let h2 = handle;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let h = h1.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], h.metrics.render()) }
            }),
        )
        .route(
            "/status",
            get(move || {
                let h = h2.clone();
                async move { axum::Json(h.status()) }
            }),
        )
}
