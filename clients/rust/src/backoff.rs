//! Reconnect delays: exponential back-off with "full jitter".
//!
//! The n-th retry (from 0) waits a uniformly random time in `[0, min(max, min * 2^n)]`, which
//! spreads the reconnects of many clients after an outage over the whole window instead of
//! bunching them (the AWS architecture blog's "full jitter"). The attempt counter is reset by
//! the caller once a connection is useful again (for the client: subscribed again), not when a
//! socket merely opens, so that a server that accepts and then drops every connection is still
//! retried ever more slowly.

use std::time::Duration;

/// The default first delay ceiling: 0.5 s.
pub const DEFAULT_MIN: Duration = Duration::from_millis(500);
/// The default cap: 20 s.
pub const DEFAULT_MAX: Duration = Duration::from_secs(20);

/// Exponential back-off with full jitter; deterministic for a given seed.
///
/// ```
/// use std::time::Duration;
/// use tickcast_client::backoff::Backoff;
///
/// let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(20)).with_seed(7);
/// let first = b.next_delay();
/// assert!(first <= Duration::from_millis(500));
/// for _ in 0..20 {
///     assert!(b.next_delay() <= Duration::from_secs(20));
/// }
/// b.reset();
/// assert_eq!(b.attempt(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_MIN, DEFAULT_MAX)
    }
}

impl Backoff {
    /// A back-off whose first ceiling is `min` and whose ceiling never passes `max`
    /// (`max` below `min` is raised to `min`). Seeded from the process's hash randomness; see
    /// [`with_seed`](Self::with_seed) for a fixed sequence.
    pub fn new(min: Duration, max: Duration) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x7469_636b_6361_7374);
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            rng: h.finish(),
        }
    }

    /// The same back-off with a fixed random sequence (for tests).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed;
        self
    }

    /// The ceiling of the next delay: `min(max, min * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt, uniform in `[0, ceiling]`; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let r = self.next_u64();
        Duration::from_nanos(if nanos == u64::MAX {
            r
        } else {
            r % (nanos + 1)
        })
    }

    /// Attempts counted since the last [`reset`](Self::reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts again from the first ceiling.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The first ceiling.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// splitmix64.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(20)).with_seed(1);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(*ceilings.last().expect("one") as u64));
        }
        assert_eq!(
            ceilings,
            vec![500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000]
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(20), "no overflow");
    }

    #[test]
    fn delays_are_spread_over_the_window() {
        let mut b = Backoff::new(Duration::from_secs(20), Duration::from_secs(20)).with_seed(9);
        let delays: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        let low = delays.iter().filter(|d| d.as_secs() < 10).count();
        assert!((400..600).contains(&low), "{low} of 1000 in the lower half");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        let mut sorted = delays.clone();
        sorted.dedup();
        assert!(sorted.len() > 990, "not all equal");
        // Same seed, same sequence.
        let mut again = Backoff::new(Duration::from_secs(20), Duration::from_secs(20)).with_seed(9);
        assert_eq!(again.next_delay(), delays[0]);
    }
}
