//! MQTT meters: meters and sensors that publish JSON on a local broker (Tasmota, Shelly and
//! similar), mapped to samples by their profiles ([`crate::profile::mqtt`]).
//!
//! Each message that arrives becomes one sample of the device's meter, stamped with the time of
//! arrival. A payload that is not JSON, or a pointer that finds no number, is counted
//! (`energy_gateway_mqtt_input_errors_total`) and the other values of the message are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use energy_wire::Sample;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::pause_before_retry;
use crate::broker::{self, SecretError, UrlError};
use crate::metrics::Metrics;
use crate::profile::mqtt::{extract, resolve_topic, MqttMessage, MqttProfile};
use crate::time::now_ms;

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
    /// (host, port, tls) of the broker: the same URL rules as the uplink's.
    pub fn endpoint(&self) -> Result<(String, u16, bool), UrlError> {
        broker::mqtt_endpoint(&self.url)
    }

    /// The password, from `password` or `password_file`.
    pub fn password(&self) -> Result<Option<String>, SecretError> {
        broker::password(self.password.as_deref(), self.password_file.as_deref())
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

/// A subscribed topic and what to do with its messages.
struct Route {
    meter: String,
    message: MqttMessage,
}

/// Subscribes to every device's topics and sends a sample per message until cancelled.
pub async fn run(
    input: MqttInputConfig,
    devices: Vec<MqttDeviceConfig>,
    profiles: BTreeMap<String, MqttProfile>,
    gateway_id: String,
    out: mpsc::Sender<Sample>,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let routes = routes(&devices, &profiles);
    if routes.is_empty() {
        return;
    }
    let Some(o) = options(&input, &gateway_id) else { return };
    let (client, mut el) = AsyncClient::new(o, 64);
    let topics: Vec<String> = routes.keys().cloned().collect();
    let mut backoff = Duration::from_millis(200);
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            () = cancel.cancelled() => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                tracing::info!(topics = topics.len(), "MQTT meter input connected");
                for t in &topics {
                    let _ = client.try_subscribe(t.clone(), QoS::AtMostOnce);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if !forward(&routes, &p, &out, &metrics).await {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_input_errors.with_label_values(&["connection"]).inc();
                tracing::warn!("MQTT meter input: {e}");
                if !pause_before_retry(&mut backoff, Duration::from_secs(30), &cancel).await {
                    break;
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

/// Every topic the devices' profiles name (their variables filled), with who gets its messages.
fn routes(devices: &[MqttDeviceConfig], profiles: &BTreeMap<String, MqttProfile>) -> HashMap<String, Vec<Route>> {
    let mut routes: HashMap<String, Vec<Route>> = HashMap::new();
    for d in devices {
        if let Some(p) = profiles.get(&d.profile) {
            for m in &p.messages {
                routes.entry(resolve_topic(&m.topic, &d.vars)).or_default().push(Route { meter: d.meter.clone(), message: m.clone() });
            }
        }
    }
    routes
}

/// The broker connection's options; `None` (and logged) when the URL or the TLS setup is bad.
fn options(input: &MqttInputConfig, gateway_id: &str) -> Option<MqttOptions> {
    let (host, port, tls) = match input.endpoint() {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("mqtt_input: {e}");
            return None;
        }
    };
    let mut o = MqttOptions::new(format!("energy-gateway-{gateway_id}-meters"), host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 16);
    if let Some(user) = &input.username {
        o.set_credentials(user.clone(), input.password().ok().flatten().unwrap_or_default());
    }
    if tls {
        match crate::tls::client_config(input.ca_file.as_deref()) {
            Ok(c) => {
                o.set_transport(Transport::Tls(TlsConfiguration::Rustls(std::sync::Arc::new(c))));
            }
            Err(e) => {
                tracing::error!("mqtt_input TLS: {e}");
                return None;
            }
        }
    }
    Some(o)
}

/// Sends a sample per route of the message's topic. `false` when the queue writer is gone.
async fn forward(routes: &HashMap<String, Vec<Route>>, p: &Publish, out: &mpsc::Sender<Sample>, metrics: &Metrics) -> bool {
    let Some(rs) = routes.get(&p.topic) else { return true };
    let payload: serde_json::Value = match serde_json::from_slice(&p.payload) {
        Ok(v) => v,
        Err(e) => {
            metrics.mqtt_input_errors.with_label_values(&["not_json"]).inc();
            tracing::warn!(topic = %p.topic, "payload is not JSON: {e}");
            return true;
        }
    };
    for r in rs {
        let (v, missing) = extract(&r.message, &payload);
        if !missing.is_empty() {
            metrics.mqtt_input_errors.with_label_values(&["missing_value"]).inc_by(missing.len() as u64);
            tracing::debug!(topic = %p.topic, ?missing, "pointers found no number");
        }
        if v.is_empty() {
            continue;
        }
        metrics.samples.inc();
        if out.send(Sample { meter: r.meter.clone(), t: now_ms(), v }).await.is_err() {
            return false;
        }
    }
    true
}
