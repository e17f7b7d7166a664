//! `/stats/*`: what agents sample of their nodes, pods, sites and services,
//! read from [`Store::stats`]. Every route needs a role token (`api.tokens`,
//! see [`crate::access`]):
//!
//! | route | who |
//! | --- | --- |
//! | `GET /stats/server[?node=]` | admin |
//! | `GET /stats/server/history?node=&hours=&points=` | admin |
//! | `GET /stats/system` | any token (non-admins: counts over their sites, no node data) |
//! | `GET /stats/sites` | admin |
//! | `GET /stats/site/{site}` | admin, or a token the site is assigned to |
//! | `GET /stats/site/{site}/history?hours=&points=` | admin, or assigned |
//! | `GET /stats/services` | admin |
//! | `GET /stats/services/{site}` | admin, or assigned |
//! | `GET /stats/watchdog[?node=]` | admin |
//!
//! "Latest" means rows newer than `api.stats_fresh` (site disk usage:
//! `api.stats_site_disk_fresh`; the watchdog: any age, since an app
//! exhausted days ago still waits for a person). Answers are `{"ok":true,...}` with the row
//! structs serialized as they are; errors the API's
//! `{"ok":false,"error":..}`: 400 (a parameter, named), 401, 403 (an
//! admin-only route), 404 (a site unknown or not the caller's: the same
//! answer), 503 (the store failed or exceeded `storage.read_timeout`).

mod params;
mod view;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use livehead_common::clock::unix_ms;
use serde_json::json;

use crate::access::{Access, Caller};
use crate::api::{Answer, ApiError};
use crate::config::ApiConfig;
use crate::metrics::CollectorMetrics;
use crate::store::Rows;
use crate::store::Store;
use crate::store::samples::{History, Latest, SampleKind, Scope, StatsQuery};

pub use params::{DEFAULT_HOURS, DEFAULT_POINTS, MAX_HOURS, MAX_POINTS};

const NODE_KINDS: [SampleKind; 5] = [
    SampleKind::Node,
    SampleKind::Filesystem,
    SampleKind::Disk,
    SampleKind::Interface,
    SampleKind::Pod,
];

/// What the `/stats` handlers share.
pub struct StatsState<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: Arc<S>,
    access: Arc<Access>,
    metrics: CollectorMetrics,
    fresh: Duration,
    site_disk_fresh: Duration,
}

impl<S> Clone for StatsState<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Store> StatsState<S> {
    pub fn new(
        store: Arc<S>,
        access: Arc<Access>,
        metrics: CollectorMetrics,
        config: &ApiConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                access,
                metrics,
                fresh: config.stats_fresh,
                site_disk_fresh: config.stats_site_disk_fresh,
            }),
        }
    }
}

type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;
type RawSite = Result<Path<String>, PathRejection>;

/// The `/stats` routes.
pub fn router<S: Store>(state: StatsState<S>) -> Router {
    Router::new()
        .route("/stats/server", get(server::<S>))
        .route("/stats/server/history", get(server_history::<S>))
        .route("/stats/system", get(system::<S>))
        .route("/stats/sites", get(sites::<S>))
        .route("/stats/site/{site}", get(site::<S>))
        .route("/stats/site/{site}/history", get(site_history::<S>))
        .route("/stats/services", get(services::<S>))
        .route("/stats/services/{site}", get(site_services::<S>))
        .route("/stats/watchdog", get(watchdog::<S>))
        .with_state(state)
}

async fn server<S: Store>(State(s): State<StatsState<S>>, h: HeaderMap, q: RawQuery) -> Response {
    s.finish("stats_server", s.server(&h, q).await)
}

async fn server_history<S: Store>(
    State(s): State<StatsState<S>>,
    h: HeaderMap,
    q: RawQuery,
) -> Response {
    s.finish("stats_server_history", s.server_history(&h, q).await)
}

async fn system<S: Store>(State(s): State<StatsState<S>>, h: HeaderMap) -> Response {
    s.finish("stats_system", s.system(&h).await)
}

async fn sites<S: Store>(State(s): State<StatsState<S>>, h: HeaderMap) -> Response {
    s.finish("stats_sites", s.sites(&h).await)
}

async fn site<S: Store>(State(s): State<StatsState<S>>, h: HeaderMap, site: RawSite) -> Response {
    s.finish("stats_site", s.site(&h, site).await)
}

async fn site_history<S: Store>(
    State(s): State<StatsState<S>>,
    h: HeaderMap,
    site: RawSite,
    q: RawQuery,
) -> Response {
    s.finish("stats_site_history", s.site_history(&h, site, q).await)
}

async fn services<S: Store>(State(s): State<StatsState<S>>, h: HeaderMap) -> Response {
    s.finish("stats_services", s.services(&h).await)
}

async fn site_services<S: Store>(
    State(s): State<StatsState<S>>,
    h: HeaderMap,
    site: RawSite,
) -> Response {
    s.finish("stats_services_site", s.site_services(&h, site).await)
}

async fn watchdog<S: Store>(State(s): State<StatsState<S>>, h: HeaderMap, q: RawQuery) -> Response {
    s.finish("stats_watchdog", s.watchdog(&h, q).await)
}

fn ok(body: serde_json::Value) -> Answer {
    Ok(Json(body).into_response())
}

impl<S: Store> StatsState<S> {
    fn finish(&self, endpoint: &'static str, answer: Answer) -> Response {
        crate::api::finish(&self.inner.metrics, endpoint, answer)
    }

    fn caller<'a>(&'a self, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
        self.inner
            .access
            .authenticate(headers)
            .map_err(ApiError::refused)
    }

    /// The caller, when an admin; 403 otherwise.
    fn admin<'a>(&'a self, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
        let caller = self.caller(headers)?;
        if caller.is_admin() {
            return Ok(caller);
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "admin only: token {:?} is {}",
                caller.name,
                caller.role().as_str()
            ),
        ))
    }

    /// The site of the path, checked, when the caller may see it; 404 (as
    /// for an unknown site) otherwise.
    fn visible_site(&self, caller: &Caller<'_>, raw: RawSite) -> Result<String, ApiError> {
        let Path(raw) =
            raw.map_err(|e| ApiError::bad_request(format!("site: {}", e.body_text())))?;
        let site = params::site(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !caller.may_read(&site) {
            tracing::info!(token = caller.name, site, "stats: site not the token's");
            return Err(ApiError::site_not_found(&site));
        }
        Ok(site)
    }

    fn latest<'a>(&self, kind: SampleKind, only: Option<&'a str>) -> (SampleKind, Scope<'a>) {
        let window = if kind == SampleKind::SiteDisk {
            self.inner.site_disk_fresh
        } else {
            self.inner.fresh
        };
        let since_ms = unix_ms().saturating_sub(u64::try_from(window.as_millis()).unwrap_or(0));
        (kind, Scope::Latest(Latest { since_ms, only }))
    }

    /// The queries' rows together (read concurrently); 503 when one fails.
    async fn read(&self, queries: Vec<(SampleKind, Scope<'_>)>) -> Result<Rows, ApiError> {
        let queries: Vec<StatsQuery<'_>> = queries
            .into_iter()
            .map(|(kind, scope)| StatsQuery { kind, scope })
            .collect();
        let answers =
            futures::future::try_join_all(queries.iter().map(|q| self.inner.store.stats(q)))
                .await
                .map_err(|e| ApiError::storage(&e))?;
        let mut rows = Rows::default();
        for answer in answers {
            rows.append(answer);
        }
        Ok(rows)
    }

    async fn server(&self, headers: &HeaderMap, query: RawQuery) -> Answer {
        self.admin(headers)?;
        let pairs = params::pairs(query)?;
        let node = params::node(&pairs, false)?;
        let queries = NODE_KINDS
            .iter()
            .map(|kind| self.latest(*kind, node.as_deref()))
            .collect();
        let nodes = view::nodes(self.read(queries).await?);
        if let (Some(node), true) = (&node, nodes.is_empty()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("node {node} not found"),
            ));
        }
        ok(json!({ "ok": true, "nodes": nodes }))
    }

    /// The newest watchdog event of every (node, app): where each watched
    /// app stands (`exhausted` waits for a person).
    async fn watchdog(&self, headers: &HeaderMap, query: RawQuery) -> Answer {
        self.admin(headers)?;
        let pairs = params::pairs(query)?;
        let node = params::node(&pairs, false)?;
        let scope = Scope::Latest(Latest {
            since_ms: 0,
            only: node.as_deref(),
        });
        let rows = self.read(vec![(SampleKind::Watchdog, scope)]).await?;
        if let (Some(node), true) = (&node, rows.watchdog.is_empty()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("node {node} has no watched app"),
            ));
        }
        ok(json!({ "ok": true, "apps": rows.watchdog }))
    }

    async fn server_history(&self, headers: &HeaderMap, query: RawQuery) -> Answer {
        self.admin(headers)?;
        let pairs = params::pairs(query)?;
        let node = params::node(&pairs, true)?.unwrap_or_default();
        let window = params::window(&pairs, unix_ms())?;
        let scope = window.scope(&node);
        let rows = self.read(vec![(SampleKind::Node, scope)]).await?;
        ok(json!({
            "ok": true,
            "node": node,
            "since": window.since_ms,
            "until": window.until_ms,
            "points": window.points,
            "data": rows.nodes,
        }))
    }

    async fn system(&self, headers: &HeaderMap) -> Answer {
        let caller = self.caller(headers)?;
        let mut queries = vec![
            self.latest(SampleKind::SiteDisk, None),
            self.latest(SampleKind::SiteProcess, None),
            self.latest(SampleKind::Service, None),
        ];
        if caller.is_admin() {
            queries.push(self.latest(SampleKind::Node, None));
        }
        let rows = self.read(queries).await?;
        let keep = |site: &str| caller.may_read(site);
        let mut totals = view::totals(&rows, keep);
        if caller.is_admin() {
            totals.nodes = Some(rows.nodes.len());
            return ok(json!({
                "ok": true,
                "role": "admin",
                "totals": totals,
                "nodes": rows.nodes,
            }));
        }
        // No raw system data for non-admins: counts over their own sites.
        let names: Vec<String> = view::sites(rows, false, keep)
            .into_iter()
            .map(|s| s.site)
            .collect();
        ok(json!({
            "ok": true,
            "role": caller.role().as_str(),
            "totals": totals,
            "sites": names,
        }))
    }

    async fn sites(&self, headers: &HeaderMap) -> Answer {
        self.admin(headers)?;
        let rows = self
            .read(vec![
                self.latest(SampleKind::SiteDisk, None),
                self.latest(SampleKind::SiteProcess, None),
            ])
            .await?;
        ok(json!({ "ok": true, "sites": view::sites(rows, false, |_| true) }))
    }

    /// The latest disk, processes and services of the site in the path, for
    /// a caller who may see it; 404 when it may not, or has no fresh row of
    /// any site kind (the same answer, so names do not leak).
    async fn site_view(
        &self,
        headers: &HeaderMap,
        raw: RawSite,
    ) -> Result<view::SiteView, ApiError> {
        let caller = self.caller(headers)?;
        let site = self.visible_site(&caller, raw)?;
        let rows = self
            .read(vec![
                self.latest(SampleKind::SiteDisk, Some(&site)),
                self.latest(SampleKind::SiteProcess, Some(&site)),
                self.latest(SampleKind::Service, Some(&site)),
            ])
            .await?;
        view::sites(rows, true, |s| s == site)
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::site_not_found(&site))
    }

    async fn site(&self, headers: &HeaderMap, raw: RawSite) -> Answer {
        let found = self.site_view(headers, raw).await?;
        ok(json!({
            "ok": true,
            "site": found.site,
            "disk": found.disk,
            "processes": found.processes,
            "services": found.services.unwrap_or_default(),
        }))
    }

    async fn site_history(&self, headers: &HeaderMap, raw: RawSite, query: RawQuery) -> Answer {
        let caller = self.caller(headers)?;
        let site = self.visible_site(&caller, raw)?;
        let pairs = params::pairs(query)?;
        let window = params::window(&pairs, unix_ms())?;
        let rows = self
            .read(vec![
                (SampleKind::SiteDisk, window.scope(&site)),
                (SampleKind::SiteProcess, window.scope(&site)),
            ])
            .await?;
        ok(json!({
            "ok": true,
            "site": site,
            "since": window.since_ms,
            "until": window.until_ms,
            "points": window.points,
            "disk": rows.site_disks,
            "processes": rows.site_processes,
        }))
    }

    async fn services(&self, headers: &HeaderMap) -> Answer {
        self.admin(headers)?;
        let rows = self
            .read(vec![self.latest(SampleKind::Service, None)])
            .await?;
        ok(json!({ "ok": true, "services": rows.services }))
    }

    /// A site's services; 404 when the site has no fresh row of any site
    /// kind, as `/stats/site/{site}` answers.
    async fn site_services(&self, headers: &HeaderMap, raw: RawSite) -> Answer {
        let found = self.site_view(headers, raw).await?;
        ok(json!({
            "ok": true,
            "site": found.site,
            "services": found.services.unwrap_or_default(),
        }))
    }
}

/// A history window: the last `hours`, in at most `points` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since_ms: u64,
    pub until_ms: u64,
    pub points: u32,
}

impl Window {
    fn scope<'a>(&self, of: &'a str) -> Scope<'a> {
        Scope::History(History {
            of,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            points: self.points,
        })
    }
}
