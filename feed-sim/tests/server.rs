//! The simulator over real loopback sockets: feed, truth, HTTP errors, fan-out, shutdown.

mod common;

use std::net::SocketAddr;

use common::{FeedClient, http_get, http_request, truth, wait_done};
use feed_sim::{SimConfig, SimError, Simulator};
use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(symbols: usize, updates: u64, rate: f64) -> SimConfig {
    SimConfig {
        listen: loopback(),
        symbols,
        seed: 7,
        rate,
        updates: Some(updates),
        depth: 120,
        ..SimConfig::default()
    }
}

#[test]
fn feed_rebuilds_the_truth() {
    let sim = Simulator::start(config(20, 6_000, 50_000.0)).expect("start");
    assert!(sim.feed_url().starts_with("ws://127.0.0.1:"));
    assert!(sim.feed_url().ends_with("/feed"));
    let mut client = FeedClient::connect(&sim);
    assert_eq!(client.order.len(), 20);
    assert_eq!(client.order[0], "BTC-USD");
    for book in client.books.values() {
        assert!(book.bids.len() >= 90 && book.asks.len() >= 90);
    }
    wait_done(&sim);
    assert_eq!(sim.updates_sent(), 6_000);
    let truth = truth(&sim, &client);
    client.catch_up(&truth);
    for (sym, t) in &truth {
        let mine = &client.books[sym];
        assert_eq!(mine.seq, t.seq, "{sym}");
        assert_eq!(mine.bids, t.bids, "{sym} bids");
        assert_eq!(mine.asks, t.asks, "{sym} asks");
    }
    let updates: u64 = client.books.values().map(|b| b.updates).sum();
    let trades: u64 = client.books.values().map(|b| b.trades).sum();
    assert!(
        updates > 0 && trades > 0,
        "live stream had {updates} updates, {trades} trades"
    );
    // Frozen: a second look at the truth is identical.
    let again = common::truth(&sim, &client);
    assert_eq!(again, truth);
    sim.shutdown();
}

#[test]
fn plain_http_routes() {
    let sim = Simulator::start(config(5, 100, 10_000.0)).expect("start");
    let addr = sim.local_addr();
    let (status, body) = http_get(addr, "/book/NOPE-USD");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_get(addr, "/book/");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = http_get(addr, "/elsewhere");
    assert_eq!(status, 404);
    let (status, body) = http_get(addr, "/book/ETH-USD?pretty=1");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["symbol"], "ETH-USD");
    let (status, _) = http_request(
        addr,
        "POST /book/ETH-USD HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 405);
    let (status, _) = http_get(addr, "/feed");
    assert_eq!(status, 400, "/feed without an upgrade");
    let (status, _) = http_request(
        addr,
        "GET /feed HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 426);
    let (status, _) = http_request(addr, "\x16\x03\x01garbage\r\n\r\n");
    assert_eq!(status, 400);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    let (status, _) = http_request(addr, &huge);
    assert_eq!(status, 431);
    sim.shutdown();
}

#[test]
fn every_client_gets_the_same_stream() {
    let sim = Simulator::start(config(10, 4_000, 8_000.0)).expect("start");
    let mut a = FeedClient::connect(&sim);
    let mut b = FeedClient::connect(&sim);
    wait_done(&sim);
    let truth = truth(&sim, &a);
    a.catch_up(&truth);
    b.catch_up(&truth);
    for (sym, t) in &truth {
        for c in [&a, &b] {
            let mine = &c.books[sym];
            assert!(
                mine.seq == t.seq && mine.bids == t.bids && mine.asks == t.asks,
                "{sym} differs from the truth"
            );
        }
    }
    // b joined later: its live stream is a suffix of a's, byte for byte.
    assert!(!b.live.is_empty(), "second client joined after the end");
    let start = a
        .live
        .iter()
        .position(|m| *m == b.live[0])
        .expect("b's first live message is in a's stream");
    assert_eq!(a.live[start..], b.live[..]);
    sim.shutdown();
}

#[test]
fn snapshot_requests_are_answered_in_order_and_bad_messages_ignored() {
    let sim = Simulator::start(config(8, 3_000, 4_000.0)).expect("start");
    let mut c = FeedClient::connect(&sim);
    for junk in [
        Message::text("not json"),
        Message::text(r#"{"op":"nope"}"#),
        Message::text(r#"{"op":"snapshot"}"#),
        Message::text(r#"{"op":"snapshot","symbol":"NOPE-USD"}"#),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        c.ws.send(junk).expect("send");
    }
    // Mid-stream: the answer must line up with the updates around it (checked in `step`).
    c.ws.send(Message::text(r#"{"op":"snapshot","symbol":"ETH-USD"}"#))
        .expect("send");
    while c.extra_snapshots.is_empty() {
        c.step();
    }
    assert_eq!(c.extra_snapshots[0]["symbol"], "ETH-USD");
    // After the end: a fresh snapshot equals the truth.
    wait_done(&sim);
    let truth = truth(&sim, &c);
    c.catch_up(&truth);
    c.ws.send(Message::text(r#"{"op":"snapshot","symbol":"SOL-USD"}"#))
        .expect("send");
    let v = c.step();
    assert_eq!(v["type"], "snapshot");
    assert_eq!(v["symbol"], "SOL-USD");
    assert_eq!(c.extra_snapshots.len(), 2);
    let sol = common::book_from(
        &v,
        truth["SOL-USD"].px_decimals,
        truth["SOL-USD"].qty_decimals,
    );
    assert_eq!(sol.seq, truth["SOL-USD"].seq);
    assert_eq!(
        (&sol.bids, &sol.asks),
        (&truth["SOL-USD"].bids, &truth["SOL-USD"].asks)
    );
    sim.shutdown();
}

#[test]
fn shutdown_closes_feed_clients_with_1001() {
    let sim = Simulator::start(config(3, 50, 10_000.0)).expect("start");
    let mut c = FeedClient::connect(&sim);
    wait_done(&sim);
    let truth = truth(&sim, &c);
    c.catch_up(&truth);
    sim.shutdown();
    let close = match c.ws.read() {
        Ok(Message::Close(frame)) => frame,
        Ok(other) => panic!("unexpected message after the end: {other:?}"),
        Err(e) => panic!("no close frame: {e}"),
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
}

#[test]
fn busy_port_is_a_bind_error() {
    let first = Simulator::start(config(2, 0, 1.0)).expect("start");
    assert!(first.is_done() || first.updates_sent() == 0);
    let cfg = SimConfig {
        listen: first.local_addr(),
        ..config(2, 0, 1.0)
    };
    match Simulator::start(cfg) {
        Err(SimError::Bind { addr, .. }) => assert_eq!(addr, first.local_addr()),
        other => panic!("expected a bind error, got {other:?}"),
    }
    let bad = SimConfig {
        rate: f64::NAN,
        ..config(2, 0, 1.0)
    };
    assert!(matches!(
        Simulator::start(bad),
        Err(SimError::InvalidConfig(_))
    ));
    drop(first);
}
