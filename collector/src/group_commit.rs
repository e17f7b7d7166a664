//! Group commit: batches accepted from every agent stream wait in one queue, and
//! a single writer takes everything queued and writes it with one
//! [`Store::write_batches`] call (one INSERT per table, one SQLite transaction).
//!
//! ClickHouse is fast at large INSERTs and slow at many small ones (each makes a
//! part to merge), and SQLite pays one fsync per transaction. Writing whatever
//! queued up while the previous write ran keeps a lone batch's latency at one
//! write and lets the rows per write grow with the load, with no timer.
//!
//! One writer also means a batch resent on a new stream while its first copy is
//! still queued is seen in the same group, or after the first copy is written:
//! one collector never writes a batch twice.
//!
//! Memory is bounded: at most `max_queued_rows` rows and `max_queued_bytes` of
//! them wait (streams stop reading until there is room, which HTTP/2 flow
//! control passes back to the agents).
//!
//! It is also the one point every accepted row passes, from gRPC streams and
//! `/push` alike: once a batch is durably written, it is published to
//! [`GroupCommit::subscribe`]rs (what the alerter will watch), a batch at most
//! once, in the order written.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tracing::Instrument;

use crate::metrics::CollectorMetrics;
use crate::store::{BatchWrite, Rows, Store, StoreError, WriteOutcome};

/// A validated batch waiting to be written.
#[derive(Debug)]
pub struct QueuedBatch {
    pub agent: String,
    pub seq: u64,
    pub rows: Rows,
    /// The batch's write span (`Span::none()` when untraced): the writer
    /// records the outcome on it, and it ends when the batch is answered.
    pub span: tracing::Span,
}

/// A batch the store has durably written (not a duplicate), as published to
/// subscribers.
#[derive(Debug)]
pub struct Accepted {
    pub agent: String,
    pub seq: u64,
    pub rows: Rows,
    /// When the store had written it (unix ms).
    pub accepted_ms: u64,
}

/// Written batches kept for a subscriber that falls behind, unless
/// [`GroupCommit::start_with`] says otherwise (`watch.buffer_batches`); past
/// it the subscriber is told how many it missed (`RecvError::Lagged`) and
/// must read the store again.
pub const ACCEPTED_BUFFER: usize = 4096;

/// What the writer answers for one batch. The error is shared by every batch
/// of the failed group.
pub type Written = Result<WriteOutcome, Arc<StoreError>>;

struct Entry {
    batch: QueuedBatch,
    reply: oneshot::Sender<Written>,
    /// Room in the queue (rows, bytes), given back once the batch is written.
    _room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// How much may wait in the queue, the group being written included.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    pub rows: usize,
    /// Memory of the rows ([`Rows::heap_bytes`]).
    pub bytes: usize,
}

impl QueueBounds {
    /// `rows` rows, of any size.
    pub fn rows(rows: usize) -> Self {
        Self {
            rows,
            bytes: Semaphore::MAX_PERMITS,
        }
    }
}

/// The queue's handle; cheap to clone, one per stream.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Entry>,
    accepted: broadcast::Sender<Arc<Accepted>>,
    rows: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    bounds: QueueBounds,
}

#[derive(Debug, thiserror::Error)]
#[error("the collector's writer has stopped")]
pub struct WriterStopped;

impl GroupCommit {
    /// Starts the writer task over `store`.
    pub fn start<S: Store>(store: Arc<S>, bounds: QueueBounds, metrics: CollectorMetrics) -> Self {
        Self::start_with(store, bounds, metrics, ACCEPTED_BUFFER)
    }

    /// [`GroupCommit::start`] keeping `accepted_buffer` written batches (at
    /// least 1) for each subscriber that falls behind.
    pub fn start_with<S: Store>(
        store: Arc<S>,
        bounds: QueueBounds,
        metrics: CollectorMetrics,
        accepted_buffer: usize,
    ) -> Self {
        let bounds = QueueBounds {
            rows: bounds.rows.clamp(1, Semaphore::MAX_PERMITS),
            bytes: bounds.bytes.clamp(1, Semaphore::MAX_PERMITS),
        };
        let (queue, entries) = mpsc::unbounded_channel();
        let (accepted, _) = broadcast::channel(accepted_buffer.max(1));
        tokio::spawn(write_groups(store, entries, accepted.clone(), metrics));
        Self {
            queue,
            accepted,
            rows: Arc::new(Semaphore::new(bounds.rows)),
            bytes: Arc::new(Semaphore::new(bounds.bytes)),
            bounds,
        }
    }

    /// Every batch written from now on, as it is written.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Accepted>> {
        self.accepted.subscribe()
    }

    /// Queues `batch` once there is room for its rows (a batch larger than the
    /// whole queue waits until the queue is empty), and returns what answers
    /// when it is written.
    pub async fn submit(
        &self,
        batch: QueuedBatch,
    ) -> Result<oneshot::Receiver<Written>, WriterStopped> {
        let rows = batch.rows.len().clamp(1, self.bounds.rows);
        let bytes = batch.rows.heap_bytes().clamp(1, self.bounds.bytes);
        let room = (
            acquire(&self.rows, rows).await?,
            acquire(&self.bytes, bytes).await?,
        );
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Entry {
                batch,
                reply,
                _room: room,
            })
            .map_err(|_| WriterStopped)?;
        Ok(answer)
    }
}

/// `n` permits of `room` (at most `u32::MAX` at once, which `n` never reaches:
/// a batch is bounded by the message size).
async fn acquire(room: &Arc<Semaphore>, n: usize) -> Result<OwnedSemaphorePermit, WriterStopped> {
    Arc::clone(room)
        .acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
        .await
        .map_err(|_| WriterStopped)
}

/// The writer: waits for a first batch, takes every other one queued behind it,
/// writes them in one call, answers each, and starts over.
async fn write_groups<S: Store>(
    store: Arc<S>,
    mut entries: mpsc::UnboundedReceiver<Entry>,
    accepted: broadcast::Sender<Arc<Accepted>>,
    metrics: CollectorMetrics,
) {
    let mut group = Vec::new();
    while entries.recv_many(&mut group, usize::MAX).await > 0 {
        let result = write_group(&*store, &group, &metrics).await;
        match result {
            Err(error) if group.len() > 1 && error.may_concern_one_batch() => {
                tracing::warn!(%error, batches = group.len(),
                    "group write failed; writing its batches one by one");
                for entry in group.drain(..) {
                    let alone = write_group(&*store, std::slice::from_ref(&entry), &metrics).await;
                    answer(std::iter::once(entry), alone, &accepted);
                }
            }
            result => answer(group.drain(..), result, &accepted),
        }
    }
}

/// One `write_batches` call for `group`, timed and counted.
async fn write_group<S: Store>(
    store: &S,
    group: &[Entry],
    metrics: &CollectorMetrics,
) -> Result<Vec<WriteOutcome>, StoreError> {
    let started = std::time::Instant::now();
    let writes: Vec<BatchWrite<'_>> = group
        .iter()
        .map(|e| BatchWrite {
            agent: &e.batch.agent,
            seq: e.batch.seq,
            rows: e.batch.rows.as_ref(),
        })
        .collect();
    let rows: usize = writes.iter().map(|w| w.rows.len()).sum();
    let span = group_span(group, rows);
    let result = store.write_batches(&writes).instrument(span.clone()).await;
    span.record("ok", result.is_ok());
    metrics
        .insert_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.group_batches.observe(group.len() as f64);
    tracing::debug!(
        batches = group.len(),
        rows,
        ok = result.is_ok(),
        "group written"
    );
    result
}

/// The span of one group write: in the trace of its first batch (so a
/// sampled batch shows the write it was part of), linked to the others.
fn group_span(group: &[Entry], rows: usize) -> tracing::Span {
    let Some(first) = group.first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(parent: &first.batch.span, "collector.group_write",
        batches = group.len(), rows, ok = tracing::field::Empty);
    for entry in &group[1..] {
        span.follows_from(&entry.batch.span);
    }
    span
}

fn outcome_name(written: &Written) -> &'static str {
    match written {
        Ok(WriteOutcome::Written { .. }) => "written",
        Ok(WriteOutcome::Duplicate) => "duplicate",
        Ok(WriteOutcome::Conflict) => "conflict",
        Err(_) => "failed",
    }
}

/// Answers each batch of `group`, and publishes those written.
fn answer(
    group: impl Iterator<Item = Entry>,
    result: Result<Vec<WriteOutcome>, StoreError>,
    accepted: &broadcast::Sender<Arc<Accepted>>,
) {
    match result {
        Ok(outcomes) => {
            for (entry, outcome) in group.zip(outcomes) {
                entry
                    .batch
                    .span
                    .record("outcome", outcome_name(&Ok(outcome)));
                // A stream that ended meanwhile no longer waits for its answer.
                let _ = entry.reply.send(Ok(outcome));
                if matches!(outcome, WriteOutcome::Written { .. }) && accepted.receiver_count() > 0
                {
                    let Entry { batch, .. } = entry;
                    // No subscriber is not an error: nobody watches yet.
                    let _ = accepted.send(Arc::new(Accepted {
                        agent: batch.agent,
                        seq: batch.seq,
                        rows: batch.rows,
                        accepted_ms: livehead_common::clock::unix_ms(),
                    }));
                }
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for entry in group {
                entry.batch.span.record("outcome", "failed");
                let _ = entry.reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::store::{DumpFilter, LastState, ProbeRow, StatsQuery};

    /// Which writes fail, and how.
    type Failure = fn(&[BatchWrite<'_>]) -> Option<StoreError>;

    /// Records the size of each write; each write waits for a permit of `gate`.
    struct GatedStore {
        gate: Semaphore,
        groups: Mutex<Vec<usize>>,
        failure: Failure,
    }

    /// The store is unreachable: every write fails.
    fn unreachable(_: &[BatchWrite<'_>]) -> Option<StoreError> {
        Some(StoreError::Unsupported("the disk is on fire".into()))
    }

    /// The store refuses the data of seq 13, and any write holding it.
    fn poisoned_by_13(batches: &[BatchWrite<'_>]) -> Option<StoreError> {
        batches.iter().any(|b| b.seq == 13).then(|| {
            StoreError::ClickHouse(::clickhouse::error::Error::BadResponse(
                "Code: 117, bad data".into(),
            ))
        })
    }

    impl GatedStore {
        fn new(fail: bool) -> Arc<Self> {
            Self::failing(if fail { unreachable } else { |_| None })
        }

        fn failing(failure: Failure) -> Arc<Self> {
            Arc::new(Self {
                gate: Semaphore::new(0),
                groups: Mutex::new(Vec::new()),
                failure,
            })
        }

        fn groups(&self) -> Vec<usize> {
            self.groups.lock().expect("not poisoned").clone()
        }
    }

    impl Store for GatedStore {
        async fn write_batches(
            &self,
            batches: &[BatchWrite<'_>],
        ) -> Result<Vec<WriteOutcome>, StoreError> {
            self.groups
                .lock()
                .expect("not poisoned")
                .push(batches.len());
            self.gate.acquire().await.expect("open").forget();
            if let Some(error) = (self.failure)(batches) {
                return Err(error);
            }
            Ok(batches
                .iter()
                .map(|b| WriteOutcome::Written { rows: b.rows.len() })
                .collect())
        }

        async fn maintain(&self) -> Result<(), StoreError> {
            Ok(())
        }

        async fn last(&self, _: &str, _: &str) -> Result<Option<LastState>, StoreError> {
            Ok(None)
        }

        async fn dump_last(&self, _: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
            Ok(Vec::new())
        }

        async fn stats(&self, _: &StatsQuery<'_>) -> Result<Rows, StoreError> {
            Ok(Rows::default())
        }
    }

    fn queued(seq: u64, rows: usize) -> QueuedBatch {
        QueuedBatch {
            agent: "edge-1".into(),
            seq,
            rows: vec![ProbeRow::default(); rows].into(),
            span: tracing::Span::none(),
        }
    }

    /// A writer over `store` with room for 1,000 rows.
    fn writer_over(store: &Arc<GatedStore>) -> GroupCommit {
        GroupCommit::start(
            store.clone(),
            QueueBounds::rows(1000),
            CollectorMetrics::new(),
        )
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn written_batches_are_published_to_subscribers_and_failed_ones_not() {
        let store = GatedStore::new(false);
        let writer = writer_over(&store);
        let mut watcher = writer.subscribe();
        let answers = [
            writer.submit(queued(1, 2)).await.expect("queued"),
            writer.submit(queued(2, 1)).await.expect("queued"),
        ];
        store.gate.add_permits(2);
        for answer in answers {
            answer.await.expect("answered").expect("written");
        }
        for (seq, rows) in [(1, 2), (2, 1)] {
            let accepted = watcher.recv().await.expect("published");
            assert_eq!(
                (accepted.agent.as_str(), accepted.seq, accepted.rows.len()),
                ("edge-1", seq, rows)
            );
        }

        let failing = GatedStore::new(true);
        let writer = writer_over(&failing);
        let mut watcher = writer.subscribe();
        let answer = writer.submit(queued(3, 1)).await.expect("queued");
        failing.gate.add_permits(1);
        assert!(answer.await.expect("answered").is_err());
        assert!(
            matches!(
                watcher.try_recv(),
                Err(broadcast::error::TryRecvError::Empty)
            ),
            "nothing stored, nothing published"
        );
    }

    #[tokio::test]
    async fn batches_queued_during_a_write_are_written_together_next() {
        let store = GatedStore::new(false);
        let writer = writer_over(&store);
        let first = writer.submit(queued(1, 2)).await.expect("queued");
        settle().await;
        let mut rest = Vec::new();
        for seq in 2..=4 {
            rest.push(writer.submit(queued(seq, 3)).await.expect("queued"));
        }
        assert_eq!(
            store.groups(),
            [1],
            "the first batch is written alone, at once"
        );
        store.gate.add_permits(2);
        assert_eq!(
            first.await.expect("answered").expect("written"),
            WriteOutcome::Written { rows: 2 }
        );
        for answer in rest {
            assert_eq!(
                answer.await.expect("answered").expect("written"),
                WriteOutcome::Written { rows: 3 }
            );
        }
        assert_eq!(store.groups(), [1, 3]);
    }

    #[tokio::test]
    async fn submitting_waits_while_the_queue_is_full() {
        let store = GatedStore::new(false);
        let writer = GroupCommit::start(
            store.clone(),
            QueueBounds::rows(10),
            CollectorMetrics::new(),
        );
        let first = writer.submit(queued(1, 6)).await.expect("queued");
        let blocked = tokio::time::timeout(Duration::from_millis(100), writer.submit(queued(2, 5)));
        assert!(
            blocked.await.is_err(),
            "6 + 5 rows are over the bound of 10"
        );
        store.gate.add_permits(2);
        first.await.expect("answered").expect("written");
        let second = writer.submit(queued(2, 5)).await.expect("room again");
        assert!(second.await.expect("answered").is_ok());
        // A batch larger than the whole queue still goes through, alone.
        store.gate.add_permits(1);
        let huge = writer.submit(queued(3, 50)).await.expect("queued");
        assert!(huge.await.expect("answered").is_ok());
    }

    #[tokio::test]
    async fn submitting_waits_while_the_queued_rows_hold_too_much_memory() {
        let store = GatedStore::new(false);
        let row = ProbeRow::default().heap_bytes();
        let bounds = QueueBounds {
            rows: 1000,
            bytes: row * 3,
        };
        let writer = GroupCommit::start(store.clone(), bounds, CollectorMetrics::new());
        let first = writer.submit(queued(1, 2)).await.expect("queued");
        let blocked = tokio::time::timeout(Duration::from_millis(100), writer.submit(queued(2, 2)));
        assert!(blocked.await.is_err(), "4 rows' memory is over 3 rows'");
        store.gate.add_permits(2);
        first.await.expect("answered").expect("written");
        let second = writer.submit(queued(2, 2)).await.expect("room again");
        assert!(second.await.expect("answered").is_ok());
    }

    /// An unreachable store fails the whole group: no write per batch (the
    /// gate has room for them, so they would show in `groups`).
    #[tokio::test]
    async fn a_failed_write_answers_every_batch_of_its_group() {
        let store = GatedStore::new(true);
        let writer = writer_over(&store);
        let first = writer.submit(queued(1, 1)).await.expect("queued");
        settle().await;
        let second = writer.submit(queued(2, 1)).await.expect("queued");
        let third = writer.submit(queued(3, 1)).await.expect("queued");
        store.gate.add_permits(10);
        for answer in [first, second, third] {
            let error = answer.await.expect("answered").expect_err("failed");
            assert!(error.to_string().contains("on fire"), "{error}");
        }
        assert_eq!(store.groups(), [1, 2]);
    }

    #[tokio::test]
    async fn one_bad_batch_fails_alone_not_its_whole_group() {
        let store = GatedStore::failing(poisoned_by_13);
        let writer = writer_over(&store);
        let first = writer.submit(queued(1, 1)).await.expect("queued");
        settle().await;
        let mut group = Vec::new();
        for seq in [12, 13, 14] {
            group.push(writer.submit(queued(seq, 2)).await.expect("queued"));
        }
        // One write for the first batch, one for the group of three, then one
        // per batch of the failed group.
        store.gate.add_permits(5);
        assert!(first.await.expect("answered").is_ok());
        let answers: Vec<bool> = futures::future::join_all(group)
            .await
            .into_iter()
            .map(|a| a.expect("answered").is_ok())
            .collect();
        assert_eq!(answers, [true, false, true]);
        assert_eq!(store.groups(), [1, 3, 1, 1, 1]);
    }
}
