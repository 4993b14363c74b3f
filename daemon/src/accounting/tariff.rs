//! Cost by time-of-use band (尖峰/高峰/平段/低谷): a group's consumption over a period split
//! into the bands of its carrier's tariff, each with its consumption, price and yuan. Pure.
//!
//! * **Slots.** Every hour of the local day is priced by the first band of `tou` that covers it
//!   (as [`super::indicators`] prices it), else at the tariff's flat `price`: the bands and "the
//!   hours no band covers" are the slots of the split. A tariff without `tou` is one slot, 平段,
//!   all 24 hours.
//! * **Names.** A band named in the registry (`name = "sharp"|"peak"|"flat"|"valley"`) keeps its
//!   name. An unnamed band is named by its price's rank among the tariff's prices (every band's
//!   but those named `sharp`, and the flat price when some hours are left uncovered): the highest
//!   price is 高峰, the lowest 低谷, any other 平段 (one price only: 平段). The hours no band
//!   covers are 平段, unless their price equals a band's: then they take that band's name.
//! * **Apportioning.** The ledger ([`super::ledger::Series`]) keeps consumption exactly per
//!   local day, and per month and hour of the day (not per day and hour). So the consumption of
//!   the period's days in month M is split between the slots in the shares of M's
//!   hour-of-day consumption: exact for whole months, and for a part of a month (a custom range,
//!   the month to date) the month's profile is taken as the part's. A month with no hour-of-day
//!   consumption is priced flat. This is the rule the cost of the indicators and the pages uses
//!   (each day at its month's hour-weighted price), so the slots' yuan add up to that cost.

use energy_wire::Carrier;
use serde::Serialize;

use super::ledger::{Series, YearCalendar};
use crate::registry::{BandName, Registry, Tariff};

/// One slot of a split: a tariff band, or the hours no band covers (`from`, `to` absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandCost {
    /// `sharp`, `peak`, `flat`, `valley`.
    pub band: BandName,
    /// The band's local hours `[from, to)` as the tariff gives them (wrapping past midnight when
    /// `to <= from`); absent for the hours no band covers.
    pub from: Option<u8>,
    pub to: Option<u8>,
    /// Hours of the day this slot prices (a band overlapped by an earlier one prices fewer).
    pub hours: u8,
    /// Yuan per counter unit.
    pub price: f64,
    /// Consumption, counter units (kWh, m³, GJ, ...).
    pub value: f64,
    pub yuan: f64,
}

/// Whether band hours `[from, to)` (wrapping when `to <= from`) hold hour `h`.
fn covers(from: u8, to: u8, h: u8) -> bool {
    if from < to {
        (from..to).contains(&h)
    } else {
        h >= from || h < to
    }
}

/// The slot of each hour of the day: `Some(i)` the first band `tou[i]` that covers it, `None`
/// the flat price.
pub fn hour_slots(t: &Tariff) -> [Option<usize>; 24] {
    let mut out = [None; 24];
    for (h, slot) in (0u8..24).zip(out.iter_mut()) {
        *slot = t.tou.iter().position(|b| covers(b.from, b.to, h));
    }
    out
}

/// The names of the tariff's bands (in `tou` order) and of the hours no band covers (see the
/// module's doc for the rule).
pub fn band_names(t: &Tariff) -> (Vec<BandName>, BandName) {
    let slots = hour_slots(t);
    let uncovered = slots.iter().any(Option::is_none);
    let ranked: Vec<f64> = t.tou.iter().filter(|b| b.name != Some(BandName::Sharp)).map(|b| b.price).chain(uncovered.then_some(t.price)).collect();
    let hi = ranked.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lo = ranked.iter().copied().fold(f64::INFINITY, f64::min);
    let names: Vec<BandName> = t
        .tou
        .iter()
        .map(|b| {
            b.name.unwrap_or(if hi <= lo {
                BandName::Flat
            } else if b.price == hi {
                BandName::Peak
            } else if b.price == lo {
                BandName::Valley
            } else {
                BandName::Flat
            })
        })
        .collect();
    let flat = t.tou.iter().position(|b| b.price == t.price).map_or(BandName::Flat, |i| names[i]);
    (names, flat)
}

/// Splits consumption between the slots of `t`: `month_values[m]` is the consumption of the
/// period's days in month `m` (0-based), `hod[m]` that month's consumption per hour of the day.
/// Slots with no hours and no consumption are left out; the rest in the order 尖峰, 高峰, 平段,
/// 低谷, then by hour.
pub fn split(t: &Tariff, hod: &[[f64; 24]], month_values: &[f64; 12]) -> Vec<BandCost> {
    let slots = hour_slots(t);
    let (names, flat_name) = band_names(t);
    // Index tou.len() is the flat slot.
    let n = t.tou.len();
    let mut value = vec![0.0; n + 1];
    let mut hours = vec![0u8; n + 1];
    for s in slots {
        hours[s.unwrap_or(n)] += 1;
    }
    for (m, &v) in month_values.iter().enumerate() {
        if v == 0.0 {
            continue;
        }
        let profile = hod.get(m).copied().unwrap_or([0.0; 24]);
        let total: f64 = profile.iter().sum();
        if n == 0 || total <= 0.0 {
            value[n] += v;
            continue;
        }
        for (h, x) in profile.iter().enumerate() {
            value[slots[h].unwrap_or(n)] += v * x / total;
        }
    }
    let mut out: Vec<BandCost> = Vec::new();
    for i in 0..=n {
        if hours[i] == 0 && value[i] == 0.0 {
            continue;
        }
        let (band, from, to, price) = match t.tou.get(i) {
            Some(b) => (names[i], Some(b.from), Some(b.to), b.price),
            None => (flat_name, None, None, t.price),
        };
        out.push(BandCost { band, from, to, hours: hours[i], price, value: value[i], yuan: value[i] * price });
    }
    sort(&mut out);
    out
}

fn sort(v: &mut [BandCost]) {
    v.sort_by(|a, b| a.band.cmp(&b.band).then(a.from.unwrap_or(u8::MAX).cmp(&b.from.unwrap_or(u8::MAX))).then(a.price.total_cmp(&b.price)));
}

/// The split of a group's days `[from, to)` of `year` (its carrier's tariff that year; empty
/// without a tariff).
pub fn group_bands(reg: &Registry, carrier: Carrier, year: i32, cal: &YearCalendar, s: &Series, (from, to): (usize, usize)) -> Vec<BandCost> {
    let Some(t) = reg.tariff(carrier, year) else { return Vec::new() };
    let mut months = [0.0; 12];
    for d in from..to.min(s.value.len()).min(cal.day_month.len()) {
        months[usize::from(cal.day_month[d])] += s.value[d];
    }
    split(t, &s.hod, &months)
}

/// Adds `more` to `into`: slots with the same band, hours and price add up (groups of one
/// carrier, or the same tariff in two years); others are kept apart.
pub fn merge(into: &mut Vec<BandCost>, more: Vec<BandCost>) {
    for b in more {
        match into.iter_mut().find(|x| x.band == b.band && x.from == b.from && x.to == b.to && x.price == b.price) {
            Some(x) => {
                x.value += b.value;
                x.yuan += b.yuan;
            }
            None => into.push(b),
        }
    }
    sort(into);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::TouBand;

    fn band(from: u8, to: u8, price: f64, name: Option<BandName>) -> TouBand {
        TouBand { from, to, price, name }
    }

    fn tariff(price: f64, tou: Vec<TouBand>) -> Tariff {
        Tariff { carrier: Carrier::Electricity, year: None, price, tou }
    }

    /// 0.6 flat; 08-12 at 1.0 and 23-07 at 0.3, both unnamed.
    fn two_bands() -> Tariff {
        tariff(0.6, vec![band(8, 12, 1.0, None), band(23, 7, 0.3, None)])
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// (band, from, hours, price, value, yuan) of each slot.
    type Row = (BandName, Option<u8>, u8, f64, f64, f64);

    fn rows(v: &[BandCost]) -> Vec<Row> {
        v.iter().map(|b| (b.band, b.from, b.hours, b.price, b.value, b.yuan)).collect()
    }

    fn same(got: &[BandCost], want: &[Row]) {
        let g = rows(got);
        assert_eq!(g.len(), want.len(), "{g:?}");
        for (a, b) in g.iter().zip(want) {
            assert!(a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && close(a.3, b.3) && close(a.4, b.4) && close(a.5, b.5), "got {a:?}, want {b:?}");
        }
    }

    #[test]
    fn bands_are_named_by_the_registry_or_by_their_price_rank() {
        use BandName::*;
        // (tariff, band names, name of the uncovered hours)
        let cases: Vec<(Tariff, Vec<BandName>, BandName)> = vec![
            // Prices 1.0 (band), 0.3 (band), 0.6 (hours 7 and 12-23, uncovered): 1.0 highest is
            // 高峰, 0.3 lowest 低谷; the uncovered hours 平段.
            (two_bands(), vec![Peak, Valley], Flat),
            // Named `sharp` 10-11 is left out of the ranking: of 1.0, 1.0, 0.3 and 0.6 the 1.0
            // bands are 高峰, 0.3 低谷.
            (tariff(0.6, vec![band(10, 11, 1.3, Some(Sharp)), band(8, 10, 1.0, None), band(11, 12, 1.0, None), band(23, 7, 0.3, None)]), vec![Sharp, Peak, Peak, Valley], Flat),
            // One band, a valley at 0.3, the rest at 0.6: 0.3 is the lowest of {0.3, 0.6}.
            (tariff(0.6, vec![band(22, 6, 0.3, None)]), vec![Valley], Flat),
            // One band at 0.9 over a 0.6 day: 0.9 is the highest: 高峰.
            (tariff(0.6, vec![band(9, 11, 0.9, None)]), vec![Peak], Flat),
            // The uncovered hours priced as the valley band: they are 低谷 too.
            (tariff(0.3, vec![band(8, 20, 0.9, None), band(23, 6, 0.3, None)]), vec![Peak, Valley], Valley),
            // One price only: everything 平段.
            (tariff(0.5, vec![band(0, 8, 0.5, None)]), vec![Flat], Flat),
            // Three prices over the whole day (no uncovered hours, the flat price ranks nothing):
            // 1.2 高峰, 0.7 平段, 0.35 低谷.
            (tariff(9.9, vec![band(8, 22, 0.7, None), band(22, 8, 0.35, None), band(18, 20, 1.2, None)]), vec![Flat, Valley, Peak], Flat),
            // A name given wins over the rank: 0.3 said to be 平段.
            (tariff(0.6, vec![band(8, 12, 1.0, None), band(23, 7, 0.3, Some(Flat))]), vec![Peak, Flat], Flat),
        ];
        for (t, want, flat) in cases {
            assert_eq!(band_names(&t), (want, flat), "{:?}", t.tou);
        }
    }

    #[test]
    fn consumption_is_split_by_the_months_hour_of_day_profile() {
        use BandName::*;
        let t = two_bands();
        // Hours: 高峰 08-12 = 4 h; 低谷 23-07 = 23, 0..6 = 8 h; the rest (7, 12..22) 12 h 平段.
        let mut flat_jan = vec![[0.0; 24]; 12];
        flat_jan[0] = [31.0; 24];
        let mut jan = [0.0; 12];
        jan[0] = 744.0;
        let mut shaped = vec![[0.0; 24]; 12];
        shaped[0] = [31.0; 24];
        for h in 8..12 {
            shaped[0][h] = 62.0;
        }
        let mut part = [0.0; 12];
        part[0] = 280.0;
        let cases: Vec<(&str, Vec<[f64; 24]>, [f64; 12], Vec<Row>)> = vec![
            // January, 1 kWh every hour (31 per hour of the day), all 744 kWh: 高峰 744 × 4/24 =
            // 124 kWh × 1.0 = 124 元; 平段 744 × 12/24 = 372 × 0.6 = 223.2 元; 低谷 744 × 8/24 =
            // 248 × 0.3 = 74.4 元 (421.6 元 in all, = 744 × (4×1.0 + 12×0.6 + 8×0.3)/24).
            ("whole month", flat_jan, jan, vec![(Peak, Some(8), 4, 1.0, 124.0, 124.0), (Flat, None, 12, 0.6, 372.0, 223.2), (Valley, Some(23), 8, 0.3, 248.0, 74.4)]),
            // January's profile 2 kWh/h at 08-12 (62 per hour of the day), 1 elsewhere (31): of
            // 868, 高峰 4×62 = 248 (2/7), 平段 12×31 = 372 (3/7), 低谷 8×31 = 248 (2/7). A part of
            // January whose days hold 280 kWh: 高峰 80 kWh 80 元, 平段 120 × 0.6 = 72 元, 低谷
            // 80 × 0.3 = 24 元.
            ("part of a month", shaped, part, vec![(Peak, Some(8), 4, 1.0, 80.0, 80.0), (Flat, None, 12, 0.6, 120.0, 72.0), (Valley, Some(23), 8, 0.3, 80.0, 24.0)]),
            // No consumption: the slots with their hours, zero.
            ("nothing", vec![[0.0; 24]; 12], [0.0; 12], vec![(Peak, Some(8), 4, 1.0, 0.0, 0.0), (Flat, None, 12, 0.6, 0.0, 0.0), (Valley, Some(23), 8, 0.3, 0.0, 0.0)]),
        ];
        for (what, hod, months, want) in cases {
            let got = split(&t, &hod, &months);
            same(&got, &want);
            let total: f64 = got.iter().map(|b| b.yuan).sum();
            assert!((want.iter().map(|r| r.5).sum::<f64>() - total).abs() < 1e-9, "{what}");
        }
    }

    #[test]
    fn flat_tariffs_unprofiled_months_and_overlaps() {
        use BandName::*;
        let mut march = [0.0; 12];
        march[2] = 100.0;
        // No `tou`: one slot, 平段, 24 hours: 100 × 0.8 = 80 元.
        same(&split(&tariff(0.8, vec![]), &vec![[1.0; 24]; 12], &march), &[(Flat, None, 24, 0.8, 100.0, 80.0)]);
        // Bands over the whole day (06-22 at 0.7 高峰, 22-06 at 0.3 低谷) and a month without an
        // hour-of-day profile: its 100 go to the flat price (0.5), as the indicators price it:
        // a slot of no hours, 50 元.
        let full = tariff(0.5, vec![band(6, 22, 0.7, None), band(22, 6, 0.3, None)]);
        same(&split(&full, &vec![[0.0; 24]; 12], &march), &[(Peak, Some(6), 16, 0.7, 0.0, 0.0), (Flat, None, 0, 0.5, 100.0, 50.0), (Valley, Some(22), 8, 0.3, 0.0, 0.0)]);
        // Overlapping bands: 08-12 at 1.0 first, then 10-14 at 0.9, which keeps 12 and 13 only.
        // Prices ranked 1.0, 0.9, 0.6 (uncovered): 1.0 高峰, 0.9 平段. Flat profile, 240 kWh in
        // March (10 per hour of the day): 高峰 40 kWh 40 元; 0.9 band 20 kWh 18 元; 18 uncovered
        // hours 180 kWh × 0.6 = 108 元.
        let over = tariff(0.6, vec![band(8, 12, 1.0, None), band(10, 14, 0.9, None)]);
        let mut m = [0.0; 12];
        m[2] = 240.0;
        same(&split(&over, &vec![[10.0; 24]; 12], &m), &[(Peak, Some(8), 4, 1.0, 40.0, 40.0), (Flat, Some(10), 2, 0.9, 20.0, 18.0), (Flat, None, 18, 0.6, 180.0, 108.0)]);
    }

    /// The split of a group's days adds up to the cost the indicators give the same days, for
    /// whole months and for a part of one, and merging two groups adds slot by slot.
    #[test]
    fn the_split_adds_up_to_the_indicators_cost() {
        let reg = Registry::parse(
            r#"
[[tariff]]
carrier = "electricity"
price = 0.6
tou = [ { from = 8, to = 12, price = 1.0, name = "peak" }, { from = 23, to = 7, price = 0.3 } ]
"#,
        )
        .unwrap();
        let cal = YearCalendar::new(chrono_tz::Asia::Shanghai, 2025).unwrap();
        let mut s = Series::zero(cal.days());
        // Days of Jan and Feb with uneven consumption and uneven profiles.
        for d in 0..59 {
            s.value[d] = 10.0 + d as f64;
        }
        let jan: f64 = (0..31).map(|d| 10.0 + d as f64).sum();
        let feb: f64 = (31..59).map(|d| 10.0 + d as f64).sum();
        for h in 0..24 {
            s.hod[0][h] = jan * if (8..12).contains(&h) { 3.0 } else { 1.0 } / 32.0;
            s.hod[1][h] = feb * if h >= 23 || h < 7 { 2.0 } else { 1.0 } / 32.0;
        }
        let key = (Carrier::Electricity, crate::registry::EndUse::General, false);
        let groups = BTreeMap::from([(key, s.clone())]);
        for (from, to) in [(0, 59), (10, 40), (31, 45), (0, 0)] {
            let bands = group_bands(&reg, Carrier::Electricity, 2025, &cal, &s, (from, to));
            let yuan: f64 = bands.iter().map(|b| b.yuan).sum();
            let value: f64 = bands.iter().map(|b| b.value).sum();
            let want = super::super::indicators::sums(&reg, 2025, &cal, &groups, from, to);
            assert!((yuan - want.cost_yuan).abs() < 1e-6, "{from}..{to}: {yuan} vs {}", want.cost_yuan);
            assert!((value - s.sum(from, to)).abs() < 1e-9);
        }
        let one = group_bands(&reg, Carrier::Electricity, 2025, &cal, &s, (0, 31));
        let mut two = one.clone();
        merge(&mut two, one.clone());
        for (a, b) in one.iter().zip(&two) {
            assert!(close(2.0 * a.value, b.value) && close(2.0 * a.yuan, b.yuan) && a.hours == b.hours);
        }
        assert!(group_bands(&reg, Carrier::Water, 2025, &cal, &s, (0, 59)).is_empty(), "no tariff, no split");
    }

    /// The example of docs/registry.md names its bands as the text under it says.
    #[test]
    fn the_documented_example_is_named_as_documented() {
        let doc = include_str!("../../../docs/registry.md");
        let at = doc.find("```toml\n  [[tariff]]").expect("the tariff example");
        let toml: String = doc[at + 8..].split("```").next().unwrap().lines().map(str::trim_start).collect::<Vec<_>>().join("\n");
        let reg = Registry::parse(&toml).unwrap();
        use BandName::*;
        assert_eq!(band_names(&reg.file.tariffs[0]), (vec![Sharp, Peak, Peak, Valley], Flat));
    }

    #[test]
    fn a_band_name_must_be_one_of_the_four() {
        let err = Registry::parse("[[tariff]]\ncarrier = \"electricity\"\nprice = 0.6\ntou = [ { from = 8, to = 12, price = 1.0, name = \"high\" } ]\n").unwrap_err().to_string();
        assert!(err.contains("`high` is not one of sharp (尖峰), peak (高峰), flat (平段), valley (低谷)"), "{err}");
        let ok = Registry::parse("[[tariff]]\ncarrier = \"electricity\"\nprice = 0.6\ntou = [ { from = 8, to = 12, price = 1.0, name = \"sharp\" }, { from = 0, to = 6, price = 0.3 } ]\n").unwrap();
        assert_eq!(ok.file.tariffs[0].tou[0].name, Some(BandName::Sharp));
        assert_eq!(ok.file.tariffs[0].tou[1].name, None);
    }
}
