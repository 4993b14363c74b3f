//! DL/T 645 polling against its physical limit, and the gateway's memory with 100 meters on 4
//! buses. Run with `cargo bench -p energy-gateway --bench field` (a release build).
//!
//! 1. One meter of each DL/T 645 generic profile behind a simulated line at 2400 baud: the
//!    simulator holds every request and every reply for its time on the wire (11 bits a byte:
//!    start, 8 data, even parity, stop) and adds an answer delay. The poll time per meter is
//!    compared with the physical limit: sum over the requests of (request bytes + reply bytes) x
//!    11 / baud + the answer delay.
//! 2. `energy-gateway run` with 100 DL/T 645-2007 meters on 4 buses (serial servers, 25 meters
//!    each, 9600 baud, interval 10 s: the buses are saturated, each polled back to back): peak
//!    resident memory (VmHWM).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use energy_gateway::poll::ModbusConfig;
use energy_gateway::field::dlt645;
use energy_gateway::field::link::connect;
use energy_gateway::field::poll::{read_meter, FieldMeter};
use energy_gateway::field::profile::{load_field_dir, FieldProfile};
use energy_gateway::field::sim::{SimBus, SimMeter};
use energy_gateway::transport::Transport;
use tokio_util::sync::CancellationToken;

const BAUD: u32 = 2400;

fn profiles_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Bytes on the wire of one poll of `p` (requests and replies, preambles included).
fn wire_bytes(p: &FieldProfile) -> (usize, usize) {
    let ed = p.protocol.edition().expect("a DL/T 645 profile");
    let a = [0x01, 0, 0, 0, 0, 0];
    let mut n = 0;
    for r in &p.reads {
        let value: usize = r.values.iter().filter_map(|v| v.fmt).map(|f| f.bytes()).sum();
        n += dlt645::read_request(ed, &a, &r.di_bytes).len();
        n += dlt645::encode_reply(ed, &a, &r.di_bytes, &vec![0; value], false, None).len();
    }
    (n, p.reads.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let profiles = load_field_dir(&profiles_dir()).expect("profiles load");
    let delay = Duration::from_millis(env_u64("BENCH_ANSWER_DELAY_MS", 100));
    rt.block_on(async {
        println!("DL/T 645 poll time per meter at {BAUD} baud 8E1, answer delay {} ms:", delay.as_millis());
        println!("{:<34} {:>8} {:>10} {:>12} {:>12} {:>7}", "profile", "requests", "wire bytes", "limit (ms)", "poll (ms)", "ratio");
        for name in ["generic/dlt645-2007-three-phase", "generic/dlt645-2007-single-phase", "generic/dlt645-1997"] {
            let p = Arc::new(profiles[name].clone());
            let (bytes, requests) = wire_bytes(&p);
            let limit = Duration::from_secs_f64(bytes as f64 * 11.0 / f64::from(BAUD)) + delay * requests as u32;
            let bus = SimBus::new(vec![SimMeter::new(p.clone(), "000000000001", SimMeter::typical(&p)).expect("meter")], delay, Some(BAUD));
            let cancel = CancellationToken::new();
            let ep = bus.serve_tcp("127.0.0.1:0", cancel.clone()).await.expect("listen");
            let t = Transport::Tcp(ep.to_string());
            let mut link = connect(&t, Duration::from_secs(2)).await.expect("connect").with_gap(energy_gateway::transport::rtu_silence(BAUD));
            let mut m = FieldMeter::new(p.clone(), Some(vec![1, 0, 0, 0, 0, 0]));
            let mcfg = ModbusConfig { timeout_ms: 2000, ..ModbusConfig::default() };
            let polls = env_u64("BENCH_POLLS", 3);
            let start = Instant::now();
            for _ in 0..polls {
                let r = read_meter(&mut link, &mut m, &mcfg).await;
                assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
            }
            let per = start.elapsed() / polls as u32;
            println!(
                "{name:<34} {requests:>8} {bytes:>10} {:>12.0} {:>12.0} {:>6.2}x",
                limit.as_secs_f64() * 1e3,
                per.as_secs_f64() * 1e3,
                per.as_secs_f64() / limit.as_secs_f64()
            );
            cancel.cancel();
        }
        memory(&profiles, env_u64("BENCH_RSS_SECS", 30)).await;
    });
}

async fn memory(profiles: &BTreeMap<String, FieldProfile>, secs: u64) {
    let name = "generic/dlt645-2007-three-phase";
    let p = Arc::new(profiles[name].clone());
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = format!(
        "gateway_id = \"bench\"\nprofiles_dir = \"{}\"\n[queue]\ndir = \"{}\"\n[uplink]\n# Nothing listens here: readings stay in the durable queue.\nurl = \"http://127.0.0.1:9/api/v1/ingest\"\n",
        profiles_dir().display(),
        dir.path().join("queue").display()
    );
    for bus in 0..4 {
        let meters: Vec<SimMeter> = (0..25).map(|i| SimMeter::new(p.clone(), &format!("{:012}", bus * 100 + i + 1), SimMeter::typical(&p)).expect("meter")).collect();
        // 9600 baud behind the serial servers so that 25 meters fit in a 10 s interval.
        let sim = SimBus::new(meters, Duration::from_millis(20), Some(9600));
        let ep = sim.serve_tcp("127.0.0.1:0", cancel.clone()).await.expect("listen");
        for i in 0..25 {
            cfg.push_str(&format!(
                "[[device]]\nmeter = \"m{bus}-{i}\"\nprofile = \"{name}\"\ntcp = \"{ep}\"\naddress = \"{:012}\"\ninterval_ms = 10000\n",
                bus * 100 + i + 1
            ));
        }
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, cfg).expect("write config");
    let (hwm, rss) = support::gateway_rss(&path, secs).await;
    cancel.cancel();
    println!(
        "energy-gateway run, 100 x {name} on 4 serial servers (25 each, 9600 baud: each bus polled back to back), {secs} s: peak RSS (VmHWM) {}, RSS now {}",
        hwm,
        rss
    );
}
