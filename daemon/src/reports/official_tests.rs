//! The official form of the documents (issue 16): the Chinese documents hold no English, the
//! statistics forms' figures are worked out by hand, the quota bands name their source, the
//! workbooks have integers, money and blanks in their place and the A4 page setup.

use super::*;

/// Headers of the columns whose cells are identifiers (ASCII is allowed there).
const CODE_HEADERS: [&str; 4] = ["单位代码", "统一社会信用代码", "机房代码", "指标代码"];

/// A word of ASCII letters that is allowed in a Chinese document: a standard's name (GB/T 2589,
/// DB37/T 2672-2019) or a unit symbol the forms use as is.
fn allowed(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '²' && c != '³');
    let standard = ["GB", "DB", "JGJ"].iter().any(|p| w.starts_with(p)) && w.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '/');
    standard || ["m²", "m³"].contains(&w)
}

/// The ASCII words of `text` that are not allowed.
fn english_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '²' || c == '³' || c == '_' || c == '-'))
        .filter(|w| w.chars().any(|c| c.is_ascii_alphabetic()))
        .filter(|w| !allowed(w))
        .map(str::to_string)
        .collect()
}

/// The visible text of an HTML document, without the cells of code columns, the style sheet and
/// character references.
pub(super) fn html_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_style = false;
    let mut headers: Vec<String> = Vec::new();
    let mut header_done = false;
    let mut col = 0usize;
    let mut cell: Option<&str> = None;
    for piece in html.split('<').skip(1) {
        let (tag, text) = piece.split_once('>').unwrap_or((piece, ""));
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let closing = tag.starts_with('/');
        match (name.as_str(), closing) {
            ("style", c) => in_style = !c,
            ("table", false) => {
                headers.clear();
                header_done = false;
            }
            ("tr", false) => {
                col = 0;
                if !headers.is_empty() {
                    header_done = true;
                }
            }
            ("th", false) => {
                cell = Some("th");
            }
            ("td", false) => {
                col += 1;
                cell = Some("td");
            }
            ("th" | "td", true) => cell = None,
            _ => {}
        }
        if in_style {
            continue;
        }
        let text = decode(text);
        if cell == Some("th") && !closing && name == "th" && !header_done {
            headers.push(text.clone());
        } else if cell == Some("th") && !header_done {
            if let Some(h) = headers.last_mut() {
                h.push_str(&text);
            }
        }
        let code_col = cell == Some("td") && header_done && headers.get(col.wrapping_sub(1)).is_some_and(|h| CODE_HEADERS.contains(&h.as_str()));
        if !code_col {
            out.push_str(&text);
            out.push(' ');
        }
    }
    out
}

fn decode(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        match rest[i..].find(';') {
            Some(j) if j < 10 => rest = &rest[i + j + 1..],
            _ => {
                out.push('&');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every cell of every sheet, without the code columns (the column under a code header).
pub(super) fn xlsx_cells(bytes: &[u8]) -> Vec<(String, u32, u32, calamine::Data)> {
    use calamine::{Reader, Xlsx};
    let mut wb: Xlsx<_> = Xlsx::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut out = Vec::new();
    for name in wb.sheet_names() {
        let range = wb.worksheet_range(&name).unwrap();
        let mut code_cols: Vec<(u32, u32)> = Vec::new();
        for (r, c, v) in range.used_cells() {
            let (r, c) = (r as u32, c as u32);
            if let calamine::Data::String(s) = v {
                if CODE_HEADERS.contains(&s.as_str()) {
                    code_cols.push((r, c));
                }
            }
            if code_cols.iter().any(|(hr, hc)| *hc == c && r > *hr) {
                continue;
            }
            out.push((name.clone(), r, c, v.clone()));
        }
    }
    out
}

#[tokio::test]
async fn chinese_documents_hold_no_english_and_the_forms_add_up() {
    let s = super::scenario().await;
    let mut scanned = 0;
    for (kind, year) in [(Kind::Annual, 2025), (Kind::Assessment, 2025), (Kind::Plan, 2026), (Kind::Statistics, 2025)] {
        let html = String::from_utf8(super::produce_bytes(&s, kind, year, Format::Html, Lang::Zh).await).unwrap();
        let text = html_text(&html);
        let bad = english_in(&text);
        assert!(bad.is_empty(), "{} HTML: English words {bad:?}", kind.as_str());
        // The signature block on the annual report, the assessment and the forms.
        if kind != Kind::Plan {
            for w in ["填报单位", "负责人", "填报人", "联系电话", "填报日期", "王局长", "赵统计", "0351-1234567"] {
                assert!(text.contains(w), "{}: no `{w}` in the signature block", kind.as_str());
            }
        }
        assert!(html.contains("@bottom-center") && html.contains("counter(page)"), "page numbers");
        let x = super::produce_bytes(&s, kind, year, Format::Xlsx, Lang::Zh).await;
        for (sheet, r, c, v) in xlsx_cells(&x) {
            if let calamine::Data::String(t) = &v {
                let bad = english_in(t);
                assert!(bad.is_empty(), "{} XLSX {sheet}!{r},{c}: English words {bad:?} in `{t}`", kind.as_str());
            }
            scanned += 1;
        }
        // English stays available.
        let en = String::from_utf8(super::produce_bytes(&s, kind, year, Format::Html, Lang::En).await).unwrap();
        assert!(!english_in(&html_text(&en)).is_empty(), "{}: lang=en is English", kind.as_str());
    }
    assert!(scanned > 500, "the workbooks were read ({scanned} cells)");

    // Golden files of the forms (the end-to-end test compares the API's bytes with them).
    super::golden("statistics-2025.csv", &super::produce_bytes(&s, Kind::Statistics, 2025, Format::Csv, Lang::Zh).await);
    super::golden("statistics-2025.json", &super::produce_bytes(&s, Kind::Statistics, 2025, Format::Json, Lang::Zh).await);

    // The statistics forms of 2025, by hand (8760 hours, kgce = kWh x 0.1229):
    // fin: e1's own part 16 kWh/h, half to fin = 8 kWh/h -> 70,080 kWh = 8.6128 tce; its share
    // of b1 is 5000 of 10000 m² -> 5000 m²; 100 energy users; its room 60 m² with 0 kWh.
    let json: serde_json::Value = serde_json::from_slice(&super::produce_bytes(&s, Kind::Statistics, 2025, Format::Json, Lang::Zh).await).unwrap();
    let fin = json["institutions"].as_array().unwrap().iter().find(|i| i["agency"] == "fin").unwrap();
    assert_eq!(fin["floor_area"], 5000.0);
    assert_eq!(fin["energy_users"], 100.0);
    assert_eq!(fin["type_name"], "国家机关");
    assert_eq!(fin["carriers"][0]["quantity"], 70080.0);
    assert!((fin["total_tce"].as_f64().unwrap() - 70080.0 * 0.1229 / 1000.0).abs() < 1e-9, "{fin}");
    assert_eq!(fin["rooms"][0]["area"], 60.0);
    assert_eq!(fin["rooms"][0]["electricity_kwh"], 0.0);
    // county's room is measured by e3: 3 kWh/h x 8760 h = 26,280 kWh = 3.229812 tce.
    let county = json["institutions"].as_array().unwrap().iter().find(|i| i["agency"] == "county").unwrap();
    assert_eq!(county["rooms"][0]["electricity_kwh"], 26280.0);
    assert!((county["rooms"][0]["tce"].as_f64().unwrap() - 3.229812).abs() < 1e-9, "{county}");
    // Heating: no heat meter in the scenario, so no heat billed by heat: blank (null), not 0, as
    // for water; the heated area is the floor area (no heated_area given): county's b3 of 2000 m².
    assert!(county["heating"]["heat_gj"].is_null() && county["heating"]["heat_cost_yuan"].is_null(), "{county}");
    assert_eq!(county["heating"]["heated_area"], 2000.0);

    // The workbook: the forms' heads above the header, the column numbers, integers, money,
    // the jurisdiction's totals; the consumption form's grand total is every agency's energy:
    // e1 20 kWh/h (its sub-meter e1-edu's 4 are inside it) + e2 10 + e3 3 = 33 kWh/h, and
    // 33 x 8760 h x 0.1229 / 1000 = 35.527932 tce.
    let x = super::produce_bytes(&s, Kind::Statistics, 2025, Format::Xlsx, Lang::Zh).await;
    {
        use calamine::{Data, Reader, Xlsx};
        let mut wb: Xlsx<_> = Xlsx::new(std::io::Cursor::new(x)).unwrap();
        assert_eq!(wb.sheet_names(), ["公共机构基本信息", "公共机构能源资源消费状况", "公共机构数据中心机房能源消费状况", "公共机构采暖能源资源消费状况"]);
        let basic = wb.worksheet_range("公共机构基本信息").unwrap();
        assert_eq!(basic.get((0, 0)), Some(&Data::String("公共机构基本信息".into())));
        assert_eq!(basic.get((4, 0)), Some(&Data::String("单位名称".into())));
        assert_eq!(basic.get((5, 0)), Some(&Data::String("甲".into())));
        assert_eq!(basic.get((5, 6)), Some(&Data::String("1".into())));
        let cons = wb.worksheet_range("公共机构能源资源消费状况").unwrap();
        let rows: Vec<Vec<Data>> = cons.rows().map(|r| r.to_vec()).collect();
        let grand = rows.iter().find(|r| r[0] == Data::String("全辖合计".into()) && r[1] == Data::String("合计".into())).unwrap();
        match &grand[4] {
            Data::Float(v) => assert!((v - 35.527932).abs() < 1e-6, "{v}"),
            other => panic!("{other:?}"),
        }
        // Water has no standard coal, and no water meter serves anyone in the scenario: its
        // quantity and coal are blank, not 0.
        let water = rows.iter().find(|r| r[1] == Data::String("水".into())).unwrap();
        assert_eq!((&water[3], &water[4]), (&Data::Empty, &Data::Empty), "blank, not 0, where there is no figure");
    }

    // Finding 6: every band names its source, in every format.
    let csv = String::from_utf8(super::produce_bytes(&s, Kind::Annual, 2025, Format::Csv, Lang::Zh).await).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("定额来源"), "the CSV has the source column");
    assert!(csv.contains("测试用定额表（2024年版，表1）") || csv.contains("测试用定额表（表1）"), "{csv}");
    let a = String::from_utf8(super::produce_bytes(&s, Kind::Assessment, 2025, Format::Html, Lang::Zh).await).unwrap();
    assert!(a.contains("定额来源：测试用定额表（表1）"), "the assessment's reasons name the source");
    let x = super::produce_bytes(&s, Kind::Plan, 2026, Format::Xlsx, Lang::Zh).await;
    assert!(xlsx_cells(&x).iter().any(|(_, _, _, v)| *v == calamine::Data::String("测试用定额表（表1）".into())), "the plan's workbook names the source");
}

/// The accounting side's states in Chinese (issue 16): an agency without data (无数据, not
/// scored), an incomplete indicator (数据不完整 and the engine's note), averages withheld from
/// an agency's reader, the as-of rule and both per-area bases. None of it prints English.
#[tokio::test]
async fn missing_incomplete_and_withheld_data_are_said_in_chinese() {
    use crate::accounting::indicators::DataStatus;
    let s = super::scenario().await;
    let scan = |what: &str, html: &str| {
        let text = html_text(html);
        let bad = english_in(&text);
        assert!(bad.is_empty(), "{what}: English words {bad:?}");
        for w in ["数据截至当日零时", "统计口径", "定额口径"] {
            assert!(text.contains(w), "{what}: no `{w}`");
        }
        text
    };
    let scan_xlsx = |what: &str, x: &[u8]| {
        for (sheet, r, c, v) in xlsx_cells(x) {
            if let calamine::Data::String(t) = &v {
                let bad = english_in(t);
                assert!(bad.is_empty(), "{what} XLSX {sheet}!{r},{c}: English words {bad:?} in `{t}`");
            }
        }
    };
    // An agency with a building and no meter: 无数据, not scored.
    let with_empty = format!(
        "{REGISTRY}\n[[agency]]\nid = \"empty\"\nname = \"市空置单位\"\nlevel = \"city\"\nparent = \"bureau\"\nkind = \"government\"\nheadcount = {{ 2024 = 80 }}\n\
         [[building]]\nid = \"b-empty\"\nname = \"无表楼\"\nfloor_area = 4000.0\noccupants = [ {{ agency = \"empty\", share = 1.0 }} ]\n"
    );
    let reg2 = Registry::parse(&with_empty).unwrap();
    for (kind, year) in [(Kind::Annual, 2025), (Kind::Assessment, 2025)] {
        let mut req = Request { kind, year: Some(year), format: Format::Html, lang: Lang::Zh, agency: None, as_of: None };
        let html = String::from_utf8(produce(&s.engine, &s.store, &reg2, TZ, &req, day("2026-01-01"), &Visible::All).await.unwrap().bytes).unwrap();
        let text = scan(kind.as_str(), &html);
        assert!(text.contains("无数据"), "{}: 无数据", kind.as_str());
        if kind == Kind::Assessment {
            assert!(text.contains("无完整数据，不予评分"), "the unscored agency says why");
        }
        req.format = Format::Xlsx;
        scan_xlsx(kind.as_str(), &produce(&s.engine, &s.store, &reg2, TZ, &req, day("2026-01-01"), &Visible::All).await.unwrap().bytes);
    }
    // fin's reader: the government and affairs averages cover fewer than three others.
    let mut req = Request { kind: Kind::Assessment, year: Some(2025), format: Format::Html, lang: Lang::Zh, agency: None, as_of: None };
    let only_fin = Visible::agencies(vec!["fin".into()]);
    let html = String::from_utf8(produce(&s.engine, &s.store, &s.reg, TZ, &req, day("2026-01-01"), &only_fin).await.unwrap().bytes).unwrap();
    assert!(scan("withheld", &html).contains("同类其他单位不足三家，不予显示"));
    req.format = Format::Xlsx;
    scan_xlsx("withheld", &produce(&s.engine, &s.store, &s.reg, TZ, &req, day("2026-01-01"), &only_fin).await.unwrap().bytes);
    // fin's per-person figure incomplete, with the engine's note.
    let (day_cut, ms) = year_cut(TZ, 2025, day("2026-01-01")).unwrap();
    let mut inputs = annual_inputs(&s.engine, &s.store, &s.reg, 2025, ms, Some("fin"), &Visible::All).await.unwrap();
    let f = &mut inputs[0].figures;
    let v = f.indicators.iter_mut().find(|v| v.indicator == Indicator::EnergyPerPerson).unwrap();
    v.data = DataStatus::Incomplete;
    v.projected = None;
    f.notes.push("incomplete data, not projected, classed, judged or scored: energy_per_person (83.0%)".into());
    let r = model::annual(&s.reg, 2025, &day_cut.to_string(), "Asia/Shanghai", inputs);
    let text = scan("incomplete annual", &super::html::annual(&r, Lang::Zh, &model::signature(&s.reg, Some("fin"))));
    assert!(text.contains("数据不完整，不作预测、定额分档、目标判定和评分：人均综合能耗（数据覆盖率 83.0%）"), "{text}");
    let mut figures = own_figures(&s.engine, &s.store, &s.reg, 2025, ms).await.unwrap();
    let fin = figures.iter_mut().find(|f| f.agency == "fin").unwrap();
    let v = fin.indicators.iter_mut().find(|v| v.indicator == Indicator::EnergyPerPerson).unwrap();
    v.data = DataStatus::Incomplete;
    let a = model::assessment(&s.reg.file.assessment, 2025, &day_cut.to_string(), "Asia/Shanghai", &figures);
    let text = scan("incomplete assessment", &super::html::assessment(&a, Lang::Zh, &model::signature(&s.reg, None)));
    assert!(text.contains("有考核指标数据缺失或不完整，不予评分（人均综合能耗：数据不完整）"), "{text}");
}

#[test]
fn scanner_finds_english_and_allows_codes_standards_and_units() {
    assert_eq!(english_in("电力折标方法：calorific"), ["calorific"]);
    assert_eq!(english_in("年度已结束 none: the year is closed"), ["none", "the", "year", "is", "closed"]);
    assert!(english_in("DB37/T 2672-2019（2019年版）GB/T 2589 面积 m²").is_empty());
    let html = "<table><thead><tr><th>单位代码</th><th>单位名称</th></tr></thead><tbody><tr><td>fin</td><td>市财政局</td></tr><tr><td>edu</td><td>government</td></tr></tbody></table>";
    assert_eq!(english_in(&html_text(html)), ["government"]);
}

#[test]
fn the_quota_table_of_a_registry_is_classified() {
    use crate::registry::{Quota, QuotaTable};
    let row = |source: &str| Quota {
        source: source.into(),
        indicator: crate::registry::Indicator::EnergyPerPerson,
        levels: vec![],
        climate_zone: None,
        heating: None,
        building_type: None,
        binding: 3.0,
        benchmark: 2.0,
        guide: 1.0,
        table: None,
        year: None,
    };
    assert_eq!(QuotaTable::of(&[]), QuotaTable::Missing);
    assert_eq!(QuotaTable::of(&[row("DB37/T 2672-2019 (山东, 示例)")]), QuotaTable::ExampleOnly);
    assert_eq!(QuotaTable::of(&[row("DB37/T 2672-2019 (山东, 示例)"), row("DB14/T 1234-2024")]), QuotaTable::Explicit);
    // The shipped table, as the demo registry includes it, is the example.
    let shipped: toml::Table = toml::from_str(include_str!("../../../deploy/quotas/shandong-db37-2672-2019.toml")).unwrap();
    assert!(shipped["quota"].as_array().is_some_and(|a| !a.is_empty()));
    // The year of the edition comes from the standard's number.
    assert_eq!(row("DB37/T 2672-2019 (山东, 示例)").edition_year(), Some(2019));
    assert_eq!(row("测试用定额表").edition_year(), None);
}
