//! Printable HTML (A4, print styles), charts as inline SVG, no JavaScript. Everything that comes
//! from the registry or the data is escaped.

use std::fmt::Write as _;

use super::labels::{self, t, Lang};
use super::model::{scope_name, AnnualEntry, AnnualReport, Assessment, EnergyPlan};
use super::tables::{self, fmt, Cell, Table};
use crate::accounting::indicators::BandClass;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

pub const STYLE: &str = "body{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",\"SimSun\",sans-serif;font-size:10.5pt;color:#111;max-width:190mm;margin:1em auto;padding:0 4mm}\
h1{font-size:17pt;margin:.2em 0}h2{font-size:13pt;margin:1.2em 0 .4em;border-bottom:1px solid #999}h3{font-size:11pt;margin:.8em 0 .3em}\
p.meta{color:#333;margin:.2em 0}table{border-collapse:collapse;width:100%;margin:.4em 0;font-size:9pt}\
th,td{border:1px solid #bbb;padding:2px 4px;vertical-align:top}th{background:#e8eef5;text-align:left}td.n{text-align:right;white-space:nowrap}\
.bad{color:#a00;font-weight:bold}.ok{color:#070}svg{display:block;margin:.3em 0;max-width:100%}nav a{margin-right:.8em}\
@page{size:A4;margin:14mm}\
@media print{body{max-width:none;margin:0;padding:0;font-size:9.5pt}nav,.noprint{display:none}section{break-inside:avoid-page}\
h2{break-after:avoid}thead{display:table-header-group}tr,svg{break-inside:avoid}a{color:inherit;text-decoration:none}}";

pub fn page_start(lang: Lang, title: &str) -> String {
    format!("<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{}</style></head><body>\n", lang.code(), esc(title), STYLE)
}

fn cell_html(c: &Cell) -> String {
    match c {
        Cell::Text(s) => format!("<td>{}</td>", esc(s)),
        Cell::Num(Some(x)) => format!("<td class=\"n\">{}</td>", fmt(*x)),
        Cell::Num(None) => "<td class=\"n\">–</td>".into(),
    }
}

/// A table, leaving out the columns `skip`.
pub fn table_html(tb: &Table, skip: &[usize]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for (_, h) in tb.headers.iter().enumerate().filter(|(i, _)| !skip.contains(i)) {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in &tb.rows {
        out.push_str("<tr>");
        for (_, c) in r.iter().enumerate().filter(|(i, _)| !skip.contains(i)) {
            out.push_str(&cell_html(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    out
}

fn meta(lang: Lang, items: &[(&str, String)]) -> String {
    let parts: Vec<String> = items.iter().map(|(k, v)| format!("{}: {}", esc(&t(lang, k)), esc(v))).collect();
    format!("<p class=\"meta\">{}</p>\n", parts.join(" · "))
}

/// Indicators against their quota bands: a bar per indicator over the four zones.
pub fn band_chart(lang: Lang, e: &AnnualEntry) -> String {
    let rows: Vec<_> = e.figures.indicators.iter().filter_map(|v| v.band.as_ref().zip(v.projected).map(|(b, p)| (v, b, p))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let (w, lw, rh) = (640.0, 210.0, 26.0);
    let bw = w - lw - 70.0;
    let h = rh * rows.len() as f64 + 22.0;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">", esc(&t(lang, "chart_band")));
    for (i, (v, b, p)) in rows.iter().enumerate() {
        let y = 4.0 + rh * i as f64;
        let max = (b.binding * 1.25).max(p * 1.05).max(1e-9);
        let x = |val: f64| lw + bw * (val / max).clamp(0.0, 1.0);
        let _ = write!(s, "<text x=\"0\" y=\"{}\" font-size=\"11\">{}</text>", y + 14.0, esc(labels::indicator(lang, v.indicator)));
        for (from, to, color) in [(0.0, b.guide, "#cfe8cf"), (b.guide, b.benchmark, "#eef0c0"), (b.benchmark, b.binding, "#f6d6a8"), (b.binding, max, "#f2b8b8")] {
            let _ = write!(s, "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"18\" fill=\"{color}\"/>", x(from), (x(to) - x(from)).max(0.0));
        }
        let color = if b.class == BandClass::AboveBinding { "#a00" } else { "#234" };
        let _ = write!(s, "<rect x=\"{lw}\" y=\"{}\" width=\"{:.1}\" height=\"8\" fill=\"{color}\"/>", y + 5.0, x(*p) - lw);
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{}</text>", lw + bw + 4.0, y + 13.0, esc(&fmt(*p)));
    }
    let ly = h - 6.0;
    let _ = write!(
        s,
        "<text x=\"{lw}\" y=\"{ly}\" font-size=\"9\">0 · {} · {} · {}</text></svg>",
        esc(&t(lang, "guide")),
        esc(&t(lang, "benchmark")),
        esc(&t(lang, "binding"))
    );
    s
}

/// Monthly energy this year against last year.
pub fn monthly_chart(lang: Lang, e: &AnnualEntry) -> String {
    let (w, h, top, bottom, left) = (640.0, 190.0, 16.0, 26.0, 56.0);
    let max = e.monthly.this_year_kgce.iter().chain(&e.monthly.last_year_kgce).copied().fold(0.0, f64::max).max(1e-9);
    let ph = h - top - bottom;
    let gw = (w - left) / 12.0;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">", esc(&t(lang, "chart_monthly")));
    let _ = write!(s, "<text x=\"0\" y=\"{top}\" font-size=\"9\">{} kgce</text>", esc(&fmt(max)));
    let _ = write!(s, "<line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" stroke=\"#888\"/>", top + ph, top + ph);
    for m in 0..12 {
        let gx = left + gw * m as f64;
        for (k, (v, color)) in [(e.monthly.last_year_kgce[m], "#b8c2cc"), (e.monthly.this_year_kgce[m], "#2b6cb0")].into_iter().enumerate() {
            let bh = ph * (v / max).clamp(0.0, 1.0);
            let _ = write!(s, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/>", gx + 4.0 + k as f64 * (gw - 8.0) / 2.0, top + ph - bh, (gw - 8.0) / 2.0);
        }
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>", gx + gw / 2.0, h - 10.0, m + 1);
    }
    let _ = write!(
        s,
        "<rect x=\"{left}\" y=\"{}\" width=\"10\" height=\"8\" fill=\"#2b6cb0\"/><text x=\"{}\" y=\"{}\" font-size=\"9\">{}</text>\
         <rect x=\"{}\" y=\"{}\" width=\"10\" height=\"8\" fill=\"#b8c2cc\"/><text x=\"{}\" y=\"{}\" font-size=\"9\">{}</text></svg>",
        h - 8.0,
        left + 14.0,
        h - 1.0,
        esc(&t(lang, "this_year_kgce")),
        left + 150.0,
        h - 8.0,
        left + 164.0,
        h - 1.0,
        esc(&t(lang, "last_year_kgce"))
    );
    s
}

pub fn annual(r: &AnnualReport, lang: Lang) -> String {
    let title = format!("{} {}", r.year, t(lang, "annual"));
    let mut out = page_start(lang, &title);
    let _ = write!(out, "<header><h1>{}</h1>", esc(&title));
    out.push_str(&meta(lang, &[("year", r.year.to_string()), ("as_of", r.as_of.clone()), ("timezone", r.timezone.clone()), ("basis", r.electricity_basis.clone())]));
    if r.in_progress {
        let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "in_progress")));
    }
    let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "as_of_rule")));
    // The basis of each per-area figure.
    let _ = write!(out, "<p class=\"meta\">{}:</p><ul class=\"meta\">", esc(&t(lang, "area_basis")));
    for (i, b) in crate::registry::Indicator::ALL.iter().filter_map(|i| i.area_basis().map(|b| (*i, b))) {
        let _ = write!(out, "<li>{}: {}</li>", esc(labels::indicator(lang, i)), esc(if lang == Lang::Zh { b.name_zh() } else { b.name_en() }));
    }
    out.push_str("</ul>");
    out.push_str("</header>\n");
    for e in &r.entries {
        let one = AnnualReport { entries: vec![e.clone()], ..r.clone() };
        let tbs = tables::annual(&one, lang);
        let _ = writeln!(
            out,
            "<section id=\"{}-{}\"><h2>{} <small>({} · {})</small></h2>",
            esc(scope_name(e.scope)),
            esc(&e.agency),
            esc(&e.name),
            esc(&t(lang, &format!("scope_{}", scope_name(e.scope)))),
            esc(&e.agency)
        );
        if let Some(tb) = tbs.first() {
            out.push_str(&table_html(tb, &[0, 1, 2, 4]));
        }
        let bc = band_chart(lang, e);
        if !bc.is_empty() {
            let _ = writeln!(out, "<h3>{}</h3>{bc}", esc(&t(lang, "chart_band")));
        }
        let _ = writeln!(out, "<h3>{}</h3>{}", esc(&t(lang, "chart_monthly")), monthly_chart(lang, e));
        if let Some(tb) = tbs.get(1) {
            let _ = write!(out, "<h3>{}</h3>", esc(&tb.title));
            out.push_str(&table_html(tb, &[0, 1]));
        }
        if let Some(tb) = tbs.get(2) {
            let _ = write!(out, "<h3>{}</h3>", esc(&tb.title));
            out.push_str(&table_html(tb, &[0, 1, 2]));
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Agencies by score.
pub fn ranking_chart(lang: Lang, a: &Assessment) -> String {
    let (w, lw, rh) = (640.0, 200.0, 22.0);
    let bw = w - lw - 120.0;
    let h = rh * a.agencies.len() as f64 + 8.0;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">", esc(&t(lang, "chart_ranking")));
    for (i, x) in a.agencies.iter().enumerate() {
        let y = 4.0 + rh * i as f64;
        let score = x.score.unwrap_or(0.0);
        let color = if x.binding_missed.is_empty() { "#2b6cb0" } else { "#a00" };
        let grade = if lang == Lang::Zh { x.grade.clone() } else { x.grade_en.clone() }.unwrap_or_default();
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" font-size=\"11\">{}. {}</text><rect x=\"{lw}\" y=\"{y}\" width=\"{:.1}\" height=\"15\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{} {}</text>",
            y + 12.0,
            x.rank.map_or("–".to_string(), |r| r.to_string()),
            esc(&x.name),
            bw * (score / 100.0).clamp(0.0, 1.0),
            lw + bw * (score / 100.0).clamp(0.0, 1.0) + 4.0,
            y + 12.0,
            esc(&x.score.map_or("–".into(), fmt)),
            esc(&grade)
        );
    }
    s.push_str("</svg>");
    s
}

pub fn assessment(a: &Assessment, lang: Lang) -> String {
    let title = format!("{} {}", a.year, t(lang, "assessment"));
    let mut out = page_start(lang, &title);
    let _ = write!(out, "<header><h1>{}</h1>", esc(&title));
    out.push_str(&meta(lang, &[("year", a.year.to_string()), ("as_of", a.as_of.clone()), ("timezone", a.timezone.clone())]));
    if a.in_progress {
        let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "in_progress")));
    }
    let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "as_of_rule")));
    out.push_str("</header>\n");
    let tbs = tables::assessment(a, lang);
    let _ = writeln!(out, "<section><h2>{}</h2>{}", esc(&t(lang, "chart_ranking")), ranking_chart(lang, a));
    if let Some(tb) = tbs.first() {
        out.push_str(&table_html(tb, &[6, 7, 9]));
    }
    out.push_str("</section>\n");
    let _ = writeln!(out, "<section><h2>{}</h2>", esc(&t(lang, "reasons")));
    for s in &a.agencies {
        let reasons = tables::reasons(lang, s);
        let _ = write!(out, "<h3>{}. {} ({})</h3>", s.rank.map_or("–".to_string(), |r| r.to_string()), esc(&s.name), esc(&s.agency));
        if reasons.is_empty() {
            out.push_str("<p>–</p>");
        } else {
            out.push_str("<ul>");
            for r in reasons {
                let _ = write!(out, "<li>{}</li>", esc(&r));
            }
            out.push_str("</ul>\n");
        }
    }
    out.push_str("</section>\n");
    for tb in tbs.iter().skip(1) {
        let _ = writeln!(out, "<section><h2>{}</h2>{}</section>", esc(&tb.title), table_html(tb, &[]));
    }
    out.push_str("</body></html>\n");
    out
}

pub fn plan(p: &EnergyPlan, lang: Lang) -> String {
    let title = format!("{} {}", p.year, t(lang, "plan"));
    let mut out = page_start(lang, &title);
    let _ = write!(out, "<header><h1>{}</h1>", esc(&title));
    out.push_str(&meta(
        lang,
        &[
            ("plan_year", p.year.to_string()),
            ("last_full_year", p.last_full_year.to_string()),
            ("as_of", p.as_of.clone()),
            ("timezone", p.timezone.clone()),
        ],
    ));
    out.push_str("</header>\n");
    let tbs = tables::plan(p, lang);
    // Summary first, then audits, targets, budget.
    for i in [3usize, 1, 0, 2] {
        if let Some(tb) = tbs.get(i) {
            let skip: &[usize] = if i == 0 { &[3] } else { &[] };
            let _ = writeln!(out, "<section><h2>{}</h2>{}</section>", esc(&tb.title), table_html(tb, skip));
        }
    }
    let notes: Vec<String> = p.agencies.iter().flat_map(|a| a.notes.iter().map(move |n| format!("{}: {n}", a.name))).collect();
    if !notes.is_empty() {
        let _ = write!(out, "<section><h2>{}</h2><ul>", esc(&t(lang, "notes")));
        for n in notes {
            let _ = write!(out, "<li>{}</li>", esc(&n));
        }
        out.push_str("</ul></section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// The bureau's page: every agency's indicators of `year` to date and projected against its
/// targets and bands, links to every report, and the art. 39 deadlines with what is missing.
pub fn index(lang: Lang, year: i32, as_of: &str, figures: &[crate::accounting::indicators::AgencyIndicators], d: &super::model::Deadlines) -> String {
    let title = match lang {
        Lang::Zh => "公共机构能源资源消耗统计".to_string(),
        Lang::En => "Public institutions' energy and water".to_string(),
    };
    let mut out = page_start(lang, &title);
    let q = if lang == Lang::En { "&amp;lang=en" } else { "" };
    let _ = write!(out, "<header><h1>{}</h1>", esc(&title));
    out.push_str(&meta(lang, &[("year", year.to_string()), ("as_of", as_of.to_string())]));
    let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "as_of_rule")));
    let _ = writeln!(
        out,
        "<nav class=\"noprint\"><a href=\"/?lang=zh\">中文</a><a href=\"/?lang=en\">English</a><a href=\"#deadlines\">{}</a><a href=\"#downloads\">{}</a>\
         <a href=\"/api/v1/agencies\">agencies</a><a href=\"/api/v1/meters\">meters</a><a href=\"/api/v1/gateways\">gateways</a><a href=\"/metrics\">metrics</a></nav></header>",
        esc(&t(lang, "deadlines")),
        esc(&t(lang, "downloads"))
    );
    // Deadlines.
    let _ = write!(out, "<section id=\"deadlines\"><h2>{} ({})</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>", esc(&t(lang, "deadlines")), d.year, esc(&t(lang, "item")), esc(&t(lang, "figure")), esc(&t(lang, "days_left")));
    for (k, date, days) in [("agencies_due", &d.agencies_due, d.days_to_agencies_due), ("bureau_due", &d.bureau_due, d.days_to_bureau_due)] {
        let cls = if days < 0 && d.incomplete > 0 { " class=\"bad\"" } else { "" };
        let _ = write!(out, "<tr><td>{}</td><td>{}</td><td class=\"n\"><span{cls}>{days}</span></td></tr>", esc(&t(lang, k)), esc(date));
    }
    out.push_str("</tbody></table>");
    if d.incomplete == 0 {
        let _ = write!(out, "<p class=\"ok\">{}</p>", esc(&t(lang, "all_complete")));
    } else {
        let _ = write!(out, "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>", esc(&t(lang, "name")), esc(&t(lang, "coverage")), esc(&t(lang, "complete")), esc(&t(lang, "missing")));
        for a in d.agencies.iter().filter(|a| !a.complete) {
            let _ = write!(
                out,
                "<tr><td>{} ({})</td><td class=\"n\">{}</td><td class=\"bad\">{}</td><td>{}</td></tr>",
                esc(&a.name),
                esc(&a.agency),
                fmt(a.coverage * 100.0),
                esc(&labels::yes_no(lang, false)),
                esc(&a.missing.join("; "))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>\n");
    // Downloads.
    let _ = write!(out, "<section id=\"downloads\"><h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>HTML</th><th>XLSX</th><th>CSV</th><th>JSON</th></tr></thead><tbody>", esc(&t(lang, "downloads")), esc(&t(lang, "item")), esc(&t(lang, "year")));
    // Last year's documents (due this year), this year's report so far, next year's plan.
    let mut docs = vec![("annual", "/api/v1/reports/annual", d.year), ("assessment", "/api/v1/reports/assessment", d.year)];
    if year != d.year {
        docs.push(("annual", "/api/v1/reports/annual", year));
    }
    docs.push(("plan", "/api/v1/plans/energy", year + 1));
    for (k, path, y) in docs {
        let _ = write!(out, "<tr><td>{}</td><td class=\"n\">{y}</td>", esc(&t(lang, k)));
        for f in ["html", "xlsx", "csv", "json"] {
            let _ = write!(out, "<td><a href=\"{path}?year={y}&amp;format={f}{q}\">{f}</a></td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>\n");
    // Agencies.
    let _ = writeln!(out, "<section><h2>{} ({year})</h2>", esc(&t(lang, "overview")));
    for f in figures {
        let _ = write!(
            out,
            "<h3 id=\"agency-{}\">{} <small>({} · {}: {} %)</small> <a class=\"noprint\" href=\"/api/v1/reports/annual?year={year}&amp;agency={}&amp;format=html{q}\">{}</a></h3>",
            esc(&f.agency),
            esc(&f.name),
            esc(&f.agency),
            esc(&t(lang, "coverage")),
            fmt(f.quality.coverage * 100.0),
            esc(&f.agency),
            esc(&t(lang, "annual"))
        );
        let _ = write!(
            out,
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            esc(&t(lang, "indicator")),
            esc(&t(lang, "unit")),
            esc(&t(lang, if f.in_progress { "value" } else { "value_closed" })),
            esc(&t(lang, "projected")),
            esc(&t(lang, "target")),
            esc(&t(lang, "met")),
            esc(&t(lang, "class"))
        );
        for v in &f.indicators {
            let met = v.target.as_ref().map_or(String::new(), |x| {
                let cls = if x.met { "ok" } else { "bad" };
                format!("<span class=\"{cls}\">{}</span>", esc(&labels::yes_no(lang, x.met)))
            });
            let class = v.band.as_ref().map_or(String::new(), |b| {
                let cls = if b.class == BandClass::AboveBinding { " class=\"bad\"" } else { "" };
                format!("<span{cls}>{}</span>", esc(labels::class(lang, b.class)))
            });
            let n = |x: Option<f64>| x.map_or("–".to_string(), fmt);
            // No data and incomplete data are said, never shown as 0 or as a class.
            let status = esc(labels::data_status(lang, v.data));
            let (value, projected) = match v.data {
                crate::accounting::indicators::DataStatus::NoData => (status.clone(), status),
                crate::accounting::indicators::DataStatus::Incomplete => (n(v.value), status),
                crate::accounting::indicators::DataStatus::Complete => (n(v.value), n(v.projected)),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{met}</td><td>{class}</td></tr>",
                esc(labels::indicator(lang, v.indicator)),
                esc(v.unit),
                value,
                projected,
                n(v.target.as_ref().map(|x| x.value))
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section></body></html>\n");
    out
}

/// The bureau's page: whether each agency can be scored in the assessment of `a.year`, and why
/// not (no data, incomplete data, nothing to score), with its score and grade.
pub fn scoring_section(lang: Lang, a: &Assessment) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section id=\"scoring\"><h2>{} ({})</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        esc(&t(lang, "assessment")),
        a.year,
        esc(&t(lang, "name")),
        esc(&t(lang, "score")),
        esc(&t(lang, "grade")),
        esc(&t(lang, "reasons"))
    );
    for s in &a.agencies {
        let grade = if lang == Lang::Zh { s.grade.clone() } else { s.grade_en.clone() }.unwrap_or_default();
        let why = if s.scored { String::new() } else { tables::reasons(lang, s).into_iter().next().unwrap_or_default() };
        let cls = if s.scored { "" } else { " class=\"bad\"" };
        let _ = write!(
            out,
            "<tr><td>{} ({})</td><td class=\"n\">{}</td><td>{}</td><td{cls}>{}</td></tr>",
            esc(&s.name),
            esc(&s.agency),
            s.score.map_or("–".to_string(), fmt),
            esc(&grade),
            esc(&why)
        );
    }
    out.push_str("</tbody></table></section>\n");
    out
}
