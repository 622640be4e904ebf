//! L2 order book with per-depth client windows.
//!
//! A [`Book`] holds the aggregated price levels of one symbol: bids best (highest price) first,
//! asks best (lowest price) first, as sorted `Vec`s (books hold a few hundred levels, where a
//! sorted vector beats a tree). Prices and quantities are integers scaled by the symbol's
//! decimals; there is no floating point anywhere.
//!
//! Clients hold only the top `N` levels of each side (`N` from [`DEPTHS`], 0 = whole book).
//! [`Book::apply`] records into [`WindowDeltas`] how each of those windows changed, so that a
//! client applying the deltas with set/remove semantics (qty 0 removes) holds exactly
//! `book.top(side, N)` after every update. Call order per feed update:
//!
//! 1. [`WindowDeltas::clear`],
//! 2. [`Book::apply`] once per change of the update,
//! 3. [`WindowDeltas::finish`], then read [`WindowDeltas::bids`] / [`WindowDeltas::asks`].
//!
//! In steady state nothing here allocates: the level vectors and the delta scratch vectors keep
//! their capacity.

use std::cmp::Ordering;
use std::fmt;

/// One aggregated price level: scaled price and total scaled quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Level {
    /// Price, scaled by `10^px_decimals`.
    pub px: i64,
    /// Quantity, scaled by `10^qty_decimals`. In a delta, 0 removes the level.
    pub qty: i64,
}

/// Side of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buy side; best is the highest price.
    Bid,
    /// Sell side; best is the lowest price.
    Ask,
}

impl Side {
    /// Orders two prices of this side: `Less` when `a` is better (closer to the top) than `b`.
    #[inline]
    #[must_use]
    pub fn cmp_px(self, a: i64, b: i64) -> Ordering {
        match self {
            Self::Bid => b.cmp(&a),
            Self::Ask => a.cmp(&b),
        }
    }
}

/// The depths a client may ask for; 0 means the whole book. A position in this array is a
/// "depth index" (see [`depth_index`]).
pub const DEPTHS: [u16; 5] = [1, 10, 25, 100, 0];

/// Number of supported depths (`DEPTHS.len()`).
pub const DEPTH_COUNT: usize = DEPTHS.len();

/// A set of depth indexes, bit `d` for `DEPTHS[d]` (see [`WindowDeltas::set_watched`]).
pub type DepthMask = u8;

/// Every depth index.
pub const ALL_DEPTHS: DepthMask = (1 << DEPTH_COUNT) - 1;

/// Depth index of `depth` in [`DEPTHS`], or `None` for an unsupported depth.
#[must_use]
pub fn depth_index(depth: u16) -> Option<usize> {
    DEPTHS.iter().position(|&d| d == depth)
}

/// Errors from [`Book`] operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    /// A change carried a negative quantity; the feed is corrupt, resync the symbol.
    #[error("negative quantity {qty} at {side:?} price {px}")]
    NegativeQty {
        /// Side of the change.
        side: Side,
        /// Price of the change.
        px: i64,
        /// The offending quantity.
        qty: i64,
    },
    /// A snapshot level had a quantity of zero or less; the snapshot is unusable, request another.
    #[error("snapshot level at {side:?} price {px} has non-positive quantity {qty}")]
    SnapshotQty {
        /// Side of the level.
        side: Side,
        /// Price of the level.
        px: i64,
        /// The offending quantity.
        qty: i64,
    },
    /// A snapshot listed the same price twice on one side; the snapshot is unusable, request another.
    #[error("snapshot lists {side:?} price {px} twice")]
    DuplicatePrice {
        /// Side of the duplicate.
        side: Side,
        /// The duplicated price.
        px: i64,
    },
}

/// The L2 book of one symbol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    bids: Levels,
    asks: Levels,
}

/// One side's levels, best first, in a vector with free room at both ends: an insert or a
/// removal shifts whichever part of the side is shorter. Feed changes cluster near the touch,
/// where a plain `Vec` would move nearly the whole side (a few KiB) on every insert or removal.
#[derive(Clone, Default)]
struct Levels {
    /// `buf[start..]` are the levels; `buf[..start]` is free room (stale values).
    buf: Vec<Level>,
    start: usize,
}

impl Levels {
    #[inline]
    fn as_slice(&self) -> &[Level] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    #[inline]
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> Option<&mut Level> {
        self.buf.get_mut(self.start + i)
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    fn extend_from_slice(&mut self, levels: &[Level]) {
        self.buf.extend_from_slice(levels);
    }

    fn sort_unstable_by(&mut self, cmp: impl FnMut(&Level, &Level) -> Ordering) {
        let start = self.start;
        self.buf[start..].sort_unstable_by(cmp);
    }

    /// Inserts `level` at position `i` (`i <= len`).
    #[inline]
    fn insert(&mut self, i: usize, level: Level) {
        if i < self.len() / 2 {
            if self.start == 0 {
                self.make_room();
            }
            let s = self.start;
            self.buf.copy_within(s..s + i, s - 1);
            self.start = s - 1;
            self.buf[s - 1 + i] = level;
        } else {
            self.buf.insert(self.start + i, level);
        }
    }

    /// Removes the level at position `i` (`i < len`).
    #[inline]
    fn remove(&mut self, i: usize) {
        if i < self.len() / 2 {
            let s = self.start;
            self.buf.copy_within(s..s + i, s + 1);
            self.start = s + 1;
            // Removals at the top that are not refilled there would let the free room grow
            // without bound: give it back once it exceeds the side itself.
            if self.start > self.len().max(64) {
                self.buf.drain(..self.start);
                self.start = 0;
            }
        } else {
            self.buf.remove(self.start + i);
        }
    }

    /// Puts free room in front of the levels (half the side, at least 8), moving them once.
    #[cold]
    fn make_room(&mut self) {
        let room = (self.len() / 2).max(8);
        self.buf
            .splice(0..0, std::iter::repeat_n(Level::default(), room));
        self.start = room;
    }
}

impl PartialEq for Levels {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Levels {}

impl fmt::Debug for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Book {
    /// An empty book.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes every level, keeping capacity.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// Bid levels, best (highest price) first.
    #[must_use]
    pub fn bids(&self) -> &[Level] {
        self.bids.as_slice()
    }

    /// Ask levels, best (lowest price) first.
    #[must_use]
    pub fn asks(&self) -> &[Level] {
        self.asks.as_slice()
    }

    /// The best `n` levels of `side` (fewer when the side is shorter); `n == 0` gives all levels.
    #[must_use]
    pub fn top(&self, side: Side, n: usize) -> &[Level] {
        let levels = self.levels(side);
        if n == 0 {
            levels
        } else {
            &levels[..n.min(levels.len())]
        }
    }

    /// True when both sides are non-empty and the best bid is at or above the best ask
    /// (crossed or locked), which a consistent exchange book never is.
    #[must_use]
    pub fn is_crossed(&self) -> bool {
        match (self.bids().first(), self.asks().first()) {
            (Some(b), Some(a)) => b.px >= a.px,
            _ => false,
        }
    }

    /// Replaces the whole book with a feed snapshot, sorting each side best first.
    ///
    /// The input may be in any order. No window deltas are produced: after a snapshot the
    /// server sends snapshot records, not deltas.
    ///
    /// # Errors
    ///
    /// [`BookError::SnapshotQty`] if a level has `qty <= 0`, [`BookError::DuplicatePrice`] if a
    /// side lists a price twice. On error the book is left empty.
    pub fn load_snapshot(&mut self, bids: &[Level], asks: &[Level]) -> Result<(), BookError> {
        let res = load_side(&mut self.bids, Side::Bid, bids)
            .and_then(|()| load_side(&mut self.asks, Side::Ask, asks));
        if res.is_err() {
            self.clear();
        }
        res
    }

    /// Applies one level change and records how every depth window changed.
    ///
    /// `qty == 0` removes the level at `px` (removing an absent level is a no-op that records
    /// nothing); `qty > 0` sets the level. For each depth `N` in [`DEPTHS`] this records into
    /// `windows`:
    /// - a level set or removed inside the top `N`;
    /// - the level that enters the window at position `N - 1` when a removal inside it pulls the
    ///   next level up;
    /// - the level at position `N - 1` that leaves (recorded with qty 0) when an insert inside
    ///   the window pushes it out.
    ///
    /// Several changes may be applied into the same `windows` before one
    /// [`WindowDeltas::finish`]. Only the depths `windows` watches are recorded (all by
    /// default, see [`WindowDeltas::set_watched`]); the book itself always changes.
    ///
    /// # Errors
    ///
    /// [`BookError::NegativeQty`] if `qty < 0`; the book and `windows` are unchanged.
    pub fn apply(
        &mut self,
        side: Side,
        px: i64,
        qty: i64,
        windows: &mut WindowDeltas,
    ) -> Result<(), BookError> {
        if qty < 0 {
            return Err(BookError::NegativeQty { side, px, qty });
        }
        let levels = match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        let found = find(levels.as_slice(), side, px);
        match (found, qty) {
            (Err(_), 0) => {}
            (Ok(i), 0) => {
                levels.remove(i);
                for (d, n) in windows.sizes() {
                    if i >= n {
                        continue;
                    }
                    windows.record(d, side, Level { px, qty: 0 }, true);
                    // The level formerly at position N is now at N - 1: it enters the window.
                    if let Some(&entered) = levels.as_slice().get(n - 1) {
                        windows.record(d, side, entered, false);
                    }
                }
            }
            (Ok(i), _) => {
                let Some(level) = levels.get_mut(i) else {
                    return Ok(());
                };
                if level.qty == qty {
                    return Ok(());
                }
                level.qty = qty;
                for (d, n) in windows.sizes() {
                    if i < n {
                        windows.record(d, side, Level { px, qty }, true);
                    }
                }
            }
            (Err(i), _) => {
                levels.insert(i, Level { px, qty });
                for (d, n) in windows.sizes() {
                    if i >= n {
                        continue;
                    }
                    windows.record(d, side, Level { px, qty }, false);
                    // The level formerly at position N - 1 is now at N: it leaves the window.
                    if let Some(left) = levels.as_slice().get(n) {
                        let left = Level {
                            px: left.px,
                            qty: 0,
                        };
                        windows.record(d, side, left, true);
                    }
                }
            }
        }
        Ok(())
    }

    fn levels(&self, side: Side) -> &[Level] {
        match side {
            Side::Bid => self.bids(),
            Side::Ask => self.asks(),
        }
    }
}

/// Where `px` is (`Ok`) or would be inserted (`Err`) in `levels` (sorted best first).
///
/// Exponential search from the top: feed changes cluster near the touch, where this takes a
/// few well-predicted comparisons; deep in the book it costs about twice a binary search.
#[inline]
fn find(levels: &[Level], side: Side, px: i64) -> Result<usize, usize> {
    let better = |l: &Level| side.cmp_px(l.px, px) == Ordering::Less;
    // Find a bracket [lo, hi) holding the answer: levels[lo - 1] is better than `px`, and
    // levels[hi - 1] is not (or hi is past the end).
    let mut hi = 1;
    while hi < levels.len() && better(&levels[hi - 1]) {
        hi *= 2;
    }
    let (lo, hi) = (hi / 2, hi.min(levels.len()));
    let at = lo + levels[lo..hi].partition_point(better);
    match levels.get(at) {
        Some(l) if l.px == px => Ok(at),
        _ => Err(at),
    }
}

/// Window size of each depth index; the whole book (depth 0) is a window of `usize::MAX`
/// levels, which no book reaches.
const WINDOW_SIZES: [usize; DEPTH_COUNT] = {
    let mut sizes = [0; DEPTH_COUNT];
    let mut d = 0;
    while d < DEPTH_COUNT {
        sizes[d] = if DEPTHS[d] == 0 {
            usize::MAX
        } else {
            DEPTHS[d] as usize
        };
        d += 1;
    }
    sizes
};

/// Copies `input` into `dst`, sorted best first, and validates it.
fn load_side(dst: &mut Levels, side: Side, input: &[Level]) -> Result<(), BookError> {
    dst.clear();
    if let Some(bad) = input.iter().find(|l| l.qty <= 0) {
        return Err(BookError::SnapshotQty {
            side,
            px: bad.px,
            qty: bad.qty,
        });
    }
    dst.extend_from_slice(input);
    dst.sort_unstable_by(|a, b| side.cmp_px(a.px, b.px));
    if let Some(w) = dst.as_slice().windows(2).find(|w| w[0].px == w[1].px) {
        return Err(BookError::DuplicatePrice { side, px: w[0].px });
    }
    Ok(())
}

/// One recorded window change, before coalescing.
#[derive(Clone, Copy, Debug)]
struct Entry {
    level: Level,
    /// Write order within the update, so that the last write per price wins.
    ord: u32,
    /// Whether the price was inside the window just before this write.
    was_in_window: bool,
}

/// Raw and coalesced changes of one side of one depth window.
#[derive(Clone, Debug, Default)]
struct SideDeltas {
    raw: Vec<Entry>,
    out: Vec<Level>,
}

impl SideDeltas {
    fn clear(&mut self) {
        self.raw.clear();
        self.out.clear();
    }

    fn finish(&mut self, side: Side) {
        self.out.clear();
        match self.raw.as_slice() {
            [] => return,
            [only] => {
                if only.level.qty != 0 || only.was_in_window {
                    self.out.push(only.level);
                }
                self.raw.clear();
                return;
            }
            _ => {}
        }
        self.raw
            .sort_unstable_by(|a, b| side.cmp_px(a.level.px, b.level.px).then(a.ord.cmp(&b.ord)));
        let mut rest = self.raw.as_slice();
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .position(|e| e.level.px != first.level.px)
                .unwrap_or(rest.len());
            let (group, tail) = rest.split_at(run);
            rest = tail;
            let Some(last) = group.last() else { break };
            // A level that was not in the window before the update and is not in it after
            // (entered then left, or inserted then removed) is no change for the client.
            if last.level.qty == 0 && !first.was_in_window {
                continue;
            }
            self.out.push(last.level);
        }
        self.raw.clear();
    }
}

/// Per-depth window changes produced by [`Book::apply`], indexed by depth index (see
/// [`DEPTHS`]).
///
/// Reuse one value for every update: [`clear`](Self::clear) keeps capacity. Read the results
/// only after [`finish`](Self::finish): each depth then lists at most one level per price, best
/// first, qty 0 meaning "remove".
#[derive(Clone, Debug)]
pub struct WindowDeltas {
    windows: [[SideDeltas; 2]; DEPTH_COUNT],
    next_ord: u32,
    watched: DepthMask,
    /// Unwatched depths a change landed inside of since [`clear`](Self::clear).
    touched: DepthMask,
}

impl Default for WindowDeltas {
    fn default() -> Self {
        Self {
            windows: Default::default(),
            next_ord: 0,
            watched: ALL_DEPTHS,
            touched: 0,
        }
    }
}

impl WindowDeltas {
    /// Empty deltas, watching every depth.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records only the depth indexes in `mask` from now on (bit `d` for `DEPTHS[d]`); the
    /// others stay empty. A window nobody watches need not be computed: set this before the
    /// update's first [`Book::apply`], after [`clear`](Self::clear).
    pub fn set_watched(&mut self, mask: DepthMask) {
        self.watched = mask & ALL_DEPTHS;
    }

    /// The depth indexes recorded (see [`set_watched`](Self::set_watched)).
    #[must_use]
    pub fn watched(&self) -> DepthMask {
        self.watched
    }

    /// (depth index, window size) of every depth: watched ones record their changes, the
    /// others only that they were touched (see [`changed`](Self::changed)).
    fn sizes(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        WINDOW_SIZES.into_iter().enumerate()
    }

    /// True when the window of depth index `depth_idx` changed in this update: a watched depth
    /// has a coalesced change ([`is_empty`](Self::is_empty) is false); an unwatched one had a
    /// change land inside its window (which may have cancelled out: only its numbering sees
    /// that, and nobody watches it). Its stream's seq must advance when this is true, so that
    /// a seq names one book state whether or not the stream is watched.
    #[must_use]
    pub fn changed(&self, depth_idx: usize) -> bool {
        !self.is_empty(depth_idx) || self.touched & (1 << depth_idx) != 0
    }

    /// Forgets all recorded changes, keeping capacity. Call before each feed update.
    pub fn clear(&mut self) {
        for w in &mut self.windows {
            for s in w {
                s.clear();
            }
        }
        self.next_ord = 0;
        self.touched = 0;
    }

    /// Coalesces the changes recorded since [`clear`](Self::clear): one entry per price, the
    /// last write wins, best first; changes that cancel out for the client are dropped.
    pub fn finish(&mut self) {
        for w in &mut self.windows {
            let [bids, asks] = w;
            bids.finish(Side::Bid);
            asks.finish(Side::Ask);
        }
        self.next_ord = 0;
    }

    /// Coalesced bid changes of depth index `depth_idx` (empty for an unknown index).
    #[must_use]
    pub fn bids(&self, depth_idx: usize) -> &[Level] {
        self.side(depth_idx, Side::Bid)
    }

    /// Coalesced ask changes of depth index `depth_idx` (empty for an unknown index).
    #[must_use]
    pub fn asks(&self, depth_idx: usize) -> &[Level] {
        self.side(depth_idx, Side::Ask)
    }

    /// Coalesced changes of `side` at depth index `depth_idx` (empty for an unknown index).
    #[must_use]
    pub fn side(&self, depth_idx: usize, side: Side) -> &[Level] {
        self.windows
            .get(depth_idx)
            .map_or(&[], |w| w[side_slot(side)].out.as_slice())
    }

    /// True when depth index `depth_idx` has no coalesced change on either side.
    #[must_use]
    pub fn is_empty(&self, depth_idx: usize) -> bool {
        self.bids(depth_idx).is_empty() && self.asks(depth_idx).is_empty()
    }

    fn record(&mut self, depth_idx: usize, side: Side, level: Level, was_in_window: bool) {
        if self.watched & (1 << depth_idx) == 0 {
            self.touched |= 1 << depth_idx;
            return;
        }
        let ord = self.next_ord;
        self.next_ord = self.next_ord.wrapping_add(1);
        if let Some(w) = self.windows.get_mut(depth_idx) {
            w[side_slot(side)].raw.push(Entry {
                level,
                ord,
                was_in_window,
            });
        }
    }
}

fn side_slot(side: Side) -> usize {
    match side {
        Side::Bid => 0,
        Side::Ask => 1,
    }
}

#[cfg(test)]
mod tests;
