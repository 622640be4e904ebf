//! Conflated book streams on the ingester's side, sans-IO: which (symbol, depth, tier,
//! format) topics some shard watches, when each rate tier ticks, and which of them changed
//! since their last tick (docs/protocol.md §5.1).
//!
//! **(decided)** Conflated snapshots are made by the ingester, the thread that holds the
//! books: at each tick of a tier, every watched conflated topic whose stream's seq moved since
//! its last tick gets one snapshot, encoded once and pushed into the ring of every shard with
//! subscribers of that topic, like any record. Every subscriber of that tier, on every shard,
//! shares those bytes. A shard never holds a book.
//!
//! A topic becomes watched when a shard asks for its first snapshot (the request that starts a
//! subscription), and stops being watched at the first tick that finds no shard interested.
//! Ticks are aligned on multiples of the tier's period from the first watcher on; a late tick
//! (a busy ingester) is not made up: the next one is a period later.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::fanout::{TIER_COUNT, TIERS_HZ, Topic};

/// A watched conflated topic and the seq of the snapshot its last tick sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watched {
    pub(crate) topic: Topic,
    /// `None` before its first tick.
    pub(crate) last: Option<u64>,
}

/// The watched conflated topics of each tier and the tiers' next ticks.
#[derive(Debug, Default)]
pub(crate) struct Conflation {
    tiers: [Vec<Watched>; TIER_COUNT],
    members: HashSet<usize>,
    next: [Option<Instant>; TIER_COUNT],
}

/// The period of tier `t`.
pub(crate) fn period(tier: usize) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(TIERS_HZ[tier]))
}

impl Conflation {
    /// `topic` (a conflated topic) is watched from `now` on.
    pub(crate) fn watch(&mut self, topic: Topic, now: Instant) {
        let Some((_, tier)) = topic.conflation() else {
            return;
        };
        if self.members.insert(topic.index()) {
            self.tiers[tier].push(Watched { topic, last: None });
            self.next[tier].get_or_insert(now + period(tier));
        }
    }

    /// When the next tick of any tier is due.
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        self.next.iter().flatten().min().copied()
    }

    /// The tiers due at `now`; each is moved on to its next tick (a period after the one due,
    /// or after `now` if that one is already past too).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for tier in 0..TIER_COUNT {
            let Some(at) = self.next[tier] else { continue };
            if at > now {
                continue;
            }
            due.push(tier);
            let p = period(tier);
            let mut next = at + p;
            if next <= now {
                next = now + p;
            }
            self.next[tier] = Some(next);
        }
        due
    }

    /// The watched topics of `tier`, to tick (`keep` says whether a topic is still watched and
    /// may update its `last`; a topic it drops is forgotten, and a tier left empty stops
    /// ticking).
    pub(crate) fn tick(&mut self, tier: usize, mut keep: impl FnMut(&mut Watched) -> bool) {
        let members = &mut self.members;
        self.tiers[tier].retain_mut(|w| {
            let k = keep(w);
            if !k {
                members.remove(&w.topic.index());
            }
            k
        });
        if self.tiers[tier].is_empty() {
            self.next[tier] = None;
        }
    }

    /// Every watched conflated topic.
    pub(crate) fn topics(&self) -> impl Iterator<Item = Topic> + '_ {
        self.tiers.iter().flatten().map(|w| w.topic)
    }

    /// Forgets what every topic's last tick sent: the next tick of each sends a snapshot
    /// (after a renumbering, when a seq no longer names the book it named).
    pub(crate) fn reset_last(&mut self) {
        for w in self.tiers.iter_mut().flatten() {
            w.last = None;
        }
    }

    /// Number of watched conflated topics.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Format;

    #[test]
    fn tiers_tick_at_their_period_and_stop_when_unwatched() {
        let t0 = crate::clock::monotonic();
        let mut c = Conflation::default();
        assert_eq!(c.next_tick(), None);
        let five = Topic::conflated(1, 1, 2, Format::Binary); // 5 Hz
        let one = Topic::conflated(2, 1, 0, Format::Binary); // 1 Hz
        c.watch(five, t0);
        c.watch(five, t0);
        c.watch(one, t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.next_tick(), Some(t0 + Duration::from_millis(200)));
        assert!(c.due(t0 + Duration::from_millis(199)).is_empty());
        assert_eq!(c.due(t0 + Duration::from_millis(200)), vec![2]);
        // Late by more than a period: not made up.
        assert_eq!(c.due(t0 + Duration::from_millis(1000)), vec![0, 2]);
        assert_eq!(c.next_tick(), Some(t0 + Duration::from_millis(1200)));
        let mut seen = Vec::new();
        c.tick(2, |w| {
            seen.push(w.topic);
            w.last = Some(7);
            false
        });
        assert_eq!(seen, vec![five]);
        assert_eq!(c.len(), 1);
        assert_eq!(c.next_tick(), Some(t0 + Duration::from_secs(2)));
    }
}
