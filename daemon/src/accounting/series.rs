//! A series at a step (`GET /api/v1/series?step=..&agg=..`): the readings of each step from the
//! range's start summarised ([`crate::store::HourRollup`], merged), and one aggregate of each.
//! Whole-hour steps over a whole-hour range are summed from the stored hourly roll-ups
//! ([`from_rollups`]); otherwise by a backend that aggregates itself (InfluxDB: GROUP BY time),
//! else from the readings. Without a step, the readings themselves, at most [`MAX_RAW_POINTS`].

use std::collections::BTreeMap;

use energy_wire::Quantity;

use crate::store::HourRollup;
use crate::store::{Store, StoreError};
use crate::time::{hour_of, HOUR_MS};

/// Most raw points one series query returns without a step.
pub const MAX_RAW_POINTS: usize = 200_000;

/// Why a series has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("{0} points in range, more than {MAX_RAW_POINTS}; give a step (e.g. step=1h) or a narrower range")]
    TooManyPoints(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The points `(time, value)` of a meter's quantity over `[from, to)` (ms): each step's
/// aggregate `agg` at the step's start, or without a step the readings.
pub async fn points(store: &Store, meter: &str, q: Quantity, (from, to): (i64, i64), step: Option<i64>, agg: Agg) -> Result<Vec<(i64, f64)>, SeriesError> {
    let of_steps = |steps: Vec<(i64, HourRollup)>| steps.into_iter().map(|(k, r)| (k, agg.of(&r))).collect();
    if let Some(step) = step.filter(|&st| from_rollups(st, from, to)) {
        return Ok(of_steps(rollups_by_step(store.rollups(meter, q, from, to).await?, from, step)));
    }
    if let Some(step) = step {
        if let Some(rows) = store.aggregate(meter, q, from, to, step, agg.as_str()).await? {
            return Ok(rows);
        }
    }
    let pts = store.points(meter, q, from, to).await?;
    match step {
        None if pts.len() > MAX_RAW_POINTS => Err(SeriesError::TooManyPoints(pts.len())),
        None => Ok(pts),
        Some(step) => Ok(of_steps(points_by_step(&pts, from, step))),
    }
}

/// The aggregate of each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Min,
    Max,
    Last,
    First,
    Sum,
    Count,
}

/// An aggregate that is not one of [`Agg`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agg `{0}` is not one of mean, min, max, last, first, sum, count")]
pub struct UnknownAgg(pub String);

impl std::str::FromStr for Agg {
    type Err = UnknownAgg;
    fn from_str(s: &str) -> Result<Agg, UnknownAgg> {
        Ok(match s {
            "mean" => Agg::Mean,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "last" => Agg::Last,
            "first" => Agg::First,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            _ => return Err(UnknownAgg(s.to_string())),
        })
    }
}

impl Agg {
    pub fn as_str(self) -> &'static str {
        match self {
            Agg::Mean => "mean",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Last => "last",
            Agg::First => "first",
            Agg::Sum => "sum",
            Agg::Count => "count",
        }
    }

    /// The aggregate of a summary (its `hour` field is unused here).
    pub fn of(self, r: &HourRollup) -> f64 {
        match self {
            Agg::Min => r.min,
            Agg::Max => r.max,
            Agg::Last => r.last_v,
            Agg::First => r.first_v,
            Agg::Sum => r.sum,
            Agg::Count => r.count as f64,
            Agg::Mean => r.mean(),
        }
    }
}

/// Whether a step over `[from, to)` is summed from the hourly roll-ups: a whole number of hours
/// over a range from and to whole hours.
pub fn from_rollups(step: i64, from: i64, to: i64) -> bool {
    step % HOUR_MS == 0 && from == hour_of(from) && to == hour_of(to)
}

/// Summaries `(time, summary)` merged per step of `step` ms from `origin`, by step start.
pub fn by_step(items: impl IntoIterator<Item = (i64, HourRollup)>, origin: i64, step: i64) -> Vec<(i64, HourRollup)> {
    let mut buckets: BTreeMap<i64, HourRollup> = BTreeMap::new();
    for (t, r) in items {
        let k = origin + (t - origin).div_euclid(step) * step;
        buckets.entry(k).and_modify(|x| *x = x.merge(&r)).or_insert(r);
    }
    buckets.into_iter().collect()
}

/// [`by_step`] of the hourly roll-ups (each at its hour).
pub fn rollups_by_step(rollups: Vec<HourRollup>, origin: i64, step: i64) -> Vec<(i64, HourRollup)> {
    by_step(rollups.into_iter().map(|r| (r.hour, r)), origin, step)
}

/// [`by_step`] of readings.
pub fn points_by_step(points: &[(i64, f64)], origin: i64, step: i64) -> Vec<(i64, HourRollup)> {
    by_step(points.iter().map(|&(t, v)| (t, HourRollup::of_point(t, v))), origin, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;

    /// Readings at 0:10 (1), 0:50 (3), 1:20 (5), 2:30 (4) in steps of 2 h from 0:00:
    /// [0, 2h) holds 1, 3, 5 (mean 3, sum 9, first 1, last 5); [2h, 4h) holds 4.
    #[test]
    fn steps_worked_by_hand() {
        let m = 60_000;
        let pts = [(10 * m, 1.0), (50 * m, 3.0), (H + 20 * m, 5.0), (2 * H + 30 * m, 4.0)];
        let steps = points_by_step(&pts, 0, 2 * H);
        assert_eq!(steps.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [0, 2 * H]);
        let first = &steps[0].1;
        let got: Vec<f64> = [Agg::Mean, Agg::Min, Agg::Max, Agg::First, Agg::Last, Agg::Sum, Agg::Count].iter().map(|a| a.of(first)).collect();
        assert_eq!(got, [3.0, 1.0, 5.0, 1.0, 5.0, 9.0, 3.0]);
        assert_eq!(Agg::Mean.of(&steps[1].1), 4.0);
        // The same from the hours' roll-ups.
        let hours = crate::store::rollups_of(&pts);
        assert_eq!(rollups_by_step(hours, 0, 2 * H), steps);
        assert!(from_rollups(2 * H, 0, 4 * H) && !from_rollups(90 * m, 0, 4 * H) && !from_rollups(H, m, 4 * H));
        assert_eq!("median".parse::<Agg>().unwrap_err().to_string(), "agg `median` is not one of mean, min, max, last, first, sum, count");
    }
}
