//! The spool file format, without I/O: one file holds one batch, or the
//! pieces a batch was split into, so that replacing the file replaces the
//! batch by its pieces in one rename.
//!
//! ```text
//! magic "LHSPOOL1" (8 bytes) | payload length u64 LE | CRC-32 of payload u32 LE | payload
//! payload = PushRequest, length-delimited, once per piece, in sending order
//! ```
//!
//! The length catches a truncated file, the CRC a torn or corrupted one.

use livehead_proto::v1::PushRequest;
use prost::Message;

const MAGIC: &[u8; 8] = b"LHSPOOL1";
const HEADER_LEN: usize = 8 + 8 + 4;

/// Why a spool file cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    #[error("not a spool file (bad magic)")]
    Magic,
    #[error("truncated: {got} bytes where the header promises {expected}")]
    Truncated { expected: u64, got: u64 },
    #[error("{extra} bytes after the payload")]
    TrailingBytes { extra: u64 },
    #[error("CRC mismatch: header {expected:#010x}, payload {got:#010x}")]
    Crc { expected: u32, got: u32 },
    #[error("payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("holds no batch")]
    Empty,
}

/// The file's bytes for `batches` (in sending order).
pub fn encode(batches: &[PushRequest]) -> Vec<u8> {
    let payload_len: usize = batches
        .iter()
        .map(|b| {
            let len = b.encoded_len();
            prost::encoding::encoded_len_varint(len as u64) + len
        })
        .sum();
    let mut payload = Vec::with_capacity(payload_len);
    for batch in batches {
        // Vec<u8> grows as needed, so encoding cannot run out of space.
        let _ = batch.encode_length_delimited(&mut payload);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The batches of a file's bytes, checked against the header.
pub fn decode(bytes: &[u8]) -> Result<Vec<PushRequest>, FormatError> {
    let payload = checked_payload(bytes)?;
    let mut rest = payload;
    let mut batches = Vec::new();
    while !rest.is_empty() {
        batches.push(PushRequest::decode_length_delimited(&mut rest)?);
    }
    if batches.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(batches)
}

fn checked_payload(bytes: &[u8]) -> Result<&[u8], FormatError> {
    let header = bytes.get(..HEADER_LEN).ok_or(FormatError::Truncated {
        expected: HEADER_LEN as u64,
        got: bytes.len() as u64,
    })?;
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err(FormatError::Magic);
    }
    let (len, crc) = rest.split_at(8);
    let len = u64::from_le_bytes(len.try_into().map_err(|_| FormatError::Magic)?);
    let expected = u32::from_le_bytes(crc.try_into().map_err(|_| FormatError::Magic)?);
    let payload = &bytes[HEADER_LEN..];
    let got = payload.len() as u64;
    if got < len {
        return Err(FormatError::Truncated {
            expected: HEADER_LEN as u64 + len,
            got: bytes.len() as u64,
        });
    }
    if got > len {
        return Err(FormatError::TrailingBytes { extra: got - len });
    }
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(FormatError::Crc {
            expected,
            got: actual,
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_proto::v1::{ProbeResult, Record, record::Kind};

    fn batch(seq: u64, sites: &[&str]) -> PushRequest {
        PushRequest {
            trace_context: Default::default(),
            agent_id: "n1".into(),
            seq,
            records: sites
                .iter()
                .map(|s| Record {
                    kind: Some(Kind::Probe(ProbeResult {
                        site: (*s).into(),
                        status: 200,
                        ..Default::default()
                    })),
                })
                .collect(),
        }
    }

    #[test]
    fn pieces_come_back_in_order() {
        let pieces = [
            batch(7, &["a.example", "b.example"]),
            batch(9, &["c.example"]),
        ];
        assert_eq!(decode(&encode(&pieces)), Ok(pieces.to_vec()));
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(&[batch(1, &["a.example", "b.example"])]);
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Err(FormatError::Truncated { .. })),
                "cut at {cut}: {:?}",
                decode(&bytes[..cut])
            );
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut bytes = encode(&[batch(1, &["a.example"])]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(decode(&bytes), Err(FormatError::Crc { .. })));
    }

    #[test]
    fn garbage_magic_extra_bytes_and_an_empty_payload_are_refused() {
        let mut bytes = encode(&[batch(1, &["a.example"])]);
        let mut other = bytes.clone();
        other[0] = b'X';
        assert_eq!(decode(&other), Err(FormatError::Magic));
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(FormatError::TrailingBytes { extra: 1 }));
        assert_eq!(decode(&encode(&[])), Err(FormatError::Empty));
    }

    #[test]
    fn a_valid_crc_over_garbage_does_not_decode() {
        let payload = [0xff_u8; 5];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(decode(&bytes), Err(FormatError::Decode(_))));
    }
}
