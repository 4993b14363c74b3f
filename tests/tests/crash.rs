//! Crash safety of the real `energyd` binary: SIGKILL while writers are ingesting, restart on the
//! same data directory, and every point that was acknowledged (204) must be there, with its
//! hourly roll-ups consistent with the raw points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use energy_e2e::{get_json, listening_url, q, Proc};

const WRITERS: usize = 4;
const POINTS_PER_REQUEST: i64 = 50;
const HOUR: i64 = 3_600_000;

fn write_files(dir: &std::path::Path) {
    let mut reg = String::from(
        "[[agency]]\nid = \"ag\"\nname = \"机关\"\nlevel = \"county\"\n\n[[building]]\nid = \"bx\"\nname = \"B\"\nfloor_area = 1000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n",
    );
    for w in 0..WRITERS {
        reg.push_str(&format!("\n[[meter]]\nid = \"crash-{w}\"\nbuilding = \"bx\"\ncarrier = \"electricity\"\n"));
    }
    std::fs::write(dir.join("registry.toml"), reg).unwrap();
    std::fs::write(dir.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_point_survives_sigkill_during_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(d);
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));

    // Readings one second apart from an hour boundary two days ago.
    let base = (chrono::Utc::now().timestamp_millis() - 48 * HOUR).div_euclid(HOUR) * HOUR;
    let acked: Arc<Mutex<HashMap<usize, Vec<(i64, f64)>>>> = Arc::default();
    let client = energy_e2e::http_client();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            loop {
                let pts: Vec<(i64, f64)> = (i..i + POINTS_PER_REQUEST).map(|k| (base + k * 1000, 1000.0 + k as f64 * 0.5)).collect();
                let body: String = pts.iter().map(|(t, v)| format!("energy,meter=crash-{w} active_energy_import={v} {t}\n")).collect();
                match client.post(format!("{url}/write?db=energy&precision=ms")).body(body).send().await {
                    Ok(r) if r.status().as_u16() == 204 => acked.lock().unwrap().entry(w).or_default().extend(pts),
                    Ok(r) => panic!("writer {w}: unexpected status {}", r.status()),
                    // The daemon was killed: this request was never acknowledged.
                    Err(_) => return,
                }
                i += POINTS_PER_REQUEST;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10));
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total >= WRITERS * POINTS_PER_REQUEST as usize, "too few points acknowledged before the kill ({total}) to test anything");

    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    let from = chrono::DateTime::from_timestamp_millis(base).unwrap().to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(base + 24 * HOUR).unwrap().to_rfc3339();
    for (w, pts) in &acked {
        let (status, v) = get_json(&format!("{url}/api/v1/series?meter=crash-{w}&quantity=active_energy_import&from={}&to={}", q(&from), q(&to))).await;
        assert_eq!(status, 200, "{v}");
        let stored: HashMap<i64, f64> = v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap().timestamp_millis(), p["v"].as_f64().unwrap()))
            .collect();
        let missing: Vec<&(i64, f64)> = pts.iter().filter(|(t, v)| stored.get(t) != Some(v)).collect();
        assert!(missing.is_empty(), "writer {w}: {} of {} acknowledged points lost, first {:?}", missing.len(), pts.len(), missing.first());
        // The roll-ups were committed with the points: their counts add up to the raw points.
        let (_, r) = get_json(&format!("{url}/api/v1/series?meter=crash-{w}&quantity=active_energy_import&from={}&to={}&step=1h&agg=count", q(&from), q(&to))).await;
        let counted: f64 = r["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).sum();
        assert_eq!(counted as usize, stored.len(), "writer {w}: roll-ups disagree with the raw points");
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}
