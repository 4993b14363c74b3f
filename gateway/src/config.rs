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
    /// The broker that MQTT meters publish to (often a local Mosquitto).
    #[serde(default)]
    pub mqtt_input: Option<MqttInputConfig>,
    #[serde(default, rename = "mqtt_device")]
    pub mqtt_devices: Vec<MqttDeviceConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttInputConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl MqttInputConfig {
    /// The same URL and credential rules as the uplink.
    pub fn as_uplink(&self) -> UplinkConfig {
        let mut u = UplinkConfig::with_url(self.url.clone());
        u.username.clone_from(&self.username);
        u.password.clone_from(&self.password);
        u.password_file.clone_from(&self.password_file);
        u.ca_file.clone_from(&self.ca_file);
        u
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDeviceConfig {
    /// The meter id its readings are stored under.
    pub meter: String,
    /// MQTT profile name, `mqtt/<vendor>/<model>`.
    pub profile: String,
    /// Values of the profile's topic variables, e.g. `{ topic = "plug1" }`.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
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
    /// What to do when the queue is full: `thin` (default: keep counters, one per meter and
    /// `thin_period_ms`, drop gauges) or `refuse` (drop new samples).
    #[serde(default)]
    pub when_full: crate::full::WhenFull,
    #[serde(default = "default_thin_period_ms")]
    pub thin_period_ms: u64,
}

impl QueueConfig {
    /// A queue in `dir` with every other setting at its default.
    pub fn in_dir(dir: PathBuf) -> QueueConfig {
        QueueConfig {
            dir,
            max_bytes: default_queue_max_bytes(),
            segment_bytes: default_segment_bytes(),
            when_full: crate::full::WhenFull::default(),
            thin_period_ms: default_thin_period_ms(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Where batches go; the scheme picks the transport:
    /// `http://` / `https://` the daemon's `POST /api/v1/ingest` (e.g.
    /// `http://127.0.0.1:8080/api/v1/ingest`), `mqtt://host:1883` / `mqtts://host:8883` a broker.
    pub url: String,
    /// Bearer token sent with every HTTP batch, if the daemon requires one (preferably from the
    /// environment, `ENERGY_GATEWAY__UPLINK__TOKEN`, or from `token_file`). Never logged.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Site name, the second level of the MQTT topics `<prefix>/<site>/<gateway>/...`.
    #[serde(default = "default_site")]
    pub site: String,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT user name and password (the password preferably from the environment,
    /// `ENERGY_GATEWAY__UPLINK__PASSWORD`, or from `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s), PEM, that signed the broker's or daemon's certificate (mqtts, https);
    /// the system's roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// gzip batch bodies (HTTP `Content-Encoding: gzip`; MQTT payloads start with the gzip magic).
    #[serde(default = "yes")]
    pub compress: bool,
    #[serde(default = "default_batch_max_samples")]
    pub batch_max_samples: usize,
    /// Longest wait to fill a batch when fewer samples than `batch_max_samples` are queued.
    #[serde(default = "default_batch_max_delay_ms")]
    pub batch_max_delay_ms: u64,
    /// MQTT: most samples published and not yet acknowledged by the daemon.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_samples: usize,
    /// MQTT: resend what is unacknowledged when no acknowledgement came for this long.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// With a backlog, at most this many history samples per second are sent, interleaved with
    /// the newest samples so that dashboards stay current while history drains. 0: no limit.
    #[serde(default = "default_backfill_rate")]
    pub backfill_samples_per_second: u64,
    #[serde(default = "default_uplink_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between retries after failures.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// On shutdown, how long to keep sending what is queued before leaving it on disk.
    #[serde(default = "default_drain_ms")]
    pub drain_on_shutdown_ms: u64,
}

impl UplinkConfig {
    /// An uplink to `url` with every other setting at its default.
    pub fn with_url(url: impl Into<String>) -> UplinkConfig {
        UplinkConfig {
            url: url.into(),
            token: None,
            token_file: None,
            site: default_site(),
            topic_prefix: default_topic_prefix(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            compress: true,
            batch_max_samples: default_batch_max_samples(),
            batch_max_delay_ms: default_batch_max_delay_ms(),
            max_in_flight_samples: default_max_in_flight(),
            ack_timeout_ms: default_ack_timeout_ms(),
            backfill_samples_per_second: default_backfill_rate(),
            timeout_ms: default_uplink_timeout_ms(),
            retry_max_ms: default_retry_max_ms(),
            drain_on_shutdown_ms: default_drain_ms(),
        }
    }

    /// The password, from `password` or `password_file`.
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        match &self.password_file {
            None => Ok(None),
            Some(f) => std::fs::read_to_string(f)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("uplink.password_file {}: {e}", f.display())),
        }
    }

    /// The HTTP bearer token, from `token` or `token_file`; errors name the file, never the token.
    pub fn token(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        match &self.token_file {
            None => Ok(None),
            Some(f) => match std::fs::read_to_string(f) {
                Ok(s) if s.trim().is_empty() => Err(format!("uplink.token_file {} is empty", f.display())),
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(e) => Err(format!("uplink.token_file {}: {e}", f.display())),
            },
        }
    }

    pub fn is_mqtt(&self) -> bool {
        self.url.starts_with("mqtt://") || self.url.starts_with("mqtts://")
    }

    /// (host, port, tls) of an MQTT URL.
    pub fn mqtt_endpoint(&self) -> Result<(String, u16, bool), String> {
        let (rest, tls, default_port) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (r, true, 8883)
        } else if let Some(r) = self.url.strip_prefix("mqtt://") {
            (r, false, 1883)
        } else {
            return Err(format!("uplink.url `{}` is not an mqtt:// or mqtts:// URL", self.url));
        };
        let rest = rest.trim_end_matches('/');
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => {
                let port = p.parse::<u16>().map_err(|_| format!("uplink.url `{}`: bad port `{p}`", self.url))?;
                Ok((h.trim_start_matches('[').trim_end_matches(']').to_string(), port, tls))
            }
            _ if !rest.is_empty() && !rest.contains('/') => Ok((rest.to_string(), default_port, tls)),
            _ => Err(format!("uplink.url `{}` has no host", self.url)),
        }
    }
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
            baud: None,
            parity: None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
            unit,
            address: None,
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

fn default_profiles_dir() -> PathBuf {
    PathBuf::from("device-profiles")
}
fn default_queue_max_bytes() -> u64 {
    1 << 30
}
fn default_thin_period_ms() -> u64 {
    900_000
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_batch_max_samples() -> usize {
    2000
}
fn default_site() -> String {
    "default".into()
}
fn default_topic_prefix() -> String {
    "energy/v1".into()
}
fn yes() -> bool {
    true
}
fn default_batch_max_delay_ms() -> u64 {
    200
}
fn default_max_in_flight() -> usize {
    20_000
}
fn default_ack_timeout_ms() -> u64 {
    30_000
}
fn default_backfill_rate() -> u64 {
    20_000
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
        self.validate_all(profiles, &BTreeMap::new())
    }

    /// Like [`GatewayConfig::validate`], with the MQTT meter profiles.
    pub fn validate_all(&self, profiles: &BTreeMap<String, Profile>, mqtt_profiles: &BTreeMap<String, crate::mqtt_in::MqttProfile>) -> Result<(), ConfigErrors> {
        self.validate_full(profiles, mqtt_profiles, &BTreeMap::new())
    }

    /// Like [`GatewayConfig::validate_all`], with the DL/T 645 and CJ/T 188 profiles.
    pub fn validate_full(
        &self,
        profiles: &BTreeMap<String, Profile>,
        mqtt_profiles: &BTreeMap<String, crate::mqtt_in::MqttProfile>,
        field_profiles: &BTreeMap<String, crate::field::profile::FieldProfile>,
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if let Err(e) = energy_wire::validate_id(&self.gateway_id) {
            errors.push(format!("gateway_id: {e}"));
        }
        let u = &self.uplink;
        if u.is_mqtt() {
            if let Err(e) = u.mqtt_endpoint() {
                errors.push(e);
            }
            for (name, v) in [("site", &u.site), ("gateway_id", &self.gateway_id)] {
                if v.contains(['/', '+', '#']) || v.is_empty() {
                    errors.push(format!("{name} `{v}` cannot be part of an MQTT topic (no /, + or #)"));
                }
            }
            if u.topic_prefix.contains(['+', '#']) || u.topic_prefix.is_empty() {
                errors.push(format!("uplink.topic_prefix `{}` must be a topic without wildcards", u.topic_prefix));
            }
        } else if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
            errors.push(format!("uplink.url `{}` must start with http://, https://, mqtt:// or mqtts://", u.url));
        }
        if let Err(e) = u.password() {
            errors.push(e);
        }
        if let Err(e) = u.token() {
            errors.push(e);
        }
        if u.token.is_some() && u.token_file.is_some() {
            errors.push("uplink.token and uplink.token_file: give one, not both".into());
        }
        if let Some(ca) = &u.ca_file {
            if !ca.is_file() {
                errors.push(format!("uplink.ca_file {} does not exist", ca.display()));
            }
        }
        if u.max_in_flight_samples < u.batch_max_samples {
            errors.push("uplink.max_in_flight_samples must be at least uplink.batch_max_samples".into());
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
        // Per bus: whether it is a field bus, and the field meters' addresses.
        let mut bus_kind: BTreeMap<String, (bool, String)> = BTreeMap::new();
        let mut field_addresses: BTreeMap<String, Vec<(String, Option<Vec<u8>>)>> = BTreeMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let at = format!("device[{i}] ({})", d.meter);
            if let Err(e) = energy_wire::validate_id(&d.meter) {
                errors.push(format!("{at}: meter: {e}"));
            }
            if !meters.insert(d.meter.clone()) {
                errors.push(format!("{at}: meter `{}` is configured twice", d.meter));
            }
            let field = field_profiles.get(&d.profile);
            if !profiles.contains_key(&d.profile) && field.is_none() {
                errors.push(format!(
                    "{at}: profile `{}` not found in {} (see `energy-gateway profiles list`)",
                    d.profile,
                    self.profiles_dir.display()
                ));
            }
            let transport = match field {
                Some(fp) => d.transport_with(fp.line()),
                None => d.transport(),
            };
            if let (Some(fp), Ok(t)) = (field, &transport) {
                match crate::field::poll::meter_address(fp.protocol, d.address.as_deref()) {
                    Ok(a) => field_addresses.entry(t.bus()).or_default().push((d.meter.clone(), a)),
                    Err(e) => errors.push(format!("{at}: {e} ({})", fp.protocol.name())),
                }
            } else if d.address.is_some() && profiles.contains_key(&d.profile) {
                errors.push(format!("{at}: address is for DL/T 645 and CJ/T 188 meters; a Modbus device has a unit"));
            }
            if let Ok(t) = &transport {
                if let Some((other_field, other)) = bus_kind.insert(t.bus(), (field.is_some(), d.meter.clone())).filter(|(f, _)| *f != field.is_some()) {
                    let _ = other_field;
                    errors.push(format!(
                        "{at}: {} has Modbus and DL/T 645 / CJ/T 188 meters (also {other}): one bus speaks one protocol family",
                        t.bus()
                    ));
                }
            }
            match transport {
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
        for (bus, meters) in &field_addresses {
            if meters.len() > 1 {
                for (m, a) in meters {
                    if a.is_none() {
                        errors.push(format!("meter `{m}` on {bus}: several meters share the bus, so each needs its address"));
                    }
                }
            }
            let mut seen: BTreeMap<&Vec<u8>, &str> = BTreeMap::new();
            for (m, a) in meters {
                if let Some(a) = a {
                    if let Some(o) = seen.insert(a, m) {
                        errors.push(format!("meter `{m}` on {bus}: address {} is also meter `{o}`'s", crate::field::frame::format_address(a)));
                    }
                }
            }
        }
        if !self.mqtt_devices.is_empty() && self.mqtt_input.is_none() {
            errors.push("mqtt_device entries need an [mqtt_input] broker".into());
        }
        if let Some(mi) = &self.mqtt_input {
            let u = mi.as_uplink();
            if let Err(e) = u.mqtt_endpoint() {
                errors.push(format!("mqtt_input.url: {e}"));
            }
            if let Err(e) = u.password() {
                errors.push(format!("mqtt_input: {e}"));
            }
        }
        for (i, d) in self.mqtt_devices.iter().enumerate() {
            let at = format!("mqtt_device[{i}] ({})", d.meter);
            if let Err(e) = energy_wire::validate_id(&d.meter) {
                errors.push(format!("{at}: meter: {e}"));
            }
            if !meters.insert(d.meter.clone()) {
                errors.push(format!("{at}: meter `{}` is configured twice", d.meter));
            }
            match mqtt_profiles.get(&d.profile) {
                None => errors.push(format!("{at}: MQTT profile `{}` not found in {}/mqtt", d.profile, self.profiles_dir.display())),
                Some(p) => {
                    for m in &p.messages {
                        for v in crate::mqtt_in::topic_vars(&m.topic) {
                            if !d.vars.contains_key(&v) {
                                errors.push(format!("{at}: the profile's topic `{}` needs vars.{v}", m.topic));
                            }
                        }
                    }
                }
            }
            for (k, v) in &d.vars {
                if v.is_empty() || v.contains(['+', '#']) {
                    errors.push(format!("{at}: vars.{k} `{v}` must be a non-empty topic part without wildcards"));
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

    #[test]
    fn token_from_file_and_problems_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "edt_abc\n").unwrap();
        let mut u = UplinkConfig::with_url("https://127.0.0.1:1/api/v1/ingest");
        u.token_file = Some(f);
        assert_eq!(u.token().unwrap().as_deref(), Some("edt_abc"));
        u.token_file = Some(dir.path().join("missing"));
        let e = u.token().unwrap_err();
        assert!(e.contains("uplink.token_file") && e.contains("missing"), "{e}");
    }

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

    #[test]
    fn field_meters_default_to_2400_8e1_and_need_addresses_when_they_share_a_bus() {
        let water = crate::field::profile::parse_field_profile(
            "generic/w",
            "w.toml",
            "vendor = \"G\"\nmodel = \"W\"\nsource = \"s\"\nprotocol = \"cjt188\"\nmeter_type = \"10\"\n[[value]]\nfield = \"volume\"\nquantity = \"water_volume\"\nunit = \"m³\"\n",
        )
        .unwrap();
        let field = BTreeMap::from([("generic/w".to_string(), water.clone())]);
        let cfg = config(
            r#"
[[device]]
meter = "w1"
profile = "generic/w"
serial = "/dev/ttyUSB0"
address = "00000000000001"
[[device]]
meter = "w2"
profile = "generic/w"
serial = "/dev/ttyUSB0"
"#,
        );
        let text = cfg.validate_full(&profiles(), &BTreeMap::new(), &field).unwrap_err().to_string();
        assert!(text.contains("meter `w2` on serial:///dev/ttyUSB0: several meters share the bus, so each needs its address"), "{text}");
        let Transport::Serial(line) = cfg.devices[0].transport_with(water.line()).unwrap() else { panic!() };
        assert_eq!((line.baud, line.parity), (2400, Parity::Even));
        let cfg = config(
            r#"
[[device]]
meter = "w1"
profile = "generic/w"
tcp = "10.0.0.5:4001"
address = "0000000001"
[[device]]
meter = "m"
profile = "t/t"
tcp = "10.0.0.5:4001"
address = "000000000001"
"#,
        );
        let text = cfg.validate_full(&profiles(), &BTreeMap::new(), &field).unwrap_err().to_string();
        for want in [
            "device[0] (w1): address `0000000001` must have 14 digits (cjt188)",
            "device[1] (m): address is for DL/T 645 and CJ/T 188 meters",
            "device[1] (m): tcp://10.0.0.5:4001 has Modbus and DL/T 645 / CJ/T 188 meters (also w1)",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }
}
