//! The tickcast daemon: `tickcast` with no arguments serves `ws://127.0.0.1:8080/ws` fed by an
//! embedded simulated exchange.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tickcast::config::{Config, LogFormat, Overrides};
use tickcast::server::Engine;

/// Market-data fan-out engine: live L2 order books and trades over WebSocket.
///
/// With no arguments it serves ws://127.0.0.1:8080/ws, fed by an embedded simulated exchange.
/// Plain HTTP on the same port: /healthz and /metrics. Logs go to stderr (--log-format),
/// filtered by RUST_LOG (default "info").
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
    /// Every setting of the settings table (tickcast::config::SETTINGS) as a flag.
    #[command(flatten)]
    settings: Overrides,
    /// Refuse permessage-deflate even when clients offer it (same as --deflate=false).
    #[arg(long, conflicts_with = "deflate", help_heading = "Compression")]
    no_deflate: bool,
}

impl Cli {
    /// The flags as a configuration layer (only what was given).
    fn overrides(self) -> Overrides {
        let mut o = self.settings;
        if self.no_deflate {
            o.deflate = Some(false);
        }
        o
    }
}

/// Logs to stderr in `format`, coloured only when stderr is a terminal (never in a file,
/// a pipe or journald).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
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
    init_logs(config.log_format);
    if check_only {
        // The certificate and key are read at start: check them too.
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            if let Err(e) = tickcast::tls::CertStore::load(cert, key) {
                eprintln!("tickcast: TLS: {e}");
                return ExitCode::from(2);
            }
        }
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
            if let Err(e) = engine.reload_on_sighup() {
                tracing::warn!("cannot install the SIGHUP handler ({e}): no certificate reload");
            }
            // One machine-readable line on stdout so that scripts and tests can find the port.
            let scheme = if engine.tls() { "wss" } else { "ws" };
            println!(
                "tickcast listening on {scheme}://{}/ws",
                engine.local_addr()
            );
            engine.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast: {e}");
            ExitCode::from(1)
        }
    }
}
