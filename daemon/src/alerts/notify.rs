//! Sending alerts to an Alertmanager (`POST /api/v2/alerts`) and to a webhook.
//!
//! Like Prometheus, the daemon sends every firing alert again at least once a minute with
//! `endsAt` = now + 4 x max(interval, 1 min), so that Alertmanager keeps it while the daemon
//! runs and resolves it by itself if the daemon goes away; a resolved alert is sent with its
//! real `endsAt` until it is forgotten (`keep_resolved`). A failed POST is retried three times
//! with back-off, then again at the next evaluation.

use std::time::Duration;

use serde_json::{json, Value};

use super::config::AlertsConfig;
use super::state::{Alert, State};
use crate::metrics::Metrics;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
}

/// The Alertmanager API v2 body for `alerts` at `now`.
pub fn alertmanager_body(alerts: &[Alert], now: i64, interval_ms: i64, generator: &str) -> Value {
    let hold = 4 * interval_ms.max(60_000);
    Value::Array(
        alerts
            .iter()
            .filter(|a| a.state != State::Pending)
            .map(|a| {
                let ends = match a.state {
                    State::Resolved => a.ends_at.unwrap_or(now),
                    _ => now + hold,
                };
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at.unwrap_or(a.active_at)),
                    "endsAt": rfc3339(ends),
                    "generatorURL": generator,
                })
            })
            .collect(),
    )
}

/// The webhook body: Alertmanager's webhook shape (`status`, `alerts` with `status`).
pub fn webhook_body(alerts: &[Alert]) -> Value {
    let firing = alerts.iter().any(|a| a.state == State::Firing);
    json!({
        "version": "4",
        "receiver": "energyd",
        "status": if firing { "firing" } else { "resolved" },
        "alerts": alerts.iter().filter(|a| a.state != State::Pending).map(|a| json!({
            "status": if a.state == State::Firing { "firing" } else { "resolved" },
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at.map(rfc3339),
            "endsAt": a.ends_at.map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

pub struct Notifier {
    client: reqwest::Client,
    alertmanager: Option<String>,
    webhook: Option<String>,
    last_sent: Option<i64>,
}

impl Notifier {
    pub fn new(cfg: &AlertsConfig) -> Notifier {
        // reqwest uses rustls without a built-in provider: the same one as the rest of the daemon.
        energy_gateway::tls::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Notifier {
            client,
            alertmanager: cfg.alertmanager_url.as_ref().map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/'))),
            webhook: cfg.webhook_url.clone(),
            last_sent: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.alertmanager.is_some() || self.webhook.is_some()
    }

    /// Sends when something changed, or a minute after the last successful send.
    pub async fn send(&mut self, metrics: &Metrics, alerts: &[Alert], now: i64, changed: bool, interval_ms: i64) {
        let due = changed || self.last_sent.is_none_or(|t| now - t >= 60_000);
        if !due || (alerts.is_empty() && !changed && self.last_sent.is_some()) {
            return;
        }
        let mut ok = true;
        if let Some(url) = &self.alertmanager {
            let body = alertmanager_body(alerts, now, interval_ms, "/api/v1/alerts");
            ok &= post(&self.client, metrics, "alertmanager", url, &body).await;
        }
        if let Some(url) = &self.webhook {
            if changed || !alerts.is_empty() {
                ok &= post(&self.client, metrics, "webhook", url, &webhook_body(alerts)).await;
            }
        }
        if ok {
            self.last_sent = Some(now);
        }
    }
}

/// POSTs `body`, retrying three times (0.5 s, 1 s, 2 s); counts the result.
async fn post(client: &reqwest::Client, metrics: &Metrics, receiver: &str, url: &str, body: &Value) -> bool {
    let mut delay = Duration::from_millis(500);
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        match client.post(url).header("content-type", "application/json").body(body.to_string()).send().await {
            Ok(r) if r.status().is_success() => {
                metrics.alert_notifications.with_label_values(&[receiver, "ok"]).inc();
                return true;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(%receiver, %url, %status, "alert notification refused: {}", text.chars().take(300).collect::<String>());
                if status.is_client_error() {
                    break;
                }
            }
            Err(e) => tracing::warn!(%receiver, %url, "alert notification failed: {e}"),
        }
    }
    metrics.alert_notifications.with_label_values(&[receiver, "failed"]).inc();
    false
}
