//! `tickcast-bench`: opens many subscriber connections to a tickcast server,
//! checks the sequence of every stream, measures latency per stage, and reports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tickcast_bench::runner::{self, DEPTHS};
use tickcast_bench::{Config, Report};

const EXIT_HELP: &str = "\
Exit status:
  0  the run completed and every stream kept the sequence rule
  1  integrity failure: a sequence gap, a book delta before its snapshot, or an
     undecodable batch was seen (details in the report)
  2  usage or setup error: invalid flags, server unreachable, no symbols,
     report file not writable
  3  no connection could subscribe";

/// Load and latency tool for tickcast: many subscribers, sequence checks on
/// every stream, hdrhistogram latency per stage.
///
/// One connection asks the server for its symbols; then --conns connections
/// open at --connect-rate per second, each subscribing to --symbols-per-conn
/// symbols (connection i takes symbols i*K .. i*K+K of the list, wrapping) on
/// the book and trades channels. After the ramp, --duration seconds are
/// measured; every record (ramp included) is sequence-checked.
#[derive(Debug, Parser)]
#[command(name = "tickcast-bench", version, after_help = EXIT_HELP)]
struct Args {
    /// Server WebSocket URL (binary format).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of subscriber connections.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    conns: u32,
    /// Symbols each connection subscribes to.
    #[arg(long, value_name = "K", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    symbols_per_conn: u32,
    /// Book depth: 1, 10, 25, 100, or 0 for the whole book.
    #[arg(long, value_name = "D", default_value_t = 25, value_parser = parse_depth)]
    depth: u32,
    /// Seconds to measure, after all connections are subscribed.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Connections opened per second during the ramp.
    #[arg(long, value_name = "PER_SEC", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..))]
    connect_rate: u32,
    /// Tokio worker threads (1 runs everything on the main thread).
    #[arg(long, value_name = "T", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
}

fn parse_depth(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(d) if DEPTHS.contains(&d) => Ok(d),
        _ => Err(String::from(
            "must be one of 1, 10, 25, 100 or 0 (whole book)",
        )),
    }
}

fn write_json(path: &PathBuf, report: &Report) -> Result<(), String> {
    let text = report.to_json_pretty().map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        url: args.url,
        conns: args.conns as usize,
        symbols_per_conn: args.symbols_per_conn as usize,
        depth: args.depth,
        duration: Duration::from_secs(args.duration),
        connect_rate: args.connect_rate,
        progress: true,
        ..Config::default()
    };
    if let Err(e) = config.validate() {
        eprintln!("tickcast-bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickcast-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(runner::run(&config)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tickcast-bench: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    if let Some(path) = &args.json {
        if let Err(e) = write_json(path, &report) {
            eprintln!("tickcast-bench: cannot write the JSON report: {e}");
            return ExitCode::from(2);
        }
    }
    let c = &report.connections;
    if c.ok + c.evicted + c.closed + c.dropped == 0 {
        return ExitCode::from(3);
    }
    if report.integrity_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
