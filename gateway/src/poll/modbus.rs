//! Reading Modbus devices: one connection to a bus with the pacing its frames need ([`Link`]),
//! one read of a device by its profile's plan ([`read_device`], [`decode_answers`]), and the
//! scheduler's driver for a Modbus bus ([`run_bus`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use energy_wire::{Quantity, Sample};
use tokio::sync::mpsc;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;

use super::schedule::{schedule, BusDriver, PollOutcome, StatusMap};
use super::settings::{DeviceConfig, ModbusConfig};
use crate::metrics::Metrics;
use crate::profile::{plan_reads, Block, Function, Profile};
use crate::transport::{ReadError, Transport};

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

