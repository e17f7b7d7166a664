//! The sites a role token sees: names and globs (`globset` syntax: `*`, `?`,
//! `[a-z]`, `{a,b}`), matched case-insensitively against whole site names.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Longest site pattern, in bytes (a host name is at most 253).
pub const MAX_PATTERN_BYTES: usize = 253;

/// A site pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("site pattern {index} is empty")]
    Empty { index: usize },
    #[error("site pattern {pattern:?} is longer than {MAX_PATTERN_BYTES} bytes")]
    TooLong { pattern: String },
    #[error(
        "site pattern {pattern:?}: {character:?} is not allowed (letters, digits, `.`, `-`, `_` \
         and the glob characters `*?[]{{}},!`)"
    )]
    Character { pattern: String, character: char },
    #[error("site pattern {pattern:?} is not a valid glob: {reason}")]
    Glob { pattern: String, reason: String },
}

/// Compiled site patterns.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    set: GlobSet,
    /// As configured (trimmed), for those who show them (the dashboard).
    patterns: Vec<String>,
}

impl Sites {
    pub fn new(patterns: &[String]) -> Result<Self, SiteError> {
        let mut builder = GlobSetBuilder::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.trim();
            check(index, pattern)?;
            let glob = GlobBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| SiteError::Glob {
                    pattern: pattern.to_owned(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| SiteError::Glob {
            pattern: patterns.join(", "),
            reason: e.kind().to_string(),
        })?;
        let patterns = patterns.iter().map(|p| p.trim().to_owned()).collect();
        Ok(Self { set, patterns })
    }

    /// The patterns, as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn matches(&self, site: &str) -> bool {
        self.set.is_match(site)
    }
}

fn check(index: usize, pattern: &str) -> Result<(), SiteError> {
    if pattern.is_empty() {
        return Err(SiteError::Empty { index });
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        let shown: String = pattern.chars().take(40).collect();
        return Err(SiteError::TooLong {
            pattern: format!("{shown}…"),
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_*?[]{},!".contains(c);
    match pattern.chars().find(|c| !allowed(*c)) {
        Some(character) => Err(SiteError::Character {
            pattern: pattern.to_owned(),
            character,
        }),
        None => Ok(()),
    }
}
