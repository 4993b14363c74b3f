//! Degree days and the CalTRACK-family daily models: intercept only, HDD, CDD, HDD + CDD, each
//! fitted by ordinary least squares over a grid of balance points; the qualified candidate with
//! the highest adjusted R² is the model.
//!
//! Rules, and where they come from (CalTRACK 2.0 daily methods as the OpenEEmeter `eemeter`
//! compliance checklist, `docs/caltrack_compliance.rst`, states them):
//! * 3.2.1: balance points searched from 30 to 90 °F with at most 3 °F between candidates. Here
//!   in °C: every whole degree from −1 °C to 32 °C (30.2 to 89.6 °F, 1.8 °F apart).
//! * 3.2.2.1: in an HDD + CDD model the cooling balance point is at least the heating one.
//! * 3.2.2.2: a degree-day term needs at least 10 days with non-zero degree days and at least
//!   20 degree days in total in the baseline (°F-days in CalTRACK; we keep 20 °C-days, which is
//!   stricter since a °C-day is 1.8 °F-days).
//! * 3.4.3.2: a candidate with a negative (here: non-positive) degree-day coefficient is
//!   disqualified; CalTRACK 2.0 also disqualifies a coefficient whose p-value exceeds 0.1.
//! * 3.4.3.3: the best candidate is the one with the highest adjusted R².
//!
//! Fitting is O(1) per candidate: the days are sorted by temperature once and prefix sums of
//! T, T², y, T·y give every candidate's normal equations (a day has heating or cooling degree
//! days, never both, when the cooling balance point is at least the heating one, so the cross
//! term is zero).

use serde::Serialize;

use super::stats::t_two_sided_p;

/// Heating degree days of one day at balance point `bp`: max(0, bp − T).
pub fn hdd(t_mean: f64, bp: f64) -> f64 {
    (bp - t_mean).max(0.0)
}

/// Cooling degree days of one day at balance point `bp`: max(0, T − bp).
pub fn cdd(t_mean: f64, bp: f64) -> f64 {
    (t_mean - bp).max(0.0)
}

/// The model forms, named as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    Intercept,
    Hdd,
    Cdd,
    HddCdd,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Intercept => "intercept_only",
            Form::Hdd => "hdd",
            Form::Cdd => "cdd",
            Form::HddCdd => "hdd_cdd",
        }
    }
    /// Number of parameters (balance points not counted).
    pub fn params(self) -> usize {
        match self {
            Form::Intercept => 1,
            Form::Hdd | Form::Cdd => 2,
            Form::HddCdd => 3,
        }
    }
}

/// A fitted daily model: use per day = intercept + β_h·HDD(T, bp_h) + β_c·CDD(T, bp_c).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub form: Form,
    pub heating_bp: Option<f64>,
    pub cooling_bp: Option<f64>,
    pub intercept: f64,
    pub beta_hdd: Option<f64>,
    pub beta_cdd: Option<f64>,
    /// Two-sided p-values of the degree-day coefficients.
    pub p_hdd: Option<f64>,
    pub p_cdd: Option<f64>,
    pub adj_r2: f64,
}

impl Model {
    /// The predicted use of a day whose mean outdoor temperature is `t_mean`.
    pub fn predict(&self, t_mean: f64) -> f64 {
        let h = match (self.heating_bp, self.beta_hdd) {
            (Some(bp), Some(b)) => b * hdd(t_mean, bp),
            _ => 0.0,
        };
        let c = match (self.cooling_bp, self.beta_cdd) {
            (Some(bp), Some(b)) => b * cdd(t_mean, bp),
            _ => 0.0,
        };
        self.intercept + h + c
    }
}

/// How the grid search is run; [`Search::caltrack`] is the default.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub heating: Vec<f64>,
    pub cooling: Vec<f64>,
    /// Which forms are tried (CalTRACK tries no cooling forms for gas).
    pub cooling_forms: bool,
    pub min_nonzero_days: usize,
    pub min_total_degree_days: f64,
    pub max_p_value: f64,
}

impl Search {
    pub fn caltrack() -> Search {
        let grid: Vec<f64> = (-1..=32).map(f64::from).collect();
        Search { heating: grid.clone(), cooling: grid, cooling_forms: true, min_nonzero_days: 10, min_total_degree_days: 20.0, max_p_value: 0.1 }
    }
}

/// Why no model could be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("too few days with both consumption and temperature to fit a model ({0}; at least 10 needed)")]
    TooFewDays(usize),
}

/// Prefix sums over the days sorted by temperature.
struct Sorted {
    t: Vec<f64>,
    /// Prefix sums, length n + 1: Σ1 is the index.
    st: Vec<f64>,
    stt: Vec<f64>,
    sy: Vec<f64>,
    sty: Vec<f64>,
    syy: f64,
}

impl Sorted {
    fn new(temps: &[f64], usage: &[f64]) -> Sorted {
        let mut idx: Vec<usize> = (0..temps.len()).collect();
        idx.sort_by(|&a, &b| temps[a].total_cmp(&temps[b]));
        let n = idx.len();
        let (mut st, mut stt, mut sy, mut sty) = (vec![0.0; n + 1], vec![0.0; n + 1], vec![0.0; n + 1], vec![0.0; n + 1]);
        let mut t = Vec::with_capacity(n);
        let mut syy = 0.0;
        for (k, &i) in idx.iter().enumerate() {
            let (x, y) = (temps[i], usage[i]);
            t.push(x);
            st[k + 1] = st[k] + x;
            stt[k + 1] = stt[k] + x * x;
            sy[k + 1] = sy[k] + y;
            sty[k + 1] = sty[k] + x * y;
            syy += y * y;
        }
        Sorted { t, st, stt, sy, sty, syy }
    }
    fn n(&self) -> usize {
        self.t.len()
    }
    /// (non-zero days, Σdd, Σdd², Σdd·y) of heating degree days at `bp` (days with T < bp).
    fn heating(&self, bp: f64) -> (usize, f64, f64, f64) {
        let k = self.t.partition_point(|&x| x < bp);
        let kf = k as f64;
        (k, kf * bp - self.st[k], kf * bp * bp - 2.0 * bp * self.st[k] + self.stt[k], bp * self.sy[k] - self.sty[k])
    }
    /// The same of cooling degree days (days with T > bp).
    fn cooling(&self, bp: f64) -> (usize, f64, f64, f64) {
        let n = self.n();
        let j = self.t.partition_point(|&x| x <= bp);
        let m = (n - j) as f64;
        let (st, stt, sy, sty) = (self.st[n] - self.st[j], self.stt[n] - self.stt[j], self.sy[n] - self.sy[j], self.sty[n] - self.sty[j]);
        (n - j, st - m * bp, stt - 2.0 * bp * st + m * bp * bp, sty - bp * sy)
    }
}

/// One candidate's least-squares fit from its sums: the coefficients, SSE, and the diagonal of
/// (XᵀX)⁻¹ (for the coefficients' variances).
struct Ols {
    beta: [f64; 3],
    sse: f64,
    inv_diag: [f64; 3],
}

/// Ordinary least squares on the design [1, x₁(, x₂)] from the sums: `terms` are (Σx, Σx², Σx·y)
/// of each degree-day term; heating and cooling degree days never fall on the same day (the
/// cooling balance point is at least the heating one), so Σx₁·x₂ = 0 and XᵀX is
/// [[n, a, b], [a, A, 0], [b, 0, B]], solved in closed form by its adjugate. `None` when
/// singular (a term that is constant over the days).
fn ols(n: f64, sy: f64, syy: f64, terms: &[(f64, f64, f64)]) -> Option<Ols> {
    let (a, aa, p) = terms.first().copied().unwrap_or((0.0, 0.0, 0.0));
    let (b, bb, q) = terms.get(1).copied().unwrap_or((0.0, 0.0, 0.0));
    match terms.len() {
        1 => {
            let det = n * aa - a * a;
            if det <= 1e-12 * n * aa.max(1e-300) {
                return None;
            }
            let b1 = (n * p - a * sy) / det;
            let b0 = (sy - b1 * a) / n;
            Some(Ols { beta: [b0, b1, 0.0], sse: (syy - b0 * sy - b1 * p).max(0.0), inv_diag: [aa / det, n / det, 0.0] })
        }
        2 => {
            let det = n * aa * bb - a * a * bb - b * b * aa;
            if det <= 1e-12 * n * aa * bb {
                return None;
            }
            let (c00, c01, c02, c11, c12, c22) = (aa * bb, -a * bb, -aa * b, n * bb - b * b, a * b, n * aa - a * a);
            let b0 = (c00 * sy + c01 * p + c02 * q) / det;
            let b1 = (c01 * sy + c11 * p + c12 * q) / det;
            let b2 = (c02 * sy + c12 * p + c22 * q) / det;
            Some(Ols { beta: [b0, b1, b2], sse: (syy - b0 * sy - b1 * p - b2 * q).max(0.0), inv_diag: [c00 / det, c11 / det, c22 / det] })
        }
        _ => None,
    }
}

/// Fits every qualified candidate on the baseline days (`temps[i]`, `usage[i]` of the same day)
/// and returns the one with the highest adjusted R². The intercept-only model always qualifies.
pub fn fit(temps: &[f64], usage: &[f64], search: &Search) -> Result<Model, FitError> {
    let n = temps.len().min(usage.len());
    if n < 10 {
        return Err(FitError::TooFewDays(n));
    }
    let s = Sorted::new(&temps[..n], &usage[..n]);
    let nf = n as f64;
    let sy = s.sy[n];
    let sst = (s.syy - sy * sy / nf).max(0.0);
    let adj = |sse: f64, p: usize| -> f64 {
        if sst <= 0.0 || n <= p {
            return if sse <= 0.0 { 1.0 } else { 0.0 };
        }
        1.0 - (sse / sst) * (nf - 1.0) / (nf - p as f64)
    };
    let p_value = |beta: f64, inv: f64, sse: f64, p: usize| -> f64 {
        let dof = nf - p as f64;
        let var = sse / dof * inv;
        if var <= 0.0 {
            return if beta != 0.0 { 0.0 } else { 1.0 };
        }
        t_two_sided_p(beta / var.sqrt(), dof)
    };
    let mut best = Model { form: Form::Intercept, heating_bp: None, cooling_bp: None, intercept: sy / nf, beta_hdd: None, beta_cdd: None, p_hdd: None, p_cdd: None, adj_r2: adj(sst, 1) };
    let qualifies = |count: usize, total: f64| count >= search.min_nonzero_days && total >= search.min_total_degree_days;
    let heat: Vec<(f64, (usize, f64, f64, f64))> = search.heating.iter().map(|&bp| (bp, s.heating(bp))).filter(|(_, h)| qualifies(h.0, h.1)).collect();
    let cool: Vec<(f64, (usize, f64, f64, f64))> =
        if search.cooling_forms { search.cooling.iter().map(|&bp| (bp, s.cooling(bp))).filter(|(_, c)| qualifies(c.0, c.1)).collect() } else { Vec::new() };
    // Every candidate with positive degree-day coefficients, best adjusted R² first; the first
    // whose coefficients are significant is the model (so the t distribution is evaluated for a
    // few candidates, not hundreds).
    let mut cands: Vec<(f64, Model, Ols)> = Vec::new();
    let model = |form: Form, hbp: Option<f64>, cbp: Option<f64>, o: &Ols| {
        let (bh, bc) = match form {
            Form::Hdd => (Some(o.beta[1]), None),
            Form::Cdd => (None, Some(o.beta[1])),
            _ => (Some(o.beta[1]), Some(o.beta[2])),
        };
        Model { form, heating_bp: hbp, cooling_bp: cbp, intercept: o.beta[0], beta_hdd: bh, beta_cdd: bc, p_hdd: None, p_cdd: None, adj_r2: adj(o.sse, form.params()) }
    };
    for &(bp, (_, sh, shh, shy)) in &heat {
        if let Some(o) = ols(nf, sy, s.syy, &[(sh, shh, shy)]).filter(|o| o.beta[1] > 0.0) {
            let m = model(Form::Hdd, Some(bp), None, &o);
            cands.push((m.adj_r2, m, o));
        }
    }
    for &(bp, (_, sc, scc, scy)) in &cool {
        if let Some(o) = ols(nf, sy, s.syy, &[(sc, scc, scy)]).filter(|o| o.beta[1] > 0.0) {
            let m = model(Form::Cdd, None, Some(bp), &o);
            cands.push((m.adj_r2, m, o));
        }
    }
    for &(hbp, (_, sh, shh, shy)) in &heat {
        for &(cbp, (_, sc, scc, scy)) in cool.iter().filter(|(c, _)| *c >= hbp) {
            if let Some(o) = ols(nf, sy, s.syy, &[(sh, shh, shy), (sc, scc, scy)]).filter(|o| o.beta[1] > 0.0 && o.beta[2] > 0.0) {
                let m = model(Form::HddCdd, Some(hbp), Some(cbp), &o);
                cands.push((m.adj_r2, m, o));
            }
        }
    }
    // Highest adjusted R² first; among equals, the order of the search (simpler forms, lower
    // balance points first).
    cands.sort_by(|x, y| y.0.total_cmp(&x.0));
    for (a, mut m, o) in cands {
        if a <= best.adj_r2 + 1e-12 {
            break;
        }
        let p = m.form.params();
        match m.form {
            Form::Hdd => m.p_hdd = Some(p_value(o.beta[1], o.inv_diag[1], o.sse, p)),
            Form::Cdd => m.p_cdd = Some(p_value(o.beta[1], o.inv_diag[1], o.sse, p)),
            _ => {
                m.p_hdd = Some(p_value(o.beta[1], o.inv_diag[1], o.sse, p));
                m.p_cdd = Some(p_value(o.beta[2], o.inv_diag[2], o.sse, p));
            }
        }
        if m.p_hdd.is_none_or(|x| x <= search.max_p_value) && m.p_cdd.is_none_or(|x| x <= search.max_p_value) {
            best = m;
            break;
        }
    }
    Ok(best)
}
