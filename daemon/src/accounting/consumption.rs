//! Consumption from a cumulative counter.
//!
//! Rules (see the reference `energy-accounting.md`, section 7):
//!
//! * Readings are first cleaned: a reading lower than the last accepted one is a bad reading
//!   (a 0 or "unavailable" after a good reading is the common case) and is set aside, never taken
//!   as a reset. Meter replacements and rollovers come from the registry's meter events.
//! * The counter between two readings is interpolated linearly, so the value at a period
//!   boundary is interpolated from the readings around it.
//! * A period gets the counter difference over the part of it that readings cover; `coverage` is
//!   that part's share of the period. Where two consecutive readings are further apart than
//!   `max_gap_ms`, the consumption between them is known exactly in total but its split between
//!   periods is not: the periods touched are marked `estimated`.

/// Consumption of one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodConsumption {
    pub value: f64,
    /// Share of the period covered by readings, 0..=1.
    pub coverage: f64,
    /// Part of the value was spread across a gap longer than the gap limit.
    pub estimated: bool,
    /// That part: the rest of `value` is measured.
    pub estimated_value: f64,
}

/// Readings set aside by cleaning, and the result per period.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumption {
    pub periods: Vec<PeriodConsumption>,
    pub rejected_readings: usize,
}

/// Keeps finite readings that never go below the last kept one; input sorted by time.
pub fn clean(readings: &[(i64, f64)]) -> (Vec<(i64, f64)>, usize) {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(readings.len());
    let mut rejected = 0;
    for &(t, v) in readings {
        if !v.is_finite() {
            rejected += 1;
            continue;
        }
        match out.last() {
            Some(&(lt, _)) if t <= lt => rejected += 1,
            Some(&(_, lv)) if v < lv => rejected += 1,
            _ => out.push((t, v)),
        }
    }
    (out, rejected)
}

/// Counter value at `t` by linear interpolation, given `j`, the number of readings at or
/// before `t`; `t` must lie within the readings' span.
fn interpolate(r: &[(i64, f64)], j: usize, t: i64) -> f64 {
    if j == 0 {
        return r[0].1;
    }
    let (t0, v0) = r[j - 1];
    match r.get(j) {
        None => v0,
        Some(&(t1, v1)) => {
            if t1 == t0 {
                v0
            } else {
                v0 + (v1 - v0) * ((t - t0) as f64 / (t1 - t0) as f64)
            }
        }
    }
}

/// A period without readings.
const EMPTY: PeriodConsumption = PeriodConsumption { value: 0.0, coverage: 0.0, estimated: false, estimated_value: 0.0 };

/// The part `(lo, hi)` of the period `[a, b)` that the readings span, if any.
fn covered(r: &[(i64, f64)], a: i64, b: i64) -> Option<(i64, i64)> {
    let (&(first, _), &(last, _)) = (r.first()?, r.last()?);
    let (lo, hi) = (a.max(first), b.min(last));
    (hi > lo && b > a).then_some((lo, hi))
}

/// A position in readings sorted by time, moved to a time: for times that only go forward (the
/// boundaries of consecutive periods) it steps over each reading once, so a year of hours is one
/// pass over the readings, not a binary search per hour. Any order of times still gives the
/// right answer (it steps back), only slower.
struct Cursor {
    /// Readings with time `<= t` (or `< t` for [`Cursor::before`]) as of the last call.
    n: usize,
}

impl Cursor {
    /// The number of readings at or before `t`.
    fn upto(&mut self, r: &[(i64, f64)], t: i64) -> usize {
        while self.n < r.len() && r[self.n].0 <= t {
            self.n += 1;
        }
        while self.n > 0 && r[self.n - 1].0 > t {
            self.n -= 1;
        }
        self.n
    }

    /// The number of readings strictly before `t`.
    fn before(&mut self, r: &[(i64, f64)], t: i64) -> usize {
        while self.n < r.len() && r[self.n].0 < t {
            self.n += 1;
        }
        while self.n > 0 && r[self.n - 1].0 >= t {
            self.n -= 1;
        }
        self.n
    }
}

/// Consumption in each period between consecutive `bounds` (milliseconds, increasing), in one
/// pass over the readings and the bounds.
pub fn consumption(readings: &[(i64, f64)], bounds: &[i64], max_gap_ms: i64) -> Consumption {
    let (r, rejected_readings) = clean(readings);
    let n_periods = bounds.len().saturating_sub(1);
    let mut periods = Vec::with_capacity(n_periods);
    // big[k] = number of gaps longer than max_gap among the first k reading pairs;
    // est[k] = the counter increase across those gaps.
    let mut big = Vec::with_capacity(r.len());
    let mut est = Vec::with_capacity(r.len());
    big.push(0usize);
    est.push(0.0f64);
    for w in r.windows(2) {
        let is_big = w[1].0 - w[0].0 > max_gap_ms;
        let last = *big.last().unwrap_or(&0);
        big.push(last + usize::from(is_big));
        let last_e = *est.last().unwrap_or(&0.0);
        est.push(last_e + if is_big { w[1].1 - w[0].1 } else { 0.0 });
    }
    // Counter increase across long gaps up to `t` (within the readings' span), `j` readings at
    // or before `t`, `value` the counter at `t`.
    let est_at = |j: usize, value: f64| -> f64 {
        let j = j.max(1) - 1;
        let base = est[j];
        match r.get(j + 1) {
            Some(&(t1, _)) if t1 - r[j].0 > max_gap_ms => base + (value - r[j].1),
            _ => base,
        }
    };
    let (mut at_lo, mut at_hi, mut before_hi) = (Cursor { n: 0 }, Cursor { n: 0 }, Cursor { n: 0 });
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let Some((lo, hi)) = covered(&r, a, b) else {
            periods.push(EMPTY);
            continue;
        };
        let (j_lo, j_hi) = (at_lo.upto(&r, lo), at_hi.upto(&r, hi));
        let (c_lo, c_hi) = (interpolate(&r, j_lo, lo), interpolate(&r, j_hi, hi));
        let value = c_hi - c_lo;
        // Pairs overlapping (lo, hi): from the pair containing lo to the pair containing hi.
        let i0 = j_lo.saturating_sub(1);
        let i1 = before_hi.before(&r, hi).min(r.len() - 1);
        let estimated = i1 > i0 && big[i1] - big[i0] > 0;
        let estimated_value = if estimated { (est_at(j_hi, c_hi) - est_at(j_lo, c_lo)).clamp(0.0, value.max(0.0)) } else { 0.0 };
        periods.push(PeriodConsumption { value, coverage: (hi - lo) as f64 / (b - a) as f64, estimated, estimated_value });
    }
    Consumption { periods, rejected_readings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    /// The previous algorithm, kept to check the one-pass one against: a binary search over the
    /// readings for every boundary (`at`, the pairs around `lo` and `hi`, `est_at`).
    fn by_search(readings: &[(i64, f64)], bounds: &[i64], max_gap_ms: i64) -> Consumption {
        // The counter at `t`: the same interpolation, the readings before `t` found by a search.
        fn at(r: &[(i64, f64)], t: i64) -> f64 {
            interpolate(r, r.partition_point(|&(rt, _)| rt <= t), t)
        }
        let (r, rejected_readings) = clean(readings);
        let mut periods = Vec::new();
        let mut big = vec![0usize];
        let mut est = vec![0.0f64];
        for w in r.windows(2) {
            let is_big = w[1].0 - w[0].0 > max_gap_ms;
            big.push(big[big.len() - 1] + usize::from(is_big));
            est.push(est[est.len() - 1] + if is_big { w[1].1 - w[0].1 } else { 0.0 });
        }
        let est_at = |t: i64| -> f64 {
            let j = r.partition_point(|&(rt, _)| rt <= t).max(1) - 1;
            let base = est[j];
            match r.get(j + 1) {
                Some(&(t1, _)) if t1 - r[j].0 > max_gap_ms => base + (at(&r, t) - r[j].1),
                _ => base,
            }
        };
        for w in bounds.windows(2) {
            let (a, b) = (w[0], w[1]);
            let Some((lo, hi)) = covered(&r, a, b) else {
                periods.push(EMPTY);
                continue;
            };
            let value = at(&r, hi) - at(&r, lo);
            let i0 = r.partition_point(|&(t, _)| t <= lo).saturating_sub(1);
            let i1 = r.partition_point(|&(t, _)| t < hi).min(r.len() - 1);
            let estimated = i1 > i0 && big[i1] - big[i0] > 0;
            let estimated_value = if estimated { (est_at(hi) - est_at(lo)).clamp(0.0, value.max(0.0)) } else { 0.0 };
            periods.push(PeriodConsumption { value, coverage: (hi - lo) as f64 / (b - a) as f64, estimated, estimated_value });
        }
        Consumption { periods, rejected_readings }
    }

    /// Both algorithms give the same figures, to the bit.
    fn same_bits(name: &str, readings: &[(i64, f64)], bounds: &[i64], max_gap_ms: i64) -> Result<(), String> {
        let (a, b) = (consumption(readings, bounds, max_gap_ms), by_search(readings, bounds, max_gap_ms));
        if a.rejected_readings != b.rejected_readings || a.periods.len() != b.periods.len() {
            return Err(format!("{name}: {a:?} vs {b:?}"));
        }
        for (k, (x, y)) in a.periods.iter().zip(&b.periods).enumerate() {
            let bits = |p: &PeriodConsumption| (p.value.to_bits(), p.coverage.to_bits(), p.estimated, p.estimated_value.to_bits());
            if bits(x) != bits(y) {
                return Err(format!("{name}, period {k}: one pass {x:?}, by search {y:?}"));
            }
        }
        Ok(())
    }

    /// Tricky series, as the engine builds them (raw readings through the meter's events into
    /// the continuous counter, then over hourly bounds): the one-pass computation gives the
    /// previous algorithm's figures to the bit. The figures themselves are checked by hand in
    /// the tests above and in `counter` and `ledger`; here only the sameness is.
    #[test]
    fn one_pass_equals_the_binary_search_on_tricky_series() {
        use crate::accounting::counter::{continuous, Event};
        use crate::accounting::ledger::{YearCalendar, MAX_GAP_MS};
        let m = 60_000;
        // A day of hourly bounds from -2 h (readings start before the window, as the engine
        // passes the reading before the year).
        let day: Vec<i64> = (-2..=24).map(|h| h * H).collect();
        // Roll-up pairs: each hour's first (:00) and last (:59) reading of a counter rising
        // `per_min` a minute, from hour `h0` to `h1`.
        let pairs = |h0: i64, h1: i64, v0: f64, per_min: f64| -> Vec<(i64, f64)> {
            (h0..h1).flat_map(|h| [(h * H, v0 + (h - h0) as f64 * 60.0 * per_min), (h * H + 59 * m, v0 + ((h - h0) as f64 * 60.0 + 59.0) * per_min)]).collect()
        };
        let mut gaps = pairs(-3, 5, 1000.0, 0.37);
        gaps.extend(pairs(10, 12, 2000.0, 0.37)); // 5 hours missing
        gaps.push((12 * H + 59 * m + MAX_GAP_MS, 2100.0)); // exactly the limit: no gap
        gaps.push((12 * H + 59 * m + 2 * MAX_GAP_MS + 1, 2150.0)); // one millisecond over: a gap
        gaps.extend(pairs(20, 30, 2300.0, 0.1)); // a gap across midnight of the window's end
        // 30 an hour from 99,950: the register (range 100,000.00) wraps at 00:40.
        let rollover: Vec<(i64, f64)> = pairs(-1, 8, 99_950.0, 0.5).into_iter().map(|(t, v)| (t, v.rem_euclid(100_000.0))).collect();
        let mut replaced = pairs(-1, 6, 500.0, 1.0);
        replaced.extend(pairs(6, 20, 3.0, 0.5).into_iter().map(|(t, v)| (t + 7 * m, v)));
        replaced.push((6 * H, 3.0)); // a reading at exactly the replacement time (old meter's last: 919 at 05:59)
        replaced.sort_by_key(|r| r.0);
        let mut down = pairs(-1, 24, 800.0, 0.2);
        down[6].1 = 0.0; // a bad zero
        down[9].1 = 1e6; // a spike
        for r in down.iter_mut().skip(30) {
            r.1 -= 500.0; // an unexplained decrease, rising again
        }
        type Case = (&'static str, Vec<(i64, f64)>, Vec<Event>, Option<f64>);
        let tricky: Vec<Case> = vec![
            ("no readings", vec![], vec![], None),
            ("one reading", vec![(3 * H + 5, 7.0)], vec![], None),
            ("readings only before and after the window", vec![(-5 * H, 1.0), (30 * H, 9.0)], vec![], None),
            ("readings on the bounds", (0..=24).map(|h| (h * H, h as f64 * 1.5)).collect(), vec![], None),
            ("starts and ends inside the window", pairs(3, 17, 42.0, 0.013), vec![], None),
            ("gaps", gaps.clone(), vec![], None),
            ("rollover", rollover, vec![], Some(99_999.99)),
            (
                "replacement, new ratio",
                replaced.clone(),
                vec![Event::Replacement { at: 6 * H, old_final: 925.0, new_initial: 3.0, multiplier: Some(2.0) }],
                None,
            ),
            ("replacement not recorded (counter going down)", replaced, vec![], None),
            ("bad zero, spike, unexplained decrease", down.clone(), vec![], None),
            (
                "exclusion and manual readings",
                down,
                vec![Event::Exclude { from: 4 * H, to: 7 * H }, Event::Reading { at: 8 * H, value: 900.0 }, Event::Reading { at: 23 * H + 30 * m, value: 1100.0 }],
                None,
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (name, raw, events, rollover) in &tricky {
            let c = continuous(raw, events, *rollover, None, 1.0);
            // The cases reach what they are named after.
            seen.extend(c.flags.iter().map(|f| format!("{f:?}").split([' ', '{']).next().unwrap_or_default().to_string()));
            if c.rejected > 0 {
                seen.insert("rejected".into());
            }
            let periods = consumption(&c.readings, &day, MAX_GAP_MS).periods;
            if periods.iter().any(|p| p.estimated && p.estimated_value > 0.0) {
                seen.insert("estimated".into());
            }
            if periods.iter().any(|p| p.coverage > 0.0 && p.coverage < 1.0) {
                seen.insert("partly covered".into());
            }
            same_bits(name, &c.readings, &day, MAX_GAP_MS).unwrap();
            // The raw readings straight (consumption cleans them itself).
            same_bits(&format!("{name}, raw"), raw, &day, MAX_GAP_MS).unwrap();
        }
        for what in ["Rollover", "Replacement", "Spike", "UnexplainedDecrease", "rejected", "estimated", "partly covered"] {
            assert!(seen.contains(what), "no case reaches {what}: {seen:?}");
        }
        // A whole local year, as the engine computes it.
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        let year: Vec<(i64, f64)> = gaps.iter().map(|&(t, v)| (cal.start() + 400 * H + t, v)).collect();
        same_bits("a year with gaps", &year, &cal.bounds, MAX_GAP_MS).unwrap();
        // Bounds that are not increasing still give the same answer (the cursor steps back).
        same_bits("bounds out of order", &gaps, &[5 * H, 2 * H, 2 * H, 11 * H, -H, 40 * H, 3 * H], MAX_GAP_MS).unwrap();
    }

    fn values(c: &Consumption) -> Vec<f64> {
        c.periods.iter().map(|p| (p.value * 1e9).round() / 1e9).collect()
    }

    #[test]
    fn interpolates_at_boundaries() {
        // Readings at 0:30 (10), 1:30 (20), 2:30 (40). Hours [1,2) and [2,3):
        // C(1:00) = 15, C(2:00) = 30, C(2:30) = 40 (last reading; the hour is half covered).
        let r = [(H / 2, 10.0), (3 * H / 2, 20.0), (5 * H / 2, 40.0)];
        let c = consumption(&r, &[H, 2 * H, 3 * H], 2 * H);
        assert_eq!(values(&c), vec![15.0, 10.0]);
        assert_eq!(c.periods[0].coverage, 1.0);
        assert_eq!(c.periods[1].coverage, 0.5);
        assert!(!c.periods[0].estimated);
    }

    #[test]
    fn a_bad_zero_is_not_a_reset() {
        // 100, 0 (bad), 110: the 0 is set aside; consumption is 10, not 110 or -100.
        let r = [(0, 100.0), (H, 0.0), (2 * H, 110.0)];
        let c = consumption(&r, &[0, 2 * H], H);
        assert_eq!(values(&c), vec![10.0]);
        assert_eq!(c.rejected_readings, 1);
    }

    #[test]
    fn a_gap_across_a_boundary_is_spread_and_marked() {
        // Readings at 0 (0) and 4h (40), gap limit 1h: each hour gets 10, all estimated,
        // and the total over the gap is exact.
        let r = [(0, 0.0), (4 * H, 40.0)];
        let c = consumption(&r, &[0, H, 2 * H, 3 * H, 4 * H], H);
        assert_eq!(values(&c), vec![10.0; 4]);
        assert!(c.periods.iter().all(|p| p.estimated));
        // With dense readings nothing is estimated.
        let dense: Vec<(i64, f64)> = (0..=16).map(|i| (i * H / 4, i as f64)).collect();
        let c = consumption(&dense, &[0, H, 2 * H], H);
        assert!(c.periods.iter().all(|p| !p.estimated));
        assert_eq!(values(&c), vec![4.0, 4.0]);
    }

    #[test]
    fn periods_without_readings_are_empty() {
        let r = [(10 * H, 5.0), (11 * H, 6.0)];
        let c = consumption(&r, &[0, H, 10 * H, 11 * H, 12 * H], H);
        assert_eq!(values(&c), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(c.periods[0].coverage, 0.0);
        assert_eq!(c.periods[2].coverage, 1.0);
        assert_eq!(consumption(&[], &[0, H], H).periods[0].coverage, 0.0);
    }

    proptest! {
        /// Any readings (going down, repeated times, gaps) and any increasing bounds: the
        /// one-pass computation gives the binary search's figures to the bit.
        #[test]
        fn one_pass_equals_the_binary_search(
            steps in proptest::collection::vec((0i64..4 * H, -20.0f64..100.0), 0..80),
            cuts in proptest::collection::vec(-10 * H..200 * H, 0..40),
            gap in 1i64..3 * H,
        ) {
            let mut t = 0;
            let mut v = 1000.0;
            let mut r = Vec::new();
            for (dt, dv) in steps {
                t += dt;
                v += dv;
                r.push((t, v));
            }
            let mut b = cuts;
            b.sort_unstable();
            if let Err(e) = same_bits("random", &r, &b, gap) {
                prop_assert!(false, "{}", e);
            }
        }

        /// Splitting a period never changes the total.
        #[test]
        fn splitting_a_period_keeps_the_total(
            steps in proptest::collection::vec((1i64..10 * H, 0.0f64..100.0), 1..50),
            cuts in proptest::collection::vec(0i64..200 * H, 0..10),
        ) {
            let mut t = 0;
            let mut v = 1000.0;
            let mut r = vec![(0, v)];
            for (dt, dv) in steps {
                t += dt;
                v += dv;
                r.push((t, v));
            }
            let end = t + H;
            let whole = consumption(&r, &[-H, end], 2 * H).periods[0].value;
            let mut b: Vec<i64> = cuts.into_iter().filter(|&c| c > -H && c < end).collect();
            b.push(-H);
            b.push(end);
            b.sort_unstable();
            b.dedup();
            let parts: f64 = consumption(&r, &b, 2 * H).periods.iter().map(|p| p.value).sum();
            prop_assert!((whole - parts).abs() < 1e-6 * whole.abs().max(1.0), "{} vs {}", whole, parts);
            prop_assert!((whole - (v - 1000.0)).abs() < 1e-6 * whole.abs().max(1.0));
        }
    }
}
