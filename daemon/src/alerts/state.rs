//! The alert state machine, pure: a finding that appears makes an alert *pending*; held for the
//! rule's `for` it becomes *firing* (`startsAt`); when the finding is gone a firing alert is
//! *resolved* (`endsAt`) and a pending one is dropped. Resolved alerts are kept for
//! `keep_resolved`, then forgotten. A finding that comes back after resolution starts a new
//! alert.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::Severity;
use super::rules::Finding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

/// What a rule contributes to every alert of it.
#[derive(Debug, Clone)]
pub struct RuleMeta<'a> {
    pub name: &'a str,
    pub severity: Severity,
    pub for_ms: i64,
    pub labels: &'a BTreeMap<String, String>,
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
            let annotations = BTreeMap::from([("summary".to_string(), f.summary_en.clone()), ("summary_zh".to_string(), f.summary_zh.clone())]);
            let alert = match self.alerts.get_mut(&id) {
                Some(a) if a.state != State::Resolved => {
                    a.labels = labels;
                    a.annotations = annotations;
                    a.value = f.value;
                    a
                }
                _ => {
                    let a = Alert { rule: rule.name.to_string(), key: f.key.clone(), state: State::Pending, labels, annotations, value: f.value, active_at: now, starts_at: None, ends_at: None };
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

    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| a.state == State::Firing)
    }
}
