//! Whether an https site's certificate is one a browser would trust.
//!
//! The prober's handshake accepts every certificate (a monitor must still
//! reach a site whose certificate is broken, and record its status and
//! expiry); once the handshake is done, the chain the server presented is
//! verified here with rustls' own WebPKI verifier, against the system's
//! roots plus `probe.extra_ca_files`, for the name the probe asked for. So
//! an untrusted certificate is a verdict in the record, never a transport
//! error.
//!
//! The roots are the system's trust store (Debian's `/etc/ssl/certs`, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`): the CAs an administrator added with
//! `update-ca-certificates` count, as they did for the old script's curl.
//! A system without a store (a minimal container image) falls back to the
//! Mozilla roots built into the binary, with a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use livehead_proto::v1::CertTrust;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

/// Longest `cert_error` sent, in bytes (the collector refuses text over
/// its `limits.max_text_bytes`, 2,048 by default). A name mismatch lists
/// every name of the certificate, which can be long.
pub const MAX_CERT_ERROR_BYTES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("probe.extra_ca_files: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("probe.extra_ca_files: {path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error("probe.extra_ca_files: no certificate of {path} is usable as a trust anchor")]
    Unusable { path: PathBuf },
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// A certificate's verdict: its trust, and why not (one line, empty when
/// trusted). The default is "not checked".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub trust: CertTrust,
    pub error: String,
}

/// Verifies presented chains; cheap to share (one per prober).
#[derive(Debug, Clone)]
pub struct CertChecker {
    verifier: Arc<WebPkiServerVerifier>,
}

impl CertChecker {
    /// The system's roots plus the certificates of `extra_ca_files` (PEM).
    /// A file that cannot be read, holds no certificate or none usable as a
    /// root is an error: a configured CA silently ignored would turn its
    /// sites' certificates "unknown issuer".
    pub fn load(extra_ca_files: &[PathBuf]) -> Result<Self, TrustError> {
        let mut roots = system_roots();
        for path in extra_ca_files {
            add_ca_file(&mut roots, path)?;
        }
        Self::with_roots(roots)
    }

    pub fn with_roots(roots: RootCertStore) -> Result<Self, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        Ok(Self { verifier })
    }

    /// The verdict on `chain` (leaf first, as presented) for `name` at `now`.
    pub fn verdict(
        &self,
        chain: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Verdict {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return untrusted(CertTrust::Invalid, "the server presented no certificate");
        };
        match self
            .verifier
            .verify_server_cert(leaf, intermediates, name, &[], now)
        {
            Ok(_) => Verdict {
                trust: CertTrust::Trusted,
                error: String::new(),
            },
            Err(error) => untrusted(classify(&error, leaf), &error.to_string()),
        }
    }
}

fn untrusted(trust: CertTrust, why: &str) -> Verdict {
    Verdict {
        trust,
        error: one_line(why, MAX_CERT_ERROR_BYTES),
    }
}

/// The verdict a verification error means. A leaf whose issuer is unknown
/// and that names itself as issuer is self-signed (a trusted self-signed
/// root would have verified).
pub fn classify(error: &rustls::Error, leaf: &[u8]) -> CertTrust {
    let rustls::Error::InvalidCertificate(error) = error else {
        return CertTrust::Invalid;
    };
    match error {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => CertTrust::Expired,
        CertificateError::UnknownIssuer
            if livehead_common::tls::is_self_issued(leaf).unwrap_or(false) =>
        {
            CertTrust::SelfSigned
        }
        CertificateError::UnknownIssuer => CertTrust::UnknownIssuer,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            CertTrust::NameMismatch
        }
        _ => CertTrust::Invalid,
    }
}

/// `text` on one line (control characters as spaces), at most `max` bytes
/// (cut on a character boundary).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The system's trust store, or the bundled Mozilla roots when it has none.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "system trust store: a certificate source could not be read");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        tracing::warn!(
            ignored,
            "no system trust store (install ca-certificates): https probes verify \
             against the Mozilla roots built into livehead"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        tracing::debug!(added, ignored, "system trust store loaded");
    }
    roots
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TrustError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TrustError::Unusable {
            path: path.to_owned(),
        });
    }
    tracing::info!(path = %path.display(), added, "extra CA certificates trusted by https probes");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_kind() {
        let invalid = |e| rustls::Error::InvalidCertificate(e);
        let leaf = b"not DER";
        assert_eq!(
            classify(&invalid(CertificateError::Expired), leaf),
            CertTrust::Expired
        );
        assert_eq!(
            classify(&invalid(CertificateError::NotValidYet), leaf),
            CertTrust::Expired
        );
        assert_eq!(
            classify(&invalid(CertificateError::UnknownIssuer), leaf),
            CertTrust::UnknownIssuer,
            "a leaf that cannot be read is not called self-signed"
        );
        assert_eq!(
            classify(&invalid(CertificateError::NotValidForName), leaf),
            CertTrust::NameMismatch
        );
        for other in [
            CertificateError::BadSignature,
            CertificateError::Revoked,
            CertificateError::InvalidPurpose,
            CertificateError::BadEncoding,
        ] {
            assert_eq!(classify(&invalid(other), leaf), CertTrust::Invalid);
        }
        assert_eq!(
            classify(&rustls::Error::DecryptError, leaf),
            CertTrust::Invalid
        );
    }

    #[test]
    fn errors_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc", 100), "a b c");
        assert_eq!(one_line("ééé", 5), "éé");
        assert_eq!(one_line(&"x".repeat(600), MAX_CERT_ERROR_BYTES).len(), 512);
    }

    #[test]
    fn an_empty_chain_is_invalid() {
        let checker = CertChecker::with_roots({
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        })
        .expect("checker");
        let name = ServerName::try_from("example.com").expect("name");
        let verdict = checker.verdict(&[], &name, UnixTime::now());
        assert_eq!(verdict.trust, CertTrust::Invalid);
        assert!(!verdict.error.is_empty());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            CertChecker::load(&[missing]),
            Err(TrustError::Read { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").expect("write");
        assert!(matches!(
            CertChecker::load(&[empty]),
            Err(TrustError::Empty { .. })
        ));
    }
}
