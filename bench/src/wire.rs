//! Decoding of tickcast data messages (`shared/protocol.md` §1), written from the
//! protocol text, independently of the engine's encoder.
//!
//! Binary batches (`format=binary`) are decoded by [`decode_batch`] into owned
//! [`Record`]s, or walked without allocation by [`for_each_header`] /
//! [`for_each_record`]. JSON batches (`format=json`) are decoded by
//! [`decode_json_batch`] into the same [`Record`]s, prices and quantities scaled
//! to integers.
//!
//! All three binary entry points share one validating walk: the batch version,
//! `record_count` against the bytes present, every record's `length` field, the
//! body size of every known kind, and the snapshot flag against the kind.
//! Reserved fields are not checked, so that a later minor revision may use them.

mod json;

pub use json::{decode_json_batch, parse_decimal};

/// Size of the batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 8;
/// Size of the record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// The only batch version this decoder understands.
pub const VERSION: u8 = 1;

/// Record kind: book snapshot (replaces the client's book for the symbol).
pub const KIND_SNAPSHOT: u8 = 1;
/// Record kind: book delta.
pub const KIND_DELTA: u8 = 2;
/// Record kind: trade.
pub const KIND_TRADE: u8 = 3;
/// Record kind: status.
pub const KIND_STATUS: u8 = 4;

/// Record flag bit 0: set on a snapshot, which replaces the client's book.
pub const FLAG_SNAPSHOT: u8 = 1;
/// Record flag bit 1 (protocol 1.1 §3.2): a book record's body holds the checksum of the
/// client's book after the record, in the `u32` at body offset 4.
pub const FLAG_CHECKSUM: u8 = 2;

/// Status code: the feed is stale.
pub const STATUS_FEED_STALE: u16 = 1;
/// Status code: the feed resumed.
pub const STATUS_FEED_RESUMED: u16 = 2;
/// Status code: slow consumer warning.
pub const STATUS_SLOW_CONSUMER: u16 = 3;

/// Taker side of a trade: buy.
pub const SIDE_BUY: u8 = 0;
/// Taker side of a trade: sell.
pub const SIDE_SELL: u8 = 1;

/// Size of the fixed part of a book body (counts and reserved), before the levels.
const BOOK_FIXED_LEN: usize = 8;
/// Size of one price level (price and quantity).
const LEVEL_LEN: usize = 16;
/// Size of a trade body.
const TRADE_BODY_LEN: usize = 32;
/// Size of a status body.
const STATUS_BODY_LEN: usize = 8;

/// The 32-byte header every record starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    /// Record kind: [`KIND_SNAPSHOT`], [`KIND_DELTA`], [`KIND_TRADE`], [`KIND_STATUS`] or a
    /// kind this decoder does not know.
    pub kind: u8,
    /// Record flags; bit 0 ([`FLAG_SNAPSHOT`]) marks a snapshot.
    pub flags: u8,
    /// Symbol id from the subscribe reply.
    pub sid: u32,
    /// Sequence number within the stream (symbol, channel and, for books, depth).
    pub seq: u64,
    /// Time the exchange stamped the event, ns since the Unix epoch.
    pub exch_ts: u64,
    /// Time tickcast read the event off the feed, ns since the Unix epoch.
    pub recv_ts: u64,
}

impl RecordHeader {
    /// True for a book snapshot (kind 1; the decoders ensure flag bit 0 is set on it).
    pub fn is_snapshot(&self) -> bool {
        self.kind == KIND_SNAPSHOT
    }

    /// True for a book record, snapshot or delta.
    pub fn is_book(&self) -> bool {
        self.kind == KIND_SNAPSHOT || self.kind == KIND_DELTA
    }
}

/// The decoded body of a record. Prices and quantities are integers scaled by
/// `10^px_decimals` and `10^qty_decimals` of the symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Book snapshot or delta: levels as `(price, qty)`, bids and asks best first.
    /// In a delta, qty 0 removes the level.
    Book {
        /// Bid levels, best (highest) first.
        bids: Vec<(i64, i64)>,
        /// Ask levels, best (lowest) first.
        asks: Vec<(i64, i64)>,
        /// The book checksum the record carries (protocol 1.1 §3.2), if any: binary flag bit 1
        /// and the body's `u32` at offset 4, or the JSON field `crc`.
        crc: Option<u32>,
    },
    /// A trade.
    Trade {
        /// Trade price (scaled).
        px: i64,
        /// Trade quantity (scaled).
        qty: i64,
        /// Exchange trade id.
        trade_id: u64,
        /// Taker side: [`SIDE_BUY`] or [`SIDE_SELL`].
        taker_side: u8,
    },
    /// A status record.
    Status {
        /// Status code, e.g. [`STATUS_FEED_STALE`].
        code: u16,
    },
    /// A record of a kind this decoder does not know; skipped by its `length`.
    Unknown,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record header.
    pub header: RecordHeader,
    /// The record body.
    pub body: Body,
}

/// Why a batch could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The message is shorter than the batch header.
    #[error("batch of {len} bytes is shorter than the {BATCH_HEADER_LEN}-byte batch header")]
    ShortBatch {
        /// Message length.
        len: usize,
    },
    /// The batch version is not [`VERSION`].
    #[error("unsupported batch version {version} (expected {VERSION})")]
    Version {
        /// Version found.
        version: u8,
    },
    /// Fewer bytes remain than a record header needs.
    #[error(
        "record {index} of {count}: {remaining} bytes left, a record header needs {RECORD_HEADER_LEN}"
    )]
    TruncatedRecord {
        /// Index of the record in the batch.
        index: usize,
        /// `record_count` of the batch.
        count: usize,
        /// Bytes left in the message.
        remaining: usize,
    },
    /// A record's `length` field is below the header size or beyond the message.
    #[error(
        "record {index}: length {length} is invalid ({remaining} bytes left, minimum {RECORD_HEADER_LEN})"
    )]
    RecordLength {
        /// Index of the record in the batch.
        index: usize,
        /// The `length` field.
        length: usize,
        /// Bytes left in the message at the record.
        remaining: usize,
    },
    /// A known kind's `length` does not match the size its body needs.
    #[error("record {index} (kind {kind}): length {length}, body needs {expected}")]
    BodyLength {
        /// Index of the record in the batch.
        index: usize,
        /// Record kind.
        kind: u8,
        /// The `length` field.
        length: usize,
        /// The length the body requires.
        expected: usize,
    },
    /// Snapshot flag and kind disagree (a snapshot is kind 1 with flag bit 0, a delta kind 2 without).
    #[error(
        "record {index}: kind {kind} with flags {flags:#04x} (snapshot flag must match kind 1)"
    )]
    SnapshotFlag {
        /// Index of the record in the batch.
        index: usize,
        /// Record kind.
        kind: u8,
        /// Record flags.
        flags: u8,
    },
    /// Bytes remain after `record_count` records.
    #[error("{extra} bytes after the {count} records the batch header announces")]
    TrailingBytes {
        /// `record_count` of the batch.
        count: usize,
        /// Bytes left over.
        extra: usize,
    },
    /// A trade's taker side is neither 0 (buy) nor 1 (sell).
    #[error("record {index}: taker side {side} is neither 0 (buy) nor 1 (sell)")]
    TakerSide {
        /// Index of the record in the batch.
        index: usize,
        /// The value found.
        side: u8,
    },
    /// A JSON batch is not valid JSON or not an array of records.
    #[error("invalid JSON batch: {0}")]
    Json(String),
    /// A JSON record lacks a field its kind needs, or has a field of the wrong type.
    #[error("JSON record {index}: missing or invalid field `{field}`")]
    JsonField {
        /// Index of the record in the batch.
        index: usize,
        /// Field name.
        field: &'static str,
    },
    /// A JSON record names a symbol whose decimals the caller does not know.
    #[error("JSON record {index}: unknown symbol {symbol:?}")]
    UnknownSymbol {
        /// Index of the record in the batch.
        index: usize,
        /// The symbol.
        symbol: String,
    },
    /// A decimal string is malformed, has more significant fractional digits than
    /// the symbol's decimals, or overflows `i64` once scaled.
    #[error("invalid decimal {value:?} for {decimals} decimals")]
    Decimal {
        /// The string.
        value: String,
        /// Decimals it was scaled by.
        decimals: u8,
    },
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

#[inline]
fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_le_bytes(s))
}

/// Reads the batch header: returns `record_count`.
fn batch_header(buf: &[u8]) -> Result<usize, WireError> {
    let short = || WireError::ShortBatch { len: buf.len() };
    if buf.len() < BATCH_HEADER_LEN {
        return Err(short());
    }
    let version = *buf.first().ok_or_else(short)?;
    if version != VERSION {
        return Err(WireError::Version { version });
    }
    Ok(usize::from(u16_at(buf, 2).ok_or_else(short)?))
}

/// The body length a known kind needs, from the body's own fields, or `None` for
/// an unknown kind. A book body too short to hold its counts needs at least
/// the fixed part.
fn expected_body_len(kind: u8, body: &[u8]) -> Option<usize> {
    match kind {
        KIND_SNAPSHOT | KIND_DELTA => {
            let (Some(bids), Some(asks)) = (u16_at(body, 0), u16_at(body, 2)) else {
                return Some(BOOK_FIXED_LEN);
            };
            Some(BOOK_FIXED_LEN + LEVEL_LEN * (usize::from(bids) + usize::from(asks)))
        }
        KIND_TRADE => Some(TRADE_BODY_LEN),
        KIND_STATUS => Some(STATUS_BODY_LEN),
        _ => None,
    }
}

/// The validating walk shared by all binary entry points. Calls `f` with the
/// record's index, header and body bytes (everything after the 32-byte header,
/// up to `length`). On error, `f` has already been called for the records
/// before the bad one.
fn walk<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(usize, &RecordHeader, &'a [u8]) -> Result<(), WireError>,
) -> Result<usize, WireError> {
    let count = batch_header(buf)?;
    let mut rest = buf.get(BATCH_HEADER_LEN..).unwrap_or_default();
    for index in 0..count {
        let truncated = WireError::TruncatedRecord {
            index,
            count,
            remaining: rest.len(),
        };
        if rest.len() < RECORD_HEADER_LEN {
            return Err(truncated);
        }
        let length = usize::from(u16_at(rest, 0).ok_or(truncated)?);
        if length < RECORD_HEADER_LEN || length > rest.len() {
            return Err(WireError::RecordLength {
                index,
                length,
                remaining: rest.len(),
            });
        }
        let Some((rec, tail)) = rest.split_at_checked(length) else {
            return Err(WireError::RecordLength {
                index,
                length,
                remaining: rest.len(),
            });
        };
        let header = parse_header(rec).ok_or(WireError::RecordLength {
            index,
            length,
            remaining: rest.len(),
        })?;
        let body = rec.get(RECORD_HEADER_LEN..).unwrap_or_default();
        if header.is_book() && ((header.flags & FLAG_SNAPSHOT != 0) != header.is_snapshot()) {
            return Err(WireError::SnapshotFlag {
                index,
                kind: header.kind,
                flags: header.flags,
            });
        }
        if let Some(expected) = expected_body_len(header.kind, body) {
            if body.len() != expected {
                return Err(WireError::BodyLength {
                    index,
                    kind: header.kind,
                    length,
                    expected: expected + RECORD_HEADER_LEN,
                });
            }
        }
        f(index, &header, body)?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            count,
            extra: rest.len(),
        });
    }
    Ok(count)
}

fn parse_header(rec: &[u8]) -> Option<RecordHeader> {
    Some(RecordHeader {
        kind: *rec.get(2)?,
        flags: *rec.get(3)?,
        sid: u32_at(rec, 4)?,
        seq: u64_at(rec, 8)?,
        exch_ts: u64_at(rec, 16)?,
        recv_ts: u64_at(rec, 24)?,
    })
}

/// Walks a binary batch without allocating, calling `f` with every record's
/// header (unknown kinds included; check [`RecordHeader::kind`]). Validates the
/// whole batch as [`decode_batch`] does, except the trade side; returns the
/// number of records.
///
/// On error, `f` has already seen the records before the bad one.
pub fn for_each_header(buf: &[u8], mut f: impl FnMut(&RecordHeader)) -> Result<usize, WireError> {
    walk(buf, |_, header, _| {
        f(header);
        Ok(())
    })
}

/// The sid of each record of a binary batch, read without validation (a
/// malformed batch just ends the walk early): for touching per-symbol state
/// ahead of [`for_each_header`], so that its cache misses overlap.
pub fn record_sids(buf: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let mut at = BATCH_HEADER_LEN;
    std::iter::from_fn(move || {
        let rec = buf.get(at..at + RECORD_HEADER_LEN)?;
        let length = usize::from(u16_at(rec, 0)?);
        if length < RECORD_HEADER_LEN {
            return None;
        }
        at += length;
        u32_at(rec, 4)
    })
}

/// Like [`for_each_header`], but also hands `f` the record's body bytes (after the
/// 32-byte header, up to `length`), so that a caller can decode the few bodies
/// it needs with [`decode_body`]. Body sizes of known kinds are already checked.
pub fn for_each_record<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(&RecordHeader, &'a [u8]),
) -> Result<usize, WireError> {
    walk(buf, |_, header, body| {
        f(header, body);
        Ok(())
    })
}

/// Decodes one record body of the given kind (`body` as handed out by
/// [`for_each_record`]). Unknown kinds give [`Body::Unknown`].
/// A book body's checksum is read only when `flags` (the header's) has [`FLAG_CHECKSUM`].
pub fn decode_body(kind: u8, flags: u8, body: &[u8]) -> Result<Body, WireError> {
    decode_body_at(0, kind, flags, body)
}

fn decode_body_at(index: usize, kind: u8, flags: u8, body: &[u8]) -> Result<Body, WireError> {
    let bad_len = |expected: usize| WireError::BodyLength {
        index,
        kind,
        length: body.len() + RECORD_HEADER_LEN,
        expected: expected + RECORD_HEADER_LEN,
    };
    if let Some(expected) = expected_body_len(kind, body) {
        if body.len() != expected {
            return Err(bad_len(expected));
        }
    }
    match kind {
        KIND_SNAPSHOT | KIND_DELTA => {
            let bid_count = usize::from(u16_at(body, 0).ok_or(bad_len(BOOK_FIXED_LEN))?);
            let levels = body.get(BOOK_FIXED_LEN..).unwrap_or_default();
            let mut bids = Vec::with_capacity(bid_count);
            let mut asks = Vec::with_capacity((levels.len() / LEVEL_LEN).saturating_sub(bid_count));
            for (i, level) in levels.chunks_exact(LEVEL_LEN).enumerate() {
                let (Some(px), Some(qty)) = (i64_at(level, 0), i64_at(level, 8)) else {
                    return Err(bad_len(body.len() + LEVEL_LEN));
                };
                if i < bid_count {
                    bids.push((px, qty));
                } else {
                    asks.push((px, qty));
                }
            }
            let crc = if flags & FLAG_CHECKSUM != 0 {
                Some(u32_at(body, 4).ok_or(bad_len(BOOK_FIXED_LEN))?)
            } else {
                None
            };
            Ok(Body::Book { bids, asks, crc })
        }
        KIND_TRADE => {
            let missing = || bad_len(TRADE_BODY_LEN);
            let taker_side = *body.get(24).ok_or_else(missing)?;
            if taker_side > SIDE_SELL {
                return Err(WireError::TakerSide {
                    index,
                    side: taker_side,
                });
            }
            Ok(Body::Trade {
                px: i64_at(body, 0).ok_or_else(missing)?,
                qty: i64_at(body, 8).ok_or_else(missing)?,
                trade_id: u64_at(body, 16).ok_or_else(missing)?,
                taker_side,
            })
        }
        KIND_STATUS => Ok(Body::Status {
            code: u16_at(body, 0).ok_or(bad_len(STATUS_BODY_LEN))?,
        }),
        _ => Ok(Body::Unknown),
    }
}

/// Decodes a whole binary batch into owned records. Records of unknown kinds are
/// kept, with [`Body::Unknown`], after being skipped by their `length`.
///
/// Validates: version 1; `record_count` records present and no bytes after them;
/// every `length` at least 32 and within the message; the exact body size of
/// known kinds (book: 8 + 16 × levels, trade: 32, status: 8); snapshot flag set
/// exactly on kind 1 among book records; trade side 0 or 1.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Record>, WireError> {
    let mut out = Vec::with_capacity(batch_header(buf)?);
    walk(buf, |index, header, body| {
        out.push(Record {
            header: *header,
            body: decode_body_at(index, header.kind, header.flags, body)?,
        });
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Record header per protocol.md: u16 length, u8 kind, u8 flags, u32 sid,
    /// u64 seq, u64 exch_ts, u64 recv_ts.
    fn header(len: usize, kind: u8, flags: u8, sid: u32, seq: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
        b.push(kind);
        b.push(flags);
        b.extend_from_slice(&sid.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&(1_000 + seq).to_le_bytes());
        b.extend_from_slice(&(2_000 + seq).to_le_bytes());
        b
    }

    fn book(kind: u8, sid: u32, seq: u64, bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Vec<u8> {
        let flags = if kind == KIND_SNAPSHOT {
            FLAG_SNAPSHOT
        } else {
            0
        };
        let mut b = header(
            32 + 8 + 16 * (bids.len() + asks.len()),
            kind,
            flags,
            sid,
            seq,
        );
        b.extend_from_slice(&(bids.len() as u16).to_le_bytes());
        b.extend_from_slice(&(asks.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for (px, qty) in bids.iter().chain(asks) {
            b.extend_from_slice(&px.to_le_bytes());
            b.extend_from_slice(&qty.to_le_bytes());
        }
        b
    }

    fn trade(sid: u32, seq: u64, px: i64, qty: i64, id: u64, side: u8) -> Vec<u8> {
        let mut b = header(64, KIND_TRADE, 0, sid, seq);
        b.extend_from_slice(&px.to_le_bytes());
        b.extend_from_slice(&qty.to_le_bytes());
        b.extend_from_slice(&id.to_le_bytes());
        b.push(side);
        b.extend_from_slice(&[0; 7]);
        b
    }

    fn status(sid: u32, code: u16) -> Vec<u8> {
        let mut b = header(40, KIND_STATUS, 0, sid, 0);
        b.extend_from_slice(&code.to_le_bytes());
        b.extend_from_slice(&[0; 6]);
        b
    }

    fn batch(records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![1, 0];
        b.extend_from_slice(&(records.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for r in records {
            b.extend_from_slice(r);
        }
        b
    }

    fn hdr(kind: u8, flags: u8, sid: u32, seq: u64) -> RecordHeader {
        RecordHeader {
            kind,
            flags,
            sid,
            seq,
            exch_ts: 1_000 + seq,
            recv_ts: 2_000 + seq,
        }
    }

    #[test]
    fn record_sids_walk_by_length_and_stop_at_garbage() {
        let mut buf = batch(&[
            book(KIND_DELTA, 7, 101, &[(6_500_010, 0)], &[]),
            trade(9, 5, 6_500_020, 10_000, 42, SIDE_SELL),
            status(3, STATUS_FEED_STALE),
        ]);
        assert_eq!(record_sids(&buf).collect::<Vec<_>>(), [7, 9, 3]);
        buf.extend_from_slice(&[0; 40]); // a record of length 0 ends the walk
        assert_eq!(record_sids(&buf).count(), 3);
        assert_eq!(record_sids(&buf[..20]).count(), 0);
    }

    #[test]
    fn decodes_every_kind() {
        let buf = batch(&[
            book(
                KIND_SNAPSHOT,
                7,
                100,
                &[(6_500_010, 1_500_000), (6_500_000, 2)],
                &[(6_500_020, 250_000)],
            ),
            book(KIND_DELTA, 7, 101, &[(6_500_010, 0)], &[]),
            trade(7, 5, 6_500_020, 10_000, 42, SIDE_SELL),
            status(7, STATUS_FEED_STALE),
        ]);
        let records = decode_batch(&buf);
        assert_eq!(
            records,
            Ok(vec![
                Record {
                    header: hdr(KIND_SNAPSHOT, FLAG_SNAPSHOT, 7, 100),
                    body: Body::Book {
                        bids: vec![(6_500_010, 1_500_000), (6_500_000, 2)],
                        asks: vec![(6_500_020, 250_000)],
                        crc: None,
                    },
                },
                Record {
                    header: hdr(KIND_DELTA, 0, 7, 101),
                    body: Body::Book {
                        bids: vec![(6_500_010, 0)],
                        asks: vec![],
                        crc: None,
                    },
                },
                Record {
                    header: hdr(KIND_TRADE, 0, 7, 5),
                    body: Body::Trade {
                        px: 6_500_020,
                        qty: 10_000,
                        trade_id: 42,
                        taker_side: SIDE_SELL
                    },
                },
                Record {
                    header: hdr(KIND_STATUS, 0, 7, 0),
                    body: Body::Status {
                        code: STATUS_FEED_STALE
                    },
                },
            ])
        );
        let mut seen = Vec::new();
        assert_eq!(for_each_header(&buf, |h| seen.push(*h)), Ok(4));
        let decoded: Vec<RecordHeader> = decode_batch(&buf)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.header)
            .collect();
        assert_eq!(seen, decoded);
    }

    #[test]
    fn empty_batch_and_negative_prices() {
        assert_eq!(decode_batch(&batch(&[])), Ok(vec![]));
        let buf = batch(&[book(KIND_DELTA, 1, 2, &[], &[(-5, 3)])]);
        let recs = decode_batch(&buf).unwrap_or_default();
        assert_eq!(recs.len(), 1);
        assert_eq!(
            recs[0].body,
            Body::Book {
                bids: vec![],
                asks: vec![(-5, 3)],
                crc: None,
            }
        );
    }

    #[test]
    fn unknown_kind_is_skipped_by_length() {
        let mut unknown = header(32 + 20, 9, 0xff, 3, 77);
        unknown.extend_from_slice(&[0xAB; 20]);
        let buf = batch(&[unknown, trade(3, 1, 10, 20, 30, SIDE_BUY)]);
        let recs = decode_batch(&buf).unwrap_or_default();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].header.kind, 9);
        assert_eq!(recs[0].header.seq, 77);
        assert_eq!(recs[0].body, Body::Unknown);
        assert_eq!(
            recs[1].body,
            Body::Trade {
                px: 10,
                qty: 20,
                trade_id: 30,
                taker_side: SIDE_BUY
            }
        );
        let mut kinds = Vec::new();
        assert_eq!(for_each_header(&buf, |h| kinds.push(h.kind)), Ok(2));
        assert_eq!(kinds, vec![9, KIND_TRADE]);
    }

    #[test]
    fn rejects_bad_batch_headers() {
        assert_eq!(decode_batch(&[]), Err(WireError::ShortBatch { len: 0 }));
        assert_eq!(
            decode_batch(&[1, 0, 0, 0, 0, 0, 0]),
            Err(WireError::ShortBatch { len: 7 })
        );
        let mut v2 = batch(&[status(1, 1)]);
        v2[0] = 2;
        assert_eq!(decode_batch(&v2), Err(WireError::Version { version: 2 }));
        assert_eq!(
            for_each_header(&v2, |_| {}),
            Err(WireError::Version { version: 2 })
        );
    }

    #[test]
    fn rejects_record_count_beyond_bytes_and_trailing_bytes() {
        let mut short = batch(&[status(1, 1)]);
        short[2] = 2; // record_count 2, one record present
        assert_eq!(
            decode_batch(&short),
            Err(WireError::TruncatedRecord {
                index: 1,
                count: 2,
                remaining: 0
            })
        );
        let mut long = batch(&[status(1, 1)]);
        long.extend_from_slice(&[0; 3]);
        assert_eq!(
            decode_batch(&long),
            Err(WireError::TrailingBytes { count: 1, extra: 3 })
        );
        let mut partial = batch(&[status(1, 1)]);
        partial.extend_from_slice(&[0; 31]);
        partial[2] = 2;
        assert_eq!(
            decode_batch(&partial),
            Err(WireError::TruncatedRecord {
                index: 1,
                count: 2,
                remaining: 31
            })
        );
    }

    #[test]
    fn rejects_bad_length_fields() {
        // Cut inside the last record: its length points past the end.
        let full = batch(&[status(1, 1), trade(1, 1, 1, 1, 1, 0)]);
        let cut = &full[..full.len() - 5];
        assert_eq!(
            decode_batch(cut),
            Err(WireError::RecordLength {
                index: 1,
                length: 64,
                remaining: 59
            })
        );
        // The callback saw the record before the bad one.
        let mut seen = 0;
        assert!(for_each_header(cut, |_| seen += 1).is_err());
        assert_eq!(seen, 1);
        // length below the header size.
        let mut tiny = batch(&[status(1, 1)]);
        tiny[8..10].copy_from_slice(&16u16.to_le_bytes());
        assert_eq!(
            decode_batch(&tiny),
            Err(WireError::RecordLength {
                index: 0,
                length: 16,
                remaining: 40
            })
        );
        // Book counts that disagree with length.
        let mut bad_book = book(KIND_DELTA, 1, 1, &[(1, 1)], &[]);
        bad_book[32..34].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            decode_batch(&batch(&[bad_book])),
            Err(WireError::BodyLength {
                index: 0,
                kind: KIND_DELTA,
                length: 56,
                expected: 72
            })
        );
        // A status record with a longer length than its kind allows.
        let mut long_status = status(1, 1);
        long_status[0..2].copy_from_slice(&44u16.to_le_bytes());
        long_status.extend_from_slice(&[0; 4]);
        assert_eq!(
            for_each_header(&batch(&[long_status]), |_| {}),
            Err(WireError::BodyLength {
                index: 0,
                kind: KIND_STATUS,
                length: 44,
                expected: 40
            })
        );
        // A book record too short for its counts.
        let short_book = header(36, KIND_DELTA, 0, 1, 1)
            .into_iter()
            .chain([0u8; 4])
            .collect::<Vec<u8>>();
        assert!(matches!(
            decode_batch(&batch(&[short_book])),
            Err(WireError::BodyLength { index: 0, .. })
        ));
    }

    #[test]
    fn rejects_snapshot_flag_that_disagrees_with_kind() {
        let mut delta_flagged = book(KIND_DELTA, 1, 1, &[], &[]);
        delta_flagged[3] = FLAG_SNAPSHOT;
        assert_eq!(
            decode_batch(&batch(&[delta_flagged])),
            Err(WireError::SnapshotFlag {
                index: 0,
                kind: KIND_DELTA,
                flags: 1
            })
        );
        let mut snapshot_unflagged = book(KIND_SNAPSHOT, 1, 1, &[], &[]);
        snapshot_unflagged[3] = 0x02;
        assert_eq!(
            for_each_header(&batch(&[snapshot_unflagged]), |_| {}),
            Err(WireError::SnapshotFlag {
                index: 0,
                kind: KIND_SNAPSHOT,
                flags: 2
            })
        );
    }

    #[test]
    fn rejects_bad_taker_side_when_decoding_bodies() {
        let buf = batch(&[trade(1, 1, 1, 1, 1, 2)]);
        assert_eq!(
            decode_batch(&buf),
            Err(WireError::TakerSide { index: 0, side: 2 })
        );
        assert_eq!(for_each_header(&buf, |_| {}), Ok(1));
    }

    #[test]
    fn for_each_record_hands_out_bodies() {
        let buf = batch(&[
            status(4, STATUS_SLOW_CONSUMER),
            trade(4, 9, 1, 2, 3, SIDE_BUY),
        ]);
        let mut bodies = Vec::new();
        let n = for_each_record(&buf, |h, body| {
            bodies.push(decode_body(h.kind, h.flags, body))
        });
        assert_eq!(n, Ok(2));
        assert_eq!(
            bodies,
            vec![
                Ok(Body::Status {
                    code: STATUS_SLOW_CONSUMER
                }),
                Ok(Body::Trade {
                    px: 1,
                    qty: 2,
                    trade_id: 3,
                    taker_side: SIDE_BUY
                }),
            ]
        );
        assert!(decode_body(KIND_TRADE, 0, &[0; 8]).is_err());
        assert_eq!(decode_body(200, 0, &[1, 2, 3]), Ok(Body::Unknown));
    }
}
