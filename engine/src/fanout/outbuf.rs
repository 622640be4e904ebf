//! A connection's bounded out-buffer: a queue of chunks that are written with one `writev`.
//!
//! Records are shared `Bytes` (encoded once by the ingester, referenced by every subscriber), so
//! a message is queued as a small inline header chunk followed by the shared record chunks; no
//! record is copied per subscriber. The buffer counts the bytes it owes and refuses a message
//! that would pass its bound: the shard then evicts the connection (close 1013).
//!
//! Message boundaries are kept so that an eviction can drop every message that has not started
//! yet while finishing the one that has (a half-written frame would corrupt the stream and the
//! close frame behind it).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Largest chunk stored inline (a frame header plus a batch header fit).
pub const INLINE_CAP: usize = 24;
/// Largest chunk in the queue (offsets into the front one are kept in 31 bits).
const MAX_CHUNK: usize = (1 << 31) - 1;
/// [`OutBuf`]'s `front`: a message has started going out.
const MID_MESSAGE: u32 = 1 << 31;

#[derive(Debug)]
enum Chunk {
    Inline { buf: [u8; INLINE_CAP], len: u8 },
    Shared(Bytes),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { buf, len } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Self::Shared(b) => b,
        }
    }
}

#[derive(Debug)]
struct Entry {
    chunk: Chunk,
    end_of_message: bool,
}

/// The message did not fit: the connection owes too much already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out-buffer bound of {limit} bytes passed ({queued} queued, {wanted} more wanted)")]
pub struct Overflow {
    /// The bound.
    pub limit: usize,
    /// Bytes queued before the refused message.
    pub queued: usize,
    /// Size of the refused message.
    pub wanted: usize,
}

/// A bound in the 32 bits [`OutBuf`] keeps.
fn clamp_limit(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

/// Bounded queue of outgoing bytes for one connection.
#[derive(Debug)]
pub struct OutBuf {
    entries: VecDeque<Entry>,
    queued: usize,
    /// Bytes of the front chunk already written (low 31 bits: chunks are at most
    /// [`MAX_CHUNK`] bytes) and, in the top bit ([`MID_MESSAGE`]), whether a message has
    /// started going out. Packed: one per connection, and 8 bytes less each.
    front: u32,
    /// The bound, in 32 bits (one per connection: 8 bytes less each); larger bounds are
    /// clamped to 4 GiB - 1.
    limit: u32,
}

impl OutBuf {
    /// An empty buffer that owes at most `limit` bytes of data messages.
    pub fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            queued: 0,
            front: 0,
            limit: clamp_limit(limit),
        }
    }

    /// Bytes of the front chunk already written.
    fn front_offset(&self) -> usize {
        (self.front & !MID_MESSAGE) as usize
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The bound in bytes.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Changes the bound (for later messages; nothing queued is dropped).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = clamp_limit(limit);
    }

    /// Checks that `bytes` more fit under the bound.
    ///
    /// # Errors
    /// [`Overflow`] when they do not; the caller evicts the connection.
    pub fn reserve(&self, bytes: usize) -> Result<(), Overflow> {
        if self.queued.saturating_add(bytes) > self.limit() {
            Err(Overflow {
                limit: self.limit(),
                queued: self.queued,
                wanted: bytes,
            })
        } else {
            Ok(())
        }
    }

    /// Queues a small piece (copied inline when it fits `INLINE_CAP`).
    pub fn push_small(&mut self, data: &[u8], end_of_message: bool) {
        let chunk = if data.len() <= INLINE_CAP {
            let mut buf = [0u8; INLINE_CAP];
            buf[..data.len()].copy_from_slice(data);
            Chunk::Inline {
                buf,
                len: data.len() as u8,
            }
        } else if data.len() > MAX_CHUNK {
            return self.push_oversized(Bytes::copy_from_slice(data), end_of_message);
        } else {
            Chunk::Shared(Bytes::copy_from_slice(data))
        };
        self.push(chunk, end_of_message);
    }

    /// Queues a shared chunk without copying it.
    pub fn push_shared(&mut self, data: Bytes, end_of_message: bool) {
        if data.len() > MAX_CHUNK {
            return self.push_oversized(data, end_of_message);
        }
        self.push(Chunk::Shared(data), end_of_message);
    }

    /// Offsets into a chunk are kept in 31 bits: a larger piece (the engine makes none:
    /// messages are bounded far below) goes in as several chunks.
    #[cold]
    fn push_oversized(&mut self, mut data: Bytes, end_of_message: bool) {
        while data.len() > MAX_CHUNK {
            let head = data.split_to(MAX_CHUNK);
            self.push(Chunk::Shared(head), false);
        }
        self.push(Chunk::Shared(data), end_of_message);
    }

    fn push(&mut self, chunk: Chunk, end_of_message: bool) {
        let n = chunk.as_slice().len();
        if n == 0 && !end_of_message {
            return;
        }
        self.queued += n;
        self.entries.push_back(Entry {
            chunk,
            end_of_message,
        });
    }

    /// Fills `out` with the queued bytes in order, for one `writev`; returns how many slices.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if n == out.len() {
                break;
            }
            let s = e.chunk.as_slice();
            let s = if i == 0 {
                s.get(self.front_offset()..).unwrap_or_default()
            } else {
                s
            };
            if s.is_empty() {
                continue;
            }
            out[n] = IoSlice::new(s);
            n += 1;
        }
        n
    }

    /// Marks `written` bytes as sent (the count a `writev` returned).
    pub fn advance(&mut self, mut written: usize) {
        self.queued = self.queued.saturating_sub(written);
        while let Some(front) = self.entries.front() {
            let remaining = front.chunk.as_slice().len() - self.front_offset();
            if written < remaining {
                if written > 0 {
                    // Less than the chunk's length, which fits 31 bits.
                    self.front = (self.front + written as u32) | MID_MESSAGE;
                }
                return;
            }
            written -= remaining;
            self.front = if front.end_of_message { 0 } else { MID_MESSAGE };
            self.entries.pop_front();
        }
    }

    /// Gives the queue's storage back to the allocator when nothing is queued (an idle
    /// connection then holds no out-buffer memory; the next message allocates again).
    pub fn release_storage(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
            self.front &= MID_MESSAGE;
        }
    }

    /// [`release_storage`](Self::release_storage) when the queue's capacity is at most
    /// `entries` (a busy connection keeps its larger queue).
    pub fn release_storage_if_at_most(&mut self, entries: usize) {
        if self.entries.capacity() <= entries {
            self.release_storage();
        }
    }

    /// Drops every message that has not started going out, finishing the one that has.
    /// Returns the bytes dropped.
    pub fn discard_unsent(&mut self) -> usize {
        let keep = if self.front != 0 {
            self.entries
                .iter()
                .position(|e| e.end_of_message)
                .map_or(self.entries.len(), |p| p + 1)
        } else {
            0
        };
        let before = self.queued;
        while self.entries.len() > keep {
            if let Some(e) = self.entries.pop_back() {
                self.queued -= e.chunk.as_slice().len();
            }
        }
        before - self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(buf: &mut OutBuf, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = buf.io_slices(&mut slices);
            let mut take = max;
            let mut written = 0;
            for s in &slices[..n] {
                let k = s.len().min(take);
                out.extend_from_slice(&s[..k]);
                take -= k;
                written += k;
            }
            buf.advance(written);
        }
        out
    }

    #[test]
    fn writes_in_order_across_partial_writes() {
        let mut b = OutBuf::new(1 << 20);
        b.push_small(b"hd", false);
        b.push_shared(Bytes::from_static(b"record-1"), false);
        b.push_shared(Bytes::from_static(b"record-2"), true);
        b.push_small(b"x", true);
        assert_eq!(b.len(), 2 + 8 + 8 + 1);
        assert_eq!(drain(&mut b, 3), b"hdrecord-1record-2x");
        assert!(b.is_empty());
    }

    #[test]
    fn bound_is_enforced_by_reserve() {
        let mut b = OutBuf::new(10);
        assert!(b.reserve(10).is_ok());
        b.push_shared(Bytes::from_static(b"12345678"), true);
        let e = b.reserve(3).unwrap_err();
        assert_eq!((e.limit, e.queued, e.wanted), (10, 8, 3));
    }

    #[test]
    fn discard_keeps_the_message_being_written() {
        let mut b = OutBuf::new(1 << 20);
        b.push_small(b"AA", false);
        b.push_shared(Bytes::from_static(b"aaaa"), true);
        b.push_small(b"BB", false);
        b.push_shared(Bytes::from_static(b"bbbb"), true);
        // Write 3 bytes: inside message A.
        let mut slices = [IoSlice::new(&[]); 4];
        let _ = b.io_slices(&mut slices);
        b.advance(3);
        assert_eq!(b.discard_unsent(), 6);
        b.push_small(b"CLOSE", true);
        assert_eq!(drain(&mut b, 100), b"aaaCLOSE");
    }

    #[test]
    fn discard_drops_everything_between_messages() {
        let mut b = OutBuf::new(1 << 20);
        b.push_small(b"AA", true);
        b.push_small(b"BB", true);
        let mut slices = [IoSlice::new(&[]); 4];
        let _ = b.io_slices(&mut slices);
        b.advance(2);
        assert_eq!(b.discard_unsent(), 2);
        assert!(b.is_empty());
    }

    #[test]
    fn io_slices_is_capped_by_the_array() {
        let mut b = OutBuf::new(1 << 20);
        for _ in 0..10 {
            b.push_small(b"z", true);
        }
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(b.io_slices(&mut slices), 4);
    }
}
