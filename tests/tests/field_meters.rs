//! DL/T 645 and CJ/T 188 meters through the real binaries: simulated meters of our own
//! (`energy_gateway::field::sim`, byte for byte as the standards say) on two transparent serial
//! servers (raw frames over TCP) -> `energy-gateway run` -> `energyd run`. The values arrive in
//! the store in the contract's units (the heat meter sends kWh, the store holds GJ); every counter
//! reading served is stored exactly once, in order, across a daemon outage and a gateway killed
//! with SIGKILL (only readings taken just before the kill may be missing, as for Modbus). A
//! DL/T 645 meter behind current and voltage transformers is stored as its primary circuit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use energy_e2e::{free_port, get_json, listening_url, profiles_dir, q, Proc};
use energy_gateway::field::profile::load_field_dir;
use energy_gateway::field::sim::{SimBus, SimMeter};
use tokio_util::sync::CancellationToken;

/// id, profile, address, stored counter, registry carrier, bus (0: DL/T 645, 1: CJ/T 188).
const METERS: &[(&str, &str, &str, &str, &str, usize)] = &[
    ("fm-elec", "generic/dlt645-2007-three-phase", "000000000101", "active_energy_import", "electricity", 0),
    ("fm-old", "generic/dlt645-1997", "000000000102", "active_energy_import", "electricity", 0),
    ("fm-water", "generic/cjt188-water", "00000000000201", "water_volume", "water", 1),
    ("fm-heat", "generic/cjt188-heat", "00000000000202", "heat_energy", "district_heat", 1),
    ("fm-gas", "generic/cjt188-gas", "00000000000203", "gas_volume", "natural_gas", 1),
    ("fm-ct", "chint/dtsu666-dlt645", "000000000104", "active_energy_import", "electricity", 0),
    ("fm-wasion", "wasion/dtsd341-dlt645", "000000000105", "active_energy_export", "electricity", 0),
];
/// Meters behind instrument transformers: id, ct_ratio, pt_ratio. The meter serves secondary
/// values; the store holds the primary circuit's (energy x CT x PT, current x CT, voltage x PT).
const TRANSFORMERS: &[(&str, f64, f64)] = &[("fm-ct", 40.0, 100.0)];

fn ratios(id: &str) -> (f64, f64) {
    TRANSFORMERS.iter().find(|t| t.0 == id).map_or((1.0, 1.0), |t| (t.1, t.2))
}
/// Readings polled but not yet in the queue when the gateway is killed are lost (like a power
/// cut); they were served at most this long before the kill.
const KILL_WINDOW_MS: i64 = 10_000;
const AFTER_KILL_MS: i64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn field_meters_reach_the_store_in_contract_units_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let profiles = load_field_dir(&profiles_dir()).unwrap();
    let cancel = CancellationToken::new();
    let mut buses = Vec::new();
    for bus in 0..2 {
        let meters: Vec<SimMeter> = METERS
            .iter()
            .filter(|m| m.5 == bus)
            .map(|(_, profile, address, ..)| {
                let p = Arc::new(profiles[*profile].clone());
                let mut m = SimMeter::new(p.clone(), address, SimMeter::typical(&p)).unwrap();
                m.step = 0.01;
                m
            })
            .collect();
        let sim = SimBus::new(meters, Duration::from_millis(5), None);
        let ep = sim.serve_tcp("127.0.0.1:0", cancel.clone()).await.unwrap().to_string();
        buses.push((sim, ep));
    }
    let dport = free_port();
    let mut reg = String::from("[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 5000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n");
    let mut gw = format!(
        "gateway_id = \"fm-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = {:?}\n[uplink]\nurl = \"http://127.0.0.1:{dport}/api/v1/ingest\"\nretry_max_ms = 500\nbatch_max_samples = 50\n",
        profiles_dir(),
        d.join("queue")
    );
    for (id, profile, address, _, carrier, bus) in METERS {
        reg.push_str(&format!("[[meter]]\nid = \"{id}\"\nbuilding = \"b\"\ncarrier = \"{carrier}\"\n"));
        gw.push_str(&format!("[[device]]\nmeter = \"{id}\"\nprofile = \"{profile}\"\ntcp = \"{}\"\naddress = \"{address}\"\ninterval_ms = 300\n", buses[*bus].1));
        let (ct, pt) = ratios(id);
        gw.push_str(&format!("ct_ratio = {ct:?}\npt_ratio = {pt:?}\n"));
    }
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    std::fs::write(d.join("gateway.toml"), gw).unwrap();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{dport}\"\n")).unwrap();
    let (code, out, err) = energy_e2e::run("energy-gateway", &["check-config", "--config", "gateway.toml"], d);
    assert_eq!(code, 0, "{out}{err}");

    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 1. The daemon goes away; polling goes on into the gateway's queue.
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let _ = daemon.wait_line("listening on", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // 2. The gateway is killed and restarted on its queue.
    gw.signal("KILL");
    let killed_at = energy_gateway::time::now_ms();
    gw.wait_exit(Duration::from_secs(10));
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)).success());
    cancel.cancel();

    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(1)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    for (id, profile, address, quantity, _, bus) in METERS {
        let served: Vec<(f64, i64)> = buses[*bus]
            .0
            .served
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, q, ..)| a == address && q.name() == *quantity)
            .map(|&(_, _, v, t)| (v, t))
            .collect();
        // An energy is multiplied by both ratios (1 and 1 for a meter without transformers).
        let (ct, pt) = ratios(id);
        let served: Vec<(f64, i64)> = served.into_iter().map(|(v, t)| (v * ct * pt, t)).collect();
        assert!(served.len() >= 10, "{id}: only {} reads served", served.len());
        let deadline = Instant::now() + Duration::from_secs(20);
        let (unit, stored) = loop {
            let (status, v) = get_json(&format!("{url}/api/v1/series?meter={id}&quantity={quantity}&from={}&to={}", q(&from), q(&to))).await;
            assert_eq!(status, 200, "{v}");
            let stored: Vec<f64> = v["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
            if stored.len() + 3 >= served.len() || Instant::now() > deadline {
                break (v["unit"].as_str().unwrap_or_default().to_string(), stored);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let want_unit = quantity.parse::<energy_wire::Quantity>().unwrap().unit();
        assert_eq!(unit, want_unit, "{id}");
        // The heat meter sends kWh (unit code 05): 0.01 kWh on the wire is 3.6e-5 GJ.
        let tol = |v: f64| if *quantity == "heat_energy" { 4e-5 } else { 1e-9 * v.abs().max(1.0) };
        let mut i = 0;
        let mut missing = Vec::new();
        for &(v, t) in &served {
            if i < stored.len() && (stored[i] - v).abs() <= tol(v) {
                i += 1;
            } else {
                missing.push(t);
            }
        }
        assert_eq!(i, stored.len(), "{id} ({profile}): a stored value that was not served, or out of order, or twice: {stored:?} vs {served:?}");
        for t in &missing {
            assert!(*t >= killed_at - KILL_WINDOW_MS && *t <= killed_at + AFTER_KILL_MS, "{id}: a reading served at {t} (kill at {killed_at}) is missing");
        }
    }
    // Every quantity of every meter's profile is in the store, in its contract unit. The
    // simulators serve gauges constant at their typical values; behind transformers (fm-ct:
    // CT 40, PT 100) a current is stored x CT, a voltage x PT, a power x CT x PT, a power
    // factor or frequency as served.
    for (id, profile, ..) in METERS {
        let (ct, pt) = ratios(id);
        let typical = SimMeter::typical(&profiles[*profile]);
        for qty in profiles[*profile].quantities() {
            let (status, v) = get_json(&format!("{url}/api/v1/series?meter={id}&quantity={}&from={}&to={}", qty.name(), q(&from), q(&to))).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["unit"].as_str(), Some(qty.unit()), "{id} {qty}: {v}");
            let stored: Vec<f64> = v["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
            assert!(!stored.is_empty(), "{id} {qty}: nothing stored");
            if qty.is_counter() {
                continue; // checked reading by reading above
            }
            let name = qty.name();
            let factor = if name.starts_with("current") {
                ct
            } else if name.starts_with("voltage") {
                pt
            } else if name.contains("power") && name != "power_factor" && name != "heat_power" {
                ct * pt
            } else {
                1.0
            };
            let want = typical[&qty] * factor;
            // The wire's resolution (heat power and flow in their BCD formats).
            assert!(stored.iter().all(|x| (x - want).abs() <= 1e-3_f64.max(want.abs() * 1e-5)), "{id} {qty}: want {want} (served x {factor}), stored {stored:?}");
        }
    }
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}
