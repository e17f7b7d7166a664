//! The collector's HTTP side: `/health` and `/metrics`.

use axum::{Json, Router, routing::get};

use crate::metrics::CollectorMetrics;

pub fn router(metrics: &CollectorMetrics) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "ok": true })) }),
        )
        .merge(livehead_common::metrics::router(metrics.registry.clone()))
}
