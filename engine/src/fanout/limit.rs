//! Token bucket for client control messages.

use std::time::{Duration, Instant};

/// What the bucket says about one more control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: answer `rate_limited` and drop it.
    Limited,
    /// Far over the rate for long: close the connection with 1008.
    Exceeded,
}

/// The bucket's settings, the same for every connection of a shard (kept once, not per
/// connection).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    // Compact: f32 is plenty for token counts.
    rate_per_sec: f32,
    burst: f32,
    strikes: u16,
}

impl RateLimit {
    /// `rate_per_sec` sustained, `burst` at once, `strikes` refusals in a row before closing.
    pub fn new(rate_per_sec: u32, burst: u32, strikes: u32) -> Self {
        Self {
            rate_per_sec: rate_per_sec as f32,
            burst: burst.max(1) as f32,
            strikes: u16::try_from(strikes).unwrap_or(u16::MAX),
        }
    }
}

/// A token bucket with a penalty counter: requests beyond the bucket are answered with an error
/// until `strikes` of them have been refused in a row, then the connection is closed. Its
/// settings ([`RateLimit`]) are passed in on each call.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    last: Instant,
    tokens: f32,
    refused: u16,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        Self {
            last: now,
            tokens: limit.burst,
            refused: 0,
        }
    }

    /// Takes a token for one control message at `now`.
    pub fn check(&mut self, limit: &RateLimit, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let refill = elapsed.as_secs_f64() * f64::from(limit.rate_per_sec);
        self.tokens = (f64::from(self.tokens) + refill).min(f64::from(limit.burst)) as f32;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            Verdict::Allow
        } else {
            self.refused = self.refused.saturating_add(1);
            if self.refused > limit.strikes {
                Verdict::Exceeded
            } else {
                Verdict::Limited
            }
        }
    }

    /// How long until the next token (for the error reply's hint).
    pub fn retry_after(&self, limit: &RateLimit) -> Duration {
        if self.tokens >= 1.0 || limit.rate_per_sec <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(f64::from(1.0 - self.tokens) / f64::from(limit.rate_per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // any instant will do as the origin
    fn burst_then_limited_then_exceeded_then_refills() {
        let t0 = Instant::now();
        let l = RateLimit::new(10, 3, 2);
        let mut r = RateLimiter::new(&l, t0);
        for _ in 0..3 {
            assert_eq!(r.check(&l, t0), Verdict::Allow);
        }
        assert_eq!(r.check(&l, t0), Verdict::Limited);
        assert_eq!(r.check(&l, t0), Verdict::Limited);
        assert_eq!(r.check(&l, t0), Verdict::Exceeded);
        assert!(r.retry_after(&l) > Duration::ZERO);
        // 100 ms at 10/s gives one token back.
        assert_eq!(r.check(&l, t0 + Duration::from_millis(100)), Verdict::Allow);
        assert_eq!(
            r.check(&l, t0 + Duration::from_millis(100)),
            Verdict::Limited
        );
    }
}
