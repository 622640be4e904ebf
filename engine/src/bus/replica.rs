//! An edge's copy of one book stream, sans-IO: the top `depth` levels a client of the stream
//! holds, applied from the stream's binary records, so that the edge can make conflated
//! snapshots (`max_hz` tiers and the pressure ladder, docs/protocol.md §3.3 and §8.4) the way
//! a standalone ingester makes them from its books.
//!
//! An edge has no book of its own: it forwards the ingest node's records. A stream with
//! conflated subscribers keeps a [`Replica`], seeded from a snapshot record (the join's or a
//! fresh one) and moved by every record forwarded after it. At a tier's tick the edge encodes
//! the replica once per format ([`Replica::encode`]) and every subscriber of the tier shares
//! those bytes. The replica checks every record's checksum (protocol 1.1 §3.2) against its
//! levels after applying it: one that does not match, or a record that does not parse, leaves
//! it unseeded (no snapshot is made from it) until the next snapshot seeds it again.

use bytes::{Bytes, BytesMut};

use crate::book::{Book, BookError, DEPTHS, Level, Side, WindowDeltas};
use crate::fanout::Format;
use crate::wire::{
    self, BOOK_BODY_HEADER_LEN, FLAG_CHECKSUM, FLAG_SNAPSHOT, LEVEL_LEN, RECORD_HEADER_LEN,
    RecordHeader, RecordKind, SymbolMeta,
};

/// A record the replica cannot apply: it is left unseeded until the next snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The record is shorter than its header, its length field or its level counts say.
    #[error("truncated book record")]
    Truncated,
    /// Not a book record (snapshot or delta).
    #[error("not a book record (kind {0})")]
    NotBook(u8),
    /// A delta arrived before any snapshot seeded the replica.
    #[error("delta before a snapshot")]
    Unseeded,
    /// A level the book refuses (negative quantity, duplicate or empty snapshot level).
    #[error("bad level: {0}")]
    Level(#[from] BookError),
    /// The record's checksum does not match the levels after applying it.
    #[error("checksum {got:#010x} after seq {seq}, the replica has {want:#010x}")]
    Checksum {
        /// The record's seq.
        seq: u64,
        /// The checksum the record carries.
        got: u32,
        /// The replica's after applying it.
        want: u32,
    },
}

/// The top levels of one book stream (one depth), as its clients hold them.
#[derive(Debug, Clone)]
pub struct Replica {
    depth_idx: usize,
    book: Book,
    scratch: WindowDeltas,
    header: Option<RecordHeader>,
    bids: Vec<Level>,
    asks: Vec<Level>,
}

impl Replica {
    /// An unseeded replica of a book stream at depth index `depth_idx` (into [`DEPTHS`]).
    #[must_use]
    pub fn new(depth_idx: usize) -> Self {
        let mut scratch = WindowDeltas::new();
        // The replica *is* a window: nothing to record about deeper ones.
        scratch.set_watched(0);
        Self {
            depth_idx: depth_idx.min(DEPTHS.len() - 1),
            book: Book::new(),
            scratch,
            header: None,
            bids: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// Seeded by a snapshot, and every record since applied cleanly.
    #[must_use]
    pub fn is_seeded(&self) -> bool {
        self.header.is_some()
    }

    /// The seq of the last record applied (`None`: unseeded).
    #[must_use]
    pub fn seq(&self) -> Option<u64> {
        self.header.map(|h| h.seq)
    }

    /// Forgets its levels: it waits for a snapshot.
    pub fn unseed(&mut self) {
        self.header = None;
        self.book.clear();
    }

    /// Applies one binary book record of the stream (a snapshot replaces the levels, a delta
    /// sets and removes them).
    ///
    /// # Errors
    /// [`ReplicaError`] when the record does not parse, is not a book record, is a delta
    /// before any snapshot, or its checksum disagrees; the replica is then unseeded.
    pub fn apply(&mut self, record: &[u8]) -> Result<(), ReplicaError> {
        let r = self.apply_inner(record);
        if r.is_err() {
            self.unseed();
        }
        r
    }

    fn apply_inner(&mut self, record: &[u8]) -> Result<(), ReplicaError> {
        let head = record
            .get(..RECORD_HEADER_LEN + BOOK_BODY_HEADER_LEN)
            .ok_or(ReplicaError::Truncated)?;
        let u16_at = |i: usize| usize::from(u16::from_le_bytes([head[i], head[i + 1]]));
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let len = u16_at(0);
        let Some(kind @ (RecordKind::Snapshot | RecordKind::Delta)) = RecordKind::from_u8(head[2])
        else {
            return Err(ReplicaError::NotBook(head[2]));
        };
        let flags = head[3];
        let (nb, na) = (u16_at(32), u16_at(34));
        let levels_end = RECORD_HEADER_LEN + BOOK_BODY_HEADER_LEN + LEVEL_LEN * (nb + na);
        if len != levels_end || record.len() < levels_end {
            return Err(ReplicaError::Truncated);
        }
        let level = |i: usize| {
            let at = RECORD_HEADER_LEN + BOOK_BODY_HEADER_LEN + LEVEL_LEN * i;
            let mut px = [0u8; 8];
            let mut qty = [0u8; 8];
            px.copy_from_slice(&record[at..at + 8]);
            qty.copy_from_slice(&record[at + 8..at + 16]);
            Level {
                px: i64::from_le_bytes(px),
                qty: i64::from_le_bytes(qty),
            }
        };
        let snapshot = kind == RecordKind::Snapshot || flags & FLAG_SNAPSHOT != 0;
        if snapshot {
            self.bids.clear();
            self.asks.clear();
            self.bids.extend((0..nb).map(level));
            self.asks.extend((nb..nb + na).map(level));
            self.book.load_snapshot(&self.bids, &self.asks)?;
        } else {
            if self.header.is_none() {
                return Err(ReplicaError::Unseeded);
            }
            self.scratch.clear();
            for i in 0..nb + na {
                let side = if i < nb { Side::Bid } else { Side::Ask };
                let l = level(i);
                self.book.apply(side, l.px, l.qty, &mut self.scratch)?;
            }
        }
        let seq = u64_at(8);
        if flags & FLAG_CHECKSUM != 0 {
            let got = u32::from_le_bytes([head[36], head[37], head[38], head[39]]);
            let want = self.checksum();
            if got != want {
                return Err(ReplicaError::Checksum { seq, got, want });
            }
        }
        self.header = Some(RecordHeader {
            kind: RecordKind::Snapshot,
            flags: FLAG_SNAPSHOT,
            sid: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
            seq,
            exch_ts: u64_at(16),
            recv_ts: u64_at(24),
        });
        Ok(())
    }

    fn top(&self) -> (&[Level], &[Level]) {
        let n = usize::from(DEPTHS[self.depth_idx]);
        (self.book.top(Side::Bid, n), self.book.top(Side::Ask, n))
    }

    fn checksum(&self) -> u32 {
        let (bids, asks) = self.top();
        wire::book_checksum(bids, asks, wire::checksum_levels(DEPTHS[self.depth_idx]))
    }

    /// The snapshot record of the levels now (flagged, with checksum, the seq and timestamps
    /// of the last record applied), in `format` (`meta` names the symbol in JSON); `None` when
    /// unseeded or too large for a record.
    #[must_use]
    pub fn encode(&self, format: Format, meta: &SymbolMeta) -> Option<Bytes> {
        let hdr = self.header?;
        let (bids, asks) = self.top();
        let crc = self.checksum();
        let mut out = BytesMut::new();
        match format {
            Format::Binary => wire::try_encode_book_crc(&mut out, &hdr, bids, asks, crc).ok()?,
            Format::Json => {
                out.extend_from_slice(b",");
                wire::encode_book_json_crc(&mut out, meta, &hdr, bids, asks, crc);
            }
        }
        Some(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> SymbolMeta {
        SymbolMeta {
            symbol: "BTC-USD".into(),
            sid: 3,
            px_decimals: 2,
            qty_decimals: 4,
        }
    }

    fn hdr(kind: RecordKind, seq: u64) -> RecordHeader {
        RecordHeader {
            kind,
            flags: if kind == RecordKind::Snapshot {
                FLAG_SNAPSHOT
            } else {
                0
            },
            sid: 3,
            seq,
            exch_ts: seq * 10,
            recv_ts: seq * 10 + 1,
        }
    }

    /// A record of `book`'s top `depth_idx` window, or of the window changes, as the ingest
    /// node encodes them (with the checksum of the client's book after it).
    fn record(
        kind: RecordKind,
        seq: u64,
        d: usize,
        bids: &[Level],
        asks: &[Level],
        book: &Book,
    ) -> Bytes {
        let n = usize::from(DEPTHS[d]);
        let crc = wire::book_checksum(
            book.top(Side::Bid, n),
            book.top(Side::Ask, n),
            wire::checksum_levels(DEPTHS[d]),
        );
        let mut out = BytesMut::new();
        wire::try_encode_book_crc(&mut out, &hdr(kind, seq), bids, asks, crc).unwrap();
        out.freeze()
    }

    fn snapshot_of(book: &Book, d: usize, seq: u64, format: Format) -> Bytes {
        let n = usize::from(DEPTHS[d]);
        let (bids, asks) = (book.top(Side::Bid, n), book.top(Side::Ask, n));
        let crc = wire::book_checksum(bids, asks, wire::checksum_levels(DEPTHS[d]));
        let mut out = BytesMut::new();
        match format {
            Format::Binary => {
                wire::try_encode_book_crc(
                    &mut out,
                    &hdr(RecordKind::Snapshot, seq),
                    bids,
                    asks,
                    crc,
                )
                .unwrap();
            }
            Format::Json => {
                out.extend_from_slice(b",");
                wire::encode_book_json_crc(
                    &mut out,
                    &meta(),
                    &hdr(RecordKind::Snapshot, seq),
                    bids,
                    asks,
                    crc,
                );
            }
        }
        out.freeze()
    }

    proptest! {
        /// Fed the ingest node's records of one depth (a snapshot, then the window deltas of
        /// random book changes), the replica's snapshot at every seq is byte for byte the one
        /// the ingest node makes from its whole book, in both formats, at every depth.
        #[test]
        fn replica_snapshots_equal_the_ingest_nodes(
            seed in proptest::collection::vec((any::<bool>(), 90i64..110, 0i64..4), 1..200),
            d in 0usize..DEPTHS.len(),
        ) {
            let mut book = Book::new();
            let mut windows = WindowDeltas::new();
            book.load_snapshot(
                &[Level { px: 95, qty: 1 }, Level { px: 94, qty: 2 }],
                &[Level { px: 105, qty: 1 }],
            ).unwrap();
            let mut r = Replica::new(d);
            prop_assert_eq!(r.encode(Format::Binary, &meta()), None);
            let mut seq = 1;
            let n = usize::from(DEPTHS[d]);
            let first = record(RecordKind::Snapshot, seq, d, book.top(Side::Bid, n), book.top(Side::Ask, n), &book);
            r.apply(&first).unwrap();
            for (bid, px, qty) in seed {
                // Bids below 100, asks above: the book never crosses.
                let (side, px) = if bid { (Side::Bid, px - 11) } else { (Side::Ask, px + 11) };
                windows.clear();
                book.apply(side, px, qty, &mut windows).unwrap();
                windows.finish();
                if windows.is_empty(d) {
                    continue;
                }
                seq += 1;
                let delta = record(RecordKind::Delta, seq, d, windows.bids(d), windows.asks(d), &book);
                r.apply(&delta).unwrap();
                prop_assert_eq!(r.seq(), Some(seq));
                for format in [Format::Binary, Format::Json] {
                    prop_assert_eq!(r.encode(format, &meta()), Some(snapshot_of(&book, d, seq, format)));
                }
            }
        }
    }

    #[test]
    fn bad_records_unseed_it_and_never_panic() {
        let mut book = Book::new();
        book.load_snapshot(&[Level { px: 9, qty: 1 }], &[Level { px: 11, qty: 2 }])
            .unwrap();
        let snap = record(RecordKind::Snapshot, 1, 1, book.bids(), book.asks(), &book);
        let mut r = Replica::new(1);
        // A delta before any snapshot.
        assert_eq!(r.apply(&snap[..]).map(|()| r.seq()), Ok(Some(1)));
        r.unseed();
        let mut delta = snap.to_vec();
        delta[2] = RecordKind::Delta as u8;
        delta[3] = FLAG_CHECKSUM;
        assert_eq!(r.apply(&delta), Err(ReplicaError::Unseeded));
        // Cut anywhere: an error, never a panic; the replica is unseeded.
        for n in 0..snap.len() {
            r.apply(&snap).unwrap();
            assert_eq!(r.apply(&snap[..n]), Err(ReplicaError::Truncated), "{n}");
            assert!(!r.is_seeded());
        }
        // Counts that do not match the length; a trade; a bad checksum; a negative quantity.
        let mut counts = snap.to_vec();
        counts[32] = 7;
        assert_eq!(r.apply(&counts), Err(ReplicaError::Truncated));
        let mut trade = snap.to_vec();
        trade[2] = RecordKind::Trade as u8;
        assert_eq!(r.apply(&trade), Err(ReplicaError::NotBook(3)));
        let mut crc = snap.to_vec();
        crc[36] ^= 1;
        assert!(matches!(
            r.apply(&crc),
            Err(ReplicaError::Checksum { seq: 1, .. })
        ));
        assert_eq!(r.encode(Format::Binary, &meta()), None);
        r.apply(&snap).unwrap();
        let mut neg = delta.clone();
        neg[48..56].copy_from_slice(&(-5i64).to_le_bytes());
        assert!(matches!(r.apply(&neg), Err(ReplicaError::Level(_))));
        assert!(!r.is_seeded());
    }
}
