//! The reload logic on files in a temporary directory, without sockets.

use super::*;
use crate::certs::{DevCa, Usage};

struct Dir {
    dir: tempfile::TempDir,
    files: TlsFiles,
}

impl Dir {
    /// CA, server certificate and key of `ca`, written.
    fn new(ca: &DevCa) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let files = TlsFiles::in_dir(dir.path(), "collector");
        let this = Self { dir, files };
        this.write_all(ca, ca.cert_pem());
        this
    }

    fn write_all(&self, issuer: &DevCa, bundle: &str) {
        let pem = issuer.issue("localhost", &[], Usage::Server).expect("leaf");
        self.write(&self.files.ca, bundle);
        self.write(&self.files.cert, &pem.cert);
        self.write(&self.files.key, &pem.key);
    }

    fn write(&self, path: &Path, text: &str) {
        assert!(path.starts_with(self.dir.path()));
        std::fs::write(path, text).expect("write");
    }
}

fn live(dir: &Dir) -> (Arc<LiveTls>, ReloadMetrics) {
    let metrics = ReloadMetrics::new(&Registry::new());
    let live = LiveTls::load(&dir.files, metrics.clone()).expect("initial load");
    (live, metrics)
}

fn failures(metrics: &ReloadMetrics, file: &str) -> u64 {
    metrics.failures.with_label_values(&[file]).get()
}

#[test]
fn same_content_is_unchanged() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    assert_eq!(live.reload(), Reloaded::Unchanged);
    assert_eq!(metrics.reloads.get(), 0);
}

#[test]
fn good_new_files_swap_and_signal_open_streams() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    let before = live.current().digest;
    let rotation = live.rotation().changed.expect("a receiver");
    let other = DevCa::generate("ca 2").expect("ca");
    dir.write_all(&other, &format!("{}{}", ca.cert_pem(), other.cert_pem()));
    assert_eq!(live.reload(), Reloaded::Rotated);
    assert_ne!(live.current().digest, before);
    assert_eq!(metrics.reloads.get(), 1);
    assert!(rotation.has_changed().expect("sender alive"));
    assert_eq!(live.reload(), Reloaded::Unchanged);
}

#[test]
fn unparsable_certificate_keeps_the_old_and_is_counted_once() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    let before = live.current().digest;
    dir.write(
        &dir.files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(live.current().digest, before);
    assert_eq!(failures(&metrics, "cert"), 1, "one bad content, one count");
    assert_eq!(metrics.reloads.get(), 0);
}

#[test]
fn base64_that_is_not_x509_is_blamed_on_the_certificate() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    dir.write(
        &dir.files.cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(failures(&metrics, "cert"), 1);
    assert_eq!(failures(&metrics, "key"), 0);
}

#[test]
fn key_not_matching_the_certificate_is_refused() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    let before = live.current().digest;
    // A new certificate whose key is not written yet: what a poll between
    // two non-atomic writes sees.
    let pem = ca.issue("localhost", &[], Usage::Server).expect("leaf");
    dir.write(&dir.files.cert, &pem.cert);
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(live.current().digest, before);
    assert_eq!(failures(&metrics, "key"), 1);
    let error = Material::load(&dir.files).expect_err("mismatch");
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    assert!(error.to_string().contains("collector-key.pem"), "{error}");
    // Its key arrives: taken at the next poll.
    dir.write(&dir.files.key, &pem.key);
    assert_eq!(live.reload(), Reloaded::Rotated);
    assert_ne!(live.current().digest, before);
}

#[test]
fn ca_bundle_without_a_certificate_is_refused() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    dir.write(&dir.files.ca, "# emptied by a broken renewal\n");
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(failures(&metrics, "ca"), 1);
    // A bundle with the marker but nothing decodable is refused too.
    dir.write(
        &dir.files.ca,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    );
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(failures(&metrics, "ca"), 2);
}

#[test]
fn a_missing_file_keeps_the_old_and_recovers() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, metrics) = live(&dir);
    let before = live.current().digest;
    std::fs::remove_file(&dir.files.key).expect("rm");
    assert_eq!(live.reload(), Reloaded::Refused);
    assert_eq!(failures(&metrics, "key"), 1);
    assert_eq!(live.current().digest, before);
    dir.write_all(&ca, ca.cert_pem());
    assert_eq!(live.reload(), Reloaded::Rotated);
}

#[test]
fn bad_files_at_start_are_an_error_naming_the_file() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    dir.write(&dir.files.key, "no key here\n");
    let error = LiveTls::load(&dir.files, ReloadMetrics::new(&Registry::new()))
        .err()
        .expect("refused");
    assert!(error.to_string().contains("collector-key.pem"), "{error}");
}

#[test]
fn server_config_builds_from_live_material() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let dir = Dir::new(&ca);
    let (live, _) = live(&dir);
    let config = live.server_config().expect("server config");
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn rotation_is_due_within_the_grace_after_a_change() {
    let ca = DevCa::generate("ca 1").expect("ca");
    let mut dir = Dir::new(&ca);
    dir.files.rotation_grace = Duration::from_secs(60);
    let (live, _) = live(&dir);
    let due = tokio::spawn(live.rotation().due());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!due.is_finished(), "nothing changed yet");
    let other = DevCa::generate("ca 2").expect("ca");
    dir.write_all(&other, other.cert_pem());
    assert_eq!(live.reload(), Reloaded::Rotated);
    tokio::time::timeout(Duration::from_secs(61), due)
        .await
        .expect("due within the grace")
        .expect("task");
}

#[test]
fn reload_settings_have_defaults_and_parse_from_toml() {
    let bare: TlsFiles = toml::from_str("ca = \"c\"\ncert = \"t\"\nkey = \"k\"\n").expect("toml");
    assert_eq!(bare.reload_interval, Duration::from_secs(30));
    assert_eq!(bare.rotation_grace, Duration::from_secs(300));
    let set: TlsFiles = toml::from_str(
        "ca = \"c\"\ncert = \"t\"\nkey = \"k\"\nreload_interval = \"0s\"\nrotation_grace = \"1m\"\n",
    )
    .expect("toml");
    assert_eq!(set.reload_interval, Duration::ZERO);
    assert_eq!(set.rotation_grace, Duration::from_secs(60));
}
