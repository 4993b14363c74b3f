//! The InfluxDB storage backend against real servers, each started here on free loopback ports
//! with its own data directory (removed with the test's temporary directory):
//!
//! - `influxd` (InfluxDB 1.x, Debian package `influxdb`): the v1 write path and InfluxQL reads,
//!   the documented schema queried directly, an outage (spool, then drain, every point once) and
//!   a full spool (503, nothing lost);
//! - `victoria-metrics` (package `victoria-metrics`): the v2 write path with a token, read back
//!   through its export API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use energy_e2e::{eventually, free_port, get_json, http_client, listening_url, q, Proc};
use serde_json::{json, Value};

const MINUTE: i64 = 60_000;

fn binary(name: &str, package: &str) -> PathBuf {
    for d in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install the Debian package `{package}` (tests/run.sh does)");
}

/// A server child process on a loopback port, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    bin: PathBuf,
    ready_path: &'static str,
}

impl Server {
    /// `influxd` with its meta, data and WAL directories under `dir`.
    fn influxd(dir: &Path) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let (port, rpc) = (free_port(), free_port());
        let d = dir.display();
        let conf = dir.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\ndir = \"{d}/meta\"\n[data]\ndir = \"{d}/data\"\nwal-dir = \"{d}/wal\"\n\
                 query-log-enabled = false\n[http]\nbind-address = \"127.0.0.1:{port}\"\nlog-enabled = false\n[monitor]\nstore-enabled = false\n\
                 [continuous_queries]\nenabled = false\n"
            ),
        )
        .unwrap();
        let mut s = Server {
            child: None,
            port,
            args: vec!["run".into(), "-config".into(), conf.display().to_string()],
            bin: binary("influxd", "influxdb"),
            ready_path: "/ping",
        };
        s.start();
        s
    }

    /// `victoria-metrics` with its storage under `dir`, keeping everything.
    fn victoria(dir: &Path) -> Server {
        let port = free_port();
        let mut s = Server {
            child: None,
            port,
            args: vec![
                format!("-storageDataPath={}", dir.display()),
                format!("-httpListenAddr=127.0.0.1:{port}"),
                "-retentionPeriod=100y".into(),
                "-loggerLevel=ERROR".into(),
            ],
            bin: binary("victoria-metrics", "victoria-metrics"),
            ready_path: "/health",
        };
        s.start();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again, on the same port and data) and waits until it answers.
    fn start(&mut self) {
        let child = Command::new(&self.bin).args(&self.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!("GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", self.ready_path);
                let mut buf = [0u8; 12];
                s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") && buf[9] == b'2'
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "{} did not answer on port {}", self.bin.display(), self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs InfluxQL on influxd; the JSON answer.
async fn influxql(influx: &str, stmt: &str) -> Value {
    let url = reqwest::Url::parse_with_params(&format!("{influx}/query"), [("db", "energy"), ("q", stmt), ("epoch", "ms")]).unwrap();
    let r = http_client().post(url).send().await.expect("influxd /query");
    let status = r.status();
    let v: Value = serde_json::from_slice(&r.bytes().await.expect("influxd answer")).expect("JSON from influxd");
    assert!(status.is_success() && v["results"][0]["error"].is_null(), "{stmt}: {status} {v}");
    v
}

/// The (time, value) rows of the first series of the first statement.
async fn influx_rows(influx: &str, stmt: &str) -> Vec<(i64, f64)> {
    let v = influxql(influx, stmt).await;
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| Some((r[0].as_i64()?, r[1].as_f64()?))).collect())
        .unwrap_or_default()
}

fn write_registry(dir: &Path) {
    std::fs::write(
        dir.join("registry.toml"),
        "[[agency]]\nid = \"ag\"\nname = \"机关\"\nlevel = \"county\"\n\n\
         [[building]]\nid = \"bx\"\nname = \"B\"\nfloor_area = 1000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n\n\
         [[meter]]\nid = \"e1\"\nbuilding = \"bx\"\ncarrier = \"electricity\"\n\n\
         [[meter]]\nid = \"w1\"\nbuilding = \"bx\"\ncarrier = \"water\"\nagency = \"ag\"\n",
    )
    .unwrap();
}

fn start_energyd(dir: &Path, storage: &str) -> (Proc, String) {
    write_registry(dir);
    std::fs::write(dir.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n{storage}")).unwrap();
    let mut p = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], dir);
    let url = listening_url(&p.wait_line("listening on", Duration::from_secs(30)));
    (p, url)
}

/// A gateway batch of `n` one-minute samples of meter e1 from `t0`, sequence from `seq`.
fn batch(seq: u64, t0: i64, n: i64) -> (Value, Vec<(i64, f64, f64)>) {
    let rows: Vec<(i64, f64, f64)> = (0..n)
        .map(|i| {
            let k = seq as i64 - 1 + i;
            (t0 + k * MINUTE, 1000.0 + k as f64 * 0.25, 40.0 + (k % 7) as f64 * 1.5)
        })
        .collect();
    let samples: Vec<Value> = rows.iter().map(|(t, e, p)| json!({"meter": "e1", "t": t, "v": {"active_energy_import": e, "active_power": p}})).collect();
    (json!({"schema": 1, "gateway": "gw", "seq": seq, "samples": samples}), rows)
}

async fn post_batch(url: &str, b: &Value) -> (u16, Value) {
    let r = http_client()
        .post(format!("{url}/api/v1/ingest"))
        .header("content-type", "application/json")
        .body(b.to_string())
        .send()
        .await
        .expect("POST /api/v1/ingest");
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null))
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = http_client().get(format!("{url}/metrics")).send().await.expect("GET /metrics").text().await.unwrap_or_default();
    text.lines().find(|l| l.split_whitespace().next() == Some(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(f64::NAN)
}

async fn series(url: &str, meter: &str, quantity: &str, from: i64, to: i64, extra: &str) -> (u16, Vec<(i64, f64)>, Value) {
    let rfc = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let (status, v) = get_json(&format!("{url}/api/v1/series?meter={meter}&quantity={quantity}&from={}&to={}{extra}", q(&rfc(from)), q(&rfc(to)))).await;
    let pts = v["points"]
        .as_array()
        .map(|a| a.iter().map(|p| (chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap().timestamp_millis(), p["v"].as_f64().unwrap())).collect())
        .unwrap_or_default();
    (status, pts, v)
}

/// Two hours ago, on a minute.
fn start_time() -> i64 {
    (chrono::Utc::now().timestamp_millis() - 2 * 3_600_000).div_euclid(MINUTE) * MINUTE
}

fn v1_storage(influx: &str, extra: &str) -> String {
    format!(
        "[storage]\nbackend = \"influxdb\"\n[storage.influxdb]\nurl = \"{influx}\"\napi = \"v1\"\ndatabase = \"energy\"\nflush_interval_ms = 100\nretry_min_ms = 50\nretry_max_ms = 400\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_writes_follow_the_documented_schema_and_series_read_back_through_influxql() {
    let dir = tempfile::tempdir().unwrap();
    let influxd = Server::influxd(&dir.path().join("influxd"));
    let influx = influxd.url();
    influxql(&influx, "CREATE DATABASE energy").await;
    let (_daemon, url) = start_energyd(dir.path(), &v1_storage(&influx, ""));

    let t0 = start_time();
    let (b, rows) = batch(1, t0, 60);
    let (status, v) = post_batch(&url, &b).await;
    assert_eq!(status, 200, "{v}");
    // Line protocol too: meter w1 (a water sub-meter of agency ag).
    let lp: String = (0..30).map(|i| format!("energy,meter=w1 water_volume={} {}\n", 10.0 + i as f64 * 0.01, t0 + i * MINUTE)).collect();
    let r = http_client().post(format!("{url}/write?db=energy&precision=ms")).body(lp).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);

    // Everything reaches influxd.
    let expected = (60 * 2 + 30) as f64;
    eventually(Duration::from_secs(30), "all points forwarded", || async { (metric(&url, "energyd_forward_points_total").await == expected).then_some(()) }).await;
    assert_eq!(metric(&url, "energyd_forward_spool_points").await, 0.0);

    // The schema, as documented: measurement energy, tags meter/building/carrier (+ agency for
    // a sub-meter), one float field per quantity, millisecond times.
    let tags = influxql(&influx, "SHOW TAG KEYS FROM energy").await;
    let keys: Vec<&str> = tags["results"][0]["series"][0]["values"].as_array().unwrap().iter().filter_map(|r| r[0].as_str()).collect();
    assert_eq!(keys, vec!["agency", "building", "carrier", "meter"]);
    let fields = influxql(&influx, "SHOW FIELD KEYS FROM energy").await;
    let fields: BTreeMap<&str, &str> = fields["results"][0]["series"][0]["values"].as_array().unwrap().iter().map(|r| (r[0].as_str().unwrap(), r[1].as_str().unwrap())).collect();
    assert_eq!(fields, BTreeMap::from([("active_energy_import", "float"), ("active_power", "float"), ("water_volume", "float")]));
    let tagged = influxql(&influx, "SELECT active_power, building, carrier FROM energy WHERE meter = 'e1' LIMIT 1").await;
    let row = &tagged["results"][0]["series"][0]["values"][0];
    assert_eq!((row[0].as_i64(), row[1].as_f64(), row[2].as_str(), row[3].as_str()), (Some(t0), Some(rows[0].2), Some("bx"), Some("electricity")), "{tagged}");
    let direct = influx_rows(&influx, &format!("SELECT active_energy_import FROM energy WHERE meter = 'e1' AND time >= {t0}ms")).await;
    assert_eq!(direct, rows.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    let water = influx_rows(&influx, "SELECT water_volume FROM energy WHERE meter = 'w1' AND agency = 'ag' AND carrier = 'water'").await;
    assert_eq!(water.len(), 30);

    // Raw series through the API (InfluxQL), equal to what was sent.
    let to = t0 + 60 * MINUTE;
    let (status, pts, v) = series(&url, "e1", "active_power", t0, to, "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(pts, rows.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>());
    // Stepped (GROUP BY time), buckets from `from`, which is not on a step boundary here.
    let from = t0 + 7 * MINUTE;
    for agg in ["mean", "max", "min", "first", "last", "sum", "count"] {
        let (status, got, v) = series(&url, "e1", "active_power", from, to, &format!("&step=15m&agg={agg}")).await;
        assert_eq!(status, 200, "{v}");
        let mut want: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.0 >= from && r.0 < to) {
            want.entry(from + (r.0 - from) / (15 * MINUTE) * 15 * MINUTE).or_default().push(r.2);
        }
        let want: Vec<(i64, f64)> = want
            .into_iter()
            .map(|(k, vs)| {
                let x = match agg {
                    "mean" => vs.iter().sum::<f64>() / vs.len() as f64,
                    "max" => vs.iter().copied().fold(f64::MIN, f64::max),
                    "min" => vs.iter().copied().fold(f64::MAX, f64::min),
                    "first" => vs[0],
                    "last" => vs[vs.len() - 1],
                    "sum" => vs.iter().sum(),
                    _ => vs.len() as f64,
                };
                (k, x)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{agg}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.0 == w.0 && (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0), "{agg}: {got:?} vs {want:?}");
        }
    }
    // Consumption from the local roll-ups, unchanged.
    let hour = t0.div_euclid(3_600_000) * 3_600_000;
    let rfc = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let (status, c) = get_json(&format!("{url}/api/v1/consumption?meter=e1&from={}&to={}&interval=hour", q(&rfc(hour)), q(&rfc(hour + 3 * 3_600_000)))).await;
    assert_eq!(status, 200, "{c}");
    let total = c["carriers"][0]["total"].as_f64().unwrap();
    assert!((total - (rows[59].1 - rows[0].1)).abs() < 1e-9, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxd_down_spools_up_to_the_bound_then_503_and_the_drain_stores_every_point_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut influxd = Server::influxd(&dir.path().join("influxd"));
    let influx = influxd.url();
    influxql(&influx, "CREATE DATABASE energy").await;
    let (mut daemon, url) = start_energyd(dir.path(), &v1_storage(&influx, "max_spool_bytes = 16384\n"));
    let t0 = start_time();

    let (b, mut sent) = batch(1, t0, 10);
    assert_eq!(post_batch(&url, &b).await.0, 200);
    eventually(Duration::from_secs(30), "first batch forwarded", || async { (metric(&url, "energyd_forward_points_total").await == 20.0).then_some(()) }).await;

    // The database goes away: ingest is still acknowledged (spooled) until the bound.
    influxd.stop();
    let mut seq = 11u64;
    let refused = loop {
        let (b, rows) = batch(seq, t0, 10);
        let (status, v) = post_batch(&url, &b).await;
        match status {
            200 => {
                sent.extend(rows);
                seq += 10;
            }
            503 => break (b, rows, v),
            other => panic!("unexpected {other}: {v}"),
        }
        assert!(seq < 2000, "the spool never filled");
    };
    let (refused, refused_rows, why) = refused;
    assert!(why["error"].as_str().unwrap_or_default().contains("spool"), "{why}");
    assert!(sent.len() > 10, "nothing was spooled before the bound: {}", sent.len());
    assert!(metric(&url, "energyd_forward_spool_bytes").await >= 16384.0);
    // The forwarder's next attempt after the stop may come after the spool filled.
    eventually(Duration::from_secs(30), "a connect error counted", || async { (metric(&url, "energyd_forward_errors_total{kind=\"connect\"}").await >= 1.0).then_some(()) }).await;
    assert!(metric(&url, "energyd_forward_lag_seconds").await > 0.0);
    // Raw reads need the database: a clear 503, not a wrong answer.
    let (status, _, v) = series(&url, "e1", "active_power", t0, t0 + 3_600_000, "").await;
    assert_eq!(status, 503, "{v}");

    // The spool is part of the local store's commit: a daemon killed now keeps it.
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10));
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], dir.path());
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    assert!(metric(&url, "energyd_forward_spool_bytes").await >= 16384.0, "the spool survives a SIGKILL");
    assert_eq!(post_batch(&url, &refused).await.0, 503, "still full after the restart");

    // Back: the spool drains, and the gateway's resend of the refused batch is stored.
    influxd.start();
    eventually(Duration::from_secs(60), "spool drained", || async { (metric(&url, "energyd_forward_spool_points").await == 0.0).then_some(()) }).await;
    let (status, v) = post_batch(&url, &refused).await;
    assert_eq!(status, 200, "{v}");
    sent.extend(refused_rows);
    // A duplicate resend changes nothing.
    let (status, v) = post_batch(&url, &refused).await;
    assert_eq!((status, v["samples_duplicate"].as_u64()), (200, Some(10)), "{v}");
    eventually(Duration::from_secs(30), "spool drained again", || async { (metric(&url, "energyd_forward_spool_points").await == 0.0).then_some(()) }).await;

    // Every acknowledged point is in influxd, once, with its value.
    let want_e: Vec<(i64, f64)> = sent.iter().map(|r| (r.0, r.1)).collect();
    let want_p: Vec<(i64, f64)> = sent.iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(influx_rows(&influx, "SELECT active_energy_import FROM energy WHERE meter = 'e1'").await, want_e);
    assert_eq!(influx_rows(&influx, "SELECT active_power FROM energy WHERE meter = 'e1'").await, want_p);
    let count = influx_rows(&influx, "SELECT count(active_power) FROM energy WHERE meter = 'e1'").await;
    assert_eq!(count[0].1, sent.len() as f64);
    // This daemon forwarded what was spooled before the kill plus the resent batch.
    assert_eq!(metric(&url, "energyd_forward_points_total").await, (2 * (sent.len() - 10)) as f64);
    daemon.drain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_influxd_refuses_is_counted_and_does_not_block_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let influxd = Server::influxd(&dir.path().join("influxd"));
    let influx = influxd.url();
    influxql(&influx, "CREATE DATABASE energy").await;
    let t0 = start_time();
    // Someone else wrote active_power as an integer: our float lines for it conflict.
    let r = http_client().post(format!("{influx}/write?db=energy&precision=ms")).body(format!("energy,meter=other active_power=1i {t0}\n")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_daemon, url) = start_energyd(dir.path(), &v1_storage(&influx, ""));
    let (b, _) = batch(1, t0, 5);
    assert_eq!(post_batch(&url, &b).await.0, 200);
    eventually(Duration::from_secs(30), "refused lines counted", || async { (metric(&url, "energyd_forward_rejected_lines_total").await == 5.0).then_some(()) }).await;
    // The next write goes through: the refused one did not block the spool.
    let lp: String = (0..3).map(|i| format!("energy,meter=w1 water_volume={} {}\n", 10.0 + i as f64, t0 + i * MINUTE)).collect();
    let r = http_client().post(format!("{url}/write?db=energy&precision=ms")).body(lp).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    eventually(Duration::from_secs(30), "spool drained", || async { (metric(&url, "energyd_forward_spool_points").await == 0.0).then_some(()) }).await;
    assert_eq!(influx_rows(&influx, "SELECT water_volume FROM energy WHERE meter = 'w1'").await.len(), 3);
    assert!(metric(&url, "energyd_forward_errors_total{kind=\"rejected\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_takes_the_v2_write_with_a_token_and_exports_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let vm = Server::victoria(&dir.path().join("vm"));
    let storage = format!(
        "[storage]\nbackend = \"influxdb\"\n[storage.influxdb]\nurl = \"{}\"\napi = \"v2\"\norg = \"bureau\"\nbucket = \"energy\"\ntoken = \"not-a-real-token\"\nread = \"local\"\nflush_interval_ms = 100\n",
        vm.url()
    );
    let (_daemon, url) = start_energyd(dir.path(), &storage);
    let t0 = start_time();
    let (b, rows) = batch(1, t0, 30);
    assert_eq!(post_batch(&url, &b).await.0, 200);
    eventually(Duration::from_secs(30), "points forwarded", || async { (metric(&url, "energyd_forward_points_total").await == 60.0).then_some(()) }).await;

    // VictoriaMetrics names the series <measurement>_<field>, with the tags as labels.
    let client = http_client();
    let exported: Vec<Value> = eventually(Duration::from_secs(30), "series exported", || {
        let client = client.clone();
        let vm = vm.url();
        async move {
            let _ = client.get(format!("{vm}/internal/force_flush")).send().await;
            let export = reqwest::Url::parse_with_params(&format!("{vm}/api/v1/export"), [("match[]", "{__name__=~\"energy_.*\",meter=\"e1\"}")]).ok()?;
            let text = client.get(export).send().await.ok()?.text().await.ok()?;
            let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            let n: usize = lines.iter().map(|l| l["values"].as_array().map_or(0, Vec::len)).sum();
            (n == 60).then_some(lines)
        }
    })
    .await;
    for l in &exported {
        let m = &l["metric"];
        assert_eq!((m["building"].as_str(), m["carrier"].as_str()), (Some("bx"), Some("electricity")), "{l}");
        let ts: Vec<i64> = l["timestamps"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
        let vs: Vec<f64> = l["values"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
        let want: Vec<(i64, f64)> = match m["__name__"].as_str() {
            Some("energy_active_energy_import") => rows.iter().map(|r| (r.0, r.1)).collect(),
            Some("energy_active_power") => rows.iter().map(|r| (r.0, r.2)).collect(),
            other => panic!("unexpected series {other:?}"),
        };
        assert_eq!(ts.into_iter().zip(vs).collect::<Vec<_>>(), want);
    }
    // read = "local": the series API answers from the local store.
    let (status, pts, v) = series(&url, "e1", "active_power", t0, t0 + 3_600_000, "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(pts, rows.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>());
}
