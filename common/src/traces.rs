//! OpenTelemetry traces over OTLP/gRPC (the README's "Traces"): settings from
//! the `[telemetry]` table and the standard `OTEL_*` variables, the exporter,
//! and the W3C trace context carried inside each batch.
//!
//! Off unless an endpoint is configured; then no layer is installed and
//! [`inject`]/[`set_parent`] return at once. With the `otel` cargo feature
//! off, the table still parses and a configured endpoint only warns.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// The `[telemetry]` table of every config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint (`http://otel-collector:4317`). Empty (default):
    /// traces off. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, replaces it.
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Default: `livehead-agent`,
    /// `livehead-collector` or `livehead-alerter`. `OTEL_SERVICE_NAME` replaces it.
    pub service_name: Option<String>,
    /// Sampler, by its `OTEL_TRACES_SAMPLER` name. Default
    /// `parentbased_traceidratio`: a batch the agent sampled is sampled on
    /// the collector too.
    pub sampler: String,
    /// The ratio of the `*traceidratio` samplers, 0 to 1. Default 1.0 (the
    /// standard's). `OTEL_TRACES_SAMPLER_ARG` replaces it.
    pub sampler_arg: f64,
    /// Finished spans waiting for export; past it new spans are dropped
    /// (never waited for). Default 2048. `OTEL_BSP_MAX_QUEUE_SIZE` replaces it.
    pub max_queue_size: usize,
    /// Spans per export request. Default 512.
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` replaces it.
    pub max_export_batch_size: usize,
    /// How often queued spans are exported. Default 5s.
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) replaces it.
    #[serde(with = "humantime_serde")]
    pub schedule_delay: Duration,
    /// How long one export may take before it is abandoned (its spans
    /// dropped). Default 10s. `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), replaces it.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: None,
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: 1.0,
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error(
        "unknown trace sampler {0:?} (expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio)"
    )]
    Sampler(String),
    #[error("{name} = {value:?}: {reason}")]
    Value {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("this livehead was built without the `otel` feature: traces cannot be exported")]
    NotBuiltIn,
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Which spans are kept, as the `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerKind {
    fn parse(name: &str, arg: f64) -> Result<Self, TracesError> {
        Ok(match name {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(arg),
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedRatio(arg),
            other => return Err(TracesError::Sampler(other.to_owned())),
        })
    }
}

/// What the exporter is started with: the file's table with the
/// environment applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesSettings {
    pub endpoint: String,
    pub service_name: String,
    pub sampler: SamplerKind,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

impl TracesSettings {
    /// `config` with the `OTEL_*` variables `env` answers applied; `None`
    /// when traces are off (no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`).
    pub fn resolve(
        config: &TelemetryConfig,
        default_service: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TracesError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| config.otlp_endpoint.clone());
        if disabled || endpoint.trim().is_empty() {
            return Ok(None);
        }
        let sampler_arg = match var("OTEL_TRACES_SAMPLER_ARG") {
            Some(v) => parse_var("OTEL_TRACES_SAMPLER_ARG", &v)?,
            None => config.sampler_arg,
        };
        if !(0.0..=1.0).contains(&sampler_arg) {
            return Err(TracesError::Value {
                name: "sampler_arg",
                value: sampler_arg.to_string(),
                reason: "a ratio between 0 and 1",
            });
        }
        let sampler = var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| config.sampler.clone());
        let millis = |name: &'static str, default: Duration| match var(name) {
            Some(v) => parse_var::<u64>(name, &v).map(Duration::from_millis),
            None => Ok(default),
        };
        let export_timeout = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(_) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", config.export_timeout)?,
            None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", config.export_timeout)?,
        };
        Ok(Some(Self {
            endpoint: endpoint.trim().to_owned(),
            service_name: var("OTEL_SERVICE_NAME")
                .or_else(|| config.service_name.clone())
                .unwrap_or_else(|| default_service.to_owned()),
            sampler: SamplerKind::parse(sampler.trim(), sampler_arg)?,
            max_queue_size: match var("OTEL_BSP_MAX_QUEUE_SIZE") {
                Some(v) => parse_var("OTEL_BSP_MAX_QUEUE_SIZE", &v)?,
                None => config.max_queue_size,
            }
            .max(1),
            max_export_batch_size: match var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
                Some(v) => parse_var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &v)?,
                None => config.max_export_batch_size,
            }
            .max(1),
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", config.schedule_delay)?,
            export_timeout,
        }))
    }
}

fn parse_var<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, TracesError> {
    value.trim().parse().map_err(|_| TracesError::Value {
        name,
        value: value.to_owned(),
        reason: "not a number",
    })
}

/// Spans lost because their export failed (endpoint unreachable, timed out,
/// refused), process-wide; every service's `/metrics` shows it as
/// `<prefix>_trace_spans_dropped_total`. Spans dropped because the queue was
/// full are counted by the SDK, which logs the first and the total at exit.
pub static DROPPED_SPANS: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| {
        prometheus::IntCounter::new(
            "trace_spans_dropped_total",
            "Spans lost because their OTLP export failed",
        )
        .expect("static metric")
    });

/// The W3C trace context of a batch (`traceparent`, `tracestate`), as it
/// travels in `PushRequest.trace_context`.
pub type Carrier = HashMap<String, String>;

#[cfg(feature = "otel")]
mod otel;
#[cfg(feature = "otel")]
pub use otel::Traces;

/// Without the `otel` feature: nothing can be exported.
#[cfg(not(feature = "otel"))]
#[derive(Debug)]
pub struct Traces;

#[cfg(not(feature = "otel"))]
impl Traces {
    /// Always [`TracesError::NotBuiltIn`].
    pub fn start(_: &TracesSettings) -> Result<Self, TracesError> {
        Err(TracesError::NotBuiltIn)
    }

    /// Nothing to stop.
    pub fn stop(self) {}
}

/// `span`'s trace context, to send along with the work it describes; empty
/// when traces are off or the span is not sampled.
pub fn inject(span: &tracing::Span) -> Carrier {
    #[cfg(feature = "otel")]
    if otel::enabled() {
        return otel::inject(span);
    }
    let _ = span;
    Carrier::new()
}

/// Makes the context in `carrier` (sent by another process) `span`'s parent.
/// Nothing happens when traces are off or the carrier holds no valid context.
pub fn set_parent(span: &tracing::Span, carrier: &Carrier) {
    #[cfg(feature = "otel")]
    if otel::enabled() && !carrier.is_empty() {
        otel::set_parent(span, carrier);
    }
    let _ = (span, carrier);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        let config = TelemetryConfig::default();
        let none = TracesSettings::resolve(&config, "livehead-agent", env(&[])).expect("ok");
        assert_eq!(none, None);
        let with_file = TelemetryConfig {
            otlp_endpoint: "http://otel:4317".into(),
            ..TelemetryConfig::default()
        };
        let disabled = env(&[("OTEL_SDK_DISABLED", "true")]);
        assert_eq!(
            TracesSettings::resolve(&with_file, "x", disabled).expect("ok"),
            None
        );
        let exporter_none = env(&[("OTEL_TRACES_EXPORTER", "none")]);
        assert_eq!(
            TracesSettings::resolve(&with_file, "x", exporter_none).expect("ok"),
            None
        );
    }

    #[test]
    fn the_environment_replaces_the_file_and_defaults_fill_the_rest() {
        let config = TelemetryConfig {
            otlp_endpoint: "http://file:4317".into(),
            sampler: "always_on".into(),
            ..TelemetryConfig::default()
        };
        let from_file = TracesSettings::resolve(&config, "livehead-collector", env(&[]))
            .expect("ok")
            .expect("on");
        assert_eq!(from_file.endpoint, "http://file:4317");
        assert_eq!(from_file.service_name, "livehead-collector");
        assert_eq!(from_file.sampler, SamplerKind::AlwaysOn);
        assert_eq!(from_file.max_queue_size, 2048);

        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_SERVICE_NAME", "edge-agent"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ]);
        let s = TracesSettings::resolve(&config, "livehead-agent", vars)
            .expect("ok")
            .expect("on");
        assert_eq!(s.endpoint, "http://traces:4317");
        assert_eq!(s.service_name, "edge-agent");
        assert_eq!(s.sampler, SamplerKind::ParentBasedRatio(0.25));
        assert_eq!(s.schedule_delay, Duration::from_millis(200));
        assert_eq!(s.export_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_samplers_and_numbers_are_refused() {
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")];
        let config = TelemetryConfig::default();
        for bad in [
            [on[0], ("OTEL_TRACES_SAMPLER", "sometimes")],
            [on[0], ("OTEL_TRACES_SAMPLER_ARG", "1.5")],
            [on[0], ("OTEL_TRACES_SAMPLER_ARG", "half")],
            [on[0], ("OTEL_BSP_MAX_QUEUE_SIZE", "-1")],
        ] {
            assert!(
                TracesSettings::resolve(&config, "x", env(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_table_parses_with_durations() {
        let c: TelemetryConfig = toml::from_str(
            "otlp_endpoint = \"http://otel:4317\"\nschedule_delay = \"1s\"\nsampler_arg = 0.1",
        )
        .expect("toml");
        assert_eq!(c.schedule_delay, Duration::from_secs(1));
        assert_eq!(c.sampler_arg, 0.1);
        assert!(toml::from_str::<TelemetryConfig>("endpoint = \"x\"").is_err());
    }

    #[test]
    fn nothing_is_injected_when_traces_are_off() {
        let span = tracing::info_span!("batch");
        assert!(inject(&span).is_empty());
        set_parent(
            &span,
            &Carrier::from([("traceparent".into(), "00-x".into())]),
        );
    }
}
