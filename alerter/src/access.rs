//! Who may do what on the alerter's HTTP API: role tokens of the same shape
//! and meaning as the collector's `api.tokens` (`livehead_common::roles`,
//! one implementation for both), so one token file serves both.
//!
//! - `admin`: everything.
//! - `user`: its sites (names or globs): lists their alerts, acknowledges
//!   them, creates silences with a `site=<one of its sites>` matcher and
//!   expires its own silences.
//! - `readonly`: lists its sites' alerts and the silences.
//!
//! Alerts without a site (node and fleet alerts) are the admin's: a user's
//! patterns say nothing about nodes. An alert a token may not see answers
//! 404 like one that does not exist.

use axum::http::HeaderMap;
use livehead_common::roles::{self, RoleTokens};

pub use livehead_common::roles::{AccessError, Role, RoleToken};

/// The configuration key of the role tokens, named in their errors.
pub const ROLE_TOKENS: &str = "api.tokens";

/// The authenticated caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a>(roles::Caller<'a>);

impl Caller<'_> {
    pub fn name(&self) -> &str {
        self.0.name
    }

    pub fn role(&self) -> Role {
        self.0.role()
    }

    pub fn is_admin(&self) -> bool {
        self.0.is_admin()
    }

    /// Whether the caller sees what concerns `site` (`None`: no site, which
    /// only an admin sees).
    pub fn may_read(&self, site: Option<&str>) -> bool {
        self.is_admin() || site.is_some_and(|s| self.0.may_read(s))
    }

    pub fn may_write(&self, site: Option<&str>) -> bool {
        self.role() != Role::Readonly && self.may_read(site)
    }
}

/// The role tokens, checked once at start.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: RoleTokens,
}

impl Access {
    pub fn new(tokens: &[RoleToken]) -> Result<Self, AccessError> {
        Ok(Self {
            tokens: RoleTokens::new(ROLE_TOKENS, tokens)?,
        })
    }

    /// The caller presenting `Authorization: Bearer <token>` (exactly one
    /// such header), if its token is configured. Every refusal is the same
    /// 401 here, a doubled header included.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Caller<'_>> {
        self.tokens.authenticate(headers).ok().map(Caller)
    }
}
#[cfg(test)]
// Tests may unwrap (house rules): a panic is the test failing.
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::header;
    use sha2::{Digest, Sha256};

    use super::*;

    fn token(name: &str, secret: &str, role: &str, sites: &[&str]) -> RoleToken {
        RoleToken {
            name: name.to_owned(),
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            role: role.to_owned(),
            sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {secret}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn roles_and_sites() {
        let access = Access::new(&[
            token("root", "a", "admin", &[]),
            token("shop", "b", "user", &["*.shop.example"]),
            token("look", "c", "readonly", &["x.example"]),
        ])
        .unwrap();
        let root = access.authenticate(&bearer("a")).unwrap();
        assert!(root.may_write(None));
        let shop = access.authenticate(&bearer("b")).unwrap();
        assert_eq!(shop.name(), "shop");
        assert!(shop.may_write(Some("EU.shop.example")));
        assert!(!shop.may_read(Some("other.example")));
        assert!(!shop.may_read(None));
        let look = access.authenticate(&bearer("c")).unwrap();
        assert!(look.may_read(Some("x.example")) && !look.may_write(Some("x.example")));
        assert!(access.authenticate(&bearer("nope")).is_none());
        assert!(access.authenticate(&HeaderMap::new()).is_none());
    }

    #[test]
    fn bad_tokens_are_named() {
        for (bad, reason) in [
            (token("t", "a", "boss", &[]), "is not admin"),
            (token("t", "a", "user", &[]), "needs sites"),
            (token("t", "a", "admin", &["x"]), "remove its sites"),
            (
                RoleToken {
                    sha256: "12".into(),
                    ..token("t", "a", "admin", &[])
                },
                "64 hex",
            ),
        ] {
            let err = Access::new(&[bad]).unwrap_err().to_string();
            assert!(err.contains("\"t\"") && err.contains(reason), "{err}");
        }
        let err = Access::new(&[token("a", "x", "admin", &[]), token("b", "x", "admin", &[])])
            .unwrap_err();
        assert!(matches!(
            err,
            AccessError::Token(roles::TokenError::SameHash { .. })
        ));
    }
}
