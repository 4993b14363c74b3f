//! The bureau's web application in headless Chromium against the real daemon with `[auth]`:
//! users made with `energyd user add` (password on standard input), logging in as bureau,
//! engineer and agency; the period picker; the drill-down from the jurisdiction to a meter; an
//! engineer recording a replacement in the meter's form and the figures changing; an agency
//! user refused another agency's pages by URL; the page's figures equal to the API's.
//! Screenshots are kept in target/test-artifacts/web/.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{Datelike, TimeZone};
use energy_e2e::browser::{artifacts, Browser};
use energy_e2e::{bin, http_client, listening_url, new_token, Proc};
use energy_wire::{encode_batch, Batch, Quantity, Sample};

const REGISTRY: &str = r#"
[[agency]]
id = "fin"
name = "市财政局"
level = "city"
responsible = "赵处长"
phone = "0531-8888 6666"
[[agency]]
id = "edu"
name = "市教育局"
level = "city"
responsible = "钱主任"
filler = "孙科员"
[[tariff]]
carrier = "electricity"
price = 0.6
tou = [ { from = 8, to = 12, price = 1.0 }, { from = 23, to = 7, price = 0.3, name = "valley" } ]
[[building]]
id = "fin-main"
name = "财政大楼"
floor_area = 5000.0
occupants = [ { agency = "fin", share = 1.0 } ]
[[building]]
id = "edu-main"
name = "教育大楼"
floor_area = 8000.0
occupants = [ { agency = "edu", share = 1.0 } ]
[[meter]]
id = "fin-elec"
name = "财政总表"
building = "fin-main"
carrier = "electricity"
[[meter]]
id = "fin-water"
building = "fin-main"
carrier = "water"
[[meter]]
id = "edu-elec"
name = "教育总表"
building = "edu-main"
carrier = "electricity"
"#;

/// Meters are silent after 3 s without a reading: every meter of the test (its readings stop at
/// the last whole hour) fires.
const ALERTS: &str = "[alerts]\ninterval = \"500ms\"\n[[alerts.rule]]\nname = \"MeterSilent\"\nkind = \"meter_silent\"\nexpected_interval = \"1s\"\nintervals = 3\n";

const PASSWORD: &str = "a long enough secret";
const H: i64 = 3_600_000;

fn add_user(dir: &std::path::Path, name: &str, role: &str, agency: Option<&str>) {
    let mut args = vec!["user", "add", name, "--config", "energyd.toml", "--role", role];
    if let Some(a) = agency {
        args.extend(["--agency", a]);
    }
    let mut child = Command::new(bin("energyd")).args(&args).current_dir(dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "energyd user add {name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Hourly counters from 1 January of last year to the last hour: fin-elec 10 kWh/h, except that
/// its meter is replaced `replaced_at` (its counter starts again from 0, no event recorded yet);
/// fin-water 0.5 m³/h; edu-elec 4 kWh/h.
async fn ingest(url: &str, token: &str, start: i64, end: i64, replaced_at: i64) {
    let client = http_client();
    let hours = (end - start) / H;
    let mut seq = 1u64;
    let series: [(&str, Quantity, Box<dyn Fn(i64) -> f64>); 3] = [
        ("fin-elec", Quantity::ActiveEnergyImport, Box::new(move |t| if t < replaced_at { 10.0 * ((t - start) / H) as f64 } else { 10.0 * ((t - replaced_at) / H) as f64 })),
        ("fin-water", Quantity::WaterVolume, Box::new(move |t| 0.5 * ((t - start) / H) as f64)),
        ("edu-elec", Quantity::ActiveEnergyImport, Box::new(move |t| 4.0 * ((t - start) / H) as f64)),
    ];
    for (meter, q, f) in &series {
        let samples: Vec<Sample> = (0..=hours).map(|h| start + h * H).map(|t| Sample { meter: meter.to_string(), t, v: [(*q, f(t))].into_iter().collect() }).collect();
        for chunk in samples.chunks(5000) {
            let body = encode_batch(&Batch::new("e2e-web", seq, chunk.to_vec()));
            seq += chunk.len() as u64;
            let r = client.post(format!("{url}/api/v1/ingest")).bearer_auth(token).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
        }
    }
}

async fn api(url: &str, token: &str, path: &str) -> serde_json::Value {
    let r = http_client().get(format!("{url}{path}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn log_in(b: &mut Browser, url: &str, name: &str) {
    b.goto(&format!("{url}/login"));
    b.act(&format!(
        "document.querySelector('input[name=name]').value = {n}; document.querySelector('input[name=password]').value = {p}; document.querySelector('form').submit()",
        n = serde_json::json!(name),
        p = serde_json::json!(PASSWORD)
    ));
    assert!(!b.location().contains("/login"), "{name} could not log in: {}", b.text());
}

fn log_out(b: &mut Browser) {
    b.act("document.querySelector('form[action=\"/logout\"]').submit()");
    assert!(b.location().contains("/login"), "{}", b.location());
}

/// The value behind a figure the page shows (its `data-value`).
fn value(b: &mut Browser, selector: &str) -> f64 {
    let v = b.eval(&format!("(function () {{ var e = document.querySelector({}); return e ? e.getAttribute('data-value') : null; }})()", serde_json::json!(selector)));
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no figure at {selector}: {}", b.text()))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bureau_engineer_and_agency_work_in_the_page() {
    let Some(mut b) = Browser::start(1280, 900) else {
        println!("SKIPPED: chromium cannot start in this sandbox (install Debian's `chromium`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (admin, entry) = new_token(d, &["--role", "admin", "--name", "ops"]);
    std::fs::write(d.join("registry.toml"), REGISTRY).unwrap();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"data\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[auth]\n{entry}\n{ALERTS}")).unwrap();
    add_user(d, "bureau", "bureau", None);
    add_user(d, "eng", "engineer", None);
    add_user(d, "fin-officer", "agency", Some("fin"));
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(60)));

    let tz = chrono_tz::Asia::Shanghai;
    let now = chrono::Utc::now().with_timezone(&tz);
    let year = now.year();
    let start = tz.with_ymd_and_hms(year - 1, 1, 1, 0, 0, 0).unwrap().timestamp_millis();
    let today = tz.from_local_datetime(&now.date_naive().and_hms_opt(0, 0, 0).unwrap()).unwrap().timestamp_millis();
    // The replacement: half way between 1 January of last year and today, on the hour.
    let replaced_at = start + ((today - start) / 2 / H) * H;
    ingest(&url, &admin, start, now.timestamp_millis() / H * H, replaced_at).await;
    let art = artifacts("web");

    // The bureau: the overview, its figures equal to the API's.
    log_in(&mut b, &url, "bureau");
    b.goto(&format!("{url}/?period=year&year={year}"));
    b.wait_for("document.body.getAttribute('data-charts-ready') === '1'", "the charts");
    let text = b.text();
    assert!(text.contains("综合能耗") && text.contains("市财政局") && text.contains("市教育局") && text.contains("报送期限"), "{text}");
    let ind = api(&url, &admin, &format!("/api/v1/indicators?year={year}")).await;
    let api_total: f64 = ind["items"].as_array().unwrap().iter().map(|a| a["indicators"].as_array().unwrap().iter().find(|i| i["indicator"] == "total_energy").unwrap()["value"].as_f64().unwrap_or(0.0)).sum();
    let page_total = value(&mut b, "[data-kpi='0'] .num") * 1000.0;
    assert!(api_total > 0.0 && close(page_total, api_total), "page {page_total} kgce, API {api_total} kgce");
    b.screenshot(&art.join("overview.png"));

    // The period picker: a month, then the one before.
    b.act("var f = document.querySelector('form.picker'); f.period.value = 'month'; f.month.value = '1'; f.submit()");
    assert!(b.location().contains("period=month") && b.text().contains(&format!("{year}年1月")), "{}", b.location());
    b.act("document.querySelector('form.picker a.prev').click()");
    assert!(b.text().contains(&format!("{}年12月", year - 1)), "{}", b.text());
    // Custom range, in English.
    b.goto(&format!("{url}/?period=range&from={}-03-01&to={}-03-31&lang=en", year - 1, year - 1));
    assert!(b.text().contains("Total energy") && b.text().contains(&format!("{}-03-01 to {}-03-31", year - 1, year - 1)), "{}", b.text());

    // Drill down: jurisdiction -> agency -> building -> meter (last year: whole months).
    b.goto(&format!("{url}/?period=year&year={}", year - 1));
    b.act("document.querySelector('tr[data-agency=fin] a').click()");
    assert!(b.location().contains("/agencies/fin"), "{}", b.location());
    // The agency's electricity equals the API's consumption of the same period.
    let page_elec = value(&mut b, "tr[data-carrier=electricity] td.n");
    let cons = api(&url, &admin, &format!("/api/v1/consumption?agency=fin&from={}-01-01&to={year}-01-01&interval=year&carrier=electricity", year - 1)).await;
    let api_elec = cons["carriers"][0]["total"].as_f64().unwrap();
    assert!(close(page_elec, api_elec), "page {page_elec} kWh, API {api_elec} kWh");
    // Cost by tariff band: edu-elec, 4 kWh every hour of last year (N days): 高峰 08-12 4 h ×
    // 4 = 16 kWh a day at 1.0 = 16 元; 低谷 23-07 8 h × 4 = 32 kWh at 0.3 = 9.6 元; 平段 the
    // other 12 h, 48 kWh at 0.6 = 28.8 元; 54.4 元 a day. On the page as on the API.
    let fin_page = b.location();
    // fin's water has no tariff: listed as not priced, naming the registry entry it lacks.
    let t = b.eval("(function () { var r = document.querySelector('table.cost-bands tr[data-carrier=water][data-band=none]'); return r ? r.textContent : ''; })()");
    assert!(t.as_str().is_some_and(|t| t.contains("未计价") && t.contains("[[tariff]] carrier = \"water\"")), "{t}");
    b.goto(&format!("{url}/agencies/edu?period=year&year={}", year - 1));
    assert!(b.text().contains("费用（按能源品种和电价时段）") && b.text().contains("高峰") && b.text().contains("低谷"), "{}", b.text());
    let n = (tz.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap() - tz.with_ymd_and_hms(year - 1, 1, 1, 0, 0, 0).unwrap()).num_days() as f64;
    let edu = api(&url, &admin, &format!("/api/v1/agencies/edu/indicators?year={}", year - 1)).await;
    let bands = edu["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "electricity").unwrap()["cost_bands"].as_array().unwrap().clone();
    for (band, kwh, yuan) in [("peak", 16.0 * n, 16.0 * n), ("flat", 48.0 * n, 28.8 * n), ("valley", 32.0 * n, 9.6 * n)] {
        let row = format!("tr[data-carrier=electricity][data-band={band}]");
        let (v, y) = (value(&mut b, &format!("{row} td.value")), value(&mut b, &format!("{row} td.yuan")));
        assert!(close(v, kwh) && close(y, yuan), "{band}: page {v} kWh {y} 元, by hand {kwh} kWh {yuan} 元");
        let a = bands.iter().find(|x| x["band"] == band).unwrap_or_else(|| panic!("no {band} in the API: {bands:?}"));
        assert!(close(a["value"].as_f64().unwrap(), v) && close(a["yuan"].as_f64().unwrap(), y), "{band}: API {a}, page {v} kWh {y} 元");
    }
    assert!(close(value(&mut b, "tr.total td.yuan"), 54.4 * n));
    b.screenshot(&art.join("cost-bands.png"));
    b.goto(&fin_page);
    b.act("document.querySelector('ul.buildings a').click()");
    assert!(b.location().contains("/buildings/fin-main"), "{}", b.location());
    b.act("document.querySelector('ul.meters a').click()");
    assert!(b.location().contains("/meters/fin-elec"), "{}", b.location());
    b.wait_for("document.body.getAttribute('data-charts-ready') === '1'", "the meter's chart");
    b.screenshot(&art.join("meter-bureau.png"));
    assert!(!b.html().contains("data-kind=\"replacement\""), "the bureau gets no event forms");
    log_out(&mut b);

    // The engineer: the meter shows the decrease; recording the replacement changes its figures.
    log_in(&mut b, &url, "eng");
    let replaced_year = tz.timestamp_millis_opt(replaced_at).unwrap().year();
    b.goto(&format!("{url}/meters/fin-elec?period=year&year={replaced_year}"));
    assert!(b.text().contains("unexplained_decrease"), "{}", b.text());
    let before = value(&mut b, "tr[data-carrier=electricity] td.n");
    let old_final = 10.0 * ((replaced_at - H - start) / H) as f64;
    let when = tz.timestamp_millis_opt(replaced_at - H / 2).unwrap().to_rfc3339();
    b.act(&format!(
        "var f = document.querySelector('form[data-kind=replacement]'); f.time.value = {}; f.old_final.value = '{old_final}'; f.new_initial.value = '0'; f.reason.value = '显示屏损坏，换表'; f.submit()",
        serde_json::json!(when)
    ));
    assert!(b.text().contains("事件已记录"), "{}", b.text());
    let after = value(&mut b, "tr[data-carrier=electricity] td.n");
    assert!(after > before + 5.0, "the replacement adds the consumption after it: {before} -> {after}");
    let events = api(&url, &admin, "/api/v1/meters/fin-elec/events").await;
    assert_eq!(events["items"][0]["by"], "eng", "{events}");
    b.screenshot(&art.join("meter-engineer.png"));

    // The engineer acknowledges the firing alert of fin-elec with a reason: it stays listed,
    // marked, and the API says so.
    b.goto(&format!("{url}/alerts?state=firing"));
    let mut tries = 0;
    while !b.eval("!!document.querySelector('article.alert.firing[data-alert] h3 small')").as_bool().unwrap_or(false) || !b.text().contains("fin-elec") {
        tries += 1;
        assert!(tries < 120, "no firing alert of fin-elec: {}", b.text());
        std::thread::sleep(Duration::from_millis(500));
        b.goto(&format!("{url}/alerts?state=firing"));
    }
    b.act("var a = Array.from(document.querySelectorAll('article.alert')).find(function (x) { return x.textContent.indexOf('fin-elec') >= 0; }); var f = a.querySelector('form.ack'); f.reason.value = '已派人检查网关'; f.submit()");
    assert!(b.text().contains("告警已确认") && b.text().contains("已派人检查网关"), "{}", b.text());
    // In Chinese throughout: the rule's kind named, its history's states too.
    assert!(b.text().contains("计量表无数据"), "{}", b.text());
    let history = b.eval("Array.from(document.querySelectorAll('article.alert details li')).map(function (x) { return x.textContent; }).join('|')");
    let history = history.as_str().unwrap_or_default();
    assert!(history.contains("告警中") && history.contains("已确认") && !history.contains("Firing"), "{history}");
    b.screenshot(&art.join("alerts.png"));
    let listed = api(&url, &admin, "/api/v1/alerts?meter=fin-elec").await;
    assert_eq!(listed["alerts"][0]["acknowledged"]["reason"], "已派人检查网关", "{listed}");
    assert_eq!(listed["alerts"][0]["acknowledged"]["by"], "eng", "{listed}");
    log_out(&mut b);

    // The agency user: its own agency only, whatever the URL.
    log_in(&mut b, &url, "fin-officer");
    assert!(b.location().contains("/agencies/fin"), "the agency's home is its page: {}", b.location());
    assert!(!b.text().contains("市教育局"));
    b.screenshot(&art.join("agency.png"));
    // Its alerts only.
    b.goto(&format!("{url}/alerts"));
    let t = b.text();
    assert!(t.contains("fin-elec") && !t.contains("edu-elec"), "{t}");
    for path in ["/agencies/edu", "/buildings/edu-main", "/meters/edu-elec", &format!("/reports?kind=annual&year={}&format=json&agency=edu", year - 1)] {
        b.goto(&format!("{url}{path}"));
        let t = b.text();
        assert!(t.contains("may not") || t.contains("not in the registry"), "{path}: {t}");
        assert!(!t.contains("教育大楼") && !t.contains("教育总表"), "{path}: {t}");
    }
    // The reports page: the signature block its documents carry, its own agency's only: 负责人
    // from the registry, 填报人 missing with the key that fills it.
    b.goto(&format!("{url}/reports"));
    let t = b.text();
    assert!(t.contains("签章栏") && t.contains("赵处长") && t.contains("0531-8888 6666") && t.contains("filler = \"…\"") && !t.contains("钱主任") && !t.contains("孙科员"), "{t}");
    b.screenshot(&art.join("reports-agency.png"));
    // Its own annual report works, and holds only its agency.
    b.goto(&format!("{url}/reports?kind=annual&year={}&format=html", year - 1));
    let t = b.text();
    assert!(t.contains("市财政局") && !t.contains("市教育局"), "{t}");
    assert!(t.contains("赵处长") && !t.contains("钱主任"), "signed by its agency: {t}");
    b.goto(&format!("{url}/"));
    log_out(&mut b);
    // Logged out: the pages send the browser back to the login page.
    b.goto(&format!("{url}/agencies/fin"));
    assert!(b.location().contains("/login?next="), "{}", b.location());

    drop(b);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
}
