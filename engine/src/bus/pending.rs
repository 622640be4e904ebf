//! The ingest node's requests in flight, sans-IO: what an edge asked (a snapshot, a replay)
//! and the ingester has not answered yet, by request number, bounded and with expiry.
//!
//! The ingester answers on the bus publisher's ring, in order with the records. An answer can
//! be lost there (the publisher fell behind and its ring discarded what it held): the edge
//! gives up on its own timeout and asks again, but without expiry the entry would stay here
//! for ever, and a snapshot request would keep its topic's later askers waiting on an answer
//! that never comes. Every entry therefore expires [`REQUEST_TTL`] after it was made (the
//! edge has long given up by then), and the table holds at most [`MAX_IN_FLIGHT`] entries: a
//! request that finds it full is refused at once (a replay is answered as a miss; a snapshot
//! request is dropped, and the edge asks again).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An unanswered request is forgotten this long after it was made (an edge's NATS request
/// times out well before: async-nats' default is 10 s, and an edge re-asks a snapshot after
/// 2 s).
pub const REQUEST_TTL: Duration = Duration::from_secs(15);
/// Most requests in flight per kind.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Requests in flight by request number, each with what is needed to answer it.
#[derive(Debug)]
pub struct InFlight<T> {
    entries: HashMap<u32, (T, Instant)>,
    cap: usize,
    ttl: Duration,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self::new(MAX_IN_FLIGHT, REQUEST_TTL)
    }
}

impl<T> InFlight<T> {
    /// An empty table of at most `cap` entries, each kept at most `ttl`.
    #[must_use]
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            cap,
            ttl,
        }
    }

    /// Request `req`, made at `now`, waits for its answer.
    ///
    /// # Errors
    /// Gives `value` back when the table is full (refuse the request).
    pub fn insert(&mut self, req: u32, value: T, now: Instant) -> Result<(), T> {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&req) {
            return Err(value);
        }
        self.entries.insert(req, (value, now));
        Ok(())
    }

    /// The entry of request `req`.
    pub fn get_mut(&mut self, req: u32) -> Option<&mut T> {
        self.entries.get_mut(&req).map(|e| &mut e.0)
    }

    /// Request `req` was answered: its entry.
    pub fn remove(&mut self, req: u32) -> Option<T> {
        self.entries.remove(&req).map(|e| e.0)
    }

    /// Forgets the requests made more than the TTL before `now`; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, T)> {
        let ttl = self.ttl;
        let old: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > ttl)
            .map(|(&req, _)| req)
            .collect();
        old.into_iter()
            .filter_map(|req| self.entries.remove(&req).map(|e| (req, e.0)))
            .collect()
    }

    /// Requests in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No request in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_request_expires_and_the_table_stays_bounded() {
        let t0 = crate::clock::monotonic();
        let s = Duration::from_secs(1);
        let mut t: InFlight<&str> = InFlight::new(3, 10 * s);
        assert_eq!(t.insert(1, "a", t0), Ok(()));
        assert_eq!(t.insert(2, "b", t0 + 5 * s), Ok(()));
        assert_eq!(t.insert(3, "c", t0 + 5 * s), Ok(()));
        // Full: refused, nothing displaced.
        assert_eq!(t.insert(4, "d", t0 + 5 * s), Err("d"));
        assert_eq!(t.len(), 3);
        // Answered: gone.
        assert_eq!(t.remove(3), Some("c"));
        assert_eq!(t.remove(3), None);
        // Request 1's answer was lost: it expires after the TTL, request 2 later.
        assert!(t.expire(t0 + 10 * s).is_empty());
        assert_eq!(t.expire(t0 + 11 * s), vec![(1, "a")]);
        assert_eq!(t.get_mut(2).copied(), Some("b"));
        assert_eq!(t.expire(t0 + 16 * s), vec![(2, "b")]);
        assert!(t.is_empty());
        // A thousand lost answers leave nothing behind once expired.
        let mut big: InFlight<u32> = InFlight::default();
        for req in 0..1000 {
            big.insert(req, req, t0).expect("room");
        }
        assert_eq!(big.expire(t0 + REQUEST_TTL + s).len(), 1000);
        assert!(big.is_empty());
    }
}
