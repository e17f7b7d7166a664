//! Bearer tokens of the HTTP API: the hash table and its constant-time
//! lookup live in `livehead_common::roles`, shared with the alerter; this
//! reads the push tokens into it.

use livehead_common::roles::ConfigToken;
pub use livehead_common::roles::{TokenError, Tokens, presented};

use crate::config::PushToken;

/// The configuration key of the push tokens, named in their errors.
pub const PUSH_TOKENS: &str = "api.push_tokens";

impl ConfigToken for PushToken {
    const KEY: &'static str = PUSH_TOKENS;

    fn name(&self) -> &str {
        &self.name
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_token_errors_name_their_key() {
        let bad = PushToken {
            name: "pods-eu".into(),
            sha256: "raw-secret-token".into(),
        };
        assert_eq!(
            Tokens::from_config(&[bad]).expect_err("bad hash"),
            TokenError::BadHash {
                list: PUSH_TOKENS,
                name: "pods-eu".into()
            }
        );
    }
}
