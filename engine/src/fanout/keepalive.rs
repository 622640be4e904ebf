//! When to ping a client and when to give up on it (sans-IO: time is passed in).

use std::time::{Duration, Instant};

/// What the connection should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Idle,
    /// Send a ping carrying this number.
    Ping(u64),
    /// The client answered no ping for two intervals: close it.
    Dead,
}

/// Ping schedule of one connection: a ping after `interval` without hearing from the client, and
/// the connection is dead when that ping is not answered (by anything) within another interval.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    /// When the client was last heard from, or, once `pinged`, when the ping was sent.
    at: Instant,
    /// A ping is out and not answered yet.
    pinged: bool,
    pings: u32,
}

impl KeepAlive {
    /// Starts the schedule at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            at: now,
            pinged: false,
            pings: 0,
        }
    }

    /// The client sent something (any frame proves it is alive).
    pub fn heard(&mut self, now: Instant) {
        self.at = now;
        self.pinged = false;
    }

    /// Decides at `now`.
    pub fn poll(&mut self, now: Instant, interval: Duration) -> Action {
        let due = now.saturating_duration_since(self.at) >= interval;
        match (self.pinged, due) {
            (true, true) => Action::Dead,
            (false, true) => {
                self.at = now;
                self.pinged = true;
                self.pings = self.pings.wrapping_add(1);
                Action::Ping(u64::from(self.pings))
            }
            (_, false) => Action::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // any instant will do as the origin
    fn ping_then_dead_unless_answered() {
        let t0 = Instant::now();
        let i = Duration::from_secs(30);
        let mut k = KeepAlive::new(t0);
        assert_eq!(k.poll(t0 + Duration::from_secs(10), i), Action::Idle);
        assert_eq!(k.poll(t0 + i, i), Action::Ping(1));
        assert_eq!(k.poll(t0 + i + Duration::from_secs(5), i), Action::Idle);
        k.heard(t0 + i + Duration::from_secs(6));
        assert_eq!(k.poll(t0 + i * 2, i), Action::Idle);
        let t1 = t0 + i + Duration::from_secs(6) + i;
        assert_eq!(k.poll(t1, i), Action::Ping(2));
        assert_eq!(k.poll(t1 + i, i), Action::Dead);
    }
}
