//! Cutting the records one connection is owed from one ring drain into WebSocket messages.
//!
//! Binary: each message is `frame header + batch header` (one inline chunk) followed by the
//! shared records. JSON: each record is encoded with a leading `,`; a message is
//! `frame header + "["`, the first record without its comma, the others as they are, then `"]"`.
//! Either way no record byte is copied per subscriber.

use bytes::Bytes;

use super::Format;
use super::outbuf::{OutBuf, Overflow};
use crate::proto::frame::{MAX_HEADER_LEN, OpCode, encode_header};
use crate::wire::{BATCH_HEADER_LEN, batch_header};

/// Limits on one data message.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Records per message (at most `u16::MAX`, the batch header's count field).
    pub max_records: usize,
    /// Payload bytes per message; a single larger record still goes alone.
    pub max_payload: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_records: usize::from(u16::MAX),
            max_payload: 256 * 1024,
        }
    }
}

/// Splits `records` into message groups: yields `(start, end, payload_len)`.
fn groups(
    format: Format,
    records: &[Bytes],
    limits: BatchLimits,
) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let max_records = limits.max_records.clamp(1, usize::from(u16::MAX));
    let base = match format {
        Format::Binary => BATCH_HEADER_LEN,
        // "[" + "]" and the first record's comma dropped.
        Format::Json => 1,
    };
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= records.len() {
            return None;
        }
        let mut end = start;
        let mut payload = base;
        while end < records.len() && end - start < max_records {
            let n = records[end].len();
            if end > start && payload + n > limits.max_payload {
                break;
            }
            payload += n;
            end += 1;
        }
        let group = (start, end, payload);
        start = end;
        Some(group)
    })
}

/// Wire size of [`append_batch`]'s messages for `records`.
pub fn batch_wire_len(format: Format, records: &[Bytes], limits: BatchLimits) -> usize {
    groups(format, records, limits)
        .map(|(_, _, payload)| payload + frame_header_len(payload))
        .sum()
}

fn frame_header_len(payload: usize) -> usize {
    match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends `records` to `out` as as few messages as `limits` allow; returns the number of
/// messages, or refuses all of them when they would pass the buffer's bound.
///
/// # Errors
/// [`Overflow`] when the batch does not fit; nothing was queued.
pub fn append_batch(
    out: &mut OutBuf,
    format: Format,
    records: &[Bytes],
    limits: BatchLimits,
) -> Result<usize, Overflow> {
    if records.is_empty() {
        return Ok(0);
    }
    out.reserve(batch_wire_len(format, records, limits))?;
    let mut messages = 0;
    for (start, end, payload) in groups(format, records, limits) {
        let mut head = [0u8; MAX_HEADER_LEN + BATCH_HEADER_LEN];
        let mut frame = [0u8; MAX_HEADER_LEN];
        let group = &records[start..end];
        match format {
            Format::Binary => {
                let h = encode_header(true, OpCode::Binary, payload as u64, &mut frame);
                head[..h].copy_from_slice(&frame[..h]);
                // `groups` caps a group at u16::MAX records.
                let count = u16::try_from(group.len()).unwrap_or(u16::MAX);
                head[h..h + BATCH_HEADER_LEN].copy_from_slice(&batch_header(count));
                out.push_small(&head[..h + BATCH_HEADER_LEN], false);
                for (i, r) in group.iter().enumerate() {
                    out.push_shared(r.clone(), i + 1 == group.len());
                }
            }
            Format::Json => {
                let h = encode_header(true, OpCode::Text, payload as u64, &mut frame);
                head[..h].copy_from_slice(&frame[..h]);
                head[h] = b'[';
                out.push_small(&head[..=h], false);
                for (i, r) in group.iter().enumerate() {
                    if i == 0 {
                        out.push_shared(r.slice(1..), false);
                    } else {
                        out.push_shared(r.clone(), false);
                    }
                }
                out.push_small(b"]", true);
            }
        }
        messages += 1;
    }
    Ok(messages)
}

/// A whole unfragmented server text message (control replies).
pub fn text_message(payload: &[u8]) -> Bytes {
    let mut frame = [0u8; MAX_HEADER_LEN];
    let h = encode_header(true, OpCode::Text, payload.len() as u64, &mut frame);
    let mut v = Vec::with_capacity(h + payload.len());
    v.extend_from_slice(&frame[..h]);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;

    fn flatten(out: &mut OutBuf) -> Vec<u8> {
        let mut v = Vec::new();
        while !out.is_empty() {
            let mut s = [IoSlice::new(&[]); 16];
            let n = out.io_slices(&mut s);
            let mut w = 0;
            for x in &s[..n] {
                v.extend_from_slice(x);
                w += x.len();
            }
            out.advance(w);
        }
        v
    }

    /// Minimal server-frame reader for the tests: (opcode, payload) pairs.
    fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let op = b[0] & 0x0f;
            assert_eq!(b[0] & 0x80, 0x80, "FIN");
            let (len, h) = match b[1] {
                126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (usize::from(n), 2),
            };
            v.push((op, b[h..h + len].to_vec()));
            b = &b[h + len..];
        }
        v
    }

    #[test]
    fn binary_batch_is_one_message_with_count() {
        let recs = vec![
            Bytes::from_static(&[1u8; 40]),
            Bytes::from_static(&[2u8; 50]),
        ];
        let mut out = OutBuf::new(1 << 20);
        let expect = batch_wire_len(Format::Binary, &recs, BatchLimits::default());
        assert_eq!(
            append_batch(&mut out, Format::Binary, &recs, BatchLimits::default()),
            Ok(1)
        );
        assert_eq!(out.len(), expect);
        let f = frames(&flatten(&mut out));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 2);
        let p = &f[0].1;
        assert_eq!(p.len(), 8 + 90);
        assert_eq!(p[0], 1);
        assert_eq!(u16::from_le_bytes([p[2], p[3]]), 2);
    }

    #[test]
    fn limits_cut_batches() {
        let recs: Vec<Bytes> = (0..5).map(|_| Bytes::from_static(&[7u8; 100])).collect();
        let limits = BatchLimits {
            max_records: 2,
            max_payload: 1 << 20,
        };
        let mut out = OutBuf::new(1 << 20);
        assert_eq!(append_batch(&mut out, Format::Binary, &recs, limits), Ok(3));
        let f = frames(&flatten(&mut out));
        let counts: Vec<u16> = f
            .iter()
            .map(|(_, p)| u16::from_le_bytes([p[2], p[3]]))
            .collect();
        assert_eq!(counts, vec![2, 2, 1]);
        let limits = BatchLimits {
            max_records: 100,
            max_payload: 250,
        };
        assert_eq!(append_batch(&mut out, Format::Binary, &recs, limits), Ok(3));
    }

    #[test]
    fn json_batch_is_an_array() {
        let recs = vec![
            Bytes::from_static(b",{\"a\":1}"),
            Bytes::from_static(b",{\"b\":2}"),
        ];
        let mut out = OutBuf::new(1 << 20);
        assert_eq!(
            append_batch(&mut out, Format::Json, &recs, BatchLimits::default()),
            Ok(1)
        );
        let f = frames(&flatten(&mut out));
        assert_eq!(f[0].0, 1);
        assert_eq!(f[0].1, b"[{\"a\":1},{\"b\":2}]");
    }

    #[test]
    fn overflow_queues_nothing() {
        let recs = vec![Bytes::from_static(&[1u8; 100])];
        let mut out = OutBuf::new(50);
        assert!(append_batch(&mut out, Format::Binary, &recs, BatchLimits::default()).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn text_message_frames_payload() {
        let m = text_message(&[b'x'; 300]);
        let f = frames(&m);
        assert_eq!(f, vec![(1, vec![b'x'; 300])]);
    }
}
