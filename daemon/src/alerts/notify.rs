//! Sending alerts to an Alertmanager (`POST /api/v2/alerts`) and to a webhook.
//!
//! Like Prometheus, the daemon sends every firing alert again at least once a minute with
//! `endsAt` = now + 4 x max(interval, 1 min), so that Alertmanager keeps it while the daemon
//! runs and resolves it by itself if the daemon goes away; a resolved alert is sent with its
//! real `endsAt` until it is forgotten (`keep_resolved`). A failed POST is retried three times
//! with back-off, then again at the next evaluation.
//!
//! Acknowledged and silenced alerts ([`super::actions`]): the webhook does not get them.
//! Alertmanager still gets them (so that it does not take them for resolved when they stop
//! coming), each under an Alertmanager silence the daemon keeps in step ([`WantedSilence`]):
//! made when the alert is acknowledged or silenced (matching all its labels, `createdBy` the
//! actor, the comment with the reason and the marker `[energyd alert <id>]`), expired when the
//! acknowledgement or the silence ends. An acknowledgement's silence lasts a day and is renewed
//! while it holds; a silence's ends when it does. The daemon finds its silences again by the
//! marker, so nothing is lost across a restart.

use std::collections::BTreeMap;
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

/// An Alertmanager silence the daemon wants for an acknowledged or silenced alert.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedSilence {
    /// The alert's id (fingerprint).
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// The end of the silence; `None`: an acknowledgement, open-ended (renewed a day at a time).
    pub until: Option<i64>,
    pub created_by: String,
    pub comment: String,
}

/// How long an acknowledgement's Alertmanager silence lasts, and when it is renewed.
const ACK_SILENCE_MS: i64 = 24 * 3_600_000;
const ACK_RENEW_MS: i64 = 12 * 3_600_000;

/// The marker by which the daemon knows its silences at Alertmanager.
pub fn marker(id: &str) -> String {
    format!("[energyd alert {id}]")
}

/// The alert id in a silence's comment, if the daemon made it.
fn marked_id(comment: &str) -> Option<&str> {
    let rest = &comment[comment.find("[energyd alert ")? + "[energyd alert ".len()..];
    rest.split(']').next()
}

/// The body of `POST /api/v2/silences` for `w` at `now`.
pub fn silence_body(w: &WantedSilence, now: i64) -> Value {
    let matchers: Vec<Value> = w.labels.iter().map(|(k, v)| json!({ "name": k, "value": v, "isRegex": false, "isEqual": true })).collect();
    json!({
        "matchers": matchers,
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(w.until.unwrap_or(now + ACK_SILENCE_MS)),
        "createdBy": w.created_by,
        "comment": format!("{} {}", w.comment, marker(&w.id)),
    })
}

/// What to do with the daemon's silences at Alertmanager (`existing`: silence id, alert id,
/// end, of the active and pending ones the daemon made): the silences to make, and the ones to
/// expire (not wanted any more, or replaced by a new one with another end).
pub fn silence_plan<'a>(wanted: &'a [WantedSilence], existing: &[(String, String, i64)], now: i64) -> (Vec<&'a WantedSilence>, Vec<String>) {
    let mut make = Vec::new();
    let mut expire = Vec::new();
    let mut kept = std::collections::BTreeSet::new();
    for (sid, id, end) in existing {
        let keep = wanted.iter().find(|w| &w.id == id).is_some_and(|w| match w.until {
            Some(u) => (u - end).abs() < 1000,
            None => end - now > ACK_RENEW_MS,
        });
        if keep && kept.insert(id.clone()) {
            continue;
        }
        expire.push(sid.clone());
    }
    for w in wanted {
        if !kept.contains(&w.id) {
            make.push(w);
        }
    }
    (make, expire)
}

/// What one notification round sends: every alert not pending (Alertmanager), those neither
/// acknowledged nor silenced (the webhook), and the Alertmanager silences the others want.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub all: Vec<Alert>,
    pub notifiable: Vec<Alert>,
    pub wanted: Vec<WantedSilence>,
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

    /// Sends when something changed, or a minute after the last successful send: every alert
    /// not pending to Alertmanager with the silences wanted kept in step, the notifiable ones
    /// (neither acknowledged nor silenced) to the webhook.
    pub async fn send(&mut self, metrics: &Metrics, out: &Outgoing, now: i64, changed: bool, interval_ms: i64) {
        let (all, notifiable, wanted) = (&out.all, &out.notifiable, &out.wanted);
        let due = changed || self.last_sent.is_none_or(|t| now - t >= 60_000);
        if !due || (all.is_empty() && !changed && self.last_sent.is_some()) {
            return;
        }
        let mut ok = true;
        if let Some(url) = &self.alertmanager {
            // Silences first, so that an alert acknowledged since the last send is not
            // notified by Alertmanager in between.
            ok &= self.sync_silences(metrics, wanted, now).await;
            let body = alertmanager_body(all, now, interval_ms, "/api/v1/alerts");
            ok &= post(&self.client, metrics, "alertmanager", url, &body).await;
        }
        if let Some(url) = &self.webhook {
            if changed || !notifiable.is_empty() {
                ok &= post(&self.client, metrics, "webhook", url, &webhook_body(notifiable)).await;
            }
        }
        if ok {
            self.last_sent = Some(now);
        }
    }
}

impl Notifier {
    /// Makes and expires the daemon's silences at Alertmanager so that they are `wanted`.
    async fn sync_silences(&self, metrics: &Metrics, wanted: &[WantedSilence], now: i64) -> bool {
        let Some(alerts_url) = &self.alertmanager else { return true };
        let base = alerts_url.trim_end_matches("/alerts");
        let listed = match self.client.get(format!("{base}/silences")).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok().and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok()),
            Ok(r) => {
                tracing::warn!(status = %r.status(), "alertmanager: listing silences refused");
                None
            }
            Err(e) => {
                tracing::warn!("alertmanager: listing silences failed: {e}");
                None
            }
        };
        let Some(listed) = listed else {
            metrics.alert_notifications.with_label_values(&["alertmanager_silences", "failed"]).inc();
            return false;
        };
        let existing: Vec<(String, String, i64)> = listed
            .iter()
            .filter(|s| matches!(s["status"]["state"].as_str(), Some("active" | "pending")))
            .filter_map(|s| {
                let id = marked_id(s["comment"].as_str()?)?.to_string();
                let end = chrono::DateTime::parse_from_rfc3339(s["endsAt"].as_str()?).ok()?.timestamp_millis();
                Some((s["id"].as_str()?.to_string(), id, end))
            })
            .collect();
        let (make, expire) = silence_plan(wanted, &existing, now);
        let mut ok = true;
        for w in make {
            ok &= post(&self.client, metrics, "alertmanager_silences", &format!("{base}/silences"), &silence_body(w, now)).await;
        }
        for sid in expire {
            match self.client.delete(format!("{base}/silence/{sid}")).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(silence = %sid, status = %r.status(), "alertmanager: expiring a silence refused");
                    ok = false;
                }
                Err(e) => {
                    tracing::warn!(silence = %sid, "alertmanager: expiring a silence failed: {e}");
                    ok = false;
                }
            }
        }
        ok
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

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, until: Option<i64>) -> WantedSilence {
        WantedSilence { id: id.into(), labels: BTreeMap::from([("alertname".to_string(), "R".to_string()), ("meter".to_string(), id.to_string())]), until, created_by: "eng".into(), comment: "acknowledged in energyd: on site".into() }
    }

    #[test]
    fn silences_at_alertmanager_follow_the_acknowledgements_and_silences() {
        const NOW: i64 = 1_000_000_000;
        const H: i64 = 3_600_000;
        // (wanted, existing (silence id, alert id, end), silences made (alert ids), expired)
        type Case = (Vec<WantedSilence>, Vec<(String, String, i64)>, Vec<&'static str>, Vec<&'static str>);
        let e = |sid: &str, id: &str, end: i64| (sid.to_string(), id.to_string(), end);
        let cases: Vec<Case> = vec![
            // Nothing there yet: made.
            (vec![w("a", None), w("b", Some(NOW + 2 * H))], vec![], vec!["a", "b"], vec![]),
            // There, with 20 h left (an acknowledgement: more than the 12 h of renewal) and the
            // right end: kept.
            (vec![w("a", None), w("b", Some(NOW + 2 * H))], vec![e("s1", "a", NOW + 20 * H), e("s2", "b", NOW + 2 * H)], vec![], vec![]),
            // An acknowledgement's silence with 11 h left: renewed (a new one, the old expired).
            (vec![w("a", None)], vec![e("s1", "a", NOW + 11 * H)], vec!["a"], vec!["s1"]),
            // A silence whose end moved (silenced again until later): replaced.
            (vec![w("b", Some(NOW + 5 * H))], vec![e("s2", "b", NOW + 2 * H)], vec!["b"], vec!["s2"]),
            // Not wanted any more (the acknowledgement ended): expired; a duplicate too.
            (vec![w("b", Some(NOW + 2 * H))], vec![e("s1", "a", NOW + 20 * H), e("s2", "b", NOW + 2 * H), e("s3", "b", NOW + 2 * H)], vec![], vec!["s1", "s3"]),
        ];
        for (i, (wanted, existing, make, expire)) in cases.iter().enumerate() {
            let (m, x) = silence_plan(wanted, existing, NOW);
            assert_eq!(m.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), *make, "case {i}");
            assert_eq!(x, *expire, "case {i}");
        }
        // The body: every label an exact matcher; the marker in the comment; an
        // acknowledgement's silence a day long.
        let b = silence_body(&w("a", None), NOW);
        assert_eq!(b["matchers"].as_array().unwrap().len(), 2);
        assert_eq!(b["matchers"][1], json!({"name": "meter", "value": "a", "isRegex": false, "isEqual": true}));
        assert_eq!(b["comment"], "acknowledged in energyd: on site [energyd alert a]");
        assert_eq!(b["endsAt"], rfc3339(NOW + 24 * H));
        assert_eq!(marked_id("silenced in energyd: x [energyd alert 0123abcd]"), Some("0123abcd"));
        assert_eq!(marked_id("made by hand"), None);
    }
}
