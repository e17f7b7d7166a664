//! The state that survives a restart, as a JSON file written atomically
//! (a temporary file in the same directory, synced, then renamed over the
//! old one), so a crash leaves either the old state or the new one.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::groups::Group;
use super::{Alert, Outgoing, Silence};

/// The format's version; a file of another version is refused.
pub const VERSION: u32 = 1;

/// Alerts, groups (what each receiver was told), silences, and the outbox
/// of notifications handed out but not reported delivered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    pub version: u32,
    pub(crate) alerts: Vec<Alert>,
    pub(crate) groups: Vec<Group>,
    pub(crate) silences: Vec<Silence>,
    pub(crate) outbox: Vec<Outgoing>,
    /// Heartbeat checks' trackers (absent in files of older alerters).
    #[serde(default)]
    pub(crate) heartbeats: Vec<crate::heartbeats::SavedCheck>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path}: not a livehead alerter state: {reason}")]
    Invalid { path: String, reason: String },
    #[error("state file {path}: version {found}, this alerter reads version {VERSION}")]
    Version { path: String, found: u32 },
}

impl SavedState {
    /// Reads the state file; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io(err)),
        };
        let state: SavedState =
            serde_json::from_slice(&bytes).map_err(|err| StateError::Invalid {
                path: path.display().to_string(),
                reason: err.to_string(),
            })?;
        if state.version != VERSION {
            return Err(StateError::Version {
                path: path.display().to_string(),
                found: state.version,
            });
        }
        Ok(Some(state))
    }

    /// Replaces the state file atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let json = serde_json::to_vec(self).map_err(|err| StateError::Invalid {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(path).map_err(|err| io(err.error))?;
        Ok(())
    }
}
