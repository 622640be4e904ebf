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
//! Every setting is declared once, in `settings`: its key and flag, type, default, rule and
//! help. `config/tickcast.example.toml` lists every key with its default, and
//! `docs/operations.md` carries the table; tests hold both to the declaration.
//!
//! This module depends on no other module of the engine: the others take their settings from
//! it (the feed its [`FeedUrl`], fan-out its [`BatchLimits`]).

mod settings;

pub use settings::{
    KEYS, LogFormat, Overrides, Role, Rule, SETTINGS, Setting, Value, markdown_table,
};

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sha1::{Digest, Sha1};

/// Most client connections the engine may be configured for (`max-conns`).
pub const MAX_CONNS_CAP: usize = 1 << 22;
/// Longest duration any setting accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The `feed` value that selects the embedded simulated exchange.
pub const EMBEDDED_FEED: &str = "embedded";
/// Default of `feed-stall-timeout`.
pub const DEFAULT_FEED_STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Limits on one data message (`batch-max-records`, `batch-max-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Records per message (at most `u16::MAX`, the batch header's count field).
    pub max_records: usize,
    /// Payload bytes per message; a single larger record still goes alone.
    pub max_payload: usize,
}

impl Default for BatchLimits {
    /// The defaults of `batch-max-records` and `batch-max-bytes`.
    fn default() -> Self {
        Config::default().batch
    }
}

/// Default of [`ReplayLimits::records`]: 30 s of the busiest depth-0 stream of the default
/// feed (~450 records/s, see docs/protocol.md) with room to spare.
pub const DEFAULT_REPLAY_RECORDS: usize = 32_768;
/// Default of [`ReplayLimits::bytes`].
pub const DEFAULT_REPLAY_BYTES: usize = 8 << 20;
/// Default of [`ReplayLimits::age`].
pub const DEFAULT_REPLAY_AGE: Duration = Duration::from_secs(30);
/// Default of [`ReplayLimits::total_bytes`].
pub const DEFAULT_REPLAY_TOTAL_BYTES: usize = 256 << 20;

/// Conflation settings: the `max_hz` ceiling and the slow-consumer ladder (docs/protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConflateLimits {
    /// Highest `max_hz` granted.
    pub max_hz_ceiling: u32,
    /// Rate of the conflated snapshots of a connection under pressure.
    pub hz: u32,
    /// Soft mark, percent of the out-buffer bound (100: the ladder is off).
    pub soft_pct: u32,
    /// Low mark, percent of the out-buffer bound.
    pub low_pct: u32,
    /// Least time in the conflating rung.
    pub dwell: Duration,
    /// Longest time a conflating connection may stay past the soft mark before eviction.
    pub grace: Duration,
}

impl ConflateLimits {
    /// The soft mark in bytes for an out-buffer bound of `limit`.
    pub fn soft_bytes(&self, limit: usize) -> usize {
        limit / 100 * self.soft_pct as usize
    }

    /// The low mark in bytes for an out-buffer bound of `limit`.
    pub fn low_bytes(&self, limit: usize) -> usize {
        limit / 100 * self.low_pct as usize
    }

    /// False when the ladder is off (`conflate-soft-pct = 100`).
    pub fn ladder_on(&self) -> bool {
        self.soft_pct < 100
    }
}

/// The bounds of the replay windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Most records one window holds.
    pub records: usize,
    /// Most bytes one window holds (records plus `replay::RECORD_OVERHEAD` each).
    pub bytes: usize,
    /// Records older than this are dropped.
    pub age: Duration,
    /// Most bytes all windows hold together; past it the oldest records of any window go.
    pub total_bytes: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            records: DEFAULT_REPLAY_RECORDS,
            bytes: DEFAULT_REPLAY_BYTES,
            age: DEFAULT_REPLAY_AGE,
            total_bytes: DEFAULT_REPLAY_TOTAL_BYTES,
        }
    }
}

impl ReplayLimits {
    /// No replay at all (every resume misses); windows hold nothing.
    pub const OFF: Self = Self {
        records: 0,
        bytes: 0,
        age: Duration::ZERO,
        total_bytes: 0,
    };

    /// True when windows can hold anything.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.records > 0 && self.bytes > 0 && !self.age.is_zero() && self.total_bytes > 0
    }
}

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
    /// PEM certificate chain: with [`tls_key`](Self::tls_key), the client port speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of [`tls_cert`](Self::tls_cert).
    pub tls_key: Option<PathBuf>,
    /// HS256 secret file: tokens are JWTs.
    pub jwt_secret_file: Option<PathBuf>,
    /// RS256/ES256 public key file: tokens are JWTs.
    pub jwt_public_key: Option<PathBuf>,
    /// The JWT verification key: `Some` when tokens are JWTs. [`Config::load`] reads it from
    /// [`jwt_secret_file`](Self::jwt_secret_file) or [`jwt_public_key`](Self::jwt_public_key).
    pub jwt: Option<JwtKey>,
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
    /// Conflation: the `max_hz` ceiling and the slow-consumer ladder (docs/protocol.md §5).
    pub conflate: ConflateLimits,
    /// How logs are written.
    pub log_format: LogFormat,
    /// What this process does: standalone, ingest node or edge node.
    pub role: Role,
    /// The NATS server(s) of the bus (`nats://HOST:PORT`, comma-separated); needed by the
    /// ingest and edge roles.
    pub nats_url: Option<String>,
    /// First token of every bus subject.
    pub nats_prefix: String,
    /// Ingest node: publish every stream, not only the ones the edges announce.
    pub bus_publish_all: bool,
}

impl Default for Config {
    /// Every setting at the default of its row in [`SETTINGS`].
    fn default() -> Self {
        // The defaults layer sets every setting that has a default, each of the right form
        // (`default_is_valid` tests it), so this cannot fail.
        Self::from_overrides(&Overrides::default()).unwrap_or_else(|e| unreachable!("{e}"))
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
        Self::load_layers(layers)
    }

    /// [`load`](Self::load) of layers already read.
    fn load_layers(layers: Overrides) -> Result<Self, LoadError> {
        let mut config = Self::from_overrides(&layers)?;
        if let Some(path) = &config.tokens_file {
            config.tokens = Some(Tokens::load(path)?);
        }
        if let Some(path) = &config.jwt_secret_file {
            config.jwt = Some(JwtKey::load_secret(path)?);
        } else if let Some(path) = &config.jwt_public_key {
            config.jwt = Some(JwtKey::load_public(path)?);
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
        let o = Overrides::defaults().merge(o.clone());
        let feed = match o.feed.as_deref() {
            None | Some(EMBEDDED_FEED) => FeedSource::Embedded {
                symbols: need(o.sim_symbols, "sim-symbols")?,
                rate: need(o.sim_rate, "sim-rate")?,
                seed: need(o.sim_seed, "sim-seed")?,
            },
            Some(url) => FeedSource::External(FeedUrl::parse(url)?),
        };
        let allowed_origins = need(o.allowed_origins, "allowed-origins")?
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| normalize_origin(s).map_err(|r| ConfigError::new("allowed-origins", r)))
            .collect::<Result<_, _>>()?;
        let secs = |v: Option<Seconds>, key| need(v, key)?.to_duration(key);
        Ok(Self {
            listen: need(o.listen, "listen")?,
            feed,
            shards: need(o.shards, "shards")?,
            pin: need(o.pin, "pin")?,
            ring_capacity: need(o.ring_capacity, "ring-capacity")?,
            max_symbols: need(o.max_symbols, "max-symbols")?,
            max_outbuf_bytes: need(o.max_outbuf_bytes, "max-outbuf-bytes")?,
            send_buffer_bytes: need(o.send_buffer_bytes, "send-buffer-bytes")?,
            max_message_bytes: need(o.max_message_bytes, "max-message-bytes")?,
            max_subscriptions: need(o.max_subscriptions, "max-subscriptions")?,
            handshake_timeout: secs(o.handshake_timeout, "handshake-timeout")?,
            close_timeout: secs(o.close_timeout, "close-timeout")?,
            evict_timeout: secs(o.evict_timeout, "evict-timeout")?,
            control_rate: need(o.control_rate, "control-rate")?,
            control_burst: need(o.control_burst, "control-burst")?,
            control_strikes: need(o.control_strikes, "control-strikes")?,
            batch: BatchLimits {
                max_records: need(o.batch_max_records, "batch-max-records")?,
                max_payload: need(o.batch_max_bytes, "batch-max-bytes")?,
            },
            drain_max: need(o.drain_max, "drain-max")?,
            reconnect_min: secs(o.reconnect_min, "reconnect-min")?,
            reconnect_max: secs(o.reconnect_max, "reconnect-max")?,
            feed_stall_timeout: secs(o.feed_stall_timeout, "feed-stall-timeout")?,
            echo: need(o.echo, "echo")?,
            deflate: need(o.deflate, "deflate")?,
            deflate_threshold: need(o.deflate_threshold, "deflate-threshold")?,
            allowed_origins,
            tokens_file: o.tokens_file,
            tokens: None,
            tls_cert: o.tls_cert,
            tls_key: o.tls_key,
            jwt_secret_file: o.jwt_secret_file,
            jwt_public_key: o.jwt_public_key,
            jwt: None,
            max_conns: need(o.max_conns, "max-conns")?,
            max_conns_per_ip: need(o.max_conns_per_ip, "max-conns-per-ip")?,
            ping_interval: secs(o.ping_interval, "ping-interval")?,
            shutdown_deadline: secs(o.shutdown_deadline, "shutdown-deadline")?,
            replay: ReplayLimits {
                records: need(o.replay_records, "replay-records")?,
                bytes: need(o.replay_bytes, "replay-bytes")?,
                age: secs(o.replay_age, "replay-age")?,
                total_bytes: need(o.replay_total_bytes, "replay-total-bytes")?,
            },
            conflate: ConflateLimits {
                max_hz_ceiling: need(o.max_hz_ceiling, "max-hz-ceiling")?,
                hz: need(o.conflate_hz, "conflate-hz")?,
                soft_pct: need(o.conflate_soft_pct, "conflate-soft-pct")?,
                low_pct: need(o.conflate_low_pct, "conflate-low-pct")?,
                dwell: secs(o.conflate_dwell, "conflate-dwell")?,
                grace: secs(o.conflate_grace, "conflate-grace")?,
            },
            log_format: need(o.log_format, "log-format")?,
            role: need(o.role, "role")?,
            nats_url: o.nats_url,
            nats_prefix: need(o.nats_prefix, "nats-prefix")?,
            bus_publish_all: need(o.bus_publish_all, "bus-publish-all")?,
        })
    }

    /// The configuration as a settings layer (the inverse of
    /// [`from_overrides`](Self::from_overrides)), so that [`validate`](Self::validate) checks
    /// it with the rules of the settings table.
    #[must_use]
    pub fn as_overrides(&self) -> Overrides {
        let (feed, sim_symbols, sim_rate, sim_seed) = match &self.feed {
            FeedSource::External(url) => (url.url.clone(), None, None, None),
            FeedSource::Embedded {
                symbols,
                rate,
                seed,
            } => (
                EMBEDDED_FEED.to_owned(),
                Some(*symbols),
                Some(*rate),
                Some(*seed),
            ),
        };
        let secs = |d: Duration| Some(Seconds(d.as_secs_f64()));
        Overrides {
            listen: Some(self.listen),
            shards: Some(self.shards),
            pin: Some(self.pin),
            feed: Some(feed),
            sim_symbols,
            sim_rate,
            sim_seed,
            reconnect_min: secs(self.reconnect_min),
            reconnect_max: secs(self.reconnect_max),
            feed_stall_timeout: secs(self.feed_stall_timeout),
            max_symbols: Some(self.max_symbols),
            max_conns: Some(self.max_conns),
            max_conns_per_ip: Some(self.max_conns_per_ip),
            allowed_origins: Some(self.allowed_origins.clone()),
            tokens_file: self.tokens_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            jwt_secret_file: self.jwt_secret_file.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            echo: Some(self.echo),
            max_outbuf_bytes: Some(self.max_outbuf_bytes),
            send_buffer_bytes: Some(self.send_buffer_bytes),
            max_message_bytes: Some(self.max_message_bytes),
            max_subscriptions: Some(self.max_subscriptions),
            control_rate: Some(self.control_rate),
            control_burst: Some(self.control_burst),
            control_strikes: Some(self.control_strikes),
            handshake_timeout: secs(self.handshake_timeout),
            close_timeout: secs(self.close_timeout),
            evict_timeout: secs(self.evict_timeout),
            ping_interval: secs(self.ping_interval),
            shutdown_deadline: secs(self.shutdown_deadline),
            deflate: Some(self.deflate),
            deflate_threshold: Some(self.deflate_threshold),
            ring_capacity: Some(self.ring_capacity),
            drain_max: Some(self.drain_max),
            batch_max_records: Some(self.batch.max_records),
            batch_max_bytes: Some(self.batch.max_payload),
            replay_records: Some(self.replay.records),
            replay_bytes: Some(self.replay.bytes),
            replay_age: secs(self.replay.age),
            replay_total_bytes: Some(self.replay.total_bytes),
            max_hz_ceiling: Some(self.conflate.max_hz_ceiling),
            conflate_hz: Some(self.conflate.hz),
            conflate_soft_pct: Some(self.conflate.soft_pct),
            conflate_low_pct: Some(self.conflate.low_pct),
            conflate_dwell: secs(self.conflate.dwell),
            conflate_grace: secs(self.conflate.grace),
            log_format: Some(self.log_format),
            role: Some(self.role),
            nats_url: self.nats_url.clone(),
            nats_prefix: Some(self.nats_prefix.clone()),
            bus_publish_all: Some(self.bus_publish_all),
        }
    }

    /// Checks every value; the error names the offending key.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Each value against its row of the settings table, and what relates two settings
        // (bounded by another setting, when that one is valid itself).
        let within = |key, v: usize, bound_ok: bool, hi: usize| {
            if bound_ok && !(1..=hi).contains(&v) {
                return Err(ConfigError::new(key, format!("{v} is outside 1..={hi}")));
            }
            Ok(())
        };
        let max_conns_ok = (1..=MAX_CONNS_CAP).contains(&self.max_conns);
        within(
            "max-conns-per-ip",
            self.max_conns_per_ip,
            max_conns_ok,
            self.max_conns,
        )?;
        if let FeedSource::Embedded { symbols, .. } = &self.feed {
            let max_symbols_ok = (1..=1 << 20).contains(&self.max_symbols);
            within("sim-symbols", *symbols, max_symbols_ok, self.max_symbols)?;
        }
        self.as_overrides().check()?;
        if self.replay.enabled() && self.replay.total_bytes < self.replay.bytes {
            return Err(ConfigError::new(
                "replay-total-bytes",
                format!(
                    "{} is below replay-bytes ({})",
                    self.replay.total_bytes, self.replay.bytes
                ),
            ));
        }
        if self.conflate.low_pct >= self.conflate.soft_pct {
            return Err(ConfigError::new(
                "conflate-low-pct",
                format!(
                    "{} is not below conflate-soft-pct ({})",
                    self.conflate.low_pct, self.conflate.soft_pct
                ),
            ));
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

        if self.role != Role::Standalone {
            match self.nats_url.as_deref() {
                None | Some("") => {
                    return Err(ConfigError::new(
                        "nats-url",
                        format!(
                            "--role {} needs the NATS server (nats://HOST:PORT)",
                            self.role
                        ),
                    ));
                }
                Some(urls) => {
                    for u in urls.split(',') {
                        let rest = u.trim().strip_prefix("nats://").unwrap_or_default();
                        if rest.is_empty() || rest.contains('/') {
                            return Err(ConfigError::new(
                                "nats-url",
                                format!("{u:?} is not nats://HOST:PORT"),
                            ));
                        }
                    }
                }
            }
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token_ok(&self.nats_prefix) {
            return Err(ConfigError::new(
                "nats-prefix",
                format!(
                    "{:?} is not one subject token (letters, digits, - and _)",
                    self.nats_prefix
                ),
            ));
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
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(ConfigError::new("tls-key", "tls-cert needs tls-key")),
            (None, Some(_)) => return Err(ConfigError::new("tls-cert", "tls-key needs tls-cert")),
            _ => {}
        }
        let jwt_file = self
            .jwt_secret_file
            .as_ref()
            .or(self.jwt_public_key.as_ref());
        if self.jwt_secret_file.is_some() && self.jwt_public_key.is_some() {
            return Err(ConfigError::new(
                "jwt-public-key",
                "give jwt-secret-file or jwt-public-key, not both",
            ));
        }
        if self.tokens_file.is_some() && jwt_file.is_some() {
            return Err(ConfigError::new(
                "tokens-file",
                "tokens are either a tokens file or JWTs (jwt-secret-file, jwt-public-key), not both",
            ));
        }
        if let (Some(path), None) = (jwt_file, &self.jwt) {
            return Err(ConfigError::new(
                "jwt-secret-file",
                format!("{}: the key was not loaded", path.display()),
            ));
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

/// The value of a setting that has a default (the defaults layer sets it).
fn need<T>(value: Option<T>, key: &'static str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::new(key, "has no value"))
}

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

/// The key that verifies JWTs (protocol §3.5): an HS256 secret, or an RS256 or ES256 public
/// key. `Debug` shows the algorithm only.
///
/// A key loaded from a file ([`JwtKey::load_secret`], [`JwtKey::load_public`]) can be read
/// again with [`JwtKey::reload`] (SIGHUP): clones share the key, so every shard verifies new
/// tokens with the new one at once; connections already admitted keep their grant.
#[derive(Clone)]
pub struct JwtKey {
    current: std::sync::Arc<parking_lot::RwLock<std::sync::Arc<KeyMaterial>>>,
    source: Option<KeySource>,
}

/// One algorithm and its verification key.
struct KeyMaterial {
    alg: jsonwebtoken::Algorithm,
    key: jsonwebtoken::DecodingKey,
}

/// Where a key was read from.
#[derive(Clone, Debug)]
enum KeySource {
    Secret(PathBuf),
    Public(PathBuf),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtKey({:?})", self.algorithm())
    }
}

impl JwtKey {
    fn new(alg: jsonwebtoken::Algorithm, key: jsonwebtoken::DecodingKey) -> Self {
        Self {
            current: std::sync::Arc::new(parking_lot::RwLock::new(std::sync::Arc::new(
                KeyMaterial { alg, key },
            ))),
            source: None,
        }
    }

    /// An HS256 key from its secret.
    #[must_use]
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(
            jsonwebtoken::Algorithm::HS256,
            jsonwebtoken::DecodingKey::from_secret(secret),
        )
    }

    /// An RS256 (RSA) or ES256 (P-256) key from a PEM public key.
    ///
    /// # Errors
    /// Why the PEM is not such a key.
    pub fn from_public_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(jsonwebtoken::Algorithm::RS256, key));
        }
        jsonwebtoken::DecodingKey::from_ec_pem(pem)
            .map(|key| Self::new(jsonwebtoken::Algorithm::ES256, key))
            .map_err(|e| format!("not an RSA or EC public key in PEM: {e}"))
    }

    /// Reads an HS256 secret file (its bytes, surrounding whitespace trimmed).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `jwt-secret-file` (never the secret).
    pub fn load_secret(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new("jwt-secret-file", format!("cannot read {shown}: {e}"))
        })?;
        let secret = bytes.trim_ascii();
        if secret.len() < 16 {
            return Err(ConfigError::new(
                "jwt-secret-file",
                format!("{shown}: the secret is shorter than 16 bytes"),
            ));
        }
        let mut key = Self::hs256(secret);
        key.source = Some(KeySource::Secret(path.to_owned()));
        Ok(key)
    }

    /// Reads a PEM public key file (RS256 or ES256).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `jwt-public-key`.
    pub fn load_public(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError::new("jwt-public-key", format!("cannot read {shown}: {e}")))?;
        let mut key = Self::from_public_pem(&bytes)
            .map_err(|e| ConfigError::new("jwt-public-key", format!("{shown}: {e}")))?;
        key.source = Some(KeySource::Public(path.to_owned()));
        Ok(key)
    }

    /// Reads the key's file again and verifies new tokens with it (this key and its clones).
    /// A key not read from a file is left as it is. On error the current key stays.
    ///
    /// # Errors
    /// As [`JwtKey::load_secret`] / [`JwtKey::load_public`].
    pub fn reload(&self) -> Result<(), ConfigError> {
        let fresh = match &self.source {
            None => return Ok(()),
            Some(KeySource::Secret(p)) => Self::load_secret(p)?,
            Some(KeySource::Public(p)) => Self::load_public(p)?,
        };
        let material = fresh.current.read().clone();
        *self.current.write() = material;
        Ok(())
    }

    /// The algorithm tokens must be signed with.
    #[must_use]
    pub fn algorithm(&self) -> jsonwebtoken::Algorithm {
        self.current.read().alg
    }

    /// Verifies with the current key: `f(algorithm, key)`.
    pub fn with_key<R>(
        &self,
        f: impl FnOnce(jsonwebtoken::Algorithm, &jsonwebtoken::DecodingKey) -> R,
    ) -> R {
        let material = self.current.read().clone();
        f(material.alg, &material.key)
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
    fn tls_and_jwt_settings_go_together() {
        let key_of = |c: Config| c.validate().unwrap_err().key;
        let cert_only = Config {
            tls_cert: Some("c.pem".into()),
            ..Config::default()
        };
        assert_eq!(key_of(cert_only), "tls-key");
        let key_only = Config {
            tls_key: Some("k.pem".into()),
            ..Config::default()
        };
        assert_eq!(key_of(key_only), "tls-cert");
        let both_jwt = Config {
            jwt_secret_file: Some("s".into()),
            jwt_public_key: Some("p".into()),
            jwt: Some(JwtKey::hs256(b"0123456789abcdef")),
            ..Config::default()
        };
        assert_eq!(key_of(both_jwt), "jwt-public-key");
        let jwt_and_tokens = Config {
            jwt_secret_file: Some("s".into()),
            jwt: Some(JwtKey::hs256(b"0123456789abcdef")),
            tokens_file: Some("t".into()),
            tokens: Some(Tokens::from_iter(["a"])),
            ..Config::default()
        };
        assert_eq!(key_of(jwt_and_tokens), "tokens-file");
        let not_loaded = Config {
            jwt_secret_file: Some("s".into()),
            ..Config::default()
        };
        assert_eq!(key_of(not_loaded), "jwt-secret-file");
        // The secret file: trimmed, at least 16 bytes.
        let dir = std::env::temp_dir().join(format!("tickcast-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "  tooshort \n").unwrap();
        assert_eq!(
            JwtKey::load_secret(&short).unwrap_err().key,
            "jwt-secret-file"
        );
        let good = dir.join("good");
        std::fs::write(&good, "  0123456789abcdef0123\n").unwrap();
        assert_eq!(
            JwtKey::load_secret(&good).unwrap().algorithm(),
            jsonwebtoken::Algorithm::HS256
        );
        assert_eq!(
            JwtKey::load_public(&good).unwrap_err().key,
            "jwt-public-key"
        );
        let _ = std::fs::remove_dir_all(&dir);
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
        let text = include_str!("../../../config/tickcast.example.toml");
        let as_is = Config::from_overrides(&parse(text)).unwrap();
        assert_eq!(format!("{as_is:?}"), format!("{:?}", Config::default()));
        // Uncommented, every `# key = value` line is the default (but for the keys whose default
        // cannot be written: shards, one per core, and tokens-file and nats-url, none).
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
        assert!(c.tls_cert.take().is_some() && c.tls_key.take().is_some());
        assert!(c.jwt_secret_file.take().is_some() && c.jwt_public_key.take().is_some());
        assert_eq!(c.nats_url.take().as_deref(), Some("nats://127.0.0.1:4222"));
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
    fn every_rule_of_the_table_is_applied_under_its_key() {
        // For each setting with a numeric rule, a value just outside it is refused under the
        // setting's own key, by the file and by validate alike.
        for s in SETTINGS {
            let bad = match s.rule {
                Rule::Range(lo, _) if lo > 0 => format!("{}", lo - 1),
                Rule::Range(_, hi) | Rule::ZeroOr(_, hi) => format!("{}", hi + 1),
                Rule::Positive => "0".to_owned(),
                Rule::PositiveNumber | Rule::Duration => "0.0".to_owned(),
                _ => continue,
            };
            let bad = if s.rule == Rule::Duration || s.rule == Rule::PositiveNumber {
                bad
            } else {
                bad.trim_end_matches(".0").to_owned()
            };
            let o = match Overrides::parse(&format!("{} = {bad}", s.key)) {
                Ok(o) => o,
                // Out of the type's range (e.g. a u32 above u32::MAX): refused by the parser.
                Err((_, message)) => {
                    assert!(message.starts_with(s.key), "{message}");
                    continue;
                }
            };
            let err = Config::load_layers(o).unwrap_err();
            assert!(
                err.to_string().contains(&format!(": {}: ", s.key)),
                "{}: {err}",
                s.key
            );
        }
    }

    #[test]
    fn docs_carry_the_settings_table() {
        const BEGIN: &str = "<!-- settings-table:begin (generated from engine/src/config/settings.rs by `BLESS=1 cargo test -p tickcast --lib config`) -->\n";
        const END: &str = "<!-- settings-table:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/operations.md has no settings-table markers");
        };
        let table = markdown_table();
        if doc[b + BEGIN.len()..e] != table {
            if std::env::var_os("BLESS").is_some() {
                let fixed = format!("{}{table}{}", &doc[..b + BEGIN.len()], &doc[e..]);
                std::fs::write(path, fixed).unwrap();
            } else {
                panic!(
                    "docs/operations.md's settings table is stale; rerun with BLESS=1:\n{table}"
                );
            }
        }
        for s in SETTINGS {
            assert!(!s.help.is_empty() && !s.default.is_empty(), "{}", s.key);
        }
    }

    #[test]
    fn config_depends_on_no_other_module() {
        // The others take their settings from here; an import back would make a circle again.
        for (file, text) in [
            ("mod.rs", include_str!("mod.rs")),
            ("settings.rs", include_str!("settings.rs")),
        ] {
            let production = text.split("#[cfg(test)]").next().unwrap_or(text);
            for line in production
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
            {
                assert!(
                    !line.contains(concat!("crate", "::")),
                    "config/{file}: {line}"
                );
            }
        }
    }

    #[test]
    fn log_formats() {
        assert_eq!(
            parse(r#"log-format = "json""#).log_format,
            Some(LogFormat::Json)
        );
        assert_eq!(Config::default().log_format, LogFormat::Text);
        let e = Overrides::parse(r#"log-format = "xml""#).unwrap_err();
        assert!(e.1.starts_with("log-format: "), "{e:?}");
        assert!("xml".parse::<LogFormat>().is_err());
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
