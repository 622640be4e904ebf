//! The edge node's subscriber (`--role edge`): takes the ingester's place, fed by NATS.
//!
//! One thread runs `async-nats` on its own tokio runtime and plays the ingester's part for the
//! shards: it pushes records into their rings (to the shards with subscribers of the topic, as
//! the ingester does), answers their snapshot requests on their rings in order with the
//! records, and tells their subscribers when a symbol goes stale (status 1) and resumes
//! (status 2). It never renumbers: every record is the ingest node's, seq and all.
//!
//! Per stream (topic), in `Stream`:
//! - **Interest.** A topic's subject is subscribed while some shard has a subscriber of it (or
//!   waits for its snapshot) and unsubscribed once none has (checked every [`TICK`]).
//! - **Join.** Records that arrive before the stream is in line are buffered; a snapshot is
//!   requested from the ingest node (seq `S`); what the snapshot holds (seq <= `S`) is dropped
//!   and the rest is applied. A later subscriber of a stream already in line gets a snapshot
//!   fetched the same way, handed to its shard when the forwarded stream reaches `S` (so the
//!   next record it gets is `S + 1`).
//! - **Gap.** A record past the next seq means the bus lost some: the stream is out of line
//!   until a fresh snapshot arrives, which replaces the clients' books (a flagged snapshot whose
//!   seq may jump forward, as after a shard's ring lag, docs/protocol.md §1.3).
//! - **Outage.** NATS lost, or no heartbeat from the ingest node for [`HEARTBEAT_TIMEOUT`]:
//!   every watched symbol goes stale (status 1); once back, every stream resyncs with a
//!   snapshot, then status 2. A new epoch (the ingest node restarted) resyncs the same way.
//! - **Announcements.** The set of streams subscribed is announced to the ingest node on
//!   `<p>.interest` (docs/protocol.md §8.5) when it changes (within a [`TICK`]), on every
//!   (re)connect and every [`ANNOUNCE_EVERY`], with a lease of [`LEASE`]: the ingest node
//!   publishes only streams some edge holds. (A join's snapshot request holds its stream on its
//!   own, so the records after the snapshot are published whenever the announcement lands.)
//! - **Per-hop latency.** Every record received is timed through its hops
//!   (`tickcast_bus_hop_latency_seconds`, [`crate::metrics::BUS_HOPS`]) from its `exch_ts` and
//!   `recv_ts`, its batch's publish stamp, the receipt (stamped as the message comes off the
//!   NATS subscription) and the push into the shards' rings.
//! - **Trades** need no snapshot: they are forwarded from the first one seen.
//! - **Conflated streams** (`max_hz`, or a client under pressure) are not on the bus: the edge
//!   makes them as a standalone ingester does (`feed/conflate.rs`). The binary book stream of
//!   the tier's depth keeps a [`Replica`] of the levels (seeded from a snapshot, moved by every
//!   record forwarded, each checksum checked); a tier subscriber's first snapshot comes from
//!   it, and at each tick of a tier every watched topic whose stream moved gets one snapshot,
//!   encoded once per (stream, format, tick) and shared by every tier and shard that gets it.
//! - **Replay.** Every record forwarded is also appended to the edge's replay window of its
//!   stream (the same [`ReplayWindows`] a standalone ingester keeps), and a stream stays
//!   subscribed, its window fed, for `replay-age` after its last client left. A subscribe with
//!   `resume` is answered from these windows, or from the ingest node's over `<p>.replay`
//!   joined to the forwarded stream ([`super::resume`]), so that a client of an edge that died
//!   resumes here with `recovered: true` while the windows hold its position.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::{Client, Event};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::Interest as TokioInterest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

use super::ingest::{connect_options, server_list};
use super::replica::Replica;
use super::resume::{Resumes, StreamView};
use super::{
    Announcement, ReplayRequest, Subjects, encode_announcement, encode_replay_request,
    encode_snapshot_request, parse_batch, parse_replay_reply, parse_snapshot_reply, parse_status,
    parse_symbols, record_times,
};
use crate::clock;
use crate::fanout::interest::Interest;
use crate::fanout::{CONFLATED_BASE, ConnId, Format, STREAMS_PER_SYMBOL, TIER_COUNT, Topic};
use crate::feed::conflate::Conflation;
use crate::metrics::{Metrics, add};
use crate::replay::epoch::{Epoch, EpochCell};
use crate::replay::{ReplayLimits, ReplayWindows};
use crate::ring::{IngestRequest, ResumeRequest, Ring, ShardMsg, SymbolDirectory, SymbolTable};
use crate::wire::{self, RecordHeader, RecordKind, StatusCode};

/// How often interest, timeouts and the heartbeat are checked.
pub const TICK: Duration = Duration::from_millis(20);
/// A snapshot request unanswered this long is sent again.
pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(2);
/// No symbol table from the ingest node for this long: its streams are stale.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the set of streams is announced when it does not change.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// The lease an announcement asks for: three announcements may be lost before the ingest
/// node stops publishing a stream (a gap the edge heals with a snapshot if it happens).
pub const LEASE: Duration = Duration::from_secs(3);
/// Most records buffered for a stream that waits for its snapshot; past it the buffer is
/// dropped and the snapshot asked for again.
const MAX_BUFFERED: usize = 200_000;

/// What the subscriber thread needs.
#[derive(Debug)]
pub struct EdgeBus {
    /// NATS server(s), comma-separated `nats://HOST:PORT`.
    pub nats_url: String,
    /// Subjects of the cluster.
    pub subjects: Subjects,
    /// One ring per shard.
    pub rings: Vec<Arc<Ring>>,
    /// Subscriber counts per shard.
    pub interest: Arc<Interest>,
    /// Where the symbol table is published for the shards.
    pub symbols: Arc<SymbolDirectory>,
    /// Requests from shards.
    pub requests: crossbeam_channel::Receiver<IngestRequest>,
    /// The poll the shards' waker (for requests) is registered with.
    pub poll: mio::Poll,
    /// Reconnect back-off, first delay and cap.
    pub reconnect: (Duration, Duration),
    /// The epoch the shards report: the ingest node's, once known.
    pub epoch: Arc<EpochCell>,
    /// Bounds of the edge's replay windows (the same settings as a standalone daemon's).
    pub replay: ReplayLimits,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
}

/// What reaches the main loop.
enum Ev {
    Batch {
        idx: usize,
        sub_gen: u64,
        payload: Bytes,
        /// The edge's wall clock as the message came off the subscription.
        received: u64,
    },
    Reply {
        idx: usize,
        sub_gen: u64,
        payload: Option<Bytes>,
    },
    /// The ingest node's answer to a replay request (`None`: no answer).
    Replayed {
        topic: Topic,
        after: u64,
        payload: Option<Bytes>,
    },
    Status(Bytes),
    Symbols(Bytes),
    Conn(Event),
}

/// One stream's state on this edge.
#[derive(Debug)]
struct Stream {
    topic: Topic,
    /// Subscription generation (messages of an older subscription are ignored).
    sub_gen: u64,
    task: tokio::task::AbortHandle,
    /// Seq of the last record forwarded: the stream is in line. `None`: out of line.
    last: Option<u64>,
    /// Records received while out of line.
    buffer: Vec<(u64, Bytes)>,
    /// A snapshot request in flight: its number and when it was sent.
    request: Option<(u64, Instant)>,
    /// A snapshot for waiting subscribers, ahead of the forwarded stream.
    held: Option<(u64, Bytes)>,
    /// Shard subscriptions waiting for a snapshot: (shard, conn, req, the topic they asked
    /// for: this stream, or one of its conflated tiers).
    waiters: Vec<(usize, ConnId, u32, Topic)>,
    /// Clients hold a book of this stream: the resync snapshot replaces it.
    replace: bool,
    /// The levels of a binary book stream whose conflated tiers some shard watches.
    replica: Option<Replica>,
}

struct Edge {
    cfg: EdgeBus,
    client: Client,
    events: UnboundedSender<Ev>,
    streams: HashMap<usize, Stream>,
    next_gen: u64,
    table: Arc<SymbolTable>,
    epoch: Option<u32>,
    connected: bool,
    /// Streams are trustworthy: connected and the ingest node's heartbeat is fresh.
    live: bool,
    last_heartbeat: Instant,
    /// Per sid: its subscribers were told it is stale (status 1) and not yet resumed.
    stale: Vec<bool>,
    touched: Vec<bool>,
    /// The records forwarded, per stream, for resumes.
    windows: ReplayWindows,
    /// Resumes not answered yet.
    resumes: Resumes,
    /// The conflated topics some shard watches, and when their tiers tick.
    conflation: Conflation,
    /// The time of the event being handled.
    now: Instant,
    /// This process's id in its interest announcements (random per process).
    id: u64,
    /// The set of streams changed since the last announcement.
    announce: bool,
    /// When the last announcement was sent.
    announced: Instant,
}

/// The edge's streams as [`Resumes::poll`] sees them.
struct View<'a> {
    streams: &'a HashMap<usize, Stream>,
    windows: &'a ReplayWindows,
    table: &'a SymbolTable,
    now: Instant,
}

impl StreamView for View<'_> {
    fn last(&self, topic: Topic) -> Option<u64> {
        self.streams.get(&topic.index()).and_then(|s| s.last)
    }

    fn window(&mut self, topic: Topic, after: u64) -> Option<Vec<Bytes>> {
        let last = self.last(topic)?;
        // The window must end where the forwarded stream is.
        (self.windows.last_seq(topic) == Some(last))
            .then(|| self.windows.peek_from(topic, after, self.now))
            .flatten()
    }

    fn snapshot(&mut self, tier: Topic) -> Option<(u64, Bytes)> {
        let bytes = replica_snapshot(self.streams, self.table, tier)?;
        let s = self.streams.get(&feed_topic(tier).index())?;
        Some((s.last?, bytes))
    }
}

impl EdgeBus {
    /// Runs the subscriber on the current thread (its own tokio runtime) until shutdown.
    ///
    /// # Errors
    /// When the runtime cannot be built.
    pub fn run(self) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(main(self))
    }
}

async fn main(cfg: EdgeBus) -> std::io::Result<()> {
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = connect_options("tickcast-edge", cfg.reconnect, conn_tx);
    let client = opts
        .connect(server_list(&cfg.nats_url))
        .await
        .map_err(std::io::Error::other)?;
    // Connection events into the main channel.
    let fwd = tx.clone();
    tokio::spawn(async move {
        while let Some(ev) = conn_rx.recv().await {
            if fwd.send(Ev::Conn(ev)).is_err() {
                return;
            }
        }
    });
    // Statuses and the symbol table (heartbeat): always subscribed.
    for (subject, is_status) in [
        (cfg.subjects.status(), true),
        (cfg.subjects.symbols(), false),
    ] {
        let mut sub = client
            .subscribe(subject)
            .await
            .map_err(std::io::Error::other)?;
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let ev = if is_status {
                    Ev::Status(m.payload)
                } else {
                    Ev::Symbols(m.payload)
                };
                if fwd.send(ev).is_err() {
                    return;
                }
            }
        });
    }
    let mut mio_events = mio::Events::with_capacity(8);
    let shards = cfg.rings.len();
    let cfg_replay = cfg.replay;
    let mut edge = Edge {
        cfg,
        client,
        events: tx,
        streams: HashMap::new(),
        next_gen: 0,
        table: Arc::new(SymbolTable::default()),
        epoch: None,
        connected: false,
        live: false,
        last_heartbeat: clock::monotonic(),
        stale: Vec::new(),
        touched: vec![false; shards],
        windows: ReplayWindows::new(cfg_replay),
        resumes: Resumes::default(),
        conflation: Conflation::default(),
        now: clock::monotonic(),
        id: edge_id(),
        announce: true,
        announced: clock::monotonic(),
    };
    // The shards' waker for requests is a mio waker; its poll's epoll descriptor turns
    // readable when woken, and tokio watches that descriptor. (`with_interest` is deprecated
    // because nothing ties the descriptor's lifetime to it: here the poll, owned by `edge`,
    // is declared first, so it outlives `req_fd`.)
    #[allow(deprecated)]
    let req_fd = AsyncFd::with_interest(
        std::os::fd::AsRawFd::as_raw_fd(&edge.cfg.poll),
        TokioInterest::READABLE,
    )?;
    edge.ask_symbols();
    let mut tick = tokio::time::interval(TICK);
    tracing::info!(nats = %edge.cfg.nats_url, "edge node subscribing to NATS");
    loop {
        if edge.cfg.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        tokio::select! {
            Some(ev) = rx.recv() => {
                edge.on(ev).await;
                // Whatever else is queued, before waking the shards.
                while let Ok(ev) = rx.try_recv() {
                    edge.on(ev).await;
                }
            }
            guard = req_fd.readable() => {
                if let Ok(mut g) = guard {
                    let _ = edge.cfg.poll.poll(&mut mio_events, Some(Duration::ZERO));
                    g.clear_ready();
                }
                edge.serve_requests().await;
            }
            _ = tick.tick() => edge.tick().await,
            _ = sleep_until(edge.conflation.next_tick()) => {
                edge.tick_conflated(clock::monotonic());
            }
        }
        edge.poll_resumes();
        edge.wake_shards();
    }
}

impl Edge {
    fn m(&self) -> &crate::metrics::BusMetrics {
        &self.cfg.metrics.bus
    }

    async fn on(&mut self, ev: Ev) {
        self.now = clock::monotonic();
        match ev {
            Ev::Batch {
                idx,
                sub_gen,
                payload,
                received,
            } => self.on_batch(idx, sub_gen, &payload, received).await,
            Ev::Reply {
                idx,
                sub_gen,
                payload,
            } => self.on_reply(idx, sub_gen, payload).await,
            Ev::Replayed {
                topic,
                after,
                payload,
            } => self.on_replayed(topic, after, payload),
            Ev::Status(p) => self.on_status(&p),
            Ev::Symbols(p) => self.on_symbols(&p).await,
            Ev::Conn(e) => self.on_conn(&e).await,
        }
    }

    fn count_in(&self, bytes: usize) {
        add(&self.m().messages_in, 1);
        add(&self.m().bytes_in, bytes as u64);
    }

    // ---- the ingest node: heartbeat, epoch, symbols ----

    fn ask_symbols(&self) {
        let client = self.client.clone();
        let subject = self.cfg.subjects.symbols_get();
        let tx = self.events.clone();
        tokio::spawn(async move {
            if let Ok(m) = client.request(subject, Bytes::new()).await {
                let _ = tx.send(Ev::Symbols(m.payload));
            }
        });
    }

    async fn on_symbols(&mut self, p: &Bytes) {
        self.count_in(p.len());
        let (epoch, table) = match parse_symbols(p) {
            Ok(t) => t,
            Err(e) => {
                // Another bus version: this edge cannot read its batches, so it never turns
                // live (its health check fails) rather than misread them.
                tracing::warn!(error = %e, "symbol table on the bus refused");
                return;
            }
        };
        self.last_heartbeat = clock::monotonic();
        if table.symbols.len() > self.table.symbols.len() || self.epoch != Some(epoch) {
            let n = table.symbols.len().min(self.cfg.interest.max_symbols());
            let table = SymbolTable {
                symbols: table.symbols.into_iter().take(n).collect(),
            };
            tracing::info!(symbols = n, "symbol table from the ingest node");
            self.stale.resize(n, false);
            self.table = Arc::new(table);
            self.cfg.symbols.store(self.table.clone());
        }
        match self.epoch {
            Some(e) if e == epoch => {}
            Some(e) => {
                tracing::warn!(
                    old = %format!("{e:08x}"), new = %format!("{epoch:08x}"),
                    "the ingest node has a new epoch (restarted): resyncing every stream"
                );
                self.set_epoch(epoch);
                self.lost();
                // A seq names another book now: every tier's next tick sends a snapshot.
                self.conflation.reset_last();
                // Another numbering: nothing held can be replayed.
                self.windows = ReplayWindows::new(*self.windows.limits());
                self.resync_all().await;
            }
            None => {
                tracing::info!(epoch = %format!("{epoch:08x}"), "ingest node epoch");
                self.set_epoch(epoch);
            }
        }
        if self.connected && !self.live {
            self.resync_all().await;
        }
        self.update_health();
    }

    fn set_epoch(&mut self, epoch: u32) {
        self.epoch = Some(epoch);
        self.cfg.epoch.set(Epoch::from_u32(epoch));
        self.m().epoch.store(u64::from(epoch), Ordering::Relaxed);
    }

    /// Are the streams of epoch `e` ours? A new epoch seen first on a stream waits for the
    /// heartbeat (which carries the symbol table) to switch.
    fn epoch_ok(&self, e: u32) -> bool {
        self.epoch == Some(e)
    }

    async fn on_conn(&mut self, e: &Event) {
        match e {
            Event::Connected => {
                add(&self.m().connects, 1);
                self.m().connected.store(1, Ordering::Relaxed);
                tracing::info!("connected to NATS");
                self.connected = true;
                self.announce = true;
                self.last_heartbeat = clock::monotonic();
                self.ask_symbols();
                self.resync_all().await;
            }
            Event::Disconnected => {
                self.m().connected.store(0, Ordering::Relaxed);
                tracing::warn!("disconnected from NATS: symbols stale until it is back");
                self.connected = false;
                self.lost();
            }
            // Reconnect attempts report each failure: the back-off is enough.
            Event::ClientError(e) => tracing::debug!(error = %e, "NATS client error"),
            other => tracing::warn!(event = %other, "NATS event"),
        }
        self.update_health();
    }

    /// The streams can no longer be trusted: watched symbols go stale, streams out of line.
    fn lost(&mut self) {
        self.live = false;
        for s in self.streams.values_mut() {
            if s.last.take().is_some() && s.topic.is_book() {
                s.replace = true;
            }
            s.buffer.clear();
            s.held = None;
            s.request = None;
        }
        for sid in 0..self.table.symbols.len() as u32 {
            self.set_stale(sid, true);
        }
    }

    /// Connected and the heartbeat is fresh: ask every book stream for a snapshot.
    async fn resync_all(&mut self) {
        if !self.connected || self.epoch.is_none() {
            return;
        }
        self.live = true;
        let idxs: Vec<usize> = self.streams.keys().copied().collect();
        for idx in idxs {
            let Some(s) = self.streams.get(&idx) else {
                continue;
            };
            if s.topic.is_book() && s.last.is_none() && s.request.is_none() {
                self.request_snapshot(idx);
            }
        }
        self.check_resumed();
    }

    fn update_health(&self) {
        let ok = self.connected
            && self.live
            && !self.table.symbols.is_empty()
            && !self.stale.iter().any(|&s| s);
        self.cfg.metrics.health.set_feed_live(ok);
    }

    // ---- statuses ----

    /// Tells the subscribers of `sid` (both formats) that it is stale or resumed, if that
    /// changes what they were told.
    fn set_stale(&mut self, sid: u32, stale: bool) {
        let Some(flag) = self.stale.get_mut(sid as usize) else {
            return;
        };
        if *flag == stale {
            return;
        }
        *flag = stale;
        let code = if stale {
            StatusCode::FeedStale
        } else {
            StatusCode::FeedResumed
        };
        for format in [Format::Binary, Format::Json] {
            if let Some(rec) = self.status_record(sid, format, code) {
                self.push_status(sid, format, &rec);
            }
        }
    }

    /// A status record of `sid` (`None`: not in the table).
    fn status_record(&self, sid: u32, format: Format, code: StatusCode) -> Option<Bytes> {
        let meta = self.table.symbols.get(sid as usize)?;
        let now = clock::realtime_ns();
        let hdr = RecordHeader {
            kind: RecordKind::Status,
            flags: 0,
            sid,
            seq: 0,
            exch_ts: now,
            recv_ts: now,
        };
        let mut out = BytesMut::new();
        match format {
            Format::Binary => wire::encode_status(&mut out, &hdr, code),
            Format::Json => {
                out.extend_from_slice(b",");
                wire::encode_status_json(&mut out, meta, &hdr, code);
            }
        }
        Some(out.freeze())
    }

    fn push_status(&mut self, sid: u32, format: Format, bytes: &Bytes) {
        for shard in 0..self.cfg.rings.len() {
            let watches = (0..STREAMS_PER_SYMBOL as u8).any(|stream| {
                self.cfg.interest.any(
                    shard,
                    Topic {
                        sid,
                        stream,
                        format,
                    },
                )
            });
            if watches {
                let _ = self.cfg.rings[shard].push(ShardMsg::Status {
                    sid,
                    format,
                    bytes: bytes.clone(),
                });
                self.touched[shard] = true;
            }
        }
    }

    /// A status from the ingest node (its feed went stale or resumed for a symbol).
    fn on_status(&mut self, p: &Bytes) {
        self.count_in(p.len());
        let Some((epoch, sid, format, bytes)) = parse_status(p) else {
            return;
        };
        if !self.epoch_ok(epoch) || !self.live {
            return;
        }
        let code = wire_status_code(format, &bytes);
        let Some(flag) = self.stale.get_mut(sid as usize) else {
            return;
        };
        match code {
            Some(StatusCode::FeedStale) => *flag = true,
            Some(StatusCode::FeedResumed) => *flag = false,
            _ => {}
        }
        self.push_status(sid, format, &bytes);
        self.update_health();
    }

    /// Symbols whose book streams are all in line again: status 2.
    fn check_resumed(&mut self) {
        if !self.live {
            return;
        }
        let mut pending = vec![false; self.stale.len()];
        for s in self.streams.values() {
            if s.topic.is_book() && s.last.is_none() {
                if let Some(p) = pending.get_mut(s.topic.sid as usize) {
                    *p = true;
                }
            }
        }
        for (sid, pending) in pending.into_iter().enumerate() {
            if self.stale[sid] && !pending {
                self.set_stale(sid as u32, false);
            }
        }
        self.update_health();
    }

    // ---- subscriptions ----

    /// Some shard watches `topic`.
    fn interested(&self, topic: Topic) -> bool {
        (0..self.cfg.rings.len()).any(|s| self.cfg.interest.any(s, topic))
    }

    async fn subscribe(&mut self, topic: Topic) {
        let idx = topic.index();
        if self.streams.contains_key(&idx) {
            return;
        }
        let sub = match self.client.subscribe(self.cfg.subjects.stream(topic)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "NATS subscribe failed");
                return;
            }
        };
        self.next_gen += 1;
        let sub_gen = self.next_gen;
        let tx = self.events.clone();
        let task = tokio::spawn(async move {
            let mut sub = sub;
            while let Some(m) = sub.next().await {
                if tx
                    .send(Ev::Batch {
                        idx,
                        sub_gen,
                        payload: m.payload,
                        received: clock::realtime_ns(),
                    })
                    .is_err()
                {
                    return;
                }
            }
        })
        .abort_handle();
        self.streams.insert(
            idx,
            Stream {
                topic,
                sub_gen,
                task,
                last: None,
                buffer: Vec::new(),
                request: None,
                held: None,
                waiters: Vec::new(),
                replace: false,
                replica: None,
            },
        );
        self.m()
            .subscriptions
            .store(self.streams.len() as u64, Ordering::Relaxed);
        self.announce = true;
        self.windows.keep(topic, true, clock::monotonic());
        if topic.is_book() {
            self.request_snapshot(idx);
        }
    }

    fn unsubscribe(&mut self, idx: usize) {
        if let Some(s) = self.streams.remove(&idx) {
            // Dropping the subscriber (its task) unsubscribes.
            s.task.abort();
            self.windows.forget(s.topic);
            self.announce = true;
        }
        self.m()
            .subscriptions
            .store(self.streams.len() as u64, Ordering::Relaxed);
    }

    fn request_snapshot(&mut self, idx: usize) {
        if !self.connected || self.epoch.is_none() {
            return;
        }
        self.next_gen += 1;
        let sub_gen = self.next_gen;
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        s.request = Some((sub_gen, clock::monotonic()));
        add(&self.cfg.metrics.bus.snapshot_requests, 1);
        let payload = encode_snapshot_request(s.topic);
        self.request(self.cfg.subjects.snapshot(), payload, move |payload| {
            Ev::Reply {
                idx,
                sub_gen,
                payload,
            }
        });
    }

    /// A NATS request on its own task; the reply (None on timeout or error) comes back to this
    /// loop as the event `reply` makes of it.
    fn request(
        &self,
        subject: String,
        payload: Bytes,
        reply: impl FnOnce(Option<Bytes>) -> Ev + Send + 'static,
    ) {
        let client = self.client.clone();
        let tx = self.events.clone();
        tokio::spawn(async move {
            let payload = client
                .request(subject, payload)
                .await
                .ok()
                .map(|m| m.payload);
            let _ = tx.send(reply(payload));
        });
    }

    /// Shard snapshot requests: join the stream (or add a waiter to it).
    async fn serve_requests(&mut self) {
        while let Ok(req) = self.cfg.requests.try_recv() {
            let (shard, conn, req, topic) = match req {
                IngestRequest::Snapshot {
                    shard,
                    conn,
                    req,
                    topic,
                } => (shard, conn, req, topic),
                IngestRequest::Resume(r) => {
                    self.serve_resume(*r).await;
                    continue;
                }
            };
            if !topic.is_book() {
                continue;
            }
            let asked = topic;
            let idx = self.feed_stream(asked).await;
            if asked.conflation().is_some() {
                // The stream is in line and its replica seeded: its snapshot now.
                if let Some(bytes) = self.replica_snapshot(asked) {
                    self.push_snapshot(shard, conn, req, asked, bytes);
                    continue;
                }
            }
            let Some(s) = self.streams.get_mut(&idx) else {
                continue;
            };
            s.waiters.push((shard, conn, req, asked));
            if s.last.is_some() && s.request.is_none() && s.held.is_none() {
                self.request_snapshot(idx);
            }
        }
    }

    /// The stream a subscriber of `asked` is fed from ([`feed_topic`]), subscribed if it was
    /// not; for a conflated tier, the tier is watched (its ticks run) and the stream keeps a
    /// replica (seeded by the join's snapshot, or by a fresh one when already in line).
    /// Returns the stream's index.
    async fn feed_stream(&mut self, asked: Topic) -> usize {
        let topic = feed_topic(asked);
        let idx = topic.index();
        if !self.streams.contains_key(&idx) {
            self.subscribe(topic).await;
        }
        let Some((d, _)) = asked.conflation() else {
            return idx;
        };
        self.conflation.watch(asked, clock::monotonic());
        let Some(s) = self.streams.get_mut(&idx) else {
            return idx;
        };
        if s.replica.is_none() {
            s.replica = Some(Replica::new(d));
            if s.last.is_some() && s.request.is_none() && s.held.is_none() {
                self.request_snapshot(idx);
            }
        }
        idx
    }

    /// The snapshot of conflated topic `asked` now ([`replica_snapshot`]).
    fn replica_snapshot(&self, asked: Topic) -> Option<Bytes> {
        replica_snapshot(&self.streams, &self.table, asked)
    }

    fn push_snapshot(&mut self, shard: usize, conn: ConnId, req: u32, topic: Topic, bytes: Bytes) {
        if let Some(ring) = self.cfg.rings.get(shard) {
            let _ = ring.push(ShardMsg::Snapshot {
                conn,
                req,
                topic,
                bytes,
            });
            self.touched[shard] = true;
        }
    }

    /// A subscribe with `resume`: its streams are subscribed (if they were not), and it waits
    /// in [`Resumes`] until each named stream is decided ([`Self::poll_resumes`]). A conflated
    /// (`max_hz`) subscription's book resumes from its tier's current snapshot
    /// ([`super::resume::step_conflated`]): its tier is watched from now on.
    async fn serve_resume(&mut self, r: ResumeRequest) {
        for &(sid, book, trades) in &r.symbols {
            if book.is_some() && r.depth_idx < crate::book::DEPTHS.len() {
                match r.tier.map(usize::from).filter(|&t| t < TIER_COUNT) {
                    Some(tier) => {
                        self.feed_stream(Topic::conflated(sid, r.depth_idx, tier, r.format))
                            .await;
                    }
                    None => {
                        self.subscribe(Topic::book(sid, r.depth_idx, r.format))
                            .await;
                    }
                }
            }
            if trades.is_some() {
                self.subscribe(Topic::trades(sid, r.format)).await;
            }
        }
        self.resumes.add(r, clock::monotonic());
    }

    /// Answers the resumes that can be, asks the ingest node for the replays they need.
    fn poll_resumes(&mut self) {
        if self.resumes.is_empty() {
            return;
        }
        let now = clock::monotonic();
        let mut view = View {
            streams: &self.streams,
            windows: &self.windows,
            table: &self.table,
            now,
        };
        let epoch = if self.live { self.epoch } else { None };
        let polled = self.resumes.poll(epoch, now, &mut view);
        for req in polled.fetches {
            self.fetch_replay(req);
        }
        for (shard, format, mut answer) in polled.answers {
            let mut recovered = 0;
            for s in &mut answer.symbols {
                if !s.recovered {
                    continue;
                }
                recovered += 1;
                // It missed the status 1 sent while it was away.
                if self.stale.get(s.sid as usize).copied().unwrap_or(false) {
                    s.status = self.status_record(s.sid, format, StatusCode::FeedStale);
                }
            }
            add(&self.m().resumes_recovered, recovered);
            add(
                &self.m().resumes_not_recovered,
                answer.symbols.len() as u64 - recovered,
            );
            if let Some(ring) = self.cfg.rings.get(shard) {
                let _ = ring.push(ShardMsg::Resumed(Box::new(answer)));
                self.touched[shard] = true;
            }
        }
    }

    fn fetch_replay(&mut self, req: ReplayRequest) {
        add(&self.m().replay_requests, 1);
        let payload = encode_replay_request(&req);
        let (topic, after) = (req.topic, req.after);
        self.request(self.cfg.subjects.replay(), payload, move |payload| {
            Ev::Replayed {
                topic,
                after,
                payload,
            }
        });
    }

    fn on_replayed(&mut self, topic: Topic, after: u64, payload: Option<Bytes>) {
        let records = payload.and_then(|p| {
            self.count_in(p.len());
            match parse_replay_reply(&p, after) {
                Ok((epoch, records)) if self.epoch == Some(epoch) => records,
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, ?topic, "malformed replay reply on the bus");
                    None
                }
            }
        });
        self.resumes.on_fetch(topic, after, records);
    }

    async fn tick(&mut self) {
        let now = clock::monotonic();
        // Interest: subscribe to what shards watch, drop what none watches. (Conflated topics
        // are not on the bus: the binary book streams their watched tiers are made from count
        // as watched; a tier no shard watches any more is dropped at its next tick.)
        let tier_feeds: std::collections::HashSet<usize> = self
            .conflation
            .topics()
            .map(|t| feed_topic(t).index())
            .collect();
        for sid in 0..self.table.symbols.len() as u32 {
            for stream in 0..CONFLATED_BASE {
                for format in [Format::Binary, Format::Json] {
                    let topic = Topic {
                        sid,
                        stream,
                        format,
                    };
                    let idx = topic.index();
                    let feeds_tiers = tier_feeds.contains(&idx);
                    let want = feeds_tiers || self.interested(topic);
                    let drop_replica =
                        !feeds_tiers && self.streams.get(&idx).is_some_and(|s| s.replica.is_some());
                    if drop_replica {
                        if let Some(s) = self.streams.get_mut(&idx) {
                            // No tier made from it any more: no replica to keep up.
                            s.replica = None;
                        }
                    }
                    match self.streams.get(&idx) {
                        None if want => self.subscribe(topic).await,
                        // Kept for the replay age after its last watcher left.
                        Some(s) if s.waiters.is_empty() && !self.windows.keep(topic, want, now) => {
                            self.unsubscribe(idx);
                        }
                        _ => {}
                    }
                }
            }
        }
        if self.connected
            && (self.announce || now.saturating_duration_since(self.announced) >= ANNOUNCE_EVERY)
        {
            self.send_announcement(now).await;
        }
        // Heartbeat.
        if self.live && now.saturating_duration_since(self.last_heartbeat) > HEARTBEAT_TIMEOUT {
            tracing::warn!("no heartbeat from the ingest node: symbols stale until it is back");
            self.lost();
        }
        if self.table.symbols.is_empty() || (!self.live && self.connected) {
            // Asked at most every few ticks.
            if now.saturating_duration_since(self.last_heartbeat) > Duration::from_secs(1) {
                self.ask_symbols();
                self.last_heartbeat = now
                    .checked_sub(HEARTBEAT_TIMEOUT / 2)
                    .unwrap_or(self.last_heartbeat);
            }
        }
        // Snapshot requests that got no answer.
        let late: Vec<usize> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.request
                    .is_some_and(|(_, at)| now.saturating_duration_since(at) > SNAPSHOT_RETRY)
            })
            .map(|(&i, _)| i)
            .collect();
        for idx in late {
            self.request_snapshot(idx);
        }
        self.cfg.metrics.replay.publish(&self.windows.stats());
        self.update_health();
    }

    // ---- records ----

    /// Tells the ingest node which streams to publish (every one subscribed).
    async fn send_announcement(&mut self, now: Instant) {
        let a = Announcement {
            edge: self.id,
            lease_ms: LEASE.as_millis() as u32,
            topics: self.streams.values().map(|s| s.topic).collect(),
        };
        let payload = encode_announcement(&a);
        let n = payload.len() as u64;
        match self
            .client
            .publish(self.cfg.subjects.interest(), payload)
            .await
        {
            Ok(()) => {
                self.announce = false;
                self.announced = now;
                add(&self.m().announcements, 1);
                add(&self.m().messages_out, 1);
                add(&self.m().bytes_out, n);
            }
            Err(e) => tracing::debug!(error = %e, "NATS publish of the announcement failed"),
        }
    }

    async fn on_batch(&mut self, idx: usize, sub_gen: u64, payload: &Bytes, received: u64) {
        self.count_in(payload.len());
        let Some(batch) = parse_batch(payload) else {
            tracing::warn!("malformed batch on the bus");
            return;
        };
        let n = batch.records.len() as u64;
        add(&self.m().records, n);
        if !self.epoch_ok(batch.epoch) || !self.live {
            // Another numbering (the heartbeat switches epochs) or an outage: ignore.
            return;
        }
        let Some(format) = self.streams.get(&idx).map(|s| s.topic.format) else {
            return;
        };
        let hops = &self.cfg.metrics.bus.hops;
        for (_, bytes) in &batch.records {
            if let Some((exch, recv)) = record_times(format, bytes) {
                hops[0].record(recv.saturating_sub(exch), 1);
                hops[1].record(batch.publish_ts.saturating_sub(recv), 1);
            }
        }
        hops[2].record(received.saturating_sub(batch.publish_ts), n);
        self.forward_batch(idx, sub_gen, batch.records);
        let hops = &self.cfg.metrics.bus.hops;
        hops[3].record(clock::realtime_ns().saturating_sub(received), n);
    }

    fn forward_batch(&mut self, idx: usize, sub_gen: u64, records: Vec<(u64, Bytes)>) {
        for (seq, bytes) in records {
            let Some(s) = self.streams.get_mut(&idx) else {
                return;
            };
            if s.sub_gen != sub_gen {
                return;
            }
            self.on_record(idx, seq, bytes);
        }
    }

    fn on_record(&mut self, idx: usize, seq: u64, bytes: Bytes) {
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        let topic = s.topic;
        match s.last {
            None if !topic.is_book() => {
                s.last = Some(seq);
                self.forward(topic, seq, bytes);
            }
            None => {
                if s.buffer.len() >= MAX_BUFFERED {
                    s.buffer.clear();
                }
                s.buffer.push((seq, bytes));
            }
            Some(l) if seq <= l => {}
            Some(l) if seq == l + 1 || !topic.is_book() => {
                if seq != l + 1 {
                    add(&self.cfg.metrics.bus.gaps, 1);
                }
                s.last = Some(seq);
                let reseed = match s.replica.as_mut().filter(|r| r.is_seeded()) {
                    Some(r) => r.apply(&bytes).err(),
                    None => None,
                };
                self.forward(topic, seq, bytes);
                self.release_held(idx);
                if let Some(e) = reseed {
                    // A snapshot seeds it again (conflated ticks skip it meanwhile).
                    tracing::warn!(error = %e, ?topic, "the edge's replica lost the book");
                    self.reseed(idx);
                }
            }
            Some(l) => {
                tracing::debug!(topic = ?topic, expected = l + 1, got = seq, "gap on the bus");
                add(&self.cfg.metrics.bus.gaps, 1);
                s.last = None;
                s.replace = true;
                s.held = None;
                s.buffer.clear();
                s.buffer.push((seq, bytes));
                self.request_snapshot(idx);
            }
        }
    }

    /// Pushes record `seq` to every shard with subscribers of its topic, and appends it to the
    /// topic's replay window.
    fn forward(&mut self, topic: Topic, seq: u64, bytes: Bytes) {
        self.windows.append(topic, seq, bytes.clone(), self.now);
        self.push_to_shards(topic, &bytes);
    }

    /// Pushes a record of `topic` to every shard with subscribers of it.
    fn push_to_shards(&mut self, topic: Topic, bytes: &Bytes) {
        for shard in 0..self.cfg.rings.len() {
            if self.cfg.interest.any(shard, topic) {
                let _ = self.cfg.rings[shard].push(ShardMsg::Record {
                    topic,
                    bytes: bytes.clone(),
                });
                self.touched[shard] = true;
            }
        }
    }

    /// Stream `idx`'s replica lost the book: a fresh snapshot (handed over when the stream
    /// reaches it, [`Self::answer_waiters`]) seeds it again.
    fn reseed(&mut self, idx: usize) {
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        if let Some(r) = s.replica.as_mut() {
            r.unseed();
        }
        if s.last.is_some() && s.request.is_none() && s.held.is_none() {
            self.request_snapshot(idx);
        }
    }

    /// The conflated tiers due at `now` tick (`feed/conflate.rs`, as on a standalone ingester):
    /// each watched topic whose stream moved since its last tick gets one snapshot of its
    /// stream's replica, encoded once per (stream, format) and tick, and pushed to every shard
    /// with subscribers of it. A topic no shard watches any more is forgotten; a stream out of
    /// line (joining, healing, an outage) is skipped: its clients keep the last snapshot,
    /// correct as of its seq.
    fn tick_conflated(&mut self, now: Instant) {
        if self.conflation.next_tick().is_none_or(|t| t > now) {
            return;
        }
        let mut sends: Vec<Topic> = Vec::new();
        for tier in self.conflation.due(now) {
            let interest = &self.cfg.interest;
            let shards = self.cfg.rings.len();
            let streams = &self.streams;
            self.conflation.tick(tier, |w| {
                let t = w.topic;
                if !(0..shards).any(|s| interest.any(s, t)) {
                    return false;
                }
                let Some(s) = streams.get(&feed_topic(t).index()) else {
                    return true;
                };
                let seq = s.replica.as_ref().and_then(Replica::seq);
                if s.last.is_some() && seq == s.last && w.last != seq {
                    w.last = seq;
                    sends.push(t);
                }
                true
            });
        }
        let mut encoded: HashMap<(usize, Format), Option<Bytes>> = HashMap::new();
        let mut made = 0;
        for t in sends {
            let idx = feed_topic(t).index();
            let bytes = match encoded.get(&(idx, t.format)) {
                Some(b) => b.clone(),
                None => {
                    let b = self.replica_snapshot(t);
                    made += u64::from(b.is_some());
                    encoded.insert((idx, t.format), b.clone());
                    b
                }
            };
            if let Some(bytes) = bytes {
                self.push_to_shards(t, &bytes);
            }
        }
        add(&self.cfg.metrics.ingest.conflated_snapshots, made);
    }

    /// The forwarded stream reached a held snapshot: hand it to the waiters.
    fn release_held(&mut self, idx: usize) {
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        let (Some(last), Some((hs, _))) = (s.last, &s.held) else {
            return;
        };
        if last < *hs {
            return;
        }
        let Some((hs, bytes)) = s.held.take() else {
            return;
        };
        if last == hs {
            self.answer_waiters(idx, &bytes);
        } else {
            // Passed it without handing it over (cannot happen in order): ask again.
            self.request_snapshot(idx);
        }
    }

    /// The stream is at the seq of snapshot `bytes`: it seeds the stream's replica, and every
    /// waiter gets it (a conflated tier's waiter, the replica's in its own format).
    fn answer_waiters(&mut self, idx: usize, bytes: &Bytes) {
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        if let Some(r) = s.replica.as_mut() {
            if let Err(e) = r.apply(bytes) {
                tracing::warn!(error = %e, topic = ?s.topic, "a snapshot the edge cannot apply");
            }
        }
        let waiters = std::mem::take(&mut s.waiters);
        let mut unanswered = Vec::new();
        for (shard, conn, req, topic) in waiters {
            let bytes = if topic.conflation().is_some() {
                match self.replica_snapshot(topic) {
                    Some(b) => b,
                    None => {
                        unanswered.push((shard, conn, req, topic));
                        continue;
                    }
                }
            } else {
                bytes.clone()
            };
            self.push_snapshot(shard, conn, req, topic, bytes);
        }
        if !unanswered.is_empty() {
            if let Some(s) = self.streams.get_mut(&idx) {
                // Asked again by the tick, [`SNAPSHOT_RETRY`] from now (no busy loop).
                s.waiters = unanswered;
                s.request.get_or_insert((0, self.now));
            }
        }
    }

    async fn on_reply(&mut self, idx: usize, sub_gen: u64, payload: Option<Bytes>) {
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        let Some((id, sent)) = s.request else {
            return;
        };
        if id != sub_gen {
            return;
        }
        let Some(payload) = payload else {
            // Timed out, or no responder (the ingest node is down): the tick asks again
            // [`SNAPSHOT_RETRY`] after this request was sent, not at once (no busy loop).
            s.request = Some((0, sent));
            return;
        };
        s.request = None;
        self.count_in(payload.len());
        let Some((epoch, seq, bytes)) = parse_snapshot_reply(&payload) else {
            return;
        };
        if !self.epoch_ok(epoch) || !self.live {
            return;
        }
        let Some(s) = self.streams.get_mut(&idx) else {
            return;
        };
        let topic = s.topic;
        match s.last {
            None => {
                // Joining or healing: drop what the snapshot holds, apply the rest.
                s.buffer.retain(|(q, _)| *q > seq);
                if s.buffer.first().is_some_and(|(q, _)| *q != seq + 1) {
                    // Records between the snapshot and the buffer are missing: try again.
                    self.request_snapshot(idx);
                    return;
                }
                s.last = Some(seq);
                let rest = std::mem::take(&mut s.buffer);
                if std::mem::take(&mut s.replace) {
                    add(&self.cfg.metrics.bus.resyncs, 1);
                    if self.windows.last_seq(topic).is_some_and(|l| l >= seq) {
                        // Nothing was missed: the window goes on; the snapshot (which restates
                        // the book at `seq`) is for the clients only.
                        self.push_to_shards(topic, &bytes);
                    } else {
                        self.forward(topic, seq, bytes.clone());
                    }
                }
                self.answer_waiters(idx, &bytes);
                for (q, b) in rest {
                    self.on_record(idx, q, b);
                }
                self.check_resumed();
            }
            Some(l) if seq == l => self.answer_waiters(idx, &bytes),
            Some(l) if seq > l => s.held = Some((seq, bytes)),
            Some(_) => self.request_snapshot(idx),
        }
    }

    fn wake_shards(&mut self) {
        for (shard, t) in self.touched.iter_mut().enumerate() {
            if std::mem::take(t) {
                if let Some(r) = self.cfg.rings.get(shard) {
                    r.wake();
                }
            }
        }
    }
}

/// A random id for this process's announcements: std's per-process random hash keys over the
/// process id and the wall clock (as [`Epoch::generate`]).
fn edge_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(clock::realtime_ns());
    h.finish()
}

/// The stream a subscriber of `topic` is fed from: for a conflated tier (either format), the
/// binary book stream of its depth, whose replica its snapshots are made from; else itself.
fn feed_topic(topic: Topic) -> Topic {
    match topic.conflation() {
        Some((d, _)) => Topic::book(topic.sid, d, Format::Binary),
        None => topic,
    }
}

/// The snapshot of conflated topic `tier` now, from the replica of the stream it is made from
/// ([`feed_topic`]): `None` unless that stream is in line and its replica holds its last
/// record.
fn replica_snapshot(
    streams: &HashMap<usize, Stream>,
    table: &SymbolTable,
    tier: Topic,
) -> Option<Bytes> {
    let s = streams.get(&feed_topic(tier).index())?;
    let r = s.replica.as_ref()?;
    if s.last.is_none() || r.seq() != s.last {
        return None;
    }
    r.encode(tier.format, table.symbols.get(tier.sid as usize)?)
}

/// Sleeps until `at` (for ever when `None`).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The status code of an encoded status record.
fn wire_status_code(format: Format, bytes: &[u8]) -> Option<StatusCode> {
    match format {
        // The binary status body is the u16 code right after the 32-byte header.
        Format::Binary => {
            let b = bytes.get(wire::RECORD_HEADER_LEN..wire::RECORD_HEADER_LEN + 2)?;
            StatusCode::from_u16(u16::from_le_bytes([b[0], b[1]]))
        }
        Format::Json => {
            const KEY: &[u8] = b"\"code\":";
            let at = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
            StatusCode::from_u16(u16::from(*bytes.get(at)?).checked_sub(u16::from(b'0'))?)
        }
    }
}
