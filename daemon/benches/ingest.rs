//! Ingest, storage and consumption-query benchmark: energyd (embedded store) against InfluxDB 1.x
//! (`influxd`, Debian package `influxdb`) and VictoriaMetrics (`victoria-metrics`, package
//! `victoria-metrics`), each started here on a free loopback port with its own data directory,
//! fed the same line-protocol file, in one run. Prints one table side by side.
//!
//! ```sh
//! BENCH_METERS=1000 BENCH_DAYS=2 cargo bench -p energyd --bench ingest
//! ```
//!
//! * Data: `BENCH_METERS` meters x 10 quantities (4 counters rising with two decimals, 6 gauges)
//!   at one reading per minute for `BENCH_DAYS` whole UTC days ending yesterday; one line per
//!   meter and minute, 10 fields each (10 points).
//! * Ingest: the file in requests of `BENCH_LINES` lines (default 5000), 4 at a time, each
//!   answered 2xx before it counts. energyd and influxd answer after an fsync; VictoriaMetrics
//!   answers from memory and flushes within about a second (its figure is not "durable").
//! * Bytes per point: the data files after compaction (energyd: its point store, `energyd.sqlite`
//!   and WAL, after `POST /api/v1/store/compact`; the whole directory, with the accounting cache
//!   of figures per meter and year, is printed too;
//!   VictoriaMetrics: `/internal/force_flush` and `/internal/force_merge`; influxd: its cold
//!   compaction, configured to start after 5-10 s, waited for until the size is stable).
//! * Query: hourly consumption of every meter's `active_energy_import` over the month holding
//!   the data; best of 5. energyd: `/api/v1/consumption?agency=..&interval=hour` (interpolated
//!   boundaries, all meters); influxd: `difference(last())` per hour and meter (InfluxQL);
//!   VictoriaMetrics: `increase(...[1h])` per meter, step 1h (PromQL).
//! * Peak memory: `VmHWM` of each server process at the end.
//! * The InfluxDB backend (`BENCH_ONLY=forward`, also part of the default run): a fresh influxd,
//!   the file written straight to it (database `direct`), then the same file through energyd with
//!   `[storage] backend = "influxdb"` (database `bench`): the rate energyd acknowledges (local
//!   commit with the spool) and the end-to-end rate until the spool is empty, i.e. every point
//!   accepted by influxd. Printed as a second table.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000;

fn env_num(k: &str, default: i64) -> i64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A server process, killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        kb / 1024.0
    }
}

fn which(bin: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` not found: install the Debian package `{package}` (apt-get install -y {package})");
}

async fn wait_up(url: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}{path}")).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url}{path} did not come up within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_bytes(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

/// Prints each file of a data directory with its size.
fn list_files(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => list_files(&e.path()),
                Ok(m) => println!("  {:>12} bytes  {}", m.len(), e.path().display()),
                Err(_) => {}
            }
        }
    }
}

/// Writes the line-protocol file; returns (path, points, first ms, end ms).
fn generate(dir: &Path, meters: i64, days: i64) -> (PathBuf, u64, i64, i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let end = now.div_euclid(DAY) * DAY - DAY;
    let start = end - days * DAY;
    let path = dir.join("meters.lp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut counters: Vec<[i64; 4]> = (0..meters).map(|m| [1_000_000 + m * 137, 50_000 + m, 20_000 + m * 3, 1_000 + m]).collect();
    let mut points = 0u64;
    let mut t = start;
    let mut k = 0u64;
    while t < end {
        for (m, c) in counters.iter_mut().enumerate() {
            // A cheap deterministic wiggle per meter and minute.
            k = k.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = (k >> 33) as i64;
            c[0] += 20 + r % 40;
            c[1] += r % 3;
            c[2] += 5 + r % 10;
            c[3] += r % 2;
            let p = 10 + r % 300;
            writeln!(
                f,
                "energy,meter=bm{m:04} active_energy_import={}.{:02},active_energy_export={}.{:02},reactive_energy_import={}.{:02},reactive_energy_export={}.{:02},\
                 active_power={}.{},reactive_power={}.{},voltage_l1={}.{},current_l1={}.{},power_factor=0.{:02},frequency=49.{} {t}",
                c[0] / 100, c[0] % 100, c[1] / 100, c[1] % 100, c[2] / 100, c[2] % 100, c[3] / 100, c[3] % 100,
                p / 10, p % 10, p / 40, r % 10, 2200 + r % 200, r % 10, p / 2, r % 10, 80 + r % 19, 90 + r % 10
            )
            .unwrap();
            points += 10;
        }
        t += 60_000;
    }
    f.flush().unwrap();
    (path, points, start, end)
}

/// Posts the file in bodies of `lines` lines, `parallel` at a time; returns points per second.
async fn ingest(file: &Path, url: &str, lines: usize, points: u64) -> f64 {
    let client = reqwest::Client::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(8);
    let reader = {
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut body = String::new();
            let mut n = 0;
            for line in BufReader::new(std::fs::File::open(file).unwrap()).lines() {
                body.push_str(&line.unwrap());
                body.push('\n');
                n += 1;
                if n == lines {
                    if tx.blocking_send(std::mem::take(&mut body)).is_err() {
                        return;
                    }
                    n = 0;
                }
            }
            if !body.is_empty() {
                let _ = tx.blocking_send(body);
            }
        })
    };
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, rx, url) = (client.clone(), rx.clone(), url.to_string());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(body) = rx.lock().await.recv().await else { return };
                let r = client.post(&url).body(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
                let status = r.status();
                assert!(status.is_success(), "POST {url}: {status} {}", r.text().await.unwrap_or_default());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    points as f64 / started.elapsed().as_secs_f64()
}

async fn best_of_5(mut f: impl AsyncFnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut n = 0;
    // BENCH_QUERY_RUNS=N repeats it more (to profile a server while it answers).
    for _ in 0..env_num("BENCH_QUERY_RUNS", 5).max(1) {
        let t = Instant::now();
        n = f().await;
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, n)
}

async fn get_text(url: &str) -> String {
    let r = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.text().await.unwrap()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn start_energyd(root: &Path, meters: i64) -> Server {
    start_energyd_with(root, "energyd", meters, "", "energyd (embedded)")
}

fn start_energyd_with(root: &Path, sub: &str, meters: i64, extra: &str, name: &'static str) -> Server {
    let dir = root.join(sub);
    std::fs::create_dir_all(&dir).unwrap();
    let mut reg = String::from(
        "[[agency]]\nid = \"bench\"\nname = \"基准\"\nlevel = \"province\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 1.0\noccupants = [ { agency = \"bench\", share = 1.0 } ]\n",
    );
    for m in 0..meters {
        reg.push_str(&format!("[[meter]]\nid = \"bm{m:04}\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n"));
    }
    std::fs::write(dir.join("registry.toml"), reg).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 268435456\n{extra}"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_energyd"))
        .args(["run", "--config", "energyd.toml"])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start energyd");
    Server { name, child, url: format!("http://127.0.0.1:{port}"), dir: dir.join("store") }
}

fn start_influxd(root: &Path) -> Server {
    start_influxd_in(root.join("influxd"))
}

fn start_influxd_in(dir: PathBuf) -> Server {
    let bin = which("influxd", "influxdb");
    std::fs::create_dir_all(&dir).unwrap();
    let (port, rpc) = (free_port(), free_port());
    let d = dir.display();
    std::fs::write(
        dir.join("influxdb.conf"),
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\ndir = \"{d}/meta\"\n[data]\ndir = \"{d}/data\"\nwal-dir = \"{d}/wal\"\n\
             query-log-enabled = false\ncache-snapshot-write-cold-duration = \"5s\"\ncompact-full-write-cold-duration = \"10s\"\n\
             [http]\nbind-address = \"127.0.0.1:{port}\"\nlog-enabled = false\n[monitor]\nstore-enabled = false\n[continuous_queries]\nenabled = false\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin).args(["run", "-config", &format!("{d}/influxdb.conf")]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start influxd");
    Server { name: "InfluxDB 1.x (influxd)", child, url: format!("http://127.0.0.1:{port}"), dir }
}

fn start_vm(root: &Path) -> Server {
    let bin = which("victoria-metrics", "victoria-metrics");
    let dir = root.join("vm");
    let port = free_port();
    let child = Command::new(bin)
        .args([
            &format!("-storageDataPath={}", dir.display()),
            &format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
            "-search.maxPointsPerTimeseries=100000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start victoria-metrics");
    Server { name: "VictoriaMetrics", child, url: format!("http://127.0.0.1:{port}"), dir }
}

struct Row {
    name: &'static str,
    ingest: f64,
    bytes_per_point: f64,
    query_s: f64,
    query_note: String,
    peak_mib: f64,
}

async fn wait_stable_size(dir: &Path, max: Duration) -> u64 {
    let deadline = Instant::now() + max;
    let mut last = dir_bytes(dir);
    let mut stable = 0;
    while Instant::now() < deadline && stable < 5 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = dir_bytes(dir);
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    last
}

fn main() {
    energy_gateway::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let meters = env_num("BENCH_METERS", 1000);
    let days = env_num("BENCH_DAYS", 2);
    let lines = env_num("BENCH_LINES", 5000) as usize;
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let root = tempfile::tempdir().unwrap();
    let (file, points, start, end) = generate(root.path(), meters, days);
    let file_mib = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    println!("data: {meters} meters x 10 quantities, 1/min, {days} days: {points} points, {file_mib:.0} MiB of line protocol, {lines} lines per request, 4 in flight");
    let month_from = start.div_euclid(DAY) * DAY;
    let month_to = month_from + 30 * DAY;
    let mut rows = Vec::new();

    if only.is_empty() || only.contains("energyd") {
        let s = start_energyd(root.path(), meters);
        wait_up(&s.url, "/healthz").await;
        let ingest_rate = ingest(&file, &format!("{}/write?db=bench&precision=ms", s.url), lines, points).await;
        // Where the writer's time went: group commits and head flushes (sums and counts).
        let metrics = get_text(&format!("{}/metrics", s.url)).await;
        for m in ["energyd_store_commit_duration_seconds", "energyd_store_head_flush_duration_seconds", "energyd_store_wal_sync_duration_seconds"] {
            let get = |suffix: &str| metrics.lines().find(|l| l.starts_with(&format!("{m}_{suffix} "))).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_string();
            println!("energyd: {m}: {} s in {} times", get("sum"), get("count"));
        }
        let r = reqwest::Client::new().post(format!("{}/api/v1/store/compact", s.url)).send().await.unwrap();
        assert!(r.status().is_success());
        // The point store (energyd.sqlite and its WAL); the data directory also holds the
        // accounting cache (figures per meter and year, whatever the number of points), the
        // audit log and the meter events, printed apart.
        list_files(&s.dir);
        // For a look inside (sqlite3 with dbstat): BENCH_KEEP=DIR copies the compacted store.
        if let Ok(keep) = std::env::var("BENCH_KEEP") {
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::copy(s.dir.join("energyd.sqlite"), Path::new(&keep).join("energyd.sqlite")).unwrap();
        }
        let all = dir_bytes(&s.dir);
        let bytes: u64 = ["energyd.sqlite", "energyd.sqlite-wal"].iter().filter_map(|f| std::fs::metadata(s.dir.join(f)).ok()).map(|m| m.len()).sum();
        println!("energyd: point store {:.2} bytes per point; whole data directory {:.2} ({} bytes of accounting cache, audit log and events)", bytes as f64 / points as f64, all as f64 / points as f64, all - bytes);
        let url = format!("{}/api/v1/consumption?agency=bench&from={}&to={}&interval=hour", s.url, pct(&rfc3339(month_from)), pct(&rfc3339(month_to)));
        let (q, n) = best_of_5(async || {
            let v: serde_json::Value = serde_json::from_str(&get_text(&url).await).unwrap();
            v["meters"].as_array().map_or(0, Vec::len)
        })
        .await;
        rows.push(Row { name: s.name, ingest: ingest_rate, bytes_per_point: bytes as f64 / points as f64, query_s: q, query_note: format!("{n} meters"), peak_mib: s.peak_rss_mib() });
    }
    if only.is_empty() || only.contains("influx") {
        let s = start_influxd(root.path());
        wait_up(&s.url, "/ping").await;
        let r = reqwest::Client::new().post(format!("{}/query?q=CREATE%20DATABASE%20bench", s.url)).send().await.unwrap();
        assert!(r.status().is_success());
        let ingest_rate = ingest(&file, &format!("{}/write?db=bench&precision=ms", s.url), lines, points).await;
        let bytes = wait_stable_size(&s.dir, Duration::from_secs(120)).await;
        let q = format!(
            "SELECT difference(last(\"active_energy_import\")) FROM energy WHERE time >= '{}' AND time < '{}' GROUP BY time(1h), meter",
            rfc3339(month_from),
            rfc3339(month_to)
        );
        let url = format!("{}/query?db=bench&q={}", s.url, pct(&q));
        let (qs, n) = best_of_5(async || {
            let v: serde_json::Value = serde_json::from_str(&get_text(&url).await).unwrap();
            v["results"][0]["series"].as_array().map_or(0, Vec::len)
        })
        .await;
        rows.push(Row { name: s.name, ingest: ingest_rate, bytes_per_point: bytes as f64 / points as f64, query_s: qs, query_note: format!("{n} meters"), peak_mib: s.peak_rss_mib() });
    }
    if only.is_empty() || only.contains("vm") {
        let s = start_vm(root.path());
        wait_up(&s.url, "/health").await;
        let ingest_rate = ingest(&file, &format!("{}/write?db=bench&precision=ms", s.url), lines, points).await;
        let _ = get_text(&format!("{}/internal/force_flush", s.url)).await;
        let _ = reqwest::get(format!("{}/internal/force_merge", s.url)).await;
        let bytes = wait_stable_size(&s.dir, Duration::from_secs(120)).await;
        let url = format!(
            "{}/api/v1/query_range?query={}&start={}&end={}&step=3600",
            s.url,
            pct("increase(energy_active_energy_import[1h])"),
            month_from / 1000 + 3600,
            month_to / 1000
        );
        let (qs, n) = best_of_5(async || {
            let v: serde_json::Value = serde_json::from_str(&get_text(&url).await).unwrap();
            v["data"]["result"].as_array().map_or(0, Vec::len)
        })
        .await;
        rows.push(Row { name: s.name, ingest: ingest_rate, bytes_per_point: bytes as f64 / points as f64, query_s: qs, query_note: format!("{n} meters"), peak_mib: s.peak_rss_mib() });
    }
    let mut forward = None;
    if only.is_empty() || only.contains("forward") {
        forward = Some(bench_forward(root.path(), &file, meters, lines, points).await);
    }
    let _ = end;
    if !rows.is_empty() {
        println!();
        println!("| system | ingest (points/s, acknowledged) | bytes on disk per point | month of hourly consumption, all meters | peak RSS |");
        println!("|---|---:|---:|---:|---:|");
    }
    for r in rows {
        println!("| {} | {:.0} | {:.2} | {:.3} s ({}) | {:.0} MiB |", r.name, r.ingest, r.bytes_per_point, r.query_s, r.query_note, r.peak_mib);
    }
    if let Some(f) = forward {
        println!();
        println!("| into influxd | acknowledged (points/s) | in influxd (points/s, end to end) | peak RSS of energyd |");
        println!("|---|---:|---:|---:|");
        println!("| direct: POST /write to influxd | {:.0} | {:.0} | - |", f.direct, f.direct);
        println!("| energyd, backend influxdb (local commit + spool, forwarder) | {:.0} | {:.0} | {:.0} MiB |", f.acked, f.end_to_end, f.peak_mib);
    }
}

struct Forward {
    direct: f64,
    acked: f64,
    end_to_end: f64,
    peak_mib: f64,
}

/// A metric's value from a Prometheus text page.
async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = get_text(&format!("{url}/metrics")).await;
    text.lines().find(|l| l.split_whitespace().next() == Some(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// The same file straight into influxd and through energyd's InfluxDB backend.
async fn bench_forward(root: &Path, file: &Path, meters: i64, lines: usize, points: u64) -> Forward {
    let influx = start_influxd_in(root.join("influxd-forward"));
    wait_up(&influx.url, "/ping").await;
    let client = reqwest::Client::new();
    for db in ["direct", "bench"] {
        let r = client.post(format!("{}/query?q=CREATE%20DATABASE%20{db}", influx.url)).send().await.unwrap();
        assert!(r.status().is_success());
    }
    let direct = ingest(file, &format!("{}/write?db=direct&precision=ms", influx.url), lines, points).await;
    let extra = format!(
        "[storage]\nbackend = \"influxdb\"\n[storage.influxdb]\nurl = \"{}\"\ndatabase = \"bench\"\nbatch_lines = {lines}\nflush_interval_ms = 200\nmax_spool_bytes = 17179869184\n",
        influx.url
    );
    let s = start_energyd_with(root, "energyd-forward", meters, &extra, "energyd (influxdb backend)");
    wait_up(&s.url, "/healthz").await;
    let started = Instant::now();
    let acked = ingest(file, &format!("{}/write?db=bench&precision=ms", s.url), lines, points).await;
    loop {
        let forwarded = metric(&s.url, "energyd_forward_points_total").await.unwrap_or(0.0);
        if forwarded as u64 >= points && metric(&s.url, "energyd_forward_spool_points").await == Some(0.0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "the spool did not drain within an hour ({forwarded} of {points} points)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end_to_end = points as f64 / started.elapsed().as_secs_f64();
    // Every point arrived: the same count in both databases.
    let count = |db: &str| format!("{}/query?db={db}&q={}", influx.url, pct("SELECT count(active_power) FROM energy"));
    let (a, b) = (get_text(&count("direct")).await, get_text(&count("bench")).await);
    let n = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["results"][0]["series"][0]["values"][0][1].as_u64();
    assert_eq!(n(&a), n(&b), "direct: {a}, through energyd: {b}");
    Forward { direct, acked, end_to_end, peak_mib: s.peak_rss_mib() }
}
