//! The Prometheus `/metrics` endpoint every service exposes.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

/// Registers `metric` and returns it, so a metrics struct is built in one
/// expression and no metric can be created yet left unregistered.
///
/// Panics on an invalid or duplicate name: metric definitions are static, so
/// that is a programming error caught by the first test that builds them.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are valid and unique");
    metric
}

/// A registry whose metric names all start with `prefix_`.
/// Every such registry also shows `trace_spans_dropped_total`, the spans the
/// process's trace exporter lost (0 when traces are off).
pub fn registry(prefix: &str) -> Registry {
    let registry =
        Registry::new_custom(Some(prefix.to_owned()), None).expect("static prefix is valid");
    register(&registry, crate::traces::DROPPED_SPANS.clone());
    registry
}

/// A router answering `GET /metrics` in the Prometheus text format (0.0.4).
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(registry)
}

async fn render(State(registry): State<Registry>) -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(err) = encoder.encode(&registry.gather(), &mut body) {
        tracing::error!(error = %err, "encoding metrics failed");
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        body,
    )
}

/// Serves `router` on `listener` until `shutdown` fires, with the default
/// bounds of [`crate::http_server::HttpLimits`] (connections, header timeout).
/// The connection metrics are not exported: a service exporting them calls
/// [`crate::http_server::serve`] with its own.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: crate::Shutdown,
) -> std::io::Result<()> {
    let metrics = crate::listener::ListenerMetrics {
        open: prometheus::IntGauge::new("connections", "Connections open").expect("static metric"),
        accept_errors: prometheus::IntCounter::new("accept_errors_total", "Failed accepts")
            .expect("static metric"),
    };
    crate::http_server::serve(
        listener,
        router,
        shutdown,
        crate::http_server::HttpLimits::default(),
        metrics,
    )
    .await
}
