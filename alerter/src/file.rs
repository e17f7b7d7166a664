//! The rules file: one TOML file with the rules, the receivers, the routing
//! tree and the inhibition rules. Every error names its line.

use std::path::Path;

use serde::Deserialize;

use crate::Receiver;
use crate::lifecycle::{InhibitSpec, RouteSpec};
use crate::rules::RuleSpec;

/// A whole rules file, as written.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    #[serde(default)]
    pub route: RouteSpec,
    #[serde(default)]
    pub inhibit: Vec<InhibitSpec>,
}

/// Why a rules file was refused; the message names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the rules file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// toml's message already names the line and shows it.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl RulesFile {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| FileError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks `text`; the error says which line is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        // Both checks run, so one pass shows every problem of the file.
        let problems: Vec<String> = [
            crate::rules::check(&file.rules, text),
            crate::lifecycle::check(&file, text),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        Ok(file)
    }
}
