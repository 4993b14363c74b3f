//! Reports: the annual execution report (energy part), the assessment, and the energy-saving
//! section of next year's plan, in JSON, CSV, XLSX and printable HTML (docs/registry.md, "Reports").
//!
//! * [`model`]: the documents, pure functions of the engine's results (year semantics there).
//! * [`tables`], [`render`], [`html`]: the formats; [`labels`]: the words, Chinese by default.
//! * [`produce`]: asks the engine for the figures a document needs and renders it. The API and
//!   the CLI (`energyd report`) both call it, so that they give the same bytes: figures run to
//!   the start of a local day (`as_of`, by default today; a past year runs to its end), and no
//!   document embeds a time finer than that day.

pub mod html;
pub mod items;
pub mod labels;
pub mod model;
pub mod mv;
pub mod mv_report;
pub mod public;
pub mod render;
pub mod statistics;
pub mod tables;

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;

use crate::accounting::engine::{Engine, EngineError};
use crate::accounting::indicators::AgencyIndicators;
use crate::registry::{scope_members, Agency, Registry, Scope};
use crate::store::Store;
pub use labels::Lang;
use model::{EntryInput, Monthly};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A parameter is wrong (the message names it).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Render(String),
    #[error(transparent)]
    Xlsx(#[from] render::XlsxError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Annual,
    Assessment,
    Plan,
    /// The statistics forms of 公共机构能源资源消费统计调查制度 ([`statistics`]).
    Statistics,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "annual" => Ok(Kind::Annual),
            "assessment" => Ok(Kind::Assessment),
            "plan" => Ok(Kind::Plan),
            "statistics" => Ok(Kind::Statistics),
            _ => Err(format!("report `{s}` is not one of annual, assessment, plan, statistics")),
        }
    }
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Annual => "annual",
            Kind::Assessment => "assessment",
            Kind::Plan => "plan",
            Kind::Statistics => "statistics",
        }
    }
    /// The year asked by default on `today`: last year for the annual report and the
    /// assessment (the year whose reports are due), next year for the plan.
    pub fn default_year(self, today: NaiveDate) -> i32 {
        match self {
            Kind::Plan => today.year() + 1,
            _ => today.year() - 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Xlsx,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "xlsx" => Ok(Format::Xlsx),
            "html" => Ok(Format::Html),
            _ => Err(format!("format `{s}` is not one of json, csv, xlsx, html")),
        }
    }
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Html => "html",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

/// Which agencies the caller may see. The security branch's authentication decides it per
/// principal (an agency-role principal sees its own agency only); without it, everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Visible {
    #[default]
    All,
    Only(Vec<String>),
}

impl Visible {
    /// The hook for authentication: the agencies a caller may see.
    pub fn agencies(ids: Vec<String>) -> Visible {
        Visible::Only(ids)
    }
    /// The one agency a caller may see (an agency user), if so.
    pub fn single(&self) -> Option<&str> {
        match self {
            Visible::Only(ids) if ids.len() == 1 => Some(ids[0].as_str()),
            _ => None,
        }
    }
    pub fn allows(&self, agency: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(ids) => ids.iter().any(|i| i == agency),
        }
    }
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// Annual, assessment: the year reported; plan: the plan year. `None`: [`Kind::default_year`].
    pub year: Option<i32>,
    pub format: Format,
    pub lang: Lang,
    /// Annual report only: one agency (and its aggregates when it is a bureau).
    pub agency: Option<String>,
    /// `YYYY-MM-DD` (or an RFC 3339 time, taken as its local day): figures run to the start of
    /// that day. Default: today.
    pub as_of: Option<String>,
}

/// A rendered document.
#[derive(Debug, Clone)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub filename: String,
    pub format: Format,
}

impl Output {
    /// `Content-Disposition`: downloads for CSV and XLSX, shown in the browser otherwise.
    pub fn disposition(&self) -> String {
        let how = if matches!(self.format, Format::Csv | Format::Xlsx) { "attachment" } else { "inline" };
        format!("{how}; filename=\"{}\"", self.filename)
    }
}

pub use crate::time::today;

/// The day figures run to (its start): `as_of` when given, else `today`
/// ([`crate::time::as_of_cut`], the one rule of the API, the page and the reports).
pub fn as_of_day(tz: Tz, as_of: Option<&str>, today: NaiveDate) -> Result<NaiveDate, ReportError> {
    crate::time::as_of_cut(tz, today, as_of).map(|(d, _)| d).map_err(|e| ReportError::BadRequest(format!("as_of: {e}")))
}

fn midnight_ms(tz: Tz, d: NaiveDate) -> Result<i64, ReportError> {
    Ok(crate::time::day_start(tz, d).timestamp_millis())
}

/// For `year` seen from `as_of`: the day its figures run to (the year's end at the latest) and
/// that instant. A year that has not started is refused.
/// The local start of `year`, in milliseconds.
pub fn year_start_ms(tz: Tz, year: i32) -> Result<i64, ReportError> {
    let start = NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(|| ReportError::BadRequest(format!("year {year}")))?;
    midnight_ms(tz, start)
}

pub fn year_cut(tz: Tz, year: i32, as_of: NaiveDate) -> Result<(NaiveDate, i64), ReportError> {
    if !(1971..=2199).contains(&year) {
        return Err(ReportError::BadRequest(format!("year {year} is outside 1971-2199")));
    }
    let start = NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(|| ReportError::BadRequest(format!("year {year}")))?;
    let end = NaiveDate::from_ymd_opt(year + 1, 1, 1).ok_or_else(|| ReportError::BadRequest(format!("year {year}")))?;
    if as_of <= start {
        return Err(ReportError::BadRequest(format!("year {year} has no figures yet as of {as_of}: it has not started")));
    }
    let day = as_of.min(end);
    Ok((day, midnight_ms(tz, day)?))
}

fn monthly(year: &crate::accounting::engine::YearData, reg: &Registry, scope: &[&str], days: usize) -> [f64; 12] {
    let mut m = [0.0; 12];
    for (key, s) in year.groups(scope) {
        let k = reg.kgce_per_unit(key.0, key.2);
        for (d, v) in s.value.iter().enumerate().take(days) {
            m[usize::from(year.cal.day_month[d])] += v * k;
        }
    }
    m
}

/// The entries of the annual report: every visible agency (or the one asked), then the
/// aggregates (本级, 全辖) of each bureau among them.
pub async fn annual_inputs(
    engine: &Engine,
    store: &Store,
    reg: &Registry,
    year: i32,
    now_ms: i64,
    agency: Option<&str>,
    visible: &Visible,
) -> Result<Vec<EntryInput>, ReportError> {
    let agencies: Vec<&Agency> = match agency {
        Some(id) => {
            let a = reg.agency(id).filter(|a| visible.allows(&a.id)).ok_or_else(|| ReportError::NotFound(format!("agency `{id}` is not in the registry")))?;
            vec![a]
        }
        None => reg.file.agencies.iter().filter(|a| visible.allows(&a.id)).collect(),
    };
    let mut list: Vec<(&Agency, Scope)> = agencies.iter().map(|a| (*a, Scope::Agency)).collect();
    for a in &agencies {
        if model::is_bureau(reg, &a.id) {
            list.push((a, Scope::Level));
            list.push((a, Scope::Tree));
        }
    }
    let scoped: Vec<(&Agency, Vec<&str>)> = list.iter().map(|(a, s)| (*a, scope_members(reg, a, *s))).collect();
    let figures = engine.indicators(store, reg, year, now_ms, &scoped).await?;
    let this = engine.year(store, reg, year).await?;
    let last = engine.year(store, reg, year - 1).await?;
    let days = this.cal.days_before(now_ms);
    let mut out = Vec::new();
    for (((_, scope), (_, members)), f) in list.iter().zip(&scoped).zip(figures) {
        out.push(EntryInput {
            scope: *scope,
            members: members.iter().map(|m| m.to_string()).collect(),
            monthly: Monthly { this_year_kgce: monthly(&this, reg, members, days), last_year_kgce: monthly(&last, reg, members, last.cal.days()) },
            figures: f,
        });
    }
    Ok(out)
}

/// The electricity of each data-centre room of the registry in `year` to `now_ms`, kWh: the
/// sum of its meters' consumption, or, for a room without meters, the electricity of end use
/// `data_centre` of its agency when the agency has that one room (else unknown).
pub async fn room_inputs(engine: &Engine, store: &Store, reg: &Registry, year: i32, now_ms: i64) -> Result<Vec<statistics::RoomInput>, ReportError> {
    if reg.file.data_centres.is_empty() {
        return Ok(Vec::new());
    }
    let this = engine.year(store, reg, year).await?;
    let days = this.cal.days_before(now_ms);
    Ok(reg
        .file
        .data_centres
        .iter()
        .map(|r| {
            let kwh = if !r.meters.is_empty() {
                Some(this.contributions.iter().filter(|c| r.meters.contains(&c.meter)).map(|c| c.series.sum(0, days)).sum())
            } else if reg.file.data_centres.iter().filter(|x| x.agency == r.agency).count() == 1 {
                Some(
                    this.groups(&[r.agency.as_str()])
                        .iter()
                        .filter(|(k, _)| k.0 == energy_wire::Carrier::Electricity && k.1 == crate::registry::EndUse::DataCentre)
                        .map(|(_, s)| s.sum(0, days))
                        .sum(),
                )
            } else {
                None
            };
            statistics::RoomInput { room: r.id.clone(), kwh }
        })
        .collect())
}

/// Every agency's own figures of `year` to `now_ms`.
pub async fn own_figures(engine: &Engine, store: &Store, reg: &Registry, year: i32, now_ms: i64) -> Result<Vec<AgencyIndicators>, ReportError> {
    let list: Vec<(&Agency, Vec<&str>)> = reg.file.agencies.iter().map(|a| (a, vec![a.id.as_str()])).collect();
    Ok(engine.indicators(store, reg, year, now_ms, &list).await?)
}

/// Builds and renders the document asked.
pub async fn produce(engine: &Engine, store: &Store, reg: &Registry, tz: Tz, req: &Request, today: NaiveDate, visible: &Visible) -> Result<Output, ReportError> {
    let as_of = as_of_day(tz, req.as_of.as_deref(), today)?;
    let year = req.year.unwrap_or_else(|| req.kind.default_year(today));
    if req.agency.is_some() && req.kind != Kind::Annual {
        return Err(ReportError::BadRequest(format!("agency: only the annual report is per agency; the {} covers every agency", req.kind.as_str())));
    }
    let tzname = tz.name();
    let fmt = req.format;
    let lang = req.lang;
    let mut name = format!("{}-{year}", req.kind.as_str());
    if let Some(a) = &req.agency {
        name.push('-');
        name.push_str(a);
    }
    let bytes = match req.kind {
        Kind::Annual => {
            let (day, ms) = year_cut(tz, year, as_of)?;
            let inputs = annual_inputs(engine, store, reg, year, ms, req.agency.as_deref(), visible).await?;
            let r = model::annual(reg, year, &day.to_string(), tzname, inputs);
            let title = html::doc_title(lang, "annual", year);
            // A caller who sees one agency (an agency user) gets its report, signed by it.
            let sign = model::signature(reg, req.agency.as_deref().or(visible.single()));
            render_any(fmt, lang, &r, || with_signature(lang, tables::annual(&r, lang), &sign), || html::annual(&r, lang, &sign), &title, day)?
        }
        Kind::Assessment => {
            let (day, ms) = year_cut(tz, year, as_of)?;
            let figures = own_figures(engine, store, reg, year, ms).await?;
            let normalised = mv::normalised_figures(engine, store, reg, tz, year, ms).await.map_err(|e| ReportError::Render(e.to_string()))?;
            let figures = if reg.file.assessment.score_on == crate::registry::ScoreBasis::WeatherNormalised { mv::scored_normalised(figures, &normalised) } else { figures };
            let mut a = model::assessment(&reg.file.assessment, year, &day.to_string(), tzname, &figures);
            a.weather_normalised = normalised.into_iter().filter(|f| visible.allows(&f.agency)).collect();
            a.agencies.retain(|s| visible.allows(&s.agency));
            // A reader of some agencies sees an average only where it covers enough others.
            if let Visible::Only(own) = visible {
                model::withhold_averages(&mut a, own);
            }
            let title = html::doc_title(lang, "assessment", year);
            let sign = model::signature(reg, None);
            let extra = || mv_report::normalised_tables(&a.weather_normalised, &[], lang);
            render_any(
                fmt,
                lang,
                &a,
                || with_signature(lang, tables::assessment(&a, lang), &sign).into_iter().chain(extra()).collect(),
                || mv_report::with_tables(html::assessment(&a, lang, &sign), &extra()),
                &title,
                day,
            )?
        }
        Kind::Statistics => {
            let (day, ms) = year_cut(tz, year, as_of)?;
            let figures: Vec<AgencyIndicators> = own_figures(engine, store, reg, year, ms).await?.into_iter().filter(|f| visible.allows(&f.agency)).collect();
            let rooms = room_inputs(engine, store, reg, year, ms).await?;
            let r = statistics::statistics(reg, year, &day.to_string(), tzname, &figures, &rooms);
            let title = html::doc_title(lang, "statistics", year);
            // An agency's own forms (a caller who sees one agency) carry its signature block.
            let sign = model::signature(reg, visible.single());
            render_any(fmt, lang, &r, || with_signature(lang, statistics::tables(&r, lang), &sign), || html::statistics(&r, lang, &sign), &title, day)?
        }
        Kind::Plan => {
            let (day, ms) = year_cut(tz, year - 1, as_of)?;
            let current = own_figures(engine, store, reg, year - 1, ms).await?;
            let (_, last_ms) = year_cut(tz, year - 2, as_of)?;
            let last_full = own_figures(engine, store, reg, year - 2, last_ms).await?;
            let current: Vec<AgencyIndicators> = current.into_iter().filter(|f| visible.allows(&f.agency)).collect();
            let mut p = model::plan(reg, year, &day.to_string(), tzname, &current, &last_full);
            let normalised: Vec<mv::NormalisedFigure> =
                mv::normalised_figures(engine, store, reg, tz, year - 1, ms).await.map_err(|e| ReportError::Render(e.to_string()))?.into_iter().filter(|f| visible.allows(&f.agency)).collect();
            let areas = current.iter().map(|f| (f.agency.clone(), f.floor_area)).collect();
            let audit: Vec<String> = p.agencies.iter().filter(|a| a.audit_required).map(|a| a.agency.clone()).collect();
            p.retrofit_ranking = mv::rank_retrofits(&normalised, &areas, &audit);
            p.weather_normalised = normalised;
            let title = html::doc_title(lang, "plan", year);
            let extra = || mv_report::normalised_tables(&p.weather_normalised, &p.retrofit_ranking, lang);
            render_any(fmt, lang, &p, || tables::plan(&p, lang).into_iter().chain(extra()).collect(), || mv_report::with_tables(html::plan(&p, lang), &extra()), &title, day)?
        }
    };
    Ok(Output { bytes, content_type: fmt.content_type(), filename: format!("{name}.{}", fmt.as_str()), format: fmt })
}

/// The signature lines under the first table of a workbook (CSV has the rows only).
fn with_signature(lang: Lang, mut tables: Vec<tables::Table>, s: &model::Signature) -> Vec<tables::Table> {
    let colon = if lang == Lang::Zh { "：" } else { ": " };
    let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "________".into());
    if let Some(t) = tables.first_mut() {
        t.footer.push(format!("{}{}{colon}{}", labels::t(lang, "sign_unit"), labels::t(lang, "sign_seal"), v(&s.unit)));
        t.footer.push(format!(
            "{}{colon}{}　{}{colon}{}　{}{colon}{}　{}{colon}",
            labels::t(lang, "sign_responsible"),
            v(&s.responsible),
            labels::t(lang, "sign_filler"),
            v(&s.filler),
            labels::t(lang, "sign_phone"),
            v(&s.phone),
            labels::t(lang, "sign_date"),
        ));
    }
    tables
}

/// The columns that are codes for programs, left out of the documents a person reads (XLSX,
/// HTML); CSV keeps them.
const PROGRAM_COLUMNS: [&str; 1] = ["indicator_key"];

#[allow(clippy::too_many_arguments)] // the model and its renderings
fn render_any<T: serde::Serialize>(
    fmt: Format,
    lang: Lang,
    model: &T,
    tables: impl FnOnce() -> Vec<tables::Table>,
    html: impl FnOnce() -> String,
    title: &str,
    day: NaiveDate,
) -> Result<Vec<u8>, ReportError> {
    match fmt {
        Format::Json => {
            let mut v = serde_json::to_vec_pretty(model).map_err(|e| ReportError::Render(format!("encoding JSON: {e}")))?;
            v.push(b'\n');
            Ok(v)
        }
        Format::Csv => Ok(tables().first().map(render::csv).unwrap_or_default()),
        Format::Xlsx => {
            let tables: Vec<tables::Table> = tables().iter().map(|t| t.without(&PROGRAM_COLUMNS)).collect();
            Ok(render::xlsx(title, day, &tables, lang)?)
        }
        Format::Html => Ok(html().into_bytes()),
    }
}

/// Art. 39 deadlines of `year` (default: last year) and what each visible agency is missing.
#[allow(clippy::too_many_arguments)] // the sources of `produce`, plus the two parameters of the endpoint
pub async fn deadlines(
    engine: &Engine,
    store: &Store,
    reg: &Registry,
    tz: Tz,
    year: Option<i32>,
    as_of: Option<&str>,
    today: NaiveDate,
    visible: &Visible,
) -> Result<model::Deadlines, ReportError> {
    let as_of = as_of_day(tz, as_of, today)?;
    let year = year.unwrap_or(today.year() - 1);
    let (_, ms) = year_cut(tz, year, as_of)?;
    let figures: Vec<AgencyIndicators> = own_figures(engine, store, reg, year, ms).await?.into_iter().filter(|f| visible.allows(&f.agency)).collect();
    Ok(model::deadlines(reg, year, as_of, &figures))
}


/// Why `energyd report` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("writing to standard output: {0}")]
    Stdout(std::io::Error),
    #[error("{}: {source}", path.display())]
    Write { path: std::path::PathBuf, source: std::io::Error },
}

/// `energyd report`: opens the store of `data_dir` (beside a running daemon for reading only:
/// the report then holds what the daemon has flushed, which the API's reads make current),
/// produces the report as the API would today, writes it to `out` (`-`: standard
/// output).
pub async fn write_offline(data_dir: &std::path::Path, reg: &Registry, tz: Tz, req: &Request, out: &std::path::Path) -> Result<(), OfflineError> {
    let store = crate::store::open_or_read(data_dir, crate::metrics::Metrics::new())?;
    let engine = Engine::open(data_dir, reg, tz)?;
    let result = produce(&engine, &store, reg, tz, req, today(tz), &Visible::All).await;
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.close()).await;
    let output = result?;
    if out.as_os_str() == "-" {
        use std::io::Write as _;
        std::io::stdout().write_all(&output.bytes).map_err(OfflineError::Stdout)
    } else {
        std::fs::write(out, &output.bytes).map_err(|source| OfflineError::Write { path: out.to_path_buf(), source })
    }
}

#[cfg(test)]
mod tests;
