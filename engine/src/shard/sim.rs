//! A deterministic shard simulator: the sans-IO [`ShardCore`] driven with virtual time and
//! in-memory connections, no sockets and no sleeps (in the spirit of quinn-proto's test
//! `Pair`).
//!
//! The simulator plays the driver (one [`Sim::turn`] is one loop turn: drain, flush, timers,
//! queued writes) and the ingester (it publishes records into the shard's ring and answers the
//! snapshot requests the shard sends). Each [`SimSocket`] stands for a kernel socket with a send
//! buffer of `window` bytes: a client that [`Sim::read`]s empties it, a stalled one never does,
//! so writes become partial and then take nothing; a reset socket fails its next write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::clock;
use crate::config::Config;
use crate::fanout::interest::Interest;
use crate::fanout::outbuf::OutBuf;
use crate::fanout::{Format, Topic};
use crate::metrics::Metrics;
use crate::proto::close_code;
use crate::ring::{IngestRequest, Push, Ring, ShardMsg, SymbolDirectory, SymbolTable};
use crate::wire::{self, RecordHeader, RecordKind, SymbolMeta};

use proptest::prelude::*;

use super::core::{Accept, Broken, CoreContext, ShardCore, Transport};
use super::limits::ConnCounter;
use super::timers::SWEEP;

/// One in-memory socket.
#[derive(Debug)]
struct SimSocket {
    /// Bytes written and not yet read by the client (the kernel's send buffer).
    in_kernel: Vec<u8>,
    /// Capacity of the send buffer.
    window: usize,
    /// Everything the client has read.
    read: Vec<u8>,
    /// The next write fails (the peer reset the connection).
    reset: bool,
    /// Closed by the core; `Some(true)` after a graceful close (write half shut down).
    closed: Option<bool>,
}

/// The simulator's sockets, indexed like the core's slots.
#[derive(Debug, Default)]
struct SimNet {
    sockets: Vec<Option<SimSocket>>,
}

impl Transport for SimNet {
    fn write(&mut self, idx: u32, out: &mut OutBuf, _only_if_ready: bool) -> Result<u64, Broken> {
        let Some(s) = self.sockets.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Err(Broken);
        };
        if s.closed.is_some() || s.reset {
            return Err(Broken);
        }
        let mut written = 0;
        while !out.is_empty() && s.in_kernel.len() < s.window {
            let mut iov = [std::io::IoSlice::new(&[]); 16];
            let n = out.io_slices(&mut iov);
            let mut took = 0;
            for slice in &iov[..n] {
                let room = s.window - s.in_kernel.len();
                let k = slice.len().min(room);
                s.in_kernel.extend_from_slice(&slice[..k]);
                took += k;
                if k < slice.len() {
                    break;
                }
            }
            out.advance(took);
            written += took as u64;
        }
        Ok(written)
    }

    fn close(&mut self, idx: u32, graceful: bool) {
        if let Some(s) = self.sockets.get_mut(idx as usize).and_then(Option::as_mut) {
            s.closed = Some(graceful);
        }
    }
}

/// A WebSocket frame as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// (kind, sid, seq) of each record of a binary batch, read by the bench crate's
    /// independent decoder (which also checks the batch is well formed).
    fn records(&self) -> Vec<(u8, u32, u64)> {
        if self.opcode != 0x2 {
            return Vec::new();
        }
        tickcast_bench::wire::decode_batch(&self.payload)
            .expect("a valid batch")
            .iter()
            .map(|r| (r.header.kind, r.header.sid, r.header.seq))
            .collect()
    }
}

/// Splits the server's unmasked frames off the front of `buf` (what is incomplete stays).
fn parse_frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        if buf.len() < 2 {
            break;
        }
        let (len, head) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (usize::from(n), 2),
        };
        if buf.len() < head + len {
            break;
        }
        frames.push(Frame {
            opcode: buf[0] & 0x0f,
            payload: buf[head..head + len].to_vec(),
        });
        buf.drain(..head + len);
    }
    frames
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The simulated wall clock at the start, seconds since the epoch.
const WALL0_S: u64 = 1_800_000_000;

/// The simulated shard, its clients and its ingester.
struct Sim {
    core: ShardCore,
    net: SimNet,
    now: Instant,
    ring: Arc<Ring>,
    requests: crossbeam_channel::Receiver<IngestRequest>,
    /// Snapshot requests the ingester received.
    snapshot_requests: usize,
    /// Next seq per sid (book depth 10, binary).
    seq: Vec<u64>,
    /// Frames the client of each slot has read and not yet looked at.
    frames: Vec<Vec<Frame>>,
    /// Virtual time at the start (the wall clock is `WALL0_S` then).
    start: Instant,
    _poll: mio::Poll,
}

/// Send-buffer size of a simulated socket unless a test says otherwise.
const WINDOW: usize = 1 << 20;
/// Depth index of depth 10.
const DEPTH10: usize = 1;

impl Sim {
    fn new(symbols: usize, ring_capacity: usize, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            shards: 1,
            ..Config::default()
        };
        configure(&mut config);
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let ring = Arc::new(Ring::new(ring_capacity, waker));
        let table = SymbolTable {
            symbols: (0..symbols)
                .map(|i| SymbolMeta {
                    symbol: format!("S{i}"),
                    sid: i as u32,
                    px_decimals: 2,
                    qty_decimals: 4,
                })
                .collect(),
        };
        let directory = SymbolDirectory::default();
        directory.store(Arc::new(table));
        let (tx, rx) = crossbeam_channel::unbounded();
        let now = clock::monotonic();
        let ctx = CoreContext {
            id: 0,
            interest: Arc::new(Interest::new(1, config.max_symbols)),
            conns: Arc::new(ConnCounter::new(config.max_conns, config.max_conns_per_ip)),
            config: Arc::new(config),
            ring: ring.clone(),
            symbols: Arc::new(directory),
            requests: tx,
            metrics: Arc::new(Metrics::new(1)),
        };
        Self {
            core: ShardCore::new(ctx, now),
            net: SimNet::default(),
            now,
            ring,
            requests: rx,
            snapshot_requests: 0,
            seq: vec![0; symbols],
            frames: Vec::new(),
            start: now,
            _poll: poll,
        }
    }

    fn metrics(&self) -> &crate::metrics::ShardMetrics {
        self.core.metrics()
    }

    // ---- clients ----

    /// A new connection from a client (the driver accepted a socket).
    fn connect(&mut self) -> u32 {
        let peer: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let Accept::Conn(idx) = self.core.handle_accept(peer) else {
            panic!("refused")
        };
        let i = idx as usize;
        if self.net.sockets.len() <= i {
            self.net.sockets.resize_with(i + 1, || None);
            self.frames.resize_with(i + 1, Vec::new);
        }
        self.net.sockets[i] = Some(SimSocket {
            in_kernel: Vec::new(),
            window: WINDOW,
            read: Vec::new(),
            reset: false,
            closed: None,
        });
        self.frames[i].clear();
        idx
    }

    /// The client of `idx` sends `bytes` (they arrive in one read).
    fn send(&mut self, idx: u32, bytes: &[u8]) {
        self.core.buffer_input(idx, bytes);
        self.core.handle_input(idx);
        self.core.write_queued(&mut self.net);
    }

    /// The client reads everything its socket holds; returns the new WebSocket frames.
    fn read(&mut self, idx: u32) -> Vec<Frame> {
        let s = self.socket(idx);
        let bytes = std::mem::take(&mut s.in_kernel);
        s.read.extend_from_slice(&bytes);
        // A socket with room again is writable: the driver writes what is queued.
        self.core.handle_writable(idx);
        self.core.write_queued(&mut self.net);
        let s = self.socket(idx);
        let mut buf = std::mem::take(&mut s.read);
        let frames = parse_frames(&mut buf);
        self.socket(idx).read = buf;
        frames
    }

    /// The raw text the client read (HTTP responses).
    fn read_text(&mut self, idx: u32) -> String {
        let s = self.socket(idx);
        let bytes = std::mem::take(&mut s.in_kernel);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn socket(&mut self, idx: u32) -> &mut SimSocket {
        self.net.sockets[idx as usize].as_mut().expect("socket")
    }

    /// A connected, upgraded `/ws` client.
    fn ws_client(&mut self) -> u32 {
        let idx = self.connect();
        self.send(idx, UPGRADE.as_bytes());
        let text = self.read_text(idx);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        idx
    }

    /// The client of `idx` subscribes to the book of `symbol` at depth 10 and reads the reply.
    fn subscribe(&mut self, idx: u32, symbol: &str) {
        let req = format!(
            r#"{{"op":"subscribe","id":1,"symbols":["{symbol}"],"channels":["book"],"depth":10}}"#
        );
        self.send(idx, &client_frame(0x1, req.as_bytes()));
        let frames = self.read(idx);
        assert!(
            frames.iter().any(|f| f.opcode == 0x1
                && String::from_utf8_lossy(&f.payload).contains(r#""op":"subscribed""#)),
            "{frames:?}"
        );
    }

    fn is_gone(&self, idx: u32) -> bool {
        self.core.conn(idx).is_none()
    }

    // ---- time ----

    /// One driver turn at the current virtual time.
    fn turn(&mut self) {
        self.core.drain_ring();
        self.core.flush(&mut self.net);
        self.core.set_now(self.now);
        let since = self.now.duration_since(self.start).as_nanos() as u64;
        self.core.set_wall_clock(WALL0_S * 1_000_000_000 + since);
        self.core.record_latency(0);
        if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
            self.core.handle_timeout(&mut self.net);
        }
        self.core.write_queued(&mut self.net);
    }

    /// Moves virtual time on by `d`, one turn at each timer (and at the end).
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.core.poll_timeout().unwrap_or(end).min(end);
            self.now = self.now.max(next);
            self.turn();
            if self.now >= end {
                break;
            }
        }
    }

    // ---- the ingester ----

    /// Takes the snapshot requests the shard sent (the ingester is woken by the driver).
    fn take_requests(&mut self) -> Vec<IngestRequest> {
        let _ = self.core.take_ingest_wake();
        let reqs: Vec<IngestRequest> = self.requests.try_iter().collect();
        self.snapshot_requests += reqs.len();
        reqs
    }

    /// Answers every snapshot request: the snapshot goes into the ring, in order with the
    /// stream's records (seq = the stream's current seq).
    fn answer_requests(&mut self) -> usize {
        let reqs = self.take_requests();
        for r in &reqs {
            let IngestRequest::Snapshot {
                conn, req, topic, ..
            } = *r;
            let bytes = self.record(
                RecordKind::Snapshot,
                topic.sid,
                self.seq[topic.sid as usize],
            );
            let pushed = self.ring.push(ShardMsg::Snapshot {
                conn,
                req,
                topic,
                bytes,
            });
            assert_eq!(pushed, Push::Queued);
        }
        reqs.len()
    }

    /// Publishes the next book delta of `sid` (depth 10, binary); false when the ring dropped it.
    fn publish(&mut self, sid: u32) -> bool {
        self.seq[sid as usize] += 1;
        let bytes = self.record(RecordKind::Delta, sid, self.seq[sid as usize]);
        let topic = Topic::book(sid, DEPTH10, Format::Binary);
        self.ring.push(ShardMsg::Record { topic, bytes }) == Push::Queued
    }

    fn record(&self, kind: RecordKind, sid: u32, seq: u64) -> Bytes {
        let mut out = BytesMut::new();
        let hdr = RecordHeader {
            kind,
            flags: 0,
            sid,
            seq,
            exch_ts: 1,
            recv_ts: 2,
        };
        wire::encode_book(&mut out, &hdr, &[], &[]);
        out.freeze()
    }

    /// Opens `n` clients subscribed to `symbol`, with their snapshots delivered.
    fn subscribers(&mut self, n: usize, symbol: &str) -> Vec<u32> {
        let ids: Vec<u32> = (0..n)
            .map(|_| {
                let idx = self.ws_client();
                self.subscribe(idx, symbol);
                idx
            })
            .collect();
        self.answer_requests();
        self.turn();
        for &idx in &ids {
            let got: Vec<_> = self.read(idx).iter().flat_map(Frame::records).collect();
            assert_eq!(got.first().map(|r| r.0), Some(RecordKind::Snapshot as u8));
        }
        ids
    }
}

// ---- the connection lifecycle, in virtual time ----

#[test]
fn handshake_timeout_answers_408_then_closes() {
    let mut sim = Sim::new(1, 1024, |_| {});
    let timeout = sim.core.config().handshake_timeout;
    let idx = sim.connect();
    sim.send(idx, b"GET /ws HTTP/1.1\r\nHost: sim\r\n");
    sim.advance(timeout - SWEEP);
    assert!(!sim.is_gone(idx), "closed before its handshake timeout");
    sim.advance(SWEEP);
    assert!(sim.is_gone(idx));
    assert!(sim.read_text(idx).starts_with("HTTP/1.1 408"));
    assert_eq!(sim.socket(idx).closed, Some(true));
}

#[test]
fn ping_then_ping_timeout_closes_with_1001() {
    let mut sim = Sim::new(1, 1024, |c| c.ping_interval = Duration::from_secs(10));
    let idx = sim.ws_client();
    sim.advance(Duration::from_secs(9));
    assert!(sim.read(idx).is_empty());
    sim.advance(Duration::from_secs(1));
    let frames = sim.read(idx);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].opcode, 0x9, "a ping after one idle interval");
    // Not answered within another interval: closed with 1001.
    sim.advance(Duration::from_secs(10));
    let frames = sim.read(idx);
    assert_eq!(
        frames.last().and_then(Frame::close_code),
        Some(close_code::GOING_AWAY)
    );
    assert_eq!(sim.metrics().ping_timeouts.load(Ordering::Relaxed), 1);
}

#[test]
fn any_bytes_from_the_client_keep_it_alive() {
    let mut sim = Sim::new(1, 1024, |c| c.ping_interval = Duration::from_secs(10));
    let idx = sim.ws_client();
    for _ in 0..5 {
        sim.advance(Duration::from_secs(9));
        sim.send(idx, &client_frame(0xA, b""));
    }
    assert!(sim.read(idx).is_empty(), "no ping: the client kept talking");
    assert!(!sim.is_gone(idx));
}

#[test]
fn close_handshake_times_out_when_the_client_never_answers() {
    let mut sim = Sim::new(1, 1024, |_| {});
    let timeout = sim.core.config().close_timeout;
    let idx = sim.ws_client();
    // Binary data frames are refused with 1003; the client never sends its close.
    sim.send(idx, &client_frame(0x2, b"nope"));
    let frames = sim.read(idx);
    assert_eq!(
        frames.last().and_then(Frame::close_code),
        Some(close_code::UNSUPPORTED_DATA)
    );
    sim.advance(timeout - SWEEP);
    assert!(!sim.is_gone(idx), "dropped before the close timeout");
    sim.advance(SWEEP);
    assert!(sim.is_gone(idx));
    assert_eq!(sim.socket(idx).closed, Some(false));
}

#[test]
fn close_handshake_completes_when_the_client_answers() {
    let mut sim = Sim::new(1, 1024, |_| {});
    let idx = sim.ws_client();
    sim.send(idx, &client_frame(0x2, b"nope"));
    sim.read(idx);
    sim.send(
        idx,
        &client_frame(0x8, &close_code::UNSUPPORTED_DATA.to_be_bytes()),
    );
    assert!(sim.is_gone(idx));
    assert_eq!(sim.socket(idx).closed, Some(true));
}

#[test]
fn slow_consumer_is_evicted_with_1013_and_kept_until_evict_timeout() {
    let mut sim = Sim::new(1, 4096, |c| {
        c.max_outbuf_bytes = 16 << 10;
        c.evict_timeout = Duration::from_secs(20);
    });
    let ids = sim.subscribers(2, "S0");
    let (slow, fast) = (ids[0], ids[1]);
    // The slow client's socket buffer holds 4 KiB and it stops reading.
    sim.socket(slow).window = 4096;
    let mut turns = 0;
    while sim.metrics().evicted_slow.load(Ordering::Relaxed) == 0 {
        for _ in 0..20 {
            assert!(sim.publish(0));
        }
        sim.turn();
        sim.read(fast);
        turns += 1;
        assert!(turns < 100, "never evicted");
    }
    // 20 records of ~40 bytes a turn: 4 KiB in the kernel plus 16 KiB queued takes a few
    // dozen turns, not the first one.
    assert!(turns > 5, "evicted after {turns} turns");
    assert!(
        !sim.is_gone(slow),
        "kept so that the close can still reach it"
    );
    // The fast one is untouched.
    for _ in 0..3 {
        sim.publish(0);
    }
    sim.turn();
    assert_eq!(sim.read(fast).iter().flat_map(Frame::records).count(), 3);
    // Still stalled after most of the eviction timeout...
    sim.advance(Duration::from_secs(19));
    assert!(!sim.is_gone(slow));
    // ... and dropped at it.
    sim.advance(Duration::from_secs(1));
    assert!(sim.is_gone(slow));
    assert_eq!(sim.socket(slow).closed, Some(false));
}

#[test]
fn evicted_consumer_that_reads_again_gets_1013_then_close_timeout() {
    let mut sim = Sim::new(1, 4096, |c| {
        c.max_outbuf_bytes = 16 << 10;
        c.evict_timeout = Duration::from_secs(60);
    });
    let slow = sim.subscribers(1, "S0")[0];
    sim.socket(slow).window = 4096;
    while sim.metrics().evicted_slow.load(Ordering::Relaxed) == 0 {
        for _ in 0..20 {
            sim.publish(0);
        }
        sim.turn();
    }
    // It reads again: what it was in the middle of, then the close.
    let mut frames = Vec::new();
    for _ in 0..20 {
        frames.extend(sim.read(slow));
    }
    assert_eq!(
        frames.last().and_then(Frame::close_code),
        Some(close_code::TRY_AGAIN_LATER)
    );
    // The close is with the kernel: the close handshake gets close_timeout, not the rest of
    // the eviction timeout.
    let close = sim.core.config().close_timeout;
    sim.advance(close);
    assert!(sim.is_gone(slow));
}

#[test]
fn reset_connection_is_dropped_and_the_others_continue() {
    let mut sim = Sim::new(1, 1024, |_| {});
    let ids = sim.subscribers(2, "S0");
    sim.socket(ids[0]).reset = true;
    sim.publish(0);
    sim.turn();
    assert!(sim.is_gone(ids[0]));
    assert_eq!(sim.read(ids[1]).iter().flat_map(Frame::records).count(), 1);
    assert_eq!(sim.core.connections(), 1);
}

#[test]
fn garbage_request_gets_400_and_never_panics() {
    let mut sim = Sim::new(1, 1024, |_| {});
    let idx = sim.connect();
    sim.send(idx, b"\x00\xff\x13 not http at all\r\n\r\n");
    assert!(sim.read_text(idx).starts_with("HTTP/1.1 400"));
    assert!(sim.is_gone(idx));
}

// ---- subscriptions and snapshots ----

#[test]
fn snapshot_requests_coalesce_many_subscribers_into_one() {
    let mut sim = Sim::new(2, 1024, |_| {});
    let ids: Vec<u32> = (0..50)
        .map(|_| {
            let idx = sim.ws_client();
            sim.subscribe(idx, "S1");
            idx
        })
        .collect();
    assert_eq!(
        sim.answer_requests(),
        1,
        "one snapshot request for 50 subscribers"
    );
    sim.turn();
    for &idx in &ids {
        let records: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
        assert_eq!(records, [(RecordKind::Snapshot as u8, 1, 0)]);
    }
    // Then every one of them gets the records that follow the snapshot.
    sim.publish(1);
    sim.turn();
    for &idx in &ids {
        let records: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
        assert_eq!(records, [(RecordKind::Delta as u8, 1, 1)]);
    }
}

// ---- a shard behind its ring (`cargo test -p tickcast lag`) ----

#[test]
fn lag_shard_behind_tiny_ring_resyncs_subscribers_with_snapshots() {
    let mut sim = Sim::new(2, 16, |_| {});
    let a = sim.subscribers(3, "S0");
    let b = sim.subscribers(2, "S1");
    // The feed outruns the shard: the 16-slot ring overflows and messages are dropped.
    let mut dropped = 0;
    for i in 0..40 {
        if !sim.publish(i % 2) {
            dropped += 1;
        }
    }
    assert!(dropped > 0 && sim.ring.is_lagged());
    sim.turn();
    assert_eq!(sim.metrics().ring_resyncs.load(Ordering::Relaxed), 1);
    assert!(!sim.ring.is_lagged());
    // Nothing from before the resync is delivered: the queued part was discarded.
    for &idx in a.iter().chain(&b) {
        assert!(sim.read(idx).iter().all(|f| f.records().is_empty()));
    }
    // One fresh snapshot request per stream, not per subscriber.
    assert_eq!(sim.answer_requests(), 2);
    sim.publish(0);
    sim.publish(1);
    sim.turn();
    for (ids, sid) in [(&a, 0), (&b, 1)] {
        let seq = sim.seq[sid as usize];
        for &idx in ids {
            let records: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
            assert_eq!(
                records,
                [
                    (RecordKind::Snapshot as u8, sid, seq - 1),
                    (RecordKind::Delta as u8, sid, seq)
                ],
                "a fresh snapshot, then the stream continues from it"
            );
        }
    }
}

#[test]
fn lag_resync_ignores_snapshots_requested_before_it() {
    let mut sim = Sim::new(1, 16, |_| {});
    let idx = sim.ws_client();
    sim.subscribe(idx, "S0");
    // The request is in flight when the shard falls behind.
    let stale = sim.take_requests();
    assert_eq!(stale.len(), 1);
    while sim.publish(0) {}
    sim.turn();
    assert_eq!(sim.metrics().ring_resyncs.load(Ordering::Relaxed), 1);
    // The old request is answered late: ignored (its req is stale).
    let IngestRequest::Snapshot {
        conn, req, topic, ..
    } = stale[0];
    let old = sim.record(RecordKind::Snapshot, 0, 1);
    sim.ring.push(ShardMsg::Snapshot {
        conn,
        req,
        topic,
        bytes: old,
    });
    sim.turn();
    assert!(sim.read(idx).iter().all(|f| f.records().is_empty()));
    // The new one is delivered.
    assert_eq!(sim.answer_requests(), 1);
    sim.turn();
    let records: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, RecordKind::Snapshot as u8);
}

// ---- hostile input ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a peer sends, before or after the upgrade and however it is cut, the shard
    /// never panics, and a connection it has given up on gets a close code or an HTTP error.
    #[test]
    fn any_bytes_from_a_peer_never_panic(
        upgrade_first in any::<bool>(),
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
    ) {
        let mut sim = Sim::new(1, 64, |_| {});
        let idx = if upgrade_first { sim.ws_client() } else { sim.connect() };
        for chunk in &chunks {
            if sim.is_gone(idx) {
                break;
            }
            sim.send(idx, chunk);
            sim.turn();
        }
        sim.advance(Duration::from_secs(1));
        if upgrade_first {
            let frames = sim.read(idx);
            if let Some(code) = frames.iter().find_map(Frame::close_code) {
                prop_assert!(code >= 1000, "close code {code}");
            }
        } else if sim.is_gone(idx) {
            let text = sim.read_text(idx);
            prop_assert!(text.starts_with("HTTP/1.1 "), "gone without a response: {text:?}");
        }
    }
}

// ---- HTTP routing, accepts and shutdown ----

#[test]
fn plain_http_requests_are_routed_then_closed() {
    let mut sim = Sim::new(1, 64, |_| {});
    for (request, status) in [
        ("GET /healthz HTTP/1.1\r\nHost: sim\r\n\r\n", "503"),
        ("GET /metrics HTTP/1.1\r\nHost: sim\r\n\r\n", "200"),
        ("GET /ws HTTP/1.1\r\nHost: sim\r\n\r\n", "426"),
        ("GET /nowhere HTTP/1.1\r\nHost: sim\r\n\r\n", "404"),
        ("GET /echo HTTP/1.1\r\nHost: sim\r\n\r\n", "404"),
        (
            "GET /ws?format=xml HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            "400",
        ),
    ] {
        let idx = sim.connect();
        sim.send(idx, request.as_bytes());
        let text = sim.read_text(idx);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {text}"
        );
        assert!(
            sim.is_gone(idx),
            "{request:?}: not closed after the response"
        );
        assert_eq!(sim.socket(idx).closed, Some(true));
    }
    // A POST gets 405 whatever the path; the request body is never read.
    let idx = sim.connect();
    sim.send(
        idx,
        b"POST /ws HTTP/1.1\r\nHost: sim\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(sim.read_text(idx).starts_with("HTTP/1.1 405"));
}

#[test]
fn accepts_pause_for_one_sweep_after_an_accept_error() {
    let mut sim = Sim::new(1, 64, |_| {});
    assert!(sim.core.accepting());
    sim.core.pause_accepts();
    assert!(!sim.core.accepting());
    sim.advance(SWEEP - Duration::from_millis(1));
    assert!(!sim.core.accepting());
    sim.advance(Duration::from_millis(1));
    assert!(sim.core.accepting());
    assert!(
        sim.core.take_accept_resumed(),
        "the driver is told to accept again"
    );
    assert!(!sim.core.take_accept_resumed());
}

#[test]
fn shutdown_closes_open_clients_with_1001_and_ends_when_all_is_written() {
    let mut sim = Sim::new(1, 64, |c| c.shutdown_deadline = Duration::from_secs(5));
    let open = sim.ws_client();
    let stalled = sim.ws_client();
    let handshaking = sim.connect();
    sim.socket(stalled).window = 0;
    sim.core.begin_shutdown(&mut sim.net);
    assert!(sim.is_gone(handshaking));
    let frames = sim.read(open);
    assert_eq!(
        frames.last().and_then(Frame::close_code),
        Some(close_code::GOING_AWAY)
    );
    // The stalled client still owes its close: the shutdown waits for it, up to the deadline.
    assert!(!sim.core.shutdown_done());
    sim.now += Duration::from_secs(4);
    sim.core.set_now(sim.now);
    assert!(!sim.core.shutdown_done());
    sim.now += Duration::from_secs(1);
    sim.core.set_now(sim.now);
    assert!(sim.core.shutdown_done());
}

/// A JWT for the simulated server (HS256 with `SIM_SECRET`).
fn sim_jwt(exp: u64, symbols: &[&str]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"exp": exp, "symbols": symbols}),
        &jsonwebtoken::EncodingKey::from_secret(SIM_SECRET),
    )
    .unwrap()
}

const SIM_SECRET: &[u8] = b"sim-secret-0123456789";

#[test]
fn token_expiry_closes_at_exp_and_refreshes_move_it_without_growing_the_timer_heap() {
    let mut sim = Sim::new(3, 1024, |c| {
        c.jwt = Some(crate::config::JwtKey::hs256(SIM_SECRET));
        c.control_rate = 1_000_000;
        c.control_burst = 1_000_000;
        c.ping_interval = Duration::from_secs(3600);
    });
    sim.turn();
    let upgrade = |token: &str| UPGRADE.replace("GET /ws ", &format!("GET /ws?token={token} "));
    // Expires 10 s from now; another connection refreshes many times.
    let a = sim.connect();
    sim.send(a, upgrade(&sim_jwt(WALL0_S + 10, &["S0"])).as_bytes());
    assert!(sim.read_text(a).starts_with("HTTP/1.1 101"));
    let b = sim.connect();
    sim.send(b, upgrade(&sim_jwt(WALL0_S + 10, &["S*"])).as_bytes());
    assert!(sim.read_text(b).starts_with("HTTP/1.1 101"));
    for i in 0..500u64 {
        let t = sim_jwt(WALL0_S + 20 + i, &["S1"]);
        let req = format!(r#"{{"op":"refresh","id":{i},"token":"{t}"}}"#);
        sim.send(b, &client_frame(0x1, req.as_bytes()));
    }
    let replies = sim.read(b);
    assert!(
        String::from_utf8_lossy(&replies.last().unwrap().payload)
            .contains(&format!(r#""exp":{}"#, WALL0_S + 519)),
        "{:?}",
        replies.last()
    );
    assert!(
        sim.core.expiries.len() <= 64,
        "stale expiries kept: {}",
        sim.core.expiries.len()
    );
    // Entitlements follow the token: S0 is refused to b now, S1 is fine.
    sim.send(
        b,
        &client_frame(
            0x1,
            br#"{"op":"subscribe","id":9,"symbols":["S0"],"channels":["book"]}"#,
        ),
    );
    let r = sim.read(b);
    assert!(String::from_utf8_lossy(&r[0].payload).contains("not_entitled"));
    // a is closed with 1008 "token expired" at its exp (within the second), b is not.
    sim.advance(Duration::from_millis(9_000));
    assert!(sim.read(a).is_empty(), "closed early");
    sim.advance(Duration::from_millis(1_000));
    let frames = sim.read(a);
    let close = frames.last().expect("a close frame");
    assert_eq!(close.close_code(), Some(close_code::POLICY));
    assert!(String::from_utf8_lossy(&close.payload).contains("token expired"));
    sim.advance(Duration::from_secs(5));
    assert!(!sim.is_gone(b), "the refreshed connection was closed");
    assert!(sim.read(b).iter().all(|f| f.close_code().is_none()));
}
