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
//!   period (the season's shape, heating included, comes from last year; when last year's same
//!   period had nothing, last year's rest as it was); otherwise the trend so
//!   far: non-heating energy at the daily rate so far over the remaining days, heating energy at
//!   the rate per heating-season day over the heating-season days left (so a projection made in
//!   summer does not spread winter's heating over the rest of the year).
//! * Bands classify the whole-year value, or the projection for a year in progress.
//! * **Completeness** is per indicator, over every carrier behind it ([`uses`]): with no
//!   reading of any of them in the elapsed days (or no meter at all) the indicator has
//!   [`DataStatus::NoData`] and no value; with one of them covered less than
//!   `accounting.complete_coverage` it is [`DataStatus::Incomplete`]: the value so far is kept,
//!   but it has no projection, no band class, no target judgement and no last-year change. Only
//!   complete figures reach averages, rankings and scores (reports, `model::assessment`).
//!   Last year's value of an indicator is given only when last year's data of it is complete.
//! * Two per-area figures, each on one basis ([`crate::registry::AreaBasis`]):
//!   `energy_per_building_area` (statistics: the whole 综合能耗 over the building area) and
//!   `energy_per_area` (quota: special loads and transport out of the energy, excluded areas out
//!   of the area); the other per-area indicators are on the quota basis.

use std::collections::BTreeMap;

use energy_wire::Carrier;
use serde::Serialize;

use super::allocate::GroupKey;
use super::ledger::{Series, YearCalendar};
use crate::registry::{Agency, AgencyAreas, AreaBasis, EndUse, Indicator, Registry};

/// Whether an indicator's data can be shown, compared and scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataStatus {
    Complete,
    /// Some carrier behind it is covered less than the completeness threshold.
    Incomplete,
    /// No meter behind it, or no reading of any in the period.
    NoData,
}

impl DataStatus {
    pub fn name_zh(self) -> &'static str {
        match self {
            DataStatus::Complete => "数据完整",
            DataStatus::Incomplete => "数据不完整",
            DataStatus::NoData => "无数据",
        }
    }
    pub fn name_en(self) -> &'static str {
        match self {
            DataStatus::Complete => "complete",
            DataStatus::Incomplete => "incomplete data",
            DataStatus::NoData => "no data",
        }
    }
}

/// Quality of the data behind one indicator, over every carrier it sums.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorQuality {
    /// The lowest coverage of the carriers behind it over the elapsed days, 0..=1.
    pub coverage: f64,
    /// Share measured (the rest spread across gaps), weighted as the indicator sums, 0..=1.
    pub measured_share: f64,
    /// Part of it is estimated across gaps.
    pub estimated: bool,
}

/// Whether a consumption group is behind an indicator.
pub fn uses(ind: Indicator, key: GroupKey) -> bool {
    let (carrier, end_use, _) = key;
    let energy = carrier != Carrier::Water;
    let area_part = !end_use.is_special() && end_use != EndUse::Transport;
    match ind {
        Indicator::TotalEnergy | Indicator::EnergyPerBuildingArea | Indicator::EnergyPerPerson | Indicator::CarbonTotal => energy,
        Indicator::EnergyPerArea | Indicator::CarbonPerArea => energy && area_part,
        Indicator::NonHeatingEnergyPerArea => energy && area_part && end_use != EndUse::Heating,
        Indicator::HeatingEnergyPerHeatedArea => energy && area_part && end_use == EndUse::Heating,
        Indicator::ElectricityPerArea => carrier == Carrier::Electricity && area_part,
        Indicator::WaterPerPerson | Indicator::WaterTotal => carrier == Carrier::Water,
        Indicator::EnergyCost => true,
    }
}

/// The data status and quality of `ind` over days `[0, upto)` of `groups`: no group behind it or
/// none read is no data; the lowest coverage below `complete` is incomplete.
pub fn indicator_quality(reg: &Registry, year: i32, groups: &BTreeMap<GroupKey, Series>, ind: Indicator, upto: usize, complete: f64) -> (DataStatus, IndicatorQuality) {
    let mut coverage = f64::INFINITY;
    let (mut est, mut total, mut any) = (0.0, 0.0, false);
    for (k, s) in groups.iter().filter(|(k, _)| uses(ind, **k)) {
        coverage = coverage.min(s.coverage_of(0, upto));
        // Weighted as the indicator sums: kgce for energy, natural units for one carrier, yuan
        // (the flat price) for cost.
        let w = match ind {
            Indicator::WaterPerPerson | Indicator::WaterTotal | Indicator::ElectricityPerArea => 1.0,
            Indicator::EnergyCost => reg.tariff(k.0, year).map_or(0.0, |t| t.price),
            _ => reg.kgce_per_unit(k.0, k.2),
        };
        let e: f64 = s.estimated[..upto.min(s.estimated.len())].iter().sum();
        est += e * w;
        total += s.sum(0, upto) * w;
        any |= e > 0.0;
    }
    if !coverage.is_finite() || coverage <= 0.0 {
        return (DataStatus::NoData, IndicatorQuality { coverage: 0.0, measured_share: 0.0, estimated: false });
    }
    let measured_share = if total > 0.0 { (1.0 - est / total).clamp(0.0, 1.0) } else { 1.0 };
    let status = if coverage + 1e-12 >= complete { DataStatus::Complete } else { DataStatus::Incomplete };
    (status, IndicatorQuality { coverage, measured_share, estimated: any })
}

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
    /// Where the band comes from: the standard (as the quota row names it), its year and table,
    /// and whether it is the shipped example table's.
    pub source: String,
    pub source_year: Option<i32>,
    pub source_table: Option<String>,
    pub example: bool,
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
    /// Whether the data behind it is complete; when not, no projection, band, target or change.
    pub data: DataStatus,
    /// Quality of the data of every carrier behind it.
    pub quality: IndicatorQuality,
    /// The basis of a per-area figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<AreaBasis>,
    /// A quota band applies to it (whether or not its data allows a class).
    pub has_quota: bool,
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
    /// `cost_yuan` by time-of-use band ([`super::tariff`]); empty without a tariff.
    pub cost_bands: Vec<super::tariff::BandCost>,
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
    /// Meters whose counter went down without a recorded replacement: an engineer must check
    /// them (their consumption after the drop is left out until an event explains it).
    pub meters_to_check: Vec<String>,
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
    // The hours of each band as the cost split by band reads them (super::tariff).
    let slots = super::tariff::hour_slots(t);
    let price_at = |h: usize| -> f64 { slots[h].map_or(t.price, |i| t.tou[i].price) };
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
    m.insert(Indicator::EnergyPerBuildingArea, per(s.kgce, areas.building_area));
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
            Some((lcal, l)) => {
                // Scaled by this year against last year's same period; when that period had
                // nothing, last year's rest as it was.
                let same = l.sum(0, as_of.min(lcal.days()));
                rest = if same > 0.0 { ytd * l.total() / same - ytd } else { l.total() - same };
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
    let year_start = chrono::NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or_default();
    // Areas over the days counted (an agency that moved follows its occupancy).
    let areas = reg.agency_areas_over(&i.agency.id, year_start, as_of.max(1));
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
    let mut incomplete: Vec<String> = Vec::new();
    for ind in Indicator::ALL {
        let (data, quality) = indicator_quality(reg, year, i.groups, ind, as_of, complete_at);
        let complete = data == DataStatus::Complete;
        let value = v_now.get(&ind).copied().flatten().filter(|_| data != DataStatus::NoData);
        let projected = if in_progress { v_proj.get(&ind).copied().flatten() } else { value }.filter(|_| complete);
        let last_complete = i.last.is_some_and(|(lcal, lg)| indicator_quality(reg, year - 1, lg, ind, lcal.days(), complete_at).0 == DataStatus::Complete);
        let last_year = v_last.as_ref().and_then(|m| m.get(&ind).copied().flatten()).filter(|_| last_complete);
        let change_pct = match (projected, last_year) {
            (Some(p), Some(l)) if l.abs() > 1e-12 => Some((p - l) / l * 100.0),
            _ => None,
        };
        let quota = reg.quota(i.agency, ind);
        let band = quota.zip(projected).map(|(q, v)| band_of(q, v));
        if data == DataStatus::Incomplete {
            incomplete.push(format!("{} ({:.1}%)", ind.name(), quality.coverage * 100.0));
        }
        let target = if complete { target_of(i, ind, projected, &mut notes) } else { None };
        out_ind.push(IndicatorValue { indicator: ind, unit: ind.unit(), value, projected, last_year, change_pct, band, target, data, quality, basis: ind.area_basis(), has_quota: quota.is_some() });
    }
    if !incomplete.is_empty() {
        notes.push(format!("incomplete data, not projected, classed, judged or scored: {}", incomplete.join(", ")));
    }
    let (carriers, energy_budget_crossed_day) = carrier_figures(i, &projected_groups, as_of);
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
        meters_to_check: Vec::new(),
        notes,
    }
}

/// The figures per carrier of the days counted (`as_of`), the projected year, the budgets and
/// the day each budget is crossed (of the carrier's own, and of the energy in kgce).
fn carrier_figures(i: &Input<'_>, projected_groups: &BTreeMap<GroupKey, Series>, as_of: usize) -> (BTreeMap<Carrier, CarrierFigure>, Option<usize>) {
    let reg = i.reg;
    let year = i.cal.year;
    let days = i.cal.days();
    let mut carriers: BTreeMap<Carrier, CarrierFigure> = BTreeMap::new();
    let budget = reg.budget(&i.agency.id, year);
    let mut cum_kgce = vec![0.0; days];
    for (key, s) in projected_groups {
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
            cost_bands: Vec::new(),
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
            super::tariff::merge(&mut e.cost_bands, super::tariff::group_bands(reg, key.0, year, i.cal, s, (0, as_of)));
        }
    }
    for (carrier, e) in carriers.iter_mut() {
        if let Some(b) = e.budget {
            let mut daily = vec![0.0; days];
            for (key, s) in projected_groups {
                if key.0 == *carrier {
                    for (d, x) in s.value.iter().enumerate() {
                        daily[d] += x;
                    }
                }
            }
            e.budget_crossed_day = crossed_day(&daily, b);
        }
    }
    let energy_budget_crossed_day = budget.and_then(|b| b.energy_kgce).and_then(|b| crossed_day(&cum_kgce, b));
    (carriers, energy_budget_crossed_day)
}

/// The first day on which the running sum of `daily` exceeds `budget`.
fn crossed_day(daily: &[f64], budget: f64) -> Option<usize> {
    let mut cum = 0.0;
    daily.iter().position(|x| {
        cum += x;
        cum > budget + 1e-9
    })
}

/// The quota band a value falls in.
fn band_of(q: &crate::registry::Quota, v: f64) -> Band {
    Band {
        source: q.source.clone(),
        source_year: q.edition_year(),
        source_table: q.table.clone(),
        example: q.is_example(),
        binding: q.binding,
        benchmark: q.benchmark,
        guide: q.guide,
        class: BandClass::of(v, q.binding, q.benchmark, q.guide),
    }
}

/// The target of an indicator with complete data: the agency's reduction target covering the
/// year (from its baseline value, or the baseline year's figure), else its budget of the year.
/// A reduction without a baseline is noted, and the budget applies.
fn target_of(i: &Input<'_>, ind: Indicator, projected: Option<f64>, notes: &mut Vec<String>) -> Option<Target> {
    let reg = i.reg;
    let year = i.cal.year;
    if let Some(r) = reg.reductions(&i.agency.id, year).into_iter().find(|r| r.indicator == ind) {
        let base = r.baseline_value.or_else(|| i.baselines.get(&(ind, r.baseline_year)).copied());
        match base {
            Some(b) => {
                let frac = f64::from(year - r.baseline_year) / f64::from(r.target_year - r.baseline_year);
                let t = b * (1.0 - r.percent / 100.0 * frac);
                return Some(Target {
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
    let b = reg.budget(&i.agency.id, year)?;
    let budget = match ind {
        Indicator::TotalEnergy => b.energy_kgce,
        Indicator::EnergyCost => b.cost_yuan,
        Indicator::WaterTotal => b.carriers.get(&Carrier::Water).copied(),
        _ => None,
    }?;
    Some(Target { kind: "budget", label: None, value: budget, baseline_year: None, baseline_value: None, met: projected.is_some_and(|p| p <= budget + 1e-9) })
}

/// Per-area and per-person figures of an aggregate over the members' summed areas and
/// headcounts (the computation divides by the bureau agency's own). Targets are per agency and are
/// left out of aggregates; band classes are recomputed.
pub fn aggregate_over(reg: &Registry, f: &mut AgencyIndicators, members: &[String]) {
    let year = f.year;
    let (mut floor, mut building, mut heated, mut head, mut head_last) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut head_known = true;
    let start = chrono::NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or_default();
    let days = f.days_elapsed.max(1);
    for m in members {
        let a = reg.agency_areas_over(m, start, days);
        floor += a.floor_area;
        building += a.building_area;
        heated += a.heated_area;
        match reg.agency(m).and_then(|a| a.headcount(year)) {
            Some(h) => head += h,
            None => head_known = false,
        }
        head_last += reg.agency(m).and_then(|a| a.headcount(year - 1)).unwrap_or(0.0);
    }
    let own = reg.agency_areas_over(&f.agency, start, days);
    let own_head = reg.agency(&f.agency).and_then(|a| a.headcount(year));
    let own_head_last = reg.agency(&f.agency).and_then(|a| a.headcount(year - 1));
    let ratio = |own: f64, sum: f64| if own > 0.0 && sum > 0.0 { Some(own / sum) } else { None };
    for v in &mut f.indicators {
        let (k_now, k_last) = match v.indicator {
            Indicator::EnergyPerArea | Indicator::NonHeatingEnergyPerArea | Indicator::ElectricityPerArea | Indicator::CarbonPerArea => {
                (ratio(own.floor_area, floor), ratio(own.floor_area, floor))
            }
            Indicator::EnergyPerBuildingArea => (ratio(own.building_area, building), ratio(own.building_area, building)),
            Indicator::HeatingEnergyPerHeatedArea => (ratio(own.heated_area, heated), ratio(own.heated_area, heated)),
            Indicator::EnergyPerPerson | Indicator::WaterPerPerson => {
                (own_head.and_then(|h| ratio(h, if head_known { head } else { 0.0 })), own_head_last.and_then(|h| ratio(h, head_last)))
            }
            _ => (Some(1.0), Some(1.0)),
        };
        v.value = v.value.zip(k_now).map(|(x, k)| x * k);
        v.projected = v.projected.zip(k_now).map(|(x, k)| x * k);
        v.last_year = v.last_year.zip(k_last).map(|(x, k)| x * k);
        v.change_pct = match (v.projected, v.last_year) {
            (Some(p), Some(l)) if l.abs() > 1e-12 => Some((p - l) / l * 100.0),
            _ => None,
        };
        if let (Some(b), Some(p)) = (v.band.as_mut(), v.projected) {
            b.class = BandClass::of(p, b.binding, b.benchmark, b.guide);
        }
        if v.projected.is_none() {
            v.band = None;
        }
        v.target = None;
    }
    f.floor_area = floor;
    f.heated_area = heated;
    f.headcount = if head_known && head > 0.0 { Some(head) } else { None };
    f.notes.retain(|n| !n.starts_with("no headcount for") && !n.contains("occupies no building"));
    f.notes.push("aggregate: per-area and per-person figures over the members' summed areas and headcounts; targets are per agency".into());
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::allocate::{agency_groups, contributions, full_series};
    use crate::accounting::ledger::MeterYear;
    use std::collections::HashMap;

    const REG: &str = r#"
[[agency]]
id = "a"
name = "A"
level = "city"
headcount = { 2024 = 100 }
[[building]]
id = "b"
name = "B"
floor_area = 1200.0
heated_area = 800.0
excluded = [ { use = "garage", area = 200.0 } ]
occupants = [ { agency = "a", share = 1.0 } ]
[[meter]]
id = "elec"
building = "b"
carrier = "electricity"
[[meter]]
id = "kitchen"
building = "b"
carrier = "electricity"
parent = "elec"
end_use = "kitchen"
[[meter]]
id = "heat"
building = "b"
carrier = "district_heat"
[[meter]]
id = "water"
building = "b"
carrier = "water"
[[tariff]]
carrier = "electricity"
price = 0.6
[[quota]]
source = "DB37/T 2672-2019 (example)"
indicator = "non_heating_energy_per_area"
levels = ["city"]
binding = 21.9
benchmark = 14.9
guide = 7.2
[[budget]]
agency = "a"
year = 2025
energy_kgce = 30000.0
[[reduction]]
indicator = "energy_per_area"
baseline_year = 2020
target_year = 2025
percent = 5.0
baseline_value = 20.0
"#;

    fn groups_of(reg: &Registry, cal: &YearCalendar, per_day: &[(&str, Vec<f64>)]) -> BTreeMap<GroupKey, Series> {
        // Every meter fully covered; the ones not given read nothing.
        let years: HashMap<String, MeterYear> = reg
            .file
            .meters
            .iter()
            .map(|m| {
                let mut s = Series::zero(cal.days());
                s.coverage = vec![1.0; cal.days()];
                for (_, days) in per_day.iter().filter(|(id, _)| *id == m.id) {
                    s.value[..days.len()].copy_from_slice(days);
                }
                (m.id.clone(), MeterYear { series: s, flags: vec![], rejected: 0, rejected_readings: vec![], gaps: vec![] })
            })
            .collect();
        let full = full_series(reg, &years, cal.days());
        let (c, _) = contributions(reg, &full, chrono::NaiveDate::from_ymd_opt(cal.year, 1, 1).unwrap(), cal.days());
        agency_groups(c.iter(), cal.days())
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6 * b.abs().max(1.0))
    }

    /// A closed year worked by hand (see the numbers in the comments).
    #[test]
    fn a_closed_year_worked_by_hand() {
        let reg = Registry::parse(REG).unwrap();
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        // elec 110 000 kWh of which the kitchen 10 000; heat 500 GJ; water 3 000 m³.
        let g = groups_of(&reg, &cal, &[("elec", vec![110_000.0]), ("kitchen", vec![10_000.0]), ("heat", vec![500.0]), ("water", vec![3_000.0])]);
        let agency = reg.agency("a").unwrap();
        let r = indicators(&Input { reg: &reg, agency, cal: &cal, groups: &g, last: None, as_of: cal.days(), baselines: &BTreeMap::new() });
        let v = |i: Indicator| r.get(i).and_then(|x| x.value);
        // 110 000 × 0.1229 = 13 519; 500 × 34.12 = 17 060; total 30 579 kgce.
        assert!(close(v(Indicator::TotalEnergy), 30_579.0), "{:?}", v(Indicator::TotalEnergy));
        // Area 1200 - 200 garage = 1000 m². Per area leaves the kitchen out: (12 290 + 17 060) / 1000.
        assert!(close(v(Indicator::EnergyPerArea), 29.35));
        assert!(close(v(Indicator::NonHeatingEnergyPerArea), 12.29));
        assert!(close(v(Indicator::HeatingEnergyPerHeatedArea), 21.325));
        // Headcount of 2024 carries over to 2025.
        assert!(close(v(Indicator::EnergyPerPerson), 305.79));
        assert!(close(v(Indicator::WaterPerPerson), 30.0));
        assert!(close(v(Indicator::ElectricityPerArea), 100.0));
        // 2023 Shanxi grid factor 0.6634 (the latest not after 2025); heat 110 kg/GJ.
        // 110 000 × 0.6634 + 500 × 110 = 127 974 kg.
        assert!(close(v(Indicator::CarbonTotal), 127.974));
        assert!(close(v(Indicator::CarbonPerArea), (100_000.0 * 0.6634 + 55_000.0) / 1000.0));
        assert!(close(v(Indicator::EnergyCost), 66_000.0));
        let nh = r.get(Indicator::NonHeatingEnergyPerArea).unwrap();
        assert_eq!(nh.band.as_ref().unwrap().class, BandClass::AboveGuide);
        // -5 % from 20.0 by 2025: 19.0, missed.
        let t = r.get(Indicator::EnergyPerArea).unwrap().target.as_ref().unwrap();
        assert!((t.value - 19.0).abs() < 1e-9 && !t.met);
        // Budget 30 000 kgce, used 30 579: missed, crossed on day 0 (everything on day 0 here).
        let b = r.get(Indicator::TotalEnergy).unwrap().target.as_ref().unwrap();
        assert_eq!((b.kind, b.met), ("budget", false));
        assert_eq!(r.energy_budget_crossed_day, Some(0));
        assert!(!r.in_progress);
        assert_eq!(r.quality.measured_share, 1.0);
        // The statistics figure: the whole 30 579 kgce over the whole 1200 m² = 25.4825, beside
        // the quota figure 29.35 above (kitchen out, garage out).
        assert!(close(v(Indicator::EnergyPerBuildingArea), 25.4825));
        assert_eq!(r.get(Indicator::EnergyPerBuildingArea).unwrap().basis, Some(AreaBasis::Statistics));
        assert_eq!(r.get(Indicator::EnergyPerArea).unwrap().basis, Some(AreaBasis::Quota));
        assert!(r.indicators.iter().all(|x| x.data == DataStatus::Complete));
    }

    /// Issue 16, finding 5: an indicator's quality counts every carrier behind it. Water 3 000
    /// m³ of which 1 500 spread across a gap: water per person is estimated, measured share
    /// 0.5; total energy (no water behind it) is not.
    #[test]
    fn quality_counts_every_carrier_behind_an_indicator() {
        let reg = Registry::parse(REG).unwrap();
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        let mut g = groups_of(&reg, &cal, &[("elec", vec![110_000.0]), ("heat", vec![500.0]), ("water", vec![3_000.0])]);
        let water = g.iter_mut().find(|(k, _)| k.0 == Carrier::Water).unwrap().1;
        water.estimated[0] = 1_500.0;
        let agency = reg.agency("a").unwrap();
        let r = indicators(&Input { reg: &reg, agency, cal: &cal, groups: &g, last: None, as_of: cal.days(), baselines: &BTreeMap::new() });
        let q = |i: Indicator| r.get(i).unwrap().quality.clone();
        assert_eq!((q(Indicator::WaterPerPerson).estimated, q(Indicator::WaterPerPerson).measured_share), (true, 0.5));
        assert_eq!((q(Indicator::TotalEnergy).estimated, q(Indicator::TotalEnergy).measured_share), (false, 1.0));
    }

    /// Issue 16, finding 1: heat covered half the year is incomplete: the value so far stays,
    /// but no projection, band class, target or change; an indicator with no meter behind it has
    /// no value at all (never 0). Electricity alone is complete.
    #[test]
    fn incomplete_and_missing_data_are_said_not_scored() {
        let reg = Registry::parse(REG).unwrap();
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        let mut g = groups_of(&reg, &cal, &[("elec", vec![110_000.0]), ("heat", vec![500.0])]);
        let heat = g.iter_mut().find(|(k, _)| k.0 == Carrier::DistrictHeat).unwrap().1;
        for c in heat.coverage.iter_mut().skip(180) {
            *c = 0.0;
        }
        g.retain(|k, _| k.0 != Carrier::Water);
        let agency = reg.agency("a").unwrap();
        let r = indicators(&Input { reg: &reg, agency, cal: &cal, groups: &g, last: None, as_of: cal.days(), baselines: &BTreeMap::new() });
        let heat = r.get(Indicator::HeatingEnergyPerHeatedArea).unwrap();
        assert_eq!(heat.data, DataStatus::Incomplete);
        // Coverage 180 / 365 days.
        assert!((heat.quality.coverage - 180.0 / 365.0).abs() < 1e-9);
        assert!(heat.value.is_some() && heat.projected.is_none() && heat.band.is_none() && heat.target.is_none());
        // Total energy sums the heat too: incomplete; its budget is not judged.
        assert_eq!(r.get(Indicator::TotalEnergy).unwrap().data, DataStatus::Incomplete);
        assert!(r.get(Indicator::TotalEnergy).unwrap().target.is_none());
        let nh = r.get(Indicator::NonHeatingEnergyPerArea).unwrap();
        assert_eq!(nh.data, DataStatus::Complete);
        assert_eq!(nh.band.as_ref().map(|b| b.class), Some(BandClass::AboveGuide));
        let w = r.get(Indicator::WaterPerPerson).unwrap();
        assert_eq!((w.data, w.value, w.projected), (DataStatus::NoData, None, None));
    }

    /// A year in progress with no last year: the trend, heating per heating-season day.
    #[test]
    fn projection_by_trend_weights_the_heating_season() {
        let reg = Registry::parse(REG).unwrap();
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        // 100 days elapsed (to 10 April): electricity 1 000 kWh a day; heat 10 GJ a day in the
        // heating season (1 Jan - 31 Mar, 90 days).
        let elec = vec![1_000.0; 100];
        let heat: Vec<f64> = (0..100).map(|d| if d < 90 { 10.0 } else { 0.0 }).collect();
        let g = groups_of(&reg, &cal, &[("elec", elec), ("heat", heat)]);
        let agency = reg.agency("a").unwrap();
        let r = indicators(&Input { reg: &reg, agency, cal: &cal, groups: &g, last: None, as_of: 100, baselines: &BTreeMap::new() });
        let e = r.carriers.iter().find(|c| c.carrier == Carrier::Electricity).unwrap();
        // 100 000 so far; 1 000 a day over the 365 days.
        assert!((e.value - 100_000.0).abs() < 1e-6 && (e.projected - 365_000.0).abs() < 1e-6, "{e:?}");
        let h = r.carriers.iter().find(|c| c.carrier == Carrier::DistrictHeat).unwrap();
        // 900 GJ in 90 heating days; 61 heating days left (1 Nov - 31 Dec): 900 + 610.
        assert!((h.value - 900.0).abs() < 1e-6 && (h.projected - 1_510.0).abs() < 1e-6, "{h:?}");
        assert!(r.in_progress);
        assert!(r.projection_method.starts_with("trend"));
        // Budget 30 000 kgce: projected daily kgce crosses it; the day is reported.
        assert!(r.energy_budget_crossed_day.is_some());
    }

    /// With a complete last year, the projection follows last year's shape.
    #[test]
    fn projection_from_last_years_profile() {
        let reg = Registry::parse(REG).unwrap();
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        let lcal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2024).unwrap();
        // Last year: 2 000 a day for the first 100 days, 1 000 after: 200 000 + 266 000 = 466 000.
        let last: Vec<f64> = (0..366).map(|d| if d < 100 { 2_000.0 } else { 1_000.0 }).collect();
        let lg = groups_of(&reg, &lcal, &[("elec", last)]);
        // This year so far: 1 500 a day for 100 days = 150 000, i.e. 0.75 of last year's same
        // period: projected 0.75 × 466 000 = 349 500.
        let g = groups_of(&reg, &cal, &[("elec", vec![1_500.0; 100])]);
        let agency = reg.agency("a").unwrap();
        let r = indicators(&Input { reg: &reg, agency, cal: &cal, groups: &g, last: Some((&lcal, &lg)), as_of: 100, baselines: &BTreeMap::new() });
        let e = r.carriers.iter().find(|c| c.carrier == Carrier::Electricity).unwrap();
        assert!((e.projected - 349_500.0).abs() < 1e-6, "{e:?}");
        assert_eq!(r.projection_method, "last year's profile");
        let change = r.get(Indicator::ElectricityPerArea).unwrap().change_pct.unwrap();
        assert!((change - (349_500.0 / 466_000.0 - 1.0) * 100.0).abs() < 1e-6);
    }

    #[test]
    fn band_classes_at_the_edges() {
        for (v, want) in [
            (21.91, BandClass::AboveBinding),
            (21.9, BandClass::AboveBenchmark),
            (14.9, BandClass::AboveGuide),
            (7.2, BandClass::AtOrBelowGuide),
            (0.0, BandClass::AtOrBelowGuide),
        ] {
            assert_eq!(BandClass::of(v, 21.9, 14.9, 7.2), want, "{v}");
        }
    }
}
