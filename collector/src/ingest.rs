//! The gRPC `IngestService`: one stream per agent, batches handled in order,
//! each acknowledged only once its rows are durably written.

use std::sync::Arc;
use std::time::Instant;

use livehead_common::clock::unix_ms;

use livehead_proto::v1::{
    PushRequest, PushResponse, RecordRejection, ingest_service_server::IngestService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::metrics::CollectorMetrics;
use crate::store::{BatchWrite, Store, WriteOutcome};
use crate::validate::check_batch;

/// Serves `Push` streams, writing into `S`.
pub struct Ingest<S> {
    store: Arc<S>,
    metrics: CollectorMetrics,
    limits: Limits,
    /// With mTLS, the certificate names the agent; without it the batch does.
    mtls: bool,
}

impl<S: Store> Ingest<S> {
    pub fn new(store: Arc<S>, metrics: CollectorMetrics, limits: Limits, mtls: bool) -> Self {
        Self {
            store,
            metrics,
            limits,
            mtls,
        }
    }
}

#[tonic::async_trait]
impl<S: Store> IngestService for Ingest<S> {
    type PushStream = ReceiverStream<Result<PushResponse, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<PushRequest>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let identity = if self.mtls {
            Some(peer_identity(&request)?)
        } else {
            None
        };
        let mut stream = StreamState {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            identity,
        };
        let mut inbound = request.into_inner();
        // Acks are produced one at a time, in order; a small buffer is enough.
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            stream.metrics.streams.inc();
            loop {
                let reply = match inbound.message().await {
                    Ok(Some(batch)) => stream.handle(batch).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "agent stream ended");
                        break;
                    }
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
            stream.metrics.streams.dec();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn peer_identity<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    livehead_common::tls::peer_identity(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

struct StreamState<S> {
    store: Arc<S>,
    metrics: CollectorMetrics,
    limits: Limits,
    identity: Option<String>,
}

impl<S: Store> StreamState<S> {
    /// Validates and writes one batch. An `Err` ends the stream: the agent
    /// reconnects and resends everything not yet acknowledged.
    async fn handle(&mut self, batch: PushRequest) -> Result<PushResponse, Status> {
        let agent = self
            .agent_of(&batch)
            .inspect_err(|_| self.count("refused"))?;
        if batch.records.len() > self.limits.max_batch_records {
            self.count("refused");
            return Err(Status::invalid_argument(format!(
                "batch {} holds {} records, over the limit of {}",
                batch.seq,
                batch.records.len(),
                self.limits.max_batch_records
            )));
        }
        let checked = check_batch(&batch, &agent, unix_ms(), &self.limits);
        let started = Instant::now();
        let write = BatchWrite {
            agent: &agent,
            seq: batch.seq,
            probes: &checked.probes,
        };
        let outcome = self.store.write_batch(write).await.map_err(|error| {
            self.count("failed");
            tracing::error!(agent, seq = batch.seq, %error, "writing batch failed; the agent will resend it");
            Status::unavailable(format!("storage unavailable: {error}"))
        })?;
        self.metrics
            .insert_seconds
            .observe(started.elapsed().as_secs_f64());
        let (accepted, duplicate) = match outcome {
            WriteOutcome::Written { rows } => {
                self.count("written");
                self.metrics.rows.inc_by(rows as u64);
                self.count_rejections(&agent, batch.seq, &checked.rejected);
                (rows, false)
            }
            WriteOutcome::Duplicate => {
                self.count("duplicate");
                (0, true)
            }
        };
        Ok(PushResponse {
            seq: batch.seq,
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            rejected: checked.rejected,
            duplicate,
        })
    }

    fn agent_of(&self, batch: &PushRequest) -> Result<String, Status> {
        match &self.identity {
            Some(id) if batch.agent_id.is_empty() || batch.agent_id == *id => Ok(id.clone()),
            Some(id) => Err(Status::permission_denied(format!(
                "batch names agent {:?} but the client certificate is {id:?}",
                batch.agent_id
            ))),
            None if crate::validate::check_site(&batch.agent_id).is_ok() => {
                Ok(batch.agent_id.clone())
            }
            None => Err(Status::invalid_argument(format!(
                "agent_id {:?} is not a valid name (letters, digits, '-', '_', '.')",
                batch.agent_id
            ))),
        }
    }

    /// Counted once per batch: a replayed batch's rejections were counted
    /// when it was first written (its ack still lists them, in case the
    /// agent never saw the first one).
    fn count_rejections(&self, agent: &str, seq: u64, rejected: &[RecordRejection]) {
        for rejection in rejected {
            self.metrics
                .rejects
                .with_label_values(&[&rejection.field])
                .inc();
        }
        if let Some(first) = rejected.first() {
            tracing::warn!(agent, seq, rejected = rejected.len(), field = %first.field,
                reason = %first.reason, "invalid records rejected");
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics.batches.with_label_values(&[outcome]).inc();
    }
}
