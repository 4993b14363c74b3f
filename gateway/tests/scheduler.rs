//! The bus scheduler against a real Modbus server on loopback: failing devices, pacing of
//! frames, reconnecting, and scale-factor registers read over the wire.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_gateway::poll::{DeviceConfig, ModbusConfig};
use energy_gateway::metrics::Metrics;
use energy_gateway::poll::run_bus;
use energy_gateway::profile::{parse_profile, Profile};
use energy_gateway::transport::Transport;
use energy_wire::{Quantity, Sample};
use support::{image, serve, Behaviour, Framing};
use tokio::sync::mpsc;
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;

/// A shipped single-phase meter profile (input registers, f32).
fn meter() -> Arc<Profile> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles");
    Arc::new(energy_gateway::profile::load_dir(&dir).unwrap()["eastron/sdm120"].clone())
}

fn device(id: &str, unit: u8, interval_ms: u64) -> (DeviceConfig, Arc<Profile>) {
    let mut d = DeviceConfig::tcp(id, "eastron/sdm120", "", unit);
    d.interval_ms = interval_ms;
    (d, meter())
}

struct Running {
    rx: mpsc::Receiver<Sample>,
    metrics: Metrics,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(transport: Transport, devices: Vec<(DeviceConfig, Arc<Profile>)>, mcfg: ModbusConfig) -> Running {
    let (tx, rx) = mpsc::channel(4096);
    let metrics = Metrics::new();
    let cancel = CancellationToken::new();
    let status = Arc::new(Mutex::new(BTreeMap::new()));
    let task = tokio::spawn(run_bus(transport, devices, mcfg, tx, metrics.clone(), status, cancel.clone()));
    Running { rx, metrics, cancel, task }
}

impl Running {
    async fn collect_for(&mut self, d: Duration) -> Vec<(Instant, Sample)> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(Some(s)) = tokio::time::timeout_at(end.into(), self.rx.recv()).await {
            out.push((Instant::now(), s));
        }
        out
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_devices_are_backed_off_without_delaying_the_good_one() {
    let (good, _) = image(&meter(), None);
    let units = HashMap::from([(1, good), (2, Behaviour::Silent), (3, Behaviour::Exception(ExceptionCode::ServerDeviceFailure))]);
    let server = serve("127.0.0.1:0", Framing::RtuOverTcp, units).await;
    let mcfg = ModbusConfig { timeout_ms: 150, retries: 0, max_backoff_ms: 2_000, ..ModbusConfig::default() };
    let mut run = start(
        Transport::RtuOverTcp(server.endpoint()),
        vec![device("good", 1, 200), device("silent", 2, 200), device("broken", 3, 200)],
        mcfg,
    );
    let samples = run.collect_for(Duration::from_secs(4)).await;
    let metrics = run.metrics.render();
    run.stop().await;
    // Only the good device gives samples (4 s / 200 ms would be 20; a loaded machine gives fewer).
    assert!(samples.iter().all(|(_, s)| s.meter == "good"));
    assert!(samples.len() >= 10, "{} samples from the good device", samples.len());
    // The good device is never held back by more than one turn of the failing ones: one request
    // in flight per bus, the device due first goes next, and a failing device is due again only
    // after its back-off. So between two requests to the good device (unit 1) there are at most
    // two polls of the failing ones (at the start all three are due at once). A poll is a run
    // of requests to one unit (the profile reads two blocks). Counted in the server's log of
    // requests, not timed: a loaded machine stretches the gaps, not this order.
    let log = server.log.lock().unwrap();
    let order: Vec<u8> = log.requests.iter().map(|(_, u)| *u).collect();
    let polls = |run: &[u8]| run.iter().enumerate().filter(|&(i, u)| i == 0 || run[i - 1] != *u).count();
    let between: Vec<usize> = order.split(|u| *u == 1).skip(1).collect::<Vec<_>>().split_last().map(|(_, full)| full.iter().map(|run| polls(run)).collect()).unwrap_or_default();
    assert!(between.iter().all(|n| *n <= 2), "failing devices asked between two polls of the good one: {between:?} (order {order:?})");
    // The failing ones were asked less and less often (back-off), and every failure is counted.
    let asked = |u: u8| log.requests.iter().filter(|(_, x)| *x == u).count();
    assert!(asked(2) < asked(1) / 2 && asked(3) < asked(1) / 2, "good {} silent {} broken {}", asked(1), asked(2), asked(3));
    assert!(metrics.contains("kind=\"timeout\""), "{metrics}");
    assert!(metrics.contains("kind=\"exception\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_is_retried_on_the_same_connection() {
    // sdm120 is read in 2 requests; every other request goes unanswered.
    let (img, _) = image(&meter(), None);
    let flaky = |img: &Behaviour| Behaviour::Flaky(Box::new(img.clone()), Arc::new(std::sync::atomic::AtomicUsize::new(0)));
    let units = HashMap::from([(1, flaky(&img)), (2, flaky(&img))]);
    let server = serve("127.0.0.1:0", Framing::RtuOverTcp, units).await;
    let with = |retries| ModbusConfig { timeout_ms: 100, retries, max_backoff_ms: 200, ..ModbusConfig::default() };
    let mut d1 = device("retried", 1, 300);
    d1.0.retries = Some(1);
    let mut d2 = device("not-retried", 2, 300);
    d2.0.retries = Some(0);
    let mut run = start(Transport::RtuOverTcp(server.endpoint()), vec![d1, d2], with(0));
    let samples = run.collect_for(Duration::from_secs(3)).await;
    run.stop().await;
    let full = meter().registers.len();
    let of = |m: &str| samples.iter().filter(|(_, s)| s.meter == m).map(|(_, s)| s.v.len()).collect::<Vec<_>>();
    // With one retry every poll gets every value; without, no poll gets both of its requests
    // answered (what it did get is still sent).
    assert!(of("retried").len() >= 6 && of("retried").iter().all(|&n| n == full), "retried: {:?}", of("retried"));
    assert!(of("not-retried").iter().all(|&n| n < full), "not retried: {:?}", of("not-retried"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_at_a_time_with_the_configured_gap_between_frames() {
    let (img, _) = image(&meter(), None);
    let units = HashMap::from([(1, img.clone()), (2, img.clone()), (3, img)]);
    let server = serve("127.0.0.1:0", Framing::RtuOverTcp, units).await;
    let mcfg = ModbusConfig { request_delay_ms: 40, ..ModbusConfig::default() };
    let run = start(
        Transport::RtuOverTcp(server.endpoint()),
        vec![device("a", 1, 100), device("b", 2, 100), device("c", 3, 100)],
        mcfg,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.stop().await;
    let log = server.log.lock().unwrap();
    assert!(log.requests.len() >= 10, "{} requests", log.requests.len());
    for w in log.requests.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= Duration::from_millis(40), "requests to units {} and {} only {gap:?} apart", w[0].1, w[1].1);
    }
    // All three devices were read, in turn.
    for u in 1..=3 {
        assert!(log.requests.iter().any(|(_, x)| *x == u), "unit {u} never read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_whose_server_is_down_connects_once_it_is_up() {
    // A free port with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let mcfg = ModbusConfig { reconnect_min_ms: 100, reconnect_max_ms: 400, ..ModbusConfig::default() };
    let mut run = start(Transport::Tcp(endpoint.clone()), vec![device("m", 1, 200)], mcfg);
    assert!(run.collect_for(Duration::from_millis(800)).await.is_empty());
    let (img, _) = image(&meter(), None);
    let _server = serve(&endpoint, Framing::Tcp, HashMap::from([(1, img)])).await;
    let samples = run.collect_for(Duration::from_secs(3)).await;
    let metrics = run.metrics.render();
    run.stop().await;
    assert!(!samples.is_empty(), "no sample after the server came up");
    assert!(metrics.contains("energy_gateway_modbus_errors_total{bus=\"tcp://"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_factor_registers_are_read_and_applied() {
    // SunSpec style: W at 40083 (raw 1234) with W_SF at 40084 (-1) -> 123.4 W = 0.1234 kW;
    // energy at 40093..40094 with its SF at 40095 (3 -> x1000 Wh = kWh with scale 0.001).
    let p = parse_profile(
        "test/sunspec",
        "sunspec.toml",
        r#"
vendor = "Test"
model = "SunSpec-like"
source = "test profile"
[[register]]
quantity = "active_power"
address = 83
type = "i16"
scale = 0.001
scale_factor = 84
unit = "kW"
[[register]]
quantity = "active_energy_import"
address = 93
type = "u32"
scale = 0.001
scale_factor = 95
unit = "kWh"
[[register]]
quantity = "frequency"
address = 86
type = "u16"
scale_factor = 87
unit = "Hz"
"#,
    )
    .unwrap();
    let mut holding = vec![0u16; 96];
    holding[83] = 1234;
    holding[84] = (-1i16) as u16;
    holding[86] = 5001;
    holding[87] = 0x8000; // not implemented: the value is missing, never 0
    holding[93] = 0x0001;
    holding[94] = 0x86A0; // 100000
    holding[95] = 3;
    let units = HashMap::from([(1, Behaviour::Image { holding, input: vec![] })]);
    let server = serve("127.0.0.1:0", Framing::Tcp, units).await;
    let mut d = DeviceConfig::tcp("ss", "test/sunspec", "", 1);
    d.interval_ms = 1000;
    let mut run = start(Transport::Tcp(server.endpoint()), vec![(d, Arc::new(p))], ModbusConfig::default());
    let s = tokio::time::timeout(Duration::from_secs(5), run.rx.recv()).await.unwrap().unwrap();
    run.stop().await;
    assert!((s.v[&Quantity::ActivePower] - 0.1234).abs() < 1e-12, "{:?}", s.v);
    assert!((s.v[&Quantity::ActiveEnergyImport] - 100_000.0).abs() < 1e-9, "{:?}", s.v);
    assert!(!s.v.contains_key(&Quantity::Frequency), "{:?}", s.v);
}
