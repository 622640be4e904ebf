//! The daemon's configuration: every address and limit, validated once at start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::fanout::batch::BatchLimits;

/// Where the exchange feed comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedSource {
    /// An external feed, `ws://HOST:PORT/PATH`.
    External(FeedUrl),
    /// The embedded simulated exchange (feed-sim as a library) on an ephemeral loopback port.
    Embedded {
        /// Number of symbols.
        symbols: usize,
        /// Book updates per second, all symbols together.
        rate: f64,
        /// Seed of the order flow.
        seed: u64,
    },
}

/// A parsed `ws://` feed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedUrl {
    /// The URL as given.
    pub url: String,
    /// `HOST:PORT` to connect to.
    pub authority: String,
}

/// Why a configuration value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The setting (flag name without dashes).
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

impl FeedUrl {
    /// Parses `ws://HOST:PORT/PATH` (port required, no TLS).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `feed` when the URL is not of that form.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| ConfigError::new("feed", format!("{url:?} must start with ws://")))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let valid_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid_port {
            return Err(ConfigError::new(
                "feed",
                format!("{url:?} must name a host and a port, e.g. ws://127.0.0.1:9001/feed"),
            ));
        }
        Ok(Self {
            url: url.to_owned(),
            authority: authority.to_owned(),
        })
    }
}

/// Everything the engine needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listen address (`/ws`, `/healthz`, `/metrics`).
    pub listen: SocketAddr,
    /// The feed.
    pub feed: FeedSource,
    /// Shard threads.
    pub shards: usize,
    /// Pin shard `i` to core `i` (modulo the core count).
    pub pin: bool,
    /// Messages per shard ring.
    pub ring_capacity: usize,
    /// Most symbols the engine tracks; the feed's symbols beyond this are ignored and logged.
    pub max_symbols: usize,
    /// Bound of a connection's out-buffer in bytes; past it the client is evicted (1013).
    pub max_outbuf_bytes: usize,
    /// Largest client message (control requests) in bytes; larger is closed with 1009.
    pub max_message_bytes: usize,
    /// Most symbols one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Time a client has to complete its upgrade request.
    pub handshake_timeout: Duration,
    /// Time a closing connection has to take its close frame before the socket is dropped.
    pub close_timeout: Duration,
    /// Control messages per second per connection (sustained).
    pub control_rate: u32,
    /// Control messages per connection at once.
    pub control_burst: u32,
    /// Refused control messages in a row before the connection is closed with 1008.
    pub control_strikes: u32,
    /// How data messages are cut.
    pub batch: BatchLimits,
    /// Ring messages a shard handles per wake before it writes to its clients.
    pub drain_max: usize,
    /// Feed reconnect back-off: first delay and cap.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Serve `/echo` (conformance testing: every client message is echoed back).
    pub echo: bool,
    /// Accept permessage-deflate (RFC 7692) when a client offers it.
    pub deflate: bool,
    /// Data messages smaller than this many bytes are sent uncompressed even to deflate clients.
    pub deflate_threshold: usize,
    /// `Origin` values allowed to upgrade; empty allows any (and requests without one).
    pub allowed_origins: Vec<String>,
    /// File of access tokens, one a line; when set, upgrades need a valid token.
    pub tokens_file: Option<std::path::PathBuf>,
    /// Most client connections in total (all shards).
    pub max_conns: usize,
    /// Most client connections from one IP address.
    pub max_conns_per_ip: usize,
    /// Interval of server pings; a client that does not answer within two is closed.
    pub ping_interval: Duration,
    /// Time allowed for a graceful shutdown (close 1001 to every client, flush) before exit.
    pub shutdown_deadline: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            feed: FeedSource::Embedded {
                symbols: 50,
                rate: 2_000.0,
                seed: 1,
            },
            shards: std::thread::available_parallelism().map_or(1, usize::from),
            pin: false,
            ring_capacity: 1 << 16,
            max_symbols: 4096,
            max_outbuf_bytes: 4 << 20,
            max_message_bytes: 64 << 10,
            max_subscriptions: 4096,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            control_rate: 50,
            control_burst: 100,
            control_strikes: 20,
            batch: BatchLimits::default(),
            drain_max: 16_384,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            echo: false,
            deflate: true,
            deflate_threshold: 256,
            allowed_origins: Vec::new(),
            tokens_file: None,
            max_conns: 19_900,
            max_conns_per_ip: 19_900,
            ping_interval: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Checks every value; the error names the offending key.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |key: &'static str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                Err(ConfigError::new(key, format!("{v} is outside {lo}..={hi}")))
            } else {
                Ok(())
            }
        };
        range("shards", self.shards, 1, 256)?;
        range("ring-capacity", self.ring_capacity, 16, 1 << 24)?;
        range("max-symbols", self.max_symbols, 1, 1 << 20)?;
        range("max-outbuf-bytes", self.max_outbuf_bytes, 4096, 1 << 32)?;
        range("max-message-bytes", self.max_message_bytes, 125, 1 << 30)?;
        range("max-subscriptions", self.max_subscriptions, 1, 1 << 20)?;
        range("drain-max", self.drain_max, 1, 1 << 24)?;
        range(
            "batch-max-records",
            self.batch.max_records,
            1,
            usize::from(u16::MAX),
        )?;
        range("batch-max-bytes", self.batch.max_payload, 1024, 1 << 30)?;
        if self.control_rate == 0 || self.control_burst == 0 {
            return Err(ConfigError::new(
                "control-rate",
                "rate and burst must be positive",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::new("handshake-timeout", "must be positive"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::new("reconnect", "need 0 < min <= max"));
        }
        if let FeedSource::Embedded { symbols, rate, .. } = &self.feed {
            range("sim-symbols", *symbols, 1, self.max_symbols)?;
            if !(rate.is_finite() && *rate > 0.0) {
                return Err(ConfigError::new(
                    "sim-rate",
                    format!("{rate} must be a positive number"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_key() {
        let c = Config {
            shards: 0,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "shards");
        let c = Config {
            max_outbuf_bytes: 10,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max-outbuf-bytes");
        let c = Config {
            feed: FeedSource::Embedded {
                symbols: 5,
                rate: f64::NAN,
                seed: 1,
            },
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "sim-rate");
    }

    #[test]
    fn feed_urls() {
        let u = FeedUrl::parse("ws://127.0.0.1:9001/feed").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9001");
        for bad in [
            "http://x:1/feed",
            "ws://nohost/feed",
            "ws://:9001/feed",
            "ws://h:0/",
            "ws://h:99999/",
        ] {
            assert_eq!(FeedUrl::parse(bad).unwrap_err().key, "feed", "{bad}");
        }
    }
}
