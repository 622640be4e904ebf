//! Faults, heartbeats and restarts over real loopback sockets.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{FeedClient, WAIT, truth, wait_done};
use feed_sim::{Faults, SimConfig, Simulator, UNKNOWN_SYMBOL};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

fn config(symbols: usize, updates: u64, rate: f64, seed: u64, faults: Faults) -> SimConfig {
    SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        symbols,
        seed,
        rate,
        updates: Some(updates),
        depth: 100,
        faults,
        ..SimConfig::default()
    }
}

/// A raw feed reader: every text frame as is, including malformed ones.
fn raw_client(sim: &Simulator) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(sim.local_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let (ws, _) = tungstenite::client::client(sim.feed_url(), stream).expect("handshake");
    ws
}

/// Reads frames until the simulator is done and then for half a second more (long enough for
/// the end of the stream to arrive); returns the texts.
fn read_all(sim: &Simulator, ws: &mut WebSocket<TcpStream>) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut done_at = None;
    loop {
        assert!(Instant::now() < deadline, "simulator never finished");
        if done_at.is_none() && sim.is_done() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
            return out;
        }
        match ws.read() {
            Ok(Message::Text(t)) => out.push(t.as_str().to_owned()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("feed read failed: {e}"),
        }
    }
}

/// The live stream without heartbeats (whose timing depends on the clock) and timestamps.
fn comparable(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.contains("\"type\":\"heartbeat\""))
        .map(|l| {
            let mut s = l.clone();
            while let Some(at) = s.find("\"ts\":") {
                let end = s[at + 5..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(s.len(), |e| at + 5 + e);
                s.replace_range(at..end, "T");
            }
            s
        })
        .collect()
}

#[test]
fn every_update_fault_shows_and_the_faulted_stream_is_deterministic() {
    let faults: Faults = "drop=0.05,dup=0.05,reorder=0.05,malformed=0.05,unknown=0.05"
        .parse()
        .expect("spec");
    let run = |seed| {
        let sim =
            Simulator::start(config(4, 3_000, 10_000.0, seed, faults.clone())).expect("start");
        let mut ws = raw_client(&sim);
        let lines = read_all(&sim, &mut ws);
        let counts = sim.fault_counts();
        sim.shutdown();
        (lines, counts)
    };
    let (a, counts) = run(21);
    let (b, _) = run(21);
    let (c, _) = run(22);
    // Connecting takes a moment: compare the streams from the first update both saw.
    let tail = |x: &[String]| {
        let x = comparable(x);
        x[x.len().saturating_sub(1_000)..].to_vec()
    };
    assert_eq!(tail(&a), tail(&b), "same seed, same faulted stream");
    assert_ne!(tail(&a), tail(&c));
    assert!(
        counts.dropped > 0
            && counts.duplicated > 0
            && counts.reordered > 0
            && counts.malformed > 0
            && counts.unknown > 0,
        "{counts:?}"
    );

    // What a consumer sees: unparsable lines, updates for an unannounced symbol, repeated and
    // out-of-order seqs.
    let mut bad_json = 0;
    let mut unknown = 0;
    let mut dups = 0;
    let mut backwards = 0;
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for l in &a {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            bad_json += 1;
            continue;
        };
        if v["type"] != "l2update" {
            continue;
        }
        let sym = v["symbol"].as_str().expect("symbol").to_owned();
        if sym == UNKNOWN_SYMBOL {
            unknown += 1;
            continue;
        }
        let seq = v["seq"].as_u64().expect("seq");
        match last.get(&sym) {
            Some(&prev) if seq == prev => dups += 1,
            Some(&prev) if seq < prev => backwards += 1,
            _ => {}
        }
        last.insert(sym, seq);
    }
    assert!(
        bad_json > 0 && unknown > 0 && dups > 0 && backwards > 0,
        "bad json {bad_json}, unknown {unknown}, dups {dups}, backwards {backwards}"
    );
}

#[test]
fn quiet_symbols_get_heartbeats_with_their_last_seq() {
    let cfg = SimConfig {
        heartbeat: Some(Duration::from_millis(100)),
        ..config(3, 300, 5_000.0, 4, Faults::none())
    };
    let sim = Simulator::start(cfg).expect("start");
    let mut client = FeedClient::connect(&sim);
    wait_done(&sim);
    let truth = truth(&sim, &client);
    client.catch_up(&truth);
    // Frozen books: every symbol keeps getting heartbeats (checked against its seq by step).
    while client.books.values().any(|b| b.heartbeats < 2) {
        client.step();
    }
    for (sym, t) in &truth {
        assert_eq!(client.books[sym].seq, t.seq, "{sym}");
    }
}

#[test]
fn dropped_last_update_is_revealed_by_the_heartbeat() {
    // Every update dropped: only heartbeats tell the consumer how far the books moved.
    let cfg = SimConfig {
        heartbeat: Some(Duration::from_millis(100)),
        ..config(2, 50, 5_000.0, 8, Faults::none().with_drop(1.0))
    };
    let sim = Simulator::start(cfg).expect("start");
    let mut ws = raw_client(&sim);
    let lines = read_all(&sim, &mut ws);
    let beats: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "heartbeat")
        .collect();
    assert!(!beats.is_empty());
    assert!(!lines.iter().any(|l| l.contains("l2update")));
    let last_btc = beats
        .iter()
        .rev()
        .find(|v| v["symbol"] == "BTC-USD")
        .expect("a BTC heartbeat");
    let (_, body) = common::http_get(sim.local_addr(), "/book/BTC-USD");
    let book: Value = serde_json::from_str(&body).expect("book");
    assert_eq!(last_btc["seq"], book["seq"]);
}

#[test]
fn disconnect_fault_drops_connections_and_a_reconnect_works() {
    let cfg = SimConfig {
        updates: None,
        ..config(
            2,
            0,
            500.0,
            3,
            Faults::none().with_disconnect_every(Duration::from_millis(300)),
        )
    };
    let sim = Simulator::start(cfg).expect("start");
    for _ in 0..2 {
        let mut ws = raw_client(&sim);
        let deadline = Instant::now() + WAIT;
        let ended = loop {
            assert!(Instant::now() < deadline, "connection never dropped");
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => break e,
            }
        };
        assert!(
            !matches!(ended, tungstenite::Error::ConnectionClosed),
            "an abrupt loss, not a close handshake: {ended}"
        );
    }
    assert!(sim.fault_counts().disconnects >= 1);
}

#[test]
fn restarted_simulator_rebinds_its_port_at_once() {
    let sim = Simulator::start(config(2, 100, 5_000.0, 1, Faults::none())).expect("start");
    let addr = sim.local_addr();
    // A client connection leaves the port with connections in TIME_WAIT after shutdown.
    let client = FeedClient::connect(&sim);
    sim.shutdown();
    drop(client);
    let again = Simulator::start(SimConfig {
        listen: addr,
        ..config(2, 100, 5_000.0, 2, Faults::none())
    })
    .expect("restart on the same port");
    assert_eq!(again.local_addr(), addr);
    let c = FeedClient::connect(&again);
    assert_eq!(c.order.len(), 2);
}
