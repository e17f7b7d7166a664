//! The gRPC `IngestService`: one stream per agent. A stream validates each
//! batch as it arrives and hands it to the [`GroupCommit`] writer, reading on
//! while up to `limits.max_stream_batches` of its batches are being written;
//! acks go back in the batches' order, each once its rows are durably written.

use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesOrdered, StreamExt};
use livehead_common::clock::unix_ms;
use livehead_proto::v1::{
    PushRequest, PushResponse, RecordRejection, ingest_service_server::IngestService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::group_commit::{GroupCommit, QueuedBatch, WriterStopped};
use crate::metrics::CollectorMetrics;
use crate::store::WriteOutcome;
use crate::validate::check_batch;

/// Serves `Push` streams, writing through the group-commit writer.
pub struct Ingest {
    writer: GroupCommit,
    metrics: CollectorMetrics,
    limits: Limits,
    /// With mTLS, the certificate names the agent; without it the batch does.
    mtls: bool,
}

impl Ingest {
    pub fn new(writer: GroupCommit, metrics: CollectorMetrics, limits: Limits, mtls: bool) -> Self {
        Self {
            writer,
            metrics,
            limits,
            mtls,
        }
    }
}

/// The ack of one batch, ready once the batch is written (or refused).
type Reply = Pin<Box<dyn Future<Output = Result<PushResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for Ingest {
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
        let stream = StreamState {
            writer: self.writer.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            identity,
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.limits.max_stream_batches.max(1));
        tokio::spawn(stream.serve(inbound, tx));
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

struct StreamState {
    writer: GroupCommit,
    metrics: CollectorMetrics,
    limits: Limits,
    identity: Option<String>,
}

impl StreamState {
    /// Reads batches and sends their acks in order until the agent closes its
    /// side (every pending ack is still sent) or an ack is an error, which ends
    /// the stream: the agent reconnects and resends what was not acknowledged.
    async fn serve(
        self,
        mut inbound: Streaming<PushRequest>,
        acks: mpsc::Sender<Result<PushResponse, Status>>,
    ) {
        self.metrics.streams.inc();
        let mut pending: FuturesOrdered<Reply> = FuturesOrdered::new();
        let mut reading = true;
        let most = self.limits.max_stream_batches.max(1);
        loop {
            tokio::select! {
                Some(reply) = pending.next(), if !pending.is_empty() => {
                    let failed = reply.is_err();
                    if acks.send(reply).await.is_err() || failed {
                        break;
                    }
                }
                message = inbound.message(), if reading && pending.len() < most => {
                    match message {
                        Ok(Some(batch)) => pending.push_back(self.accept(batch).await),
                        Ok(None) => reading = false,
                        Err(status) => {
                            tracing::debug!(%status, "agent stream ended");
                            break;
                        }
                    }
                }
                else => break,
            }
        }
        self.metrics.streams.dec();
    }

    /// Validates one batch and queues it for writing; the returned future is
    /// its ack. A refused batch's ack is the refusal (an `Err` ends the stream).
    async fn accept(&self, batch: PushRequest) -> Reply {
        let refused = |stream: &Self, status: Status| -> Reply {
            stream.count("refused");
            Box::pin(std::future::ready(Err(status)))
        };
        let agent = match self.agent_of(&batch) {
            Ok(agent) => agent,
            Err(status) => return refused(self, status),
        };
        if batch.records.len() > self.limits.max_batch_records {
            let status = Status::invalid_argument(format!(
                "batch {} holds {} records, over the limit of {}",
                batch.seq,
                batch.records.len(),
                self.limits.max_batch_records
            ));
            return refused(self, status);
        }
        let checked = check_batch(&batch, &agent, unix_ms(), &self.limits);
        let seq = batch.seq;
        let queued = QueuedBatch {
            agent,
            seq,
            probes: checked.probes,
        };
        let agent = queued.agent.clone();
        let answer = match self.writer.submit(queued).await {
            Ok(answer) => answer,
            Err(stopped) => {
                self.count("failed");
                return Box::pin(std::future::ready(Err(Status::unavailable(
                    stopped.to_string(),
                ))));
            }
        };
        let (metrics, rejected) = (self.metrics.clone(), checked.rejected);
        Box::pin(async move {
            let written = answer
                .await
                .map_err(|_| WriterStopped.to_string())
                .and_then(|w| w.map_err(|e| e.to_string()));
            let outcome = written.map_err(|error| {
                metrics.batches.with_label_values(&["failed"]).inc();
                tracing::error!(agent, seq, %error, "writing batch failed; the agent will resend it");
                Status::unavailable(format!("storage unavailable: {error}"))
            })?;
            Ok(ack(&metrics, &agent, seq, outcome, rejected))
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

    fn count(&self, outcome: &str) {
        self.metrics.batches.with_label_values(&[outcome]).inc();
    }
}

/// The ack of a written batch, counted. Rejections are counted once per batch:
/// a replayed batch's were counted when it was first written (its ack still
/// lists them, in case the agent never saw the first one).
fn ack(
    metrics: &CollectorMetrics,
    agent: &str,
    seq: u64,
    outcome: WriteOutcome,
    rejected: Vec<RecordRejection>,
) -> PushResponse {
    let (accepted, duplicate) = match outcome {
        WriteOutcome::Written { rows } => {
            metrics.batches.with_label_values(&["written"]).inc();
            metrics.rows.inc_by(rows as u64);
            for rejection in &rejected {
                metrics.rejects.with_label_values(&[&rejection.field]).inc();
            }
            if let Some(first) = rejected.first() {
                tracing::warn!(agent, seq, rejected = rejected.len(), field = %first.field,
                    reason = %first.reason, "invalid records rejected");
            }
            (rows, false)
        }
        WriteOutcome::Duplicate => {
            metrics.batches.with_label_values(&["duplicate"]).inc();
            (0, true)
        }
    };
    PushResponse {
        seq,
        accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        rejected,
        duplicate,
    }
}
