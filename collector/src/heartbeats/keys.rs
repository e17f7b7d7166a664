//! Ping keys: `/ping/<ping-key>/<slug>` names a check by its project's key
//! and its slug. Configured as push and role tokens are, by their SHA-256
//! (`heartbeats.ping_keys`, `LIVEHEAD_PING_KEYS`, `heartbeats.ping_keys_file`),
//! and looked up in constant time by the shared token table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use livehead_common::roles::{TokenError, Tokens};

use crate::config::HeartbeatsConfig;

/// The configuration key of the ping keys, named in their errors.
pub const PING_KEYS: &str = "heartbeats.ping_keys";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("heartbeats.ping_keys_file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("heartbeats.ping_keys_file {path} line {line}: expected project=sha256")]
    Line { path: PathBuf, line: usize },
    #[error("heartbeats.ping_keys: project {project:?} is given twice")]
    Twice { project: String },
}

/// The configured ping keys: project name → the key's hash.
#[derive(Debug, Clone, Default)]
pub struct PingKeys {
    tokens: Tokens,
    projects: Vec<String>,
}

impl PingKeys {
    /// `heartbeats.ping_keys` and the lines of `heartbeats.ping_keys_file`.
    pub fn from_config(config: &HeartbeatsConfig) -> Result<Self, KeysError> {
        let mut keys = config.ping_keys.clone();
        if let Some(path) = &config.ping_keys_file {
            for (project, sha256) in read_file(path)? {
                if keys.insert(project.clone(), sha256).is_some() {
                    return Err(KeysError::Twice { project });
                }
            }
        }
        Self::new(&keys)
    }

    pub fn new(keys: &BTreeMap<String, String>) -> Result<Self, KeysError> {
        let tokens = Tokens::build(
            PING_KEYS,
            keys.iter().map(|(p, h)| (p.as_str(), h.as_str(), ())),
        )?;
        Ok(Self {
            tokens,
            projects: keys.keys().cloned().collect(),
        })
    }

    /// The project whose key `presented` is.
    pub fn project_of(&self, presented: &str) -> Option<&str> {
        self.tokens.verify(presented)
    }

    pub fn has_project(&self, project: &str) -> bool {
        self.projects.iter().any(|p| p == project)
    }
}

fn read_file(path: &Path) -> Result<Vec<(String, String)>, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (project, sha256) = line.split_once('=').ok_or_else(|| KeysError::Line {
            path: path.to_owned(),
            line: index + 1,
        })?;
        pairs.push((project.trim().to_owned(), sha256.trim().to_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn sha(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    #[test]
    fn keys_come_from_the_config_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("# ops keys\nbilling = {}\n", sha("b-key"))).expect("write");
        let config = HeartbeatsConfig {
            ping_keys: BTreeMap::from([("ops".to_owned(), sha("o-key"))]),
            ping_keys_file: Some(file.clone()),
            ..HeartbeatsConfig::default()
        };
        let keys = PingKeys::from_config(&config).expect("keys");
        assert_eq!(keys.project_of("o-key"), Some("ops"));
        assert_eq!(keys.project_of("b-key"), Some("billing"));
        assert_eq!(keys.project_of("guess"), None);
        assert!(keys.has_project("billing"));

        std::fs::write(&file, "billing\n").expect("write");
        let error = PingKeys::from_config(&config).expect_err("bad line");
        assert!(
            error
                .to_string()
                .ends_with("line 1: expected project=sha256")
        );
        let raw = HeartbeatsConfig {
            ping_keys: BTreeMap::from([("ops".to_owned(), "o-key".to_owned())]),
            ..HeartbeatsConfig::default()
        };
        let error = PingKeys::from_config(&raw).expect_err("a raw key");
        assert!(
            error
                .to_string()
                .starts_with("heartbeats.ping_keys: token \"ops\"")
        );
    }
}
