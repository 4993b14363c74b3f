//! A Modbus server standing in for meters in tests and benchmarks: it serves, per unit id, a
//! register image built from a profile and a value for each quantity, over Modbus TCP or RTU
//! framing over TCP, on a free loopback port. Units can be made to misbehave (answer an
//! exception, or never answer), and every request's arrival time is recorded.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use energy_gateway::profile::{Function, Order, Profile, Register};
use energy_wire::Quantity;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

/// How a unit answers.
#[derive(Clone)]
pub enum Behaviour {
    /// Serves its image; reads past the mapped registers get "illegal data address".
    Image { holding: Vec<u16>, input: Vec<u16> },
    /// Answers every read with this exception.
    Exception(ExceptionCode),
    /// Never answers (the client times out).
    Silent,
    /// Leaves every other request unanswered (a noisy line), and serves the image otherwise.
    Flaky(Box<Behaviour>, Arc<std::sync::atomic::AtomicUsize>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Tcp,
    RtuOverTcp,
}

#[derive(Default)]
pub struct Log {
    /// (arrival, unit) of every request.
    pub requests: Vec<(Instant, u8)>,
}

struct Service {
    units: HashMap<u8, Behaviour>,
    log: Arc<Mutex<Log>>,
}


impl Service {
    fn read(&self, unit: u8, function: Function, addr: u16, cnt: u16) -> Result<Option<Vec<u16>>, ExceptionCode> {
        Self::answer(self.units.get(&unit), function, addr, cnt)
    }

    fn answer(b: Option<&Behaviour>, function: Function, addr: u16, cnt: u16) -> Result<Option<Vec<u16>>, ExceptionCode> {
        match b {
            None => Err(ExceptionCode::GatewayTargetDevice),
            Some(Behaviour::Flaky(inner, n)) => {
                if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 0 {
                    Ok(None)
                } else {
                    Self::answer(Some(inner), function, addr, cnt)
                }
            }
            Some(Behaviour::Exception(e)) => Err(*e),
            Some(Behaviour::Silent) => Ok(None),
            Some(Behaviour::Image { holding, input }) => {
                let image = if function == Function::Holding { holding } else { input };
                let (start, end) = (usize::from(addr), usize::from(addr) + usize::from(cnt));
                if cnt == 0 || cnt > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                image.get(start..end).map(|s| Some(s.to_vec())).ok_or(ExceptionCode::IllegalDataAddress)
            }
        }
    }
}

impl tokio_modbus::server::Service for Service {
    type Request = SlaveRequest<'static>;
    /// `None`: no answer at all (the connection stays usable, as a serial server's does).
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = req.slave;
        self.log.lock().unwrap().requests.push((Instant::now(), unit));
        let (function, a, n) = match req.request {
            Request::ReadHoldingRegisters(a, n) => (Function::Holding, a, n),
            Request::ReadInputRegisters(a, n) => (Function::Input, a, n),
            _ => return std::future::ready(Err(ExceptionCode::IllegalFunction)),
        };
        std::future::ready(self.read(unit, function, a, n).map(|regs| {
            regs.map(|regs| match function {
                Function::Holding => Response::ReadHoldingRegisters(regs),
                Function::Input => Response::ReadInputRegisters(regs),
            })
        }))
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Server {
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

/// Starts a server on `listen` ("127.0.0.1:0" for a free port).
pub async fn serve(listen: &str, framing: Framing, units: HashMap<u8, Behaviour>) -> Server {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind a loopback port");
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let svc = Arc::new(Service { units, log: log.clone() });
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        match framing {
            Framing::Tcp => {
                use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
                let on_connected = move |stream, peer| {
                    let svc = svc.clone();
                    async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(svc.clone()))) }
                };
                let _ = Server::new(listener).serve_until(&on_connected, |_| {}, c.cancelled_owned()).await;
            }
            Framing::RtuOverTcp => {
                use tokio_modbus::server::rtu_over_tcp::{accept_tcp_connection, Server};
                let on_connected = move |stream, peer| {
                    let svc = svc.clone();
                    async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(svc.clone()))) }
                };
                let _ = Server::new(listener).serve_until(&on_connected, |_| {}, c.cancelled_owned()).await;
            }
        }
    });
    Server { addr, log, cancel }
}

/// Starts an RTU server on the serial port at `path` (one end of a pseudo-terminal pair).
pub fn serve_serial(path: &str, baud: u32, units: HashMap<u8, Behaviour>) -> Server {
    let server = tokio_modbus::server::rtu::Server::new_from_path(path, baud).expect("open the serial port");
    let log = Arc::new(Mutex::new(Log::default()));
    let svc = Arc::new(Service { units, log: log.clone() });
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let _ = server.serve_until(svc, c.cancelled_owned()).await;
    });
    Server { addr: SocketAddr::from(([127, 0, 0, 1], 0)), log, cancel }
}

/// A value of a kind a real meter shows for `q`.
fn typical(q: Quantity) -> f64 {
    let name = q.name();
    if name.starts_with("voltage") {
        230.7
    } else if name.starts_with("current") {
        12.34
    } else if name == "power_factor" {
        0.95
    } else if name == "frequency" {
        50.02
    } else if name == "supply_temperature" {
        70.5
    } else if name == "return_temperature" {
        45.25
    } else if name == "outdoor_temperature" {
        -3.5
    } else if name.contains("power") {
        2.75
    } else if name == "flow_rate" {
        3.125
    } else {
        // Counters.
        1234.5
    }
}

/// The value each register of `profile` is served with, and the registers that hold it, so
/// that decoding it back gives the value to within one step of the register's scale. `order`
/// overrides the profile's order (to serve a device wired "wrong").
pub fn image(profile: &Profile, order: Option<Order>) -> (Behaviour, BTreeMap<Quantity, f64>) {
    let mut holding = Vec::new();
    let mut input = Vec::new();
    let mut values = BTreeMap::new();
    for r in &profile.registers {
        // The typical value, or a tenth of it until the register's type can hold it.
        let mut v = typical(r.quantity);
        for _ in 0..6 {
            let back = r.value(&r.encode_value(v, profile.order), profile.order, 1.0, 1.0);
            if back.is_some_and(|b| (b - v).abs() <= tolerance(r, v)) {
                break;
            }
            v /= 10.0;
        }
        let regs = r.encode_value(v, order.unwrap_or(profile.order));
        let image = if r.function == Function::Holding { &mut holding } else { &mut input };
        let end = r.end() as usize;
        if image.len() < end {
            image.resize(end, 0);
        }
        image[usize::from(r.address)..end].copy_from_slice(&regs);
        values.insert(r.quantity, v);
    }
    (Behaviour::Image { holding, input }, values)
}

/// How close a decoded value must be to the served one: half a step of the register's
/// resolution (scale), plus float rounding.
pub fn tolerance(r: &Register, v: f64) -> f64 {
    r.scale.abs() / 2.0 + v.abs() * 1e-6
}

/// A connected pair of pseudo-terminals; socat is stopped on drop.
pub struct PtyPair {
    child: std::process::Child,
    pub a: std::path::PathBuf,
    pub b: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Needs `socat` (Debian package `socat`; tests/run.sh installs it).
pub fn pty_pair() -> PtyPair {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("gw"), dir.path().join("meter"));
    let child = std::process::Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs socat (Debian package `socat`; tests/run.sh installs it): {e}"));
    let start = std::time::Instant::now();
    while !(a.exists() && b.exists()) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "socat made no pseudo-terminals");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    PtyPair { child, a, b, _dir: dir }
}

/// Runs `energy-gateway run --config CONFIG` for `secs` seconds and returns its peak and current
/// resident memory (VmHWM, VmRSS) as /proc shows them.
pub async fn gateway_rss(config: &std::path::Path, secs: u64) -> (String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_energy-gateway"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start energy-gateway");
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |k: &str| status.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_string()).unwrap_or_else(|| "?".into());
    let _ = child.kill();
    let _ = child.wait();
    (field("VmHWM:"), field("VmRSS:"))
}
