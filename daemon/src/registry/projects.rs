//! Energy-saving projects (`[[project]]`, issue 23): a retrofit or an energy performance
//! contract (合同能源管理) whose savings are verified against a weather-normalised baseline,
//! with its periods, its scope and its non-routine adjustments; and the `weather` series named
//! by buildings and meters. Validated with the rest of the registry.
//!
//! ```toml
//! [[project]]
//! id = "p-2025-heat"
//! name = "供热系统节能改造"
//! contract = "shared_savings"     # retrofit | shared_savings | guaranteed_savings | energy_cost_hosting
//! esco = "某节能服务公司"
//! baseline = "2024-11-01/2025-10-31"   # local dates, both included
//! installation = "2025-11-01/2025-11-30" # left out of both periods
//! reporting = "2025-12-01/2026-11-30"
//! buildings = ["b1"]              # and/or meters = ["m1"]
//! carrier = "district_heat"       # which carrier, when the scope has several
//! share = 0.7                     # the company's share of the savings (shared savings)
//! price = 45.0                    # yuan per unit of the carrier (counter unit)
//! guaranteed = 1200.0             # guaranteed savings per year, counter unit (guaranteed savings)
//! [[project.adjustment]]
//! from = "2026-03-01"
//! to = "2026-11-30"
//! per_day = 1.5                   # added to the adjusted baseline, counter unit per day
//! reason = "新增三层办公区"
//! ```

use std::collections::HashSet;

use chrono::NaiveDate;
use energy_wire::{Carrier, Quantity};
use serde::{Deserialize, Serialize};

use super::{Meter, RegistryFile};

/// The kind of project: a retrofit the agency paid for, or one of the three energy performance
/// contract types (GB/T 24915).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContractType {
    #[default]
    Retrofit,
    /// 节能效益分享型.
    SharedSavings,
    /// 节能量保证型.
    GuaranteedSavings,
    /// 能源费用托管型.
    EnergyCostHosting,
}

impl ContractType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContractType::Retrofit => "retrofit",
            ContractType::SharedSavings => "shared_savings",
            ContractType::GuaranteedSavings => "guaranteed_savings",
            ContractType::EnergyCostHosting => "energy_cost_hosting",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            ContractType::Retrofit => "节能改造",
            ContractType::SharedSavings => "合同能源管理（节能效益分享型）",
            ContractType::GuaranteedSavings => "合同能源管理（节能量保证型）",
            ContractType::EnergyCostHosting => "合同能源管理（能源费用托管型）",
        }
    }
}

/// A non-routine adjustment: a change outside the project (a floor added, occupancy changed)
/// that moves the baseline by `per_day` (counter unit) on every reporting day from `from` to
/// `to` (local dates, both included; `to` absent: to the end of the reporting period).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    pub from: String,
    #[serde(default)]
    pub to: Option<String>,
    pub per_day: f64,
    pub reason: String,
}

impl Adjustment {
    /// The adjustment on `date`.
    pub fn on(&self, date: NaiveDate) -> f64 {
        let from = parse_date(&self.from).ok();
        let to = self.to.as_deref().and_then(|t| parse_date(t).ok());
        if from.is_some_and(|f| date >= f) && to.is_none_or(|t| date <= t) {
            self.per_day
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub contract: ContractType,
    /// The energy service company (节能服务公司); required for a contract.
    #[serde(default)]
    pub esco: Option<String>,
    pub baseline: String,
    #[serde(default)]
    pub installation: Option<String>,
    pub reporting: String,
    #[serde(default)]
    pub meters: Vec<String>,
    #[serde(default)]
    pub buildings: Vec<String>,
    #[serde(default)]
    pub carrier: Option<Carrier>,
    #[serde(default)]
    pub share: Option<f64>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub guaranteed: Option<f64>,
    #[serde(default, rename = "adjustment")]
    pub adjustments: Vec<Adjustment>,
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
}

/// Parses `FROM/TO` (local dates, both included, FROM <= TO).
pub fn parse_range(s: &str) -> Result<(NaiveDate, NaiveDate), String> {
    let (a, b) = s.split_once('/').ok_or_else(|| format!("`{s}` is not a date range FROM/TO (YYYY-MM-DD/YYYY-MM-DD)"))?;
    let (from, to) = (parse_date(a)?, parse_date(b)?);
    if to < from {
        return Err(format!("`{s}`: the range ends before it starts"));
    }
    Ok((from, to))
}

impl Project {
    pub fn baseline_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        parse_range(&self.baseline).ok()
    }
    pub fn reporting_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        parse_range(&self.reporting).ok()
    }
    /// The non-routine adjustments on `date`, summed.
    pub fn adjustment_on(&self, date: NaiveDate) -> f64 {
        self.adjustments.iter().map(|a| a.on(date)).sum()
    }
}

/// Whether a meter is a weather series only (its quantity is the outdoor temperature).
pub fn is_weather_meter(m: &Meter) -> bool {
    m.quantity == Some(Quantity::OutdoorTemperature)
}

/// The `weather` fields of buildings and meters, and the projects.
pub(super) fn validate(f: &RegistryFile, errors: &mut Vec<String>) {
    let meters: std::collections::HashMap<&str, &Meter> = f.meters.iter().map(|m| (m.id.as_str(), m)).collect();
    let weather_ok = |at: &str, w: &str, errors: &mut Vec<String>| match meters.get(w) {
        None => errors.push(format!("{at}: weather `{w}` is not a meter (name the meter whose outdoor_temperature is read)")),
        Some(m) if m.is_virtual() => errors.push(format!("{at}: weather `{w}` is a virtual meter; it has no outdoor_temperature readings")),
        Some(m) if m.quantity.is_some_and(|q| !q.is_counter() && q != Quantity::OutdoorTemperature) => {
            errors.push(format!("{at}: weather `{w}` reads {}, not outdoor_temperature", m.quantity.map(Quantity::name).unwrap_or("")))
        }
        Some(_) => {}
    };
    for b in &f.buildings {
        if let Some(w) = &b.weather {
            weather_ok(&format!("building `{}`", b.id), w, errors);
        }
    }
    for m in &f.meters {
        if let Some(w) = &m.weather {
            weather_ok(&format!("meter `{}`", m.id), w, errors);
        }
        if is_weather_meter(m) && m.formula.is_some() {
            errors.push(format!("meter `{}`: a weather meter (quantity outdoor_temperature) cannot have a formula", m.id));
        }
    }
    let buildings: std::collections::HashMap<&str, &super::Building> = f.buildings.iter().map(|b| (b.id.as_str(), b)).collect();
    let mut seen = HashSet::new();
    for p in &f.projects {
        let at = format!("project `{}`", p.id);
        if let Err(e) = energy_wire::validate_id(&p.id) {
            errors.push(format!("{at}: {e}"));
        }
        if !seen.insert(p.id.as_str()) {
            errors.push(format!("project `{}` is defined twice", p.id));
        }
        let base = parse_range(&p.baseline).map_err(|e| errors.push(format!("{at}: baseline {e}"))).ok();
        let rep = parse_range(&p.reporting).map_err(|e| errors.push(format!("{at}: reporting {e}"))).ok();
        let inst = p.installation.as_deref().and_then(|s| parse_range(s).map_err(|e| errors.push(format!("{at}: installation {e}"))).ok());
        if let (Some(b), Some(r)) = (base, rep) {
            if r.0 <= b.1 {
                errors.push(format!("{at}: the reporting period starts on {} but the baseline runs to {}; the periods cannot overlap", r.0, b.1));
            }
            if let Some(i) = inst {
                if i.0 <= b.1 || i.1 >= r.0 {
                    errors.push(format!("{at}: the installation period {}/{} must lie between the baseline (to {}) and the reporting period (from {})", i.0, i.1, b.1, r.0));
                }
            }
        }
        if p.meters.is_empty() && p.buildings.is_empty() {
            errors.push(format!("{at}: name the meters or buildings in scope (`meters = [..]`, `buildings = [..]`)"));
        }
        for id in &p.meters {
            match meters.get(id.as_str()) {
                None => errors.push(format!("{at}: meter `{id}` is not a meter")),
                Some(m) if m.weather.is_none() && buildings.get(m.building.as_str()).and_then(|b| b.weather.as_ref()).is_none() => {
                    errors.push(format!("{at}: meter `{id}` has no weather series (set `weather` on the meter or on building `{}`)", m.building))
                }
                Some(_) => {}
            }
        }
        for id in &p.buildings {
            match buildings.get(id.as_str()) {
                None => errors.push(format!("{at}: building `{id}` is not a building")),
                Some(b) if b.weather.is_none() => errors.push(format!("{at}: building `{id}` has no weather series (set `weather = \"METER_ID\"` on it)")),
                Some(_) => {}
            }
        }
        if let Some(s) = p.share {
            if !(0.0..=1.0).contains(&s) {
                errors.push(format!("{at}: share must be between 0 and 1 (the company's share of the savings), not {s}"));
            }
        }
        if let Some(x) = p.price {
            if !(x.is_finite() && x >= 0.0) {
                errors.push(format!("{at}: price must be a number >= 0"));
            }
        }
        match p.contract {
            ContractType::Retrofit => {}
            c => {
                if p.esco.as_deref().is_none_or(|e| e.trim().is_empty()) {
                    errors.push(format!("{at}: a {} contract names its energy service company (`esco`)", c.as_str()));
                }
                if p.price.is_none() {
                    errors.push(format!("{at}: a {} contract needs the `price` per unit its savings are valued at", c.as_str()));
                }
            }
        }
        if p.contract == ContractType::SharedSavings && p.share.is_none() {
            errors.push(format!("{at}: a shared_savings contract needs `share` (the company's share of the savings, 0..1)"));
        }
        if p.contract == ContractType::GuaranteedSavings && p.guaranteed.is_none_or(|g| !(g.is_finite() && g >= 0.0)) {
            errors.push(format!("{at}: a guaranteed_savings contract needs `guaranteed` (savings per year guaranteed, counter unit, >= 0)"));
        }
        for a in &p.adjustments {
            if let Err(e) = parse_date(&a.from) {
                errors.push(format!("{at}: adjustment from {e}"));
            }
            if let Some(t) = &a.to {
                if let Err(e) = parse_date(t) {
                    errors.push(format!("{at}: adjustment to {e}"));
                }
            }
            if !a.per_day.is_finite() {
                errors.push(format!("{at}: adjustment per_day must be a number"));
            }
            if a.reason.trim().is_empty() {
                errors.push(format!("{at}: every adjustment states its reason"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::registry::{ContractType, Registry};

    const BASE: &str = r#"
[[agency]]
id = "a"
name = "A"
level = "city"
[[building]]
id = "b1"
name = "B1"
floor_area = 1000.0
weather = "ty-station"
occupants = [ { agency = "a", share = 1.0 } ]
[[building]]
id = "b2"
name = "B2"
floor_area = 500.0
occupants = [ { agency = "a", share = 1.0 } ]
[[meter]]
id = "ty-station"
building = "b1"
carrier = "electricity"
quantity = "outdoor_temperature"
[[meter]]
id = "m1"
building = "b1"
carrier = "district_heat"
[[meter]]
id = "m2"
building = "b2"
carrier = "electricity"
"#;

    #[test]
    fn a_good_project_loads_and_the_weather_meter_is_not_accounted() {
        let text = format!(
            "{BASE}\n[[project]]\nid = \"p1\"\nname = \"供热改造\"\ncontract = \"shared_savings\"\nesco = \"E\"\nbaseline = \"2024-11-01/2025-10-31\"\ninstallation = \"2025-11-01/2025-11-30\"\nreporting = \"2025-12-01/2026-11-30\"\nbuildings = [\"b1\"]\nshare = 0.7\nprice = 45.0\n[[project.adjustment]]\nfrom = \"2026-03-01\"\nper_day = 1.5\nreason = \"新增办公区\"\n"
        );
        let r = Registry::parse(&text).expect("valid");
        let p = r.project("p1").expect("p1");
        assert_eq!(p.contract, ContractType::SharedSavings);
        assert_eq!(p.adjustment_on(chrono::NaiveDate::from_ymd_opt(2026, 3, 1).expect("d")), 1.5);
        assert_eq!(p.adjustment_on(chrono::NaiveDate::from_ymd_opt(2026, 2, 28).expect("d")), 0.0);
        assert!(!r.meter("ty-station").expect("m").accounted);
        assert_eq!(r.weather_of_meter(r.meter("m1").expect("m1")), Some("ty-station"));
    }

    /// Each wrong field is named.
    #[test]
    fn wrong_projects_and_weather_are_named() {
        let cases: &[(&str, &str)] = &[
            ("[[building]]\nid = \"b3\"\nname = \"B3\"\nfloor_area = 1.0\nweather = \"nope\"\noccupants = []\n", "building `b3`: weather `nope` is not a meter"),
            ("[[meter]]\nid = \"m3\"\nbuilding = \"b2\"\ncarrier = \"electricity\"\nweather = \"m9\"\n", "meter `m3`: weather `m9` is not a meter"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2025-01-01/2024-01-01\"\nreporting = \"2025-06-01/2025-12-31\"\nmeters = [\"m1\"]\n", "baseline `2025-01-01/2024-01-01`: the range ends before it starts"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2024-06-01/2025-12-31\"\nmeters = [\"m1\"]\n", "the periods cannot overlap"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nbuildings = [\"b2\"]\n", "building `b2` has no weather series"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m2\"]\n", "meter `m2` has no weather series"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\n", "name the meters or buildings in scope"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\ncontract = \"shared_savings\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m1\"]\n", "needs `share`"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\ncontract = \"shared_savings\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m1\"]\n", "names its energy service company"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\ncontract = \"guaranteed_savings\"\nesco = \"E\"\nprice = 1.0\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m1\"]\n", "needs `guaranteed`"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\ninstallation = \"2024-12-01/2025-01-10\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m1\"]\n", "the installation period"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m1\"]\nshare = 1.5\n", "share must be between 0 and 1"),
            ("[[project]]\nid = \"p\"\nname = \"P\"\nbaseline = \"2024-01-01/2024-12-31\"\nreporting = \"2025-01-01/2025-12-31\"\nmeters = [\"m1\"]\n[[project.adjustment]]\nfrom = \"2025-13-01\"\nper_day = 1.0\nreason = \" \"\n", "every adjustment states its reason"),
        ];
        for (extra, want) in cases {
            let err = Registry::parse(&format!("{BASE}\n{extra}")).expect_err(want).to_string();
            assert!(err.contains(want), "want `{want}` in:\n{err}");
        }
    }
}
