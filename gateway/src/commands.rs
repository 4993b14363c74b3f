//! Field-engineer commands of the `energy-gateway` binary: finding the shipped profiles, listing
//! and showing them as tables, the DL/T 645 / CJ/T 188 probe and scan, and the raw `read`.
//! Output stops quietly when its reader goes away (`| head`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use energy_gateway::poll::ModbusConfig;
use energy_gateway::field::dlt645::{Edition, Format};
use energy_gateway::field::frame::{hex, parse_address, parse_hex};
use energy_gateway::field::profile::{load_field_dir, FieldProfile, Protocol};
use energy_gateway::field::{cjt188, probe as fprobe};
use energy_gateway::poll::Link;
use energy_gateway::profile::{self, Block, Function, Order, Ratio, ValueType};
use energy_gateway::transport::{Parity, Transport};

/// The installed profile directory (Debian-style layout; see deploy/README.md).
pub(crate) const INSTALLED_PROFILES: &str = "/usr/share/energy/device-profiles";

/// Prints one line; a closed pipe ends the program quietly (exit 0).
pub(crate) fn out(line: &str) -> Result<(), ExitCode> {
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("cannot write output: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Where the profiles are: the given directory, else `./device-profiles`, `device-profiles`
/// next to the binary, `../share/energy/device-profiles` from the binary's directory (a
/// `/usr/local` or `/opt` install), or the installed `/usr/share/energy/device-profiles`.
pub(crate) fn profiles_dir(given: Option<&Path>) -> Result<PathBuf, ExitCode> {
    let exe = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    find_profiles_dir(given, exe.as_deref()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

fn find_profiles_dir(given: Option<&Path>, exe_dir: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(d) = given {
        return if d.is_dir() { Ok(d.to_path_buf()) } else { Err(format!("profile directory {} does not exist", d.display())) };
    }
    let mut tried = vec![PathBuf::from("device-profiles")];
    if let Some(e) = exe_dir {
        tried.push(e.join("device-profiles"));
        tried.push(e.join("../share/energy/device-profiles"));
        // A build tree: target/debug/energy-gateway next to the repository's device-profiles.
        tried.push(e.join("../../device-profiles"));
    }
    tried.push(PathBuf::from(INSTALLED_PROFILES));
    tried.iter().find(|d| d.is_dir()).cloned().ok_or_else(|| {
        format!(
            "no device profiles found (looked in {}); give --profiles-dir DIR or set ENERGY_GATEWAY_PROFILES_DIR",
            tried.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

pub(crate) fn parity(s: &str) -> Parity {
    match s {
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        _ => Parity::None,
    }
}

pub(crate) fn load_field(dir: &Path) -> Result<BTreeMap<String, FieldProfile>, ExitCode> {
    load_field_dir(dir).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

/// Rows as aligned columns on a terminal, tab-separated when piped (for scripts).
fn table(header: &[&str], rows: &[Vec<String>]) -> Result<(), ExitCode> {
    if !std::io::stdout().is_terminal() {
        for r in rows {
            out(&r.join("\t"))?;
        }
        return Ok(());
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == n { c } else { format!("{c:<w$}", w = width[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    out(&line(header.iter().map(ToString::to_string).collect()))?;
    for r in rows {
        out(&line(r.clone()))?;
    }
    Ok(())
}

pub(crate) fn list_profiles(dir: &Path) -> Result<(), ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("{e}");
        ExitCode::from(1)
    };
    let modbus = profile::load_dir(dir).map_err(|e| fail(&e))?;
    let field = load_field(dir)?;
    let mqtt = energy_gateway::profile::mqtt::load_mqtt_dir(dir).map_err(|e| fail(&e))?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (name, p) in &modbus {
        rows.push(vec![name.clone(), format!("{} {}", p.vendor, p.model), format!("{} registers", p.registers.len()), p.source.clone()]);
    }
    for (name, p) in &field {
        rows.push(vec![name.clone(), format!("{} {}", p.vendor, p.model), format!("{} values ({})", p.quantities().len(), p.protocol.name()), p.source.clone()]);
    }
    for (name, p) in &mqtt {
        let n: usize = p.messages.iter().map(|m| m.values.len()).sum();
        rows.push(vec![name.clone(), format!("{} {}", p.vendor, p.model), format!("{n} values (MQTT)"), p.source.clone()]);
    }
    rows.sort();
    table(&["PROFILE", "MODEL", "READS", "SOURCE"], &rows)
}

pub(crate) fn show_profile(dir: &Path, name: &str) -> Result<(), ExitCode> {
    let field = load_field(dir)?;
    if let Some(p) = field.get(name) {
        out(&format!("{name}: {} {} — {}", p.vendor, p.model, p.description))?;
        out(&format!("protocol: {}", p.protocol.name()))?;
        out(&format!("source:   {}", p.source))?;
        let (baud, par) = p.line();
        out(&format!("line:     {baud} baud, 8 data bits, {} parity, 1 stop bit (unless configured)", format!("{par:?}").to_lowercase()))?;
        out("")?;
        if p.protocol == Protocol::Cjt188 {
            out(&format!("meter type {:02X} ({}), read with DI 90 1F; units converted from the reply's unit codes", p.meter_type_code, cjt188::MeterType::from_code(p.meter_type_code).map_or("?", cjt188::MeterType::name)))?;
            out(&format!(
                "DI sent {} (di_order = \"{}\"); unit code {} each value (unit_position = \"{}\")",
                hex(&p.di_order().current()),
                p.di_order().name(),
                p.unit_position().name(),
                p.unit_position().name()
            ))?;
            let rows: Vec<Vec<String>> = p.values.iter().map(|v| vec![v.field.name().to_string(), v.quantity.name().to_string(), v.unit.clone()]).collect();
            return table(&["FIELD", "QUANTITY", "UNIT"], &rows);
        }
        let mut rows = Vec::new();
        for r in &p.reads {
            let mut offset = 0;
            for v in &r.values {
                let bytes = v.fmt.map_or(0, Format::bytes);
                rows.push(vec![
                    hex(&r.di_bytes),
                    format!("+{offset}"),
                    v.format.clone(),
                    bytes.to_string(),
                    if v.signed { "yes" } else { "" }.to_string(),
                    v.quantity.name().to_string(),
                    if v.scale == 1.0 { String::new() } else { format!("x{}", v.scale) },
                    if v.ratio() == Ratio::None { String::new() } else { v.ratio().name().to_string() },
                    v.unit.clone(),
                ]);
                offset += bytes;
            }
        }
        table(&["DI", "BYTE", "FORMAT", "BYTES", "SIGNED", "QUANTITY", "SCALE", "RATIO", "UNIT"], &rows)?;
        out("RATIO: multiplied by the device's ct_ratio, pt_ratio or both (ct_pt) from the gateway configuration (default 1)")?;
        return out(&format!("read plan: {} requests for {} values (each identifier one request, follow-up frames as the meter sends them)", p.reads.len(), p.quantities().len()));
    }
    let modbus = profile::load_dir(dir).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })?;
    let Some(p) = modbus.get(name) else {
        eprintln!("no profile `{name}` in {} (see `energy-gateway profiles list`)", dir.display());
        return Err(ExitCode::from(1));
    };
    out(&format!("{name}: {} {} — {}", p.vendor, p.model, p.description))?;
    out("protocol: modbus")?;
    out(&format!("source:   {}", p.source))?;
    out(&format!(
        "order:    {:?}; limits: at most {} registers a read, gaps up to {}{}",
        p.order,
        p.limits.max_registers,
        p.limits.max_gap,
        if p.limits.boundaries.is_empty() { String::new() } else { format!(", never across {:?}", p.limits.boundaries) }
    ))?;
    out("")?;
    let rows: Vec<Vec<String>> = p
        .registers
        .iter()
        .map(|r| {
            vec![
                format!("0x{:04X}", r.address),
                r.address.to_string(),
                format!("{:02}", r.function.code()),
                format!("{:?}", r.ty).to_lowercase(),
                format!("{:?}", r.order.unwrap_or(p.order)),
                format!("{}", r.scale),
                r.quantity.name().to_string(),
                r.unit.clone(),
            ]
        })
        .collect();
    table(&["REGISTER", "DEC", "FC", "TYPE", "ORDER", "SCALE", "QUANTITY", "UNIT"], &rows)?;
    let plan = profile::plan_reads(&p.registers, &p.limits);
    out(&format!("read plan: {} requests for {} values", plan.len(), p.registers.len()))?;
    for b in plan {
        out(&format!("  fc{:02} 0x{:04X} count {}", b.function.code(), b.address, b.count))?;
    }
    Ok(())
}

pub(crate) fn print_value(q: energy_wire::Quantity, v: Option<f64>, json: bool) -> Result<(), ExitCode> {
    if json {
        return out(&serde_json::json!({ "quantity": q.name(), "value": v, "unit": q.unit() }).to_string());
    }
    match v {
        Some(v) => out(&format!("{:<24} {:>14.4} {}", q.name(), v, q.unit())),
        None => out(&format!("{:<24} {:>14} {}", q.name(), "n/a", q.unit())),
    }
}

pub(crate) async fn probe_field(p: &FieldProfile, transport: &Transport, address: Option<&str>, scan: bool, candidates: Option<&str>, json: bool, mcfg: &ModbusConfig) -> Result<(), ExitCode> {
    let bad = |e: String| {
        eprintln!("{e}");
        ExitCode::from(2)
    };
    if scan {
        let cands = match candidates {
            Some(c) => fprobe::parse_candidates(p.protocol, c).map_err(bad)?,
            None => Vec::new(),
        };
        let r = fprobe::scan(p, transport, &cands, mcfg).await.map_err(|e| {
            eprintln!("cannot open {transport}: {e}");
            ExitCode::from(1)
        })?;
        for a in &r.found {
            if json {
                out(&serde_json::json!({ "address": a, "protocol": p.protocol.name() }).to_string())?;
            } else {
                out(&format!("{a}  answers ({})", p.protocol.name()))?;
            }
        }
        if r.bad_frames > 0 {
            eprintln!("{} frame(s) with a wrong checksum were dropped", r.bad_frames);
        }
        for h in &r.hints {
            eprintln!("hint: {h}");
        }
        return if r.found.is_empty() { Err(ExitCode::from(1)) } else { Ok(()) };
    }
    let addr = address.map(|a| parse_address(a, p.protocol.address_len())).transpose().map_err(bad)?;
    let r = fprobe::probe(p, transport, addr, mcfg).await.map_err(|e| {
        eprintln!("cannot open {transport}: {e}");
        ExitCode::from(1)
    })?;
    if let Some(a) = &r.read.address {
        eprintln!("meter address: {a}");
    }
    for (q, v) in &r.values {
        print_value(*q, *v, json)?;
    }
    for l in &r.read.reads {
        let res = match &l.result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        eprintln!("request {}: {res} ({:.1} ms)", l.what, l.duration.as_secs_f64() * 1e3);
    }
    if r.bad_frames > 0 {
        eprintln!("{} frame(s) with a wrong checksum were dropped", r.bad_frames);
    }
    for s in &r.read.state {
        eprintln!("meter state: {s}");
    }
    for s in &r.read.problems {
        eprintln!("value problem: {s}");
    }
    for h in &r.hints {
        eprintln!("hint: {h}");
    }
    if r.ok() {
        Ok(())
    } else {
        Err(ExitCode::from(1))
    }
}

/// What `energy-gateway read` reads.
pub(crate) struct ReadRequest {
    pub(crate) protocol: String,
    pub(crate) unit: u8,
    pub(crate) register: Option<String>,
    pub(crate) count: u16,
    pub(crate) input: bool,
    pub(crate) ty: Option<String>,
    pub(crate) order: String,
    pub(crate) address: Option<String>,
    pub(crate) di: Option<String>,
    pub(crate) format: Option<String>,
    pub(crate) signed: bool,
    pub(crate) meter_type: String,
    /// CJ/T 188 variant keys as profiles write them (`di_order`, `unit_position`).
    pub(crate) di_order: Option<String>,
    pub(crate) unit_position: Option<String>,
}

fn parse_register(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) { u16::from_str_radix(h, 16) } else { t.parse() };
    r.map_err(|_| format!("register `{s}` is not a number (decimal, or hex as 0x2006)"))
}

/// Reads once, or `repeat` times (0: forever) every `interval_ms`.
pub(crate) async fn read(transport: &Transport, req: &ReadRequest, repeat: u64, interval_ms: u64, mcfg: &ModbusConfig) -> Result<(), ExitCode> {
    let bad = |e: String| {
        eprintln!("{e}");
        ExitCode::from(2)
    };
    let mut n = 0u64;
    let mut failures = 0u64;
    loop {
        let start = std::time::Instant::now();
        let line = match req.protocol.as_str() {
            "modbus" => read_modbus(transport, req, mcfg).await,
            "cjt188" => read_cjt(transport, req, mcfg).await,
            p => {
                let ed = if p == "dlt645-1997" { Edition::V1997 } else { Edition::V2007 };
                read_dlt(ed, transport, req, mcfg).await
            }
        };
        match line {
            Ok(l) => out(&format!("{l}  ({:.0} ms)", start.elapsed().as_secs_f64() * 1e3))?,
            Err(Fail::Usage(e)) => return Err(bad(e)),
            Err(Fail::Read(e)) => {
                failures += 1;
                eprintln!("read failed: {e}");
            }
        }
        n += 1;
        if repeat != 0 && n >= repeat {
            break;
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    if failures == n {
        Err(ExitCode::from(1))
    } else {
        Ok(())
    }
}

enum Fail {
    Usage(String),
    Read(String),
}

async fn read_modbus(transport: &Transport, req: &ReadRequest, mcfg: &ModbusConfig) -> Result<String, Fail> {
    let reg = parse_register(req.register.as_deref().ok_or_else(|| Fail::Usage("--register is needed for a Modbus read".into()))?).map_err(Fail::Usage)?;
    let ty: Option<ValueType> = req
        .ty
        .as_deref()
        .map(|t| serde_json::from_value(serde_json::Value::String(t.to_lowercase())).map_err(|_| Fail::Usage(format!("--type `{t}` is not one of u16, i16, u32, i32, u64, i64, f32, f64"))))
        .transpose()?;
    let order: Order = serde_json::from_value(serde_json::Value::String(req.order.to_uppercase())).map_err(|_| Fail::Usage(format!("--order `{}` is not ABCD, CDAB, BADC or DCBA", req.order)))?;
    let count = ty.map_or(req.count, ValueType::registers);
    let timeout = Duration::from_millis(mcfg.timeout_ms);
    let ctx = transport.connect(timeout).await.map_err(|e| Fail::Read(e.to_string()))?;
    let mut link = Link::new(ctx, transport.silence(Duration::ZERO));
    let block = Block { function: if req.input { Function::Input } else { Function::Holding }, address: reg, count, registers: vec![], scale_factors: vec![] };
    let regs = link.read(req.unit, &block, timeout, Duration::ZERO).await.map_err(|e| Fail::Read(e.to_string()))?;
    let words = regs.iter().map(|w| format!("{w:04X}")).collect::<Vec<_>>().join(" ");
    let decoded = ty.map(|t| format!("  = {}", profile::decode(&regs, t, order).as_f64())).unwrap_or_default();
    Ok(format!("unit {} fc{:02} 0x{reg:04X} ({reg}) x{count}: {words}{decoded}", req.unit, block.function.code()))
}

async fn read_dlt(ed: Edition, transport: &Transport, req: &ReadRequest, mcfg: &ModbusConfig) -> Result<String, Fail> {
    let di = parse_hex(req.di.as_deref().ok_or_else(|| Fail::Usage("--di is needed for a DL/T 645 read (e.g. --di \"00 01 00 00\")".into()))?).map_err(Fail::Usage)?;
    if di.len() != ed.di_len() {
        return Err(Fail::Usage(format!("{} identifiers have {} bytes, --di has {}", ed.name(), ed.di_len(), di.len())));
    }
    let fmt = req.format.as_deref().map(Format::parse).transpose().map_err(Fail::Usage)?;
    let addr = req.address.as_deref().map(|a| parse_address(a, 6)).transpose().map_err(Fail::Usage)?;
    let (from, value) = fprobe::read_identifier(ed, transport, addr.as_deref(), &di, mcfg).await.map_err(|e| Fail::Read(e.to_string()))?;
    let decoded = match fmt {
        Some(f) => match value.get(..f.bytes()).and_then(|b| f.value(b, req.signed)) {
            Some(v) => format!("  = {v}"),
            None => format!("  (not a {} value)", req.format.clone().unwrap_or_default()),
        },
        None => String::new(),
    };
    Ok(format!("meter {from} {}: {}{decoded}", hex(&di), hex(&value)))
}

async fn read_cjt(transport: &Transport, req: &ReadRequest, mcfg: &ModbusConfig) -> Result<String, Fail> {
    let ty = parse_hex(&req.meter_type).ok().filter(|b| b.len() == 1 && cjt188::MeterType::from_code(b[0]).is_some()).ok_or_else(|| Fail::Usage(format!("--meter-type `{}` is not a CJ/T 188 meter type", req.meter_type)))?[0];
    let mut text = format!(
        "vendor = \"-\"\nmodel = \"-\"\nsource = \"command line\"\nprotocol = \"cjt188\"\nmeter_type = \"{:02X}\"\n",
        ty,
    );
    // The variant keys go through the profile's own parser: one spelling, one error text (the
    // command line allows only the keys' values, so they need no escaping).
    for (key, v) in [("di_order", &req.di_order), ("unit_position", &req.unit_position)] {
        if let Some(v) = v {
            text.push_str(&format!("{key} = {v:?}\n"));
        }
    }
    text.push_str(&format!(
        "[[value]]\nfield = \"volume\"\nquantity = \"{}\"\nunit = \"m³\"\n",
        if cjt188::MeterType::from_code(ty).is_some_and(cjt188::MeterType::is_heat) { "heat_volume" } else { "water_volume" }
    ));
    let p = energy_gateway::field::profile::parse_field_profile("read", "read", &text).map_err(|e| Fail::Usage(format!("{e:?}")))?;
    let addr = req.address.as_deref().map(|a| parse_address(a, 7)).transpose().map_err(Fail::Usage)?;
    let r = fprobe::probe(&p, transport, addr, mcfg).await.map_err(|e| Fail::Read(e.to_string()))?;
    // The probe's hints name the flag to change (--di-order, --unit-position) as profile keys.
    for h in &r.hints {
        eprintln!("hint: {h}");
    }
    if r.hints.iter().any(|h| h.contains("di_order") || h.contains("unit_position")) {
        eprintln!("hint: with `read`, di_order and unit_position are the flags --di-order and --unit-position");
    }
    if let Some(e) = r.read.errors.first() {
        return Err(Fail::Read(e.to_string()));
    }
    let vals: Vec<String> = r.read.values.iter().map(|(q, v)| format!("{}={v} {}", q.name(), q.unit())).collect();
    Ok(format!(
        "meter {} 90 1F (sent {}, unit codes {}): {}; {}",
        r.read.address.clone().unwrap_or_default(),
        hex(&p.di_order().current()),
        p.unit_position().name(),
        vals.join(", "),
        r.read.state.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_directory_is_found_next_to_the_binary_or_installed() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir_all(bin.join("device-profiles")).unwrap();
        assert_eq!(find_profiles_dir(None, Some(&bin)).unwrap(), bin.join("device-profiles"));
        let share = d.path().join("usr");
        std::fs::create_dir_all(share.join("bin")).unwrap();
        std::fs::create_dir_all(share.join("share/energy/device-profiles")).unwrap();
        assert_eq!(find_profiles_dir(None, Some(&share.join("bin"))).unwrap(), share.join("bin/../share/energy/device-profiles"));
        assert!(find_profiles_dir(Some(&d.path().join("nope")), None).unwrap_err().contains("does not exist"));
        assert_eq!(parse_register("0x2006").unwrap(), 0x2006);
        assert_eq!(parse_register("8198").unwrap(), 8198);
        assert!(parse_register("0xZZ").is_err());
    }
}
