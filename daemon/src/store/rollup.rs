//! The store's row type: the hourly roll-up of a series.
//!
//! A roll-up summarises the readings of one series in one UTC hour `[hour, hour + 1 h)`: first and
//! last reading (time and value), minimum, maximum, sum and count. Roll-ups are mergeable:
//! [`HourRollup::merge`] is associative and commutative, so roll-ups kept up to date at ingest
//! give, for any arrival order of the same distinct points, the roll-up computed from all of them
//! at once. (The store merges only points it did not have; a point that replaces a different
//! stored value makes the store recompute that hour from its readings.) Consumption from
//! roll-ups is accounting's business (`accounting::rollup`).

use energy_wire::time::hour_of;

/// Summary of the readings of one series in one hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourRollup {
    /// Start of the hour, milliseconds since the epoch.
    pub hour: i64,
    pub first_ts: i64,
    pub first_v: f64,
    pub last_ts: i64,
    pub last_v: f64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

impl HourRollup {
    /// The roll-up of one reading.
    pub fn of_point(ts: i64, v: f64) -> HourRollup {
        HourRollup { hour: hour_of(ts), first_ts: ts, first_v: v, last_ts: ts, last_v: v, min: v, max: v, sum: v, count: 1 }
    }

    /// The roll-up of readings of one hour (any order, distinct times); `None` when empty.
    pub fn of_points(points: &[(i64, f64)]) -> Option<HourRollup> {
        let (&(t, v), rest) = points.split_first()?;
        Some(rest.iter().fold(HourRollup::of_point(t, v), |acc, &(t, v)| acc.merge(&HourRollup::of_point(t, v))))
    }

    /// Both roll-ups together; they must be of the same hour and of distinct readings.
    /// Associative and commutative; ties on time keep the smaller value, so that the result does
    /// not depend on the order even for inconsistent input.
    pub fn merge(&self, o: &HourRollup) -> HourRollup {
        let (first_ts, first_v) = earlier((self.first_ts, self.first_v), (o.first_ts, o.first_v));
        let (last_ts, last_v) = later((self.last_ts, self.last_v), (o.last_ts, o.last_v));
        HourRollup {
            hour: self.hour.min(o.hour),
            first_ts,
            first_v,
            last_ts,
            last_v,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            sum: self.sum + o.sum,
            count: self.count + o.count,
        }
    }

    /// Mean of the readings.
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// The first and last reading of an hour: what consumption between hour-aligned boundaries
/// needs of its roll-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourEnds {
    /// Start of the hour, milliseconds since the epoch.
    pub hour: i64,
    pub first_ts: i64,
    pub first_v: f64,
    pub last_ts: i64,
    pub last_v: f64,
}

impl HourEnds {
    /// Both ends together, as [`HourRollup::merge`] takes them (the same hour, distinct readings).
    pub fn merge(&self, o: &HourEnds) -> HourEnds {
        let (first_ts, first_v) = earlier((self.first_ts, self.first_v), (o.first_ts, o.first_v));
        let (last_ts, last_v) = later((self.last_ts, self.last_v), (o.last_ts, o.last_v));
        HourEnds { hour: self.hour.min(o.hour), first_ts, first_v, last_ts, last_v }
    }
}

impl From<&HourRollup> for HourEnds {
    fn from(h: &HourRollup) -> HourEnds {
        HourEnds { hour: h.hour, first_ts: h.first_ts, first_v: h.first_v, last_ts: h.last_ts, last_v: h.last_v }
    }
}

/// The first and last readings of a series' hours, by hour, in columns (one array per field,
/// not a struct per hour).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourColumns {
    pub hour: Vec<i64>,
    pub first_ts: Vec<i64>,
    pub first_v: Vec<f64>,
    pub last_ts: Vec<i64>,
    pub last_v: Vec<f64>,
}

impl HourColumns {
    /// Room for `n` hours.
    pub fn with_capacity(n: usize) -> HourColumns {
        HourColumns {
            hour: Vec::with_capacity(n),
            first_ts: Vec::with_capacity(n),
            first_v: Vec::with_capacity(n),
            last_ts: Vec::with_capacity(n),
            last_v: Vec::with_capacity(n),
        }
    }

    #[inline]
    pub fn push(&mut self, h: HourEnds) {
        self.hour.push(h.hour);
        self.first_ts.push(h.first_ts);
        self.first_v.push(h.first_v);
        self.last_ts.push(h.last_ts);
        self.last_v.push(h.last_v);
    }

    pub fn len(&self) -> usize {
        self.hour.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hour.is_empty()
    }
}

impl<'a> FromIterator<&'a HourRollup> for HourColumns {
    fn from_iter<I: IntoIterator<Item = &'a HourRollup>>(it: I) -> HourColumns {
        let mut c = HourColumns::default();
        for h in it {
            c.push(HourEnds::from(h));
        }
        c
    }
}

fn earlier(a: (i64, f64), b: (i64, f64)) -> (i64, f64) {
    if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
        b
    } else {
        a
    }
}

fn later(a: (i64, f64), b: (i64, f64)) -> (i64, f64) {
    if b.0 > a.0 || (b.0 == a.0 && b.1 > a.1) {
        b
    } else {
        a
    }
}

/// Roll-ups of readings sorted by time, one per hour that has readings.
pub fn rollups_of(readings: &[(i64, f64)]) -> Vec<HourRollup> {
    let mut out: Vec<HourRollup> = Vec::new();
    for &(t, v) in readings {
        let r = HourRollup::of_point(t, v);
        match out.last_mut() {
            Some(last) if last.hour == r.hour => *last = last.merge(&r),
            _ => out.push(r),
        }
    }
    out
}
