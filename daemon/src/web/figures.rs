//! The figures a page shows for a subject (agencies, a building, a meter) over a period: the
//! engine's daily contributions (the same ones every indicator and report sums, so the page
//! equals the API) summed over the period's days, per carrier, end use and month.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use energy_wire::Carrier;

use crate::accounting::allocate::{agency_groups, Contribution, GroupKey};
use crate::accounting::engine::{Engine, EngineError};
use crate::accounting::indicators::sums;
use crate::accounting::ledger::Series;
use crate::registry::{EndUse, Registry};
use crate::store::Store;

use super::period::Period;

/// Whose figures.
#[derive(Debug, Clone)]
pub enum Subject {
    /// These agencies' own consumption (the jurisdiction: every agency shown).
    Agencies(Vec<String>),
    /// Everything a building's meters measure, every occupant's share.
    Building(String),
    /// One meter, every agency's share.
    Meter(String),
}

/// One carrier's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CarrierRow {
    pub value: f64,
    pub kgce: f64,
    pub co2_kg: f64,
    pub cost_yuan: f64,
}

/// A subject's figures over a period (to `cut` at the latest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub kgce: f64,
    pub co2_kg: f64,
    pub cost_yuan: f64,
    pub carriers: BTreeMap<Carrier, CarrierRow>,
    /// kgce per end use.
    pub end_uses: BTreeMap<EndUse, f64>,
    /// kgce per month (first day of the month).
    pub monthly: BTreeMap<NaiveDate, f64>,
    /// Days summed, and the mean share of their hours covered by readings (0..=1).
    pub days: usize,
    pub coverage: f64,
    /// Cost per carrier by time-of-use band (accounting::tariff).
    pub cost_bands: BTreeMap<Carrier, Vec<crate::accounting::tariff::BandCost>>,
}

impl Figures {
    pub fn carrier(&self, c: Carrier) -> f64 {
        self.carriers.get(&c).map_or(0.0, |r| r.value)
    }
}

fn subject_groups(y: &crate::accounting::engine::YearData, subject: &Subject) -> BTreeMap<GroupKey, Series> {
    let days = y.cal.days();
    match subject {
        Subject::Agencies(ids) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            y.groups(&ids)
        }
        Subject::Building(b) => agency_groups(y.contributions.iter().filter(|c: &&Contribution| &c.building == b), days),
        Subject::Meter(m) => agency_groups(y.contributions.iter().filter(|c: &&Contribution| &c.meter == m), days),
    }
}

/// Adds the days `[from, to)` of `year`'s groups to `out`.
fn add_days(out: &mut Figures, reg: &Registry, year: i32, cal: &crate::accounting::ledger::YearCalendar, groups: &BTreeMap<GroupKey, Series>, (from, to): (usize, usize)) {
    if to <= from {
        return;
    }
    let mut covered = 0.0;
    for (&key, s) in groups {
        let one: BTreeMap<GroupKey, Series> = BTreeMap::from([(key, s.clone())]);
        let x = sums(reg, year, cal, &one, from, to);
        let row = out.carriers.entry(key.0).or_default();
        row.value += s.sum(from, to);
        row.kgce += x.kgce;
        row.co2_kg += x.co2_kg;
        row.cost_yuan += x.cost_yuan;
        add_cost_bands(out, reg, year, cal, key.0, s, (from, to));
        *out.end_uses.entry(key.1).or_default() += x.kgce;
        out.kgce += x.kgce;
        out.co2_kg += x.co2_kg;
        out.cost_yuan += x.cost_yuan;
        let k = reg.kgce_per_unit(key.0, key.2);
        for d in from..to.min(s.value.len()) {
            let m = u32::from(cal.day_month[d]) + 1;
            if let Some(first) = NaiveDate::from_ymd_opt(year, m, 1) {
                *out.monthly.entry(first).or_default() += s.value[d] * k;
            }
        }
        covered += (from..to.min(s.coverage.len())).map(|d| s.coverage[d]).sum::<f64>() / groups.len() as f64;
    }
    let days_before = out.days;
    out.days += to - from;
    if out.days > 0 {
        out.coverage = (out.coverage * days_before as f64 + covered) / out.days as f64;
    }
}

/// Adds the cost by tariff band of one group's days `[from, to)` (the split adds up to the
/// group's `cost_yuan`: the same monthly hour-of-day pricing).
fn add_cost_bands(out: &mut Figures, reg: &Registry, year: i32, cal: &crate::accounting::ledger::YearCalendar, carrier: Carrier, s: &Series, days: (usize, usize)) {
    let bands = crate::accounting::tariff::group_bands(reg, carrier, year, cal, s, days);
    if !bands.is_empty() {
        crate::accounting::tariff::merge(out.cost_bands.entry(carrier).or_default(), bands);
    }
}

/// The engine's years one page uses, each computed once per request (a page compares a period
/// with the one before and a year earlier: the same years again).
pub struct Years<'a> {
    engine: &'a Engine,
    store: &'a Store,
    reg: &'a Registry,
    cache: std::collections::HashMap<i32, std::sync::Arc<crate::accounting::engine::YearData>>,
}

impl<'a> Years<'a> {
    pub fn new(engine: &'a Engine, store: &'a Store, reg: &'a Registry) -> Years<'a> {
        Years { engine, store, reg, cache: std::collections::HashMap::new() }
    }

    async fn get(&mut self, year: i32) -> Result<std::sync::Arc<crate::accounting::engine::YearData>, EngineError> {
        if let Some(y) = self.cache.get(&year) {
            return Ok(y.clone());
        }
        let y = self.engine.year(self.store, self.reg, year).await?;
        self.cache.insert(year, y.clone());
        Ok(y)
    }
}

/// The figures of `subject` over `period`, to the instant `cut_ms` at the latest (figures run
/// to the start of today, as the API's).
pub async fn figures(years: &mut Years<'_>, tz: chrono_tz::Tz, subject: &Subject, period: Period, cut_ms: i64) -> Result<Figures, EngineError> {
    let (from, to) = period.bounds();
    let reg = years.reg;
    let mut out = Figures::default();
    for year in from.year()..=to.pred_opt().unwrap_or(to).year() {
        let y = years.get(year).await?;
        let start_ms = crate::time::day_start(tz, from).timestamp_millis();
        let end_ms = crate::time::day_start(tz, to).timestamp_millis().min(cut_ms);
        let range = (y.cal.days_before(start_ms), y.cal.days_before(end_ms));
        let groups = subject_groups(&y, subject);
        add_days(&mut out, reg, year, &y.cal, &groups, range);
    }
    Ok(out)
}

/// The same days one year earlier: the cut moves back a year too, so a year to date is compared
/// with the same days of last year (同比).
pub fn year_before_cut(tz: chrono_tz::Tz, cut_ms: i64) -> i64 {
    let t = chrono::DateTime::from_timestamp_millis(cut_ms).map(|t| t.with_timezone(&tz).date_naive());
    match t.and_then(|d| d.checked_sub_months(chrono::Months::new(12))) {
        Some(d) => crate::time::day_start(tz, d).timestamp_millis(),
        None => cut_ms,
    }
}
