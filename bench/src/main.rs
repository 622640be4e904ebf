//! `tickcast-bench`: opens many subscriber connections to a tickcast server,
//! checks the sequence of every stream, measures latency per stage, and reports.
//! Subcommands run the scenarios of `docs/benchmarks.md` against tickcast or a
//! broadcast peer, and summarise their result files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tickcast_bench::load::ClientKind;
use tickcast_bench::runner::{self, DEPTHS};
use tickcast_bench::scenario::{self, Scenario, ScenarioConfig};
use tickcast_bench::source::Burst;
use tickcast_bench::{Config, Report, summary};

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
#[command(name = "tickcast-bench", version, after_help = EXIT_HELP,
          args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Rate ramp at fixed connections: the highest rate with no loss and p99 under
    /// --p99-bound-ms (one rate: a fixed-load run).
    Fanout(ScenarioArgs),
    /// Idle subscribers: target RSS per connection.
    Connections(ScenarioArgs),
    /// A share of subscribers stops reading: the others' latency, evictions, target memory.
    Slow(ScenarioArgs),
    /// Input bursts (--burst-factor × the rate for --burst-ms every --burst-every-ms).
    Burst(ScenarioArgs),
    /// Clients drop their connection and subscribe again, with `resume` or without
    /// (protocol 1.1): bytes, engine CPU, time until live again, p99 of the others.
    Reconnect(ReconnectArgs),
    /// Ingest end to end: feed-sim --pregen on one CPU, each --target daemon on another,
    /// no subscribers; sustained updates/s, feed evictions, daemon CPU per offered rate.
    Ingest(IngestArgs),
    /// Medians of result files (DIR/round-*/CASE-LABEL.json) as markdown tables,
    /// written between the bench markers of a document, and latency plots.
    Summarize(SummarizeArgs),
    /// Internal: a load process driven by a scenario over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// Flags of the `ingest` scenario.
#[derive(Debug, Args)]
struct IngestArgs {
    /// A daemon build to measure, LABEL=PATH (repeat to compare builds in the same run).
    #[arg(long = "target", value_name = "LABEL=PATH", required = true)]
    targets: Vec<String>,
    /// The feed-sim binary (needs --pregen).
    #[arg(long, default_value = "target/release/feed-sim")]
    feed_sim: String,
    /// Offered rates, updates per second, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500000,1000000,1500000,2000000"
    )]
    rates: Vec<f64>,
    /// Symbols of the feed.
    #[arg(long, default_value_t = 50)]
    symbols: usize,
    /// Seconds of feed before the window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// CPU of the daemon.
    #[arg(long, default_value_t = 0)]
    engine_cpu: usize,
    /// CPU of feed-sim.
    #[arg(long, default_value_t = 1)]
    feed_cpu: usize,
    /// Repetitions of the ramp (the target order alternates).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Write every step as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Flags of the `reconnect` scenario.
#[derive(Debug, Args)]
struct ReconnectArgs {
    /// Command that starts tickcast; {port} is replaced (the bench knows its pid).
    #[arg(long, value_name = "CMD")]
    target_cmd: Option<String>,
    /// URL of a tickcast already running (instead of --target-cmd).
    #[arg(long)]
    url: Option<String>,
    /// Pid of a tickcast already running, for its CPU.
    #[arg(long)]
    target_pid: Option<u32>,
    /// Clients that drop and reconnect.
    #[arg(long, default_value_t = 200)]
    conns: usize,
    /// Clients that stay connected (their p99 is measured).
    #[arg(long, default_value_t = 20)]
    stayers: usize,
    /// Symbols per client.
    #[arg(long, default_value_t = 20)]
    symbols_per_conn: usize,
    /// Book depth.
    #[arg(long, default_value_t = 25, value_parser = parse_depth)]
    depth: u32,
    /// Reconnect without resume (a fresh subscribe: the snapshot storm).
    #[arg(long)]
    no_resume: bool,
    /// The drops are spread over this many ms.
    #[arg(long, default_value_t = 500)]
    spread_ms: u64,
    /// Each client stays away this many ms.
    #[arg(long, default_value_t = 200)]
    away_ms: u64,
    /// Measured window (storm and baseline), seconds.
    #[arg(long, default_value_t = 3.0)]
    window: f64,
    /// Runs (each against a fresh target when --target-cmd is given).
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

/// Flags of the scenarios.
#[derive(Debug, Args)]
struct ScenarioArgs {
    /// What the target is: tickcast (the bench serves its feed and subscribes) or
    /// peer (a broadcast server: the bench publishes to /pub, subscribers read /sub).
    #[arg(long, value_parser = ["tickcast", "peer"], default_value = "tickcast")]
    target: String,
    /// Name of the target in reports and file names.
    #[arg(long, default_value = "tickcast")]
    label: String,
    /// Name of this case in reports and file names (default: the scenario).
    #[arg(long)]
    case: Option<String>,
    /// Command that starts the target; {port} and {feed} (tickcast's feed URL) are
    /// replaced. The bench runs it with `sh -c "exec ..."`, reads its /proc, kills it at the end.
    #[arg(long, value_name = "CMD")]
    target_cmd: Option<String>,
    /// Port for the started target (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// URL of a target already running (instead of --target-cmd; then tickcast
    /// must read the feed the bench prints, which only --target-cmd can arrange).
    #[arg(long)]
    url: Option<String>,
    /// Pid of a target already running, for CPU and RSS.
    #[arg(long)]
    target_pid: Option<u32>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Symbols of the input (feed or publisher).
    #[arg(long, default_value_t = 50)]
    symbols: usize,
    /// Symbols per connection (tickcast); 0 subscribes each to every symbol (`*`).
    #[arg(long, default_value_t = 0)]
    symbols_per_conn: usize,
    /// Book depth (tickcast).
    #[arg(long, default_value_t = 25, value_parser = parse_depth)]
    depth: u32,
    /// Load processes (0: as many as the open-file limit needs).
    #[arg(long, default_value_t = 0)]
    procs: usize,
    /// Connections opened per second.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Source addresses 127.0.0.1..N (0: as many as ports need).
    #[arg(long, default_value_t = 0)]
    source_ips: u8,
    /// Input rates, comma-separated, one step each (l2updates/s for tickcast,
    /// records/s for peers).
    #[arg(long, value_delimiter = ',', value_name = "R,R,..")]
    rates: Vec<f64>,
    /// Geometric ramp START:FACTOR:MAX (instead of --rates).
    #[arg(long, value_name = "START:FACTOR:MAX")]
    ramp: Option<String>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// Unmeasured seconds before each step.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// A step fails when p99 recv_ts -> client passes this many ms.
    #[arg(long, default_value_t = 20.0)]
    p99_bound_ms: f64,
    /// slow: share of subscribers that stop reading.
    #[arg(long, default_value_t = 0.1)]
    stop_share: f64,
    /// slow: SO_RCVBUF of the subscribers that stop and of the slow readers, bytes.
    #[arg(long, default_value_t = 65_536)]
    stopper_rcvbuf: u32,
    /// slow: share of subscribers that read at --slow-read-bps all along (never a stopper).
    #[arg(long, default_value_t = 0.0)]
    slow_readers: f64,
    /// slow: bytes per second a slow reader reads.
    #[arg(long, default_value_t = 50_000)]
    slow_read_bps: u64,
    /// The load's reader sleeps this long before each poll, µs, so that one wake-up
    /// serves many sockets: about half the load's CPU per message, at the price of
    /// up to this much latency in the figures. 0: read as soon as a socket is ready.
    #[arg(long, default_value_t = 300)]
    read_pause_us: u64,
    /// burst: rate multiplier inside a burst.
    #[arg(long, default_value_t = 10.0)]
    burst_factor: f64,
    /// burst: burst length, ms.
    #[arg(long, default_value_t = 200)]
    burst_ms: u64,
    /// burst: burst period, ms.
    #[arg(long, default_value_t = 2000)]
    burst_every_ms: u64,
    /// Seconds a connection has to connect and subscribe.
    #[arg(long, default_value_t = 20.0)]
    connect_timeout: f64,
    /// Directory for CASE-LABEL.json, .hgrm files, .svg plot and the target's log.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Extra measurements of a step that fails on latency alone (no loss).
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Flags of `summarize`.
#[derive(Debug, Args)]
struct SummarizeArgs {
    /// Directory holding round-*/ subdirectories of result files.
    #[arg(long, value_name = "DIR")]
    results: PathBuf,
    /// Markdown file whose section between <!-- bench:begin --> and
    /// <!-- bench:end --> is replaced (appended when missing); stdout when absent.
    #[arg(long, value_name = "FILE")]
    doc: Option<PathBuf>,
    /// Directory for the comparison plots (one SVG per case).
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Path of the plots directory as the document links it.
    #[arg(long, value_name = "PATH")]
    plots_link: Option<String>,
    /// Text put at the top of the generated section (machine, date, command).
    #[arg(long, default_value = "")]
    preamble: String,
}

fn parse_ramp(s: &str) -> Result<Vec<f64>, String> {
    let parts: Vec<f64> = s
        .split(':')
        .map(|p| p.parse::<f64>().map_err(|e| format!("--ramp {s:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [start, factor, max] = parts[..] else {
        return Err(format!("--ramp {s:?}: expected START:FACTOR:MAX"));
    };
    if !(start > 0.0 && factor > 1.0 && max >= start) {
        return Err(format!(
            "--ramp {s:?}: need START > 0, FACTOR > 1, MAX >= START"
        ));
    }
    let mut rates = Vec::new();
    let mut r = start;
    while r <= max * 1.000_001 && rates.len() < 1000 {
        rates.push(r.round());
        r *= factor;
    }
    Ok(rates)
}

fn scenario_config(which: Scenario, a: ScenarioArgs) -> Result<ScenarioConfig, String> {
    let rates = match (&a.ramp, a.rates.is_empty()) {
        (Some(r), true) => parse_ramp(r)?,
        (None, false) => a.rates.clone(),
        (None, true) => vec![1000.0],
        (Some(_), false) => return Err(String::from("give --rates or --ramp, not both")),
    };
    let secs = |v: f64, flag: &str| {
        Duration::try_from_secs_f64(v).map_err(|_| format!("{flag} {v}: not a duration"))
    };
    if !(0.0..1.0).contains(&a.stop_share) {
        return Err(format!("--stop-share {}: must be in [0, 1)", a.stop_share));
    }
    if !(0.0..1.0).contains(&a.slow_readers) {
        return Err(format!(
            "--slow-readers {}: must be in [0, 1)",
            a.slow_readers
        ));
    }
    if a.slow_readers > 0.0 && a.slow_read_bps == 0 {
        return Err(String::from("--slow-read-bps must be positive"));
    }
    if a.window <= 0.0 {
        return Err(String::from("--window must be positive"));
    }
    if a.connect_rate <= 0.0 {
        return Err(String::from("--connect-rate must be positive"));
    }
    Ok(ScenarioConfig {
        scenario: which,
        case: a.case.unwrap_or_else(|| which.name().to_owned()),
        kind: if a.target == "peer" {
            ClientKind::Peer
        } else {
            ClientKind::Tickcast
        },
        label: a.label,
        target_cmd: a.target_cmd,
        port: a.port,
        url: a.url,
        target_pid: a.target_pid,
        conns: a.conns,
        symbols: a.symbols,
        symbols_per_conn: a.symbols_per_conn,
        depth: a.depth,
        procs: a.procs,
        connect_rate: a.connect_rate,
        source_ips: a.source_ips,
        rates,
        window: secs(a.window, "--window")?,
        settle: secs(a.settle, "--settle")?,
        p99_bound_ms: a.p99_bound_ms,
        stop_share: a.stop_share,
        stopper_rcvbuf: a.stopper_rcvbuf,
        slow_share: a.slow_readers,
        slow_read_bps: a.slow_read_bps,
        burst: (which == Scenario::Burst).then_some(Burst {
            factor: a.burst_factor,
            len_ms: a.burst_ms,
            every_ms: a.burst_every_ms,
        }),
        connect_timeout: secs(a.connect_timeout, "--connect-timeout")?,
        read_pause: Duration::from_micros(a.read_pause_us),
        ready_timeout: Duration::from_secs(60),
        out: a.out,
        progress: !a.quiet,
        retries: a.retries,
        command_line: std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@+%".contains(c));
    if plain {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn local_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn run_scenario(which: Scenario, args: ScenarioArgs) -> ExitCode {
    let result = scenario_config(which, args).and_then(|cfg| {
        let rt = local_runtime()?;
        let local = tokio::task::LocalSet::new();
        local
            .block_on(&rt, scenario::run(&cfg))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(report) => {
            println!("{}", scenario::summary_text(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_worker() -> ExitCode {
    let _ = scenario::raise_nofile();
    let result = local_runtime().and_then(|rt| {
        let local = tokio::task::LocalSet::new();
        local
            .block_on(&rt, tickcast_bench::load::worker_main())
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast-bench worker: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_summarize(a: SummarizeArgs) -> ExitCode {
    let opts = summary::Options {
        plots: a.plots,
        plots_link: a.plots_link,
        preamble: a.preamble,
    };
    let result = summary::summarize(&a.results, &opts).and_then(|section| match &a.doc {
        Some(doc) => summary::write_section(doc, &section),
        None => {
            println!("{section}");
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast-bench summarize: {e}");
            ExitCode::from(2)
        }
    }
}

/// Flags of the plain run (no subcommand).
#[derive(Debug, Args)]
struct RunArgs {
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
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Fanout(a)) => run_scenario(Scenario::Fanout, a),
        Some(Cmd::Connections(a)) => run_scenario(Scenario::Connections, a),
        Some(Cmd::Slow(a)) => run_scenario(Scenario::Slow, a),
        Some(Cmd::Burst(a)) => run_scenario(Scenario::Burst, a),
        Some(Cmd::Reconnect(a)) => run_reconnect(&a),
        Some(Cmd::Ingest(a)) => run_ingest(&a),
        Some(Cmd::Summarize(a)) => run_summarize(a),
        Some(Cmd::Worker) => run_worker(),
        None => run_plain(cli.run),
    }
}

fn run_ingest(a: &IngestArgs) -> ExitCode {
    let mut targets = Vec::new();
    for t in &a.targets {
        let Some((label, path)) = t.split_once('=') else {
            eprintln!("tickcast-bench: ingest: --target wants LABEL=PATH, got {t:?}");
            return ExitCode::from(2);
        };
        targets.push((label.to_owned(), path.to_owned()));
    }
    let cfg = tickcast_bench::ingest::IngestConfig {
        targets,
        feed_sim: a.feed_sim.clone(),
        rates: a.rates.clone(),
        symbols: a.symbols,
        warmup: a.warmup,
        window: a.window,
        engine_cpu: a.engine_cpu,
        feed_cpu: a.feed_cpu,
        runs: a.runs,
    };
    match tickcast_bench::ingest::run(&cfg) {
        Ok(steps) => {
            if let Some(path) = &a.out {
                let json = serde_json::to_string_pretty(&steps).unwrap_or_default();
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!(
                        "tickcast-bench: ingest: cannot write {}: {e}",
                        path.display()
                    );
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast-bench: ingest: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_reconnect(a: &ReconnectArgs) -> ExitCode {
    let mut failed = false;
    for run in 0..a.runs {
        let result = reconnect_once(a);
        match result {
            Ok(r) => {
                println!("run {run}: {}", tickcast_bench::reconnect::line(&r));
                failed |= r.errors > 0;
            }
            Err(e) => {
                eprintln!("tickcast-bench: reconnect: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn reconnect_once(a: &ReconnectArgs) -> Result<tickcast_bench::reconnect::ReconnectReport, String> {
    let mut child = None;
    let (url, pid) = match (&a.target_cmd, &a.url) {
        (Some(cmd), _) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            let cmd = cmd.replace("{port}", &port.to_string());
            let c = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exec {cmd}"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("{cmd}: {e}"))?;
            let pid = c.id();
            child = Some(c);
            (format!("ws://127.0.0.1:{port}/ws"), Some(pid))
        }
        (None, Some(url)) => (url.clone(), a.target_pid),
        (None, None) => return Err("give --target-cmd or --url".into()),
    };
    let cfg = tickcast_bench::reconnect::ReconnectConfig {
        url,
        pid,
        movers: a.conns,
        stayers: a.stayers,
        symbols_per_conn: a.symbols_per_conn,
        depth: a.depth as u16,
        resume: !a.no_resume,
        spread: Duration::from_millis(a.spread_ms),
        away: Duration::from_millis(a.away_ms),
        window: Duration::from_secs_f64(a.window),
    };
    let rt = local_runtime()?;
    // Wait for the target to serve its feed.
    let result = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tickcast_bench::runner::fetch_symbols(&cfg.url, Duration::from_secs(2)).await {
                Ok(s) if !s.is_empty() => break,
                _ if tokio::time::Instant::now() > deadline => {
                    return Err("the target never listed its symbols".to_owned());
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        tickcast_bench::reconnect::run(&cfg).await
    });
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

fn run_plain(args: RunArgs) -> ExitCode {
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
