//! `livehead.v1.WatchService` on the gRPC port: the batches the collector
//! accepts, streamed to the alerter as they are written.
//!
//! A stream subscribes to the group commit ([`GroupCommit::subscribe`], which
//! both gRPC and `/push` batches pass) before it reads the store, so no batch
//! falls between the snapshot and the live part. It then sends the snapshot
//! (unless `skip_snapshot`): the newest probe of every site and the newest
//! node, filesystem, service and watchdog rows ([`SNAPSHOT_KINDS`]) newer than
//! `watch.snapshot_max_age`, and the heartbeat checks with their newest pings
//! and statuses whatever their age ([`SNAPSHOT_HEARTBEAT_KINDS`]), in [`SnapshotChunk`]s of at most
//! `watch.snapshot_chunk_records` records, one agent per chunk; then one
//! [`Synced`] (also sent with `skip_snapshot`, so a subscriber knows it is
//! subscribed); then every accepted batch. Batches written while the snapshot
//! was read and sent come after `Synced`, so a record may come twice; the
//! alerter ignores what is not newer than what it has.
//!
//! Who may subscribe: the identities of `watch.allow` (client certificate
//! names, or `"*"`); anyone else gets PERMISSION_DENIED naming the identity.
//! With `insecure` there are no certificates, hence no identities: only
//! `"*"` opens the stream then. At most `watch.max_subscribers` streams
//! (RESOURCE_EXHAUSTED beyond). Each stream's messages wait in a queue of
//! [`STREAM_QUEUE`] while the subscriber reads; a subscriber more than
//! `watch.buffer_batches` batches behind gets ABORTED and starts again from a
//! snapshot. The collector's shutdown ends the streams (status OK).

pub mod records;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use livehead_common::Shutdown;
use livehead_common::tls::live::{LiveTls, Rotation};
use livehead_proto::v1::watch_response::Event;
use livehead_proto::v1::watch_service_server::{WatchService, WatchServiceServer};
use livehead_proto::v1::{AcceptedBatch, SnapshotChunk, Synced, WatchRequest, WatchResponse};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::WatchConfig;
use crate::group_commit::{Accepted, GroupCommit};
use crate::metrics::CollectorMetrics;
use crate::store::samples::{Latest, SampleKind, Scope, StatsQuery};
use crate::store::{Rows, Store, StoreError};

/// The sample kinds of the snapshot, newer than `watch.snapshot_max_age`:
/// what the alerter's node rules and watchdog alerts read.
pub const SNAPSHOT_KINDS: [SampleKind; 4] = [
    SampleKind::Node,
    SampleKind::Filesystem,
    SampleKind::Service,
    SampleKind::Watchdog,
];

/// The heartbeat kinds of the snapshot, whatever their age (a monthly job's
/// last ping is weeks old and still says when the next one is due): the
/// newest version of every check, the newest ping of every (check, kind), the
/// newest status of every check.
pub const SNAPSHOT_HEARTBEAT_KINDS: [SampleKind; 3] = [
    SampleKind::HeartbeatCheck,
    SampleKind::HeartbeatPing,
    SampleKind::HeartbeatState,
];

/// Messages of one stream waiting for the subscriber to read them. When it
/// is full the stream stops taking batches from the group commit, whose
/// buffer (`watch.buffer_batches`) then decides when the subscriber is
/// too far behind.
pub const STREAM_QUEUE: usize = 16;

/// Whose streams, how many, how big.
#[derive(Clone)]
pub struct WatchServer<S> {
    store: Arc<S>,
    writer: GroupCommit,
    config: WatchConfig,
    /// Whether connections carry client certificates (else `insecure`).
    mtls: bool,
    metrics: CollectorMetrics,
    shutdown: Shutdown,
    slots: Arc<Semaphore>,
    /// The TLS material whose renewal closes the streams opened before it.
    tls: Option<Arc<LiveTls>>,
}

impl<S: Store> WatchServer<S> {
    pub fn new(
        store: Arc<S>,
        writer: GroupCommit,
        config: WatchConfig,
        mtls: bool,
        metrics: CollectorMetrics,
        shutdown: Shutdown,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_subscribers));
        Self {
            store,
            writer,
            config,
            mtls,
            metrics,
            shutdown,
            slots,
            tls: None,
        }
    }

    /// Streams end within `tls.rotation_grace` once `tls` is renewed, so
    /// that subscribers reconnect with the new certificates.
    pub fn rotating_with(mut self, tls: Option<Arc<LiveTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The tonic service.
    pub fn service(self) -> WatchServiceServer<Self> {
        WatchServiceServer::new(self)
    }
}

/// Whether `identity` (`None` without TLS) may subscribe.
pub fn authorize(allow: &[String], identity: Option<&str>) -> Result<(), Status> {
    let any = allow.iter().any(|a| a == "*");
    match identity {
        Some(name) if any || allow.iter().any(|a| a == name) => Ok(()),
        Some(name) => Err(Status::permission_denied(format!(
            "certificate {name:?} may not watch: it is not in the collector's watch.allow"
        ))),
        None if any => Ok(()),
        None => Err(Status::permission_denied(
            "without TLS (insecure) subscribers have no identity: \
             watch.allow must contain \"*\" to let anyone watch",
        )),
    }
}

#[tonic::async_trait]
impl<S: Store> WatchService for WatchServer<S> {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let identity = if self.mtls {
            Some(crate::ingest::peer_identity(&request)?)
        } else {
            None
        };
        authorize(&self.config.allow, identity.as_deref()).inspect_err(|status| {
            tracing::warn!(
                identity = identity.as_deref(),
                reason = status.message(),
                "watch refused"
            );
        })?;
        let permit = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the collector serves at most {} watch streams (watch.max_subscribers)",
                self.config.max_subscribers
            ))
        })?;
        // Before the snapshot is read: what is written meanwhile is buffered.
        let live = self.writer.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = Subscriber {
            tx,
            metrics: self.metrics.clone(),
            identity: identity.unwrap_or_else(|| "*".into()),
            _slot: Slot::new(permit, &self.metrics),
        };
        let snapshot = (!request.get_ref().skip_snapshot).then(|| Snapshot {
            store: Arc::clone(&self.store),
            max_age_ms: u64::try_from(self.config.snapshot_max_age.as_millis()).unwrap_or(u64::MAX),
            chunk_records: self.config.snapshot_chunk_records.max(1),
        });
        let rotation = self
            .tls
            .as_ref()
            .map_or_else(Rotation::never, |t| t.rotation());
        tokio::spawn(stream.run(snapshot, live, self.shutdown.clone(), rotation));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A subscriber's place among `watch.max_subscribers`, counted in the gauge.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: &CollectorMetrics) -> Self {
        metrics.watch_subscribers.inc();
        Self {
            _permit: permit,
            gauge: metrics.watch_subscribers.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Where a stream's snapshot comes from.
pub struct Snapshot<S> {
    pub store: Arc<S>,
    pub max_age_ms: u64,
    pub chunk_records: usize,
}

/// The rows of the snapshot: the newest probe per site and the newest
/// [`SNAPSHOT_KINDS`] rows per thing, with `ts >= since_ms`, and the newest
/// [`SNAPSHOT_HEARTBEAT_KINDS`] rows per thing.
pub async fn read_snapshot<S: Store>(store: &S, since_ms: u64) -> Result<Rows, StoreError> {
    let mut rows = Rows {
        probes: store.latest_probes(since_ms).await?,
        ..Rows::default()
    };
    let kinds = SNAPSHOT_KINDS
        .map(|kind| (kind, since_ms))
        .into_iter()
        .chain(SNAPSHOT_HEARTBEAT_KINDS.map(|kind| (kind, 0)));
    for (kind, since_ms) in kinds {
        let query = StatsQuery {
            kind,
            scope: Scope::Latest(Latest {
                since_ms,
                only: None,
            }),
        };
        rows.append(store.stats(&query).await?);
    }
    Ok(rows)
}

/// The snapshot's messages: per agent, chunks of at most `chunk_records`.
pub fn snapshot_chunks(rows: &Rows, chunk_records: usize) -> Vec<SnapshotChunk> {
    records::records_by_agent(rows)
        .into_iter()
        .flat_map(|(agent_id, records)| {
            records
                .chunks(chunk_records.max(1))
                .map(|chunk| SnapshotChunk {
                    agent_id: agent_id.clone(),
                    records: chunk.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An accepted batch as the stream sends it.
pub fn batch_event(batch: &Accepted) -> WatchResponse {
    WatchResponse {
        event: Some(Event::Batch(AcceptedBatch {
            agent_id: batch.agent.clone(),
            seq: batch.seq,
            records: records::records(&batch.rows),
            accepted_ms: batch.accepted_ms,
        })),
    }
}

/// The stream's end when the subscriber fell `missed` batches behind.
pub fn lagged(missed: u64) -> Status {
    Status::aborted(format!(
        "this watch stream fell behind by {missed} batches; reconnect to resynchronise"
    ))
}

/// One stream's sending side.
struct Subscriber {
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    metrics: CollectorMetrics,
    identity: String,
    _slot: Slot,
}

/// Why a stream stopped before its end.
enum Stop {
    /// The subscriber went away (or the collector stops): nothing to send.
    Gone,
    /// End the stream with this status.
    Status(Status),
}

impl Subscriber {
    async fn run<S: Store>(
        self,
        snapshot: Option<Snapshot<S>>,
        live: broadcast::Receiver<Arc<Accepted>>,
        shutdown: Shutdown,
        rotation: Rotation,
    ) {
        tracing::info!(identity = %self.identity, snapshot = snapshot.is_some(), "watch stream opened");
        let result = tokio::select! {
            result = self.stream(snapshot, live) => result,
            () = shutdown.cancelled() => Err(Stop::Gone),
            // A subscriber resynchronises from the snapshot after any reconnect.
            () = rotation.due() => Err(Stop::Status(crate::ingest::rotated_status())),
            // Noticed even while no batch comes, so the slot is given back.
            () = self.tx.closed() => Err(Stop::Gone),
        };
        if let Err(Stop::Status(status)) = result {
            tracing::warn!(identity = %self.identity, reason = status.message(), "watch stream ended");
            let _ = self.tx.send(Err(status)).await;
        } else {
            tracing::info!(identity = %self.identity, "watch stream closed");
        }
    }

    async fn stream<S: Store>(
        &self,
        snapshot: Option<Snapshot<S>>,
        mut live: broadcast::Receiver<Arc<Accepted>>,
    ) -> Result<(), Stop> {
        let at_ms = livehead_common::clock::unix_ms();
        if let Some(snapshot) = snapshot {
            let since = at_ms.saturating_sub(snapshot.max_age_ms);
            let rows = read_snapshot(snapshot.store.as_ref(), since)
                .await
                .map_err(|e| {
                    Stop::Status(Status::unavailable(format!(
                        "reading the snapshot failed: {e}; retry later"
                    )))
                })?;
            for chunk in snapshot_chunks(&rows, snapshot.chunk_records) {
                self.send("snapshot", Event::Snapshot(chunk)).await?;
            }
        }
        self.send("synced", Event::Synced(Synced { at_ms })).await?;
        loop {
            let batch = match live.recv().await {
                Ok(batch) => batch,
                Err(RecvError::Lagged(missed)) => {
                    self.metrics.watch_lagged.inc();
                    return Err(Stop::Status(lagged(missed)));
                }
                Err(RecvError::Closed) => {
                    return Err(Stop::Status(Status::unavailable(
                        "the collector's writer stopped",
                    )));
                }
            };
            let Some(event) = batch_event(&batch).event else {
                continue;
            };
            self.send("batch", event).await?;
        }
    }

    async fn send(&self, kind: &'static str, event: Event) -> Result<(), Stop> {
        let message = WatchResponse { event: Some(event) };
        self.tx.send(Ok(message)).await.map_err(|_| Stop::Gone)?;
        self.metrics.watch_events.with_label_values(&[kind]).inc();
        Ok(())
    }
}
