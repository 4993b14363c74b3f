//! Security of energyd's HTTP API against the real binary:
//!
//! - a barrage of bad input at every endpoint (malformed and mistyped JSON, oversized and
//!   invalid gzip bodies, huge query strings, bad line protocol, no, wrong and malformed tokens,
//!   an agency token asking for another agency's data, a gateway token posting another gateway's
//!   batch, a client sending its headers too slowly): each answer has the right status, and the
//!   daemon keeps serving (health, then a valid ingest) with nothing stored from the refusals;
//! - the real gateway posting to the daemon over HTTPS with a token from a file: readings arrive;
//! - `energyd run` refusing to listen beyond loopback without authentication.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use energy_e2e::{bin, eventually, free_port, listening_url, new_token, profiles_dir, Proc};
use energy_wire::{encode_batch, Batch, Quantity, Sample};

const REGISTRY: &str = r#"
[[agency]]
id = "ag-a"
name = "A"
level = "city"
[[agency]]
id = "ag-b"
name = "B"
level = "city"
[[building]]
id = "bl-a"
name = "A"
floor_area = 100.0
occupants = [ { agency = "ag-a", share = 1.0 } ]
[[building]]
id = "bl-b"
name = "B"
floor_area = 100.0
occupants = [ { agency = "ag-b", share = 1.0 } ]
[[meter]]
id = "sec-elec"
building = "bl-a"
carrier = "electricity"
[[meter]]
id = "b-elec"
building = "bl-b"
carrier = "electricity"
"#;

struct Tokens {
    admin: String,
    bureau: String,
    agency: String,
    engineer: String,
    gateway: String,
    entries: String,
}

fn make_tokens(dir: &Path) -> Tokens {
    let (admin, e1) = new_token(dir, &["--role", "admin", "--name", "ops"]);
    let (bureau, e2) = new_token(dir, &["--role", "bureau", "--name", "bureau"]);
    let (agency, e3) = new_token(dir, &["--role", "agency", "--agency", "ag-a", "--name", "officer of \"A\""]);
    let (engineer, e4) = new_token(dir, &["--role", "engineer", "--name", "eng"]);
    let (gateway, e5) = new_token(dir, &["--role", "gateway", "--gateway", "sec-gw", "--name", "gw"]);
    Tokens { admin, bureau, agency, engineer, gateway, entries: [e1, e2, e3, e4, e5].join("\n") }
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian package `openssl`)");
    assert!(st.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&st.stderr));
}

/// A CA and a server certificate for 127.0.0.1, made for this test only.
fn certificates(dir: &Path) {
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=energy test CA"]);
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(dir, &["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf"]);
}

fn batch(gateway: &str, seq: u64, meter: &str, t: i64, v: f64) -> Vec<u8> {
    encode_batch(&Batch::new(gateway, seq, vec![Sample { meter: meter.into(), t, v: [(Quantity::ActiveEnergyImport, v)].into_iter().collect() }]))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// One request of the barrage: what is sent and which statuses are right.
struct Case {
    what: String,
    method: &'static str,
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    want: &'static [u16],
}

fn case(what: &str, method: &'static str, path: &str, token: Option<&str>, body: Vec<u8>, want: &'static [u16]) -> Case {
    Case { what: what.into(), method, path: path.into(), token: token.map(Into::into), headers: Vec::new(), body, want }
}

fn with(mut c: Case, h: &'static str, v: &str) -> Case {
    c.headers.push((h, v.into()));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_barrage_gets_the_right_statuses_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = make_tokens(d);
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\nheader_read_timeout_ms = 1000\n[auth]\n{}",
            t.entries
        ),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    daemon.wait_line("authentication is on: 5 tokens", Duration::from_secs(5));
    let _ = energy_e2e::http_client();
    // A connection per request: the daemon may close a connection after refusing a body it did
    // not read (413), and a pooled connection would then fail the next request on the client side.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();

    let now = chrono::Utc::now().timestamp_millis();
    let (gw, adm) = (Some(t.gateway.as_str()), Some(t.admin.as_str()));
    let w = "from=2026-01-01&to=2026-01-02&interval=day";
    let json = "application/json";
    let mut cases: Vec<Case> = Vec::new();
    // No token, a wrong one, a malformed header: 401 on every endpoint but /healthz and /metrics.
    let reads = [
        "/",
        "/api/v1/agencies",
        "/api/v1/buildings",
        "/api/v1/meters",
        "/api/v1/gateways",
        "/api/v1/quantities",
        "/api/v1/audit",
        "/api/v1/series?meter=sec-elec&quantity=active_energy_import&from=2026-01-01&to=2026-01-02",
        "/api/v1/consumption?agency=ag-a&from=2026-01-01&to=2026-01-02&interval=day",
    ];
    for p in reads {
        cases.push(case("no token", "GET", p, None, vec![], &[401]));
        cases.push(case("wrong token", "GET", p, Some("edt_0000000000000000000000000000000000000000000000000000000000000000"), vec![], &[401]));
        cases.push(with(case("malformed Authorization", "GET", p, None, vec![], &[401]), "authorization", "Basic b3BzOnNlY3JldA=="));
    }
    for p in ["/api/v1/ingest", "/write?db=x", "/api/v2/write?bucket=x", "/api/v1/store/compact"] {
        cases.push(case("no token", "POST", p, None, batch("sec-gw", 1, "sec-elec", now, 1.0), &[401]));
        cases.push(case("wrong token", "POST", p, Some("nope"), batch("sec-gw", 1, "sec-elec", now, 1.0), &[401]));
        cases.push(with(case("empty bearer", "POST", p, None, vec![], &[401]), "authorization", "Bearer "));
    }
    cases.push(case("health needs nothing", "GET", "/healthz", None, vec![], &[200]));
    cases.push(case("metrics are open", "GET", "/metrics", None, vec![], &[200]));
    // Batches, with the gateway's own token.
    let ingest = |what: &str, body: Vec<u8>, want: &'static [u16]| with(case(what, "POST", "/api/v1/ingest", gw, body, want), "content-type", json);
    cases.push(ingest("malformed JSON", b"{\"schema\":1,\"gateway\":".to_vec(), &[400]));
    cases.push(ingest("not JSON at all", b"\x00\x01\x02 hello".to_vec(), &[400]));
    cases.push(ingest("empty body", vec![], &[400]));
    cases.push(ingest("wrong types", br#"{"schema":1,"gateway":"sec-gw","seq":"one","samples":[]}"#.to_vec(), &[400]));
    cases.push(ingest("value as string", format!(r#"{{"schema":1,"gateway":"sec-gw","seq":1,"samples":[{{"meter":"sec-elec","t":{now},"v":{{"active_energy_import":"12"}}}}]}}"#).into_bytes(), &[400]));
    cases.push(ingest("sequence 0", format!(r#"{{"schema":1,"gateway":"sec-gw","seq":0,"samples":[{{"meter":"sec-elec","t":{now},"v":{{"active_energy_import":1}}}}]}}"#).into_bytes(), &[400]));
    cases.push(ingest("unknown quantity", format!(r#"{{"schema":1,"gateway":"sec-gw","seq":1,"samples":[{{"meter":"sec-elec","t":{now},"v":{{"bogus":1}}}}]}}"#).into_bytes(), &[400]));
    cases.push(ingest("bad meter id", format!(r#"{{"schema":1,"gateway":"sec-gw","seq":1,"samples":[{{"meter":"a b/c","t":{now},"v":{{"active_energy_import":1}}}}]}}"#).into_bytes(), &[400]));
    cases.push(ingest("time in the far future", batch("sec-gw", 1, "sec-elec", now + 10 * 86_400_000, 1.0), &[400]));
    cases.push(ingest("future schema", br#"{"schema":99,"gateway":"sec-gw","seq":1,"samples":[]}"#.to_vec(), &[400]));
    cases.push(ingest("number out of range", format!(r#"{{"schema":1,"gateway":"sec-gw","seq":1,"samples":[{{"meter":"sec-elec","t":{now},"v":{{"active_energy_import":1e400}}}}]}}"#).into_bytes(), &[400]));
    cases.push(ingest("deeply nested", "[".repeat(60_000).into_bytes(), &[400]));
    cases.push(ingest("oversized body", vec![b' '; 200_000], &[413]));
    cases.push(with(ingest("invalid gzip", b"\x1f\x8b\x08\x00garbage".to_vec(), &[400]), "content-encoding", "gzip"));
    cases.push(with(ingest("gzip bomb", gzip(&vec![b' '; 4 << 20]), &[413]), "content-encoding", "gzip"));
    cases.push(with(ingest("unknown encoding", batch("sec-gw", 1, "sec-elec", now, 1.0), &[415]), "content-encoding", "br"));
    cases.push(with(case("wrong content type", "POST", "/api/v1/ingest", gw, batch("sec-gw", 1, "sec-elec", now, 1.0), &[415]), "content-type", "text/plain"));
    cases.push(ingest("another gateway's batch", batch("other-gw", 1, "sec-elec", now, 1.0), &[403]));
    // Line protocol.
    let lp = |what: &str, path: &str, body: Vec<u8>, want: &'static [u16]| with(case(what, "POST", path, None, body, want), "authorization", &format!("Token {}", t.gateway));
    cases.push(lp("no fields", "/api/v2/write?bucket=x", b"energy,meter=sec-elec\n".to_vec(), &[400]));
    cases.push(lp("garbage", "/api/v2/write?bucket=x", b"=,= ==,\n\\\\\\".to_vec(), &[400]));
    cases.push(lp("unknown meter", "/write?db=x", format!("energy,meter=ghost active_energy_import=1 {}\n", now * 1_000_000).into_bytes(), &[400]));
    cases.push(lp("non-numeric field", "/write?db=x", format!("energy,meter=sec-elec active_energy_import=\"x\" {}\n", now * 1_000_000).into_bytes(), &[400]));
    cases.push(lp("bad precision", "/api/v2/write?bucket=x&precision=fortnight", b"energy,meter=sec-elec active_energy_import=1\n".to_vec(), &[400]));
    cases.push(lp("invalid UTF-8", "/write?db=x", b"energy,meter=sec-elec active_energy_import=1 \xff\xfe\n".to_vec(), &[400]));
    cases.push(lp("oversized", "/write?db=x", vec![b'#'; 200_000], &[413]));
    cases.push(with(lp("invalid gzip", "/api/v2/write?bucket=x", b"\x1f\x8bnot gzip".to_vec(), &[400]), "content-encoding", "gzip"));
    cases.push(case("wrong password in ?p=", "POST", "/write?db=x&u=gw&p=wrong", None, b"energy,meter=sec-elec active_energy_import=1\n".to_vec(), &[401]));
    // Queries with bad parameters, and huge query strings.
    let q = |what: &str, path: String, want: &'static [u16]| case(what, "GET", &path, adm, vec![], want);
    cases.push(q("bad time", "/api/v1/consumption?agency=ag-a&from=yesterday&to=2026-01-02&interval=day".into(), &[400]));
    cases.push(q("bad interval", "/api/v1/consumption?agency=ag-a&from=2026-01-01&to=2026-01-02&interval=fortnight".into(), &[400]));
    cases.push(q("two scopes", format!("/api/v1/consumption?agency=ag-a&building=bl-a&{w}"), &[400]));
    cases.push(q("to before from", "/api/v1/consumption?agency=ag-a&from=2026-02-01&to=2026-01-01&interval=day".into(), &[400]));
    cases.push(q("too many periods", "/api/v1/consumption?agency=ag-a&from=2000-01-01&to=2026-01-01&interval=hour".into(), &[400]));
    cases.push(q("unknown agency", format!("/api/v1/consumption?agency=nobody&{w}"), &[404]));
    cases.push(q("bad quantity", "/api/v1/series?meter=sec-elec&quantity=joy&from=2026-01-01&to=2026-01-02".into(), &[400]));
    cases.push(q("zero step", "/api/v1/series?meter=sec-elec&quantity=active_energy_import&from=2026-01-01&to=2026-01-02&step=0m".into(), &[400]));
    cases.push(q("huge step", "/api/v1/series?meter=sec-elec&quantity=active_energy_import&from=2026-01-01&to=2026-01-02&step=99999999999999999d".into(), &[400]));
    cases.push(q("bad audit paging", "/api/v1/audit?limit=-1".into(), &[400]));
    cases.push(q("huge query string (60 kB)", format!("/api/v1/consumption?agency={}&{w}", "a".repeat(60_000)), &[404]));
    cases.push(q("huge query string, 15000 parameters", format!("/api/v1/series?{}", "k=v&".repeat(15_000)), &[400]));
    cases.push(q("no such endpoint", "/api/v1/nothing".into(), &[404]));
    cases.push(q("wrong method", "/api/v1/ingest".into(), &[405]));
    // Roles and scopes.
    let as_ = |what: &str, method: &'static str, path: String, token: &str, want: &'static [u16]| case(what, method, &path, Some(token), vec![], want);
    cases.push(as_("agency: another agency's consumption", "GET", format!("/api/v1/consumption?agency=ag-b&{w}"), &t.agency, &[403]));
    cases.push(as_("agency: another agency's building", "GET", format!("/api/v1/consumption?building=bl-b&{w}"), &t.agency, &[403]));
    cases.push(as_("agency: another agency's meter", "GET", format!("/api/v1/consumption?meter=b-elec&{w}"), &t.agency, &[403]));
    cases.push(as_("agency: another agency's series", "GET", "/api/v1/series?meter=b-elec&quantity=active_energy_import&from=2026-01-01&to=2026-01-02".into(), &t.agency, &[403]));
    cases.push(as_("agency: an unknown agency (no probing)", "GET", format!("/api/v1/consumption?agency=nobody&{w}"), &t.agency, &[403]));
    cases.push(as_("agency: own consumption", "GET", format!("/api/v1/consumption?agency=ag-a&{w}"), &t.agency, &[200]));
    cases.push(as_("agency: gateways", "GET", "/api/v1/gateways".into(), &t.agency, &[403]));
    cases.push(as_("agency: audit log", "GET", "/api/v1/audit".into(), &t.agency, &[403]));
    cases.push(as_("agency: ingest", "POST", "/api/v1/ingest".into(), &t.agency, &[403]));
    cases.push(as_("gateway: reads", "GET", "/api/v1/agencies".into(), &t.gateway, &[403]));
    cases.push(as_("gateway: compact", "POST", "/api/v1/store/compact".into(), &t.gateway, &[403]));
    cases.push(as_("bureau: compact", "POST", "/api/v1/store/compact".into(), &t.bureau, &[403]));
    cases.push(as_("bureau: audit log", "GET", "/api/v1/audit".into(), &t.bureau, &[200]));
    cases.push(as_("engineer: audit log", "GET", "/api/v1/audit".into(), &t.engineer, &[403]));
    cases.push(as_("engineer: reads all", "GET", format!("/api/v1/consumption?agency=ag-b&{w}"), &t.engineer, &[200]));
    cases.push(as_("engineer: ingest", "POST", "/api/v1/ingest".into(), &t.engineer, &[403]));

    let started = Instant::now();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for c in &cases {
        let mut req = client.request(c.method.parse().unwrap(), format!("{url}{}", c.path)).timeout(Duration::from_secs(30)).body(c.body.clone());
        if let Some(tok) = &c.token {
            req = req.bearer_auth(tok);
        }
        for (h, v) in &c.headers {
            req = req.header(*h, v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{} ({} {}): no answer: {e}", c.what, c.method, c.path.chars().take(80).collect::<String>()));
        let status = resp.status().as_u16();
        let www = resp.headers().get("www-authenticate").is_some();
        let body = resp.text().await.unwrap_or_default();
        *by_status.entry(status).or_default() += 1;
        if !c.want.contains(&status) {
            wrong.push(format!("{} ({} {}): {status}, want {:?}: {}", c.what, c.method, c.path.chars().take(80).collect::<String>(), c.want, body.chars().take(200).collect::<String>()));
        }
        if status == 401 && !www {
            wrong.push(format!("{}: 401 without WWW-Authenticate", c.what));
        }
        if (400..500).contains(&status) && status != 405 && status != 414 && status != 431 && serde_json::from_str::<serde_json::Value>(&body).map_or(true, |v| !v["error"].is_string() && !v["message"].is_string()) {
            wrong.push(format!("{}: {status} without a JSON error: {}", c.what, body.chars().take(200).collect::<String>()));
        }
        for secret in [&t.admin, &t.bureau, &t.agency, &t.engineer, &t.gateway] {
            if body.contains(secret.as_str()) {
                wrong.push(format!("{}: a token is echoed in the answer", c.what));
            }
        }
    }

    // A client that sends its headers too slowly is disconnected (header_read_timeout_ms = 1000).
    let addr = url.trim_start_matches("http://").to_string();
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /api/v1/meters HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let t0 = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        (t0.elapsed(), String::from_utf8_lossy(&buf).into_owned())
    })
    .await
    .unwrap();
    assert!(slow.0 < Duration::from_secs(10), "a slow client held its connection for {:?}: {}", slow.0, slow.1);
    // A request head of 1 MiB (past what a client library sends): refused, not buffered.
    let addr = url.trim_start_matches("http://").to_string();
    let huge = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let head = format!("GET /api/v1/meters?x={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
        let _ = s.write_all(head.as_bytes());
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).lines().next().unwrap_or("(connection closed)").to_string()
    })
    .await
    .unwrap();
    assert!(!huge.contains(" 200 "), "a 1 MiB request head was served: {huge}");

    let sent = cases.len();
    println!(
        "security barrage: {sent} requests in {:.1} s, statuses {}; slow-header client cut after {:.1} s; 1 MiB request head: {huge}",
        started.elapsed().as_secs_f64(),
        by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", "),
        slow.0.as_secs_f64()
    );
    assert!(wrong.is_empty(), "{} of {sent} answers wrong:\n{}", wrong.len(), wrong.join("\n"));

    // Still serving; nothing was stored from the refused requests.
    let get = |path: &str, token: &str| {
        let req = client.get(format!("{url}{path}")).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap_or_default()).unwrap_or_default())
        }
    };
    assert_eq!(client.get(format!("{url}/healthz")).send().await.unwrap().status().as_u16(), 200);
    let (s, v) = get("/api/v1/gateways", &t.admin).await;
    assert_eq!((s, v["items"].as_array().map(Vec::len)), (200, Some(0)), "a refused batch left a trace: {v}");
    let (_, v) = get("/api/v1/meters", &t.admin).await;
    assert_eq!(v["unassigned"], serde_json::json!([]), "{v}");
    let metrics = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let written: f64 = metrics.lines().find(|l| l.starts_with("energyd_points_written_total")).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(-1.0);
    assert_eq!(written, 0.0, "points were stored from refused requests");
    let r = client
        .post(format!("{url}/api/v1/ingest"))
        .bearer_auth(&t.gateway)
        .header("content-type", json)
        .body(batch("sec-gw", 1, "sec-elec", now, 42.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, v) = get("/api/v1/gateways", &t.admin).await;
    assert_eq!(v["items"][0]["acked_through"], 1, "{v}");
    // Refusals went to the audit log (rate-limited), tokens did not.
    let (_, v) = get("/api/v1/audit?limit=1000", &t.bureau).await;
    let log = v.to_string();
    assert!(log.contains("auth.refused") && log.contains("config.load"), "{v}");
    for secret in [&t.admin, &t.gateway, &t.agency] {
        assert!(!log.contains(secret.as_str()));
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_posts_over_https_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let t = make_tokens(d);
    std::fs::write(d.join("gw.token"), format!("{}\n", t.gateway)).unwrap();
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"server.crt\"\ntls_key_file = \"server.key\"\n\
             [ingest]\nrate_per_gateway = 1.0\nburst_per_gateway = 1\n[auth]\n{}",
            t.entries
        ),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let line = daemon.wait_line("listening on", Duration::from_secs(30));
    let url = line.split_whitespace().find(|w| w.starts_with("https://")).unwrap_or_else(|| panic!("no https URL in `{line}`")).to_string();

    energy_gateway::tls::install_crypto_provider();
    let tls = energy_gateway::tls::client_config(Some(&d.join("ca.crt"))).unwrap();
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    let r = client.get(format!("{url}/api/v1/meters")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "HTTPS without a token");
    let plain = energy_e2e::http_client().get(url.replacen("https://", "http://", 1) + "/healthz").timeout(Duration::from_secs(10)).send().await;
    assert!(plain.map_or(true, |r| !r.status().is_success()), "plain HTTP answered on the HTTPS port");

    // A simulated meter, and the real gateway sending over HTTPS with its token from a file.
    let mut sim_cfg = format!("profiles_dir = {:?}\nserved_log = {:?}\n[[bus]]\n", profiles_dir(), d.join("served.jsonl"));
    sim_cfg.push_str("[[bus.meter]]\nid = \"sec-elec\"\nunit = 1\nprofile = \"eastron/sdm630\"\nmodel = \"office_electricity\"\nsize = 3000.0\n");
    std::fs::write(d.join("sim.toml"), sim_cfg).unwrap();
    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&sim.wait_line("listen", Duration::from_secs(30))).unwrap();
    let hport = free_port();
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "gateway_id = \"sec-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = \"queue\"\n[uplink]\nurl = \"{url}/api/v1/ingest\"\ntoken_file = \"gw.token\"\nca_file = \"ca.crt\"\nretry_max_ms = 500\nbatch_max_delay_ms = 100\n[health]\nlisten = \"127.0.0.1:{hport}\"\n\
             [[device]]\nmeter = \"sec-elec\"\nprofile = \"eastron/sdm630\"\ntcp = \"{}\"\ninterval_ms = 100\n",
            profiles_dir(),
            bus["listen"].as_str().unwrap()
        ),
    )
    .unwrap();
    let _gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    let admin = t.admin.clone();
    let acked = eventually(Duration::from_secs(60), "the gateway's readings arrive over HTTPS", || {
        let (client, url, admin) = (client.clone(), url.clone(), admin.clone());
        async move {
            let v: serde_json::Value = client.get(format!("{url}/api/v1/gateways")).bearer_auth(&admin).send().await.ok()?.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok())?;
            let n = v["items"].as_array()?.iter().find(|g| g["id"] == "sec-gw")?["acked_through"].as_u64()?;
            (n >= 20).then_some(n)
        }
    })
    .await;
    // The gateway posts faster than the 1 request/s allowed: some posts got 429, it waited and
    // retried, and nothing is missing (one contiguous range).
    let metrics = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let throttled: f64 = metrics.lines().find(|l| l.starts_with("energyd_ingest_throttled_total")).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0);
    let body = client.get(format!("{url}/api/v1/gateways")).bearer_auth(&t.admin).send().await.unwrap().bytes().await.unwrap();
    let g: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(g["items"][0]["stored_ranges"].as_array().map(Vec::len), Some(1), "{g}");
    assert!(throttled >= 1.0, "the gateway was never throttled; the test no longer shows 429 handling");
    // The readings are there, read back by the agency that owns the meter.
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339().replace('+', "%2B");
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339().replace('+', "%2B");
    let body = client
        .get(format!("{url}/api/v1/series?meter=sec-elec&quantity=active_energy_import&from={from}&to={to}"))
        .bearer_auth(&t.agency)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let points = v["points"].as_array().map_or(0, Vec::len);
    assert!(points >= 20, "{v}");
    println!("gateway over HTTPS with a token: {acked} samples acknowledged, {points} readings read back by the agency's token, {throttled} posts throttled (429) and retried");
}

#[test]
fn run_refuses_a_non_loopback_listen_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    let port = free_port();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"0.0.0.0:{port}\"\n")).unwrap();
    let mut child = Command::new(bin("energyd"))
        .args(["run", "--config", "energyd.toml"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("energyd run started on 0.0.0.0 without authentication");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("http.listen `0.0.0.0:{port}` is not a loopback address")) && err.contains("allow_insecure_open"), "{err}");
    assert!(!d.join("store").join("energyd.sqlite").exists(), "the store was opened before the refusal");
    // check-config says the same.
    let (code, _, err) = energy_e2e::run("energyd", &["check-config", "--config", "energyd.toml"], d);
    assert_eq!(code, 1);
    assert!(err.contains("not a loopback address"), "{err}");
}
