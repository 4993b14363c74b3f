//! Soak test (issue 9, "Reliability proof"): a few hundred simulated Modbus TCP meters, polled by
//! three gateways that forward over MQTT through a real Mosquitto into `energyd`'s MQTT ingest,
//! for a fixed duration (`SOAK_SECONDS`, default 60, at least 30) of random faults. Meanwhile the test stops and restarts the
//! broker, SIGKILLs and restarts the daemon, and SIGKILLs and restarts a gateway, at moments drawn
//! from a seeded RNG (`SOAK_SEED` to replay a run; the seed is printed). Then, once each (issue
//! 17): a gateway's queue directory is lost (the gateway stopped, its directory deleted, started
//! again with the same id: a new queue epoch), and the daemon stays away until the gateways have
//! queued over 100,000 samples, during which one gateway is stopped, one unacknowledged record in
//! the middle of its queue is corrupted, and it is started again. At the end the gateways drain
//! their queues and stop, and every reading the simulator served is checked to be in the store
//! exactly once; the only readings allowed to be missing are the corrupted record (counted by its
//! gateway in `energy_gateway_queue_lost_samples_total`), what a deleted queue still held, and
//! what a SIGKILLed gateway had polled but not yet queued.
//!
//! The gateways run the shipped defaults of the uplink (history limited to 20,000 samples/s,
//! ack timeout, retry and drain times); only the Modbus timeout is longer (see `gateway_file`).
//!
//! Everything runs on 127.0.0.1 with free ports and a temporary directory; every process is killed
//! when the test ends, pass or fail. Run it with `cargo nextest run -p energy-e2e --test soak`
//! `--no-capture` to see the timeline and the figures (nextest shows a passing test's output only
//! then; a failing test's output is always shown).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_e2e::{eventually, free_port, get_json, listening_url, profiles_dir, q, Mosquitto, Proc};

/// Simulated buses (one Modbus TCP endpoint each) and meters per bus.
const BUSES: usize = 6;
const PER_BUS: usize = 50;
/// Gateways; gateway `g` polls buses `g`, `g + GATEWAYS`, ...
const GATEWAYS: usize = 3;
/// Poll interval of every meter: 600 samples/s from the 300 meters, so that a daemon outage of
/// about three minutes builds the backlog of `BACKLOG` samples.
const POLL_MS: u64 = 500;
/// The queued samples (all gateways) that the long daemon outage waits for.
const BACKLOG: u64 = 100_000;
/// A gateway killed with SIGKILL loses the readings it had polled but not yet appended to its
/// durable queue (the queue writer appends and fsyncs in batches, right after each poll). Those
/// were served at most this long before the kill; see the rule in `check_meter`.
const KILL_WINDOW_MS: i64 = 10_000;
/// After a kill: the simulator may still answer a request the dead gateway had sent.
const AFTER_KILL_MS: i64 = 5_000;

/// (profile, simulator model, stored counter quantity, registry carrier, quantities the profile
/// reads: each poll of the meter is that many readings, the counter being the one checked)
const KINDS: &[(&str, &str, &str, &str, usize)] = &[
    ("eastron/sdm120", "office_electricity", "active_energy_import", "electricity", 11),
    ("siemens/mag6000", "office_water", "water_volume", "water", 2),
    ("aquametro/calec-st", "district_heat", "heat_energy", "district_heat", 6),
    ("acrel/adl3000-e", "office_electricity", "active_energy_import", "electricity", 2),
    ("siemens/mag6000", "office_water", "water_volume", "water", 2),
    ("aquametro/calec-st", "district_heat", "heat_energy", "district_heat", 6),
];

struct Meter {
    id: String,
    bus: usize,
    unit: usize,
    kind: usize,
    gateway: usize,
}

fn meters() -> Vec<Meter> {
    let mut out = Vec::new();
    for bus in 0..BUSES {
        for unit in 1..=PER_BUS {
            let k = bus * PER_BUS + unit - 1;
            out.push(Meter { id: format!("soak-{bus}-{unit:02}"), bus, unit, kind: k % KINDS.len(), gateway: bus % GATEWAYS });
        }
    }
    out
}

/// A small xorshift64* generator: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn write_files(d: &std::path::Path, meters: &[Meter], broker: &str, daemon_port: u16) {
    let mut sim = format!("profiles_dir = {:?}\nserved_log = {:?}\n", profiles_dir(), d.join("served.jsonl"));
    let mut reg = String::from(
        "[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 50000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n",
    );
    for bus in 0..BUSES {
        sim.push_str("[[bus]]\n");
        for (i, m) in meters.iter().enumerate().filter(|(_, m)| m.bus == bus) {
            let (profile, model, _, carrier, _) = KINDS[m.kind];
            sim.push_str(&format!(
                "[[bus.meter]]\nid = \"{}\"\nunit = {}\nprofile = \"{profile}\"\nmodel = \"{model}\"\nsize = {}\nseed = {i}\ninitial = {}\n",
                m.id,
                m.unit,
                2000.0 + 50.0 * i as f64,
                100.0 + i as f64
            ));
            reg.push_str(&format!("[[meter]]\nid = \"{}\"\nbuilding = \"b\"\ncarrier = \"{carrier}\"\ngateway = \"soak-gw-{}\"\n", m.id, m.gateway));
        }
    }
    std::fs::write(d.join("sim.toml"), sim).unwrap();
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{daemon_port}\"\n[mqtt]\nurl = \"{broker}\"\nclient_id = \"energyd-soak\"\n"),
    )
    .unwrap();
}

/// The gateways wait up to 5 s for a Modbus answer: on a machine loaded by other tests the
/// simulator can answer later than the default second; the gateway then drops the late answer
/// (and the connection, whose transaction ids no longer match) although the simulator logged the
/// reading as served, which this test would count as a loss. Slow devices are not what it tests.
fn gateway_file(d: &std::path::Path, g: usize, meters: &[Meter], buses: &[String], broker: &str, health_port: u16) -> String {
    let name = format!("gateway-{g}.toml");
    let mut gw = format!(
        "gateway_id = \"soak-gw-{g}\"\nprofiles_dir = {:?}\n[queue]\ndir = {:?}\n[uplink]\nurl = \"{broker}\"\nsite = \"soak\"\n[health]\nlisten = \"127.0.0.1:{health_port}\"\n[modbus]\ntimeout_ms = 5000\n",
        profiles_dir(),
        d.join(format!("queue-{g}"))
    );
    for m in meters.iter().filter(|m| m.gateway == g) {
        gw.push_str(&format!(
            "[[device]]\nmeter = \"{}\"\nprofile = \"{}\"\ntcp = \"{}\"\nunit = {}\ninterval_ms = {POLL_MS}\n",
            m.id, KINDS[m.kind].0, buses[m.bus], m.unit
        ));
    }
    std::fs::write(d.join(&name), gw).unwrap();
    name
}

/// What the simulator served: per meter, (time served in ms, counter value), in order.
fn served(d: &std::path::Path) -> HashMap<String, Vec<(i64, f64)>> {
    let mut m: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
    for line in std::fs::read_to_string(d.join("served.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("served log line `{line}`: {e}"));
        m.entry(v["meter"].as_str().unwrap().to_string()).or_default().push((v["t_ms"].as_i64().unwrap(), v["value"].as_f64().unwrap()));
    }
    for s in m.values_mut() {
        s.sort_by_key(|r| r.0);
    }
    m
}

/// The stored points of a meter's counter: (time in ms, value), in time order.
async fn stored(url: &str, meter: &str, quantity: &str, from: &str, to: &str) -> Vec<(i64, f64)> {
    let (status, v) = get_json(&format!("{url}/api/v1/series?meter={meter}&quantity={quantity}&from={}&to={}", q(from), q(to))).await;
    assert_eq!(status, 200, "{meter}: series query failed: {v}");
    v["points"]
        .as_array()
        .unwrap_or_else(|| panic!("{meter}: no points in {v}"))
        .iter()
        .map(|p| (chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap().timestamp_millis(), p["v"].as_f64().unwrap()))
        .collect()
}

#[derive(Default, Debug)]
struct MeterCheck {
    matched: usize,
    lost_to_kill: usize,
    /// Known lost: the corrupted record, what a deleted queue held.
    lost_known: usize,
}

/// Matches a meter's stored points with what the simulator served. A gateway stamps a reading
/// just before it sends its Modbus requests, so the served read of a stored point is the first
/// one at or after the point's time; it must carry the same value. Each served read is matched
/// at most once, so a reading stored twice (under a second time) has nothing left to match and
/// fails, as does a value the simulator never served.
///
/// The rule for losses is the one of tests/mqtt.rs: every reading that entered a gateway's
/// durable queue arrives, and a gateway killed with SIGKILL may lose only what it had polled and
/// not yet appended, i.e. reads served shortly before the kill (`KILL_WINDOW_MS`: an fsync on a
/// loaded machine can lag by seconds), or answered after it to a request the dead gateway had
/// sent (`AFTER_KILL_MS`), by a gateway
/// that polls this meter. Any other served read missing from the store fails the test.
fn check_meter(id: &str, served: &[(i64, f64)], stored: &[(i64, f64)], kills: &[i64], lost: &[i64]) -> MeterCheck {
    let mut c = MeterCheck::default();
    // Served reads whose samples are known lost (a corrupted record, a deleted queue): the first
    // read at or after each lost sample's time.
    let lost_reads: Vec<usize> = lost.iter().filter_map(|&t| served.iter().position(|r| r.0 >= t)).collect();
    let mut i = 0;
    for (n, &(t, v)) in stored.iter().enumerate() {
        while i < served.len() && served[i].0 < t {
            let (ts, vs) = served[i];
            if lost_reads.contains(&i) {
                c.lost_known += 1;
                i += 1;
                continue;
            }
            assert!(
                kills.iter().any(|&k| (k - KILL_WINDOW_MS..=k + AFTER_KILL_MS).contains(&ts)),
                "{id}: the reading {vs} served at {ts} ms is not in the store (the next stored point is {v} at {t} ms; gateway kills of this meter's gateway at {kills:?})"
            );
            c.lost_to_kill += 1;
            i += 1;
        }
        assert!(
            i < served.len(),
            "{id}: stored point #{n} ({v} at {t} ms) matches no served reading: a duplicate or a value the simulator never served (last served: {:?})",
            served.last()
        );
        let (ts, vs) = served[i];
        assert!(
            vs == v && ts - t < 10_000,
            "{id}: stored point #{n} ({v} at {t} ms) is not the reading served next ({vs} at {ts} ms): a duplicate, a reordering or a foreign value"
        );
        c.matched += 1;
        i += 1;
    }
    for (k, &(ts, vs)) in served.iter().enumerate().skip(i) {
        if lost_reads.contains(&k) {
            c.lost_known += 1;
            continue;
        }
        assert!(
            kills.iter().any(|&k| (k - KILL_WINDOW_MS..=k + AFTER_KILL_MS).contains(&ts)),
            "{id}: the reading {vs} served at {ts} ms (after the last stored point) is not in the store"
        );
        c.lost_to_kill += 1;
    }
    c
}

async fn gateway_depth(port: u16) -> Option<u64> {
    let client = energy_e2e::http_client();
    let r = client.get(format!("http://127.0.0.1:{port}/status")).timeout(Duration::from_secs(2)).send().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    v["queue_depth"].as_u64()
}

async fn gateway_metric(port: u16, name: &str) -> Option<f64> {
    let r = energy_e2e::http_client().get(format!("http://127.0.0.1:{port}/metrics")).timeout(Duration::from_secs(2)).send().await.ok()?;
    let text = r.text().await.ok()?;
    Some(text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum())
}

/// The unacknowledged samples of a stopped gateway's queue: (meter, time).
fn unacked(queue_dir: &std::path::Path) -> Vec<(String, i64)> {
    let Ok(mut q) = energy_gateway::queue::Queue::open(queue_dir, 16 << 20, 1 << 30) else { return Vec::new() };
    q.peek(usize::MAX)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<energy_wire::Sample>(&r.body).ok())
        .map(|s| (s.meter, s.t))
        .collect()
}

/// Corrupts one unacknowledged record in the middle of a stopped gateway's newest segment (4
/// bytes of its body flipped, as a bad sector would); returns its sample's (meter, time).
/// Records: `len: u32 | crc32: u32 | seq: u64 | body` (gateway/src/queue.rs).
fn corrupt_one_record(queue_dir: &std::path::Path) -> Option<(String, i64)> {
    let acked: u64 = std::fs::read_to_string(queue_dir.join("acked")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mut segs: Vec<_> = std::fs::read_dir(queue_dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
    segs.sort();
    let seg = segs.last()?;
    let mut data = std::fs::read(seg).ok()?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().ok()?) as usize;
        if at + 8 + len > data.len() {
            break;
        }
        let seq = u64::from_le_bytes(data[at + 8..at + 16].try_into().ok()?);
        if seq > acked {
            records.push((at, len));
        }
        at += 8 + len;
    }
    // Not the first or last few: a record with good ones on both sides.
    if records.len() < 10 {
        return None;
    }
    let (at, len) = records[records.len() / 2];
    let sample: energy_wire::Sample = serde_json::from_slice(&data[at + 16..at + 8 + len]).ok()?;
    for b in &mut data[at + 20..at + 24] {
        *b ^= 0x5a;
    }
    std::fs::write(seg, &data).ok()?;
    Some((sample.meter, sample.t))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Broker,
    Daemon,
    Gateway,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_meters_through_random_broker_daemon_and_gateway_faults_arrive_exactly_once() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60).max(30);
    let seed: u64 = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    }) | 1;
    println!("soak: seed {seed} (SOAK_SEED={seed} replays the fault schedule), {seconds} s");
    let mut rng = Rng(seed);
    let test_start = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let meters = meters();
    let mut broker = Mosquitto::start(&d.join("broker"));
    let daemon_port = free_port();
    write_files(d, &meters, &broker.url(), daemon_port);

    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let mut buses = Vec::new();
    for _ in 0..BUSES {
        let line = sim.wait_line("{\"listen\"", Duration::from_secs(30));
        sim.seen.clear();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        buses.push(v["listen"].as_str().unwrap().to_string());
    }
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(60)));
    daemon.wait_line("MQTT ingest subscribed", Duration::from_secs(60));

    let health: Vec<u16> = (0..GATEWAYS).map(|_| free_port()).collect();
    let gw_files: Vec<String> = (0..GATEWAYS).map(|g| gateway_file(d, g, &meters, &buses, &broker.url(), health[g])).collect();
    let spawn_gw = |g: usize| Proc::spawn("energy-gateway", &["run", "--config", &gw_files[g]], d);
    let mut gws: Vec<Proc> = (0..GATEWAYS).map(spawn_gw).collect();
    for (g, port) in health.iter().enumerate() {
        eventually(Duration::from_secs(60), &format!("gateway {g} answers /status"), || gateway_depth(*port)).await;
    }

    // A watcher samples the gateways' queue depths every 250 ms (for the drain figures).
    let depths: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let watch = {
        let (depths, health) = (depths.clone(), health.clone());
        tokio::spawn(async move {
            loop {
                let mut total = 0;
                for p in &health {
                    total += gateway_depth(*p).await.unwrap_or(0);
                }
                depths.lock().unwrap().push((test_start.elapsed(), total));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // The fault schedule: the three kinds once each in a random order, then random kinds, with
    // random gaps, until the duration is used up.
    let soak_start = Instant::now();
    let end = soak_start + Duration::from_secs(seconds);
    let mut order = [Fault::Broker, Fault::Daemon, Fault::Gateway];
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut timeline: Vec<String> = Vec::new();
    let mut recoveries: Vec<(Fault, Duration)> = Vec::new();
    let mut kills: Vec<Vec<i64>> = vec![Vec::new(); GATEWAYS];
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut n = 0usize;
    let t = |i: Instant| format!("{:6.1} s", i.duration_since(soak_start).as_secs_f64());
    loop {
        let gap = rng.ms(2000, 8000);
        let outage = rng.ms(1000, 5000);
        let fault = if n < order.len() { order[n] } else { order[rng.below(3)] };
        // Keep at least 10 s of the duration after each fault, except for the first three.
        if n >= order.len() && Instant::now() + gap + outage + Duration::from_secs(10) > end {
            break;
        }
        tokio::time::sleep(gap).await;
        let at = Instant::now();
        let what = match fault {
            Fault::Broker => {
                broker.stop();
                tokio::time::sleep(outage).await;
                broker.restart();
                format!("broker stopped for {:.1} s, restarted on the same port and data dir", outage.as_secs_f64())
            }
            Fault::Daemon => {
                daemon.signal("KILL");
                daemon.wait_exit(Duration::from_secs(10));
                tokio::time::sleep(outage).await;
                daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
                daemon.wait_line("listening on", Duration::from_secs(60));
                format!("daemon SIGKILLed, down {:.1} s, restarted on the same store and port", outage.as_secs_f64())
            }
            Fault::Gateway => {
                let g = rng.below(GATEWAYS);
                gws[g].signal("KILL");
                kills[g].push(chrono::Utc::now().timestamp_millis());
                gws[g].wait_exit(Duration::from_secs(10));
                tokio::time::sleep(outage).await;
                gws[g] = spawn_gw(g);
                eventually(Duration::from_secs(60), &format!("gateway soak-gw-{g} answers /status after its restart"), || gateway_depth(health[g])).await;
                format!("gateway soak-gw-{g} SIGKILLed, down {:.1} s, restarted on the same queue", outage.as_secs_f64())
            }
        };
        let line = format!("{} {what}", t(at));
        println!("soak: {line}");
        timeline.push(line);
        recoveries.push((fault, test_start.elapsed()));
        *counts.entry(match fault {
            Fault::Broker => "broker",
            Fault::Daemon => "daemon",
            Fault::Gateway => "gateway",
        })
        .or_default() += 1;
        n += 1;
    }
    if Instant::now() < end {
        tokio::time::sleep(end - Instant::now()).await;
    }

    // A queue directory lost: the gateway stopped, its directory deleted, started again with the
    // same id. What the directory still held is lost (known, counted); every reading polled
    // after the restart must be stored, not taken for a duplicate of the old queue's numbers.
    let mut lost: HashMap<String, Vec<i64>> = HashMap::new();
    let mut lost_with_queue = 0usize;
    {
        let g = rng.below(GATEWAYS);
        // As an operator would before reinstalling: stopped once it has caught up (the last
        // faults' resends take up to the ack timeout, 30 s by default), so that little is lost.
        let per_gateway = (meters.len() / GATEWAYS) as u64;
        eventually(Duration::from_secs(180), &format!("soak-gw-{g} caught up before its queue is lost"), || async {
            (gateway_depth(health[g]).await? <= 2 * per_gateway).then_some(())
        })
        .await;
        let at = Instant::now();
        gws[g].signal("TERM");
        assert!(gws[g].wait_exit(Duration::from_secs(60)).success(), "gateway soak-gw-{g} did not stop cleanly");
        let qdir = d.join(format!("queue-{g}"));
        for (m, t) in unacked(&qdir) {
            lost.entry(m).or_default().push(t);
            lost_with_queue += 1;
        }
        std::fs::remove_dir_all(&qdir).unwrap();
        gws[g] = spawn_gw(g);
        eventually(Duration::from_secs(60), &format!("gateway soak-gw-{g} answers /status on its new queue"), || gateway_depth(health[g])).await;
        let line = format!("{} gateway soak-gw-{g} stopped, its queue directory deleted ({lost_with_queue} samples still in it), started again with the same id", t(at));
        println!("soak: {line}");
        timeline.push(line);
        *counts.entry("queue loss").or_default() += 1;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    // A daemon outage until the gateways have queued `BACKLOG` samples; halfway, one gateway is
    // stopped, one unacknowledged record in the middle of its queue corrupted, and it is started
    // again: that record is lost and counted, nothing else.
    let mut backlog_peak = 0u64;
    let mut corrupted: Option<(usize, String, i64)> = None;
    {
        let at = Instant::now();
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(10));
        loop {
            let mut total = 0;
            for p in &health {
                total += gateway_depth(*p).await.unwrap_or(0);
            }
            backlog_peak = backlog_peak.max(total);
            if corrupted.is_none() && total >= BACKLOG / 2 {
                let g = rng.below(GATEWAYS);
                gws[g].signal("TERM");
                assert!(gws[g].wait_exit(Duration::from_secs(60)).success(), "gateway soak-gw-{g} did not stop cleanly");
                let (m, ts) = corrupt_one_record(&d.join(format!("queue-{g}"))).unwrap_or_else(|| panic!("no unacknowledged record to corrupt in queue-{g}"));
                gws[g] = spawn_gw(g);
                eventually(Duration::from_secs(60), &format!("gateway soak-gw-{g} answers /status after its restart"), || gateway_depth(health[g])).await;
                let line = format!("{} gateway soak-gw-{g} stopped, one queued record ({m} at {ts} ms) corrupted, started again", t(Instant::now()));
                println!("soak: {line}");
                timeline.push(line);
                lost.entry(m.clone()).or_default().push(ts);
                corrupted = Some((g, m, ts));
            }
            if total >= BACKLOG {
                break;
            }
            assert!(at.elapsed() < Duration::from_secs(900), "the backlog did not reach {BACKLOG} samples in 15 minutes ({total})");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let outage = at.elapsed();
        daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
        daemon.wait_line("listening on", Duration::from_secs(60));
        let line = format!("{} daemon SIGKILLed, down {:.1} s until the gateways had queued {backlog_peak} samples, restarted", t(at), outage.as_secs_f64());
        println!("soak: {line}");
        timeline.push(line);
        recoveries.push((Fault::Daemon, test_start.elapsed()));
        *counts.entry("long daemon outage").or_default() += 1;
    }
    let (cg, _, _) = corrupted.clone().expect("a record was corrupted");
    let counted = eventually(Duration::from_secs(30), "the corrupted record counted by its gateway", || gateway_metric(health[cg], "energy_gateway_queue_lost_samples_total")).await;
    assert_eq!(counted, 1.0, "soak-gw-{cg} should count exactly the one corrupted record as lost");
    // The backlog drains (with the default history rate) before the gateways are stopped.
    let drain_from = Instant::now();
    let backlog_drain = eventually(Duration::from_secs(600), "the backlog drained", || async {
        let mut total = 0;
        for p in &health {
            total += gateway_depth(*p).await?;
        }
        (total < 2 * meters.len() as u64).then(|| drain_from.elapsed())
    })
    .await;

    // Stop polling: SIGTERM makes each gateway stop its pollers, drain its queue (the daemon acks
    // after commit) and exit 0 with an empty queue.
    let soak_time = soak_start.elapsed();
    let drain_start = Instant::now();
    for gw in &gws {
        gw.signal("TERM");
    }
    let mut final_drain = Duration::ZERO;
    for (g, gw) in gws.iter_mut().enumerate() {
        let st = gw.wait_exit(Duration::from_secs(90));
        final_drain = final_drain.max(drain_start.elapsed());
        assert!(st.success(), "gateway soak-gw-{g} did not exit cleanly: {st}");
        // It exits 0 also when its drain time (5 s by default) runs out; what is left unsent
        // stays queued on disk, and is sent by the next start: here a start without devices.
        let cfg = energy_gateway::config::GatewayConfig::load(&d.join(&gw_files[g])).unwrap_or_else(|e| panic!("gateway-{g}.toml: {e:?}"));
        let left = energy_gateway::queue::Queue::open(&cfg.queue.dir, cfg.queue.segment_bytes, cfg.queue.max_bytes).unwrap().depth();
        if left > 0 {
            let text = std::fs::read_to_string(d.join(&gw_files[g])).unwrap();
            let drain_only = format!("gateway-{g}-drain.toml");
            std::fs::write(d.join(&drain_only), &text[..text.find("[[device]]").unwrap_or(text.len())]).unwrap();
            let mut again = Proc::spawn("energy-gateway", &["run", "--config", &drain_only], d);
            eventually(Duration::from_secs(120), &format!("soak-gw-{g} sends the {left} samples left at its stop"), || async {
                (gateway_depth(health[g]).await? == 0).then_some(())
            })
            .await;
            again.signal("TERM");
            assert!(again.wait_exit(Duration::from_secs(30)).success());
            final_drain = final_drain.max(drain_start.elapsed());
        }
        let queue = energy_gateway::queue::Queue::open(&cfg.queue.dir, cfg.queue.segment_bytes, cfg.queue.max_bytes).unwrap();
        assert_eq!(queue.depth(), 0, "gateway soak-gw-{g} stopped with readings still queued (not acknowledged by the daemon)");
    }
    watch.abort();
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(10));

    // The drain after each fault: from recovery until the queues are back to their usual depth
    // (twice the median depth of the run, plus a little).
    let depths = depths.lock().unwrap().clone();
    let mut sorted: Vec<u64> = depths.iter().map(|x| x.1).collect();
    sorted.sort_unstable();
    let round = 2 * sorted.get(sorted.len() / 2).copied().unwrap_or(0) + 50;
    let peak = depths.iter().map(|x| x.1).max().unwrap_or(0);
    let mut longest_drain = (Duration::ZERO, None);
    for (fault, at) in &recoveries {
        let back = depths.iter().find(|(t, v)| t >= at && *v <= round).map(|(t, _)| *t - *at);
        if let Some(dr) = back {
            if dr > longest_drain.0 {
                longest_drain = (dr, Some(*fault));
            }
        }
    }

    // Every served reading, exactly once, in the store.
    let served = served(d);
    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(2)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    let (mut n_served, mut n_stored, mut n_lost_kill, mut n_lost_known) = (0usize, 0usize, 0usize, 0usize);
    let mut gaps = (0i64, 0usize);
    let mut n_all = 0usize;
    for m in &meters {
        let s = served.get(&m.id).unwrap_or_else(|| panic!("{}: the simulator served no reading of it", m.id));
        let quantity = KINDS[m.kind].2;
        let min_reads = (seconds * 1000 / POLL_MS / 2) as usize;
        assert!(s.len() >= min_reads, "{}: only {} readings served in {seconds} s (polled every {POLL_MS} ms)", m.id, s.len());
        let points = stored(&url, &m.id, quantity, &from, &to).await;
        let c = check_meter(&m.id, s, &points, &kills[m.gateway], lost.get(&m.id).map(Vec::as_slice).unwrap_or_default());
        n_lost_known += c.lost_known;
        n_served += s.len();
        if let (Some(first), Some(last)) = (s.first(), s.last()) {
            gaps.0 += last.0 - first.0;
            gaps.1 += s.len() - 1;
        }
        n_stored += points.len();
        n_all += points.len() * KINDS[m.kind].4;
        n_lost_kill += c.lost_to_kill;
    }
    // What a SIGKILL may lose is at most a few poll rounds of the killed gateway's meters.
    let per_gateway = meters.len() / GATEWAYS;
    let kill_count: usize = kills.iter().map(Vec::len).sum();
    assert!(
        n_lost_kill <= kill_count * per_gateway * (KILL_WINDOW_MS as usize / POLL_MS as usize + 1),
        "{n_lost_kill} readings lost to {kill_count} gateway kills: more than the polls in flight"
    );

    let total = test_start.elapsed();
    let figures = [
        format!("seed {seed}"),
        format!("meters {} on {BUSES} Modbus TCP endpoints, {GATEWAYS} gateways, polled every {POLL_MS} ms", meters.len()),
        format!("soak {:.1} s (SOAK_SECONDS={seconds}), whole test {:.1} s", soak_time.as_secs_f64(), total.as_secs_f64()),
        format!("faults {} ({})", timeline.len(), counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")),
        format!("readings served {n_served}, stored {n_stored}, duplicates 0, lost 0 but for those below"),
        format!(
            "lost to the corrupted queue record: 1 (counted by its gateway: 1); left in the deleted queue directory: {lost_with_queue}; matched to served reads: {n_lost_known}"
        ),
        format!("backlog built by the long daemon outage {backlog_peak} samples, drained in {:.1} s", backlog_drain.as_secs_f64()),
        format!("polled but not yet queued when a gateway was SIGKILLed (allowed, {KILL_WINDOW_MS} ms before a kill): {n_lost_kill}"),
        format!("mean time between two reads of a meter {} ms (asked {POLL_MS} ms; 2-core machine, debug build)", gaps.0 / gaps.1.max(1) as i64),
        format!(
            "ingest rate {:.0} polls/s (counter readings checked), about {:.0} readings/s of all quantities",
            n_stored as f64 / soak_time.as_secs_f64(),
            n_all as f64 / soak_time.as_secs_f64()
        ),
        format!("peak queue depth {peak} samples (all gateways)"),
        format!(
            "longest drain after a fault {:.1} s ({}), final drain {:.1} s",
            longest_drain.0.as_secs_f64(),
            longest_drain.1.map(|f| format!("{f:?}").to_lowercase()).unwrap_or_else(|| "-".into()),
            final_drain.as_secs_f64()
        ),
    ];
    println!("soak: timeline\n  {}", timeline.join("\n  "));
    println!("soak: figures\n  {}", figures.join("\n  "));
    assert!(counts.len() == 5, "every kind of fault at least once: {counts:?}");
    assert!(n_lost_known <= 1 + lost_with_queue, "{n_lost_known} known losses matched, more than the corrupted record and the deleted queue's {lost_with_queue}");

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success(), "energyd did not stop cleanly");
}
