//! The savings rules, worked by hand on small data.

use chrono::NaiveDate;

use super::epc::settle;
use super::model::{cdd, fit, hdd, Form, Model, Search};
use super::verify::{avoided, baseline, coverage, fit_stats, goodness, normalised, savings_uncertainty, typical_year, BaselineError, Day, FitStats};
use crate::registry::ContractType;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}

/// A fixed pseudo-random sequence in [-1, 1) (a linear congruential generator), so the data
/// are the same on every run.
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// 120 days whose temperatures run evenly from −10.3 °C to 34.7 °C (never a whole degree, so no
/// day sits on a balance point).
fn temps() -> Vec<f64> {
    (0..120).map(|i| -10.3 + 45.0 * i as f64 / 119.0).collect()
}

#[test]
fn degree_days_by_hand() {
    // (T mean, balance point, HDD, CDD)
    for (t, bp, h, c) in [(10.0, 18.0, 8.0, 0.0), (20.0, 18.0, 0.0, 2.0), (18.0, 18.0, 0.0, 0.0), (-12.5, 15.0, 27.5, 0.0), (31.0, 24.0, 0.0, 7.0)] {
        assert_eq!(hdd(t, bp), h, "HDD({t}, {bp})");
        assert_eq!(cdd(t, bp), c, "CDD({t}, {bp})");
    }
}

/// Each form, on data made from known coefficients plus noise of ±1 (about 1 % of the use):
/// the search finds the form and the balance points, and the coefficients within 3 %.
#[test]
fn each_form_recovers_its_true_coefficients() {
    struct Case {
        form: Form,
        heating: Option<(f64, f64)>,
        cooling: Option<(f64, f64)>,
        intercept: f64,
    }
    let cases = [
        // use = 100 (no weather dependence)
        Case { form: Form::Intercept, heating: None, cooling: None, intercept: 100.0 },
        // use = 50 + 8·HDD(15 °C)
        Case { form: Form::Hdd, heating: Some((15.0, 8.0)), cooling: None, intercept: 50.0 },
        // use = 40 + 5·CDD(22 °C)
        Case { form: Form::Cdd, heating: None, cooling: Some((22.0, 5.0)), intercept: 40.0 },
        // use = 30 + 6·HDD(12 °C) + 4·CDD(24 °C)
        Case { form: Form::HddCdd, heating: Some((12.0, 6.0)), cooling: Some((24.0, 4.0)), intercept: 30.0 },
    ];
    let t = temps();
    let e = noise(t.len(), 7);
    for c in cases {
        let y: Vec<f64> = t
            .iter()
            .zip(&e)
            .map(|(&x, &n)| c.intercept + c.heating.map_or(0.0, |(bp, b)| b * hdd(x, bp)) + c.cooling.map_or(0.0, |(bp, b)| b * cdd(x, bp)) + n)
            .collect();
        let m = fit(&t, &y, &Search::caltrack()).expect("a model");
        assert_eq!(m.form, c.form, "{:?}: got {m:?}", c.form);
        assert_eq!(m.heating_bp, c.heating.map(|h| h.0), "{:?}", c.form);
        assert_eq!(m.cooling_bp, c.cooling.map(|h| h.0), "{:?}", c.form);
        assert!((m.intercept - c.intercept).abs() / c.intercept < 0.03, "{:?}: intercept {}", c.form, m.intercept);
        if let Some((_, b)) = c.heating {
            let got = m.beta_hdd.expect("β_hdd");
            assert!((got - b).abs() / b < 0.03, "{:?}: β_hdd {got}", c.form);
            assert!(m.p_hdd.expect("p") < 0.001);
        }
        if let Some((_, b)) = c.cooling {
            let got = m.beta_cdd.expect("β_cdd");
            assert!((got - b).abs() / b < 0.03, "{:?}: β_cdd {got}", c.form);
        }
    }
}

/// Without noise the fit is exact: use = 50 + 8·HDD(15).
#[test]
fn exact_data_gives_exact_coefficients() {
    let t = temps();
    let y: Vec<f64> = t.iter().map(|&x| 50.0 + 8.0 * hdd(x, 15.0)).collect();
    let m = fit(&t, &y, &Search::caltrack()).expect("a model");
    assert_eq!((m.form, m.heating_bp), (Form::Hdd, Some(15.0)));
    assert!((m.intercept - 50.0).abs() < 1e-6 && (m.beta_hdd.expect("β") - 8.0).abs() < 1e-6, "{m:?}");
}

/// The CalTRACK qualification rules: a heating term needs 10 days with HDD > 0; a negative
/// slope is never taken; too few days is an error.
#[test]
fn qualification_rules() {
    // Only 5 days below 15 °C: no HDD model at 15 °C can qualify; use = 50 + 8·HDD(15) on
    // those days. Candidates at higher balance points have >= 10 days but a worse fit; the
    // result must not be an HDD model at 15.
    let t: Vec<f64> = (0..60).map(|i| if i < 5 { 10.5 + i as f64 * 0.1 } else { 20.3 + (i % 7) as f64 * 0.1 }).collect();
    let y: Vec<f64> = t.iter().map(|&x| 50.0 + 8.0 * hdd(x, 15.0)).collect();
    let m = fit(&t, &y, &Search::caltrack()).expect("a model");
    assert_ne!(m.heating_bp, Some(15.0), "{m:?}");
    // Use falling as it gets colder: never an HDD model (β must be positive).
    let t = temps();
    let y: Vec<f64> = t.iter().map(|&x| 200.0 - 3.0 * hdd(x, 15.0)).collect();
    let m = fit(&t, &y, &Search::caltrack()).expect("a model");
    assert!(m.beta_hdd.is_none_or(|b| b > 0.0), "{m:?}");
    assert_ne!(m.form, Form::Hdd);
    assert!(fit(&[1.0; 9], &[1.0; 9], &Search::caltrack()).is_err());
}

/// ASHRAE 14 statistics with n − p:
/// * y = [10, 12, 14], ŷ = [11, 11, 14], p = 1: residuals −1, 1, 0; SSE = 2; ȳ = 12;
///   CV(RMSE) = sqrt(2 / 2) / 12 = 0.083333; NMBE = 0 / (2·12) = 0; SST = 8, R² = 1 − 2/8 = 0.75.
/// * y = [10, 10, 10, 10], ŷ = [9, 9, 9, 9], p = 2: SSE = 4, CV = sqrt(4/2)/10 = 0.141421;
///   NMBE = 4 / (2·10) = 0.2; SST = 0 with SSE > 0: R² = 0.
#[test]
fn goodness_of_fit_by_hand() {
    for (y, yhat, p, r2, cv, nmbe) in [
        (vec![10.0, 12.0, 14.0], vec![11.0, 11.0, 14.0], 1, 0.75, 1.0 / 12.0, 0.0),
        (vec![10.0; 4], vec![9.0; 4], 2, 0.0, 2f64.sqrt() / 10.0, 0.2),
    ] {
        let (a, b, c) = goodness(&y, &yhat, p);
        assert!((a - r2).abs() < 1e-9 && (b - cv).abs() < 1e-9 && (c - nmbe).abs() < 1e-9, "{a} {b} {c}");
    }
}

/// ASHRAE 14 acceptance: a model within 15 % / 5 % passes, outside fails. Use alternating
/// 100 ± 20 predicted by the constant 100: CV(RMSE) = sqrt(n·400/(n−1))/100 ≈ 0.2 → fails;
/// ± 10: ≈ 0.1 → passes.
#[test]
fn ashrae14_pass_and_fail() {
    let model = Model { form: Form::Intercept, heating_bp: None, cooling_bp: None, intercept: 100.0, beta_hdd: None, beta_cdd: None, p_hdd: None, p_cdd: None, adj_r2: 0.0 };
    for (amp, pass) in [(20.0, false), (10.0, true)] {
        let days: Vec<Day> = (0..60).map(|i| Day { date: date(2025, 1, 1) + chrono::Days::new(i), usage: Some(100.0 + if i % 2 == 0 { amp } else { -amp }), temp: Some(0.0) }).collect();
        let s = fit_stats(&model, &days);
        assert_eq!(s.ashrae14_pass, pass, "{s:?}");
        let expect = (60.0 * amp * amp / 59.0f64).sqrt() / 100.0;
        assert!((s.cv_rmse - expect).abs() < 1e-9);
        // Alternating residuals: lag-1 autocorrelation close to −1 (clamped at −0.99).
        assert!(s.autocorrelation < -0.9);
    }
}

/// Coverage of January (31 days): 4 days missing → 27/31 = 87.1 % < 90 %, refused, and the
/// month is more than 10 % short (4 > 3.1); 3 missing → 28/31 = 90.3 %, fitted, and 3 <= 3.1 is
/// not short.
#[test]
fn coverage_rules() {
    let t = temps();
    for (missing, refused, short) in [(4, true, true), (3, false, false)] {
        let days: Vec<Day> = (0..31)
            .map(|i| Day { date: date(2025, 1, 1 + i as u32), usage: (i >= missing).then_some(50.0 + 8.0 * hdd(t[i * 3], 15.0)), temp: Some(t[i * 3]) })
            .collect();
        let c = coverage(&days);
        assert_eq!(c.months_short.is_empty(), !short, "{c:?}");
        match baseline(&days, &Search::caltrack()) {
            Err(BaselineError::Coverage { days, with }) => assert!(refused && days == 31 && with == 31 - missing),
            Ok(b) => assert!(!refused && b.warnings.iter().any(|w| w.contains("365 days"))),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Avoided energy: model 10 + 2·HDD(15); reporting days at 5 °C (use 25) and 20 °C (use 9):
/// predicted 30 + 10 = 40, observed 34, avoided 6 = 15 % of the prediction. With a non-routine
/// adjustment of +4: predicted 44, avoided 10.
#[test]
fn avoided_energy_by_hand() {
    let model = Model { form: Form::Hdd, heating_bp: Some(15.0), cooling_bp: None, intercept: 10.0, beta_hdd: Some(2.0), beta_cdd: None, p_hdd: Some(0.0), p_cdd: None, adj_r2: 1.0 };
    let stats = FitStats { n: 365, p: 2, r2: 0.9, adj_r2: 0.9, cv_rmse: 0.1, nmbe: 0.0, autocorrelation: 0.0, monthly_cv_rmse: None, monthly_nmbe: None, ashrae14_pass: true };
    let base = super::Baseline { model, stats, coverage: coverage(&[]), warnings: vec![] };
    let days = [Day { date: date(2026, 1, 1), usage: Some(25.0), temp: Some(5.0) }, Day { date: date(2026, 1, 2), usage: Some(9.0), temp: Some(20.0) }, Day { date: date(2026, 1, 3), usage: None, temp: Some(0.0) }];
    let a = avoided(&base, &days, 0.0);
    assert_eq!((a.days_with_data, a.observed, a.predicted, a.avoided), (2, 34.0, 40.0, 6.0));
    assert!((a.avoided_pct.expect("pct") - 15.0).abs() < 1e-9);
    let a = avoided(&base, &days, 4.0);
    assert_eq!((a.predicted, a.avoided), (44.0, 10.0));
}

/// Fractional savings uncertainty, U = t·1.26·CV·sqrt((n/n′)(1 + 2/n′)/m)/F:
/// * n = m = 365, p = 2, CV = 0.1, ρ = 0, F = 0.1: n′ = 365, t(90 %, 363) = 1.6491;
///   sqrt((1 + 2/365)/365) = sqrt(1.005479/365) = 0.052486; U = 1.6491·1.26·0.1·0.052486/0.1
///   = 0.10906.
/// * ρ = 0.5: n′ = 365·0.5/1.5 = 121.667, n/n′ = 3; sqrt(3·(1 + 2/121.667)/365) = 0.091410;
///   t(90 %, 119.667) = 1.6577; U = 1.6577·1.26·0.1·0.091410/0.1 = 0.19093.
/// * no savings (F <= 0): no uncertainty to state.
#[test]
fn savings_uncertainty_by_hand() {
    let mut s = FitStats { n: 365, p: 2, r2: 0.9, adj_r2: 0.9, cv_rmse: 0.1, nmbe: 0.0, autocorrelation: 0.0, monthly_cv_rmse: None, monthly_nmbe: None, ashrae14_pass: true };
    let u = savings_uncertainty(&s, 365, 0.1).expect("u");
    assert!((u - 0.10906).abs() < 2e-4, "{u}");
    s.autocorrelation = 0.5;
    let u = savings_uncertainty(&s, 365, 0.1).expect("u");
    assert!((u - 0.19093).abs() < 2e-4, "{u}");
    assert!(savings_uncertainty(&s, 365, 0.0).is_none());
}

/// Settlements: avoided 1000 kWh at 0.8 yuan = 800 yuan.
/// * shared savings, share 0.7: 560 to the company;
/// * guaranteed 1200 kWh: shortfall 200 kWh · 0.8 = 160 from the company;
/// * hosting, adjusted baseline 5000 kWh: 4000 to the company (it pays the bills).
#[test]
fn epc_settlements_by_hand() {
    let s = settle(ContractType::SharedSavings, 1000.0, 5000.0, 0.8, 0.7, 0.0);
    assert_eq!((s.savings_value, s.due_to_esco, s.due_from_esco), (800.0, 560.0, 0.0));
    let s = settle(ContractType::GuaranteedSavings, 1000.0, 5000.0, 0.8, 0.0, 1200.0);
    assert!((s.due_from_esco - 160.0).abs() < 1e-9 && s.due_to_esco == 0.0);
    let s = settle(ContractType::EnergyCostHosting, 1000.0, 5000.0, 0.8, 0.0, 0.0);
    assert_eq!(s.due_to_esco, 4000.0);
    // Negative savings earn the company nothing.
    assert_eq!(settle(ContractType::SharedSavings, -10.0, 100.0, 1.0, 0.5, 0.0).due_to_esco, 0.0);
}

/// A typical year: 10 °C on 1 March 2023 and 20 °C on 1 March 2024 (a leap year, where
/// 29 February joins 28 February so 1 March is day 59 in both): the mean is 15 °C.
#[test]
fn typical_year_means_each_day() {
    let y = typical_year(&[(date(2023, 3, 1), 10.0), (date(2024, 3, 1), 20.0), (date(2024, 2, 29), 4.0), (date(2023, 2, 28), 2.0)]);
    assert_eq!(y, vec![3.0, 15.0]);
}

/// Normalised savings: the baseline is 100 + 10·HDD(18), the reporting period 90 + 9·HDD(18)
/// (10 % less at every temperature): under any typical year the saving is 10 %.
#[test]
fn normalised_savings_are_the_true_fraction() {
    let base = Model { form: Form::Hdd, heating_bp: Some(18.0), cooling_bp: None, intercept: 100.0, beta_hdd: Some(10.0), beta_cdd: None, p_hdd: None, p_cdd: None, adj_r2: 1.0 };
    let t = temps();
    let days: Vec<Day> = t.iter().enumerate().map(|(i, &x)| Day { date: date(2026, 1, 1) + chrono::Days::new(i as u64), usage: Some(90.0 + 9.0 * hdd(x, 18.0)), temp: Some(x) }).collect();
    let typical = [-5.0, 0.0, 10.0, 25.0];
    let n = normalised(&base, &days, &typical, &Search::caltrack()).expect("normalised");
    // Baseline under the typical days: 330 + 280 + 180 + 100 = 890; reporting 801; saving 89.
    assert!((n.baseline_use - 890.0).abs() < 1e-6 && (n.savings - 89.0).abs() < 1e-6, "{n:?}");
    assert!((n.savings_pct.expect("pct") - 10.0).abs() < 1e-6);
}
