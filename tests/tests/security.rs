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
gateway = "sec-gw"
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
    // /metrics needs a token with read rights by default (auth.metrics = "token").
    cases.push(case("metrics need a token", "GET", "/metrics", None, vec![], &[401]));
    cases.push(case("metrics: a gateway token has no read rights", "GET", "/metrics", gw, vec![], &[403]));
    cases.push(case("metrics with a reading token", "GET", "/metrics", Some(t.agency.as_str()), vec![], &[200]));
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
    cases.push(ingest("a meter of no gateway", batch("sec-gw", 1, "b-elec", now, 1.0), &[403]));
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
    let metrics = client.get(format!("{url}/metrics")).bearer_auth(&t.admin).send().await.unwrap().text().await.unwrap();
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
    let metrics = client.get(format!("{url}/metrics")).bearer_auth(&t.admin).send().await.unwrap().text().await.unwrap();
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

/// Two gateway tokens against the real daemon: neither writes the other's meters (batches or
/// line protocol), the allowed part of a request is stored, the refusals are counted and
/// audited; a conflicting value is kept aside, flagged on the meter, never replaces the stored
/// one, and only an engineer's correction changes the stored reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_cannot_write_each_others_meters_and_conflicts_are_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (gw1, e1) = new_token(d, &["--role", "gateway", "--gateway", "gw-1", "--name", "gateway one"]);
    let (gw2, e2) = new_token(d, &["--role", "gateway", "--gateway", "gw-2", "--name", "gateway two", "--meters", "b-elec"]);
    let (eng, e3) = new_token(d, &["--role", "engineer", "--name", "eng"]);
    let (bureau, e4) = new_token(d, &["--role", "bureau", "--name", "bureau"]);
    let (agency, e5) = new_token(d, &["--role", "agency", "--agency", "ag-a", "--name", "officer"]);
    assert!(e2.contains("meters = [\"b-elec\"]"), "{e2}");
    // sec-elec is gw-1's by the registry; b-elec has no gateway and gw-2's token lists it.
    std::fs::write(d.join("registry.toml"), REGISTRY.replace("gateway = \"sec-gw\"", "gateway = \"gw-1\"")).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[auth]\n{}", [e1, e2, e3, e4, e5].join("\n")),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    let client = energy_e2e::http_client();
    let now = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000 - 3_600_000;
    let post = |token: &str, path: &str, body: Vec<u8>| {
        let req = client.post(format!("{url}{path}")).bearer_auth(token).header("content-type", "application/json").body(body);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap_or_default()).unwrap_or_default())
        }
    };
    let get = |token: &str, path: &str| {
        let req = client.get(format!("{url}{path}")).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap_or_default()).unwrap_or_default())
        }
    };
    let values = |meter: &'static str| {
        let get = &get;
        let bureau = bureau.clone();
        async move {
            let from = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339().replace('+', "%2B");
            let to = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339().replace('+', "%2B");
            let (_, v) = get(&bureau, &format!("/api/v1/series?meter={meter}&quantity=active_energy_import&from={from}&to={to}")).await;
            v["points"].as_array().map(|p| p.iter().filter_map(|x| x["v"].as_f64()).collect::<Vec<f64>>()).unwrap_or_default()
        }
    };
    // Each gateway writes its own meter.
    let (s, v) = post(&gw1, "/api/v1/ingest", batch("gw-1", 1, "sec-elec", now, 2025.6)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&gw2, "/api/v1/ingest", batch("gw-2", 1, "b-elec", now, 500.0)).await;
    assert_eq!(s, 200, "{v}");
    // Neither writes the other's: batch and line protocol, 403 naming the meter.
    let (s, v) = post(&gw2, "/api/v1/ingest", batch("gw-2", 2, "sec-elec", now + 60_000, 690_133.4)).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("meter `sec-elec` is assigned to gateway `gw-1`"), "{v}");
    let lines = format!("energy,meter=b-elec active_energy_import=9 {}\nenergy,meter=sec-elec active_energy_import=2026.0 {}\n", now + 60_000, now + 120_000);
    let (s, v) = post(&gw1, "/write?db=x&precision=ms", lines.into_bytes()).await;
    assert_eq!(s, 403, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("partial write: 1 points written") && e.contains("meter `b-elec` is not assigned to gateway `gw-1`"), "{e}");
    assert_eq!(values("sec-elec").await, vec![2025.6, 2026.0]);
    assert_eq!(values("b-elec").await, vec![500.0]);

    // gw-1 offers another value for its stored reading: a conflict, kept aside (409).
    let (s, v) = post(&gw1, "/api/v1/ingest", batch("gw-1", 2, "sec-elec", now, 690_133.4)).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("stored 2025.6, offered 690133.4"), "{v}");
    // Two values in one millisecond by line protocol at nanosecond precision: the second is
    // kept aside too.
    let ns = (now + 180_000) * 1_000_000;
    let lines = format!("energy,meter=sec-elec active_energy_import=2026.5 {ns}\nenergy,meter=sec-elec active_energy_import=2027.5 {}\n", ns + 1);
    let (s, v) = post(&gw1, "/api/v2/write?bucket=x&precision=ns", lines.into_bytes()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("1 points conflict"), "{v}");
    assert_eq!(values("sec-elec").await, vec![2025.6, 2026.0, 2026.5], "a stored reading was replaced");
    let (s, v) = get(&agency, "/api/v1/meters/sec-elec/flags").await;
    assert_eq!((s, v["open_conflicts"].as_u64()), (200, Some(2)), "{v}");
    let c = &v["conflicts"][0];
    assert_eq!((c["stored_value"].as_f64(), c["offered_value"].as_f64(), c["source"].as_str()), (Some(2025.6), Some(690_133.4), Some("gateway gw-1, sample 2")), "{v}");
    assert!(c["received"].is_string() && c["time"].is_string(), "{c}");

    // Counted and audited.
    let metrics = client.get(format!("{url}/metrics")).bearer_auth(&bureau).send().await.unwrap().text().await.unwrap();
    let count = |name: &str, with: &str| -> f64 {
        metrics.lines().filter(|l| l.starts_with(name) && l.contains(with)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    assert_eq!(count("energyd_ingest_rejected_total", "reason=\"meter_not_assigned\""), 2.0, "{metrics}");
    assert_eq!(count("energyd_points_conflicting_total", ""), 2.0);
    let (_, v) = get(&bureau, "/api/v1/audit?limit=1000").await;
    let refused: Vec<&serde_json::Value> = v["items"].as_array().unwrap().iter().filter(|r| r["action"] == "ingest.refused").collect();
    assert_eq!(refused.len(), 2, "{v}");
    assert_eq!((refused[0]["who"].as_str(), refused[0]["detail"]["meters"][0]["meter"].as_str()), (Some("gateway two"), Some("sec-elec")));

    // The engineer corrects the reading to the offered value: the stored reading changes, the
    // conflict is settled, and the audit log keeps the value it replaced.
    let time = c["time"].as_str().unwrap();
    let ev = serde_json::json!({ "kind": "reading", "time": time, "value": 2025.7, "reason": "display read on site" });
    let (s, v) = post(&eng, "/api/v1/meters/sec-elec/events", ev.to_string().into_bytes()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["correction"]["previous"].as_f64(), v["correction"]["conflicts_resolved"].as_u64()), (Some(2025.6), Some(1)), "{v}");
    assert_eq!(values("sec-elec").await, vec![2025.7, 2026.0, 2026.5]);
    let (_, v) = get(&agency, "/api/v1/meters/sec-elec/flags").await;
    assert_eq!(v["open_conflicts"], 1, "{v}");
    let (_, v) = get(&bureau, "/api/v1/audit?limit=1000").await;
    let ev = v["items"].as_array().unwrap().iter().find(|r| r["action"] == "meter.event").cloned().unwrap_or_default();
    assert_eq!((ev["who"].as_str(), ev["detail"]["correction"]["previous"].as_f64()), (Some("eng"), Some(2025.6)), "{v}");
    // A gateway cannot correct.
    let (s, _) = post(&gw1, "/api/v1/meters/sec-elec/events", b"{}".to_vec()).await;
    assert_eq!(s, 403);
    // The agency token's metrics hold its meter's series, not the other agency's.
    let m = client.get(format!("{url}/metrics")).bearer_auth(&agency).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("meter=\"sec-elec\"") && !m.contains("meter=\"b-elec\""), "{m}");
    let m = client.get(format!("{url}/metrics")).bearer_auth(&bureau).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("meter=\"sec-elec\"") && m.contains("meter=\"b-elec\""), "{m}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
}

/// The tokens file is reloaded when it changes and on SIGHUP: a removed token is refused
/// within seconds, a broken file keeps the tokens in force. With `metrics = "open"`, a scrape
/// without a token gets no agency series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_is_refused_within_seconds_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (admin, e0) = new_token(d, &["--role", "admin", "--name", "ops"]);
    let (bureau, e1) = new_token(d, &["--role", "bureau", "--name", "bureau"]);
    let (agency, e2) = new_token(d, &["--role", "agency", "--agency", "ag-a", "--name", "officer"]);
    let (agency2, e3) = new_token(d, &["--role", "agency", "--agency", "ag-a", "--name", "officer"]);
    let file = |entries: &[&str]| entries.iter().map(|e| e.replace("[[auth.token]]", "[[token]]")).collect::<Vec<_>>().join("\n");
    std::fs::write(d.join("tokens.toml"), file(&[&e1, &e2])).unwrap();
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[auth]\ntokens_file = \"tokens.toml\"\nmetrics = \"open\"\n{e0}"),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    let client = energy_e2e::http_client();
    let status = |token: String| {
        let req = client.get(format!("{url}/api/v1/agencies")).bearer_auth(token);
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!((status(bureau.clone()).await, status(agency.clone()).await), (200, 200));
    // A reading for the agency series of /metrics.
    let now = chrono::Utc::now().timestamp_millis();
    let r = client.post(format!("{url}/api/v1/ingest")).bearer_auth(&admin).header("content-type", "application/json").body(batch("any", 1, "sec-elec", now, 1.0)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let scrape = |token: Option<String>| {
        let mut req = client.get(format!("{url}/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let anonymous = scrape(None).await;
    assert!(anonymous.contains("energyd_points_written_total") && !anonymous.contains("meter=\""), "{anonymous}");
    assert!(scrape(Some(bureau.clone())).await.contains("energyd_meter_last_reading_age_seconds{building=\"bl-a\",meter=\"sec-elec\"}"));

    // The agency token is removed from the file: refused within seconds; the others work.
    std::fs::write(d.join("tokens.toml"), file(&[&e1])).unwrap();
    let started = Instant::now();
    eventually(Duration::from_secs(20), "the removed token is refused", || {
        let s = status(agency.clone());
        async move { (s.await == 401).then_some(()) }
    })
    .await;
    println!("a removed token refused {:.1} s after the file changed", started.elapsed().as_secs_f64());
    assert_eq!(status(bureau.clone()).await, 200);

    // A broken file: the tokens in force stay, and the audit log says why.
    std::fs::write(d.join("tokens.toml"), "[[token]]\nname = \"half written").unwrap();
    let audited = |action: &'static str| {
        let req = client.get(format!("{url}/api/v1/audit?limit=1000")).bearer_auth(&admin);
        async move {
            let v: serde_json::Value = serde_json::from_slice(&req.send().await.ok()?.bytes().await.ok()?).ok()?;
            v["items"].as_array()?.iter().rev().find(|r| r["action"] == action).cloned()
        }
    };
    let failed = eventually(Duration::from_secs(20), "the broken file is reported", || audited("auth.reload_failed")).await;
    assert!(failed["detail"]["errors"].to_string().contains("tokens.toml"), "{failed}");
    assert_eq!((status(bureau.clone()).await, status(agency.clone()).await), (200, 401));

    // SIGHUP reloads even when the file looks unchanged (same size, inode and time): the agency
    // entry is back with the hash of another token.
    let fixed = file(&[&e1, &e3]);
    std::fs::write(d.join("tokens.toml"), &fixed).unwrap();
    eventually(Duration::from_secs(20), "the fixed file is in force", || {
        let s = status(agency2.clone());
        async move { (s.await == 200).then_some(()) }
    })
    .await;
    let swapped = fixed.replace(&e3[e3.find("sha256").unwrap()..], &e2[e2.find("sha256").unwrap()..]);
    assert_eq!(swapped.len(), fixed.len());
    let path = d.join("tokens.toml");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(swapped.as_bytes()).unwrap();
        f.set_modified(mtime).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(agency.clone()).await, 401, "the poll saw no change");
    daemon.signal("HUP");
    eventually(Duration::from_secs(20), "SIGHUP reloads the tokens", || {
        let (a, b) = (status(agency.clone()), status(agency2.clone()));
        async move { (a.await == 200 && b.await == 401).then_some(()) }
    })
    .await;
    let reload = audited("auth.reload").await.unwrap();
    assert_eq!(reload["detail"]["trigger"], "SIGHUP", "{reload}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
}

/// SIGHUP never stops the daemon (`systemctl reload`), with or without `[auth]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_auth_changes_nothing_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.signal("HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = energy_e2e::http_client().get(format!("{url}/healthz")).send().await.expect("still serving after SIGHUP");
    assert_eq!(r.status().as_u16(), 200);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
}
