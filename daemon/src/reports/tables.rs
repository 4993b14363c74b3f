//! Each report as tables (the rows of CSV, the sheets of XLSX, the tables of HTML): stable
//! column order, units in the headers (a `unit` column where rows differ), numbers as numbers.

use super::labels::{self, t, Lang};
use super::model::{scope_name, AgencyScore, AnnualReport, Assessment, EnergyPlan, ScoreItem};

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Num(Option<f64>),
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
}

fn num(x: f64) -> Cell {
    Cell::Num(Some(x).filter(|x| x.is_finite()))
}

fn opt(x: Option<f64>) -> Cell {
    Cell::Num(x.filter(|x| x.is_finite()))
}

/// A figure, or why there is none: 无数据 (no data) in every column, 数据不完整 (incomplete)
/// where only complete data gives a figure (`whole`: projections, band classes).
fn figure(lang: Lang, data: crate::accounting::indicators::DataStatus, x: Option<f64>, whole: bool) -> Cell {
    use crate::accounting::indicators::DataStatus;
    match data {
        DataStatus::NoData => Cell::text(labels::data_status(lang, data)),
        DataStatus::Incomplete if whole => Cell::text(labels::data_status(lang, data)),
        _ => opt(x),
    }
}

fn pct(x: f64) -> Cell {
    num(x * 100.0)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Stable key (`indicators`, `ranking`, ...).
    pub key: &'static str,
    /// Localised title (sheet name).
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

fn table(lang: Lang, key: &'static str, headers: &[&str]) -> Table {
    Table { key, title: t(lang, key), headers: headers.iter().map(|h| t(lang, h)).collect(), rows: Vec::new() }
}

fn scope_label(lang: Lang, s: crate::api::accounting::Scope) -> String {
    t(lang, &format!("scope_{}", scope_name(s)))
}

/// Tables of the annual report: indicators (the CSV), carriers, quality, monthly.
pub fn annual(r: &AnnualReport, lang: Lang) -> Vec<Table> {
    let mut ind = table(
        lang,
        "indicators",
        &[
            "scope",
            "agency",
            "name",
            "indicator",
            "indicator_key",
            "unit",
            if r.in_progress { "value" } else { "value_closed" },
            "projected",
            "last_year",
            "change_pct",
            "target_kind",
            "target",
            "met",
            "binding",
            "benchmark",
            "guide",
            "class",
        ],
    );
    let mut car = table(lang, "carriers", &["scope", "agency", "carrier", "unit", "consumption", "projected", "kgce", "co2", "cost", "estimated", "budget"]);
    let mut qual = table(
        lang,
        "quality",
        &["scope", "agency", "name", "days_elapsed", "coverage", "measured_share", "complete", "floor_area", "headcount", "method", "notes"],
    );
    let mut mon = table(lang, "monthly", &["scope", "agency", "month", "this_year_kgce", "last_year_kgce"]);
    for e in &r.entries {
        let f = &e.figures;
        let sc = scope_label(lang, e.scope);
        for v in &f.indicators {
            ind.rows.push(vec![
                Cell::text(&sc),
                Cell::text(&e.agency),
                Cell::text(&e.name),
                Cell::text(labels::indicator(lang, v.indicator)),
                Cell::text(v.indicator.name()),
                Cell::text(v.unit),
                figure(lang, v.data, v.value, false),
                figure(lang, v.data, v.projected, true),
                opt(v.last_year),
                opt(v.change_pct),
                Cell::text(v.target.as_ref().map_or(String::new(), |x| t(lang, if x.kind == "budget" { "budget_kind" } else { x.kind }))),
                opt(v.target.as_ref().map(|x| x.value)),
                Cell::text(v.target.as_ref().map_or(String::new(), |x| labels::yes_no(lang, x.met))),
                opt(v.band.as_ref().map(|b| b.binding)),
                opt(v.band.as_ref().map(|b| b.benchmark)),
                opt(v.band.as_ref().map(|b| b.guide)),
                Cell::text(v.band.as_ref().map_or("", |b| labels::class(lang, b.class))),
            ]);
        }
        for c in &f.carriers {
            car.rows.push(vec![
                Cell::text(&sc),
                Cell::text(&e.agency),
                Cell::text(labels::carrier(lang, c.carrier)),
                Cell::text(c.unit),
                num(c.value),
                num(c.projected),
                num(c.kgce),
                num(c.co2_kg),
                num(c.cost_yuan),
                num(c.estimated),
                opt(c.budget),
            ]);
        }
        qual.rows.push(vec![
            Cell::text(&sc),
            Cell::text(&e.agency),
            Cell::text(&e.name),
            num(f.days_elapsed as f64),
            pct(f.quality.coverage),
            pct(f.quality.measured_share),
            Cell::text(labels::yes_no(lang, f.quality.complete)),
            num(f.floor_area),
            opt(f.headcount),
            Cell::text(f.projection_method),
            Cell::text(f.notes.join("; ")),
        ]);
        for m in 0..12 {
            mon.rows.push(vec![Cell::text(&sc), Cell::text(&e.agency), num((m + 1) as f64), num(e.monthly.this_year_kgce[m]), num(e.monthly.last_year_kgce[m])]);
        }
    }
    vec![ind, car, qual, mon]
}

/// Why an item lost points, in words.
pub fn item_reason(lang: Lang, i: &ScoreItem) -> String {
    let name = labels::indicator(lang, i.indicator);
    let lost = i.max_points - i.points;
    if i.withheld {
        return match lang {
            Lang::Zh => format!("{name} {} {}，{}：得 {} 分（满分 {}），失 {} 分", fmt(i.value), i.unit, t(lang, "withheld"), fmt(i.points), fmt(i.max_points), fmt(lost)),
            Lang::En => format!("{name} {} {}, {}: {} of {} points, {} lost", fmt(i.value), i.unit, t(lang, "withheld"), fmt(i.points), fmt(i.max_points), fmt(lost)),
        };
    }
    match (i.rule, lang) {
        ("scorecard", Lang::Zh) => format!(
            "{name} {} {}，为同类平均值 {} 的 {} 倍：得 {} 分（满分 {}），失 {} 分",
            fmt(i.value),
            i.unit,
            fmt(i.average.unwrap_or(0.0)),
            fmt2(i.ratio.unwrap_or(0.0)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
        ("scorecard", Lang::En) => format!(
            "{name} {} {} is {} times the same-kind average {}: {} of {} points, {} lost",
            fmt(i.value),
            i.unit,
            fmt2(i.ratio.unwrap_or(0.0)),
            fmt(i.average.unwrap_or(0.0)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
        (_, Lang::Zh) => format!(
            "{name} {} {}，{}：得 {} 分（满分 {}），失 {} 分",
            fmt(i.value),
            i.unit,
            i.class.map_or("", |c| labels::class(lang, c)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
        (_, Lang::En) => format!(
            "{name} {} {} is {}: {} of {} points, {} lost",
            fmt(i.value),
            i.unit,
            i.class.map_or("", |c| labels::class(lang, c)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
    }
}

/// Why an agency lost points and missed targets, in words (items that lost nothing are left out).
pub fn reasons(lang: Lang, s: &AgencyScore) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = s.unscored_reason {
        let missing: Vec<String> = s.data_missing.iter().map(|(i, d)| format!("{}: {}", labels::indicator(lang, *i), labels::data_status(lang, *d))).collect();
        let sep = if lang == Lang::Zh { "；" } else { "; " };
        out.push(if missing.is_empty() { t(lang, &format!("unscored_{why}")) } else { format!("{} ({})", t(lang, &format!("unscored_{why}")), missing.join(sep)) });
    }
    for m in &s.binding_missed {
        let kind = match m.kind {
            crate::registry::BindingKind::Reduction => "reduction",
            crate::registry::BindingKind::Budget => "budget_kind",
            crate::registry::BindingKind::QuotaBinding => "quota_binding",
        };
        out.push(match lang {
            Lang::Zh => format!("未完成约束性目标（{}）：{} {} 高于 {}", t(lang, kind), labels::indicator(lang, m.indicator), fmt(m.value), fmt(m.limit)),
            Lang::En => format!("binding target missed ({}): {} {} above {}", t(lang, kind), labels::indicator(lang, m.indicator), fmt(m.value), fmt(m.limit)),
        });
    }
    for i in s.items.iter().filter(|i| i.points < i.max_points) {
        out.push(item_reason(lang, i));
    }
    for (ind, why) in &s.skipped {
        out.push(format!("{}: {}", labels::indicator(lang, *ind), t(lang, why)));
    }
    out
}

/// A number as printed in words: at most two decimals, no trailing zeros.
pub fn fmt(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r}")
    }
}

/// A ratio to an average, to three decimals (1.004 earns fewer points than 1.000).
fn fmt2(x: f64) -> String {
    format!("{x:.3}")
}

/// Tables of the assessment: ranking (the CSV), items, averages.
pub fn assessment(a: &Assessment, lang: Lang) -> Vec<Table> {
    let mut rank = table(lang, "ranking", &["rank", "agency", "name", "kind", "score", "grade", "points", "max_points", "binding_missed", "reasons"]);
    let mut items = table(lang, "items", &["agency", "rule", "indicator", "unit", "value", "average", "ratio", "class", "points", "max_points", "reason"]);
    let mut avg = table(lang, "averages", &["kind", "indicator", "unit", "average", "agencies_n"]);
    for s in &a.agencies {
        rank.rows.push(vec![
            opt(s.rank.map(|r| r as f64)),
            Cell::text(&s.agency),
            Cell::text(&s.name),
            Cell::text(&s.kind),
            opt(s.score),
            Cell::text(if lang == Lang::Zh { s.grade.clone() } else { s.grade_en.clone() }.unwrap_or_default()),
            num(s.points),
            num(s.max_points),
            num(s.binding_missed.len() as f64),
            Cell::text(reasons(lang, s).join("; ")),
        ]);
        for i in &s.items {
            items.rows.push(vec![
                Cell::text(&s.agency),
                Cell::text(t(lang, &format!("rule_{}", i.rule))),
                Cell::text(labels::indicator(lang, i.indicator)),
                Cell::text(i.unit),
                num(i.value),
                if i.withheld { Cell::text(t(lang, "withheld")) } else { opt(i.average) },
                opt(i.ratio),
                Cell::text(i.class.map_or("", |c| labels::class(lang, c))),
                num(i.points),
                num(i.max_points),
                Cell::text(item_reason(lang, i)),
            ]);
        }
    }
    for x in &a.averages {
        avg.rows.push(vec![Cell::text(&x.kind), Cell::text(labels::indicator(lang, x.indicator)), Cell::text(x.indicator.unit()), if x.withheld { Cell::text(t(lang, "withheld")) } else { opt(x.average) }, num(x.agencies as f64)]);
    }
    vec![rank, items, avg]
}

/// Tables of the plan: targets (the CSV), audits, budget, summary.
pub fn plan(p: &EnergyPlan, lang: Lang) -> Vec<Table> {
    let mut tg = table(lang, "targets", &["agency", "name", "indicator", "indicator_key", "unit", "last_full_year", "value", "projected", "class", "current_target", "proposed_target", "label"]);
    // Years in the headers of the figures.
    tg.headers[5] = format!("{} {}", p.last_full_year, t(lang, "last_full_year"));
    tg.headers[6] = format!("{} {}", p.current_year, t(lang, "value"));
    tg.headers[7] = format!("{} {}", p.current_year, t(lang, "projected"));
    tg.headers[9] = format!("{} {}", p.current_year, t(lang, "target"));
    tg.headers[10] = format!("{} {}", p.year, t(lang, "target"));
    let mut au = table(lang, "audits", &["agency", "name", "audit_kind", "indicator", "unit", "year", "value", "limit"]);
    let mut bu = table(lang, "budget_sheet", &["agency", "name", "carrier", "unit", "projected", "factor", "budget_consumption", "kgce", "price", "cost"]);
    bu.headers[4] = format!("{} {}", p.current_year, t(lang, "projected"));
    bu.headers[6] = format!("{} {}", p.year, t(lang, "budget_consumption"));
    for a in &p.agencies {
        for v in &a.indicators {
            tg.rows.push(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(labels::indicator(lang, v.indicator)),
                Cell::text(v.indicator.name()),
                Cell::text(v.unit),
                opt(v.last_full_year),
                opt(v.year_to_date),
                opt(v.projected),
                Cell::text(v.class.map_or("", |c| labels::class(lang, c))),
                opt(v.current_target),
                opt(v.proposed_target),
                Cell::text(v.target_label.clone().unwrap_or_default()),
            ]);
        }
        for r in &a.audit_reasons {
            au.rows.push(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(t(lang, r.kind)),
                Cell::text(labels::indicator(lang, r.indicator)),
                Cell::text(r.indicator.unit()),
                num(f64::from(r.year)),
                num(r.value),
                num(r.limit),
            ]);
        }
        for b in &a.budget {
            bu.rows.push(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(labels::carrier(lang, b.carrier)),
                Cell::text(b.unit),
                num(b.projected_current),
                num(b.factor),
                num(b.consumption),
                num(b.kgce),
                num(b.price),
                num(b.cost_yuan),
            ]);
        }
    }
    let mut su = table(lang, "summary", &["item", "figure"]);
    let s = &p.summary;
    for (k, v) in [
        ("agencies_count", s.agencies as f64),
        ("total_last_full", s.total_energy_last_full_year),
        ("total_ytd", s.total_energy_year_to_date),
        ("total_projected", s.total_energy_projected),
        ("budget_kgce", s.budget_kgce),
        ("budget_cost", s.budget_cost_yuan),
        ("audits_required", s.audits_required as f64),
    ] {
        su.rows.push(vec![Cell::text(t(lang, k)), num(v)]);
    }
    vec![tg, au, bu, su]
}
