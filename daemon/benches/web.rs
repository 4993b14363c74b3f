//! Web page benchmark: the server time of the overview and of an agency's page with 500
//! agencies and 1000 meters (the accounting benchmark's registry and data: a year and this year
//! so far of hourly roll-ups), first (nothing cached) and warm, through the router as a browser
//! asks (no socket: the server's own time).
//!
//! ```sh
//! cargo bench -p energyd --bench web
//! ```

#[path = "fixture/mod.rs"]
mod fixture;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use chrono::{Datelike, TimeZone};
use energyd::api::AppState;
use energyd::metrics::Metrics;
use energyd::registry::Registry;
use fixture::{fill_rollups, registry, H};
use tower::ServiceExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let meters: usize = std::env::var("BENCH_METERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let tz = chrono_tz::Asia::Shanghai;
    let now = chrono::Utc::now().with_timezone(&tz);
    let start = tz.with_ymd_and_hms(now.year() - 1, 1, 1, 0, 0, 0).earliest().map(|t| t.timestamp_millis()).unwrap_or(0);
    let end = now.timestamp_millis() / H * H;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let t0 = Instant::now();
    // As the daemon keeps them: the days older than `seal_after` (2 hours) sealed.
    fill_rollups(dir.path(), meters, start, end, true, energy_wire::time::day_of(now.timestamp_millis() - 2 * H));
    println!("prepared {meters} meters in {:.1} s", t0.elapsed().as_secs_f64());
    let reg = Registry::parse(&registry(meters)).expect("the generated registry is valid");
    let agencies = reg.file.agencies.len();
    let metrics = Metrics::new();
    let store = energyd::store::open(dir.path(), metrics.clone()).expect("store");
    let engine = energyd::accounting::engine::Engine::open(dir.path(), &reg, tz).expect("engine");
    let registry = Arc::new(reg);
    let audit = Arc::new(energyd::audit::AuditLog::open(dir.path()).expect("audit"));
    let options = energyd::ingest::IngestOptions { config: Default::default(), raw_days: 3 * 365 + 1, max_body_bytes: 1 << 20 };
    let ingest = energyd::ingest::Ingest::new(store.clone(), registry.clone(), metrics.clone(), audit.clone(), options);
    let collectors = Arc::new(energyd::collector::Collectors::new(&metrics.registry));
    let state = Arc::new(AppState {
        collectors,
        store: store.clone(),
        engine: Arc::new(engine),
        registry,
        tz,
        metrics,
        ingest: Arc::new(ingest),
        max_body_bytes: 1 << 20,
        auth: None,
        audit,
        request_timeout: std::time::Duration::from_secs(600),
        alerts: Arc::new(energyd::alerts::Alerts::default()),
    });
    let setup = energyd::web::WebSetup { users_file: dir.path().join("users.toml"), session_idle_ms: 1_800_000, secure: false };
    let app = energyd::web::app(state, setup);
    let year = now.year();
    let pages = [
        ("overview, this year", format!("/?period=year&year={year}")),
        ("overview, last year", format!("/?period=year&year={}", year - 1)),
        ("agency page, this year", format!("/agencies/a7?period=year&year={year}")),
        ("agency page, a month", format!("/agencies/a7?period=month&year={year}&month=1")),
        ("building page, this year", format!("/buildings/b3?period=year&year={year}")),
        ("meter page, this year", format!("/meters/m12?period=year&year={year}")),
    ];
    println!(
        "\n{agencies} agencies, {meters} meters\n\n| page | first (nothing cached) | warm, data unchanged (median of 5) | after new data (median of 5, worst) | bytes |\n|---|---:|---:|---:|---:|"
    );
    let get = |path: String| {
        let app = app.clone();
        async move {
            let t = Instant::now();
            let resp = app.oneshot(Request::get(path.as_str()).header("accept", "text/html").body(Body::empty()).expect("request")).await.expect("answer");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").len();
            (t.elapsed().as_secs_f64() * 1e3, bytes)
        }
    };
    let mut next_ts = end;
    for (name, path) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..6 {
            let (ms, b) = get(path.clone()).await;
            times.push(ms);
            bytes = b;
        }
        let first = times.remove(0);
        times.sort_by(f64::total_cmp);
        // As while meters report: a reading of one meter arrives (acknowledged: durable and
        // visible) before each request.
        let mut after = Vec::new();
        for i in 0..5 {
            next_ts += 60_000;
            let m = (i * 37) % meters;
            let p = energyd::store::Point { meter: format!("m{m}").into(), quantity: fixture::counter_of(m), ts: next_ts, value: 1e6 + next_ts as f64 / 1e5 };
            store.write_points(vec![p]).await.expect("a reading");
            after.push(get(path.clone()).await.0);
        }
        after.sort_by(f64::total_cmp);
        println!("| {name} | {first:.0} ms | {:.1} ms | {:.0} ms, {:.0} ms | {bytes} |", times[times.len() / 2], after[after.len() / 2], after[after.len() - 1]);
    }
    store.close();
}
