//! `energy-gateway probe` and the poller against a real Modbus server on loopback that serves
//! every shipped profile's registers with known values.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use energy_gateway::poll::{DeviceConfig, ModbusConfig};
use energy_gateway::metrics::Metrics;
use energy_gateway::profile::{load_dir, Order, Profile, Ratio};
use energy_gateway::transport::Transport;
use support::{image, serve, tolerance, Framing};
use tokio_util::sync::CancellationToken;

fn profiles_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")
}

fn profiles() -> BTreeMap<String, Profile> {
    load_dir(&profiles_dir()).expect("shipped profiles load")
}

/// Runs the real binary's probe; returns (exit code, stdout, stderr).
fn probe(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_energy-gateway"))
        .arg("probe")
        .args(args)
        .arg("--profiles-dir")
        .arg(profiles_dir())
        .args(["--timeout-ms", "500"])
        .output()
        .expect("run energy-gateway");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json_values(out: &str) -> HashMap<String, (Option<f64>, String)> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .map(|v| (v["quantity"].as_str().unwrap().to_string(), (v["value"].as_f64(), v["unit"].as_str().unwrap().to_string())))
        .collect()
}

fn check_values(name: &str, p: &Profile, got: &HashMap<String, (Option<f64>, String)>, want: &BTreeMap<energy_wire::Quantity, f64>) {
    assert_eq!(got.len(), p.registers.len(), "{name}: one line per register");
    for r in &p.registers {
        let (v, unit) = &got[r.quantity.name()];
        let w = want[&r.quantity];
        let v = v.unwrap_or_else(|| panic!("{name}: {} missing", r.quantity.name()));
        assert!((v - w).abs() <= tolerance(r, w), "{name}: {} = {v}, served {w}", r.quantity.name());
        assert_eq!(unit, r.quantity.unit(), "{name}: {}", r.quantity.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_json_decodes_every_shipped_profile_exactly() {
    let all = profiles();
    assert!(all.len() >= 23, "{} profiles", all.len());
    for (name, p) in &all {
        let (behaviour, want) = image(p, None);
        let server = serve("127.0.0.1:0", Framing::Tcp, HashMap::from([(7, behaviour)])).await;
        let ep = server.endpoint();
        let (code, out, err) = tokio::task::spawn_blocking({
            let name = name.clone();
            move || probe(&["--profile", &name, "--tcp", &ep, "--unit", "7", "--json"])
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{name}: {out}{err}");
        check_values(name, p, &json_values(&out), &want);
        let plan = energy_gateway::profile::plan_reads(&p.registers, &p.limits);
        assert_eq!(err.matches("request fc").count(), plan.len(), "{name}: the probe lists the requests it used:\n{err}");
        assert!(!err.contains("hint:"), "{name}: no hint for a device that is set up right:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_rtu_over_tcp() {
    let all = profiles();
    let p = &all["chint/dtsu666"];
    let (behaviour, want) = image(p, None);
    let server = serve("127.0.0.1:0", Framing::RtuOverTcp, HashMap::from([(3, behaviour)])).await;
    let ep = server.endpoint();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || probe(&["--profile", "chint/dtsu666", "--rtu-over-tcp", &ep, "--unit", "3", "--json"])).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    check_values("chint/dtsu666", p, &json_values(&out), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_says_when_the_transport_is_the_other_one() {
    let all = profiles();
    let (behaviour, _) = image(&all["eastron/sdm630"], None);
    let rtu = serve("127.0.0.1:0", Framing::RtuOverTcp, HashMap::from([(1, behaviour.clone())])).await;
    let tcp = serve("127.0.0.1:0", Framing::Tcp, HashMap::from([(1, behaviour)])).await;
    let (rtu_ep, tcp_ep) = (rtu.endpoint(), tcp.endpoint());
    let (code, _, err) =
        tokio::task::spawn_blocking(move || probe(&["--profile", "eastron/sdm630", "--tcp", &rtu_ep, "--unit", "1"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("hint: wrong transport") && err.contains("use --rtu-over-tcp"), "{err}");
    let (code, _, err) =
        tokio::task::spawn_blocking(move || probe(&["--profile", "eastron/sdm630", "--rtu-over-tcp", &tcp_ep, "--unit", "1"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("hint: wrong transport") && err.contains("use --tcp"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_says_when_the_word_order_is_wrong() {
    let all = profiles();
    // The profile says ABCD floats; this device sends CDAB.
    assert_eq!(all["eastron/sdm630"].order, Order::ABCD);
    let (behaviour, _) = image(&all["eastron/sdm630"], Some(Order::CDAB));
    let server = serve("127.0.0.1:0", Framing::Tcp, HashMap::from([(1, behaviour)])).await;
    let ep = server.endpoint();
    let (_, _, err) = tokio::task::spawn_blocking(move || probe(&["--profile", "eastron/sdm630", "--tcp", &ep, "--unit", "1"])).await.unwrap();
    assert!(err.contains("hint: wrong word order?"), "{err}");
    assert!(err.contains("implausible in order ABCD and plausible in order CDAB (voltage_l1 reads"), "{err}");
    assert!(err.contains("but would be 230.7 V"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_probe_arguments_get_a_clear_error() {
    let (code, _, err) = probe(&["--profile", "eastron/sdm630", "--serial", "/dev/ttyUSB0", "--baud", "9601"]);
    assert_eq!(code, 2);
    assert!(err.contains("baud 9601 is not one of"), "{err}");
    let (code, _, err) = probe(&["--profile", "eastron/sdm630", "--tcp", "127.0.0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("`127.0.0.1` is not host:port"), "{err}");
    let (code, _, err) = probe(&["--profile", "eastron/sdm630", "--serial", "/nonexistent/tty", "--baud", "9600"]);
    assert_eq!(code, 1);
    assert!(err.contains("open serial port /nonexistent/tty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_decodes_every_shipped_profile_with_ct_and_pt_ratios() {
    let all = profiles();
    let mut units = HashMap::new();
    let mut wants = BTreeMap::new();
    let mut devices = Vec::new();
    for (i, (name, p)) in all.iter().enumerate() {
        let unit = u8::try_from(i + 1).unwrap();
        let (behaviour, want) = image(p, None);
        units.insert(unit, behaviour);
        let meter = format!("m{unit}");
        wants.insert(meter.clone(), (name.clone(), want));
        let mut d = DeviceConfig::tcp(&meter, name, "", unit);
        d.interval_ms = 60_000;
        d.ct_ratio = 40.0;
        d.pt_ratio = 100.0;
        devices.push((d, Arc::new(p.clone())));
    }
    let server = serve("127.0.0.1:0", Framing::Tcp, units).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let status = Arc::new(Mutex::new(BTreeMap::new()));
    let task = tokio::spawn(energy_gateway::poll::run_bus(
        Transport::Tcp(server.endpoint()),
        devices,
        ModbusConfig::default(),
        tx,
        Metrics::new(),
        status,
        cancel.clone(),
    ));
    let mut seen = 0;
    while seen < wants.len() {
        let s = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a sample from every device").unwrap();
        let (name, want) = &wants[&s.meter];
        let p = &all[name];
        for r in &p.registers {
            let factor = match r.ratio {
                Ratio::None => 1.0,
                Ratio::Ct => 40.0,
                Ratio::Pt => 100.0,
                Ratio::CtPt => 4000.0,
            };
            let w = want[&r.quantity] * factor;
            let v = s.v[&r.quantity];
            assert!((v - w).abs() <= tolerance(r, w) * factor, "{name}: {} = {v}, want {w}", r.quantity.name());
        }
        seen += 1;
    }
    cancel.cancel();
    task.await.unwrap();
}
