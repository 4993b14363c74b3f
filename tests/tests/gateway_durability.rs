//! Gateway durability with the real binaries (issue 17, items 5 and 7): a queue directory lost
//! and made again under the same gateway id (a new queue epoch: its readings are stored, not
//! taken for duplicates), and the MQTT uplink draining a backlog of a million samples after a
//! daemon outage with the shipped defaults (history limited to 20,000 samples/s), stopped by
//! SIGTERM in the middle of the drain and started again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use energy_e2e::{eventually, free_port, get_json, listening_url, profiles_dir, q, run, Mosquitto, Proc};

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn metrics(url: &str) -> String {
    let r = energy_e2e::http_client().get(format!("{url}/metrics")).send().await.unwrap();
    r.text().await.unwrap()
}

async fn gateway_item(url: &str, id: &str) -> Option<serde_json::Value> {
    let (_, v) = get_json(&format!("{url}/api/v1/gateways")).await;
    v["items"].as_array()?.iter().find(|g| g["id"] == id).cloned()
}

const REGISTRY_HEAD: &str = "[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 5000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_queue_directory_starts_a_new_epoch_whose_readings_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dport, hport) = (free_port(), free_port());
    let meters = [("ep-elec", "eastron/sdm630", "office_electricity"), ("ep-elec2", "eastron/sdm630", "office_electricity")];
    let mut sim = format!("profiles_dir = {:?}\nserved_log = {:?}\n[[bus]]\n", profiles_dir(), d.join("served.jsonl"));
    let mut reg = REGISTRY_HEAD.to_string();
    for (i, (id, profile, model)) in meters.iter().enumerate() {
        sim.push_str(&format!("[[bus.meter]]\nid = \"{id}\"\nunit = {}\nprofile = \"{profile}\"\nmodel = \"{model}\"\nsize = 5000.0\nseed = {i}\ninitial = 100.0\n", i + 1));
        reg.push_str(&format!("[[meter]]\nid = \"{id}\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n"));
    }
    std::fs::write(d.join("sim.toml"), sim).unwrap();
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    std::fs::write(d.join("energyd.toml"), format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{dport}\"\n")).unwrap();
    let mut simp = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&simp.wait_line("listen", Duration::from_secs(30))).unwrap();
    let mut gw_conf = format!(
        "gateway_id = \"ep-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = {:?}\n[uplink]\nurl = \"http://127.0.0.1:{dport}/api/v1/ingest\"\n[health]\nlisten = \"127.0.0.1:{hport}\"\n[modbus]\ntimeout_ms = 5000\n",
        profiles_dir(),
        d.join("queue")
    );
    for (i, (id, profile, _)) in meters.iter().enumerate() {
        gw_conf.push_str(&format!("[[device]]\nmeter = \"{id}\"\nprofile = \"{profile}\"\ntcp = \"{}\"\nunit = {}\ninterval_ms = 200\n", bus["listen"].as_str().unwrap(), i + 1));
    }
    std::fs::write(d.join("gateway.toml"), gw_conf).unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));

    // First life: a new queue, numbered from 1 under its epoch.
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    let first = eventually(Duration::from_secs(60), "the first queue's samples stored", || async {
        let g = gateway_item(&url, "ep-gw").await?;
        (g["acked_through"].as_u64()? >= 40).then_some(g)
    })
    .await;
    let epoch1 = first["epoch"].as_str().expect("the first queue has an epoch").to_string();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)).success());
    let high = gateway_item(&url, "ep-gw").await.unwrap()["acked_through"].as_u64().unwrap();

    // The queue directory is lost; the gateway starts again with the same id.
    std::fs::remove_dir_all(d.join("queue")).unwrap();
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    let second = eventually(Duration::from_secs(60), "the new queue's samples stored under a second epoch", || async {
        let g = gateway_item(&url, "ep-gw").await?;
        (g["epochs"].as_array()?.len() == 2 && g["acked_through"].as_u64()? >= 20).then_some(g)
    })
    .await;
    let epoch2 = second["epoch"].as_str().unwrap().to_string();
    assert_ne!(epoch1, epoch2);
    // Still below the first queue's highest number: without epochs these would be duplicates.
    assert!(second["acked_through"].as_u64().unwrap() < high, "{second}");
    let epochs = second["epochs"].as_array().unwrap();
    assert_eq!(epochs[0]["epoch"], epoch1.as_str(), "{second}");
    assert_eq!(epochs[0]["acked_through"].as_u64(), Some(high), "{second}");
    assert_eq!(epochs[1]["epoch"], epoch2.as_str(), "{second}");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)).success());
    simp.signal("TERM");
    simp.wait_exit(Duration::from_secs(10));

    // Every served reading stored exactly once, across both queues.
    let mut served: HashMap<String, Vec<f64>> = HashMap::new();
    for line in std::fs::read_to_string(d.join("served.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        served.entry(v["meter"].as_str().unwrap().to_string()).or_default().push(v["value"].as_f64().unwrap());
    }
    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(1)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    for (id, ..) in meters {
        let (_, v) = get_json(&format!("{url}/api/v1/series?meter={id}&quantity=active_energy_import&from={}&to={}", q(&from), q(&to))).await;
        let values: Vec<f64> = v["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
        assert_eq!(values, served[id], "{id}: every served reading stored once");
    }
    let m = metrics(&url).await;
    assert_eq!(metric(&m, "energyd_samples_duplicate_total"), 0.0, "no new reading taken for a duplicate");
    assert_eq!(metric(&m, "energyd_gateway_epochs_new_total"), 2.0);
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}

/// Meters and samples per meter of the backlog: a million samples, one counter value each,
/// a second apart, ending now.
const BACKLOG_METERS: usize = 100;
const PER_METER: usize = 10_000;

/// Writes the backlog into the gateway's queue directory as the gateway's queue writer does
/// (one record per sample, the sample's JSON), as if it had polled while the daemon was away.
fn fill_queue(dir: &std::path::Path) -> u64 {
    let mut q = energy_gateway::queue::Queue::open(dir, 16 << 20, 1 << 30).unwrap();
    let end = chrono::Utc::now().timestamp_millis() - 60_000;
    for i in 0..PER_METER {
        for m in 0..BACKLOG_METERS {
            let t = end - (PER_METER - i) as i64 * 1000 + m as i64;
            let s = energy_wire::Sample {
                meter: format!("bk-{m:03}"),
                t,
                v: [(energy_wire::Quantity::ActiveEnergyImport, 1000.0 + i as f64 * 0.5)].into_iter().collect(),
            };
            q.append(&serde_json::to_vec(&s).unwrap()).unwrap();
        }
    }
    q.sync().unwrap();
    q.next_seq() - 1
}

async fn gateway_status(port: u16) -> Option<serde_json::Value> {
    let r = energy_e2e::http_client().get(format!("http://127.0.0.1:{port}/status")).timeout(Duration::from_secs(2)).send().await.ok()?;
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_sample_backlog_drains_over_mqtt_with_the_default_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Mosquitto::start(&d.join("broker"));
    let (dport, hport) = (free_port(), free_port());
    let mut reg = REGISTRY_HEAD.to_string();
    for m in 0..BACKLOG_METERS {
        reg.push_str(&format!("[[meter]]\nid = \"bk-{m:03}\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n"));
    }
    std::fs::write(d.join("registry.toml"), reg).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:{dport}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"energyd-backlog\"\n", broker.url()),
    )
    .unwrap();
    // The shipped defaults for everything but the broker's address and the status port.
    std::fs::write(
        d.join("gateway.toml"),
        format!("gateway_id = \"bk-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = {:?}\n[uplink]\nurl = \"{}\"\n[health]\nlisten = \"127.0.0.1:{hport}\"\n", profiles_dir(), d.join("queue"), broker.url()),
    )
    .unwrap();
    let total = fill_queue(&d.join("queue"));
    assert_eq!(total, (BACKLOG_METERS * PER_METER) as u64);

    // The gateway starts while the broker is down (an error to show), then the broker comes:
    // connected, and no stale error beside it. The daemon is still away: nothing is acknowledged.
    broker.stop();
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    eventually(Duration::from_secs(60), "the gateway reports its broker error", || async {
        let st = gateway_status(hport).await?;
        st["uplink"]["last_error"].as_str().map(|_| ())
    })
    .await;
    broker.restart();
    let st = eventually(Duration::from_secs(60), "the gateway connected to the broker", || async {
        let st = gateway_status(hport).await?;
        (st["uplink"]["connected"] == true).then_some(st)
    })
    .await;
    assert!(st["uplink"]["last_error"].is_null(), "a stale error beside connected: true: {st}");
    let (code, out, err) = run("energy-gateway", &["status", "--config", "gateway.toml"], d);
    assert_eq!(code, 0, "{out}{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("`status` printed no JSON ({e}): {out}"));
    assert_eq!(shown["uplink"]["connected"], true, "{out}");
    assert!(shown["uplink"]["last_error"].is_null(), "a stale error beside connected: true in `status`: {out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gateway_status(hport).await.unwrap()["queue_depth"].as_u64(), Some(total));

    // The daemon comes back: the drain starts at the history rate.
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(60)));
    let drain_start = Instant::now();
    // Past the limiter's burst (about 60,000 samples) and well into the drain: SIGTERM.
    eventually(Duration::from_secs(300), "200,000 samples acknowledged", || async {
        let st = gateway_status(hport).await?;
        (st["uplink"]["acked_through"].as_u64()? >= 200_000).then_some(())
    })
    .await;
    gw.signal("TERM");
    let stop_asked = Instant::now();
    let st = gw.wait_exit(Duration::from_secs(30));
    let stop_took = stop_asked.elapsed();
    assert!(st.success(), "the gateway did not stop cleanly: {st}");
    // Its queue is intact: everything not acknowledged is still there, in order.
    let mut q = energy_gateway::queue::Queue::open(&d.join("queue"), 16 << 20, 1 << 30).unwrap();
    let acked = q.acked();
    assert!(acked >= 200_000 && acked < total, "acknowledged through {acked} of {total}");
    assert_eq!(q.depth(), total - acked);
    let next = q.peek(1).unwrap();
    assert_eq!(next.first().map(|r| r.seq), Some(acked + 1));
    drop(q);

    // Started again: the rest drains with the defaults, nothing stalls.
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    // Polled until empty; a stall (no progress for a minute) fails at once.
    let mut progress = (u64::MAX, Instant::now());
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        let st = gateway_status(hport).await;
        let depth = st.as_ref().and_then(|s| s["queue_depth"].as_u64()).unwrap_or(progress.0);
        if depth == 0 {
            break;
        }
        if depth != progress.0 {
            progress = (depth, Instant::now());
        }
        assert!(progress.1.elapsed() < Duration::from_secs(60), "the drain stalled at a depth of {depth}: {st:?}");
        assert!(Instant::now() < give_up, "the backlog did not drain within 10 minutes (depth {depth})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain = drain_start.elapsed();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)).success());

    // Every sample stored once: a million points, all sequence numbers of the epoch.
    let g = gateway_item(&url, "bk-gw").await.unwrap();
    assert_eq!(g["stored_ranges"], serde_json::json!([[1, total]]), "{g}");
    let m = metrics(&url).await;
    assert_eq!(metric(&m, "energyd_store_points"), total as f64, "every sample stored exactly once");
    println!("backlog: {total} samples drained over MQTT in {:.1} s (defaults), SIGTERM mid-drain stopped in {:.1} s", drain.as_secs_f64(), stop_took.as_secs_f64());
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(30));
}
