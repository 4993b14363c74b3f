//! Weather-normalised savings end to end with the real `energyd` (issue 23).
//!
//! Data of our own making that mimic a heating-dominated office in Taiyuan (cold climate,
//! 寒冷地区): daily mean outdoor temperature 9.5 − 15·cos(2π(day − 15)/365) °C (January about
//! −5.5 °C, July about 24.5 °C, as the city's normals) plus weather noise; district heat use
//! per day 2.0 + 0.9·HDD(14 °C) GJ with ±5 % noise. From 2025 a retrofit saves exactly 10 % of
//! the use, and 2025 is made 1.5 °C colder than 2024, so that the raw year-on-year comparison
//! understates the saving. The weather goes in by `energyd weather import` (a station's daily
//! CSV), the heat meter's counter by `/api/v1/ingest`; the savings come from
//! `GET /api/v1/savings` by meter, building, agency and project.

use std::time::Duration;

use energy_e2e::{get_json, http_client, listening_url, new_token, run, Proc};
use energy_wire::{encode_batch, Batch, Quantity, Sample};

/// 2024-01-01T00:00:00+08:00
const START: i64 = 1_704_038_400_000;
const DAY: i64 = 86_400_000;
/// 2024 (366 days) and 2025.
const DAYS: usize = 731;

const REGISTRY: &str = r#"
[[agency]]
id = "ty-office"
name = "太原市某机关"
level = "city"
[[building]]
id = "ty-b1"
name = "办公楼"
floor_area = 8000.0
weather = "ty-station"
occupants = [ { agency = "ty-office", share = 1.0 } ]
[[meter]]
id = "ty-station"
building = "ty-b1"
carrier = "electricity"
quantity = "outdoor_temperature"
[[meter]]
id = "ty-heat"
building = "ty-b1"
carrier = "district_heat"
[[project]]
id = "ty-retrofit"
name = "办公楼供热系统节能改造"
contract = "shared_savings"
esco = "山西某节能服务公司"
baseline = "2024-01-01/2024-12-31"
reporting = "2025-01-01/2025-12-31"
buildings = ["ty-b1"]
carrier = "district_heat"
share = 0.7
price = 45.0
"#;

/// A fixed pseudo-random sequence in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn true_use(t: f64) -> f64 {
    2.0 + 0.9 * (14.0 - t).max(0.0)
}

/// (date, temperature, use) per day; the truth of the savings over 2025.
fn scenario() -> (Vec<(chrono::NaiveDate, f64, f64)>, f64) {
    let mut r = Lcg(2023);
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let mut weather_noise = 0.0;
    let mut truth = 0.0;
    let days = (0..DAYS)
        .map(|i| {
            let date = start + chrono::Days::new(i as u64);
            let doy = chrono::Datelike::ordinal0(&date) as f64;
            // Weather persists from day to day (AR(1)).
            weather_noise = 0.7 * weather_noise + 2.5 * r.next();
            let colder = if i >= 366 { -1.5 } else { 0.0 };
            let t = 9.5 - 15.0 * (2.0 * std::f64::consts::PI * (doy - 15.0) / 365.0).cos() + weather_noise + colder;
            let base = true_use(t) * (1.0 + 0.05 * r.next());
            let u = if i >= 366 {
                truth += 0.1 * true_use(t);
                0.9 * base
            } else {
                base
            };
            (date, (t * 10.0).round() / 10.0, u)
        })
        .collect();
    (days, truth)
}

/// The heat meter's counter at each local midnight, over `/api/v1/ingest`.
async fn ingest(url: &str, days: &[(chrono::NaiveDate, f64, f64)], token: Option<&str>) {
    let mut counter = 1000.0;
    let mut samples = vec![Sample { meter: "ty-heat".into(), t: START, v: [(Quantity::HeatEnergy, counter)].into_iter().collect() }];
    for (i, (_, _, u)) in days.iter().enumerate() {
        counter += u;
        samples.push(Sample { meter: "ty-heat".into(), t: START + (i as i64 + 1) * DAY, v: [(Quantity::HeatEnergy, counter)].into_iter().collect() });
    }
    let body = encode_batch(&Batch::new("e2e-savings", 1, samples));
    let mut req = http_client().post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
}

/// The weather CSV of the scenario, imported by `energyd weather import`.
fn import_weather(d: &std::path::Path, days: &[(chrono::NaiveDate, f64, f64)]) -> String {
    let mut csv = String::from("station,date,temperature_c\n");
    for (i, (date, t, _)) in days.iter().enumerate() {
        let v = if i == 40 { "NA".to_string() } else { format!("{t}") };
        csv.push_str(&format!("53772,{date},{v}\n"));
    }
    std::fs::write(d.join("taiyuan.csv"), csv).unwrap();
    let (code, out, err) = run("energyd", &["weather", "import", "--config", "energyd.toml", "--meter", "ty-station", "taiyuan.csv"], d);
    assert_eq!(code, 0, "{err}");
    out
}

/// Public disclosure (art. 40) with authentication on: the page, the open data, no login, no
/// meter-level or cost detail; the API still asks for a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_disclosure_needs_no_login_and_shows_verified_savings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    let (admin, entry) = new_token(d, &["--role", "admin", "--name", "ops"]);
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[retention]\nraw_days = 5000\n[public]\nenabled = true\n[auth]\n{entry}"),
    )
    .unwrap();
    let (days, _) = scenario();
    import_weather(d, &days);
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(60)));
    ingest(&url, &days, Some(&admin)).await;
    let client = http_client();
    let r = client.get(format!("{url}/api/v1/savings?meter=ty-heat&reporting=2025-01-01/2025-12-31")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client.get(format!("{url}/public?year=2025")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page = r.text().await.unwrap();
    for want in ["2025 年度公共机构能源资源消费信息公开", "太原市某机关", "办公楼供热系统节能改造", "综合能耗（kgce）", "符合"] {
        assert!(page.contains(want), "page lacks {want}");
    }
    std::fs::write(d.join("public.html"), &page).unwrap();
    let (status, j) = get_json(&format!("{url}/public/data.json?year=2025")).await;
    assert_eq!(status, 200, "{j}");
    let a = &j["agencies"][0];
    assert_eq!(a["id"], "ty-office");
    assert!(a["total_energy_kgce"].as_f64().unwrap() > 0.0 && a["change_vs_last_year_pct"].is_number(), "{a}");
    assert!(a.get("meters").is_none() && a.get("energy_cost_yuan").is_none(), "meter and cost detail stay out: {a}");
    let p = &a["projects"][0];
    assert_eq!(p["ashrae14_pass"], true, "{p}");
    assert!((p["avoided_pct"].as_f64().unwrap() - 10.0).abs() < 2.0, "{p}");
    assert!(p.get("avoided_money").is_none());
    let r = client.get(format!("{url}/public/data.csv?year=2025")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.text().await.unwrap().contains("ty-office"));
    let (status, _) = get_json(&format!("{url}/public?year=2025&agency=x")).await;
    assert_eq!(status, 400);
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taiyuan_retrofit_savings_are_within_their_uncertainty_of_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\ntimezone = \"Asia/Shanghai\"\n[http]\nlisten = \"127.0.0.1:0\"\n[retention]\nraw_days = 5000\n").unwrap();
    let (days, truth) = scenario();

    // check-config names a weather meter that does not exist.
    std::fs::write(d.join("bad.toml"), REGISTRY.replace("weather = \"ty-station\"", "weather = \"ty-nowhere\"")).unwrap();
    std::fs::write(d.join("bad-energyd.toml"), "data_dir = \"store-bad\"\nregistry = \"bad.toml\"\n").unwrap();
    let (code, _, err) = run("energyd", &["check-config", "--config", "bad-energyd.toml"], d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("building `ty-b1`: weather `ty-nowhere` is not a meter"), "{err}");

    // A bad CSV is refused with its line and column, nothing written.
    std::fs::write(d.join("bad.csv"), "date,temperature_c\n2024-01-01,-5.0\n2024-01-02,cold\n").unwrap();
    let (code, _, err) = run("energyd", &["weather", "import", "--config", "energyd.toml", "--meter", "ty-station", "bad.csv"], d);
    assert_eq!(code, 1);
    assert!(err.contains("line 3, column `temperature_c`: `cold` is not a number"), "{err}");

    // The station's daily CSV (one day missing, as real records have).
    let out = import_weather(d, &days);
    assert!(out.contains("730 readings of outdoor_temperature") && out.contains("1 rows without a value skipped"), "{out}");

    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(60)));

    let client = http_client();
    ingest(&url, &days, None).await;
    // The running daemon holds the store: a direct import is refused (it would replay and delete
    // the daemon's log), naming the way through the daemon; through it, the readings are taken.
    let (code, _, err) = run("energyd", &["weather", "import", "--config", "energyd.toml", "--meter", "ty-station", "taiyuan.csv"], d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the daemon is running") && err.contains("--url"), "{err}");
    let (code, out, err) = run("energyd", &["weather", "import", "--config", "energyd.toml", "--meter", "ty-station", "--url", &url, "taiyuan.csv"], d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("730 readings of outdoor_temperature") && out.contains("sent through the daemon"), "{out}");
    // Public disclosure is off unless configured.
    let (status, _) = get_json(&format!("{url}/public")).await;
    assert_eq!(status, 404);

    let periods = "baseline=2024-01-01/2024-12-31&reporting=2025-01-01/2025-12-31";
    let (status, meter) = get_json(&format!("{url}/api/v1/savings?meter=ty-heat&{periods}")).await;
    assert_eq!(status, 200, "{meter}");
    println!("{}", serde_json::to_string_pretty(&meter).unwrap());
    assert_eq!(meter["model"]["form"], "hdd", "{meter}");
    let bp = meter["model"]["heating_balance_point_c"].as_f64().unwrap();
    assert!((13.0..=15.0).contains(&bp), "balance point {bp}");
    let beta = meter["model"]["coefficients"]["beta_hdd"].as_f64().unwrap();
    assert!((beta - 0.9).abs() < 0.05, "β_hdd {beta}");
    assert_eq!(meter["unit"], "GJ");
    assert_eq!(meter["fit"]["ashrae14_pass"], true, "{}", meter["fit"]);
    assert!(meter["fit"]["r2"].as_f64().unwrap() > 0.9);
    assert_eq!(meter["fit"]["n"], 365, "366 days less the one without weather");
    let avoided = meter["reporting"]["avoided"].as_f64().unwrap();
    let u_pct = meter["reporting"]["uncertainty_pct"].as_f64().unwrap();
    let u = u_pct / 100.0 * avoided;
    println!("truth {truth:.1} GJ, reported {avoided:.1} ± {u:.1} GJ (90 %), {:.2} % of the prediction", meter["reporting"]["avoided_pct"]);
    assert!((avoided - truth).abs() <= u, "reported {avoided} ± {u}, truth {truth}");
    let pct = meter["reporting"]["avoided_pct"].as_f64().unwrap();
    assert!((pct - 10.0).abs() < 2.0, "{pct}");
    // The raw comparison beside it understates the saving (2025 was colder).
    let raw = meter["raw"]["change_pct"].as_f64().unwrap();
    println!("raw year-on-year change {raw:.2} % (weather-normalised saving {pct:.2} %)");
    assert!(raw > -7.0, "raw change {raw}: the colder year should hide part of the saving");
    // Normalised under the typical year: 10 %.
    let norm = meter["normalised"]["savings_pct"].as_f64().unwrap();
    assert!((norm - 10.0).abs() < 2.0, "{norm}");

    // The building and the agency: the same meter, the same savings.
    for scope in ["building=ty-b1", "agency=ty-office"] {
        let (status, v) = get_json(&format!("{url}/api/v1/savings?{scope}&{periods}")).await;
        assert_eq!(status, 200, "{v}");
        assert!((v["reporting"]["avoided"].as_f64().unwrap() - avoided).abs() < 1e-6, "{scope}: {v}");
    }
    // The project: periods from the registry, the company's share of the savings.
    let (status, p) = get_json(&format!("{url}/api/v1/savings?project=ty-retrofit")).await;
    assert_eq!(status, 200, "{p}");
    let s = &p["project"]["settlement"];
    assert!((s["due_to_esco"].as_f64().unwrap() - 0.7 * 45.0 * avoided).abs() < 1e-6, "{s}");
    assert!(p["reporting"]["avoided_kgce"].as_f64().unwrap() > 0.0);
    // One contract year, the same as the whole.
    let y = &p["reporting"]["contract_years"];
    assert_eq!(y.as_array().unwrap().len(), 1, "{y}");
    assert!((y[0]["settlement"]["due_to_esco"].as_f64().unwrap() - 0.7 * 45.0 * avoided).abs() < 1e-6, "{y}");

    // The M&V report: JSON, CSV, XLSX, printable HTML, Chinese by default.
    for (format, ctype) in [
        ("json", "application/json"),
        ("csv", "text/csv; charset=utf-8"),
        ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("html", "text/html; charset=utf-8"),
    ] {
        let r = client.get(format!("{url}/api/v1/reports/mv?project=ty-retrofit&format={format}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{format}");
        assert_eq!(r.headers()["content-type"], ctype);
        let body = r.bytes().await.unwrap();
        match format {
            "html" => {
                let h = String::from_utf8_lossy(&body);
                for want in ["办公楼供热系统节能改造 测量与验证报告", "基准模型", "采暖度日模型", "符合", "节能量", "应付节能服务公司", "原始同比变化"] {
                    assert!(h.contains(want), "html lacks {want}");
                }
                std::fs::write(d.join("mv.html"), &body[..]).unwrap();
            }
            "xlsx" => assert!(body.starts_with(b"PK"), "not a zip"),
            "csv" => assert!(String::from_utf8_lossy(&body).lines().count() == 14, "12 months, header and total"),
            _ => assert!((serde_json::from_slice::<serde_json::Value>(&body).unwrap()["reporting"]["avoided"].as_f64().unwrap() - avoided).abs() < 1e-6),
        }
    }
    let r = client.get(format!("{url}/api/v1/reports/mv?project=ty-retrofit&format=html&lang=en")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Baseline model"));

    // The assessment shows raw and weather-normalised energy side by side: raw about −3 %, the
    // normalised change about −10 % (the saving, with the cold year taken out).
    let (status, a) = get_json(&format!("{url}/api/v1/reports/assessment?year=2025&as_of=2026-01-01")).await;
    assert_eq!(status, 200, "{a}");
    let n = &a["weather_normalised"][0];
    assert_eq!(n["agency"], "ty-office", "{a}");
    let (raw_c, norm_c) = (n["raw_change_pct"].as_f64().unwrap(), n["normalised_change_pct"].as_f64().unwrap());
    println!("assessment 2025: raw change {raw_c:.2} %, weather-normalised change {norm_c:.2} %");
    assert!((norm_c + 10.0).abs() < 2.0 && raw_c > -7.0, "{n}");
    let r = client.get(format!("{url}/api/v1/reports/assessment?year=2025&as_of=2026-01-01&format=html")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("天气归一化能耗"));

    // Bad requests are named.
    for (q, want) in [
        ("meter=ty-heat", "reporting=FROM/TO"),
        ("meter=nope&reporting=2025-01-01/2025-12-31", "not in the registry"),
        ("meter=ty-heat&baseline=2024-01-01/2025-06-30&reporting=2025-01-01/2025-12-31", "cannot overlap"),
        ("meter=ty-heat&reporting=2025-01-01/2024-12-31", "ends before it starts"),
        ("meter=ty-heat&baseline=2023-01-01/2023-12-31&reporting=2025-01-01/2025-12-31", "at least 90 % is needed"),
        ("reporting=2025-01-01/2025-12-31", "give one of"),
        ("meter=ty-station&reporting=2025-01-01/2025-12-31", "is a weather meter"),
    ] {
        let (status, v) = get_json(&format!("{url}/api/v1/savings?{q}")).await;
        assert!(status == 400 || status == 404, "{q}: {status} {v}");
        assert!(v["error"].as_str().unwrap_or("").contains(want), "{q}: {v}");
    }
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(60));
}
