//! Gateway memory over time; prints figures, asserts nothing.
//!
//! `cargo bench -p energy-gateway --bench memory` starts 100 simulated SDM630 meters (one
//! loopback Modbus TCP server each) and the real `energy-gateway run` polling each of them once
//! a second, and prints the gateway's resident memory (VmRSS, and the peak VmHWM) from
//! `/proc/PID/status` every `BENCH_RSS_EVERY_SECS` seconds (default 60) for `BENCH_RSS_SECS`
//! seconds (default 3600), then a summary line.
//!
//! `BENCH_UPLINK` chooses where the readings go:
//! * `sink` (default): a loopback HTTP endpoint in this process that answers 200 to every batch,
//!   as a daemon that stores everything would; the queue stays short (steady state).
//! * `closed`: a closed port; readings stay in the on-disk queue, which grows all along.
//!
//! `BENCH_WRAP` runs the gateway under another command, e.g. `BENCH_WRAP="heaptrack -o
//! /tmp/gw"` for a heap profile (the RSS printed is then the wrapper's).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use energy_gateway::profile::load_dir;
use support::{image, serve, Framing};

const DEVICES: usize = 100;
const PROFILE: &str = "eastron/sdm630";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Starts a loopback HTTP endpoint that answers 200 to every POST and counts the bodies.
async fn sink(batches: Arc<AtomicU64>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let app = axum::Router::new().route(
        "/api/v1/ingest",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let b = batches.clone();
            async move {
                b.fetch_add(1, Ordering::Relaxed);
                "{}"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/api/v1/ingest")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let profiles = load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")).expect("profiles load");
    let p = profiles[PROFILE].clone();
    let (secs, every) = (env_u64("BENCH_RSS_SECS", 3600), env_u64("BENCH_RSS_EVERY_SECS", 60).max(1));
    let uplink = std::env::var("BENCH_UPLINK").unwrap_or_else(|_| "sink".into());
    rt.block_on(async {
        let mut servers = Vec::new();
        for _ in 0..DEVICES {
            servers.push(serve("127.0.0.1:0", Framing::Tcp, HashMap::from([(1, image(&p, None).0)])).await);
        }
        let batches = Arc::new(AtomicU64::new(0));
        let url = match uplink.as_str() {
            "closed" => "http://127.0.0.1:9/api/v1/ingest".to_string(),
            _ => sink(batches.clone()).await,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = format!(
            "gateway_id = \"bench\"\nprofiles_dir = \"{}\"\n[queue]\ndir = \"{}\"\n[uplink]\nurl = \"{url}\"\n",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles").display(),
            dir.path().join("queue").display()
        );
        for (i, s) in servers.iter().enumerate() {
            cfg.push_str(&format!("[[device]]\nmeter = \"m{i}\"\nprofile = \"{PROFILE}\"\ntcp = \"{}\"\nunit = 1\ninterval_ms = 1000\n", s.endpoint()));
        }
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, cfg).expect("write config");
        // `BENCH_WRAP`: a command to run the gateway under (a heap profiler: `heaptrack -o FILE`).
        let wrap: Vec<String> = std::env::var("BENCH_WRAP").unwrap_or_default().split_whitespace().map(str::to_string).collect();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = std::process::Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_energy-gateway"));
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_energy-gateway")),
        };
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start energy-gateway");
        let pid = child.id();
        println!("energy-gateway run, {DEVICES} devices on {DEVICES} TCP connections, 1 poll/s each, uplink {uplink}; VmRSS every {every} s");
        println!("{:>8} {:>10} {:>10} {:>10}", "seconds", "RSS kB", "peak kB", "batches");
        let start = Instant::now();
        let mut samples: Vec<(u64, u64)> = Vec::new();
        let mut t = 0;
        while t < secs {
            t = (t + every).min(secs);
            tokio::time::sleep_until((start + Duration::from_secs(t)).into()).await;
            if let Ok(Some(_)) = child.try_wait() {
                println!("energy-gateway exited early");
                break;
            }
            let (rss, hwm) = (status_kb(pid, "VmRSS:").unwrap_or(0), status_kb(pid, "VmHWM:").unwrap_or(0));
            samples.push((t, rss));
            println!("{t:>8} {rss:>10} {hwm:>10} {:>10}", batches.load(Ordering::Relaxed));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Growth over the second half of the run, per second: near zero when memory levelled off.
        if let (Some(mid), Some(last)) = (samples.get(samples.len() / 2), samples.last()) {
            if last.0 > mid.0 {
                let slope = (last.1 as f64 - mid.1 as f64) / (last.0 - mid.0) as f64;
                println!("RSS at {} s: {} kB; at {} s: {} kB; growth over the second half {slope:.2} kB/s", mid.0, mid.1, last.0, last.1);
            }
        }
    });
}
