//! Reading one DL/T 645 or CJ/T 188 meter once through a [`FieldLink`]: every identifier of its
//! profile (following follow-up frames), with retries of timeouts and dropped frames; an
//! abnormal reply is the meter's answer and is not retried. The scheduler
//! ([`crate::poll::schedule()`]) runs it per device like a Modbus read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use energy_wire::Quantity;

use super::cjt188;
use super::dlt645::{self, Answer, Edition};
use super::frame::{format_address, hex};
use super::link::FieldLink;
use super::profile::{DltRead, FieldProfile, Protocol};
use crate::poll::{schedule, BusDriver, DeviceConfig, ModbusConfig, PollOutcome, StatusMap};
use crate::transport::{ReadError, Transport};

/// One request of a field read, for the probe's report.
#[derive(Debug, Clone)]
pub struct FieldReadLog {
    /// What was read, as manuals write it (`00 01 00 00`, `read address`, `90 1F`).
    pub what: String,
    pub result: Result<(), ReadError>,
    pub duration: Duration,
}

/// The result of reading one meter once.
#[derive(Debug, Clone, Default)]
pub struct FieldRead {
    pub values: BTreeMap<Quantity, f64>,
    pub unavailable: Vec<Quantity>,
    pub reads: Vec<FieldReadLog>,
    pub errors: Vec<ReadError>,
    /// Some request got a well-formed answer (normal or abnormal).
    pub answered: bool,
    /// What the meter says of itself: CJ/T 188 status bits, working hours, clock.
    pub state: Vec<String>,
    /// Problems with single values (not BCD, wrong unit code).
    pub problems: Vec<String>,
    /// The address that answered, as on the name plate.
    pub address: Option<String>,
    /// CJ/T 188: the reply had value problems in the profile's layout but none with the unit
    /// codes on this other side of the values (for the probe's hint).
    pub other_unit_position: Option<cjt188::UnitPosition>,
}

/// A meter on a field bus: its profile and its address on the wire (LSB first), or `None` to
/// find it (DL/T 645-2007 "read address"; 1997 and CJ/T 188 read on the wildcard address).
#[derive(Debug, Clone)]
pub struct FieldMeter {
    pub profile: Arc<FieldProfile>,
    pub address: Option<Vec<u8>>,
    /// CJ/T 188 sequence byte of the next request.
    pub ser: u8,
    /// The device's current and voltage transformer ratios (`ct_ratio`, `pt_ratio`): DL/T 645
    /// values are multiplied by their [`DltValue::ratio`](super::profile::DltValue::ratio).
    pub ct_ratio: f64,
    pub pt_ratio: f64,
}

impl FieldMeter {
    /// A meter read as its profile says, without transformers (ratios 1).
    pub fn new(profile: Arc<FieldProfile>, address: Option<Vec<u8>>) -> FieldMeter {
        FieldMeter { profile, address, ser: 0, ct_ratio: 1.0, pt_ratio: 1.0 }
    }
}

async fn with_retries<T>(
    link: &mut FieldLink,
    out: &mut FieldRead,
    what: &str,
    request: &[u8],
    mcfg: &ModbusConfig,
    scan: fn(&[u8]) -> super::frame::Scan,
    mut accept: impl FnMut(&[u8]) -> Result<T, String>,
) -> Result<T, ReadError> {
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let delay = Duration::from_millis(mcfg.request_delay_ms);
    let mut attempt = 0;
    loop {
        let start = Instant::now();
        let r = link.exchange(request, timeout, delay, scan, &mut accept).await;
        out.reads.push(FieldReadLog { what: what.to_string(), result: r.as_ref().map(|_| ()).map_err(Clone::clone), duration: start.elapsed() });
        match r {
            Err(ReadError::Timeout(_) | ReadError::Frame(_)) if attempt < mcfg.retries => attempt += 1,
            other => return other,
        }
    }
}

/// DL/T 645-2007 "read address" on the wildcard: the address of the only meter on the line.
pub async fn read_address(link: &mut FieldLink, out: &mut FieldRead, mcfg: &ModbusConfig) -> Result<[u8; 6], ReadError> {
    let req = dlt645::read_address_request();
    with_retries(link, out, "read address (AA AA AA AA AA AA)", &req, mcfg, dlt645::scan_frame, |bytes| {
        let f = dlt645::decode(bytes)?;
        if !f.is_reply() {
            return Err(format!("control {:02X} is not a reply", f.control));
        }
        dlt645::address_answer(&f)
    })
    .await
}

/// Reads every identifier of the meter's profile once.
pub async fn read_meter(link: &mut FieldLink, meter: &mut FieldMeter, mcfg: &ModbusConfig) -> FieldRead {
    let mut out = FieldRead::default();
    let p = meter.profile.clone();
    match p.protocol.edition() {
        Some(ed) => read_dlt(link, meter, ed, &p, mcfg, &mut out).await,
        None => read_cjt(link, meter, &p, mcfg, &mut out).await,
    }
    let have: Vec<Quantity> = out.values.keys().copied().collect();
    for q in p.quantities() {
        if !have.contains(&q) && !out.unavailable.contains(&q) && out.answered {
            out.unavailable.push(q);
        }
    }
    out
}

async fn read_dlt(link: &mut FieldLink, meter: &mut FieldMeter, ed: Edition, p: &FieldProfile, mcfg: &ModbusConfig, out: &mut FieldRead) {
    let address: [u8; 6] = match meter.address.as_deref().and_then(|a| <[u8; 6]>::try_from(a).ok()) {
        Some(a) => a,
        None if ed == Edition::V2007 => match read_address(link, out, mcfg).await {
            Ok(a) => {
                out.answered = true;
                meter.address = Some(a.to_vec());
                a
            }
            Err(e) => {
                out.errors.push(e);
                return;
            }
        },
        None => dlt645::WILDCARD,
    };
    for r in &p.reads {
        match read_identifier(link, meter, ed, &address, &r.di_bytes, mcfg, out).await {
            Ok(value) => decode_values(r, &value, (meter.ct_ratio, meter.pt_ratio), out),
            Err(e) => {
                let fatal = matches!(e, ReadError::Timeout(_) | ReadError::Transport(_));
                out.errors.push(e);
                out.unavailable.extend(r.values.iter().map(|v| v.quantity));
                if fatal {
                    // A meter that does not answer one identifier will not answer the next: spare
                    // the bus the wait.
                    return;
                }
            }
        }
    }
}

/// Reads one data identifier, following up while the meter says more follows; the data of every
/// frame, in order. An abnormal reply is the meter's answer (an exception, not retried).
async fn read_identifier(
    link: &mut FieldLink,
    meter: &mut FieldMeter,
    ed: Edition,
    address: &[u8; 6],
    di: &[u8],
    mcfg: &ModbusConfig,
    out: &mut FieldRead,
) -> Result<Vec<u8>, ReadError> {
    let mut value: Vec<u8> = Vec::new();
    let mut seq = 0u8;
    loop {
        let follow_up = seq > 0;
        let req = if follow_up { dlt645::follow_up_request(ed, address, di, seq) } else { dlt645::read_request(ed, address, di) };
        let what = if follow_up { format!("{} follow-up {seq}", hex(di)) } else { hex(di) };
        let mut from = None;
        let res = with_retries(link, out, &what, &req, mcfg, dlt645::scan_frame, |bytes| {
            let f = dlt645::decode(bytes)?;
            let a = dlt645::answer(ed, &f, address, di, follow_up)?;
            from = Some(f.address);
            Ok(a)
        })
        .await;
        if let Some(a) = from {
            out.address = Some(format_address(&a));
            if meter.address.is_none() && ed == Edition::V1997 {
                meter.address = Some(a.to_vec());
            }
        }
        match res? {
            Answer::Data { value: v, more } => {
                out.answered = true;
                value.extend(v);
                if more && seq < dlt645::MAX_FOLLOW_UPS {
                    seq += 1;
                    continue;
                }
                return Ok(value);
            }
            Answer::Abnormal(e) => {
                out.answered = true;
                return Err(ReadError::Exception(format!("{} {}: {}", ed.name(), hex(di), dlt645::describe_error(ed, e))));
            }
        }
    }
}

/// The values of one identifier's data, in the order the profile lists them, each times its
/// scale and its transformer ratio (`(ct, pt)`: the device's).
fn decode_values(r: &DltRead, value: &[u8], (ct, pt): (f64, f64), out: &mut FieldRead) {
    let mut at = 0;
    for v in &r.values {
        let Some(fmt) = v.fmt else { continue };
        let n = fmt.bytes();
        match value.get(at..at + n).and_then(|b| fmt.value(b, v.signed)).map(|x| x * v.scale * v.ratio().factor(ct, pt)) {
            Some(x) if x.is_finite() => {
                out.values.insert(v.quantity, x);
            }
            _ => {
                out.problems.push(format!(
                    "{} ({}): {} is not a {} value",
                    v.quantity,
                    hex(&r.di_bytes),
                    hex(value.get(at..(at + n).min(value.len())).unwrap_or(&[])),
                    v.format
                ));
                out.unavailable.push(v.quantity);
            }
        }
        at += n;
    }
}

async fn read_cjt(link: &mut FieldLink, meter: &mut FieldMeter, p: &FieldProfile, mcfg: &ModbusConfig, out: &mut FieldRead) {
    let address: [u8; 7] = meter.address.as_deref().and_then(|a| <[u8; 7]>::try_from(a).ok()).unwrap_or(cjt188::WILDCARD);
    let ty = p.meter_type_code;
    let ser = meter.ser;
    meter.ser = meter.ser.wrapping_add(1);
    let req = cjt188::read_request_in(p.di_order(), ty, &address, ser);
    let mut from = None;
    let mut fits_other = None;
    let units = p.unit_position();
    let res = with_retries(link, out, "90 1F", &req, mcfg, cjt188::scan_frame, |bytes| {
        let f = cjt188::decode(bytes)?;
        if address != cjt188::WILDCARD && f.address != address {
            return Err(format!("reply from meter {}, expected {}", format_address(&f.address), format_address(&address)));
        }
        if f.control & 0x80 == 0 {
            return Err(format!("control {:02X} is not a reply", f.control));
        }
        from = Some(f.address);
        // An abnormal reply is the meter's answer: no retry.
        if f.control & 0x40 != 0 {
            return Ok(Err(format!("CJ/T 188 90 1F: abnormal reply {:02X}", f.control)));
        }
        let c = cjt188::decode_current_as(&f, ty, ser, units)?;
        if !c.problems.is_empty() {
            let other = cjt188::decode_current_as(&f, ty, ser, units.other());
            fits_other = other.is_ok_and(|o| o.problems.is_empty()).then_some(units.other());
        }
        Ok(Ok(c))
    })
    .await;
    out.other_unit_position = fits_other;
    if let Some(a) = from {
        out.address = Some(format_address(&a));
    }
    match res {
        Ok(Ok(c)) => {
            out.answered = true;
            for v in &p.values {
                match c.get(v.field) {
                    Some(x) => {
                        out.values.insert(v.quantity, x);
                    }
                    None => out.unavailable.push(v.quantity),
                }
            }
            out.problems.extend(c.problems.iter().cloned());
            if let Some(h) = c.get(cjt188::Field::WorkingHours) {
                out.state.push(format!("working hours {h} h"));
            }
            out.state.extend(cjt188::status_text(c.status));
            if let Some(t) = c.time {
                out.state.push(format!("meter clock {t}"));
            }
        }
        Ok(Err(abnormal)) => {
            out.answered = true;
            out.errors.push(ReadError::Exception(abnormal));
        }
        Err(e) => out.errors.push(e),
    }
}

/// The scheduler's driver for a field bus: one [`FieldLink`], its meters.
pub struct FieldDriver {
    pub transport: Transport,
    pub gap: Duration,
    pub meters: Vec<FieldMeter>,
}

impl BusDriver for FieldDriver {
    type Conn = FieldLink;

    fn connect(&mut self, timeout: Duration) -> impl std::future::Future<Output = Result<FieldLink, ReadError>> + Send {
        let (t, gap) = (self.transport.clone(), self.gap);
        async move { super::link::connect(&t, timeout).await.map(|l| l.with_gap(gap)) }
    }

    fn poll<'a>(&'a mut self, conn: &'a mut FieldLink, device: usize, mcfg: &'a ModbusConfig) -> impl std::future::Future<Output = PollOutcome> + Send + 'a {
        async move {
            let Some(meter) = self.meters.get_mut(device) else { return PollOutcome::default() };
            let before = conn.bad_frames;
            let r = read_meter(conn, meter, mcfg).await;
            PollOutcome {
                values: r.values,
                unavailable: r.unavailable,
                request_durations: r.reads.iter().map(|l| l.duration).collect(),
                errors: r.errors,
                answered: r.answered,
                state: (!r.state.is_empty()).then(|| r.state.join("; ")),
                bad_frames: conn.bad_frames - before,
            }
        }
    }
}

/// Meters' addresses from the configuration: `None` for a missing address.
pub fn meter_address(protocol: Protocol, address: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    address.map(|a| super::frame::parse_address(a, protocol.address_len())).transpose()
}

/// The profile as one device reads it: the device's `di_order`, when set, replaces the
/// profile's (meters of one model that differ in the field).
pub fn with_device_settings(d: &DeviceConfig, p: &Arc<FieldProfile>) -> Arc<FieldProfile> {
    // Checked by the configuration's validation; a bad value keeps the profile's.
    match d.di_order.as_deref().map(cjt188::DiOrder::parse) {
        Some(Ok(o)) if p.protocol == Protocol::Cjt188 && p.di_order() != o => Arc::new(FieldProfile { di_order: Some(o), ..(**p).clone() }),
        _ => p.clone(),
    }
}

/// Polls every meter of one field bus until cancelled (the scheduling of
/// [`crate::poll::schedule()`]: one request in flight, per-device intervals and back-off).
#[allow(clippy::too_many_arguments)]
pub async fn run_field_bus(
    transport: Transport,
    devices: Vec<(DeviceConfig, Arc<FieldProfile>)>,
    mcfg: ModbusConfig,
    out: tokio::sync::mpsc::Sender<energy_wire::Sample>,
    metrics: crate::metrics::Metrics,
    status: StatusMap,
    cancel: tokio_util::sync::CancellationToken,
) {
    // The line must be quiet between frames: 3.5 characters at the baud rate, as on Modbus RTU
    // (DL/T 645 leaves the gap to the implementation; meters need the line free before they
    // answer).
    let gap = transport.silence(Duration::from_micros(mcfg.rtu_min_silence_us));
    let meters = devices
        .iter()
        .map(|(d, p)| FieldMeter {
            profile: with_device_settings(d, p),
            // Checked by the configuration's validation; a bad address reads as "find it".
            address: meter_address(p.protocol, d.address.as_deref()).ok().flatten(),
            ser: 0,
            ct_ratio: d.ct_ratio,
            pt_ratio: d.pt_ratio,
        })
        .collect();
    let cfgs = devices.into_iter().map(|(d, _)| d).collect();
    let bus = transport.bus();
    schedule(bus, FieldDriver { transport, gap, meters }, cfgs, mcfg, out, metrics, status, cancel).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::profile::parse_field_profile;

    /// A profile with one identifier (00 01 00 00) whose data holds these values, in order:
    /// (quantity, format, signed, unit, extra key line).
    fn one_read(values: &[(&str, &str, bool, &str, &str)]) -> String {
        let mut text = String::from("vendor = \"T\"\nmodel = \"T\"\nsource = \"test\"\nprotocol = \"dlt645-2007\"\n[[read]]\ndi = \"00 01 00 00\"\n");
        for (q, f, signed, unit, extra) in values {
            text.push_str(&format!("[[read.value]]\nquantity = \"{q}\"\nformat = \"{f}\"\nsigned = {signed}\nunit = \"{unit}\"\n{extra}\n"));
        }
        text
    }

    /// An energy, a current, a voltage and a power factor; the energy's ratio key as given.
    fn block(energy_ratio: &str) -> crate::field::profile::FieldProfile {
        let text = one_read(&[
            ("active_energy_import", "XXXXXX.XX", false, "kWh", energy_ratio),
            ("current_l1", "XXX.XXX", true, "A", ""),
            ("voltage_l1", "XXX.X", false, "V", ""),
            ("power_factor", "X.XXX", true, "", ""),
        ]);
        parse_field_profile("t", "t.toml", &text).unwrap()
    }

    #[test]
    fn values_are_multiplied_by_the_devices_transformer_ratios() {
        let p = block("");
        // BCD, least significant byte first (the +0x33 is already removed):
        // 34 12 00 00 = 000012.34 kWh; 34 12 80 = -001.234 A (bit 7 of the top byte is the sign);
        // 00 10 = 100.0 V; 00 09 = 0.900.
        let data = [0x34, 0x12, 0x00, 0x00, 0x34, 0x12, 0x80, 0x00, 0x10, 0x00, 0x09];
        // (ct, pt) -> energy, current, voltage, power factor, worked by hand:
        let table = [
            // No transformers: the meter's own values.
            ((1.0, 1.0), [12.34, -1.234, 100.0, 0.9]),
            // 200/5 A CTs (40), direct voltage: energy 12.34 x 40 = 493.6, current -1.234 x 40 = -49.36.
            ((40.0, 1.0), [493.6, -49.36, 100.0, 0.9]),
            // And 10 kV/100 V VTs (100): energy 12.34 x 4000 = 49 360, voltage 100.0 x 100 = 10 000.
            ((40.0, 100.0), [49_360.0, -49.36, 10_000.0, 0.9]),
        ];
        for ((ct, pt), want) in table {
            let mut out = FieldRead::default();
            decode_values(&p.reads[0], &data, (ct, pt), &mut out);
            let got = [Quantity::ActiveEnergyImport, Quantity::CurrentL1, Quantity::VoltageL1, Quantity::PowerFactor].map(|q| out.values[&q]);
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-9 * w.abs().max(1.0), "ct {ct} pt {pt}: {got:?} vs {want:?}");
            }
        }
        // A value the profile marks as primary is left alone.
        let p = block("ratio = \"none\"");
        let mut out = FieldRead::default();
        decode_values(&p.reads[0], &data, (40.0, 100.0), &mut out);
        assert_eq!(out.values[&Quantity::ActiveEnergyImport], 12.34);
        assert_eq!(out.values[&Quantity::VoltageL1], 10_000.0);
    }
}
