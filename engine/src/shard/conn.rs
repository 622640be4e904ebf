//! One client connection as the shard core sees it: where it is in its life ([`Phase`]), its
//! protocol state, its buffers and its subscriptions. No socket: the driver keeps those, in a
//! table indexed like the core's slots.
//!
//! The fields are private; the core changes a connection through methods named after what they
//! do (`respond`, `upgrade`, `begin_closing`, `begin_evicting`, ...), so the lifecycle rules
//! below hold in one place:
//!
//! ```text
//! Handshaking ──upgrade──► Open ──begin_closing──► Closing ──written + closed──► gone
//!      │                    │                          ▲
//!      │                    └──begin_evicting──► Evicting ──out-buffer empty──┘
//!      └──respond──► Responding ──written──► gone
//! ```

use ::core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::fanout::batch::text_message;
use crate::fanout::entitle::Grant;
use crate::fanout::keepalive::{Action, KeepAlive};
use crate::fanout::ladder::RateMeter;
use crate::fanout::limit::{RateLimit, RateLimiter, Verdict};
use crate::fanout::outbuf::OutBuf;
use crate::fanout::{Format, Topic};
use crate::proto::conn::{ConnState, WsConn};
use crate::proto::deflate::DeflateParams;
use crate::proto::frame::{OpCode, encode_control};

/// [`Conn::owed_at`] of a connection owed nothing from the current drain.
pub(crate) const NOT_OWED: u32 = u32::MAX;

/// Which endpoint a connection is open on: a WebSocket (`/ws`, `/echo`) or one of the
/// plain-HTTP streams of protocol §3.4 (`/stream`, `/sse`; see `streams.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/ws`: control messages in, data streams out.
    Ws,
    /// `/echo` (only with `--echo`): every text or binary message is sent back as one
    /// unfragmented message, for the conformance suite.
    Echo,
    /// `GET /stream`: a chunked response of frames `{u32 length, u8 type, payload}`.
    Stream,
    /// `GET /sse`: a chunked `text/event-stream` response.
    Sse,
}

impl Endpoint {
    /// True for the plain-HTTP streams (no WebSocket, nothing read after the request head).
    pub(crate) fn is_http_stream(self) -> bool {
        matches!(self, Self::Stream | Self::Sse)
    }
}

/// Where a connection is in its life (the slot being empty is "gone").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a complete upgrade request until the deadline (then 408).
    Handshaking { deadline: Instant },
    /// A plain HTTP response is queued; the connection is gone once it is written.
    Responding,
    /// WebSocket open: control messages in, data out.
    Open,
    /// A close frame is queued or sent; no more data. Gone when the close handshake ends or at
    /// the deadline.
    Closing { deadline: Instant },
    /// A slow consumer's close (1013) waits behind the message it was in the middle of; the
    /// socket is kept until the deadline so that a client that reads again gets the close.
    /// Once the out-buffer is empty the connection is [`Phase::Closing`].
    Evicting { deadline: Instant },
}

/// The kind of a [`Phase`], without its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshaking,
    Responding,
    Open,
    Closing,
    Evicting,
}

/// One subscription of a connection (one symbol).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sub {
    pub(crate) sid: u32,
    pub(crate) depth_idx: u8,
    pub(crate) book: bool,
    pub(crate) trades: bool,
    /// The snapshot arrived: the connection is in the book topic's subscriber list.
    pub(crate) ready: bool,
    /// The snapshot request this subscription waits for (or the subscribe it belongs to).
    pub(crate) req: u32,
    /// The snapshot request was sent (or joined one in flight); false while it waits for
    /// room in the out-buffer (snapshots are paced, see `Tables::pump_snapshots`).
    pub(crate) asked: bool,
    /// The rate tier granted by `max_hz` (an index into `fanout::TIERS_HZ`), or [`NO_TIER`]:
    /// deltas.
    pub(crate) tier: u8,
    /// Part of a subscribe with `resume` whose answer has not come out of the ring: neither
    /// its book nor its trades are in the topic lists yet, and it gets nothing (not even a
    /// status) until the answer, which starts its streams (replay, or a fresh start).
    pub(crate) resuming: bool,
}

/// A connection's subscriptions: one is kept inline (an idle screen or bot often watches one
/// symbol, and then pays no heap block of 32 bytes for its list), more in a `Vec` sized exactly.
#[derive(Debug, Default)]
pub(crate) enum SubList {
    #[default]
    Empty,
    One(Sub),
    Many(Vec<Sub>),
}

impl SubList {
    pub(crate) fn as_slice(&self) -> &[Sub] {
        match self {
            Self::Empty => &[],
            Self::One(s) => std::slice::from_ref(s),
            Self::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Sub] {
        match self {
            Self::Empty => &mut [],
            Self::One(s) => std::slice::from_mut(s),
            Self::Many(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Room for exactly `n` more: past one, the list moves to a `Vec` of the exact size.
    fn reserve_exact(&mut self, n: usize) {
        match self {
            Self::Many(v) => v.reserve_exact(n),
            _ if self.len() + n <= 1 => {}
            _ => {
                let mut v = Vec::with_capacity(self.len() + n);
                v.extend_from_slice(self.as_slice());
                *self = Self::Many(v);
            }
        }
    }

    fn push(&mut self, sub: Sub) {
        match self {
            Self::Empty => *self = Self::One(sub),
            Self::One(a) => *self = Self::Many(vec![*a, sub]),
            Self::Many(v) => v.push(sub),
        }
    }

    fn swap_remove(&mut self, pos: usize) -> Sub {
        match self {
            Self::Many(v) => {
                let s = v.swap_remove(pos);
                if v.is_empty() {
                    *self = Self::Empty;
                }
                s
            }
            _ => {
                let s = self.as_slice()[pos];
                *self = Self::Empty;
                s
            }
        }
    }

    /// Gives back spare capacity (a `Vec` that shrank to one entry goes back inline).
    fn shrink_to_fit(&mut self) {
        if let Self::Many(v) = self {
            match v.len() {
                0 => *self = Self::Empty,
                1 => *self = Self::One(v[0]),
                _ => v.shrink_to_fit(),
            }
        }
    }
}

impl IntoIterator for SubList {
    type Item = Sub;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Sub>, std::vec::IntoIter<Sub>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::Empty => None.into_iter().chain(Vec::new()),
            Self::One(s) => Some(s).into_iter().chain(Vec::new()),
            Self::Many(v) => None.into_iter().chain(v),
        }
    }
}

/// [`Sub::tier`] of a subscription that asked for no `max_hz`.
pub(crate) const NO_TIER: u8 = u8::MAX;

/// Where a connection is on the slow-consumer ladder (docs/protocol.md §5.2).
///
/// A connection that always keeps up needs only the two fields inline; the rung it is on and
/// its rate meter are boxed and made at its first write that leaves bytes behind (or when it
/// starts conflating), so an idle subscriber pays 16 bytes here instead of 48.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ladder {
    /// Some book subscription waits to send its snapshot request.
    pub(crate) deferred: bool,
    /// The largest snapshot this connection got (bytes): how much room a request needs.
    pub(crate) snap_est: u32,
    rung: Option<Box<Rung>>,
}

/// The cold part of a [`Ladder`].
#[derive(Debug, Clone, Default)]
struct Rung {
    /// Conflating under pressure since then, at rate tier `tier`; `None`: live.
    since: Option<Instant>,
    /// Since when a conflating connection owes more than the soft mark (eviction after
    /// `conflate-grace`).
    over_since: Option<Instant>,
    /// The pressure tier while conflating.
    tier: u8,
    /// This stay on the conflating rung was counted in `ladder_held`.
    held: bool,
    /// Its live and drain rates: whether a drained conflating connection may go live. Made at
    /// the first write that leaves bytes behind.
    meter: Option<RateMeter>,
}

impl Ladder {
    fn rung_mut(&mut self) -> &mut Rung {
        self.rung.get_or_insert_with(Box::default)
    }

    /// Conflating since then; `None`: live.
    pub(crate) fn since(&self) -> Option<Instant> {
        self.rung.as_ref().and_then(|r| r.since)
    }

    /// The pressure tier while conflating.
    pub(crate) fn tier(&self) -> u8 {
        self.rung.as_ref().map_or(0, |r| r.tier)
    }

    pub(crate) fn set_tier(&mut self, tier: u8) {
        if self.rung.is_some() || tier != NO_TIER {
            self.rung_mut().tier = tier;
        }
    }

    /// Starts conflating at `now` with `owed` bytes queued.
    pub(crate) fn start_conflating(&mut self, now: Instant, owed: u64) {
        let r = self.rung_mut();
        r.since = Some(now);
        r.over_since = None;
        r.held = false;
        r.meter
            .get_or_insert_with(RateMeter::default)
            .climb(now, owed);
    }

    /// Live again at `now` with `owed` bytes queued.
    pub(crate) fn go_live(&mut self, now: Instant, owed: u64) {
        if let Some(r) = self.rung.as_deref_mut() {
            r.since = None;
            r.over_since = None;
            if let Some(m) = r.meter.as_mut() {
                m.go_live(now, owed);
            }
        }
    }

    /// Stops conflating (every subscription is gone).
    pub(crate) fn clear_since(&mut self) {
        if let Some(r) = self.rung.as_deref_mut() {
            r.since = None;
        }
    }

    /// Its rate meter, if a write ever left a backlog.
    pub(crate) fn meter(&self) -> Option<RateMeter> {
        self.rung.as_ref().and_then(|r| r.meter)
    }

    /// Marks this stay on the conflating rung as counted in `ladder_held`; true if it already
    /// was.
    pub(crate) fn mark_held(&mut self) -> bool {
        std::mem::replace(&mut self.rung_mut().held, true)
    }

    /// Since when it owes more than the soft mark (from `now` if it did not before).
    pub(crate) fn over_since_or(&mut self, now: Instant) -> Instant {
        *self.rung_mut().over_since.get_or_insert(now)
    }

    /// It owes less than the soft mark.
    pub(crate) fn clear_over_since(&mut self) {
        if let Some(r) = self.rung.as_deref_mut() {
            r.over_since = None;
        }
    }

    /// A write of `written` bytes at `now` left `left` bytes in the out-buffer (see
    /// [`RateMeter::on_write`]); the meter starts at the first write that leaves a backlog.
    pub(crate) fn on_write(&mut self, now: Instant, written: u64, left: u64) {
        match self.rung.as_deref_mut().and_then(|r| r.meter.as_mut()) {
            Some(m) => m.on_write(now, written, left),
            None if left > 0 => {
                let mut m = RateMeter::default();
                m.on_write(now, written, left);
                self.rung_mut().meter = Some(m);
            }
            None => {}
        }
    }
}

/// A `subscribed` reply held until the ingester's answer to the subscribe's `resume` comes out
/// of the ring (nothing of its symbols is sent before it).
#[derive(Debug)]
pub(crate) struct HeldReply {
    /// The subscribe's request number (its subscriptions and the answer carry it).
    pub(crate) req: u32,
    /// The request's id, echoed.
    pub(crate) rid: serde_json::Value,
    /// The subscribe's symbols, in reply order.
    pub(crate) sids: Vec<u32>,
    /// The symbols `resume` named (they get `recovered`).
    pub(crate) named: Vec<u32>,
    /// The `max_hz` granted (a rate tier's), echoed per symbol.
    pub(crate) max_hz: Option<u16>,
}

/// Bytes received and not processed yet: only a partial frame or request between reads, so
/// usually nothing. Boxed on demand (8 bytes per idle connection instead of a `BytesMut`'s 32).
#[derive(Debug, Default)]
struct InBuf(Option<Box<BytesMut>>);

impl InBuf {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |b| &b[..])
    }

    /// The buffer itself (allocated if there was none), for the protocol code.
    fn buf_mut(&mut self) -> &mut BytesMut {
        self.0.get_or_insert_with(Box::default)
    }
}

/// A client's address, packed (19 bytes of fields instead of `SocketAddr`'s 32: this is kept
/// per connection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    ip: IpAddr,
    port: u16,
}

impl Peer {
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// Settings a new connection starts with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    pub(crate) max_outbuf_bytes: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) control: RateLimit,
}

/// A client connection owned by one shard.
#[derive(Debug)]
pub(crate) struct Conn {
    peer: Peer,
    /// The phase, stored as its kind and its deadline ([`Conn::phase`] puts them together):
    /// 17 bytes instead of the enum's 24, packed with the other small fields.
    stage: Stage,
    deadline: Instant,
    ws: Option<WsConn>,
    endpoint: Endpoint,
    /// permessage-deflate parameters, when negotiated.
    deflate: Option<DeflateParams>,
    format: Format,
    inbuf: InBuf,
    out: OutBuf,
    /// Where what the connection is owed from the current ring drain is kept: its index in the
    /// shard's table of pending batches (and in its dirty list), or [`NOT_OWED`].
    owed: u32,
    subs: SubList,
    /// Replies held for resumes in flight, and `/sse`'s event positions: rare, so boxed
    /// together (8 bytes per connection).
    rare: Option<Box<Rare>>,
    limiter: RateLimiter,
    next_req: u32,
    /// The last status delivery this connection got (see `deliver_status` in `dispatch.rs`).
    /// (Truncated to 32 bits: a false match needs 2^32 status deliveries in between.)
    status_stamp: u32,
    /// Ping schedule: any bytes from the client count as a sign of life.
    keepalive: KeepAlive,
    /// The slow-consumer ladder and snapshot pacing.
    ladder: Ladder,
    /// What the client's JWT grants (only with JWTs configured; boxed: most setups have none).
    grant: Option<Box<Grant>>,
}

/// The rarely used parts of a [`Conn`].
#[derive(Debug, Default)]
struct Rare {
    /// Replies held for resumes in flight.
    held: Vec<HeldReply>,
    /// `/sse` only: the positions its event ids carry (see `streams.rs`).
    sse: Option<super::streams::SsePositions>,
}

impl Conn {
    /// A connection just accepted from `peer`, waiting for its request.
    pub(crate) fn new(peer: SocketAddr, now: Instant, s: &ConnSettings) -> Self {
        Self {
            peer: peer.into(),
            stage: Stage::Handshaking,
            deadline: now + s.handshake_timeout,
            ws: None,
            endpoint: Endpoint::Ws,
            deflate: None,
            format: Format::Binary,
            inbuf: InBuf::default(),
            out: OutBuf::new(s.max_outbuf_bytes),
            owed: NOT_OWED,
            subs: SubList::Empty,
            rare: None,
            limiter: RateLimiter::new(&s.control, now),
            next_req: 0,
            status_stamp: 0,
            keepalive: KeepAlive::new(now),
            ladder: Ladder::default(),
            grant: None,
        }
    }

    /// What the client's token grants (`None`: no JWTs, every symbol).
    pub(crate) fn grant(&self) -> Option<&Grant> {
        self.grant.as_deref()
    }

    /// Replaces the token's grant (at the upgrade, and on `refresh`).
    pub(crate) fn set_grant(&mut self, grant: Option<Grant>) {
        self.grant = grant.map(Box::new);
    }

    // ---- what it is ----

    pub(crate) fn peer(&self) -> Peer {
        self.peer
    }

    pub(crate) fn phase(&self) -> Phase {
        let deadline = self.deadline;
        match self.stage {
            Stage::Handshaking => Phase::Handshaking { deadline },
            Stage::Responding => Phase::Responding,
            Stage::Open => Phase::Open,
            Stage::Closing => Phase::Closing { deadline },
            Stage::Evicting => Phase::Evicting { deadline },
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        (self.stage, self.deadline) = match phase {
            Phase::Handshaking { deadline } => (Stage::Handshaking, deadline),
            Phase::Responding => (Stage::Responding, self.deadline),
            Phase::Open => (Stage::Open, self.deadline),
            Phase::Closing { deadline } => (Stage::Closing, deadline),
            Phase::Evicting { deadline } => (Stage::Evicting, deadline),
        };
    }

    pub(crate) fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Its transport, as counted in `/metrics` (index into `metrics::TRANSPORTS`: `/ws`,
    /// `/stream`, `/sse`), once open; `None` before, for `/echo`, and for a stream request
    /// answered with an error.
    pub(crate) fn transport_index(&self) -> Option<usize> {
        match self.endpoint {
            Endpoint::Ws if self.ws.is_some() => Some(0),
            Endpoint::Stream if self.stage != Stage::Responding => Some(1),
            Endpoint::Sse if self.stage != Stage::Responding => Some(2),
            _ => None,
        }
    }

    /// permessage-deflate parameters, when negotiated.
    pub(crate) fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }

    // ---- input ----

    /// Appends bytes read from the socket; any bytes count as a sign of life.
    pub(crate) fn buffer_input(&mut self, data: &[u8], now: Instant) {
        self.keepalive.heard(now);
        self.inbuf.buf_mut().extend_from_slice(data);
    }

    /// Bytes received and not processed yet.
    pub(crate) fn buffered_input(&self) -> usize {
        self.inbuf.len()
    }

    /// What is buffered, for the HTTP parser.
    pub(crate) fn input(&self) -> &[u8] {
        self.inbuf.as_slice()
    }

    /// Drops the first `n` buffered bytes (a parsed request head).
    pub(crate) fn consume_input(&mut self, n: usize) {
        if let Some(b) = self.inbuf.0.as_mut() {
            let _ = b.split_to(n.min(b.len()));
        }
    }

    /// Gives the input buffer's storage back when nothing is left in it: an idle subscriber
    /// keeps no read buffer.
    pub(crate) fn release_idle_input(&mut self) {
        if self.inbuf.len() == 0 {
            self.inbuf.0 = None;
        }
    }

    /// Runs the WebSocket protocol over the buffered input until it yields an event (or needs
    /// more bytes), queueing what the protocol sends by itself (pongs, close replies).
    pub(crate) fn poll_ws_event(
        &mut self,
    ) -> Option<Result<Option<crate::proto::conn::Event>, crate::proto::conn::ProtocolViolation>>
    {
        let ws = self.ws.as_mut()?;
        let result = ws.handle_input(self.inbuf.buf_mut());
        while let Some(frame) = ws.poll_transmit() {
            self.out.push_shared(frame, true);
        }
        Some(result)
    }

    /// Takes a control-message token (requests and pings); see [`RateLimiter`].
    pub(crate) fn check_rate(&mut self, limit: &RateLimit, now: Instant) -> Verdict {
        self.limiter.check(limit, now)
    }

    /// How long a rate-limited client should wait.
    pub(crate) fn retry_after(&self, limit: &RateLimit) -> Duration {
        self.limiter.retry_after(limit)
    }

    // ---- output ----

    /// The out-buffer, for the batcher (which appends) and the driver (which writes it).
    pub(crate) fn out_mut(&mut self) -> &mut OutBuf {
        &mut self.out
    }

    /// True when nothing is queued for the socket.
    pub(crate) fn nothing_to_send(&self) -> bool {
        self.out.is_empty()
    }

    /// Queues a control reply (a text message). Replies are small and bounded by the rate
    /// limit, so they are not counted against the data bound.
    /// On an HTTP stream, the reply is a control message of its framing (`streams.rs`).
    pub(crate) fn queue_reply(&mut self, json: &[u8]) {
        let framed = if self.endpoint.is_http_stream() {
            super::streams::control_chunk(self.endpoint, json)
        } else {
            text_message(json)
        };
        self.out.push_shared(framed, true);
    }

    /// Queues a keepalive ping carrying `n`.
    pub(crate) fn queue_ping(&mut self, n: u64) {
        self.out
            .push_shared(encode_control(OpCode::Ping, &n.to_be_bytes()), true);
    }

    /// The keepalive's verdict at `now` (ping, idle or dead).
    pub(crate) fn poll_keepalive(&mut self, now: Instant, interval: Duration) -> Action {
        self.keepalive.poll(now, interval)
    }

    // ---- lifecycle ----

    /// Queues a complete HTTP response (`bytes`) and ends the connection once it is written.
    pub(crate) fn respond(&mut self, bytes: Vec<u8>) {
        self.out.push_shared(Bytes::from(bytes), true);
        self.set_phase(Phase::Responding);
        self.inbuf.0 = None;
    }

    /// [`Conn::respond`] with a body from the binary (a built-in file), not copied.
    pub(crate) fn respond_static(&mut self, head: Vec<u8>, body: &'static [u8]) {
        self.out.push_shared(Bytes::from(head), body.is_empty());
        if !body.is_empty() {
            self.out.push_shared(Bytes::from_static(body), true);
        }
        self.set_phase(Phase::Responding);
        self.inbuf.0 = None;
    }

    /// The upgrade was accepted: `response` (the 101) is queued and the WebSocket is open.
    pub(crate) fn upgrade(
        &mut self,
        response: Vec<u8>,
        endpoint: Endpoint,
        format: Format,
        deflate: Option<DeflateParams>,
        ws: WsConn,
    ) {
        self.out.push_shared(Bytes::from(response), true);
        self.endpoint = endpoint;
        self.format = format;
        self.deflate = deflate;
        self.ws = Some(ws);
        self.set_phase(Phase::Open);
    }

    /// An HTTP stream (`/stream` or `/sse`) is open (the caller queues the response head);
    /// data follows as HTTP chunks. Nothing is read from the client any more.
    pub(crate) fn open_http_stream(&mut self, endpoint: Endpoint, format: Format) {
        self.endpoint = endpoint;
        self.format = format;
        self.set_phase(Phase::Open);
        self.inbuf.0 = None;
    }

    pub(crate) fn set_sse_positions(&mut self, p: super::streams::SsePositions) {
        self.rare.get_or_insert_with(Box::default).sse = Some(p);
    }

    /// The out-buffer and the SSE positions at once (the SSE batcher needs both).
    pub(crate) fn out_and_sse(
        &mut self,
    ) -> (&mut OutBuf, Option<&mut super::streams::SsePositions>) {
        let sse = self.rare.as_deref_mut().and_then(|r| r.sse.as_mut());
        (&mut self.out, sse)
    }

    /// HTTP streams: true when a keep-alive is due at `now` (every `interval`, whatever else was
    /// sent: the client cannot answer, so the schedule just restarts).
    pub(crate) fn keepalive_due(&mut self, now: Instant, interval: Duration) -> bool {
        match self.keepalive.poll(now, interval) {
            Action::Idle => false,
            Action::Ping(_) | Action::Dead => {
                self.keepalive.heard(now);
                true
            }
        }
    }

    /// Queues a server-initiated close frame (`code`, `reason`); with `discard_unsent`, data
    /// queued and not started is dropped first. An HTTP stream gets a last control message
    /// (`{"op":"closing","code":..,"reason":..}`) and the chunked body's end instead.
    pub(crate) fn queue_close(&mut self, code: u16, reason: &str, discard_unsent: bool) {
        if discard_unsent {
            self.out.discard_unsent();
        }
        if self.endpoint.is_http_stream() && self.stage == Stage::Open {
            let msg = super::streams::closing_message(code, reason);
            self.out
                .push_shared(super::streams::control_chunk(self.endpoint, &msg), true);
            self.out
                .push_shared(Bytes::from_static(super::streams::LAST_CHUNK), true);
            return;
        }
        if let Some(ws) = self.ws.as_mut() {
            ws.close(code, reason);
            while let Some(frame) = ws.poll_transmit() {
                self.out.push_shared(frame, true);
            }
        }
    }

    /// Enters [`Phase::Closing`] until `deadline`; false when it was already closing (or
    /// evicting), which keeps its deadline.
    pub(crate) fn begin_closing(&mut self, deadline: Instant) -> bool {
        if matches!(self.stage, Stage::Closing | Stage::Evicting) {
            return false;
        }
        self.set_phase(Phase::Closing { deadline });
        self.owed = NOT_OWED;
        true
    }

    /// Enters [`Phase::Evicting`] until `deadline` (after [`Conn::begin_closing`] or from any
    /// phase: eviction wins).
    pub(crate) fn begin_evicting(&mut self, deadline: Instant) {
        self.set_phase(Phase::Evicting { deadline });
        self.owed = NOT_OWED;
    }

    /// After a write: an evicted connection whose out-buffer emptied (its close frame is with
    /// the kernel) gets `close_timeout` from now for the close handshake, like any other
    /// closing connection, however long its eviction deadline was.
    pub(crate) fn settle_after_write(&mut self, now: Instant, close_timeout: Duration) {
        if let Phase::Evicting { deadline } = self.phase() {
            if self.out.is_empty() {
                self.set_phase(Phase::Closing {
                    deadline: deadline.min(now + close_timeout),
                });
            }
        }
    }

    /// True when the connection has nothing more to do: its response or close is written and,
    /// for a WebSocket, the close handshake is over.
    pub(crate) fn is_finished(&self) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        match self.phase() {
            Phase::Responding => true,
            Phase::Closing { .. } | Phase::Evicting { .. } => self
                .ws
                .as_ref()
                .is_none_or(|ws| ws.state() == ConnState::Closed),
            Phase::Handshaking { .. } | Phase::Open => false,
        }
    }

    /// The deadline of the current phase, if it has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase() {
            Phase::Handshaking { deadline }
            | Phase::Closing { deadline }
            | Phase::Evicting { deadline } => Some(deadline),
            Phase::Responding | Phase::Open => None,
        }
    }

    // ---- what it is owed from the current drain ----

    /// Its index in the shard's pending table, or [`NOT_OWED`].
    pub(crate) fn owed_at(&self) -> u32 {
        self.owed
    }

    pub(crate) fn set_owed_at(&mut self, at: u32) {
        self.owed = at;
    }

    /// Forgets what the connection is owed from this drain.
    pub(crate) fn clear_pending(&mut self) {
        self.owed = NOT_OWED;
    }

    /// Takes status delivery `stamp` unless this connection already got it (or is not open);
    /// true when it should get the record.
    pub(crate) fn take_status(&mut self, stamp: u64) -> bool {
        // Stamps are compared in 32 bits: a wrap would need four billion status deliveries
        // between two of one connection's.
        let stamp = stamp as u32;
        if self.status_stamp == stamp || !self.is_open() {
            return false;
        }
        self.status_stamp = stamp;
        true
    }

    // ---- subscriptions ----

    pub(crate) fn subscriptions(&self) -> &[Sub] {
        self.subs.as_slice()
    }

    pub(crate) fn subscription_mut(&mut self, sid: u32) -> Option<&mut Sub> {
        self.subs.as_mut_slice().iter_mut().find(|s| s.sid == sid)
    }

    pub(crate) fn subscriptions_mut(&mut self) -> &mut [Sub] {
        self.subs.as_mut_slice()
    }

    /// Removes and returns the subscription to `sid`.
    pub(crate) fn remove_subscription(&mut self, sid: u32) -> Option<Sub> {
        let pos = self.subs.as_slice().iter().position(|s| s.sid == sid)?;
        Some(self.subs.swap_remove(pos))
    }

    /// Removes and returns every subscription.
    pub(crate) fn take_subscriptions(&mut self) -> SubList {
        std::mem::take(&mut self.subs)
    }

    /// Makes room for exactly `n` more (a subscriber keeps its list for its whole life).
    pub(crate) fn reserve_subscriptions(&mut self, n: usize) {
        self.subs.reserve_exact(n);
    }

    pub(crate) fn add_subscription(&mut self, sub: Sub) {
        self.subs.push(sub);
    }

    /// True when a book subscription of `sid` in `format` still waits for its snapshot.
    pub(crate) fn waits_for_snapshot(&self, sid: u32, format: Format) -> bool {
        self.format == format
            && self
                .subs
                .as_slice()
                .iter()
                .any(|s| s.sid == sid && s.book && !s.ready && !s.resuming)
    }

    /// Holds a `subscribed` reply until its resume is answered.
    pub(crate) fn hold_reply(&mut self, reply: HeldReply) {
        self.rare.get_or_insert_with(Box::default).held.push(reply);
    }

    /// The reply held for subscribe `req`, if any (none: the answer is stale).
    pub(crate) fn take_held(&mut self, req: u32) -> Option<HeldReply> {
        let rare = self.rare.as_deref_mut()?;
        let pos = rare.held.iter().position(|h| h.req == req)?;
        let reply = rare.held.swap_remove(pos);
        if rare.held.is_empty() && rare.sse.is_none() {
            self.rare = None;
        }
        Some(reply)
    }

    /// Every held reply (a ring resync: their answers may be lost).
    pub(crate) fn take_all_held(&mut self) -> Vec<HeldReply> {
        let Some(rare) = self.rare.as_deref_mut() else {
            return Vec::new();
        };
        let held = std::mem::take(&mut rare.held);
        if rare.sse.is_none() {
            self.rare = None;
        }
        held
    }

    /// The topic a book subscription's records come from: its deltas, or conflated snapshots
    /// at the lower of its `max_hz` tier and the ladder's pressure tier.
    pub(crate) fn book_topic(&self, s: &Sub) -> Topic {
        let pressure = if self.ladder.since().is_some() {
            self.ladder.tier()
        } else {
            NO_TIER
        };
        book_topic_at(s, self.format, pressure)
    }

    pub(crate) fn ladder(&self) -> &Ladder {
        &self.ladder
    }

    pub(crate) fn ladder_mut(&mut self) -> &mut Ladder {
        &mut self.ladder
    }

    /// Bytes queued for the socket.
    pub(crate) fn out_len(&self) -> usize {
        self.out.len()
    }

    /// The out-buffer bound.
    pub(crate) fn out_limit(&self) -> usize {
        self.out.limit()
    }

    /// A fresh snapshot request number.
    pub(crate) fn next_request(&mut self) -> u32 {
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        req
    }

    // ---- memory ----

    /// Gives back the heap storage an idle connection does not need (out-buffer queue, spare
    /// subscription capacity); called from the shard's sweep. Active connections allocate
    /// again on their next message, at most once per sweep. (What a connection is owed from a
    /// drain lives in the shard's table, not here.)
    pub(crate) fn release_idle_storage(&mut self) {
        if !self.out.is_empty() || self.owed != NOT_OWED {
            return;
        }
        self.out.release_storage();
        self.subs.shrink_to_fit();
    }

    /// After a write that emptied the out-buffer: gives back the out-buffer queue when it is
    /// small (a connection that gets a few messages per wake). A burst that reaches thousands
    /// of connections at once (snapshots for a `*` subscription, a resync) then does not leave
    /// each of them holding storage, which the allocator would keep resident after the burst.
    /// Large ones (busy connections) are kept and released by the sweep once idle; the cost is
    /// one small allocation per write, against a `writev`.
    pub(crate) fn release_small_storage(&mut self) {
        const SMALL: usize = 8;
        if self.out.is_empty() {
            self.out.release_storage_if_at_most(SMALL);
        }
    }
}

/// The topic of book subscription `s` in `format` under pressure tier `pressure` ([`NO_TIER`]:
/// none).
pub(crate) fn book_topic_at(s: &Sub, format: Format, pressure: u8) -> Topic {
    let depth = usize::from(s.depth_idx);
    match s.tier.min(pressure) {
        NO_TIER => Topic::book(s.sid, depth, format),
        t => Topic::conflated(s.sid, depth, usize::from(t), format),
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use std::mem::size_of;

    /// Every connection costs `size_of::<Conn>()` in the shard's table plus its socket in the
    /// driver's, idle or not: the bulk of an idle subscriber's memory (docs/operations.md,
    /// "Memory per connection"). A change that grows these should be deliberate: update the
    /// figures here and there.
    #[test]
    fn idle_connection_state_stays_small() {
        assert!(
            size_of::<super::Conn>() <= 264,
            "{}",
            size_of::<super::Conn>()
        );
        assert!(size_of::<Option<crate::proto::conn::WsConn>>() <= 48);
        assert!(size_of::<crate::fanout::outbuf::OutBuf>() <= 48);
        assert!(size_of::<crate::fanout::limit::RateLimiter>() <= 24);
        assert!(size_of::<crate::fanout::keepalive::KeepAlive>() <= 24);
        assert!(size_of::<super::Ladder>() <= 16);
        assert!(size_of::<super::SubList>() <= 24);
        assert!(size_of::<super::Peer>() <= 20);
    }
}
