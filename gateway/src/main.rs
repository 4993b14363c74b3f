//! `energy-gateway` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use energy_gateway::config::GatewayConfig;
use energy_gateway::poll::{DeviceConfig, ModbusConfig};
use energy_gateway::transport::{Parity, Transport};
use energy_gateway::profile;

mod commands;

#[derive(Parser)]
#[command(name = "energy-gateway", version, about = "Polls building meters and forwards their readings to energyd without loss")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Run {
        #[arg(long, env = "ENERGY_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and the profiles it uses; every problem is reported, exit 1.
    CheckConfig {
        #[arg(long, env = "ENERGY_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Print a running gateway's queue and device state (from its health server).
    Status {
        #[arg(long, env = "ENERGY_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Read one device once and print every decoded value with its unit, the requests used, and
    /// what looks wrong (other framing, other word order).
    #[command(group = clap::ArgGroup::new("transport").required(true).args(["tcp", "rtu_over_tcp", "serial"]))]
    Probe {
        #[arg(long)]
        profile: String,
        /// Modbus TCP device or gateway, HOST:PORT.
        #[arg(long)]
        tcp: Option<String>,
        /// Serial server in transparent mode (RTU frames over TCP), HOST:PORT.
        #[arg(long)]
        rtu_over_tcp: Option<String>,
        /// Local serial port with RTU framing, e.g. /dev/ttyUSB0.
        #[arg(long)]
        serial: Option<String>,
        /// Baud rate (default 9600 for Modbus, the profile's or 2400 for DL/T 645 and CJ/T 188).
        #[arg(long)]
        baud: Option<u32>,
        /// Parity (default none for Modbus, the profile's or even for DL/T 645 and CJ/T 188).
        #[arg(long, value_parser = ["none", "even", "odd"])]
        parity: Option<String>,
        #[arg(long, default_value_t = 8)]
        data_bits: u8,
        #[arg(long, default_value_t = 1)]
        stop_bits: u8,
        /// Modbus unit id.
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// DL/T 645 (12 digits) or CJ/T 188 (14 digits) meter address; without it the address is
        /// read with the wildcard first (only one meter may be on the line).
        #[arg(long)]
        address: Option<String>,
        /// List the DL/T 645 / CJ/T 188 meters that answer instead of reading one.
        #[arg(long)]
        scan: bool,
        /// Addresses `--scan` asks: `A,B,C` or a range `FIRST-LAST` (at most 256).
        #[arg(long)]
        candidates: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, alias = "profiles", env = "ENERGY_GATEWAY_PROFILES_DIR")]
        profiles_dir: Option<PathBuf>,
        /// Time to wait for each answer (DL/T 645 meters at 2400 baud need 100-500 ms).
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Read one Modbus register range or one DL/T 645 identifier (or a CJ/T 188 meter's current
    /// data) and print it raw and decoded, like mbpoll; repeatable with an interval.
    #[command(group = clap::ArgGroup::new("read_transport").required(true).args(["tcp", "rtu_over_tcp", "serial"]))]
    Read {
        /// `modbus`, `dlt645-2007`, `dlt645-1997` or `cjt188`.
        #[arg(long, default_value = "modbus", value_parser = ["modbus", "dlt645-2007", "dlt645-1997", "cjt188"])]
        protocol: String,
        /// Modbus TCP (with --protocol modbus) or a serial server in transparent mode.
        #[arg(long)]
        tcp: Option<String>,
        #[arg(long)]
        rtu_over_tcp: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        baud: Option<u32>,
        #[arg(long, value_parser = ["none", "even", "odd"])]
        parity: Option<String>,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// Modbus register address, decimal or hex as manuals write it (0x2006).
        #[arg(long)]
        register: Option<String>,
        /// Number of 16-bit registers.
        #[arg(long, default_value_t = 2)]
        count: u16,
        /// Read input registers (function 4) instead of holding registers (function 3).
        #[arg(long)]
        input: bool,
        /// Modbus value type to decode (u16, i16, u32, i32, u64, i64, f32, f64).
        #[arg(long = "type")]
        ty: Option<String>,
        /// Word order for --type (ABCD, CDAB, BADC, DCBA).
        #[arg(long, default_value = "ABCD")]
        order: String,
        /// DL/T 645 meter address (12 digits); CJ/T 188 (14 digits). Default: found or wildcard.
        #[arg(long)]
        address: Option<String>,
        /// DL/T 645 data identifier as tables write it: "00 01 00 00" (2007) or "90 10" (1997).
        #[arg(long)]
        di: Option<String>,
        /// DL/T 645 value format, e.g. XXXXXX.XX.
        #[arg(long)]
        format: Option<String>,
        /// The value's top bit is its sign (DL/T 645-2007 currents, powers, power factor).
        #[arg(long)]
        signed: bool,
        /// CJ/T 188 meter type (10 cold water, 11 hot water, 20 heat, 21 cooling, 30 gas).
        #[arg(long, default_value = "10")]
        meter_type: String,
        /// CJ/T 188: byte order of DI 901F in the request, `low-first` (`1F 90`, the default) or
        /// `high-first` (`90 1F`), as the profile key `di_order`.
        #[arg(long, value_parser = ["low-first", "high-first"])]
        di_order: Option<String>,
        /// CJ/T 188: each value's unit code `after` the value (the default) or `before` it, as
        /// the profile key `unit_position`.
        #[arg(long, value_parser = ["after", "before"])]
        unit_position: Option<String>,
        /// Read this many times (0: until interrupted).
        #[arg(long, default_value_t = 1)]
        repeat: u64,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Device profiles.
    Profiles {
        #[command(subcommand)]
        cmd: ProfilesCmd,
    },
}

#[derive(Subcommand)]
enum ProfilesCmd {
    /// One profile a line, its name first.
    List {
        /// Where the profiles are (default: ./device-profiles, next to the binary, or the
        /// installed /usr/share/energy/device-profiles).
        #[arg(long, alias = "profiles", env = "ENERGY_GATEWAY_PROFILES_DIR")]
        profiles_dir: Option<PathBuf>,
    },
    /// A profile's registers (or identifiers) and read plan, as a table.
    Show {
        name: String,
        #[arg(long, alias = "profiles", env = "ENERGY_GATEWAY_PROFILES_DIR")]
        profiles_dir: Option<PathBuf>,
    },
    /// Validate every profile below DIR; exit 1 on any invalid one.
    Check { dir: Option<PathBuf> },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init();
}

fn load_profiles(dir: &std::path::Path) -> Result<std::collections::BTreeMap<String, profile::Profile>, ExitCode> {
    profile::load_dir(dir).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    energy_gateway::tls::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

async fn real_main(cli: Cli) -> Result<(), ExitCode> {
    match cli.cmd {
        Cmd::Run { config } => run(config).await,
        Cmd::CheckConfig { config } => {
            let (cfg, _) = load_config(&config)?;
            println!("{}: ok ({} devices)", config.display(), cfg.devices.len());
            Ok(())
        }
        Cmd::Status { config } => status(&config).await,
        Cmd::Probe { profile, tcp, rtu_over_tcp, serial, baud, parity, data_bits, stop_bits, unit, address, scan, candidates, json, profiles_dir, timeout_ms } => {
            let dir = commands::profiles_dir(profiles_dir.as_deref())?;
            let field = commands::load_field(&dir)?;
            // The same rules as a [[device]] in the configuration.
            let mut dev = DeviceConfig::tcp("probe", &profile, "", unit);
            dev.tcp = tcp;
            dev.rtu_over_tcp = rtu_over_tcp;
            dev.serial = serial;
            dev.baud = baud;
            dev.parity = parity.as_deref().map(commands::parity);
            dev.data_bits = data_bits;
            dev.stop_bits = stop_bits;
            if let Some(fp) = field.get(&profile) {
                let transport = dev.transport_with(fp.line()).map_err(|e| {
                    eprintln!("{}", e.join("\n"));
                    ExitCode::from(2)
                })?;
                let mcfg = ModbusConfig { timeout_ms, retries: 1, ..ModbusConfig::default() };
                return commands::probe_field(fp, &transport, address.as_deref(), scan, candidates.as_deref(), json, &mcfg).await;
            }
            if scan || address.is_some() {
                eprintln!("--scan and --address are for DL/T 645 and CJ/T 188 profiles; `{profile}` is not one (Modbus devices are chosen with --unit)");
                return Err(ExitCode::from(2));
            }
            let transport = dev.transport().map_err(|e| {
                eprintln!("{}", e.join("\n"));
                ExitCode::from(2)
            })?;
            probe(&dir, &profile, &transport, unit, json, timeout_ms).await
        }
        Cmd::Read { protocol, tcp, rtu_over_tcp, serial, baud, parity, unit, register, count, input, ty, order, address, di, format, signed, meter_type, di_order, unit_position, repeat, interval_ms, timeout_ms } => {
            let mut dev = DeviceConfig::tcp("read", "", "", unit);
            dev.tcp = tcp;
            dev.rtu_over_tcp = rtu_over_tcp;
            dev.serial = serial;
            dev.baud = baud;
            dev.parity = parity.as_deref().map(commands::parity);
            let defaults = if protocol == "modbus" { (9600, Parity::None) } else { (2400, Parity::Even) };
            let transport = dev.transport_with(defaults).map_err(|e| {
                eprintln!("{}", e.join("\n"));
                ExitCode::from(2)
            })?;
            if protocol != "cjt188" && (di_order.is_some() || unit_position.is_some()) {
                eprintln!("--di-order and --unit-position are for --protocol cjt188");
                return Err(ExitCode::from(2));
            }
            let req = commands::ReadRequest { protocol, unit, register, count, input, ty, order, address, di, format, signed, meter_type, di_order, unit_position };
            let mcfg = ModbusConfig { timeout_ms, retries: 0, ..ModbusConfig::default() };
            commands::read(&transport, &req, repeat, interval_ms, &mcfg).await
        }
        Cmd::Profiles { cmd } => match cmd {
            ProfilesCmd::List { profiles_dir } => {
                let dir = commands::profiles_dir(profiles_dir.as_deref())?;
                commands::list_profiles(&dir)
            }
            ProfilesCmd::Show { name, profiles_dir } => {
                let dir = commands::profiles_dir(profiles_dir.as_deref())?;
                commands::show_profile(&dir, &name)
            }
            ProfilesCmd::Check { dir } => check_profiles(&dir.unwrap_or_else(|| PathBuf::from("device-profiles"))),
        },
    }
}

/// `run`: the gateway until SIGTERM or Ctrl-C; SIGHUP reloads the device list.
async fn run(config: PathBuf) -> Result<(), ExitCode> {
    let (cfg, profiles) = load_config(&config)?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        energy_gateway::shutdown_signal().await;
        tracing::info!("shutting down: stopping polls, syncing the queue, draining the uplink");
        c.cancel();
    });
    energy_gateway::run_with_reload(cfg, profiles, cancel, Some(config)).await.map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

/// `status`: the running gateway's `/status`, pretty-printed.
async fn status(config: &std::path::Path) -> Result<(), ExitCode> {
    let (cfg, _) = load_config(config)?;
    let Some(addr) = cfg.health.listen else {
        eprintln!("{}: health.listen is not set, so there is no status to ask", config.display());
        return Err(ExitCode::from(1));
    };
    let url = format!("http://{addr}/status");
    let body = reqwest::get(&url).await.and_then(reqwest::Response::error_for_status).map_err(|e| {
        eprintln!("cannot read {url}: {e} (is the gateway running?)");
        ExitCode::from(1)
    })?;
    let text = body.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

/// `profiles check`: every Modbus, DL/T 645 / CJ/T 188 and MQTT profile in `dir` loads.
fn check_profiles(dir: &std::path::Path) -> Result<(), ExitCode> {
    let modbus = profile::load_dir(dir);
    let mqtt = energy_gateway::profile::mqtt::load_mqtt_dir(dir);
    let field = energy_gateway::field::profile::load_field_dir(dir);
    match (modbus, mqtt, field) {
        (Ok(p), Ok(m), Ok(f)) => println!("{}: {} Modbus, {} DL/T 645 / CJ/T 188 and {} MQTT profiles, all valid", dir.display(), p.len(), f.len(), m.len()),
        (a, b, c) => {
            for e in [a.err(), b.err(), c.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return Err(ExitCode::from(1));
        }
    }
    Ok(())
}

fn load_config(path: &std::path::Path) -> Result<(GatewayConfig, std::collections::BTreeMap<String, profile::Profile>), ExitCode> {
    let cfg = GatewayConfig::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })?;
    let profiles = energy_gateway::load_and_validate(&cfg).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(1)
    })?;
    Ok((cfg, profiles))
}

async fn probe(dir: &std::path::Path, name: &str, transport: &Transport, unit: u8, json: bool, timeout_ms: u64) -> Result<(), ExitCode> {
    let profiles = load_profiles(dir)?;
    let Some(p) = profiles.get(name) else {
        eprintln!("no profile `{name}` in {}", dir.display());
        return Err(ExitCode::from(1));
    };
    let mcfg = ModbusConfig { timeout_ms, retries: 0, ..ModbusConfig::default() };
    let report = energy_gateway::probe::probe(p, transport, unit, &mcfg).await.map_err(|e| {
        eprintln!("cannot connect to {transport}: {e}");
        ExitCode::from(1)
    })?;
    for (q, value) in &report.values {
        commands::print_value(*q, *value, json)?;
    }
    for l in &report.read.reads {
        let res = match &l.result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        eprintln!("request fc{} addr {} count {}: {res} ({:.1} ms)", l.function.code(), l.address, l.count, l.duration.as_secs_f64() * 1e3);
    }
    for h in &report.hints {
        eprintln!("hint: {h}");
    }
    if report.ok() {
        Ok(())
    } else {
        Err(ExitCode::from(1))
    }
}
