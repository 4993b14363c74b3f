//! 分项能耗: the consumption of each building by national energy item code (issue 21), for the
//! bureau's page (a section of its own, [`section`]) and `GET /api/v1/reports/items`.
//! The figures are those of `GET /api/v1/consumption?building=..` (`items`): the own part of
//! each meter that carries an item code, summed by code.

use chrono::TimeZone;
use chrono_tz::Tz;
use serde::Serialize;

use super::html::esc;
use super::labels::Lang;
use super::{ReportError, Visible};
use crate::accounting::engine::Engine;
use crate::accounting::query::{self as aq, Subject};
use crate::registry::Registry;
use crate::store::Store;
use crate::time::Interval;

/// One building's item codes.
#[derive(Debug, Clone, Serialize)]
pub struct BuildingItems {
    pub building: String,
    pub name: String,
    pub national_id: Option<String>,
    /// (code, Chinese name, English name, unit, total), in code order.
    pub items: Vec<ItemTotal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemTotal {
    pub code: String,
    pub name: &'static str,
    pub name_en: &'static str,
    pub unit: &'static str,
    pub total: f64,
}

/// The buildings (visible to the caller: one of their occupants is) with item-coded meters,
/// their consumption by item code over `[from_ms, to_ms)`.
pub async fn building_items(engine: &Engine, store: &Store, reg: &Registry, tz: Tz, (from_ms, to_ms): (i64, i64), visible: &Visible) -> Result<Vec<BuildingItems>, ReportError> {
    let (Some(from), Some(to)) = (tz.timestamp_millis_opt(from_ms).single(), tz.timestamp_millis_opt(to_ms).single()) else {
        return Err(ReportError::BadRequest("the period is out of range".into()));
    };
    let events = engine.events_by_meter();
    let mut out = Vec::new();
    for b in &reg.file.buildings {
        if !b.occupants.iter().any(|o| visible.allows(&o.agency)) {
            continue;
        }
        let scope = aq::scope_meters(reg, Subject::Building(&b.id), None, None).map_err(|e| ReportError::Render(e.to_string()))?;
        if !scope.iter().any(|x| x.meter.item_code.is_some()) {
            continue;
        }
        // One period: the whole range (day boundaries are whole hours in every zone used here).
        let c = aq::consumption(store, reg, &events, Subject::Building(&b.id), &scope, (None, None), (from, to), Interval::Year).await.map_err(|e| ReportError::Render(e.to_string()))?;
        let units: std::collections::HashMap<&str, &'static str> = scope.iter().filter_map(|x| Some((x.meter.item_code.as_deref()?, x.meter.counter().unit()))).collect();
        let items = c
            .item_periods()
            .into_iter()
            .map(|(code, periods)| {
                let e = crate::registry::national::item(&code);
                ItemTotal { name: e.map_or("", |e| e.zh), name_en: e.map_or("", |e| e.en), unit: units.get(code.as_str()).copied().unwrap_or(""), total: periods.iter().sum(), code }
            })
            .collect();
        out.push(BuildingItems { building: b.id.clone(), name: b.name.clone(), national_id: b.national_id.clone(), items });
    }
    Ok(out)
}

/// The page's section: a table per building, code, item and consumption.
pub fn section(lang: Lang, year: i32, as_of: &str, buildings: &[BuildingItems]) -> String {
    let zh = lang == Lang::Zh;
    let mut s = String::from("<section id=\"items\">");
    if zh {
        s.push_str(&format!("<h2>分项能耗（{year}年，截至{}）</h2>", esc(as_of)));
    } else {
        s.push_str(&format!("<h2>Consumption by energy item ({year}, as of {})</h2>", esc(as_of)));
    }
    if buildings.is_empty() {
        s.push_str(if zh { "<p>没有计量表标注分类分项编码。</p>" } else { "<p>No meter carries an energy item code.</p>" });
        s.push_str("</section>");
        return s;
    }
    let (hb, hn, hc, hi, hv) = if zh { ("建筑", "建筑编码", "分项编码", "分项名称", "能耗") } else { ("Building", "National id", "Item code", "Item", "Consumption") };
    s.push_str(&format!("<table><thead><tr><th>{hb}</th><th>{hn}</th><th>{hc}</th><th>{hi}</th><th>{hv}</th></tr></thead><tbody>"));
    for b in buildings {
        for (i, it) in b.items.iter().enumerate() {
            let (bn, nid) = if i == 0 { (esc(&b.name), esc(b.national_id.as_deref().unwrap_or(""))) } else { (String::new(), String::new()) };
            let name = if zh { it.name } else { it.name_en };
            s.push_str(&format!("<tr><td>{bn}</td><td>{nid}</td><td>{}</td><td>{}</td><td class=\"num\">{:.2} {}</td></tr>", esc(&it.code), esc(name), it.total, esc(it.unit)));
        }
    }
    s.push_str("</tbody></table></section>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_in_both_languages() {
        let b = vec![BuildingItems {
            building: "b1".into(),
            name: "一号楼<".into(),
            national_id: Some("110101A001".into()),
            items: vec![
                ItemTotal { code: "01A00".into(), name: "照明插座用电", name_en: "lighting and sockets", unit: "kWh", total: 1234.567 },
                ItemTotal { code: "01B00".into(), name: "空调用电", name_en: "HVAC", unit: "kWh", total: 10.0 },
            ],
        }];
        let zh = section(Lang::Zh, 2026, "2026-12-06", &b);
        assert!(zh.contains("<h2>分项能耗（2026年，截至2026-12-06）</h2>"), "{zh}");
        assert!(zh.contains("<td>一号楼&lt;</td><td>110101A001</td><td>01A00</td><td>照明插座用电</td><td class=\"num\">1234.57 kWh</td>"), "{zh}");
        // The building's name once, on its first row.
        assert!(zh.contains("<tr><td></td><td></td><td>01B00</td><td>空调用电</td>"), "{zh}");
        let en = section(Lang::En, 2026, "2026-12-06", &b);
        assert!(en.contains("Consumption by energy item") && en.contains("<td>HVAC</td>"), "{en}");
        assert!(section(Lang::Zh, 2026, "2026-12-06", &[]).contains("没有计量表标注分类分项编码"));
    }
}
