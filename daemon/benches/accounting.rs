//! Accounting benchmark: every agency's indicators for a year, from the hourly roll-ups of
//! `BENCH_METERS` meters (default 1000) holding a year of one-minute data, and the work done
//! again after a meter event and after a live reading.
//!
//! ```sh
//! cargo bench -p energyd --bench accounting
//! ```
//!
//! * The store is filled directly with the hourly roll-ups that a year of one-minute readings
//!   produces (60 readings an hour with two decimals: first at :00, last at :59), for last year
//!   and this year so far: ingesting 525 million raw points would take hours and is not what is
//!   measured here (the accounting engine reads only roll-ups; the ingest benchmark measures
//!   ingest). As the daemon keeps them: the days older than `seal_after` (2 hours) sealed, one
//!   `rollup_day` blob per series and day, the rest `rollup_hour` rows; `BENCH_SEALED=0` writes
//!   every hour as a row (the store before sealing, or with sealing held back).
//! * Registry: buildings of four meters (electricity, water, district heat, natural gas), each
//!   shared by two agencies; one jurisdiction above them.
//! * Figures: all agencies' indicators for last year (a closed year) and for this year (in
//!   progress, projected): first ever (nothing cached: every meter's year computed from the
//!   roll-ups), warm (in memory), after a restart (from the disk cache); then after a replacement
//!   posted for one meter, and after a live reading of one meter: time, and meter-years
//!   recomputed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{Datelike, TimeZone};
use energyd::accounting::engine::Engine;
use energyd::metrics::Metrics;
use energyd::registry::{Agency, EventKind, EventRecord, Registry};
use energy_wire::time::day_of;
use energyd::store::rollup_codec::encode_rollups;
use energyd::store::{HourRollup, Point};
use energy_wire::Quantity;

const H: i64 = 3_600_000;

fn registry(meters: usize) -> String {
    let buildings = meters.div_ceil(4);
    let mut s = String::from("[[agency]]\nid = \"root\"\nname = \"机关事务管理局\"\nlevel = \"city\"\nheadcount = { 2020 = 50 }\n");
    for a in 0..buildings * 2 {
        let _ = write!(s, "[[agency]]\nid = \"a{a}\"\nname = \"单位{a}\"\nlevel = \"city\"\nparent = \"root\"\nheadcount = {{ 2020 = {} }}\n", 80 + a % 50);
    }
    for b in 0..buildings {
        let _ = write!(
            s,
            "[[building]]\nid = \"b{b}\"\nname = \"楼{b}\"\nfloor_area = {}\noccupants = [ {{ agency = \"a{}\", share = 0.6 }}, {{ agency = \"a{}\", share = 0.4 }} ]\n",
            5000 + b % 7 * 1000,
            2 * b,
            2 * b + 1
        );
    }
    let carriers = ["electricity", "water", "district_heat", "natural_gas"];
    for m in 0..meters {
        let _ = write!(s, "[[meter]]\nid = \"m{m}\"\nbuilding = \"b{}\"\ncarrier = \"{}\"\n", m / 4, carriers[m % 4]);
    }
    s
}

/// CPU seconds this process has used (all threads, user and system), from `/proc/self/stat`:
/// on a machine shared with other work, elapsed time says more about the others than about us.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn counter_of(m: usize) -> Quantity {
    [Quantity::ActiveEnergyImport, Quantity::WaterVolume, Quantity::HeatEnergy, Quantity::GasVolume][m % 4]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let meters: usize = std::env::var("BENCH_METERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let tz = chrono_tz::Asia::Shanghai;
    let now = chrono::Utc::now().with_timezone(&tz);
    let year = now.year();
    let start = tz.with_ymd_and_hms(year - 1, 1, 1, 0, 0, 0).earliest().map(|t| t.timestamp_millis()).unwrap_or(0);
    let end = now.timestamp_millis() / H * H;
    // As the daemon keeps them: the days older than `seal_after` (2 hours) sealed.
    let sealed = std::env::var("BENCH_SEALED").map_or(true, |v| v != "0");
    let cutoff = day_of(now.timestamp_millis() - 2 * H);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let reg = Registry::parse(&registry(meters)).expect("the generated registry is valid");

    // Roll-ups as a year of one-minute readings gives them, written straight into the store.
    let t0 = Instant::now();
    {
        let store = energyd::store::open(dir.path(), Metrics::new()).expect("store");
        store.close();
        let mut c = rusqlite::Connection::open(dir.path().join("energyd.sqlite")).expect("sqlite");
        c.pragma_update(None, "synchronous", "OFF").expect("pragma");
        let tx = c.transaction().expect("tx");
        {
            // The catalog as the store's writer fills it (store format 6): a code per quantity name,
            // a row per (meter, quantity code) with the series id.
            let mut quantity = tx.prepare("INSERT OR IGNORE INTO quantities(name, code) SELECT ?1, coalesce(max(code), 0) + 1 FROM quantities").expect("prepare");
            let mut series = tx.prepare("INSERT INTO series(id, meter, quantity) VALUES (?1, ?2, (SELECT code FROM quantities WHERE name = ?3))").expect("prepare");
            let mut roll = tx
                .prepare("INSERT INTO rollup_hour(series, hour, first_ts, first_v, last_ts, last_v, min, max, sum, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
                .expect("prepare");
            let mut blob = tx.prepare("INSERT INTO rollup_day(series, day, data) VALUES (?1, ?2, ?3)").expect("prepare");
            for m in 0..meters {
                let sid = m as i64 + 1;
                quantity.execute([counter_of(m).name()]).expect("quantity");
                series.execute(rusqlite::params![sid, format!("m{m}"), counter_of(m).name()]).expect("series");
                // A rate per minute that varies by hour of day and meter; readings with two
                // decimals, as meters give them.
                let mut v = 1000.0 * (m % 13 + 1) as f64;
                let mut h = start;
                let mut day: Vec<HourRollup> = Vec::with_capacity(24);
                while h < end {
                    let hod = (h / H + 8) % 24;
                    let per_min = (0.5 + (m % 5) as f64 * 0.1) * if (8..19).contains(&hod) { 3.0 } else { 1.0 };
                    let readings: Vec<(i64, f64)> = (0..60).map(|k| (h + k * 60_000, ((v + per_min * k as f64) * 100.0).round() / 100.0)).collect();
                    let r = HourRollup::of_points(&readings).expect("60 readings");
                    v += per_min * 60.0;
                    if sealed && day_of(h) < cutoff {
                        if day.last().is_some_and(|d| day_of(d.hour) != day_of(h)) {
                            let d = day_of(day[0].hour);
                            blob.execute(rusqlite::params![sid, d, encode_rollups(d, &day)]).expect("rollup_day");
                            day.clear();
                        }
                        day.push(r);
                    } else {
                        roll.execute(rusqlite::params![sid, r.hour, r.first_ts, r.first_v, r.last_ts, r.last_v, r.min, r.max, r.sum, r.count as i64]).expect("rollup");
                    }
                    h += H;
                }
                if let Some(first) = day.first() {
                    let d = day_of(first.hour);
                    blob.execute(rusqlite::params![sid, d, encode_rollups(d, &day)]).expect("rollup_day");
                }
            }
        }
        tx.commit().expect("commit");
    }
    let rows = meters as i64 * ((end - start) / H);
    let how = if sealed { "the days before the last two hours sealed (one blob per series and day), the rest as rows" } else { "all as rows (BENCH_SEALED=0)" };
    println!("prepared {meters} meters, {rows} hourly roll-ups ({} one-minute readings' worth), {how}, in {:.1} s", rows * 60, t0.elapsed().as_secs_f64());

    let store = energyd::store::open(dir.path(), Metrics::new()).expect("store");
    let mut engine = Engine::open(dir.path(), &reg, tz).expect("engine");
    let agencies: Vec<(&Agency, Vec<&str>)> = reg.file.agencies.iter().map(|a| (a, vec![a.id.as_str()])).collect();
    let now_ms = now.timestamp_millis();
    let mut table: BTreeMap<usize, (String, f64, u64)> = BTreeMap::new();
    let mut run = |n: usize, name: String, secs: f64, computed: u64| {
        table.insert(n, (name, secs, computed));
    };
    let computed = |e: &Engine| e.computed.load(Ordering::Relaxed);

    let mut first_cpu = 0.0;
    for (i, (label, y)) in [("last year (closed)", year - 1), ("this year (in progress, projected)", year)].into_iter().enumerate() {
        let c0 = computed(&engine);
        let t = Instant::now();
        let cpu = cpu_seconds();
        let out = engine.indicators(&store, &reg, y, now_ms, &agencies).await.expect("indicators");
        first_cpu += cpu_seconds() - cpu;
        run(i * 3, format!("{} agencies, {label}, first ever", out.len()), t.elapsed().as_secs_f64(), computed(&engine) - c0);
        let c0 = computed(&engine);
        let t = Instant::now();
        let out = engine.indicators(&store, &reg, y, now_ms, &agencies).await.expect("indicators");
        run(i * 3 + 1, format!("{} agencies, {label}, warm", out.len()), t.elapsed().as_secs_f64(), computed(&engine) - c0);
    }
    // A restarted daemon: a new engine over the same data directory.
    for (i, (label, y)) in [("last year (closed)", year - 1), ("this year (in progress, projected)", year)].into_iter().enumerate() {
        engine = Engine::open(dir.path(), &reg, tz).expect("engine");
        let t = Instant::now();
        let out = engine.indicators(&store, &reg, y, now_ms, &agencies).await.expect("indicators");
        run(i * 3 + 2, format!("{} agencies, {label}, after a restart", out.len()), t.elapsed().as_secs_f64(), computed(&engine));
    }
    // A replacement on one meter.
    let ev = EventRecord {
        meter: "m0".into(),
        kind: EventKind::Replacement { old_final: 1_000_000.0, new_initial: 0.0, multiplier: None },
        time: format!("{year}-03-01T10:00:00+08:00"),
        by: "bench".into(),
        reason: "benchmark".into(),
        recorded_at: None,
    };
    engine.record_event(&reg, ev).expect("event");
    let c0 = computed(&engine);
    let t = Instant::now();
    engine.indicators(&store, &reg, year, now_ms, &agencies).await.expect("indicators");
    run(6, "this year, after a replacement on one meter".into(), t.elapsed().as_secs_f64(), computed(&engine) - c0);
    // A live reading on one meter.
    store
        .write_points(vec![Point { meter: "m1".into(), quantity: counter_of(1), ts: end + 60_000, value: 1e9 }])
        .await
        .expect("write");
    let c0 = computed(&engine);
    let t = Instant::now();
    engine.indicators(&store, &reg, year, now_ms, &agencies).await.expect("indicators");
    run(7, "this year, after a live reading of one meter".into(), t.elapsed().as_secs_f64(), computed(&engine) - c0);

    // The first computations (rows 0 and 3: nothing cached), per meter-year, and what that
    // makes for a province: this year's indicators need this year and last year of every meter.
    // Of the meter-years computed, those of the year before last hold no data (last year's
    // indicators compare with it): counted are the two years holding roll-ups.
    let (first_s, all_n) = [0, 3].iter().filter_map(|i| table.get(i)).fold((0.0, 0u64), |(s, n), r| (s + r.1, n + r.2));
    let first_n = (2 * meters as u64).min(all_n);
    println!("\n| all agencies' indicators | time | meter-years computed |\n|---|---:|---:|");
    for (_, (name, secs, n)) in table {
        println!("| {name} | {:.3} s | {n} |", secs);
    }
    if first_n > 0 {
        let per = first_s / first_n as f64;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        println!(
            "\nfirst computation: {:.3} ms per meter-year ({first_n} meter-years holding data, {all_n} computed, in {first_s:.2} s, {cores} cores; CPU time {first_cpu:.2} s, {:.3} ms per meter-year); \
             projected for 100,000 meters on this machine: {:.0} s for this year's indicators (this year and last year: 200,000 meter-years)",
            per * 1e3,
            first_cpu / first_n as f64 * 1e3,
            per * 200_000.0
        );
    }
    store.close();
}
