//! The alerter's subscriptions: one `WatchService.Watch` stream per
//! collector replica, each address a URL's host resolves to (re-resolved, so
//! replicas that come and go are followed), each reconnecting by itself.
//! Every (re)connection starts with the collector's snapshot of the latest
//! state, so a gap is always followed by a resynchronisation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::Uri;
use livehead_common::Shutdown;
use livehead_common::tls::live::{LiveTls, ReloadMetrics, Rotation};
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
#[derive(Clone)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
    /// The TLS files each (re)connection takes its certificates from, and
    /// the name the collectors' certificate must carry.
    tls: Option<(Arc<LiveTls>, String)>,
}

impl Target {
    fn parse(
        url: &str,
        config: &CollectorsConfig,
        live: Option<&Arc<LiveTls>>,
    ) -> Result<Self, WatchError> {
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
                let live = live.ok_or_else(|| WatchError::MissingTls(url.to_owned()))?;
                let name = config.server_name.clone().unwrap_or_else(|| host.clone());
                Some((Arc::clone(live), name))
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
            Some((live, name)) => endpoint.tls_config(live.client_tls(name)).ok(),
            None => Some(endpoint),
        }
    }

    /// When a stream opened now must reconnect to take renewed certificates.
    fn rotation(&self) -> Rotation {
        self.tls
            .as_ref()
            .map_or_else(Rotation::never, |(live, _)| live.rotation())
    }
}

/// Checks every URL and starts following their replicas until `shutdown`.
pub fn start(
    config: &CollectorsConfig,
    inputs: mpsc::Sender<Input>,
    metrics: WatchMetrics,
    tls_metrics: ReloadMetrics,
    shutdown: Shutdown,
) -> Result<(), WatchError> {
    let live = match (&config.tls, config.insecure) {
        (Some(files), false) => Some(LiveTls::load(files, tls_metrics)?),
        _ => None,
    };
    let targets = config
        .urls
        .iter()
        .map(|url| Target::parse(url, config, live.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(live) = &live {
        live.spawn_polling(shutdown.clone());
    }
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
            let (start, gone) = changes(replicas.keys(), &addrs);
            for addr in gone {
                tracing::info!(replica = %addr, "collector replica gone");
                if let Some(stop) = replicas.remove(&addr) {
                    stop.cancel();
                }
            }
            for addr in start {
                let stop = shutdown.child_token();
                replicas.insert(addr, stop.clone());
                tracing::info!(replica = %addr, host = %target.host, "watching collector replica");
                tokio::spawn(watch_replica(
                    addr,
                    target.clone(),
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

/// The replicas to start watching and those to stop watching, when the
/// name now resolves to `now` (duplicates in `now` count once).
fn changes<'a>(
    watched: impl Iterator<Item = &'a SocketAddr> + Clone,
    now: &[SocketAddr],
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mut start: Vec<SocketAddr> = Vec::new();
    for addr in now {
        if !watched.clone().any(|w| w == addr) && !start.contains(addr) {
            start.push(*addr);
        }
    }
    let gone = watched.filter(|w| !now.contains(w)).copied().collect();
    (start, gone)
}

/// One replica's stream, reconnected with backoff until `stop`; each
/// connection takes the TLS certificates as they are then, and ends within
/// `tls.rotation_grace` after they are renewed.
async fn watch_replica(
    replica: SocketAddr,
    target: Target,
    config: CollectorsConfig,
    inputs: mpsc::Sender<Input>,
    metrics: WatchMetrics,
    stop: Shutdown,
) {
    let mut delay = config.reconnect_min;
    loop {
        let rotation = target.rotation();
        let outcome = match target.endpoint(replica) {
            Some(endpoint) => tokio::select! {
                outcome = stream_once(replica, &endpoint, &config, &inputs, &metrics) => outcome,
                () = rotation.due() => Err(Ended {
                    synced: true,
                    reason: "TLS certificates renewed: reconnecting with them".to_owned(),
                }),
                () = stop.cancelled() => return,
            },
            None => Err(Ended {
                synced: false,
                reason: "cannot build an endpoint".to_owned(),
            }),
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
                received(metrics, replica, batch.agent_id, batch.records, true)
            }
            Some(Event::Snapshot(chunk)) => {
                received(metrics, replica, chunk.agent_id, chunk.records, false)
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

/// Records of one agent, counted by where they come from.
fn received(
    metrics: &WatchMetrics,
    replica: SocketAddr,
    agent: String,
    records: Vec<Record>,
    live: bool,
) -> Input {
    let source = if live { "live" } else { "snapshot" };
    metrics
        .records
        .with_label_values(&[source])
        .inc_by(records.len() as u64);
    Input::Records {
        replica,
        agent,
        records,
        live,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 7070))
    }

    #[test]
    fn replicas_follow_what_the_name_resolves_to() {
        // First resolution: two replicas, one listed twice.
        let (start, gone) = changes([].iter(), &[addr(1), addr(2), addr(1)]);
        assert_eq!((start, gone), (vec![addr(1), addr(2)], vec![]));
        // A pod replaced: 2 stays, 1 goes, 3 comes.
        let watched = [addr(1), addr(2)];
        let (start, gone) = changes(watched.iter(), &[addr(2), addr(3)]);
        assert_eq!((start, gone), (vec![addr(3)], vec![addr(1)]));
        // Nothing changed.
        let (start, gone) = changes(watched.iter(), &[addr(2), addr(1)]);
        assert!(start.is_empty() && gone.is_empty());
    }

    #[test]
    fn urls_are_checked_before_anything_starts() {
        let config = CollectorsConfig::default();
        let https_without_tls = Target::parse("https://collector:7070", &config, None);
        assert!(matches!(https_without_tls, Err(WatchError::MissingTls(_))));
        let plain_without_insecure = Target::parse("http://collector:7070", &config, None);
        assert!(
            plain_without_insecure
                .err()
                .is_some_and(|e| e.to_string().contains("scheme must be https"))
        );
        let insecure = CollectorsConfig {
            insecure: true,
            ..CollectorsConfig::default()
        };
        let target = Target::parse("http://[::1]:7071", &insecure, None).expect("valid");
        assert_eq!((target.host.as_str(), target.port), ("::1", 7071));
    }
}
