//! A meter's year: consumption per local day, with the estimated part and the coverage, and
//! per month and hour of the day (for time-of-use tariffs and night base load). Computed once
//! from the continuous counter ([`super::counter`]) over the year's local hours, so that every
//! coarser figure is a sum of the same hours: splitting a period never changes the total.

use chrono::{DateTime, Datelike, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::time::{boundaries, Interval, HOUR_MS};
use super::consumption::consumption;
use super::counter::{Flag, Rejected};

/// Readings further apart than this make the split of consumption between periods an estimate.
pub const MAX_GAP_MS: i64 = HOUR_MS;

/// The local hours of one calendar year, and which day, month and hour of day each is.
#[derive(Debug, Clone)]
pub struct YearCalendar {
    pub year: i32,
    /// Hour boundaries, milliseconds: `hours() + 1` of them.
    pub bounds: Vec<i64>,
    pub hour_day: Vec<u16>,
    pub hour_month: Vec<u8>,
    pub hour_of_day: Vec<u8>,
    /// Start of each local day, and the year's end.
    pub day_bounds: Vec<i64>,
    pub day_month: Vec<u8>,
}

impl YearCalendar {
    pub fn new(tz: Tz, year: i32) -> Option<YearCalendar> {
        let start = tz.with_ymd_and_hms(year, 1, 1, 0, 0, 0).earliest()?;
        let end = tz.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).earliest()?;
        let hours = boundaries(start, end, Interval::Hour, 9000)?;
        let days = boundaries(start, end, Interval::Day, 400)?;
        let local = |ms: i64| -> Option<DateTime<Tz>> { DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz)) };
        let mut cal = YearCalendar {
            year,
            bounds: hours.iter().map(DateTime::timestamp_millis).collect(),
            hour_day: Vec::with_capacity(hours.len()),
            hour_month: Vec::with_capacity(hours.len()),
            hour_of_day: Vec::with_capacity(hours.len()),
            day_bounds: days.iter().map(DateTime::timestamp_millis).collect(),
            day_month: Vec::with_capacity(days.len()),
        };
        for h in &hours[..hours.len() - 1] {
            cal.hour_day.push(u16::try_from(h.ordinal0()).ok()?);
            cal.hour_month.push(u8::try_from(h.month0()).ok()?);
            cal.hour_of_day.push(u8::try_from(h.hour()).ok()?);
        }
        for d in &days[..days.len() - 1] {
            cal.day_month.push(u8::try_from(local(d.timestamp_millis())?.month0()).ok()?);
        }
        Some(cal)
    }

    pub fn days(&self) -> usize {
        self.day_month.len()
    }
    pub fn start(&self) -> i64 {
        self.bounds[0]
    }
    pub fn end(&self) -> i64 {
        *self.bounds.last().unwrap_or(&0)
    }
    /// Days of the year begun before `t` (0..=days).
    pub fn days_before(&self, t: i64) -> usize {
        self.day_bounds[..self.days()].partition_point(|&d| d < t)
    }
}

/// Consumption per day (value, estimated part, coverage 0..=1) and per (month, hour of day).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub value: Vec<f64>,
    pub estimated: Vec<f64>,
    pub coverage: Vec<f64>,
    pub hod: Vec<[f64; 24]>,
}

impl Series {
    pub fn zero(days: usize) -> Series {
        Series { value: vec![0.0; days], estimated: vec![0.0; days], coverage: vec![0.0; days], hod: vec![[0.0; 24]; 12] }
    }

    pub fn total(&self) -> f64 {
        self.value.iter().sum()
    }
    pub fn estimated_total(&self) -> f64 {
        self.estimated.iter().sum()
    }
    /// Sum of days `[from, to)`.
    pub fn sum(&self, from: usize, to: usize) -> f64 {
        self.value[from.min(self.value.len())..to.min(self.value.len())].iter().sum()
    }
    /// Mean coverage of days `[from, to)`.
    pub fn coverage_of(&self, from: usize, to: usize) -> f64 {
        let c = &self.coverage[from.min(self.coverage.len())..to.min(self.coverage.len())];
        if c.is_empty() {
            0.0
        } else {
            c.iter().sum::<f64>() / c.len() as f64
        }
    }
    /// Per month of the calendar.
    pub fn months(&self, cal: &YearCalendar) -> [f64; 12] {
        let mut m = [0.0; 12];
        for (d, v) in self.value.iter().enumerate() {
            m[usize::from(cal.day_month[d])] += v;
        }
        m
    }

    /// `self += k * other` (coverage: `self` keeps the minimum, a chain is as covered as its
    /// weakest meter; estimated parts add up in absolute value).
    pub fn add_scaled(&mut self, other: &Series, k: f64, first: bool) {
        for d in 0..self.value.len().min(other.value.len()) {
            self.value[d] += k * other.value[d];
            self.estimated[d] += k.abs() * other.estimated[d];
            self.coverage[d] = if first { other.coverage[d] } else { self.coverage[d].min(other.coverage[d]) };
        }
        for (a, b) in self.hod.iter_mut().zip(&other.hod) {
            for h in 0..24 {
                a[h] += k * b[h];
            }
        }
    }
}

/// A stretch between two readings further apart than [`MAX_GAP_MS`]: the consumption across it
/// is known exactly (the counter at both ends), its split between hours is spread and estimated.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// The readings at both ends, milliseconds.
    pub from: i64,
    pub to: i64,
    /// The counter increase across the gap (counter units before the multiplier).
    pub estimated: f64,
}

/// One meter's year, in counter units before the multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterYear {
    pub series: Series,
    pub flags: Vec<Flag>,
    /// Readings of the year set aside (the length of `rejected_readings`).
    pub rejected: usize,
    /// Each of them, with its time, value and why.
    pub rejected_readings: Vec<Rejected>,
    /// Gaps that overlap the year.
    pub gaps: Vec<Gap>,
}

/// Computes a meter's year from its continuous counter readings (covering the year and the
/// readings just around it).
pub fn meter_year(readings: &[(i64, f64)], cal: &YearCalendar, flags: Vec<Flag>, rejected: Vec<Rejected>) -> MeterYear {
    let c = consumption(readings, &cal.bounds, MAX_GAP_MS);
    let mut s = Series::zero(cal.days());
    let mut hours_in_day = vec![0u32; cal.days()];
    for (h, p) in c.periods.iter().enumerate() {
        let d = usize::from(cal.hour_day[h]).min(cal.days() - 1);
        s.value[d] += p.value;
        s.estimated[d] += p.estimated_value;
        s.coverage[d] += p.coverage;
        hours_in_day[d] += 1;
        s.hod[usize::from(cal.hour_month[h])][usize::from(cal.hour_of_day[h])] += p.value;
    }
    for (c, n) in s.coverage.iter_mut().zip(hours_in_day) {
        *c /= f64::from(n.max(1));
    }
    let y0 = cal.start();
    let y1 = cal.end();
    let flags = flags.into_iter().filter(|f| (y0..y1).contains(&f.at())).collect();
    let rejected_readings: Vec<Rejected> = rejected.into_iter().filter(|r| (y0..y1).contains(&r.at)).collect();
    let gaps = readings
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 > MAX_GAP_MS && w[1].0 > y0 && w[0].0 < y1)
        .map(|w| Gap { from: w[0].0, to: w[1].0, estimated: w[1].1 - w[0].1 })
        .collect();
    MeterYear { series: s, flags, rejected: rejected_readings.len() + c.rejected_readings, rejected_readings, gaps }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As of: the start of the local day, whatever the time of day asked or given.
    /// 2026-03-10 in chrono_tz::Asia::Shanghai starts at 2026-03-09T16:00Z = 1 773 072 000 000 ms; the days of 2026
    /// before it are 31 (Jan) + 28 (Feb) + 9 = 68.
    #[test]
    fn as_of_is_the_start_of_the_local_day() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        let want = 1_773_072_000_000;
        for given in [None, Some("2026-03-10"), Some("2026-03-10T15:00:00+08:00"), Some("2026-03-10T01:00:00Z")] {
            assert_eq!(crate::time::as_of_cut(chrono_tz::Asia::Shanghai, today, given).unwrap(), (today, want), "{given:?}");
        }
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2026).unwrap();
        assert_eq!(cal.days_before(want), 68);
        // Later in the day the figures are the same: the day is not counted before it is over.
        assert_eq!(cal.days_before(want + 15 * 3_600_000), 69);
        assert!(crate::time::as_of_cut(chrono_tz::Asia::Shanghai, today, Some("soon")).is_err());
    }

    #[test]
    fn a_year_has_its_days_and_hours() {
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2024).unwrap();
        assert_eq!(cal.days(), 366);
        assert_eq!(cal.bounds.len(), 366 * 24 + 1);
        // 2024-01-01T00:00+08:00.
        assert_eq!(cal.start(), 1_704_038_400_000);
        assert_eq!(cal.day_month[31], 1);
        assert_eq!(cal.hour_of_day[25], 1);
        assert_eq!(cal.days_before(cal.start()), 0);
        assert_eq!(cal.days_before(cal.start() + 86_400_000), 1);
        assert_eq!(cal.days_before(cal.end() + 1), 366);
    }

    #[test]
    fn a_gap_across_midnight_is_spread_and_marked_estimated() {
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        let d = 86_400_000;
        let h = 3_600_000;
        let t0 = cal.start();
        // Readings every hour on day 0 until 20:00 (counter 0 → 20, 1 per hour), then none until
        // 04:00 on day 1 (counter 36: 16 over 8 hours), hourly again to the end of day 1 (56).
        let mut r: Vec<(i64, f64)> = (0..=20).map(|i| (t0 + i * h, i as f64)).collect();
        r.extend((28..=48).map(|i| (t0 + i * h, 36.0 + (i - 28) as f64)));
        let y = meter_year(&r, &cal, vec![], vec![]);
        // One gap, from 20:00 on day 0 to 04:00 on day 1, 16 units across it.
        assert_eq!(y.gaps, vec![Gap { from: t0 + 20 * h, to: t0 + 28 * h, estimated: 16.0 }]);
        // Day 0: 20 measured + 4 of the 16 spread over 20:00-24:00 (2 per hour) = 28? No: the gap
        // is 8 hours for 16 units, 2 per hour, so 20:00-24:00 gets 8: day 0 = 20 + 8 = 28.
        assert!((y.series.value[0] - 28.0).abs() < 1e-9, "{}", y.series.value[0]);
        assert!((y.series.estimated[0] - 8.0).abs() < 1e-9);
        // Day 1: 8 estimated (00:00-04:00) + 20 measured (04:00-24:00) = 28.
        assert!((y.series.value[1] - 28.0).abs() < 1e-9);
        assert!((y.series.estimated[1] - 8.0).abs() < 1e-9);
        assert_eq!(y.series.coverage[0], 1.0);
        assert_eq!(y.series.coverage[2], 0.0);
        assert!((y.series.total() - 56.0).abs() < 1e-9);
        let _ = d;
    }
}
