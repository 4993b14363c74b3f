//! InfluxData's official Python clients against the real daemon: `influxdb-client` (InfluxDB 2
//! API) and `influxdb` (InfluxDB 1.x API), installed from PyPI by tests/run.sh. The script
//! tests/python/influx_clients.py writes Point objects and raw lines at every precision each
//! client has, batched and gzipped, with tag values holding backslashes, spaces, commas and
//! equals signs, after the clients' start-up calls (`ping()`, `health()`, `CREATE DATABASE`,
//! `SHOW DATABASES`). Authentication is on: the v2 client sends `Authorization: Token`, the v1
//! client Basic auth. Every value it wrote must read back exactly through the daemon's own API.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use energy_e2e::{http_client, listening_url, new_token, q, repo_root, Proc};

/// One agency, one building, and the two meters the clients write to (assigned to the
/// clients' gateway token, `py-gw`: a gateway token writes only its own meters).
fn registry() -> String {
    let mut reg = String::from("[[agency]]\nid = \"ag\"\nname = \"测试机关\"\nlevel = \"county\"\n\n[[building]]\nid = \"b1\"\nname = \"B1\"\nfloor_area = 1000.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n");
    for meter in ["py-v2", "py-v1"] {
        reg.push_str(&format!("\n[[meter]]\nid = \"{meter}\"\nbuilding = \"b1\"\ncarrier = \"electricity\"\ngateway = \"py-gw\"\n"));
    }
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_clients_write_and_every_value_reads_back() {
    let probe = Command::new("python3").args(["-c", "import influxdb_client, influxdb"]).output().expect("python3");
    assert!(
        probe.status.success(),
        "InfluxData's Python clients are missing: tests/run.sh installs them (python3 -m pip install influxdb-client influxdb): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.toml"), registry()).unwrap();
    let (token, entry) = new_token(d, &["--role", "gateway", "--gateway", "py-gw", "--name", "telegraf"]);
    let (admin, admin_entry) = new_token(d, &["--role", "admin", "--name", "ops"]);
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[auth]\n{entry}\n{admin_entry}"),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));

    // The whole hour before the last one: inside the daemon's time window, in the past.
    let hour_s = (chrono::Utc::now().timestamp() / 3600 - 2) * 3600;
    let script = repo_root().join("tests/python/influx_clients.py");
    // At most 5 minutes (coreutils' timeout), off the async threads.
    let args: Vec<String> = vec!["300".into(), "python3".into(), script.display().to_string(), url.clone(), token.clone(), hour_s.to_string()];
    let out = tokio::task::spawn_blocking(move || Command::new("timeout").args(&args).output().expect("timeout python3 runs")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "influx_clients.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // What the clients say they did, and the points they wrote.
    let mut expected: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
    let mut checks = BTreeSet::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        if let Some(c) = v["check"].as_str() {
            checks.insert(c.to_string());
            match c {
                "v2 ping" | "v1 ping" => assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{line}"),
                "v2 health" => assert_eq!(v["status"], "pass", "{line}"),
                "v1 get_list_database" => assert!(v["databases"].is_array(), "{line}"),
                _ => {}
            }
        }
        if let Some(e) = v["expect"].as_array() {
            let key = (e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap().to_string());
            let old = expected.entry(key).or_default().insert(e[2].as_i64().unwrap(), e[3].as_f64().unwrap());
            assert!(old.is_none(), "the script wrote two points at one millisecond: {line}");
        }
    }
    for c in ["v2 ping", "v2 health", "v1 ping", "v1 create_database", "v1 get_list_database", "done"] {
        assert!(checks.contains(c), "no `{c}` from the script:\n{stdout}");
    }
    let total: usize = expected.values().map(BTreeMap::len).sum();
    assert!(total > 300, "only {total} points written");

    // Every value reads back exactly, at its millisecond, and nothing else is there.
    let client = http_client();
    let from = chrono::DateTime::from_timestamp(hour_s - 60, 0).unwrap().to_rfc3339();
    let to = chrono::DateTime::from_timestamp(hour_s + 3600, 0).unwrap().to_rfc3339();
    for ((meter, quantity), want) in &expected {
        let r = client
            .get(format!("{url}/api/v1/series?meter={meter}&quantity={quantity}&from={}&to={}", q(&from), q(&to)))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let got: BTreeMap<i64, f64> = v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap().timestamp_millis(), p["v"].as_f64().unwrap()))
            .collect();
        assert_eq!(&got, want, "{meter} {quantity}");
    }
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}
