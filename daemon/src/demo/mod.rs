//! `energyd demo`: the whole system on loopback with simulated meters, and `energyd simulate`:
//! simulated meters only.
//!
//! The demo starts, in one process but over real sockets:
//!
//! * three simulated Modbus TCP buses ([`sim`]), one per building, each with an electricity, a
//!   water and a heat meter, whose values follow [`load`];
//! * the daemon with its embedded store in `--data` and its HTTP server on `--listen`;
//! * the real gateway (`energy_gateway::start`), polling the buses and sending batches to the
//!   daemon's `POST /api/v1/ingest` through its durable queue in `<data>/gateway-queue`;
//! * a history seeder that posts the current year so far, from the same load model, through the
//!   same `POST /api/v1/ingest` as gateway `demo-history`, resuming where it stopped.

pub mod load;
pub mod sim;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone};
use energy_wire::{Batch, Sample};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;

use load::{MeterModel, Model, EPOCH_MS, SLOT_MS};
use sim::{start_bus, ServedLog, SimMeter};

/// Profiles of the simulated meters.
pub const ELECTRICITY_PROFILE: &str = "eastron/sdm630";
pub const WATER_PROFILE: &str = "siemens/mag6000";
pub const HEAT_PROFILE: &str = "aquametro/calec-st";

/// The gateway id under which the demo seeds history.
pub const HISTORY_GATEWAY: &str = "demo-history";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Data directory: the store, the gateway's queue and the demo's registry.
    #[arg(long, default_value = "data", env = "ENERGYD_DEMO_DATA")]
    pub data: PathBuf,
    /// Address of the daemon's HTTP server (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080", env = "ENERGYD_DEMO_LISTEN")]
    pub listen: String,
    /// Directory of device profiles (defaults to the repository's `device-profiles`).
    #[arg(long, env = "ENERGYD_DEMO_PROFILES")]
    pub profiles: Option<PathBuf>,
    /// Poll interval of the simulated meters, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub interval_ms: u64,
    /// First day of seeded history (default: 1 January of last year, so that this year compares with last year).
    #[arg(long)]
    pub seed_from: Option<chrono::NaiveDate>,
    /// Do not seed history.
    #[arg(long)]
    pub no_seed: bool,
    /// Where the demo's gateway serves `/healthz`, `/metrics` and `/status` (loopback only;
    /// `off`: nowhere). Prometheus scrapes it with `deploy/prometheus/demo.yml`.
    #[arg(long, default_value = "127.0.0.1:9108", env = "ENERGYD_DEMO_GATEWAY_LISTEN")]
    pub gateway_listen: String,
}

/// The demo gateway's health listener: `--gateway-listen` unless `off`; when that address is
/// taken (another demo runs), none, said on stderr: the demo runs without it.
fn gateway_health(listen: &str) -> Result<energy_gateway::config::HealthConfig, DemoError> {
    if listen == "off" {
        return Ok(energy_gateway::config::HealthConfig::default());
    }
    let addr = loopback_only(listen).map_err(|e| DemoError::Msg(format!("--gateway-listen: {e}")))?;
    match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            // The gateway binds it again once this one is closed.
            let bound = l.local_addr().map_or_else(|_| listen.to_string(), |a| a.to_string());
            drop(l);
            Ok(energy_gateway::config::HealthConfig { listen: Some(bound) })
        }
        Err(e) => {
            eprintln!("the demo gateway's /metrics is off: cannot listen on {listen} ({e}); give --gateway-listen another address");
            Ok(energy_gateway::config::HealthConfig::default())
        }
    }
}

/// A simulator file (`energyd simulate --config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFile {
    pub profiles_dir: PathBuf,
    /// Record every counter value served (JSON lines), for tests that compare with the store.
    #[serde(default)]
    pub served_log: Option<PathBuf>,
    #[serde(rename = "bus")]
    pub buses: Vec<SimBus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimBus {
    #[serde(default = "any_port")]
    pub listen: String,
    #[serde(rename = "meter")]
    pub meters: Vec<SimMeterSpec>,
}

fn any_port() -> String {
    "127.0.0.1:0".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMeterSpec {
    pub id: String,
    pub unit: u8,
    pub profile: String,
    pub model: Model,
    pub size: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub initial: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Daemon(#[from] crate::DaemonError),
    #[error(transparent)]
    Gateway(#[from] energy_gateway::GatewayError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts the buses of a simulator description; returns (bus address, meters) per bus.
pub async fn start_sims(
    profiles: &BTreeMap<String, energy_gateway::profile::Profile>,
    buses: &[SimBus],
    log: Option<ServedLog>,
    cancel: &CancellationToken,
) -> Result<(Vec<(SocketAddr, Vec<SimMeterSpec>)>, Vec<tokio::task::JoinHandle<()>>), DemoError> {
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for bus in buses {
        let mut meters = Vec::new();
        for m in &bus.meters {
            let profile = profiles.get(&m.profile).ok_or_else(|| DemoError::Msg(format!("simulated meter `{}`: no profile `{}`", m.id, m.profile)))?;
            meters.push(SimMeter {
                id: m.id.clone(),
                unit: m.unit,
                profile: Arc::new(profile.clone()),
                model: Arc::new(MeterModel::new(m.model, m.size, m.seed, m.initial)),
            });
        }
        let (addr, task) = start_bus(&bus.listen, meters, log.clone(), cancel.child_token()).await?;
        out.push((addr, bus.meters.clone()));
        tasks.push(task);
    }
    Ok((out, tasks))
}

/// `energyd simulate --config FILE`: serves simulated meters until SIGINT/SIGTERM. Prints one
/// JSON line per bus on stdout: `{"listen": "127.0.0.1:PORT", "meters": [{"id": .., "unit": ..}]}`.
pub async fn simulate_from_file(path: &Path) -> Result<(), DemoError> {
    let text = std::fs::read_to_string(path).map_err(|e| DemoError::Msg(format!("{}: {e}", path.display())))?;
    let file: SimFile = toml::from_str(&text).map_err(|e| DemoError::Msg(format!("{}: {e}", path.display())))?;
    let profiles = energy_gateway::profile::load_dir(&file.profiles_dir).map_err(|e| DemoError::Msg(e.to_string()))?;
    let log = match &file.served_log {
        Some(p) => Some(Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?))),
        None => None,
    };
    let cancel = CancellationToken::new();
    let (buses, tasks) = start_sims(&profiles, &file.buses, log, &cancel).await?;
    for (addr, meters) in &buses {
        let m: Vec<_> = meters.iter().map(|m| serde_json::json!({ "id": m.id, "unit": m.unit })).collect();
        println!("{}", serde_json::json!({ "listen": addr.to_string(), "meters": m }));
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    cancel.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub use energy_gateway::shutdown_signal;

/// The example quota table shipped in `deploy/quotas/`, written beside the demo's registry.
pub const EXAMPLE_QUOTAS: &str = include_str!("../../../deploy/quotas/shandong-db37-2672-2019.toml");

/// The demo's registry: five agencies of province and city level sharing three buildings.
pub const DEMO_REGISTRY: &str = r#"# Demo registry written by `energyd demo`: five agencies in three buildings in Taiyuan.
# Edit freely; the demo rewrites this file only when it is missing.

include = ["quotas/shandong-db37-2672-2019.toml"]   # quota bands: an EXAMPLE dataset (Shandong)

[accounting]
electricity_basis = "calorific"    # 当量值 0.1229 kgce/kWh; "equivalent" for 等价值 (0.31)
grid_region = "shanxi"             # grid CO2 factors of the Ministry of Ecology and Environment
heating_season = { start = "11-01", end = "03-31" }   # Taiyuan

[[agency]]
id = "prov-drc"
name = "省发展和改革委员会"
level = "province"
kind = "government"
headcount = { 2025 = 420, 2026 = 425 }
responsible = "王建国"
filler = "李华"
phone = "0351-4040101"

[[agency]]
id = "prov-finance"
name = "省财政厅"
level = "province"
kind = "government"
headcount = { 2025 = 360, 2026 = 365 }
responsible = "赵志强"
filler = "陈静"
phone = "0351-4040202"

[[agency]]
id = "prov-ecology"
name = "省生态环境厅"
level = "province"
kind = "government"
headcount = { 2025 = 280, 2026 = 285 }
responsible = "孙立新"
filler = "周敏"
phone = "0351-4040303"

[[agency]]
id = "ty-finance"
name = "太原市财政局"
level = "city"
kind = "government"
headcount = { 2025 = 190, 2026 = 195 }
responsible = "钱伟"
filler = "吴芳"
phone = "0351-4040404"

[[agency]]
id = "ty-affairs"
name = "太原市机关事务管理局"
level = "city"
kind = "government"
headcount = { 2025 = 240, 2026 = 245 }
responsible = "郑海"
filler = "冯丽"
phone = "0351-4040505"

[[building]]
id = "bldg-a"
name = "省政务大楼A座"
floor_area = 16000.0
heated_area = 15000.0
climate_zone = "cold"
heating = "district"
occupants = [ { agency = "prov-drc", share = 0.55 }, { agency = "prov-finance", share = 0.45 } ]

[[building]]
id = "bldg-b"
name = "省生态环境厅办公楼"
floor_area = 9000.0
heated_area = 8500.0
climate_zone = "cold"
heating = "district"
occupants = [ { agency = "prov-ecology", share = 1.0 } ]

[[building]]
id = "bldg-c"
name = "太原市机关综合楼"
floor_area = 12000.0
heated_area = 11000.0
climate_zone = "cold"
heating = "district"
occupants = [ { agency = "ty-finance", share = 0.4 }, { agency = "ty-affairs", share = 0.6 } ]

[[meter]]
id = "bldg-a-elec"
building = "bldg-a"
carrier = "electricity"
gateway = "demo-gw"                # the gateway whose readings of it are accepted

[[meter]]
id = "bldg-a-water"
building = "bldg-a"
carrier = "water"
gateway = "demo-gw"

[[meter]]
id = "bldg-a-heat"
building = "bldg-a"
carrier = "district_heat"
gateway = "demo-gw"
end_use = "heating"

[[meter]]
id = "bldg-b-elec"
building = "bldg-b"
carrier = "electricity"
gateway = "demo-gw"

[[meter]]
id = "bldg-b-water"
building = "bldg-b"
carrier = "water"
gateway = "demo-gw"

[[meter]]
id = "bldg-b-heat"
building = "bldg-b"
carrier = "district_heat"
gateway = "demo-gw"
end_use = "heating"

[[meter]]
id = "bldg-c-elec"
building = "bldg-c"
carrier = "electricity"
gateway = "demo-gw"

[[meter]]
id = "bldg-c-water"
building = "bldg-c"
carrier = "water"
gateway = "demo-gw"

[[meter]]
id = "bldg-c-heat"
building = "bldg-c"
carrier = "district_heat"
gateway = "demo-gw"
end_use = "heating"

# Prices, yuan per counter unit. Electricity with time-of-use bands (local hours).
[[tariff]]
carrier = "electricity"
price = 0.65
tou = [ { from = 8, to = 11, price = 1.05 }, { from = 18, to = 23, price = 1.05 }, { from = 23, to = 7, price = 0.32 } ]

[[tariff]]
carrier = "water"
price = 6.0

[[tariff]]
carrier = "district_heat"
price = 68.0

# Absolute budgets of the annual plan (per carrier in counter units; energy in kgce; cost in yuan).
[[budget]]
agency = "prov-ecology"
year = 2026
carriers = { electricity = 520000.0, water = 9000.0 }
energy_kgce = 150000.0
cost_yuan = 800000.0

# Reduction targets on a straight path from the baseline year (general: every agency).
[[reduction]]
indicator = "energy_per_area"
baseline_year = 2025
target_year = 2030
percent = 5.0
label = "十五五"

[[reduction]]
indicator = "water_per_person"
baseline_year = 2025
target_year = 2030
percent = 3.0
label = "十五五"
"#;

/// The demo's simulated buses, matching [`DEMO_REGISTRY`].
pub fn demo_buses() -> Vec<SimBus> {
    let m = |id: &str, unit, profile: &str, model, size, seed, initial| SimMeterSpec {
        id: id.into(),
        unit,
        profile: profile.into(),
        model,
        size,
        seed,
        initial,
    };
    use Model::*;
    vec![
        SimBus {
            listen: any_port(),
            meters: vec![
                m("bldg-a-elec", 1, ELECTRICITY_PROFILE, OfficeElectricity, 16000.0, 11, 182_340.0),
                m("bldg-a-water", 2, WATER_PROFILE, OfficeWater, 16000.0, 12, 21_780.0),
                m("bldg-a-heat", 3, HEAT_PROFILE, DistrictHeat, 15000.0, 13, 9_310.0),
            ],
        },
        SimBus {
            listen: any_port(),
            meters: vec![
                m("bldg-b-elec", 1, ELECTRICITY_PROFILE, OfficeElectricity, 9000.0, 21, 95_120.0),
                m("bldg-b-water", 2, WATER_PROFILE, OfficeWater, 9000.0, 22, 12_400.0),
                m("bldg-b-heat", 3, HEAT_PROFILE, DistrictHeat, 8500.0, 23, 5_020.0),
            ],
        },
        SimBus {
            listen: any_port(),
            meters: vec![
                m("bldg-c-elec", 1, ELECTRICITY_PROFILE, OfficeElectricity, 12000.0, 31, 140_560.0),
                m("bldg-c-water", 2, WATER_PROFILE, OfficeWater, 12000.0, 32, 16_900.0),
                m("bldg-c-heat", 3, HEAT_PROFILE, DistrictHeat, 11000.0, 33, 7_740.0),
            ],
        },
    ]
}

fn default_profiles_dir() -> PathBuf {
    let here = PathBuf::from("device-profiles");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("device-profiles")
}

/// Why seeding the history stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot ask the daemon what it has: {0}")]
    Ask(reqwest::Error),
    #[error("daemon refused history batch at slot {slot}: {status} {body}")]
    Refused { slot: u64, status: reqwest::StatusCode, body: String },
    #[error("cannot post history: {0}")]
    Post(reqwest::Error),
}

/// Posts the demo's history from `seed_from` to `until` through `POST /api/v1/ingest`, resuming
/// after what the daemon already has from [`HISTORY_GATEWAY`]. Returns the samples posted.
pub async fn seed_history(
    base_url: &str,
    buses: &[SimBus],
    seed_from_ms: i64,
    until_ms: i64,
    cancel: CancellationToken,
) -> Result<u64, SeedError> {
    let meters: Vec<(String, MeterModel)> = buses
        .iter()
        .flat_map(|b| b.meters.iter())
        .map(|m| (m.id.clone(), MeterModel::new(m.model, m.size, m.seed, m.initial)))
        .collect();
    let n = meters.len() as u64;
    energy_gateway::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    // Resume after the highest contiguous sequence the daemon has stored for the seeder.
    let acked: u64 = match client.get(format!("{base_url}/api/v1/gateways")).send().await {
        Ok(r) => r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["items"].as_array().and_then(|items| items.iter().find(|g| g["id"] == HISTORY_GATEWAY).and_then(|g| g["acked_through"].as_u64()))
            })
            .unwrap_or(0),
        Err(e) => return Err(SeedError::Ask(e)),
    };
    let first_slot = (seed_from_ms - EPOCH_MS).div_euclid(SLOT_MS).max(0) as u64;
    let resume_slot = if acked >= first_slot * n + 1 { acked / n } else { first_slot };
    let last_slot = ((until_ms - EPOCH_MS).div_euclid(SLOT_MS)).max(0) as u64;
    let mut posted = 0;
    let mut slot = resume_slot;
    while slot < last_slot {
        if cancel.is_cancelled() {
            break;
        }
        let end = (slot + 96).min(last_slot);
        let mut samples = Vec::with_capacity(((end - slot) * n) as usize);
        for s in slot..end {
            let t = EPOCH_MS + s as i64 * SLOT_MS;
            for (id, model) in &meters {
                samples.push(Sample { meter: id.clone(), t, v: model.values_at(t, false) });
            }
        }
        let batch = Batch::new(HISTORY_GATEWAY, slot * n + 1, samples);
        let body = energy_wire::encode_batch(&batch);
        let mut tries = 0;
        loop {
            let res = client.post(format!("{base_url}/api/v1/ingest")).header("content-type", "application/json").body(body.clone()).send().await;
            match res {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => return Err(SeedError::Refused { slot, status: r.status(), body: r.text().await.unwrap_or_default() }),
                Err(e) if tries < 20 && !cancel.is_cancelled() => {
                    tries += 1;
                    tracing::warn!("history batch failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(SeedError::Post(e)),
            }
        }
        posted += batch.samples.len() as u64;
        slot = end;
    }
    Ok(posted)
}

fn loopback_only(listen: &str) -> Result<SocketAddr, DemoError> {
    let addr: SocketAddr = listen.parse().map_err(|_| DemoError::Msg(format!("--listen `{listen}` is not an address such as 127.0.0.1:8080")))?;
    if !addr.ip().is_loopback() {
        return Err(DemoError::Msg(format!("the demo runs without authentication, so it listens on loopback only; `{listen}` is not a loopback address")));
    }
    Ok(addr)
}

/// Writes the demo's registry and quota table into the data directory (once: what is there is
/// kept) and loads the daemon's configuration around them.
fn prepare_data(args: &DemoArgs) -> Result<Loaded, DemoError> {
    std::fs::create_dir_all(&args.data)?;
    let registry_path = args.data.join("registry.toml");
    if !registry_path.exists() {
        std::fs::write(&registry_path, DEMO_REGISTRY)?;
    }
    let quotas = args.data.join("quotas").join("shandong-db37-2672-2019.toml");
    if !quotas.exists() {
        std::fs::create_dir_all(args.data.join("quotas"))?;
        std::fs::write(&quotas, EXAMPLE_QUOTAS)?;
    }
    let daemon_cfg = crate::config::DaemonConfig {
        data_dir: args.data.clone(),
        registry: registry_path.clone(),
        timezone: "Asia/Shanghai".into(),
        http: crate::serve::HttpConfig { listen: args.listen.clone(), ..Default::default() },
        ingest: crate::ingest::config::IngestConfig::default(),
        mqtt: None,
        retention: crate::store::RetentionConfig::default(),
        auth: None,
        alerts: crate::alerts::AlertsConfig::default(),
        storage: crate::store::StorageConfig::default(),
        collector: None,
        upstream: Vec::new(),
        public: crate::reports::public::PublicConfig::default(),
    };
    daemon_cfg.validate().map_err(|e| DemoError::Msg(format!("{}: {e}", registry_path.display())))
}

/// The demo gateway's configuration: every simulated meter, sent to the daemon at `base`.
fn gateway_config(args: &DemoArgs, bound: &[(SocketAddr, Vec<SimMeterSpec>)], profiles_dir: &Path, base: &str, health: energy_gateway::config::HealthConfig) -> energy_gateway::config::GatewayConfig {
    let devices = bound
        .iter()
        .flat_map(|(a, ms)| {
            ms.iter().map(move |m| energy_gateway::config::DeviceConfig {
                interval_ms: args.interval_ms,
                ..energy_gateway::config::DeviceConfig::tcp(&m.id, &m.profile, &a.to_string(), m.unit)
            })
        })
        .collect();
    energy_gateway::config::GatewayConfig {
        gateway_id: "demo-gw".into(),
        profiles_dir: profiles_dir.to_path_buf(),
        queue: energy_gateway::config::QueueConfig::in_dir(args.data.join("gateway-queue")),
        uplink: energy_gateway::config::UplinkConfig {
            retry_max_ms: 10_000,
            ..energy_gateway::config::UplinkConfig::with_url(format!("{base}/api/v1/ingest"))
        },
        health,
        modbus: energy_gateway::config::ModbusConfig::default(),
        devices,
        mqtt_input: None,
        mqtt_devices: Vec::new(),
    }
}

/// Seeds the history from `--seed-from` (default: January 1st of last year) in the background,
/// unless `--no-seed`.
fn spawn_seeding(args: &DemoArgs, buses: &[SimBus], base: &str, now: chrono::DateTime<chrono_tz::Tz>, cancel: &CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    if args.no_seed {
        return None;
    }
    let tz = now.timezone();
    let seed_from = args.seed_from.unwrap_or_else(|| chrono::NaiveDate::from_ymd_opt(now.year() - 1, 1, 1).unwrap_or_default());
    let seed_from_ms = tz
        .from_local_datetime(&seed_from.and_hms_opt(0, 0, 0).unwrap_or_default())
        .earliest()
        .map_or(EPOCH_MS, |t| t.timestamp_millis());
    let (b, c, base) = (buses.to_vec(), cancel.clone(), base.to_string());
    let until = chrono::Utc::now().timestamp_millis();
    Some(tokio::spawn(async move {
        let t0 = Instant::now();
        match seed_history(&base, &b, seed_from_ms, until, c).await {
            Ok(n) => println!("history seeded: {n} samples posted in {:.1} s (already stored ones were skipped)", t0.elapsed().as_secs_f64()),
            Err(e) => eprintln!("history seeding stopped: {e}"),
        }
    }))
}

/// What the demo prints once it runs: what runs where, and the pages to open.
fn print_welcome(args: &DemoArgs, bound: &[(SocketAddr, Vec<SimMeterSpec>)], base: &str, today: chrono::NaiveDate, started: Instant) {
    let tomorrow = today + chrono::Duration::days(1);
    println!("energyd demo is running ({:.1} s to start)", started.elapsed().as_secs_f64());
    println!("  5 agencies, 3 buildings, 9 simulated Modbus TCP meters on {}", bound.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>().join(", "));
    println!("  gateway demo-gw polls every {} ms and sends to {base}/api/v1/ingest", args.interval_ms);
    println!("  data: {} (store energyd.sqlite, gateway queue gateway-queue/, registry.toml)", args.data.display());
    println!("  the API is open without authentication and listens on loopback only");
    println!("open:");
    println!("  {base}/");
    println!("  {base}/api/v1/agencies");
    println!("  {base}/api/v1/meters");
    println!("  {base}/api/v1/consumption?agency=prov-drc&from={}-01-01&to={tomorrow}&interval=month", today.year());
    println!("  {base}/api/v1/consumption?building=bldg-a&from={today}&to={tomorrow}&interval=hour");
    println!("  {base}/api/v1/series?meter=bldg-a-elec&quantity=active_power&from={today}&to={tomorrow}&step=15m");
    println!("  {base}/metrics");
    println!("Ctrl-C stops cleanly; start again with the same --data to go on from there.");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let started = Instant::now();
    loopback_only(&args.listen)?;
    let loaded = prepare_data(&args)?;
    let profiles_dir = args.profiles.clone().unwrap_or_else(default_profiles_dir);
    let profiles = energy_gateway::profile::load_dir(&profiles_dir).map_err(|e| DemoError::Msg(format!("device profiles: {e}")))?;
    let tz: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

    // Simulated meters.
    let sim_cancel = CancellationToken::new();
    let buses = demo_buses();
    let (bound, sim_tasks) = start_sims(&profiles, &buses, None, &sim_cancel).await?;

    // Daemon.
    let daemon = crate::Daemon::bind(loaded).await?;
    let base = format!("http://{}", daemon.addr);
    let daemon_cancel = CancellationToken::new();
    let daemon_task = tokio::spawn(daemon.serve(daemon_cancel.clone()));

    // Gateway.
    let health = gateway_health(&args.gateway_listen)?;
    if let Some(h) = &health.listen {
        println!("  gateway demo-gw serves http://{h}/metrics (Prometheus: deploy/prometheus/demo.yml)");
    }
    let gw_cfg = gateway_config(&args, &bound, &profiles_dir, &base, health);
    gw_cfg.validate(&profiles).map_err(|e| DemoError::Msg(e.to_string()))?;
    let gw_cancel = CancellationToken::new();
    let (gw, gw_tasks) = energy_gateway::start(gw_cfg, profiles, gw_cancel.clone()).await?;

    // History.
    let now = chrono::Utc::now().with_timezone(&tz);
    let seed_cancel = CancellationToken::new();
    let seed_task = spawn_seeding(&args, &buses, &base, now, &seed_cancel);

    print_welcome(&args, &bound, &base, now.date_naive(), started);
    shutdown_signal().await;
    println!("stopping: gateway (draining its queue), history, daemon (committing), meters");
    gw_cancel.cancel();
    for t in gw_tasks {
        let _ = t.await;
    }
    seed_cancel.cancel();
    if let Some(t) = seed_task {
        let _ = t.await;
    }
    daemon_cancel.cancel();
    match daemon_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("daemon: {e}"),
        Err(e) => eprintln!("daemon task: {e}"),
    }
    sim_cancel.cancel();
    for t in sim_tasks {
        let _ = t.await;
    }
    let st = gw.status();
    println!("stopped cleanly; {} samples wait in the gateway queue for the next start", st.queue_depth);
    Ok(())
}
