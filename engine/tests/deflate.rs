//! permessage-deflate (RFC 7692) and the echo endpoint, end to end over loopback: the real
//! `tickcast` binary, feed-sim, and two kinds of client: tungstenite (which offers no
//! extension) and a small raw client written here that offers permessage-deflate the way a
//! browser does and inflates with a standard streaming inflater (flate2, context kept across
//! messages, as RFC 7692 §7.2.2 describes the receiver).

#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Daemon, PATIENCE, simulator};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::json;
use tickcast_bench::wire::{Record, decode_batch};
use tungstenite::Message;

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A frame as the raw client reads it.
#[derive(Debug)]
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A minimal WebSocket client over a blocking socket, with permessage-deflate.
struct RawWs {
    s: TcpStream,
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    extensions: Option<String>,
    inflater: Decompress,
    /// Client compressor (window from the server's `client_max_window_bits`).
    deflater: Option<Compress>,
    /// `client_no_context_takeover` was agreed: reset the compressor after each message.
    reset_each_message: bool,
    /// Data bytes on the wire (frame headers and payloads) received.
    wire_bytes: usize,
    compressed_messages: usize,
    plain_messages: usize,
}

impl RawWs {
    /// Upgrades on `path` offering `offer` (if any); panics unless the answer is 101.
    fn connect(addr: SocketAddr, path: &str, offer: Option<&str>) -> Self {
        let (status, head, s, rest) = upgrade(addr, path, offer);
        assert_eq!(status, 101, "upgrade refused: {head}");
        let extensions = header(&head, "sec-websocket-extensions");
        let deflater = extensions.as_deref().map(|e| {
            let bits = e
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("client_max_window_bits="))
                .find_map(|v| v.parse::<u8>().ok())
                .unwrap_or(15)
                .max(9);
            Compress::new_with_window_bits(Compression::default(), false, bits)
        });
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let reset_each_message = extensions
            .as_deref()
            .is_some_and(|e| e.contains("client_no_context_takeover"));
        Self {
            s,
            buf: rest,
            reset_each_message,
            extensions,
            inflater: Decompress::new(false),
            deflater,
            wire_bytes: 0,
            compressed_messages: 0,
            plain_messages: 0,
        }
    }

    /// Sends a masked frame.
    fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![b0];
        let len = payload.len();
        if len <= 125 {
            f.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).expect("write");
    }

    /// Sends a text message, compressed (RSV1) when the extension was negotiated.
    fn send_text(&mut self, text: &str) {
        match self.deflater.as_mut() {
            Some(c) => {
                let mut z = Vec::with_capacity(text.len() + 64);
                c.compress_vec(text.as_bytes(), &mut z, FlushCompress::Sync)
                    .expect("compress");
                assert!(z.ends_with(&TAIL));
                z.truncate(z.len() - 4);
                if self.reset_each_message {
                    c.reset();
                }
                self.send_frame(0x80 | 0x40 | 0x1, &z);
            }
            None => self.send_frame(0x81, text.as_bytes()),
        }
    }

    /// Reads one frame, or `None` when nothing arrived within the read timeout.
    fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                self.wire_bytes += used;
                return Some(f);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads one message: (opcode, payload inflated if it was compressed). Control frames are
    /// returned as messages of their own. The server never fragments.
    fn message(&mut self) -> Option<(u8, Vec<u8>)> {
        let f = self.frame()?;
        assert!(f.fin, "server messages are unfragmented");
        if f.opcode >= 8 {
            assert!(!f.rsv1, "control frames are never compressed");
            return Some((f.opcode, f.payload));
        }
        if !f.rsv1 {
            self.plain_messages += 1;
            return Some((f.opcode, f.payload));
        }
        assert!(self.extensions.is_some(), "RSV1 without the extension");
        self.compressed_messages += 1;
        let mut data = f.payload;
        data.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(data.len() * 8 + 1024);
        let mut input = &data[..];
        loop {
            let before = self.inflater.total_in();
            self.inflater
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .expect("server sent valid DEFLATE");
            input = &input[(self.inflater.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(4096));
        }
        Some((f.opcode, out))
    }
}

/// Parses one unmasked server frame at the start of `b`.
fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
    assert_eq!(b[0] & 0x30, 0, "RSV2/RSV3 are never set");
    let (len, h) = match b[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = b.get(h..h + len)?.to_vec();
    Some((
        Frame {
            fin: b[0] & 0x80 != 0,
            rsv1: b[0] & 0x40 != 0,
            opcode: b[0] & 0x0f,
            payload,
        },
        h + len,
    ))
}

/// Sends an upgrade request; returns the status, the response head, the socket and any bytes
/// read past the head.
fn upgrade(addr: SocketAddr, path: &str, offer: Option<&str>) -> (u16, String, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let ext = offer
        .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, head, s, buf[end..].to_vec())
}

/// A response header's value (first occurrence, name case-insensitive).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Records per stream: (sid, is_book) → records in arrival order (status records dropped).
type Streams = BTreeMap<(u32, bool), Vec<Record>>;

fn file(streams: &mut Streams, recs: Vec<Record>) {
    for r in recs {
        if r.header.kind == tickcast_bench::wire::KIND_STATUS {
            continue;
        }
        streams
            .entry((r.header.sid, r.header.is_book()))
            .or_default()
            .push(r);
    }
}

/// The part of two clients' streams both must have had: from the later client's first
/// record (a book snapshot, or its first trade) on.
fn common_tail<'a>(a: &'a [Record], b: &'a [Record]) -> (&'a [Record], &'a [Record]) {
    let start = a[0].header.seq.max(b[0].header.seq);
    let from = |v: &'a [Record]| {
        let i = v
            .iter()
            .position(|r| r.header.seq > start)
            .unwrap_or(v.len());
        &v[i..]
    };
    (from(a), from(b))
}

#[test]
fn deflate_client_gets_compressed_messages_with_the_records_a_plain_client_gets() {
    let sim = simulator(8, 4_000.0, Some(6_000), 21);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--deflate-threshold",
        "200",
    ]);

    // A browser-style offer: permessage-deflate with client_max_window_bits.
    let mut z = RawWs::connect(
        d.addr,
        "/ws",
        Some("permessage-deflate; client_max_window_bits"),
    );
    assert_eq!(
        z.extensions.as_deref(),
        Some("permessage-deflate; client_max_window_bits=10")
    );
    // The plain client offers no extension (tungstenite has none).
    let (mut plain, resp) = tungstenite::connect(d.url("")).expect("connect");
    assert!(resp.headers().get("sec-websocket-extensions").is_none());
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = plain.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
    }

    // The deflate client's subscribe goes compressed: the server inflates it.
    let sub = json!({"op":"subscribe","id":1,"symbols":["*"],"depth":10}).to_string();
    z.send_text(&sub);
    plain
        .send(Message::text(sub.clone()))
        .expect("send subscribe");

    let mut zs = Streams::new();
    let mut ps = Streams::new();
    let mut replies = 0;
    let deadline = Instant::now() + PATIENCE;
    let mut quiet_since: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "stream never settled");
        let mut got = false;
        while let Some((op, payload)) = z.message() {
            got = true;
            match op {
                0x1 => {
                    let v: serde_json::Value = serde_json::from_slice(&payload).expect("reply");
                    assert_eq!(v["op"], "subscribed", "{v}");
                    replies += 1;
                }
                0x2 => file(&mut zs, decode_batch(&payload).expect("valid batch")),
                0x9 | 0xA => {}
                other => panic!("unexpected opcode {other}"),
            }
        }
        loop {
            match plain.read() {
                Ok(Message::Binary(b)) => {
                    got = true;
                    file(&mut ps, decode_batch(&b).expect("valid batch"));
                }
                Ok(_) => got = true,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("plain client: {e}"),
            }
        }
        if sim.is_done() && !got {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(600) {
                break;
            }
        } else {
            quiet_since = None;
        }
    }

    assert_eq!(replies, 1);
    assert!(
        z.compressed_messages > 0,
        "no compressed data message (plain: {})",
        z.plain_messages
    );
    assert_eq!(zs.keys().collect::<Vec<_>>(), ps.keys().collect::<Vec<_>>());
    assert_eq!(zs.len(), 16, "8 books and 8 trade streams");
    let mut compared = 0;
    for (key, zr) in &zs {
        let pr = &ps[key];
        if key.1 {
            assert!(zr[0].header.is_snapshot() && pr[0].header.is_snapshot());
        }
        let (a, b) = common_tail(zr, pr);
        assert_eq!(a, b, "stream {key:?} differs");
        // Within a stream, seq rises by one.
        for w in a.windows(2) {
            assert_eq!(w[1].header.seq, w[0].header.seq + 1, "stream {key:?}");
        }
        compared += a.len();
    }
    assert!(compared > 1_000, "only {compared} records compared");
    eprintln!(
        "deflate client: {} compressed + {} plain messages, {} wire bytes",
        z.compressed_messages, z.plain_messages, z.wire_bytes
    );
}

#[test]
fn json_deflate_client_gets_valid_arrays_with_contiguous_streams() {
    let sim = simulator(6, 4_000.0, Some(4_000), 5);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--deflate-threshold",
        "100",
    ]);
    let mut z = RawWs::connect(d.addr, "/ws?format=json", Some("permessage-deflate"));
    assert_eq!(z.extensions.as_deref(), Some("permessage-deflate"));
    z.send_text(&json!({"op":"subscribe","id":7,"symbols":["*"],"depth":25}).to_string());
    // (sid, trades?) -> last seq
    let mut last: BTreeMap<(u64, bool), u64> = BTreeMap::new();
    let mut records = 0;
    let deadline = Instant::now() + PATIENCE;
    let mut quiet_since: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "stream never settled");
        match z.message() {
            Some((0x1, payload)) if payload.first() == Some(&b'[') => {
                quiet_since = None;
                let v: serde_json::Value = serde_json::from_slice(&payload).expect("a JSON array");
                for r in v.as_array().expect("array") {
                    let kind = r["kind"].as_str().expect("kind");
                    if kind == "status" {
                        continue;
                    }
                    records += 1;
                    let key = (r["sid"].as_u64().expect("sid"), kind == "trade");
                    let seq = r["seq"].as_u64().expect("seq");
                    if let Some(prev) = last.insert(key, seq) {
                        if kind != "snapshot" {
                            assert_eq!(seq, prev + 1, "stream {key:?}");
                        }
                    }
                }
            }
            Some((0x1, payload)) => {
                quiet_since = None;
                let v: serde_json::Value = serde_json::from_slice(&payload).expect("reply");
                assert_eq!(v["op"], "subscribed");
            }
            Some(_) => quiet_since = None,
            None if sim.is_done() => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(600) {
                    break;
                }
            }
            None => {}
        }
    }
    assert_eq!(last.len(), 12, "6 books and 6 trade streams");
    assert!(records > 1_000, "only {records} records");
    assert!(z.compressed_messages > 0, "no compressed message");
}

#[test]
fn negotiation_on_the_wire() {
    let d = Daemon::start(&["--echo"]);
    let cases: [(&str, Option<&str>); 8] = [
        ("permessage-deflate", Some("permessage-deflate")),
        (
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate; client_max_window_bits=10"),
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12",
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=12",
            ),
        ),
        // 8 cannot be honoured: declined, and the next offer is taken.
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            Some("permessage-deflate"),
        ),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; bogus", None),
        ("x-webkit-deflate-frame", None),
        ("permessage-deflate; client_max_window_bits=99", None),
    ];
    for path in ["/ws", "/echo"] {
        for (offer, want) in cases {
            let (status, head, _, _) = upgrade(d.addr, path, Some(offer));
            assert_eq!(
                status, 101,
                "{offer}: a declined offer never fails the handshake"
            );
            assert_eq!(
                header(&head, "sec-websocket-extensions").as_deref(),
                want,
                "{path} {offer}"
            );
        }
    }
    // Switched off: never accepted.
    let off = Daemon::start(&["--no-deflate"]);
    let (status, head, _, _) = upgrade(off.addr, "/ws", Some("permessage-deflate"));
    assert_eq!(status, 101);
    assert_eq!(header(&head, "sec-websocket-extensions"), None);
}

#[test]
fn echo_endpoint_is_off_by_default_and_echoes_when_on() {
    let off = Daemon::start(&[]);
    let (status, _, _, _) = upgrade(off.addr, "/echo", None);
    assert_eq!(status, 404);

    let d = Daemon::start(&["--echo"]);
    let url = format!("ws://{}/echo", d.addr);
    let (mut ws, _) = tungstenite::connect(&url).expect("connect /echo");
    let big: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    ws.send(Message::text("héllo")).expect("send");
    ws.send(Message::binary(big.clone())).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text("héllo"));
    assert_eq!(ws.read().expect("echo"), Message::binary(big));
    // Echo connections are not control connections: a subscribe comes back as it is.
    let sub = r#"{"op":"subscribe","symbols":["*"]}"#;
    ws.send(Message::text(sub)).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text(sub));
    ws.close(None).expect("close");

    // With permessage-deflate: the compressed message is inflated, echoed compressed.
    let mut z = RawWs::connect(
        d.addr,
        "/echo",
        Some("permessage-deflate; client_no_context_takeover; client_max_window_bits"),
    );
    let text = "compress me, compress me, compress me! ".repeat(100);
    for i in 0..3 {
        // The client must not refer to earlier messages (client_no_context_takeover).
        let text = format!("{i}{text}");
        z.send_text(&text);
        let (op, payload) = z.message().or_else(|| z.message()).expect("echo");
        assert_eq!(op, 0x1, "{}", String::from_utf8_lossy(&payload));
        assert_eq!(payload, text.as_bytes());
    }
    assert_eq!(z.compressed_messages, 3);

    // A client that keeps its compression context: later messages refer to earlier ones, so
    // the server's inflater must keep its window between messages.
    let mut z = RawWs::connect(
        d.addr,
        "/echo",
        Some("permessage-deflate; client_max_window_bits"),
    );
    assert!(!z.reset_each_message);
    for _ in 0..3 {
        z.send_text(&text);
        let (op, payload) = z.message().or_else(|| z.message()).expect("echo");
        assert_eq!(op, 0x1, "{}", String::from_utf8_lossy(&payload));
        assert_eq!(payload, text.as_bytes());
    }
}

#[test]
fn compressed_zip_bomb_is_closed_with_1009() {
    let d = Daemon::start(&["--max-message-bytes", "65536"]);
    let mut z = RawWs::connect(d.addr, "/ws", Some("permessage-deflate"));
    assert!(z.extensions.is_some());
    // 8 MiB of spaces compress to about 8 KiB: small on the wire, far over the limit inflated.
    z.send_text(&" ".repeat(8 << 20));
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no close frame");
        if let Some((op, payload)) = z.message() {
            if op == 0x8 {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
                break;
            }
        }
    }
}

/// Benchmark, not a test (ignored; run in release, see docs/benchmarks.md, "Compression"):
/// wire bytes and engine CPU per delivered record with and without permessage-deflate, at
/// `TC_BENCH_CONNS` (default 1,000) subscribers of 5 symbols each, over `TC_BENCH_SECS`
/// (default 20) seconds of a `TC_BENCH_RATE` (default 5,000) updates/s feed of 50 symbols.
/// Each mode runs `TC_BENCH_RUNS` (default 3) times, alternating; medians are printed.
/// `TC_BENCH_DAEMON_CPUS` pins the daemon (`taskset -c`).
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_compression_at_1000_subscribers() {
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let conns = env("TC_BENCH_CONNS", 1000.0) as usize;
    let secs = env("TC_BENCH_SECS", 20.0);
    let rate = env("TC_BENCH_RATE", 5000.0);
    let runs = env("TC_BENCH_RUNS", 3.0) as usize;
    let threshold = env("TC_BENCH_THRESHOLD", 256.0) as usize;
    let mut results: BTreeMap<&str, Vec<bench::Sample>> = BTreeMap::new();
    for run in 0..runs {
        for (mode, offer) in [
            ("plain", None),
            (
                "deflate",
                Some("permessage-deflate; client_max_window_bits"),
            ),
        ] {
            let s = bench::run(conns, secs, rate, threshold, offer, 100 + run as u64);
            eprintln!("run {run} {mode}: {s:?}");
            results.entry(mode).or_default().push(s);
        }
    }
    eprintln!(
        "\n{conns} subscribers x 5 symbols, {rate} updates/s over 50 symbols, {secs} s windows, \
         threshold {threshold} B, medians of {runs}:"
    );
    eprintln!(
        "mode     records/s   wire B/record   engine CPU ns/record   shard CPU ns/record   engine CPU %   resyncs"
    );
    for (mode, v) in &results {
        let med = |f: &dyn Fn(&bench::Sample) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        eprintln!(
            "{mode:8} {:>9.0} {:>15.1} {:>22.0} {:>21.0} {:>14.1} {:>9}",
            med(&|s| s.records as f64 / s.secs),
            med(&|s| s.bytes as f64 / s.records as f64),
            med(&|s| s.cpu_secs * 1e9 / s.records as f64),
            med(&|s| s.shard_cpu_secs * 1e9 / s.records as f64),
            med(&|s| 100.0 * s.cpu_secs / s.secs),
            v.iter().map(|s| s.resyncs).sum::<u64>(),
        );
    }
}

mod bench {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};

    use super::{common, upgrade};

    /// One measured window.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Sample {
        pub(super) secs: f64,
        pub(super) records: u64,
        pub(super) bytes: u64,
        /// The daemon's CPU time (all threads: ingester, shard, embedded nothing).
        pub(super) cpu_secs: f64,
        /// The shard thread's CPU time (where compression happens).
        pub(super) shard_cpu_secs: f64,
        /// Ring resyncs in the window: the shard fell behind (a run with any is suspect).
        pub(super) resyncs: u64,
    }

    fn shard_cpu_secs(pid: u32) -> f64 {
        let mut total = 0.0;
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
            let path = t.expect("task").path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.starts_with("shard") {
                total += stat_secs(&std::fs::read_to_string(path.join("stat")).expect("stat"));
            }
        }
        total
    }

    fn cpu_secs(pid: u32) -> f64 {
        stat_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat"))
    }

    fn stat_secs(stat: &str) -> f64 {
        // Fields after the command name (which is in parentheses): utime is the 14th, stime
        // the 15th field overall.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 =
            f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }

    fn metric(addr: SocketAddr, name: &str) -> u64 {
        let (_, body) = common::http_get(addr, "/metrics").expect("metrics");
        body.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub(super) fn run(
        conns: usize,
        secs: f64,
        rate: f64,
        threshold: usize,
        offer: Option<&str>,
        seed: u64,
    ) -> Sample {
        let sim = common::simulator(50, rate, None, seed);
        // TC_BENCH_DAEMON_CPUS=0 runs the daemon under `taskset -c 0` (run the test itself
        // under `taskset -c 1` to keep the load off the engine's core).
        let mut cmd = match std::env::var("TC_BENCH_DAEMON_CPUS") {
            Ok(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpus, env!("CARGO_BIN_EXE_tickcast")]);
                c
            }
            Err(_) => Command::new(env!("CARGO_BIN_EXE_tickcast")),
        };
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--shards", "1", "--feed"])
            .arg(sim.feed_url())
            .args(["--max-outbuf-bytes", "33554432"])
            .args(["--deflate-threshold", &threshold.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tickcast");
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address line");
        let addr: SocketAddr = line
            .trim()
            .trim_start_matches("tickcast listening on ws://")
            .trim_end_matches("/ws")
            .parse()
            .expect("addr");
        let deadline = Instant::now() + common::PATIENCE;
        while !matches!(common::http_get(addr, "/healthz"), Ok((200, _))) {
            assert!(Instant::now() < deadline, "never healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Symbol names.
        let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws")).expect("connect");
        ws.send(tungstenite::Message::text(r#"{"op":"symbols","id":1}"#))
            .expect("send");
        let names: Vec<String> = loop {
            if let tungstenite::Message::Text(t) = ws.read().expect("reply") {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                break v["symbols"]
                    .as_array()
                    .expect("symbols")
                    .iter()
                    .map(|s| s["symbol"].as_str().expect("name").to_owned())
                    .collect();
            }
        };
        drop(ws);

        let mut poll = Poll::new().expect("poll");
        let mut socks = Vec::with_capacity(conns);
        for i in 0..conns {
            let (status, head, mut s, _) = upgrade(addr, "/ws", offer);
            assert_eq!(status, 101);
            assert_eq!(
                offer.is_some(),
                head.to_ascii_lowercase().contains("permessage-deflate")
            );
            let picked: Vec<&str> = (0..5)
                .map(|k| names[(i * 5 + k) % names.len()].as_str())
                .collect();
            let sub = serde_json::json!({"op":"subscribe","id":1,"symbols":picked,"depth":25})
                .to_string();
            let mut f = vec![0x81, 0x80 | 126];
            f.extend_from_slice(&(sub.len() as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            f.extend_from_slice(sub.as_bytes());
            s.write_all(&f).expect("subscribe");
            s.set_nonblocking(true).expect("nonblocking");
            let mut m = MioStream::from_std(s);
            poll.registry()
                .register(&mut m, Token(i), Interest::READABLE)
                .expect("register");
            socks.push(m);
        }
        // Drain every socket until `until`.
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 1 << 16];
        let mut pump = |until: Instant, socks: &mut Vec<MioStream>| {
            while Instant::now() < until {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .expect("poll");
                for ev in &events {
                    let s = &mut socks[ev.token().0];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("client read: {e}"),
                        }
                    }
                }
            }
        };
        pump(Instant::now() + Duration::from_secs(3), &mut socks);
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tickcast exited during the warm-up: {status}");
        }
        let r0 = metric(addr, "tickcast_records_out_total");
        let b0 = metric(addr, "tickcast_bytes_out_total");
        let x0 = metric(addr, "tickcast_ring_resyncs_total");
        let c0 = cpu_secs(pid);
        let s0 = shard_cpu_secs(pid);
        let t0 = Instant::now();
        pump(t0 + Duration::from_secs_f64(secs), &mut socks);
        let c1 = cpu_secs(pid);
        let s1 = shard_cpu_secs(pid);
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tickcast exited during the run: {status}");
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let r1 = metric(addr, "tickcast_records_out_total");
        let b1 = metric(addr, "tickcast_bytes_out_total");
        assert_eq!(
            metric(addr, "tickcast_evictions_total"),
            0,
            "a client was evicted: the measurement would be wrong"
        );
        let resyncs = metric(addr, "tickcast_ring_resyncs_total") - x0;
        let _ = child.kill();
        let _ = child.wait();
        Sample {
            secs: elapsed,
            records: r1 - r0,
            bytes: b1 - b0,
            cpu_secs: c1 - c0,
            shard_cpu_secs: s1 - s0,
            resyncs,
        }
    }
}
