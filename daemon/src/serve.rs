//! The HTTP(S) serve loop: hyper's HTTP/1.1 server over plain TCP or rustls, with a limit on
//! connections served at once (more wait in the listen backlog), a header read timeout against
//! slow clients (slowloris) that also bounds the TLS handshake, the peer address in each
//! request (`ConnectInfo`, for the audit log), and a graceful shutdown: stop accepting, let
//! requests in flight finish.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Limits of the serve loop (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Longest wait for requests in flight at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A TLS acceptor from a PEM certificate chain and key; errors name the file and the problem.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("http.tls_cert_file {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("http.tls_cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("http.tls_cert_file {} holds no PEM certificate", cert_file.display()));
    }
    // The key's contents never go into a message.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("http.tls_key_file {}: no usable PEM private key ({e})", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("http.tls_cert_file / http.tls_key_file: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `app` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, app: Router, tls: Option<tokio_rustls::TlsAcceptor>, limits: ConnLimits, metrics: Metrics, cancel: CancellationToken) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let conns = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let _ = stream.set_nodelay(true);
        let (app, tls, metrics, conns) = (app.clone(), tls.clone(), metrics.clone(), conns.clone());
        tokio::spawn(async move {
            metrics.http_connections.inc();
            match tls {
                None => serve_conn(stream, peer, app, limits, conns).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_conn(s, peer, app, limits, conns).await,
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                },
            }
            metrics.http_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    // Ask every connection to finish its request in flight and close, then wait for them.
    conns.cancel();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open {} s after shutdown began; closing them", SHUTDOWN_GRACE.as_secs());
    }
    Ok(())
}

async fn serve_conn<S>(stream: S, peer: SocketAddr, app: Router, limits: ConnLimits, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One connection at a time: an idle client holds the only slot until the header read
    /// timeout cuts it; then the next client is served. Shutdown returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_clients_are_cut_and_free_their_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let limits = ConnLimits { max_connections: 1, header_read_timeout: Duration::from_millis(500) };
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, None, limits, Metrics::new(), cancel.clone()));

        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        // Let the server take the idle connection first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = std::time::Instant::now();
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), next.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(t0.elapsed() >= Duration::from_millis(300), "served while the only slot was taken: {:?}", t0.elapsed());
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await.unwrap().unwrap_or(0);
        assert!(!String::from_utf8_lossy(&rest[..n]).contains(" 200 "), "the idle client was answered");

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    }

    #[test]
    fn tls_files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = tls_acceptor(&cert, &dir.path().join("key.pem")).err().unwrap();
        assert!(e.contains("cert.pem") && e.contains("no PEM certificate"), "{e}");
    }
}
