//! Calendar periods in the configured time zone.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
    Month,
    Year,
}

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hour" => Ok(Interval::Hour),
            "day" => Ok(Interval::Day),
            "month" => Ok(Interval::Month),
            "year" => Ok(Interval::Year),
            _ => Err(format!("interval `{s}` is not one of hour, day, month, year")),
        }
    }
}

fn local(tz: Tz, naive: NaiveDateTime) -> DateTime<Tz> {
    // Earliest instant for a time that a DST change makes ambiguous; for a skipped time, the
    // same wall time an hour later.
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(naive + Duration::hours(1))).earliest())
        .unwrap_or_else(|| tz.from_utc_datetime(&naive))
}

/// Parses an RFC 3339 instant, or a date `YYYY-MM-DD` meaning local midnight at its start.
pub fn parse_time(s: &str, tz: Tz) -> Result<DateTime<Tz>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&tz));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(local(tz, d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(format!("`{s}` is neither an RFC 3339 time (2026-03-01T00:00:00+08:00) nor a date (2026-03-01)"))
}

/// The one definition of "as of" of the API, the bureau's page and the reports: figures run to
/// the start (local midnight) of the `as_of` day — a date, or an RFC 3339 time taken as its
/// local day — by default of today. The day itself is not counted, so that a figure asked at
/// 09:00 and at 17:00 is the same, and a day is never counted before it is over.
/// Returns that day and the instant.
pub fn as_of_cut(tz: Tz, today: NaiveDate, as_of: Option<&str>) -> Result<(NaiveDate, i64), String> {
    let day = match as_of {
        None => today,
        Some(s) => parse_time(s, tz)?.date_naive(),
    };
    Ok((day, day_start(tz, day).timestamp_millis()))
}

/// Local midnight at the start of `day`.
pub fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Tz> {
    local(tz, day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The start of the calendar period after the one containing `t`.
pub fn next_boundary(t: DateTime<Tz>, interval: Interval) -> DateTime<Tz> {
    let tz = t.timezone();
    let n = t.naive_local();
    let next = match interval {
        Interval::Hour => n.date().and_hms_opt(n.hour(), 0, 0).unwrap_or(n) + Duration::hours(1),
        Interval::Day => (n.date() + Duration::days(1)).and_hms_opt(0, 0, 0).unwrap_or(n),
        Interval::Month => {
            let (y, m) = if n.month() == 12 { (n.year() + 1, 1) } else { (n.year(), n.month() + 1) };
            NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or(n)
        }
        Interval::Year => NaiveDate::from_ymd_opt(n.year() + 1, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or(n),
    };
    let b = local(tz, next);
    if b > t {
        b
    } else {
        t + Duration::hours(1)
    }
}

/// Boundaries from `from` to `to`: `from`, every calendar boundary strictly between, and `to`.
/// `None` when that would be more than `max` periods.
pub fn boundaries(from: DateTime<Tz>, to: DateTime<Tz>, interval: Interval, max: usize) -> Option<Vec<DateTime<Tz>>> {
    let mut out = vec![from];
    let mut t = from;
    while t < to {
        let n = next_boundary(t, interval).min(to);
        out.push(n);
        t = n;
        if out.len() > max + 1 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Shanghai;

    fn t(s: &str) -> DateTime<Tz> {
        parse_time(s, Shanghai).unwrap()
    }

    #[test]
    fn dates_are_local_midnight() {
        assert_eq!(t("2026-01-01").to_rfc3339(), "2026-01-01T00:00:00+08:00");
        assert_eq!(t("2026-01-01T00:00:00Z").to_rfc3339(), "2026-01-01T08:00:00+08:00");
        assert!(parse_time("01/02/2026", Shanghai).is_err());
    }

    #[test]
    fn calendar_boundaries_worked_by_hand() {
        let b = boundaries(t("2026-01-30T10:30:00+08:00"), t("2026-03-01"), Interval::Month, 100).unwrap();
        let s: Vec<String> = b.iter().map(DateTime::to_rfc3339).collect();
        assert_eq!(s, vec!["2026-01-30T10:30:00+08:00", "2026-02-01T00:00:00+08:00", "2026-03-01T00:00:00+08:00"]);
        let b = boundaries(t("2026-12-31T22:00:00+08:00"), t("2027-01-01T01:00:00+08:00"), Interval::Hour, 100).unwrap();
        assert_eq!(b.len(), 4);
        let b = boundaries(t("2025-06-01"), t("2027-02-01"), Interval::Year, 100).unwrap();
        let s: Vec<String> = b.iter().map(DateTime::to_rfc3339).collect();
        assert_eq!(s, vec!["2025-06-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00", "2027-01-01T00:00:00+08:00", "2027-02-01T00:00:00+08:00"]);
        assert_eq!(boundaries(t("2026-01-01"), t("2026-01-03"), Interval::Day, 100).unwrap().len(), 3);
        assert!(boundaries(t("2026-01-01"), t("2027-01-01"), Interval::Hour, 100).is_none());
        assert_eq!(boundaries(t("2026-01-01"), t("2026-01-01"), Interval::Day, 100).unwrap().len(), 1);
    }

    /// As of: the start of the local day, whatever the time of day asked or given.
    /// 2026-03-10 in Shanghai starts at 2026-03-09T16:00Z = 1 773 072 000 000 ms; the days of 2026
    /// before it are 31 (Jan) + 28 (Feb) + 9 = 68.
    #[test]
    fn as_of_is_the_start_of_the_local_day() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        let want = 1_773_072_000_000;
        for given in [None, Some("2026-03-10"), Some("2026-03-10T15:00:00+08:00"), Some("2026-03-10T01:00:00Z")] {
            assert_eq!(as_of_cut(Shanghai, today, given).unwrap(), (today, want), "{given:?}");
        }
        let cal = crate::accounting::ledger::YearCalendar::new(Shanghai, 2026).unwrap();
        assert_eq!(cal.days_before(want), 68);
        // Later in the day the figures are the same: the day is not counted before it is over.
        assert_eq!(cal.days_before(want + 15 * 3_600_000), 69);
        assert!(as_of_cut(Shanghai, today, Some("soon")).is_err());
    }

    #[test]
    fn daylight_saving_zones_work_too() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 has 23 hours in Berlin.
        let from = parse_time("2026-03-29", berlin).unwrap();
        let to = parse_time("2026-03-30", berlin).unwrap();
        assert_eq!(boundaries(from, to, Interval::Hour, 100).unwrap().len(), 24);
    }
}
