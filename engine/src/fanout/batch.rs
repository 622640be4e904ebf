//! Cutting the records one connection is owed from one ring drain into WebSocket messages.
//!
//! Binary: each message is `frame header + batch header` (one inline chunk) followed by the
//! shared records. JSON: each record is encoded with a leading `,`; a message is
//! `frame header + "["`, the first record without its comma, the others as they are, then `"]"`.
//! Either way no record byte is copied per subscriber.
//!
//! Plain connections are served by [`append_owed`]: their records are spans of the drain's
//! [`DrainArena`], so a message is one inline chunk plus one shared slice per span (typically
//! one), whatever the number of records. [`append_batch`] takes a list of records (the fallback
//! of permessage-deflate connections).

use bytes::Bytes;

use super::Format;
use super::arena::{DrainArena, Owed, Piece};
use super::outbuf::{OutBuf, Overflow};
pub use crate::config::BatchLimits;
use crate::proto::frame::{MAX_HEADER_LEN, OpCode, encode_header};
use crate::wire::{BATCH_HEADER_LEN, batch_header};

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
        let group = &records[start..end];
        push_records(out, format, group.len(), payload, group.iter().cloned());
        messages += 1;
    }
    Ok(messages)
}

/// Appends what `owed` holds (spans of the sealed `arena`, in ring order) to `out` as as few
/// messages as `limits` allow; the bytes are exactly those [`append_batch`] would queue for the
/// same records. Each message is one inline chunk (frame header, then the batch header or `[`)
/// followed by one shared slice per span (cut at record boundaries when a message must end
/// inside a span). Returns the number of messages, or refuses all of them when they would pass
/// the buffer's bound.
///
/// # Errors
/// [`Overflow`] when the batch does not fit; nothing was queued.
pub fn append_owed(
    out: &mut OutBuf,
    format: Format,
    arena: &DrainArena,
    owed: &Owed,
    limits: BatchLimits,
) -> Result<usize, Overflow> {
    append_owed_framed(out, format, Framing::WebSocket, arena, owed, limits)
}

/// How a message is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A WebSocket frame.
    WebSocket,
    /// `/stream` (protocol §3.4): one HTTP chunk holding one frame
    /// `{u32 length LE, u8 type = 1, payload}` (binary only).
    HttpStream,
}

/// [`append_owed`] for a `/stream` connection (protocol §3.4): the same binary batches, each
/// as one HTTP chunk holding the frame `{u32 length LE, u8 type = 1, batch}`. The records are
/// the same shared slices of the arena as a WebSocket subscriber's.
///
/// # Errors
/// [`Overflow`] when the batch does not fit; nothing was queued.
pub fn append_owed_stream(
    out: &mut OutBuf,
    arena: &DrainArena,
    owed: &Owed,
    limits: BatchLimits,
) -> Result<usize, Overflow> {
    append_owed_framed(
        out,
        Format::Binary,
        Framing::HttpStream,
        arena,
        owed,
        limits,
    )
}

fn append_owed_framed(
    out: &mut OutBuf,
    format: Format,
    framing: Framing,
    arena: &DrainArena,
    owed: &Owed,
    limits: BatchLimits,
) -> Result<usize, Overflow> {
    if owed.is_empty() {
        return Ok(0);
    }
    let max_records = limits.max_records.clamp(1, usize::from(u16::MAX));
    let payload = base_len(format) + owed.bytes();
    if owed.records() <= max_records && (payload <= limits.max_payload || owed.records() == 1) {
        // The usual case: everything in one message.
        out.reserve(payload + framing_len(framing, payload))?;
        push_message(
            out,
            format,
            framing,
            arena,
            owed.records(),
            payload,
            owed.pieces(),
        );
        return Ok(1);
    }
    // Several messages: cut the spans at record boundaries, then queue.
    let mut pieces: Vec<Piece> = Vec::new();
    let mut messages: Vec<(usize, usize, usize)> = Vec::new();
    let base = base_len(format);
    let (mut count, mut payload) = (0, base);
    for piece in owed.pieces() {
        let mut rest = piece.clone();
        while !rest.is_empty() {
            let room = limits.max_payload.saturating_sub(payload);
            let (head, n, tail) = match rest {
                Piece::Span(span) => {
                    let (h, n, t) = arena.split(span, room, max_records - count, count == 0);
                    (Piece::Span(h), n, Piece::Span(t))
                }
                Piece::Own(b) if b.len() <= room || count == 0 => {
                    (Piece::Own(b), 1, Piece::Own(Bytes::new()))
                }
                Piece::Own(b) => (Piece::Own(Bytes::new()), 0, Piece::Own(b)),
            };
            if n > 0 {
                count += n;
                payload += head.len();
                pieces.push(head);
            }
            rest = tail;
            if !rest.is_empty() || count == max_records {
                if count > 0 {
                    messages.push((count, payload, pieces.len()));
                }
                (count, payload) = (0, base);
            }
        }
    }
    if count > 0 {
        messages.push((count, payload, pieces.len()));
    }
    let wire = messages
        .iter()
        .map(|&(_, p, _)| p + framing_len(framing, p))
        .sum();
    out.reserve(wire)?;
    let mut from = 0;
    for &(count, payload, to) in &messages {
        push_message(
            out,
            format,
            framing,
            arena,
            count,
            payload,
            pieces.get(from..to).unwrap_or_default(),
        );
        from = to;
    }
    Ok(messages.len())
}

/// Payload bytes of a message besides its records.
fn base_len(format: Format) -> usize {
    match format {
        Format::Binary => BATCH_HEADER_LEN,
        // "[" + "]" and the first record's comma dropped.
        Format::Json => 1,
    }
}

/// Bytes a message of `payload` bytes costs on the wire besides the payload.
fn framing_len(framing: Framing, payload: usize) -> usize {
    match framing {
        Framing::WebSocket => frame_header_len(payload),
        // Chunk size line (hex), frame header, chunk trailer.
        Framing::HttpStream => hex_len(STREAM_FRAME_HEADER + payload) + 2 + STREAM_FRAME_HEADER + 2,
    }
}

/// `/stream` frame header: u32 length, u8 type.
const STREAM_FRAME_HEADER: usize = 5;
/// `/stream` frame type of a binary batch.
const STREAM_BATCH: u8 = 1;

fn hex_len(n: usize) -> usize {
    (usize::BITS as usize - n.leading_zeros() as usize)
        .div_ceil(4)
        .max(1)
}

/// Queues one message of `count` records (`payload` bytes) made of `spans`.
fn push_message(
    out: &mut OutBuf,
    format: Format,
    framing: Framing,
    arena: &DrainArena,
    count: usize,
    payload: usize,
    spans: &[Piece],
) {
    let bytes = |p: &Piece| match p {
        Piece::Span(s) => arena.slice(*s),
        Piece::Own(b) => b.clone(),
    };
    if framing == Framing::HttpStream {
        push_stream_records(out, count, payload, spans.iter().map(bytes));
    } else {
        push_records(out, format, count, payload, spans.iter().map(bytes));
    }
}

/// [`push_records`] for `/stream` (binary): the chunk size line, frame header and batch header
/// as one inline chunk (at most 23 bytes), the pieces, then the chunk's CRLF.
fn push_stream_records(
    out: &mut OutBuf,
    count: usize,
    payload: usize,
    pieces: impl ExactSizeIterator<Item = Bytes>,
) {
    let mut head = [0u8; 32];
    let frame_len = STREAM_FRAME_HEADER + payload;
    let digits = hex_len(frame_len);
    for (i, h) in head.iter_mut().take(digits).enumerate() {
        let nibble = (frame_len >> (4 * (digits - 1 - i))) & 0xf;
        *h = b"0123456789abcdef"[nibble];
    }
    let mut n = digits;
    head[n..n + 2].copy_from_slice(b"\r\n");
    n += 2;
    head[n..n + 4].copy_from_slice(&(payload as u32).to_le_bytes());
    head[n + 4] = STREAM_BATCH;
    n += STREAM_FRAME_HEADER;
    let count = u16::try_from(count).unwrap_or(u16::MAX);
    head[n..n + BATCH_HEADER_LEN].copy_from_slice(&batch_header(count));
    n += BATCH_HEADER_LEN;
    out.push_small(&head[..n], false);
    for b in pieces {
        out.push_shared(b, false);
    }
    out.push_small(b"\r\n", true);
}

/// Queues one message of `count` records (`payload` bytes) whose record bytes are `pieces`
/// (each a run of whole records, shared, not copied): the frame and batch headers (or `[`) as
/// one inline chunk, then the pieces.
fn push_records(
    out: &mut OutBuf,
    format: Format,
    count: usize,
    payload: usize,
    pieces: impl ExactSizeIterator<Item = Bytes>,
) {
    let mut head = [0u8; MAX_HEADER_LEN + BATCH_HEADER_LEN];
    let mut frame = [0u8; MAX_HEADER_LEN];
    let last = pieces.len().saturating_sub(1);
    match format {
        Format::Binary => {
            let h = encode_header(true, OpCode::Binary, payload as u64, &mut frame);
            head[..h].copy_from_slice(&frame[..h]);
            // Callers cap a message at u16::MAX records.
            let count = u16::try_from(count).unwrap_or(u16::MAX);
            head[h..h + BATCH_HEADER_LEN].copy_from_slice(&batch_header(count));
            out.push_small(&head[..h + BATCH_HEADER_LEN], pieces.len() == 0);
            for (i, b) in pieces.enumerate() {
                out.push_shared(b, i == last);
            }
        }
        Format::Json => {
            let h = encode_header(true, OpCode::Text, payload as u64, &mut frame);
            head[..h].copy_from_slice(&frame[..h]);
            head[h] = b'[';
            out.push_small(&head[..=h], false);
            for (i, b) in pieces.enumerate() {
                // The first record's leading comma is dropped.
                out.push_shared(if i == 0 { b.slice(1.min(b.len())..) } else { b }, false);
            }
            out.push_small(b"]", true);
        }
    }
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

    /// A drain of `n` records of varied sizes (JSON ones with their leading comma); `who(i)`
    /// says whether the connection gets record `i`. Returns the arena, the connection's
    /// spans and the same records as a list.
    fn drain(
        format: Format,
        n: usize,
        who: impl Fn(usize) -> bool,
    ) -> (DrainArena, Owed, Vec<Bytes>) {
        let mut arena = DrainArena::new();
        let mut owed = Owed::default();
        let mut list = Vec::new();
        for i in 0..n {
            let len = 20 + (i * 37) % 90;
            let r: Vec<u8> = match format {
                Format::Binary => (0..len).map(|k| (i + k) as u8).collect(),
                Format::Json => {
                    let body = "x".repeat(len);
                    format!(",{{\"i\":{i},\"p\":\"{body}\"}}").into_bytes()
                }
            };
            if i % 9 == 4 {
                // The connection's own record (a snapshot): not in the arena.
                if who(i) {
                    owed.add_own(Bytes::from(r.clone()));
                    list.push(Bytes::from(r));
                }
                continue;
            }
            let span = arena.push(&r);
            if who(i) {
                owed.add(span, 1);
                list.push(Bytes::from(r));
            }
        }
        arena.seal();
        owed.close();
        (arena, owed, list)
    }

    fn owed_bytes(
        format: Format,
        arena: &DrainArena,
        owed: &Owed,
        limits: BatchLimits,
        write: usize,
    ) -> (usize, Vec<u8>) {
        let mut out = OutBuf::new(1 << 30);
        let n = append_owed(&mut out, format, arena, owed, limits).unwrap();
        let queued = out.len();
        // Written in pieces of `write` bytes, as partial writes would.
        let mut v = Vec::new();
        while !out.is_empty() {
            let mut s = [IoSlice::new(&[]); 3];
            let k = out.io_slices(&mut s);
            let mut left = write;
            let mut w = 0;
            for x in &s[..k] {
                let t = x.len().min(left);
                v.extend_from_slice(&x[..t]);
                left -= t;
                w += t;
            }
            out.advance(w);
        }
        assert_eq!(queued, v.len());
        (n, v)
    }

    #[test]
    fn owed_spans_give_the_same_bytes_as_the_record_list() {
        let limit_sets = [
            BatchLimits::default(),
            BatchLimits {
                max_records: 3,
                max_payload: 1 << 20,
            },
            BatchLimits {
                max_records: 1000,
                max_payload: 300,
            },
            BatchLimits {
                max_records: 1,
                max_payload: 10,
            },
            BatchLimits {
                max_records: 7,
                max_payload: 500,
            },
        ];
        let patterns: [&dyn Fn(usize) -> bool; 4] =
            [&|_| true, &|i| i % 3 != 1, &|i| (i / 4) % 2 == 0, &|i| {
                i == 5
            }];
        for format in [Format::Binary, Format::Json] {
            for who in patterns {
                for limits in limit_sets {
                    let (arena, owed, list) = drain(format, 40, who);
                    let mut out = OutBuf::new(1 << 30);
                    let expect_n = append_batch(&mut out, format, &list, limits).unwrap();
                    let expect = flatten(&mut out);
                    for write in [1, 7, 1 << 20] {
                        let (n, got) = owed_bytes(format, &arena, &owed, limits, write);
                        assert_eq!(n, expect_n, "{format:?} {limits:?}");
                        assert!(got == expect, "{format:?} {limits:?} write {write}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_subscriber_of_everything_owes_one_span_and_two_chunks() {
        let (arena, owed, list) = drain(Format::Binary, 4, |_| true);
        assert_eq!(owed.pieces().len(), 1);
        assert_eq!(owed.records(), 4);
        let mut out = OutBuf::new(1 << 30);
        assert_eq!(
            append_owed(
                &mut out,
                Format::Binary,
                &arena,
                &owed,
                BatchLimits::default()
            ),
            Ok(1)
        );
        let mut s = [IoSlice::new(&[]); 8];
        assert_eq!(out.io_slices(&mut s), 2);
        let f = frames(&flatten(&mut out));
        assert_eq!(f.len(), 1);
        assert_eq!(u16::from_le_bytes([f[0].1[2], f[0].1[3]]), 4);
        let body: Vec<u8> = list.iter().flat_map(|r| r.iter().copied()).collect();
        assert_eq!(&f[0].1[8..], &body[..]);
    }

    #[test]
    fn json_owed_is_an_array_with_commas_and_splits_at_max_payload() {
        let (arena, owed, _) = drain(Format::Json, 30, |i| i % 2 == 0);
        let limits = BatchLimits {
            max_records: 1000,
            max_payload: 400,
        };
        let mut out = OutBuf::new(1 << 30);
        let n = append_owed(&mut out, Format::Json, &arena, &owed, limits).unwrap();
        assert!(n > 1);
        let f = frames(&flatten(&mut out));
        assert_eq!(f.len(), n);
        let mut seen = Vec::new();
        for (op, p) in &f {
            assert_eq!(*op, 1);
            assert!(p.len() <= 400);
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            for r in v.as_array().unwrap() {
                seen.push(r["i"].as_u64().unwrap());
            }
        }
        // Every record once, in ring order.
        assert_eq!(seen, (0..30).step_by(2).collect::<Vec<u64>>());
    }

    #[test]
    fn owed_overflow_queues_nothing() {
        let (arena, owed, _) = drain(Format::Binary, 10, |_| true);
        let mut out = OutBuf::new(100);
        assert!(
            append_owed(
                &mut out,
                Format::Binary,
                &arena,
                &owed,
                BatchLimits::default()
            )
            .is_err()
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_record_larger_than_max_payload_goes_alone() {
        let (arena, owed, list) = drain(Format::Binary, 6, |_| true);
        let limits = BatchLimits {
            max_records: 100,
            max_payload: 16,
        };
        let mut out = OutBuf::new(1 << 30);
        assert_eq!(
            append_owed(&mut out, Format::Binary, &arena, &owed, limits),
            Ok(6)
        );
        let f = frames(&flatten(&mut out));
        for (r, (_, p)) in list.iter().zip(&f) {
            assert_eq!(&p[8..], &r[..]);
        }
    }

    #[test]
    fn stream_frames_carry_the_same_batches_as_websocket_messages() {
        for limits in [
            BatchLimits::default(),
            BatchLimits {
                max_records: 3,
                max_payload: 1 << 20,
            },
            BatchLimits {
                max_records: 1000,
                max_payload: 300,
            },
        ] {
            let (arena, owed, _) = drain(Format::Binary, 40, |i| i % 3 != 1);
            let mut ws = OutBuf::new(1 << 30);
            let n = append_owed(&mut ws, Format::Binary, &arena, &owed, limits).unwrap();
            let want: Vec<Vec<u8>> = frames(&flatten(&mut ws)).into_iter().map(|f| f.1).collect();
            let mut st = OutBuf::new(1 << 30);
            assert_eq!(append_owed_stream(&mut st, &arena, &owed, limits), Ok(n));
            let queued = st.len();
            let raw = flatten(&mut st);
            assert_eq!(raw.len(), queued);
            // Each HTTP chunk holds exactly one frame {u32 len, u8 1, batch}.
            let mut got = Vec::new();
            let mut rest = &raw[..];
            while !rest.is_empty() {
                let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
                let chunk = &rest[nl + 2..nl + 2 + size];
                assert_eq!(&rest[nl + 2 + size..nl + 4 + size], b"\r\n");
                let len = u32::from_le_bytes(chunk[..4].try_into().unwrap()) as usize;
                assert_eq!((len + 5, chunk[4]), (size, 1));
                got.push(chunk[5..].to_vec());
                rest = &rest[nl + 4 + size..];
            }
            assert_eq!(got, want, "{limits:?}");
            // The bound is checked on the framed size: one byte less refuses all of it.
            let mut tight = OutBuf::new(queued - 1);
            assert!(append_owed_stream(&mut tight, &arena, &owed, limits).is_err());
            assert!(tight.is_empty());
        }
    }

    #[test]
    fn text_message_frames_payload() {
        let m = text_message(&[b'x'; 300]);
        let f = frames(&m);
        assert_eq!(f, vec![(1, vec![b'x'; 300])]);
    }
}
