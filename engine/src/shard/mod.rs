//! A shard: one thread, one mio `Poll`, one `SO_REUSEPORT` listener, and the connections the
//! kernel hands that listener. Nothing in a shard is shared; its only inputs from other threads
//! are its [`Ring`] and its `mio::Waker`.
//!
//! This file is the IO driver and nothing else: it polls, accepts, reads sockets into one
//! shared buffer, writes out-buffers (`writev`) and reads the clock, once per loop turn. Every
//! decision is the sans-IO `core::ShardCore`'s, in rooms named after what they hold:
//!
//! | room | what it holds |
//! |---|---|
//! | `core.rs` | the core: connection table, call order, accepts, input, writes, timers |
//! | `conn.rs` | one connection: phase (handshaking → open → closing → evicting → gone), buffers, subscriptions |
//! | `lifecycle.rs` | how connections end: closes, eviction, the deadline sweep, shutdown |
//! | `http.rs` | HTTP routing of a connection's first request (`/ws`, `/echo`, `/healthz`, `/metrics`, `/stream`, `/sse`, the screen's files) |
//! | `streams.rs` | the plain-HTTP transports `/stream` and `/sse`: query, framing, event ids |
//! | `web.rs` | the trading screen's static files, built into the binary |
//! | `messages.rs` | WebSocket messages: control requests, echo, pings |
//! | `subscriptions.rs` | subscribe / unsubscribe, interest counts, resync of book subscriptions |
//! | `snapshots.rs` | snapshot requests to the ingester, coalesced per topic |
//! | `dispatch.rs` | ring drain → owed spans → one batch per subscriber; ring-lag resync |
//! | `timers.rs` | the timer table (sweep of per-connection deadlines, accept pause, shutdown) |
//! | `limits.rs` | connection counts across shards (total and per IP) |
//! | `sim.rs` | (tests) a deterministic simulator: virtual time, in-memory connections |
//!
//! One loop turn: drain the ring and flush (the core writes each batch through
//! `core::Transport`); read the clock; run the timers due; block in `epoll_wait` (after
//! telling the ring it may sleep) until an event or the next timer; hand the events to the core
//! (accepts, bytes read, writable sockets, end of file); write what the events queued; wake the
//! ingester if snapshot requests were sent. Everything in a turn uses the turn's clock reading.

mod conn;
mod core;
mod dispatch;
mod http;
mod ladder;
mod lifecycle;
pub mod limits;
mod messages;
// Not under loom: the simulator reads batches with tickcast-bench, which the loom build leaves out.
#[cfg(all(test, not(loom)))]
mod sim;
mod snapshots;
mod streams;
mod subscriptions;
mod timers;
mod web;

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest as Io, Poll, Registry, Token};

use crate::clock;
use crate::config::Config;
use crate::fanout::interest::Interest;
use crate::fanout::outbuf::OutBuf;
use crate::metrics::Metrics;
use crate::ring::{IngestRequest, Ring, SymbolDirectory};

use self::core::{Accept, Broken, CoreContext, Now, READ_BUDGET, ShardCore, Transport};

/// Token of the listener.
const LISTENER: Token = Token(0);
/// Token of the ring's waker.
pub const WAKER: Token = Token(1);
/// First connection token.
const FIRST_CONN: usize = 2;
/// Slices per `writev`.
const IOV: usize = 64;
/// Size of the shard's read buffer (one `read` at most).
const SCRATCH_BYTES: usize = 64 * 1024;

/// What a shard thread needs from the rest of the process.
#[derive(Debug)]
pub struct ShardContext {
    /// Shard number.
    pub id: usize,
    /// Configuration.
    pub config: Arc<Config>,
    /// This shard's inbound ring (its waker is registered on `poll` as [`WAKER`]).
    pub ring: Arc<Ring>,
    /// Subscriber counts shared with the ingester.
    pub interest: Arc<Interest>,
    /// The feed's symbols.
    pub symbols: Arc<SymbolDirectory>,
    /// Requests to the ingester.
    pub requests: crossbeam_channel::Sender<IngestRequest>,
    /// Wakes the ingester after requests were sent.
    pub ingest_waker: Arc<mio::Waker>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Set to stop: clients get close 1001 and the thread returns.
    pub shutdown: Arc<AtomicBool>,
    /// Connection counts across shards (total and per client IP).
    pub conns: Arc<limits::ConnCounter>,
    /// The epoch of the stream numbering (sent in every `subscribed` reply).
    pub epoch: Arc<crate::replay::epoch::EpochCell>,
}

/// Binds a listener with `SO_REUSEPORT` so that every shard can own one on the same address.
///
/// # Errors
/// The socket calls' errors (address in use, permission).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Runs a shard on the current thread until `ctx.shutdown` is set.
///
/// # Errors
/// Only errors of `epoll` itself end a shard; socket errors close the socket concerned.
pub fn run(ctx: ShardContext, poll: Poll, mut listener: TcpListener) -> io::Result<()> {
    poll.registry()
        .register(&mut listener, LISTENER, Io::READABLE)?;
    let registry = poll.registry().try_clone()?;
    let now = read_clock();
    let ShardContext {
        id,
        config,
        ring,
        interest,
        symbols,
        requests,
        ingest_waker,
        metrics,
        shutdown,
        conns,
        epoch,
    } = ctx;
    let mut core = ShardCore::new(
        CoreContext {
            id,
            config,
            ring: ring.clone(),
            interest,
            symbols,
            requests,
            metrics,
            conns,
            epoch,
        },
        now.mono,
    );
    core.set_now(now.mono);
    let mut driver = Driver {
        poll,
        listener,
        core,
        sockets: Sockets {
            registry,
            streams: Vec::new(),
        },
        ring,
        ingest_waker,
        shutdown,
        reread: Vec::new(),
        scratch: vec![0; SCRATCH_BYTES],
    };
    driver.run()
}

/// The only clock read of a loop turn.
fn read_clock() -> Now {
    Now {
        mono: clock::monotonic(),
        real_ns: clock::realtime_ns(),
    }
}

/// A connection's socket, as the driver keeps it.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// WRITABLE interest is registered (only while the out-buffer is not empty).
    writable: bool,
}

/// The sockets of the connections, indexed like the core's slots.
#[derive(Debug)]
struct Sockets {
    registry: Registry,
    streams: Vec<Option<Socket>>,
}

impl Sockets {
    fn get_mut(&mut self, idx: u32) -> Option<&mut Socket> {
        self.streams.get_mut(idx as usize).and_then(Option::as_mut)
    }

    fn insert(&mut self, idx: u32, stream: TcpStream) {
        let i = idx as usize;
        if self.streams.len() <= i {
            self.streams.resize_with(i + 1, || None);
        }
        self.streams[i] = Some(Socket {
            stream,
            writable: false,
        });
    }
}

impl Transport for Sockets {
    fn write(&mut self, idx: u32, out: &mut OutBuf, only_if_ready: bool) -> Result<u64, Broken> {
        let Some(s) = self.streams.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Err(Broken);
        };
        if only_if_ready && s.writable {
            return Ok(0);
        }
        let mut written = 0u64;
        while !out.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV];
            let n = out.io_slices(&mut iov);
            match s.stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(Broken),
                Ok(w) => {
                    out.advance(w);
                    written += w as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Broken),
            }
        }
        let want_write = !out.is_empty();
        if want_write != s.writable {
            let interest = if want_write {
                Io::READABLE | Io::WRITABLE
            } else {
                Io::READABLE
            };
            let token = Token(idx as usize + FIRST_CONN);
            self.registry
                .reregister(&mut s.stream, token, interest)
                .map_err(|_| Broken)?;
            s.writable = want_write;
        }
        Ok(written)
    }

    fn close(&mut self, idx: u32, graceful: bool) {
        let Some(mut s) = self.streams.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        if graceful {
            let _ = s.stream.shutdown(std::net::Shutdown::Write);
        }
        let _ = self.registry.deregister(&mut s.stream);
    }
}

struct Driver {
    poll: Poll,
    listener: TcpListener,
    core: ShardCore,
    sockets: Sockets,
    ring: Arc<Ring>,
    ingest_waker: Arc<mio::Waker>,
    shutdown: Arc<AtomicBool>,
    /// Connections with unread input left after their read budget.
    reread: Vec<u32>,
    /// Sockets are read into this one buffer; a connection keeps a copy of only what is left
    /// unprocessed, so that an idle subscriber's control messages never make it hold (or the
    /// allocator keep) a read-sized buffer.
    scratch: Vec<u8>,
}

impl Driver {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                self.shutdown();
                return Ok(());
            }
            let drained = self.core.drain_ring();
            self.core.flush(&mut self.sockets);
            // A drain may ask for snapshots (a resume that was not recovered, a resync): wake
            // the ingester before this turn blocks.
            self.wake_ingester();
            let now = read_clock();
            self.core.set_now(now.mono);
            self.core.record_latency(now.real_ns);
            if self.core.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.core.handle_timeout(&mut self.sockets);
            }
            if self.core.take_accept_resumed() {
                self.accept();
            }
            let timeout = if self.core.more_queued(drained) || !self.reread.is_empty() {
                // More is waiting: look at sockets without blocking, then drain again.
                Duration::ZERO
            } else if self.ring.prepare_sleep() {
                self.core
                    .poll_timeout()
                    .map_or(timers::SWEEP, |t| t.saturating_duration_since(now.mono))
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.ring.awake();
            for idx in std::mem::take(&mut self.reread) {
                self.on_readable(idx);
            }
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        let idx = (t - FIRST_CONN) as u32;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(idx);
                        }
                        if ev.is_writable() {
                            self.core.handle_writable(idx);
                        }
                    }
                }
            }
            self.core.write_queued(&mut self.sockets);
            self.wake_ingester();
        }
    }

    /// Wakes the ingester if requests were sent since it was last woken.
    fn wake_ingester(&mut self) {
        if self.core.take_ingest_wake() {
            if let Err(e) = self.ingest_waker.wake() {
                tracing::error!(error = %e, "cannot wake the ingester");
            }
        }
    }

    fn accept(&mut self) {
        if !self.core.accepting() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.add_conn(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE/ENFILE and friends: stop accepting for a moment instead of spinning.
                    tracing::warn!(error = %e, shard = self.core.t.ctx.id, "accept failed; pausing accepts");
                    self.core.pause_accepts();
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        match self.core.handle_accept(peer) {
            Accept::Refused(response) => {
                // A fresh socket's send buffer is empty, so this write does not block.
                let _ = stream.write(&response);
            }
            Accept::Conn(idx) => {
                tune_socket(&stream, self.core.config());
                let token = Token(idx as usize + FIRST_CONN);
                if let Err(e) = self
                    .poll
                    .registry()
                    .register(&mut stream, token, Io::READABLE)
                {
                    tracing::warn!(error = %e, "cannot register connection");
                    self.core.abort_accepted(idx);
                    return;
                }
                self.sockets.insert(idx, stream);
            }
        }
    }

    /// Reads what connection `idx` sent (up to its read budget) and hands it to the core.
    fn on_readable(&mut self, idx: u32) {
        if self.core.conn(idx).is_none() {
            return;
        }
        let mut eof = false;
        let mut stopped_early = false;
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 || self.core.room_for_input(idx) == 0 {
                // The core processes (or refuses) what is buffered first.
                stopped_early = true;
                break;
            }
            let Some(s) = self.sockets.get_mut(idx) else {
                return;
            };
            let want = self.scratch.len().min(budget);
            match s.stream.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.core.buffer_input(idx, &self.scratch[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        self.core.handle_input(idx);
        if eof {
            self.core.handle_eof(idx, &mut self.sockets);
        } else if stopped_early && self.core.conn(idx).is_some() {
            // Edge-triggered epoll will not report what is still queued: read it again on the
            // next turn, after the other connections had theirs.
            self.reread.push(idx);
        }
    }

    /// Graceful stop: no more accepts, close 1001 to every client, then write what they are
    /// owed until every out-buffer is empty or `shutdown_deadline` passes.
    fn shutdown(&mut self) {
        tracing::info!(
            shard = self.core.t.ctx.id,
            "shutting down: closing clients with 1001"
        );
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.core.set_now(read_clock().mono);
        self.core.begin_shutdown(&mut self.sockets);
        let mut events = Events::with_capacity(1024);
        loop {
            let now = read_clock().mono;
            self.core.set_now(now);
            if self.core.shutdown_done() {
                break;
            }
            let timeout = self
                .core
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now));
            if self.poll.poll(&mut events, timeout).is_err() {
                break;
            }
            let ready: Vec<u32> = events
                .iter()
                .filter(|e| e.token().0 >= FIRST_CONN)
                .map(|e| (e.token().0 - FIRST_CONN) as u32)
                .collect();
            for idx in ready {
                // Take the client's close reply (or EOF) too, so the close handshake completes.
                self.on_readable(idx);
                self.core.handle_writable(idx);
            }
            self.core.write_queued(&mut self.sockets);
        }
        let left = self.core.connections();
        tracing::info!(shard = self.core.t.ctx.id, left, "shard stopped");
    }
}

/// Socket options of an accepted connection: no Nagle (records go out at once) and, when
/// configured, a fixed send buffer (`send-buffer-bytes`).
fn tune_socket(stream: &TcpStream, config: &Config) {
    let _ = stream.set_nodelay(true);
    if config.send_buffer_bytes > 0 {
        let sock = socket2::SockRef::from(stream);
        if let Err(e) = sock.set_send_buffer_size(config.send_buffer_bytes) {
            tracing::debug!(error = %e, "cannot set SO_SNDBUF");
        }
    }
}
