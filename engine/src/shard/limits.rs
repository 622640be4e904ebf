//! Connection counts shared by every shard: in total and per client IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a new connection is refused at accept time (answered with HTTP 503, then closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// The engine holds `max-conns` connections.
    #[error("server full: too many connections")]
    Total,
    /// This client IP holds `max-conns-per-ip` connections.
    #[error("too many connections from this address")]
    PerIp,
}

impl LimitRefusal {
    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "max_conns",
            Self::PerIp => "max_conns_per_ip",
        }
    }
}

/// Counts of open client connections. Touched once per accept and once per close (never per
/// message); the per-IP table is behind a mutex for that reason.
#[derive(Debug)]
pub struct ConnCounter {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

impl ConnCounter {
    /// Limits of `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`, or refuses it.
    ///
    /// # Errors
    /// The limit that was reached; nothing is counted then.
    pub fn acquire(&self, ip: IpAddr) -> Result<(), LimitRefusal> {
        let mut per_ip = self.per_ip.lock();
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(LimitRefusal::Total);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(LimitRefusal::PerIp);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Forgets a connection from `ip` counted by [`ConnCounter::acquire`].
    pub fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Connections counted now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_ip_limits() {
        let c = ConnCounter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(c.acquire(a), Ok(()));
        assert_eq!(c.acquire(a), Ok(()));
        assert_eq!(c.acquire(a), Err(LimitRefusal::PerIp));
        assert_eq!(c.acquire(b), Ok(()));
        assert_eq!(c.acquire(b), Err(LimitRefusal::Total));
        assert_eq!(c.total(), 3);
        c.release(a);
        assert_eq!(c.acquire(b), Ok(()));
        c.release(b);
        c.release(b);
        c.release(b); // not counted any more: ignored
        assert_eq!(c.total(), 1);
    }
}
