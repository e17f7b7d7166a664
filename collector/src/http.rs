//! The collector's HTTP side: `/health` (liveness, the old worker's answer),
//! `/ready` (readiness, see [`crate::ready`]), `/metrics`, the old worker's
//! API (`/push`, `/last`, `/dump_last`, see [`crate::api`]) and the routes
//! the other modules contribute (`/stats/*`, see [`crate::stats`]; `/ping/*`
//! and `/api/v1/checks*`, see [`crate::heartbeats`]; `/ui/*`, see
//! [`crate::dashboard`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router, routing::get};
use serde_json::json;

use crate::metrics::CollectorMetrics;
use crate::ready::Readiness;

/// `/health`, `/ready` and `/metrics`, merged with `api` (every API route). Unknown
/// paths and wrong methods answer in the API's JSON error shape too, so a
/// client that parses every answer never meets an empty body.
pub fn router(metrics: &CollectorMetrics, readiness: &Readiness, api: Router) -> Router {
    let ready = Router::new()
        .route("/ready", get(get_ready))
        .with_state(readiness.clone());
    Router::new()
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
        .merge(ready)
        .merge(api)
        .merge(livehead_common::metrics::router(metrics.registry.clone()))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint (/health, /ready, /push, /last, /dump_last, /stats/..., /ping/..., /api/v1/checks..., /ui/..., /metrics)",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed (POST /push; HEAD, GET or POST /ping/...; GET, POST, PATCH or DELETE /api/v1/checks...; GET for the others)",
            )
        })
}

fn error(status: StatusCode, message: &str) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(json!({ "ok": false, "error": message })))
}

/// 200 `{"ok":true}`, or 503 naming each failing check.
async fn get_ready(State(readiness): State<Readiness>) -> (StatusCode, Json<serde_json::Value>) {
    let (ready, body) = readiness.answer();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
