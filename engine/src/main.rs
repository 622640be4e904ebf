//! The tickcast daemon: `tickcast` with no arguments serves `ws://127.0.0.1:8080/ws` fed by an
//! embedded simulated exchange.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tickcast::config::{Config, Overrides, Seconds};
use tickcast::server::Engine;

/// Market-data fan-out engine: live L2 order books and trades over WebSocket.
///
/// With no arguments it serves ws://127.0.0.1:8080/ws, fed by an embedded simulated exchange.
/// Plain HTTP on the same port: /healthz and /metrics. Logs go to stderr, filtered by RUST_LOG
/// (default "info").
///
/// Every setting can also be given in a TOML file (--config FILE) under the flag's name
/// without the dashes, e.g. `max-conns = 5000`; flags override the file, which overrides the
/// defaults. Durations are in seconds (fractions allowed), sizes in bytes. See
/// config/tickcast.example.toml and docs/operations.md.
#[derive(Debug, Parser)]
#[command(version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Read settings from this TOML file (flags given here override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration (file, flags, tokens file), print "configuration ok" and exit.
    #[arg(long)]
    check_config: bool,

    /// Address to serve clients on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", help_heading = "Serving")]
    listen: Option<SocketAddr>,
    /// Shard threads [default: one per core].
    #[arg(long, value_name = "N", help_heading = "Serving")]
    shards: Option<usize>,
    /// Pin shard threads to cores [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", help_heading = "Serving")]
    pin: Option<bool>,

    /// Exchange feed: ws://HOST:PORT/PATH, or "embedded" for the built-in simulator
    /// [default: embedded].
    #[arg(long, value_name = "URL", help_heading = "Feed")]
    feed: Option<String>,
    /// Embedded simulator: number of symbols [default: 50].
    #[arg(long, value_name = "N", help_heading = "Feed")]
    sim_symbols: Option<usize>,
    /// Embedded simulator: book updates per second, all symbols together [default: 2000].
    #[arg(long, value_name = "RATE", help_heading = "Feed")]
    sim_rate: Option<f64>,
    /// Embedded simulator: seed of the order flow [default: 1].
    #[arg(long, value_name = "SEED", help_heading = "Feed")]
    sim_seed: Option<u64>,
    /// Feed reconnect: first back-off delay [default: 0.1].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Feed"
    )]
    reconnect_min: Option<Seconds>,
    /// Feed reconnect: longest back-off delay [default: 5].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Feed"
    )]
    reconnect_max: Option<Seconds>,
    /// Feed silent this long (pinged at half of it) is stalled: all symbols stale, reconnect [default: 2].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Feed"
    )]
    feed_stall_timeout: Option<Seconds>,
    /// Most symbols the engine tracks [default: 4096].
    #[arg(long, value_name = "N", help_heading = "Feed")]
    max_symbols: Option<usize>,

    /// Most client connections in total [default: 19900].
    #[arg(long, value_name = "N", help_heading = "Admission and security")]
    max_conns: Option<usize>,
    /// Most client connections from one IP address, at most --max-conns [default: 19900].
    #[arg(long, value_name = "N", help_heading = "Admission and security")]
    max_conns_per_ip: Option<usize>,
    /// Origins allowed to upgrade, comma-separated, each scheme://host[:port]
    /// [default: empty, any origin].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Admission and security"
    )]
    allowed_origins: Option<Vec<String>>,
    /// File of access tokens, one a line; upgrades then need a valid token [default: none].
    #[arg(long, value_name = "FILE", help_heading = "Admission and security")]
    tokens_file: Option<PathBuf>,
    /// Serve /echo, a WebSocket echo endpoint for conformance testing [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", help_heading = "Admission and security")]
    echo: Option<bool>,

    /// Out-buffer bound per connection; a client owing more is evicted (close 1013)
    /// [default: 4194304].
    #[arg(long, value_name = "BYTES", help_heading = "Per-connection limits")]
    max_outbuf_bytes: Option<usize>,
    /// SO_SNDBUF of accepted sockets (the kernel doubles it); 0 = kernel autotuning
    /// [default: 262144].
    #[arg(long, value_name = "BYTES", help_heading = "Per-connection limits")]
    send_buffer_bytes: Option<usize>,
    /// Largest client message (larger: close 1009) [default: 65536].
    #[arg(long, value_name = "BYTES", help_heading = "Per-connection limits")]
    max_message_bytes: Option<usize>,
    /// Most symbols one connection may subscribe to [default: 4096].
    #[arg(long, value_name = "N", help_heading = "Per-connection limits")]
    max_subscriptions: Option<usize>,
    /// Control messages per second per connection, sustained [default: 50].
    #[arg(long, value_name = "N", help_heading = "Per-connection limits")]
    control_rate: Option<u32>,
    /// Control messages per connection at once [default: 100].
    #[arg(long, value_name = "N", help_heading = "Per-connection limits")]
    control_burst: Option<u32>,
    /// Refused control messages in a row before closing with 1008 [default: 20].
    #[arg(long, value_name = "N", help_heading = "Per-connection limits")]
    control_strikes: Option<u32>,

    /// Time a client has to send its upgrade request [default: 10].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Timing"
    )]
    handshake_timeout: Option<Seconds>,
    /// Time a closing connection has to answer the close frame [default: 5].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Timing"
    )]
    close_timeout: Option<Seconds>,
    /// Seconds an evicted slow consumer is kept so that it can read its 1013 close frame
    /// [default: 60].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Timing"
    )]
    evict_timeout: Option<Seconds>,
    /// Interval of server pings; a client answering none of two is closed [default: 30].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Timing"
    )]
    ping_interval: Option<Seconds>,
    /// Time allowed for a graceful shutdown before exit [default: 5].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Timing"
    )]
    shutdown_deadline: Option<Seconds>,

    /// Accept permessage-deflate when clients offer it [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", conflicts_with = "no_deflate",
          help_heading = "Compression")]
    deflate: Option<bool>,
    /// Refuse permessage-deflate even when clients offer it (same as --deflate=false).
    #[arg(long, help_heading = "Compression")]
    no_deflate: bool,
    /// Data messages below this size are not compressed [default: 256].
    #[arg(long, value_name = "BYTES", help_heading = "Compression")]
    deflate_threshold: Option<usize>,

    /// Messages per shard ring [default: 65536].
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    ring_capacity: Option<usize>,
    /// Ring messages a shard handles per wake before writing [default: 16384].
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    drain_max: Option<usize>,
    /// Most records per data message [default: 65535].
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    batch_max_records: Option<usize>,
    /// Most payload bytes per data message [default: 262144].
    #[arg(long, value_name = "BYTES", help_heading = "Tuning")]
    batch_max_bytes: Option<usize>,

    /// Replay window per stream, most records; 0 turns resume off [default: 32768].
    #[arg(long, value_name = "N", help_heading = "Replay")]
    replay_records: Option<usize>,
    /// Replay window per stream, most bytes [default: 8388608].
    #[arg(long, value_name = "BYTES", help_heading = "Replay")]
    replay_bytes: Option<usize>,
    /// Replay window per stream, most age [default: 30].
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        help_heading = "Replay"
    )]
    replay_age: Option<Seconds>,
    /// Replay windows of every stream together, most bytes [default: 268435456].
    #[arg(long, value_name = "BYTES", help_heading = "Replay")]
    replay_total_bytes: Option<usize>,
}

impl Cli {
    /// The flags as a configuration layer (only what was given).
    fn overrides(self) -> Overrides {
        Overrides {
            listen: self.listen,
            feed: self.feed,
            sim_symbols: self.sim_symbols,
            sim_rate: self.sim_rate,
            sim_seed: self.sim_seed,
            shards: self.shards,
            pin: self.pin,
            ring_capacity: self.ring_capacity,
            max_symbols: self.max_symbols,
            max_outbuf_bytes: self.max_outbuf_bytes,
            send_buffer_bytes: self.send_buffer_bytes,
            max_message_bytes: self.max_message_bytes,
            max_subscriptions: self.max_subscriptions,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            evict_timeout: self.evict_timeout,
            control_rate: self.control_rate,
            control_burst: self.control_burst,
            control_strikes: self.control_strikes,
            batch_max_records: self.batch_max_records,
            batch_max_bytes: self.batch_max_bytes,
            drain_max: self.drain_max,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            feed_stall_timeout: self.feed_stall_timeout,
            echo: self.echo,
            deflate: if self.no_deflate {
                Some(false)
            } else {
                self.deflate
            },
            deflate_threshold: self.deflate_threshold,
            allowed_origins: self.allowed_origins,
            tokens_file: self.tokens_file,
            max_conns: self.max_conns,
            max_conns_per_ip: self.max_conns_per_ip,
            ping_interval: self.ping_interval,
            shutdown_deadline: self.shutdown_deadline,
            replay_records: self.replay_records,
            replay_bytes: self.replay_bytes,
            replay_age: self.replay_age,
            replay_total_bytes: self.replay_total_bytes,
        }
    }
}

/// Parses the command line; on a usage error prints one line and returns exit status 2.
fn parse_cli() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        // --help and --version print to stdout and exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("tickcast: {first} (see tickcast --help)");
            Err(ExitCode::from(2))
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux), if readable.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let file = cli.config.clone();
    let check_only = cli.check_config;
    let config = match Config::load(file.as_deref(), cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tickcast: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    // Every connection is a file descriptor; the engine needs a few more of its own.
    let needed = u64::try_from(config.max_conns)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    if let Some(limit) = open_files_limit().filter(|&l| l < needed) {
        tracing::warn!(
            limit,
            max_conns = config.max_conns,
            "the open-files limit is below max-conns: raise `ulimit -n` (systemd LimitNOFILE) \
             or lower max-conns (see docs/operations.md)"
        );
    }
    match Engine::start(config) {
        Ok(engine) => {
            if let Err(e) = engine.stop_on_signals() {
                tracing::warn!("cannot install signal handlers ({e}): SIGTERM stops at once");
            }
            // One machine-readable line on stdout so that scripts and tests can find the port.
            println!("tickcast listening on ws://{}/ws", engine.local_addr());
            engine.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast: {e}");
            ExitCode::from(1)
        }
    }
}
