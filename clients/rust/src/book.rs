//! Order books as the client holds them, and the book checksum of protocol 1.1 (§3.2).
//!
//! A [`Book`] is rebuilt from snapshots (which replace it) and deltas (qty 0 removes a level);
//! the server keeps the client's window of `depth` levels, so the book holds exactly what the
//! records say. [`BookView`] is the cheap, read-only handle handed out in events.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::wire::{Level, format_decimal};

/// Levels per side the checksum covers at most (§3.2).
pub const CHECKSUM_LEVELS: usize = 10;

/// A price-level book of one (symbol, depth) stream.
#[derive(Clone, PartialEq, Eq)]
pub struct Book {
    symbol: Arc<str>,
    depth: u16,
    px_decimals: u8,
    qty_decimals: u8,
    seq: u64,
    bids: BTreeMap<Reverse<i64>, i64>,
    asks: BTreeMap<i64, i64>,
}

impl fmt::Debug for Book {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Book")
            .field("symbol", &self.symbol)
            .field("depth", &self.depth)
            .field("seq", &self.seq)
            .field("best_bid", &self.best_bid())
            .field("best_ask", &self.best_ask())
            .field("levels", &(self.bids.len(), self.asks.len()))
            .finish()
    }
}

impl Book {
    /// An empty book of `symbol` for a subscription at `depth` (0: the whole book), with the
    /// symbol's decimals from the subscribe reply.
    pub fn new(symbol: impl Into<Arc<str>>, depth: u16, px_decimals: u8, qty_decimals: u8) -> Self {
        Self {
            symbol: symbol.into(),
            depth,
            px_decimals,
            qty_decimals,
            seq: 0,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
        }
    }

    /// Replaces every level with those of a snapshot at `seq` (levels with qty 0 are none).
    pub fn replace(
        &mut self,
        seq: u64,
        bids: impl IntoIterator<Item = Level>,
        asks: impl IntoIterator<Item = Level>,
    ) {
        self.bids.clear();
        self.asks.clear();
        self.apply(seq, bids, asks);
    }

    /// Applies the levels of a delta at `seq`: each sets a price's quantity, qty 0 removes it.
    pub fn apply(
        &mut self,
        seq: u64,
        bids: impl IntoIterator<Item = Level>,
        asks: impl IntoIterator<Item = Level>,
    ) {
        self.seq = seq;
        for (px, qty) in bids {
            if qty == 0 {
                self.bids.remove(&Reverse(px));
            } else {
                self.bids.insert(Reverse(px), qty);
            }
        }
        for (px, qty) in asks {
            if qty == 0 {
                self.asks.remove(&px);
            } else {
                self.asks.insert(px, qty);
            }
        }
    }

    pub(crate) fn set_decimals(&mut self, px_decimals: u8, qty_decimals: u8) {
        self.px_decimals = px_decimals;
        self.qty_decimals = qty_decimals;
    }

    /// The symbol.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// The subscription depth (0: the whole book).
    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// The `seq` of the last record applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Prices are scaled by `10^px_decimals`.
    pub fn px_decimals(&self) -> u8 {
        self.px_decimals
    }

    /// Quantities are scaled by `10^qty_decimals`.
    pub fn qty_decimals(&self) -> u8 {
        self.qty_decimals
    }

    /// Bid levels `(price, qty)`, best (highest) first.
    pub fn bids(&self) -> impl ExactSizeIterator<Item = Level> + DoubleEndedIterator + '_ {
        self.bids.iter().map(|(Reverse(p), q)| (*p, *q))
    }

    /// Ask levels `(price, qty)`, best (lowest) first.
    pub fn asks(&self) -> impl ExactSizeIterator<Item = Level> + DoubleEndedIterator + '_ {
        self.asks.iter().map(|(p, q)| (*p, *q))
    }

    /// The best bid, if any.
    pub fn best_bid(&self) -> Option<Level> {
        self.bids().next()
    }

    /// The best ask, if any.
    pub fn best_ask(&self) -> Option<Level> {
        self.asks().next()
    }

    /// Levels as decimal strings, as the server's `format=json` prints them: `(bids, asks)`.
    pub fn to_decimal_strings(&self) -> (Vec<[String; 2]>, Vec<[String; 2]>) {
        let f = |(p, q): Level| {
            [
                format_decimal(p, self.px_decimals),
                format_decimal(q, self.qty_decimals),
            ]
        };
        (self.bids().map(f).collect(), self.asks().map(f).collect())
    }

    /// The checksum of protocol 1.1 (§3.2) over this book at its depth.
    pub fn checksum(&self) -> u32 {
        checksum(self.depth, self.bids(), self.asks())
    }
}

/// The book checksum of protocol 1.1 (§3.2): CRC-32 (IEEE) over the top `min(10, depth)`
/// levels of each side (`depth` 0 counts as unlimited), bids best first then asks best first,
/// each level as `i64 price` then `i64 qty`, little-endian.
///
/// ```
/// use tickcast_client::book::checksum;
/// assert_eq!(checksum(10, [], []), 0, "an empty book");
/// let c = checksum(1, [(100, 5), (99, 1)], [(101, 7)]);
/// assert_eq!(c, checksum(1, [(100, 5)], [(101, 7)]), "depth 1 covers one level per side");
/// ```
pub fn checksum(
    depth: u16,
    bids: impl IntoIterator<Item = Level>,
    asks: impl IntoIterator<Item = Level>,
) -> u32 {
    let n = match usize::from(depth) {
        0 => CHECKSUM_LEVELS,
        d => d.min(CHECKSUM_LEVELS),
    };
    // One buffer of at most 2 x 10 levels, hashed at once: crc32fast's fast path wants long
    // inputs (16-byte updates cost several times more).
    let mut buf = [0u8; 2 * CHECKSUM_LEVELS * 16];
    let mut len = 0;
    for (p, q) in bids.into_iter().take(n).chain(asks.into_iter().take(n)) {
        buf[len..len + 8].copy_from_slice(&p.to_le_bytes());
        buf[len + 8..len + 16].copy_from_slice(&q.to_le_bytes());
        len += 16;
    }
    crc32fast::hash(&buf[..len])
}

/// A read-only view of a book as of one moment, cheap to clone and to send across tasks.
///
/// The client shares the book with the view until it changes the book again (copy on write),
/// so holding a view costs a copy of the book only when the client must apply records to it
/// while the view is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookView(pub(crate) Arc<Book>);

impl std::ops::Deref for BookView {
    type Target = Book;

    fn deref(&self) -> &Book {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_deltas() {
        let mut b = Book::new("X", 10, 2, 6);
        b.replace(5, [(100, 1), (102, 2), (101, 0)], [(105, 4), (103, 5)]);
        assert_eq!(b.bids().collect::<Vec<_>>(), vec![(102, 2), (100, 1)]);
        assert_eq!(b.asks().collect::<Vec<_>>(), vec![(103, 5), (105, 4)]);
        b.apply(6, [(102, 0), (99, 3)], [(104, 1)]);
        assert_eq!(b.seq(), 6);
        assert_eq!(b.bids().collect::<Vec<_>>(), vec![(100, 1), (99, 3)]);
        assert_eq!(b.best_ask(), Some((103, 5)));
        let (bids, _) = b.to_decimal_strings();
        assert_eq!(bids[0], ["1.00".to_owned(), "0.000001".to_owned()]);
    }

    #[test]
    fn checksum_is_crc32_of_the_top_levels() {
        // Reference value computed by hand from the §3.2 byte layout with crc32fast's one-shot.
        let mut bytes = Vec::new();
        for (p, q) in [(100i64, 1i64), (99, 2), (101, 3)] {
            bytes.extend_from_slice(&p.to_le_bytes());
            bytes.extend_from_slice(&q.to_le_bytes());
        }
        let want = crc32fast::hash(&bytes);
        assert_eq!(checksum(25, [(100, 1), (99, 2)], [(101, 3)]), want);
        assert_eq!(checksum(0, [(100, 1), (99, 2)], [(101, 3)]), want);
        // Only ten levels count, even at depth 0 or 100.
        let many: Vec<Level> = (0..20).map(|i| (1000 - i, 1)).collect();
        assert_eq!(
            checksum(0, many.clone(), []),
            checksum(10, many[..10].to_vec(), [])
        );
        assert_eq!(checksum(100, many.clone(), []), checksum(0, many, []));
        // The well-known CRC-32 check value of "123456789".
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }
}
