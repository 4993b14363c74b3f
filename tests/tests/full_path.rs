//! The whole data path with the real binaries: simulated meters (`energyd simulate`, real Modbus
//! TCP) -> `energy-gateway run` (poller, durable queue, HTTP uplink) -> `energyd run` (ingest,
//! embedded store) -> consumption API. Every counter value the simulator served must be stored
//! exactly once, and the consumption must equal the simulator's own counter difference.

use std::collections::HashMap;
use std::time::Duration;

use energy_e2e::{get_json, listening_url, profiles_dir, q, Proc};

const METERS: &[(&str, &str, &str, &str)] = &[
    // id, profile, model, counter quantity
    ("e2e-elec", "eastron/sdm630", "office_electricity", "active_energy_import"),
    ("e2e-water", "siemens/mag6000", "office_water", "water_volume"),
    ("e2e-heat", "aquametro/calec-st", "district_heat", "heat_energy"),
];

fn write_files(dir: &std::path::Path, sim_addr: Option<&str>, daemon_url: Option<&str>) {
    let profiles = profiles_dir();
    let mut sim = format!("profiles_dir = {:?}\nserved_log = {:?}\n[[bus]]\n", profiles, dir.join("served.jsonl"));
    for (i, (id, profile, model, _)) in METERS.iter().enumerate() {
        sim.push_str(&format!(
            "[[bus.meter]]\nid = \"{id}\"\nunit = {}\nprofile = \"{profile}\"\nmodel = \"{model}\"\nsize = 20000.0\nseed = {i}\ninitial = 5000.0\n",
            i + 1
        ));
    }
    std::fs::write(dir.join("sim.toml"), sim).unwrap();
    let mut reg = String::from(
        "[[agency]]\nid = \"ag\"\nname = \"测试机关\"\nlevel = \"county\"\n\n[[building]]\nid = \"bx\"\nname = \"B\"\nfloor_area = 20000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n",
    );
    for (id, _, model, _) in METERS {
        let carrier = match *model {
            "office_electricity" => "electricity",
            "office_water" => "water",
            _ => "district_heat",
        };
        reg.push_str(&format!("\n[[meter]]\nid = \"{id}\"\nbuilding = \"bx\"\ncarrier = \"{carrier}\"\n"));
    }
    std::fs::write(dir.join("registry.toml"), reg).unwrap();
    std::fs::write(dir.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    if let (Some(addr), Some(url)) = (sim_addr, daemon_url) {
        let mut gw = format!(
            "gateway_id = \"e2e-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = {:?}\n[uplink]\nurl = \"{url}/api/v1/ingest\"\nbatch_max_samples = 7\n",
            profiles,
            dir.join("queue")
        );
        for (i, (id, profile, _, _)) in METERS.iter().enumerate() {
            gw.push_str(&format!("\n[[device]]\nmeter = \"{id}\"\nprofile = \"{profile}\"\ntcp = \"{addr}\"\nunit = {}\ninterval_ms = 200\n", i + 1));
        }
        std::fs::write(dir.join("gateway.toml"), gw).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_reading_is_stored_once_and_consumption_matches_the_meter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(d, None, None);
    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&sim.wait_line("listen", Duration::from_secs(30))).unwrap();
    let sim_addr = bus["listen"].as_str().unwrap().to_string();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    write_files(d, Some(&sim_addr), Some(&url));

    let (code, out, err) = energy_e2e::run("energy-gateway", &["check-config", "--config", "gateway.toml"], d);
    assert_eq!(code, 0, "{out}{err}");
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Graceful stop: polling stops, the queue is drained to the daemon, then the gateway exits.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(10));

    // What the simulator served, per meter, in order.
    let mut served: HashMap<String, Vec<f64>> = HashMap::new();
    for line in std::fs::read_to_string(d.join("served.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        served.entry(v["meter"].as_str().unwrap().to_string()).or_default().push(v["value"].as_f64().unwrap());
    }
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    for (id, _, _, quantity) in METERS {
        let s = &served[*id];
        assert!(s.len() >= 10, "{id}: only {} reads served", s.len());
        let (status, v) = get_json(&format!("{url}/api/v1/series?meter={id}&quantity={quantity}&from={}&to={}", q(&from), q(&to))).await;
        assert_eq!(status, 200, "{v}");
        let stored: Vec<f64> = v["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
        assert_eq!(&stored, s, "{id}: the store must hold every served value exactly once, in order");

        let (status, v) = get_json(&format!("{url}/api/v1/consumption?meter={id}&from={}&to={}&interval=hour", q(&from), q(&to))).await;
        assert_eq!(status, 200, "{v}");
        let total = v["carriers"][0]["total"].as_f64().unwrap();
        let expected = s.last().unwrap() - s.first().unwrap();
        assert!((total - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{id}: consumption {total} vs simulator {expected}");
        if *id == "e2e-elec" {
            assert!(expected >= 0.0);
        }
    }
    // Every sample acknowledged: the gateway's sequence range is contiguous from 1.
    let (_, v) = get_json(&format!("{url}/api/v1/gateways")).await;
    let g = v["items"].as_array().unwrap().iter().find(|g| g["id"] == "e2e-gw").unwrap().clone();
    let total_served: usize = served.values().map(Vec::len).sum();
    assert_eq!(g["stored_ranges"], serde_json::json!([[1, total_served]]), "{g}");

    // The gateway's durable queue is empty after the drain.
    let (_, out, _) = energy_e2e::run("energy-gateway", &["check-config", "--config", "gateway.toml"], d);
    assert!(out.contains("ok"));
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_a_meter_once_in_contract_units() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(d, None, None);
    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&sim.wait_line("listen", Duration::from_secs(30))).unwrap();
    let addr = bus["listen"].as_str().unwrap();
    let pd = profiles_dir();
    let pd = pd.to_str().unwrap();
    let (code, out, err) =
        energy_e2e::run("energy-gateway", &["probe", "--profile", "eastron/sdm630", "--tcp", addr, "--unit", "1", "--json", "--profiles-dir", pd], d);
    assert_eq!(code, 0, "{out}{err}");
    let values: HashMap<String, (f64, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["value"].is_f64())
        .map(|v| (v["quantity"].as_str().unwrap().to_string(), (v["value"].as_f64().unwrap(), v["unit"].as_str().unwrap().to_string())))
        .collect();
    let (v, unit) = &values["voltage_l1"];
    assert!((225.0..235.0).contains(v) && unit == "V", "{v} {unit}");
    let (v, unit) = &values["frequency"];
    assert!((49.9..50.1).contains(v) && unit == "Hz");
    let (v, unit) = &values["active_energy_import"];
    assert!(*v > 5000.0 && unit == "kWh");
    assert!(err.contains("request fc4"), "the probe reports the requests it used: {err}");
    // A unit id with no device behind the serial server: a clear failure, exit 1.
    let (code, _, err) = energy_e2e::run("energy-gateway", &["probe", "--profile", "eastron/sdm630", "--tcp", addr, "--unit", "9", "--profiles-dir", pd], d);
    assert_eq!(code, 1);
    assert!(err.contains("exception"), "{err}");
}
