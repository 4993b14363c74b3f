//! Gateway benchmark; prints figures, asserts nothing about time.
//!
//! `cargo bench -p energy-gateway --bench poll` prints:
//! 1. per shipped profile, the requests one poll takes against one request per value;
//! 2. polls per second against a loopback Modbus TCP server for 100 simulated devices on one
//!    TCP connection (one bus, units 1..100) and on 100 connections (100 servers);
//!
//! The gateway's resident memory over time is measured by `benches/memory.rs`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_gateway::poll::{DeviceConfig, ModbusConfig};
use energy_gateway::metrics::Metrics;
use energy_gateway::profile::{load_dir, plan_reads, Profile};
use energy_gateway::transport::Transport;
use support::{image, serve, Framing, Server};
use tokio_util::sync::CancellationToken;

const DEVICES: u8 = 100;
const PROFILE: &str = "eastron/sdm630";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let profiles = load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")).expect("profiles load");
    requests_per_poll(&profiles);
    let p = Arc::new(profiles[PROFILE].clone());
    rt.block_on(async {
        let secs = env_secs("BENCH_POLL_SECS", 5);
        let one = serve("127.0.0.1:0", Framing::Tcp, (1..=DEVICES).map(|u| (u, image(&p, None).0)).collect()).await;
        let buses = vec![(Transport::Tcp(one.endpoint()), (1..=DEVICES).collect::<Vec<u8>>())];
        let rate = polls_per_second(&p, buses, secs).await;
        println!("polls/s, {DEVICES} x {PROFILE} on 1 TCP connection:    {rate:>8.0}  ({} requests/poll)", plan_reads(&p.registers, &p.limits).len());
        drop(one);
        let servers = many_servers(&p).await;
        let buses = servers.iter().map(|s| (Transport::Tcp(s.endpoint()), vec![1u8])).collect();
        let rate = polls_per_second(&p, buses, secs).await;
        println!("polls/s, {DEVICES} x {PROFILE} on {DEVICES} TCP connections: {rate:>8.0}");
    });
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn requests_per_poll(profiles: &BTreeMap<String, Profile>) {
    println!("{:<28} {:>8} {:>14} {:>8}", "profile", "values", "requests/poll", "saving");
    let (mut values, mut requests) = (0, 0);
    for (name, p) in profiles {
        let plan = plan_reads(&p.registers, &p.limits);
        println!("{name:<28} {:>8} {:>14} {:>7.1}x", p.registers.len(), plan.len(), p.registers.len() as f64 / plan.len() as f64);
        values += p.registers.len();
        requests += plan.len();
    }
    println!("{:<28} {values:>8} {requests:>14} {:>7.1}x", format!("all {} profiles", profiles.len()), values as f64 / requests as f64);
}

async fn many_servers(p: &Profile) -> Vec<Server> {
    let mut out = Vec::new();
    for _ in 0..DEVICES {
        out.push(serve("127.0.0.1:0", Framing::Tcp, HashMap::from([(1, image(p, None).0)])).await);
    }
    out
}

/// Runs one poller per bus with every device due all the time; returns samples per second.
async fn polls_per_second(p: &Arc<Profile>, buses: Vec<(Transport, Vec<u8>)>, secs: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel(65_536);
    let cancel = CancellationToken::new();
    let status = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    let mut n = 0;
    for (transport, units) in buses {
        let devices = units
            .into_iter()
            .map(|u| {
                n += 1;
                let mut d = DeviceConfig::tcp(&format!("m{n}"), PROFILE, "", u);
                d.interval_ms = 1;
                (d, p.clone())
            })
            .collect();
        tasks.push(tokio::spawn(energy_gateway::poll::run_bus(
            transport,
            devices,
            ModbusConfig::default(),
            tx.clone(),
            Metrics::new(),
            status.clone(),
            cancel.clone(),
        )));
    }
    drop(tx);
    // Warm up (connections, first polls), then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut count = 0u64;
    while let Ok(Some(_)) = tokio::time::timeout_at(end.into(), rx.recv()).await {
        count += 1;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    cancel.cancel();
    for t in tasks {
        let _ = t.await;
    }
    rate
}
