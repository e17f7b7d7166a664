//! The HTTP API of the old serverless worker, so `live_head.sh` and the
//! dashboards built on the worker keep working against the collector:
//!
//! - `POST /push` (`Authorization: Bearer <token>`): one JSON object or an
//!   array of `{"site","status","ms","port","location"?,"ts"}`; all stored or,
//!   on any invalid record, none. `{"ok":true,"stored":N}`.
//! - `GET /last?site=`: the site's newest probe,
//!   `{"ok":true,"site":..,"data":{"s","ms","p","l","x","t"}}`; 404 when unknown.
//! - `GET /dump_last?status=&cross=&since=&until=&site_like=&limit=&offset=&order=`:
//!   the newest probe of every matching site.
//!
//! Reads are open unless `api.open_reads` is false; then they need a role
//! token and show its sites only ([`crate::access`]).
//!
//! Every error is `{"ok":false,"error":"<parameter or field>: <reason>"}` with
//! 400 (invalid input, or `Authorization` sent twice), 401 (token), 403 (a
//! role token on `/push`), 404 (unknown site, or one the token may not see),
//! 408 (a `/push` body slower than `limits.body_timeout`), 413 (too large),
//! 415 (a `/push` body not declared `application/json`) or 503 (storage
//! failed or timed out; or, with `Retry-After`, too many push bytes being
//! read at once, `api.max_push_bytes_in_flight`). Parsing and validation are
//! pure ([`push`], [`dump`], [`params`]); the handlers here only
//! authenticate, read, call the store and answer.

pub mod auth;
pub mod dump;
pub mod params;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use livehead_common::clock::unix_ms;
use livehead_common::host::check_host_name;
use livehead_common::vantage::INSIDE;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::access::{Access, Reader, Refusal};
use crate::config::{ApiConfig, Limits};
use crate::group_commit::{GroupCommit, QueuedBatch, WriterStopped};
use crate::metrics::CollectorMetrics;
use crate::store::query::MAX_DUMP_LIMIT;
use crate::store::{DumpFilter, LastState, Rows, Store, StoreError, WriteOutcome};

pub use auth::{TokenError, Tokens};

/// What the handlers share.
pub struct ApiState<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: Arc<S>,
    /// Where `/push` writes: the group commit gRPC batches go through too.
    writer: GroupCommit,
    tokens: Tokens,
    access: Arc<Access>,
    metrics: CollectorMetrics,
    limits: Limits,
    config: ApiConfig,
    /// Bytes of `/push` bodies being read or parsed, all requests together.
    push_bytes: Arc<Semaphore>,
}

impl<S> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Store> ApiState<S> {
    pub fn new(
        store: Arc<S>,
        writer: GroupCommit,
        tokens: Tokens,
        access: Arc<Access>,
        metrics: CollectorMetrics,
        limits: Limits,
        config: ApiConfig,
    ) -> Self {
        let budget = config
            .max_push_bytes_in_flight
            .max(config.max_push_bytes)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                store,
                writer,
                tokens,
                access,
                metrics,
                limits,
                config,
                push_bytes: Arc::new(Semaphore::new(budget)),
            }),
        }
    }
}

/// `/push`, `/last` and `/dump_last`.
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    Router::new()
        // The body is read with `api.max_push_bytes` by the handler, which
        // answers 413 in JSON; axum's own limit would answer first, in text.
        .route(
            "/push",
            post(post_push::<S>).layer(DefaultBodyLimit::disable()),
        )
        .route("/last", get(get_last::<S>))
        .route("/dump_last", get(get_dump_last::<S>))
        .with_state(state)
}

/// An error answer: `{"ok":false,"error":message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds to send in `Retry-After`, when retrying soon should work.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized() -> Self {
        Self::refused(Refusal::Unauthorized)
    }

    /// 400 or 401 before the route looks at the request.
    pub(crate) fn refused(refusal: Refusal) -> Self {
        Self::new(refusal.status(), refusal.message())
    }

    /// 404 for a site that does not exist or that the caller may not see:
    /// the same answer, so names do not leak.
    pub(crate) fn site_not_found(site: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("site {site} not found"))
    }

    fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body: over the {limit}-byte limit (api.max_push_bytes)"),
        )
    }

    fn unsupported_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    pub(crate) fn storage(error: &StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "ok": false, "error": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub(crate) type Answer = Result<Response, ApiError>;

async fn post_push<S: Store>(
    State(api): State<ApiState<S>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = api.push(&headers, body).await;
    api.finish("push", answer)
}

async fn get_last<S: Store>(
    State(api): State<ApiState<S>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let answer = api.last(&headers, query).await;
    api.finish("last", answer)
}

async fn get_dump_last<S: Store>(
    State(api): State<ApiState<S>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let answer = api.dump_last(&headers, query).await;
    api.finish("dump_last", answer)
}

/// The response of `answer` from `endpoint`, logged (failures as errors,
/// refusals at debug) and counted in `api_requests` by status: how every
/// HTTP surface of the collector ends a request.
pub(crate) fn finish(
    metrics: &CollectorMetrics,
    endpoint: &'static str,
    answer: Answer,
) -> Response {
    let response = answer.unwrap_or_else(|error| {
        if error.status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(endpoint, error = %error.message, "API request failed");
        } else {
            tracing::debug!(endpoint, status = %error.status, error = %error.message,
                "API request refused");
        }
        error.into_response()
    });
    metrics
        .api_requests
        .with_label_values(&[endpoint, response.status().as_str()])
        .inc();
    response
}

impl<S: Store> ApiState<S> {
    fn finish(&self, endpoint: &'static str, answer: Answer) -> Response {
        finish(&self.inner.metrics, endpoint, answer)
    }

    /// The name of the request's token, or 401; 400 when `Authorization`
    /// comes twice (which one a proxy or the worker would have read is
    /// anyone's guess).
    fn authorize(&self, endpoint: &'static str, headers: &HeaderMap) -> Result<&str, ApiError> {
        if headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ApiError::bad_request("authorization: sent more than once"));
        }
        self.inner.tokens.authorize(headers).ok_or_else(|| {
            tracing::info!(endpoint, "refused: missing or wrong bearer token");
            ApiError::unauthorized()
        })
    }

    /// Who reads: anyone while `api.open_reads`, else a role token (401).
    fn authorize_read(
        &self,
        endpoint: &'static str,
        headers: &HeaderMap,
    ) -> Result<Reader<'_>, ApiError> {
        self.inner
            .access
            .old_reader(headers, &self.inner.tokens)
            .map_err(|refusal| {
                tracing::info!(endpoint, error = refusal.message(), "read refused");
                ApiError::refused(refusal)
            })
    }

    /// The push token of a push; 403 for a role token (`api.tokens` never
    /// write rows), 401 for anything else.
    fn authorize_push(&self, headers: &HeaderMap) -> Result<&str, ApiError> {
        match self.authorize("push", headers) {
            Err(error) if error.status == StatusCode::UNAUTHORIZED => {
                match self.inner.access.authenticate(headers) {
                    Ok(caller) => {
                        tracing::info!(
                            endpoint = "push",
                            token = caller.name,
                            role = caller.role().as_str(),
                            "refused: a role token on /push"
                        );
                        Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "this token may not write: /push takes push tokens (api.push_tokens)",
                        ))
                    }
                    Err(_) => Err(error),
                }
            }
            other => other,
        }
    }

    async fn push(&self, headers: &HeaderMap, body: Body) -> Answer {
        let token = self.authorize_push(headers)?;
        check_json(headers)?;
        let limit = self.inner.config.max_push_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        // Chunked: room for the largest body allowed.
        let room = declared.map_or(limit, |n| usize::try_from(n).unwrap_or(limit));
        let _room = self.push_room(room)?;
        let deadline = self.inner.limits.body_timeout;
        let body = tokio::time::timeout(deadline, read_limited(body, limit, declared))
            .await
            .map_err(|_| body_timeout(deadline))??;
        let agent = format!("push:{token}");
        let limits = &self.inner.limits;
        let probes = push::check_size(&body, limits)
            .and_then(|()| push::parse_push(&body, &agent, unix_ms(), limits))
            .map_err(|error| {
                self.count_records("refused", error.records());
                tracing::info!(
                    endpoint = "push",
                    token,
                    records = error.records(),
                    error = error.message(),
                    "push refused"
                );
                match error {
                    push::PushError::Invalid { message, .. } => ApiError::bad_request(message),
                    push::PushError::TooMany { message, .. } => {
                        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
                    }
                }
            })?;
        if probes.is_empty() {
            return Ok(Json(json!({ "ok": true, "stored": 0 })).into_response());
        }
        // The store recognises a replayed (agent, seq); every push is new, and
        // a random 63-bit sequence number never repeats in practice (63: the
        // SQLite store keeps seq in a signed 64-bit integer).
        let seq = rand::random::<u64>() >> 1;
        let records = probes.len();
        let queued = QueuedBatch {
            agent,
            seq,
            rows: Rows::from(probes),
            span: tracing::Span::none(),
        };
        // The writer only stops with the collector.
        let stopping = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, WriterStopped.to_string());
        let answer = self
            .inner
            .writer
            .submit(queued)
            .await
            .map_err(|_| stopping())?;
        let written = answer.await.map_err(|_| stopping())?;
        let stored = match written {
            Ok(WriteOutcome::Written { rows }) => rows,
            Ok(WriteOutcome::Duplicate | WriteOutcome::Conflict) => {
                tracing::warn!(
                    endpoint = "push",
                    token,
                    seq,
                    "push taken for a replay; not stored"
                );
                0
            }
            Err(error) => {
                self.count_records("failed", records);
                tracing::error!(endpoint = "push", token, records, %error,
                    "writing a push failed");
                return Err(ApiError::storage(&error));
            }
        };
        self.count_records("stored", stored);
        tracing::debug!(endpoint = "push", token, records = stored, "push stored");
        Ok(Json(json!({ "ok": true, "stored": stored })).into_response())
    }

    async fn last(
        &self,
        headers: &HeaderMap,
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Answer {
        let reader = self.authorize_read("last", headers)?;
        let pairs = query_pairs(query)?;
        let params = params::Params::new(&pairs, &["site", "vantage"]).map_err(param_error)?;
        let vantage = params::vantage(params.get("vantage")).map_err(param_error)?;
        let site = params
            .get("site")
            .ok_or_else(|| ApiError::bad_request("site: missing"))?
            .to_ascii_lowercase();
        check_host_name(&site).map_err(|e| ApiError::bad_request(format!("site: {e}")))?;
        if !reader.may_read(&site) {
            return Err(ApiError::site_not_found(&site));
        }
        let state = self
            .inner
            .store
            .last(&site, &vantage)
            .await
            .map_err(|e| ApiError::storage(&e))?
            .ok_or_else(|| ApiError::site_not_found(&site))?;
        let body = json!({ "ok": true, "site": site, "data": StateJson::new(&state, false) });
        Ok(Json(body).into_response())
    }

    async fn dump_last(
        &self,
        headers: &HeaderMap,
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Answer {
        let reader = self.authorize_read("dump_last", headers)?;
        let pairs = query_pairs(query)?;
        let filter = dump::parse_dump(&pairs).map_err(param_error)?;
        let states = if reader.is_restricted() {
            self.dump_visible(&filter, &reader).await?
        } else {
            self.inner
                .store
                .dump_last(&filter)
                .await
                .map_err(|e| ApiError::storage(&e))?
        };
        let data: Vec<StateJson<'_>> = states.iter().map(|s| StateJson::new(s, true)).collect();
        let body = json!({
            "ok": true,
            "count": data.len(),
            "limit": filter.limit,
            "offset": filter.offset,
            "order": filter.order.as_str(),
            "data": data,
        });
        Ok(Json(body).into_response())
    }

    /// `/dump_last` for a token that sees some sites only: the store's pages
    /// of the filter's matches (in its order), kept when visible, until the
    /// requested page is full. The store has no site-set filter, so this
    /// scans at most [`MAX_RESTRICTED_SCAN`] matches; past it, 400 asking
    /// for a narrower filter.
    async fn dump_visible(
        &self,
        filter: &DumpFilter,
        reader: &Reader<'_>,
    ) -> Result<Vec<LastState>, ApiError> {
        let wanted = usize::try_from(filter.offset)
            .unwrap_or(usize::MAX)
            .saturating_add(filter.limit as usize);
        let mut visible = Vec::new();
        let mut page = DumpFilter {
            limit: MAX_DUMP_LIMIT,
            offset: 0,
            ..filter.clone()
        };
        loop {
            let states = self
                .inner
                .store
                .dump_last(&page)
                .await
                .map_err(|e| ApiError::storage(&e))?;
            let last_page = states.len() < MAX_DUMP_LIMIT as usize;
            visible.extend(states.into_iter().filter(|s| reader.may_read(&s.site)));
            if last_page || visible.len() >= wanted {
                break;
            }
            page.offset += u64::from(MAX_DUMP_LIMIT);
            if page.offset >= MAX_RESTRICTED_SCAN {
                return Err(ApiError::bad_request(format!(
                    "this token sees some sites only and the filter matches more than \
                     {MAX_RESTRICTED_SCAN} sites: narrow it (site_like, status, since, until)"
                )));
            }
        }
        let offset = usize::try_from(filter.offset).unwrap_or(usize::MAX);
        Ok(visible
            .into_iter()
            .skip(offset)
            .take(filter.limit as usize)
            .collect())
    }

    /// Room for `bytes` of body in `api.max_push_bytes_in_flight`, held until
    /// the push is answered; 503 with `Retry-After` when there is none now
    /// (waiting would only pile requests up).
    fn push_room(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let bytes = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        Arc::clone(&self.inner.push_bytes)
            .try_acquire_many_owned(bytes)
            .map_err(|_| {
                tracing::warn!(
                    endpoint = "push",
                    bytes,
                    "push refused: api.max_push_bytes_in_flight reached"
                );
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "body: too many push bytes being read at once \
                         (api.max_push_bytes_in_flight); retry",
                    )
                }
            })
    }

    fn count_records(&self, outcome: &str, n: usize) {
        self.inner
            .metrics
            .api_push_records
            .with_label_values(&[outcome])
            .inc_by(n as u64);
    }
}

/// Most sites a restricted token's `/dump_last` looks through (20 store
/// reads of [`MAX_DUMP_LIMIT`]).
pub const MAX_RESTRICTED_SCAN: u64 = 100_000;

/// One site's newest probe in the old worker's short names, then the
/// certificate trust and content check under their column names, each only
/// when set: a plain probe answers exactly the old worker's shape, which
/// its clients may compare key for key.
#[derive(Serialize)]
struct StateJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'a str>,
    s: u16,
    ms: u32,
    p: u16,
    l: Option<&'a str>,
    x: u8,
    t: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    cert_trust: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cert_error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    content: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    content_failure: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    content_excerpt: &'a str,
    /// Only when not `inside`: the default answers keep the old worker's keys.
    #[serde(skip_serializing_if = "str::is_empty")]
    vantage: &'a str,
}

impl<'a> StateJson<'a> {
    fn new(state: &'a LastState, with_site: bool) -> Self {
        Self {
            site: with_site.then_some(state.site.as_str()),
            s: state.status,
            ms: state.ms,
            p: state.port,
            l: (!state.location.is_empty()).then_some(state.location.as_str()),
            x: state.cross,
            t: state.ts,
            cert_trust: &state.cert_trust,
            cert_error: &state.cert_error,
            content: &state.content,
            content_failure: &state.content_failure,
            content_excerpt: &state.content_excerpt,
            vantage: if state.vantage == INSIDE {
                ""
            } else {
                &state.vantage
            },
        }
    }
}

fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
}

/// 415 unless the body is declared JSON (`application/json`, parameters such
/// as `charset` allowed). The old script always declares it; a missing type
/// is refused too, since a client that omits it is not that script.
fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::unsupported_type(
            "content-type: missing; send the body as application/json",
        ));
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media = text.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let shown: String = text.chars().take(100).collect();
    Err(ApiError::unsupported_type(format!(
        "content-type: {shown:?} is not application/json"
    )))
}

fn body_timeout(deadline: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("body: not received within {deadline:?} (limits.body_timeout)"),
    )
}

fn param_error(error: params::ParamError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

/// The whole body, or 413 as soon as it grows past `limit` bytes.
async fn read_limited(
    body: Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let mut buf = Vec::with_capacity(capacity);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("body: could not be read: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    //! The handlers against an in-memory store: what the integration tests
    //! cannot provoke (a failing store) and the answers' exact shape.

    use std::sync::Mutex;

    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::config::PushToken;
    use crate::group_commit::QueueBounds;
    use crate::store::{BatchWrite, DumpFilter, ProbeRow};

    const TOKEN: &str = "the-push-token";

    #[derive(Default)]
    struct MemStore {
        rows: Mutex<Vec<(String, ProbeRow)>>,
        broken: bool,
    }

    impl MemStore {
        fn rows(&self) -> Vec<(String, ProbeRow)> {
            self.rows.lock().expect("not poisoned").clone()
        }

        fn fail(&self) -> Result<(), StoreError> {
            if self.broken {
                Err(StoreError::Unsupported("the disk is on fire".into()))
            } else {
                Ok(())
            }
        }
    }

    impl Store for MemStore {
        async fn write_batches(
            &self,
            batches: &[BatchWrite<'_>],
        ) -> Result<Vec<WriteOutcome>, StoreError> {
            self.fail()?;
            let mut rows = self.rows.lock().expect("not poisoned");
            let mut outcomes = Vec::new();
            for batch in batches {
                rows.extend(
                    batch
                        .rows
                        .probes
                        .iter()
                        .map(|p| (batch.agent.to_owned(), p.clone())),
                );
                outcomes.push(WriteOutcome::Written {
                    rows: batch.rows.len(),
                });
            }
            Ok(outcomes)
        }

        async fn maintain(&self) -> Result<(), StoreError> {
            Ok(())
        }

        async fn stats(
            &self,
            _: &crate::store::StatsQuery<'_>,
        ) -> Result<crate::store::Rows, StoreError> {
            self.fail()?;
            Ok(crate::store::Rows::default())
        }

        async fn last(&self, site: &str, vantage: &str) -> Result<Option<LastState>, StoreError> {
            self.fail()?;
            let rows = self.rows.lock().expect("not poisoned");
            Ok(rows
                .iter()
                .rev()
                .find(|(_, r)| r.site == site && r.vantage == vantage)
                .map(|(_, r)| state_of(r)))
        }

        async fn dump_last(&self, filter: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
            self.fail()?;
            let mut out = Vec::new();
            for (_, row) in self.rows.lock().expect("not poisoned").iter() {
                let status = filter.statuses.is_empty() || filter.statuses.contains(&row.status);
                if status && row.vantage == filter.vantage {
                    out.push(state_of(row));
                }
            }
            Ok(out)
        }
    }

    struct Served {
        base: String,
        store: Arc<MemStore>,
        /// What the group commit published.
        accepted: tokio::sync::broadcast::Receiver<Arc<crate::group_commit::Accepted>>,
        metrics: CollectorMetrics,
        client: reqwest::Client,
    }

    async fn serve(store: MemStore, config: ApiConfig) -> Served {
        let store = Arc::new(store);
        let metrics = CollectorMetrics::new();
        let tokens = Tokens::from_config(&config.push_tokens).expect("tokens");
        let access = Arc::new(Access::from_config(&config).expect("role tokens"));
        let writer = GroupCommit::start(store.clone(), QueueBounds::rows(10_000), metrics.clone());
        let accepted = writer.subscribe();
        let state = ApiState::new(
            store.clone(),
            writer,
            tokens,
            access,
            metrics.clone(),
            Limits::default(),
            config,
        );
        let readiness = crate::ready::Readiness::new(metrics.clone());
        let app = crate::http::router(&metrics, &readiness, router(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Served {
            base: format!("http://{addr}"),
            store,
            accepted,
            metrics,
            client: livehead_testkit::http_client(),
        }
    }

    fn config() -> ApiConfig {
        ApiConfig {
            push_tokens: vec![PushToken {
                name: "ci".into(),
                sha256: hex::encode(Sha256::digest(TOKEN.as_bytes())),
            }],
            ..ApiConfig::default()
        }
    }

    fn record(site: &str, status: u16) -> Value {
        json!({"site": site, "status": status, "ms": 7, "port": 8080, "ts": unix_ms()})
    }

    impl Served {
        async fn push(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
            let response = self
                .client
                .post(format!("{}/push", self.base))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request");
            answer(response).await
        }

        /// A push with `Transfer-Encoding: chunked` (no Content-Length), by hand:
        /// reqwest without its `stream` feature always sends a length.
        async fn push_chunked(&self, body: &str) -> (StatusCode, Value) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = self.base.trim_start_matches("http://");
            let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut request = format!(
                "POST /push HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            for chunk in body.as_bytes().chunks(100) {
                request.push_str(&format!("{:x}\r\n", chunk.len()));
                request.push_str(std::str::from_utf8(chunk).expect("ASCII body"));
                request.push_str("\r\n");
            }
            request.push_str("0\r\n\r\n");
            // The server may answer 413 and close before reading everything.
            let _ = conn.write_all(request.as_bytes()).await;
            let mut response = Vec::new();
            let _ = conn.read_to_end(&mut response).await;
            let response = String::from_utf8(response).expect("UTF-8 answer");
            let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
            assert!(
                !head.to_ascii_lowercase().contains("transfer-encoding"),
                "{head}"
            );
            let code: u16 = head[9..12].parse().expect("status code");
            let status = StatusCode::from_u16(code).expect("status");
            (status, serde_json::from_str(body).expect("a JSON answer"))
        }

        async fn get(&self, path: &str) -> (StatusCode, Value) {
            let response = self
                .client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("request");
            answer(response).await
        }

        fn requests(&self, endpoint: &str, code: &str) -> u64 {
            self.metrics
                .api_requests
                .with_label_values(&[endpoint, code])
                .get()
        }

        fn records(&self, outcome: &str) -> u64 {
            self.metrics
                .api_push_records
                .with_label_values(&[outcome])
                .get()
        }
    }

    async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let body = response.json().await.expect("a JSON answer");
        (status, body)
    }

    #[tokio::test]
    async fn a_push_is_written_as_one_batch_of_its_token() {
        let mut s = serve(MemStore::default(), config()).await;
        let body = json!([record("a.com", 200), record("B.com", 0)]).to_string();
        let (status, answer) = s.push(body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::OK, json!({"ok": true, "stored": 2}))
        );
        let rows = s.store.rows();
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|(agent, row)| agent == "push:ci" && row.agent == "push:ci")
        );
        assert_eq!(
            (rows[1].1.site.as_str(), rows[1].1.error.as_str()),
            ("b.com", "other")
        );
        assert_eq!(s.requests("push", "200"), 1);
        assert_eq!(s.records("stored"), 2);
        // Through the group commit, like gRPC batches: published once written.
        let accepted = s.accepted.try_recv().expect("the push was published");
        assert_eq!(
            (accepted.agent.as_str(), accepted.rows.probes.len()),
            ("push:ci", 2)
        );

        let (status, answer) = s.get("/last?site=B.COM").await;
        assert_eq!(status, StatusCode::OK);
        let t = rows[1].1.ts;
        assert_eq!(
            answer,
            json!({"ok": true, "site": "b.com",
                   "data": {"s": 0, "ms": 7, "p": 8080, "l": null, "x": 0, "t": t}})
        );
    }

    /// A row's state as the stores read it back.
    fn state_of(r: &ProbeRow) -> LastState {
        LastState {
            site: r.site.clone(),
            status: r.status,
            ms: r.ms,
            port: r.port,
            location: r.location.clone(),
            cross: r.cross,
            ts: r.ts,
            cert_trust: r.cert_trust.clone(),
            cert_error: r.cert_error.clone(),
            content: r.content.clone(),
            content_failure: r.content_failure.clone(),
            content_excerpt: r.content_excerpt.clone(),
            vantage: r.vantage.clone(),
        }
    }

    #[tokio::test]
    async fn trust_and_content_keys_appear_only_when_set() {
        let row = |site: &str| ProbeRow {
            site: site.into(),
            status: 200,
            ms: 5,
            port: 443,
            ts: 1_800_000_000_000,
            ..ProbeRow::default()
        };
        let checked = ProbeRow {
            cert_trust: "self_signed".into(),
            cert_error: "self-signed certificate".into(),
            content: "failed".into(),
            content_failure: "contains \"Error establishing a database connection\"".into(),
            content_excerpt: "<h1>Error establishing a database connection</h1>".into(),
            ..row("b.com")
        };
        let trusted = ProbeRow {
            cert_trust: "trusted".into(),
            content: "ok".into(),
            ..row("c.com")
        };
        let store = MemStore::default();
        *store.rows.lock().expect("not poisoned") = vec![
            ("e".into(), row("a.com")),
            ("e".into(), checked),
            ("e".into(), trusted),
        ];
        let s = serve(store, config()).await;
        let old_shape =
            json!({"s": 200, "ms": 5, "p": 443, "l": null, "x": 0, "t": 1_800_000_000_000u64});
        let (_, answer) = s.get("/last?site=a.com").await;
        assert_eq!(answer["data"], old_shape);
        let (_, answer) = s.get("/last?site=b.com").await;
        let mut expected = old_shape.clone();
        for (key, value) in [
            ("cert_trust", "self_signed"),
            ("cert_error", "self-signed certificate"),
            ("content", "failed"),
            (
                "content_failure",
                "contains \"Error establishing a database connection\"",
            ),
            (
                "content_excerpt",
                "<h1>Error establishing a database connection</h1>",
            ),
        ] {
            expected[key] = json!(value);
        }
        assert_eq!(answer["data"], expected);
        let (_, answer) = s.get("/dump_last").await;
        let data = answer["data"].as_array().expect("rows");
        let keys = |i: usize| -> Vec<&str> {
            let object = data[i].as_object().expect("object");
            object.keys().map(String::as_str).collect()
        };
        assert_eq!(keys(0), ["site", "s", "ms", "p", "l", "x", "t"]);
        assert_eq!(data[1]["content_excerpt"], expected["content_excerpt"]);
        assert_eq!(
            keys(2),
            [
                "site",
                "s",
                "ms",
                "p",
                "l",
                "x",
                "t",
                "cert_trust",
                "content"
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_store_is_503_in_json() {
        let store = MemStore {
            broken: true,
            ..MemStore::default()
        };
        let s = serve(store, config()).await;
        let (status, answer) = s.push(json!(record("a.com", 200)).to_string()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer["ok"], json!(false));
        let error = answer["error"].as_str().expect("error text");
        assert!(error.starts_with("storage unavailable: "), "{error}");
        assert_eq!(s.records("failed"), 1);
        for path in ["/last?site=a.com", "/dump_last"] {
            let (status, answer) = s.get(path).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(answer["ok"], json!(false));
        }
        assert_eq!(s.requests("dump_last", "503"), 1);
    }

    #[tokio::test]
    async fn oversize_bodies_are_413_in_json_with_or_without_a_length() {
        let limit = 1000;
        let s = serve(
            MemStore::default(),
            ApiConfig {
                max_push_bytes: limit,
                ..config()
            },
        )
        .await;
        let big = json!(vec![record("a.com", 200); 30]).to_string();
        assert!(big.len() > limit);
        let want = json!({"ok": false,
                          "error": "body: over the 1000-byte limit (api.max_push_bytes)"});
        assert_eq!(
            s.push(big.clone()).await,
            (StatusCode::PAYLOAD_TOO_LARGE, want.clone())
        );

        // Chunked: no Content-Length, the limit applies while reading.
        let (status, answer) = s.push_chunked(&big).await;
        assert_eq!((status, answer), (StatusCode::PAYLOAD_TOO_LARGE, want));
        let (status, _) = s
            .push_chunked(&json!([record("a.com", 200)]).to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "a small chunked body is read whole");
        s.store.rows.lock().expect("not poisoned").clear();
        assert!(s.store.rows().is_empty());

        // Exactly at the limit is fine.
        let mut at_limit = json!(record("a.com", 200)).to_string();
        at_limit.push_str(&" ".repeat(limit - at_limit.len()));
        assert_eq!(s.push(at_limit).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn reads_need_a_token_only_when_configured() {
        let s = serve(MemStore::default(), config()).await;
        assert_eq!(s.get("/dump_last").await.0, StatusCode::OK);

        let closed = ApiConfig {
            read_requires_token: true,
            ..config()
        };
        let s = serve(MemStore::default(), closed).await;
        for path in ["/last?site=a.com", "/dump_last"] {
            let response = s
                .client
                .get(format!("{}{path}", s.base))
                .send()
                .await
                .expect("request");
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            assert_eq!(
                answer(response).await,
                (
                    StatusCode::UNAUTHORIZED,
                    json!({"ok": false, "error": "missing or wrong bearer token"})
                )
            );
            let response = s
                .client
                .get(format!("{}{path}", s.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request");
            assert_ne!(response.status().as_u16(), 401, "{path}");
        }
        assert_eq!(s.requests("last", "401"), 1);
    }

    #[tokio::test]
    async fn without_tokens_every_push_is_refused() {
        let s = serve(MemStore::default(), ApiConfig::default()).await;
        let (status, _) = s.push(json!(record("a.com", 200)).to_string()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(s.store.rows().is_empty());
    }

    #[tokio::test]
    async fn metrics_carry_the_collectors_prefix() {
        let s = serve(MemStore::default(), config()).await;
        s.get("/dump_last?limit=0").await;
        let text = s
            .client
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains(
                r#"livehead_collector_api_requests_total{code="400",endpoint="dump_last"} 1"#
            ),
            "{text}"
        );
    }
}
