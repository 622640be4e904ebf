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
//! One loop turn: drain the ring and flush one slice of the pass (the core writes each batch
//! through `core::Transport`; a pass over 10,000 subscribers spans many turns, so that events
//! are never held back for more than a slice); read the clock; run the timers due; block in `epoll_wait` (after
//! telling the ring it may sleep) until an event or the next timer; hand the events to the core
//! (accepts, bytes read, writable sockets, end of file); write what the events queued; wake the
//! ingester if snapshot requests were sent. Everything in a turn uses the turn's clock reading.
//!
//! TLS (`--tls-cert`): a connection's socket then carries a `rustls::ServerConnection`, which
//! is sans-IO too. What is read from the socket is fed to it and the plaintext it gives back
//! goes to the core exactly as a plain socket's bytes would; what the core queued is written
//! into it (encrypted into its own bounded buffer, 64 KiB) and its records are written to the
//! socket. Records are still encoded and batched once; only encryption is per connection.
//! A plain connection goes the way it always did (one `read` into the shared buffer, one
//! `writev` of the out-buffer), past one branch.

mod conn;
mod core;
mod dispatch;
mod http;
mod ladder;
mod lifecycle;
pub mod limits;
mod messages;
/// The fan-out bench's rig (`benches/fanout.rs`): not part of the engine's API.
#[doc(hidden)]
#[cfg(not(loom))]
pub mod rig;
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
use self::dispatch::{PASS_SLICE, Slice};

use rustls::ServerConnection;

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
    /// With `--tls-cert`: every connection speaks TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
        tls,
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
        plain: if tls.is_some() {
            vec![0; SCRATCH_BYTES]
        } else {
            Vec::new()
        },
        tls,
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
    /// WRITABLE interest is registered (only while the out-buffer, or TLS's, is not empty).
    writable: bool,
    /// The TLS session, on a TLS port.
    tls: Option<Box<ServerConnection>>,
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

    fn insert(&mut self, idx: u32, stream: TcpStream, tls: Option<Box<ServerConnection>>) {
        let i = idx as usize;
        if self.streams.len() <= i {
            self.streams.resize_with(i + 1, || None);
        }
        self.streams[i] = Some(Socket {
            stream,
            writable: false,
            tls,
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
        if let Some(tls) = s.tls.as_deref_mut() {
            let (written, want_write) = write_tls(&mut s.stream, tls, out)?;
            return self.want_write(idx, want_write).map(|()| written);
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
        self.want_write(idx, want_write)?;
        Ok(written)
    }

    fn close(&mut self, idx: u32, graceful: bool) {
        let Some(mut s) = self.streams.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        if graceful {
            if let Some(tls) = s.tls.as_deref_mut() {
                // Best effort: the close_notify (and anything TLS still holds) if the socket
                // takes it now.
                tls.send_close_notify();
                while tls.wants_write() {
                    if !matches!(tls.write_tls(&mut s.stream), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            let _ = s.stream.shutdown(std::net::Shutdown::Write);
        }
        let _ = self.registry.deregister(&mut s.stream);
    }

    fn flushed(&self, idx: u32) -> bool {
        self.streams
            .get(idx as usize)
            .and_then(Option::as_ref)
            .and_then(|s| s.tls.as_deref())
            .is_none_or(|tls| !tls.wants_write())
    }
}

impl Sockets {
    /// Registers WRITABLE interest for connection `idx` while it has something to write.
    fn want_write(&mut self, idx: u32, want_write: bool) -> Result<(), Broken> {
        let Some(s) = self.streams.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Err(Broken);
        };
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
        Ok(())
    }
}

/// Writes `out` through a TLS session: the records TLS holds go to the socket first, then the
/// out-buffer is encrypted into TLS's bounded buffer (64 KiB), and so on until the socket is
/// full or everything is written. Returns the plaintext bytes taken from `out` and whether
/// something is left to write.
fn write_tls(
    stream: &mut TcpStream,
    tls: &mut ServerConnection,
    out: &mut OutBuf,
) -> Result<(u64, bool), Broken> {
    let mut written = 0u64;
    loop {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(Broken),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((written, true));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Broken),
            }
        }
        if out.is_empty() {
            return Ok((written, false));
        }
        let mut iov = [IoSlice::new(&[]); IOV];
        let n = out.io_slices(&mut iov);
        let took = tls.writer().write_vectored(&iov[..n]).map_err(|_| Broken)?;
        if took == 0 {
            // The handshake is not done and its plaintext buffer is full: wait for it.
            return Ok((written, true));
        }
        out.advance(took);
        written += took as u64;
    }
}

/// Feeds ciphertext read from a TLS connection to its session and the plaintext that comes
/// out to the core. `Err` when the peer sent something that is not TLS (plain HTTP, garbage)
/// or broke the session; `Ok(true)` when it sent close_notify.
fn tls_input(
    tls: &mut ServerConnection,
    mut data: &[u8],
    plain: &mut [u8],
    core: &mut ShardCore,
    idx: u32,
) -> Result<bool, rustls::Error> {
    let mut closed = false;
    while !data.is_empty() {
        tls.read_tls(&mut data)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let state = tls.process_new_packets()?;
        let mut left = state.plaintext_bytes_to_read();
        closed |= state.peer_has_closed();
        while left > 0 {
            let want = left.min(plain.len());
            match tls.reader().read(&mut plain[..want]) {
                Ok(0) => break,
                Ok(k) => {
                    core.buffer_input(idx, &plain[..k]);
                    left -= k;
                }
                Err(e) => return Err(rustls::Error::General(e.to_string())),
            }
        }
    }
    Ok(closed)
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
    /// TLS: the plaintext of what was read into `scratch` (empty without TLS).
    plain: Vec<u8>,
    /// With `--tls-cert`: the shared TLS configuration of new connections.
    tls: Option<Arc<rustls::ServerConfig>>,
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
            // One slice of the pass: the sockets' events are looked at between slices, and a
            // long pass (10,000 subscribers) goes on in the next turns.
            let pass_open = self
                .core
                .flush(&mut self.sockets, Slice::Visits(PASS_SLICE));
            // A drain may ask for snapshots (a resume that was not recovered, a resync): wake
            // the ingester before this turn blocks.
            self.wake_ingester();
            let now = read_clock();
            self.core.set_now(now.mono);
            self.core.set_wall_clock(now.real_ns);
            self.core.record_latency(now.real_ns);
            if self.core.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.core.handle_timeout(&mut self.sockets);
            }
            if self.core.take_accept_resumed() {
                self.accept();
            }
            let timeout = if pass_open || self.core.more_queued(drained) || !self.reread.is_empty()
            {
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
                // A fresh socket's send buffer is empty, so this write does not block. (A TLS
                // client could not read a plain response: it is just closed.)
                if self.tls.is_none() {
                    let _ = stream.write(&response);
                }
            }
            Accept::Conn(idx) => {
                let tls = match self
                    .tls
                    .as_ref()
                    .map(|cfg| ServerConnection::new(cfg.clone()))
                {
                    None => None,
                    Some(Ok(conn)) => Some(Box::new(conn)),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cannot start a TLS session");
                        self.core.abort_accepted(idx);
                        return;
                    }
                };
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
                self.sockets.insert(idx, stream, tls);
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
                    budget = budget.saturating_sub(n);
                    let Some(tls) = s.tls.as_deref_mut() else {
                        self.core.buffer_input(idx, &self.scratch[..n]);
                        continue;
                    };
                    match tls_input(
                        tls,
                        &self.scratch[..n],
                        &mut self.plain,
                        &mut self.core,
                        idx,
                    ) {
                        Ok(false) => {}
                        Ok(true) => {
                            eof = true;
                            break;
                        }
                        Err(e) => {
                            // Not TLS (plain HTTP, garbage) or a broken session: send the
                            // alert if the socket takes it, and close this connection.
                            tracing::debug!(error = %e, "TLS session failed");
                            let _ = tls.write_tls(&mut s.stream);
                            eof = true;
                            break;
                        }
                    }
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
        // What the pass under way owes goes out before the closes.
        self.core.flush(&mut self.sockets, Slice::Finish);
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
