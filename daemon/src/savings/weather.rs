//! Outdoor temperature: a weather station's CSV into the store (`energyd weather import`), and
//! the daily mean temperatures of a weather meter read back for the degree days.
//!
//! The CSV (UTF-8, comma-separated, a header row naming the columns, in any order; other
//! columns are ignored):
//! * the time: `date` (`YYYY-MM-DD`, a daily value, stored at local noon) or `time` (an hourly
//!   or finer reading: RFC 3339 with its offset, or local `YYYY-MM-DD HH:MM[:SS]`);
//! * the temperature in °C: `temperature_c` (or `temperature`, `t_mean`), or the day's
//!   extremes `t_min_c` and `t_max_c`, whose mean is taken;
//! * an empty cell, `NA`, `M` or `-9999` is a missing value and the row is skipped (counted).
//!
//! A wrong cell is an error naming its line and column; nothing is written then.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use energy_wire::Quantity;

use crate::registry::Registry;
use crate::store::{Point, Store, StoreError};
use crate::time::day_start;

/// Plausible outdoor temperatures, °C (the world's records are −89.2 and 56.7).
const PLAUSIBLE: std::ops::RangeInclusive<f64> = -90.0..=60.0;

/// What went wrong reading or importing a weather file.
#[derive(Debug, thiserror::Error)]
pub enum WeatherError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("line 1: the header names no time column (`date` for daily values, `time` for hourly ones); found: {0}")]
    NoTimeColumn(String),
    #[error("line 1: the header names no temperature column (`temperature_c`, `temperature`, `t_mean`, or `t_min_c` with `t_max_c`); found: {0}")]
    NoTemperatureColumn(String),
    #[error("line {line}, column `{column}`: {problem}")]
    Cell { line: usize, column: String, problem: String },
    #[error("the file has no readings")]
    Empty,
    #[error("meter `{0}` is not in the registry; add it as a weather meter: [[meter]] with quantity = \"outdoor_temperature\"")]
    UnknownMeter(String),
    #[error("meter `{0}` is a virtual meter (formula); it cannot hold readings")]
    VirtualMeter(String),
    #[error("the daemon is running on {0} (it holds the store): send the readings through it with --url http://HOST:PORT (and --token or ENERGYD_TOKEN when [auth] is on), or stop it first")]
    DaemonRunning(String),
    #[error("sending to the daemon at {url}: {problem}")]
    Http { url: String, problem: String },
    #[error("storage: {0}")]
    Store(StoreError),
}

impl From<StoreError> for WeatherError {
    fn from(e: StoreError) -> WeatherError {
        match e {
            StoreError::InUse { dir } => WeatherError::DaemonRunning(dir.display().to_string()),
            e => WeatherError::Store(e),
        }
    }
}

/// The readings of a weather file.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// (time, °C), in file order.
    pub readings: Vec<(i64, f64)>,
    /// Rows skipped for a missing value.
    pub missing: usize,
    pub daily: bool,
}

fn is_missing(s: &str) -> bool {
    matches!(s, "" | "NA" | "na" | "N/A" | "M" | "-9999" | "-9999.0" | "9999")
}

fn cells(line: &str) -> Vec<&str> {
    line.split(',').map(|c| c.trim().trim_matches('"').trim()).collect()
}

/// Parses a weather CSV; times in `tz` where they carry no offset.
pub fn parse_csv(text: &str, tz: Tz) -> Result<Parsed, WeatherError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { return Err(WeatherError::Empty) };
    let names: Vec<String> = cells(header).into_iter().map(str::to_ascii_lowercase).collect();
    let col = |n: &str| names.iter().position(|x| x == n);
    let (time_col, daily) = match (col("date"), col("time")) {
        (_, Some(i)) => (i, false),
        (Some(i), None) => (i, true),
        _ => return Err(WeatherError::NoTimeColumn(names.join(", "))),
    };
    enum Temp {
        Mean(usize),
        MinMax(usize, usize),
    }
    let temp = match (col("temperature_c").or_else(|| col("temperature")).or_else(|| col("t_mean")), col("t_min_c"), col("t_max_c")) {
        (Some(i), _, _) => Temp::Mean(i),
        (None, Some(a), Some(b)) => Temp::MinMax(a, b),
        _ => return Err(WeatherError::NoTemperatureColumn(names.join(", "))),
    };
    let mut readings = Vec::new();
    let mut missing = 0;
    for (i, line) in lines {
        let line_no = i + 1;
        let c = cells(line);
        let get = |k: usize| -> Result<&str, WeatherError> {
            c.get(k).copied().ok_or_else(|| WeatherError::Cell { line: line_no, column: names[k].clone(), problem: format!("the row has {} cells, the header {}", c.len(), names.len()) })
        };
        let number = |k: usize| -> Result<Option<f64>, WeatherError> {
            let s = get(k)?;
            if is_missing(s) {
                return Ok(None);
            }
            let v: f64 = s.parse().map_err(|_| WeatherError::Cell { line: line_no, column: names[k].clone(), problem: format!("`{s}` is not a number") })?;
            if !PLAUSIBLE.contains(&v) {
                return Err(WeatherError::Cell { line: line_no, column: names[k].clone(), problem: format!("{v} °C is not a plausible outdoor temperature (−90 to 60 °C)") });
            }
            Ok(Some(v))
        };
        let t_str = get(time_col)?;
        let ts = if daily {
            let d = NaiveDate::parse_from_str(t_str, "%Y-%m-%d")
                .map_err(|_| WeatherError::Cell { line: line_no, column: names[time_col].clone(), problem: format!("`{t_str}` is not a date (YYYY-MM-DD)") })?;
            day_start(tz, d).timestamp_millis() + 12 * 3_600_000
        } else {
            parse_local_time(t_str, tz).ok_or_else(|| WeatherError::Cell {
                line: line_no,
                column: names[time_col].clone(),
                problem: format!("`{t_str}` is not a time (RFC 3339, or local YYYY-MM-DD HH:MM[:SS])"),
            })?
        };
        let v = match temp {
            Temp::Mean(k) => number(k)?,
            Temp::MinMax(a, b) => match (number(a)?, number(b)?) {
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(WeatherError::Cell { line: line_no, column: names[a].clone(), problem: format!("the minimum {lo} °C is above the maximum {hi} °C") })
                }
                (Some(lo), Some(hi)) => Some((lo + hi) / 2.0),
                _ => None,
            },
        };
        match v {
            Some(v) => readings.push((ts, v)),
            None => missing += 1,
        }
    }
    if readings.is_empty() {
        return Err(WeatherError::Empty);
    }
    Ok(Parsed { readings, missing, daily })
}

fn parse_local_time(s: &str, tz: Tz) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"].iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?;
    tz.from_local_datetime(&naive).earliest().map(|t| t.timestamp_millis())
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub readings: usize,
    pub missing: usize,
    pub written: u64,
    pub unchanged: u64,
    pub conflicting: u64,
    pub first: i64,
    pub last: i64,
}

impl Imported {
    /// What an import of `parsed` starts from: its readings and gaps, nothing written yet.
    fn of(parsed: &Parsed) -> Imported {
        Imported {
            readings: parsed.readings.len(),
            missing: parsed.missing,
            written: 0,
            unchanged: 0,
            conflicting: 0,
            first: parsed.readings.iter().map(|r| r.0).min().unwrap_or(0),
            last: parsed.readings.iter().map(|r| r.0).max().unwrap_or(0),
        }
    }
}

/// Imports `path` into the store of `data_dir` as `outdoor_temperature` of `meter` (a meter of
/// the registry), while the daemon is stopped (it holds the store while it runs: then
/// [`import_through`] it).
pub async fn import(data_dir: &Path, reg: &Registry, tz: Tz, meter: &str, path: &Path) -> Result<Imported, WeatherError> {
    let m = reg.meter(meter).ok_or_else(|| WeatherError::UnknownMeter(meter.to_string()))?;
    if m.is_virtual() {
        return Err(WeatherError::VirtualMeter(meter.to_string()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| WeatherError::Read { path: path.display().to_string(), source })?;
    let parsed = parse_csv(&text, tz)?;
    let store = crate::store::open(data_dir, crate::metrics::Metrics::new())?;
    let result = write(&store, meter, &parsed).await;
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.close()).await;
    result
}

/// Sends `path` to the daemon running at `url` (its store is locked by it), as line protocol
/// (`POST /api/v2/write?precision=ms`, in requests of 5,000 lines): the same write as a direct
/// import, deduplicated and checked by the daemon. `written` counts the readings it accepted
/// (stored, or already stored with the same value).
pub async fn import_through(url: &str, token: Option<&str>, reg: &Registry, tz: Tz, meter: &str, path: &Path) -> Result<Imported, WeatherError> {
    let m = reg.meter(meter).ok_or_else(|| WeatherError::UnknownMeter(meter.to_string()))?;
    if m.is_virtual() {
        return Err(WeatherError::VirtualMeter(meter.to_string()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| WeatherError::Read { path: path.display().to_string(), source })?;
    let parsed = parse_csv(&text, tz)?;
    let endpoint = format!("{}/api/v2/write?precision=ms", url.trim_end_matches('/'));
    let http = |problem: String| WeatherError::Http { url: url.to_string(), problem };
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120)).build().map_err(|e| http(e.to_string()))?;
    // Tag values escape commas, spaces and equals signs (line protocol).
    let tag: String = meter.chars().flat_map(|c| if matches!(c, ',' | ' ' | '=') { vec!['\\', c] } else { vec![c] }).collect();
    let mut out = Imported::of(&parsed);
    for chunk in parsed.readings.chunks(5_000) {
        let mut body = String::with_capacity(chunk.len() * 48);
        for &(ts, value) in chunk {
            body.push_str(&format!("weather,meter={tag} outdoor_temperature={value:?} {ts}\n"));
        }
        let mut req = client.post(&endpoint).header("content-type", "text/plain; charset=utf-8").body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(http(format!("{status}: {}", text.chars().take(500).collect::<String>())));
        }
        out.written += chunk.len() as u64;
    }
    Ok(out)
}

async fn write(store: &Store, meter: &str, parsed: &Parsed) -> Result<Imported, WeatherError> {
    let id: Arc<str> = Arc::from(meter);
    let mut out = Imported::of(parsed);
    for chunk in parsed.readings.chunks(10_000) {
        let points = chunk.iter().map(|&(ts, value)| Point { meter: id.clone(), quantity: Quantity::OutdoorTemperature, ts, value }).collect();
        let o = store.write_points_from(points, "energyd weather import".into()).await?;
        out.written += o.points_written;
        out.unchanged += o.points_unchanged;
        out.conflicting += o.points_conflicting;
    }
    store.flush().await?;
    Ok(out)
}

/// The mean outdoor temperature of each local day from `from` to `to` (both included) of a
/// weather meter: the mean of its readings that day (from the hourly roll-ups), `None` for a
/// day without one.
pub async fn daily_means(store: &Store, meter: &str, tz: Tz, from: NaiveDate, to: NaiveDate) -> Result<Vec<Option<f64>>, StoreError> {
    let days = (to - from).num_days().max(-1) + 1;
    let starts: Vec<i64> = (0..=days).map(|i| day_start(tz, from + chrono::Days::new(i as u64)).timestamp_millis()).collect();
    let (start, end) = (starts[0], *starts.last().unwrap_or(&starts[0]));
    let hours = store.rollups(meter, Quantity::OutdoorTemperature, start, end).await?;
    let mut sums: BTreeMap<usize, (f64, u64)> = BTreeMap::new();
    for h in hours {
        // The day whose start is at or before the hour.
        let i = starts.partition_point(|&s| s <= h.hour).saturating_sub(1);
        if i < days as usize {
            let e = sums.entry(i).or_default();
            e.0 += h.sum;
            e.1 += h.count;
        }
    }
    Ok((0..days as usize).map(|i| sums.get(&i).filter(|(_, c)| *c > 0).map(|(s, c)| s / *c as f64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TZ: Tz = chrono_tz::Asia::Shanghai;

    #[test]
    fn daily_and_hourly_files_parse() {
        let p = parse_csv("\u{feff}station,date,temperature_c\nty,2025-01-01,-8.5\nty,2025-01-02,NA\nty,2025-01-03,\"-7\"\n", TZ).expect("daily");
        assert!(p.daily);
        assert_eq!(p.missing, 1);
        // 2025-01-01 12:00 +08:00 = 04:00 UTC.
        assert_eq!(p.readings[0], (1_735_704_000_000, -8.5));
        assert_eq!(p.readings[1].1, -7.0);
        let p = parse_csv("time,temperature\n2025-01-01 00:00,-10\n2025-01-01T01:00:00+08:00,-11\n", TZ).expect("hourly");
        assert_eq!(p.readings, vec![(1_735_660_800_000, -10.0), (1_735_664_400_000, -11.0)]);
        // Extremes: (−12 + 2) / 2 = −5.
        let p = parse_csv("date,t_min_c,t_max_c\n2025-01-01,-12,2\n", TZ).expect("min max");
        assert_eq!(p.readings[0].1, -5.0);
    }

    #[test]
    fn errors_name_line_and_column() {
        for (text, want) in [
            ("day,temperature_c\n", "no time column"),
            ("date,wind\n2025-01-01,3\n", "no temperature column"),
            ("date,temperature_c\n2025-01-01,1\n2025-13-01,2\n", "line 3, column `date`: `2025-13-01` is not a date"),
            ("date,temperature_c\n\n2025-01-01,warm\n", "line 3, column `temperature_c`: `warm` is not a number"),
            ("date,temperature_c\n2025-01-01,85\n", "line 2, column `temperature_c`: 85 °C is not a plausible"),
            ("date,temperature_c\n2025-01-01\n", "line 2, column `temperature_c`: the row has 1 cells"),
            ("time,temperature_c\nyesterday,1\n", "line 2, column `time`"),
            ("date,t_min_c,t_max_c\n2025-01-01,5,1\n", "line 2, column `t_min_c`: the minimum 5 °C is above the maximum 1 °C"),
            ("date,temperature_c\n2025-01-01,NA\n", "no readings"),
        ] {
            let e = parse_csv(text, TZ).expect_err(want).to_string();
            assert!(e.contains(want), "want `{want}`, got `{e}`");
        }
    }
}
