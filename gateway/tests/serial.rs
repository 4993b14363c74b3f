//! Modbus RTU on a serial port, over a pseudo-terminal pair made by `socat` (Debian package
//! `socat`, installed by tests/run.sh): the poller and `probe --serial` against an RTU server on
//! the other end.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_gateway::poll::{DeviceConfig, ModbusConfig};
use energy_gateway::metrics::Metrics;
use energy_gateway::profile::load_dir;
use energy_gateway::transport::{Parity, SerialLine, Transport};
use support::{image, pty_pair, serve_serial, tolerance};
use tokio_util::sync::CancellationToken;

fn profiles_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_serial_port_decodes_and_keeps_the_silence_between_frames() {
    let pair = pty_pair();
    let profiles = load_dir(&profiles_dir()).unwrap();
    let p = Arc::new(profiles["eastron/sdm120"].clone());
    let (img, want) = image(&p, None);
    let server = serve_serial(pair.b.to_str().unwrap(), 9600, HashMap::from([(1, img.clone()), (2, img)]));
    let line = SerialLine { path: pair.a.display().to_string(), baud: 9600, parity: Parity::None, data_bits: 8, stop_bits: 1 };
    let devices = [1u8, 2]
        .iter()
        .map(|&u| {
            let mut d = DeviceConfig::tcp(&format!("m{u}"), "eastron/sdm120", "", u);
            d.tcp = None;
            d.serial = Some(line.path.clone());
            d.interval_ms = 100;
            (d, p.clone())
        })
        .collect();
    // A slow adapter: at least 30 ms between frames, more than 3.5 characters at 9600 baud.
    let mcfg = ModbusConfig { rtu_min_silence_us: 30_000, ..ModbusConfig::default() };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(energy_gateway::poll::run_bus(
        Transport::Serial(line),
        devices,
        mcfg,
        tx,
        Metrics::new(),
        Arc::new(Mutex::new(BTreeMap::new())),
        cancel.clone(),
    ));
    let mut seen = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(s)) = tokio::time::timeout_at(end.into(), rx.recv()).await {
        for r in &p.registers {
            let (v, w) = (s.v[&r.quantity], want[&r.quantity]);
            assert!((v - w).abs() <= tolerance(r, w), "{}: {v} vs {w}", r.quantity.name());
        }
        *seen.entry(s.meter).or_insert(0) += 1;
    }
    cancel.cancel();
    task.await.unwrap();
    assert!(seen.get("m1").copied().unwrap_or(0) >= 3 && seen.get("m2").copied().unwrap_or(0) >= 3, "{seen:?}");
    let log = server.log.lock().unwrap();
    for w in log.requests.windows(2) {
        assert!(w[1].0 - w[0].0 >= Duration::from_millis(30), "frames only {:?} apart", w[1].0 - w[0].0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_a_meter_on_a_serial_port() {
    let pair = pty_pair();
    let profiles = load_dir(&profiles_dir()).unwrap();
    let p = profiles["chint/ddsu666"].clone();
    let (img, want) = image(&p, None);
    let _server = serve_serial(pair.b.to_str().unwrap(), 9600, HashMap::from([(5, img)]));
    let a = pair.a.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_energy-gateway"))
            .args(["probe", "--profile", "chint/ddsu666", "--serial", &a, "--baud", "9600", "--unit", "5", "--json", "--profiles-dir"])
            .arg(profiles_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let r = p.registers.iter().find(|r| r.quantity.name() == v["quantity"]).unwrap();
        let (got, w) = (v["value"].as_f64().unwrap(), want[&r.quantity]);
        assert!((got - w).abs() <= tolerance(r, w), "{line} vs {w}");
    }
    assert_eq!(stdout.lines().count(), p.registers.len());
}
