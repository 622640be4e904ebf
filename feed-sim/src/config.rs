//! Simulator configuration and errors.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Most symbols a simulator serves.
pub const MAX_SYMBOLS: usize = 10_000;
/// Most initial levels per side.
pub const MAX_DEPTH: usize = 1_000;
/// Most book levels in total (`symbols × depth`), to keep memory and snapshots bounded.
pub const MAX_TOTAL_LEVELS: usize = 2_000_000;
/// Highest accepted rate, in l2updates per second.
pub const MAX_RATE: f64 = 100_000_000.0;

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
        Ok(())
    }
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
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
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.validate(), Err(SimError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
    }
}
