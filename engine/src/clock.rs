//! The only place the engine reads clocks.
//!
//! Protocol, book and fan-out code are handed time by their callers (the shard loop and the
//! ingester), which read it here. That keeps the sans-IO modules deterministic and testable, and
//! `engine/clippy.toml` rejects `Instant::now`/`SystemTime::now` anywhere else.

#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME), the unit of `exch_ts` and `recv_ts`.
///
/// A clock set before 1970 reads as 0 rather than failing.
#[inline]
pub fn realtime_ns() -> u64 {
    // Seconds and nanoseconds in u64 (saturating), not `as_nanos` in u128: this runs once per
    // feed message.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    })
}

/// Monotonic time, for timeouts and rate limits.
#[inline]
pub fn monotonic() -> Instant {
    Instant::now()
}

/// Both clocks, read together once by an IO edge (per loop turn or per socket read) and handed
/// down to the logic, which never reads a clock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Monotonic time: reorder windows, stall checks, timeouts.
    pub mono: Instant,
    /// Wall-clock nanoseconds since the Unix epoch: the records' `recv_ts`.
    pub realtime_ns: u64,
}

impl Stamp {
    /// Reads both clocks now.
    #[inline]
    pub fn now() -> Self {
        Self {
            mono: monotonic(),
            realtime_ns: realtime_ns(),
        }
    }

    /// The same stamp moved `by` later on both clocks (for tests and replays in virtual time).
    #[must_use]
    pub fn later(self, by: std::time::Duration) -> Self {
        Self {
            mono: self.mono + by,
            realtime_ns: self
                .realtime_ns
                .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}
