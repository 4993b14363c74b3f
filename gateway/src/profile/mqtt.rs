//! MQTT meter profiles: how the JSON that meters and sensors publish on a local broker (Tasmota,
//! Shelly and similar) maps to samples, in `device-profiles/mqtt/<vendor>/<model>.toml`:
//!
//! ```toml
//! vendor = "Tasmota"
//! model = "..."
//! source = "the documentation the mapping was checked against"
//! [[message]]
//! topic = "tele/{topic}/SENSOR"      # {name} is filled from the device's `vars`
//! [[message.value]]
//! quantity = "active_power"
//! pointer = "/ENERGY/Power"          # JSON pointer (RFC 6901) into the payload
//! scale = 0.001                      # value = raw * scale + offset, in `unit`
//! unit = "kW"                        # must be the quantity's contract unit
//! ```
//!
//! The subscription that uses them is [`crate::mqtt_in`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use energy_wire::Quantity;
use serde::{Deserialize, Serialize};

use super::load::{ProfileError, ProfileErrors};


#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttValue {
    pub quantity: Quantity,
    pub pointer: String,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    pub unit: String,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMessage {
    pub topic: String,
    #[serde(rename = "value")]
    pub values: Vec<MqttValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttProfile {
    #[serde(default, skip_deserializing)]
    pub name: String,
    pub vendor: String,
    pub model: String,
    pub source: String,
    #[serde(rename = "message")]
    pub messages: Vec<MqttMessage>,
}

/// Variables `{name}` used in a topic pattern.
pub fn topic_vars(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        match rest[i..].find('}') {
            Some(j) => {
                out.push(rest[i + 1..i + j].to_string());
                rest = &rest[i + j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Fills a topic pattern's variables.
pub fn resolve_topic(pattern: &str, vars: &BTreeMap<String, String>) -> String {
    let mut t = pattern.to_string();
    for (k, v) in vars {
        t = t.replace(&format!("{{{k}}}"), v);
    }
    t
}

pub fn parse_mqtt_profile(name: &str, file: &str, text: &str) -> Result<MqttProfile, Vec<ProfileError>> {
    let err = |message: String| ProfileError { file: file.to_string(), message };
    let mut p: MqttProfile = toml::from_str(text).map_err(|e| vec![err(e.to_string().trim_end().replace('\n', " "))])?;
    p.name = name.to_string();
    let mut errors = Vec::new();
    if p.source.trim().is_empty() {
        errors.push(err("`source` must name the documentation the mapping was checked against".into()));
    }
    if p.messages.is_empty() {
        errors.push(err("the profile has no [[message]]".into()));
    }
    let mut seen = HashMap::new();
    for (i, m) in p.messages.iter().enumerate() {
        if m.topic.is_empty() || m.topic.contains(['+', '#']) {
            errors.push(err(format!("message[{i}]: topic `{}` must be a topic without wildcards (use {{variables}})", m.topic)));
        }
        for (j, v) in m.values.iter().enumerate() {
            let at = format!("message[{i}].value[{j}] ({})", v.quantity);
            if v.unit != v.quantity.unit() {
                errors.push(err(format!("{at}: unit `{}` does not match the quantity's unit `{}`", v.unit, v.quantity.unit())));
            }
            if !v.pointer.starts_with('/') {
                errors.push(err(format!("{at}: pointer `{}` must start with `/` (a JSON pointer)", v.pointer)));
            }
            if !v.scale.is_finite() || v.scale == 0.0 || !v.offset.is_finite() {
                errors.push(err(format!("{at}: scale must be finite and non-zero, offset finite")));
            }
            if let Some(prev) = seen.insert(v.quantity, at.clone()) {
                errors.push(err(format!("{at}: quantity {} is already mapped by {prev}", v.quantity)));
            }
        }
    }
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(errors)
    }
}

/// Loads every profile below `<dir>/mqtt`, named `mqtt/<vendor>/<model>`.
pub fn load_mqtt_dir(dir: &Path) -> Result<BTreeMap<String, MqttProfile>, ProfileErrors> {
    let root = dir.join("mqtt");
    let mut out = BTreeMap::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| ProfileErrors(vec![ProfileError { file: d.display().to_string(), message: format!("cannot list: {e}") }]))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut errors = Vec::new();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f).with_extension("");
        let name = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
        let file = f.display().to_string();
        match std::fs::read_to_string(&f) {
            Ok(text) => match parse_mqtt_profile(&name, &file, &text) {
                Ok(p) => {
                    out.insert(name, p);
                }
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(ProfileError { file, message: format!("cannot read: {e}") }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ProfileErrors(errors))
    }
}

/// Extracts the values of one message; returns the values and the pointers that found nothing.
pub fn extract(message: &MqttMessage, payload: &serde_json::Value) -> (BTreeMap<Quantity, f64>, Vec<String>) {
    let mut v = BTreeMap::new();
    let mut missing = Vec::new();
    for m in &message.values {
        let raw = payload.pointer(&m.pointer).and_then(|x| x.as_f64().or_else(|| x.as_str().and_then(|s| s.trim().parse::<f64>().ok())));
        match raw {
            Some(r) if r.is_finite() => {
                let value = r * m.scale + m.offset;
                if value.is_finite() {
                    v.insert(m.quantity, value);
                }
            }
            _ => missing.push(m.pointer.clone()),
        }
    }
    (v, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_mqtt_profiles_load_and_map_real_payloads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles");
        let profiles = load_mqtt_dir(&dir).unwrap();
        let tas = &profiles["mqtt/tasmota/energy"];
        let payload: serde_json::Value = serde_json::from_str(
            r#"{"Time":"2018-01-17T18:59:50","ENERGY":{"Total":1.956,"Yesterday":0.054,"Today":0.049,"Period":0,"Power":9,"Factor":0.43,"Voltage":231,"Current":0.089}}"#,
        )
        .unwrap();
        let (v, missing) = extract(&tas.messages[0], &payload);
        assert_eq!(v[&Quantity::ActiveEnergyImport], 1.956);
        assert!((v[&Quantity::ActivePower] - 0.009).abs() < 1e-15);
        assert_eq!(v[&Quantity::VoltageL1], 231.0);
        assert_eq!(missing, vec!["/ENERGY/ApparentPower".to_string(), "/ENERGY/ReactivePower".to_string()]);
        let shelly = &profiles["mqtt/shelly/plus-pm-switch"];
        let vars: BTreeMap<String, String> = [("prefix".to_string(), "shellyplus1pm-x".to_string()), ("channel".to_string(), "0".to_string())].into_iter().collect();
        assert_eq!(resolve_topic(&shelly.messages[0].topic, &vars), "shellyplus1pm-x/status/switch:0");
        let payload: serde_json::Value =
            serde_json::from_str(r#"{"id":0,"output":true,"apower":120.5,"voltage":229.8,"current":0.55,"freq":50.01,"aenergy":{"total":12345.6}}"#).unwrap();
        let (v, missing) = extract(&shelly.messages[0], &payload);
        assert!(missing.is_empty());
        assert!((v[&Quantity::ActiveEnergyImport] - 12.3456).abs() < 1e-12);
        assert!((v[&Quantity::ActivePower] - 0.1205).abs() < 1e-12);
    }

    #[test]
    fn bad_profiles_report_every_problem() {
        let bad = r#"
vendor = "X"
model = "Y"
source = ""
[[message]]
topic = "a/+/b"
[[message.value]]
quantity = "active_power"
pointer = "apower"
unit = "W"
[[message.value]]
quantity = "active_power"
pointer = "/x"
scale = 0
unit = "kW"
"#;
        let e = parse_mqtt_profile("mqtt/x", "x.toml", bad).unwrap_err();
        let text = e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for n in ["`source`", "without wildcards", "unit `W`", "must start with `/`", "scale must be", "already mapped"] {
            assert!(text.contains(n), "missing {n} in {text}");
        }
    }

    #[test]
    fn topic_variables() {
        assert_eq!(topic_vars("{prefix}/status/switch:{channel}"), vec!["prefix", "channel"]);
        assert!(topic_vars("tele/x/SENSOR").is_empty());
    }
}

