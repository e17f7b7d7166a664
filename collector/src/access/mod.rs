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

use axum::http::HeaderMap;

use livehead_common::roles::RoleTokens;
pub use livehead_common::roles::{AccessError, Caller, Grant, Refusal, Role, SiteError, Sites};

use crate::api::auth::Tokens;
use crate::config::ApiConfig;

/// The configuration key of the role tokens, named in their errors.
pub const ROLE_TOKENS: &str = "api.tokens";

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

/// The role tokens and the read policy of the old API, built once at start.
#[derive(Debug, Clone)]
pub struct Access {
    tokens: RoleTokens,
    /// `/last` and `/dump_last` answer without a token.
    open_reads: bool,
    /// `api.read_requires_token` (deprecated): push tokens read them too.
    push_tokens_read: bool,
}

impl Access {
    /// Validates `api.tokens`; the first bad token is the error.
    pub fn from_config(config: &ApiConfig) -> Result<Self, AccessError> {
        let tokens = RoleTokens::new(ROLE_TOKENS, &config.tokens)?;
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
        self.tokens.authenticate(headers)
    }

    /// The caller whose token is `token` (the dashboard's sign-in): role
    /// tokens only, so a push token is refused like an unknown one.
    pub fn sign_in(&self, token: &str) -> Option<Caller<'_>> {
        self.tokens.verify(token)
    }

    /// The caller of the role token called `name` (a dashboard session);
    /// `None` once it is no longer configured.
    pub fn named(&self, name: &str) -> Option<Caller<'_>> {
        self.tokens.named(name)
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

#[cfg(test)]
mod tests;
