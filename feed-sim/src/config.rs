//! Simulator configuration and errors.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::faults::{FaultSpecError, Faults};

/// Most symbols a simulator serves.
pub const MAX_SYMBOLS: usize = 10_000;
/// Most initial levels per side.
pub const MAX_DEPTH: usize = 1_000;
/// Most book levels in total (`symbols × depth`), to keep memory and snapshots bounded.
pub const MAX_TOTAL_LEVELS: usize = 2_000_000;
/// Highest accepted rate, in l2updates per second.
pub const MAX_RATE: f64 = 100_000_000.0;
/// Largest burst factor.
pub const MAX_BURST_FACTOR: f64 = 1_000.0;
/// Default interval of per-symbol heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Most updates a pre-generated stream holds (about 150 bytes each in memory).
pub const MAX_PREGEN_UPDATES: u64 = 100_000_000;

/// Bursts of order flow: every `every`, the rate is `factor` times the base rate for `length`.
///
/// Bursts start at `every`, `2 × every`, ... after the simulator starts, so a run is the same
/// whatever the machine's speed (as long as the generator keeps up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Rate multiplier during a burst (1..=1000).
    pub factor: f64,
    /// Time from one burst's start to the next one's.
    pub every: Duration,
    /// Length of each burst; shorter than `every`.
    pub length: Duration,
}

impl Burst {
    /// Seconds of burst time in `[0, t]` (`t` in seconds since the start).
    pub fn burst_seconds(&self, t: f64) -> f64 {
        let (every, length) = (self.every.as_secs_f64(), self.length.as_secs_f64());
        if every <= 0.0 || t < every {
            return 0.0;
        }
        let n = (t / every).floor();
        (n - 1.0) * length + (t - n * every).min(length)
    }

    /// True when `t` seconds since the start falls inside a burst.
    pub fn active(&self, t: f64) -> bool {
        let every = self.every.as_secs_f64();
        every > 0.0 && t >= every && t - (t / every).floor() * every < self.length.as_secs_f64()
    }
}

/// How to run a [`Simulator`](crate::Simulator).
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks an ephemeral port (see `Simulator::local_addr`).
    pub listen: SocketAddr,
    /// Number of symbols (1..=10 000).
    pub symbols: usize,
    /// Seed of the order flow: same seed and config, same events.
    pub seed: u64,
    /// l2updates per second, all symbols together (> 0, finite).
    pub rate: f64,
    /// Stop changing books after this many l2updates (keep serving); `None` runs forever.
    pub updates: Option<u64>,
    /// Initial levels per side (1..=1 000, and `symbols × depth` at most 2 000 000); books
    /// stay around this depth.
    pub depth: usize,
    /// Fault switches (none by default).
    pub faults: Faults,
    /// Bursts of order flow (none by default).
    pub burst: Option<Burst>,
    /// A `heartbeat` for each symbol that had no update for this long (`None`: never). Also
    /// sent while the books are frozen, so that a consumer can tell a quiet feed from a dead one.
    pub heartbeat: Option<Duration>,
    /// Pre-generated stream mode (see `pregen.rs`): the `updates` l2updates (and their trades)
    /// are generated and framed at start, then each feed connection is sent the initial
    /// snapshots and the whole stream at `rate` with plain socket writes. `GET /book` is the
    /// truth at the end of the stream. Needs `updates`; no faults, no bursts.
    pub pregen: bool,
    /// With `pregen`: send as fast as the socket takes (no schedule, hence no eviction).
    pub unpaced: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001)),
            symbols: 50,
            seed: 1,
            rate: 2_000.0,
            updates: None,
            depth: 150,
            faults: Faults::none(),
            burst: None,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            pregen: false,
            unpaced: false,
        }
    }
}

impl SimConfig {
    /// Checks the ranges documented on each field.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(1..=MAX_SYMBOLS).contains(&self.symbols) {
            return Err(SimError::InvalidConfig(format!(
                "symbols must be between 1 and {MAX_SYMBOLS}, got {}",
                self.symbols
            )));
        }
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > MAX_RATE {
            return Err(SimError::InvalidConfig(format!(
                "rate must be a finite number of updates per second above 0 and at most {MAX_RATE}, got {}",
                self.rate
            )));
        }
        if !(1..=MAX_DEPTH).contains(&self.depth) {
            return Err(SimError::InvalidConfig(format!(
                "depth must be between 1 and {MAX_DEPTH}, got {}",
                self.depth
            )));
        }
        if self.symbols.saturating_mul(self.depth) > MAX_TOTAL_LEVELS {
            return Err(SimError::InvalidConfig(format!(
                "symbols × depth must be at most {MAX_TOTAL_LEVELS}, got {} × {}",
                self.symbols, self.depth
            )));
        }
        self.faults.validate()?;
        if let Some(b) = &self.burst {
            if !b.factor.is_finite() || !(1.0..=MAX_BURST_FACTOR).contains(&b.factor) {
                return Err(SimError::InvalidConfig(format!(
                    "burst factor must be between 1 and {MAX_BURST_FACTOR}, got {}",
                    b.factor
                )));
            }
            if b.length.is_zero() || b.length >= b.every {
                return Err(SimError::InvalidConfig(format!(
                    "a burst must last more than 0 and less than its period, got {:?} every {:?}",
                    b.length, b.every
                )));
            }
            if self.rate * b.factor > MAX_RATE {
                return Err(SimError::InvalidConfig(format!(
                    "rate × burst factor must be at most {MAX_RATE}, got {}",
                    self.rate * b.factor
                )));
            }
        }
        if self.pregen {
            match self.updates {
                Some(n) if (1..=MAX_PREGEN_UPDATES).contains(&n) => {}
                _ => {
                    return Err(SimError::InvalidConfig(format!(
                        "a pre-generated stream needs an update limit between 1 and {MAX_PREGEN_UPDATES}"
                    )));
                }
            }
            if !self.faults.is_none() || self.burst.is_some() {
                return Err(SimError::InvalidConfig(
                    "a pre-generated stream has no faults and no bursts".into(),
                ));
            }
        } else if self.unpaced {
            return Err(SimError::InvalidConfig(
                "unpaced sending is a mode of the pre-generated stream".into(),
            ));
        }
        if self.heartbeat.is_some_and(|h| h.is_zero()) {
            return Err(SimError::InvalidConfig(
                "heartbeat interval must be above 0 (or None for no heartbeats)".into(),
            ));
        }
        Ok(())
    }
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The listen address could not be bound (busy port, bad address, permissions).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another I/O failure while starting (socket options, spawning threads).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A fault switch is out of range.
    #[error("invalid faults: {0}")]
    Faults(#[from] FaultSpecError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bounds_are_checked() {
        assert!(SimConfig::default().validate().is_ok());
        let bad = [
            SimConfig {
                symbols: 0,
                ..SimConfig::default()
            },
            SimConfig {
                symbols: MAX_SYMBOLS + 1,
                ..SimConfig::default()
            },
            SimConfig {
                rate: 0.0,
                ..SimConfig::default()
            },
            SimConfig {
                rate: f64::NAN,
                ..SimConfig::default()
            },
            SimConfig {
                rate: f64::INFINITY,
                ..SimConfig::default()
            },
            SimConfig {
                depth: 0,
                ..SimConfig::default()
            },
            SimConfig {
                symbols: MAX_SYMBOLS,
                depth: MAX_DEPTH,
                ..SimConfig::default()
            },
            SimConfig {
                faults: Faults::none().with_drop(1.5),
                ..SimConfig::default()
            },
            SimConfig {
                burst: Some(Burst {
                    factor: 20.0,
                    every: Duration::from_secs(1),
                    length: Duration::from_secs(1),
                }),
                ..SimConfig::default()
            },
            SimConfig {
                burst: Some(Burst {
                    factor: 0.5,
                    every: Duration::from_secs(2),
                    length: Duration::from_secs(1),
                }),
                ..SimConfig::default()
            },
            SimConfig {
                heartbeat: Some(Duration::ZERO),
                ..SimConfig::default()
            },
            SimConfig {
                pregen: true,
                ..SimConfig::default()
            },
            SimConfig {
                pregen: true,
                updates: Some(10),
                faults: Faults::none().with_drop(0.1),
                ..SimConfig::default()
            },
            SimConfig {
                unpaced: true,
                updates: Some(10),
                ..SimConfig::default()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(
                    cfg.validate(),
                    Err(SimError::InvalidConfig(_) | SimError::Faults(_))
                ),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn burst_schedule() {
        let b = Burst {
            factor: 20.0,
            every: Duration::from_secs(2),
            length: Duration::from_millis(500),
        };
        assert_eq!(b.burst_seconds(1.9), 0.0);
        assert!(!b.active(1.9));
        assert!(b.active(2.1));
        assert!((b.burst_seconds(2.25) - 0.25).abs() < 1e-9);
        assert!((b.burst_seconds(3.0) - 0.5).abs() < 1e-9);
        assert!(!b.active(3.0));
        assert!((b.burst_seconds(4.1) - 0.6).abs() < 1e-9);
        assert!((b.burst_seconds(10.0) - 2.0).abs() < 1e-9);
    }
}
