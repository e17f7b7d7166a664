//! All TLS set-up of livehead in one place: the collector's mTLS server, the
//! agent's mTLS client, and reading the peer's identity from its certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub mod live;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    NotPem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("peer certificate is not valid X.509: {0}")]
    BadPeerCert(String),
    #[error("peer certificate carries no DNS name nor common name")]
    NoPeerName,
}

/// Where the PEM files of one side of an mTLS connection live, and how
/// their renewal in place is followed ([`live::LiveTls`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate(s) the peer's certificate must chain to.
    pub ca: PathBuf,
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
    /// How often the three files are read again; changed content is loaded
    /// for the next connections (a bad one is refused and the old material
    /// kept). 0 turns reloading off. Default 30s.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// After new material is loaded, the streams opened with the old one
    /// are closed at a random moment within this time, so that they
    /// reconnect with the new certificates without all doing it at once.
    /// Default 5m.
    #[serde(default = "default_rotation_grace", with = "humantime_serde")]
    pub rotation_grace: Duration,
}

/// Reading three small files every 30 s costs nothing, and a renewal is
/// followed well before the old certificate expires.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Long enough to spread a fleet's reconnections, short compared with a
/// certificate's lifetime.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(300);

fn default_reload_interval() -> Duration {
    DEFAULT_RELOAD_INTERVAL
}

fn default_rotation_grace() -> Duration {
    DEFAULT_ROTATION_GRACE
}

impl Default for TlsFiles {
    fn default() -> Self {
        Self {
            ca: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            rotation_grace: DEFAULT_ROTATION_GRACE,
        }
    }
}

impl TlsFiles {
    /// The three files of a directory written by `livehead certs` for `stem`
    /// ("collector" or "agent-<name>").
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
            ..Self::default()
        }
    }

    fn load(&self) -> Result<(Certificate, Identity), TlsError> {
        let ca = read_pem(&self.ca, "CA certificate", "CERTIFICATE")?;
        let cert = read_pem(&self.cert, "certificate", "CERTIFICATE")?;
        let key = read_pem(&self.key, "private key", "PRIVATE KEY")?;
        Ok((Certificate::from_pem(ca), Identity::from_pem(cert, key)))
    }
}

/// Server side: present our certificate and require a client certificate
/// chaining to `files.ca`; a client without one fails the handshake. ALPN
/// offers `h2` only, as gRPC needs (and as tonic's own server TLS does).
///
/// The collector runs the handshake itself ([`TlsAcceptor`]) rather than
/// through tonic, so that it can bound the handshake's time.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in pem_certs(&files.ca, "CA certificate")? {
        roots
            .add(ca)
            .map_err(|e| invalid("CA certificate", &files.ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid("CA certificate", &files.ca, e))?;
    let chain = pem_certs(&files.cert, "certificate")?;
    read_pem(&files.key, "private key", "PRIVATE KEY")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| invalid("private key", &files.key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("certificate", &files.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid("certificate", &files.cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The server side of handshakes, each bounded in time: a client that
/// connects and stalls must not hold a connection slot for ever.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    timeout: Duration,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not done after {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake: {0}")]
    Failed(#[from] std::io::Error),
}

impl TlsAcceptor {
    pub fn new(config: Arc<rustls::ServerConfig>, timeout: Duration) -> Self {
        Self {
            inner: tokio_rustls::TlsAcceptor::from(config),
            timeout,
        }
    }

    /// Runs the handshake on `conn` within the timeout.
    pub async fn accept<C: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: C,
    ) -> Result<tokio_rustls::server::TlsStream<C>, HandshakeError> {
        tokio::time::timeout(self.timeout, self.inner.accept(conn))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.timeout))?
            .map_err(HandshakeError::Failed)
    }
}

fn invalid(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Every certificate of a PEM file (checked to hold at least one).
fn pem_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path, what, "CERTIFICATE")?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, e))
}

/// Client side: verify the server against `files.ca` under `server_name`, and
/// present our certificate.
pub fn client_config(files: &TlsFiles, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
    let (ca, identity) = files.load()?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity)
        .domain_name(server_name))
}

/// The identity a certificate names: its first DNS subject alternative name,
/// else its common name.
pub fn peer_identity(leaf_der: &[u8]) -> Result<String, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(leaf_der).map_err(|e| TlsError::BadPeerCert(e.to_string()))?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                return Ok((*dns).to_owned());
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned))
        .ok_or(TlsError::NoPeerName)
}

/// Unix milliseconds at which a DER certificate expires.
pub fn not_after_ms(der: &[u8]) -> Result<i64, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::BadPeerCert(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp() * 1000)
}

/// Whether a DER certificate names itself as its issuer (issuer ==
/// subject): a self-signed certificate, or a root.
pub fn is_self_issued(der: &[u8]) -> Result<bool, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::BadPeerCert(e.to_string()))?;
    Ok(cert.issuer().as_raw() == cert.subject().as_raw())
}

/// Selects ring as rustls' process-wide provider; called once by the binary
/// before any TLS is set up. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read_pem(path: &Path, what: &'static str, expected: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    check_pem(bytes, path, what, expected)
}

/// `bytes` (read from `path`) when they hold a PEM block of `expected`.
fn check_pem(
    bytes: Vec<u8>,
    path: &Path,
    what: &'static str,
    expected: &'static str,
) -> Result<Vec<u8>, TlsError> {
    let text = String::from_utf8_lossy(&bytes);
    // Keys come as "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY".
    let found = text.contains(&format!("-----BEGIN {expected}"))
        || (expected == "PRIVATE KEY" && text.contains("PRIVATE KEY-----"));
    if !found {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
            expected,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{DevCa, Usage};

    fn leaf_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("PEM certificate")
            .to_vec()
    }

    #[test]
    fn identity_is_the_certificate_name() {
        let ca = DevCa::generate("test CA").expect("ca");
        let pem = ca.issue("node-7", &[], Usage::Client).expect("leaf");
        assert_eq!(peer_identity(&leaf_der(&pem.cert)).expect("name"), "node-7");
        assert!(not_after_ms(&leaf_der(&pem.cert)).expect("expiry") > 0);
    }

    #[test]
    fn missing_key_file_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = TlsFiles::in_dir(dir.path(), "collector");
        let err = server_config(&files).expect_err("no files");
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}
