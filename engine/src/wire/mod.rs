//! Client record encoders: the binary layout of the wire contract (protocol §1, little-endian)
//! and the JSON form, plus the fixed-point decimal conversions shared with the feed decoder.
//!
//! Every encoder appends exactly one record to a caller-owned [`BytesMut`]; records are encoded
//! once and shared by all subscribers of a stream. Nothing here formats through `format!` or
//! touches floating point: numbers are written through a small stack buffer.

use bytes::{BufMut, BytesMut};

use crate::book::{Level, Side};

/// Bytes of the batch header that starts every binary data message.
pub const BATCH_HEADER_LEN: usize = 8;
/// Bytes of the header that starts every record.
pub const RECORD_HEADER_LEN: usize = 32;
/// Bytes of a book body before its levels (`bid_count`, `ask_count`, reserved).
pub const BOOK_BODY_HEADER_LEN: usize = 8;
/// Bytes of one encoded level (`i64` price, `i64` qty).
pub const LEVEL_LEN: usize = 16;
/// Bytes of a whole trade record.
pub const TRADE_RECORD_LEN: usize = RECORD_HEADER_LEN + 32;
/// Bytes of a whole status record.
pub const STATUS_RECORD_LEN: usize = RECORD_HEADER_LEN + 8;
/// Most levels (bids plus asks) one book record can carry: its length field is a `u16`.
pub const MAX_BOOK_LEVELS: usize =
    (u16::MAX as usize - RECORD_HEADER_LEN - BOOK_BODY_HEADER_LEN) / LEVEL_LEN;
/// Version byte of the batch header.
pub const WIRE_VERSION: u8 = 1;
/// Record flag: this snapshot replaces the client's book for the symbol.
pub const FLAG_SNAPSHOT: u8 = 1;
/// Record flag (protocol 1.1 §3.2): the book body's `u32` at offset 4 holds the book checksum.
pub const FLAG_CHECKSUM: u8 = 2;
/// Levels per side a book checksum covers at most (protocol 1.1 §3.2).
pub const CHECKSUM_LEVELS: usize = 10;

/// Kind byte of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// Book snapshot: replaces the client's book.
    Snapshot = 1,
    /// Book delta: set/remove levels (qty 0 removes).
    Delta = 2,
    /// One trade.
    Trade = 3,
    /// Stream status notice.
    Status = 4,
}

impl RecordKind {
    /// The kind for a wire byte, `None` for kinds this version does not know.
    #[must_use]
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Snapshot),
            2 => Some(Self::Delta),
            3 => Some(Self::Trade),
            4 => Some(Self::Status),
            _ => None,
        }
    }

    /// Name used in the JSON `"kind"` field.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Delta => "delta",
            Self::Trade => "trade",
            Self::Status => "status",
        }
    }
}

/// Code of a status record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum StatusCode {
    /// The exchange feed stopped delivering for this symbol.
    FeedStale = 1,
    /// The exchange feed is delivering again.
    FeedResumed = 2,
    /// The client's out-buffer is filling up; it will be evicted if it keeps lagging.
    SlowConsumer = 3,
}

impl StatusCode {
    /// The code for a wire value, `None` for codes this version does not know.
    #[must_use]
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::FeedStale),
            2 => Some(Self::FeedResumed),
            3 => Some(Self::SlowConsumer),
            _ => None,
        }
    }
}

/// Fields of the 32-byte record header (the length is computed by the encoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record kind.
    pub kind: RecordKind,
    /// Flags; [`encode_book`] adds [`FLAG_SNAPSHOT`] to snapshots itself.
    pub flags: u8,
    /// Symbol id.
    pub sid: u32,
    /// Sequence number within the stream (symbol, channel, depth).
    pub seq: u64,
    /// Exchange timestamp, ns since the Unix epoch.
    pub exch_ts: u64,
    /// Engine receive timestamp, ns since the Unix epoch.
    pub recv_ts: u64,
}

/// One trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// Scaled price.
    pub px: i64,
    /// Scaled quantity.
    pub qty: i64,
    /// Exchange trade id.
    pub trade_id: u64,
    /// Aggressor side: [`Side::Bid`] = buy (wire 0), [`Side::Ask`] = sell (wire 1).
    pub taker_side: Side,
}

/// What a client needs to read a symbol's records: its name, id and decimals.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolMeta {
    /// Symbol name, e.g. `BTC-USD`.
    pub symbol: String,
    /// Symbol id used in records.
    pub sid: u32,
    /// Prices are scaled by `10^px_decimals`.
    pub px_decimals: u8,
    /// Quantities are scaled by `10^qty_decimals`.
    pub qty_decimals: u8,
}

/// Errors of the record encoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The levels do not fit one record (its length field is 16 bits); nothing was written.
    /// The stream cannot carry this book or delta in protocol v1: mark it stale.
    #[error("{levels} levels exceed the {MAX_BOOK_LEVELS} a record can carry")]
    TooManyLevels {
        /// Bids plus asks that were asked for.
        levels: usize,
    },
}

/// Errors of [`parse_decimal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecimalError {
    /// The string was empty (or just `-`); the field is malformed.
    #[error("empty decimal")]
    Empty,
    /// A character other than an optional leading `-`, digits and one `.` followed by digits.
    #[error("malformed decimal")]
    Syntax,
    /// Non-zero digits beyond the symbol's decimals: the value cannot be represented exactly.
    #[error("more fraction digits than the symbol's decimals")]
    Precision,
    /// The scaled value does not fit an `i64`.
    #[error("decimal out of range")]
    Overflow,
}

// ---- binary -----------------------------------------------------------------------------

/// The 8-byte batch header for a message of `record_count` records.
#[must_use]
pub fn batch_header(record_count: u16) -> [u8; BATCH_HEADER_LEN] {
    let c = record_count.to_le_bytes();
    [WIRE_VERSION, 0, c[0], c[1], 0, 0, 0, 0]
}

/// Bytes of a book record with `bids` + `asks` levels (may exceed what fits; see
/// [`MAX_BOOK_LEVELS`]).
#[must_use]
pub fn book_record_len(bids: usize, asks: usize) -> usize {
    RECORD_HEADER_LEN + BOOK_BODY_HEADER_LEN + LEVEL_LEN * bids.saturating_add(asks)
}

/// Appends one book record (snapshot or delta, per `hdr.kind`). Levels are written in the
/// order given: pass them best first. A snapshot always carries [`FLAG_SNAPSHOT`].
///
/// A record holds at most [`MAX_BOOK_LEVELS`] levels (its length field is 16 bits). When
/// `bids.len() + asks.len()` exceeds that, this writes nothing; use [`try_encode_book`] to be
/// told, or check [`fits_book_record`] first.
pub fn encode_book(out: &mut BytesMut, hdr: &RecordHeader, bids: &[Level], asks: &[Level]) {
    // Nothing is written on error, as documented; callers who must know use try_encode_book.
    let _ = try_encode_book(out, hdr, bids, asks);
}

/// Whether `bids` + `asks` levels fit one book record.
#[must_use]
pub fn fits_book_record(bids: usize, asks: usize) -> bool {
    bids.saturating_add(asks) <= MAX_BOOK_LEVELS
}

/// [`encode_book`] that reports a record too long to encode.
///
/// # Errors
///
/// [`WireError::TooManyLevels`] if `bids.len() + asks.len() > MAX_BOOK_LEVELS`; nothing is
/// written.
pub fn try_encode_book(
    out: &mut BytesMut,
    hdr: &RecordHeader,
    bids: &[Level],
    asks: &[Level],
) -> Result<(), WireError> {
    let levels = bids.len().saturating_add(asks.len());
    let (Ok(len), Ok(nb), Ok(na)) = (
        u16::try_from(book_record_len(bids.len(), asks.len())),
        u16::try_from(bids.len()),
        u16::try_from(asks.len()),
    ) else {
        return Err(WireError::TooManyLevels { levels });
    };
    // Header and body header from one stack buffer, then one copy per level: far fewer
    // capacity checks than a put call per field.
    out.reserve(usize::from(len));
    let mut head = [0u8; RECORD_HEADER_LEN + BOOK_BODY_HEADER_LEN];
    header_bytes(&mut head, hdr, len, book_flags(hdr));
    head[32..34].copy_from_slice(&nb.to_le_bytes());
    head[34..36].copy_from_slice(&na.to_le_bytes());
    out.extend_from_slice(&head);
    for l in bids.iter().chain(asks) {
        let mut lv = [0u8; LEVEL_LEN];
        lv[..8].copy_from_slice(&l.px.to_le_bytes());
        lv[8..].copy_from_slice(&l.qty.to_le_bytes());
        out.extend_from_slice(&lv);
    }
    Ok(())
}

/// Levels per side the checksum of a `depth` stream covers: `min(10, depth)`, and 10 for the
/// whole book (`depth` 0).
#[must_use]
pub fn checksum_levels(depth: u16) -> usize {
    match usize::from(depth) {
        0 => CHECKSUM_LEVELS,
        d => d.min(CHECKSUM_LEVELS),
    }
}

/// The book checksum of protocol 1.1 §3.2: CRC-32 (IEEE, as zlib's `crc32`) over the top `n`
/// levels of `bids` then of `asks` (both best first; a shorter side contributes what it has),
/// each level as `i64` price then `i64` qty, little-endian. Pass the client's book after the
/// record, e.g. `book.top(side, n)` with `n` = [`checksum_levels`] of the stream's depth.
///
/// No allocation: the (at most 2 × 10 × 16 = 320) bytes go through a stack buffer.
#[must_use]
pub fn book_checksum(bids: &[Level], asks: &[Level], n: usize) -> u32 {
    let mut buf = [0u8; 2 * CHECKSUM_LEVELS * LEVEL_LEN];
    let mut hasher = crc32fast::Hasher::new();
    for side in [bids, asks] {
        let levels = &side[..n.min(side.len())];
        for chunk in levels.chunks(CHECKSUM_LEVELS * 2) {
            let mut len = 0;
            for l in chunk {
                buf[len..len + 8].copy_from_slice(&l.px.to_le_bytes());
                buf[len + 8..len + LEVEL_LEN].copy_from_slice(&l.qty.to_le_bytes());
                len += LEVEL_LEN;
            }
            hasher.update(&buf[..len]);
        }
    }
    hasher.finalize()
}

/// [`try_encode_book`] for protocol 1.1: sets [`FLAG_CHECKSUM`] and writes `crc` (see
/// [`book_checksum`]) into the book body's `u32` at offset 4.
///
/// # Errors
///
/// As [`try_encode_book`]; nothing is written.
pub fn try_encode_book_crc(
    out: &mut BytesMut,
    hdr: &RecordHeader,
    bids: &[Level],
    asks: &[Level],
    crc: u32,
) -> Result<(), WireError> {
    let start = out.len();
    let hdr = RecordHeader {
        flags: hdr.flags | FLAG_CHECKSUM,
        ..*hdr
    };
    try_encode_book(out, &hdr, bids, asks)?;
    let at = start + RECORD_HEADER_LEN + 4;
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends one trade record (kind 3).
pub fn encode_trade(out: &mut BytesMut, hdr: &RecordHeader, trade: &Trade) {
    out.reserve(TRADE_RECORD_LEN);
    put_header(out, hdr, TRADE_RECORD_LEN as u16, hdr.flags);
    out.put_i64_le(trade.px);
    out.put_i64_le(trade.qty);
    out.put_u64_le(trade.trade_id);
    out.put_u8(side_byte(trade.taker_side));
    out.put_bytes(0, 7);
}

/// Appends one status record (kind 4).
pub fn encode_status(out: &mut BytesMut, hdr: &RecordHeader, code: StatusCode) {
    out.reserve(STATUS_RECORD_LEN);
    put_header(out, hdr, STATUS_RECORD_LEN as u16, hdr.flags);
    out.put_u16_le(code as u16);
    out.put_bytes(0, 6);
}

fn put_header(out: &mut BytesMut, hdr: &RecordHeader, len: u16, flags: u8) {
    let mut head = [0u8; RECORD_HEADER_LEN];
    header_bytes(&mut head, hdr, len, flags);
    out.extend_from_slice(&head);
}

/// The engine receive timestamp (`recv_ts`, ns since the Unix epoch) of an encoded binary
/// record, or `None` when `record` is shorter than a record header.
#[inline]
pub fn record_recv_ts(record: &[u8]) -> Option<u64> {
    let ts = record.get(24..32)?;
    Some(u64::from_le_bytes(ts.try_into().ok()?))
}

/// Writes the 32-byte record header into the start of `buf`.
fn header_bytes(buf: &mut [u8], hdr: &RecordHeader, len: u16, flags: u8) {
    buf[0..2].copy_from_slice(&len.to_le_bytes());
    buf[2] = hdr.kind as u8;
    buf[3] = flags;
    buf[4..8].copy_from_slice(&hdr.sid.to_le_bytes());
    buf[8..16].copy_from_slice(&hdr.seq.to_le_bytes());
    buf[16..24].copy_from_slice(&hdr.exch_ts.to_le_bytes());
    buf[24..32].copy_from_slice(&hdr.recv_ts.to_le_bytes());
}

fn book_flags(hdr: &RecordHeader) -> u8 {
    if hdr.kind == RecordKind::Snapshot {
        hdr.flags | FLAG_SNAPSHOT
    } else {
        hdr.flags
    }
}

fn side_byte(side: Side) -> u8 {
    match side {
        Side::Bid => 0,
        Side::Ask => 1,
    }
}

// ---- JSON -------------------------------------------------------------------------------

/// Appends one book record as a JSON object:
/// `{"kind":"snapshot"|"delta","symbol":..,"sid":..,"seq":..,"exch_ts":..,"recv_ts":..,
/// "bids":[["px","qty"],..],"asks":[..]}`, prices and quantities as decimal strings.
pub fn encode_book_json(
    out: &mut BytesMut,
    meta: &SymbolMeta,
    hdr: &RecordHeader,
    bids: &[Level],
    asks: &[Level],
) {
    book_json(out, meta, hdr, bids, asks, None);
}

/// [`encode_book_json`] for protocol 1.1: the object also carries `"crc":N` (see
/// [`book_checksum`]), after `recv_ts`.
pub fn encode_book_json_crc(
    out: &mut BytesMut,
    meta: &SymbolMeta,
    hdr: &RecordHeader,
    bids: &[Level],
    asks: &[Level],
    crc: u32,
) {
    book_json(out, meta, hdr, bids, asks, Some(crc));
}

fn book_json(
    out: &mut BytesMut,
    meta: &SymbolMeta,
    hdr: &RecordHeader,
    bids: &[Level],
    asks: &[Level],
    crc: Option<u32>,
) {
    out.reserve(112 + meta.symbol.len() + 48 * bids.len().saturating_add(asks.len()));
    let mut w = JsonWriter::new(out);
    put_json_header(&mut w, meta, hdr);
    if let Some(crc) = crc {
        w.lit(b",\"crc\":");
        w.u64(u64::from(crc));
    }
    w.lit(b",\"bids\":");
    put_json_levels(&mut w, meta, bids);
    w.lit(b",\"asks\":");
    put_json_levels(&mut w, meta, asks);
    w.lit(b"}");
    w.finish();
}

/// Appends one trade record as a JSON object:
/// `{"kind":"trade",..,"price":"..","qty":"..","trade_id":42,"side":"buy"|"sell"}`.
pub fn encode_trade_json(out: &mut BytesMut, meta: &SymbolMeta, hdr: &RecordHeader, trade: &Trade) {
    out.reserve(192 + meta.symbol.len());
    let mut w = JsonWriter::new(out);
    put_json_header(&mut w, meta, hdr);
    w.lit(b",\"price\":\"");
    w.decimal(trade.px, meta.px_decimals);
    w.lit(b"\",\"qty\":\"");
    w.decimal(trade.qty, meta.qty_decimals);
    w.lit(b"\",\"trade_id\":");
    w.u64(trade.trade_id);
    w.lit(match trade.taker_side {
        Side::Bid => b",\"side\":\"buy\"}",
        Side::Ask => b",\"side\":\"sell\"}",
    });
    w.finish();
}

/// Appends one status record as a JSON object: `{"kind":"status",..,"code":1}`.
pub fn encode_status_json(
    out: &mut BytesMut,
    meta: &SymbolMeta,
    hdr: &RecordHeader,
    code: StatusCode,
) {
    out.reserve(128 + meta.symbol.len());
    let mut w = JsonWriter::new(out);
    put_json_header(&mut w, meta, hdr);
    w.lit(b",\"code\":");
    w.u64(u64::from(code as u16));
    w.lit(b"}");
    w.finish();
}

/// Writes `{"kind":..,"symbol":..,"sid":..,"seq":..,"exch_ts":..,"recv_ts":..` (no closing brace).
fn put_json_header(w: &mut JsonWriter<'_>, meta: &SymbolMeta, hdr: &RecordHeader) {
    w.lit(b"{\"kind\":\"");
    w.lit(hdr.kind.as_str().as_bytes());
    w.lit(b"\",\"symbol\":");
    w.flush();
    write_json_string(w.out, &meta.symbol);
    w.lit(b",\"sid\":");
    w.u64(u64::from(meta.sid));
    w.lit(b",\"seq\":");
    w.u64(hdr.seq);
    w.lit(b",\"exch_ts\":");
    w.u64(hdr.exch_ts);
    w.lit(b",\"recv_ts\":");
    w.u64(hdr.recv_ts);
}

/// Writes `[["px","qty"],..]`.
fn put_json_levels(w: &mut JsonWriter<'_>, meta: &SymbolMeta, levels: &[Level]) {
    w.lit(b"[");
    for (i, l) in levels.iter().enumerate() {
        w.lit(if i > 0 { b",[\"" } else { b"[\"" });
        w.decimal(l.px, meta.px_decimals);
        w.lit(b"\",\"");
        w.decimal(l.qty, meta.qty_decimals);
        w.lit(b"\"]");
    }
    w.lit(b"]");
}

/// Buffers the many small pieces of a JSON record on the stack and appends them to the
/// `BytesMut` in a few large copies (a `put_slice` per piece costs a capacity check and a
/// `memcpy` call each). Numbers are written in place. Call [`finish`](Self::finish) at the end.
struct JsonWriter<'a> {
    out: &'a mut BytesMut,
    buf: [u8; JSON_CHUNK],
    n: usize,
}

/// Size of [`JsonWriter`]'s stack buffer.
const JSON_CHUNK: usize = 512;
/// Longest single piece [`JsonWriter`] writes at once: literals are shorter, numbers are at
/// most 42 bytes (`-`, 19 integer digits, `.`, 19 fraction digits).
const JSON_PIECE: usize = 64;

impl<'a> JsonWriter<'a> {
    fn new(out: &'a mut BytesMut) -> Self {
        Self {
            out,
            buf: [0; JSON_CHUNK],
            n: 0,
        }
    }

    /// Makes room for one piece of at most [`JSON_PIECE`] bytes.
    #[inline]
    fn room(&mut self) {
        if self.n > JSON_CHUNK - JSON_PIECE {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.out.put_slice(&self.buf[..self.n]);
        self.n = 0;
    }

    fn finish(mut self) {
        self.flush();
    }

    /// A literal piece (at most [`JSON_PIECE`] bytes).
    #[inline]
    fn lit(&mut self, s: &[u8]) {
        debug_assert!(s.len() <= JSON_PIECE);
        self.room();
        let end = self.n + s.len();
        self.buf[self.n..end].copy_from_slice(s);
        self.n = end;
    }

    /// `v` in decimal.
    #[inline]
    fn u64(&mut self, v: u64) {
        self.room();
        self.put_digits(v, digit_count(v));
    }

    /// `value / 10^decimals` with exactly `decimals` fraction digits, as [`write_decimal`].
    #[inline]
    fn decimal(&mut self, value: i64, decimals: u8) {
        let d = usize::from(decimals);
        let Some(&scale) = POW10.get(d).filter(|_| d > 0) else {
            if d == 0 {
                self.room();
                if value < 0 {
                    self.buf[self.n] = b'-';
                    self.n += 1;
                }
                let mag = value.unsigned_abs();
                self.put_digits(mag, digit_count(mag));
            } else {
                // 20 or more fraction digits: never used by a feed (at most 18), keep it simple.
                self.flush();
                write_decimal(self.out, value, decimals);
            }
            return;
        };
        self.room();
        if value < 0 {
            self.buf[self.n] = b'-';
            self.n += 1;
        }
        let mag = value.unsigned_abs();
        let int = mag / scale;
        self.put_digits(int, digit_count(int));
        self.buf[self.n] = b'.';
        self.n += 1;
        // The fraction, zero-padded to `d` digits.
        self.put_digits(mag % scale, d);
    }

    /// The last `len` decimal digits of `v` (zero-padded), in place.
    #[inline]
    fn put_digits(&mut self, mut v: u64, len: usize) {
        let end = self.n + len;
        for b in self.buf[self.n..end].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.n = end;
    }
}

/// Number of decimal digits of `v` (1 for 0).
#[inline]
fn digit_count(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Writes `s` as a JSON string literal, quotes included, escaping `"`, `\` and control
/// characters.
pub fn write_json_string(out: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.put_slice(bytes.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            out.put_slice(b"\\u00");
            out.put_u8(HEX[usize::from(b >> 4)]);
            out.put_u8(HEX[usize::from(b & 0xf)]);
        } else {
            out.put_slice(esc);
        }
        start = i + 1;
    }
    out.put_slice(bytes.get(start..).unwrap_or_default());
    out.put_u8(b'"');
}

// ---- numbers ----------------------------------------------------------------------------

/// Digits of a `u64` into the tail of a stack buffer; returns the start index.
fn u64_digits(mut v: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

/// Writes `v` in decimal.
pub fn write_u64(out: &mut BytesMut, v: u64) {
    let mut buf = [0u8; 20];
    let start = u64_digits(v, &mut buf);
    out.put_slice(&buf[start..]);
}

/// Writes `value / 10^decimals` as a decimal string with exactly `decimals` fraction digits
/// (no point when `decimals == 0`), `-` for negatives, e.g. `(150, 2)` → `1.50`.
pub fn write_decimal(out: &mut BytesMut, value: i64, decimals: u8) {
    let mut buf = [0u8; 20];
    let start = u64_digits(value.unsigned_abs(), &mut buf);
    let digits = &buf[start..];
    let decimals = usize::from(decimals);
    if value < 0 {
        out.put_u8(b'-');
    }
    if decimals == 0 {
        out.put_slice(digits);
    } else if digits.len() > decimals {
        let (int, frac) = digits.split_at(digits.len() - decimals);
        out.put_slice(int);
        out.put_u8(b'.');
        out.put_slice(frac);
    } else {
        out.put_slice(b"0.");
        out.put_bytes(b'0', decimals - digits.len());
        out.put_slice(digits);
    }
}

/// Parses a decimal string into an integer scaled by `10^decimals`.
///
/// Accepted: an optional `-`, one or more digits, then optionally `.` and one or more digits.
/// Fraction digits beyond `decimals` are accepted only when they are zeros. `-0` is 0.
///
/// # Errors
///
/// [`DecimalError::Empty`] for `""` or `"-"`, [`DecimalError::Syntax`] for anything else that
/// is not of that form (`+1`, `.5`, `1.`, `1e3`, spaces), [`DecimalError::Precision`] for
/// non-zero digits beyond `decimals`, [`DecimalError::Overflow`] when the scaled value does not
/// fit an `i64`.
#[inline]
pub fn parse_decimal(s: &[u8], decimals: u8) -> Result<i64, DecimalError> {
    match parse_decimal_fast(s, decimals) {
        Some(v) => Ok(v),
        None => parse_decimal_full(s, decimals),
    }
}

/// The usual form in one pass with no overflow checks: `-`? digits (`.` digits)?, at most 19
/// bytes after the sign, no more fraction digits than `decimals`, and at most 18 digits once
/// scaled (so the value fits an `i64` whatever its sign). `None` for anything else, valid or
/// not: [`parse_decimal_full`] then decides, errors included. Never a different result.
#[inline]
fn parse_decimal_fast(s: &[u8], decimals: u8) -> Option<i64> {
    let (neg, body) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    // At most 19 digits: below 10^19, so the u64 accumulation cannot overflow.
    if body.is_empty() || body.len() > 19 {
        return None;
    }
    let dot = body.iter().position(|&b| b == b'.');
    let (int, frac) = match dot {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &[][..]),
    };
    let decimals = usize::from(decimals);
    if int.is_empty() || (dot.is_some() && frac.is_empty()) || int.len() + decimals > 18 {
        return None;
    }
    let scale = *POW10.get(decimals.checked_sub(frac.len())?)?;
    let (mag, bad_int) = digits_unchecked(int, 0);
    let (mag, bad_frac) = digits_unchecked(frac, mag);
    if bad_int || bad_frac {
        return None;
    }
    // At most 18 digits once scaled: below 10^18.
    let v = i64::try_from(mag * scale).ok()?;
    Some(if neg { -v } else { v })
}

/// `mag` followed by the decimal digits `bytes`, two digits per step (a shorter dependency
/// chain than one), and whether some byte was not a digit (the value is then meaningless).
/// The caller bounds the digit count so that a valid result fits; arithmetic wraps otherwise.
#[inline]
fn digits_unchecked(bytes: &[u8], mut mag: u64) -> (u64, bool) {
    let mut bad = false;
    let mut pairs = bytes.chunks_exact(2);
    for p in &mut pairs {
        let (a, b) = (p[0].wrapping_sub(b'0'), p[1].wrapping_sub(b'0'));
        bad |= (a > 9) | (b > 9);
        mag = mag
            .wrapping_mul(100)
            .wrapping_add(u64::from(a) * 10 + u64::from(b));
    }
    if let [c] = *pairs.remainder() {
        let d = c.wrapping_sub(b'0');
        bad |= d > 9;
        mag = mag.wrapping_mul(10).wrapping_add(u64::from(d));
    }
    (mag, bad)
}

/// [`parse_decimal`] for every form, each step checked.
fn parse_decimal_full(s: &[u8], decimals: u8) -> Result<i64, DecimalError> {
    let (neg, body) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if body.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let (int, rest) = body.split_at(dot);
            let frac = rest.get(1..).unwrap_or_default();
            if frac.is_empty() {
                return Err(DecimalError::Syntax);
            }
            (int, frac)
        }
        None => (body, &[][..]),
    };
    if int.is_empty() {
        return Err(DecimalError::Syntax);
    }
    let decimals = usize::from(decimals);
    let mag = match POW10.get(decimals.wrapping_sub(frac.len())) {
        // Fast path, the usual case: at most 19 digits in all, so u64 arithmetic cannot
        // overflow, and no fraction digit is dropped.
        Some(&scale) if int.len() + decimals <= 19 => {
            let mut mag: u64 = 0;
            for &b in int.iter().chain(frac) {
                mag = mag * 10 + u64::from(digit(b)?);
            }
            mag * scale
        }
        _ => scaled_checked(int, frac, decimals)?,
    };
    if neg {
        0i64.checked_sub_unsigned(mag).ok_or(DecimalError::Overflow)
    } else {
        i64::try_from(mag).map_err(|_| DecimalError::Overflow)
    }
}

/// Powers of ten that fit a `u64`.
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The magnitude of `int.frac` scaled by `10^decimals`, with every step checked.
fn scaled_checked(int: &[u8], frac: &[u8], decimals: usize) -> Result<u64, DecimalError> {
    let mut mag: u64 = 0;
    let push = |mag: u64, d: u8| -> Result<u64, DecimalError> {
        mag.checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(d)))
            .ok_or(DecimalError::Overflow)
    };
    for &b in int {
        mag = push(mag, digit(b)?)?;
    }
    let (kept, extra) = frac.split_at(frac.len().min(decimals));
    for &b in kept {
        mag = push(mag, digit(b)?)?;
    }
    let mut lost = false;
    for &b in extra {
        lost |= digit(b)? != 0;
    }
    if lost {
        return Err(DecimalError::Precision);
    }
    for _ in kept.len()..decimals {
        mag = push(mag, 0)?;
    }
    Ok(mag)
}

fn digit(b: u8) -> Result<u8, DecimalError> {
    if b.is_ascii_digit() {
        Ok(b - b'0')
    } else {
        Err(DecimalError::Syntax)
    }
}

#[cfg(test)]
mod tests;
