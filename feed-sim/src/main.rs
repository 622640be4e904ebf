//! `feed-sim`: run the simulated exchange until SIGINT or kill.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use feed_sim::{SimConfig, Simulator};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Simulated exchange: deterministic L2 order flow and trades as a JSON WebSocket feed on
/// ws://ADDR/feed, the true books on GET /book/SYMBOL.
#[derive(Debug, Parser)]
#[command(name = "feed-sim", version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Number of symbols (1..=10000).
    #[arg(long, value_name = "N", default_value_t = 50)]
    symbols: usize,
    /// Seed of the order flow; same seed, same events.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// l2updates per second, all symbols together.
    #[arg(long, value_name = "R", default_value_t = 2000.0)]
    rate: f64,
    /// Stop changing books after N l2updates (keep serving).
    #[arg(long, value_name = "N")]
    updates: Option<u64>,
    /// Initial levels per side (1..=1000).
    #[arg(long, value_name = "D", default_value_t = 150)]
    depth: usize,
}

impl Cli {
    fn config(&self) -> SimConfig {
        SimConfig {
            listen: self.listen,
            symbols: self.symbols,
            seed: self.seed,
            rate: self.rate,
            updates: self.updates,
            depth: self.depth,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Bad flags: clap prints the problem and exits with status 2.
    let cli = Cli::parse();
    let cfg = cli.config();
    if let Err(e) = cfg.validate() {
        error!("{e}");
        eprintln!("feed-sim: {e}");
        return ExitCode::from(2);
    }
    let sim = match Simulator::start(cfg) {
        Ok(sim) => sim,
        Err(e) => {
            error!("{e}");
            eprintln!("feed-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(url = %sim.feed_url(), "serving; stop with Ctrl-C");
    // Runs until the process is interrupted or killed; report progress meanwhile.
    let mut last = 0u64;
    let mut reported_done = false;
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let sent = sim.updates_sent();
        if !reported_done {
            info!(updates = sent, per_sec = (sent - last) / 10, "progress");
            reported_done = sim.is_done();
        }
        last = sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_match_config_defaults() {
        let cli = Cli::try_parse_from(["feed-sim"]);
        assert!(cli.is_ok());
        if let Ok(cli) = cli {
            assert_eq!(cli.config(), SimConfig::default());
        }
        assert!(Cli::try_parse_from(["feed-sim", "--listen", "nope"]).is_err());
        assert!(Cli::try_parse_from(["feed-sim", "--symbols", "-3"]).is_err());
    }
}
