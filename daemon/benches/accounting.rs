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
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{Datelike, TimeZone};
use energyd::accounting::engine::Engine;
use energyd::metrics::Metrics;
use energyd::registry::{Agency, EventKind, EventRecord, Registry};
use energy_wire::time::day_of;
use energyd::store::Point;

#[path = "fixture/mod.rs"]
mod fixture;
use fixture::{counter_of, cpu_seconds, fill_rollups, registry, H};

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
    fill_rollups(dir.path(), meters, start, end, sealed, cutoff);
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
