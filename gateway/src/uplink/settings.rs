//! The `[uplink]` section: where batches go and how (see [`super`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::broker::{self, SecretError};

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

    /// The password, from `password` or `password_file`. (These methods answer errors as text:
    /// the daemon's MQTT ingest takes its broker settings through them.)
    pub fn password(&self) -> Result<Option<String>, String> {
        broker::password(self.password.as_deref(), self.password_file.as_deref()).map_err(|e| e.to_string())
    }

    /// The HTTP bearer token, from `token` or `token_file`; errors name the file, never the token.
    pub fn token(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        match &self.token_file {
            None => Ok(None),
            Some(f) => match std::fs::read_to_string(f) {
                Ok(s) if s.trim().is_empty() => Err(SecretError::EmptyTokenFile(f.clone()).to_string()),
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(source) => Err(SecretError::TokenFile { path: f.clone(), source }.to_string()),
            },
        }
    }

    pub fn is_mqtt(&self) -> bool {
        broker::is_mqtt(&self.url)
    }

    /// (host, port, tls) of an MQTT URL.
    pub fn mqtt_endpoint(&self) -> Result<(String, u16, bool), String> {
        broker::mqtt_endpoint(&self.url).map_err(|e| e.to_string())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
