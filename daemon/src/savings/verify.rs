//! Coverage of a period, a fitted model's statistics and their ASHRAE Guideline 14 acceptance,
//! avoided energy in a reporting period with its fractional savings uncertainty, and normalised
//! savings under a typical year.
//!
//! Definitions (ASHRAE Guideline 14-2014, as the IPMVP and CalTRACK also use them), with n
//! observations, p model parameters, y the observed and ŷ the predicted use, ȳ the mean of y:
//! * R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²;
//! * CV(RMSE) = sqrt(Σ(y − ŷ)² / (n − p)) / ȳ;
//! * NMBE = Σ(y − ŷ) / ((n − p) · ȳ)  (both with the degrees-of-freedom correction n − p);
//! * acceptance: monthly CV(RMSE) <= 15 % and |NMBE| <= 5 %; hourly 30 % and 10 %. The guideline
//!   states no daily limits; a daily model is held to the monthly ones (the stricter reading),
//!   and its statistics aggregated to calendar months are reported beside.
//! * fractional savings uncertainty (Annex B, the Reddy–Claridge form):
//!   U = t · 1.26 · CV(RMSE) · sqrt((n / n′) · (1 + 2 / n′) · (1 / m)) / F, where m is the number
//!   of reporting days, F the savings fraction (avoided / predicted), ρ the lag-1
//!   autocorrelation of the baseline residuals, n′ = n · (1 − ρ) / (1 + ρ) the effective number of
//!   baseline points, and t Student's t at the stated confidence with n′ − p degrees of freedom.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use super::model::{fit, FitError, Model, Search};
use super::stats::t_quantile_two_sided;

/// CalTRACK 2.2.1.2: at least 90 % of the baseline's days with data.
pub const MIN_COVERAGE: f64 = 0.9;
/// A month with more than 10 % of its days missing is reported.
pub const MAX_MONTH_MISSING: f64 = 0.1;
/// The confidence level of the stated uncertainty.
pub const CONFIDENCE: f64 = 0.9;

/// One local day: its use (None: not measured) and its mean outdoor temperature (None: no
/// weather that day).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Day {
    pub date: NaiveDate,
    pub usage: Option<f64>,
    pub temp: Option<f64>,
}

impl Day {
    fn both(&self) -> Option<(f64, f64)> {
        Some((self.temp?, self.usage?))
    }
}

/// How complete a period is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    pub days: usize,
    pub days_with_data: usize,
    pub fraction: f64,
    /// Months (`YYYY-MM`) with more than 10 % of their days in the period missing.
    pub months_short: Vec<String>,
}

/// The coverage of `days` (consecutive local days of a period).
pub fn coverage(days: &[Day]) -> Coverage {
    let with = days.iter().filter(|d| d.both().is_some()).count();
    let mut by_month: BTreeMap<(i32, u32), (usize, usize)> = BTreeMap::new();
    for d in days {
        let e = by_month.entry((d.date.year(), d.date.month())).or_default();
        e.0 += 1;
        if d.both().is_some() {
            e.1 += 1;
        }
    }
    let months_short = by_month
        .into_iter()
        .filter(|(_, (all, with))| (*all - *with) as f64 > MAX_MONTH_MISSING * *all as f64)
        .map(|((y, m), _)| format!("{y:04}-{m:02}"))
        .collect();
    Coverage { days: days.len(), days_with_data: with, fraction: if days.is_empty() { 0.0 } else { with as f64 / days.len() as f64 }, months_short }
}

/// A model's statistics on the days it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitStats {
    pub n: usize,
    pub p: usize,
    pub r2: f64,
    pub adj_r2: f64,
    pub cv_rmse: f64,
    pub nmbe: f64,
    /// Lag-1 autocorrelation of the residuals (consecutive days with data).
    pub autocorrelation: f64,
    /// The same statistics over calendar-month sums (p unchanged).
    pub monthly_cv_rmse: Option<f64>,
    pub monthly_nmbe: Option<f64>,
    pub ashrae14_pass: bool,
}

/// ASHRAE Guideline 14 limits (CV(RMSE), |NMBE|), as fractions.
pub const ASHRAE14_MONTHLY: (f64, f64) = (0.15, 0.05);
pub const ASHRAE14_HOURLY: (f64, f64) = (0.30, 0.10);

/// R², CV(RMSE), NMBE of observed `y` against predicted `yhat` with `p` parameters.
pub fn goodness(y: &[f64], yhat: &[f64], p: usize) -> (f64, f64, f64) {
    let n = y.len();
    if n == 0 {
        return (0.0, f64::NAN, f64::NAN);
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let sse: f64 = y.iter().zip(yhat).map(|(a, b)| (a - b) * (a - b)).sum();
    let sst: f64 = y.iter().map(|a| (a - mean) * (a - mean)).sum();
    let bias: f64 = y.iter().zip(yhat).map(|(a, b)| a - b).sum();
    let dof = n.saturating_sub(p).max(1) as f64;
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else if sse <= 0.0 { 1.0 } else { 0.0 };
    (r2, (sse / dof).sqrt() / mean, bias / (dof * mean))
}

/// The statistics of `model` on the baseline `days`.
pub fn fit_stats(model: &Model, days: &[Day]) -> FitStats {
    let p = model.form.params();
    let pairs: Vec<(NaiveDate, f64, f64)> = days.iter().filter_map(|d| d.both().map(|(t, y)| (d.date, y, model.predict(t)))).collect();
    let y: Vec<f64> = pairs.iter().map(|x| x.1).collect();
    let yhat: Vec<f64> = pairs.iter().map(|x| x.2).collect();
    let n = y.len();
    let (r2, cv_rmse, nmbe) = goodness(&y, &yhat, p);
    let adj_r2 = if n > p { 1.0 - (1.0 - r2) * (n as f64 - 1.0) / (n - p) as f64 } else { r2 };
    // Lag-1 autocorrelation over consecutive days.
    let res: Vec<(NaiveDate, f64)> = pairs.iter().map(|(d, a, b)| (*d, a - b)).collect();
    let mean_r = if n > 0 { res.iter().map(|x| x.1).sum::<f64>() / n as f64 } else { 0.0 };
    let var: f64 = res.iter().map(|x| (x.1 - mean_r).powi(2)).sum();
    let cov: f64 = res.windows(2).filter(|w| w[1].0.signed_duration_since(w[0].0).num_days() == 1).map(|w| (w[0].1 - mean_r) * (w[1].1 - mean_r)).sum();
    let autocorrelation = if var > 0.0 { (cov / var).clamp(-0.99, 0.99) } else { 0.0 };
    // Calendar months.
    let mut months: BTreeMap<(i32, u32), (f64, f64)> = BTreeMap::new();
    for (d, a, b) in &pairs {
        let e = months.entry((d.year(), d.month())).or_default();
        e.0 += a;
        e.1 += b;
    }
    let (my, myhat): (Vec<f64>, Vec<f64>) = months.values().copied().unzip();
    let (monthly_cv_rmse, monthly_nmbe) = if my.len() > p {
        let (_, c, b) = goodness(&my, &myhat, p);
        (Some(c), Some(b))
    } else {
        (None, None)
    };
    let ashrae14_pass = cv_rmse.is_finite() && nmbe.is_finite() && cv_rmse <= ASHRAE14_MONTHLY.0 && nmbe.abs() <= ASHRAE14_MONTHLY.1;
    FitStats { n, p, r2, adj_r2, cv_rmse, nmbe, autocorrelation, monthly_cv_rmse, monthly_nmbe, ashrae14_pass }
}

/// Why a baseline was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error("the baseline has data on {with} of its {days} days ({pct:.1} %); at least 90 % is needed (CalTRACK 2.2.1.2)", pct = 100.0 * *.with as f64 / (*.days).max(1) as f64)]
    Coverage { days: usize, with: usize },
    #[error(transparent)]
    Fit(#[from] FitError),
}

/// A fitted baseline: the model, its statistics, the coverage, and warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub model: Model,
    pub stats: FitStats,
    pub coverage: Coverage,
    pub warnings: Vec<String>,
}

/// Fits the baseline on `days` (every local day of the baseline period): refused below 90 %
/// coverage; a month more than 10 % short and a period shorter than 365 days are warned about.
pub fn baseline(days: &[Day], search: &Search) -> Result<Baseline, BaselineError> {
    let cov = coverage(days);
    if cov.fraction < MIN_COVERAGE {
        return Err(BaselineError::Coverage { days: cov.days, with: cov.days_with_data });
    }
    let (temps, usage): (Vec<f64>, Vec<f64>) = days.iter().filter_map(Day::both).unzip();
    let model = fit(&temps, &usage, search)?;
    let stats = fit_stats(&model, days);
    let mut warnings = Vec::new();
    if !cov.months_short.is_empty() {
        warnings.push(format!("months with more than 10 % of days missing: {}", cov.months_short.join(", ")));
    }
    if days.len() < 365 {
        warnings.push(format!("the baseline is {} days; CalTRACK and the IPMVP ask for a full year (365 days) so that every season is in it", days.len()));
    }
    if !stats.ashrae14_pass {
        warnings.push(format!(
            "the model does not meet ASHRAE Guideline 14 (CV(RMSE) {:.1} % <= 15 %, |NMBE| {:.2} % <= 5 %)",
            100.0 * stats.cv_rmse,
            100.0 * stats.nmbe.abs()
        ));
    }
    Ok(Baseline { model, stats, coverage: cov, warnings })
}

/// Avoided energy over a reporting period (or one month of it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Avoided {
    /// Days with both use and weather (the only days counted).
    pub days_with_data: usize,
    pub observed: f64,
    pub predicted: f64,
    /// predicted − observed (+ non-routine adjustments, when given).
    pub avoided: f64,
    /// avoided / predicted, as a percentage.
    pub avoided_pct: Option<f64>,
    /// The fractional savings uncertainty at 90 % confidence, as a percentage of `avoided`.
    pub uncertainty_pct: Option<f64>,
}

/// The fractional savings uncertainty (ASHRAE 14 Annex B, see the module's notes), a fraction
/// of the savings; `None` when there are no savings to be a fraction of.
pub fn savings_uncertainty(stats: &FitStats, m: usize, fraction: f64) -> Option<f64> {
    if fraction <= 0.0 || m == 0 || stats.n <= stats.p || !stats.cv_rmse.is_finite() {
        return None;
    }
    let n = stats.n as f64;
    let rho = stats.autocorrelation.max(0.0);
    let n_eff = (n * (1.0 - rho) / (1.0 + rho)).max(stats.p as f64 + 1.0);
    let t = t_quantile_two_sided(CONFIDENCE, n_eff - stats.p as f64);
    Some(t * 1.26 * stats.cv_rmse * ((n / n_eff) * (1.0 + 2.0 / n_eff) / m as f64).sqrt() / fraction)
}

/// The avoided energy of `days` (reporting days) under `base`, plus `adjustment` (non-routine
/// adjustments, in the same unit, added to the prediction).
pub fn avoided(base: &Baseline, days: &[Day], adjustment: f64) -> Avoided {
    let mut n = 0;
    let (mut observed, mut predicted) = (0.0, 0.0);
    for (t, y) in days.iter().filter_map(Day::both) {
        n += 1;
        observed += y;
        predicted += base.model.predict(t);
    }
    predicted += adjustment;
    let avoided = predicted - observed;
    let fraction = if predicted > 0.0 { avoided / predicted } else { 0.0 };
    Avoided {
        days_with_data: n,
        observed,
        predicted,
        avoided,
        avoided_pct: (predicted > 0.0).then_some(100.0 * fraction),
        uncertainty_pct: savings_uncertainty(&base.stats, n, fraction).map(|u| 100.0 * u),
    }
}

/// [`avoided`] per calendar month of the reporting days (`YYYY-MM`).
pub fn avoided_by_month(base: &Baseline, days: &[Day]) -> Vec<(String, Avoided)> {
    let mut months: BTreeMap<(i32, u32), Vec<Day>> = BTreeMap::new();
    for d in days {
        months.entry((d.date.year(), d.date.month())).or_default().push(*d);
    }
    months.into_iter().map(|((y, m), ds)| (format!("{y:04}-{m:02}"), avoided(base, &ds, 0.0))).collect()
}

/// Normalised annual savings (IPMVP): the baseline model and a model fitted on the reporting
/// period both predict a typical year's days; their difference is the saving a typical year
/// would show. `None` when the reporting period cannot be fitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalised {
    pub typical_days: usize,
    pub baseline_use: f64,
    pub reporting_use: f64,
    pub savings: f64,
    pub savings_pct: Option<f64>,
}

pub fn normalised(base: &Model, reporting_days: &[Day], typical_temps: &[f64], search: &Search) -> Option<Normalised> {
    let (temps, usage): (Vec<f64>, Vec<f64>) = reporting_days.iter().filter_map(Day::both).unzip();
    let rep = fit(&temps, &usage, search).ok()?;
    if typical_temps.is_empty() {
        return None;
    }
    let b: f64 = typical_temps.iter().map(|&t| base.predict(t)).sum();
    let r: f64 = typical_temps.iter().map(|&t| rep.predict(t)).sum();
    Some(Normalised { typical_days: typical_temps.len(), baseline_use: b, reporting_use: r, savings: b - r, savings_pct: (b > 0.0).then(|| 100.0 * (b - r) / b) })
}

/// A typical year from a daily temperature record: the mean temperature of each day of the year
/// (1..=365; 29 February joins 28 February) over the years present. Days of the year with no
/// record are left out.
pub fn typical_year(record: &[(NaiveDate, f64)]) -> Vec<f64> {
    let mut sums = [(0.0f64, 0usize); 365];
    for (d, t) in record {
        let mut doy = d.ordinal0() as usize;
        if d.leap_year() && doy >= 59 {
            doy = doy.saturating_sub(1);
        }
        let e = &mut sums[doy.min(364)];
        e.0 += t;
        e.1 += 1;
    }
    sums.iter().filter(|(_, c)| *c > 0).map(|(s, c)| s / *c as f64).collect()
}
