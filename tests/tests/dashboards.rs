//! Every panel of every dashboard in `dashboards/` returns data: the test loads each dashboard,
//! extracts every panel's queries, and runs them against real servers seeded with one scenario:
//!
//! * Infinity queries (the daemon's HTTP API): HTTP GETs on the real `energyd` with the template
//!   variables (resolved by their own Infinity queries) and time macros substituted; the
//!   root_selector is applied and every column must have a value in at least one row;
//! * PromQL: against a real `prometheus` (Debian package) scraping the daemon and a real
//!   `energy-gateway` (MQTT uplink through a real Mosquitto) every second;
//! * InfluxQL: against a real `influxd` (Debian `influxdb`, 1.x) loaded with the same readings
//!   in the InfluxDB backend's schema (measurement `energy`, tags meter, building, carrier,
//!   agency, one field per quantity).
//!
//! A query that answers nothing fails the test, naming the dashboard and the panel. The daemon's
//! `/metrics` must also pass `promtool check metrics`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use energy_e2e::{eventually, free_port, get_json, http_client, listening_url, profiles_dir, repo_root, Mosquitto, Proc};
use serde_json::{json, Value};

const INFINITY: &str = "yesoreyeram-infinity-datasource";
const DATASOURCE_UIDS: &[&str] = &["energyd", "prometheus", "influxdb"];

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(names: &[&str], package: &str) -> PathBuf {
    for n in names {
        for d in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
            let p = Path::new(d).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{} not found: install the Debian package `{package}` (tests/run.sh does)", names.join(" or "));
}

fn spawn(bin: &Path, args: &[String]) -> Server {
    let child = Command::new(bin).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Server { child }
}

/// The dashboards, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 3, "expected the building, agency and fleet dashboards in {}", dir.display());
    out
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().cloned().unwrap_or_default() {
        for n in p["panels"].as_array().cloned().unwrap_or_default() {
            out.push(n);
        }
        if p["type"] != "row" {
            out.push(p);
        }
    }
    out
}

/// Infinity's root selector and column selectors, as used here: dotted paths with `[n]`.
fn select<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, idx) = match part.split_once('[') {
            Some((n, rest)) => (n, Some(rest.trim_end_matches(']').parse::<usize>().ok()?)),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn rows(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// Substitutes template variables and Grafana's time macros.
fn substitute(s: &str, vars: &[(String, String)], from: &str, to: &str) -> String {
    let mut out = s.replace("${__from:date:iso}", from).replace("${__to:date:iso}", to).replace("$__rate_interval", "1m").replace("$__interval", "1h");
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
    }
    out
}

fn enc(s: &str) -> String {
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

/// Percent-encodes the query values of a relative URL.
fn encode_query(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_string(),
        Some((path, q)) => {
            let parts: Vec<String> = q.split('&').map(|kv| match kv.split_once('=') {
                Some((k, v)) => format!("{k}={}", enc(v)),
                None => kv.to_string(),
            }).collect();
            format!("{path}?{}", parts.join("&"))
        }
    }
}

/// Runs an Infinity query against the daemon; the rows after the root selector, or why not.
async fn infinity(daemon: &str, q: &Value, vars: &[(String, String)], from: &str, to: &str) -> Result<Vec<Value>, String> {
    let url = substitute(q["url"].as_str().ok_or("no url")?, vars, from, to);
    if !url.starts_with('/') {
        return Err(format!("url `{url}` must be relative to the datasource's base URL"));
    }
    let full = format!("{daemon}{}", encode_query(&url));
    let (status, v) = get_json(&full).await;
    if status != 200 {
        return Err(format!("GET {url}: {status} {v}"));
    }
    let root = q["root_selector"].as_str().unwrap_or("");
    let rows = rows(select(&v, root).unwrap_or(&Value::Null));
    if rows.is_empty() {
        return Err(format!("GET {url}: nothing at root_selector `{root}` in {v}"));
    }
    for c in q["columns"].as_array().cloned().unwrap_or_default() {
        let sel = c["selector"].as_str().unwrap_or("");
        if !rows.iter().any(|r| select(r, sel).is_some_and(|x| !x.is_null())) {
            return Err(format!("GET {url}: column `{sel}` has no value in any of {} rows: {}", rows.len(), Value::Array(rows.clone())));
        }
    }
    Ok(rows)
}

/// The registry of the scenario, for the current year `y`: two agencies sharing a building with
/// an electricity, a water and a heat meter; the example quota bands; a budget and a reduction
/// target.
fn registry(y: i32) -> String {
    format!(
        r#"include = ["quotas.toml"]

[[agency]]
id = "ag-a"
name = "甲局"
level = "city"
headcount = {{ {py} = 100, {y} = 100 }}

[[agency]]
id = "ag-b"
name = "乙局"
level = "city"
headcount = {{ {py} = 50, {y} = 50 }}

[[budget]]
agency = "ag-a"
year = {y}
energy_kgce = 1000.0
carriers = {{ electricity = 1000.0 }}

[[reduction]]
indicator = "energy_per_person"
baseline_year = {py}
target_year = {y}
percent = 5.0
baseline_value = 800.0

[[building]]
id = "bldg-1"
name = "一号楼"
floor_area = 5000.0
occupants = [ {{ agency = "ag-a", share = 0.6 }}, {{ agency = "ag-b", share = 0.4 }} ]

[[meter]]
id = "e1"
building = "bldg-1"
carrier = "electricity"
gateway = "gw-dash"

[[meter]]
id = "w1"
building = "bldg-1"
carrier = "water"
gateway = "gw-dash"

[[meter]]
id = "h1"
building = "bldg-1"
carrier = "district_heat"
gateway = "gw-dash"
"#,
        py = y - 1
    )
}

const H: i64 = 3_600_000;

/// A sample: meter, time (ms), values by quantity.
type Reading = (String, i64, Vec<(&'static str, f64)>);

/// Hourly readings over the two years before now (the last two hours every 10 minutes), so that
/// last year is complete and its figures are shown beside this year's (a year whose data is
/// incomplete has no `last_year`); the heat meter stops 5 hours ago, so that the MeterSilent alert
/// fires. Samples as (meter, t, quantity values).
fn scenario(now: i64) -> Vec<Reading> {
    let mut out = Vec::new();
    let (mut e, mut w, mut h) = (10_000.0, 500.0, 100.0);
    for (start, end) in [((now / H - 2 * 366 * 24) * H, now)] {
        let mut t = start;
        while t <= end {
            let hour = ((t / H) + 8) % 24;
            let kw = if (8..18).contains(&hour) { 40.0 } else { 8.0 };
            e += kw;
            w += if (8..18).contains(&hour) { 0.5 } else { 0.02 };
            h += 0.05;
            out.push(("e1".to_string(), t, vec![("active_energy_import", e), ("active_power", kw)]));
            out.push(("w1".to_string(), t, vec![("water_volume", w), ("flow_rate", 0.02)]));
            if t <= now - 5 * H {
                out.push(("h1".to_string(), t, vec![("heat_energy", h), ("heat_power", 50.0)]));
            }
            t += if now - t > 2 * H { H } else { 10 * 60_000 };
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let client = http_client();
    let boards = dashboards();

    // Structure: unique uids and panel ids, known datasources, a refId on every target.
    let mut uids = std::collections::BTreeSet::new();
    for (name, b) in &boards {
        assert!(uids.insert(b["uid"].as_str().unwrap().to_string()), "{name}: duplicate dashboard uid");
        let mut ids = std::collections::BTreeSet::new();
        for p in b["panels"].as_array().unwrap().iter().chain(panels(b).iter()) {
            ids.insert(p["id"].as_i64().unwrap_or_else(|| panic!("{name}: panel without id")));
        }
        for p in panels(b) {
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{name}: panel `{}` has no targets", p["title"]));
            assert!(!targets.is_empty(), "{name}: panel `{}` has no queries", p["title"]);
            for t in targets {
                let uid = t["datasource"]["uid"].as_str().unwrap_or("");
                assert!(DATASOURCE_UIDS.contains(&uid), "{name}: panel `{}`: datasource uid `{uid}` is not one of {DATASOURCE_UIDS:?}", p["title"]);
                assert!(t["refId"].is_string(), "{name}: panel `{}`: a target without refId", p["title"]);
            }
        }
    }

    // Servers: Mosquitto, the daemon (MQTT ingest), a gateway (MQTT uplink; its one device is
    // on a closed port, so it is down), Prometheus scraping both, InfluxDB.
    let broker = Mosquitto::start(&d.join("broker"));
    use chrono::Datelike;
    let year = chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap()).year();
    std::fs::write(d.join("registry.toml"), registry(year)).unwrap();
    std::fs::copy(repo_root().join("deploy/quotas/shandong-db37-2672-2019.toml"), d.join("quotas.toml")).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"energyd-dash\"\n\
             [alerts]\ninterval = \"1s\"\n[[alerts.rule]]\nname = \"MeterSilent\"\nkind = \"meter_silent\"\n",
            broker.url()
        ),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    let daemon_addr = url.trim_start_matches("http://").to_string();
    let gw_health = free_port();
    let closed = free_port();
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "gateway_id = \"gw-dash\"\nprofiles_dir = {:?}\n[queue]\ndir = \"queue\"\n[uplink]\nurl = \"{}\"\nsite = \"site-1\"\n[health]\nlisten = \"127.0.0.1:{gw_health}\"\n\
             [[device]]\nmeter = \"gw-dev\"\nprofile = \"eastron/sdm630\"\ntcp = \"127.0.0.1:{closed}\"\nunit = 1\ninterval_ms = 500\n",
            profiles_dir(),
            broker.url()
        ),
    )
    .unwrap();
    let _gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);

    let prom_port = free_port();
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: energyd\n    static_configs:\n      - targets: ['{daemon_addr}']\n  - job_name: energy-gateway\n    static_configs:\n      - targets: ['127.0.0.1:{gw_health}']\n"
        ),
    )
    .unwrap();
    let _prom = spawn(
        &which(&["prometheus"], "prometheus"),
        &[
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", d.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let influx_port = free_port();
    let influx_rpc = free_port();
    std::fs::write(
        d.join("influxdb.conf"),
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{influx_rpc}\"\n[meta]\n  dir = \"{0}/meta\"\n[data]\n  dir = \"{0}/data\"\n  wal-dir = \"{0}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{influx_port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n",
            d.join("influx").display()
        ),
    )
    .unwrap();
    let _influx = spawn(&which(&["influxd"], "influxdb"), &["-config".to_string(), d.join("influxdb.conf").display().to_string()]);

    // Seed the daemon through its ingest API, and InfluxDB with the same readings.
    let now = chrono::Utc::now().timestamp_millis();
    let samples = scenario(now);
    // The electricity meter's last 5 hours come later: first it is silent (an alert fires), then
    // it reports (the alert resolves), so that the alert list has a resolved alert too.
    let late = |m: &str, t: i64| m == "e1" && t > now - 5 * H;
    let early: Vec<_> = samples.iter().filter(|(m, t, _)| !late(m, *t)).cloned().collect();
    let later: Vec<_> = samples.iter().filter(|(m, t, _)| late(m, *t)).cloned().collect();
    let post = |part: Vec<Reading>, seq0: u64| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            for (i, chunk) in part.chunks(2000).enumerate() {
                let s: Vec<Value> = chunk.iter().map(|(m, t, v)| json!({"meter": m, "t": t, "v": v.iter().map(|(q, x)| (q.to_string(), json!(x))).collect::<serde_json::Map<_, _>>()})).collect();
                let body = json!({"schema": 1, "gateway": "seed", "seq": seq0 + (i * 2000) as u64, "samples": s});
                let r = client.post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
            }
        }
    };
    post(early, 1).await;
    let alerts = |state: &'static str| {
        let u = format!("{url}/api/v1/alerts?state={state}");
        async move {
            let (_, v) = get_json(&u).await;
            v["alerts"].as_array().map(|a| a.iter().filter_map(|x| x["meter"].as_str().map(str::to_string)).collect::<Vec<_>>()).unwrap_or_default()
        }
    };
    eventually(Duration::from_secs(30), "MeterSilent firing for e1 and h1", || async { let f = alerts("firing").await; (f.contains(&"e1".to_string()) && f.contains(&"h1".to_string())).then_some(()) }).await;
    post(later, 1_000_000).await;
    eventually(Duration::from_secs(30), "MeterSilent resolved for e1", || async { alerts("resolved").await.contains(&"e1".to_string()).then_some(()) }).await;
    // One refused line, so that the ingest error panels have a series.
    let r = client.post(format!("{url}/write?db=x")).body("energy,meter=nobody active_power=1\n").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let influx = format!("http://127.0.0.1:{influx_port}");
    eventually(Duration::from_secs(60), "influxd answers /ping", || {
        let u = format!("{influx}/ping");
        async move { reqwest::get(&u).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;
    let r = client.post(format!("{influx}/query")).form_like("q=CREATE%20DATABASE%20energy").await;
    assert!(r, "CREATE DATABASE failed");
    let mut lines = String::new();
    for (m, t, v) in &samples {
        let carrier = match m.as_str() {
            "e1" => "electricity",
            "w1" => "water",
            _ => "district_heat",
        };
        let fields: Vec<String> = v.iter().map(|(q, x)| format!("{q}={x}")).collect();
        lines.push_str(&format!("energy,meter={m},building=bldg-1,carrier={carrier} {} {t}\n", fields.join(",")));
    }
    let r = client.post(format!("{influx}/write?db=energy&precision=ms")).body(lines).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());

    let from = chrono::DateTime::from_timestamp_millis(now - 7 * 24 * H).unwrap().to_rfc3339();
    let year_start = format!("{year}-01-01T00:00:00+08:00");
    let to = chrono::DateTime::from_timestamp_millis(now + H).unwrap().to_rfc3339();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let mut failures = Vec::new();
    let mut counted = 0;
    for (name, b) in &boards {
        // Template variables from their own queries: the first value.
        let mut vars: Vec<(String, String)> = Vec::new();
        for v in b["templating"]["list"].as_array().cloned().unwrap_or_default() {
            let q = &v["query"]["infinityQuery"];
            let var = v["name"].as_str().unwrap().to_string();
            match infinity(&url, q, &vars, &from, &to).await {
                Ok(rows) => {
                    let col = q["columns"][0]["selector"].as_str().unwrap_or("id");
                    let val = select(&rows[0], col).and_then(Value::as_str).unwrap_or_default().to_string();
                    vars.push((var, val));
                }
                Err(e) => failures.push(format!("{name}: variable `{var}`: {e}")),
            }
        }
        let from = if b["time"]["from"] == "now/y" { year_start.clone() } else { from.clone() };
        for p in panels(b) {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                counted += 1;
                let ty = t["datasource"]["type"].as_str().unwrap_or("");
                let result = match ty {
                    INFINITY => infinity(&url, &t, &vars, &from, &to).await.map(|_| ()),
                    "prometheus" => {
                        let expr = substitute(t["expr"].as_str().unwrap_or(""), &vars, &from, &to);
                        // Scrapes come every second: wait for the series to be there.
                        let deadline = std::time::Instant::now() + Duration::from_secs(60);
                        loop {
                            let (status, v) = get_json(&format!("{prom}/api/v1/query?query={}", enc(&expr))).await;
                            if status == 200 && v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                                break Ok(());
                            }
                            if std::time::Instant::now() > deadline {
                                break Err(format!("PromQL `{expr}` returned nothing: {status} {v}"));
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                    "influxdb" => {
                        let q = substitute(t["query"].as_str().unwrap_or(""), &vars, &from, &to).replace("$timeFilter", "time > now() - 7d");
                        let (status, v) = get_json(&format!("{influx}/query?db=energy&q={}", enc(&q))).await;
                        let series = v["results"][0]["series"].as_array().cloned().unwrap_or_default();
                        if status == 200 && series.iter().any(|s| s["values"].as_array().is_some_and(|x| !x.is_empty())) {
                            Ok(())
                        } else {
                            Err(format!("InfluxQL `{q}` returned nothing: {status} {v}"))
                        }
                    }
                    other => Err(format!("unknown datasource type `{other}`")),
                };
                if let Err(e) = result {
                    failures.push(format!("{name}: panel `{title}`: {e}"));
                }
            }
        }
    }
    assert!(counted >= 30, "only {counted} queries found");
    // The daemon's exposition (alert and per-meter gauges included) passes `promtool check metrics`.
    let (_, metrics) = get_json(&format!("{url}/metrics")).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains("energyd_alerts_firing{") && metrics.contains("energyd_meter_last_reading_age_seconds{"), "{metrics}");
    let mut check = Command::new(which(&["promtool"], "prometheus")).args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write as _;
        check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    }
    let out = check.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(failures.is_empty(), "{} of {counted} queries failed:\n{}", failures.len(), failures.join("\n"));
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}

/// POST a form body; true on 2xx.
trait FormLike {
    async fn form_like(self, body: &str) -> bool;
}

impl FormLike for reqwest::RequestBuilder {
    async fn form_like(self, body: &str) -> bool {
        self.header("content-type", "application/x-www-form-urlencoded").body(body.to_string()).send().await.is_ok_and(|r| r.status().is_success())
    }
}
