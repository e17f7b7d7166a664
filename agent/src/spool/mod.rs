//! Batches waiting for the collector's acknowledgement. Bounded by encoded
//! bytes: when full, the oldest batches are dropped and counted, never silently.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use livehead_proto::v1::PushRequest;
use prost::Message;
use tokio::sync::Notify;

/// What pushing a batch made room by dropping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub records: u64,
}

/// The queue itself; no I/O, so its rules are tested directly.
#[derive(Debug)]
pub struct Spool {
    queue: VecDeque<(usize, PushRequest)>,
    bytes: usize,
    max_bytes: usize,
}

impl Spool {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends a batch, dropping the oldest ones while over the byte bound.
    /// The newest batch is always kept, even if alone it exceeds the bound.
    pub fn push(&mut self, batch: PushRequest) -> Dropped {
        let size = batch.encoded_len();
        self.bytes += size;
        self.queue.push_back((size, batch));
        let mut dropped = Dropped::default();
        while self.bytes > self.max_bytes && self.queue.len() > 1 {
            if let Some((size, old)) = self.queue.pop_front() {
                self.bytes -= size;
                dropped.batches += 1;
                dropped.records += old.records.len() as u64;
            }
        }
        dropped
    }

    /// Forgets the acknowledged batch; false when it was not there (dropped
    /// meanwhile, or acknowledged twice).
    pub fn ack(&mut self, seq: u64) -> bool {
        match self.queue.iter().position(|(_, b)| b.seq == seq) {
            Some(i) => {
                if let Some((size, _)) = self.queue.remove(i) {
                    self.bytes -= size;
                }
                true
            }
            None => false,
        }
    }

    /// Removes the oldest batch (one the collector refused for good); returns
    /// its sequence number and record count.
    pub fn drop_oldest(&mut self) -> Option<(u64, usize)> {
        let (size, batch) = self.queue.pop_front()?;
        self.bytes -= size;
        Some((batch.seq, batch.records.len()))
    }

    /// The first batch with a sequence number above `after` (all of them from
    /// the start when `None`): what to send next on a stream.
    pub fn next_after(&self, after: Option<u64>) -> Option<PushRequest> {
        self.queue
            .iter()
            .map(|(_, b)| b)
            .find(|b| after.is_none_or(|a| b.seq > a))
            .cloned()
    }

    /// Batches up to and including `seq` still waiting: those in flight.
    pub fn pending_up_to(&self, seq: Option<u64>) -> usize {
        seq.map_or(0, |s| self.queue.iter().filter(|(_, b)| b.seq <= s).count())
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records in the batches waiting.
    pub fn records(&self) -> usize {
        self.queue.iter().map(|(_, b)| b.records.len()).sum()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The spool shared by the batcher (which pushes) and the transport (which
/// sends and acks). The lock is never held across an await.
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    pushed: Arc<Notify>,
}

impl SharedSpool {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Spool::new(max_bytes))),
            pushed: Arc::new(Notify::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding this lock leaves the queue consistent (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, batch: PushRequest) -> Dropped {
        let dropped = self.lock().push(batch);
        self.pushed.notify_one();
        dropped
    }

    /// Resolves after the next push.
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_proto::v1::{ProbeResult, Record, record::Kind};

    fn batch(seq: u64, records: usize) -> PushRequest {
        let probe = ProbeResult {
            site: "example.com".into(),
            status: 200,
            ..Default::default()
        };
        PushRequest {
            agent_id: "a".into(),
            seq,
            records: vec![
                Record {
                    kind: Some(Kind::Probe(probe))
                };
                records
            ],
        }
    }

    #[test]
    fn full_spool_drops_oldest_and_counts_them() {
        let one = batch(1, 10).encoded_len();
        let mut spool = Spool::new(one * 2);
        assert_eq!(spool.push(batch(1, 10)), Dropped::default());
        assert_eq!(spool.push(batch(2, 10)), Dropped::default());
        let dropped = spool.push(batch(3, 10));
        assert_eq!(
            dropped,
            Dropped {
                batches: 1,
                records: 10
            }
        );
        assert_eq!(spool.next_after(None).map(|b| b.seq), Some(2));
        assert_eq!(spool.len(), 2);
    }

    #[test]
    fn acks_remove_and_resend_starts_over() {
        let mut spool = Spool::new(1 << 20);
        for seq in 1..=3 {
            spool.push(batch(seq, 1));
        }
        assert_eq!(spool.next_after(Some(1)).map(|b| b.seq), Some(2));
        assert_eq!(spool.pending_up_to(Some(2)), 2);
        assert!(spool.ack(2));
        assert!(!spool.ack(2));
        // After a reconnect everything unacknowledged is sent again, in order.
        let seqs: Vec<u64> =
            std::iter::successors(spool.next_after(None), |b| spool.next_after(Some(b.seq)))
                .map(|b| b.seq)
                .collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(spool.drop_oldest(), Some((1, 1)));
        assert!(spool.ack(3));
        assert_eq!(spool.drop_oldest(), None);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
    }
}
