//! Simulated meters: real Modbus TCP servers that serve a device profile's registers with the
//! values of a [`MeterModel`] at the moment of each request.
//!
//! One server stands for a serial server with an RS-485 bus behind it: each meter answers on its
//! own unit id; an unknown unit gets exception 0x0B (gateway target device failed to respond).
//! A read beyond the profile's mapped registers gets 0x02 (illegal data address), a read of more
//! than 125 registers 0x03 (illegal data value), as real devices answer.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use energy_gateway::profile::{Function, Profile};
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use super::load::MeterModel;

/// A meter on a simulated bus.
pub struct SimMeter {
    pub id: String,
    pub unit: u8,
    pub profile: Arc<Profile>,
    pub model: Arc<MeterModel>,
}

/// Where served counter values are recorded, one JSON line per read that covered the counter.
pub type ServedLog = Arc<Mutex<std::fs::File>>;

struct SimService {
    meters: HashMap<u8, Arc<SimMeter>>,
    log: Option<ServedLog>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SimService {
    fn read(&self, unit: u8, function: Function, addr: u16, cnt: u16) -> Result<Vec<u16>, ExceptionCode> {
        let m = self.meters.get(&unit).ok_or(ExceptionCode::GatewayTargetDevice)?;
        if cnt == 0 || cnt > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let regs: Vec<_> = m.profile.registers.iter().filter(|r| r.function == function).collect();
        let max_end = regs.iter().map(|r| r.end()).max().unwrap_or(0);
        let (start, end) = (u32::from(addr), u32::from(addr) + u32::from(cnt));
        if end > max_end {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let t = now_ms();
        let values = m.model.values_at(t, true);
        let mut out = vec![0u16; usize::from(cnt)];
        let counter = m.model.counter();
        for r in regs {
            if u32::from(r.address) < start || r.end() > end {
                continue;
            }
            let Some(&v) = values.get(&r.quantity) else { continue };
            let enc = r.encode_value(v, m.profile.order);
            let off = usize::from(r.address - addr);
            out[off..off + enc.len()].copy_from_slice(&enc);
            if r.quantity == counter {
                if let (Some(log), Some(served)) = (&self.log, r.value(&enc, m.profile.order, 1.0, 1.0)) {
                    let line = serde_json::json!({ "meter": m.id, "quantity": counter.name(), "value": served, "t_ms": t });
                    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(f, "{line}");
                }
            }
        }
        Ok(out)
    }
}

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = req.slave;
        let res = match req.request {
            Request::ReadHoldingRegisters(a, n) => self.read(unit, Function::Holding, a, n).map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => self.read(unit, Function::Input, a, n).map(Response::ReadInputRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(res)
    }
}

/// Starts a simulated bus on `listen` (port 0 for any free port); returns the bound address and
/// the server task, which ends when `cancel` fires.
pub async fn start_bus(
    listen: &str,
    meters: Vec<SimMeter>,
    log: Option<ServedLog>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let svc = Arc::new(SimService { meters: meters.into_iter().map(|m| (m.unit, Arc::new(m))).collect(), log });
    let task = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = move |stream, peer| {
            let svc = svc.clone();
            async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(svc.clone()))) }
        };
        let on_error = |e| tracing::debug!("simulated meter connection ended: {e}");
        if let Err(e) = server.serve_until(&on_connected, on_error, cancel.cancelled_owned()).await {
            tracing::warn!("simulated bus stopped: {e}");
        }
    });
    Ok((addr, task))
}
