//! Every setting, declared once.
//!
//! One row of the [`settings!`] table below gives a setting's file key (which is also its flag,
//! `--KEY`), its type, its default, how the default is shown, the value name and group of its
//! `--help` line, the rule its value must follow and its one-line help. From the table come:
//! - [`Overrides`], one layer of settings: the TOML file deserializes into it (serde), and the
//!   command line parses into it (clap, flattened into `main.rs`'s `Cli`);
//! - [`Overrides::defaults`], [`Overrides::merge`] and [`Overrides::check`] (the rules, whose
//!   messages name the key);
//! - [`KEYS`] and [`SETTINGS`], from which [`markdown_table`] renders the settings table of
//!   `docs/operations.md` (a test holds the document, and `config/tickcast.example.toml`, to it).
//!
//! A new setting is one row here, one field of [`Config`](super::Config) and its two mapping
//! lines (`Config::from_overrides`, `Config::as_overrides`); anything that checks more than one
//! setting at a time lives in `Config::validate`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use super::{
    ConfigError, DEFAULT_FEED_STALL_TIMEOUT, DEFAULT_REPLAY_AGE, DEFAULT_REPLAY_BYTES,
    DEFAULT_REPLAY_RECORDS, DEFAULT_REPLAY_TOTAL_BYTES, EMBEDDED_FEED, MAX_CONNS_CAP, MAX_DURATION,
    Seconds,
};

/// How the daemon writes its logs (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object a line (timestamp, level, target, fields), for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{s:?} is not a log format (text or json)")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// What this process does (`--role`, docs/architecture.md "Roles").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingest and fan-out in one process; no NATS (the default).
    #[default]
    Standalone,
    /// Reads the feed, keeps the books, numbers every stream and publishes it to NATS; answers
    /// the edges' snapshot requests. Still serves clients of its own.
    Ingest,
    /// Serves clients from the streams of an ingest node, received over NATS.
    Edge,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standalone" => Ok(Self::Standalone),
            "ingest" => Ok(Self::Ingest),
            "edge" => Ok(Self::Edge),
            _ => Err(format!("{s:?} is not a role (standalone, ingest or edge)")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Standalone => "standalone",
            Self::Ingest => "ingest",
            Self::Edge => "edge",
        })
    }
}

/// What a setting's value must be; [`Rule::check`] refuses anything else with a message that
/// names the key.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// Any value of the type (its form is checked when it is parsed).
    Any,
    /// An integer in `lo..=hi`.
    Range(u64, u64),
    /// 0, or an integer in `lo..=hi`.
    ZeroOr(u64, u64),
    /// An integer above 0.
    Positive,
    /// A finite number above 0.
    PositiveNumber,
    /// A duration in seconds, above 0 and at most [`MAX_DURATION`].
    Duration,
}

impl Rule {
    /// The rule as the settings table shows it.
    pub fn describe(&self) -> String {
        match *self {
            Self::Any => String::new(),
            Self::Range(lo, hi) => format!("{lo}..={hi}"),
            Self::ZeroOr(lo, hi) => format!("0 or {lo}..={hi}"),
            Self::Positive | Self::PositiveNumber => "> 0".to_owned(),
            Self::Duration => format!("(0, {}] s", MAX_DURATION.as_secs()),
        }
    }

    /// Checks `value` of setting `key`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `key` and saying what is wrong.
    pub fn check<T: Value + ?Sized>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ConfigError> {
        let Some(v) = value.number() else {
            return Ok(());
        };
        let in_range = |lo: u64, hi: u64| v >= lo as f64 && v <= hi as f64;
        let problem = match *self {
            Self::Any => None,
            Self::Range(lo, hi) => {
                (!in_range(lo, hi)).then(|| format!("{v} is outside {lo}..={hi}"))
            }
            Self::ZeroOr(lo, hi) => (v != 0.0 && !in_range(lo, hi))
                .then(|| format!("{v} is outside {lo}..={hi} (or 0)")),
            Self::Positive => (v <= 0.0).then(|| "must be positive".to_owned()),
            Self::PositiveNumber => {
                (!(v.is_finite() && v > 0.0)).then(|| format!("{v} must be a positive number"))
            }
            Self::Duration => (!(v > 0.0 && v <= MAX_DURATION.as_secs_f64()))
                .then(|| format!("{v} s is outside (0, {}] seconds", MAX_DURATION.as_secs())),
        };
        match problem {
            Some(reason) => Err(ConfigError::new(key, reason)),
            None => Ok(()),
        }
    }
}

/// A setting's value as a [`Rule`] sees it: a number, or nothing to check.
pub trait Value {
    /// The value as a number, when it is one.
    fn number(&self) -> Option<f64>;
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            #[allow(clippy::cast_precision_loss)]
            fn number(&self) -> Option<f64> {
                Some(*self as f64)
            }
        }
    )*};
}
numbers!(usize, u32, u64, f64);

impl Value for Seconds {
    fn number(&self) -> Option<f64> {
        Some(self.0)
    }
}

macro_rules! not_numbers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn number(&self) -> Option<f64> {
                None
            }
        }
    )*};
}
not_numbers!(
    bool,
    String,
    SocketAddr,
    PathBuf,
    Vec<String>,
    LogFormat,
    Role
);

/// One row of the settings table, for documentation.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The file key, also the flag name without its dashes.
    pub key: &'static str,
    /// The group it is listed under (`--help` and the docs).
    pub heading: &'static str,
    /// The value's name in `--help`.
    pub value_name: &'static str,
    /// The default, as shown to people.
    pub default: &'static str,
    /// What the value must be.
    pub rule: Rule,
    /// One line saying what it does.
    pub help: &'static str,
}

/// Declares every setting once; see the module docs.
macro_rules! settings {
    ($(
        [$heading:literal] $key:literal $field:ident: $ty:ty = $default:expr,
        shown $shown:literal, value $vn:literal, rule $rule:expr,
        help $help:literal $(, arg($($arg:tt)*))?;
    )*) => {
        /// One layer of settings, every key optional: the TOML file deserializes into it (unknown
        /// keys refused), and so do the command-line flags (`#[command(flatten)]`);
        /// [`Overrides::merge`] stacks layers and [`Config::from_overrides`](super::Config::from_overrides)
        /// applies them to the defaults. Each field is documented by its row in [`SETTINGS`].
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct Overrides {
            $(
                #[doc = $help]
                #[serde(rename = $key)]
                #[arg(long = $key, value_name = $vn, help_heading = $heading,
                      help = concat!($help, " [default: ", $shown, "]") $(, $($arg)*)?)]
                pub $field: Option<$ty>,
            )*
        }

        /// Every key of the configuration file (and flag name), in table order.
        pub const KEYS: &[&str] = &[$($key),*];

        /// The settings table, in order.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            key: $key,
            heading: $heading,
            value_name: $vn,
            default: $shown,
            rule: $rule,
            help: $help,
        }),*];

        impl Overrides {
            /// The defaults, as a layer (a setting without a default is `None`).
            pub fn defaults() -> Self {
                Self { $($field: $default),* }
            }

            /// `self` with every value that `over` sets replaced by `over`'s.
            #[must_use]
            pub fn merge(self, over: Self) -> Self {
                Self { $($field: over.$field.or(self.$field)),* }
            }

            /// Checks every value this layer sets against its row's [`Rule`].
            ///
            /// # Errors
            /// The first [`ConfigError`], naming its key.
            pub fn check(&self) -> Result<(), ConfigError> {
                $(
                    if let Some(v) = &self.$field {
                        $rule.check($key, v)?;
                    }
                )*
                Ok(())
            }
        }
    };
}

/// Shard threads by default: one per core.
fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

const BOOL_FLAG: &str = "true";

settings! {
    ["Serving"] "listen" listen: SocketAddr = Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        shown "127.0.0.1:8080", value "ADDR", rule Rule::Any,
        help "Address of the client port: WebSocket upgrades on /ws, plain HTTP /healthz and /metrics.";
    ["Serving"] "shards" shards: usize = Some(default_shards()),
        shown "one per core", value "N", rule Rule::Range(1, 256),
        help "Shard threads, each with its own epoll loop, listener (SO_REUSEPORT) and connections.";
    ["Serving"] "pin" pin: bool = Some(false),
        shown "false", value "BOOL", rule Rule::Any,
        help "Pin shard i to core i (modulo the number of cores).",
        arg(num_args = 0..=1, require_equals = true, default_missing_value = BOOL_FLAG);

    ["Cluster"] "role" role: Role = Some(Role::Standalone),
        shown "standalone", value "ROLE", rule Rule::Any,
        help "standalone (feed and clients in one process), ingest (feed to NATS) or edge (NATS to clients); see docs/operations.md \"Running a cluster\".";
    ["Cluster"] "nats-url" nats_url: String = None,
        shown "none", value "URL", rule Rule::Any,
        help "NATS server(s) of the bus, nats://HOST:PORT (comma-separated for several); needed by --role ingest and edge.";
    ["Cluster"] "nats-prefix" nats_prefix: String = Some("tickcast".to_owned()),
        shown "tickcast", value "TOKEN", rule Rule::Any,
        help "First token of every bus subject, so that several clusters can share one NATS.";
    ["Cluster"] "bus-publish-all" bus_publish_all: bool = Some(false),
        shown "false", value "BOOL", rule Rule::Any,
        help "Ingest node: publish every stream of every symbol in both formats, not only the streams edges announce (for measurement; NATS drops what no edge subscribes to).",
        arg(num_args = 0..=1, require_equals = true, default_missing_value = BOOL_FLAG);

    ["Feed"] "feed" feed: String = Some(EMBEDDED_FEED.to_owned()),
        shown "embedded", value "URL", rule Rule::Any,
        help "Exchange feed: ws://HOST:PORT/PATH, or \"embedded\" for the built-in simulated exchange.";
    ["Feed"] "sim-symbols" sim_symbols: usize = Some(50),
        shown "50", value "N", rule Rule::Range(1, 1 << 20),
        help "Embedded simulator: number of symbols (at most max-symbols).";
    ["Feed"] "sim-rate" sim_rate: f64 = Some(2_000.0),
        shown "2000.0", value "RATE", rule Rule::PositiveNumber,
        help "Embedded simulator: book updates per second, all symbols together.";
    ["Feed"] "sim-seed" sim_seed: u64 = Some(1),
        shown "1", value "SEED", rule Rule::Any,
        help "Embedded simulator: seed of the order flow.";
    ["Feed"] "reconnect-min" reconnect_min: Seconds = Some(Seconds(0.1)),
        shown "0.1", value "SECS", rule Rule::Duration,
        help "Feed reconnect back-off: the first delay, doubling up to reconnect-max (with jitter).",
        arg(allow_negative_numbers = true);
    ["Feed"] "reconnect-max" reconnect_max: Seconds = Some(Seconds(5.0)),
        shown "5", value "SECS", rule Rule::Duration,
        help "Feed reconnect back-off: the longest delay (at least reconnect-min).",
        arg(allow_negative_numbers = true);
    ["Feed"] "feed-stall-timeout" feed_stall_timeout: Seconds =
        Some(Seconds(DEFAULT_FEED_STALL_TIMEOUT.as_secs_f64())),
        shown "2", value "SECS", rule Rule::Duration,
        help "A feed silent this long (pinged at half of it) is stalled: every symbol goes stale, reconnect.",
        arg(allow_negative_numbers = true);
    ["Feed"] "max-symbols" max_symbols: usize = Some(4096),
        shown "4096", value "N", rule Rule::Range(1, 1 << 20),
        help "Most symbols the engine tracks; the feed's symbols beyond this are ignored and logged.";

    ["Admission and security"] "max-conns" max_conns: usize = Some(19_900),
        shown "19900", value "N", rule Rule::Range(1, MAX_CONNS_CAP as u64),
        help "Most client connections in total (each is a file descriptor: see ulimit -n).";
    ["Admission and security"] "max-conns-per-ip" max_conns_per_ip: usize = Some(19_900),
        shown "19900", value "N", rule Rule::Range(1, MAX_CONNS_CAP as u64),
        help "Most client connections from one IP address (at most max-conns).";
    ["Admission and security"] "allowed-origins" allowed_origins: Vec<String> = Some(Vec::new()),
        shown "[] (any origin)", value "LIST", rule Rule::Any,
        help "Origins allowed to upgrade, each scheme://host or scheme://host:port; a comma-separated list on the command line.",
        arg(value_delimiter = ',');
    ["Admission and security"] "tokens-file" tokens_file: PathBuf = None,
        shown "none", value "FILE", rule Rule::Any,
        help "File of access tokens, one a line; upgrades then need a valid token (the token query parameter or a token.TOKEN subprotocol).";
    ["Admission and security"] "tls-cert" tls_cert: PathBuf = None,
        shown "none (plain ws://)", value "FILE", rule Rule::Any,
        help "PEM certificate chain (leaf first): the client port then speaks TLS 1.2/1.3 only (wss://, https://); reloaded on SIGHUP. Needs tls-key.";
    ["Admission and security"] "tls-key" tls_key: PathBuf = None,
        shown "none", value "FILE", rule Rule::Any,
        help "PEM private key (PKCS#8, PKCS#1 or SEC1) of tls-cert; reloaded with it on SIGHUP.";
    ["Admission and security"] "jwt-secret-file" jwt_secret_file: PathBuf = None,
        shown "none", value "FILE", rule Rule::Any,
        help "HS256 secret (the file's bytes, surrounding whitespace trimmed): tokens are then JWTs with exp and an optional symbols claim.";
    ["Admission and security"] "jwt-public-key" jwt_public_key: PathBuf = None,
        shown "none", value "FILE", rule Rule::Any,
        help "PEM public key (RSA for RS256, P-256 for ES256): tokens are then JWTs signed with its private key.";
    ["Admission and security"] "echo" echo: bool = Some(false),
        shown "false", value "BOOL", rule Rule::Any,
        help "Serve /echo, a WebSocket echo endpoint for conformance testing.",
        arg(num_args = 0..=1, require_equals = true, default_missing_value = BOOL_FLAG);

    ["Per-connection limits"] "max-outbuf-bytes" max_outbuf_bytes: usize = Some(4 << 20),
        shown "4194304", value "BYTES", rule Rule::Range(4096, 1 << 32),
        help "Out-buffer bound per connection; a client owing more is evicted (close 1013).";
    ["Per-connection limits"] "send-buffer-bytes" send_buffer_bytes: usize = Some(256 * 1024),
        shown "262144", value "BYTES", rule Rule::ZeroOr(4096, 1 << 30),
        help "SO_SNDBUF of accepted sockets (the kernel doubles it); 0 leaves the kernel's autotuning.";
    ["Per-connection limits"] "max-message-bytes" max_message_bytes: usize = Some(64 << 10),
        shown "65536", value "BYTES", rule Rule::Range(125, 1 << 30),
        help "Largest client message (larger: close 1009).";
    ["Per-connection limits"] "max-subscriptions" max_subscriptions: usize = Some(4096),
        shown "4096", value "N", rule Rule::Range(1, 1 << 20),
        help "Most symbols one connection may subscribe to.";
    ["Per-connection limits"] "control-rate" control_rate: u32 = Some(50),
        shown "50", value "N", rule Rule::Positive,
        help "Control messages per second per connection, sustained.";
    ["Per-connection limits"] "control-burst" control_burst: u32 = Some(100),
        shown "100", value "N", rule Rule::Positive,
        help "Control messages per connection at once.";
    ["Per-connection limits"] "control-strikes" control_strikes: u32 = Some(20),
        shown "20", value "N", rule Rule::Positive,
        help "Refused control messages in a row before the connection is closed with 1008.";

    ["Timing"] "handshake-timeout" handshake_timeout: Seconds = Some(Seconds(10.0)),
        shown "10", value "SECS", rule Rule::Duration,
        help "Time a client has to send its upgrade request.",
        arg(allow_negative_numbers = true);
    ["Timing"] "close-timeout" close_timeout: Seconds = Some(Seconds(5.0)),
        shown "5", value "SECS", rule Rule::Duration,
        help "Time a closing connection has to answer the close frame.",
        arg(allow_negative_numbers = true);
    ["Timing"] "evict-timeout" evict_timeout: Seconds = Some(Seconds(60.0)),
        shown "60", value "SECS", rule Rule::Duration,
        help "Time an evicted slow consumer is kept so that it can read its 1013 close frame.",
        arg(allow_negative_numbers = true);
    ["Timing"] "ping-interval" ping_interval: Seconds = Some(Seconds(30.0)),
        shown "30", value "SECS", rule Rule::Duration,
        help "Interval of server pings; a client answering none of two is closed.",
        arg(allow_negative_numbers = true);
    ["Timing"] "shutdown-deadline" shutdown_deadline: Seconds = Some(Seconds(5.0)),
        shown "5", value "SECS", rule Rule::Duration,
        help "Time allowed for a graceful shutdown (close 1001 to every client, flush) before exit.",
        arg(allow_negative_numbers = true);

    ["Compression"] "deflate" deflate: bool = Some(true),
        shown "true", value "BOOL", rule Rule::Any,
        help "Accept permessage-deflate when clients offer it (--no-deflate: refuse it).",
        arg(num_args = 0..=1, require_equals = true, default_missing_value = BOOL_FLAG);
    ["Compression"] "deflate-threshold" deflate_threshold: usize = Some(256),
        shown "256", value "BYTES", rule Rule::Range(0, 1 << 30),
        help "Data messages below this size are not compressed.";

    ["Tuning"] "ring-capacity" ring_capacity: usize = Some(1 << 16),
        shown "65536", value "N", rule Rule::Range(16, 1 << 24),
        help "Messages per shard ring.";
    ["Tuning"] "drain-max" drain_max: usize = Some(16_384),
        shown "16384", value "N", rule Rule::Range(1, 1 << 24),
        help "Ring messages a shard handles per wake before writing.";
    ["Tuning"] "batch-max-records" batch_max_records: usize = Some(usize::from(u16::MAX)),
        shown "65535", value "N", rule Rule::Range(1, u16::MAX as u64),
        help "Most records per data message.";
    ["Tuning"] "batch-max-bytes" batch_max_bytes: usize = Some(256 * 1024),
        shown "262144", value "BYTES", rule Rule::Range(1024, 1 << 30),
        help "Most payload bytes per data message (a single larger record still goes alone).";

    ["Replay"] "replay-records" replay_records: usize = Some(DEFAULT_REPLAY_RECORDS),
        shown "32768", value "N", rule Rule::ZeroOr(1, 1 << 24),
        help "Replay window per stream (symbol, book at one depth or trades, format) for resume: most records; 0 turns resume off.";
    ["Replay"] "replay-bytes" replay_bytes: usize = Some(DEFAULT_REPLAY_BYTES),
        shown "8388608", value "BYTES", rule Rule::Range(4096, 1 << 32),
        help "Replay window per stream: most bytes (records plus 64 bytes of bookkeeping each).";
    ["Replay"] "replay-age" replay_age: Seconds = Some(Seconds(DEFAULT_REPLAY_AGE.as_secs_f64())),
        shown "30", value "SECS", rule Rule::Duration,
        help "Replay window per stream: records older than this are dropped (and a stream stays windowed this long after its last watcher leaves).",
        arg(allow_negative_numbers = true);
    ["Replay"] "replay-total-bytes" replay_total_bytes: usize = Some(DEFAULT_REPLAY_TOTAL_BYTES),
        shown "268435456", value "BYTES", rule Rule::Range(4096, 1 << 40),
        help "Replay windows of every stream together: most bytes; past it the oldest records of any stream go first (at least replay-bytes).";

    ["Conflation"] "max-hz-ceiling" max_hz_ceiling: u32 = Some(1000),
        shown "1000", value "HZ", rule Rule::Range(1, 1000),
        help "Highest max_hz a subscription is granted (book snapshots per second per stream); a request is granted the highest tier (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000) at or below both.";
    ["Conflation"] "conflate-hz" conflate_hz: u32 = Some(5),
        shown "5", value "HZ", rule Rule::Range(1, 1000),
        help "Rate of the conflated book snapshots a connection gets while its out-buffer is past the soft mark (rounded down to a tier).";
    ["Conflation"] "conflate-soft-pct" conflate_soft_pct: u32 = Some(25),
        shown "25", value "PCT", rule Rule::Range(1, 100),
        help "Soft mark, in percent of max-outbuf-bytes: a connection owing more moves its book streams to conflated snapshots (100 turns the ladder off).";
    ["Conflation"] "conflate-low-pct" conflate_low_pct: u32 = Some(5),
        shown "5", value "PCT", rule Rule::Range(0, 99),
        help "Low mark, in percent of max-outbuf-bytes (below conflate-soft-pct): a conflating connection owing less, for conflate-dwell, goes back to live deltas.";
    ["Conflation"] "conflate-dwell" conflate_dwell: Seconds = Some(Seconds(1.0)),
        shown "1", value "SECS", rule Rule::Duration,
        help "Least time a connection stays conflating before it may go live again (hysteresis).",
        arg(allow_negative_numbers = true);
    ["Conflation"] "conflate-grace" conflate_grace: Seconds = Some(Seconds(10.0)),
        shown "10", value "SECS", rule Rule::Duration,
        help "A conflating connection whose out-buffer stays past the soft mark this long cannot keep up even conflated: evicted (1013).",
        arg(allow_negative_numbers = true);

    ["Logging"] "log-format" log_format: LogFormat = Some(LogFormat::Text),
        shown "text", value "FORMAT", rule Rule::Any,
        help "Log lines on stderr: text (coloured only on a terminal) or json (one object a line, for log shippers); filter with RUST_LOG.";
}

/// The settings table of `docs/operations.md`, in Markdown: one row per setting, grouped.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| Setting (file key, `--flag`) | Default | Allowed | What it does |\n");
    out.push_str("|---|---|---|---|\n");
    let mut heading = "";
    for s in SETTINGS {
        if s.heading != heading {
            heading = s.heading;
            out.push_str(&format!("| **{heading}** | | | |\n"));
        }
        out.push_str(&format!(
            "| `{}` {} | {} | {} | {} |\n",
            s.key,
            s.value_name,
            s.default,
            s.rule.describe(),
            s.help.replace('|', "\\|")
        ));
    }
    out
}
