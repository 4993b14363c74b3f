//! The registry: agencies, buildings, meters, meter events, targets, quota bands and the
//! accounting parameters, kept as TOML files a bureau can keep in version control (the main
//! file may `include` others, such as a quota table). Loaded and validated with every error
//! reported at once. The schema is documented in docs/registry.md and in
//! `deploy/registry.example.toml`.
//!
//! ```toml
//! include = ["quotas/shandong-db37-2672-2019.toml"]   # optional, relative to this file
//!
//! [accounting]
//! electricity_basis = "calorific"   # 当量值 (0.1229 kgce/kWh) or "equivalent" (等价值)
//! grid_region = "shanxi"
//!
//! [assessment]                      # optional: scoring rules of the assessment (reports);
//! grades = [ { min = 95, name = "超额完成" }, { min = 80, name = "完成" },   # defaults: see
//!            { min = 65, name = "基本完成" }, { min = 0, name = "未完成" } ]  # params::AssessmentRules
//!
//! [[agency]]
//! id = "prov-finance"
//! name = "省财政厅"
//! level = "province"          # province | city | county
//! parent = "prov-gov"         # optional: the agency whose jurisdiction it is in
//! kind = "government"         # optional: agencies of one kind are compared with each other
//! headcount = { 2025 = 310, 2026 = 320 }   # 用能人数 by year
//!
//! [[building]]
//! id = "bldg-a"
//! name = "省政务中心A座"
//! floor_area = 14000.0        # m²
//! heated_area = 12500.0       # m², optional (defaults to floor_area)
//! excluded = [ { use = "garage", area = 1500.0 }, { use = "data_centre", area = 200.0 } ]
//! climate_zone = "cold"       # a key of the quota tables
//! heating = "district"        # district | gas | electric | none
//! occupants = [ { agency = "prov-drc", share = 0.6 }, { agency = "prov-finance", share = 0.4 } ]
//! # or by area: [ { agency = "prov-drc", area = 7200.0 }, { agency = "prov-finance", area = 4800.0 } ]
//! # optional: later occupants from a local date on (an agency moves, the shares change)
//! occupancy = [ { from = "2026-07-01", occupants = [ { agency = "prov-drc", share = 1.0 } ] } ]
//! # optional: per carrier, split by headcount, by area (the occupants' shares, the default) or fixed
//! allocation = { water = "headcount", district_heat = "area", natural_gas = { prov-drc = 0.7, prov-finance = 0.3 } }
//!
//! [[meter]]
//! id = "bldg-a-elec"
//! building = "bldg-a"
//! carrier = "electricity"     # electricity | water | natural_gas | district_heat | steam | diesel | ...
//! quantity = "active_energy_import"   # optional: the carrier's counter by default
//! multiplier = 1.0            # optional: CT/PT ratio applied to the counter
//! end_use = "general"         # general | heating | cooling | data_centre | kitchen | transport | ev_charging | other
//! agency = "prov-drc"         # optional: a sub-meter that serves one agency only
//! parent = "bldg-a-main"      # optional: the meter upstream of this one (sub-metering tree)
//! rollover = 99999999.0       # optional: the largest value the register shows (nameplate: 99999
//!                             # for five digits, 99999.99 for five digits and two decimals); it
//!                             # wraps from it to 0, so the range is one step of the last digit more
//! gateway = "gw-bldg-a"       # the gateway whose readings of it are accepted (auth.rs)
//! formula = "bldg-a-main - bldg-a-tenant"   # a virtual meter: a sum of other meters
//! accounted = true            # false: shown, but not counted in any total
//!
//! [[event]]                   # a replacement; `old_final` and `new_initial` each in its own
//! meter = "bldg-a-elec"       # meter's units (the register, before the CT/PT ratio)
//! kind = "replacement"
//! time = "2026-03-01T10:00:00+08:00"
//! old_final = 48213.5         # below the old meter's last reading: a warning, the reading wins
//! new_initial = 0.0
//! multiplier = 80.0           # optional: the new meter's CT/PT ratio from `time` on
//! by = "王工"
//! reason = "电表故障更换"
//!
//! [[grid_factor]]             # adds to or overrides the built-in table for its (year, region)
//! year = 2024
//! region = "shanxi"
//! kg_per_kwh = 0.6512
//! source = "..."              # optional, printed by check-config
//! ```

pub mod events;
pub mod national;
pub mod params;
pub mod projects;
pub mod scope;
pub mod statistics;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use energy_wire::{Carrier, Quantity};
use serde::{Deserialize, Serialize};

pub use events::{EventError, EventFields, EventKind, EventRecord};
pub use params::*;
pub use scope::{scope_members, Scope, UnknownScope};
pub use projects::{is_weather_meter, Adjustment, ContractType, Project};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Province,
    City,
    County,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Province => "province",
            Level::City => "city",
            Level::County => "county",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub level: Level,
    #[serde(default)]
    pub parent: Option<String>,
    /// Agency type; agencies of one type are scored against each other's average.
    #[serde(default = "general")]
    pub kind: String,
    /// 用能人数 (staff on post plus non-establishment staff, daily average) by year.
    #[serde(default)]
    pub headcount: BTreeMap<String, f64>,
    /// 统一社会信用代码, for the statistics forms ([`statistics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_code: Option<String>,
    /// 单位类型代码 of the statistics forms, e.g. "01" 国家机关 ([`statistics::TYPE_CODES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_code: Option<String>,
    /// The signature block of the reports: 负责人, 填报人, 联系电话.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsible: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl Agency {
    /// Headcount of `year`, or of the latest earlier year given.
    pub fn headcount(&self, year: i32) -> Option<f64> {
        self.headcount.iter().filter_map(|(y, n)| y.parse::<i32>().ok().map(|y| (y, *n))).filter(|(y, _)| *y <= year).max_by_key(|(y, _)| *y).map(|(_, n)| n)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Occupant {
    pub agency: String,
    /// Explicit share, or computed from `area` at load.
    #[serde(default)]
    pub share: f64,
    /// Area the agency uses, m², when the allocation key is area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<f64>,
}

/// Part of a building left out of area indicators.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Excluded {
    #[serde(rename = "use")]
    pub what: ExcludedUse,
    pub area: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExcludedUse {
    Garage,
    DataCentre,
    Canteen,
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Building {
    pub id: String,
    pub name: String,
    pub floor_area: f64,
    #[serde(default)]
    pub heated_area: Option<f64>,
    #[serde(default)]
    pub excluded: Vec<Excluded>,
    #[serde(default)]
    pub climate_zone: Option<String>,
    #[serde(default)]
    pub building_type: Option<String>,
    #[serde(default)]
    pub heating: Heating,
    /// The occupants (from the start, or until the first `occupancy` change).
    pub occupants: Vec<Occupant>,
    /// Later occupants, each list from a local date on (an agency moves in or out, the shares
    /// change), in date order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub occupancy: Vec<OccupancyChange>,
    /// How a carrier's consumption is split between the occupants, when not by their shares
    /// (areas): `"headcount"` (their headcounts of the year), `"area"` (the default), or fixed
    /// shares `{ agency = share, ... }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocation: BTreeMap<Carrier, AllocationKey>,
    /// The national 10-character building id (division code, type letter, serial), under which
    /// the building is reported upward (registry/national.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id: Option<String>,
    /// The meter whose `outdoor_temperature` is this building's weather (savings, issue 23).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weather: Option<String>,
}

/// The occupants of a building from a local date on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OccupancyChange {
    /// `YYYY-MM-DD`: the first local day of these occupants.
    pub from: String,
    pub occupants: Vec<Occupant>,
}

impl OccupancyChange {
    pub fn date(&self) -> Option<chrono::NaiveDate> {
        crate::time::parse_date(&self.from)
    }
}

/// How one carrier's consumption of a shared building is split between its occupants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AllocationKey {
    /// `"area"` (the occupants' shares, from their areas when given) or `"headcount"`.
    Key(String),
    /// Fixed shares by agency, adding up to 1.
    Shares(BTreeMap<String, f64>),
}

/// Each agency's share of a meter's own consumption on each day of a period.
#[derive(Debug, Clone, PartialEq)]
pub enum DayShares {
    /// The same every day.
    All(f64),
    /// One per day.
    Days(Vec<f64>),
}

impl DayShares {
    pub fn mean(&self) -> f64 {
        match self {
            DayShares::All(s) => *s,
            DayShares::Days(v) if v.is_empty() => 0.0,
            DayShares::Days(v) => v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

impl Building {
    /// Floor area for indicators: floor area less garages, data centres, canteens and the rest
    /// of `excluded` (DB37/T 2671).
    pub fn indicator_area(&self) -> f64 {
        self.floor_area - self.excluded.iter().map(|e| e.area).sum::<f64>()
    }
    pub fn heated(&self) -> f64 {
        self.heated_area.unwrap_or(self.floor_area)
    }
}

/// What a meter's energy is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndUse {
    General,
    Heating,
    Cooling,
    DataCentre,
    Kitchen,
    Transport,
    EvCharging,
    Other,
}

impl EndUse {
    pub const ALL: [EndUse; 8] =
        [EndUse::General, EndUse::Heating, EndUse::Cooling, EndUse::DataCentre, EndUse::Kitchen, EndUse::Transport, EndUse::EvCharging, EndUse::Other];
    pub fn as_str(self) -> &'static str {
        match self {
            EndUse::General => "general",
            EndUse::Heating => "heating",
            EndUse::Cooling => "cooling",
            EndUse::DataCentre => "data_centre",
            EndUse::Kitchen => "kitchen",
            EndUse::Transport => "transport",
            EndUse::EvCharging => "ev_charging",
            EndUse::Other => "other",
        }
    }
    /// Special loads: counted in total energy, left out of area indicators (DB37/T 2671).
    pub fn is_special(self) -> bool {
        matches!(self, EndUse::DataCentre | EndUse::Kitchen | EndUse::EvCharging)
    }
}

/// An end use that is not one of [`EndUse::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown end use `{}` (known: {})", .0, EndUse::ALL.map(EndUse::as_str).join(", "))]
pub struct UnknownEndUse(pub String);

impl std::str::FromStr for EndUse {
    type Err = UnknownEndUse;
    fn from_str(s: &str) -> Result<Self, UnknownEndUse> {
        EndUse::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| UnknownEndUse(s.to_string()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    pub id: String,
    pub building: String,
    pub carrier: Carrier,
    #[serde(default)]
    pub quantity: Option<Quantity>,
    #[serde(default = "one")]
    pub multiplier: f64,
    /// Default: heating for district heat and steam, general otherwise.
    #[serde(default)]
    pub end_use: Option<EndUse>,
    #[serde(default)]
    pub agency: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub rollover: Option<f64>,
    /// A virtual meter: `a + b - c` over other meters' consumption.
    #[serde(default)]
    pub formula: Option<String>,
    #[serde(default = "yes")]
    pub accounted: bool,
    /// Physical maximum consumption per hour (counter units after the multiplier); a larger jump
    /// is a bad reading.
    #[serde(default)]
    pub max_per_hour: Option<f64>,
    /// The gateway whose readings of this meter are accepted: a gateway (its token, or its MQTT
    /// topic) writes only the meters assigned to it (see `auth::gateway_refusal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The national energy item code (分类分项, e.g. `01A00`; registry/national.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    /// The national-protocol collector whose readings this meter takes: its building id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
    /// The meter id the collector reports (`<meter id=..>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_meter: Option<String>,
    /// The function id of that meter (`<function id=..>`); absent: the meter's only function,
    /// or the one whose `coding` is this meter's `item_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The meter whose `outdoor_temperature` is this meter's weather, when not its building's
    /// (savings, issue 23).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weather: Option<String>,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn general() -> String {
    "general".into()
}

impl Meter {
    /// The counter quantity consumption is computed from.
    pub fn counter(&self) -> Quantity {
        self.quantity.unwrap_or(self.carrier.counter())
    }
    pub fn end_use(&self) -> EndUse {
        self.end_use.unwrap_or(match self.carrier {
            Carrier::DistrictHeat | Carrier::Steam => EndUse::Heating,
            _ => EndUse::General,
        })
    }
    pub fn is_virtual(&self) -> bool {
        self.formula.is_some()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Further files merged into this one, relative to it.
    #[serde(default)]
    pub include: Vec<PathBuf>,
    #[serde(default)]
    pub accounting: AccountingSettings,
    #[serde(default)]
    pub coefficients: Coefficients,
    #[serde(default)]
    pub densities: Densities,
    #[serde(default)]
    pub co2: Co2Factors,
    /// The registry's own grid factors; they add to or override the built-in table year by
    /// year ([`params::merged_grid_factors`]; the table in force is [`Registry::grid_factors`]).
    #[serde(default, rename = "grid_factor")]
    pub grid_factors: Vec<GridFactor>,
    #[serde(default, rename = "tariff")]
    pub tariffs: Vec<Tariff>,
    #[serde(default, rename = "quota")]
    pub quotas: Vec<Quota>,
    #[serde(default, rename = "budget")]
    pub budgets: Vec<Budget>,
    #[serde(default, rename = "reduction")]
    pub reductions: Vec<Reduction>,
    #[serde(default, rename = "agency")]
    pub agencies: Vec<Agency>,
    #[serde(default, rename = "building")]
    pub buildings: Vec<Building>,
    #[serde(default, rename = "meter")]
    pub meters: Vec<Meter>,
    /// As written; [`Registry::events`] holds them checked.
    #[serde(default, rename = "event")]
    pub events: Vec<EventFields>,
    /// Scoring rules of the assessment (reports); the reference's defaults when absent.
    #[serde(default)]
    pub assessment: AssessmentRules,
    /// Data-centre rooms of the statistics forms.
    #[serde(default, rename = "data_centre")]
    pub data_centres: Vec<statistics::DataCentreRoom>,
    /// Retrofits and energy performance contracts whose savings are verified (issue 23).
    #[serde(default, rename = "project")]
    pub projects: Vec<Project>,
}

/// An included file holds lists only; they are appended to the main file's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludedFile {
    #[serde(default, rename = "grid_factor")]
    grid_factors: Vec<GridFactor>,
    #[serde(default, rename = "tariff")]
    tariffs: Vec<Tariff>,
    #[serde(default, rename = "quota")]
    quotas: Vec<Quota>,
    #[serde(default, rename = "budget")]
    budgets: Vec<Budget>,
    #[serde(default, rename = "reduction")]
    reductions: Vec<Reduction>,
    #[serde(default, rename = "agency")]
    agencies: Vec<Agency>,
    #[serde(default, rename = "building")]
    buildings: Vec<Building>,
    #[serde(default, rename = "meter")]
    meters: Vec<Meter>,
    #[serde(default, rename = "event")]
    events: Vec<EventFields>,
    #[serde(default, rename = "data_centre")]
    data_centres: Vec<statistics::DataCentreRoom>,
    #[serde(default, rename = "project")]
    projects: Vec<Project>,
}

/// A validated registry with indexes.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub file: RegistryFile,
    agencies: HashMap<String, usize>,
    buildings: HashMap<String, usize>,
    meters: HashMap<String, usize>,
    children: HashMap<String, Vec<usize>>,
    /// The `[[event]]` lists, checked.
    events: Vec<EventRecord>,
    /// The grid factors in force: built-in, with the registry's added or overriding.
    grid: Vec<GridFactor>,
    /// Which registry this is: a number given to each one built (its clones share it), so that
    /// results computed from it can be told from those of another (the accounting engine's
    /// caches). The default registry's is 0.
    stamp: u64,
}

/// The stamp of the next registry built.
static NEXT_STAMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Every problem found, one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct RegistryErrors(pub Vec<String>);

impl Registry {
    pub fn load(path: &Path) -> Result<Registry, RegistryErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        let mut file: RegistryFile =
            toml::from_str(&text).map_err(|e| RegistryErrors(vec![format!("{}: {}", path.display(), e.to_string().trim_end().replace('\n', " "))]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        for inc in file.include.clone() {
            let p = base.join(&inc);
            let parsed = std::fs::read_to_string(&p)
                .map_err(|e| format!("{}: include `{}`: cannot read: {e}", path.display(), inc.display()))
                .and_then(|t| toml::from_str::<IncludedFile>(&t).map_err(|e| format!("{}: {}", p.display(), e.to_string().trim_end().replace('\n', " "))));
            match parsed {
                Ok(i) => {
                    file.grid_factors.extend(i.grid_factors);
                    file.tariffs.extend(i.tariffs);
                    file.quotas.extend(i.quotas);
                    file.budgets.extend(i.budgets);
                    file.reductions.extend(i.reductions);
                    file.agencies.extend(i.agencies);
                    file.buildings.extend(i.buildings);
                    file.meters.extend(i.meters);
                    file.events.extend(i.events);
                    file.data_centres.extend(i.data_centres);
                    file.projects.extend(i.projects);
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(RegistryErrors(errors));
        }
        Registry::new(file).map_err(|e| RegistryErrors(e.0.into_iter().map(|m| format!("{}: {m}", path.display())).collect()))
    }

    /// Parses one file's text (no includes).
    pub fn parse(text: &str) -> Result<Registry, RegistryErrors> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| RegistryErrors(vec![e.to_string().trim_end().replace('\n', " ")]))?;
        if !file.include.is_empty() {
            return Err(RegistryErrors(vec!["`include` needs a file path: load the registry from its file".into()]));
        }
        Registry::new(file)
    }

    pub fn new(mut file: RegistryFile) -> Result<Registry, RegistryErrors> {
        let errors = validate::validate(&file);
        if !errors.is_empty() {
            return Err(RegistryErrors(errors));
        }
        // Area allocation keys become shares.
        let by_area = |occupants: &mut Vec<Occupant>| {
            let total: f64 = occupants.iter().filter_map(|o| o.area).sum();
            if total > 0.0 {
                for o in occupants.iter_mut() {
                    o.share = o.area.unwrap_or(0.0) / total;
                }
            }
        };
        // A weather meter (quantity outdoor_temperature) has no consumption to account.
        for m in file.meters.iter_mut().filter(|m| is_weather_meter(m)) {
            m.accounted = false;
        }
        for b in &mut file.buildings {
            by_area(&mut b.occupants);
            for c in &mut b.occupancy {
                by_area(&mut c.occupants);
            }
        }
        let agencies = file.agencies.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        let buildings = file.buildings.iter().enumerate().map(|(i, b)| (b.id.clone(), i)).collect();
        let meters = file.meters.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect();
        let mut children: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, m) in file.meters.iter().enumerate() {
            if let Some(p) = &m.parent {
                children.entry(p.clone()).or_default().push(i);
            }
        }
        let grid = merged_grid_factors(&file.grid_factors);
        // Checked by `validate`.
        let events = file.events.iter().filter_map(|e| EventRecord::try_from(e.clone()).ok()).collect();
        let stamp = NEXT_STAMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Registry { file, agencies, buildings, meters, children, events, grid, stamp })
    }

    /// Which registry this is (see the field): equal for a registry and its clones only.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies.get(id).map(|&i| &self.file.agencies[i])
    }
    pub fn building(&self, id: &str) -> Option<&Building> {
        self.buildings.get(id).map(|&i| &self.file.buildings[i])
    }
    pub fn project(&self, id: &str) -> Option<&Project> {
        self.file.projects.iter().find(|p| p.id == id)
    }
    /// The weather meter of a meter: its own `weather`, else its building's.
    pub fn weather_of_meter<'a>(&'a self, m: &'a Meter) -> Option<&'a str> {
        m.weather.as_deref().or_else(|| self.building(&m.building).and_then(|b| b.weather.as_deref()))
    }
    pub fn meter(&self, id: &str) -> Option<&Meter> {
        self.meters.get(id).map(|&i| &self.file.meters[i])
    }
    /// The meter events of the registry's `[[event]]` lists, in order.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }
    /// Meters whose `parent` is `id`.
    pub fn children(&self, id: &str) -> impl Iterator<Item = &Meter> {
        self.children.get(id).into_iter().flatten().map(|&i| &self.file.meters[i])
    }

    /// The share of a meter's own consumption attributed to an agency: 1 for a sub-meter
    /// assigned to it, otherwise the agency's allocation share of the meter's building (by the
    /// carrier's allocation key, over the first occupants).
    pub fn share(&self, meter: &Meter, agency: &str) -> f64 {
        self.attribution(meter).into_iter().filter(|(a, _)| *a == agency).map(|(_, s)| s).sum()
    }

    /// Agencies a meter's own consumption goes to, with their shares (adding up to 1), by the
    /// carrier's allocation key over the building's first occupants (headcounts of the latest
    /// year given).
    pub fn attribution<'a>(&'a self, meter: &'a Meter) -> Vec<(&'a str, f64)> {
        match &meter.agency {
            Some(a) => vec![(a.as_str(), 1.0)],
            None => self.building(&meter.building).map(|b| self.split(b, &b.occupants, meter.carrier, None)).unwrap_or_default(),
        }
    }

    /// An agency's share of a meter's own consumption on a local date (dated occupancy, the
    /// carrier's allocation key with that year's headcounts).
    pub fn share_on(&self, meter: &Meter, agency: &str, date: chrono::NaiveDate) -> f64 {
        match (&meter.agency, self.building(&meter.building)) {
            (Some(a), _) => f64::from(u8::from(a == agency)),
            (None, Some(b)) => {
                self.split(b, self.occupants_on(b, date), meter.carrier, Some(chrono::Datelike::year(&date))).into_iter().filter(|(a, _)| *a == agency).map(|(_, s)| s).sum()
            }
            (None, None) => 0.0,
        }
    }

    /// Whether a meter's split between agencies changes with the date (its building has dated
    /// occupancy, or splits its carrier by headcount).
    pub fn split_is_dated(&self, meter: &Meter) -> bool {
        meter.agency.is_none()
            && self.building(&meter.building).is_some_and(|b| !b.occupancy.is_empty() || matches!(b.allocation.get(&meter.carrier), Some(AllocationKey::Key(k)) if k == "headcount"))
    }

    /// Whether an agency occupies a meter's building at any time (or the meter is its own).
    pub fn ever_served(&self, meter: &Meter, agency: &str) -> bool {
        match &meter.agency {
            Some(a) => a == agency,
            None => self.building(&meter.building).is_some_and(|b| b.occupants.iter().chain(b.occupancy.iter().flat_map(|c| &c.occupants)).any(|o| o.agency == agency)),
        }
    }

    /// The occupants of a building on a local date.
    pub fn occupants_on<'a>(&self, b: &'a Building, date: chrono::NaiveDate) -> &'a [Occupant] {
        b.occupancy.iter().rev().find(|c| c.date().is_some_and(|d| d <= date)).map_or(&b.occupants, |c| &c.occupants)
    }

    /// The split of a carrier's consumption in `b` between `occupants` in `year` (`None`: the
    /// latest headcounts given): the carrier's allocation key, or the occupants' shares.
    pub fn split<'a>(&'a self, b: &'a Building, occupants: &'a [Occupant], carrier: Carrier, year: Option<i32>) -> Vec<(&'a str, f64)> {
        match b.allocation.get(&carrier) {
            Some(AllocationKey::Shares(m)) => m.iter().map(|(a, s)| (a.as_str(), *s)).collect(),
            Some(AllocationKey::Key(k)) if k == "headcount" => {
                let heads: Vec<Option<f64>> = occupants
                    .iter()
                    .map(|o| self.agency(&o.agency).and_then(|a| match year {
                        Some(y) => a.headcount(y),
                        None => a.headcount.values().last().copied(),
                    }))
                    .collect();
                let total: f64 = heads.iter().flatten().sum();
                if heads.iter().all(Option::is_some) && total > 0.0 {
                    occupants.iter().zip(heads).map(|(o, h)| (o.agency.as_str(), h.unwrap_or(0.0) / total)).collect()
                } else {
                    occupants.iter().map(|o| (o.agency.as_str(), o.share)).collect()
                }
            }
            _ => occupants.iter().map(|o| (o.agency.as_str(), o.share)).collect(),
        }
    }

    /// Agencies a meter's own consumption goes to on each of `days` local days from `start`,
    /// following the building's occupancy changes and the carrier's allocation key (headcounts
    /// of `start`'s year).
    pub fn attribution_days<'a>(&'a self, meter: &'a Meter, start: chrono::NaiveDate, days: usize) -> Vec<(&'a str, DayShares)> {
        if let Some(a) = &meter.agency {
            return vec![(a.as_str(), DayShares::All(1.0))];
        }
        let Some(b) = self.building(&meter.building) else { return Vec::new() };
        let year = Some(chrono::Datelike::year(&start));
        // Segments of days with one list of occupants: (first day, occupants).
        let mut segments: Vec<(usize, &[Occupant])> = vec![(0, self.occupants_on(b, start))];
        for c in &b.occupancy {
            let Some(d) = c.date() else { continue };
            let i = (d - start).num_days();
            if i > 0 && (i as usize) < days {
                segments.push((i as usize, &c.occupants));
            }
        }
        if segments.len() == 1 {
            return self.split(b, segments[0].1, meter.carrier, year).into_iter().map(|(a, s)| (a, DayShares::All(s))).collect();
        }
        let mut out: Vec<(&str, Vec<f64>)> = Vec::new();
        for (k, &(from, occupants)) in segments.iter().enumerate() {
            let to = segments.get(k + 1).map_or(days, |s| s.0);
            for (a, s) in self.split(b, occupants, meter.carrier, year) {
                let i = match out.iter().position(|(x, _)| *x == a) {
                    Some(i) => i,
                    None => {
                        out.push((a, vec![0.0; days]));
                        out.len() - 1
                    }
                };
                for d in &mut out[i].1[from..to] {
                    *d = s;
                }
            }
        }
        out.into_iter().map(|(a, v)| (a, DayShares::Days(v))).collect()
    }

    /// Meters with a non-zero share for the agency, with that share.
    pub fn meters_of_agency(&self, agency: &str) -> Vec<(&Meter, f64)> {
        self.file.meters.iter().map(|m| (m, self.share(m, agency))).filter(|(_, s)| *s > 0.0).collect()
    }

    pub fn meters_of_building(&self, building: &str) -> Vec<&Meter> {
        self.file.meters.iter().filter(|m| m.building == building).collect()
    }

    /// The agency and every agency below it (its jurisdiction), the agency first.
    pub fn subtree(&self, agency: &str) -> Vec<&Agency> {
        let mut out: Vec<&Agency> = self.agency(agency).into_iter().collect();
        let mut i = 0;
        while i < out.len() {
            let id = out[i].id.clone();
            out.extend(self.file.agencies.iter().filter(|a| a.parent.as_deref() == Some(id.as_str())));
            i += 1;
        }
        out
    }

    /// [`Registry::agency_areas`] over `days` local days from `start`: each building's share
    /// averaged over the days, following its occupancy changes (an agency that moved in on 1 July
    /// counts about half the year's area).
    pub fn agency_areas_over(&self, agency: &str, start: chrono::NaiveDate, days: usize) -> AgencyAreas {
        if self.file.buildings.iter().all(|b| b.occupancy.is_empty()) || days == 0 {
            return self.agency_areas(agency);
        }
        let share_of = |occ: &[Occupant]| -> f64 { occ.iter().filter(|o| o.agency == agency).map(|o| o.share).sum() };
        self.areas_by(|b| {
            let mut share = 0.0;
            let mut day = 0usize;
            let mut current = share_of(self.occupants_on(b, start));
            for c in &b.occupancy {
                let Some(d) = c.date() else { continue };
                let i = (d - start).num_days();
                if i > 0 && (i as usize) < days {
                    share += current * (i as usize - day) as f64;
                    day = i as usize;
                    current = share_of(&c.occupants);
                }
            }
            (share + current * (days - day) as f64) / days as f64
        })
    }

    /// Floor area (for indicators), heated area and the largest building of an agency: the sum
    /// over the buildings it occupies of its share of each.
    pub fn agency_areas(&self, agency: &str) -> AgencyAreas {
        self.areas_by(|b| b.occupants.iter().filter(|o| o.agency == agency).map(|o| o.share).sum())
    }

    /// Areas from an agency's share of each building.
    fn areas_by(&self, share_of: impl Fn(&Building) -> f64) -> AgencyAreas {
        let mut out = AgencyAreas::default();
        let mut largest = 0.0;
        for b in &self.file.buildings {
            let share = share_of(b);
            if share > 0.0 {
                out.floor_area += share * b.indicator_area();
                out.building_area += share * b.floor_area;
                out.heated_area += share * b.heated();
                if share * b.floor_area > largest {
                    largest = share * b.floor_area;
                    out.main_building = Some(b.id.clone());
                }
            }
        }
        out
    }

    /// kgce per counter unit of a meter's carrier (litres converted with the density).
    pub fn kgce_per_unit(&self, carrier: Carrier, unit_is_litre: bool) -> f64 {
        let c = &self.file.coefficients;
        let d = &self.file.densities;
        match carrier {
            Carrier::Electricity => match self.file.accounting.electricity_basis {
                ElectricityBasis::Calorific => c.electricity_calorific,
                ElectricityBasis::Equivalent => c.electricity_equivalent,
            },
            Carrier::Water => 0.0,
            Carrier::NaturalGas => c.natural_gas,
            Carrier::DistrictHeat => c.district_heat,
            Carrier::Steam => c.steam,
            Carrier::Diesel => c.diesel * if unit_is_litre { d.diesel } else { 1.0 },
            Carrier::Gasoline => c.gasoline * if unit_is_litre { d.gasoline } else { 1.0 },
            Carrier::FuelOil => c.fuel_oil * if unit_is_litre { d.fuel_oil } else { 1.0 },
            Carrier::Lpg => c.lpg,
            Carrier::Coal => c.coal,
        }
    }

    /// kgCO2 per counter unit in `year`. Grid electricity takes the factor of the configured
    /// region for the latest data year not after `year` (the earliest one when all are later).
    pub fn co2_per_unit(&self, carrier: Carrier, unit_is_litre: bool, year: i32) -> f64 {
        let f = &self.file.co2;
        let d = &self.file.densities;
        match carrier {
            Carrier::Electricity => self.grid_factor(year).map_or(0.0, |g| g.kg_per_kwh),
            Carrier::Water => 0.0,
            Carrier::NaturalGas => f.natural_gas,
            Carrier::DistrictHeat => f.district_heat,
            Carrier::Steam => f.steam,
            Carrier::Diesel => f.diesel * if unit_is_litre { d.diesel } else { 1.0 },
            Carrier::Gasoline => f.gasoline * if unit_is_litre { d.gasoline } else { 1.0 },
            Carrier::FuelOil => f.fuel_oil * if unit_is_litre { d.fuel_oil } else { 1.0 },
            Carrier::Lpg => f.lpg,
            Carrier::Coal => f.coal,
        }
    }

    /// The grid factors in force (built in, with the registry's added or overriding).
    pub fn grid_factors(&self) -> &[GridFactor] {
        &self.grid
    }

    /// The grid factor used for `year`: the configured region's of the latest data year not
    /// after `year` (the earliest one when all are later).
    pub fn grid_factor(&self, year: i32) -> Option<&GridFactor> {
        let region = &self.file.accounting.grid_region;
        let of_region = || self.grid.iter().filter(move |g| &g.region == region);
        of_region().filter(|g| g.year <= year).max_by_key(|g| g.year).or_else(|| of_region().min_by_key(|g| g.year))
    }

    /// The tariff of a carrier in `year`: the year's own, else the one without a year.
    pub fn tariff(&self, carrier: Carrier, year: i32) -> Option<&Tariff> {
        let t = self.file.tariffs.iter().filter(|t| t.carrier == carrier);
        t.clone().find(|t| t.year == Some(year)).or_else(|| t.clone().find(|t| t.year.is_none()))
    }

    /// The quota row for an agency's indicator: every key given must match the agency's level
    /// and its main building's climate zone, heating type and building type. The most specific
    /// row wins (most keys given).
    pub fn quota(&self, agency: &Agency, indicator: Indicator) -> Option<&Quota> {
        let main = self.agency_areas(&agency.id).main_building.and_then(|b| self.building(&b).cloned());
        self.file
            .quotas
            .iter()
            .filter(|q| q.indicator == indicator)
            .filter(|q| q.levels.is_empty() || q.levels.contains(&agency.level))
            .filter(|q| q.climate_zone.is_none() || q.climate_zone == main.as_ref().and_then(|b| b.climate_zone.clone()))
            .filter(|q| q.heating.is_none() || q.heating == main.as_ref().map(|b| b.heating))
            .filter(|q| q.building_type.is_none() || q.building_type == main.as_ref().and_then(|b| b.building_type.clone()))
            .max_by_key(|q| usize::from(!q.levels.is_empty()) + usize::from(q.climate_zone.is_some()) + usize::from(q.heating.is_some()) + usize::from(q.building_type.is_some()))
    }

    /// The budget of an agency and year.
    pub fn budget(&self, agency: &str, year: i32) -> Option<&Budget> {
        self.file.budgets.iter().find(|b| b.agency == agency && b.year == year)
    }

    /// Reduction targets that cover `year` for the agency: its own, else the general ones.
    pub fn reductions(&self, agency: &str, year: i32) -> Vec<&Reduction> {
        let covers = |r: &&Reduction| r.baseline_year < year && year <= r.target_year;
        let own: Vec<&Reduction> = self.file.reductions.iter().filter(|r| r.agency.as_deref() == Some(agency)).filter(covers).collect();
        let general = self.file.reductions.iter().filter(|r| r.agency.is_none()).filter(covers).filter(|g| !own.iter().any(|o| o.indicator == g.indicator));
        own.iter().copied().chain(general).collect()
    }
}

impl Registry {
    /// What a bureau should look at, though the daemon runs with it (`check-config` prints
    /// them): a special-load meter in a building without the matching `excluded` area (the
    /// quota-basis per-area figures take its energy out but leave its floor area in), and a
    /// headcount allocation key where an occupant has no headcount.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.file.meters.iter().filter(|m| m.accounted && m.end_use().is_special()) {
            let Some(b) = self.building(&m.building) else { continue };
            let (uses, named): (&[ExcludedUse], &str) = match m.end_use() {
                EndUse::DataCentre => (&[ExcludedUse::DataCentre], "data_centre"),
                EndUse::Kitchen => (&[ExcludedUse::Canteen], "canteen"),
                _ => (&[ExcludedUse::Garage, ExcludedUse::Other], "garage (or other)"),
            };
            if !b.excluded.iter().any(|e| uses.contains(&e.what) && e.area > 0.0) {
                out.push(format!(
                    "meter `{}` measures a special load ({}) that the quota-basis per-area figures take out of the energy, but building `{}` has no `excluded` area of use {named}: its floor area stays in the divisor (add `excluded = [ {{ use = \"{}\", area = ... }} ]`, or 0 if it takes none)",
                    m.id,
                    m.end_use().as_str(),
                    b.id,
                    named.split(' ').next().unwrap_or(named)
                ));
            }
        }
        // `rollover` is the largest value shown (99999), not the range (100000): a power of ten
        // is most likely the range, which would count one unit too many per wrap.
        for m in &self.file.meters {
            if let Some(r) = m.rollover.filter(|r| *r >= 10.0 && (r.log10() - r.log10().round()).abs() < 1e-12) {
                out.push(format!(
                    "meter `{}`: rollover {r} is a power of ten; `rollover` is the largest value the register shows (e.g. {}), the wrap adds one step more",
                    m.id,
                    r - 1.0
                ));
            }
        }
        for b in &self.file.buildings {
            for (carrier, key) in &b.allocation {
                if matches!(key, AllocationKey::Key(k) if k == "headcount") {
                    for o in b.occupants.iter().chain(b.occupancy.iter().flat_map(|c| &c.occupants)) {
                        if self.agency(&o.agency).is_some_and(|a| a.headcount.is_empty()) {
                            out.push(format!(
                                "building `{}`: {} is allocated by headcount, but agency `{}` has no headcount: its share falls back to the occupants' shares",
                                b.id,
                                carrier.as_str(),
                                o.agency
                            ));
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The grid factor each year from `from` to `to` uses (`check-config` prints them).
    pub fn grid_factor_years(&self, from: i32, to: i32) -> Vec<(i32, &GridFactor)> {
        (from..=to).filter_map(|y| self.grid_factor(y).map(|g| (y, g))).collect()
    }
}

/// An agency's share of the areas of the buildings it occupies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgencyAreas {
    /// Floor area net of the excluded areas (the quota basis).
    pub floor_area: f64,
    /// The whole building (floor) area (the statistics basis).
    pub building_area: f64,
    pub heated_area: f64,
    pub main_building: Option<String>,
}

/// Parses a virtual meter's formula into (meter, coefficient) terms: terms separated by ` + `
/// and ` - ` (spaces around the operators, since identifiers may hold `-`), each term a meter id
/// or `0.5*meter`.
pub fn parse_formula(f: &str) -> Result<Vec<(String, f64)>, FormulaError> {
    let err = |what: FormulaProblem| FormulaError { formula: f.to_string(), what };
    let mut out = Vec::new();
    let mut sign = 1.0;
    let mut want_term = true;
    for tok in f.split_whitespace() {
        match (tok, want_term) {
            ("+", false) => (sign, want_term) = (1.0, true),
            ("-", false) => (sign, want_term) = (-1.0, true),
            ("-", true) if out.is_empty() => sign = -sign,
            (t, true) if t != "+" && t != "-" => {
                let (k, id) = match t.split_once('*') {
                    Some((k, id)) => (k.trim().parse::<f64>().map_err(|_| err(FormulaProblem::NotANumber(k.to_string())))?, id.trim()),
                    None => (1.0, t),
                };
                if !k.is_finite() {
                    return Err(err(FormulaProblem::NotFinite(k)));
                }
                out.push((id.to_string(), sign * k));
                want_term = false;
            }
            (t, _) => return Err(err(FormulaProblem::Unexpected(t.to_string()))),
        }
    }
    if want_term {
        return Err(err(FormulaProblem::Incomplete));
    }
    Ok(out)
}

/// A virtual meter's formula that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("formula `{formula}`{what}")]
pub struct FormulaError {
    pub formula: String,
    pub what: FormulaProblem,
}

/// What is wrong in a formula (the message follows the formula).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormulaProblem {
    #[error(": `{0}` is not a number")]
    NotANumber(String),
    #[error(": `{0}` is not a finite number")]
    NotFinite(f64),
    #[error(": unexpected `{0}` (write terms and operators apart: `a - b`)")]
    Unexpected(String),
    #[error(" is incomplete")]
    Incomplete,
}


#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[agency]]
id = "a"
name = "A"
level = "province"
[[agency]]
id = "b"
name = "B"
level = "city"
parent = "a"
[[building]]
id = "b1"
name = "B1"
floor_area = 1000.0
occupants = [ { agency = "a", share = 0.25 }, { agency = "b", share = 0.75 } ]
[[meter]]
id = "m1"
building = "b1"
carrier = "electricity"
[[meter]]
id = "m2"
building = "b1"
carrier = "water"
agency = "b"
"#;

    #[test]
    fn shares_follow_building_or_sub_meter() {
        let r = Registry::parse(GOOD).unwrap();
        let m1 = r.meter("m1").unwrap();
        let m2 = r.meter("m2").unwrap();
        assert_eq!(r.share(m1, "a"), 0.25);
        assert_eq!(r.share(m1, "b"), 0.75);
        assert_eq!(r.share(m2, "a"), 0.0);
        assert_eq!(r.share(m2, "b"), 1.0);
        assert_eq!(m1.counter(), Quantity::ActiveEnergyImport);
        assert_eq!(r.meters_of_agency("a").len(), 1);
    }

    #[test]
    fn every_error_at_once() {
        let bad = r#"
[[agency]]
id = "a"
name = "A"
level = "province"
parent = "zz"
[[agency]]
id = "a"
name = "A2"
level = "city"
[[building]]
id = "b1"
name = "B1"
floor_area = -5.0
occupants = [ { agency = "a", share = 0.5 }, { agency = "nobody", share = 0.2 } ]
[[meter]]
id = "m 1"
building = "b9"
carrier = "water"
quantity = "active_power"
multiplier = 0
"#;
        let e = Registry::parse(bad).unwrap_err().to_string();
        for expected in [
            "agency `a` is defined twice",
            "parent `zz` is not an agency",
            "floor_area must be a positive",
            "occupant `nobody` is not an agency",
            "shares add up to 0.7",
            "meter `m 1`: identifier",
            "building `b9` is not a building",
            "not a counter",
            "multiplier must be a positive",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in\n{e}");
        }
    }

    #[test]
    fn unknown_fields_and_carriers_are_named() {
        let e = Registry::parse(&GOOD.replace("carrier = \"water\"", "carrier = \"hydrogen\"")).unwrap_err().to_string();
        assert!(e.contains("hydrogen"), "{e}");
        let e = Registry::parse(&GOOD.replace("floor_area", "floorarea")).unwrap_err().to_string();
        assert!(e.contains("floorarea"), "{e}");
    }

    /// `check-config` warns of a special load whose area is not excluded (issue 16, finding 2).
    #[test]
    fn a_special_load_without_its_excluded_area_is_warned_of() {
        let kitchen = format!("{GOOD}[[meter]]\nid = \"k\"\nbuilding = \"b1\"\ncarrier = \"electricity\"\nend_use = \"kitchen\"\nparent = \"m1\"\n");
        let w = Registry::parse(&kitchen).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("meter `k`") && w[0].contains("use canteen"), "{w:?}");
        let with_area = kitchen.replace("floor_area = 1000.0", "floor_area = 1000.0\nexcluded = [ { use = \"canteen\", area = 80.0 } ]");
        assert!(Registry::parse(&with_area).unwrap().warnings().is_empty());
        assert!(Registry::parse(GOOD).unwrap().warnings().is_empty());
        // A rollover given as the range (100000) rather than the largest value (99999).
        let w = Registry::parse(&GOOD.replace("carrier = \"water\"", "carrier = \"water\"\nrollover = 100000.0")).unwrap().warnings();
        assert!(w.len() == 1 && w[0].contains("rollover 100000 is a power of ten") && w[0].contains("99999"), "{w:?}");
        assert!(Registry::parse(&GOOD.replace("carrier = \"water\"", "carrier = \"water\"\nrollover = 99999.0")).unwrap().warnings().is_empty());
    }

    /// `[[grid_factor]]` adds to or overrides the built-in table year by year (issue 16,
    /// finding 8): Shanxi 2023 set to 0.6 and 2024 added (0.58); 2022 stays the Ministry's
    /// 0.7096; 2025 takes 2024's; the national table is untouched.
    #[test]
    fn grid_factors_add_to_the_built_in_table() {
        let r = Registry::parse(&format!(
            "{GOOD}[[grid_factor]]\nyear = 2023\nregion = \"shanxi\"\nkg_per_kwh = 0.6\n[[grid_factor]]\nyear = 2024\nregion = \"shanxi\"\nkg_per_kwh = 0.58\nsource = \"省生态环境厅 2025\"\n"
        ))
        .unwrap();
        let used: Vec<(i32, f64)> = r.grid_factor_years(2021, 2025).into_iter().map(|(y, g)| (y, g.kg_per_kwh)).collect();
        assert_eq!(used, [(2021, 0.7222), (2022, 0.7096), (2023, 0.6), (2024, 0.58), (2025, 0.58)]);
        assert_eq!(r.grid_factor(2024).and_then(|g| g.source.as_deref()), Some("省生态环境厅 2025"));
        assert_eq!(r.grid_factor(2022).and_then(|g| g.source.as_deref()), Some(BUILT_IN_GRID_SOURCE));
        assert_eq!(r.grid_factors().iter().filter(|g| g.region == "national").count(), 3);
    }
}
