//! The gateway's configuration file (TOML), with every field overridable from the environment
//! as `ENERGY_GATEWAY__SECTION__FIELD` (for example `ENERGY_GATEWAY__UPLINK__URL`).
//!
//! The aggregate of the sections: each section's type lives with the module that uses it
//! (`[queue]` in [`crate::queue`], `[uplink]` in [`crate::uplink`], `[modbus]` and
//! `[[device]]` in [`crate::poll`], `[mqtt_input]` and `[[mqtt_device]]` in
//! [`crate::mqtt_in`]); this file puts them together and checks what needs more than one
//! section or the profiles. It imports those modules; none of them imports it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::field::profile::FieldProfile;
use crate::profile::mqtt::{topic_vars, MqttProfile};
use crate::profile::Profile;
use crate::transport::{SerialLine, Transport};

// The sections, reachable from the aggregate as well as from their modules.
pub use crate::mqtt_in::{MqttDeviceConfig, MqttInputConfig};
pub use crate::poll::{DeviceConfig, ModbusConfig};
pub use crate::queue::QueueConfig;
pub use crate::uplink::UplinkConfig;

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Address of the local `/healthz`, `/metrics` and `/status` server, e.g. `127.0.0.1:9108`.
    #[serde(default)]
    pub listen: Option<String>,
}

fn default_profiles_dir() -> PathBuf {
    PathBuf::from("device-profiles")
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
    pub fn validate_all(&self, profiles: &BTreeMap<String, Profile>, mqtt_profiles: &BTreeMap<String, MqttProfile>) -> Result<(), ConfigErrors> {
        self.validate_full(profiles, mqtt_profiles, &BTreeMap::new())
    }

    /// Like [`GatewayConfig::validate_all`], with the DL/T 645 and CJ/T 188 profiles.
    pub fn validate_full(
        &self,
        profiles: &BTreeMap<String, Profile>,
        mqtt_profiles: &BTreeMap<String, MqttProfile>,
        field_profiles: &BTreeMap<String, FieldProfile>,
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if let Err(e) = energy_wire::validate_id(&self.gateway_id) {
            errors.push(format!("gateway_id: {e}"));
        }
        self.check_uplink(&mut errors);
        self.check_local(&mut errors);
        let mut meters = HashSet::new();
        let mut buses = Buses::default();
        for (i, d) in self.devices.iter().enumerate() {
            self.check_device(i, d, profiles, field_profiles, &mut meters, &mut buses, &mut errors);
        }
        buses.check_field_addresses(&mut errors);
        self.check_mqtt(mqtt_profiles, &mut meters, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// `[uplink]`: its URL, topics, secrets and batch sizes.
    fn check_uplink(&self, errors: &mut Vec<String>) {
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
        if u.batch_max_samples == 0 || u.batch_max_samples > energy_wire::MAX_SAMPLES_PER_BATCH {
            errors.push(format!("uplink.batch_max_samples must be 1..={}", energy_wire::MAX_SAMPLES_PER_BATCH));
        }
    }

    /// `[queue]`, `[health]` and `[modbus]`.
    fn check_local(&self, errors: &mut Vec<String>) {
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
    }

    /// One `[[device]]`: its meter id, its profile, its transport (and what it shares with the
    /// devices before it, in `buses`) and its settings.
    #[allow(clippy::too_many_arguments)]
    fn check_device(
        &self,
        i: usize,
        d: &DeviceConfig,
        profiles: &BTreeMap<String, Profile>,
        field_profiles: &BTreeMap<String, FieldProfile>,
        meters: &mut HashSet<String>,
        buses: &mut Buses,
        errors: &mut Vec<String>,
    ) {
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
                Ok(a) => buses.field_addresses.entry(t.bus()).or_default().push((d.meter.clone(), a)),
                Err(e) => errors.push(format!("{at}: {e} ({})", fp.protocol.name())),
            }
        } else if d.address.is_some() && profiles.contains_key(&d.profile) {
            errors.push(format!("{at}: address is for DL/T 645 and CJ/T 188 meters; a Modbus device has a unit"));
        }
        if let Some(o) = &d.di_order {
            match field {
                Some(fp) if fp.protocol == crate::field::profile::Protocol::Cjt188 => {
                    if let Err(e) = crate::field::cjt188::DiOrder::parse(o) {
                        errors.push(format!("{at}: {e}"));
                    }
                }
                Some(_) => errors.push(format!("{at}: di_order is for CJ/T 188 meters")),
                None if profiles.contains_key(&d.profile) => errors.push(format!("{at}: di_order is for CJ/T 188 meters")),
                None => {}
            }
        }
        match transport {
            Ok(t) => buses.check_transport(&at, &d.meter, field.is_some(), &t, errors),
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
            } else if r != 1.0 && field.is_some_and(|fp| fp.protocol == crate::field::profile::Protocol::Cjt188) {
                errors.push(format!("{at}: {name} is for electricity meters behind instrument transformers; a CJ/T 188 meter has none"));
            }
        }
    }

    /// `[mqtt_input]` and every `[[mqtt_device]]`.
    fn check_mqtt(&self, mqtt_profiles: &BTreeMap<String, MqttProfile>, meters: &mut HashSet<String>, errors: &mut Vec<String>) {
        if !self.mqtt_devices.is_empty() && self.mqtt_input.is_none() {
            errors.push("mqtt_device entries need an [mqtt_input] broker".into());
        }
        if let Some(mi) = &self.mqtt_input {
            if let Err(e) = mi.endpoint() {
                errors.push(format!("mqtt_input.url: {e}"));
            }
            if let Err(e) = mi.password() {
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
                        for v in topic_vars(&m.topic) {
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
    }
}

/// A field meter and its address on the wire (`None`: to be found on the bus).
type MeterAddress = (String, Option<Vec<u8>>);

/// What the devices checked so far use: endpoints and their framing, serial ports and their
/// line settings, which buses are field buses, and the field meters' addresses per bus.
#[derive(Default)]
struct Buses {
    framings: BTreeMap<String, Transport>,
    lines: BTreeMap<String, SerialLine>,
    /// Per bus: whether it is a field bus, and the first meter seen on it.
    bus_kind: BTreeMap<String, (bool, String)>,
    field_addresses: BTreeMap<String, Vec<MeterAddress>>,
}

impl Buses {
    /// A device's transport against those before it: one protocol family per bus, one framing
    /// per endpoint, one set of line settings per serial port.
    fn check_transport(&mut self, at: &str, meter: &str, field: bool, t: &Transport, errors: &mut Vec<String>) {
        if let Some((_, other)) = self.bus_kind.insert(t.bus(), (field, meter.to_string())).filter(|(f, _)| *f != field) {
            errors.push(format!(
                "{at}: {} has Modbus and DL/T 645 / CJ/T 188 meters (also {other}): one bus speaks one protocol family",
                t.bus()
            ));
        }
        let endpoint = match t {
            Transport::Tcp(a) | Transport::RtuOverTcp(a) => Some(a.clone()),
            Transport::Serial(_) => None,
        };
        if let Some(e) = endpoint {
            if let Some(other) = self.framings.insert(e.clone(), t.clone()).filter(|o| o != t) {
                errors.push(format!("{at}: {e} is used as {t} and as {other}: one endpoint has one framing"));
            }
        }
        if let Transport::Serial(line) = t {
            if let Some(other) = self.lines.insert(line.path.clone(), line.clone()).filter(|o| o != line) {
                errors.push(format!(
                    "{at}: serial port {} is configured with other line settings by another device ({} baud, {:?} parity, {} data bits, {} stop bits)",
                    line.path, other.baud, other.parity, other.data_bits, other.stop_bits
                ));
            }
        }
    }

    /// Field meters sharing a bus each need an address, and no two the same.
    fn check_field_addresses(&self, errors: &mut Vec<String>) {
        for (bus, meters) in &self.field_addresses {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Parity;

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
        let water = water_profile();
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

    /// A CJ/T 188 cold-water profile `generic/w`.
    fn water_profile() -> crate::field::profile::FieldProfile {
        crate::field::profile::parse_field_profile(
            "generic/w",
            "w.toml",
            "vendor = \"G\"\nmodel = \"W\"\nsource = \"s\"\nprotocol = \"cjt188\"\nmeter_type = \"10\"\n[[value]]\nfield = \"volume\"\nquantity = \"water_volume\"\nunit = \"m³\"\n",
        )
        .unwrap()
    }

    #[test]
    fn a_cjt188_device_may_set_its_di_order() {
        let field = BTreeMap::from([("generic/w".to_string(), water_profile())]);
        let mut cfg = config(
            r#"
[[device]]
meter = "w1"
profile = "generic/w"
tcp = "10.0.0.5:4001"
di_order = "high-first"
"#,
        );
        assert_eq!(cfg.devices[0].di_order.as_deref(), Some("high-first"));
        assert!(cfg.validate_full(&profiles(), &BTreeMap::new(), &field).is_ok());
        cfg.devices[0].di_order = Some("90 1F".into());
        let mut modbus = DeviceConfig::tcp("m", "t/t", "10.0.0.6:502", 1);
        modbus.di_order = Some("low-first".into());
        cfg.devices.push(modbus);
        let text = cfg.validate_full(&profiles(), &BTreeMap::new(), &field).unwrap_err().to_string();
        for want in ["device[0] (w1): di_order `90 1F` is not one of \"low-first\", \"high-first\"", "device[1] (m): di_order is for CJ/T 188 meters"] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }

    #[test]
    fn transformer_ratios_are_positive_and_only_for_electricity_meters() {
        let dlt = crate::field::profile::parse_field_profile(
            "generic/e",
            "e.toml",
            "vendor = \"G\"\nmodel = \"E\"\nsource = \"s\"\nprotocol = \"dlt645-2007\"\n[[read]]\ndi = \"00 01 00 00\"\n[[read.value]]\nquantity = \"active_energy_import\"\nformat = \"XXXXXX.XX\"\nunit = \"kWh\"\n",
        )
        .unwrap();
        let field = BTreeMap::from([("generic/w".to_string(), water_profile()), ("generic/e".to_string(), dlt)]);
        let mut cfg = config(
            r#"
[[device]]
meter = "e1"
profile = "generic/e"
tcp = "10.0.0.5:4001"
ct_ratio = 40.0
pt_ratio = 100.0
"#,
        );
        assert_eq!((cfg.devices[0].ct_ratio, cfg.devices[0].pt_ratio), (40.0, 100.0));
        assert!(cfg.validate_full(&profiles(), &BTreeMap::new(), &field).is_ok());
        cfg.devices[0].pt_ratio = f64::INFINITY;
        let mut w = DeviceConfig::tcp("w1", "generic/w", "10.0.0.6:4001", 1);
        w.ct_ratio = 40.0;
        cfg.devices.push(w);
        let mut e2 = DeviceConfig::tcp("e2", "generic/e", "10.0.0.7:4001", 1);
        e2.ct_ratio = 0.0;
        cfg.devices.push(e2);
        let text = cfg.validate_full(&profiles(), &BTreeMap::new(), &field).unwrap_err().to_string();
        for want in [
            "device[0] (e1): pt_ratio must be a positive number",
            "device[1] (w1): ct_ratio is for electricity meters behind instrument transformers; a CJ/T 188 meter has none",
            "device[2] (e2): ct_ratio must be a positive number",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }
}
