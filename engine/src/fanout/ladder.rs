//! When a conflating connection may go live again, sans-IO: the rate rule that keeps a reader
//! slower than its live streams on conflated snapshots (docs/protocol.md §5.2).
//!
//! Draining below the low mark is not enough: a reader whose read rate is below the live byte
//! rate of its streams drains while conflated (conflated snapshots cost less), goes live, fills
//! up again and climbs again, over and over. [`RateMeter`] measures the two rates that decide
//! it, from what the driver already knows (bytes written, the out-buffer's level, time):
//!
//! - the **live rate**: bytes queued per second during the connection's last live period
//!   (bytes written in it plus the growth of the out-buffer), taken when it climbs;
//! - the **drain rate**: bytes written per second while conflating, counted only over the time
//!   the out-buffer was not empty (a write left bytes behind): then the reader, not the
//!   producer, sets the pace. Older samples are halved away once a window's worth is held, so a
//!   reader that recovers shows it within seconds.
//!
//! A conflating connection goes live (besides the low mark and the dwell) only when its drain
//! rate exceeds its live rate, or it never had a backlog to measure (it drains as fast as it is
//! sent), or there is no live rate to compare with (its live period was too short to tell), or
//! it has been held for [`MAX_HOLD_DWELLS`] dwells (the market may have slowed down since: it
//! tries again and is measured again).

use std::time::{Duration, Instant};

/// A live period shorter than this gives no live rate.
pub const MIN_LIVE: Duration = Duration::from_millis(250);
/// Backlogged time over which drain samples are averaged (older ones are halved away).
pub const DRAIN_WINDOW: Duration = Duration::from_secs(2);
/// The rate rule holds a connection conflated at most this many dwells in a row.
pub const MAX_HOLD_DWELLS: u32 = 16;

/// The live and drain rates of one connection (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateMeter {
    /// Conflating (true) or live.
    conflating: bool,
    /// Start of the current live period (`None` before the first write).
    live_from: Option<Instant>,
    /// The out-buffer's level when the live period started.
    live_start_len: u64,
    /// Bytes written in the current live period.
    live_written: u64,
    /// Bytes per second queued in the last live period (`None`: unknown).
    live_rate: Option<f64>,
    /// When a write left bytes behind (the backlog since then), while conflating.
    backlog_at: Option<Instant>,
    /// Bytes written while backlogged, and the backlogged time they took.
    drained_bytes: f64,
    drained_secs: f64,
}

/// Why [`RateMeter::may_go_live`] said yes or no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It may go live.
    Live,
    /// It drains slower than its streams' live rate: it stays conflated.
    Hold,
}

impl RateMeter {
    /// A write of `written` bytes at `now` left `left` bytes in the out-buffer.
    pub fn on_write(&mut self, now: Instant, written: u64, left: u64) {
        if !self.conflating {
            if self.live_from.is_none() {
                self.live_from = Some(now);
                self.live_start_len = left + written;
            }
            self.live_written += written;
            return;
        }
        if let Some(at) = self.backlog_at {
            self.drained_bytes += written as f64;
            self.drained_secs += now.saturating_duration_since(at).as_secs_f64();
            if self.drained_secs > 2.0 * DRAIN_WINDOW.as_secs_f64() {
                self.drained_bytes /= 2.0;
                self.drained_secs /= 2.0;
            }
        }
        self.backlog_at = (left > 0).then_some(now);
    }

    /// The connection starts conflating at `now`, owing `len` bytes: the live period ends and
    /// gives the live rate (or none, when it was too short to tell).
    pub fn climb(&mut self, now: Instant, len: u64) {
        self.live_rate = self.live_from.and_then(|from| {
            let secs = now.saturating_duration_since(from);
            (secs >= MIN_LIVE).then(|| {
                let queued = (self.live_written + len).saturating_sub(self.live_start_len);
                queued as f64 / secs.as_secs_f64()
            })
        });
        self.conflating = true;
        self.backlog_at = (len > 0).then_some(now);
        self.drained_bytes = 0.0;
        self.drained_secs = 0.0;
    }

    /// The connection goes live at `now`, owing `len` bytes: a new live period starts.
    pub fn go_live(&mut self, now: Instant, len: u64) {
        self.conflating = false;
        self.live_from = Some(now);
        self.live_start_len = len;
        self.live_written = 0;
        self.backlog_at = None;
    }

    /// The live rate of the last live period (bytes per second), if known.
    pub fn live_rate(&self) -> Option<f64> {
        self.live_rate
    }

    /// The drain rate measured while conflating (bytes per second), if it had a backlog.
    pub fn drain_rate(&self) -> Option<f64> {
        (self.drained_secs > 0.0).then(|| self.drained_bytes / self.drained_secs)
    }

    /// Whether a conflating connection that is under the low mark and past the dwell may go
    /// live: `held` is how long it has been conflating.
    pub fn may_go_live(&self, held: Duration, dwell: Duration) -> Verdict {
        let (Some(live), Some(drain)) = (self.live_rate, self.drain_rate()) else {
            return Verdict::Live;
        };
        if drain > live || held >= dwell.saturating_mul(MAX_HOLD_DWELLS) {
            Verdict::Live
        } else {
            Verdict::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_reader_slower_than_its_live_rate_is_held_and_a_fast_one_is_not() {
        let t0 = crate::clock::monotonic();
        let dwell = Duration::from_secs(1);
        // Live for 2 s: 100 KB/s queued, 50 KB/s written, the buffer grows by 100 KB.
        let mut m = RateMeter::default();
        for i in 0..=20 {
            m.on_write(t0 + ms(100 * i), 5_000, 10_000 + 5_000 * i);
        }
        m.climb(t0 + ms(2000), 110_000);
        let live = m.live_rate().expect("live rate");
        assert!((95_000.0..=105_000.0).contains(&live), "{live}");
        // Conflating: it drains at 50 KB/s while backlogged.
        let mut slow = m;
        for i in 1..=30 {
            slow.on_write(t0 + ms(2000 + 100 * i), 5_000, 1_000);
        }
        let drain = slow.drain_rate().expect("drain rate");
        assert!((45_000.0..=55_000.0).contains(&drain), "{drain}");
        assert_eq!(slow.may_go_live(ms(3000), dwell), Verdict::Hold);
        // ... but not for ever: after MAX_HOLD_DWELLS dwells it tries again.
        assert_eq!(
            slow.may_go_live(dwell * MAX_HOLD_DWELLS, dwell),
            Verdict::Live
        );
        // A reader that drains at 1 MB/s goes live.
        let mut fast = m;
        for i in 1..=10 {
            fast.on_write(t0 + ms(2000 + 10 * i), 10_000, 1_000);
        }
        assert_eq!(fast.may_go_live(ms(1000), dwell), Verdict::Live);
        // So does one that never had a backlog to measure.
        let mut empty = m;
        empty.climb(t0 + ms(2000), 0);
        empty.on_write(t0 + ms(2500), 3_000, 0);
        assert_eq!(empty.drain_rate(), None);
        assert_eq!(empty.may_go_live(ms(1000), dwell), Verdict::Live);
    }

    #[test]
    fn a_reader_that_recovers_shows_it_within_a_few_seconds() {
        let t0 = crate::clock::monotonic();
        let mut m = RateMeter::default();
        m.on_write(t0, 0, 0);
        m.climb(t0 + ms(1000), 100_000); // 100 KB/s live
        // 10 s at 20 KB/s, then it reads at 500 KB/s.
        let mut t = t0 + ms(1000);
        for _ in 0..100 {
            t += ms(100);
            m.on_write(t, 2_000, 50_000);
        }
        assert_eq!(
            m.may_go_live(ms(10_000), Duration::from_secs(1)),
            Verdict::Hold
        );
        for _ in 0..40 {
            t += ms(100);
            m.on_write(t, 50_000, 50_000);
        }
        assert_eq!(
            m.may_go_live(ms(14_000), Duration::from_secs(1)),
            Verdict::Live
        );
    }

    #[test]
    fn a_short_live_period_gives_no_rate() {
        let t0 = crate::clock::monotonic();
        let mut m = RateMeter::default();
        m.on_write(t0, 1_000, 20_000);
        m.climb(t0 + ms(100), 40_000);
        assert_eq!(m.live_rate(), None);
        m.on_write(t0 + ms(5_000), 1, 1);
        assert_eq!(
            m.may_go_live(ms(5000), Duration::from_secs(1)),
            Verdict::Live
        );
    }
}
