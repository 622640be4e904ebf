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
