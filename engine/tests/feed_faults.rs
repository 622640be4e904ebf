//! The feed as it really behaves: feed-sim with faults, restarts and stalls in front of the
//! real `tickcast` binary, independent clients checking every record.

#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Daemon, converge, pump_until, simulator_with};
use feed_sim::{Faults, SimConfig};
use tickcast_bench::control::Reply;

const STALE: u16 = 1;
const RESUMED: u16 = 2;

fn sim_config(symbols: usize, rate: f64, updates: Option<u64>, seed: u64) -> SimConfig {
    SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        symbols,
        seed,
        rate,
        updates,
        ..SimConfig::default()
    }
}

/// Subscribes a new client to every symbol at `depth`.
fn subscriber(d: &Daemon, query: &str, depth: u16) -> Client {
    let mut c = Client::connect(&d.url(query));
    let r = c.subscribe(1, &["*"], depth);
    assert!(matches!(r, Reply::Subscribed { .. }), "{r:?}");
    c
}

/// True when the client was told, for every symbol, that the feed went stale and then resumed.
fn saw_stale_then_resumed(c: &Client) -> bool {
    c.symbols.iter().all(|s| {
        let codes = c.statuses(s.sid);
        codes
            .iter()
            .position(|&x| x == STALE)
            .is_some_and(|i| codes[i..].contains(&RESUMED))
    })
}

fn assert_clean(c: &Client, name: &str) {
    assert!(c.close.is_none(), "{name}: closed {:?}", c.close);
    assert!(c.seq_errors.is_empty(), "{name}: {:?}", c.seq_errors);
    assert!(c.replace_jumps.is_empty(), "{name}: {:?}", c.replace_jumps);
    for s in &c.symbols {
        let codes = c.statuses(s.sid);
        // Statuses alternate, stale, resumed, stale, ..., never two of a kind in a row (a
        // client that subscribed while the symbol was stale starts with "resumed").
        assert!(
            codes.windows(2).all(|w| w[0] != w[1]),
            "{name} {}: statuses {codes:?}",
            s.symbol
        );
    }
}

#[test]
fn every_fault_at_a_high_rate_and_every_client_ends_with_the_truth() {
    let faults: Faults = "drop=0.02,dup=0.03,reorder=0.03,malformed=0.02,unknown=0.03,disconnect=1.1,stall=1.7,stall_for=0.4"
        .parse()
        .expect("fault spec");
    let sim = simulator_with(SimConfig {
        faults,
        ..sim_config(8, 3_000.0, Some(10_000), 42)
    });
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let mut top1 = subscriber(&d, "", 1);
    let mut top10 = subscriber(&d, "format=binary", 10);
    let mut json25 = subscriber(&d, "format=json", 25);
    let mut top100 = subscriber(&d, "", 100);
    let mut full = subscriber(&d, "", 0);
    assert_eq!(full.symbols.len(), 8);

    converge(
        &sim,
        &mut [
            (&mut top1, 1),
            (&mut top10, 10),
            (&mut json25, 25),
            (&mut top100, 100),
            (&mut full, 0),
        ],
    );

    let counts = sim.fault_counts();
    assert!(
        counts.dropped > 0
            && counts.duplicated > 0
            && counts.reordered > 0
            && counts.malformed > 0
            && counts.unknown > 0
            && counts.disconnects > 0
            && counts.stalls > 0,
        "not every fault fired: {counts:?}"
    );
    for (c, name) in [
        (&top1, "depth 1"),
        (&top10, "depth 10"),
        (&json25, "json depth 25"),
        (&top100, "depth 100"),
        (&full, "depth 0"),
    ] {
        assert_clean(c, name);
        assert!(
            c.symbols.iter().any(|s| c.statuses(s.sid).contains(&STALE)),
            "{name}: never told of a stale feed"
        );
        assert!(
            c.symbols
                .iter()
                .any(|s| c.statuses(s.sid).contains(&RESUMED)),
            "{name}: never told the feed resumed"
        );
        assert!(
            c.replaced.values().sum::<u64>() > 0,
            "{name}: no book was ever replaced"
        );
        // Converged: the last word on every symbol is "resumed", never "stale".
        for s in &c.symbols {
            assert_ne!(
                c.statuses(s.sid).last(),
                Some(&STALE),
                "{name} {}",
                s.symbol
            );
        }
    }
    // The engine noticed every kind of problem.
    assert!(d.metric("tickcast_feed_gaps_total") > 0);
    assert!(d.metric("tickcast_feed_stale_total") > 0);
    assert!(d.metric("tickcast_feed_bad_messages_total") > 0);
    assert!(d.metric("tickcast_feed_connects_total") > 1);
}

#[test]
fn simulator_killed_and_restarted_mid_stream() {
    let first = simulator_with(sim_config(6, 2_000.0, None, 1));
    let addr = first.local_addr();
    let d = Daemon::start(&["--feed", &first.feed_url(), "--shards", "2"]);
    let mut depth10 = subscriber(&d, "", 10);
    let mut json0 = subscriber(&d, "format=json", 0);
    pump_until(&mut [&mut depth10, &mut json0], "live records", |c| {
        c.records > 200
    });

    first.shutdown();
    pump_until(&mut [&mut depth10, &mut json0], "stale statuses", |c| {
        c.symbols.iter().all(|s| c.statuses(s.sid).contains(&STALE))
    });

    // Another exchange on the same port, with other books.
    let second = simulator_with(SimConfig {
        listen: addr,
        ..sim_config(6, 2_000.0, Some(4_000), 2)
    });
    converge(&second, &mut [(&mut depth10, 10), (&mut json0, 0)]);
    for (c, name) in [(&depth10, "depth 10"), (&json0, "json depth 0")] {
        assert_clean(c, name);
        assert!(
            saw_stale_then_resumed(c),
            "{name}: {:?}",
            c.state.statuses()
        );
        for s in &c.symbols {
            assert!(
                c.replaced.get(&s.sid).copied().unwrap_or(0) > 0,
                "{name} {}: book never replaced",
                s.symbol
            );
        }
    }
    assert!(d.metric("tickcast_feed_connects_total") >= 2);
}

#[test]
fn stalled_feed_is_detected_and_every_symbol_resyncs() {
    // The feed goes silent 4 s after its start for 3.5 s: longer than the engine's stall
    // timeout, so it reconnects; the exchange keeps trading meanwhile.
    let faults = Faults::none()
        .with_stall_every(Duration::from_secs(4))
        .with_stall_for(Duration::from_millis(3_500));
    let sim = simulator_with(SimConfig {
        faults,
        ..sim_config(4, 1_000.0, Some(9_000), 5)
    });
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "1"]);
    let mut c = subscriber(&d, "", 25);
    converge(&sim, &mut [(&mut c, 25)]);
    assert_clean(&c, "depth 25");
    assert!(saw_stale_then_resumed(&c), "{:?}", c.state.statuses());
    assert!(sim.fault_counts().stalls >= 1);
    assert!(d.metric("tickcast_feed_connects_total") >= 2);
}
