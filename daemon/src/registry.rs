//! The registry: agencies, buildings and meters, kept as a TOML file a bureau can keep in version
//! control. Loaded and validated with every error reported at once.
//!
//! ```toml
//! [[agency]]
//! id = "prov-finance"
//! name = "省财政厅"
//! level = "province"          # province | city | county
//! parent = "prov-gov"         # optional: the agency whose jurisdiction it is in
//!
//! [[building]]
//! id = "bldg-a"
//! name = "省政务中心A座"
//! floor_area = 14000.0        # m²
//! heated_area = 12500.0       # m², optional (defaults to floor_area)
//! occupants = [ { agency = "prov-drc", share = 0.6 }, { agency = "prov-finance", share = 0.4 } ]
//!
//! [[meter]]
//! id = "bldg-a-elec"
//! building = "bldg-a"
//! carrier = "electricity"     # electricity | water | natural_gas | district_heat
//! quantity = "active_energy_import"   # optional: the carrier's counter by default
//! multiplier = 1.0            # optional: CT/PT ratio applied to the counter
//! end_use = "general"         # optional
//! agency = "prov-drc"         # optional: a sub-meter that serves one agency only
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use energy_wire::{Carrier, Quantity};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Province,
    City,
    County,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub level: Level,
    #[serde(default)]
    pub parent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Occupant {
    pub agency: String,
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Building {
    pub id: String,
    pub name: String,
    pub floor_area: f64,
    #[serde(default)]
    pub heated_area: Option<f64>,
    pub occupants: Vec<Occupant>,
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
    #[serde(default = "general")]
    pub end_use: String,
    #[serde(default)]
    pub agency: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

fn one() -> f64 {
    1.0
}
fn general() -> String {
    "general".into()
}

impl Meter {
    /// The counter quantity consumption is computed from.
    pub fn counter(&self) -> Quantity {
        self.quantity.unwrap_or(self.carrier.counter())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    #[serde(default, rename = "agency")]
    pub agencies: Vec<Agency>,
    #[serde(default, rename = "building")]
    pub buildings: Vec<Building>,
    #[serde(default, rename = "meter")]
    pub meters: Vec<Meter>,
}

/// A validated registry with indexes.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub file: RegistryFile,
    agencies: HashMap<String, usize>,
    buildings: HashMap<String, usize>,
    meters: HashMap<String, usize>,
}

/// Every problem found, one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct RegistryErrors(pub Vec<String>);

impl Registry {
    pub fn load(path: &Path) -> Result<Registry, RegistryErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        Registry::parse(&text).map_err(|e| RegistryErrors(e.0.into_iter().map(|m| format!("{}: {m}", path.display())).collect()))
    }

    pub fn parse(text: &str) -> Result<Registry, RegistryErrors> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| RegistryErrors(vec![e.to_string().trim_end().replace('\n', " ")]))?;
        Registry::new(file)
    }

    pub fn new(file: RegistryFile) -> Result<Registry, RegistryErrors> {
        let errors = validate(&file);
        if !errors.is_empty() {
            return Err(RegistryErrors(errors));
        }
        let agencies = file.agencies.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        let buildings = file.buildings.iter().enumerate().map(|(i, b)| (b.id.clone(), i)).collect();
        let meters = file.meters.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect();
        Ok(Registry { file, agencies, buildings, meters })
    }

    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies.get(id).map(|&i| &self.file.agencies[i])
    }
    pub fn building(&self, id: &str) -> Option<&Building> {
        self.buildings.get(id).map(|&i| &self.file.buildings[i])
    }
    pub fn meter(&self, id: &str) -> Option<&Meter> {
        self.meters.get(id).map(|&i| &self.file.meters[i])
    }

    /// The share of a meter's consumption attributed to an agency: 1 for a sub-meter assigned to
    /// it, otherwise the agency's allocation share of the meter's building.
    pub fn share(&self, meter: &Meter, agency: &str) -> f64 {
        match &meter.agency {
            Some(a) => f64::from(u8::from(a == agency)),
            None => self
                .building(&meter.building)
                .map(|b| b.occupants.iter().filter(|o| o.agency == agency).map(|o| o.share).sum())
                .unwrap_or(0.0),
        }
    }

    /// Meters with a non-zero share for the agency, with that share.
    pub fn meters_of_agency(&self, agency: &str) -> Vec<(&Meter, f64)> {
        self.file.meters.iter().map(|m| (m, self.share(m, agency))).filter(|(_, s)| *s > 0.0).collect()
    }

    pub fn meters_of_building(&self, building: &str) -> Vec<&Meter> {
        self.file.meters.iter().filter(|m| m.building == building).collect()
    }
}

fn validate(f: &RegistryFile) -> Vec<String> {
    let mut errors = Vec::new();
    let mut ids = |kind: &str, list: Vec<&str>| -> HashSet<String> {
        let mut seen = HashSet::new();
        for id in list {
            if let Err(e) = energy_wire::validate_id(id) {
                errors.push(format!("{kind} `{id}`: {e}"));
            }
            if !seen.insert(id.to_string()) {
                errors.push(format!("{kind} `{id}` is defined twice"));
            }
        }
        seen
    };
    let agencies = ids("agency", f.agencies.iter().map(|a| a.id.as_str()).collect());
    let buildings = ids("building", f.buildings.iter().map(|b| b.id.as_str()).collect());
    let _meters = ids("meter", f.meters.iter().map(|m| m.id.as_str()).collect());
    for a in &f.agencies {
        if let Some(p) = &a.parent {
            if !agencies.contains(p) {
                errors.push(format!("agency `{}`: parent `{p}` is not an agency", a.id));
            }
            if p == &a.id {
                errors.push(format!("agency `{}` is its own parent", a.id));
            }
        }
    }
    // Parent cycles.
    let parent: BTreeMap<&str, &str> = f.agencies.iter().filter_map(|a| a.parent.as_deref().map(|p| (a.id.as_str(), p))).collect();
    for a in &f.agencies {
        let mut cur = a.id.as_str();
        for _ in 0..=f.agencies.len() {
            match parent.get(cur) {
                Some(p) => cur = p,
                None => break,
            }
            if cur == a.id {
                errors.push(format!("agency `{}`: the parent chain loops back to itself", a.id));
                break;
            }
        }
    }
    for b in &f.buildings {
        let at = format!("building `{}`", b.id);
        if !(b.floor_area.is_finite() && b.floor_area > 0.0) {
            errors.push(format!("{at}: floor_area must be a positive number of m²"));
        }
        if let Some(h) = b.heated_area {
            if !(h.is_finite() && h >= 0.0) {
                errors.push(format!("{at}: heated_area must be a non-negative number of m²"));
            }
        }
        if b.occupants.is_empty() {
            errors.push(format!("{at}: no occupants; list the agencies with their shares"));
        }
        let mut sum = 0.0;
        let mut seen = HashSet::new();
        for o in &b.occupants {
            if !agencies.contains(&o.agency) {
                errors.push(format!("{at}: occupant `{}` is not an agency", o.agency));
            }
            if !seen.insert(&o.agency) {
                errors.push(format!("{at}: occupant `{}` is listed twice", o.agency));
            }
            if !(o.share.is_finite() && o.share > 0.0 && o.share <= 1.0) {
                errors.push(format!("{at}: share of `{}` must be in (0, 1]", o.agency));
            }
            sum += o.share;
        }
        if !b.occupants.is_empty() && (sum - 1.0).abs() > 1e-6 {
            errors.push(format!("{at}: occupant shares add up to {sum}, not 1"));
        }
    }
    for m in &f.meters {
        let at = format!("meter `{}`", m.id);
        if !buildings.contains(&m.building) {
            errors.push(format!("{at}: building `{}` is not a building", m.building));
        }
        if let Some(a) = &m.agency {
            if !agencies.contains(a) {
                errors.push(format!("{at}: agency `{a}` is not an agency"));
            }
        }
        if !(m.multiplier.is_finite() && m.multiplier > 0.0) {
            errors.push(format!("{at}: multiplier must be a positive number"));
        }
        if let Some(q) = m.quantity {
            if !q.is_counter() {
                errors.push(format!("{at}: quantity `{q}` is not a counter; consumption needs a cumulative counter"));
            } else if q.unit() != m.carrier.counter().unit() {
                errors.push(format!("{at}: quantity `{q}` is in {}, but {} is accounted in {}", q.unit(), m.carrier.as_str(), m.carrier.counter().unit()));
            }
        }
    }
    errors
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
        let e = Registry::parse(&GOOD.replace("carrier = \"water\"", "carrier = \"steam\"")).unwrap_err().to_string();
        assert!(e.contains("steam"), "{e}");
        let e = Registry::parse(&GOOD.replace("floor_area", "floorarea")).unwrap_err().to_string();
        assert!(e.contains("floorarea"), "{e}");
    }
}
