//! The `reconnect` scenario (protocol 1.1 resume, issue 11): `movers` clients of `symbols_per_conn`
//! symbols drop their TCP connection (a reset, no close frame) within `spread`, stay away for
//! `away`, and subscribe again, with `resume` (positions from their books) or without (a
//! fresh subscribe: a snapshot per symbol, the snapshot storm). Meanwhile `stayers` clients
//! stay connected and their delivery latency is measured.
//!
//! Figures, each over a window of `window` seconds starting at the storm, against the window
//! of the same length just before it (the same clients connected, at the same feed rate):
//! - bytes the engine wrote (`tickcast_bytes_out_total`), storm minus baseline;
//! - engine CPU (`/proc/PID/stat`, user + system), storm minus baseline, when the pid is known;
//! - time from the storm's start until every mover is live again: its `subscribed` reply
//!   came and it holds a book for every symbol (after a snapshot, or carried over by
//!   `recovered: true`, whose replay comes in the same write as the reply);
//! - p99 of the stayers' delivery latency (now − the record's `recv_ts`) in both windows;
//! - every record checked: sequence rule and book checksums (`book::StreamState`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::book::StreamState;
use crate::control::{Reply, SymbolInfo};
use crate::procstat;
use crate::runner::{fetch_symbols, realtime_ns};
use crate::wire::decode_batch;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The scenario's settings.
#[derive(Debug, Clone)]
pub struct ReconnectConfig {
    /// `ws://host:port/ws` of the target (binary format).
    pub url: String,
    /// The target's pid, for its CPU.
    pub pid: Option<u32>,
    /// Clients that drop and reconnect.
    pub movers: usize,
    /// Clients that stay connected (latency).
    pub stayers: usize,
    /// Symbols per client (client i takes symbols i*K .. i*K+K of the list, wrapping).
    pub symbols_per_conn: usize,
    /// Book depth.
    pub depth: u16,
    /// Reconnect with `resume` (else a fresh subscribe).
    pub resume: bool,
    /// The drops are spread over this long.
    pub spread: Duration,
    /// How long each mover stays away.
    pub away: Duration,
    /// Measured window (storm and baseline).
    pub window: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReconnectReport {
    /// `resume` or `snapshot`.
    pub mode: String,
    /// Movers, stayers, symbols per client, depth.
    pub movers: usize,
    /// Clients that stayed.
    pub stayers: usize,
    /// Symbols per client.
    pub symbols_per_conn: usize,
    /// Book depth.
    pub depth: u16,
    /// Engine bytes written in the storm window minus the baseline window.
    pub extra_bytes: i64,
    /// Engine bytes written in the baseline window.
    pub baseline_bytes: u64,
    /// Engine CPU seconds in the storm window minus the baseline window.
    pub extra_cpu_s: Option<f64>,
    /// Engine CPU seconds in the baseline window.
    pub baseline_cpu_s: Option<f64>,
    /// Seconds from the storm's start until the last mover was live again.
    pub all_live_s: f64,
    /// Median of the movers' times until live (from their own drop).
    pub median_live_s: f64,
    /// Symbols recovered / not recovered (resume mode).
    pub recovered: u64,
    /// Symbols not recovered.
    pub not_recovered: u64,
    /// Snapshots the movers received after reconnecting.
    pub snapshots: u64,
    /// What the movers' catch-up cost on the wire, beyond the live stream: the `subscribed`
    /// reply, the snapshots, and the replayed records (those the ingester received before
    /// the client sent its subscribe), in bytes of binary records.
    pub catchup_bytes: u64,
    /// Stayers' p99 delivery latency, baseline and storm windows, ms.
    pub stayers_p99_ms: (f64, f64),
    /// Sequence errors and checksum mismatches seen by any client.
    pub errors: u64,
    /// Checksums verified.
    pub checksums: u64,
}

/// Shared between the clients and the controller.
struct Shared {
    /// Set once: when the storm starts.
    storm: watch::Receiver<Option<Instant>>,
    /// Movers that hold a book for every symbol (before the storm) / again after it.
    live: AtomicU64,
    relive: AtomicU64,
    /// Movers' times until live again (from their drop), and when the last one was.
    live_times: Mutex<Vec<f64>>,
    last_live: Mutex<Option<Instant>>,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    snapshots: AtomicU64,
    catchup_bytes: AtomicU64,
    errors: AtomicU64,
    checksums: AtomicU64,
    /// Stayers' latency (µs), current window.
    latency: Mutex<Histogram<u64>>,
}

fn histogram() -> Result<Histogram<u64>, String> {
    crate::hist::new_us().map_err(|e| e.to_string())
}

/// Runs the scenario once.
///
/// # Errors
/// A message when the target cannot be reached or clients cannot subscribe.
pub async fn run(cfg: &ReconnectConfig) -> Result<ReconnectReport, String> {
    let symbols = fetch_symbols(&cfg.url, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    if symbols.is_empty() {
        return Err("the server lists no symbols".into());
    }
    let (storm_tx, storm_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        storm: storm_rx,
        live: AtomicU64::new(0),
        relive: AtomicU64::new(0),
        live_times: Mutex::new(Vec::new()),
        last_live: Mutex::new(None),
        recovered: AtomicU64::new(0),
        not_recovered: AtomicU64::new(0),
        snapshots: AtomicU64::new(0),
        catchup_bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        checksums: AtomicU64::new(0),
        latency: Mutex::new(histogram()?),
    });
    let total = cfg.movers + cfg.stayers;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let k = cfg.symbols_per_conn.min(symbols.len());
        let mine: Vec<SymbolInfo> = (0..k)
            .map(|j| symbols[(i * k + j) % symbols.len()].clone())
            .collect();
        let mover = i < cfg.movers;
        // The drops are spread evenly over `spread`.
        let offset = cfg.spread.mul_f64(i as f64 / cfg.movers.max(1) as f64);
        let (cfg, shared) = (cfg.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            client(&cfg, mine, mover, offset, &shared).await
        }));
        if i % 50 == 49 {
            sleep(Duration::from_millis(20)).await;
        }
    }
    // Every mover live, then settle.
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.live.load(Ordering::Relaxed) < cfg.movers as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} movers got their books",
                shared.live.load(Ordering::Relaxed),
                cfg.movers
            ));
        }
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_secs(2)).await;
    let addr = target_addr(&cfg.url)?;
    // Baseline window.
    *shared.latency.lock().await = histogram()?;
    let (b0, c0) = (bytes_out(addr).await, cpu(cfg.pid));
    sleep(cfg.window).await;
    let (b1, c1) = (bytes_out(addr).await, cpu(cfg.pid));
    let base_p99 = p99_ms(&*shared.latency.lock().await);
    *shared.latency.lock().await = histogram()?;
    // The storm.
    let start = Instant::now();
    let _ = storm_tx.send(Some(start));
    sleep(cfg.window).await;
    let (b2, c2) = (bytes_out(addr).await, cpu(cfg.pid));
    let storm_p99 = p99_ms(&*shared.latency.lock().await);
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.relive.load(Ordering::Relaxed) < cfg.movers as u64 && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    let relive = shared.relive.load(Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    if relive < cfg.movers as u64 {
        return Err(format!(
            "only {relive} of {} movers were live again",
            cfg.movers
        ));
    }
    let mut times = shared.live_times.lock().await.clone();
    times.sort_by(f64::total_cmp);
    let last = shared.last_live.lock().await.unwrap_or(start);
    let base_bytes = b1.saturating_sub(b0);
    Ok(ReconnectReport {
        mode: if cfg.resume { "resume" } else { "snapshot" }.into(),
        movers: cfg.movers,
        stayers: cfg.stayers,
        symbols_per_conn: cfg.symbols_per_conn,
        depth: cfg.depth,
        extra_bytes: b2.saturating_sub(b1) as i64 - base_bytes as i64,
        baseline_bytes: base_bytes,
        extra_cpu_s: match (c0, c1, c2) {
            (Some(a), Some(b), Some(c)) => Some((c - b) - (b - a)),
            _ => None,
        },
        baseline_cpu_s: c0.zip(c1).map(|(a, b)| b - a),
        all_live_s: last.saturating_duration_since(start).as_secs_f64(),
        median_live_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
        recovered: shared.recovered.load(Ordering::Relaxed),
        not_recovered: shared.not_recovered.load(Ordering::Relaxed),
        snapshots: shared.snapshots.load(Ordering::Relaxed),
        catchup_bytes: shared.catchup_bytes.load(Ordering::Relaxed),
        stayers_p99_ms: (base_p99, storm_p99),
        errors: shared.errors.load(Ordering::Relaxed),
        checksums: shared.checksums.load(Ordering::Relaxed),
    })
}

/// One report line.
pub fn line(r: &ReconnectReport) -> String {
    format!(
        "{mode:8} movers={m} stayers={s} symbols/conn={k} depth={d}: catch-up bytes {cb:.3} MB, \
         engine extra bytes {eb:.2} MB (baseline {bb:.2} MB/window), extra engine CPU {cpu} (baseline {bcpu}), \
         all live in {live:.3} s \
         (median {med:.3} s), recovered {rec}/{tot} symbols, snapshots {snap}, stayers p99 \
         {p0:.2} ms -> {p1:.2} ms, errors {err}, checksums verified {ck}",
        mode = r.mode,
        m = r.movers,
        s = r.stayers,
        k = r.symbols_per_conn,
        d = r.depth,
        cb = r.catchup_bytes as f64 / 1e6,
        eb = r.extra_bytes as f64 / 1e6,
        bb = r.baseline_bytes as f64 / 1e6,
        cpu = r
            .extra_cpu_s
            .map_or_else(|| "n/a".into(), |c| format!("{c:.3} s")),
        bcpu = r
            .baseline_cpu_s
            .map_or_else(|| "n/a".into(), |c| format!("{c:.2} s")),
        live = r.all_live_s,
        med = r.median_live_s,
        rec = r.recovered,
        tot = r.recovered + r.not_recovered,
        snap = r.snapshots,
        p0 = r.stayers_p99_ms.0,
        p1 = r.stayers_p99_ms.1,
        err = r.errors,
        ck = r.checksums,
    )
}

fn p99_ms(h: &Histogram<u64>) -> f64 {
    h.value_at_quantile(0.99) as f64 / 1000.0
}

fn target_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .map_err(|e| format!("{authority}: {e} (use an IP address)"))
}

async fn bytes_out(addr: SocketAddr) -> u64 {
    procstat::http_get(addr, "/metrics", Duration::from_secs(3))
        .await
        .map(|(_, body)| procstat::parse_metrics(&body))
        .and_then(|m| m.get("tickcast_bytes_out_total").copied())
        .unwrap_or(0.0) as u64
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    let s = procstat::sample(pid?)?;
    Some((s.utime + s.stime) as f64 / 100.0)
}

async fn connect(url: &str) -> Result<Ws, String> {
    let (ws, _) = connect_async_with_config(url, None, true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Sends a subscribe and reads until its reply, applying the records that come before it;
/// returns the reply's epoch and symbols.
async fn subscribe(
    ws: &mut Ws,
    id: u64,
    names: &[String],
    depth: u16,
    resume: Option<Value>,
    state: &mut StreamState,
    shared: &Shared,
) -> Result<(Option<String>, Vec<SymbolInfo>), String> {
    // Any subscribe but the first is a mover's reconnect.
    let since = (id > 1).then(realtime_ns);
    let mut req = json!({"op":"subscribe","id":id,"symbols":names,"depth":depth});
    if let Some(r) = resume {
        req["resume"] = r;
    }
    ws.send(Message::text(req.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let msg = timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no subscribe reply".to_owned())?
            .ok_or("closed before the reply")?
            .map_err(|e| e.to_string())?;
        match msg {
            Message::Text(t) => match Reply::parse(&t) {
                Ok(Reply::Subscribed {
                    id: got,
                    epoch,
                    symbols,
                }) if got == id => {
                    if since.is_some() {
                        shared
                            .catchup_bytes
                            .fetch_add(t.len() as u64, Ordering::Relaxed);
                    }
                    return Ok((epoch, symbols));
                }
                Ok(Reply::Error { code, message, .. }) => {
                    return Err(format!("{code}: {message}"));
                }
                _ => {}
            },
            Message::Binary(b) => apply(&b, state, shared, false, since).await,
            _ => {}
        }
    }
}

/// Applies a binary batch; stayers record their latency.
/// The size of a binary record on the wire.
fn record_len(r: &crate::wire::Record) -> u64 {
    use crate::wire::Body;
    32 + match &r.body {
        Body::Book { bids, asks, .. } => 8 + 16 * (bids.len() + asks.len()) as u64,
        Body::Trade { .. } => 32,
        _ => 8,
    }
}

/// Applies a binary batch; stayers record their latency. `since`: a mover after its
/// reconnect, which sent its subscribe at this realtime: its snapshots, and the records the
/// ingester received before then (its replay), are counted as catch-up.
async fn apply(
    data: &[u8],
    state: &mut StreamState,
    shared: &Shared,
    stayer: bool,
    since: Option<u64>,
) {
    let Ok(recs) = decode_batch(data) else {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = realtime_ns();
    let mut lat = if stayer {
        Some(shared.latency.lock().await)
    } else {
        None
    };
    for r in &recs {
        if let Some(since) = since {
            let replayed = matches!(r.header.kind, 2 | 3) && r.header.recv_ts < since;
            if r.header.kind == 1 {
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            if r.header.kind == 1 || replayed {
                shared
                    .catchup_bytes
                    .fetch_add(record_len(r), Ordering::Relaxed);
            }
        }
        if state.apply(r).is_err() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(h) = lat.as_mut() {
            let _ = h.record(now.saturating_sub(r.header.recv_ts).max(1000) / 1000);
        }
    }
}

/// The `resume` object for the client's books and trades.
fn positions(state: &StreamState, epoch: &str, mine: &[SymbolInfo]) -> Value {
    let mut streams = serde_json::Map::new();
    for s in mine {
        let mut pos = serde_json::Map::new();
        if let Some(seq) = state.book_seq(s.sid) {
            pos.insert("book".into(), seq.into());
        }
        if let Some(seq) = state.trade_seq(s.sid) {
            pos.insert("trades".into(), seq.into());
        }
        if !pos.is_empty() {
            streams.insert(s.symbol.clone(), Value::Object(pos));
        }
    }
    json!({"epoch": epoch, "streams": streams})
}

fn has_books(state: &StreamState, mine: &[SymbolInfo]) -> bool {
    mine.iter().all(|s| state.book(s.sid).is_some())
}

/// One client's life: subscribe, read; a mover drops at the storm + `offset`, stays away,
/// subscribes again and reads on.
async fn client(
    cfg: &ReconnectConfig,
    mine: Vec<SymbolInfo>,
    mover: bool,
    offset: Duration,
    shared: &Shared,
) -> Result<(), String> {
    let names: Vec<String> = mine.iter().map(|s| s.symbol.clone()).collect();
    let mut state = StreamState::new();
    let mut ws = connect(&cfg.url).await?;
    let (epoch, _) = subscribe(&mut ws, 1, &names, cfg.depth, None, &mut state, shared).await?;
    let epoch = epoch.unwrap_or_default();
    let mut storm = shared.storm.clone();
    let mut counted = false;
    // Until the drop (forever for a stayer).
    let drop_at = loop {
        if !counted && mover && has_books(&state, &mine) {
            counted = true;
            shared.live.fetch_add(1, Ordering::Relaxed);
        }
        let start = *storm.borrow();
        if let (true, Some(start)) = (mover, start) {
            let at = start + offset;
            tokio::select! {
                () = sleep_until(at) => break at,
                msg = ws.next() => match msg {
                    Some(Ok(Message::Binary(b))) => apply(&b, &mut state, shared, false, None).await,
                    Some(Ok(_)) => {}
                    _ => return Err("connection lost".into()),
                },
            }
        } else {
            tokio::select! {
                _ = storm.changed() => {}
                msg = ws.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        apply(&b, &mut state, shared, !mover, None).await;
                    }
                    Some(Ok(_)) => {}
                    _ => return Err("connection lost".into()),
                },
            }
        }
    };
    // A reset: no close frame.
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        #[allow(deprecated)] // `set_linger` is what makes a reset; nothing replaces it yet
        let _ = s.set_linger(Some(Duration::ZERO));
    }
    drop(ws);
    sleep(cfg.away).await;
    let mut ws = connect(&cfg.url).await?;
    let since = Some(realtime_ns());
    let resume = if cfg.resume {
        Some(positions(&state, &epoch, &mine))
    } else {
        state = StreamState::new();
        None
    };
    let (_, symbols) = subscribe(&mut ws, 2, &names, cfg.depth, resume, &mut state, shared).await?;
    for s in &symbols {
        match s.recovered {
            Some(true) => {
                shared.recovered.fetch_add(1, Ordering::Relaxed);
            }
            Some(false) => {
                shared.not_recovered.fetch_add(1, Ordering::Relaxed);
                state.forget(s.sid);
            }
            None => {}
        }
    }
    // Live: every book held and one data message after the reply (a recovered client's books
    // are carried over; its replay comes in the first message after the reply).
    let mut data_seen = false;
    loop {
        if data_seen && has_books(&state, &mine) {
            let now = Instant::now();
            shared
                .live_times
                .lock()
                .await
                .push(now.saturating_duration_since(drop_at).as_secs_f64());
            let mut last = shared.last_live.lock().await;
            *last = Some(last.map_or(now, |l| l.max(now)));
            shared.relive.fetch_add(1, Ordering::Relaxed);
            break;
        }
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                apply(&b, &mut state, shared, false, since).await;
                data_seen = true;
            }
            Some(Ok(_)) => {}
            _ => return Err("connection lost after the reconnect".into()),
        }
    }
    shared
        .checksums
        .fetch_add(state.checksums(), Ordering::Relaxed);
    // Keep reading (and checking) until aborted.
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Binary(b) = msg {
            apply(&b, &mut state, shared, false, since).await;
        }
    }
    Ok(())
}
