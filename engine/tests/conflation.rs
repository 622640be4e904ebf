//! Conflation over loopback (protocol 1.1 §3.3, docs/protocol.md §5): the real binary, a real
//! feed-sim and independent clients (the bench crate's decoder checks every seq and checksum).
//!
//! - a slow reader (4 KiB receive window, 20 KB/s) is moved to conflated snapshots, keeps every
//!   trade, holds at every snapshot exactly the book a full-rate client held at that seq, and
//!   once the feed stops goes `live` and ends equal to `GET /book`; the full-rate client on the
//!   same shard loses nothing;
//! - a `max_hz: 5` subscriber of streams changing hundreds of times a second gets at most 5 book
//!   messages per second per stream (plus one for a tick boundary) and ends equal to the truth;
//! - a client subscribing to every one of 4,000 symbols at depth 0, at default settings, is not
//!   evicted by the snapshot burst and ends equal to the truth.
//!
//! (`cargo test -p tickcast --test conflation`)

#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Client, Daemon, PATIENCE, converge, pump_until, simulator};
use serde_json::json;
use tickcast_bench::control::Reply;

fn symbol_list(addr: &str) -> Vec<String> {
    let mut c = Client::connect(addr);
    c.send(json!({"op":"symbols","id":1}));
    match c.reply(1) {
        Reply::Symbols { symbols, .. } => symbols.into_iter().map(|s| s.symbol).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

/// A client whose socket has a 4 KiB receive buffer.
fn tiny_window_client(d: &Daemon) -> Client {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&d.addr.into()).expect("connect");
    Client::connect_with(&d.url(""), sock.into())
}

/// Errors of the independent checker other than the seq jumps a conflated snapshot is allowed
/// (each is a new base): checksum mismatches, trade gaps, deltas out of sequence.
fn real_errors(c: &Client) -> Vec<&String> {
    c.seq_errors.iter().collect()
}

#[test]
fn slow_reader_conflates_keeps_trades_and_a_correct_book_then_goes_live() {
    // Long enough for the reader to fall behind on a loaded machine; the slow phase ends once
    // it was told `conflating` and has read slowly for 2 s more.
    let sim = simulator(50, 5_000.0, Some(100_000), 21);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        // Soft mark 256 KiB: the slow reader (~110 KB/s short) climbs in ~2.5 s, while the
        // full-rate client, pumped by this same thread, has ~2 s of slack on a loaded machine
        // before it, too, would be moved (it must lose nothing).
        "--max-outbuf-bytes",
        "1048576",
        "--send-buffer-bytes",
        "4096",
    ]);
    // The 40 least busy symbols (the feed's popularity is Zipf): their trades alone (~140/s,
    // ~9 KB/s) fit a 20 KB/s reader, their deltas (~1,750/s) do not.
    let all = symbol_list(&d.url(""));
    let picked: Vec<&str> = all.iter().skip(10).map(String::as_str).collect();
    let mut fast = Client::connect(&d.url(""));
    fast.history = Some(HashMap::new());
    let r = fast.subscribe(1, &picked, 10);
    assert!(matches!(r, Reply::Subscribed { .. }), "{r:?}");
    let mut slow = tiny_window_client(&d);
    slow.send(json!({"op":"subscribe","id":1,"symbols":picked,"depth":10}));
    let start = Instant::now();
    const RATE: f64 = 20_000.0;
    let mut conflating_at: Option<Instant> = None;
    while !sim.is_done() && conflating_at.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        assert!(start.elapsed() < 2 * PATIENCE, "the feed never finished");
        if slow.bytes as f64 <= RATE * start.elapsed().as_secs_f64() {
            assert!(slow.step(), "slow reader closed: {:?}", slow.close);
        }
        if conflating_at.is_none()
            && slow
                .notices
                .iter()
                .any(|n| n.contains(r#""op":"conflating""#))
        {
            conflating_at = Some(Instant::now());
        }
        fast.pump(Duration::from_millis(5));
    }
    assert!(
        slow.notices
            .iter()
            .any(|n| n.contains(r#""op":"conflating""#)),
        "never conflating: the test proves nothing ({} bytes read)",
        slow.bytes
    );
    // It catches up (reads freely now): `live`, then books equal to the truth.
    // (The full-rate client, the one with a history, keeps reading meanwhile.)
    pump_until(&mut [&mut slow, &mut fast], "live", |c| {
        c.history.is_some() || c.notices.iter().any(|n| n.contains(r#""op":"live""#))
    });
    converge(&sim, &mut [(&mut slow, 10), (&mut fast, 10)]);
    assert!(slow.close.is_none() && fast.close.is_none());
    assert_eq!(d.metric("tickcast_evictions_total"), 0);
    assert!(d.metric("tickcast_ladder_to_conflating_total") >= 1);
    assert!(d.metric("tickcast_ladder_to_live_total") >= 1);
    // Every trade in order and every checksum right (the checker reports both).
    assert!(real_errors(&slow).is_empty(), "{:?}", real_errors(&slow));
    // The full-rate client lost nothing: no gap, no replaced book.
    assert!(fast.seq_errors.is_empty(), "{:?}", fast.seq_errors);
    assert!(fast.replaced.is_empty(), "{:?}", fast.replaced);
    // At every snapshot, the slow reader held exactly what the full-rate client held at that
    // seq.
    let history = fast.history.as_ref().expect("history");
    let mut compared = 0;
    for (sid, seq, levels) in &slow.snapshots {
        if let Some(want) = history.get(&(*sid, *seq)) {
            assert_eq!(levels, want, "sid {sid} seq {seq}");
            compared += 1;
        }
    }
    assert!(
        compared > picked.len(),
        "only {compared} snapshots compared"
    );
}

#[test]
fn max_hz_5_subscriber_never_gets_more_than_5_book_messages_a_second_per_stream() {
    // The issue's case: a `max_hz: 5` subscriber of the busiest symbols of a feed fast enough
    // that conflation bites (each of them changes hundreds of times a second).
    let sim = simulator(6, 6_000.0, Some(36_000), 31);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let all = symbol_list(&d.url(""));
    let picked: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
    let mut c = Client::connect(&d.url(""));
    c.send(json!({"op":"subscribe","id":1,"symbols":picked,"depth":10,"max_hz":5}));
    // The reply echoes the grant per symbol.
    let deadline = Instant::now() + PATIENCE;
    let mut raw = String::new();
    while raw.is_empty() {
        assert!(Instant::now() < deadline);
        if let Ok(tungstenite::Message::Text(t)) = c.ws.read() {
            if t.contains(r#""op":"subscribed""#) {
                raw = t.to_string();
            }
        }
    }
    let v: serde_json::Value = serde_json::from_str(&raw).expect("json");
    let infos: Vec<tickcast_bench::control::SymbolInfo> =
        serde_json::from_value(v["symbols"].clone()).expect("symbols");
    for (s, info) in v["symbols"].as_array().expect("list").iter().zip(&infos) {
        assert_eq!(s["max_hz"], json!(5), "{raw}");
        c.decimals
            .insert(info.symbol.clone(), (info.px_decimals, info.qty_decimals));
    }
    c.symbols = infos;
    converge(&sim, &mut [(&mut c, 10)]);
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
    // Only snapshots: no delta reached it.
    assert_eq!(c.deltas, 0);
    c.assert_book_messages_at_most(5);
}

#[test]
fn star_subscription_to_4000_symbols_at_depth_0_is_not_evicted_by_its_snapshots() {
    // Issue 12: at default settings, one client subscribing to every symbol of a 4,000-symbol
    // feed at depth 0 was closed with 1013 before it received a single record.
    let sim = simulator(4_000, 4_000.0, Some(16_000), 41);
    let d = Daemon::start(&["--feed", &sim.feed_url()]);
    let mut c = Client::connect(&d.url(""));
    c.send(json!({"op":"subscribe","id":1,"symbols":["*"],"depth":0}));
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.symbols.len() < 4_000 || c.symbols.iter().any(|s| c.state.book(s.sid).is_none()) {
        assert!(Instant::now() < deadline, "snapshots never all arrived");
        assert!(c.step(), "closed: {:?}", c.close);
    }
    converge(&sim, &mut [(&mut c, 0)]);
    assert!(c.close.is_none());
    assert_eq!(d.metric("tickcast_evictions_total"), 0);
    assert!(
        c.seq_errors.is_empty(),
        "{:?}",
        &c.seq_errors[..c.seq_errors.len().min(5)]
    );
}

/// Subscribes `c` to every symbol at depth 10 with `max_hz: 5` (and `resume` if given);
/// returns the reply's epoch and symbols.
fn subscribe_5hz(
    c: &mut Client,
    id: u64,
    resume: Option<serde_json::Value>,
) -> (String, Vec<tickcast_bench::control::SymbolInfo>) {
    let mut req = json!({"op":"subscribe","id":id,"symbols":["*"],"depth":10,"max_hz":5});
    if let Some(r) = resume {
        req["resume"] = r;
    }
    c.send(req);
    match c.reply(id) {
        Reply::Subscribed {
            epoch: Some(epoch),
            symbols,
            ..
        } => (epoch, symbols),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_max_hz_subscription_resumes_trades_exactly_and_its_book_from_the_current_snapshot() {
    // Before: a conflated subscription's book was looked up in the replay window of the deltas
    // stream at its depth, which nobody watched (its subscriber takes the conflated topic), so
    // a resume was answered `recovered: false`.
    let sim = simulator(6, 2_000.0, Some(16_000), 51);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let mut c = Client::connect(&d.url(""));
    let (epoch, _) = subscribe_5hz(&mut c, 1, None);
    pump_until(&mut [&mut c], "snapshots and trades", |c| {
        c.symbols.iter().all(|s| c.state.book_seq(s.sid).is_some()) && c.records > 300
    });
    let before = c.resume_positions(&epoch, true);
    let mut c = c.reset_and_reconnect(&d.url(""));
    // Away for a while: the books move and trades happen.
    std::thread::sleep(Duration::from_millis(300));
    let (got, symbols) = subscribe_5hz(&mut c, 2, Some(before.clone()));
    assert_eq!(got, epoch);
    assert_eq!(symbols.len(), 6);
    for s in &symbols {
        assert_eq!(s.recovered, Some(true), "{}", s.symbol);
    }
    pump_until(&mut [&mut c], "the resumed streams", |c| {
        c.firsts.keys().filter(|(_, trades)| !trades).count() == 6
    });
    for s in &symbols {
        let pos = &before["streams"][&s.symbol];
        // Trades: exactly what it missed, from its position on.
        if let (Some(held), Some(&(_, first))) =
            (pos["trades"].as_u64(), c.firsts.get(&(s.sid, true)))
        {
            assert_eq!(first, held + 1, "{} trades", s.symbol);
        }
        // Book: the stream's current snapshot (what the next tick would have carried).
        let held = pos["book"].as_u64().expect("book position");
        let &(kind, first) = c.firsts.get(&(s.sid, false)).expect("book");
        assert_eq!(kind, 1, "{}: a replacing snapshot", s.symbol);
        assert!(first > held, "{}: {first} after {held}", s.symbol);
    }
    converge(&sim, &mut [(&mut c, 10)]);
    assert!(c.close.is_none());
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
    assert_eq!(c.state.checksum_mismatches(), 0);
    assert_eq!(c.deltas, 0, "a max_hz subscription gets no deltas");
}
