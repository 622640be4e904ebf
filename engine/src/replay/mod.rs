//! Replay windows (protocol 1.1 §3.1), sans-IO: the last records of every stream, so that a
//! client that reconnects with `resume` gets exactly what it missed instead of a snapshot.
//!
//! A window is per [`Topic`] (symbol, book at one depth or trades, format) and holds the very
//! `Bytes` the ingester pushes into the rings (both formats are separate topics with the same
//! seqs): a record is held once, however many clients replay it, and never copied per client.
//!
//! Where the windows live, **(decided)** (docs/protocol.md, "Version 1.1"): in the ingester, the
//! one thread that numbers the streams, which owns a [`ReplayWindows`] and calls it without a
//! lock. Shards only receive the topics their own subscribers watch, so a window kept by a
//! shard could not serve a resume that lands on another shard, nor a stream whose last watcher
//! on that shard just dropped. A resume is answered like a snapshot request: the ingester pushes
//! the replayed records to the asking shard's ring in order with the live records, so that the
//! replay and the live stream meet with no gap and no duplicate.
//!
//! Bounds: per window by records, bytes and age; across windows by total bytes (the oldest
//! record of any window goes first). A hit yields exactly `after_seq + 1..=last`, in order; a
//! window that cannot do that answers [`Miss`]. Time is given by the caller.

pub mod epoch;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

pub use crate::config::{
    DEFAULT_REPLAY_AGE as DEFAULT_AGE, DEFAULT_REPLAY_BYTES as DEFAULT_BYTES,
    DEFAULT_REPLAY_RECORDS as DEFAULT_RECORDS, DEFAULT_REPLAY_TOTAL_BYTES as DEFAULT_TOTAL_BYTES,
    ReplayLimits,
};
use crate::fanout::Topic;

/// Bookkeeping counted per held record on top of its bytes (entry and eviction-log slot).
pub const RECORD_OVERHEAD: usize = 64;

/// Why a window cannot replay from a position: the client must start afresh (snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Miss {
    /// No window for the stream (nobody watched it within the age bound, or replay is off).
    #[error("no replay window for the stream")]
    NoWindow,
    /// Records after the position were evicted (or never seen by the window).
    #[error("the window no longer holds seq {0}")]
    Evicted(u64),
    /// The position is past the stream's last record: not a position of this numbering.
    #[error("seq {after} is past the stream's last record {last}")]
    Ahead {
        /// The client's position.
        after: u64,
        /// The stream's last seq.
        last: u64,
    },
}

/// Counters and gauges of the windows, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Resumes of one stream answered from a window.
    pub hits: u64,
    /// Resumes of one stream that could not be.
    pub misses: u64,
    /// Records replayed to clients (summed over hits).
    pub replayed: u64,
    /// Records dropped by a bound (records, bytes, age, total bytes).
    pub evicted: u64,
    /// Records dropped because the total-bytes bound was reached.
    pub evicted_total: u64,
    /// Records held now.
    pub records: u64,
    /// Bytes held now (records plus [`RECORD_OVERHEAD`] each).
    pub bytes: u64,
    /// Windows that exist now.
    pub windows: u64,
}

/// What a recovered symbol of a resume is sent: per named stream, the records after the
/// client's position, in order (`None` for a stream the resume did not name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolReplay {
    /// The book stream at the subscribe's depth.
    pub book: Option<Vec<Bytes>>,
    /// The trades stream.
    pub trades: Option<Vec<Bytes>>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    bytes: Bytes,
}

impl Entry {
    fn cost(&self) -> usize {
        self.bytes.len() + RECORD_OVERHEAD
    }
}

/// One topic's records: `entries` hold consecutive seqs ending at `last`.
#[derive(Debug)]
struct Window {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Seq of the last record appended (held or already evicted).
    last: u64,
    /// When the topic was last watched (see [`ReplayWindows::keep`]).
    watched_at: Instant,
}

impl Window {
    /// The lowest position this window can replay from (`last` when it holds nothing).
    fn floor(&self) -> u64 {
        self.entries.front().map_or(self.last, |e| e.seq - 1)
    }
}

/// One slot of the eviction log: which record was appended when (oldest first).
#[derive(Debug, Clone, Copy)]
struct LogSlot {
    topic: u32,
    seq: u64,
    at: Instant,
}

/// Every topic's replay window, with the bounds of [`ReplayLimits`]. Owned by one thread (the
/// ingester); nothing here locks or reads a clock.
#[derive(Debug)]
pub struct ReplayWindows {
    limits: ReplayLimits,
    /// By [`Topic::index`].
    windows: Vec<Option<Window>>,
    /// Every held record in append order (plus slots of records already evicted by a
    /// per-window bound, skipped when reached and compacted away when too many).
    log: VecDeque<LogSlot>,
    stats: ReplayStats,
}

impl ReplayWindows {
    /// Empty windows with these bounds.
    #[must_use]
    pub fn new(limits: ReplayLimits) -> Self {
        Self {
            limits,
            windows: Vec::new(),
            log: VecDeque::new(),
            stats: ReplayStats::default(),
        }
    }

    /// The bounds.
    #[must_use]
    pub fn limits(&self) -> &ReplayLimits {
        &self.limits
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    /// Whether the ingester should encode `topic`'s records and [`append`](Self::append) them
    /// now: `watched` says whether some shard subscribes to it. A topic stays kept for
    /// [`ReplayLimits::age`] after its last watcher left, so that clients who all dropped at
    /// once (a load balancer restart) can still resume; after that its window is forgotten and
    /// this returns false until it is watched again.
    ///
    /// The caller must append every record of a kept topic: a window assumes it sees each seq.
    pub fn keep(&mut self, topic: Topic, watched: bool, now: Instant) -> bool {
        if !self.limits.enabled() {
            return watched;
        }
        let i = topic.index();
        if watched {
            if self.windows.len() <= i {
                self.windows.resize_with(i + 1, || None);
            }
            match &mut self.windows[i] {
                Some(w) => w.watched_at = now,
                slot @ None => {
                    *slot = Some(Window {
                        entries: VecDeque::new(),
                        bytes: 0,
                        last: 0,
                        watched_at: now,
                    });
                    self.stats.windows += 1;
                }
            }
            return true;
        }
        let Some(Some(w)) = self.windows.get(i) else {
            return false;
        };
        if now.saturating_duration_since(w.watched_at) <= self.limits.age {
            return true;
        }
        self.forget(topic);
        false
    }

    /// Whether `topic` is kept now (watched, or within the age bound of its last watcher),
    /// without changing anything: for decisions that must not forget a window, such as which
    /// depths' deltas to compute (a kept stream's deltas must be exact).
    #[must_use]
    pub fn is_kept(&self, topic: Topic, now: Instant) -> bool {
        match self.windows.get(topic.index()) {
            Some(Some(w)) => {
                self.limits.enabled()
                    && now.saturating_duration_since(w.watched_at) <= self.limits.age
            }
            _ => false,
        }
    }

    /// Drops `topic`'s window: its records stop being appended (it is no longer kept), or its
    /// seq continuity was lost. Resumes of it miss until it is kept again.
    pub fn forget(&mut self, topic: Topic) {
        let Some(slot) = self.windows.get_mut(topic.index()) else {
            return;
        };
        if let Some(w) = slot.take() {
            self.stats.windows -= 1;
            self.stats.records -= w.entries.len() as u64;
            self.stats.bytes -= w.bytes as u64;
        }
    }

    /// Appends the record `seq` of `topic` (the same `Bytes` the rings carry). Seqs of a topic
    /// must rise by one; any other step (the stream was not appended for a while) restarts the
    /// window at this record. Ignored for a topic that is not kept (see [`keep`](Self::keep)).
    pub fn append(&mut self, topic: Topic, seq: u64, record: Bytes, now: Instant) {
        let i = topic.index();
        let Some(Some(w)) = self.windows.get_mut(i) else {
            return;
        };
        if w.last != 0 && seq != w.last.wrapping_add(1) {
            // Lost continuity: nothing held can be replayed up to this record.
            self.stats.records -= w.entries.len() as u64;
            self.stats.bytes -= w.bytes as u64;
            self.stats.evicted += w.entries.len() as u64;
            w.entries.clear();
            w.bytes = 0;
        }
        let e = Entry {
            seq,
            at: now,
            bytes: record,
        };
        w.bytes += e.cost();
        self.stats.bytes += e.cost() as u64;
        self.stats.records += 1;
        w.entries.push_back(e);
        w.last = seq;
        self.log.push_back(LogSlot {
            topic: i as u32,
            seq,
            at: now,
        });
        // The window's own bounds.
        let limits = self.limits;
        let mut evicted = 0u64;
        let mut freed = 0usize;
        while let Some(front) = w.entries.front() {
            let too_old = now.saturating_duration_since(front.at) > limits.age;
            if w.entries.len() > limits.records || w.bytes > limits.bytes || too_old {
                freed += front.cost();
                w.bytes -= front.cost();
                w.entries.pop_front();
                evicted += 1;
            } else {
                break;
            }
        }
        self.stats.evicted += evicted;
        self.stats.records -= evicted;
        self.stats.bytes -= freed as u64;
        self.sweep(now);
    }

    /// Drops records past the age bound (any window) and, while the total passes its bound,
    /// the oldest records of any window.
    fn sweep(&mut self, now: Instant) {
        while let Some(&slot) = self.log.front() {
            let too_old = now.saturating_duration_since(slot.at) > self.limits.age;
            let too_big = self.stats.bytes > self.limits.total_bytes as u64;
            if !too_old && !too_big {
                break;
            }
            self.log.pop_front();
            let Some(Some(w)) = self.windows.get_mut(slot.topic as usize) else {
                continue;
            };
            if w.entries.front().is_some_and(|e| e.seq == slot.seq) {
                if let Some(e) = w.entries.pop_front() {
                    w.bytes -= e.cost();
                    self.stats.bytes -= e.cost() as u64;
                    self.stats.records -= 1;
                    self.stats.evicted += 1;
                    if !too_old {
                        self.stats.evicted_total += 1;
                    }
                }
            }
        }
        // Slots of records evicted by a window's own bound stay until reached; keep them from
        // outnumbering the records held.
        if self.log.len() > 2 * self.stats.records as usize + 1024 {
            let windows = &self.windows;
            self.log.retain(|s| {
                windows
                    .get(s.topic as usize)
                    .and_then(Option::as_ref)
                    .and_then(|w| w.entries.front().map(|e| e.seq))
                    .is_some_and(|front| s.seq >= front)
            });
        }
    }

    /// The records of `topic` after `after_seq` (the client's last applied record): on a hit,
    /// exactly `after_seq + 1..=last`, in order, as `(seq, record)` (empty when the client
    /// missed nothing). Counts a hit or a miss.
    ///
    /// # Errors
    ///
    /// [`Miss`] when the window does not hold every record after `after_seq`.
    pub fn replay_from(
        &mut self,
        topic: Topic,
        after_seq: u64,
        now: Instant,
    ) -> Result<impl ExactSizeIterator<Item = (u64, &Bytes)> + '_, Miss> {
        let limits = self.limits;
        let found = match self.windows.get_mut(topic.index()) {
            Some(Some(w)) => {
                // Age first, so that a quiet window answers as a busy one would.
                let mut freed = 0;
                let mut evicted = 0;
                while w
                    .entries
                    .front()
                    .is_some_and(|e| now.saturating_duration_since(e.at) > limits.age)
                {
                    if let Some(e) = w.entries.pop_front() {
                        freed += e.cost();
                        evicted += 1;
                    }
                }
                w.bytes -= freed;
                self.stats.bytes -= freed as u64;
                self.stats.records -= evicted;
                self.stats.evicted += evicted;
                if after_seq > w.last {
                    Err(Miss::Ahead {
                        after: after_seq,
                        last: w.last,
                    })
                } else if after_seq < w.floor() {
                    Err(Miss::Evicted(after_seq + 1))
                } else {
                    let skip = w.entries.front().map_or(0, |e| after_seq + 1 - e.seq) as usize;
                    Ok(skip)
                }
            }
            _ => Err(Miss::NoWindow),
        };
        match found {
            Ok(skip) => {
                let Some(Some(w)) = self.windows.get(topic.index()) else {
                    return Err(Miss::NoWindow);
                };
                self.stats.hits += 1;
                self.stats.replayed += (w.entries.len() - skip) as u64;
                Ok(w.entries.range(skip..).map(|e| (e.seq, &e.bytes)))
            }
            Err(m) => {
                self.stats.misses += 1;
                Err(m)
            }
        }
    }

    /// One symbol of a resume (docs/protocol.md §4.4): all or nothing. With the client's epoch
    /// matching (`epoch_matches`) and every named stream (`book`, `trades`: the topic and the
    /// client's position) replayable, returns the records to send, per stream, in order
    /// (refcounted clones of the held `Bytes`); otherwise `None` (`recovered: false`, every
    /// stream of the symbol starts fresh). Counts a hit or a miss per named stream.
    pub fn resume_symbol(
        &mut self,
        epoch_matches: bool,
        book: Option<(Topic, u64)>,
        trades: Option<(Topic, u64)>,
        now: Instant,
    ) -> Option<SymbolReplay> {
        if !epoch_matches {
            self.stats.misses += u64::from(book.is_some()) + u64::from(trades.is_some());
            return None;
        }
        let mut out = SymbolReplay::default();
        for (named, records) in [(book, &mut out.book), (trades, &mut out.trades)] {
            let Some((topic, after)) = named else {
                continue;
            };
            match self.replay_from(topic, after, now) {
                Ok(it) => *records = Some(it.map(|(_, b)| b.clone()).collect()),
                Err(_) => return None,
            }
        }
        Some(out)
    }

    /// The records of `topic` after `after_seq` up to its last, when the window holds every one
    /// of them within the age bound; `None` otherwise. Changes nothing and counts nothing: for
    /// a decision taken again until it can be (an edge's resume, `bus::resume`).
    #[must_use]
    pub fn peek_from(&self, topic: Topic, after_seq: u64, now: Instant) -> Option<Vec<Bytes>> {
        let Some(Some(w)) = self.windows.get(topic.index()) else {
            return None;
        };
        if after_seq > w.last {
            return None;
        }
        // The first record within the age bound (older ones are as good as evicted).
        let young = w
            .entries
            .iter()
            .position(|e| now.saturating_duration_since(e.at) <= self.limits.age)
            .unwrap_or(w.entries.len());
        let floor = w.entries.get(young).map_or(w.last, |e| e.seq - 1);
        if after_seq < floor {
            return None;
        }
        let skip = w
            .entries
            .front()
            .map_or(0, |e| (after_seq + 1 - e.seq) as usize);
        Some(w.entries.range(skip..).map(|e| e.bytes.clone()).collect())
    }

    /// The last seq appended to `topic`, if it has a window that saw a record.
    #[must_use]
    pub fn last_seq(&self, topic: Topic) -> Option<u64> {
        match self.windows.get(topic.index()) {
            Some(Some(w)) if w.last != 0 => Some(w.last),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
