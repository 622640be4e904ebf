//! The plain-HTTP transports (protocol §3.4: `/stream`, `/sse`) and the built-in trading
//! screen (`/`), over real loopback sockets: feed-sim → tickcast (the binary) → independent
//! HTTP clients written here (chunked decoding, `/stream` frames, SSE events), whose records go
//! through the bench crate's decoders and sequence checker.

#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Daemon, PATIENCE, cut, raw_http, simulator, truth};
use feed_sim::Simulator;
use serde_json::Value;
use tickcast_bench::book::StreamState;
use tickcast_bench::control::SymbolInfo;
use tickcast_bench::wire::{decode_batch, decode_json_batch};

/// A `/stream` or `/sse` client: the HTTP response decoded as it arrives.
struct HttpStream {
    sock: TcpStream,
    sse: bool,
    raw: Vec<u8>,
    head: Option<String>,
    /// Dechunked body not parsed yet.
    body: Vec<u8>,
    /// The last chunk arrived.
    ended: bool,
    /// The server closed the connection.
    eof: bool,
    state: StreamState,
    decimals: HashMap<String, (u8, u8)>,
    symbols: Vec<SymbolInfo>,
    /// Control messages (`/stream` type 2, SSE named events), with the record count before each.
    controls: Vec<(u64, Value)>,
    records: u64,
    seq_errors: Vec<String>,
    /// SSE: the last event id seen.
    last_id: Option<String>,
    keepalives: u64,
}

impl HttpStream {
    fn open(addr: SocketAddr, path: &str, headers: &str) -> Self {
        Self::open_on(
            TcpStream::connect(addr).expect("connect"),
            addr,
            path,
            headers,
        )
    }

    fn open_on(mut sock: TcpStream, addr: SocketAddr, path: &str, headers: &str) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        write!(sock, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n").expect("request");
        Self {
            sock,
            sse: path.starts_with("/sse"),
            raw: Vec::new(),
            head: None,
            body: Vec::new(),
            ended: false,
            eof: false,
            state: StreamState::new(),
            decimals: HashMap::new(),
            symbols: Vec::new(),
            controls: Vec::new(),
            records: 0,
            seq_errors: Vec::new(),
            last_id: None,
            keepalives: 0,
        }
    }

    /// Reads for `d` (or until the server closes); false once closed.
    fn pump(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut buf = [0u8; 64 * 1024];
        while Instant::now() < until && !self.eof {
            match self.sock.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.raw.extend_from_slice(&buf[..n]);
                    self.decode();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        }
        !self.eof
    }

    fn status(&mut self) -> u16 {
        let deadline = Instant::now() + PATIENCE;
        while self.head.is_none() {
            assert!(Instant::now() < deadline, "no response head");
            self.pump(Duration::from_millis(20));
            if self.eof && self.head.is_none() {
                break;
            }
        }
        self.head
            .as_deref()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn decode(&mut self) {
        if self.head.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            self.head = Some(String::from_utf8_lossy(&self.raw[..end]).into_owned());
            self.raw.drain(..end + 4);
        }
        // Whole chunks only.
        while !self.ended {
            let Some(nl) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let n = usize::from_str_radix(std::str::from_utf8(&self.raw[..nl]).expect("hex"), 16)
                .expect("chunk size");
            if n == 0 {
                self.ended = true;
                break;
            }
            if self.raw.len() < nl + 4 + n {
                break;
            }
            assert_eq!(&self.raw[nl + 2 + n..nl + 4 + n], b"\r\n", "chunk trailer");
            self.body.extend_from_slice(&self.raw[nl + 2..nl + 2 + n]);
            self.raw.drain(..nl + 4 + n);
        }
        if self.sse {
            self.events();
        } else {
            self.frames();
        }
    }

    fn frames(&mut self) {
        let mut at = 0;
        while self.body.len() - at >= 5 {
            let len = u32::from_le_bytes(self.body[at..at + 4].try_into().expect("4")) as usize;
            if self.body.len() - at < 5 + len {
                break;
            }
            let kind = self.body[at + 4];
            let payload: Vec<u8> = self.body[at + 5..at + 5 + len].to_vec();
            at += 5 + len;
            match kind {
                1 => {
                    let recs = decode_batch(&payload).expect("a §1 batch");
                    self.apply(&recs);
                }
                2 => self.control(serde_json::from_slice(&payload).expect("control JSON")),
                other => panic!("frame type {other}"),
            }
        }
        self.body.drain(..at);
    }

    fn events(&mut self) {
        let mut at = 0;
        while let Some(end) = self.body[at..].windows(2).position(|w| w == b"\n\n") {
            let event = String::from_utf8(self.body[at..at + end].to_vec()).expect("utf-8");
            at += end + 2;
            let (mut name, mut data) = (None, None);
            for line in event.lines() {
                if line.starts_with(':') {
                    self.keepalives += 1;
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("id: ") {
                    self.last_id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event: {event:?}");
                    data = Some(v.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            match (name, data) {
                (Some(_), Some(d)) => self.control(serde_json::from_str(&d).expect("control")),
                (None, Some(d)) => {
                    // One JSON record per event, as in format=json.
                    let dec = self.decimals.clone();
                    let recs = decode_json_batch(&format!("[{d}]"), &|s: &str| dec.get(s).copied())
                        .expect("a format=json record");
                    assert_eq!(recs.len(), 1);
                    self.apply(&recs);
                }
                _ => {}
            }
        }
        self.body.drain(..at);
    }

    fn control(&mut self, v: Value) {
        if v["op"] == "keepalive" {
            self.keepalives += 1;
        }
        if v["op"] == "subscribed" {
            for s in v["symbols"].as_array().expect("symbols") {
                let info: SymbolInfo = serde_json::from_value(s.clone()).expect("symbol info");
                self.decimals
                    .insert(info.symbol.clone(), (info.px_decimals, info.qty_decimals));
                self.symbols.push(info);
            }
        }
        self.controls.push((self.records, v));
    }

    fn apply(&mut self, recs: &[tickcast_bench::wire::Record]) {
        for r in recs {
            self.records += 1;
            if let Err(e) = self.state.apply(r) {
                self.seq_errors.push(e.to_string());
            }
        }
    }

    fn top(&self, sid: u32, depth: usize) -> Option<common::Levels> {
        let b = self.state.book(sid)?;
        let n = if depth == 0 { usize::MAX } else { depth };
        Some((b.top_bids(n), b.top_asks(n)))
    }
}

/// Pumps every stream until each holds the simulator's truth at its depth for each symbol.
fn converge(sim: &Simulator, clients: &mut [(&mut HttpStream, usize)]) {
    let deadline = Instant::now() + PATIENCE * 2;
    while !sim.is_done() {
        for (c, _) in clients.iter_mut() {
            c.pump(Duration::from_millis(20));
        }
        assert!(Instant::now() < deadline, "simulator never finished");
    }
    loop {
        let mut diff = None;
        for (c, depth) in clients.iter_mut() {
            c.pump(Duration::from_millis(50));
            for info in c.symbols.clone() {
                let want = cut(&truth(sim, &info), *depth);
                if c.top(info.sid, *depth).as_ref() != Some(&want) {
                    diff = Some(format!("{} depth {depth} (sse: {})", info.symbol, c.sse));
                }
            }
        }
        let Some(diff) = diff else { return };
        assert!(Instant::now() < deadline, "books did not converge: {diff}");
    }
}

/// The first `n` symbols the daemon lists (asked over `/ws`).
fn symbols(d: &Daemon, n: usize) -> Vec<String> {
    let mut c = common::Client::connect(&d.url(""));
    c.send(serde_json::json!({"op":"symbols","id":1}));
    match c.reply(1) {
        tickcast_bench::control::Reply::Symbols { symbols, .. } => {
            symbols.into_iter().take(n).map(|s| s.symbol).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_and_sse_books_equal_the_truth_at_depth_10_and_0() {
    let sim = simulator(6, 4_000.0, Some(4_000), 11);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let q = format!("symbols={}", symbols(&d, 3).join(","));
    let mut s10 = HttpStream::open(d.addr, &format!("/stream?{q}&depth=10"), "");
    let mut s0 = HttpStream::open(d.addr, &format!("/stream?{q}&depth=0&channels=book"), "");
    let mut e10 = HttpStream::open(d.addr, &format!("/sse?{q}&depth=10"), "");
    let mut e0 = HttpStream::open(d.addr, &format!("/sse?{q}&depth=0"), "");
    for c in [&mut s10, &mut s0, &mut e10, &mut e0] {
        assert_eq!(c.status(), 200);
    }
    let head = e10.head.clone().unwrap_or_default();
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert!(
        s10.head
            .as_deref()
            .is_some_and(|h| h.contains("application/octet-stream"))
    );
    converge(
        &sim,
        &mut [(&mut s10, 10), (&mut s0, 0), (&mut e10, 10), (&mut e0, 0)],
    );
    for c in [&s10, &s0, &e10, &e0] {
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        assert!(c.records > 100, "only {} records", c.records);
        assert_eq!(c.symbols.len(), 3);
        let (before, first) = &c.controls[0];
        assert_eq!(
            (*before, first["op"].as_str()),
            (0, Some("subscribed")),
            "the subscribe reply comes first"
        );
    }
    assert!(
        s10.symbols.iter().any(|s| s10.state.trade_count(s.sid) > 0),
        "trades on /stream"
    );
    assert!(
        e10.symbols.iter().any(|s| e10.state.trade_count(s.sid) > 0),
        "trades on /sse"
    );
    // Every SSE data event has an id naming the subscription's positions.
    let id = e10.last_id.clone().expect("event ids");
    assert_eq!(id.matches(';').count(), 3, "{id}");
    let gauge = |t: &str| {
        (0..2)
            .map(|s| {
                d.metric_labelled(
                    "tickcast_transport_connections",
                    &format!("shard=\"{s}\",transport=\"{t}\""),
                )
            })
            .sum::<u64>()
    };
    assert_eq!((gauge("stream"), gauge("sse")), (2, 2));
}

#[test]
fn bad_queries_get_400_and_refused_access_401_or_403() {
    let sim = simulator(2, 200.0, None, 3);
    let dir = std::env::temp_dir().join(format!("tickcast-http-tokens-{}", std::process::id()));
    std::fs::write(&dir, "desk-token-1\n").expect("tokens file");
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--allowed-origins",
        "https://desk.example.com",
        "--tokens-file",
        dir.to_str().expect("path"),
    ]);
    let get = |path: &str, origin: &str| {
        let extra = if origin.is_empty() {
            String::new()
        } else {
            format!("Origin: {origin}\r\n")
        };
        raw_http(
            d.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
        )
        .expect("request")
    };
    let ok = "https://desk.example.com";
    for (path, origin, status, code) in [
        ("/stream?depth=10", ok, 400, "bad_request"),
        (
            "/sse?symbols=X&depth=3&token=desk-token-1",
            ok,
            400,
            "invalid_depth",
        ),
        (
            "/stream?symbols=NOPE&token=desk-token-1",
            ok,
            400,
            "unknown_symbol",
        ),
        ("/stream?symbols=*", ok, 401, "missing_token"),
        ("/sse?symbols=*&token=wrong", ok, 403, "bad_token"),
        (
            "/sse?symbols=*&token=desk-token-1",
            "https://evil.example",
            403,
            "origin",
        ),
        ("/stream?symbols=*&token=desk-token-1", "", 403, "origin"),
    ] {
        let (got, body) = get(path, origin);
        assert_eq!(got, status, "{path} {origin}: {body}");
        let v: Value = serde_json::from_str(body.trim()).expect("a JSON error body");
        assert_eq!(v["code"], code, "{path}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // With both, the stream opens.
    let mut s = HttpStream::open(
        d.addr,
        "/stream?symbols=*&token=desk-token-1",
        &format!("Origin: {ok}\r\n"),
    );
    assert_eq!(s.status(), 200);
    assert!(
        s.head
            .as_deref()
            .is_some_and(|h| h.contains("Access-Control-Allow-Origin: https://desk.example.com"))
    );
    let _ = std::fs::remove_file(dir);
}

#[test]
fn a_stream_consumer_that_stops_reading_is_evicted_and_the_others_are_unaffected() {
    let sim = simulator(10, 3_000.0, None, 5);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--max-outbuf-bytes",
        "131072",
    ]);
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&d.addr.into()).expect("connect");
    let mut slow = HttpStream::open_on(sock.into(), d.addr, "/stream?symbols=*&depth=0", "");
    assert_eq!(slow.status(), 200);
    // The readers are debug builds parsing every record, taking turns on a shared machine: a
    // few symbols each at a moderate rate keep them well ahead of the bound.
    let few = symbols(&d, 3).join(",");
    let mut good = HttpStream::open(d.addr, &format!("/stream?symbols={few}&depth=10"), "");
    let mut good_sse = HttpStream::open(d.addr, &format!("/sse?symbols={few}&depth=1"), "");
    assert_eq!(good.status(), 200);
    assert_eq!(good_sse.status(), 200);
    let evictions = || {
        d.metric_labelled(
            "tickcast_transport_evictions_total",
            "shard=\"0\",transport=\"stream\"",
        )
    };
    let deadline = Instant::now() + PATIENCE;
    while evictions() == 0 {
        assert!(Instant::now() < deadline, "slow stream never evicted");
        assert!(good.pump(Duration::from_millis(10)), "good stream ended");
        assert!(good_sse.pump(Duration::from_millis(10)), "good sse ended");
    }
    let before = (good.records, good_sse.records);
    for _ in 0..50 {
        good.pump(Duration::from_millis(10));
        good_sse.pump(Duration::from_millis(10));
    }
    assert!(good.records > before.0 && good_sse.records > before.1);
    assert!(good.seq_errors.is_empty(), "{:?}", good.seq_errors);
    assert!(good_sse.seq_errors.is_empty(), "{:?}", good_sse.seq_errors);
    assert!(
        !good.ended && !good_sse.ended,
        "a reading stream ended: {:?} {:?}",
        good.controls.last(),
        good_sse.controls.last()
    );
    assert_eq!(d.metric("tickcast_evictions_total"), 1);
    // The slow one, reading again: a valid stream up to the end, a closing message, the end of
    // the chunked body, then the server closes.
    let deadline = Instant::now() + PATIENCE;
    while !slow.eof {
        assert!(Instant::now() < deadline, "evicted stream never ended");
        slow.pump(Duration::from_millis(100));
    }
    assert!(slow.ended, "the chunked body ends with its last chunk");
    assert!(slow.seq_errors.is_empty(), "{:?}", slow.seq_errors);
    let last = &slow.controls.last().expect("a closing message").1;
    assert_eq!(
        (last["op"].as_str(), last["code"].as_u64()),
        (Some("closing"), Some(1013))
    );
}

#[test]
fn the_screen_is_served_at_the_root_with_etag_and_304() {
    let sim = simulator(2, 200.0, None, 4);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let get = |path: &str, extra: &str| {
        let mut s = TcpStream::connect(d.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read");
        String::from_utf8_lossy(&out).into_owned()
    };
    let page = get("/", "");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8"));
    if page.contains("built without the trading screen") {
        eprintln!("this binary was built without ui/: only the placeholder page is checked");
        return;
    }
    assert!(
        page.contains("<script type=\"module\""),
        "the screen's index.html"
    );
    let etag = page
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("an ETag")
        .to_owned();
    assert!(page.contains("Cache-Control: no-cache"));
    let again = get("/", &format!("If-None-Match: {etag}\r\n"));
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    assert!(again.ends_with("\r\n\r\n"), "no body with a 304");
    let js = get("/lib/tickcast-client/index.js", "");
    assert!(js.starts_with("HTTP/1.1 200") && js.contains("text/javascript"));
    let css = get("/app.css", "");
    assert!(css.starts_with("HTTP/1.1 200") && css.contains("text/css"));
    assert!(get("/tests/screen.test.mjs", "").starts_with("HTTP/1.1 404"));
    let head = raw_http(d.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").expect("HEAD");
    assert_eq!(head, (200, String::new()));
}
