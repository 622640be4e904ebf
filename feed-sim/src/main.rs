//! `feed-sim`: run the simulated exchange until SIGINT or kill.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use feed_sim::{Burst, Faults, SimConfig, Simulator};
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
    /// Faults, e.g. drop=0.01,dup=0.01,reorder=0.01,malformed=0.001,unknown=0.001,disconnect=30,stall=60
    /// (P a probability per update, SECS a period; stall_for=SECS sets a stall's length, half
    /// the period by default). Deterministic under --seed.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    faults: Faults,
    /// Seconds between the starts of two bursts (enables bursts).
    #[arg(long, value_name = "SECS")]
    burst_every: Option<f64>,
    /// Rate multiplier during a burst.
    #[arg(
        long,
        value_name = "F",
        default_value_t = 20.0,
        requires = "burst_every"
    )]
    burst_factor: f64,
    /// Length of a burst in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 200,
        requires = "burst_every"
    )]
    burst_for: u64,
    /// Heartbeat interval of quiet symbols in milliseconds (0: no heartbeats).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Generate the --updates stream at start and send it to each feed connection at --rate
    /// with plain socket writes (cheap enough to measure a consumer at millions of updates/s).
    /// GET /book is the truth at the end of the stream. No faults, no bursts.
    #[arg(long, requires = "updates")]
    pregen: bool,
    /// With --pregen: send as fast as the socket takes (no schedule, no eviction).
    #[arg(long, requires = "pregen")]
    unpaced: bool,
}

impl Cli {
    fn config(&self) -> Result<SimConfig, String> {
        let burst = match self.burst_every {
            None => None,
            Some(every) => Some(Burst {
                factor: self.burst_factor,
                every: Duration::try_from_secs_f64(every)
                    .map_err(|_| format!("--burst-every: {every} is not a number of seconds"))?,
                length: Duration::from_millis(self.burst_for),
            }),
        };
        Ok(SimConfig {
            listen: self.listen,
            symbols: self.symbols,
            seed: self.seed,
            rate: self.rate,
            updates: self.updates,
            depth: self.depth,
            faults: self.faults.clone(),
            burst,
            heartbeat: (self.heartbeat_ms > 0).then(|| Duration::from_millis(self.heartbeat_ms)),
            pregen: self.pregen,
            unpaced: self.unpaced,
        })
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
    let cfg = match cli.config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("feed-sim: {e}");
            return ExitCode::from(2);
        }
    };
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
            assert_eq!(cli.config(), Ok(SimConfig::default()));
        }
        assert!(Cli::try_parse_from(["feed-sim", "--listen", "nope"]).is_err());
        assert!(Cli::try_parse_from(["feed-sim", "--symbols", "-3"]).is_err());
    }

    #[test]
    fn fault_and_burst_flags() {
        let cli = Cli::try_parse_from([
            "feed-sim",
            "--faults",
            "drop=0.1,stall=4",
            "--burst-every",
            "2.5",
            "--burst-factor",
            "10",
        ]);
        let cfg = cli.map(|c| c.config());
        let Ok(Ok(cfg)) = cfg else { panic!("{cfg:?}") };
        assert_eq!(
            cfg.faults,
            Faults::none()
                .with_drop(0.1)
                .with_stall_every(Duration::from_secs(4))
        );
        assert_eq!(
            cfg.burst,
            Some(Burst {
                factor: 10.0,
                every: Duration::from_millis(2500),
                length: Duration::from_millis(200),
            })
        );
        for bad in [
            &["feed-sim", "--faults", "drop=7"][..],
            &["feed-sim", "--faults", "flood=0.1"],
            &["feed-sim", "--burst-factor", "3"],
        ] {
            let err = Cli::try_parse_from(bad)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--faults") || err.contains("--burst-every"),
                "{err}"
            );
        }
        let neg = Cli::try_parse_from(["feed-sim", "--burst-every=-1"]).map(|c| c.config());
        assert!(matches!(neg, Ok(Err(_))), "{neg:?}");
    }
}
