//! Two energyd as county and city (issue 21): the county reports its buildings' item-coded
//! consumption upward (`[[upstream]]`) to the city's collector port. The county's readings
//! arrive first (line protocol); the link is broken at the start (the city is not running), the
//! county queues the hours in its outbox and is killed (SIGKILL) and restarted, then the city
//! starts and the outbox drains; the city is then killed and restarted. Throughout, the city's
//! consumption per building and item code equals the county's.

use std::path::Path;
use std::time::Duration;

use energy_e2e::{eventually, free_port, get_json, http_client, listening_url, metric_sum, q, Proc};

/// (county meter, building, carrier, quantity, item code, counter step per quarter hour)
const METERS: &[(&str, &str, &str, &str, &str, f64)] = &[
    ("k-light", "kx", "electricity", "active_energy_import", "01A00", 2.5),
    ("k-hvac", "kx", "electricity", "active_energy_import", "01B00", 6.25),
    ("k-hvac-2", "kx", "electricity", "active_energy_import", "01B00", 1.0),
    ("k-water", "kx", "water", "water_volume", "02000", 0.125),
    ("k-power", "ky", "electricity", "active_energy_import", "01C00", 3.0),
];
/// county building, city building, national id
const BUILDINGS: &[(&str, &str, &str)] = &[("kx", "cx", "110101A001"), ("ky", "cy", "110101A002")];

fn registry(county: bool) -> String {
    let mut r = String::from("[[agency]]\nid = \"ag\"\nname = \"测试机关\"\nlevel = \"county\"\n");
    for (kb, cb, nid) in BUILDINGS {
        let id = if county { kb } else { cb };
        r.push_str(&format!("\n[[building]]\nid = \"{id}\"\nname = \"{id}\"\nnational_id = \"{nid}\"\nfloor_area = 1000.0\noccupants = [ {{ agency = \"ag\", share = 1.0 }} ]\n"));
    }
    if county {
        for (id, b, carrier, _, code, _) in METERS {
            r.push_str(&format!("\n[[meter]]\nid = \"{id}\"\nbuilding = \"{b}\"\ncarrier = \"{carrier}\"\nitem_code = \"{code}\"\n"));
        }
    } else {
        // The city: one meter per building and item code, fed by the county's counters.
        let mut seen = std::collections::BTreeSet::new();
        for (_, b, carrier, _, code, _) in METERS {
            let (_, cb, nid) = BUILDINGS.iter().find(|(kb, _, _)| kb == b).unwrap();
            if seen.insert((cb, code)) {
                r.push_str(&format!(
                    "\n[[meter]]\nid = \"c-{cb}-{code}\"\nbuilding = \"{cb}\"\ncarrier = \"{carrier}\"\nitem_code = \"{code}\"\ncollector = \"{nid}\"\ncollector_meter = \"{code}\"\n"
                ));
            }
        }
    }
    r
}

fn secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn start(dir: &Path, collector: bool) -> (Proc, String) {
    let mut d = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], dir);
    let url = listening_url(&d.wait_line("energyd listening on", Duration::from_secs(60)));
    if collector {
        d.wait_line("collector port listening", Duration::from_secs(30));
    }
    (d, url)
}

/// A root directory with `county` and `city` in it, and the city's collector port.
fn levels() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, u16) {
    let root = tempfile::tempdir().unwrap();
    let (county, city) = (root.path().join("county"), root.path().join("city"));
    std::fs::create_dir_all(&county).unwrap();
    std::fs::create_dir_all(&city).unwrap();
    (root, county, city, free_port())
}

/// The city: its registry, the county's `[[centre]]` key, its collector port.
fn city_config(city: &Path, port: u16) {
    std::fs::write(city.join("registry.toml"), registry(false)).unwrap();
    secret(&city.join("collector-keys.toml"), "[[centre]]\nid = \"110101\"\nkey = \"county-secret\"\n");
    std::fs::write(
        city.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[collector]\nlisten = \"127.0.0.1:{port}\"\nkeys_file = \"collector-keys.toml\"\n"),
    )
    .unwrap();
}

async fn items(url: &str, building: &str, from: &str, to: &str) -> Option<Vec<(String, f64)>> {
    let (status, v) = get_json(&format!("{url}/api/v1/consumption?building={building}&from={}&to={}&interval=day", q(from), q(to))).await;
    if status != 200 {
        return None;
    }
    Some(v["items"].as_array()?.iter().map(|i| (i["code"].as_str().unwrap_or("").to_string(), i["total"].as_f64().unwrap_or(f64::NAN))).collect())
}

async fn metric(url: &str, name: &str) -> f64 {
    let Ok(r) = http_client().get(format!("{url}/metrics")).send().await else { return f64::NAN };
    metric_sum(&r.text().await.unwrap_or_default(), name)
}

fn same(a: &[(String, f64)], b: &[(String, f64)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((c1, v1), (c2, v2))| c1 == c2 && (v1 - v2).abs() <= 1e-6 * v1.abs().max(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn city_sees_the_countys_consumption_per_building_and_item_code_across_a_broken_link_and_restarts() {
    let (_root, county, city, city_port) = levels();

    // The county's readings: every quarter hour from yesterday 00:00 (Shanghai) to now.
    let tz = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let now = chrono::Utc::now().with_timezone(&tz);
    let start_day = now.date_naive() - chrono::Duration::days(1);
    let t0 = start_day.and_hms_opt(0, 0, 0).unwrap().and_local_timezone(tz).unwrap();
    let mut body = String::new();
    let mut k = 0usize;
    let mut t = t0;
    while t <= now {
        for (i, (id, _, _, quantity, _, step)) in METERS.iter().enumerate() {
            // A little unevenness, worked into the counter: quarter k adds step * (1 + (k+i) % 3).
            let _ = i;
            let v = 1000.0 + (0..=k).map(|j| step * (1 + (j + i) % 3) as f64).sum::<f64>();
            body.push_str(&format!("e,meter={id} {quantity}={v} {}\n", t.timestamp()));
        }
        k += 1;
        t += chrono::Duration::minutes(15);
    }
    // The hours compared: from the start to the last whole hour before now.
    let from = t0.to_rfc3339();
    let to_t = now.date_naive().and_hms_opt(now.format("%H").to_string().parse().unwrap(), 0, 0).unwrap().and_local_timezone(tz).unwrap();
    let to = to_t.to_rfc3339();

    std::fs::write(county.join("registry.toml"), registry(true)).unwrap();
    std::fs::write(county.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (mut c, curl) = start(&county, false);
    let r = http_client().post(format!("{curl}/write?precision=s")).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());
    let county_items: Vec<Vec<(String, f64)>> = {
        let mut v = Vec::new();
        for (kb, _, _) in BUILDINGS {
            v.push(items(&curl, kb, &from, &to).await.unwrap());
        }
        v
    };
    assert!(county_items.iter().all(|x| !x.is_empty() && x.iter().all(|(_, v)| *v > 0.0)), "{county_items:?}");
    c.signal("TERM");
    c.wait_exit(Duration::from_secs(60));

    // The county gets its upward link; the city is not running yet (a broken link).
    secret(&county.join("upstream-key.toml"), "key = \"county-secret\"\n");
    std::fs::write(
        county.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"city\"\naddress = \"127.0.0.1:{city_port}\"\ncentre_id = \"110101\"\nkey_file = \"upstream-key.toml\"\nstart = \"{start_day}\"\nheartbeat_s = 2\nfiles_dir = \"daily\"\n"
        ),
    )
    .unwrap();
    let (mut c, curl) = start(&county, false);
    let queued = eventually(Duration::from_secs(60), "the county queues its hours", || async { let n = metric(&curl, "energyd_upstream_pending").await; (n > 0.0).then_some(n) }).await;
    // Killed with the outbox full, restarted: the outbox is still there.
    c.signal("KILL");
    c.wait_exit(Duration::from_secs(30));
    let (mut c, curl) = start(&county, false);
    let again = eventually(Duration::from_secs(60), "the outbox survives the kill", || async { let n = metric(&curl, "energyd_upstream_pending").await; (n > 0.0).then_some(n) }).await;
    assert!(again >= queued, "the outbox lost messages over the kill: {queued} then {again}");

    // The city starts: the link works, the outbox drains.
    city_config(&city, city_port);
    let (mut city_d, city_url) = start(&city, true);
    eventually(Duration::from_secs(120), "the county's outbox drains", || async { (metric(&curl, "energyd_upstream_pending").await == 0.0).then_some(()) }).await;
    for ((_, cb, _), want) in BUILDINGS.iter().zip(&county_items) {
        let got = eventually(Duration::from_secs(60), &format!("city building {cb}"), || async { items(&city_url, cb, &from, &to).await.filter(|g| same(g, want)) }).await;
        assert!(same(&got, want), "{cb}: city {got:?} vs county {want:?}");
    }

    // The city restarts (killed): the same figures.
    city_d.signal("KILL");
    city_d.wait_exit(Duration::from_secs(30));
    let (mut city_d, city_url) = start(&city, true);
    for ((_, cb, _), want) in BUILDINGS.iter().zip(&county_items) {
        let got = items(&city_url, cb, &from, &to).await.unwrap();
        assert!(same(&got, want), "after the city's restart, {cb}: city {got:?} vs county {want:?}");
    }
    // The bureau's page of the city shows 分项能耗 per building, with the county's buildings.
    let page = http_client().get(format!("{city_url}/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("分项能耗") && page.contains("110101A001") && page.contains("01B00") && page.contains("空调用电"), "the page has no item section");
    // The daily files of the data-centre guide for yesterday (a whole day reported).
    let day = start_day.format("%Y%m%d");
    let energy = std::fs::read_to_string(county.join("daily").join(format!("110101{day}Energy.xml"))).expect("the daily Energy.xml");
    let build = std::fs::read_to_string(county.join("daily").join(format!("110101{day}Build.xml"))).expect("the daily Build.xml");
    assert!(energy.contains("<building id=\"110101A001\">") && energy.contains("code=\"01B00\"") && build.contains("110101A002"), "{energy}\n{build}");
    // And the county's figures did not move.
    for ((kb, _, _), want) in BUILDINGS.iter().zip(&county_items) {
        assert!(same(&items(&curl, kb, &from, &to).await.unwrap(), want));
    }
    c.signal("TERM");
    c.wait_exit(Duration::from_secs(60));
    city_d.signal("TERM");
    city_d.wait_exit(Duration::from_secs(60));
}

async fn quarters(url: &str, building: &str, from: &str, to: &str) -> Option<Vec<(String, Vec<f64>)>> {
    let (status, v) = get_json(&format!("{url}/api/v1/consumption?building={building}&from={}&to={}&interval=15min", q(from), q(to))).await;
    if status != 200 {
        return None;
    }
    v["items"].as_array()?.iter().map(|i| Some((i["code"].as_str()?.to_string(), i["periods"].as_array()?.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()))).collect()
}

fn same_quarters(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((c1, v1), (c2, v2))| c1 == c2 && v1.len() == v2.len() && v1.iter().zip(v2).all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1.0)))
}

/// A 15-minute upward link (`interval_minutes = 15`): the city's consumption per building, item
/// code and quarter hour equals the county's; then late readings at the county change quarters
/// already reported, the county restates them and the city's quarters follow (replaced, not
/// doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_quarter_hours_and_late_readings_reach_the_city() {
    let (_root, county, city, city_port) = levels();

    // Readings every quarter hour for the last 6 hours (Shanghai); k-light misses the two
    // readings of a gap 3 hours ago (45 minutes between its readings there: interpolated).
    let tz = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let now = chrono::Utc::now().with_timezone(&tz);
    let quarter = |t: chrono::DateTime<chrono::FixedOffset>| t - chrono::Duration::seconds(t.timestamp().rem_euclid(900));
    let t0 = quarter(now - chrono::Duration::hours(6));
    let gap = quarter(now - chrono::Duration::hours(3));
    let value = |i: usize, k: usize| 1000.0 + (0..=k).map(|j| METERS[i].5 * (1 + (j + i) % 3) as f64).sum::<f64>();
    let mut body = String::new();
    let mut late = String::new();
    let (mut k, mut t) = (0usize, t0);
    let mut gap_end_value = 0.0;
    while t <= now {
        for (i, (id, _, _, quantity, _, _)) in METERS.iter().enumerate() {
            if i == 0 && (t == gap + chrono::Duration::minutes(15) || t == gap + chrono::Duration::minutes(30)) {
                continue;
            }
            if i == 0 && t == gap + chrono::Duration::minutes(45) {
                gap_end_value = value(i, k);
            }
            body.push_str(&format!("e,meter={id} {quantity}={} {}\n", value(i, k), t.timestamp()));
        }
        k += 1;
        t += chrono::Duration::minutes(15);
    }
    // The late readings: the whole gap's consumption in its first quarter.
    for m in [15, 30] {
        late.push_str(&format!("e,meter=k-light active_energy_import={gap_end_value} {}\n", (gap + chrono::Duration::minutes(m)).timestamp()));
    }
    let (from, to) = (t0.to_rfc3339(), quarter(now).to_rfc3339());

    std::fs::write(county.join("registry.toml"), registry(true)).unwrap();
    secret(&county.join("upstream-key.toml"), "key = \"county-secret\"\n");
    std::fs::write(
        county.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"city\"\naddress = \"127.0.0.1:{city_port}\"\ncentre_id = \"110101\"\nkey_file = \"upstream-key.toml\"\ninterval_minutes = 15\nrestate_every_s = 5\nstart = \"{}\"\nheartbeat_s = 2\n",
            t0.date_naive()
        ),
    )
    .unwrap();
    city_config(&city, city_port);
    // The readings are stored before the county's link starts (its first quarters are computed
    // from them), the city is up before.
    let (mut city_d, city_url) = start(&city, true);
    let (mut c, curl) = start(&county, false);
    let r = http_client().post(format!("{curl}/write?precision=s")).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());

    // The quarters reach the city (those computed before the readings were stored are
    // restated too: the first comparison already needs restating to work).
    let mut before = Vec::new();
    for (kb, cb, _) in BUILDINGS {
        let want = quarters(&curl, kb, &from, &to).await.unwrap();
        assert!(want.iter().all(|(_, p)| p.len() == 24 || p.len() == 25) && want.iter().any(|(_, p)| p.iter().any(|x| *x > 0.0)), "{want:?}");
        let got = eventually(Duration::from_secs(180), &format!("city building {cb} per quarter"), || async { quarters(&city_url, cb, &from, &to).await.filter(|g| same_quarters(g, &want)) }).await;
        assert!(same_quarters(&got, &want));
        before.push(want);
    }

    // Late readings at the county: the gap's quarters change there, and then at the city.
    let r = http_client().post(format!("{curl}/write?precision=s")).body(late).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());
    let after = quarters(&curl, "kx", &from, &to).await.unwrap();
    let light = |x: &[(String, Vec<f64>)]| x.iter().find(|(c, _)| c == "01A00").unwrap().1.clone();
    let (b0, a0) = (light(&before[0]), light(&after));
    assert!(b0.iter().zip(&a0).any(|(x, y)| (x - y).abs() > 1e-6), "the late readings changed nothing at the county: {b0:?} {a0:?}");
    // The sum over the window is the same (the gap's consumption moved, none was added).
    assert!((b0.iter().sum::<f64>() - a0.iter().sum::<f64>()).abs() < 1e-6);
    let got = eventually(Duration::from_secs(180), "the restated quarters reach the city", || async { quarters(&city_url, "cx", &from, &to).await.filter(|g| same_quarters(g, &after)) }).await;
    assert!(same_quarters(&got, &after));
    assert!(metric(&curl, "energyd_upstream_restated_total").await >= 1.0);
    // The other building did not move.
    assert!(same_quarters(&quarters(&city_url, "cy", &from, &to).await.unwrap(), &before[1]));

    c.signal("TERM");
    c.wait_exit(Duration::from_secs(60));
    city_d.signal("TERM");
    city_d.wait_exit(Duration::from_secs(60));
}
