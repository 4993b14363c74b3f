//! The gateway's configuration file (TOML), with every field overridable from the environment
//! as `ENERGY_GATEWAY__SECTION__FIELD` (for example `ENERGY_GATEWAY__UPLINK__URL`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::profile::Profile;
use crate::transport::{check_endpoint, check_line, Parity, SerialLine, Transport};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's id: part of every batch's identity. Letters, digits, `-`, `_`, `.`.
    pub gateway_id: String,
    /// Where device profiles are read from.
    #[serde(default = "default_profiles_dir")]
    pub profiles_dir: PathBuf,
    pub queue: QueueConfig,
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub modbus: ModbusConfig,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub dir: PathBuf,
    /// Bound on the queue's size on disk; when reached, new samples are refused and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The daemon's ingest endpoint, e.g. `http://127.0.0.1:8080/api/v1/ingest`.
    pub url: String,
    /// Bearer token sent with every batch, if the daemon requires one.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_batch_max_samples")]
    pub batch_max_samples: usize,
    #[serde(default = "default_uplink_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between retries after failures.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// On shutdown, how long to keep sending what is queued before leaving it on disk.
    #[serde(default = "default_drain_ms")]
    pub drain_on_shutdown_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Address of the local `/healthz`, `/metrics` and `/status` server, e.g. `127.0.0.1:9108`.
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts of a failed request before the poll counts as failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait after connecting before the first request (some serial servers need it).
    #[serde(default)]
    pub connect_delay_ms: u64,
    /// Wait between two requests on one connection.
    #[serde(default)]
    pub request_delay_ms: u64,
    /// Longest back-off of a device that keeps failing.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// First wait before reconnecting a bus whose connection failed; doubles on each failure
    /// (with jitter) up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Least silence between RTU frames on a serial port, in microseconds, when more than the
    /// 3.5 characters the baud rate gives is needed (slow RS-485 adapters).
    #[serde(default)]
    pub rtu_min_silence_us: u64,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            connect_delay_ms: 0,
            request_delay_ms: 0,
            max_backoff_ms: default_max_backoff_ms(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            rtu_min_silence_us: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The meter id this device's readings are stored under (the daemon's registry id).
    pub meter: String,
    /// Profile name, `vendor/model`.
    pub profile: String,
    /// Modbus TCP endpoint `host:port`. Exactly one of `tcp`, `rtu_over_tcp`, `serial` is set.
    #[serde(default)]
    pub tcp: Option<String>,
    /// A serial server in transparent mode, `host:port`: RTU frames over TCP.
    #[serde(default)]
    pub rtu_over_tcp: Option<String>,
    /// A local serial port (`/dev/ttyUSB0`) with RTU framing, with its line settings.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Modbus unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Current transformer ratio applied to registers marked `ratio = "ct"` or `"ct_pt"`.
    #[serde(default = "one")]
    pub ct_ratio: f64,
    /// Voltage transformer ratio applied to registers marked `ratio = "pt"` or `"ct_pt"`.
    #[serde(default = "one")]
    pub pt_ratio: f64,
    /// Per-device overrides of `[modbus]` (timeout, retries, delays).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub connect_delay_ms: Option<u64>,
    #[serde(default)]
    pub request_delay_ms: Option<u64>,
}

impl DeviceConfig {
    /// A Modbus TCP device with every other setting at its default.
    pub fn tcp(meter: &str, profile: &str, endpoint: &str, unit: u8) -> DeviceConfig {
        DeviceConfig {
            meter: meter.to_string(),
            profile: profile.to_string(),
            tcp: Some(endpoint.to_string()),
            rtu_over_tcp: None,
            serial: None,
            baud: default_baud(),
            parity: Parity::None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
            unit,
            interval_ms: default_interval_ms(),
            ct_ratio: 1.0,
            pt_ratio: 1.0,
            timeout_ms: None,
            retries: None,
            connect_delay_ms: None,
            request_delay_ms: None,
        }
    }

    /// The device's transport, or what is wrong with its transport keys.
    pub fn transport(&self) -> Result<Transport, Vec<String>> {
        let set: Vec<&str> = [("tcp", &self.tcp), ("rtu_over_tcp", &self.rtu_over_tcp), ("serial", &self.serial)]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        match (&self.tcp, &self.rtu_over_tcp, &self.serial) {
            _ if set.len() > 1 => Err(vec![format!("sets {}: exactly one transport is allowed", set.join(" and "))]),
            (Some(a), None, None) => check_endpoint(a).map_or(Ok(Transport::Tcp(a.clone())), |e| Err(vec![format!("tcp {e}")])),
            (None, Some(a), None) => {
                check_endpoint(a).map_or(Ok(Transport::RtuOverTcp(a.clone())), |e| Err(vec![format!("rtu_over_tcp {e}")]))
            }
            (None, None, Some(path)) => {
                let line = SerialLine {
                    path: path.clone(),
                    baud: self.baud,
                    parity: self.parity,
                    data_bits: self.data_bits,
                    stop_bits: self.stop_bits,
                };
                let errors = check_line(&line);
                if errors.is_empty() {
                    Ok(Transport::Serial(line))
                } else {
                    Err(errors)
                }
            }
            _ => Err(vec!["has no transport: set one of tcp, rtu_over_tcp or serial".to_string()]),
        }
    }

    /// `[modbus]` with this device's overrides applied.
    pub fn modbus(&self, base: &ModbusConfig) -> ModbusConfig {
        ModbusConfig {
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            retries: self.retries.unwrap_or(base.retries),
            connect_delay_ms: self.connect_delay_ms.unwrap_or(base.connect_delay_ms),
            request_delay_ms: self.request_delay_ms.unwrap_or(base.request_delay_ms),
            ..base.clone()
        }
    }
}

fn default_profiles_dir() -> PathBuf {
    PathBuf::from("device-profiles")
}
fn default_queue_max_bytes() -> u64 {
    1 << 30
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_batch_max_samples() -> usize {
    2000
}
fn default_uplink_timeout_ms() -> u64 {
    10_000
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_drain_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_retries() -> u32 {
    1
}
fn default_max_backoff_ms() -> u64 {
    300_000
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    60_000
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit() -> u8 {
    1
}
fn default_interval_ms() -> u64 {
    10_000
}
fn one() -> f64 {
    1.0
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl GatewayConfig {
    /// Reads the file, applies `ENERGY_GATEWAY__*` environment overrides, and deserialises.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let cfg = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml).required(true))
            .add_source(config::Environment::with_prefix("ENERGY_GATEWAY").prefix_separator("__").separator("__"))
            .build()
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        cfg.try_deserialize().map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))
    }

    /// Checks everything serde does not; returns every problem at once.
    pub fn validate(&self, profiles: &BTreeMap<String, Profile>) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if let Err(e) = energy_wire::validate_id(&self.gateway_id) {
            errors.push(format!("gateway_id: {e}"));
        }
        if !(self.uplink.url.starts_with("http://") || self.uplink.url.starts_with("https://")) {
            errors.push(format!("uplink.url `{}` must start with http:// or https://", self.uplink.url));
        }
        if self.uplink.batch_max_samples == 0 || self.uplink.batch_max_samples > energy_wire::MAX_SAMPLES_PER_BATCH {
            errors.push(format!("uplink.batch_max_samples must be 1..={}", energy_wire::MAX_SAMPLES_PER_BATCH));
        }
        if self.queue.max_bytes < 4096 {
            errors.push("queue.max_bytes must be at least 4096".into());
        }
        if let Some(l) = &self.health.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                errors.push(format!("health.listen `{l}` is not an address like 127.0.0.1:9108"));
            }
        }
        if self.modbus.timeout_ms == 0 {
            errors.push("modbus.timeout_ms must be above 0".into());
        }
        if self.modbus.reconnect_min_ms == 0 || self.modbus.reconnect_min_ms > self.modbus.reconnect_max_ms {
            errors.push("modbus.reconnect_min_ms must be above 0 and at most reconnect_max_ms".into());
        }
        let mut meters = HashSet::new();
        let mut framings: BTreeMap<String, Transport> = BTreeMap::new();
        let mut lines: BTreeMap<String, SerialLine> = BTreeMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let at = format!("device[{i}] ({})", d.meter);
            if let Err(e) = energy_wire::validate_id(&d.meter) {
                errors.push(format!("{at}: meter: {e}"));
            }
            if !meters.insert(d.meter.clone()) {
                errors.push(format!("{at}: meter `{}` is configured twice", d.meter));
            }
            if !profiles.contains_key(&d.profile) {
                errors.push(format!(
                    "{at}: profile `{}` not found in {} (see `energy-gateway profiles list`)",
                    d.profile,
                    self.profiles_dir.display()
                ));
            }
            match d.transport() {
                Ok(t) => {
                    let endpoint = match &t {
                        Transport::Tcp(a) | Transport::RtuOverTcp(a) => Some(a.clone()),
                        Transport::Serial(_) => None,
                    };
                    if let Some(e) = endpoint {
                        if let Some(other) = framings.insert(e.clone(), t.clone()).filter(|o| *o != t) {
                            errors.push(format!("{at}: {e} is used as {t} and as {other}: one endpoint has one framing"));
                        }
                    }
                    if let Transport::Serial(line) = &t {
                        if let Some(other) = lines.insert(line.path.clone(), line.clone()).filter(|o| o != line) {
                            errors.push(format!(
                                "{at}: serial port {} is configured with other line settings by another device ({} baud, {:?} parity, {} data bits, {} stop bits)",
                                line.path, other.baud, other.parity, other.data_bits, other.stop_bits
                            ));
                        }
                    }
                }
                Err(es) => errors.extend(es.into_iter().map(|e| format!("{at}: {e}"))),
            }
            let m = d.modbus(&self.modbus);
            if m.timeout_ms == 0 {
                errors.push(format!("{at}: timeout_ms must be above 0"));
            }
            if d.interval_ms < 100 {
                errors.push(format!("{at}: interval_ms {} is below the minimum of 100", d.interval_ms));
            }
            if d.unit > 247 {
                errors.push(format!("{at}: unit {} is outside 0..=247", d.unit));
            }
            for (name, r) in [("ct_ratio", d.ct_ratio), ("pt_ratio", d.pt_ratio)] {
                if !(r.is_finite() && r > 0.0) {
                    errors.push(format!("{at}: {name} must be a positive number"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(devices: &str) -> GatewayConfig {
        let text = format!("gateway_id = \"gw\"\n[queue]\ndir = \"/tmp/q\"\n[uplink]\nurl = \"http://127.0.0.1:8080/api/v1/ingest\"\n{devices}");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn profiles() -> BTreeMap<String, Profile> {
        let p = crate::profile::parse_profile(
            "t/t",
            "t.toml",
            "vendor = \"T\"\nmodel = \"T\"\nsource = \"s\"\n[[register]]\nquantity = \"frequency\"\naddress = 0\ntype = \"u16\"\nunit = \"Hz\"\n",
        )
        .unwrap();
        BTreeMap::from([("t/t".to_string(), p)])
    }

    #[test]
    fn every_transport_is_accepted_and_old_tcp_configs_still_load() {
        let cfg = config(
            r#"
[[device]]
meter = "a"
profile = "t/t"
tcp = "10.0.0.1:502"
[[device]]
meter = "b"
profile = "t/t"
rtu_over_tcp = "10.0.0.2:4001"
unit = 2
[[device]]
meter = "c"
profile = "t/t"
serial = "/dev/ttyUSB0"
baud = 19200
parity = "even"
stop_bits = 1
timeout_ms = 300
request_delay_ms = 50
"#,
        );
        cfg.validate(&profiles()).unwrap();
        assert_eq!(cfg.devices[0].transport().unwrap(), Transport::Tcp("10.0.0.1:502".into()));
        assert_eq!(cfg.devices[1].transport().unwrap(), Transport::RtuOverTcp("10.0.0.2:4001".into()));
        let Transport::Serial(line) = cfg.devices[2].transport().unwrap() else { panic!("serial") };
        assert_eq!((line.baud, line.parity, line.data_bits, line.stop_bits), (19_200, Parity::Even, 8, 1));
        let m = cfg.devices[2].modbus(&cfg.modbus);
        assert_eq!((m.timeout_ms, m.request_delay_ms, m.retries), (300, 50, cfg.modbus.retries));
    }

    #[test]
    fn every_transport_problem_is_reported_at_once() {
        let cfg = config(
            r#"
[[device]]
meter = "none"
profile = "t/t"
[[device]]
meter = "two"
profile = "t/t"
tcp = "10.0.0.1:502"
serial = "/dev/ttyUSB0"
[[device]]
meter = "badline"
profile = "t/t"
serial = "/dev/ttyUSB1"
baud = 9601
data_bits = 5
[[device]]
meter = "tcp-side"
profile = "t/t"
tcp = "10.0.0.9:4001"
[[device]]
meter = "rtu-side"
profile = "t/t"
rtu_over_tcp = "10.0.0.9:4001"
[[device]]
meter = "port-a"
profile = "t/t"
serial = "/dev/ttyS0"
baud = 9600
[[device]]
meter = "port-b"
profile = "t/t"
serial = "/dev/ttyS0"
baud = 19200
"#,
        );
        let text = cfg.validate(&profiles()).unwrap_err().to_string();
        for expected in [
            "device[0] (none): has no transport: set one of tcp, rtu_over_tcp or serial",
            "device[1] (two): sets tcp and serial: exactly one transport is allowed",
            "device[2] (badline): baud 9601 is not one of",
            "device[2] (badline): data_bits 5 must be 7 or 8",
            "device[4] (rtu-side): 10.0.0.9:4001 is used as rtu-over-tcp://10.0.0.9:4001 and as tcp://10.0.0.9:4001",
            "device[6] (port-b): serial port /dev/ttyS0 is configured with other line settings",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
