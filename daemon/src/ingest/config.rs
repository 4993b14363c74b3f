//! Ingest's sections of the daemon's configuration: `[ingest]` (unknown meters, rate per
//! gateway) and `[mqtt]` (the broker the MQTT ingest subscribes on). `crate::config` gathers
//! them into the file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownMeter {
    #[default]
    Reject,
    Accept,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Line protocol for a meter not in the registry: refuse the line (default) or keep it and
    /// list the meter as unassigned. Gateway batches are always kept (the gateway cannot fix
    /// them); their unknown meters are listed as unassigned.
    #[serde(default)]
    pub unknown_meter: UnknownMeter,
    /// Ingest requests (batches or line-protocol writes) per second per gateway (the gateway
    /// token's id, else the batch's `gateway`, else the token's name); 0: no limit. Over it: 429
    /// with `Retry-After`, which the gateway's uplink honours.
    #[serde(default)]
    pub rate_per_gateway: f64,
    /// Token-bucket size: requests allowed in a burst (0: twice the rate, at least 1).
    #[serde(default)]
    pub burst_per_gateway: u32,
}

impl IngestConfig {
    /// Every problem, named by its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.rate_per_gateway.is_finite() && self.rate_per_gateway >= 0.0) {
            out.push("ingest.rate_per_gateway must be a number of requests per second, 0 or more".into());
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: String,
    /// Unique per daemon: the broker keeps this client's session (and the batches it has not yet
    /// acknowledged) across restarts.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Shared-subscription group (`$share/<group>/...`): daemons in one group split the
    /// gateways' batches between them. Empty: every daemon gets every batch.
    #[serde(default = "default_share_group")]
    pub share_group: String,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl MqttConfig {
    /// The same URL rules as the gateway's uplink.
    pub fn as_uplink(&self) -> energy_gateway::config::UplinkConfig {
        let mut u = energy_gateway::config::UplinkConfig::with_url(self.url.clone());
        u.topic_prefix.clone_from(&self.topic_prefix);
        u.username.clone_from(&self.username);
        u.password.clone_from(&self.password);
        u.password_file.clone_from(&self.password_file);
        u.ca_file.clone_from(&self.ca_file);
        u
    }

    /// Every problem, named by its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let u = self.as_uplink();
        if let Err(e) = u.mqtt_endpoint() {
            out.push(format!("mqtt.url: {e}"));
        }
        if let Err(e) = u.password() {
            out.push(format!("mqtt: {e}"));
        }
        if self.client_id.is_empty() || self.client_id.contains(['/', '+', '#']) {
            out.push(format!("mqtt.client_id `{}` must be a non-empty name without / + #", self.client_id));
        }
        if self.share_group.contains(['/', '+', '#']) {
            out.push(format!("mqtt.share_group `{}` cannot contain / + #", self.share_group));
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                out.push(format!("mqtt.ca_file {} does not exist", ca.display()));
            }
        }
        out
    }
}

fn default_client_id() -> String {
    "energyd".into()
}
fn default_share_group() -> String {
    "energyd".into()
}
fn default_topic_prefix() -> String {
    "energy/v1".into()
}
