//! Role tokens of the HTTP APIs (the collector's and the alerter's
//! `api.tokens`), written once so one token file means the same on both:
//! the token's SHA-256 (never the token) checked in constant time, a role
//! (`admin`, `user`, `readonly`) and the sites a non-admin sees.
//!
//! What each role may do on which route is each component's policy; this
//! module only says who the caller is, its role, and whether a site is one
//! of its sites.

mod sites;
mod tokens;

use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

pub use sites::{MAX_PATTERN_BYTES, SiteError, Sites};
pub use tokens::{ConfigToken, TokenError, Tokens, presented};

/// A role token, e.g.
/// `{ name = "shop-team", sha256 = "<64 hex>", role = "user", sites = ["*.shop.example"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleToken {
    /// Who uses the token, e.g. `shop-team`; named in logs and errors (and
    /// on the alerter, as the actor of acknowledgements, resolves and
    /// silences).
    pub name: String,
    /// SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// `admin` (every route, every site), `user` (its sites, reads and
    /// writes) or `readonly` (reads of its sites).
    pub role: String,
    /// The sites a `user` or `readonly` token sees: names or globs
    /// (`*.shop.example`, `shop-?.example`), case-insensitive. Required for
    /// those roles; an admin token takes none. Default none.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    Readonly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Readonly => "readonly",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Admin, Self::User, Self::Readonly]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A role token that cannot be used; the component's start fails with it.
/// `list` is the configuration key (`api.tokens`). Each names the token
/// (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{list}: token {name:?}: role {role:?} is not admin, user or readonly")]
    UnknownRole {
        list: &'static str,
        name: String,
        role: String,
    },
    #[error("{list}: token {name:?}: a {role} token needs sites (names or globs)")]
    NoSites {
        list: &'static str,
        name: String,
        role: &'static str,
    },
    #[error(
        "{list}: token {name:?}: an admin token sees every site; remove its sites \
         or make it a user or readonly token"
    )]
    AdminWithSites { list: &'static str, name: String },
    #[error("{list}: token {name:?}: {source}")]
    Site {
        list: &'static str,
        name: String,
        source: SiteError,
    },
}

/// What a role token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    pub role: Role,
    sites: Sites,
}

impl Grant {
    /// Checks one token of the configuration key `list`: a known role, sites
    /// for `user` and `readonly` only, valid site patterns. (Its name and
    /// hash are [`Tokens::build`]'s business.)
    pub fn new(list: &'static str, token: &RoleToken) -> Result<Self, AccessError> {
        let name = || token.name.clone();
        let role = Role::parse(token.role.trim()).ok_or_else(|| AccessError::UnknownRole {
            list,
            name: name(),
            role: token.role.clone(),
        })?;
        match (role, token.sites.is_empty()) {
            (Role::Admin, false) => {
                return Err(AccessError::AdminWithSites { list, name: name() });
            }
            (Role::User | Role::Readonly, true) => {
                return Err(AccessError::NoSites {
                    list,
                    name: name(),
                    role: role.as_str(),
                });
            }
            _ => {}
        }
        let sites = Sites::new(&token.sites).map_err(|source| AccessError::Site {
            list,
            name: name(),
            source,
        })?;
        Ok(Self { role, sites })
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The token's name, for logs.
    pub name: &'a str,
    grant: &'a Grant,
}

impl Caller<'_> {
    pub fn role(&self) -> Role {
        self.grant.role
    }

    pub fn is_admin(&self) -> bool {
        self.grant.role == Role::Admin
    }

    /// Whether `site` is one of the caller's (any case).
    pub fn may_read(&self, site: &str) -> bool {
        self.is_admin() || self.grant.sites.matches(site)
    }

    /// The site patterns of the token (none for an admin: every site).
    pub fn site_patterns(&self) -> &[String] {
        self.grant.sites.patterns()
    }

    /// Whether the caller may change what concerns `site`.
    pub fn may_write(&self, site: &str) -> bool {
        self.grant.role != Role::Readonly && self.may_read(site)
    }
}

/// Why a request is refused before its route looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: `Authorization` sent more than once.
    DoubledHeader,
    /// 401: no token, or not one of the role tokens.
    Unauthorized,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Self::DoubledHeader => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::DoubledHeader => "authorization: sent more than once",
            Self::Unauthorized => "missing or wrong bearer token",
        }
    }
}

/// The role tokens of one configuration key, checked once at start.
#[derive(Debug, Clone, Default)]
pub struct RoleTokens {
    tokens: Tokens<Grant>,
}

impl RoleTokens {
    /// Validates the tokens of the configuration key `list`; the first bad
    /// token is the error.
    pub fn new(list: &'static str, tokens: &[RoleToken]) -> Result<Self, AccessError> {
        let grants = tokens
            .iter()
            .map(|token| Grant::new(list, token))
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = Tokens::build(
            list,
            tokens
                .iter()
                .zip(grants)
                .map(|(t, g)| (t.name.as_str(), t.sha256.as_str(), g)),
        )?;
        Ok(Self { tokens })
    }

    /// No role token configured: every request needing one is refused.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller presenting `Authorization: Bearer <token>` with one of the
    /// tokens. A doubled header is refused on its own: which of the two
    /// counts would depend on the proxies in between.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller<'_>, Refusal> {
        if headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(Refusal::DoubledHeader);
        }
        self.tokens
            .authorize_grant(headers)
            .map(|(name, grant)| Caller { name, grant })
            .ok_or(Refusal::Unauthorized)
    }

    /// The caller presenting `token` itself (a sign-in form, not a header).
    pub fn verify(&self, token: &str) -> Option<Caller<'_>> {
        self.tokens
            .verify_grant(token)
            .map(|(name, grant)| Caller { name, grant })
    }

    /// The caller of the token called `name`, while it is configured.
    pub fn named(&self, name: &str) -> Option<Caller<'_>> {
        self.tokens
            .named(name)
            .map(|(name, grant)| Caller { name, grant })
    }
}

#[cfg(test)]
mod tests;
