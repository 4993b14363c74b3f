//! `energy-gateway` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use energy_gateway::config::{DeviceConfig, GatewayConfig, ModbusConfig};
use energy_gateway::transport::{Parity, Transport};
use energy_gateway::profile;

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
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        #[arg(long, default_value = "none", value_parser = ["none", "even", "odd"])]
        parity: String,
        #[arg(long, default_value_t = 8)]
        data_bits: u8,
        #[arg(long, default_value_t = 1)]
        stop_bits: u8,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "device-profiles", env = "ENERGY_GATEWAY_PROFILES_DIR")]
        profiles_dir: PathBuf,
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
        #[arg(long, default_value = "device-profiles", env = "ENERGY_GATEWAY_PROFILES_DIR")]
        profiles_dir: PathBuf,
    },
    /// A profile's registers and read plan.
    Show {
        name: String,
        #[arg(long, default_value = "device-profiles", env = "ENERGY_GATEWAY_PROFILES_DIR")]
        profiles_dir: PathBuf,
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
        Cmd::Run { config } => {
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
        Cmd::CheckConfig { config } => {
            let (cfg, _) = load_config(&config)?;
            println!("{}: ok ({} devices)", config.display(), cfg.devices.len());
            Ok(())
        }
        Cmd::Status { config } => {
            let (cfg, _) = load_config(&config)?;
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
        Cmd::Probe { profile, tcp, rtu_over_tcp, serial, baud, parity, data_bits, stop_bits, unit, json, profiles_dir, timeout_ms } => {
            // The same rules as a [[device]] in the configuration.
            let mut dev = DeviceConfig::tcp("probe", &profile, "", unit);
            dev.tcp = tcp;
            dev.rtu_over_tcp = rtu_over_tcp;
            dev.serial = serial;
            dev.baud = baud;
            dev.parity = match parity.as_str() {
                "even" => Parity::Even,
                "odd" => Parity::Odd,
                _ => Parity::None,
            };
            dev.data_bits = data_bits;
            dev.stop_bits = stop_bits;
            let transport = dev.transport().map_err(|e| {
                eprintln!("{}", e.join("\n"));
                ExitCode::from(2)
            })?;
            probe(&profiles_dir, &profile, &transport, unit, json, timeout_ms).await
        }
        Cmd::Profiles { cmd } => match cmd {
            ProfilesCmd::List { profiles_dir } => {
                for (name, p) in load_profiles(&profiles_dir)? {
                    println!("{name}\t{} {}\t{} registers\t{}", p.vendor, p.model, p.registers.len(), p.source);
                }
                let mqtt = energy_gateway::mqtt_in::load_mqtt_dir(&profiles_dir).map_err(|e| {
                    eprintln!("{e}");
                    ExitCode::from(1)
                })?;
                for (name, p) in mqtt {
                    let n: usize = p.messages.iter().map(|m| m.values.len()).sum();
                    println!("{name}\t{} {}\t{n} values (MQTT)\t{}", p.vendor, p.model, p.source);
                }
                Ok(())
            }
            ProfilesCmd::Show { name, profiles_dir } => {
                let profiles = load_profiles(&profiles_dir)?;
                let Some(p) = profiles.get(&name) else {
                    eprintln!("no profile `{name}` in {}", profiles_dir.display());
                    return Err(ExitCode::from(1));
                };
                println!("{name}: {} {} — {}", p.vendor, p.model, p.description);
                println!("source: {}", p.source);
                println!("order: {:?}, limits: {:?}", p.order, p.limits);
                for r in &p.registers {
                    println!(
                        "  {:<24} fc{} addr {:>5} {:?} {:?} scale {} unit {}",
                        r.quantity.name(),
                        r.function.code(),
                        r.address,
                        r.ty,
                        r.order.unwrap_or(p.order),
                        r.scale,
                        r.unit
                    );
                }
                let plan = profile::plan_reads(&p.registers, &p.limits);
                println!("read plan: {} requests for {} values", plan.len(), p.registers.len());
                for b in plan {
                    println!("  fc{} addr {} count {}", b.function.code(), b.address, b.count);
                }
                Ok(())
            }
            ProfilesCmd::Check { dir } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from("device-profiles"));
                let modbus = profile::load_dir(&dir);
                let mqtt = energy_gateway::mqtt_in::load_mqtt_dir(&dir);
                match (modbus, mqtt) {
                    (Ok(p), Ok(m)) => println!("{}: {} Modbus and {} MQTT profiles, all valid", dir.display(), p.len(), m.len()),
                    (a, b) => {
                        for e in [a.err(), b.err()].into_iter().flatten() {
                            eprintln!("{e}");
                        }
                        return Err(ExitCode::from(1));
                    }
                }
                Ok(())
            }
        },
    }
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
        if json {
            let line = serde_json::json!({ "quantity": q.name(), "value": value, "unit": q.unit() });
            println!("{line}");
        } else {
            match value {
                Some(v) => println!("{:<24} {:>14.4} {}", q.name(), v, q.unit()),
                None => println!("{:<24} {:>14} {}", q.name(), "n/a", q.unit()),
            }
        }
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
