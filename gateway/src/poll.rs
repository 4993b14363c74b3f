//! The Modbus polling engine.
//!
//! One task per endpoint (a `host:port`): devices behind one endpoint share one connection and
//! are read one request at a time, which is what serial servers need; separate endpoints are
//! polled in parallel. Each device has its own interval. A device that fails is backed off
//! exponentially (up to `max_backoff_ms`) without delaying the other devices of its endpoint,
//! and comes back by itself on the first good poll.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
}

impl ReadError {
    /// Label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Timeout(_) => "timeout",
            ReadError::Transport(_) => "transport",
            ReadError::Exception(_) => "exception",
            ReadError::Short { .. } => "short_response",
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
}

/// Reads one block with a timeout.
async fn read_block(ctx: &mut Context, b: &Block, timeout: Duration) -> Result<Vec<u16>, ReadError> {
    let fut = async {
        match b.function {
            Function::Holding => ctx.read_holding_registers(b.address, b.count).await,
            Function::Input => ctx.read_input_registers(b.address, b.count).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ReadError::Timeout(timeout.as_millis() as u64)),
        Ok(Err(e)) => Err(ReadError::Transport(e.to_string())),
        Ok(Ok(Err(code))) => Err(ReadError::Exception(format!("{code:?}"))),
        Ok(Ok(Ok(regs))) if regs.len() < usize::from(b.count) => Err(ReadError::Short { got: regs.len(), want: b.count }),
        Ok(Ok(Ok(regs))) => Ok(regs),
    }
}

/// Reads every block of `plan` from the device at `unit` on `ctx` and decodes the values.
/// A block refused with "illegal data address" is split into single-register reads, which are
/// kept in the returned plan. Stops early on an error that breaks the connection.
pub async fn read_device(
    ctx: &mut Context,
    unit: u8,
    profile: &Profile,
    plan: &[Block],
    ct: f64,
    pt: f64,
    mcfg: &ModbusConfig,
) -> DeviceRead {
    ctx.set_slave(Slave(unit));
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let mut out = DeviceRead::default();
    let mut queue: std::collections::VecDeque<Block> = plan.iter().cloned().collect();
    let mut first = true;
    while let Some(b) = queue.pop_front() {
        if !first && mcfg.request_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(mcfg.request_delay_ms)).await;
        }
        first = false;
        let mut attempt = 0;
        let result = loop {
            let start = Instant::now();
            let r = read_block(ctx, &b, timeout).await;
            out.reads.push(ReadLog {
                function: b.function,
                address: b.address,
                count: b.count,
                result: r.as_ref().map(|_| ()).map_err(Clone::clone),
                duration: start.elapsed(),
            });
            match r {
                Err(ref e) if attempt < mcfg.retries && !matches!(e, ReadError::Exception(_)) && !e.breaks_connection() => {
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(regs) => {
                for &i in &b.registers {
                    let r = &profile.registers[i];
                    let off = usize::from(r.address - b.address);
                    let slice = &regs[off..off + usize::from(r.ty.registers())];
                    match r.value(slice, profile.order, ct, pt) {
                        Some(v) => {
                            out.values.insert(r.quantity, v);
                        }
                        None => out.unavailable.push(r.quantity),
                    }
                }
                out.plan.push(b);
            }
            Err(ReadError::Exception(code))
                if code == format!("{:?}", ExceptionCode::IllegalDataAddress) && b.registers.len() > 1 =>
            {
                tracing::info!(unit, address = b.address, count = b.count, "device refused a block read; splitting it");
                for &i in b.registers.iter().rev() {
                    let r = &profile.registers[i];
                    queue.push_front(Block { function: r.function, address: r.address, count: r.ty.registers(), registers: vec![i] });
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
    out
}

/// Connects to a Modbus TCP endpoint within `timeout`.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Context, ReadError> {
    let addr: SocketAddr = match endpoint.parse() {
        Ok(a) => a,
        Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host(endpoint))
            .await
            .map_err(|_| ReadError::Timeout(timeout.as_millis() as u64))?
            .map_err(|e| ReadError::Transport(format!("cannot resolve {endpoint}: {e}")))?
            .next()
            .ok_or_else(|| ReadError::Transport(format!("{endpoint} resolves to no address")))?,
    };
    tokio::time::timeout(timeout, tokio_modbus::client::tcp::connect(addr))
        .await
        .map_err(|_| ReadError::Timeout(timeout.as_millis() as u64))?
        .map_err(|e| ReadError::Transport(format!("connect {endpoint}: {e}")))
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
}

pub type StatusMap = Arc<Mutex<BTreeMap<String, DeviceStatus>>>;

struct Device {
    cfg: DeviceConfig,
    profile: Arc<Profile>,
    plan: Vec<Block>,
    failures: u32,
    next_due: Instant,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Polls every device of one endpoint until cancelled, sending samples to `out`.
pub async fn run_endpoint(
    endpoint: String,
    devices: Vec<(DeviceConfig, Arc<Profile>)>,
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
        .map(|(i, (cfg, profile))| {
            let plan = plan_reads(&profile.registers, &profile.limits);
            // Spread first polls a little so that devices with one interval do not all fire at once.
            let next_due = start + Duration::from_millis(i as u64 * 20);
            Device { cfg, profile, plan, failures: 0, next_due }
        })
        .collect();
    {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        for d in &devs {
            st.insert(d.cfg.meter.clone(), DeviceStatus { meter: d.cfg.meter.clone(), endpoint: endpoint.clone(), ..Default::default() });
        }
    }
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let mut ctx: Option<Context> = None;
    loop {
        let Some(idx) = (0..devs.len()).min_by_key(|&i| devs[i].next_due) else { return };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(devs[idx].next_due.into()) => {}
        }
        let dev = &mut devs[idx];
        let due = dev.next_due;
        let t = now_ms();
        let result = match ctx.as_mut() {
            Some(c) => Ok(c),
            None => match connect(&endpoint, timeout).await {
                Ok(c) => {
                    if mcfg.connect_delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(mcfg.connect_delay_ms)).await;
                    }
                    Ok(ctx.insert(c))
                }
                Err(e) => Err(e),
            },
        };
        let read = match result {
            Ok(c) => {
                let r = read_device(c, dev.cfg.unit, &dev.profile, &dev.plan, dev.cfg.ct_ratio, dev.cfg.pt_ratio, &mcfg).await;
                dev.plan.clone_from(&r.plan);
                r
            }
            Err(e) => DeviceRead { errors: vec![e], plan: dev.plan.clone(), ..Default::default() },
        };
        for l in &read.reads {
            metrics.modbus_requests.with_label_values(&[endpoint.as_str()]).inc();
            metrics.modbus_latency.with_label_values(&[endpoint.as_str()]).observe(l.duration.as_secs_f64());
        }
        for e in &read.errors {
            metrics.modbus_errors.with_label_values(&[endpoint.as_str(), e.kind()]).inc();
        }
        if read.errors.iter().any(ReadError::breaks_connection) {
            ctx = None;
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
                let sample = Sample { meter: dev.cfg.meter.clone(), t, v: read.values.clone() };
                if out.send(sample).await.is_err() {
                    break;
                }
            }
        } else {
            dev.failures = dev.failures.saturating_add(1);
            let backoff = interval
                .saturating_mul(1u32 << dev.failures.min(16).saturating_sub(1))
                .min(Duration::from_millis(mcfg.max_backoff_ms.max(dev.cfg.interval_ms)));
            dev.next_due = Instant::now() + backoff;
            if dev.failures == 1 || dev.failures.is_power_of_two() {
                tracing::warn!(meter = %dev.cfg.meter, %endpoint, failures = dev.failures, error = ?read.errors.first(), "poll failed; backing off {} ms", backoff.as_millis());
            }
        }
        {
            let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = st.get_mut(&dev.cfg.meter) {
                s.up = ok;
                s.consecutive_failures = dev.failures;
                if ok {
                    s.last_ok_ms = Some(t);
                } else {
                    s.last_error = read.errors.first().map(ToString::to_string);
                }
            }
            metrics.devices_up.set(st.values().filter(|s| s.up).count() as i64);
        }
        metrics.device_up.with_label_values(&[dev.cfg.meter.as_str()]).set(i64::from(ok));
    }
}
