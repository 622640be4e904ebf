//! The sleep/wake handshake between a ring's producer (the ingester) and its consumer (a shard).
//!
//! One atomic word (an eventcount) carries both sides: bit 0 says the consumer is asleep (or
//! about to be), the bits above count the producer's rings. The consumer reads the word, looks
//! for work once more, and only then sets the sleep bit with a compare-and-swap that fails if
//! the producer rang in between. The producer rings after publishing with one read-modify-write
//! that counts the ring and clears the sleep bit; it wakes the consumer (`mio::Waker`, an
//! eventfd write) only when the bit was set, so a busy consumer costs no syscall and a sleeping
//! one gets exactly one wake per sleep.
//!
//! Why no wake-up is lost, with acquire/release alone: every change of the word is a
//! read-modify-write of one location, so they are totally ordered. If the producer's ring comes
//! before the consumer's read of the word, that read synchronizes with it and the consumer's
//! look for work sees what was published before the ring; if it comes after, the compare-and-swap
//! fails. If it comes after the compare-and-swap, it sees the sleep bit and wakes the consumer.
//!
//! `ring::loom_tests` checks this with loom (`scripts/test.sh` runs it).

use super::sync::{AtomicU64, Ordering};

/// The consumer's sleep bit.
const ASLEEP: u64 = 1;
/// One producer ring.
const RING: u64 = 2;

/// The eventcount of one ring.
#[derive(Debug)]
pub(crate) struct Doorbell {
    word: crossbeam_utils::CachePadded<AtomicU64>,
}

impl Doorbell {
    /// Awake, never rung.
    pub(crate) fn new() -> Self {
        Self {
            word: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
        }
    }

    // ---- consumer side ----

    /// Looks for work once more (`idle` returns `true` when there is none), then announces
    /// that the consumer is going to block. Returns `true` when it may block: a producer
    /// publishing after this will wake it. Returns `false` when `idle` found work or the
    /// producer rang meanwhile.
    pub(crate) fn prepare_sleep(&self, idle: impl FnOnce() -> bool) -> bool {
        let seen = self.word.load(Ordering::Acquire);
        if !idle() {
            return false;
        }
        self.word
            .compare_exchange(seen, seen | ASLEEP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Withdraws the announcement after waking up for any reason.
    pub(crate) fn awake(&self) {
        self.word.fetch_and(!ASLEEP, Ordering::AcqRel);
    }

    // ---- producer side ----

    /// Call after publishing. Returns `true` when the consumer announced it is going to sleep
    /// (the announcement is taken, so only one call rings): the caller must wake it.
    pub(crate) fn take_sleeper(&self) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let next = (word & !ASLEEP).wrapping_add(RING);
            match self
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(prev) => return prev & ASLEEP != 0,
                Err(now) => word = now,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_ring_while_the_consumer_looks_refuses_its_sleep() {
        let bell = Doorbell::new();
        // The producer rings between the consumer's read and its announcement.
        assert!(!bell.prepare_sleep(|| !bell.take_sleeper()));
        assert!(!bell.prepare_sleep(|| false), "work found: stay up");
        assert!(bell.prepare_sleep(|| true));
        // One wake per sleep, however often the producer rings.
        assert!(bell.take_sleeper());
        assert!(!bell.take_sleeper());
        bell.awake();
        assert!(!bell.take_sleeper());
    }
}
