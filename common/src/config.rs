//! Loading typed configuration from TOML files.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the offending key and line.
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// Reads `path` as TOML into `T`; unknown keys are errors when `T` says
/// `deny_unknown_fields`, so a typo never silently falls back to a default.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Loads `path` when given, else the type's defaults.
pub fn load_or_default<T: DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    path.map_or_else(|| Ok(T::default()), load_toml)
}
