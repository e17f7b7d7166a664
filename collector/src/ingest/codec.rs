//! The `Push` stream's codec: tonic's Protobuf codec, except that a batch is
//! checked before it is decoded into memory. tonic bounds a message's bytes
//! (`limits.max_message_bytes`, before and while decompressing); this decoder
//! then counts the batch's records on the wire bytes and refuses a batch over
//! `limits.max_batch_records` without allocating them (eight million empty
//! records fit in 16 MB of wire bytes and took a gigabyte once decoded), and
//! turns a message that does not decode into `InvalidArgument` (tonic's own
//! codec says `Internal`, which an agent cannot tell from a server fault).

use bytes::Buf;
use livehead_proto::v1::{PushRequest, PushResponse};
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// `PushRequest.records`' field number.
const RECORDS_FIELD: u32 = 3;

/// Encodes acks as tonic does; decodes batches within the record limit.
#[derive(Debug, Clone)]
pub struct PushCodec {
    max_records: usize,
}

impl PushCodec {
    pub fn new(max_records: usize) -> Self {
        Self { max_records }
    }
}

impl Codec for PushCodec {
    type Encode = PushResponse;
    type Decode = PushRequest;
    type Encoder = ProstEncoder<PushResponse>;
    type Decoder = PushDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PushDecoder {
            max_records: self.max_records,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PushDecoder {
    max_records: usize,
}

impl Decoder for PushDecoder {
    type Item = PushRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<PushRequest>, Status> {
        // tonic hands over the whole message in one contiguous buffer.
        if buf.chunk().len() == buf.remaining() {
            check_record_count(buf.chunk(), self.max_records)?;
        }
        PushRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("undecodable batch: {e}")))
    }
}

/// Counts the records of an encoded `PushRequest` without decoding them:
/// `ResourceExhausted` past `max`, `InvalidArgument` when the bytes are not a
/// message.
pub fn check_record_count(mut bytes: &[u8], max: usize) -> Result<usize, Status> {
    let undecodable =
        |e: prost::DecodeError| Status::invalid_argument(format!("undecodable batch: {e}"));
    let mut records = 0;
    while bytes.has_remaining() {
        let (tag, wire_type) = decode_key(&mut bytes).map_err(undecodable)?;
        if tag == RECORDS_FIELD && wire_type == WireType::LengthDelimited {
            records += 1;
            if records > max {
                return Err(Status::resource_exhausted(format!(
                    "batch holds more than {max} records (limits.max_batch_records)"
                )));
            }
        }
        skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).map_err(undecodable)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_proto::v1::{ProbeResult, Record, record::Kind};
    use tonic::Code;

    fn encoded(records: usize) -> Vec<u8> {
        let probe = Record {
            kind: Some(Kind::Probe(ProbeResult {
                site: "example.com".into(),
                status: 200,
                ..Default::default()
            })),
        };
        PushRequest {
            trace_context: Default::default(),
            agent_id: "node-1".into(),
            seq: 7,
            records: vec![probe; records],
        }
        .encode_to_vec()
    }

    #[test]
    fn records_are_counted_on_the_wire() {
        assert_eq!(check_record_count(&encoded(0), 3).ok(), Some(0));
        assert_eq!(check_record_count(&encoded(3), 3).ok(), Some(3));
        let over = check_record_count(&encoded(4), 3).expect_err("over the limit");
        assert_eq!(over.code(), Code::ResourceExhausted);
        assert!(over.message().contains("more than 3 records"), "{over}");
    }

    #[test]
    fn empty_records_count_before_any_allocation() {
        // The attack: records of zero bytes each.
        let attack = b"\x1a\x00".repeat(1_000_000);
        let err = check_record_count(&attack, 10_000).expect_err("refused");
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn bytes_that_are_not_a_batch_are_invalid() {
        let mut truncated = encoded(2);
        truncated.truncate(truncated.len() - 3);
        for bad in [truncated, vec![0xff; 11], b"\x0a\x05ab".to_vec()] {
            let err = check_record_count(&bad, 100).expect_err("undecodable");
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        }
    }
}
