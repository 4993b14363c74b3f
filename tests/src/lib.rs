//! Helpers for end-to-end tests: find the real binaries, run them as child processes that are
//! killed when the test ends, read their output, and talk HTTP to them.
//!
//! The binaries are built by the test command (`cargo build --bins` before the tests); a test
//! that cannot find one fails with a message that says so.

pub mod national;
pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The device profiles shipped in the repository.
pub fn profiles_dir() -> PathBuf {
    repo_root().join("device-profiles")
}

/// Path of a workspace binary built next to this test (target/<profile>/<name>).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` (the README's test command, .ci/run, does this)",
        p.display()
    );
    p
}

/// A child process, killed on drop, whose stdout lines are collected.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(bin(name))
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info,tokio_modbus=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx, seen: Vec::new(), name: name.to_string() }
    }

    /// Waits for a stdout line containing `needle` (or finds one already printed); returns it.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("{}: no line with `{needle}` within {timeout:?}; saw:\n{}", self.name, self.seen.join("\n")),
            }
        }
    }

    /// Collects what has been printed so far without waiting.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "cannot send {sig} to {}", self.name);
    }

    /// Waits for exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread deliver the last lines.
                std::thread::sleep(Duration::from_millis(100));
                self.drain();
                return s;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary to completion; returns (exit code, stdout, stderr).
pub fn run(name: &str, args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(bin(name)).args(args).current_dir(cwd).output().unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `energyd token new ARGS` in `dir`; returns the token and the `[[auth.token]]` entry to
/// paste into `[auth]` (which must not hold the token itself).
pub fn new_token(dir: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["token", "new"];
    all.extend_from_slice(args);
    let (code, out, err) = run("energyd", &all, dir);
    assert_eq!(code, 0, "energyd token new {args:?}: {err}");
    let token = out.lines().find(|l| l.starts_with("edt_")).unwrap_or_else(|| panic!("no token in:\n{out}")).to_string();
    let entry = out[out.find("[[auth.token]]").expect("entry")..].to_string();
    assert!(!entry.contains(&token), "the configuration entry holds the token itself");
    (token, entry)
}

/// An HTTP client (installs the rustls crypto provider reqwest needs first).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// GET a URL and parse the JSON body; panics on failure with the URL in the message.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

/// The URL printed by `energyd` as `energyd listening on http://ADDR`.
pub fn listening_url(line: &str) -> String {
    line.split_whitespace().find(|w| w.starts_with("http://")).expect("url in line").trim_end_matches('/').to_string()
}

/// Percent-encodes `+` in RFC 3339 times for query strings.
pub fn q(t: &str) -> String {
    t.replace('+', "%2B")
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server under test to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A Mosquitto broker on a loopback port with its own persistence directory.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Extra configuration for the listener (TLS, authentication).
    extra: String,
}

impl Mosquitto {
    /// Starts `mosquitto` (Debian package `mosquitto`; tests/run.sh installs it).
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "allow_anonymous true\n")
    }

    /// Starts a broker whose listener has `conf` (e.g. TLS files, `password_file`).
    pub fn start_with(dir: &Path, conf: &str) -> Mosquitto {
        let port = free_port();
        let mut m = Mosquitto { port, dir: dir.to_path_buf(), child: None, extra: conf.to_string() };
        m.restart();
        m
    }

    fn binary() -> PathBuf {
        for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
            if Path::new(p).exists() {
                return PathBuf::from(p);
            }
        }
        panic!("mosquitto not found: install the Debian package `mosquitto` (tests/run.sh does: apt-get install -y mosquitto)");
    }

    /// Starts the broker again on the same port and persistence directory.
    pub fn restart(&mut self) {
        std::fs::create_dir_all(self.dir.join("persist")).expect("broker dir");
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {} 127.0.0.1\n{}persistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest file {}\n",
                self.port,
                self.extra,
                self.dir.join("persist").display(),
                self.dir.join("mosquitto.log").display()
            ),
        )
        .expect("broker conf");
        let child = Command::new(Self::binary()).arg("-c").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The raw values of a meter's quantity stored in the last hour (and the next, for clock skew).
pub async fn recent_values(url: &str, meter: &str, quantity: &str) -> Vec<f64> {
    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(1)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    let (_, v) = get_json(&format!("{url}/api/v1/series?meter={meter}&quantity={quantity}&from={}&to={}", q(&from), q(&to))).await;
    v["points"].as_array().map(|a| a.iter().filter_map(|p| p["v"].as_f64()).collect()).unwrap_or_default()
}

/// The sum of the samples of a Prometheus text exposition whose line starts with `prefix`
/// (a metric name, or a name with the start of its labels); 0 when there is none.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}
