//! The collector's HTTP side: `/health`, `/metrics` and the old worker's API
//! (`/push`, `/last`, `/dump_last`, see [`crate::api`]).

use axum::http::StatusCode;
use axum::{Json, Router, routing::get};
use serde_json::json;

use crate::metrics::CollectorMetrics;

/// `/health` and `/metrics`, merged with the `api` router. Unknown paths and
/// wrong methods answer in the API's JSON error shape too, so a client that
/// parses every answer never meets an empty body.
pub fn router(metrics: &CollectorMetrics, api: Router) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
        .merge(api)
        .merge(livehead_common::metrics::router(metrics.registry.clone()))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint (/health, /push, /last, /dump_last, /metrics)",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed (POST /push; GET for the others)",
            )
        })
}

fn error(status: StatusCode, message: &str) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(json!({ "ok": false, "error": message })))
}
