//! The bench run: fetch the symbol list, open and subscribe connections at a
//! bounded rate, read and check every batch for a measured window, report.
//!
//! Phases: **ramp** (connections open and subscribe; their records are
//! sequence-checked but not measured), **measure** (`duration`: records, messages,
//! bytes and latency are counted), **stop** (connections close).
//!
//! Per record the hot path is one header walk, one sequence check, and for book
//! deltas and trades a latency sample. Samples are buffered per connection and
//! flushed in blocks into two shared histograms, so that memory does not grow
//! with the number of connections (an hdrhistogram at 3 digits is tens of KiB).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::book::{SeqError, SeqTracker, Step};
use crate::control::{Channel, Reply, Request, SymbolInfo};
use crate::report::{Connections, Latency, Percentiles, Report};
use crate::wire::{self, Body, KIND_DELTA, KIND_TRADE};

/// Book depths the protocol allows (0 is the whole book).
pub const DEPTHS: [u32; 5] = [0, 1, 10, 25, 100];

/// Close code of a slow-consumer eviction.
pub const CLOSE_EVICTED: u16 = 1013;

/// Id of the `symbols` request.
const SYMBOLS_ID: u64 = 1;
/// Id of each connection's `subscribe` request.
const SUBSCRIBE_ID: u64 = 1;
/// Latency samples a connection buffers before taking the histogram lock.
const LATENCY_BLOCK: usize = 512;
/// Distinct failure reasons kept in the report.
const MAX_REASONS: usize = 16;
/// Integrity error messages kept (per connection and in the report).
const MAX_ERRORS: usize = 10;
/// How long closing a connection may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long all connections together may take to finish after the stop.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Read buffer per connection (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 32 * 1024;
/// Close code reported when a close frame carries no code.
const CLOSE_NO_STATUS: u16 = 1005;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Server URL, `ws://HOST:PORT/ws` (binary format).
    pub url: String,
    /// Number of subscriber connections.
    pub conns: usize,
    /// Symbols each connection subscribes to (round-robin over the server's list).
    pub symbols_per_conn: usize,
    /// Book depth to subscribe with (see [`DEPTHS`]).
    pub depth: u32,
    /// Length of the measured window.
    pub duration: Duration,
    /// Connections opened per second during the ramp.
    pub connect_rate: u32,
    /// Time a connection may take to connect and get its subscribe reply.
    pub connect_timeout: Duration,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: String::from("ws://127.0.0.1:8080/ws"),
            conns: 100,
            symbols_per_conn: 5,
            depth: 25,
            duration: Duration::from_secs(10),
            connect_rate: 2000,
            connect_timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

impl Config {
    /// Checks the configuration, with messages naming the command-line flags.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Config(m));
        if !self.url.starts_with("ws://") {
            return bad(format!(
                "--url {:?}: expected ws://HOST:PORT/PATH (wss is not supported)",
                self.url
            ));
        }
        if let Err(e) = self.url.as_str().into_client_request() {
            return bad(format!("--url {:?}: {e}", self.url));
        }
        if self.url.contains("format=json") {
            return bad(format!(
                "--url {:?}: the bench reads format=binary only",
                self.url
            ));
        }
        if self.conns == 0 {
            return bad(String::from("--conns must be at least 1"));
        }
        if self.symbols_per_conn == 0 {
            return bad(String::from("--symbols-per-conn must be at least 1"));
        }
        if !DEPTHS.contains(&self.depth) {
            return bad(format!(
                "--depth {}: must be one of 1, 10, 25, 100 or 0 (whole book)",
                self.depth
            ));
        }
        if self.duration.is_zero() {
            return bad(String::from("--duration must be more than 0 seconds"));
        }
        if self.connect_rate == 0 {
            return bad(String::from("--connect-rate must be at least 1 per second"));
        }
        if self.connect_timeout.is_zero() {
            return bad(String::from("connect timeout must be more than 0"));
        }
        Ok(())
    }
}

/// Why a run could not take place.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server could not be reached for the symbol list.
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// Server URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The `symbols` request got no usable answer.
    #[error("symbols request failed: {0}")]
    Symbols(String),
    /// The server answered the `symbols` request with an error.
    #[error("server refused the symbols request: {code}: {message}")]
    Server {
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// The server lists no symbols.
    #[error("the server lists no symbols")]
    NoSymbols,
    /// More symbols per connection than the server has.
    #[error("--symbols-per-conn {per_conn} exceeds the {available} symbols the server lists")]
    TooFewSymbols {
        /// Symbols requested per connection.
        per_conn: usize,
        /// Symbols available.
        available: usize,
    },
    /// The latency histograms could not be created.
    #[error("cannot create latency histograms: {0}")]
    Histogram(String),
}

/// Current wall-clock time in ns since the Unix epoch (the clock record timestamps use).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The symbols connection `conn` subscribes to: `list[(conn*k + j) % len]` for
/// `j` in `0..k` (empty when the list is).
pub fn assign_symbols(list: &[String], conn: usize, k: usize) -> Vec<String> {
    if list.is_empty() {
        return Vec::new();
    }
    (0..k)
        .filter_map(|j| list.get(conn.wrapping_mul(k).wrapping_add(j) % list.len()))
        .cloned()
        .collect()
}

fn close_code(frame: Option<&CloseFrame>) -> u16 {
    frame.map_or(CLOSE_NO_STATUS, |f| u16::from(f.code))
}

/// Asks the server for its symbol list on a connection of its own.
pub async fn fetch_symbols(url: &str, limit: Duration) -> Result<Vec<SymbolInfo>, BenchError> {
    let exchange = async {
        let (mut ws, _) = connect_async_with_config(url, None, true)
            .await
            .map_err(|e| BenchError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let request = Request::Symbols { id: SYMBOLS_ID }.to_json();
        ws.send(Message::text(request))
            .await
            .map_err(|e| BenchError::Symbols(e.to_string()))?;
        while let Some(msg) = ws.next().await {
            match msg.map_err(|e| BenchError::Symbols(e.to_string()))? {
                Message::Text(text) => match Reply::parse(&text) {
                    Ok(Reply::Symbols { id, symbols }) if id == SYMBOLS_ID => {
                        let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                        return Ok(symbols);
                    }
                    Ok(Reply::Error { code, message, .. }) => {
                        return Err(BenchError::Server { code, message });
                    }
                    _ => {}
                },
                Message::Close(frame) => {
                    return Err(BenchError::Symbols(format!(
                        "server closed the connection with {}",
                        close_code(frame.as_ref())
                    )));
                }
                _ => {}
            }
        }
        Err(BenchError::Symbols(String::from(
            "connection ended before the reply",
        )))
    };
    timeout(limit, exchange)
        .await
        .map_err(|_| BenchError::Symbols(format!("no reply within {limit:?}")))?
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Measure,
    Stop,
}

#[derive(Debug)]
struct Hists {
    recv: Histogram<u64>,
    exch: Histogram<u64>,
}

fn record_us(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

/// State shared by all connections: progress counters and the latency histograms.
#[derive(Debug)]
struct Shared {
    open: AtomicUsize,
    records: AtomicU64,
    gaps: AtomicU64,
    latency: Mutex<Hists>,
}

impl Shared {
    fn new() -> Result<Self, BenchError> {
        let hist = || Histogram::<u64>::new(3).map_err(|e| BenchError::Histogram(e.to_string()));
        Ok(Self {
            open: AtomicUsize::new(0),
            records: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            latency: Mutex::new(Hists {
                recv: hist()?,
                exch: hist()?,
            }),
        })
    }

    fn flush(&self, samples: &mut Vec<(u64, u64)>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for &(recv, exch) in samples.iter() {
            record_us(&mut h.recv, recv);
            record_us(&mut h.exch, exch);
        }
        samples.clear();
    }
}

#[derive(Debug)]
struct Ctx {
    url: String,
    depth: u32,
    connect_timeout: Duration,
    ws_config: WebSocketConfig,
    shared: Shared,
}

/// Counters of one connection (and, merged, of the run).
#[derive(Debug, Default)]
struct Stats {
    records_checked: u64,
    records: u64,
    messages: u64,
    bytes: u64,
    gaps: u64,
    resyncs: u64,
    deltas_before_snapshot: u64,
    decode_errors: u64,
    unknown_kinds: u64,
    server_errors: u64,
    statuses: BTreeMap<u16, u64>,
    errors: Vec<String>,
}

fn note(errors: &mut Vec<String>, message: impl FnOnce() -> String) {
    if errors.len() < MAX_ERRORS {
        errors.push(message());
    }
}

impl Stats {
    fn merge(&mut self, o: Self) {
        self.records_checked += o.records_checked;
        self.records += o.records;
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.gaps += o.gaps;
        self.resyncs += o.resyncs;
        self.deltas_before_snapshot += o.deltas_before_snapshot;
        self.decode_errors += o.decode_errors;
        self.unknown_kinds += o.unknown_kinds;
        self.server_errors += o.server_errors;
        for (code, n) in o.statuses {
            *self.statuses.entry(code).or_default() += n;
        }
        for e in o.errors {
            note(&mut self.errors, || e);
        }
    }
}

/// Per-connection reader: sequence tracker, latency buffer, counters.
#[derive(Debug, Default)]
struct Reader {
    tracker: SeqTracker,
    samples: Vec<(u64, u64)>,
    stats: Stats,
}

impl Reader {
    fn on_binary(&mut self, data: &[u8], measuring: bool, shared: &Shared) {
        let now = realtime_ns();
        let Self {
            tracker,
            samples,
            stats,
        } = self;
        let mut n: u64 = 0;
        let mut gaps: u64 = 0;
        let walked = wire::for_each_record(data, |h, body| {
            n += 1;
            match tracker.observe(h) {
                Ok(Step::Resync { .. }) => stats.resyncs += 1,
                Ok(Step::Status) => {
                    let code = match wire::decode_body(h.kind, h.flags, body) {
                        Ok(Body::Status { code }) => code,
                        _ => 0,
                    };
                    *stats.statuses.entry(code).or_default() += 1;
                }
                Ok(Step::Skipped) => stats.unknown_kinds += 1,
                Ok(_) => {}
                Err(e) => {
                    if matches!(e, SeqError::DeltaBeforeSnapshot { .. }) {
                        stats.deltas_before_snapshot += 1;
                    } else {
                        gaps += 1;
                    }
                    note(&mut stats.errors, || e.to_string());
                }
            }
            if measuring && (h.kind == KIND_DELTA || h.kind == KIND_TRADE) {
                samples.push((
                    now.saturating_sub(h.recv_ts) / 1000,
                    now.saturating_sub(h.exch_ts) / 1000,
                ));
                if samples.len() >= LATENCY_BLOCK {
                    shared.flush(samples);
                }
            }
        });
        if let Err(e) = walked {
            stats.decode_errors += 1;
            note(&mut stats.errors, || format!("undecodable batch: {e}"));
        }
        stats.records_checked += n;
        stats.gaps += gaps;
        if measuring {
            stats.records += n;
            stats.messages += 1;
            stats.bytes += data.len() as u64;
        }
        shared.records.fetch_add(n, Ordering::Relaxed);
        if gaps > 0 {
            shared.gaps.fetch_add(gaps, Ordering::Relaxed);
        }
    }

    fn on_text(&mut self, text: &str) {
        if let Ok(Reply::Error { code, message, .. }) = Reply::parse(text) {
            self.stats.server_errors += 1;
            note(&mut self.stats.errors, || {
                format!("server error {code}: {message}")
            });
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
enum Outcome {
    /// Open until the stop.
    Ok,
    /// Never subscribed.
    Failed { reason: String, close: Option<u16> },
    /// Closed by the server after subscribing.
    Closed(u16),
    /// Lost after subscribing without a close frame.
    Dropped(String),
}

#[derive(Debug)]
struct ConnResult {
    stats: Stats,
    outcome: Outcome,
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed {
        reason,
        close: None,
    }
}

/// Connects and subscribes; data arriving before the reply is checked.
async fn subscribe(ctx: &Ctx, symbols: Vec<String>, reader: &mut Reader) -> Result<Ws, Outcome> {
    let deadline = Instant::now() + ctx.connect_timeout;
    let connecting = connect_async_with_config(ctx.url.as_str(), Some(ctx.ws_config), true);
    let mut ws = match timeout_at(deadline, connecting).await {
        Err(_) => return Err(failed(String::from("connect timed out"))),
        Ok(Err(e)) => return Err(failed(format!("connect: {e}"))),
        Ok(Ok((ws, _))) => ws,
    };
    let request = Request::Subscribe {
        id: SUBSCRIBE_ID,
        symbols,
        channels: Some(vec![Channel::Book, Channel::Trades]),
        depth: Some(ctx.depth),
    };
    match timeout_at(deadline, ws.send(Message::text(request.to_json()))).await {
        Err(_) => return Err(failed(String::from("subscribe send timed out"))),
        Ok(Err(e)) => return Err(failed(format!("subscribe send: {e}"))),
        Ok(Ok(())) => {}
    }
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(failed(String::from("no subscribe reply in time"))),
            Ok(None) => {
                return Err(failed(String::from(
                    "connection ended before the subscribe reply",
                )));
            }
            Ok(Some(Err(e))) => return Err(failed(format!("before the subscribe reply: {e}"))),
            Ok(Some(Ok(Message::Text(text)))) => match Reply::parse(&text) {
                Ok(Reply::Subscribed { id, .. }) if id == SUBSCRIBE_ID => return Ok(ws),
                Ok(Reply::Error { code, message, .. }) => {
                    return Err(failed(format!("subscribe refused: {code}: {message}")));
                }
                _ => {}
            },
            Ok(Some(Ok(Message::Binary(data)))) => reader.on_binary(&data, false, &ctx.shared),
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = close_code(frame.as_ref());
                return Err(Outcome::Failed {
                    reason: format!("closed with {code} before the subscribe reply"),
                    close: Some(code),
                });
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads until the stop or until the server ends the connection.
async fn read_loop(
    mut ws: Ws,
    ctx: &Ctx,
    phase: &mut watch::Receiver<Phase>,
    reader: &mut Reader,
) -> Outcome {
    let mut measuring = *phase.borrow_and_update() == Phase::Measure;
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                match now {
                    Phase::Ramp => {}
                    Phase::Measure => measuring = true,
                    Phase::Stop => {
                        let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                        return Outcome::Ok;
                    }
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => reader.on_binary(&data, measuring, &ctx.shared),
                Some(Ok(Message::Text(text))) => reader.on_text(&text),
                Some(Ok(Message::Close(frame))) => {
                    // Let tungstenite send its close reply before the socket goes.
                    let _ = timeout(CLOSE_GRACE, ws.next()).await;
                    return Outcome::Closed(close_code(frame.as_ref()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Outcome::Dropped(e.to_string()),
                None => return Outcome::Dropped(String::from("connection ended without a close frame")),
            }
        }
    }
}

async fn connection(
    ctx: Arc<Ctx>,
    symbols: Vec<String>,
    mut phase: watch::Receiver<Phase>,
    ready: oneshot::Sender<bool>,
) -> ConnResult {
    let mut reader = Reader::default();
    let outcome = match subscribe(&ctx, symbols, &mut reader).await {
        Err(outcome) => {
            let _ = ready.send(false);
            outcome
        }
        Ok(ws) => {
            ctx.shared.open.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(true);
            let outcome = read_loop(ws, &ctx, &mut phase, &mut reader).await;
            ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
            outcome
        }
    };
    ctx.shared.flush(&mut reader.samples);
    ConnResult {
        stats: reader.stats,
        outcome,
    }
}

async fn progress(ctx: Arc<Ctx>, mut phase: watch::Receiver<Phase>, conns: usize) {
    let start = Instant::now();
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(start + second, second);
    let (mut last_records, mut last_at) = (0u64, start);
    loop {
        tokio::select! {
            now = tick.tick() => {
                let s = &ctx.shared;
                let records = s.records.load(Ordering::Relaxed);
                let secs = now.duration_since(last_at).as_secs_f64();
                let rate = if secs > 0.0 { (records - last_records) as f64 / secs } else { 0.0 };
                (last_records, last_at) = (records, now);
                let label = if *phase.borrow() == Phase::Ramp { "ramp" } else { "run " };
                eprintln!(
                    "[{:>4}s] {label} open {}/{conns}  records/s {rate:.0}  gaps {}",
                    now.duration_since(start).as_secs(),
                    s.open.load(Ordering::Relaxed),
                    s.gaps.load(Ordering::Relaxed),
                );
            }
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() == Phase::Stop {
                    return;
                }
            }
        }
    }
}

fn add_reason(reasons: &mut BTreeMap<String, u64>, reason: String) {
    let key = if reasons.len() < MAX_REASONS || reasons.contains_key(&reason) {
        reason
    } else {
        String::from("(other reasons)")
    };
    *reasons.entry(key).or_default() += 1;
}

/// Runs the bench: fetches the symbol list, ramps `conns` connections at
/// `connect_rate`, measures for `duration`, closes, and reports.
///
/// Errors only when the run cannot take place (invalid configuration, server
/// unreachable, too few symbols); failing connections and broken streams are
/// counted in the [`Report`].
pub async fn run(config: &Config) -> Result<Report, BenchError> {
    config.validate()?;
    let symbols = fetch_symbols(&config.url, config.connect_timeout).await?;
    if symbols.is_empty() {
        return Err(BenchError::NoSymbols);
    }
    if config.symbols_per_conn > symbols.len() {
        return Err(BenchError::TooFewSymbols {
            per_conn: config.symbols_per_conn,
            available: symbols.len(),
        });
    }
    let names: Vec<String> = symbols.into_iter().map(|s| s.symbol).collect();
    let ctx = Arc::new(Ctx {
        url: config.url.clone(),
        depth: config.depth,
        connect_timeout: config.connect_timeout,
        ws_config: WebSocketConfig::default().read_buffer_size(READ_BUFFER),
        shared: Shared::new()?,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let progress_task = config
        .progress
        .then(|| tokio::spawn(progress(ctx.clone(), phase_rx.clone(), config.conns)));

    // Ramp: connection i starts at i / rate seconds.
    let start = Instant::now();
    let rate = u64::from(config.connect_rate);
    let mut tasks = JoinSet::new();
    let mut ready = Vec::with_capacity(config.conns);
    for i in 0..config.conns {
        let at = start + Duration::from_nanos((i as u64).saturating_mul(1_000_000_000) / rate);
        if at > Instant::now() {
            sleep_until(at).await;
        }
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let symbols = assign_symbols(&names, i, config.symbols_per_conn);
        tasks.spawn(connection(ctx.clone(), symbols, phase_rx.clone(), tx));
    }
    let mut subscribed = 0usize;
    for rx in ready {
        if rx.await.unwrap_or(false) {
            subscribed += 1;
        }
    }
    let ramp = start.elapsed();

    // Measure (skipped when no connection could subscribe).
    phase_tx.send_replace(Phase::Measure);
    let window_start = Instant::now();
    if subscribed > 0 {
        sleep(config.duration).await;
    }
    phase_tx.send_replace(Phase::Stop);
    let window = window_start.elapsed();

    let mut results = Vec::with_capacity(config.conns);
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        match timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(r))) => results.push(r),
            Ok(Some(Err(e))) => results.push(ConnResult {
                stats: Stats::default(),
                outcome: Outcome::Dropped(format!("connection task failed: {e}")),
            }),
            Ok(None) => break,
            Err(_) => {
                for _ in 0..tasks.len() {
                    results.push(ConnResult {
                        stats: Stats::default(),
                        outcome: Outcome::Dropped(String::from("did not stop in time")),
                    });
                }
                tasks.abort_all();
                break;
            }
        }
    }
    if let Some(task) = progress_task {
        let _ = task.await;
    }
    Ok(build_report(config, &ctx.shared, results, ramp, window))
}

fn build_report(
    config: &Config,
    shared: &Shared,
    results: Vec<ConnResult>,
    ramp: Duration,
    window: Duration,
) -> Report {
    let mut totals = Stats::default();
    let mut connections = Connections {
        attempted: config.conns as u64,
        ..Connections::default()
    };
    for r in results {
        totals.merge(r.stats);
        match r.outcome {
            Outcome::Ok => connections.ok += 1,
            Outcome::Failed { reason, close } => {
                connections.failed += 1;
                if let Some(code) = close {
                    *connections.closes_by_code.entry(code).or_default() += 1;
                }
                add_reason(&mut connections.failure_reasons, reason);
            }
            Outcome::Closed(code) => {
                *connections.closes_by_code.entry(code).or_default() += 1;
                if code == CLOSE_EVICTED {
                    connections.evicted += 1;
                } else {
                    connections.closed += 1;
                }
            }
            Outcome::Dropped(reason) => {
                connections.dropped += 1;
                add_reason(&mut connections.failure_reasons, reason);
            }
        }
    }
    let latency = {
        let h = shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Latency {
            recv_to_client: Percentiles::from_histogram(&h.recv),
            exch_to_client: Percentiles::from_histogram(&h.exch),
        }
    };
    let secs = window.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Report {
        url: config.url.clone(),
        conns: config.conns,
        symbols_per_conn: config.symbols_per_conn,
        depth: config.depth,
        ramp_secs: ramp.as_secs_f64(),
        duration_secs: secs,
        connections,
        records: totals.records,
        records_per_sec: per_sec(totals.records),
        messages: totals.messages,
        messages_per_sec: per_sec(totals.messages),
        bytes: totals.bytes,
        bytes_per_sec: per_sec(totals.bytes),
        records_checked: totals.records_checked,
        gaps: totals.gaps,
        resyncs: totals.resyncs,
        deltas_before_snapshot: totals.deltas_before_snapshot,
        decode_errors: totals.decode_errors,
        unknown_kinds: totals.unknown_kinds,
        statuses: totals.statuses,
        server_errors: totals.server_errors,
        first_errors: totals.errors,
        latency_us: latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("S{i}")).collect()
    }

    #[test]
    fn symbols_are_assigned_round_robin() {
        let list = names(5);
        assert_eq!(assign_symbols(&list, 0, 2), vec!["S0", "S1"]);
        assert_eq!(assign_symbols(&list, 1, 2), vec!["S2", "S3"]);
        assert_eq!(assign_symbols(&list, 2, 2), vec!["S4", "S0"]);
        assert_eq!(
            assign_symbols(&list, 3, 5),
            vec!["S0", "S1", "S2", "S3", "S4"]
        );
        assert!(assign_symbols(&[], 3, 2).is_empty());
    }

    #[test]
    fn config_validation_names_the_flag() {
        let ok = Config::default();
        assert!(ok.validate().is_ok());
        type Breaker = fn(&mut Config);
        let cases: [(Breaker, &str); 7] = [
            (|c| c.url = String::from("http://x/ws"), "--url"),
            (
                |c| c.url = String::from("ws://127.0.0.1:1/ws?format=json"),
                "format=binary",
            ),
            (|c| c.conns = 0, "--conns"),
            (|c| c.symbols_per_conn = 0, "--symbols-per-conn"),
            (|c| c.depth = 5, "--depth"),
            (|c| c.duration = Duration::ZERO, "--duration"),
            (|c| c.connect_rate = 0, "--connect-rate"),
        ];
        for (break_it, flag) in cases {
            let mut c = Config::default();
            break_it(&mut c);
            let msg = c
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains(flag), "{msg:?} should name {flag}");
        }
    }

    fn batch(records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![1, 0];
        b.extend_from_slice(&(records.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        records.iter().for_each(|r| b.extend_from_slice(r));
        b
    }

    /// A book record with no levels, or a trade, stamped `age_us` ago.
    fn record(kind: u8, sid: u32, seq: u64, age_us: u64) -> Vec<u8> {
        let ts = realtime_ns() - age_us * 1000;
        let len: u16 = if kind == wire::KIND_TRADE { 64 } else { 40 };
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_le_bytes());
        b.push(kind);
        b.push(u8::from(kind == wire::KIND_SNAPSHOT));
        b.extend_from_slice(&sid.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&ts.to_le_bytes());
        b.extend_from_slice(&ts.to_le_bytes());
        b.resize(usize::from(len), 0);
        b
    }

    #[test]
    fn reader_measures_only_inside_the_window() -> Result<(), BenchError> {
        let shared = Shared::new()?;
        let mut reader = Reader::default();
        let early = batch(&[
            record(wire::KIND_SNAPSHOT, 1, 10, 0),
            record(wire::KIND_DELTA, 1, 11, 0),
        ]);
        reader.on_binary(&early, false, &shared);
        let late = batch(&[
            record(wire::KIND_DELTA, 1, 12, 5_000),
            record(wire::KIND_TRADE, 1, 1, 5_000),
            record(wire::KIND_SNAPSHOT, 1, 20, 5_000),
            record(wire::KIND_DELTA, 1, 22, 5_000),
        ]);
        reader.on_binary(&late, true, &shared);
        let s = &reader.stats;
        assert_eq!((s.records_checked, s.records, s.messages), (6, 4, 1));
        assert_eq!(s.bytes, late.len() as u64);
        assert_eq!((s.gaps, s.resyncs), (1, 1));
        assert_eq!(shared.records.load(Ordering::Relaxed), 6);
        assert_eq!(shared.gaps.load(Ordering::Relaxed), 1);
        // Three samples (two deltas, one trade), buffered until flushed.
        assert_eq!(reader.samples.len(), 3);
        shared.flush(&mut reader.samples);
        assert!(reader.samples.is_empty());
        let h = shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert_eq!(h.recv.len(), 3);
        assert!(h.recv.min() >= 5_000 && h.recv.max() < 5_000_000);
        Ok(())
    }

    #[test]
    fn reader_counts_decode_errors_and_server_errors() -> Result<(), BenchError> {
        let shared = Shared::new()?;
        let mut reader = Reader::default();
        reader.on_binary(&[2, 0, 0, 0, 0, 0, 0, 0], true, &shared);
        reader.on_text(r#"{"op":"error","id":9,"code":"rate_limited","message":"slow down"}"#);
        reader.on_text(r#"{"op":"pong","id":4}"#);
        let s = &reader.stats;
        assert_eq!((s.decode_errors, s.server_errors, s.records), (1, 1, 0));
        assert_eq!(s.errors.len(), 2);
        Ok(())
    }

    #[test]
    fn failure_reasons_are_capped() {
        let mut reasons = BTreeMap::new();
        for i in 0..MAX_REASONS + 5 {
            add_reason(&mut reasons, format!("reason {i}"));
        }
        add_reason(&mut reasons, String::from("reason 0"));
        assert_eq!(reasons.len(), MAX_REASONS + 1);
        assert_eq!(reasons.get("reason 0"), Some(&2));
        assert_eq!(reasons.get("(other reasons)"), Some(&5));
    }
}
