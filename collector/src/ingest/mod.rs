//! The gRPC `IngestService`: one stream per agent. A stream validates each
//! batch as it arrives and hands it to the [`GroupCommit`] writer, reading on
//! while up to `limits.max_stream_batches` of its batches are being written;
//! acks go back in the batches' order, each once its rows are durably written.
//!
//! A refused batch ends the stream with a status that tells the agent what to
//! do with it: `InvalidArgument` (drop it: it will never be accepted),
//! `OutOfRange` / `ResourceExhausted` (too large: split it), `AlreadyExists`
//! (another batch holds its sequence number: renumber it), `Unavailable` (retry
//! later). The refusal always follows the acks of the batches before it, so it
//! concerns the agent's oldest unacknowledged batch, even when the message
//! could not be decoded at all.

pub mod codec;
pub mod server;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use livehead_common::clock::unix_ms;
use livehead_common::host::check_host_name;
use livehead_common::tls::live::{LiveTls, Rotation};
use livehead_proto::v1::{PushRequest, PushResponse, RecordRejection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::config::Limits;
use crate::group_commit::{GroupCommit, QueuedBatch, WriterStopped};
use crate::metrics::CollectorMetrics;
use crate::store::WriteOutcome;
use crate::validate::{check_batch, check_seq};

/// Response headers that tell an agent the collector's limits, so that it
/// splits its batches before sending rather than after a refusal.
pub const MAX_MESSAGE_BYTES_HEADER: &str = "livehead-max-message-bytes";
pub const MAX_BATCH_RECORDS_HEADER: &str = "livehead-max-batch-records";

/// The acks of one stream.
pub type PushStream = ReceiverStream<Result<PushResponse, Status>>;

/// Serves `Push` streams, writing through the group-commit writer.
pub struct Ingest {
    writer: GroupCommit,
    metrics: CollectorMetrics,
    limits: Limits,
    /// With mTLS, the certificate names the agent; without it the batch does.
    mtls: bool,
    /// One permit per open stream (`limits.max_streams`).
    streams: Arc<Semaphore>,
    /// The TLS material whose renewal closes the streams opened before it.
    tls: Option<Arc<LiveTls>>,
}

impl Ingest {
    pub fn new(writer: GroupCommit, metrics: CollectorMetrics, limits: Limits, mtls: bool) -> Self {
        let streams = Arc::new(Semaphore::new(limits.max_streams.max(1)));
        Self {
            writer,
            metrics,
            limits,
            mtls,
            streams,
            tls: None,
        }
    }

    /// Streams close (gracefully, within `tls.rotation_grace`) once `tls`
    /// is renewed, so that agents reconnect with the new certificates.
    pub fn rotating_with(mut self, tls: Option<Arc<LiveTls>>) -> Self {
        self.tls = tls;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Opens one agent's stream: checks its identity and the stream limit,
    /// answers the limits in the response headers, and serves the stream in
    /// its own task.
    pub async fn push(
        &self,
        request: Request<Streaming<PushRequest>>,
    ) -> Result<Response<PushStream>, Status> {
        let identity = if self.mtls {
            Some(peer_identity(&request)?)
        } else {
            None
        };
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            self.metrics.batches.with_label_values(&["refused"]).inc();
            Status::unavailable(format!(
                "the collector serves at most {} agent streams (limits.max_streams); retry later",
                self.limits.max_streams
            ))
        })?;
        let stream = StreamState {
            writer: self.writer.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            identity,
            _permit: permit,
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.limits.max_stream_batches.max(1));
        let rotation = self
            .tls
            .as_ref()
            .map_or_else(Rotation::never, |t| t.rotation());
        tokio::spawn(stream.serve(inbound, tx, rotation));
        let mut response = Response::new(ReceiverStream::new(rx));
        let headers = response.metadata_mut();
        headers.insert(
            MAX_MESSAGE_BYTES_HEADER,
            MetadataValue::from(self.limits.max_message_bytes as u64),
        );
        headers.insert(
            MAX_BATCH_RECORDS_HEADER,
            MetadataValue::from(self.limits.max_batch_records as u64),
        );
        Ok(response)
    }
}

/// The ack of one batch, ready once the batch is written (or refused).
type Reply = Pin<Box<dyn Future<Output = Result<PushResponse, Status>> + Send>>;

/// The agent's identity: its certificate's name, which must follow the same
/// rule as an agent id given by flag (host-name syntax), so that it is a safe
/// `agent` column value and can never pass for a `/push` token's `push:<name>`.
pub(crate) fn peer_identity<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let name = livehead_common::tls::peer_identity(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    check_host_name(&name).map_err(|e| {
        Status::unauthenticated(format!(
            "client certificate name {name:?} is not a valid agent id \
             (host-name syntax: letters, digits, '-', '_', dots): {e}"
        ))
    })?;
    Ok(name)
}

/// What ends a stream opened before the certificates were renewed: the
/// client retries (reconnects) as after any `Unavailable`.
pub(crate) fn rotated_status() -> Status {
    Status::unavailable("the collector's TLS certificates were renewed: reconnect")
}

/// What ends a stream when reading a message failed: a refusal of the message
/// the agent sent (sent back after the acks before it), or `None` when the
/// connection itself failed and nobody is listening any more.
fn refusal_of_unreadable(status: Status) -> Option<Status> {
    match status.code() {
        // Over the size limits (tonic's, or the codec's record count).
        Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument => Some(status),
        // tonic's decompression failures and bad compression flags.
        Code::Internal => Some(Status::invalid_argument(format!(
            "undecodable message: {}",
            status.message()
        ))),
        _ => None,
    }
}

struct StreamState {
    writer: GroupCommit,
    metrics: CollectorMetrics,
    limits: Limits,
    identity: Option<String>,
    /// Held while the stream is open.
    _permit: OwnedSemaphorePermit,
}

impl StreamState {
    /// Reads batches and sends their acks in order until the agent closes its
    /// side (every pending ack is still sent) or an ack is an error, which ends
    /// the stream: the agent reconnects and resends what was not acknowledged.
    /// Once `rotation` is due the stream reads no more batches, acks those it
    /// read, and ends with `Unavailable`: the agent reconnects, with the
    /// renewed certificates.
    async fn serve(
        self,
        mut inbound: Streaming<PushRequest>,
        acks: mpsc::Sender<Result<PushResponse, Status>>,
        rotation: Rotation,
    ) {
        self.metrics.streams.inc();
        let mut pending: FuturesOrdered<Reply> = FuturesOrdered::new();
        let mut reading = true;
        let (mut rotating, mut failed) = (false, false);
        let rotated = rotation.due();
        tokio::pin!(rotated);
        let most = self.limits.max_stream_batches.max(1);
        loop {
            tokio::select! {
                Some(reply) = pending.next(), if !pending.is_empty() => {
                    failed = reply.is_err();
                    if acks.send(reply).await.is_err() || failed {
                        failed = true;
                        break;
                    }
                }
                () = &mut rotated, if reading && !rotating => {
                    rotating = true;
                    reading = false;
                    tracing::info!(agent = self.identity.as_deref().unwrap_or(""),
                        "TLS certificates renewed: closing the agent's stream so it reconnects");
                }
                message = inbound.message(), if reading && pending.len() < most => {
                    match message {
                        Ok(Some(batch)) => pending.push_back(self.accept(batch).await),
                        Ok(None) => reading = false,
                        Err(status) => match refusal_of_unreadable(status) {
                            Some(refusal) => {
                                reading = false;
                                pending.push_back(self.refuse(refusal));
                            }
                            None => {
                                tracing::debug!("agent stream ended");
                                failed = true;
                                break;
                            }
                        },
                    }
                }
                else => break,
            }
        }
        if rotating && !failed {
            let _ = acks.send(Err(rotated_status())).await;
        }
        self.metrics.streams.dec();
    }

    /// Validates one batch and queues it for writing; the returned future is
    /// its ack. A refused batch's ack is the refusal (an `Err` ends the stream).
    /// All of it is the batch's span, a child of the agent's when the batch
    /// carries its trace context.
    async fn accept(&self, batch: PushRequest) -> Reply {
        let span = tracing::info_span!(
            "collector.batch",
            agent = tracing::field::Empty,
            seq = batch.seq,
            records = batch.records.len(),
            outcome = tracing::field::Empty
        );
        livehead_common::traces::set_parent(&span, &batch.trace_context);
        let reply = self.queue(batch, &span).instrument(span.clone()).await;
        Box::pin(async move {
            let result = reply.await;
            span.record("outcome", reply_outcome(&result));
            result
        })
    }

    /// [`Self::accept`] within the batch's `span`.
    async fn queue(&self, batch: PushRequest, span: &tracing::Span) -> Reply {
        let validate = tracing::info_span!("collector.validate", rejected = tracing::field::Empty);
        let agent = match self.agent_of(&batch) {
            Ok(agent) => agent,
            Err(status) => return self.refuse(status),
        };
        if let Err(invalid) = check_seq(batch.seq) {
            return self.refuse(Status::invalid_argument(invalid.reason));
        }
        span.record("agent", &agent);
        let checked = validate.in_scope(|| check_batch(&batch, &agent, unix_ms(), &self.limits));
        validate.record("rejected", checked.rejected.len());
        drop(validate);
        let seq = batch.seq;
        let write = tracing::info_span!(
            "collector.write",
            rows = checked.rows.len(),
            outcome = tracing::field::Empty
        );
        let queued = QueuedBatch {
            agent,
            seq,
            rows: checked.rows,
            span: write.clone(),
        };
        let agent = queued.agent.clone();
        // The writer holds the write span from here: it ends once answered.
        let submitted = self.writer.submit(queued).instrument(write).await;
        let answer = match submitted {
            Ok(answer) => answer,
            Err(stopped) => {
                self.count("failed");
                return Box::pin(std::future::ready(Err(Status::unavailable(
                    stopped.to_string(),
                ))));
            }
        };
        let (metrics, rejected, span) = (self.metrics.clone(), checked.rejected, span.clone());
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
            let ack_span = tracing::info_span!(parent: &span, "collector.ack",
                accepted = tracing::field::Empty, duplicate = tracing::field::Empty);
            let acked = ack_span.in_scope(|| ack(&metrics, &agent, seq, outcome, rejected));
            if let Ok(ack) = &acked {
                ack_span.record("accepted", ack.accepted);
                ack_span.record("duplicate", ack.duplicate);
            }
            acked
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

    /// A refusal as the ack of the batch it concerns, counted and logged.
    fn refuse(&self, status: Status) -> Reply {
        self.count("refused");
        tracing::warn!(agent = self.identity.as_deref().unwrap_or(""), code = ?status.code(),
            reason = %status.message(), "batch refused");
        Box::pin(std::future::ready(Err(status)))
    }

    fn count(&self, outcome: &str) {
        self.metrics.batches.with_label_values(&[outcome]).inc();
    }
}

/// The `outcome` of a batch's span: what its ack says.
fn reply_outcome(result: &Result<PushResponse, Status>) -> &'static str {
    match result {
        Ok(ack) if ack.duplicate => "duplicate",
        Ok(ack) if !ack.rejected.is_empty() => "acked_with_rejections",
        Ok(_) => "acked",
        Err(status) if status.code() == Code::Unavailable => "failed",
        Err(_) => "refused",
    }
}

/// The ack of a written batch, counted. Rejections are counted once per batch:
/// a replayed batch's were counted when it was first written (its ack still
/// lists them, in case the agent never saw the first one). A batch whose
/// sequence number holds other rows is refused with `AlreadyExists`, which
/// tells the agent to send it again under a new number.
fn ack(
    metrics: &CollectorMetrics,
    agent: &str,
    seq: u64,
    outcome: WriteOutcome,
    rejected: Vec<RecordRejection>,
) -> Result<PushResponse, Status> {
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
        WriteOutcome::Conflict => {
            metrics.batches.with_label_values(&["conflict"]).inc();
            tracing::warn!(
                agent,
                seq,
                "batch number already holds other rows (processes sharing one identity?); \
                 the agent will renumber it"
            );
            return Err(Status::already_exists(format!(
                "batch {seq} of agent {agent} was already written with other rows; \
                 send it under a new sequence number"
            )));
        }
    };
    Ok(PushResponse {
        seq,
        accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        rejected,
        duplicate,
    })
}
