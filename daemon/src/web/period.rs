//! The period picker: a year, a month or a custom range of days, with previous and next.

use std::collections::HashMap;

use chrono::{Datelike, Months, NaiveDate};

use super::fmt::{self, Lang};

/// A period of local days, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Year(i32),
    Month(i32, u32),
    Range(NaiveDate, NaiveDate),
}

/// The longest custom range, days (ten years).
pub const MAX_RANGE_DAYS: i64 = 3660;

fn ymd(y: i32, m: u32, d: u32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| format!("{y}-{m}-{d} is not a date"))
}

impl Period {
    /// From the query: `period=year&year=2026`, `period=month&year=2026&month=3`,
    /// `period=range&from=2026-01-10&to=2026-02-10` (`to` inclusive as people give it). Nothing
    /// given: the year of `today`.
    pub fn parse(p: &HashMap<String, String>, today: NaiveDate) -> Result<Period, String> {
        let year = |default: i32| -> Result<i32, String> {
            match p.get("year") {
                None => Ok(default),
                Some(y) => y.parse::<i32>().ok().filter(|y| (1971..=2199).contains(y)).ok_or_else(|| format!("year `{y}` is not a year such as 2026")),
            }
        };
        let day = |k: &str| -> Result<NaiveDate, String> {
            let v = p.get(k).ok_or_else(|| format!("a custom period needs `{k}` (YYYY-MM-DD)"))?;
            NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| format!("{k} `{v}` is not a day such as 2026-03-05"))
        };
        match p.get("period").map(String::as_str).unwrap_or("year") {
            "year" => Ok(Period::Year(year(today.year())?)),
            "month" => {
                let m = match p.get("month") {
                    None => today.month(),
                    Some(m) => m.parse::<u32>().ok().filter(|m| (1..=12).contains(m)).ok_or_else(|| format!("month `{m}` is not 1-12"))?,
                };
                Ok(Period::Month(year(today.year())?, m))
            }
            "range" => {
                let (from, to) = (day("from")?, day("to")?);
                if to < from {
                    return Err(format!("the period ends ({to}) before it starts ({from})"));
                }
                let end = to.succ_opt().ok_or("the period ends too late")?;
                if (end - from).num_days() > MAX_RANGE_DAYS {
                    return Err(format!("a custom period is at most {MAX_RANGE_DAYS} days"));
                }
                if from.year() < 1971 || end.year() > 2199 {
                    return Err("a custom period lies in 1971-2199".into());
                }
                Ok(Period::Range(from, end))
            }
            other => Err(format!("period `{other}` is not year, month or range")),
        }
    }

    /// First day and the day after the last.
    pub fn bounds(self) -> (NaiveDate, NaiveDate) {
        match self {
            Period::Year(y) => (ymd(y, 1, 1).unwrap_or_default(), ymd(y + 1, 1, 1).unwrap_or_default()),
            Period::Month(y, m) => {
                let f = ymd(y, m, 1).unwrap_or_default();
                (f, f.checked_add_months(Months::new(1)).unwrap_or(f))
            }
            Period::Range(f, t) => (f, t),
        }
    }

    /// The period before (环比's base): the previous year, month, or the range of the same
    /// length just before.
    pub fn prev(self) -> Period {
        match self {
            Period::Year(y) => Period::Year(y - 1),
            Period::Month(y, 1) => Period::Month(y - 1, 12),
            Period::Month(y, m) => Period::Month(y, m - 1),
            Period::Range(f, t) => Period::Range(f - (t - f), f),
        }
    }

    pub fn next(self) -> Period {
        match self {
            Period::Year(y) => Period::Year(y + 1),
            Period::Month(y, 12) => Period::Month(y + 1, 1),
            Period::Month(y, m) => Period::Month(y, m + 1),
            Period::Range(f, t) => Period::Range(t, t + (t - f)),
        }
    }

    /// The same period a year earlier (同比's base).
    pub fn year_before(self) -> Period {
        let back = |d: NaiveDate| d.checked_sub_months(Months::new(12)).unwrap_or(d);
        match self {
            Period::Year(y) => Period::Year(y - 1),
            Period::Month(y, m) => Period::Month(y - 1, m),
            Period::Range(f, t) => Period::Range(back(f), back(t)),
        }
    }

    /// The query string that selects it.
    pub fn query(self) -> String {
        match self {
            Period::Year(y) => format!("period=year&year={y}"),
            Period::Month(y, m) => format!("period=month&year={y}&month={m}"),
            Period::Range(f, t) => format!("period=range&from={f}&to={}", t.pred_opt().unwrap_or(t)),
        }
    }

    /// As people name it: `2026年`, `2026年3月`, `2026年1月10日至2026年2月9日`.
    pub fn label(self, lang: Lang) -> String {
        match (self, lang) {
            (Period::Year(y), Lang::Zh) => format!("{y}年"),
            (Period::Year(y), Lang::En) => y.to_string(),
            (Period::Month(y, m), Lang::Zh) => format!("{y}年{m}月"),
            (Period::Month(y, m), Lang::En) => format!("{} {y}", fmt::month(lang, m)),
            (Period::Range(f, t), _) => {
                let last = t.pred_opt().unwrap_or(t);
                format!("{}{}{}", fmt::date(lang, f), lang.t("至", " to "), fmt::date(lang, last))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn periods_parse_step_and_compare() {
        let today = d(2026, 3, 5);
        assert_eq!(Period::parse(&q(&[]), today), Ok(Period::Year(2026)));
        assert_eq!(Period::parse(&q(&[("period", "month")]), today), Ok(Period::Month(2026, 3)));
        let r = Period::parse(&q(&[("period", "range"), ("from", "2026-01-10"), ("to", "2026-02-09")]), today).unwrap();
        // to is inclusive as given: the range ends before 10 February; 31 days long.
        assert_eq!(r, Period::Range(d(2026, 1, 10), d(2026, 2, 10)));
        assert_eq!(r.prev(), Period::Range(d(2025, 12, 10), d(2026, 1, 10)));
        assert_eq!(r.next(), Period::Range(d(2026, 2, 10), d(2026, 3, 13)));
        assert_eq!(r.year_before(), Period::Range(d(2025, 1, 10), d(2025, 2, 10)));
        assert_eq!(r.query(), "period=range&from=2026-01-10&to=2026-02-09");
        assert_eq!(Period::Month(2026, 1).prev(), Period::Month(2025, 12));
        assert_eq!(Period::Month(2026, 12).next(), Period::Month(2027, 1));
        assert_eq!(Period::Month(2024, 2).bounds(), (d(2024, 2, 1), d(2024, 3, 1)));
        assert_eq!(Period::Year(2026).year_before(), Period::Year(2025));
        assert_eq!(Period::Month(2026, 3).label(Lang::Zh), "2026年3月");
        assert_eq!(Period::Month(2026, 3).label(Lang::En), "Mar 2026");
        assert_eq!(r.label(Lang::Zh), "2026年1月10日至2026年2月9日");
    }

    #[test]
    fn bad_periods_are_named() {
        let today = d(2026, 3, 5);
        for (query, want) in [
            (q(&[("period", "week")]), "period `week`"),
            (q(&[("year", "20x6")]), "year `20x6`"),
            (q(&[("period", "month"), ("month", "13")]), "month `13`"),
            (q(&[("period", "range"), ("from", "2026-02-01")]), "needs `to`"),
            (q(&[("period", "range"), ("from", "2026-02-01"), ("to", "2026-01-01")]), "before it starts"),
            (q(&[("period", "range"), ("from", "2000-01-01"), ("to", "2026-01-01")]), "at most"),
        ] {
            let e = Period::parse(&query, today).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
