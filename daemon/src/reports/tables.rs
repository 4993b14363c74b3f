//! Each report as tables (the rows of CSV, the sheets of XLSX, the tables of HTML): stable
//! column order, units in the headers (a `unit` column where rows differ), numbers as numbers.

use super::labels::{self, t, Lang};
use super::model::{scope_name, AgencyScore, AnnualReport, Assessment, EnergyPlan, ScoreItem};
use crate::accounting::indicators::Band;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Num(Option<f64>),
    /// A whole number (year, rank, days, headcount): an integer in XLSX.
    Int(Option<i64>),
    /// Yuan: two decimals in XLSX.
    Money(Option<f64>),
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
}

pub(super) fn num(x: f64) -> Cell {
    Cell::Num(Some(x).filter(|x| x.is_finite()))
}

pub(super) fn opt(x: Option<f64>) -> Cell {
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

fn int(x: i64) -> Cell {
    Cell::Int(Some(x))
}

pub(super) fn money(x: f64) -> Cell {
    Cell::Money(Some(x).filter(|x| x.is_finite()))
}

fn pct(x: f64) -> Cell {
    num(x * 100.0)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Stable key (`indicators`, `ranking`, ...).
    pub key: &'static str,
    /// Localised title (sheet name).
    pub title: String,
    pub headers: Vec<String>,
    /// The key of each column (to leave a column out by its key).
    pub keys: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Rows that are totals or subtotals (合计, 本级, 全辖): bold in XLSX and HTML.
    pub total_rows: Vec<usize>,
    /// Lines printed above the header (the statistics forms' heads) and below the rows.
    pub caption: Vec<String>,
    pub footer: Vec<String>,
    /// The forms' column numbers (栏次: 甲, 乙, 1, 2, ...) printed under the header.
    pub column_codes: Vec<String>,
}

impl Table {
    /// The table without the columns of `keys`.
    pub fn without(&self, keys: &[&str]) -> Table {
        let keep: Vec<usize> = (0..self.keys.len()).filter(|i| !keys.contains(&self.keys[*i])).collect();
        let pick = |v: &Vec<String>| if v.len() == self.keys.len() { keep.iter().map(|i| v[*i].clone()).collect() } else { v.clone() };
        Table {
            headers: pick(&self.headers),
            keys: keep.iter().map(|i| self.keys[*i]).collect(),
            rows: self.rows.iter().map(|r| keep.iter().filter_map(|i| r.get(*i).cloned()).collect()).collect(),
            column_codes: pick(&self.column_codes),
            ..self.clone()
        }
    }

    /// Adds a row that is a total or a subtotal.
    pub fn push_total(&mut self, row: Vec<Cell>) {
        self.total_rows.push(self.rows.len());
        self.rows.push(row);
    }
}

fn table(lang: Lang, key: &'static str, headers: &[&'static str]) -> Table {
    Table { key, title: t(lang, key), headers: headers.iter().map(|h| t(lang, h)).collect(), keys: headers.to_vec(), ..Table::default() }
}

fn scope_label(lang: Lang, s: crate::registry::Scope) -> String {
    t(lang, &format!("scope_{}", scope_name(s)))
}

/// Where a quota band comes from, printed beside it: the standard as the quota row names it,
/// the year of its edition, its table, and whether it is the shipped example table's.
pub fn citation(lang: Lang, b: &Band) -> String {
    let mut parts = Vec::new();
    if let Some(y) = b.source_year {
        parts.push(match lang {
            Lang::Zh => format!("{y}年版"),
            Lang::En => format!("{y} edition"),
        });
    }
    if let Some(tb) = &b.source_table {
        parts.push(tb.clone());
    }
    if b.example {
        parts.push(t(lang, "quota_example"));
    }
    if parts.is_empty() {
        b.source.clone()
    } else {
        match lang {
            Lang::Zh => format!("{}（{}）", b.source, parts.join("，")),
            Lang::En => format!("{} ({})", b.source, parts.join(", ")),
        }
    }
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
            "quota_source",
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
            // Energy cost is money: two decimals.
            let fig = |c: Cell| match c {
                Cell::Num(x) if v.indicator == crate::registry::Indicator::EnergyCost => Cell::Money(x),
                c => c,
            };
            ind.rows.push(vec![
                Cell::text(&sc),
                Cell::text(&e.agency),
                Cell::text(&e.name),
                Cell::text(labels::indicator(lang, v.indicator)),
                Cell::text(v.indicator.name()),
                Cell::text(labels::unit(lang, v.unit)),
                fig(figure(lang, v.data, v.value, false)),
                fig(figure(lang, v.data, v.projected, true)),
                fig(opt(v.last_year)),
                opt(v.change_pct),
                Cell::text(v.target.as_ref().map_or(String::new(), |x| t(lang, if x.kind == "budget" { "budget_kind" } else { x.kind }))),
                fig(opt(v.target.as_ref().map(|x| x.value))),
                Cell::text(v.target.as_ref().map_or(String::new(), |x| labels::yes_no(lang, x.met))),
                opt(v.band.as_ref().map(|b| b.binding)),
                opt(v.band.as_ref().map(|b| b.benchmark)),
                opt(v.band.as_ref().map(|b| b.guide)),
                Cell::text(v.band.as_ref().map_or("", |b| labels::class(lang, b.class))),
                Cell::text(v.band.as_ref().map_or(String::new(), |b| citation(lang, b))),
            ]);
        }
        for c in &f.carriers {
            car.rows.push(vec![
                Cell::text(&sc),
                Cell::text(&e.agency),
                Cell::text(labels::carrier(lang, c.carrier)),
                Cell::text(labels::unit(lang, c.unit)),
                num(c.value),
                num(c.projected),
                num(c.kgce),
                num(c.co2_kg),
                money(c.cost_yuan),
                num(c.estimated),
                opt(c.budget),
            ]);
        }
        if !f.carriers.is_empty() {
            // 合计 of the entry: energy, CO2 and cost add up; consumption in different units
            // does not (blank).
            car.push_total(vec![
                Cell::text(&sc),
                Cell::text(&e.agency),
                Cell::text(t(lang, "total_row")),
                Cell::text(labels::unit(lang, "kgce")),
                Cell::Num(None),
                Cell::Num(None),
                num(f.carriers.iter().map(|c| c.kgce).sum()),
                num(f.carriers.iter().map(|c| c.co2_kg).sum()),
                money(f.carriers.iter().map(|c| c.cost_yuan).sum()),
                Cell::Num(None),
                Cell::Num(None),
            ]);
        }
        qual.rows.push(vec![
            Cell::text(&sc),
            Cell::text(&e.agency),
            Cell::text(&e.name),
            int(f.days_elapsed as i64),
            pct(f.quality.coverage),
            pct(f.quality.measured_share),
            Cell::text(labels::yes_no(lang, f.quality.complete)),
            num(f.floor_area),
            whole(f.headcount),
            Cell::text(labels::method(lang, f.projection_method)),
            Cell::text(f.notes.iter().map(|n| labels::note(lang, n)).collect::<Vec<_>>().join(sep(lang))),
        ]);
        for m in 0..12 {
            mon.rows.push(vec![Cell::text(&sc), Cell::text(&e.agency), int(m as i64 + 1), num(e.monthly.this_year_kgce[m]), num(e.monthly.last_year_kgce[m])]);
        }
    }
    vec![ind, car, qual, mon]
}

/// A count that is usually whole (a headcount): an integer when it is one.
pub(super) fn whole(x: Option<f64>) -> Cell {
    match x.filter(|x| x.is_finite()) {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => Cell::Int(Some(v as i64)),
        v => Cell::Num(v),
    }
}

/// The separator of a list of sentences.
pub fn sep(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "；",
        Lang::En => "; ",
    }
}

/// Why an item lost points, in words; a band item names where its band comes from.
pub fn item_reason(lang: Lang, i: &ScoreItem) -> String {
    let words = item_words(lang, i);
    match (&i.band, lang) {
        (Some(b), Lang::Zh) => format!("{words}（{}：{}）", t(lang, "quota_source"), citation(lang, b)),
        (Some(b), Lang::En) => format!("{words} ({}: {})", t(lang, "quota_source"), citation(lang, b)),
        (None, _) => words,
    }
}

fn item_words(lang: Lang, i: &ScoreItem) -> String {
    let name = labels::indicator(lang, i.indicator);
    let lost = i.max_points - i.points;
    if i.withheld {
        return match lang {
            Lang::Zh => format!("{name} {} {}，{}：得 {} 分（满分 {}），失 {} 分", fmt(i.value), labels::unit(lang, i.unit), t(lang, "withheld"), fmt(i.points), fmt(i.max_points), fmt(lost)),
            Lang::En => format!("{name} {} {}, {}: {} of {} points, {} lost", fmt(i.value), labels::unit(lang, i.unit), t(lang, "withheld"), fmt(i.points), fmt(i.max_points), fmt(lost)),
        };
    }
    match (i.rule, lang) {
        ("scorecard", Lang::Zh) => format!(
            "{name} {} {}，为同类平均值 {} 的 {} 倍：得 {} 分（满分 {}），失 {} 分",
            fmt(i.value),
            labels::unit(lang, i.unit),
            fmt(i.average.unwrap_or(0.0)),
            fmt2(i.ratio.unwrap_or(0.0)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
        ("scorecard", Lang::En) => format!(
            "{name} {} {} is {} times the same-kind average {}: {} of {} points, {} lost",
            fmt(i.value),
            labels::unit(lang, i.unit),
            fmt2(i.ratio.unwrap_or(0.0)),
            fmt(i.average.unwrap_or(0.0)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
        (_, Lang::Zh) => format!(
            "{name} {} {}，{}：得 {} 分（满分 {}），失 {} 分",
            fmt(i.value),
            labels::unit(lang, i.unit),
            i.class.map_or("", |c| labels::class(lang, c)),
            fmt(i.points),
            fmt(i.max_points),
            fmt(lost)
        ),
        (_, Lang::En) => format!(
            "{name} {} {} is {}: {} of {} points, {} lost",
            fmt(i.value),
            labels::unit(lang, i.unit),
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
        let head = t(lang, &format!("unscored_{why}"));
        let missing: Vec<String> = s
            .data_missing
            .iter()
            .map(|(i, d)| match lang {
                Lang::Zh => format!("{}：{}", labels::indicator(lang, *i), labels::data_status(lang, *d)),
                Lang::En => format!("{}: {}", labels::indicator(lang, *i), labels::data_status(lang, *d)),
            })
            .collect();
        out.push(match (missing.is_empty(), lang) {
            (true, _) => head,
            (false, Lang::Zh) => format!("{head}（{}）", missing.join(sep(lang))),
            (false, Lang::En) => format!("{head} ({})", missing.join(sep(lang))),
        });
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
        out.push(match lang {
            Lang::Zh => format!("{}：{}", labels::indicator(lang, *ind), t(lang, why)),
            Lang::En => format!("{}: {}", labels::indicator(lang, *ind), t(lang, why)),
        });
    }
    out
}

/// A number as printed in words and HTML: at most two decimals, no trailing zeros, thousands
/// separated ([`labels::number`]).
pub fn fmt(x: f64) -> String {
    labels::number(x)
}

/// A ratio to an average, to three decimals (1.004 earns fewer points than 1.000).
fn fmt2(x: f64) -> String {
    format!("{x:.3}")
}

/// Tables of the assessment: ranking (the CSV), items, averages.
pub fn assessment(a: &Assessment, lang: Lang) -> Vec<Table> {
    let mut rank = table(lang, "ranking", &["rank", "agency", "name", "kind", "score", "grade", "points", "max_points", "binding_missed", "reasons"]);
    let mut items = table(lang, "items", &["agency", "rule", "indicator", "unit", "value", "average", "ratio", "class", "points", "max_points", "reason", "quota_source"]);
    // A closed year's value is the whole year's, a year in progress's the projection.
    items.headers[4] = t(lang, if a.in_progress { "projected" } else { "value_closed" });
    let mut avg = table(lang, "averages", &["kind", "indicator", "unit", "average", "agencies_n"]);
    for s in &a.agencies {
        rank.rows.push(vec![
            Cell::Int(s.rank.map(|r| r as i64)),
            Cell::text(&s.agency),
            Cell::text(&s.name),
            Cell::text(labels::kind(lang, &s.kind)),
            opt(s.score),
            Cell::text(if lang == Lang::Zh { s.grade.clone() } else { s.grade_en.clone() }.unwrap_or_default()),
            num(s.points),
            num(s.max_points),
            int(s.binding_missed.len() as i64),
            Cell::text(reasons(lang, s).join(sep(lang))),
        ]);
        for i in &s.items {
            items.rows.push(vec![
                Cell::text(&s.agency),
                Cell::text(t(lang, &format!("rule_{}", i.rule))),
                Cell::text(labels::indicator(lang, i.indicator)),
                Cell::text(labels::unit(lang, i.unit)),
                num(i.value),
                if i.withheld { Cell::text(t(lang, "withheld")) } else { opt(i.average) },
                opt(i.ratio),
                Cell::text(i.class.map_or("", |c| labels::class(lang, c))),
                num(i.points),
                num(i.max_points),
                Cell::text(item_words(lang, i)),
                Cell::text(i.band.as_ref().map_or(String::new(), |b| citation(lang, b))),
            ]);
        }
    }
    for x in &a.averages {
        avg.rows.push(vec![
            Cell::text(labels::kind(lang, &x.kind)),
            Cell::text(labels::indicator(lang, x.indicator)),
            Cell::text(labels::unit(lang, x.indicator.unit())),
            if x.withheld { Cell::text(t(lang, "withheld")) } else { opt(x.average) },
            int(x.agencies as i64),
        ]);
    }
    vec![rank, items, avg]
}

/// Tables of the plan: targets (the CSV), audits, budget, summary.
pub fn plan(p: &EnergyPlan, lang: Lang) -> Vec<Table> {
    let mut tg = table(
        lang,
        "targets",
        &["agency", "name", "indicator", "indicator_key", "unit", "last_full_year", "value", "projected", "class", "current_target", "proposed_target", "label", "quota_source"],
    );
    // Years in the headers of the figures.
    let year_head = |y: i32, k: &str| match lang {
        Lang::Zh => format!("{y}年{}", t(lang, k)),
        Lang::En => format!("{y} {}", t(lang, k)),
    };
    tg.headers[5] = year_head(p.last_full_year, "last_full_year");
    tg.headers[6] = year_head(p.current_year, "value");
    tg.headers[7] = year_head(p.current_year, "projected");
    tg.headers[9] = year_head(p.current_year, "target");
    tg.headers[10] = year_head(p.year, "target");
    let mut au = table(lang, "audits", &["agency", "name", "audit_kind", "indicator", "unit", "year", "value", "limit"]);
    let mut bu = table(lang, "budget_sheet", &["agency", "name", "carrier", "unit", "projected", "factor", "budget_consumption", "kgce", "price", "cost"]);
    bu.headers[4] = year_head(p.current_year, "projected");
    bu.headers[6] = year_head(p.year, "budget_consumption");
    for a in &p.agencies {
        for v in &a.indicators {
            tg.rows.push(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(labels::indicator(lang, v.indicator)),
                Cell::text(v.indicator.name()),
                Cell::text(labels::unit(lang, v.unit)),
                opt(v.last_full_year),
                opt(v.year_to_date),
                opt(v.projected),
                Cell::text(v.class.map_or("", |c| labels::class(lang, c))),
                opt(v.current_target),
                opt(v.proposed_target),
                Cell::text(v.target_label.clone().unwrap_or_default()),
                Cell::text(v.band.as_ref().map_or(String::new(), |b| citation(lang, b))),
            ]);
        }
        for r in &a.audit_reasons {
            au.rows.push(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(t(lang, r.kind)),
                Cell::text(labels::indicator(lang, r.indicator)),
                Cell::text(labels::unit(lang, r.indicator.unit())),
                int(i64::from(r.year)),
                num(r.value),
                num(r.limit),
            ]);
        }
        for b in &a.budget {
            bu.rows.push(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(labels::carrier(lang, b.carrier)),
                Cell::text(labels::unit(lang, b.unit)),
                num(b.projected_current),
                num(b.factor),
                num(b.consumption),
                num(b.kgce),
                money(b.price),
                money(b.cost_yuan),
            ]);
        }
        if !a.budget.is_empty() {
            bu.push_total(vec![
                Cell::text(&a.agency),
                Cell::text(&a.name),
                Cell::text(t(lang, "total_row")),
                Cell::text(String::new()),
                Cell::Num(None),
                Cell::Num(None),
                Cell::Num(None),
                num(a.budget_kgce),
                Cell::Money(None),
                money(a.budget_cost_yuan),
            ]);
        }
    }
    if p.agencies.len() > 1 {
        bu.push_total(vec![
            Cell::text(String::new()),
            Cell::text(t(lang, "whole_jurisdiction_total")),
            Cell::text(t(lang, "total_row")),
            Cell::text(String::new()),
            Cell::Num(None),
            Cell::Num(None),
            Cell::Num(None),
            num(p.summary.budget_kgce),
            Cell::Money(None),
            money(p.summary.budget_cost_yuan),
        ]);
    }
    let mut su = table(lang, "summary", &["item", "figure"]);
    let s = &p.summary;
    su.rows.push(vec![Cell::text(t(lang, "agencies_count")), int(s.agencies as i64)]);
    for (k, v) in [("total_last_full", s.total_energy_last_full_year), ("total_ytd", s.total_energy_year_to_date), ("total_projected", s.total_energy_projected), ("budget_kgce", s.budget_kgce)] {
        su.rows.push(vec![Cell::text(t(lang, k)), num(v)]);
    }
    su.rows.push(vec![Cell::text(t(lang, "budget_cost")), money(s.budget_cost_yuan)]);
    su.rows.push(vec![Cell::text(t(lang, "audits_required")), int(s.audits_required as i64)]);
    vec![tg, au, bu, su]
}
