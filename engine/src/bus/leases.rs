//! The ingest node's interest table (docs/protocol.md §8.5): which streams some edge wants
//! published.
//!
//! Sans-IO: announcements come in as bytes with the time they arrived, and the table answers
//! with the streams that became wanted or unwanted ([`Change`]); the ingest node's publisher
//! turns those into the ingester's interest of its bus ring, so that the ingester encodes and
//! the publisher publishes only streams some edge forwards.
//!
//! A stream is wanted while some lease holds it:
//! - an edge's announcement (every stream it forwards; each announcement replaces the same
//!   edge's previous one) holds its streams for the announcement's lease, clamped to
//!   [`MIN_LEASE`]..=[`MAX_LEASE`];
//! - a snapshot or replay request holds its stream for a lease too ([`Leases::request`]), taken
//!   before the request reaches the ingester: the records after the answer are then published
//!   whatever the timing of the asking edge's next announcement (a joining edge loses nothing).
//!
//! A restarted edge is a new edge (its id is random per process): the dead one's streams go
//! when its lease expires. Malformed announcements, announcements naming a sid past the table,
//! and new edges past [`Leases::new`]'s bound are counted ([`Leases::bad`]) and ignored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{BusError, parse_announcement};
use crate::fanout::Topic;

/// The shortest lease an announcement gets.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// The longest lease an announcement gets (a hostile one cannot pin streams for days).
pub const MAX_LEASE: Duration = Duration::from_secs(60);

/// A stream's interest changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first lease of the stream: publish it.
    Want(Topic),
    /// Its last lease ended: stop publishing it.
    Drop(Topic),
}

#[derive(Debug)]
struct Held {
    until: Instant,
    /// Sorted, no duplicates.
    topics: Vec<Topic>,
}

/// The leases of every edge and request.
#[derive(Debug)]
pub struct Leases {
    max_symbols: usize,
    max_edges: usize,
    edges: HashMap<u64, Held>,
    requests: HashMap<Topic, Instant>,
    /// Leases per wanted stream (edges and a request).
    counts: HashMap<Topic, u32>,
    bad: u64,
}

impl Leases {
    /// A table for sids below `max_symbols` and at most `max_edges` edges at a time.
    pub fn new(max_symbols: usize, max_edges: usize) -> Self {
        Self {
            max_symbols,
            max_edges,
            edges: HashMap::new(),
            requests: HashMap::new(),
            counts: HashMap::new(),
            bad: 0,
        }
    }

    /// An announcement arrived at `now`; what it changes is appended to `out`.
    ///
    /// # Errors
    /// [`BusError`] when it does not parse, names a sid past the table, or comes from a new
    /// edge while the table holds `max_edges` (counted in [`Self::bad`], nothing changes).
    pub fn announce(
        &mut self,
        payload: &[u8],
        now: Instant,
        out: &mut Vec<Change>,
    ) -> Result<(), BusError> {
        let parsed = parse_announcement(payload).and_then(|a| {
            if a.topics.iter().any(|t| t.sid as usize >= self.max_symbols) {
                Err(BusError::BadField("sid"))
            } else if !self.edges.contains_key(&a.edge) && self.edges.len() >= self.max_edges {
                Err(BusError::BadField("edges"))
            } else {
                Ok(a)
            }
        });
        let a = match parsed {
            Ok(a) => a,
            Err(e) => {
                self.bad += 1;
                return Err(e);
            }
        };
        let lease = Duration::from_millis(u64::from(a.lease_ms)).clamp(MIN_LEASE, MAX_LEASE);
        let mut topics = a.topics;
        topics.sort_unstable_by_key(Topic::index);
        topics.dedup();
        let old = self
            .edges
            .insert(
                a.edge,
                Held {
                    until: now + lease,
                    topics: topics.clone(),
                },
            )
            .map(|h| h.topics)
            .unwrap_or_default();
        // Take the new ones first, so that a stream in both never drops to zero.
        for t in &topics {
            if old.binary_search_by_key(&t.index(), Topic::index).is_err() {
                self.hold(*t, out);
            }
        }
        for t in old {
            if topics
                .binary_search_by_key(&t.index(), Topic::index)
                .is_err()
            {
                self.release(t, out);
            }
        }
        Ok(())
    }

    /// A snapshot or replay request for `topic` arrived at `now`: the stream is held for
    /// `lease` (renewed by the next request). A topic past the table, or a conflated tier, is
    /// ignored.
    pub fn request(&mut self, topic: Topic, now: Instant, lease: Duration, out: &mut Vec<Change>) {
        if topic.sid as usize >= self.max_symbols || topic.conflation().is_some() {
            return;
        }
        if self.requests.insert(topic, now + lease).is_none() {
            self.hold(topic, out);
        }
    }

    /// Ends the leases that expired by `now`; what it changes is appended to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Change>) {
        let gone: Vec<u64> = self
            .edges
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(&e, _)| e)
            .collect();
        for e in gone {
            if let Some(h) = self.edges.remove(&e) {
                for t in h.topics {
                    self.release(t, out);
                }
            }
        }
        let gone: Vec<Topic> = self
            .requests
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(&t, _)| t)
            .collect();
        for t in gone {
            self.requests.remove(&t);
            self.release(t, out);
        }
    }

    /// True while some lease holds `topic`.
    pub fn wanted(&self, topic: Topic) -> bool {
        self.counts.contains_key(&topic)
    }

    /// Streams wanted now.
    pub fn streams(&self) -> usize {
        self.counts.len()
    }

    /// Edges holding leases now.
    pub fn edges(&self) -> usize {
        self.edges.len()
    }

    /// Announcements refused since start.
    pub fn bad(&self) -> u64 {
        self.bad
    }

    fn hold(&mut self, t: Topic, out: &mut Vec<Change>) {
        let n = self.counts.entry(t).or_insert(0);
        *n += 1;
        if *n == 1 {
            out.push(Change::Want(t));
        }
    }

    fn release(&mut self, t: Topic, out: &mut Vec<Change>) {
        if let Some(n) = self.counts.get_mut(&t) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&t);
                out.push(Change::Drop(t));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Announcement, encode_announcement};
    use crate::fanout::Format;

    fn ann(edge: u64, lease_ms: u32, topics: &[Topic]) -> Vec<u8> {
        encode_announcement(&Announcement {
            edge,
            lease_ms,
            topics: topics.to_vec(),
        })
        .to_vec()
    }

    fn changes(f: impl FnOnce(&mut Vec<Change>)) -> Vec<Change> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn announcements_hold_streams_until_their_lease_expires() {
        let t0 = crate::clock::monotonic();
        let mut l = Leases::new(10, 8);
        let a = Topic::book(1, 1, Format::Binary);
        let b = Topic::trades(2, Format::Json);
        let got = changes(|o| l.announce(&ann(7, 3_000, &[a, b, a]), t0, o).unwrap());
        assert_eq!(got, vec![Change::Want(a), Change::Want(b)]);
        assert!(l.wanted(a) && l.wanted(b));
        // Re-announced: renewed, nothing changes.
        let got = changes(|o| l.announce(&ann(7, 3_000, &[b, a]), t0 + 2 * S, o).unwrap());
        assert!(got.is_empty());
        assert!(changes(|o| l.expire(t0 + 4 * S, o)).is_empty());
        // Then silence: gone at the end of the last lease.
        let got = changes(|o| l.expire(t0 + 5 * S, o));
        assert_eq!(got.len(), 2);
        assert!(got.contains(&Change::Drop(a)) && got.contains(&Change::Drop(b)));
        assert_eq!((l.streams(), l.edges()), (0, 0));
    }

    #[test]
    fn a_stream_goes_with_its_last_lease_and_an_announcement_replaces_the_last() {
        let t0 = crate::clock::monotonic();
        let mut l = Leases::new(10, 8);
        let a = Topic::book(1, 1, Format::Binary);
        let b = Topic::book(1, 4, Format::Json);
        l.announce(&ann(1, 3_000, &[a]), t0, &mut Vec::new())
            .unwrap();
        l.announce(&ann(2, 3_000, &[a, b]), t0, &mut Vec::new())
            .unwrap();
        // Edge 2 no longer forwards `b`: dropped at once; `a` stays, edge 1 holds it.
        let got = changes(|o| l.announce(&ann(2, 3_000, &[]), t0 + S, o).unwrap());
        assert_eq!(got, vec![Change::Drop(b)]);
        let got = changes(|o| l.expire(t0 + 3 * S, o));
        assert_eq!(got, vec![Change::Drop(a)], "edge 1's lease ended");
        // Bounds of the lease: 0 is the minimum, u32::MAX the maximum.
        let got = changes(|o| l.announce(&ann(3, 0, &[a]), t0, o).unwrap());
        assert_eq!(got, vec![Change::Want(a)]);
        assert_eq!(
            changes(|o| l.expire(t0 + MIN_LEASE, o)),
            vec![Change::Drop(a)]
        );
        l.announce(&ann(3, u32::MAX, &[a]), t0, &mut Vec::new())
            .unwrap();
        assert!(changes(|o| l.expire(t0 + MAX_LEASE - S, o)).is_empty());
        assert_eq!(
            changes(|o| l.expire(t0 + MAX_LEASE, o)),
            vec![Change::Drop(a)]
        );
    }

    #[test]
    fn a_restarted_edge_is_a_new_one_and_the_old_leases_expire() {
        let t0 = crate::clock::monotonic();
        let mut l = Leases::new(10, 8);
        let a = Topic::book(0, 0, Format::Binary);
        let b = Topic::book(0, 1, Format::Binary);
        l.announce(&ann(0xaaaa, 2_000, &[a, b]), t0, &mut Vec::new())
            .unwrap();
        // The same edge process restarted with a new id, its clients back on `b` only.
        let got = changes(|o| l.announce(&ann(0xbbbb, 2_000, &[b]), t0 + S, o).unwrap());
        assert!(got.is_empty(), "b was held already: {got:?}");
        assert_eq!(l.edges(), 2);
        let got = changes(|o| l.expire(t0 + 2 * S, o));
        assert_eq!(got, vec![Change::Drop(a)]);
        assert!(l.wanted(b));
        assert_eq!(l.edges(), 1);
    }

    #[test]
    fn requests_hold_a_stream_before_any_announcement() {
        let t0 = crate::clock::monotonic();
        let mut l = Leases::new(10, 8);
        let a = Topic::book(3, 2, Format::Json);
        let got = changes(|o| l.request(a, t0, 3 * S, o));
        assert_eq!(got, vec![Change::Want(a)]);
        // The edge's announcement follows: held by both, the request's lease ends quietly.
        l.announce(&ann(9, 5_000, &[a]), t0, &mut Vec::new())
            .unwrap();
        assert!(changes(|o| l.request(a, t0 + S, 3 * S, o)).is_empty());
        assert!(changes(|o| l.expire(t0 + 4 * S, o)).is_empty());
        assert_eq!(changes(|o| l.expire(t0 + 5 * S, o)), vec![Change::Drop(a)]);
        // Past the table, or a conflated tier: ignored.
        assert!(changes(|o| l.request(Topic::book(10, 0, Format::Json), t0, S, o)).is_empty());
        let tier = Topic::conflated(1, 0, 0, Format::Json);
        assert!(changes(|o| l.request(tier, t0, S, o)).is_empty());
    }

    /// Random bytes and random mutations of a valid announcement: an error or a valid table,
    /// never a panic, and a refused one changes nothing.
    #[test]
    fn random_announcements_never_panic() {
        let t0 = crate::clock::monotonic();
        let mut l = Leases::new(4, 3);
        let valid = ann(
            5,
            1_000,
            &[
                Topic::book(1, 0, Format::Json),
                Topic::trades(3, Format::Binary),
            ],
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut p = if i % 2 == 0 {
                valid.clone()
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            if !p.is_empty() {
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % p.len();
                    p[at] = next() as u8;
                }
            }
            let before = l.streams();
            let mut out = Vec::new();
            if l.announce(&p, t0, &mut out).is_err() {
                assert!(out.is_empty());
                assert_eq!(l.streams(), before);
            }
            assert!(l.edges() <= 3);
        }
    }

    #[test]
    fn garbage_announcements_are_counted_and_ignored() {
        let t0 = crate::clock::monotonic();
        let mut l = Leases::new(10, 2);
        let a = Topic::book(1, 1, Format::Binary);
        l.announce(&ann(1, 3_000, &[a]), t0, &mut Vec::new())
            .unwrap();
        let mut cut = ann(1, 3_000, &[a]);
        cut.pop();
        let past_table = ann(1, 3_000, &[Topic::book(10, 1, Format::Binary)]);
        for bad in [b"garbage".to_vec(), Vec::new(), cut, past_table] {
            let got = changes(|o| assert!(l.announce(&bad, t0, o).is_err()));
            assert!(got.is_empty());
        }
        // Edge 1's lease is untouched by the garbage.
        assert!(l.wanted(a));
        // A third edge while two hold leases: refused.
        l.announce(&ann(2, 3_000, &[]), t0, &mut Vec::new())
            .unwrap();
        assert_eq!(
            l.announce(&ann(3, 3_000, &[a]), t0, &mut Vec::new()),
            Err(BusError::BadField("edges"))
        );
        assert_eq!(l.bad(), 5);
        assert_eq!(l.edges(), 2);
    }
}
