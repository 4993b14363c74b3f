//! `energyd demo`, as a user runs it: it answers within 30 s, seeds history through the ingest
//! path, polls live, stops cleanly on Ctrl-C, and started again on the same data goes on from
//! where it stopped, with no gap and no duplicate in the gateway's sequence.

use std::time::{Duration, Instant};

use energy_e2e::{get_json, listening_url, profiles_dir, Proc};

fn ranges(v: &serde_json::Value, id: &str) -> serde_json::Value {
    v["items"].as_array().unwrap().iter().find(|g| g["id"] == id).map(|g| g["stored_ranges"].clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_stops_cleanly_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pd = profiles_dir();
    let seed_from = (chrono::Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d").to_string();
    let args = [
        "demo",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--interval-ms",
        "300",
        "--seed-from",
        &seed_from,
        "--profiles",
        pd.to_str().unwrap(),
    ];
    let started = Instant::now();
    let mut demo = Proc::spawn("energyd", &args, dir.path());
    let url = listening_url(&demo.wait_line("listening on", Duration::from_secs(30)));
    let (status, _) = get_json(&format!("{url}/api/v1/agencies")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(30), "API must answer within 30 s of the start");
    // The banner and the daemon's `listening on` line come from different tasks, in either order.
    if !demo.seen.iter().any(|l| l.contains("Ctrl-C stops cleanly")) {
        demo.wait_line("Ctrl-C stops cleanly", Duration::from_secs(30));
    }
    let seeded = demo.wait_line("history seeded", Duration::from_secs(120));
    assert!(!seeded.contains(" 0 samples"), "{seeded}");

    // Consumption for an agency from the seeded days is there at once.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (status, v) = get_json(&format!("{url}/api/v1/consumption?agency=prov-drc&from={seed_from}&to={today}&interval=day")).await;
    assert_eq!(status, 200, "{v}");
    let elec = v["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "electricity").unwrap().clone();
    assert!(elec["total"].as_f64().unwrap() > 1000.0, "{elec}");
    assert!(elec["coverage"].as_f64().unwrap() > 0.9, "{elec}");
    let water = v["carriers"].as_array().unwrap().iter().find(|c| c["carrier"] == "water").unwrap().clone();
    assert!(water["total"].as_f64().unwrap() > 0.0);
    // Live polling reaches the store.
    let first_run = energy_e2e::eventually(Duration::from_secs(30), "live samples of demo-gw stored", || async {
        let (_, v) = get_json(&format!("{url}/api/v1/gateways")).await;
        let r = ranges(&v, "demo-gw");
        (r[0][1].as_u64().unwrap_or(0) > 0).then_some(r)
    })
    .await;
    let acked_1 = first_run[0][1].as_u64().unwrap_or(0);

    demo.signal("INT");
    assert!(demo.wait_exit(Duration::from_secs(30)).success());
    assert!(demo.seen.iter().any(|l| l.contains("stopped cleanly")), "{:?}", demo.seen);

    // Again, on the same data.
    let mut demo = Proc::spawn("energyd", &args, dir.path());
    let url = listening_url(&demo.wait_line("listening on", Duration::from_secs(30)));
    demo.wait_line("history seeded", Duration::from_secs(60));
    let v = energy_e2e::eventually(Duration::from_secs(30), "demo-gw goes on after the restart", || async {
        let (_, v) = get_json(&format!("{url}/api/v1/gateways")).await;
        (ranges(&v, "demo-gw")[0][1].as_u64().unwrap_or(0) > acked_1).then_some(v)
    })
    .await;
    let second = ranges(&v, "demo-gw");
    assert_eq!(second.as_array().unwrap().len(), 1, "one contiguous range, no gap: {second} after {first_run}");
    assert_eq!(second[0][0], 1);
    assert_eq!(ranges(&v, "demo-history").as_array().unwrap().len(), 1, "{v}");
    demo.signal("INT");
    assert!(demo.wait_exit(Duration::from_secs(30)).success());
}
