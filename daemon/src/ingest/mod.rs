//! Ingest: turning what arrives (gateway batches over HTTP or MQTT, InfluxDB line protocol)
//! into checked points in the store, with every refusal named and counted.
//!
//! One service, [`Ingest`], for every transport: the HTTP handlers (`crate::api`) and the MQTT
//! subscriber ([`mqtt`]) hand it bytes and who sent them, and map its typed answers to their
//! own (statuses, ack topics). It holds the handles it needs (store, registry, metrics, audit
//! log), never the application state, and keeps what ingest learns between requests: the
//! gateways seen ([`gateways`]), the meters seen but not in the registry, the rate per gateway
//! ([`rate`]). Its configuration sections are its own ([`config`]).

pub mod batch;
pub mod body;
pub mod config;
pub mod gateways;
pub mod lineproto;
pub mod lines;
pub mod mqtt;
pub mod national;
pub mod rate;
pub mod service;

pub use body::BodyError;
pub use gateways::{GatewayState, Gateways};
pub use service::{Ingest, IngestOptions};

use energy_wire::Quantity;

use crate::store::Point;
use lineproto::{FieldValue, Precision};

/// The part of a partial-write answer about conflicts: how many points offered a value
/// different from the stored one (kept aside, not applied) and the first few of them.
pub fn conflicts_message(conflicts: &[crate::store::Conflict], total: u64) -> String {
    let shown: Vec<String> = conflicts
        .iter()
        .take(10)
        .map(|c| {
            let t = chrono::DateTime::from_timestamp_millis(c.ts).map_or_else(|| c.ts.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            format!("meter `{}` {} at {t}: stored {}, offered {}", c.meter, c.quantity, c.stored, c.offered)
        })
        .collect();
    let more = total.saturating_sub(shown.len() as u64);
    let mut m = format!(
        "{total} points conflict with stored readings and were kept aside, not applied (stored readings are never replaced by ingest; an engineer settles a conflict with a `reading` event, see GET /api/v1/meters/{{id}}/flags): {}",
        shown.join("; ")
    );
    if more > 0 {
        m.push_str(&format!("; and {more} more"));
    }
    m
}

/// Latest accepted time, relative to the daemon's clock.
pub const MAX_FUTURE_MS: i64 = 24 * 3_600_000;
/// Earliest accepted time: 2000-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = 946_684_800_000;

/// Why a line was refused, with a short reason label for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    /// 1-based line number in the request body.
    pub line: usize,
    pub text: String,
    pub reason: String,
    pub label: &'static str,
}

/// What one line-protocol body gave.
#[derive(Debug, Default)]
pub struct LineReport {
    pub points: Vec<Point>,
    pub errors: Vec<LineError>,
    /// Meters not in the registry that were accepted (policy `accept`).
    pub unassigned: Vec<String>,
}

/// Why a time was refused, with its metrics label (`bad_time` or `too_old`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeRefusal {
    pub reason: String,
    pub label: &'static str,
}

impl std::fmt::Display for TimeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Checks a point's time against the accepted window: not before 2000, not more than 24 h
/// ahead of `now_ms`, not older than the raw retention `retention_ms`.
pub fn check_time(ts_ms: i64, now_ms: i64, retention_ms: i64) -> Result<(), TimeRefusal> {
    let bad = |reason: String| Err(TimeRefusal { reason, label: "bad_time" });
    if ts_ms < MIN_TIME_MS {
        return bad(format!("timestamp {ts_ms} ms is before 2000-01-01; check the precision parameter"));
    }
    if ts_ms > now_ms + MAX_FUTURE_MS {
        return bad(format!("timestamp {ts_ms} ms is more than 24 h in the future; check the precision parameter and the clock"));
    }
    if ts_ms < now_ms.saturating_sub(retention_ms) {
        let days = retention_ms / 86_400_000;
        return Err(TimeRefusal { reason: format!("timestamp {ts_ms} ms is older than the retention of raw data ({days} days)"), label: "too_old" });
    }
    Ok(())
}

/// A line's text as an error message shows it: at most 120 characters, invalid UTF-8 replaced,
/// control characters escaped.
fn shown(text: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(text).chars().take(120) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Converts a line-protocol body to points. A bad line is refused with its reason (invalid
/// UTF-8 too: only the line that holds it); the good lines of the same body are kept
/// (InfluxDB's partial write).
///
/// Every field of every accepted line becomes one point, in the order of the body, whatever
/// other points share its meter, quantity and millisecond: nothing here merges or drops a
/// point (two values 1 µs apart both reach the store, which decides what a second value at the
/// same time is).
pub fn lines_to_points(body: &[u8], precision: Precision, now_ms: i64, retention_ms: i64, known_meter: &dyn Fn(&str) -> bool, accept_unknown: bool) -> LineReport {
    let mut rep = LineReport::default();
    for entry in lineproto::entries(body) {
        let err = |reason: String, label: &'static str| LineError { line: entry.line, text: shown(entry.text), reason, label };
        let line = match entry.parsed {
            Ok(l) => l,
            Err(e) => {
                rep.errors.push(err(e.to_string(), "malformed"));
                continue;
            }
        };
        let Some(meter) = line.tags.iter().find(|(k, _)| k == "meter").map(|(_, v)| &**v) else {
            rep.errors.push(err("no `meter` tag naming the meter".into(), "no_meter_tag"));
            continue;
        };
        if let Err(e) = energy_wire::validate_id(meter) {
            rep.errors.push(err(format!("tag meter: {e}"), "bad_meter_id"));
            continue;
        }
        if !known_meter(meter) {
            if accept_unknown {
                if !rep.unassigned.iter().any(|u| u == meter) {
                    rep.unassigned.push(meter.to_string());
                }
            } else {
                rep.errors.push(err(format!("meter `{meter}` is not in the registry"), "unknown_meter"));
                continue;
            }
        }
        let ts = match line.timestamp {
            None => now_ms,
            Some(t) => match precision.to_millis(t) {
                Some(ms) => ms,
                None => {
                    rep.errors.push(err(format!("timestamp {t} overflows at this precision"), "bad_time"));
                    continue;
                }
            },
        };
        if let Err(e) = check_time(ts, now_ms, retention_ms) {
            rep.errors.push(err(e.reason, e.label));
            continue;
        }
        // The line's points go straight into the report, taken back if a field is refused.
        let kept = rep.points.len();
        let shared: std::sync::Arc<str> = std::sync::Arc::from(meter);
        let mut bad = None;
        for (k, v) in &line.fields {
            let q: Quantity = match k.parse() {
                Ok(q) => q,
                Err(e) => {
                    bad = Some((format!("field `{k}`: {e}"), "unknown_quantity"));
                    break;
                }
            };
            let value = match v {
                FieldValue::Float(f) => *f,
                FieldValue::Int(n) => *n as f64,
                FieldValue::UInt(n) => *n as f64,
                FieldValue::Bool(_) | FieldValue::Str(_) => {
                    bad = Some((format!("field `{k}`: a quantity needs a numeric value"), "non_numeric"));
                    break;
                }
            };
            rep.points.push(Point { meter: shared.clone(), quantity: q, ts, value });
        }
        if let Some((reason, label)) = bad {
            rep.points.truncate(kept);
            rep.errors.push(err(reason, label));
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_288_000_000;
    const YEARS: i64 = 20 * 365 * 86_400_000;

    #[test]
    fn partial_write_keeps_good_lines_and_names_bad_ones() {
        let body = "e,meter=m1 active_power=1.5 1764288000\n\
                    e,meter=m1 active_power=\"x\" 1764288000\n\
                    e,meter=zz active_power=1 1764288000\n\
                    e,site=a active_power=1 1764288000\n\
                    e,meter=m1 bogus=1 1764288000\n\
                    \n\
                    e,meter=m1 water_volume=3i,active_power=2 1764287000\n\
                    e,meter=m1 active_power=1 99\n\
                    garbage";
        let known = |m: &str| m == "m1";
        let r = lines_to_points(body.as_bytes(), Precision::Seconds, NOW, YEARS, &known, false);
        assert_eq!(r.points.len(), 3);
        assert_eq!(r.points[0], Point { meter: "m1".into(), quantity: Quantity::ActivePower, ts: NOW, value: 1.5 });
        assert_eq!(r.points[1].quantity, Quantity::WaterVolume);
        assert_eq!(r.points[1].ts, 1_764_287_000_000);
        let summary: Vec<(usize, &str)> = r.errors.iter().map(|e| (e.line, e.label)).collect();
        assert_eq!(
            summary,
            vec![(2, "non_numeric"), (3, "unknown_meter"), (4, "no_meter_tag"), (5, "unknown_quantity"), (8, "bad_time"), (9, "malformed")]
        );
        assert!(r.errors[1].reason.contains("meter `zz` is not in the registry"));
    }

    #[test]
    fn points_in_one_millisecond_all_reach_the_store_in_order() {
        // 1764288000000000000 ns is NOW; the next lines are 1 µs and 999_999 ns later: the same
        // millisecond. Nothing is merged: four points (the second line has two fields, one of
        // them twice), in the order of the body, all at NOW.
        let body = b"e,meter=m1 active_power=1 1764288000000000000\n\
                     e,meter=m1 active_power=2,active_power=3,reactive_power=4 1764288000000001000\n\
                     e,meter=m1 active_power=1 1764288000000999999";
        let r = lines_to_points(body, Precision::Nanoseconds, NOW, YEARS, &|_| true, false);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let got: Vec<(Quantity, i64, f64)> = r.points.iter().map(|p| (p.quantity, p.ts, p.value)).collect();
        assert_eq!(
            got,
            vec![
                (Quantity::ActivePower, NOW, 1.0),
                (Quantity::ActivePower, NOW, 2.0),
                (Quantity::ActivePower, NOW, 3.0),
                (Quantity::ReactivePower, NOW, 4.0),
                (Quantity::ActivePower, NOW, 1.0),
            ]
        );
    }

    #[test]
    fn invalid_utf8_refuses_only_its_line() {
        let body = b"e,meter=m1 active_power=1 1764288000\ne,meter=m1,site=\xff active_power=2 1764288000\ne,meter=m1 active_power=3 1764288000";
        let r = lines_to_points(body, Precision::Seconds, NOW, YEARS, &|_| true, false);
        assert_eq!(r.points.iter().map(|p| p.value).collect::<Vec<_>>(), vec![1.0, 3.0]);
        assert_eq!(r.errors.len(), 1);
        assert_eq!((r.errors[0].line, r.errors[0].label), (2, "malformed"));
        assert!(r.errors[0].reason.contains("invalid UTF-8 in the tag value"), "{:?}", r.errors[0]);
        assert_eq!(r.errors[0].text, "e,meter=m1,site=\u{fffd} active_power=2 1764288000");
    }

    #[test]
    fn a_line_break_in_a_string_value_keeps_its_line_together() {
        // Lines 1-2 are one line (a string value holding a line break, refused as non-numeric):
        // the text after the break is not a point of its own.
        let body = b"e,meter=m1 active_power=1,reactive_power=\"a\ne,meter=m1 active_power=2\" 1764288000\ne,meter=m1 active_power=3 1764288000";
        let r = lines_to_points(body, Precision::Seconds, NOW, YEARS, &|_| true, false);
        assert_eq!(r.points.iter().map(|p| p.value).collect::<Vec<_>>(), vec![3.0]);
        assert_eq!(r.errors.iter().map(|e| (e.line, e.label)).collect::<Vec<_>>(), vec![(1, "non_numeric")]);
    }

    #[test]
    fn duplicate_meter_tags_store_nothing() {
        let r = lines_to_points(b"e,meter=a,meter=b active_power=1", Precision::Nanoseconds, NOW, YEARS, &|_| true, false);
        assert!(r.points.is_empty());
        assert!(r.errors[0].reason.contains("duplicate tag key `meter`"), "{:?}", r.errors);
    }

    #[test]
    fn unknown_meters_can_be_accepted_as_unassigned() {
        let r = lines_to_points(b"e,meter=new active_power=1", Precision::Nanoseconds, NOW, YEARS, &|_| false, true);
        assert_eq!(r.points.len(), 1);
        assert_eq!(r.points[0].ts, NOW);
        assert_eq!(r.unassigned, vec!["new".to_string()]);
    }

    #[test]
    fn future_and_ancient_times_are_refused() {
        const DAY: i64 = 86_400_000;
        let cases: &[(i64, i64, Option<&str>)] = &[
            (NOW + MAX_FUTURE_MS + 1, YEARS, Some("bad_time")),
            (NOW + MAX_FUTURE_MS, YEARS, None),
            (MIN_TIME_MS - 1, YEARS, Some("bad_time")),
            (NOW - 30 * DAY, 30 * DAY, None),
            (NOW - 30 * DAY - 1, 30 * DAY, Some("too_old")),
        ];
        for &(ts, retention, want) in cases {
            assert_eq!(check_time(ts, NOW, retention).err().map(|e| e.label), want, "{ts} with retention {retention}");
        }
        let e = check_time(NOW - 31 * DAY, NOW, 30 * DAY).unwrap_err();
        assert!(e.reason.contains("older than the retention of raw data (30 days)"), "{e}");
    }
}
