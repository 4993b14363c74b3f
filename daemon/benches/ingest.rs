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
//! * Bytes per point: the data files after compaction (energyd: its point store, `energyd.sqlite`,
//!   its WAL and the log directory, after `POST /api/v1/store/compact`; the whole directory, with the accounting cache
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
//!
//! Two more choices (arguments after `--`, or the environment):
//!
//! * `--generator realistic` (`BENCH_GENERATOR=realistic`): a second data set unlike the
//!   first, see [`generate_realistic`]: `BENCH_METERS` meters (default 1000) x 10 quantities x
//!   `BENCH_MINUTES` minutes (default 1440: 14.4 million points), values with two decimals,
//!   meters with different load shapes (office day curve, 24 h server room, mostly idle),
//!   counters standing still at night, noisy gauges on some meters; seeded (`BENCH_SEED`,
//!   default 19), so the same arguments give the same file.
//! * `--alternate N` (`BENCH_ALTERNATE=N`): energyd and VictoriaMetrics alone, N rounds on the
//!   same file, the order swapped every round; each run on fresh data directories, a free
//!   loopback port, the same client (requests of `BENCH_LINES` lines, 4 in flight), until every
//!   point is acknowledged and queryable, then stopped. Printed per round: points/s of each and
//!   the energyd / VictoriaMetrics ratio, then the median and the worst ratio; bytes written to
//!   disk per point (`write_bytes` of `/proc/<pid>/io`) during the ingest and in all (sealing
//!   included), where energyd's bytes went (by file of its data directory, by thread, and its
//!   `/metrics` lines that report bytes), the store size per point after sealing, and the peak
//!   memory (`VmHWM`). See [`alternate`].
//! * `BENCH_ENERGYD=PATH`: the energyd binary to run instead of this build's (another build
//!   kept aside, for a before and after on the same machine in one sitting).
//!
//! ```sh
//! cargo bench -p energyd --bench ingest -- --generator realistic --alternate 5
//! BENCH_METERS=100 BENCH_MINUTES=240 cargo bench -p energyd --bench ingest -- --generator realistic --alternate 2
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000;

fn env_num(k: &str, default: i64) -> i64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `--name value` or `--name=value` among the arguments (after `cargo bench ... --`), else the
/// environment variable `env`.
fn option(name: &str, env: &str) -> Option<String> {
    let flag = format!("--{name}");
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        if *a == flag {
            return args.get(i + 1).cloned();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    std::env::var(env).ok()
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

/// energyd's point store on disk: `energyd.sqlite`, its WAL and the log (`log/`, store format 8).
fn point_store_bytes(dir: &Path) -> u64 {
    let db: u64 = ["energyd.sqlite", "energyd.sqlite-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum();
    db + dir_bytes(&dir.join("log"))
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
    // BENCH_ENERGYD=PATH runs another build of energyd (a "before" beside this "after").
    let bin = std::env::var_os("BENCH_ENERGYD").map_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_energyd")), std::path::PathBuf::from);
    let child = Command::new(bin)
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
    let generator = option("generator", "BENCH_GENERATOR").unwrap_or_else(|| "uniform".into());
    let (file, points, start, end) = match generator.as_str() {
        "uniform" => generate(root.path(), meters, days),
        "realistic" => generate_realistic(root.path(), meters, env_num("BENCH_MINUTES", 1440), env_num("BENCH_SEED", 19) as u64),
        g => panic!("--generator {g}: the generators are `uniform` (the default) and `realistic`"),
    };
    let file_mib = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let span = if generator == "realistic" { format!("{} minutes", (end - start) / 60_000) } else { format!("{days} days") };
    println!(
        "data ({generator}): {meters} meters x 10 quantities, 1/min, {span}: {points} points, {file_mib:.0} MiB of line protocol, {lines} lines per request, 4 in flight"
    );
    let rounds = option("alternate", "BENCH_ALTERNATE").map(|n| n.parse::<usize>().unwrap_or_else(|_| panic!("--alternate {n}: a number of rounds")));
    if let Some(rounds) = rounds.filter(|&n| n > 0) {
        alternate(root.path(), &file, meters, lines, points, (start, end), rounds).await;
        return;
    }
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
        let bytes: u64 = point_store_bytes(&s.dir);
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

/// A small seeded generator (SplitMix64): the same seed gives the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal, mean 0, standard deviation 1 (sum of four uniforms).
    fn noise(&mut self) -> f64 {
        ((self.unit() + self.unit() + self.unit() + self.unit()) - 2.0) * 1.732
    }
}

/// The load shapes of the realistic data.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Working hours 08:00-18:00 local time with a lunch dip; off at night (its counters stand
    /// still from 20:00 to 06:00).
    Office,
    /// A server room: the same load day and night, a little higher in the afternoon.
    ServerRoom,
    /// Standby most of the time, a few bursts of load a day.
    MostlyIdle,
}

/// One meter of the realistic data: its shape, its sizes, its counters (hundredths of a unit,
/// as a register with two decimals shows them) and its state.
struct RealMeter {
    shape: Shape,
    /// Load at the top of its curve (kW).
    peak: f64,
    /// Its gauges are noisy (a jittery transducer, a busy feeder), else smooth.
    noisy: bool,
    /// Exports at midday (solar panels on the roof).
    solar: f64,
    /// Power factor around which it runs.
    pf: f64,
    /// Active import, active export, reactive import, reactive export, in kWh / kvarh (exact).
    energy: [f64; 4],
    /// Minutes left of a burst (mostly idle meters).
    burst: u32,
    rng: Rng,
}

/// Office load at a local minute of the day, 0..=1: off at night, ramps 06:00-09:00, a lunch
/// dip, ramps down 18:00-20:00.
fn office_curve(minute: i64) -> f64 {
    let h = minute as f64 / 60.0;
    match h {
        h if !(6.0..20.0).contains(&h) => 0.0,
        h if h < 9.0 => (h - 6.0) / 3.0,
        h if (12.0..13.0).contains(&h) => 0.7,
        h if h < 18.0 => 1.0,
        h => (20.0 - h) / 2.0,
    }
}

/// Writes the realistic line-protocol file: `meters` meters x 10 quantities x `minutes` one-minute
/// readings ending at the last UTC midnight but one, every value with two decimals. Half the
/// meters are offices, a fifth server rooms, the rest mostly idle (by meter number), and about a
/// third have noisy gauges and a tenth of the offices export at midday (drawn from `seed`).
/// Returns (path, points, first ms, end ms).
fn generate_realistic(dir: &Path, meters: i64, minutes: i64, seed: u64) -> (PathBuf, u64, i64, i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let end = now.div_euclid(DAY) * DAY - DAY;
    let start = end - minutes * 60_000;
    let path = dir.join("meters-realistic.lp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut all: Vec<RealMeter> = (0..meters)
        .map(|m| {
            let mut rng = Rng(seed ^ (m as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let shape = match m % 10 {
                0..=4 => Shape::Office,
                5 | 6 => Shape::ServerRoom,
                _ => Shape::MostlyIdle,
            };
            let peak = match shape {
                Shape::Office => 20.0 + 60.0 * rng.unit(),
                Shape::ServerRoom => 8.0 + 20.0 * rng.unit(),
                Shape::MostlyIdle => 0.02 + 0.3 * rng.unit(),
            };
            let noisy = rng.unit() < 0.33;
            let solar = if shape == Shape::Office && rng.unit() < 0.1 { 5.0 + 20.0 * rng.unit() } else { 0.0 };
            let pf = match shape {
                Shape::Office => 0.9 + 0.08 * rng.unit(),
                Shape::ServerRoom => 0.97 + 0.02 * rng.unit(),
                Shape::MostlyIdle => 0.6 + 0.2 * rng.unit(),
            };
            let energy = [1_000.0 + 500_000.0 * rng.unit(), if solar > 0.0 { 100.0 + 20_000.0 * rng.unit() } else { 0.0 }, 200.0 + 90_000.0 * rng.unit(), 10.0 * rng.unit()];
            RealMeter { shape, peak, noisy, solar, pf, energy, burst: 0, rng }
        })
        .collect();
    // Hundredths, as the register shows them (truncated).
    let shown = |x: f64| {
        let c = (x * 100.0).floor() as i64;
        format!("{}.{:02}", c / 100, c % 100)
    };
    let two = |x: f64| format!("{x:.2}");
    let mut points = 0u64;
    let mut t = start;
    while t < end {
        // Local time (UTC+8).
        let minute = (t / 60_000 + 480).rem_euclid(1440);
        let daylight = (std::f64::consts::PI * (minute as f64 - 360.0) / 720.0).sin().max(0.0);
        for (m, x) in all.iter_mut().enumerate() {
            let jitter = if x.noisy { 0.04 } else { 0.005 };
            let p = match x.shape {
                Shape::Office => {
                    let c = office_curve(minute);
                    if c == 0.0 { 0.0 } else { x.peak * c * (1.0 + jitter * x.rng.noise()).max(0.0) }
                }
                Shape::ServerRoom => x.peak * (1.0 + 0.05 * (2.0 * std::f64::consts::PI * (minute as f64 - 840.0) / 1440.0).cos() + jitter * x.rng.noise()),
                Shape::MostlyIdle => {
                    if x.burst == 0 && x.rng.unit() < 0.003 {
                        x.burst = 5 + (x.rng.next() % 40) as u32;
                    }
                    if x.burst > 0 {
                        x.burst -= 1;
                        2.0 + 3.0 * x.rng.unit()
                    } else {
                        x.peak
                    }
                }
            }
            .max(0.0);
            let pf = (x.pf + if x.noisy { 0.02 * x.rng.noise() } else { 0.0 }).clamp(0.3, 1.0);
            let q = p * (1.0 / (pf * pf) - 1.0).max(0.0).sqrt();
            let export = x.solar * daylight;
            x.energy[0] += p / 60.0;
            x.energy[1] += export / 60.0;
            x.energy[2] += q / 60.0;
            if x.shape == Shape::ServerRoom {
                x.energy[3] += 0.002 / 60.0;
            }
            let v = 220.0 + 3.0 * (2.0 * std::f64::consts::PI * minute as f64 / 1440.0).sin() + if x.noisy { 1.5 * x.rng.noise() } else { 0.0 };
            let v = if x.noisy { v } else { (v * 10.0).round() / 10.0 };
            let amps = p * 1000.0 / (3.0 * v * pf);
            let hz = 50.0 + if x.noisy { 0.03 * x.rng.noise() } else { 0.0 };
            writeln!(
                f,
                "energy,meter=bm{m:04} active_energy_import={},active_energy_export={},reactive_energy_import={},reactive_energy_export={},\
                 active_power={},reactive_power={},voltage_l1={},current_l1={},power_factor={},frequency={} {t}",
                shown(x.energy[0]),
                shown(x.energy[1]),
                shown(x.energy[2]),
                shown(x.energy[3]),
                two(p),
                two(q),
                two(v),
                two(amps),
                two(pf),
                two(hz),
            )
            .unwrap();
            points += 10;
        }
        t += 60_000;
    }
    f.flush().unwrap();
    (path, points, start, end)
}

/// `write_bytes` of a process or thread: the bytes it caused to be sent to the storage layer
/// (its `io` file in `/proc`).
fn write_bytes(io: &Path) -> u64 {
    let text = std::fs::read_to_string(io).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// `write_bytes` of each live thread of a process, by thread id, with its name.
fn thread_writes(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
            let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default().trim().to_string();
            out.insert(tid, (name, write_bytes(&e.path().join("io"))));
        }
    }
    out
}

/// Sizes of the files under `dir`, by path relative to it.
fn file_sizes(dir: &Path, base: &Path, out: &mut BTreeMap<String, u64>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => file_sizes(&e.path(), base, out),
                Ok(m) => {
                    let rel = e.path().strip_prefix(base).map(|p| p.display().to_string()).unwrap_or_default();
                    out.insert(rel, m.len());
                }
                Err(_) => {}
            }
        }
    }
}

/// Sizes of a data directory's files over time, sampled every 200 ms until `stop` is set.
async fn sample_files(dir: PathBuf, stop: Arc<AtomicBool>) -> Vec<(f64, BTreeMap<String, u64>)> {
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        let mut sizes = BTreeMap::new();
        file_sizes(&dir, &dir, &mut sizes);
        samples.push((started.elapsed().as_secs_f64(), sizes));
        if stop.load(Ordering::Relaxed) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one run of one server on the file measured.
struct AltRun {
    name: &'static str,
    /// Points per second until the last request was answered.
    rate: f64,
    /// Seconds from the last answer until every point was queryable.
    queryable_after: f64,
    /// `write_bytes` of the process during the ingest (until queryable), and in all (sealing
    /// and merges included, until the data directory's size was stable).
    written_ingest: u64,
    written_all: u64,
    /// The store's size after sealing.
    store_bytes: u64,
    peak_mib: f64,
    /// energyd only: where its bytes went.
    detail: Option<Detail>,
}

struct Detail {
    /// Per file: sampled sizes over time (seconds from the start of the ingest).
    samples: Vec<(f64, BTreeMap<String, u64>)>,
    /// Seconds at which the ingest ended (every point acknowledged).
    ingest_end: f64,
    /// `write_bytes` by thread name (the threads that ended in between under one name).
    threads: Vec<(String, u64)>,
    /// The daemon's own metrics that report bytes, at the end.
    metrics: Vec<String>,
}

/// Waits until `done()` holds, for at most `max`; panics with `what` after that.
async fn wait_until(what: &str, max: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {} s", max.as_secs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alt_energyd(dir: &Path, file: &Path, meters: i64, lines: usize, points: u64) -> AltRun {
    let s = start_energyd_with(dir, "energyd", meters, "", "energyd");
    wait_up(&s.url, "/healthz").await;
    let pid = s.child.id();
    let io = PathBuf::from(format!("/proc/{pid}/io"));
    let threads_before = thread_writes(pid);
    let before = write_bytes(&io);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_files(s.dir.clone(), stop.clone()));
    let started = Instant::now();
    let rate = ingest(file, &format!("{}/write?db=bench&precision=ms", s.url), lines, points).await;
    let acked = started.elapsed().as_secs_f64();
    // Acknowledged means fsynced; queryable means stored: every point counted as written.
    wait_until("energyd: every point written", Duration::from_secs(600), async || {
        metric(&s.url, "energyd_points_written_total").await.unwrap_or(0.0) as u64 >= points
    })
    .await;
    let queryable_after = started.elapsed().as_secs_f64() - acked;
    let written_ingest = write_bytes(&io) - before;
    let r = reqwest::Client::new().post(format!("{}/api/v1/store/compact", s.url)).send().await.unwrap();
    assert!(r.status().is_success(), "compact: {}", r.status());
    wait_stable_size(&s.dir, Duration::from_secs(120)).await;
    let written_all = write_bytes(&io) - before;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let store_bytes: u64 = point_store_bytes(&s.dir);
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    let after = thread_writes(pid);
    for (tid, (name, w)) in &after {
        let was = threads_before.get(tid).map_or(0, |t| t.1);
        *by_name.entry(name.clone()).or_default() += w - was.min(*w);
    }
    let live: u64 = by_name.values().sum();
    let mut threads: Vec<(String, u64)> = by_name.into_iter().filter(|t| t.1 > 0).collect();
    threads.push(("(threads that ended meanwhile)".into(), written_all.saturating_sub(live)));
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    let metrics = get_text(&format!("{}/metrics", s.url))
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && l.split_whitespace().next().is_some_and(|n| n.contains("bytes")))
        .map(str::to_string)
        .collect();
    let peak_mib = s.peak_rss_mib();
    AltRun {
        name: "energyd",
        rate,
        queryable_after,
        written_ingest,
        written_all,
        store_bytes,
        peak_mib,
        detail: Some(Detail { samples, ingest_end: acked + queryable_after, threads, metrics }),
    }
}

async fn alt_vm(dir: &Path, file: &Path, lines: usize, points: u64, (start, end): (i64, i64)) -> AltRun {
    let s = start_vm(dir);
    wait_up(&s.url, "/health").await;
    let io = PathBuf::from(format!("/proc/{}/io", s.child.id()));
    let before = write_bytes(&io);
    let started = Instant::now();
    let rate = ingest(file, &format!("{}/write?db=bench&precision=ms", s.url), lines, points).await;
    let acked = started.elapsed().as_secs_f64();
    // VictoriaMetrics answers from memory: wait until a count over the whole span finds every
    // point (its cache of results bypassed).
    let window = (end - start) / 60_000 + 1;
    let url = format!("{}/api/v1/query?query={}&time={}&nocache=1", s.url, pct(&format!("sum(count_over_time({{__name__=~\"energy_.+\"}}[{window}m]))")), end / 1000);
    wait_until("VictoriaMetrics: every point queryable", Duration::from_secs(600), async || {
        let v: serde_json::Value = serde_json::from_str(&get_text(&url).await).unwrap_or_default();
        v["data"]["result"][0]["value"][1].as_str().and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0) as u64 >= points
    })
    .await;
    let queryable_after = started.elapsed().as_secs_f64() - acked;
    let written_ingest = write_bytes(&io) - before;
    let _ = get_text(&format!("{}/internal/force_flush", s.url)).await;
    let _ = reqwest::get(format!("{}/internal/force_merge", s.url)).await;
    let store_bytes = wait_stable_size(&s.dir, Duration::from_secs(120)).await;
    let written_all = write_bytes(&io) - before;
    AltRun { name: "VictoriaMetrics", rate, queryable_after, written_ingest, written_all, store_bytes, peak_mib: s.peak_rss_mib(), detail: None }
}

/// energyd and VictoriaMetrics alone, `rounds` rounds on the same file, the order swapped every
/// round; each on fresh data directories. Prints each round as it ends, then the tables.
async fn alternate(root: &Path, file: &Path, meters: i64, lines: usize, points: u64, span: (i64, i64), rounds: usize) {
    let mut all: Vec<(AltRun, AltRun)> = Vec::new();
    for round in 1..=rounds {
        let mut runs = Vec::new();
        for k in 0..2 {
            let dir = tempfile::tempdir_in(root).unwrap();
            // Odd rounds energyd first, even rounds VictoriaMetrics first.
            if (k == 0) == (round % 2 == 1) {
                runs.push(alt_energyd(dir.path(), file, meters, lines, points).await);
            } else {
                runs.push(alt_vm(dir.path(), file, lines, points, span).await);
            }
        }
        runs.sort_by_key(|r| r.name != "energyd");
        let vm = runs.pop().unwrap();
        let e = runs.pop().unwrap();
        println!("round {round}: energyd {:.0} points/s, VictoriaMetrics {:.0} points/s, energyd / VM {:.2}", e.rate, vm.rate, e.rate / vm.rate);
        all.push((e, vm));
    }
    let mut ratios: Vec<f64> = all.iter().map(|(e, vm)| e.rate / vm.rate).collect();
    println!("\n| round | VictoriaMetrics (points/s) | energyd (points/s) | energyd / VM |\n|---|---:|---:|---:|");
    for (i, (e, vm)) in all.iter().enumerate() {
        println!("| {} | {:.0} | {:.0} | {:.2} |", i + 1, vm.rate, e.rate, e.rate / vm.rate);
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = if n % 2 == 1 { ratios[n / 2] } else { (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0 };
    println!("\nenergyd / VictoriaMetrics over {n} rounds: median {median:.2}, worst {:.2}", ratios[0]);
    let per = |b: u64| b as f64 / points as f64;
    println!(
        "\n| round | system | points/s | queryable after | written during ingest (bytes/point) | written in all (bytes/point) | store after sealing (bytes/point) | peak RSS |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for (i, (e, vm)) in all.iter().enumerate() {
        for r in [e, vm] {
            println!(
                "| {} | {} | {:.0} | {:.1} s | {:.2} | {:.2} | {:.2} | {:.0} MiB |",
                i + 1,
                r.name,
                r.rate,
                r.queryable_after,
                per(r.written_ingest),
                per(r.written_all),
                per(r.store_bytes),
                r.peak_mib
            );
        }
    }
    for (i, (e, _)) in all.iter().enumerate() {
        if let Some(d) = &e.detail {
            print_detail(i + 1, d, points);
        }
    }
}

/// Where energyd's bytes went in one run: by file of its data directory (sizes over time, and
/// the sum of each file's growth, which is what it wrote when it only grows; a file rewritten
/// in place, such as SQLite's WAL after a checkpoint, writes more than it grows), by thread,
/// and its own metrics.
fn print_detail(round: usize, d: &Detail, points: u64) {
    let per = |b: u64| b as f64 / points as f64;
    let names: Vec<String> = d.samples.iter().flat_map(|s| s.1.keys().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    println!("\nenergyd, round {round}: where the bytes went (bytes per point)");
    println!("\n| file | grown (sum of increases) | peak size | final size |\n|---|---:|---:|---:|");
    for name in &names {
        let sizes: Vec<u64> = d.samples.iter().map(|s| s.1.get(name).copied().unwrap_or(0)).collect();
        let grown: u64 = sizes.windows(2).map(|w| w[1].saturating_sub(w[0])).sum::<u64>() + sizes.first().copied().unwrap_or(0);
        let peak = sizes.iter().copied().max().unwrap_or(0);
        println!("| {name} | {:.2} | {:.2} | {:.2} |", per(grown), per(peak), per(sizes.last().copied().unwrap_or(0)));
    }
    // Sizes over time: about twelve samples, the end of the ingest among them.
    let step = (d.samples.len() / 12).max(1);
    let mut shown: Vec<usize> = (0..d.samples.len()).step_by(step).collect();
    shown.push(d.samples.len() - 1);
    if let Some(i) = d.samples.iter().position(|s| s.0 >= d.ingest_end) {
        shown.push(i);
    }
    shown.sort_unstable();
    shown.dedup();
    let peak = |n: &String| d.samples.iter().map(|s| s.1.get(n).copied().unwrap_or(0)).max().unwrap_or(0);
    let largest = names.iter().map(peak).max().unwrap_or(0);
    let big: Vec<&String> = names.iter().filter(|n| peak(n) * 20 >= largest).collect();
    println!("\nsizes over time (MiB; files that reached a twentieth of the largest; ingest ended at {:.1} s)\n", d.ingest_end);
    println!("| s | {} |\n|---:|{}", big.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" | "), "---:|".repeat(big.len()));
    for i in shown {
        let (t, sizes) = &d.samples[i];
        let cells: Vec<String> = big.iter().map(|n| format!("{:.2}", sizes.get(*n).copied().unwrap_or(0) as f64 / (1 << 20) as f64)).collect();
        println!("| {t:.1} | {} |", cells.join(" | "));
    }
    println!("\n| thread | write_bytes per point |\n|---|---:|");
    for (name, w) in &d.threads {
        println!("| {name} | {:.2} |", per(*w));
    }
    println!("\nits metrics that report bytes, at the end:");
    for m in &d.metrics {
        println!("  {m}");
    }
}
