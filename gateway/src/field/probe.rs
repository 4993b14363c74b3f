//! `energy-gateway probe` for DL/T 645 and CJ/T 188 meters: reads one meter once (finding its
//! address first when none is given) and says in plain words what looks wrong: no answer, frames
//! that fail their checksum (wrong baud rate or parity), another DL/T 645 edition, another
//! meter's address, identifiers the meter refuses, a CJ/T 188 meter that wants the data
//! identifier in the other byte order (`di_order`) or puts unit codes on the other side of the
//! values (`unit_position`). `--scan` lists the meters that answer.

use std::time::Duration;

use energy_wire::Quantity;

use super::dlt645::{self, Edition};
use super::frame::{format_address, hex, parse_address};
use super::link::{connect, FieldLink};
use super::poll::{read_meter, FieldMeter, FieldRead};
use super::profile::{FieldProfile, Protocol};
use crate::poll::ModbusConfig;
use crate::transport::{Parity, ReadError, Transport};

#[derive(Debug)]
pub struct FieldProbe {
    /// Every quantity of the profile in profile order, with its value if the meter gave one.
    pub values: Vec<(Quantity, Option<f64>)>,
    pub read: FieldRead,
    pub hints: Vec<String>,
    pub bad_frames: u64,
}

impl FieldProbe {
    pub fn ok(&self) -> bool {
        !self.read.values.is_empty()
    }
}

async fn open(transport: &Transport, mcfg: &ModbusConfig) -> Result<FieldLink, ReadError> {
    let gap = transport.silence(Duration::from_micros(mcfg.rtu_min_silence_us));
    Ok(connect(transport, Duration::from_millis(mcfg.timeout_ms)).await?.with_gap(gap))
}

/// Reads the meter at `address` (wire order; `None`: find it) once.
pub async fn probe(profile: &FieldProfile, transport: &Transport, address: Option<Vec<u8>>, mcfg: &ModbusConfig) -> Result<FieldProbe, ReadError> {
    let mut link = open(transport, mcfg).await?;
    let mut meter = FieldMeter::new(std::sync::Arc::new(profile.clone()), address);
    let read = read_meter(&mut link, &mut meter, mcfg).await;
    let bad_frames = link.bad_frames;
    drop(link);
    let mut hints = Vec::new();
    let refused: Vec<String> = read
        .errors
        .iter()
        .filter_map(|e| match e {
            ReadError::Exception(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        hints.push(format!(
            "the meter refused {} request(s) ({}): it does not have these values; use a profile for this model, or leave them out",
            refused.len(),
            refused.join("; ")
        ));
    }
    for e in &read.errors {
        if let ReadError::Frame(m) = e {
            if let Some(i) = m.find("reply from meter ") {
                hints.push(format!("another meter answered ({}): check --address (the name plate number, 12 digits for DL/T 645, 14 for CJ/T 188)", &m[i..]));
                break;
            }
        }
    }
    if let Some(u) = read.other_unit_position {
        hints.push(format!(
            "the reply's values decode only with each unit code {} its value: set unit_position = \"{}\" in the profile",
            u.name(),
            u.name()
        ));
    }
    if !read.answered {
        hints.extend(no_answer_hints(profile, transport, meter.address.as_deref(), bad_frames, mcfg).await);
    }
    let values = profile.quantities().into_iter().map(|q| (q, read.values.get(&q).copied())).collect();
    Ok(FieldProbe { values, read, hints, bad_frames })
}

/// The first request of a profile, to `address` (or the wildcard), and a check of its answer.
fn first_request(profile: &FieldProfile, address: Option<&[u8]>) -> Option<(Vec<u8>, Box<dyn Fn(&[u8]) -> Result<String, String> + Send>, fn(&[u8]) -> super::frame::Scan)> {
    match profile.protocol.edition() {
        Some(ed) => {
            let a: [u8; 6] = address.and_then(|a| a.try_into().ok()).unwrap_or(dlt645::WILDCARD);
            let di = profile.reads.first()?.di_bytes.clone();
            let req = dlt645::read_request(ed, &a, &di);
            let check = move |b: &[u8]| {
                let f = dlt645::decode(b)?;
                dlt645::answer(ed, &f, &a, &di, false).map(|_| format_address(&f.address))
            };
            Some((req, Box::new(check), dlt645::scan_frame))
        }
        None => {
            let a: [u8; 7] = address.and_then(|a| a.try_into().ok()).unwrap_or(super::cjt188::WILDCARD);
            let ty = profile.meter_type_code;
            let req = super::cjt188::read_request_in(profile.di_order(), ty, &a, 0);
            let check = move |b: &[u8]| {
                let f = super::cjt188::decode(b)?;
                if f.control & 0x80 == 0 {
                    return Err("not a reply".into());
                }
                Ok(format_address(&f.address))
            };
            Some((req, Box::new(check), super::cjt188::scan_frame))
        }
    }
}

async fn no_answer_hints(profile: &FieldProfile, transport: &Transport, address: Option<&[u8]>, bad_frames: u64, mcfg: &ModbusConfig) -> Vec<String> {
    let mut hints = Vec::new();
    let proto = match profile.protocol {
        Protocol::Cjt188 => "CJ/T 188",
        Protocol::Dlt645V2007 => "DL/T 645-2007",
        Protocol::Dlt645V1997 => "DL/T 645-1997",
    };
    let short = ModbusConfig { timeout_ms: mcfg.timeout_ms.min(800), retries: 0, ..mcfg.clone() };
    if let Transport::Serial(line) = transport {
        // Try the other usual line settings with the profile's first request.
        for baud in [2400, 1200, 4800, 9600] {
            for parity in [Parity::Even, Parity::None] {
                if (baud, parity) == (line.baud, line.parity) {
                    continue;
                }
                let t = Transport::Serial(crate::transport::SerialLine { baud, parity, ..line.clone() });
                let Some((req, check, scan)) = first_request(profile, address) else { return hints };
                let Ok(mut link) = open(&t, &short).await else { continue };
                if link.exchange(&req, Duration::from_millis(short.timeout_ms), Duration::ZERO, scan, |b| check(b)).await.is_ok() {
                    let p = if parity == Parity::Even { "even" } else { "none" };
                    hints.push(format!("wrong line settings: the meter answers at {baud} baud, {p} parity: use --baud {baud} --parity {p} (in the config: baud = {baud}, parity = \"{p}\")"));
                    return hints;
                }
            }
        }
    }
    if bad_frames > 0 {
        hints.push(format!(
            "{bad_frames} frame(s) came back with a wrong checksum: the baud rate or parity is probably wrong ({proto} meters usually use 2400 baud, 8 data bits, even parity{}), or several meters answered the wildcard at once",
            if matches!(transport, Transport::Serial(_)) { "" } else { "; set the serial server's line accordingly" }
        ));
    }
    // A CJ/T 188 meter that only answers DI 901F in the other byte order? One try.
    if profile.protocol == Protocol::Cjt188 {
        let other = profile.di_order().other();
        let flipped = FieldProfile { di_order: Some(other), ..profile.clone() };
        if let (Some((req, check, scan)), Ok(mut link)) = (first_request(&flipped, address), open(transport, &short).await) {
            if link.exchange(&req, Duration::from_millis(short.timeout_ms), Duration::ZERO, scan, |b| check(b)).await.is_ok() {
                hints.push(format!(
                    "the meter answers only when DI 901F is sent {} instead of {}: set di_order = \"{}\" in the profile (or on this [[device]] in the gateway configuration)",
                    hex(&other.current()),
                    hex(&profile.di_order().current()),
                    other.name()
                ));
                return hints;
            }
        }
    }
    // The other DL/T 645 edition?
    if let Some(ed) = profile.protocol.edition() {
        let (other, di, name) = match ed {
            Edition::V2007 => (Edition::V1997, vec![0x90, 0x10], "generic/dlt645-1997"),
            Edition::V1997 => (Edition::V2007, vec![0x00, 0x01, 0x00, 0x00], "generic/dlt645-2007-three-phase"),
        };
        let a: [u8; 6] = address.and_then(|a| a.try_into().ok()).unwrap_or(dlt645::WILDCARD);
        if let Ok(mut link) = open(transport, &short).await {
            let req = dlt645::read_request(other, &a, &di);
            let r = link
                .exchange(&req, Duration::from_millis(short.timeout_ms), Duration::ZERO, dlt645::scan_frame, |b| {
                    let f = dlt645::decode(b)?;
                    dlt645::answer(other, &f, &a, &di, false)
                })
                .await;
            if r.is_ok() {
                hints.push(format!("the meter answers {} but the profile is {}: use a {} profile (e.g. {name})", other.name(), ed.name(), other.name()));
                return hints;
            }
        }
    }
    if hints.is_empty() {
        let line = match transport {
            Transport::Serial(l) => format!(" at {} baud, {:?} parity", l.baud, l.parity).to_lowercase(),
            _ => String::new(),
        };
        hints.push(format!(
            "no answer{}: check the RS-485 wiring (A and B swapped?), that the meter speaks {proto}{line}, and {}",
            address.map(|a| format!(" from meter {}", format_address(a))).unwrap_or_default(),
            if address.is_some() { "its address (omit --address to find it when the meter is alone on the line)" } else { "that it is powered and alone on the line" }
        ));
    }
    hints
}

/// What `probe --scan` found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Addresses that answered, as on the name plate.
    pub found: Vec<String>,
    pub hints: Vec<String>,
    pub bad_frames: u64,
}

/// Most candidate addresses one scan asks (a scan at 2400 baud takes about a second each when
/// nobody answers).
pub const MAX_CANDIDATES: usize = 256;

/// Parses candidate addresses: comma-separated name-plate numbers, or a range `FIRST-LAST`
/// (at most [`MAX_CANDIDATES`]).
pub fn parse_candidates(protocol: Protocol, s: &str) -> Result<Vec<Vec<u8>>, String> {
    let n = protocol.address_len();
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (x, y): (u64, u64) = (a.trim().parse().map_err(|_| format!("`{a}` is not an address"))?, b.trim().parse().map_err(|_| format!("`{b}` is not an address"))?);
            if y < x || y - x >= MAX_CANDIDATES as u64 {
                return Err(format!("range {part} must run upwards over at most {MAX_CANDIDATES} addresses"));
            }
            for v in x..=y {
                out.push(parse_address(&format!("{v:0w$}", w = n * 2), n)?);
            }
        } else {
            out.push(parse_address(part, n)?);
        }
    }
    if out.len() > MAX_CANDIDATES {
        return Err(format!("{} candidates: at most {MAX_CANDIDATES} per scan", out.len()));
    }
    Ok(out)
}

/// Lists the meters that answer: with no candidates, the wildcard (DL/T 645-2007 read address,
/// else the profile's first read), which only works with one meter on the line; otherwise each
/// candidate address in turn with the profile's first read.
pub async fn scan(profile: &FieldProfile, transport: &Transport, candidates: &[Vec<u8>], mcfg: &ModbusConfig) -> Result<ScanReport, ReadError> {
    let mut link = open(transport, mcfg).await?;
    let mut report = ScanReport::default();
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    if candidates.is_empty() {
        let found = if profile.protocol == Protocol::Dlt645V2007 {
            let mut r = FieldRead::default();
            super::poll::read_address(&mut link, &mut r, mcfg).await.map(|a| format_address(&a))
        } else {
            match first_request(profile, None) {
                Some((req, check, scan)) => link.exchange(&req, timeout, Duration::ZERO, scan, |b| check(b)).await,
                None => Err(ReadError::Frame("the profile has nothing to read".into())),
            }
        };
        if let Ok(a) = found {
            report.found.push(a);
        }
    } else {
        for c in candidates {
            let Some((req, check, scan)) = first_request(profile, Some(c)) else { break };
            if let Ok(a) = link.exchange(&req, timeout, Duration::ZERO, scan, |b| check(b)).await {
                report.found.push(a);
            }
        }
    }
    report.bad_frames = link.bad_frames;
    if report.found.is_empty() {
        report.hints.push(if candidates.is_empty() && report.bad_frames > 0 {
            "garbled answers to the wildcard: several meters answered at once (or the baud rate or parity is wrong); scan their addresses with --candidates".to_string()
        } else if candidates.is_empty() {
            "no meter answered the wildcard: check wiring, baud rate and parity (usually 2400 8E1); with several meters on the line give --candidates".to_string()
        } else {
            format!("none of the {} candidate address(es) answered", candidates.len())
        });
    }
    Ok(report)
}

/// A raw read of one DL/T 645 identifier: the value bytes as sent (after descrambling, least
/// significant byte first) and the address that answered.
pub async fn read_identifier(ed: Edition, transport: &Transport, address: Option<&[u8]>, di: &[u8], mcfg: &ModbusConfig) -> Result<(String, Vec<u8>), ReadError> {
    let mut link = open(transport, mcfg).await?;
    let a: [u8; 6] = match address.and_then(|a| a.try_into().ok()) {
        Some(a) => a,
        None if ed == Edition::V2007 => super::poll::read_address(&mut link, &mut FieldRead::default(), mcfg).await?,
        None => dlt645::WILDCARD,
    };
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let mut value = Vec::new();
    let mut seq = 0u8;
    let mut from: Option<[u8; 6]>;
    loop {
        let req = if seq == 0 { dlt645::read_request(ed, &a, di) } else { dlt645::follow_up_request(ed, &a, di, seq) };
        let ans = link
            .exchange(&req, timeout, Duration::ZERO, dlt645::scan_frame, |b| {
                let f = dlt645::decode(b)?;
                let r = dlt645::answer(ed, &f, &a, di, seq > 0)?;
                Ok((f.address, r))
            })
            .await?;
        from = Some(ans.0);
        match ans.1 {
            dlt645::Answer::Abnormal(e) => return Err(ReadError::Exception(format!("{} {}: {}", ed.name(), hex(di), dlt645::describe_error(ed, e)))),
            dlt645::Answer::Data { value: v, more } => {
                value.extend(v);
                if more && seq < dlt645::MAX_FOLLOW_UPS {
                    seq += 1;
                    continue;
                }
                break;
            }
        }
    }
    Ok((format_address(&from.unwrap_or(a)), value))
}
