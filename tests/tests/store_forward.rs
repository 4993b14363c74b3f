//! Store-and-forward over HTTP with the real binaries: the gateway's queue filling up while the
//! daemon is away (full-queue policy), and a device list reloaded with SIGHUP without losing
//! anything queued.

use std::collections::HashMap;
use std::time::Duration;

use energy_e2e::{free_port, get_json, listening_url, profiles_dir, q, Proc};

const METERS: &[(&str, &str, &str)] = &[("sf-elec", "eastron/sdm630", "office_electricity"), ("sf-elec2", "eastron/sdm630", "office_electricity")];

fn files(d: &std::path::Path, daemon_port: u16) {
    let mut sim = format!("profiles_dir = {:?}\nserved_log = {:?}\n[[bus]]\n", profiles_dir(), d.join("served.jsonl"));
    let mut reg = String::from("[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 5000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n");
    for (i, (id, profile, model)) in METERS.iter().enumerate() {
        sim.push_str(&format!("[[bus.meter]]\nid = \"{id}\"\nunit = {}\nprofile = \"{profile}\"\nmodel = \"{model}\"\nsize = 5000.0\nseed = {i}\ninitial = 100.0\n", i + 1));
        reg.push_str(&format!("[[meter]]\nid = \"{id}\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n"));
    }
    std::fs::write(d.join("sim.toml"), sim).unwrap();
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{daemon_port}\"\n")).unwrap();
}

fn gateway(d: &std::path::Path, daemon_port: u16, health_port: u16, sim: &str, meters: usize, queue: &str) {
    let mut gw = format!(
        "gateway_id = \"sf-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = {:?}\n{queue}\n[uplink]\nurl = \"http://127.0.0.1:{daemon_port}/api/v1/ingest\"\nretry_max_ms = 500\nbatch_max_samples = 50\n[health]\nlisten = \"127.0.0.1:{health_port}\"\n",
        profiles_dir(),
        d.join("queue")
    );
    for (i, (id, profile, _)) in METERS.iter().take(meters).enumerate() {
        gw.push_str(&format!("[[device]]\nmeter = \"{id}\"\nprofile = \"{profile}\"\ntcp = \"{sim}\"\nunit = {}\ninterval_ms = 100\n", i + 1));
    }
    std::fs::write(d.join("gateway.toml"), gw).unwrap();
}

fn served(d: &std::path::Path) -> HashMap<String, Vec<f64>> {
    let mut m: HashMap<String, Vec<f64>> = HashMap::new();
    for line in std::fs::read_to_string(d.join("served.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        m.entry(v["meter"].as_str().unwrap().to_string()).or_default().push(v["value"].as_f64().unwrap());
    }
    m
}

async fn stored(url: &str, meter: &str) -> Vec<(i64, f64)> {
    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(1)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    let (_, v) = get_json(&format!("{url}/api/v1/series?meter={meter}&quantity=active_energy_import&from={}&to={}", q(&from), q(&to))).await;
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap().timestamp_millis(), p["v"].as_f64().unwrap()))
        .collect()
}

fn is_subsequence(stored: &[f64], served: &[f64]) -> bool {
    let mut i = 0;
    for v in served {
        if i < stored.len() && stored[i] == *v {
            i += 1;
        }
    }
    i == stored.len()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_keeps_counters_per_period_and_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dport, hport) = (free_port(), free_port());
    files(d, dport);
    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&sim.wait_line("listen", Duration::from_secs(30))).unwrap();
    // A 32 KiB queue fills in a few seconds at 20 samples/s; thin to one counter per second.
    // The reserve (2 KiB) holds about 12 s of thinned counters of both meters.
    gateway(d, dport, hport, bus["listen"].as_str().unwrap(), 2, "max_bytes = 32768\nsegment_bytes = 4096\nthin_period_ms = 1000\n");
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m) = get_json(&format!("http://127.0.0.1:{hport}/metrics")).await;
        let m = m.as_str().unwrap_or_default().to_string();
        if metric(&m, "energy_gateway_queue_thinned_samples_total") >= 4.0 || std::time::Instant::now() > deadline {
            break m;
        }
    };
    assert!(metric(&metrics, "energy_gateway_queue_thinned_samples_total") > 0.0, "{metrics}");
    assert!(metric(&metrics, "energy_gateway_queue_dropped_total{kind=\"samples\"}") > 0.0, "{metrics}");
    assert!(metric(&metrics, "energy_gateway_queue_dropped_total{kind=\"values\"}") > 0.0, "{metrics}");
    // The daemon comes; everything queued drains.
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(10));
    let served = served(d);
    for (id, ..) in METERS {
        let pts = stored(&url, id).await;
        let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
        assert!(is_subsequence(&values, &served[*id]), "{id}: stored values must be served ones, in order, once");
        // While full, one counter per second was kept: consecutive counters are at most two
        // periods apart (plus polling jitter on a loaded machine), so the consumption of every
        // period is still exact.
        let max_gap = pts.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or(0);
        assert!(max_gap <= 3_000, "{id}: counter gap of {max_gap} ms");
        assert!(pts.len() >= 20, "{id}: {} points", pts.len());
    }
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_device_list_without_losing_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dport, hport) = (free_port(), free_port());
    files(d, dport);
    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&sim.wait_line("listen", Duration::from_secs(30))).unwrap();
    let sim_addr = bus["listen"].as_str().unwrap().to_string();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    gateway(d, dport, hport, &sim_addr, 1, "");
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(stored(&url, "sf-elec2").await.is_empty());
    // An invalid file is refused and the running list kept.
    std::fs::write(d.join("gateway.toml"), "gateway_id = ").unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    gateway(d, dport, hport, &sim_addr, 2, "");
    gw.signal("HUP");
    energy_e2e::eventually(Duration::from_secs(20), "two devices after the reload", || async {
        let (_, status) = get_json(&format!("http://127.0.0.1:{hport}/status")).await;
        (status["devices"].as_array()?.len() == 2).then_some(())
    })
    .await;
    energy_e2e::eventually(Duration::from_secs(20), "readings of the added meter", || async { (!stored(&url, "sf-elec2").await.is_empty()).then_some(()) }).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(10));
    let served = served(d);
    for (id, ..) in METERS {
        let values: Vec<f64> = stored(&url, id).await.iter().map(|p| p.1).collect();
        assert!(!values.is_empty(), "{id}");
        assert_eq!(values, served[*id], "{id}: every served reading stored once");
    }
    let (_, v) = get_json(&format!("{url}/api/v1/gateways")).await;
    let g = v["items"].as_array().unwrap().iter().find(|g| g["id"] == "sf-gw").unwrap().clone();
    assert_eq!(g["stored_ranges"].as_array().unwrap().len(), 1, "{g}");
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}
