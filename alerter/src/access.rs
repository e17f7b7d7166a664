//! Who may do what on the alerter's HTTP API: role tokens of the same shape
//! and meaning as the collector's `api.tokens` (see its `access` module),
//! so one token file serves both.
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
//!
//! This is a copy of the generic part of the collector's module (token
//! hashes, roles, site globs), not a move into `livehead-common`: the
//! collector's version is tied to its config keys and to push tokens.

use axum::http::{HeaderMap, header};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A role token, e.g.
/// `{ name = "shop-team", sha256 = "<64 hex>", role = "user", sites = ["*.shop.example"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleToken {
    /// Who uses the token; named in logs, errors, and as the actor of
    /// acknowledgements, resolves and silences.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// `admin`, `user` or `readonly`.
    pub role: String,
    /// Sites of a `user` or `readonly` token: names or globs,
    /// case-insensitive. Required for those roles, refused for admin.
    /// Default none.
    #[serde(default)]
    pub sites: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    Readonly,
}

/// A token that cannot be used; names the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("tokens: token {name:?}: sha256 must be 64 hex digits, the SHA-256 of the token")]
    BadHash { name: String },
    #[error("tokens: token {name:?}: name is empty")]
    NoName { name: String },
    #[error("tokens: tokens {first:?} and {second:?} have the same sha256")]
    Duplicate { first: String, second: String },
    #[error("tokens: token {name:?}: role {role:?} is not admin, user or readonly")]
    UnknownRole { name: String, role: String },
    #[error("tokens: token {name:?}: a {role} token needs sites (names or globs)")]
    NoSites { name: String, role: &'static str },
    #[error("tokens: token {name:?}: an admin token sees every site; remove its sites")]
    AdminWithSites { name: String },
    #[error("tokens: token {name:?}: site pattern {pattern:?}: {reason}")]
    Site {
        name: String,
        pattern: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Grant {
    name: String,
    hash: [u8; 32],
    role: Role,
    sites: GlobSet,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    grant: &'a Grant,
}

impl Caller<'_> {
    pub fn name(&self) -> &str {
        &self.grant.name
    }

    pub fn role(&self) -> Role {
        self.grant.role
    }

    pub fn is_admin(&self) -> bool {
        self.grant.role == Role::Admin
    }

    /// Whether the caller sees what concerns `site` (`None`: no site).
    pub fn may_read(&self, site: Option<&str>) -> bool {
        self.is_admin() || site.is_some_and(|s| self.grant.sites.is_match(s.to_lowercase()))
    }

    pub fn may_write(&self, site: Option<&str>) -> bool {
        self.grant.role != Role::Readonly && self.may_read(site)
    }
}

/// The role tokens, checked once at start.
#[derive(Debug, Clone, Default)]
pub struct Access {
    grants: Vec<Grant>,
}

impl Access {
    pub fn new(tokens: &[RoleToken]) -> Result<Self, AccessError> {
        let grants = tokens.iter().map(grant).collect::<Result<Vec<_>, _>>()?;
        for (i, a) in grants.iter().enumerate() {
            if let Some(b) = grants[i + 1..].iter().find(|b| b.hash == a.hash) {
                return Err(AccessError::Duplicate {
                    first: a.name.clone(),
                    second: b.name.clone(),
                });
            }
        }
        Ok(Access { grants })
    }

    /// The caller presenting `Authorization: Bearer <token>` (exactly one
    /// such header), if its token is configured.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Caller<'_>> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next()?.to_str().ok()?;
        if values.next().is_some() {
            return None;
        }
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Every hash is compared, in constant time, so timing tells nothing
        // about which token came close.
        let mut found = None;
        for grant in &self.grants {
            if bool::from(grant.hash.ct_eq(&presented)) {
                found = Some(Caller { grant });
            }
        }
        found
    }
}

fn grant(token: &RoleToken) -> Result<Grant, AccessError> {
    let name = || token.name.clone();
    if token.name.trim().is_empty() {
        return Err(AccessError::NoName { name: name() });
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(token.sha256.trim(), &mut hash)
        .map_err(|_| AccessError::BadHash { name: name() })?;
    let role = match token.role.trim() {
        "admin" => Role::Admin,
        "user" => Role::User,
        "readonly" => Role::Readonly,
        other => {
            return Err(AccessError::UnknownRole {
                name: name(),
                role: other.to_owned(),
            });
        }
    };
    match (role, token.sites.is_empty()) {
        (Role::Admin, false) => return Err(AccessError::AdminWithSites { name: name() }),
        (Role::User, true) => {
            return Err(AccessError::NoSites {
                name: name(),
                role: "user",
            });
        }
        (Role::Readonly, true) => {
            return Err(AccessError::NoSites {
                name: name(),
                role: "readonly",
            });
        }
        _ => {}
    }
    let mut sites = GlobSetBuilder::new();
    for pattern in &token.sites {
        let glob = GlobBuilder::new(pattern.trim())
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|err| AccessError::Site {
                name: name(),
                pattern: pattern.clone(),
                reason: err.kind().to_string(),
            })?;
        sites.add(glob);
    }
    let sites = sites.build().map_err(|err| AccessError::Site {
        name: name(),
        pattern: token.sites.join(", "),
        reason: err.to_string(),
    })?;
    Ok(Grant {
        name: token.name.clone(),
        hash,
        role,
        sites,
    })
}

#[cfg(test)]
// Tests may unwrap (house rules): a panic is the test failing.
#[allow(clippy::unwrap_used)]
mod tests {
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
        assert!(matches!(err, AccessError::Duplicate { .. }));
    }
}
