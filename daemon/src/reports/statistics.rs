//! The statistics forms of 《公共机构能源资源消费统计调查制度》 (revised 2025-11): basic
//! information, energy and resource consumption by carrier, data-centre rooms and heating, one
//! row per institution, built from the engine's figures by pure functions
//! (`GET /api/v1/reports/statistics?year=`).
//!
//! What the forms ask, and where it could be checked, is in [`crate::registry::statistics`]:
//! the four forms' titles, 统一社会信用代码, the institution type codes of the earlier form,
//! 建筑面积 (office area) and 用能人数, and the 2025 change of the heating form's 热力消费量 to
//! 热力消费量（按热量收费）. **Not verified**, and so not printed: the current forms' 表号 and
//! their items' 代码. The column numbers printed (栏次 甲, 乙, 1, 2, ...) are the usual layout
//! of statistics forms, numbering this report's own columns.
//!
//! Figures: quantities in each carrier's counter unit (千瓦时, 立方米, 吉焦, 千克 or 升), energy in
//! 吨标准煤 (kgce / 1000, with the registry's coefficients and electricity basis), money in 元.
//! Heat is the metered district heat (billed by heat); heating billed by area has no quantity
//! and is not in this column. The building area is the institution's share of its buildings'
//! whole floor area (no exclusions: the statistics basis).

use energy_wire::Carrier;
use serde::Serialize;

use super::labels::{self, t, Lang};
use super::tables::{money as yuan, num as n, opt as on, whole as count, Cell, Table};
use crate::accounting::indicators::AgencyIndicators;
use crate::registry::{statistics::type_name, Indicator, Registry};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatCarrier {
    pub carrier: Carrier,
    pub unit: &'static str,
    pub quantity: f64,
    pub tce: f64,
    pub cost_yuan: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatRoom {
    pub id: String,
    pub name: String,
    pub area: f64,
    /// kWh; `None` when the registry does not say which meters measure the room and the
    /// institution has more than one room.
    pub electricity_kwh: Option<f64>,
    pub tce: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatHeating {
    /// `district`, `gas`, `electric` or `none` (the main building's).
    pub heating_type: String,
    pub heated_area: f64,
    /// Metered district heat, GJ (热力消费量（按热量收费）); `None` when no heat meter serves the
    /// institution (blank on the form, not 0, as for water).
    pub heat_gj: Option<f64>,
    pub heat_cost_yuan: Option<f64>,
    /// Energy of heating end use, tce.
    pub heating_tce: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Institution {
    pub agency: String,
    pub name: String,
    pub parent: Option<String>,
    pub level: String,
    pub credit_code: Option<String>,
    pub type_code: Option<String>,
    pub type_name: Option<String>,
    /// m², the share of the buildings' whole floor area.
    pub floor_area: f64,
    /// 用能人数 of the year.
    pub energy_users: Option<f64>,
    pub carriers: Vec<StatCarrier>,
    pub total_tce: f64,
    pub total_cost_yuan: f64,
    /// m³; `None` when no water meter serves the institution (blank on the form, not 0).
    pub water_m3: Option<f64>,
    pub rooms: Vec<StatRoom>,
    pub heating: StatHeating,
    /// Whether the year's data is complete (the coverage threshold of `[accounting]`).
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatisticsReport {
    pub report: &'static str,
    pub year: i32,
    pub as_of: String,
    pub timezone: String,
    pub electricity_basis: String,
    pub institutions: Vec<Institution>,
}

/// Electricity of a data-centre room to `as_of`, kWh, as the engine measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomInput {
    pub room: String,
    pub kwh: Option<f64>,
}

/// The share of the buildings' whole floor area an agency uses (the statistics basis).
pub fn gross_area(reg: &Registry, agency: &str) -> f64 {
    reg.file.buildings.iter().map(|b| b.floor_area * b.occupants.iter().filter(|o| o.agency == agency).map(|o| o.share).sum::<f64>()).sum()
}

/// The forms' figures: one institution per agency's own figures.
pub fn statistics(reg: &Registry, year: i32, as_of: &str, timezone: &str, figures: &[AgencyIndicators], rooms: &[RoomInput]) -> StatisticsReport {
    let kwh_tce = reg.kgce_per_unit(Carrier::Electricity, false) / 1000.0;
    let institutions = figures
        .iter()
        .map(|f| {
            let a = reg.agency(&f.agency);
            let carriers: Vec<StatCarrier> = f
                .carriers
                .iter()
                .filter(|c| c.carrier != Carrier::Water)
                .map(|c| StatCarrier { carrier: c.carrier, unit: c.unit, quantity: c.value, tce: c.kgce / 1000.0, cost_yuan: c.cost_yuan })
                .collect();
            let water = f.carriers.iter().find(|c| c.carrier == Carrier::Water);
            let heat = f.carriers.iter().find(|c| c.carrier == Carrier::DistrictHeat);
            let main = reg.agency_areas(&f.agency).main_building.and_then(|b| reg.building(&b).cloned());
            let heating_tce = f.get(Indicator::HeatingEnergyPerHeatedArea).and_then(|v| v.value).map(|x| x * f.heated_area / 1000.0);
            let type_code = a.and_then(|a| a.type_code.clone());
            Institution {
                agency: f.agency.clone(),
                name: f.name.clone(),
                parent: a.and_then(|a| a.parent.clone()),
                level: a.map_or_else(String::new, |a| a.level.as_str().to_string()),
                credit_code: a.and_then(|a| a.credit_code.clone()),
                type_name: type_code.as_deref().and_then(type_name).map(str::to_string),
                type_code,
                floor_area: gross_area(reg, &f.agency),
                energy_users: f.headcount,
                total_tce: carriers.iter().map(|c| c.tce).sum(),
                total_cost_yuan: carriers.iter().map(|c| c.cost_yuan).sum::<f64>() + water.map_or(0.0, |w| w.cost_yuan),
                carriers,
                water_m3: water.map(|w| w.value),
                rooms: reg
                    .file
                    .data_centres
                    .iter()
                    .filter(|r| r.agency == f.agency)
                    .map(|r| {
                        let kwh = rooms.iter().find(|x| x.room == r.id).and_then(|x| x.kwh);
                        StatRoom { id: r.id.clone(), name: r.name.clone(), area: r.area, electricity_kwh: kwh, tce: kwh.map(|k| k * kwh_tce) }
                    })
                    .collect(),
                heating: StatHeating {
                    heating_type: main.map_or_else(|| "none".to_string(), |b| serde_plain(b.heating)),
                    heated_area: f.heated_area,
                    heat_gj: heat.map(|h| h.value),
                    heat_cost_yuan: heat.map(|h| h.cost_yuan),
                    heating_tce,
                },
                complete: f.quality.complete,
            }
        })
        .collect();
    StatisticsReport {
        report: "statistics",
        year,
        as_of: as_of.into(),
        timezone: timezone.into(),
        electricity_basis: figures.first().map(|f| f.electricity_basis.to_string()).unwrap_or_default(),
        institutions,
    }
}

fn serde_plain<T: Serialize>(v: T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// 甲, 乙, 丙 ... for the columns of words, then 1, 2, 3 ... for the figures.
fn column_codes(lang: Lang, words: usize, total: usize) -> Vec<String> {
    const STEMS: [&str; 6] = ["甲", "乙", "丙", "丁", "戊", "己"];
    (0..total)
        .map(|i| match (lang, i < words) {
            (Lang::Zh, true) => STEMS.get(i).map_or_else(|| (i + 1).to_string(), |s| (*s).to_string()),
            (Lang::En, true) => ["A", "B", "C", "D", "E", "F"].get(i).map_or_else(|| (i + 1).to_string(), |s| (*s).to_string()),
            (_, false) => (i + 1 - words).to_string(),
        })
        .collect()
}

fn form(lang: Lang, key: &'static str, r: &StatisticsReport, headers: &[&'static str], words: usize) -> Table {
    let year = match lang {
        Lang::Zh => format!("{}年度", r.year),
        Lang::En => format!("Year {}", r.year),
    };
    let basis = format!("{}：{}", t(lang, "basis"), labels::basis(lang, &r.electricity_basis));
    Table {
        key,
        title: t(lang, key),
        headers: headers.iter().map(|h| t(lang, h)).collect(),
        keys: headers.to_vec(),
        caption: vec![t(lang, key), t(lang, "stat_system"), t(lang, "stat_authority"), format!("{year}　{basis}")],
        column_codes: column_codes(lang, words, headers.len()),
        ..Table::default()
    }
}

/// The four forms as tables.
pub fn tables(r: &StatisticsReport, lang: Lang) -> Vec<Table> {
    let mut basic = form(lang, "stat_basic", r, &["name", "credit_code", "type_code", "type_name", "level", "parent", "office_area", "energy_users"], 6);
    let mut cons = form(lang, "stat_consumption", r, &["name", "carrier", "unit", "quantity", "tce", "cost_yuan"], 3);
    let mut dc = form(lang, "stat_data_centre", r, &["name", "room", "room_area", "room_kwh", "tce"], 2);
    let mut heat = form(lang, "stat_heating", r, &["name", "heating_type", "heated_area", "heat_gj", "heat_cost", "heating_tce"], 2);
    let name_of = |id: &Option<String>| id.as_ref().map(|p| r.institutions.iter().find(|i| &i.agency == p).map_or_else(|| p.clone(), |i| i.name.clone())).unwrap_or_default();
    for i in &r.institutions {
        basic.rows.push(vec![
            Cell::Text(i.name.clone()),
            Cell::Text(i.credit_code.clone().unwrap_or_default()),
            Cell::Text(i.type_code.clone().unwrap_or_default()),
            Cell::Text(i.type_name.clone().unwrap_or_default()),
            Cell::Text(labels::keyed(lang, "level", &i.level)),
            Cell::Text(name_of(&i.parent)),
            n(i.floor_area),
            count(i.energy_users),
        ]);
        for c in &i.carriers {
            cons.rows.push(vec![Cell::Text(i.name.clone()), Cell::Text(labels::carrier(lang, c.carrier)), Cell::Text(labels::unit(lang, c.unit)), n(c.quantity), n(c.tce), yuan(c.cost_yuan)]);
        }
        cons.rows.push(vec![Cell::Text(i.name.clone()), Cell::Text(labels::carrier(lang, Carrier::Water)), Cell::Text(labels::unit(lang, "m³")), on(i.water_m3), Cell::Num(None), Cell::Money(None)]);
        cons.push_total(vec![Cell::Text(i.name.clone()), Cell::Text(t(lang, "total_row")), Cell::Text(labels::unit(lang, "tce")), Cell::Num(None), n(i.total_tce), yuan(i.total_cost_yuan)]);
        for room in &i.rooms {
            dc.rows.push(vec![Cell::Text(i.name.clone()), Cell::Text(room.name.clone()), n(room.area), on(room.electricity_kwh), on(room.tce)]);
        }
        heat.rows.push(vec![
            Cell::Text(i.name.clone()),
            Cell::Text(labels::keyed(lang, "heating", &i.heating.heating_type)),
            n(i.heating.heated_area),
            on(i.heating.heat_gj),
            i.heating.heat_cost_yuan.map_or(Cell::Money(None), yuan),
            on(i.heating.heating_tce),
        ]);
    }
    let all = t(lang, "whole_jurisdiction_total");
    let sum = |f: &dyn Fn(&Institution) -> f64| r.institutions.iter().map(f).sum::<f64>();
    let users: Option<f64> = r.institutions.iter().map(|i| i.energy_users).sum();
    basic.push_total(vec![
        Cell::Text(all.clone()),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        n(sum(&|i| i.floor_area)),
        count(users),
    ]);
    // The jurisdiction's totals by carrier, then the grand total.
    let mut by_carrier: Vec<(Carrier, &'static str, f64, f64, f64)> = Vec::new();
    for c in r.institutions.iter().flat_map(|i| &i.carriers) {
        match by_carrier.iter_mut().find(|x| x.0 == c.carrier) {
            Some(x) => {
                x.2 += c.quantity;
                x.3 += c.tce;
                x.4 += c.cost_yuan;
            }
            None => by_carrier.push((c.carrier, c.unit, c.quantity, c.tce, c.cost_yuan)),
        }
    }
    for (c, unit, q, tce, cost) in by_carrier {
        cons.push_total(vec![Cell::Text(all.clone()), Cell::Text(labels::carrier(lang, c)), Cell::Text(labels::unit(lang, unit)), n(q), n(tce), yuan(cost)]);
    }
    cons.push_total(vec![Cell::Text(all.clone()), Cell::Text(labels::carrier(lang, Carrier::Water)), Cell::Text(labels::unit(lang, "m³")), on(r.institutions.iter().filter_map(|i| i.water_m3).reduce(|a, b| a + b)), Cell::Num(None), Cell::Money(None)]);
    cons.push_total(vec![Cell::Text(all.clone()), Cell::Text(t(lang, "total_row")), Cell::Text(labels::unit(lang, "tce")), Cell::Num(None), n(sum(&|i| i.total_tce)), yuan(sum(&|i| i.total_cost_yuan))]);
    let rooms = || r.institutions.iter().flat_map(|i| &i.rooms);
    if rooms().next().is_some() {
        let kwh: Option<f64> = rooms().map(|x| x.electricity_kwh).sum();
        let tce: Option<f64> = rooms().map(|x| x.tce).sum();
        dc.push_total(vec![Cell::Text(all.clone()), Cell::Text(t(lang, "total_row")), n(rooms().map(|x| x.area).sum()), on(kwh), on(tce)]);
    }
    let heating_tce: Option<f64> = r.institutions.iter().map(|i| i.heating.heating_tce).sum();
    heat.push_total(vec![
        Cell::Text(all),
        Cell::Text(String::new()),
        n(sum(&|i| i.heating.heated_area)),
        on(r.institutions.iter().filter_map(|i| i.heating.heat_gj).reduce(|a, b| a + b)),
        r.institutions.iter().filter_map(|i| i.heating.heat_cost_yuan).reduce(|a, b| a + b).map_or(Cell::Money(None), yuan),
        on(heating_tce),
    ]);
    vec![basic, cons, dc, heat]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_numbers_follow_the_forms() {
        assert_eq!(column_codes(Lang::Zh, 2, 5), ["甲", "乙", "1", "2", "3"]);
        assert_eq!(column_codes(Lang::En, 1, 3), ["A", "1", "2"]);
    }
}
