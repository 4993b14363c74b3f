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

pub mod config;
pub mod metrics;
pub mod poll;
pub mod probe;
pub mod profile;
pub mod queue;
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
use crate::profile::Profile;
use crate::queue::Queue;
use crate::uplink::{SharedQueue, Uplink, UplinkStatus};

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
}

impl Handle {
    pub fn status(&self) -> Status {
        let (depth, bytes, dropped, next_seq, oldest) = {
            let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
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
    cfg.validate(&profiles)?;
    Ok(profiles)
}

/// Runs the gateway until `cancel` fires, then stops polling, syncs the queue and gives the
/// uplink `drain_on_shutdown_ms` to send what is queued. Returns once everything has stopped.
pub async fn run(cfg: GatewayConfig, profiles: BTreeMap<String, Profile>, cancel: CancellationToken) -> Result<(), GatewayError> {
    let (handle, tasks) = start(cfg, profiles, cancel).await?;
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
    let queue = Queue::open(&cfg.queue.dir, cfg.queue.segment_bytes, cfg.queue.max_bytes)?;
    if queue.recovery.truncated_bytes > 0 {
        metrics.queue_truncated_bytes.inc_by(queue.recovery.truncated_bytes);
    }
    tracing::info!(
        gateway = %cfg.gateway_id,
        queued = queue.depth(),
        next_seq = queue.next_seq(),
        truncated_bytes = queue.recovery.truncated_bytes,
        "queue opened"
    );
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
    };

    if let Some(addr) = &cfg.health.listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| GatewayError::Listen { addr: addr.clone(), source })?;
        let app = health_app(handle.clone());
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await;
        });
    }

    // Pollers -> channel -> queue writer thread.
    let (tx, mut rx) = mpsc::channel::<Sample>(4096);
    let poll_cancel = cancel.child_token();
    let mut by_bus: BTreeMap<String, (transport::Transport, Vec<_>)> = BTreeMap::new();
    for d in &cfg.devices {
        if let (Some(p), Ok(t)) = (profiles.get(&d.profile), d.transport()) {
            by_bus.entry(t.bus()).or_insert_with(|| (t, Vec::new())).1.push((d.clone(), Arc::new(p.clone())));
        }
    }
    let mut pollers = Vec::new();
    for (_, (transport, devs)) in by_bus {
        pollers.push(tokio::spawn(poll::run_bus(
            transport,
            devs,
            cfg.modbus.clone(),
            tx.clone(),
            metrics.clone(),
            devices.clone(),
            poll_cancel.clone(),
        )));
    }
    drop(tx);

    let wq = queue.clone();
    let wn = notify.clone();
    let wm = metrics.clone();
    let writer = std::thread::Builder::new()
        .name("queue-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut q = wq.lock().unwrap_or_else(|e| e.into_inner());
                let mut next = Some(first);
                while let Some(s) = next {
                    let body = serde_json::to_vec(&s).unwrap_or_default();
                    if let Err(e) = q.append(&body) {
                        if matches!(e, queue::QueueError::Full { .. }) {
                            wm.queue_dropped.inc();
                        }
                        tracing::error!(meter = %s.meter, "sample not queued: {e}");
                    }
                    next = rx.try_recv().ok();
                }
                if let Err(e) = q.sync() {
                    tracing::error!("queue sync failed: {e}");
                }
                wm.queue_depth.set(q.depth() as i64);
                wm.queue_bytes.set(q.bytes() as i64);
                drop(q);
                wn.notify_one();
            }
        })
        .map_err(|e| GatewayError::Queue(queue::QueueError::Io { path: cfg.queue.dir.clone(), source: e }))?;

    let uplink = Uplink {
        cfg: cfg.uplink.clone(),
        gateway_id: cfg.gateway_id.clone(),
        queue: queue.clone(),
        notify: notify.clone(),
        metrics: metrics.clone(),
        status: uplink_status,
        dead_letter_path: cfg.queue.dir.join("dead-letter.jsonl"),
    };
    // The uplink starts its drain only after pollers have stopped and the writer has synced.
    let uplink_cancel = CancellationToken::new();
    let uplink_task = tokio::spawn(uplink.run(uplink_cancel.clone()));
    let supervisor = tokio::spawn(async move {
        cancel.cancelled().await;
        for p in pollers {
            let _ = p.await;
        }
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        notify.notify_one();
        uplink_cancel.cancel();
        let _ = uplink_task.await;
    });
    Ok((handle, vec![supervisor]))
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
