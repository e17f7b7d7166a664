//! The ping endpoints (`/ping/...`, see [`super::path`]): look the check up
//! in the replica's cache, rate-limit per check, keep the body's first
//! `heartbeats.body_limit` bytes, pair an end with its start for the run's
//! duration, un-pause a paused check, and answer once the ping is stored.
//!
//! A body is read up to `heartbeats.max_body_bytes`; past it the rest is not
//! read, the ping is stored anyway (a job that printed a lot still reports)
//! with `body_bytes` saying how much was read. Answers are Healthchecks'
//! text: `OK`, `Created` (201, a check made by `?create=1`), `not found`
//! (404: unknown check or key, nothing stored), 400 naming what is wrong,
//! 429 `rate limited`, 503 when the store fails.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use livehead_heartbeat::{MAX_OPEN_RUNS, Tracker};
use livehead_proto::v1::{HeartbeatCheck, HeartbeatPing, PingKind};

use super::path::{self, PathError, PingPath, PingQuery, Target};
use super::{HeartbeatsState, keep_config, next_version, ping_record, validate_check};
use crate::store::samples::{HeartbeatCheckRow, Newest, SampleKind, Scope, StatsQuery};
use crate::store::{Rows, Store};
use crate::validate::heartbeats::check_ping;

/// Healthchecks' defaults for a check made by `?create=1`.
pub const CREATED_PERIOD_S: u64 = 86_400;
pub const CREATED_GRACE_S: u64 = 3_600;
/// Pings of a check read to pair an end with its start.
const RUN_PINGS: u32 = 2 * MAX_OPEN_RUNS as u32;
/// How often the limiter forgets checks that stopped pinging.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// A keyed limiter: one bucket per check id, for known checks only (so its
/// size is bounded by the number of checks), swept every minute.
pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    swept: Mutex<Instant>,
}

impl Limiter {
    pub fn new(config: &crate::config::HeartbeatsConfig) -> Self {
        let rate = NonZeroU32::new(config.max_pings_per_check).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.ping_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Whether `check_id` may ping now.
    pub fn allow(&self, check_id: &str) -> bool {
        self.sweep();
        self.limiter.check_key(&check_id.to_owned()).is_ok()
    }

    fn sweep(&self) {
        let Ok(mut swept) = self.swept.try_lock() else {
            return;
        };
        if swept.elapsed() >= LIMITER_SWEEP {
            *swept = Instant::now();
            self.limiter.retain_recent();
        }
    }
}

pub fn router<S: Store>(state: HeartbeatsState<S>) -> Router {
    Router::new()
        // The handler reads the body itself, to `heartbeats.max_body_bytes`.
        .route(
            "/ping/{*rest}",
            get(handle::<S>)
                .post(handle::<S>)
                .layer(DefaultBodyLimit::disable()),
        )
        .with_state(state)
}

/// A refused ping: status and text.
type Refused = (StatusCode, String);

fn refused(status: StatusCode, text: impl Into<String>) -> Refused {
    (status, text.into())
}

fn not_found() -> Refused {
    refused(StatusCode::NOT_FOUND, "not found")
}

async fn handle<S: Store>(State(state): State<HeartbeatsState<S>>, request: Request) -> Response {
    let (status, text) = match state.ping(request).await {
        Ok(created) if created => (StatusCode::CREATED, "Created".to_owned()),
        Ok(_) => (StatusCode::OK, "OK".to_owned()),
        Err(refusal) => refusal,
    };
    let outcome = match status {
        StatusCode::OK | StatusCode::CREATED => "stored",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::TOO_MANY_REQUESTS => "limited",
        StatusCode::SERVICE_UNAVAILABLE => "failed",
        _ => "invalid",
    };
    state
        .inner
        .metrics
        .heartbeat_pings
        .with_label_values(&[outcome])
        .inc();
    state
        .inner
        .metrics
        .api_requests
        .with_label_values(&["ping", status.as_str()])
        .inc();
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The check a ping is for.
struct Resolved<'a> {
    check: HeartbeatCheckRow,
    /// Made by `?create=1`: written with the ping.
    created: Option<HeartbeatCheckRow>,
    /// Held until then.
    _creating: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Resolved<'_> {
    fn found(check: HeartbeatCheckRow) -> Self {
        Self {
            check,
            created: None,
            _creating: None,
        }
    }
}

/// What a ping needs from its request besides the body.
struct Meta {
    method: String,
    remote: String,
    user_agent: String,
}

impl<S: Store> HeartbeatsState<S> {
    /// Stores the ping; true when `?create=1` created its check.
    async fn ping(&self, request: Request) -> Result<bool, Refused> {
        let rest = request
            .uri()
            .path()
            .strip_prefix("/ping/")
            .unwrap_or_default()
            .to_owned();
        let parsed = path::parse(&rest).map_err(path_refusal)?;
        let pairs = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            .map(|Query(pairs)| pairs)
            .unwrap_or_default();
        let query = path::parse_query(&pairs).map_err(path_refusal)?;
        let meta = self.meta(&request);
        let Resolved {
            check,
            created,
            _creating,
        } = self.resolve(&parsed, &query, &meta).await?;
        if !self.inner.limiter.allow(&check.check_id) {
            tracing::debug!(check_id = check.check_id, "ping rate-limited");
            return Err(refused(StatusCode::TOO_MANY_REQUESTS, "rate limited"));
        }
        let body = self.read_body(request.into_body()).await?;
        let ping = self
            .ping_record(&check, &parsed, &query, meta, body)
            .await?;
        let was_created = created.is_some();
        self.store_ping(check, created, ping).await?;
        Ok(was_created)
    }

    fn meta(&self, request: &Request) -> Meta {
        // No proxy setting exists on the collector: the TCP peer is the
        // client (behind a proxy, the proxy).
        let remote = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_default();
        let user_agent = header_text(request.headers(), header::USER_AGENT);
        Meta {
            method: request.method().as_str().to_owned(),
            remote,
            user_agent: clip(&user_agent, self.inner.limits.max_text_bytes),
        }
    }

    /// The live check the ping names, or the one `?create=1` makes (not yet
    /// stored: it goes in the ping's batch).
    async fn resolve(
        &self,
        parsed: &PingPath,
        query: &PingQuery,
        meta: &Meta,
    ) -> Result<Resolved<'_>, Refused> {
        let store = &*self.inner.store;
        let directory = &self.inner.directory;
        let lookup = match &parsed.target {
            Target::Id(id) => directory.find(store, |c| &c.check_id == id).await,
            Target::Slug { key, slug } => {
                let Some(project) = self.inner.keys.project_of(key) else {
                    return Err(not_found());
                };
                let named = |c: &HeartbeatCheckRow| c.project == project && &c.slug == slug;
                let found = directory.find(store, named).await;
                if let (Ok(None), true) = (&found, query.create) {
                    // One creation at a time on this replica, until the new
                    // check is written: a burst of first pings makes one check.
                    let guard = self.inner.writing.lock().await;
                    if let Ok(Some(check)) = directory.find(store, named).await {
                        return Ok(Resolved::found(check));
                    }
                    let created = self.created_check(project, slug, meta).await?;
                    return Ok(Resolved {
                        check: created.clone(),
                        created: Some(created),
                        _creating: Some(guard),
                    });
                }
                found
            }
        };
        match lookup {
            Ok(Some(check)) => Ok(Resolved::found(check)),
            Ok(None) => Err(not_found()),
            Err(error) => {
                tracing::error!(%error, "heartbeat check lookup failed");
                Err(refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage unavailable",
                ))
            }
        }
    }

    /// A check for `?create=1`, Healthchecks' defaults; named after its slug
    /// (`project/slug` when another check has that name).
    async fn created_check(
        &self,
        project: &str,
        slug: &str,
        meta: &Meta,
    ) -> Result<HeartbeatCheckRow, Refused> {
        let store = &*self.inner.store;
        let taken = self
            .inner
            .directory
            .find(store, |c| c.name == slug)
            .await
            .map_err(|_| refused(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"))?;
        let name = match taken {
            Some(_) => format!("{project}/{slug}"),
            None => slug.to_owned(),
        };
        let now = self.now();
        let record = HeartbeatCheck {
            ts_ms: now,
            check_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            project: project.to_owned(),
            slug: slug.to_owned(),
            name,
            period_s: CREATED_PERIOD_S,
            grace_s: CREATED_GRACE_S,
            source: "ping".into(),
            actor: meta.remote.clone(),
            ..HeartbeatCheck::default()
        };
        validate_check(&record, &self.ctx(now))
            .map_err(|e| refused(StatusCode::BAD_REQUEST, e.to_string()))
    }

    /// The body's first `heartbeats.body_limit` bytes (lossily UTF-8) and
    /// how many bytes were read, at most `heartbeats.max_body_bytes`.
    async fn read_body(&self, body: Body) -> Result<(String, u64), Refused> {
        let config = &self.inner.config;
        let keep = config.body_limit.min(self.inner.limits.max_log_bytes);
        let read = read_prefix(body, keep, config.max_body_bytes);
        let deadline = self.inner.limits.body_timeout;
        let (kept, total) = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| {
                refused(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("body: not received within {deadline:?} (limits.body_timeout)"),
                )
            })?
            .map_err(|e| {
                refused(
                    StatusCode::BAD_REQUEST,
                    format!("body: could not be read: {e}"),
                )
            })?;
        let text = clip_log(&String::from_utf8_lossy(&kept), keep);
        Ok((text, total))
    }

    async fn ping_record(
        &self,
        check: &HeartbeatCheckRow,
        parsed: &PingPath,
        query: &PingQuery,
        meta: Meta,
        (body, body_bytes): (String, u64),
    ) -> Result<HeartbeatPing, Refused> {
        let mut ping = HeartbeatPing {
            ts_ms: self.now(),
            check_id: check.check_id.clone(),
            kind: parsed.kind as i32,
            exit_status: parsed.exit_status,
            rid: query.rid.clone(),
            method: meta.method,
            remote: meta.remote,
            user_agent: meta.user_agent,
            body,
            body_bytes,
            duration_ms: 0,
        };
        let ends = !matches!(parsed.kind, PingKind::Start | PingKind::Log);
        if ends {
            ping.duration_ms = self.run_duration(&ping).await.unwrap_or(0);
        }
        Ok(ping)
    }

    /// The run `end` closes: the check's recent pings folded, oldest first,
    /// into a tracker, which pairs the end with its start by `rid`. None
    /// when there is no such start, or the store cannot say (the ping is
    /// stored without a duration rather than refused).
    async fn run_duration(&self, end: &HeartbeatPing) -> Option<u64> {
        let of = [end.check_id.as_str()];
        let query = StatsQuery {
            kind: SampleKind::HeartbeatPing,
            scope: Scope::Newest(Newest {
                of: &of,
                limit: RUN_PINGS,
            }),
        };
        let recent = match self.inner.store.stats(&query).await {
            Ok(rows) => rows.heartbeat_pings,
            Err(error) => {
                tracing::warn!(%error, check_id = end.check_id, "no run duration: store read failed");
                return None;
            }
        };
        let mut tracker = Tracker::new();
        for row in recent.iter().rev() {
            tracker.observe(&ping_record(row));
        }
        tracker.observe(end).duration_ms
    }

    /// Writes the ping, with the check it created or the version that
    /// un-pauses its check, in one batch.
    async fn store_ping(
        &self,
        check: HeartbeatCheckRow,
        created: Option<HeartbeatCheckRow>,
        ping: HeartbeatPing,
    ) -> Result<(), Refused> {
        let now = ping.ts_ms;
        let ctx = self.ctx(now);
        let row = check_ping(&ping, &ctx).map_err(|e| {
            refused(
                StatusCode::BAD_REQUEST,
                format!("{}: {}", e.field, e.reason),
            )
        })?;
        let mut checks: Vec<HeartbeatCheckRow> = created.into_iter().collect();
        // Healthchecks: a ping resumes a paused check; a log ping is no ping.
        if check.paused && ping.kind != PingKind::Log as i32 {
            let mut version = next_version(&check, now, keep_config(&check, "ping"), &ping.remote);
            version.paused = false;
            let row = validate_check(&version, &ctx)
                .map_err(|e| refused(StatusCode::BAD_REQUEST, e.to_string()))?;
            checks.push(row);
        }
        let rows = Rows {
            heartbeat_checks: checks,
            heartbeat_pings: vec![row],
            ..Rows::default()
        };
        self.write(rows).await.map_err(|error| {
            tracing::error!(%error, check_id = check.check_id, "storing a ping failed");
            refused(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        })
    }
}

fn path_refusal(error: PathError) -> Refused {
    match error {
        PathError::NotFound => not_found(),
        PathError::Bad(message) => refused(StatusCode::BAD_REQUEST, message),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Reads up to `max` bytes of `body`, keeping the first `keep`; answers
/// them and how many bytes were read.
async fn read_prefix(body: Body, keep: usize, max: usize) -> Result<(Vec<u8>, u64), axum::Error> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        total = total.saturating_add(chunk.len());
        if total >= max {
            total = max;
            break;
        }
    }
    Ok((kept, total as u64))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip_log(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A header as a one-line text: control characters dropped, at most `max`
/// bytes.
fn clip(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    clip_log(&clean, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_cut_at_character_boundaries() {
        assert_eq!(clip_log("héllo", 2), "h");
        assert_eq!(clip_log("héllo", 3), "hé");
        assert_eq!(clip("curl/8\u{7}.5", 100), "curl/8.5");
    }

    #[tokio::test]
    async fn a_body_is_kept_to_its_limit_and_counted_to_the_maximum() {
        let body = || Body::from(vec![b'x'; 5000]);
        let (kept, total) = read_prefix(body(), 100, 1 << 20).await.expect("read");
        assert_eq!((kept.len(), total), (100, 5000));
        let (kept, total) = read_prefix(body(), 100, 1000).await.expect("read");
        assert_eq!((kept.len(), total), (100, 1000));
    }

    #[test]
    fn one_check_over_its_rate_does_not_limit_another() {
        let config = crate::config::HeartbeatsConfig {
            max_pings_per_check: 1,
            ping_burst: 3,
            ..Default::default()
        };
        let limiter = Limiter::new(&config);
        let allowed = (0..10).filter(|_| limiter.allow("a")).count();
        assert_eq!(allowed, 3);
        assert!(limiter.allow("b"));
    }
}
