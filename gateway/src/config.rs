//! The gateway's configuration file (TOML), with every field overridable from the environment
//! as `ENERGY_GATEWAY__SECTION__FIELD` (for example `ENERGY_GATEWAY__UPLINK__URL`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

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
    /// Bearer token sent with every HTTP batch, if the daemon requires one.
    #[serde(default)]
    pub token: Option<String>,
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
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            connect_delay_ms: 0,
            request_delay_ms: 0,
            max_backoff_ms: default_max_backoff_ms(),
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
    /// Modbus TCP endpoint `host:port`.
    pub tcp: String,
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
        let mut meters = HashSet::new();
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
            if d.tcp.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then(|| p.parse::<u16>().ok()).flatten()).is_none() {
                errors.push(format!("{at}: tcp `{}` is not host:port", d.tcp));
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
