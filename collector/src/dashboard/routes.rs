//! The page's JSON reads: `/ui/api/overview`, `/ui/api/node/{node}`,
//! `/ui/api/site/{site}`, `/ui/api/alerts`. Each is one or a few store reads
//! (never one per site), shaped by [`super::view`] and [`super::series`].

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use livehead_common::clock::unix_ms;
use serde_json::json;

use super::series::{self, Range};
use super::view::{self, SiteRow};
use super::{DashboardState, ms};
use crate::api::params::Params;
use crate::api::{Answer, ApiError};
use crate::store::samples::{History, Latest, Newest, SampleKind, Scope, StatsQuery};
use crate::store::{Rows, Store};

/// Transitions the overview lists.
pub const TRANSITIONS: usize = 50;
/// Most points of one series or strip.
pub const POINTS: u32 = 200;
/// Longest node or site name, in bytes (as `/stats`).
const MAX_NAME_BYTES: usize = 253;

type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;
type RawPath = Result<Path<String>, PathRejection>;

pub(super) fn pairs(query: RawQuery) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
}

/// The one value of `name` (given twice: 400), other parameters ignored.
pub(super) fn single<'a>(
    pairs: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    let known = [name];
    let params = Params::new(pairs, &known).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(params.get(name))
}

/// A node or site of the path: 1 to 253 bytes of letters, digits, `.`,
/// `-`, `_` (lower-cased: sites are stored so).
fn name(what: &'static str, raw: RawPath) -> Result<String, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::bad_request(format!("{what}: {}", e.body_text())))?;
    let ok = !raw.is_empty()
        && raw.len() <= MAX_NAME_BYTES
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "{what}: 1 to {MAX_NAME_BYTES} letters, digits, `.`, `-`, `_`"
        )));
    }
    Ok(raw)
}

fn range(pairs: &[(String, String)]) -> Result<Range, ApiError> {
    match single(pairs, "range")? {
        None => Ok(Range::Hour),
        Some(value) => Range::parse(value)
            .ok_or_else(|| ApiError::bad_request(format!("range: {value:?} is not 1h, 24h or 7d"))),
    }
}

fn ok(body: serde_json::Value) -> Answer {
    Ok(Json(body).into_response())
}

pub(super) async fn overview<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
) -> Response {
    let answer = s.overview(&headers).await;
    s.finish("ui_overview", answer)
}

pub(super) async fn node<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    node: RawPath,
    query: RawQuery,
) -> Response {
    let answer = s.node(&headers, node, query).await;
    s.finish("ui_node", answer)
}

pub(super) async fn site<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    site: RawPath,
    query: RawQuery,
) -> Response {
    let answer = s.site(&headers, site, query).await;
    s.finish("ui_site", answer)
}

pub(super) async fn alerts<S: Store>(
    State(s): State<DashboardState<S>>,
    headers: HeaderMap,
    query: RawQuery,
) -> Response {
    let answer = s.alerts(&headers, query).await;
    s.finish("ui_alerts", answer)
}

fn storage(error: &crate::store::StoreError) -> ApiError {
    ApiError::storage(error)
}

impl<S: Store> DashboardState<S> {
    async fn stats(&self, kind: SampleKind, scope: Scope<'_>) -> Result<Rows, ApiError> {
        self.inner
            .store
            .stats(&StatsQuery { kind, scope })
            .await
            .map_err(|e| storage(&e))
    }

    /// The newest state of every alert among the newest
    /// `dashboard.max_alert_events` events.
    pub(super) async fn newest_alerts(&self) -> Result<Vec<view::AlertRow>, ApiError> {
        let scope = Scope::Newest(Newest {
            of: &[],
            limit: self.inner.config.max_alert_events,
        });
        let rows = self.stats(SampleKind::AlertEvent, scope).await?;
        Ok(view::newest_alerts(&rows.alerts))
    }

    async fn heartbeat_states(&self) -> Result<Rows, ApiError> {
        let scope = Scope::Latest(Latest {
            since_ms: 0,
            only: None,
        });
        self.stats(SampleKind::HeartbeatState, scope).await
    }

    fn sites_since(&self) -> u64 {
        unix_ms().saturating_sub(ms(self.inner.config.site_max_age))
    }

    async fn overview(&self, headers: &HeaderMap) -> Answer {
        let signed = self.signed(headers)?;
        let caller = signed.caller;
        let store = &self.inner.store;
        let (probes, alerts, beats) = tokio::join!(
            store.latest_probes(self.sites_since()),
            self.newest_alerts(),
            self.heartbeat_states(),
        );
        let mut probes = probes.map_err(|e| storage(&e))?;
        // Counts are of sites as /last sees them: from inside.
        probes.retain(|p| p.vantage == livehead_common::vantage::INSIDE);
        let now = unix_ms();
        let keep = |site: &str| caller.may_read(site);
        let figures = view::overview(&probes, now, keep);
        let admin = caller.is_admin();
        let alerts: Vec<view::AlertRow> = alerts?
            .into_iter()
            .filter(|a| view::alert_visible(&a.site, admin, keep))
            .collect();
        let count = |state: &str| alerts.iter().filter(|a| a.state == state).count();
        let heartbeats: Vec<serde_json::Value> = beats?
            .heartbeat_states
            .iter()
            .filter(|h| view::heartbeat_needs_eyes(h))
            .map(view::heartbeat)
            .collect();
        ok(json!({
            "ok": true,
            "counts": figures.counts,
            "failing": figures.failing,
            "transitions": self.inner.transitions.newest(TRANSITIONS, keep),
            "cross_domain": figures.cross_domain,
            "certs_expiring": figures.certs_expiring,
            "heartbeats": heartbeats,
            "alerts": { "firing": count("firing"), "acknowledged": count("acknowledged") },
            "ts_ms": now,
        }))
    }

    async fn node(&self, headers: &HeaderMap, raw: RawPath, query: RawQuery) -> Answer {
        let signed = self.signed(headers)?;
        if !signed.caller.is_admin() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "node pages are admin only: token {:?} is {}",
                    signed.caller.name,
                    signed.caller.role().as_str()
                ),
            ));
        }
        let node = name("node", raw)?;
        let range = range(&pairs(query)?)?;
        let now = unix_ms();
        let history = |of| {
            Scope::History(History {
                of,
                since_ms: now.saturating_sub(range.ms()),
                until_ms: now,
                points: POINTS,
            })
        };
        let fresh = now.saturating_sub(ms(self.inner.stats_fresh));
        let latest = |only| {
            Scope::Latest(Latest {
                since_ms: fresh,
                only,
            })
        };
        let (nodes, filesystems, interfaces, pods, services, probes) = tokio::join!(
            self.stats(SampleKind::Node, history(&node)),
            self.stats(SampleKind::Filesystem, history(&node)),
            self.stats(SampleKind::Interface, history(&node)),
            self.stats(SampleKind::Pod, latest(Some(&node))),
            self.stats(SampleKind::Service, latest(None)),
            self.inner.store.latest_probes(self.sites_since()),
        );
        let (nodes, filesystems, interfaces) = (nodes?, filesystems?, interfaces?);
        let sites: Vec<SiteRow> = probes
            .map_err(|e| storage(&e))?
            .iter()
            .filter(|p| p.agent == node)
            .map(SiteRow::from)
            .collect();
        let services: Vec<_> = services?
            .services
            .into_iter()
            .filter(|s| s.node == node)
            .collect();
        let pods = pods?.pods;
        if nodes.nodes.is_empty() && sites.is_empty() && pods.is_empty() && services.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("node {node} not found"),
            ));
        }
        ok(json!({
            "ok": true,
            "node": node,
            "range": range.as_str(),
            "series": series::node(&nodes, &filesystems, &interfaces),
            "pods": pods,
            "sites": sites,
            "services": services,
        }))
    }

    async fn site(&self, headers: &HeaderMap, raw: RawPath, query: RawQuery) -> Answer {
        let signed = self.signed(headers)?;
        let site = name("site", raw)?.to_ascii_lowercase();
        if !signed.caller.may_read(&site) {
            tracing::info!(
                token = signed.caller.name,
                site,
                "dashboard: site not the token's"
            );
            return Err(ApiError::site_not_found(&site));
        }
        let range = range(&pairs(query)?)?;
        let now = unix_ms();
        let since = now.saturating_sub(range.ms());
        let store = &self.inner.store;
        let (last, history, alerts) = tokio::join!(
            store.last(&site, livehead_common::vantage::INSIDE),
            store.probe_history(&site, since, self.inner.config.max_site_probes),
            self.newest_alerts(),
        );
        let Some(last) = last.map_err(|e| storage(&e))? else {
            return Err(ApiError::site_not_found(&site));
        };
        let mut history = history.map_err(|e| storage(&e))?;
        // The newest probe with every column (its node, its certificate):
        // `health_history`'s when it has one, else what `health_last` keeps.
        let newest = match history.first() {
            Some(probe) => probe.clone(),
            None => store
                .probe_history(&site, 0, 1)
                .await
                .map_err(|e| storage(&e))?
                .into_iter()
                .next()
                .unwrap_or_else(|| series::probe_of(&last)),
        };
        history.reverse();
        let last = newest;
        let alerts: Vec<view::AlertRow> = alerts?.into_iter().filter(|a| a.site == site).collect();
        ok(json!({
            "ok": true,
            "site": site,
            "range": range.as_str(),
            "last": SiteRow::from(&last),
            "strip": series::strip(&history, since, now, POINTS),
            "latency": series::latency(&history, since, now, POINTS),
            "redirects": series::redirects(&history),
            "cert": {
                "expiry_ms": last.cert_expiry,
                "trust": last.cert_trust,
                "error": last.cert_error,
            },
            "alerts": alerts,
        }))
    }

    async fn alerts(&self, headers: &HeaderMap, query: RawQuery) -> Answer {
        let signed = self.signed(headers)?;
        let pairs = pairs(query)?;
        let state = single(&pairs, "state")?.unwrap_or("all");
        if !matches!(state, "firing" | "acknowledged" | "resolved" | "all") {
            return Err(ApiError::bad_request(format!(
                "state: {state:?} is not firing, acknowledged, resolved or all"
            )));
        }
        let caller = signed.caller;
        let admin = caller.is_admin();
        let alerts: Vec<view::AlertRow> = self
            .newest_alerts()
            .await?
            .into_iter()
            .filter(|a| view::alert_visible(&a.site, admin, |s| caller.may_read(s)))
            .filter(|a| state == "all" || a.state == state)
            .collect();
        // Watched apps are nodes' (as `/stats/watchdog`): admins only.
        let watchdog = if admin {
            let scope = Scope::Latest(Latest {
                since_ms: 0,
                only: None,
            });
            self.stats(SampleKind::Watchdog, scope).await?.watchdog
        } else {
            Vec::new()
        };
        let beats = self.heartbeat_states().await?;
        let heartbeats: Vec<serde_json::Value> =
            beats.heartbeat_states.iter().map(view::heartbeat).collect();
        ok(json!({
            "ok": true,
            "alerts": alerts,
            "heartbeats": heartbeats,
            "watchdog": watchdog,
        }))
    }
}
