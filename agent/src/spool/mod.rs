//! Batches waiting for the collector's acknowledgement, in memory or on disk.
//! Bounded by bytes: when full, the oldest batches are dropped and counted,
//! never silently; a dropped batch that was already sent counts as lost only
//! if its ack never comes.
//!
//! [`Spool`] is the index and its rules, without I/O. Each entry is one batch,
//! or the pieces it was split into; with a disk spool, an entry is one file
//! and only the index stays in memory. [`SharedSpool`] does the I/O around it.

pub mod disk;
pub mod file;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use livehead_proto::v1::PushRequest;
use prost::Message;
use tokio::sync::Notify;

use crate::metrics::AgentMetrics;
pub use disk::{DiskError, DiskStore, Loaded};

/// Records and batches lost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub records: u64,
}

impl Dropped {
    fn add(&mut self, piece: &Piece) {
        self.batches += 1;
        self.records += piece.records as u64;
    }
}

/// What the index knows of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub seq: u64,
    pub records: usize,
    /// Encoded size, as sent.
    pub bytes: usize,
}

impl Piece {
    pub fn of(batch: &PushRequest) -> Self {
        Self {
            seq: batch.seq,
            records: batch.records.len(),
            bytes: batch.encoded_len(),
        }
    }
}

/// A spool entry where it stands in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Position in the queue; with a disk spool also the file's name, so the
    /// order survives restarts.
    pub pos: u64,
    pub piece: Piece,
}

#[derive(Debug)]
struct Entry {
    pos: u64,
    /// Unacknowledged pieces, in sending order, and whether each was sent on
    /// the current stream.
    pieces: Vec<(Piece, bool)>,
    /// Bytes counted against the bound (the file's size on disk).
    size: usize,
    /// The batches themselves, for a memory spool; `None` on disk.
    batches: Option<Vec<PushRequest>>,
}

/// A new entry for [`Spool::push`].
#[derive(Debug)]
pub struct NewEntry {
    pub pos: u64,
    pub pieces: Vec<Piece>,
    pub size: usize,
    pub batches: Option<Vec<PushRequest>>,
}

impl NewEntry {
    /// An entry held in memory.
    pub fn memory(pos: u64, batches: Vec<PushRequest>) -> Self {
        let pieces: Vec<Piece> = batches.iter().map(Piece::of).collect();
        Self {
            pos,
            size: pieces.iter().map(|p| p.bytes).sum(),
            pieces,
            batches: Some(batches),
        }
    }
}

/// What a push made room by dropping.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Batches dropped before they were sent: lost.
    pub lost: Dropped,
    /// Files to delete.
    pub files: Vec<u64>,
}

/// What an ack did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acked {
    /// The batch was spooled (false: acknowledged twice, or unknown).
    pub known: bool,
    /// Its entry is done: delete this file.
    pub file_done: Option<u64>,
}

/// The oldest batch not yet acknowledged on the stream, which a stream-level
/// refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oldest {
    Spooled(At),
    /// Dropped from a full spool after it was sent.
    Evicted(Piece),
}

/// The index; no I/O, so its rules are tested directly.
#[derive(Debug)]
pub struct Spool {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
    next_pos: u64,
    /// Sent, then dropped from the full spool: delivered if their ack still
    /// comes, lost if the stream ends first.
    evicted_in_flight: VecDeque<Piece>,
}

impl Spool {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_pos: 0,
            evicted_in_flight: VecDeque::new(),
        }
    }

    /// A position after every entry's, for the next push.
    pub fn allocate_pos(&mut self) -> u64 {
        let pos = self.next_pos;
        self.next_pos += 1;
        pos
    }

    /// Appends an entry, dropping the oldest ones while over the byte bound.
    /// The newest entry is always kept, even if alone it exceeds the bound.
    pub fn push(&mut self, new: NewEntry) -> Evicted {
        self.next_pos = self.next_pos.max(new.pos + 1);
        self.bytes += new.size;
        self.entries.push_back(Entry {
            pos: new.pos,
            pieces: new.pieces.into_iter().map(|p| (p, false)).collect(),
            size: new.size,
            batches: new.batches,
        });
        let mut evicted = Evicted::default();
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.size;
            for (piece, sent) in &old.pieces {
                if *sent {
                    self.evicted_in_flight.push_back(*piece);
                } else {
                    evicted.lost.add(piece);
                }
            }
            if old.batches.is_none() {
                evicted.files.push(old.pos);
            }
        }
        evicted
    }

    /// The first batch not sent on the current stream.
    pub fn next_unsent(&self) -> Option<At> {
        self.entries.iter().find_map(|e| {
            let (piece, _) = e.pieces.iter().find(|(_, sent)| !sent)?;
            Some(At {
                pos: e.pos,
                piece: *piece,
            })
        })
    }

    /// Marks a batch sent; false when it is no longer spooled.
    pub fn mark_sent(&mut self, at: At) -> bool {
        match self.piece_mut(at.pos, at.piece.seq) {
            Some((_, sent)) => {
                *sent = true;
                true
            }
            None => false,
        }
    }

    /// Batches sent and not acknowledged, dropped ones included.
    pub fn in_flight(&self) -> usize {
        let spooled: usize = self
            .entries
            .iter()
            .map(|e| e.pieces.iter().filter(|(_, sent)| *sent).count())
            .sum();
        spooled + self.evicted_in_flight.len()
    }

    pub fn oldest_in_flight(&self) -> Option<Oldest> {
        if let Some(piece) = self.evicted_in_flight.front() {
            return Some(Oldest::Evicted(*piece));
        }
        self.entries.iter().find_map(|e| {
            let (piece, _) = e.pieces.iter().find(|(_, sent)| *sent)?;
            Some(Oldest::Spooled(At {
                pos: e.pos,
                piece: *piece,
            }))
        })
    }

    /// Forgets the acknowledged batch.
    pub fn ack(&mut self, seq: u64) -> Acked {
        if let Some(i) = self.evicted_in_flight.iter().position(|p| p.seq == seq) {
            self.evicted_in_flight.remove(i);
            return Acked {
                known: true,
                file_done: None,
            };
        }
        let found = self.entries.iter().enumerate().find_map(|(i, e)| {
            let j = e.pieces.iter().position(|(p, _)| p.seq == seq)?;
            Some((i, j))
        });
        let Some((i, j)) = found else {
            return Acked::default();
        };
        let entry = &mut self.entries[i];
        entry.pieces.remove(j);
        if let Some(batches) = &mut entry.batches {
            batches.retain(|b| b.seq != seq);
        }
        Acked {
            known: true,
            file_done: self.remove_if_done(i),
        }
    }

    /// Replaces one batch of an entry by `pieces` (its split, its renumbered
    /// self, or nothing when it is dropped); `size` is the entry's new size
    /// and `batches` its new content for a memory spool. Returns whether the
    /// entry was still there and, when it is now empty, its file to delete.
    pub fn replace(
        &mut self,
        pos: u64,
        seq: u64,
        pieces: &[Piece],
        size: usize,
        batches: Option<Vec<PushRequest>>,
    ) -> (bool, Option<u64>) {
        let Some(i) = self.entries.iter().position(|e| e.pos == pos) else {
            return (false, None);
        };
        let entry = &mut self.entries[i];
        let Some(j) = entry.pieces.iter().position(|(p, _)| p.seq == seq) else {
            return (false, None);
        };
        entry
            .pieces
            .splice(j..=j, pieces.iter().map(|p| (*p, false)));
        self.bytes = self.bytes - entry.size + size;
        entry.size = size;
        if entry.batches.is_some() {
            entry.batches = batches;
        }
        (true, self.remove_if_done(i))
    }

    fn remove_if_done(&mut self, i: usize) -> Option<u64> {
        if !self.entries[i].pieces.is_empty() {
            return None;
        }
        let entry = self.entries.remove(i)?;
        self.bytes -= entry.size;
        entry.batches.is_none().then_some(entry.pos)
    }

    /// The stream ended: everything unacknowledged is sent again on the next
    /// one, except batches dropped from the full spool, now lost.
    pub fn end_stream(&mut self) -> Dropped {
        for entry in &mut self.entries {
            for (_, sent) in &mut entry.pieces {
                *sent = false;
            }
        }
        let mut lost = Dropped::default();
        for piece in self.evicted_in_flight.drain(..) {
            lost.add(&piece);
        }
        lost
    }

    /// The unacknowledged batches of an entry, in order.
    pub fn pieces_of(&self, pos: u64) -> Option<Vec<Piece>> {
        let entry = self.entries.iter().find(|e| e.pos == pos)?;
        Some(entry.pieces.iter().map(|(p, _)| *p).collect())
    }

    /// A memory entry's batches (`None` on disk, or when gone).
    pub fn batches_of(&self, pos: u64) -> Option<&[PushRequest]> {
        let entry = self.entries.iter().find(|e| e.pos == pos)?;
        entry.batches.as_deref()
    }

    fn piece_mut(&mut self, pos: u64, seq: u64) -> Option<&mut (Piece, bool)> {
        let entry = self.entries.iter_mut().find(|e| e.pos == pos)?;
        entry.pieces.iter_mut().find(|(p, _)| p.seq == seq)
    }

    /// Batches waiting (split pieces count one each).
    pub fn len(&self) -> usize {
        self.entries.iter().map(|e| e.pieces.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Nothing waits, not even the ack of a dropped batch.
    pub fn is_settled(&self) -> bool {
        self.entries.is_empty() && self.evicted_in_flight.is_empty()
    }

    /// Records in the batches waiting.
    pub fn records(&self) -> usize {
        self.entries
            .iter()
            .flat_map(|e| &e.pieces)
            .map(|(p, _)| p.records)
            .sum()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The spool shared by the batcher (which pushes) and the transport (which
/// sends, acks and replaces). The lock is never held across an await; file
/// I/O runs on the blocking pool, outside the lock.
#[derive(Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    pushed: Arc<Notify>,
    disk: Option<Arc<DiskStore>>,
    metrics: AgentMetrics,
}

impl SharedSpool {
    /// A spool in memory, bounded by `max_bytes` of encoded batches.
    pub fn memory(max_bytes: usize, metrics: AgentMetrics) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Spool::new(max_bytes))),
            pushed: Arc::new(Notify::new()),
            disk: None,
            metrics,
        }
    }

    /// A spool in `store`, bounded by `max_bytes` of files, starting with what
    /// an earlier run left there (`loaded`, in order).
    pub fn on_disk(
        store: DiskStore,
        loaded: Vec<Loaded>,
        max_bytes: usize,
        metrics: AgentMetrics,
    ) -> Self {
        let mut spool = Spool::new(max_bytes);
        let mut evicted = Evicted::default();
        for entry in loaded {
            let e = spool.push(NewEntry {
                pos: entry.pos,
                pieces: entry.pieces,
                size: entry.size,
                batches: None,
            });
            evicted.lost.batches += e.lost.batches;
            evicted.lost.records += e.lost.records;
            evicted.files.extend(e.files);
        }
        let shared = Self {
            inner: Arc::new(Mutex::new(spool)),
            pushed: Arc::new(Notify::new()),
            disk: Some(Arc::new(store)),
            metrics,
        };
        // A smaller bound than the last run's: the oldest files go now.
        for pos in &evicted.files {
            shared.remove_file_now(*pos);
        }
        shared.count_lost(evicted.lost, "spool over its bound at start");
        shared.update_gauges();
        shared
    }

    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding this lock leaves the index consistent (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_on_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// Spools a batch (on disk: durably, before it counts as spooled). A batch
    /// the disk refuses is lost, counted and logged.
    pub async fn push(&self, batch: PushRequest) {
        let pos = self.lock().allocate_pos();
        let entry = match &self.disk {
            None => NewEntry::memory(pos, vec![batch]),
            Some(disk) => {
                let piece = Piece::of(&batch);
                let disk = disk.clone();
                match blocking(move || disk.write(pos, &[batch])).await {
                    Ok(size) => NewEntry {
                        pos,
                        pieces: vec![piece],
                        size,
                        batches: None,
                    },
                    Err(error) => {
                        self.metrics.spool_write_errors.inc();
                        tracing::error!(%error, seq = piece.seq, records = piece.records,
                            "cannot write a batch to the disk spool; dropped it");
                        let mut lost = Dropped::default();
                        lost.add(&piece);
                        self.count_lost(lost, "disk spool write failed");
                        return;
                    }
                }
            }
        };
        let evicted = self.lock().push(entry);
        self.remove_files(evicted.files).await;
        self.count_lost(
            evicted.lost,
            "spool full: dropped the oldest unacknowledged batches",
        );
        self.update_gauges();
        self.pushed.notify_one();
    }

    /// The batch at `at`; `None` when it is no longer spooled.
    pub async fn batch(&self, at: At) -> Result<Option<PushRequest>, DiskError> {
        let Some(disk) = &self.disk else {
            let spool = self.lock();
            let batches = spool.batches_of(at.pos).unwrap_or_default();
            return Ok(batches.iter().find(|b| b.seq == at.piece.seq).cloned());
        };
        let disk = disk.clone();
        match blocking(move || disk.read(at.pos)).await {
            Ok(batches) => Ok(batches.into_iter().find(|b| b.seq == at.piece.seq)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the batch at `at` by `pieces` (none: drops it), durably and
    /// in one step on disk. False when the batch was no longer spooled.
    pub async fn replace(&self, at: At, pieces: Vec<PushRequest>) -> Result<bool, DiskError> {
        let Some(current) = self.lock().pieces_of(at.pos) else {
            return Ok(false);
        };
        let Some(content) = self.content(at.pos, &current).await? else {
            return Ok(false);
        };
        let new_pieces: Vec<Piece> = pieces.iter().map(Piece::of).collect();
        let mut replacement = Vec::with_capacity(content.len() + pieces.len());
        let mut pieces = Some(pieces);
        for batch in content {
            if batch.seq == at.piece.seq {
                replacement.extend(pieces.take().unwrap_or_default());
            } else {
                replacement.push(batch);
            }
        }
        let (size, batches) = match &self.disk {
            None => (
                replacement.iter().map(Message::encoded_len).sum(),
                Some(replacement),
            ),
            Some(_) if replacement.is_empty() => (0, None),
            Some(disk) => {
                let disk = disk.clone();
                (
                    blocking(move || disk.write(at.pos, &replacement)).await?,
                    None,
                )
            }
        };
        let (present, done) = self
            .lock()
            .replace(at.pos, at.piece.seq, &new_pieces, size, batches);
        if let Some(pos) = done.or((!present).then_some(at.pos)) {
            // Emptied, or evicted while it was being rewritten.
            self.remove_files(vec![pos]).await;
        }
        self.update_gauges();
        Ok(present)
    }

    /// The entry's unacknowledged batches (`current`), read back.
    async fn content(
        &self,
        pos: u64,
        current: &[Piece],
    ) -> Result<Option<Vec<PushRequest>>, DiskError> {
        let Some(disk) = &self.disk else {
            return Ok(self.lock().batches_of(pos).map(<[_]>::to_vec));
        };
        let disk = disk.clone();
        let batches = match blocking(move || disk.read(pos)).await {
            Ok(batches) => batches,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let unacked = |b: &PushRequest| current.iter().any(|p| p.seq == b.seq);
        Ok(Some(batches.into_iter().filter(unacked).collect()))
    }

    /// Drops a whole entry whose file cannot be read, counting its batches lost.
    pub async fn drop_unreadable(&self, pos: u64) {
        let Some(pieces) = self.lock().pieces_of(pos) else {
            return;
        };
        let mut lost = Dropped::default();
        for piece in &pieces {
            self.lock().replace(pos, piece.seq, &[], 0, None);
            lost.add(piece);
        }
        if let Some(disk) = &self.disk {
            disk.set_aside(pos);
        }
        self.metrics.spool_corrupt_files.inc();
        self.count_lost(lost, "unreadable spool file");
        self.update_gauges();
    }

    /// Records an ack; false when the batch was not waiting for one.
    pub async fn ack(&self, seq: u64) -> bool {
        let acked = self.lock().ack(seq);
        self.remove_files(acked.file_done.into_iter().collect())
            .await;
        self.update_gauges();
        acked.known
    }

    /// The stream ended: see [`Spool::end_stream`].
    pub fn end_stream(&self) {
        let lost = self.lock().end_stream();
        self.count_lost(
            lost,
            "batches dropped from the full spool were not acknowledged before the stream ended",
        );
    }

    /// Resolves after the next push.
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }

    async fn remove_files(&self, files: Vec<u64>) {
        let Some(disk) = &self.disk else { return };
        if files.is_empty() {
            return;
        }
        let disk = disk.clone();
        let _ = blocking(move || {
            files.iter().for_each(|pos| disk.remove(*pos));
            Ok(())
        })
        .await;
    }

    fn remove_file_now(&self, pos: u64) {
        if let Some(disk) = &self.disk {
            disk.remove(pos);
        }
    }

    fn count_lost(&self, lost: Dropped, why: &'static str) {
        if lost.batches == 0 {
            return;
        }
        self.metrics.spool_dropped_batches.inc_by(lost.batches);
        self.metrics.spool_dropped_records.inc_by(lost.records);
        tracing::warn!(batches = lost.batches, records = lost.records, "{why}");
    }

    fn update_gauges(&self) {
        let (len, bytes, records) = {
            let spool = self.lock();
            (spool.len(), spool.bytes(), spool.records())
        };
        self.metrics.spool_batches.set(len as i64);
        self.metrics.spool_bytes.set(bytes as i64);
        self.metrics.spool_records.set(records as i64);
    }
}

/// Runs file I/O on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, DiskError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DiskError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_proto::v1::{ProbeResult, Record, record::Kind};

    /// A batch of `records` identical probes.
    pub(crate) fn batch(seq: u64, records: usize) -> PushRequest {
        let probe = ProbeResult {
            site: "example.com".into(),
            status: 200,
            ..Default::default()
        };
        PushRequest {
            trace_context: Default::default(),
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

    fn push(spool: &mut Spool, seq: u64, records: usize) -> Evicted {
        let pos = spool.allocate_pos();
        spool.push(NewEntry::memory(pos, vec![batch(seq, records)]))
    }

    /// Sends everything unsent, as the transport does; the seqs sent.
    fn send_all(spool: &mut Spool) -> Vec<u64> {
        let mut sent = Vec::new();
        while let Some(at) = spool.next_unsent() {
            assert!(spool.mark_sent(at));
            sent.push(at.piece.seq);
        }
        sent
    }

    #[test]
    fn full_spool_drops_unsent_oldest_and_counts_them() {
        let one = batch(1, 10).encoded_len();
        let mut spool = Spool::new(one * 2);
        assert_eq!(push(&mut spool, 1, 10), Evicted::default());
        assert_eq!(push(&mut spool, 2, 10), Evicted::default());
        let evicted = push(&mut spool, 3, 10);
        assert_eq!(
            evicted.lost,
            Dropped {
                batches: 1,
                records: 10
            }
        );
        assert!(evicted.files.is_empty(), "memory entries have no file");
        assert_eq!(spool.next_unsent().map(|a| a.piece.seq), Some(2));
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.in_flight(), 0);
    }

    #[test]
    fn a_sent_batch_dropped_from_a_full_spool_is_lost_only_without_its_ack() {
        let one = batch(1, 10).encoded_len();
        let mut spool = Spool::new(one * 2);
        push(&mut spool, 1, 10);
        push(&mut spool, 2, 10);
        assert_eq!(send_all(&mut spool), [1, 2]);
        // 3 and 4 evict 1 and 2, both in flight: not lost yet.
        assert_eq!(push(&mut spool, 3, 10).lost, Dropped::default());
        assert_eq!(push(&mut spool, 4, 10).lost, Dropped::default());
        assert_eq!(spool.in_flight(), 2);
        assert!(!spool.is_settled(), "their acks are still awaited");
        assert_eq!(
            spool.oldest_in_flight(),
            Some(Oldest::Evicted(Piece::of(&batch(1, 10))))
        );
        assert!(spool.ack(1).known, "1 was delivered after all");
        // The stream fails before 2's ack: 2 is lost, 3 and 4 go again.
        assert_eq!(
            spool.end_stream(),
            Dropped {
                batches: 1,
                records: 10
            }
        );
        assert_eq!(spool.in_flight(), 0);
        assert_eq!(send_all(&mut spool), [3, 4]);
        assert!(!spool.ack(2).known);
    }

    #[test]
    fn acks_remove_and_a_new_stream_resends_the_rest_in_order() {
        let mut spool = Spool::new(1 << 20);
        for seq in [30, 10, 20] {
            push(&mut spool, seq, 1);
        }
        assert_eq!(
            send_all(&mut spool),
            [30, 10, 20],
            "queue order, not seq order"
        );
        assert_eq!(spool.in_flight(), 3);
        assert_eq!(
            spool.ack(10),
            Acked {
                known: true,
                file_done: None
            }
        );
        assert!(!spool.ack(10).known);
        assert_eq!(spool.end_stream(), Dropped::default());
        assert_eq!(send_all(&mut spool), [30, 20]);
        assert!(spool.ack(30).known && spool.ack(20).known);
        assert!(spool.is_empty() && spool.is_settled());
        assert_eq!(spool.bytes(), 0);
    }

    #[test]
    fn split_pieces_take_the_place_of_their_batch() {
        let mut spool = Spool::new(1 << 20);
        push(&mut spool, 100, 4);
        push(&mut spool, 101, 1);
        assert_eq!(send_all(&mut spool), [100, 101]);
        let Some(Oldest::Spooled(at)) = spool.oldest_in_flight() else {
            panic!("the oldest is spooled")
        };
        assert_eq!(at.piece.seq, 100);
        let pieces = [batch(500, 2), batch(501, 2)];
        let metas: Vec<Piece> = pieces.iter().map(Piece::of).collect();
        let size = pieces.iter().map(Message::encoded_len).sum();
        assert_eq!(
            spool.replace(at.pos, 100, &metas, size, Some(pieces.to_vec())),
            (true, None)
        );
        spool.end_stream();
        assert_eq!(send_all(&mut spool), [500, 501, 101]);
        assert_eq!(spool.records(), 5);
        assert_eq!(
            spool.batches_of(at.pos).map(|b| b.len()),
            Some(2),
            "memory content follows"
        );
        // Dropping the last pieces empties and removes the entry.
        assert!(spool.ack(500).known);
        assert_eq!(
            spool.replace(at.pos, 501, &[], 0, Some(vec![])),
            (true, None)
        );
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.replace(at.pos, 501, &[], 0, None), (false, None));
    }

    #[test]
    fn a_done_disk_entry_names_its_file() {
        let mut spool = Spool::new(1 << 20);
        let piece = Piece::of(&batch(7, 1));
        spool.push(NewEntry {
            pos: 41,
            pieces: vec![piece, Piece { seq: 8, ..piece }],
            size: 100,
            batches: None,
        });
        assert_eq!(
            spool.allocate_pos(),
            42,
            "positions continue after loaded ones"
        );
        assert_eq!(spool.ack(7).file_done, None, "8 still waits");
        assert_eq!(spool.ack(8).file_done, Some(41));
        assert_eq!(spool.bytes(), 0);
    }

    #[tokio::test]
    async fn a_disk_spool_survives_a_restart_and_a_split_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let open = || {
            let (store, opened) = DiskStore::open(dir.path()).expect("open");
            SharedSpool::on_disk(store, opened.entries, 1 << 20, AgentMetrics::new())
        };
        let spool = open();
        spool.push(batch(900, 4)).await;
        spool.push(batch(5, 1)).await;
        let first = spool.lock().next_unsent().expect("spooled");
        assert_eq!(
            spool
                .batch(first)
                .await
                .expect("read")
                .map(|b| b.records.len()),
            Some(4)
        );
        let pieces = vec![batch(901, 2), batch(902, 2)];
        assert!(spool.replace(first, pieces).await.expect("split"));
        drop(spool);

        let spool = open();
        let mut order = Vec::new();
        loop {
            let next = spool.lock().next_unsent();
            let Some(at) = next else { break };
            spool.lock().mark_sent(at);
            order.push(at.piece.seq);
        }
        assert_eq!(order, [901, 902, 5], "the split pieces, then the rest");
        for seq in [901, 902, 5] {
            assert!(spool.ack(seq).await);
        }
        let left = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(left, 0, "acked files are deleted");
    }

    #[tokio::test]
    async fn a_disk_spool_past_its_bound_drops_the_oldest_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = DiskStore::open(dir.path()).expect("open");
        let one = file::encode(&[batch(1, 10)]).len();
        let metrics = AgentMetrics::new();
        let spool = SharedSpool::on_disk(store, vec![], one * 2, metrics.clone());
        for seq in 1..=3 {
            spool.push(batch(seq, 10)).await;
        }
        assert_eq!(metrics.spool_dropped_records.get(), 10);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
        assert_eq!(spool.lock().next_unsent().map(|a| a.piece.seq), Some(2));
    }

    #[tokio::test]
    async fn a_batch_the_disk_refuses_is_counted_lost_not_fatal() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool_dir = dir.path().join("spool");
        let (store, _) = DiskStore::open(&spool_dir).expect("open");
        let metrics = AgentMetrics::new();
        let spool = SharedSpool::on_disk(store, vec![], 1 << 20, metrics.clone());
        std::fs::remove_dir_all(&spool_dir).expect("pull the directory away");
        spool.push(batch(1, 3)).await;
        assert_eq!(metrics.spool_write_errors.get(), 1);
        assert_eq!(metrics.spool_dropped_records.get(), 3);
        assert!(spool.lock().is_empty());
    }

    #[tokio::test]
    async fn a_file_corrupted_after_it_was_spooled_is_set_aside_when_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = DiskStore::open(dir.path()).expect("open");
        let metrics = AgentMetrics::new();
        let spool = SharedSpool::on_disk(store, vec![], 1 << 20, metrics.clone());
        spool.push(batch(1, 3)).await;
        spool.push(batch(2, 1)).await;
        let first = spool.lock().next_unsent().expect("spooled");
        let path = dir.path().join(format!("{:020}.batch", first.pos));
        std::fs::write(&path, b"LHSPOOL1 but not really").expect("corrupt");
        let error = spool.batch(first).await.expect_err("unreadable");
        assert!(matches!(error, DiskError::Format { .. }), "{error}");
        spool.drop_unreadable(first.pos).await;
        assert_eq!(metrics.spool_corrupt_files.get(), 1);
        assert_eq!(metrics.spool_dropped_records.get(), 3);
        assert!(path.with_extension("corrupt").exists());
        assert_eq!(spool.lock().next_unsent().map(|a| a.piece.seq), Some(2));
    }
}
