//! The alerter's HTTP API, on a shared handle the main loop also uses:
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /alerts?state=&severity=&site=&node=` | any token | alerts it may see |
//! | `POST /alerts/{id}/ack` | admin, user (its sites) | acknowledge |
//! | `POST /alerts/{id}/resolve` | admin | resolve by hand |
//! | `GET /silences` | any token | every silence |
//! | `POST /silences` | admin, user (`site=` one of its sites) | create |
//! | `POST /silences/{id}/expire`, `DELETE /silences/{id}` | admin, its creator | expire |
//! | `GET /health`, `GET /metrics` | anyone | liveness, Prometheus |
//!
//! Answers are JSON: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
//!
//! The actor recorded for an acknowledgement, a resolution or a silence is
//! the token's name, except that an admin token may name someone else in
//! `X-Livehead-Actor`: the collector's dashboard forwards its signed-in
//! users' actions with its own admin token and names the user there, after
//! checking their role and sites itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use prometheus::{IntGaugeVec, Opts, Registry};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::Severity;
use crate::access::{Access, Caller, Role};
use crate::lifecycle::{self, AlertView, Lifecycle, LifecycleError, NewSilence};

/// What the API and the main loop share.
pub struct Shared {
    lifecycle: Mutex<Lifecycle>,
    /// Notified after every change made through [`Shared::with`]: the main
    /// loop waits on it (with `next_due()`) to send what is due and save.
    pub changed: Notify,
    /// `/metrics` serves it; register the dispatcher's
    /// [`crate::DeliveryMetrics`] on it too.
    pub registry: Registry,
    access: Access,
    alerts: IntGaugeVec,
    clock: fn() -> u64,
}

impl Shared {
    /// Registers the `alerts{state}` gauge on `registry`.
    pub fn new(
        lifecycle: Lifecycle,
        access: Access,
        registry: Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        Self::with_clock(lifecycle, access, registry, crate::receivers::now_ms)
    }

    /// As [`Shared::new`], with the clock handlers read (tests).
    pub fn with_clock(
        lifecycle: Lifecycle,
        access: Access,
        registry: Registry,
        clock: fn() -> u64,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let alerts = IntGaugeVec::new(Opts::new("alerts", "Alerts tracked, by state"), &["state"])?;
        registry.register(Box::new(alerts.clone()))?;
        let shared = Shared {
            lifecycle: Mutex::new(lifecycle),
            changed: Notify::new(),
            registry,
            access,
            alerts,
            clock,
        };
        shared.with(|_| ());
        Ok(Arc::new(shared))
    }

    /// Runs `f` on the lifecycle, then refreshes the gauge and wakes the
    /// main loop. Never hold it across an await: it is a plain mutex.
    pub fn with<R>(&self, f: impl FnOnce(&mut Lifecycle) -> R) -> R {
        let result = self.update(f);
        self.changed.notify_one();
        result
    }

    /// As [`Shared::with`] without waking the main loop: the loop's own
    /// changes (it acts on them at once, and would otherwise wake itself
    /// forever).
    pub fn update<R>(&self, f: impl FnOnce(&mut Lifecycle) -> R) -> R {
        let mut lifecycle = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut lifecycle);
        let counts = lifecycle.counts();
        drop(lifecycle);
        for state in ["pending", "firing", "acknowledged", "resolved"] {
            let n = lifecycle::State::parse(state)
                .and_then(|s| counts.get(&s).copied())
                .unwrap_or(0);
            self.alerts
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        result
    }

    /// Runs `f` on the lifecycle without changing it (no wake-up).
    pub fn read<R>(&self, f: impl FnOnce(&Lifecycle) -> R) -> R {
        f(&self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }
}

/// Every route of the API, `/health` and `/metrics` included.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/alerts", get(list_alerts))
        .route("/alerts/{id}/ack", post(acknowledge))
        .route("/alerts/{id}/resolve", post(resolve))
        .route("/silences", get(list_silences).post(add_silence))
        .route("/silences/{id}/expire", post(expire_silence))
        .route("/silences/{id}", delete(expire_silence))
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
        .with_state(shared.clone());
    api.merge(livehead_common::metrics::router(shared.registry.clone()))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint (/alerts, /silences, /health, /metrics)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
}

/// A refusal: its status and the message of the JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} {id:?} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "ok": false, "error": self.message }));
        (self.status, body).into_response()
    }
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        let status = match &err {
            LifecycleError::UnknownAlert(_) | LifecycleError::UnknownSilence(_) => {
                StatusCode::NOT_FOUND
            }
            LifecycleError::NotFiring { .. } | LifecycleError::AlreadyResolved(_) => {
                StatusCode::CONFLICT
            }
            LifecycleError::InvalidSilence(_) | LifecycleError::Config(_) => {
                StatusCode::BAD_REQUEST
            }
        };
        Self::new(status, err.to_string())
    }
}

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

fn ok(body: Value) -> Answer {
    Ok((StatusCode::OK, Json(body)))
}

fn caller<'a>(shared: &'a Shared, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
    shared
        .access
        .authenticate(headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

/// The filters of `GET /alerts`, checked.
#[derive(Debug, Default)]
struct Filters {
    state: Option<lifecycle::State>,
    severity: Option<Severity>,
    site: Option<String>,
    node: Option<String>,
}

impl Filters {
    fn parse(query: BTreeMap<String, String>) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let mut filters = Filters::default();
        for (key, value) in query {
            match key.as_str() {
                "state" => {
                    filters.state = Some(lifecycle::State::parse(&value).ok_or_else(|| {
                        bad(format!(
                            "state: {value:?} is not pending, firing, acknowledged or resolved"
                        ))
                    })?);
                }
                "severity" => {
                    let severity = [
                        Severity::Critical,
                        Severity::Error,
                        Severity::Warning,
                        Severity::Info,
                    ]
                    .into_iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| {
                        bad(format!(
                            "severity: {value:?} is not critical, error, warning or info"
                        ))
                    })?;
                    filters.severity = Some(severity);
                }
                "site" => filters.site = Some(value.to_lowercase()),
                "node" => filters.node = Some(value),
                _ => {
                    return Err(bad(format!(
                        "unknown query parameter {key:?} (state, severity, site, node)"
                    )));
                }
            }
        }
        Ok(filters)
    }

    fn keep(&self, alert: &AlertView) -> bool {
        self.state.is_none_or(|s| alert.state == s)
            && self.severity.is_none_or(|s| alert.severity == s)
            && self
                .site
                .as_ref()
                .is_none_or(|s| alert.site.as_deref().map(str::to_lowercase).as_ref() == Some(s))
            && self
                .node
                .as_ref()
                .is_none_or(|n| alert.node.as_ref() == Some(n))
    }
}

async fn list_alerts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let caller = caller(&shared, &headers)?;
    let Query(query) =
        query.map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.body_text()))?;
    let filters = Filters::parse(query)?;
    let now = shared.now();
    let alerts: Vec<AlertView> = shared
        .read(|l| l.alerts(now))
        .into_iter()
        .filter(|a| caller.may_read(a.site.as_deref()) && filters.keep(a))
        .collect();
    ok(json!({ "ok": true, "alerts": alerts }))
}

/// The header an admin token names the person it acts for in.
pub const ACTOR_HEADER: &str = "x-livehead-actor";
/// Longest name `X-Livehead-Actor` may give.
const MAX_ACTOR_BYTES: usize = 128;

/// Who is recorded as acting: `X-Livehead-Actor` when an admin token sends
/// a printable one, else the token's name.
fn actor(caller: &Caller<'_>, headers: &HeaderMap) -> String {
    let named = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_ACTOR_BYTES)
        .filter(|v| v.chars().all(|c| !c.is_control()));
    match named {
        Some(name) if caller.is_admin() => {
            tracing::info!(
                token = caller.name(),
                actor = name,
                "acting for a dashboard user"
            );
            name.to_owned()
        }
        _ => caller.name().to_owned(),
    }
}

/// The alert `id` if the caller may see it; 404 otherwise, the same as
/// for an alert that does not exist.
fn visible_alert(shared: &Shared, caller: &Caller<'_>, id: &str) -> Result<AlertView, ApiError> {
    let now = shared.now();
    shared
        .read(|l| l.alert(id, now))
        .filter(|a| caller.may_read(a.site.as_deref()))
        .ok_or_else(|| ApiError::not_found("alert", id))
}

async fn acknowledge(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let caller = caller(&shared, &headers)?;
    let alert = visible_alert(&shared, &caller, &id)?;
    if !caller.may_write(alert.site.as_deref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a readonly token may not acknowledge",
        ));
    }
    let now = shared.now();
    let by = actor(&caller, &headers);
    shared.with(|l| l.acknowledge(&id, &by, now))?;
    tracing::info!(alert = %id, by, "alert acknowledged");
    ok(json!({ "ok": true, "alert": shared.read(|l| l.alert(&id, now)) }))
}

async fn resolve(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let caller = caller(&shared, &headers)?;
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin token may resolve an alert",
        ));
    }
    let now = shared.now();
    let by = actor(&caller, &headers);
    shared.with(|l| l.resolve(&id, &by, now))?;
    tracing::info!(alert = %id, by, "alert resolved by hand");
    ok(json!({ "ok": true, "alert": shared.read(|l| l.alert(&id, now)) }))
}

async fn list_silences(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    caller(&shared, &headers)?;
    let now = shared.now();
    ok(json!({ "ok": true, "silences": shared.read(|l| l.silences(now)) }))
}

async fn add_silence(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Answer {
    let caller = caller(&shared, &headers)?;
    let Json(new) = body.map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.body_text()))?;
    match caller.role() {
        Role::Admin => {}
        Role::Readonly => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a readonly token may not create silences",
            ));
        }
        Role::User => {
            let own_site = new.matchers.iter().any(|m| {
                lifecycle::Matcher::parse(m).is_ok_and(|m| {
                    m.equality().is_some_and(|(label, site)| {
                        label == "site" && caller.may_write(Some(site))
                    })
                })
            });
            if !own_site {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a user token's silence needs a matcher `site=<one of its sites>`",
                ));
            }
        }
    }
    let now = shared.now();
    let by = actor(&caller, &headers);
    let silence = shared.with(|l| l.add_silence(new, &by, now))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ok": true, "silence": silence })),
    ))
}

async fn expire_silence(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let caller = caller(&shared, &headers)?;
    let now = shared.now();
    let silence = shared
        .read(|l| l.silences(now))
        .into_iter()
        .find(|s| s.silence.id == id)
        .ok_or_else(|| ApiError::not_found("silence", &id))?;
    let own = caller.role() == Role::User && silence.silence.created_by == caller.name();
    if !(caller.is_admin() || own) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin or the silence's creator may expire it",
        ));
    }
    shared.with(|l| l.expire_silence(&id, now))?;
    tracing::info!(silence = %id, by = caller.name(), "silence expired");
    ok(json!({ "ok": true }))
}
