//! Scripted scenarios with exact times, worked out by hand (Asia/Shanghai, UTC+8).
//! 2026-03-02 is a Monday.

use std::collections::BTreeMap;

use chrono_tz::Asia::Shanghai as TZ;

use super::config::{BandLevel, Severity};
use crate::registry::Indicator;
use energy_wire::Carrier;
use super::rules::{self, Finding, Outlook, SeenGateway, SeenMeter};
use super::state::{Book, RuleMeta, State};
use crate::accounting::counter::Flag;
use crate::accounting::indicators::BandClass;
use crate::store::HourRollup;
use crate::registry::HeatingSeason;

const M: i64 = 60_000;
const H: i64 = 3_600_000;
const D: i64 = 24 * H;
/// 2026-03-02T00:00:00+08:00, a Monday.
const MON: i64 = 1_772_380_800_000;

fn at(day: i64, h: i64, m: i64) -> i64 {
    MON + day * D + h * H + m * M
}

fn labels() -> BTreeMap<String, String> {
    rules::meter_labels("m1", "b1", "ag1")
}

/// Runs `findings(t)` at each time through a book; returns (time, state) at each change of
/// the alert `key`.
fn drive(times: &[i64], for_ms: i64, key: &str, mut findings: impl FnMut(i64) -> Vec<Finding>) -> Vec<(i64, State)> {
    let mut book = Book::default();
    let extra = BTreeMap::new();
    let meta = RuleMeta { name: "R", severity: Severity::Warning, for_ms, labels: &extra, banded: true };
    let mut out: Vec<(i64, State)> = Vec::new();
    let mut last: Option<State> = None;
    for &t in times {
        book.apply(&meta, findings(t), t);
        let now = book.alerts.get(&("R".to_string(), key.to_string())).map(|a| a.state);
        if now != last {
            if let Some(s) = now {
                out.push((t, s));
            }
            last = now;
        }
    }
    out
}

fn every(from: i64, to: i64, step: i64) -> Vec<i64> {
    (0..).map(|i| from + i * step).take_while(|t| *t <= to).collect()
}

#[test]
fn a_meter_going_silent_pends_fires_and_resolves_at_exact_times() {
    // Readings every 15 min until 10:00, then nothing until 11:12. Silent when more than
    // 3 x 15 min = 45 min: first at the 10:50 evaluation (10:45 is exactly 45 min, not more);
    // firing 15 min later at 11:05; the 11:15 evaluation sees the 11:12 reading: resolved.
    let meter = |t: i64| SeenMeter { labels: labels(), id: "m1".into(), last_seen: Some(if t >= at(0, 11, 12) { at(0, 11, 12) } else { at(0, 10, 0) }), learned_interval: Some(15 * M) };
    let cases: &[(i64, &[(i64, State)])] = &[
        (15 * M, &[(at(0, 10, 50), State::Pending), (at(0, 11, 5), State::Firing), (at(0, 11, 15), State::Resolved)]),
        // `for` 0: fires at once.
        (0, &[(at(0, 10, 50), State::Firing), (at(0, 11, 15), State::Resolved)]),
        // `for` 30 min: still pending when the reading comes back: dropped, never fired.
        (30 * M, &[(at(0, 10, 50), State::Pending)]),
    ];
    for (for_ms, want) in cases {
        let got = drive(&every(at(0, 10, 0), at(0, 11, 30), 5 * M), *for_ms, "m1", |t| rules::meter_silent(&[meter(t)], t, 3.0, None, TZ));
        assert_eq!(&got, want, "for = {} min", for_ms / M);
    }
    // The configured interval wins over the learned one: 5 min x 3 = 15 min, silent after 10:15.
    let f = rules::meter_silent(&[meter(at(0, 10, 15))], at(0, 10, 15), 3.0, Some(5 * M), TZ);
    assert!(f.is_empty(), "exactly 15 min is not more than 15 min");
    let f = rules::meter_silent(&[meter(at(0, 10, 16))], at(0, 10, 16), 3.0, Some(5 * M), TZ);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].summary_en, "meter m1 silent for 16 min (last reading 2026-03-02 10:00, expected every 300 s)");
    assert!(f[0].summary_zh.contains("已 16 分钟 无读数"), "{}", f[0].summary_zh);
    // Never seen: not silent.
    let never = SeenMeter { last_seen: None, ..meter(0) };
    assert!(rules::meter_silent(&[never], at(5, 0, 0), 3.0, None, TZ).is_empty());
}

fn hr(hour: i64, first: (i64, f64), last: (i64, f64), count: u64) -> HourRollup {
    HourRollup { hour, first_ts: first.0, first_v: first.1, last_ts: last.0, last_v: last.1, min: first.1, max: last.1, sum: 0.0, count }
}

#[test]
fn the_reading_interval_is_learned_from_the_roll_ups() {
    let h0 = at(0, 0, 0);
    // Four readings an hour, 15 min apart.
    let quarter: Vec<HourRollup> = (0..3).map(|i| hr(h0 + i * H, (h0 + i * H, 0.0), (h0 + i * H + 45 * M, 3.0), 4)).collect();
    assert_eq!(rules::learn_interval(&quarter), Some(15 * M));
    // One reading every two hours: the gap between the hours' last readings.
    let sparse: Vec<HourRollup> = (0..4).map(|i| hr(h0 + 2 * i * H, (h0 + 2 * i * H + M, 0.0), (h0 + 2 * i * H + M, 0.0), 1)).collect();
    assert_eq!(rules::learn_interval(&sparse), Some(2 * H));
    assert_eq!(rules::learn_interval(&[]), None);
}

#[test]
fn hourly_consumption_is_the_difference_of_the_hours_first_readings() {
    let h0 = at(0, 0, 0);
    let r = vec![
        hr(h0, (h0, 100.0), (h0 + 50 * M, 101.0), 2),
        hr(h0 + H, (h0 + H, 101.5), (h0 + H + 50 * M, 103.0), 2),
        // Hour 2 missing: hour 1 has no next hour.
        hr(h0 + 3 * H, (h0 + 3 * H, 105.0), (h0 + 3 * H + 50 * M, 106.0), 2),
        // A counter that went down: no value.
        hr(h0 + 4 * H, (h0 + 4 * H, 10.0), (h0 + 4 * H + 50 * M, 10.0), 2),
    ];
    // Hour 0: (101.5 - 100) x 2; hour 1 has no next hour, hour 3's next went down.
    let c = crate::accounting::rollup::hourly_consumption(&r, 2.0);
    assert_eq!(c, BTreeMap::from([(h0, 3.0)]));
}

fn mh(id: &str, unit: &str, hours: BTreeMap<i64, f64>) -> rules::MeterHours {
    rules::MeterHours { id: id.into(), labels: labels(), unit: unit.into(), hours }
}

/// Hourly consumption for `days` days from Monday 00:00, by a function of (day, hour).
fn series(days: i64, f: impl Fn(i64, i64) -> f64) -> BTreeMap<i64, f64> {
    (0..days * 24).map(|i| (MON + i * H, f(i / 24, i % 24))).collect()
}

/// Only the hours that have ended by `t`.
fn known(s: &BTreeMap<i64, f64>, t: i64) -> BTreeMap<i64, f64> {
    s.range(..=t - H).map(|(k, v)| (*k, *v)).collect()
}

#[test]
fn a_night_leak_fires_when_the_night_ends_and_resolves_after_a_dry_night() {
    // Night = 0-5 h. Tuesday's night (day 1) has 0.05 m³ in every hour; Monday's and
    // Wednesday's have a dry hour at 2 h. Tuesday's night is complete at 05:00 on Tuesday;
    // Wednesday's at 05:00 on Wednesday.
    let water = series(4, |d, h| if h < 5 { if d != 1 && h == 2 { 0.0 } else { 0.05 } } else { 1.0 });
    let times = every(at(0, 0, 0), at(3, 6, 0), H);
    let run = |for_ms: i64| {
        drive(&times, for_ms, "m1", |t| {
            let m = vec![mh("m1", "m³", known(&water, t))];
            rules::night_flow(&m, t, TZ, [0, 5], 0.01)
        })
    };
    assert_eq!(run(0), vec![(at(1, 5, 0), State::Firing), (at(2, 5, 0), State::Resolved)]);
    assert_eq!(run(2 * H), vec![(at(1, 5, 0), State::Pending), (at(1, 7, 0), State::Firing), (at(2, 5, 0), State::Resolved)]);
    let f = rules::night_flow(&[mh("m1", "m³", known(&water, at(1, 5, 0)))], at(1, 5, 0), TZ, [0, 5], 0.01);
    assert_eq!(f[0].summary_en, "meter m1: flow in every night hour 0-5 h on 2026-03-03 (least 0.050 m³/h, 0.250 m³ in all): possible leak");
    assert_eq!(f[0].labels["agency"], "ag1");
    // Above a threshold of 0.1 the same night is not a leak.
    assert!(rules::night_flow(&[mh("m1", "m³", known(&water, at(1, 5, 0)))], at(1, 5, 0), TZ, [0, 5], 0.1).is_empty());
}

#[test]
fn base_load_against_its_learned_level() {
    // 5 weeks from Monday; nights 0-5 h. Working-day nights at 2.0/h, weekend days at 3.0/h,
    // day hours 20.0. The last night (Monday of week 5, day 35) at `last`.
    let build = |last: f64, sat_last: f64| {
        series(37, move |d, h| {
            let weekend = d % 7 >= 5;
            if d == 35 && h < 5 {
                last
            } else if d == 33 {
                sat_last
            } else if weekend {
                3.0
            } else if h < 5 {
                2.0
            } else {
                20.0
            }
        })
    };
    // (last night, Saturday of week 4, now, expected (date, base, learned) or None, fires with factor 1.5)
    type Case = (f64, f64, i64, Option<(&'static str, f64, f64)>, bool);
    let cases: &[Case] = &[
        // Monday 2026-04-06 05:00: the night is complete: 3.5 > 1.5 x 2.0.
        (3.5, 3.0, at(35, 5, 0), Some(("2026-04-06", 3.5, 2.0)), true),
        // 2.9 is not above 3.0.
        (2.9, 3.0, at(35, 5, 0), Some(("2026-04-06", 2.9, 2.0)), false),
        // At 04:59 the night is not over: the last complete off period is Sunday (whole day),
        // learned from the weekend days before it: Saturday 2026-04-04 at 5.0 among 3.0s.
        (3.5, 5.0, at(35, 4, 59), Some(("2026-04-05", 3.0, 3.0)), false),
        // Sunday 23:00 is not over yet; Saturday at 5.0 is compared with the weekend median.
        (3.5, 5.0, at(34, 23, 30), Some(("2026-04-04", 5.0, 3.0)), true),
    ];
    for &(last, sat, now, want, fires) in cases {
        let s = known(&build(last, sat), now);
        let got = rules::base_load(&s, now, TZ, [0, 5], 4, &[]).map(|b| (b.date.to_string(), b.base, b.learned));
        assert_eq!(got, want.map(|(d, b, l)| (d.to_string(), b, l)), "last {last} now {now}");
        let p = rules::BaseLoadRule { night: [0, 5], weeks: 4, holidays: &[], factor: 1.5, min_excess: 0.0 };
        let f = rules::base_load_high(&[mh("m1", "kWh", s)], now, TZ, &p);
        assert_eq!(f.len(), usize::from(fires), "last {last}: {f:?}");
    }
    // A holiday counts like a weekend day: Monday 2026-04-06 as a holiday is a whole day, not
    // over at 05:00; the last complete off period is Sunday.
    let hol = [chrono::NaiveDate::from_ymd_opt(2026, 4, 6).unwrap()];
    let s = known(&build(3.5, 3.0), at(35, 5, 0));
    assert_eq!(rules::base_load(&s, at(35, 5, 0), TZ, [0, 5], 4, &hol).map(|b| b.date.to_string()), Some("2026-04-05".to_string()));
    // Fewer than three earlier periods: nothing learned yet.
    let short = known(&series(2, |_, _| 1.0), at(1, 6, 0));
    assert_eq!(rules::base_load(&short, at(1, 6, 0), TZ, [0, 5], 4, &[]), None);
}

#[test]
fn gateways_offline_by_last_will_or_silence_and_backing_up_by_lag() {
    let now = at(0, 12, 0);
    let g = |id: &str, online: Option<bool>, last: Option<i64>, lag: Option<i64>| SeenGateway {
        id: id.into(),
        online,
        since_ms: at(0, 11, 0),
        first_batch_ms: last.map(|_| at(0, 8, 0)),
        last_batch_ms: last,
        last_lag_ms: lag,
    };
    let gws = vec![
        g("will", Some(false), Some(now - M), Some(0)),
        g("quiet", None, Some(now - 16 * M), Some(0)),
        g("fresh", Some(true), Some(now - 14 * M), Some(20 * M)),
        g("never", None, None, None),
        // A one-off import: 10 s of batches of old samples, silent since.
        SeenGateway { first_batch_ms: Some(now - 20 * M - 10_000), ..g("import", None, Some(now - 20 * M), Some(30 * D)) },
        SeenGateway { first_batch_ms: Some(now - 5 * M - 10_000), ..g("import2", None, Some(now - 5 * M), Some(30 * D)) },
    ];
    let off: Vec<String> = rules::gateway_offline(&gws, now, 15 * M, TZ).into_iter().map(|f| f.key).collect();
    assert_eq!(off, vec!["will", "quiet"]);
    let f = rules::gateway_offline(&gws, now, 15 * M, TZ);
    assert_eq!(f[0].summary_en, "gateway will offline (MQTT last will, since 2026-03-02 11:00)");
    assert_eq!(f[0].labels, BTreeMap::from([("gateway".to_string(), "will".to_string())]));
    let back: Vec<String> = rules::gateway_backlog(&gws, now, 15 * M, 15 * M).into_iter().map(|f| f.key).collect();
    assert_eq!(back, vec!["fresh"], "only a gateway still sending, with samples 20 min late");
}

#[test]
fn counter_anomalies_from_the_engine_flags_within_the_lookback() {
    let now = at(10, 0, 0);
    let cf = |id: &str, flags: Vec<Flag>| rules::CounterFlags { id: id.into(), labels: labels(), unit: "kWh".into(), flags };
    let meters = vec![
        cf("down", vec![Flag::UnexplainedDecrease { at: at(8, 3, 0), from: 1200.0, to: 15.0 }]),
        cf("old", vec![Flag::ImplausibleJump { at: at(1, 0, 0), per_hour: 900.0 }]),
        cf("jump", vec![Flag::Rollover { at: at(9, 0, 0) }, Flag::ImplausibleJump { at: at(9, 12, 0), per_hour: 900.0 }]),
        cf("roll", vec![Flag::Rollover { at: at(9, 0, 0) }]),
    ];
    let f = rules::counter_anomaly(&meters, now, 7 * D, TZ);
    let keys: Vec<&str> = f.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, vec!["down", "jump"]);
    // (summary_en, summary_zh, value, unit): the drop 15 - 1200 = -1185 kWh; the jump's rate.
    let want: [(&str, &str, f64, &str); 2] = [
        ("meter down at 2026-03-10 03:00: counter went down from 1200 kWh to 15 kWh; check it or record a replacement", "表计 down 于 2026-03-10 03:00 计数器从 1200 kWh 倒退至 15 kWh；请核查或登记换表", -1185.0, "kWh"),
        ("meter jump at 2026-03-11 12:00: counter jumped 900.0 kWh/h, beyond the meter's maximum; check it or record a replacement", "表计 jump 于 2026-03-11 12:00 计数器跳变 900.0 kWh/小时，超过表计物理上限；请核查或登记换表", 900.0, "kWh/h"),
    ];
    for (f, (en, zh, v, u)) in f.iter().zip(want) {
        assert_eq!((f.summary_en.as_str(), f.summary_zh.as_str(), f.value, f.unit.as_deref()), (en, zh, Some(v), Some(u)));
    }
}

#[test]
fn heat_outside_the_heating_season() {
    let season = HeatingSeason::default(); // 11-01 to 03-31
    let none = BTreeMap::new();
    let heat = |t0: i64| -> BTreeMap<i64, f64> { (0..48).map(|i| (t0 - 48 * H + i * H, 0.01)).collect() };
    // 2026-04-02 12:00: 24 hours of 0.01 GJ = 0.24 GJ > 0.1.
    let apr = at(31, 12, 0);
    let f = rules::heating_off_season(&[mh("h1", "GJ", heat(apr))], &none, apr, TZ, &season, 0.1, None);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].summary_en, "meter h1: 0.24 GJ of heat in the last 24 h outside the heating season (11-01 to 03-31)");
    // 2026-03-31 is in the season.
    let mar = at(29, 12, 0);
    assert!(rules::heating_off_season(&[mh("h1", "GJ", heat(mar))], &none, mar, TZ, &season, 0.1, None).is_empty());
    // Below the threshold.
    assert!(rules::heating_off_season(&[mh("h1", "GJ", heat(apr))], &none, apr, TZ, &season, 0.5, None).is_empty());
    // No heat counted, but the supply is at 55 °C: on, when a maximum of 40 °C is set.
    let hot = BTreeMap::from([("h1".to_string(), 55.0)]);
    let cases: &[(Option<f64>, usize)] = &[(None, 0), (Some(40.0), 1), (Some(60.0), 0)];
    for &(max, n) in cases {
        let f = rules::heating_off_season(&[mh("h1", "GJ", BTreeMap::new())], &hot, apr, TZ, &season, 0.1, max);
        assert_eq!(f.len(), n, "{max:?}");
    }
    let f = rules::heating_off_season(&[mh("h1", "GJ", BTreeMap::new())], &hot, apr, TZ, &season, 0.1, Some(40.0));
    assert_eq!(f[0].summary_en, "meter h1: supply temperature 55.0 °C on average over the last 24 h outside the heating season (11-01 to 03-31)");
}

/// An agency with an energy budget of 1000 kgce (1150 projected), an electricity budget of
/// 100000 kWh (112000 projected), and 人均综合能耗 projected at 1300 kgce/(person·a) against
/// a binding value of 1197.8 and a benchmark of 781.
fn outlook(energy_crossed: Option<usize>, carrier_crossed: Option<usize>, days_elapsed: usize) -> Outlook {
    Outlook {
        agency: "ag1".into(),
        name: "测试局".into(),
        year: 2026,
        in_progress: true,
        days_elapsed,
        energy_budget: Some((1000.0, 1150.0, energy_crossed)),
        carrier_budgets: vec![rules::CarrierBudget { carrier: Carrier::Electricity, unit: "kWh".into(), budget: 100_000.0, projected: 112_000.0, crossed_day: carrier_crossed }],
        bands: vec![rules::BandOutlook { indicator: Indicator::EnergyPerPerson, unit: "kgce/(person·a)".into(), projected: 1300.0, binding: 1197.8, benchmark: 781.0, class: BandClass::AboveBinding }],
        coverage: 0.97,
    }
}

#[test]
fn a_projected_overrun_fires_and_resolves_when_the_projection_falls() {
    // Evaluated daily at noon from day 95 to day 110. From day 100 the projection crosses the
    // budget on day 300 (2026-10-28); from day 105 it no longer does. `for` = 1 day.
    let day = |t: i64| ((t - 1_767_196_800_000) / D) as usize; // days since 2026-01-01 00:00+08
    let times: Vec<i64> = (95..=110).map(|d| 1_767_196_800_000 + d * D + 12 * H).collect();
    let got = drive(&times, D, "ag1", |t| {
        let d = day(t);
        let crossed = (100..105).contains(&d).then_some(300);
        rules::budget_overrun(&[outlook(crossed, crossed, d)])
    });
    let t = |d: i64| 1_767_196_800_000 + d * D + 12 * H;
    assert_eq!(got, vec![(t(100), State::Pending), (t(101), State::Firing), (t(105), State::Resolved)]);
    // A closed year is not alerted on.
    assert!(rules::budget_overrun(&[Outlook { in_progress: false, ..outlook(Some(300), Some(300), 365) }]).is_empty());
}

#[test]
fn budget_messages_say_past_crossings_as_past_and_the_rest_as_projected() {
    // Days are 0-based in 2026 (not a leap year): day 30 = 01-31; day 100 = 04-11 (day 90 is
    // 04-01); day 119 = 04-30; day 120 = 05-01; day 130 = 05-11; day 280 = 10-08 (day 273 is
    // 10-01); day 300 = 10-28. The figures cover 120 days: days 0..=119 are past, day 120 on
    // is projected. The value is the projected year of the budget crossed first, in its unit.
    let (e, c) = ("（预计全年 1150 kgce，预算 1000 kgce）", "（预计全年 112000 kWh，预算 100000 kWh）");
    let (ee, ce) = ("(projected 1150 kgce for the year, budget 1000 kgce)", "(projected 112000 kWh for the year, budget 100000 kWh)");
    type Case = (Option<usize>, Option<usize>, String, String, f64, &'static str);
    let cases: Vec<Case> = vec![
        // Both ahead: projected; the electricity budget goes first (day 280).
        (
            Some(300),
            Some(280),
            format!("测试局（ag1）预计于 2026-10-28 超出年度能耗预算{e}；预计于 2026-10-08 超出电力预算{c}"),
            format!("测试局 (ag1): projected to cross its annual energy budget on 2026-10-28 {ee}; projected to cross its electricity budget on 2026-10-08 {ce}"),
            112_000.0,
            "kWh",
        ),
        // Both past (day 119 is the last day covered).
        (
            Some(30),
            Some(119),
            format!("测试局（ag1）已于 2026-01-31 超出年度能耗预算{e}；已于 2026-04-30 超出电力预算{c}"),
            format!("测试局 (ag1): crossed its annual energy budget on 2026-01-31 {ee}; crossed its electricity budget on 2026-04-30 {ce}"),
            1150.0,
            "kgce",
        ),
        // One of each; day 120 (the first day not covered) is projected.
        (
            Some(120),
            Some(100),
            format!("测试局（ag1）预计于 2026-05-01 超出年度能耗预算{e}；已于 2026-04-11 超出电力预算{c}"),
            format!("测试局 (ag1): projected to cross its annual energy budget on 2026-05-01 {ee}; crossed its electricity budget on 2026-04-11 {ce}"),
            112_000.0,
            "kWh",
        ),
        // Only the carrier.
        (None, Some(130), format!("测试局（ag1）预计于 2026-05-11 超出电力预算{c}"), format!("测试局 (ag1): projected to cross its electricity budget on 2026-05-11 {ce}"), 112_000.0, "kWh"),
    ];
    for (energy, carrier, zh, en, v, u) in cases {
        let f = rules::budget_overrun(&[outlook(energy, carrier, 120)]);
        assert_eq!(f.len(), 1, "{energy:?} {carrier:?}");
        assert_eq!((f[0].summary_zh.as_str(), f[0].summary_en.as_str()), (zh.as_str(), en.as_str()));
        assert_eq!((f[0].value, f[0].unit.as_deref()), (Some(v), Some(u)));
        assert_eq!(f[0].labels, BTreeMap::from([("agency".to_string(), "ag1".to_string())]));
    }
    assert!(rules::budget_overrun(&[outlook(None, None, 120)]).is_empty(), "no budget crossed");
}

#[test]
fn quota_band_findings_name_the_indicator_and_the_band_in_units() {
    let per_person = |projected: f64, class: BandClass| Outlook { bands: vec![rules::BandOutlook { projected, class, ..outlook(None, None, 120).bands[0].clone() }], ..outlook(None, None, 120) };
    // (projected, its class, band level, expected zh and en, or none)
    type Case = (f64, BandClass, BandLevel, Option<(&'static str, &'static str)>);
    let cases: [Case; 5] = [
        (
            1300.0,
            BandClass::AboveBinding,
            BandLevel::Binding,
            Some((
                "测试局（ag1）人均综合能耗 2026 年预计 1300 kgce/(人·a)，高于定额约束值 1197.8 kgce/(人·a)",
                "测试局 (ag1): energy per person projected at 1300 kgce/(person·a) for 2026, above the quota's binding value of 1197.8 kgce/(person·a)",
            )),
        ),
        // Between benchmark and binding: not above the binding value...
        (900.0, BandClass::AboveBenchmark, BandLevel::Binding, None),
        // ...but above the benchmark.
        (
            900.5,
            BandClass::AboveBenchmark,
            BandLevel::Benchmark,
            Some(("测试局（ag1）人均综合能耗 2026 年预计 900.5 kgce/(人·a)，高于定额基准值 781 kgce/(人·a)", "测试局 (ag1): energy per person projected at 900.5 kgce/(person·a) for 2026, above the quota's benchmark value of 781 kgce/(person·a)")),
        ),
        (700.0, BandClass::AboveGuide, BandLevel::Benchmark, None),
        (1300.0, BandClass::AboveBinding, BandLevel::None, None),
    ];
    for (projected, class, level, want) in cases {
        let f = rules::quota_band(&[per_person(projected, class)], level);
        match want {
            None => assert!(f.is_empty(), "{projected} {level:?}: {f:?}"),
            Some((zh, en)) => {
                assert_eq!(f.len(), 1);
                assert_eq!((f[0].summary_zh.as_str(), f[0].summary_en.as_str()), (zh, en));
                assert_eq!((f[0].key.as_str(), f[0].labels["indicator"].as_str()), ("ag1:energy_per_person", "energy_per_person"));
                assert_eq!((f[0].value, f[0].unit.as_deref()), (Some(projected), Some("kgce/(person·a)")));
            }
        }
    }
    // The budget rule says nothing of bands.
    assert!(rules::budget_overrun(&[per_person(1300.0, BandClass::AboveBinding)]).is_empty());
}

#[test]
fn data_completeness_below_the_threshold_once_the_grace_after_start_is_over() {
    let started = at(0, 8, 0);
    // (coverage, min, minutes since start, grace minutes, fires)
    let cases: &[(f64, f64, i64, i64, bool)] = &[
        (0.85, 0.9, 120, 60, true),
        (0.9, 0.9, 120, 60, false),
        (0.97, 0.9, 120, 60, false),
        (0.5, 0.4, 120, 60, false),
        // Within the grace: nothing, however low.
        (0.0, 0.9, 59, 60, false),
        // Exactly at its end: found.
        (0.0, 0.9, 60, 60, true),
        (0.1, 0.9, 0, 0, true),
    ];
    for &(coverage, min, since, grace, fires) in cases {
        let f = rules::data_completeness(&[Outlook { coverage, ..outlook(None, None, 60) }], min, started + since * M, started, grace * M);
        assert_eq!(f.len(), usize::from(fires), "{coverage} vs {min}, {since} min after start, grace {grace} min");
    }
    // 0.855 -> 85.5 %, in percent.
    let f = rules::data_completeness(&[Outlook { coverage: 0.855, ..outlook(None, None, 60) }], 0.9, started + 2 * H, started, H);
    assert_eq!(f[0].summary_en, "测试局 (ag1): data coverage of 2026 is 85.5%, below 90%");
    assert_eq!(f[0].summary_zh, "测试局（ag1）2026 年数据完整率 85.5%，低于 90%");
    assert_eq!((f[0].value, f[0].unit.as_deref()), (Some(85.5), Some("%")));
}

#[test]
fn resolved_alerts_are_forgotten_after_keep_resolved_and_come_back_as_new_alerts() {
    let extra = BTreeMap::from([("team".to_string(), "ops".to_string())]);
    let meta = RuleMeta { name: "R", severity: Severity::Critical, for_ms: 0, labels: &extra, banded: true };
    let f = Finding { key: "k".into(), labels: labels(), summary_zh: "中".into(), summary_en: "en".into(), value: Some(1.0), unit: None };
    let mut book = Book::default();
    book.apply(&meta, vec![f.clone()], 1000);
    let a = &book.alerts[&("R".to_string(), "k".to_string())];
    assert_eq!((a.state, a.starts_at), (State::Firing, Some(1000)));
    assert_eq!(a.labels["team"], "ops");
    assert_eq!(a.labels["severity"], "critical");
    assert_eq!(a.labels["alertname"], "R");
    book.apply(&meta, vec![], 2000);
    book.forget(2000 + 3_600_000, 3_600_000, &["R"]);
    assert_eq!(book.alerts.len(), 1, "kept exactly keep_resolved");
    book.apply(&meta, vec![f.clone()], 5000);
    let a = &book.alerts[&("R".to_string(), "k".to_string())];
    assert_eq!((a.state, a.starts_at, a.ends_at), (State::Firing, Some(5000), None), "a new alert");
    book.forget(6000, 1, &[]);
    assert!(book.alerts.is_empty(), "rules no longer configured are dropped");
}

#[test]
fn alertmanager_body_holds_firing_alerts_and_resolutions() {
    let extra = BTreeMap::new();
    let meta = RuleMeta { name: "R", severity: Severity::Warning, for_ms: 0, labels: &extra, banded: true };
    let mk = |k: &str| Finding { key: k.into(), labels: labels(), summary_zh: "中".into(), summary_en: "en".into(), value: None, unit: None };
    let mut book = Book::default();
    book.apply(&meta, vec![mk("a"), mk("b")], at(0, 0, 0));
    book.apply(&meta, vec![mk("a")], at(0, 0, 1));
    let alerts: Vec<_> = book.alerts.values().cloned().collect();
    let v = super::notify::alertmanager_body(&alerts, at(0, 0, 2), 60_000, "/api/v1/alerts");
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["startsAt"], "2026-03-01T16:00:00.000Z");
    assert_eq!(a[0]["endsAt"], "2026-03-01T16:06:00.000Z", "firing: now + 4 min");
    assert_eq!(a[1]["endsAt"], "2026-03-01T16:01:00.000Z", "resolved: its end");
    assert_eq!(a[0]["annotations"]["summary_zh"], "中");
}
