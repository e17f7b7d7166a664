//! The state directory: made on first run, reused afterwards, so a restart
//! keeps its CA, its push token and its data.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use livehead_common::tls::TlsFiles;
use sha2::{Digest, Sha256};

use crate::UpError;

/// Name of the agent `up` runs, i.e. of its client certificate.
pub const AGENT_NAME: &str = "local";
/// Name of the alerter `up --rules` runs: its client certificate, and the
/// identity the collector lets watch.
pub const ALERTER_NAME: &str = "alerter";

/// Where each file of the state directory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub pki: PathBuf,
    pub database: PathBuf,
    pub push_token: PathBuf,
    /// The admin token of `/stats` and the other reads.
    pub admin_token: PathBuf,
    /// The key the dashboard's session cookies are signed with (kept, so a
    /// restart does not sign everyone out).
    pub session_key: PathBuf,
    /// The merged site list (only written when sites are merged).
    pub sites: PathBuf,
    /// The alerter's state (`up --rules`).
    pub alerter: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            pki: dir.join("pki"),
            database: dir.join("livehead.db"),
            push_token: dir.join("push-token"),
            admin_token: dir.join("admin-token"),
            session_key: dir.join("session-key"),
            sites: dir.join("sites.txt"),
            alerter: dir.join("alerter"),
        }
    }

    pub fn collector_tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.pki, "collector")
    }

    pub fn agent_tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.pki, &format!("agent-{AGENT_NAME}"))
    }

    pub fn alerter_tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.pki, &format!("agent-{ALERTER_NAME}"))
    }
}

/// Creates the state directory (mode 0700: it holds keys and the token) if
/// missing; an existing one keeps its mode.
pub fn create_dir(layout: &Layout) -> Result<(), UpError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&layout.dir)
        .map_err(|source| UpError::StateDir {
            path: layout.dir.clone(),
            source,
        })
}

/// Writes the dev PKI unless every file is there already. Leaf certificates
/// are not re-issued on each start, so a restart changes nothing on disk;
/// `write_dev_pki` keeps an existing CA when only a leaf is missing.
pub fn ensure_pki(layout: &Layout) -> Result<bool, UpError> {
    let (collector, agent, alerter) = (
        layout.collector_tls(),
        layout.agent_tls(),
        layout.alerter_tls(),
    );
    let complete = [
        &collector.ca,
        &collector.cert,
        &collector.key,
        &agent.cert,
        &agent.key,
        &alerter.cert,
        &alerter.key,
        &layout.pki.join("ca-key.pem"),
    ]
    .iter()
    .all(|p| p.is_file());
    if complete {
        return Ok(false);
    }
    let files = livehead_common::certs::write_dev_pki(
        &layout.pki,
        &[],
        &[AGENT_NAME.to_owned(), ALERTER_NAME.to_owned()],
    )?;
    tracing::info!(dir = %layout.pki.display(), files = files.written.len(), "dev certificates written");
    Ok(true)
}

/// A token (push or admin): read from its file, or generated (32 random
/// bytes, hex) and written with mode 0600 on first run. Returns (token, created).
pub fn push_token(path: &Path) -> Result<(String, bool), UpError> {
    let err = |source| UpError::PushToken {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // Hand-edited files often end with a newline; nothing else is allowed.
            let token = text.trim();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(UpError::BadPushToken {
                    path: path.to_owned(),
                });
            }
            Ok((token.to_owned(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(err)?;
            file.write_all(format!("{token}\n").as_bytes())
                .map_err(err)?;
            Ok((token, true))
        }
        Err(e) => Err(err(e)),
    }
}

/// SHA-256 of the token text, hex: what the collector's `api.push_tokens` holds
/// (`printf %s "$TOKEN" | sha256sum`).
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn first_run_creates_private_state_and_later_runs_reuse_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(&tmp.path().join("a/state"));
        create_dir(&layout).expect("dir");
        assert_eq!(mode(&layout.dir), 0o700);

        let (token, created) = push_token(&layout.push_token).expect("token");
        assert!(created);
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(mode(&layout.push_token), 0o600);
        let (again, created) = push_token(&layout.push_token).expect("token again");
        assert_eq!((again.as_str(), created), (token.as_str(), false));

        assert!(ensure_pki(&layout).expect("pki"));
        let ca = std::fs::read(layout.pki.join("ca.pem")).expect("ca");
        let leaf = std::fs::read(layout.agent_tls().cert).expect("agent cert");
        assert!(!ensure_pki(&layout).expect("pki again"));
        assert_eq!(std::fs::read(layout.pki.join("ca.pem")).expect("ca"), ca);
        assert_eq!(std::fs::read(layout.agent_tls().cert).expect("leaf"), leaf);

        // A lost leaf is re-issued by the same CA.
        std::fs::remove_file(layout.collector_tls().cert).expect("rm");
        assert!(ensure_pki(&layout).expect("pki repaired"));
        assert_eq!(std::fs::read(layout.pki.join("ca.pem")).expect("ca"), ca);
    }

    #[test]
    fn a_hand_written_token_is_trimmed_and_an_empty_one_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("push-token");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert_eq!(push_token(&path).expect("token").0, "s3cret");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            push_token(&path),
            Err(UpError::BadPushToken { .. })
        ));
    }

    #[test]
    fn the_hash_is_sha256_of_the_text() {
        // printf %s abc | sha256sum
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
