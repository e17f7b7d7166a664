//! The collector's limits on one batch, and how a batch is cut to fit them or
//! cut after a refusal. No I/O.

use livehead_proto::v1::{PushRequest, Record};
use tonic::Code;
use tonic::metadata::MetadataMap;

use crate::batch::{Seqs, empty_batch_len, record_len};

/// Response header of a `Push` stream: the largest message the collector
/// decodes, in bytes.
pub const MAX_MESSAGE_BYTES_HEADER: &str = "livehead-max-message-bytes";
/// Response header of a `Push` stream: the most records a batch may hold.
pub const MAX_BATCH_RECORDS_HEADER: &str = "livehead-max-batch-records";

/// What the collector accepts in one batch; `None`: not announced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: Option<usize>,
    pub max_records: Option<usize>,
}

impl Limits {
    /// The limits a collector announced in a stream's response headers
    /// (absent or unreadable: unknown).
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        let number = |name: &str| -> Option<usize> {
            let value = metadata.get(name)?.to_str().ok()?;
            value.trim().parse().ok().filter(|n| *n > 0)
        };
        Self {
            max_bytes: number(MAX_MESSAGE_BYTES_HEADER),
            max_records: number(MAX_BATCH_RECORDS_HEADER),
        }
    }

    pub fn known(&self) -> bool {
        self.max_bytes.is_some() || self.max_records.is_some()
    }

    /// Whether a batch of `records` records encoded in `bytes` bytes fits.
    pub fn fits(&self, records: usize, bytes: usize) -> bool {
        self.max_records.is_none_or(|m| records <= m) && self.max_bytes.is_none_or(|m| bytes <= m)
    }
}

/// A batch cut in pieces, each with a fresh sequence number.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    pub pieces: Vec<PushRequest>,
    /// Records too large for any batch the collector accepts: dropped.
    pub too_large: usize,
}

/// Cuts `batch` into as few pieces as fit `limits`, in record order. A
/// record larger than `limits.max_bytes` on its own cannot be sent: it is left
/// out and counted.
pub fn to_fit(batch: PushRequest, limits: Limits, seqs: &Seqs) -> Split {
    let base = empty_batch_len(&batch.agent_id);
    let mut split = Split::default();
    let mut current: Vec<Record> = Vec::new();
    let mut bytes = base;
    for record in batch.records {
        let len = record_len(&record);
        if !limits.fits(1, base + len) {
            split.too_large += 1;
            continue;
        }
        if !current.is_empty() && !limits.fits(current.len() + 1, bytes + len) {
            split
                .pieces
                .push(piece(&batch.agent_id, seqs, std::mem::take(&mut current)));
            bytes = base;
        }
        bytes += len;
        current.push(record);
    }
    if !current.is_empty() {
        split.pieces.push(piece(&batch.agent_id, seqs, current));
    }
    split
}

/// Cuts `batch` (of two records or more) in two halves.
pub fn halves(mut batch: PushRequest, seqs: &Seqs) -> Split {
    let second = batch.records.split_off(batch.records.len() / 2);
    Split {
        pieces: vec![
            piece(&batch.agent_id, seqs, batch.records),
            piece(&batch.agent_id, seqs, second),
        ],
        too_large: 0,
    }
}

/// The pieces of a batch the collector refused as too large: cut to fit the
/// announced limits, or in halves when none were announced (or when the cut
/// would resend it whole, the limits being wrong).
pub fn after_refusal(batch: PushRequest, limits: Limits, seqs: &Seqs) -> Split {
    if limits.known() {
        let split = to_fit(batch.clone(), limits, seqs);
        if split.pieces.len() > 1 || split.pieces.is_empty() {
            return split;
        }
    }
    if batch.records.len() < 2 {
        return Split {
            pieces: Vec::new(),
            too_large: batch.records.len(),
        };
    }
    halves(batch, seqs)
}

fn piece(agent_id: &str, seqs: &Seqs, records: Vec<Record>) -> PushRequest {
    PushRequest {
        trace_context: Default::default(),
        agent_id: agent_id.to_owned(),
        seq: seqs.next(),
        records,
    }
}

/// What to do with the oldest unacknowledged batch when the collector ends
/// the stream with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Too large (`OutOfRange`: bytes, `ResourceExhausted`: records): resend
    /// it in pieces.
    Split,
    /// Refused for its content, which no resend fixes: drop it, counted.
    Drop,
    /// Another batch already holds its (agent, seq): resend it under a new
    /// sequence number.
    Renumber,
    /// Not about the batch (storage down, certificates): keep it, reconnect,
    /// resend.
    Retry,
}

pub fn reaction(code: Code, records: usize) -> Reaction {
    match code {
        Code::OutOfRange | Code::ResourceExhausted if records > 1 => Reaction::Split,
        Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument => Reaction::Drop,
        Code::AlreadyExists => Reaction::Renumber,
        _ => Reaction::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_proto::v1::{ProbeResult, record::Kind};
    use prost::Message;

    fn batch(seq: u64, sites: usize) -> PushRequest {
        PushRequest {
            trace_context: Default::default(),
            agent_id: "node-1".into(),
            seq,
            records: (0..sites)
                .map(|i| Record {
                    kind: Some(Kind::Probe(ProbeResult {
                        site: format!("site{i:04}.example"),
                        status: 200,
                        ..Default::default()
                    })),
                })
                .collect(),
        }
    }

    fn sites(pieces: &[PushRequest]) -> Vec<String> {
        pieces
            .iter()
            .flat_map(|p| &p.records)
            .map(|r| match &r.kind {
                Some(Kind::Probe(p)) => p.site.clone(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn limits_come_from_the_response_headers() {
        let mut m = MetadataMap::new();
        assert_eq!(Limits::from_metadata(&m), Limits::default());
        m.insert(MAX_MESSAGE_BYTES_HEADER, "20000".parse().expect("value"));
        m.insert(MAX_BATCH_RECORDS_HEADER, "nope".parse().expect("value"));
        assert_eq!(
            Limits::from_metadata(&m),
            Limits {
                max_bytes: Some(20000),
                max_records: None
            }
        );
        m.insert(MAX_BATCH_RECORDS_HEADER, "250".parse().expect("value"));
        assert_eq!(Limits::from_metadata(&m).max_records, Some(250));
    }

    #[test]
    fn to_fit_respects_bytes_and_records_and_keeps_order() {
        let seqs = Seqs::starting_at(1000);
        let original = batch(7, 100);
        let limits = Limits {
            max_bytes: Some(700),
            max_records: Some(15),
        };
        let split = to_fit(original.clone(), limits, &seqs);
        assert_eq!(split.too_large, 0);
        assert!(split.pieces.len() >= 7, "{}", split.pieces.len());
        for p in &split.pieces {
            assert!(
                p.encoded_len() <= 700 && p.records.len() <= 15,
                "{}",
                p.encoded_len()
            );
            assert_eq!(p.agent_id, "node-1");
        }
        assert_eq!(sites(&split.pieces), sites(&[original]));
        let seqs_used: Vec<u64> = split.pieces.iter().map(|p| p.seq).collect();
        assert_eq!(
            seqs_used,
            (1000..1000 + seqs_used.len() as u64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_record_too_large_for_any_batch_is_left_out() {
        let mut b = batch(1, 3);
        if let Some(Kind::Probe(p)) = &mut b.records[1].kind {
            p.location = "x".repeat(5000);
        }
        let limits = Limits {
            max_bytes: Some(1000),
            max_records: None,
        };
        let split = to_fit(b, limits, &Seqs::starting_at(1));
        assert_eq!(split.too_large, 1);
        assert_eq!(
            sites(&split.pieces),
            ["site0000.example", "site0002.example"]
        );
    }

    #[test]
    fn a_refused_batch_is_halved_without_limits_and_a_single_record_dropped() {
        let seqs = Seqs::starting_at(50);
        let split = after_refusal(batch(1, 5), Limits::default(), &seqs);
        let lens: Vec<usize> = split.pieces.iter().map(|p| p.records.len()).collect();
        assert_eq!(lens, [2, 3]);
        assert_eq!(split.pieces[0].seq, 50);
        let single = after_refusal(batch(2, 1), Limits::default(), &seqs);
        assert_eq!(
            single,
            Split {
                pieces: vec![],
                too_large: 1
            }
        );
        // Limits that the batch already fits (so they are wrong): halves.
        let loose = Limits {
            max_bytes: Some(1 << 20),
            max_records: None,
        };
        assert_eq!(after_refusal(batch(3, 4), loose, &seqs).pieces.len(), 2);
    }

    #[test]
    fn each_status_has_its_reaction() {
        use Reaction::*;
        assert_eq!(reaction(Code::OutOfRange, 2), Split);
        assert_eq!(reaction(Code::ResourceExhausted, 500), Split);
        assert_eq!(reaction(Code::OutOfRange, 1), Drop);
        assert_eq!(reaction(Code::ResourceExhausted, 1), Drop);
        assert_eq!(reaction(Code::InvalidArgument, 10), Drop);
        assert_eq!(reaction(Code::AlreadyExists, 10), Renumber);
        for code in [
            Code::Unavailable,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Ok,
        ] {
            assert_eq!(reaction(code, 10), Retry, "{code:?}");
        }
    }
}
