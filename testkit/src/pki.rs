//! Dev PKI written to a temporary directory, the way `livehead certs` writes it.

use std::path::{Path, PathBuf};

use livehead_common::certs::{DevCa, Usage, write_dev_pki};
use livehead_common::tls::TlsFiles;

/// A CA with a collector certificate and agent certificates, on disk.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// CA, collector certificate for localhost/127.0.0.1, and one client
    /// certificate per agent name.
    pub fn new(agents: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let agents: Vec<String> = agents.iter().map(|s| (*s).to_owned()).collect();
        write_dev_pki(dir.path(), &[], &agents).expect("dev PKI");
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn collector(&self) -> TlsFiles {
        TlsFiles::in_dir(self.dir(), "collector")
    }

    pub fn agent(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(self.dir(), &format!("agent-{name}"))
    }

    /// Client files for `name` signed by a different CA; the collector must
    /// refuse them. The CA file is ours, so the client still trusts the server.
    pub fn foreign_agent(&self, name: &str) -> TlsFiles {
        let other = DevCa::generate("foreign CA").expect("foreign CA");
        let pem = other.issue(name, &[], Usage::Client).expect("foreign cert");
        let cert = self.write(&format!("foreign-{name}.pem"), &pem.cert);
        let key = self.write(&format!("foreign-{name}-key.pem"), &pem.key);
        TlsFiles {
            ca: self.dir().join("ca.pem"),
            cert,
            key,
            ..TlsFiles::default()
        }
    }

    /// Client files whose certificate, signed by this CA, names the agent by
    /// its common name `cn` alone (no subject alternative name), whatever it
    /// holds: what a careless or hostile CA operator could issue.
    pub fn agent_with_common_name(&self, file_stem: &str, cn: &str) -> TlsFiles {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
        let read = |name: &str| std::fs::read_to_string(self.dir().join(name)).expect("CA file");
        let ca_key = KeyPair::from_pem(&read("ca-key.pem")).expect("CA key");
        let issuer = Issuer::from_ca_cert_pem(&read("ca.pem"), ca_key).expect("CA");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        TlsFiles {
            ca: self.dir().join("ca.pem"),
            cert: self.write(&format!("{file_stem}.pem"), &cert.pem()),
            key: self.write(&format!("{file_stem}-key.pem"), &key.serialize_pem()),
            ..TlsFiles::default()
        }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    }
}

/// A directory laid out as kubelet writes a Secret volume, which is how
/// cert-manager's renewals reach a pod: `ca.pem` → `..data/ca.pem`, `..data`
/// → `..<n>`, and each renewal a new `..<n+1>` directory swapped in by
/// renaming a new `..data` symlink over the old one, so a reader sees
/// either every old file or every new one.
pub struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    /// An empty volume in `dir` (created); [`SecretVolume::publish`] fills it.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("volume directory");
        Self {
            dir: dir.to_owned(),
            version: 0,
        }
    }

    /// The files of the volume as a TLS side reads them.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, "tls")
    }

    /// Swaps in a new version holding the CA bundle, certificate and key.
    pub fn publish(&mut self, ca_bundle: &str, cert: &str, key: &str) {
        use std::os::unix::fs::symlink;
        self.version += 1;
        let data = format!("..{}", self.version);
        let version_dir = self.dir.join(&data);
        std::fs::create_dir(&version_dir).expect("version directory");
        for (name, text) in [
            ("ca.pem", ca_bundle),
            ("tls.pem", cert),
            ("tls-key.pem", key),
        ] {
            std::fs::write(version_dir.join(name), text).expect("write PEM");
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).expect("file symlink");
            }
        }
        let staged = self.dir.join("..data_tmp");
        symlink(&data, &staged).expect("data symlink");
        std::fs::rename(&staged, self.dir.join("..data")).expect("swap ..data");
    }
}
