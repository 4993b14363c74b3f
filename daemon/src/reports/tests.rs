//! The fixed scenario of `daemon/tests/golden/reports/registry.toml` (constant hourly
//! consumption over 2024 and 2025), every key figure worked out by hand; golden files for CSV
//! and JSON (`UPDATE_GOLDEN=1` rewrites them); the XLSX read back with calamine.

use std::path::PathBuf;

use chrono::NaiveDate;

use super::model::{self, AgencyScore};
use super::*;
use crate::accounting::indicators::BandClass;
use crate::registry::{AssessmentRules, Indicator};
use crate::store::Point;

const REGISTRY: &str = include_str!("../../tests/golden/reports/registry.toml");
const TZ: Tz = chrono_tz::Asia::Shanghai;
/// 2024-01-01T00:00:00+08:00
const START: i64 = 1_704_038_400_000;
const H: i64 = 3_600_000;
/// Hours of 2024 (leap) and 2025.
const H2024: f64 = 8784.0;
const H2025: f64 = 8760.0;
const KGCE: f64 = 0.1229;

/// (meter, kWh per hour) of the scenario.
pub(crate) const RATES: [(&str, f64); 4] = [("e1", 20.0), ("e1-edu", 4.0), ("e2", 10.0), ("e3", 3.0)];

struct Scenario {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Engine,
    reg: Registry,
}

async fn scenario() -> Scenario {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::open(dir.path(), crate::metrics::Metrics::new()).unwrap();
    let reg = Registry::parse(REGISTRY).unwrap();
    let engine = Engine::open(dir.path(), &reg, TZ).unwrap();
    let hours = (H2024 + H2025) as i64;
    for (meter, rate) in RATES {
        let points: Vec<Point> =
            (0..=hours).map(|h| Point { meter: meter.into(), quantity: energy_wire::Quantity::ActiveEnergyImport, ts: START + h * H, value: rate * h as f64 }).collect();
        for chunk in points.chunks(20_000) {
            store.write_points(chunk.to_vec()).await.unwrap();
        }
    }
    Scenario { _dir: dir, store, engine, reg }
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

async fn produce_bytes(s: &Scenario, kind: Kind, year: i32, format: Format, lang: Lang) -> Vec<u8> {
    let req = Request { kind, year: Some(year), format, lang, agency: None, as_of: None };
    produce(&s.engine, &s.store, &s.reg, TZ, &req, day("2026-01-01"), &Visible::All).await.unwrap().bytes
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

fn golden(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/reports").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1 to write it", path.display()));
    if want != bytes {
        let got = path.with_extension(format!("{}.new", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
        std::fs::write(&got, bytes).unwrap();
        panic!("{} differs from the report produced (written to {}); check it and run with UPDATE_GOLDEN=1 to accept", path.display(), got.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_of_the_fixed_scenario_match_the_figures_worked_by_hand() {
    let s = scenario().await;
    let as_of = day("2026-01-01");

    // ---- annual report 2025: five agencies, then the bureau's 本级 and 全辖.
    let (_, ms) = year_cut(TZ, 2025, as_of).unwrap();
    let inputs = annual_inputs(&s.engine, &s.store, &s.reg, 2025, ms, None, &Visible::All).await.unwrap();
    let r = model::annual(&s.reg, 2025, "2026-01-01", "Asia/Shanghai", inputs);
    let keys: Vec<(String, &str)> = r.entries.iter().map(|e| (e.agency.clone(), model::scope_name(e.scope))).collect();
    let want: Vec<(String, &str)> =
        [("bureau", "agency"), ("fin", "agency"), ("edu", "agency"), ("tax", "agency"), ("county", "agency"), ("bureau", "level"), ("bureau", "tree")]
            .iter()
            .map(|(a, s)| (a.to_string(), *s))
            .collect();
    assert_eq!(keys, want);
    assert!(!r.in_progress);
    let total = |i: usize| r.entries[i].figures.get(Indicator::TotalEnergy).and_then(|v| v.value).unwrap();
    let per_area = |i: usize| r.entries[i].figures.get(Indicator::EnergyPerArea).and_then(|v| v.value).unwrap();
    // fin: half of e1's own part (20 - 4) = 8 kWh/h.
    assert_close!(total(1), 8.0 * H2025 * KGCE);
    // edu: 8 + its sub-meter 4 = 12 kWh/h over 5000 m².
    assert_close!(per_area(2), 12.0 * H2025 * KGCE / 5000.0);
    // 本级 (bureau, fin, edu, tax): 6 + 8 + 12 + 4 = 30 kWh/h over 3000 + 5000 + 5000 + 2000 m².
    assert_close!(total(5), 30.0 * H2025 * KGCE);
    assert_close!(per_area(5), 30.0 * H2025 * KGCE / 15000.0);
    assert_eq!(r.entries[5].members, ["bureau", "fin", "edu", "tax"]);
    // 全辖: + county 3 kWh/h, 2000 m²; headcount 60 + 100 + 120 + 50 + 30.
    assert_close!(total(6), 33.0 * H2025 * KGCE);
    assert_close!(per_area(6), 33.0 * H2025 * KGCE / 17000.0);
    assert_close!(r.entries[6].figures.get(Indicator::EnergyPerPerson).and_then(|v| v.value).unwrap(), 33.0 * H2025 * KGCE / 360.0);
    // Last year and the change: 2024 has 24 hours more.
    let fin_total = r.entries[1].figures.get(Indicator::TotalEnergy).unwrap();
    assert_close!(fin_total.last_year.unwrap(), 8.0 * H2024 * KGCE);
    assert_close!(fin_total.change_pct.unwrap(), (H2025 / H2024 - 1.0) * 100.0);
    // fin's budget: 9000 kgce, met.
    let t = fin_total.target.as_ref().unwrap();
    assert_eq!((t.kind, t.value, t.met), ("budget", 9000.0, true));
    // Monthly: January 2025 is 31 days of 8 kWh/h for fin.
    assert_close!(r.entries[1].monthly.this_year_kgce[0], 8.0 * 24.0 * 31.0 * KGCE);
    assert_close!(r.entries[1].monthly.last_year_kgce[1], 8.0 * 24.0 * 29.0 * KGCE);
    // Cost at 0.8 yuan/kWh.
    assert_close!(r.entries[1].figures.carriers[0].cost_yuan, 8.0 * H2025 * 0.8);

    // ---- assessment 2025 (scorecard: energy per area and per person; band: non-heating per area).
    let figures = own_figures(&s.engine, &s.store, &s.reg, 2025, ms).await.unwrap();
    let a = model::assessment(&s.reg.file.assessment, 2025, "2026-01-01", "Asia/Shanghai", &figures);
    let by = |id: &str| -> &AgencyScore { a.agencies.iter().find(|x| x.agency == id).unwrap() };
    // Government per area (kWh/m²): fin 14.016, edu 21.024, tax 17.52; average 17.52:
    // ratios 0.8 (7 points), 1.2 (4), 1.0 (6). Per person (kgce): fin 8 x 8760 x 0.1229 / 100,
    // edu 12 x .. / 120, tax 4 x .. / 50 = 86.13, 107.66, 86.13; average 93.31: ratios 0.92 (6),
    // 1.15 (4), 0.92 (6). Bands (kgce/m², city 2.5 / 2.0 / 1.5): fin 1.72 (above guide, 6),
    // edu 2.58 (above binding, 0), tax 2.15 (above benchmark, 4).
    // Affairs: bureau 17.52 and county 13.14 kWh/m², average 15.33: ratios 1.14 (4), 0.86 (7);
    // per person both 107.66: 6 and 6. Bands: bureau 2.15 (4); county 1.61 over the county
    // table's 1.6 (0).
    let points: Vec<(&str, f64, Option<f64>)> = ["fin", "edu", "tax", "bureau", "county"].iter().map(|id| (*id, by(id).points, by(id).score)).collect();
    assert_eq!(
        points,
        [("fin", 19.0, Some(90.5)), ("edu", 8.0, Some(38.1)), ("tax", 16.0, Some(76.2)), ("bureau", 14.0, Some(66.7)), ("county", 13.0, Some(61.9))]
    );
    assert!(a.agencies.iter().all(|x| x.max_points == 21.0));
    // Grades: binding targets missed (edu, county above 约束值; tax misses its reduction path:
    // 2.2 x (1 - 8 % x 2/4) = 2.112 < 2.1532) make 未完成 whatever the score.
    let grades: Vec<(&str, Option<usize>, &str)> = a.agencies.iter().map(|x| (x.agency.as_str(), x.rank, x.grade.as_deref().unwrap_or(""))).collect();
    assert_eq!(grades, [("fin", Some(1), "完成"), ("tax", Some(2), "未完成"), ("bureau", Some(3), "基本完成"), ("county", Some(4), "未完成"), ("edu", Some(5), "未完成")]);
    let tax = by("tax");
    assert_eq!(tax.binding_missed.len(), 1);
    assert_close!(tax.binding_missed[0].limit, 2.112);
    // The reasons name every point lost.
    let why = tables::reasons(Lang::En, by("edu"));
    assert!(why.iter().any(|w| w.contains("1.200 times the same-kind average") && w.contains("3 lost")), "{why:?}");
    assert!(why.iter().any(|w| w.contains("above binding value: 0 of 7 points, 7 lost")), "{why:?}");

    // ---- plan 2026: current year 2025 (closed on 2026-01-01), last full year 2024.
    let last_ms = year_cut(TZ, 2024, as_of).unwrap().1;
    let last = own_figures(&s.engine, &s.store, &s.reg, 2024, last_ms).await.unwrap();
    let p = model::plan(&s.reg, 2026, "2026-01-01", "Asia/Shanghai", &figures, &last);
    let audits: Vec<(&str, Vec<(&str, i32)>)> =
        p.agencies.iter().filter(|x| x.audit_required).map(|x| (x.agency.as_str(), x.audit_reasons.iter().map(|r| (r.kind, r.year)).collect())).collect();
    assert_eq!(
        audits,
        [
            ("edu", vec![("above_binding", 2024), ("above_binding", 2025)]),
            ("tax", vec![("reduction_missed_twice", 2025)]),
            ("county", vec![("above_binding", 2024), ("above_binding", 2025)]),
        ]
    );
    let tax = p.agencies.iter().find(|x| x.agency == "tax").unwrap();
    let epa = tax.indicators.iter().find(|i| i.indicator == Indicator::EnergyPerArea).unwrap();
    // The path: 2.2 x (1 - 8 % x 3/4) = 2.068 in 2026.
    assert_close!(epa.proposed_target.unwrap(), 2.068);
    assert_close!(epa.current_target.unwrap(), 2.112);
    // Budget: 2025's 35040 kWh x 2.068 / 2.112 at 0.8 yuan.
    let b = &tax.budget[0];
    assert_close!(b.consumption, 35040.0 * 2.068 / 2.112);
    assert_close!(b.cost_yuan, 35040.0 * 2.068 / 2.112 * 0.8);
    let fin = p.agencies.iter().find(|x| x.agency == "fin").unwrap();
    assert_close!(fin.budget_cost_yuan, 8.0 * H2025 * 0.8);
    assert_close!(p.summary.total_energy_last_full_year, 33.0 * H2024 * KGCE);
    assert_close!(p.summary.total_energy_projected, 33.0 * H2025 * KGCE);
    let kwh = 29.0 * H2025 + 35040.0 * 2.068 / 2.112;
    assert_close!(p.summary.budget_kgce, kwh * KGCE);
    assert_close!(p.summary.budget_cost_yuan, kwh * 0.8);
    assert_eq!(p.summary.audits_required, 3);

    // ---- deadlines of 2025: complete data everywhere; of 2026 on 1 February: nothing yet.
    let d = deadlines(&s.engine, &s.store, &s.reg, TZ, Some(2025), None, as_of, &Visible::All).await.unwrap();
    assert_eq!((d.agencies_due.as_str(), d.bureau_due.as_str(), d.days_to_agencies_due, d.incomplete), ("2026-03-31", "2026-06-30", 89, 0));
    let d = deadlines(&s.engine, &s.store, &s.reg, TZ, Some(2026), Some("2026-02-01"), as_of, &Visible::agencies(vec!["fin".into()])).await.unwrap();
    assert_eq!(d.agencies.len(), 1);
    assert!(!d.agencies[0].complete && d.agencies[0].coverage == 0.0, "{:?}", d.agencies[0]);

    // ---- the formats: golden CSV and JSON, the workbook read back, HTML escaped.
    for (kind, year) in [(Kind::Annual, 2025), (Kind::Assessment, 2025), (Kind::Plan, 2026)] {
        golden(&format!("{}-{year}.csv", kind.as_str()), &produce_bytes(&s, kind, year, Format::Csv, Lang::Zh).await);
        golden(&format!("{}-{year}.json", kind.as_str()), &produce_bytes(&s, kind, year, Format::Json, Lang::Zh).await);
    }
    golden("assessment-2025.en.csv", &produce_bytes(&s, Kind::Assessment, 2025, Format::Csv, Lang::En).await);
    let x = produce_bytes(&s, Kind::Assessment, 2025, Format::Xlsx, Lang::Zh).await;
    assert_eq!(x, produce_bytes(&s, Kind::Assessment, 2025, Format::Xlsx, Lang::Zh).await, "the workbook is reproducible");
    {
        use calamine::{Data, Reader, Xlsx};
        let mut wb: Xlsx<_> = Xlsx::new(std::io::Cursor::new(x)).unwrap();
        assert_eq!(wb.sheet_names(), ["排名", "得分明细", "同类平均"]);
        let rank = wb.worksheet_range("排名").unwrap();
        assert_eq!(rank.get((0, 4)), Some(&Data::String("得分 (满分100)".into())));
        assert_eq!(rank.get((1, 1)), Some(&Data::String("fin".into())));
        assert_eq!(rank.get((1, 0)), Some(&Data::Float(1.0)));
        assert_eq!(rank.get((1, 4)), Some(&Data::Float(90.5)));
        assert_eq!(rank.get((5, 4)), Some(&Data::Float(38.1)));
    }
    let x = produce_bytes(&s, Kind::Plan, 2026, Format::Xlsx, Lang::En).await;
    {
        use calamine::{Data, Reader, Xlsx};
        let mut wb: Xlsx<_> = Xlsx::new(std::io::Cursor::new(x)).unwrap();
        assert_eq!(wb.sheet_names(), ["Targets", "Audits and retrofits", "Energy budget", "Summary"]);
        let su = wb.worksheet_range("Summary").unwrap();
        assert_eq!(su.get((7, 1)), Some(&Data::Float(3.0)), "audits required");
        match su.get((6, 1)) {
            Some(Data::Float(v)) => assert_close!(*v, (29.0 * H2025 + 35040.0 * 2.068 / 2.112) * 0.8),
            other => panic!("budget cost: {other:?}"),
        }
    }
    let html = String::from_utf8(produce_bytes(&s, Kind::Annual, 2025, Format::Html, Lang::Zh).await).unwrap();
    assert!(html.contains("市教育局 &lt;&amp;&gt;") && !html.contains("市教育局 <&>"), "registry names are escaped");
    assert!(html.contains("<svg") && html.contains("@media print") && !html.contains("<script"));
}

#[test]
fn scorecard_steps_and_grades_follow_the_rules() {
    let r = AssessmentRules::default();
    for (ratio, points) in [(0.5, 7.0), (0.9, 7.0), (0.95, 6.0), (1.0, 6.0), (1.05, 5.0), (1.1, 5.0), (1.15, 4.0), (1.2, 4.0), (1.21, 0.0), (3.0, 0.0)] {
        assert_eq!(model::scorecard_points(&r, ratio), points, "ratio {ratio}");
    }
    for (class, points) in [(BandClass::AtOrBelowGuide, 7.0), (BandClass::AboveGuide, 6.0), (BandClass::AboveBenchmark, 4.0), (BandClass::AboveBinding, 0.0)] {
        assert_eq!(model::band_points(&r, class), points);
    }
    assert!(r.problems().is_empty());
    let mut bad = AssessmentRules::default();
    bad.grades[1].min = 99.0;
    bad.binding_missed_grade = "失败".into();
    bad.scorecard[2].max_ratio = 0.5;
    let p = bad.problems();
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p.iter().any(|m| m.contains("assessment.grades[1]")));
    assert!(p.iter().any(|m| m.contains("binding_missed_grade `失败`")));
    assert!(p.iter().any(|m| m.contains("assessment.scorecard[2]")));
    // In a registry: validated with the rest.
    let e = Registry::parse("[assessment]\nscorecard_above = -1\n").unwrap_err();
    assert!(e.to_string().contains("assessment.scorecard_above"), "{e}");
    let e = Registry::parse("[assessment]\nbonus = 1\n").unwrap_err();
    assert!(e.to_string().contains("bonus"), "{e}");
}

#[test]
fn equal_scores_share_a_rank() {
    let s = |id: &str, score: Option<f64>| AgencyScore {
        rank: None,
        agency: id.into(),
        name: id.into(),
        kind: "k".into(),
        score,
        points: 0.0,
        max_points: 0.0,
        grade: None,
        grade_en: None,
        binding_missed: vec![],
        items: vec![],
        skipped: vec![],
        scored: score.is_some(),
        unscored_reason: None,
        data_missing: vec![],
    };
    let mut v = vec![s("d", None), s("c", Some(80.0)), s("b", Some(90.0)), s("a", Some(80.0))];
    model::rank(&mut v);
    // An agency without a score is not ranked.
    let got: Vec<(&str, Option<usize>)> = v.iter().map(|x| (x.agency.as_str(), x.rank)).collect();
    assert_eq!(got, [("b", Some(1)), ("a", Some(2)), ("c", Some(2)), ("d", None)]);
}

#[test]
fn parameters_are_named_when_wrong() {
    assert!("pdf".parse::<Format>().unwrap_err().contains("format `pdf`"));
    assert!("fr".parse::<Lang>().unwrap_err().contains("lang `fr`"));
    assert!("budget".parse::<Kind>().unwrap_err().contains("report `budget`"));
    let e = year_cut(TZ, 2027, day("2026-05-01")).unwrap_err();
    assert!(e.to_string().contains("year 2027 has no figures yet"), "{e}");
    // A past year runs to its end, the current one to the start of as_of.
    assert_eq!(year_cut(TZ, 2024, day("2026-05-01")).unwrap().0, day("2025-01-01"));
    assert_eq!(year_cut(TZ, 2026, day("2026-05-01")).unwrap().0, day("2026-05-01"));
    assert_eq!(render::csv_number(1.23456789), "1.2346");
    assert_eq!(render::csv_number(-0.00001), "0");
}

/// Issue 16, finding 1: an agency with a building and no meters (and a year with no data) is
/// shown as 无数据, unscored and unranked, and changes no other agency's score. Before, its
/// zero consumption was classed 不高于引导值 (7 of 7 band points), ranked first and pulled the
/// government average down: fin, edu and tax all lost grades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_without_data_changes_no_other_score() {
    let s = scenario().await;
    let with_empty = format!(
        "{REGISTRY}\n[[agency]]\nid = \"empty\"\nname = \"市空置单位\"\nlevel = \"city\"\nparent = \"bureau\"\nkind = \"government\"\nheadcount = {{ 2024 = 80 }}\n\
         [[building]]\nid = \"b-empty\"\nname = \"无表楼\"\nfloor_area = 4000.0\noccupants = [ {{ agency = \"empty\", share = 1.0 }} ]\n"
    );
    let reg2 = Registry::parse(&with_empty).unwrap();
    let (_, ms) = year_cut(TZ, 2025, day("2026-01-01")).unwrap();
    let rules = &s.reg.file.assessment;
    let without = model::assessment(rules, 2025, "2026-01-01", "Asia/Shanghai", &own_figures(&s.engine, &s.store, &s.reg, 2025, ms).await.unwrap());
    let figures2 = own_figures(&s.engine, &s.store, &reg2, 2025, ms).await.unwrap();
    let with = model::assessment(rules, 2025, "2026-01-01", "Asia/Shanghai", &figures2);
    type Row = (String, Option<usize>, Option<f64>, f64, Option<String>);
    let key = |a: &model::Assessment| -> Vec<Row> {
        a.agencies.iter().filter(|x| x.agency != "empty").map(|x| (x.agency.clone(), x.rank, x.score, x.points, x.grade.clone())).collect()
    };
    assert_eq!(key(&with), key(&without));
    let strip = |a: &model::Assessment| -> Vec<(String, Indicator, Option<f64>, usize)> { a.averages.iter().map(|x| (x.kind.clone(), x.indicator, x.average, x.agencies)).collect() };
    assert_eq!(strip(&with), strip(&without), "the averages leave it out");
    let e = with.agencies.iter().find(|x| x.agency == "empty").unwrap();
    assert_eq!((e.scored, e.unscored_reason, e.rank, e.score, e.grade.as_deref()), (false, Some("no_data"), None, None, None));
    assert!(e.items.is_empty());
    let f = figures2.iter().find(|x| x.agency == "empty").unwrap();
    // Every indicator: no data, no value (never 0), no class.
    assert!(f.indicators.iter().all(|v| v.data == crate::accounting::indicators::DataStatus::NoData && v.value.is_none() && v.projected.is_none() && v.band.is_none()), "{:?}", f.indicators);
    // On the page and in the reports: 无数据, never 0.
    let r = model::annual(&reg2, 2025, "2026-01-01", "Asia/Shanghai", annual_inputs(&s.engine, &s.store, &reg2, 2025, ms, Some("empty"), &Visible::All).await.unwrap());
    let csv = String::from_utf8(render::csv(&tables::annual(&r, Lang::Zh)[0])).unwrap();
    let row = csv.lines().find(|l| l.contains(",energy_per_area,")).unwrap();
    assert!(row.contains(",无数据,无数据,") && !row.contains(",0,"), "{row}");
    let why = tables::reasons(Lang::Zh, e);
    assert!(why[0].starts_with("无完整数据，不予评分"), "{why:?}");

    // A year without any data (2023): nobody is scored, no average exists, last year's columns
    // of 2024 are empty (null), not 0.
    let (_, ms23) = year_cut(TZ, 2023, day("2026-01-01")).unwrap();
    let a23 = model::assessment(rules, 2023, "2026-01-01", "Asia/Shanghai", &own_figures(&s.engine, &s.store, &s.reg, 2023, ms23).await.unwrap());
    assert!(a23.averages.is_empty());
    assert!(a23.agencies.iter().all(|x| !x.scored && x.rank.is_none() && x.unscored_reason == Some("no_data")));
    let (_, ms24) = year_cut(TZ, 2024, day("2026-01-01")).unwrap();
    let f24 = own_figures(&s.engine, &s.store, &s.reg, 2024, ms24).await.unwrap();
    assert!(f24.iter().flat_map(|f| &f.indicators).all(|v| v.last_year.is_none()));
}

/// `[assessment] incomplete`: fin's per-person figure made incomplete. With "no_score" (the
/// default) fin is not scored; with "score_measured_only" it is scored on the rest: its
/// per-area scorecard item (ratio 0.8: 7 of 7) and its band (above guide: 6 of 7), 13 of 14 =
/// 92.9. The averages hold only complete figures: per person, edu and tax only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_data_is_not_scored_unless_the_rule_says_measured_only() {
    use crate::accounting::indicators::DataStatus;
    let s = scenario().await;
    let (_, ms) = year_cut(TZ, 2025, day("2026-01-01")).unwrap();
    let mut figures = own_figures(&s.engine, &s.store, &s.reg, 2025, ms).await.unwrap();
    let fin = figures.iter_mut().find(|f| f.agency == "fin").unwrap();
    let v = fin.indicators.iter_mut().find(|v| v.indicator == Indicator::EnergyPerPerson).unwrap();
    v.data = DataStatus::Incomplete;
    v.projected = None;
    let mut rules = s.reg.file.assessment.clone();
    let a = model::assessment(&rules, 2025, "2026-01-01", "Asia/Shanghai", &figures);
    let fin = a.agencies.iter().find(|x| x.agency == "fin").unwrap();
    assert_eq!((fin.scored, fin.unscored_reason, fin.rank), (false, Some("incomplete"), None));
    assert_eq!(fin.data_missing, vec![(Indicator::EnergyPerPerson, DataStatus::Incomplete)]);
    let pp = a.averages.iter().find(|x| x.kind == "government" && x.indicator == Indicator::EnergyPerPerson).unwrap();
    assert_eq!(pp.agencies, 2);
    rules.incomplete = crate::registry::IncompleteRule::ScoreMeasuredOnly;
    let a = model::assessment(&rules, 2025, "2026-01-01", "Asia/Shanghai", &figures);
    let fin = a.agencies.iter().find(|x| x.agency == "fin").unwrap();
    assert_eq!((fin.scored, fin.score, fin.points, fin.max_points), (true, Some(92.9), 13.0, 14.0));
    assert!(fin.skipped.contains(&(Indicator::EnergyPerPerson, "incomplete")));
    let r = Registry::parse("[assessment]\nincomplete = \"score_measured_only\"\n").unwrap();
    assert_eq!(r.file.assessment.incomplete, crate::registry::IncompleteRule::ScoreMeasuredOnly);
    assert!(Registry::parse("[assessment]\nincomplete = \"maybe\"\n").unwrap_err().to_string().contains("maybe"));
}

/// Issue 17, item 3: an agency's reader sees a same-kind average only where it covers at least
/// three agencies other than its own. Government (fin, edu, tax): for fin, two others: withheld
/// (with fin's own figure and the average, edu + tax would be known). Affairs (bureau, county):
/// withheld too. A reader of every agency (`Visible::All`) sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn averages_are_withheld_from_an_agency_unless_three_others_are_in_them() {
    let s = scenario().await;
    let req = Request { kind: Kind::Assessment, year: Some(2025), format: Format::Json, lang: Lang::Zh, agency: None, as_of: None };
    let only_fin = Visible::agencies(vec!["fin".into()]);
    let out = produce(&s.engine, &s.store, &s.reg, TZ, &req, day("2026-01-01"), &only_fin).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.bytes).unwrap();
    assert!(v["averages"].as_array().unwrap().iter().all(|a| a["withheld"] == true && a["average"].is_null()), "{v}");
    let items = v["agencies"][0]["items"].as_array().unwrap();
    assert!(items.iter().filter(|i| i["rule"] == "scorecard").all(|i| i["average"].is_null() && i["ratio"].is_null() && i["withheld"] == true), "{v}");
    // The points stay.
    assert_eq!(v["agencies"][0]["points"], 19.0);
    let all = produce(&s.engine, &s.store, &s.reg, TZ, &req, day("2026-01-01"), &Visible::All).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&all.bytes).unwrap();
    assert!(v["averages"].as_array().unwrap().iter().all(|a| a["average"].is_number() && a.get("withheld").is_none()), "{v}");
    // Pure: a fourth government agency; fin's reader sees that average (edu, tax, x: three
    // others) but not the affairs one (bureau, county: two others).
    let mut a = model::assessment(&s.reg.file.assessment, 2025, "2026-01-01", "Asia/Shanghai", &own_figures(&s.engine, &s.store, &s.reg, 2025, year_cut(TZ, 2025, day("2026-01-01")).unwrap().1).await.unwrap());
    for avg in a.averages.iter_mut().filter(|x| x.kind == "government") {
        avg.members.push("x".into());
    }
    model::withhold_averages(&mut a, &["fin".to_string()]);
    let gov: Vec<bool> = a.averages.iter().filter(|x| x.kind == "government").map(|x| x.withheld).collect();
    let aff: Vec<bool> = a.averages.iter().filter(|x| x.kind == "affairs").map(|x| x.withheld).collect();
    assert_eq!((gov, aff), (vec![false, false], vec![true, true]));
}

#[cfg(test)]
#[path = "official_tests.rs"]
mod official_tests;
