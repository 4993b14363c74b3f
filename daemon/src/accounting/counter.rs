//! From a meter's raw counter readings and its events to one continuous, non-decreasing
//! counter that consumption can be computed from (reference, section 7).
//!
//! * **Exclusions** (`exclude` events) set readings aside; **manual readings** (`reading`
//!   events) are added, replacing a stored reading at the same time (a correction).
//! * **Replacements**: readings from the replacement time on belong to the new meter; they are
//!   shifted by `old_final - new_initial` (summed over replacements), and a reading `old_final`
//!   is placed at the replacement time, so the old meter's last stretch and the new meter's first
//!   both count.
//! * **Rollovers**: with a known `rollover` value, a decrease that a wrap explains (the
//!   consumption across the wrap is less than a tenth of the range) adds the range.
//! * **Bad readings**: any other decrease is a bad reading and is set aside, never taken as a
//!   reset (a 0 or "unavailable" after a good reading is the common case). When the counter keeps
//!   running from the lower value (three readings or more, rising among themselves) it is an
//!   **unexplained decrease**: flagged for an engineer (an unrecorded replacement or a reset), and
//!   the readings stay set aside until an event explains them. When instead they go on from the
//!   reading before the last kept one, that last one was a **spike**, and it is set aside.
//! * A jump beyond the meter's physical maximum (`max_per_hour`) is a bad reading too.
//! * A decrease below a billionth of the counter's value is rounding noise, not a decrease.

use serde::{Deserialize, Serialize};

use crate::registry::EventRecord;

/// A meter event, times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Replacement { at: i64, old_final: f64, new_initial: f64 },
    Reading { at: i64, value: f64 },
    Exclude { from: i64, to: i64 },
}

impl Event {
    pub fn at(&self) -> i64 {
        match self {
            Event::Replacement { at, .. } | Event::Reading { at, .. } => *at,
            Event::Exclude { from, .. } => *from,
        }
    }
}

/// Checks the fields an event kind needs; the message names what is wrong.
pub fn check_record(e: &EventRecord) -> Result<(), String> {
    let finite = |name: &str, v: Option<f64>| match v {
        Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Some(_) => Err(format!("`{name}` must be a non-negative number")),
        None => Err(format!("a `{}` event needs `{name}`", e.kind)),
    };
    if e.by.trim().is_empty() || e.reason.trim().is_empty() {
        return Err("`by` and `reason` must say who entered the event and why".into());
    }
    if e.quantity.is_some() && e.kind != "reading" {
        return Err("`quantity` applies to `reading` events only (a correction of that quantity's reading)".into());
    }
    match e.kind.as_str() {
        "replacement" => {
            finite("old_final", e.old_final)?;
            finite("new_initial", e.new_initial)?;
        }
        "reading" => {
            finite("value", e.value)?;
        }
        "exclude" => {
            if e.to.is_none() {
                return Err("an `exclude` event needs `to` (the end of the bad stretch)".into());
            }
        }
        k => return Err(format!("kind `{k}` is not one of replacement, reading, exclude")),
    }
    Ok(())
}

/// Converts a checked record; `parse_time` turns its times into milliseconds.
pub fn event_of(e: &EventRecord, parse_time: impl Fn(&str) -> Result<i64, String>) -> Result<Event, String> {
    check_record(e)?;
    let at = parse_time(&e.time).map_err(|m| format!("time: {m}"))?;
    Ok(match e.kind.as_str() {
        "replacement" => Event::Replacement { at, old_final: e.old_final.unwrap_or(0.0), new_initial: e.new_initial.unwrap_or(0.0) },
        "reading" => Event::Reading { at, value: e.value.unwrap_or(0.0) },
        _ => {
            let to = parse_time(e.to.as_deref().unwrap_or_default()).map_err(|m| format!("to: {m}"))?;
            if to < at {
                return Err("`to` is before `time`".into());
            }
            Event::Exclude { from: at, to }
        }
    })
}

/// Something an engineer should look at, or know about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Flag {
    /// The counter went down and kept running from the lower value: no replacement or rollover
    /// explains it. Consumption after it is left out until an event does.
    UnexplainedDecrease { at: i64, from: f64, to: f64 },
    Rollover { at: i64 },
    Replacement { at: i64 },
    /// A jump faster than the meter's physical maximum, set aside.
    ImplausibleJump { at: i64, per_hour: f64 },
    /// A reading far above the ones after it, which go on from the one before: set aside.
    Spike { at: i64 },
}

/// The continuous counter and what was found on the way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Continuous {
    pub readings: Vec<(i64, f64)>,
    /// Readings set aside as bad.
    pub rejected: usize,
    pub flags: Vec<Flag>,
}

/// Readings that stay below the last good value this many times in a row, rising among
/// themselves, are an unexplained decrease rather than single bad readings.
const PERSISTENT: usize = 3;

/// A decrease smaller than this share of the counter's value is rounding noise.
const NOISE: f64 = 1e-9;

/// Builds the continuous counter from raw readings (sorted by time) and events.
pub fn continuous(raw: &[(i64, f64)], events: &[Event], rollover: Option<f64>, max_per_hour: Option<f64>) -> Continuous {
    // Exclusions and manual readings.
    let excluded = |t: i64| events.iter().any(|e| matches!(e, Event::Exclude { from, to } if *from <= t && t <= *to));
    let mut readings: Vec<(i64, f64)> = raw.iter().copied().filter(|&(t, _)| !excluded(t)).collect();
    let mut rejected = raw.len() - readings.len();
    let manual: Vec<(i64, f64)> = events.iter().filter_map(|e| if let Event::Reading { at, value } = e { Some((*at, *value)) } else { None }).collect();
    if !manual.is_empty() {
        readings.retain(|(t, _)| !manual.iter().any(|(m, _)| m == t));
        readings.extend(manual);
        readings.sort_by_key(|r| r.0);
    }
    let mut replacements: Vec<(i64, f64, f64)> =
        events.iter().filter_map(|e| if let Event::Replacement { at, old_final, new_initial } = e { Some((*at, *old_final, *new_initial)) } else { None }).collect();
    replacements.sort_by(|a, b| a.0.cmp(&b.0));

    let mut out = Continuous { readings: Vec::with_capacity(readings.len() + replacements.len()), rejected: 0, flags: Vec::new() };
    let mut offset = 0.0;
    let mut next_rep = 0;
    // Raw value of the last kept reading on the current meter (for rollovers).
    let mut last_raw: Option<f64> = None;
    // Readings set aside in a row below the last good value.
    let mut run: Vec<(i64, f64)> = Vec::new();
    let mut flagged_run = false;
    for (t, v) in readings {
        while next_rep < replacements.len() && replacements[next_rep].0 <= t {
            let (at, old_final, new_initial) = replacements[next_rep];
            let at_value = old_final + offset;
            if out.readings.last().is_none_or(|&(lt, lv)| at > lt && at_value >= lv) {
                out.readings.push((at, at_value));
            }
            offset += old_final - new_initial;
            out.flags.push(Flag::Replacement { at });
            last_raw = Some(new_initial);
            run.clear();
            flagged_run = false;
            next_rep += 1;
        }
        if !v.is_finite() {
            rejected += 1;
            continue;
        }
        let Some(&(lt, lv)) = out.readings.last() else {
            out.readings.push((t, v + offset));
            last_raw = Some(v);
            continue;
        };
        if t <= lt {
            rejected += 1;
            continue;
        }
        let mut adj = v + offset;
        // Rounding noise (a float register, a counter integrated in floating point) is no
        // decrease: the reading counts as the last one.
        if adj < lv && lv - adj <= NOISE * lv.abs().max(1.0) {
            adj = lv;
        }
        if adj < lv {
            if let (Some(r), Some(prev)) = (rollover, last_raw) {
                let across = r - prev + v;
                if v < prev && across >= 0.0 && across < r / 10.0 {
                    offset += r;
                    adj = v + offset;
                    out.flags.push(Flag::Rollover { at: t });
                }
            }
        }
        if adj < lv {
            rejected += 1;
            if run.last().is_some_and(|&(_, rv)| v < rv) {
                run.clear();
            }
            run.push((t, v));
            if run.len() >= PERSISTENT && !flagged_run {
                let n = out.readings.len();
                if n >= 2 && run[0].1 + offset >= out.readings[n - 2].1 {
                    // The counter goes on from the reading before the last: the last one was a
                    // spike. Set it aside and keep the run.
                    if let Some((at, _)) = out.readings.pop() {
                        out.flags.push(Flag::Spike { at });
                    }
                    rejected = rejected + 1 - run.len();
                    out.readings.extend(run.iter().map(|&(rt, rv)| (rt, rv + offset)));
                    last_raw = run.last().map(|r| r.1);
                    run.clear();
                } else {
                    out.flags.push(Flag::UnexplainedDecrease { at: run[0].0, from: lv - offset, to: run[0].1 });
                    flagged_run = true;
                }
            }
            continue;
        }
        if let Some(max) = max_per_hour {
            let per_hour = (adj - lv) / ((t - lt) as f64 / 3_600_000.0);
            if per_hour > max {
                rejected += 1;
                out.flags.push(Flag::ImplausibleJump { at: t, per_hour });
                continue;
            }
        }
        run.clear();
        flagged_run = false;
        out.readings.push((t, adj));
        last_raw = Some(v);
    }
    // Replacements after the last reading still mark the old meter's final reading.
    for &(at, old_final, _) in &replacements[next_rep..] {
        let at_value = old_final + offset;
        if out.readings.last().is_none_or(|&(lt, lv)| at > lt && at_value >= lv) {
            out.readings.push((at, at_value));
        }
        out.flags.push(Flag::Replacement { at });
    }
    out.rejected = rejected;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn vals(c: &Continuous) -> Vec<(i64, f64)> {
        c.readings.clone()
    }

    /// Each case worked out by hand: raw readings, events, rollover → continuous readings,
    /// number set aside, flags.
    #[test]
    fn table() {
        type Case = (&'static str, Vec<(i64, f64)>, Vec<Event>, Option<f64>, Vec<(i64, f64)>, usize, Vec<Flag>);
        let cases: Vec<Case> = vec![
            ("clean", vec![(0, 10.0), (H, 12.0), (2 * H, 15.0)], vec![], None, vec![(0, 10.0), (H, 12.0), (2 * H, 15.0)], 0, vec![]),
            // A 0 after good readings is a bad reading, not a reset: set aside, 5 kWh counted.
            ("bad zero", vec![(0, 100.0), (H, 0.0), (2 * H, 105.0)], vec![], None, vec![(0, 100.0), (2 * H, 105.0)], 1, vec![]),
            // Replacement at 2H: old meter ended at 120, new one started at 3.
            // Offset 117: 5 → 122, 9 → 126. Consumption 0..4H = (120-100) + (9-3) = 26.
            (
                "replacement",
                vec![(0, 100.0), (H, 110.0), (3 * H, 5.0), (4 * H, 9.0)],
                vec![Event::Replacement { at: 2 * H, old_final: 120.0, new_initial: 3.0 }],
                None,
                vec![(0, 100.0), (H, 110.0), (2 * H, 120.0), (3 * H, 122.0), (4 * H, 126.0)],
                0,
                vec![Flag::Replacement { at: 2 * H }],
            ),
            // Rollover at 100000: 99990 → 15 is 25 units.
            (
                "rollover",
                vec![(0, 99_980.0), (H, 99_990.0), (2 * H, 15.0), (3 * H, 40.0)],
                vec![],
                Some(100_000.0),
                vec![(0, 99_980.0), (H, 99_990.0), (2 * H, 100_015.0), (3 * H, 100_040.0)],
                0,
                vec![Flag::Rollover { at: 2 * H }],
            ),
            // A decrease with a rollover value that a wrap cannot explain (half the range).
            (
                "drop that is no rollover",
                vec![(0, 60_000.0), (H, 10.0), (2 * H, 60_010.0)],
                vec![],
                Some(100_000.0),
                vec![(0, 60_000.0), (2 * H, 60_010.0)],
                1,
                vec![],
            ),
            // The counter restarts from 0 and keeps running: flagged, not summed.
            (
                "unexplained decrease",
                vec![(0, 500.0), (H, 1.0), (2 * H, 2.0), (3 * H, 4.0), (4 * H, 6.0)],
                vec![],
                None,
                vec![(0, 500.0)],
                4,
                vec![Flag::UnexplainedDecrease { at: H, from: 500.0, to: 1.0 }],
            ),
            // Rounding noise of a flat counter is no decrease.
            ("noise", vec![(0, 35_000.0), (H, 34_999.999_999_99), (2 * H, 35_001.0)], vec![], None, vec![(0, 35_000.0), (H, 35_000.0), (2 * H, 35_001.0)], 0, vec![]),
            // A spike: the readings after it go on from the one before it.
            (
                "spike",
                vec![(0, 100.0), (H, 1e9), (2 * H, 101.0), (3 * H, 102.0), (4 * H, 103.0)],
                vec![],
                None,
                vec![(0, 100.0), (2 * H, 101.0), (3 * H, 102.0), (4 * H, 103.0)],
                1,
                vec![Flag::Spike { at: H }],
            ),
            // An engineer's manual reading corrects a wrong stored one, an exclusion drops a spike.
            (
                "manual reading and exclusion",
                vec![(0, 10.0), (H, 999.0), (2 * H, 14.0), (3 * H, 16.0)],
                vec![Event::Exclude { from: H, to: H }, Event::Reading { at: 3 * H, value: 17.0 }],
                None,
                vec![(0, 10.0), (2 * H, 14.0), (3 * H, 17.0)],
                1,
                vec![],
            ),
        ];
        for (name, raw, events, rollover, want, rejected, flags) in cases {
            let c = continuous(&raw, &events, rollover, None);
            assert_eq!(vals(&c), want, "{name}");
            assert_eq!(c.rejected, rejected, "{name}");
            assert_eq!(c.flags, flags, "{name}");
        }
    }

    #[test]
    fn a_jump_beyond_the_physical_maximum_is_set_aside() {
        // 50 kWh in an hour on a meter that cannot do more than 30 kW.
        let c = continuous(&[(0, 0.0), (H, 50.0), (2 * H, 20.0)], &[], None, Some(30.0));
        assert_eq!(c.readings, vec![(0, 0.0), (2 * H, 20.0)]);
        assert!(matches!(c.flags[0], Flag::ImplausibleJump { at, .. } if at == H));
    }

    #[test]
    fn records_are_checked() {
        let rec = |kind: &str| EventRecord {
            meter: "m".into(),
            kind: kind.into(),
            time: "2026-01-01".into(),
            to: None,
            value: None,
            old_final: Some(1.0),
            new_initial: None,
            quantity: None,
            by: "王工".into(),
            reason: "更换电表".into(),
            recorded_at: None,
        };
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
}
