//! A byte-rate limit for slow readers, sans-IO: a token bucket that the caller
//! feeds with time and the bytes it read, and that says how much it may read now
//! and, when nothing, at what time to try again.
//!
//! The load's reader (`load/reader.rs`) gives each slow reader one: it reads at
//! most [`TokenBucket::allowance`] bytes, [`TokenBucket::take`]s what it read,
//! and once the bucket is empty stops reading that socket until
//! [`TokenBucket::ready_at`], even though the socket is still readable (with
//! edge-triggered readiness no new event comes for bytes already there, so the
//! reader keeps the socket on a timer list instead of waiting for one).

use std::time::{Duration, Instant};

/// The smallest read a throttled reader makes (bytes), unless the whole burst is smaller:
/// reading a few bytes per wake-up would cost a system call per few bytes.
pub const MIN_READ: usize = 1024;

/// Tokens are bytes; they accrue at `rate` per second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    /// Most bytes held (and so read at once).
    burst: f64,
    /// Bytes that may be read now (as of `at`).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now` for `rate` bytes per second, holding at most `burst` bytes
    /// (at least one byte; a zero rate is taken as one byte per second).
    pub fn new(rate: f64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                1.0
            },
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// A bucket for `rate` bytes per second whose burst is a tenth of a second of it,
    /// at least [`MIN_READ`].
    pub fn for_rate(rate: u64, now: Instant) -> Self {
        Self::new(rate as f64, (rate / 10).max(MIN_READ as u64), now)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// The bytes that may be read at `now`: 0 while fewer than the smallest read
    /// ([`MIN_READ`], or the whole burst when it is smaller) have accrued.
    pub fn allowance(&mut self, now: Instant) -> usize {
        self.refill(now);
        let whole = self.tokens.floor() as usize;
        if whole >= self.min_read() { whole } else { 0 }
    }

    /// `n` bytes were read at `now`.
    pub fn take(&mut self, now: Instant, n: usize) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// When [`TokenBucket::allowance`] will next be non-zero (`at`, or later).
    pub fn ready_at(&self) -> Instant {
        let missing = self.min_read() as f64 - self.tokens;
        if missing <= 0.0 {
            return self.at;
        }
        // Rounded up (and a nanosecond more), so that the bucket holds the smallest
        // read at that time whatever the float rounding.
        self.at + Duration::from_nanos((missing / self.rate * 1e9).ceil() as u64 + 1)
    }

    fn min_read(&self) -> usize {
        MIN_READ.min(self.burst as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_reader_gets_its_rate_over_time_and_no_more() {
        let t0 = Instant::now();
        let mut b = TokenBucket::for_rate(50_000, t0);
        // Full at the start: one burst (a tenth of a second's worth).
        assert_eq!(b.allowance(t0), 5_000);
        b.take(t0, 5_000);
        assert_eq!(b.allowance(t0), 0);
        // Empty: it may read again once MIN_READ bytes accrued, 20.48 ms later.
        let at = b.ready_at();
        let wait = at.duration_since(t0);
        assert!(wait > Duration::from_micros(20_479) && wait < Duration::from_micros(20_481));
        assert_eq!(b.allowance(at - Duration::from_micros(100)), 0);
        assert_eq!(b.allowance(at), MIN_READ);
        // A reader that reads everything it is allowed, every 7 ms, for 10 s, reads
        // the rate times the time, plus the first burst.
        let mut read = 0;
        let mut t = at;
        while t < t0 + Duration::from_secs(10) {
            let n = b.allowance(t);
            b.take(t, n);
            read += n;
            t += ms(7);
        }
        let expected = 50_000.0 * (t - at).as_secs_f64();
        assert!(
            (read as f64 - expected).abs() < 5_000.0,
            "{read} vs {expected}"
        );
    }

    #[test]
    fn an_idle_reader_saves_one_burst_at_most() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000.0, 4_096, t0);
        b.take(t0, 4_096);
        assert_eq!(b.allowance(t0 + ms(1_000)), 0, "1,000 bytes < MIN_READ");
        assert_eq!(b.allowance(t0 + ms(1_100)), 1_100);
        assert_eq!(b.allowance(t0 + Duration::from_secs(60)), 4_096);
        // Reads need not be whole allowances, and time never runs backwards.
        b.take(t0 + Duration::from_secs(60), 100);
        assert_eq!(b.allowance(t0), 3_996);
        // A bucket smaller than MIN_READ reads whole bursts.
        let mut small = TokenBucket::new(100.0, 50, t0);
        small.take(t0, 50);
        let wait = small.ready_at().duration_since(t0);
        assert!(wait >= ms(500) && wait < ms(501));
        assert_eq!(small.allowance(small.ready_at()), 50);
    }
}
