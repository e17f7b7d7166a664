//! The page's alert actions, forwarded to the alerter's API
//! (`dashboard.alerter_url`) with its admin token
//! (`dashboard.alerter_token_file`) once the session's role and sites are
//! checked here; `X-Livehead-Actor` names the session's token, which the
//! alerter records as the actor of what an admin token forwards.
//!
//! - ack: admin, or a user whose site the alert is (404 for an alert it may
//!   not see, 403 for readonly);
//! - resolve: admin only;
//! - silence: admin, or a user with a matcher `site=<one of its sites>`.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::DashboardState;
use crate::api::{Answer, ApiError};
use crate::config::DashboardConfig;
use crate::store::Store;

/// The header naming, to the alerter, who acts through the dashboard.
pub const ACTOR_HEADER: &str = "x-livehead-actor";
/// Largest silence body forwarded.
pub const MAX_SILENCE_BYTES: usize = 16 * 1024;
/// Longest alert id accepted in a path.
const MAX_ID_BYTES: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    #[error("dashboard.alerter_token_file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dashboard.alerter_token_file {0}: empty")]
    EmptyToken(PathBuf),
    #[error("dashboard.alerter_url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("dashboard: HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Where alert actions go.
#[derive(Debug, Clone)]
pub struct AlerterLink {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl AlerterLink {
    /// `None` when `dashboard.alerter_url` is unset.
    pub fn from_config(config: &DashboardConfig) -> Result<Option<Self>, AlerterError> {
        let Some(url) = config.alerter_url.as_deref() else {
            return Ok(None);
        };
        let base = url.trim().trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(AlerterError::Url {
                url: url.to_owned(),
                reason: "must start with http:// or https://".into(),
            });
        }
        let token = match &config.alerter_token_file {
            None => None,
            Some(path) => Some(read_token(path)?),
        };
        let client = reqwest::Client::builder()
            .timeout(config.alerter_timeout)
            .connect_timeout(config.alerter_timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Some(Self {
            base,
            token,
            client,
        }))
    }

    /// POSTs `body` to the alerter's `path` for `actor`; the alerter's
    /// status and JSON come back as they are (its 404, 403, 409 mean what
    /// they say), 502 when it cannot be reached or answers something else.
    async fn forward(&self, path: &str, actor: &str, body: Option<Bytes>) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.post(&url).header(ACTOR_HEADER, actor);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let unreachable = |e: reqwest::Error| {
            tracing::warn!(%url, error = %e, "dashboard: alerter unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the alerter at {} cannot be reached: {e}", self.base),
            )
        };
        let response = request.send().await.map_err(unreachable)?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body: Value = response.json().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the alerter at {} answered {status} without JSON: {e}",
                    self.base
                ),
            )
        })?;
        tracing::info!(%url, actor, %status, "dashboard: alert action forwarded");
        Ok((status, Json(body)).into_response())
    }
}

fn read_token(path: &std::path::Path) -> Result<String, AlerterError> {
    let text = std::fs::read_to_string(path).map_err(|source| AlerterError::Token {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(AlerterError::EmptyToken(path.to_owned()));
    }
    Ok(token)
}

/// An alert id of a path: what the alerter's ids are made of.
fn alert_id(raw: &str) -> Result<&str, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ID_BYTES
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(format!(
            "alert id: 1 to {MAX_ID_BYTES} letters, digits, `.`, `-`, `_`, `:`"
        )))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("alert {id} not found"))
}

/// The site of a `site=<value>` matcher (`=` only: `!=`, `=~` and `!~`
/// do not pin a site).
pub fn matcher_site(matcher: &str) -> Option<&str> {
    let (label, value) = matcher.split_once('=')?;
    let label = label.trim();
    if label != "site" || value.starts_with('~') {
        return None;
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    (!value.is_empty()).then_some(value)
}

pub(super) async fn acknowledge<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let answer = s.acknowledge(&headers, &id).await;
    s.finish("ui_alert_ack", answer)
}

pub(super) async fn resolve<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let answer = s.resolve(&headers, &id).await;
    s.finish("ui_alert_resolve", answer)
}

pub(super) async fn silence<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = s.silence(&headers, body).await;
    s.finish("ui_silence", answer)
}

impl<S: Store> DashboardState<S> {
    fn alerter(&self) -> Result<&AlerterLink, ApiError> {
        self.inner.alerter.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no alerter configured (dashboard.alerter_url)",
            )
        })
    }

    async fn acknowledge(&self, headers: &HeaderMap, raw: &str) -> Answer {
        let signed = self.signed_write(headers)?;
        let id = alert_id(raw)?;
        let caller = signed.caller;
        if !caller.is_admin() {
            // Whose alert it is: its newest event in the store.
            let alerts = self.newest_alerts().await?;
            let alert = alerts
                .iter()
                .find(|a| a.alert_id == id)
                .filter(|a| !a.site.is_empty() && caller.may_read(&a.site))
                .ok_or_else(|| not_found(id))?;
            if !caller.may_write(&alert.site) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a readonly token may not acknowledge",
                ));
            }
        }
        let alerter = self.alerter()?;
        alerter
            .forward(&format!("/alerts/{id}/ack"), caller.name, None)
            .await
    }

    async fn resolve(&self, headers: &HeaderMap, raw: &str) -> Answer {
        let signed = self.signed_write(headers)?;
        let id = alert_id(raw)?;
        if !signed.caller.is_admin() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only an admin may resolve an alert",
            ));
        }
        self.alerter()?
            .forward(&format!("/alerts/{id}/resolve"), signed.caller.name, None)
            .await
    }

    async fn silence(&self, headers: &HeaderMap, body: Bytes) -> Answer {
        let signed = self.signed_write(headers)?;
        if body.len() > MAX_SILENCE_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: over {MAX_SILENCE_BYTES} bytes"),
            ));
        }
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
        let caller = signed.caller;
        match caller.role() {
            crate::access::Role::Admin => {}
            crate::access::Role::Readonly => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a readonly token may not create silences",
                ));
            }
            crate::access::Role::User => {
                let own = parsed["matchers"].as_array().is_some_and(|matchers| {
                    matchers
                        .iter()
                        .filter_map(Value::as_str)
                        .filter_map(matcher_site)
                        .any(|site| caller.may_write(site))
                });
                if !own {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "a user's silence needs a matcher `site=<one of its sites>`",
                    ));
                }
            }
        }
        self.alerter()?
            .forward("/silences", caller.name, Some(body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_equality_matchers_pin_a_site() {
        assert_eq!(matcher_site("site=shop.example"), Some("shop.example"));
        assert_eq!(
            matcher_site(" site = \"shop.example\""),
            Some("shop.example")
        );
        assert_eq!(matcher_site("site=~shop.*"), None);
        assert_eq!(matcher_site("site!=shop.example"), None);
        assert_eq!(matcher_site("node=web-1"), None);
        assert_eq!(matcher_site("site="), None);
    }

    #[test]
    fn alert_ids_are_checked() {
        assert!(alert_id("site_down:shop.example").is_ok());
        assert!(alert_id("../admin").is_err());
        assert!(alert_id("").is_err());
    }
}
