//! The simulated load of an office building in a cold northern climate (Taiyuan, Shanxi), as
//! pure functions of time. Used by the simulated meters and by the demo's history seeding, so
//! that live readings and seeded history come from one deterministic model and counters only go
//! up.
//!
//! * Calendar: working days are Monday to Friday, minus public holidays, plus the weekend days
//!   worked in exchange (调休). The holiday table for 2024-2026 follows the State Council's
//!   notices as published; later years fall back to the fixed-date holidays only. It is demo
//!   data, not used by accounting.
//! * Outdoor temperature: Taiyuan's annual cycle (January mean about -5 °C, July about 24 °C),
//!   a daily swing of ±4.5 °C peaking at 15:00, and day-to-day weather noise.
//! * Electricity: a night base load of 4.5 W/m², 14 W/m² in working hours (08:00-18:00, a dip at
//!   lunch), some overtime until 20:00, cooling above 24 °C outdoors, winter lighting.
//! * Water: 0.008 m³ per person-hour in working hours (one person per 25 m²), none outside them
//!   (a flow through the night is a leak, which the alert rule `night_flow` reports).
//! * District heat: heating season 1 November - 31 March; 45 W/m² at -10 °C outdoors, 18 °C
//!   inside in working hours and a set-back to 15 °C (14 °C at weekends) otherwise.
//! * Kitchen gas: a canteen cooking breakfast and lunch on working days.
//!
//! Rates are constant within each 15-minute slot, so counters are exact sums and piecewise
//! linear in between.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::sync::Mutex;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};
use energy_wire::Quantity;

/// Length of a slot of constant load.
pub const SLOT_MS: i64 = 15 * 60_000;
use energy_wire::time::DAY_MS;
/// UTC offset of the simulated site (China Standard Time, no daylight saving).
const OFFSET_MS: i64 = 8 * 3_600_000;
/// 2024-01-01T00:00:00+08:00: counters start at their initial value here.
pub const EPOCH_MS: i64 = 1_704_038_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    OfficeElectricity,
    OfficeWater,
    DistrictHeat,
    KitchenGas,
}

/// Holidays (`true`) and worked weekend days (`false`), 2024-2026.
const CALENDAR: &[(u16, &[(u32, u32, u32)], &[(u32, u32)])] = &[
    (
        2024,
        &[(1, 1, 1), (2, 10, 17), (4, 4, 6), (5, 1, 5), (6, 10, 10), (9, 15, 17), (10, 1, 7)],
        &[(2, 4), (2, 18), (4, 7), (4, 28), (5, 11), (9, 14), (9, 29), (10, 12)],
    ),
    (
        2025,
        &[(1, 1, 1), (1, 28, 31), (2, 1, 4), (4, 4, 6), (5, 1, 5), (5, 31, 31), (6, 1, 2), (10, 1, 8)],
        &[(1, 26), (2, 8), (4, 27), (9, 28), (10, 11)],
    ),
    (
        2026,
        &[(1, 1, 3), (2, 15, 23), (4, 4, 6), (5, 1, 5), (6, 19, 21), (9, 25, 27), (10, 1, 7)],
        &[(1, 4), (2, 14), (2, 28), (5, 9), (9, 20), (10, 10)],
    ),
];

/// Whether offices work on this date.
pub fn is_workday(d: NaiveDate) -> bool {
    let (m, day) = (d.month(), d.day());
    if let Some((_, holidays, worked)) = CALENDAR.iter().find(|(y, _, _)| i32::from(*y) == d.year()) {
        if worked.contains(&(m, day)) {
            return true;
        }
        if holidays.iter().any(|&(hm, a, z)| hm == m && (a..=z).contains(&day)) {
            return false;
        }
    } else if (m == 1 && day == 1) || (m == 5 && day <= 3) || (m == 10 && day <= 7) {
        return false;
    }
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Heating season: 1 November to 31 March.
pub fn in_heating_season(d: NaiveDate) -> bool {
    matches!(d.month(), 11 | 12 | 1 | 2 | 3)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic uniform number in [0, 1).
fn unit(seed: u64, k: i64) -> f64 {
    (splitmix(seed ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407)) >> 11) as f64 / (1u64 << 53) as f64
}

fn local(t_ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(t_ms + OFFSET_MS).map(|t| t.naive_utc()).unwrap_or_default()
}

/// Outdoor temperature in °C at `t_ms`.
pub fn outdoor_temperature(t_ms: i64) -> f64 {
    let n = local(t_ms);
    let doy = f64::from(n.ordinal());
    let h = f64::from(n.hour()) + f64::from(n.minute()) / 60.0;
    let day = (t_ms + OFFSET_MS).div_euclid(DAY_MS);
    let weather = 3.0 * (unit(77, day) - 0.5) + 2.0 * (unit(77, day - 1) - 0.5);
    10.2 - 14.3 * (2.0 * PI * (doy - 15.0) / 365.25).cos() + 4.5 * (2.0 * PI * (h - 15.0) / 24.0).cos() + weather
}

/// A simulated meter: a model, a size (floor area in m², heated area for heat, meals for gas),
/// a seed for its noise and its counter's value at [`EPOCH_MS`].
#[derive(Debug)]
pub struct MeterModel {
    pub model: Model,
    pub size: f64,
    pub seed: u64,
    pub initial: f64,
    /// Counter values (primary, secondary) at the start of each day since the epoch.
    days: Mutex<Vec<(f64, f64)>>,
}

impl MeterModel {
    pub fn new(model: Model, size: f64, seed: u64, initial: f64) -> Self {
        MeterModel { model, size, seed, initial, days: Mutex::new(vec![(initial, initial * 0.4)]) }
    }

    /// The counter quantity this meter accumulates.
    pub fn counter(&self) -> Quantity {
        match self.model {
            Model::OfficeElectricity => Quantity::ActiveEnergyImport,
            Model::OfficeWater => Quantity::WaterVolume,
            Model::DistrictHeat => Quantity::HeatEnergy,
            Model::KitchenGas => Quantity::GasVolume,
        }
    }

    /// Rates in the slot starting at `slot_ms`: (primary counter per hour, secondary per hour).
    /// Primary: kW, m³/h, GJ/h, m³/h. Secondary: kvar (electricity), m³/h of heating water.
    pub fn rates(&self, slot_ms: i64) -> (f64, f64) {
        let n = local(slot_ms);
        let d = n.date();
        let h = f64::from(n.hour()) + f64::from(n.minute()) / 60.0 + 0.125;
        let work = is_workday(d);
        let k = slot_ms.div_euclid(SLOT_MS);
        let noise = 1.0 + 0.1 * (unit(self.seed, k) - 0.5);
        let t_out = outdoor_temperature(slot_ms + SLOT_MS / 2);
        match self.model {
            Model::OfficeElectricity => {
                let mut w = 4.5;
                if work {
                    w += match h {
                        h if (7.5..8.0).contains(&h) => 5.0,
                        h if (12.0..13.5).contains(&h) => 7.0,
                        h if (8.0..18.0).contains(&h) => 10.0,
                        h if (18.0..20.0).contains(&h) => 3.0,
                        _ => 0.0,
                    };
                    if (9.0..18.0).contains(&h) {
                        w += (t_out - 24.0).max(0.0) * 1.2;
                    }
                    if matches!(d.month(), 11 | 12 | 1 | 2) && (16.5..18.5).contains(&h) {
                        w += 2.0;
                    }
                } else if (9.0..17.0).contains(&h) {
                    w += 1.0; // a few people in on weekends
                }
                let kw = w * self.size / 1000.0 * noise;
                (kw, kw * 0.395)
            }
            Model::OfficeWater => {
                let persons = self.size / 25.0;
                let m3h = if work && (8.0..18.0).contains(&h) { 0.008 * persons } else { 0.0 };
                (m3h * noise, 0.0)
            }
            Model::DistrictHeat => {
                if !in_heating_season(d) {
                    return (0.0, 0.0);
                }
                let t_in = if work && (7.0..18.0).contains(&h) { 18.0 } else if work { 15.0 } else { 14.0 };
                let ua = 45.0 * self.size / 28.0; // W/K
                let kw = (ua * (t_in - t_out)).max(0.0) / 1000.0 * noise;
                let (_, _, flow) = heat_temperatures(kw, self.size, t_out);
                (kw * 0.0036, flow)
            }
            Model::KitchenGas => {
                let m3h = if work {
                    match h {
                        h if (6.5..8.0).contains(&h) => 0.08,
                        h if (10.5..12.5).contains(&h) => 0.12,
                        h if (16.5..17.5).contains(&h) => 0.06,
                        _ => 0.0,
                    }
                } else {
                    0.0
                } * self.size;
                (m3h * noise, 0.0)
            }
        }
    }

    fn day_totals(&self, day_ms: i64) -> (f64, f64) {
        let mut p = 0.0;
        let mut s = 0.0;
        for i in 0..(DAY_MS / SLOT_MS) {
            let (a, b) = self.rates(day_ms + i * SLOT_MS);
            p += a * 0.25;
            s += b * 0.25;
        }
        (p, s)
    }

    /// Counter values (primary, secondary) at `t_ms` (constant before the epoch).
    pub fn counters_at(&self, t_ms: i64) -> (f64, f64) {
        if t_ms <= EPOCH_MS {
            return (self.initial, self.initial * 0.4);
        }
        let day = ((t_ms - EPOCH_MS) / DAY_MS) as usize;
        let (mut p, mut s) = {
            let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
            while days.len() <= day {
                let i = days.len() - 1;
                let (dp, ds) = self.day_totals(EPOCH_MS + i as i64 * DAY_MS);
                let (lp, ls) = days[i];
                days.push((lp + dp, ls + ds));
            }
            days[day]
        };
        let mut slot = EPOCH_MS + day as i64 * DAY_MS;
        while slot + SLOT_MS <= t_ms {
            let (a, b) = self.rates(slot);
            p += a * 0.25;
            s += b * 0.25;
            slot += SLOT_MS;
        }
        let frac = (t_ms - slot) as f64 / 3_600_000.0;
        let (a, b) = self.rates(slot);
        (p + a * frac, s + b * frac)
    }

    /// Every value the meter shows at `t_ms`. With `full = false`, only the counters and the
    /// main rate (what the demo seeds as history).
    pub fn values_at(&self, t_ms: i64, full: bool) -> BTreeMap<Quantity, f64> {
        use Quantity as Q;
        let slot = t_ms.div_euclid(SLOT_MS) * SLOT_MS;
        let (rate, rate2) = self.rates(slot);
        let (c1, c2) = self.counters_at(t_ms);
        let mut v = BTreeMap::new();
        match self.model {
            Model::OfficeElectricity => {
                v.insert(Q::ActiveEnergyImport, c1);
                v.insert(Q::ReactiveEnergyImport, c2);
                v.insert(Q::ActivePower, rate);
                if full {
                    let k = t_ms / 1000;
                    let u = |i: i64| 230.0 + 3.0 * (unit(self.seed ^ 0x55, k * 3 + i) - 0.5);
                    let (u1, u2, u3) = (u(0), u(1), u(2));
                    v.insert(Q::VoltageL1, u1);
                    v.insert(Q::VoltageL2, u2);
                    v.insert(Q::VoltageL3, u3);
                    let pf = 0.93;
                    for (q, uu, share) in [(Q::CurrentL1, u1, 0.36), (Q::CurrentL2, u2, 0.33), (Q::CurrentL3, u3, 0.31)] {
                        v.insert(q, rate * share * 1000.0 / (uu * pf));
                    }
                    v.insert(Q::ActivePowerL1, rate * 0.36);
                    v.insert(Q::ActivePowerL2, rate * 0.33);
                    v.insert(Q::ActivePowerL3, rate * 0.31);
                    v.insert(Q::ReactivePower, rate2);
                    v.insert(Q::ApparentPower, rate / pf);
                    v.insert(Q::PowerFactor, pf);
                    v.insert(Q::Frequency, 50.0 + 0.06 * (unit(self.seed ^ 0x77, k) - 0.5));
                    v.insert(Q::ActiveEnergyExport, 0.0);
                    v.insert(Q::ReactiveEnergyExport, 0.0);
                }
            }
            Model::OfficeWater => {
                v.insert(Q::WaterVolume, c1);
                v.insert(Q::FlowRate, rate);
            }
            Model::DistrictHeat => {
                let kw = rate / 0.0036;
                let t_out = outdoor_temperature(t_ms);
                let (sup, ret, flow) = if kw > 0.0 { heat_temperatures(kw, self.size, t_out) } else { (24.0, 23.5, 0.0) };
                v.insert(Q::HeatEnergy, c1);
                v.insert(Q::HeatVolume, c2);
                v.insert(Q::HeatPower, kw);
                v.insert(Q::FlowRate, flow);
                v.insert(Q::SupplyTemperature, sup);
                v.insert(Q::ReturnTemperature, ret);
                if full {
                    v.insert(Q::OutdoorTemperature, t_out);
                }
            }
            Model::KitchenGas => {
                v.insert(Q::GasVolume, c1);
                v.insert(Q::FlowRate, rate);
            }
        }
        v
    }
}

/// Supply and return temperature (°C) and flow (m³/h) of a heating substation delivering `kw`.
fn heat_temperatures(kw: f64, heated_area: f64, t_out: f64) -> (f64, f64, f64) {
    let design_kw = 45.0 * heated_area / 1000.0;
    let load = (kw / design_kw).clamp(0.05, 1.2);
    let supply = (40.0 + (18.0 - t_out) * 0.9).clamp(40.0, 70.0);
    let dt = 2.0 + 10.0 * load;
    // kW / (4.186 kJ/(kg·K) · ΔT) = kg/s; 1 kg/s of water is 3.6 m³/h.
    (supply, supply - dt, kw / (4.186 * dt) * 3.6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn epoch_is_new_year_2024_in_china() {
        assert_eq!(EPOCH_MS, ms("2024-01-01T00:00:00+08:00"));
    }

    #[test]
    fn calendar_worked_by_hand() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert!(is_workday(d(2026, 3, 2))); // Monday
        assert!(!is_workday(d(2026, 3, 7))); // Saturday
        assert!(!is_workday(d(2026, 10, 1))); // National Day
        assert!(is_workday(d(2026, 10, 10))); // worked Saturday
        assert!(!is_workday(d(2025, 1, 29))); // Spring Festival
        assert!(!is_workday(d(2030, 10, 3))); // fallback table
        assert!(in_heating_season(d(2026, 11, 1)) && in_heating_season(d(2026, 3, 31)));
        assert!(!in_heating_season(d(2026, 4, 1)) && !in_heating_season(d(2026, 10, 31)));
    }

    #[test]
    fn counters_only_go_up_and_match_rates() {
        let m = MeterModel::new(Model::OfficeElectricity, 10_000.0, 1, 1000.0);
        let mut last = 0.0;
        let start = ms("2026-01-05T00:00:00+08:00");
        for i in 0..(7 * 96) {
            let (c, _) = m.counters_at(start + i * SLOT_MS / 3);
            assert!(c >= last);
            last = c;
        }
        // Over one slot the counter rises by rate x 0.25 h.
        let t = ms("2026-01-05T10:00:00+08:00");
        let (a, _) = m.counters_at(t);
        let (b, _) = m.counters_at(t + SLOT_MS);
        assert!((b - a - m.rates(t).0 * 0.25).abs() < 1e-9);
    }

    #[test]
    fn an_office_uses_more_on_weekday_afternoons_than_at_night() {
        let m = MeterModel::new(Model::OfficeElectricity, 10_000.0, 1, 0.0);
        let day = m.rates(ms("2026-03-04T10:00:00+08:00")).0; // Wednesday
        let night = m.rates(ms("2026-03-04T03:00:00+08:00")).0;
        let sunday = m.rates(ms("2026-03-08T10:00:00+08:00")).0;
        assert!(day > 2.5 * night, "{day} vs {night}");
        assert!(sunday < 0.5 * day);
        // Annual use of an office of this kind: 50-100 kWh/m².
        let year = m.counters_at(ms("2025-01-01T00:00:00+08:00")).0 - m.counters_at(ms("2024-01-01T00:00:00+08:00")).0;
        assert!((500_000.0..1_000_000.0).contains(&year), "{year} kWh");
    }

    #[test]
    fn heat_flows_only_in_the_heating_season() {
        let m = MeterModel::new(Model::DistrictHeat, 10_000.0, 2, 0.0);
        assert!(m.rates(ms("2026-01-15T08:00:00+08:00")).0 > 0.0);
        assert_eq!(m.rates(ms("2026-07-15T08:00:00+08:00")).0, 0.0);
        // 0.2-0.6 GJ/m² a season is typical for north China.
        let season = m.counters_at(ms("2025-04-01T00:00:00+08:00")).0 - m.counters_at(ms("2024-11-01T00:00:00+08:00")).0;
        assert!((2_000.0..6_000.0).contains(&season), "{season} GJ");
    }

    #[test]
    fn outdoor_temperature_is_taiyuan_like() {
        let jan: f64 = (0..31).map(|d| outdoor_temperature(ms("2026-01-01T14:00:00+08:00") + d * DAY_MS)).sum::<f64>() / 31.0;
        let jul: f64 = (0..31).map(|d| outdoor_temperature(ms("2026-07-01T14:00:00+08:00") + d * DAY_MS)).sum::<f64>() / 31.0;
        assert!((-6.0..4.0).contains(&jan), "{jan}");
        assert!((24.0..34.0).contains(&jul), "{jul}");
    }
}
