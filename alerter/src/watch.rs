//! The alerter's subscriptions: one `WatchService.Watch` stream per
//! collector replica, each address a URL's host resolves to (re-resolved, so
//! replicas that come and go are followed), each reconnecting by itself.
//! Every (re)connection starts with the collector's snapshot of the latest
//! state, so a gap is always followed by a resynchronisation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use http::Uri;
use livehead_common::Shutdown;
use livehead_proto::v1::watch_response::Event;
use livehead_proto::v1::watch_service_client::WatchServiceClient;
use livehead_proto::v1::{Record, WatchRequest};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::config::CollectorsConfig;

/// What the streams tell the main loop.
#[derive(Debug)]
pub enum Input {
    /// Records one agent sent, from a snapshot or accepted just now.
    Records {
        replica: SocketAddr,
        agent: String,
        records: Vec<Record>,
        live: bool,
    },
    /// A replica's snapshot is complete: what follows is live.
    Synced { replica: SocketAddr },
    /// A replica's stream ended; it is being reconnected.
    Lost { replica: SocketAddr, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("collector URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("collector URL {0:?}: https needs collectors.tls (or http:// with insecure)")]
    MissingTls(String),
    #[error(transparent)]
    Tls(#[from] livehead_common::tls::TlsError),
}

/// Counters of the subscriptions, on the alerter's `/metrics`.
#[derive(Clone)]
pub struct WatchMetrics {
    /// Replicas whose stream is open.
    pub streams: IntGauge,
    /// Records received, by `source` (snapshot, live).
    pub records: IntCounterVec,
    /// Streams that ended, by `reason` (error, closed).
    pub lost: IntCounterVec,
}

impl WatchMetrics {
    pub fn new(registry: &Registry) -> Self {
        use livehead_common::metrics::register;
        Self {
            streams: register(
                registry,
                IntGauge::new("watch_streams", "Collector replicas whose stream is open")
                    .expect("valid metric"),
            ),
            records: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "watch_records_total",
                        "Records received from the collectors",
                    ),
                    &["source"],
                )
                .expect("valid metric"),
            ),
            lost: register(
                registry,
                IntCounterVec::new(
                    Opts::new("watch_streams_lost_total", "Collector streams that ended"),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// One collector URL, checked.
#[derive(Debug, Clone)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Target {
    fn parse(url: &str, config: &CollectorsConfig) -> Result<Self, WatchError> {
        let bad = |reason: &str| WatchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let scheme = uri.scheme_str().unwrap_or_default().to_owned();
        let tls = match (scheme.as_str(), config.insecure) {
            ("https", false) => {
                let files = config
                    .tls
                    .as_ref()
                    .ok_or_else(|| WatchError::MissingTls(url.to_owned()))?;
                let name = config.server_name.clone().unwrap_or_else(|| host.clone());
                Some(livehead_common::tls::client_config(files, &name)?)
            }
            ("http", true) => None,
            _ => return Err(bad("scheme must be https (or http with insecure)")),
        };
        Ok(Self {
            port: uri.port_u16().unwrap_or(7070),
            scheme,
            host,
            tls,
        })
    }

    /// Every replica behind the URL now; the previous set when the name
    /// cannot be resolved (a DNS hiccup must not drop healthy streams).
    async fn resolve(&self) -> Option<Vec<SocketAddr>> {
        match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
            Ok(addrs) => Some(addrs.collect()),
            Err(error) => {
                tracing::warn!(host = %self.host, %error, "cannot resolve the collectors");
                None
            }
        }
    }

    fn endpoint(&self, addr: SocketAddr) -> Option<Endpoint> {
        let uri = format!("{}://{addr}", self.scheme);
        let endpoint = Endpoint::from_shared(uri)
            .ok()?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(Some(1 << 20));
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).ok(),
            None => Some(endpoint),
        }
    }
}

/// Checks every URL and starts following their replicas until `shutdown`.
pub fn start(
    config: &CollectorsConfig,
    inputs: mpsc::Sender<Input>,
    metrics: WatchMetrics,
    shutdown: Shutdown,
) -> Result<(), WatchError> {
    let targets = config
        .urls
        .iter()
        .map(|url| Target::parse(url, config))
        .collect::<Result<Vec<_>, _>>()?;
    for target in targets {
        tokio::spawn(follow(
            target,
            config.clone(),
            inputs.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Keeps one stream per address `target` resolves to.
async fn follow(
    target: Target,
    config: CollectorsConfig,
    inputs: mpsc::Sender<Input>,
    metrics: WatchMetrics,
    shutdown: Shutdown,
) {
    let mut replicas: HashMap<SocketAddr, Shutdown> = HashMap::new();
    loop {
        if let Some(addrs) = target.resolve().await {
            replicas.retain(|addr, stop| {
                let keep = addrs.contains(addr);
                if !keep {
                    tracing::info!(replica = %addr, "collector replica gone");
                    stop.cancel();
                }
                keep
            });
            for addr in addrs {
                if replicas.contains_key(&addr) {
                    continue;
                }
                let Some(endpoint) = target.endpoint(addr) else {
                    tracing::warn!(replica = %addr, "cannot build an endpoint");
                    continue;
                };
                let stop = shutdown.child_token();
                replicas.insert(addr, stop.clone());
                tracing::info!(replica = %addr, host = %target.host, "watching collector replica");
                tokio::spawn(watch_replica(
                    addr,
                    endpoint,
                    config.clone(),
                    inputs.clone(),
                    metrics.clone(),
                    stop,
                ));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(config.resolve_interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One replica's stream, reconnected with backoff until `stop`.
async fn watch_replica(
    replica: SocketAddr,
    endpoint: Endpoint,
    config: CollectorsConfig,
    inputs: mpsc::Sender<Input>,
    metrics: WatchMetrics,
    stop: Shutdown,
) {
    let mut delay = config.reconnect_min;
    loop {
        let outcome = tokio::select! {
            outcome = stream_once(replica, &endpoint, &config, &inputs, &metrics) => outcome,
            () = stop.cancelled() => return,
        };
        let (synced, reason) = match outcome {
            Ok(synced) => (synced, "closed by the collector".to_owned()),
            Err(Ended { synced, reason }) => (synced, reason),
        };
        if synced {
            delay = config.reconnect_min;
        }
        metrics
            .lost
            .with_label_values(&[if synced { "closed" } else { "error" }])
            .inc();
        tracing::warn!(replica = %replica, %reason, retry_in = ?delay, "collector stream ended");
        if inputs
            .send(Input::Lost {
                replica,
                reason: reason.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        delay = (delay * 2).min(config.reconnect_max);
    }
}

struct Ended {
    synced: bool,
    reason: String,
}

/// Connects, reads the snapshot and then live batches until the stream
/// ends. `Ok(true)` when the collector closed it after the snapshot.
async fn stream_once(
    replica: SocketAddr,
    endpoint: &Endpoint,
    config: &CollectorsConfig,
    inputs: &mpsc::Sender<Input>,
    metrics: &WatchMetrics,
) -> Result<bool, Ended> {
    let mut synced = false;
    let fail = |synced: bool, reason: String| Ended { synced, reason };
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|e| fail(false, format!("connect: {}", error_chain(&e))))?;
    let mut client =
        WatchServiceClient::new(channel).max_decoding_message_size(config.max_message_bytes);
    let mut stream = client
        .watch(WatchRequest {
            skip_snapshot: false,
        })
        .await
        .map_err(|s| fail(false, format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    metrics.streams.inc();
    let _open = GaugeGuard(metrics.streams.clone());
    while let Some(message) = stream.next().await {
        let message =
            message.map_err(|s| fail(synced, format!("{}: {}", s.code(), s.message())))?;
        let input = match message.event {
            Some(Event::Batch(batch)) => {
                metrics
                    .records
                    .with_label_values(&["live"])
                    .inc_by(batch.records.len() as u64);
                Input::Records {
                    replica,
                    agent: batch.agent_id,
                    records: batch.records,
                    live: true,
                }
            }
            Some(Event::Snapshot(chunk)) => {
                metrics
                    .records
                    .with_label_values(&["snapshot"])
                    .inc_by(chunk.records.len() as u64);
                Input::Records {
                    replica,
                    agent: chunk.agent_id,
                    records: chunk.records,
                    live: false,
                }
            }
            Some(Event::Synced(_)) => {
                synced = true;
                tracing::info!(replica = %replica, "collector snapshot received");
                Input::Synced { replica }
            }
            None => continue,
        };
        if inputs.send(input).await.is_err() {
            return Ok(synced);
        }
    }
    Ok(synced)
}

/// Decrements the open-streams gauge however the stream ends.
struct GaugeGuard(IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The error and its causes on one line (tonic hides the useful part, e.g.
/// "connection refused", in the source chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
