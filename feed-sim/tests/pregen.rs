//! The pre-generated stream over real loopback sockets: the books it builds are the truth.

mod common;

use std::net::SocketAddr;

use common::{FeedClient, http_get, truth, wait_done};
use feed_sim::{SimConfig, Simulator};
use serde_json::Value;

fn pregen(updates: u64, rate: f64, unpaced: bool) -> SimConfig {
    SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        symbols: 20,
        seed: 11,
        rate,
        updates: Some(updates),
        depth: 60,
        pregen: true,
        unpaced,
        ..SimConfig::default()
    }
}

/// Reads the whole stream and checks every book against `GET /book`.
fn rebuild_and_compare(sim: &Simulator, client: &mut FeedClient, updates: u64) {
    wait_done(sim);
    let truth = truth(sim, client);
    client.catch_up(&truth);
    for (sym, t) in &truth {
        let mine = &client.books[sym];
        assert_eq!(mine.seq, t.seq, "{sym}");
        assert_eq!(mine.bids, t.bids, "{sym} bids");
        assert_eq!(mine.asks, t.asks, "{sym} asks");
    }
    let applied: u64 = client.books.values().map(|b| b.updates).sum();
    assert_eq!(applied, updates, "every update of the stream arrived once");
    let trades: u64 = client.books.values().map(|b| b.trades).sum();
    assert!(trades > 0, "the stream carries trades");
}

#[test]
fn paced_pregen_stream_builds_the_truth_for_every_client() {
    let sim = Simulator::start(pregen(8_000, 200_000.0, false)).expect("start");
    let mut a = FeedClient::connect(&sim);
    rebuild_and_compare(&sim, &mut a, 8_000);
    assert_eq!(sim.updates_sent(), 8_000);
    // A later client gets the same stream from the same initial snapshots.
    let mut b = FeedClient::connect(&sim);
    rebuild_and_compare(&sim, &mut b, 8_000);
    assert_eq!(a.live, b.live);
    let (status, body) = http_get(sim.local_addr(), "/stats");
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).expect("stats JSON");
    assert_eq!(stats["updates_sent"], 8_000);
    assert_eq!(stats["evictions"], 0);
    assert_eq!(stats["done"], true);
    assert_eq!(sim.evictions(), 0);
    sim.shutdown();
}

#[test]
fn unpaced_pregen_stream_is_the_same_order_flow_as_the_live_one() {
    let sim = Simulator::start(pregen(5_000, 1_000.0, true)).expect("start");
    let mut c = FeedClient::connect(&sim);
    rebuild_and_compare(&sim, &mut c, 5_000);
    // The live generator with the same seed and config ends at the same books.
    let live = Simulator::start(SimConfig {
        pregen: false,
        unpaced: false,
        rate: 100_000.0,
        ..pregen(5_000, 1_000.0, false)
    })
    .expect("start live");
    wait_done(&live);
    for sym in &c.order {
        let (_, a) = http_get(sim.local_addr(), &format!("/book/{sym}"));
        let (_, b) = http_get(live.local_addr(), &format!("/book/{sym}"));
        assert_eq!(a, b, "{sym}");
    }
    live.shutdown();
    sim.shutdown();
}

#[test]
fn pregen_needs_a_finite_stream_without_faults() {
    let bad = SimConfig {
        updates: None,
        ..pregen(1, 1.0, false)
    };
    assert!(Simulator::start(bad).is_err());
}
