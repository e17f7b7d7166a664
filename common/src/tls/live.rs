//! TLS material that follows its files: certificates renewed in place (by
//! cert-manager, Vault or a person) are used for new connections without a
//! restart, and the streams opened before are closed within
//! `tls.rotation_grace` so that they reconnect with the new certificates.
//!
//! The files are polled (every `tls.reload_interval`) and compared by
//! content, not watched with inotify: Kubernetes updates a Secret volume by
//! swapping a `..data` symlink to a new directory, which a watch on the
//! file paths misses (the watched inode is the old target, which never
//! changes), and mtimes are unreliable there and on network file systems.
//! Reading three small files every 30 s costs nothing and works everywhere.
//!
//! New content is only taken once it is whole and consistent: a certificate
//! and key written one after the other are seen, for one poll, as a pair
//! that does not match, which is refused like any bad file (named in the
//! log, counted in `tls_reload_failures_total{file}`) while the old material
//! stays in use; the next poll takes the matching pair.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rustls::RootCertStore;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{TlsError, TlsFiles, check_pem, invalid};
use crate::Shutdown;

/// One consistent set of CA bundle, certificate chain and key, parsed.
pub struct Material {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    certified: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
    digest: [u8; 32],
}

/// The raw content of the three files.
struct FileBytes {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl FileBytes {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |path: &Path, what| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            ca: read(&files.ca, "CA certificate")?,
            cert: read(&files.cert, "certificate")?,
            key: read(&files.key, "private key")?,
        })
    }

    /// The files read twice in a row with the same content: a renewal that
    /// swaps them between two reads of one pass would otherwise pair a new
    /// certificate with an old key. Gives up after a few passes (a writer
    /// that never stops), leaving the checks to refuse a mixed set.
    fn read_settled(files: &TlsFiles) -> Result<Self, TlsError> {
        let mut last = Self::read(files)?;
        for _ in 0..3 {
            let again = Self::read(files)?;
            if again.digest() == last.digest() {
                return Ok(again);
            }
            last = again;
        }
        Ok(last)
    }

    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [&self.ca, &self.cert, &self.key] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }
}

impl Material {
    /// Reads and checks the three files.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::parse(files, FileBytes::read(files)?)
    }

    /// Checks what the files hold: a CA bundle with at least one usable
    /// certificate, a certificate chain, and a key that matches the chain's
    /// first certificate.
    fn parse(files: &TlsFiles, bytes: FileBytes) -> Result<Self, TlsError> {
        let digest = bytes.digest();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_pem = check_pem(bytes.ca, &files.ca, "CA certificate", "CERTIFICATE")?;
        let mut roots = RootCertStore::empty();
        for ca in certs_in(&ca_pem, &files.ca, "CA certificate")? {
            roots
                .add(ca)
                .map_err(|e| invalid("CA certificate", &files.ca, e))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| invalid("CA certificate", &files.ca, e))?;
        let cert_pem = check_pem(bytes.cert, &files.cert, "certificate", "CERTIFICATE")?;
        let chain = certs_in(&cert_pem, &files.cert, "certificate")?;
        let key_pem = check_pem(bytes.key, &files.key, "private key", "PRIVATE KEY")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| invalid("private key", &files.key, e))?;
        let certified = certified_key(files, chain, key, &provider)?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
            certified: Arc::new(certified),
            verifier,
            digest,
        })
    }

    /// A client configuration presenting this certificate and trusting this
    /// CA bundle, for a server named `server_name`.
    pub fn client_tls(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name)
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("digest", &hex::encode(&self.digest[..8]))
            .finish_non_exhaustive()
    }
}

/// The certificates of a PEM file; none is an error (a CA bundle emptied by
/// a broken renewal would otherwise trust nothing, or everything).
fn certs_in(
    pem: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    // Base64 that is not X.509 would otherwise only fail later, blamed on
    // whatever is checked next (the key).
    for cert in &certs {
        X509Certificate::from_der(cert).map_err(|e| invalid(what, path, e))?;
    }
    Ok(certs)
}

fn certified_key(
    files: &TlsFiles,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    match CertifiedKey::from_der(chain, key, provider) {
        Ok(certified) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key: files.key.clone(),
            cert: files.cert.clone(),
        }),
        Err(e @ rustls::Error::InvalidCertificate(_)) => {
            Err(invalid("certificate", &files.cert, e))
        }
        Err(e) => Err(invalid("private key", &files.key, e)),
    }
}

/// Counters of the reloads, on the component's `/metrics`.
#[derive(Clone)]
pub struct ReloadMetrics {
    /// New material loaded from changed files.
    pub reloads: IntCounter,
    /// Changed files refused, by `file` (ca, cert, key); each bad content
    /// counts once, however many polls see it.
    pub failures: IntCounterVec,
}

impl ReloadMetrics {
    pub fn new(registry: &Registry) -> Self {
        use crate::metrics::register;
        Self {
            reloads: register(
                registry,
                IntCounter::new(
                    "tls_reloads_total",
                    "Times changed TLS files were loaded for new connections",
                )
                .expect("valid metric"),
            ),
            failures: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "tls_reload_failures_total",
                        "Changed TLS files refused (the old material stays in use)",
                    ),
                    &["file"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// What one poll of the files did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// Same content as the material in use.
    Unchanged,
    /// New material in use.
    Rotated,
    /// Changed content refused; the old material stays in use.
    Refused,
}

/// The material in use for one side's TLS files, reloaded when they change.
pub struct LiveTls {
    files: TlsFiles,
    current: watch::Sender<Arc<Material>>,
    /// What the last refusal was about (content digest or read error), so a
    /// bad file is reported once, not at every poll.
    refused: Mutex<Option<String>>,
    metrics: ReloadMetrics,
}

impl LiveTls {
    /// Loads the files; at start a bad file is an error (there is no old
    /// material to keep).
    pub fn load(files: &TlsFiles, metrics: ReloadMetrics) -> Result<Arc<Self>, TlsError> {
        let material = Material::load(files)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: watch::Sender::new(Arc::new(material)),
            refused: Mutex::new(None),
            metrics,
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The material new connections use now.
    pub fn current(&self) -> Arc<Material> {
        self.current.borrow().clone()
    }

    /// A client configuration from the current files.
    pub fn client_tls(&self, server_name: &str) -> ClientTlsConfig {
        self.current().client_tls(server_name)
    }

    /// Reads the files again and takes their content when it changed and
    /// is good.
    pub fn reload(&self) -> Reloaded {
        let bytes = match FileBytes::read_settled(&self.files) {
            Ok(bytes) => bytes,
            Err(error) => return self.refuse(format!("read: {error}"), &error),
        };
        let digest = bytes.digest();
        if digest == self.current.borrow().digest {
            self.forget_refusal();
            return Reloaded::Unchanged;
        }
        match Material::parse(&self.files, bytes) {
            Ok(material) => {
                self.current.send_replace(Arc::new(material));
                self.forget_refusal();
                self.metrics.reloads.inc();
                tracing::info!(
                    ca = %self.files.ca.display(),
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    rotation_grace = ?self.files.rotation_grace,
                    "TLS files changed: new connections use them, older streams close within the grace"
                );
                Reloaded::Rotated
            }
            Err(error) => self.refuse(hex::encode(digest), &error),
        }
    }

    /// Logs and counts a refusal, once per distinct `cause`.
    fn refuse(&self, cause: String, error: &TlsError) -> Reloaded {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.as_deref() == Some(cause.as_str()) {
            return Reloaded::Refused;
        }
        *refused = Some(cause);
        let file = self.file_label(error);
        self.metrics.failures.with_label_values(&[file]).inc();
        tracing::error!(
            file,
            error = %error_chain(error),
            "changed TLS files refused; the old certificates stay in use"
        );
        Reloaded::Refused
    }

    fn forget_refusal(&self) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Which of the three files an error is about.
    fn file_label(&self, error: &TlsError) -> &'static str {
        let path = match error {
            TlsError::Read { path, .. }
            | TlsError::NotPem { path, .. }
            | TlsError::Invalid { path, .. } => path,
            TlsError::KeyMismatch { key, .. } => key,
            _ => return "cert",
        };
        if *path == self.files.ca {
            "ca"
        } else if *path == self.files.key {
            "key"
        } else {
            "cert"
        }
    }

    /// Polls the files every `reload_interval` until `shutdown`; nothing
    /// when it is zero.
    pub fn spawn_polling(self: &Arc<Self>, shutdown: Shutdown) {
        let every = self.files.reload_interval;
        if every.is_zero() {
            return;
        }
        let live = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                let live = Arc::clone(&live);
                // File reads block; they must not stall the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || live.reload()).await;
            }
        });
    }

    /// What a stream opened now waits on to know when to close.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            changed: Some(self.current.subscribe()),
            grace: self.files.rotation_grace,
        }
    }

    /// A server configuration whose certificate and client CA bundle are,
    /// at each handshake, the current ones. ALPN offers `h2` only, as gRPC
    /// needs. No session resumption: every connection's client certificate
    /// is checked against the CA bundle in use at that moment.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("certificate", &self.files.cert, e))?
            .with_client_cert_verifier(Arc::new(CurrentVerifier(self.current.subscribe())))
            .with_cert_resolver(Arc::new(CurrentCert(self.current.subscribe())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Ok(Arc::new(config))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// When a stream opened with some material must close: at a random moment
/// within the grace after the material next changes.
pub struct Rotation {
    changed: Option<watch::Receiver<Arc<Material>>>,
    grace: Duration,
}

impl Rotation {
    /// For streams without TLS: never due.
    pub fn never() -> Self {
        Self {
            changed: None,
            grace: Duration::ZERO,
        }
    }

    /// Resolves once the stream should close; never when the material does
    /// not change.
    pub async fn due(self) {
        let Some(mut changed) = self.changed else {
            return std::future::pending().await;
        };
        if changed.changed().await.is_err() {
            return std::future::pending().await;
        }
        // Spread: a fleet's streams must not all reconnect in the same second.
        tokio::time::sleep(self.grace.mul_f64(rand::random::<f64>())).await;
    }
}

/// Presents the current certificate.
struct CurrentCert(watch::Receiver<Arc<Material>>);

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.borrow().certified.clone())
    }
}

/// Checks client certificates against the current CA bundle.
struct CurrentVerifier(watch::Receiver<Arc<Material>>);

impl CurrentVerifier {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.0.borrow().verifier.clone()
    }
}

impl fmt::Debug for CurrentVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentVerifier")
    }
}

impl ClientCertVerifier for CurrentVerifier {
    /// No hints: they would borrow from material that may be replaced, and
    /// with none a client sends the one certificate it has (RFC 8446 4.2.4).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
