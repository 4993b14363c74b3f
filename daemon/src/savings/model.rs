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

/// Solves the symmetric system `a x = b` (up to 3x3) by Gaussian elimination with partial
/// pivoting; also returns the inverse's diagonal (for the coefficients' variances). `None`
/// when singular.
fn solve(a: &[[f64; 3]; 3], b: &[f64; 3], p: usize) -> Option<([f64; 3], [f64; 3])> {
    // Augmented [A | b | I].
    let mut m = [[0.0f64; 7]; 3];
    for i in 0..p {
        for j in 0..p {
            m[i][j] = a[i][j];
        }
        m[i][3] = b[i];
        m[i][4 + i] = 1.0;
    }
    let scale = (0..p).map(|i| a[i][i].abs()).fold(0.0, f64::max).max(1e-300);
    for col in 0..p {
        let piv = (col..p).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
        if m[piv][col].abs() <= scale * 1e-13 {
            return None;
        }
        m.swap(col, piv);
        let d = m[col][col];
        for v in m[col].iter_mut() {
            *v /= d;
        }
        for r in 0..p {
            if r != col {
                let f = m[r][col];
                if f != 0.0 {
                    let row = m[col];
                    for (v, c) in m[r].iter_mut().zip(row) {
                        *v -= f * c;
                    }
                }
            }
        }
    }
    let mut x = [0.0; 3];
    let mut inv_diag = [0.0; 3];
    for i in 0..p {
        x[i] = m[i][3];
        inv_diag[i] = m[i][4 + i];
    }
    Some((x, inv_diag))
}

/// One candidate's least-squares fit from its sums: (coefficients, SSE, inverse diagonal).
struct Ols {
    beta: [f64; 3],
    sse: f64,
    inv_diag: [f64; 3],
}

fn ols(n: f64, sy: f64, syy: f64, terms: &[(f64, f64, f64)]) -> Option<Ols> {
    // Design [1, x1, x2]; the x's never overlap (Σx1·x2 = 0).
    let p = 1 + terms.len();
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    a[0][0] = n;
    b[0] = sy;
    for (k, &(s, ss, sxy)) in terms.iter().enumerate() {
        a[0][k + 1] = s;
        a[k + 1][0] = s;
        a[k + 1][k + 1] = ss;
        b[k + 1] = sxy;
    }
    let (beta, inv_diag) = solve(&a, &b, p)?;
    let fitted: f64 = (0..p).map(|i| beta[i] * b[i]).sum();
    Some(Ols { beta, sse: (syy - fitted).max(0.0), inv_diag })
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
    let mut consider = |m: Model| {
        if m.adj_r2 > best.adj_r2 + 1e-12 {
            best = m;
        }
    };
    for &(bp, (_, sh, shh, shy)) in &heat {
        if let Some(o) = ols(nf, sy, s.syy, &[(sh, shh, shy)]) {
            let p = p_value(o.beta[1], o.inv_diag[1], o.sse, 2);
            if o.beta[1] > 0.0 && p <= search.max_p_value {
                consider(Model { form: Form::Hdd, heating_bp: Some(bp), cooling_bp: None, intercept: o.beta[0], beta_hdd: Some(o.beta[1]), beta_cdd: None, p_hdd: Some(p), p_cdd: None, adj_r2: adj(o.sse, 2) });
            }
        }
    }
    for &(bp, (_, sc, scc, scy)) in &cool {
        if let Some(o) = ols(nf, sy, s.syy, &[(sc, scc, scy)]) {
            let p = p_value(o.beta[1], o.inv_diag[1], o.sse, 2);
            if o.beta[1] > 0.0 && p <= search.max_p_value {
                consider(Model { form: Form::Cdd, heating_bp: None, cooling_bp: Some(bp), intercept: o.beta[0], beta_hdd: None, beta_cdd: Some(o.beta[1]), p_hdd: None, p_cdd: Some(p), adj_r2: adj(o.sse, 2) });
            }
        }
    }
    for &(hbp, (_, sh, shh, shy)) in &heat {
        for &(cbp, (_, sc, scc, scy)) in cool.iter().filter(|(c, _)| *c >= hbp) {
            if let Some(o) = ols(nf, sy, s.syy, &[(sh, shh, shy), (sc, scc, scy)]) {
                let ph = p_value(o.beta[1], o.inv_diag[1], o.sse, 3);
                let pc = p_value(o.beta[2], o.inv_diag[2], o.sse, 3);
                if o.beta[1] > 0.0 && o.beta[2] > 0.0 && ph <= search.max_p_value && pc <= search.max_p_value {
                    consider(Model {
                        form: Form::HddCdd,
                        heating_bp: Some(hbp),
                        cooling_bp: Some(cbp),
                        intercept: o.beta[0],
                        beta_hdd: Some(o.beta[1]),
                        beta_cdd: Some(o.beta[2]),
                        p_hdd: Some(ph),
                        p_cdd: Some(pc),
                        adj_r2: adj(o.sse, 3),
                    });
                }
            }
        }
    }
    Ok(best)
}
