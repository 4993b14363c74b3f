//! The HTTP(S) serve loop: hyper's HTTP/1.1 server over plain TCP or rustls, with limits on
//! connections (in all, per client address, and per client address before a request on the
//! connection carried a valid token), a header read timeout against slow clients (slowloris)
//! that also bounds the TLS handshake, a body read timeout (408), the peer address in each
//! request (`ConnectInfo`, for the audit log), and a graceful shutdown: stop accepting, let
//! requests in flight finish.
//!
//! Every connection is accepted at once and then admitted or refused: a connection waiting in
//! the listen backlog behind a flood would wait for the flood. When a limit is reached, an idle
//! connection (no request in the handlers: keep-alive, or still sending its headers or its TLS
//! handshake) is closed to make room, the one idle longest first: of the same client for a
//! per-client limit, else of the client holding the most connections. When none is idle, the new
//! connection is answered 503 (plain HTTP) or closed (TLS) right away. A flood from one address
//! thus only churns that address's own connections, and other clients keep being served.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::{Bytes, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ConnAuth};
use crate::metrics::Metrics;

/// `[http]`: the listener, TLS, and the limits on connections and requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted (after decompression); larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Listen on a non-loopback address without `[auth]`: only behind a reverse proxy that
    /// authenticates every request itself.
    #[serde(default)]
    pub allow_insecure_open: bool,
    /// HTTPS: the certificate chain (PEM), with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// HTTPS: the private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// A request not answered within this gets 503 (reading its body included).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A connection that does not send a request's headers within this is closed (slowloris);
    /// also the TLS handshake's limit.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Connections open at once. At the limit a new connection closes the connection idle
    /// longest of the client holding the most, or is refused (503) when none is idle.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address (behind a reverse proxy every client
    /// has the proxy's address: raise it to `max_connections` there).
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Connections open at once from one client address on which no request has yet presented
    /// a valid token (with authentication off: every connection).
    #[serde(default = "default_max_unauthenticated_per_client")]
    pub max_unauthenticated_connections_per_client: usize,
    /// A request whose body has not fully arrived this long after its headers gets 408 and its
    /// connection is closed (a body shorter than its Content-Length, or a client too slow).
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            allow_insecure_open: false,
            tls_cert_file: None,
            tls_key_file: None,
            request_timeout_ms: default_request_timeout_ms(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            max_unauthenticated_connections_per_client: default_max_unauthenticated_per_client(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
        }
    }
}

fn default_request_timeout_ms() -> u64 {
    60_000
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_client() -> usize {
    256
}
fn default_max_unauthenticated_per_client() -> usize {
    64
}
fn default_body_read_timeout_ms() -> u64 {
    10_000
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    32 << 20
}

impl HttpConfig {
    /// Every problem, named by its key; `auth_on`: `[auth]` is configured (an open API listens
    /// on loopback only, unless `allow_insecure_open`).
    pub fn problems(&self, auth_on: bool) -> Vec<String> {
        let mut out = Vec::new();
        let listen = self.listen.parse::<std::net::SocketAddr>();
        if listen.is_err() {
            out.push(format!("http.listen `{}` is not an address such as 127.0.0.1:8080", self.listen));
        }
        if let Ok(addr) = listen {
            if !addr.ip().is_loopback() && !auth_on && !self.allow_insecure_open {
                out.push(format!(
                    "http.listen `{}` is not a loopback address and no [auth] tokens are configured: add [auth] tokens (`energyd token new`), \
                     or listen on 127.0.0.1, or set http.allow_insecure_open = true only behind a proxy that authenticates every request",
                    self.listen
                ));
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => {
                for (key, f) in [("http.tls_cert_file", c), ("http.tls_key_file", k)] {
                    if !f.is_file() {
                        out.push(format!("{key} {} does not exist", f.display()));
                    }
                }
            }
            (None, None) => {}
            _ => out.push("http.tls_cert_file and http.tls_key_file go together: give both for HTTPS, or neither".into()),
        }
        if self.request_timeout_ms < 100 || self.header_read_timeout_ms < 100 || self.body_read_timeout_ms < 100 {
            out.push("http.request_timeout_ms, http.header_read_timeout_ms and http.body_read_timeout_ms must be at least 100".into());
        }
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            out.push("http.max_connections must be 1..=1000000".into());
        }
        if self.max_connections_per_client == 0 || self.max_unauthenticated_connections_per_client == 0 {
            out.push("http.max_connections_per_client and http.max_unauthenticated_connections_per_client must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            out.push("http.max_body_bytes must be at least 1024".into());
        }
        out
    }

    /// The serve loop's limits.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_unauthenticated_per_client: self.max_unauthenticated_connections_per_client,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
        }
    }
}

/// Limits of the serve loop (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// Connections from one client address.
    pub max_connections_per_client: usize,
    /// Connections from one client address on which no request has yet carried a valid token
    /// (every connection, when authentication is off).
    pub max_unauthenticated_per_client: usize,
    pub header_read_timeout: Duration,
    /// Time from the end of a request's headers to the end of its body; later: 408, closed.
    pub body_read_timeout: Duration,
}

/// Refused connections answered at once (each for at most half a second).
const REFUSING_AT_ONCE: usize = 32;

/// Longest wait for requests in flight at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What the admission keeps of one open connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// Requests of this connection in the handlers now.
    busy: AtomicUsize,
    /// Set by the authentication middleware (`crate::api::ConnAuth`).
    authenticated: ConnAuth,
    /// Milliseconds since the table's start when the connection last became idle.
    idle_since: AtomicU64,
    close: CancellationToken,
    /// The table's start, which `idle_since` counts from.
    epoch: Instant,
}

impl Conn {
    fn idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Notes that the connection became idle now.
    fn touch(&self) {
        self.idle_since.store(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The open connections by client address.
struct Table {
    by_client: HashMap<IpAddr, Vec<Arc<Conn>>>,
    total: usize,
    next_id: u64,
    start: Instant,
}

/// Which limit refused a connection (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Unauthenticated,
    Client,
    Total,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Unauthenticated => "unauthenticated",
            Refused::Client => "client",
            Refused::Total => "total",
        }
    }
}

impl Table {
    fn new() -> Table {
        Table { by_client: HashMap::new(), total: 0, next_id: 0, start: Instant::now() }
    }

    /// Admits a new connection from `ip`, closing idle ones to make room; `Err` names the limit
    /// that refused it. Returns the admitted connection and how many were closed for it.
    fn admit(&mut self, ip: IpAddr, limits: &ConnLimits) -> Result<(Arc<Conn>, u64), Refused> {
        let mut evicted = 0;
        let mine = self.by_client.get(&ip).map_or(&[][..], Vec::as_slice);
        let unauthenticated = mine.iter().filter(|c| !c.authenticated.is_marked()).count();
        if unauthenticated >= limits.max_unauthenticated_per_client {
            self.evict_from(ip, true).ok_or(Refused::Unauthenticated)?;
            evicted += 1;
        }
        if self.by_client.get(&ip).map_or(0, Vec::len) >= limits.max_connections_per_client {
            self.evict_from(ip, false).ok_or(Refused::Client)?;
            evicted += 1;
        }
        if self.total >= limits.max_connections {
            // The client holding the most connections with one idle gives it up.
            let victim = self.by_client.iter().filter(|(_, v)| v.iter().any(|c| c.idle())).max_by_key(|(_, v)| v.len()).map(|(ip, _)| *ip);
            victim.and_then(|v| self.evict_from(v, false)).ok_or(Refused::Total)?;
            evicted += 1;
        }
        let conn = Arc::new(Conn {
            id: self.next_id,
            busy: AtomicUsize::new(0),
            authenticated: ConnAuth::new(),
            idle_since: AtomicU64::new(0),
            close: CancellationToken::new(),
            epoch: self.start,
        });
        conn.touch();
        self.next_id += 1;
        self.by_client.entry(ip).or_default().push(conn.clone());
        self.total += 1;
        Ok((conn, evicted))
    }

    /// Closes the connection of `ip` idle longest (an unauthenticated one first; only those with
    /// `unauthenticated_only`) and forgets it. `None`: none is idle.
    fn evict_from(&mut self, ip: IpAddr, unauthenticated_only: bool) -> Option<()> {
        let list = self.by_client.get_mut(&ip)?;
        let i = list
            .iter()
            .enumerate()
            .filter(|(_, c)| c.idle() && !(unauthenticated_only && c.authenticated.is_marked()))
            .min_by_key(|(_, c)| (c.authenticated.is_marked(), c.idle_since.load(Ordering::Relaxed)))
            .map(|(i, _)| i)?;
        let conn = list.swap_remove(i);
        conn.close.cancel();
        if list.is_empty() {
            self.by_client.remove(&ip);
        }
        self.total -= 1;
        Some(())
    }

    /// Forgets a connection that ended (unless it was evicted, and so forgotten, before).
    fn remove(&mut self, ip: IpAddr, id: u64) {
        if let Some(list) = self.by_client.get_mut(&ip) {
            if let Some(i) = list.iter().position(|c| c.id == id) {
                list.swap_remove(i);
                self.total -= 1;
            }
            if list.is_empty() {
                self.by_client.remove(&ip);
            }
        }
    }
}

type Shared<T> = Arc<Mutex<T>>;

/// The client a peer address counts as: an IPv4 address (also when mapped into IPv6), or an
/// IPv6 /64 (one host usually has a whole /64 and could otherwise take a new address per
/// connection).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

fn lock(t: &Shared<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the TLS acceptor could not be made; each names the file and the problem (never the
/// key's contents).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls_cert_file {}: {source}", .file.display())]
    Cert { file: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("http.tls_cert_file {} holds no PEM certificate", .0.display())]
    NoCert(PathBuf),
    #[error("http.tls_key_file {}: no usable PEM private key ({source})", .file.display())]
    Key { file: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("TLS: {0}")]
    Protocols(rustls::Error),
    #[error("http.tls_cert_file / http.tls_key_file: {0}")]
    Pair(rustls::Error),
}

/// A TLS acceptor from a PEM certificate chain and key; errors name the file and the problem.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert_err = |source| TlsError::Cert { file: cert_file.to_path_buf(), source };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file).map_err(cert_err)?.collect::<Result<_, _>>().map_err(cert_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_file.to_path_buf()));
    }
    // The key's contents never go into a message.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key { file: key_file.to_path_buf(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The answer to a connection refused at accept (plain HTTP only; it is written before the
/// request is read, as HTTP/1.1 allows, and the connection closed).
fn refusal(limit: Refused) -> Vec<u8> {
    let what = match limit {
        Refused::Unauthenticated => "too many connections without a valid token from your address (http.max_unauthenticated_connections_per_client)",
        Refused::Client => "too many connections from your address (http.max_connections_per_client)",
        Refused::Total => "too many connections (http.max_connections)",
    };
    let body = serde_json::json!({ "error": format!("{what}, none of them idle; retry later") }).to_string();
    format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Serves `app` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, app: Router, tls: Option<tokio_rustls::TlsAcceptor>, limits: ConnLimits, metrics: Metrics, cancel: CancellationToken) -> std::io::Result<()> {
    let table: Shared<Table> = Arc::new(Mutex::new(Table::new()));
    let refusing = Arc::new(tokio::sync::Semaphore::new(REFUSING_AT_ONCE));
    let conns = CancellationToken::new();
    // Each connection's task holds a sender: all are gone when `open` yields `None`.
    let (alive, mut open) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let client = client_of(peer.ip());
        let admitted = lock(&table).admit(client, &limits);
        let conn = match admitted {
            Ok((conn, evicted)) => {
                metrics.http_connections_evicted.inc_by(evicted);
                conn
            }
            Err(limit) => {
                metrics.http_connections_refused.with_label_values(&[limit.label()]).inc();
                tracing::debug!(%peer, limit = limit.label(), "connection refused");
                // Plain HTTP: the answer, by a few tasks at most; past them, or over TLS, the
                // connection is just closed.
                if let (None, Ok(permit)) = (&tls, refusing.clone().try_acquire_owned()) {
                    tokio::spawn(answer_refused(stream, limit, permit));
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = Admitted { conn, client, peer, table: table.clone(), alive: alive.clone() };
        tokio::spawn(serve_admitted(stream, admitted, app.clone(), tls.clone(), limits, metrics.clone(), conns.clone()));
    }
    drop(listener);
    // Ask every connection to finish its request in flight and close, then wait for them.
    conns.cancel();
    drop(alive);
    if tokio::time::timeout(SHUTDOWN_GRACE, open.recv()).await.is_err() {
        tracing::warn!("connections still open {} s after shutdown began; closing them", SHUTDOWN_GRACE.as_secs());
    }
    Ok(())
}

/// Answers a connection refused at accept, then reads and drops the client's request for a
/// moment (closing with unread data would reset the connection and lose the answer).
async fn answer_refused(mut stream: tokio::net::TcpStream, limit: Refused, permit: tokio::sync::OwnedSemaphorePermit) {
    let answer = async {
        stream.write_all(&refusal(limit)).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), answer).await;
    drop(permit);
}

/// An admitted connection: its entry in the table, and the sender that keeps shutdown waiting.
struct Admitted {
    conn: Arc<Conn>,
    client: IpAddr,
    peer: SocketAddr,
    table: Shared<Table>,
    alive: tokio::sync::mpsc::Sender<()>,
}

/// Serves an admitted connection (after its TLS handshake, within the header read timeout)
/// until it ends or is closed to make room; then forgets it.
async fn serve_admitted(stream: tokio::net::TcpStream, a: Admitted, app: Router, tls: Option<tokio_rustls::TlsAcceptor>, limits: ConnLimits, metrics: Metrics, conns: CancellationToken) {
    metrics.http_connections.inc();
    let served = async {
        match tls {
            None => serve_conn(stream, a.peer, app, limits, a.conn.clone(), &metrics, conns).await,
            Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => serve_conn(s, a.peer, app, limits, a.conn.clone(), &metrics, conns).await,
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(peer = %a.peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(peer = %a.peer, "TLS handshake timed out");
                }
            },
        }
    };
    tokio::select! {
        () = served => {}
        () = a.conn.close.cancelled() => tracing::debug!(peer = %a.peer, "idle connection closed to make room"),
    }
    lock(&a.table).remove(a.client, a.conn.id);
    metrics.http_connections.dec();
    drop(a.alive);
}

/// Counts a request in the handlers for its connection (not idle while it lives).
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
}

async fn serve_conn<S>(stream: S, peer: SocketAddr, app: Router, limits: ConnLimits, conn: Arc<Conn>, metrics: &Metrics, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let body_timeouts = metrics.http_body_timeouts.clone();
    let svc = tower::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let app = app.clone();
        conn.busy.fetch_add(1, Ordering::AcqRel);
        let busy = Busy(conn.clone());
        let expired = Arc::new(AtomicBool::new(false));
        let mut req = req.map(|b| axum::body::Body::new(DeadlineBody { inner: b, deadline: Box::pin(tokio::time::sleep(limits.body_read_timeout)), expired: expired.clone() }));
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(conn.authenticated.clone());
        let body_timeouts = body_timeouts.clone();
        async move {
            let resp = tower::ServiceExt::oneshot(app, req).await;
            drop(busy);
            if expired.load(Ordering::Relaxed) {
                body_timeouts.inc();
                tracing::debug!(%peer, "request body not received within {} ms", limits.body_read_timeout.as_millis());
                return Ok(body_timeout_response(limits.body_read_timeout));
            }
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let hyper_conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
    tokio::pin!(hyper_conn);
    let res = tokio::select! {
        r = hyper_conn.as_mut() => r,
        () = shutdown.cancelled() => {
            hyper_conn.as_mut().graceful_shutdown();
            hyper_conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// 408 for a body that did not arrive in time; the connection is closed after it (the rest of
/// the body is never read).
fn body_timeout_response(limit: Duration) -> axum::response::Response {
    let mut r = ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        message: format!("the request body did not arrive within {} ms of its headers (http.body_read_timeout_ms): shorter than its Content-Length, or too slow", limit.as_millis()),
    }
    .into_response();
    r.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    r
}

/// A request body that fails once its deadline has passed (and says so in `expired`).
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err("request body read timeout (http.body_read_timeout_ms)".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max: usize, per_client: usize, unauthenticated: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            max_connections_per_client: per_client,
            max_unauthenticated_per_client: unauthenticated,
            header_read_timeout: Duration::from_millis(500),
            body_read_timeout: Duration::from_millis(700),
        }
    }

    async fn start(limits: ConnLimits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/echo", axum::routing::post(|body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>| async move { format!("{}", body.map_or(0, |b| b.len())) }));
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, None, limits, Metrics::new(), cancel.clone()));
        (addr, cancel, server)
    }

    async fn get(addr: SocketAddr) -> String {
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), next.read_to_string(&mut answer)).await.unwrap();
        answer
    }

    /// One connection allowed: a client still sending its headers is idle and is closed to make
    /// room for the next, which is served at once (it used to wait in the backlog until the
    /// header read timeout cut the first). Shutdown returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_client_is_closed_to_make_room() {
        let (addr, cancel, server) = start(limits(1, 1, 1)).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = get(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await.unwrap().unwrap_or(0);
        assert!(!String::from_utf8_lossy(&rest[..n]).contains(" 200 "), "the idle client was answered");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    }

    /// A body shorter than its Content-Length: 408 after the body read timeout, and closed.
    /// While it waits in its handler the connection is busy, so a new one is refused (503) rather
    /// than closing it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_body_gets_408_and_a_busy_connection_is_not_closed() {
        let (addr, cancel, server) = start(limits(1, 1, 1)).await;
        let mut short = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        short.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = get(addr).await;
        assert!(refused.starts_with("HTTP/1.1 503") && refused.contains("none of them idle; retry later"), "{refused}");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), short.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("http.body_read_timeout_ms"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(t0.elapsed() >= Duration::from_millis(600), "answered before the timeout: {:?}", t0.elapsed());
        // A whole body is read as before.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), ok.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with('5'), "{answer}");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    }

    /// The admission alone: a flood from one address churns its own idle connections and never
    /// takes another address's; authenticated connections are not counted against the
    /// unauthenticated limit and go last.
    #[test]
    fn per_client_limits_keep_one_address_from_taking_the_others_room() {
        let l = limits(10, 6, 3);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let mut t = Table::new();
        let first = t.admit(a, &l).unwrap().0;
        // 3 unauthenticated from a; the 4th closes the one idle longest (the first).
        t.admit(a, &l).unwrap();
        t.admit(a, &l).unwrap();
        assert_eq!(t.admit(a, &l).unwrap().1, 1);
        assert!(first.close.is_cancelled());
        assert_eq!(t.total, 3);
        // b is not touched by a's flood.
        let mine = t.admit(b, &l).unwrap();
        assert_eq!(mine.1, 0);
        for _ in 0..100 {
            t.admit(a, &l).unwrap();
        }
        assert!(!mine.0.close.is_cancelled());
        assert_eq!(t.by_client[&a].len(), 3);
        // Busy connections are not closed: a's 3 busy, a 4th is refused.
        for c in &t.by_client[&a] {
            c.busy.store(1, Ordering::Relaxed);
        }
        assert_eq!(t.admit(a, &l).unwrap_err(), Refused::Unauthenticated);
        // Authenticated connections count only against the per-client limit (6).
        for c in &t.by_client[&a] {
            c.authenticated.mark();
        }
        for _ in 0..3 {
            let c = t.admit(a, &l).unwrap().0;
            c.authenticated.mark();
            c.busy.store(1, Ordering::Relaxed);
        }
        assert_eq!(t.admit(a, &l).unwrap_err(), Refused::Client);
        // The total limit (10): 7 open; 3 more from other addresses, then the one holding the
        // most with one idle gives one up (b's is idle; a's are all busy).
        for i in 3..6 {
            t.admit(IpAddr::from([127, 0, 0, i]), &l).unwrap();
        }
        assert_eq!(t.total, 10);
        let (_, evicted) = t.admit(IpAddr::from([127, 0, 0, 9]), &l).unwrap();
        assert_eq!(evicted, 1);
        assert_eq!(t.total, 10);
        t.remove(a, 0);
        assert_eq!(t.total, 10, "an evicted connection is not counted twice");
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("127.0.0.2")), ip("127.0.0.2"));
        assert_eq!(client_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("2001:db8:1:2::1")), client_of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(client_of(ip("2001:db8:1:2::1")), client_of(ip("2001:db8:1:3::1")));
        assert_eq!(client_of(ip("::1")), ip("::"));
    }

    #[test]
    fn tls_files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = tls_acceptor(&cert, &dir.path().join("key.pem")).err().unwrap().to_string();
        assert!(e.contains("cert.pem") && e.contains("no PEM certificate"), "{e}");
    }
}
