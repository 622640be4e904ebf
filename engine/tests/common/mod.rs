//! Shared harness for the loopback integration tests: the real `tickcast` binary, the real
//! feed-sim (as a library, in the test process), and independent clients (tungstenite for the
//! WebSocket layer, `tickcast_bench` for decoding records and rebuilding books).

#![allow(dead_code, unreachable_pub, missing_docs)]
// Tests wait on real time; the sans-IO clock rule is for the engine library.
#![allow(clippy::disallowed_methods)]

pub mod pki;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use feed_sim::{SimConfig, Simulator};
use serde_json::Value;
use tickcast_bench::book::StreamState;
use tickcast_bench::control::{Reply, SymbolInfo};
use tickcast_bench::wire::{Body, Record, decode_batch, decode_json_batch};
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A book as (bids, asks), best first.
pub type Levels = (Vec<(i64, i64)>, Vec<(i64, i64)>);

/// Upper bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A simulator on an ephemeral loopback port.
pub fn simulator(symbols: usize, rate: f64, updates: Option<u64>, seed: u64) -> Simulator {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        symbols,
        seed,
        rate,
        updates,
        ..SimConfig::default()
    })
    .expect("start feed-sim")
}

/// The `tickcast` binary, killed when dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// With TLS (`start_tls`): how clients trust it.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Daemon {
    /// Starts `tickcast --listen 127.0.0.1:0 ARGS..` and waits until `/healthz` says the feed is live.
    pub fn start(args: &[&str]) -> Self {
        Self::start_inner(args, None)
    }

    /// As [`Daemon::start`] for a daemon serving TLS (`args` name the certificate), checked
    /// with `client` (which trusts its CA).
    pub fn start_tls(args: &[&str], client: std::sync::Arc<rustls::ClientConfig>) -> Self {
        Self::start_inner(args, Some(client))
    }

    fn start_inner(args: &[&str], tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        // TICKCAST_BIN runs another build (a release binary, for the measurements).
        let bin = std::env::var("TICKCAST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tickcast").to_owned());
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tickcast");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line
                    .strip_prefix("tickcast listening on ws://")
                    .or_else(|| line.strip_prefix("tickcast listening on wss://"))
                {
                    let addr = rest.trim_end_matches("/ws").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(PATIENCE)
            .expect("tickcast did not print its address")
            .parse()
            .expect("address");
        let d = Self { child, addr, tls };
        // A large feed (4,000 symbols) on a loaded machine takes a while to sync.
        let deadline = Instant::now() + 2 * PATIENCE;
        loop {
            if let Ok((200, _)) = d.get("/healthz") {
                break;
            }
            assert!(Instant::now() < deadline, "tickcast never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn url(&self, query: &str) -> String {
        let (scheme, host) = if self.tls.is_some() {
            ("wss", format!("localhost:{}", self.addr.port()))
        } else {
            ("ws", self.addr.to_string())
        };
        if query.is_empty() {
            format!("{scheme}://{host}/ws")
        } else {
            format!("{scheme}://{host}/ws?{query}")
        }
    }

    /// GET `path` over plain HTTP, or HTTPS for a TLS daemon.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.tls {
            None => http_get(self.addr, path),
            Some(cfg) => https_get(self.addr, cfg.clone(), path),
        }
    }

    /// A subscriber connected to `/ws?query` (over TLS for a TLS daemon).
    pub fn client(&self, query: &str) -> Client {
        match &self.tls {
            None => Client::connect(&self.url(query)),
            Some(cfg) => {
                Client::connect_tls(&self.url(query), self.addr, cfg.clone()).expect("TLS connect")
            }
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's resident memory in KiB (`VmRSS` from /proc).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A counter or gauge from `/metrics`, summed over its label sets.
    pub fn metric(&self, name: &str) -> u64 {
        let (status, body) = self.get("/metrics").expect("metrics");
        assert_eq!(status, 200);
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// One labelled sample from `/metrics`.
    pub fn metric_labelled(&self, name: &str, labels: &str) -> u64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        let prefix = format!("{name}{{{labels}}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` as is and reads the response until the server closes.
pub fn raw_http(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A TLS client stream to `addr`, for the server name `localhost`.
pub fn tls_stream(
    addr: SocketAddr,
    cfg: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, s))
}

/// An HTTPS GET; returns the status and the body.
pub fn https_get(
    addr: SocketAddr,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = tls_stream(addr, cfg)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    // The server closes after the response (a missing close_notify is not an error here).
    let _ = s.read_to_end(&mut raw);
    let resp = String::from_utf8_lossy(&raw).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Parses a decimal string into an integer scaled by 10^decimals (independent of the engine).
pub fn scaled(s: &str, decimals: u8) -> i64 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut frac = frac.to_owned();
    assert!(
        frac.len() <= usize::from(decimals),
        "too many decimals in {s}"
    );
    while frac.len() < usize::from(decimals) {
        frac.push('0');
    }
    let v: i64 = format!("{int}{frac}").parse().expect("decimal");
    if neg { -v } else { v }
}

/// The simulator's truth for `symbol`: (bids, asks) best first, scaled with `info`'s decimals.
pub fn truth(sim: &Simulator, info: &SymbolInfo) -> Levels {
    let (status, body) =
        http_get(sim.local_addr(), &format!("/book/{}", info.symbol)).expect("GET /book");
    assert_eq!(status, 200, "GET /book/{}: {body}", info.symbol);
    let v: Value = serde_json::from_str(&body).expect("book json");
    let side = |k: &str| -> Vec<(i64, i64)> {
        v[k].as_array()
            .expect("levels")
            .iter()
            .map(|l| {
                (
                    scaled(l[0].as_str().expect("px"), info.px_decimals),
                    scaled(l[1].as_str().expect("qty"), info.qty_decimals),
                )
            })
            .collect()
    };
    (side("bids"), side("asks"))
}

/// A subscriber: a tungstenite client plus the independent stream checker.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
    pub state: StreamState,
    pub json: bool,
    pub decimals: HashMap<String, (u8, u8)>,
    pub symbols: Vec<SymbolInfo>,
    pub records: u64,
    pub messages: u64,
    pub seq_errors: Vec<String>,
    pub replies: Vec<Reply>,
    pub close: Option<CloseFrame>,
    /// Flagged snapshots that replaced a book the client held, by sid.
    pub replaced: HashMap<u32, u64>,
    /// Replacing snapshots whose seq was not the previous one + 1 (protocol §1.3).
    pub replace_jumps: Vec<String>,
    /// The checksum (protocol 1.1 §3.2) of the last book record applied, by sid.
    pub last_crc: HashMap<u32, u32>,
    /// Every snapshot record received: (sid, seq, levels).
    pub snapshots: Vec<(u32, u64, Levels)>,
    /// Payload bytes of the data messages read (for clients that read at a limited rate).
    pub bytes: u64,
    /// Text frames that are neither batches nor replies to a request (`conflating`, `live`).
    pub notices: Vec<String>,
    /// When set, the book held after every book record: (sid, seq) → levels.
    pub history: Option<HashMap<(u32, u64), Levels>>,
    /// Arrival time of every snapshot record, by sid.
    pub snapshot_times: HashMap<u32, Vec<Instant>>,
    /// Book deltas (kind 2) received.
    pub deltas: u64,
    /// The first record of each stream on this connection: (sid, trades?) → (kind, seq).
    pub firsts: HashMap<(u32, bool), (u8, u64)>,
}

impl Client {
    /// A `max_hz` subscription's books as this client received them: for every symbol at least
    /// 5 snapshots, each carrying at least 5 updates on average (so the feed did conflate), and
    /// in every 1-s window (starting at each message received) at most `hz` book messages plus
    /// one for a tick boundary (the subscription's first snapshot, or a tick at the window's
    /// edge). Panics naming the symbol otherwise.
    pub fn assert_book_messages_at_most(&self, hz: usize) {
        for info in &self.symbols {
            let times = self
                .snapshot_times
                .get(&info.sid)
                .cloned()
                .unwrap_or_default();
            let seqs: Vec<u64> = self
                .snapshots
                .iter()
                .filter(|s| s.0 == info.sid)
                .map(|s| s.1)
                .collect();
            assert!(
                times.len() >= 5,
                "{}: {} snapshots",
                info.symbol,
                times.len()
            );
            let moved = seqs.last().copied().unwrap_or(0) - seqs.first().copied().unwrap_or(0);
            assert!(
                moved >= 5 * (seqs.len() as u64 - 1),
                "{}: the feed was too slow to conflate anything ({moved} updates, {} snapshots)",
                info.symbol,
                seqs.len()
            );
            for (i, t) in times.iter().enumerate() {
                let in_window = times[i..]
                    .iter()
                    .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                    .count();
                assert!(
                    in_window <= hz + 1,
                    "{}: {in_window} book messages within one second",
                    info.symbol
                );
            }
        }
    }

    pub fn connect(url: &str) -> Self {
        let (ws, resp) = tungstenite::connect(url).expect("connect");
        assert_eq!(resp.status(), 101);
        Self::from_ws(ws, url.contains("format=json"))
    }

    /// Connects over a socket the caller prepared (e.g. with a small receive buffer).
    pub fn connect_with(url: &str, stream: TcpStream) -> Self {
        let (ws, resp) =
            tungstenite::client(url, MaybeTlsStream::Plain(stream)).expect("handshake");
        assert_eq!(resp.status(), 101);
        Self::from_ws(ws, url.contains("format=json"))
    }

    /// Connects over TLS (`url` is `wss://localhost:PORT/...`, the socket goes to `addr`).
    pub fn connect_tls(
        url: &str,
        addr: SocketAddr,
        cfg: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, tungstenite::Error> {
        let s = tls_stream(addr, cfg)?;
        let (ws, resp) =
            tungstenite::client(url, MaybeTlsStream::Rustls(s)).map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => {
                    tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into())
                }
            })?;
        assert_eq!(resp.status(), 101);
        Ok(Self::from_ws(ws, url.contains("format=json")))
    }

    fn from_ws(ws: WebSocket<MaybeTlsStream<TcpStream>>, json: bool) -> Self {
        match ws.get_ref() {
            MaybeTlsStream::Plain(s) => s
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout"),
            MaybeTlsStream::Rustls(s) => s
                .sock
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout"),
            _ => {}
        }
        Self {
            ws,
            state: StreamState::new(),
            json,
            decimals: HashMap::new(),
            symbols: Vec::new(),
            records: 0,
            messages: 0,
            seq_errors: Vec::new(),
            replies: Vec::new(),
            close: None,
            replaced: HashMap::new(),
            replace_jumps: Vec::new(),
            last_crc: HashMap::new(),
            snapshots: Vec::new(),
            bytes: 0,
            notices: Vec::new(),
            history: None,
            snapshot_times: HashMap::new(),
            deltas: 0,
            firsts: HashMap::new(),
        }
    }

    /// Resets the TCP connection (RST: no close frame, as a dying network does) and connects
    /// again to `url`, keeping what the client knew (books, positions, symbols): the caller
    /// then subscribes, with or without `resume`.
    pub fn reset_and_reconnect(self, url: &str) -> Self {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
        }
        let Self {
            ws,
            state,
            decimals,
            symbols,
            last_crc,
            ..
        } = self;
        drop(ws);
        let mut c = Self::connect(url);
        c.state = state;
        c.decimals = decimals;
        c.symbols = symbols;
        c.last_crc = last_crc;
        c
    }

    /// Forgets every book and position (a client told `recovered: false` starts afresh).
    pub fn forget_streams(&mut self) {
        self.state = StreamState::new();
    }

    /// Forgets the symbols of `symbols` that were not recovered (resumed with
    /// `recovered: false`); returns how many.
    pub fn forget_unrecovered(&mut self, symbols: &[SymbolInfo]) -> usize {
        let mut n = 0;
        for s in symbols {
            if s.recovered == Some(false) {
                self.state.forget(s.sid);
                n += 1;
            }
        }
        n
    }

    /// The `resume` object for every symbol the client holds a position of (`book` at the
    /// subscription's depth, `trades` when it saw one).
    pub fn resume_positions(&self, epoch: &str, trades: bool) -> Value {
        let mut streams = serde_json::Map::new();
        for s in &self.symbols {
            let mut pos = serde_json::Map::new();
            if let Some(seq) = self.state.book_seq(s.sid) {
                pos.insert("book".into(), seq.into());
            }
            if trades {
                if let Some(seq) = self.state.trade_seq(s.sid) {
                    pos.insert("trades".into(), seq.into());
                }
            }
            if !pos.is_empty() {
                streams.insert(s.symbol.clone(), Value::Object(pos));
            }
        }
        serde_json::json!({"epoch": epoch, "streams": streams})
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    /// Reads one message (or times out after the socket's read timeout); false when closed.
    pub fn step(&mut self) -> bool {
        match self.ws.read() {
            Ok(Message::Binary(b)) => {
                self.messages += 1;
                self.bytes += b.len() as u64;
                let recs = decode_batch(&b).expect("valid batch");
                self.apply(&recs);
                true
            }
            Ok(Message::Text(t)) => {
                if t.starts_with('[') {
                    self.messages += 1;
                    self.bytes += t.len() as u64;
                    let dec = self.decimals.clone();
                    let recs = decode_json_batch(&t, &|s: &str| dec.get(s).copied())
                        .expect("valid json batch");
                    self.apply(&recs);
                } else {
                    if t.contains(r#""op":"conflating""#) || t.contains(r#""op":"live""#) {
                        self.notices.push(t.to_string());
                    }
                    let reply = Reply::parse(&t).expect("reply json");
                    if let Reply::Subscribed { symbols, .. } = &reply {
                        for s in symbols {
                            self.decimals
                                .insert(s.symbol.clone(), (s.px_decimals, s.qty_decimals));
                            if !self.symbols.iter().any(|x| x.sid == s.sid) {
                                self.symbols.push(s.clone());
                            }
                        }
                    }
                    self.replies.push(reply);
                }
                true
            }
            Ok(Message::Close(frame)) => {
                self.close = frame;
                // Complete the close handshake.
                let _ = self.ws.flush();
                false
            }
            Ok(_) => true,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    fn apply(&mut self, recs: &[Record]) {
        for r in recs {
            self.records += 1;
            self.deltas += u64::from(r.header.kind == 2);
            if (1..=3).contains(&r.header.kind) {
                self.firsts
                    .entry((r.header.sid, r.header.kind == 3))
                    .or_insert((r.header.kind, r.header.seq));
            }
            self.check_replacement(r);
            if let Body::Book { bids, asks, crc } = &r.body {
                if let Some(crc) = crc {
                    self.last_crc.insert(r.header.sid, *crc);
                }
                if r.header.kind == 1 {
                    self.snapshots
                        .push((r.header.sid, r.header.seq, (bids.clone(), asks.clone())));
                    self.snapshot_times
                        .entry(r.header.sid)
                        .or_default()
                        .push(Instant::now());
                }
            }
            if let Err(e) = self.state.apply(r) {
                self.seq_errors.push(e.to_string());
            }
            if r.header.kind <= 2 {
                if let Some(b) = self.state.book(r.header.sid) {
                    assert!(!b.is_crossed(), "crossed book for sid {}", r.header.sid);
                    if let Some(h) = &mut self.history {
                        h.insert(
                            (r.header.sid, r.header.seq),
                            (b.top_bids(usize::MAX), b.top_asks(usize::MAX)),
                        );
                    }
                }
            }
        }
    }

    /// A snapshot for a book the client holds must continue its stream: seq = previous + 1.
    fn check_replacement(&mut self, r: &Record) {
        let h = &r.header;
        if h.kind != 1 || self.state.book(h.sid).is_none() {
            return;
        }
        *self.replaced.entry(h.sid).or_default() += 1;
        let prev = self.state.book_seq(h.sid).unwrap_or(0);
        if h.seq != prev + 1 {
            self.replace_jumps.push(format!(
                "sid {}: replacing snapshot seq {} after {prev}",
                h.sid, h.seq
            ));
        }
    }

    /// The status codes received for `sid`, in order.
    pub fn statuses(&self, sid: u32) -> Vec<u16> {
        self.state
            .statuses()
            .iter()
            .filter(|(s, _)| *s == sid)
            .map(|(_, c)| *c)
            .collect()
    }

    /// Reads for `d` (or until closed).
    pub fn pump(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if !self.step() {
                return false;
            }
        }
        true
    }

    /// Reads until a reply with `id` arrives.
    pub fn reply(&mut self, id: u64) -> Reply {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(pos) = self.replies.iter().position(|r| r.id() == Some(id)) {
                return self.replies.remove(pos);
            }
            assert!(Instant::now() < deadline, "no reply with id {id}");
            assert!(
                self.step(),
                "connection closed while waiting for reply {id}"
            );
        }
    }

    pub fn subscribe(&mut self, id: u64, symbols: &[&str], depth: u16) -> Reply {
        self.send(serde_json::json!({"op":"subscribe","id":id,"symbols":symbols,"depth":depth}));
        self.reply(id)
    }

    /// Reads until the server closes; returns the close code.
    pub fn until_closed(&mut self, d: Duration) -> Option<u16> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if !self.step() {
                return self.close.as_ref().map(|f| u16::from(f.code));
            }
        }
        None
    }

    /// The client's book for `sid` at `depth` levels (0 = all).
    pub fn top(&self, sid: u32, depth: usize) -> Option<Levels> {
        let b = self.state.book(sid)?;
        let n = if depth == 0 { usize::MAX } else { depth };
        Some((b.top_bids(n), b.top_asks(n)))
    }
}

/// A simulator with `cfg` on an ephemeral loopback port (or the port `cfg.listen` names).
pub fn simulator_with(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg).expect("start feed-sim")
}

/// Reads from every client until `done` holds for each, or panics after `PATIENCE`.
pub fn pump_until(clients: &mut [&mut Client], what: &str, done: impl Fn(&Client) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !clients.iter().all(|c| done(c)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for c in clients.iter_mut() {
            assert!(
                c.pump(Duration::from_millis(20)),
                "client closed while waiting for {what}: {:?}",
                c.close
            );
        }
    }
}

/// Cuts a truth book to `depth` levels (0 = all).
pub fn cut(book: &Levels, depth: usize) -> Levels {
    let n = if depth == 0 { usize::MAX } else { depth };
    (
        book.0.iter().take(n).copied().collect(),
        book.1.iter().take(n).copied().collect(),
    )
}

/// Pumps every client until each holds exactly the simulator's truth for each of its symbols at
/// its depth, or panics after `PATIENCE` with the first difference.
pub fn converge(sim: &Simulator, clients: &mut [(&mut Client, usize)]) {
    let deadline = Instant::now() + PATIENCE;
    while !sim.is_done() {
        for (c, _) in clients.iter_mut() {
            c.pump(Duration::from_millis(20));
        }
        assert!(
            Instant::now() < deadline,
            "simulator never finished its updates"
        );
    }
    loop {
        let mut diff = None;
        for (c, depth) in clients.iter_mut() {
            c.pump(Duration::from_millis(50));
            for info in c.symbols.clone() {
                let want = cut(&truth(sim, &info), *depth);
                let have = c.top(info.sid, *depth);
                if have.as_ref() != Some(&want) {
                    diff = Some(format!(
                        "{} depth {depth}: client {:?}\n truth {:?}",
                        info.symbol,
                        have.map(|h| (
                            h.0.into_iter().take(3).collect::<Vec<_>>(),
                            h.1.into_iter().take(3).collect::<Vec<_>>()
                        )),
                        (
                            want.0.iter().take(3).collect::<Vec<_>>(),
                            want.1.iter().take(3).collect::<Vec<_>>()
                        ),
                    ));
                }
            }
        }
        if diff.is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "books did not converge: {}",
            diff.unwrap_or_default()
        );
    }
}
