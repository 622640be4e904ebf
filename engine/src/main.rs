//! The tickcast daemon: `tickcast` with no arguments serves `ws://127.0.0.1:8080/ws` fed by an
//! embedded simulated exchange.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tickcast::config::{Config, FeedSource, FeedUrl};
use tickcast::server::Engine;

/// Market-data fan-out engine: live L2 order books and trades over WebSocket.
///
/// With no arguments it serves ws://127.0.0.1:8080/ws, fed by an embedded simulated exchange.
/// Plain HTTP on the same port: /healthz and /metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Address to serve clients on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Read an external feed (e.g. ws://127.0.0.1:9001/feed) instead of the embedded simulator.
    #[arg(long, value_name = "URL")]
    feed: Option<String>,
    /// Shard threads (default: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Pin shard threads to cores.
    #[arg(long)]
    pin: bool,
    /// Out-buffer bound per connection in bytes; a client owing more is evicted (close 1013).
    #[arg(long, value_name = "BYTES")]
    max_outbuf_bytes: Option<usize>,
    /// Largest client message in bytes (larger: close 1009).
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// Most symbols one connection may subscribe to.
    #[arg(long)]
    max_subscriptions: Option<usize>,
    /// Messages per shard ring.
    #[arg(long)]
    ring_capacity: Option<usize>,
    /// Serve /echo, a WebSocket echo endpoint for conformance testing (off by default).
    #[arg(long)]
    echo: bool,
    /// Data messages below this many bytes are not compressed for permessage-deflate clients.
    #[arg(long, value_name = "BYTES")]
    deflate_threshold: Option<usize>,
    /// Refuse permessage-deflate even when clients offer it.
    #[arg(long)]
    no_deflate: bool,
    /// Embedded simulator: number of symbols.
    #[arg(long, default_value_t = 50)]
    sim_symbols: usize,
    /// Embedded simulator: book updates per second, all symbols together.
    #[arg(long, default_value_t = 2000.0)]
    sim_rate: f64,
    /// Embedded simulator: seed of the order flow.
    #[arg(long, default_value_t = 1)]
    sim_seed: u64,
}

fn config_from(cli: Cli) -> Result<Config, String> {
    let mut c = Config {
        listen: cli.listen,
        ..Config::default()
    };
    c.feed = match cli.feed {
        Some(url) => FeedSource::External(FeedUrl::parse(&url).map_err(|e| e.to_string())?),
        None => FeedSource::Embedded {
            symbols: cli.sim_symbols,
            rate: cli.sim_rate,
            seed: cli.sim_seed,
        },
    };
    if let Some(n) = cli.shards {
        c.shards = n;
    }
    c.pin = cli.pin;
    c.echo = cli.echo;
    c.deflate = !cli.no_deflate;
    if let Some(n) = cli.deflate_threshold {
        c.deflate_threshold = n;
    }
    if let Some(n) = cli.max_outbuf_bytes {
        c.max_outbuf_bytes = n;
    }
    if let Some(n) = cli.max_message_bytes {
        c.max_message_bytes = n;
    }
    if let Some(n) = cli.max_subscriptions {
        c.max_subscriptions = n;
    }
    if let Some(n) = cli.ring_capacity {
        c.ring_capacity = n;
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match config_from(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tickcast: {e}");
            return ExitCode::from(2);
        }
    };
    match Engine::start(config) {
        Ok(engine) => {
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
