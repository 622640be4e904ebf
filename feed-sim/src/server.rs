//! The network side: one TCP listener serving `/feed` (WebSocket), `/book/SYMBOL` and
//! `/healthz`, a generator thread pacing the [`Exchange`], and one thread per connection.
//!
//! Consistency between snapshots and the live stream: the generator steps the exchange and
//! hands the resulting batch to every registered client while holding the core lock; a new
//! client is registered, and its snapshots are taken, under that same lock. A client therefore
//! gets exactly the updates after its snapshots, none missed, none twice. Snapshot requests
//! from a client are served the same way, through the client's own queue.
//!
//! Faults: the generator passes each step's messages through the fault [`Injector`] before they
//! join the batch, and drives the periodic faults (disconnect, stall) and the heartbeats; the
//! connection threads carry the periodic faults out (see `faults.rs`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;
use serde::Deserialize;
use tracing::{debug, error, info, warn};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use crate::config::{Burst, SimConfig, SimError};
use crate::exchange::Exchange;
use crate::faults::{FaultCounts, Injector};
use crate::http::{self, HeadError, Request};
use crate::pregen::Pregen;

/// Batches a feed client may have queued before it is disconnected.
const CLIENT_QUEUE_BATCHES: usize = 16_384;
/// Bytes a feed client may have queued before it is disconnected (at least twice its
/// initial snapshots).
const CLIENT_QUEUE_BYTES: usize = 64 << 20;
/// Most concurrent connections; further ones are refused.
const MAX_CONNECTIONS: usize = 256;
/// Pacing tick of the generator.
const TICK: Duration = Duration::from_millis(1);
/// How long idle threads sleep between checks of the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// Grace period for a feed client to complete the close handshake on shutdown.
const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// Largest message a feed client may send.
const MAX_CLIENT_MESSAGE: usize = 64 << 10;

/// Nanoseconds since the Unix epoch (realtime clock).
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A registered feed client, as seen by the generator.
#[derive(Debug)]
struct FeedClient {
    id: u64,
    peer: SocketAddr,
    tx: Sender<Bytes>,
    /// Queue accounting shared with the client's thread.
    queue: Arc<QueueState>,
    /// Eviction bound on `queue.bytes`.
    limit: usize,
}

impl FeedClient {
    /// Enqueues a batch; `false` when the client must be dropped (overflow or gone).
    fn offer(&self, batch: Bytes) -> bool {
        let len = batch.len();
        if self.queue.bytes.load(Ordering::Relaxed) + len > self.limit {
            warn!(client = self.id, peer = %self.peer, "feed client queue over {} bytes; disconnecting", self.limit);
            self.queue.evicted.store(true, Ordering::Release);
            return false;
        }
        self.queue.bytes.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                warn!(client = self.id, peer = %self.peer, "feed client queue full ({CLIENT_QUEUE_BATCHES} batches); disconnecting");
                self.queue.evicted.store(true, Ordering::Release);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                debug!(client = self.id, "feed client gone");
                false
            }
        }
    }
}

/// Accounting of one client's queue, shared by the generator and the client's thread.
#[derive(Debug, Default)]
struct QueueState {
    /// Bytes enqueued and not yet taken by the client's thread.
    bytes: AtomicUsize,
    /// Set when the generator dropped the client for overflowing.
    evicted: AtomicBool,
}

/// State behind the core lock: the exchange, the fault injector and the clients receiving the
/// stream.
#[derive(Debug)]
struct Core {
    exchange: Exchange,
    clients: Vec<FeedClient>,
    injector: Injector,
}

impl Core {
    /// Hands a live batch (already faulted) to every client, dropping those that overflow;
    /// returns how many were evicted for overflowing.
    fn broadcast(&mut self, batch: Bytes) -> u64 {
        if batch.is_empty() {
            return 0;
        }
        let mut evicted = 0;
        self.clients.retain(|c| {
            let kept = c.offer(batch.clone());
            if !kept && c.queue.evicted.load(Ordering::Acquire) {
                evicted += 1;
            }
            kept
        });
        evicted
    }
}

/// Everything the threads share.
#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    stop: AtomicBool,
    updates_sent: AtomicU64,
    done: AtomicBool,
    open_connections: AtomicUsize,
    next_client_id: AtomicU64,
    connections: Mutex<Vec<JoinHandle<()>>>,
    /// When the simulator started; periodic faults and bursts count from here.
    started: Instant,
    /// Bumped by the disconnect fault: every feed connection opened before drops.
    disconnect_epoch: AtomicU64,
    /// End of the current stall, in ms since `started` (0: no stall yet).
    stall_until_ms: AtomicU64,
    /// Feed clients disconnected as slow consumers (queue or schedule backlog over the bound).
    evictions: AtomicU64,
    /// The pre-generated stream and how to send it (`SimConfig::pregen`).
    pregen: Option<PregenPlan>,
}

/// A pre-generated stream and its pace.
#[derive(Debug)]
struct PregenPlan {
    stream: Pregen,
    rate: f64,
    unpaced: bool,
    heartbeat: Option<Duration>,
}

impl Shared {
    /// Counts `n` slow-consumer evictions.
    fn evicted(&self, n: u64) {
        if n > 0 {
            self.evictions.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Shared {
    /// True while the stall fault keeps feed connections silent.
    fn stalled(&self) -> bool {
        let until = self.stall_until_ms.load(Ordering::Acquire);
        until > 0 && (self.started.elapsed().as_millis() as u64) < until
    }
}

/// What the generator thread does, from the configuration.
#[derive(Debug, Clone)]
struct Plan {
    rate: f64,
    limit: Option<u64>,
    burst: Option<Burst>,
    heartbeat: Option<Duration>,
    disconnect: Option<Duration>,
    /// Period and length of stalls.
    stall: Option<(Duration, Duration)>,
}

impl Plan {
    /// Updates due `t` seconds after the start at the configured (bursty) rate.
    fn cumulative(&self, t: f64) -> f64 {
        let extra = self
            .burst
            .map_or(0.0, |b| (b.factor - 1.0) * b.burst_seconds(t));
        self.rate * (t + extra)
    }

    /// The rate at `t` seconds after the start.
    fn rate_at(&self, t: f64) -> f64 {
        match self.burst {
            Some(b) if b.active(t) => self.rate * b.factor,
            _ => self.rate,
        }
    }

    /// The highest rate of the run.
    fn peak_rate(&self) -> f64 {
        self.rate * self.burst.map_or(1.0, |b| b.factor)
    }
}

/// A running simulated exchange. Dropping it (or [`shutdown`](Self::shutdown)) stops
/// accepting, closes feed clients with 1001 and joins every thread.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Dropped to wake the generator and the acceptor at shutdown.
    stop_tx: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Validates `cfg`, builds the exchange, binds the listener (port 0 allowed), spawns the
    /// acceptor and generator threads and returns at once.
    pub fn start(cfg: SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let listener = bind(cfg.listen).map_err(|source| SimError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let mut exchange = Exchange::new(cfg.symbols, cfg.depth, cfg.seed);
        let pregen = match (cfg.pregen, cfg.updates) {
            (true, Some(n)) => {
                let began = Instant::now();
                let stream = Pregen::build(&mut exchange, n, cfg.rate, now_ns());
                info!(
                    updates = n,
                    mib = stream.bytes.len() >> 20,
                    secs = began.elapsed().as_secs_f64(),
                    "stream pre-generated"
                );
                Some(PregenPlan {
                    stream,
                    rate: cfg.rate,
                    unpaced: cfg.unpaced,
                    heartbeat: cfg.heartbeat,
                })
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                exchange,
                clients: Vec::new(),
                injector: Injector::new(cfg.faults.clone(), cfg.seed),
            }),
            stop: AtomicBool::new(false),
            updates_sent: AtomicU64::new(0),
            done: AtomicBool::new(false),
            open_connections: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            connections: Mutex::new(Vec::new()),
            started: Instant::now(),
            disconnect_epoch: AtomicU64::new(0),
            stall_until_ms: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            pregen,
        });
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut sim = Self {
            shared: Arc::clone(&shared),
            local_addr,
            stop_tx: Some(stop_tx),
            threads: Vec::new(),
        };
        let gen_shared = Arc::clone(&shared);
        let gen_stop = stop_rx.clone();
        let plan = Plan {
            rate: cfg.rate,
            limit: cfg.updates,
            burst: cfg.burst,
            heartbeat: cfg.heartbeat,
            disconnect: cfg.faults.disconnect_every(),
            stall: cfg.faults.stall_every().zip(cfg.faults.stall_length()),
        };
        // On error `sim` is dropped, which stops and joins whatever was already spawned.
        // A pre-generated stream has no generator: each connection sends it.
        if !cfg.pregen {
            sim.threads.push(
                thread::Builder::new()
                    .name("feed-sim-gen".into())
                    .spawn(move || generate(&gen_shared, &plan, &gen_stop))?,
            );
        }
        sim.threads.push(
            thread::Builder::new()
                .name("feed-sim-accept".into())
                .spawn(move || accept_loop(&shared, &listener, &stop_rx))?,
        );
        info!(
            addr = %local_addr,
            symbols = cfg.symbols,
            depth = cfg.depth,
            seed = cfg.seed,
            rate = cfg.rate,
            updates = ?cfg.updates,
            faults = %cfg.faults,
            burst = ?cfg.burst,
            "feed-sim listening"
        );
        Ok(sim)
    }

    /// The bound address (with the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://ADDR/feed`, with a loopback address when listening on an unspecified one.
    pub fn feed_url(&self) -> String {
        format!("ws://{}/feed", connectable(self.local_addr))
    }

    /// l2updates generated so far (with a pre-generated stream: the most any connection was
    /// sent).
    pub fn updates_sent(&self) -> u64 {
        self.shared.updates_sent.load(Ordering::Acquire)
    }

    /// True once the `updates` limit was reached: books are frozen, serving goes on. With a
    /// pre-generated stream: once a connection was sent all of it.
    pub fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Feed clients disconnected as slow consumers so far (close code 1013): their queue
    /// passed its bound, or, with a pre-generated stream, they fell that far behind its
    /// schedule. Also served as `evictions` by `GET /stats`.
    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }

    /// How many faults were injected so far.
    pub fn fault_counts(&self) -> FaultCounts {
        self.shared.core.lock().injector.counts
    }

    /// Stops accepting, closes feed clients (1001) and joins every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if self.stop_tx.is_none() {
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        drop(self.stop_tx.take());
        for h in self.threads.drain(..) {
            if h.join().is_err() {
                error!("feed-sim thread panicked");
            }
        }
        // The acceptor is joined: no connection thread is added any more.
        let conns = std::mem::take(&mut *self.shared.connections.lock());
        for h in conns {
            if h.join().is_err() {
                error!("feed-sim connection thread panicked");
            }
        }
        self.shared.core.lock().clients.clear();
        info!(addr = %self.local_addr, "feed-sim stopped");
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// An address a local client can connect to for a listener bound to `addr`.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Binds a listener with `SO_REUSEADDR`, so that a restarted simulator can take its port back
/// at once (connections of the previous one may linger in `TIME_WAIT`).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// The next time a periodic event is due after `at`: one period later, or one period from
/// `now` when the thread fell more than a period behind (no catch-up storm).
fn next_period(at: Instant, period: Duration, now: Instant) -> Instant {
    let next = at + period;
    if next <= now { now + period } else { next }
}

/// The generator: l2updates at the planned (bursty) rate in small batches until `limit` or
/// stop, faulted by the injector; heartbeats of quiet symbols; the periodic faults.
fn generate(shared: &Shared, plan: &Plan, stop_rx: &Receiver<()>) {
    // At most 50 ms worth of updates per batch; further behind than 1 s, re-anchor the pace
    // rather than burst to catch up.
    let max_batch = ((plan.peak_rate() * 0.05).ceil() as u64).max(1);
    let start = shared.started;
    let (mut anchor_t, mut anchor_count) = (0.0f64, 0u64);
    let mut produced = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::with_capacity(1024);
    let symbols = shared.core.lock().exchange.symbols().len();
    // Heartbeat round in which each symbol last had an update.
    let mut last_round = vec![u64::MAX; symbols];
    let mut round = 0u64;
    let mut next_heartbeat = plan.heartbeat.map(|h| start + h);
    let mut next_disconnect = plan.disconnect.map(|p| start + p);
    let mut next_stall = plan.stall.map(|(p, _)| start + p);
    let mut done = false;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let t = now.duration_since(start).as_secs_f64();
        let remaining = plan.limit.map(|n| n.saturating_sub(produced));
        if !done && remaining == Some(0) {
            done = true;
            let mut core = shared.core.lock();
            core.injector.flush(&mut buf);
            let evicted = core.broadcast(Bytes::from(std::mem::take(&mut buf)));
            drop(core);
            shared.evicted(evicted);
            shared.done.store(true, Ordering::Release);
            info!(
                updates = produced,
                "update limit reached; books frozen, still serving"
            );
        }
        let mut next_update = None;
        if !done {
            if let (Some(at), Some(period)) = (next_disconnect, plan.disconnect) {
                if now >= at {
                    shared.disconnect_epoch.fetch_add(1, Ordering::AcqRel);
                    shared.core.lock().injector.counts.disconnects += 1;
                    info!("fault: dropping every feed connection");
                    next_disconnect = Some(next_period(at, period, now));
                }
            }
            if let (Some(at), Some((period, length))) = (next_stall, plan.stall) {
                if now >= at {
                    let until = (now + length).duration_since(start).as_millis() as u64;
                    shared.stall_until_ms.store(until.max(1), Ordering::Release);
                    shared.core.lock().injector.counts.stalls += 1;
                    info!(for_ms = length.as_millis() as u64, "fault: feed stalls");
                    next_stall = Some(next_period(at, period, now));
                }
            }
            let due_f = anchor_count as f64 + plan.cumulative(t) - plan.cumulative(anchor_t);
            let mut n = (due_f as u64).saturating_sub(produced);
            if n > max_batch {
                if n > max_batch.saturating_mul(20) {
                    debug!(
                        behind = n,
                        "generator behind schedule; re-anchoring the pace"
                    );
                    (anchor_t, anchor_count) = (t, produced);
                }
                n = max_batch;
            }
            if let Some(r) = remaining {
                n = n.min(r);
            }
            if n > 0 {
                buf.reserve(n as usize * 192);
                let mut core = shared.core.lock();
                let Core {
                    exchange, injector, ..
                } = &mut *core;
                for _ in 0..n {
                    let info = if injector.passes_through() {
                        exchange.step(now_ns(), &mut buf)
                    } else {
                        scratch.clear();
                        let info = exchange.step(now_ns(), &mut scratch);
                        injector.on_step(info.symbol_index, &scratch, &mut buf);
                        info
                    };
                    if let Some(r) = last_round.get_mut(info.symbol_index) {
                        *r = round;
                    }
                }
                let evicted = core.broadcast(Bytes::from(std::mem::take(&mut buf)));
                drop(core);
                shared.evicted(evicted);
                produced += n;
                shared.updates_sent.store(produced, Ordering::Release);
            }
            let missing = (produced + 1) as f64 - due_f;
            let secs = (missing / plan.rate_at(t)).clamp(0.0, 1.0);
            next_update = Some(now + Duration::from_secs_f64(secs));
        }
        if let (Some(at), Some(interval)) = (next_heartbeat, plan.heartbeat) {
            if now >= at {
                let mut core = shared.core.lock();
                let Core {
                    exchange, injector, ..
                } = &mut *core;
                let ts = now_ns();
                for (i, last) in last_round.iter().enumerate() {
                    if *last != round {
                        injector.flush_symbol(i, &mut buf);
                        exchange.heartbeat_json(i, ts, &mut buf);
                    }
                }
                let evicted = core.broadcast(Bytes::from(std::mem::take(&mut buf)));
                drop(core);
                shared.evicted(evicted);
                round += 1;
                next_heartbeat = Some(next_period(at, interval, now));
            }
        }
        let mut wake = next_update.unwrap_or(now + Duration::from_secs(1));
        for at in [next_heartbeat, next_disconnect, next_stall]
            .into_iter()
            .flatten()
        {
            wake = wake.min(at);
        }
        let wait = wake
            .saturating_duration_since(Instant::now())
            .clamp(TICK, Duration::from_secs(1));
        match stop_rx.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Accepts connections until stop; one thread per connection.
fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, stop_rx: &Receiver<()>) {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => spawn_connection(shared, stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match stop_rx.recv_timeout(IDLE_POLL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accept failed");
                if !matches!(
                    stop_rx.recv_timeout(Duration::from_millis(50)),
                    Err(RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            }
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    if shared.open_connections.load(Ordering::Acquire) >= MAX_CONNECTIONS {
        warn!(%peer, "too many connections ({MAX_CONNECTIONS}); refusing");
        return;
    }
    shared.open_connections.fetch_add(1, Ordering::AcqRel);
    let conn_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("feed-sim-conn".into())
        .spawn(move || {
            handle_connection(&conn_shared, stream, peer);
            conn_shared.open_connections.fetch_sub(1, Ordering::AcqRel);
        });
    match spawned {
        Ok(h) => {
            let mut conns = shared.connections.lock();
            conns.retain(|h| !h.is_finished());
            conns.push(h);
        }
        Err(e) => {
            shared.open_connections.fetch_sub(1, Ordering::AcqRel);
            warn!(%peer, error = %e, "cannot spawn a connection thread; dropping the connection");
        }
    }
}

fn handle_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(100))))
        .and_then(|()| stream.set_write_timeout(Some(http::HEAD_TIMEOUT)));
    if let Err(e) = setup {
        debug!(%peer, error = %e, "socket setup failed");
        return;
    }
    let req = match http::read_request(&mut stream, &shared.stop) {
        Ok(r) => r,
        Err(e @ (HeadError::TooLarge | HeadError::Malformed(_))) => {
            debug!(%peer, error = %e, "bad request");
            let (status, reason) = match e {
                HeadError::TooLarge => (431, "Request Header Fields Too Large"),
                _ => (400, "Bad Request"),
            };
            let r = http::respond_text(&mut stream, status, reason, &[], &format!("{e}\n"));
            finish(&mut stream, r);
            return;
        }
        Err(e) => {
            debug!(%peer, error = %e, "no request");
            return;
        }
    };
    debug!(%peer, method = %req.method, path = %req.path, "request");
    if req.method != "GET" {
        let r = http::respond_text(
            &mut stream,
            405,
            "Method Not Allowed",
            &[("Allow", "GET")],
            "only GET is supported\n",
        );
        finish(&mut stream, r);
        return;
    }
    let path = req.path.as_str();
    if path == "/feed" {
        serve_feed(shared, stream, peer, req);
    } else if path == "/stats" {
        let body = format!(
            "{{\"updates_sent\":{},\"evictions\":{},\"done\":{},\"connections\":{}}}",
            shared.updates_sent.load(Ordering::Acquire),
            shared.evictions.load(Ordering::Relaxed),
            shared.done.load(Ordering::Acquire),
            shared.open_connections.load(Ordering::Acquire),
        );
        let r = http::respond(
            &mut stream,
            200,
            "OK",
            "application/json",
            &[],
            body.as_bytes(),
        );
        finish(&mut stream, r);
    } else if path == "/healthz" {
        let r = http::respond_text(&mut stream, 200, "OK", &[], "ok\n");
        finish(&mut stream, r);
    } else if let Some(symbol) = path.strip_prefix("/book/") {
        let body = shared.core.lock().exchange.book_json(symbol);
        let r = match body {
            Some(body) => http::respond(
                &mut stream,
                200,
                "OK",
                "application/json",
                &[],
                body.as_bytes(),
            ),
            None => http::respond_text(&mut stream, 404, "Not Found", &[], "unknown symbol\n"),
        };
        finish(&mut stream, r);
    } else {
        let r = http::respond_text(&mut stream, 404, "Not Found", &[], "not found\n");
        finish(&mut stream, r);
    }
}

/// Ends a plain HTTP exchange: logs a write error, half-closes so the response is delivered.
fn finish(stream: &mut TcpStream, written: io::Result<()>) {
    match written {
        Ok(()) => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        Err(e) => debug!(error = %e, "writing the response failed"),
    }
}

/// Largest single write of the pre-generated stream.
const PREGEN_WRITE: usize = 1 << 20;

/// Serves the pre-generated stream to one feed connection: the initial snapshots and the whole
/// stream at the planned rate (or as fast as the socket takes), with plain socket writes of
/// whole frames; then a heartbeat of every symbol each interval.
///
/// Client frames are read (and pongs or the close reply written) by tungstenite, but only
/// while the stream's writes stand at a frame boundary, so that its frames never land inside
/// one of ours. A client that falls more than `CLIENT_QUEUE_BYTES` behind the schedule is a
/// slow consumer: closed with 1013 and counted, as the live generator's queue bound does.
fn serve_pregen(
    shared: &Shared,
    plan: &PregenPlan,
    stream: TcpStream,
    peer: SocketAddr,
    req: Request,
    id: u64,
) -> SessionEnd {
    let p = &plan.stream;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let mut ws = WebSocket::from_partially_read(stream, req.rest, Role::Server, Some(config));
    let started = Instant::now();
    let total = p.bytes.len();
    // Bytes of `p.bytes` written, and the frame boundary the current write aims at.
    let (mut at, mut target) = (0usize, 0usize);
    let mut next_heartbeat: Option<Instant> = None;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            if at == target {
                close_ws(&mut ws, CloseCode::Away, "server shutting down", peer);
            }
            return SessionEnd::Shutdown;
        }
        if at == target {
            // At a frame boundary: tungstenite may read and write.
            if !read_pregen_client(&mut ws, id, peer) {
                return SessionEnd::Peer;
            }
            match classify(ws.flush(), peer) {
                Io::Done => {}
                Io::Blocked => {
                    thread::sleep(TICK);
                    continue;
                }
                Io::Closed => return SessionEnd::Peer,
            }
            if at == total {
                if !shared.done.swap(true, Ordering::AcqRel) {
                    info!(
                        client = id,
                        updates = p.updates(),
                        "pre-generated stream sent"
                    );
                }
                shared.updates_sent.fetch_max(p.updates(), Ordering::AcqRel);
                let now = Instant::now();
                if let Some(every) = plan.heartbeat {
                    let due = *next_heartbeat.get_or_insert(now + every);
                    if now >= due {
                        for hb in &p.final_heartbeats {
                            let text = Utf8Bytes::from(hb.as_str());
                            if let Io::Closed = classify(ws.write(Message::Text(text)), peer) {
                                return SessionEnd::Peer;
                            }
                        }
                        next_heartbeat = Some(next_period(due, every, now));
                    }
                }
                thread::sleep(IDLE_POLL);
                continue;
            }
            let due = if plan.unpaced {
                total
            } else {
                let k = (started.elapsed().as_secs_f64() * plan.rate) as u64;
                p.offset(k.min(p.updates()))
            };
            if !plan.unpaced && due.saturating_sub(at) > CLIENT_QUEUE_BYTES {
                warn!(client = id, %peer, "feed client over {CLIENT_QUEUE_BYTES} bytes behind the stream; disconnecting");
                shared.evicted(1);
                close_ws(&mut ws, CloseCode::Again, "slow consumer", peer);
                return SessionEnd::Evicted;
            }
            if due <= at {
                thread::sleep(TICK);
                continue;
            }
            target = p.boundary(at, due.min(at + PREGEN_WRITE));
        }
        match io::Write::write(ws.get_mut(), &p.bytes[at..target]) {
            Ok(0) => return SessionEnd::Peer,
            Ok(n) => {
                at += n;
                if at == target {
                    shared
                        .updates_sent
                        .fetch_max(p.updates_within(at), Ordering::AcqRel);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(%peer, error = %e, "feed connection error");
                return SessionEnd::Peer;
            }
        }
    }
}

/// Reads every available message of a pre-generated stream's client; `false` when the
/// connection is over. Snapshot requests cannot be answered (there is no book at a point of
/// the stream but its end): they are logged and ignored.
fn read_pregen_client(ws: &mut WebSocket<TcpStream>, id: u64, peer: SocketAddr) -> bool {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                warn!(client = id, message = %t.as_str(), "requests are not served with a pre-generated stream; ignored");
            }
            Ok(Message::Close(frame)) => {
                debug!(client = id, ?frame, "feed client sent close");
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return true;
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return false;
            }
            Err(e) => {
                warn!(client = id, %peer, error = %e, "feed client protocol error");
                return false;
            }
        }
    }
}

/// Sends a close frame and drives the handshake for a short grace period.
fn close_ws(
    ws: &mut WebSocket<TcpStream>,
    code: CloseCode,
    reason: &'static str,
    peer: SocketAddr,
) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if let Io::Closed = classify(ws.close(Some(frame)), peer) {
        return;
    }
    let deadline = Instant::now() + CLOSE_GRACE;
    while Instant::now() < deadline {
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = ws.flush();
                thread::sleep(TICK);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A control message from a feed client.
#[derive(Debug, Deserialize)]
struct ClientRequest {
    op: String,
    #[serde(default)]
    symbol: Option<String>,
}

/// How a feed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// The client closed or the connection broke.
    Peer,
    /// The client's queue overflowed.
    Evicted,
    /// The simulator is stopping.
    Shutdown,
    /// The disconnect fault dropped the connection.
    Fault,
}

fn serve_feed(shared: &Shared, mut stream: TcpStream, peer: SocketAddr, req: Request) {
    let accept = match http::check_upgrade(&req) {
        Ok(a) => a,
        Err(e) => {
            debug!(%peer, error = %e, "bad upgrade");
            let r = match e {
                http::UpgradeError::Version => http::respond_text(
                    &mut stream,
                    426,
                    "Upgrade Required",
                    &[("Sec-WebSocket-Version", "13")],
                    &format!("{e}\n"),
                ),
                _ => http::respond_text(&mut stream, 400, "Bad Request", &[], &format!("{e}\n")),
            };
            finish(&mut stream, r);
            return;
        }
    };
    if let Err(e) = io::Write::write_all(&mut stream, http::switching_protocols(&accept).as_bytes())
    {
        debug!(%peer, error = %e, "writing the handshake failed");
        return;
    }
    if let Err(e) = stream.set_nonblocking(true) {
        debug!(%peer, error = %e, "socket setup failed");
        return;
    }
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    if let Some(plan) = &shared.pregen {
        info!(client = id, %peer, "feed client connected (pre-generated stream)");
        let end = serve_pregen(shared, plan, stream, peer, req, id);
        info!(client = id, %peer, reason = ?end, "feed client disconnected");
        return;
    }
    let epoch = shared.disconnect_epoch.load(Ordering::Acquire);
    let (tx, rx) = crossbeam_channel::bounded(CLIENT_QUEUE_BATCHES);
    let queue = Arc::new(QueueState::default());
    {
        let mut core = shared.core.lock();
        let mut buf = Vec::new();
        core.exchange.symbols_json(&mut buf);
        let ts = now_ns();
        for i in 0..core.exchange.symbols().len() {
            core.exchange.snapshot_json(i, ts, &mut buf);
        }
        let client = FeedClient {
            id,
            peer,
            tx,
            queue: Arc::clone(&queue),
            limit: CLIENT_QUEUE_BYTES.max(buf.len() * 2),
        };
        if client.offer(Bytes::from(buf)) {
            core.clients.push(client);
        }
    }
    info!(client = id, %peer, "feed client connected");
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let ws = WebSocket::from_partially_read(stream, req.rest, Role::Server, Some(config));
    let mut session = FeedSession {
        shared,
        id,
        peer,
        ws,
        rx,
        queue,
        pending: None,
        epoch,
    };
    let end = session.run();
    info!(client = id, %peer, reason = ?end, "feed client disconnected");
}

/// One feed connection: a non-blocking WebSocket fed from the client's queue.
struct FeedSession<'a> {
    shared: &'a Shared,
    id: u64,
    peer: SocketAddr,
    ws: WebSocket<TcpStream>,
    rx: Receiver<Bytes>,
    queue: Arc<QueueState>,
    /// A batch taken off the queue and the offset of its first message not yet written.
    pending: Option<(Bytes, usize)>,
    /// The disconnect epoch when the connection opened.
    epoch: u64,
}

/// Outcome of a write or flush on the non-blocking socket.
enum Io {
    Done,
    Blocked,
    Closed,
}

fn classify(r: tungstenite::Result<()>, peer: SocketAddr) -> Io {
    match r {
        Ok(()) => Io::Done,
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Io::Blocked,
        Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => Io::Closed,
        Err(e) => {
            debug!(%peer, error = %e, "feed connection error");
            Io::Closed
        }
    }
}

impl FeedSession<'_> {
    fn run(&mut self) -> SessionEnd {
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                self.close(CloseCode::Away, "server shutting down");
                return SessionEnd::Shutdown;
            }
            if self.queue.evicted.load(Ordering::Acquire) {
                // Whatever is still queued would only delay the disconnect of a slow reader.
                // (Counted by whoever offered the batch that overflowed.)
                self.close(CloseCode::Again, "slow consumer");
                return SessionEnd::Evicted;
            }
            if self.shared.disconnect_epoch.load(Ordering::Acquire) != self.epoch {
                // An abrupt loss, as a venue's network would cause it: no close frame.
                let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
                return SessionEnd::Fault;
            }
            if self.shared.stalled() {
                // A hung venue: nothing is read or written (not even pongs) until it ends.
                thread::sleep(IDLE_POLL);
                continue;
            }
            if !self.read_all() {
                return SessionEnd::Peer;
            }
            let mut evicted = false;
            let mut blocked = false;
            'write: for _ in 0..64 {
                if self.pending.is_none() {
                    match self.rx.try_recv() {
                        Ok(b) => self.take(b),
                        Err(TryRecvError::Empty) => break 'write,
                        Err(TryRecvError::Disconnected) => {
                            evicted = true;
                            break 'write;
                        }
                    }
                }
                match self.write_pending() {
                    Io::Done => {}
                    Io::Blocked => {
                        blocked = true;
                        break 'write;
                    }
                    Io::Closed => return SessionEnd::Peer,
                }
            }
            match classify(self.ws.flush(), self.peer) {
                Io::Done => {}
                Io::Blocked => blocked = true,
                Io::Closed => return SessionEnd::Peer,
            }
            if evicted && self.pending.is_none() {
                self.close(CloseCode::Again, "slow consumer");
                return SessionEnd::Evicted;
            }
            if blocked {
                // The peer is not reading fast enough: wait for socket room. The queue keeps
                // filling meanwhile and evicts the client if it overflows.
                thread::sleep(TICK);
            } else if self.pending.is_none() {
                match self.rx.recv_timeout(IDLE_POLL) {
                    Ok(b) => self.take(b),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        self.close(CloseCode::Again, "slow consumer");
                        return SessionEnd::Evicted;
                    }
                }
            }
        }
    }

    fn take(&mut self, batch: Bytes) {
        self.queue.bytes.fetch_sub(batch.len(), Ordering::Relaxed);
        self.pending = Some((batch, 0));
    }

    /// Writes the pending batch message by message (one text frame per `\n`-terminated line).
    fn write_pending(&mut self) -> Io {
        let Some((batch, mut at)) = self.pending.take() else {
            return Io::Done;
        };
        while at < batch.len() {
            let end = batch[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(batch.len(), |p| at + p);
            let line = batch.slice(at..end);
            at = end + 1;
            if line.is_empty() {
                continue;
            }
            let text = match Utf8Bytes::try_from(line) {
                Ok(t) => t,
                Err(e) => {
                    error!(client = self.id, error = %e, "generated message is not UTF-8; skipped");
                    continue;
                }
            };
            match classify(self.ws.write(Message::Text(text)), self.peer) {
                Io::Done => {}
                Io::Blocked => {
                    // The frame is buffered inside tungstenite; resume after it.
                    if at < batch.len() {
                        self.pending = Some((batch, at));
                    }
                    return Io::Blocked;
                }
                Io::Closed => return Io::Closed,
            }
        }
        Io::Done
    }

    /// Reads every available client message; `false` when the connection is over.
    fn read_all(&mut self) -> bool {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => self.on_text(t.as_str()),
                Ok(Message::Binary(b)) => {
                    warn!(
                        client = self.id,
                        len = b.len(),
                        "binary message from feed client ignored"
                    );
                }
                Ok(Message::Close(frame)) => {
                    debug!(client = self.id, ?frame, "feed client sent close");
                    // tungstenite queued the reply; the next flush completes the handshake.
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return true;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return false;
                }
                Err(e) => {
                    warn!(client = self.id, peer = %self.peer, error = %e, "feed client protocol error");
                    return false;
                }
            }
        }
    }

    fn on_text(&self, text: &str) {
        let req: ClientRequest = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                warn!(client = self.id, error = %e, "unparsable message from feed client ignored");
                return;
            }
        };
        match (req.op.as_str(), req.symbol) {
            ("snapshot", Some(symbol)) => {
                let mut core = self.shared.core.lock();
                let Some(i) = core.exchange.symbol_index(&symbol) else {
                    warn!(client = self.id, %symbol, "snapshot request for an unknown symbol ignored");
                    return;
                };
                let mut buf = Vec::new();
                core.exchange.snapshot_json(i, now_ns(), &mut buf);
                let batch = Bytes::from(buf);
                // Enqueued under the lock, in order with the live stream.
                if let Some(pos) = core.clients.iter().position(|c| c.id == self.id) {
                    if !core.clients[pos].offer(batch) {
                        core.clients.swap_remove(pos);
                        if self.queue.evicted.load(Ordering::Acquire) {
                            self.shared.evicted(1);
                        }
                    }
                }
                debug!(client = self.id, %symbol, "snapshot requested");
            }
            ("snapshot", None) => warn!(
                client = self.id,
                "snapshot request without a symbol ignored"
            ),
            (op, _) => warn!(client = self.id, %op, "unknown op from feed client ignored"),
        }
    }

    /// Sends a close frame and drives the handshake for a short grace period.
    fn close(&mut self, code: CloseCode, reason: &'static str) {
        close_ws(&mut self.ws, code, reason, self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(
        id: u64,
        limit: usize,
        batches: usize,
    ) -> (FeedClient, Receiver<Bytes>, Arc<QueueState>) {
        let (tx, rx) = crossbeam_channel::bounded(batches);
        let queue = Arc::new(QueueState::default());
        let c = FeedClient {
            id,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            tx,
            queue: Arc::clone(&queue),
            limit,
        };
        (c, rx, queue)
    }

    #[test]
    fn overflowing_client_is_dropped_and_others_keep_the_stream() {
        let (slow, _slow_rx, slow_q) = client(1, 10, 100);
        let (fast, fast_rx, fast_q) = client(2, 1_000, 100);
        let (tiny, _tiny_rx, tiny_q) = client(3, 1_000, 1);
        let mut core = Core {
            exchange: Exchange::new(1, 1, 1),
            clients: vec![slow, fast, tiny],
            injector: Injector::new(crate::faults::Faults::none(), 1),
        };
        core.broadcast(Bytes::from_static(b"12345678\n"));
        assert_eq!(core.clients.len(), 3);
        // 9 + 9 bytes passes the slow client's bound; a second batch overflows the tiny queue.
        core.broadcast(Bytes::from_static(b"abcdefgh\n"));
        let ids: Vec<u64> = core.clients.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![2]);
        assert!(slow_q.evicted.load(Ordering::Acquire));
        assert!(tiny_q.evicted.load(Ordering::Acquire));
        assert!(!fast_q.evicted.load(Ordering::Acquire));
        assert_eq!(fast_q.bytes.load(Ordering::Acquire), 18);
        let got: Vec<Bytes> = fast_rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"12345678\n"),
                Bytes::from_static(b"abcdefgh\n")
            ]
        );
        // A client whose receiver is gone is dropped too.
        drop(fast_rx);
        core.broadcast(Bytes::from_static(b"x\n"));
        assert!(core.clients.is_empty());
    }

    #[test]
    fn connectable_replaces_unspecified_addresses() {
        let any = SocketAddr::from(([0, 0, 0, 0], 9001));
        assert_eq!(connectable(any), SocketAddr::from(([127, 0, 0, 1], 9001)));
        let exact = SocketAddr::from(([10, 1, 2, 3], 5));
        assert_eq!(connectable(exact), exact);
    }
}
