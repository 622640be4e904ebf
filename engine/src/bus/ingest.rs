//! The ingest node's publisher (`--role ingest`): one thread that talks to NATS.
//!
//! To the ingester it is one more shard: it owns a ring and counts as a subscriber of the
//! streams the edges want (below), so the ingester encodes each record once per format and
//! pushes it here exactly as it pushes it to a shard. This thread drains the
//! ring, groups the records per stream into batches (up to [`MAX_BATCH_BYTES`], flushed when the
//! ring is empty) and publishes each batch to its stream's subject. (A batch holds the records
//! of one stream that arrived since the last drain: about one at tens of updates a second per
//! symbol, more as the rate grows; docs/benchmarks.md "The bus" measures a linger and finds it
//! not worth its latency.) Snapshot requests from the
//! edges become the ingester's ordinary snapshot requests: the ingester answers them on this
//! ring in order with the records, and this thread flushes every batch before it publishes the
//! reply, so that a reply with seq `S` follows the records up to `S` on the wire.
//!
//! The symbol table is published on change and every second (the edges' heartbeat), with the
//! epoch, and on request.
//!
//! Interest (docs/protocol.md §8.5): the bus counts as a subscriber of the streams some edge
//! holds a lease on ([`super::leases`]: the edges' announcements on `<p>.interest`, and every
//! snapshot or replay request, whose stream is held before the request reaches the ingester),
//! and the ingester encodes and pushes only those; with `bus-publish-all` it counts as a
//! subscriber of every stream of every symbol in both formats (the layout of version 1).
//! Every batch is stamped with this thread's wall clock as it is handed to NATS.
//!
//! Replay requests (`<p>.replay`: the records of one stream after a seq, for an edge whose
//! client resumes there) become the ingester's ordinary resume requests for one stream: the
//! ingester answers from its replay windows on this ring in order with the records (the bus
//! counts as a watcher of every stream, so every stream has a window), and the reply holds the
//! records up to the last one published before it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::Interest as TokioInterest;
use tokio::io::unix::AsyncFd;

use super::leases::{Change, Leases};
use super::pending::InFlight;
use super::{
    BatchWriter, MAX_BATCH_BYTES, MAX_REPLAY_REPLY_BYTES, ReplayRequest, Subjects,
    encode_replay_reply, encode_snapshot_reply, encode_status, encode_symbols,
    parse_replay_request, parse_snapshot_request, record_seq,
};
use crate::clock;
use crate::fanout::ConnId;
use crate::fanout::interest::Interest;
use crate::metrics::{Metrics, add};
use crate::replay::epoch::Epoch;
use crate::ring::{IngestRequest, ResumeAnswer, ResumeRequest, Ring, ShardMsg, SymbolDirectory};

/// Ring messages handled before batches are flushed and other events looked at.
const DRAIN_MAX: usize = 16_384;
/// How long a snapshot or replay request holds its stream (the asking edge's announcements
/// hold it after that).
pub const REQUEST_LEASE: std::time::Duration = std::time::Duration::from_secs(5);
/// Most edges holding leases at a time (a bound against a peer inventing edge ids).
const MAX_EDGES: usize = 4_096;

/// What the publisher thread needs.
#[derive(Debug)]
pub struct IngestBus {
    /// NATS server(s), comma-separated `nats://HOST:PORT`.
    pub nats_url: String,
    /// Subjects of the cluster.
    pub subjects: Subjects,
    /// The ring the ingester fills for the bus (its shard number is `shard`).
    pub ring: Arc<Ring>,
    /// The poll the ring's waker is registered with.
    pub poll: mio::Poll,
    /// The bus's shard number for the ingester.
    pub shard: usize,
    /// Requests to the ingester.
    pub requests: crossbeam_channel::Sender<IngestRequest>,
    /// Wakes the ingester after a request.
    pub ingest_waker: Arc<mio::Waker>,
    /// The symbol table, as the ingester publishes it.
    pub symbols: Arc<SymbolDirectory>,
    /// The epoch of this node's numbering (the ingester's, also in its clients' replies).
    pub epoch: Arc<crate::replay::epoch::EpochCell>,
    /// Reconnect back-off, first delay and cap.
    pub reconnect: (Duration, Duration),
    /// The ingester's subscriber counts: the bus's (shard `shard`) follow the edges' leases.
    pub interest: Arc<Interest>,
    /// Publish every stream, whatever the edges announce (`bus-publish-all`; the interest of
    /// shard `shard` was set for every stream at start).
    pub publish_all: bool,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
}

/// The reconnect delay before attempt `n` (1, 2, …): `min` doubling up to `max`.
pub(crate) fn backoff(n: usize, min: Duration, max: Duration) -> Duration {
    let shift = u32::try_from(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    min.saturating_mul(1 << shift).min(max)
}

/// Options shared by both roles: reconnect forever with back-off, report connection events.
pub(crate) fn connect_options(
    name: &str,
    reconnect: (Duration, Duration),
    events: tokio::sync::mpsc::UnboundedSender<Event>,
) -> ConnectOptions {
    let (min, max) = reconnect;
    ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .reconnect_delay_callback(move |n| backoff(n, min, max))
        .event_callback(move |ev| {
            let events = events.clone();
            async move {
                let _ = events.send(ev);
            }
        })
}

/// The NATS servers of a `nats-url` setting.
pub(crate) fn server_list(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl IngestBus {
    fn epoch(&self) -> u32 {
        self.epoch.get().as_u32()
    }

    /// Runs the publisher on the current thread (its own tokio runtime) until shutdown.
    ///
    /// # Errors
    /// When the runtime cannot be built.
    pub fn run(self) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.main())
    }

    async fn main(mut self) -> std::io::Result<()> {
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let opts = connect_options("tickcast-ingest", self.reconnect, ev_tx);
        let client = opts
            .connect(server_list(&self.nats_url))
            .await
            .map_err(std::io::Error::other)?;
        let mut snap_sub = client
            .subscribe(self.subjects.snapshot())
            .await
            .map_err(std::io::Error::other)?;
        let mut sym_sub = client
            .subscribe(self.subjects.symbols_get())
            .await
            .map_err(std::io::Error::other)?;
        let mut replay_sub = client
            .subscribe(self.subjects.replay())
            .await
            .map_err(std::io::Error::other)?;
        let mut interest_sub = client
            .subscribe(self.subjects.interest())
            .await
            .map_err(std::io::Error::other)?;
        // The ring's waker is a mio waker; its poll's epoll descriptor turns readable when
        // woken, and tokio watches that descriptor. (`with_interest` is deprecated because
        // nothing ties the descriptor's lifetime to it: here the poll is `self`'s, which
        // outlives this local.)
        #[allow(deprecated)]
        let ring_fd = AsyncFd::with_interest(
            std::os::fd::AsRawFd::as_raw_fd(&self.poll),
            TokioInterest::READABLE,
        )?;
        let mut events = mio::Events::with_capacity(8);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut st = State {
            batches: HashMap::new(),
            replies: InFlight::default(),
            replays: InFlight::default(),
            pending: HashMap::new(),
            next_req: 0,
            table_len: 0,
            ticks: 0,
            subjects: Vec::new(),
            leases: Leases::new(self.interest.max_symbols(), MAX_EDGES),
            changes: Vec::new(),
        };
        tracing::info!(nats = %self.nats_url, epoch = %format!("{:08x}", self.epoch()), "ingest node publishing to NATS");
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                // A flush waits for a connection: bounded, NATS may be gone too.
                let _ = tokio::time::timeout(Duration::from_millis(500), client.flush()).await;
                return Ok(());
            }
            self.drain(&client, &mut st).await;
            if !self.ring.prepare_sleep() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                guard = ring_fd.readable() => {
                    if let Ok(mut g) = guard {
                        let _ = self.poll.poll(&mut events, Some(Duration::ZERO));
                        g.clear_ready();
                    }
                }
                Some(msg) = snap_sub.next() => {
                    add(&self.metrics.bus.messages_in, 1);
                    add(&self.metrics.bus.bytes_in, msg.payload.len() as u64);
                    if let (Some(reply), Some(topic)) = (msg.reply, parse_snapshot_request(&msg.payload)) {
                        // Held before the ingester sees the request: the records after its
                        // answer are published.
                        st.leases.request(topic, clock::monotonic(), REQUEST_LEASE, &mut st.changes);
                        self.apply(&mut st);
                        // One request per topic at a time in the ingester (which holds them
                        // while the symbol is stale): later askers share its answer.
                        let shared = st
                            .pending
                            .get(&topic.index())
                            .and_then(|req| st.replies.get_mut(*req));
                        if let Some(waiting) = shared {
                            waiting.push(reply);
                        } else {
                            st.next_req = st.next_req.wrapping_add(1);
                            // Full (answers lost in the ring, not yet expired): dropped; the
                            // edge asks again.
                            let now = clock::monotonic();
                            if st.replies.insert(st.next_req, vec![reply], now).is_ok() {
                                st.pending.insert(topic.index(), st.next_req);
                                let _ = self.requests.send(IngestRequest::Snapshot {
                                    shard: self.shard,
                                    conn: ConnId { index: 0, generation: 0 },
                                    req: st.next_req,
                                    topic,
                                });
                                let _ = self.ingest_waker.wake();
                            }
                        }
                    }
                }
                Some(msg) = replay_sub.next() => {
                    add(&self.metrics.bus.messages_in, 1);
                    add(&self.metrics.bus.bytes_in, msg.payload.len() as u64);
                    // (A request without a reply subject has nobody to answer.)
                    if let Some(reply) = msg.reply {
                        match parse_replay_request(&msg.payload) {
                            Ok(r) => {
                                st.leases.request(r.topic, clock::monotonic(), REQUEST_LEASE, &mut st.changes);
                                self.apply(&mut st);
                                st.next_req = st.next_req.wrapping_add(1);
                                let now = clock::monotonic();
                                match st.replays.insert(st.next_req, (reply, r), now) {
                                    Ok(()) => {
                                        let _ = self
                                            .requests
                                            .send(replay_as_resume(self.shard, st.next_req, &r));
                                        let _ = self.ingest_waker.wake();
                                    }
                                    // Full: a miss at once.
                                    Err((reply, _)) => {
                                        let miss = encode_replay_reply(self.epoch(), None);
                                        self.publish(&client, reply, miss).await;
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "malformed replay request on the bus");
                                let miss = encode_replay_reply(self.epoch(), None);
                                self.publish(&client, reply, miss).await;
                            }
                        }
                    }
                }
                Some(msg) = sym_sub.next() => {
                    add(&self.metrics.bus.messages_in, 1);
                    if let Some(reply) = msg.reply {
                        let table = self.symbols.load();
                        self.publish(&client, reply, encode_symbols(self.epoch(), &table)).await;
                    }
                }
                Some(msg) = interest_sub.next() => {
                    add(&self.metrics.bus.messages_in, 1);
                    add(&self.metrics.bus.bytes_in, msg.payload.len() as u64);
                    match st.leases.announce(&msg.payload, clock::monotonic(), &mut st.changes) {
                        Ok(()) => add(&self.metrics.bus.announcements, 1),
                        Err(e) => {
                            add(&self.metrics.bus.bad_announcements, 1);
                            tracing::debug!(error = %e, "malformed interest announcement on the bus");
                        }
                    }
                    self.apply(&mut st);
                }
                Some(ev) = ev_rx.recv() => self.on_event(&ev),
                _ = tick.tick() => {
                    st.leases.expire(clock::monotonic(), &mut st.changes);
                    self.apply(&mut st);
                    st.ticks += 1;
                    st.expire(clock::monotonic());
                    let table = self.symbols.load();
                    if table.symbols.len() != st.table_len || st.ticks % 4 == 0 {
                        st.table_len = table.symbols.len();
                        let subject = Subject::from(self.subjects.symbols());
                        self.publish(&client, subject, encode_symbols(self.epoch(), &table)).await;
                    }
                }
            }
            self.ring.awake();
        }
    }

    /// Hands the leases' changes to the ingester (the bus's subscriber counts).
    fn apply(&self, st: &mut State) {
        for c in st.changes.drain(..) {
            if self.publish_all {
                continue;
            }
            match c {
                Change::Want(t) => self.interest.add(self.shard, t),
                Change::Drop(t) => self.interest.remove(self.shard, t),
            }
        }
        let b = &self.metrics.bus;
        b.wanted_streams
            .store(st.leases.streams() as u64, Ordering::Relaxed);
        b.leasing_edges
            .store(st.leases.edges() as u64, Ordering::Relaxed);
    }

    fn on_event(&self, ev: &Event) {
        let b = &self.metrics.bus;
        match ev {
            Event::Connected => {
                add(&b.connects, 1);
                b.connected.store(1, Ordering::Relaxed);
                tracing::info!("connected to NATS");
            }
            Event::Disconnected => {
                b.connected.store(0, Ordering::Relaxed);
                tracing::warn!("disconnected from NATS; reconnecting");
            }
            // Reconnect attempts report each failure: the back-off is enough.
            Event::ClientError(e) => tracing::debug!(error = %e, "NATS client error"),
            other => tracing::warn!(event = %other, "NATS event"),
        }
    }

    /// Publishes `payload` (skipped while NATS is unreachable: the edges resync when it is
    /// back, and queueing would only replay stale records).
    async fn publish(&self, client: &Client, subject: Subject, payload: Bytes) -> bool {
        if client.connection_state() != async_nats::connection::State::Connected {
            return false;
        }
        let n = payload.len() as u64;
        match client.publish(subject, payload).await {
            Ok(()) => {
                add(&self.metrics.bus.messages_out, 1);
                add(&self.metrics.bus.bytes_out, n);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "NATS publish failed");
                false
            }
        }
    }

    /// Drains the ring into batches and publishes them (and statuses and snapshot replies in
    /// ring order).
    async fn drain(&mut self, client: &Client, st: &mut State) {
        if self.ring.is_lagged() {
            let n = self.ring.recover();
            tracing::warn!(
                discarded = n,
                "the bus publisher fell behind its ring; edges heal the gaps with snapshots"
            );
        }
        let mut n = 0;
        while n < DRAIN_MAX {
            let Some(msg) = self.ring.pop() else { break };
            n += 1;
            match msg {
                ShardMsg::Record { topic, bytes } => {
                    let Some(seq) = record_seq(topic.format, &bytes) else {
                        continue;
                    };
                    let b = st
                        .batches
                        .entry(topic.index())
                        .or_insert_with(|| (topic, BatchWriter::new(self.epoch())));
                    b.1.push(seq, &bytes);
                    if b.1.len() >= MAX_BATCH_BYTES {
                        if let Some((topic, w)) = st.batches.remove(&topic.index()) {
                            let subject = st.subject(&self.subjects, topic);
                            self.publish_batch(client, subject, w).await;
                        }
                    }
                }
                ShardMsg::Status { sid, format, bytes } => {
                    self.flush(client, st).await;
                    let subject = Subject::from(self.subjects.status());
                    self.publish(
                        client,
                        subject,
                        encode_status(self.epoch(), sid, format, &bytes),
                    )
                    .await;
                }
                ShardMsg::Resumed(answer) => {
                    self.flush(client, st).await;
                    let Some((reply, r)) = st.replays.remove(answer.req) else {
                        continue;
                    };
                    add(&self.metrics.bus.replay_requests, 1);
                    let records = replayed(&r, &answer);
                    let payload = encode_replay_reply(self.epoch(), records.as_deref());
                    self.publish(client, reply, payload).await;
                }
                ShardMsg::Snapshot {
                    req, topic, bytes, ..
                } => {
                    self.flush(client, st).await;
                    let Some(replies) = st.replies.remove(req) else {
                        continue;
                    };
                    st.pending.remove(&topic.index());
                    let Some(seq) = record_seq(topic.format, &bytes) else {
                        continue;
                    };
                    let payload = encode_snapshot_reply(self.epoch(), seq, &bytes);
                    for reply in replies {
                        add(&self.metrics.bus.snapshot_requests, 1);
                        self.publish(client, reply, payload.clone()).await;
                    }
                }
            }
        }
        self.flush(client, st).await;
    }

    async fn flush(&self, client: &Client, st: &mut State) {
        if st.batches.is_empty() {
            return;
        }
        let batches: Vec<_> = st.batches.drain().map(|(_, b)| b).collect();
        for (topic, w) in batches {
            let subject = st.subject(&self.subjects, topic);
            self.publish_batch(client, subject, w).await;
        }
    }

    async fn publish_batch(&self, client: &Client, subject: Subject, w: BatchWriter) {
        let records = w.records() as u64;
        if self
            .publish(client, subject, w.finish(clock::realtime_ns()))
            .await
        {
            add(&self.metrics.bus.records, records);
        } else {
            add(&self.metrics.bus.unpublished, records);
        }
    }
}

/// A replay request as the ingester's resume request for one stream (its answer comes on the
/// bus's ring as [`ShardMsg::Resumed`] with request number `req`).
fn replay_as_resume(shard: usize, req: u32, r: &ReplayRequest) -> IngestRequest {
    let (book, trades) = if r.topic.is_book() {
        (Some(r.after), None)
    } else {
        (None, Some(r.after))
    };
    IngestRequest::Resume(Box::new(ResumeRequest {
        shard,
        conn: ConnId {
            index: 0,
            generation: 0,
        },
        req,
        epoch: Some(Epoch::from_u32(r.epoch)),
        depth_idx: if r.topic.is_book() {
            usize::from(r.topic.stream)
        } else {
            0
        },
        format: r.topic.format,
        // The bus carries the delta streams only.
        tier: None,
        symbols: vec![(r.topic.sid, book, trades)],
    }))
}

/// The records of the ingester's answer to replay `r`, with their seqs; `None` (a miss) when
/// not recovered, or too big for one reply.
fn replayed(r: &ReplayRequest, answer: &ResumeAnswer) -> Option<Vec<(u64, Bytes)>> {
    let s = answer.symbols.first().filter(|s| s.recovered)?;
    let records = if r.topic.is_book() {
        &s.book
    } else {
        &s.trades
    };
    let mut size = 5;
    let mut out = Vec::with_capacity(records.len());
    for b in records {
        size += 12 + b.len();
        if size > MAX_REPLAY_REPLY_BYTES {
            return None;
        }
        out.push((record_seq(r.topic.format, b)?, b.clone()));
    }
    Some(out)
}

struct State {
    /// Per topic index: the batch being filled.
    batches: HashMap<usize, (crate::fanout::Topic, BatchWriter)>,
    /// Snapshot requests sent to the ingester, by request number: where to reply.
    replies: InFlight<Vec<Subject>>,
    /// Replay requests sent to the ingester, by request number: where to reply, and what.
    replays: InFlight<(Subject, ReplayRequest)>,
    /// The request in the ingester per topic index.
    pending: HashMap<usize, u32>,
    next_req: u32,
    table_len: usize,
    ticks: u64,
    /// Stream subjects by topic index, made once.
    subjects: Vec<Option<Subject>>,
    /// The edges' interest.
    leases: Leases,
    /// What the last lease operation changed, for [`IngestBus::apply`].
    changes: Vec<Change>,
}

impl State {
    /// Forgets the requests whose answer the ring lost (`bus/pending.rs`): a topic whose
    /// snapshot request expired takes the next one afresh.
    fn expire(&mut self, now: std::time::Instant) {
        let replays = self.replays.expire(now).len();
        let snapshots = self.replies.expire(now);
        if replays + snapshots.len() > 0 {
            tracing::warn!(
                replays,
                snapshots = snapshots.len(),
                "requests unanswered (their answers were lost in the ring): forgotten"
            );
        }
        for (req, _) in snapshots {
            self.pending.retain(|_, r| *r != req);
        }
    }

    fn subject(&mut self, subjects: &Subjects, topic: crate::fanout::Topic) -> Subject {
        let i = topic.index();
        if self.subjects.len() <= i {
            self.subjects.resize(i + 1, None);
        }
        self.subjects[i]
            .get_or_insert_with(|| Subject::from(subjects.stream(topic)))
            .clone()
    }
}
