//! Meter events: a replacement, a manual reading (or the correction of a stored one) or an
//! exclusion of bad readings, with who entered it and why. Written in the registry's
//! `[[event]]` lists, posted to the API, appended to the daemon's meter events log.
//!
//! An [`EventRecord`] is checked when it is read: its kind is one of the three and carries the
//! fields that kind needs ([`EventKind`]), its times are times. The written form stays the flat
//! object of [`EventFields`] (`kind` a string beside the fields), so that the registries, the
//! requests and the logs written before read as they did, and a record is written back byte for
//! byte as before. A typed `#[serde(tag = "kind")]` derive would write `kind` first and answer a
//! wrong kind or a missing field with serde's words instead of the ones users get; the
//! conversion from the flat form keeps both.

use energy_wire::Quantity;
use serde::{Deserialize, Serialize};

use crate::time::{parse_time_ms, TimeError};

/// What an event does, with the fields of its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The meter was replaced at `time`: the old one's last reading and the new one's first,
    /// each in its own meter's units (the register, before the CT/PT ratio); `multiplier`: the
    /// new meter's CT/PT ratio from `time` on, when it differs from the old one's.
    Replacement { old_final: f64, new_initial: f64, multiplier: Option<f64> },
    /// A manual reading, or the correction of the stored reading at `time`. `quantity`: a
    /// reading of another quantity than the meter's counter (a correction of, say, its active
    /// power): it corrects the stored reading and is not applied to the counter.
    Reading { value: f64, quantity: Option<Quantity> },
    /// Readings in `[time, to]` are bad.
    Exclude { to: String },
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Replacement { .. } => "replacement",
            EventKind::Reading { .. } => "reading",
            EventKind::Exclude { .. } => "exclude",
        }
    }
}

/// A checked meter event, as written in the registry or posted to the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EventFields", into = "EventFields")]
pub struct EventRecord {
    pub meter: String,
    pub kind: EventKind,
    /// RFC 3339, or a date meaning local midnight.
    pub time: String,
    /// Who entered it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When it was recorded (set by the daemon for API events).
    pub recorded_at: Option<String>,
}

impl EventRecord {
    /// The quantity a `reading` event corrects when it is not the meter's counter.
    pub fn quantity(&self) -> Option<Quantity> {
        match self.kind {
            EventKind::Reading { quantity, .. } => quantity,
            _ => None,
        }
    }
}

/// The written form of a meter event: `kind` and the fields of every kind side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFields {
    pub meter: String,
    /// `replacement`, `reading` (a manual reading, or a correction of the reading at that
    /// time) or `exclude` (readings in `[time, to]` are bad).
    pub kind: String,
    /// RFC 3339, or a date meaning local midnight.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_final: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_initial: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    pub by: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
}

/// Why a meter event is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("`by` and `reason` must say who entered the event and why")]
    Unsigned,
    #[error("`quantity` applies to `reading` events only (a correction of that quantity's reading)")]
    QuantityOfNoReading,
    #[error("kind `{0}` is not one of replacement, reading, exclude")]
    Kind(String),
    #[error("a `{kind}` event needs `{field}`")]
    Missing { kind: &'static str, field: &'static str },
    #[error("`{0}` must be a non-negative number")]
    Negative(&'static str),
    #[error("`multiplier` (the new meter's CT/PT ratio) must be a positive number")]
    Multiplier,
    #[error("an `exclude` event needs `to` (the end of the bad stretch)")]
    NoEnd,
    #[error("only a `replacement` event takes `multiplier`")]
    MultiplierOfNoReplacement,
    #[error("time: {0}")]
    Time(TimeError),
    #[error("to: {0}")]
    To(TimeError),
    #[error("`to` is before `time`")]
    EndBeforeStart,
}

/// A non-negative number the kind needs.
fn non_negative(kind: &'static str, field: &'static str, v: Option<f64>) -> Result<f64, EventError> {
    match v {
        Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Some(_) => Err(EventError::Negative(field)),
        None => Err(EventError::Missing { kind, field }),
    }
}

/// The kind and its fields; the checks in the order users have always been answered in.
fn kind_of(e: &EventFields) -> Result<EventKind, EventError> {
    if e.by.trim().is_empty() || e.reason.trim().is_empty() {
        return Err(EventError::Unsigned);
    }
    if e.quantity.is_some() && e.kind != "reading" {
        return Err(EventError::QuantityOfNoReading);
    }
    let kind = match e.kind.as_str() {
        "replacement" => {
            let old_final = non_negative("replacement", "old_final", e.old_final)?;
            let new_initial = non_negative("replacement", "new_initial", e.new_initial)?;
            if e.multiplier.is_some_and(|k| !(k.is_finite() && k > 0.0)) {
                return Err(EventError::Multiplier);
            }
            EventKind::Replacement { old_final, new_initial, multiplier: e.multiplier }
        }
        "reading" => EventKind::Reading { value: non_negative("reading", "value", e.value)?, quantity: e.quantity },
        "exclude" => EventKind::Exclude { to: e.to.clone().ok_or(EventError::NoEnd)? },
        k => return Err(EventError::Kind(k.to_string())),
    };
    if e.multiplier.is_some() && e.kind != "replacement" {
        return Err(EventError::MultiplierOfNoReplacement);
    }
    Ok(kind)
}

impl EventRecord {
    /// `time` (and an exclusion's `to`) in milliseconds in the time zone `tz`; an exclusion
    /// that ends before it starts is refused.
    pub fn times_ms(&self, tz: chrono_tz::Tz) -> Result<(i64, Option<i64>), EventError> {
        let at = parse_time_ms(&self.time, tz).map_err(EventError::Time)?;
        let to = match &self.kind {
            EventKind::Exclude { to } => {
                let to = parse_time_ms(to, tz).map_err(EventError::To)?;
                if to < at {
                    return Err(EventError::EndBeforeStart);
                }
                Some(to)
            }
            _ => None,
        };
        Ok((at, to))
    }
}

impl TryFrom<EventFields> for EventRecord {
    type Error = EventError;
    /// Checks the fields the kind needs and the times (their syntax does not depend on the time
    /// zone: a date is local midnight anywhere).
    fn try_from(e: EventFields) -> Result<EventRecord, EventError> {
        let kind = kind_of(&e)?;
        let rec = EventRecord { meter: e.meter, kind, time: e.time, by: e.by, reason: e.reason, recorded_at: e.recorded_at };
        rec.times_ms(chrono_tz::UTC)?;
        Ok(rec)
    }
}

impl From<EventRecord> for EventFields {
    fn from(r: EventRecord) -> EventFields {
        let mut f = EventFields {
            meter: r.meter,
            kind: r.kind.as_str().to_string(),
            time: r.time,
            to: None,
            value: None,
            old_final: None,
            new_initial: None,
            quantity: None,
            multiplier: None,
            by: r.by,
            reason: r.reason,
            recorded_at: r.recorded_at,
        };
        match r.kind {
            EventKind::Replacement { old_final, new_initial, multiplier } => {
                (f.old_final, f.new_initial, f.multiplier) = (Some(old_final), Some(new_initial), multiplier);
            }
            EventKind::Reading { value, quantity } => (f.value, f.quantity) = (Some(value), quantity),
            EventKind::Exclude { to } => f.to = Some(to),
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_checked() {
        let rec = |kind: &str| EventFields {
            meter: "m".into(),
            kind: kind.into(),
            time: "2026-01-01".into(),
            to: None,
            value: None,
            old_final: Some(1.0),
            new_initial: None,
            quantity: None,
            multiplier: None,
            by: "王工".into(),
            reason: "更换电表".into(),
            recorded_at: None,
        };
        let check_record = |f: &EventFields| EventRecord::try_from(f.clone()).map(|_| ()).map_err(|e| e.to_string());
        assert!(check_record(&rec("replacement")).unwrap_err().contains("new_initial"));
        assert!(check_record(&rec("reading")).unwrap_err().contains("value"));
        assert!(check_record(&rec("exclude")).unwrap_err().contains("to"));
        assert!(check_record(&rec("reset")).unwrap_err().contains("not one of"));
        let mut no_reason = rec("reading");
        no_reason.value = Some(1.0);
        no_reason.reason = " ".into();
        assert!(check_record(&no_reason).unwrap_err().contains("why"));
        let mut power = rec("exclude");
        power.to = Some("2026-01-02".into());
        power.quantity = Some(energy_wire::Quantity::ActivePower);
        assert!(check_record(&power).unwrap_err().contains("`reading` events only"));
    }

    /// Each kind read from its written form and written back byte for byte, the fields in the
    /// order the daemon has always written them (the meter events log is appended to, never
    /// rewritten).
    #[test]
    fn the_written_form_is_kept_byte_for_byte() {
        for line in [
            r#"{"meter":"m1","kind":"replacement","time":"2026-03-01T01:30:00+08:00","old_final":115.0,"new_initial":0.0,"multiplier":80.0,"by":"王工","reason":"电表故障更换","recorded_at":"2026-03-02T09:00:00+08:00"}"#,
            r#"{"meter":"m1","kind":"reading","time":"2026-03-01","value":17.5,"quantity":"active_power","by":"x","reason":"y"}"#,
            r#"{"meter":"m1","kind":"exclude","time":"2026-03-01","to":"2026-03-02T00:00:00Z","by":"x","reason":"y"}"#,
        ] {
            let rec: EventRecord = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&rec).unwrap(), line);
        }
        let r: EventRecord = serde_json::from_str(r#"{"meter":"m","kind":"exclude","time":"2026-03-01","to":"2026-03-02","by":"x","reason":"y"}"#).unwrap();
        assert_eq!(r.kind, EventKind::Exclude { to: "2026-03-02".into() });
    }

    /// Wrong times and fields a kind does not take are named; the serde errors of the shape
    /// (an unknown field, a missing `by`) stay serde's.
    #[test]
    fn wrong_events_are_named() {
        let err = |s: &str| serde_json::from_str::<EventRecord>(s).unwrap_err().to_string();
        for (line, want) in [
            (r#"{"meter":"m","kind":"exclude","time":"2026-03-02","to":"2026-03-01","by":"x","reason":"y"}"#, "`to` is before `time`"),
            (r#"{"meter":"m","kind":"exclude","time":"2026-03-02","to":"later","by":"x","reason":"y"}"#, "to: `later` is neither"),
            (r#"{"meter":"m","kind":"reading","time":"soon","value":1,"by":"x","reason":"y"}"#, "time: `soon` is neither"),
            (r#"{"meter":"m","kind":"reading","time":"2026-03-01","value":-1,"by":"x","reason":"y"}"#, "`value` must be a non-negative number"),
            (r#"{"meter":"m","kind":"reading","time":"2026-03-01","value":1,"multiplier":2,"by":"x","reason":"y"}"#, "only a `replacement` event takes `multiplier`"),
            (r#"{"meter":"m","kind":"replacement","time":"2026-03-01","old_final":1,"new_initial":0,"multiplier":0,"by":"x","reason":"y"}"#, "CT/PT ratio"),
            (r#"{"meter":"m","kind":"reading","time":"2026-03-01","value":1,"by":"x","reason":"y","colour":"red"}"#, "unknown field `colour`"),
            (r#"{"meter":"m","kind":"reading","time":"2026-03-01","value":1,"reason":"y"}"#, "missing field `by`"),
        ] {
            assert!(err(line).contains(want), "{line}: {}", err(line));
        }
    }
}
