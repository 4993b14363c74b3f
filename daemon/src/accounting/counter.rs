//! From a meter's raw counter readings and its events to one continuous, non-decreasing
//! counter that consumption can be computed from (reference, section 7).
//!
//! * **Exclusions** (`exclude` events) set readings aside; **manual readings** (`reading`
//!   events) are added, replacing a stored reading at the same time (a correction).
//! * **Replacements**: readings from the replacement time on belong to the new meter; they are
//!   shifted by `old_final - new_initial` (summed over replacements), and a reading `old_final`
//!   is placed at the replacement time, so the old meter's last stretch and the new meter's first
//!   both count.
//! * **Replacements** may change the CT/PT ratio: the continuous counter is kept in units of the
//!   meter's registry `multiplier`, so a new meter with ratio `k` counts `k / multiplier` of a
//!   unit per unit it shows. A reading at exactly the replacement time is the old meter's final
//!   or the new meter's initial reading (whichever it is closer to) and is absorbed into the
//!   replacement, not set aside. An `old_final` below the last reading of the old meter is
//!   flagged (`old_final_below_last_reading`) and the last reading is taken as the old meter's
//!   final one, so that no consumption is lost and the new meter's readings are not set aside.
//! * **Rollovers**: `rollover` is the largest value the register shows (the nameplate: 99999
//!   for a five-digit register, 99999.99 for one with two decimals). The register wraps from it to
//!   0, so its range is `rollover` plus one step of its last digit ([`rollover_range`]: 100000
//!   and 100000.00). A decrease that a wrap explains (the consumption across the wrap is less
//!   than a tenth of the range) adds the range.
//! * **Bad readings**: any other decrease is a bad reading and is set aside, never taken as a
//!   reset (a 0 or "unavailable" after a good reading is the common case). When the counter keeps
//!   running from the lower value (three readings or more, rising among themselves) it is an
//!   **unexplained decrease**: flagged for an engineer (an unrecorded replacement or a reset), and
//!   the readings stay set aside until an event explains them. When instead they go on from the
//!   reading before the last kept one, that last one was a **spike**, and it is set aside.
//! * A jump beyond the meter's physical maximum (`max_per_hour`) is a bad reading too.
//! * A decrease below a billionth of the counter's value is rounding noise, not a decrease.

use serde::{Deserialize, Serialize};

use crate::registry::{EventError, EventKind, EventRecord};
use crate::time::HOUR_MS;

/// A meter event, times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `multiplier`: the new meter's CT/PT ratio from `at` on (`None`: unchanged).
    Replacement { at: i64, old_final: f64, new_initial: f64, multiplier: Option<f64> },
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

/// The counter's event of a checked record, its times in the time zone `tz`.
pub fn event_of(e: &EventRecord, tz: chrono_tz::Tz) -> Result<Event, EventError> {
    let (at, to) = e.times_ms(tz)?;
    Ok(match e.kind {
        EventKind::Replacement { old_final, new_initial, multiplier } => Event::Replacement { at, old_final, new_initial, multiplier },
        EventKind::Reading { value, .. } => Event::Reading { at, value },
        EventKind::Exclude { .. } => Event::Exclude { from: at, to: to.unwrap_or(at) },
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
    /// A replacement's `old_final` (in the old meter's own units) is below the old meter's last
    /// reading before the replacement: the last reading was taken as its final one.
    OldFinalBelowLastReading { at: i64, old_final: f64, last_reading: f64 },
}

impl Flag {
    pub fn at(&self) -> i64 {
        match self {
            Flag::UnexplainedDecrease { at, .. }
            | Flag::Rollover { at }
            | Flag::Replacement { at }
            | Flag::ImplausibleJump { at, .. }
            | Flag::Spike { at }
            | Flag::OldFinalBelowLastReading { at, .. } => *at,
        }
    }
}

/// Why a reading was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// In an `exclude` event's stretch.
    Excluded,
    /// Not a number (NaN or infinite).
    NotFinite,
    /// A second, different value at a time already read.
    DuplicateTime,
    /// Below the last good reading, no wrap or replacement explaining it.
    Decrease,
    /// Faster than the meter's `max_per_hour`.
    ImplausibleJump,
    /// Far above the readings after it, which go on from the one before.
    Spike,
}

/// A reading set aside, in the meter's own units (as read).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub at: i64,
    pub value: f64,
    pub reason: RejectReason,
}

/// The continuous counter and what was found on the way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Continuous {
    pub readings: Vec<(i64, f64)>,
    /// Readings set aside as bad (the length of `rejected_readings`).
    pub rejected: usize,
    /// Each reading set aside, in time order, with why.
    pub rejected_readings: Vec<Rejected>,
    pub flags: Vec<Flag>,
}

/// Readings that stay below the last good value this many times in a row, rising among
/// themselves, are an unexplained decrease rather than single bad readings.
const PERSISTENT: usize = 3;

/// A decrease smaller than this share of the counter's value is rounding noise.
const NOISE: f64 = 1e-9;

/// The range of a register whose largest shown value is `max`: `max` plus one step of its last
/// digit, the step taken from the decimals `max` is written with (at most six). A five-digit
/// register showing up to 99999 wraps to 0 after 99999: its range is 100000; one showing up to
/// 99999.99 has a range of 100000.00.
pub fn rollover_range(max: f64) -> f64 {
    let mut scale = 1.0;
    for _ in 0..6 {
        let x = max * scale;
        if (x - x.round()).abs() < 1e-6 {
            return (x.round() + 1.0) / scale;
        }
        scale *= 10.0;
    }
    let x = max * scale;
    (x.round() + 1.0) / scale
}

/// A replacement event: when, the old meter's final reading, the new meter's initial reading
/// (each in its meter's own units) and the new meter's multiplier, if it changed.
type Replacement = (i64, f64, f64, Option<f64>);

/// Builds the continuous counter from raw readings (sorted by time) and events. `rollover` is the
/// largest value the register shows; `max_per_hour` is in counter units of the meter's
/// registry `multiplier`, the unit of the continuous counter.
pub fn continuous(raw: &[(i64, f64)], events: &[Event], rollover: Option<f64>, max_per_hour: Option<f64>, multiplier: f64) -> Continuous {
    let mut rej: Vec<Rejected> = Vec::new();
    let readings = readings_used(raw, events, &mut rej);
    let replacements = replacements_of(events);
    let mut walk = Walk {
        out: Continuous { readings: Vec::with_capacity(readings.len() + replacements.len()), rejected: 0, rejected_readings: Vec::new(), flags: Vec::new() },
        rej,
        base: if multiplier.is_finite() && multiplier > 0.0 { multiplier } else { 1.0 },
        range: rollover.filter(|r| r.is_finite() && *r > 0.0).map(rollover_range),
        max_per_hour,
        offset: 0.0,
        scale: 1.0,
        replaced_at: None,
        last_raw: None,
        run: Vec::new(),
        flagged_run: false,
    };
    let mut next_rep = 0;
    for (t, v) in readings {
        while next_rep < replacements.len() && replacements[next_rep].0 <= t {
            walk.replace_before_reading(replacements[next_rep]);
            next_rep += 1;
        }
        walk.reading(t, v);
    }
    // Replacements after the last reading still mark the old meter's final reading.
    for &r in &replacements[next_rep..] {
        walk.replace(r);
    }
    let Walk { mut out, mut rej, .. } = walk;
    rej.sort_by_key(|r| r.at);
    out.rejected = rej.len();
    out.rejected_readings = rej;
    out
}

/// The readings the counter is built from: the raw ones outside the `exclude` events' stretches
/// (those are set aside into `rej`), with the manual readings (`reading` events) in place of
/// raw ones at the same time; sorted by time.
fn readings_used(raw: &[(i64, f64)], events: &[Event], rej: &mut Vec<Rejected>) -> Vec<(i64, f64)> {
    let excluded = |t: i64| events.iter().any(|e| matches!(e, Event::Exclude { from, to } if *from <= t && t <= *to));
    let mut readings: Vec<(i64, f64)> = Vec::with_capacity(raw.len());
    for &(t, v) in raw {
        if excluded(t) {
            rej.push(Rejected { at: t, value: v, reason: RejectReason::Excluded });
        } else {
            readings.push((t, v));
        }
    }
    let manual: Vec<(i64, f64)> = events.iter().filter_map(|e| if let Event::Reading { at, value } = e { Some((*at, *value)) } else { None }).collect();
    if !manual.is_empty() {
        readings.retain(|(t, _)| !manual.iter().any(|(m, _)| m == t));
        readings.extend(manual);
        readings.sort_by_key(|r| r.0);
    }
    readings
}

/// The replacement events, in time order.
fn replacements_of(events: &[Event]) -> Vec<Replacement> {
    let mut replacements: Vec<Replacement> = events
        .iter()
        .filter_map(|e| if let Event::Replacement { at, old_final, new_initial, multiplier } = e { Some((*at, *old_final, *new_initial, *multiplier)) } else { None })
        .collect();
    replacements.sort_by_key(|r| r.0);
    replacements
}

/// The walk over the readings in time order that builds the continuous counter.
struct Walk {
    out: Continuous,
    /// Readings set aside so far, not yet in time order.
    rej: Vec<Rejected>,
    /// The registry multiplier (1 when not a positive number): a replacement's multiplier is
    /// relative to it.
    base: f64,
    /// The register's range, when it rolls over.
    range: Option<f64>,
    max_per_hour: Option<f64>,
    /// The continuous counter is `raw × scale + offset`, in units of the registry multiplier.
    offset: f64,
    scale: f64,
    /// Time of the last replacement applied: a reading at exactly that time is absorbed.
    replaced_at: Option<i64>,
    /// Raw value of the last kept reading on the current meter (for rollovers).
    last_raw: Option<f64>,
    /// Readings set aside in a row below the last good value.
    run: Vec<(i64, f64)>,
    /// The current run was flagged as an unexplained decrease.
    flagged_run: bool,
}

impl Walk {
    /// Applies one replacement: the old meter's final reading at `at`, then the new meter's
    /// scale and offset.
    fn replace(&mut self, (at, old_final, new_initial, k): Replacement) {
        let mut final_raw = old_final;
        if let Some(lr) = self.last_raw {
            if lr - old_final > NOISE * lr.abs().max(1.0) {
                self.out.flags.push(Flag::OldFinalBelowLastReading { at, old_final, last_reading: lr });
                final_raw = lr;
            }
        }
        let at_value = final_raw * self.scale + self.offset;
        if self.out.readings.last().is_none_or(|&(lt, lv)| at > lt && at_value >= lv) {
            self.out.readings.push((at, at_value));
        }
        if let Some(k) = k {
            self.scale = k / self.base;
        }
        self.offset = at_value - new_initial * self.scale;
        self.out.flags.push(Flag::Replacement { at });
        self.last_raw = Some(new_initial);
    }

    /// Applies a replacement that comes at or before the next reading: the readings after it
    /// start a new meter, so no run of decreases goes on across it.
    fn replace_before_reading(&mut self, r: Replacement) {
        self.replace(r);
        self.replaced_at = Some(r.0);
        self.run.clear();
        self.flagged_run = false;
    }

    /// Takes the next reading: kept on the counter, or set aside with why.
    fn reading(&mut self, t: i64, v: f64) {
        if self.replaced_at == Some(t) {
            // The old meter's final or the new meter's initial reading, both given by the event.
            return;
        }
        if !v.is_finite() {
            self.rej.push(Rejected { at: t, value: v, reason: RejectReason::NotFinite });
            return;
        }
        let Some(&(lt, lv)) = self.out.readings.last() else {
            self.out.readings.push((t, v * self.scale + self.offset));
            self.last_raw = Some(v);
            return;
        };
        if t <= lt {
            // The same reading twice (overlapping windows) is no bad reading.
            if !(t == lt && self.last_raw == Some(v)) {
                self.rej.push(Rejected { at: t, value: v, reason: RejectReason::DuplicateTime });
            }
            return;
        }
        let adj = self.on_counter(t, v, lv);
        if adj < lv {
            self.decrease(t, v, lv);
            return;
        }
        if let Some(max) = self.max_per_hour {
            let per_hour = (adj - lv) / ((t - lt) as f64 / HOUR_MS as f64);
            if per_hour > max {
                self.rej.push(Rejected { at: t, value: v, reason: RejectReason::ImplausibleJump });
                self.out.flags.push(Flag::ImplausibleJump { at: t, per_hour });
                return;
            }
        }
        self.run.clear();
        self.flagged_run = false;
        self.out.readings.push((t, adj));
        self.last_raw = Some(v);
    }

    /// The raw reading `v` on the continuous counter, whose last value is `lv`. Rounding noise
    /// below `lv` (a float register, a counter integrated in floating point) is no decrease: the
    /// reading counts as `lv`. A register that wrapped past its range (a rollover) moves the
    /// offset up by the range.
    fn on_counter(&mut self, t: i64, v: f64, lv: f64) -> f64 {
        let mut adj = v * self.scale + self.offset;
        if adj < lv && lv - adj <= NOISE * lv.abs().max(1.0) {
            adj = lv;
        }
        if adj < lv {
            if let (Some(r), Some(prev)) = (self.range, self.last_raw) {
                let across = r - prev + v;
                if v < prev && across >= 0.0 && across < r / 10.0 {
                    self.offset += r * self.scale;
                    adj = v * self.scale + self.offset;
                    self.out.flags.push(Flag::Rollover { at: t });
                }
            }
        }
        adj
    }

    /// A reading below the last good value `lv`, set aside. [`PERSISTENT`] such readings in a
    /// row, rising among themselves, are either the counter going on from the reading before
    /// the last (the last was a spike) or an unexplained decrease.
    fn decrease(&mut self, t: i64, v: f64, lv: f64) {
        self.rej.push(Rejected { at: t, value: v, reason: RejectReason::Decrease });
        if self.run.last().is_some_and(|&(_, rv)| v < rv) {
            self.run.clear();
        }
        self.run.push((t, v));
        if self.run.len() < PERSISTENT || self.flagged_run {
            return;
        }
        let n = self.out.readings.len();
        if n >= 2 && self.run[0].1 * self.scale + self.offset >= self.out.readings[n - 2].1 {
            self.spike();
        } else {
            self.out.flags.push(Flag::UnexplainedDecrease { at: self.run[0].0, from: (lv - self.offset) / self.scale, to: self.run[0].1 });
            self.flagged_run = true;
        }
    }

    /// The counter goes on from the reading before the last: the last one was a spike. Sets it
    /// aside and keeps the run.
    fn spike(&mut self) {
        if let Some((at, sv)) = self.out.readings.pop() {
            self.out.flags.push(Flag::Spike { at });
            let run = &self.run;
            self.rej.retain(|r| !(r.reason == RejectReason::Decrease && run.iter().any(|x| x.0 == r.at)));
            self.rej.push(Rejected { at, value: (sv - self.offset) / self.scale, reason: RejectReason::Spike });
        }
        let (scale, offset) = (self.scale, self.offset);
        self.out.readings.extend(self.run.iter().map(|&(rt, rv)| (rt, rv * scale + offset)));
        self.last_raw = self.run.last().map(|r| r.1);
        self.run.clear();
    }
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
                vec![Event::Replacement { at: 2 * H, old_final: 120.0, new_initial: 3.0, multiplier: None }],
                None,
                vec![(0, 100.0), (H, 110.0), (2 * H, 120.0), (3 * H, 122.0), (4 * H, 126.0)],
                0,
                vec![Flag::Replacement { at: 2 * H }],
            ),
            // A five-digit register (shows up to 99999, range 100000): 99990 → 15 is
            // 99999 - 99990 + 1 (the wrap to 0) + 15 = 25 units.
            (
                "rollover",
                vec![(0, 99_980.0), (H, 99_990.0), (2 * H, 15.0), (3 * H, 40.0)],
                vec![],
                Some(99_999.0),
                vec![(0, 99_980.0), (H, 99_990.0), (2 * H, 100_015.0), (3 * H, 100_040.0)],
                0,
                vec![Flag::Rollover { at: 2 * H }],
            ),
            // A decrease with a rollover value that a wrap cannot explain (half the range).
            (
                "drop that is no rollover",
                vec![(0, 60_000.0), (H, 10.0), (2 * H, 60_010.0)],
                vec![],
                Some(99_999.0),
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
            let c = continuous(&raw, &events, rollover, None, 1.0);
            assert_eq!(vals(&c), want, "{name}");
            assert_eq!(c.rejected_readings.len(), rejected, "{name}");
            assert_eq!(c.rejected, rejected, "{name}");
            assert_eq!(c.flags, flags, "{name}");
        }
    }

    #[test]
    fn a_jump_beyond_the_physical_maximum_is_set_aside() {
        // 50 kWh in an hour on a meter that cannot do more than 30 kW.
        let c = continuous(&[(0, 0.0), (H, 50.0), (2 * H, 20.0)], &[], None, Some(30.0), 1.0);
        assert_eq!(c.readings, vec![(0, 0.0), (2 * H, 20.0)]);
        assert!(matches!(c.flags[0], Flag::ImplausibleJump { at, .. } if at == H));
    }

    /// The register's range from its largest shown value, worked by hand.
    #[test]
    fn rollover_range_is_the_largest_value_plus_one_step() {
        for (max, range) in [
            // Five digits: 00000..99999, 100000 values.
            (99_999.0, 100_000.0),
            // Five digits and two decimals: 00000.00..99999.99, the step is 0.01.
            (99_999.99, 100_000.0),
            // Eight digits (the old example 99999999.0).
            (99_999_999.0, 100_000_000.0),
            // One decimal: 9999.9 + 0.1.
            (9_999.9, 10_000.0),
        ] {
            assert!((rollover_range(max) - range).abs() < 1e-6, "{max}: {}", rollover_range(max));
        }
    }

    /// Both registers of the issue, each across one wrap.
    #[test]
    fn a_register_wraps_after_its_largest_value() {
        // Shows up to 99999: 99990 → 15 is 9 (to 99999) + 1 (to 0) + 15 = 25, not 24.
        let c = continuous(&[(0, 99_990.0), (H, 15.0)], &[], Some(99_999.0), None, 1.0);
        assert!((c.readings[1].1 - c.readings[0].1 - 25.0).abs() < 1e-9, "{:?}", c.readings);
        assert_eq!(c.flags, vec![Flag::Rollover { at: H }]);
        // Shows up to 99999.99: 99999.50 → 0.49 is 0.49 (to 99999.99) + 0.01 (to 0.00) + 0.49 = 0.99.
        let c = continuous(&[(0, 99_999.50), (H, 0.49)], &[], Some(99_999.99), None, 1.0);
        assert!((c.readings[1].1 - c.readings[0].1 - 0.99).abs() < 1e-6, "{:?}", c.readings);
        assert_eq!(c.rejected, 0);
    }

    /// A reading at exactly the replacement time is the new meter's first (or the old one's
    /// last): absorbed into the replacement, never counted as rejected.
    #[test]
    fn the_reading_at_the_replacement_time_is_not_rejected() {
        let rep = vec![Event::Replacement { at: 2 * H, old_final: 120.0, new_initial: 3.0, multiplier: None }];
        // Offset 120 - 3 = 117: 5 → 122, 9 → 126; consumption (120 - 100) + (9 - 3) = 26.
        let want = vec![(0, 100.0), (H, 110.0), (2 * H, 120.0), (3 * H, 122.0), (4 * H, 126.0)];
        for at_replacement in [3.0, 120.0] {
            let c = continuous(&[(0, 100.0), (H, 110.0), (2 * H, at_replacement), (3 * H, 5.0), (4 * H, 9.0)], &rep, None, None, 1.0);
            assert_eq!(c.readings, want, "{at_replacement}");
            assert_eq!((c.rejected, c.rejected_readings.clone()), (0, vec![]), "{at_replacement}");
        }
        // The same reading twice is no bad reading either.
        let c = continuous(&[(0, 10.0), (0, 10.0), (H, 12.0)], &[], None, None, 1.0);
        assert_eq!((c.readings, c.rejected), (vec![(0, 10.0), (H, 12.0)], 0));
    }

    /// A replacement that changes the CT ratio from the registry's 10 to 20: the new meter's
    /// units count twice. Old meter 100 → 112 (12 × 10 = 120 primary), new meter 0 → 8
    /// (8 × 20 = 160 primary): 280 primary, 28 in units of the registry multiplier.
    #[test]
    fn a_replacement_may_change_the_multiplier() {
        let rep = vec![Event::Replacement { at: 2 * H, old_final: 112.0, new_initial: 0.0, multiplier: Some(20.0) }];
        let c = continuous(&[(0, 100.0), (H, 110.0), (3 * H, 5.0), (4 * H, 8.0)], &rep, None, None, 10.0);
        assert_eq!(c.readings, vec![(0, 100.0), (H, 110.0), (2 * H, 112.0), (3 * H, 122.0), (4 * H, 128.0)]);
        assert!(((c.readings[4].1 - c.readings[0].1) * 10.0 - 280.0).abs() < 1e-9);
    }

    /// `old_final` below the last reading (130 read, 120 entered): flagged, the last reading is
    /// the old meter's final one, and the new meter's readings are not set aside:
    /// 100 → 130 on the old meter, 0 → 5 on the new one: 35.
    #[test]
    fn an_old_final_below_the_last_reading_is_flagged_not_refused() {
        let rep = vec![Event::Replacement { at: 2 * H, old_final: 120.0, new_initial: 0.0, multiplier: None }];
        let c = continuous(&[(0, 100.0), (H, 130.0), (3 * H, 5.0)], &rep, None, None, 1.0);
        assert_eq!(c.readings, vec![(0, 100.0), (H, 130.0), (2 * H, 130.0), (3 * H, 135.0)]);
        assert_eq!(c.flags, vec![Flag::OldFinalBelowLastReading { at: 2 * H, old_final: 120.0, last_reading: 130.0 }, Flag::Replacement { at: 2 * H }]);
        assert_eq!(c.rejected, 0);
    }

    /// Each reading set aside, with its time, value and why.
    #[test]
    fn rejected_readings_say_why() {
        let c = continuous(&[(0, 100.0), (H, 0.0), (2 * H, 105.0), (3 * H, f64::NAN)], &[], None, None, 1.0);
        assert_eq!(c.rejected_readings[0], Rejected { at: H, value: 0.0, reason: RejectReason::Decrease });
        assert_eq!((c.rejected_readings[1].at, c.rejected_readings[1].reason), (3 * H, RejectReason::NotFinite));
        let c = continuous(&[(0, 100.0), (H, 1e9), (2 * H, 101.0), (3 * H, 102.0), (4 * H, 103.0)], &[], None, None, 1.0);
        assert_eq!(c.rejected_readings, vec![Rejected { at: H, value: 1e9, reason: RejectReason::Spike }]);
        let c = continuous(&[(0, 10.0), (H, 999.0), (2 * H, 14.0)], &[Event::Exclude { from: H, to: H }], None, None, 1.0);
        assert_eq!(c.rejected_readings, vec![Rejected { at: H, value: 999.0, reason: RejectReason::Excluded }]);
    }
}
