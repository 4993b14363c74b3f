//! Consumption from hourly roll-ups (the store's [`HourRollup`] rows).
//!
//! Consumption needs the counter at period boundaries, interpolated between the last reading
//! before a boundary and the first at or after it. For hour-aligned boundaries those are the
//! last reading of an earlier hour and the first of a later one, so the first and last reading
//! of each hour are enough: [`window_readings`] turns a window's roll-ups into those readings,
//! and the accounting (the engine's meter-years, the consumption query) reads them so, leaving it
//! to [`super::counter::continuous`] to set bad readings aside as it does raw ones.
//! [`counter_readings`] is the stricter statement, kept as a property test: where no reading of
//! the window would be set aside as bad (each hour's first reading is its minimum, its last its
//! maximum, and hour to hour the counter never goes down), [`super::consumption::consumption`]
//! on the roll-ups' readings gives exactly what it gives on the raw readings.

pub use energy_wire::time::{hour_of, HOUR_MS};

use std::collections::BTreeMap;

use crate::store::{CounterRollups, HourRollup};

/// Counter readings equivalent, for consumption between hour-aligned boundaries, to the raw
/// readings of a window: `before` (the last reading before the window), each hour's first and
/// last reading, and `after` (the first reading at or after the window's end). `None` when the
/// raw readings hold one that consumption would set aside as bad, so that the roll-ups alone
/// cannot give the same answer: then read the raw points.
pub fn counter_readings(before: Option<(i64, f64)>, hours: &[HourRollup], after: Option<(i64, f64)>) -> Option<Vec<(i64, f64)>> {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(hours.len() * 2 + 2);
    let push = |out: &mut Vec<(i64, f64)>, r: (i64, f64)| -> Option<()> {
        match out.last() {
            Some(&(lt, lv)) if r.0 <= lt || r.1 < lv => None,
            _ => {
                out.push(r);
                Some(())
            }
        }
    };
    if let Some(b) = before {
        push(&mut out, b)?;
    }
    for h in hours {
        if h.first_v != h.min || h.last_v != h.max {
            return None;
        }
        push(&mut out, (h.first_ts, h.first_v))?;
        if h.last_ts != h.first_ts {
            push(&mut out, (h.last_ts, h.last_v))?;
        }
    }
    if let Some(a) = after {
        push(&mut out, a)?;
    }
    Some(out)
}

/// The counter readings of a window that the accounting reads from the roll-ups: `before` (the
/// last reading before the window), each hour's first and last reading, and `after` (the first
/// reading at or after the window's end), from the store's columns in one pass. Readings a
/// consumption would set aside stay in: [`super::counter::continuous`] sets them aside (and
/// counts them), as it does the raw ones.
pub fn window_readings(w: &CounterRollups) -> Vec<(i64, f64)> {
    let h = &w.hours;
    let mut r: Vec<(i64, f64)> = Vec::with_capacity(h.len() * 2 + 2);
    r.extend(w.before);
    for (((&first_ts, &first_v), &last_ts), &last_v) in h.first_ts.iter().zip(&h.first_v).zip(&h.last_ts).zip(&h.last_v) {
        r.push((first_ts, first_v));
        if last_ts != first_ts {
            r.push((last_ts, last_v));
        }
    }
    r.extend(w.after);
    r
}

/// Consumption per hour (start of the hour, ms) from a counter's hourly roll-ups: the first
/// reading of the next hour minus the first reading of the hour (the readings nearest the hour's
/// boundaries), when both hours are there and the difference is not negative; times
/// `multiplier`. An hour is known once a reading of the next hour is.
pub fn hourly_consumption(rollups: &[HourRollup], multiplier: f64) -> BTreeMap<i64, f64> {
    let mut out = BTreeMap::new();
    for w in rollups.windows(2) {
        if w[1].hour - w[0].hour == HOUR_MS {
            let d = w[1].first_v - w[0].first_v;
            if d >= 0.0 {
                out.insert(w[0].hour, d * multiplier);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::consumption::consumption;
    use crate::store::rollups_of;
    use proptest::prelude::*;

    const H: i64 = HOUR_MS;

    #[test]
    fn a_rollup_worked_by_hand() {
        let r = HourRollup::of_points(&[(H + 600_000, 12.0), (H + 60_000, 10.0), (H + 3_000_000, 11.0)]).unwrap();
        assert_eq!(
            r,
            HourRollup { hour: H, first_ts: H + 60_000, first_v: 10.0, last_ts: H + 3_000_000, last_v: 11.0, min: 10.0, max: 12.0, sum: 33.0, count: 3 }
        );
        assert_eq!(r.mean(), 11.0);
        assert_eq!(hour_of(H - 1), 0);
        assert_eq!(hour_of(H), H);
    }

    #[test]
    fn readings_from_rollups_refuse_what_consumption_would_set_aside() {
        let hour = |pts: &[(i64, f64)]| HourRollup::of_points(pts).unwrap();
        let good = [hour(&[(0, 1.0), (H / 2, 2.0)]), hour(&[(H, 3.0)])];
        assert_eq!(counter_readings(None, &good, Some((2 * H, 4.0))), Some(vec![(0, 1.0), (H / 2, 2.0), (H, 3.0), (2 * H, 4.0)]));
        let cases: &[(&str, Option<(i64, f64)>, Vec<HourRollup>, Option<(i64, f64)>)] = &[
            ("a dip inside an hour", None, vec![hour(&[(0, 5.0), (10, 0.0), (20, 6.0)])], None),
            ("a bad last reading", None, vec![hour(&[(0, 5.0), (10, 6.0), (20, 0.0)])], None),
            ("down from one hour to the next", None, vec![hour(&[(0, 5.0)]), hour(&[(H, 4.0)])], None),
            ("a bad reading before the window", Some((-1, 100.0)), vec![hour(&[(0, 5.0)])], None),
            ("a bad reading after the window", None, vec![hour(&[(0, 5.0)])], Some((H, 1.0))),
        ];
        for (name, before, hours, after) in cases {
            assert_eq!(counter_readings(*before, hours, *after), None, "{name}");
        }
    }

    fn points_strategy() -> impl Strategy<Value = Vec<(i64, f64)>> {
        // Distinct times over a few hours; values that add up exactly (multiples of 1/4).
        proptest::collection::btree_map(0i64..6 * H, -400i32..400, 1..60).prop_map(|m| m.into_iter().map(|(t, v)| (t, f64::from(v) / 4.0)).collect())
    }

    proptest! {
        /// Any order and any grouping of the same readings gives the same roll-ups.
        #[test]
        fn merging_is_order_and_grouping_independent(points in points_strategy(), seed in any::<u64>(), cut in 1usize..8) {
            let expected = rollups_of(&points);
            let mut shuffled = points.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut by_hour: std::collections::BTreeMap<i64, HourRollup> = std::collections::BTreeMap::new();
            for group in shuffled.chunks(cut) {
                // Merge a group first, per hour, then into the total: any grouping.
                let mut g: std::collections::BTreeMap<i64, HourRollup> = std::collections::BTreeMap::new();
                for &(t, v) in group {
                    let r = HourRollup::of_point(t, v);
                    g.entry(r.hour).and_modify(|x| *x = x.merge(&r)).or_insert(r);
                }
                for (h, r) in g {
                    by_hour.entry(h).and_modify(|x| *x = r.merge(x)).or_insert(r);
                }
            }
            prop_assert_eq!(by_hour.into_values().collect::<Vec<_>>(), expected);
        }

        /// Consumption from roll-ups equals consumption from the raw readings whenever the
        /// roll-ups can answer, for hour-aligned boundaries.
        #[test]
        fn rollup_and_raw_consumption_agree(
            steps in proptest::collection::vec((1i64..3 * H, 0.0f64..50.0, any::<bool>()), 1..80),
            from_h in 0i64..20, len_h in 1i64..30,
        ) {
            // A rising counter; some readings bad (0) when the flag is set and rare.
            let mut t = 0;
            let mut v = 1000.0;
            let mut raw = Vec::new();
            for (i, (dt, dv, flag)) in steps.into_iter().enumerate() {
                t += dt;
                v += dv;
                raw.push((t, if flag && i % 7 == 0 { 0.0 } else { v }));
            }
            let (from, to) = (from_h * H, (from_h + len_h) * H);
            let bounds: Vec<i64> = (from_h..=from_h + len_h).map(|h| h * H).collect();
            let before = raw.iter().rev().find(|r| r.0 < from).copied();
            let after = raw.iter().find(|r| r.0 >= to).copied();
            let inside: Vec<(i64, f64)> = raw.iter().filter(|r| r.0 >= from && r.0 < to).copied().collect();
            let mut window: Vec<(i64, f64)> = before.into_iter().collect();
            window.extend(&inside);
            window.extend(after);
            let from_raw = consumption(&window, &bounds, H);
            if let Some(readings) = counter_readings(before, &rollups_of(&inside), after) {
                let from_rollups = consumption(&readings, &bounds, H);
                for (a, b) in from_raw.periods.iter().zip(&from_rollups.periods) {
                    prop_assert!((a.value - b.value).abs() < 1e-9 * a.value.abs().max(1.0), "{:?} vs {:?}", a, b);
                    prop_assert!((a.coverage - b.coverage).abs() < 1e-12, "{:?} vs {:?}", a, b);
                    prop_assert_eq!(a.estimated, b.estimated);
                }
            } else {
                prop_assert!(from_raw.rejected_readings > 0 || window.windows(2).any(|w| w[1].1 < w[0].1));
            }
        }
    }
}
