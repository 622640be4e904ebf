//! A ring drain's records, copied once into one shard-owned buffer, and what each connection is
//! owed from it as byte ranges (sans-IO).
//!
//! During a drain, every record some plain (uncompressed) connection gets is copied once into
//! the [`DrainArena`] ([`DrainArena::push`]), which returns its [`Span`]. A connection's
//! [`Owed`] is the list of those spans in ring order, merged when one starts where the previous
//! ended: a subscriber of every stream of the drain owes one span. At the end of the drain the
//! arena is frozen ([`DrainArena::seal`]) and each connection's messages are made of
//! [`DrainArena::slice`]s of it (one refcount per span, not per record; see
//! [`append_owed`](super::batch::append_owed)). [`DrainArena::clear`] forgets the drain once
//! every connection was flushed; the buffer's memory is reused by the next drain when no
//! out-buffer still holds a slice of it.
//!
//! A flush pass may outlive many drains (under steady load the shard drains the ring between
//! slices of one long pass, see `shard/dispatch.rs`): each drain is then a chunk of its own,
//! chunks are numbered on (wrapping, `u32`), and [`DrainArena::release_before`] drops the
//! chunks no owed entry points into any more, oldest first, without touching the others' spans.
//!
//! The arena remembers where every record starts, so that a span can be cut at a record
//! boundary when a batch must be split into several messages.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Initial (and usual) capacity of the arena's buffer.
const ARENA_BYTES: usize = 64 * 1024;
/// A buffer grown past this (a drain full of snapshots after a subscription storm or a resync)
/// is not kept for the next drain: its memory goes back once the out-buffers have written it.
const ARENA_KEEP_BYTES: usize = 4 * ARENA_BYTES;

/// Records `start..end` (byte offsets) of chunk `chunk` of the drain arena. Always starts and
/// ends at record boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    chunk: u32,
    start: u32,
    end: u32,
}

impl Span {
    /// Bytes in the span.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// True for an empty span (never returned by [`DrainArena::push`]).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The drains' records: the open buffer being filled, the frozen chunks, and record starts.
#[derive(Debug, Default)]
pub struct DrainArena {
    /// Records of the open chunk (number `base + chunks.len()`), not frozen yet.
    open: BytesMut,
    /// Number of the first chunk kept (`chunks[0]`); chunk numbers wrap.
    base: u32,
    /// Frozen chunks, from number `base` on.
    chunks: VecDeque<Bytes>,
    /// Start offset of every record, chunk after chunk (ascending within a chunk), from the
    /// first record of chunk `base` on.
    starts: Vec<u32>,
    /// Records dropped from the front of `starts` (with their chunks) since the last
    /// [`DrainArena::clear`]: `first` counts from there.
    starts_base: usize,
    /// Index (counted from `starts_base`'s origin) of each chunk's first record
    /// (`chunks.len() + 1` entries while a chunk is open: the last one is the open chunk's).
    first: VecDeque<usize>,
}

impl DrainArena {
    /// An empty arena (allocates on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies `record` into the open chunk; returns its span. Empty records get an empty span.
    ///
    /// # Panics
    /// If one chunk would pass 4 GiB (the drain's size is bounded far below that).
    pub fn push(&mut self, record: &[u8]) -> Span {
        if self.first.len() == self.chunks.len() {
            self.first.push_back(self.starts_base + self.starts.len());
            if self.open.capacity() < record.len().max(ARENA_BYTES / 2) {
                // Reuses the buffer from its start when no out-buffer holds a slice of it any
                // more; otherwise allocates a new one.
                self.open.reserve(record.len().max(ARENA_BYTES));
            }
        }
        let start = self.open.len();
        self.open.extend_from_slice(record);
        let end = self.open.len();
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
            panic!("drain arena chunk over 4 GiB");
        };
        self.starts.push(start);
        Span {
            chunk: self.next_chunk(),
            start,
            end,
        }
    }

    /// The number of the open chunk, or of the next chunk when none is open: every span pushed
    /// from now on is in this chunk or a later one.
    pub fn next_chunk(&self) -> u32 {
        self.base.wrapping_add(self.chunks.len() as u32)
    }

    /// Drops the frozen chunks numbered before `mark` (a [`DrainArena::next_chunk`] value taken
    /// earlier): no owed entry may point into them any more. Slices already taken stay valid
    /// (they hold their own reference).
    pub fn release_before(&mut self, mark: u32) {
        let n = (mark.wrapping_sub(self.base) as usize).min(self.chunks.len());
        if n == 0 {
            return;
        }
        let to = self
            .first
            .get(n)
            .copied()
            .unwrap_or(self.starts_base + self.starts.len());
        self.starts.drain(..to - self.starts_base);
        self.starts_base = to;
        self.chunks.drain(..n);
        self.first.drain(..n);
        self.base = self.base.wrapping_add(n as u32);
    }

    /// Freezes the open chunk, if any, so that its spans can be sliced. Later pushes go to a new
    /// chunk.
    pub fn seal(&mut self) {
        if self.first.len() > self.chunks.len() {
            self.chunks.push_back(self.open.split().freeze());
        }
    }

    /// Forgets every record (after every connection owed some was flushed). Keeps the memory,
    /// unless the drain made it unusually large.
    pub fn clear(&mut self) {
        self.seal();
        let grown: usize = self.chunks.iter().map(Bytes::len).sum();
        if grown + self.open.capacity() > ARENA_KEEP_BYTES {
            self.open = BytesMut::new();
        }
        self.base = self.next_chunk();
        self.chunks.clear();
        self.starts.clear();
        self.starts_base = 0;
        self.first.clear();
        if self.starts.capacity() > ARENA_KEEP_BYTES / 16 {
            self.starts = Vec::new();
        }
    }

    /// Frozen chunks held (the drains not released yet).
    pub fn held_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The bytes of `span`, shared (no copy); empty if its chunk is not sealed.
    pub fn slice(&self, span: Span) -> Bytes {
        match self.chunks.get(span.chunk.wrapping_sub(self.base) as usize) {
            Some(c) => c.slice(span.start as usize..span.end as usize),
            None => Bytes::new(),
        }
    }

    /// Record starts of chunk `chunk`.
    fn starts_of(&self, chunk: u32) -> &[u32] {
        let c = chunk.wrapping_sub(self.base) as usize;
        let Some(&from) = self.first.get(c) else {
            return &[];
        };
        let to = self
            .first
            .get(c + 1)
            .copied()
            .unwrap_or(self.starts_base + self.starts.len());
        self.starts
            .get(from - self.starts_base..to - self.starts_base)
            .unwrap_or_default()
    }

    /// Records in `span`.
    pub fn records_in(&self, span: Span) -> usize {
        let s = self.starts_of(span.chunk);
        let a = s.partition_point(|&x| x < span.start);
        let b = s.partition_point(|&x| x < span.end);
        b - a
    }

    /// Splits `span` after as many whole records as fit in `max_bytes` and `max_records`
    /// (at least one record when `at_least_one`): returns (head, head's records, rest). The
    /// head is empty when nothing fits.
    pub fn split(
        &self,
        span: Span,
        max_bytes: usize,
        max_records: usize,
        at_least_one: bool,
    ) -> (Span, usize, Span) {
        let s = self.starts_of(span.chunk);
        let a = s.partition_point(|&x| x < span.start);
        // Record boundaries after `span.start`: the next records' starts, then `span.end`.
        let bounds = s
            .get(a + 1..)
            .unwrap_or_default()
            .iter()
            .copied()
            .take_while(|&x| x < span.end)
            .chain(std::iter::once(span.end));
        let mut cut = span.start;
        let mut n = 0;
        for b in bounds {
            let fits = (b - span.start) as usize <= max_bytes && n < max_records;
            let forced = at_least_one && n == 0;
            if !(fits || forced) {
                break;
            }
            cut = b;
            n += 1;
        }
        let head = Span { end: cut, ..span };
        let rest = Span { start: cut, ..span };
        (head, n, rest)
    }
}

/// Part of what a connection is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Records of the drain arena.
    Span(Span),
    /// One record of the connection's own (a snapshot), not copied into the arena: it is
    /// large and nobody else gets it.
    Own(Bytes),
}

impl Piece {
    /// Bytes in the piece.
    pub fn len(&self) -> usize {
        match self {
            Self::Span(s) => s.len(),
            Self::Own(b) => b.len(),
        }
    }

    /// True for an empty piece.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one connection is owed from one drain: pieces (mostly spans of the arena) in ring
/// order.
///
/// The last span is kept open inline (`open`), out of the pieces' heap list: a subscriber of
/// everything adds every record of a drain to the same span, and the add then touches only this
/// struct, not a second cache line in the heap for each record. [`Owed::close`] moves it to the
/// list before [`Owed::pieces`] is read.
#[derive(Debug, Default)]
pub struct Owed {
    pieces: Vec<Piece>,
    open: Option<Span>,
    records: usize,
    bytes: usize,
}

impl Owed {
    /// Adds a record (or run of records) of `records` records; merged with the last span when
    /// it starts where that one ends.
    pub fn add(&mut self, span: Span, records: usize) {
        self.records += records;
        self.bytes += span.len();
        match &mut self.open {
            Some(last) if last.chunk == span.chunk && last.end == span.start => last.end = span.end,
            open => {
                if let Some(prev) = open.replace(span) {
                    self.pieces.push(Piece::Span(prev));
                }
            }
        }
    }

    /// Moves the open span to the pieces: call before [`Owed::pieces`] (adding may go on
    /// after).
    pub fn close(&mut self) {
        if let Some(prev) = self.open.take() {
            self.pieces.push(Piece::Span(prev));
        }
    }

    /// Adds one record of the connection's own, shared as it is.
    pub fn add_own(&mut self, record: Bytes) {
        self.close();
        self.records += 1;
        self.bytes += record.len();
        self.pieces.push(Piece::Own(record));
    }

    /// The pieces, in ring order, once [`Owed::close`]d.
    pub fn pieces(&self) -> &[Piece] {
        debug_assert!(self.open.is_none(), "Owed::pieces before Owed::close");
        &self.pieces
    }

    /// Records owed.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes owed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Gives back the list's memory when it has room for more than `keep` pieces.
    pub fn trim(&mut self, keep: usize) {
        if self.pieces.capacity() > keep {
            self.pieces = Vec::new();
        }
    }

    /// Forgets everything (keeps the memory).
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.open = None;
        self.records = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(o: &Owed, i: usize) -> Span {
        match &o.pieces()[i] {
            Piece::Span(s) => *s,
            Piece::Own(_) => panic!("not a span"),
        }
    }

    #[test]
    fn consecutive_records_merge_into_one_span() {
        let mut a = DrainArena::new();
        let mut all = Owed::default();
        let mut odd = Owed::default();
        for i in 0..6u8 {
            let s = a.push(&[i; 3]);
            all.add(s, 1);
            if i % 2 == 1 {
                odd.add(s, 1);
            }
        }
        a.seal();
        all.close();
        odd.close();
        assert_eq!(all.pieces().len(), 1);
        assert_eq!((all.records(), all.bytes()), (6, 18));
        assert_eq!(a.records_in(span(&all, 0)), 6);
        assert_eq!(odd.pieces().len(), 3);
        assert_eq!(&a.slice(span(&odd, 2))[..], &[5, 5, 5]);
        assert_eq!(a.slice(span(&all, 0)).len(), 18);
    }

    #[test]
    fn spans_do_not_merge_across_chunks() {
        let mut a = DrainArena::new();
        let mut o = Owed::default();
        o.add(a.push(b"ab"), 1);
        a.seal();
        o.add(a.push(b"cd"), 1);
        a.seal();
        o.close();
        assert_eq!(o.pieces().len(), 2);
        assert_eq!(&a.slice(span(&o, 0))[..], b"ab");
        assert_eq!(&a.slice(span(&o, 1))[..], b"cd");
        assert_eq!(a.records_in(span(&o, 1)), 1);
    }

    #[test]
    fn split_cuts_at_record_boundaries() {
        let mut a = DrainArena::new();
        let mut o = Owed::default();
        for n in [10usize, 20, 30, 40] {
            o.add(a.push(&vec![1u8; n]), 1);
        }
        a.seal();
        o.close();
        let s = span(&o, 0);
        let (h, n, r) = a.split(s, 35, 100, false);
        assert_eq!((h.len(), n, r.len()), (30, 2, 70));
        let (h, n, _) = a.split(s, 5, 100, false);
        assert_eq!((h.len(), n), (0, 0));
        let (h, n, r) = a.split(s, 5, 100, true);
        assert_eq!((h.len(), n, r.len()), (10, 1, 90));
        let (h, n, _) = a.split(s, 1000, 3, false);
        assert_eq!((h.len(), n), (60, 3));
        let (h, n, r) = a.split(r, 1000, 100, false);
        assert_eq!((h.len(), n, r.len()), (90, 3, 0));
    }

    /// Chunks released from the front leave the later ones' spans (and their record
    /// boundaries) as they were; a slice taken before the release stays readable.
    #[test]
    fn released_chunks_leave_the_later_spans_intact() {
        let mut a = DrainArena::new();
        let first = a.push(b"aa");
        a.seal();
        let kept = a.slice(first);
        let mut o = Owed::default();
        o.add(a.push(b"bbb"), 1);
        o.add(a.push(b"cccc"), 1);
        a.seal();
        let mark = a.next_chunk();
        let mut later = Owed::default();
        for n in [5usize, 6, 7] {
            later.add(a.push(&vec![n as u8; n]), 1);
        }
        a.seal();
        o.close();
        later.close();
        a.release_before(mark);
        assert!(a.slice(first).is_empty(), "chunk 0 is gone");
        assert!(a.slice(span(&o, 0)).is_empty(), "chunk 1 is gone");
        assert_eq!(&kept[..], b"aa");
        let s = span(&later, 0);
        assert_eq!(a.records_in(s), 3);
        assert_eq!(a.slice(s).len(), 18);
        let (h, n, r) = a.split(s, 11, 100, false);
        assert_eq!((h.len(), n, r.len()), (11, 2, 7));
        // Pushes go on after the release, numbered on.
        let next = a.push(b"dd");
        a.seal();
        assert_eq!(&a.slice(next)[..], b"dd");
        assert_eq!(a.records_in(next), 1);
        a.release_before(a.next_chunk());
        assert!(a.slice(next).is_empty());
        let again = a.push(b"e");
        a.seal();
        assert_eq!(&a.slice(again)[..], b"e");
    }

    /// Chunk numbers wrap: spans stay addressable across `u32::MAX`.
    #[test]
    fn chunk_numbers_wrap() {
        let mut a = DrainArena {
            base: u32::MAX - 1,
            ..DrainArena::default()
        };
        let mut spans = Vec::new();
        for i in 0..4u8 {
            spans.push(a.push(&[i; 2]));
            a.seal();
        }
        assert_eq!(spans[2].chunk, 0);
        a.release_before(spans[1].chunk.wrapping_add(1));
        assert!(a.slice(spans[1]).is_empty());
        assert_eq!(&a.slice(spans[3])[..], &[3, 3]);
        assert_eq!(a.records_in(spans[2]), 1);
    }

    /// A list grown by a storm gives its memory back; an ordinary one keeps it.
    #[test]
    fn trim_gives_back_only_a_grown_list() {
        let mut a = DrainArena::new();
        let mut o = Owed::default();
        for _ in 0..3 {
            o.add(a.push(b"x"), 1);
            a.seal();
        }
        o.close();
        o.clear();
        o.trim(64);
        assert!(o.pieces.capacity() >= 3);
        for _ in 0..100 {
            o.add_own(Bytes::from_static(b"snapshot"));
        }
        o.clear();
        o.trim(64);
        assert_eq!(o.pieces.capacity(), 0);
    }

    #[test]
    fn a_grown_buffer_is_not_kept() {
        let mut a = DrainArena::new();
        let big = vec![1u8; ARENA_KEEP_BYTES + 1];
        let _ = a.push(&big);
        a.clear();
        assert_eq!(a.open.capacity(), 0);
        let s = a.push(b"x");
        a.seal();
        assert_eq!(&a.slice(s)[..], b"x");
    }

    #[test]
    fn cleared_arena_reuses_its_buffer() {
        let mut a = DrainArena::new();
        let s = a.push(&[7u8; 100]);
        a.seal();
        let p = a.slice(s).as_ptr();
        a.clear();
        let s = a.push(&[8u8; 100]);
        a.seal();
        // Written after the first drain's bytes, in the same allocation.
        assert_eq!(a.slice(s).as_ptr(), p.wrapping_add(100));
    }
}
