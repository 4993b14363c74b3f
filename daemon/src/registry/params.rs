//! Accounting parameters kept in the registry file: coefficients, CO2 factors, tariffs, fuel
//! densities, quota bands, targets and the heating season. Every value is a default from the
//! reference (`energy-accounting.md`) that a bureau can override; sources are named beside them.

use std::collections::BTreeMap;

use energy_wire::Carrier;
use serde::{Deserialize, Serialize};

use super::Level;

/// Which kgce coefficient electricity takes: 当量值 (calorific, 0.1229) or 等价值 (power-plant
/// equivalent, about 0.30-0.31). Printed on every report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ElectricityBasis {
    /// 当量值.
    #[default]
    Calorific,
    /// 等价值.
    Equivalent,
}

/// kgce per counter unit. Defaults: GB/T 2589 family as reprinted in DB37/T 2671-2019 Annex B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Coefficients {
    /// kgce/kWh, 当量值.
    pub electricity_calorific: f64,
    /// kgce/kWh, 等价值 (DB37/T 2671 uses 0.31).
    pub electricity_equivalent: f64,
    /// kgce/m³ (gas-field gas).
    pub natural_gas: f64,
    /// kgce/GJ.
    pub district_heat: f64,
    /// kgce/kg, low-pressure steam.
    pub steam: f64,
    /// kgce/kg.
    pub diesel: f64,
    /// kgce/kg.
    pub gasoline: f64,
    /// kgce/kg.
    pub fuel_oil: f64,
    /// kgce/kg.
    pub lpg: f64,
    /// kgce/kg, raw coal.
    pub coal: f64,
}

impl Default for Coefficients {
    fn default() -> Self {
        Coefficients {
            electricity_calorific: 0.1229,
            electricity_equivalent: 0.31,
            natural_gas: 1.2143,
            district_heat: 34.12,
            steam: 0.1286,
            diesel: 1.4571,
            gasoline: 1.4714,
            fuel_oil: 1.4286,
            lpg: 1.7143,
            coal: 0.7143,
        }
    }
}

/// Liquid fuel densities, kg/L, for fuels metered in litres. Typical values at 20 °C; set the
/// ones of your supplier's delivery notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Densities {
    pub diesel: f64,
    pub gasoline: f64,
    pub fuel_oil: f64,
}

impl Default for Densities {
    fn default() -> Self {
        Densities { diesel: 0.84, gasoline: 0.73, fuel_oil: 0.94 }
    }
}

/// CO2 factors other than grid electricity, kgCO2 per counter unit (per kg for fuels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Co2Factors {
    /// kgCO2/m³: 389.31 GJ/10⁴Nm³ × 15.3 tC/TJ × 0.99 × 44/12 (reference, section 5).
    pub natural_gas: f64,
    /// kgCO2/GJ: 0.11 tCO2/GJ (reference, section 5).
    pub district_heat: f64,
    /// kgCO2/kg: none by default (no public-institution default was found); set it to count steam.
    pub steam: f64,
    /// kgCO2/kg: 42.652 GJ/t × 20.2 tC/TJ × 0.98 × 44/12 (default NCV and carbon content of
    /// the national GHG accounting guidelines).
    pub diesel: f64,
    /// kgCO2/kg: 43.070 GJ/t × 18.9 tC/TJ × 0.98 × 44/12.
    pub gasoline: f64,
    /// kgCO2/kg: 41.816 GJ/t × 21.1 tC/TJ × 0.98 × 44/12.
    pub fuel_oil: f64,
    /// kgCO2/kg: 50.179 GJ/t × 17.2 tC/TJ × 0.98 × 44/12.
    pub lpg: f64,
    /// kgCO2/kg: 20.908 GJ/t × 26.37 tC/TJ × 0.94 × 44/12.
    pub coal: f64,
}

impl Default for Co2Factors {
    fn default() -> Self {
        Co2Factors {
            natural_gas: 2.162,
            district_heat: 110.0,
            steam: 0.0,
            diesel: 3.0959,
            gasoline: 2.9251,
            fuel_oil: 3.1705,
            lpg: 3.1013,
            coal: 1.9003,
        }
    }
}

/// A grid emission factor for electricity, kgCO2/kWh, of one data year and region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFactor {
    pub year: i32,
    pub region: String,
    pub kg_per_kwh: f64,
    /// Where the value comes from (printed by `check-config`); the built-in ones name the
    /// Ministry's notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The source of the built-in grid factors.
pub const BUILT_IN_GRID_SOURCE: &str = "built in: Ministry of Ecology and Environment notices (reference, section 5)";

/// Grid factors published by the Ministry of Ecology and Environment (reference, section 5).
pub fn default_grid_factors() -> Vec<GridFactor> {
    let mut out = Vec::new();
    for (year, national, north, shanxi) in [(2021, 0.5568, 0.7120, 0.7222), (2022, 0.5366, 0.6776, 0.7096), (2023, 0.5306, 0.6361, 0.6634)] {
        for (region, v) in [("national", national), ("north_china", north), ("shanxi", shanxi)] {
            out.push(GridFactor { year, region: region.into(), kg_per_kwh: v, source: Some(BUILT_IN_GRID_SOURCE.into()) });
        }
    }
    out
}

/// The built-in table with the registry's `[[grid_factor]]` entries: an entry of a (year,
/// region) the table has replaces that one, any other is added. Sorted by region and year.
pub fn merged_grid_factors(own: &[GridFactor]) -> Vec<GridFactor> {
    let mut out = default_grid_factors();
    for g in own {
        let g = GridFactor { source: Some(g.source.clone().unwrap_or_else(|| "registry [[grid_factor]]".into())), ..g.clone() };
        match out.iter_mut().find(|x| x.year == g.year && x.region == g.region) {
            Some(x) => *x = g,
            None => out.push(g),
        }
    }
    out.sort_by(|a, b| a.region.cmp(&b.region).then(a.year.cmp(&b.year)));
    out
}

/// A time-of-use band: hours `[from, to)` of the local day (wrapping past midnight when
/// `to <= from`) at `price`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouBand {
    pub from: u8,
    pub to: u8,
    pub price: f64,
    /// 尖峰/高峰/平段/低谷 as the tariff names the band; absent: derived from the band's price
    /// rank (the accounting's `tariff` module; docs/registry.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<BandName>,
}

/// The names officials give time-of-use periods (尖峰, 高峰, 平段, 低谷), highest price first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BandName {
    Sharp,
    Peak,
    Flat,
    Valley,
}

impl BandName {
    pub const ALL: [BandName; 4] = [BandName::Sharp, BandName::Peak, BandName::Flat, BandName::Valley];
    pub fn as_str(self) -> &'static str {
        match self {
            BandName::Sharp => "sharp",
            BandName::Peak => "peak",
            BandName::Flat => "flat",
            BandName::Valley => "valley",
        }
    }
    pub fn name_zh(self) -> &'static str {
        match self {
            BandName::Sharp => "尖峰",
            BandName::Peak => "高峰",
            BandName::Flat => "平段",
            BandName::Valley => "低谷",
        }
    }
    pub fn name_en(self) -> &'static str {
        match self {
            BandName::Sharp => "sharp peak",
            BandName::Peak => "peak",
            BandName::Flat => "flat",
            BandName::Valley => "valley",
        }
    }
}

impl std::str::FromStr for BandName {
    type Err = String;
    fn from_str(s: &str) -> Result<BandName, String> {
        BandName::ALL.into_iter().find(|b| b.as_str() == s).ok_or_else(|| {
            format!("time-of-use band name `{s}` is not one of sharp (尖峰), peak (高峰), flat (平段), valley (低谷)")
        })
    }
}

impl<'de> Deserialize<'de> for BandName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BandName, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Price of a carrier, yuan per counter unit (per kg for liquid fuels), for one year or all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    pub carrier: Carrier,
    /// Absent: every year without a tariff of its own.
    #[serde(default)]
    pub year: Option<i32>,
    /// Flat price; with `tou`, the price of hours no band covers.
    pub price: f64,
    #[serde(default)]
    pub tou: Vec<TouBand>,
}

/// The indicators the system computes. Names are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// 综合能耗, kgce.
    TotalEnergy,
    /// 单位建筑面积能耗 on the quota basis, kgce/(m²·a): energy net of separately metered
    /// special loads and transport over the floor area net of the excluded areas (DB37/T 2671).
    EnergyPerArea,
    /// 单位建筑面积能耗 on the statistics basis, kgce/(m²·a): the whole 综合能耗 over the
    /// building (floor) area (公共机构能源资源消费统计).
    EnergyPerBuildingArea,
    /// 单位建筑面积非供暖能耗, kgce/(m²·a).
    NonHeatingEnergyPerArea,
    /// 单位采暖面积供暖能耗, kgce/(m²·a).
    HeatingEnergyPerHeatedArea,
    /// 人均综合能耗, kgce/(person·a).
    EnergyPerPerson,
    /// 人均用水量, m³/(person·a).
    WaterPerPerson,
    /// 常规用能系统单位面积电耗, kWh/(m²·a).
    ElectricityPerArea,
    /// Carbon emissions, tCO2.
    CarbonTotal,
    /// Carbon per floor area, kgCO2/(m²·a).
    CarbonPerArea,
    /// Energy cost, yuan.
    EnergyCost,
    /// Water, m³.
    WaterTotal,
}

impl Indicator {
    pub const ALL: [Indicator; 12] = [
        Indicator::TotalEnergy,
        Indicator::EnergyPerBuildingArea,
        Indicator::EnergyPerArea,
        Indicator::NonHeatingEnergyPerArea,
        Indicator::HeatingEnergyPerHeatedArea,
        Indicator::EnergyPerPerson,
        Indicator::WaterPerPerson,
        Indicator::ElectricityPerArea,
        Indicator::CarbonTotal,
        Indicator::CarbonPerArea,
        Indicator::EnergyCost,
        Indicator::WaterTotal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Indicator::TotalEnergy => "total_energy",
            Indicator::EnergyPerArea => "energy_per_area",
            Indicator::EnergyPerBuildingArea => "energy_per_building_area",
            Indicator::NonHeatingEnergyPerArea => "non_heating_energy_per_area",
            Indicator::HeatingEnergyPerHeatedArea => "heating_energy_per_heated_area",
            Indicator::EnergyPerPerson => "energy_per_person",
            Indicator::WaterPerPerson => "water_per_person",
            Indicator::ElectricityPerArea => "electricity_per_area",
            Indicator::CarbonTotal => "carbon_total",
            Indicator::CarbonPerArea => "carbon_per_area",
            Indicator::EnergyCost => "energy_cost",
            Indicator::WaterTotal => "water_total",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Indicator::TotalEnergy => "kgce",
            Indicator::EnergyPerArea | Indicator::EnergyPerBuildingArea | Indicator::NonHeatingEnergyPerArea | Indicator::HeatingEnergyPerHeatedArea => "kgce/(m²·a)",
            Indicator::EnergyPerPerson => "kgce/(person·a)",
            Indicator::WaterPerPerson => "m³/(person·a)",
            Indicator::ElectricityPerArea => "kWh/(m²·a)",
            Indicator::CarbonTotal => "tCO2",
            Indicator::CarbonPerArea => "kgCO2/(m²·a)",
            Indicator::EnergyCost => "yuan",
            Indicator::WaterTotal => "m³",
        }
    }

    /// The standard Chinese term (reference, section 3).
    pub fn name_zh(self) -> &'static str {
        match self {
            Indicator::TotalEnergy => "综合能耗",
            Indicator::EnergyPerArea => "单位建筑面积能耗（定额口径）",
            Indicator::EnergyPerBuildingArea => "单位建筑面积能耗（统计口径）",
            Indicator::NonHeatingEnergyPerArea => "单位建筑面积非供暖能耗",
            Indicator::HeatingEnergyPerHeatedArea => "单位采暖面积供暖能耗",
            Indicator::EnergyPerPerson => "人均综合能耗",
            Indicator::WaterPerPerson => "人均用水量",
            Indicator::ElectricityPerArea => "常规用能系统单位面积电耗",
            Indicator::CarbonTotal => "碳排放总量",
            Indicator::CarbonPerArea => "单位建筑面积碳排放",
            Indicator::EnergyCost => "能源费用",
            Indicator::WaterTotal => "用水总量",
        }
    }

    /// The English label.
    pub fn name_en(self) -> &'static str {
        match self {
            Indicator::TotalEnergy => "Total energy",
            Indicator::EnergyPerArea => "Energy per floor area (quota basis)",
            Indicator::EnergyPerBuildingArea => "Energy per floor area (statistics basis)",
            Indicator::NonHeatingEnergyPerArea => "Non-heating energy per floor area",
            Indicator::HeatingEnergyPerHeatedArea => "Heating energy per heated area",
            Indicator::EnergyPerPerson => "Energy per person",
            Indicator::WaterPerPerson => "Water per person",
            Indicator::ElectricityPerArea => "Electricity per floor area",
            Indicator::CarbonTotal => "Carbon emissions",
            Indicator::CarbonPerArea => "Carbon per floor area",
            Indicator::EnergyCost => "Energy cost",
            Indicator::WaterTotal => "Water",
        }
    }
}

/// The basis of a per-area figure: `statistics` (公共机构能源资源消费统计: the whole 综合能耗
/// over the building area) or `quota` (the quota tables' basis, DB37/T 2671: energy net of
/// separately metered special loads and transport over the area net of the excluded areas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaBasis {
    Statistics,
    Quota,
}

impl AreaBasis {
    pub fn name_zh(self) -> &'static str {
        match self {
            AreaBasis::Statistics => "统计口径：综合能耗总量÷建筑面积",
            AreaBasis::Quota => "定额口径：扣除单独计量的数据中心、食堂、充电设施等特殊用能和交通用能后的能耗÷扣除车库、数据中心机房、食堂等面积后的建筑面积",
        }
    }
    pub fn name_en(self) -> &'static str {
        match self {
            AreaBasis::Statistics => "statistics basis: total energy over the building area",
            AreaBasis::Quota => "quota basis: energy net of separately metered special loads (data centre, kitchen, EV charging) and transport over the area net of garages, data-centre rooms and canteens",
        }
    }
}

impl Indicator {
    /// The basis of a per-area figure (`None`: not per area).
    pub fn area_basis(self) -> Option<AreaBasis> {
        match self {
            Indicator::EnergyPerBuildingArea => Some(AreaBasis::Statistics),
            Indicator::EnergyPerArea
            | Indicator::NonHeatingEnergyPerArea
            | Indicator::HeatingEnergyPerHeatedArea
            | Indicator::ElectricityPerArea
            | Indicator::CarbonPerArea => Some(AreaBasis::Quota),
            _ => None,
        }
    }
}

/// Heating type of a building, a key of heating quota bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Heating {
    #[default]
    District,
    Gas,
    Electric,
    None,
}

/// One quota band row (约束值 / 基准值 / 引导值) of a quota table. A row applies to an agency when
/// each key it gives matches (an absent key matches anything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Where the values come from, printed beside the band.
    pub source: String,
    pub indicator: Indicator,
    /// Administrative levels the row applies to.
    #[serde(default)]
    pub levels: Vec<Level>,
    #[serde(default)]
    pub climate_zone: Option<String>,
    #[serde(default)]
    pub heating: Option<Heating>,
    #[serde(default)]
    pub building_type: Option<String>,
    /// 约束值.
    pub binding: f64,
    /// 基准值.
    pub benchmark: f64,
    /// 引导值.
    pub guide: f64,
    /// The table (or clause) of the standard the row is taken from, e.g. "表2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The year of the standard's edition; by default the year at the end of its number
    /// (`DB37/T 2672-2019` is of 2019).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<i32>,
}

/// The example quota table shipped with the software (Shandong, DB37/T 2672-2019): rows equal
/// to one of its rows are the example's, not a table the bureau chose.
const EXAMPLE_QUOTAS: &str = include_str!("../../../deploy/quotas/shandong-db37-2672-2019.toml");

fn example_rows() -> &'static [Quota] {
    #[derive(Deserialize)]
    struct Table {
        quota: Vec<Quota>,
    }
    static ROWS: std::sync::OnceLock<Vec<Quota>> = std::sync::OnceLock::new();
    ROWS.get_or_init(|| toml::from_str::<Table>(EXAMPLE_QUOTAS).map(|t| t.quota).unwrap_or_default())
}

/// What the registry's quota rows are, for the warning of the bureau's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaTable {
    /// No quota rows: no band is classed.
    Missing,
    /// Only rows of the shipped example table (or rows that say they are examples).
    ExampleOnly,
    /// At least one row of the bureau's own.
    Explicit,
}

impl QuotaTable {
    pub fn of(quotas: &[Quota]) -> QuotaTable {
        if quotas.is_empty() {
            QuotaTable::Missing
        } else if quotas.iter().all(Quota::is_example) {
            QuotaTable::ExampleOnly
        } else {
            QuotaTable::Explicit
        }
    }
}

impl Quota {
    /// The year of the standard: `year`, else the four digits after the last `-` of the first
    /// word of `source` that has them.
    pub fn edition_year(&self) -> Option<i32> {
        self.year.or_else(|| {
            self.source.split(|c: char| c.is_whitespace() || c == '(' || c == '（').find_map(|w| {
                let tail = w.rsplit_once('-')?.1;
                (tail.len() == 4 && tail.chars().all(|c| c.is_ascii_digit())).then(|| tail.parse().ok()).flatten()
            })
        })
    }

    /// Whether the row is one of the shipped example table's, or says it is an example.
    pub fn is_example(&self) -> bool {
        let s = self.source.to_lowercase();
        s.contains("示例") || s.contains("example") || example_rows().iter().any(|r| r == self)
    }
}

/// Absolute budgets of one agency and year: per carrier in counter units, and totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub agency: String,
    pub year: i32,
    /// Per carrier, in the carrier's counter unit (kWh, m³, GJ, L or kg).
    #[serde(default)]
    pub carriers: BTreeMap<Carrier, f64>,
    /// Total energy, kgce.
    #[serde(default)]
    pub energy_kgce: Option<f64>,
    /// Energy cost, yuan.
    #[serde(default)]
    pub cost_yuan: Option<f64>,
}

/// A reduction target: `indicator` down by `percent` from `baseline_year` to `target_year`,
/// on a straight path in between. For one agency, or for every agency when `agency` is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reduction {
    #[serde(default)]
    pub agency: Option<String>,
    pub indicator: Indicator,
    pub baseline_year: i32,
    pub target_year: i32,
    pub percent: f64,
    /// The baseline value when the store has no data of the baseline year.
    #[serde(default)]
    pub baseline_value: Option<f64>,
    /// A label such as "十四五".
    #[serde(default)]
    pub label: Option<String>,
}

/// The heating season as month-day of start and end, e.g. "11-01" to "03-31" in Taiyuan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatingSeason {
    pub start: String,
    pub end: String,
}

impl Default for HeatingSeason {
    fn default() -> Self {
        HeatingSeason { start: "11-01".into(), end: "03-31".into() }
    }
}

impl HeatingSeason {
    /// (month, day) of start and end; `None` when malformed.
    pub fn parse(&self) -> Option<((u32, u32), (u32, u32))> {
        let md = |s: &str| -> Option<(u32, u32)> {
            let (m, d) = s.split_once('-')?;
            let (m, d) = (m.parse().ok()?, d.parse().ok()?);
            chrono::NaiveDate::from_ymd_opt(2024, m, d).map(|_| (m, d))
        };
        Some((md(&self.start)?, md(&self.end)?))
    }

    /// Whether local date (month, day) is inside the season.
    pub fn contains(&self, month: u32, day: u32) -> bool {
        let Some((s, e)) = self.parse() else { return false };
        let x = (month, day);
        if s <= e {
            s <= x && x <= e
        } else {
            x >= s || x <= e
        }
    }
}

/// Settings of the accounting section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountingSettings {
    pub electricity_basis: ElectricityBasis,
    /// Region of grid CO2 factors (`national`, `north_china`, `shanxi`, or one you add).
    pub grid_region: String,
    pub heating_season: HeatingSeason,
    /// Data completeness below which a year's figure is reported as incomplete, 0..=1.
    pub complete_coverage: f64,
}

impl Default for AccountingSettings {
    fn default() -> Self {
        AccountingSettings { electricity_basis: ElectricityBasis::Calorific, grid_region: "shanxi".into(), heating_season: HeatingSeason::default(), complete_coverage: 0.95 }
    }
}

/// How the assessment (年度目标责任考核, energy part) scores agencies: the `[assessment]` section
/// of the registry. Defaults are the reference's examples (section 6); every number can be set.
///
/// * Scorecard: each of `scorecard_indicators` is compared with the average of the agencies of
///   the same `kind` (the whole-year value, or the projection of a year in progress); the ratio
///   earns the points of the first step whose `max_ratio` it does not exceed, else
///   `scorecard_above`. An agency with no peer of its kind is not scored on the scorecard.
/// * Bands: each indicator with a quota band earns `band_points` by its class.
/// * The score is 100 × points earned ÷ points possible; the grade is the first of `grades`
///   (highest `min` first) whose `min` the score reaches. An agency that missed a target of a kind
///   listed in `binding` gets `binding_missed_grade` whatever its score.
///
/// ```toml
/// [assessment]
/// scorecard_indicators = ["energy_per_area", "energy_per_person", "water_per_person", "carbon_per_area"]
/// scorecard = [ { max_ratio = 0.9, points = 7 }, { max_ratio = 1.0, points = 6 },
///               { max_ratio = 1.1, points = 5 }, { max_ratio = 1.2, points = 4 } ]
/// scorecard_above = 0
/// band_points = { at_or_below_guide = 7, above_guide = 6, above_benchmark = 4, above_binding = 0 }
/// grades = [ { min = 95, name = "超额完成", name_en = "exceeded" }, { min = 80, name = "完成", name_en = "achieved" },
///            { min = 65, name = "基本完成", name_en = "mostly achieved" }, { min = 0, name = "未完成", name_en = "not achieved" } ]
/// binding = ["reduction", "quota_binding"]   # also "budget"
/// binding_missed_grade = "未完成"
/// incomplete = "no_score"   # or "score_measured_only"
/// ```
///
/// * Completeness: an indicator whose data is missing or below `accounting.complete_coverage`
///   is never scored, averaged or ranked. With `incomplete = "no_score"` (the default) an agency
///   with such an indicator among the scored ones (the scorecard's, and those with a quota band)
///   gets no score at all and says why; with `"score_measured_only"` it is scored on its
///   complete indicators. An agency with no complete scored indicator is never scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssessmentRules {
    pub scorecard_indicators: Vec<Indicator>,
    pub scorecard: Vec<ScoreStep>,
    pub scorecard_above: f64,
    pub band_points: BandPoints,
    pub grades: Vec<Grade>,
    pub binding: Vec<BindingKind>,
    /// The `name` of one of `grades`.
    pub binding_missed_grade: String,
    /// What an agency with incomplete data gets.
    pub incomplete: IncompleteRule,
    /// Which energy figures are scored: `"raw"` (metered, the default) or
    /// `"weather_normalised"` (under the typical year's weather, issue 23). Both are shown.
    #[serde(skip_serializing_if = "ScoreBasis::is_raw")]
    pub score_on: ScoreBasis,
}

/// The basis of the assessment's energy figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreBasis {
    #[default]
    Raw,
    WeatherNormalised,
}

impl ScoreBasis {
    pub fn is_raw(&self) -> bool {
        *self == ScoreBasis::Raw
    }
}

/// How an agency with an indicator whose data is missing or incomplete is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteRule {
    /// No score at all (the default).
    #[default]
    NoScore,
    /// Scored on the indicators whose data is complete.
    ScoreMeasuredOnly,
}

/// A step of the scorecard: a ratio to the same-kind average at most `max_ratio` earns `points`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreStep {
    pub max_ratio: f64,
    pub points: f64,
}

/// Points per band class (DB37/T 2671 Annex A classes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BandPoints {
    pub at_or_below_guide: f64,
    pub above_guide: f64,
    pub above_benchmark: f64,
    pub above_binding: f64,
}

impl Default for BandPoints {
    fn default() -> Self {
        BandPoints { at_or_below_guide: 7.0, above_guide: 6.0, above_benchmark: 4.0, above_binding: 0.0 }
    }
}

/// A grade reached at `min` points (of 100) and above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grade {
    pub min: f64,
    pub name: String,
    #[serde(default)]
    pub name_en: String,
}

/// Targets whose miss makes the grade `binding_missed_grade`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// A reduction target of the year (the reduction path).
    Reduction,
    /// An absolute budget of the annual plan.
    Budget,
    /// An indicator above its quota's 约束值.
    QuotaBinding,
}

impl Default for AssessmentRules {
    fn default() -> Self {
        let g = |min: f64, name: &str, en: &str| Grade { min, name: name.into(), name_en: en.into() };
        AssessmentRules {
            scorecard_indicators: vec![Indicator::EnergyPerArea, Indicator::EnergyPerPerson, Indicator::WaterPerPerson, Indicator::CarbonPerArea],
            scorecard: vec![
                ScoreStep { max_ratio: 0.9, points: 7.0 },
                ScoreStep { max_ratio: 1.0, points: 6.0 },
                ScoreStep { max_ratio: 1.1, points: 5.0 },
                ScoreStep { max_ratio: 1.2, points: 4.0 },
            ],
            scorecard_above: 0.0,
            band_points: BandPoints::default(),
            grades: vec![g(95.0, "超额完成", "exceeded"), g(80.0, "完成", "achieved"), g(65.0, "基本完成", "mostly achieved"), g(0.0, "未完成", "not achieved")],
            binding: vec![BindingKind::Reduction, BindingKind::QuotaBinding],
            binding_missed_grade: "未完成".into(),
            incomplete: IncompleteRule::NoScore,
            score_on: ScoreBasis::Raw,
        }
    }
}

impl AssessmentRules {
    /// Every problem of the section, each naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if self.scorecard.is_empty() && self.scorecard_indicators.iter().len() > 0 {
            out.push("assessment.scorecard: give at least one step, or no scorecard_indicators".into());
        }
        let mut last = f64::NEG_INFINITY;
        for (i, s) in self.scorecard.iter().enumerate() {
            if !(s.max_ratio.is_finite() && s.max_ratio > 0.0) || s.max_ratio <= last {
                out.push(format!("assessment.scorecard[{i}]: max_ratio {} must be positive and above the step before", s.max_ratio));
            }
            if !ok(s.points) {
                out.push(format!("assessment.scorecard[{i}]: points must be a non-negative number"));
            }
            last = s.max_ratio;
        }
        if !ok(self.scorecard_above) {
            out.push("assessment.scorecard_above must be a non-negative number".into());
        }
        let b = &self.band_points;
        for (k, v) in [("at_or_below_guide", b.at_or_below_guide), ("above_guide", b.above_guide), ("above_benchmark", b.above_benchmark), ("above_binding", b.above_binding)] {
            if !ok(v) {
                out.push(format!("assessment.band_points.{k} must be a non-negative number"));
            }
        }
        if self.grades.is_empty() {
            out.push("assessment.grades: give at least one grade".into());
        }
        let mut prev = f64::INFINITY;
        for (i, g) in self.grades.iter().enumerate() {
            if !(0.0..=100.0).contains(&g.min) || g.min >= prev {
                out.push(format!("assessment.grades[{i}] `{}`: min {} must be within 0-100 and below the grade before (highest first)", g.name, g.min));
            }
            if g.name.trim().is_empty() {
                out.push(format!("assessment.grades[{i}]: name is empty"));
            }
            prev = g.min;
        }
        if self.grades.last().is_some_and(|g| g.min > 0.0) {
            out.push("assessment.grades: the last grade must start at min = 0 so that every score has a grade".into());
        }
        if !self.grades.iter().any(|g| g.name == self.binding_missed_grade) {
            out.push(format!("assessment.binding_missed_grade `{}` is not the name of one of assessment.grades", self.binding_missed_grade));
        }
        out
    }

    /// The most points a scorecard item earns.
    pub fn scorecard_max(&self) -> f64 {
        self.scorecard.iter().map(|s| s.points).fold(self.scorecard_above, f64::max)
    }

    /// The most points a band item earns.
    pub fn band_max(&self) -> f64 {
        let b = &self.band_points;
        [b.at_or_below_guide, b.above_guide, b.above_benchmark, b.above_binding].into_iter().fold(0.0, f64::max)
    }
}
