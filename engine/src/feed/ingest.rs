//! The ingester thread: the feed edge.
//!
//! It reads the exchange feed (JSON over WebSocket, through tungstenite on a non-blocking socket
//! watched by its own mio `Poll`), decodes each message in place with simd-json, applies it to
//! the symbol's book, encodes each resulting record once per format that some shard listens to,
//! and pushes it into the rings of those shards. Between feed reads it answers the shards'
//! snapshot requests, in order with the records, which is what lines a subscriber's snapshot up
//! with the deltas that follow it.
//!
//! Sync with the feed, per symbol: a snapshot starts it; each update must carry the feed seq + 1.
//! Stale or duplicate updates are dropped and counted; a gap or an update the book refuses
//! marks the symbol out of sync and asks the feed for a fresh snapshot of that symbol alone
//! (`{"op":"snapshot"}`). A feed snapshot for a symbol that was already served replaces every
//! client's book with a snapshot record that continues its stream's seq. On disconnect the
//! ingester reconnects with exponential back-off and jitter, and every symbol resyncs that way.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mio::unix::SourceFd;
use mio::{Events, Interest as Io, Poll, Token};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::book::{Book, DEPTHS, Side, WindowDeltas};
use crate::clock;
use crate::config::FeedUrl;
use crate::fanout::interest::Interest;
use crate::fanout::{Format, Topic};
use crate::feed::decode::{FeedDecoder, FeedEvent};
use crate::metrics::{IngestMetrics, Metrics, add};
use crate::ring::{IngestRequest, Push, Ring, ShardMsg, SymbolDirectory, SymbolTable};
use crate::wire::{self, FLAG_SNAPSHOT, RecordHeader, RecordKind, SymbolMeta, Trade};

/// Token of the feed socket.
const FEED: Token = Token(0);
/// Token of the ingester's waker (shards' requests).
pub const REQUESTS: Token = Token(1);
/// Feed messages handled before requests are served and shards woken.
const READ_BATCH: usize = 4096;
/// Bytes reserved at a time for encoded records; records are split off and shared.
const ARENA_CHUNK: usize = 256 * 1024;

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
}

/// Why a feed session ended.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Connecting or the WebSocket handshake failed.
    #[error("cannot connect to the feed: {0}")]
    Connect(String),
    /// The socket failed.
    #[error("feed socket error: {0}")]
    Io(#[from] io::Error),
    /// The WebSocket layer failed or the feed closed.
    #[error("feed connection lost: {0}")]
    Closed(String),
    /// Shutdown was requested.
    #[error("shutting down")]
    Shutdown,
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
    feed_seq: u64,
    /// Engine seq of each book stream (by depth index) and of trades.
    seqs: [u64; DEPTHS.len()],
    trade_seq: u64,
    exch_ts: u64,
    recv_ts: u64,
}

/// Where records are encoded: one large buffer from which each record is split off as shared
/// `Bytes`, so that encoding allocates once per `ARENA_CHUNK` rather than once per record. (A
/// chunk is freed when the last record cut from it has been written to every subscriber.)
#[derive(Debug, Default)]
struct Arena {
    buf: BytesMut,
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
}

/// The ingester's state across feed sessions.
struct Ingester {
    ctx: IngestContext,
    poll: Poll,
    decoder: FeedDecoder,
    syms: Vec<SymState>,
    windows: WindowDeltas,
    arena: Arena,
    scratch: Vec<u8>,
    /// Snapshot requests waiting for their symbol to sync.
    waiting: Vec<IngestRequest>,
    /// Shards that got messages since they were last woken.
    touched: Vec<bool>,
    unsynced: usize,
    /// Snapshot requests to send to the feed.
    feed_requests: Vec<String>,
    warned_symbol_cap: bool,
}

/// Runs the ingester on the current thread until shutdown.
///
/// # Errors
/// Only a failure to create its `Poll` ends it; feed errors lead to reconnects.
pub fn run(ctx: IngestContext, poll: Poll) -> io::Result<()> {
    let shards = ctx.rings.len();
    let mut ing = Ingester {
        ctx,
        poll,
        decoder: FeedDecoder::new(),
        syms: Vec::new(),
        windows: WindowDeltas::new(),
        arena: Arena::default(),
        scratch: Vec::with_capacity(64 * 1024),
        waiting: Vec::new(),
        touched: vec![false; shards],
        unsynced: 0,
        feed_requests: Vec::new(),
        warned_symbol_cap: false,
    };
    let mut backoff = ing.ctx.reconnect_min;
    let mut attempt: u64 = 0;
    loop {
        if ing.ctx.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        attempt += 1;
        let started = clock::monotonic();
        match ing.session() {
            Err(FeedError::Shutdown) => return Ok(()),
            Err(e) => {
                ing.feed_lost();
                if started.elapsed() > Duration::from_secs(10) {
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
            match self.poll.poll(
                &mut events,
                Some((until - now).min(Duration::from_millis(100))),
            ) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.serve_requests();
        }
    }

    fn connect(&self) -> Result<WebSocket<TcpStream>, FeedError> {
        let addrs = self
            .ctx
            .feed
            .authority
            .to_socket_addrs()
            .map_err(|e| FeedError::Connect(format!("{}: {e}", self.ctx.feed.authority)))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.set_write_timeout(Some(Duration::from_secs(10)))?;
                    let (ws, _) = tungstenite::client(self.ctx.feed.url.as_str(), s)
                        .map_err(|e| FeedError::Connect(e.to_string()))?;
                    ws.get_ref().set_nonblocking(true)?;
                    return Ok(ws);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(FeedError::Connect(last.map_or_else(
            || "address resolved to nothing".to_owned(),
            |e| e.to_string(),
        )))
    }

    /// One feed connection, from connect to loss.
    fn session(&mut self) -> Result<(), FeedError> {
        let mut ws = self.connect()?;
        add(&self.m().connects, 1);
        tracing::info!(feed = %self.ctx.feed.url, "feed connected");
        let fd = ws.get_ref().as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), FEED, Io::READABLE)?;
        let result = self.pump(&mut ws);
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        result
    }

    fn pump(&mut self, ws: &mut WebSocket<TcpStream>) -> Result<(), FeedError> {
        let mut events = Events::with_capacity(16);
        let mut more = true;
        loop {
            if self.ctx.shutdown.load(Ordering::Relaxed) {
                let _ = ws.close(None);
                let _ = ws.flush();
                return Err(FeedError::Shutdown);
            }
            let timeout = if more {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            more = false;
            let mut handled = 0;
            loop {
                if handled == READ_BATCH {
                    more = true;
                    break;
                }
                match ws.read() {
                    Ok(WsMessage::Text(text)) => {
                        handled += 1;
                        self.scratch.clear();
                        self.scratch.extend_from_slice(text.as_bytes());
                        self.on_message();
                    }
                    Ok(WsMessage::Binary(_)) => {
                        handled += 1;
                        add(&self.m().bad_messages, 1);
                        tracing::warn!("feed sent a binary message; ignored");
                    }
                    Ok(WsMessage::Close(frame)) => {
                        return Err(FeedError::Closed(format!("feed closed: {frame:?}")));
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break;
                    }
                    Err(e) => return Err(FeedError::Closed(e.to_string())),
                }
            }
            self.serve_requests();
            self.wake_shards();
            for req in self.feed_requests.drain(..) {
                match ws.write(WsMessage::Text(req.into())) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(FeedError::Closed(e.to_string())),
                }
            }
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(FeedError::Closed(e.to_string())),
            }
            self.ctx
                .metrics
                .health
                .set_feed_live(self.unsynced == 0 && !self.syms.is_empty());
        }
    }

    fn feed_lost(&mut self) {
        self.ctx.metrics.health.set_feed_live(false);
        self.unsynced = 0;
        for s in &mut self.syms {
            s.synced = false;
            s.requested = false;
            self.unsynced += 1;
        }
        self.feed_requests.clear();
    }

    // ---- feed messages ----

    fn on_message(&mut self) {
        add(&self.m().messages, 1);
        let recv_ts = clock::realtime_ns();
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.apply(&mut scratch, recv_ts);
        self.scratch = scratch;
        if let Err(e) = result {
            add(&self.m().bad_messages, 1);
            // Rate-limited: one line per 1,000 bad messages.
            let n = self.m().bad_messages.load(Ordering::Relaxed);
            if n % 1000 == 1 {
                tracing::warn!(error = %e, total = n, "bad feed message");
            }
        }
    }

    fn apply(&mut self, msg: &mut [u8], recv_ts: u64) -> Result<(), String> {
        let event = self.decoder.decode(msg).map_err(|e| e.to_string())?;
        match event {
            FeedEvent::Symbols(list) => {
                let list: Vec<_> = list.to_vec();
                self.on_symbols(&list);
            }
            FeedEvent::Snapshot {
                sym,
                seq,
                ts,
                bids,
                asks,
            } => {
                let Some(st) = self.syms.get_mut(sym as usize) else {
                    return Err(format!("snapshot for untracked symbol {sym}"));
                };
                if let Err(e) = st.book.load_snapshot(bids, asks) {
                    st.synced = false;
                    return Err(format!("{}: bad snapshot: {e}", st.meta.symbol));
                }
                st.feed_seq = seq;
                st.exch_ts = ts;
                st.recv_ts = recv_ts;
                st.requested = false;
                if !st.synced {
                    st.synced = true;
                    self.unsynced = self.unsynced.saturating_sub(1);
                }
                if st.served {
                    self.publish_resync(sym);
                }
                self.answer_waiting(sym);
            }
            FeedEvent::Update {
                sym,
                seq,
                ts,
                changes,
            } => {
                let Some(st) = self.syms.get_mut(sym as usize) else {
                    return Err(format!("update for untracked symbol {sym}"));
                };
                if !st.synced {
                    return Ok(());
                }
                if seq <= st.feed_seq {
                    add(&self.ctx.metrics.ingest.stale, 1);
                    return Ok(());
                }
                if seq != st.feed_seq + 1 {
                    add(&self.ctx.metrics.ingest.gaps, 1);
                    let name = st.meta.symbol.clone();
                    self.out_of_sync(sym);
                    return Err(format!(
                        "{name}: feed gap, expected seq {} got {seq}",
                        st_seq(&self.syms, sym) + 1
                    ));
                }
                self.windows.clear();
                let mut failed = None;
                for c in changes {
                    if let Err(e) = st.book.apply(c.side, c.px, c.qty, &mut self.windows) {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                if let Some(e) = failed {
                    let name = st.meta.symbol.clone();
                    self.out_of_sync(sym);
                    return Err(format!("{name}: update refused by the book: {e}"));
                }
                st.feed_seq = seq;
                st.exch_ts = ts;
                st.recv_ts = recv_ts;
                self.windows.finish();
                add(&self.ctx.metrics.ingest.updates, 1);
                for d in 0..DEPTHS.len() {
                    if self.windows.is_empty(d) {
                        continue;
                    }
                    self.syms[sym as usize].seqs[d] += 1;
                    self.publish_book_delta(sym, d, ts, recv_ts);
                }
            }
            FeedEvent::Trade { sym, ts, trade } => {
                let Some(st) = self.syms.get_mut(sym as usize) else {
                    return Err(format!("trade for untracked symbol {sym}"));
                };
                st.trade_seq += 1;
                let seq = st.trade_seq;
                add(&self.ctx.metrics.ingest.trades, 1);
                self.publish_trade(sym, seq, ts, recv_ts, &trade);
            }
        }
        Ok(())
    }

    fn on_symbols(&mut self, list: &[crate::feed::decode::SymbolSpec]) {
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
                feed_seq: 0,
                seqs: [0; DEPTHS.len()],
                trade_seq: 0,
                exch_ts: 0,
                recv_ts: 0,
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

    fn out_of_sync(&mut self, sym: u32) {
        let Some(st) = self.syms.get_mut(sym as usize) else {
            return;
        };
        if st.synced {
            st.synced = false;
            self.unsynced += 1;
        }
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

    /// Pushes `bytes` of `topic` to every shard with subscribers of it.
    fn push_to_shards(&mut self, topic: Topic, bytes: &Bytes) {
        let mut pushed = 0;
        let mut dropped = 0;
        for (shard, ring) in self.ctx.rings.iter().enumerate() {
            if !self.ctx.interest.any(shard, topic) {
                continue;
            }
            match ring.push(ShardMsg::Record {
                topic,
                bytes: bytes.clone(),
            }) {
                Push::Queued => pushed += 1,
                Push::Dropped => dropped += 1,
            }
            self.touched[shard] = true;
        }
        add(&self.ctx.metrics.ingest.published, pushed);
        add(&self.ctx.metrics.ingest.ring_drops, dropped);
    }

    fn interested(&self, topic: Topic) -> bool {
        (0..self.ctx.rings.len()).any(|s| self.ctx.interest.any(s, topic))
    }

    fn publish_book_delta(&mut self, sym: u32, d: usize, exch_ts: u64, recv_ts: u64) {
        for format in [Format::Binary, Format::Json] {
            let topic = Topic::book(sym, d, format);
            if !self.interested(topic) {
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
            let encoded = self.arena.encode(|out| match format {
                Format::Binary => wire::try_encode_book(out, &hdr, bids, asks),
                Format::Json => {
                    out.extend_from_slice(b",");
                    wire::encode_book_json(out, &st.meta, &hdr, bids, asks);
                    Ok(())
                }
            });
            if let Some(bytes) = self.checked(encoded) {
                self.push_to_shards(topic, &bytes);
            }
        }
    }

    fn publish_trade(&mut self, sym: u32, seq: u64, exch_ts: u64, recv_ts: u64, trade: &Trade) {
        for format in [Format::Binary, Format::Json] {
            let topic = Topic::trades(sym, format);
            if !self.interested(topic) {
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
                self.push_to_shards(topic, &bytes);
            }
        }
    }

    /// A snapshot record of `sym` at depth index `d` in `format`, with the stream's current seq.
    fn snapshot_record(&mut self, sym: u32, d: usize, format: Format) -> Option<Bytes> {
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
        let encoded = self.arena.encode(|out| match format {
            Format::Binary => wire::try_encode_book(out, &hdr, bids, asks),
            Format::Json => {
                out.extend_from_slice(b",");
                wire::encode_book_json(out, &st.meta, &hdr, bids, asks);
                Ok(())
            }
        });
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
            for format in [Format::Binary, Format::Json] {
                let topic = Topic::book(sym, d, format);
                if !self.interested(topic) {
                    continue;
                }
                if let Some(bytes) = self.snapshot_record(sym, d, format) {
                    self.push_to_shards(topic, &bytes);
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
        let IngestRequest::Snapshot {
            shard,
            conn,
            req: rid,
            topic,
        } = req;
        let Some(st) = self.syms.get_mut(topic.sid as usize) else {
            return;
        };
        if !st.synced {
            self.waiting.push(req);
            return;
        }
        st.served = true;
        let Some(bytes) = self.snapshot_record(topic.sid, usize::from(topic.stream), topic.format)
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
            .partition(|IngestRequest::Snapshot { topic, .. }| topic.sid == sym);
        self.waiting = rest;
        for r in ready {
            self.serve(r);
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

fn st_seq(syms: &[SymState], sym: u32) -> u64 {
    syms.get(sym as usize).map_or(0, |s| s.feed_seq)
}
