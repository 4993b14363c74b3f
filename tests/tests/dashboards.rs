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
//!
//! `dashboards_are_well_formed_against_the_real_metrics` checks the files as Grafana takes them
//! (Grafana itself does not run here): a unit and thresholds on every panel, every data-source
//! reference a data-source variable that `__inputs` makes an import ask for, every PromQL query
//! parsed by `promtool` and reading metrics the running `energyd demo` (daemon and gateway)
//! exposes or the sources register, and `deploy/prometheus/demo.yml` scraping the demo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use energy_e2e::{eventually, free_port, get_json, http_client, listening_url, profiles_dir, repo_root, Mosquitto, Proc};
use serde_json::{json, Value};

const INFINITY: &str = "yesoreyeram-infinity-datasource";
/// The data-source variables every reference goes through, with their plugin types and the
/// `__inputs` a UI import asks for.
const DATASOURCE_VARS: &[(&str, &str, &str)] = &[("ds_energyd", INFINITY, "DS_ENERGYD"), ("ds_prometheus", "prometheus", "DS_PROMETHEUS"), ("ds_influxdb", "influxdb", "DS_INFLUXDB")];

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

/// The end of a log file, for a failure message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Prometheus on a free port with `<d>/prometheus.yml`, once it says it is ready (`/-/ready`);
/// its log in `<d>/prometheus.log`. A port taken between choosing it and binding it (other
/// tests start servers at the same time) makes Prometheus exit: it is started again on another
/// port, three times at most.
async fn start_prometheus(d: &Path) -> (Server, u16) {
    for attempt in 1..=3 {
        let port = free_port();
        let log = std::fs::File::create(d.join("prometheus.log")).unwrap();
        let child = Command::new(which(&["prometheus"], "prometheus"))
            .args([
                format!("--config.file={}", d.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", d.join("prom-data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        let mut server = Server { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = server.child.try_wait() {
                eprintln!("prometheus exited ({st}) at start, attempt {attempt}: {}", tail(&d.join("prometheus.log")));
                break;
            }
            let ready = reqwest::get(format!("http://127.0.0.1:{port}/-/ready")).await.ok().is_some_and(|r| r.status().is_success());
            if ready {
                return (server, port);
            }
            assert!(std::time::Instant::now() < deadline, "prometheus not ready in 60 s: {}", tail(&d.join("prometheus.log")));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    panic!("prometheus did not start in three attempts: {}", tail(&d.join("prometheus.log")));
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

/// `${__from:date:FMT}` / `${__to:date:FMT}` of an RFC 3339 time, for the formats the
/// dashboards use: `iso`, `YYYY`, `YYYY-MM-DD`.
fn date_macro(t: &str, fmt: &str) -> String {
    match fmt {
        "YYYY" => t[..4].to_string(),
        "YYYY-MM-DD" => t[..10].to_string(),
        _ => t.to_string(),
    }
}

/// Substitutes template variables and Grafana's time macros.
fn substitute(s: &str, vars: &[(String, String)], from: &str, to: &str) -> String {
    let mut out = s.to_string();
    for (name, t) in [("__from", from), ("__to", to)] {
        for fmt in ["iso", "YYYY-MM-DD", "YYYY"] {
            out = out.replace(&format!("${{{name}:date:{fmt}}}"), &date_macro(t, fmt));
        }
    }
    let mut out = out.replace("$__rate_interval", "1m").replace("$__interval", "1h");
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
    let mut rows = rows(select(&v, root).unwrap_or(&Value::Null));
    if let Some(f) = q["filterExpression"].as_str().filter(|f| !f.is_empty()) {
        let f = substitute(f, vars, from, to);
        rows.retain(|r| filter_passes(&f, r));
    }
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

/// Infinity's `filterExpression` as the dashboards use it: `a == 'x' && b == 'y'`.
fn filter_passes(expr: &str, row: &Value) -> bool {
    expr.split("&&").all(|clause| {
        let (k, v) = clause.split_once("==").unwrap_or_else(|| panic!("filterExpression clause `{clause}` is not `field == 'value'`"));
        let want = v.trim().trim_matches('\'');
        select(row, k.trim()).and_then(Value::as_str) == Some(want)
    })
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
            let amps = kw * 1000.0 / (3.0 * 230.0);
            out.push((
                "e1".to_string(),
                t,
                vec![("active_energy_import", e), ("active_power", kw), ("voltage_l1", 229.0), ("voltage_l2", 231.0), ("voltage_l3", 230.0), ("current_l1", amps), ("current_l2", amps), ("current_l3", amps)],
            ));
            out.push(("w1".to_string(), t, vec![("water_volume", w), ("flow_rate", 0.02)]));
            if t <= now - 5 * H {
                out.push(("h1".to_string(), t, vec![("heat_energy", h), ("heat_power", 50.0), ("supply_temperature", 55.0), ("return_temperature", 42.0)]));
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

    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: energyd\n    static_configs:\n      - targets: ['{daemon_addr}']\n  - job_name: energy-gateway\n    static_configs:\n      - targets: ['127.0.0.1:{gw_health}']\n"
        ),
    )
    .unwrap();
    let (mut prom_server, prom_port) = start_prometheus(d).await;
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
            if v["type"] == "datasource" {
                continue;
            }
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
                            // A Prometheus that has stopped answers nothing: say so at once, not
                            // after every panel's minute.
                            if let Ok(Some(st)) = prom_server.child.try_wait() {
                                panic!("prometheus exited ({st}) during the test: {}", tail(&d.join("prometheus.log")));
                            }
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

/// Every `datasource` object in `v`, with where it is.
fn datasource_refs(v: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "datasource" && x.is_object() {
                    out.push((at.to_string(), x.clone()));
                }
                let here = o.get("title").and_then(Value::as_str).map_or_else(|| at.to_string(), |t| format!("{at} > {t}"));
                datasource_refs(x, &here, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| datasource_refs(x, at, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregations, keywords or label names (label matchers, ranges, strings and the groupings of
/// `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` are skipped).
fn promql_metrics(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan"];
    // Aggregations may put `by (...)` between their name and their parenthesis.
    const AGGREGATIONS: &[&str] = &["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"];
    let c: Vec<char> = expr.chars().collect();
    let (mut i, mut out) = (0, Vec::new());
    let skip_group = |i: &mut usize, open: char, close: char| {
        let mut depth = 0;
        while *i < c.len() {
            if c[*i] == open {
                depth += 1;
            } else if c[*i] == close {
                depth -= 1;
                if depth == 0 {
                    *i += 1;
                    return;
                }
            }
            *i += 1;
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' {
            i += 1;
            while i < c.len() && c[i] != ch {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '{' {
            skip_group(&mut i, '{', '}');
        } else if ch == '[' {
            skip_group(&mut i, '[', ']');
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                if c.get(j) == Some(&'(') {
                    i = j;
                    skip_group(&mut i, '(', ')');
                }
            } else if c.get(j) != Some(&'(') && !AGGREGATIONS.contains(&word.as_str()) {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The metric names of a Prometheus text exposition.
fn exposed(text: &str) -> std::collections::BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).filter_map(|l| l.split(['{', ' ']).next()).map(str::to_string).collect()
}

/// Every metric name the daemon's and the gateway's sources register (string literals
/// `"energyd_..."` and `"energy_gateway_..."`), with the series a histogram exposes.
fn metric_names_in_sources() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split('"').skip(1).step_by(2) {
                    if (part.starts_with("energyd_") || part.starts_with("energy_gateway_")) && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        for suffix in ["", "_bucket", "_sum", "_count"] {
                            out.insert(format!("{part}{suffix}"));
                        }
                    }
                }
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(&repo_root().join("daemon/src"), &mut out);
    walk(&repo_root().join("gateway/src"), &mut out);
    out
}

/// The `[default: X]` of option `--name` in clap's help text.
fn help_default(help: &str, name: &str) -> String {
    let at = help.find(&format!("--{name} ")).unwrap_or_else(|| panic!("no --{name} in:\n{help}"));
    let rest = &help[at..];
    let end = rest[2..].find("\n  -").map_or(rest.len(), |e| e + 2);
    let part = &rest[..end];
    let d = part.find("[default: ").unwrap_or_else(|| panic!("no default for --{name} in:\n{part}"));
    part[d + 10..].split(']').next().unwrap().to_string()
}

/// The dashboards as files, without Grafana: every panel has a unit and thresholds (steps
/// ascending after a base); every data-source reference goes through a data-source variable
/// that a UI import asks for (`__inputs`); every PromQL query parses (`promtool check rules`)
/// and reads metrics the daemon or the gateway exposes (the running demo's daemon and gateway,
/// and the names their sources register); the agency dashboard follows the time picker; the
/// building dashboard has voltage, current, heat and daily water panels in V, A, GJ, °C and m³;
/// the fleet dashboard reads the gateway metrics the demo's gateway serves, and
/// `deploy/prometheus/demo.yml` scrapes the demo's daemon and gateway where the demo listens by
/// default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_are_well_formed_against_the_real_metrics() {
    let _ = http_client(); // installs the TLS provider reqwest needs
    let boards = dashboards();
    let mut problems = Vec::new();
    let mut units = std::collections::BTreeSet::new();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for (name, b) in &boards {
        // Data sources: declared variables, asked for by `__inputs`, referenced everywhere.
        let inputs: Vec<(String, String)> = b["__inputs"].as_array().cloned().unwrap_or_default().iter().map(|i| (i["name"].as_str().unwrap_or("").to_string(), i["pluginId"].as_str().unwrap_or("").to_string())).collect();
        let mut declared = Vec::new();
        for v in b["templating"]["list"].as_array().cloned().unwrap_or_default().iter().filter(|v| v["type"] == "datasource") {
            let var = v["name"].as_str().unwrap_or("");
            let Some(&(_, ty, input)) = DATASOURCE_VARS.iter().find(|(n, ..)| *n == var) else {
                problems.push(format!("{name}: data-source variable `{var}` is not one of {DATASOURCE_VARS:?}"));
                continue;
            };
            if v["query"] != ty {
                problems.push(format!("{name}: variable `{var}` must list data sources of type {ty}, not {}", v["query"]));
            }
            if v["current"]["value"] != format!("${{{input}}}") || !inputs.contains(&(input.to_string(), ty.to_string())) {
                problems.push(format!("{name}: variable `{var}` must default to ${{{input}}}, an __inputs entry of plugin {ty} (inputs: {inputs:?})"));
            }
            declared.push((var.to_string(), ty.to_string()));
        }
        if inputs.len() != declared.len() {
            problems.push(format!("{name}: __inputs {inputs:?} do not match the data-source variables {declared:?}"));
        }
        let mut refs = Vec::new();
        datasource_refs(b, name, &mut refs);
        assert!(!refs.is_empty(), "{name}: no data-source references");
        for (at, r) in refs {
            let uid = r["uid"].as_str().unwrap_or("");
            let ok = declared.iter().any(|(var, ty)| uid == format!("${{{var}}}") && r["type"] == ty.as_str());
            if !ok {
                problems.push(format!("{at}: data source {r} is not a declared data-source variable of its type ({declared:?})"));
            }
        }
        // Units and thresholds on every panel.
        for p in panels(b) {
            let title = p["title"].as_str().unwrap_or("?");
            let d = &p["fieldConfig"]["defaults"];
            match d["unit"].as_str() {
                Some(u) if !u.trim().is_empty() => {
                    units.insert(u.to_string());
                }
                _ => problems.push(format!("{name}: panel `{title}` has no unit")),
            }
            let steps = d["thresholds"]["steps"].as_array().cloned().unwrap_or_default();
            let values: Vec<Option<f64>> = steps.iter().map(|s| s["value"].as_f64()).collect();
            let ascending = values.windows(2).skip(1).all(|w| w[0] < w[1]);
            if steps.is_empty() || values[0].is_some() || values[1..].iter().any(Option::is_none) || !ascending || steps.iter().any(|s| !s["color"].is_string()) {
                problems.push(format!("{name}: panel `{title}` needs thresholds: a base step (value null) then ascending values, each with a color: {steps:?}"));
            }
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                if let Some(e) = t["expr"].as_str() {
                    exprs.push((format!("{name}: panel `{title}`"), e.to_string()));
                }
            }
        }
    }
    for u in ["kwatth", "kwatt", "volt", "amp", "m3", "suffix: GJ", "celsius"] {
        if !units.contains(u) {
            problems.push(format!("no panel in unit `{u}` (units used: {units:?})"));
        }
    }
    let board = |n: &str| boards.iter().find(|(f, _)| f == n).map(|(_, b)| b.clone()).unwrap();
    let queries = |b: &Value| -> Vec<(String, String, String)> {
        panels(b).iter().flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default().into_iter().map(move |t| (p["title"].as_str().unwrap_or("").to_string(), p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("").to_string(), t["url"].as_str().or(t["expr"].as_str()).unwrap_or("").to_string()))).collect()
    };
    // The agency dashboard's figures follow the time picker (all but the live alert list).
    for (title, _, url) in queries(&board("agency.json")) {
        if !url.starts_with("/api/v1/alerts") && !url.contains("${__to:date:") {
            problems.push(format!("agency.json: panel `{title}`: `{url}` does not follow the time picker"));
        }
    }
    // The building dashboard: voltage and current per phase, heat, daily water, in their units.
    let building = queries(&board("building.json"));
    let has = |unit: &str, needle: &str| building.iter().any(|(_, u, q)| u == unit && q.contains(needle));
    for (unit, needle) in [
        ("volt", "quantity=voltage_l1"),
        ("volt", "quantity=voltage_l3"),
        ("amp", "quantity=current_l1"),
        ("amp", "quantity=current_l3"),
        ("suffix: GJ", "carrier=district_heat"),
        ("kwatt", "quantity=heat_power"),
        ("celsius", "quantity=supply_temperature"),
        ("celsius", "quantity=return_temperature"),
        ("m3", "carrier=water&from=${__from:date:iso}&to=${__to:date:iso}&interval=day"),
    ] {
        if !has(unit, needle) {
            problems.push(format!("building.json: no panel in `{unit}` querying `{needle}`"));
        }
    }

    // PromQL parses: every expression (variables given values) as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let vars = [("building".to_string(), "bldg-1".to_string()), ("agency".to_string(), "ag-a".to_string())];
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        let e = substitute(e, &vars, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        rules.push_str(&format!("      - record: dashboard:query_{i}\n        expr: {}\n", serde_json::to_string(&e).unwrap()));
    }
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    let out = Command::new(which(&["promtool"], "prometheus")).args(["check", "rules"]).arg(dir.path().join("rules.yml")).output().unwrap();
    assert!(out.status.success(), "promtool check rules: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(exprs.len() >= 15, "only {} PromQL queries", exprs.len());

    // The metrics: the running demo's daemon and gateway, and the names the sources register.
    let (daemon_port, gw_port) = (free_port(), free_port());
    let pd = profiles_dir();
    let data = dir.path().join("demo");
    let args = [
        "demo",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{daemon_port}"),
        "--gateway-listen",
        &format!("127.0.0.1:{gw_port}"),
        "--interval-ms",
        "300",
        "--no-seed",
        "--profiles",
        pd.to_str().unwrap(),
    ];
    let mut demo = Proc::spawn("energyd", &args, dir.path());
    let url = listening_url(&demo.wait_line("listening on", Duration::from_secs(60)));
    let gw = format!("http://127.0.0.1:{gw_port}");
    // The gateway has polled and delivered: its uplink counts acknowledged samples.
    let gw_metrics = eventually(Duration::from_secs(60), "the demo gateway's /metrics with delivered samples", || {
        let u = format!("{gw}/metrics");
        async move {
            let text = reqwest::get(&u).await.ok()?.text().await.ok()?;
            text.lines().any(|l| l.starts_with("energy_gateway_uplink_samples_total ") && !l.ends_with(" 0")).then_some(text)
        }
    })
    .await;
    let (_, daemon_metrics) = get_json(&format!("{url}/metrics")).await;
    let mut known = exposed(&gw_metrics);
    known.extend(exposed(daemon_metrics.as_str().unwrap_or_default()));
    let live = known.clone();
    known.extend(metric_names_in_sources());
    for (at, e) in &exprs {
        for m in promql_metrics(e) {
            if !known.contains(&m) {
                problems.push(format!("{at}: `{m}` is not a metric of the daemon or the gateway (`{e}`)"));
            }
        }
    }
    // The fleet panels that show the gateway read metrics the demo's gateway serves.
    let fleet_gateway: std::collections::BTreeSet<String> = queries(&board("fleet.json")).iter().flat_map(|(_, _, q)| promql_metrics(q)).filter(|m| m.starts_with("energy_gateway_")).collect();
    for m in ["energy_gateway_uplink_samples_total", "energy_gateway_samples_total", "energy_gateway_queue_depth"] {
        if !fleet_gateway.contains(m) || !live.contains(m) {
            problems.push(format!("fleet.json: `{m}` must be on the fleet dashboard and served by the demo's gateway (fleet reads {fleet_gateway:?})"));
        }
    }
    demo.signal("TERM");
    let _ = demo.wait_exit(Duration::from_secs(60));

    // deploy/prometheus/demo.yml scrapes the demo where it listens by default, and is valid.
    let (code, help, _) = energy_e2e::run("energyd", &["demo", "--help"], dir.path());
    assert_eq!(code, 0, "{help}");
    let conf = std::fs::read_to_string(repo_root().join("deploy/prometheus/demo.yml")).unwrap();
    for (job, opt) in [("energyd", "listen"), ("energy-gateway", "gateway-listen")] {
        let target = help_default(&help, opt);
        let block = conf.split("- job_name: ").find(|b| b.starts_with(job) && b[job.len()..].starts_with('\n')).unwrap_or_else(|| panic!("no job {job} in demo.yml"));
        if !block.contains(&format!("\"{target}\"")) {
            problems.push(format!("deploy/prometheus/demo.yml: job {job} does not scrape {target} (energyd demo --{opt}'s default)"));
        }
    }
    let out = Command::new(which(&["promtool"], "prometheus")).args(["check", "config", "--syntax-only"]).arg(repo_root().join("deploy/prometheus/demo.yml")).output().unwrap();
    assert!(out.status.success(), "promtool check config demo.yml: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn promql_metric_names_are_found() {
    // (expression, the metrics it reads), worked by hand.
    let cases: &[(&str, &[&str])] = &[
        ("sum(energyd_gateway_up)", &["energyd_gateway_up"]),
        ("sum by (meter) (energyd_meter_active_power_watts{building=\"b1\"}) / 1000", &["energyd_meter_active_power_watts"]),
        ("histogram_quantile(0.99, sum by (le) (rate(energyd_store_commit_duration_seconds_bucket[5m])))", &["energyd_store_commit_duration_seconds_bucket"]),
        ("topk(20, max by (meter) (energyd_meter_last_reading_age_seconds))", &["energyd_meter_last_reading_age_seconds"]),
        ("a_total / on (instance) group_left (gateway) b_info > 1e3", &["a_total", "b_info"]),
        ("rate(x{job=~\"a|b\", le=\"+Inf\"}[1m]) offset 5m", &["x"]),
    ];
    for (e, want) in cases {
        assert_eq!(promql_metrics(e), want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{e}");
    }
}
