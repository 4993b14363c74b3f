//! Store-and-forward throughput: a backlog in the gateway's durable queue drained through the
//! uplink into the daemon's store, with end-to-end acknowledgements, over MQTT (a real
//! Mosquitto) and over HTTP. Prints readings per second, the time to drain the backlog, queue
//! bytes per reading, and the gateway's peak memory.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p energy-e2e --bench uplink -- [meters] [hours] [quantities]
//! ```
//! Defaults: 1000 meters, 24 hours at one sample a minute, 10 quantities per sample.

use std::time::{Duration, Instant};

use energy_e2e::{free_port, get_json, listening_url, profiles_dir, Mosquitto, Proc};
use energy_wire::{Quantity, Sample};

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn prefill(queue: &std::path::Path, meters: usize, minutes: usize, quantities: usize) -> (u64, u64) {
    let mut q = energy_gateway::queue::Queue::open(queue, 64 << 20, 64 << 30).expect("queue");
    let qs: Vec<Quantity> = Quantity::ALL.iter().copied().take(quantities).collect();
    let t0 = chrono::Utc::now().timestamp_millis() - minutes as i64 * 60_000;
    let mut n = 0u64;
    for m in 0..minutes {
        for meter in 0..meters {
            let v = qs.iter().enumerate().map(|(i, q)| (*q, 1000.0 + (m * 7 + meter + i) as f64 * 0.37)).collect();
            let s = Sample { meter: format!("bm-{meter:04}"), t: t0 + m as i64 * 60_000, v };
            q.append(&serde_json::to_vec(&s).unwrap()).expect("append");
            n += 1;
        }
    }
    q.sync().expect("sync");
    (n, q.bytes())
}

struct Row {
    transport: &'static str,
    samples: u64,
    readings: u64,
    secs: f64,
    queue_bytes: u64,
    gw_peak_kib: u64,
    daemon_peak_kib: u64,
}

async fn run(transport: &'static str, meters: usize, minutes: usize, quantities: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut reg = String::from("[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 100.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n");
    for m in 0..meters {
        reg.push_str(&format!("[[meter]]\nid = \"bm-{m:04}\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n"));
    }
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    let broker = (transport == "mqtt").then(|| Mosquitto::start(&d.join("broker")));
    let mqtt = broker.as_ref().map(|b| format!("[mqtt]\nurl = \"{}\"\nclient_id = \"energyd-bench\"\n", b.url())).unwrap_or_default();
    let port = free_port();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n{mqtt}")).unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    let (samples, queue_bytes) = prefill(&d.join("queue"), meters, minutes, quantities);
    let uplink = match &broker {
        Some(b) => b.url(),
        None => format!("{url}/api/v1/ingest"),
    };
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "gateway_id = \"bench-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = \"queue\"\nmax_bytes = 68719476736\n[uplink]\nurl = \"{uplink}\"\nbatch_max_samples = 2000\nmax_in_flight_samples = 20000\nbackfill_samples_per_second = 0\n",
            profiles_dir()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    let gw_pid = gw.child.id();
    let d_pid = daemon.child.id();
    let mut gw_peak = 0;
    let mut d_peak = 0;
    loop {
        gw_peak = gw_peak.max(vm_hwm_kib(gw_pid));
        d_peak = d_peak.max(vm_hwm_kib(d_pid));
        let (_, v) = get_json(&format!("{url}/api/v1/gateways")).await;
        let acked = v["items"].as_array().and_then(|a| a.iter().find(|g| g["id"] == "bench-gw")).and_then(|g| g["acked_through"].as_u64()).unwrap_or(0);
        if acked >= samples {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "drain did not finish within an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(60));
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(60));
    Row { transport, samples, readings: samples * quantities as u64, secs, queue_bytes, gw_peak_kib: gw_peak, daemon_peak_kib: d_peak }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let meters = args.first().copied().unwrap_or(1000);
    let hours = args.get(1).copied().unwrap_or(24);
    let quantities = args.get(2).copied().unwrap_or(10).clamp(1, Quantity::ALL.len());
    println!("backlog: {meters} meters x {hours} h at 1 sample/min x {quantities} quantities");
    // Compression of one full batch of the same data.
    let qs: Vec<Quantity> = Quantity::ALL.iter().copied().take(quantities).collect();
    let samples: Vec<Sample> = (0..2000)
        .map(|i| Sample {
            meter: format!("bm-{:04}", i % meters.max(1)),
            t: 1_764_288_000_000 + (i / meters.max(1)) as i64 * 60_000,
            v: qs.iter().enumerate().map(|(k, q)| (*q, 1000.0 + (i * 7 + k) as f64 * 0.37)).collect(),
        })
        .collect();
    let batch = energy_wire::Batch::new("bench-gw", 1, samples);
    let raw = energy_wire::encode_batch(&batch).len();
    let (gz, _) = energy_gateway::uplink::encode(&batch, true);
    let readings = 2000 * quantities;
    println!(
        "batch of 2000 samples: JSON {:.1} bytes/reading, gzip {:.1} bytes/reading ({:.1}x)",
        raw as f64 / readings as f64,
        gz.len() as f64 / readings as f64,
        raw as f64 / gz.len() as f64
    );
    let mut rows = Vec::new();
    for t in ["mqtt", "http"] {
        rows.push(run(t, meters, hours * 60, quantities).await);
    }
    println!("| uplink | samples | readings | drain time | readings/s | queue bytes/reading | gateway peak RSS | daemon peak RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} s | {:.0} | {:.1} | {:.1} MB | {:.1} MB |",
            r.transport,
            r.samples,
            r.readings,
            r.secs,
            r.readings as f64 / r.secs,
            r.queue_bytes as f64 / r.readings as f64,
            r.gw_peak_kib as f64 / 1024.0,
            r.daemon_peak_kib as f64 / 1024.0
        );
    }
}
