//! Public disclosure (regulation art. 40; issue 23): a summary per agency and per jurisdiction
//! (全辖) of a year — total energy, per floor area and per person, water, carbon, the change
//! against last year and the target, the retrofit and energy-performance-contract projects with
//! their verified savings — without meter-level or cost detail unless `[public]` says so. Served
//! without login at `/public` (printable HTML), `/public/data.json` and `/public/data.csv` (open
//! data), only when `[public] enabled = true` (off by default).

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::html::{esc, page_start, table_with_heading};
use super::labels::Lang;
use super::model::is_bureau;
use super::mv::{savings_of, MvRequest, MvSubject};
use super::tables::{opt, Cell, Table};
use super::{annual_inputs, year_cut, Format, Output, ReportError, Visible};
use crate::accounting::engine::Engine;
use crate::registry::{Indicator, Registry, Scope};
use crate::store::Store;

/// `[public]` of the daemon's configuration.
///
/// ```toml
/// [public]
/// enabled = true        # default false: /public answers 404
/// show_cost = false     # energy cost (yuan) and the value of savings
/// show_meters = false   # each agency's meters with their consumption
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub show_cost: bool,
    #[serde(default)]
    pub show_meters: bool,
}

/// A project's verified savings as disclosed.
#[derive(Debug, Clone, Serialize)]
pub struct PublicProject {
    pub id: String,
    pub name: String,
    pub contract: crate::registry::ContractType,
    pub reporting: String,
    pub unit: Option<&'static str>,
    pub avoided: Option<f64>,
    pub avoided_pct: Option<f64>,
    pub uncertainty_pct: Option<f64>,
    pub avoided_kgce: Option<f64>,
    pub ashrae14_pass: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avoided_money: Option<f64>,
    /// Why no verified figure (reporting period not over, data short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublicMeter {
    pub id: String,
    pub carrier: energy_wire::Carrier,
    pub unit: &'static str,
    pub consumption: f64,
}

/// One agency's or one jurisdiction's disclosed figures.
#[derive(Debug, Clone, Serialize)]
pub struct PublicRow {
    /// `agency` or `jurisdiction`.
    pub scope: &'static str,
    pub id: String,
    pub name: String,
    pub total_energy_kgce: Option<f64>,
    pub energy_per_area_kgce_m2: Option<f64>,
    pub energy_per_person_kgce: Option<f64>,
    pub water_m3: Option<f64>,
    pub carbon_t: Option<f64>,
    pub change_vs_last_year_pct: Option<f64>,
    pub target_kgce: Option<f64>,
    pub target_met: Option<bool>,
    pub projects: Vec<PublicProject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_cost_yuan: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<PublicMeter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disclosure {
    pub report: &'static str,
    pub year: i32,
    pub as_of: String,
    pub timezone: &'static str,
    pub jurisdictions: Vec<PublicRow>,
    pub agencies: Vec<PublicRow>,
}

/// The projects an agency's figures include: those with a building it occupies or a meter
/// attributed to it.
fn projects_of<'a>(reg: &'a Registry, members: &[String]) -> Vec<&'a crate::registry::Project> {
    let occupies = |b: &str| reg.building(b).is_some_and(|b| b.occupants.iter().chain(b.occupancy.iter().flat_map(|c| c.occupants.iter())).any(|o| members.contains(&o.agency)));
    reg.file
        .projects
        .iter()
        .filter(|p| p.buildings.iter().any(|b| occupies(b)) || p.meters.iter().any(|m| reg.meter(m).is_some_and(|m| occupies(&m.building) || m.agency.as_ref().is_some_and(|a| members.contains(a)))))
        .collect()
}

async fn project_figures(engine: &Engine, store: &Store, reg: &Registry, tz: Tz, p: &crate::registry::Project, as_of: NaiveDate, cfg: &PublicConfig) -> PublicProject {
    let mut out = PublicProject {
        id: p.id.clone(),
        name: p.name.clone(),
        contract: p.contract,
        reporting: p.reporting.clone(),
        unit: None,
        avoided: None,
        avoided_pct: None,
        uncertainty_pct: None,
        avoided_kgce: None,
        ashrae14_pass: None,
        avoided_money: None,
        note: None,
    };
    let Some((from, to)) = p.reporting_range() else { return out };
    if from >= as_of {
        out.note = Some("reporting period not started".into());
        return out;
    }
    // Verified so far: the reporting period up to the day before `as_of`.
    let to = to.min(as_of - chrono::Days::new(1));
    let req = MvRequest { subject: MvSubject::Project(p), baseline: None, reporting: Some((from, to)), carrier: None };
    match savings_of(store, engine, reg, tz, &req).await {
        Ok(s) => {
            out.unit = Some(s.unit);
            out.avoided = Some(s.reporting.total.avoided);
            out.avoided_pct = s.reporting.total.avoided_pct;
            out.uncertainty_pct = s.reporting.total.uncertainty_pct;
            out.avoided_kgce = s.reporting.avoided_kgce;
            out.ashrae14_pass = Some(s.fit.stats.ashrae14_pass);
            out.avoided_money = s.reporting.avoided_money.filter(|_| cfg.show_cost);
        }
        Err(e) => out.note = Some(e.to_string()),
    }
    out
}

/// The disclosure of `year` (figures to the start of `as_of`).
pub async fn disclosure(engine: &Engine, store: &Store, reg: &Registry, tz: Tz, year: i32, as_of: NaiveDate, cfg: &PublicConfig) -> Result<Disclosure, ReportError> {
    let (day, ms) = year_cut(tz, year, as_of)?;
    let inputs = annual_inputs(engine, store, reg, year, ms, None, &Visible::All).await?;
    let data = if cfg.show_meters { Some(engine.year(store, reg, year).await?) } else { None };
    let (mut jurisdictions, mut agencies) = (Vec::new(), Vec::new());
    for e in inputs {
        let f = &e.figures;
        let scope = match e.scope {
            Scope::Agency => "agency",
            Scope::Tree => "jurisdiction",
            _ => continue,
        };
        // A jurisdiction is a bureau's whole tree; an agency's own row.
        if scope == "jurisdiction" && !is_bureau(reg, &f.agency) {
            continue;
        }
        let val = |i: Indicator| f.get(i).and_then(|v| v.value);
        let total = f.get(Indicator::TotalEnergy);
        let mut projects = Vec::new();
        for p in projects_of(reg, &e.members) {
            projects.push(project_figures(engine, store, reg, tz, p, day, cfg).await);
        }
        let meters = match (&data, scope) {
            (Some(y), "agency") => {
                let days = y.cal.days_before(ms);
                let mut by: std::collections::BTreeMap<(String, energy_wire::Carrier), f64> = Default::default();
                for c in y.contributions.iter().filter(|c| c.agency == f.agency) {
                    *by.entry((c.meter.clone(), c.carrier)).or_default() += c.series.sum(0, days);
                }
                by.into_iter()
                    .map(|((id, carrier), consumption)| PublicMeter { unit: reg.meter(&id).map_or(carrier.counter().unit(), |m| m.counter().unit()), id, carrier, consumption })
                    .collect()
            }
            _ => Vec::new(),
        };
        let row = PublicRow {
            scope,
            id: f.agency.clone(),
            name: f.name.clone(),
            total_energy_kgce: total.and_then(|v| v.value),
            energy_per_area_kgce_m2: val(Indicator::EnergyPerBuildingArea),
            energy_per_person_kgce: val(Indicator::EnergyPerPerson),
            water_m3: val(Indicator::WaterTotal),
            carbon_t: val(Indicator::CarbonTotal),
            change_vs_last_year_pct: total.and_then(|v| v.change_pct),
            target_kgce: total.and_then(|v| v.target.as_ref()).map(|t| t.value),
            target_met: total.and_then(|v| v.target.as_ref()).map(|t| t.met),
            projects,
            energy_cost_yuan: val(Indicator::EnergyCost).filter(|_| cfg.show_cost),
            meters,
        };
        if scope == "agency" {
            agencies.push(row);
        } else {
            jurisdictions.push(row);
        }
    }
    Ok(Disclosure { report: "public", year, as_of: day.to_string(), timezone: tz.name(), jurisdictions, agencies })
}

fn w(lang: Lang, zh: &str, en: &str) -> String {
    match lang {
        Lang::Zh => zh.into(),
        Lang::En => en.into(),
    }
}

/// The open-data table: one row per jurisdiction and agency.
pub fn table(d: &Disclosure, lang: Lang, cfg: &PublicConfig) -> Table {
    let mut cols: Vec<(&'static str, String)> = vec![
        ("scope", w(lang, "范围", "Scope")),
        ("id", w(lang, "代码", "ID")),
        ("name", w(lang, "名称", "Name")),
        ("total_energy_kgce", w(lang, "综合能耗（kgce）", "Total energy (kgce)")),
        ("energy_per_area_kgce_m2", w(lang, "单位建筑面积能耗（kgce/m²）", "Energy per floor area (kgce/m²)")),
        ("energy_per_person_kgce", w(lang, "人均综合能耗（kgce/人）", "Energy per person (kgce)")),
        ("water_m3", w(lang, "用水量（m³）", "Water (m³)")),
        ("carbon_t", w(lang, "二氧化碳排放（tCO2）", "Carbon (tCO2)")),
        ("change_vs_last_year_pct", w(lang, "综合能耗同比（%）", "Energy change vs last year (%)")),
        ("target_kgce", w(lang, "综合能耗目标（kgce）", "Energy target (kgce)")),
        ("target_met", w(lang, "是否完成目标", "Target met")),
        ("projects", w(lang, "节能项目数", "Projects")),
        ("verified_savings_kgce", w(lang, "经验证节能量（kgce）", "Verified savings (kgce)")),
    ];
    if cfg.show_cost {
        cols.push(("energy_cost_yuan", w(lang, "能源费用（元）", "Energy cost (yuan)")));
    }
    let mut t = Table { key: "public", title: w(lang, "公共机构能源资源消费信息公开", "Public disclosure of energy use"), ..Table::default() };
    t.keys = cols.iter().map(|c| c.0).collect();
    t.headers = cols.into_iter().map(|c| c.1).collect();
    for (r, scope_zh) in d.jurisdictions.iter().map(|r| (r, w(lang, "全辖", "jurisdiction"))).chain(d.agencies.iter().map(|r| (r, w(lang, "单位", "agency")))) {
        let verified: f64 = r.projects.iter().filter(|p| p.ashrae14_pass == Some(true)).filter_map(|p| p.avoided_kgce).sum();
        let mut row = vec![
            Cell::Text(scope_zh),
            Cell::Text(r.id.clone()),
            Cell::Text(r.name.clone()),
            opt(r.total_energy_kgce),
            opt(r.energy_per_area_kgce_m2),
            opt(r.energy_per_person_kgce),
            opt(r.water_m3),
            opt(r.carbon_t),
            opt(r.change_vs_last_year_pct),
            opt(r.target_kgce),
            Cell::Text(r.target_met.map_or_else(|| "–".into(), |m| if m { w(lang, "是", "yes") } else { w(lang, "否", "no") })),
            Cell::Int(Some(r.projects.len() as i64)),
            opt(Some(verified)),
        ];
        if cfg.show_cost {
            row.push(Cell::Money(r.energy_cost_yuan));
        }
        if r.scope == "jurisdiction" {
            t.push_total(row);
        } else {
            t.rows.push(row);
        }
    }
    t
}

fn projects_table(d: &Disclosure, lang: Lang, cfg: &PublicConfig) -> Table {
    let mut cols = vec![
        ("agency", w(lang, "单位", "Agency")),
        ("project", w(lang, "项目", "Project")),
        ("contract", w(lang, "类型", "Type")),
        ("reporting", w(lang, "报告期", "Reporting period")),
        ("avoided", w(lang, "节能量", "Avoided")),
        ("unit", w(lang, "单位", "Unit")),
        ("avoided_pct", w(lang, "节能率（%）", "Savings (%)")),
        ("uncertainty_pct", w(lang, "不确定度（%，90 % 置信）", "Uncertainty (%, 90 %)")),
        ("verified", w(lang, "符合 ASHRAE 14", "ASHRAE 14")),
    ];
    if cfg.show_cost {
        cols.push(("money", w(lang, "节能效益（元）", "Value (yuan)")));
    }
    let mut t = Table { key: "public_projects", title: w(lang, "节能改造与合同能源管理项目", "Retrofit and EPC projects"), ..Table::default() };
    t.keys = cols.iter().map(|c| c.0).collect();
    t.headers = cols.into_iter().map(|c| c.1).collect();
    for r in &d.agencies {
        for p in &r.projects {
            let mut row = vec![
                Cell::Text(r.name.clone()),
                Cell::Text(p.name.clone()),
                Cell::Text(if lang == Lang::Zh { p.contract.zh().to_string() } else { p.contract.as_str().replace('_', " ") }),
                Cell::Text(p.reporting.clone()),
                opt(p.avoided),
                Cell::Text(p.unit.unwrap_or("–").to_string()),
                opt(p.avoided_pct),
                opt(p.uncertainty_pct),
                Cell::Text(match p.ashrae14_pass {
                    Some(true) => w(lang, "符合", "pass"),
                    Some(false) => w(lang, "不符合", "fail"),
                    None => w(lang, "尚无验证结果", "not yet verified"),
                }),
            ];
            if cfg.show_cost {
                row.push(Cell::Money(p.avoided_money));
            }
            t.rows.push(row);
        }
    }
    t
}

/// The disclosure as a document.
pub fn render(d: &Disclosure, format: Format, lang: Lang, cfg: &PublicConfig) -> Result<Output, ReportError> {
    let bytes = match format {
        Format::Json => {
            let mut v = serde_json::to_vec_pretty(d).map_err(|e| ReportError::Render(e.to_string()))?;
            v.push(b'\n');
            v
        }
        Format::Csv => super::render::csv(&table(d, lang, cfg)),
        Format::Xlsx => super::render::xlsx(&title(d, lang), NaiveDate::from_ymd_opt(d.year, 12, 31).unwrap_or_default(), &[table(d, lang, cfg), projects_table(d, lang, cfg)], lang)?,
        Format::Html => {
            let mut h = page_start(lang, &title(d, lang));
            h.push_str(&format!("<h1>{}</h1>\n", esc(&title(d, lang))));
            let note = match lang {
                Lang::Zh => format!("数据截至 {}（{}）。依据《公共机构节能条例》第四十条公开；不含计量器具明细{}。开放数据：", d.as_of, d.timezone, if cfg.show_cost { "" } else { "和费用" }),
                Lang::En => format!("Figures to {} ({}). Disclosed under art. 40; no meter-level{} detail. Open data: ", d.as_of, d.timezone, if cfg.show_cost { "" } else { " or cost" }),
            };
            h.push_str(&format!("<p class=\"meta\">{}<a href=\"/public/data.csv?year={y}\">CSV</a> <a href=\"/public/data.json?year={y}\">JSON</a></p>\n", esc(&note), y = d.year));
            h.push_str(&table_with_heading(&table(d, lang, cfg), &["id"], &w(lang, "能源资源消费概况", "Energy and water use")));
            let pt = projects_table(d, lang, cfg);
            if !pt.rows.is_empty() {
                h.push_str(&table_with_heading(&pt, &[], &pt.title));
            }
            h.push_str("</body></html>\n");
            h.into_bytes()
        }
    };
    Ok(Output { bytes, content_type: format.content_type(), filename: format!("public-{}.{}", d.year, format.as_str()), format })
}

fn title(d: &Disclosure, lang: Lang) -> String {
    match lang {
        Lang::Zh => format!("{} 年度公共机构能源资源消费信息公开", d.year),
        Lang::En => format!("Public disclosure of energy and water use, {}", d.year),
    }
}

/// The default year disclosed: the last full year.
pub fn default_year(today: NaiveDate) -> i32 {
    today.year() - 1
}
