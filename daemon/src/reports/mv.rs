//! Measurement and verification (issue 23): the savings of a meter, a building, an agency or a
//! registered project, from the accounting's daily consumption (counter handling, meter events,
//! allocation shares: [`crate::accounting::query::consumption`]) and the weather meter's daily
//! mean temperatures, by the pure rules of [`crate::savings`]. The answer of
//! `GET /api/v1/savings` and the content of the M&V report.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use energy_wire::Carrier;
use serde::Serialize;

use crate::accounting::engine::Engine;
use crate::accounting::query::{consumption, scope_meters, QueryError, Subject};
use crate::registry::{Project, Registry};
use crate::savings::epc::{settle, Settlement};
use crate::savings::{self, weather::daily_means, Avoided, Day, Search};
use crate::store::{Store, StoreError};
use crate::time::{day_start, Interval};

/// A day counts when readings cover at least this share of it.
const DAY_COVERED: f64 = 0.9;

/// What the savings are of.
#[derive(Debug, Clone, Copy)]
pub enum MvSubject<'a> {
    Meter(&'a str),
    Building(&'a str),
    Agency(&'a str),
    Project(&'a Project),
}

/// A savings question: the subject, the periods (local dates, both included), the carrier.
#[derive(Debug, Clone)]
pub struct MvRequest<'a> {
    pub subject: MvSubject<'a>,
    pub baseline: Option<(NaiveDate, NaiveDate)>,
    pub reporting: Option<(NaiveDate, NaiveDate)>,
    pub carrier: Option<Carrier>,
}

/// Why there is no answer.
#[derive(Debug, thiserror::Error)]
pub enum MvError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize)]
pub struct PeriodOut {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: usize,
    pub days_with_data: usize,
    pub coverage: f64,
    pub months_short: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Coefficients {
    pub intercept: f64,
    pub beta_hdd: Option<f64>,
    pub beta_cdd: Option<f64>,
    pub p_value_hdd: Option<f64>,
    pub p_value_cdd: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ModelOut {
    pub form: &'static str,
    pub heating_balance_point_c: Option<f64>,
    pub cooling_balance_point_c: Option<f64>,
    pub coefficients: Coefficients,
    pub selection: &'static str,
}

#[derive(Debug, Serialize)]
pub struct FitOut {
    /// `cv_rmse` and `nmbe` are fractions (0.12 = 12 %), with n − p.
    #[serde(flatten)]
    pub stats: savings::FitStats,
    pub ashrae14_criteria: &'static str,
}

#[derive(Debug, Serialize)]
pub struct MonthOut {
    pub month: String,
    #[serde(flatten)]
    pub avoided: Avoided,
}

#[derive(Debug, Serialize)]
pub struct ReportingOut {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: usize,
    /// `avoided` = `predicted` (with the adjustments) − `observed`; `uncertainty_pct` at
    /// `confidence`, a percentage of `avoided`.
    #[serde(flatten)]
    pub total: Avoided,
    /// Non-routine adjustments added to `predicted`.
    pub adjustments: f64,
    pub confidence: f64,
    pub avoided_low: Option<f64>,
    pub avoided_high: Option<f64>,
    pub avoided_kgce: Option<f64>,
    pub avoided_co2_kg: Option<f64>,
    pub avoided_money: Option<f64>,
    pub price: Option<f64>,
    pub months: Vec<MonthOut>,
    /// Per contract year (twelve months from the reporting period's start), with a project's
    /// settlement of that year.
    pub contract_years: Vec<ContractYearOut>,
}

#[derive(Debug, Serialize)]
pub struct ContractYearOut {
    pub year: usize,
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(flatten)]
    pub avoided: Avoided,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
}

/// The raw comparison, without weather: mean daily use in the reporting period against the
/// baseline's.
#[derive(Debug, Serialize)]
pub struct RawOut {
    pub baseline_mean_daily: f64,
    pub reporting_mean_daily: f64,
    pub change_pct: Option<f64>,
    pub note: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ProjectOut {
    pub id: String,
    pub name: String,
    pub contract: crate::registry::ContractType,
    pub contract_zh: &'static str,
    pub esco: Option<String>,
    pub installation: Option<String>,
    pub share: Option<f64>,
    pub adjustments: Vec<crate::registry::Adjustment>,
    pub settlement: Option<Settlement>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct SavingsOut {
    pub scope: BTreeMap<&'static str, String>,
    pub carrier: Option<Carrier>,
    pub unit: &'static str,
    pub weather: String,
    pub timezone: &'static str,
    pub baseline: PeriodOut,
    pub model: ModelOut,
    pub fit: FitOut,
    pub reporting: ReportingOut,
    pub normalised: Option<savings::Normalised>,
    pub raw: RawOut,
    pub project: Option<ProjectOut>,
    pub warnings: Vec<String>,
    pub method: &'static str,
}

const METHOD: &str = "CalTRACK 2.0 daily methods (intercept-only, HDD, CDD, HDD+CDD; balance points -1..32 °C by 1 °C), IPMVP Option C avoided energy, ASHRAE Guideline 14-2014 statistics and fractional savings uncertainty; docs/savings.md";
const CRITERIA: &str = "ASHRAE Guideline 14: CV(RMSE) <= 15 % and |NMBE| <= 5 % (the monthly limits, applied to the daily model; hourly limits 30 % / 10 %)";
const SELECTION: &str = "the qualified candidate with the highest adjusted R² (CalTRACK 3.4.3.3)";

/// Daily use (None: not covered) of `subjects` from `from` to `to` (both included), in one
/// carrier or in kgce when they have several and none was chosen.
async fn daily_use(
    store: &Store,
    engine: &Engine,
    reg: &Registry,
    tz: Tz,
    subjects: &[Subject<'_>],
    carrier: Option<Carrier>,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<(Option<Carrier>, &'static str, Vec<Option<f64>>), MvError> {
    let days = ((to - from).num_days() + 1).max(0) as usize;
    let range = (day_start(tz, from), day_start(tz, to + chrono::Days::new(1)));
    let events = engine.events_by_meter();
    let mut by_carrier: BTreeMap<Carrier, (&'static str, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut meter_unit = None;
    for s in subjects {
        let scope = scope_meters(reg, *s, carrier, None)?;
        if let Subject::Meter(id) = s {
            meter_unit = reg.meter(id).map(|m| m.counter().unit());
        }
        let out = consumption(store, reg, &events, *s, &scope, (carrier, None), range, Interval::Day).await?;
        for (c, unit, periods) in out.carrier_periods() {
            let e = by_carrier.entry(c).or_insert_with(|| (unit, vec![0.0; days], vec![1.0; days]));
            for (i, (v, cov)) in periods.into_iter().enumerate().take(days) {
                e.1[i] += v;
                e.2[i] = e.2[i].min(cov);
            }
        }
    }
    let covered = |vals: &[f64], cov: &[f64]| -> Vec<Option<f64>> { vals.iter().zip(cov).map(|(v, c)| (*c >= DAY_COVERED && v.is_finite()).then_some(*v)).collect() };
    match by_carrier.len() {
        0 => Err(MvError::Invalid("no meter in scope measures the carrier asked; nothing to verify".into())),
        1 => {
            let (c, (unit, v, cov)) = by_carrier.into_iter().next().ok_or_else(|| MvError::Invalid("no carrier".into()))?;
            let unit = if subjects.len() == 1 { meter_unit.unwrap_or(unit) } else { unit };
            Ok((Some(c), unit, covered(&v, &cov)))
        }
        _ => {
            let mut total = vec![0.0; days];
            let mut cov_all = vec![1.0f64; days];
            for (c, (unit, v, cov)) in &by_carrier {
                let k = reg.kgce_per_unit(*c, *unit == "L");
                for i in 0..days {
                    total[i] += k * v[i];
                    cov_all[i] = cov_all[i].min(cov[i]);
                }
            }
            Ok((None, "kgce", covered(&total, &cov_all)))
        }
    }
}

/// The weather meter of the subject: the one most of its meters (or buildings) name.
fn weather_of(reg: &Registry, subjects: &[Subject<'_>], carrier: Option<Carrier>, warnings: &mut Vec<String>) -> Result<String, MvError> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for s in subjects {
        if let Subject::Building(b) = s {
            if let Some(w) = reg.building(b).and_then(|b| b.weather.clone()) {
                *count.entry(w).or_default() += 1;
                continue;
            }
        }
        for x in scope_meters(reg, *s, carrier, None)? {
            if let Some(w) = reg.weather_of_meter(x.meter) {
                *count.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    if count.len() > 1 {
        warnings.push(format!("the scope's meters name several weather meters ({}); the most named is used", count.keys().cloned().collect::<Vec<_>>().join(", ")));
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(w, _)| w).ok_or_else(|| {
        MvError::Invalid("no weather series: set `weather = \"METER_ID\"` (a meter whose outdoor_temperature is read) on the building or the meter in the registry".into())
    })
}

fn dates(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// Computes the savings.
pub async fn savings_of(store: &Store, engine: &Engine, reg: &Registry, tz: Tz, req: &MvRequest<'_>) -> Result<SavingsOut, MvError> {
    let mut warnings = Vec::new();
    let (subjects, scope_key, scope_id, project): (Vec<Subject<'_>>, &'static str, String, Option<&Project>) = match req.subject {
        MvSubject::Meter(id) => (vec![Subject::Meter(id)], "meter", id.to_string(), None),
        MvSubject::Building(id) => (vec![Subject::Building(id)], "building", id.to_string(), None),
        MvSubject::Agency(id) => (vec![Subject::Agency(id)], "agency", id.to_string(), None),
        MvSubject::Project(p) => (p.meters.iter().map(|m| Subject::Meter(m)).chain(p.buildings.iter().map(|b| Subject::Building(b))).collect(), "project", p.id.clone(), Some(p)),
    };
    let carrier = req.carrier.or(project.and_then(|p| p.carrier));
    let reporting = req
        .reporting
        .or_else(|| project.and_then(Project::reporting_range))
        .ok_or_else(|| MvError::Invalid("give `reporting=FROM/TO` (local dates, both included)".into()))?;
    // Default baseline: the 365 days before the reporting period (before the installation).
    let baseline = req.baseline.or_else(|| project.and_then(Project::baseline_range)).unwrap_or_else(|| (reporting.0 - chrono::Days::new(365), reporting.0 - chrono::Days::new(1)));
    if reporting.0 <= baseline.1 {
        return Err(MvError::Invalid(format!("the reporting period starts on {} but the baseline runs to {}; the periods cannot overlap", reporting.0, baseline.1)));
    }
    for (name, (a, b)) in [("baseline", baseline), ("reporting", reporting)] {
        if (b - a).num_days() > 3 * 366 {
            return Err(MvError::Invalid(format!("the {name} period is longer than three years")));
        }
    }
    let weather = weather_of(reg, &subjects, carrier, &mut warnings)?;
    let (carrier, unit, base_use) = daily_use(store, engine, reg, tz, &subjects, carrier, baseline).await?;
    let (_, _, rep_use) = daily_use(store, engine, reg, tz, &subjects, carrier, reporting).await?;
    let base_t = daily_means(store, &weather, tz, baseline.0, baseline.1).await?;
    let rep_t = daily_means(store, &weather, tz, reporting.0, reporting.1).await?;
    let base_days: Vec<Day> = dates(baseline.0, baseline.1).into_iter().zip(base_use.iter().zip(&base_t)).map(|(date, (u, t))| Day { date, usage: *u, temp: *t }).collect();
    let rep_days: Vec<Day> = dates(reporting.0, reporting.1).into_iter().zip(rep_use.iter().zip(&rep_t)).map(|(date, (u, t))| Day { date, usage: *u, temp: *t }).collect();
    let search = Search { cooling_forms: carrier != Some(Carrier::DistrictHeat) && carrier != Some(Carrier::NaturalGas), ..Search::caltrack() };
    let base = savings::baseline(&base_days, &search).map_err(|e| MvError::Invalid(format!("baseline {}/{}: {e}", baseline.0, baseline.1)))?;
    warnings.extend(base.warnings.iter().cloned());
    let rep_cov = savings::coverage(&rep_days);
    if rep_cov.fraction < savings::verify::MIN_COVERAGE {
        warnings.push(format!("the reporting period has data on {} of its {} days; savings are counted on those days only", rep_cov.days_with_data, rep_cov.days));
    }
    let adjustment: f64 = project.map_or(0.0, |p| rep_days.iter().filter(|d| d.usage.is_some() && d.temp.is_some()).map(|d| p.adjustment_on(d.date)).sum());
    let total = savings::avoided(&base, &rep_days, adjustment);
    let months: Vec<MonthOut> = savings::avoided_by_month(&base, &rep_days).into_iter().map(|(month, avoided)| MonthOut { month, avoided }).collect();
    let mut contract_years = Vec::new();
    let mut start = reporting.0;
    while start <= reporting.1 {
        let next = start.checked_add_months(chrono::Months::new(12)).unwrap_or(reporting.1 + chrono::Days::new(1));
        let end = (next - chrono::Days::new(1)).min(reporting.1);
        let ds: Vec<Day> = rep_days.iter().filter(|d| d.date >= start && d.date <= end).copied().collect();
        let adj: f64 = project.map_or(0.0, |p| ds.iter().filter(|d| d.usage.is_some() && d.temp.is_some()).map(|d| p.adjustment_on(d.date)).sum());
        let a = savings::avoided(&base, &ds, adj);
        let settlement = project.and_then(|p| {
            let price = p.price?;
            let guaranteed = p.guaranteed.unwrap_or(0.0) * ds.len() as f64 / 365.0;
            Some(settle(p.contract, a.avoided, a.predicted, price, p.share.unwrap_or(0.0), guaranteed))
        });
        contract_years.push(ContractYearOut { year: contract_years.len() + 1, from: start, to: end, avoided: a, settlement });
        start = next;
    }
    // Value: kgce, CO2, money.
    let year = reporting.1.year();
    let litre = unit == "L";
    let (kgce, co2) = match carrier {
        Some(c) => (Some(total.avoided * reg.kgce_per_unit(c, litre)), Some(total.avoided * reg.co2_per_unit(c, litre, year))),
        None => (Some(total.avoided), None),
    };
    let price = project.and_then(|p| p.price).or_else(|| carrier.and_then(|c| reg.tariff(c, year)).map(|t| t.price));
    let u = total.uncertainty_pct.map(|u| u / 100.0 * total.avoided.abs());
    // Typical year: the station's record, up to ten years before the baseline.
    let record_from = baseline.0 - chrono::Days::new(3650);
    let record = daily_means(store, &weather, tz, record_from, reporting.1).await?;
    let record: Vec<(NaiveDate, f64)> = dates(record_from, reporting.1).into_iter().zip(record).filter_map(|(d, t)| Some((d, t?))).collect();
    let typical = savings::typical_year(&record);
    let normalised = savings::normalised(&base.model, &rep_days, &typical, &search);
    let mean = |ds: &[Day]| {
        let v: Vec<f64> = ds.iter().filter_map(|d| d.usage).collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (bm, rm) = (mean(&base_days), mean(&rep_days));
    let project_out = project.map(|p| {
        let settlement = p.price.map(|price| {
            let guaranteed = p.guaranteed.unwrap_or(0.0) * rep_days.len() as f64 / 365.0;
            settle(p.contract, total.avoided, total.predicted, price, p.share.unwrap_or(0.0), guaranteed)
        });
        ProjectOut {
            id: p.id.clone(),
            name: p.name.clone(),
            contract: p.contract,
            contract_zh: p.contract.zh(),
            esco: p.esco.clone(),
            installation: p.installation.clone(),
            share: p.share,
            adjustments: p.adjustments.clone(),
            settlement,
        }
    });
    let m = &base.model;
    Ok(SavingsOut {
        scope: BTreeMap::from([(scope_key, scope_id)]),
        carrier,
        unit,
        weather,
        timezone: tz.name(),
        baseline: PeriodOut {
            from: baseline.0,
            to: baseline.1,
            days: base.coverage.days,
            days_with_data: base.coverage.days_with_data,
            coverage: base.coverage.fraction,
            months_short: base.coverage.months_short.clone(),
        },
        model: ModelOut {
            form: m.form.as_str(),
            heating_balance_point_c: m.heating_bp,
            cooling_balance_point_c: m.cooling_bp,
            coefficients: Coefficients { intercept: m.intercept, beta_hdd: m.beta_hdd, beta_cdd: m.beta_cdd, p_value_hdd: m.p_hdd, p_value_cdd: m.p_cdd },
            selection: SELECTION,
        },
        fit: FitOut { stats: base.stats.clone(), ashrae14_criteria: CRITERIA },
        reporting: ReportingOut {
            from: reporting.0,
            to: reporting.1,
            days: rep_cov.days,
            adjustments: adjustment,
            total: total.clone(),
            confidence: savings::verify::CONFIDENCE,
            avoided_low: u.map(|u| total.avoided - u),
            avoided_high: u.map(|u| total.avoided + u),
            avoided_kgce: kgce,
            avoided_co2_kg: co2,
            avoided_money: price.map(|p| p * total.avoided),
            price,
            months,
            contract_years,
        },
        normalised,
        raw: RawOut {
            baseline_mean_daily: bm,
            reporting_mean_daily: rm,
            change_pct: (bm > 0.0).then(|| 100.0 * (rm - bm) / bm),
            note: "raw: mean daily use, reporting against baseline, no weather adjustment",
        },
        project: project_out,
        warnings,
        method: METHOD,
    })
}

// ---------------------------------------------------------------- assessment and plan

/// An agency's energy of a year, raw and weather-normalised (issue 23): the raw figure is the
/// metered kgce of the days covered; the normalised one is a daily model fitted on that year
/// (CalTRACK, as [`savings_of`]) predicting a typical year's weather. Both are stated; which one
/// the assessment scores is `[assessment] score_on`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormalisedFigure {
    pub agency: String,
    pub kind: String,
    pub weather: String,
    pub days: usize,
    /// Metered, kgce, the days covered of the year.
    pub raw_kgce: f64,
    pub raw_last_year_kgce: Option<f64>,
    /// Change of the mean daily raw use against last year's, percent.
    pub raw_change_pct: Option<f64>,
    /// Typical-year use, kgce per year, from this year's model and last year's.
    pub normalised_kgce: Option<f64>,
    pub normalised_last_year_kgce: Option<f64>,
    pub normalised_change_pct: Option<f64>,
    pub model_form: Option<&'static str>,
    pub cv_rmse: Option<f64>,
    /// Why a normalised figure is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl NormalisedFigure {
    /// normalised ÷ raw on the same (annualised) basis, the factor the assessment applies to an
    /// agency's energy indicators when it scores on normalised figures.
    pub fn factor(&self) -> Option<f64> {
        let annual_raw = self.raw_kgce * 365.0 / self.days.max(1) as f64;
        self.normalised_kgce.filter(|_| annual_raw > 0.0).map(|n| n / annual_raw)
    }
}

/// One year's daily kgce of an agency (the days before `now_ms`), from the engine's year.
fn daily_kgce(y: &crate::accounting::engine::YearData, reg: &Registry, agency: &str, days: usize) -> Vec<Option<f64>> {
    let mut v = vec![0.0; days];
    let mut cov = vec![1.0f64; days];
    let mut any = false;
    for (key, s) in y.groups(&[agency]) {
        let k = reg.kgce_per_unit(key.0, key.2);
        if k == 0.0 {
            continue;
        }
        any = true;
        for d in 0..days.min(s.value.len()) {
            v[d] += s.value[d] * k;
            cov[d] = cov[d].min(s.coverage[d]);
        }
    }
    v.into_iter().zip(cov).map(|(x, c)| (any && c >= DAY_COVERED).then_some(x)).collect()
}

/// The raw and normalised energy of every agency with a weather series, `year` to `now_ms`.
pub async fn normalised_figures(engine: &Engine, store: &Store, reg: &Registry, tz: Tz, year: i32, now_ms: i64) -> Result<Vec<NormalisedFigure>, MvError> {
    let mut out = Vec::new();
    let Some(jan1) = NaiveDate::from_ymd_opt(year, 1, 1) else { return Ok(out) };
    let Some(last_jan1) = NaiveDate::from_ymd_opt(year - 1, 1, 1) else { return Ok(out) };
    let with_weather: Vec<_> = reg.file.agencies.iter().filter_map(|a| weather_of(reg, &[Subject::Agency(&a.id)], None, &mut Vec::new()).ok().map(|w| (a, w))).collect();
    if with_weather.is_empty() {
        return Ok(out);
    }
    let this = engine.year(store, reg, year).await.map_err(|e| MvError::Invalid(e.to_string()))?;
    let last = engine.year(store, reg, year - 1).await.map_err(|e| MvError::Invalid(e.to_string()))?;
    let days = this.cal.days_before(now_ms);
    let last_days = last.cal.days();
    let search = Search::caltrack();
    let mut typical_by_weather: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (a, w) in with_weather {
        if !typical_by_weather.contains_key(&w) {
            let from = jan1 - chrono::Days::new(3650);
            let to = jan1 + chrono::Days::new(days.saturating_sub(1) as u64);
            let rec = daily_means(store, &w, tz, from, to).await?;
            let rec: Vec<(NaiveDate, f64)> = dates(from, to).into_iter().zip(rec).filter_map(|(d, t)| Some((d, t?))).collect();
            typical_by_weather.insert(w.clone(), savings::typical_year(&rec));
        }
        let typical = &typical_by_weather[&w];
        let fit_year = |use_: Vec<Option<f64>>, temps: Vec<Option<f64>>, start: NaiveDate| -> (Result<savings::Baseline, savings::BaselineError>, f64, usize) {
            let ds: Vec<Day> = dates(start, start + chrono::Days::new(use_.len().saturating_sub(1) as u64)).into_iter().zip(use_.iter().zip(&temps)).map(|(date, (u, t))| Day { date, usage: *u, temp: *t }).collect();
            let raw: f64 = use_.iter().flatten().sum();
            let n = use_.iter().flatten().count();
            (savings::baseline(&ds, &search), raw, n)
        };
        let u_this = daily_kgce(&this, reg, &a.id, days);
        let t_this = daily_means(store, &w, tz, jan1, jan1 + chrono::Days::new(days.saturating_sub(1) as u64)).await?;
        let u_last = daily_kgce(&last, reg, &a.id, last_days);
        let t_last = daily_means(store, &w, tz, last_jan1, last_jan1 + chrono::Days::new(last_days.saturating_sub(1) as u64)).await?;
        let (b_this, raw, n) = fit_year(u_this, t_this, jan1);
        let (b_last, raw_last, n_last) = fit_year(u_last, t_last, last_jan1);
        let predict = |b: &savings::Baseline| -> f64 { typical.iter().map(|&t| b.model.predict(t)).sum::<f64>() * 365.0 / typical.len().max(1) as f64 };
        let norm = b_this.as_ref().ok().filter(|_| !typical.is_empty()).map(predict);
        let norm_last = b_last.as_ref().ok().filter(|_| !typical.is_empty()).map(predict);
        let mean = |x: f64, n: usize| (n > 0).then(|| x / n as f64);
        let change = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(100.0 * (a - b) / b),
            _ => None,
        };
        out.push(NormalisedFigure {
            agency: a.id.clone(),
            kind: a.kind.clone(),
            weather: w,
            days,
            raw_kgce: raw,
            raw_last_year_kgce: (n_last > 0).then_some(raw_last),
            raw_change_pct: change(mean(raw, n), mean(raw_last, n_last)),
            normalised_kgce: norm,
            normalised_last_year_kgce: norm_last,
            normalised_change_pct: change(norm, norm_last),
            model_form: b_this.as_ref().ok().map(|b| b.model.form.as_str()),
            cv_rmse: b_this.as_ref().ok().map(|b| b.stats.cv_rmse),
            note: b_this.as_ref().err().map(|e| e.to_string()),
        });
    }
    Ok(out)
}

/// An agency's place in the plan's audit and retrofit list: its expected savings, kgce per
/// year, are what it would save at its kind's median weather-normalised intensity (kgce/m²
/// under the typical year): max(0, (its intensity − the median) × its floor area).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrofitCandidate {
    pub rank: usize,
    pub agency: String,
    pub kind: String,
    pub normalised_kgce_per_m2: f64,
    pub kind_median_kgce_per_m2: f64,
    pub expected_savings_kgce: f64,
    pub audit_required: bool,
}

/// Ranks the agencies by expected savings (largest first); `areas` are their floor areas and
/// `audit` those the plan already requires an audit of.
pub fn rank_retrofits(figures: &[NormalisedFigure], areas: &BTreeMap<String, f64>, audit: &[String]) -> Vec<RetrofitCandidate> {
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let intensity = |f: &NormalisedFigure| -> Option<f64> { Some(f.normalised_kgce? / areas.get(&f.agency).copied().filter(|a| *a > 0.0)?) };
    for f in figures {
        if let Some(i) = intensity(f) {
            by_kind.entry(f.kind.as_str()).or_default().push(i);
        }
    }
    let median = |v: &mut Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let medians: BTreeMap<&str, f64> = by_kind.iter_mut().map(|(k, v)| (*k, median(v))).collect();
    let mut out: Vec<RetrofitCandidate> = figures
        .iter()
        .filter_map(|f| {
            let i = intensity(f)?;
            let m = *medians.get(f.kind.as_str())?;
            let area = *areas.get(&f.agency)?;
            Some(RetrofitCandidate {
                rank: 0,
                agency: f.agency.clone(),
                kind: f.kind.clone(),
                normalised_kgce_per_m2: i,
                kind_median_kgce_per_m2: m,
                expected_savings_kgce: ((i - m) * area).max(0.0),
                audit_required: audit.contains(&f.agency),
            })
        })
        .filter(|c| c.expected_savings_kgce > 0.0 || c.audit_required)
        .collect();
    out.sort_by(|a, b| b.expected_savings_kgce.total_cmp(&a.expected_savings_kgce).then(a.agency.cmp(&b.agency)));
    for (i, c) in out.iter_mut().enumerate() {
        c.rank = i + 1;
    }
    out
}

/// The figures scored when `[assessment] score_on = "weather_normalised"`: each agency's
/// energy indicators (total, per area, per person) times its normalised ÷ raw factor; agencies
/// without a normalised figure keep their raw ones.
pub fn scored_normalised(mut figures: Vec<crate::accounting::indicators::AgencyIndicators>, normalised: &[NormalisedFigure]) -> Vec<crate::accounting::indicators::AgencyIndicators> {
    use crate::registry::Indicator;
    for f in &mut figures {
        let Some(k) = normalised.iter().find(|n| n.agency == f.agency).and_then(NormalisedFigure::factor) else { continue };
        for v in f.indicators.iter_mut().filter(|v| matches!(v.indicator, Indicator::TotalEnergy | Indicator::EnergyPerArea | Indicator::EnergyPerBuildingArea | Indicator::EnergyPerPerson)) {
            v.value = v.value.map(|x| x * k);
            v.projected = v.projected.map(|x| x * k);
        }
        f.notes.push(format!("energy indicators scored weather-normalised (factor {k:.4})"));
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(agency: &str, kind: &str, norm: f64) -> NormalisedFigure {
        NormalisedFigure {
            agency: agency.into(),
            kind: kind.into(),
            weather: "w".into(),
            days: 365,
            raw_kgce: norm,
            raw_last_year_kgce: None,
            raw_change_pct: None,
            normalised_kgce: Some(norm),
            normalised_last_year_kgce: None,
            normalised_change_pct: None,
            model_form: Some("hdd"),
            cv_rmse: Some(0.05),
            note: None,
        }
    }

    /// Three offices of 1000 m² at 10, 20 and 40 kgce/m² (median 20): the 40 one could save
    /// (40 − 20) × 1000 = 20 000 kgce, the others nothing; a school alone in its kind is its
    /// own median and is listed only because an audit is required.
    #[test]
    fn retrofits_are_ranked_by_expected_savings() {
        let figs = [fig("a", "office", 10_000.0), fig("b", "office", 20_000.0), fig("c", "office", 40_000.0), fig("s", "school", 50_000.0)];
        let areas: BTreeMap<String, f64> = [("a", 1000.0), ("b", 1000.0), ("c", 1000.0), ("s", 2000.0)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let r = rank_retrofits(&figs, &areas, &["s".to_string()]);
        assert_eq!(r.iter().map(|c| (c.agency.as_str(), c.rank, c.expected_savings_kgce)).collect::<Vec<_>>(), vec![("c", 1, 20_000.0), ("s", 2, 0.0)]);
        assert!(r[1].audit_required);
        // The factor: normalised 36 500 over a raw 100 per day for 365 days = 1.
        let mut f = fig("a", "office", 36_500.0);
        f.raw_kgce = 36_500.0;
        assert_eq!(f.factor(), Some(1.0));
        f.days = 182;
        f.raw_kgce = 18_200.0;
        assert_eq!(f.factor(), Some(1.0));
    }
}
