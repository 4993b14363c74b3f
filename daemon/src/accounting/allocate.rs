//! From meters' years to what each agency consumed: multipliers, virtual meters, sub-metering
//! trees and allocation of shared buildings. Pure.
//!
//! * A meter's **full** consumption is its counter's consumption times its multiplier; a virtual
//!   meter's is its formula over other meters' full consumption.
//! * A meter's **own** consumption is its full consumption less its children's (the meters whose
//!   `parent` it is). Over a tree the own parts add up to the root meter: nothing is counted twice.
//! * Each accounted meter's own part goes to its agency (a sub-meter serving one agency), or to
//!   the occupants of its building by their shares, day by day: the occupants of each day
//!   (dated `occupancy` changes) and the carrier's allocation key (`allocation`: area,
//!   headcount or fixed shares).
//!
//! So the agencies' totals add up to the accounted root meters' totals (property-tested).

use std::collections::{BTreeMap, HashMap};

use energy_wire::{Carrier, Quantity};

use super::ledger::{MeterYear, Series};
use crate::registry::{parse_formula, DayShares, EndUse, Meter, Registry};

/// Consumption per period that adds up: a meter's year by day ([`Series`]), or the consumption
/// query's periods ([`super::query::Periods`]). The rules below hold for both.
pub trait Additive: Clone {
    /// `n` periods of nothing.
    fn zero(n: usize) -> Self;
    /// `self += k * other`; `first`: `self` takes `other`'s coverage (else the smaller of both).
    fn add_scaled(&mut self, other: &Self, k: f64, first: bool);
}

impl Additive for Series {
    fn zero(n: usize) -> Series {
        Series::zero(n)
    }
    fn add_scaled(&mut self, other: &Series, k: f64, first: bool) {
        Series::add_scaled(self, other, k, first)
    }
}

/// A virtual meter's full consumption: its formula over the other meters' full consumption
/// (`full`), times its multiplier. A term without figures counts as nothing.
pub fn virtual_full<S: Additive>(m: &Meter, full: &HashMap<String, S>, n: usize) -> S {
    let mut s = S::zero(n);
    let terms = m.formula.as_deref().map(parse_formula).and_then(Result::ok).unwrap_or_default();
    for (i, (id, k)) in terms.iter().enumerate() {
        if let Some(o) = full.get(id) {
            s.add_scaled(o, *k * m.multiplier, i == 0);
        }
    }
    s
}

/// A meter's own consumption: its full consumption `f` less its children's (copied only when
/// a child has figures).
pub fn own_part<'a, S: Additive>(reg: &Registry, m: &Meter, f: &'a S, full: &HashMap<String, S>) -> std::borrow::Cow<'a, S> {
    let mut own = std::borrow::Cow::Borrowed(f);
    for cs in reg.children(&m.id).filter_map(|c| full.get(&c.id)) {
        own.to_mut().add_scaled(cs, -1.0, false);
    }
    own
}

/// `k[d] × series[d]` for each day; the hour-of-day profile of each month scaled by the month's
/// share weighted by consumption (day `d` is `start + d`).
fn scaled_by_day(own: &Series, k: &[f64], start: chrono::NaiveDate) -> Series {
    use chrono::Datelike;
    let days = own.value.len();
    let mut s = Series::zero(days);
    let (mut num, mut den, mut ks, mut n) = ([0.0f64; 12], [0.0f64; 12], [0.0f64; 12], [0.0f64; 12]);
    for (d, &kd) in k.iter().enumerate().take(days) {
        s.value[d] = kd * own.value[d];
        s.estimated[d] = kd * own.estimated[d];
        s.coverage[d] = own.coverage[d];
        let m = (start + chrono::Duration::days(d as i64)).month0() as usize;
        num[m] += kd * own.value[d];
        den[m] += own.value[d];
        ks[m] += kd;
        n[m] += 1.0;
    }
    for (m, (a, b)) in s.hod.iter_mut().zip(&own.hod).enumerate() {
        let w = if den[m].abs() > 0.0 { num[m] / den[m] } else if n[m] > 0.0 { ks[m] / n[m] } else { 0.0 };
        for h in 0..24 {
            a[h] = w * b[h];
        }
    }
    s
}

/// What one meter's own consumption gives one agency.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub agency: String,
    pub building: String,
    pub meter: String,
    pub carrier: Carrier,
    pub end_use: EndUse,
    /// Counted in litres (liquid fuels converted with a density).
    pub litre: bool,
    pub share: f64,
    /// In counter units after the multiplier and the share.
    pub series: Series,
}

/// A meter whose children measured more than it did.
#[derive(Debug, Clone, PartialEq)]
pub struct NegativeRemainder {
    pub meter: String,
    pub remainder: f64,
}

/// Full consumption of every meter (physical ones from `years`, virtual ones from their
/// formula), after the multiplier. Meters without a year count as zero with no coverage.
pub fn full_series<Y: std::borrow::Borrow<MeterYear>>(reg: &Registry, years: &HashMap<String, Y>, days: usize) -> HashMap<String, Series> {
    let mut full: HashMap<String, Series> = HashMap::new();
    for m in reg.file.meters.iter().filter(|m| !m.is_virtual()) {
        let mut s = Series::zero(days);
        if let Some(y) = years.get(&m.id) {
            s.add_scaled(&y.borrow().series, m.multiplier, true);
        }
        full.insert(m.id.clone(), s);
    }
    for m in reg.file.meters.iter().filter(|m| m.is_virtual()) {
        let s = virtual_full(m, &full, days);
        full.insert(m.id.clone(), s);
    }
    full
}

/// Every agency's contributions from every accounted meter, over `days` local days from `start`.
pub fn contributions(reg: &Registry, full: &HashMap<String, Series>, start: chrono::NaiveDate, days: usize) -> (Vec<Contribution>, Vec<NegativeRemainder>) {
    let mut out = Vec::new();
    let mut negative = Vec::new();
    for m in reg.file.meters.iter().filter(|m| m.accounted) {
        let Some(f) = full.get(&m.id) else { continue };
        let own = own_part(reg, m, f, full);
        let total = own.total();
        if total < -1e-9 {
            negative.push(NegativeRemainder { meter: m.id.clone(), remainder: total });
        }
        let litre = m.counter() == Quantity::FuelVolume;
        for (agency, shares) in reg.attribution_days(m, start, days) {
            let s = match &shares {
                DayShares::All(k) => {
                    let mut s = Series::zero(days);
                    s.add_scaled(&own, *k, true);
                    s
                }
                DayShares::Days(k) => scaled_by_day(&own, k, start),
            };
            let share = shares.mean();
            out.push(Contribution {
                agency: agency.to_string(),
                building: m.building.clone(),
                meter: m.id.clone(),
                carrier: m.carrier,
                end_use: m.end_use(),
                litre,
                share,
                series: s,
            });
        }
    }
    (out, negative)
}

/// Key of an agency's consumption group.
pub type GroupKey = (Carrier, EndUse, bool);

/// One agency's consumption per (carrier, end use, litres), summed over its contributions.
pub fn agency_groups<'a>(contribs: impl Iterator<Item = &'a Contribution>, days: usize) -> BTreeMap<GroupKey, Series> {
    let mut out: BTreeMap<GroupKey, Series> = BTreeMap::new();
    for c in contribs {
        let key = (c.carrier, c.end_use, c.litre);
        match out.get_mut(&key) {
            Some(s) => s.add_scaled(&c.series, 1.0, false),
            None => {
                let mut s = Series::zero(days);
                s.add_scaled(&c.series, 1.0, true);
                out.insert(key, s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REG: &str = r#"
[[agency]]
id = "a"
name = "A"
level = "city"
[[agency]]
id = "b"
name = "B"
level = "city"
[[agency]]
id = "c"
name = "C"
level = "county"
[[building]]
id = "shared"
name = "Shared"
floor_area = 1000.0
occupants = [ { agency = "a", area = 600.0 }, { agency = "b", area = 400.0 } ]
[[building]]
id = "own"
name = "Own"
floor_area = 500.0
occupants = [ { agency = "c", share = 1.0 } ]
[[meter]]
id = "main"
building = "shared"
carrier = "electricity"
multiplier = 10.0
[[meter]]
id = "b-sub"
building = "shared"
carrier = "electricity"
parent = "main"
agency = "b"
[[meter]]
id = "kitchen"
building = "shared"
carrier = "electricity"
parent = "main"
end_use = "kitchen"
[[meter]]
id = "grid"
building = "own"
carrier = "electricity"
accounted = false
[[meter]]
id = "tenant"
building = "own"
carrier = "electricity"
accounted = false
[[meter]]
id = "net"
building = "own"
carrier = "electricity"
formula = "grid - tenant"
"#;

    const D0: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(2026, 1, 1) {
        Some(d) => d,
        None => panic!("date"),
    };

    fn year(v: f64) -> MeterYear {
        let mut s = Series::zero(2);
        s.value = vec![v, 0.0];
        s.coverage = vec![1.0, 1.0];
        MeterYear { series: s, flags: vec![], rejected: 0, rejected_readings: vec![], gaps: vec![] }
    }

    /// Worked by hand: main reads 100 × CT 10 = 1000 kWh; B's sub-meter 150; the kitchen 50.
    /// Main's own part 1000 - 150 - 50 = 800 splits 60/40 by area: A 480, B 320 (+150 own
    /// sub-meter = 470); the kitchen's 50 splits 30 / 20 with end use kitchen.
    /// C's building: grid 300 minus a tenant 120 = 180 through the virtual meter.
    #[test]
    fn shared_building_sub_meters_and_a_virtual_meter() {
        let reg = Registry::parse(REG).unwrap();
        let years: HashMap<String, MeterYear> =
            [("main", 100.0), ("b-sub", 150.0), ("kitchen", 50.0), ("grid", 300.0), ("tenant", 120.0)].into_iter().map(|(m, v)| (m.to_string(), year(v))).collect();
        let full = full_series(&reg, &years, 2);
        let (c, neg) = contributions(&reg, &full, D0, 2);
        assert!(neg.is_empty());
        let total = |agency: &str, end_use: Option<EndUse>| -> f64 {
            c.iter().filter(|x| x.agency == agency && end_use.is_none_or(|e| e == x.end_use)).map(|x| x.series.total()).sum()
        };
        assert!((total("a", None) - 510.0).abs() < 1e-9, "{}", total("a", None));
        assert!((total("a", Some(EndUse::Kitchen)) - 30.0).abs() < 1e-9);
        assert!((total("b", None) - 490.0).abs() < 1e-9);
        assert!((total("c", None) - 180.0).abs() < 1e-9);
        let groups = agency_groups(c.iter().filter(|x| x.agency == "b"), 2);
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn children_above_their_parent_are_reported() {
        let reg = Registry::parse(REG).unwrap();
        let years: HashMap<String, MeterYear> = [("main", 10.0), ("b-sub", 150.0)].into_iter().map(|(m, v)| (m.to_string(), year(v))).collect();
        let (_, neg) = contributions(&reg, &full_series(&reg, &years, 2), D0, 2);
        assert_eq!(neg, vec![NegativeRemainder { meter: "main".into(), remainder: -50.0 }]);
    }

    /// Issue 16, finding 8: dated shares and per-carrier keys, worked by hand over four days.
    /// Building `x` (1000 m²): `a` alone, then from 2026-01-03 (day 2) `a` and `b` half each.
    /// Electricity 100 a day: a 100 + 100 + 50 + 50 = 300, b 0 + 0 + 50 + 50 = 100.
    /// Water by headcount (a 30, b 10, over the occupants of each day): days 0-1 all a; days
    /// 2-3 a 0.75, b 0.25: of 40 a day, a 40 + 40 + 30 + 30 = 140, b 20.
    /// Heat by fixed shares a 0.2, b 0.8 whatever the occupants: of 10 a day, a 8, b 32.
    /// Areas over the four days: a (1 + 1 + 0.5 + 0.5) / 4 = 0.75 of 1000 m², b 0.25.
    #[test]
    fn dated_occupancy_and_allocation_keys_per_carrier() {
        let reg = Registry::parse(
            r#"
[[agency]]
id = "a"
name = "A"
level = "city"
headcount = { 2026 = 30 }
[[agency]]
id = "b"
name = "B"
level = "city"
headcount = { 2026 = 10 }
[[building]]
id = "x"
name = "X"
floor_area = 1000.0
occupants = [ { agency = "a", share = 1.0 } ]
occupancy = [ { from = "2026-01-03", occupants = [ { agency = "a", share = 0.5 }, { agency = "b", share = 0.5 } ] } ]
allocation = { water = "headcount", district_heat = { a = 0.2, b = 0.8 } }
[[meter]]
id = "e"
building = "x"
carrier = "electricity"
[[meter]]
id = "w"
building = "x"
carrier = "water"
[[meter]]
id = "h"
building = "x"
carrier = "district_heat"
"#,
        )
        .unwrap();
        let daily = |v: f64| {
            let mut s = Series::zero(4);
            s.value = vec![v; 4];
            s.coverage = vec![1.0; 4];
            MeterYear { series: s, flags: vec![], rejected: 0, rejected_readings: vec![], gaps: vec![] }
        };
        let years: HashMap<String, MeterYear> = [("e", 100.0), ("w", 40.0), ("h", 10.0)].into_iter().map(|(m, v)| (m.to_string(), daily(v))).collect();
        let (c, _) = contributions(&reg, &full_series(&reg, &years, 4), D0, 4);
        let total = |agency: &str, carrier: Carrier| -> f64 { c.iter().filter(|x| x.agency == agency && x.carrier == carrier).map(|x| x.series.total()).sum() };
        for (agency, carrier, want) in [
            ("a", Carrier::Electricity, 300.0),
            ("b", Carrier::Electricity, 100.0),
            ("a", Carrier::Water, 140.0),
            ("b", Carrier::Water, 20.0),
            ("a", Carrier::DistrictHeat, 8.0),
            ("b", Carrier::DistrictHeat, 32.0),
        ] {
            assert!((total(agency, carrier) - want).abs() < 1e-9, "{agency} {carrier:?}: {}", total(agency, carrier));
        }
        assert!((reg.agency_areas_over("a", D0, 4).floor_area - 750.0).abs() < 1e-9);
        assert!((reg.agency_areas_over("b", D0, 4).floor_area - 250.0).abs() < 1e-9);
        // Bad keys and dates are named.
        let bad = Registry::parse(&REG.replace("occupants = [ { agency = \"a\", area = 600.0 }", "allocation = { water = \"people\" }\noccupancy = [ { from = \"soon\", occupants = [ { agency = \"a\", share = 1.0 } ] } ]\noccupants = [ { agency = \"a\", area = 600.0 }"))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`people` is not one of area, headcount") && bad.contains("`from` must be a date"), "{bad}");
    }

    proptest! {
        /// The agencies' totals add up to the accounted root meters' totals, net of allocation.
        #[test]
        fn agencies_add_up_to_the_meters(v in proptest::collection::vec(0.0f64..1e6, 5)) {
            let reg = Registry::parse(REG).unwrap();
            let ids = ["main", "b-sub", "kitchen", "grid", "tenant"];
            let years: HashMap<String, MeterYear> = ids.iter().zip(&v).map(|(m, x)| (m.to_string(), year(*x))).collect();
            let full = full_series(&reg, &years, 2);
            let (c, _) = contributions(&reg, &full, D0, 2);
            let agencies: f64 = c.iter().map(|x| x.series.total()).sum();
            let roots = v[0] * 10.0 + (v[3] - v[4]);
            prop_assert!((agencies - roots).abs() < 1e-6 * roots.abs().max(1.0), "{} vs {}", agencies, roots);
        }
    }
}
