//! Time on the daemon's side: the local calendar of the configured time zone (days, months,
//! years, as-of days), calendar periods, and the parsing of the times, dates and durations the
//! registry, the API and the reports take. The bottom floor of the daemon: it imports nothing
//! of it. UTC hours and days of the contract come from [`energy_wire::time`].

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
pub use energy_wire::time::{day_of, hour_of, DAY_MS, HOUR_MS, MINUTE_MS};

/// A time, date, interval or duration that cannot be read; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is neither an RFC 3339 time (2026-03-01T00:00:00+08:00) nor a date (2026-03-01)")]
    Time(String),
    #[error("interval `{0}` is not one of 15min, hour, day, month, year")]
    Interval(String),
    #[error("step `{0}` is not a positive duration such as 15m, 1h or 1d")]
    Step(String),
    #[error("step `{0}` is too large")]
    StepTooLarge(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// Quarter hours (`15min`: the national protocol's raw reporting period, issue 21).
    #[serde(rename = "15min")]
    Quarter,
    Hour,
    Day,
    Month,
    Year,
}

impl std::str::FromStr for Interval {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        match s {
            "15min" => Ok(Interval::Quarter),
            "hour" => Ok(Interval::Hour),
            "day" => Ok(Interval::Day),
            "month" => Ok(Interval::Month),
            "year" => Ok(Interval::Year),
            _ => Err(TimeError::Interval(s.to_string())),
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
pub fn parse_time(s: &str, tz: Tz) -> Result<DateTime<Tz>, TimeError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&tz));
    }
    if let Some(d) = parse_date(s) {
        return Ok(local(tz, d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(TimeError::Time(s.to_string()))
}

/// [`parse_time`] in milliseconds since the epoch.
pub fn parse_time_ms(s: &str, tz: Tz) -> Result<i64, TimeError> {
    parse_time(s, tz).map(|t| t.timestamp_millis())
}

/// A local date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Parses `90s`, `15m`, `1h`, `1d` or a number of seconds, into milliseconds.
pub fn parse_step(s: &str) -> Result<i64, TimeError> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1_000),
        Some((i, 'm')) => (&s[..i], MINUTE_MS),
        Some((i, 'h')) => (&s[..i], HOUR_MS),
        Some((i, 'd')) => (&s[..i], DAY_MS),
        _ => (s, 1_000),
    };
    match num.parse::<i64>() {
        Ok(n) if n > 0 => n.checked_mul(mult).ok_or_else(|| TimeError::StepTooLarge(s.to_string())),
        _ => Err(TimeError::Step(s.to_string())),
    }
}

/// Today in the time zone.
pub fn today(tz: Tz) -> NaiveDate {
    chrono::Utc::now().with_timezone(&tz).date_naive()
}

/// An instant (milliseconds) in RFC 3339 of the time zone; `None` out of chrono's range.
pub fn rfc3339(ms: i64, tz: Tz) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339())
}

/// [`rfc3339`] with milliseconds, `Z` for UTC.
pub fn rfc3339_ms(ms: i64, tz: Tz) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The local year of an instant (1970 out of chrono's range).
pub fn year_of(ms: i64, tz: Tz) -> i32 {
    DateTime::from_timestamp_millis(ms).map_or(1970, |t| t.with_timezone(&tz).year())
}

/// The rule of [`as_of_cut`] in words, as the API's answers and the documents state it.
pub const AS_OF_RULE: &str = "figures run to the start of the as_of day in local time (by default today): the as_of day itself is not counted";

/// The one definition of "as of" of the API, the bureau's page and the reports: figures run to
/// the start (local midnight) of the `as_of` day — a date, or an RFC 3339 time taken as its
/// local day — by default of today. The day itself is not counted, so that a figure asked at
/// 09:00 and at 17:00 is the same, and a day is never counted before it is over.
/// Returns that day and the instant.
pub fn as_of_cut(tz: Tz, today: NaiveDate, as_of: Option<&str>) -> Result<(NaiveDate, i64), TimeError> {
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
        Interval::Quarter => n.date().and_hms_opt(n.hour(), n.minute() / 15 * 15, 0).unwrap_or(n) + Duration::minutes(15),
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
        // Quarter hours from 10:07: 10:15 (the next quarter), 10:30, then the end 10:40.
        let b = boundaries(t("2026-01-01T10:07:00+08:00"), t("2026-01-01T10:40:00+08:00"), Interval::Quarter, 100).unwrap();
        let s: Vec<String> = b.iter().map(DateTime::to_rfc3339).collect();
        assert_eq!(s, vec!["2026-01-01T10:07:00+08:00", "2026-01-01T10:15:00+08:00", "2026-01-01T10:30:00+08:00", "2026-01-01T10:40:00+08:00"]);
        assert_eq!("15min".parse::<Interval>().unwrap(), Interval::Quarter);
        assert!(boundaries(t("2026-01-01"), t("2027-01-01"), Interval::Hour, 100).is_none());
        assert_eq!(boundaries(t("2026-01-01"), t("2026-01-01"), Interval::Day, 100).unwrap().len(), 1);
    }

    /// Steps in milliseconds, worked by hand: 90 s = 90 000, 15 min = 900 000, 1 d = 86 400 000.
    #[test]
    fn steps_are_durations() {
        for (given, ms) in [("90s", 90_000), ("90", 90_000), ("15m", 900_000), ("1h", 3_600_000), ("1d", 86_400_000)] {
            assert_eq!(parse_step(given), Ok(ms), "{given}");
        }
        for bad in ["0", "-1h", "h", "1w", ""] {
            assert_eq!(parse_step(bad), Err(TimeError::Step(bad.to_string())), "{bad}");
        }
        assert_eq!(parse_step("9223372036854775807d"), Err(TimeError::StepTooLarge("9223372036854775807d".into())));
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
