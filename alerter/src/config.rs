//! The alerter's own configuration (`alerter.toml`, flags, environment):
//! where the collectors are, where its state lives, where its API listens.
//! What to alert on and whom to tell is the rules file's business.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use livehead_agent::config::{BatchConfig, CollectorConnConfig, Compression, SpoolConfig};
use livehead_common::tls::TlsFiles;
use serde::Deserialize;

use crate::access::RoleToken;
pub use crate::heartbeats::HeartbeatsConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlerterConfig {
    /// The rules file: rules, receivers, routes, inhibition. Required.
    pub rules: Option<PathBuf>,
    /// The alerter's state (alerts, silences, notifications not yet
    /// delivered, `state.json`) and the spool of the alert records on their
    /// way to the store (`spool/`). Default `/var/lib/livehead-alerter`.
    pub state_dir: PathBuf,
    /// Name the alert records are stored under. Default: with mTLS, the
    /// certificate's name; with `insecure`, "alerter".
    pub id: Option<String>,
    /// How often the rules look at the time (durations, windows, missing
    /// data) besides each batch received. Default 250ms.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Where people reach livehead (`https://livehead.example.net`): each
    /// notification links to `{external_url}/alerts` filtered on its node
    /// and site. Default none: no link.
    pub external_url: Option<String>,
    pub collectors: CollectorsConfig,
    pub api: ApiConfig,
    /// Heartbeat checks' alerts (`[heartbeats]`).
    pub heartbeats: HeartbeatsConfig,
    /// OpenTelemetry traces (`[telemetry]`): off unless an OTLP endpoint is
    /// set here or in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub telemetry: livehead_common::traces::TelemetryConfig,
}

impl Default for AlerterConfig {
    fn default() -> Self {
        Self {
            rules: None,
            state_dir: PathBuf::from("/var/lib/livehead-alerter"),
            id: None,
            tick: Duration::from_millis(250),
            external_url: None,
            collectors: CollectorsConfig::default(),
            api: ApiConfig::default(),
            heartbeats: HeartbeatsConfig::default(),
            telemetry: livehead_common::traces::TelemetryConfig::default(),
        }
    }
}

/// Where the collectors are and how to reach them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorsConfig {
    /// gRPC URLs of the collectors. Each address a URL's host resolves to
    /// is one replica, watched on its own (a Kubernetes headless Service
    /// lists them all). The alert records go to the first URL. Default
    /// `["https://127.0.0.1:7070"]`.
    pub urls: Vec<String>,
    /// How often host names are resolved again, to follow replicas that
    /// come and go. Default 30s.
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// Name the collectors' certificate must carry. Default: the URL's host.
    pub server_name: Option<String>,
    /// CA, certificate and key for mTLS; the certificate's name must be in
    /// the collectors' `watch.allow`. Required unless `insecure`.
    pub tls: Option<TlsFiles>,
    /// Plain-text gRPC (`http://` URLs, no certificates). Default false.
    pub insecure: bool,
    /// First reconnect delay, doubled up to `reconnect_max`. Default 500ms.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 10s.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Largest message accepted from a collector (a snapshot chunk).
    /// Default 16 MiB (16777216).
    pub max_message_bytes: usize,
}

impl Default for CollectorsConfig {
    fn default() -> Self {
        Self {
            urls: vec!["https://127.0.0.1:7070".to_owned()],
            resolve_interval: Duration::from_secs(30),
            server_name: None,
            tls: None,
            insecure: false,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(10),
            max_message_bytes: 16 << 20,
        }
    }
}

impl CollectorsConfig {
    /// The connection the alert records travel on: the first URL, with the
    /// agent's batching and spooling defaults.
    pub fn records_connection(&self) -> CollectorConnConfig {
        CollectorConnConfig {
            url: self.urls.first().cloned().unwrap_or_default(),
            server_name: self.server_name.clone(),
            tls: self.tls.clone(),
            insecure: self.insecure,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            compression: Compression::None,
            ..CollectorConnConfig::default()
        }
    }
}

/// The HTTP API: /alerts, /silences, /health, /metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Default `127.0.0.1:7090`.
    pub listen: SocketAddr,
    /// Role tokens, shaped as the collector's `api.tokens`
    /// (`{ name, sha256, role, sites }`). Default none: only `/health` and
    /// `/metrics` answer.
    pub tokens: Vec<RoleToken>,
    /// Connections served at once. Default 256.
    pub max_connections: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7090)),
            tokens: Vec::new(),
            max_connections: 256,
        }
    }
}

impl AlerterConfig {
    /// The records' batching: small batches sent at once, alerts are few
    /// and the store should see them quickly.
    pub fn records_batch(&self) -> BatchConfig {
        BatchConfig {
            max_records: 100,
            max_delay: Duration::from_millis(200),
            ..BatchConfig::default()
        }
    }

    /// The records' spool: on disk under the state directory, so what was
    /// not yet stored survives a restart.
    pub fn records_spool(&self) -> SpoolConfig {
        SpoolConfig {
            dir: Some(self.state_dir.join("spool")),
            ..SpoolConfig::default()
        }
    }

    /// The link back a notification about `node` and `site` carries.
    pub fn link(&self, node: Option<&str>, site: Option<&str>) -> Option<String> {
        let base = self.external_url.as_deref()?.trim_end_matches('/');
        // Node and site names are host-name syntax (checked by the
        // collector): nothing to escape in a query string.
        let query: Vec<String> = [("node", node), ("site", site)]
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
            .collect();
        Some(if query.is_empty() {
            format!("{base}/alerts")
        } else {
            format!("{base}/alerts?{}", query.join("&"))
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The name the records are sent under; empty lets the collector take
    /// the certificate's.
    pub fn records_id(&self) -> String {
        match (&self.id, self.collectors.insecure) {
            (Some(id), _) => id.clone(),
            (None, true) => "alerter".to_owned(),
            (None, false) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_filter_on_node_and_site() {
        let mut config = AlerterConfig::default();
        assert_eq!(config.link(Some("n1"), None), None);
        config.external_url = Some("https://livehead.example.net/".to_owned());
        assert_eq!(
            config.link(Some("n1"), Some("shop.example")).as_deref(),
            Some("https://livehead.example.net/alerts?node=n1&site=shop.example")
        );
        assert_eq!(
            config.link(None, None).as_deref(),
            Some("https://livehead.example.net/alerts")
        );
    }
}
