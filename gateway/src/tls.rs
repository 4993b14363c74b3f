//! TLS client configuration (rustls with the ring provider) for the MQTT and HTTPS uplinks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Makes ring the process's default rustls crypto provider (reqwest needs one before it builds a
/// client). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why no TLS client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {}: {source}", .path.display())]
    ReadCa { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("CA file {}: {reason}", .path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("CA file {} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("no system CA certificates found; set uplink.ca_file")]
    NoSystemRoots,
    #[error("TLS: {0}")]
    Setup(rustls::Error),
}

// For callers that report the error as text (the daemon's MQTT ingest).
impl From<TlsError> for String {
    fn from(e: TlsError) -> String {
        e.to_string()
    }
}

/// A client configuration trusting the CA certificates in `ca_file` (PEM), or the system's
/// roots when no file is given.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| TlsError::BadCa { path: path.to_path_buf(), reason };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|source| TlsError::ReadCa { path: path.to_path_buf(), source })?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate(path.to_path_buf()));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
