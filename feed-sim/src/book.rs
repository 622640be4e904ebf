//! One side of an L2 book: a sorted vector with the best level last.
//!
//! Order flow concentrates near the touch, so keeping the best level at the end of the
//! vector makes the common inserts and removes cheap (short memmoves at the tail).

use crate::exchange::Side;

/// A price level: scaled integer price and quantity (quantity always > 0 in a book).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level {
    pub(crate) px: i64,
    pub(crate) qty: i64,
}

/// Levels of one side, sorted so that the best level is last.
#[derive(Debug, Clone)]
pub(crate) struct SideBook {
    side: Side,
    /// Bids ascending by price, asks descending by price: best last either way.
    levels: Vec<Level>,
}

impl SideBook {
    pub(crate) fn new(side: Side, capacity: usize) -> Self {
        Self {
            side,
            levels: Vec::with_capacity(capacity),
        }
    }

    /// Sort key that is ascending towards the best level.
    #[inline]
    fn key(&self, px: i64) -> i64 {
        match self.side {
            Side::Buy => px,
            Side::Sell => -px,
        }
    }

    /// Number of levels.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.levels.len()
    }

    /// Best level, if any.
    #[inline]
    pub(crate) fn best(&self) -> Option<Level> {
        self.levels.last().copied()
    }

    /// Worst (furthest from the touch) level, if any.
    #[inline]
    pub(crate) fn worst(&self) -> Option<Level> {
        self.levels.first().copied()
    }

    /// The level `n` places from the touch (0 = best).
    #[inline]
    pub(crate) fn nth_best(&self, n: usize) -> Option<Level> {
        let len = self.levels.len();
        if n < len {
            Some(self.levels[len - 1 - n])
        } else {
            None
        }
    }

    /// Levels best first.
    pub(crate) fn iter_best_first(&self) -> impl ExactSizeIterator<Item = Level> + '_ {
        self.levels.iter().rev().copied()
    }

    /// Index where `px` is or would be inserted.
    #[inline]
    fn position(&self, px: i64) -> Result<usize, usize> {
        let k = self.key(px);
        let at = self.levels.partition_point(|l| self.key(l.px) < k);
        match self.levels.get(at) {
            Some(l) if l.px == px => Ok(at),
            _ => Err(at),
        }
    }

    /// Quantity resting at `px` (0 if none).
    #[cfg(test)]
    pub(crate) fn qty_at(&self, px: i64) -> i64 {
        match self.position(px) {
            Ok(i) => self.levels[i].qty,
            Err(_) => 0,
        }
    }

    /// Sets the quantity at `px`: inserts, updates or (qty 0) removes the level.
    pub(crate) fn set(&mut self, px: i64, qty: i64) {
        match (self.position(px), qty > 0) {
            (Ok(i), true) => self.levels[i].qty = qty,
            (Ok(i), false) => {
                self.levels.remove(i);
            }
            (Err(i), true) => self.levels.insert(i, Level { px, qty }),
            (Err(_), false) => {}
        }
    }

    /// Appends a level that is worse than every level present (used to build books).
    pub(crate) fn push_worse(&mut self, px: i64, qty: i64) {
        debug_assert!(
            self.levels
                .first()
                .is_none_or(|l| self.key(px) < self.key(l.px))
        );
        self.levels.insert(0, Level { px, qty });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_keep_best_last() {
        let mut bids = SideBook::new(Side::Buy, 4);
        for px in [100, 103, 101] {
            bids.set(px, 1);
        }
        assert_eq!(bids.best().map(|l| l.px), Some(103));
        assert_eq!(bids.worst().map(|l| l.px), Some(100));
        let mut asks = SideBook::new(Side::Sell, 4);
        for px in [110, 107, 109] {
            asks.set(px, 2);
        }
        assert_eq!(asks.best().map(|l| l.px), Some(107));
        let order: Vec<i64> = asks.iter_best_first().map(|l| l.px).collect();
        assert_eq!(order, vec![107, 109, 110]);
        asks.set(107, 0);
        assert_eq!(asks.best().map(|l| l.px), Some(109));
        assert_eq!(asks.qty_at(110), 2);
        assert_eq!(asks.qty_at(107), 0);
        asks.set(120, 0);
        assert_eq!(asks.len(), 2);
        asks.push_worse(130, 5);
        assert_eq!(asks.nth_best(2).map(|l| l.px), Some(130));
    }
}
