//! The pages: overview, agency, building, meter (with its data quality and the event forms),
//! reports and alerts. Each checks the viewer's scope with the same `Principal` rules as the
//! API's handlers before it computes anything.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{Datelike, NaiveDate};
use energy_wire::Carrier;
use serde_json::json;

use super::assets;
use super::figures::{figures, year_before_cut, Figures, Subject, Years};
use super::fmt::{self, esc, Lang};
use super::period::Period;
use super::{Viewer, WebShared};
use crate::accounting::indicators::AgencyIndicators;
use crate::registry::Indicator;
use crate::api::ApiError;
use crate::auth::Role;
use crate::reports::{self, Visible};

/// What every page knows: language, viewer, period, and the instant figures run to.
struct Ctx {
    lang: Lang,
    viewer: Viewer,
    period: Period,
    today: NaiveDate,
    cut_ms: i64,
    /// `as_of` as given (kept in every link).
    as_of: Option<String>,
}

impl Ctx {
    fn new(w: &WebShared, viewer: Viewer, p: &HashMap<String, String>) -> Result<Ctx, ApiError> {
        // `as_of` (YYYY-MM-DD): the page as it was at the start of that day (as the API's).
        let (today, cut_ms) = crate::time::as_of_cut(w.app.tz, crate::time::today(w.app.tz), p.get("as_of").map(String::as_str)).map_err(|e| ApiError::bad_request(format!("as_of: {e}")))?;
        let period = Period::parse(p, today).map_err(ApiError::bad_request)?;
        Ok(Ctx { lang: Lang::of(p), viewer, period, today, cut_ms, as_of: p.get("as_of").filter(|a| a.bytes().all(|b| b.is_ascii_digit() || b == b'-')).cloned() })
    }
    fn t<'a>(&self, zh: &'a str, en: &'a str) -> &'a str {
        self.lang.t(zh, en)
    }
    /// The query string of this page for another period (and the language kept).
    fn q(&self, period: Period) -> String {
        let mut s = period.query();
        if self.lang == Lang::En {
            s.push_str("&lang=en");
        }
        if let Some(a) = &self.as_of {
            s.push_str("&as_of=");
            s.push_str(a);
        }
        s
    }
    fn link(&self, path: &str) -> String {
        format!("{path}?{}", esc(&self.q(self.period)))
    }
    fn visible(&self) -> Visible {
        if self.viewer.principal.reads_all() {
            Visible::All
        } else {
            Visible::agencies(self.viewer.principal.agency.iter().cloned().collect())
        }
    }
    fn csrf_input(&self) -> String {
        format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(self.viewer.csrf.as_deref().unwrap_or("")))
    }
}

fn role_name(lang: Lang, r: Role) -> &'static str {
    match r {
        Role::Admin => lang.t("管理员", "admin"),
        Role::Bureau => lang.t("机关事务管理局", "bureau"),
        Role::Agency => lang.t("公共机构", "agency"),
        Role::Engineer => lang.t("工程师", "engineer"),
        Role::Gateway => lang.t("网关", "gateway"),
    }
}

/// The page frame: header with navigation, the viewer and logout, the period picker, then the
/// body. `path` is this page's path (the picker and the language links stay on it).
fn layout(c: &Ctx, path: &str, title: &str, crumbs: &[(String, String)], body: &str) -> Html<String> {
    let mut h = String::new();
    let (lang_zh, lang_en) = (format!("{path}?{}", esc(&c.period.query())), format!("{path}?{}&amp;lang=en", esc(&c.period.query())));
    let _ = write!(
        h,
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"csrf\" content=\"{csrf}\"><title>{title}</title><link rel=\"stylesheet\" href=\"{css}\">\
<script src=\"{echarts}\" defer></script><script src=\"{js}\" defer></script></head><body data-lang=\"{code}\">\
<header><nav><a class=\"home\" href=\"{home}\">{app}</a><a href=\"{home}\">{ov}</a><a href=\"{reports}\">{rp}</a>",
        code = c.lang.code(),
        csrf = esc(c.viewer.csrf.as_deref().unwrap_or("")),
        css = assets::CSS_PATH,
        echarts = assets::ECHARTS_PATH,
        js = assets::JS_PATH,
        home = c.link("/"),
        reports = c.link("/reports"),
        app = c.t("公共机构能源资源管理", "Public institutions' energy"),
        ov = c.t("总览", "Overview"),
        rp = c.t("报告", "Reports"),
    );
    let _ = write!(h, "<a href=\"{}\">{}</a>", c.link("/alerts"), c.t("告警", "Alerts"));
    let _ = write!(
        h,
        "</nav><div class=\"who\"><span class=\"user\">{} ({})</span> <a href=\"{lang_zh}\">中文</a> · <a href=\"{lang_en}\">English</a>",
        // Without `[auth]` (loopback only) nobody is logged in: said in the page's language.
        esc(if c.viewer.principal.name == "anonymous (auth not configured)" { c.t("未启用登录（仅本机访问）", "anonymous (auth not configured)") } else { &c.viewer.principal.name }),
        role_name(c.lang, c.viewer.principal.role)
    );
    if c.viewer.session {
        let _ = write!(h, "<form method=\"post\" action=\"/logout\" class=\"inline\">{}<button type=\"submit\">{}</button></form>", c.csrf_input(), c.t("退出", "Log out"));
    }
    h.push_str("</div></header><main>");
    if !crumbs.is_empty() {
        h.push_str("<p class=\"crumbs\">");
        let links: Vec<String> = crumbs.iter().map(|(href, label)| if href.is_empty() { esc(label) } else { format!("<a href=\"{href}\">{}</a>", esc(label)) }).collect();
        h.push_str(&links.join(" › "));
        h.push_str("</p>");
    }
    let _ = write!(h, "<h1>{}</h1>", esc(title));
    h.push_str(&picker(c, path));
    h.push_str(body);
    let _ = write!(
        h,
        "</main><footer>{} · <a href=\"/static/echarts-LICENSE.txt\">Apache ECharts (Apache-2.0)</a></footer></body></html>",
        c.t("数据截至今日零时", "Figures run to the start of today")
    );
    Html(h)
}

/// A batch this recent whose oldest sample is this old means history is being loaded (the demo
/// seeding, a gateway emptying a long backlog): the figures are not complete yet.
const BACKFILL_RECENT_MS: i64 = 60_000;
const BACKFILL_LAG_MS: i64 = 6 * 3_600_000;

/// The time history has been loaded up to, when some gateway is loading history now: the oldest
/// sample of the most behind of the recent batches.
pub(super) fn backfill(gateways: &std::collections::BTreeMap<String, crate::ingest::gateways::GatewayState>, now_ms: i64) -> Option<i64> {
    gateways
        .values()
        .filter(|g| g.last_batch_ms.is_some_and(|t| now_ms - t <= BACKFILL_RECENT_MS))
        .filter_map(|g| Some(g.last_batch_ms? - g.last_lag_ms?))
        .filter(|oldest| now_ms - oldest > BACKFILL_LAG_MS)
        .min()
}

/// The notice shown while history is loaded, with how far it has come.
fn backfill_notice(w: &WebShared, c: &Ctx) -> String {
    let Some(at) = backfill(&w.app.ingest.gateways().snapshot(), super::now_ms()) else { return String::new() };
    let day = chrono::DateTime::from_timestamp_millis(at).map(|t| fmt::date(c.lang, t.with_timezone(&w.app.tz).date_naive())).unwrap_or_default();
    format!(
        "<p class=\"notice\" role=\"status\">{} {}{}</p>",
        c.t("正在导入历史数据，已导入至", "History is being loaded; it has reached"),
        esc(&day),
        c.t("。导入完成前各项数字不完整，请稍后刷新。", ". Until it is done the figures are incomplete; reload in a while.")
    )
}

/// The period picker: year, month or custom range, with previous and next.
fn picker(c: &Ctx, path: &str) -> String {
    let (kind, year, month, from, to) = match c.period {
        Period::Year(y) => ("year", y, c.today.month(), NaiveDate::from_ymd_opt(y, 1, 1), NaiveDate::from_ymd_opt(y, 12, 31)),
        Period::Month(y, m) => ("month", y, m, NaiveDate::from_ymd_opt(y, m, 1), c.period.bounds().1.pred_opt()),
        Period::Range(f, t) => ("range", f.year(), f.month(), Some(f), t.pred_opt()),
    };
    let sel = |k: &str| if k == kind { " selected" } else { "" };
    let day = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let lang = if c.lang == Lang::En { "<input type=\"hidden\" name=\"lang\" value=\"en\">" } else { "" };
    let months: String = (1..=12).map(|m| format!("<option value=\"{m}\"{}>{}</option>", if m == month { " selected" } else { "" }, fmt::month(c.lang, m))).collect();
    format!(
        "<form class=\"picker\" method=\"get\" action=\"{path}\">{lang}<a class=\"prev\" href=\"{path}?{prev}\">‹ {prev_l}</a>\
<select name=\"period\"><option value=\"year\"{sy}>{yl}</option><option value=\"month\"{sm}>{ml}</option><option value=\"range\"{sr}>{rl}</option></select>\
<input name=\"year\" type=\"number\" min=\"1971\" max=\"2199\" value=\"{year}\" aria-label=\"{yl}\"><select name=\"month\" aria-label=\"{ml}\">{months}</select>\
<input name=\"from\" type=\"date\" value=\"{from}\"><input name=\"to\" type=\"date\" value=\"{to}\"><button type=\"submit\">{go}</button>\
<a class=\"next\" href=\"{path}?{next}\">{next_l} ›</a><span class=\"period\">{label}</span></form>",
        prev = esc(&c.q(c.period.prev())),
        next = esc(&c.q(c.period.next())),
        prev_l = c.t("上一期", "previous"),
        next_l = c.t("下一期", "next"),
        sy = sel("year"),
        sm = sel("month"),
        sr = sel("range"),
        yl = c.t("年", "Year"),
        ml = c.t("月", "Month"),
        rl = c.t("自定义", "Custom"),
        from = day(from),
        to = day(to),
        go = c.t("查看", "Show"),
        label = esc(&c.period.label(c.lang)),
    )
}

/// An end use as officials name it (English: the registry's name).
fn end_use_name(lang: Lang, e: crate::registry::EndUse) -> &'static str {
    use crate::registry::EndUse;
    if lang == Lang::En {
        return e.as_str();
    }
    match e {
        EndUse::General => "综合用能",
        EndUse::Heating => "供暖",
        EndUse::Cooling => "制冷",
        EndUse::DataCentre => "数据中心",
        EndUse::Kitchen => "食堂",
        EndUse::Transport => "公务用车",
        EndUse::EvCharging => "电动汽车充电",
        EndUse::Other => "其他",
    }
}

fn carrier_name(lang: Lang, c: Carrier) -> String {
    crate::reports::labels::carrier(if lang == Lang::En { crate::reports::Lang::En } else { crate::reports::Lang::Zh }, c)
}

/// The five totals with 同比 and 环比.
fn kpis(c: &Ctx, now: &Figures, year_before: &Figures, before: &Figures, projected: Option<&[AgencyIndicators]>) -> String {
    let rows: [(&str, &str, &str, fn(&Figures) -> f64, usize); 5] = [
        ("综合能耗", "Total energy", "tce", |f| f.kgce / 1000.0, 2),
        ("用电", "Electricity", "kWh", |f| f.carrier(Carrier::Electricity), 0),
        ("用水", "Water", "m³", |f| f.carrier(Carrier::Water), 0),
        ("碳排放", "CO₂ emissions", "tCO₂", |f| f.co2_kg / 1000.0, 2),
        ("费用", "Cost", "元", |f| f.cost_yuan, 0),
    ];
    let mut h = String::from("<section class=\"kpis\">");
    for (i, (zh, en, unit, get, d)) in rows.iter().enumerate() {
        let v = get(now);
        let _ = write!(
            h,
            "<div class=\"kpi\" data-kpi=\"{i}\"><h3>{}</h3><p class=\"value\"><span class=\"num\" data-value=\"{v}\">{}</span> <small>{}</small></p><p>{} {} · {} {}</p>",
            c.t(zh, en),
            fmt::num(c.lang, v, *d),
            if *unit == "元" { c.t("元", "yuan") } else { unit },
            c.t("同比", "year on year"),
            fmt::pct(fmt::change(v, get(year_before))),
            c.t("环比", "on previous period"),
            fmt::pct(fmt::change(v, get(before))),
        );
        if let Some(list) = projected {
            let p: f64 = match i {
                0 => list.iter().filter_map(|a| a.get(Indicator::TotalEnergy).and_then(|x| x.projected)).sum::<f64>() / 1000.0,
                1 => list.iter().flat_map(|a| &a.carriers).filter(|x| x.carrier == Carrier::Electricity).map(|x| x.projected).sum(),
                2 => list.iter().flat_map(|a| &a.carriers).filter(|x| x.carrier == Carrier::Water).map(|x| x.projected).sum(),
                _ => f64::NAN,
            };
            if p.is_finite() {
                let _ = write!(h, "<p>{} {}</p>", c.t("全年预计", "projected year"), fmt::num(c.lang, p, *d));
            }
            if let Some(t) = targets_of(list, i) {
                let _ = write!(
                    h,
                    "<p class=\"target\" data-target=\"{}\">{} {}{} · {} {}/{}</p>",
                    t.sum,
                    c.t("目标合计", "targets, summed"),
                    fmt::num(c.lang, t.sum, *d),
                    match c.lang {
                        Lang::Zh => format!("（{} 个单位）", t.count),
                        Lang::En => format!(" ({} agencies)", t.count),
                    },
                    c.t("预计达标", "projected to meet"),
                    t.met,
                    t.count,
                );
            }
        }
        h.push_str("</div>");
    }
    h.push_str("</section>");
    h
}

/// The targets of the agencies that have one for a card's figure.
struct Targets {
    /// Sum of the values not to exceed, in the card's unit.
    sum: f64,
    count: usize,
    /// Of those, met by the year (in progress: by the projection).
    met: usize,
}

/// The targets behind card `i` of [`kpis`] (综合能耗, 用电, 用水, 碳排放, 费用): each agency's
/// target of the indicator (a reduction target, else its budget), for electricity its budget
/// of the carrier; `None` when no agency has one.
fn targets_of(list: &[AgencyIndicators], i: usize) -> Option<Targets> {
    let each: Vec<(f64, bool)> = match i {
        0 | 2 | 3 | 4 => {
            let (ind, scale) = match i {
                0 => (Indicator::TotalEnergy, 1e-3),
                2 => (Indicator::WaterTotal, 1.0),
                3 => (Indicator::CarbonTotal, 1.0),
                _ => (Indicator::EnergyCost, 1.0),
            };
            list.iter().filter_map(|a| a.get(ind).and_then(|x| x.target.as_ref())).map(|t| (t.value * scale, t.met)).collect()
        }
        1 => list
            .iter()
            .flat_map(|a| &a.carriers)
            .filter(|x| x.carrier == Carrier::Electricity)
            .filter_map(|x| x.budget.map(|b| (b, x.projected <= b + 1e-9)))
            .collect(),
        _ => Vec::new(),
    };
    (!each.is_empty()).then(|| Targets { sum: each.iter().map(|e| e.0).sum(), count: each.len(), met: each.iter().filter(|e| e.1).count() })
}

/// A chart's data: months of the period this year beside the same months a year earlier.
fn monthly_chart(c: &Ctx, id: &str, now: &Figures, year_before: &Figures) -> String {
    let months: Vec<NaiveDate> = now.monthly.keys().copied().collect();
    let labels: Vec<String> = months.iter().map(|m| format!("{}", fmt::month(c.lang, m.month()))).collect();
    let this: Vec<f64> = months.iter().map(|m| now.monthly.get(m).copied().unwrap_or(0.0) / 1000.0).collect();
    let last: Vec<f64> = months
        .iter()
        .map(|m| m.checked_sub_months(chrono::Months::new(12)).and_then(|p| year_before.monthly.get(&p)).copied().unwrap_or(0.0) / 1000.0)
        .collect();
    let spec = json!({
        "kind": "bars", "labels": labels, "unit": "tce",
        "series": [{ "name": c.t("本期", "this period"), "data": this }, { "name": c.t("上年同期", "a year earlier"), "data": last }],
    });
    format!("<section class=\"chart\"><h2>{}</h2><div class=\"plot\" id=\"{id}\"></div><script type=\"application/json\" data-chart=\"{id}\">{}</script></section>", c.t("逐月综合能耗（吨标准煤）", "Energy by month (tce)"), fmt::script_json(&spec))
}

/// Consumption, energy, CO₂ and cost per carrier; energy per end use (the 分项 breakdown by
/// national item code is [`items`]).
fn breakdown(c: &Ctx, f: &Figures) -> String {
    let mut h = format!(
        "<section><h2>{}</h2><table class=\"carriers\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>tce</th><th>tCO₂</th><th>{}</th></tr></thead><tbody>",
        c.t("分能源品种", "By carrier"),
        c.t("品种", "Carrier"),
        c.t("用量", "Consumption"),
        c.t("单位", "Unit"),
        c.t("费用（元）", "Cost (yuan)")
    );
    for (carrier, r) in &f.carriers {
        let _ = write!(
            h,
            "<tr data-carrier=\"{}\"><td>{}</td><td class=\"n\" data-value=\"{}\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            carrier.as_str(),
            esc(&carrier_name(c.lang, *carrier)),
            r.value,
            fmt::num(c.lang, r.value, 1),
            carrier.counter().unit(),
            fmt::num(c.lang, r.kgce / 1000.0, 3),
            fmt::num(c.lang, r.co2_kg / 1000.0, 3),
            fmt::num(c.lang, r.cost_yuan, 0)
        );
    }
    if f.carriers.is_empty() {
        let _ = write!(h, "<tr><td colspan=\"6\">{}</td></tr>", c.t("本期无数据", "No data in this period"));
    }
    let _ = write!(h, "</tbody></table></section><section><h2>{}</h2><table class=\"end-uses\"><tbody>", c.t("分用途（吨标准煤）", "By end use (tce)"));
    for (e, kgce) in &f.end_uses {
        let _ = write!(h, "<tr><td>{}</td><td class=\"n\">{}</td></tr>", esc(end_use_name(c.lang, *e)), fmt::num(c.lang, kgce / 1000.0, 3));
    }
    h.push_str("</tbody></table></section>");
    h
}

/// A table's `<thead>` of these columns, in the page's language.
fn head_row(c: &Ctx, columns: &[(&str, &str)]) -> String {
    let cells: String = columns.iter().map(|(zh, en)| format!("<th>{}</th>", c.t(zh, en))).collect();
    format!("<thead><tr>{cells}</tr></thead>")
}

/// 费用（按能源品种和电价时段）: each carrier's cost split by tariff band (尖峰/高峰/平段/低谷,
/// and the hours no band covers at the flat price), with consumption, price and yuan; the
/// carriers' subtotals and the total equal the cost figures above (accounting::tariff).
fn cost_bands(c: &Ctx, f: &Figures) -> String {
    let columns = [
        ("品种", "Carrier"),
        ("时段", "Band"),
        ("时间", "Hours"),
        ("用量", "Consumption"),
        ("单位", "Unit"),
        ("单价（元/单位）", "Price (yuan per unit)"),
        ("费用（元）", "Cost (yuan)"),
    ];
    let mut h = format!("<section><h2>{}</h2><table class=\"cost-bands\">{}<tbody>", c.t("费用（按能源品种和电价时段）", "Cost by carrier and tariff band"), head_row(c, &columns));
    let mut total = 0.0;
    for (carrier, bands) in &f.cost_bands {
        let unit = carrier.counter().unit();
        let name = esc(&carrier_name(c.lang, *carrier));
        for b in bands {
            let hours = match (b.from, b.to) {
                (Some(from), Some(to)) => format!("{from:02}:00–{to:02}:00"),
                _ if b.hours == 24 => c.t("全天", "all day").to_string(),
                _ => c.t("其余时段", "other hours").to_string(),
            };
            let _ = write!(
                h,
                "<tr data-carrier=\"{}\" data-band=\"{}\" data-from=\"{}\"><td>{name}</td><td>{}</td><td>{}</td><td class=\"n value\" data-value=\"{}\">{}</td><td>{unit}</td><td class=\"n price\" data-value=\"{}\">{}</td><td class=\"n yuan\" data-value=\"{}\">{}</td></tr>",
                carrier.as_str(),
                b.band.as_str(),
                b.from.map_or_else(|| "other".to_string(), |x| x.to_string()),
                c.t(b.band.name_zh(), b.band.name_en()),
                esc(&hours),
                b.value,
                fmt::num(c.lang, b.value, 1),
                b.price,
                fmt::num(c.lang, b.price, 4),
                b.yuan,
                fmt::num(c.lang, b.yuan, 2),
            );
        }
        let (value, yuan) = (bands.iter().map(|b| b.value).sum::<f64>(), bands.iter().map(|b| b.yuan).sum::<f64>());
        total += yuan;
        let _ = write!(
            h,
            "<tr class=\"subtotal\" data-carrier=\"{}\" data-band=\"all\"><td>{name}</td><td>{}</td><td></td><td class=\"n value\" data-value=\"{value}\">{}</td><td>{unit}</td><td></td><td class=\"n yuan\" data-value=\"{yuan}\">{}</td></tr>",
            carrier.as_str(),
            c.t("小计", "Subtotal"),
            fmt::num(c.lang, value, 1),
            fmt::num(c.lang, yuan, 2),
        );
    }
    // Carriers consumed but not priced: no [[tariff]] of theirs (their cost counts as 0).
    for carrier in f.carriers.keys().filter(|k| !f.cost_bands.contains_key(k)) {
        let _ = write!(
            h,
            "<tr data-carrier=\"{}\" data-band=\"none\"><td>{}</td><td colspan=\"6\">{} <code>[[tariff]] carrier = \"{}\"</code></td></tr>",
            carrier.as_str(),
            esc(&carrier_name(c.lang, *carrier)),
            c.t("未计价：注册表中没有", "not priced: the registry has no"),
            carrier.as_str()
        );
    }
    if f.cost_bands.is_empty() {
        let _ = write!(h, "<tr><td colspan=\"7\">{}</td></tr>", c.t("本期无计价的用量。", "Nothing priced in this period."));
    } else {
        let _ = write!(h, "<tr class=\"total\" data-band=\"total\"><td colspan=\"6\">{}</td><td class=\"n yuan\" data-value=\"{total}\">{}</td></tr>", c.t("合计", "Total"), fmt::num(c.lang, total, 2));
    }
    h.push_str("</tbody></table></section>");
    h
}

/// 分项能耗: consumption by national energy item code of the buildings the viewer sees (one
/// building with `only`), over the period up to the page's instant; empty when no meter of
/// them carries an item code.
async fn items(w: &WebShared, c: &Ctx, only: Option<&str>) -> Result<String, ApiError> {
    let s = &w.app;
    let (from, to) = c.period.bounds();
    let start_ms = crate::time::day_start(s.tz, from).timestamp_millis();
    let end_ms = crate::time::day_start(s.tz, to).timestamp_millis().min(c.cut_ms);
    if end_ms <= start_ms {
        return Ok(String::new());
    }
    let mut buildings = crate::reports::items::building_items(&s.engine, &s.store, &s.registry, s.tz, (start_ms, end_ms), &c.visible())
        .await
        .map_err(|e| ApiError::internal("consumption by item code", e))?;
    if let Some(b) = only {
        buildings.retain(|x| x.building == b);
    }
    if buildings.is_empty() {
        return Ok(String::new());
    }
    let as_of = chrono::DateTime::from_timestamp_millis(end_ms).map(|t| t.with_timezone(&s.tz).format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
    Ok(crate::reports::items::section(c.lang, from.year(), &as_of, &buildings))
}

async fn indicators_for(w: &WebShared, c: &Ctx, ids: &[&str]) -> Result<Vec<AgencyIndicators>, ApiError> {
    let (s, year) = (&w.app, c.period.bounds().0.year());
    let key = format!("{year}:{}", ids.join(","));
    let version = super::memo::version(s, c.cut_ms);
    if let Some(x) = w.memo.indicators.get(&key, &version) {
        return Ok(x.as_ref().clone());
    }
    let agencies: Vec<&crate::registry::Agency> = ids.iter().filter_map(|id| s.registry.agency(id)).collect();
    let out = crate::api::accounting::compute(s, year, c.cut_ms, &agencies, crate::registry::Scope::Agency).await?;
    Ok(w.memo.indicators.put(key, version, out).as_ref().clone())
}

async fn three(w: &WebShared, c: &Ctx, subject: &Subject) -> Result<std::sync::Arc<(Figures, Figures, Figures)>, ApiError> {
    let s = &w.app;
    let key = format!("{subject:?}:{:?}", c.period);
    let version = super::memo::version(s, c.cut_ms);
    if let Some(x) = w.memo.figures.get(&key, &version) {
        return Ok(x);
    }
    let mut years = Years::new(&s.engine, &s.store, &s.registry);
    let now = figures(&mut years, s.tz, subject, c.period, c.cut_ms).await?;
    let yb = figures(&mut years, s.tz, subject, c.period.year_before(), year_before_cut(s.tz, c.cut_ms)).await?;
    let before = figures(&mut years, s.tz, subject, c.period.prev(), c.cut_ms).await?;
    Ok(w.memo.figures.put(key, version, (now, yb, before)))
}

/// An agency's quota band for the ranking: that of energy per floor area (the quota basis)
/// when the quota table classes it, else the worst band of the indicators it does class, named
/// with its indicator (a province's table may class other indicators only: Shandong's classes
/// non-heating energy per area, energy and water per person, electricity per area).
fn band_of(lang: Lang, a: &AgencyIndicators) -> String {
    use crate::accounting::indicators::BandClass;
    let severity = |c: BandClass| match c {
        BandClass::AboveBinding => 3,
        BandClass::AboveBenchmark => 2,
        BandClass::AboveGuide => 1,
        BandClass::AtOrBelowGuide => 0,
    };
    if let Some(b) = a.get(Indicator::EnergyPerArea).and_then(|i| i.band.as_ref()) {
        return lang.t(b.class.name_zh(), b.class.name_en()).to_string();
    }
    let worst = a.indicators.iter().filter_map(|i| i.band.as_ref().map(|b| (i.indicator, b.class))).max_by_key(|(_, c)| severity(*c));
    match worst {
        Some((ind, class)) => format!("{}（{}）", lang.t(class.name_zh(), class.name_en()), crate::reports::labels::indicator(lang, ind)),
        None => "—".to_string(),
    }
}

fn band_text(lang: Lang, a: &AgencyIndicators) -> (String, String) {
    let band = band_of(lang, a);
    let target = a.indicators.iter().filter_map(|i| i.target.as_ref()).map(|t| t.met).fold(None, |acc: Option<bool>, m| Some(acc.unwrap_or(true) && m));
    let target = match target {
        Some(true) => lang.t("达标", "met").to_string(),
        Some(false) => lang.t("未达标", "not met").to_string(),
        None => "—".into(),
    };
    (band, target)
}

/// `GET /`: the overview of what the viewer may see.
pub(super) async fn overview(State(w): State<WebShared>, viewer: Viewer, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let c = Ctx::new(&w, viewer, &p)?;
    let s = &w.app;
    let reg = s.registry.clone();
    // An agency user's home is its agency's page.
    if !c.viewer.principal.reads_all() {
        if let Some(a) = &c.viewer.principal.agency {
            return Ok(Redirect::to(&format!("/agencies/{}?{}", fmt::url_encode(a), c.q(c.period))).into_response());
        }
    }
    let ids: Vec<&str> = reg.file.agencies.iter().filter(|a| c.viewer.principal.sees_agency(&a.id)).map(|a| a.id.as_str()).collect();
    let subject = Subject::Agencies(ids.iter().map(|x| x.to_string()).collect());
    let f = three(&w, &c, &subject).await?;
    let (now, yb, before) = (&f.0, &f.1, &f.2);
    let started = c.period.bounds().0 < c.today;
    let list = if started { indicators_for(&w, &c, &ids).await? } else { Vec::new() };
    let mut body = backfill_notice(&w, &c);
    body += &quota_warning(&c, &reg);
    body += &kpis(&c, &now, &yb, &before, matches!(c.period, Period::Year(_)).then_some(list.as_slice()));
    body.push_str(&monthly_chart(&c, "monthly", &now, &yb));
    body.push_str(&cost_bands(&c, &now));
    // Agencies ranked by energy per area (the quota indicator), highest first.
    let mut ranked: Vec<&AgencyIndicators> = list.iter().collect();
    let per_area = |a: &AgencyIndicators| a.get(Indicator::EnergyPerArea).and_then(|i| i.value).unwrap_or(f64::NEG_INFINITY);
    ranked.sort_by(|a, b| per_area(b).total_cmp(&per_area(a)));
    let _ = write!(
        body,
        "<section><h2>{}</h2><table class=\"ranking\"><thead><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        c.t("各单位排名（单位面积能耗）", "Agencies ranked (energy per area)"),
        c.t("单位", "Agency"),
        c.t("综合能耗（吨标准煤）", "Energy (tce)"),
        c.t("单位面积能耗（kgce/m²）", "Energy per area (kgce/m²)"),
        c.t("定额档位", "Band"),
        c.t("目标", "Target"),
        c.t("数据覆盖", "Coverage"),
    );
    for (i, a) in ranked.iter().enumerate() {
        let (band, target) = band_text(c.lang, a);
        let _ = write!(
            body,
            "<tr data-agency=\"{id}\"><td>{}</td><td><a href=\"/agencies/{idq}?{q}\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{:.0}%</td></tr>",
            i + 1,
            esc(&a.name),
            fmt::opt(c.lang, a.get(Indicator::TotalEnergy).and_then(|x| x.value).map(|v| v / 1000.0), 2),
            fmt::opt(c.lang, a.get(Indicator::EnergyPerArea).and_then(|x| x.value), 2),
            esc(&band),
            esc(&target),
            a.quality.coverage * 100.0,
            id = esc(&a.agency),
            idq = esc(&fmt::url_encode(&a.agency)),
            q = esc(&c.q(c.period)),
        );
    }
    body.push_str("</tbody></table></section>");
    // Data completeness at a glance.
    let incomplete: Vec<&&AgencyIndicators> = ranked.iter().filter(|a| !a.quality.complete || !a.meters_to_check.is_empty()).collect();
    let _ = write!(body, "<section class=\"quality\"><h2>{}</h2>", c.t("数据完整性", "Data completeness"));
    if incomplete.is_empty() {
        let _ = write!(body, "<p class=\"ok\">{}</p>", c.t("所有单位数据完整。", "Every agency's data is complete."));
    } else {
        let _ = write!(body, "<p>{} {}</p><ul>", incomplete.len(), c.t("个单位需要关注：", "agencies need attention:"));
        for a in incomplete {
            let _ = write!(body, "<li><a href=\"/agencies/{}?{}\">{}</a> — {} {:.0}%", esc(&fmt::url_encode(&a.agency)), esc(&c.q(c.period)), esc(&a.name), c.t("覆盖率", "coverage"), a.quality.coverage * 100.0);
            for m in &a.meters_to_check {
                let _ = write!(body, " · <a href=\"/meters/{}?{}\">{}</a> {}", esc(&fmt::url_encode(m)), esc(&c.q(c.period)), esc(m), c.t("读数下降待核查", "decrease to explain"));
            }
            body.push_str("</li>");
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    body.push_str(&items(&w, &c, None).await?);
    body.push_str(&deadlines(&w, &c).await?);
    body.push_str(&scoring(&w, &c).await?);
    let title = c.t("总览", "Overview").to_string();
    Ok(layout(&c, "/", &title, &[], &body).into_response())
}

/// The warning the bureau must see when the quota bands that grade its agencies are not its
/// province's: the registry has no quota table, or only the shipped example.
fn quota_warning(c: &Ctx, reg: &crate::registry::Registry) -> String {
    let key = match crate::registry::QuotaTable::of(&reg.file.quotas) {
        crate::registry::QuotaTable::Missing => "quota_missing_warning",
        crate::registry::QuotaTable::ExampleOnly => "quota_example_warning",
        crate::registry::QuotaTable::Explicit => return String::new(),
    };
    format!("<p class=\"warn\" id=\"quota-warning\" role=\"alert\">{}</p>", esc(&crate::reports::labels::t(c.lang, key)))
}

/// Last year's assessment as it stands (the year of the art. 39 deadlines): each visible
/// agency's score and grade, or why it cannot be scored yet (incomplete data, a binding target
/// missed), as the assessment document gives them.
async fn scoring(w: &WebShared, c: &Ctx) -> Result<String, ApiError> {
    let s = &w.app;
    let year = c.today.year() - 1;
    let Ok((day, ms)) = reports::year_cut(s.tz, year, c.today) else { return Ok(String::new()) };
    let all = reports::own_figures(&s.engine, &s.store, &s.registry, year, ms).await?;
    let mut a = reports::model::assessment(&s.registry.file.assessment, year, &day.to_string(), s.tz.name(), &all);
    let visible = c.visible();
    a.agencies.retain(|x| visible.allows(&x.agency));
    Ok(crate::reports::html::scoring_section(c.lang, &a))
}

/// Art. 39 deadlines of last year's reports, with 已逾期 for those past due and not ready.
async fn deadlines(w: &WebShared, c: &Ctx) -> Result<String, ApiError> {
    let s = &w.app;
    let visible = c.visible();
    let (key, version) = (format!("{}:{visible:?}", c.today), super::memo::version(s, c.cut_ms));
    let d = match w.memo.deadlines.get(&key, &version) {
        Some(d) => d,
        None => {
            let d = reports::deadlines(&s.engine, &s.store, &s.registry, s.tz, Some(c.today.year() - 1), Some(&c.today.to_string()), c.today, &visible).await?;
            w.memo.deadlines.put(key, version, d)
        }
    };
    let day = |t: &str| NaiveDate::parse_from_str(t, "%Y-%m-%d").map_or_else(|_| t.to_string(), |d| fmt::date(c.lang, d));
    let overdue = d.days_to_agencies_due < 0;
    let mut h = format!(
        "<section class=\"deadlines\"><h2>{}</h2><p>{} {}：{} · {}：{}</p><table><tbody>",
        c.t("报送期限（第三十九条）", "Deadlines (art. 39)"),
        d.year,
        c.t("年度报告报送各单位期限", "agencies' reports due"),
        esc(&day(&d.agencies_due)),
        c.t("汇总报送期限", "bureau's aggregate due"),
        esc(&day(&d.bureau_due)),
    );
    for a in &d.agencies {
        let state = match (a.complete, overdue) {
            (true, _) => c.t("数据完整", "data complete"),
            (false, true) => c.t("已逾期", "overdue"),
            (false, false) => c.t("待补数据", "data missing"),
        };
        let class = if !a.complete && overdue { " class=\"overdue\"" } else { "" };
        let missing = match c.lang {
            Lang::En => a.missing.join("; "),
            Lang::Zh => {
                let mut m = Vec::new();
                if a.missing_headcount {
                    m.push(format!("缺少{}年用能人数", d.year));
                }
                if !a.unexplained_decreases.is_empty() {
                    m.push(format!("{}块表读数下降待核查", a.unexplained_decreases.len()));
                }
                if a.coverage < 1.0 && !a.complete {
                    m.push(format!("数据覆盖率{:.1}%", a.coverage * 100.0));
                }
                m.join("；")
            }
        };
        let _ = write!(h, "<tr{class}><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&a.name), state, esc(&missing));
    }
    h.push_str("</tbody></table></section>");
    Ok(h)
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("{what} `{id}` is not in the registry"))
}

/// The page frame around `body` for a page under agency `agency` (readings).
pub(super) fn frame(w: &WebShared, viewer: Viewer, p: &HashMap<String, String>, path: &str, title: &str, agency: &str, body: &str) -> Result<Html<String>, ApiError> {
    let c = Ctx::new(w, viewer, p)?;
    let name = w.app.registry.agency(agency).map_or(agency.to_string(), |a| a.name.clone());
    let mut crumbs = Vec::new();
    if c.viewer.principal.reads_all() {
        crumbs.push((c.link("/"), c.t("全辖", "Jurisdiction").to_string()));
    }
    crumbs.push((c.link(&format!("/agencies/{}", fmt::url_encode(agency))), name));
    Ok(layout(&c, path, title, &crumbs, body))
}

/// `GET /agencies/{id}`
pub(super) async fn agency(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let c = Ctx::new(&w, viewer, &p)?;
    let reg = w.app.registry.clone();
    // The API's rule, before the existence check (no probing of other ids).
    c.viewer.principal.require_agency(&reg, &id)?;
    let a = reg.agency(&id).ok_or_else(|| not_found("agency", &id))?;
    let f = three(&w, &c, &Subject::Agencies(vec![id.clone()])).await?;
    let (now, yb, before) = (&f.0, &f.1, &f.2);
    let started = c.period.bounds().0 < c.today;
    let ind = if started { indicators_for(&w, &c, &[id.as_str()]).await? } else { Vec::new() };
    let mut body = backfill_notice(&w, &c);
    body += &kpis(&c, &now, &yb, &before, matches!(c.period, Period::Year(_)).then_some(ind.as_slice()));
    if let Some(a) = ind.first() {
        let (band, target) = band_text(c.lang, a);
        let _ = write!(body, "<p class=\"status\">{} {} · {} {}</p>", c.t("定额档位：", "Band:"), esc(&band), c.t("目标：", "Target:"), esc(&target));
    }
    body.push_str(&monthly_chart(&c, "monthly", &now, &yb));
    body.push_str(&breakdown(&c, &now));
    body.push_str(&cost_bands(&c, &now));
    let _ = write!(
        body,
        "<p class=\"links\"><a href=\"/agencies/{}/readings{}\">{}</a></p>",
        esc(&fmt::url_encode(&id)),
        if c.lang == Lang::En { "?lang=en" } else { "" },
        c.t("月度抄表（人工抄读的计量表）", "Monthly readings (meters read by hand)")
    );
    let _ = write!(body, "<section><h2>{}</h2><ul class=\"buildings\">", c.t("建筑", "Buildings"));
    for b in reg.file.buildings.iter().filter(|b| b.occupants.iter().any(|o| o.agency == id)) {
        let _ = write!(body, "<li><a href=\"/buildings/{}?{}\">{}</a> ({} m²)</li>", esc(&fmt::url_encode(&b.id)), esc(&c.q(c.period)), esc(&b.name), fmt::num(c.lang, b.floor_area, 0));
    }
    body.push_str("</ul></section>");
    let crumbs = [(if c.viewer.principal.reads_all() { c.link("/") } else { String::new() }, c.t("全辖", "Jurisdiction").to_string()), (String::new(), a.name.clone())];
    Ok(layout(&c, &format!("/agencies/{}", fmt::url_encode(&id)), &a.name, &crumbs, &body).into_response())
}

/// `GET /buildings/{id}`
pub(super) async fn building(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let c = Ctx::new(&w, viewer, &p)?;
    let reg = w.app.registry.clone();
    c.viewer.principal.require_building(&reg, &id)?;
    let b = reg.building(&id).ok_or_else(|| not_found("building", &id))?;
    let f = three(&w, &c, &Subject::Building(id.clone())).await?;
    let (now, yb, before) = (&f.0, &f.1, &f.2);
    let mut body = backfill_notice(&w, &c);
    body += &kpis(&c, &now, &yb, &before, None);
    body.push_str(&monthly_chart(&c, "monthly", &now, &yb));
    body.push_str(&breakdown(&c, &now));
    body.push_str(&cost_bands(&c, &now));
    body.push_str(&items(&w, &c, Some(&id)).await?);
    let _ = write!(body, "<section><h2>{}</h2><ul class=\"meters\">", c.t("计量表", "Meters"));
    for m in reg.meters_of_building(&id).into_iter().filter(|m| c.viewer.principal.sees_meter(&reg, &m.id)) {
        let _ = write!(
            body,
            "<li><a href=\"/meters/{}?{}\">{}</a> {} · {}</li>",
            esc(&fmt::url_encode(&m.id)),
            esc(&c.q(c.period)),
            esc(m.name.as_deref().unwrap_or(&m.id)),
            esc(&carrier_name(c.lang, m.carrier)),
            esc(end_use_name(c.lang, m.end_use()))
        );
    }
    body.push_str("</ul></section>");
    let mut crumbs = Vec::new();
    if c.viewer.principal.reads_all() {
        crumbs.push((c.link("/"), c.t("全辖", "Jurisdiction").to_string()));
    }
    for o in b.occupants.iter().filter(|o| c.viewer.principal.sees_agency(&o.agency)) {
        let name = reg.agency(&o.agency).map_or(o.agency.clone(), |a| a.name.clone());
        crumbs.push((c.link(&format!("/agencies/{}", fmt::url_encode(&o.agency))), name));
    }
    crumbs.push((String::new(), b.name.clone()));
    Ok(layout(&c, &format!("/buildings/{}", fmt::url_encode(&id)), &b.name, &crumbs, &body).into_response())
}

/// Points on a chart at most; longer periods are averaged into steps.
const MAX_POINTS: i64 = 1500;

/// `GET /meters/{id}`: the meter's figures, its raw series with gaps and flags marked, its data
/// quality, its events, and (for engineers) the forms that record one.
pub(super) async fn meter(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let c = Ctx::new(&w, viewer, &p)?;
    let s = &w.app;
    let reg = s.registry.clone();
    c.viewer.principal.require_meter(&reg, &id)?;
    let m = reg.meter(&id).ok_or_else(|| not_found("meter", &id))?;
    let f = three(&w, &c, &Subject::Meter(id.clone())).await?;
    let (now, yb, before) = (&f.0, &f.1, &f.2);
    let mut body = backfill_notice(&w, &c);
    if let Some(msg) = p.get("done") {
        let _ = write!(body, "<p class=\"done\" role=\"status\">{}</p>", esc(msg));
    }
    body.push_str(&kpis(&c, &now, &yb, &before, None));
    body.push_str(&breakdown(&c, &now));
    body.push_str(&cost_bands(&c, &now));
    // The raw series of the counter over the period, with gaps and flags of the years in it.
    let (from, to) = c.period.bounds();
    let (from_ms, to_ms) = (crate::time::day_start(s.tz, from).timestamp_millis(), crate::time::day_start(s.tz, to).timestamp_millis());
    let span = (to_ms - from_ms).max(1);
    let step = (span / MAX_POINTS).max(crate::time::HOUR_MS / 4);
    let q = m.counter();
    let points = if m.is_virtual() { Vec::new() } else { crate::accounting::series::points(&s.store, &id, q, (from_ms, to_ms), Some(step), crate::accounting::series::Agg::Last).await.map_err(ApiError::from)? };
    let mut gaps = Vec::new();
    let mut flags = Vec::new();
    let mut rejected = Vec::new();
    for year in from.year()..=to.pred_opt().unwrap_or(to).year() {
        let years = s.engine.meter_years(&s.store, &reg, year).await?;
        if let Some(y) = years.get(&id) {
            gaps.extend(y.gaps.iter().filter(|g| g.to > from_ms && g.from < to_ms).cloned());
            flags.extend(y.flags.iter().filter(|f| (from_ms..to_ms).contains(&f.at())).cloned());
            rejected.extend(y.rejected_readings.iter().filter(|r| (from_ms..to_ms).contains(&r.at)).cloned());
        }
    }
    let time = |ms: i64| crate::time::rfc3339(ms, s.tz).unwrap_or_default();
    let spec = json!({
        "kind": "line", "unit": q.unit(), "name": q.name(),
        "points": points.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
        "gaps": gaps.iter().map(|g| json!([g.from, g.to])).collect::<Vec<_>>(),
        "flags": flags.iter().map(|f| json!({ "at": f.at(), "kind": serde_json::to_value(f).ok().and_then(|v| v.get("kind").cloned()) })).collect::<Vec<_>>(),
        "rejected": rejected.iter().map(|r| json!([r.at, r.value])).collect::<Vec<_>>(),
        "labels": { "gap": c.t("数据缺口", "gap"), "rejected": c.t("剔除读数", "rejected") },
    });
    let _ = write!(
        body,
        "<section class=\"chart\"><h2>{} ({})</h2><div class=\"plot\" id=\"raw\"></div><script type=\"application/json\" data-chart=\"raw\">{}</script></section>",
        c.t("原始读数", "Raw readings"),
        esc(q.unit()),
        fmt::script_json(&spec)
    );
    let _ = write!(body, "<section class=\"flags\"><h2>{}</h2><table><tbody>", c.t("数据质量", "Data quality"));
    for g in &gaps {
        let _ = write!(body, "<tr class=\"gap\"><td>{}</td><td>{} — {}</td><td>{:.1} h</td></tr>", c.t("缺口", "gap"), esc(&time(g.from)), esc(&time(g.to)), (g.to - g.from) as f64 / crate::time::HOUR_MS as f64);
    }
    for f in &flags {
        let kind = serde_json::to_value(f).ok().and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_string))).unwrap_or_default();
        let _ = write!(body, "<tr class=\"flag\"><td>{}</td><td>{}</td><td></td></tr>", esc(&kind), esc(&time(f.at())));
    }
    for r in &rejected {
        let _ = write!(body, "<tr class=\"rejected\"><td>{}</td><td>{}</td><td>{} ({:?})</td></tr>", c.t("剔除读数", "rejected reading"), esc(&time(r.at)), r.value, r.reason);
    }
    if gaps.is_empty() && flags.is_empty() && rejected.is_empty() {
        let _ = write!(body, "<tr><td>{}</td></tr>", c.t("本期无缺口、无标记。", "No gaps or flags in this period."));
    }
    body.push_str("</tbody></table></section>");
    let _ = write!(body, "<section class=\"events\"><h2>{}</h2><table><tbody>", c.t("表计事件", "Meter events"));
    for e in s.engine.event_records(Some(&id)) {
        let v = serde_json::to_value(&e).unwrap_or_default();
        let f = |k: &str| v.get(k).map(|x| x.to_string().trim_matches('"').to_string()).unwrap_or_default();
        let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&f("kind")), esc(&f("time")), esc(&f("by")), esc(&f("reason")));
    }
    body.push_str("</tbody></table></section>");
    if c.viewer.principal.require_role(Role::Engineer).is_ok() && !m.is_virtual() {
        body.push_str(&event_forms(&c, &id));
    }
    let mut crumbs = Vec::new();
    if c.viewer.principal.reads_all() {
        crumbs.push((c.link("/"), c.t("全辖", "Jurisdiction").to_string()));
    }
    if let Some(b) = reg.building(&m.building) {
        crumbs.push((c.link(&format!("/buildings/{}", fmt::url_encode(&b.id))), b.name.clone()));
    }
    crumbs.push((String::new(), m.name.clone().unwrap_or_else(|| m.id.clone())));
    let title = format!("{} — {}", m.name.as_deref().unwrap_or(&m.id), carrier_name(c.lang, m.carrier));
    Ok(layout(&c, &format!("/meters/{}", fmt::url_encode(&id)), &title, &crumbs, &body).into_response())
}

fn event_forms(c: &Ctx, id: &str) -> String {
    let action = format!("/meters/{}/events{}", fmt::url_encode(id), if c.lang == Lang::En { "?lang=en" } else { "" });
    let common = format!(
        "{}<input type=\"hidden\" name=\"back\" value=\"{}\"><label>{}<input name=\"time\" required placeholder=\"2026-03-05T10:00:00+08:00\"></label><label>{}<input name=\"reason\" required></label>",
        c.csrf_input(),
        esc(&c.q(c.period)),
        c.t("时间", "Time"),
        c.t("原因", "Reason")
    );
    format!(
        "<section class=\"actions\"><h2>{h}</h2>\
<form method=\"post\" action=\"{action}\" class=\"event\" data-kind=\"replacement\"><h3>{r}</h3><input type=\"hidden\" name=\"kind\" value=\"replacement\">{common}\
<label>{of}<input name=\"old_final\" type=\"number\" step=\"any\" min=\"0\" required></label><label>{ni}<input name=\"new_initial\" type=\"number\" step=\"any\" min=\"0\" required></label><button type=\"submit\">{save}</button></form>\
<form method=\"post\" action=\"{action}\" class=\"event\" data-kind=\"reading\"><h3>{mr}</h3><input type=\"hidden\" name=\"kind\" value=\"reading\">{common}\
<label>{val}<input name=\"value\" type=\"number\" step=\"any\" required></label><button type=\"submit\">{save}</button></form>\
<form method=\"post\" action=\"{action}\" class=\"event\" data-kind=\"exclude\"><h3>{ex}</h3><input type=\"hidden\" name=\"kind\" value=\"exclude\">{common}\
<label>{to}<input name=\"to\" required></label><button type=\"submit\">{save}</button></form></section>",
        h = c.t("记录事件（工程师）", "Record an event (engineers)"),
        r = c.t("换表", "Replacement"),
        of = c.t("旧表止码", "Old meter's final reading"),
        ni = c.t("新表起码", "New meter's initial reading"),
        mr = c.t("手工读数", "Manual reading"),
        val = c.t("读数", "Reading"),
        ex = c.t("剔除时段", "Exclusion"),
        to = c.t("截止时间", "Until"),
        save = c.t("保存", "Save"),
    )
}

/// `POST /meters/{id}/events` (a form): the same event as `POST /api/v1/meters/{id}/events`,
/// through the same service ([`crate::api::accounting::record_event`]), audited the same way.
pub(super) async fn post_event(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let lang = Lang::of(&p);
    let form: HashMap<String, String> = super::login::parse_form(&body)?;
    viewer.check_csrf(form.get("csrf").map(String::as_str))?;
    let mut ev = serde_json::Map::new();
    for k in ["kind", "time", "to", "reason"] {
        if let Some(v) = form.get(k).filter(|v| !v.trim().is_empty()) {
            ev.insert(k.into(), json!(v.trim()));
        }
    }
    for k in ["value", "old_final", "new_initial"] {
        if let Some(v) = form.get(k).filter(|v| !v.trim().is_empty()) {
            let x: f64 = v.trim().parse().map_err(|_| ApiError::bad_request(format!("`{k}` `{v}` is not a number")))?;
            ev.insert(k.into(), json!(x));
        }
    }
    ev.insert("by".into(), json!(viewer.principal.name));
    let answer = crate::api::accounting::record_event(&w.app, &viewer.principal, &id, serde_json::Value::Object(ev)).await?;
    let warnings = answer.get("warnings").and_then(|v| v.as_array()).map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")).unwrap_or_default();
    let done = format!("{}{}", lang.t("事件已记录。", "Event recorded."), if warnings.is_empty() { String::new() } else { format!(" {warnings}") });
    let back = form.get("back").cloned().unwrap_or_default();
    let back = if back.chars().all(|ch| ch.is_ascii_alphanumeric() || "=&-_".contains(ch)) { back } else { String::new() };
    let lang_q = if lang == Lang::En && !back.contains("lang=") { "&lang=en" } else { "" };
    Ok(Redirect::to(&format!("/meters/{}?{back}{lang_q}&done={}", fmt::url_encode(&id), fmt::url_encode(&done))).into_response())
}

/// `GET /reports`: every document of every year in every format, for what the viewer may see.
pub(super) async fn reports(State(w): State<WebShared>, viewer: Viewer, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    if let Some(kind) = p.get("kind") {
        return document(&w, &viewer, kind, &p).await;
    }
    let c = Ctx::new(&w, viewer, &p)?;
    // The years the store keeps raw data for by default (three years and a day) and this year.
    let first = c.today.year() - 3;
    let kinds: &[(&str, &str, &str)] = if c.viewer.principal.reads_all() {
        &[("annual", "年度能源资源消费报告", "Annual report"), ("assessment", "考核评价", "Assessment"), ("statistics", "统计报表", "Statistics forms"), ("plan", "用能计划", "Energy plan")]
    } else {
        &[("annual", "年度能源资源消费报告", "Annual report"), ("statistics", "统计报表", "Statistics forms")]
    };
    let lang_q = if c.lang == Lang::En { "&amp;lang=en" } else { "" };
    let has_items = w.app.registry.file.meters.iter().any(|m| m.item_code.is_some());
    let mut body = format!("<section class=\"reports\"><table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>", c.t("年份", "Year"), c.t("文件", "Document"), c.t("格式", "Formats"));
    for year in (first..=c.today.year()).rev() {
        for (kind, zh, en) in kinds {
            let links: Vec<String> = ["html", "xlsx", "csv", "json"]
                .iter()
                .map(|f| format!("<a href=\"/reports?kind={kind}&amp;year={year}&amp;format={f}{}\">{}</a>", if c.lang == Lang::En { "&amp;lang=en" } else { "" }, f.to_uppercase()))
                .collect();
            let _ = write!(body, "<tr><td>{year}</td><td>{}</td><td>{}</td></tr>", c.t(zh, en), links.join(" · "));
        }
        // 分项能耗 (national item codes), in the formats its endpoint gives.
        if has_items {
            let links: Vec<String> = ["html", "json"].iter().map(|f| format!("<a href=\"/reports?kind=items&amp;year={year}&amp;format={f}{lang_q}\">{}</a>", f.to_uppercase())).collect();
            let _ = write!(body, "<tr data-kind=\"items\"><td>{year}</td><td>{}</td><td>{}</td></tr>", c.t("分项能耗", "Consumption by item code"), links.join(" · "));
        }
    }
    body.push_str("</tbody></table></section>");
    // M&V reports of the energy-saving projects the viewer sees (every meter and building of
    // the project its own), each over the project's own periods.
    let reg = &w.app.registry;
    let projects: Vec<&crate::registry::Project> = reg
        .file
        .projects
        .iter()
        .filter(|p| p.meters.iter().all(|m| c.viewer.principal.sees_meter(reg, m)) && p.buildings.iter().all(|b| c.viewer.principal.sees_building(reg, b)))
        .collect();
    if !projects.is_empty() {
        let _ = write!(
            body,
            "<section class=\"reports mv\"><h2>{}</h2><table>{}<tbody>",
            c.t("节能项目测量与验证报告", "Measurement and verification reports of the projects"),
            head_row(&c, &[("项目", "Project"), ("报告期", "Reporting period"), ("格式", "Formats")])
        );
        for p in projects {
            let id = esc(&fmt::url_encode(&p.id));
            let links: Vec<String> = ["html", "xlsx", "csv", "json"].iter().map(|f| format!("<a href=\"/reports?kind=mv&amp;project={id}&amp;format={f}{lang_q}\">{}</a>", f.to_uppercase())).collect();
            let _ = write!(body, "<tr data-project=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&p.id), esc(&p.name), esc(&p.reporting), links.join(" · "));
        }
        body.push_str("</tbody></table></section>");
    }
    body.push_str(&signature_block(&c, &w.app.registry));
    let title = c.t("报告", "Reports").to_string();
    Ok(layout(&c, "/reports", &title, &[(c.link("/"), c.t("总览", "Overview").to_string())], &body).into_response())
}

/// The signature block the viewer's documents carry (填报单位, 负责人, 填报人, 联系电话, 填报日期),
/// as `reports::model::signature` fills it from the registry: an agency user's is its agency's
/// (its annual report and statistics forms), anyone else's the bureau's (the documents about
/// every agency), with, for the bureau, each agency's own (its annual report). A field the
/// registry lacks says which key of which `[[agency]]` fills it.
fn signature_block(c: &Ctx, reg: &crate::registry::Registry) -> String {
    let own = if c.viewer.principal.reads_all() { None } else { c.viewer.principal.agency.as_deref() };
    let mut h = format!("<section class=\"signature\"><h2>{}</h2>", c.t("签章栏（打印在报告上）", "Signature block (printed on the documents)"));
    let Some(a) = reports::model::signer(reg, own) else {
        let _ = write!(h, "<p class=\"missing\">{}</p></section>", c.t("注册表中没有单位：在注册表中添加 [[agency]]（id、name、level）。", "The registry has no agency: add an [[agency]] (id, name, level) to the registry."));
        return h;
    };
    let _ = write!(
        h,
        "<p>{}</p>",
        esc(&if own.is_some() {
            c.t("本单位的年度报告和统计报表由本单位签章：", "Your agency's annual report and statistics forms are signed by it:").to_string()
        } else {
            format!("{}{}{}", c.t("考核评价、统计报表和全辖年度报告由", "The assessment, the statistics forms and the jurisdiction's annual report are signed by "), a.name, c.t("签章：", ":"))
        })
    );
    let sign = reports::model::signature(reg, Some(&a.id));
    let missing = |key: &str| {
        let (agency, set) = (format!("<code>[[agency]] id = \"{}\"</code>", esc(&a.id)), format!("<code>{key} = \"…\"</code>"));
        let text = match c.lang {
            Lang::Zh => format!("未填写：在注册表的 {agency} 中设置 {set}"),
            Lang::En => format!("not set: put {set} in {agency} of the registry"),
        };
        format!("<span class=\"missing\" data-key=\"{key}\">{text}</span>")
    };
    let field = |v: &Option<String>, key: &str| v.as_deref().map_or_else(|| missing(key), |x| format!("<span class=\"value\">{}</span>", esc(x)));
    let rows = [
        ("unit", c.t("填报单位（盖章）", "Reporting unit (seal)"), field(&sign.unit, "name"), "<code>[[agency]] name</code>".to_string()),
        ("responsible", c.t("负责人", "Responsible person"), field(&sign.responsible, "responsible"), "<code>responsible</code>".to_string()),
        ("filler", c.t("填报人", "Prepared by"), field(&sign.filler, "filler"), "<code>filler</code>".to_string()),
        ("phone", c.t("联系电话", "Telephone"), field(&sign.phone, "phone"), "<code>phone</code>".to_string()),
        ("date", c.t("填报日期", "Date"), c.t("签署时手写", "written by hand when signed").to_string(), String::new()),
    ];
    let _ = write!(h, "<table class=\"sign\" data-agency=\"{}\">{}<tbody>", esc(&a.id), head_row(c, &[("栏目", "Field"), ("打印内容", "Printed"), ("注册表键", "Registry key")]));
    for (id, label, value, key) in rows {
        let _ = write!(h, "<tr data-field=\"{id}\"><th>{label}</th><td>{value}</td><td>{key}</td></tr>");
    }
    h.push_str("</tbody></table>");
    // The bureau: each agency's own block (its annual report with `agency=`), incomplete ones named.
    if own.is_none() {
        let incomplete: Vec<&crate::registry::Agency> = reg.file.agencies.iter().filter(|x| x.responsible.is_none() || x.filler.is_none() || x.phone.is_none()).collect();
        let _ = write!(
            h,
            "<details class=\"agencies-sign\"><summary>{} {} {}</summary><table>{}<tbody>",
            c.t("各单位年度报告的签章栏：", "Each agency's annual report is signed by the agency:"),
            incomplete.len(),
            c.t("个单位未填全（responsible、filler、phone）", "agencies miss a field (responsible, filler, phone)"),
            head_row(c, &[("单位", "Agency"), ("负责人", "Responsible person"), ("填报人", "Prepared by"), ("联系电话", "Telephone")]),
        );
        let cell = |v: &Option<String>| v.as_deref().map_or_else(|| format!("<span class=\"missing\">{}</span>", c.t("未填", "not set")), esc);
        for x in &reg.file.agencies {
            let _ = write!(h, "<tr data-agency=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&x.id), esc(&x.name), cell(&x.responsible), cell(&x.filler), cell(&x.phone));
        }
        h.push_str("</tbody></table></details>");
    }
    h.push_str("</section>");
    h
}

/// One document, as the API's report endpoints give it (the signature block filled from the
/// registry by the reports module), for the viewer's scope.
async fn document(w: &WebShared, viewer: &Viewer, kind: &str, p: &HashMap<String, String>) -> Result<Response, ApiError> {
    let mut q = p.clone();
    q.remove("kind");
    match kind {
        "items" => return items_document(w, viewer, &q).await,
        // The M&V report of a project, as `GET /api/v1/reports/mv` gives it to the viewer.
        "mv" => return crate::api::savings::mv_report(State(w.app.clone()), viewer.principal.clone(), Query(q)).await,
        _ => {}
    }
    let kind: reports::Kind = kind.parse().map_err(|e: String| ApiError::bad_request(format!("{e}, items, mv")))?;
    let req = crate::api::reports::request_of(kind, &q)?;
    let visible = if viewer.principal.reads_all() { Visible::All } else { Visible::agencies(viewer.principal.agency.iter().cloned().collect()) };
    if !viewer.principal.reads_all() && matches!(kind, reports::Kind::Assessment | reports::Kind::Plan) {
        viewer.principal.require_read_all()?;
    }
    let s = &w.app;
    let out = reports::produce(&s.engine, &s.store, &s.registry, s.tz, &req, reports::today(s.tz), &visible).await?;
    Ok(([(header::CONTENT_TYPE, out.content_type.to_string()), (header::CONTENT_DISPOSITION, out.disposition())], out.bytes).into_response())
}

/// The 分项能耗 document of a year (`kind=items&year=Y&format=html|json`): each building the
/// viewer sees with its consumption by national item code, as `GET /api/v1/reports/items`
/// gives it; in HTML a printable page.
async fn items_document(w: &WebShared, viewer: &Viewer, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    if let Some(k) = q.keys().find(|k| !["year", "as_of", "format", "lang"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown parameter `{k}` (year, as_of, format, lang)")));
    }
    let s = &w.app;
    let as_of = reports::as_of_day(s.tz, q.get("as_of").map(String::as_str), reports::today(s.tz))?;
    let year = match q.get("year") {
        Some(y) => y.parse::<i32>().map_err(|_| ApiError::bad_request(format!("year `{y}` is not a year")))?,
        None => as_of.year(),
    };
    let (day, to_ms) = reports::year_cut(s.tz, year, as_of)?;
    let from_ms = reports::year_start_ms(s.tz, year)?;
    let visible = if viewer.principal.reads_all() { Visible::All } else { Visible::agencies(viewer.principal.agency.iter().cloned().collect()) };
    let by = reports::items::building_items(&s.engine, &s.store, &s.registry, s.tz, (from_ms, to_ms), &visible).await?;
    let lang = Lang::of(q);
    match q.get("format").map_or("html", String::as_str) {
        "json" => Ok(axum::Json(json!({ "year": year, "as_of": day.to_string(), "timezone": s.tz.name(), "buildings": by })).into_response()),
        "html" => {
            let (title, html_lang) = (lang.t(&format!("{year}年分项能耗"), &format!("Consumption by item code, {year}")).to_string(), lang.code());
            let section = reports::items::section(lang, year, &day.to_string(), &by);
            Ok(Html(format!(
                "<!DOCTYPE html><html lang=\"{html_lang}\"><head><meta charset=\"utf-8\"><title>{}</title><link rel=\"stylesheet\" href=\"{}\"></head><body><main>{section}</main></body></html>",
                esc(&title),
                assets::CSS_PATH
            ))
            .into_response())
        }
        f => Err(ApiError::bad_request(format!("format `{f}`: json or html"))),
    }
}

fn happened_name(lang: Lang, h: crate::alerts::actions::Happened) -> &'static str {
    use crate::alerts::actions::Happened as H;
    match h {
        H::Pending => lang.t("待定", "pending"),
        H::Firing => lang.t("告警中", "firing"),
        H::Resolved => lang.t("已恢复", "resolved"),
        H::Acknowledged => lang.t("已确认", "acknowledged"),
        H::Silenced => lang.t("已静默", "silenced"),
        H::Unsilenced => lang.t("解除静默", "silence ended"),
    }
}

fn alert_state_name(lang: Lang, st: crate::alerts::state::State) -> &'static str {
    use crate::alerts::state::State as S;
    match st {
        S::Firing => lang.t("告警中", "firing"),
        S::Pending => lang.t("待定", "pending"),
        S::Resolved => lang.t("已恢复", "resolved"),
    }
}

/// `GET /alerts[?state=..][&agency=..][&kind=..]`: firing, pending and resolved alerts with their
/// history, as `GET /api/v1/alerts` lists them for the viewer (the same service and scope), and
/// the forms to acknowledge or silence one with a reason.
pub(super) async fn alerts(State(w): State<WebShared>, viewer: Viewer, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    use crate::alerts::actions::AlertFilter;
    use crate::alerts::state::State as S;
    let c = Ctx::new(&w, viewer, &p)?;
    let s = &w.app;
    let state = match p.get("state").map(String::as_str) {
        None | Some("") => None,
        Some("firing") => Some(S::Firing),
        Some("pending") => Some(S::Pending),
        Some("resolved") => Some(S::Resolved),
        Some(x) => return Err(ApiError::bad_request(format!("state `{x}` is not one of firing, pending, resolved"))),
    };
    let kinds = s.alerts.config.rules.iter().map(|r| (r.name.clone(), r.kind.as_str().to_string())).collect();
    let filter = AlertFilter { state, agency: p.get("agency").cloned(), building: None, meter: None, kind: p.get("kind").cloned(), kinds };
    let list = s.alerts.list(&c.viewer.principal, &filter, super::now_ms());
    let opt = |k: &str, v: &str, label: &str| format!("<option value=\"{v}\"{}>{label}</option>", if p.get(k).map(String::as_str) == Some(v) { " selected" } else { "" });
    let mut kinds_opts = opt("kind", "", c.t("全部类型", "every kind"));
    let mut seen = std::collections::BTreeSet::new();
    for r in &s.alerts.config.rules {
        if seen.insert(r.kind.as_str()) {
            kinds_opts.push_str(&opt("kind", r.kind.as_str(), c.t(r.kind.name_zh(), r.kind.name_en())));
        }
    }
    let mut agency_opts = opt("agency", "", c.t("全部单位", "every agency"));
    for a in s.registry.file.agencies.iter().filter(|a| c.viewer.principal.sees_agency(&a.id)) {
        agency_opts.push_str(&opt("agency", &a.id, &a.name));
    }
    let mut body = format!(
        "<form class=\"filter\" method=\"get\" action=\"/alerts\">{lang}<select name=\"state\">{}{}{}{}</select><select name=\"agency\">{agency_opts}</select><select name=\"kind\">{kinds_opts}</select><button type=\"submit\">{}</button></form>",
        opt("state", "", c.t("全部状态", "every state")),
        opt("state", "firing", alert_state_name(c.lang, S::Firing)),
        opt("state", "pending", alert_state_name(c.lang, S::Pending)),
        opt("state", "resolved", alert_state_name(c.lang, S::Resolved)),
        c.t("筛选", "Filter"),
        lang = if c.lang == Lang::En { "<input type=\"hidden\" name=\"lang\" value=\"en\">" } else { "" },
    );
    if let Some(done) = p.get("done") {
        let _ = write!(body, "<p class=\"done\" role=\"status\">{}</p>", esc(done));
    }
    if list.is_empty() {
        let _ = write!(body, "<p>{}</p>", c.t("暂无告警。", "No alerts."));
    }
    let back = esc(&fmt::url_encode(&format!("{}{}", p.get("state").map(|x| format!("state={x}&")).unwrap_or_default(), if c.lang == Lang::En { "lang=en" } else { "" })));
    for a in &list {
        let summary = match c.lang {
            Lang::Zh => a.summary_zh.clone().or_else(|| a.summary.clone()),
            Lang::En => a.summary.clone(),
        }
        .unwrap_or_default();
        let mut marks = String::new();
        if let Some(k) = &a.acknowledged {
            let _ = write!(marks, "<p class=\"ack\">{} {} · {}</p>", c.t("已确认：", "Acknowledged by"), esc(&k.by), esc(&k.reason));
        }
        if let Some(si) = &a.silenced {
            let _ = write!(marks, "<p class=\"silenced\">{} {} {} {} · {}</p>", c.t("已静默：", "Silenced by"), esc(&si.by), c.t("至", "until"), esc(si.until.as_deref().unwrap_or("")), esc(&si.reason));
        }
        let history: Vec<String> = a
            .history
            .iter()
            .map(|h| format!("<li>{} {}{}{}</li>", esc(h.at.as_deref().unwrap_or("")), happened_name(c.lang, h.state), h.by.as_deref().map(|b| format!(" · {}", esc(b))).unwrap_or_default(), h.reason.as_deref().map(|r| format!(" · {}", esc(r))).unwrap_or_default()))
            .collect();
        let state = a.state.as_str();
        // The rule's kind in the page's language, then the rule's own name (as Alertmanager has it).
        let kind = s.alerts.config.rules.iter().find(|r| r.name == a.alertname).map(|r| c.t(r.kind.name_zh(), r.kind.name_en()));
        let _ = write!(
            body,
            "<article class=\"alert {state}{}\" data-alert=\"{id}\"><h3><span class=\"state\">{}</span> {} <code class=\"rule\">{}</code> <small>{}</small></h3><p>{}</p>{marks}<details><summary>{}</summary><ul>{}</ul></details>",
            if a.acknowledged.is_some() { " acknowledged" } else { "" },
            alert_state_name(c.lang, a.state),
            esc(kind.unwrap_or("")),
            esc(&a.alertname),
            esc(&[a.agency.as_str(), a.building.as_str(), a.meter.as_str()].iter().filter(|x| !x.is_empty()).copied().collect::<Vec<_>>().join(" · ")),
            esc(&summary),
            c.t("历史", "History"),
            history.join(""),
            id = esc(&a.id),
        );
        let action = |what: &str| format!("/alerts/{}/{what}?back={back}", fmt::url_encode(&a.id));
        if a.state != S::Resolved && a.acknowledged.is_none() {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"{}\" class=\"ack\">{}<input name=\"reason\" required placeholder=\"{}\"><button type=\"submit\">{}</button></form>",
                action("ack"),
                c.csrf_input(),
                c.t("原因", "reason"),
                c.t("确认", "Acknowledge")
            );
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{}\" class=\"silence\">{}<input name=\"reason\" required placeholder=\"{}\"><input name=\"hours\" type=\"number\" min=\"0.1\" step=\"any\" value=\"24\" aria-label=\"{}\"><button type=\"submit\">{}</button></form></article>",
            action("silence"),
            c.csrf_input(),
            c.t("原因", "reason"),
            c.t("小时", "hours"),
            c.t("静默", "Silence")
        );
    }
    let title = c.t("告警", "Alerts").to_string();
    Ok(layout(&c, "/alerts", &title, &[(c.link("/"), c.t("总览", "Overview").to_string())], &body).into_response())
}

/// `POST /alerts/{id}/ack` and `/silence` (forms): the alert service's actions, as the API's.
pub(super) async fn alert_action(State(w): State<WebShared>, viewer: Viewer, Path((id, what)): Path<(String, String)>, Query(p): Query<HashMap<String, String>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    use crate::alerts::actions::SilenceFor;
    let form: HashMap<String, String> = super::login::parse_form(&body)?;
    viewer.check_csrf(form.get("csrf").map(String::as_str))?;
    let reason = form.get("reason").cloned().unwrap_or_default();
    let (alerts, audit, who, now) = (w.app.alerts.clone(), w.app.audit.clone(), viewer.principal.clone(), super::now_ms());
    let back = p.get("back").cloned().unwrap_or_default();
    let lang = if back.contains("lang=en") { Lang::En } else { Lang::Zh };
    let done = match what.as_str() {
        "ack" => {
            tokio::task::spawn_blocking(move || alerts.acknowledge(&audit, &who, &id, &reason, now)).await.map_err(|e| ApiError::internal("alert action", e))??;
            lang.t("告警已确认。", "Alert acknowledged.")
        }
        "silence" => {
            let hours: f64 = form.get("hours").and_then(|h| h.trim().parse().ok()).ok_or_else(|| ApiError::bad_request("`hours` must be a number"))?;
            tokio::task::spawn_blocking(move || alerts.silence(&audit, &who, &id, &reason, SilenceFor::Hours(hours), now)).await.map_err(|e| ApiError::internal("alert action", e))??;
            lang.t("告警已静默。", "Alert silenced.")
        }
        other => return Err(ApiError::not_found(format!("no alert action `{other}`"))),
    };
    let back: String = back.chars().filter(|ch| ch.is_ascii_alphanumeric() || "=&-_".contains(*ch)).collect();
    Ok(Redirect::to(&format!("/alerts?{back}&done={}", fmt::url_encode(done))).into_response())
}
