//! The management API of heartbeat checks, with the API's role tokens
//! (`api.tokens`): any role reads, `user` and `admin` write (checks are no
//! site's, so a user token's site patterns do not limit them; a readonly
//! token is answered 403).
//!
//! | route | |
//! | --- | --- |
//! | `GET /api/v1/checks[?tag=]` | every live check with its status now |
//! | `POST /api/v1/checks` | create: `name`, `tags`, `period_s` or `cron` + `tz`, `grace_s`, optional `project` + `slug`; 201 with the check and its ping URLs |
//! | `GET /api/v1/checks/{id}` | one check |
//! | `PATCH /api/v1/checks/{id}` | change the fields given |
//! | `DELETE /api/v1/checks/{id}` | delete (a deleted version; pings then 404) |
//! | `POST /api/v1/checks/{id}/pause`, `/resume` | |
//! | `GET /api/v1/checks/{id}/pings[?limit=]` | newest first, bodies and durations (limit default 100, at most `heartbeats.max_list_pings`) |
//!
//! Names are unique (409 naming the check that has it): the alerter keys
//! alerts on them; so are (project, slug). A check declared in
//! `heartbeats.checks_file` is changed there: PATCH and DELETE answer 409
//! (pause and resume work). Every write is a new version through the group
//! commit (source `api`, actor the token's name). Errors are the API's
//! `{"ok":false,"error":..}`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use livehead_proto::v1::HeartbeatCheck;
use serde::Deserialize;
use serde_json::json;

use super::directory::read_checks;
use super::view::check_view;
use super::{HeartbeatsState, keep_config, next_version, validate_check};
use crate::access::Caller;
use crate::api::{Answer, ApiError};
use crate::store::Store;
use crate::store::sample_tables::HEARTBEAT_WRITER;
use crate::store::samples::{
    HeartbeatCheckRow, HeartbeatPingRow, Latest, Newest, SampleKind, Scope, StatsQuery,
};
use crate::validate::heartbeats::uuid;

/// Pings answered when `limit` is not given.
pub const DEFAULT_PINGS: u32 = 100;
/// Grace time of a check created without one (Healthchecks' default).
pub const DEFAULT_GRACE_S: u64 = 3600;

type RawId = Result<Path<String>, PathRejection>;
type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub fn router<S: Store>(state: HeartbeatsState<S>) -> Router {
    Router::new()
        .route("/api/v1/checks", get(list::<S>).post(create::<S>))
        .route(
            "/api/v1/checks/{id}",
            get(one::<S>).patch(update::<S>).delete(delete::<S>),
        )
        .route("/api/v1/checks/{id}/pause", post(pause::<S>))
        .route("/api/v1/checks/{id}/resume", post(resume::<S>))
        .route("/api/v1/checks/{id}/pings", get(pings::<S>))
        .with_state(state)
}

async fn list<S: Store>(
    State(s): State<HeartbeatsState<S>>,
    h: HeaderMap,
    q: RawQuery,
) -> Response {
    s.finish("checks_list", s.list(&h, q).await)
}

async fn create<S: Store>(
    State(s): State<HeartbeatsState<S>>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    s.finish("checks_create", s.create(&h, &body).await)
}

async fn one<S: Store>(State(s): State<HeartbeatsState<S>>, h: HeaderMap, id: RawId) -> Response {
    s.finish("checks_get", s.one(&h, id).await)
}

async fn update<S: Store>(
    State(s): State<HeartbeatsState<S>>,
    h: HeaderMap,
    id: RawId,
    body: Bytes,
) -> Response {
    s.finish("checks_update", s.update(&h, id, &body).await)
}

async fn delete<S: Store>(
    State(s): State<HeartbeatsState<S>>,
    h: HeaderMap,
    id: RawId,
) -> Response {
    s.finish("checks_delete", s.delete(&h, id).await)
}

async fn pause<S: Store>(State(s): State<HeartbeatsState<S>>, h: HeaderMap, id: RawId) -> Response {
    s.finish("checks_pause", s.set_paused(&h, id, true).await)
}

async fn resume<S: Store>(
    State(s): State<HeartbeatsState<S>>,
    h: HeaderMap,
    id: RawId,
) -> Response {
    s.finish("checks_resume", s.set_paused(&h, id, false).await)
}

async fn pings<S: Store>(
    State(s): State<HeartbeatsState<S>>,
    h: HeaderMap,
    id: RawId,
    q: RawQuery,
) -> Response {
    s.finish("checks_pings", s.pings(&h, id, q).await)
}

/// A check's definition as the API takes it; on PATCH, absent fields are
/// kept (a period replaces a cron and the other way round).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckInput {
    name: Option<String>,
    /// A list, or one space-separated string.
    tags: Option<Tags>,
    period_s: Option<u64>,
    cron: Option<String>,
    tz: Option<String>,
    grace_s: Option<u64>,
    project: Option<String>,
    slug: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Tags {
    List(Vec<String>),
    Text(String),
}

impl Tags {
    fn joined(self) -> String {
        match self {
            Self::List(list) => list.join(" "),
            Self::Text(text) => text.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }
}

impl CheckInput {
    /// `self` applied over `base`.
    fn apply(self, mut base: HeartbeatCheck) -> HeartbeatCheck {
        if let Some(name) = self.name {
            base.name = name;
        }
        if let Some(tags) = self.tags {
            base.tags = tags.joined();
        }
        if let Some(period) = self.period_s {
            base.period_s = period;
            base.cron.clear();
            base.tz.clear();
        }
        if let Some(cron) = self.cron {
            base.cron = cron;
            base.period_s = 0;
        }
        if let Some(tz) = self.tz {
            base.tz = tz;
        }
        if let Some(grace) = self.grace_s {
            base.grace_s = grace;
        }
        if let Some(project) = self.project {
            base.project = project;
        }
        if let Some(slug) = self.slug {
            base.slug = slug;
        }
        base
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn parse_input(body: &[u8]) -> Result<CheckInput, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            bad(format!("body: {inner}"))
        } else {
            bad(format!("{path}: {inner}"))
        }
    })
}

impl<S: Store> HeartbeatsState<S> {
    fn finish(&self, endpoint: &'static str, answer: Answer) -> Response {
        crate::api::finish(&self.inner.metrics, endpoint, answer)
    }

    fn caller<'a>(&'a self, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
        self.inner
            .access
            .authenticate(headers)
            .map_err(ApiError::refused)
    }

    /// The caller, when it may write (user or admin); 403 otherwise.
    fn writer<'a>(&'a self, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
        let caller = self.caller(headers)?;
        if caller.role() == crate::access::Role::Readonly {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} is readonly: checks change with a user or admin token",
                    caller.name
                ),
            ));
        }
        Ok(caller)
    }

    /// Every check's newest version, live ones only, read from the store
    /// (and refreshing this replica's cache).
    async fn checks(&self) -> Result<Vec<HeartbeatCheckRow>, ApiError> {
        let all = read_checks(&*self.inner.store)
            .await
            .map_err(|e| ApiError::storage(&e))?;
        self.inner.directory.replace(all.clone());
        Ok(all.into_iter().filter(|c| !c.deleted).collect())
    }

    /// The newest ping of each kind of every check.
    async fn latest_pings(&self) -> Result<Vec<HeartbeatPingRow>, ApiError> {
        let query = StatsQuery {
            kind: SampleKind::HeartbeatPing,
            scope: Scope::Latest(Latest {
                since_ms: 0,
                only: Some(HEARTBEAT_WRITER),
            }),
        };
        self.inner
            .store
            .stats(&query)
            .await
            .map(|rows| rows.heartbeat_pings)
            .map_err(|e| ApiError::storage(&e))
    }

    fn id(raw: RawId) -> Result<String, ApiError> {
        let Path(raw) = raw.map_err(|e| bad(format!("id: {}", e.body_text())))?;
        uuid("id", &raw).map_err(|e| bad(format!("id: {}", e.reason)))
    }

    fn not_found(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("check {id} not found"))
    }

    async fn list(&self, headers: &HeaderMap, query: RawQuery) -> Answer {
        self.caller(headers)?;
        let Query(pairs) = query.map_err(|e| bad(format!("query: {}", e.body_text())))?;
        let tag = pairs.into_iter().find(|(k, _)| k == "tag").map(|(_, v)| v);
        let (checks, pings) = futures::try_join!(self.checks(), self.latest_pings())?;
        let now = self.now();
        let mut views: Vec<_> = checks
            .iter()
            .filter(|c| {
                tag.as_deref()
                    .is_none_or(|t| c.tags.split_whitespace().any(|x| x == t))
            })
            .map(|c| {
                let own: Vec<&HeartbeatPingRow> =
                    pings.iter().filter(|p| p.check_id == c.check_id).collect();
                check_view(c, &own, now)
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Json(json!({ "ok": true, "checks": views })).into_response())
    }

    async fn one(&self, headers: &HeaderMap, raw: RawId) -> Answer {
        self.caller(headers)?;
        let id = Self::id(raw)?;
        let (checks, pings) = futures::try_join!(self.checks(), self.latest_pings())?;
        let check = checks
            .iter()
            .find(|c| c.check_id == id)
            .ok_or_else(|| Self::not_found(&id))?;
        let own: Vec<&HeartbeatPingRow> = pings.iter().filter(|p| p.check_id == id).collect();
        let view = check_view(check, &own, self.now());
        Ok(Json(json!({ "ok": true, "check": view })).into_response())
    }

    async fn create(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let caller = self.writer(headers)?;
        let input = parse_input(body)?;
        if input.name.is_none() {
            return Err(bad("name: missing"));
        }
        let now = self.now();
        let base = HeartbeatCheck {
            ts_ms: now,
            check_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            grace_s: DEFAULT_GRACE_S,
            source: "api".into(),
            actor: caller.name.to_owned(),
            ..HeartbeatCheck::default()
        };
        let record = input.apply(base);
        let _writing = self.inner.writing.lock().await;
        let checks = self.checks().await?;
        let row = self.checked(&record, &checks, now)?;
        self.write_version(row.clone()).await?;
        tracing::info!(
            check_id = row.check_id,
            name = row.name,
            token = caller.name,
            "check created"
        );
        let view = check_view(&row, &[], now);
        Ok((
            StatusCode::CREATED,
            Json(json!({ "ok": true, "check": view })),
        )
            .into_response())
    }

    /// `record` validated, its project known and its name and slug free.
    fn checked(
        &self,
        record: &HeartbeatCheck,
        checks: &[HeartbeatCheckRow],
        now: u64,
    ) -> Result<HeartbeatCheckRow, ApiError> {
        let row = validate_check(record, &self.ctx(now)).map_err(|e| bad(e.to_string()))?;
        if row.period_s != 0 && !row.tz.is_empty() {
            return Err(bad("tz: only with a cron (a period has no zone)"));
        }
        if !row.project.is_empty() && !self.inner.keys.has_project(&row.project) {
            return Err(bad(format!(
                "project: {:?} has no ping key (heartbeats.ping_keys)",
                row.project
            )));
        }
        let others = checks.iter().filter(|c| c.check_id != row.check_id);
        for other in others {
            if other.name == row.name {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "name: {:?} is the name of check {}",
                        row.name, other.check_id
                    ),
                ));
            }
            if !row.slug.is_empty() && other.project == row.project && other.slug == row.slug {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "slug: {:?} of project {:?} is check {}",
                        row.slug, row.project, other.check_id
                    ),
                ));
            }
        }
        Ok(row)
    }

    async fn write_version(&self, row: HeartbeatCheckRow) -> Result<(), ApiError> {
        let rows = crate::store::Rows {
            heartbeat_checks: vec![row],
            ..Default::default()
        };
        self.write(rows).await.map_err(|e| {
            tracing::error!(error = %e, "writing a check version failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        })
    }

    /// The live check `id` among `checks`; 404 otherwise.
    fn current<'c>(
        checks: &'c [HeartbeatCheckRow],
        id: &str,
    ) -> Result<&'c HeartbeatCheckRow, ApiError> {
        checks
            .iter()
            .find(|c| c.check_id == id)
            .ok_or_else(|| Self::not_found(id))
    }

    fn not_declared(current: &HeartbeatCheckRow) -> Result<(), ApiError> {
        if current.source == "config" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "check {} is declared in {}: change it there",
                    current.check_id, current.actor
                ),
            ));
        }
        Ok(())
    }

    async fn update(&self, headers: &HeaderMap, raw: RawId, body: &[u8]) -> Answer {
        let caller = self.writer(headers)?;
        let id = Self::id(raw)?;
        let input = parse_input(body)?;
        let _writing = self.inner.writing.lock().await;
        let checks = self.checks().await?;
        let current = Self::current(&checks, &id)?;
        Self::not_declared(current)?;
        let now = self.now();
        let record = input.apply(next_version(current, now, "api", caller.name));
        let row = self.checked(&record, &checks, now)?;
        self.write_version(row.clone()).await?;
        tracing::info!(check_id = id, token = caller.name, "check updated");
        let view = check_view(&row, &[], now);
        Ok(Json(json!({ "ok": true, "check": view })).into_response())
    }

    async fn delete(&self, headers: &HeaderMap, raw: RawId) -> Answer {
        let caller = self.writer(headers)?;
        let id = Self::id(raw)?;
        let _writing = self.inner.writing.lock().await;
        let checks = self.checks().await?;
        let current = Self::current(&checks, &id)?;
        Self::not_declared(current)?;
        let mut record = next_version(current, self.now(), "api", caller.name);
        record.deleted = true;
        let row = validate_check(&record, &self.ctx(self.now())).map_err(|e| bad(e.to_string()))?;
        self.write_version(row).await?;
        tracing::info!(check_id = id, token = caller.name, "check deleted");
        Ok(Json(json!({ "ok": true, "deleted": id })).into_response())
    }

    async fn set_paused(&self, headers: &HeaderMap, raw: RawId, paused: bool) -> Answer {
        let caller = self.writer(headers)?;
        let id = Self::id(raw)?;
        let _writing = self.inner.writing.lock().await;
        let checks = self.checks().await?;
        let current = Self::current(&checks, &id)?;
        let now = self.now();
        let mut record = next_version(current, now, keep_config(current, "api"), caller.name);
        record.paused = paused;
        let row = validate_check(&record, &self.ctx(now)).map_err(|e| bad(e.to_string()))?;
        self.write_version(row.clone()).await?;
        tracing::info!(
            check_id = id,
            paused,
            token = caller.name,
            "check paused or resumed"
        );
        Ok(Json(json!({ "ok": true, "check": check_view(&row, &[], now) })).into_response())
    }

    async fn pings(&self, headers: &HeaderMap, raw: RawId, query: RawQuery) -> Answer {
        self.caller(headers)?;
        let id = Self::id(raw)?;
        let Query(pairs) = query.map_err(|e| bad(format!("query: {}", e.body_text())))?;
        let max = self.inner.config.max_list_pings;
        let limit = match pairs.iter().find(|(k, _)| k == "limit") {
            None => DEFAULT_PINGS.min(max),
            Some((_, v)) => match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(bad(format!("limit: {v:?} is not within 1-{max}"))),
            },
        };
        let checks = self.checks().await?;
        Self::current(&checks, &id)?;
        let of = [id.as_str()];
        let query = StatsQuery {
            kind: SampleKind::HeartbeatPing,
            scope: Scope::Newest(Newest { of: &of, limit }),
        };
        let rows = self
            .inner
            .store
            .stats(&query)
            .await
            .map_err(|e| ApiError::storage(&e))?;
        let pings: Vec<HeartbeatPingRow> = rows
            .heartbeat_pings
            .into_iter()
            .filter(|p| p.agent == HEARTBEAT_WRITER)
            .collect();
        Ok(Json(json!({ "ok": true, "check": id, "pings": pings })).into_response())
    }
}
