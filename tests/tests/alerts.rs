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

    /// Starts one and waits until it answers `/-/ready`.
    async fn start_ready(dir: &Path) -> Alertmanager {
        let am = Alertmanager::start(dir);
        let u = format!("{}/-/ready", am.url());
        eventually(Duration::from_secs(30), "alertmanager ready", || {
            let u = u.clone();
            async move { reqwest::get(&u).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        am
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

/// One agency in one building with these electricity meters.
fn registry(meters: &[&str]) -> String {
    let mut r = String::from("[[agency]]\nid = \"ag-1\"\nname = \"测试局\"\nlevel = \"county\"\n\n[[building]]\nid = \"b-1\"\nname = \"B\"\nfloor_area = 1000.0\noccupants = [ { agency = \"ag-1\", share = 1.0 } ]\n");
    for m in meters {
        r.push_str(&format!("\n[[meter]]\nid = \"{m}\"\nbuilding = \"b-1\"\ncarrier = \"electricity\"\n"));
    }
    r
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
    let am = Alertmanager::start_ready(d).await;
    let am_url = am.url();
    let (hook, received) = webhook().await;
    std::fs::write(d.join("registry.toml"), registry(&["m1"])).unwrap();
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
    // The silence is counted from the sample's time, taken when it is sent: start the clock
    // before sending (taken after the answer, a slow answer made the 3 s look shorter).
    let started = Instant::now();
    post_sample(&client, &url, 1, 100.0).await;

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

/// Posts one reading of `meter` at now.
async fn post_meter(client: &reqwest::Client, url: &str, seq: u64, meter: &str, value: f64) {
    let t = chrono::Utc::now().timestamp_millis();
    let body = serde_json::json!({"schema":1,"gateway":"gw-1","seq":seq,"samples":[{"meter":meter,"t":t,"v":{"active_energy_import":value}}]});
    let r = client.post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// The (meter, status) pairs of one webhook body.
fn notified(body: &serde_json::Value) -> Vec<(String, String)> {
    body["alerts"].as_array().cloned().unwrap_or_default().iter().map(|a| (a["labels"]["meter"].as_str().unwrap_or("").to_string(), a["status"].as_str().unwrap_or("").to_string())).collect()
}

/// Some(()) when Alertmanager's MeterSilent alerts of the meters are in these states.
async fn am_states(am: &str, want: &[(&str, &str)]) -> Option<()> {
    let (status, v) = get_json(&format!("{am}/api/v2/alerts")).await;
    let alerts = v.as_array().cloned().unwrap_or_default();
    let state = |m: &str| alerts.iter().find(|a| a["labels"]["meter"] == m).and_then(|a| a["status"]["state"].as_str().map(str::to_string));
    (status == 200 && want.iter().all(|(m, s)| state(m).as_deref() == Some(*s))).then_some(())
}

/// The daemon's active silences at Alertmanager.
async fn am_silences(am: &str) -> Vec<serde_json::Value> {
    let (_, v) = get_json(&format!("{am}/api/v2/silences")).await;
    v.as_array().cloned().unwrap_or_default().into_iter().filter(|s| s["status"]["state"] == "active" && s["comment"].as_str().is_some_and(|c| c.contains("[energyd alert "))).collect()
}

/// The daemon's MeterSilent alert of `meter`, as listed.
async fn listed(url: &str, meter: &str) -> Option<serde_json::Value> {
    let (_, v) = get_json(&format!("{url}/api/v1/alerts?kind=MeterSilent&meter={meter}")).await;
    v["alerts"].as_array().and_then(|a| a.first().cloned())
}

async fn act(client: &reqwest::Client, method: reqwest::Method, url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client.request(method, url).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default())
}

/// Acknowledged and silenced alerts stay listed and marked, are not notified (webhook) while
/// other alerts are, and stay so across a restart of the daemon; a silence ended by hand and a
/// resolution are notified again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_and_silenced_alerts_are_not_notified_again_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let client = http_client();
    let (hook, received) = webhook().await;
    let am = Alertmanager::start_ready(d).await;
    let am_url = am.url();
    std::fs::write(d.join("registry.toml"), registry(&["m1", "m2", "m3", "m4"])).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!(
            "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [alerts]\ninterval = \"500ms\"\nwebhook_url = \"{hook}\"\nalertmanager_url = \"{am_url}\"\n\
             [[alerts.rule]]\nname = \"MeterSilent\"\nkind = \"meter_silent\"\nexpected_interval = \"1s\"\nintervals = 3\n"
        ),
    )
    .unwrap();
    let start = || {
        let mut p = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
        let url = listening_url(&p.wait_line("listening on", Duration::from_secs(30)));
        (p, url)
    };
    let (mut daemon, url) = start();
    post_meter(&client, &url, 1, "m1", 1.0).await;
    post_meter(&client, &url, 2, "m2", 1.0).await;
    // Both silent for more than 3 s: firing, and at the webhook.
    let firing_at_hook = |meters: &'static [&'static str]| {
        let received = received.clone();
        move || {
            let got = received.lock().unwrap().clone();
            async move { got.iter().any(|b| meters.iter().all(|m| notified(b).contains(&(m.to_string(), "firing".to_string())))).then_some(()) }
        }
    };
    eventually(Duration::from_secs(30), "m1 and m2 firing at the webhook", firing_at_hook(&["m1", "m2"])).await;
    let id1 = listed(&url, "m1").await.unwrap()["id"].as_str().unwrap().to_string();
    let id2 = listed(&url, "m2").await.unwrap()["id"].as_str().unwrap().to_string();

    // Acknowledge m1, silence m2 for an hour; a reason is required.
    let (s, v) = act(&client, reqwest::Method::POST, &format!("{url}/api/v1/alerts/{id1}/ack"), serde_json::json!({})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = act(&client, reqwest::Method::POST, &format!("{url}/api/v1/alerts/{id1}/ack"), serde_json::json!({"reason": "电表更换中"})).await;
    assert_eq!((s, v["acknowledged"]["reason"].as_str()), (200, Some("电表更换中")), "{v}");
    let (s, v) = act(&client, reqwest::Method::POST, &format!("{url}/api/v1/alerts/{id2}/silence"), serde_json::json!({"reason": "线路检修", "hours": 1})).await;
    assert_eq!((s, v["silenced"]["reason"].as_str()), (200, Some("线路检修")), "{v}");
    let after_actions = received.lock().unwrap().len();

    // m3 goes silent: a change, so the webhook gets the notifiable alerts: m3, not m1 nor m2
    // (without the actions, every body carries every firing alert).
    post_meter(&client, &url, 3, "m3", 1.0).await;
    eventually(Duration::from_secs(30), "m3 firing at the webhook", firing_at_hook(&["m3"])).await;
    let later: Vec<Vec<(String, String)>> = received.lock().unwrap()[after_actions..].iter().map(notified).collect();
    for b in &later {
        assert!(b.iter().all(|(m, _)| m != "m1" && m != "m2"), "an acknowledged or silenced alert was notified: {later:?}");
    }
    // Alertmanager keeps all three, m1 and m2 suppressed by the daemon's silences (with the
    // actor and the reason), m3 active.
    eventually(Duration::from_secs(30), "m1 and m2 suppressed at Alertmanager, m3 active", || am_states(&am_url, &[("m1", "suppressed"), ("m2", "suppressed"), ("m3", "active")])).await;
    let silences = am_silences(&am_url).await;
    assert_eq!(silences.len(), 2, "{silences:?}");
    assert!(silences.iter().any(|s| s["comment"].as_str().unwrap().contains("电表更换中") && s["comment"].as_str().unwrap().contains(&id1)), "{silences:?}");

    // Restart: the acknowledgement and the silence are kept; the alerts come back (pending, then
    // firing: `for` is 0), marked, and still not notified while m3 is again.
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
    let before_restart = received.lock().unwrap().len();
    let (mut daemon, url) = start();
    eventually(Duration::from_secs(30), "m3 firing at the webhook after the restart", || {
        let got = received.lock().unwrap()[before_restart..].to_vec();
        async move { got.iter().any(|b| notified(b).contains(&("m3".to_string(), "firing".to_string()))).then_some(()) }
    })
    .await;
    let a1 = eventually(Duration::from_secs(30), "m1 firing again after the restart", || {
        let url = url.clone();
        async move { listed(&url, "m1").await.filter(|a| a["state"] == "firing") }
    })
    .await;
    assert_eq!((a1["id"].as_str(), a1["acknowledged"]["reason"].as_str()), (Some(id1.as_str()), Some("电表更换中")), "{a1}");
    let a2 = listed(&url, "m2").await.unwrap();
    assert_eq!((a2["id"].as_str(), a2["silenced"]["reason"].as_str()), (Some(id2.as_str()), Some("线路检修")), "{a2}");
    let kinds: Vec<&str> = a1["history"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"acknowledged") && kinds.ends_with(&["firing"]), "{a1}");
    let since_restart: Vec<Vec<(String, String)>> = received.lock().unwrap()[before_restart..].iter().map(notified).collect();
    for b in &since_restart {
        assert!(b.iter().all(|(m, _)| m != "m1" && m != "m2"), "notified after the restart: {since_restart:?}");
    }
    // The daemon found its silences again: still two, the alerts still suppressed.
    eventually(Duration::from_secs(30), "still suppressed at Alertmanager after the restart", || am_states(&am_url, &[("m1", "suppressed"), ("m2", "suppressed"), ("m3", "active")])).await;
    assert_eq!(am_silences(&am_url).await.len(), 2);

    // The silence ended by hand: m2 is notified again (at the next evaluation).
    let (s, v) = act(&client, reqwest::Method::DELETE, &format!("{url}/api/v1/alerts/{id2}/silence"), serde_json::Value::Null).await;
    assert_eq!((s, v["silenced"].is_null()), (200, true), "{v}");
    eventually(Duration::from_secs(30), "m2 notified once unsilenced", firing_at_hook(&["m2"])).await;
    eventually(Duration::from_secs(30), "m2 active at Alertmanager once unsilenced", || am_states(&am_url, &[("m1", "suppressed"), ("m2", "active")])).await;
    // m1 reports again: resolved, a change, notified although it had been acknowledged.
    post_meter(&client, &url, 10, "m1", 2.0).await;
    eventually(Duration::from_secs(30), "m1 resolved at the webhook", || {
        let got = received.lock().unwrap().clone();
        async move { got.iter().any(|b| notified(b).contains(&("m1".to_string(), "resolved".to_string()))).then_some(()) }
    })
    .await;
    let a1 = listed(&url, "m1").await.unwrap();
    assert_eq!((a1["state"].as_str(), a1["acknowledged"].is_null()), (Some("resolved"), true), "{a1}");
    // Its silence at Alertmanager is expired: none of the daemon's is left.
    eventually(Duration::from_secs(30), "no silence left at Alertmanager", || {
        let am_url = am_url.clone();
        async move { am_silences(&am_url).await.is_empty().then_some(()) }
    })
    .await;
    // The actions are in the audit log.
    let (_, audit) = get_json(&format!("{url}/api/v1/audit?limit=1000")).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).filter(|a| a.starts_with("alert.")).collect();
    assert_eq!(actions, ["alert.acknowledge", "alert.silence", "alert.unsilence"], "{audit}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}

/// The data-completeness rule says nothing during its grace after the start (the first readings
/// may still be on their way), then fires for an agency without data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_completeness_alert_before_the_grace_after_start_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.toml"), registry(&["m1"])).unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [alerts]\ninterval = \"300ms\"\n\
         [[alerts.rule]]\nname = \"DataIncomplete\"\nkind = \"data_completeness\"\ngrace = \"8s\"\nmin_coverage = 0.9\n",
    )
    .unwrap();
    let spawned = Instant::now();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    // Evaluated (several times) within the grace: no alert, and no rule error either.
    let mut quiet_evaluations = 0;
    while spawned.elapsed() < Duration::from_secs(6) {
        let (_, v) = get_json(&format!("{url}/api/v1/alerts")).await;
        if !v["evaluated_at"].is_null() {
            assert_eq!(v["alerts"], serde_json::json!([]), "an alert within the grace: {v}");
            assert_eq!(v["rule_errors"], serde_json::json!({}), "{v}");
            quiet_evaluations += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(quiet_evaluations >= 2, "the daemon did not evaluate within the grace (machine too slow?)");
    // After it: agency ag-1 has no data this year, coverage 0 %.
    let a = eventually(Duration::from_secs(60), "DataIncomplete firing after the grace", || {
        let url = url.clone();
        async move {
            let (_, v) = get_json(&format!("{url}/api/v1/alerts?kind=DataIncomplete&state=firing")).await;
            v["alerts"].as_array().and_then(|a| a.first().cloned())
        }
    })
    .await;
    assert!(spawned.elapsed() >= Duration::from_secs(8), "fired {:?} after the start, within the grace", spawned.elapsed());
    assert_eq!((a["agency"].as_str(), a["value"].as_f64(), a["unit"].as_str()), (Some("ag-1"), Some(0.0), Some("%")), "{a}");
    assert!(a["summary_zh"].as_str().unwrap().contains("数据完整率 0.0%，低于 90%"), "{a}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}
