//! Who may read and write what on the HTTP API: role tokens (`api.tokens`),
//! checked by every route (`api/` for the old worker's reads, `stats/`, and
//! the surfaces to come).
//!
//! - `admin`: every route and every site.
//! - `user`: the sites its names and globs match; reads, and the writes of
//!   routes that write for a site (none yet: `/push` takes push tokens).
//! - `readonly`: reads of its sites only.
//!
//! A site a token may not see is answered exactly like a site that does not
//! exist (404, same body), so names do not leak; since visibility depends on
//! the token's patterns only, never on the data, the 404 tells nothing about
//! what exists. Admin-only routes answer other roles 403 (nothing to hide).
//! `/push` keeps its push tokens (`api.push_tokens`): a role token there is
//! answered 403 "this token may not write", so agents' and scripts'
//! credentials never read and readers' never inject rows.

mod sites;

use axum::http::{HeaderMap, StatusCode, header};

pub use sites::{SiteError, Sites};

use crate::api::auth::{TokenError, Tokens};
use crate::config::{ApiConfig, RoleToken};

/// The configuration key of the role tokens, named in their errors.
pub const ROLE_TOKENS: &str = "api.tokens";

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

/// A role token that cannot be used; `start()` fails with it. Each names
/// the token (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{ROLE_TOKENS}: token {name:?}: role {role:?} is not admin, user or readonly")]
    UnknownRole { name: String, role: String },
    #[error("{ROLE_TOKENS}: token {name:?}: a {role} token needs sites (names or globs)")]
    NoSites { name: String, role: &'static str },
    #[error(
        "{ROLE_TOKENS}: token {name:?}: an admin token sees every site; remove its sites \
         or make it a user or readonly token"
    )]
    AdminWithSites { name: String },
    #[error("{ROLE_TOKENS}: token {name:?}: {source}")]
    Site { name: String, source: SiteError },
}

/// What a role token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    pub role: Role,
    sites: Sites,
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

    /// Whether `site` (as stored, lower case) is one of the caller's.
    pub fn may_read(&self, site: &str) -> bool {
        self.is_admin() || self.grant.sites.matches(site)
    }

    /// Whether the caller may change what concerns `site`.
    pub fn may_write(&self, site: &str) -> bool {
        self.grant.role != Role::Readonly && self.may_read(site)
    }
}

/// Who reads the old worker's `/last` and `/dump_last`.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// Anyone or a token that sees every site.
    Everything,
    /// A role token: its sites only.
    Sites(Caller<'a>),
}

impl Reader<'_> {
    pub fn may_read(&self, site: &str) -> bool {
        match self {
            Self::Everything => true,
            Self::Sites(caller) => caller.may_read(site),
        }
    }

    /// Whether some sites are hidden from this reader.
    pub fn is_restricted(&self) -> bool {
        matches!(self, Self::Sites(caller) if !caller.is_admin())
    }
}

/// Why a request is refused before its route looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: `Authorization` sent more than once.
    DoubledHeader,
    /// 401: no token, or not one of `api.tokens`.
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

/// The role tokens and the read policy of the old API, built once at start.
#[derive(Debug, Clone)]
pub struct Access {
    tokens: Tokens<Grant>,
    /// `/last` and `/dump_last` answer without a token.
    open_reads: bool,
    /// `api.read_requires_token` (deprecated): push tokens read them too.
    push_tokens_read: bool,
}

impl Access {
    /// Validates `api.tokens`; the first bad token is the error.
    pub fn from_config(config: &ApiConfig) -> Result<Self, AccessError> {
        let grants = config
            .tokens
            .iter()
            .map(grant)
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = Tokens::build(
            ROLE_TOKENS,
            config
                .tokens
                .iter()
                .zip(grants)
                .map(|(t, g)| (t.name.as_str(), t.sha256.as_str(), g)),
        )?;
        Ok(Self {
            tokens,
            open_reads: config.open_reads && !config.read_requires_token,
            push_tokens_read: config.read_requires_token,
        })
    }

    /// No role token configured: `/stats` refuses every request.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// The caller presenting one of `api.tokens`.
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

    /// Who reads `/last` and `/dump_last`: anyone when reads are open, else
    /// a role token (or, with the deprecated `read_requires_token`, a push
    /// token, which reads everything as it did before).
    pub fn old_reader(
        &self,
        headers: &HeaderMap,
        push_tokens: &Tokens,
    ) -> Result<Reader<'_>, Refusal> {
        if self.open_reads {
            return Ok(Reader::Everything);
        }
        match self.authenticate(headers) {
            Ok(caller) => Ok(Reader::Sites(caller)),
            Err(Refusal::Unauthorized)
                if self.push_tokens_read && push_tokens.authorize(headers).is_some() =>
            {
                Ok(Reader::Everything)
            }
            Err(refusal) => Err(refusal),
        }
    }
}

fn grant(token: &RoleToken) -> Result<Grant, AccessError> {
    let name = || token.name.clone();
    let role = Role::parse(token.role.trim()).ok_or_else(|| AccessError::UnknownRole {
        name: name(),
        role: token.role.clone(),
    })?;
    match (role, token.sites.is_empty()) {
        (Role::Admin, false) => return Err(AccessError::AdminWithSites { name: name() }),
        (Role::User | Role::Readonly, true) => {
            return Err(AccessError::NoSites {
                name: name(),
                role: role.as_str(),
            });
        }
        _ => {}
    }
    let sites = Sites::new(&token.sites).map_err(|source| AccessError::Site {
        name: name(),
        source,
    })?;
    Ok(Grant { role, sites })
}

#[cfg(test)]
mod tests;
