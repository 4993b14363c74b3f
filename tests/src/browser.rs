//! Headless Chromium driven over the DevTools protocol, for tests that log in, fill forms and
//! click through the page: a minimal WebSocket client (RFC 6455, text frames) over a loopback
//! TCP connection, and the few protocol commands the tests use (navigate, evaluate JavaScript,
//! capture a screenshot). Chromium is Debian's `chromium`, started with its own profile
//! directory and a DevTools port on loopback chosen by itself; it is killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary, if one starts here.
pub fn chromium_binary() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Where tests keep their screenshots: `target/test-artifacts/<name>`.
pub fn artifacts(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target dir").to_path_buf();
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: TcpStream,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}

impl Browser {
    /// Starts headless Chromium with a window of `width` x `height`; `None` when it cannot start.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        let bin = chromium_binary()?;
        let profile = tempfile::tempdir().ok()?;
        let child = Command::new(bin)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut child = child;
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let ws = loop {
            let port = std::fs::read_to_string(&port_file).ok().and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok()));
            // The page target's WebSocket, from /json/list.
            if let Some(ws) = port.and_then(|p| page_target(p).and_then(|path| ws_connect(p, &path))) {
                break ws;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut b = Browser { child, _profile: profile, ws, next_id: 1 };
        b.call("Page.enable", serde_json::json!({}));
        b.call("Runtime.enable", serde_json::json!({}));
        Some(b)
    }

    /// Sends a command and returns its `result`; panics on a protocol error.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.try_call(method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Sends a command: its `result`, or the protocol's `error`.
    fn try_call(&mut self, method: &str, params: serde_json::Value) -> Result<serde_json::Value, serde_json::Value> {
        let id = self.next_id;
        self.next_id += 1;
        ws_send(&mut self.ws, &serde_json::json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let text = ws_recv(&mut self.ws);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["id"].as_u64() == Some(id) {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Evaluates JavaScript in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call("Runtime.evaluate", serde_json::json!({ "expression": js, "awaitPromise": true, "returnByValue": true }));
        assert!(r.get("exceptionDetails").is_none(), "{js}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Waits until `js` is true in the page (polling), with a generous deadline.
    pub fn wait_for(&mut self, js: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self.call("Runtime.evaluate", serde_json::json!({ "expression": format!("!!({js})"), "returnByValue": true }));
            if ok["result"]["value"].as_bool() == Some(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} ({js}); page: {}", self.location());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens `url` and waits for the page to have loaded.
    pub fn goto(&mut self, url: &str) {
        self.eval("window.__energyMark = 1");
        self.call("Page.navigate", serde_json::json!({ "url": url }));
        self.wait_loaded();
    }

    /// Waits for a new document (after a navigation, a form submission or a click).
    pub fn wait_loaded(&mut self) {
        self.wait_for("typeof window.__energyMark === 'undefined' && document.readyState === 'complete'", "the next page");
        self.eval("window.__energyMark = 1");
    }

    /// Runs `js` that navigates (submits a form, clicks a link) and waits for the new page.
    pub fn act(&mut self, js: &str) {
        self.eval("window.__energyMark = 1");
        // The navigation may commit before the evaluation answers: Chromium then answers with
        // "Inspected target navigated or closed", which is the navigation asked for.
        match self.try_call("Runtime.evaluate", serde_json::json!({ "expression": js, "returnByValue": true })) {
            Ok(r) => assert!(r.get("exceptionDetails").is_none(), "{js}: {}", r["exceptionDetails"]),
            Err(e) if e["message"].as_str().is_some_and(|m| m.contains("navigated or closed")) => {}
            Err(e) => panic!("Runtime.evaluate {js}: {e}"),
        }
        self.wait_loaded();
    }

    pub fn location(&mut self) -> String {
        let r = self.call("Runtime.evaluate", serde_json::json!({ "expression": "location.href", "returnByValue": true }));
        r["result"]["value"].as_str().unwrap_or("").to_string()
    }

    pub fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''").as_str().unwrap_or("").to_string()
    }

    pub fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML").as_str().unwrap_or("").to_string()
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self, file: &Path) {
        let r = self.call("Page.captureScreenshot", serde_json::json!({ "format": "png", "captureBeyondViewport": true }));
        let png = b64_decode(r["data"].as_str().unwrap_or(""));
        assert!(png.starts_with(b"\x89PNG"), "no PNG from Page.captureScreenshot");
        std::fs::write(file, png).expect("write screenshot");
        println!("screenshot: {}", file.display());
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    // Read the headers, then Content-Length bytes (the server may keep the connection open).
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

fn page_target(port: u16) -> Option<String> {
    let body = http_get(port, "/json/list")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let url = v.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"].as_str()?.to_string();
    url.split_once("/devtools/").map(|(_, p)| format!("/devtools/{p}"))
}

fn ws_connect(port: u16, path: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut status = String::new();
    r.read_line(&mut status).ok()?;
    if !status.contains(" 101 ") {
        return None;
    }
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    Some(s)
}

/// One masked text frame (clients must mask; the key need not be secret on loopback).
fn ws_send(s: &mut TcpStream, text: &str) {
    let data = text.as_bytes();
    let mut frame = vec![0x81u8];
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    match data.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).expect("DevTools connection write");
}

/// The next whole text message (continuation frames joined; pings answered).
fn ws_recv(s: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).expect("DevTools connection read");
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).expect("read");
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).expect("read");
            len = u64::from_be_bytes(b);
        }
        let mut data = vec![0u8; usize::try_from(len).expect("frame size")];
        s.read_exact(&mut data).expect("read");
        match opcode {
            0x9 => continue, // ping: Chromium does not send them to clients; ignored
            0x8 => panic!("Chromium closed the DevTools connection"),
            _ => message.extend_from_slice(&data),
        }
        if fin {
            return String::from_utf8_lossy(&message).into_owned();
        }
    }
}
