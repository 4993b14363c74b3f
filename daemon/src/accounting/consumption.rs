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

/// Counter value at `t` by linear interpolation; `t` must lie within the readings' span.
fn at(r: &[(i64, f64)], t: i64) -> f64 {
    let j = r.partition_point(|&(rt, _)| rt <= t);
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

/// Consumption in each period between consecutive `bounds` (milliseconds, increasing).
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
    // Counter increase across long gaps up to `t` (within the readings' span).
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
        let empty = PeriodConsumption { value: 0.0, coverage: 0.0, estimated: false, estimated_value: 0.0 };
        let (Some(&(first, _)), Some(&(last, _))) = (r.first(), r.last()) else {
            periods.push(empty);
            continue;
        };
        let lo = a.max(first);
        let hi = b.min(last);
        if hi <= lo || b <= a {
            periods.push(empty);
            continue;
        }
        let value = at(&r, hi) - at(&r, lo);
        // Pairs overlapping (lo, hi): from the pair containing lo to the pair containing hi.
        let i0 = r.partition_point(|&(t, _)| t <= lo).saturating_sub(1);
        let i1 = r.partition_point(|&(t, _)| t < hi).min(r.len() - 1);
        let estimated = i1 > i0 && big[i1] - big[i0] > 0;
        let estimated_value = if estimated { (est_at(hi) - est_at(lo)).clamp(0.0, value.max(0.0)) } else { 0.0 };
        periods.push(PeriodConsumption { value, coverage: (hi - lo) as f64 / (b - a) as f64, estimated, estimated_value });
    }
    Consumption { periods, rejected_readings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

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
