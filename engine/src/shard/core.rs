//! The sans-IO shard core: every decision a shard makes, as a function of what it is handed
//! (bytes read, ring records, `now`). It owns the connection table (without sockets), the
//! subscription tables and the timers; the driver (`shard/mod.rs`) owns the sockets and the
//! clock.
//!
//! # Call order (one loop turn of the driver)
//!
//! 1. [`ShardCore::drain_ring`] then [`ShardCore::flush`]: ring records to what each subscriber
//!    is owed, then one batch per subscriber, written through [`Transport::write`]
//!    (`dispatch.rs`), for one slice of the pass; while [`ShardCore::pass_open`], the driver
//!    does not block in step 4;
//! 2. read the clock once: `now`; [`ShardCore::record_latency`] with its realtime half;
//! 3. [`ShardCore::handle_timeout`] when [`ShardCore::poll_timeout`] has passed;
//! 4. block until an event or [`ShardCore::poll_timeout`];
//! 5. sockets: [`ShardCore::handle_accept`] for a new connection, [`ShardCore::room_for_input`]
//!    and [`ShardCore::buffer_input`] for each read, then [`ShardCore::handle_input`] (or
//!    [`ShardCore::handle_eof`]); [`ShardCore::handle_writable`] when a socket can take more;
//!    then [`ShardCore::write_queued`] for what the events queued;
//! 6. [`ShardCore::take_ingest_wake`]: wake the ingester if snapshot requests were sent.
//!
//! To stop: [`ShardCore::begin_shutdown`], then events as above until
//! [`ShardCore::shutdown_done`].
//!
//! Rooms: `http.rs` answers the first request, `messages.rs` handles WebSocket messages
//! (control requests, echo), `subscriptions.rs` the subscription tables, `snapshots.rs` the
//! snapshot requests, `dispatch.rs` the ring, `timers.rs` the deadlines, `lifecycle.rs` how
//! connections end (closes, eviction, the deadline sweep, shutdown), `conn.rs` one connection's
//! state and phases.

use ::core::net::SocketAddr;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Config;
use crate::fanout::arena::{DrainArena, Owed};
use crate::fanout::deflate::{RunRef, SharedDeflate};
use crate::fanout::entitle::Grant;
use crate::fanout::interest::Interest;
use crate::fanout::limit::RateLimit;
use crate::fanout::outbuf::OutBuf;
use crate::fanout::subs::Subscribers;
use crate::metrics::{Metrics, ShardMetrics, add};
use crate::proto::conn::{ConnLimits, WsConn};
use crate::proto::handshake::{HandshakeLimits, write_http_response};
use crate::ring::{IngestRequest, Ring, SymbolDirectory};

use super::conn::{Conn, ConnSettings, Endpoint, Phase};
use super::http::{Route, Router};
use super::limits::ConnCounter;
use super::snapshots::SnapshotRequests;
use super::timers::{SWEEP, Timer, TimerTable};

/// Bytes read from one socket per readiness event before moving on (fairness).
pub(crate) const READ_BUDGET: usize = 256 * 1024;
/// Smallest message limit of `/echo` connections: the conformance suite's 9.x cases send
/// 16 MiB messages. A larger `max_message_bytes` raises it.
const ECHO_MIN_MESSAGE_BYTES: usize = 17 << 20;

/// What the core needs from the rest of the process (the driver keeps the wakers and the
/// shutdown flag).
#[derive(Debug)]
pub(crate) struct CoreContext {
    pub(super) id: usize,
    pub(super) config: Arc<Config>,
    pub(super) ring: Arc<Ring>,
    pub(super) interest: Arc<Interest>,
    pub(super) symbols: Arc<SymbolDirectory>,
    pub(super) requests: crossbeam_channel::Sender<IngestRequest>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) conns: Arc<ConnCounter>,
    pub(super) epoch: Arc<crate::replay::epoch::EpochCell>,
}

/// The monotonic and realtime halves of one clock reading (the driver reads it once a turn).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// For deadlines and rates.
    pub(super) mono: Instant,
    /// Nanoseconds since the Unix epoch, for the delivery-latency histogram.
    pub(super) real_ns: u64,
}

/// The connection's socket is broken (a write failed): the core drops the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Broken;

/// What the core asks of the driver: write an out-buffer, close a socket. The core calls it
/// where today's flush pass needs it (a subscriber's batch is written as soon as it is cut, so
/// that redrains interleave with writes); the simulator implements it with in-memory
/// connections.
pub(crate) trait Transport {
    /// Writes as much of `out` as connection `idx`'s socket takes now and advances `out` by
    /// it; returns the bytes written. With `only_if_ready`, writes nothing when the socket is
    /// known to be full (the driver waits for it to become writable).
    ///
    /// # Errors
    /// [`Broken`] when the socket failed; the core then drops the connection.
    fn write(&mut self, idx: u32, out: &mut OutBuf, only_if_ready: bool) -> Result<u64, Broken>;

    /// Connection `idx` is gone: drop its socket, shutting its write half first when
    /// `graceful` (everything was written).
    fn close(&mut self, idx: u32, graceful: bool);

    /// Whether everything written to connection `idx` has left the transport's own buffers
    /// (TLS keeps encrypted records until the socket takes them). A connection is finished
    /// only once its out-buffer is empty *and* this holds.
    fn flushed(&self, _idx: u32) -> bool {
        true
    }
}

/// Why a connection is accepted or not.
#[derive(Debug)]
pub(crate) enum Accept {
    /// Accepted in slot `idx` (the driver registers the socket under that index).
    Conn(u32),
    /// Refused before anything is read: write this response (small, a fresh socket takes it)
    /// and close.
    Refused(Vec<u8>),
}

/// What one connection is owed from the current drain: an entry of `ShardCore::pending`, at
/// the connection's position in the dirty list ([`Conn::owed_at`]).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Plain connections: spans of the drain's arena.
    pub(super) owed: Owed,
    /// permessage-deflate connections: the records, in ring order, and where each sits in the
    /// drain's shared runs.
    pub(super) records: Vec<Bytes>,
    pub(super) refs: Vec<RunRef>,
}

/// Pieces (or deflate records) an entry of the pending table keeps room for once it was
/// flushed: more than a lap of ordinary records needs, far less than a subscription storm's
/// snapshots (one piece each). Entries are reused by any connection, lap after lap, so room
/// kept after a storm would stay in every entry of the table.
const PENDING_KEEP_PIECES: usize = 64;

impl Pending {
    /// Forgets what is owed; keeps the lists' memory unless a storm made it large.
    pub(crate) fn clear(&mut self) {
        self.owed.clear();
        self.owed.trim(PENDING_KEEP_PIECES);
        self.records.clear();
        self.refs.clear();
        if self.records.capacity() > PENDING_KEEP_PIECES {
            self.records = Vec::new();
        }
        if self.refs.capacity() > PENDING_KEEP_PIECES {
            self.refs = Vec::new();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(super) generation: u32,
    pub(super) conn: Option<Conn>,
}

/// The shard's tables and context, kept apart from the connection table so that a connection
/// can be borrowed mutably while they are too.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(super) ctx: CoreContext,
    pub(super) subs: Subscribers,
    pub(super) hs_limits: HandshakeLimits,
    pub(super) ws_limits: ConnLimits,
    /// Limits of `/echo` connections (large: the conformance suite sends 16 MiB messages).
    pub(super) echo_limits: ConnLimits,
    /// Requests sent since the ingester was last woken.
    pub(super) requests_sent: bool,
    /// Snapshot requests in flight, one per topic, with every subscription waiting for it.
    pub(super) snapshots: SnapshotRequests,
    /// The control-message rate limit of every connection.
    pub(super) control: RateLimit,
}

impl Tables {
    /// This shard's block of metrics.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.ctx.metrics.shards[self.ctx.id]
    }
}

/// The sans-IO shard (see the module docs for the call order).
#[derive(Debug)]
pub(crate) struct ShardCore {
    pub(super) t: Tables,
    pub(super) slots: Vec<Slot>,
    pub(super) free: Vec<u32>,
    /// Connections owed something from the drains of the current pass, in the order of their
    /// first owed record (positions `..visit` of `order` are done; see `ShardCore::flush`).
    pub(super) dirty: Vec<u32>,
    /// What each of `dirty` is owed (same index; entries past `dirty.len()` are spares).
    pub(super) pending: Vec<Pending>,
    /// The flush pass's visiting order: positions in `dirty` (the low 32 bits of each entry),
    /// least recently flushed first (see `ShardCore::flush`, `order_more`); reused.
    pub(super) order: Vec<u64>,
    /// Entries of `order` visited in the current lap.
    pub(super) visit: usize,
    /// The arena's next chunk when the current lap was ordered: the entries made since point
    /// only into chunks from there on.
    pub(super) lap_mark: u32,
    /// Largest dirty list of the current pass (how many spare entries to keep after it).
    pub(super) pass_peak: usize,
    /// Per slot: the value of `flush_clock` when the connection was last flushed.
    pub(super) last_flush: Vec<u32>,
    /// Counts flush visits (wrapping): ages in `last_flush` are taken from it.
    pub(super) flush_clock: u32,
    /// The pass's drains' records, copied once, for plain connections.
    pub(super) arena: DrainArena,
    /// permessage-deflate: this drain's shared compressed pieces and the shard's compressors.
    pub(super) zshared: SharedDeflate,
    /// Number of the last status delivery (dedupes a status per connection).
    pub(super) status_stamp: u64,
    /// (recv_ts, subscribers) of the binary records drained and not recorded yet, for the
    /// delivery latency histogram (`ShardCore::record_latency`).
    pub(super) latency_samples: Vec<(u64, u64)>,
    /// Samples at the front of `latency_samples` whose every subscriber was written.
    pub(super) latency_done: usize,
    /// Samples taken before the current lap was ordered.
    pub(super) latency_lap: usize,
    /// Connections whose out-buffer may need writing after event handling.
    pub(super) to_write: Vec<u32>,
    /// Subscribers that skipped the conflated snapshot being delivered (reused).
    pub(super) skipped: Vec<u32>,
    pub(super) timers: TimerTable,
    /// The time of the current turn, for the places deep in the flush pass that need it.
    pub(super) now: Instant,
    /// The turn's realtime reading, nanoseconds since the Unix epoch (token expiry).
    pub(super) real_ns: u64,
    /// Token expiries (JWT `exp`): (when, slot, generation, exp). An entry whose connection is
    /// gone or has refreshed its token since is skipped when it comes up.
    pub(super) expiries: BinaryHeap<Reverse<(Instant, u32, u32, u64)>>,
    /// Accepts are wanted again (the pause ended).
    accept_resumed: bool,
}

impl ShardCore {
    /// A shard core with no connections, at `now`.
    pub(crate) fn new(ctx: CoreContext, now: Instant) -> Self {
        let ws_limits = ConnLimits {
            max_message_bytes: ctx.config.max_message_bytes,
            max_frame_bytes: ctx.config.max_message_bytes,
        };
        let echo_max = ctx.config.max_message_bytes.max(ECHO_MIN_MESSAGE_BYTES);
        let echo_limits = ConnLimits {
            max_message_bytes: echo_max,
            max_frame_bytes: echo_max,
        };
        let slots = slot_table(ctx.config.max_conns);
        let control = RateLimit::new(
            ctx.config.control_rate,
            ctx.config.control_burst,
            ctx.config.control_strikes,
        );
        let mut timers = TimerTable::default();
        timers.set(Timer::Sweep, now + SWEEP);
        Self {
            t: Tables {
                ctx,
                subs: Subscribers::new(),
                hs_limits: HandshakeLimits::default(),
                ws_limits,
                echo_limits,
                requests_sent: false,
                snapshots: SnapshotRequests::default(),
                control,
            },
            slots,
            free: Vec::new(),
            dirty: Vec::new(),
            pending: Vec::new(),
            order: Vec::new(),
            visit: 0,
            lap_mark: 0,
            pass_peak: 0,
            last_flush: Vec::new(),
            flush_clock: 0,
            arena: DrainArena::new(),
            zshared: SharedDeflate::default(),
            status_stamp: 0,
            latency_samples: Vec::new(),
            latency_done: 0,
            latency_lap: 0,
            to_write: Vec::new(),
            skipped: Vec::new(),
            timers,
            now,
            real_ns: 0,
            expiries: BinaryHeap::new(),
            accept_resumed: false,
        }
    }

    /// This shard's block of metrics.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        self.t.metrics()
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.t.ctx.config
    }

    /// The connection in slot `idx`, if any.
    pub(crate) fn conn(&self, idx: u32) -> Option<&Conn> {
        self.slots.get(idx as usize).and_then(|s| s.conn.as_ref())
    }

    /// Number of live connections.
    pub(crate) fn connections(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    // ---- input: time, accepts, bytes ----

    /// Starts a turn at `now`; every later call of the turn uses it.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The turn's realtime reading (nanoseconds since the Unix epoch), for token expiry.
    pub(crate) fn set_wall_clock(&mut self, real_ns: u64) {
        self.real_ns = real_ns;
    }

    /// Gives connection `idx` what its token grants (from `admission::check`) and arms its
    /// expiry: every transport that admits a client with a JWT (`/ws` here; `/stream`, `/sse`)
    /// calls this, so that `entitled_symbols` sees the grant and the connection is closed when
    /// the token expires.
    pub(crate) fn grant(&mut self, idx: u32, grant: Option<Grant>) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let exp = grant.as_ref().map(|g| g.exp);
        c.set_grant(grant);
        if let Some(exp) = exp {
            self.schedule_expiry(idx, exp);
        }
    }

    /// Arms the expiry of slot `idx`'s token at `exp` (seconds since the epoch): the
    /// connection is closed with 1008 `token expired` then, unless it refreshed its token.
    pub(crate) fn schedule_expiry(&mut self, idx: u32, exp: u64) {
        let Some(slot) = self.slots.get(idx as usize) else {
            return;
        };
        let left_ns = (u128::from(exp) * 1_000_000_000).saturating_sub(u128::from(self.real_ns));
        // At most a century ahead (an `Instant` cannot be pushed arbitrarily far).
        let left = Duration::from_nanos(u64::try_from(left_ns).unwrap_or(u64::MAX))
            .min(Duration::from_secs(100 * 365 * 86_400));
        let at = self.now + left;
        self.expiries.push(Reverse((at, idx, slot.generation, exp)));
        if self.expiries.len() > 64 && self.expiries.len() > 2 * self.slots.len() {
            // Refreshes leave their old entries behind: drop the stale ones (amortized, so
            // that a client refreshing in a loop cannot grow the heap).
            let slots = &self.slots;
            self.expiries.retain(|Reverse((_, i, g, e))| {
                slots.get(*i as usize).is_some_and(|s| {
                    s.generation == *g
                        && s.conn
                            .as_ref()
                            .and_then(Conn::grant)
                            .is_some_and(|gr| gr.exp == *e)
                })
            });
        }
        self.arm_expiry_timer();
    }

    fn arm_expiry_timer(&mut self) {
        match self.expiries.peek() {
            Some(Reverse((at, ..))) => self.timers.set(Timer::TokenExpiry, *at),
            None => self.timers.stop(Timer::TokenExpiry),
        }
    }

    /// Closes the connections whose token expired by now (1008 `token expired`).
    fn expire_tokens(&mut self) {
        while let Some(Reverse((at, idx, generation, exp))) = self.expiries.peek().copied() {
            if at > self.now {
                break;
            }
            self.expiries.pop();
            let Some(slot) = self.slots.get_mut(idx as usize) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            if c.grant().is_some_and(|g| g.exp == exp) && c.is_open() {
                add(&self.t.metrics().closed_policy, 1);
                tracing::debug!(peer = %c.peer(), "token expired");
                self.close_conn(
                    idx,
                    crate::proto::close_code::POLICY,
                    "token expired",
                    false,
                );
            }
        }
        self.arm_expiry_timer();
    }

    /// A connection from `peer` was accepted: admit it (connection limits) or refuse it.
    pub(crate) fn handle_accept(&mut self, peer: SocketAddr) -> Accept {
        if let Err(refusal) = self.t.ctx.conns.acquire(peer.ip()) {
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
            return Accept::Refused(out);
        }
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
        let cfg = &self.t.ctx.config;
        let settings = ConnSettings {
            max_outbuf_bytes: cfg.max_outbuf_bytes,
            handshake_timeout: cfg.handshake_timeout,
            control: self.t.control,
        };
        self.slots[idx as usize].conn = Some(Conn::new(peer, self.now, &settings));
        add(&self.metrics().connections, 1);
        Accept::Conn(idx)
    }

    /// Accepting failed (EMFILE and friends): pause accepts for a sweep instead of spinning.
    pub(crate) fn pause_accepts(&mut self) {
        self.timers.set(Timer::AcceptPause, self.now + SWEEP);
    }

    /// True unless accepts are paused.
    pub(crate) fn accepting(&self) -> bool {
        self.timers.get(Timer::AcceptPause).is_none()
    }

    /// True once after a pause ended: the driver accepts what queued meanwhile.
    pub(crate) fn take_accept_resumed(&mut self) -> bool {
        std::mem::take(&mut self.accept_resumed)
    }

    /// How many more bytes connection `idx` takes before its input is processed: 0 when it has
    /// a full frame or request head buffered (or is gone).
    pub(crate) fn room_for_input(&self, idx: u32) -> usize {
        let Some(c) = self.conn(idx) else { return 0 };
        let max_message = match c.endpoint() {
            Endpoint::Ws => self.t.ws_limits.max_message_bytes,
            Endpoint::Echo => self.t.echo_limits.max_message_bytes,
            // Nothing is read after the request head (it is discarded as it comes).
            Endpoint::Stream | Endpoint::Sse => 0,
        };
        // Processing consumes or rejects what is buffered (a frame can never be larger than
        // this, an upgrade head larger is refused with 431).
        let max_in = (max_message + 16 * 1024).max(self.t.hs_limits.max_head_bytes + 1);
        max_in.saturating_sub(c.buffered_input())
    }

    /// Bytes read from connection `idx`; processed by [`Self::handle_input`].
    pub(crate) fn buffer_input(&mut self, idx: u32, data: &[u8]) {
        let now = self.now;
        if let Some(c) = conn_mut(&mut self.slots, idx) {
            c.buffer_input(data, now);
        }
    }

    /// Processes what connection `idx` has buffered: its request head, or WebSocket frames.
    pub(crate) fn handle_input(&mut self, idx: u32) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        match c.phase() {
            Phase::Handshaking { .. } => self.handle_request(idx),
            Phase::Open | Phase::Closing { .. } | Phase::Evicting { .. }
                if c.endpoint().is_http_stream() =>
            {
                // HTTP streams read nothing after the request head.
                c.consume_input(usize::MAX);
            }
            Phase::Open | Phase::Closing { .. } | Phase::Evicting { .. } => {
                // What it is owed from the pass under way goes before what its messages queue.
                self.settle_owed(idx);
                self.handle_frames(idx);
            }
            Phase::Responding => c.consume_input(usize::MAX),
        }
        if let Some(c) = conn_mut(&mut self.slots, idx) {
            c.release_idle_input();
            self.to_write.push(idx);
        }
    }

    /// Connection `idx` hung up (or its socket failed): it is gone.
    pub(crate) fn handle_eof<T: Transport>(&mut self, idx: u32, io: &mut T) {
        self.drop_conn(idx, false, io);
    }

    /// Connection `idx`'s socket can take more: what is queued is written by
    /// [`Self::write_queued`], after the turn's other events.
    pub(crate) fn handle_writable(&mut self, idx: u32) {
        self.to_write.push(idx);
    }

    /// The first request of a connection: route it (`http.rs`).
    fn handle_request(&mut self, idx: u32) {
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let Some(c) = slot.conn.as_mut() else { return };
        let router = Router {
            config: &self.t.ctx.config,
            limits: &self.t.hs_limits,
            metrics: &self.t.ctx.metrics,
            shard: &self.t.ctx.metrics.shards[self.t.ctx.id],
            now_s: self.real_ns / 1_000_000_000,
        };
        let Some((route, head_len)) = router.route_head(c.input()) else {
            return;
        };
        match route {
            Route::Respond(response) => {
                tracing::debug!(peer = %c.peer(), "plain HTTP response");
                c.respond(response);
            }
            Route::Stream(open) => self.open_stream(idx, open),
            Route::Static { head, body } => c.respond_static(head, body),
            Route::Upgrade(u) => {
                c.consume_input(head_len);
                let limits = match u.endpoint {
                    Endpoint::Ws | Endpoint::Stream | Endpoint::Sse => self.t.ws_limits,
                    Endpoint::Echo => {
                        // One echoed message of the largest size must fit the out-buffer.
                        let need = 2 * self.t.echo_limits.max_message_bytes + (64 << 10);
                        let out = c.out_mut();
                        out.set_limit(out.limit().max(need));
                        self.t.echo_limits
                    }
                };
                let ws = WsConn::with_deflate(limits, u.deflate.as_ref());
                tracing::debug!(peer = %c.peer(), format = ?u.format, endpoint = ?u.endpoint, deflate = ?u.deflate, "websocket open");
                c.upgrade(u.response, u.endpoint, u.format, u.deflate, ws);
                if let Some(t) = c.transport_index() {
                    add(
                        &self.t.ctx.metrics.shards[self.t.ctx.id].transport_connections[t],
                        1,
                    );
                }
                let more = c.buffered_input() > 0;
                self.grant(idx, u.grant);
                if more {
                    self.handle_frames(idx);
                }
            }
        }
    }

    // ---- output ----

    /// Writes the out-buffers of the connections queued by event handling.
    pub(crate) fn write_queued<T: Transport>(&mut self, io: &mut T) {
        let queued = std::mem::take(&mut self.to_write);
        for &idx in &queued {
            self.write_out(idx, false, io);
        }
        self.to_write = queued;
        self.to_write.clear();
    }

    /// Writes connection `idx`'s out-buffer (with `only_if_ready`, not when its socket is known
    /// to be full), then moves its lifecycle on: a connection with nothing left to do is gone.
    pub(crate) fn write_out<T: Transport>(&mut self, idx: u32, only_if_ready: bool, io: &mut T) {
        // The ladder first (a `live` notice goes out with this write), then snapshot pacing
        // again after it (what it wrote makes room for more).
        self.ladder_after_write(idx);
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let written = io.write(idx, c.out_mut(), only_if_ready);
        let Ok(written) = written else {
            self.drop_conn(idx, false, io);
            return;
        };
        if written > 0 && c.ladder().deferred {
            self.pump_after_write(idx);
        }
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        add(&self.t.metrics().bytes_out, written);
        let left = c.out_len() as u64;
        c.ladder_mut().on_write(self.now, written, left);
        if c.nothing_to_send() && io.flushed(idx) {
            c.release_small_storage();
            c.settle_after_write(self.now, self.t.ctx.config.close_timeout);
            if c.is_finished() {
                self.drop_conn(idx, true, io);
            }
        }
    }

    /// True when the ingester must be woken (snapshot requests were sent); clears it.
    pub(crate) fn take_ingest_wake(&mut self) -> bool {
        std::mem::take(&mut self.t.requests_sent)
    }

    // ---- timers ----

    /// When [`Self::handle_timeout`] should next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Runs the timers due at the turn's `now` (see `timers.rs`).
    pub(crate) fn handle_timeout<T: Transport>(&mut self, io: &mut T) {
        let now = self.now;
        for timer in self.timers.expire(now) {
            match timer {
                Timer::Sweep => {
                    self.sweep(io);
                    self.timers.set(Timer::Sweep, now + SWEEP);
                }
                Timer::AcceptPause => self.accept_resumed = true,
                Timer::TokenExpiry => self.expire_tokens(),
                // `shutdown_done` reports it.
                Timer::Shutdown => self.timers.set(Timer::Shutdown, now),
            }
        }
    }
}

/// The connection table, with room for `max_conns` reserved up front: growing it by doubling
/// would copy it and leave the old copies as freed but resident heap (about the table's size
/// again). Pages of the reservation that no connection used are never touched, so they cost
/// address space, not memory.
fn slot_table(max_conns: usize) -> Vec<Slot> {
    Vec::with_capacity(max_conns.min(1 << 20))
}

/// The live connection in slot `idx`, if any.
pub(crate) fn conn_mut(slots: &mut [Slot], idx: u32) -> Option<&mut Conn> {
    slots.get_mut(idx as usize).and_then(|s| s.conn.as_mut())
}
