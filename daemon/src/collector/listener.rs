//! The collector port: accepts national-protocol connections (TCP, or TLS with the acceptor the
//! wiring builds from `[collector]`'s certificate), runs a [`Session`] per connection, and
//! stores the readings through the same `Ingest` service as gateway batches. A packet is
//! acknowledged only after its readings are durable; a resent packet stores nothing twice (the
//! store keeps one value per meter, quantity and time).

use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::{CollectorConfig, Keys};
use super::crypto::Aes;
use super::frame::{self, Frame, FrameSpec};
use super::mapping::Mapping;
use super::session::{self, Session, Step};
use super::status::Collectors;
use super::xml::{self, Message};
use crate::audit::AuditLog;
use crate::ingest::Ingest;

/// Everything a connection needs.
pub struct Listener {
    pub listener: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub spec: FrameSpec,
    pub keys: Arc<Keys>,
    pub mapping: Arc<Mapping>,
    pub ingest: Arc<Ingest>,
    pub status: Arc<Collectors>,
    pub audit: Arc<AuditLog>,
    pub tz: Tz,
    pub idle: Duration,
    pub max_frame: usize,
    pub query_hours: u32,
    pub max_connections: usize,
    /// Failed identity checks per client address in the current minute.
    failures: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
}

/// Failed identity checks an address may have in a minute; more: its connections are closed at
/// once until the minute is over (guessing a key online).
pub const MAX_FAILURES_PER_MINUTE: u32 = 10;

impl Listener {
    /// Whether `ip` is barred for failed identity checks; `failed` records one more.
    fn barred(&self, ip: std::net::IpAddr, failed: bool) -> bool {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if m.len() > 100_000 {
            m.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        if failed {
            e.1 += 1;
        }
        e.1 >= MAX_FAILURES_PER_MINUTE
    }
}

impl Listener {
    /// Binds `[collector] listen` (the keys file read and checked).
    pub async fn bind(cfg: &CollectorConfig, tls: Option<tokio_rustls::TlsAcceptor>, parts: Parts) -> Result<Listener, String> {
        let spec = cfg.frame_spec()?;
        let keys = Keys::load(&cfg.keys_file)?;
        let listener = TcpListener::bind(&cfg.listen).await.map_err(|e| format!("collector.listen {}: {e}", cfg.listen))?;
        Ok(Listener {
            listener,
            tls,
            spec,
            keys: Arc::new(keys),
            mapping: Arc::new(Mapping::new(&parts.registry)),
            ingest: parts.ingest,
            status: parts.status,
            audit: parts.audit,
            tz: parts.tz,
            idle: Duration::from_secs(cfg.idle_timeout_s.max(1)),
            max_frame: cfg.max_frame_bytes,
            query_hours: cfg.query_hours,
            max_connections: cfg.max_connections,
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Accepts until `cancel`; each connection runs until it closes, errs, idles out, or
    /// `cancel` (a packet being stored is finished first).
    pub async fn run(self, cancel: CancellationToken) {
        let shared = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                a = shared.listener.accept() => a,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("collector port: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if shared.barred(peer.ip(), false) {
                shared.status.refused.with_label_values(&["too_many_identity_failures"]).inc();
                drop(tcp);
                continue;
            }
            if tasks.len() >= shared.max_connections {
                shared.status.refused.with_label_values(&["too_many_connections"]).inc();
                tracing::warn!(%peer, limit = shared.max_connections, "collector port: connection closed, collector.max_connections reached");
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let (s, c) = (shared.clone(), cancel.clone());
            tasks.spawn(async move {
                s.status.connections.inc();
                let peer = peer.to_string();
                match s.tls.clone() {
                    Some(acc) => match tokio::time::timeout(s.idle, acc.accept(tcp)).await {
                        Ok(Ok(stream)) => s.connection(stream, &peer, c).await,
                        Ok(Err(e)) => tracing::info!(%peer, "collector TLS handshake failed: {e}"),
                        Err(_) => tracing::info!(%peer, "collector TLS handshake timed out"),
                    },
                    None => s.connection(tcp, &peer, c).await,
                }
                s.status.connections.dec();
            });
        }
        tasks.shutdown().await;
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, peer: &str, cancel: CancellationToken) {
        let mut conn = Conn { session: Session::new(self.tz), aes: None, seen: None };
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            // Every whole frame in the buffer first.
            loop {
                let decoded = match frame::decode(&self.spec, &buf, self.max_frame) {
                    Ok(d) => d,
                    Err(e) => {
                        self.close(&conn, peer, "bad_frame", &e.to_string());
                        return;
                    }
                };
                let Some((f, used)) = decoded else { break };
                buf.drain(..used);
                match self.on_frame(&mut conn, f, peer).await {
                    Ok(replies) => {
                        for r in replies {
                            if stream.write_all(&r).await.is_err() {
                                return;
                            }
                        }
                        if stream.flush().await.is_err() {
                            return;
                        }
                    }
                    Err((label, why, last)) => {
                        if let Some(r) = last {
                            let _ = stream.write_all(&r).await;
                            let _ = stream.flush().await;
                        }
                        self.close(&conn, peer, label, &why);
                        return;
                    }
                }
            }
            let n = tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(self.idle, stream.read(&mut chunk)) => match r {
                    Err(_) => {
                        self.close(&conn, peer, "idle", "no frame within collector.idle_timeout_s");
                        return;
                    }
                    Ok(Err(_)) | Ok(Ok(0)) => return,
                    Ok(Ok(n)) => n,
                },
            };
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn close(&self, conn: &Conn, peer: &str, label: &'static str, why: &str) {
        self.status.refused.with_label_values(&[label]).inc();
        tracing::warn!(%peer, collector = ?conn.seen, "collector connection closed: {why}");
        if let Some((b, g)) = &conn.seen {
            self.status.update(b, g, now_ms(), |s| s.last_problem = Some(why.to_string()));
        }
    }

    /// A frame in, the frames to send back; `Err((label, why, last answer))` closes.
    async fn on_frame(&self, conn: &mut Conn, f: Frame, peer: &str) -> Result<Vec<Vec<u8>>, (&'static str, String, Option<Vec<u8>>)> {
        let msg = self.open(conn, &f.payload).map_err(|e| ("bad_message", e, None))?;
        conn.seen = Some((msg.common.building_id.clone(), msg.common.gateway_id.clone()));
        let now = now_ms();
        let sequence = random_sequence().map_err(|e| ("random", e, None))?;
        let common = msg.common.clone();
        let step = conn.session.on_message(msg, &*self.keys, &sequence, now);
        let frame_of = |conn: &Conn, m: &Message| -> Vec<u8> {
            let x = xml::write(m);
            let payload = match &conn.aes {
                Some(a) => a.encrypt(&x),
                None => x,
            };
            frame::encode(&self.spec, &Frame { type_byte: f.type_byte, sequence: f.sequence, payload })
        };
        match step {
            Step::Reply(m) => {
                let mut out = vec![frame_of(conn, &m)];
                if let Some((b, g)) = conn.session.collector() {
                    self.status.update(b, g, now, |_| {});
                    if matches!(m.body, xml::Body::IdValidate(xml::IdValidate::Result(true))) {
                        tracing::info!(%peer, building = b, gateway = g, "collector passed the identity check");
                        if self.query_hours > 0 {
                            let start = conn.session.time_string(now - i64::from(self.query_hours) * 3_600_000);
                            out.push(frame_of(conn, &session::query(&common, &start, &conn.session.time_string(now))));
                        }
                    }
                }
                Ok(out)
            }
            Step::Store { readings, bad, ack, op } => {
                let (b, g) = (common.building_id.clone(), common.gateway_id.clone());
                let (points, unassigned) = self.mapping.points(&readings);
                let ids: Vec<String> = unassigned.iter().map(|u| u.stored_as.clone()).collect();
                let source = format!("collector {b}/{g}");
                let written = self.ingest.collector_points(points, &ids, source, now).await.map_err(|e| ("store", format!("the readings could not be stored ({e}); not acknowledged, the collector resends them"), None))?;
                // A lower centre (it passed the identity check with a `[[centre]]` key, as
                // energyd's `[[upstream]]` does) restates a period by sending it again with its
                // new value: that value replaces the stored one (docs/national-protocol.md).
                let centre = conn.session.collector().filter(|(ib, ig)| self.keys.centre(ib).is_some() && self.keys.find(ib, ig).is_none() && b.starts_with(*ib)).map(|(ib, _)| ib.to_string());
                if let Some(centre) = centre.filter(|_| !written.outcome.conflicts.is_empty()) {
                    let n = self.ingest.centre_restated(&written.outcome.conflicts, &format!("centre {centre} (restated)")).await.map_err(|e| ("store", format!("the restated values could not be stored ({e}); not acknowledged, the centre resends them"), None))?;
                    tracing::info!(building = %b, centre = %centre, replaced = n, "a lower centre restated values");
                }
                let o = &written.outcome;
                let v = &self.status.values;
                v.with_label_values(&["stored"]).inc_by(o.points_written);
                v.with_label_values(&["unchanged"]).inc_by(o.points_unchanged);
                v.with_label_values(&["conflict"]).inc_by(o.points_conflicting);
                v.with_label_values(&["bad"]).inc_by(bad.len() as u64);
                v.with_label_values(&["refused"]).inc_by(written.refused.len() as u64);
                self.status.note_unassigned(&unassigned, now);
                let problem = bad.first().map(|x| format!("meter {} function {}: {}", x.meter, x.function, x.reason)).or_else(|| written.refused.first().map(|(p, why)| format!("{}: {why}", p.meter)));
                if let Some(p) = &problem {
                    tracing::warn!(building = %b, gateway = %g, "collector values set aside: {p}");
                }
                self.status.update(&b, &g, now, |s| {
                    s.reports += 1;
                    s.values_stored += o.points_written;
                    s.values_unchanged += o.points_unchanged;
                    s.values_bad += (bad.len() + written.refused.len()) as u64;
                    if problem.is_some() {
                        s.last_problem = problem.clone();
                    }
                });
                tracing::debug!(building = %b, op = op.as_str(), written = o.points_written, "collector packet stored");
                Ok(vec![frame_of(conn, &ack)])
            }
            Step::Refused { reply, reason } => {
                self.status.identity_refused.inc();
                if let Ok(a) = peer.parse::<std::net::SocketAddr>() {
                    if self.barred(a.ip(), true) {
                        tracing::warn!(%peer, "collector port: {MAX_FAILURES_PER_MINUTE} failed identity checks from this address within a minute; its connections are closed until the minute is over");
                    }
                }
                self.status.update(&common.building_id, &common.gateway_id, now, |s| {
                    s.identity_refused += 1;
                    s.last_problem = Some(reason.clone());
                });
                let who = crate::auth::Principal {
                    name: format!("collector {}/{}", common.building_id, common.gateway_id),
                    role: crate::auth::Role::Gateway,
                    agency: None,
                    gateway: None,
                    meters: Vec::new(),
                    remote: Some(peer.to_string()),
                };
                let detail = serde_json::json!({ "reason": reason, "building_id": common.building_id, "gateway_id": common.gateway_id, "protocol": "national" });
                let (audit, target) = (self.audit.clone(), format!("collector {}/{}", common.building_id, common.gateway_id));
                let _ = tokio::task::spawn_blocking(move || audit.record_ingest_refusal(&who, &target, detail)).await;
                Err(("identity_refused", reason, Some(frame_of(conn, &reply))))
            }
            Step::Error(e) => Err(("protocol", e, None)),
            Step::Nothing => Ok(Vec::new()),
        }
    }

    /// The message in a payload: plain XML, or AES-128-CBC under the session's key; before the
    /// session knows its collector, under whichever configured key decrypts it to a message of
    /// that key's collector (which then holds for the session).
    fn open(&self, conn: &mut Conn, payload: &[u8]) -> Result<Message, String> {
        if let Some(a) = &conn.aes {
            let plain = a.decrypt(payload).map_err(|e| e.to_string())?;
            return xml::parse(&plain).map_err(|e| e.to_string());
        }
        let looks_plain = payload.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b == b'<');
        if looks_plain {
            let m = xml::parse(payload).map_err(|e| e.to_string())?;
            if self.keys.find(&m.common.building_id, &m.common.gateway_id).is_some_and(|k| k.aes.is_some()) {
                return Err(format!("collector {}/{} sent plain XML; its keys entry sets AES", m.common.building_id, m.common.gateway_id));
            }
            return Ok(m);
        }
        for k in self.keys.entries.iter() {
            let Some(a) = &k.aes else { continue };
            let Ok(plain) = a.decrypt(payload) else { continue };
            let Ok(m) = xml::parse(&plain) else { continue };
            if m.common.building_id == k.building && k.gateway.as_ref().is_none_or(|g| *g == m.common.gateway_id) {
                conn.aes = Some(a.clone());
                return Ok(m);
            }
        }
        for c in self.keys.centres.iter() {
            let Some(a) = &c.aes else { continue };
            let Ok(plain) = a.decrypt(payload) else { continue };
            let Ok(m) = xml::parse(&plain) else { continue };
            if m.common.building_id == c.id {
                conn.aes = Some(a.clone());
                return Ok(m);
            }
        }
        Err("the payload is neither XML nor AES-128-CBC under any configured collector key".into())
    }
}

/// The handles the wiring passes in.
pub struct Parts {
    pub registry: Arc<crate::registry::Registry>,
    pub ingest: Arc<Ingest>,
    pub status: Arc<Collectors>,
    pub audit: Arc<AuditLog>,
    pub tz: Tz,
}

struct Conn {
    session: Session,
    aes: Option<Aes>,
    seen: Option<(String, String)>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// 16 random decimal digits.
fn random_sequence() -> Result<String, String> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| "no random numbers for the identity sequence".to_string())?;
    Ok(b.iter().map(|x| char::from(b'0' + x % 10)).collect())
}
