//! Router tests without a socket: every endpoint of the contract, good and bad input.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use energy_wire::{encode_batch, Batch, Quantity, Sample};
use serde_json::Value;
use tower::ServiceExt;

use super::{app, AppState};
use crate::ingest::config::{IngestConfig, UnknownMeter};
use crate::ingest::rate::RateLimiter;
use crate::ingest::{Ingest, IngestOptions};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::RetentionConfig;

pub(super) const REGISTRY: &str = r#"
[[agency]]
id = "a"
name = "Agency A"
level = "province"
[[agency]]
id = "b"
name = "Agency B"
level = "city"
[[building]]
id = "b1"
name = "Building 1"
floor_area = 1000.0
occupants = [ { agency = "a", share = 0.25 }, { agency = "b", share = 0.75 } ]
[[meter]]
id = "m1"
building = "b1"
carrier = "electricity"
multiplier = 2.0
[[meter]]
id = "w1"
building = "b1"
carrier = "water"
agency = "b"
"#;

/// 2026-03-01T00:00:00+08:00
pub(super) const T0: i64 = 1_772_294_400_000;
const H: i64 = 3_600_000;

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) state: Arc<AppState>,
}

fn fixture(unknown: UnknownMeter) -> Fixture {
    fixture_with(REGISTRY, unknown, None, RateLimiter::unlimited())
}

/// A fixture with tokens (`None`: authentication off) and an ingest rate limiter.
pub(crate) fn fixture_with(registry: &str, unknown: UnknownMeter, auth: Option<crate::auth::Tokens>, ingest_limiter: RateLimiter) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let store = crate::store::open(dir.path(), metrics.clone()).unwrap();
    let registry = Registry::parse(registry).unwrap();
    let engine = crate::accounting::engine::Engine::open(dir.path(), &registry, chrono_tz::Asia::Shanghai).unwrap();
    let registry = Arc::new(registry);
    let audit = Arc::new(crate::audit::AuditLog::open(dir.path()).unwrap());
    // raw_days: the default retention.raw_days (three years and a day).
    let options = IngestOptions { config: IngestConfig { unknown_meter: unknown, ..Default::default() }, raw_days: 3 * 365 + 1, max_body_bytes: 64 * 1024 };
    let ingest = Ingest::with_limiter(store.clone(), registry.clone(), metrics.clone(), audit.clone(), options, ingest_limiter);
    let collectors = Arc::new(crate::collector::Collectors::new(&metrics.registry));
    let state = Arc::new(AppState {
        collectors,
        store,
        engine: Arc::new(engine),
        registry,
        tz: chrono_tz::Asia::Shanghai,
        metrics,
        ingest: Arc::new(ingest),
        max_body_bytes: 64 * 1024,
        auth,
        audit,
        request_timeout: std::time::Duration::from_secs(60),
        alerts: Arc::new(crate::alerts::Alerts::open(Default::default(), dir.path(), chrono_tz::Asia::Shanghai).unwrap()),
    });
    Fixture { _dir: dir, state }
}

async fn call(f: &Fixture, req: Request<Body>) -> (StatusCode, String) {
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(f: &Fixture, uri: &str) -> (StatusCode, Value) {
    let (s, body) = call(f, Request::get(uri).body(Body::empty()).unwrap()).await;
    (s, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

async fn post(f: &Fixture, uri: &str, ct: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut b = Request::post(uri);
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    let (s, body) = call(f, b.body(Body::from(body)).unwrap()).await;
    (s, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn counter_batch(seq: u64, meter: &str, q: Quantity, readings: &[(i64, f64)]) -> Vec<u8> {
    let samples = readings.iter().map(|&(t, v)| Sample { meter: meter.into(), t, v: [(q, v)].into_iter().collect() }).collect();
    encode_batch(&Batch::new("gw1", seq, samples))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_idempotent_and_consumption_follows_shares() {
    let f = fixture(UnknownMeter::Reject);
    // Electricity counter: 100 at 00:00, 110 at 01:00, 130 at 02:00 (kWh, before the x2 multiplier).
    let body = counter_batch(1, "m1", Quantity::ActiveEnergyImport, &[(T0, 100.0), (T0 + H, 110.0), (T0 + 2 * H, 130.0)]);
    let (s, v) = post(&f, "/api/v1/ingest", Some("application/json"), body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["samples_stored"], 3);
    assert_eq!(v["acked_through"], 3);
    let (s, v) = post(&f, "/api/v1/ingest", Some("application/json"), body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["samples_duplicate"], 3);
    assert_eq!(v["samples_stored"], 0);
    // Water on a sub-meter of agency b: 5 m³ -> 8 m³.
    let body = counter_batch(4, "w1", Quantity::WaterVolume, &[(T0, 5.0), (T0 + 2 * H, 8.0)]);
    assert_eq!(post(&f, "/api/v1/ingest", None, body).await.0, StatusCode::OK);

    // Agency a: 25 % of m1 x 2 = 0.25 * 2 * 30 = 15 kWh over two hours, 5 + 10 per hour.
    let (s, v) = get(&f, "/api/v1/consumption?agency=a&from=2026-03-01T00:00:00%2B08:00&to=2026-03-01T02:00:00%2B08:00&interval=hour").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c = &v["carriers"][0];
    assert_eq!(c["carrier"], "electricity");
    assert_eq!(c["unit"], "kWh");
    assert_eq!(c["total"], 15.0);
    assert_eq!(c["periods"][0]["value"], 5.0);
    assert_eq!(c["periods"][1]["value"], 10.0);
    assert_eq!(c["periods"][0]["start"], "2026-03-01T00:00:00+08:00");
    assert_eq!(v["carriers"].as_array().unwrap().len(), 1, "agency a has no water sub-meter");
    // Agency b: 75 % x 2 x 30 = 45 kWh and all of the water, 3 m³.
    let (_, v) = get(&f, "/api/v1/consumption?agency=b&from=2026-03-01&to=2026-03-02&interval=day").await;
    let by: std::collections::HashMap<String, f64> =
        v["carriers"].as_array().unwrap().iter().map(|c| (c["carrier"].as_str().unwrap().to_string(), c["total"].as_f64().unwrap())).collect();
    assert_eq!(by["electricity"], 45.0);
    assert_eq!(by["water"], 3.0);
    // The sum over agencies equals the building's meters net of allocation.
    let (_, v) = get(&f, "/api/v1/consumption?building=b1&from=2026-03-01&to=2026-03-02&interval=day&carrier=electricity").await;
    assert_eq!(v["carriers"][0]["total"], 60.0);
    // Meter scope and the month interval.
    let (_, v) = get(&f, "/api/v1/consumption?meter=m1&from=2026-01-01&to=2027-01-01&interval=month").await;
    assert_eq!(v["carriers"][0]["periods"].as_array().unwrap().len(), 12);
    assert_eq!(v["carriers"][0]["periods"][2]["value"], 60.0);

    // Registry endpoints carry ids, and meters their last reading time.
    let (_, v) = get(&f, "/api/v1/meters").await;
    assert_eq!(v["items"][0]["id"], "m1");
    assert_eq!(v["items"][0]["last_reading"], "2026-03-01T02:00:00+08:00");
    let (_, v) = get(&f, "/api/v1/agencies").await;
    assert_eq!(v["items"][1]["id"], "b");
    let (_, v) = get(&f, "/api/v1/buildings").await;
    assert_eq!(v["items"][0]["meters"], serde_json::json!(["m1", "w1"]));
    let (_, v) = get(&f, "/api/v1/gateways").await;
    assert_eq!(v["items"][0]["acked_through"], 5);

    // Series, raw and stepped.
    let (_, v) = get(&f, "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-03-01&to=2026-03-02").await;
    assert_eq!(v["points"].as_array().unwrap().len(), 3);
    assert_eq!(v["unit"], "kWh");
    let (_, v) = get(&f, "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-03-01&to=2026-03-02&step=2h&agg=max").await;
    assert_eq!(v["points"][0]["v"], 110.0);
    assert_eq!(v["points"][1]["v"], 130.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_named_counted_and_harmless() {
    let f = fixture(UnknownMeter::Reject);
    let cases: &[(&str, Option<&str>, &[u8], StatusCode, &str)] = &[
        ("not json", None, b"{", StatusCode::BAD_REQUEST, "malformed batch"),
        ("wrong type", Some("text/plain"), b"{}", StatusCode::UNSUPPORTED_MEDIA_TYPE, "not application/json"),
        (
            "non-numeric value",
            None,
            br#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"m1","t":1772294400000,"v":{"active_power":"x"}}]}"#,
            StatusCode::BAD_REQUEST,
            "samples[0].v.active_power",
        ),
        (
            "far future",
            None,
            br#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"m1","t":4000000000000,"v":{"active_power":1}}]}"#,
            StatusCode::BAD_REQUEST,
            "in the future",
        ),
    ];
    for (name, ct, body, status, needle) in cases {
        let (s, v) = post(&f, "/api/v1/ingest", *ct, body.to_vec()).await;
        assert_eq!(s, *status, "{name}: {v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(needle), "{name}: {v}");
    }
    // Too large: 413.
    let (s, _) = post(&f, "/api/v1/ingest", None, vec![b' '; 70 * 1024]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // An unknown meter in a batch is kept as unassigned, never dropped.
    let body = counter_batch(1, "ghost", Quantity::ActiveEnergyImport, &[(T0, 1.0)]);
    let (s, v) = post(&f, "/api/v1/ingest", None, body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["unassigned_meters"], serde_json::json!(["ghost"]));
    let (_, v) = get(&f, "/api/v1/meters").await;
    assert_eq!(v["unassigned"][0]["id"], "ghost");
    let metrics = f.state.metrics.render();
    assert!(metrics.contains("energyd_ingest_rejected_total{reason=\"invalid_batch\",source=\"batch\"} 2"), "{metrics}");
    assert!(metrics.contains("reason=\"unknown_meter\""));
    // And the daemon still serves.
    assert_eq!(get(&f, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_partial_writes_like_influxdb() {
    let f = fixture(UnknownMeter::Reject);
    let body = "energy,meter=m1 active_energy_import=100 1772294400\n\
                energy,meter=nope active_energy_import=1 1772294400\n\
                energy,meter=m1 active_energy_import=110,active_power=5i 1772298000\n\
                energy,meter=m1 bogus=1 1772298000\n";
    let (s, v) = post(&f, "/api/v2/write?bucket=x&precision=s", None, body.as_bytes().to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "invalid");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("3 points written, 2 lines rejected"), "{msg}");
    assert!(msg.contains("line 2: meter `nope` is not in the registry"), "{msg}");
    assert!(msg.contains("line 4: field `bogus`"), "{msg}");
    // v1 flavour, gzip body, ms precision; everything valid gives 204.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"e,meter=m1 active_energy_import=130 1772301600000\n").unwrap();
    let req = Request::post("/write?db=energy&precision=ms").header("content-encoding", "gzip").body(Body::from(gz.finish().unwrap())).unwrap();
    let (s, body) = call(&f, req).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (_, v) = get(&f, "/api/v1/consumption?meter=m1&from=2026-03-01&to=2026-03-02&interval=day").await;
    assert_eq!(v["carriers"][0]["total"], 60.0); // (130 - 100) x multiplier 2
    // v1 error shape, bad precision, invalid UTF-8, bad gzip.
    let (s, v) = post(&f, "/write?db=x", None, b"m f=".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("partial write"));
    let (s, v) = post(&f, "/write?precision=fortnight", None, b"m,meter=m1 active_power=1".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("precision"));
    // Invalid UTF-8 refuses its line only (a partial write), as InfluxDB's parser does.
    let (s, v) = post(&f, "/api/v2/write?precision=s", None, b"e,meter=m1 active_power=7 1772301600\ne,meter=m1,x=\xff\xfe active_power=8 1772301601\n".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("1 points written, 1 lines rejected: line 2: invalid UTF-8 in the tag value"), "{msg}");
    let (_, v) = get(&f, "/api/v1/series?meter=m1&quantity=active_power&from=2026-02-28T18:00:00Z&to=2026-02-28T18:00:02Z").await;
    assert_eq!(v["points"].as_array().map(|p| p.len()), Some(1), "{v}");
    let req = Request::post("/api/v2/write").header("content-encoding", "gzip").body(Body::from("nope")).unwrap();
    assert_eq!(call(&f, req).await.0, StatusCode::BAD_REQUEST);
}

/// Issue 24, finding 6: the store keeps milliseconds, so two values 1 µs apart fall into one
/// millisecond. The first is stored; the second, different, is a conflict (kept aside, flagged,
/// a partial-write error), never a silent replacement. The same value again is a duplicate.
/// Times: 1772294400000000000 ns = 2026-02-28T16:00:00Z; +1000 ns is the same millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_values_in_one_millisecond_are_a_conflict_not_a_replacement() {
    let f = fixture(UnknownMeter::Reject);
    let body = "e,meter=m1 active_power=5 1772294400000000000\ne,meter=m1 active_power=6 1772294400000001000\n";
    let (s, v) = post(&f, "/api/v2/write?precision=ns", None, body.as_bytes().to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("partial write") && msg.contains("conflict"), "{msg}");
    let (_, v) = get(&f, "/api/v1/series?meter=m1&quantity=active_power&from=2026-02-28T16:00:00Z&to=2026-02-28T16:00:01Z").await;
    let pts = v["points"].as_array().cloned().unwrap_or_default();
    assert_eq!(pts.len(), 1, "{v}");
    assert_eq!(pts[0]["v"], 5.0, "{v}");
    let (_, flags) = get(&f, "/api/v1/meters/m1/flags?year=2026").await;
    let c = &flags["conflicts"][0];
    assert_eq!((c["stored_value"].as_f64(), c["offered_value"].as_f64(), c["open"].as_bool()), (Some(5.0), Some(6.0), Some(true)), "{flags}");
    // The same first value again, at microsecond precision: an idempotent duplicate (204).
    let (s, _) = post(&f, "/api/v2/write?precision=us", None, b"e,meter=m1 active_power=5 1772294400000000\n".to_vec()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_influxdb_clients_call_first() {
    let f = fixture(UnknownMeter::Reject);
    let version = env!("CARGO_PKG_VERSION");
    for method in ["GET", "HEAD"] {
        let resp = app(f.state.clone()).oneshot(Request::builder().method(method).uri("/ping").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{method} /ping");
        assert_eq!(resp.headers()["x-influxdb-version"], version);
        assert_eq!(resp.headers()["x-influxdb-build"], "energyd");
    }
    let (s, v) = get(&f, "/ping?verbose=true").await;
    assert_eq!((s, v["version"].as_str()), (StatusCode::OK, Some(version)));
    let (s, v) = get(&f, "/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["name"].as_str(), v["status"].as_str(), v["version"].as_str()), (Some("energyd"), Some("pass"), Some(version)));
    assert!(v["checks"].is_array() && v["message"].is_string(), "{v}");
    // /query: the v1 client's statements in the URL, Telegraf's in a form body.
    let (s, v) = get(&f, "/query?q=SHOW+DATABASES").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, serde_json::json!({"results": [{"statement_id": 0, "series": [{"name": "databases", "columns": ["name"]}]}]}));
    let (s, v) = post(&f, "/query", Some("application/x-www-form-urlencoded"), b"q=CREATE+DATABASE+%22telegraf%22".to_vec()).await;
    assert_eq!((s, v), (StatusCode::OK, serde_json::json!({"results": [{"statement_id": 0}]})));
    let (s, v) = post(&f, "/query?q=CREATE%20DATABASE%20a%3B%20SHOW%20DATABASES", None, Vec::new()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["results"][1]["statement_id"], 1);
    // Anything else: 400 in InfluxDB's error shape, naming what energyd answers.
    let (s, v) = get(&f, "/query?q=SELECT+*+FROM+energy").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("answers only CREATE DATABASE and SHOW DATABASES"), "{v}");
    let (s, v) = get(&f, "/query").await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("missing required parameter \"q\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precisions_are_the_same_on_both_write_endpoints() {
    let f = fixture(UnknownMeter::Reject);
    // 2026-03-01T00:00:00Z = 1772323200 s = 29538720 min = 492312 h, each at its precision.
    for (p, ts) in [("h", 492_312i64), ("m", 29_538_720), ("s", 1_772_323_200), ("ms", 1_772_323_200_000), ("us", 1_772_323_200_000_000), ("u", 1_772_323_200_000_000), ("ns", 1_772_323_200_000_000_000), ("n", 1_772_323_200_000_000_000)] {
        for path in ["/write?db=x", "/api/v2/write?bucket=x"] {
            let (s, v) = post(&f, &format!("{path}&precision={p}"), None, format!("e,meter=m1 active_power=1 {ts}").into_bytes()).await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{path} precision={p}: {v}");
        }
    }
    let (_, v) = get(&f, "/api/v1/series?meter=m1&quantity=active_power&from=2026-03-01T00:00:00Z&to=2026-03-01T00:00:01Z").await;
    assert_eq!(v["points"].as_array().map(|p| p.len()), Some(1), "{v}");
    for path in ["/write?db=x", "/api/v2/write?bucket=x"] {
        let (s, v) = post(&f, &format!("{path}&precision=d"), None, b"e,meter=m1 active_power=1 1".to_vec()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("unknown precision `d`"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_meters_can_be_accepted_as_unassigned() {
    let f = fixture(UnknownMeter::Accept);
    let (s, _) = post(&f, "/write", None, b"e,meter=newone active_power=1".to_vec()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = get(&f, "/api/v1/meters").await;
    assert_eq!(v["unassigned"][0]["id"], "newone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_name_the_parameter() {
    let f = fixture(UnknownMeter::Reject);
    let cases: &[(&str, StatusCode, &str)] = &[
        ("/api/v1/consumption?from=2026-01-01&to=2026-02-01&interval=day", StatusCode::BAD_REQUEST, "give one of"),
        ("/api/v1/consumption?agency=a&meter=m1&from=2026-01-01&to=2026-02-01&interval=day", StatusCode::BAD_REQUEST, "only one"),
        ("/api/v1/consumption?agency=zz&from=2026-01-01&to=2026-02-01&interval=day", StatusCode::NOT_FOUND, "agency `zz`"),
        ("/api/v1/consumption?agency=a&from=yesterday&to=2026-02-01&interval=day", StatusCode::BAD_REQUEST, "from:"),
        ("/api/v1/consumption?agency=a&from=2026-01-01&to=2026-02-01&interval=week", StatusCode::BAD_REQUEST, "interval `week`"),
        ("/api/v1/consumption?agency=a&from=2026-02-01&to=2026-01-01&interval=day", StatusCode::BAD_REQUEST, "before"),
        ("/api/v1/consumption?agency=a&from=2026-01-01&to=2026-02-01&interval=day&carrier=hydrogen", StatusCode::BAD_REQUEST, "carrier `hydrogen`"),
        ("/api/v1/consumption?agency=a&from=2000-01-01&to=2026-02-01&interval=hour", StatusCode::BAD_REQUEST, "more than"),
        ("/api/v1/consumption?agency=a&from=2026-01-01&to=2026-02-01", StatusCode::BAD_REQUEST, "missing query parameter `interval`"),
        ("/api/v1/series?meter=m1&quantity=volts&from=2026-01-01&to=2026-02-01", StatusCode::BAD_REQUEST, "unknown quantity `volts`"),
        ("/api/v1/series?meter=zz&quantity=active_power&from=2026-01-01&to=2026-02-01", StatusCode::NOT_FOUND, "meter `zz`"),
        ("/api/v1/series?meter=m1&quantity=active_power&from=2026-01-01&to=2026-02-01&step=-3", StatusCode::BAD_REQUEST, "step"),
        ("/api/v1/series?meter=m1&quantity=active_power&from=2026-01-01&to=2026-02-01&step=1h&agg=median", StatusCode::BAD_REQUEST, "agg"),
        ("/api/v1/nothing", StatusCode::NOT_FOUND, "no such endpoint"),
    ];
    for (uri, status, needle) in cases {
        let (s, v) = get(&f, uri).await;
        assert_eq!(s, *status, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(needle), "{uri}: {v}");
    }
    let (s, text) = call(&f, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("energyd_http_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_older_than_the_retention_are_refused_by_name() {
    let f = fixture(UnknownMeter::Reject);
    let now = chrono::Utc::now().timestamp_millis();
    let old = now - (RetentionConfig::default().raw_days as i64 + 1) * 86_400_000;
    // Line protocol: the old line is refused, the recent one kept (partial write).
    let body = format!("e,meter=m1 active_power=1 {old}\ne,meter=m1 active_power=2 {now}\n");
    let (s, v) = post(&f, "/write?precision=ms", None, body.into_bytes()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("1 points written") && msg.contains("line 1: timestamp") && msg.contains("older than the retention"), "{msg}");
    // A batch: the old sample is acknowledged but not stored, and said so.
    let body = counter_batch(1, "m1", Quantity::ActiveEnergyImport, &[(old, 1.0), (now, 2.0)]);
    let (s, v) = post(&f, "/api/v1/ingest", None, body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["samples_too_old"].as_u64(), v["acked_through"].as_u64()), (Some(1), Some(2)));
    let metrics = f.state.metrics.render();
    assert!(metrics.contains("energyd_ingest_rejected_total{reason=\"too_old\",source=\"batch\"} 1"), "{metrics}");
    assert!(metrics.contains("energyd_ingest_rejected_total{reason=\"too_old\",source=\"line_protocol\"} 1"), "{metrics}");
    assert!(metrics.contains("energyd_store_points 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_is_the_same_from_rollups_and_from_raw_points() {
    let f = fixture(UnknownMeter::Reject);
    // Two meters with the same counter; m1's has a bad 0 as the last reading of an hour, which
    // the roll-ups cannot set aside: that query is answered from the raw points.
    let good: Vec<(i64, f64)> = (0..12).map(|i| (T0 + i * 20 * 60_000, 100.0 + i as f64)).collect();
    let mut bad = good.clone();
    bad.insert(3, (T0 + 50 * 60_000, 0.0));
    assert_eq!(post(&f, "/api/v1/ingest", None, counter_batch(1, "m1", Quantity::ActiveEnergyImport, &bad)).await.0, StatusCode::OK);
    let (_, v) = get(&f, "/api/v1/consumption?meter=m1&from=2026-03-01&to=2026-03-02&interval=hour").await;
    let c = &v["carriers"][0];
    // 100 .. 111 over 3h40m: 11 kWh x multiplier 2; the hour boundaries fall on readings.
    assert_eq!(c["total"], 22.0, "{v}");
    assert_eq!(c["periods"][0]["value"], 6.0, "{v}");
    assert_eq!(v["meters"][0]["rejected_readings"], 1, "{v}");
    // Whole-hour series come from the roll-ups; other steps from the points; they agree.
    let (_, a) = get(&f, "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-03-01&to=2026-03-02&step=1h&agg=count").await;
    let (_, b) = get(&f, "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-03-01&to=2026-03-01T05:30:00%2B08:00&step=1h&agg=count").await;
    assert_eq!(a["points"], b["points"]);
    assert_eq!(a["points"][0]["v"], 4.0);
}

/// `/flags` lists each gap (from, to, the estimated amount) and each rejected reading (time,
/// value, reason). Worked by hand: water meter w1 reads 10 at 00:00, 12 at 01:00, 18 at 04:00
/// (a 3-hour gap: 6 m³ spread, estimated), 0 at 05:00 (a bad reading: below 18) and 19 at 06:00
/// (with the bad reading set aside, 04:00-06:00 is a second gap: 1 m³).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_flags_list_gaps_and_rejected_readings() {
    let f = fixture(UnknownMeter::Reject);
    let r = [(T0, 10.0), (T0 + H, 12.0), (T0 + 4 * H, 18.0), (T0 + 5 * H, 0.0), (T0 + 6 * H, 19.0)];
    assert_eq!(post(&f, "/api/v1/ingest", None, counter_batch(1, "w1", Quantity::WaterVolume, &r)).await.0, StatusCode::OK);
    let (s, v) = get(&f, "/api/v1/meters/w1/flags?year=2026").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["gaps"].as_array().map(Vec::len), Some(2), "{v}");
    let g = &v["gaps"][0];
    assert_eq!((g["from"].as_str(), g["to"].as_str()), (Some("2026-03-01T01:00:00+08:00"), Some("2026-03-01T04:00:00+08:00")), "{v}");
    assert_eq!((g["estimated"].as_f64(), g["hours"].as_f64()), (Some(6.0), Some(3.0)), "{v}");
    let g = &v["gaps"][1];
    assert_eq!((g["from"].as_str(), g["to"].as_str(), g["estimated"].as_f64()), (Some("2026-03-01T04:00:00+08:00"), Some("2026-03-01T06:00:00+08:00"), Some(1.0)), "{v}");
    assert_eq!(v["rejected_readings"], 1, "{v}");
    let r = &v["rejected"][0];
    assert_eq!((r["time"].as_str(), r["value"].as_f64(), r["reason"].as_str()), (Some("2026-03-01T05:00:00+08:00"), Some(0.0), Some("decrease")), "{v}");
}

/// The bureau's page and the API agree on "as of" (the start of the day), and an agency
/// without data is shown as 无数据 and unscored, never as 0 (issue 16, findings 1 and 7).
/// m1 (x2, agency a 0.25, b 0.75) reads 100 at 2026-03-01 00:00 and 124 at 2026-03-02 00:00,
/// then 130 at 12:00: as of 2026-03-02, 24 kWh x 2 = 48 kWh in the building, a's 12 kWh; the
/// reading of the day itself does not count, whether `as_of` is the date or a time that day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_api_share_as_of_and_show_missing_data() {
    let f = fixture(UnknownMeter::Reject);
    let body = counter_batch(1, "m1", Quantity::ActiveEnergyImport, &[(T0, 100.0), (T0 + 24 * H, 124.0), (T0 + 36 * H, 130.0)]);
    assert_eq!(post(&f, "/api/v1/ingest", None, body).await.0, StatusCode::OK);
    let elec = |v: &Value| v["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "electricity").map(|c| c["value"].as_f64().unwrap());
    for q in ["as_of=2026-03-02", "as_of=2026-03-02T18:00:00%2B08:00"] {
        let (s, v) = get(&f, &format!("/api/v1/agencies/a/indicators?year=2026&{q}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!((elec(&v).unwrap() - 12.0).abs() < 1e-9, "{q}: {v}");
        assert_eq!(v["as_of"], "2026-03-02T00:00:00+08:00", "{v}");
        assert_eq!(v["days_elapsed"], 60, "31 + 28 + 1 days: {v}");
        // Water: no meter of a's: no data, no value, never 0; last year null.
        let w = v["indicators"].as_array().unwrap().iter().find(|i| i["indicator"] == "water_total").unwrap().clone();
        assert_eq!((w["data"].as_str(), w["value"].is_null(), w["last_year"].is_null()), (Some("no_data"), true, true), "{w}");
    }
    // The page at `/` is the web layer's now (web::tests, tests/tests/reports.rs: the same as_of).
}

/// Dated occupancy through the API (issue 16, finding 8): `b` moves into `b1` on 2026-03-02
/// (half each from then on). m1 counts 24 kWh a day from 2026-03-01: day 1 all a's, day 2 half
/// each: a 24 + 12 = 36, b 12, in /consumption (per day) and in the indicators alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_that_moves_in_gets_its_share_from_that_day() {
    let reg = REGISTRY.replace(
        "occupants = [ { agency = \"a\", share = 0.25 }, { agency = \"b\", share = 0.75 } ]",
        "occupants = [ { agency = \"a\", share = 1.0 } ]\noccupancy = [ { from = \"2026-03-02\", occupants = [ { agency = \"a\", share = 0.5 }, { agency = \"b\", share = 0.5 } ] } ]",
    ).replace("multiplier = 2.0", "multiplier = 1.0");
    let f = fixture_with(&reg, UnknownMeter::Reject, None, RateLimiter::unlimited());
    let body = counter_batch(1, "m1", Quantity::ActiveEnergyImport, &[(T0, 100.0), (T0 + 24 * H, 124.0), (T0 + 48 * H, 148.0)]);
    assert_eq!(post(&f, "/api/v1/ingest", None, body).await.0, StatusCode::OK);
    for (agency, days, total) in [("a", [24.0, 12.0], 36.0), ("b", [0.0, 12.0], 12.0)] {
        let (s, v) = get(&f, &format!("/api/v1/consumption?agency={agency}&carrier=electricity&from=2026-03-01&to=2026-03-03&interval=day")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let c = &v["carriers"][0];
        assert_eq!((c["periods"][0]["value"].as_f64(), c["periods"][1]["value"].as_f64(), c["total"].as_f64()), (Some(days[0]), Some(days[1]), Some(total)), "{agency}: {v}");
        let (_, v) = get(&f, &format!("/api/v1/agencies/{agency}/indicators?year=2026&as_of=2026-03-03")).await;
        let e = v["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "electricity").map(|c| c["value"].as_f64().unwrap());
        assert!((e.unwrap_or(-1.0) - total).abs() < 1e-9, "{agency}: {v}");
    }
}

/// Indicators through the API, and a meter event that changes them: the replacement is stored,
/// listed, and the figures are recomputed for that meter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_follow_meter_events() {
    let f = fixture(UnknownMeter::Reject);
    // m1 (x2 multiplier): 100 at 00:00, 110 at 01:00; replaced at 01:30 (old meter read 115,
    // the new one starts at 0); the new one reads 5 at 02:00 and 9 at 03:00.
    let body = counter_batch(1, "m1", Quantity::ActiveEnergyImport, &[(T0, 100.0), (T0 + H, 110.0), (T0 + 2 * H, 5.0), (T0 + 3 * H, 9.0)]);
    assert_eq!(post(&f, "/api/v1/ingest", None, body).await.0, StatusCode::OK);
    let url = "/api/v1/agencies/b/indicators?year=2026&as_of=2026-03-02";
    let (s, v) = get(&f, url).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Before the event the drop to 5 is set aside: 10 kWh x 2 x 0.75 = 15 kWh.
    let elec = |v: &Value| v["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "electricity").map(|c| c["value"].as_f64().unwrap());
    assert!((elec(&v).unwrap() - 15.0).abs() < 1e-9, "{v}");
    let (s, e) = get(&f, "/api/v1/meters/m1/flags?year=2026").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["rejected_readings"], 2, "{e}");

    let event = serde_json::json!({
        "kind": "replacement", "time": "2026-03-01T01:30:00+08:00", "old_final": 115.0, "new_initial": 0.0,
        "by": "王工", "reason": "电表故障更换",
    });
    let (s, r) = post(&f, "/api/v1/meters/m1/events", Some("application/json"), event.to_string().into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert!(r["stored"]["recorded_at"].is_string());
    assert_eq!(r["warnings"], serde_json::json!([]), "115 is above the last reading 110: {r}");
    let (_, list) = get(&f, "/api/v1/meters/m1/events").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Audited: who, what, which meter.
    let (audit, _) = f.state.audit.read_page(0, 100).unwrap();
    assert!(audit.iter().any(|r| r["action"] == "meter.event" && r["target"] == "m1"), "{audit:?}");
    // After: (115 - 100) + (9 - 0) = 24 kWh, x2 x 0.75 = 36 kWh.
    let (_, v) = get(&f, url).await;
    assert!((elec(&v).unwrap() - 36.0).abs() < 1e-9, "{v}");
    let (_, c) = get(&f, "/api/v1/consumption?meter=m1&from=2026-03-01&to=2026-03-02&interval=day").await;
    assert!((c["carriers"][0]["total"].as_f64().unwrap() - 48.0).abs() < 1e-9, "{c}");
    // The event survives a restart of the engine (its log is fsynced).
    let again = crate::accounting::engine::Engine::open(f._dir.path(), &f.state.registry, chrono_tz::Asia::Shanghai).unwrap();
    assert_eq!(again.event_records(Some("m1")).len(), 1);

    // Bad events are named.
    for (body, want) in [
        (r#"{"kind":"replacement","time":"2026-03-01","old_final":1,"by":"x","reason":"y"}"#, "new_initial"),
        (r#"{"kind":"reset","time":"2026-03-01","by":"x","reason":"y"}"#, "not one of"),
        (r#"{"kind":"reading","time":"yesterday","value":1,"by":"x","reason":"y"}"#, "time"),
        (r#"{"kind":"reading","time":"2026-03-01","value":1}"#, "by"),
        (r#"[1,2]"#, "JSON object"),
        (r#"{"meter":"w1","kind":"reading","time":"2026-03-01","value":1,"by":"x","reason":"y"}"#, "names meter"),
    ] {
        let (s, v) = post(&f, "/api/v1/meters/m1/events", None, body.as_bytes().to_vec()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    assert_eq!(post(&f, "/api/v1/meters/nope/events", None, event.to_string().into_bytes()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&f, "/api/v1/agencies/nope/indicators?year=2026").await.0, StatusCode::NOT_FOUND);
    // An old_final below the last reading before the replacement (100 at 00:00, 50 entered for
    // 00:30) is stored with a warning, not refused.
    let low = serde_json::json!({ "kind": "replacement", "time": "2026-03-01T00:30:00+08:00", "old_final": 50.0, "new_initial": 0.0, "by": "王工", "reason": "换表" });
    let (s, r) = post(&f, "/api/v1/meters/m1/events", Some("application/json"), low.to_string().into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert!(r["warnings"][0].as_str().unwrap_or_default().contains("old_final 50 is below the old meter's last reading 100"), "{r}");
    assert_eq!(get(&f, "/api/v1/agencies/a/indicators?year=20x6").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&f, "/api/v1/agencies/a/indicators?year=2026&scope=world").await.0, StatusCode::BAD_REQUEST);
    // Jurisdiction: b is not below a in this registry, so a's tree is a alone.
    let (s, v) = get(&f, "/api/v1/agencies/a/indicators?year=2026&scope=tree&as_of=2026-03-02").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["members"], serde_json::json!(["a"]));
    let (s, v) = get(&f, "/api/v1/indicators?year=2026&as_of=2026-03-02").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

/// Local midnight (Asia/Shanghai) of today, in ms.
fn today_midnight() -> (i64, i64) {
    use chrono::TimeZone;
    let now = chrono::Utc::now();
    let d = now.with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
    let m = chrono_tz::Asia::Shanghai.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().timestamp_millis();
    (m, now.timestamp_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_profile_summary_ranking_and_alerts_for_dashboards() {
    let f = fixture(UnknownMeter::Reject);
    let (midnight, now) = today_midnight();
    let hour_now = (now - midnight) / H;
    // Electricity (x2 multiplier): hourly readings from 7 days before today's midnight to the
    // start of the current hour; in local hour h the meter counts h + 1 kWh.
    let mut readings = Vec::new();
    let mut v = 1000.0;
    let mut t = midnight - 7 * 24 * H;
    while t <= midnight + hour_now * H {
        readings.push((t, v));
        v += (((t - midnight).rem_euclid(24 * H)) / H + 1) as f64;
        t += H;
    }
    let (s, r) = post(&f, "/api/v1/ingest", Some("application/json"), counter_batch(1, "m1", Quantity::ActiveEnergyImport, &readings)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let power = counter_batch(10_000, "m1", Quantity::ActivePower, &[(now - 60_000, 12.5)]);
    assert_eq!(post(&f, "/api/v1/ingest", Some("application/json"), power).await.0, StatusCode::OK);
    // Water: hourly until 5 hours ago, then silent.
    let water: Vec<(i64, f64)> = (0..24).map(|i| (now - 5 * H - i * H, 100.0 - i as f64)).rev().collect();
    assert_eq!(post(&f, "/api/v1/ingest", Some("application/json"), counter_batch(20_000, "w1", Quantity::WaterVolume, &water)).await.0, StatusCode::OK);

    let (s, v) = get(&f, "/api/v1/buildings/b1/profile?weeks=4").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let how = v["hour_of_week"].as_array().unwrap();
    assert_eq!(how.len(), 168, "one week of every hour");
    for x in how {
        let h = x["hour"].as_f64().unwrap();
        assert_eq!(x["mean"].as_f64().unwrap(), 2.0 * (h + 1.0), "{x}");
    }
    assert_eq!(how[0]["label"], "Mon 00h");
    // Nights 0-5 h: (1 + 2 + 3 + 4 + 5) / 5 x 2 = 6 kWh per hour, each of the 7 days.
    let nights = v["night_base"].as_array().unwrap();
    assert_eq!(nights.len(), 7);
    assert!(nights.iter().all(|n| n["base"] == 6.0), "{v}");
    assert_eq!(get(&f, "/api/v1/buildings/b1/profile?night=5-1").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&f, "/api/v1/buildings/nope/profile").await.0, StatusCode::NOT_FOUND);

    // Today so far: the hours before the current one, 2 x (1 + ... + hour_now).
    let (s, v) = get(&f, "/api/v1/buildings/b1/summary").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let e = v["items"].as_array().unwrap().iter().find(|x| x["carrier"] == "electricity").unwrap().clone();
    assert_eq!(e["today"].as_f64().unwrap(), (hour_now * (hour_now + 1)) as f64, "{v}");
    assert_eq!(e["today_last_year"], 0.0);
    assert_eq!(v["live_power_kw"], 25.0);

    // Per-meter gauges.
    let (_, m) = get(&f, "/metrics").await;
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("energyd_meter_active_power_watts{building=\"b1\",meter=\"m1\"} 25000"), "{m}");
    assert!(m.contains("energyd_meter_last_reading_age_seconds{building=\"b1\",meter=\"w1\"}"), "{m}");

    let (s, v) = get(&f, "/api/v1/indicators/ranking?indicator=energy_per_area").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Seven days of readings leave this year's data incomplete (unless the year is a week
    // old): incomplete figures are listed apart, never ranked.
    let items = v["items"].as_array().unwrap();
    let apart = v["not_ranked"].as_array().unwrap();
    assert_eq!(items.len() + apart.len(), 2, "{v}");
    assert!(apart.iter().all(|x| x["data"] == "incomplete"), "{v}");
    if items.len() == 2 {
        assert_eq!((items[0]["rank"].as_i64(), items[1]["rank"].as_i64()), (Some(1), Some(2)));
        assert!(items[0]["projected"].as_f64().unwrap() <= items[1]["projected"].as_f64().unwrap());
    }
    let (s, v) = get(&f, "/api/v1/indicators/ranking?indicator=happiness").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("indicator `happiness`"), "{v}");

    // The alert engine, evaluated once: the water meter is silent (5 h > 3 x 1 h), pending for
    // the default 15 min; it serves agency b. (Agency b's data coverage is low too, but the
    // engine started less than the completeness rule's grace (1 h) ago: not yet an alert.)
    crate::alerts::evaluate(&f.state.alerts, &f.state.alert_sources(), now).await;
    let (_, v) = get(&f, "/api/v1/alerts?state=pending&agency=b").await;
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["rule_errors"], serde_json::json!({}), "every default rule evaluated: {v}");
    assert_eq!(v["rules"].as_array().unwrap().len(), 11);
    let (s, v) = get(&f, "/api/v1/alerts?state=pending&agency=b&building=b1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let a = v["alerts"].as_array().unwrap();
    assert_eq!(a.len(), 1, "{v}");
    assert_eq!((a[0]["alertname"].as_str(), a[0]["meter"].as_str(), a[0]["agency"].as_str()), (Some("MeterSilent"), Some("w1"), Some("b")));
    assert!(a[0]["summary"].as_str().unwrap().starts_with("meter w1 silent for 5 hours"), "{v}");
    assert_eq!(get(&f, "/api/v1/alerts?agency=zz").await.1["alerts"], serde_json::json!([]));
    // (The water meter's steady flow can be a night leak too, depending on the hour the test runs.)
    let firing = |v: &Value| -> Vec<String> { v["alerts"].as_array().unwrap().iter().map(|a| a["alertname"].as_str().unwrap().to_string()).collect() };
    assert!(!firing(&get(&f, "/api/v1/alerts?state=firing").await.1).contains(&"MeterSilent".to_string()));
    assert_eq!(get(&f, "/api/v1/alerts?state=loud").await.0, StatusCode::BAD_REQUEST);
    crate::alerts::evaluate(&f.state.alerts, &f.state.alert_sources(), now + 15 * 60_000).await;
    let (_, v) = get(&f, "/api/v1/alerts?state=firing&building=b1").await;
    let a = v["alerts"].as_array().unwrap().iter().find(|a| a["alertname"] == "MeterSilent").cloned().unwrap_or_default();
    assert_eq!(a["meter"], "w1", "firing after `for`: {v}");
    assert_eq!(a["startsAt"], v["evaluated_at"], "{v}");
    // An hour after the start the grace is over: agency b's low coverage is pending.
    crate::alerts::evaluate(&f.state.alerts, &f.state.alert_sources(), f.state.alerts.started + 60 * 60_000).await;
    let (_, v) = get(&f, "/api/v1/alerts?kind=DataIncomplete&agency=b").await;
    let a = v["alerts"].as_array().unwrap();
    assert_eq!((a.len(), a[0]["state"].as_str(), a[0]["unit"].as_str()), (1, Some("pending"), Some("%")), "{v}");
    // `kind` takes the rule's kind too.
    assert_eq!(get(&f, "/api/v1/alerts?kind=data_completeness&agency=b").await.1["alerts"], v["alerts"]);
}
