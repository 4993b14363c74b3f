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
}

/// Grid factors published by the Ministry of Ecology and Environment (reference, section 5).
pub fn default_grid_factors() -> Vec<GridFactor> {
    let mut out = Vec::new();
    for (year, national, north, shanxi) in [(2021, 0.5568, 0.7120, 0.7222), (2022, 0.5366, 0.6776, 0.7096), (2023, 0.5306, 0.6361, 0.6634)] {
        for (region, v) in [("national", national), ("north_china", north), ("shanxi", shanxi)] {
            out.push(GridFactor { year, region: region.into(), kg_per_kwh: v });
        }
    }
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
    /// 单位建筑面积能耗, kgce/(m²·a).
    EnergyPerArea,
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
    pub const ALL: [Indicator; 11] = [
        Indicator::TotalEnergy,
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
            Indicator::EnergyPerArea | Indicator::NonHeatingEnergyPerArea | Indicator::HeatingEnergyPerHeatedArea => "kgce/(m²·a)",
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
            Indicator::EnergyPerArea => "单位建筑面积能耗",
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
            Indicator::EnergyPerArea => "Energy per floor area",
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
