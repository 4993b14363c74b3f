//! The rules, as pure functions: each takes the data it needs and `now` (ms since the epoch) and
//! returns the conditions that hold now ([`Finding`]s). The state machine ([`super::state`])
//! turns them into pending, firing and resolved alerts.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeZone, Weekday};
use chrono_tz::Tz;

use crate::accounting::counter::Flag;
use crate::accounting::indicators::{AgencyIndicators, BandClass};
use crate::store::HourRollup;
use crate::registry::{HeatingSeason, Indicator, Registry};
use energy_wire::Carrier;

use super::config::BandLevel;


use energy_wire::time::HOUR_MS;

/// A condition that holds now, for one thing (a meter, a gateway, an agency).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Unique within a rule: the meter, gateway or agency id (plus an indicator for bands).
    pub key: String,
    /// Routing labels: `agency`, `building`, `meter`, `gateway`, `indicator`, as they apply.
    pub labels: BTreeMap<String, String>,
    pub summary_zh: String,
    pub summary_en: String,
    /// The value the rule compared, if one, in `unit`.
    pub value: Option<f64>,
    /// The value's unit (`s`, `kWh`, `m³/h`, `°C`, `%`, `B`, ...).
    pub unit: Option<String>,
}

/// Labels of a meter: its id, building and agency (the agency it serves, or the building's
/// occupants, comma-separated).
pub fn meter_labels(meter: &str, building: &str, agency: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("meter".to_string(), meter.to_string()), ("building".to_string(), building.to_string()), ("agency".to_string(), agency.to_string())])
}

fn fmt_dur(ms: i64) -> (String, String) {
    let m = ms / 60_000;
    if m >= 2 * 24 * 60 {
        (format!("{} 天", m / 1440), format!("{} days", m / 1440))
    } else if m >= 120 {
        (format!("{} 小时", m / 60), format!("{} hours", m / 60))
    } else {
        (format!("{m} 分钟"), format!("{m} min"))
    }
}

fn local(ms: i64, tz: Tz) -> Option<chrono::DateTime<Tz>> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz))
}

fn fmt_time(ms: i64, tz: Tz) -> String {
    local(ms, tz).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

// ---------------------------------------------------------------------------------------------
// Meter silent

/// A meter as the silence rule sees it.
#[derive(Debug, Clone)]
pub struct SeenMeter {
    pub labels: BTreeMap<String, String>,
    pub id: String,
    /// Newest reading.
    pub last_seen: Option<i64>,
    /// Interval learned from recent readings ([`learn_interval`]).
    pub learned_interval: Option<i64>,
}

/// When no interval is configured nor learned.
pub const DEFAULT_INTERVAL_MS: i64 = 15 * 60_000;

/// The usual interval between readings, from hourly roll-ups: the median over hours with two or
/// more readings of (last − first) / (count − 1); for meters read less than hourly, the median
/// gap between the hours' last readings.
pub fn learn_interval(rollups: &[HourRollup]) -> Option<i64> {
    let mut within: Vec<i64> = rollups.iter().filter(|r| r.count >= 2 && r.last_ts > r.first_ts).map(|r| (r.last_ts - r.first_ts) / (r.count as i64 - 1)).collect();
    if within.is_empty() {
        within = rollups.windows(2).map(|w| w[1].last_ts - w[0].last_ts).filter(|&g| g > 0).collect();
    }
    median_i(&mut within)
}

fn median_i(v: &mut [i64]) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Meters whose newest reading is older than `intervals` x their interval (the configured one,
/// else the learned one, else 15 minutes). A meter never seen is not silent: it was never
/// installed (data completeness covers it).
pub fn meter_silent(meters: &[SeenMeter], now: i64, intervals: f64, expected: Option<i64>, tz: Tz) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in meters {
        let Some(last) = m.last_seen else { continue };
        let interval = expected.or(m.learned_interval).unwrap_or(DEFAULT_INTERVAL_MS).max(1);
        let silent = now - last;
        if (silent as f64) > intervals * interval as f64 {
            let (zh, en) = fmt_dur(silent);
            out.push(Finding {
                key: m.id.clone(),
                labels: m.labels.clone(),
                summary_zh: format!("表计 {} 已 {zh} 无读数（最后读数 {}，预期间隔 {} 秒）", m.id, fmt_time(last, tz), interval / 1000),
                summary_en: format!("meter {} silent for {en} (last reading {}, expected every {} s)", m.id, fmt_time(last, tz), interval / 1000),
                value: Some(silent as f64 / 1000.0),
                unit: Some("s".to_string()),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Gateways

/// A gateway as the daemon knows it: MQTT status and the batches it delivered.
#[derive(Debug, Clone, Default)]
pub struct SeenGateway {
    pub id: String,
    /// From its MQTT status topic (`None`: HTTP uplink or not yet known).
    pub online: Option<bool>,
    /// Since when `online` has its value.
    pub since_ms: i64,
    /// When its first batch (since the daemon started) and its last batch arrived.
    pub first_batch_ms: Option<i64>,
    pub last_batch_ms: Option<i64>,
    /// Age of the oldest sample of its last batch when it arrived.
    pub last_lag_ms: Option<i64>,
}

fn gw_labels(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("gateway".to_string(), id.to_string())])
}

/// Whether a gateway has delivered over at least `span`: only such a gateway is expected to
/// keep delivering (a one-off import through the ingest API is not a gateway that went silent).
fn delivering(g: &SeenGateway, span: i64) -> bool {
    matches!((g.first_batch_ms, g.last_batch_ms), (Some(a), Some(z)) if z - a >= span)
}

/// Gateways whose MQTT status is `offline` (their last will), or that delivered batches over at
/// least `silence` and then sent none for `silence`.
pub fn gateway_offline(gws: &[SeenGateway], now: i64, silence: i64, tz: Tz) -> Vec<Finding> {
    let mut out = Vec::new();
    for g in gws {
        let (zh, en, value) = if g.online == Some(false) {
            (format!("网关 {} 离线（MQTT 遗嘱，自 {}）", g.id, fmt_time(g.since_ms, tz)), format!("gateway {} offline (MQTT last will, since {})", g.id, fmt_time(g.since_ms, tz)), (now - g.since_ms) as f64 / 1000.0)
        } else if let Some(last) = g.last_batch_ms.filter(|&t| now - t > silence && delivering(g, silence)) {
            let (dz, de) = fmt_dur(now - last);
            (format!("网关 {} 已 {dz} 未上送数据（最后一批 {}）", g.id, fmt_time(last, tz)), format!("gateway {} sent nothing for {de} (last batch {})", g.id, fmt_time(last, tz)), (now - last) as f64 / 1000.0)
        } else {
            continue;
        };
        out.push(Finding { key: g.id.clone(), labels: gw_labels(&g.id), summary_zh: zh, summary_en: en, value: Some(value), unit: Some("s".to_string()) });
    }
    out
}

/// Gateways still sending (a batch within `silence`, having delivered over at least `silence`)
/// whose last batch held samples older than `max_lag` on arrival: their queue holds a backlog.
pub fn gateway_backlog(gws: &[SeenGateway], now: i64, max_lag: i64, silence: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    for g in gws {
        let (Some(last), Some(lag)) = (g.last_batch_ms, g.last_lag_ms) else { continue };
        if now - last <= silence && lag > max_lag && delivering(g, silence) {
            let (zh, en) = fmt_dur(lag);
            out.push(Finding {
                key: g.id.clone(),
                labels: gw_labels(&g.id),
                summary_zh: format!("网关 {} 队列积压：到达的数据已滞后 {zh}", g.id),
                summary_en: format!("gateway {} is backing up: samples arrive {en} late", g.id),
                value: Some(lag as f64 / 1000.0),
                unit: Some("s".to_string()),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Counters

/// A meter's counter flags from the accounting engine, with its counter unit.
#[derive(Debug, Clone)]
pub struct CounterFlags {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// The counter's unit (`kWh`, `m³`, `GJ`).
    pub unit: String,
    pub flags: Vec<Flag>,
}

/// Meters whose counter went down without a recorded replacement, or jumped faster than the
/// meter's physical maximum, at or after `now - lookback` (flags from the accounting engine).
/// The value is the drop (negative, in the counter's unit) or the jump's rate (unit per hour).
pub fn counter_anomaly(meters: &[CounterFlags], now: i64, lookback: i64, tz: Tz) -> Vec<Finding> {
    let mut out = Vec::new();
    for CounterFlags { id, labels, unit: u, flags } in meters {
        let latest = flags
            .iter()
            .filter_map(|f| match f {
                Flag::UnexplainedDecrease { at, from, to } => {
                    let (f, t) = (num(*from, 3), num(*to, 3));
                    Some((*at, format!("计数器从 {f} {u} 倒退至 {t} {u}"), format!("counter went down from {f} {u} to {t} {u}"), *to - *from, u.clone()))
                }
                Flag::ImplausibleJump { at, per_hour } => {
                    Some((*at, format!("计数器跳变 {per_hour:.1} {u}/小时，超过表计物理上限"), format!("counter jumped {per_hour:.1} {u}/h, beyond the meter's maximum"), *per_hour, format!("{u}/h")))
                }
                _ => None,
            })
            .filter(|(at, ..)| *at >= now - lookback && *at <= now)
            .max_by_key(|(at, ..)| *at);
        if let Some((at, zh, en, v, unit)) = latest {
            out.push(Finding {
                key: id.clone(),
                labels: labels.clone(),
                summary_zh: format!("表计 {id} 于 {} {zh}；请核查或登记换表", fmt_time(at, tz)),
                summary_en: format!("meter {id} at {}: {en}; check it or record a replacement", fmt_time(at, tz)),
                value: Some(v),
                unit: Some(unit),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Hourly consumption, nights, base load

/// The UTC start of each local hour of `date` in `[from, to)`; empty for a date the time zone
/// skips.
fn local_hours(date: NaiveDate, from: u32, to: u32, tz: Tz) -> Vec<i64> {
    (from..to).filter_map(|h| date.and_hms_opt(h, 0, 0).and_then(|t| tz.from_local_datetime(&t).earliest()).map(|t| t.timestamp_millis())).collect()
}

/// A day whose whole day counts as off hours (weekend or holiday).
fn off_day(date: NaiveDate, holidays: &[NaiveDate]) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun) || holidays.contains(&date)
}

/// The off hours of a day: the night hours, or every hour of a weekend day or holiday.
fn off_hours(date: NaiveDate, night: [u32; 2], holidays: &[NaiveDate], tz: Tz) -> Vec<i64> {
    if off_day(date, holidays) {
        local_hours(date, 0, 24, tz)
    } else {
        local_hours(date, night[0], night[1], tz)
    }
}

/// Mean consumption per hour over `hours`, if every one of them is known.
fn mean_of(cons: &BTreeMap<i64, f64>, hours: &[i64]) -> Option<f64> {
    if hours.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for h in hours {
        sum += cons.get(h)?;
    }
    Some(sum / hours.len() as f64)
}

/// The latest local date whose `hours_of(date)` have all ended by `now`.
fn last_complete(now: i64, tz: Tz, hours_of: impl Fn(NaiveDate) -> Vec<i64>) -> Option<NaiveDate> {
    let today = local(now, tz)?.date_naive();
    (0..3).map(|back| today - chrono::Duration::days(back)).find(|d| hours_of(*d).last().is_some_and(|&h| h + HOUR_MS <= now))
}

/// Last complete off period against the learned base.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseLoad {
    pub date: NaiveDate,
    pub off_day: bool,
    /// Mean consumption per hour of that period.
    pub base: f64,
    /// Median of the same kind of period (nights, or off days) over the previous weeks.
    pub learned: f64,
}

/// The base load (mean hourly consumption in the off hours) of the latest complete off period
/// and its learned level: the median over the previous `weeks` of periods of the same kind
/// (working-day nights, or weekend days and holidays) with complete data; `None` until at
/// least three such periods are known.
pub fn base_load(cons: &BTreeMap<i64, f64>, now: i64, tz: Tz, night: [u32; 2], weeks: u32, holidays: &[NaiveDate]) -> Option<BaseLoad> {
    let date = last_complete(now, tz, |d| off_hours(d, night, holidays, tz))?;
    let base = mean_of(cons, &off_hours(date, night, holidays, tz))?;
    let kind = off_day(date, holidays);
    let mut past: Vec<f64> = (1..=i64::from(weeks) * 7)
        .map(|back| date - chrono::Duration::days(back))
        .filter(|d| off_day(*d, holidays) == kind)
        .filter_map(|d| mean_of(cons, &off_hours(d, night, holidays, tz)))
        .collect();
    if past.len() < 3 {
        return None;
    }
    past.sort_by(f64::total_cmp);
    let learned = past[past.len() / 2];
    Some(BaseLoad { date, off_day: kind, base, learned })
}

/// A meter's hourly consumption ([`crate::accounting::rollup::hourly_consumption`]), for the night, base-load and heating
/// rules.
#[derive(Debug, Clone)]
pub struct MeterHours {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Counter unit.
    pub unit: String,
    pub hours: BTreeMap<i64, f64>,
}

/// Parameters of the base-load rule.
#[derive(Debug, Clone, Copy)]
pub struct BaseLoadRule<'a> {
    pub night: [u32; 2],
    pub weeks: u32,
    pub holidays: &'a [NaiveDate],
    pub factor: f64,
    /// Least excess over the learned base, per hour.
    pub min_excess: f64,
}

/// Base-load findings: the last off period above `factor` x the learned base, and above it by
/// more than `min_excess` per hour.
pub fn base_load_high(meters: &[MeterHours], now: i64, tz: Tz, p: &BaseLoadRule<'_>) -> Vec<Finding> {
    let (night, weeks, factor) = (p.night, p.weeks, p.factor);
    let mut out = Vec::new();
    for MeterHours { id, labels, unit, hours: cons } in meters {
        let Some(b) = base_load(cons, now, tz, night, weeks, p.holidays) else { continue };
        if b.base > factor * b.learned && b.base - b.learned > p.min_excess {
            let (pz, pe) = if b.off_day { ("全天（周末或节假日）", "whole day (weekend or holiday)") } else { ("夜间", "night") };
            out.push(Finding {
                key: id.clone(),
                labels: labels.clone(),
                summary_zh: format!("表计 {id} {} {pz}基础负荷 {:.2} {unit}/小时，高于近 {weeks} 周的常值 {:.2} 的 {factor} 倍", b.date, b.base, b.learned),
                summary_en: format!("meter {id}: base load on {} ({pe}) {:.2} {unit}/h, above {factor} x its level of the last {weeks} weeks ({:.2})", b.date, b.base, b.learned),
                value: Some(b.base),
                unit: Some(format!("{unit}/h")),
            });
        }
    }
    out
}

/// Meters with consumption of at least `threshold` in every hour of the last complete night
/// (`night` = local hours `[from, to)`): continuous flow, a leak.
pub fn night_flow(meters: &[MeterHours], now: i64, tz: Tz, night: [u32; 2], threshold: f64) -> Vec<Finding> {
    let mut out = Vec::new();
    for MeterHours { id, labels, unit, hours: cons } in meters {
        let Some(date) = last_complete(now, tz, |d| local_hours(d, night[0], night[1], tz)) else { continue };
        let hours = local_hours(date, night[0], night[1], tz);
        let vals: Option<Vec<f64>> = hours.iter().map(|h| cons.get(h).copied()).collect();
        let Some(vals) = vals else { continue };
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        if !vals.is_empty() && min >= threshold {
            let total: f64 = vals.iter().sum();
            out.push(Finding {
                key: id.clone(),
                labels: labels.clone(),
                summary_zh: format!("表计 {id} {date} 夜间 {}-{} 时每小时均有用量（最少 {min:.3} {unit}，共 {total:.3} {unit}），疑似漏水", night[0], night[1]),
                summary_en: format!("meter {id}: flow in every night hour {}-{} h on {date} (least {min:.3} {unit}/h, {total:.3} {unit} in all): possible leak", night[0], night[1]),
                value: Some(min),
                unit: Some(format!("{unit}/h")),
            });
        }
    }
    out
}

/// Heat meters that consumed more than `threshold` in the 24 hours before `now`, or whose mean
/// supply temperature over those hours (`supply`, by meter) is above `max_supply`, while the
/// local date is outside the heating season.
pub fn heating_off_season(meters: &[MeterHours], supply: &BTreeMap<String, f64>, now: i64, tz: Tz, season: &HeatingSeason, threshold: f64, max_supply: Option<f64>) -> Vec<Finding> {
    let Some(t) = local(now, tz) else { return Vec::new() };
    if season.contains(t.month(), t.day()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for MeterHours { id, labels, unit, hours: cons } in meters {
        let day: f64 = cons.range(now - 24 * HOUR_MS..=now - HOUR_MS).map(|(_, v)| v).sum();
        let temp = supply.get(id).copied().filter(|x| max_supply.is_some_and(|m| *x > m));
        let (season_zh, season_en) = (format!("采暖季（{} 至 {}）外", season.start, season.end), format!("outside the heating season ({} to {})", season.start, season.end));
        if day > threshold {
            out.push(Finding {
                key: id.clone(),
                labels: labels.clone(),
                summary_zh: format!("表计 {id} 在{season_zh} 24 小时内供热 {day:.2} {unit}"),
                summary_en: format!("meter {id}: {day:.2} {unit} of heat in the last 24 h {season_en}"),
                value: Some(day),
                unit: Some(unit.clone()),
            });
        } else if let Some(x) = temp {
            out.push(Finding {
                key: id.clone(),
                labels: labels.clone(),
                summary_zh: format!("表计 {id} 在{season_zh} 24 小时平均供水温度 {x:.1} °C"),
                summary_en: format!("meter {id}: supply temperature {x:.1} °C on average over the last 24 h {season_en}"),
                value: Some(x),
                unit: Some("°C".to_string()),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Agencies

/// One carrier's budget: the carrier, its counter unit, the budget, the projected year and the
/// day (0-based in the year) the running sum crosses the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct CarrierBudget {
    pub carrier: Carrier,
    pub unit: String,
    pub budget: f64,
    pub projected: f64,
    pub crossed_day: Option<usize>,
}

/// One indicator's projected value against its quota band.
#[derive(Debug, Clone, PartialEq)]
pub struct BandOutlook {
    pub indicator: Indicator,
    pub unit: String,
    pub projected: f64,
    pub binding: f64,
    pub benchmark: f64,
    pub class: BandClass,
}

/// What the agency rules need of an agency's indicators.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlook {
    pub agency: String,
    pub name: String,
    pub year: i32,
    pub in_progress: bool,
    /// Days of the year the figures cover: day indices below it are past.
    pub days_elapsed: usize,
    /// The energy budget (kgce), the projected year (kgce), and the crossing day (0-based).
    pub energy_budget: Option<(f64, f64, Option<usize>)>,
    pub carrier_budgets: Vec<CarrierBudget>,
    pub bands: Vec<BandOutlook>,
    pub coverage: f64,
}

impl Outlook {
    /// The outlook of an agency's indicators; its energy budget from the registry.
    pub fn of(a: &AgencyIndicators, reg: &Registry) -> Outlook {
        let energy = a.get(Indicator::TotalEnergy).and_then(|i| i.projected);
        let energy_budget = reg.budget(&a.agency, a.year).and_then(|b| b.energy_kgce).map(|b| (b, energy.unwrap_or(0.0), a.energy_budget_crossed_day));
        Outlook {
            agency: a.agency.clone(),
            name: a.name.clone(),
            year: a.year,
            in_progress: a.in_progress,
            days_elapsed: a.days_elapsed,
            energy_budget,
            carrier_budgets: a
                .carriers
                .iter()
                .filter_map(|c| c.budget.map(|b| CarrierBudget { carrier: c.carrier, unit: c.unit.to_string(), budget: b, projected: c.projected, crossed_day: c.budget_crossed_day }))
                .collect(),
            bands: a
                .indicators
                .iter()
                .filter_map(|i| {
                    let b = i.band.as_ref()?;
                    Some(BandOutlook { indicator: i.indicator, unit: i.unit.to_string(), projected: i.projected?, binding: b.binding, benchmark: b.benchmark, class: b.class })
                })
                .collect(),
            coverage: a.quality.coverage,
        }
    }
}

/// The date of day `day` (0-based) of `year`.
fn day_date(year: i32, day: usize) -> String {
    NaiveDate::from_ymd_opt(year, 1, 1).map_or_else(|| format!("{year} day {day}"), |d| (d + chrono::Duration::days(day as i64)).to_string())
}

/// The Chinese name of a carrier (统计 forms' terms).
fn carrier_zh(c: Carrier) -> &'static str {
    match c {
        Carrier::Electricity => "电力",
        Carrier::Water => "水",
        Carrier::NaturalGas => "天然气",
        Carrier::DistrictHeat => "热力",
        Carrier::Steam => "蒸汽",
        Carrier::Diesel => "柴油",
        Carrier::Gasoline => "汽油",
        Carrier::FuelOil => "燃料油",
        Carrier::Lpg => "液化石油气",
        Carrier::Coal => "原煤",
    }
}

/// A unit as written in Chinese forms: `person` is 人.
fn unit_zh(u: &str) -> String {
    u.replace("person", "人")
}

/// A number with at most `digits` decimals and no trailing zeros.
fn num(x: f64, digits: usize) -> String {
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One budget crossing in both languages: `what` crossed it on the date (the day is within the
/// days the figures cover, `day` < `days_elapsed`) or is projected to cross it on the date
/// (after them); never both for one date.
fn crossing(what_zh: &str, what_en: &str, year: i32, day: usize, days_elapsed: usize) -> (String, String) {
    let date = day_date(year, day);
    if day < days_elapsed {
        (format!("已于 {date} 超出{what_zh}"), format!("crossed {what_en} on {date}"))
    } else {
        (format!("预计于 {date} 超出{what_zh}"), format!("projected to cross {what_en} on {date}"))
    }
}

/// Agencies of a year in progress projected to exceed their energy budget (kgce) or a carrier's
/// budget: one finding per agency, each crossing with its date, said as past when the day is
/// within the days the figures cover and as projected when it is after them. The value is the
/// projected year of the first budget crossed, in its unit.
pub fn budget_overrun(agencies: &[Outlook]) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in agencies.iter().filter(|a| a.in_progress) {
        let mut parts: Vec<(usize, String, String, f64, String)> = Vec::new();
        if let Some((budget, projected, Some(d))) = a.energy_budget {
            let (zh, en) = crossing("年度能耗预算", "its annual energy budget", a.year, d, a.days_elapsed);
            let (p, b) = (num(projected, 0), num(budget, 0));
            parts.push((d, format!("{zh}（预计全年 {p} kgce，预算 {b} kgce）"), format!("{en} (projected {p} kgce for the year, budget {b} kgce)"), projected, "kgce".to_string()));
        }
        for c in &a.carrier_budgets {
            let Some(d) = c.crossed_day else { continue };
            let (zh, en) = crossing(&format!("{}预算", carrier_zh(c.carrier)), &format!("its {} budget", c.carrier.as_str().replace('_', " ")), a.year, d, a.days_elapsed);
            let (p, b, u) = (num(c.projected, 0), num(c.budget, 0), &c.unit);
            parts.push((d, format!("{zh}（预计全年 {p} {u}，预算 {b} {u}）"), format!("{en} (projected {p} {u} for the year, budget {b} {u})"), c.projected, u.clone()));
        }
        let Some(first) = parts.iter().min_by_key(|p| p.0).map(|p| (p.3, p.4.clone())) else { continue };
        let zh: Vec<&str> = parts.iter().map(|p| p.1.as_str()).collect();
        let en: Vec<&str> = parts.iter().map(|p| p.2.as_str()).collect();
        out.push(Finding {
            key: a.agency.clone(),
            labels: BTreeMap::from([("agency".to_string(), a.agency.clone())]),
            summary_zh: format!("{}（{}）{}", a.name, a.agency, zh.join("；")),
            summary_en: format!("{} ({}): {}", a.name, a.agency, en.join("; ")),
            value: Some(first.0),
            unit: Some(first.1),
        });
    }
    out
}

/// Projected indicators of a year in progress above the quota band's `band` value (约束值, or
/// 基准值): one finding per agency and indicator, keyed `agency:indicator`, labelled with the
/// indicator; the value is the projected indicator in its unit.
pub fn quota_band(agencies: &[Outlook], band: BandLevel) -> Vec<Finding> {
    let mut out = Vec::new();
    if band == BandLevel::None {
        return out;
    }
    for a in agencies.iter().filter(|a| a.in_progress) {
        for b in &a.bands {
            let (over, limit, lz, le) = match band {
                BandLevel::Binding => (b.class == BandClass::AboveBinding, b.binding, "约束值", "binding value"),
                _ => (matches!(b.class, BandClass::AboveBinding | BandClass::AboveBenchmark), b.benchmark, "基准值", "benchmark value"),
            };
            if !over {
                continue;
            }
            let ind = b.indicator;
            let (p, l, u) = (num(b.projected, 2), num(limit, 2), &b.unit);
            out.push(Finding {
                key: format!("{}:{}", a.agency, ind.name()),
                labels: BTreeMap::from([("agency".to_string(), a.agency.clone()), ("indicator".to_string(), ind.name().to_string())]),
                summary_zh: format!("{}（{}）{} {} 年预计 {p} {}，高于定额{lz} {l} {}", a.name, a.agency, ind.name_zh(), a.year, unit_zh(u), unit_zh(u)),
                summary_en: format!("{} ({}): {} projected at {p} {u} for {}, above the quota's {le} of {l} {u}", a.name, a.agency, ind.name_en().to_lowercase(), a.year),
                value: Some(b.projected),
                unit: Some(u.clone()),
            });
        }
    }
    out
}

/// Agencies whose data coverage of the year so far is below `min`, unless the daemon started
/// less than `grace` ago (`now - started < grace`): until then the first readings may still be
/// on their way (gateways' queues, a seeding demo) and a low coverage says nothing. The value
/// is the coverage in percent.
pub fn data_completeness(agencies: &[Outlook], min: f64, now: i64, started: i64, grace: i64) -> Vec<Finding> {
    if now - started < grace {
        return Vec::new();
    }
    agencies
        .iter()
        .filter(|a| a.days_elapsed > 0 && a.coverage < min)
        .map(|a| Finding {
            key: a.agency.clone(),
            labels: BTreeMap::from([("agency".to_string(), a.agency.clone())]),
            summary_zh: format!("{}（{}）{} 年数据完整率 {:.1}%，低于 {}%", a.name, a.agency, a.year, a.coverage * 100.0, num(min * 100.0, 1)),
            summary_en: format!("{} ({}): data coverage of {} is {:.1}%, below {}%", a.name, a.agency, a.year, a.coverage * 100.0, num(min * 100.0, 1)),
            value: Some((a.coverage * 1000.0).round() / 10.0),
            unit: Some("%".to_string()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Disk space

/// `disk_space_low`'s threshold by default: 1 GiB.
pub const DISK_SPACE_LOW_BYTES: f64 = 1_073_741_824.0;

/// The free space on the data directory's file system (`None`: unknown) under `threshold`
/// bytes: one finding, keyed `data_dir`, its value the free bytes.
pub fn disk_space_low(free: Option<u64>, threshold: f64) -> Vec<Finding> {
    let Some(free) = free else { return Vec::new() };
    if free as f64 >= threshold {
        return Vec::new();
    }
    let mib = |b: f64| b / 1_048_576.0;
    vec![Finding {
        key: "data_dir".to_string(),
        labels: BTreeMap::new(),
        summary_zh: format!("数据目录所在磁盘可用空间 {:.1} MiB，低于告警阈值 {:.1} MiB；可用空间低于 storage.min_free_bytes 时将拒绝写入", mib(free as f64), mib(threshold)),
        summary_en: format!("{:.1} MiB free on the data directory's disk, under the alert threshold of {:.1} MiB; under storage.min_free_bytes writes are refused", mib(free as f64), mib(threshold)),
        value: Some(free as f64),
        unit: Some("B".to_string()),
    }]
}

#[cfg(test)]
mod disk_tests {
    use super::*;

    #[test]
    fn disk_space_low_fires_under_the_threshold_only() {
        // (free bytes, threshold, fires, summary in MiB): 524,288 B = 0.5 MiB; 1 GiB = 1024.0 MiB;
        // 1,073,741,823 B = 1023.999... MiB, shown 1024.0.
        let cases: [(Option<u64>, f64, bool, &str); 5] = [
            (Some(524_288), DISK_SPACE_LOW_BYTES, true, "0.5 MiB"),
            (Some(1_073_741_823), DISK_SPACE_LOW_BYTES, true, "1024.0 MiB"),
            (Some(1_073_741_824), DISK_SPACE_LOW_BYTES, false, ""),
            (Some(0), 1.0, true, "0.0 MiB"),
            (None, DISK_SPACE_LOW_BYTES, false, ""),
        ];
        for (free, threshold, fires, shown) in cases {
            let f = disk_space_low(free, threshold);
            assert_eq!(f.len(), usize::from(fires), "{free:?} {threshold}");
            if let Some(f) = f.first() {
                assert_eq!(f.key, "data_dir");
                assert_eq!(f.value, free.map(|b| b as f64));
                assert!(f.summary_en.starts_with(shown) && f.summary_zh.contains(shown), "{} / {}", f.summary_en, f.summary_zh);
                assert!(f.summary_zh.contains("可用空间"));
            }
        }
    }
}
