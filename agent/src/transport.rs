//! The long-lived gRPC stream to the collector: sends spooled batches (at most
//! `max_in_flight` unacknowledged, none over the limits the collector
//! announces), forgets each batch when its ack arrives, and after any failure
//! reconnects with backoff and resends every batch still in the spool, in
//! order. A refusal of a batch splits it, renumbers it or drops it (see
//! [`split::reaction`]). Each connection takes the TLS files as they are
//! then; when they are renewed, the stream stops sending within
//! `tls.rotation_grace`, waits for its acks and reconnects with them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use livehead_common::Shutdown;
use livehead_common::tls::TlsError;
use livehead_common::tls::live::{LiveTls, ReloadMetrics, Rotation};
use livehead_proto::v1::{PushRequest, PushResponse, ingest_service_client::IngestServiceClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::batch::Seqs;
use crate::config::{CollectorConnConfig, Compression};
use crate::metrics::AgentMetrics;
use crate::split::{self, Limits, Reaction, Split};
use crate::spool::{At, DiskError, Oldest, SharedSpool};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid collector URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "collector URL {0:?} is https but no TLS files are configured (collector.tls or --tls-*)"
    )]
    MissingTls(String),
    #[error("collector URL {0:?} is plain http: that needs --insecure (collector.insecure = true)")]
    PlainTextNeedsInsecure(String),
    #[error("--insecure needs an http:// collector URL, got {0:?}")]
    InsecureNeedsHttp(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to the collector: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("collector stream failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("collector closed the stream")]
    Closed,
    #[error("the TLS certificates were renewed: reconnecting with them")]
    Rotated,
    #[error("the spool could not be rewritten (see the error above)")]
    SpoolRewrite,
    #[error("cannot read the spool: {0}")]
    SpoolRead(DiskError),
}

/// How to reach the collector: its endpoint and, with TLS, the files each
/// (re)connection takes its certificates from, as they are at that moment.
#[derive(Clone)]
pub struct Connector {
    endpoint: Endpoint,
    tls: Option<(Arc<LiveTls>, String)>,
}

impl Connector {
    /// The endpoint with the current certificates.
    pub fn endpoint(&self) -> Result<Endpoint, TransportError> {
        match &self.tls {
            Some((live, name)) => Ok(self.endpoint.clone().tls_config(live.client_tls(name))?),
            None => Ok(self.endpoint.clone()),
        }
    }

    /// When a stream opened now must reconnect to take renewed certificates.
    fn rotation(&self) -> Rotation {
        self.tls
            .as_ref()
            .map_or_else(Rotation::never, |(live, _)| live.rotation())
    }

    /// Follows the TLS files until `stop`.
    fn poll_files(&self, stop: Shutdown) {
        if let Some((live, _)) = &self.tls {
            live.spawn_polling(stop);
        }
    }
}

/// Builds the collector connector, checking the URL/TLS combination and the
/// TLS files up front so a misconfiguration fails at start with a clear
/// message.
pub fn connector(
    cfg: &CollectorConnConfig,
    tls_metrics: ReloadMetrics,
) -> Result<Connector, TransportError> {
    let (endpoint, tls) = checked_endpoint(cfg)?;
    let tls = match tls {
        Some((files, name)) => Some((LiveTls::load(files, tls_metrics)?, name)),
        None => None,
    };
    Ok(Connector { endpoint, tls })
}

/// The collector endpoint with the TLS files as they are now, not followed
/// afterwards: for one-shot clients (the benchmarks).
pub fn endpoint(cfg: &CollectorConnConfig) -> Result<Endpoint, TransportError> {
    connector(cfg, ReloadMetrics::new(&prometheus::Registry::new()))?.endpoint()
}

/// The endpoint without TLS, and the TLS files and server name when the URL
/// is https.
#[allow(clippy::type_complexity)]
fn checked_endpoint(
    cfg: &CollectorConnConfig,
) -> Result<(Endpoint, Option<(&livehead_common::tls::TlsFiles, String)>), TransportError> {
    let bad_url = |reason: String| TransportError::Url {
        url: cfg.url.clone(),
        reason,
    };
    let uri: Uri = cfg.url.parse().map_err(|e| bad_url(format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| bad_url("no host".into()))?
        .to_owned();
    let endpoint = Endpoint::from(uri.clone())
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    match (uri.scheme_str(), cfg.insecure) {
        (Some("https"), false) => {
            let files = cfg
                .tls
                .as_ref()
                .ok_or_else(|| TransportError::MissingTls(cfg.url.clone()))?;
            let name = cfg.server_name.clone().unwrap_or(host);
            Ok((endpoint, Some((files, name))))
        }
        (Some("http"), true) => Ok((endpoint, None)),
        (Some("http"), false) => Err(TransportError::PlainTextNeedsInsecure(cfg.url.clone())),
        (Some("https"), true) => Err(TransportError::InsecureNeedsHttp(cfg.url.clone())),
        _ => Err(bad_url(
            "scheme must be https (or http with --insecure)".into(),
        )),
    }
}

/// When the transport may stop.
#[derive(Debug, Clone)]
pub struct Stops {
    /// No more batches will come: stop as soon as the spool is empty.
    pub drain: Shutdown,
    /// Stop now, whatever is left.
    pub hard: Shutdown,
}

/// How a stream ended.
#[derive(Debug)]
enum Ended {
    /// Drained or hard-stopped.
    Done,
    /// Failed; `fixed`: the failure was about a batch, which was dealt with,
    /// so reconnecting at once is no load on a struggling collector.
    Failed { error: TransportError, fixed: bool },
}

/// Connection loop; returns once drained or hard-stopped.
pub async fn run(
    connector: Connector,
    cfg: CollectorConnConfig,
    spool: SharedSpool,
    seqs: Seqs,
    metrics: AgentMetrics,
    stops: Stops,
) {
    let polling = Shutdown::new();
    connector.poll_files(polling.clone());
    let _stop_polling = polling.drop_guard();
    let mut delay = cfg.reconnect_min;
    loop {
        let mut session = Session {
            cfg: &cfg,
            spool: &spool,
            seqs: &seqs,
            metrics: &metrics,
            limits: Limits::default(),
            acked: 0,
            spans: HashMap::new(),
        };
        let ended = session.run(&connector, &stops).await;
        spool.end_stream();
        if session.acked > 0 {
            delay = cfg.reconnect_min;
        }
        let Ended::Failed { error, fixed } = ended else {
            return;
        };
        if fixed {
            delay = cfg.reconnect_min;
        }
        metrics.reconnects.inc();
        let wait = jitter(delay);
        tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64,
            unacked = spool.lock().len(), "collector connection lost");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stops.hard.cancelled() => return,
        }
        delay = (delay * 2).min(cfg.reconnect_max);
    }
}

/// Between 50% and 100% of `delay`, so agents restarted together do not
/// reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

struct Session<'a> {
    cfg: &'a CollectorConnConfig,
    spool: &'a SharedSpool,
    seqs: &'a Seqs,
    metrics: &'a AgentMetrics,
    /// What the collector announced for this stream.
    limits: Limits,
    acked: u64,
    /// The span of each batch sent and not yet acknowledged, by seq: it
    /// ends with the ack, so it covers the collector's work on the batch.
    spans: HashMap<u64, tracing::Span>,
}

impl Session<'_> {
    async fn run(&mut self, connector: &Connector, stops: &Stops) -> Ended {
        let result = self.stream(connector, stops).await;
        for (_, span) in self.spans.drain() {
            span.record("outcome", "unacked");
        }
        match result {
            Ok(()) => Ended::Done,
            // Nothing wrong with the collector: reconnect without backing off.
            Err(TransportError::Rotated) => Ended::Failed {
                error: TransportError::Rotated,
                fixed: true,
            },
            Err(TransportError::Rpc(status)) => {
                let fixed = self.on_refusal(&status).await;
                Ended::Failed {
                    error: TransportError::Rpc(status),
                    fixed,
                }
            }
            Err(error) => Ended::Failed {
                error,
                fixed: false,
            },
        }
    }

    /// One stream. Once `rotation` is due it sends no more batches, waits
    /// for the acks of those sent, and ends with [`TransportError::Rotated`].
    async fn stream(&mut self, connector: &Connector, stops: &Stops) -> Result<(), TransportError> {
        // Taken before connecting: a renewal during the handshake counts.
        let rotated = connector.rotation().due();
        tokio::pin!(rotated);
        let mut rotating = false;
        let endpoint = connector.endpoint()?;
        let channel = tokio::select! {
            c = endpoint.connect() => c?,
            () = stops.hard.cancelled() => return Ok(()),
        };
        let window = self.cfg.max_in_flight.max(1);
        // One slot more than the window: sending never waits on the channel.
        let (tx, rx) = mpsc::channel(window + 1);
        let response = client(channel, self.cfg.compression)
            .push(ReceiverStream::new(rx))
            .await?;
        self.limits = Limits::from_metadata(response.metadata());
        let mut acks = response.into_inner();
        tracing::info!(url = %self.cfg.url, max_message_bytes = self.limits.max_bytes,
            max_batch_records = self.limits.max_records, "connected to collector");
        loop {
            if !rotating {
                self.fill_window(&tx, window).await?;
            } else if self.spool.lock().in_flight() == 0 {
                return Err(TransportError::Rotated);
            }
            if stops.drain.is_cancelled() && self.spool.lock().is_settled() {
                return Ok(());
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => self.on_ack(ack).await,
                    Ok(None) => return Err(TransportError::Closed),
                    Err(status) => return Err(TransportError::Rpc(status)),
                },
                () = self.spool.pushed() => {}
                () = stops.drain.cancelled(), if !stops.drain.is_cancelled() => {}
                () = &mut rotated, if !rotating => {
                    rotating = true;
                    tracing::info!(url = %self.cfg.url, "TLS certificates renewed: \
                        reconnecting once the batches sent are acknowledged");
                }
                () = stops.hard.cancelled() => return Ok(()),
            }
        }
    }

    /// Sends spooled batches while fewer than `window` are unacknowledged,
    /// splitting first those over the collector's limits.
    async fn fill_window(
        &mut self,
        tx: &mpsc::Sender<PushRequest>,
        window: usize,
    ) -> Result<(), TransportError> {
        loop {
            let next = {
                let spool = self.spool.lock();
                if spool.in_flight() >= window {
                    return Ok(());
                }
                spool.next_unsent()
            };
            let Some(at) = next else { return Ok(()) };
            let Some(batch) = self.read(at).await? else {
                continue;
            };
            if !self.limits.fits(at.piece.records, at.piece.bytes) {
                let split = split::to_fit(batch, self.limits, self.seqs);
                // A spool that cannot be rewritten would offer the same batch
                // again at once: end the stream and retry after a backoff.
                if !self
                    .replace(at, split, "over the collector's announced limits")
                    .await
                {
                    return Err(TransportError::SpoolRewrite);
                }
                continue;
            }
            if !self.spool.lock().mark_sent(at) {
                continue;
            }
            let batch = self.traced(batch, at.piece.bytes);
            tx.try_send(batch).map_err(|_| TransportError::Closed)?;
            self.metrics.batches_sent.inc();
        }
    }

    /// Opens `batch`'s span, ended by its ack, and puts the span's trace
    /// context in the batch unless that would take it (`bytes` spooled) over
    /// the collector's announced limits: the trace is then cut, not the batch.
    fn traced(&mut self, mut batch: PushRequest, bytes: usize) -> PushRequest {
        let span = tracing::info_span!("agent.batch", agent = %batch.agent_id, seq = batch.seq,
            records = batch.records.len(), outcome = tracing::field::Empty,
            accepted = tracing::field::Empty);
        let context = livehead_common::traces::inject(&span);
        // A map entry's overhead: two tags, three lengths (at most 8 bytes).
        let extra: usize = context.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        if self.limits.fits(batch.records.len(), bytes + extra) {
            batch.trace_context = context;
        }
        self.spans.insert(batch.seq, span);
        batch
    }

    /// The batch at `at`, or `None` when it cannot be sent (gone meanwhile,
    /// or its file corrupt: then dropped and counted). An I/O error may pass
    /// (a full file table, say): it ends the stream, to be retried.
    async fn read(&self, at: At) -> Result<Option<PushRequest>, TransportError> {
        match self.spool.batch(at).await {
            Ok(Some(batch)) => Ok(Some(batch)),
            Ok(None) => {
                // Evicted meanwhile (fine), or missing from its file.
                if let Ok(true) = self.spool.replace(at, Vec::new()).await {
                    self.metrics.spool_dropped_batches.inc();
                    self.metrics
                        .spool_dropped_records
                        .inc_by(at.piece.records as u64);
                    tracing::error!(
                        seq = at.piece.seq,
                        "spooled batch missing from its file; dropped"
                    );
                }
                Ok(None)
            }
            Err(error @ DiskError::Format { .. }) => {
                tracing::error!(%error, seq = at.piece.seq, "spooled batch unreadable; set its file aside");
                self.spool.drop_unreadable(at.pos).await;
                Ok(None)
            }
            Err(error) => Err(TransportError::SpoolRead(error)),
        }
    }

    /// The collector handles batches in order, so a stream failing on a batch
    /// fails on the oldest unacknowledged one. When the refusal is about that
    /// batch, resending it unchanged would fail forever and hold back every
    /// batch behind it. Returns whether the batch was dealt with.
    async fn on_refusal(&self, status: &tonic::Status) -> bool {
        let oldest = self.spool.lock().oldest_in_flight();
        let Some(Oldest::Spooled(at)) = oldest else {
            // Nothing sent, or a batch dropped from the full spool: counted
            // lost when the stream ends.
            return false;
        };
        let reaction = split::reaction(status.code(), at.piece.records);
        if reaction == Reaction::Retry {
            return false;
        }
        let batch = match self.read(at).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return true,
            Err(error) => {
                tracing::error!(%error, "cannot act on the refusal now; retrying");
                return false;
            }
        };
        let (seq, records, reason) = (at.piece.seq, at.piece.records, status.message());
        let pieces = match reaction {
            Reaction::Split => split::after_refusal(batch, self.limits, self.seqs),
            Reaction::Drop => {
                self.metrics.batches_refused.inc();
                tracing::error!(seq, records, code = ?status.code(), reason,
                    "collector refused a batch for good; dropped it");
                Split::default()
            }
            Reaction::Renumber => {
                let renumbered = PushRequest {
                    seq: self.seqs.next(),
                    ..batch
                };
                self.metrics.batches_renumbered.inc();
                tracing::warn!(
                    seq,
                    new_seq = renumbered.seq,
                    reason,
                    "the collector holds another batch under this sequence number \
                     (another process with this agent's identity?); resending under a new one"
                );
                Split {
                    pieces: vec![renumbered],
                    too_large: 0,
                }
            }
            Reaction::Retry => return false,
        };
        self.replace(at, pieces, reason).await
    }

    /// Puts `split`'s pieces in the place of the batch at `at`; false when
    /// the spool could not be rewritten.
    async fn replace(&self, at: At, split: Split, reason: &str) -> bool {
        let pieces = split.pieces.len();
        if split.too_large > 0 {
            self.metrics.batches_refused.inc_by(split.too_large as u64);
            tracing::error!(
                seq = at.piece.seq,
                records = split.too_large,
                reason,
                "records too large for any batch the collector accepts; dropped"
            );
        }
        match self.spool.replace(at, split.pieces).await {
            Ok(true) if pieces > 1 => {
                self.metrics.batches_split.inc();
                tracing::warn!(
                    seq = at.piece.seq,
                    records = at.piece.records,
                    bytes = at.piece.bytes,
                    pieces,
                    reason,
                    "batch too large for the collector; split"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, seq = at.piece.seq, "cannot rewrite a spooled batch; it stays as it was");
                return false;
            }
        }
        true
    }

    async fn on_ack(&mut self, ack: PushResponse) {
        if let Some(span) = self.spans.remove(&ack.seq) {
            let outcome = match (ack.duplicate, ack.rejected.is_empty()) {
                (true, _) => "duplicate",
                (false, true) => "acked",
                (false, false) => "acked_with_rejections",
            };
            span.record("outcome", outcome);
            span.record("accepted", ack.accepted);
        }
        if self.spool.ack(ack.seq).await {
            self.acked += 1;
            self.metrics.batches_acked.inc();
        }
        if let Some(first) = ack.rejected.first() {
            self.metrics
                .records_rejected
                .inc_by(ack.rejected.len() as u64);
            tracing::warn!(seq = ack.seq, rejected = ack.rejected.len(), accepted = ack.accepted,
                field = %first.field, reason = %first.reason, "collector rejected records");
        }
        tracing::debug!(
            seq = ack.seq,
            accepted = ack.accepted,
            duplicate = ack.duplicate,
            "batch acknowledged"
        );
    }
}

fn client(channel: Channel, compression: Compression) -> IngestServiceClient<Channel> {
    let client = IngestServiceClient::new(channel);
    match compression {
        Compression::None => client,
        Compression::Zstd => client
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_common::tls::TlsFiles;

    fn cfg(url: &str, insecure: bool, tls: bool) -> CollectorConnConfig {
        CollectorConnConfig {
            url: url.into(),
            insecure,
            tls: tls.then(|| TlsFiles::in_dir(std::path::Path::new("/nonexistent"), "agent-x")),
            ..Default::default()
        }
    }

    #[test]
    fn url_and_tls_must_agree() {
        let metrics = || ReloadMetrics::new(&prometheus::Registry::new());
        let err = |c| connector(&c, metrics()).err().expect("refused").to_string();
        assert!(err(cfg("http://c:7070", false, false)).contains("--insecure"));
        assert!(err(cfg("https://c:7070", true, false)).contains("http://"));
        assert!(err(cfg("https://c:7070", false, false)).contains("no TLS files"));
        assert!(err(cfg("https://c:7070", false, true)).contains("/nonexistent/ca.pem"));
        assert!(connector(&cfg("http://c:7070", true, false), metrics()).is_ok());
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(2));
            assert!(
                j >= Duration::from_secs(1) && j <= Duration::from_secs(2),
                "{j:?}"
            );
        }
    }
}
