//! Per-shard subscriber counts, shared with the ingester so that it encodes and publishes a
//! stream only to shards that have someone listening.
//!
//! A shard bumps the count *before* it asks the ingester for the snapshot that starts a
//! subscription; the request travels through a channel (a happens-before edge), so every record
//! the ingester produces after answering it sees the count and is published.

use std::sync::atomic::{AtomicU32, Ordering};

use super::Topic;

/// Counts of subscribers per (shard, topic).
#[derive(Debug)]
pub struct Interest {
    max_symbols: usize,
    per_shard: usize,
    counts: Vec<AtomicU32>,
}

impl Interest {
    /// Room for `shards` shards and sids below `max_symbols`.
    pub fn new(shards: usize, max_symbols: usize) -> Self {
        let per_shard = Topic::count(max_symbols);
        Self {
            max_symbols,
            per_shard,
            counts: (0..shards * per_shard).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Largest number of symbols this table can track.
    pub fn max_symbols(&self) -> usize {
        self.max_symbols
    }

    fn slot(&self, shard: usize, topic: Topic) -> Option<&AtomicU32> {
        if topic.sid as usize >= self.max_symbols {
            return None;
        }
        self.counts.get(shard * self.per_shard + topic.index())
    }

    /// One more subscriber of `topic` on `shard`.
    pub fn add(&self, shard: usize, topic: Topic) {
        if let Some(c) = self.slot(shard, topic) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One fewer subscriber of `topic` on `shard`.
    pub fn remove(&self, shard: usize, topic: Topic) {
        if let Some(c) = self.slot(shard, topic) {
            // Never wraps below zero even if add/remove were mismatched by a bug.
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// True if `shard` has at least one subscriber of `topic`.
    pub fn any(&self, shard: usize, topic: Topic) -> bool {
        self.slot(shard, topic)
            .is_some_and(|c| c.load(Ordering::Relaxed) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Format;

    #[test]
    fn counts_per_shard_and_topic() {
        let i = Interest::new(2, 4);
        let t = Topic::book(3, 1, Format::Binary);
        assert!(!i.any(0, t));
        i.add(0, t);
        i.add(0, t);
        assert!(i.any(0, t));
        assert!(!i.any(1, t));
        assert!(!i.any(0, Topic::book(3, 1, Format::Json)));
        i.remove(0, t);
        assert!(i.any(0, t));
        i.remove(0, t);
        i.remove(0, t);
        assert!(!i.any(0, t));
        // Out of range sids are ignored, not a panic.
        i.add(0, Topic::book(4, 0, Format::Binary));
        assert!(!i.any(0, Topic::book(4, 0, Format::Binary)));
    }
}
