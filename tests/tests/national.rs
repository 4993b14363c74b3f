//! The national building-energy monitoring protocol (issue 21) against the real `energyd`: a
//! collector emulator of its own (tests/src/national.rs; both framings, plain and AES-128-CBC)
//! passes the identity check, sends heartbeats and reports (multi-packet), the daemon is killed
//! (SIGKILL) with a packet unacknowledged, and after the restart the collector resends its
//! backlog as `continuous` (overlapping what was acknowledged): every reading is stored exactly
//! once. A wrong MD5 is refused, counted and audited; a value no registry meter takes is stored
//! and listed as unassigned.

use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Timelike};
use energy_e2e::national::{Collector, Framing, Value};
use energy_e2e::{eventually, free_port, get_json, listening_url, metric_sum, q, Proc};

const AES_KEY: &[u8; 16] = b"0123456789abcdef";
const AES_IV: &[u8; 16] = b"fedcba9876543210";

fn write_files(dir: &Path, framing: &str, port: u16) {
    let reg = r#"
[[agency]]
id = "ag"
name = "测试机关"
level = "county"

[[building]]
id = "bx"
name = "一号楼"
national_id = "110101A001"
floor_area = 5000.0
occupants = [ { agency = "ag", share = 1.0 } ]

[[building]]
id = "by"
name = "二号楼"
national_id = "110101A002"
floor_area = 3000.0
occupants = [ { agency = "ag", share = 1.0 } ]

[[meter]]
id = "n-light"
building = "bx"
carrier = "electricity"
item_code = "01A00"
collector = "110101A001"
collector_meter = "1"
function = "1"

[[meter]]
id = "n-hvac"
building = "bx"
carrier = "electricity"
item_code = "01B00"
collector = "110101A001"
collector_meter = "2"

[[meter]]
id = "n-water"
building = "bx"
carrier = "water"
item_code = "02000"
collector = "110101A001"
collector_meter = "3"

[[meter]]
id = "n-aes"
building = "by"
carrier = "electricity"
item_code = "01C00"
collector = "110101A002"
collector_meter = "1"
"#;
    std::fs::write(dir.join("registry.toml"), reg).unwrap();
    let keys = format!(
        "[[collector]]\nbuilding = \"110101A001\"\nkey = \"key-one\"\n\n[[collector]]\nbuilding = \"110101A002\"\nkey = \"key-two\"\naes_key = \"{}\"\naes_iv = \"{}\"\n",
        std::str::from_utf8(AES_KEY).unwrap(),
        std::str::from_utf8(AES_IV).unwrap()
    );
    let kf = dir.join("collector-keys.toml");
    std::fs::write(&kf, keys).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[collector]\nlisten = \"127.0.0.1:{port}\"\nframing = \"{framing}\"\nkeys_file = \"collector-keys.toml\"\nquery_hours = 2\n"),
    )
    .unwrap();
}

fn start(dir: &Path) -> (Proc, String) {
    let mut d = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], dir);
    let url = listening_url(&d.wait_line("energyd listening on", Duration::from_secs(60)));
    d.wait_line("collector port listening", Duration::from_secs(30));
    (d, url)
}

/// Quarter-hours: `n` local times (Shanghai) ending one quarter before now, `YYYYMMDDHHmmss`,
/// with their UTC milliseconds.
fn quarters(n: usize) -> Vec<(String, i64)> {
    let tz = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let now = chrono::Utc::now().with_timezone(&tz);
    let q0 = now.with_second(0).unwrap().with_nanosecond(0).unwrap().with_minute(now.minute() / 15 * 15).unwrap();
    (1..=n).rev().map(|k| q0 - chrono::Duration::minutes(15 * k as i64)).map(|t| (t.format("%Y%m%d%H%M%S").to_string(), t.timestamp_millis())).map(|(s, ms)| (s, tz.timestamp_millis_opt(ms).unwrap().timestamp_millis())).collect()
}

/// The values of quarter `i` of collector one: light (meter 1 function 1), a second function
/// of meter 1 that no registry meter takes, HVAC (meter 2's only function), water (meter 3).
fn values_one(i: usize) -> Vec<Value> {
    let v = |meter: &str, function: &str, coding: &str, value: f64| Value { meter: meter.into(), function: function.into(), coding: coding.into(), value };
    vec![v("1", "1", "01A00", 1000.0 + 2.5 * i as f64), v("1", "2", "01A00", 7.0 + i as f64), v("2", "1", "01B00", 500.0 + 4.0 * i as f64), v("3", "1", "02000", 20.0 + 0.25 * i as f64)]
}

fn values_two(i: usize) -> Vec<Value> {
    vec![Value { meter: "1".into(), function: "1".into(), coding: "01C00".into(), value: 300.0 + 1.5 * i as f64 }]
}

async fn stored(url: &str, meter: &str, quantity: &str) -> Vec<(i64, f64)> {
    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(6)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    let (_, v) = get_json(&format!("{url}/api/v1/series?meter={meter}&quantity={quantity}&from={}&to={}", q(&from), q(&to))).await;
    v["points"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| Some((chrono::DateTime::parse_from_rfc3339(p["t"].as_str()?).ok()?.timestamp_millis(), p["v"].as_f64()?))).collect())
        .unwrap_or_default()
}

/// A collector past the identity check, and the centre's query that follows it
/// (`query_hours = 2`: the last two hours, `YYYYMMDDHHmmss` in Shanghai time).
async fn logged_in(addr: &str, framing: Framing, aes: bool, building: &str, key: &str) -> Collector {
    let a = aes.then_some((*AES_KEY, *AES_IV));
    let mut c = Collector::connect(addr, framing, a, building, "01").await.unwrap();
    assert!(c.login(key).await.unwrap(), "{building} should pass the identity check");
    let query = c.recv().await.unwrap();
    assert!(query.contains("operation=\"query\""), "{query}");
    let (start, end) = (energy_e2e::national::tag(&query, "start_time").unwrap(), energy_e2e::national::tag(&query, "end_time").unwrap());
    let parse = |t: &str| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%d%H%M%S").unwrap_or_else(|e| panic!("`{t}` in the query: {e}"));
    assert_eq!((parse(end) - parse(start)).num_minutes(), 120, "{query}");
    c
}

async fn run(framing_name: &str, framing: Framing) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    write_files(d, framing_name, port);
    let addr = format!("127.0.0.1:{port}");
    let (mut daemon, url) = start(d);
    let qs = quarters(12);

    // Identity, heartbeat (the centre's clock, Shanghai time, within minutes of ours).
    let mut one = logged_in(&addr, framing, false, "110101A001", "key-one").await;
    let mut two = logged_in(&addr, framing, true, "110101A002", "key-two").await;
    let t = one.heartbeat().await.unwrap();
    let centre = chrono::NaiveDateTime::parse_from_str(&t, "%Y%m%d%H%M%S").unwrap_or_else(|e| panic!("heartbeat time `{t}`: {e}"));
    let ours = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
    assert!((centre - ours).num_seconds().abs() < 300, "centre time {centre} vs {ours}");
    assert_eq!(two.heartbeat().await.unwrap().len(), 14);

    // The centre's query answered with a reply (quarter 0's values): stored, acknowledged.
    let acks = one.report("reply", 0, &qs[0].0, &values_one(0), 1).await.unwrap();
    assert!(acks[0].contains("continuous_ack"), "{acks:?}");
    // Quarters 0..6 reported (quarter 0 again: nothing stored twice) and acknowledged, in two
    // packets each.
    for (i, (time, _)) in qs.iter().enumerate().take(6) {
        let acks = one.report("report", i as u32, time, &values_one(i), 2).await.unwrap();
        assert_eq!(acks.len(), 2);
        assert!(acks.iter().all(|a| a.contains("report_ack") && a.contains("<ack>pass</ack>")), "{acks:?}");
        let acks = two.report("report", i as u32, time, &values_two(i), 1).await.unwrap();
        assert!(acks[0].contains("report_ack"), "{acks:?}");
    }
    // Quarter 6 sent, and the daemon killed before the collector reads the acknowledgement: the
    // collector keeps it in its backlog.
    one.send("report", &format!("<data operation=\"report\"><sequence>6</sequence><time>{}</time><meter id=\"1\"><function id=\"1\" coding=\"01A00\">{}</function></meter></data>", qs[6].0, values_one(6)[0].value)).await.unwrap();
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(30));
    drop(one);
    drop(two);

    // Restart; the collectors resend their backlog (from quarter 5: one acknowledged quarter
    // again, as a collector unsure of its last answer does) as continued reports.
    drop(url);
    let (mut daemon, url) = start(d);
    let mut one = logged_in(&addr, framing, false, "110101A001", "key-one").await;
    let mut two = logged_in(&addr, framing, true, "110101A002", "key-two").await;
    for (i, (time, _)) in qs.iter().enumerate().skip(5) {
        let acks = one.report("continuous", i as u32, time, &values_one(i), 3).await.unwrap();
        assert!(acks.iter().all(|a| a.contains("continuous_ack")), "{acks:?}");
        two.report("continuous", i as u32, time, &values_two(i), 1).await.unwrap();
    }

    // Every reading exactly once, at its time, with its value.
    for (meter, quantity, f) in [
        ("n-light", "active_energy_import", Box::new(|i| values_one(i)[0].value) as Box<dyn Fn(usize) -> f64>),
        ("n-hvac", "active_energy_import", Box::new(|i| values_one(i)[2].value)),
        ("n-water", "water_volume", Box::new(|i| values_one(i)[3].value)),
        ("n-aes", "active_energy_import", Box::new(|i| values_two(i)[0].value)),
        ("110101A001.1.2", "active_energy_import", Box::new(|i| values_one(i)[1].value)),
    ] {
        let want: Vec<(i64, f64)> = qs.iter().enumerate().map(|(i, (_, ms))| (*ms, f(i))).collect();
        let got = eventually(Duration::from_secs(30), &format!("{meter} stored"), || async { let g = stored(&url, meter, quantity).await; (g.len() >= want.len()).then_some(g) }).await;
        assert_eq!(got, want, "{meter}: every reading exactly once");
    }

    // The value no registry meter takes is listed as unassigned (and as a meter not in the registry).
    let (_, c) = get_json(&format!("{url}/api/v1/collectors")).await;
    let un = c["unassigned"].as_array().unwrap();
    assert!(un.iter().any(|u| u["stored_as"] == "110101A001.1.2" && u["function"] == "2"), "{c}");
    let (_, m) = get_json(&format!("{url}/api/v1/meters")).await;
    assert!(m["unassigned"].to_string().contains("110101A001.1.2"), "{m}");

    // A wrong MD5: refused (fail, connection closed), counted, audited.
    let mut bad = Collector::connect(&addr, framing, None, "110101A001", "01").await.unwrap();
    assert!(!bad.login("not-the-key").await.unwrap());
    assert!(bad.recv().await.is_err(), "the centre closes the connection after a failed identity check");
    let (_, text) = eventually(Duration::from_secs(10), "refusal counted", || async {
        let r = energy_e2e::http_client().get(format!("{url}/metrics")).send().await.ok()?;
        let t = r.text().await.ok()?;
        (metric_sum(&t, "energyd_collector_identity_refused_total") >= 1.0).then_some(((), t))
    })
    .await;
    assert!(metric_sum(&text, "energyd_collector_unassigned_meters") >= 1.0);
    let (_, audit) = get_json(&format!("{url}/api/v1/audit")).await;
    assert!(audit.to_string().contains("wrong MD5") && audit.to_string().contains("collector 110101A001/01"), "{audit}");
    // Guessing keys: after 10 failed identity checks in a minute, the address is cut off, the
    // right key included, until the minute is over.
    for _ in 0..10 {
        if let Ok(mut g) = Collector::connect(&addr, framing, None, "110101A001", "01").await {
            assert!(!matches!(g.login("guess").await, Ok(true)));
        }
    }
    let mut right = Collector::connect(&addr, framing, None, "110101A001", "01").await.unwrap();
    assert!(right.login("key-one").await.is_err(), "a barred address is cut off even with the right key");
    assert!(metric_sum(&energy_e2e::http_client().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap(), "energyd_collector_sessions_closed_total{reason=\"too_many_identity_failures\"}") >= 1.0);
    drop(one);
    drop(two);
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guideline_framing_collectors_plain_and_aes_every_reading_once_across_a_kill() {
    run("guideline", Framing::Guideline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_8bae9b_framing_collectors_plain_and_aes_every_reading_once_across_a_kill() {
    run("8bae9b", Framing::Node).await;
}

/// The collector port over TLS (`tls_cert_file` / `tls_key_file`, the HTTP server's loader): a
/// collector that trusts the certificate passes the identity check and its report is stored; a
/// plain TCP client gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_port_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    write_files(d, "guideline", port);
    let st = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "tls.key", "-out", "tls.crt", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .current_dir(d)
        .output()
        .expect("openssl (Debian package `openssl`)");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let cfg = std::fs::read_to_string(d.join("energyd.toml")).unwrap();
    std::fs::write(d.join("energyd.toml"), format!("{cfg}tls_cert_file = \"tls.crt\"\ntls_key_file = \"tls.key\"\n")).unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("energyd listening on", Duration::from_secs(60)));
    let line = daemon.wait_line("collector port listening", Duration::from_secs(30));
    assert!(line.contains("tls://"), "{line}");
    let addr = format!("127.0.0.1:{port}");
    let mut c = Collector::connect_tls(&addr, &d.join("tls.crt"), Framing::Guideline, "110101A001", "01").await.unwrap();
    assert!(c.login("key-one").await.unwrap());
    assert!(c.recv().await.unwrap().contains("operation=\"query\""));
    let qs = quarters(1);
    let acks = c.report("report", 1, &qs[0].0, &values_one(0), 1).await.unwrap();
    assert!(acks[0].contains("report_ack"), "{acks:?}");
    let got = eventually(Duration::from_secs(30), "stored over TLS", || async { let g = stored(&url, "n-light", "active_energy_import").await; (!g.is_empty()).then_some(g) }).await;
    assert_eq!(got, vec![(qs[0].1, values_one(0)[0].value)]);
    // Plain TCP on the TLS port: the handshake fails, nothing is answered.
    let mut plain = Collector::connect(&addr, Framing::Guideline, None, "110101A001", "01").await.unwrap();
    assert!(plain.login("key-one").await.is_err());
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(60));
}
