//! What the daemon knows of each gateway's connection since it started: its site and status
//! (from its MQTT status topic), and when its batches arrived (HTTP or MQTT). Read by
//! `GET /api/v1/gateways` and by the alert rules (gateway offline, backlog).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::Metrics;

/// What the daemon knows of a gateway's connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayState {
    pub site: String,
    pub online: Option<bool>,
    pub since_ms: i64,
    /// When its first and last batch arrived since the daemon started (HTTP or MQTT).
    pub first_batch_ms: Option<i64>,
    pub last_batch_ms: Option<i64>,
    /// Age of the oldest sample of its last batch on arrival.
    pub last_lag_ms: Option<i64>,
}

impl GatewayState {
    fn new(site: &str, since_ms: i64) -> GatewayState {
        GatewayState { site: site.to_string(), online: None, since_ms, first_batch_ms: None, last_batch_ms: None, last_lag_ms: None }
    }
}

/// The gateways seen, by id.
pub struct Gateways {
    seen: Mutex<BTreeMap<String, GatewayState>>,
    metrics: Metrics,
}

impl Gateways {
    pub fn new(metrics: Metrics) -> Gateways {
        Gateways { seen: Mutex::new(BTreeMap::new()), metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, GatewayState>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the status a gateway published (`energyd_gateway_up{gateway}` follows it).
    pub fn set_online(&self, gateway: &str, site: &str, online: bool) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut g = self.lock();
        let e = g.entry(gateway.to_string()).or_insert_with(|| GatewayState::new(site, now));
        if e.online != Some(online) {
            e.online = Some(online);
            e.since_ms = now;
        }
        e.site = site.to_string();
        self.metrics.gateway_up.with_label_values(&[gateway]).set(i64::from(online));
    }

    /// Notes a gateway's first message (its site from the topic), if it is new.
    pub fn set_seen(&self, gateway: &str, site: &str) {
        let mut g = self.lock();
        if !g.contains_key(gateway) {
            g.insert(gateway.to_string(), GatewayState::new(site, chrono::Utc::now().timestamp_millis()));
        }
    }

    /// Notes a batch that arrived at `now` whose oldest sample was taken at `oldest`.
    pub fn note_batch(&self, gateway: &str, now: i64, oldest: Option<i64>) {
        let mut g = self.lock();
        let e = g.entry(gateway.to_string()).or_insert_with(|| GatewayState::new("", now));
        e.first_batch_ms.get_or_insert(now);
        e.last_batch_ms = Some(now);
        e.last_lag_ms = oldest.map(|t| (now - t).max(0));
    }

    /// Every gateway seen, as of now.
    pub fn snapshot(&self) -> BTreeMap<String, GatewayState> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_batches_are_kept_per_gateway() {
        let g = Gateways::new(Metrics::new());
        g.set_seen("gw1", "ty");
        g.note_batch("gw1", 10_000, Some(4_000));
        g.note_batch("gw1", 12_000, None);
        g.set_online("gw1", "ty2", true);
        // A batch before any status: the site is not known yet.
        g.note_batch("gw2", 11_000, Some(11_500));
        let s = g.snapshot();
        let a = &s["gw1"];
        assert_eq!((a.site.as_str(), a.online, a.first_batch_ms, a.last_batch_ms, a.last_lag_ms), ("ty2", Some(true), Some(10_000), Some(12_000), None));
        let b = &s["gw2"];
        // A sample from after its arrival counts as no lag.
        assert_eq!((b.site.as_str(), b.online, b.last_lag_ms), ("", None, Some(0)));
        // Seen again: nothing changes.
        g.set_seen("gw1", "elsewhere");
        assert_eq!(g.snapshot()["gw1"].site, "ty2");
    }
}
