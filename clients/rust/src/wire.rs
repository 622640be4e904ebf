//! Decoding of tickcast data messages: binary batches (`format=binary`) and JSON batches
//! (`format=json`), protocol §1.2 and §1.4, with the 1.1 book checksum (§3.2).
//!
//! Both decoders hand out [`Record`]s that borrow from their input, so that a binary batch is
//! walked without allocating: [`decode_binary`] validates the whole batch first (lengths, counts,
//! the snapshot flag against the kind) and then yields records; [`JsonBatch::parse`] owns the
//! parsed JSON and lends records of the same shape. Prices and quantities are integers scaled by
//! `10^px_decimals` and `10^qty_decimals` (see [`parse_decimal`] and [`format_decimal`]).
//!
//! ```
//! use tickcast_client::wire::{decode_binary, Body};
//!
//! // A batch with one snapshot of sid 7 at seq 100: one bid (10.00 x 1.5) and no ask.
//! let mut batch = vec![1, 0, 1, 0, 0, 0, 0, 0];
//! batch.extend_from_slice(&(32u16 + 8 + 16).to_le_bytes());
//! batch.extend_from_slice(&[1, 1]); // kind snapshot, flags: replaces the book
//! batch.extend_from_slice(&7u32.to_le_bytes());
//! batch.extend_from_slice(&100u64.to_le_bytes());
//! batch.extend_from_slice(&[0; 16]); // timestamps
//! batch.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // 1 bid, 0 asks, no checksum
//! batch.extend_from_slice(&1000i64.to_le_bytes());
//! batch.extend_from_slice(&1_500_000i64.to_le_bytes());
//!
//! let records: Vec<_> = decode_binary(&batch)?.collect();
//! assert_eq!(records.len(), 1);
//! let Body::Book(book) = &records[0].body else { panic!("a book record") };
//! assert_eq!(book.bids().collect::<Vec<_>>(), vec![(1000, 1_500_000)]);
//! assert_eq!(book.checksum(), None);
//! # Ok::<(), tickcast_client::wire::DecodeError>(())
//! ```

use serde::Deserialize;

/// Size of the batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 8;
/// Size of the record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// The batch version this decoder understands.
pub const VERSION: u8 = 1;
/// Record flag bit 0: the snapshot replaces the client's book.
pub const FLAG_SNAPSHOT: u8 = 1;
/// Record flag bit 1 (protocol 1.1): the book body's reserved `u32` holds the checksum.
pub const FLAG_CHECKSUM: u8 = 2;

const BOOK_FIXED_LEN: usize = 8;
const LEVEL_LEN: usize = 16;
const TRADE_BODY_LEN: usize = 32;
const STATUS_BODY_LEN: usize = 8;

/// A price level: `(price, qty)`, both scaled integers.
pub type Level = (i64, i64);

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A book snapshot: replaces the client's book of the symbol.
    Snapshot,
    /// A book delta: changes levels, qty 0 removes one.
    Delta,
    /// A trade.
    Trade,
    /// A status record (not part of any stream; its seq is 0).
    Status,
    /// A kind this decoder does not know (a later protocol revision); skipped.
    Unknown(u8),
}

impl Kind {
    fn from_u8(k: u8) -> Self {
        match k {
            1 => Self::Snapshot,
            2 => Self::Delta,
            3 => Self::Trade,
            4 => Self::Status,
            other => Self::Unknown(other),
        }
    }
}

/// The header fields every record has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Record kind.
    pub kind: Kind,
    /// Record flags ([`FLAG_SNAPSHOT`], [`FLAG_CHECKSUM`]).
    pub flags: u8,
    /// Symbol id from the subscribe reply.
    pub sid: u32,
    /// Sequence number in the record's stream.
    pub seq: u64,
    /// Time the exchange stamped the event, ns since the Unix epoch.
    pub exch_ts: u64,
    /// Time tickcast read the event off the feed, ns since the Unix epoch.
    pub recv_ts: u64,
}

/// Levels of one side of a book record, best first; iterate to read them.
#[derive(Debug, Clone)]
pub struct Levels<'a>(LevelsRepr<'a>);

#[derive(Debug, Clone)]
enum LevelsRepr<'a> {
    /// `{i64 price, i64 qty}` little-endian pairs, validated to a multiple of 16 bytes.
    Bytes(&'a [u8]),
    Slice(std::slice::Iter<'a, Level>),
}

impl Iterator for Levels<'_> {
    type Item = Level;

    #[inline]
    fn next(&mut self) -> Option<Level> {
        match &mut self.0 {
            LevelsRepr::Bytes(b) => {
                let (level, rest) = b.split_first_chunk::<LEVEL_LEN>()?;
                *b = rest;
                let (px, qty) = level.split_at(8);
                Some((i64_le(px), i64_le(qty)))
            }
            LevelsRepr::Slice(it) => it.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            LevelsRepr::Bytes(b) => b.len() / LEVEL_LEN,
            LevelsRepr::Slice(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Levels<'_> {}

/// The body of a book record (snapshot or delta).
#[derive(Debug, Clone)]
pub struct BookBody<'a> {
    bids: Levels<'a>,
    asks: Levels<'a>,
    checksum: Option<u32>,
}

impl<'a> BookBody<'a> {
    /// Bid levels, best (highest) first.
    pub fn bids(&self) -> Levels<'a> {
        self.bids.clone()
    }

    /// Ask levels, best (lowest) first.
    pub fn asks(&self) -> Levels<'a> {
        self.asks.clone()
    }

    /// The checksum of the book after this record (protocol 1.1, §3.2), when the server sent
    /// one; servers before 1.1 send none.
    pub fn checksum(&self) -> Option<u32> {
        self.checksum
    }
}

/// Taker side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The taker bought.
    Buy,
    /// The taker sold.
    Sell,
}

/// The body of a trade record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TradeBody {
    /// Trade price (scaled).
    pub price: i64,
    /// Trade quantity (scaled).
    pub qty: i64,
    /// Exchange trade id.
    pub trade_id: u64,
    /// Taker side.
    pub side: Side,
}

/// The body of a record.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Body<'a> {
    /// Snapshot or delta levels.
    Book(BookBody<'a>),
    /// A trade.
    Trade(TradeBody),
    /// A status code (1 feed stale, 2 feed resumed, 3 slow consumer warning).
    Status(u16),
    /// A record of a kind this decoder does not know.
    Unknown,
}

/// One decoded record, borrowing from its batch.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The header.
    pub header: Header,
    /// The body.
    pub body: Body<'a>,
}

/// Why a batch could not be decoded. A client that gets one cannot trust the connection and
/// should reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is shorter than the batch header.
    #[error("batch of {0} bytes is shorter than its header")]
    ShortBatch(usize),
    /// The batch version is not [`VERSION`].
    #[error("unsupported batch version {0}")]
    Version(u8),
    /// A record's header or `length` field does not fit in the bytes left.
    #[error("record {index}: length or header does not fit the batch")]
    RecordLength {
        /// Index of the record in the batch.
        index: usize,
    },
    /// A known kind's `length` does not match the size its body needs.
    #[error("record {index}: body of {len} bytes, its kind needs {expected}")]
    BodyLength {
        /// Index of the record in the batch.
        index: usize,
        /// Body bytes present.
        len: usize,
        /// Body bytes the kind needs.
        expected: usize,
    },
    /// The snapshot flag and the kind disagree.
    #[error("record {index}: snapshot flag does not match kind")]
    SnapshotFlag {
        /// Index of the record in the batch.
        index: usize,
    },
    /// A trade's taker side is neither 0 nor 1.
    #[error("record {index}: taker side {side} is neither buy nor sell")]
    Side {
        /// Index of the record in the batch.
        index: usize,
        /// The value found.
        side: u8,
    },
    /// Bytes remain after the records the batch header announces.
    #[error("{0} bytes after the last record")]
    TrailingBytes(usize),
    /// A JSON batch is not an array of records of the documented shape.
    #[error("invalid JSON batch: {0}")]
    Json(String),
    /// A decimal string is malformed or does not fit the symbol's decimals.
    #[error("invalid decimal {value:?} for {decimals} decimals")]
    Decimal {
        /// The string.
        value: String,
        /// The decimals it was scaled by.
        decimals: u8,
    },
}

#[inline]
fn i64_le(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_le_bytes(a)
}

#[inline]
fn u64_le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[inline]
fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Validates a binary batch and returns an iterator over its records.
///
/// The whole batch is checked before the first record is handed out, so that a caller never
/// applies half of a malformed message. Records of unknown kinds are skipped by their `length`
/// and reported as [`Body::Unknown`]; reserved fields are not checked, except that the book
/// body's reserved `u32` is read as the checksum when flag bit 1 is set.
///
/// # Errors
/// A [`DecodeError`] describing the first problem found.
pub fn decode_binary(buf: &[u8]) -> Result<BinaryRecords<'_>, DecodeError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(DecodeError::ShortBatch(buf.len()));
    }
    if buf[0] != VERSION {
        return Err(DecodeError::Version(buf[0]));
    }
    let count = usize::from(u16_le(&buf[2..]));
    let mut rest = &buf[BATCH_HEADER_LEN..];
    for index in 0..count {
        if rest.len() < RECORD_HEADER_LEN {
            return Err(DecodeError::RecordLength { index });
        }
        let length = usize::from(u16_le(rest));
        if length < RECORD_HEADER_LEN || length > rest.len() {
            return Err(DecodeError::RecordLength { index });
        }
        let (rec, tail) = rest.split_at(length);
        let kind = Kind::from_u8(rec[2]);
        let flags = rec[3];
        let body = &rec[RECORD_HEADER_LEN..];
        let expected = match kind {
            Kind::Snapshot | Kind::Delta => {
                if (flags & FLAG_SNAPSHOT != 0) != (kind == Kind::Snapshot) {
                    return Err(DecodeError::SnapshotFlag { index });
                }
                if body.len() < BOOK_FIXED_LEN {
                    BOOK_FIXED_LEN
                } else {
                    let n = usize::from(u16_le(body)) + usize::from(u16_le(&body[2..]));
                    BOOK_FIXED_LEN + LEVEL_LEN * n
                }
            }
            Kind::Trade => {
                if body.len() == TRADE_BODY_LEN && body[24] > 1 {
                    return Err(DecodeError::Side {
                        index,
                        side: body[24],
                    });
                }
                TRADE_BODY_LEN
            }
            Kind::Status => STATUS_BODY_LEN,
            Kind::Unknown(_) => body.len(),
        };
        if body.len() != expected {
            return Err(DecodeError::BodyLength {
                index,
                len: body.len(),
                expected,
            });
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(BinaryRecords {
        rest: &buf[BATCH_HEADER_LEN..],
        left: count,
    })
}

/// The records of a validated binary batch; see [`decode_binary`].
#[derive(Debug, Clone)]
pub struct BinaryRecords<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for BinaryRecords<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Lengths and body sizes were validated by `decode_binary`.
        let length = usize::from(u16_le(self.rest));
        let (rec, tail) = self.rest.split_at(length);
        self.rest = tail;
        let header = Header {
            kind: Kind::from_u8(rec[2]),
            flags: rec[3],
            sid: u32_le(&rec[4..]),
            seq: u64_le(&rec[8..]),
            exch_ts: u64_le(&rec[16..]),
            recv_ts: u64_le(&rec[24..]),
        };
        let b = &rec[RECORD_HEADER_LEN..];
        let body = match header.kind {
            Kind::Snapshot | Kind::Delta => {
                let split = BOOK_FIXED_LEN + LEVEL_LEN * usize::from(u16_le(b));
                Body::Book(BookBody {
                    bids: Levels(LevelsRepr::Bytes(&b[BOOK_FIXED_LEN..split])),
                    asks: Levels(LevelsRepr::Bytes(&b[split..])),
                    checksum: (header.flags & FLAG_CHECKSUM != 0).then(|| u32_le(&b[4..])),
                })
            }
            Kind::Trade => Body::Trade(TradeBody {
                price: i64_le(b),
                qty: i64_le(&b[8..]),
                trade_id: u64_le(&b[16..]),
                side: if b[24] == 0 { Side::Buy } else { Side::Sell },
            }),
            Kind::Status => Body::Status(u16_le(b)),
            Kind::Unknown(_) => Body::Unknown,
        };
        Some(Record { header, body })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Parses a decimal string into an integer scaled by `10^decimals`, as the server prints them
/// (`"65000.10"` with 2 decimals is `6500010`).
///
/// # Errors
/// [`DecodeError::Decimal`] when the string is not a decimal number, has more fraction digits
/// than `decimals` (other than trailing zeros), or does not fit an `i64` once scaled.
pub fn parse_decimal(s: &str, decimals: u8) -> Result<i64, DecodeError> {
    let bad = || DecodeError::Decimal {
        value: s.to_owned(),
        decimals,
    };
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) || (digits.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > usize::from(decimals) {
        return Err(bad());
    }
    let mut v: i64 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(c - b'0')))
            .ok_or_else(bad)?;
    }
    for _ in frac.len()..usize::from(decimals) {
        v = v.checked_mul(10).ok_or_else(bad)?;
    }
    Ok(if neg { -v } else { v })
}

/// Formats a scaled integer with exactly `decimals` fraction digits, as the server's
/// `format=json` prints it (`6500010` with 2 decimals is `"65000.10"`; no point when
/// `decimals` is 0).
pub fn format_decimal(value: i64, decimals: u8) -> String {
    let mag = value.unsigned_abs().to_string();
    let d = usize::from(decimals);
    let sign = if value < 0 { "-" } else { "" };
    if d == 0 {
        return format!("{sign}{mag}");
    }
    let padded = format!("{mag:0>width$}", width = d + 1);
    let (int, frac) = padded.split_at(padded.len() - d);
    format!("{sign}{int}.{frac}")
}

#[derive(Deserialize)]
struct JsonRecord {
    kind: String,
    symbol: String,
    #[serde(default)]
    sid: u32,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    exch_ts: u64,
    #[serde(default)]
    recv_ts: u64,
    #[serde(default)]
    bids: Vec<(String, String)>,
    #[serde(default)]
    asks: Vec<(String, String)>,
    #[serde(default)]
    crc: Option<u32>,
    #[serde(default)]
    price: Option<String>,
    #[serde(default)]
    qty: Option<String>,
    #[serde(default)]
    trade_id: u64,
    #[serde(default)]
    side: Option<String>,
    #[serde(default)]
    code: u16,
}

#[derive(Debug, Clone)]
struct OwnedRecord {
    header: Header,
    symbol: String,
    bids: Vec<Level>,
    asks: Vec<Level>,
    crc: Option<u32>,
    trade: Option<TradeBody>,
    code: u16,
}

/// A parsed JSON batch (`format=json`): owns its records and lends them as [`Record`]s.
#[derive(Debug, Clone)]
pub struct JsonBatch {
    records: Vec<OwnedRecord>,
}

impl JsonBatch {
    /// Parses a JSON batch; `decimals` gives `(px_decimals, qty_decimals)` of a symbol name.
    /// A book or trade record of a symbol `decimals` does not know (a symbol the caller just
    /// unsubscribed) is not decoded: it comes out with kind [`Kind::Unknown`] and
    /// [`Body::Unknown`].
    ///
    /// # Errors
    /// A [`DecodeError`] when the text is not an array of records of the documented shape, or
    /// a decimal string does not parse.
    pub fn parse(
        text: &str,
        decimals: impl Fn(&str) -> Option<(u8, u8)>,
    ) -> Result<Self, DecodeError> {
        let raw: Vec<JsonRecord> =
            serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
        let mut records = Vec::with_capacity(raw.len());
        for r in raw {
            let kind = match r.kind.as_str() {
                "snapshot" => Kind::Snapshot,
                "delta" => Kind::Delta,
                "trade" => Kind::Trade,
                "status" => Kind::Status,
                _ => Kind::Unknown(0),
            };
            let known = match kind {
                Kind::Snapshot | Kind::Delta | Kind::Trade => decimals(&r.symbol),
                _ => Some((0, 0)),
            };
            let Some((pd, qd)) = known else {
                // A symbol the caller does not follow (e.g. just unsubscribed): kept, unread.
                records.push(OwnedRecord {
                    header: Header {
                        kind: Kind::Unknown(0),
                        flags: 0,
                        sid: r.sid,
                        seq: r.seq,
                        exch_ts: r.exch_ts,
                        recv_ts: r.recv_ts,
                    },
                    symbol: r.symbol,
                    bids: Vec::new(),
                    asks: Vec::new(),
                    crc: None,
                    trade: None,
                    code: 0,
                });
                continue;
            };
            let levels = |side: &[(String, String)]| -> Result<Vec<Level>, DecodeError> {
                side.iter()
                    .map(|(p, q)| Ok((parse_decimal(p, pd)?, parse_decimal(q, qd)?)))
                    .collect()
            };
            let trade = if kind == Kind::Trade {
                let missing = |f: &str| DecodeError::Json(format!("trade without `{f}`"));
                Some(TradeBody {
                    price: parse_decimal(r.price.as_deref().ok_or_else(|| missing("price"))?, pd)?,
                    qty: parse_decimal(r.qty.as_deref().ok_or_else(|| missing("qty"))?, qd)?,
                    trade_id: r.trade_id,
                    side: match r.side.as_deref() {
                        Some("buy") => Side::Buy,
                        Some("sell") => Side::Sell,
                        _ => return Err(missing("side")),
                    },
                })
            } else {
                None
            };
            let mut flags = 0;
            if kind == Kind::Snapshot {
                flags |= FLAG_SNAPSHOT;
            }
            if r.crc.is_some() {
                flags |= FLAG_CHECKSUM;
            }
            records.push(OwnedRecord {
                header: Header {
                    kind,
                    flags,
                    sid: r.sid,
                    seq: r.seq,
                    exch_ts: r.exch_ts,
                    recv_ts: r.recv_ts,
                },
                bids: levels(&r.bids)?,
                asks: levels(&r.asks)?,
                symbol: r.symbol,
                crc: r.crc,
                trade,
                code: r.code,
            });
        }
        Ok(Self { records })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, with the symbol name each JSON record carries.
    pub fn records(&self) -> impl Iterator<Item = (&str, Record<'_>)> {
        self.records.iter().map(|r| {
            let body = match r.header.kind {
                Kind::Snapshot | Kind::Delta => Body::Book(BookBody {
                    bids: Levels(LevelsRepr::Slice(r.bids.iter())),
                    asks: Levels(LevelsRepr::Slice(r.asks.iter())),
                    checksum: r.crc,
                }),
                Kind::Trade => r.trade.map_or(Body::Unknown, Body::Trade),
                Kind::Status => Body::Status(r.code),
                Kind::Unknown(_) => Body::Unknown,
            };
            (
                r.symbol.as_str(),
                Record {
                    header: r.header,
                    body,
                },
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test-side encoder of one record, written from the protocol text.
    pub(crate) fn record(kind: u8, flags: u8, sid: u32, seq: u64, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        let len = u16::try_from(RECORD_HEADER_LEN + body.len()).expect("small record");
        r.extend_from_slice(&len.to_le_bytes());
        r.extend_from_slice(&[kind, flags]);
        r.extend_from_slice(&sid.to_le_bytes());
        r.extend_from_slice(&seq.to_le_bytes());
        r.extend_from_slice(&11u64.to_le_bytes());
        r.extend_from_slice(&22u64.to_le_bytes());
        r.extend_from_slice(body);
        r
    }

    pub(crate) fn book_body(bids: &[Level], asks: &[Level], crc: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&u16::try_from(bids.len()).expect("few").to_le_bytes());
        b.extend_from_slice(&u16::try_from(asks.len()).expect("few").to_le_bytes());
        b.extend_from_slice(&crc.unwrap_or(0).to_le_bytes());
        for (p, q) in bids.iter().chain(asks) {
            b.extend_from_slice(&p.to_le_bytes());
            b.extend_from_slice(&q.to_le_bytes());
        }
        b
    }

    pub(crate) fn batch(records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![VERSION, 0];
        b.extend_from_slice(&u16::try_from(records.len()).expect("few").to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for r in records {
            b.extend_from_slice(r);
        }
        b
    }

    #[test]
    fn binary_batch_of_every_kind() {
        let mut trade = Vec::new();
        trade.extend_from_slice(&5i64.to_le_bytes());
        trade.extend_from_slice(&6i64.to_le_bytes());
        trade.extend_from_slice(&77u64.to_le_bytes());
        trade.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let b = batch(&[
            record(
                1,
                1,
                3,
                10,
                &book_body(&[(100, 1)], &[(101, 2), (102, 3)], None),
            ),
            record(
                2,
                FLAG_CHECKSUM,
                3,
                11,
                &book_body(&[(100, 0)], &[], Some(0xdead_beef)),
            ),
            record(3, 0, 3, 500, &trade),
            record(4, 0, 3, 0, &[1, 0, 0, 0, 0, 0, 0, 0]),
            record(9, 0, 3, 1, &[1, 2, 3]),
        ]);
        let recs: Vec<Record<'_>> = decode_binary(&b).expect("valid").collect();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[0].header.kind, Kind::Snapshot);
        assert_eq!((recs[0].header.sid, recs[0].header.seq), (3, 10));
        assert_eq!((recs[0].header.exch_ts, recs[0].header.recv_ts), (11, 22));
        let Body::Book(book) = &recs[0].body else {
            panic!("book")
        };
        assert_eq!(book.bids().collect::<Vec<_>>(), vec![(100, 1)]);
        assert_eq!(book.asks().collect::<Vec<_>>(), vec![(101, 2), (102, 3)]);
        assert_eq!(book.checksum(), None);
        let Body::Book(delta) = &recs[1].body else {
            panic!("book")
        };
        assert_eq!(delta.checksum(), Some(0xdead_beef));
        let Body::Trade(t) = recs[2].body else {
            panic!("trade")
        };
        assert_eq!((t.price, t.qty, t.trade_id, t.side), (5, 6, 77, Side::Sell));
        assert!(matches!(recs[3].body, Body::Status(1)));
        assert!(matches!(recs[4].body, Body::Unknown));
        assert_eq!(recs[4].header.kind, Kind::Unknown(9));
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        assert_eq!(
            decode_binary(&[1, 0]).err(),
            Some(DecodeError::ShortBatch(2))
        );
        assert_eq!(
            decode_binary(&[2, 0, 0, 0, 0, 0, 0, 0]).err(),
            Some(DecodeError::Version(2))
        );
        let good = record(1, 1, 1, 1, &book_body(&[(1, 1)], &[], None));
        // Count says two, one present.
        let mut b = batch(std::slice::from_ref(&good));
        b[2] = 2;
        assert_eq!(
            decode_binary(&b).err(),
            Some(DecodeError::RecordLength { index: 1 })
        );
        // Trailing bytes.
        let mut b = batch(std::slice::from_ref(&good));
        b.push(0);
        assert_eq!(decode_binary(&b).err(), Some(DecodeError::TrailingBytes(1)));
        // Snapshot flag on a delta.
        let b = batch(&[record(2, 1, 1, 1, &book_body(&[], &[], None))]);
        assert_eq!(
            decode_binary(&b).err(),
            Some(DecodeError::SnapshotFlag { index: 0 })
        );
        // Counts that disagree with the length.
        let mut body = book_body(&[(1, 1)], &[], None);
        body[0] = 2;
        let b = batch(&[good, record(2, 0, 1, 2, &body)]);
        assert!(matches!(
            decode_binary(&b).err(),
            Some(DecodeError::BodyLength { index: 1, .. })
        ));
        // Taker side 2.
        let mut trade = vec![0u8; 32];
        trade[24] = 2;
        let b = batch(&[record(3, 0, 1, 1, &trade)]);
        assert_eq!(
            decode_binary(&b).err(),
            Some(DecodeError::Side { index: 0, side: 2 })
        );
    }

    #[test]
    fn decimals_round_trip_as_the_server_prints_them() {
        for (s, d, v) in [
            ("65000.10", 2, 6_500_010),
            ("0.000001", 6, 1),
            ("-1.50", 2, -150),
            ("7", 0, 7),
            ("0.00", 2, 0),
        ] {
            assert_eq!(parse_decimal(s, d), Ok(v), "{s}");
            assert_eq!(format_decimal(v, d), s);
        }
        assert_eq!(parse_decimal("1.5", 3), Ok(1500));
        assert_eq!(parse_decimal("1.500", 1), Ok(15));
        for bad in [
            "",
            "1.",
            ".5",
            "1.2.3",
            "x",
            "1.234",
            "99999999999999999999",
        ] {
            assert!(parse_decimal(bad, 2).is_err(), "{bad}");
        }
        assert_eq!(format_decimal(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn json_batch_gives_the_same_records() {
        let text = r#"[{"kind":"snapshot","symbol":"BTC-USD","sid":7,"seq":100,"exch_ts":1,"recv_ts":2,"bids":[["65000.10","1.5"]],"asks":[],"crc":12},
            {"kind":"trade","symbol":"BTC-USD","sid":7,"seq":42,"exch_ts":1,"recv_ts":2,"price":"65000.20","qty":"0.010000","trade_id":42,"side":"buy"},
            {"kind":"status","symbol":"BTC-USD","sid":7,"seq":0,"exch_ts":1,"recv_ts":1,"code":1}]"#;
        let batch = JsonBatch::parse(text, |s| (s == "BTC-USD").then_some((2, 6))).expect("json");
        assert_eq!(batch.len(), 3);
        let recs: Vec<_> = batch.records().collect();
        assert_eq!(recs[0].0, "BTC-USD");
        assert_eq!(recs[0].1.header.flags, FLAG_SNAPSHOT | FLAG_CHECKSUM);
        let Body::Book(b) = &recs[0].1.body else {
            panic!("book")
        };
        assert_eq!(b.bids().collect::<Vec<_>>(), vec![(6_500_010, 1_500_000)]);
        assert_eq!(b.checksum(), Some(12));
        let Body::Trade(t) = recs[1].1.body else {
            panic!("trade")
        };
        assert_eq!((t.price, t.qty, t.side), (6_500_020, 10_000, Side::Buy));
        assert!(matches!(recs[2].1.body, Body::Status(1)));
        let unknown = JsonBatch::parse(text, |_| None).expect("unknown symbols are skipped");
        let kinds: Vec<Kind> = unknown.records().map(|(_, r)| r.header.kind).collect();
        assert_eq!(
            kinds,
            vec![Kind::Unknown(0), Kind::Unknown(0), Kind::Status]
        );
        assert!(JsonBatch::parse("{}", |_| None).is_err());
    }
}
