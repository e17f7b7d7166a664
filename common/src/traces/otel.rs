//! The exporter side of [`super`]: the OTLP/gRPC exporter behind a bounded
//! batch queue, and the tracing layer that feeds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::{Carrier, DROPPED_SPANS, SamplerKind, TracesError, TracesSettings};

/// Set while a [`Traces`] is alive: context is injected and extracted only then.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long stopping waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running exporter; stopping it (drop) exports what is queued, within
/// a few seconds. Drop it while the tokio runtime it was started in still
/// runs: the gRPC client lives there.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

impl Traces {
    /// Starts the exporter. Must run inside a tokio runtime (tonic's channel
    /// is created there); it connects lazily, so an endpoint that is down
    /// is no error here.
    pub fn start(settings: &TracesSettings) -> Result<Self, TracesError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(|e| TracesError::Exporter(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(settings.max_queue_size)
            .with_max_export_batch_size(settings.max_export_batch_size.min(settings.max_queue_size))
            .with_scheduled_delay(settings.schedule_delay)
            .build();
        let processor = BatchSpanProcessor::builder(Outages::new(exporter))
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(settings.sampler))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("livehead");
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Self { provider, tracer })
    }

    /// Stops the exporter, sending what is queued (as dropping it does).
    pub fn stop(self) {
        drop(self);
    }

    /// The layer that turns livehead's own spans (targets `livehead*`, INFO
    /// and up) into OpenTelemetry spans. The libraries' spans stay out: the
    /// exporter's own gRPC client would otherwise trace its exports.
    pub(crate) fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("livehead") && *meta.level() <= tracing::Level::INFO
            }))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::debug!(%error, "trace exporter stopped with an error");
        }
    }
}

fn sampler(kind: SamplerKind) -> Sampler {
    match kind {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// The OTLP exporter, logging an outage once (when it starts and when it
/// ends) rather than at every export, and counting the spans it loses. It
/// answers success either way: the batch processor would only log again.
#[derive(Debug)]
struct Outages<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> Outages<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }

    fn observe(&self, result: OTelSdkResult, spans: usize) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        dropped_total = DROPPED_SPANS.get(),
                        "trace export works again"
                    );
                }
            }
            Err(error) => {
                DROPPED_SPANS.inc_by(spans as u64);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, spans,
                        "trace export failed; dropping spans until it works again (logged once)");
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Outages<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.observe(result, spans);
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

pub(super) fn inject(span: &tracing::Span) -> Carrier {
    let mut carrier = Carrier::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

pub(super) fn set_parent(span: &tracing::Span, carrier: &Carrier) {
    let parent = TraceContextPropagator::new().extract(carrier);
    // An error means the span is not recorded by the OpenTelemetry layer
    // (filtered out): it has no parent to set.
    let _ = span.set_parent(parent);
}
