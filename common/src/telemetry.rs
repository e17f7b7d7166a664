//! Process-wide tracing set-up, called once by the binary.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

use crate::traces::Traces;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Installs the global subscriber. The filter comes from `RUST_LOG`, else
/// `default_filter`. Text lines are coloured only on a terminal without
/// `NO_COLOR` ([`colour`]). With `traces`, livehead's spans are also
/// exported (see [`crate::traces`]); without, no layer is added.
pub fn init(format: LogFormat, default_filter: &str, traces: Option<&Traces>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // Layers over a registry rather than `fmt()`: the span exporter's layer
    // has its own filter, which only a registry supports.
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests starting several components) is harmless.
    let _ = match format {
        LogFormat::Text => install(registry.with(logs), traces),
        LogFormat::Json => install(registry.with(logs.json()), traces),
    };
}

fn install<S>(subscriber: S, traces: Option<&Traces>) -> Result<(), TryInitError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    #[cfg(feature = "otel")]
    if let Some(traces) = traces {
        return subscriber.with(traces.layer()).try_init();
    }
    let _ = traces;
    subscriber.try_init()
}

/// Whether log lines may carry colour escape codes: a file, a pipe or
/// journald would store them as `\x1b[2m…`, so only a terminal gets them,
/// and not even one when `NO_COLOR` is set to anything but the empty string
/// (no-color.org).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
