//! The shard's timer table: every deadline the shard core keeps, in one place, so that the driver
//! asks one question (`poll_timeout`) before it blocks and makes one call (`handle_timeout`)
//! when the time has come.
//!
//! Per-connection deadlines (the handshake timeout, the close-handshake timeout, the eviction
//! timeout, the keepalive's ping and dead times) live in each connection's [`super::conn::Phase`]
//! and keepalive and are checked by the [`Timer::Sweep`], every [`SWEEP`]: a deadline fires at
//! most one sweep late. That costs nothing per connection (no heap, no per-connection timer
//! entry) and the sweep also gives back idle connections' storage.

use std::time::{Duration, Instant};

/// How often the per-connection deadlines are checked.
pub(crate) const SWEEP: Duration = Duration::from_millis(100);

/// The shard's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Check every connection's deadlines: handshake (408), keepalive (ping, then 1001 "ping
    /// timeout"), close handshake, eviction.
    Sweep = 0,
    /// Accepts resume (they paused after an accept error such as EMFILE).
    AcceptPause = 1,
    /// A graceful shutdown gives up on clients that have not taken their close by then.
    Shutdown = 2,
    /// The earliest token expiry (JWT `exp`) of the shard's connections: those whose token
    /// expired are closed with 1008 `token expired` (the core keeps the expiries in a heap).
    TokenExpiry = 3,
}

impl Timer {
    const ALL: [Self; 4] = [
        Self::Sweep,
        Self::AcceptPause,
        Self::Shutdown,
        Self::TokenExpiry,
    ];
}

/// When each [`Timer`] fires, if it is set.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// True when `timer` is set and due at `now`.
    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The earliest timer, if any is set.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Stops and returns the timers due at `now`, in [`Timer`] order.
    pub(crate) fn expire(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due = [None; Timer::ALL.len()];
        for t in Timer::ALL {
            if self.is_due(t, now) {
                self.stop(t);
                due[t as usize] = Some(t);
            }
        }
        due.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_timer_and_expiry() {
        let t0 = crate::clock::monotonic();
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        table.set(Timer::Sweep, t0 + SWEEP);
        table.set(Timer::Shutdown, t0 + Duration::from_millis(50));
        assert_eq!(table.next_timeout(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(table.expire(t0).count(), 0);
        let due: Vec<Timer> = table.expire(t0 + SWEEP).collect();
        assert_eq!(due, [Timer::Sweep, Timer::Shutdown]);
        assert_eq!(table.next_timeout(), None);
    }
}
