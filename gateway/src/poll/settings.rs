//! The polling sections of the configuration: `[modbus]` (timeouts, retries, delays and
//! back-off of every bus, Modbus or DL/T 645 / CJ/T 188) and each `[[device]]` (a polled meter:
//! its profile, its transport, its interval and its overrides of `[modbus]`).

use serde::{Deserialize, Serialize};

use crate::transport::{check_endpoint, check_line, Parity, SerialLine, Transport};

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
    /// Baud rate of `serial`: 9600 for Modbus, the profile's (else 2400) for DL/T 645 and
    /// CJ/T 188.
    #[serde(default)]
    pub baud: Option<u32>,
    /// Parity of `serial`: none for Modbus, the profile's (else even) for DL/T 645 and CJ/T 188.
    #[serde(default)]
    pub parity: Option<Parity>,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Modbus unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// DL/T 645 (12 digits) or CJ/T 188 (14 digits) meter address as on the name plate; without
    /// it the only meter on the line is found (DL/T 645-2007 read address, or the wildcard).
    #[serde(default)]
    pub address: Option<String>,
    /// CJ/T 188: the byte order of the data identifier in requests, `"low-first"` (`1F 90`) or
    /// `"high-first"` (`90 1F`), when this meter differs from its profile's `di_order`.
    #[serde(default)]
    pub di_order: Option<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Current transformer ratio applied to registers marked `ratio = "ct"` or `"ct_pt"`; on a
    /// DL/T 645 meter, to its currents, powers and energies (unless the profile says
    /// `ratio = "none"`).
    #[serde(default = "one")]
    pub ct_ratio: f64,
    /// Voltage transformer ratio applied to registers marked `ratio = "pt"` or `"ct_pt"`; on a
    /// DL/T 645 meter, to its voltages, powers and energies.
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
            baud: None,
            parity: None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
            unit,
            address: None,
            di_order: None,
            interval_ms: default_interval_ms(),
            ct_ratio: 1.0,
            pt_ratio: 1.0,
            timeout_ms: None,
            retries: None,
            connect_delay_ms: None,
            request_delay_ms: None,
        }
    }

    /// The device's transport, or what is wrong with its transport keys (Modbus line defaults:
    /// 9600 baud, no parity).
    pub fn transport(&self) -> Result<Transport, Vec<String>> {
        self.transport_with((default_baud(), Parity::None))
    }

    /// [`DeviceConfig::transport`] with other line defaults (baud, parity) for what the device
    /// does not set.
    pub fn transport_with(&self, defaults: (u32, Parity)) -> Result<Transport, Vec<String>> {
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
                    baud: self.baud.unwrap_or(defaults.0),
                    parity: self.parity.unwrap_or(defaults.1),
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
