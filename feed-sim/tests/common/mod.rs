//! Helpers shared by the integration tests: a feed client that rebuilds books from the JSON
//! stream and checks the sequence rules as it goes, and a tiny HTTP GET.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use feed_sim::{Simulator, parse_decimal};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

/// Upper bound for any single wait in the tests (they never assert on time).
pub const WAIT: Duration = Duration::from_secs(30);

/// A book as rebuilt by a client: price → qty, scaled integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    pub px_decimals: u8,
    pub qty_decimals: u8,
    pub seq: u64,
    pub bids: BTreeMap<i64, i64>,
    pub asks: BTreeMap<i64, i64>,
    /// Fills announced by `trade` messages not yet followed by their `l2update`.
    pub pending_fills: Vec<(i64, i64, String)>,
    pub last_trade_id: Option<u64>,
    pub updates: u64,
    pub trades: u64,
    pub heartbeats: u64,
}

impl Book {
    pub fn best_bid(&self) -> Option<i64> {
        self.bids.keys().next_back().copied()
    }
    pub fn best_ask(&self) -> Option<i64> {
        self.asks.keys().next().copied()
    }
    /// `n`-th level of a side, best first.
    pub fn nth(&self, side: &str, n: usize) -> Option<(i64, i64)> {
        match side {
            "buy" => self.bids.iter().rev().nth(n).map(|(p, q)| (*p, *q)),
            _ => self.asks.iter().nth(n).map(|(p, q)| (*p, *q)),
        }
    }
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string {key} in {v}"))
}

pub fn u(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("missing integer {key} in {v}"))
}

pub fn dec(v: &Value, decimals: u8) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    parse_decimal(text, decimals)
        .unwrap_or_else(|| panic!("{text:?} is not a decimal with exactly {decimals} digits"))
}

fn levels(v: &Value, px_decimals: u8, qty_decimals: u8) -> Vec<(i64, i64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("levels not an array: {v}"))
        .iter()
        .map(|l| {
            let pair = l
                .as_array()
                .unwrap_or_else(|| panic!("level not an array: {l}"));
            assert_eq!(pair.len(), 2, "{l}");
            (dec(&pair[0], px_decimals), dec(&pair[1], qty_decimals))
        })
        .collect()
}

/// Parses bids/asks of a snapshot or `/book` body into a book, checking best-first order.
pub fn book_from(v: &Value, px_decimals: u8, qty_decimals: u8) -> Book {
    let bids = levels(&v["bids"], px_decimals, qty_decimals);
    let asks = levels(&v["asks"], px_decimals, qty_decimals);
    assert!(
        bids.windows(2).all(|w| w[0].0 > w[1].0),
        "bids not best first"
    );
    assert!(
        asks.windows(2).all(|w| w[0].0 < w[1].0),
        "asks not best first"
    );
    assert!(
        bids.iter().chain(&asks).all(|l| l.1 > 0),
        "empty level in a book"
    );
    Book {
        px_decimals,
        qty_decimals,
        seq: u(v, "seq"),
        bids: bids.into_iter().collect(),
        asks: asks.into_iter().collect(),
        ..Book::default()
    }
}

/// A feed client rebuilding every book.
pub struct FeedClient {
    pub ws: WebSocket<TcpStream>,
    pub decimals: HashMap<String, (u8, u8)>,
    pub order: Vec<String>,
    pub books: HashMap<String, Book>,
    /// Every live message (after the initial snapshots), verbatim.
    pub live: Vec<String>,
    /// Snapshots received after the initial ones.
    pub extra_snapshots: Vec<Value>,
}

impl FeedClient {
    /// Connects and reads `symbols` plus one snapshot per symbol.
    pub fn connect(sim: &Simulator) -> Self {
        let stream = TcpStream::connect(sim.local_addr()).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let (ws, resp) = tungstenite::client::client(sim.feed_url(), stream).expect("handshake");
        assert_eq!(resp.status().as_u16(), 101);
        let mut c = Self {
            ws,
            decimals: HashMap::new(),
            order: Vec::new(),
            books: HashMap::new(),
            live: Vec::new(),
            extra_snapshots: Vec::new(),
        };
        let first = c.next_json();
        assert_eq!(s(&first, "type"), "symbols");
        for sym in first["symbols"].as_array().expect("symbols array") {
            let name = s(sym, "symbol").to_string();
            let pd = u8::try_from(u(sym, "px_decimals")).expect("px_decimals");
            let qd = u8::try_from(u(sym, "qty_decimals")).expect("qty_decimals");
            c.decimals.insert(name.clone(), (pd, qd));
            c.order.push(name);
        }
        for name in c.order.clone() {
            let snap = c.next_json();
            assert_eq!(s(&snap, "type"), "snapshot");
            assert_eq!(s(&snap, "symbol"), name, "snapshots come in symbol order");
            let (pd, qd) = c.decimals[&name];
            let book = book_from(&snap, pd, qd);
            assert_crossless(&name, &book);
            c.books.insert(name, book);
        }
        c
    }

    pub fn next_text(&mut self) -> String {
        loop {
            match self.ws.read().expect("feed read") {
                Message::Text(t) => return t.as_str().to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    pub fn next_json(&mut self) -> Value {
        let t = self.next_text();
        assert!(!t.contains('\n'), "one message per frame");
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad JSON {t:?}: {e}"))
    }

    /// Reads and applies one live message, checking seq and trade rules. Returns it.
    pub fn step(&mut self) -> Value {
        let text = self.next_text();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"));
        self.live.push(text);
        let sym = s(&v, "symbol").to_string();
        let book = self
            .books
            .get_mut(&sym)
            .unwrap_or_else(|| panic!("message for unannounced symbol {sym}"));
        let (pd, qd) = (book.px_decimals, book.qty_decimals);
        match s(&v, "type") {
            "l2update" => {
                let seq = u(&v, "seq");
                assert_eq!(seq, book.seq + 1, "{sym}: seq must rise by exactly 1");
                book.seq = seq;
                let changes = v["changes"].as_array().expect("changes");
                assert!((1..=4).contains(&changes.len()), "{v}");
                let fills = std::mem::take(&mut book.pending_fills);
                for (px, _, taker) in &fills {
                    let maker = if taker == "buy" { "sell" } else { "buy" };
                    assert!(
                        changes
                            .iter()
                            .any(|c| c[0] == maker && dec(&c[1], pd) == *px),
                        "{sym}: trade at {px} not followed by a change of that level: {v}"
                    );
                }
                for c in changes {
                    let side = c[0].as_str().expect("side");
                    let (px, qty) = (dec(&c[1], pd), dec(&c[2], qd));
                    let map = match side {
                        "buy" => &mut book.bids,
                        "sell" => &mut book.asks,
                        other => panic!("bad side {other}"),
                    };
                    if qty == 0 {
                        assert!(
                            map.remove(&px).is_some(),
                            "{sym}: removed a missing level {px}"
                        );
                    } else {
                        map.insert(px, qty);
                    }
                }
                book.updates += 1;
                assert_crossless(&sym, book);
            }
            "trade" => {
                let id = u(&v, "trade_id");
                if let Some(last) = book.last_trade_id {
                    assert_eq!(id, last + 1, "{sym}: trade_id must rise by 1");
                }
                book.last_trade_id = Some(id);
                let taker = s(&v, "side").to_string();
                let maker = match taker.as_str() {
                    "buy" => "sell",
                    "sell" => "buy",
                    other => panic!("bad taker side {other}"),
                };
                let (px, qty) = (dec(&v["price"], pd), dec(&v["qty"], qd));
                // Earlier fills of this taker emptied their levels, so fill k is at level k.
                let k = book.pending_fills.len();
                let (level_px, level_qty) = book
                    .nth(maker, k)
                    .unwrap_or_else(|| panic!("{sym}: trade against an empty side"));
                assert_eq!(px, level_px, "{sym}: trade not at the touch");
                assert!(
                    qty > 0 && qty <= level_qty,
                    "{sym}: fill larger than the level"
                );
                if let Some(prev) = book.pending_fills.last() {
                    assert_eq!(prev.2, taker, "one taker per update");
                }
                book.pending_fills.push((px, qty, taker));
                book.trades += 1;
            }
            "snapshot" => {
                let snap = book_from(&v, pd, qd);
                assert_eq!(
                    snap.seq, book.seq,
                    "{sym}: snapshot out of order with the stream"
                );
                assert_eq!(
                    snap.bids, book.bids,
                    "{sym}: snapshot bids differ from the rebuilt book"
                );
                assert_eq!(
                    snap.asks, book.asks,
                    "{sym}: snapshot asks differ from the rebuilt book"
                );
                self.extra_snapshots.push(v.clone());
            }
            "heartbeat" => {
                assert_eq!(
                    u(&v, "seq"),
                    book.seq,
                    "{sym}: heartbeat seq differs from the last update's"
                );
                book.heartbeats += 1;
            }
            other => panic!("unexpected message type {other}"),
        }
        v
    }

    /// Reads until every book has reached the seq in `truth` (never beyond).
    pub fn catch_up(&mut self, truth: &HashMap<String, Book>) {
        loop {
            let behind = self
                .books
                .iter()
                .filter(|(sym, b)| {
                    let t = truth[*sym].seq;
                    assert!(b.seq <= t, "{sym}: client seq {} beyond truth {t}", b.seq);
                    b.seq < t
                })
                .count();
            if behind == 0 {
                return;
            }
            self.step();
        }
    }
}

pub fn assert_crossless(sym: &str, b: &Book) {
    let (bid, ask) = (b.best_bid(), b.best_ask());
    assert!(bid.is_some() && ask.is_some(), "{sym}: empty side");
    assert!(bid < ask, "{sym}: crossed book {bid:?} >= {ask:?}");
}

/// GET over a plain TcpStream: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

/// Sends a raw request and reads the response until the server closes: (status, body).
pub fn http_request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(raw.as_bytes()).expect("write request");
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).expect("read response");
    let resp = String::from_utf8(resp).expect("utf-8 response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("response head");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// The truth for every symbol of `client`, via `GET /book/SYMBOL`.
pub fn truth(sim: &Simulator, client: &FeedClient) -> HashMap<String, Book> {
    client
        .order
        .iter()
        .map(|sym| {
            let (status, body) = http_get(sim.local_addr(), &format!("/book/{sym}"));
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("book JSON");
            assert_eq!(s(&v, "symbol"), sym);
            let (pd, qd) = client.decimals[sym];
            (sym.clone(), book_from(&v, pd, qd))
        })
        .collect()
}

/// Waits (bounded) until the simulator reached its update limit.
pub fn wait_done(sim: &Simulator) {
    let deadline = Instant::now() + WAIT;
    while !sim.is_done() {
        assert!(Instant::now() < deadline, "simulator never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
}
