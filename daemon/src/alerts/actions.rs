//! What people do with alerts: acknowledge one (with a reason), silence one for a while (with a
//! reason), end a silence. The domain service behind `POST /api/v1/alerts/{id}/ack`,
//! `POST|DELETE /api/v1/alerts/{id}/silence` and the web page: [`Alerts::acknowledge`],
//! [`Alerts::silence`], [`Alerts::unsilence`] and [`Alerts::list`] take the actor (a
//! [`Principal`]) and return typed errors ([`ActionError`]); no HTTP here.
//!
//! Who may act: admin, bureau and engineer on any alert; an agency on the alerts labelled with
//! its agency (an alert of a building shared by several agencies lists them all, and each may
//! act on it); gateways on none.
//!
//! Rules (pure, [`ack_in_effect`], [`Actions::suppresses`]):
//! * an acknowledgement holds while the alert keeps the state and the value band it was
//!   acknowledged in ([`value_band`]: the power of two of the value, so a value that doubles or
//!   halves is a change); then it ends by itself and the alert is notified again. An alert
//!   that comes back pending after a restart keeps a firing acknowledgement (the book is in
//!   memory; the condition held all along as far as anyone can tell);
//! * a silence holds until its end, whatever the alert does; it then ends by itself
//!   (`unsilenced`, by nobody, in the history);
//! * an acknowledged or silenced alert stays listed and marked, and is not notified
//!   (Alertmanager, webhook).
//!
//! Every action is written to `<data_dir>/alerts-actions.json` (a new file, fsynced, renamed
//! over the old, the directory fsynced) and to the audit log before the call returns; if the
//! audit record cannot be written the action is undone.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{Alert, Book, State};
use super::Alerts;
use crate::audit::AuditLog;
use crate::auth::{Principal, Role};

/// The file under the data directory.
pub const FILE_NAME: &str = "alerts-actions.json";
/// The longest reason, in characters.
pub const REASON_MAX_CHARS: usize = 500;
/// The longest silence: 90 days.
pub const SILENCE_MAX_MS: i64 = 90 * 24 * 3_600_000;

/// An acknowledgement: who, when, why, and the state and value band it holds for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: i64,
    pub reason: String,
    pub state: State,
    pub band: Option<i64>,
}

/// A silence: who, when, until when, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub by: String,
    pub at: i64,
    pub until: i64,
    pub reason: String,
}

/// What happened to an alert, for its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Happened {
    Pending,
    Firing,
    Resolved,
    Acknowledged,
    Silenced,
    Unsilenced,
}

impl From<State> for Happened {
    fn from(s: State) -> Happened {
        match s {
            State::Pending => Happened::Pending,
            State::Firing => Happened::Firing,
            State::Resolved => Happened::Resolved,
        }
    }
}

/// One action in an alert's history (state changes are kept with the alert itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub what: Happened,
    pub at: i64,
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub until: Option<i64>,
}

/// Acknowledgements, silences and the actions' history, by alert id (fingerprint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actions {
    #[serde(default)]
    pub acks: BTreeMap<String, Ack>,
    #[serde(default)]
    pub silences: BTreeMap<String, Silence>,
    #[serde(default)]
    pub history: BTreeMap<String, Vec<Event>>,
}

pub use super::state::value_band;

/// Whether `ack` still holds for `alert`: the same state and value band, or a firing
/// acknowledgement of an alert that is pending again (after a restart).
pub fn ack_in_effect(ack: &Ack, alert: &Alert) -> bool {
    let same_state = ack.state == alert.state || (ack.state == State::Firing && alert.state == State::Pending);
    same_state && ack.band == alert.band
}

impl Actions {
    /// The acknowledgement in effect for `alert`, if one.
    pub fn ack_of(&self, alert: &Alert) -> Option<&Ack> {
        self.acks.get(&alert.id).filter(|a| ack_in_effect(a, alert))
    }

    /// The silence in effect for `alert` at `now`, if one.
    pub fn silence_of(&self, alert: &Alert, now: i64) -> Option<&Silence> {
        self.silences.get(&alert.id).filter(|s| s.until > now)
    }

    /// Whether `alert` is not to be notified at `now`.
    pub fn suppresses(&self, alert: &Alert, now: i64) -> bool {
        self.ack_of(alert).is_some() || self.silence_of(alert, now).is_some()
    }

    fn push(&mut self, id: &str, e: Event) {
        let h = self.history.entry(id.to_string()).or_default();
        h.push(e);
        if h.len() > super::state::HISTORY_MAX {
            let extra = h.len() - super::state::HISTORY_MAX;
            h.drain(..extra);
        }
    }

    /// Ends what no longer holds at `now`: acknowledgements of alerts that changed (or that are
    /// gone, once `absent_ok` says the book has had time to be filled again after a start),
    /// silences that are over (`unsilenced` at their end). Forgets the history of alerts gone
    /// for more than `keep_ms` with nothing in effect. Returns (modified, notify): whether
    /// anything changed, and whether an alert may now be notified that was not.
    pub fn reconcile(&mut self, book: &Book, now: i64, absent_ok: bool, keep_ms: i64) -> (bool, bool) {
        let (mut modified, mut notify) = (false, false);
        let by_id: BTreeMap<&str, &Alert> = book.alerts.values().map(|a| (a.id.as_str(), a)).collect();
        let stale: Vec<String> = self
            .acks
            .iter()
            .filter(|(id, ack)| match by_id.get(id.as_str()) {
                Some(a) => !ack_in_effect(ack, a),
                None => absent_ok,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.acks.remove(&id);
            modified = true;
            notify |= by_id.contains_key(id.as_str());
        }
        let over: Vec<(String, i64)> = self.silences.iter().filter(|(_, s)| s.until <= now).map(|(id, s)| (id.clone(), s.until)).collect();
        for (id, until) in over {
            self.silences.remove(&id);
            self.push(&id, Event { what: Happened::Unsilenced, at: until, by: None, reason: Some("the silence ended".into()), until: None });
            modified = true;
            notify |= by_id.contains_key(id.as_str());
        }
        let forget: Vec<String> = self
            .history
            .iter()
            .filter(|(id, h)| !by_id.contains_key(id.as_str()) && !self.acks.contains_key(*id) && !self.silences.contains_key(*id) && h.last().is_none_or(|e| now - e.at > keep_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in forget {
            self.history.remove(&id);
            modified = true;
        }
        (modified, notify)
    }
}

/// Why an action was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No alert has this id (404).
    #[error("{0}")]
    NotFound(String),
    /// The actor may not act on this alert (403).
    #[error("{0}")]
    Forbidden(String),
    /// A reason or a duration that is not acceptable (400).
    #[error("{0}")]
    Invalid(String),
    /// The alert is not in a state that allows it (409).
    #[error("{0}")]
    Conflict(String),
    /// The actions file or the audit log could not be written; nothing was changed (500).
    #[error("{0}")]
    Storage(String),
}

/// How long a silence lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SilenceFor {
    Hours(f64),
    /// Until this time (ms since the epoch).
    Until(i64),
}

/// The actions file: in memory only (no data directory), or `<dir>/alerts-actions.json`.
#[derive(Debug, Default)]
pub struct ActionStore {
    path: Option<PathBuf>,
    pub data: Actions,
}

impl ActionStore {
    /// Reads `<dir>/alerts-actions.json` (none yet: empty); a file that cannot be read or
    /// parsed is an error naming it (the daemon does not start and lose acknowledgements).
    pub fn open(dir: &Path) -> Result<ActionStore, ActionError> {
        let path = dir.join(FILE_NAME);
        let data = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ActionError::Storage(format!("{}: not a valid actions file: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Actions::default(),
            Err(e) => return Err(ActionError::Storage(format!("{}: {e}", path.display()))),
        };
        Ok(ActionStore { path: Some(path), data })
    }

    /// Writes the file (a temporary file, fsynced, renamed over it, the directory fsynced).
    pub fn save(&self) -> Result<(), ActionError> {
        let Some(path) = &self.path else { return Ok(()) };
        let err = |e: std::io::Error| ActionError::Storage(format!("writing {}: {e}", path.display()));
        let bytes = serde_json::to_vec_pretty(&self.data).map_err(|e| ActionError::Storage(format!("encoding {}: {e}", path.display())))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }
}

/// The agencies of an alert: its `agency` label, comma-separated for a shared building.
fn agencies_of(a: &Alert) -> impl Iterator<Item = &str> {
    a.labels.get("agency").map(String::as_str).unwrap_or_default().split(',').filter(|s| !s.is_empty())
}

/// Whether `who` may see (and act on) `alert`.
pub fn may_see(who: &Principal, alert: &Alert) -> bool {
    if who.reads_all() {
        return true;
    }
    match (who.role, who.agency.as_deref()) {
        (Role::Agency, Some(mine)) => agencies_of(alert).any(|a| a == mine),
        _ => false,
    }
}

/// A reason: trimmed, not empty, at most [`REASON_MAX_CHARS`] characters, no control
/// characters.
pub fn check_reason(reason: &str) -> Result<String, ActionError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(ActionError::Invalid("`reason` is required: say why (it is kept and audited)".into()));
    }
    let n = r.chars().count();
    if n > REASON_MAX_CHARS {
        return Err(ActionError::Invalid(format!("`reason` is {n} characters long; at most {REASON_MAX_CHARS}")));
    }
    if r.chars().any(char::is_control) {
        return Err(ActionError::Invalid("`reason` must not hold control characters (line breaks, tabs)".into()));
    }
    Ok(r.to_string())
}

/// When a silence asked at `now` ends: `hours` more than 0 and at most 90 days' worth, or a
/// time after `now` and at most 90 days ahead.
pub fn silence_end(how: SilenceFor, now: i64) -> Result<i64, ActionError> {
    let max_h = SILENCE_MAX_MS / 3_600_000;
    match how {
        SilenceFor::Hours(h) if h.is_finite() && h > 0.0 && h <= max_h as f64 => Ok(now + (h * 3_600_000.0).round() as i64),
        SilenceFor::Hours(h) => Err(ActionError::Invalid(format!("`hours` is {h}; it must be more than 0 and at most {max_h} (90 days)"))),
        SilenceFor::Until(t) if t <= now => Err(ActionError::Invalid("`until` is not in the future".into())),
        SilenceFor::Until(t) if t - now > SILENCE_MAX_MS => Err(ActionError::Invalid("`until` is more than 90 days ahead".into())),
        SilenceFor::Until(t) => Ok(t),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Alerts {
    /// The alert `id` if `who` may act on it.
    fn alert_for(&self, who: &Principal, id: &str) -> Result<Alert, ActionError> {
        let book = lock(&self.book);
        let a = book.by_id(id).ok_or_else(|| ActionError::NotFound(format!("no alert `{id}` (resolved alerts are kept for alerts.keep_resolved; see GET /api/v1/alerts)")))?;
        if !may_see(who, a) {
            return Err(ActionError::Forbidden(format!("`{}` (role {}) may not act on alert `{id}`: it is not an alert of the token's agency", who.name, who.role)));
        }
        Ok(a.clone())
    }

    /// Applies `change` to the actions, writes the file and the audit record; on any failure
    /// the actions are as before.
    fn act(&self, audit: &AuditLog, who: &Principal, action: &str, alert: &Alert, detail: serde_json::Value, change: impl FnOnce(&mut Actions)) -> Result<(), ActionError> {
        let mut store = lock(&self.actions);
        let before = store.data.clone();
        change(&mut store.data);
        if let Err(e) = store.save() {
            store.data = before;
            return Err(e);
        }
        let mut detail = detail;
        if let Some(o) = detail.as_object_mut() {
            o.insert("alertname".into(), alert.rule.clone().into());
            o.insert("key".into(), alert.key.clone().into());
        }
        if let Err(e) = audit.record(who, action, &format!("alert:{}", alert.id), detail) {
            store.data = before;
            let undo = store.save();
            return Err(ActionError::Storage(format!("{e}; the action was not taken{}", undo.err().map(|u| format!(" (and restoring the actions file failed: {u})")).unwrap_or_default())));
        }
        Ok(())
    }

    /// Acknowledges alert `id` (pending or firing) for `who` with `reason` at `now`: it stays
    /// listed, marked, and is not notified until it changes. Blocking (two fsyncs).
    pub fn acknowledge(&self, audit: &AuditLog, who: &Principal, id: &str, reason: &str, now: i64) -> Result<AlertView, ActionError> {
        let reason = check_reason(reason)?;
        let alert = self.alert_for(who, id)?;
        if alert.state == State::Resolved {
            return Err(ActionError::Conflict(format!("alert `{id}` is resolved: there is nothing to acknowledge")));
        }
        let ack = Ack { by: who.name.clone(), at: now, reason: reason.clone(), state: alert.state, band: alert.band };
        let detail = serde_json::json!({ "reason": reason, "state": alert.state, "value": alert.value });
        self.act(audit, who, "alert.acknowledge", &alert, detail, |d| {
            d.acks.insert(alert.id.clone(), ack);
            d.push(&alert.id, Event { what: Happened::Acknowledged, at: now, by: Some(who.name.clone()), reason: Some(reason.clone()), until: None });
        })?;
        Ok(self.view(&alert, now))
    }

    /// Silences alert `id` (any state) for `who` with `reason` until `how` says: it is not
    /// notified until then. A new silence replaces one in effect. Blocking (two fsyncs).
    pub fn silence(&self, audit: &AuditLog, who: &Principal, id: &str, reason: &str, how: SilenceFor, now: i64) -> Result<AlertView, ActionError> {
        let reason = check_reason(reason)?;
        let until = silence_end(how, now)?;
        let alert = self.alert_for(who, id)?;
        let s = Silence { by: who.name.clone(), at: now, until, reason: reason.clone() };
        let detail = serde_json::json!({ "reason": reason, "until_ms": until });
        self.act(audit, who, "alert.silence", &alert, detail, |d| {
            d.silences.insert(alert.id.clone(), s);
            d.push(&alert.id, Event { what: Happened::Silenced, at: now, by: Some(who.name.clone()), reason: Some(reason.clone()), until: Some(until) });
        })?;
        Ok(self.view(&alert, now))
    }

    /// Ends the silence of alert `id` now. Blocking (two fsyncs).
    pub fn unsilence(&self, audit: &AuditLog, who: &Principal, id: &str, now: i64) -> Result<AlertView, ActionError> {
        let alert = self.alert_for(who, id)?;
        let silenced = lock(&self.actions).data.silence_of(&alert, now).is_some();
        if !silenced {
            return Err(ActionError::Conflict(format!("alert `{id}` is not silenced")));
        }
        self.act(audit, who, "alert.unsilence", &alert, serde_json::json!({}), |d| {
            d.silences.remove(&alert.id);
            d.push(&alert.id, Event { what: Happened::Unsilenced, at: now, by: Some(who.name.clone()), reason: None, until: None });
        })?;
        self.notify_soon.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.view(&alert, now))
    }

    /// The alerts `who` may see that pass `filter`: firing first, then pending, then resolved,
    /// newest first within each.
    pub fn list(&self, who: &Principal, filter: &AlertFilter, now: i64) -> Vec<AlertView> {
        let mut alerts: Vec<Alert> = lock(&self.book).alerts.values().filter(|a| may_see(who, a) && filter.passes(a)).cloned().collect();
        let rank = |st: State| match st {
            State::Firing => 0,
            State::Pending => 1,
            State::Resolved => 2,
        };
        alerts.sort_by(|a, b| rank(a.state).cmp(&rank(b.state)).then(b.active_at.cmp(&a.active_at)).then(a.rule.cmp(&b.rule)).then(a.key.cmp(&b.key)));
        let actions = lock(&self.actions);
        alerts.iter().map(|a| view_of(a, &actions.data, self.tz, now)).collect()
    }

    /// One alert as listed.
    pub fn view(&self, a: &Alert, now: i64) -> AlertView {
        let actions = lock(&self.actions);
        view_of(a, &actions.data, self.tz, now)
    }

    /// The alerts to notify at `now`: not pending, not acknowledged, not silenced.
    pub fn notifiable(&self, now: i64) -> Vec<Alert> {
        let book = lock(&self.book);
        let actions = lock(&self.actions);
        book.alerts.values().filter(|x| x.state != State::Pending && !actions.data.suppresses(x, now)).cloned().collect()
    }
}

/// Which alerts to list: by state, agency (one of the alert's), building, meter, and kind (the
/// rule's name, or the rule's kind such as `meter_silent`).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<State>,
    pub agency: Option<String>,
    pub building: Option<String>,
    pub meter: Option<String>,
    pub kind: Option<String>,
    /// Rule name -> kind, for `kind` given as a rule kind.
    pub kinds: BTreeMap<String, String>,
}

impl AlertFilter {
    pub fn passes(&self, a: &Alert) -> bool {
        let label_is = |k: &str, want: &Option<String>| match want.as_deref().filter(|v| !v.is_empty()) {
            None => true,
            Some(v) => a.labels.get(k).is_some_and(|l| l.split(',').any(|x| x == v)),
        };
        let kind_is = match self.kind.as_deref().filter(|v| !v.is_empty()) {
            None => true,
            Some(k) => a.rule == k || self.kinds.get(&a.rule).is_some_and(|x| x == k),
        };
        self.state.is_none_or(|w| a.state == w) && label_is("agency", &self.agency) && label_is("building", &self.building) && label_is("meter", &self.meter) && kind_is
    }
}

/// An acknowledgement as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AckView {
    pub by: String,
    pub at: Option<String>,
    pub reason: String,
}

/// A silence as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceView {
    pub by: String,
    pub until: Option<String>,
    pub reason: String,
}

/// One entry of an alert's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryView {
    pub state: Happened,
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// An alert as `GET /api/v1/alerts` lists it (times in RFC 3339, in the daemon's time zone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// The fingerprint of its labels: stable, the id of the actions.
    pub id: String,
    pub alertname: String,
    pub key: String,
    pub state: State,
    pub severity: String,
    pub agency: String,
    pub building: String,
    pub meter: String,
    pub gateway: String,
    pub summary: Option<String>,
    pub summary_zh: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: Option<f64>,
    /// The value's unit.
    pub unit: Option<String>,
    #[serde(rename = "activeAt")]
    pub active_at: Option<String>,
    #[serde(rename = "startsAt")]
    pub starts_at: Option<String>,
    #[serde(rename = "endsAt")]
    pub ends_at: Option<String>,
    pub acknowledged: Option<AckView>,
    pub silenced: Option<SilenceView>,
    /// State changes and actions, oldest first.
    pub history: Vec<HistoryView>,
}

fn rfc3339(ms: i64, tz: chrono_tz::Tz) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339())
}

/// The listed form of `a` with the actions in effect at `now`.
pub fn view_of(a: &Alert, actions: &Actions, tz: chrono_tz::Tz, now: i64) -> AlertView {
    let l = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
    let mut history: Vec<(i64, HistoryView)> = a.history.iter().map(|(s, at)| (*at, HistoryView { state: (*s).into(), at: rfc3339(*at, tz), by: None, reason: None, until: None })).collect();
    for e in actions.history.get(&a.id).map(Vec::as_slice).unwrap_or_default() {
        history.push((e.at, HistoryView { state: e.what, at: rfc3339(e.at, tz), by: e.by.clone(), reason: e.reason.clone(), until: e.until.and_then(|t| rfc3339(t, tz)) }));
    }
    history.sort_by_key(|(at, _)| *at);
    AlertView {
        id: a.id.clone(),
        alertname: a.rule.clone(),
        key: a.key.clone(),
        state: a.state,
        severity: l("severity"),
        agency: l("agency"),
        building: l("building"),
        meter: l("meter"),
        gateway: l("gateway"),
        summary: a.annotations.get("summary").cloned(),
        summary_zh: a.annotations.get("summary_zh").cloned(),
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        value: a.value,
        unit: a.annotations.get("unit").cloned(),
        active_at: rfc3339(a.active_at, tz),
        starts_at: a.starts_at.and_then(|t| rfc3339(t, tz)),
        ends_at: a.ends_at.and_then(|t| rfc3339(t, tz)),
        acknowledged: actions.ack_of(a).map(|k| AckView { by: k.by.clone(), at: rfc3339(k.at, tz), reason: k.reason.clone() }),
        silenced: actions.silence_of(a, now).map(|s| SilenceView { by: s.by.clone(), until: rfc3339(s.until, tz), reason: s.reason.clone() }),
        history: history.into_iter().map(|(_, h)| h).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::{AlertsConfig, Severity};
    use crate::alerts::rules::{self, Finding};
    use crate::alerts::state::RuleMeta;

    const H: i64 = 3_600_000;
    /// 2026-03-02T00:00:00Z.
    const T0: i64 = 1_772_409_600_000;

    fn who(name: &str, role: Role, agency: Option<&str>) -> Principal {
        Principal { name: name.into(), role, agency: agency.map(str::to_string), gateway: None, meters: Vec::new(), remote: None }
    }

    fn finding(agency: &str, value: f64) -> Finding {
        Finding { key: "m1".into(), labels: rules::meter_labels("m1", "b1", agency), summary_zh: "中".into(), summary_en: "en".into(), value: Some(value), unit: Some("s".into()) }
    }

    /// Applies one evaluation of rule `R` (`for` 0) with `findings` at `t`, then reconciles.
    fn eval(a: &Alerts, findings: Vec<Finding>, t: i64) -> bool {
        let extra = BTreeMap::new();
        let meta = RuleMeta { name: "R", severity: Severity::Warning, for_ms: 0, labels: &extra, banded: true };
        lock(&a.book).apply(&meta, findings, t);
        a.reconcile(t)
    }

    fn id_of(a: &Alerts) -> String {
        lock(&a.book).alerts.values().next().map(|x| x.id.clone()).unwrap_or_default()
    }

    fn engine(dir: &Path) -> Alerts {
        Alerts::open(AlertsConfig::default(), dir, chrono_tz::Asia::Shanghai).unwrap()
    }

    #[test]
    fn value_bands_are_powers_of_two() {
        // 2^1 = 2 <= 3 < 4 = 2^2: exponent 1 (+ 2048); 0.75 in [0.5, 1): -1; 4 starts the next.
        let cases: [(Option<f64>, Option<i64>); 8] =
            [(Some(3.0), Some(2049)), (Some(2.0), Some(2049)), (Some(3.99), Some(2049)), (Some(4.0), Some(2050)), (Some(0.75), Some(2047)), (Some(-3.0), Some(-2049)), (Some(0.0), Some(0)), (None, None)];
        for (v, want) in cases {
            assert_eq!(value_band(v), want, "{v:?}");
        }
        assert_eq!(value_band(Some(f64::NAN)), None);
    }

    #[test]
    fn the_fingerprint_is_alertmanagers() {
        // Prometheus' model.LabelSet{"a": "b"}.Fingerprint(): FNV-1a 64 (offset
        // 0xcbf29ce484222325, prime 0x100000001b3) of "a" 0xff "b" 0xff, computed here apart
        // (u128 arithmetic reduced mod 2^64); no labels: the offset itself.
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let mut h: u128 = 0xcbf2_9ce4_8422_2325;
        for b in [b'a', 0xff, b'b', 0xff] {
            h ^= u128::from(b);
            h = (h * 0x100_0000_01b3) % (1u128 << 64);
        }
        assert_eq!(crate::alerts::state::fingerprint(&labels), format!("{h:016x}"));
        assert_eq!(crate::alerts::state::fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }

    #[test]
    fn an_acknowledgement_holds_until_the_state_or_the_value_band_changes() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(dir.path()).unwrap();
        let a = engine(dir.path());
        let eng = who("eng", Role::Engineer, None);
        eval(&a, vec![finding("ag1", 3.0)], T0);
        let id = id_of(&a);
        assert_eq!(a.notifiable(T0).len(), 1, "firing and not acknowledged: notified");
        let v = a.acknowledge(&audit, &eng, &id, "  on site, replacing the battery  ", T0 + 1000).unwrap();
        assert_eq!(v.acknowledged.as_ref().map(|k| (k.by.as_str(), k.reason.as_str())), Some(("eng", "on site, replacing the battery")));
        assert!(a.notifiable(T0 + 1000).is_empty(), "acknowledged: not notified");
        // 3.9 is in the same band as 3 ([2, 4)): still acknowledged, nothing to notify.
        assert!(!eval(&a, vec![finding("ag1", 3.9)], T0 + 2000));
        assert!(a.notifiable(T0 + 2000).is_empty());
        // 4.5 is in [4, 8): changed: the acknowledgement ends and the alert is notified again.
        assert!(eval(&a, vec![finding("ag1", 4.5)], T0 + 3000));
        assert_eq!(a.notifiable(T0 + 3000).len(), 1);
        let v = a.view(&lock(&a.book).by_id(&id).unwrap().clone(), T0 + 3000);
        assert_eq!(v.acknowledged, None);
        // Acknowledged again, then resolved: a change, notified (the resolution).
        a.acknowledge(&audit, &eng, &id, "known", T0 + 4000).unwrap();
        assert!(eval(&a, vec![], T0 + 5000));
        let n = a.notifiable(T0 + 5000);
        assert_eq!((n.len(), n[0].state), (1, State::Resolved));
        // History: pending, firing, acknowledged, acknowledged, resolved, in time order.
        let v = a.list(&eng, &AlertFilter::default(), T0 + 5000);
        let h: Vec<Happened> = v[0].history.iter().map(|e| e.state).collect();
        assert_eq!(h, vec![Happened::Pending, Happened::Firing, Happened::Acknowledged, Happened::Acknowledged, Happened::Resolved]);
        // A resolved alert cannot be acknowledged.
        assert!(matches!(a.acknowledge(&audit, &eng, &id, "late", T0 + 6000), Err(ActionError::Conflict(_))));
        // Both acknowledgements are in the audit log.
        let (records, _) = audit.read_page(0, 100).unwrap();
        let acks: Vec<&Value> = records.iter().filter(|r| r["action"] == "alert.acknowledge").collect();
        assert_eq!(acks.len(), 2, "{records:?}");
        assert_eq!(acks[0]["target"], format!("alert:{id}"));
        assert_eq!(acks[0]["detail"]["reason"], "on site, replacing the battery");
    }

    use serde_json::Value;

    #[test]
    fn acknowledgements_and_silences_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(dir.path()).unwrap();
        let bureau = who("bureau", Role::Bureau, None);
        let id = {
            let a = engine(dir.path());
            eval(&a, vec![finding("ag1", 3.0)], T0);
            let id = id_of(&a);
            a.acknowledge(&audit, &bureau, &id, "known", T0).unwrap();
            a.silence(&audit, &bureau, &id, "maintenance", SilenceFor::Hours(2.0), T0).unwrap();
            id
        };
        // A new engine on the same directory: the condition comes back pending (rule `for`
        // 1 h here), then firing; the alert has the same id and stays acknowledged.
        let a = engine(dir.path());
        let extra = BTreeMap::new();
        let meta = RuleMeta { name: "R", severity: Severity::Warning, for_ms: H, labels: &extra, banded: true };
        lock(&a.book).apply(&meta, vec![finding("ag1", 3.0)], T0 + 10_000);
        assert!(!a.reconcile(T0 + 10_000));
        assert_eq!(id_of(&a), id);
        lock(&a.book).apply(&meta, vec![finding("ag1", 3.0)], T0 + H + 10_000);
        a.reconcile(T0 + H + 10_000);
        let v = a.list(&bureau, &AlertFilter::default(), T0 + H + 10_000);
        assert_eq!((v[0].state, v[0].acknowledged.as_ref().map(|k| k.reason.as_str())), (State::Firing, Some("known")));
        assert_eq!(v[0].silenced.as_ref().map(|s| s.reason.as_str()), Some("maintenance"));
        assert!(a.notifiable(T0 + H + 10_000).is_empty());
        // The silence ends at T0 + 2 h: `unsilenced` in the history at that time; still
        // acknowledged, so still not notified.
        a.reconcile(T0 + 2 * H + 1);
        assert!(a.notifiable(T0 + 2 * H + 1).is_empty());
        let v = a.list(&bureau, &AlertFilter::default(), T0 + 2 * H + 1);
        assert_eq!(v[0].silenced, None);
        let last = v[0].history.iter().rfind(|e| e.state == Happened::Unsilenced).unwrap();
        assert_eq!(last.at.as_deref(), Some("2026-03-02T10:00:00+08:00"));
    }

    #[test]
    fn a_silent_meter_stays_acknowledged_while_its_silence_grows() {
        // meter_silent's value is how long the meter has been silent: not banded, so 600 s ->
        // 5000 s (three doublings) is no change; the resolution is.
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(dir.path()).unwrap();
        let a = engine(dir.path());
        let extra = BTreeMap::new();
        let meta = RuleMeta { name: "R", severity: Severity::Warning, for_ms: 0, labels: &extra, banded: crate::alerts::config::RuleKind::MeterSilent.banded() };
        lock(&a.book).apply(&meta, vec![finding("ag1", 600.0)], T0);
        let id = id_of(&a);
        a.acknowledge(&audit, &who("eng", Role::Engineer, None), &id, "known", T0).unwrap();
        lock(&a.book).apply(&meta, vec![finding("ag1", 5000.0)], T0 + 4_400_000);
        assert!(!a.reconcile(T0 + 4_400_000));
        assert!(a.notifiable(T0 + 4_400_000).is_empty());
        lock(&a.book).apply(&meta, vec![], T0 + 5_000_000);
        assert!(a.reconcile(T0 + 5_000_000));
        assert_eq!(a.notifiable(T0 + 5_000_000).len(), 1);
    }

    #[test]
    fn agencies_act_on_their_own_alerts_only() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(dir.path()).unwrap();
        let a = engine(dir.path());
        // A shared building: both occupants may act on its meter's alert.
        eval(&a, vec![finding("ag1,ag2", 3.0)], T0);
        let id = id_of(&a);
        let cases: [(Principal, bool); 6] = [
            (who("a1", Role::Agency, Some("ag1")), true),
            (who("a2", Role::Agency, Some("ag2")), true),
            (who("a3", Role::Agency, Some("ag")), false),
            (who("gw", Role::Gateway, None), false),
            (who("eng", Role::Engineer, None), true),
            (who("adm", Role::Admin, None), true),
        ];
        for (p, may) in cases {
            let r = a.silence(&audit, &p, &id, "x", SilenceFor::Hours(1.0), T0);
            assert_eq!(r.is_ok(), may, "{}: {r:?}", p.name);
            if !may {
                assert!(matches!(r, Err(ActionError::Forbidden(_))));
            }
            assert_eq!(a.list(&p, &AlertFilter::default(), T0).len(), usize::from(may), "{} lists", p.name);
        }
        assert!(matches!(a.acknowledge(&audit, &who("eng", Role::Engineer, None), "0000000000000000", "x", T0), Err(ActionError::NotFound(_))));
        // Unsilence: then there is no silence to end.
        let eng = who("eng", Role::Engineer, None);
        assert!(a.unsilence(&audit, &eng, &id, T0).is_ok());
        assert!(matches!(a.unsilence(&audit, &eng, &id, T0), Err(ActionError::Conflict(_))));
    }

    #[test]
    fn reasons_and_silence_ends_are_checked() {
        let long = "长".repeat(REASON_MAX_CHARS + 1);
        let cases: [(&str, bool); 5] = [("ok", true), ("", false), ("   ", false), (long.as_str(), false), ("two\nlines", false)];
        for (r, ok) in cases {
            assert_eq!(check_reason(r).is_ok(), ok, "{r:?}");
        }
        assert_eq!(check_reason(&"长".repeat(REASON_MAX_CHARS)).map(|r| r.chars().count()), Ok(REASON_MAX_CHARS));
        // (how, end or error): 1.5 h = 5 400 000 ms; 2160 h = 90 days is the most.
        let cases: [(SilenceFor, Option<i64>); 8] = [
            (SilenceFor::Hours(1.5), Some(T0 + 5_400_000)),
            (SilenceFor::Hours(2160.0), Some(T0 + SILENCE_MAX_MS)),
            (SilenceFor::Hours(2160.5), None),
            (SilenceFor::Hours(0.0), None),
            (SilenceFor::Hours(-1.0), None),
            (SilenceFor::Hours(f64::INFINITY), None),
            (SilenceFor::Until(T0), None),
            (SilenceFor::Until(T0 + H), Some(T0 + H)),
        ];
        for (how, want) in cases {
            assert_eq!(silence_end(how, T0).ok(), want, "{how:?}");
        }
    }

    #[test]
    fn an_unreadable_actions_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let e = ActionStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("not a valid actions file"), "{e}");
    }
}
