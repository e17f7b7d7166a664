//! Certificate trust of https probes, against local https servers whose
//! certificates the test makes with its own CA: trusted (the CA configured
//! in `probe.extra_ca_files`), expired, for another name, from an unknown
//! issuer, self-signed. Each answer is still recorded (status, expiry).

use std::path::PathBuf;

use http::Uri;
use livehead_agent::probe::{
    CertTrust, ProbeConfig, ProbeError, ProbeMethod, ProbeResult, Prober, Target,
};
use livehead_testkit::sites::{ERROR_SITE, FakeSites, OK_SITE};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA of the test's own.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Its PEM in a file, for `probe.extra_ca_files`.
    fn file(&self, dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &self.pem).expect("write the CA");
        path
    }
}

type Served = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn leaf_params(names: &[&str], expired: bool) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    params
}

fn issued(ca: &Ca, names: &[&str], expired: bool) -> Served {
    let key = KeyPair::generate().expect("leaf key");
    let cert = leaf_params(names, expired)
        .signed_by(&key, &ca.issuer)
        .expect("leaf certificate");
    served(cert.der().clone(), &key)
}

fn self_signed(names: &[&str]) -> Served {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(names, false)
        .self_signed(&key)
        .expect("self-signed certificate");
    served(cert.der().clone(), &key)
}

fn served(cert: CertificateDer<'static>, key: &KeyPair) -> Served {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert], key)
}

/// A prober trusting the system's roots and `ca`.
fn prober(ca: &Ca, dir: &tempfile::TempDir) -> Prober {
    Prober::new(ProbeConfig {
        extra_ca_files: vec![ca.file(dir)],
        ..ProbeConfig::default()
    })
    .expect("prober")
}

/// Probes `site` on a local https server presenting `served`.
async fn probe(prober: &Prober, site: &str, served: Served) -> (ProbeResult, FakeSites) {
    let (chain, key) = served;
    let sites = FakeSites::start_tls_with(chain, key).await;
    let target = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: true,
    };
    (prober.probe(site, &target).await, sites)
}

/// The answer is recorded whatever the verdict, with the expiry.
fn assert_answered(result: &ProbeResult, status: u32, sites: &FakeSites) {
    assert_eq!(result.status, status, "{result:?}");
    assert_eq!(result.error(), ProbeError::Unspecified, "{result:?}");
    assert_eq!(result.method(), ProbeMethod::Head, "{result:?}");
    let expiry = sites.cert_not_after_ms().expect("TLS server");
    assert_eq!(
        Some(result.cert_expiry_ms),
        u64::try_from(expiry).ok(),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_a_configured_ca_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let prober = prober(&ca, &dir);
    let (result, sites) = probe(&prober, OK_SITE, issued(&ca, &[OK_SITE], false)).await;
    assert_answered(&result, 200, &sites);
    assert_eq!(result.cert_trust(), CertTrust::Trusted);
    assert_eq!(result.cert_error, "");
    // The next probe of the site may resume the TLS session: the chain is
    // still known and judged.
    let target = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: true,
    };
    let again = prober.probe(OK_SITE, &target).await;
    assert_answered(&again, 200, &sites);
    assert_eq!(again.cert_trust(), CertTrust::Trusted);
}

#[tokio::test]
async fn without_its_ca_configured_the_issuer_is_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = Ca::new("trusted CA");
    let unknown = Ca::new("unknown CA");
    let prober = prober(&trusted, &dir);
    let (result, sites) = probe(&prober, OK_SITE, issued(&unknown, &[OK_SITE], false)).await;
    assert_answered(&result, 200, &sites);
    assert_eq!(result.cert_trust(), CertTrust::UnknownIssuer);
    assert!(result.cert_error.contains("UnknownIssuer"), "{result:?}");
}

#[tokio::test]
async fn an_expired_certificate_is_expired_and_its_expiry_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let prober = prober(&ca, &dir);
    let (result, sites) = probe(&prober, OK_SITE, issued(&ca, &[OK_SITE], true)).await;
    assert_answered(&result, 200, &sites);
    // 2021-01-01T00:00:00Z
    assert_eq!(result.cert_expiry_ms, 1_609_459_200_000);
    assert_eq!(result.cert_trust(), CertTrust::Expired);
    assert!(result.cert_error.contains("expired"), "{result:?}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let prober = prober(&ca, &dir);
    // The site answers 500: the status is recorded beside the verdict.
    let (result, sites) = probe(&prober, ERROR_SITE, issued(&ca, &[OK_SITE], false)).await;
    assert_answered(&result, 500, &sites);
    assert_eq!(result.cert_trust(), CertTrust::NameMismatch);
    assert!(
        result.cert_error.contains("not valid for name"),
        "{result:?}"
    );
    assert!(!result.cert_error.contains('\n'));
}

#[tokio::test]
async fn a_self_signed_certificate_is_self_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let prober = prober(&ca, &dir);
    let (result, sites) = probe(&prober, OK_SITE, self_signed(&[OK_SITE])).await;
    assert_answered(&result, 200, &sites);
    assert_eq!(result.cert_trust(), CertTrust::SelfSigned);
    assert!(!result.cert_error.is_empty());
}

#[tokio::test]
async fn an_https_url_is_verified_for_its_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let prober = prober(&ca, &dir);
    let (chain, key) = issued(&ca, &["localhost"], false);
    let sites = FakeSites::start_tls_with(chain, key).await;
    let url = format!("https://localhost:{}/", sites.port());
    let target = Target::Url(url.parse::<Uri>().expect("URL"));
    let result = prober.probe("localhost", &target).await;
    assert_answered(&result, 200, &sites);
    assert_eq!(result.cert_trust(), CertTrust::Trusted);
}

#[tokio::test]
async fn plain_http_and_failed_handshakes_are_not_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let prober = prober(&ca, &dir);
    let sites = FakeSites::start().await;
    let plain = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: false,
    };
    let result = prober.probe(OK_SITE, &plain).await;
    assert_eq!(result.status, 200);
    assert_eq!(result.cert_trust(), CertTrust::Unspecified);
    assert_eq!(result.cert_error, "");
    // https spoken to a plain http port: no certificate was seen.
    let tls = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: true,
    };
    let result = prober.probe(OK_SITE, &tls).await;
    assert_eq!(result.error(), ProbeError::Tls);
    assert_eq!(result.cert_trust(), CertTrust::Unspecified);
}
