//! Groups probe results into batches by count and by age, and hands each
//! batch to the spool with the next sequence number.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livehead_proto::v1::{ProbeResult, PushRequest, Record, record::Kind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::AgentMetrics;
use crate::spool::SharedSpool;

/// Builds batches; no I/O.
#[derive(Debug)]
pub struct BatchBuilder {
    agent_id: String,
    next_seq: u64,
    max_records: usize,
    records: Vec<Record>,
}

impl BatchBuilder {
    /// Sequence numbers start at the current time in microseconds, so they keep
    /// increasing across restarts without state on disk (the collector drops an
    /// (agent, seq) it has already written, so a restart must never reuse one).
    pub fn new(agent_id: String, max_records: usize) -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self::with_first_seq(agent_id, max_records, start)
    }

    pub fn with_first_seq(agent_id: String, max_records: usize, first_seq: u64) -> Self {
        Self {
            agent_id,
            next_seq: first_seq,
            max_records: max_records.max(1),
            records: Vec::new(),
        }
    }

    /// Adds a record; returns a full batch when this one filled it.
    pub fn push(&mut self, probe: ProbeResult) -> Option<PushRequest> {
        self.records.push(Record {
            kind: Some(Kind::Probe(probe)),
        });
        (self.records.len() >= self.max_records).then(|| self.take())
    }

    /// The partial batch, if any record is waiting.
    pub fn flush(&mut self) -> Option<PushRequest> {
        (!self.records.is_empty()).then(|| self.take())
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn take(&mut self) -> PushRequest {
        let seq = self.next_seq;
        self.next_seq += 1;
        PushRequest {
            agent_id: self.agent_id.clone(),
            seq,
            records: std::mem::take(&mut self.records),
        }
    }
}

/// Reads results until the channel closes, spooling a batch when it is full
/// or when its first record is `max_delay` old; flushes what is left at the
/// end. Returns how many records it spooled.
pub async fn run(
    mut builder: BatchBuilder,
    max_delay: Duration,
    mut results: mpsc::Receiver<ProbeResult>,
    spool: SharedSpool,
    metrics: AgentMetrics,
) -> u64 {
    let mut deadline: Option<Instant> = None;
    let mut spooled = 0;
    loop {
        let received = match deadline {
            Some(at) => tokio::select! {
                r = results.recv() => r,
                () = tokio::time::sleep_until(at) => {
                    spool_batch(builder.flush(), &spool, &metrics);
                    deadline = None;
                    continue;
                }
            },
            None => results.recv().await,
        };
        let Some(probe) = received else { break };
        spooled += 1;
        if builder.is_empty() {
            deadline = Some(Instant::now() + max_delay);
        }
        if let Some(full) = builder.push(probe) {
            spool_batch(Some(full), &spool, &metrics);
            deadline = None;
        }
    }
    spool_batch(builder.flush(), &spool, &metrics);
    spooled
}

fn spool_batch(batch: Option<PushRequest>, spool: &SharedSpool, metrics: &AgentMetrics) {
    let Some(batch) = batch else { return };
    let dropped = spool.push(batch);
    if dropped.batches > 0 {
        metrics.spool_dropped_batches.inc_by(dropped.batches);
        metrics.spool_dropped_records.inc_by(dropped.records);
        tracing::warn!(
            batches = dropped.batches,
            records = dropped.records,
            "spool full: dropped the oldest unacknowledged batches"
        );
    }
    let guard = spool.lock();
    metrics.spool_batches.set(guard.len() as i64);
    metrics.spool_bytes.set(guard.bytes() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(site: &str) -> ProbeResult {
        ProbeResult {
            site: site.into(),
            ..Default::default()
        }
    }

    #[test]
    fn batches_fill_by_count_with_increasing_seq() {
        let mut b = BatchBuilder::with_first_seq("n1".into(), 2, 100);
        assert!(b.push(probe("a")).is_none());
        let full = b.push(probe("b")).expect("full batch");
        assert_eq!((full.seq, full.records.len()), (100, 2));
        assert_eq!(full.agent_id, "n1");
        assert!(b.flush().is_none());
        b.push(probe("c"));
        assert_eq!(b.flush().map(|x| (x.seq, x.records.len())), Some((101, 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_leaves_after_max_delay() {
        let spool = SharedSpool::new(1 << 20);
        let (tx, rx) = mpsc::channel(8);
        let builder = BatchBuilder::with_first_seq("n1".into(), 100, 1);
        let task = tokio::spawn(run(
            builder,
            Duration::from_millis(500),
            rx,
            spool.clone(),
            AgentMetrics::new(),
        ));
        tx.send(probe("a")).await.expect("send");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(spool.lock().len(), 1);
        tx.send(probe("b")).await.expect("send");
        drop(tx);
        let spooled = task.await.expect("batcher ends when its input closes");
        assert_eq!(spooled, 2);
        assert_eq!(spool.lock().len(), 2, "the rest is flushed at the end");
    }
}
