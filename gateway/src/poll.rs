//! The Modbus polling engine.
//!
//! One task per bus ([`Transport::bus`]: a TCP endpoint, a serial server, a serial port): the
//! devices of a bus share one connection and are read one request at a time, which is what
//! RS-485 and serial servers need; separate buses are polled in parallel. Each device has its
//! own interval. A device that fails is backed off exponentially with jitter (up to
//! `max_backoff_ms`) without delaying the other devices of its bus, and comes back by itself on
//! the first good poll. A broken connection is reopened with its own back-off and jitter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use energy_wire::{Quantity, Sample};
use tokio::sync::mpsc;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;

use crate::config::{DeviceConfig, ModbusConfig};
use crate::metrics::Metrics;
use crate::profile::{plan_reads, Block, Function, Profile};
use crate::transport::Transport;

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("timeout after {0} ms")]
    Timeout(u64),
    #[error("transport: {0}")]
    Transport(String),
    #[error("device answered exception {0}")]
    Exception(String),
    #[error("short response: {got} of {want} registers")]
    Short { got: usize, want: u16 },
    /// Frames came back but none was a valid answer (wrong checksum: noise, or wrong baud rate
    /// or parity; or the answer to another request).
    #[error("{0}")]
    Frame(String),
}

impl ReadError {
    /// Label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Timeout(_) => "timeout",
            ReadError::Transport(_) => "transport",
            ReadError::Exception(_) => "exception",
            ReadError::Short { .. } => "short_response",
            ReadError::Frame(_) => "bad_frame",
        }
    }

    fn breaks_connection(&self) -> bool {
        matches!(self, ReadError::Timeout(_) | ReadError::Transport(_))
    }
}

/// One executed read, for the probe's report.
#[derive(Debug, Clone)]
pub struct ReadLog {
    pub function: Function,
    pub address: u16,
    pub count: u16,
    pub result: Result<(), ReadError>,
    pub duration: Duration,
}

/// Result of reading one device once.
#[derive(Debug, Clone, Default)]
pub struct DeviceRead {
    pub values: BTreeMap<Quantity, f64>,
    /// Quantities whose registers were read but held NaN or a "not available" value.
    pub unavailable: Vec<Quantity>,
    pub reads: Vec<ReadLog>,
    pub errors: Vec<ReadError>,
    /// The plan after any splitting of blocks the device refused.
    pub plan: Vec<Block>,
    /// The registers each answered block returned (what the probe's diagnosis looks at).
    pub answers: Vec<(Block, Vec<u16>)>,
}

/// One connection to a bus, with the pacing its frames need: before each request the link waits
/// until `gap` has passed since the end of the last answer (the RTU inter-frame silence, or the
/// configured delay between requests, whichever is longer).
pub struct Link {
    ctx: Context,
    silence: Duration,
    last: Option<Instant>,
}

impl Link {
    /// Wraps a connected context; `silence` is the transport's least gap between frames.
    pub fn new(ctx: Context, silence: Duration) -> Link {
        Link { ctx, silence, last: None }
    }

    /// Reads one block from `unit` within `timeout`, after the gap since the last frame.
    pub async fn read(&mut self, unit: u8, b: &Block, timeout: Duration, delay: Duration) -> Result<Vec<u16>, ReadError> {
        if let Some(due) = self.last.map(|last| last + self.silence.max(delay)).filter(|&due| due > Instant::now()) {
            tokio::time::sleep_until(due.into()).await;
        }
        self.ctx.set_slave(Slave(unit));
        let ctx = &mut self.ctx;
        let fut = async {
            match b.function {
                Function::Holding => ctx.read_holding_registers(b.address, b.count).await,
                Function::Input => ctx.read_input_registers(b.address, b.count).await,
            }
        };
        let r = tokio::time::timeout(timeout, fut).await;
        self.last = Some(Instant::now());
        match r {
            Err(_) => Err(ReadError::Timeout(timeout.as_millis() as u64)),
            Ok(Err(e)) => Err(ReadError::Transport(e.to_string())),
            Ok(Ok(Err(code))) => Err(ReadError::Exception(format!("{code:?}"))),
            Ok(Ok(Ok(regs))) if regs.len() != usize::from(b.count) => {
                Err(ReadError::Short { got: regs.len(), want: b.count })
            }
            Ok(Ok(Ok(regs))) => Ok(regs),
        }
    }
}

/// Reads every block of `plan` from the device at `unit` and decodes the values.
/// A block refused with "illegal data address" is split into single-register reads, which are
/// kept in the returned plan. Stops early on an error that breaks the connection.
pub async fn read_device(link: &mut Link, unit: u8, profile: &Profile, plan: &[Block], ct: f64, pt: f64, mcfg: &ModbusConfig) -> DeviceRead {
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let delay = Duration::from_millis(mcfg.request_delay_ms);
    let mut out = DeviceRead::default();
    let mut queue: std::collections::VecDeque<Block> = plan.iter().cloned().collect();
    let mut answers: Vec<(Block, Vec<u16>)> = Vec::with_capacity(plan.len());
    while let Some(b) = queue.pop_front() {
        let mut attempt = 0;
        let result = loop {
            let start = Instant::now();
            let r = link.read(unit, &b, timeout, delay).await;
            out.reads.push(ReadLog {
                function: b.function,
                address: b.address,
                count: b.count,
                result: r.as_ref().map(|_| ()).map_err(Clone::clone),
                duration: start.elapsed(),
            });
            match r {
                // A timeout or a short answer is retried on the same connection (noise on a
                // line); an exception is the device's answer and a transport error needs a
                // new connection.
                Err(ReadError::Timeout(_) | ReadError::Short { .. }) if attempt < mcfg.retries => {
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(regs) => answers.push((b, regs)),
            Err(ReadError::Exception(code))
                if code == format!("{:?}", ExceptionCode::IllegalDataAddress) && b.registers.len() + b.scale_factors.len() > 1 =>
            {
                tracing::info!(unit, address = b.address, count = b.count, "device refused a block read; splitting it");
                for s in b.split(&profile.registers).into_iter().rev() {
                    queue.push_front(s);
                }
            }
            Err(e) => {
                let fatal = e.breaks_connection();
                out.errors.push(e);
                out.plan.push(b);
                if fatal {
                    out.plan.extend(queue.drain(..));
                    break;
                }
            }
        }
    }
    let (values, unavailable) = decode_answers(profile, &answers, ct, pt);
    out.values = values;
    out.unavailable = unavailable;
    out.plan.extend(answers.iter().map(|(b, _)| b.clone()));
    out.plan.sort_by_key(|b| (b.function, b.address));
    out.answers = answers;
    out
}

/// Decodes the values of a profile from the answers to its planned reads (each answer holds
/// exactly its block's `count` registers, as [`read_device`] checks): scale factors first, as a
/// value may use one read by another block. Returns the values, and the quantities whose
/// registers held NaN or a "not available" value.
pub fn decode_answers(profile: &Profile, answers: &[(Block, Vec<u16>)], ct: f64, pt: f64) -> (BTreeMap<Quantity, f64>, Vec<Quantity>) {
    let mut sfs: BTreeMap<(Function, u16), u16> = BTreeMap::new();
    for (b, regs) in answers {
        for &a in &b.scale_factors {
            if let Some(&v) = regs.get(usize::from(a.wrapping_sub(b.address))) {
                sfs.insert((b.function, a), v);
            }
        }
    }
    let (mut values, mut unavailable) = (BTreeMap::new(), Vec::new());
    for (b, regs) in answers {
        for &i in &b.registers {
            let Some(r) = profile.registers.get(i) else { continue };
            let off = usize::from(r.address.wrapping_sub(b.address));
            let Some(slice) = regs.get(off..off + usize::from(r.ty.registers())) else {
                unavailable.push(r.quantity);
                continue;
            };
            let sf = r.scale_factor.and_then(|a| sfs.get(&(r.function, a)).copied());
            match r.value_with_sf(slice, profile.order, sf, ct, pt) {
                Some(v) => {
                    values.insert(r.quantity, v);
                }
                None => unavailable.push(r.quantity),
            }
        }
    }
    (values, unavailable)
}

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

/// Modbus devices on one bus: their profiles and read plans (a plan shrinks to single reads
/// where a device refuses a block).
struct ModbusDriver {
    transport: Transport,
    silence: Duration,
    devices: Vec<(DeviceConfig, Arc<Profile>, Vec<Block>)>,
}

impl BusDriver for ModbusDriver {
    type Conn = Link;

    fn connect(&mut self, timeout: Duration) -> impl std::future::Future<Output = Result<Link, ReadError>> + Send {
        let (t, silence) = (self.transport.clone(), self.silence);
        async move { t.connect(timeout).await.map(|ctx| Link::new(ctx, silence)) }
    }

    fn poll<'a>(&'a mut self, conn: &'a mut Link, device: usize, mcfg: &'a ModbusConfig) -> impl std::future::Future<Output = PollOutcome> + Send + 'a {
        async move {
            let Some((cfg, profile, plan)) = self.devices.get_mut(device) else { return PollOutcome::default() };
            let mut r = read_device(conn, cfg.unit, profile, plan, cfg.ct_ratio, cfg.pt_ratio, mcfg).await;
            // The plan changes only when a device refused a block: no copy per poll.
            if r.plan != *plan {
                *plan = std::mem::take(&mut r.plan);
            }
            PollOutcome {
                answered: !r.answers.is_empty(),
                values: r.values,
                unavailable: r.unavailable,
                request_durations: r.reads.iter().map(|l| l.duration).collect(),
                errors: r.errors,
                state: None,
                bad_frames: 0,
            }
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A small xorshift generator for jitter, seeded from the clock and the bus name (no need for
/// cryptographic quality; only that buses and gateways do not retry in lockstep).
struct Jitter(u64);

impl Jitter {
    fn new(bus: &str) -> Jitter {
        let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        for b in bus.bytes() {
            seed = seed.rotate_left(5) ^ u64::from(b);
        }
        Jitter(seed | 1)
    }

    /// `d` scaled by a random factor in [0.5, 1.0).
    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let f = 0.5 + (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
        d.mul_f64(f)
    }
}

/// `base x 2^(n-1)`, at most `max` (n >= 1).
pub fn backoff(base: Duration, n: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << n.clamp(1, 17).saturating_sub(1)).min(max)
}

/// Polls every device of one bus until cancelled, sending samples to `out`.
///
/// One request is in flight at a time; frames are paced by the [`Link`]. The device that is due
/// first is polled next. A device that fails is backed off (its interval doubled per failure up
/// to `max_backoff_ms`, with jitter) and the others keep their own intervals. When the
/// connection breaks, it is reopened no sooner than the reconnect back-off allows.
pub async fn run_bus(
    transport: Transport,
    devices: Vec<(DeviceConfig, Arc<Profile>)>,
    mcfg: ModbusConfig,
    out: mpsc::Sender<Sample>,
    metrics: Metrics,
    status: StatusMap,
    cancel: CancellationToken,
) {
    let silence = transport.silence(Duration::from_micros(mcfg.rtu_min_silence_us));
    let cfgs: Vec<DeviceConfig> = devices.iter().map(|(c, _)| c.clone()).collect();
    let devices = devices
        .into_iter()
        .map(|(cfg, profile)| {
            let plan = plan_reads(&profile.registers, &profile.limits);
            (cfg, profile, plan)
        })
        .collect();
    let bus = transport.bus();
    schedule(bus, ModbusDriver { transport, silence, devices }, cfgs, mcfg, out, metrics, status, cancel).await;
}

/// Polls every device of one bus through `driver` until cancelled, sending samples to `out`
/// (see [`run_bus`]; the field buses of [`crate::field`] use it with their own driver).
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
    let mut devs: Vec<Device> = devices
        .into_iter()
        .enumerate()
        .map(|(i, cfg)| {
            // Spread first polls a little so that devices with one interval do not all fire at once.
            let next_due = start + Duration::from_millis(i as u64 * 20);
            Device { mcfg: cfg.modbus(&mcfg), cfg, failures: 0, next_due }
        })
        .collect();
    {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        for d in &devs {
            st.insert(d.cfg.meter.clone(), DeviceStatus { meter: d.cfg.meter.clone(), endpoint: bus.clone(), ..Default::default() });
        }
    }
    let connect_delay = Duration::from_millis(devs.iter().map(|d| d.mcfg.connect_delay_ms).max().unwrap_or(0));
    let mut jitter = Jitter::new(&bus);
    let mut link: Option<D::Conn> = None;
    let mut connect_failures = 0u32;
    let mut silent_polls = 0u32;
    let mut next_connect = start;
    loop {
        let Some(idx) = (0..devs.len()).min_by_key(|&i| devs[i].next_due) else { return };
        let wake = if link.is_none() { devs[idx].next_due.max(next_connect) } else { devs[idx].next_due };
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
        let connected = match link {
            Some(ref mut l) => Ok(l),
            None => match driver.connect(Duration::from_millis(dev.mcfg.timeout_ms)).await {
                Ok(conn) => {
                    if connect_failures > 0 {
                        tracing::info!(%bus, "connected again");
                    }
                    connect_failures = 0;
                    tokio::time::sleep(connect_delay).await;
                    Ok(link.insert(conn))
                }
                Err(e) => {
                    connect_failures = connect_failures.saturating_add(1);
                    let wait = jitter.apply(backoff(
                        Duration::from_millis(mcfg.reconnect_min_ms),
                        connect_failures,
                        Duration::from_millis(mcfg.reconnect_max_ms),
                    ));
                    next_connect = Instant::now() + wait;
                    tracing::warn!(%bus, failures = connect_failures, "cannot connect: {e}; next attempt in {} ms", wait.as_millis());
                    Err(e)
                }
            },
        };
        let mut read = match connected {
            Ok(l) => driver.poll(l, idx, &dev.mcfg).await,
            Err(e) => PollOutcome { errors: vec![e], ..Default::default() },
        };
        for d in &read.request_durations {
            metrics.modbus_requests.with_label_values(&[bus.as_str()]).inc();
            metrics.modbus_latency.with_label_values(&[bus.as_str()]).observe(d.as_secs_f64());
        }
        if read.bad_frames > 0 {
            metrics.bad_frames.with_label_values(&[bus.as_str()]).inc_by(read.bad_frames);
        }
        for e in &read.errors {
            metrics.modbus_errors.with_label_values(&[bus.as_str(), e.kind()]).inc();
        }
        // A transport error breaks the connection. A timeout alone is what an absent or dead
        // device on a healthy bus gives, so the connection is reopened only when the next
        // device does not answer either.
        if read.answered {
            silent_polls = 0;
        } else if read.errors.iter().any(|e| matches!(e, ReadError::Timeout(_))) {
            silent_polls += 1;
        }
        let broken = read.errors.iter().any(|e| matches!(e, ReadError::Transport(_))) || silent_polls >= 2;
        if broken && link.is_some() {
            link = None;
            silent_polls = 0;
            next_connect = Instant::now() + jitter.apply(Duration::from_millis(mcfg.reconnect_min_ms));
        }
        let ok = !read.values.is_empty() || (read.errors.is_empty() && !read.unavailable.is_empty());
        let interval = Duration::from_millis(dev.cfg.interval_ms);
        if ok {
            if dev.failures > 0 {
                tracing::info!(meter = %dev.cfg.meter, "device answers again");
            }
            dev.failures = 0;
            // Next tick on the device's grid; skip ticks missed while polling took long.
            let mut next = due + interval;
            let now = Instant::now();
            while next <= now {
                next += interval;
            }
            dev.next_due = next;
            if !read.values.is_empty() {
                metrics.samples.inc();
                let sample = Sample { meter: dev.cfg.meter.clone(), t, v: std::mem::take(&mut read.values) };
                if out.send(sample).await.is_err() {
                    break;
                }
            }
        } else {
            dev.failures = dev.failures.saturating_add(1);
            let max = Duration::from_millis(mcfg.max_backoff_ms.max(dev.cfg.interval_ms));
            let wait = if dev.failures == 1 { interval } else { jitter.apply(backoff(interval, dev.failures, max)).max(interval) };
            dev.next_due = Instant::now() + wait;
            if dev.failures == 1 || dev.failures.is_power_of_two() {
                tracing::warn!(meter = %dev.cfg.meter, %bus, failures = dev.failures, error = ?read.errors.first(), "poll failed; next attempt in {} ms", wait.as_millis());
            }
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        let got: Vec<u64> = (1..=6).map(|n| backoff(s, n, max).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(s, u32::MAX, Duration::MAX), Duration::from_secs(65_536));
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole() {
        let mut j = Jitter::new("tcp://127.0.0.1:502");
        let d = Duration::from_millis(1000);
        let xs: Vec<Duration> = (0..1000).map(|_| j.apply(d)).collect();
        assert!(xs.iter().all(|x| *x >= d / 2 && *x < d));
        // Not constant: retries of several buses spread out.
        assert!(xs.iter().any(|x| *x != xs[0]));
    }
}
