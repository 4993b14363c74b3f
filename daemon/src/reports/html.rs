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

/// Screen and print styles. Print: A4 with the page number in the bottom margin (see
/// [`page_start`]), headings kept with what follows them, table headers repeated on every page,
/// no row split across pages.
pub const STYLE: &str = "body{font-family:\"Noto Sans CJK SC\",\"WenQuanYi Micro Hei\",\"Microsoft YaHei\",\"SimSun\",sans-serif;font-size:10.5pt;color:#111;max-width:190mm;margin:1em auto;padding:0 4mm}\
h1{font-size:17pt;margin:.2em 0;text-align:center}h2{font-size:13pt;margin:1.2em 0 .4em;border-bottom:1px solid #999}h3{font-size:11pt;margin:.8em 0 .3em}\
p.meta{color:#333;margin:.2em 0}table{border-collapse:collapse;width:100%;margin:.4em 0;font-size:9pt}\
th,td{border:1px solid #999;padding:2px 4px;vertical-align:top}th{background:#e8eef5;text-align:center}td.n{text-align:right;white-space:nowrap}\
tr.total td{font-weight:bold;background:#f4f6f8}td.code{text-align:center;color:#555}p.caption{text-align:center;margin:.1em 0}\
.bad{color:#a00;font-weight:bold}.ok{color:#070}.warn{border:2px solid #c60;background:#fff4e5;padding:.4em .6em;margin:.6em 0}\
svg{display:block;margin:.3em 0;max-width:100%}nav a{margin-right:.8em}\
div.sign{break-inside:avoid;margin-top:1.4em;font-size:10.5pt}div.sign p{display:flex;flex-wrap:wrap;gap:.4em 2.5em;margin:.7em 0}\
table.wide{font-size:8pt}table.wide td,table.wide th{padding:1px 3px}\
div.keep{break-inside:avoid}\
@media print{body{max-width:none;margin:0;padding:0;font-size:9.5pt}nav,.noprint{display:none}\
h1,h2,h3,p.meta{break-after:avoid}thead{display:table-header-group}tr,svg{break-inside:avoid}a{color:inherit;text-decoration:none}}";

/// The page's head: the styles and the A4 page rule with the page number ("第 1 页，共 3 页").
pub fn page_start(lang: Lang, title: &str) -> String {
    let number = match lang {
        Lang::Zh => "\"第 \" counter(page) \" 页，共 \" counter(pages) \" 页\"",
        Lang::En => "\"Page \" counter(page) \" of \" counter(pages)",
    };
    format!(
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{}\
@page{{size:A4;margin:14mm 12mm 16mm 12mm;@bottom-center{{content:{number};font-size:9pt;color:#333}}}}</style></head><body>\n",
        lang.code(),
        esc(title),
        STYLE
    )
}

/// Yuan with two decimals and thousands separated.
pub fn money_text(x: f64) -> String {
    let s = super::labels::number(x);
    match s.split_once('.') {
        Some((i, f)) if f.len() == 1 => format!("{i}.{f}0"),
        Some(_) => s,
        None => format!("{s}.00"),
    }
}

fn cell_html(c: &Cell) -> String {
    match c {
        Cell::Text(s) => format!("<td>{}</td>", esc(s)),
        Cell::Num(Some(x)) => format!("<td class=\"n\">{}</td>", fmt(*x)),
        Cell::Money(Some(x)) => format!("<td class=\"n\">{}</td>", money_text(*x)),
        Cell::Int(Some(x)) => format!("<td class=\"n\">{x}</td>"),
        Cell::Num(None) | Cell::Money(None) | Cell::Int(None) => "<td class=\"n\">–</td>".into(),
    }
}

/// A table, leaving out the columns whose keys are in `skip`; totals bold, the forms'
/// caption above and column numbers under the header. A heading given is kept with the table
/// (and a short table kept on one page).
pub fn table_html(tb: &Table, skip: &[&str]) -> String {
    table_with_heading(tb, skip, "")
}

pub fn table_with_heading(tb: &Table, skip: &[&str], heading: &str) -> String {
    table_with(tb, skip, heading, "")
}

/// A table with its heading and, after it, `tail` (the signature block, kept on the page of
/// the document's last table rather than alone on a page of its own).
pub fn table_with(tb: &Table, skip: &[&str], heading: &str, tail: &str) -> String {
    let tb = tb.without(skip);
    let mut out = String::new();
    let short = tb.rows.len() <= 12;
    out.push_str(if short { "<div class=\"keep\">" } else { "<div>" });
    out.push_str(heading);
    for (i, line) in tb.caption.iter().enumerate() {
        if i == 0 && heading.is_empty() {
            let _ = write!(out, "<h2>{}</h2>", esc(line));
        } else if i > 0 {
            let _ = write!(out, "<p class=\"caption\">{}</p>", esc(line));
        }
    }
    out.push_str(if tb.headers.len() > 10 { "<table class=\"wide\"><thead><tr>" } else { "<table><thead><tr>" });
    for h in &tb.headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    if !tb.column_codes.is_empty() {
        out.push_str("<tr>");
        for c in &tb.column_codes {
            let _ = write!(out, "<td class=\"code\">{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</thead><tbody>\n");
    for (i, r) in tb.rows.iter().enumerate() {
        out.push_str(if tb.total_rows.contains(&i) { "<tr class=\"total\">" } else { "<tr>" });
        for c in r {
            out.push_str(&cell_html(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    for line in &tb.footer {
        let _ = write!(out, "<p class=\"meta\">{}</p>", esc(line));
    }
    out.push_str(tail);
    out.push_str("</div>\n");
    out
}

/// The signature block of a document (填报单位, 负责人, 填报人, 联系电话, 填报日期), filled from
/// the registry where it has the person; the rest is left to fill in by hand.
pub fn signature_html(lang: Lang, s: &super::model::Signature) -> String {
    let blank = "&nbsp;".repeat(16);
    let v = |x: &Option<String>| x.as_deref().map_or(blank.clone(), esc);
    let date = match lang {
        Lang::Zh => "&nbsp;&nbsp;&nbsp;&nbsp;年&nbsp;&nbsp;&nbsp;月&nbsp;&nbsp;&nbsp;日".to_string(),
        Lang::En => blank.clone(),
    };
    format!(
        "<div class=\"sign\"><p><span>{}{}：{}</span><span>{}：{date}</span></p>\
<p><span>{}：{}</span><span>{}：{}</span><span>{}：{}</span></p></div>\n",
        esc(&t(lang, "sign_unit")),
        esc(&t(lang, "sign_seal")),
        v(&s.unit),
        esc(&t(lang, "sign_date")),
        esc(&t(lang, "sign_responsible")),
        v(&s.responsible),
        esc(&t(lang, "sign_filler")),
        v(&s.filler),
        esc(&t(lang, "sign_phone")),
        v(&s.phone),
    )
}

fn meta(lang: Lang, items: &[(&str, String)]) -> String {
    let colon = if lang == Lang::Zh { "：" } else { ": " };
    let parts: Vec<String> = items.iter().map(|(k, v)| format!("{}{colon}{}", esc(&t(lang, k)), esc(v))).collect();
    format!("<p class=\"meta\">{}</p>\n", parts.join(if lang == Lang::Zh { "　" } else { " · " }))
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
    let _ = write!(s, "<text x=\"0\" y=\"{top}\" font-size=\"9\">{} {}</text>", esc(&fmt(max)), esc(&labels::unit(lang, "kgce")));
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

/// The heading of a document: the title and the lines that say what the figures are.
/// Every document states the as-of rule; a document of indicators (`bases`) also states the
/// basis of each per-area figure.
fn doc_head(lang: Lang, title: &str, items: &[(&str, String)], in_progress: bool, bases: bool) -> String {
    let mut out = format!("<header><h1>{}</h1>", esc(title));
    out.push_str(&meta(lang, items));
    if in_progress {
        let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "in_progress")));
    }
    let _ = write!(out, "<p class=\"meta\">{}</p>", esc(&t(lang, "as_of_rule")));
    if bases {
        let colon = if lang == Lang::Zh { "：" } else { ": " };
        // Each basis once, with the indicators on it.
        let _ = write!(out, "<p class=\"meta\">{}{colon}</p><ul class=\"meta\">", esc(&t(lang, "area_basis")));
        for b in [crate::registry::AreaBasis::Statistics, crate::registry::AreaBasis::Quota] {
            let on: Vec<&str> = crate::registry::Indicator::ALL.iter().filter(|i| i.area_basis() == Some(b)).map(|i| labels::indicator(lang, *i)).collect();
            let _ = match lang {
                Lang::Zh => write!(out, "<li>{}（适用于：{}）</li>", esc(b.name_zh()), esc(&on.join("、"))),
                Lang::En => write!(out, "<li>{} (for: {})</li>", esc(b.name_en()), esc(&on.join(", "))),
            };
        }
        out.push_str("</ul>");
    }
    out.push_str("</header>\n");
    out
}

/// The title of a document of `year`: 2025年度节能执行情况报告 in zh, "2025 Annual ..." in en.
pub fn doc_title(lang: Lang, key: &str, year: i32) -> String {
    match (lang, key) {
        (Lang::Zh, "annual") => format!("{year}年度节能执行情况报告"),
        (Lang::Zh, "assessment") => format!("{year}年度节能目标责任考核"),
        (Lang::Zh, "plan") => format!("{year}年度运行保障计划（节能部分）"),
        (Lang::Zh, "statistics") => format!("{year}年度公共机构能源资源消费统计报表"),
        _ => format!("{year} {}", t(lang, key)),
    }
}

/// `2025年` in zh, `2025` in en.
pub fn year_text(lang: Lang, y: i32) -> String {
    match lang {
        Lang::Zh => format!("{y}年"),
        Lang::En => y.to_string(),
    }
}

/// An agency in a heading: its name and scope (the id too in English).
fn agency_heading(lang: Lang, name: &str, scope: &str, id: &str) -> String {
    match lang {
        Lang::Zh => format!("{}<small>（{}）</small>", esc(name), esc(scope)),
        Lang::En => format!("{} <small>({} · {})</small>", esc(name), esc(scope), esc(id)),
    }
}

pub fn annual(r: &AnnualReport, lang: Lang, sign: &super::model::Signature) -> String {
    let title = doc_title(lang, "annual", r.year);
    let mut out = page_start(lang, &title);
    out.push_str(&doc_head(
        lang,
        &title,
        &[
            ("as_of", labels::date(lang, &r.as_of)),
            ("timezone", labels::timezone(lang, &r.timezone)),
            ("basis", labels::basis(lang, &r.electricity_basis)),
        ],
        r.in_progress,
        true,
    ));
    for e in &r.entries {
        let one = AnnualReport { entries: vec![e.clone()], ..r.clone() };
        let tbs = tables::annual(&one, lang);
        let scope = t(lang, &format!("scope_{}", scope_name(e.scope)));
        let _ = writeln!(out, "<section id=\"{}-{}\">", esc(scope_name(e.scope)), esc(&e.agency));
        let heading = format!("<h2>{}</h2>", agency_heading(lang, &e.name, &scope, &e.agency));
        if let Some(tb) = tbs.first() {
            out.push_str(&table_with_heading(tb, &["scope", "agency", "name", "indicator_key"], &heading));
        }
        let bc = band_chart(lang, e);
        if !bc.is_empty() {
            let _ = writeln!(out, "<div class=\"keep\"><h3>{}</h3>{bc}</div>", esc(&t(lang, "chart_band")));
        }
        let _ = writeln!(out, "<div class=\"keep\"><h3>{}</h3>{}</div>", esc(&t(lang, "chart_monthly")), monthly_chart(lang, e));
        if let Some(tb) = tbs.get(1) {
            out.push_str(&table_with_heading(tb, &["scope", "agency"], &format!("<h3>{}</h3>", esc(&tb.title))));
        }
        if let Some(tb) = tbs.get(2) {
            let last = std::ptr::eq(e, r.entries.last().unwrap_or(e));
            let tail = if last { signature_html(lang, sign) } else { String::new() };
            out.push_str(&table_with(tb, &["scope", "agency", "name"], &format!("<h3>{}</h3>", esc(&tb.title)), &tail));
        }
        out.push_str("</section>\n");
    }
    if r.entries.is_empty() {
        out.push_str(&signature_html(lang, sign));
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

pub fn assessment(a: &Assessment, lang: Lang, sign: &super::model::Signature) -> String {
    let title = doc_title(lang, "assessment", a.year);
    let mut out = page_start(lang, &title);
    out.push_str(&doc_head(lang, &title, &[("as_of", labels::date(lang, &a.as_of)), ("timezone", labels::timezone(lang, &a.timezone))], a.in_progress, true));
    let tbs = tables::assessment(a, lang);
    let _ = writeln!(out, "<section><div class=\"keep\"><h2>{}</h2>{}</div>", esc(&t(lang, "chart_ranking")), ranking_chart(lang, a));
    if let Some(tb) = tbs.first() {
        out.push_str(&table_html(tb, &["points", "max_points", "reasons"]));
    }
    out.push_str("</section>\n");
    let _ = writeln!(out, "<section><h2>{}</h2>", esc(&t(lang, "reasons")));
    for s in &a.agencies {
        let reasons = tables::reasons(lang, s);
        let name = match lang {
            Lang::Zh => esc(&s.name),
            Lang::En => format!("{} ({})", esc(&s.name), esc(&s.agency)),
        };
        let _ = write!(out, "<div class=\"keep\"><h3>{}. {name}</h3>", s.rank.map_or("–".to_string(), |r| r.to_string()));
        if reasons.is_empty() {
            out.push_str("<p>–</p>");
        } else {
            out.push_str("<ul>");
            for r in reasons {
                let _ = write!(out, "<li>{}</li>", esc(&r));
            }
            out.push_str("</ul>");
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
    let rest: Vec<&Table> = tbs.iter().skip(1).collect();
    for (i, tb) in rest.iter().enumerate() {
        let tail = if i + 1 == rest.len() { signature_html(lang, sign) } else { String::new() };
        let _ = writeln!(out, "<section>{}</section>", table_with(tb, &["reason"], &format!("<h2>{}</h2>", esc(&tb.title)), &tail));
    }
    if rest.is_empty() {
        out.push_str(&signature_html(lang, sign));
    }
    out.push_str("</body></html>\n");
    out
}

pub fn plan(p: &EnergyPlan, lang: Lang) -> String {
    let title = doc_title(lang, "plan", p.year);
    let mut out = page_start(lang, &title);
    out.push_str(&doc_head(
        lang,
        &title,
        &[
            ("plan_year", year_text(lang, p.year)),
            ("last_full_year", year_text(lang, p.last_full_year)),
            ("as_of", labels::date(lang, &p.as_of)),
            ("timezone", labels::timezone(lang, &p.timezone)),
        ],
        false,
        true,
    ));
    let tbs = tables::plan(p, lang);
    // Summary first, then audits, targets, budget.
    for i in [3usize, 1, 0, 2] {
        if let Some(tb) = tbs.get(i) {
            let skip: &[&str] = if i == 0 { &["indicator_key"] } else { &[] };
            let _ = writeln!(out, "<section>{}</section>", table_with_heading(tb, skip, &format!("<h2>{}</h2>", esc(&tb.title))));
        }
    }
    let notes: Vec<String> = p.agencies.iter().flat_map(|a| a.notes.iter().map(move |n| format!("{}{}{}", a.name, if lang == Lang::Zh { "：" } else { ": " }, labels::note(lang, n)))).collect();
    if !notes.is_empty() {
        let _ = write!(out, "<section><div class=\"keep\"><h2>{}</h2><ul>", esc(&t(lang, "notes")));
        for n in notes {
            let _ = write!(out, "<li>{}</li>", esc(&n));
        }
        out.push_str("</ul></div></section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// The statistics forms, one section each, laid out as the forms (title, the system and its
/// authorities, the year, the columns' numbers), then the signature block.
pub fn statistics(r: &super::statistics::StatisticsReport, lang: Lang, sign: &super::model::Signature) -> String {
    let title = doc_title(lang, "statistics", r.year);
    let mut out = page_start(lang, &title);
    out.push_str(&doc_head(lang, &title, &[("as_of", labels::date(lang, &r.as_of)), ("timezone", labels::timezone(lang, &r.timezone))], false, false));
    let forms = super::statistics::tables(r, lang);
    for (i, tb) in forms.iter().enumerate() {
        let tail = if i + 1 == forms.len() { signature_html(lang, sign) } else { String::new() };
        let _ = writeln!(out, "<section>{}</section>", table_with(tb, &[], "", &tail));
    }
    out.push_str("</body></html>\n");
    out
}

/// The bureau's page: whether each agency can be scored in the assessment of `a.year`, and why
/// not (no data, incomplete data, nothing to score), with its score and grade.
pub fn scoring_section(lang: Lang, a: &Assessment) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section id=\"scoring\"><h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        esc(&doc_title(lang, "assessment", a.year)),
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
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td{cls}>{}</td></tr>",
            // No agency ids in Chinese.
            match lang {
                Lang::Zh => esc(&s.name),
                Lang::En => format!("{} ({})", esc(&s.name), esc(&s.agency)),
            },
            s.score.map_or("–".to_string(), fmt),
            esc(&grade),
            esc(&why)
        );
    }
    out.push_str("</tbody></table></section>\n");
    out
}
