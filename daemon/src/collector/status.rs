//! What the listener knows about the collectors: who is connected, when each was last heard,
//! what each sent, the values no registry meter takes (`GET /api/v1/collectors`), and the
//! metrics (`energyd_collector_*`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde::Serialize;

use super::mapping::Unassigned;

/// One collector (building id, gateway id).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seen {
    pub building: String,
    pub gateway: String,
    pub connected: u32,
    /// Milliseconds since the epoch.
    pub last_seen_ms: i64,
    pub reports: u64,
    pub values_stored: u64,
    pub values_unchanged: u64,
    pub values_bad: u64,
    pub identity_refused: u64,
    pub last_problem: Option<String>,
}

/// A value no registry meter takes, as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct UnassignedSeen {
    #[serde(flatten)]
    pub value: Unassigned,
    pub last_seen_ms: i64,
}

#[derive(Default)]
struct Inner {
    seen: BTreeMap<(String, String), Seen>,
    unassigned: BTreeMap<String, UnassignedSeen>,
}

/// The listener's shared state.
pub struct Collectors {
    inner: Mutex<Inner>,
    pub identity_refused: IntCounter,
    pub values: IntCounterVec,
    pub refused: IntCounterVec,
    pub unassigned_meters: IntGauge,
    pub connections: IntGauge,
}

impl Collectors {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Collectors {
        let c = Collectors {
            inner: Mutex::new(Inner::default()),
            identity_refused: IntCounter::new("energyd_collector_identity_refused_total", "National-protocol identity checks failed (wrong MD5, unknown collector)").unwrap_or_else(|e| panic!("metric: {e}")),
            values: IntCounterVec::new(Opts::new("energyd_collector_values_total", "Values reported by national-protocol collectors, by result (stored, unchanged, conflict, bad, refused)"), &["result"]).unwrap_or_else(|e| panic!("metric: {e}")),
            refused: IntCounterVec::new(Opts::new("energyd_collector_sessions_closed_total", "Collector connections closed for a protocol problem, by reason"), &["reason"]).unwrap_or_else(|e| panic!("metric: {e}")),
            unassigned_meters: IntGauge::new("energyd_collector_unassigned_meters", "Collector meters and functions that no registry meter takes (stored, listed in /api/v1/collectors)").unwrap_or_else(|e| panic!("metric: {e}")),
            connections: IntGauge::new("energyd_collector_connections", "Open national-protocol connections").unwrap_or_else(|e| panic!("metric: {e}")),
        };
        for m in [Box::new(c.identity_refused.clone()) as Box<dyn prometheus::core::Collector>, Box::new(c.values.clone()), Box::new(c.refused.clone()), Box::new(c.unassigned_meters.clone()), Box::new(c.connections.clone())] {
            // A second daemon in one process (tests) registers into its own registry.
            let _ = registry.register(m);
        }
        c
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn update(&self, building: &str, gateway: &str, now_ms: i64, f: impl FnOnce(&mut Seen)) {
        self.with(|i| {
            let s = i.seen.entry((building.to_string(), gateway.to_string())).or_insert_with(|| Seen { building: building.into(), gateway: gateway.into(), ..Seen::default() });
            s.last_seen_ms = now_ms;
            f(s);
        });
    }

    pub fn note_unassigned(&self, list: &[Unassigned], now_ms: i64) {
        if list.is_empty() {
            return;
        }
        let n = self.with(|i| {
            for u in list {
                i.unassigned.insert(u.stored_as.clone(), UnassignedSeen { value: u.clone(), last_seen_ms: now_ms });
            }
            i.unassigned.len()
        });
        self.unassigned_meters.set(n as i64);
    }

    /// The collectors seen and the unassigned values, sorted.
    pub fn snapshot(&self) -> (Vec<Seen>, Vec<UnassignedSeen>) {
        self.with(|i| (i.seen.values().cloned().collect(), i.unassigned.values().cloned().collect()))
    }
}
