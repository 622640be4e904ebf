//! End to end over real loopback sockets: feed-sim → tickcast (the binary) → independent clients.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Client, Daemon, PATIENCE, converge, http_get, pump_until, raw_http, simulator};
use serde_json::json;
use tickcast_bench::control::Reply;
use tungstenite::Message;

fn names(c: &Client) -> Vec<String> {
    c.symbols.iter().map(|s| s.symbol.clone()).collect()
}

fn symbol_list(addr: &str) -> Vec<String> {
    let mut c = Client::connect(addr);
    c.send(json!({"op":"symbols","id":1}));
    match c.reply(1) {
        Reply::Symbols { symbols, .. } => symbols.into_iter().map(|s| s.symbol).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn clients_rebuild_exact_books_at_depth_0_and_10_and_json() {
    let sim = simulator(12, 4_000.0, Some(4_000), 7);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let all = symbol_list(&d.url(""));
    assert_eq!(all.len(), 12);
    let picked: Vec<&str> = all.iter().take(4).map(String::as_str).collect();

    let mut full = Client::connect(&d.url(""));
    let mut top10 = Client::connect(&d.url("format=binary"));
    let mut json25 = Client::connect(&d.url("format=json"));
    assert!(matches!(
        full.subscribe(1, &picked, 0),
        Reply::Subscribed { .. }
    ));
    assert!(matches!(
        top10.subscribe(1, &picked, 10),
        Reply::Subscribed { .. }
    ));
    assert!(matches!(
        json25.subscribe(1, &picked, 25),
        Reply::Subscribed { .. }
    ));
    assert_eq!(names(&full), picked);

    converge(
        &sim,
        &mut [(&mut full, 0), (&mut top10, 10), (&mut json25, 25)],
    );
    for c in [&full, &top10, &json25] {
        assert!(
            c.seq_errors.is_empty(),
            "sequence errors: {:?}",
            c.seq_errors
        );
        assert!(c.records > 100, "only {} records", c.records);
        assert!(c.records > c.messages, "records were not batched at all");
        // Trades arrive on their own stream, sequence-checked like the books.
        assert!(
            c.symbols.iter().any(|s| c.state.trade_count(s.sid) > 0),
            "no trades at all"
        );
    }
}

#[test]
fn first_record_per_book_is_a_snapshot_then_seq_rises_by_one() {
    let sim = simulator(5, 2_000.0, None, 3);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut c = Client::connect(&d.url(""));
    let Reply::Subscribed { symbols, .. } = c.subscribe(9, &["*"], 25) else {
        panic!("not subscribed")
    };
    assert_eq!(symbols.len(), 5);
    // StreamState flags a delta before a snapshot and any seq step other than +1.
    c.pump(Duration::from_secs(2));
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
    assert!(c.records > 0);
    for s in &symbols {
        assert!(
            c.state.book(s.sid).is_some(),
            "no snapshot for {}",
            s.symbol
        );
    }
}

#[test]
fn bad_requests_get_error_codes_and_the_connection_stays_open() {
    let sim = simulator(3, 500.0, None, 1);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut c = Client::connect(&d.url(""));
    let r = c.subscribe(1, &["NOPE-USD"], 25);
    let Reply::Error { code, .. } = r else {
        panic!("expected error, got {r:?}")
    };
    assert_eq!(code, "unknown_symbol");
    c.send(json!({"op":"subscribe","id":2,"symbols":["*"],"depth":7}));
    let Reply::Error { code, .. } = c.reply(2) else {
        panic!()
    };
    assert_eq!(code, "invalid_depth");
    c.send(json!({"op":"teleport","id":3}));
    let Reply::Error { code, .. } = c.reply(3) else {
        panic!()
    };
    assert_eq!(code, "unknown_op");
    c.ws.send(Message::text("{not json")).expect("send");
    c.send(json!({"op":"ping","id":4}));
    assert_eq!(c.reply(4), Reply::Pong { id: 4 });
    assert!(
        c.replies
            .iter()
            .any(|r| matches!(r, Reply::Error { code, .. } if code == "bad_json"))
    );
}

#[test]
fn binary_data_frame_is_closed_with_1003() {
    let sim = simulator(3, 200.0, None, 1);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut c = Client::connect(&d.url(""));
    c.ws.send(Message::binary(vec![1u8, 2, 3])).expect("send");
    assert_eq!(c.until_closed(PATIENCE), Some(1003));
}

#[test]
fn unmasked_frame_is_closed_with_1002() {
    let sim = simulator(3, 200.0, None, 1);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut s = TcpStream::connect(d.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // An unmasked text frame "hi".
    s.write_all(&[0x81, 0x02, b'h', b'i']).expect("write frame");
    let mut frame = [0u8; 4];
    s.read_exact(&mut frame).expect("close frame");
    assert_eq!(frame[0], 0x88, "close opcode");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1002);
}

#[test]
fn slow_subscriber_is_evicted_with_1013_and_the_other_gets_everything() {
    let sim = simulator(10, 10_000.0, None, 5);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--max-outbuf-bytes",
        "1048576",
    ]);
    // The bound (1 MiB) leaves the good client seconds of slack on a loaded machine; the slow
    // client has a tiny receive window so that the kernel buffers fill fast.
    let mut slow = tiny_window_client(&d);
    // The good client is on the same shard (there is one) and reads every record it is sent.
    let mut good = Client::connect(&d.url(""));
    let all = symbol_list(&d.url(""));
    let picked: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
    assert!(matches!(
        good.subscribe(1, &picked, 10),
        Reply::Subscribed { .. }
    ));
    slow.send(json!({"op":"subscribe","id":1,"symbols":["*"],"depth":0}));
    // The slow client stops reading; the good one reads until the eviction is counted.
    wait_for_eviction(&d, || {
        assert!(
            good.pump(Duration::from_millis(200)),
            "good client closed: {:?}",
            good.close
        );
    });
    let before = good.records;
    good.pump(Duration::from_secs(1));
    assert!(
        good.records > before,
        "good client stopped receiving (close: {:?})",
        good.close
    );
    assert!(good.seq_errors.is_empty(), "{:?}", good.seq_errors);
    assert!(good.close.is_none());
    // The slow client, reading again, finds the data it was owed and then close 1013.
    assert_eq!(slow.until_closed(PATIENCE), Some(1013));
    assert!(slow.seq_errors.is_empty(), "{:?}", slow.seq_errors);
}

/// A client whose socket has a 4 KiB receive buffer: once it stops reading, the kernel's
/// buffers fill fast and its out-buffer bound is reached soon.
fn tiny_window_client(d: &Daemon) -> Client {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&d.addr.into()).expect("connect");
    Client::connect_with(&d.url(""), sock.into())
}

/// Runs `meanwhile` until the daemon has counted an eviction (at most [`PATIENCE`]).
fn wait_for_eviction(d: &Daemon, mut meanwhile: impl FnMut()) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while d.metric("tickcast_evictions_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "slow client never evicted"
        );
        meanwhile();
    }
}

#[test]
fn evicted_subscriber_that_resumes_after_the_close_timeout_still_gets_1013() {
    let sim = simulator(10, 10_000.0, None, 6);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--max-outbuf-bytes",
        "65536",
        "--close-timeout",
        "1",
        "--evict-timeout",
        "60",
    ]);
    let mut slow = tiny_window_client(&d);
    slow.send(json!({"op":"subscribe","id":1,"symbols":["*"],"depth":0}));
    // The client stops reading until it is evicted...
    wait_for_eviction(&d, || std::thread::sleep(Duration::from_millis(50)));
    // ...and for well past the close timeout: the close frame is still behind the data that
    // fills the socket buffers, and the eviction keeps the socket for `evict-timeout`.
    std::thread::sleep(Duration::from_secs(3));
    // Reading again, it gets what it was owed (a valid stream) and then the 1013 close (not an
    // RST or a bare EOF).
    assert_eq!(slow.until_closed(PATIENCE), Some(1013));
    assert!(slow.seq_errors.is_empty(), "{:?}", slow.seq_errors);
}

#[test]
fn many_subscribers_at_once_share_snapshots_without_a_ring_resync() {
    // 48 connections × 24 symbols = 1,152 book subscriptions at once; one snapshot each would
    // not fit the 1,024-message ring. Requests are coalesced per topic: 24 snapshots.
    let sim = simulator(24, 500.0, None, 8);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--ring-capacity",
        "1024",
    ]);
    let n_symbols = symbol_list(&d.url("")).len();
    let mut clients: Vec<Client> = (0..48).map(|_| Client::connect(&d.url(""))).collect();
    for c in &mut clients {
        c.send(json!({"op":"subscribe","id":1,"symbols":["*"],"depth":10}));
    }
    {
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        pump_until(&mut refs, "a snapshot of every symbol", |c| {
            c.symbols.len() == n_symbols && c.symbols.iter().all(|s| c.state.book(s.sid).is_some())
        });
    }
    // Some deltas on top of the snapshots.
    for c in &mut clients {
        c.pump(Duration::from_millis(100));
    }
    assert_eq!(d.metric("tickcast_ring_resyncs_total"), 0);
    for c in &clients {
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        assert!(c.replaced.is_empty(), "snapshot replaced: {:?}", c.replaced);
        assert!(c.close.is_none());
    }
}

#[test]
fn two_shards_serve_the_same_streams() {
    let sim = simulator(6, 3_000.0, Some(2_500), 11);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let all = symbol_list(&d.url(""));
    let picked: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(&d.url(""))).collect();
    for c in &mut clients {
        assert!(matches!(
            c.subscribe(1, &picked, 10),
            Reply::Subscribed { .. }
        ));
    }
    let s0 = d.metric_labelled("tickcast_upgrades_total", "shard=\"0\"");
    let s1 = d.metric_labelled("tickcast_upgrades_total", "shard=\"1\"");
    assert!(
        s0 > 0 && s1 > 0,
        "connections not spread over both shards: {s0} / {s1}"
    );
    let mut refs: Vec<(&mut Client, usize)> = clients.iter_mut().map(|c| (c, 10)).collect();
    converge(&sim, &mut refs);
    let first = clients[0].state.book_seq(clients[0].symbols[0].sid);
    for c in &clients {
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        // Same stream, same seq, wherever the client landed.
        assert_eq!(c.state.book_seq(c.symbols[0].sid), first);
    }
}

#[test]
fn plain_http_routes_and_bad_upgrades() {
    let sim = simulator(2, 100.0, None, 1);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    assert_eq!(http_get(d.addr, "/healthz").expect("get").0, 200);
    assert_eq!(http_get(d.addr, "/nope").expect("get").0, 404);
    assert_eq!(http_get(d.addr, "/ws").expect("get").0, 426);
    let (status, body) = http_get(d.addr, "/metrics").expect("get");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE tickcast_connections gauge"));
    let bad_version = raw_http(
        d.addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    .expect("raw");
    assert_eq!(bad_version.0, 426);
    let no_key = raw_http(
        d.addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("raw");
    assert_eq!(no_key.0, 400);
    let bad_format = raw_http(
        d.addr,
        "GET /ws?format=xml HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("raw");
    assert_eq!(bad_format.0, 400);
    let garbage = raw_http(d.addr, "\x16\x03\x01garbage\r\n\r\n").expect("raw");
    assert_eq!(garbage.0, 400);
    // The daemon is still fine.
    assert_eq!(http_get(d.addr, "/healthz").expect("get").0, 200);
}

/// Enough subscribers of everything that a shard's flush pass is drained again in its middle
/// (rolling drains, every 64 connections), plain and JSON: every client still rebuilds exact
/// books with each stream's seq rising by one.
#[test]
fn many_subscribers_of_everything_get_exact_books_through_rolling_drains() {
    let sim = simulator(5, 3_000.0, Some(2_000), 21);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut clients: Vec<Client> = (0..150)
        .map(|i| {
            let query = if i % 75 == 7 { "format=json" } else { "" };
            let mut c = Client::connect(&d.url(query));
            assert!(matches!(
                c.subscribe(1, &["*"], 25),
                Reply::Subscribed { .. }
            ));
            c
        })
        .collect();
    while !sim.is_done() {
        for c in clients.iter_mut() {
            c.pump(Duration::from_millis(5));
        }
    }
    // Then each client in turn until its books are the simulator's (150 clients pumped in
    // rounds, as `converge` does, would take longer than its patience).
    for (i, c) in clients.iter_mut().enumerate() {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let diff = c.symbols.iter().find(|info| {
                c.top(info.sid, 25).as_ref() != Some(&common::cut(&common::truth(&sim, info), 25))
            });
            let Some(info) = diff else { break };
            assert!(
                std::time::Instant::now() < deadline,
                "client {i}: {} did not converge",
                info.symbol
            );
            assert!(c.pump(Duration::from_millis(50)), "client {i} closed");
        }
        assert!(c.seq_errors.is_empty(), "client {i}: {:?}", c.seq_errors);
        assert!(c.records > c.messages, "records were not batched at all");
    }
}
