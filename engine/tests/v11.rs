//! Protocol 1.1 over real loopback sockets: book checksums (§3.2) and the stream numbering that
//! resume relies on (a position names exactly one book state).

#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Client, Daemon, Levels, converge, cut, pump_until, simulator, truth};
use serde_json::json;
use tickcast_bench::control::Reply;

/// CRC-32 (IEEE, reflected, as zlib), bit by bit: the test's own implementation.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// §3.2 for a client of `depth` holding `book`: top `min(10, depth)` (10 for depth 0) levels of
/// each side, bids then asks, `i64` price and qty little-endian.
fn checksum(book: &Levels, depth: usize) -> u32 {
    let n = if depth == 0 { 10 } else { depth.min(10) };
    let mut bytes = Vec::new();
    for (px, qty) in book.0.iter().take(n).chain(book.1.iter().take(n)) {
        bytes.extend_from_slice(&px.to_le_bytes());
        bytes.extend_from_slice(&qty.to_le_bytes());
    }
    crc32(&bytes)
}

#[test]
fn every_book_record_carries_the_checksum_of_the_clients_book() {
    let sim = simulator(6, 4_000.0, Some(3_000), 11);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let mut clients: Vec<(Client, usize)> = [("", 1), ("", 10), ("", 0), ("format=json", 25)]
        .into_iter()
        .map(|(q, depth)| (Client::connect(&d.url(q)), depth))
        .collect();
    for (c, depth) in &mut clients {
        let reply = c.subscribe(1, &["*"], *depth as u16);
        assert!(matches!(reply, Reply::Subscribed { .. }), "{reply:?}");
    }
    {
        let mut refs: Vec<(&mut Client, usize)> =
            clients.iter_mut().map(|(c, d)| (c, *d)).collect();
        converge(&sim, &mut refs);
    }
    for (c, depth) in &clients {
        // Every book record was checked against the bench's independent book and CRC.
        assert!(c.seq_errors.is_empty(), "depth {depth}: {:?}", c.seq_errors);
        assert_eq!(c.state.checksum_mismatches(), 0);
        assert!(
            c.state.checksums() > 100,
            "depth {depth}: only {} checksums",
            c.state.checksums()
        );
        // And the last one of each symbol equals the test's own CRC of the truth.
        for info in &c.symbols {
            let want = checksum(&cut(&truth(&sim, info), *depth), *depth);
            assert_eq!(
                c.last_crc.get(&info.sid),
                Some(&want),
                "{} depth {depth}",
                info.symbol
            );
        }
    }
}

/// Issue 11's trap: subscribe at depth 10, note the seq, unsubscribe, let the book move,
/// subscribe again: the new snapshot holds a different book, so it must carry another seq.
#[test]
fn a_resubscribed_stream_never_reuses_a_seq_for_another_book() {
    let sim = simulator(3, 2_000.0, None, 5);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut c = Client::connect(&d.url(""));
    // Books only: a trades stream resubscribed continues from the live point (a jump).
    c.send(json!({"op":"subscribe","id":1,"symbols":["*"],"channels":["book"],"depth":10}));
    let Reply::Subscribed { symbols, .. } = c.reply(1) else {
        panic!("not subscribed")
    };
    let sid = symbols[0].sid;
    let name = symbols[0].symbol.clone();
    pump_until(&mut [&mut c], "the first snapshot", |c| {
        c.state.book(sid).is_some()
    });
    c.pump(Duration::from_millis(300));
    let (held_seq, held_book) = (
        c.state.book_seq(sid).expect("seq"),
        c.top(sid, 10).expect("book"),
    );
    c.send(json!({"op":"unsubscribe","id":2,"symbols":[name]}));
    assert!(matches!(c.reply(2), Reply::Unsubscribed { .. }));
    c.pump(Duration::from_millis(1_500));
    let before = c.snapshots.len();
    c.send(json!({"op":"subscribe","id":3,"symbols":[name],"channels":["book"],"depth":10}));
    let _ = c.reply(3);
    pump_until(&mut [&mut c], "the second snapshot", |c| {
        c.snapshots[before..].iter().any(|s| s.0 == sid)
    });
    let (_, seq, book) = c.snapshots[before..]
        .iter()
        .find(|s| s.0 == sid)
        .cloned()
        .expect("snapshot");
    assert_ne!(
        book, held_book,
        "the book did not move in 1.5 s at 2,000 updates/s"
    );
    assert!(
        seq > held_seq,
        "snapshot seq {seq} for a different book than the one held at {held_seq}"
    );
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
}
