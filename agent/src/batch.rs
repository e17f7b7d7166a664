//! Groups records (probe results, samples: any kind of the `Record` oneof)
//! into batches by count, size and age, and hands each batch to the spool
//! with the next sequence number.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use livehead_proto::v1::{PushRequest, Record};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::spool::SharedSpool;

/// Sequence numbers below this are handed out; the collector's SQLite store
/// keeps them as i64, and 2^62 leaves 2^62 batches of headroom below 2^63.
const SEQ_LIMIT: u64 = 1 << 62;

/// The process's sequence numbers: unique per batch within a process, and
/// unlikely to meet another process's (two agents sharing one identity).
/// The batcher, splits and renumbered batches all draw from the same one.
#[derive(Debug, Clone)]
pub struct Seqs(Arc<AtomicU64>);

impl Seqs {
    /// Starts at a random point of [1, 2^62): two processes sharing a
    /// certificate (or a restart) would have to draw within a few batches of
    /// each other to collide, where start times in µs collided within
    /// milliseconds.
    pub fn random() -> Self {
        Self::starting_at(rand::random_range(1..SEQ_LIMIT))
    }

    pub fn starting_at(first: u64) -> Self {
        Self(Arc::new(AtomicU64::new(first)))
    }

    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Bytes `record` adds to an encoded [`PushRequest`] (field tag, length, body).
pub fn record_len(record: &Record) -> usize {
    prost::encoding::message::encoded_len(3, record)
}

/// Encoded size of a batch of `agent_id` with no records, whatever its
/// sequence number (the largest varint is assumed).
pub fn empty_batch_len(agent_id: &str) -> usize {
    PushRequest {
        trace_context: Default::default(),
        agent_id: agent_id.to_owned(),
        seq: u64::MAX,
        records: Vec::new(),
    }
    .encoded_len()
}

/// Builds batches; no I/O.
#[derive(Debug)]
pub struct BatchBuilder {
    agent_id: String,
    seqs: Seqs,
    max_records: usize,
    max_bytes: usize,
    records: Vec<Record>,
    bytes: usize,
}

impl BatchBuilder {
    /// A batch closes at `max_records` records, or before a record would take
    /// it past `max_bytes` encoded (a lone record larger than that still
    /// makes a batch of its own).
    pub fn new(agent_id: String, seqs: Seqs, max_records: usize, max_bytes: usize) -> Self {
        let bytes = empty_batch_len(&agent_id);
        Self {
            agent_id,
            seqs,
            max_records: max_records.max(1),
            max_bytes,
            records: Vec::new(),
            bytes,
        }
    }

    /// Adds a record; returns a batch when this one closed one: the batch it
    /// would have made too large, or the batch it filled.
    pub fn push(&mut self, record: Record) -> Option<PushRequest> {
        let len = record_len(&record);
        let too_large = self.bytes + len > self.max_bytes;
        let closed = (too_large && !self.records.is_empty()).then(|| self.take());
        self.bytes += len;
        self.records.push(record);
        // A batch closed above leaves one record behind, which fills a batch
        // only with max_records = 1, and then nothing was waiting before.
        closed.or_else(|| (self.records.len() >= self.max_records).then(|| self.take()))
    }

    /// The partial batch, if any record is waiting.
    pub fn flush(&mut self) -> Option<PushRequest> {
        (!self.records.is_empty()).then(|| self.take())
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn take(&mut self) -> PushRequest {
        self.bytes = empty_batch_len(&self.agent_id);
        PushRequest {
            trace_context: Default::default(),
            agent_id: self.agent_id.clone(),
            seq: self.seqs.next(),
            records: std::mem::take(&mut self.records),
        }
    }
}

/// Reads records until every sender is gone, spooling a batch when it is full
/// or when its first record is `max_delay` old; flushes what is left at the
/// end. Returns how many records it spooled.
pub async fn run(
    mut builder: BatchBuilder,
    max_delay: Duration,
    mut records: mpsc::Receiver<Record>,
    spool: SharedSpool,
) -> u64 {
    let mut deadline: Option<Instant> = None;
    let mut spooled = 0;
    loop {
        let received = match deadline {
            Some(at) => tokio::select! {
                r = records.recv() => r,
                () = tokio::time::sleep_until(at) => {
                    spool_batch(builder.flush(), &spool).await;
                    deadline = None;
                    continue;
                }
            },
            None => records.recv().await,
        };
        let Some(record) = received else { break };
        spooled += 1;
        if builder.is_empty() {
            deadline = Some(Instant::now() + max_delay);
        }
        if let Some(closed) = builder.push(record) {
            spool_batch(Some(closed), &spool).await;
            // What is left (if anything) started a batch just now.
            deadline = (!builder.is_empty()).then(|| Instant::now() + max_delay);
        }
    }
    spool_batch(builder.flush(), &spool).await;
    spooled
}

async fn spool_batch(batch: Option<PushRequest>, spool: &SharedSpool) {
    if let Some(batch) = batch {
        spool.push(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::AgentMetrics;

    use livehead_proto::v1::{NodeSample, ProbeResult, record::Kind};

    fn probe(site: &str) -> Record {
        Record {
            kind: Some(Kind::Probe(ProbeResult {
                site: site.into(),
                ..Default::default()
            })),
        }
    }

    fn node(ts_ms: u64) -> Record {
        Record {
            kind: Some(Kind::Node(NodeSample {
                ts_ms,
                cpu_cores: 2,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn batches_fill_by_count_with_increasing_seq() {
        let mut b = BatchBuilder::new("n1".into(), Seqs::starting_at(100), 2, 1 << 20);
        assert!(b.push(probe("a")).is_none());
        let full = b.push(probe("b")).expect("full batch");
        assert_eq!((full.seq, full.records.len()), (100, 2));
        assert_eq!(full.agent_id, "n1");
        assert!(b.flush().is_none());
        b.push(probe("c"));
        assert_eq!(b.flush().map(|x| (x.seq, x.records.len())), Some((101, 1)));
    }

    #[test]
    fn records_of_any_kind_share_batches_in_the_order_they_came() {
        let mut b = BatchBuilder::new("n1".into(), Seqs::starting_at(1), 3, 1 << 20);
        let sent = [probe("a"), node(1), probe("b"), node(2)];
        let mut batches: Vec<_> = sent.iter().cloned().filter_map(|r| b.push(r)).collect();
        batches.extend(b.flush());
        assert_eq!(batches.len(), 2);
        let got: Vec<Record> = batches.into_iter().flat_map(|x| x.records).collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn sample_records_count_toward_max_bytes() {
        let one = record_len(&node(1));
        let max_bytes = empty_batch_len("n1") + 2 * one;
        let mut b = BatchBuilder::new("n1".into(), Seqs::starting_at(1), 1000, max_bytes);
        assert!(b.push(node(1)).is_none());
        assert!(b.push(node(2)).is_none());
        let closed = b.push(node(3)).expect("a third would not fit");
        assert_eq!(closed.records.len(), 2);
        assert!(closed.encoded_len() <= max_bytes);
    }

    #[test]
    fn a_batch_closes_before_it_would_exceed_max_bytes() {
        let max_bytes = 300;
        let mut b = BatchBuilder::new("n1".into(), Seqs::starting_at(1), 1000, max_bytes);
        let mut batches = Vec::new();
        for i in 0..50 {
            batches.extend(b.push(probe(&format!("site{i:03}.example"))));
        }
        batches.extend(b.flush());
        assert!(batches.len() > 1, "{}", batches.len());
        for batch in &batches {
            assert!(batch.encoded_len() <= max_bytes, "{}", batch.encoded_len());
        }
        assert_eq!(batches.iter().map(|b| b.records.len()).sum::<usize>(), 50);
        // Counted with the largest sequence number the batch could carry.
        let counted: usize =
            empty_batch_len("n1") + batches[0].records.iter().map(record_len).sum::<usize>();
        let next_record = record_len(&batches[1].records[0]);
        assert!(
            counted <= max_bytes && counted + next_record > max_bytes,
            "closed only when the next record would not fit"
        );
    }

    #[test]
    fn a_record_larger_than_max_bytes_goes_alone() {
        let mut b = BatchBuilder::new("n1".into(), Seqs::starting_at(1), 1000, 10);
        assert!(b.push(probe("a.example")).is_none(), "first record waits");
        let alone = b.push(probe("b.example")).expect("closed");
        assert_eq!(alone.records.len(), 1);
        assert_eq!(b.flush().map(|x| x.records.len()), Some(1));
    }

    #[test]
    fn random_seqs_start_below_2_pow_62_and_differ_between_processes() {
        let (a, b) = (Seqs::random(), Seqs::random());
        let (x, y) = (a.next(), b.next());
        assert!((1..SEQ_LIMIT).contains(&x) && (1..SEQ_LIMIT).contains(&y));
        assert_ne!(x, y, "two draws from 2^62 values");
        assert_eq!(a.next(), x + 1);
        // Clones share the counter: splits draw from the batcher's sequence.
        assert_eq!(a.clone().next(), x + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_leaves_after_max_delay() {
        let spool = SharedSpool::memory(1 << 20, AgentMetrics::new());
        let (tx, rx) = mpsc::channel(8);
        let builder = BatchBuilder::new("n1".into(), Seqs::starting_at(1), 100, 1 << 20);
        let task = tokio::spawn(run(builder, Duration::from_millis(500), rx, spool.clone()));
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
