//! Bearer tokens of the HTTP API. The configuration holds each token's SHA-256,
//! never the token; a presented token is hashed and compared with every
//! configured hash in constant time, without stopping at a match, so neither
//! the answer's timing nor its content tells how close a guess was.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// A token in the configuration that cannot be used; `start()` fails with it.
/// `list` is the configuration key (`api.push_tokens`, `api.tokens`). The
/// messages never quote the configured value (it may be a raw token put there
/// by mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "{list}: token {name:?}: sha256 must be 64 hex digits, the SHA-256 of the token \
         (`printf %s \"$TOKEN\" | sha256sum`)"
    )]
    BadHash { list: &'static str, name: String },
    #[error("{list}: a token has an empty name")]
    EmptyName { list: &'static str },
    #[error("{list}: tokens {first:?} and {second:?} have the same sha256")]
    SameHash {
        list: &'static str,
        first: String,
        second: String,
    },
}

/// A configured token: a name and the SHA-256 of the secret. Each crate's
/// config struct implements it, so [`Tokens::from_config`] reads it directly.
pub trait ConfigToken {
    /// The configuration key of the list, named in errors (`api.push_tokens`).
    const KEY: &'static str;
    fn name(&self) -> &str;
    fn sha256(&self) -> &str;
}

/// The accepted tokens: each one's name, SHA-256 and what it grants (`T`:
/// nothing more for push tokens, a role for `api.tokens`).
#[derive(Debug, Clone)]
pub struct Tokens<T = ()> {
    entries: Vec<Entry<T>>,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    name: String,
    hash: [u8; 32],
    grant: T,
}

impl<T> Default for Tokens<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl Tokens {
    /// Decodes the configured tokens' hashes (tokens that grant nothing more
    /// than being one of them, as push tokens).
    pub fn from_config<C: ConfigToken>(tokens: &[C]) -> Result<Self, TokenError> {
        Self::build(C::KEY, tokens.iter().map(|t| (t.name(), t.sha256(), ())))
    }
}

impl<T> Tokens<T> {
    /// Decodes `(name, sha256, grant)` triples of the configuration key
    /// `list`: names non-empty, hashes 64 hex digits and unique.
    pub fn build<'a>(
        list: &'static str,
        tokens: impl IntoIterator<Item = (&'a str, &'a str, T)>,
    ) -> Result<Self, TokenError> {
        let mut entries: Vec<Entry<T>> = Vec::new();
        for (name, sha256, grant) in tokens {
            if name.trim().is_empty() {
                return Err(TokenError::EmptyName { list });
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(sha256.trim(), &mut hash).map_err(|_| TokenError::BadHash {
                list,
                name: name.to_owned(),
            })?;
            if let Some(first) = entries.iter().find(|e| e.hash == hash) {
                return Err(TokenError::SameHash {
                    list,
                    first: first.name.clone(),
                    second: name.to_owned(),
                });
            }
            entries.push(Entry {
                name: name.to_owned(),
                hash,
                grant,
            });
        }
        Ok(Self { entries })
    }

    /// No token configured: every authenticated request is refused.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the token `presented` is, if any.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        self.verify_grant(presented).map(|(name, _)| name)
    }

    /// The name and grant of the token `presented` is, if any. Hashes it
    /// once, then compares with every configured hash; the loop never exits
    /// early.
    pub fn verify_grant(&self, presented: &str) -> Option<(&str, &T)> {
        let digest = Sha256::digest(presented.as_bytes());
        // 0: no match; i + 1: entry i matched.
        let mut matched = 0u32;
        for (index, entry) in self.entries.iter().enumerate() {
            let candidate = u32::try_from(index + 1).unwrap_or(u32::MAX);
            matched.conditional_assign(&candidate, digest.as_slice().ct_eq(entry.hash.as_slice()));
        }
        let index = usize::try_from(matched.checked_sub(1)?).ok()?;
        self.entries
            .get(index)
            .map(|entry| (entry.name.as_str(), &entry.grant))
    }

    /// The name and grant of the token called `name`, if configured: a
    /// session signed in earlier still stands for a token of the
    /// configuration (names are not secrets; the token was checked at
    /// sign-in).
    pub fn named(&self, name: &str) -> Option<(&str, &T)> {
        self.entries
            .iter()
            .find(|entry| entry.name == name)
            .map(|entry| (entry.name.as_str(), &entry.grant))
    }

    /// The name of the token in `Authorization: Bearer <token>`, if the header
    /// is there, uses the Bearer scheme and carries an accepted token.
    pub fn authorize(&self, headers: &HeaderMap) -> Option<&str> {
        self.authorize_grant(headers).map(|(name, _)| name)
    }

    /// [`Tokens::authorize`] with the token's grant.
    pub fn authorize_grant(&self, headers: &HeaderMap) -> Option<(&str, &T)> {
        self.verify_grant(presented(headers)?)
    }
}

/// The bearer token of the request, if `Authorization` holds one.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive,
/// RFC 9110 §11.1), `None` for any other scheme or an empty token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sha256_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    const PUSH_TOKENS: &str = "api.push_tokens";

    /// Shaped as the collector's push tokens.
    struct PushToken {
        name: String,
        sha256: String,
    }

    impl ConfigToken for PushToken {
        const KEY: &'static str = PUSH_TOKENS;

        fn name(&self) -> &str {
            &self.name
        }

        fn sha256(&self) -> &str {
            &self.sha256
        }
    }

    fn token(name: &str, secret: &str) -> PushToken {
        PushToken {
            name: name.into(),
            sha256: sha256_hex(secret),
        }
    }

    fn tokens() -> Tokens {
        Tokens::from_config(&[token("pods-eu", "alpha"), token("pods-us", "beta")])
            .expect("valid tokens")
    }

    #[test]
    fn each_token_maps_to_its_name() {
        let t = tokens();
        assert_eq!(t.verify("alpha"), Some("pods-eu"));
        assert_eq!(t.verify("beta"), Some("pods-us"));
        assert_eq!(t.verify("gamma"), None);
        assert_eq!(t.verify(""), None);
        assert_eq!(
            t.verify(&sha256_hex("alpha")),
            None,
            "the hash is not the token"
        );
    }

    #[test]
    fn no_token_configured_refuses_everything() {
        let t = Tokens::from_config::<PushToken>(&[]).expect("empty is valid");
        assert!(t.is_empty());
        assert_eq!(t.verify(""), None);
        assert_eq!(t.verify("alpha"), None);
    }

    #[test]
    fn hashes_must_be_32_bytes_of_hex() {
        for bad in [
            String::new(),
            "abcd".into(),
            "alpha".into(),
            format!("{}00", sha256_hex("x")),
            sha256_hex("x").replace(|c: char| c.is_ascii_digit(), "g"),
        ] {
            let cfg = PushToken {
                name: "ci".into(),
                sha256: bad.clone(),
            };
            assert_eq!(
                Tokens::from_config(&[cfg]).expect_err(&bad),
                TokenError::BadHash {
                    list: PUSH_TOKENS,
                    name: "ci".into()
                }
            );
        }
        let upper = PushToken {
            name: "ci".into(),
            sha256: sha256_hex("x").to_uppercase(),
        };
        let t = Tokens::from_config(&[upper]).expect("upper-case hex is hex");
        assert_eq!(t.verify("x"), Some("ci"));
    }

    #[test]
    fn the_error_names_the_token_not_its_value() {
        let cfg = PushToken {
            name: "pods-eu".into(),
            sha256: "raw-secret-token".into(),
        };
        let message = Tokens::from_config(&[cfg]).expect_err("bad").to_string();
        assert!(message.contains("\"pods-eu\""), "{message}");
        assert!(!message.contains("raw-secret-token"), "{message}");
    }

    #[test]
    fn names_are_required_and_hashes_unique() {
        assert_eq!(
            Tokens::from_config(&[token(" ", "a")]).expect_err("empty name"),
            TokenError::EmptyName { list: PUSH_TOKENS }
        );
        assert_eq!(
            Tokens::from_config(&[token("a", "same"), token("b", "same")]).expect_err("dup"),
            TokenError::SameHash {
                list: PUSH_TOKENS,
                first: "a".into(),
                second: "b".into()
            }
        );
    }

    #[test]
    fn only_bearer_headers_are_read() {
        let t = tokens();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("header value"),
            );
            t.authorize(&headers).map(str::to_owned)
        };
        assert_eq!(with("Bearer alpha").as_deref(), Some("pods-eu"));
        assert_eq!(with("bearer  beta ").as_deref(), Some("pods-us"));
        assert_eq!(with("Bearer gamma"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(with("alpha"), None);
        assert_eq!(with("Basic alpha"), None);
        assert_eq!(with("Token alpha"), None);
        assert_eq!(t.authorize(&HeaderMap::new()), None);
    }
}
