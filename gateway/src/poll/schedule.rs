//! The scheduler of one bus, whatever its protocol: one request in flight at a time, the device
//! that is due first polled next, each device with its own interval, failing devices and broken
//! connections backed off ([`crate::backoff`]), `/status` and the metrics kept, samples sent on.
//! A protocol plugs in as a [`BusDriver`] (Modbus: [`super::modbus`]; DL/T 645 and CJ/T 188:
//! [`crate::field::poll`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_wire::{Quantity, Sample};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::settings::{DeviceConfig, ModbusConfig};
use crate::backoff::Jitter;
use crate::metrics::Metrics;
use crate::time::now_ms;
use crate::transport::ReadError;

/// What `/status` shows of a device.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeviceStatus {
    pub meter: String,
    pub endpoint: String,
    pub up: bool,
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// What the meter reports of itself (CJ/T 188 status bits such as "valve closed; battery
    /// low", working hours), from the last good poll.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

pub type StatusMap = Arc<Mutex<BTreeMap<String, DeviceStatus>>>;

struct Device {
    cfg: DeviceConfig,
    mcfg: ModbusConfig,
    failures: u32,
    next_due: Instant,
}

/// What one poll of one device gave, whatever the protocol.
#[derive(Debug, Default)]
pub struct PollOutcome {
    pub values: BTreeMap<Quantity, f64>,
    pub unavailable: Vec<Quantity>,
    /// Duration of every request sent.
    pub request_durations: Vec<Duration>,
    pub errors: Vec<ReadError>,
    /// Some request got a well-formed answer (the bus works).
    pub answered: bool,
    /// What the device reports of itself, for `/status`.
    pub state: Option<String>,
    /// Frames dropped for a wrong checksum.
    pub bad_frames: u64,
}

/// One protocol's way of opening a bus and reading a device on it; [`schedule`] does the rest
/// (one request in flight, intervals, back-off, reconnects, status, samples).
pub trait BusDriver: Send {
    type Conn: Send;
    fn connect(&mut self, timeout: Duration) -> impl std::future::Future<Output = Result<Self::Conn, ReadError>> + Send;
    /// Reads device `device` (its index in the scheduler's list) once.
    fn poll<'a>(&'a mut self, conn: &'a mut Self::Conn, device: usize, mcfg: &'a ModbusConfig) -> impl std::future::Future<Output = PollOutcome> + Send + 'a;
}

/// Polls every device of one bus through `driver` until cancelled, sending samples to `out`
/// (see [`super::run_bus`]; the field buses of [`crate::field`] use it with their own driver).
///
/// One request is in flight at a time. The device that is due first is polled next. A device
/// that fails is backed off (its interval doubled per failure up to `max_backoff_ms`, with
/// jitter) and the others keep their own intervals. When the connection breaks, it is reopened
/// no sooner than the reconnect back-off allows.
#[allow(clippy::too_many_arguments)]
pub async fn schedule<D: BusDriver>(
    bus: String,
    mut driver: D,
    devices: Vec<DeviceConfig>,
    mcfg: ModbusConfig,
    out: mpsc::Sender<Sample>,
    metrics: Metrics,
    status: StatusMap,
    cancel: CancellationToken,
) {
    let start = Instant::now();
    let mut devs = first_polls(devices, &mcfg, start);
    register(&status, &devs, &bus);
    let connect_delay = Duration::from_millis(devs.iter().map(|d| d.mcfg.connect_delay_ms).max().unwrap_or(0));
    let mut conn: Connection<D::Conn> = Connection::new(&bus, start);
    loop {
        let Some(idx) = (0..devs.len()).min_by_key(|&i| devs[i].next_due) else { return };
        let wake = if conn.link.is_none() { devs[idx].next_due.max(conn.next_connect) } else { devs[idx].next_due };
        // A timer rounds up to the next millisecond: only sleep when the device is not due yet.
        if cancel.is_cancelled() {
            break;
        }
        if wake > Instant::now() {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        let dev = &mut devs[idx];
        let due = dev.next_due;
        let t = now_ms();
        let mut read = conn.poll(&mut driver, idx, &dev.mcfg, &mcfg, connect_delay, &bus).await;
        count(&metrics, &bus, &read);
        conn.after_poll(&read, &mcfg);
        let ok = !read.values.is_empty() || (read.errors.is_empty() && !read.unavailable.is_empty());
        if ok {
            dev.succeeded(due);
            if !read.values.is_empty() {
                metrics.samples.inc();
                let sample = Sample { meter: dev.cfg.meter.clone(), t, v: std::mem::take(&mut read.values) };
                if out.send(sample).await.is_err() {
                    break;
                }
            }
        } else {
            dev.failed(&mut conn.jitter, &mcfg, &bus, &read);
        }
        record_status(&status, &metrics, dev, &read, ok, t);
    }
}

/// The devices of a bus, their first polls spread a little so that devices with one interval
/// do not all fire at once.
fn first_polls(devices: Vec<DeviceConfig>, mcfg: &ModbusConfig, start: Instant) -> Vec<Device> {
    devices
        .into_iter()
        .enumerate()
        .map(|(i, cfg)| {
            let next_due = start + Duration::from_millis(i as u64 * 20);
            Device { mcfg: cfg.modbus(mcfg), cfg, failures: 0, next_due }
        })
        .collect()
}

/// Shows the bus's devices in `/status` before their first poll.
fn register(status: &StatusMap, devs: &[Device], bus: &str) {
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    for d in devs {
        st.insert(d.cfg.meter.clone(), DeviceStatus { meter: d.cfg.meter.clone(), endpoint: bus.to_string(), ..Default::default() });
    }
}

/// The bus's connection: open or not, when it may be opened again, and the jitter of every
/// back-off on this bus.
struct Connection<C> {
    link: Option<C>,
    connect_failures: u32,
    /// Polls in a row that timed out without any answer.
    silent_polls: u32,
    next_connect: Instant,
    jitter: Jitter,
}

impl<C> Connection<C> {
    /// A bus not connected yet, whose first connection may be made from `start`.
    fn new(bus: &str, start: Instant) -> Connection<C> {
        Connection { link: None, connect_failures: 0, silent_polls: 0, next_connect: start, jitter: Jitter::new(bus) }
    }

    /// Polls device `idx`, connecting first if the bus has no connection; a failed connection
    /// is the poll's error, and sets when the next attempt may be made.
    async fn poll<D: BusDriver<Conn = C>>(
        &mut self,
        driver: &mut D,
        idx: usize,
        dev_mcfg: &ModbusConfig,
        mcfg: &ModbusConfig,
        connect_delay: Duration,
        bus: &str,
    ) -> PollOutcome {
        if self.link.is_none() {
            match driver.connect(Duration::from_millis(dev_mcfg.timeout_ms)).await {
                Ok(conn) => {
                    if self.connect_failures > 0 {
                        tracing::info!(%bus, "connected again");
                    }
                    self.connect_failures = 0;
                    tokio::time::sleep(connect_delay).await;
                    self.link = Some(conn);
                }
                Err(e) => {
                    self.connect_failures = self.connect_failures.saturating_add(1);
                    let wait = self.jitter.reconnect_wait(
                        Duration::from_millis(mcfg.reconnect_min_ms),
                        self.connect_failures,
                        Duration::from_millis(mcfg.reconnect_max_ms),
                    );
                    self.next_connect = Instant::now() + wait;
                    tracing::warn!(%bus, failures = self.connect_failures, "cannot connect: {e}; next attempt in {} ms", wait.as_millis());
                    return PollOutcome { errors: vec![e], ..Default::default() };
                }
            }
        }
        match self.link.as_mut() {
            Some(l) => driver.poll(l, idx, dev_mcfg).await,
            None => PollOutcome::default(),
        }
    }

    /// Closes the connection when the poll showed it broken. A transport error breaks it. A
    /// timeout alone is what an absent or dead device on a healthy bus gives, so the connection
    /// is reopened only when the next device does not answer either.
    fn after_poll(&mut self, read: &PollOutcome, mcfg: &ModbusConfig) {
        if read.answered {
            self.silent_polls = 0;
        } else if read.errors.iter().any(|e| matches!(e, ReadError::Timeout(_))) {
            self.silent_polls += 1;
        }
        let broken = read.errors.iter().any(|e| matches!(e, ReadError::Transport(_))) || self.silent_polls >= 2;
        if broken && self.link.is_some() {
            self.link = None;
            self.silent_polls = 0;
            self.next_connect = Instant::now() + self.jitter.apply(Duration::from_millis(mcfg.reconnect_min_ms));
        }
    }
}

impl Device {
    /// A good poll: failures forgotten, the next poll on the device's grid (ticks missed while
    /// polling took long are skipped).
    fn succeeded(&mut self, due: Instant) {
        if self.failures > 0 {
            tracing::info!(meter = %self.cfg.meter, "device answers again");
        }
        self.failures = 0;
        let interval = Duration::from_millis(self.cfg.interval_ms);
        let mut next = due + interval;
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        self.next_due = next;
    }

    /// A failed poll: the next one backed off ([`Jitter::device_wait`]).
    fn failed(&mut self, jitter: &mut Jitter, mcfg: &ModbusConfig, bus: &str, read: &PollOutcome) {
        self.failures = self.failures.saturating_add(1);
        let interval = Duration::from_millis(self.cfg.interval_ms);
        let max = Duration::from_millis(mcfg.max_backoff_ms.max(self.cfg.interval_ms));
        let wait = jitter.device_wait(interval, self.failures, max);
        self.next_due = Instant::now() + wait;
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(meter = %self.cfg.meter, %bus, failures = self.failures, error = ?read.errors.first(), "poll failed; next attempt in {} ms", wait.as_millis());
        }
    }
}

/// Counts a poll's requests, latencies, dropped frames and errors.
fn count(metrics: &Metrics, bus: &str, read: &PollOutcome) {
    for d in &read.request_durations {
        metrics.modbus_requests.with_label_values(&[bus]).inc();
        metrics.modbus_latency.with_label_values(&[bus]).observe(d.as_secs_f64());
    }
    if read.bad_frames > 0 {
        metrics.bad_frames.with_label_values(&[bus]).inc_by(read.bad_frames);
    }
    for e in &read.errors {
        metrics.modbus_errors.with_label_values(&[bus, e.kind()]).inc();
    }
}

/// Shows a poll in `/status` and in the device gauges.
fn record_status(status: &StatusMap, metrics: &Metrics, dev: &Device, read: &PollOutcome, ok: bool, t: i64) {
    {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = st.get_mut(&dev.cfg.meter) {
            s.up = ok;
            s.consecutive_failures = dev.failures;
            if ok {
                s.last_ok_ms = Some(t);
                s.state.clone_from(&read.state);
            } else {
                s.last_error = read.errors.first().map(ToString::to_string);
            }
        }
        metrics.devices_up.set(st.values().filter(|s| s.up).count() as i64);
    }
    metrics.device_up.with_label_values(&[dev.cfg.meter.as_str()]).set(i64::from(ok));
}
