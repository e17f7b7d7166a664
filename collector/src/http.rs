//! The collector's HTTP side: `/health`, `/metrics` and the old worker's API
//! (`/push`, `/last`, `/dump_last`, see [`crate::api`]).

use axum::{Json, Router, routing::get};

use crate::metrics::CollectorMetrics;

/// `/health` and `/metrics`, merged with the `api` router.
pub fn router(metrics: &CollectorMetrics, api: Router) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "ok": true })) }),
        )
        .merge(api)
        .merge(livehead_common::metrics::router(metrics.registry.clone()))
}
