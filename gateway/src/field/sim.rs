//! Simulated DL/T 645 and CJ/T 188 meters for tests, benchmarks and demonstrations: they answer
//! byte for byte as the standards say (preamble before replies, +0x33 scrambling, follow-up
//! frames, abnormal replies, sequence byte echo, unit codes), after a realistic answer delay and
//! the time the bytes take on a line of the given baud rate. They can be made to misbehave:
//! stay silent, answer an identifier abnormally, or corrupt every n-th reply's checksum. A CJ/T
//! 188 meter answers only the DI byte order it is told (by default its profile's: real meters of
//! that kind ignore the other) and puts unit codes where it is told (default: its profile's).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use energy_wire::Quantity;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::cjt188::{self, DiOrder, Field, UnitPosition};
use super::dlt645::{self, Edition};
use super::frame::{format_address, Scan};
use super::profile::{DltRead, FieldProfile, Protocol};

/// One simulated meter.
#[derive(Debug, Clone)]
pub struct SimMeter {
    pub profile: Arc<FieldProfile>,
    /// Address on the wire (LSB first).
    pub address: Vec<u8>,
    /// Values in contract units.
    pub values: BTreeMap<Quantity, f64>,
    /// CJ/T 188: the unit code each field is sent in (default: m³, kWh, kW, m³/h).
    pub units: BTreeMap<Field, u8>,
    /// CJ/T 188 status word.
    pub status: u16,
    /// DL/T 645 identifiers (as tables write them) answered abnormally ("no data requested").
    pub abnormal: BTreeSet<Vec<u8>>,
    /// DL/T 645: value bytes per frame; longer values go out in follow-up frames.
    pub chunk: Option<usize>,
    pub silent: bool,
    /// Every n-th reply goes out with a wrong checksum (line noise).
    pub corrupt_every: Option<u64>,
    /// Added to every counter after each answer to a read (simulated consumption).
    pub step: f64,
    /// CJ/T 188: the DI byte order the meter answers (`None`: either); the reply echoes the
    /// identifier as received.
    pub di_order: Option<DiOrder>,
    /// CJ/T 188: where the reply puts unit codes.
    pub unit_position: UnitPosition,
}

impl SimMeter {
    pub fn new(profile: Arc<FieldProfile>, address: &str, values: BTreeMap<Quantity, f64>) -> Result<SimMeter, String> {
        let address = super::frame::parse_address(address, profile.protocol.address_len())?;
        Ok(SimMeter {
            address,
            values,
            units: BTreeMap::new(),
            status: 0,
            abnormal: BTreeSet::new(),
            chunk: None,
            silent: false,
            corrupt_every: None,
            step: 0.0,
            di_order: Some(profile.di_order()),
            unit_position: profile.unit_position(),
            profile,
        })
    }

    /// Typical values for every quantity of the profile (exactly representable in its formats).
    pub fn typical(profile: &FieldProfile) -> BTreeMap<Quantity, f64> {
        profile
            .quantities()
            .into_iter()
            .map(|q| {
                let v = match q.name() {
                    n if n.starts_with("voltage") => 231.0,
                    n if n.starts_with("current") => 12.34,
                    "power_factor" => 0.987,
                    "frequency" => 50.01,
                    "active_power_l1" | "active_power_l2" | "active_power_l3" => 2.8431,
                    "active_power" | "reactive_power" | "apparent_power" => 8.5293,
                    "active_energy_import" => 12_345.67,
                    "active_energy_export" => 23.45,
                    "water_volume" | "gas_volume" => 1_234.56,
                    "heat_energy" => 4.4444,
                    "heat_volume" => 321.09,
                    "heat_power" => 12.34,
                    "flow_rate" => 1.2345,
                    "supply_temperature" => 75.5,
                    "return_temperature" => 45.25,
                    _ => 1.0,
                };
                (q, v)
            })
            .collect()
    }
}

/// What the simulator served: (meter address, quantity, value, time in ms since the epoch) of
/// every counter value in every answer, in order (what an end-to-end test compares with the
/// store).
pub type Served = Arc<Mutex<Vec<(String, Quantity, f64, i64)>>>;

/// A bus of simulated meters.
#[derive(Clone)]
pub struct SimBus {
    pub meters: Arc<Mutex<Vec<SimMeter>>>,
    /// Answer delay of every meter after the request's last byte.
    pub delay: Duration,
    /// Baud rate whose byte time the replies take (None: no line time).
    pub baud: Option<u32>,
    pub served: Served,
    /// Requests received (every frame, valid or not).
    pub requests: Arc<Mutex<u64>>,
}

impl SimBus {
    pub fn new(meters: Vec<SimMeter>, delay: Duration, baud: Option<u32>) -> SimBus {
        SimBus { meters: Arc::new(Mutex::new(meters)), delay, baud, served: Arc::default(), requests: Arc::default() }
    }

    fn line_time(&self, bytes: usize) -> Duration {
        self.baud.map_or(Duration::ZERO, |b| Duration::from_secs_f64(bytes as f64 * 11.0 / f64::from(b)))
    }

    /// Serves one connection (a TCP stream or a serial port) until it closes or `cancel`.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut io: S, cancel: CancellationToken) {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 512];
        // Per meter and identifier: value bytes still to send in follow-up frames.
        let mut pending: BTreeMap<(Vec<u8>, Vec<u8>), (Vec<u8>, u8)> = BTreeMap::new();
        let mut answers: u64 = 0;
        loop {
            let n = tokio::select! {
                () = cancel.cancelled() => return,
                r = io.read(&mut chunk) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let (dlt, cjt) = (dlt645::scan_frame(&buf), cjt188::scan_frame(&buf));
                let (frame, end) = match (dlt, cjt) {
                    (Scan::Frame { start, end }, _) => (Some((true, buf[start..end].to_vec())), end),
                    (_, Scan::Frame { start, end }) => (Some((false, buf[start..end].to_vec())), end),
                    (Scan::Bad { end, .. }, Scan::Bad { .. } | Scan::Incomplete) => (None, end),
                    (Scan::Incomplete, Scan::Bad { end, .. }) => (None, end),
                    (Scan::Incomplete, Scan::Incomplete) => break,
                };
                buf.drain(..end.min(buf.len()));
                let Some((is_dlt, bytes)) = frame else { continue };
                *self.requests.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                // The request's own time on the line (its preamble included) before the meter
                // has all of it.
                let request_time = self.line_time(end);
                let replies = if is_dlt { self.answer_dlt(&bytes, &mut pending) } else { self.answer_cjt(&bytes) };
                let mut first = true;
                for (mut reply, corrupt_every) in replies {
                    answers += 1;
                    if corrupt_every.is_some_and(|k| k > 0 && answers % k == 0) {
                        let n = reply.len();
                        reply[n - 2] = reply[n - 2].wrapping_add(1);
                    }
                    let wait = self.delay + self.line_time(reply.len()) + if first { request_time } else { Duration::ZERO };
                    first = false;
                    tokio::time::sleep(wait).await;
                    if io.write_all(&reply).await.is_err() || io.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn answer_dlt(&self, bytes: &[u8], pending: &mut BTreeMap<(Vec<u8>, Vec<u8>), (Vec<u8>, u8)>) -> Vec<(Vec<u8>, Option<u64>)> {
        let Ok(f) = dlt645::decode(bytes) else { return vec![] };
        if f.is_reply() {
            return vec![];
        }
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for m in meters.iter_mut() {
            let Some(ed) = m.profile.protocol.edition() else { continue };
            let wildcard = f.address == dlt645::WILDCARD;
            if m.silent || !(wildcard || f.address[..] == m.address[..]) {
                continue;
            }
            let Ok(addr) = <[u8; 6]>::try_from(&m.address[..]) else { continue };
            let func = f.function();
            if func == dlt645::READ_ADDRESS && ed == Edition::V2007 {
                out.push((dlt645::encode_address_reply(&addr), m.corrupt_every));
                continue;
            }
            let di_len = ed.di_len();
            if f.data.len() < di_len {
                continue;
            }
            let di: Vec<u8> = f.data[..di_len].iter().rev().copied().collect();
            if func == ed.follow_up_code() {
                // 2007 names the frame it wants (a repeated request gets the same frame again);
                // 1997 just asks for the next one.
                let Some((value, next)) = pending.get_mut(&(m.address.clone(), di.clone())) else {
                    out.push((dlt645::encode_abnormal(ed, &addr, func, 0x01), None));
                    continue;
                };
                let seq = if ed == Edition::V2007 { f.data.get(di_len).copied().unwrap_or(1) } else { *next };
                *next = seq.saturating_add(1);
                let size = m.chunk.unwrap_or(usize::MAX).max(1);
                let from = (usize::from(seq) * size).min(value.len());
                let to = from.saturating_add(size).min(value.len());
                let more = to < value.len();
                out.push((dlt645::encode_reply(ed, &addr, &di, &value[from..to], more, Some(seq)), m.corrupt_every));
                continue;
            }
            if func != ed.read_code() {
                continue;
            }
            let read = m.profile.reads.iter().find(|r| r.di_bytes == di);
            let value = read.filter(|_| !m.abnormal.contains(&di)).and_then(|r| encode_values(m, r));
            let Some(value) = value else {
                out.push((dlt645::encode_abnormal(ed, &addr, func, 0x02), m.corrupt_every));
                continue;
            };
            if let Some(r) = read {
                let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
                for val in &r.values {
                    if val.quantity.kind() == energy_wire::Kind::Counter {
                        served.push((format_address(&m.address), val.quantity, m.values.get(&val.quantity).copied().unwrap_or(0.0), crate::time::now_ms()));
                    }
                }
            }
            let take = m.chunk.unwrap_or(usize::MAX).max(1).min(value.len());
            let more = take < value.len();
            if more {
                pending.insert((m.address.clone(), di.clone()), (value.clone(), 1));
            }
            out.push((dlt645::encode_reply(ed, &addr, &di, &value[..take], more, None), m.corrupt_every));
            advance(m);
        }
        if out.len() > 1 {
            // Several meters answering at once garble each other: what arrives fails its checksum.
            let mut garbled = out.swap_remove(0).0;
            let n = garbled.len();
            garbled[n - 2] ^= 0x5A;
            return vec![(garbled, None)];
        }
        out
    }

    fn answer_cjt(&self, bytes: &[u8]) -> Vec<(Vec<u8>, Option<u64>)> {
        let Ok(f) = cjt188::decode(bytes) else { return vec![] };
        if f.control & 0x80 != 0 || f.control != cjt188::READ_DATA || f.data.len() < 3 {
            return vec![];
        }
        let di = [f.data[0], f.data[1]];
        let Some(order) = [DiOrder::LowFirst, DiOrder::HighFirst].into_iter().find(|o| o.current() == di) else { return vec![] };
        let ser = f.data[2];
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for m in meters.iter_mut() {
            if m.profile.protocol != Protocol::Cjt188 || m.silent || m.profile.meter_type_code != f.meter_type || m.di_order.is_some_and(|o| o != order) {
                continue;
            }
            if !(f.address == cjt188::WILDCARD || f.address[..] == m.address[..]) {
                continue;
            }
            let Ok(addr) = <[u8; 7]>::try_from(&m.address[..]) else { continue };
            let fields: Vec<(Field, f64, u8)> = m
                .profile
                .values
                .iter()
                .map(|v| (v.field, m.values.get(&v.quantity).copied().unwrap_or(0.0), m.units.get(&v.field).copied().unwrap_or(cjt188::default_unit(v.field))))
                .collect();
            // 2026-01-01 12:00:00.
            let Some(reply) = cjt188::encode_current_as(di, m.unit_position, f.meter_type, &addr, ser, &fields, [0x00, 0x00, 0x12, 0x01, 0x01, 0x26, 0x20], m.status) else { continue };
            {
                let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
                for v in &m.profile.values {
                    if v.quantity.kind() == energy_wire::Kind::Counter {
                        served.push((format_address(&m.address), v.quantity, m.values.get(&v.quantity).copied().unwrap_or(0.0), crate::time::now_ms()));
                    }
                }
            }
            out.push((reply, m.corrupt_every));
            advance(m);
        }
        out
    }

    /// Serves TCP connections on `listen` (a transparent serial server stand-in) until cancelled;
    /// returns the bound address.
    pub async fn serve_tcp(&self, listen: &str, cancel: CancellationToken) -> std::io::Result<std::net::SocketAddr> {
        let l = tokio::net::TcpListener::bind(listen).await?;
        let addr = l.local_addr()?;
        let bus = self.clone();
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let (b, c) = (bus.clone(), cancel.clone());
                tokio::spawn(async move { b.serve(s, c).await });
            }
        });
        Ok(addr)
    }
}

/// Counters advance by the meter's step after each answer, rounded to what the wire carries
/// (hundredths).
/// The data of a DL/T 645 identifier: the meter's values in the read's formats; `None` when one
/// does not fit its format.
fn encode_values(m: &SimMeter, r: &DltRead) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    let mut ok = true;
    for val in &r.values {
        let x = m.values.get(&val.quantity).copied().unwrap_or(0.0) / val.scale;
        match val.fmt.and_then(|f| f.encode(x, val.signed)) {
            Some(b) => v.extend(b),
            None => ok = false,
        }
    }
    ok.then_some(v)
}

fn advance(m: &mut SimMeter) {
    if m.step == 0.0 {
        return;
    }
    for (q, v) in m.values.iter_mut() {
        if q.kind() == energy_wire::Kind::Counter {
            *v = ((*v + m.step) * 100.0).round() / 100.0;
        }
    }
}
