//! The per-shard ring: the only data path from the ingester thread to a shard thread.
//!
//! One bounded lock-free queue per shard (crossbeam's `ArrayQueue`, Vyukov's MPMC array queue,
//! used here single-producer/single-consumer) carries [`ShardMsg`]s in the order the ingester
//! produced them. A record is encoded once and shared: the ring holds refcounted `Bytes`, so
//! pushing the same record into every interested shard's ring copies nothing.
//!
//! Wake-ups: a shard that finds its ring empty announces it is about to sleep, then blocks in
//! `epoll_wait`. The ingester wakes it through the shard's `mio::Waker` (an eventfd write) only
//! when that announcement is up, so a busy shard costs the ingester no syscall. The handshake
//! lives in `doorbell.rs`, on atomics from `sync.rs` (loom's under `cfg(loom)`), and
//! `loom_tests` proves it loses no wake-up.
//!
//! Falling behind: when a push finds the ring full, the ring is marked *lagged* and every further
//! message for that shard is dropped until the shard has seen the mark, emptied its ring and
//! cleared it. The shard then resyncs each of its subscriptions with a fresh snapshot, so no
//! subscriber silently misses data: its book is replaced and its stream continues from there.

mod doorbell;
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::fanout::{ConnId, Format, Topic};
use crate::replay::epoch::Epoch;
use crate::wire::SymbolMeta;
use doorbell::Doorbell;

/// The symbols the feed announced, in sid order (the sid is the index).
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// Metadata by sid.
    pub symbols: Vec<SymbolMeta>,
}

impl SymbolTable {
    /// Looks a symbol up by name.
    pub fn find(&self, name: &str) -> Option<&SymbolMeta> {
        self.symbols.iter().find(|m| m.symbol == name)
    }
}

/// What the ingester sends a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// A record of one stream, encoded once in one format, for every subscriber of `topic`.
    Record {
        /// The stream and format this record belongs to.
        topic: Topic,
        /// The encoded record (binary record or one JSON object).
        bytes: Bytes,
    },
    /// A status record (feed stale / resumed) for every subscriber of `sid` in `format`,
    /// whatever its channels and depth; delivered once per connection.
    Status {
        /// Symbol id.
        sid: u32,
        /// Encoding of `bytes`.
        format: crate::fanout::Format,
        /// The encoded status record.
        bytes: Bytes,
    },
    /// A snapshot answering one connection's subscription request.
    Snapshot {
        /// The connection that asked.
        conn: ConnId,
        /// The request it answers (stale answers are dropped).
        req: u32,
        /// The stream the snapshot starts (its format is the connection's).
        topic: Topic,
        /// The encoded snapshot record.
        bytes: Bytes,
    },
    /// The answer to one connection's subscribe with `resume` (protocol 1.1 §3.1): one message
    /// per subscribe, however many symbols and records, so that a thousand clients resuming at
    /// once take a thousand ring slots. Boxed: rare, and the ring's slots stay small.
    Resumed(Box<ResumeAnswer>),
}

/// A subscribe with `resume`, for the ingester (which owns the replay windows): the symbols the
/// resume names and the client's positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The asking shard.
    pub shard: usize,
    /// The asking connection.
    pub conn: ConnId,
    /// The subscribe's request number (echoed in the answer; its subscriptions carry it).
    pub req: u32,
    /// The client's epoch, when it parses as one (`None` never matches).
    pub epoch: Option<Epoch>,
    /// Depth index of the subscribe's book streams.
    pub depth_idx: usize,
    /// The connection's format.
    pub format: Format,
    /// The `max_hz` rate tier of the subscribe's book streams (`None`: deltas). A conflated
    /// book stream is made of replacing snapshots: it resumes from the current one, not from
    /// a replay window (docs/protocol.md §5.5).
    pub tier: Option<u8>,
    /// Per named symbol: sid, position in the book stream, position in the trades stream.
    pub symbols: Vec<(u32, Option<u64>, Option<u64>)>,
}

/// The ingester's answer to a [`ResumeRequest`], queued on the asking shard's ring in order with
/// the live records: the records of each recovered stream are exactly those after the client's
/// position up to the last one published before this answer; the live records that follow in
/// the ring continue them.
#[derive(Debug)]
pub struct ResumeAnswer {
    /// The connection that asked.
    pub conn: ConnId,
    /// The request it answers.
    pub req: u32,
    /// The numbering the records belong to (sent in the `subscribed` reply).
    pub epoch: Epoch,
    /// One entry per named symbol, in request order.
    pub symbols: Vec<SymbolResumed>,
}

/// One symbol of a [`ResumeAnswer`].
#[derive(Debug)]
pub struct SymbolResumed {
    /// Symbol id.
    pub sid: u32,
    /// `recovered` in the reply. When false every stream of the symbol starts afresh (the book
    /// from a snapshot the shard asks for as for any subscriber, trades from the live point).
    pub recovered: bool,
    /// The book records to replay, in order (empty: nothing missed, or not named).
    pub book: Vec<Bytes>,
    /// The trade records to replay, in order.
    pub trades: Vec<Bytes>,
    /// A status record to send after the replay (the symbol is stale now: the client missed
    /// the status 1 that was sent while it was away).
    pub status: Option<Bytes>,
}

/// What a shard asks of the ingester (through a channel, then the ingester's waker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestRequest {
    /// Encode a snapshot of `topic` for `conn` and queue it on `shard`'s ring, in order with the
    /// stream's records, so that the next record of the stream the connection gets is seq + 1.
    Snapshot {
        /// The asking shard.
        shard: usize,
        /// The asking connection.
        conn: ConnId,
        /// Request number within the connection (echoed in the answer).
        req: u32,
        /// The book stream (symbol, depth, format).
        topic: Topic,
    },
    /// Answer a subscribe's `resume` from the replay windows with a [`ShardMsg::Resumed`] on
    /// the asking shard's ring. Boxed: rare, and the channel's slots stay small.
    Resume(Box<ResumeRequest>),
}

/// The symbol table as last announced by the feed, read by shards on the control path only.
#[derive(Debug, Default)]
pub struct SymbolDirectory {
    current: parking_lot::RwLock<Arc<SymbolTable>>,
}

impl SymbolDirectory {
    /// The current table.
    pub fn load(&self) -> Arc<SymbolTable> {
        self.current.read().clone()
    }

    /// Replaces the table.
    pub fn store(&self, table: Arc<SymbolTable>) {
        *self.current.write() = table;
    }
}

/// Outcome of [`Ring::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Dropped because the ring is (or just became) lagged; the shard will resync.
    Dropped,
}

/// One shard's inbound ring and wake-up state, shared by the ingester (producer) and the shard
/// (consumer).
#[derive(Debug)]
pub struct Ring {
    queue: ArrayQueue<ShardMsg>,
    doorbell: Doorbell,
    lagged: CachePadded<AtomicBool>,
    waker: mio::Waker,
    dropped: AtomicU64,
    lag_events: AtomicU64,
}

impl Ring {
    /// A ring of `capacity` messages that wakes its shard through `waker`.
    ///
    /// # Panics
    /// Panics if `capacity` is 0 (configuration validation rejects that first).
    pub fn new(capacity: usize, waker: mio::Waker) -> Self {
        Self {
            queue: ArrayQueue::new(capacity),
            doorbell: Doorbell::new(),
            lagged: CachePadded::new(AtomicBool::new(false)),
            waker,
            dropped: AtomicU64::new(0),
            lag_events: AtomicU64::new(0),
        }
    }

    // ---- producer side (ingester) ----

    /// Queues a message, or drops it when the shard has fallen behind (see the module docs).
    pub fn push(&self, msg: ShardMsg) -> Push {
        if self.lagged.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Push::Dropped;
        }
        match self.queue.push(msg) {
            Ok(()) => Push::Queued,
            Err(_) => {
                self.lagged.store(true, Ordering::Release);
                self.lag_events.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Push::Dropped
            }
        }
    }

    /// Wakes the shard if it announced it is going to sleep. Call once after a batch of pushes.
    pub fn wake(&self) {
        // Either the shard sees our pushes before it sleeps, or we see its announcement.
        if self.doorbell.take_sleeper() {
            if let Err(e) = self.waker.wake() {
                tracing::error!(error = %e, "failed to wake shard");
            }
        }
    }

    /// Wakes the shard unconditionally (shutdown).
    pub fn wake_now(&self) {
        let _ = self.waker.wake();
    }

    // ---- consumer side (shard) ----

    /// Takes the next message.
    pub fn pop(&self) -> Option<ShardMsg> {
        self.queue.pop()
    }

    /// Announces that the shard is about to block; returns `false` (and withdraws the
    /// announcement) when messages arrived meanwhile and the shard must drain instead.
    pub fn prepare_sleep(&self) -> bool {
        self.doorbell
            .prepare_sleep(|| self.queue.is_empty() && !self.lagged.load(Ordering::Relaxed))
    }

    /// Clears the sleep announcement after waking for another reason.
    pub fn awake(&self) {
        self.doorbell.awake();
    }

    /// True when the producer has dropped messages for this shard since the last
    /// [`Ring::recover`].
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Empties the ring and clears the lag mark; the caller then resyncs its subscribers.
    /// Returns how many queued messages were discarded.
    pub fn recover(&self) -> usize {
        let mut discarded = 0;
        while self.queue.pop().is_some() {
            discarded += 1;
        }
        self.lagged.store(false, Ordering::Release);
        discarded
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Capacity in messages.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Messages dropped because the shard fell behind, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Times the shard fell behind, since start.
    pub fn lag_events(&self) -> u64 {
        self.lag_events.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(cap: usize) -> (mio::Poll, Ring) {
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(1)).expect("waker");
        (poll, Ring::new(cap, waker))
    }

    fn rec(n: u8) -> ShardMsg {
        ShardMsg::Record {
            topic: Topic::book(0, 0, Format::Binary),
            bytes: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn fifo_then_lag_drops_until_recovered() {
        let (_poll, r) = ring(2);
        assert_eq!(r.push(rec(1)), Push::Queued);
        assert_eq!(r.push(rec(2)), Push::Queued);
        assert_eq!(r.push(rec(3)), Push::Dropped);
        assert!(r.is_lagged());
        // Room again, but the ring stays lagged: a later record must not slip in after a hole.
        assert!(r.pop().is_some());
        assert_eq!(r.push(rec(4)), Push::Dropped);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.lag_events(), 1);
        assert_eq!(r.recover(), 1);
        assert!(!r.is_lagged());
        assert_eq!(r.push(rec(5)), Push::Queued);
        match r.pop() {
            Some(ShardMsg::Record { bytes, .. }) => assert_eq!(&bytes[..], &[5]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sleep_is_refused_while_messages_wait() {
        let (_poll, r) = ring(4);
        assert!(r.prepare_sleep());
        r.awake();
        assert_eq!(r.push(rec(1)), Push::Queued);
        assert!(!r.prepare_sleep());
    }

    #[test]
    fn wake_reaches_a_sleeping_shard() {
        let (mut poll, r) = ring(4);
        assert!(r.prepare_sleep());
        assert_eq!(r.push(rec(1)), Push::Queued);
        r.wake();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
            .expect("poll");
        assert!(events.iter().any(|e| e.token() == mio::Token(1)));
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
