//! A development PKI: one CA, a server certificate for collectors and a
//! client certificate per agent, so mTLS works out of the box (`livehead certs`).
//! Production deployments bring their own CA; nothing here is required then.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent name {name:?} is not an agent id (the collector would refuse it): {source}")]
    AgentName {
        name: String,
        source: crate::host::HostNameError,
    },
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A collector: TLS server.
    Server,
    /// An agent: TLS client; its name is the agent's identity.
    Client,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority able to issue leaf certificates.
pub struct DevCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and key (to issue more certificates later).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate whose common name is `name` and whose subject
    /// alternative names are `name` plus `extra_names` (IP addresses allowed).
    pub fn issue(&self, name: &str, extra_names: &[&str], usage: Usage) -> Result<Pem, CertError> {
        let key = KeyPair::generate()?;
        let mut sans = vec![name.to_owned()];
        sans.extend(extra_names.iter().map(|s| (*s).to_owned()));
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Files written by [`write_dev_pki`].
#[derive(Debug, Clone)]
pub struct DevPkiFiles {
    pub dir: PathBuf,
    pub written: Vec<PathBuf>,
}

/// Writes (or completes) a dev PKI in `dir`: `ca.pem`/`ca-key.pem` (kept when
/// present, so more agents can be added later), `collector.pem`/`collector-key.pem`
/// valid for `collector_names` plus localhost, and `agent-<name>.pem`/`agent-<name>-key.pem`.
pub fn write_dev_pki(
    dir: &Path,
    collector_names: &[String],
    agent_names: &[String],
) -> Result<DevPkiFiles, CertError> {
    for name in agent_names {
        crate::host::check_host_name(name).map_err(|source| CertError::AgentName {
            name: name.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let (ca, created) = load_or_create_ca(dir)?;
    let mut written = Vec::new();
    if created {
        written.extend([dir.join("ca.pem"), dir.join("ca-key.pem")]);
    }
    let mut names: Vec<&str> = collector_names.iter().map(String::as_str).collect();
    for default in ["localhost", "127.0.0.1", "::1"] {
        if !names.contains(&default) {
            names.push(default);
        }
    }
    let server = ca.issue("livehead-collector", &names, Usage::Server)?;
    written.extend(write_pair(dir, "collector", &server)?);
    for agent in agent_names {
        let client = ca.issue(agent, &[], Usage::Client)?;
        written.extend(write_pair(dir, &format!("agent-{agent}"), &client)?);
    }
    Ok(DevPkiFiles {
        dir: dir.to_owned(),
        written,
    })
}

/// The CA in `dir`, and whether it was created now.
fn load_or_create_ca(dir: &Path) -> Result<(DevCa, bool), CertError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if cert_path.exists() && key_path.exists() {
        let cert = read(&cert_path)?;
        let key = read(&key_path)?;
        return Ok((DevCa::from_pem(&cert, &key)?, false));
    }
    let ca = DevCa::generate("livehead dev CA")?;
    write_file(&cert_path, ca.cert_pem())?;
    write_secret(&key_path, ca.key_pem())?;
    Ok((ca, true))
}

fn write_pair(dir: &Path, stem: &str, pem: &Pem) -> Result<[PathBuf; 2], CertError> {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    write_file(&cert, &pem.cert)?;
    write_secret(&key, &pem.key)?;
    Ok([cert, key])
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &str) -> Result<(), CertError> {
    std::fs::write(path, contents).map_err(|source| CertError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Private keys are readable by their owner only.
fn write_secret(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_the_collector_would_refuse_are_refused_here() {
        let dir = tempfile::tempdir().expect("tmp");
        for bad in ["", "push:pods", "a b", "*"] {
            let err = write_dev_pki(dir.path(), &[], &[bad.to_owned()]).expect_err(bad);
            assert!(matches!(err, CertError::AgentName { .. }), "{bad:?}: {err}");
        }
        let ok = write_dev_pki(dir.path(), &[], &["node-1".to_owned()]).expect("valid name");
        assert!(ok.written.iter().any(|p| p.ends_with("agent-node-1.pem")));
    }
}
