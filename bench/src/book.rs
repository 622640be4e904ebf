//! Client-side state rebuilt from records: order books and the sequence rule.
//!
//! [`SeqTracker`] checks the sequence rule of `shared/protocol.md` on headers
//! alone (the bench's hot path). [`StreamState`] uses it and also rebuilds every
//! book of a connection, for tests that compare what a client holds with the truth.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::wire::{Body, KIND_DELTA, KIND_SNAPSHOT, KIND_STATUS, KIND_TRADE, Record, RecordHeader};

/// Cheap multiplicative hasher for `u32` symbol ids (the map is looked up once per
/// record; the keys come from our own subscription, so flooding is not a concern).
#[derive(Debug, Default, Clone, Copy)]
struct SidHasher(u64);

impl Hasher for SidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SidMap<V> = HashMap<u32, V, BuildHasherDefault<SidHasher>>;

/// Sids below this are kept in a vector indexed by sid; larger ones in a map.
/// The engine assigns small dense sids, so the map only guards against absurd values.
const DENSE_SIDS: u32 = 1 << 16;

/// Sequence state by sid. For the small sids the engine assigns, the last book
/// and trade seqs of a symbol sit side by side in one vector (16 bytes a symbol,
/// so that the state of many connections stays in cache) and their presence
/// bits in another; larger sids go to maps.
#[derive(Debug, Clone, Default)]
struct SeqTable {
    /// `[book, trade]` last seqs by sid.
    last: Vec<[u64; 2]>,
    /// [`HAS_BOOK`], [`SYNCED`] and [`HAS_TRADE`] by sid.
    flags: Vec<u8>,
    sparse_books: SidMap<BookTrack>,
    sparse_trades: SidMap<u64>,
}

/// The book stream of the sid has been seen.
const HAS_BOOK: u8 = 1;
/// The book stream of the sid started with a snapshot.
const SYNCED: u8 = 2;
/// The trade stream of the sid has been seen.
const HAS_TRADE: u8 = 4;

impl SeqTable {
    #[inline]
    fn book(&self, sid: u32) -> Option<BookTrack> {
        if sid >= DENSE_SIDS {
            return self.sparse_books.get(&sid).copied();
        }
        let i = sid as usize;
        let flags = *self.flags.get(i)?;
        let [last, _] = *self.last.get(i)?;
        (flags & HAS_BOOK != 0).then_some(BookTrack {
            last,
            synced: flags & SYNCED != 0,
        })
    }

    #[inline]
    fn set_book(&mut self, sid: u32, track: BookTrack) {
        if sid >= DENSE_SIDS {
            self.sparse_books.insert(sid, track);
            return;
        }
        let i = self.grow(sid);
        if let (Some(last), Some(flags)) = (self.last.get_mut(i), self.flags.get_mut(i)) {
            last[0] = track.last;
            let synced = if track.synced { SYNCED } else { 0 };
            *flags = (*flags & !SYNCED) | HAS_BOOK | synced;
        }
    }

    #[inline]
    fn trade(&self, sid: u32) -> Option<u64> {
        if sid >= DENSE_SIDS {
            return self.sparse_trades.get(&sid).copied();
        }
        let i = sid as usize;
        let flags = *self.flags.get(i)?;
        let [_, last] = *self.last.get(i)?;
        (flags & HAS_TRADE != 0).then_some(last)
    }

    #[inline]
    fn set_trade(&mut self, sid: u32, seq: u64) {
        if sid >= DENSE_SIDS {
            self.sparse_trades.insert(sid, seq);
            return;
        }
        let i = self.grow(sid);
        if let (Some(last), Some(flags)) = (self.last.get_mut(i), self.flags.get_mut(i)) {
            last[1] = seq;
            *flags |= HAS_TRADE;
        }
    }

    /// Forgets both streams of `sid` (a resume that was not recovered starts them afresh).
    fn forget(&mut self, sid: u32) {
        self.sparse_books.remove(&sid);
        self.sparse_trades.remove(&sid);
        if let Some(f) = self.flags.get_mut(sid as usize) {
            *f = 0;
        }
    }

    /// The index of a dense sid, with room for it.
    #[inline]
    fn grow(&mut self, sid: u32) -> usize {
        let i = sid as usize;
        if i >= self.last.len() {
            self.last.resize(i + 1, [0; 2]);
            self.flags.resize(i + 1, 0);
        }
        i
    }

    /// Loads the state of a dense sid (see [`SeqTracker::touch`]).
    #[inline]
    fn touch(&self, sid: u32) -> u64 {
        self.last.get(sid as usize).map_or(0, |[b, t]| b ^ t)
    }
}

/// One symbol's order book as a client holds it: price → quantity, scaled integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientBook {
    /// Bid levels (the best bid is the highest key).
    pub bids: BTreeMap<i64, i64>,
    /// Ask levels (the best ask is the lowest key).
    pub asks: BTreeMap<i64, i64>,
}

impl ClientBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole book with a snapshot's levels (levels with qty 0 are left out).
    pub fn replace(&mut self, bids: &[(i64, i64)], asks: &[(i64, i64)]) {
        self.bids.clear();
        self.asks.clear();
        self.apply_delta(bids, asks);
    }

    /// Applies a delta's levels: a non-zero qty sets the level, qty 0 removes it.
    pub fn apply_delta(&mut self, bids: &[(i64, i64)], asks: &[(i64, i64)]) {
        fn side(book: &mut BTreeMap<i64, i64>, levels: &[(i64, i64)]) {
            for &(px, qty) in levels {
                if qty == 0 {
                    book.remove(&px);
                } else {
                    book.insert(px, qty);
                }
            }
        }
        side(&mut self.bids, bids);
        side(&mut self.asks, asks);
    }

    /// Best bid `(price, qty)`, if any.
    pub fn best_bid(&self) -> Option<(i64, i64)> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }

    /// Best ask `(price, qty)`, if any.
    pub fn best_ask(&self) -> Option<(i64, i64)> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// The best `n` bids, best (highest price) first.
    pub fn top_bids(&self, n: usize) -> Vec<(i64, i64)> {
        self.bids
            .iter()
            .rev()
            .take(n)
            .map(|(p, q)| (*p, *q))
            .collect()
    }

    /// The best `n` asks, best (lowest price) first.
    pub fn top_asks(&self, n: usize) -> Vec<(i64, i64)> {
        self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect()
    }

    /// The book checksum of protocol 1.1 §3.2 over this book as the client holds it (its
    /// window): CRC-32 of the top 10 bids, best first, then the top 10 asks, each level as
    /// `i64` price and `i64` qty, little-endian. A client of depth 1 holds one level a side,
    /// so "top min(10, depth)" is simply the top 10 of what it holds.
    pub fn checksum(&self) -> u32 {
        let mut crc = Crc32::new();
        for (px, qty) in self
            .bids
            .iter()
            .rev()
            .take(10)
            .chain(self.asks.iter().take(10))
        {
            crc.update(&px.to_le_bytes());
            crc.update(&qty.to_le_bytes());
        }
        crc.finish()
    }

    /// True when the best bid is at or above the best ask (crossed or locked), which
    /// a correctly rebuilt exchange book never is.
    pub fn is_crossed(&self) -> bool {
        match (self.best_bid(), self.best_ask()) {
            (Some((bid, _)), Some((ask, _))) => bid >= ask,
            _ => false,
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), table-driven, written here from the
/// definition so that the bench checks the engine's checksums independently of its crate.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

/// The byte table of the reflected polynomial 0xEDB88320.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Crc32 {
    /// A CRC over no bytes yet.
    pub fn new() -> Self {
        Self(0xFFFF_FFFF)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }

    /// The CRC of the bytes added.
    pub fn finish(self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// Which stream of a symbol a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// The book stream (snapshots and deltas).
    Book,
    /// The trade stream.
    Trades,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Book => "book",
            Self::Trades => "trades",
        })
    }
}

/// A broken sequence rule (or a record whose body does not fit its kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeqError {
    /// `seq` did not rise by exactly one.
    #[error("sid {sid} {stream} stream: expected seq {expected}, got {got}")]
    Gap {
        /// Symbol id.
        sid: u32,
        /// The stream.
        stream: StreamKind,
        /// The seq the rule required (last + 1).
        expected: u64,
        /// The seq received.
        got: u64,
    },
    /// A book delta arrived while the client holds no book for the symbol (none yet,
    /// or dropped after a gap).
    #[error("sid {sid} book stream: delta seq {got} without a snapshot before it")]
    DeltaBeforeSnapshot {
        /// Symbol id.
        sid: u32,
        /// The delta's seq.
        got: u64,
    },
    /// A record's body does not match its kind (only possible for hand-made records).
    #[error("sid {sid}: record of kind {kind} carries a body of another kind")]
    BodyMismatch {
        /// Symbol id.
        sid: u32,
        /// The record kind.
        kind: u8,
    },
    /// A book record's checksum (protocol 1.1 §3.2) differs from the one of the book the
    /// client holds after applying it: the book is wrong.
    #[error(
        "sid {sid} book stream: seq {seq} carries checksum {sent:#010x}, the book gives {held:#010x}"
    )]
    Checksum {
        /// Symbol id.
        sid: u32,
        /// The record's seq.
        seq: u64,
        /// The checksum the record carries.
        sent: u32,
        /// The checksum of the book as applied.
        held: u32,
    },
}

impl SeqError {
    /// The symbol id.
    pub fn sid(&self) -> u32 {
        match self {
            Self::Gap { sid, .. }
            | Self::DeltaBeforeSnapshot { sid, .. }
            | Self::BodyMismatch { sid, .. }
            | Self::Checksum { sid, .. } => *sid,
        }
    }

    /// The stream concerned.
    pub fn stream(&self) -> StreamKind {
        match self {
            Self::Gap { stream, .. } => *stream,
            Self::DeltaBeforeSnapshot { .. } | Self::Checksum { .. } => StreamKind::Book,
            Self::BodyMismatch { kind, .. } if *kind == KIND_TRADE => StreamKind::Trades,
            Self::BodyMismatch { .. } => StreamKind::Book,
        }
    }

    /// The seq the rule required, when there was one.
    pub fn expected(&self) -> Option<u64> {
        match self {
            Self::Gap { expected, .. } => Some(*expected),
            _ => None,
        }
    }

    /// The seq received, when the error is about one.
    pub fn got(&self) -> Option<u64> {
        match self {
            Self::Gap { got, .. } | Self::DeltaBeforeSnapshot { got, .. } => Some(*got),
            Self::Checksum { seq, .. } => Some(*seq),
            Self::BodyMismatch { .. } => None,
        }
    }
}

/// What a record was, sequence-wise, when it kept the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next record of its stream (seq = last + 1).
    InOrder,
    /// The first trade seen for the symbol (any seq).
    FirstTrade,
    /// A snapshot starting the book stream, or one carrying the seq already held.
    Snapshot,
    /// A snapshot that moved the stream's seq (or followed a broken stream): the
    /// book is resynchronised, which is not a gap.
    Resync {
        /// The last seq held before the snapshot.
        previous: u64,
    },
    /// A status record (seq 0, not checked).
    Status,
    /// A record of an unknown kind (not checked).
    Skipped,
}

#[derive(Debug, Clone, Copy)]
struct BookTrack {
    last: u64,
    /// False until a snapshot arrived: the stream started with a delta.
    synced: bool,
}

/// Checks the sequence rule on record headers, per symbol and stream, without
/// keeping books. After an error it continues from the seq received, so one
/// discontinuity is reported once.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    streams: SeqTable,
}

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one record header against the rule and advances the stream.
    ///
    /// - Snapshot (kind 1): always accepted; it sets the stream's seq. It is a
    ///   [`Step::Resync`] when the stream existed and the seq moved, or the stream
    ///   had started without a snapshot.
    /// - Delta (kind 2): must come after a snapshot and carry last + 1.
    /// - Trade (kind 3): any seq first, then last + 1.
    /// - Status (kind 4) and unknown kinds: not checked.
    pub fn observe(&mut self, h: &RecordHeader) -> Result<Step, SeqError> {
        let t = &mut self.streams;
        match h.kind {
            KIND_SNAPSHOT => {
                let previous = t.book(h.sid);
                t.set_book(
                    h.sid,
                    BookTrack {
                        last: h.seq,
                        synced: true,
                    },
                );
                Ok(match previous {
                    Some(prev) if !prev.synced || prev.last != h.seq => Step::Resync {
                        previous: prev.last,
                    },
                    _ => Step::Snapshot,
                })
            }
            KIND_DELTA => match t.book(h.sid) {
                None => {
                    t.set_book(
                        h.sid,
                        BookTrack {
                            last: h.seq,
                            synced: false,
                        },
                    );
                    Err(SeqError::DeltaBeforeSnapshot {
                        sid: h.sid,
                        got: h.seq,
                    })
                }
                Some(track) => {
                    let expected = track.last.wrapping_add(1);
                    t.set_book(
                        h.sid,
                        BookTrack {
                            last: h.seq,
                            ..track
                        },
                    );
                    if h.seq == expected {
                        Ok(Step::InOrder)
                    } else {
                        Err(SeqError::Gap {
                            sid: h.sid,
                            stream: StreamKind::Book,
                            expected,
                            got: h.seq,
                        })
                    }
                }
            },
            KIND_TRADE => {
                let previous = t.trade(h.sid);
                t.set_trade(h.sid, h.seq);
                match previous {
                    None => Ok(Step::FirstTrade),
                    Some(last) if h.seq == last.wrapping_add(1) => Ok(Step::InOrder),
                    Some(last) => Err(SeqError::Gap {
                        sid: h.sid,
                        stream: StreamKind::Trades,
                        expected: last.wrapping_add(1),
                        got: h.seq,
                    }),
                }
            }
            KIND_STATUS => Ok(Step::Status),
            _ => Ok(Step::Skipped),
        }
    }

    /// Forgets the streams of `sid`: the next book record must be a snapshot, the next trade
    /// starts the trade stream (protocol 1.1: `recovered: false`).
    pub fn forget(&mut self, sid: u32) {
        self.streams.forget(sid);
    }

    /// Loads the state a record for `sid` will use, so that a caller
    /// walking a batch can take the cache misses of all its records at once
    /// (independent loads overlap) before checking them one by one. Returns a
    /// value to feed to [`std::hint::black_box`], which keeps the loads.
    #[inline]
    pub fn touch(&self, sid: u32) -> u64 {
        self.streams.touch(sid)
    }

    /// Last seq seen on the symbol's book stream.
    pub fn book_seq(&self, sid: u32) -> Option<u64> {
        self.streams.book(sid).map(|t| t.last)
    }

    /// Last seq seen on the symbol's trade stream.
    pub fn trade_seq(&self, sid: u32) -> Option<u64> {
        self.streams.trade(sid)
    }
}

/// Every stream of one connection: a book per symbol rebuilt from snapshots and
/// deltas, trade sequence per symbol, and the status records received.
///
/// A record that breaks the rule is not applied. A book stream with a gap loses
/// its book ([`StreamState::book`] gives `None`) until the next snapshot; each
/// delta until then is reported as [`SeqError::DeltaBeforeSnapshot`]. A trade
/// stream continues from the seq received.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    seq: SeqTracker,
    books: SidMap<ClientBook>,
    trades: SidMap<u64>,
    statuses: Vec<(u32, u16)>,
    resyncs: u64,
    checksums: u64,
    checksum_mismatches: u64,
}

impl StreamState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one record: checks its sequence and updates the symbol's book, trade
    /// count or status list.
    pub fn apply(&mut self, rec: &Record) -> Result<(), SeqError> {
        let h = &rec.header;
        let mismatch = || SeqError::BodyMismatch {
            sid: h.sid,
            kind: h.kind,
        };
        match (h.kind, &rec.body) {
            (KIND_SNAPSHOT, Body::Book { bids, asks, crc }) => {
                if let Step::Resync { .. } = self.seq.observe(h)? {
                    self.resyncs += 1;
                }
                let book = self.books.entry(h.sid).or_default();
                book.replace(bids, asks);
                self.verify(h, *crc)
            }
            (KIND_DELTA, Body::Book { bids, asks, crc }) => {
                if let Err(e) = self.seq.observe(h) {
                    self.books.remove(&h.sid);
                    return Err(e);
                }
                let book = self
                    .books
                    .get_mut(&h.sid)
                    .ok_or(SeqError::DeltaBeforeSnapshot {
                        sid: h.sid,
                        got: h.seq,
                    })?;
                book.apply_delta(bids, asks);
                self.verify(h, *crc)
            }
            (KIND_TRADE, Body::Trade { .. }) => {
                self.seq.observe(h)?;
                *self.trades.entry(h.sid).or_default() += 1;
                Ok(())
            }
            (KIND_STATUS, Body::Status { code }) => {
                self.statuses.push((h.sid, *code));
                Ok(())
            }
            (KIND_SNAPSHOT | KIND_DELTA | KIND_TRADE | KIND_STATUS, _) => Err(mismatch()),
            _ => Ok(()),
        }
    }

    /// Checks a book record's checksum, when it carries one, against the book just applied.
    /// A mismatch is counted and reported; the book is kept (the stream's seq is intact).
    fn verify(&mut self, h: &RecordHeader, crc: Option<u32>) -> Result<(), SeqError> {
        let Some(sent) = crc else {
            return Ok(());
        };
        let held = self.books.get(&h.sid).map_or(0, ClientBook::checksum);
        self.checksums += 1;
        if held == sent {
            return Ok(());
        }
        self.checksum_mismatches += 1;
        Err(SeqError::Checksum {
            sid: h.sid,
            seq: h.seq,
            sent,
            held,
        })
    }

    /// Forgets the book and streams of `sid` (a resume told `recovered: false`: the symbol
    /// starts afresh, book from a snapshot, trades from the live point).
    pub fn forget(&mut self, sid: u32) {
        self.seq.forget(sid);
        self.books.remove(&sid);
        self.trades.remove(&sid);
    }

    /// Book records whose checksum was verified (matching or not).
    pub fn checksums(&self) -> u64 {
        self.checksums
    }

    /// Book records whose checksum did not match the book applied.
    pub fn checksum_mismatches(&self) -> u64 {
        self.checksum_mismatches
    }

    /// Applies records in order, stopping at the first error.
    pub fn apply_all<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<(), SeqError> {
        records.into_iter().try_for_each(|r| self.apply(r))
    }

    /// The symbol's book, if a snapshot arrived and no gap broke it since.
    pub fn book(&self, sid: u32) -> Option<&ClientBook> {
        self.books.get(&sid)
    }

    /// Symbol ids that currently have a book.
    pub fn book_sids(&self) -> Vec<u32> {
        let mut sids: Vec<u32> = self.books.keys().copied().collect();
        sids.sort_unstable();
        sids
    }

    /// Last seq applied (or received, after a gap) on the symbol's book stream.
    pub fn book_seq(&self, sid: u32) -> Option<u64> {
        self.seq.book_seq(sid)
    }

    /// Last seq received on the symbol's trade stream.
    pub fn trade_seq(&self, sid: u32) -> Option<u64> {
        self.seq.trade_seq(sid)
    }

    /// Number of trades applied for the symbol.
    pub fn trade_count(&self, sid: u32) -> u64 {
        self.trades.get(&sid).copied().unwrap_or(0)
    }

    /// Status records received, as `(sid, code)` in arrival order.
    pub fn statuses(&self) -> &[(u32, u16)] {
        &self.statuses
    }

    /// Snapshots that resynchronised a book stream (see [`Step::Resync`]).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FLAG_SNAPSHOT;

    fn rec(kind: u8, sid: u32, seq: u64, body: Body) -> Record {
        let flags = if kind == KIND_SNAPSHOT {
            FLAG_SNAPSHOT
        } else {
            0
        };
        Record {
            header: RecordHeader {
                kind,
                flags,
                sid,
                seq,
                exch_ts: 1,
                recv_ts: 2,
            },
            body,
        }
    }

    fn snapshot(sid: u32, seq: u64, bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Record {
        rec(
            KIND_SNAPSHOT,
            sid,
            seq,
            Body::Book {
                bids: bids.to_vec(),
                asks: asks.to_vec(),
                crc: None,
            },
        )
    }

    fn delta(sid: u32, seq: u64, bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Record {
        rec(
            KIND_DELTA,
            sid,
            seq,
            Body::Book {
                bids: bids.to_vec(),
                asks: asks.to_vec(),
                crc: None,
            },
        )
    }

    fn trade(sid: u32, seq: u64) -> Record {
        rec(
            KIND_TRADE,
            sid,
            seq,
            Body::Trade {
                px: 1,
                qty: 1,
                trade_id: seq,
                taker_side: 0,
            },
        )
    }

    fn status(sid: u32, code: u16) -> Record {
        rec(KIND_STATUS, sid, 0, Body::Status { code })
    }

    #[test]
    fn client_book_top_n_and_crossed() {
        let mut b = ClientBook::new();
        assert!(!b.is_crossed());
        b.replace(
            &[(100, 1), (102, 2), (101, 3), (99, 0)],
            &[(105, 4), (103, 5), (104, 6)],
        );
        assert_eq!(b.top_bids(2), vec![(102, 2), (101, 3)]);
        assert_eq!(b.top_asks(2), vec![(103, 5), (104, 6)]);
        assert_eq!(b.top_bids(10), vec![(102, 2), (101, 3), (100, 1)]);
        assert_eq!(b.best_bid(), Some((102, 2)));
        assert_eq!(b.best_ask(), Some((103, 5)));
        assert!(!b.bids.contains_key(&99), "qty 0 in a snapshot is no level");
        assert!(!b.is_crossed());
        // Locked (bid == ask) counts as crossed.
        b.apply_delta(&[(103, 1)], &[]);
        assert!(b.is_crossed());
        b.apply_delta(&[(103, 0)], &[]);
        assert!(!b.is_crossed());
        b.apply_delta(&[], &[(101, 7)]);
        assert!(b.is_crossed());
        // One empty side is never crossed.
        b.replace(&[(200, 1)], &[]);
        assert!(!b.is_crossed());
        assert_eq!(b.top_asks(3), vec![]);
    }

    #[test]
    fn snapshot_then_deltas_rebuild_the_book() {
        let mut s = StreamState::new();
        let records = [
            snapshot(7, 100, &[(100, 1), (99, 2)], &[(101, 3)]),
            delta(7, 101, &[(100, 0), (98, 5)], &[(101, 4)]),
            delta(7, 102, &[], &[(102, 1)]),
        ];
        assert_eq!(s.apply_all(&records), Ok(()));
        let book = s.book(7);
        assert_eq!(book.map(|b| b.top_bids(5)), Some(vec![(99, 2), (98, 5)]));
        assert_eq!(book.map(|b| b.top_asks(5)), Some(vec![(101, 4), (102, 1)]));
        assert_eq!(s.book_seq(7), Some(102));
        assert_eq!(s.resyncs(), 0);
        assert_eq!(s.book_sids(), vec![7]);
    }

    #[test]
    fn gap_is_detected_and_the_book_waits_for_a_snapshot() {
        let mut s = StreamState::new();
        assert_eq!(s.apply(&snapshot(7, 100, &[(100, 1)], &[(101, 1)])), Ok(()));
        assert_eq!(s.apply(&delta(7, 101, &[(100, 2)], &[])), Ok(()));
        let err = s.apply(&delta(7, 103, &[(100, 3)], &[]));
        assert_eq!(
            err,
            Err(SeqError::Gap {
                sid: 7,
                stream: StreamKind::Book,
                expected: 102,
                got: 103
            })
        );
        let e = err.err();
        assert_eq!(e.as_ref().map(SeqError::sid), Some(7));
        assert_eq!(e.as_ref().map(SeqError::stream), Some(StreamKind::Book));
        assert_eq!(e.as_ref().and_then(SeqError::expected), Some(102));
        assert_eq!(e.as_ref().and_then(SeqError::got), Some(103));
        assert!(s.book(7).is_none(), "a book past a gap is not trusted");
        assert_eq!(
            s.apply(&delta(7, 104, &[], &[])),
            Err(SeqError::DeltaBeforeSnapshot { sid: 7, got: 104 })
        );
        // The resync snapshot restores it and counts as a resync.
        assert_eq!(s.apply(&snapshot(7, 110, &[(100, 9)], &[])), Ok(()));
        assert_eq!(s.resyncs(), 1);
        assert_eq!(s.apply(&delta(7, 111, &[], &[(101, 1)])), Ok(()));
        assert_eq!(s.book(7).map(|b| b.top_bids(1)), Some(vec![(100, 9)]));
    }

    #[test]
    fn delta_before_snapshot_is_flagged() {
        let mut s = StreamState::new();
        assert_eq!(
            s.apply(&delta(3, 5, &[(1, 1)], &[])),
            Err(SeqError::DeltaBeforeSnapshot { sid: 3, got: 5 })
        );
        assert!(s.book(3).is_none());
        assert_eq!(
            s.apply(&delta(3, 6, &[(1, 1)], &[])),
            Err(SeqError::DeltaBeforeSnapshot { sid: 3, got: 6 })
        );
        // Another symbol's snapshot does not help sid 3.
        assert_eq!(s.apply(&snapshot(4, 1, &[], &[])), Ok(()));
        assert!(s.apply(&delta(3, 7, &[], &[])).is_err());
    }

    #[test]
    fn snapshot_resync_is_not_a_gap() {
        let mut s = StreamState::new();
        assert_eq!(s.apply(&snapshot(1, 10, &[(5, 5)], &[])), Ok(()));
        assert_eq!(s.apply(&delta(1, 11, &[], &[])), Ok(()));
        // Same seq: a refresh, not a resync.
        assert_eq!(s.apply(&snapshot(1, 11, &[(6, 6)], &[])), Ok(()));
        assert_eq!(s.resyncs(), 0);
        assert_eq!(s.book(1).map(|b| b.top_bids(5)), Some(vec![(6, 6)]));
        // Seq moves forward: resync; the book is replaced, not merged.
        assert_eq!(s.apply(&snapshot(1, 50, &[(7, 7)], &[(8, 8)])), Ok(()));
        assert_eq!(s.resyncs(), 1);
        assert_eq!(s.book(1).map(|b| b.top_bids(5)), Some(vec![(7, 7)]));
        assert_eq!(s.apply(&delta(1, 51, &[], &[])), Ok(()));
        assert_eq!(
            s.apply(&delta(1, 51, &[], &[])),
            Err(SeqError::Gap {
                sid: 1,
                stream: StreamKind::Book,
                expected: 52,
                got: 51
            })
        );
    }

    #[test]
    fn trades_have_their_own_sequence() {
        let mut s = StreamState::new();
        assert_eq!(
            s.apply(&trade(2, 500)),
            Ok(()),
            "first trade may carry any seq"
        );
        assert_eq!(s.apply(&trade(2, 501)), Ok(()));
        // Book and trade streams of one symbol are independent.
        assert_eq!(s.apply(&snapshot(2, 7, &[], &[])), Ok(()));
        assert_eq!(s.apply(&trade(2, 502)), Ok(()));
        assert_eq!(s.apply(&trade(9, 1)), Ok(()));
        assert_eq!(
            s.apply(&trade(2, 505)),
            Err(SeqError::Gap {
                sid: 2,
                stream: StreamKind::Trades,
                expected: 503,
                got: 505
            })
        );
        // The stream continues from what was received.
        assert_eq!(s.apply(&trade(2, 506)), Ok(()));
        assert_eq!(s.trade_count(2), 4);
        assert_eq!(s.trade_count(9), 1);
        assert_eq!(s.trade_seq(2), Some(506));
        assert_eq!(s.book_seq(2), Some(7));
    }

    #[test]
    fn statuses_are_recorded_not_checked() {
        let mut s = StreamState::new();
        assert_eq!(s.apply(&status(1, 1)), Ok(()));
        assert_eq!(s.apply(&status(1, 2)), Ok(()));
        assert_eq!(s.apply(&status(4, 3)), Ok(()));
        assert_eq!(s.statuses(), &[(1, 1), (1, 2), (4, 3)]);
        // Unknown kinds are ignored.
        assert_eq!(s.apply(&rec(9, 1, 12345, Body::Unknown)), Ok(()));
    }

    #[test]
    fn body_that_does_not_fit_the_kind_is_an_error() {
        let mut s = StreamState::new();
        let bad = rec(KIND_TRADE, 5, 1, Body::Status { code: 1 });
        assert_eq!(
            s.apply(&bad),
            Err(SeqError::BodyMismatch {
                sid: 5,
                kind: KIND_TRADE
            })
        );
        assert_eq!(
            s.apply(&bad).err().map(|e| e.stream()),
            Some(StreamKind::Trades)
        );
    }

    #[test]
    fn tracker_reports_one_discontinuity_once() {
        let h = |kind, sid, seq| RecordHeader {
            kind,
            flags: if kind == KIND_SNAPSHOT {
                FLAG_SNAPSHOT
            } else {
                0
            },
            sid,
            seq,
            exch_ts: 0,
            recv_ts: 0,
        };
        let mut t = SeqTracker::new();
        assert_eq!(t.observe(&h(KIND_SNAPSHOT, 1, 10)), Ok(Step::Snapshot));
        assert_eq!(t.observe(&h(KIND_DELTA, 1, 11)), Ok(Step::InOrder));
        assert!(t.observe(&h(KIND_DELTA, 1, 20)).is_err());
        assert_eq!(t.observe(&h(KIND_DELTA, 1, 21)), Ok(Step::InOrder));
        assert_eq!(
            t.observe(&h(KIND_SNAPSHOT, 1, 30)),
            Ok(Step::Resync { previous: 21 })
        );
        assert_eq!(t.observe(&h(KIND_TRADE, 1, 0)), Ok(Step::FirstTrade));
        assert_eq!(t.observe(&h(KIND_STATUS, 1, 0)), Ok(Step::Status));
        assert_eq!(t.observe(&h(KIND_STATUS, 1, 0)), Ok(Step::Status));
        assert_eq!(t.observe(&h(77, 1, 3)), Ok(Step::Skipped));
        // A stream that began with a delta is resynced by its first snapshot.
        assert!(t.observe(&h(KIND_DELTA, 2, 5)).is_err());
        assert_eq!(t.observe(&h(KIND_DELTA, 2, 6)), Ok(Step::InOrder));
        assert_eq!(
            t.observe(&h(KIND_SNAPSHOT, 2, 6)),
            Ok(Step::Resync { previous: 6 })
        );
        // Seq wrap-around does not panic.
        assert_eq!(t.observe(&h(KIND_TRADE, 3, u64::MAX)), Ok(Step::FirstTrade));
        assert_eq!(t.observe(&h(KIND_TRADE, 3, 0)), Ok(Step::InOrder));
        // Sids past the dense table (and its edge) follow the same rule.
        for sid in [DENSE_SIDS - 1, DENSE_SIDS, u32::MAX] {
            assert_eq!(t.book_seq(sid), None, "sid {sid}");
            assert!(t.observe(&h(KIND_DELTA, sid, 4)).is_err());
            assert_eq!(
                t.observe(&h(KIND_SNAPSHOT, sid, 8)),
                Ok(Step::Resync { previous: 4 })
            );
            assert_eq!(t.observe(&h(KIND_DELTA, sid, 9)), Ok(Step::InOrder));
            assert!(t.observe(&h(KIND_DELTA, sid, 11)).is_err());
            assert_eq!(t.observe(&h(KIND_TRADE, sid, 1)), Ok(Step::FirstTrade));
            assert!(t.observe(&h(KIND_TRADE, sid, 3)).is_err());
            assert_eq!(t.observe(&h(KIND_TRADE, sid, 4)), Ok(Step::InOrder));
            assert_eq!((t.book_seq(sid), t.trade_seq(sid)), (Some(11), Some(4)));
        }
        // Sids in between stay unseen.
        assert_eq!((t.book_seq(100), t.trade_seq(100)), (None, None));
    }

    #[test]
    fn crc32_is_zlibs() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
        assert_eq!(Crc32::new().finish(), 0);
        assert_eq!(ClientBook::new().checksum(), 0);
    }

    #[test]
    fn book_checksums_are_verified_and_mismatches_counted() {
        let mut held = ClientBook::new();
        held.replace(&[(100, 1), (99, 2)], &[(101, 3)]);
        let mut bytes = Vec::new();
        for (px, qty) in [(100i64, 1i64), (99, 2), (101, 3)] {
            bytes.extend_from_slice(&px.to_le_bytes());
            bytes.extend_from_slice(&qty.to_le_bytes());
        }
        let mut c = Crc32::new();
        c.update(&bytes);
        let good = c.finish();
        assert_eq!(held.checksum(), good);
        let with_crc = |mut r: Record, crc: u32| {
            if let Body::Book { crc: c, .. } = &mut r.body {
                *c = Some(crc);
            }
            r
        };
        let mut st = StreamState::new();
        st.apply(&with_crc(
            snapshot(1, 10, &[(100, 1), (99, 2)], &[(101, 3)]),
            good,
        ))
        .unwrap();
        let e = st
            .apply(&with_crc(delta(1, 11, &[(98, 1)], &[]), good))
            .unwrap_err();
        assert!(
            matches!(
                e,
                SeqError::Checksum {
                    sid: 1,
                    seq: 11,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!((st.checksums(), st.checksum_mismatches()), (2, 1));
        // The book is kept, and a record without a checksum is not checked.
        st.apply(&delta(1, 12, &[(98, 0)], &[])).unwrap();
        assert_eq!(st.book(1).map(ClientBook::checksum), Some(good));
        assert_eq!(st.checksums(), 2);
    }
}
