//! A shard: one thread, one mio `Poll`, one `SO_REUSEPORT` listener, and the connections the
//! kernel hands that listener. Nothing in a shard is shared; its only inputs from other threads
//! are its [`Ring`] and its `mio::Waker`.
//!
//! The loop, per wake:
//! 1. drain the ring (up to `drain_max` messages): each record is copied once into the drain's
//!    arena and its span added to what every ready plain subscriber of its topic is owed
//!    (contiguous spans merge: a subscriber of everything owes one span); when a
//!    permessage-deflate subscriber gets it, it goes once to the topic's shared run of
//!    `fanout::deflate` and, as a shared `Bytes`, to that subscriber's list;
//! 2. flush: each connection that got records is owed one batch, cut into as few WebSocket
//!    messages as the limits allow (compressed from the drain's shared pieces for deflate
//!    connections), queued in its bounded out-buffer and written with one `writev` (a
//!    connection that would pass its bound is evicted with 1013);
//! 3. wait in `epoll_wait` (after telling the ring it may sleep), then handle socket events:
//!    accepts, upgrade requests, control messages, writable sockets;
//! 4. every 100 ms, expire handshakes and closing connections.
//!
//! Connections upgrade on `/ws` (control messages in, data out) or, with `--echo`, on `/echo`
//! (every message sent back; for the conformance suite), through the same code.

mod conn;
pub mod limits;

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest as Io, Poll, Token};
use serde_json::Value;

use crate::book::DEPTHS;
use crate::clock;
use crate::config::Config;
use crate::control::{self, ErrorCode, Request, RequestError, SymbolSel};
use crate::fanout::admission::{self, Refusal};
use crate::fanout::arena::{DrainArena, Owed, Span};
use crate::fanout::batch::{append_owed, text_message};
use crate::fanout::deflate::{RunRef, SharedDeflate};
use crate::fanout::interest::Interest;
use crate::fanout::keepalive::{Action, KeepAlive};
use crate::fanout::limit::{RateLimiter, Verdict};
use crate::fanout::outbuf::OutBuf;
use crate::fanout::subs::Subscribers;
use crate::fanout::{ConnId, Format, STREAMS_PER_SYMBOL, Topic};
use crate::metrics::{Metrics, ShardMetrics, add};
use crate::proto::close_code;
use crate::proto::conn::{ConnLimits, ConnState, Event, Message, WsConn};
use crate::proto::deflate;
use crate::proto::frame::{MAX_HEADER_LEN, OpCode, RSV1, encode_control, encode_header_with_rsv};
use crate::proto::handshake::{
    HandshakeLimits, Request as HttpReq, parse_request, query_param, write_accept_response_ext,
    write_http_response,
};
use crate::ring::{IngestRequest, Ring, ShardMsg, SymbolDirectory};
use conn::{Conn, Endpoint, NOT_OWED, Phase, Sub};

/// Token of the listener.
const LISTENER: Token = Token(0);
/// Token of the ring's waker.
pub const WAKER: Token = Token(1);
/// First connection token.
const FIRST_CONN: usize = 2;
/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(100);
/// Slices per `writev`.
const IOV: usize = 64;
/// During a flush pass, the ring is drained again every this many connections.
const REDRAIN_EVERY: usize = 64;
/// Entries of the pending table always kept (see `Shard::flush_dirty`).
const PENDING_KEEP: usize = 256;
/// Bytes read from one socket per readiness event before moving on (fairness).
const READ_BUDGET: usize = 256 * 1024;
/// Size of the shard's read buffer (one `read` at most).
const SCRATCH_BYTES: usize = 64 * 1024;
/// Smallest message limit of `/echo` connections: the conformance suite's 9.x cases send
/// 16 MiB messages. A larger `max_message_bytes` raises it.
const ECHO_MIN_MESSAGE_BYTES: usize = 17 << 20;

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

/// What one connection is owed from the current drain: an entry of `Shard::pending`, at the
/// connection's position in the dirty list ([`Conn::owed`]).
#[derive(Debug, Default)]
struct Pending {
    /// Plain connections: spans of the drain's arena.
    owed: Owed,
    /// permessage-deflate connections: the records, in ring order, and where each sits in the
    /// drain's shared runs.
    records: Vec<Bytes>,
    refs: Vec<RunRef>,
}

impl Pending {
    fn clear(&mut self) {
        self.owed.clear();
        self.records.clear();
        self.refs.clear();
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Shard state other than the poll, split so that a connection can be borrowed mutably while
/// the tables are too.
struct Core {
    ctx: ShardContext,
    subs: Subscribers,
    hs_limits: HandshakeLimits,
    ws_limits: ConnLimits,
    /// Limits of `/echo` connections (large: the conformance suite sends 16 MiB messages).
    echo_limits: ConnLimits,
    /// Requests sent since the ingester was last woken.
    requests_sent: bool,
    /// Snapshot requests in flight, one per topic, with every subscription waiting for it.
    snapshots: SnapshotRequests,
    m: Arc<Metrics>,
}

struct Shard {
    poll: Poll,
    listener: TcpListener,
    core: Core,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connections owed something from the current drain, in the order of their first record.
    dirty: Vec<u32>,
    /// What each of `dirty` is owed (same index; entries past `dirty.len()` are spares).
    pending: Vec<Pending>,
    /// This drain's records, copied once, for plain connections.
    arena: DrainArena,
    /// Connections whose out-buffer may need writing after event handling.
    to_flush: Vec<u32>,
    /// Connections with unread input left after their read budget.
    reread: Vec<u32>,
    accept_paused_until: Option<Instant>,
    /// Number of the last status delivery (dedupes a status per connection).
    status_stamp: u64,
    /// (recv_ts, subscribers) of the binary records of the current drain, for the delivery
    /// latency histogram.
    latency_samples: Vec<(u64, u64)>,
    /// permessage-deflate: this drain's shared compressed pieces and the shard's compressors.
    zshared: SharedDeflate,
    /// Sockets are read into this one buffer; a connection's `inbuf` gets a copy of only what
    /// is left unprocessed, so that an idle subscriber's control messages never make it hold
    /// (or the allocator keep) a read-sized buffer.
    scratch: Vec<u8>,
}

/// Runs a shard on the current thread until `ctx.shutdown` is set.
///
/// # Errors
/// Only errors of `epoll` itself end a shard; socket errors close the socket concerned.
pub fn run(ctx: ShardContext, poll: Poll, mut listener: TcpListener) -> io::Result<()> {
    poll.registry()
        .register(&mut listener, LISTENER, Io::READABLE)?;
    let ws_limits = ConnLimits {
        max_message_bytes: ctx.config.max_message_bytes,
        max_frame_bytes: ctx.config.max_message_bytes,
    };
    let echo_max = ctx.config.max_message_bytes.max(ECHO_MIN_MESSAGE_BYTES);
    let echo_limits = ConnLimits {
        max_message_bytes: echo_max,
        max_frame_bytes: echo_max,
    };
    let m = ctx.metrics.clone();
    let slots = slot_table(ctx.config.max_conns);
    let mut shard = Shard {
        poll,
        listener,
        core: Core {
            ctx,
            subs: Subscribers::new(),
            hs_limits: HandshakeLimits::default(),
            ws_limits,
            echo_limits,
            requests_sent: false,
            snapshots: SnapshotRequests::default(),
            m,
        },
        slots,
        free: Vec::new(),
        dirty: Vec::new(),
        pending: Vec::new(),
        arena: DrainArena::new(),
        to_flush: Vec::new(),
        reread: Vec::new(),
        accept_paused_until: None,
        status_stamp: 0,
        zshared: SharedDeflate::default(),
        latency_samples: Vec::new(),
        scratch: vec![0; SCRATCH_BYTES],
    };
    shard.run()
}

impl Shard {
    fn metrics(&self) -> &ShardMetrics {
        self.core.metrics()
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = clock::monotonic() + TICK;
        loop {
            if self.core.ctx.shutdown.load(Ordering::Relaxed) {
                self.shutdown();
                return Ok(());
            }
            let drained = self.drain_ring();
            self.flush_dirty();
            if !self.latency_samples.is_empty() {
                let now = clock::realtime_ns();
                let h = &self.core.metrics().latency;
                for (ts, n) in self.latency_samples.drain(..) {
                    h.record(now.saturating_sub(ts), n);
                }
            }
            let now = clock::monotonic();
            let timeout = if drained >= self.core.ctx.config.drain_max || !self.reread.is_empty() {
                // More is waiting: look at sockets without blocking, then drain again.
                Some(Duration::ZERO)
            } else if self.core.ctx.ring.prepare_sleep() {
                Some(next_tick.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.core.ctx.ring.awake();
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
                            self.to_flush.push(idx);
                        }
                    }
                }
            }
            let flush = std::mem::take(&mut self.to_flush);
            for &idx in &flush {
                self.write_out(idx);
            }
            self.to_flush = flush;
            self.to_flush.clear();
            if self.core.requests_sent {
                self.core.requests_sent = false;
                if let Err(e) = self.core.ctx.ingest_waker.wake() {
                    tracing::error!(error = %e, "cannot wake the ingester");
                }
            }
            let now = clock::monotonic();
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
            }
        }
    }

    // ---- ring → subscribers ----

    fn drain_ring(&mut self) -> usize {
        if self.core.ctx.ring.is_lagged() {
            self.resync_after_lag();
        }
        self.zshared.clear();
        self.drain_records()
    }

    /// Pops up to `drain_max` ring messages and adds their records to what each subscriber is
    /// owed (the `dirty` list and `pending` table); returns the number popped.
    fn drain_records(&mut self) -> usize {
        let ring = self.core.ctx.ring.clone();
        let max = self.core.ctx.config.drain_max;
        let batch_limits = self.core.ctx.config.batch;
        let mut n = 0;
        let mut records = 0u64;
        while n < max {
            let Some(msg) = ring.pop() else { break };
            n += 1;
            match msg {
                ShardMsg::Record { topic, bytes } => {
                    // Deflate subscribers get the record through the topic's shared run, which
                    // is compressed once for all of them (fanout::deflate).
                    // Plain subscribers get it as a span of the drain's arena (copied once).
                    let mut run: Option<RunRef> = None;
                    let mut span: Option<Span> = None;
                    let mut delivered = 0u64;
                    for &idx in self.core.subs.get(topic) {
                        let Some(c) = conn_mut(&mut self.slots, idx) else {
                            continue;
                        };
                        let p = pending_of(c, idx, &mut self.dirty, &mut self.pending);
                        if c.deflate.is_some() {
                            let at = *run.get_or_insert_with(|| {
                                self.zshared.push(topic, &bytes, batch_limits)
                            });
                            p.records.push(bytes.clone());
                            p.refs.push(at);
                        } else {
                            p.owed
                                .add(*span.get_or_insert_with(|| self.arena.push(&bytes)), 1);
                        }
                        delivered += 1;
                    }
                    records += delivered;
                    if delivered > 0 && topic.format == Format::Binary {
                        if let Some(ts) = bytes.get(24..32).and_then(|b| b.try_into().ok()) {
                            self.latency_samples
                                .push((u64::from_le_bytes(ts), delivered));
                        }
                    }
                }
                ShardMsg::Status { sid, format, bytes } => {
                    records += self.deliver_status(sid, format, &bytes);
                }
                ShardMsg::Snapshot {
                    conn,
                    req,
                    topic,
                    bytes,
                } => records += self.deliver_snapshots(conn, req, topic, &bytes),
            }
        }
        // The drain's records are complete: slices of them can be taken.
        self.arena.seal();
        add(&self.metrics().records_out, records);
        self.metrics()
            .ring_len
            .store(ring.len() as u64, Ordering::Relaxed);
        n
    }

    /// Gives a status record to every connection subscribed to `sid` in `format` (book at any
    /// depth, or trades), once each, including book subscribers still waiting for a snapshot.
    fn deliver_status(&mut self, sid: u32, format: Format, bytes: &Bytes) -> u64 {
        self.status_stamp = self.status_stamp.wrapping_add(1);
        let stamp = self.status_stamp;
        let mut to = StatusTo {
            dirty: &mut self.dirty,
            pending: &mut self.pending,
            arena: &mut self.arena,
            span: None,
            stamp,
            bytes,
        };
        let mut n = 0;
        for stream in 0..STREAMS_PER_SYMBOL as u8 {
            let topic = Topic {
                sid,
                stream,
                format,
            };
            for &idx in self.core.subs.get(topic) {
                n += u64::from(to.push(&mut self.slots, idx));
            }
        }
        // Subscribers whose snapshot is still on its way are not in the book topic lists yet.
        for idx in 0..self.slots.len() {
            let waiting = self.slots[idx].conn.as_ref().is_some_and(|c| {
                c.format == format && c.subs.iter().any(|s| s.sid == sid && s.book && !s.ready)
            });
            if waiting {
                n += u64::from(to.push(&mut self.slots, idx as u32));
            }
        }
        n
    }

    /// A snapshot came out of the ring: every subscription waiting for that request gets it
    /// (requests are coalesced per topic, see [`SnapshotRequests`]); returns how many got it.
    fn deliver_snapshots(&mut self, conn: ConnId, req: u32, topic: Topic, bytes: &Bytes) -> u64 {
        let waiters = self.core.snapshots.answered(conn, req, topic);
        if waiters.is_empty() {
            // Not the request in flight for the topic (one from before a resync): only its own
            // subscription may take it, and `deliver_snapshot` finds that its req is stale.
            return u64::from(self.deliver_snapshot(conn, req, topic, bytes.clone()));
        }
        let mut n = 0;
        for (id, req) in waiters {
            n += u64::from(self.deliver_snapshot(id, req, topic, bytes.clone()));
        }
        n
    }

    fn deliver_snapshot(&mut self, id: ConnId, req: u32, topic: Topic, bytes: Bytes) -> bool {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation {
            return false;
        }
        let Some(c) = slot.conn.as_mut() else {
            return false;
        };
        if !c.is_open() || c.format != topic.format {
            return false;
        }
        let Some(sub) = c.sub_mut(topic.sid) else {
            return false;
        };
        if sub.ready
            || sub.req != req
            || !sub.book
            || usize::from(sub.depth_idx) != usize::from(topic.stream)
        {
            return false;
        }
        sub.ready = true;
        self.core.subs.add(topic, id.index);
        let p = pending_of(c, id.index, &mut self.dirty, &mut self.pending);
        if c.deflate.is_some() {
            p.records.push(bytes);
            p.refs.push(RunRef::OWN);
        } else {
            // A snapshot is large and this connection's alone: shared as it is, not copied.
            p.owed.add_own(bytes);
        }
        true
    }

    /// The producer dropped messages for this shard: discard what is queued and restart every
    /// book subscription from a fresh snapshot (trades simply continue; their seq shows the jump).
    fn resync_after_lag(&mut self) {
        let discarded = self.core.ctx.ring.recover();
        // Requests in flight may have been answered into the discarded part of the ring: ask
        // again for every waiting subscription (below, with new req numbers).
        self.core.snapshots.clear();
        add(&self.metrics().ring_resyncs, 1);
        tracing::warn!(
            shard = self.core.ctx.id,
            discarded,
            "shard fell behind its ring; resyncing subscribers with snapshots"
        );
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            let generation = slot.generation;
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            c.clear_pending();
            if !c.is_open() {
                continue;
            }
            let format = c.format;
            for i in 0..c.subs.len() {
                let sub = c.subs[i];
                if !sub.book {
                    continue;
                }
                let topic = Topic::book(sub.sid, usize::from(sub.depth_idx), format);
                if sub.ready {
                    self.core.subs.remove(topic, idx as u32);
                }
                let req = c.next_req;
                c.next_req = c.next_req.wrapping_add(1);
                c.subs[i].ready = false;
                c.subs[i].req = req;
                self.core.request_snapshot(
                    ConnId {
                        index: idx as u32,
                        generation,
                    },
                    req,
                    topic,
                );
            }
        }
        self.dirty.clear();
    }

    /// Flushes every connection owed something, in the order of the dirty list. Under load,
    /// records that arrive while the list is being flushed are drained every
    /// [`REDRAIN_EVERY`] connections (see [`Self::redrain`]): a connection already flushed in
    /// this pass is put back at the end of the list, one not yet flushed gets them in the
    /// batch it is about to get. Each connection is thus visited about once per pass time and
    /// a record waits at most about one pass, instead of up to two (the rest of the pass it
    /// arrived in, then its place in the next one).
    fn flush_dirty(&mut self) {
        let limits = self.core.ctx.config.batch;
        let threshold = self.core.ctx.config.deflate_threshold;
        let mut messages = 0u64;
        // Visits after which no more is drained in this pass (events wait meanwhile).
        let redrain_until = self.dirty.len().max(REDRAIN_EVERY) * 2;
        let mut pos = 0;
        while let Some(&idx) = self.dirty.get(pos) {
            if pos % REDRAIN_EVERY == REDRAIN_EVERY - 1 && pos < redrain_until {
                self.redrain();
            }
            let mut p = std::mem::take(&mut self.pending[pos]);
            let owner = conn_mut(&mut self.slots, idx).filter(|c| c.owed == pos as u32);
            let Some(c) = owner else {
                // Gone, or no longer its entry (it started closing meanwhile).
                p.clear();
                self.pending[pos] = p;
                pos += 1;
                continue;
            };
            c.clear_pending();
            if !c.is_open() {
                p.clear();
                self.pending[pos] = p;
                pos += 1;
                continue;
            }
            let result = match c.deflate {
                Some(z) => self.zshared.append_batch(
                    &mut c.out,
                    c.format,
                    &p.records,
                    &p.refs,
                    z.server_window_bits,
                    limits,
                    threshold,
                ),
                None => append_owed(&mut c.out, c.format, &self.arena, &p.owed, limits),
            };
            p.clear();
            self.pending[pos] = p;
            pos += 1;
            match result {
                Ok(n) => messages += n as u64,
                Err(overflow) => {
                    tracing::info!(peer = %c.peer, queued = overflow.queued, limit = overflow.limit, "evicting slow consumer");
                    self.evict_slow(idx);
                }
            }
            self.write_ready(idx);
        }
        add(&self.metrics().messages_out, messages);
        self.dirty.clear();
        // Spare entries (and their lists' memory) are kept for the next passes, whose length
        // varies with the rolling drains, but not the thousands a subscription storm or a
        // resync made (idle memory).
        if self.pending.len() > (8 * pos).max(PENDING_KEEP) {
            self.pending.truncate((2 * pos).max(PENDING_KEEP));
            self.pending.shrink_to_fit();
        }
        // Every connection owed something was flushed: release the drain's shared pieces.
        self.zshared.clear();
        self.arena.clear();
    }

    /// Drains what arrived during a flush pass, unless the ring is lagged (the next pass
    /// resyncs first) or this drain has permessage-deflate runs (a run that was compressed
    /// must not grow).
    fn redrain(&mut self) {
        let ring = &self.core.ctx.ring;
        if ring.is_empty() || ring.is_lagged() || !self.zshared.is_empty() {
            return;
        }
        self.drain_records();
    }

    // ---- sockets ----

    fn accept(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if clock::monotonic() < until {
                return;
            }
            self.accept_paused_until = None;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.add_conn(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE/ENFILE and friends: stop accepting for a moment instead of spinning.
                    tracing::warn!(error = %e, shard = self.core.ctx.id, "accept failed; pausing accepts for 100 ms");
                    self.accept_paused_until = Some(clock::monotonic() + TICK);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(refusal) = self.core.ctx.conns.acquire(peer.ip()) {
            // Refused before anything is read: a short 503 and the socket is closed. A fresh
            // socket's send buffer is empty, so this write does not block.
            self.metrics().refuse(refusal.label());
            tracing::debug!(%peer, %refusal, "connection refused");
            let mut out = Vec::with_capacity(160);
            write_http_response(
                503,
                "text/plain; charset=utf-8",
                format!("{refusal}\n").as_bytes(),
                &[("Retry-After", "5")],
                &mut out,
            );
            let _ = stream.write(&out);
            return;
        }
        tune_socket(&stream, &self.core.ctx.config);
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let token = Token(idx as usize + FIRST_CONN);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Io::READABLE)
        {
            tracing::warn!(error = %e, "cannot register connection");
            self.core.ctx.conns.release(peer.ip());
            self.free.push(idx);
            return;
        }
        let now = clock::monotonic();
        let cfg = &self.core.ctx.config;
        let conn = Conn {
            stream,
            peer: peer.into(),
            phase: Phase::Handshake {
                deadline: now + cfg.handshake_timeout,
            },
            ws: None,
            endpoint: Endpoint::Ws,
            deflate: None,
            format: Format::Binary,
            inbuf: conn::InBuf::default(),
            out: OutBuf::new(cfg.max_outbuf_bytes),
            owed: NOT_OWED,
            writable: false,
            subs: Vec::new(),
            limiter: RateLimiter::new(
                cfg.control_rate,
                cfg.control_burst,
                cfg.control_strikes,
                now,
            ),
            next_req: 0,
            status_stamp: 0,
            keepalive: KeepAlive::new(now),
        };
        if let Some(slot) = self.slots.get_mut(idx as usize) {
            slot.conn = Some(conn);
        }
        add(&self.metrics().connections, 1);
    }

    fn on_readable(&mut self, idx: u32) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let max_message = match c.endpoint {
            Endpoint::Ws => self.core.ws_limits.max_message_bytes,
            Endpoint::Echo => self.core.echo_limits.max_message_bytes,
        };
        let max_in = max_message + 16 * 1024;
        let mut eof = false;
        let mut stopped_early = false;
        let mut budget = READ_BUDGET;
        loop {
            if c.inbuf.len() >= max_in.max(self.core.hs_limits.max_head_bytes + 1) || budget == 0 {
                // Processing below consumes or rejects what is buffered (a frame can never be
                // larger than `max_in`, an upgrade head larger is refused with 431).
                stopped_early = true;
                break;
            }
            let want = self.scratch.len().min(budget);
            match c.stream.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.keepalive.heard(clock::monotonic());
                    c.inbuf.extend_from_slice(&self.scratch[..n]);
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
        match c.phase {
            Phase::Handshake { .. } => self.handshake(idx),
            Phase::Open | Phase::Closing { .. } => self.frames(idx),
            Phase::Http => {
                c.inbuf.clear();
            }
        }
        // An idle subscriber keeps no read buffer: control messages are rare, and thousands of
        // idle connections holding 8 KiB each would dominate the engine's memory.
        if let Some(c) = conn_mut(&mut self.slots, idx) {
            c.inbuf.release_if_empty();
        }
        if eof {
            self.drop_conn(idx);
        } else {
            self.to_flush.push(idx);
            if stopped_early {
                // Edge-triggered epoll will not report what is still queued: read it again on
                // the next turn, after the other connections had theirs.
                self.reread.push(idx);
            }
        }
    }

    fn handshake(&mut self, idx: u32) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let parsed = match parse_request(c.inbuf.as_slice(), &self.core.hs_limits) {
            Ok(None) => return,
            Ok(Some(p)) => p,
            Err(e) => {
                let reason = match e.status() {
                    431 => "too_large",
                    426 => "bad_version",
                    405 => "method",
                    _ => "malformed",
                };
                self.core.metrics().handshake_failed(reason);
                tracing::debug!(peer = %c.peer, error = %e, "bad upgrade request");
                let mut out = Vec::with_capacity(256);
                e.write_response(&mut out);
                c.out.push_shared(Bytes::from(out), true);
                c.phase = Phase::Http;
                c.inbuf.clear();
                return;
            }
        };
        let (req, head_len) = parsed;
        let _ = c.inbuf.split_to(head_len);
        match req {
            HttpReq::Http(h) => {
                add(&self.core.metrics().http_requests, 1);
                let (status, ctype, body): (u16, &str, Vec<u8>) =
                    match (h.method.as_str(), h.path.as_str()) {
                        ("GET" | "HEAD", "/healthz") => {
                            if self.core.m.health.feed_live() {
                                (200, "text/plain; charset=utf-8", b"ok\n".to_vec())
                            } else {
                                (
                                    503,
                                    "text/plain; charset=utf-8",
                                    b"feed not live\n".to_vec(),
                                )
                            }
                        }
                        ("GET" | "HEAD", "/metrics") => (
                            200,
                            "text/plain; version=0.0.4; charset=utf-8",
                            self.core.m.render().into_bytes(),
                        ),
                        ("GET" | "HEAD", "/ws") => (
                            426,
                            "text/plain; charset=utf-8",
                            b"this endpoint speaks WebSocket: send an upgrade request\n".to_vec(),
                        ),
                        ("GET" | "HEAD", "/echo") if self.core.ctx.config.echo => (
                            426,
                            "text/plain; charset=utf-8",
                            b"this endpoint speaks WebSocket: send an upgrade request\n".to_vec(),
                        ),
                        ("GET" | "HEAD", _) => {
                            (404, "text/plain; charset=utf-8", b"not found\n".to_vec())
                        }
                        _ => (
                            405,
                            "text/plain; charset=utf-8",
                            b"method not allowed\n".to_vec(),
                        ),
                    };
                let extra: &[(&str, &str)] = match status {
                    426 => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
                    405 => &[("Allow", "GET, HEAD")],
                    _ => &[],
                };
                let body = if h.method == "HEAD" { Vec::new() } else { body };
                respond(c, status, ctype, &body, extra);
            }
            HttpReq::Upgrade(u) => {
                let endpoint = match u.path.as_str() {
                    "/ws" => Endpoint::Ws,
                    "/echo" if self.core.ctx.config.echo => Endpoint::Echo,
                    _ => {
                        self.core.metrics().handshake_failed("not_found");
                        respond(
                            c,
                            404,
                            "text/plain; charset=utf-8",
                            b"not found: WebSocket clients connect to /ws\n",
                            &[],
                        );
                        return;
                    }
                };
                let format = match query_param(&u.query, "format") {
                    None => Format::Binary,
                    Some(v) => match Format::from_query(v) {
                        Some(f) => f,
                        None => {
                            self.core.metrics().handshake_failed("bad_format");
                            respond(
                                c,
                                400,
                                "text/plain; charset=utf-8",
                                b"format must be binary or json\n",
                                &[],
                            );
                            return;
                        }
                    },
                };
                // Origin allowlist and access token, before anything is upgraded.
                let protocol = match admission::check(
                    &self.core.ctx.config,
                    u.origin.as_deref(),
                    query_param(&u.query, "token"),
                    &u.protocols,
                ) {
                    Ok(p) => p,
                    Err(refusal) => {
                        self.core.metrics().refuse(refusal.label());
                        tracing::debug!(peer = %c.peer, %refusal, "upgrade refused");
                        let extra: &[(&str, &str)] = if refusal == Refusal::MissingToken {
                            &[("WWW-Authenticate", "Bearer")]
                        } else {
                            &[]
                        };
                        respond(
                            c,
                            refusal.status(),
                            "text/plain; charset=utf-8",
                            format!("{refusal}\n").as_bytes(),
                            extra,
                        );
                        return;
                    }
                };
                // permessage-deflate: the first acceptable offer, if the server allows it.
                let accepted = u
                    .extensions
                    .as_deref()
                    .filter(|_| self.core.ctx.config.deflate)
                    .and_then(deflate::negotiate);
                let mut resp = Vec::with_capacity(256);
                write_accept_response_ext(
                    &u,
                    protocol.as_deref(),
                    accepted.as_ref().map(|a| a.response.as_str()),
                    &mut resp,
                );
                c.out.push_shared(Bytes::from(resp), true);
                let params = accepted.map(|a| a.params);
                let limits = match endpoint {
                    Endpoint::Ws => self.core.ws_limits,
                    Endpoint::Echo => {
                        // One echoed message of the largest size must fit the out-buffer.
                        let need = 2 * self.core.echo_limits.max_message_bytes + (64 << 10);
                        c.out.set_limit(c.out.limit().max(need));
                        self.core.echo_limits
                    }
                };
                c.endpoint = endpoint;
                c.deflate = params;
                c.format = format;
                c.ws = Some(WsConn::with_deflate(limits, params.as_ref()));
                c.phase = Phase::Open;
                add(&self.core.metrics().upgraded, 1);
                tracing::debug!(peer = %c.peer, ?format, ?endpoint, deflate = ?params, "websocket open");
                if !c.inbuf.is_empty() {
                    self.frames(idx);
                }
            }
        }
    }

    fn frames(&mut self, idx: u32) {
        loop {
            let Some(c) = conn_mut(&mut self.slots, idx) else {
                return;
            };
            let Some(ws) = c.ws.as_mut() else { return };
            let result = ws.handle_input(c.inbuf.buf_mut());
            while let Some(frame) = ws.poll_transmit() {
                c.out.push_shared(frame, true);
            }
            match result {
                Ok(None) => return,
                Ok(Some(Event::Message(msg))) if c.endpoint == Endpoint::Echo => {
                    if c.is_open() {
                        self.echo(idx, msg);
                    }
                }
                Ok(Some(Event::Message(Message::Text(text)))) => {
                    if c.is_open() {
                        self.control(idx, &text);
                    }
                }
                Ok(Some(Event::Message(Message::Binary(_)))) => {
                    add(&self.core.metrics().closed_protocol, 1);
                    self.close_conn(
                        idx,
                        close_code::UNSUPPORTED_DATA,
                        "binary data frames are not accepted",
                        false,
                    );
                }
                Ok(Some(Event::Ping(_))) => {
                    // Pings cost a control-message token: a ping flood ends with 1008 (the
                    // protocol layer already caps the pongs it queues).
                    if c.limiter.check(clock::monotonic()) == Verdict::Exceeded {
                        add(&self.core.metrics().closed_policy, 1);
                        self.close_conn(idx, close_code::POLICY, "ping rate limit exceeded", false);
                        return;
                    }
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Closed { .. })) => {
                    // Our reply is queued; stop data and drop once it is written.
                    self.enter_closing(idx);
                    return;
                }
                Err(violation) => {
                    add(&self.core.metrics().closed_protocol, 1);
                    tracing::debug!(peer = %c.peer, code = violation.close_code, reason = violation.reason, "protocol violation");
                    self.enter_closing(idx);
                    return;
                }
            }
        }
    }

    // ---- the echo endpoint ----

    /// Sends a message back on an `/echo` connection as one unfragmented message, compressed
    /// when permessage-deflate was negotiated, through the same out-buffer (and bound) as data.
    fn echo(&mut self, idx: u32, msg: Message) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let (opcode, payload) = match msg {
            Message::Text(t) => (OpCode::Text, t),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        // Compressed per message with the shard's shared compressor (no context is kept, so
        // nothing is held per connection).
        let compressed = c.deflate.and_then(|p| {
            self.zshared
                .compress_message(p.server_window_bits, &payload)
        });
        let (rsv, payload) = match compressed {
            Some(z) => (RSV1, z),
            None => (0, payload),
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let h = encode_header_with_rsv(true, rsv, opcode, payload.len() as u64, &mut head);
        if c.out.reserve(h + payload.len()).is_err() {
            self.evict_slow(idx);
            return;
        }
        c.out.push_small(&head[..h], payload.is_empty());
        if !payload.is_empty() {
            c.out.push_shared(payload, true);
        }
    }

    // ---- control messages ----

    fn control(&mut self, idx: u32, text: &[u8]) {
        let now = clock::monotonic();
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let generation = slot.generation;
        let Some(c) = slot.conn.as_mut() else { return };
        match c.limiter.check(now) {
            Verdict::Allow => {}
            Verdict::Limited => {
                add(&self.core.metrics().request_errors, 1);
                let id = serde_json::from_slice::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                let ms = c.limiter.retry_after().as_millis();
                reply(
                    c,
                    &control::error_reply(
                        &id,
                        ErrorCode::RateLimited,
                        &format!("too many requests; retry in {ms} ms"),
                    ),
                );
                return;
            }
            Verdict::Exceeded => {
                add(&self.core.metrics().closed_policy, 1);
                self.close_conn(
                    idx,
                    close_code::POLICY,
                    "control message rate limit exceeded",
                    false,
                );
                return;
            }
        }
        let request = match control::parse_request(text) {
            Ok(r) => r,
            Err(e) => {
                add(&self.core.metrics().request_errors, 1);
                reply(c, &e.to_json());
                return;
            }
        };
        let id = ConnId {
            index: idx,
            generation,
        };
        let answer = match request {
            Request::Ping { id } => Ok(control::pong_reply(&id)),
            Request::Symbols { id } => {
                let table = self.core.ctx.symbols.load();
                Ok(control::symbols_reply(&id, &table.symbols))
            }
            Request::Subscribe {
                id: rid,
                symbols,
                channels,
                depth_idx,
            } => self
                .core
                .subscribe(c, id, rid, &symbols, channels, depth_idx),
            Request::Unsubscribe { id: rid, symbols } => {
                self.core.unsubscribe(c, idx, rid, &symbols)
            }
        };
        match answer {
            Ok(bytes) => reply(c, &bytes),
            Err(e) => {
                add(&self.core.metrics().request_errors, 1);
                reply(c, &e.to_json());
            }
        }
    }

    // ---- writing and closing ----

    fn write_out(&mut self, idx: u32) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let mut written_total = 0u64;
        let mut failed = false;
        while !c.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV];
            let n = c.out.io_slices(&mut iov);
            match c.stream.write_vectored(&iov[..n]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(w) => {
                    c.out.advance(w);
                    written_total += w as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        add(&self.core.metrics().bytes_out, written_total);
        if failed {
            self.drop_conn(idx);
            return;
        }
        let token = Token(idx as usize + FIRST_CONN);
        let want_write = !c.out.is_empty();
        if want_write != c.writable {
            let interest = if want_write {
                Io::READABLE | Io::WRITABLE
            } else {
                Io::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, token, interest)
                .is_err()
            {
                self.drop_conn(idx);
                return;
            }
            c.writable = want_write;
        }
        if c.out.is_empty() {
            c.release_small_storage();
            settle_close_deadline(c, self.core.ctx.config.close_timeout);
            let done = match c.phase {
                Phase::Http => true,
                Phase::Closing { .. } => {
                    c.ws.as_ref()
                        .is_none_or(|ws| ws.state() == ConnState::Closed)
                }
                _ => false,
            };
            if done {
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                self.drop_conn(idx);
            }
        }
    }

    /// Starts a server-initiated close with `code`; `evicting` discards queued data first.
    fn close_conn(&mut self, idx: u32, code: u16, reason: &str, evicting: bool) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        if evicting {
            c.out.discard_unsent();
        }
        if let Some(ws) = c.ws.as_mut() {
            ws.close(code, reason);
            while let Some(frame) = ws.poll_transmit() {
                c.out.push_shared(frame, true);
            }
        }
        self.enter_closing(idx);
    }

    /// Evicts a slow consumer: what it was owed and had not started is dropped (a message half
    /// written is finished), close 1013 is queued behind it, and the socket is kept for
    /// `evict_timeout` (not `close_timeout`) so that a client that resumes reading gets the
    /// close; once the close frame is in the kernel's hands the close handshake gets the usual
    /// `close_timeout` (see [`settle_close_deadline`]).
    fn evict_slow(&mut self, idx: u32) {
        add(&self.core.metrics().evicted_slow, 1);
        self.close_conn(
            idx,
            close_code::TRY_AGAIN_LATER,
            "slow consumer: out-buffer full",
            true,
        );
        let deadline = clock::monotonic() + self.core.ctx.config.evict_timeout;
        if let Some(c) = conn_mut(&mut self.slots, idx) {
            if let Phase::Closing { deadline: d } = &mut c.phase {
                *d = deadline;
            }
        }
    }

    /// Writes a connection's out-buffer unless its socket is known to be full (WRITABLE is
    /// registered after a write would have blocked): the readiness event will come, and a
    /// `writev` before it only fails again.
    fn write_ready(&mut self, idx: u32) {
        if conn_mut(&mut self.slots, idx).is_some_and(|c| !c.writable) {
            self.write_out(idx);
        }
    }

    fn enter_closing(&mut self, idx: u32) {
        let deadline = clock::monotonic() + self.core.ctx.config.close_timeout;
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        if matches!(c.phase, Phase::Closing { .. }) {
            return;
        }
        c.phase = Phase::Closing { deadline };
        c.clear_pending();
        self.core.unsubscribe_all(c, idx);
        self.to_flush.push(idx);
    }

    fn drop_conn(&mut self, idx: u32) {
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let Some(mut c) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.core.ctx.conns.release(c.peer.ip());
        self.core.unsubscribe_all(&mut c, idx);
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.free.push(idx);
        let m = &self.core.metrics();
        m.connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn tick(&mut self, now: Instant) {
        let interval = self.core.ctx.config.ping_interval;
        let mut dead = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            if !c.is_open() {
                continue;
            }
            c.release_idle_storage();
            match c.keepalive.poll(now, interval) {
                Action::Idle => {}
                Action::Ping(n) => {
                    c.out
                        .push_shared(encode_control(OpCode::Ping, &n.to_be_bytes()), true);
                    self.to_flush.push(i as u32);
                }
                Action::Dead => dead.push(i as u32),
            }
        }
        for idx in dead {
            add(&self.core.metrics().ping_timeouts, 1);
            self.close_conn(idx, close_code::GOING_AWAY, "ping timeout", true);
        }
        let flush = std::mem::take(&mut self.to_flush);
        for &idx in &flush {
            self.write_out(idx);
        }
        self.to_flush = flush;
        self.to_flush.clear();
        let mut expired = Vec::new();
        let mut slow_handshakes = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            match c.phase {
                Phase::Handshake { deadline } if now >= deadline => {
                    // Slowloris: the request did not complete in time. 408, then close.
                    self.core.metrics().handshake_failed("timeout");
                    respond(
                        c,
                        408,
                        "text/plain; charset=utf-8",
                        b"request timeout\n",
                        &[],
                    );
                    slow_handshakes.push(i as u32);
                }
                Phase::Closing { deadline } if now >= deadline => expired.push(i as u32),
                _ => {}
            }
        }
        for idx in slow_handshakes {
            // The response is tiny: it goes out at once, and the connection closes after it.
            self.write_out(idx);
            if self
                .slots
                .get(idx as usize)
                .is_some_and(|s| s.conn.is_some())
            {
                self.drop_conn(idx);
            }
        }
        for idx in expired {
            self.drop_conn(idx);
        }
        if self.accept_paused_until.is_some() {
            self.accept();
        }
    }

    /// Graceful stop: no more accepts, close 1001 to every client, then write what they are
    /// owed until every out-buffer is empty or `shutdown_deadline` passes.
    fn shutdown(&mut self) {
        tracing::info!(
            shard = self.core.ctx.id,
            "shutting down: closing clients with 1001"
        );
        let _ = self.poll.registry().deregister(&mut self.listener);
        let deadline = clock::monotonic() + self.core.ctx.config.shutdown_deadline;
        for idx in 0..self.slots.len() as u32 {
            let Some(c) = self.slots[idx as usize].conn.as_ref() else {
                continue;
            };
            match c.phase {
                Phase::Open => {
                    self.close_conn(idx, close_code::GOING_AWAY, "server shutting down", false);
                    self.write_out(idx);
                }
                Phase::Handshake { .. } => self.drop_conn(idx),
                Phase::Http | Phase::Closing { .. } => self.write_out(idx),
            }
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let owed = self
                .slots
                .iter()
                .any(|s| s.conn.as_ref().is_some_and(|c| !c.out.is_empty()));
            let now = clock::monotonic();
            if !owed || now >= deadline {
                break;
            }
            if self.poll.poll(&mut events, Some(deadline - now)).is_err() {
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
                self.write_out(idx);
            }
        }
        let left = self.slots.iter().filter(|s| s.conn.is_some()).count();
        tracing::info!(shard = self.core.ctx.id, left, "shard stopped");
    }
}

/// The connection table, with room for `max_conns` reserved up front: growing it by doubling
/// would copy it and leave the old copies as freed but resident heap (about the table's size
/// again). Pages of the reservation that no connection used are never touched, so they cost
/// address space, not memory.
fn slot_table(max_conns: usize) -> Vec<Slot> {
    Vec::with_capacity(max_conns.min(1 << 20))
}

/// A closing connection whose out-buffer just emptied (its close frame is with the kernel) has
/// `close_timeout` from now for the close handshake, however long its deadline was (an evicted
/// consumer's is `evict_timeout`).
fn settle_close_deadline(c: &mut Conn, close_timeout: Duration) {
    if let Phase::Closing { deadline } = &mut c.phase {
        let now = clock::monotonic();
        if *deadline > now + close_timeout {
            *deadline = now + close_timeout;
        }
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

/// Snapshot requests in flight, coalesced per topic: when thousands of connections subscribe to
/// the same topics at once, the ingester is asked once per topic and one snapshot record per
/// topic goes through the ring, instead of one per subscription (which would overflow the ring
/// and force a resync).
///
/// Why a waiter that joined after the request was sent gets a correct stream: its interest was
/// counted before it joined (the first waiter counted the topic's interest before asking, and
/// the count stays above zero while any waiter is subscribed), so every record of the topic the
/// ingester publishes after the snapshot is in the ring behind it. It gets the snapshot and then
/// exactly the records that follow it (seq + 1, + 2, …), as the first waiter does. That needs
/// the count to stay above zero from the request on, so a request whose topic loses its last
/// subscriber on this shard is forgotten (`forget`).
#[derive(Debug, Default)]
struct SnapshotRequests {
    /// Topic index → the request sent for it and the subscriptions waiting for its answer.
    in_flight: std::collections::HashMap<usize, InFlight>,
}

#[derive(Debug)]
struct InFlight {
    /// Who the request was sent for (the ingester echoes it in the snapshot).
    conn: ConnId,
    req: u32,
    /// (connection, subscription req) waiting, including the first.
    waiters: Vec<(ConnId, u32)>,
}

impl SnapshotRequests {
    /// Records that subscription `req` of `conn` waits for a snapshot of `topic`; true when no
    /// request is in flight for the topic, so the caller must send one.
    fn wait(&mut self, conn: ConnId, req: u32, topic: Topic) -> bool {
        match self.in_flight.entry(topic.index()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let waiters = &mut e.get_mut().waiters;
                // An older wait of the same slot is stale (a newer req replaced it, or the slot
                // has a new connection): at most one entry per slot.
                waiters.retain(|(c, _)| c.index != conn.index);
                waiters.push((conn, req));
                false
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(InFlight {
                    conn,
                    req,
                    waiters: vec![(conn, req)],
                });
                true
            }
        }
    }

    /// The snapshot for request (`conn`, `req`) of `topic` arrived: the subscriptions waiting
    /// for it (empty when it is not the request in flight for the topic).
    fn answered(&mut self, conn: ConnId, req: u32, topic: Topic) -> Vec<(ConnId, u32)> {
        match self.in_flight.get(&topic.index()) {
            Some(f) if f.conn == conn && f.req == req => self
                .in_flight
                .remove(&topic.index())
                .map(|f| f.waiters)
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Forgets the request in flight for `topic` (its interest dropped to zero: the records
    /// after its snapshot may not all reach this shard). A later subscriber asks again; the
    /// old answer then goes only to its own (gone) subscription.
    fn forget(&mut self, topic: Topic) {
        self.in_flight.remove(&topic.index());
    }

    /// Forgets every request in flight (after a ring resync, which asks again).
    fn clear(&mut self) {
        self.in_flight.clear();
    }
}

/// The live connection in slot `idx`, if any.
fn conn_mut(slots: &mut [Slot], idx: u32) -> Option<&mut Conn> {
    slots.get_mut(idx as usize).and_then(|s| s.conn.as_mut())
}

/// The entry of `pending` for connection `idx` (slot `c`), made on its first record of the
/// drain, which also puts it in the dirty list.
fn pending_of<'a>(
    c: &mut Conn,
    idx: u32,
    dirty: &mut Vec<u32>,
    pending: &'a mut Vec<Pending>,
) -> &'a mut Pending {
    if c.owed == NOT_OWED {
        c.owed = dirty.len() as u32;
        dirty.push(idx);
    }
    let at = c.owed as usize;
    if pending.len() <= at {
        pending.resize_with(at + 1, Pending::default);
    }
    &mut pending[at]
}

/// One status record on its way to the connections of a symbol (see `Shard::deliver_status`).
struct StatusTo<'a> {
    dirty: &'a mut Vec<u32>,
    pending: &'a mut Vec<Pending>,
    arena: &'a mut DrainArena,
    /// The record in the arena, once a plain connection got it.
    span: Option<Span>,
    stamp: u64,
    bytes: &'a Bytes,
}

impl StatusTo<'_> {
    /// Appends the status record to one connection unless it already got this one (`stamp`).
    fn push(&mut self, slots: &mut [Slot], idx: u32) -> bool {
        let Some(c) = conn_mut(slots, idx) else {
            return false;
        };
        // Stamps are compared in 32 bits (Conn keeps the low half): a wrap would need four
        // billion status deliveries between two of one connection's.
        let stamp = self.stamp as u32;
        if c.status_stamp == stamp || !c.is_open() {
            return false;
        }
        c.status_stamp = stamp;
        let p = pending_of(c, idx, self.dirty, self.pending);
        if c.deflate.is_some() {
            p.records.push(self.bytes.clone());
            p.refs.push(RunRef::OWN);
        } else {
            let span = *self.span.get_or_insert_with(|| self.arena.push(self.bytes));
            p.owed.add(span, 1);
        }
        true
    }
}

/// Queues a plain HTTP response and marks the connection to close once it is written.
fn respond(c: &mut Conn, status: u16, ctype: &str, body: &[u8], extra: &[(&str, &str)]) {
    let mut out = Vec::with_capacity(128 + body.len());
    write_http_response(status, ctype, body, extra, &mut out);
    c.out.push_shared(Bytes::from(out), true);
    c.phase = Phase::Http;
    c.inbuf.clear();
}

/// Queues a control reply (a text message). Replies are small and bounded by the rate limit, so
/// they are not counted against the data bound.
fn reply(c: &mut Conn, json: &[u8]) {
    c.out.push_shared(text_message(json), true);
}

impl Core {
    /// This shard's block of metrics.
    fn metrics(&self) -> &ShardMetrics {
        &self.m.shards[self.ctx.id]
    }

    /// Asks the ingester for a snapshot of `topic` for subscription `req` of `conn`, unless a
    /// request for the topic is already in flight: then the subscription waits for that one.
    fn request_snapshot(&mut self, conn: ConnId, req: u32, topic: Topic) {
        if !self.snapshots.wait(conn, req, topic) {
            return;
        }
        let r = IngestRequest::Snapshot {
            shard: self.ctx.id,
            conn,
            req,
            topic,
        };
        if self.ctx.requests.send(r).is_ok() {
            self.requests_sent = true;
        }
    }

    fn subscribe(
        &mut self,
        c: &mut Conn,
        id: ConnId,
        rid: Value,
        symbols: &SymbolSel,
        channels: control::Channels,
        depth_idx: usize,
    ) -> Result<Vec<u8>, RequestError> {
        let table = self.ctx.symbols.load();
        if table.symbols.is_empty() {
            return Err(RequestError::new(
                rid,
                ErrorCode::NotReady,
                "the feed has not announced its symbols yet; retry shortly",
            ));
        }
        let metas: Vec<&crate::wire::SymbolMeta> = match symbols {
            SymbolSel::All => table.symbols.iter().collect(),
            SymbolSel::List(names) => {
                let mut found = Vec::with_capacity(names.len());
                let mut unknown = Vec::new();
                for n in names {
                    match table.find(n) {
                        Some(m) => found.push(m),
                        None => unknown.push(n.as_str()),
                    }
                }
                if !unknown.is_empty() {
                    let shown: Vec<&str> = unknown.iter().take(10).copied().collect();
                    return Err(RequestError::new(
                        rid,
                        ErrorCode::UnknownSymbol,
                        format!("unknown symbol(s): {}", shown.join(", ")),
                    ));
                }
                found
            }
        };
        let new = metas
            .iter()
            .filter(|m| !c.subs.iter().any(|s| s.sid == m.sid))
            .count();
        if c.subs.len() + new > self.ctx.config.max_subscriptions {
            return Err(RequestError::new(
                rid,
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} symbols per connection",
                    self.ctx.config.max_subscriptions
                ),
            ));
        }
        // Exact: a subscriber keeps this list for its whole life.
        c.subs.reserve_exact(new);
        for m in &metas {
            if let Some(pos) = c.subs.iter().position(|s| s.sid == m.sid) {
                let old = c.subs.swap_remove(pos);
                self.drop_sub(old, c.format, id.index);
            }
            let req = c.next_req;
            c.next_req = c.next_req.wrapping_add(1);
            let sub = Sub {
                sid: m.sid,
                depth_idx: depth_idx as u8,
                book: channels.book,
                trades: channels.trades,
                ready: false,
                req,
            };
            if sub.trades {
                let t = Topic::trades(m.sid, c.format);
                self.ctx.interest.add(self.ctx.id, t);
                self.subs.add(t, id.index);
            }
            if sub.book {
                let t = Topic::book(m.sid, depth_idx, c.format);
                // Count first, then ask: every record after the snapshot is then published here.
                self.ctx.interest.add(self.ctx.id, t);
                self.request_snapshot(id, req, t);
            }
            c.subs.push(sub);
        }
        tracing::debug!(peer = %c.peer, symbols = metas.len(), depth = DEPTHS[depth_idx], "subscribed");
        Ok(control::subscribed_reply(&rid, &metas))
    }

    fn unsubscribe(
        &mut self,
        c: &mut Conn,
        idx: u32,
        rid: Value,
        symbols: &SymbolSel,
    ) -> Result<Vec<u8>, RequestError> {
        let table = self.ctx.symbols.load();
        let mut names = Vec::new();
        match symbols {
            SymbolSel::All => {
                for s in std::mem::take(&mut c.subs) {
                    if let Some(m) = table.symbols.get(s.sid as usize) {
                        names.push(m.symbol.as_str());
                    }
                    self.drop_sub(s, c.format, idx);
                }
            }
            SymbolSel::List(list) => {
                let mut unknown = Vec::new();
                for n in list {
                    match table.find(n) {
                        Some(m) => {
                            if let Some(pos) = c.subs.iter().position(|s| s.sid == m.sid) {
                                let s = c.subs.swap_remove(pos);
                                self.drop_sub(s, c.format, idx);
                                names.push(m.symbol.as_str());
                            }
                        }
                        None => unknown.push(n.as_str()),
                    }
                }
                if !unknown.is_empty() && names.is_empty() {
                    return Err(RequestError::new(
                        rid,
                        ErrorCode::UnknownSymbol,
                        format!("unknown symbol(s): {}", unknown.join(", ")),
                    ));
                }
            }
        }
        Ok(control::unsubscribed_reply(&rid, &names))
    }

    fn drop_sub(&mut self, s: Sub, format: Format, idx: u32) {
        if s.book {
            let t = Topic::book(s.sid, usize::from(s.depth_idx), format);
            self.ctx.interest.remove(self.ctx.id, t);
            if !self.ctx.interest.any(self.ctx.id, t) {
                // Nobody here counts the topic: the ingester may stop publishing it to this
                // shard, so a snapshot in flight is no longer followed by every record.
                self.snapshots.forget(t);
            }
            if s.ready {
                self.subs.remove(t, idx);
            }
        }
        if s.trades {
            let t = Topic::trades(s.sid, format);
            self.ctx.interest.remove(self.ctx.id, t);
            self.subs.remove(t, idx);
        }
    }

    fn unsubscribe_all(&mut self, c: &mut Conn, idx: u32) {
        for s in std::mem::take(&mut c.subs) {
            self.drop_sub(s, c.format, idx);
        }
    }
}
