//! Alerts end to end: the real `energyd` evaluates a meter-silence rule every second and posts to
//! a real Alertmanager (`prometheus-alertmanager`, Debian package of the same name) and to a
//! webhook; the alert arrives at Alertmanager's API, and is resolved there when the meter
//! reports again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_e2e::{eventually, free_port, get_json, http_client, listening_url, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A real Alertmanager on a loopback port with its own storage directory, killed on drop.
struct Alertmanager {
    port: u16,
    child: Child,
}

impl Alertmanager {
    fn binary() -> PathBuf {
        for p in ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager", "/usr/local/bin/alertmanager"] {
            if Path::new(p).exists() {
                return PathBuf::from(p);
            }
        }
        panic!("Alertmanager not found: install the Debian package `prometheus-alertmanager` (tests/run.sh does)");
    }

    fn start(dir: &Path) -> Alertmanager {
        let port = free_port();
        std::fs::create_dir_all(dir.join("am-data")).unwrap();
        let conf = dir.join("alertmanager.yml");
        std::fs::write(
            &conf,
            "route:\n  receiver: default\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: default\n",
        )
        .unwrap();
        let child = Command::new(Self::binary())
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        Alertmanager { port, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver: answers 200 to every POST and keeps the bodies.
async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            if let Ok(v) = serde_json::from_slice(&buf[end + 4..end + 4 + len]) {
                                g.lock().unwrap().push(v);
                            }
                            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

async fn post_sample(client: &reqwest::Client, url: &str, seq: u64, value: f64) {
    let t = chrono::Utc::now().timestamp_millis();
    let body = serde_json::json!({"schema":1,"gateway":"gw-1","seq":seq,"samples":[{"meter":"m1","t":t,"v":{"active_energy_import":value}}]});
    let r = client.post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// The alerts at Alertmanager named `MeterSilent` for meter m1.
async fn am_alerts(am: &str) -> Vec<serde_json::Value> {
    let (status, v) = get_json(&format!("{am}/api/v2/alerts")).await;
    assert_eq!(status, 200, "{v}");
    v.as_array().cloned().unwrap_or_default().into_iter().filter(|a| a["labels"]["alertname"] == "MeterSilent" && a["labels"]["meter"] == "m1").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_meter_fires_at_alertmanager_and_resolves_when_it_reports_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let client = http_client();
    let am = Alertmanager::start(d);
    let am_url = am.url();
    eventually(Duration::from_secs(30), "alertmanager ready", || {
        let u = format!("{am_url}/-/ready");
        async move { reqwest::get(&u).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;
    let (hook, received) = webhook().await;
    std::fs::write(
        d.join("registry.toml"),
        "[[agency]]\nid = \"ag-1\"\nname = \"测试局\"\nlevel = \"county\"\n\n[[building]]\nid = \"b-1\"\nname = \"B\"\nfloor_area = 1000.0\noccupants = [ { agency = \"ag-1\", share = 1.0 } ]\n\n[[meter]]\nid = \"m1\"\nbuilding = \"b-1\"\ncarrier = \"electricity\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [alerts]\ninterval = \"500ms\"\nalertmanager_url = \"{am_url}\"\nwebhook_url = \"{hook}\"\n\
             [[alerts.rule]]\nname = \"MeterSilent\"\nkind = \"meter_silent\"\nseverity = \"critical\"\nexpected_interval = \"1s\"\nintervals = 3\nlabels = {{ team = \"facilities\" }}\n"
        ),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    post_sample(&client, &url, 1, 100.0).await;
    let started = Instant::now();

    // Silent for more than 3 s: firing at the daemon, then at Alertmanager with our labels.
    let alert = eventually(Duration::from_secs(30), "the MeterSilent alert at Alertmanager", || {
        let am_url = am_url.clone();
        async move { am_alerts(&am_url).await.into_iter().next() }
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(3), "fired after {:?}, before 3 s of silence", started.elapsed());
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["agency"], "ag-1");
    assert_eq!(alert["labels"]["building"], "b-1");
    assert_eq!(alert["labels"]["team"], "facilities");
    assert_eq!(alert["status"]["state"], "active");
    assert!(alert["annotations"]["summary"].as_str().unwrap().starts_with("meter m1 silent for"), "{alert}");
    assert!(alert["annotations"]["summary_zh"].as_str().unwrap().contains("无读数"), "{alert}");
    let (_, v) = get_json(&format!("{url}/api/v1/alerts?state=firing")).await;
    assert_eq!(v["alerts"][0]["alertname"], "MeterSilent", "{v}");
    let (_, metrics) = get_json(&format!("{url}/metrics")).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("energyd_alerts_firing{agency=\"ag-1\",alertname=\"MeterSilent\",building=\"b-1\",meter=\"m1\",severity=\"critical\"} 1"),
        "{metrics}"
    );

    // The meter reports again (and keeps reporting): resolved at the daemon and at Alertmanager,
    // long before the 4 minutes after which Alertmanager would let it expire by itself.
    let feeding = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            for seq in 2.. {
                post_sample(&client, &url, seq, 100.0 + seq as f64).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let resolved_at = Instant::now();
    eventually(Duration::from_secs(30), "the alert resolved at Alertmanager", || {
        let am_url = am_url.clone();
        async move { am_alerts(&am_url).await.is_empty().then_some(()) }
    })
    .await;
    assert!(resolved_at.elapsed() < Duration::from_secs(60));
    let (_, v) = get_json(&format!("{url}/api/v1/alerts")).await;
    let a = &v["alerts"][0];
    assert_eq!(a["state"], "resolved", "{v}");
    assert!(a["endsAt"].is_string() && a["startsAt"].is_string(), "{a}");
    // The webhook saw it fire and resolve.
    eventually(Duration::from_secs(10), "webhook got firing and resolved", || {
        let r = received.lock().unwrap().clone();
        async move {
            let statuses: Vec<String> = r.iter().flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default()).map(|a| a["status"].as_str().unwrap_or("").to_string()).collect();
            (statuses.iter().any(|s| s == "firing") && statuses.iter().any(|s| s == "resolved")).then_some(())
        }
    })
    .await;
    feeding.abort();
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}
