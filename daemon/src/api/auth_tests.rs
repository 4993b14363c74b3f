//! Every role against every endpoint class, through the router without a socket: 401 without
//! or with a wrong token, 403 outside the role or scope, lists filtered for agency tokens,
//! gateway tokens only for their own batches, 429 over the ingest rate.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use energy_wire::{encode_batch, Batch, Quantity, Sample};
use serde_json::Value;
use tower::ServiceExt;

use super::app;
use crate::ingest::rate::RateLimiter;
use super::tests::{fixture_with, Fixture, T0};
use crate::auth::{hash_token, Role, TokenEntry, Tokens};
use crate::ingest::config::UnknownMeter;

/// Agencies a and b share building b1 (meter m1 of gateway gw1, and w1 a sub-meter of b); b2 is
/// b's alone.
const REGISTRY: &str = r#"
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
[[building]]
id = "b2"
name = "Building 2"
floor_area = 500.0
occupants = [ { agency = "b", share = 1.0 } ]
[[meter]]
id = "m1"
building = "b1"
carrier = "electricity"
gateway = "gw1"
[[meter]]
id = "w1"
building = "b1"
carrier = "water"
agency = "b"
[[meter]]
id = "e2"
building = "b2"
carrier = "electricity"
"#;

const ROLES: [&str; 7] = ["none", "wrong", "admin", "bureau", "agency", "engineer", "gateway"];

fn entry(name: &str, role: Role, agency: Option<&str>, gateway: Option<&str>) -> TokenEntry {
    TokenEntry { name: name.into(), role, agency: agency.map(Into::into), gateway: gateway.map(Into::into), meters: Vec::new(), sha256: String::new() }
}

fn tokens() -> Tokens {
    Tokens::from_plain(&[
        ("tok-admin", entry("ops", Role::Admin, None, None)),
        ("tok-bureau", entry("bureau", Role::Bureau, None, None)),
        ("tok-agency", entry("agency-a", Role::Agency, Some("a"), None)),
        ("tok-engineer", entry("eng", Role::Engineer, None, None)),
        ("tok-gateway", entry("gw1", Role::Gateway, None, Some("gw1"))),
    ])
}

fn fx() -> Fixture {
    fixture_with(REGISTRY, UnknownMeter::Reject, Some(tokens()), RateLimiter::unlimited())
}

fn token_of(role: &str) -> Option<String> {
    match role {
        "none" => None,
        "wrong" => Some("tok-nobody".into()),
        r => Some(format!("tok-{r}")),
    }
}

async fn send(f: &Fixture, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

async fn as_role(f: &Fixture, role: &str, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token_of(role) {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if method == "POST" && uri.starts_with("/api/v1/ingest") {
        b = b.header("content-type", "application/json");
    }
    let (s, h, v) = send(f, b.body(Body::from(body)).unwrap()).await;
    if s == StatusCode::UNAUTHORIZED {
        assert_eq!(h.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer realm=\"energyd\""), "{uri}");
    }
    if s.is_client_error() {
        assert!(v["error"].is_string(), "{method} {uri} as {role}: {s} without a JSON error: {v}");
        for t in ["tok-admin", "tok-bureau", "tok-agency", "tok-engineer", "tok-gateway", "tok-nobody"] {
            assert!(!v.to_string().contains(t), "a token is echoed: {v}");
        }
    }
    (s, v)
}

fn batch(gateway: &str, seq: u64, meter: &str) -> Vec<u8> {
    let s = Sample { meter: meter.into(), t: T0 + seq as i64 * 60_000, v: [(Quantity::ActiveEnergyImport, seq as f64)].into_iter().collect() };
    encode_batch(&Batch::new(gateway, seq, vec![s]))
}

const W: &str = "from=2026-03-01&to=2026-03-02&interval=day";

/// (method, uri, expected status per role in ROLES order). 401 for none/wrong everywhere but the
/// open endpoints.
fn matrix() -> Vec<(&'static str, String, [u16; 7])> {
    vec![
        ("GET", "/healthz".into(), [200, 200, 200, 200, 200, 200, 200]),
        ("GET", "/metrics".into(), [200, 200, 200, 200, 200, 200, 200]),
        // InfluxDB's /ping and /health are open; /query takes the roles of /write.
        ("GET", "/ping".into(), [204, 204, 204, 204, 204, 204, 204]),
        ("HEAD", "/ping".into(), [204, 204, 204, 204, 204, 204, 204]),
        ("GET", "/health".into(), [200, 200, 200, 200, 200, 200, 200]),
        ("GET", "/query?q=SHOW%20DATABASES".into(), [401, 401, 200, 403, 403, 403, 200]),
        ("POST", "/query?q=CREATE%20DATABASE%20telegraf".into(), [401, 401, 200, 403, 403, 403, 200]),
        ("GET", "/api/v1/quantities".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/agencies".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/buildings".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/meters".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/gateways".into(), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", format!("/api/v1/consumption?agency=a&{W}"), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", format!("/api/v1/consumption?agency=b&{W}"), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", format!("/api/v1/consumption?building=b1&{W}"), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", format!("/api/v1/consumption?building=b2&{W}"), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", format!("/api/v1/consumption?meter=m1&{W}"), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", format!("/api/v1/consumption?meter=w1&{W}"), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", format!("/api/v1/consumption?meter=e2&{W}"), [401, 401, 200, 200, 403, 200, 403]),
        // An id that does not exist: 404 for who reads everything, 403 (no probing) for an agency.
        ("GET", format!("/api/v1/consumption?agency=zz&{W}"), [401, 401, 404, 404, 403, 404, 403]),
        ("GET", "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-03-01&to=2026-03-02".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/series?meter=w1&quantity=water_volume&from=2026-03-01&to=2026-03-02".into(), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", "/api/v1/audit".into(), [401, 401, 200, 200, 403, 403, 403]),
        ("POST", "/api/v1/store/compact".into(), [401, 401, 200, 403, 403, 403, 403]),
        ("GET", "/api/v1/indicators?year=2026".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/registry/accounting".into(), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", "/api/v1/agencies/a/indicators?year=2026".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/agencies/b/indicators?year=2026".into(), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", "/api/v1/agencies/a/indicators?year=2026&scope=tree".into(), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", "/api/v1/meters/m1/events".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/meters/w1/events".into(), [401, 401, 200, 200, 403, 200, 403]),
        ("GET", "/api/v1/meters/m1/flags?year=2026".into(), [401, 401, 200, 200, 200, 200, 403]),
        // An empty body: 400 once past the role check.
        ("POST", "/api/v1/meters/m1/events".into(), [401, 401, 400, 403, 403, 400, 403]),
        // Reports: an agency token gets its own rows only; another agency asked by name is 404.
        ("GET", "/api/v1/reports/annual?year=2026&format=json".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/reports/annual?year=2026&format=json&agency=b".into(), [401, 401, 200, 200, 404, 200, 403]),
        ("GET", "/api/v1/reports/assessment?year=2026&format=csv".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/plans/energy?year=2027&format=json".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("GET", "/api/v1/deadlines?year=2026".into(), [401, 401, 200, 200, 200, 200, 403]),
        ("POST", "/api/v1/plans/energy".into(), [401, 401, 405, 403, 403, 403, 403]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_endpoint_class() {
    let f = fx();
    let mut checked = 0;
    for (method, uri, want) in matrix() {
        for (role, want) in ROLES.iter().zip(want) {
            let (s, v) = as_role(&f, role, method, &uri, Vec::new()).await;
            assert_eq!(s.as_u16(), want, "{method} {uri} as {role}: {v}");
            checked += 1;
        }
    }
    // Ingest: admin and the gateway's own token; others refused; nothing stored from refusals.
    let want = [401, 401, 200, 403, 403, 403, 200];
    for (i, (role, want)) in ROLES.iter().zip(want).enumerate() {
        let (s, v) = as_role(&f, role, "POST", "/api/v1/ingest", batch("gw1", 1 + i as u64, "m1")).await;
        assert_eq!(s.as_u16(), want, "ingest as {role}: {v}");
        checked += 1;
    }
    let (s, v) = as_role(&f, "gateway", "POST", "/api/v1/ingest", batch("gw2", 1, "m1")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("gw2"), "{v}");
    let (_, v) = as_role(&f, "admin", "GET", "/api/v1/gateways", Vec::new()).await;
    let ids: Vec<&str> = v["items"].as_array().unwrap().iter().filter_map(|g| g["id"].as_str()).collect();
    assert_eq!(ids, ["gw1"], "a refused batch left a trace: {v}");
    println!("auth matrix: {checked} requests checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_lists_are_filtered_to_its_own() {
    let f = fx();
    let ids = |v: &Value, k: &str| -> Vec<String> { v[k].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_string()).collect() };
    let (_, v) = as_role(&f, "agency", "GET", "/api/v1/agencies", Vec::new()).await;
    assert_eq!(ids(&v, "items"), ["a"]);
    let (_, v) = as_role(&f, "agency", "GET", "/api/v1/buildings", Vec::new()).await;
    assert_eq!(ids(&v, "items"), ["b1"]);
    assert_eq!(v["items"][0]["meters"], serde_json::json!(["m1"]), "b's sub-meter is hidden");
    let (_, v) = as_role(&f, "agency", "GET", "/api/v1/meters", Vec::new()).await;
    assert_eq!(ids(&v, "items"), ["m1"]);
    let (_, v) = as_role(&f, "bureau", "GET", "/api/v1/meters", Vec::new()).await;
    assert_eq!(ids(&v, "items"), ["m1", "w1", "e2"]);
    // The page at `/` is the web layer's (web/tests.rs checks its scoping).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_takes_influx_style_credentials() {
    let f = fx();
    let line = format!("energy,meter=m1 active_energy_import=5 {}\n", T0 * 1_000_000);
    let post = |auth: Option<&str>, uri: &str| {
        let mut b = Request::post(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(line.clone())).unwrap()
    };
    // "telegraf:tok-gateway"
    let basic = "Basic dGVsZWdyYWY6dG9rLWdhdGV3YXk=";
    for (auth, uri, want) in [
        (Some("Token tok-gateway"), "/api/v2/write?bucket=x", 204),
        (Some("Bearer tok-gateway"), "/write?db=x", 204),
        (Some(basic), "/write?db=x", 204),
        (None, "/write?db=x&u=telegraf&p=tok-gateway", 204),
        (None, "/write?db=x&u=telegraf&p=wrong", 401),
        (Some("Token tok-agency"), "/api/v2/write?bucket=x", 403),
        (Some("Token tok-admin"), "/api/v1/meters", 401),
        (None, "/api/v2/write?bucket=x", 401),
        // The start-up statements, with the credentials the same clients send.
        (Some(basic), "/query?q=CREATE%20DATABASE%20%22telegraf%22", 200),
        (None, "/query?u=telegraf&p=tok-gateway&q=SHOW%20DATABASES", 200),
        (Some("Token tok-gateway"), "/query?q=SHOW%20DATABASES", 200),
        (None, "/query?q=SHOW%20DATABASES", 401),
        (Some("Token tok-agency"), "/query?q=SHOW%20DATABASES", 403),
    ] {
        let (s, _, v) = send(&f, post(auth, uri)).await;
        assert_eq!(s.as_u16(), want, "{auth:?} {uri}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_the_rate_gets_429_with_retry_after() {
    let f = fixture_with(REGISTRY, UnknownMeter::Reject, Some(tokens()), RateLimiter::new(0.5, 2));
    for seq in 1..=2 {
        assert_eq!(as_role(&f, "gateway", "POST", "/api/v1/ingest", batch("gw1", seq, "m1")).await.0, StatusCode::OK);
    }
    let req = Request::post("/api/v1/ingest").header("authorization", "Bearer tok-gateway").body(Body::from(batch("gw1", 3, "m1"))).unwrap();
    let (s, h, v) = send(&f, req).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(h.get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    assert!(v["error"].as_str().unwrap().contains("gw1"), "{v}");
    // Another gateway (admin posting gw9's batch) has its own bucket.
    assert_eq!(as_role(&f, "admin", "POST", "/api/v1/ingest", batch("gw9", 1, "m1")).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_and_refusals_are_audited() {
    let f = fx();
    assert_eq!(as_role(&f, "admin", "POST", "/api/v1/store/compact", Vec::new()).await.0, StatusCode::OK);
    assert_eq!(as_role(&f, "wrong", "GET", "/api/v1/meters", Vec::new()).await.0, StatusCode::UNAUTHORIZED);
    let (s, v) = as_role(&f, "bureau", "GET", "/api/v1/audit?limit=10", Vec::new()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, ["store.compact", "auth.refused"], "{v}");
    assert_eq!(items[0]["who"], "ops");
    assert_eq!(items[0]["role"], "admin");
    assert_eq!(items[1]["target"], "/api/v1/meters");
    assert!(!v.to_string().contains("tok-nobody"), "the refused token is in the log: {v}");
    let (s, v) = as_role(&f, "bureau", "GET", "/api/v1/audit?offset=1&limit=1", Vec::new()).await;
    assert_eq!((s, v["total"].as_u64(), v["next"].as_u64()), (StatusCode::OK, Some(2), None), "{v}");
    assert_eq!(as_role(&f, "bureau", "GET", "/api/v1/audit?limit=0", Vec::new()).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_everyone_is_admin_and_metrics_can_need_a_token() {
    let f = fixture_with(REGISTRY, UnknownMeter::Reject, None, RateLimiter::unlimited());
    for uri in ["/api/v1/meters", "/api/v1/audit", "/api/v1/gateways"] {
        assert_eq!(as_role(&f, "none", "GET", uri, Vec::new()).await.0, StatusCode::OK, "{uri}");
    }
    assert_eq!(as_role(&f, "none", "POST", "/api/v1/ingest", batch("any", 1, "m1")).await.0, StatusCode::OK);
    let mut t = tokens();
    t.metrics = crate::auth::MetricsAccess::Token;
    let f = fixture_with(REGISTRY, UnknownMeter::Reject, Some(t), RateLimiter::unlimited());
    assert_eq!(as_role(&f, "none", "GET", "/metrics", Vec::new()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(as_role(&f, "gateway", "GET", "/metrics", Vec::new()).await.0, StatusCode::FORBIDDEN, "a gateway token has no read rights");
    assert_eq!(hash_token("tok-admin").len(), 64);
    // Open endpoints stay open whatever credentials come along.
    for auth in ["Basic Zm9vOmJhcg==", "Bearer wrong", "Negotiate xyz"] {
        let req = Request::get("/healthz").header("authorization", auth).body(Body::empty()).unwrap();
        assert_eq!(send(&f, req).await.0, StatusCode::OK, "{auth}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_gets_503() {
    let mut f = fx();
    Arc::get_mut(&mut f.state).unwrap().request_timeout = std::time::Duration::from_millis(50);
    let slow = axum::Router::new()
        .route("/slow", axum::routing::get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            "late"
        }))
        .route("/quick", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(f.state.clone(), super::limits::timeout));
    let t0 = std::time::Instant::now();
    let resp = slow.clone().oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("http.request_timeout_ms"));
    let resp = slow.oneshot(Request::get("/quick").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Two gateways: gw1 owns m1 by the registry; gw2 owns e2... by its token's list (e2 and w1
/// have no `gateway` in the registry). Neither writes the other's meters, by batch or line
/// protocol; the allowed part of a request is stored; refusals are counted and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_writes_only_its_own_meters() {
    let mut gw2 = entry("gw2-token", Role::Gateway, None, Some("gw2"));
    gw2.meters = vec!["e2".into()];
    let tokens = Tokens::from_plain(&[("tok-admin", entry("ops", Role::Admin, None, None)), ("tok-gateway", entry("gw1", Role::Gateway, None, Some("gw1"))), ("tok-gw2", gw2)]);
    let f = fixture_with(REGISTRY, UnknownMeter::Reject, Some(tokens), RateLimiter::unlimited());
    let sample = |meter: &str, i: i64, v: f64| Sample { meter: meter.into(), t: T0 + i * 60_000, v: [(Quantity::ActiveEnergyImport, v)].into_iter().collect() };
    let post_batch = |tok: &'static str, b: Batch| {
        Request::post("/api/v1/ingest").header("authorization", format!("Bearer {tok}")).header("content-type", "application/json").body(Body::from(encode_batch(&b))).unwrap()
    };
    // gw1: m1 (its own), e2 (gw2's by token), w1 (nobody's), m1 again.
    let b = Batch::new("gw1", 1, vec![sample("m1", 1, 10.0), sample("e2", 1, 99.0), sample("w1", 1, 99.0), sample("m1", 2, 11.0)]);
    let (s, _, v) = send(&f, post_batch("tok-gateway", b.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("meter `e2`") && e.contains("meter `w1`") && e.contains("2 samples refused") && e.contains("partial write: 2 samples stored"), "{e}");
    assert_eq!(v["refused_seqs"], serde_json::json!([[2, 3]]));
    // The gateway sends it again (its 403 is retried): the allowed samples are duplicates, the
    // refused ones refused again, never recorded as received.
    let (s, _, v) = send(&f, post_batch("tok-gateway", b)).await;
    assert_eq!((s, v["samples_duplicate"].as_u64(), v["samples_stored"].as_u64()), (StatusCode::FORBIDDEN, Some(2), Some(0)), "{v}");
    let (_, v) = as_role(&f, "admin", "GET", "/api/v1/gateways", Vec::new()).await;
    assert_eq!(v["items"][0]["stored_ranges"], serde_json::json!([[1, 1], [4, 4]]), "{v}");
    // gw2 writes e2 (listed) by line protocol, not m1 (gw1's) nor w1 (not listed).
    let lp = |tok: &str, body: String| Request::post("/api/v2/write?bucket=x&precision=ms").header("authorization", format!("Token {tok}")).body(Body::from(body)).unwrap();
    let (s, _, v) = send(&f, lp("tok-gw2", format!("e,meter=e2 active_energy_import=5 {}\ne,meter=m1 active_energy_import=7 {}\ne,meter=w1 water_volume=1 {}", T0, T0 + 60_000, T0))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(m.contains("partial write: 1 points written") && m.contains("meter `m1` is assigned to gateway `gw1`") && m.contains("meter `w1`"), "{m}");
    let (s, _, _) = send(&f, lp("tok-gw2", format!("e,meter=e2 active_energy_import=6 {}", T0 + 60_000))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // What each meter holds: m1 only gw1's, e2 only gw2's, w1 nothing.
    let series = |m: &'static str| {
        let f = &f;
        async move {
            let q = if m == "w1" { "water_volume" } else { "active_energy_import" };
            let (_, v) = as_role(f, "admin", "GET", &format!("/api/v1/series?meter={m}&quantity={q}&from=2026-01-01&to=2027-01-01"), Vec::new()).await;
            v["points"].as_array().map(|p| p.iter().map(|x| x["v"].as_f64().unwrap()).collect::<Vec<f64>>()).unwrap_or_default()
        }
    };
    assert_eq!(series("m1").await, vec![10.0, 11.0]);
    assert_eq!(series("e2").await, vec![5.0, 6.0]);
    assert!(series("w1").await.is_empty());
    // Counted and audited.
    let refused = f.state.metrics.rejected.with_label_values(&["batch", "meter_not_assigned"]).get() + f.state.metrics.rejected.with_label_values(&["line_protocol", "meter_not_assigned"]).get();
    assert_eq!(refused, 2 + 2 + 2);
    let (items, _) = f.state.audit.read_page(0, 100).unwrap();
    let audited: Vec<&Value> = items.iter().filter(|r| r["action"] == "ingest.refused").collect();
    assert_eq!(audited.len(), 3, "{items:?}");
    assert_eq!(audited[0]["who"], "gw1");
    // Admin writes any meter.
    let (s, _, v) = send(&f, post_batch("tok-admin", Batch::new("gw9", 1, vec![sample("w1", 3, 1.0)]))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A different value at a stored (meter, quantity, time) is a conflict: kept aside, never
/// stored, answered 409 (batch) or 400 (line protocol) as a partial write, listed in the meter's
/// flags; an engineer's `reading` event corrects the stored reading and settles it, and the
/// audit log keeps the value it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_value_is_kept_aside_until_a_correction() {
    let f = fx();
    let at = |i: i64| T0 + i * 60_000;
    let sample = |i: i64, v: f64| Sample { meter: "m1".into(), t: at(i), v: [(Quantity::ActiveEnergyImport, v)].into_iter().collect() };
    let (s, v) = as_role(&f, "gateway", "POST", "/api/v1/ingest", encode_batch(&Batch::new("gw1", 1, vec![sample(1, 100.0), sample(2, 101.0)]))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The same readings again under new numbers: duplicates; one different value: a conflict.
    let (s, v) = as_role(&f, "gateway", "POST", "/api/v1/ingest", encode_batch(&Batch::new("gw1", 3, vec![sample(1, 100.0), sample(2, 690_133.4), sample(3, 102.0)]))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("1 points conflict") && e.contains("stored 101, offered 690133.4"), "{e}");
    assert_eq!((v["points_written"].as_u64(), v["points_unchanged"].as_u64(), v["points_conflicting"].as_u64()), (Some(1), Some(1), Some(1)));
    // Retried: a duplicate batch, 200.
    let (s, _) = as_role(&f, "gateway", "POST", "/api/v1/ingest", encode_batch(&Batch::new("gw1", 3, vec![sample(1, 100.0), sample(2, 690_133.4), sample(3, 102.0)]))).await;
    assert_eq!(s, StatusCode::OK);
    // Two values in one line-protocol request for a new time: the first is stored, the second
    // kept aside.
    let lp = format!("e,meter=m1 active_energy_import=103 {}\ne,meter=m1 active_energy_import=104 {}", at(4), at(4));
    let req = Request::post("/write?db=x&precision=ms").header("authorization", "Bearer tok-gateway").body(Body::from(lp)).unwrap();
    let (s, _, v) = send(&f, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("partial write: 1 points written; 1 points conflict"), "{v}");
    let (_, v) = as_role(&f, "admin", "GET", "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-01-01&to=2027-01-01", Vec::new()).await;
    let values: Vec<f64> = v["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
    assert_eq!(values, vec![100.0, 101.0, 102.0, 103.0], "stored readings never replaced: {v}");
    let (_, v) = as_role(&f, "bureau", "GET", "/api/v1/meters/m1/flags?year=2026", Vec::new()).await;
    assert_eq!(v["open_conflicts"], 2, "{v}");
    let c = &v["conflicts"][0];
    assert_eq!((c["stored_value"].as_f64(), c["offered_value"].as_f64(), c["quantity"].as_str(), c["open"].as_bool()), (Some(101.0), Some(690_133.4), Some("active_energy_import"), Some(true)), "{v}");
    assert_eq!(c["source"], "gateway gw1, sample 4");
    assert_eq!(v["conflicts"][1]["source"], "line protocol (token `gw1`)");
    assert!(c["received"].is_string() && c["time"].as_str().unwrap().starts_with("2026-03-01T"), "{c}");
    // The engineer keeps the stored value (a correction to the same value settles it).
    let time = c["time"].as_str().unwrap().to_string();
    let time4 = v["conflicts"][1]["time"].as_str().unwrap().to_string();
    let ev = serde_json::json!({ "kind": "reading", "time": time, "value": 101.0, "reason": "meter display read on site" });
    let (s, v) = as_role(&f, "engineer", "POST", "/api/v1/meters/m1/events", ev.to_string().into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["correction"]["previous"].as_f64(), v["correction"]["changed"].as_bool(), v["correction"]["conflicts_resolved"].as_u64()), (Some(101.0), Some(false), Some(1)), "{v}");
    // And corrects the other one: the stored reading changes, the original is in the audit log.
    let ev = serde_json::json!({ "kind": "reading", "time": time4, "value": 104.0, "reason": "the second value was right" });
    let (s, v) = as_role(&f, "engineer", "POST", "/api/v1/meters/m1/events", ev.to_string().into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["correction"]["previous"].as_f64(), v["correction"]["changed"].as_bool()), (Some(103.0), Some(true)), "{v}");
    let (_, v) = as_role(&f, "admin", "GET", "/api/v1/series?meter=m1&quantity=active_energy_import&from=2026-01-01&to=2027-01-01", Vec::new()).await;
    let values: Vec<f64> = v["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
    assert_eq!(values, vec![100.0, 101.0, 102.0, 104.0]);
    let (_, v) = as_role(&f, "bureau", "GET", "/api/v1/meters/m1/flags?year=2026", Vec::new()).await;
    assert_eq!(v["open_conflicts"], 0, "{v}");
    assert_eq!((v["conflicts"][1]["resolved_value"].as_f64(), v["conflicts"][1]["resolved_by"].as_str()), (Some(104.0), Some("eng")), "{v}");
    let (items, _) = f.state.audit.read_page(0, 100).unwrap();
    let corrections: Vec<&Value> = items.iter().filter(|r| r["action"] == "meter.event").collect();
    assert_eq!(corrections[1]["detail"]["correction"]["previous"], 103.0, "{items:?}");
}

/// `/metrics` with `[auth]`: agency series (labelled agency, building or meter) only for a token
/// that may read them; `metrics = "open"` serves the rest to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_agency_series_only_to_who_may_read_them() {
    let scrape = |f: &Fixture, role: &'static str| {
        let f = f.state.clone();
        async move {
            let mut b = Request::get("/metrics");
            if let Some(t) = token_of(role) {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            let resp = app(f).oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status.as_u16(), String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    for mode in [crate::auth::MetricsAccess::Token, crate::auth::MetricsAccess::Open] {
        let mut t = tokens();
        t.metrics = mode;
        let f = fixture_with(REGISTRY, UnknownMeter::Reject, Some(t), RateLimiter::unlimited());
        let m = &f.state.metrics;
        // m1 serves a and b (building b1), e2 only b (building b2). (The per-meter gauges are
        // set from the store at each scrape; alerts stand for every agency series here.)
        m.alerts_firing.with_label_values(&["stale", "warning", "", "b2", "e2"]).set(1);
        m.alerts_firing.with_label_values(&["over_budget", "warning", "b", "", ""]).set(1);
        m.alerts_firing.with_label_values(&["stale", "warning", "", "b1", "m1"]).set(1);
        m.alerts_firing.with_label_values(&["ingest", "critical", "", "", ""]).set(1);
        m.points_written.inc_by(7);
        let fleet = ["energyd_points_written_total 7", "alertname=\"ingest\""];
        let a_series = ["meter=\"m1\"", "alertname=\"stale\""];
        let b_series = ["meter=\"e2\"", "agency=\"b\""];
        // (role, status, series present, series absent) per mode.
        let open = mode == crate::auth::MetricsAccess::Open;
        let cases: Vec<(&str, u16, Vec<&str>, Vec<&str>)> = vec![
            ("none", if open { 200 } else { 401 }, if open { fleet.to_vec() } else { vec![] }, [a_series, b_series].concat()),
            ("gateway", if open { 200 } else { 403 }, if open { fleet.to_vec() } else { vec![] }, [a_series, b_series].concat()),
            ("agency", 200, [&fleet[..], &a_series[..]].concat(), b_series.to_vec()),
            ("bureau", 200, [fleet, a_series, b_series].concat(), vec![]),
        ];
        for (role, status, present, absent) in cases {
            let (s, body) = scrape(&f, role).await;
            assert_eq!(s, status, "{mode:?} {role}: {body}");
            for p in present {
                assert!(body.contains(p), "{mode:?} {role}: `{p}` missing:\n{body}");
            }
            for a in absent {
                assert!(!body.contains(a), "{mode:?} {role}: `{a}` shown:\n{body}");
            }
        }
    }
}

/// Acknowledging and silencing over HTTP: roles, agency scope, the answers' codes, the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_acknowledged_and_silenced_by_role_and_agency() {
    use crate::alerts::config::Severity;
    use crate::alerts::rules::{meter_labels, Finding};
    let f = fx();
    let now = chrono::Utc::now().timestamp_millis();
    {
        let extra = std::collections::BTreeMap::new();
        let meta = crate::alerts::state::RuleMeta { name: "MeterSilent", severity: Severity::Warning, for_ms: 0, labels: &extra, banding: crate::alerts::state::Banding::Value };
        let fnd = |m: &str, agency: &str| Finding { key: m.into(), labels: meter_labels(m, "b1", agency), summary_zh: "表计无读数".into(), summary_en: "silent".into(), value: Some(600.0), unit: Some("s".into()) };
        f.state.alerts.book.lock().unwrap().apply(&meta, vec![fnd("m1", "a,b"), fnd("w1", "b")], now);
    }
    let (_, v) = as_role(&f, "bureau", "GET", "/api/v1/alerts?kind=MeterSilent", Vec::new()).await;
    let id_of = |m: &str| v["alerts"].as_array().unwrap().iter().find(|a| a["meter"] == m).unwrap()["id"].as_str().unwrap().to_string();
    let (shared, b_only) = (id_of("m1"), id_of("w1"));
    assert_eq!(shared.len(), 16);
    // The agency token lists the alert of the building it shares, not agency b's own meter.
    let (_, v) = as_role(&f, "agency", "GET", "/api/v1/alerts", Vec::new()).await;
    let seen: Vec<&str> = v["alerts"].as_array().unwrap().iter().map(|a| a["meter"].as_str().unwrap()).collect();
    assert_eq!(seen, ["m1"], "{v}");
    let ack = |reason: &str| serde_json::json!({ "reason": reason }).to_string().into_bytes();
    let uri = |id: &str, what: &str| format!("/api/v1/alerts/{id}/{what}");
    // (role, method, uri, body, status)
    let cases: Vec<(&str, &str, String, Vec<u8>, u16)> = vec![
        ("none", "POST", uri(&shared, "ack"), ack("x"), 401),
        ("gateway", "POST", uri(&shared, "ack"), ack("x"), 403),
        ("agency", "POST", uri(&b_only, "ack"), ack("not ours"), 403),
        ("agency", "POST", uri(&shared, "ack"), b"{}".to_vec(), 400),
        ("agency", "POST", uri(&shared, "ack"), ack("   "), 400),
        ("agency", "POST", uri(&shared, "ack"), b"not json".to_vec(), 400),
        ("agency", "POST", uri(&shared, "ack"), serde_json::json!({"reason": "x", "hours": 1}).to_string().into_bytes(), 400),
        ("engineer", "POST", uri("0123456789abcdef", "ack"), ack("x"), 404),
        ("agency", "POST", uri(&shared, "ack"), ack("电工已到场"), 200),
        ("engineer", "POST", uri(&b_only, "silence"), serde_json::json!({"reason": "x", "hours": 2, "until": "2030-01-01T00:00:00Z"}).to_string().into_bytes(), 400),
        ("engineer", "POST", uri(&b_only, "silence"), serde_json::json!({"reason": "x", "until": "tomorrow"}).to_string().into_bytes(), 400),
        ("engineer", "POST", uri(&b_only, "silence"), serde_json::json!({"reason": "x", "hours": 0}).to_string().into_bytes(), 400),
        ("engineer", "POST", uri(&b_only, "silence"), serde_json::json!({"reason": "检修", "hours": 4}).to_string().into_bytes(), 200),
        ("agency", "DELETE", uri(&b_only, "silence"), Vec::new(), 403),
        ("bureau", "DELETE", uri(&b_only, "silence"), Vec::new(), 200),
        ("bureau", "DELETE", uri(&b_only, "silence"), Vec::new(), 409),
        ("admin", "POST", uri(&b_only, "silence"), serde_json::json!({"reason": "until a date", "until": chrono::DateTime::from_timestamp_millis(now + 3_600_000).unwrap().to_rfc3339()}).to_string().into_bytes(), 200),
    ];
    for (role, method, u, body, want) in cases {
        let mut b = Request::builder().method(method).uri(&u).header("content-type", "application/json");
        if let Some(t) = token_of(role) {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let (s, _, v) = send(&f, b.body(Body::from(body)).unwrap()).await;
        assert_eq!(s.as_u16(), want, "{method} {u} as {role}: {v}");
        if s.is_client_error() {
            assert!(v["error"].is_string(), "{v}");
        }
    }
    let (_, v) = as_role(&f, "engineer", "GET", "/api/v1/alerts?kind=meter_silent", Vec::new()).await;
    let find = |m: &str| v["alerts"].as_array().unwrap().iter().find(|a| a["meter"] == m).cloned().unwrap();
    let a = find("m1");
    assert_eq!((a["acknowledged"]["by"].as_str(), a["acknowledged"]["reason"].as_str(), a["silenced"].is_null()), (Some("agency-a"), Some("电工已到场"), true), "{a}");
    let w = find("w1");
    assert_eq!((w["silenced"]["by"].as_str(), w["silenced"]["reason"].as_str(), w["acknowledged"].is_null()), (Some("ops"), Some("until a date"), true), "{w}");
    let kinds: Vec<&str> = w["history"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["pending", "firing", "silenced", "unsilenced", "silenced"], "{w}");
    // Every action is in the audit log, with its actor and reason.
    let (_, v) = as_role(&f, "bureau", "GET", "/api/v1/audit?limit=1000", Vec::new()).await;
    let acts: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("alert.")))
        .map(|r| (r["action"].as_str().unwrap().to_string(), r["who"].as_str().unwrap().to_string()))
        .collect();
    let want = [("alert.acknowledge", "agency-a"), ("alert.silence", "eng"), ("alert.unsilence", "bureau"), ("alert.silence", "ops")];
    assert_eq!(acts, want.map(|(a, w)| (a.to_string(), w.to_string())), "{v}");
}
