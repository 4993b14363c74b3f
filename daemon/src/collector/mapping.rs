//! A collector's values to registry meters (pure): `[[meter]] collector`, `collector_meter`,
//! `function`. A value no registry meter takes is stored under a meter id of its own
//! (`<building>.<meter>.<function>`) and listed as unassigned, never dropped.

use std::collections::HashMap;
use std::sync::Arc;

use energy_wire::Quantity;

use super::session::Reading;
use crate::registry::Registry;
use crate::store::Point;

struct Target {
    meter: String,
    function: Option<String>,
    item_code: Option<String>,
    quantity: Quantity,
}

/// The registry's collector meters, indexed.
pub struct Mapping {
    by_meter: HashMap<(String, String), Vec<Target>>,
}

/// A value no registry meter takes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unassigned {
    pub building: String,
    pub gateway: String,
    pub meter: String,
    pub function: String,
    pub coding: Option<String>,
    /// The meter id it is stored under.
    pub stored_as: String,
}

impl Mapping {
    pub fn new(reg: &Registry) -> Mapping {
        let mut by_meter: HashMap<(String, String), Vec<Target>> = HashMap::new();
        for m in &reg.file.meters {
            if let (Some(c), Some(cm)) = (&m.collector, &m.collector_meter) {
                by_meter.entry((c.clone(), cm.clone())).or_default().push(Target { meter: m.id.clone(), function: m.function.clone(), item_code: m.item_code.clone(), quantity: m.counter() });
            }
        }
        Mapping { by_meter }
    }

    /// The points of a packet's readings, and the values no registry meter takes (stored too).
    pub fn points(&self, readings: &[Reading]) -> (Vec<Point>, Vec<Unassigned>) {
        let mut functions: HashMap<(&str, &str), usize> = HashMap::new();
        for r in readings {
            *functions.entry((&r.building, &r.meter)).or_default() += 1;
        }
        let mut points = Vec::with_capacity(readings.len());
        let mut unassigned = Vec::new();
        for r in readings {
            let targets = self.by_meter.get(&(r.building.clone(), r.meter.clone()));
            let only = functions.get(&(r.building.as_str(), r.meter.as_str())) == Some(&1);
            let hit = targets.and_then(|ts| {
                ts.iter().find(|t| t.function.as_deref() == Some(r.function.as_str())).or_else(|| {
                    ts.iter().find(|t| t.function.is_none() && (only || (r.coding.is_some() && t.item_code == r.coding)))
                })
            });
            match hit {
                Some(t) => points.push(Point { meter: Arc::from(t.meter.as_str()), quantity: t.quantity, ts: r.ts_ms, value: r.value }),
                None => {
                    let id = unassigned_id(&r.building, &r.meter, &r.function);
                    points.push(Point { meter: Arc::from(id.as_str()), quantity: quantity_of(r.coding.as_deref()), ts: r.ts_ms, value: r.value });
                    unassigned.push(Unassigned { building: r.building.clone(), gateway: r.gateway.clone(), meter: r.meter.clone(), function: r.function.clone(), coding: r.coding.clone(), stored_as: id });
                }
            }
        }
        (points, unassigned)
    }
}

/// `<building>.<meter>.<function>`, with characters a meter id may not hold as `_`.
pub fn unassigned_id(building: &str, meter: &str, function: &str) -> String {
    let clean = |s: &str| -> String { s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect() };
    let mut id = format!("{}.{}.{}", clean(building), clean(meter), clean(function));
    id.truncate(energy_wire::MAX_ID_LEN);
    id
}

/// The counter quantity of a value by its item code's category (electricity by default).
pub fn quantity_of(coding: Option<&str>) -> Quantity {
    match coding.and_then(|c| c.get(..2)) {
        Some("02") => Quantity::WaterVolume,
        Some("03") => Quantity::GasVolume,
        Some("04") | Some("05") => Quantity::HeatEnergy,
        _ => Quantity::ActiveEnergyImport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(meter: &str, function: &str, coding: Option<&str>, value: f64) -> Reading {
        Reading { building: "110101A001".into(), gateway: "01".into(), meter: meter.into(), function: function.into(), coding: coding.map(str::to_string), ts_ms: 1_767_225_600_000, value }
    }

    #[test]
    fn values_to_meters() {
        let reg = Registry::parse(
            r#"
[[agency]]
id = "ag"
name = "机关"
level = "city"
[[building]]
id = "b"
name = "一号楼"
floor_area = 2500
occupants = [{ agency = "ag", share = 1.0 }]
[[meter]]
id = "main"
building = "b"
carrier = "electricity"
collector = "110101A001"
collector_meter = "1"
function = "1"
[[meter]]
id = "hvac"
building = "b"
carrier = "electricity"
item_code = "01B00"
collector = "110101A001"
collector_meter = "2"
[[meter]]
id = "water"
building = "b"
carrier = "water"
collector = "110101A001"
collector_meter = "3"
"#,
        )
        .unwrap();
        let map = Mapping::new(&reg);
        let rs = vec![
            reading("1", "1", None, 10.0),             // exact function
            reading("1", "2", None, 11.0),             // no meter takes function 2 of meter 1
            reading("2", "1", Some("01A00"), 20.0),    // meter 2 sends two functions: by item code
            reading("2", "2", Some("01B00"), 21.0),
            reading("3", "7", Some("02000"), 30.0),    // the only function of meter 3
            reading("9", "1", Some("02000"), 90.0),    // an unknown meter: water by its code
        ];
        let (points, un) = map.points(&rs);
        let got: Vec<(&str, Quantity, f64)> = points.iter().map(|p| (&*p.meter, p.quantity, p.value)).collect();
        assert_eq!(
            got,
            vec![
                ("main", Quantity::ActiveEnergyImport, 10.0),
                ("110101A001.1.2", Quantity::ActiveEnergyImport, 11.0),
                ("110101A001.2.1", Quantity::ActiveEnergyImport, 20.0),
                ("hvac", Quantity::ActiveEnergyImport, 21.0),
                ("water", Quantity::WaterVolume, 30.0),
                ("110101A001.9.1", Quantity::WaterVolume, 90.0),
            ]
        );
        assert_eq!(un.iter().map(|u| u.stored_as.as_str()).collect::<Vec<_>>(), vec!["110101A001.1.2", "110101A001.2.1", "110101A001.9.1"]);
        assert_eq!(unassigned_id("a/b", "m 1", "f"), "a_b.m_1.f");
    }
}
