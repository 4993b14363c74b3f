//! The MQTT uplink over TLS with a user name and password, against a real Mosquitto that
//! requires both: a refused login is logged and counted and loses nothing; with the right
//! credentials (password from a file) every reading arrives, end to end over TLS.

use std::process::Command;
use std::time::Duration;

use energy_e2e::{free_port, get_json, listening_url, profiles_dir, Mosquitto, Proc};

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian package `openssl`)");
    assert!(st.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&st.stderr));
}

/// A CA and a server certificate for 127.0.0.1, made for this test only.
fn certificates(dir: &std::path::Path) {
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=energy test CA"]);
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(dir, &["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf"]);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_passwords_refused_login_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let st = Command::new("mosquitto_passwd").args(["-b", "-c", "passwd", "gw", "s3cret"]).current_dir(d).status().expect("mosquitto_passwd");
    assert!(st.success());
    let st = Command::new("mosquitto_passwd").args(["-b", "passwd", "energyd", "d4emon"]).current_dir(d).status().unwrap();
    assert!(st.success());
    let conf = format!(
        "allow_anonymous false\npassword_file {p}/passwd\ncafile {p}/ca.crt\ncertfile {p}/server.crt\nkeyfile {p}/server.key\n",
        p = d.display()
    );
    let broker = Mosquitto::start_with(&d.join("broker"), &conf);
    let burl = format!("mqtts://127.0.0.1:{}", broker.port);
    let ca = d.join("ca.crt");

    let mut sim_cfg = format!("profiles_dir = {:?}\nserved_log = {:?}\n[[bus]]\n", profiles_dir(), d.join("served.jsonl"));
    sim_cfg.push_str("[[bus.meter]]\nid = \"sec-elec\"\nunit = 1\nprofile = \"eastron/sdm630\"\nmodel = \"office_electricity\"\nsize = 3000.0\n");
    std::fs::write(d.join("sim.toml"), sim_cfg).unwrap();
    let mut sim = Proc::spawn("energyd", &["simulate", "--config", "sim.toml"], d);
    let bus: serde_json::Value = serde_json::from_str(&sim.wait_line("listen", Duration::from_secs(30))).unwrap();
    std::fs::write(
        d.join("registry.toml"),
        "[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 100.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n[[meter]]\nid = \"sec-elec\"\nbuilding = \"b\"\ncarrier = \"electricity\"\ngateway = \"sec-gw\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nurl = \"{burl}\"\nusername = \"energyd\"\npassword = \"d4emon\"\nca_file = {ca:?}\n"),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));

    let hport = free_port();
    let gw_cfg = |password_line: &str| {
        format!(
            "gateway_id = \"sec-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = \"queue\"\n[uplink]\nurl = \"{burl}\"\nusername = \"gw\"\n{password_line}\nca_file = {ca:?}\nretry_max_ms = 500\n[health]\nlisten = \"127.0.0.1:{hport}\"\n\
             [[device]]\nmeter = \"sec-elec\"\nprofile = \"eastron/sdm630\"\ntcp = \"{}\"\ninterval_ms = 100\n",
            profiles_dir(),
            bus["listen"].as_str().unwrap()
        )
    };
    // Wrong password: refused, counted, queued.
    std::fs::write(d.join("gateway.toml"), gw_cfg("password = \"wrong\"")).unwrap();
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, m) = get_json(&format!("http://127.0.0.1:{hport}/metrics")).await;
    let m = m.as_str().unwrap().to_string();
    assert!(metric(&m, "energy_gateway_uplink_batches_total{result=\"refused\"}") >= 1.0, "{m}");
    assert!(metric(&m, "energy_gateway_queue_depth") > 5.0, "{m}");
    let (_, st) = get_json(&format!("http://127.0.0.1:{hport}/status")).await;
    assert_eq!(st["uplink"]["connected"], false);
    assert!(st["uplink"]["last_error"].as_str().unwrap_or_default().contains("MQTT"), "{st}");
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(30));

    // Right password, from a file: everything queued and everything new arrives over TLS.
    std::fs::write(d.join("gw.pass"), "s3cret\n").unwrap();
    std::fs::write(d.join("gateway.toml"), gw_cfg(&format!("password_file = {:?}", d.join("gw.pass")))).unwrap();
    let mut gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(30)).success());
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(10));
    let served: Vec<f64> = std::fs::read_to_string(d.join("served.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].as_f64().unwrap())
        .collect();
    let stored = energy_e2e::recent_values(&url, "sec-elec", "active_energy_import").await;
    // The first gateway's graceful stop cannot lose anything either: all served readings.
    assert_eq!(stored, served);
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_acl_keeps_gateways_to_their_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (u, p) in [("gw-a", "pa"), ("energyd", "pd")] {
        let mut c = Command::new("mosquitto_passwd");
        if u == "gw-a" {
            c.args(["-b", "-c", "passwd", u, p]);
        } else {
            c.args(["-b", "passwd", u, p]);
        }
        assert!(c.current_dir(d).status().unwrap().success());
    }
    let acl = energy_e2e::repo_root().join("deploy/mosquitto/acl");
    let conf = format!("allow_anonymous false\npassword_file {}/passwd\nacl_file {}\n", d.display(), acl.display());
    let broker = Mosquitto::start_with(&d.join("broker"), &conf);
    std::fs::write(
        d.join("registry.toml"),
        "[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 100.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n[[meter]]\nid = \"m\"\nbuilding = \"b\"\ncarrier = \"electricity\"\ngateway = \"gw-a\"\n[[meter]]\nid = \"m-b\"\nbuilding = \"b\"\ncarrier = \"electricity\"\ngateway = \"gw-b\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("energyd.toml"),
        format!("data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nurl = \"{}\"\nusername = \"energyd\"\npassword = \"pd\"\n", broker.url()),
    )
    .unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut opts = rumqttc::MqttOptions::new("gw-a-test", "127.0.0.1", broker.port);
    opts.set_credentials("gw-a", "pa");
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let sub = client.clone();
    // The broker may drop the connection after the publish its ACL refuses: reconnect and
    // subscribe again.
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let s = sub.clone();
                    tokio::spawn(async move { s.subscribe("energy/v1/s/gw-a/ack", rumqttc::QoS::AtLeastOnce).await });
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if acks_tx.send(serde_json::from_slice(&p.payload).unwrap_or_default()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let t = chrono::Utc::now().timestamp_millis();
    let batch = |gw: &str, seq: u64, v: f64| format!(r#"{{"schema":1,"gateway":"{gw}","seq":{seq},"samples":[{{"meter":"m","t":{},"v":{{"active_energy_import":{v}}}}}]}}"#, t + seq as i64);
    let qos = rumqttc::QoS::AtLeastOnce;
    // Its own topic: stored.
    client.publish("energy/v1/s/gw-a/batch", qos, false, batch("gw-a", 1, 10.0)).await.unwrap();
    // Its own topic, claiming another gateway: the daemon refuses it.
    client.publish("energy/v1/s/gw-a/batch", qos, false, batch("gw-b", 2, 30.0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another gateway's topic: the broker's ACL drops it.
    client.publish("energy/v1/s/gw-b/batch", qos, false, batch("gw-b", 1, 20.0)).await.unwrap();
    // The refusal is counted once the daemon has seen the message; the broker dropped the
    // other one before it reached the daemon.
    energy_e2e::eventually(Duration::from_secs(20), "the wrong-gateway batch refused", || async {
        let (_, m) = get_json(&format!("{url}/metrics")).await;
        let refused = m.as_str()?.contains("reason=\"wrong_gateway\"");
        (refused && !energy_e2e::recent_values(&url, "m", "active_energy_import").await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(energy_e2e::recent_values(&url, "m", "active_energy_import").await, vec![10.0]);
    // On its own topic, a batch with a sample of gw-b's meter between two of its own: the
    // refused sample comes back as a rejection naming the meter, the others are stored.
    let three = format!(
        r#"{{"schema":1,"gateway":"gw-a","seq":3,"samples":[{{"meter":"m","t":{},"v":{{"active_energy_import":11}}}},{{"meter":"m-b","t":{},"v":{{"active_energy_import":99}}}},{{"meter":"m","t":{},"v":{{"active_energy_import":12}}}}]}}"#,
        t + 10,
        t + 10,
        t + 11
    );
    client.publish("energy/v1/s/gw-a/batch", qos, false, three).await.unwrap();
    let rejection = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let v = acks.recv().await.expect("acks");
            if v.get("rejected").is_some() && v["refused_meters"] == serde_json::json!(["m-b"]) {
                return v;
            }
        }
    })
    .await
    .expect("a rejection of the refused sample on the ack topic");
    assert_eq!(rejection["rejected"], serde_json::json!([4, 4]), "{rejection}");
    assert!(rejection["reason"].as_str().unwrap().contains("meter `m-b` is assigned to gateway `gw-b`"), "{rejection}");
    energy_e2e::eventually(Duration::from_secs(20), "gw-a's own samples stored", || async {
        (energy_e2e::recent_values(&url, "m", "active_energy_import").await == vec![10.0, 11.0, 12.0]).then_some(())
    })
    .await;
    assert!(energy_e2e::recent_values(&url, "m-b", "active_energy_import").await.is_empty());
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}
