//! The alert state machine, pure: a finding that appears makes an alert *pending*; held for the
//! rule's `for` it becomes *firing* (`startsAt`); when the finding is gone a firing alert is
//! *resolved* (`endsAt`) and a pending one is dropped. Resolved alerts are kept for
//! `keep_resolved`, then forgotten. A finding that comes back after resolution starts a new
//! alert.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::Severity;
use super::rules::Finding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One alert: a rule and a key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: String,
    pub key: String,
    pub state: State,
    /// `alertname`, `severity`, the finding's labels and the rule's extra labels.
    pub labels: BTreeMap<String, String>,
    /// `summary` (English), `summary_zh`, `description`.
    pub annotations: BTreeMap<String, String>,
    pub value: Option<f64>,
    /// When the condition was first seen (pending since).
    pub active_at: i64,
    /// When it started firing.
    pub starts_at: Option<i64>,
    /// When it resolved.
    pub ends_at: Option<i64>,
    /// Its fingerprint ([`fingerprint`] of its labels): the id the API and the web page use.
    pub id: String,
    /// The band of its value if the rule's values are banded ([`RuleMeta::banded`]).
    pub band: Option<i64>,
    /// Its state changes (pending, firing, resolved) with their times, oldest first, carried
    /// over when a resolved alert comes back; at most [`HISTORY_MAX`].
    pub history: Vec<(State, i64)>,
}

/// State changes (and actions) kept per alert.
pub const HISTORY_MAX: usize = 50;

/// Alertmanager's fingerprint of a label set (Prometheus `model.LabelSet.Fingerprint`): FNV-1a
/// 64 over the labels sorted by name, each name and value followed by the byte 0xff; 16 hex
/// digits. The same labels give the same id here, at Alertmanager and after a restart.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

fn push_history(h: &mut Vec<(State, i64)>, s: State, at: i64) {
    h.push((s, at));
    if h.len() > HISTORY_MAX {
        let extra = h.len() - HISTORY_MAX;
        h.drain(..extra);
    }
}

/// What a rule contributes to every alert of it.
#[derive(Debug, Clone)]
pub struct RuleMeta<'a> {
    pub name: &'a str,
    pub severity: Severity,
    pub for_ms: i64,
    pub labels: &'a BTreeMap<String, String>,
    /// Whether the value's band ([`value_band`]) is a change for an acknowledgement: not for
    /// rules whose value is the time a condition has lasted (it grows by itself).
    pub banded: bool,
}

/// The band of a value: its sign and power of two (…, [0.5, 1), [1, 2), [2, 4), …); 0 for
/// zero; `None` without a (finite) value. Worked: 3 -> 1 (2 <= 3 < 4) + 2048 = 2049;
/// 0.75 -> -1 + 2048 = 2047; -3 -> -2049.
pub fn value_band(v: Option<f64>) -> Option<i64> {
    let v = v.filter(|x| x.is_finite())?;
    if v == 0.0 {
        return Some(0);
    }
    let exp = v.abs().log2().floor() as i64 + 2048;
    Some(if v < 0.0 { -exp } else { exp })
}

/// A change worth notifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Fired,
    Resolved,
}

/// Every alert the engine knows, by (rule, key).
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub alerts: BTreeMap<(String, String), Alert>,
}

impl Book {
    /// Applies one evaluation of a rule at `now`; returns the alerts that fired or resolved.
    pub fn apply(&mut self, rule: &RuleMeta<'_>, findings: Vec<Finding>, now: i64) -> Vec<((String, String), Change)> {
        let mut changes = Vec::new();
        let mut present = std::collections::BTreeSet::new();
        for f in findings {
            let id = (rule.name.to_string(), f.key.clone());
            present.insert(f.key.clone());
            let mut labels = f.labels.clone();
            labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            labels.insert("alertname".into(), rule.name.to_string());
            labels.insert("severity".into(), rule.severity.as_str().to_string());
            let mut annotations = BTreeMap::from([("summary".to_string(), f.summary_en.clone()), ("summary_zh".to_string(), f.summary_zh.clone())]);
            if let Some(u) = &f.unit {
                annotations.insert("unit".to_string(), u.clone());
            }
            let fp = fingerprint(&labels);
            let band = if rule.banded { value_band(f.value) } else { None };
            let alert = match self.alerts.get_mut(&id) {
                Some(a) if a.state != State::Resolved => {
                    a.labels = labels;
                    a.annotations = annotations;
                    a.value = f.value;
                    a.band = band;
                    a.id = fp;
                    a
                }
                old => {
                    // A resolved alert that comes back is a new alert with the old one's history.
                    let mut history = old.map(|o| std::mem::take(&mut o.history)).unwrap_or_default();
                    push_history(&mut history, State::Pending, now);
                    let a = Alert { rule: rule.name.to_string(), key: f.key.clone(), state: State::Pending, labels, annotations, value: f.value, active_at: now, starts_at: None, ends_at: None, id: fp, band, history };
                    self.alerts.insert(id.clone(), a);
                    match self.alerts.get_mut(&id) {
                        Some(a) => a,
                        None => continue,
                    }
                }
            };
            if alert.state == State::Pending && now - alert.active_at >= rule.for_ms {
                alert.state = State::Firing;
                alert.starts_at = Some(now);
                push_history(&mut alert.history, State::Firing, now);
                changes.push((id, Change::Fired));
            }
        }
        let gone: Vec<(String, String)> = self.alerts.keys().filter(|(r, k)| r == rule.name && !present.contains(k)).cloned().collect();
        for id in gone {
            let Some(a) = self.alerts.get_mut(&id) else { continue };
            match a.state {
                State::Pending => {
                    self.alerts.remove(&id);
                }
                State::Firing => {
                    a.state = State::Resolved;
                    a.ends_at = Some(now);
                    push_history(&mut a.history, State::Resolved, now);
                    changes.push((id, Change::Resolved));
                }
                State::Resolved => {}
            }
        }
        changes
    }

    /// Forgets resolved alerts older than `keep_ms`, and every alert of a rule no longer
    /// configured.
    pub fn forget(&mut self, now: i64, keep_ms: i64, rules: &[&str]) {
        self.alerts.retain(|(r, _), a| rules.contains(&r.as_str()) && !(a.state == State::Resolved && a.ends_at.is_some_and(|e| now - e > keep_ms)));
    }

    /// The alert with this id (fingerprint).
    pub fn by_id(&self, id: &str) -> Option<&Alert> {
        self.alerts.values().find(|a| a.id == id)
    }

    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| a.state == State::Firing)
    }
}
