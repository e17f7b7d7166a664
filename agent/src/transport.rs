//! The long-lived gRPC stream to the collector: sends spooled batches (at most
//! `max_in_flight` unacknowledged), forgets each batch when its ack arrives,
//! and after any failure reconnects with backoff and resends every batch still
//! in the spool, in order.

use std::time::Duration;

use livehead_common::Shutdown;
use livehead_common::tls::{self, TlsError};
use livehead_proto::v1::{PushRequest, PushResponse, ingest_service_client::IngestServiceClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::CollectorConnConfig;
use crate::metrics::AgentMetrics;
use crate::spool::SharedSpool;

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
}

/// Builds the collector endpoint, checking the URL/TLS combination up front so
/// a misconfiguration fails at start with a clear message.
pub fn endpoint(cfg: &CollectorConnConfig) -> Result<Endpoint, TransportError> {
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
            Ok(endpoint.tls_config(tls::client_config(files, &name)?)?)
        }
        (Some("http"), true) => Ok(endpoint),
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

/// Connection loop; returns once drained or hard-stopped.
pub async fn run(
    endpoint: Endpoint,
    cfg: CollectorConnConfig,
    spool: SharedSpool,
    metrics: AgentMetrics,
    stops: Stops,
) {
    let mut delay = cfg.reconnect_min;
    loop {
        let mut session = Session {
            cfg: &cfg,
            spool: &spool,
            metrics: &metrics,
            acked: 0,
        };
        let result = session.run(&endpoint, &stops).await;
        if session.acked > 0 {
            delay = cfg.reconnect_min;
        }
        match result {
            Ok(()) => return,
            Err(error) => {
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
    metrics: &'a AgentMetrics,
    acked: u64,
}

impl Session<'_> {
    async fn run(&mut self, endpoint: &Endpoint, stops: &Stops) -> Result<(), TransportError> {
        let channel = tokio::select! {
            c = endpoint.connect() => c?,
            () = stops.hard.cancelled() => return Ok(()),
        };
        let window = self.cfg.max_in_flight.max(1);
        // One slot more than the window: sending never waits on the channel.
        let (tx, rx) = mpsc::channel(window + 1);
        let mut acks = client(channel)
            .push(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!(url = %self.cfg.url, "connected to collector");
        let mut last_sent = None;
        loop {
            last_sent = self.fill_window(&tx, last_sent, window)?;
            if stops.drain.is_cancelled() && self.spool.lock().is_empty() {
                return Ok(());
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => self.on_ack(ack),
                    Ok(None) => return Err(TransportError::Closed),
                    Err(status) => return Err(self.on_refusal(status)),
                },
                () = self.spool.pushed() => {}
                () = stops.drain.cancelled(), if !stops.drain.is_cancelled() => {}
                () = stops.hard.cancelled() => return Ok(()),
            }
        }
    }

    /// Sends spooled batches after `last_sent` while fewer than `window` are
    /// unacknowledged; returns the new last sent sequence number.
    fn fill_window(
        &self,
        tx: &mpsc::Sender<PushRequest>,
        mut last_sent: Option<u64>,
        window: usize,
    ) -> Result<Option<u64>, TransportError> {
        loop {
            let next = {
                let spool = self.spool.lock();
                if spool.pending_up_to(last_sent) >= window {
                    return Ok(last_sent);
                }
                spool.next_after(last_sent)
            };
            let Some(batch) = next else {
                return Ok(last_sent);
            };
            last_sent = Some(batch.seq);
            tx.try_send(batch).map_err(|_| TransportError::Closed)?;
            self.metrics.batches_sent.inc();
        }
    }

    /// The collector handles batches in order, so a stream failing on a batch
    /// fails on the oldest unacknowledged one. When the refusal is about the
    /// batch itself, resending it would fail forever and hold back every batch
    /// behind it: drop it, loudly. Other failures (storage down, certificates)
    /// are retried.
    fn on_refusal(&self, status: tonic::Status) -> TransportError {
        if refuses_the_batch(&status) {
            if let Some((seq, records)) = self.spool.lock().drop_oldest() {
                self.metrics.batches_refused.inc();
                tracing::error!(seq, records, reason = %status.message(),
                    "collector refused a batch for good; dropped it");
            }
        }
        TransportError::Rpc(status)
    }

    fn on_ack(&mut self, ack: PushResponse) {
        let (len, bytes, known) = {
            let mut spool = self.spool.lock();
            let known = spool.ack(ack.seq);
            (spool.len(), spool.bytes(), known)
        };
        if known {
            self.acked += 1;
            self.metrics.batches_acked.inc();
        }
        self.metrics.spool_batches.set(len as i64);
        self.metrics.spool_bytes.set(bytes as i64);
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

/// Refusals caused by the batch's content, which no resend can fix.
fn refuses_the_batch(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
    )
}

fn client(channel: Channel) -> IngestServiceClient<Channel> {
    IngestServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd)
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
        let err = |c| endpoint(&c).expect_err("refused").to_string();
        assert!(err(cfg("http://c:7070", false, false)).contains("--insecure"));
        assert!(err(cfg("https://c:7070", true, false)).contains("http://"));
        assert!(err(cfg("https://c:7070", false, false)).contains("no TLS files"));
        assert!(err(cfg("https://c:7070", false, true)).contains("/nonexistent/ca.pem"));
        assert!(endpoint(&cfg("http://c:7070", true, false)).is_ok());
    }

    #[test]
    fn only_content_refusals_drop_a_batch() {
        use tonic::Status;
        assert!(refuses_the_batch(&Status::invalid_argument(
            "batch too large"
        )));
        assert!(refuses_the_batch(&Status::out_of_range(
            "message too large"
        )));
        assert!(!refuses_the_batch(&Status::unavailable("storage down")));
        assert!(!refuses_the_batch(&Status::permission_denied(
            "wrong agent"
        )));
        assert!(!refuses_the_batch(&Status::unauthenticated(
            "no certificate"
        )));
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
