//! The ingester thread: the feed edge.
//!
//! It reads the exchange feed (JSON over WebSocket on a non-blocking socket watched by its own
//! mio `Poll`) into one read buffer, where the engine's sans-IO client codec (`feed/ws.rs`)
//! finds each message, and decodes each message where it lies (the hot ones in the feed's own
//! form by the decoder's scanner, everything else by simd-json, in place), applies it to
//! the symbol's book, encodes each resulting record once per format that some shard listens to,
//! and pushes it into the rings of those shards. Between feed reads it answers the shards'
//! snapshot requests, in order with the records, which is what lines a subscriber's snapshot up
//! with the deltas that follow it.
//!
//! Sync with the feed, per symbol (protocol.md §3):
//! - a snapshot starts it; each update must carry the feed seq + 1;
//! - stale or duplicate updates are dropped and counted;
//! - an update exactly one ahead (seq + 2) is held back for [`REORDER_WINDOW`] in case its
//!   predecessor arrives right after it (two updates swapped on the way); then both apply;
//! - any other gap, an update the book refuses, a heartbeat showing a later seq, or a snapshot
//!   that does not load marks the symbol out of sync: its subscribers get a status record
//!   "stale" (code 1), the feed is asked for a fresh snapshot of that symbol alone
//!   (`{"op":"snapshot"}`) and its updates are ignored until the snapshot arrives. The snapshot
//!   replaces every client's book with a flagged snapshot record that continues its stream's
//!   seq, then a status "resumed" (code 2) follows. Other symbols carry on.
//!
//! On disconnect, or when the feed sends nothing for [`IngestContext::stall_timeout`] (it is
//! pinged at half that), every symbol goes stale the same way, and the ingester reconnects with
//! exponential back-off and jitter; the feed's snapshots on connect resync every symbol.
//!
//! Messages that do not decode (malformed JSON, unknown symbols, bad fields) are counted and
//! logged at most once per thousand; they never mark a healthy symbol stale: a lost update
//! shows as a gap on the next message of its symbol.
//!
//! [`Replay`] drives the same message path without a socket, for benchmarks and tests.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::unix::SourceFd;
use mio::{Events, Interest as Io, Poll, Token};

use crate::book::{Book, DEPTHS, DepthMask, Side, WindowDeltas};
use crate::clock::{self, Stamp};
use crate::config::FeedUrl;
use crate::fanout::interest::Interest;
use crate::fanout::{Format, STREAMS_PER_SYMBOL, Topic};
use crate::feed::conflate::Conflation;
use crate::feed::decode::{Change, FeedDecoder, FeedEvent, SymbolSpec};
pub use crate::feed::error::{FeedError, FeedMisbehaved};
use crate::feed::ws::{self, ClientWs, FeedProtocolError, Input, Next};
use crate::metrics::{IngestMetrics, Metrics, add};
use crate::proto::close_code;
use crate::replay::epoch::EpochCell;
use crate::replay::{ReplayLimits, ReplayWindows};
use crate::ring::{
    IngestRequest, Push, ResumeAnswer, ResumeRequest, Ring, ShardMsg, SymbolDirectory,
    SymbolResumed, SymbolTable,
};
use crate::wire::{self, FLAG_SNAPSHOT, RecordHeader, RecordKind, StatusCode, SymbolMeta, Trade};

/// Token of the feed socket.
const FEED: Token = Token(0);
/// Token of the ingester's waker (shards' requests).
pub const REQUESTS: Token = Token(1);
/// Feed messages handled before requests are served and shards woken.
const READ_BATCH: usize = 4096;
/// Bytes reserved at a time for encoded records; records are split off and shared.
const ARENA_CHUNK: usize = 256 * 1024;
/// Default of [`IngestContext::stall_timeout`] (the `feed-stall-timeout` setting).
pub const DEFAULT_STALL_TIMEOUT: Duration = crate::config::DEFAULT_FEED_STALL_TIMEOUT;
/// How long an update that arrived one ahead of its predecessor waits for it.
pub const REORDER_WINDOW: Duration = Duration::from_millis(50);
/// Longest the poll loop sleeps while the feed is quiet.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// A feed session that ran this long resets the reconnect back-off even if it never synced.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// Size of the feed's read buffer (it grows for a message larger than this, up to
/// [`ws::MAX_MESSAGE`], and shrinks back when empty).
const READ_BUF: usize = 1 << 20;
/// Room a read is given at least.
const READ_MIN: usize = 64 << 10;

/// The feed connection: the socket, one read buffer in which messages are decoded where they
/// lie, the client codec, and the frames waiting to be written.
#[derive(Debug)]
struct FeedConn {
    sock: TcpStream,
    ws: ClientWs,
    /// `buf[start..end]`: bytes read and not consumed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs (from `start`) before it can be parsed.
    need: usize,
    /// Wall clock (ns since the Unix epoch) of the last read that returned bytes: the receive
    /// timestamp of every message that read completed (one clock read per socket read).
    read_ns: u64,
    /// Frames to send (masked by the codec), written as the socket takes them.
    out: Vec<u8>,
}

impl FeedConn {
    /// Makes room for a read: drops what was consumed, moves a partial frame to the front when
    /// room runs short, grows the buffer for a frame larger than it.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUF {
                self.buf.truncate(READ_BUF);
                self.buf.shrink_to_fit();
            }
        } else if self.buf.len() - self.end < READ_MIN || self.buf.len() - self.start < self.need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = (self.start + self.need).max(self.end) + READ_MIN;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }

    /// Reads once into the buffer: `Ok(false)` when the socket has nothing now.
    fn read(&mut self) -> Result<bool, FeedError> {
        self.make_room();
        loop {
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(FeedError::Eof),
                Ok(n) => {
                    self.end += n;
                    self.read_ns = clock::realtime_ns();
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes what the socket takes of the queued frames.
    fn flush(&mut self) -> Result<(), FeedError> {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => return Err(FeedError::Eof),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The feed broke the protocol: the codec queued a close frame; send what can be sent.
    fn fail(&mut self, e: FeedProtocolError) -> FeedError {
        let _ = self.flush();
        FeedError::Protocol(e)
    }
}

/// What the ingester thread needs.
#[derive(Debug)]
pub struct IngestContext {
    /// The feed.
    pub feed: FeedUrl,
    /// One ring per shard, by shard number.
    pub rings: Vec<Arc<Ring>>,
    /// Subscriber counts per shard.
    pub interest: Arc<Interest>,
    /// Where the symbol table is published for the shards.
    pub symbols: Arc<SymbolDirectory>,
    /// Requests from shards.
    pub requests: crossbeam_channel::Receiver<IngestRequest>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
    /// Reconnect back-off, first delay.
    pub reconnect_min: Duration,
    /// Reconnect back-off, cap.
    pub reconnect_max: Duration,
    /// A feed that sends nothing (not even a pong to our ping) for this long is stalled: every
    /// symbol goes stale and the ingester reconnects. Zero disables the check.
    pub stall_timeout: Duration,
    /// The epoch of the stream numbering, shared with the shards (their `subscribed` replies).
    pub epoch: Arc<EpochCell>,
    /// Bounds of the replay windows (protocol 1.1 resume).
    pub replay: ReplayLimits,
}

/// An update that arrived one ahead of its predecessor.
#[derive(Debug, Clone, Copy)]
struct Held {
    seq: u64,
    ts: u64,
    recv_ts: u64,
    since: Instant,
}

#[derive(Debug)]
struct SymState {
    meta: SymbolMeta,
    book: Book,
    /// Book matches the feed (snapshot loaded, no gap since).
    synced: bool,
    /// A snapshot has been served at least once (clients may hold this book).
    served: bool,
    /// A snapshot request to the feed is outstanding.
    requested: bool,
    /// Subscribers were told the feed is stale for this symbol and not yet that it resumed.
    stale: bool,
    feed_seq: u64,
    /// Engine seq of each book stream (by depth index) and of trades.
    seqs: [u64; DEPTHS.len()],
    trade_seq: u64,
    exch_ts: u64,
    recv_ts: u64,
    /// The update held back for its predecessor, and its changes (capacity kept).
    held: Option<Held>,
    held_changes: Vec<Change>,
}

/// Where records are encoded: one large buffer from which each record is split off as shared
/// `Bytes`, so that encoding allocates once per `ARENA_CHUNK` rather than once per record. (A
/// chunk is freed when the last record cut from it has been written to every subscriber.)
#[derive(Debug, Default)]
struct Arena {
    buf: BytesMut,
    /// Where [`Arena::encode_alone`] encodes (reused).
    scratch: BytesMut,
}

impl Arena {
    fn encode(
        &mut self,
        f: impl FnOnce(&mut BytesMut) -> Result<(), wire::WireError>,
    ) -> Result<Bytes, wire::WireError> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(ARENA_CHUNK);
        }
        match f(&mut self.buf) {
            Ok(()) => Ok(self.buf.split().freeze()),
            Err(e) => {
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Encodes a record into an allocation of its own, of its exact size, instead of a slice
    /// of the shared chunk: for a snapshot that answers one request. It is written once and
    /// dropped, but a chunk lives as long as its longest-lived record, and the replay windows
    /// keep deltas cut from the same chunks for minutes: 19,800 subscribers' snapshots kept
    /// ~7 MB of chunks resident after they were written (docs/benchmarks.md, idle memory).
    fn encode_alone(
        &mut self,
        f: impl FnOnce(&mut BytesMut) -> Result<(), wire::WireError>,
    ) -> Result<Bytes, wire::WireError> {
        self.scratch.clear();
        f(&mut self.scratch)?;
        Ok(Bytes::copy_from_slice(&self.scratch))
    }
}

/// Where a snapshot record is encoded (see [`Arena::encode_alone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// A slice of the shared chunk: records published to a stream (kept by the replay
    /// windows, or sent to every subscriber of a conflated topic).
    Shared,
    /// Its own allocation: the answer to one snapshot request.
    Alone,
}

/// Hot-path counters, kept locally and added to the shared metrics once per read batch (the
/// ingester is their only writer; this saves atomic read-modify-writes per message).
#[derive(Debug, Default)]
struct Counts {
    messages: u64,
    updates: u64,
    trades: u64,
    stale: u64,
    published: u64,
}

/// The ingester's state across feed sessions.
struct Ingester {
    ctx: IngestContext,
    poll: Poll,
    syms: Vec<SymState>,
    windows: WindowDeltas,
    arena: Arena,
    /// Snapshot requests waiting for their symbol to sync.
    waiting: Vec<IngestRequest>,
    /// Shards that got messages since they were last woken.
    touched: Vec<bool>,
    unsynced: usize,
    /// Snapshot requests to send to the feed.
    feed_requests: Vec<String>,
    warned_symbol_cap: bool,
    /// Some symbol may hold an update back (see [`REORDER_WINDOW`]).
    maybe_held: bool,
    /// Every symbol was in sync at some point of the current session.
    synced_this_session: bool,
    counts: Counts,
    /// Conflated topics some shard watches, and when their tiers tick.
    conflation: Conflation,
    /// The last records of every stream someone watches or watched within the age bound, for
    /// resumes (docs/protocol.md §4.5).
    replay: ReplayWindows,
    /// The time of the message or turn being handled (the replay windows' age bound, status
    /// records of resumes).
    now: Stamp,
}

/// Runs the ingester on the current thread until shutdown.
///
/// # Errors
/// Only a failure to create its `Poll` ends it; feed errors lead to reconnects.
pub fn run(ctx: IngestContext, poll: Poll) -> io::Result<()> {
    let mut ing = Ingester::new(ctx, poll);
    let mut decoder = FeedDecoder::new();
    let mut backoff = ing.ctx.reconnect_min;
    let mut attempt: u64 = 0;
    loop {
        if ing.ctx.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        attempt += 1;
        let started = clock::monotonic();
        ing.synced_this_session = false;
        match ing.session(&mut decoder) {
            Err(FeedError::Shutdown) => return Ok(()),
            Err(e) => {
                let ended = Stamp::now();
                ing.feed_lost(ended);
                let lasted = ended.mono.saturating_duration_since(started);
                if ing.synced_this_session || lasted > STABLE_SESSION {
                    backoff = ing.ctx.reconnect_min;
                }
                // Jitter in [backoff/2, backoff), derived from the attempt count (no RNG needed).
                let jitter = (attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1000;
                let delay = backoff / 2 + backoff * (jitter as u32) / 2000;
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "feed session ended");
                ing.wait(delay)?;
                backoff = (backoff * 2).min(ing.ctx.reconnect_max);
            }
            Ok(()) => {}
        }
    }
}

impl Ingester {
    fn new(ctx: IngestContext, poll: Poll) -> Self {
        let shards = ctx.rings.len();
        let limits = ctx.replay;
        Self {
            ctx,
            poll,
            syms: Vec::new(),
            windows: WindowDeltas::new(),
            arena: Arena::default(),
            waiting: Vec::new(),
            touched: vec![false; shards],
            unsynced: 0,
            feed_requests: Vec::new(),
            warned_symbol_cap: false,
            maybe_held: false,
            synced_this_session: false,
            counts: Counts::default(),
            conflation: Conflation::default(),
            replay: ReplayWindows::new(limits),
            now: Stamp::now(),
        }
    }

    fn m(&self) -> &IngestMetrics {
        &self.ctx.metrics.ingest
    }

    /// Waits `delay` while still answering requests that can be answered (none can while the
    /// feed is down, but shutdown must be noticed).
    fn wait(&mut self, delay: Duration) -> io::Result<()> {
        let mut events = Events::with_capacity(8);
        let until = clock::monotonic() + delay;
        loop {
            let now = clock::monotonic();
            if now >= until || self.ctx.shutdown.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self
                .poll
                .poll(&mut events, Some((until - now).min(IDLE_POLL)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.now = Stamp::now();
            self.serve_requests();
            self.wake_shards();
        }
    }

    fn connect(&self) -> Result<FeedConn, FeedError> {
        let feed = &self.ctx.feed;
        let addrs = feed
            .authority
            .to_socket_addrs()
            .map_err(|source| FeedError::Resolve {
                authority: feed.authority.clone(),
                source,
            })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => return self.handshake(s),
                Err(e) => last = Some(e),
            }
        }
        Err(FeedError::Connect {
            authority: feed.authority.clone(),
            source: last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing")
            }),
        })
    }

    /// The upgrade on a connected socket (blocking, with timeouts), then the socket goes
    /// non-blocking; bytes after the `101` stay in the read buffer.
    fn handshake(&self, mut sock: TcpStream) -> Result<FeedConn, FeedError> {
        let feed = &self.ctx.feed;
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.set_write_timeout(Some(Duration::from_secs(10)))?;
        // The key must be a random nonce and the masking keys unpredictable (RFC 6455 §4.1,
        // §5.3): both come from OS randomness (rand's thread generator, seeded by the OS).
        let nonce: [u8; 16] = rand::random();
        let key = ws::client_key(nonce);
        let path = feed
            .url
            .strip_prefix("ws://")
            .and_then(|rest| rest.strip_prefix(feed.authority.as_str()))
            .unwrap_or("/");
        let mut req = Vec::new();
        ws::write_request(&feed.authority, path, &key, &mut req);
        sock.write_all(&req)?;
        let mut conn = FeedConn {
            sock,
            ws: ClientWs::new(rand::random()),
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            need: 0,
            read_ns: 0,
            out: Vec::new(),
        };
        loop {
            let n = match conn.sock.read(&mut conn.buf[conn.end..]) {
                Ok(0) => {
                    return Err(FeedError::Handshake(ws::HandshakeFailure::Malformed(
                        "the feed closed the connection before answering".into(),
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            conn.end += n;
            conn.read_ns = clock::realtime_ns();
            if let Some(head) =
                ws::parse_response(&conn.buf[..conn.end], &key).map_err(FeedError::Handshake)?
            {
                conn.start = head;
                break;
            }
            if conn.end == conn.buf.len() {
                return Err(FeedError::Handshake(ws::HandshakeFailure::TooLarge));
            }
        }
        conn.sock.set_nonblocking(true)?;
        Ok(conn)
    }

    /// One feed connection, from connect to loss.
    fn session(&mut self, decoder: &mut FeedDecoder) -> Result<(), FeedError> {
        let mut conn = self.connect()?;
        add(&self.m().connects, 1);
        tracing::info!(feed = %self.ctx.feed.url, "feed connected");
        let fd = conn.sock.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), FEED, Io::READABLE)?;
        let result = self.pump(&mut conn, decoder);
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        result
    }

    fn pump(&mut self, conn: &mut FeedConn, decoder: &mut FeedDecoder) -> Result<(), FeedError> {
        let mut events = Events::with_capacity(16);
        // Bytes may already wait in the buffer (after the `101`).
        let mut more = true;
        let mut last_rx = clock::monotonic();
        let mut pinged = false;
        loop {
            if self.ctx.shutdown.load(Ordering::Relaxed) {
                conn.ws
                    .write_close(close_code::GOING_AWAY, "shutting down", &mut conn.out);
                let _ = conn.flush();
                return Err(FeedError::Shutdown);
            }
            let mut timeout = if more {
                Duration::ZERO
            } else if self.maybe_held {
                REORDER_WINDOW / 2
            } else {
                IDLE_POLL
            };
            if let Some(tick) = self.conflation.next_tick() {
                timeout = timeout.min(tick.saturating_duration_since(clock::monotonic()));
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            // The clocks are read here, once per turn, and the wall clock once per socket read
            // (`FeedConn::read_ns`: the receive timestamp of the messages it completed);
            // everything below is handed them.
            let turn = Stamp::now();
            let now = turn.mono;
            more = false;
            let mut handled = 0;
            let mut received = false;
            'read: loop {
                // Every whole frame in the buffer, decoded where it lies.
                loop {
                    if handled == READ_BATCH {
                        more = true;
                        break 'read;
                    }
                    let frame = conn.ws.next(&conn.buf[conn.start..conn.end], &mut conn.out);
                    let (input, len) = match frame {
                        Ok(Next::Frame(input, len)) => (input, len),
                        Ok(Next::Need(need)) => {
                            conn.need = need;
                            break;
                        }
                        Err(e) => return Err(conn.fail(e)),
                    };
                    let at = Stamp {
                        mono: now,
                        realtime_ns: conn.read_ns,
                    };
                    let frame_start = conn.start;
                    conn.start += len;
                    let text = match input {
                        Input::Text(r) => {
                            Some(&mut conn.buf[frame_start + r.start..frame_start + r.end])
                        }
                        Input::Assembled => Some(conn.ws.message_mut()),
                        Input::Binary => {
                            handled += 1;
                            self.bad_message(&FeedMisbehaved::BinaryMessage);
                            None
                        }
                        Input::Control => {
                            received = true;
                            None
                        }
                        Input::Close { code, reason } => {
                            let _ = conn.flush();
                            return Err(FeedError::Closed(code.map(|c| (c, reason))));
                        }
                    };
                    if let Some(text) = text {
                        handled += 1;
                        if let Err(e) = self.on_text(decoder, text, at) {
                            conn.ws.write_close(e.close_code, e.reason, &mut conn.out);
                            return Err(conn.fail(e));
                        }
                    }
                }
                if !conn.read()? {
                    break;
                }
            }
            if handled > 0 || received {
                last_rx = now;
                pinged = false;
            }
            self.now = turn;
            if self.maybe_held {
                self.expire_held(turn);
            }
            self.flush_counts();
            self.serve_requests();
            self.tick_conflated(now);
            self.wake_shards();
            let stall = self.ctx.stall_timeout;
            if !stall.is_zero() {
                let silent = now.saturating_duration_since(last_rx);
                if silent > stall {
                    return Err(FeedError::Stalled(silent));
                }
                if silent > stall / 2 && !pinged {
                    // A quiet but live feed answers with a pong.
                    pinged = true;
                    conn.ws.write_ping(&mut conn.out);
                }
            }
            for req in self.feed_requests.drain(..) {
                conn.ws.write_text(req.as_bytes(), &mut conn.out);
            }
            conn.flush()?;
            let live = self.unsynced == 0 && !self.syms.is_empty();
            self.synced_this_session |= live;
            self.ctx.metrics.health.set_feed_live(live);
        }
    }

    /// The feed connection is gone: every symbol in sync goes stale (status 1) and will resync
    /// from the snapshots of the next session.
    fn feed_lost(&mut self, now: Stamp) {
        self.now = now;
        self.ctx.metrics.health.set_feed_live(false);
        for sym in 0..self.syms.len() as u32 {
            self.mark_unsynced(sym, now);
        }
        for st in &mut self.syms {
            st.requested = false;
        }
        self.feed_requests.clear();
        self.flush_counts();
        self.wake_shards();
    }

    // ---- feed messages ----

    /// One text message off the feed, decoded in place. A message that is not UTF-8 breaks
    /// the WebSocket protocol (RFC 6455 §8.1): the session ends with close code 1007.
    fn on_text(
        &mut self,
        decoder: &mut FeedDecoder,
        msg: &mut [u8],
        at: Stamp,
    ) -> Result<(), FeedProtocolError> {
        self.now = at;
        let result = match decoder.decode_text(msg) {
            Ok(event) => self.apply(event, at),
            Err(Some(e)) => Err(FeedMisbehaved::Malformed(e)),
            Err(None) => {
                return Err(FeedProtocolError {
                    close_code: close_code::INVALID_PAYLOAD,
                    reason: "text message not UTF-8",
                });
            }
        };
        self.counts.messages += 1;
        if let Err(e) = result {
            self.bad_message(&e);
        }
        Ok(())
    }

    fn on_message(&mut self, decoder: &mut FeedDecoder, msg: &[u8], at: Stamp) {
        self.counts.messages += 1;
        self.now = at;
        let result = match decoder.decode_bytes(msg) {
            Ok(event) => self.apply(event, at),
            Err(e) => Err(FeedMisbehaved::Malformed(e)),
        };
        if let Err(e) = result {
            self.bad_message(&e);
        }
    }

    /// Counts a message that could not be used (in total and under its label); logs one line
    /// per 1,000 of them.
    fn bad_message(&self, e: &FeedMisbehaved) {
        self.m().faults[e.index()].fetch_add(1, Ordering::Relaxed);
        let n = self.m().bad_messages.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 1000 == 1 {
            tracing::warn!(error = %e, kind = e.label(), total = n, "bad feed message");
        }
    }

    fn apply(&mut self, event: FeedEvent<'_>, at: Stamp) -> Result<(), FeedMisbehaved> {
        let recv_ts = at.realtime_ns;
        match event {
            FeedEvent::Symbols(list) => {
                let list: Vec<_> = list.to_vec();
                self.on_symbols(&list);
                Ok(())
            }
            FeedEvent::Snapshot {
                sym,
                seq,
                ts,
                bids,
                asks,
            } => self.on_snapshot(sym, seq, ts, at, bids, asks),
            FeedEvent::Update {
                sym,
                seq,
                ts,
                changes,
            } => self.on_update(sym, seq, ts, at, changes),
            FeedEvent::Trade { sym, ts, trade } => {
                let Some(st) = self.syms.get_mut(sym as usize) else {
                    return Err(FeedMisbehaved::UntrackedSymbol {
                        kind: "trade",
                        sid: sym,
                    });
                };
                st.trade_seq += 1;
                let seq = st.trade_seq;
                self.counts.trades += 1;
                self.publish_trade(sym, seq, ts, recv_ts, &trade);
                Ok(())
            }
            FeedEvent::Heartbeat { sym, seq, .. } => self.on_heartbeat(sym, seq, at),
        }
    }

    fn on_snapshot(
        &mut self,
        sym: u32,
        seq: u64,
        ts: u64,
        at: Stamp,
        bids: &[crate::book::Level],
        asks: &[crate::book::Level],
    ) -> Result<(), FeedMisbehaved> {
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return Err(FeedMisbehaved::UntrackedSymbol {
                kind: "snapshot",
                sid: sym,
            });
        };
        st.requested = false;
        st.held = None;
        if let Err(e) = st.book.load_snapshot(bids, asks) {
            // The book is cleared: whatever clients hold is suspect; ask again.
            let name = st.meta.symbol.clone();
            self.mark_unsynced(sym, at);
            self.request_snapshot(sym);
            return Err(FeedMisbehaved::BadSnapshot {
                symbol: name,
                source: e,
            });
        }
        st.feed_seq = seq;
        st.exch_ts = ts;
        st.recv_ts = at.realtime_ns;
        if !st.synced {
            st.synced = true;
            self.unsynced = self.unsynced.saturating_sub(1);
        }
        let (served, stale) = (st.served, st.stale);
        st.stale = false;
        if served {
            self.publish_resync(sym);
        }
        self.answer_waiting(sym);
        if stale {
            self.publish_status(sym, StatusCode::FeedResumed, at);
        }
        Ok(())
    }

    fn on_update(
        &mut self,
        sym: u32,
        seq: u64,
        ts: u64,
        at: Stamp,
        changes: &[Change],
    ) -> Result<(), FeedMisbehaved> {
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return Err(FeedMisbehaved::UntrackedSymbol {
                kind: "update",
                sid: sym,
            });
        };
        if !st.synced {
            return Ok(());
        }
        if seq <= st.feed_seq || st.held.is_some_and(|h| h.seq == seq) {
            self.counts.stale += 1;
            return Ok(());
        }
        if seq == st.feed_seq + 1 {
            self.apply_update(sym, seq, ts, at, changes)?;
            return self.release_held(sym, at);
        }
        if seq == st.feed_seq + 2 && st.held.is_none() {
            // Perhaps swapped with its predecessor on the way: wait briefly for it.
            st.held = Some(Held {
                seq,
                ts,
                recv_ts: at.realtime_ns,
                since: at.mono,
            });
            st.held_changes.clear();
            st.held_changes.extend_from_slice(changes);
            self.maybe_held = true;
            return Ok(());
        }
        let expected = st.feed_seq + 1;
        let name = st.meta.symbol.clone();
        self.gap(sym, at);
        Err(FeedMisbehaved::Gap {
            symbol: name,
            expected,
            got: seq,
        })
    }

    /// Applies the update held back for `sym` if its predecessor has just been applied.
    fn release_held(&mut self, sym: u32, at: Stamp) -> Result<(), FeedMisbehaved> {
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return Ok(());
        };
        let Some(h) = st.held.take() else {
            return Ok(());
        };
        if h.seq != st.feed_seq + 1 {
            return Ok(());
        }
        let changes = std::mem::take(&mut st.held_changes);
        // The held update keeps the receive timestamp it was read with.
        let held_at = Stamp {
            mono: at.mono,
            realtime_ns: h.recv_ts,
        };
        let result = self.apply_update(sym, h.seq, h.ts, held_at, &changes);
        if let Some(st) = self.syms.get_mut(sym as usize) {
            st.held_changes = changes;
        }
        result
    }

    /// Applies one in-sequence update and publishes the deltas of every depth it changed.
    fn apply_update(
        &mut self,
        sym: u32,
        seq: u64,
        ts: u64,
        at: Stamp,
        changes: &[Change],
    ) -> Result<(), FeedMisbehaved> {
        let recv_ts = at.realtime_ns;
        let watched = self.watched_depths(sym);
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return Ok(());
        };
        self.windows.clear();
        self.windows.set_watched(watched);
        let mut failed = None;
        for c in changes {
            if let Err(e) = st.book.apply(c.side, c.px, c.qty, &mut self.windows) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            let name = st.meta.symbol.clone();
            self.gap(sym, at);
            return Err(FeedMisbehaved::BookRefused {
                symbol: name,
                source: e,
            });
        }
        st.feed_seq = seq;
        st.exch_ts = ts;
        st.recv_ts = recv_ts;
        self.windows.finish();
        self.counts.updates += 1;
        // Checksums by levels covered (1 or 10), shared by the depths that cover as many.
        let mut crcs = [None; 2];
        for d in 0..DEPTHS.len() {
            if !self.windows.changed(d) {
                continue;
            }
            // Numbered whether watched or not (docs/protocol.md §4.2).
            self.syms[sym as usize].seqs[d] += 1;
            if watched & (1 << d) == 0 {
                // Neither watched nor kept: the stream moved on without a record, so a window
                // left from before must never answer a resume again.
                for format in [Format::Binary, Format::Json] {
                    self.replay.forget(Topic::book(sym, d, format));
                }
            } else if !self.windows.is_empty(d) {
                self.publish_book_delta(sym, d, ts, recv_ts, &mut crcs);
            }
        }
        Ok(())
    }

    fn on_heartbeat(&mut self, sym: u32, seq: u64, at: Stamp) -> Result<(), FeedMisbehaved> {
        let Some(st) = self.syms.get(sym as usize) else {
            return Err(FeedMisbehaved::UntrackedSymbol {
                kind: "heartbeat",
                sid: sym,
            });
        };
        if !st.synced || seq <= st.feed_seq {
            return Ok(());
        }
        // The feed has sent updates this book never got.
        let (name, have) = (st.meta.symbol.clone(), st.feed_seq);
        self.gap(sym, at);
        Err(FeedMisbehaved::HeartbeatAhead {
            symbol: name,
            heartbeat: seq,
            book: have,
        })
    }

    /// Updates held back longer than [`REORDER_WINDOW`]: their predecessor is lost.
    fn expire_held(&mut self, now: Stamp) {
        let mut still = false;
        for sym in 0..self.syms.len() {
            let Some(h) = self.syms[sym].held else {
                continue;
            };
            if now.mono.saturating_duration_since(h.since) < REORDER_WINDOW {
                still = true;
                continue;
            }
            let st = &self.syms[sym];
            let e = FeedMisbehaved::ReorderExpired {
                symbol: st.meta.symbol.clone(),
                missing: st.feed_seq + 1,
                held: h.seq,
            };
            self.gap(sym as u32, now);
            self.bad_message(&e);
        }
        self.maybe_held = still;
    }

    fn on_symbols(&mut self, list: &[SymbolSpec]) {
        let cap = self.ctx.interest.max_symbols();
        let before = self.syms.len();
        for (i, spec) in list.iter().enumerate().skip(before) {
            if i >= cap {
                if !self.warned_symbol_cap {
                    self.warned_symbol_cap = true;
                    tracing::error!(
                        max_symbols = cap,
                        announced = list.len(),
                        "feed announces more symbols than max-symbols; the rest are ignored"
                    );
                }
                break;
            }
            self.syms.push(SymState {
                meta: SymbolMeta {
                    symbol: spec.symbol.clone(),
                    sid: i as u32,
                    px_decimals: spec.px_decimals,
                    qty_decimals: spec.qty_decimals,
                },
                book: Book::new(),
                synced: false,
                served: false,
                requested: false,
                stale: false,
                feed_seq: 0,
                seqs: [0; DEPTHS.len()],
                trade_seq: 0,
                exch_ts: 0,
                recv_ts: 0,
                held: None,
                held_changes: Vec::new(),
            });
            self.unsynced += 1;
        }
        if self.syms.len() != before {
            let table = SymbolTable {
                symbols: self.syms.iter().map(|s| s.meta.clone()).collect(),
            };
            tracing::info!(symbols = table.symbols.len(), "symbol table updated");
            self.ctx.symbols.store(Arc::new(table));
        }
    }

    /// A gap (or refused update) on `sym`: counted, the symbol goes stale, and one snapshot
    /// is requested.
    fn gap(&mut self, sym: u32, now: Stamp) {
        add(&self.m().gaps, 1);
        self.mark_unsynced(sym, now);
        self.request_snapshot(sym);
    }

    /// Marks `sym` out of sync; if it was in sync, its subscribers are told it is stale.
    fn mark_unsynced(&mut self, sym: u32, now: Stamp) {
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return;
        };
        st.held = None;
        if !st.synced {
            return;
        }
        st.synced = false;
        self.unsynced += 1;
        if !st.stale {
            st.stale = true;
            self.publish_status(sym, StatusCode::FeedStale, now);
        }
    }

    /// Asks the feed for one snapshot of `sym` (once until it arrives).
    fn request_snapshot(&mut self, sym: u32) {
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return;
        };
        if !st.requested {
            st.requested = true;
            add(&self.ctx.metrics.ingest.resyncs, 1);
            self.feed_requests.push(format!(
                "{{\"op\":\"snapshot\",\"symbol\":{}}}",
                serde_json::Value::String(st.meta.symbol.clone())
            ));
        }
    }

    // ---- publishing ----

    /// Adds the local counters to the shared metrics.
    fn flush_counts(&mut self) {
        let c = std::mem::take(&mut self.counts);
        let m = &self.ctx.metrics.ingest;
        add(&m.messages, c.messages);
        add(&m.updates, c.updates);
        add(&m.trades, c.trades);
        add(&m.stale, c.stale);
        add(&m.published, c.published);
        self.ctx.metrics.replay.publish(&self.replay.stats());
    }

    /// Pushes `bytes` of `topic` to every shard with subscribers of it (the last one gets
    /// `bytes` itself, the others a shared clone).
    fn push_to_shards(&mut self, topic: Topic, bytes: Bytes) {
        let mut last = None;
        for shard in 0..self.ctx.rings.len() {
            if self.ctx.interest.any(shard, topic) {
                if let Some(prev) = last.replace(shard) {
                    self.push_record(prev, topic, bytes.clone());
                }
            }
        }
        if let Some(shard) = last {
            self.push_record(shard, topic, bytes);
        }
    }

    fn push_record(&mut self, shard: usize, topic: Topic, bytes: Bytes) {
        match self.ctx.rings[shard].push(ShardMsg::Record { topic, bytes }) {
            Push::Queued => self.counts.published += 1,
            Push::Dropped => add(&self.ctx.metrics.ingest.ring_drops, 1),
        }
        self.touched[shard] = true;
    }

    fn interested(&self, topic: Topic) -> bool {
        (0..self.ctx.rings.len()).any(|s| self.ctx.interest.any(s, topic))
    }

    /// Whether `topic`'s records are encoded now: some shard watches it, or its replay window
    /// is kept for clients who may resume it (then every record must go into the window).
    fn kept(&mut self, topic: Topic) -> bool {
        let watched = self.interested(topic);
        self.replay.keep(topic, watched, self.now.mono)
    }

    /// Watched, or kept for replay (read-only: for the choice of depths to compute).
    fn watched_or_kept(&self, topic: Topic) -> bool {
        self.interested(topic) || self.replay.is_kept(topic, self.now.mono)
    }

    /// The depths of `sid` some shard subscribes to, in either format. Only their windows are
    /// computed (a book stream nobody watches needs no deltas); the others are only told
    /// whether a change touched them, so that every stream stays numbered while unwatched: a
    /// position names exactly one book state, and a later snapshot never reuses a seq for
    /// another book (docs/protocol.md §4.2).
    fn watched_depths(&self, sid: u32) -> DepthMask {
        let mut mask = 0;
        for d in 0..DEPTHS.len() {
            // A stream kept for replay needs exact deltas, as a watched one.
            if self.watched_or_kept(Topic::book(sid, d, Format::Binary))
                || self.watched_or_kept(Topic::book(sid, d, Format::Json))
            {
                mask |= 1 << d;
            }
        }
        mask
    }

    /// True when `shard` has a subscriber of any stream of `sid` in `format`.
    fn shard_watches(&self, shard: usize, sid: u32, format: Format) -> bool {
        (0..STREAMS_PER_SYMBOL as u8).any(|stream| {
            self.ctx.interest.any(
                shard,
                Topic {
                    sid,
                    stream,
                    format,
                },
            )
        })
    }

    /// Tells every subscriber of `sym` (any channel, depth and format) the feed's state for
    /// it: one status record per connection, seq 0, both timestamps `now`.
    fn publish_status(&mut self, sym: u32, code: StatusCode, now: Stamp) {
        let now = now.realtime_ns;
        for format in [Format::Binary, Format::Json] {
            let shards: Vec<usize> = (0..self.ctx.rings.len())
                .filter(|&s| self.shard_watches(s, sym, format))
                .collect();
            if shards.is_empty() {
                continue;
            }
            let Some(bytes) = self.status_record_at(sym, format, code, now) else {
                continue;
            };
            for shard in shards {
                let push = self.ctx.rings[shard].push(ShardMsg::Status {
                    sid: sym,
                    format,
                    bytes: bytes.clone(),
                });
                match push {
                    Push::Queued => self.counts.published += 1,
                    Push::Dropped => add(&self.ctx.metrics.ingest.ring_drops, 1),
                }
                self.touched[shard] = true;
            }
        }
    }

    /// A status record of `sym` in `format`, stamped with the time of the current turn.
    fn status_record(&mut self, sym: u32, format: Format, code: StatusCode) -> Option<Bytes> {
        self.status_record_at(sym, format, code, self.now.realtime_ns)
    }

    /// A status record of `sym` in `format`: seq 0, both timestamps `now_ns`.
    fn status_record_at(
        &mut self,
        sym: u32,
        format: Format,
        code: StatusCode,
        now_ns: u64,
    ) -> Option<Bytes> {
        let st = self.syms.get(sym as usize)?;
        let hdr = RecordHeader {
            kind: RecordKind::Status,
            flags: 0,
            sid: sym,
            seq: 0,
            exch_ts: now_ns,
            recv_ts: now_ns,
        };
        let encoded = self.arena.encode(|out| {
            match format {
                Format::Binary => wire::encode_status(out, &hdr, code),
                Format::Json => {
                    out.extend_from_slice(b",");
                    wire::encode_status_json(out, &st.meta, &hdr, code);
                }
            }
            Ok(())
        });
        self.checked(encoded)
    }

    /// `crcs` caches the book checksum of this update by levels covered (1, 10): computed once,
    /// shared by both formats and by the depths that cover as many levels.
    fn publish_book_delta(
        &mut self,
        sym: u32,
        d: usize,
        exch_ts: u64,
        recv_ts: u64,
        crcs: &mut [Option<u32>; 2],
    ) {
        let slot = usize::from(wire::checksum_levels(DEPTHS[d]) == wire::CHECKSUM_LEVELS);
        for format in [Format::Binary, Format::Json] {
            let topic = Topic::book(sym, d, format);
            if !self.kept(topic) {
                continue;
            }
            let st = &self.syms[sym as usize];
            let hdr = RecordHeader {
                kind: RecordKind::Delta,
                flags: 0,
                sid: sym,
                seq: st.seqs[d],
                exch_ts,
                recv_ts,
            };
            let (bids, asks) = (self.windows.bids(d), self.windows.asks(d));
            let crc = *crcs[slot].get_or_insert_with(|| book_crc(&st.book, d));
            let encoded = self.arena.encode(|out| match format {
                Format::Binary => wire::try_encode_book_crc(out, &hdr, bids, asks, crc),
                Format::Json => {
                    out.extend_from_slice(b",");
                    wire::encode_book_json_crc(out, &st.meta, &hdr, bids, asks, crc);
                    Ok(())
                }
            });
            if let Some(bytes) = self.checked(encoded) {
                self.replay
                    .append(topic, hdr.seq, bytes.clone(), self.now.mono);
                self.push_to_shards(topic, bytes);
            }
        }
    }

    fn publish_trade(&mut self, sym: u32, seq: u64, exch_ts: u64, recv_ts: u64, trade: &Trade) {
        for format in [Format::Binary, Format::Json] {
            let topic = Topic::trades(sym, format);
            if !self.kept(topic) {
                continue;
            }
            let hdr = RecordHeader {
                kind: RecordKind::Trade,
                flags: 0,
                sid: sym,
                seq,
                exch_ts,
                recv_ts,
            };
            let meta = &self.syms[sym as usize].meta;
            let encoded = self.arena.encode(|out| {
                match format {
                    Format::Binary => wire::encode_trade(out, &hdr, trade),
                    Format::Json => {
                        out.extend_from_slice(b",");
                        wire::encode_trade_json(out, meta, &hdr, trade);
                    }
                }
                Ok(())
            });
            if let Some(bytes) = self.checked(encoded) {
                self.replay.append(topic, seq, bytes.clone(), self.now.mono);
                self.push_to_shards(topic, bytes);
            }
        }
    }

    /// A snapshot record of `sym` at depth index `d` in `format`, with the stream's current seq.
    fn snapshot_record(
        &mut self,
        sym: u32,
        d: usize,
        format: Format,
        place: Placement,
    ) -> Option<Bytes> {
        let st = self.syms.get(sym as usize)?;
        let n = usize::from(DEPTHS[d]);
        let hdr = RecordHeader {
            kind: RecordKind::Snapshot,
            flags: FLAG_SNAPSHOT,
            sid: sym,
            seq: st.seqs[d],
            exch_ts: st.exch_ts,
            recv_ts: st.recv_ts,
        };
        let (bids, asks) = (st.book.top(Side::Bid, n), st.book.top(Side::Ask, n));
        let crc = book_crc(&st.book, d);
        let encode = |out: &mut BytesMut| match format {
            Format::Binary => wire::try_encode_book_crc(out, &hdr, bids, asks, crc),
            Format::Json => {
                out.extend_from_slice(b",");
                wire::encode_book_json_crc(out, &st.meta, &hdr, bids, asks, crc);
                Ok(())
            }
        };
        let encoded = match place {
            Placement::Shared => self.arena.encode(encode),
            Placement::Alone => self.arena.encode_alone(encode),
        };
        self.checked(encoded)
    }

    /// Counts and logs a record that could not be encoded (a book larger than a v1 record holds).
    fn checked(&self, encoded: Result<Bytes, wire::WireError>) -> Option<Bytes> {
        match encoded {
            Ok(b) => Some(b),
            Err(e) => {
                add(&self.ctx.metrics.ingest.bad_messages, 1);
                tracing::error!(error = %e, "record cannot be encoded; not published");
                None
            }
        }
    }

    /// The feed resent a book clients already hold: replace it in every stream, seq + 1.
    fn publish_resync(&mut self, sym: u32) {
        for d in 0..DEPTHS.len() {
            self.syms[sym as usize].seqs[d] += 1;
            let seq = self.syms[sym as usize].seqs[d];
            for format in [Format::Binary, Format::Json] {
                let topic = Topic::book(sym, d, format);
                if !self.kept(topic) {
                    continue;
                }
                if let Some(bytes) = self.snapshot_record(sym, d, format, Placement::Shared) {
                    // The replacing snapshot is part of the stream: a resume replays it.
                    self.replay.append(topic, seq, bytes.clone(), self.now.mono);
                    self.push_to_shards(topic, bytes);
                }
            }
        }
    }

    // ---- requests from shards ----

    fn serve_requests(&mut self) {
        while let Ok(req) = self.ctx.requests.try_recv() {
            self.serve(req);
        }
    }

    fn serve(&mut self, req: IngestRequest) {
        let (shard, conn, rid, topic) = match req {
            IngestRequest::Snapshot {
                shard,
                conn,
                req,
                topic,
            } => (shard, conn, req, topic),
            IngestRequest::Resume(r) => return self.serve_resume(&r),
        };
        let Some(st) = self.syms.get_mut(topic.sid as usize) else {
            return;
        };
        if !st.synced {
            self.waiting.push(req);
            return;
        }
        st.served = true;
        let Some(depth) = topic.depth_idx() else {
            return;
        };
        if topic.conflation().is_some() {
            self.conflation.watch(topic, clock::monotonic());
        }
        let Some(bytes) = self.snapshot_record(topic.sid, depth, topic.format, Placement::Alone)
        else {
            return;
        };
        let Some(ring) = self.ctx.rings.get(shard) else {
            return;
        };
        let push = ring.push(ShardMsg::Snapshot {
            conn,
            req: rid,
            topic,
            bytes,
        });
        if push == Push::Dropped {
            add(&self.ctx.metrics.ingest.ring_drops, 1);
        }
        add(&self.ctx.metrics.ingest.snapshots_served, 1);
        if let Some(t) = self.touched.get_mut(shard) {
            *t = true;
        }
    }

    fn answer_waiting(&mut self, sym: u32) {
        if self.waiting.is_empty() {
            return;
        }
        let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|r| matches!(r, IngestRequest::Snapshot { topic, .. } if topic.sid == sym));
        self.waiting = rest;
        for r in ready {
            self.serve(r);
        }
    }

    /// The conflated tiers due at `now` tick: each watched conflated topic whose stream moved
    /// since its last tick gets one snapshot (current seq and checksum), encoded once and pushed
    /// to every shard with subscribers of it (`feed/conflate.rs`). A topic no shard watches
    /// any more is forgotten; a symbol out of sync is skipped (its clients keep the last
    /// snapshot, correct as of its seq, and got status 1).
    fn tick_conflated(&mut self, now: Instant) {
        if self.conflation.next_tick().is_none_or(|t| t > now) {
            return;
        }
        let mut out: Vec<(Topic, Bytes)> = Vec::new();
        for tier in self.conflation.due(now) {
            let mut sends: Vec<Topic> = Vec::new();
            let interest = &self.ctx.interest;
            let shards = self.ctx.rings.len();
            let syms = &self.syms;
            self.conflation.tick(tier, |w| {
                let t = w.topic;
                if !(0..shards).any(|s| interest.any(s, t)) {
                    return false;
                }
                let Some(st) = syms.get(t.sid as usize) else {
                    return false;
                };
                let Some(d) = t.depth_idx() else { return false };
                if st.synced && w.last != Some(st.seqs[d]) {
                    w.last = Some(st.seqs[d]);
                    sends.push(t);
                }
                true
            });
            for t in sends {
                let d = t.depth_idx().unwrap_or(0);
                if let Some(bytes) = self.snapshot_record(t.sid, d, t.format, Placement::Shared) {
                    out.push((t, bytes));
                }
            }
        }
        add(
            &self.ctx.metrics.ingest.conflated_snapshots,
            out.len() as u64,
        );
        for (t, bytes) in out {
            self.push_to_shards(t, bytes);
        }
    }

    /// The resume of conflated book stream `topic` from position `after`: `Some(None)` when
    /// the stream has not moved since (nothing to send), `Some(Some(snapshot))` with the
    /// current snapshot when it has, `None` when it cannot be resumed (the position is past
    /// the stream's seq, or the symbol is out of sync: it starts afresh). The topic is watched
    /// from now on, as a snapshot request would (its ticks follow).
    fn resume_conflated(&mut self, topic: Topic, after: u64) -> Option<Option<Bytes>> {
        let d = topic.depth_idx()?;
        let st = self.syms.get(topic.sid as usize)?;
        let seq = st.seqs[d];
        if after > seq || (after < seq && !st.synced) {
            return None;
        }
        self.conflation.watch(topic, self.now.mono);
        if after == seq {
            return Some(None);
        }
        self.snapshot_record(topic.sid, d, topic.format, Placement::Alone)
            .map(Some)
    }

    /// A subscribe with `resume`: per named symbol, the records after the client's positions
    /// from the replay windows (all streams of the symbol or none), pushed as one message on the
    /// asking shard's ring. Every record published after it goes to that ring too (the shard
    /// counted its interest before asking), so replay and live meet with no gap or duplicate.
    fn serve_resume(&mut self, r: &ResumeRequest) {
        let epoch = self.ctx.epoch.get();
        let matches = r.epoch == Some(epoch);
        let now = self.now.mono;
        let mut symbols = Vec::with_capacity(r.symbols.len());
        for &(sid, book, trades) in &r.symbols {
            let known = (sid as usize) < self.syms.len();
            // A conflated (`max_hz`) book stream is made of replacing snapshots: what the
            // client missed after its position is the current snapshot, or nothing when the
            // stream has not moved since (docs/protocol.md §5.5).
            let conflated = r
                .tier
                .map(|t| Topic::conflated(sid, r.depth_idx, usize::from(t), r.format));
            let (book, book_conflated) = match conflated {
                Some(topic) => (None, book.map(|p| (topic, p))),
                None => (
                    book.map(|p| (Topic::book(sid, r.depth_idx, r.format), p)),
                    None,
                ),
            };
            let trades = trades.map(|p| (Topic::trades(sid, r.format), p));
            let mut replay = if known {
                self.replay.resume_symbol(matches, book, trades, now)
            } else {
                None
            };
            if let (Some(rep), Some((topic, after))) = (replay.as_mut(), book_conflated) {
                match self.resume_conflated(topic, after) {
                    Some(snapshot) => rep.book = Some(snapshot.into_iter().collect()),
                    None => replay = None,
                }
            }
            let entry = match replay {
                Some(rep) => {
                    let stale = self.syms[sid as usize].stale;
                    let status = if stale {
                        self.status_record(sid, r.format, StatusCode::FeedStale)
                    } else {
                        None
                    };
                    SymbolResumed {
                        sid,
                        recovered: true,
                        book: rep.book.unwrap_or_default(),
                        trades: rep.trades.unwrap_or_default(),
                        status,
                    }
                }
                None => SymbolResumed {
                    sid,
                    recovered: false,
                    book: Vec::new(),
                    trades: Vec::new(),
                    status: None,
                },
            };
            symbols.push(entry);
        }
        add(&self.ctx.metrics.ingest.resumes_served, 1);
        let Some(ring) = self.ctx.rings.get(r.shard) else {
            return;
        };
        let push = ring.push(ShardMsg::Resumed(Box::new(ResumeAnswer {
            conn: r.conn,
            req: r.req,
            epoch,
            symbols,
        })));
        if push == Push::Dropped {
            add(&self.ctx.metrics.ingest.ring_drops, 1);
        }
        if let Some(t) = self.touched.get_mut(r.shard) {
            *t = true;
        }
    }

    fn wake_shards(&mut self) {
        for (shard, touched) in self.touched.iter_mut().enumerate() {
            if std::mem::take(touched) {
                self.ctx.rings[shard].wake();
            }
        }
    }
}

/// The checksum (protocol 1.1 §3.2) of the book a client of depth index `d` holds: the top
/// `min(10, depth)` levels of `book` (its window is the top `depth`, which holds them).
fn book_crc(book: &Book, d: usize) -> u32 {
    let n = wire::checksum_levels(DEPTHS[d]);
    wire::book_checksum(book.top(Side::Bid, n), book.top(Side::Ask, n), n)
}

/// The ingester's message path without a socket: feed messages in, records into the rings.
///
/// For benchmarks and tests: it decodes, applies and publishes exactly as the ingester thread
/// does (same code), answers the shards' snapshot requests on `serve_requests`
/// (Self::serve_requests), and collects the snapshot requests meant for the feed instead of
/// sending them.
pub struct Replay {
    ing: Ingester,
    decoder: FeedDecoder,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("symbols", &self.ing.syms.len())
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// A replay publishing into `ctx`'s rings (`ctx.feed` is not used).
    ///
    /// # Errors
    /// If the OS refuses a `mio::Poll`.
    pub fn new(ctx: IngestContext) -> io::Result<Self> {
        Ok(Self {
            ing: Ingester::new(ctx, Poll::new()?),
            decoder: FeedDecoder::new(),
        })
    }

    /// Handles one feed message (a JSON text) as if it had been read off the feed at `at`
    /// (its records get `at.realtime_ns` as their receive timestamp).
    pub fn message(&mut self, msg: &[u8], at: Stamp) {
        self.ing.on_message(&mut self.decoder, msg, at);
    }

    /// Answers the shards' pending snapshot requests and wakes the shards that got records.
    pub fn serve_requests(&mut self) {
        self.ing.flush_counts();
        self.ing.serve_requests();
        self.ing.wake_shards();
    }

    /// Runs the conflated tiers due at `now` (the ingester's loop does it once per turn), then
    /// wakes the shards that got records.
    pub fn tick_conflated(&mut self, now: Instant) {
        self.ing.tick_conflated(now);
        self.ing.wake_shards();
    }

    /// Behaves as if the feed connection was lost at `now`.
    pub fn feed_lost(&mut self, now: Stamp) {
        self.ing.feed_lost(now);
    }

    /// Expires the updates held back (for a predecessor) for [`REORDER_WINDOW`] or longer at
    /// `now`, as the ingester's loop does once per turn.
    pub fn expire_held(&mut self, now: Stamp) {
        self.ing.expire_held(now);
    }

    /// The snapshot requests the ingester would have sent to the feed since the last call.
    pub fn take_feed_requests(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ing.feed_requests)
    }

    /// Metrics counted so far (hot-path counters are added on
    /// [`serve_requests`](Self::serve_requests)).
    pub fn metrics(&self) -> &Metrics {
        &self.ing.ctx.metrics
    }

    /// True when the symbol `sid` is in sync with the feed.
    pub fn is_synced(&self, sid: u32) -> bool {
        self.ing.syms.get(sid as usize).is_some_and(|s| s.synced)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod conflate_tests;
