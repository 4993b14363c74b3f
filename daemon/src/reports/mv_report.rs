//! The M&V report (测量与验证报告) of a project or of any savings question: the model and its
//! statistics, the non-routine adjustments, the savings per month with their uncertainty, the
//! contract's settlement, the weather-normalised and the raw comparisons. JSON (the savings
//! answer itself), CSV (the monthly savings), XLSX (one sheet per table, through
//! [`super::render::xlsx`]) and printable HTML (A4, through [`super::html`]); Chinese by default.
//!
//! The words are kept here, beside the one document that uses them (both languages in one
//! pair per phrase), rather than in `labels.rs`.

use super::html::{esc, money_text, page_start, table_with_heading};
use super::labels::Lang;
use super::mv::{NormalisedFigure, RetrofitCandidate, SavingsOut};
use super::render;
use super::tables::{num, opt, Cell, Table};
use super::{Format, Output, ReportError};

fn w(lang: Lang, zh: &str, en: &str) -> String {
    match lang {
        Lang::Zh => zh.to_string(),
        Lang::En => en.to_string(),
    }
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn table(lang: Lang, key: &'static str, title: (&str, &str), cols: &[(&'static str, &str, &str)]) -> Table {
    Table {
        key,
        title: w(lang, title.0, title.1),
        headers: cols.iter().map(|(_, zh, en)| w(lang, zh, en)).collect(),
        keys: cols.iter().map(|(k, _, _)| *k).collect(),
        ..Table::default()
    }
}

fn form_name(lang: Lang, form: &str) -> String {
    match form {
        "hdd" => w(lang, "采暖度日模型", "heating degree-day model"),
        "cdd" => w(lang, "空调度日模型", "cooling degree-day model"),
        "hdd_cdd" => w(lang, "采暖与空调度日模型", "heating and cooling degree-day model"),
        _ => w(lang, "常数模型（与气温无关）", "intercept-only model (no weather dependence)"),
    }
}

/// The report's tables.
pub fn tables(s: &SavingsOut, lang: Lang) -> Vec<Table> {
    let unit = s.unit;
    let mut out = Vec::new();
    // Overview.
    let mut o = table(lang, "mv_overview", ("项目概况", "Overview"), &[("item", "项目", "Item"), ("value", "内容", "Value")]);
    let (scope_key, scope_id) = s.scope.iter().next().map(|(k, v)| (*k, v.clone())).unwrap_or(("", String::new()));
    if let Some(p) = &s.project {
        o.rows.push(vec![text(w(lang, "项目名称", "Project")), text(format!("{} ({})", p.name, p.id))]);
        o.rows.push(vec![text(w(lang, "项目类型", "Contract type")), text(if lang == Lang::Zh { p.contract_zh.to_string() } else { p.contract.as_str().replace('_', " ") })]);
        o.rows.push(vec![text(w(lang, "节能服务公司", "Energy service company")), text(p.esco.clone().unwrap_or_else(|| "–".into()))]);
        if let Some(i) = &p.installation {
            o.rows.push(vec![text(w(lang, "安装调试期（不计入）", "Installation period (excluded)")), text(i.clone())]);
        }
    } else {
        let k = match scope_key {
            "meter" => w(lang, "计量器具", "Meter"),
            "building" => w(lang, "建筑", "Building"),
            _ => w(lang, "单位", "Agency"),
        };
        o.rows.push(vec![text(k), text(scope_id)]);
    }
    o.rows.push(vec![text(w(lang, "基准期", "Baseline period")), text(format!("{} — {}", s.baseline.from, s.baseline.to))]);
    o.rows.push(vec![text(w(lang, "报告期", "Reporting period")), text(format!("{} — {}", s.reporting.from, s.reporting.to))]);
    o.rows.push(vec![text(w(lang, "气象数据（室外温度）", "Weather (outdoor temperature)")), text(s.weather.clone())]);
    o.rows.push(vec![text(w(lang, "计量单位", "Unit")), text(unit)]);
    o.rows.push(vec![text(w(lang, "基准期数据完整率", "Baseline days with data")), text(format!("{} / {} ({:.1} %)", s.baseline.days_with_data, s.baseline.days, 100.0 * s.baseline.coverage))]);
    o.rows.push(vec![text(w(lang, "方法", "Method")), text(w(lang, "IPMVP 选项 C（全建筑），CalTRACK 2.0 日模型，ASHRAE Guideline 14-2014 统计与不确定度", "IPMVP Option C (whole facility), CalTRACK 2.0 daily models, ASHRAE Guideline 14-2014 statistics and uncertainty"))]);
    out.push(o);
    // Model.
    let mut m = table(lang, "mv_model", ("基准模型", "Baseline model"), &[("item", "项目", "Item"), ("value", "数值", "Value")]);
    let pct = |x: f64| Cell::Num(Some(100.0 * x).filter(|v| v.is_finite()));
    m.rows.push(vec![text(w(lang, "模型形式", "Form")), text(format!("{} ({})", form_name(lang, s.model.form), s.model.form))]);
    m.rows.push(vec![text(w(lang, "采暖平衡点温度（℃）", "Heating balance point (°C)")), opt(s.model.heating_balance_point_c)]);
    m.rows.push(vec![text(w(lang, "空调平衡点温度（℃）", "Cooling balance point (°C)")), opt(s.model.cooling_balance_point_c)]);
    m.rows.push(vec![text(format!("{}（{unit}/d）", w(lang, "截距", "Intercept"))), num(s.model.coefficients.intercept)]);
    m.rows.push(vec![text(format!("{}（{unit}/℃·d）", w(lang, "采暖度日系数", "β HDD"))), opt(s.model.coefficients.beta_hdd)]);
    m.rows.push(vec![text(format!("{}（{unit}/℃·d）", w(lang, "空调度日系数", "β CDD"))), opt(s.model.coefficients.beta_cdd)]);
    m.rows.push(vec![text(w(lang, "样本天数 n", "Days n")), Cell::Int(Some(s.fit.stats.n as i64))]);
    m.rows.push(vec![text("R²"), num(s.fit.stats.r2)]);
    m.rows.push(vec![text(w(lang, "调整 R²", "Adjusted R²")), num(s.fit.stats.adj_r2)]);
    m.rows.push(vec![text("CV(RMSE) (%)"), pct(s.fit.stats.cv_rmse)]);
    m.rows.push(vec![text("NMBE (%)"), pct(s.fit.stats.nmbe)]);
    m.rows.push(vec![text(w(lang, "月度 CV(RMSE) (%)", "Monthly CV(RMSE) (%)")), Cell::Num(s.fit.stats.monthly_cv_rmse.map(|x| 100.0 * x))]);
    m.rows.push(vec![
        text(w(lang, "ASHRAE Guideline 14 判定（CV(RMSE) ≤ 15 %，|NMBE| ≤ 5 %）", "ASHRAE Guideline 14 (CV(RMSE) <= 15 %, |NMBE| <= 5 %)")),
        text(if s.fit.stats.ashrae14_pass { w(lang, "符合", "pass") } else { w(lang, "不符合", "fail") }),
    ]);
    m.rows.push(vec![text(w(lang, "选择准则", "Selection")), text(w(lang, "合格候选模型中调整 R² 最高者（CalTRACK 3.4.3.3）", "highest adjusted R² among the qualified candidates (CalTRACK 3.4.3.3)"))]);
    out.push(m);
    // Monthly savings.
    let mut sv = table(
        lang,
        "mv_savings",
        ("节能量", "Savings"),
        &[
            ("month", "月份", "Month"),
            ("observed", "实测用量", "Metered"),
            ("predicted", "调整后基准用量", "Adjusted baseline"),
            ("avoided", "节能量", "Avoided"),
            ("avoided_pct", "节能率 (%)", "Savings (%)"),
            ("uncertainty_pct", "不确定度 (%，90 % 置信)", "Uncertainty (%, 90 % confidence)"),
        ],
    );
    for h in sv.headers.iter_mut().skip(1).take(3) {
        h.push_str(&format!("（{unit}）"));
    }
    for mo in &s.reporting.months {
        let a = &mo.avoided;
        sv.rows.push(vec![text(mo.month.clone()), num(a.observed), num(a.predicted), num(a.avoided), opt(a.avoided_pct), opt(a.uncertainty_pct)]);
    }
    let r = &s.reporting;
    sv.push_total(vec![text(w(lang, "报告期合计", "Reporting period")), num(r.total.observed), num(r.total.predicted), num(r.total.avoided), opt(r.total.avoided_pct), opt(r.total.uncertainty_pct)]);
    out.push(sv);
    // Adjustments.
    if let Some(p) = s.project.as_ref().filter(|p| !p.adjustments.is_empty()) {
        let mut a = table(
            lang,
            "mv_adjustments",
            ("非常规调整", "Non-routine adjustments"),
            &[("from", "起始日期", "From"), ("to", "截止日期", "To"), ("per_day", "每日调整量", "Per day"), ("reason", "原因", "Reason")],
        );
        a.headers[2].push_str(&format!("（{unit}）"));
        for x in &p.adjustments {
            a.rows.push(vec![text(x.from.clone()), text(x.to.clone().unwrap_or_else(|| "–".into())), num(x.per_day), text(x.reason.clone())]);
        }
        a.push_total(vec![text(w(lang, "报告期合计", "Reporting period")), text(""), num(r.adjustments), text("")]);
        out.push(a);
    }
    // Value and comparisons.
    let mut v = table(lang, "mv_value", ("节能效益与对比", "Value and comparisons"), &[("item", "项目", "Item"), ("value", "数值", "Value")]);
    v.rows.push(vec![text(format!("{}（{unit}）", w(lang, "节能量 90 % 置信区间下限", "Avoided, 90 % lower bound"))), opt(r.avoided_low)]);
    v.rows.push(vec![text(format!("{}（{unit}）", w(lang, "节能量 90 % 置信区间上限", "Avoided, 90 % upper bound"))), opt(r.avoided_high)]);
    v.rows.push(vec![text(w(lang, "折合标准煤（kgce）", "In standard coal (kgce)")), opt(r.avoided_kgce)]);
    v.rows.push(vec![text(w(lang, "减少二氧化碳排放（kg）", "CO2 avoided (kg)")), opt(r.avoided_co2_kg)]);
    v.rows.push(vec![text(w(lang, "节能效益（元）", "Value (yuan)")), Cell::Money(r.avoided_money)]);
    if let Some(n) = &s.normalised {
        v.rows.push(vec![text(w(lang, "典型年气象下的年节能率（%，天气归一化）", "Normalised savings under the typical year (%)")), opt(n.savings_pct)]);
        v.rows.push(vec![text(format!("{}（{unit}）", w(lang, "典型年气象下的年节能量", "Normalised annual savings"))), num(n.savings)]);
    }
    v.rows.push(vec![text(w(lang, "原始同比变化（%，未经天气修正）", "Raw change, not weather-adjusted (%)")), opt(s.raw.change_pct)]);
    if let Some(st) = s.project.as_ref().and_then(|p| p.settlement.as_ref()) {
        v.rows.push(vec![text(w(lang, "应付节能服务公司（元）", "Due to the energy service company (yuan)")), Cell::Money(Some(st.due_to_esco))]);
        v.rows.push(vec![text(w(lang, "节能服务公司应补偿（元）", "Due from the energy service company (yuan)")), Cell::Money(Some(st.due_from_esco))]);
    }
    out.push(v);
    out
}

/// The report in `format`.
pub fn render_mv(s: &SavingsOut, format: Format, lang: Lang, as_of: chrono::NaiveDate) -> Result<Output, ReportError> {
    let id = s.scope.values().next().cloned().unwrap_or_default();
    let filename = format!("mv-{id}.{}", format.as_str());
    let title = match &s.project {
        Some(p) => format!("{}{}", p.name, w(lang, " 测量与验证报告", " — M&V report")),
        None => format!("{id}{}", w(lang, " 节能量测量与验证报告", " — M&V report")),
    };
    let bytes = match format {
        Format::Json => serde_json::to_vec_pretty(s).map_err(|e| ReportError::Render(e.to_string()))?,
        Format::Csv => render::csv(&tables(s, lang)[2]),
        Format::Xlsx => render::xlsx(&title, as_of, &tables(s, lang), lang)?,
        Format::Html => html(s, &title, lang).into_bytes(),
    };
    Ok(Output { bytes, content_type: format.content_type(), filename, format })
}

fn html(s: &SavingsOut, title: &str, lang: Lang) -> String {
    let mut h = page_start(lang, title);
    h.push_str(&format!("<h1>{}</h1>\n", esc(title)));
    let r = &s.reporting;
    let summary = match (r.total.avoided_pct, r.total.uncertainty_pct) {
        (Some(p), Some(u)) => match lang {
            Lang::Zh => format!("报告期节能量 {:.1} {}（节能率 {:.1} %），90 % 置信度下不确定度 ±{:.1} %。", r.total.avoided, s.unit, p, u),
            Lang::En => format!("Avoided energy in the reporting period: {:.1} {} ({:.1} % savings), ±{:.1} % at 90 % confidence.", r.total.avoided, s.unit, p, u),
        },
        _ => match lang {
            Lang::Zh => format!("报告期节能量 {:.1} {}。", r.total.avoided, s.unit),
            Lang::En => format!("Avoided energy in the reporting period: {:.1} {}.", r.total.avoided, s.unit),
        },
    };
    h.push_str(&format!("<p class=\"meta\">{}</p>\n", esc(&summary)));
    if let Some(m) = r.avoided_money {
        h.push_str(&format!("<p class=\"meta\">{} {}</p>\n", esc(&w(lang, "节能效益（元）：", "Value (yuan):")), money_text(m)));
    }
    if !s.fit.stats.ashrae14_pass {
        h.push_str(&format!("<div class=\"warn\">{}</div>\n", esc(&w(lang, "基准模型不符合 ASHRAE Guideline 14 的精度要求，节能量仅供参考。", "The baseline model does not meet ASHRAE Guideline 14; the savings are indicative only."))));
    }
    for t in tables(s, lang) {
        h.push_str(&table_with_heading(&t, &[], &t.title));
    }
    let notes = notes(s, lang);
    if !notes.is_empty() {
        h.push_str(&format!("<h2>{}</h2><ul>", esc(&w(lang, "提示", "Notes"))));
        for x in &notes {
            h.push_str(&format!("<li>{}</li>", esc(x)));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// The notes of the report, in its language, from the figures.
fn notes(s: &SavingsOut, lang: Lang) -> Vec<String> {
    let mut out = Vec::new();
    if !s.baseline.months_short.is_empty() {
        let m = s.baseline.months_short.join(lang_sep(lang));
        out.push(match lang {
            Lang::Zh => format!("基准期中以下月份缺失数据超过 10 %：{m}。"),
            Lang::En => format!("Baseline months with more than 10 % of days missing: {m}."),
        });
    }
    if s.baseline.days < 365 {
        out.push(match lang {
            Lang::Zh => format!("基准期仅 {} 天，少于 CalTRACK 与 IPMVP 要求的一整年（365 天）。", s.baseline.days),
            Lang::En => format!("The baseline is {} days, less than the full year (365 days) CalTRACK and the IPMVP ask for.", s.baseline.days),
        });
    }
    if s.reporting.total.days_with_data < s.reporting.days {
        out.push(match lang {
            Lang::Zh => format!("报告期 {} 天中有 {} 天具备用量与气温数据，节能量仅按这些天计算。", s.reporting.days, s.reporting.total.days_with_data),
            Lang::En => format!("{} of the reporting period's {} days have use and weather; savings count those days only.", s.reporting.total.days_with_data, s.reporting.days),
        });
    }
    out
}

fn lang_sep(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "、",
        Lang::En => ", ",
    }
}

/// The assessment's and the plan's weather-normalised tables (none when no agency has a
/// weather series): raw and normalised energy side by side, and the retrofit ranking.
pub fn normalised_tables(figs: &[NormalisedFigure], ranking: &[RetrofitCandidate], lang: Lang) -> Vec<Table> {
    let mut out = Vec::new();
    if !figs.is_empty() {
        let mut t = table(
            lang,
            "weather_normalised",
            ("天气归一化能耗", "Weather-normalised energy"),
            &[
                ("agency", "单位", "Agency"),
                ("raw_kgce", "实测综合能耗（kgce，未经天气修正）", "Metered energy (kgce, raw)"),
                ("raw_change_pct", "实测同比（%）", "Raw change (%)"),
                ("normalised_kgce", "典型年综合能耗（kgce/a，天气归一化）", "Typical-year energy (kgce/a, normalised)"),
                ("normalised_change_pct", "归一化同比（%）", "Normalised change (%)"),
                ("model", "模型", "Model"),
                ("cv_rmse", "CV(RMSE)（%）", "CV(RMSE) (%)"),
            ],
        );
        for f in figs {
            t.rows.push(vec![
                text(f.agency.clone()),
                num(f.raw_kgce),
                opt(f.raw_change_pct),
                opt(f.normalised_kgce),
                opt(f.normalised_change_pct),
                text(f.model_form.map_or_else(|| f.note.clone().unwrap_or_default(), |m| form_name(lang, m))),
                Cell::Num(f.cv_rmse.map(|x| 100.0 * x)),
            ]);
        }
        out.push(t);
    }
    if !ranking.is_empty() {
        let mut t = table(
            lang,
            "retrofit_ranking",
            ("节能诊断与改造排序（按模型预期节能量）", "Audits and retrofits by expected savings"),
            &[
                ("rank", "序号", "Rank"),
                ("agency", "单位", "Agency"),
                ("intensity", "典型年单位面积能耗（kgce/m²）", "Typical-year intensity (kgce/m²)"),
                ("median", "同类中位数（kgce/m²）", "Kind median (kgce/m²)"),
                ("expected", "预期节能量（kgce/a）", "Expected savings (kgce/a)"),
                ("audit", "须开展能源审计", "Audit required"),
            ],
        );
        for c in ranking {
            t.rows.push(vec![
                Cell::Int(Some(c.rank as i64)),
                text(c.agency.clone()),
                num(c.normalised_kgce_per_m2),
                num(c.kind_median_kgce_per_m2),
                num(c.expected_savings_kgce),
                text(if c.audit_required { w(lang, "是", "yes") } else { w(lang, "否", "no") }),
            ]);
        }
        out.push(t);
    }
    out
}

/// `page` with `tables` added at its end (before `</body>`).
pub fn with_tables(page: String, tables: &[Table]) -> String {
    if tables.is_empty() {
        return page;
    }
    let extra: String = tables.iter().map(|t| table_with_heading(t, &[], &t.title)).collect();
    match page.rfind("</body>") {
        Some(i) => format!("{}{extra}{}", &page[..i], &page[i..]),
        None => page + &extra,
    }
}
