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

use super::rig::{client_frame, core_parts};
use crate::clock;
use crate::config::Config;
use crate::fanout::outbuf::OutBuf;
use crate::fanout::{Format, Topic};
use crate::proto::close_code;
use crate::replay::epoch::Epoch;
use crate::ring::{
    IngestRequest, Push, ResumeAnswer, ResumeRequest, Ring, ShardMsg, SymbolResumed,
};
use crate::wire::{self, RecordHeader, RecordKind, SymbolMeta};

use proptest::prelude::*;

use super::core::{Accept, Broken, ShardCore, Transport};
use super::dispatch::{PASS_SLICE, Slice};
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
    /// Every delta published per sid (seq n at index n - 1): the simulated replay window.
    history: Vec<Vec<Bytes>>,
    /// The same in `format=json` (deltas published by `publish_both`).
    history_json: Vec<Vec<Bytes>>,
    /// Resume requests the ingester received.
    resume_requests: usize,
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
/// The simulated ingester's epoch.
const SIM_EPOCH: u32 = 0x3f9c_0a17;

impl Sim {
    fn new(symbols: usize, ring_capacity: usize, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            shards: 1,
            ..Config::default()
        };
        configure(&mut config);
        let parts = core_parts(config, symbols, ring_capacity, Epoch::from_u32(SIM_EPOCH));
        let now = clock::monotonic();
        Self {
            core: ShardCore::new(parts.ctx, now),
            net: SimNet::default(),
            now,
            ring: parts.ring,
            requests: parts.requests,
            snapshot_requests: 0,
            seq: vec![0; symbols],
            history: vec![Vec::new(); symbols],
            history_json: vec![Vec::new(); symbols],
            resume_requests: 0,
            frames: Vec::new(),
            start: now,
            _poll: parts.poll,
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

    /// The raw bytes the client read (HTTP streams), the socket then writable again.
    fn read_raw(&mut self, idx: u32) -> Vec<u8> {
        let s = self.socket(idx);
        let mut bytes = std::mem::take(&mut s.in_kernel);
        self.core.handle_writable(idx);
        self.core.write_queued(&mut self.net);
        if let Some(s) = self.net.sockets[idx as usize].as_mut() {
            bytes.extend(std::mem::take(&mut s.in_kernel));
        }
        bytes
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
        // The driver's turns without their events: slices of the pass with drains between.
        self.core.drain_ring();
        while self.core.flush(&mut self.net, Slice::Visits(PASS_SLICE)) {
            self.core.drain_ring();
        }
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
            let (conn, req, topic) = match r {
                IngestRequest::Snapshot {
                    conn, req, topic, ..
                } => (*conn, *req, *topic),
                IngestRequest::Resume(r) => {
                    self.answer_resume(r);
                    continue;
                }
            };
            let seq = self.seq[topic.sid as usize];
            let bytes = match topic.format {
                Format::Binary => self.record(RecordKind::Snapshot, topic.sid, seq),
                Format::Json => json_record(RecordKind::Snapshot, topic.sid, seq),
            };
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

    /// Answers requests and turns until none is left: paced snapshot requests (at most one
    /// before the first snapshot arrived, `Tables::pump_snapshots`) come one turn after another.
    fn answer_all_requests(&mut self) -> usize {
        let mut total = 0;
        loop {
            let n = self.answer_requests();
            if n == 0 {
                return total;
            }
            total += n;
            self.turn();
        }
    }

    /// Answers a resume as the ingester's replay windows would, holding every record: the
    /// book records after the client's position, or not recovered (other epoch, position
    /// ahead, or trades named: the simulator publishes none).
    fn answer_resume(&mut self, r: &ResumeRequest) {
        self.resume_requests += 1;
        let symbols = r
            .symbols
            .iter()
            .map(|&(sid, book, trades)| {
                let last = self.seq[sid as usize];
                let ok = r.epoch == Some(Epoch::from_u32(SIM_EPOCH))
                    && trades.is_none()
                    && book.is_some_and(|p| p <= last);
                let book = match (ok, book) {
                    (true, Some(p)) if r.format == Format::Json => {
                        self.history_json[sid as usize][p as usize..].to_vec()
                    }
                    (true, Some(p)) => self.history[sid as usize][p as usize..].to_vec(),
                    _ => Vec::new(),
                };
                SymbolResumed {
                    sid,
                    recovered: ok,
                    book,
                    trades: Vec::new(),
                    status: None,
                }
            })
            .collect();
        let pushed = self.ring.push(ShardMsg::Resumed(Box::new(ResumeAnswer {
            conn: r.conn,
            req: r.req,
            epoch: Epoch::from_u32(SIM_EPOCH),
            symbols,
        })));
        assert_eq!(pushed, Push::Queued);
    }

    /// Publishes the next book delta of `sid` (depth 10, binary); false when the ring dropped it.
    fn publish(&mut self, sid: u32) -> bool {
        self.seq[sid as usize] += 1;
        let bytes = self.record(RecordKind::Delta, sid, self.seq[sid as usize]);
        self.history[sid as usize].push(bytes.clone());
        let topic = Topic::book(sid, DEPTH10, Format::Binary);
        self.ring.push(ShardMsg::Record { topic, bytes }) == Push::Queued
    }

    /// Publishes the next book delta of `sid` (depth 10) in both formats; false when the ring
    /// dropped one.
    fn publish_both(&mut self, sid: u32) -> bool {
        let ok = self.publish(sid);
        let bytes = json_record(RecordKind::Delta, sid, self.seq[sid as usize]);
        self.history_json[sid as usize].push(bytes.clone());
        let topic = Topic::book(sid, DEPTH10, Format::Json);
        ok && self.ring.push(ShardMsg::Record { topic, bytes }) == Push::Queued
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

#[cfg(test)]
mod ladder_tests;
/// A `format=json` book record as the ingester puts it in the ring (leading comma).
fn json_record(kind: RecordKind, sid: u32, seq: u64) -> Bytes {
    let meta = SymbolMeta {
        symbol: format!("S{sid}"),
        sid,
        px_decimals: 2,
        qty_decimals: 4,
    };
    let hdr = RecordHeader {
        kind,
        flags: 0,
        sid,
        seq,
        exch_ts: 1,
        recv_ts: 2,
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(b",");
    wire::encode_book_json(&mut out, &meta, &hdr, &[], &[]);
    out.freeze()
}

/// An HTTP response as a client reads it: the head, the chunked body decoded, and whether the
/// body ended (last chunk).
#[derive(Debug, Default)]
struct HttpRead {
    head: String,
    body: Vec<u8>,
    ended: bool,
}

/// Decodes a response: head, then chunks (all complete: the simulator writes whole ones).
fn http_read(raw: &[u8]) -> HttpRead {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return HttpRead::default();
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let (body, ended) = dechunk(&raw[end + 4..]);
    HttpRead { head, body, ended }
}

fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Some(nl) = raw.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&raw[..nl]).unwrap(), 16).unwrap();
        if n == 0 {
            return (body, true);
        }
        let data = &raw[nl + 2..nl + 2 + n];
        assert_eq!(&raw[nl + 2 + n..nl + 4 + n], b"\r\n", "chunk trailer");
        body.extend_from_slice(data);
        raw = &raw[nl + 4 + n..];
    }
    assert!(raw.is_empty(), "a partial chunk");
    (body, false)
}

/// `/stream` frames of a body: (type, payload).
fn stream_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        out.push((body[4], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty());
    out
}

/// SSE events of a body: (event name, id, data); comments as ("comment", None, text).
fn sse_events(body: &[u8]) -> Vec<(String, Option<String>, String)> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
            for line in e.lines() {
                if let Some(c) = line.strip_prefix(": ") {
                    name = "comment".into();
                    data = c.into();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.into();
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, id, data)
        })
        .collect()
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: sim\r\n{headers}\r\n").into_bytes()
}

// ---- the plain-HTTP transports (/stream, /sse) and the built-in screen ----

#[test]
fn stream_sends_the_reply_first_then_the_binary_batches_in_frames() {
    let mut sim = Sim::new(2, 1024, |_| {});
    let idx = sim.connect();
    sim.send(idx, &get("/stream?symbols=S1&depth=10&channels=book", ""));
    assert_eq!(sim.answer_requests(), 1);
    sim.turn();
    for _ in 0..3 {
        sim.publish(1);
    }
    sim.turn();
    let r = http_read(&sim.read_raw(idx));
    assert!(r.head.starts_with("HTTP/1.1 200 OK"), "{}", r.head);
    assert!(r.head.contains("Content-Type: application/octet-stream"));
    assert!(r.head.contains("Transfer-Encoding: chunked"));
    let frames = stream_frames(&r.body);
    assert_eq!(frames[0].0, 2, "the subscribe reply first");
    let reply: serde_json::Value = serde_json::from_slice(&frames[0].1).unwrap();
    assert_eq!(reply["op"], "subscribed");
    assert_eq!(reply["symbols"][0]["symbol"], "S1");
    let records: Vec<(u8, u32, u64)> = frames[1..]
        .iter()
        .inspect(|(t, _)| assert_eq!(*t, 1))
        .flat_map(|(_, p)| {
            tickcast_bench::wire::decode_batch(p)
                .expect("a §1 batch")
                .iter()
                .map(|r| (r.header.kind, r.header.sid, r.header.seq))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        records,
        [
            (RecordKind::Snapshot as u8, 1, 0),
            (RecordKind::Delta as u8, 1, 1),
            (RecordKind::Delta as u8, 1, 2),
            (RecordKind::Delta as u8, 1, 3)
        ]
    );
    assert!(!r.ended);
    let m = sim.metrics();
    assert_eq!(m.transport_connections[1].load(Ordering::Relaxed), 1);
}

#[test]
fn sse_events_are_the_json_records_with_ids_naming_every_position() {
    let mut sim = Sim::new(3, 1024, |_| {});
    let idx = sim.connect();
    sim.send(idx, &get("/sse?symbols=S2,S1&depth=10&channels=book", ""));
    assert_eq!(sim.answer_all_requests(), 2);
    sim.turn();
    sim.publish_both(1);
    sim.publish_both(2);
    sim.turn();
    let r = http_read(&sim.read_raw(idx));
    assert!(
        r.head.contains("Content-Type: text/event-stream"),
        "{}",
        r.head
    );
    let events = sse_events(&r.body);
    assert_eq!(events[0].0, "subscribed", "{events:?}");
    assert_eq!(events[0].1, None);
    let data: Vec<serde_json::Value> = events[1..]
        .iter()
        .map(|(name, _, d)| {
            assert_eq!(name, "message", "data events are unnamed");
            serde_json::from_str(d).expect("one JSON record per event")
        })
        .collect();
    let seen: Vec<(String, u64)> = data
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.iter().filter(|k| k.0 == "snapshot").count(), 2);
    // The last event's id names both streams' positions, after the server's epoch.
    let ids: Vec<&str> = events[1..]
        .iter()
        .map(|e| e.1.as_deref().unwrap())
        .collect();
    assert_eq!(*ids.last().unwrap(), "3f9c0a17;1:1:;2:1:", "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| super::streams::parse_event_id(id).is_some())
    );
    assert_eq!(
        sim.metrics().transport_connections[2].load(Ordering::Relaxed),
        1
    );
}

#[test]
fn http_streams_pass_max_hz_on_to_the_subscription() {
    let mut sim = Sim::new(2, 1024, |_| {});
    let idx = sim.connect();
    sim.send(
        idx,
        &get("/sse?symbols=S1&depth=10&channels=book&max_hz=5", ""),
    );
    let topics: Vec<Topic> = sim
        .take_requests()
        .iter()
        .filter_map(|r| match r {
            IngestRequest::Snapshot { topic, .. } => Some(*topic),
            IngestRequest::Resume(_) => None,
        })
        .collect();
    // Tier 2 of `TIERS_HZ` is 5 per second.
    assert_eq!(topics, [Topic::conflated(1, 1, 2, Format::Json)]);
    let events = sse_events(&http_read(&sim.read_raw(idx)).body);
    assert_eq!(events[0].0, "subscribed", "{events:?}");
    let reply: serde_json::Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(reply["symbols"][0]["max_hz"], 5);
}

#[test]
fn sse_last_event_id_of_another_epoch_restarts_from_a_snapshot() {
    let mut sim = Sim::new(2, 1024, |_| {});
    let idx = sim.connect();
    sim.send(
        idx,
        &get(
            "/sse?symbols=S0,S1&depth=10&channels=book",
            "Last-Event-ID: 0badc0de;0:5:;1:7:\r\n",
        ),
    );
    sim.answer_requests();
    sim.turn();
    sim.answer_requests();
    sim.turn();
    let events = sse_events(&http_read(&sim.read_raw(idx)).body);
    assert_eq!(events[0].0, "subscribed", "{events:?}");
    let reply: serde_json::Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(reply["symbols"][0]["recovered"], false);
    assert_eq!(reply["symbols"][1]["recovered"], false);
    let first: serde_json::Value = serde_json::from_str(&events[1].2).unwrap();
    assert_eq!(first["kind"], "snapshot");
}

#[test]
fn sse_last_event_id_resumes_the_whole_subscription_without_snapshots() {
    let mut sim = Sim::new(2, 1024, |_| {});
    // A first connection: its events' ids are the positions.
    let first = sim.connect();
    sim.send(first, &get("/sse?symbols=S0,S1&depth=10&channels=book", ""));
    sim.answer_all_requests();
    sim.turn();
    for _ in 0..3 {
        sim.publish_both(0);
        sim.publish_both(1);
    }
    sim.turn();
    let events = sse_events(&http_read(&sim.read_raw(first)).body);
    let id = events.last().unwrap().1.clone().unwrap();
    assert_eq!(id, "3f9c0a17;0:3:;1:3:");
    // The browser loses it; more happens meanwhile.
    sim.socket(first).reset = true;
    sim.publish_both(0);
    sim.publish_both(0);
    sim.publish_both(1);
    sim.turn();
    // It comes back with the last id.
    let again = sim.connect();
    sim.send(
        again,
        &get(
            "/sse?symbols=S0,S1&depth=10&channels=book",
            &format!("Last-Event-ID: {id}\r\n"),
        ),
    );
    sim.answer_requests();
    sim.turn();
    sim.publish_both(1);
    sim.turn();
    let events = sse_events(&http_read(&sim.read_raw(again)).body);
    assert_eq!(events[0].0, "subscribed", "{events:?}");
    let reply: serde_json::Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(reply["symbols"][0]["recovered"], true, "{reply}");
    assert_eq!(reply["symbols"][1]["recovered"], true, "{reply}");
    let got: Vec<(String, u64, u64)> = events[1..]
        .iter()
        .map(|(_, _, d)| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["sid"].as_u64().unwrap(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    // Exactly what was missed, then live; no snapshot.
    let d = |sid, seq| ("delta".to_owned(), sid, seq);
    let mut by0: Vec<_> = got.iter().filter(|r| r.1 == 0).cloned().collect();
    let by1: Vec<_> = got.iter().filter(|r| r.1 == 1).cloned().collect();
    by0.sort_by_key(|r| r.2);
    assert_eq!(by0, [d(0, 4), d(0, 5)]);
    assert_eq!(by1, [d(1, 4), d(1, 5)]);
    assert_eq!(
        events.last().unwrap().1.as_deref(),
        Some("3f9c0a17;0:5:;1:5:")
    );
}

#[test]
fn stream_requests_that_cannot_be_honoured_get_400_with_a_json_error() {
    let mut sim = Sim::new(2, 64, |c| c.max_subscriptions = 1);
    for (path, status, code) in [
        ("/stream", "400", "bad_request"),
        ("/sse?symbols=S0&depth=7", "400", "invalid_depth"),
        (
            "/stream?symbols=S0&channels=quotes",
            "400",
            "invalid_channel",
        ),
        ("/stream?symbols=NOPE", "400", "unknown_symbol"),
        ("/sse?symbols=*", "400", "too_many_subscriptions"),
        ("/sse?symbols=S0&max_hz=0", "400", "bad_request"),
    ] {
        let idx = sim.connect();
        sim.send(idx, &get(path, ""));
        let text = sim.read_text(idx);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {text}"
        );
        assert!(
            text.contains("Content-Type: application/json"),
            "{path}: {text}"
        );
        let body: serde_json::Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["code"], code, "{path}");
        assert!(sim.is_gone(idx), "{path}");
    }
    assert_eq!(
        sim.metrics().transport_connections[1].load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        sim.metrics().transport_connections[2].load(Ordering::Relaxed),
        0
    );
}

#[test]
fn streams_and_the_page_follow_the_origin_and_token_rules_of_ws() {
    let mut sim = Sim::new(1, 64, |c| {
        c.tokens = Some(crate::config::Tokens::parse("s3cret\n").unwrap());
        c.allowed_origins = vec!["https://desk.example".into()];
    });
    let ok_origin = "Origin: https://desk.example\r\n";
    for (path, headers, status) in [
        ("/stream?symbols=S0", ok_origin, "401"),
        ("/sse?symbols=S0&token=nope", ok_origin, "403"),
        (
            "/sse?symbols=S0&token=s3cret",
            "Origin: https://evil.example\r\n",
            "403",
        ),
        ("/stream?symbols=S0&token=s3cret", "", "403"),
        ("/stream?symbols=S0&token=s3cret", ok_origin, "200"),
        ("/?token=s3cret", "", "200"),
        ("/", "", "401"),
        ("/?token=x", "", "403"),
        ("/?token=s3cret", "Origin: https://evil.example\r\n", "403"),
        ("/app.css", "", "200"),
    ] {
        let page = path.starts_with("/?") || path == "/" || path == "/app.css";
        if page && super::web::file("/").is_none() {
            // Built without ui/: no page to protect.
            continue;
        }
        let idx = sim.connect();
        sim.send(idx, &get(path, headers));
        let text = String::from_utf8_lossy(&sim.read_raw(idx)).into_owned();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path} {headers:?}: {text}"
        );
    }
}

#[test]
fn a_stream_that_stops_reading_is_evicted_and_just_ends() {
    let mut sim = Sim::new(1, 4096, |c| {
        c.max_outbuf_bytes = 16 << 10;
        c.evict_timeout = Duration::from_secs(20);
        // The ladder off: the hard bound alone (the ladder's own tests: `ladder_tests.rs`).
        c.conflate.soft_pct = 100;
    });
    let slow = sim.connect();
    sim.send(slow, &get("/stream?symbols=S0&depth=10&channels=book", ""));
    let fast = sim.connect();
    sim.send(fast, &get("/stream?symbols=S0&depth=10&channels=book", ""));
    sim.answer_requests();
    sim.turn();
    let mut fast_bytes = sim.read_raw(fast);
    sim.socket(slow).window = 4096;
    let mut turns = 0;
    while sim.metrics().evicted_slow.load(Ordering::Relaxed) == 0 {
        for _ in 0..20 {
            assert!(sim.publish(0));
        }
        sim.turn();
        fast_bytes.extend(sim.read_raw(fast));
        turns += 1;
        assert!(turns < 100, "never evicted");
    }
    assert_eq!(
        sim.metrics().transport_evictions[1].load(Ordering::Relaxed),
        1
    );
    // The fast one got every record, in order.
    for _ in 0..3 {
        sim.publish(0);
    }
    sim.turn();
    fast_bytes.extend(sim.read_raw(fast));
    let r = http_read(&fast_bytes);
    let seqs: Vec<u64> = stream_frames(&r.body)[1..]
        .iter()
        .flat_map(|(_, p)| tickcast_bench::wire::decode_batch(p).unwrap())
        .map(|r| r.header.seq)
        .collect();
    assert_eq!(seqs, (0..=sim.seq[0]).collect::<Vec<u64>>());
    // The slow one reads again: what it was in the middle of, the closing message, the end.
    let mut raw = Vec::new();
    for _ in 0..20 {
        raw.extend(sim.read_raw(slow));
    }
    let r = http_read(&raw);
    assert!(r.ended, "the chunked body ends");
    let frames = stream_frames(&r.body);
    let last: serde_json::Value = serde_json::from_slice(&frames.last().unwrap().1).unwrap();
    assert_eq!(last["op"], "closing");
    assert_eq!(last["code"], 1013);
    assert!(sim.is_gone(slow));
    assert_eq!(sim.socket(slow).closed, Some(true));
    assert_eq!(
        sim.metrics().transport_connections[1].load(Ordering::Relaxed),
        1
    );
}

#[test]
fn quiet_streams_get_keepalives() {
    let mut sim = Sim::new(1, 64, |c| c.ping_interval = Duration::from_secs(120));
    let sse = sim.connect();
    sim.send(sse, &get("/sse?symbols=S0&channels=trades", ""));
    let stream = sim.connect();
    sim.send(stream, &get("/stream?symbols=S0&channels=trades", ""));
    sim.read_raw(sse);
    sim.read_raw(stream);
    sim.advance(Duration::from_secs(29));
    assert!(sim.read_raw(sse).is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(dechunk(&sim.read_raw(sse)).0, b": keepalive\n\n");
    let frames = stream_frames(&dechunk(&sim.read_raw(stream)).0);
    assert_eq!(frames, [(2, br#"{"op":"keepalive"}"#.to_vec())]);
    // Never given up on for not answering (it cannot): still open after many intervals.
    sim.advance(Duration::from_secs(300));
    assert!(!sim.is_gone(sse) && !sim.is_gone(stream));
}

#[test]
fn shutdown_ends_http_streams_with_a_closing_message() {
    let mut sim = Sim::new(1, 64, |_| {});
    let idx = sim.connect();
    sim.send(idx, &get("/sse?symbols=S0&channels=trades", ""));
    sim.read_raw(idx);
    sim.core.begin_shutdown(&mut sim.net);
    let raw = sim.read_raw(idx);
    let (body, ended) = dechunk(&raw);
    assert!(ended);
    let events = sse_events(&body);
    assert_eq!(events[0].0, "closing");
    assert!(sim.is_gone(idx));
}

#[test]
fn the_screen_is_served_with_etags_304_and_head() {
    let mut sim = Sim::new(1, 64, |_| {});
    let Some(index) = super::web::file("/") else {
        // A binary built without ui/: `/` says so.
        let idx = sim.connect();
        sim.send(idx, &get("/", ""));
        assert!(sim.read_text(idx).starts_with("HTTP/1.1 200"));
        return;
    };
    let idx = sim.connect();
    sim.send(idx, &get("/", ""));
    let raw = sim.read_raw(idx);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("Content-Type: text/html; charset=utf-8"));
    assert!(text.contains(&format!("ETag: {}", index.etag)));
    assert!(text.contains("Cache-Control: no-cache"));
    assert!(raw.ends_with(index.body));
    // Revalidation.
    let idx = sim.connect();
    sim.send(
        idx,
        &get("/index.html", &format!("If-None-Match: {}\r\n", index.etag)),
    );
    let text = sim.read_text(idx);
    assert!(text.starts_with("HTTP/1.1 304"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body");
    // HEAD: the length, no body.
    let idx = sim.connect();
    sim.send(idx, b"HEAD / HTTP/1.1\r\nHost: sim\r\n\r\n");
    let text = sim.read_text(idx);
    assert!(text.contains(&format!("Content-Length: {}", index.body.len())));
    assert!(text.ends_with("\r\n\r\n"));
    // Assets and the library, with their types; unknown paths 404.
    for (path, status, ctype) in [
        ("/app.css", "200", "text/css"),
        ("/js/app.js", "200", "text/javascript"),
        ("/lib/tickcast-client/index.js", "200", "text/javascript"),
        ("/README.md", "404", ""),
        ("/tests/screen.test.mjs", "404", ""),
        ("/js/nope.js", "404", ""),
    ] {
        let idx = sim.connect();
        sim.send(idx, &get(path, ""));
        let text = sim.read_text(idx);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {text}"
        );
        assert!(text.contains(ctype), "{path}: {text}");
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
        // The ladder off: the hard bound alone (the ladder's own tests: `ladder_tests.rs`).
        c.conflate.soft_pct = 100;
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
        c.conflate.soft_pct = 100;
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
    } = stale[0]
    else {
        panic!("not a snapshot request")
    };
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

// ---- resume (protocol 1.1) ----

impl Sim {
    /// The client of `idx` subscribes to the book of `symbol` at depth 10 with a resume from
    /// `book` in `epoch`.
    fn resume(&mut self, idx: u32, symbol: &str, epoch: &str, book: u64) {
        let req = format!(
            r#"{{"op":"subscribe","id":2,"symbols":["{symbol}"],"channels":["book"],"depth":10,
                "resume":{{"epoch":"{epoch}","streams":{{"{symbol}":{{"book":{book}}}}}}}}}"#
        );
        self.send(idx, &client_frame(0x1, req.as_bytes()));
    }
}

/// The text replies among `frames`, parsed.
fn replies(frames: &[Frame]) -> Vec<serde_json::Value> {
    frames
        .iter()
        .filter(|f| f.opcode == 0x1)
        .map(|f| serde_json::from_slice(&f.payload).expect("a JSON reply"))
        .collect()
}

#[test]
fn plain_subscribed_replies_carry_the_epoch() {
    let mut sim = Sim::new(1, 1024, |_| {});
    let idx = sim.ws_client();
    sim.send(
        idx,
        &client_frame(0x1, br#"{"op":"subscribe","id":1,"symbols":["S0"]}"#),
    );
    let r = replies(&sim.read(idx));
    assert_eq!(r[0]["epoch"], "3f9c0a17");
    assert!(r[0]["symbols"][0].get("recovered").is_none());
}

/// The `subscribed` reply of a resume is held until the ingester's answer comes out of the
/// ring; the answer is the start of the stream for that connection: live records queued before
/// it are not given to it (the replay holds them), those after it continue the replay.
#[test]
fn resume_holds_the_reply_and_its_answer_starts_the_stream() {
    let mut sim = Sim::new(1, 1024, |_| {});
    // Another subscriber keeps the stream flowing into this shard's ring.
    let other = sim.subscribers(1, "S0")[0];
    for _ in 0..5 {
        sim.publish(0);
    }
    sim.turn();
    sim.read(other);
    let idx = sim.ws_client();
    sim.resume(idx, "S0", "3f9c0a17", 2);
    sim.turn();
    assert!(sim.read(idx).is_empty(), "the reply waits for the answer");
    // Published after the request and before the answer: in the replay, not given twice.
    sim.publish(0);
    sim.turn();
    assert!(sim.read(idx).is_empty());
    assert_eq!(sim.answer_requests(), 1);
    assert_eq!(sim.resume_requests, 1);
    sim.publish(0);
    sim.turn();
    let frames = sim.read(idx);
    let r = replies(&frames);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["op"], "subscribed");
    assert_eq!(r[0]["epoch"], "3f9c0a17");
    assert_eq!(r[0]["symbols"][0]["recovered"], true);
    assert_eq!(frames[0].opcode, 0x1, "the reply comes first");
    let records: Vec<_> = frames.iter().flat_map(Frame::records).collect();
    let delta = RecordKind::Delta as u8;
    assert_eq!(
        records,
        (3..=7).map(|seq| (delta, 0, seq)).collect::<Vec<_>>(),
        "exactly seq 3..=7: replayed 3..=6, live 7; no snapshot, no gap, no duplicate"
    );
    assert_eq!(
        sim.snapshot_requests, 2,
        "one for `other`, one resume, no snapshot"
    );
}

/// Not recovered (another epoch): the reply says so, then the book starts from a snapshot that
/// the shard asks for as for any subscriber (coalesced per topic).
#[test]
fn unrecovered_resume_starts_from_a_coalesced_snapshot() {
    let mut sim = Sim::new(1, 1024, |_| {});
    for _ in 0..3 {
        sim.publish(0);
    }
    let ids: Vec<u32> = (0..20).map(|_| sim.ws_client()).collect();
    for &idx in &ids {
        sim.resume(idx, "S0", "00000000", 1);
    }
    assert_eq!(
        sim.answer_requests(),
        20,
        "one resume request per subscribe"
    );
    sim.turn();
    for &idx in &ids {
        let frames = sim.read(idx);
        let r = replies(&frames);
        assert_eq!(r[0]["symbols"][0]["recovered"], false);
        assert!(frames.iter().all(|f| f.records().is_empty()));
    }
    assert_eq!(sim.answer_requests(), 1, "the snapshots are coalesced");
    sim.publish(0);
    sim.turn();
    for &idx in &ids {
        let records: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
        assert_eq!(
            records,
            [
                (RecordKind::Snapshot as u8, 0, 3),
                (RecordKind::Delta as u8, 0, 4)
            ]
        );
    }
}

/// A thousand clients resuming at once take one ring slot each (their answer), not one per
/// record: a 1,024-slot ring with 64 records to replay per client does not overflow.
#[test]
fn a_thousand_resumes_fit_a_small_ring() {
    let mut sim = Sim::new(1, 1024, |_| {});
    for _ in 0..64 {
        sim.publish(0);
    }
    sim.turn();
    let ids: Vec<u32> = (0..1000).map(|_| sim.ws_client()).collect();
    for &idx in &ids {
        sim.resume(idx, "S0", "3f9c0a17", 0);
    }
    sim.answer_requests();
    sim.turn();
    assert!(!sim.ring.is_lagged());
    assert_eq!(sim.metrics().ring_resyncs.load(Ordering::Relaxed), 0);
    for &idx in &ids {
        let records: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
        assert_eq!(records.len(), 64);
        assert_eq!(records.last(), Some(&(RecordKind::Delta as u8, 0, 64)));
    }
}

/// A ring resync while a resume is in flight: its answer may be lost, so the reply goes out
/// with `recovered: false` and the book restarts from a snapshot; a late answer is ignored.
#[test]
fn lag_resync_abandons_a_resume_in_flight() {
    let mut sim = Sim::new(1, 16, |_| {});
    let idx = sim.ws_client();
    sim.resume(idx, "S0", "3f9c0a17", 0);
    let stale = sim.take_requests();
    assert_eq!(stale.len(), 1);
    while sim.publish(0) {}
    sim.turn();
    assert_eq!(sim.metrics().ring_resyncs.load(Ordering::Relaxed), 1);
    let r = replies(&sim.read(idx));
    assert_eq!(r[0]["symbols"][0]["recovered"], false);
    // The late answer is ignored; the fresh snapshot starts the stream.
    let IngestRequest::Resume(late) = &stale[0] else {
        panic!("not a resume")
    };
    sim.answer_resume(late);
    assert_eq!(sim.answer_requests(), 1);
    sim.turn();
    let frames = sim.read(idx);
    assert!(replies(&frames).is_empty());
    let records: Vec<_> = frames.iter().flat_map(Frame::records).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, RecordKind::Snapshot as u8);
}

/// `/stream` and `/sse` admit a client by its JWT as `/ws` does: the subscription is checked
/// against the token's grant, and the stream ends when the token expires.
#[test]
fn http_streams_take_jwts_check_entitlements_and_end_at_expiry() {
    let mut sim = Sim::new(2, 1024, |c| {
        c.jwt = Some(crate::config::JwtKey::hs256(SIM_SECRET));
        c.ping_interval = Duration::from_secs(3600);
    });
    sim.turn();
    let token = sim_jwt(WALL0_S + 10, &["S1"]);
    let refused = sim.connect();
    sim.send(refused, &get("/stream?symbols=S1", ""));
    assert!(sim.read_text(refused).starts_with("HTTP/1.1 401"));
    let other = sim.connect();
    sim.send(other, &get(&format!("/sse?symbols=S0&token={token}"), ""));
    let text = sim.read_text(other);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("not_entitled"), "{text}");
    let idx = sim.connect();
    sim.send(idx, &get(&format!("/sse?symbols=S1&token={token}"), ""));
    assert!(sim.read_text(idx).starts_with("HTTP/1.1 200"));
    sim.advance(Duration::from_millis(9_000));
    assert!(!sim.is_gone(idx), "ended early");
    sim.advance(Duration::from_millis(1_000));
    sim.read_raw(idx);
    assert!(sim.is_gone(idx), "the stream outlived its token");
}

// ---- the flush pass across driver turns (dispatch.rs) ----

/// Subscribers of `S0` for the pass tests: more than two slices of a pass.
const PASS_SUBS: usize = 2 * PASS_SLICE + 88;

fn pass_sim(ring_capacity: usize) -> (Sim, Vec<u32>) {
    let mut sim = Sim::new(1, ring_capacity, |c| {
        c.max_conns = 2 * PASS_SUBS;
        c.max_conns_per_ip = 2 * PASS_SUBS;
    });
    let ids = sim.subscribers(PASS_SUBS, "S0");
    (sim, ids)
}

/// The connections whose socket holds something not read yet (written since the last read).
fn written_since_read(sim: &mut Sim, ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .copied()
        .filter(|&i| !sim.socket(i).in_kernel.is_empty())
        .collect()
}

/// A record that arrives while a pass is under way is carried by every connection the pass
/// visits after it, in the batch that connection gets anyway; only the connections visited
/// before it get it in a second lap. No connection is written twice for one record, and none
/// is written with nothing new.
#[test]
fn a_record_arriving_mid_pass_reaches_the_rest_of_the_pass_in_the_same_batch() {
    let (mut sim, ids) = pass_sim(1024);
    assert!(sim.publish(0));
    sim.core.drain_ring();
    assert!(sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)));
    let early = written_since_read(&mut sim, &ids);
    assert_eq!(early.len(), PASS_SLICE, "one slice was written");
    // The driver looks at its sockets, then drains what arrived meanwhile into the pass.
    assert!(sim.publish(0));
    sim.core.drain_ring();
    while sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)) {
        sim.core.drain_ring();
    }
    assert!(!sim.core.pass_open());
    let mut writes = 0;
    for &idx in &ids {
        let batches: Vec<Vec<u64>> = sim
            .read(idx)
            .iter()
            .map(|f| f.records().iter().map(|r| r.2).collect())
            .collect();
        writes += batches.len();
        if early.contains(&idx) {
            assert_eq!(batches, vec![vec![1], vec![2]], "conn {idx}");
        } else {
            assert_eq!(batches, vec![vec![1, 2]], "conn {idx}");
        }
    }
    assert_eq!(writes, PASS_SUBS + PASS_SLICE);
}

/// Under a steady feed the pass never ends: laps follow laps, the finished ones' entries and
/// arena chunks are dropped, and every subscriber gets every record once, in order.
#[test]
fn a_pass_that_never_ends_delivers_every_record_in_order() {
    let (mut sim, ids) = pass_sim(1024);
    let mut published = 0;
    for _ in 0..40 {
        // A record every half slice: a lap of the table takes several.
        assert!(sim.publish(0));
        published += 1;
        sim.core.drain_ring();
        assert!(sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE / 2)));
    }
    assert!(sim.core.dirty.len() <= 2 * PASS_SUBS, "laps are dropped");
    // A lap takes about 2 * PASS_SUBS / PASS_SLICE drains (one chunk each); two laps are held.
    let held = sim.core.arena.held_chunks();
    assert!(held <= 3 * 2 * PASS_SUBS / PASS_SLICE, "{held} chunks held");
    assert!(sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)));
    sim.core.flush(&mut sim.net, Slice::Finish);
    assert!(!sim.core.pass_open());
    for &idx in &ids {
        let seqs: Vec<u64> = sim
            .read(idx)
            .iter()
            .flat_map(Frame::records)
            .map(|r| r.2)
            .collect();
        assert_eq!(seqs, (1..=published).collect::<Vec<u64>>(), "conn {idx}");
    }
}

/// A connection that sends a request while the pass is under way, before its turn in it,
/// gets what it was owed first, then the reply: nothing drained before its request comes
/// after the reply.
#[test]
fn a_request_mid_pass_is_answered_after_what_was_drained_before_it() {
    let (mut sim, ids) = pass_sim(1024);
    assert!(sim.publish(0));
    sim.core.drain_ring();
    assert!(sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)));
    let early = written_since_read(&mut sim, &ids);
    let late = *ids.iter().rev().find(|i| !early.contains(i)).expect("late");
    sim.send(
        late,
        &client_frame(0x1, br#"{"op":"unsubscribe","id":2,"symbols":["S0"]}"#),
    );
    // Published after the unsubscribe: not for it.
    assert!(sim.publish(0));
    sim.turn();
    let frames = sim.read(late);
    let seqs: Vec<u64> = frames
        .iter()
        .flat_map(Frame::records)
        .map(|r| r.2)
        .collect();
    assert_eq!(seqs, vec![1], "{frames:?}");
    let reply = frames
        .iter()
        .position(|f| f.opcode == 0x1)
        .expect("a reply");
    let record = frames
        .iter()
        .position(|f| f.opcode == 0x2)
        .expect("a batch");
    assert!(record < reply, "{frames:?}");
    assert!(
        String::from_utf8_lossy(&frames[reply].payload).contains("unsubscribed"),
        "{frames:?}"
    );
}

/// The ring lags while a pass is under way: the pass runs to its end without pausing (what
/// was drained before the lag goes out), then the next drain resyncs.
#[test]
fn a_lag_mid_pass_finishes_the_pass_before_the_resync() {
    let (mut sim, ids) = pass_sim(16);
    assert!(sim.publish(0));
    sim.core.drain_ring();
    assert!(sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)));
    while sim.publish(0) {}
    assert_eq!(
        sim.core.drain_ring(),
        0,
        "no drain into a pass while lagged"
    );
    assert!(!sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)));
    assert_eq!(sim.metrics().ring_resyncs.load(Ordering::Relaxed), 0);
    for &idx in &ids {
        let seqs: Vec<u64> = sim
            .read(idx)
            .iter()
            .flat_map(Frame::records)
            .map(|r| r.2)
            .collect();
        assert_eq!(seqs, vec![1], "conn {idx}");
    }
    sim.core.drain_ring();
    assert_eq!(sim.metrics().ring_resyncs.load(Ordering::Relaxed), 1);
}

/// The delivery-latency histogram takes a record once every subscriber got it: not while the
/// pass it was drained into is still on its first lap, and all of it when the pass ends.
#[test]
fn delivery_latency_is_recorded_once_every_subscriber_was_written() {
    let (mut sim, _ids) = pass_sim(1024);
    let before = sim.metrics().latency.count();
    assert!(sim.publish(0));
    sim.core.drain_ring();
    assert!(sim.core.flush(&mut sim.net, Slice::Visits(PASS_SLICE)));
    sim.core.record_latency(0);
    assert_eq!(sim.metrics().latency.count(), before, "recorded mid-lap");
    assert!(!sim.core.flush(&mut sim.net, Slice::Finish));
    sim.core.record_latency(0);
    assert_eq!(
        sim.metrics().latency.count(),
        before + PASS_SUBS as u64,
        "one observation per subscriber"
    );
}
