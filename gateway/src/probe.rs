//! `energy-gateway probe`: reads one device once, decodes every value, and says what looks wrong
//! with the setup when the answer does not fit: the other framing (Modbus TCP against a serial
//! server in transparent mode, or the reverse), or another word order than the profile's.

use std::time::Duration;

use energy_wire::Quantity;

use crate::poll::{read_device, DeviceRead, Link, ModbusConfig};
use crate::profile::{decode, plan_reads, Order, Profile, Register};
use crate::transport::{ReadError, Transport};

/// What one probe found.
#[derive(Debug)]
pub struct ProbeReport {
    /// Every register of the profile in profile order, with its value if the device gave one.
    pub values: Vec<(Quantity, Option<f64>)>,
    pub read: DeviceRead,
    /// What looks wrong, in words a field engineer can act on.
    pub hints: Vec<String>,
}

impl ProbeReport {
    pub fn ok(&self) -> bool {
        !self.read.values.is_empty()
    }
}

/// Reads the device at `unit` once through `transport`.
pub async fn probe(profile: &Profile, transport: &Transport, unit: u8, mcfg: &ModbusConfig) -> Result<ProbeReport, ReadError> {
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let ctx = transport.connect(timeout).await?;
    let mut link = Link::new(ctx, transport.silence(Duration::from_micros(mcfg.rtu_min_silence_us)));
    let plan = plan_reads(&profile.registers, &profile.limits);
    let read = read_device(&mut link, unit, profile, &plan, 1.0, 1.0, mcfg).await;
    let mut hints = word_order_hints(profile, &read);
    if read.answers.is_empty() && read.errors.iter().any(|e| matches!(e, ReadError::Timeout(_) | ReadError::Transport(_))) {
        if let Some(h) = other_framing_hint(profile, transport, unit, mcfg).await {
            hints.push(h);
        }
    }
    let values = profile.registers.iter().map(|r| (r.quantity, read.values.get(&r.quantity).copied())).collect();
    Ok(ProbeReport { values, read, hints })
}

/// When nothing came back, tries the first read with the other framing on a new connection.
async fn other_framing_hint(profile: &Profile, transport: &Transport, unit: u8, mcfg: &ModbusConfig) -> Option<String> {
    let (other, flag, what) = match transport {
        Transport::Tcp(a) => (Transport::RtuOverTcp(a.clone()), "--rtu-over-tcp", "RTU frames over TCP (a serial server in transparent mode)"),
        Transport::RtuOverTcp(a) => (Transport::Tcp(a.clone()), "--tcp", "Modbus TCP (a Modbus TCP device or a gateway in Modbus TCP mode)"),
        Transport::Serial(_) => return None,
    };
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let ctx = other.connect(timeout).await.ok()?;
    let mut link = Link::new(ctx, Duration::ZERO);
    let first = plan_reads(&profile.registers, &profile.limits).into_iter().next()?;
    match link.read(unit, &first, timeout, Duration::ZERO).await {
        // A well-formed answer, even an exception, means the framing is right.
        Ok(_) | Err(ReadError::Exception(_)) => Some(format!(
            "wrong transport: no answer in {} framing, but the device answers {what}: use {flag} (in the config: {})",
            if matches!(transport, Transport::Tcp(_)) { "Modbus TCP" } else { "RTU" },
            if matches!(other, Transport::Tcp(_)) { "tcp = \"HOST:PORT\"" } else { "rtu_over_tcp = \"HOST:PORT\"" },
        )),
        Err(_) => None,
    }
}

/// For each multi-register value: when it is implausible in the profile's order but plausible in
/// another, says so.
fn word_order_hints(profile: &Profile, read: &DeviceRead) -> Vec<String> {
    let mut suspects: Vec<(Quantity, Order, f64, Order, f64)> = Vec::new();
    for (b, regs) in &read.answers {
        for &i in &b.registers {
            let r = &profile.registers[i];
            if r.ty.registers() < 2 || r.scale_factor.is_some() {
                continue;
            }
            let off = usize::from(r.address - b.address);
            let slice = &regs[off..off + usize::from(r.ty.registers())];
            let order = r.order.unwrap_or(profile.order);
            let configured = scaled(r, slice, order);
            if plausible(r.quantity, configured) {
                continue;
            }
            let better = [Order::ABCD, Order::CDAB, Order::BADC, Order::DCBA]
                .into_iter()
                .filter(|&o| o != order)
                .map(|o| (o, scaled(r, slice, o)))
                .find(|&(_, v)| plausible(r.quantity, v) && v != 0.0);
            if let Some((o, v)) = better {
                suspects.push((r.quantity, order, configured, o, v));
            }
        }
    }
    // One hint per (configured order, better order), with the first values as examples.
    let mut groups: Vec<((Order, Order), Vec<String>)> = Vec::new();
    for (q, order, got, o, v) in suspects {
        let example = format!("{} reads {} {unit} but would be {} {unit}", q.name(), fmt_value(got), fmt_value(v), unit = q.unit());
        match groups.iter_mut().find(|(k, _)| *k == (order, o)) {
            Some((_, xs)) => xs.push(example),
            None => groups.push(((order, o), vec![example])),
        }
    }
    groups
        .into_iter()
        .map(|((order, o), xs)| {
            let shown: Vec<&str> = xs.iter().take(3).map(String::as_str).collect();
            format!(
                "wrong word order? {} value(s) are implausible in order {order:?} and plausible in order {o:?} ({}{}): check the profile's `order` against the device",
                xs.len(),
                shown.join("; "),
                if xs.len() > 3 { "; ..." } else { "" }
            )
        })
        .collect()
}

fn scaled(r: &Register, regs: &[u16], order: Order) -> f64 {
    decode(regs, r.ty, order).as_f64() * r.scale + r.offset
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e9) {
        format!("{v:.4e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Whether `v` (in the quantity's contract unit, before CT/PT ratios) is a value a meter of this
/// kind can show. Generous: it only has to catch the garbage a wrong word order produces
/// (denormal floats, values many orders of magnitude off).
pub fn plausible(q: Quantity, v: f64) -> bool {
    if !v.is_finite() || (v != 0.0 && v.abs() < 1e-12) {
        return false;
    }
    let name = q.name();
    let (lo, hi) = if name.starts_with("voltage") {
        (0.0, 1e6)
    } else if name.starts_with("current") {
        (-1e5, 1e5)
    } else if name == "power_factor" {
        (-1.001, 1.001)
    } else if name == "frequency" {
        (0.0, 500.0)
    } else if name.ends_with("temperature") {
        (-60.0, 300.0)
    } else if name.contains("power") || name == "flow_rate" {
        (-1e7, 1e7)
    } else {
        // Counters: energies and volumes.
        (0.0, 1e12)
    };
    (lo..=hi).contains(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{encode, Block, ValueType};

    #[test]
    fn plausibility_catches_swapped_floats_and_integers() {
        // 230.0f32 read with its words swapped is a denormal.
        let swapped = decode(&encode(230.0, ValueType::F32, Order::ABCD), ValueType::F32, Order::CDAB).as_f64();
        assert!(!plausible(Quantity::VoltageL1, swapped));
        assert!(plausible(Quantity::VoltageL1, 230.0));
        assert!(!plausible(Quantity::PowerFactor, 3.2));
        assert!(!plausible(Quantity::ActiveEnergyImport, -5.0));
        assert!(plausible(Quantity::ActiveEnergyImport, 0.0));
        assert!(!plausible(Quantity::Frequency, 3.3e9));
    }

    #[test]
    fn a_value_plausible_only_in_another_order_gives_a_hint() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles");
        let mut p = crate::profile::load_dir(&dir).unwrap()["eastron/sdm120"].clone();
        p.registers.truncate(1);
        assert_eq!((p.registers[0].quantity, p.registers[0].ty), (Quantity::VoltageL1, ValueType::F32));
        // The profile says CDAB; the device sends ABCD.
        p.order = Order::CDAB;
        let r = &p.registers[0];
        let regs = encode(230.0, ValueType::F32, Order::ABCD);
        let block = Block { function: r.function, address: r.address, count: 2, registers: vec![0], scale_factors: vec![] };
        let read = DeviceRead { answers: vec![(block, regs)], ..Default::default() };
        let hints = word_order_hints(&p, &read);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains("1 value(s) are implausible in order CDAB and plausible in order ABCD"), "{}", hints[0]);
        assert!(hints[0].contains("voltage_l1 reads 2.4178e-41 V but would be 230 V"), "{}", hints[0]);
    }
}
