//! Building views for dashboards, from the hourly roll-ups (served by `api/profile.rs`):
//!
//! * the summary: per carrier, consumption today and this month so far against the same
//!   periods last year, and the live electric power;
//! * the load profile: the mean load by hour of the week over the last weeks, and the night
//!   base load of each day.
//!
//! A building's consumption here is the sum of its top meters ([`is_top`]: physical meters
//! without a parent meter, accounted), so sub-meters are not counted twice; each meter's hourly
//! consumption is [`super::rollup::hourly_consumption`].
//!
//! The rules are pure functions of plain values (meters, roll-ups, the time zone, the time);
//! [`summary`] and [`profile`] read the store and apply them.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use energy_wire::time::HOUR_MS;
use energy_wire::{Carrier, Quantity};

use super::rollup::hourly_consumption;
use crate::registry::{Meter, Registry};
use crate::store::{HourRollup, Store, StoreError};

/// Why a building view cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum BuildingError {
    #[error("building `{0}` is not in the registry")]
    UnknownBuilding(String),
    /// A date the view starts from has no local midnight in the time zone.
    #[error("no local midnight")]
    NoMidnight,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a meter's consumption makes its building's: a physical meter (not virtual), without
/// a parent meter (a sub-meter's consumption is already in its parent's), accounted.
pub fn is_top(m: &Meter) -> bool {
    !m.is_virtual() && m.parent.is_none() && m.accounted
}

/// The top meters ([`is_top`]) of a building, in the registry's order.
pub fn top_meters<'a>(reg: &'a Registry, building: &str) -> Result<Vec<&'a Meter>, BuildingError> {
    reg.building(building).ok_or_else(|| BuildingError::UnknownBuilding(building.to_string()))?;
    Ok(reg.meters_of_building(building).into_iter().filter(|m| is_top(m)).collect())
}

/// Hourly consumption of several meters (each its hourly roll-ups and multiplier) summed, over
/// the hours starting in `[from, to)`.
pub fn summed_hours<'a>(meters: impl IntoIterator<Item = (&'a [HourRollup], f64)>, from: i64, to: i64) -> BTreeMap<i64, f64> {
    let mut out: BTreeMap<i64, f64> = BTreeMap::new();
    for (rollups, multiplier) in meters {
        for (h, v) in hourly_consumption(rollups, multiplier) {
            if h >= from && h < to {
                *out.entry(h).or_default() += v;
            }
        }
    }
    out
}

/// The instant (ms) of a date's local midnight; `None` for a midnight the time zone skips.
pub fn local_midnight(tz: Tz, d: NaiveDate) -> Option<i64> {
    d.and_hms_opt(0, 0, 0).and_then(|t| tz.from_local_datetime(&t).earliest()).map(|t| t.timestamp_millis())
}

/// The same date a year before; 29 February gives the 365th day before it (1 March).
pub fn same_day_last_year(d: NaiveDate) -> NaiveDate {
    d.with_year(d.year() - 1).unwrap_or_else(|| d - chrono::Duration::days(365))
}

/// Change of `now` against `before`, percent; `None` when there is nothing to compare with.
pub fn change_pct(now: f64, before: f64) -> Option<f64> {
    (before > 0.0).then(|| (now / before - 1.0) * 100.0)
}

/// The windows (`[from, to)`, ms) the summary compares: today and this month so far (to the end
/// of the current hour), and the same spans of time from the same day and the same month's
/// first day last year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryWindows {
    pub today: (i64, i64),
    pub today_last_year: (i64, i64),
    pub month: (i64, i64),
    pub month_last_year: (i64, i64),
}

/// [`SummaryWindows`] at `now`; `None` when one of the four days has no local midnight.
pub fn summary_windows(tz: Tz, now: DateTime<Utc>) -> Option<SummaryWindows> {
    let now_ms = now.timestamp_millis();
    let today = now.with_timezone(&tz).date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let day0 = local_midnight(tz, today)?;
    let month0 = local_midnight(tz, first)?;
    let ly_day0 = local_midnight(tz, same_day_last_year(today))?;
    let ly_month0 = local_midnight(tz, same_day_last_year(first))?;
    Some(SummaryWindows {
        today: (day0, now_ms + HOUR_MS),
        today_last_year: (ly_day0, ly_day0 + (now_ms - day0)),
        month: (month0, now_ms + HOUR_MS),
        month_last_year: (ly_month0, ly_month0 + (now_ms - month0)),
    })
}

/// The carriers of some meters, each once, in the carriers' order.
pub fn carriers_of(meters: &[&Meter]) -> Vec<Carrier> {
    let mut carriers: Vec<Carrier> = meters.iter().map(|m| m.carrier).collect();
    carriers.sort();
    carriers.dedup();
    carriers
}

/// The newest active power of some meters (each its active-power roll-ups and multiplier),
/// summed: the last reading of each meter's last roll-up; `None` when no meter has one.
pub fn live_power<'a>(meters: impl IntoIterator<Item = (&'a [HourRollup], f64)>) -> Option<f64> {
    let mut total: Option<f64> = None;
    for (rollups, multiplier) in meters {
        if let Some(last) = rollups.last() {
            *total.get_or_insert(0.0) += last.last_v * multiplier;
        }
    }
    total
}

/// One carrier of a building's summary, in the carrier's counter unit.
#[derive(Debug, Clone, PartialEq)]
pub struct CarrierSummary {
    pub carrier: Carrier,
    pub today: f64,
    pub today_last_year: f64,
    pub month: f64,
    pub month_last_year: f64,
}

impl CarrierSummary {
    pub fn today_change_pct(&self) -> Option<f64> {
        change_pct(self.today, self.today_last_year)
    }
    pub fn month_change_pct(&self) -> Option<f64> {
        change_pct(self.month, self.month_last_year)
    }
}

/// A building's summary at an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildingSummary {
    pub items: Vec<CarrierSummary>,
    /// Newest active power of the electricity top meters, kW.
    pub live_power_kw: Option<f64>,
}

/// The hourly consumption of `meters` summed over `[from, to)`, read from the store.
async fn read_summed(store: &Store, meters: &[&Meter], (from, to): (i64, i64)) -> Result<BTreeMap<i64, f64>, StoreError> {
    let mut rollups = Vec::with_capacity(meters.len());
    for m in meters {
        rollups.push((store.rollups(&m.id, m.counter(), from, to + HOUR_MS).await?, m.multiplier));
    }
    Ok(summed_hours(rollups.iter().map(|(r, k)| (r.as_slice(), *k)), from, to))
}

/// The summary of a building at `now`: [`top_meters`], [`summary_windows`], [`live_power`]
/// over the last hour's roll-ups of its electricity meters.
pub async fn summary(store: &Store, reg: &Registry, tz: Tz, building: &str, now: DateTime<Utc>) -> Result<BuildingSummary, BuildingError> {
    let meters = top_meters(reg, building)?;
    let w = summary_windows(tz, now).ok_or(BuildingError::NoMidnight)?;
    let total = |hours: BTreeMap<i64, f64>| hours.values().sum::<f64>();
    let mut items = Vec::new();
    for carrier in carriers_of(&meters) {
        let ms: Vec<&Meter> = meters.iter().copied().filter(|m| m.carrier == carrier).collect();
        items.push(CarrierSummary {
            carrier,
            today: total(read_summed(store, &ms, w.today).await?),
            today_last_year: total(read_summed(store, &ms, w.today_last_year).await?),
            month: total(read_summed(store, &ms, w.month).await?),
            month_last_year: total(read_summed(store, &ms, w.month_last_year).await?),
        });
    }
    let now_ms = now.timestamp_millis();
    let mut power = Vec::new();
    for m in meters.iter().filter(|m| m.carrier == Carrier::Electricity) {
        power.push((store.rollups(&m.id, Quantity::ActivePower, now_ms - HOUR_MS, now_ms + HOUR_MS).await?, m.multiplier));
    }
    let live_power_kw = live_power(power.iter().map(|(r, k)| (r.as_slice(), *k)));
    Ok(BuildingSummary { items, live_power_kw })
}

/// The window (`[from, to)`, ms) of a load profile: the `weeks` whole weeks of days before
/// `today`; `None` when one of the two midnights does not exist.
pub fn profile_window(tz: Tz, today: NaiveDate, weeks: i64) -> Option<(i64, i64)> {
    let from = local_midnight(tz, today - chrono::Duration::days(weeks * 7))?;
    let to = local_midnight(tz, today)?;
    Some((from, to))
}

/// The mean consumption of one hour of the week (Monday 0 h = 0, Sunday 23 h = 167).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourOfWeek {
    pub how: usize,
    pub mean: f64,
    /// Hours the mean is over.
    pub samples: u32,
}

/// The night base load of one local date: the mean consumption per hour of its night hours.
#[derive(Debug, Clone, PartialEq)]
pub struct NightBase {
    pub date: NaiveDate,
    /// The date's local midnight.
    pub midnight: Option<DateTime<Tz>>,
    pub base: f64,
}

/// A building's load profile: the hours of the week that have data, in order, and the dates
/// whose night hours all have data, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProfile {
    pub hour_of_week: Vec<HourOfWeek>,
    pub night_base: Vec<NightBase>,
}

/// The load profile of hourly consumption `cons` (hour start ms -> consumption), in local time;
/// the night is the local hours `night[0]..night[1]`.
pub fn load_profile(cons: &BTreeMap<i64, f64>, tz: Tz, night: [u32; 2]) -> LoadProfile {
    let mut how: [(f64, u32); 168] = [(0.0, 0); 168];
    let mut nights: BTreeMap<NaiveDate, (f64, u32)> = BTreeMap::new();
    for (h, v) in cons {
        let Some(t) = DateTime::from_timestamp_millis(*h).map(|t| t.with_timezone(&tz)) else { continue };
        let i = t.weekday().num_days_from_monday() as usize * 24 + t.hour() as usize;
        how[i].0 += v;
        how[i].1 += 1;
        if (night[0]..night[1]).contains(&t.hour()) {
            let e = nights.entry(t.date_naive()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    let hour_of_week = how.iter().enumerate().filter(|(_, (_, n))| *n > 0).map(|(i, (sum, n))| HourOfWeek { how: i, mean: sum / f64::from(*n), samples: *n }).collect();
    let full = night[1] - night[0];
    let night_base = nights
        .iter()
        .filter(|(_, (_, n))| *n == full)
        .map(|(d, (sum, n))| NightBase {
            date: *d,
            midnight: local_midnight(tz, *d).and_then(DateTime::from_timestamp_millis).map(|t| t.with_timezone(&tz)),
            base: sum / f64::from(*n),
        })
        .collect();
    LoadProfile { hour_of_week, night_base }
}

/// What a load profile is of: a carrier, over how many weeks, with which night hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileOf {
    pub carrier: Carrier,
    pub weeks: i64,
    /// Local hours `night[0]..night[1]`.
    pub night: [u32; 2],
}

/// The load profile of a building's top meters of `of.carrier` over the `of.weeks` weeks
/// before the local date of `now` ([`profile_window`], [`load_profile`]).
pub async fn profile(store: &Store, reg: &Registry, tz: Tz, building: &str, of: ProfileOf, now: DateTime<Utc>) -> Result<LoadProfile, BuildingError> {
    let meters: Vec<&Meter> = top_meters(reg, building)?.into_iter().filter(|m| m.carrier == of.carrier).collect();
    let today = now.with_timezone(&tz).date_naive();
    let window = profile_window(tz, today, of.weeks).ok_or(BuildingError::NoMidnight)?;
    let cons = read_summed(store, &meters, window).await?;
    Ok(load_profile(&cons, tz, of.night))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;

    const H: i64 = HOUR_MS;

    /// A roll-up of one hour whose first reading, at the hour, is `first`.
    fn hr(hour: i64, first: f64) -> HourRollup {
        HourRollup { hour, first_ts: hour, first_v: first, last_ts: hour + 1_800_000, last_v: first, min: first, max: first, sum: first, count: 1 }
    }

    fn meter(toml: &str) -> Meter {
        match toml::from_str(toml) {
            Ok(m) => m,
            Err(e) => panic!("test meter: {e}"),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        match Utc.with_ymd_and_hms(y, mo, d, h, mi, 0) {
            chrono::LocalResult::Single(t) => t,
            _ => panic!("test time"),
        }
    }

    fn ms(y: i32, mo: u32, d: u32, h: u32) -> i64 {
        utc(y, mo, d, h, 0).timestamp_millis()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[test]
    fn top_meters_are_physical_parentless_and_accounted() {
        let base = "id = 'm'\nbuilding = 'b'\ncarrier = 'electricity'\n";
        let cases = [
            ("", true),
            // A sub-meter: its consumption is in its parent's.
            ("parent = 'main'\n", false),
            // A virtual meter: a formula over others.
            ("formula = 'a - c'\n", false),
            ("accounted = false\n", false),
        ];
        for (extra, top) in cases {
            assert_eq!(is_top(&meter(&format!("{base}{extra}"))), top, "{extra}");
        }
    }

    #[test]
    fn hours_of_meters_are_summed_inside_the_window() {
        // Meter a (multiplier 1): first readings 10, 12, 15, 15.5 at hours 0..3: hours 0, 1, 2
        // used 2, 3, 0.5. Meter b (multiplier 10): 1.0, 1.5 at hours 1, 2: hour 1 used 5.
        // Window [1 h, 3 h): hour 1 = 3 + 5 = 8, hour 2 = 0.5 (b has no hour 3); hour 0 is out.
        let a: Vec<HourRollup> = [10.0, 12.0, 15.0, 15.5].iter().enumerate().map(|(i, v)| hr(i as i64 * H, *v)).collect();
        let b = vec![hr(H, 1.0), hr(2 * H, 1.5)];
        let got = summed_hours([(a.as_slice(), 1.0), (b.as_slice(), 10.0)], H, 3 * H);
        assert_eq!(got, BTreeMap::from([(H, 8.0), (2 * H, 0.5)]));
        assert_eq!(summed_hours([], 0, 10 * H), BTreeMap::new());
    }

    #[test]
    fn last_year_and_change() {
        let cases = [
            (date(2026, 3, 15), date(2025, 3, 15)),
            // 2027 has no 29 February: 365 days before 2028-02-29 is 2027-03-01.
            (date(2028, 2, 29), date(2027, 3, 1)),
            (date(2026, 1, 1), date(2025, 1, 1)),
        ];
        for (d, want) in cases {
            assert_eq!(same_day_last_year(d), want, "{d}");
        }
        // 150 against 100: +50 %; 50 against 200: -75 %; nothing last year: no change.
        assert_eq!(change_pct(150.0, 100.0), Some(50.0));
        assert_eq!(change_pct(50.0, 200.0), Some(-75.0));
        assert_eq!(change_pct(5.0, 0.0), None);
    }

    #[test]
    fn summary_windows_worked_by_hand() {
        // Shanghai is UTC+8 all year. 2026-03-15 10:30 local is 02:30 UTC.
        // Today: from 2026-03-15 00:00 local = 03-14 16:00 UTC to now + 1 h = 03:30 UTC; 10.5 h
        // elapsed. Last year: 2025-03-15 00:00 local = 03-14 16:00 UTC, + 10.5 h.
        // Month: from 2026-03-01 00:00 local = 02-28 16:00 UTC; 14 days 10.5 h elapsed.
        // Last year: 2025-03-01 00:00 local = 2025-02-28 16:00 UTC, + the same.
        let now = utc(2026, 3, 15, 2, 30);
        let half = 1_800_000;
        let w = summary_windows(Shanghai, now);
        let today0 = ms(2026, 3, 14, 16);
        let month0 = ms(2026, 2, 28, 16);
        let ly_today0 = ms(2025, 3, 14, 16);
        let ly_month0 = ms(2025, 2, 28, 16);
        assert_eq!(
            w,
            Some(SummaryWindows {
                today: (today0, ms(2026, 3, 15, 3) + half),
                today_last_year: (ly_today0, ly_today0 + 10 * H + half),
                month: (month0, ms(2026, 3, 15, 3) + half),
                month_last_year: (ly_month0, ly_month0 + (14 * 24 + 10) * H + half),
            })
        );
        // A new month: at 2026-04-01 00:10 local (03-31 16:10 UTC) today and the month start
        // at the same midnight, 10 minutes ago.
        let w = summary_windows(Shanghai, utc(2026, 3, 31, 16, 10));
        let day0 = ms(2026, 3, 31, 16);
        assert_eq!(w.map(|w| (w.today.0, w.month.0, w.today.1 - w.today.0)), Some((day0, day0, H + 600_000)));
    }

    #[test]
    fn carriers_once_each_and_live_power() {
        let e = meter("id = 'e'\nbuilding = 'b'\ncarrier = 'electricity'\n");
        let w = meter("id = 'w'\nbuilding = 'b'\ncarrier = 'water'\n");
        let e2 = meter("id = 'e2'\nbuilding = 'b'\ncarrier = 'electricity'\n");
        assert_eq!(carriers_of(&[&w, &e, &e2]), vec![Carrier::Electricity, Carrier::Water]);
        // Power: meter 1's last roll-up ends at 4 kW (the earlier 9 kW hour does not count),
        // x 1; meter 2's at 0.5, x 20 = 10; meter 3 has none. 4 + 10 = 14 kW.
        let mut p1 = vec![hr(0, 9.0), hr(H, 3.0)];
        p1[1].last_v = 4.0;
        let p2 = vec![hr(H, 0.5)];
        assert_eq!(live_power([(p1.as_slice(), 1.0), (p2.as_slice(), 20.0), (&[][..], 5.0)]), Some(14.0));
        assert_eq!(live_power([(&[][..], 5.0)]), None);
    }

    #[test]
    fn profile_window_is_whole_weeks_before_today() {
        // 2 weeks before 2026-03-15: 2026-03-01 00:00 local = 02-28 16:00 UTC, to 03-15 00:00
        // local = 03-14 16:00 UTC.
        assert_eq!(profile_window(Shanghai, date(2026, 3, 15), 2), Some((ms(2026, 2, 28, 16), ms(2026, 3, 14, 16))));
    }

    #[test]
    fn load_profile_worked_by_hand() {
        // Monday 2026-03-02 in Shanghai; its 00:00 local is 03-01 16:00 UTC.
        let mon0 = ms(2026, 3, 1, 16);
        let day = 24 * H;
        let cons = BTreeMap::from([
            // Monday 00 h, 01 h: 2 and 4; night 0-2 complete on Monday: base (2 + 4) / 2 = 3.
            (mon0, 2.0),
            (mon0 + H, 4.0),
            // Monday 13 h: 10 (outside the night).
            (mon0 + 13 * H, 10.0),
            // Tuesday 00 h only: night incomplete, no base for Tuesday.
            (mon0 + day, 7.0),
            // The next Monday 00 h: 6; its 01 h missing, so no base for it; Monday 00 h is
            // then the mean of 2 and 6 = 4 over 2 samples.
            (mon0 + 7 * day, 6.0),
        ]);
        let p = load_profile(&cons, Shanghai, [0, 2]);
        let how: Vec<(usize, f64, u32)> = p.hour_of_week.iter().map(|h| (h.how, h.mean, h.samples)).collect();
        // Monday 00 h = 0, 01 h = 1, 13 h = 13; Tuesday 00 h = 24.
        assert_eq!(how, vec![(0, 4.0, 2), (1, 4.0, 1), (13, 10.0, 1), (24, 7.0, 1)]);
        let nights: Vec<(NaiveDate, f64)> = p.night_base.iter().map(|n| (n.date, n.base)).collect();
        assert_eq!(nights, vec![(date(2026, 3, 2), 3.0)]);
        assert_eq!(p.night_base[0].midnight.map(|t| t.to_rfc3339()), Some("2026-03-02T00:00:00+08:00".to_string()));
        assert_eq!(load_profile(&BTreeMap::new(), Shanghai, [0, 5]), LoadProfile { hour_of_week: vec![], night_base: vec![] });
    }
}
