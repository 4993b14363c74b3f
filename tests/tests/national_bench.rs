//! Figures of the national protocol (issue 21), run by hand (ignored in the test command):
//!
//! ```sh
//! cargo build -p energyd --bins && cargo nextest run -p energy-e2e --test national_bench --run-ignored only --no-capture
//! ```
//!
//! - reports accepted per second: `COLLECTORS` emulated collectors (tests/src/national.rs), each
//!   sending `REPORTS` reports of `METERS` values in turn, each awaiting its acknowledgement
//!   (so each report is durable before the next);
//! - the upstream lag for 1,000 buildings: a county with 1,000 buildings (two item-coded meters
//!   each, hourly readings since yesterday) reporting to a city: the time to queue the hours,
//!   and the time from the city's start until the county's outbox is empty, per hour reported.

use std::path::Path;
use std::time::{Duration, Instant};

use energy_e2e::national::{Collector, Framing, Value};
use energy_e2e::{eventually, free_port, get_json, http_client, listening_url, metric_sum, Proc};

const COLLECTORS: usize = 20;
const REPORTS: usize = 50;
const METERS: usize = 10;
const BUILDINGS: usize = 1000;

fn secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn start(dir: &Path, collector: bool) -> (Proc, String) {
    let mut d = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], dir);
    let url = listening_url(&d.wait_line("energyd listening on", Duration::from_secs(120)));
    if collector {
        d.wait_line("collector port listening", Duration::from_secs(60));
    }
    (d, url)
}

async fn metric(url: &str, name: &str) -> f64 {
    let Ok(r) = http_client().get(format!("{url}/metrics")).send().await else { return f64::NAN };
    metric_sum(&r.text().await.unwrap_or_default(), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn reports_per_second_and_upstream_lag_for_1000_buildings() {
    let root = tempfile::tempdir().unwrap();
    // --- reports per second ---
    let d = root.path().join("centre");
    std::fs::create_dir_all(&d).unwrap();
    let mut reg = String::from("[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"county\"\n");
    let mut keys = String::new();
    for c in 0..COLLECTORS {
        let nid = format!("110101A{c:03}");
        reg.push_str(&format!("\n[[building]]\nid = \"b{c}\"\nname = \"b{c}\"\nnational_id = \"{nid}\"\nfloor_area = 1000.0\noccupants = [ {{ agency = \"ag\", share = 1.0 }} ]\n"));
        for m in 0..METERS {
            reg.push_str(&format!("\n[[meter]]\nid = \"b{c}-m{m}\"\nbuilding = \"b{c}\"\ncarrier = \"electricity\"\nitem_code = \"01A00\"\ncollector = \"{nid}\"\ncollector_meter = \"{m}\"\n"));
        }
        keys.push_str(&format!("[[collector]]\nbuilding = \"{nid}\"\nkey = \"k{c}\"\n"));
    }
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    secret(&d.join("keys.toml"), &keys);
    let port = free_port();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[collector]\nlisten = \"127.0.0.1:{port}\"\nkeys_file = \"keys.toml\"\n")).unwrap();
    let (mut centre, _url) = start(&d, true);
    let addr = format!("127.0.0.1:{port}");
    let tz = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let base = chrono::Utc::now().with_timezone(&tz) - chrono::Duration::days(2);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..COLLECTORS {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut col = Collector::connect(&addr, Framing::Guideline, None, &format!("110101A{c:03}"), "01").await.unwrap();
            assert!(col.login(&format!("k{c}")).await.unwrap());
            for r in 0..REPORTS {
                let t = (base + chrono::Duration::minutes(15 * r as i64)).format("%Y%m%d%H%M%S").to_string();
                let values: Vec<Value> = (0..METERS).map(|m| Value { meter: m.to_string(), function: "1".into(), coding: "01A00".into(), value: 100.0 + r as f64 }).collect();
                col.report("report", r as u32, &t, &values, 1).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = COLLECTORS * REPORTS;
    println!("FIGURE reports accepted: {n} reports of {METERS} values from {COLLECTORS} collectors in {secs:.2} s = {:.0} reports/s ({:.0} values/s), each acknowledged after its values were durable", n as f64 / secs, (n * METERS) as f64 / secs);
    centre.signal("TERM");
    centre.wait_exit(Duration::from_secs(60));

    // --- upstream lag for 1,000 buildings ---
    let (county, city) = (root.path().join("county"), root.path().join("city"));
    std::fs::create_dir_all(&county).unwrap();
    std::fs::create_dir_all(&city).unwrap();
    let now = chrono::Utc::now().with_timezone(&tz);
    let start_day = now.date_naive() - chrono::Duration::days(1);
    let t0 = start_day.and_hms_opt(0, 0, 0).unwrap().and_local_timezone(tz).unwrap();
    let (mut kreg, mut creg) = (String::from("[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"county\"\n"), String::from("[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n"));
    for b in 0..BUILDINGS {
        let nid = format!("110101{}{:03}", if b < 1000 { 'A' } else { 'B' }, b % 1000);
        let bl = format!("\n[[building]]\nid = \"b{b}\"\nname = \"b{b}\"\nnational_id = \"{nid}\"\nfloor_area = 1000.0\noccupants = [ {{ agency = \"ag\", share = 1.0 }} ]\n");
        kreg.push_str(&bl);
        creg.push_str(&bl);
        for code in ["01A00", "01B00"] {
            kreg.push_str(&format!("\n[[meter]]\nid = \"b{b}-{code}\"\nbuilding = \"b{b}\"\ncarrier = \"electricity\"\nitem_code = \"{code}\"\n"));
            creg.push_str(&format!("\n[[meter]]\nid = \"c{b}-{code}\"\nbuilding = \"b{b}\"\ncarrier = \"electricity\"\nitem_code = \"{code}\"\ncollector = \"{nid}\"\ncollector_meter = \"{code}\"\n"));
        }
    }
    std::fs::write(county.join("registry.toml"), kreg).unwrap();
    std::fs::write(city.join("registry.toml"), creg).unwrap();
    std::fs::write(county.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (mut k, kurl) = start(&county, false);
    let mut t = t0;
    let mut hours = 0usize;
    while t <= now {
        let mut body = String::new();
        for b in 0..BUILDINGS {
            for (i, code) in ["01A00", "01B00"].iter().enumerate() {
                body.push_str(&format!("e,meter=b{b}-{code} active_energy_import={} {}\n", 1000.0 + (hours * (i + 1)) as f64 * 1.5, t.timestamp()));
            }
        }
        let r = http_client().post(format!("{kurl}/write?precision=s")).body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204);
        hours += 1;
        t += chrono::Duration::hours(1);
    }
    k.signal("TERM");
    k.wait_exit(Duration::from_secs(120));
    let city_port = free_port();
    secret(&county.join("up.toml"), "key = \"ck\"\n");
    std::fs::write(county.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"city\"\naddress = \"127.0.0.1:{city_port}\"\ncentre_id = \"110101\"\nkey_file = \"up.toml\"\nstart = \"{start_day}\"\n")).unwrap();
    let queue_start = Instant::now();
    let (mut k, kurl) = start(&county, false);
    let queued = eventually(Duration::from_secs(1800), "the county queues its hours", || async {
        let a = metric(&kurl, "energyd_upstream_pending").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b = metric(&kurl, "energyd_upstream_pending").await;
        (a > 0.0 && a == b).then_some(b)
    })
    .await;
    let queue_secs = queue_start.elapsed().as_secs_f64();
    secret(&city.join("keys.toml"), "[[centre]]\nid = \"110101\"\nkey = \"ck\"\n");
    std::fs::write(city.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[collector]\nlisten = \"127.0.0.1:{city_port}\"\nkeys_file = \"keys.toml\"\n")).unwrap();
    let (mut c, curl) = start(&city, true);
    let drain_start = Instant::now();
    eventually(Duration::from_secs(3600), "the outbox drains", || async { (metric(&kurl, "energyd_upstream_pending").await == 0.0).then_some(()) }).await;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let reported_hours = (queued as usize).div_ceil(BUILDINGS).max(1);
    println!(
        "FIGURE upstream, {BUILDINGS} buildings x 2 item codes: {queued} messages ({reported_hours} hours incl. the origin) queued in {queue_secs:.1} s (accounting included), drained to the city in {drain_secs:.1} s = {:.0} messages/s; one hour of {BUILDINGS} buildings: {:.1} s to queue + {:.1} s to send",
        queued / drain_secs,
        queue_secs / reported_hours as f64,
        drain_secs / reported_hours as f64
    );
    let (_, v) = get_json(&format!("{curl}/api/v1/collectors")).await;
    assert!(v["unassigned"].as_array().is_some_and(Vec::is_empty), "every city meter is mapped: {}", v["unassigned"]);
    k.signal("TERM");
    k.wait_exit(Duration::from_secs(120));
    c.signal("TERM");
    c.wait_exit(Duration::from_secs(120));
}
