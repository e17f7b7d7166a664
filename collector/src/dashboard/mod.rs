//! The browser dashboard (issue 15): the page's embedded files under `/ui/`,
//! sessions signed in with the role tokens of `api.tokens`, the JSON the
//! page reads (`/ui/api/*`), its alert actions forwarded to the alerter,
//! and the live stream (`/ui/api/live`, Server-Sent Events). The contract
//! between the page and these routes is `docs/dashboard.md`.
//!
//! Every `/ui` response carries the contract's Content-Security-Policy and
//! headers; compressible answers are gzipped when the client accepts it
//! (not the event stream). Role rules are the API's: a `user`/`readonly`
//! session sees its sites only, a site it may not see answers 404 like one
//! that does not exist, node pages are admins' (403 otherwise).

mod actions;
mod assets;
mod live;
mod routes;
mod series;
mod session;
mod transitions;
mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use livehead_common::Shutdown;
use livehead_common::clock::unix_ms;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tower_http::compression::CompressionLayer;

use crate::access::{Access, Caller};
use crate::api::{Answer, ApiError};
use crate::config::DashboardConfig;
use crate::group_commit::GroupCommit;
use crate::metrics::CollectorMetrics;
use crate::store::Store;

pub use actions::{AlerterError, AlerterLink};
pub use session::{KeyError, Sessions};
pub use transitions::Transitions;

/// The Content-Security-Policy of every `/ui` response: only the page's own
/// files, no inline script or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Interval of the live stream's keep-alive comments.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Alerter(#[from] AlerterError),
}

/// What the dashboard's handlers share.
pub struct DashboardState<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for DashboardState<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: Arc<S>,
    access: Arc<Access>,
    writer: GroupCommit,
    metrics: CollectorMetrics,
    sessions: Sessions,
    config: DashboardConfig,
    /// `api.stats_fresh`: which node samples are current.
    stats_fresh: std::time::Duration,
    alerter: Option<AlerterLink>,
    streams: Arc<Semaphore>,
    transitions: Transitions,
    shutdown: Shutdown,
}

/// What [`DashboardState::new`] takes.
pub struct Parts<S> {
    pub store: Arc<S>,
    pub access: Arc<Access>,
    pub writer: GroupCommit,
    pub metrics: CollectorMetrics,
    pub config: DashboardConfig,
    pub stats_fresh: std::time::Duration,
    pub shutdown: Shutdown,
}

impl<S: Store> DashboardState<S> {
    /// Loads the session key and the alerter's token, and starts following
    /// accepted probes for the overview's transitions.
    pub fn new(parts: Parts<S>) -> Result<Self, DashboardError> {
        let config = parts.config;
        let key = Sessions::load_key(config.session_key_file.as_deref())?;
        if config.session_key_file.is_none() {
            tracing::info!(
                "no dashboard.session_key_file: sessions are signed with a random key and end when the collector restarts"
            );
        }
        let sessions = Sessions::new(key, config.session_ttl, config.secure_cookie);
        let alerter = AlerterLink::from_config(&config)?;
        let transitions = Transitions::default();
        let since = unix_ms().saturating_sub(ms(config.site_max_age));
        transitions.spawn(
            parts.store.clone(),
            &parts.writer,
            since,
            parts.shutdown.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                store: parts.store,
                access: parts.access,
                writer: parts.writer,
                metrics: parts.metrics,
                sessions,
                streams: Arc::new(Semaphore::new(config.max_live_streams)),
                stats_fresh: parts.stats_fresh,
                config,
                alerter,
                transitions,
                shutdown: parts.shutdown,
            }),
        })
    }
}

fn ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The dashboard's routes (none when `dashboard.enabled` is false).
pub fn router<S: Store>(state: DashboardState<S>) -> Router {
    if !state.inner.config.enabled {
        return Router::new();
    }
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
        .route("/ui/api/session", post(sign_in::<S>).get(whoami::<S>))
        .route("/ui/api/session/signout", post(sign_out::<S>))
        .route("/ui/api/overview", get(routes::overview::<S>))
        .route("/ui/api/node/{node}", get(routes::node::<S>))
        .route("/ui/api/site/{site}", get(routes::site::<S>))
        .route("/ui/api/alerts", get(routes::alerts::<S>))
        .route("/ui/api/alerts/{id}/ack", post(actions::acknowledge::<S>))
        .route("/ui/api/alerts/{id}/resolve", post(actions::resolve::<S>))
        .route("/ui/api/silences", post(actions::silence::<S>))
        .route("/ui/api/live", get(live_stream::<S>))
        // Unknown `/ui/api/*` paths answer 404 here, so they carry the
        // contract's headers too.
        .route(
            "/ui/api/{*rest}",
            axum::routing::any(|| async {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no such dashboard route (see docs/dashboard.md)",
                )
            }),
        )
        .layer(CompressionLayer::new())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The contract's headers on every `/ui` answer (errors included).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn index(headers: HeaderMap) -> Response {
    serve_asset("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve_asset(&file, &headers)
}

fn serve_asset(file: &str, headers: &HeaderMap) -> Response {
    assets::serve(file, headers).unwrap_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no such file /ui/{file}")).into_response()
    })
}

/// A signed-in request: its session and the token's grant now.
pub(crate) struct Signed<'a> {
    pub session: session::Session,
    pub caller: Caller<'a>,
}

impl<S: Store> DashboardState<S> {
    fn finish(&self, endpoint: &'static str, answer: Answer) -> Response {
        crate::api::finish(&self.inner.metrics, endpoint, answer)
    }

    /// The request's session, or 401: none, expired, or its token is no
    /// longer configured.
    pub(crate) fn signed(&self, headers: &HeaderMap) -> Result<Signed<'_>, ApiError> {
        let inner = &self.inner;
        let session = inner
            .sessions
            .read(headers, unix_ms())
            .map_err(|why| match why {
                session::NoSession::Missing => unauthorized("not signed in"),
                session::NoSession::Expired => unauthorized("session expired: sign in again"),
            })?;
        let caller = inner.access.named(&session.name).ok_or_else(|| {
            tracing::info!(token = %session.name, "dashboard session of a token no longer configured");
            unauthorized("this session's token is no longer configured: sign in again")
        })?;
        Ok(Signed { session, caller })
    }

    /// [`Self::signed`] for a state-changing request: 403 without the
    /// session's `X-CSRF-Token`.
    pub(crate) fn signed_write(&self, headers: &HeaderMap) -> Result<Signed<'_>, ApiError> {
        let signed = self.signed(headers)?;
        if !self.inner.sessions.csrf_ok(&signed.session, headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token (from the session's csrf)",
            ));
        }
        Ok(signed)
    }

    fn session_body(&self, signed: &Signed<'_>) -> serde_json::Value {
        let sites = signed.caller.site_patterns();
        json!({
            "ok": true,
            "name": signed.caller.name,
            "role": signed.caller.role().as_str(),
            "sites": sites,
            "csrf": self.inner.sessions.csrf(&signed.session),
            "expires_ms": signed.session.expires_ms,
        })
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let answer = s.sign_in(&headers, body);
    s.finish("ui_session", answer)
}

impl<S: Store> DashboardState<S> {
    fn sign_in(
        &self,
        headers: &HeaderMap,
        body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
    ) -> Answer {
        if !session::same_origin(headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "sign-in from another origin refused",
            ));
        }
        let Json(SignIn { token }) =
            body.map_err(|e| ApiError::bad_request(format!("body: {}", e.body_text())))?;
        let Some(caller) = self.inner.access.sign_in(token.trim()) else {
            tracing::info!("dashboard sign-in refused: not a role token");
            return Err(unauthorized(
                "not a role token of api.tokens (push tokens cannot sign in)",
            ));
        };
        let (session, jar) = self.inner.sessions.issue(caller.name, unix_ms());
        tracing::info!(
            token = caller.name,
            role = caller.role().as_str(),
            "dashboard sign-in"
        );
        let signed = Signed { session, caller };
        Ok((jar, Json(self.session_body(&signed))).into_response())
    }
}

async fn whoami<S: Store>(State(s): State<DashboardState<S>>, headers: HeaderMap) -> Response {
    let answer = s
        .signed(&headers)
        .map(|signed| Json(s.session_body(&signed)).into_response());
    s.finish("ui_session", answer)
}

async fn sign_out<S: Store>(State(s): State<DashboardState<S>>, headers: HeaderMap) -> Response {
    let answer = s.signed_write(&headers).map(|signed| {
        tracing::info!(token = signed.caller.name, "dashboard sign-out");
        (s.inner.sessions.clear(), Json(json!({ "ok": true }))).into_response()
    });
    s.finish("ui_signout", answer)
}

async fn live_stream<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = s.live(&headers, query);
    s.finish("ui_live", answer)
}

impl<S: Store> DashboardState<S> {
    fn live(
        &self,
        headers: &HeaderMap,
        query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    ) -> Answer {
        let signed = self.signed(headers)?;
        let pairs = routes::pairs(query)?;
        let value = routes::single(&pairs, "channels")?;
        let channels = live::channels(value).map_err(ApiError::bad_request)?;
        let permit = self
            .inner
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "too many live streams (dashboard.max_live_streams = {})",
                        self.inner.config.max_live_streams
                    ),
                )
            })?;
        let events = live::start(live::Feed {
            access: self.inner.access.clone(),
            token: signed.caller.name.to_owned(),
            channels,
            accepted: self.inner.writer.subscribe(),
            buffer: self.inner.config.live_buffer,
            shutdown: self.inner.shutdown.clone(),
            expires_ms: signed.session.expires_ms,
            permit,
        });
        tracing::debug!(token = signed.caller.name, "dashboard live stream opened");
        Ok(Sse::new(ReceiverStream::new(events))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response())
    }
}
