//! The page through the router (no socket): login, sessions, CSRF, lockout, expiry, scoping,
//! and a form recording the same meter event as the API.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;

use super::{app, WebSetup};
use crate::api::tests::{fixture_with, Fixture};
use crate::auth::users::{hash_password, save, UserEntry};
use crate::auth::{Role, TokenEntry, Tokens};
use crate::ingest::config::UnknownMeter;
use crate::ingest::rate::RateLimiter;

/// Agencies a and b; a occupies b1 (meter m1), b occupies b2 (meter e2).
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
occupants = [ { agency = "a", share = 1.0 } ]
[[building]]
id = "b2"
name = "Building 2"
floor_area = 500.0
occupants = [ { agency = "b", share = 1.0 } ]
[[meter]]
id = "m1"
building = "b1"
carrier = "electricity"
[[meter]]
id = "e2"
building = "b2"
carrier = "electricity"
"#;

const PASSWORD: &str = "correct horse battery";

struct Site {
    f: Fixture,
    router: axum::Router,
    users: std::path::PathBuf,
}

fn user(name: &str, role: Role, agency: Option<&str>) -> UserEntry {
    UserEntry { name: name.into(), role, agency: agency.map(Into::into), password: hash_password(PASSWORD).unwrap(), disabled: false }
}

fn site(secure: bool, idle_ms: i64) -> Site {
    let tokens = Tokens::from_plain(&[(
        "tok-agency",
        TokenEntry { name: "agency-a-token".into(), role: Role::Agency, agency: Some("a".into()), gateway: None, meters: Vec::new(), sha256: String::new() },
    )]);
    let f = fixture_with(REGISTRY, UnknownMeter::Reject, Some(tokens), RateLimiter::unlimited());
    let users = f._dir.path().join("users.toml");
    save(&users, &[user("bureau", Role::Bureau, None), user("officer-a", Role::Agency, Some("a")), user("eng", Role::Engineer, None)]).unwrap();
    let router = app(f.state.clone(), WebSetup { users_file: users.clone(), session_idle_ms: idle_ms, secure });
    Site { f, router, users }
}

/// A site on `registry` with no tokens and two users: `bureau`, and `officer` of agency `city`.
fn site_with(registry: &str) -> Site {
    let f = fixture_with(registry, UnknownMeter::Reject, Some(Tokens::from_plain(&[])), RateLimiter::unlimited());
    let users = f._dir.path().join("users.toml");
    save(&users, &[user("bureau", Role::Bureau, None), user("officer", Role::Agency, Some("city"))]).unwrap();
    let router = app(f.state.clone(), WebSetup { users_file: users.clone(), session_idle_ms: 60_000, secure: false });
    Site { f, router, users }
}

struct Answer {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn send(s: &Site, req: Request<Body>) -> Answer {
    let resp = s.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let location = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let cookies = resp.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
    let body = String::from_utf8_lossy(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).into_owned();
    Answer { status, location, cookies, body }
}

async fn get(s: &Site, path: &str, cookie: Option<&str>) -> Answer {
    let mut b = Request::get(path).header(header::ACCEPT, "text/html");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    send(s, b.body(Body::empty()).unwrap()).await
}

async fn post(s: &Site, path: &str, cookie: Option<&str>, form: &str) -> Answer {
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    send(s, b.body(Body::from(form.to_string())).unwrap()).await
}

fn cookie_value(a: &Answer, name: &str) -> Option<String> {
    a.cookies.iter().find_map(|c| c.strip_prefix(&format!("{name}=")).map(|r| r.split(';').next().unwrap_or("").to_string()))
}

/// The value of the hidden `csrf` input (or the `csrf` meta tag) of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").map(|i| i + 19).or_else(|| page.find("name=\"csrf\" content=\"").map(|i| i + 21)).expect("a csrf field");
    page[at..].split('"').next().unwrap().to_string()
}

/// Logs in; returns the session cookie header value.
async fn login(s: &Site, name: &str, password: &str) -> Answer {
    let form = get(s, "/login", None).await;
    let pre = cookie_value(&form, super::LOGIN_COOKIE).expect("login cookie");
    let body = format!("name={}&password={}&csrf={}&next=%2F", name, super::fmt::url_encode(password), csrf_of(&form.body));
    post(s, "/login", Some(&format!("{}={pre}", super::LOGIN_COOKIE)), &body).await
}

async fn session(s: &Site, name: &str) -> String {
    let a = login(s, name, PASSWORD).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    format!("{}={}", super::SESSION_COOKIE, cookie_value(&a, super::SESSION_COOKIE).expect("session cookie"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_it() {
    let s = site(false, 60_000);
    // Nothing: a browser goes to the login page, another client gets 401.
    let a = get(&s, "/agencies/a?period=year", None).await;
    assert_eq!((a.status, a.location.as_str()), (StatusCode::SEE_OTHER, "/login?next=%2Fagencies%2Fa%3Fperiod%3Dyear"));
    let a = send(&s, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The login form's cookie and the session cookie: HttpOnly, SameSite=Strict, no Secure on HTTP.
    let form = get(&s, "/login", None).await;
    assert!(form.cookies.iter().any(|c| c.starts_with("energyd_login=") && c.contains("HttpOnly") && c.contains("SameSite=Strict")), "{:?}", form.cookies);
    let a = login(&s, "bureau", PASSWORD).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let c = a.cookies.iter().find(|c| c.starts_with("energyd_session=")).expect("session cookie");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"), "{c}");
    let cookie = session(&s, "bureau").await;
    let page = get(&s, "/", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Agency A") && page.body.contains("Agency B"), "the bureau sees every agency");
    // Logout needs the session's CSRF token.
    let a = post(&s, "/logout", Some(&cookie), "csrf=wrong").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = post(&s, "/logout", Some(&cookie), &format!("csrf={}", csrf_of(&page.body))).await;
    assert_eq!((a.status, a.location.as_str()), (StatusCode::SEE_OTHER, "/login"));
    assert_eq!(get(&s, "/", Some(&cookie)).await.status, StatusCode::SEE_OTHER, "the session is gone");
    // A login form posted without its cookie (another site's form) is refused.
    let a = post(&s, "/login", None, &format!("name=bureau&password={}&csrf=x", super::fmt::url_encode(PASSWORD))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_https_cookies_are_secure() {
    let s = site(true, 60_000);
    let a = login(&s, "bureau", PASSWORD).await;
    let c = a.cookies.iter().find(|c| c.starts_with("energyd_session=")).expect("session cookie");
    assert!(c.contains("Secure"), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_user_out() {
    let s = site(false, 60_000);
    for i in 0..5 {
        let a = login(&s, "bureau", "wrong password!").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "failure {i}");
    }
    // The fifth failure locks for 30 s: the right password is refused now, saying for how long.
    let a = login(&s, "bureau", PASSWORD).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.body.contains("秒后再试"), "{}", a.body);
    // Another user from the same (unknown) address is locked too: the address key failed 5 times.
    assert_eq!(login(&s, "eng", PASSWORD).await.status, StatusCode::TOO_MANY_REQUESTS);
    let audit = std::fs::read_to_string(s.f._dir.path().join("audit.log")).unwrap();
    assert!(audit.contains("web login as \\\"bureau\\\": wrong password"), "{audit}");
    assert!(!audit.contains("wrong password!"), "the password tried is never written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_after_inactivity_and_when_the_user_is_disabled() {
    let s = site(false, 300);
    let cookie = session(&s, "bureau").await;
    assert_eq!(get(&s, "/reports", Some(&cookie)).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(get(&s, "/reports", Some(&cookie)).await.status, StatusCode::SEE_OTHER, "idle longer than 300 ms");
    let s = site(false, 60_000);
    let cookie = session(&s, "eng").await;
    assert_eq!(get(&s, "/reports", Some(&cookie)).await.status, StatusCode::OK);
    let mut list = crate::auth::users::load(&s.users, None).unwrap();
    list.iter_mut().filter(|u| u.name == "eng").for_each(|u| u.disabled = true);
    // A different size or time stamp: the table reloads.
    save(&s.users, &list).unwrap();
    assert_eq!(get(&s, "/reports", Some(&cookie)).await.status, StatusCode::SEE_OTHER, "disabled");
    assert_eq!(login(&s, "eng", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_user_reaches_only_its_own_pages() {
    let s = site(false, 60_000);
    let cookie = session(&s, "officer-a").await;
    let a = get(&s, "/", Some(&cookie)).await;
    assert!(a.status == StatusCode::SEE_OTHER && a.location.starts_with("/agencies/a?"), "{}", a.location);
    let own = get(&s, "/agencies/a", Some(&cookie)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.body.contains("Building 1") && !own.body.contains("Building 2"));
    assert_eq!(get(&s, "/alerts", Some(&cookie)).await.status, StatusCode::OK, "its own alerts, as the API lists them");
    for p in ["/agencies/b", "/buildings/b2", "/meters/e2", "/reports?kind=assessment&year=2025&format=json", "/agencies/nope"] {
        assert_eq!(get(&s, p, Some(&cookie)).await.status, StatusCode::FORBIDDEN, "{p}");
    }
    assert_eq!(get(&s, "/meters/m1", Some(&cookie)).await.status, StatusCode::OK);
    // An API token of the agency role works on the page as on the API.
    let a = send(&s, Request::get("/agencies/b").header(header::AUTHORIZATION, "Bearer tok-agency").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(&s, Request::get("/agencies/a").header(header::AUTHORIZATION, "Bearer tok-agency").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::OK);
    // No event forms for an agency user, and posting one is refused.
    let page = get(&s, "/meters/m1", Some(&cookie)).await;
    assert!(!page.body.contains("data-kind=\"replacement\""));
    let a = post(&s, "/meters/m1/events", Some(&cookie), &format!("csrf={}&kind=replacement&time=2026-03-01&old_final=1&new_initial=0&reason=x", csrf_of(&page.body))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_records_a_replacement_in_a_form_as_the_api_would() {
    let s = site(false, 60_000);
    let cookie = session(&s, "eng").await;
    let page = get(&s, "/meters/m1?period=year&year=2026", Some(&cookie)).await;
    assert!(page.body.contains("data-kind=\"replacement\""), "the engineer gets the forms");
    let form = "kind=replacement&time=2026-03-01T10%3A00%3A00%2B08%3A00&old_final=1200&new_initial=0&reason=dead+display&back=period%3Dyear%26year%3D2026";
    let a = post(&s, "/meters/m1/events", Some(&cookie), form).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "no CSRF token");
    assert!(s.f.state.engine.event_records(Some("m1")).is_empty());
    let a = post(&s, "/meters/m1/events", Some(&cookie), &format!("csrf={}&{form}", csrf_of(&page.body))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(a.location.starts_with("/meters/m1?period=year&year=2026&done="), "{}", a.location);
    let ev = s.f.state.engine.event_records(Some("m1"));
    assert_eq!(ev.len(), 1);
    let v = serde_json::to_value(&ev[0]).unwrap();
    assert_eq!((v["by"].as_str(), v["reason"].as_str()), (Some("eng"), Some("dead display")));
    let audit = std::fs::read_to_string(s.f._dir.path().join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"meter.event\"") && l.contains("\"who\":\"eng\"")), "{audit}");
    // A bad event gets the API's message.
    let a = post(&s, "/meters/m1/events", Some(&cookie), &format!("csrf={}&kind=replacement&time=2026-03-01&reason=x", csrf_of(&page.body))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("old_final"), "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_are_embedded_and_cached() {
    let s = site(false, 60_000);
    let a = get(&s, super::assets::ECHARTS_PATH, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.len() > 500_000 && a.body.contains("echarts"));
    let resp = s.router.clone().oneshot(Request::get(super::assets::CSS_PATH).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert_eq!(get(&s, "/static/passwd", None).await.status, StatusCode::NOT_FOUND, "only the embedded files");
    let a = get(&s, "/static/../../etc/passwd", None).await;
    assert!(a.status.is_client_error() && !a.body.contains("root:"), "{}", a.status);
}

/// A workbook of one sheet holding `cells` as text, as a spreadsheet program saves it.
fn workbook(cells: &[Vec<String>]) -> Vec<u8> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    for (r, row) in cells.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            ws.write_string(r as u32, c as u16, v).unwrap();
        }
    }
    wb.save_to_buffer().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_readings_are_entered_in_a_form_or_imported_from_the_template() {
    let s = site(false, 60_000);
    let cookie = session(&s, "eng").await;
    let page = get(&s, "/agencies/a/readings?month=2026-02", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("name=\"reading.m1\"") && !page.body.contains("reading.e2"), "only agency a's meters");
    let csrf = csrf_of(&page.body);
    let a = post(&s, "/agencies/a/readings", Some(&cookie), "month=2026-02&reading.m1=100").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "no CSRF token");
    let a = post(&s, "/agencies/a/readings", Some(&cookie), &format!("csrf={csrf}&month=2026-02&reading.m1=100")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let ev = s.f.state.engine.event_records(Some("m1"));
    let v = serde_json::to_value(&ev[0]).unwrap();
    // February's reading is the counter at the start of 1 March.
    assert_eq!((v["kind"].as_str(), v["time"].as_str(), v["value"].as_f64()), (Some("reading"), Some("2026-03-01"), Some(100.0)), "{v}");
    // The template, filled in and imported (the March reading of m1).
    let t = send(&s, Request::get("/agencies/a/readings.xlsx?month=2026-03").header(header::COOKIE, &cookie).body(Body::empty()).unwrap()).await;
    assert_eq!(t.status, StatusCode::OK);
    let meters: Vec<&crate::registry::Meter> = super::readings::hand_read(&s.f.state.registry, "a");
    let mut cells = super::readings::cells_of(&super::readings::template_bytes(&meters, "2026-03").unwrap()).unwrap();
    cells[1][5] = "250.5".into();
    let filled = workbook(&cells);
    let import = |csrf: &str, body: Vec<u8>| Request::post("/agencies/a/readings.xlsx").header(header::COOKIE, &cookie).header("x-csrf-token", csrf).body(Body::from(body)).unwrap();
    assert_eq!(send(&s, import("wrong", filled.clone())).await.status, StatusCode::FORBIDDEN);
    let a = send(&s, import(&csrf, filled)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(s.f.state.engine.event_records(Some("m1")).len(), 2);
    // A sheet naming another agency's meter records nothing and says which row.
    cells[1][0] = "e2".into();
    let a = send(&s, import(&csrf, workbook(&cells))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("row 2: meter `e2`"), "{}", a.body);
    assert_eq!(send(&s, import(&csrf, b"not a workbook".to_vec())).await.status, StatusCode::BAD_REQUEST);
    // An agency user sees its form but may not record (the API's role rule for meter events).
    let officer = session(&s, "officer-a").await;
    let page = get(&s, "/agencies/a/readings", Some(&officer)).await;
    assert!(page.status == StatusCode::OK && page.body.contains("disabled"));
    let a = post(&s, "/agencies/a/readings", Some(&officer), &format!("csrf={}&month=2026-02&reading.m1=1", csrf_of(&page.body))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&s, "/agencies/b/readings", Some(&officer)).await.status, StatusCode::FORBIDDEN);
}

#[test]
fn history_loading_is_noticed_from_the_gateways_batches() {
    use crate::ingest::gateways::GatewayState;
    let now = 100 * 3_600_000;
    let g = |last: Option<i64>, lag: Option<i64>| GatewayState { site: String::new(), online: None, since_ms: 0, first_batch_ms: last, last_batch_ms: last, last_lag_ms: lag };
    let map = |v: Vec<GatewayState>| v.into_iter().enumerate().map(|(i, x)| (format!("gw{i}"), x)).collect::<std::collections::BTreeMap<_, _>>();
    // A batch 10 s ago whose oldest sample is 48 h old: history is loading, up to now - 48 h.
    assert_eq!(super::pages::backfill(&map(vec![g(Some(now - 10_000), Some(48 * 3_600_000))]), now), Some(now - 10_000 - 48 * 3_600_000));
    // Live batches (lag of seconds), an old backlog batch (2 minutes ago), nothing: no notice.
    assert_eq!(super::pages::backfill(&map(vec![g(Some(now - 1_000), Some(5_000))]), now), None);
    assert_eq!(super::pages::backfill(&map(vec![g(Some(now - 120_000), Some(48 * 3_600_000))]), now), None);
    assert_eq!(super::pages::backfill(&map(vec![g(None, None)]), now), None);
    // Two gateways loading: the one furthest behind says how far history has come.
    let two = map(vec![g(Some(now - 1_000), Some(10 * 3_600_000)), g(Some(now - 2_000), Some(30 * 3_600_000))]);
    assert_eq!(super::pages::backfill(&two, now), Some(now - 2_000 - 30 * 3_600_000));
}

/// Agency a's meter m1 under a time-of-use tariff: 0.6 元/kWh flat, 08-12 at 1.0 (unnamed: the
/// highest price, 高峰), 23-07 at 0.3 named `valley` (低谷); the other 12 hours (07-08, 12-23)
/// at the flat price, 平段.
const TOU_REGISTRY: &str = r#"
[[tariff]]
carrier = "electricity"
price = 0.6
tou = [ { from = 8, to = 12, price = 1.0 }, { from = 23, to = 7, price = 0.3, name = "valley" } ]
"#;

/// One `<tr>` of the page's cost table, and the `data-value` of its cells of `class`.
fn band_cell(page: &str, carrier: &str, band: &str, class: &str) -> f64 {
    let at = page.find(&format!("data-carrier=\"{carrier}\" data-band=\"{band}\"")).unwrap_or_else(|| panic!("no {carrier} {band} row: {page}"));
    let row = &page[at..at + page[at..].find("</tr>").unwrap()];
    let pat = format!("class=\"n {class}\" data-value=\"");
    let v = row.find(&pat).map(|i| i + pat.len()).unwrap_or_else(|| panic!("no {class} in {row}"));
    row[v..].split('"').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_by_tariff_band_is_shown_as_worked_out_and_as_the_api_gives_it() {
    let tokens = Tokens::from_plain(&[("tok-admin", TokenEntry { name: "ops".into(), role: Role::Admin, agency: None, gateway: None, meters: Vec::new(), sha256: String::new() })]);
    let f = fixture_with(&format!("{REGISTRY}{TOU_REGISTRY}"), UnknownMeter::Reject, Some(tokens), RateLimiter::unlimited());
    let users = f._dir.path().join("users.toml");
    save(&users, &[user("bureau", Role::Bureau, None), user("officer-a", Role::Agency, Some("a"))]).unwrap();
    let router = app(f.state.clone(), WebSetup { users_file: users.clone(), session_idle_ms: 60_000, secure: false });
    let s = Site { f, router, users };
    // m1, February 2026 (local hours from 2026-02-01T00:00+08:00 = 1 769 875 200 000 ms): 2 kWh
    // in each hour 08-12, 1 kWh in every other hour; a day is 4 × 2 + 20 × 1 = 28 kWh.
    let t0: i64 = 1_769_875_200_000;
    let h = 3_600_000;
    let mut counter = 0.0;
    let mut samples = vec![(t0, 0.0)];
    for i in 0..28 * 24 {
        counter += if (8..12).contains(&(i % 24)) { 2.0 } else { 1.0 };
        samples.push((t0 + (i + 1) * h, counter));
    }
    let batch = energy_wire::Batch::new("gw1", 1, samples.iter().map(|&(t, v)| energy_wire::Sample { meter: "m1".into(), t, v: [(energy_wire::Quantity::ActiveEnergyImport, v)].into_iter().collect() }).collect());
    let req = Request::post("/api/v1/ingest").header(header::AUTHORIZATION, "Bearer tok-admin").header(header::CONTENT_TYPE, "application/json").body(Body::from(energy_wire::encode_batch(&batch))).unwrap();
    let a = send(&s, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let cookie = session(&s, "bureau").await;
    // February, per day: 高峰 4 h × 2 = 8 kWh; 低谷 8 h (23, 0-6) × 1 = 8 kWh; 平段 12 h × 1 =
    // 12 kWh. 28 days: 高峰 224 kWh × 1.0 = 224 元; 平段 336 kWh × 0.6 = 201.6 元; 低谷 224 kWh
    // × 0.3 = 67.2 元; 784 kWh, 492.8 元.
    let feb = [("peak", 224.0, 224.0), ("flat", 336.0, 201.6), ("valley", 224.0, 67.2), ("all", 784.0, 492.8)];
    // The 1st to the 10th: 10 days of the same profile: 80 kWh 80 元, 120 kWh 72 元, 80 kWh 24 元.
    let ten = [("peak", 80.0, 80.0), ("flat", 120.0, 72.0), ("valley", 80.0, 24.0), ("all", 280.0, 176.0)];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    for (path, want) in [
        ("/agencies/a?period=month&year=2026&month=2", &feb),
        ("/?period=month&year=2026&month=2", &feb),
        ("/buildings/b1?period=year&year=2026", &feb),
        ("/meters/m1?period=year&year=2026", &feb),
        ("/agencies/a?period=range&from=2026-02-01&to=2026-02-10", &ten),
    ] {
        let page = get(&s, path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains("费用（按能源品种和电价时段）") && page.body.contains("08:00–12:00") && page.body.contains("其余时段"), "{path}");
        for (band, kwh, yuan) in want {
            let (v, y) = (band_cell(&page.body, "electricity", band, "value"), band_cell(&page.body, "electricity", band, "yuan"));
            assert!(close(v, *kwh) && close(y, *yuan), "{path} {band}: {v} kWh {y} 元, want {kwh} kWh {yuan} 元");
        }
        // The subtotal is the carrier's cost in the carrier table (and the 费用 figure).
        assert!(page.body.contains(&format!("<td class=\"n\">{}</td></tr>", super::fmt::num(super::fmt::Lang::Zh, want[3].2, 0))) || path.starts_with("/?"), "{path}");
    }
    // Chinese names of the bands, and English with lang=en.
    let page = get(&s, "/agencies/a?period=month&year=2026&month=2", Some(&cookie)).await;
    for name in ["高峰", "平段", "低谷", "492.80"] {
        assert!(page.body.contains(name), "{name}");
    }
    let page = get(&s, "/agencies/a?period=month&year=2026&month=2&lang=en", Some(&cookie)).await;
    assert!(page.body.contains("Cost by carrier and tariff band") && page.body.contains(">valley<") && page.body.contains("other hours"));
    // The API's indicators of 2026 (only February has data) give the same split, band by band,
    // as the page of the year.
    let page = get(&s, "/agencies/a?period=year&year=2026", Some(&cookie)).await;
    let api = send(&s, Request::get("/api/v1/agencies/a/indicators?year=2026").header(header::AUTHORIZATION, "Bearer tok-admin").body(Body::empty()).unwrap()).await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    let elec = v["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "electricity").unwrap();
    let bands = elec["cost_bands"].as_array().unwrap();
    assert_eq!(bands.len(), 3, "{elec}");
    for b in bands {
        let band = b["band"].as_str().unwrap();
        let (kwh, yuan) = (b["value"].as_f64().unwrap(), b["yuan"].as_f64().unwrap());
        assert!(close(band_cell(&page.body, "electricity", band, "value"), kwh) && close(band_cell(&page.body, "electricity", band, "yuan"), yuan), "{band}: {b}");
        let want = feb.iter().find(|w| w.0 == band).unwrap();
        assert!(close(kwh, want.1) && close(yuan, want.2), "{band}: {b}");
    }
    assert!(close(elec["cost_yuan"].as_f64().unwrap(), 492.8), "{elec}");
    assert_eq!((bands[0]["from"].as_u64(), bands[0]["to"].as_u64(), bands[0]["hours"].as_u64(), bands[0]["price"].as_f64()), (Some(8), Some(12), Some(4), Some(1.0)));
}

/// The bureau (prov, with agencies under it) has its whole signature block in the registry;
/// city has its 负责人 only.
const SIGN_REGISTRY: &str = r#"
[[agency]]
id = "prov"
name = "省机关事务管理局"
level = "province"
responsible = "王局长"
filler = "李科员"
phone = "0531-12345678"
[[agency]]
id = "city"
name = "市财政局"
level = "city"
parent = "prov"
responsible = "张主任"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_page_shows_the_signature_block_each_viewer_prints() {
    let s = site_with(SIGN_REGISTRY);
    let section = |page: &str| page[page.find("<section class=\"signature\">").expect("the signature section")..].split("</section>").next().unwrap().to_string();
    let field = |sec: &str, id: &str| sec[sec.find(&format!("<tr data-field=\"{id}\">")).unwrap_or_else(|| panic!("no {id}: {sec}"))..].split("</tr>").next().unwrap().to_string();

    // The bureau prints its own block: every field from the registry.
    let bureau = session(&s, "bureau").await;
    let page = get(&s, "/reports", Some(&bureau)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let sec = section(&page.body);
    assert!(sec.contains("签章栏（打印在报告上）") && sec.contains("data-agency=\"prov\""), "{sec}");
    for (id, want) in [("unit", "省机关事务管理局"), ("responsible", "王局长"), ("filler", "李科员"), ("phone", "0531-12345678")] {
        let row = field(&sec, id);
        assert!(row.contains(&format!("<span class=\"value\">{want}</span>")), "{id}: {row}");
    }
    assert!(field(&sec, "date").contains("签署时手写"));
    // And each agency's own block for its annual report: city misses two fields.
    let city = sec[sec.find("<tr data-agency=\"city\">").expect("city's row")..].split("</tr>").next().unwrap().to_string();
    assert!(city.contains("张主任") && city.matches("未填").count() == 2, "{city}");
    assert!(sec.contains("1 个单位未填全"), "{sec}");

    // The agency user sees its own agency's block only, the missing fields with the key that
    // fills them.
    let officer = session(&s, "officer").await;
    let page = get(&s, "/reports", Some(&officer)).await;
    assert_eq!(page.status, StatusCode::OK);
    let sec = section(&page.body);
    assert!(sec.contains("data-agency=\"city\"") && !sec.contains("data-agency=\"prov\""), "{sec}");
    assert!(!sec.contains("王局长") && !sec.contains("李科员") && !sec.contains("省机关事务管理局"), "no other agency's block: {sec}");
    assert!(field(&sec, "unit").contains("市财政局") && field(&sec, "responsible").contains("<span class=\"value\">张主任</span>"));
    for key in ["filler", "phone"] {
        let row = field(&sec, key);
        assert!(row.contains(&format!("data-key=\"{key}\"")) && row.contains("未填写：在注册表的 <code>[[agency]] id = \"city\"</code> 中设置"), "{key}: {row}");
        assert!(row.contains(&format!("<code>{key} = \"…\"</code>")), "{key}: {row}");
    }
    // The documents it downloads carry that block (its annual report and statistics forms), not
    // the bureau's.
    for kind in ["annual", "statistics"] {
        let doc = get(&s, &format!("/reports?kind={kind}&year=2025&format=html"), Some(&officer)).await;
        assert_eq!(doc.status, StatusCode::OK, "{kind}: {}", doc.body);
        assert!(doc.body.contains("张主任") && !doc.body.contains("王局长"), "{kind}");
    }
    let doc = get(&s, "/reports?kind=statistics&year=2025&format=html", Some(&bureau)).await;
    assert!(doc.body.contains("王局长"), "the bureau's forms are the bureau's");
    // English.
    let page = get(&s, "/reports?lang=en", Some(&officer)).await;
    let sec = section(&page.body);
    assert!(sec.contains("Signature block (printed on the documents)") && field(&sec, "filler").contains("not set: put <code>filler = \"…\"</code> in"), "{sec}");
}

const DOCS_REGISTRY: &str = r#"
[[agency]]
id = "prov"
name = "省机关事务管理局"
level = "province"
[[agency]]
id = "city"
name = "市财政局"
level = "city"
parent = "prov"
[[agency]]
id = "water"
name = "市水务局"
level = "city"
parent = "prov"
[[building]]
id = "b1"
name = "财政大楼"
floor_area = 5000
weather = "wx"
occupants = [ { agency = "city", share = 1.0 } ]
[[building]]
id = "b2"
name = "水务大楼"
floor_area = 3000
weather = "wx"
occupants = [ { agency = "water", share = 1.0 } ]
[[meter]]
id = "wx"
building = "b1"
carrier = "electricity"
quantity = "outdoor_temperature"
[[meter]]
id = "m1"
building = "b1"
carrier = "electricity"
item_code = "01A00"
[[meter]]
id = "m2"
building = "b2"
carrier = "electricity"
item_code = "01A00"
[[project]]
id = "p1"
name = "财政大楼照明改造"
contract = "retrofit"
baseline = "2024-01-01/2024-12-31"
reporting = "2025-02-01/2025-12-31"
buildings = ["b1"]
[[project]]
id = "p2"
name = "水务大楼空调改造"
contract = "retrofit"
baseline = "2024-01-01/2024-12-31"
reporting = "2025-02-01/2025-12-31"
meters = ["m2"]
"#;

/// The reports page lists every document the viewer may have: the four documents a year, the
/// 分项能耗 of each year (the registry has item codes), and the M&V report of each project the
/// viewer sees, each link answering as its endpoint does. The agency user (city) sees project
/// p1 (its building) and not p2 (the water bureau's meter), and only its own building in the
/// 分项能耗; a link to p2 typed by hand is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_page_lists_item_and_project_documents_the_viewer_sees() {
    let s = site_with(DOCS_REGISTRY);
    let year = chrono::Datelike::year(&chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai));

    let bureau = session(&s, "bureau").await;
    let page = get(&s, "/reports", Some(&bureau)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body.matches("<tr data-kind=\"items\">").count(), 4, "four years of 分项能耗");
    assert!(page.body.contains(&format!("/reports?kind=items&amp;year={year}&amp;format=html")), "{}", page.body);
    for p in ["p1", "p2"] {
        assert!(page.body.contains(&format!("<tr data-project=\"{p}\">")), "{p}");
        assert!(page.body.contains(&format!("/reports?kind=mv&amp;project={p}&amp;format=xlsx")), "{p}");
    }
    let items = get(&s, &format!("/reports?kind=items&year={year}&format=json"), Some(&bureau)).await;
    assert_eq!(items.status, StatusCode::OK, "{}", items.body);
    let v: serde_json::Value = serde_json::from_str(&items.body).unwrap();
    let buildings: Vec<&str> = v["buildings"].as_array().unwrap().iter().filter_map(|b| b["building"].as_str()).collect();
    assert_eq!(buildings, ["b1", "b2"], "{v}");
    let html = get(&s, &format!("/reports?kind=items&year={year}&format=html"), Some(&bureau)).await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.body.starts_with("<!DOCTYPE html>") && html.body.contains(&format!("{year}年分项能耗")) && html.body.contains("财政大楼"), "{}", html.body);

    let officer = session(&s, "officer").await;
    let page = get(&s, "/reports", Some(&officer)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<tr data-project=\"p1\">") && !page.body.contains("<tr data-project=\"p2\">"), "{}", page.body);
    let items = get(&s, &format!("/reports?kind=items&year={year}&format=json"), Some(&officer)).await;
    let v: serde_json::Value = serde_json::from_str(&items.body).unwrap();
    let buildings: Vec<&str> = v["buildings"].as_array().unwrap().iter().filter_map(|b| b["building"].as_str()).collect();
    assert_eq!(buildings, ["b1"], "only its own building: {v}");
    let refused = get(&s, "/reports?kind=mv&project=p2&format=json", Some(&officer)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let own = get(&s, "/reports?kind=mv&project=p1&format=json", Some(&officer)).await;
    assert_ne!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    assert_ne!(own.status, StatusCode::NOT_FOUND, "{}", own.body);
    let unknown = get(&s, "/reports?kind=minutes&year=2025", Some(&bureau)).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body.contains("items, mv"), "{}", unknown.body);
}

/// The overview's cards set the year against the agencies' targets: city has a budget of
/// 2,000 kgce (2 tce) and 5,000 kWh of electricity this year, water a budget of 1,000 kgce;
/// each uses 0.01 kWh an hour (under 11 kgce a year), so both are projected to meet theirs:
/// 综合能耗 "目标合计 3.00（2 个单位） · 预计达标 2/2", 用电 5,000 over one agency; 用水, 碳排放 and
/// 费用 have no target and say none. Each agency has 100 people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_sets_the_year_against_the_agencies_targets() {
    let year = chrono::Datelike::year(&chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai));
    let reg = format!(
        "{}\n[[budget]]\nagency = \"city\"\nyear = {year}\nenergy_kgce = 2000\ncarriers = {{ electricity = 5000 }}\n[[budget]]\nagency = \"water\"\nyear = {year}\nenergy_kgce = 1000\n{QUOTA_PER_PERSON}",
        DOCS_REGISTRY.replace("level = \"city\"\n", "level = \"city\"\nheadcount = { 2020 = 100 }\n")
    );
    let s = site_with(&reg);
    // A reading every hour of the year so far on each meter, 0.01 kWh an hour (targets are set
    // only against complete data).
    let t0 = chrono::TimeZone::with_ymd_and_hms(&chrono_tz::Asia::Shanghai, year, 1, 1, 0, 0, 0).unwrap().timestamp_millis();
    let hours = (chrono::Utc::now().timestamp_millis() - t0) / 3_600_000;
    let points = ["m1", "m2"]
        .iter()
        .flat_map(|m| (0..=hours).map(move |i| crate::store::Point { meter: (*m).into(), quantity: energy_wire::Quantity::ActiveEnergyImport, ts: t0 + i * 3_600_000, value: i as f64 * 0.01 }))
        .collect();
    s.f.state.store.write_points(points).await.unwrap();
    let bureau = session(&s, "bureau").await;
    let page = get(&s, &format!("/?period=year&year={year}"), Some(&bureau)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let card = |i: usize| page.body[page.body.find(&format!("data-kpi=\"{i}\"")).unwrap()..].split("</div>").next().unwrap().to_string();
    let energy = card(0);
    assert!(energy.contains("data-target=\"3\"") && energy.contains("目标合计 3.00（2 个单位） · 预计达标 2/2"), "{energy}");
    let power = card(1);
    assert!(power.contains("data-target=\"5000\"") && power.contains("（1 个单位）") && power.contains("1/1"), "{power}");
    for i in 2..5 {
        assert!(!card(i).contains("data-target"), "{}", card(i));
    }
    // The table classes energy per person only (about 0.1 kgce a person so far, above a
    // binding value of 0.001): the ranking names that band with its indicator.
    for a in ["city", "water"] {
        let row = page.body[page.body.find(&format!("<tr data-agency=\"{a}\">")).unwrap()..].split("</tr>").next().unwrap().to_string();
        assert!(row.contains("高于约束值（人均综合能耗）"), "{row}");
    }
}

/// A quota table of its own that classes energy per person only, for city-level agencies.
const QUOTA_PER_PERSON: &str = "[[quota]]\nsource = \"DB14/T 9999-2025\"\nindicator = \"energy_per_person\"\nlevels = [\"city\"]\nbinding = 0.001\nbenchmark = 0.0005\nguide = 0.0001\n";

/// The bureau is warned on its overview when the bands that grade its agencies are not its
/// province's: no quota table (DOCS_REGISTRY has none), or only the shipped example (Shandong's);
/// a table of its own gives no warning. Below the deadlines, last year's assessment says of
/// each agency its score and grade or why it cannot be scored (here: no data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_warns_of_quota_tables_not_the_provinces_own_and_says_who_can_be_scored() {
    let example = include_str!("../../../deploy/quotas/shandong-db37-2672-2019.toml");
    let own = example.replace("DB37/T 2672-2019 (山东, 示例)", "DB14/T 9999-2025");
    for (extra, warning) in [("", Some(("注册表中没有定额表", "The registry has no quota table"))), (example, Some(("示例定额表", "shipped example table"))), (own.as_str(), None)] {
        let s = site_with(&format!("{DOCS_REGISTRY}\n{extra}"));
        let bureau = session(&s, "bureau").await;
        for (lang, q) in [(0, "/"), (1, "/?lang=en")] {
            let page = get(&s, q, Some(&bureau)).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            match warning {
                Some(w) => {
                    let text = if lang == 0 { w.0 } else { w.1 };
                    assert!(page.body.contains("id=\"quota-warning\"") && page.body.contains(text), "{text}: {}", page.body);
                }
                None => assert!(!page.body.contains("quota-warning"), "a table of its own: no warning"),
            }
            let scoring = &page.body[page.body.find("<section id=\"scoring\">").expect("last year's assessment")..];
            let scoring = &scoring[..scoring.find("</section>").unwrap()];
            let not_scored = if lang == 0 { "无完整数据，不予评分" } else { "not scored: no complete data" };
            assert_eq!(scoring.matches(not_scored).count(), 3, "each of the three agencies: {scoring}");
            assert!(scoring.contains("市财政局") && scoring.contains("市水务局"), "{scoring}");
        }
    }
}
