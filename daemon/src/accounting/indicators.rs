//! Indicators of one agency and year (reference, sections 2-6), against quota bands, reduction
//! targets and budgets, year to date and projected to the year's end. Pure.
//!
//! * Total energy (综合能耗) sums every carrier times its kgce coefficient; water is apart.
//! * Area indicators use the agency's share of its buildings' floor area less garages, data
//!   centres and canteens, and leave out special loads (data centre, kitchen, EV charging) and
//!   transport; per-person indicators use the whole total (DB37/T 2671).
//! * Heating energy is the energy of meters whose end use is heating (district heat and steam
//!   by default), over the heated area.
//! * **Projection** of a year in progress, per carrier and end use: when last year's data of the
//!   same group is complete, this year so far times last year's whole year over last year's same
//!   period (the season's shape, heating included, comes from last year); otherwise the trend so
//!   far: non-heating energy at the daily rate so far over the remaining days, heating energy at
//!   the rate per heating-season day over the heating-season days left (so a projection made in
//!   summer does not spread winter's heating over the rest of the year).
//! * Bands classify the whole-year value, or the projection for a year in progress.

use std::collections::BTreeMap;

use energy_wire::Carrier;
use serde::Serialize;

use super::allocate::GroupKey;
use super::ledger::{Series, YearCalendar};
use crate::registry::{Agency, AgencyAreas, EndUse, Indicator, Registry};

/// Which side of the quota band a value is on (DB37/T 2671 Annex A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BandClass {
    /// Above 约束值: must rectify; an energy audit and a retrofit are required.
    AboveBinding,
    /// Between 基准值 and 约束值: improve towards 基准值 year by year.
    AboveBenchmark,
    /// Between 引导值 and 基准值: encouraged towards 引导值.
    AboveGuide,
    /// At or below 引导值: sets its own saving goals.
    AtOrBelowGuide,
}

impl BandClass {
    pub fn of(value: f64, binding: f64, benchmark: f64, guide: f64) -> BandClass {
        if value > binding {
            BandClass::AboveBinding
        } else if value > benchmark {
            BandClass::AboveBenchmark
        } else if value > guide {
            BandClass::AboveGuide
        } else {
            BandClass::AtOrBelowGuide
        }
    }
    pub fn name_zh(self) -> &'static str {
        match self {
            BandClass::AboveBinding => "高于约束值",
            BandClass::AboveBenchmark => "介于基准值与约束值之间",
            BandClass::AboveGuide => "介于引导值与基准值之间",
            BandClass::AtOrBelowGuide => "不高于引导值",
        }
    }
    pub fn name_en(self) -> &'static str {
        match self {
            BandClass::AboveBinding => "above binding value",
            BandClass::AboveBenchmark => "between benchmark and binding",
            BandClass::AboveGuide => "between guide and benchmark",
            BandClass::AtOrBelowGuide => "at or below guide value",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    pub source: String,
    pub binding: f64,
    pub benchmark: f64,
    pub guide: f64,
    pub class: BandClass,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `reduction` or `budget`.
    pub kind: &'static str,
    pub label: Option<String>,
    /// The value not to exceed this year.
    pub value: f64,
    pub baseline_year: Option<i32>,
    pub baseline_value: Option<f64>,
    /// Met by the whole-year value (or, in progress, the projection).
    pub met: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorValue {
    pub indicator: Indicator,
    pub unit: &'static str,
    /// The whole year, or the year so far.
    pub value: Option<f64>,
    /// Projected to the year's end (a year in progress), else the value.
    pub projected: Option<f64>,
    pub last_year: Option<f64>,
    /// Change of the (projected) value against last year, percent.
    pub change_pct: Option<f64>,
    pub band: Option<Band>,
    pub target: Option<Target>,
}

/// Consumption of one carrier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarrierFigure {
    pub carrier: Carrier,
    pub unit: &'static str,
    pub value: f64,
    pub projected: f64,
    pub kgce: f64,
    pub co2_kg: f64,
    pub cost_yuan: f64,
    pub estimated: f64,
    pub budget: Option<f64>,
    /// The day (0-based in the year) the budget is or will be crossed.
    pub budget_crossed_day: Option<usize>,
}

/// Quality of the data behind the figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    /// Share of the elapsed period covered by readings, 0..=1.
    pub coverage: f64,
    /// Share of the energy measured (the rest spread across gaps), 0..=1.
    pub measured_share: f64,
    pub complete: bool,
}

/// Sums of one day range, in natural units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub kgce: f64,
    pub kgce_area: f64,
    pub kgce_heating: f64,
    pub kgce_non_heating_area: f64,
    pub electricity_area_kwh: f64,
    pub water_m3: f64,
    pub co2_kg: f64,
    pub co2_area_kg: f64,
    pub cost_yuan: f64,
}

/// Everything about an agency's year.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgencyIndicators {
    pub agency: String,
    pub name: String,
    pub level: &'static str,
    pub kind: String,
    pub year: i32,
    /// Days of the year the figures cover (the whole year when closed).
    pub days_elapsed: usize,
    pub days_in_year: usize,
    pub in_progress: bool,
    pub projection_method: &'static str,
    pub electricity_basis: &'static str,
    pub floor_area: f64,
    pub heated_area: f64,
    pub headcount: Option<f64>,
    pub indicators: Vec<IndicatorValue>,
    pub carriers: Vec<CarrierFigure>,
    pub quality: Quality,
    /// The energy budget (kgce) crossing day, if any.
    pub energy_budget_crossed_day: Option<usize>,
    pub notes: Vec<String>,
}

impl AgencyIndicators {
    pub fn get(&self, i: Indicator) -> Option<&IndicatorValue> {
        self.indicators.iter().find(|x| x.indicator == i)
    }
}

/// Price per counter unit of a group in each month (time-of-use weighted by the month's hours).
fn monthly_prices(reg: &Registry, carrier: Carrier, year: i32, s: &Series) -> [f64; 12] {
    let Some(t) = reg.tariff(carrier, year) else { return [0.0; 12] };
    let price_at = |h: usize| -> f64 {
        t.tou
            .iter()
            .find(|b| {
                let (f, to, h) = (usize::from(b.from), usize::from(b.to), h);
                if f < to {
                    (f..to).contains(&h)
                } else {
                    h >= f || h < to
                }
            })
            .map_or(t.price, |b| b.price)
    };
    let mut out = [t.price; 12];
    if !t.tou.is_empty() {
        for (m, hod) in s.hod.iter().enumerate() {
            let total: f64 = hod.iter().sum();
            if total > 0.0 {
                out[m] = hod.iter().enumerate().map(|(h, v)| v * price_at(h)).sum::<f64>() / total;
            }
        }
    }
    out
}

/// Sums of days `[from, to)` of an agency's groups.
pub fn sums(reg: &Registry, year: i32, cal: &YearCalendar, groups: &BTreeMap<GroupKey, Series>, from: usize, to: usize) -> Sums {
    let mut out = Sums::default();
    for (&(carrier, end_use, litre), s) in groups {
        let v = s.sum(from, to);
        let kgce = v * reg.kgce_per_unit(carrier, litre);
        let co2 = v * reg.co2_per_unit(carrier, litre, year);
        let prices = monthly_prices(reg, carrier, year, s);
        let cost: f64 = (from..to.min(s.value.len())).map(|d| s.value[d] * prices[usize::from(cal.day_month[d])]).sum();
        let area_part = !end_use.is_special() && end_use != EndUse::Transport;
        out.kgce += kgce;
        out.co2_kg += co2;
        out.cost_yuan += cost;
        if area_part {
            out.kgce_area += kgce;
            out.co2_area_kg += co2;
            if end_use == EndUse::Heating {
                out.kgce_heating += kgce;
            } else {
                out.kgce_non_heating_area += kgce;
            }
            if carrier == Carrier::Electricity {
                out.electricity_area_kwh += v;
            }
        }
        if carrier == Carrier::Water {
            out.water_m3 += v;
        }
    }
    out
}

/// Indicator values from sums.
pub fn values(s: &Sums, areas: &AgencyAreas, headcount: Option<f64>) -> BTreeMap<Indicator, Option<f64>> {
    let per = |x: f64, d: f64| if d > 0.0 { Some(x / d) } else { None };
    let a = areas.floor_area;
    let mut m = BTreeMap::new();
    m.insert(Indicator::TotalEnergy, Some(s.kgce));
    m.insert(Indicator::EnergyPerArea, per(s.kgce_area, a));
    m.insert(Indicator::NonHeatingEnergyPerArea, per(s.kgce_non_heating_area, a));
    m.insert(Indicator::HeatingEnergyPerHeatedArea, per(s.kgce_heating, areas.heated_area));
    m.insert(Indicator::EnergyPerPerson, headcount.and_then(|h| per(s.kgce, h)));
    m.insert(Indicator::WaterPerPerson, headcount.and_then(|h| per(s.water_m3, h)));
    m.insert(Indicator::ElectricityPerArea, per(s.electricity_area_kwh, a));
    m.insert(Indicator::CarbonTotal, Some(s.co2_kg / 1000.0));
    m.insert(Indicator::CarbonPerArea, per(s.co2_area_kg, a));
    m.insert(Indicator::EnergyCost, Some(s.cost_yuan));
    m.insert(Indicator::WaterTotal, Some(s.water_m3));
    m
}

/// Projection of each group to the year's end; the method used.
pub fn project(
    reg: &Registry,
    cal: &YearCalendar,
    groups: &BTreeMap<GroupKey, Series>,
    last: Option<(&YearCalendar, &BTreeMap<GroupKey, Series>)>,
    as_of: usize,
    complete: f64,
) -> (BTreeMap<GroupKey, Series>, &'static str) {
    let days = cal.days();
    if as_of >= days {
        return (groups.clone(), "none: the year is closed");
    }
    let season = &reg.file.accounting.heating_season;
    let heating_day: Vec<bool> = cal
        .day_bounds
        .iter()
        .take(days)
        .map(|&d| {
            let t = chrono::DateTime::from_timestamp_millis(d + 43_200_000).map(|t| t.naive_utc());
            t.is_some_and(|t| {
                use chrono::Datelike;
                season.contains(t.month(), t.day())
            })
        })
        .collect();
    let mut used_last = 0;
    let mut used_trend = 0;
    let mut out = BTreeMap::new();
    for (key, s) in groups {
        let ytd = s.sum(0, as_of);
        let mut p = s.clone();
        // Days after as_of get a share of the rest.
        let rest: f64;
        let mut weights = vec![0.0; days];
        let ly = last.and_then(|(lcal, lg)| lg.get(key).map(|l| (lcal, l))).filter(|(lcal, l)| l.coverage_of(0, lcal.days()) >= complete);
        match ly {
            Some((lcal, l)) if l.sum(0, as_of.min(lcal.days())) > 0.0 => {
                let same = l.sum(0, as_of.min(lcal.days()));
                rest = ytd * l.total() / same - ytd;
                for (d, w) in weights.iter_mut().enumerate().skip(as_of) {
                    *w = l.value.get(d.min(lcal.days() - 1)).copied().unwrap_or(0.0).max(0.0);
                }
                used_last += 1;
            }
            _ => {
                let heating = key.1 == EndUse::Heating;
                let elapsed: Vec<usize> = (0..as_of).filter(|&d| !heating || heating_day[d]).collect();
                let remaining: Vec<usize> = (as_of..days).filter(|&d| !heating || heating_day[d]).collect();
                rest = if elapsed.is_empty() { 0.0 } else { ytd / elapsed.len() as f64 * remaining.len() as f64 };
                for d in remaining {
                    weights[d] = 1.0;
                }
                used_trend += 1;
            }
        }
        let wsum: f64 = weights.iter().sum();
        for d in as_of..days {
            p.value[d] = if wsum > 0.0 { rest * weights[d] / wsum } else { 0.0 };
            p.estimated[d] = p.value[d];
        }
        out.insert(*key, p);
    }
    let method = match (used_last, used_trend) {
        (0, 0) => "none: no data",
        (_, 0) => "last year's profile",
        (0, _) => "trend so far (heating per heating-season day)",
        _ => "mixed: last year's profile where complete, else the trend so far",
    };
    (out, method)
}

/// Inputs of [`indicators`].
pub struct Input<'a> {
    pub reg: &'a Registry,
    pub agency: &'a Agency,
    pub cal: &'a YearCalendar,
    pub groups: &'a BTreeMap<GroupKey, Series>,
    pub last: Option<(&'a YearCalendar, &'a BTreeMap<GroupKey, Series>)>,
    /// Days of the year with data to count (the whole year when closed).
    pub as_of: usize,
    /// Indicator values of baseline years, for reduction targets without a given baseline.
    pub baselines: &'a BTreeMap<(Indicator, i32), f64>,
}

/// An agency's indicators for a year.
pub fn indicators(i: &Input<'_>) -> AgencyIndicators {
    let reg = i.reg;
    let year = i.cal.year;
    let days = i.cal.days();
    let as_of = i.as_of.min(days);
    let in_progress = as_of < days;
    let areas = reg.agency_areas(&i.agency.id);
    let headcount = i.agency.headcount(year);
    let complete_at = reg.file.accounting.complete_coverage;
    let now = sums(reg, year, i.cal, i.groups, 0, as_of);
    let (projected_groups, method) = project(reg, i.cal, i.groups, i.last, as_of, complete_at);
    let proj = sums(reg, year, i.cal, &projected_groups, 0, days);
    let last = i.last.map(|(lcal, lg)| sums(reg, year - 1, lcal, lg, 0, lcal.days()));
    let last_head = i.agency.headcount(year - 1);
    let v_now = values(&now, &areas, headcount);
    let v_proj = values(&proj, &areas, headcount);
    let v_last = last.as_ref().map(|l| values(l, &areas, last_head));
    let mut notes = Vec::new();
    let mut out_ind = Vec::new();
    for ind in Indicator::ALL {
        let value = v_now.get(&ind).copied().flatten();
        let projected = if in_progress { v_proj.get(&ind).copied().flatten() } else { value };
        let last_year = v_last.as_ref().and_then(|m| m.get(&ind).copied().flatten());
        let change_pct = match (projected, last_year) {
            (Some(p), Some(l)) if l.abs() > 1e-12 => Some((p - l) / l * 100.0),
            _ => None,
        };
        let band = reg.quota(i.agency, ind).zip(projected).map(|(q, v)| Band {
            source: q.source.clone(),
            binding: q.binding,
            benchmark: q.benchmark,
            guide: q.guide,
            class: BandClass::of(v, q.binding, q.benchmark, q.guide),
        });
        let mut target = None;
        if let Some(r) = reg.reductions(&i.agency.id, year).into_iter().find(|r| r.indicator == ind) {
            let base = r.baseline_value.or_else(|| i.baselines.get(&(ind, r.baseline_year)).copied());
            match base {
                Some(b) => {
                    let frac = f64::from(year - r.baseline_year) / f64::from(r.target_year - r.baseline_year);
                    let t = b * (1.0 - r.percent / 100.0 * frac);
                    target = Some(Target {
                        kind: "reduction",
                        label: r.label.clone(),
                        value: t,
                        baseline_year: Some(r.baseline_year),
                        baseline_value: Some(b),
                        met: projected.is_some_and(|p| p <= t + 1e-9),
                    });
                }
                None => notes.push(format!("{}: no data for the baseline year {} and no baseline_value given", ind.name(), r.baseline_year)),
            }
        }
        if target.is_none() {
            if let Some(b) = reg.budget(&i.agency.id, year) {
                let budget = match ind {
                    Indicator::TotalEnergy => b.energy_kgce,
                    Indicator::EnergyCost => b.cost_yuan,
                    Indicator::WaterTotal => b.carriers.get(&Carrier::Water).copied(),
                    _ => None,
                };
                if let Some(v) = budget {
                    target = Some(Target { kind: "budget", label: None, value: v, baseline_year: None, baseline_value: None, met: projected.is_some_and(|p| p <= v + 1e-9) });
                }
            }
        }
        out_ind.push(IndicatorValue { indicator: ind, unit: ind.unit(), value, projected, last_year, change_pct, band, target });
    }
    // Per carrier.
    let mut carriers: BTreeMap<Carrier, CarrierFigure> = BTreeMap::new();
    let budget = reg.budget(&i.agency.id, year);
    let mut cum_kgce = vec![0.0; days];
    for (key, s) in &projected_groups {
        let (carrier, _, litre) = *key;
        let actual = &i.groups[key];
        let e = carriers.entry(carrier).or_insert_with(|| CarrierFigure {
            carrier,
            unit: carrier.counter().unit(),
            value: 0.0,
            projected: 0.0,
            kgce: 0.0,
            co2_kg: 0.0,
            cost_yuan: 0.0,
            estimated: 0.0,
            budget: budget.and_then(|b| b.carriers.get(&carrier).copied()),
            budget_crossed_day: None,
        });
        let v = actual.sum(0, as_of);
        e.value += v;
        e.projected += s.total();
        e.kgce += v * reg.kgce_per_unit(carrier, litre);
        e.co2_kg += v * reg.co2_per_unit(carrier, litre, year);
        e.estimated += actual.estimated[..as_of].iter().sum::<f64>();
        let k = reg.kgce_per_unit(carrier, litre);
        for (d, x) in s.value.iter().enumerate() {
            cum_kgce[d] += x * k;
        }
    }
    for (key, s) in i.groups {
        let prices = monthly_prices(reg, key.0, year, s);
        if let Some(e) = carriers.get_mut(&key.0) {
            e.cost_yuan += (0..as_of).map(|d| s.value[d] * prices[usize::from(i.cal.day_month[d])]).sum::<f64>();
        }
    }
    for (carrier, e) in carriers.iter_mut() {
        if let Some(b) = e.budget {
            let mut cum = 0.0;
            let mut daily = vec![0.0; days];
            for (key, s) in &projected_groups {
                if key.0 == *carrier {
                    for (d, x) in s.value.iter().enumerate() {
                        daily[d] += x;
                    }
                }
            }
            for (d, x) in daily.iter().enumerate() {
                cum += x;
                if cum > b + 1e-9 {
                    e.budget_crossed_day = Some(d);
                    break;
                }
            }
        }
    }
    let energy_budget_crossed_day = budget.and_then(|b| b.energy_kgce).and_then(|b| {
        let mut cum = 0.0;
        cum_kgce.iter().position(|x| {
            cum += x;
            cum > b + 1e-9
        })
    });
    // Quality over the elapsed days, weighted by group.
    let covs: Vec<f64> = i.groups.values().map(|s| s.coverage_of(0, as_of)).collect();
    let coverage = if covs.is_empty() { 0.0 } else { covs.iter().sum::<f64>() / covs.len() as f64 };
    let est_kgce: f64 = i.groups.iter().map(|(k, s)| s.estimated[..as_of].iter().sum::<f64>() * reg.kgce_per_unit(k.0, k.2)).sum();
    let measured_share = if now.kgce > 0.0 { (1.0 - est_kgce / now.kgce).clamp(0.0, 1.0) } else if coverage > 0.0 { 1.0 } else { 0.0 };
    if headcount.is_none() {
        notes.push(format!("no headcount for {year}: per-person indicators are not computed"));
    }
    if areas.floor_area <= 0.0 {
        notes.push("the agency occupies no building: area indicators are not computed".into());
    }
    if est_kgce > 0.0 {
        notes.push(format!("{:.1}% of the energy is estimated across gaps in the readings", 100.0 * est_kgce / now.kgce.max(1e-12)));
    }
    AgencyIndicators {
        agency: i.agency.id.clone(),
        name: i.agency.name.clone(),
        level: i.agency.level.as_str(),
        kind: i.agency.kind.clone(),
        year,
        days_elapsed: as_of,
        days_in_year: days,
        in_progress,
        projection_method: if in_progress { method } else { "none: the year is closed" },
        electricity_basis: match reg.file.accounting.electricity_basis {
            crate::registry::ElectricityBasis::Calorific => "calorific (当量值)",
            crate::registry::ElectricityBasis::Equivalent => "equivalent (等价值)",
        },
        floor_area: areas.floor_area,
        heated_area: areas.heated_area,
        headcount,
        indicators: out_ind,
        carriers: carriers.into_values().collect(),
        quality: Quality { coverage, measured_share, complete: coverage >= complete_at },
        energy_budget_crossed_day,
        notes,
    }
}
