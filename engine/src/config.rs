//! The daemon's configuration: every address and limit, validated once at start.
//!
//! A [`Config`] is built in layers: its [`Default`], then a TOML file (`--config FILE`), then
//! the command-line flags; a later layer overrides an earlier one key by key. Each layer is an
//! [`Overrides`] (every setting optional); [`Config::load`] merges them, loads the tokens file
//! and [validates](Config::validate) the result, so that a bad value is refused at start with
//! a message naming its key.
//!
//! Conventions, the same in the file and on the command line:
//! - keys are kebab-case and are the flag names without the dashes (`max-conns-per-ip = 100`
//!   is `--max-conns-per-ip 100`);
//! - durations are seconds, a number, fractions allowed (`ping-interval = 30`,
//!   `handshake-timeout = 0.5`);
//! - sizes are bytes, integers;
//! - the file is flat (no tables), and an unknown key is an error.
//!
//! `config/tickcast.example.toml` lists every key with its default.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sha1::{Digest, Sha1};

use crate::fanout::batch::BatchLimits;
use crate::replay::ReplayLimits;

/// Most client connections the engine may be configured for (`max-conns`).
pub const MAX_CONNS_CAP: usize = 1 << 22;
/// Longest duration any setting accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The `feed` value that selects the embedded simulated exchange.
pub const EMBEDDED_FEED: &str = "embedded";

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
    /// The setting: its key in the file, which is also its flag name without the dashes.
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

/// Why [`Config::load`] failed. The message is one line that names the file, line and key
/// when there are some; print it and exit with status 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration file could not be read; fix the path or its permissions.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, has an unknown key, or a value of the wrong
    /// type; fix the file at the given line.
    #[error("invalid configuration file {}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong, starting with the key when known.
        message: String,
    },
    /// A value is out of range or inconsistent with another; the message names the key.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl FeedUrl {
    /// Parses `ws://HOST:PORT/PATH` (port required, no TLS).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `feed` when the URL is not of that form.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| {
            ConfigError::new(
                "feed",
                format!("{url:?} must start with ws:// (or be {EMBEDDED_FEED:?})"),
            )
        })?;
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
    /// `SO_SNDBUF` of accepted sockets in bytes (the kernel doubles it); 0 leaves the kernel's
    /// autotuning (`tcp_wmem`). A fixed size (the default, 256 KiB) bounds kernel memory per
    /// subscriber and makes a client that stopped reading reach its out-buffer bound (eviction)
    /// sooner; with autotuning, 10 % stopped subscribers slowed the others (docs/benchmarks.md).
    pub send_buffer_bytes: usize,
    /// Largest client message (control requests) in bytes; larger is closed with 1009.
    pub max_message_bytes: usize,
    /// Most symbols one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Time a client has to complete its upgrade request.
    pub handshake_timeout: Duration,
    /// Time a closing connection has to take its close frame before the socket is dropped.
    pub close_timeout: Duration,
    /// Time an evicted slow consumer has to take the data it was mid-way through and its 1013
    /// close frame: until then the socket is kept (with only that much queued), so a client that
    /// resumes reading sees the close; after it the socket is dropped.
    pub evict_timeout: Duration,
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
    /// A feed silent this long (pinged at half of it) is stalled: every symbol goes stale and
    /// the ingester reconnects.
    pub feed_stall_timeout: Duration,
    /// Serve `/echo` (conformance testing: every client message is echoed back).
    pub echo: bool,
    /// Accept permessage-deflate (RFC 7692) when a client offers it.
    pub deflate: bool,
    /// Data messages smaller than this many bytes are sent uncompressed even to deflate clients.
    pub deflate_threshold: usize,
    /// `Origin` values allowed to upgrade; empty allows any (and requests without one).
    /// Each is `scheme://host[:port]`, lower-case, without a default port (as browsers send
    /// them); see [`Config::origin_allowed`].
    pub allowed_origins: Vec<String>,
    /// File of access tokens, one a line; when set, upgrades need a valid token.
    pub tokens_file: Option<PathBuf>,
    /// The access tokens: `Some` when upgrades need one. [`Config::load`] reads them from
    /// [`tokens_file`](Self::tokens_file); [`validate`](Self::validate) refuses a
    /// `tokens_file` whose tokens were not loaded.
    pub tokens: Option<Tokens>,
    /// Most client connections in total (all shards).
    pub max_conns: usize,
    /// Most client connections from one IP address.
    pub max_conns_per_ip: usize,
    /// Interval of server pings; a client that does not answer within two is closed.
    pub ping_interval: Duration,
    /// Time allowed for a graceful shutdown (close 1001 to every client, flush) before exit.
    pub shutdown_deadline: Duration,
    /// Replay windows for `resume` (protocol 1.1 §3.1): per stream at most `records` records,
    /// `bytes` bytes and `age` old, and `total_bytes` over all streams (keys `replay-records`,
    /// `replay-bytes`, `replay-age`, `replay-total-bytes`). The defaults hold ~30 s of the
    /// busiest stream of the default feed (docs/protocol.md, "Version 1.1"); `replay-records = 0`
    /// turns replay off.
    pub replay: ReplayLimits,
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
            send_buffer_bytes: 256 * 1024,
            max_message_bytes: 64 << 10,
            max_subscriptions: 4096,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            evict_timeout: Duration::from_secs(60),
            control_rate: 50,
            control_burst: 100,
            control_strikes: 20,
            batch: BatchLimits::default(),
            drain_max: 16_384,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            feed_stall_timeout: crate::feed::ingest::DEFAULT_STALL_TIMEOUT,
            echo: false,
            deflate: true,
            deflate_threshold: 256,
            allowed_origins: Vec::new(),
            tokens_file: None,
            tokens: None,
            max_conns: 19_900,
            max_conns_per_ip: 19_900,
            ping_interval: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(5),
            replay: ReplayLimits::default(),
        }
    }
}

impl Config {
    /// Builds the configuration the daemon runs with: defaults, then the TOML file at
    /// `file` (if any), then `flags`; then loads the tokens file and validates everything.
    ///
    /// # Errors
    /// A [`LoadError`] naming the file, line or key at fault.
    pub fn load(file: Option<&Path>, flags: Overrides) -> Result<Self, LoadError> {
        let layers = match file {
            Some(path) => Overrides::read(path)?.merge(flags),
            None => flags,
        };
        let mut config = Self::from_overrides(&layers)?;
        if let Some(path) = &config.tokens_file {
            config.tokens = Some(Tokens::load(path)?);
        }
        config.validate()?;
        Ok(config)
    }

    /// The defaults with every value `o` sets. Converts and checks the form of each value
    /// (durations, the feed URL, origins) but does no IO and no range checks: see
    /// [`validate`](Self::validate) and [`load`](Self::load).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key whose value has the wrong form.
    pub fn from_overrides(o: &Overrides) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let FeedSource::Embedded {
            symbols,
            rate,
            seed,
        } = c.feed
        else {
            return Err(ConfigError::new("feed", "the default feed is not embedded"));
        };
        c.feed = match o.feed.as_deref() {
            None | Some(EMBEDDED_FEED) => FeedSource::Embedded {
                symbols: o.sim_symbols.unwrap_or(symbols),
                rate: o.sim_rate.unwrap_or(rate),
                seed: o.sim_seed.unwrap_or(seed),
            },
            Some(url) => FeedSource::External(FeedUrl::parse(url)?),
        };
        set(&mut c.listen, o.listen);
        set(&mut c.shards, o.shards);
        set(&mut c.pin, o.pin);
        set(&mut c.ring_capacity, o.ring_capacity);
        set(&mut c.max_symbols, o.max_symbols);
        set(&mut c.max_outbuf_bytes, o.max_outbuf_bytes);
        set(&mut c.send_buffer_bytes, o.send_buffer_bytes);
        set(&mut c.max_message_bytes, o.max_message_bytes);
        set(&mut c.max_subscriptions, o.max_subscriptions);
        set(&mut c.control_rate, o.control_rate);
        set(&mut c.control_burst, o.control_burst);
        set(&mut c.control_strikes, o.control_strikes);
        set(&mut c.batch.max_records, o.batch_max_records);
        set(&mut c.batch.max_payload, o.batch_max_bytes);
        set(&mut c.drain_max, o.drain_max);
        set(&mut c.echo, o.echo);
        set(&mut c.deflate, o.deflate);
        set(&mut c.deflate_threshold, o.deflate_threshold);
        set(&mut c.max_conns, o.max_conns);
        set(&mut c.max_conns_per_ip, o.max_conns_per_ip);
        set(&mut c.replay.records, o.replay_records);
        set(&mut c.replay.bytes, o.replay_bytes);
        set(&mut c.replay.total_bytes, o.replay_total_bytes);
        if let Some(path) = &o.tokens_file {
            c.tokens_file = Some(path.clone());
        }
        if let Some(origins) = &o.allowed_origins {
            c.allowed_origins = origins
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| normalize_origin(s).map_err(|r| ConfigError::new("allowed-origins", r)))
                .collect::<Result<_, _>>()?;
        }
        let durations = [
            (
                "handshake-timeout",
                o.handshake_timeout,
                &mut c.handshake_timeout,
            ),
            ("close-timeout", o.close_timeout, &mut c.close_timeout),
            ("evict-timeout", o.evict_timeout, &mut c.evict_timeout),
            ("reconnect-min", o.reconnect_min, &mut c.reconnect_min),
            ("reconnect-max", o.reconnect_max, &mut c.reconnect_max),
            (
                "feed-stall-timeout",
                o.feed_stall_timeout,
                &mut c.feed_stall_timeout,
            ),
            ("ping-interval", o.ping_interval, &mut c.ping_interval),
            (
                "shutdown-deadline",
                o.shutdown_deadline,
                &mut c.shutdown_deadline,
            ),
            ("replay-age", o.replay_age, &mut c.replay.age),
        ];
        for (key, secs, slot) in durations {
            if let Some(secs) = secs {
                *slot = secs.to_duration(key)?;
            }
        }
        Ok(c)
    }

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
        let positive = |key: &'static str, v: u32| {
            if v == 0 {
                Err(ConfigError::new(key, "must be positive"))
            } else {
                Ok(())
            }
        };
        let duration = |key: &'static str, d: Duration| {
            if d.is_zero() || d > MAX_DURATION {
                Err(ConfigError::new(
                    key,
                    format!(
                        "{} s is outside (0, {}] seconds",
                        d.as_secs_f64(),
                        MAX_DURATION.as_secs()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        range("shards", self.shards, 1, 256)?;
        range("ring-capacity", self.ring_capacity, 16, 1 << 24)?;
        range("max-symbols", self.max_symbols, 1, 1 << 20)?;
        range("max-outbuf-bytes", self.max_outbuf_bytes, 4096, 1 << 32)?;
        if self.send_buffer_bytes != 0 {
            range("send-buffer-bytes", self.send_buffer_bytes, 4096, 1 << 30)?;
        }
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
        range("deflate-threshold", self.deflate_threshold, 0, 1 << 30)?;
        range("max-conns", self.max_conns, 1, MAX_CONNS_CAP)?;
        range("max-conns-per-ip", self.max_conns_per_ip, 1, self.max_conns)?;
        positive("control-rate", self.control_rate)?;
        positive("control-burst", self.control_burst)?;
        positive("control-strikes", self.control_strikes)?;
        duration("handshake-timeout", self.handshake_timeout)?;
        duration("close-timeout", self.close_timeout)?;
        duration("evict-timeout", self.evict_timeout)?;
        duration("ping-interval", self.ping_interval)?;
        duration("shutdown-deadline", self.shutdown_deadline)?;
        duration("reconnect-min", self.reconnect_min)?;
        duration("reconnect-max", self.reconnect_max)?;
        duration("feed-stall-timeout", self.feed_stall_timeout)?;
        // Replay: 0 records turns it off; otherwise every bound must let a window hold something.
        if self.replay.records != 0 {
            range("replay-records", self.replay.records, 1, 1 << 24)?;
            range("replay-bytes", self.replay.bytes, 4096, 1 << 32)?;
            range(
                "replay-total-bytes",
                self.replay.total_bytes,
                self.replay.bytes,
                1 << 40,
            )?;
            duration("replay-age", self.replay.age)?;
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::new(
                "reconnect-max",
                format!(
                    "{} s is below reconnect-min ({} s)",
                    self.reconnect_max.as_secs_f64(),
                    self.reconnect_min.as_secs_f64()
                ),
            ));
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
        for origin in &self.allowed_origins {
            match normalize_origin(origin) {
                Ok(n) if n == *origin => {}
                Ok(n) => {
                    return Err(ConfigError::new(
                        "allowed-origins",
                        format!("{origin:?} is not in canonical form ({n:?})"),
                    ));
                }
                Err(reason) => return Err(ConfigError::new("allowed-origins", reason)),
            }
        }
        match (&self.tokens_file, &self.tokens) {
            (Some(path), None) => Err(ConfigError::new(
                "tokens-file",
                format!("{}: the tokens were not loaded", path.display()),
            )),
            (_, Some(tokens)) if tokens.is_empty() => {
                Err(ConfigError::new("tokens-file", "no tokens"))
            }
            _ => Ok(()),
        }
    }

    /// Whether a client sending `Origin: origin` may upgrade: always when no origins are
    /// configured, else when `origin` is one of them (ASCII case-insensitive, a default port
    /// spelt out or not). Whether a request *without* an `Origin` is allowed is the caller's
    /// policy; browsers always send one.
    #[must_use]
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        normalize_origin(origin.trim()).is_ok_and(|o| self.allowed_origins.contains(&o))
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// One layer of settings: every key optional. The TOML file deserializes into it (unknown keys
/// refused), and so do the command-line flags; [`Overrides::merge`] stacks layers and
/// [`Config::from_overrides`] applies one to the defaults.
///
/// Each field is the key of the same name in kebab-case; see [`Config`] for what it means.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Overrides {
    /// `listen`: [`Config::listen`].
    pub listen: Option<SocketAddr>,
    /// `feed`: [`Config::feed`], `"embedded"` or `ws://HOST:PORT/PATH`.
    pub feed: Option<String>,
    /// `sim-symbols`: the embedded simulator's symbols ([`Config::feed`]).
    pub sim_symbols: Option<usize>,
    /// `sim-rate`: the embedded simulator's rate ([`Config::feed`]).
    pub sim_rate: Option<f64>,
    /// `sim-seed`: the embedded simulator's seed ([`Config::feed`]).
    pub sim_seed: Option<u64>,
    /// `shards`: [`Config::shards`].
    pub shards: Option<usize>,
    /// `pin`: [`Config::pin`].
    pub pin: Option<bool>,
    /// `ring-capacity`: [`Config::ring_capacity`].
    pub ring_capacity: Option<usize>,
    /// `max-symbols`: [`Config::max_symbols`].
    pub max_symbols: Option<usize>,
    /// `max-outbuf-bytes`: [`Config::max_outbuf_bytes`].
    pub max_outbuf_bytes: Option<usize>,
    /// `send-buffer-bytes`: [`Config::send_buffer_bytes`].
    pub send_buffer_bytes: Option<usize>,
    /// `max-message-bytes`: [`Config::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// `max-subscriptions`: [`Config::max_subscriptions`].
    pub max_subscriptions: Option<usize>,
    /// `handshake-timeout`: [`Config::handshake_timeout`].
    pub handshake_timeout: Option<Seconds>,
    /// `close-timeout`: [`Config::close_timeout`].
    pub close_timeout: Option<Seconds>,
    /// `evict-timeout`: [`Config::evict_timeout`].
    pub evict_timeout: Option<Seconds>,
    /// `control-rate`: [`Config::control_rate`].
    pub control_rate: Option<u32>,
    /// `control-burst`: [`Config::control_burst`].
    pub control_burst: Option<u32>,
    /// `control-strikes`: [`Config::control_strikes`].
    pub control_strikes: Option<u32>,
    /// `batch-max-records`: [`BatchLimits::max_records`] of [`Config::batch`].
    pub batch_max_records: Option<usize>,
    /// `batch-max-bytes`: [`BatchLimits::max_payload`] of [`Config::batch`].
    pub batch_max_bytes: Option<usize>,
    /// `drain-max`: [`Config::drain_max`].
    pub drain_max: Option<usize>,
    /// `reconnect-min`: [`Config::reconnect_min`].
    pub reconnect_min: Option<Seconds>,
    /// `reconnect-max`: [`Config::reconnect_max`].
    pub reconnect_max: Option<Seconds>,
    /// `feed-stall-timeout`: [`Config::feed_stall_timeout`].
    pub feed_stall_timeout: Option<Seconds>,
    /// `echo`: [`Config::echo`].
    pub echo: Option<bool>,
    /// `deflate`: [`Config::deflate`].
    pub deflate: Option<bool>,
    /// `deflate-threshold`: [`Config::deflate_threshold`].
    pub deflate_threshold: Option<usize>,
    /// `allowed-origins`: [`Config::allowed_origins`].
    /// In the file an array of strings; on the command line a comma-separated list.
    pub allowed_origins: Option<Vec<String>>,
    /// `tokens-file`: [`Config::tokens_file`].
    pub tokens_file: Option<PathBuf>,
    /// `max-conns`: [`Config::max_conns`].
    pub max_conns: Option<usize>,
    /// `max-conns-per-ip`: [`Config::max_conns_per_ip`].
    pub max_conns_per_ip: Option<usize>,
    /// `ping-interval`: [`Config::ping_interval`].
    pub ping_interval: Option<Seconds>,
    /// `shutdown-deadline`: [`Config::shutdown_deadline`].
    pub shutdown_deadline: Option<Seconds>,
    /// `replay-records`: [`ReplayLimits::records`] of [`Config::replay`].
    pub replay_records: Option<usize>,
    /// `replay-bytes`: [`ReplayLimits::bytes`] of [`Config::replay`].
    pub replay_bytes: Option<usize>,
    /// `replay-age`: [`ReplayLimits::age`] of [`Config::replay`].
    pub replay_age: Option<Seconds>,
    /// `replay-total-bytes`: [`ReplayLimits::total_bytes`] of [`Config::replay`].
    pub replay_total_bytes: Option<usize>,
}

/// Every key of the configuration file, in the order of [`Overrides`].
pub const KEYS: &[&str] = &[
    "listen",
    "feed",
    "sim-symbols",
    "sim-rate",
    "sim-seed",
    "shards",
    "pin",
    "ring-capacity",
    "max-symbols",
    "max-outbuf-bytes",
    "send-buffer-bytes",
    "max-message-bytes",
    "max-subscriptions",
    "handshake-timeout",
    "close-timeout",
    "evict-timeout",
    "control-rate",
    "control-burst",
    "control-strikes",
    "batch-max-records",
    "batch-max-bytes",
    "drain-max",
    "reconnect-min",
    "reconnect-max",
    "feed-stall-timeout",
    "echo",
    "deflate",
    "deflate-threshold",
    "allowed-origins",
    "tokens-file",
    "max-conns",
    "max-conns-per-ip",
    "ping-interval",
    "shutdown-deadline",
    "replay-records",
    "replay-bytes",
    "replay-age",
    "replay-total-bytes",
];

impl Overrides {
    /// Reads and parses a TOML configuration file.
    ///
    /// # Errors
    /// [`LoadError::Read`] or [`LoadError::Parse`].
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| LoadError::Parse {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// The 1-based line of the problem (when known) and a one-line message that starts with
    /// the key at fault when there is one.
    pub fn parse(text: &str) -> Result<Self, (Option<usize>, String)> {
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
    }

    /// `self` with every value that `over` sets replaced by `over`'s.
    #[must_use]
    pub fn merge(self, over: Self) -> Self {
        Self {
            listen: over.listen.or(self.listen),
            feed: over.feed.or(self.feed),
            sim_symbols: over.sim_symbols.or(self.sim_symbols),
            sim_rate: over.sim_rate.or(self.sim_rate),
            sim_seed: over.sim_seed.or(self.sim_seed),
            shards: over.shards.or(self.shards),
            pin: over.pin.or(self.pin),
            ring_capacity: over.ring_capacity.or(self.ring_capacity),
            max_symbols: over.max_symbols.or(self.max_symbols),
            max_outbuf_bytes: over.max_outbuf_bytes.or(self.max_outbuf_bytes),
            send_buffer_bytes: over.send_buffer_bytes.or(self.send_buffer_bytes),
            max_message_bytes: over.max_message_bytes.or(self.max_message_bytes),
            max_subscriptions: over.max_subscriptions.or(self.max_subscriptions),
            handshake_timeout: over.handshake_timeout.or(self.handshake_timeout),
            close_timeout: over.close_timeout.or(self.close_timeout),
            evict_timeout: over.evict_timeout.or(self.evict_timeout),
            control_rate: over.control_rate.or(self.control_rate),
            control_burst: over.control_burst.or(self.control_burst),
            control_strikes: over.control_strikes.or(self.control_strikes),
            batch_max_records: over.batch_max_records.or(self.batch_max_records),
            batch_max_bytes: over.batch_max_bytes.or(self.batch_max_bytes),
            drain_max: over.drain_max.or(self.drain_max),
            reconnect_min: over.reconnect_min.or(self.reconnect_min),
            reconnect_max: over.reconnect_max.or(self.reconnect_max),
            feed_stall_timeout: over.feed_stall_timeout.or(self.feed_stall_timeout),
            echo: over.echo.or(self.echo),
            deflate: over.deflate.or(self.deflate),
            deflate_threshold: over.deflate_threshold.or(self.deflate_threshold),
            allowed_origins: over.allowed_origins.or(self.allowed_origins),
            tokens_file: over.tokens_file.or(self.tokens_file),
            max_conns: over.max_conns.or(self.max_conns),
            max_conns_per_ip: over.max_conns_per_ip.or(self.max_conns_per_ip),
            ping_interval: over.ping_interval.or(self.ping_interval),
            shutdown_deadline: over.shutdown_deadline.or(self.shutdown_deadline),
            replay_records: over.replay_records.or(self.replay_records),
            replay_bytes: over.replay_bytes.or(self.replay_bytes),
            replay_age: over.replay_age.or(self.replay_age),
            replay_total_bytes: over.replay_total_bytes.or(self.replay_total_bytes),
        }
    }
}

/// Turns a toml error into (line, one-line message starting with the key).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> (Option<usize>, String) {
    let line = e
        .span()
        .map(|span| text.get(..span.start).unwrap_or(text).matches('\n').count() + 1);
    let message = e.message().lines().next().unwrap_or("").trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        let hint = closest_key(key).map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
        return (line, format!("{key}: unknown key{hint}"));
    }
    // A value of the wrong type: the span covers the value; its line starts with the key.
    let key = line
        .and_then(|l| text.lines().nth(l - 1))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| KEYS.contains(k));
    match key {
        Some(key) => (line, format!("{key}: {message}")),
        None => (line, message.to_owned()),
    }
}

/// The known key within two edits of `key`, if any.
fn closest_key(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A duration in seconds as written in the file (an integer or a float) or on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub f64);

impl Seconds {
    /// The duration, checked to be finite, non-negative and at most [`MAX_DURATION`].
    ///
    /// # Errors
    /// A [`ConfigError`] naming `key`.
    pub fn to_duration(self, key: &'static str) -> Result<Duration, ConfigError> {
        Duration::try_from_secs_f64(self.0)
            .ok()
            .filter(|d| *d <= MAX_DURATION)
            .ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!(
                        "{} is not a number of seconds in 0..={}",
                        self.0,
                        MAX_DURATION.as_secs()
                    ),
                )
            })
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is not a number of seconds (e.g. 30 or 0.25)"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds (e.g. 30 or 0.25)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The access tokens clients must present when a tokens file is configured.
///
/// Kept as SHA-1 digests, so that a lookup's timing does not depend on how much of a guess
/// matches a real token, and so that `Debug` shows nothing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens(HashSet<[u8; 20]>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// Reads a tokens file: one token a line, UTF-8, a final newline optional, CRLF accepted.
    /// A token is printable ASCII without spaces; blank lines and an empty file are refused.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `tokens-file`, with the path and the line at fault (never the
    /// token itself).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("tokens-file", format!("cannot read {shown}: {e}")))?;
        Self::parse(&text)
            .map_err(|reason| ConfigError::new("tokens-file", format!("{shown}{reason}")))
    }

    /// Parses the text of a tokens file (see [`load`](Self::load)).
    ///
    /// # Errors
    /// Why the text was refused, starting with `line N: ` when a line is at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.trim().is_empty() {
            return Err("no tokens (the file is empty)".to_owned());
        }
        let mut set = HashSet::new();
        for (i, line) in body.split('\n').enumerate() {
            let token = line.strip_suffix('\r').unwrap_or(line);
            if token.trim().is_empty() {
                return Err(format!("line {}: blank line", i + 1));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token must be printable ASCII without spaces",
                    i + 1
                ));
            }
            set.insert(digest(token));
        }
        Ok(Self(set))
    }

    /// Whether `token` is one of the tokens.
    #[must_use]
    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(&digest(token))
    }

    /// Number of distinct tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Tokens {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(|t| digest(t.as_ref())).collect())
    }
}

fn digest(token: &str) -> [u8; 20] {
    Sha1::digest(token.as_bytes()).into()
}

/// Checks that `s` is an origin, `scheme://host[:port]`, and returns it in the form browsers
/// send: lower-case, without the scheme's default port.
fn normalize_origin(s: &str) -> Result<String, String> {
    if s.eq_ignore_ascii_case("null") {
        return Err(format!(
            "{s:?}: the null origin (sandboxed pages, files) cannot be allowed"
        ));
    }
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not an origin (scheme://host[:port]): {why}"
        ))
    };
    let Some((scheme, rest)) = s.split_once("://") else {
        return bad("no scheme");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return bad("invalid scheme");
    }
    if rest.ends_with('/') {
        return bad("an origin has no path (drop the trailing /)");
    }
    if rest.contains(['/', '?', '#', '@']) {
        return bad("an origin has no path, query or user");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad("unclosed [");
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return bad("invalid IPv6 address");
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return bad("junk after ]"),
            },
        };
        (&rest[..addr.len() + 2], port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !host_ok {
        return bad("invalid host");
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return bad("invalid port"),
        },
    };
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    Ok(match port {
        Some(p) if Some(p) != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Overrides {
        Overrides::parse(text).unwrap()
    }

    fn invalid_key(c: &Config) -> &'static str {
        c.validate().unwrap_err().key
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tickcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
        let empty = Config::from_overrides(&Overrides::default()).unwrap();
        assert_eq!(format!("{empty:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let c = Config {
            shards: 0,
            ..Config::default()
        };
        assert_eq!(invalid_key(&c), "shards");
        let c = Config {
            max_outbuf_bytes: 10,
            ..Config::default()
        };
        assert_eq!(invalid_key(&c), "max-outbuf-bytes");
        let c = Config {
            feed: FeedSource::Embedded {
                symbols: 5,
                rate: f64::NAN,
                seed: 1,
            },
            ..Config::default()
        };
        assert_eq!(invalid_key(&c), "sim-rate");
    }

    #[test]
    fn each_new_limit_is_checked_under_its_key() {
        type Edit = fn(&mut Config);
        let cases: [(Edit, &str); 16] = [
            (|c| c.max_conns = 0, "max-conns"),
            (|c| c.max_conns = MAX_CONNS_CAP + 1, "max-conns"),
            (|c| c.max_conns_per_ip = 0, "max-conns-per-ip"),
            (
                |c| (c.max_conns, c.max_conns_per_ip) = (10, 11),
                "max-conns-per-ip",
            ),
            (|c| c.ping_interval = Duration::ZERO, "ping-interval"),
            (
                |c| c.shutdown_deadline = Duration::ZERO,
                "shutdown-deadline",
            ),
            (
                |c| c.shutdown_deadline = MAX_DURATION * 2,
                "shutdown-deadline",
            ),
            (|c| c.close_timeout = Duration::ZERO, "close-timeout"),
            (
                |c| c.handshake_timeout = Duration::ZERO,
                "handshake-timeout",
            ),
            (|c| c.control_burst = 0, "control-burst"),
            (|c| c.control_strikes = 0, "control-strikes"),
            (
                |c| c.reconnect_max = Duration::from_millis(50),
                "reconnect-max",
            ),
            (
                |c| c.allowed_origins = vec!["https://a.example/".into()],
                "allowed-origins",
            ),
            (
                |c| c.allowed_origins = vec!["HTTPS://A.example".into()],
                "allowed-origins",
            ),
            (
                |c| c.tokens_file = Some("/nonexistent".into()),
                "tokens-file",
            ),
            (
                |c| c.tokens = Some(Tokens::from_iter([""; 0])),
                "tokens-file",
            ),
        ];
        for (edit, key) in cases {
            let mut c = Config::default();
            edit(&mut c);
            assert_eq!(invalid_key(&c), key, "{c:?}");
        }
        let c = Config {
            max_conns_per_ip: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid configuration: max-conns-per-ip: 0 is outside 1..=19900"
        );
    }

    #[test]
    fn file_keys_are_kebab_case_and_durations_are_seconds() {
        let o = parse(
            r#"
            listen = "0.0.0.0:9000"
            feed = "ws://10.0.0.5:9001/feed"
            max-conns = 5000
            max-conns-per-ip = 50
            ping-interval = 15
            shutdown-deadline = 2.5
            handshake-timeout = 0.25
            allowed-origins = ["https://App.Example.com:443", "http://localhost:3000"]
            pin = true
            deflate = false
            batch-max-bytes = 65536
            "#,
        );
        let c = Config::from_overrides(&o).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            c.feed,
            FeedSource::External(FeedUrl::parse("ws://10.0.0.5:9001/feed").unwrap())
        );
        assert_eq!((c.max_conns, c.max_conns_per_ip), (5000, 50));
        assert_eq!(c.ping_interval, Duration::from_secs(15));
        assert_eq!(c.shutdown_deadline, Duration::from_millis(2500));
        assert_eq!(c.handshake_timeout, Duration::from_millis(250));
        assert_eq!(
            c.allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert!(c.pin && !c.deflate);
        assert_eq!(c.batch.max_payload, 65536);
        // Untouched keys keep their defaults.
        assert_eq!(c.max_outbuf_bytes, Config::default().max_outbuf_bytes);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file =
            parse("max-conns = 100\nmax-conns-per-ip = 10\nping-interval = 5\nsim-symbols = 7");
        let flags = Overrides {
            max_conns_per_ip: Some(20),
            shutdown_deadline: Some(Seconds(1.0)),
            ..Overrides::default()
        };
        let c = Config::from_overrides(&file.merge(flags)).unwrap();
        assert_eq!(c.max_conns, 100, "from the file");
        assert_eq!(c.max_conns_per_ip, 20, "the flag wins");
        assert_eq!(c.ping_interval, Duration::from_secs(5), "from the file");
        assert_eq!(c.shutdown_deadline, Duration::from_secs(1), "from the flag");
        assert_eq!(c.close_timeout, Config::default().close_timeout, "default");
        assert!(matches!(c.feed, FeedSource::Embedded { symbols: 7, .. }));

        // A flag can switch a file's external feed back to the simulator.
        let file = parse(r#"feed = "ws://127.0.0.1:9001/feed""#);
        let flags = Overrides {
            feed: Some(EMBEDDED_FEED.into()),
            ..Overrides::default()
        };
        let c = Config::from_overrides(&file.merge(flags)).unwrap();
        assert!(matches!(c.feed, FeedSource::Embedded { .. }));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let (line, msg) = Overrides::parse("max-conns = 5\nmax-conn = 10\n").unwrap_err();
        assert_eq!(line, Some(2));
        assert_eq!(msg, "max-conn: unknown key (did you mean `max-conns`?)");
        let (_, msg) = Overrides::parse("[limits]\nmax-conns = 5\n").unwrap_err();
        assert_eq!(msg, "limits: unknown key");
        let (_, msg) = Overrides::parse("max_conns = 5\n").unwrap_err();
        assert!(msg.starts_with("max_conns: unknown key"), "{msg}");
    }

    #[test]
    fn type_errors_name_key_and_line() {
        let (line, msg) = Overrides::parse("echo = true\n\nmax-conns = \"many\"\n").unwrap_err();
        assert_eq!(line, Some(3));
        assert!(msg.starts_with("max-conns: invalid type: string"), "{msg}");
        let (line, msg) = Overrides::parse("ping-interval = \"30s\"\n").unwrap_err();
        assert_eq!(line, Some(1));
        assert!(
            msg.starts_with("ping-interval: ") && msg.contains("seconds"),
            "{msg}"
        );
        let (line, msg) = Overrides::parse("listen = \"localhost\"\n").unwrap_err();
        assert_eq!(line, Some(1));
        assert!(msg.starts_with("listen: "), "{msg}");
        let (line, _) = Overrides::parse("echo = \n").unwrap_err();
        assert_eq!(line, Some(1), "syntax errors carry a line too");
        let (_, msg) = Overrides::parse("max-conns = -1\n").unwrap_err();
        assert!(msg.starts_with("max-conns: "), "{msg}");
    }

    #[test]
    fn out_of_range_durations_name_their_key() {
        let o = Overrides {
            ping_interval: Some(Seconds(-1.0)),
            ..Overrides::default()
        };
        assert_eq!(Config::from_overrides(&o).unwrap_err().key, "ping-interval");
        let o = Overrides {
            shutdown_deadline: Some(Seconds(f64::INFINITY)),
            ..Overrides::default()
        };
        assert_eq!(
            Config::from_overrides(&o).unwrap_err().key,
            "shutdown-deadline"
        );
        assert!("0.5".parse::<Seconds>().is_ok());
        assert!("-1".parse::<Seconds>().is_err());
        assert!("30s".parse::<Seconds>().is_err());
    }

    #[test]
    fn origins_are_checked_and_normalized() {
        for (given, normal) in [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM:443", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        ] {
            assert_eq!(normalize_origin(given).as_deref(), Ok(normal), "{given}");
        }
        for bad in [
            "app.example.com",
            "https://",
            "https://a.example/",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example:0",
            "https://a.example:99999",
            "https://a.example:+80",
            "https://a b",
            "https://[::zz]",
            "1http://a",
            "null",
            "*",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
        let o = Overrides {
            allowed_origins: Some(vec!["https://ok.example".into(), "ftp//x".into()]),
            ..Overrides::default()
        };
        assert_eq!(
            Config::from_overrides(&o).unwrap_err().key,
            "allowed-origins"
        );
    }

    #[test]
    fn origin_allowed_matches_like_a_browser_sends() {
        let c = Config::default();
        assert!(
            c.origin_allowed("https://anything.example"),
            "empty list allows any"
        );
        let o = Overrides {
            allowed_origins: Some(vec!["https://app.example.com".into(), " ".into()]),
            ..Overrides::default()
        };
        let c = Config::from_overrides(&o).unwrap();
        assert_eq!(c.allowed_origins.len(), 1, "blank entries are dropped");
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(c.origin_allowed("https://APP.example.com:443"));
        assert!(!c.origin_allowed("http://app.example.com"));
        assert!(!c.origin_allowed("https://app.example.com.evil.example"));
        assert!(!c.origin_allowed("null"));
        assert!(!c.origin_allowed(""));
    }

    #[test]
    fn tokens_files_are_strict() {
        let t = Tokens::parse("alpha\nbeta-2\r\ngamma_3\n").unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.contains("alpha") && t.contains("beta-2") && t.contains("gamma_3"));
        assert!(!t.contains("alph") && !t.contains("beta-2\r") && !t.contains(""));
        assert!(!format!("{t:?}").contains("alpha"), "Debug hides tokens");
        assert_eq!(
            Tokens::parse("").unwrap_err(),
            "no tokens (the file is empty)"
        );
        assert_eq!(
            Tokens::parse("\n").unwrap_err(),
            "no tokens (the file is empty)"
        );
        assert_eq!(Tokens::parse("a\n\nb\n").unwrap_err(), "line 2: blank line");
        assert!(
            Tokens::parse("a\nb c\n")
                .unwrap_err()
                .starts_with("line 2: ")
        );
        assert!(Tokens::parse("\ta\n").unwrap_err().starts_with("line 1: "));
        assert!(
            Tokens::parse("caf\u{e9}\n")
                .unwrap_err()
                .starts_with("line 1: ")
        );
    }

    #[test]
    fn load_reads_file_flags_and_tokens() {
        let tokens = temp_file("tokens", "s3cret\n");
        let file = temp_file(
            "ok.toml",
            &format!(
                "max-conns = 300\ntokens-file = {:?}\nallowed-origins = [\"https://a.example\"]\n",
                tokens.display().to_string()
            ),
        );
        let flags = Overrides {
            max_conns_per_ip: Some(3),
            ..Overrides::default()
        };
        let c = Config::load(Some(&file), flags).unwrap();
        assert_eq!((c.max_conns, c.max_conns_per_ip), (300, 3));
        assert!(c.tokens.as_ref().is_some_and(|t| t.contains("s3cret")));

        let empty = temp_file("empty-tokens", "");
        let flags = Overrides {
            tokens_file: Some(empty.clone()),
            ..Overrides::default()
        };
        let err = Config::load(None, flags).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid configuration: tokens-file: "),
            "{err}"
        );

        let bad = temp_file("bad.toml", "max-conns = 10\nmax-conns-per-ip = 0\n");
        let err = Config::load(Some(&bad), Overrides::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: max-conns-per-ip: 0 is outside 1..=10"
        );
        let typo = temp_file("typo.toml", "\nping-intervall = 3\n");
        let err = Config::load(Some(&typo), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "typo.toml, line 2: ping-intervall: unknown key (did you mean `ping-interval`?)"
            ),
            "{err}"
        );
        let missing = Config::load(
            Some(Path::new("/nonexistent/tickcast.toml")),
            Overrides::default(),
        );
        assert!(matches!(missing, Err(LoadError::Read { .. })));
    }

    #[test]
    fn example_file_lists_every_key_with_its_default() {
        let text = include_str!("../../config/tickcast.example.toml");
        let as_is = Config::from_overrides(&parse(text)).unwrap();
        assert_eq!(format!("{as_is:?}"), format!("{:?}", Config::default()));
        // Uncommented, every `# key = value` line is the default (but for the two keys whose
        // default cannot be written: shards, one per core, and tokens-file, none).
        let mut seen = Vec::new();
        let uncommented: Vec<&str> = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(r) if KEYS.iter().any(|k| r.starts_with(&format!("{k} ="))) => {
                    seen.push(r.split(' ').next().unwrap_or_default());
                    r
                }
                _ => l,
            })
            .collect();
        for key in KEYS {
            assert!(
                seen.contains(key),
                "{key} is not in config/tickcast.example.toml"
            );
        }
        let mut c = Config::from_overrides(&parse(&uncommented.join("\n"))).unwrap();
        assert_eq!(
            c.tokens_file.take(),
            Some(PathBuf::from("/etc/tickcast/tokens"))
        );
        c.shards = Config::default().shards;
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn keys_match_the_struct() {
        // serde lists the fields it expects when it meets an unknown one.
        let err = toml::from_str::<Overrides>("zzz = 1").unwrap_err();
        let expected: Vec<&str> = err
            .message()
            .split_once("expected one of ")
            .unwrap()
            .1
            .split(", ")
            .map(|k| k.trim().trim_matches('`'))
            .collect();
        assert_eq!(expected, KEYS);
    }

    #[test]
    fn replay_settings_have_defaults_and_are_validated() {
        let c = Config::default();
        assert_eq!(c.replay, ReplayLimits::default());
        assert!(c.replay.enabled());
        let o = parse(
            "replay-records = 100\nreplay-bytes = 65536\nreplay-age = 2.5\nreplay-total-bytes = 1048576",
        );
        let c = Config::from_overrides(&o).unwrap();
        assert_eq!(
            c.replay,
            ReplayLimits {
                records: 100,
                bytes: 65536,
                age: Duration::from_millis(2500),
                total_bytes: 1 << 20,
            }
        );
        c.validate().unwrap();
        let off = Config::from_overrides(&parse("replay-records = 0")).unwrap();
        off.validate().unwrap();
        assert!(!off.replay.enabled());
        for (text, key) in [
            ("replay-bytes = 10", "replay-bytes"),
            ("replay-total-bytes = 4096", "replay-total-bytes"),
            ("replay-records = 999999999", "replay-records"),
        ] {
            let c = Config::from_overrides(&parse(text)).unwrap();
            assert_eq!(c.validate().unwrap_err().key, key, "{text}");
        }
        let c = Config::from_overrides(&parse("replay-age = 0"));
        assert!(c.is_err() || c.unwrap().validate().unwrap_err().key == "replay-age");
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
