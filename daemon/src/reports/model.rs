//! The three documents, built from the accounting engine's results by pure functions:
//!
//! * [`AnnualReport`] (`year` = the statistical year reported, 1 January to 31 December local
//!   time; a year in progress runs to `as_of` and shows projections): each agency's indicators
//!   against targets, bands and last year, data quality, cost and notes, plus the aggregates of
//!   each bureau: 本级 ([`Scope::Level`]) and the whole jurisdiction ([`Scope::Tree`]).
//!   **Bureau rule**: an agency that has at least one agency under it (`parent`). A root agency
//!   without children is its own jurisdiction; its aggregate would repeat its own figures.
//! * [`Assessment`] (`year` = the year assessed): scores from [`AssessmentRules`], grades, a
//!   ranking and the reason for every point lost.
//! * [`EnergyPlan`] (`year` = the **plan year** P): the current state from the last full year
//!   (P-2) and the current year (P-1, to `as_of`, projected); proposed targets for P on the
//!   reduction path; the agencies that must do an energy audit and a retrofit; the estimated
//!   energy budget of P; a summary for the jurisdiction.

use std::collections::BTreeMap;

use energy_wire::Carrier;
use serde::Serialize;

use crate::accounting::indicators::{AgencyIndicators, Band, BandClass, DataStatus, IndicatorValue};
use crate::registry::Scope;
use crate::registry::{AssessmentRules, BindingKind, IncompleteRule, Indicator, Reduction, Registry};

/// Monthly comprehensive energy (kgce) of one agency or aggregate, this year to `as_of` and
/// last year (whole).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Monthly {
    pub this_year_kgce: [f64; 12],
    pub last_year_kgce: [f64; 12],
}

/// What the engine gives for one entry (an agency, or a bureau's aggregate).
#[derive(Debug, Clone)]
pub struct EntryInput {
    pub scope: Scope,
    pub members: Vec<String>,
    pub figures: AgencyIndicators,
    pub monthly: Monthly,
}

/// The scope's name in the documents ([`Scope::as_str`]).
pub fn scope_name(s: Scope) -> &'static str {
    s.as_str()
}

fn ser_scope<S: serde::Serializer>(s: &Scope, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

#[derive(Debug, Clone, Serialize)]
pub struct AnnualEntry {
    #[serde(serialize_with = "ser_scope")]
    pub scope: Scope,
    pub agency: String,
    pub name: String,
    /// The agencies whose consumption the entry sums.
    pub members: Vec<String>,
    pub figures: AgencyIndicators,
    pub monthly: Monthly,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnnualReport {
    pub report: &'static str,
    pub year: i32,
    /// Figures run to the start of this local day (a closed year: 1 January of the next year).
    pub as_of: String,
    /// [`AS_OF_RULE`].
    pub as_of_rule: &'static str,
    /// The basis of each per-area figure.
    pub area_bases: Vec<(Indicator, crate::registry::AreaBasis)>,
    pub timezone: String,
    pub in_progress: bool,
    pub electricity_basis: String,
    pub entries: Vec<AnnualEntry>,
}

pub use crate::time::AS_OF_RULE;

/// Whether an agency is a bureau (see the module doc).
pub fn is_bureau(reg: &Registry, agency: &str) -> bool {
    reg.file.agencies.iter().any(|a| a.parent.as_deref() == Some(agency))
}

pub fn annual(_reg: &Registry, year: i32, as_of: &str, timezone: &str, inputs: Vec<EntryInput>) -> AnnualReport {
    let in_progress = inputs.iter().any(|e| e.figures.in_progress);
    let electricity_basis = inputs.first().map(|e| e.figures.electricity_basis.to_string()).unwrap_or_default();
    let entries = inputs
        .into_iter()
        .map(|e| {
            // Aggregates come from the engine over the members' summed areas and headcounts.
            AnnualEntry { scope: e.scope, agency: e.figures.agency.clone(), name: e.figures.name.clone(), members: e.members, figures: e.figures, monthly: e.monthly }
        })
        .collect();
    let area_bases = Indicator::ALL.iter().filter_map(|i| i.area_basis().map(|b| (*i, b))).collect();
    AnnualReport { report: "annual", year, as_of: as_of.into(), as_of_rule: AS_OF_RULE, area_bases, timezone: timezone.into(), in_progress, electricity_basis, entries }
}

// ---------------------------------------------------------------- assessment

/// One scored item, with what is needed to say why points were lost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreItem {
    /// `scorecard` (against the same-kind average) or `band` (quota band class).
    pub rule: &'static str,
    pub indicator: Indicator,
    pub unit: &'static str,
    pub value: f64,
    /// The same-kind average (scorecard; `None` when withheld from the reader).
    pub average: Option<f64>,
    /// value ÷ average (scorecard; `None` when the average is withheld).
    pub ratio: Option<f64>,
    /// The average (and so the ratio) is withheld: it covers fewer than
    /// [`MIN_OTHERS_IN_AVERAGE`] agencies other than the reader's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
    /// The band class (band).
    pub class: Option<BandClass>,
    pub points: f64,
    pub max_points: f64,
    /// The quota band of a band item, with where it comes from.
    pub band: Option<Band>,
}

/// A target missed that counts as binding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingMiss {
    pub kind: BindingKind,
    pub indicator: Indicator,
    pub value: f64,
    /// The target value, or the 约束值.
    pub limit: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgencyScore {
    /// 1 for the best; equal scores share a rank (1, 2, 2, 4); `None`: not scored, not ranked.
    pub rank: Option<usize>,
    pub agency: String,
    pub name: String,
    pub kind: String,
    /// 0-100, one decimal; `None` when nothing could be scored.
    pub score: Option<f64>,
    pub points: f64,
    pub max_points: f64,
    pub grade: Option<String>,
    pub grade_en: Option<String>,
    pub binding_missed: Vec<BindingMiss>,
    pub items: Vec<ScoreItem>,
    /// Indicators of the scorecard that could not be scored, with why (`no_value`, `no_peer`,
    /// `no_data`, `incomplete`).
    pub skipped: Vec<(Indicator, &'static str)>,
    /// Whether the agency could be scored at all.
    pub scored: bool,
    /// Why not: `no_data` (no complete scored indicator), `incomplete` (a scored indicator's data
    /// is missing or incomplete and `[assessment] incomplete = "no_score"`) or
    /// `nothing_to_score` (no peer and no quota band).
    pub unscored_reason: Option<&'static str>,
    /// The scored indicators (the scorecard's, and those with a quota band) whose data is not
    /// complete.
    pub data_missing: Vec<(Indicator, DataStatus)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindAverage {
    pub kind: String,
    pub indicator: Indicator,
    /// `None` when withheld from the reader.
    pub average: Option<f64>,
    pub agencies: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
    /// The agencies averaged (not shown: it would tell a reader whose figures they are).
    #[serde(skip)]
    pub members: Vec<String>,
}

/// An agency's reader sees a same-kind average only when it covers at least this many agencies
/// other than its own: with one, the average is that agency's figure; with two, the reader
/// knows their sum (issue 17, item 3).
pub const MIN_OTHERS_IN_AVERAGE: usize = 3;

/// Withholds the averages (and the ratios to them in the items) that cover fewer than
/// [`MIN_OTHERS_IN_AVERAGE`] agencies other than `own` (the reader's agencies).
pub fn withhold_averages(a: &mut Assessment, own: &[String]) {
    let mut withheld: Vec<(String, Indicator)> = Vec::new();
    for avg in &mut a.averages {
        let others = avg.members.iter().filter(|m| !own.contains(m)).count();
        if others < MIN_OTHERS_IN_AVERAGE {
            avg.average = None;
            avg.withheld = true;
            withheld.push((avg.kind.clone(), avg.indicator));
        }
    }
    for s in &mut a.agencies {
        for i in s.items.iter_mut().filter(|i| i.rule == "scorecard" && withheld.contains(&(s.kind.clone(), i.indicator))) {
            i.average = None;
            i.ratio = None;
            i.withheld = true;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub report: &'static str,
    pub year: i32,
    pub as_of: String,
    /// [`AS_OF_RULE`].
    pub as_of_rule: &'static str,
    pub timezone: String,
    pub in_progress: bool,
    pub rules: AssessmentRules,
    pub averages: Vec<KindAverage>,
    /// In ranking order.
    pub agencies: Vec<AgencyScore>,
    /// Raw and weather-normalised energy beside each other (agencies with a weather series;
    /// `rules.score_on` says which one was scored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weather_normalised: Vec<super::mv::NormalisedFigure>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Scorecard points of a ratio to the average.
pub fn scorecard_points(rules: &AssessmentRules, ratio: f64) -> f64 {
    rules.scorecard.iter().find(|s| ratio <= s.max_ratio + 1e-12).map_or(rules.scorecard_above, |s| s.points)
}

pub fn band_points(rules: &AssessmentRules, class: BandClass) -> f64 {
    let b = &rules.band_points;
    match class {
        BandClass::AtOrBelowGuide => b.at_or_below_guide,
        BandClass::AboveGuide => b.above_guide,
        BandClass::AboveBenchmark => b.above_benchmark,
        BandClass::AboveBinding => b.above_binding,
    }
}

/// The whole-year value (the projection of a year in progress), only from complete data.
fn year_value(v: &IndicatorValue) -> Option<f64> {
    v.projected.filter(|x| x.is_finite() && v.data == DataStatus::Complete)
}

/// Scores every agency (its own figures) against its kind. Only complete figures enter the
/// averages, the items and the ranking (see [`AssessmentRules`] on completeness).
pub fn assessment(rules: &AssessmentRules, year: i32, as_of: &str, timezone: &str, figures: &[AgencyIndicators]) -> Assessment {
    // Same-kind averages.
    let mut sums: BTreeMap<(String, Indicator), (f64, Vec<String>)> = BTreeMap::new();
    for f in figures {
        for ind in &rules.scorecard_indicators {
            if let Some(x) = f.get(*ind).and_then(year_value) {
                let e = sums.entry((f.kind.clone(), *ind)).or_insert((0.0, Vec::new()));
                e.0 += x;
                e.1.push(f.agency.clone());
            }
        }
    }
    let averages: Vec<KindAverage> = sums
        .into_iter()
        .map(|((kind, ind), (s, members))| KindAverage { kind, indicator: ind, average: Some(s / members.len() as f64), agencies: members.len(), withheld: false, members })
        .collect();
    let mut scores: Vec<AgencyScore> = figures
        .iter()
        .map(|f| {
            let mut items = Vec::new();
            let mut skipped = Vec::new();
            // The scored indicators whose data is not complete.
            let data_missing: Vec<(Indicator, DataStatus)> = f
                .indicators
                .iter()
                .filter(|v| rules.scorecard_indicators.contains(&v.indicator) || v.has_quota)
                .filter(|v| v.data != DataStatus::Complete)
                .map(|v| (v.indicator, v.data))
                .collect();
            for ind in &rules.scorecard_indicators {
                if let Some(v) = f.get(*ind).filter(|v| v.data != DataStatus::Complete) {
                    skipped.push((*ind, if v.data == DataStatus::NoData { "no_data" } else { "incomplete" }));
                    continue;
                }
                let Some(x) = f.get(*ind).and_then(year_value) else {
                    skipped.push((*ind, "no_value"));
                    continue;
                };
                let avg = averages.iter().find(|a| a.kind == f.kind && a.indicator == *ind);
                match avg.and_then(|a| a.average.map(|m| (a, m))) {
                    Some((a, m)) if a.agencies >= 2 && m > 0.0 => {
                        let ratio = x / m;
                        items.push(ScoreItem {
                            rule: "scorecard",
                            indicator: *ind,
                            unit: ind.unit(),
                            value: x,
                            average: Some(m),
                            ratio: Some(ratio),
                            withheld: false,
                            class: None,
                            points: scorecard_points(rules, ratio),
                            max_points: rules.scorecard_max(),
                            band: None,
                        });
                    }
                    _ => skipped.push((*ind, "no_peer")),
                }
            }
            let mut binding_missed = Vec::new();
            for v in &f.indicators {
                let Some(x) = year_value(v) else { continue };
                if let Some(b) = &v.band {
                    items.push(ScoreItem {
                        rule: "band",
                        indicator: v.indicator,
                        unit: v.unit,
                        value: x,
                        average: None,
                        ratio: None,
                        withheld: false,
                        class: Some(b.class),
                        points: band_points(rules, b.class),
                        max_points: rules.band_max(),
                        band: Some(b.clone()),
                    });
                    if b.class == BandClass::AboveBinding && rules.binding.contains(&BindingKind::QuotaBinding) {
                        binding_missed.push(BindingMiss { kind: BindingKind::QuotaBinding, indicator: v.indicator, value: x, limit: b.binding });
                    }
                }
                if let Some(t) = v.target.as_ref().filter(|t| !t.met) {
                    let kind = if t.kind == "reduction" { BindingKind::Reduction } else { BindingKind::Budget };
                    if rules.binding.contains(&kind) {
                        binding_missed.push(BindingMiss { kind, indicator: v.indicator, value: x, limit: t.value });
                    }
                }
            }
            let points: f64 = items.iter().map(|i| i.points).sum();
            let max_points: f64 = items.iter().map(|i| i.max_points).sum();
            let unscored_reason = if items.is_empty() && !data_missing.is_empty() {
                Some("no_data")
            } else if !data_missing.is_empty() && rules.incomplete == IncompleteRule::NoScore {
                Some("incomplete")
            } else if max_points <= 0.0 {
                Some("nothing_to_score")
            } else {
                None
            };
            let score = unscored_reason.is_none().then(|| round1(100.0 * points / max_points));
            let grade = match score {
                None => None,
                _ if !binding_missed.is_empty() => rules.grades.iter().find(|g| g.name == rules.binding_missed_grade),
                Some(s) => rules.grades.iter().find(|g| s >= g.min),
            };
            AgencyScore {
                rank: None,
                agency: f.agency.clone(),
                name: f.name.clone(),
                kind: f.kind.clone(),
                score,
                points,
                max_points,
                grade: grade.map(|g| g.name.clone()),
                grade_en: grade.map(|g| if g.name_en.is_empty() { g.name.clone() } else { g.name_en.clone() }),
                binding_missed,
                items,
                skipped,
                scored: score.is_some(),
                unscored_reason,
                data_missing,
            }
        })
        .collect();
    rank(&mut scores);
    Assessment {
        report: "assessment",
        year,
        as_of: as_of.into(),
        as_of_rule: AS_OF_RULE,
        timezone: timezone.into(),
        in_progress: figures.iter().any(|f| f.in_progress),
        rules: rules.clone(),
        averages,
        agencies: scores,
        weather_normalised: Vec::new(),
    }
}

/// Orders by score (highest first; unscored last, without a rank), then agency id; equal
/// scores share a rank.
pub fn rank(scores: &mut [AgencyScore]) {
    scores.sort_by(|a, b| {
        let (x, y) = (a.score.unwrap_or(f64::NEG_INFINITY), b.score.unwrap_or(f64::NEG_INFINITY));
        y.total_cmp(&x).then_with(|| a.agency.cmp(&b.agency))
    });
    for i in 0..scores.len() {
        scores[i].rank = match scores[i].score {
            None => None,
            s if i > 0 && s == scores[i - 1].score => scores[i - 1].rank,
            _ => Some(i + 1),
        };
    }
}

// ---------------------------------------------------------------- plan

/// The figures of one indicator in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanIndicator {
    pub indicator: Indicator,
    pub unit: &'static str,
    /// P-2, whole year.
    pub last_full_year: Option<f64>,
    /// P-1 to `as_of`.
    pub year_to_date: Option<f64>,
    /// P-1 projected to its end.
    pub projected: Option<f64>,
    /// Band class of the projection of P-1.
    pub class: Option<BandClass>,
    /// Target of P-1 (reduction path or budget).
    pub current_target: Option<f64>,
    /// Proposed target for P on the reduction path.
    pub proposed_target: Option<f64>,
    pub target_label: Option<String>,
    /// The quota band of P-1's projection, with where it comes from.
    pub band: Option<Band>,
}

/// One carrier of the estimated budget of the plan year.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetLine {
    pub carrier: Carrier,
    pub unit: &'static str,
    /// P-1 projected consumption.
    pub projected_current: f64,
    /// The factor of the reduction path from P-1 to P (1 without a target).
    pub factor: f64,
    /// Consumption budgeted for P.
    pub consumption: f64,
    pub kgce: f64,
    /// yuan per unit.
    pub price: f64,
    pub cost_yuan: f64,
}

/// Why an audit and a retrofit are required.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReason {
    /// `above_binding` (a whole-year value above 约束值) or `reduction_missed_twice`.
    pub kind: &'static str,
    pub indicator: Indicator,
    pub year: i32,
    pub value: f64,
    pub limit: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanAgency {
    pub agency: String,
    pub name: String,
    pub kind: String,
    pub indicators: Vec<PlanIndicator>,
    pub audit_required: bool,
    pub audit_reasons: Vec<AuditReason>,
    pub budget: Vec<BudgetLine>,
    pub budget_kgce: f64,
    pub budget_cost_yuan: f64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSummary {
    pub agencies: usize,
    /// Total energy, kgce: P-2, P-1 to date, P-1 projected, P budget.
    pub total_energy_last_full_year: f64,
    pub total_energy_year_to_date: f64,
    pub total_energy_projected: f64,
    pub budget_kgce: f64,
    pub budget_cost_yuan: f64,
    pub audits_required: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnergyPlan {
    pub report: &'static str,
    /// The plan year P.
    pub year: i32,
    pub current_year: i32,
    pub last_full_year: i32,
    pub as_of: String,
    pub timezone: String,
    pub agencies: Vec<PlanAgency>,
    pub summary: PlanSummary,
    /// Raw and weather-normalised energy of P-1 (agencies with a weather series).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weather_normalised: Vec<super::mv::NormalisedFigure>,
    /// The audit and retrofit list, ranked by expected savings from the models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retrofit_ranking: Vec<super::mv::RetrofitCandidate>,
}

/// The value of a reduction path in `year`.
pub fn path_value(r: &Reduction, baseline: f64, year: i32) -> f64 {
    let span = f64::from(r.target_year - r.baseline_year);
    let frac = if span > 0.0 { f64::from(year - r.baseline_year) / span } else { 1.0 };
    baseline * (1.0 - r.percent / 100.0 * frac)
}

/// Indicators whose reduction path sets the budget factor of energy carriers, in order.
const ENERGY_PATHS: [Indicator; 3] = [Indicator::EnergyPerArea, Indicator::TotalEnergy, Indicator::EnergyPerPerson];

/// The plan's figures. `current` is P-1 to `as_of`, `last_full` is P-2 (both per agency, own
/// figures, same order or matched by id).
pub fn plan(reg: &Registry, year: i32, as_of: &str, timezone: &str, current: &[AgencyIndicators], last_full: &[AgencyIndicators]) -> EnergyPlan {
    let mut agencies = Vec::new();
    for cur in current {
        let last = last_full.iter().find(|l| l.agency == cur.agency);
        let mut notes = Vec::new();
        let reductions = reg.reductions(&cur.agency, year);
        let mut indicators = Vec::new();
        // (indicator) -> P target / P-1 target
        let mut factors: BTreeMap<Indicator, f64> = BTreeMap::new();
        for v in &cur.indicators {
            let lv = last.and_then(|l| l.get(v.indicator));
            let r = reductions.iter().find(|r| r.indicator == v.indicator);
            let baseline = r.and_then(|r| {
                r.baseline_value.or_else(|| v.target.as_ref().filter(|t| t.kind == "reduction" && t.baseline_year == Some(r.baseline_year)).and_then(|t| t.baseline_value))
            });
            let proposed = r.zip(baseline).map(|(r, b)| path_value(r, b, year));
            if let (Some(r), None) = (r, baseline) {
                notes.push(format!("{}: no value for the baseline year {}; no target proposed", v.indicator.name(), r.baseline_year));
            }
            if let (Some(r), Some(b), Some(p)) = (r, baseline, proposed) {
                let prev = path_value(r, b, year - 1);
                if prev > 0.0 {
                    factors.insert(v.indicator, p / prev);
                }
            }
            indicators.push(PlanIndicator {
                indicator: v.indicator,
                unit: v.unit,
                last_full_year: lv.and_then(|l| l.value),
                year_to_date: v.value,
                projected: v.projected,
                class: v.band.as_ref().map(|b| b.class),
                current_target: v.target.as_ref().map(|t| t.value),
                proposed_target: proposed,
                target_label: r.and_then(|r| r.label.clone()),
                band: v.band.clone(),
            });
        }
        // Audit and retrofit.
        let mut audit_reasons = Vec::new();
        for (f, y) in last.map(|l| (l, year - 2)).into_iter().chain(std::iter::once((cur, year - 1))) {
            for v in &f.indicators {
                if let (Some(b), Some(x)) = (&v.band, v.projected) {
                    if b.class == BandClass::AboveBinding {
                        audit_reasons.push(AuditReason { kind: "above_binding", indicator: v.indicator, year: y, value: x, limit: b.binding });
                    }
                }
            }
        }
        if let Some(l) = last {
            for v in &cur.indicators {
                let (Some(t), Some(x)) = (v.target.as_ref(), v.projected) else { continue };
                let before = l.get(v.indicator).and_then(|lv| lv.target.as_ref());
                if t.kind == "reduction" && !t.met && before.is_some_and(|b| b.kind == "reduction" && !b.met) {
                    audit_reasons.push(AuditReason { kind: "reduction_missed_twice", indicator: v.indicator, year: year - 1, value: x, limit: t.value });
                }
            }
        }
        // Budget of P.
        let energy_factor = ENERGY_PATHS.iter().find_map(|i| factors.get(i)).copied().unwrap_or(1.0);
        let water_factor = factors.get(&Indicator::WaterPerPerson).copied().unwrap_or(1.0);
        let mut budget = Vec::new();
        for c in &cur.carriers {
            let factor = if c.carrier == Carrier::Water { water_factor } else { energy_factor };
            let consumption = c.projected * factor;
            let price = match reg.tariff(c.carrier, year) {
                Some(t) if t.tou.is_empty() => t.price,
                Some(t) => {
                    if c.value > 0.0 {
                        c.cost_yuan / c.value
                    } else {
                        t.price
                    }
                }
                None => {
                    notes.push(format!("{}: no tariff for {year}; its cost is not estimated", c.carrier.as_str()));
                    0.0
                }
            };
            let k = if c.value > 0.0 { c.kgce / c.value } else { reg.kgce_per_unit(c.carrier, false) };
            budget.push(BudgetLine {
                carrier: c.carrier,
                unit: c.unit,
                projected_current: c.projected,
                factor,
                consumption,
                kgce: consumption * k,
                price,
                cost_yuan: consumption * price,
            });
        }
        let budget_kgce = budget.iter().map(|b| b.kgce).sum();
        let budget_cost_yuan = budget.iter().map(|b| b.cost_yuan).sum();
        if last.is_none() {
            notes.push(format!("no figures for {}", year - 2));
        }
        agencies.push(PlanAgency {
            agency: cur.agency.clone(),
            name: cur.name.clone(),
            kind: cur.kind.clone(),
            indicators,
            audit_required: !audit_reasons.is_empty(),
            audit_reasons,
            budget,
            budget_kgce,
            budget_cost_yuan,
            notes,
        });
    }
    let total = |fs: &[AgencyIndicators], proj: bool| -> f64 {
        fs.iter().filter_map(|f| f.get(Indicator::TotalEnergy)).filter_map(|v| if proj { v.projected } else { v.value }).sum()
    };
    let summary = PlanSummary {
        agencies: agencies.len(),
        total_energy_last_full_year: total(last_full, false),
        total_energy_year_to_date: total(current, false),
        total_energy_projected: total(current, true),
        budget_kgce: agencies.iter().map(|a| a.budget_kgce).sum(),
        budget_cost_yuan: agencies.iter().map(|a| a.budget_cost_yuan).sum(),
        audits_required: agencies.iter().filter(|a| a.audit_required).count(),
    };
    EnergyPlan {
        report: "plan",
        year,
        current_year: year - 1,
        last_full_year: year - 2,
        as_of: as_of.into(),
        timezone: timezone.into(),
        agencies,
        summary,
        weather_normalised: Vec::new(),
        retrofit_ranking: Vec::new(),
    }
}

// ---------------------------------------------------------------- deadlines

/// Art. 39 deadlines of one reporting year and what is missing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deadlines {
    /// The year whose figures are reported.
    pub year: i32,
    pub as_of: String,
    /// Agencies' reports to the bureau: 31 March of the next year.
    pub agencies_due: String,
    /// The bureau's aggregate to the government: 30 June of the next year.
    pub bureau_due: String,
    pub days_to_agencies_due: i64,
    pub days_to_bureau_due: i64,
    pub agencies: Vec<AgencyReadiness>,
    /// Agencies whose data of the year is not complete.
    pub incomplete: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgencyReadiness {
    pub agency: String,
    pub name: String,
    pub complete: bool,
    pub coverage: f64,
    pub missing_headcount: bool,
    /// Notes of meters whose counter went down without a recorded replacement.
    pub unexplained_decreases: Vec<String>,
    /// Every problem in words (English; the page translates the kinds).
    pub missing: Vec<String>,
}

pub fn deadlines(reg: &Registry, year: i32, as_of: chrono::NaiveDate, figures: &[AgencyIndicators]) -> Deadlines {
    let due = |m: u32, d: u32| chrono::NaiveDate::from_ymd_opt(year + 1, m, d);
    let a_due = due(3, 31);
    let b_due = due(6, 30);
    let days = |d: Option<chrono::NaiveDate>| d.map_or(0, |d| (d - as_of).num_days());
    let agencies: Vec<AgencyReadiness> = figures
        .iter()
        .map(|f| {
            let missing_headcount = reg.agency(&f.agency).is_none_or(|a| a.headcount(year).is_none());
            let unexplained: Vec<String> =
                f.meters_to_check.iter().map(|id| format!("meter `{id}`: the counter went down without a recorded replacement; an engineer must check it")).collect();
            let mut missing = Vec::new();
            if !f.quality.complete {
                missing.push(format!("coverage {:.1}% is below the completeness threshold", f.quality.coverage * 100.0));
            }
            if missing_headcount {
                missing.push(format!("no headcount for {year}"));
            }
            missing.extend(unexplained.iter().cloned());
            AgencyReadiness {
                agency: f.agency.clone(),
                name: f.name.clone(),
                complete: f.quality.complete && !missing_headcount && unexplained.is_empty(),
                coverage: f.quality.coverage,
                missing_headcount,
                unexplained_decreases: unexplained,
                missing,
            }
        })
        .collect();
    Deadlines {
        year,
        as_of: as_of.format("%Y-%m-%d").to_string(),
        agencies_due: a_due.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
        bureau_due: b_due.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
        days_to_agencies_due: days(a_due),
        days_to_bureau_due: days(b_due),
        incomplete: agencies.iter().filter(|a| !a.complete).count(),
        agencies,
    }
}

// ---------------------------------------------------------------- signature

/// The signature block of a document: who reports (填报单位) and its people, from the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Signature {
    pub unit: Option<String>,
    pub responsible: Option<String>,
    pub filler: Option<String>,
    pub phone: Option<String>,
}

/// The agency whose signature block a document about `agency` (or about every agency) carries
/// (see [`signature`]).
pub fn signer<'a>(reg: &'a Registry, agency: Option<&str>) -> Option<&'a crate::registry::Agency> {
    match agency {
        Some(id) => reg.agency(id),
        None => {
            let roots = || reg.file.agencies.iter().filter(|a| a.parent.is_none());
            roots().find(|a| is_bureau(reg, &a.id)).or_else(|| roots().next())
        }
    }
}

/// The signature of a document about `agency`, or about every agency (the bureau signs: the
/// first agency without a parent that has agencies under it, else the first without a parent).
pub fn signature(reg: &Registry, agency: Option<&str>) -> Signature {
    signer(reg, agency).map_or_else(Signature::default, |a| Signature { unit: Some(a.name.clone()), responsible: a.responsible.clone(), filler: a.filler.clone(), phone: a.phone.clone() })
}
