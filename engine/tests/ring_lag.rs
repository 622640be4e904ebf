//! A shard behind its ring, over loopback: the real binary with the smallest ring it accepts
//! (`--ring-capacity 16`) in front of a fast feed-sim. The shard falls behind, the ingester
//! drops what does not fit, and the shard resyncs its subscribers with snapshots: every client
//! still ends with exactly the simulator's books, and no book delta is ever out of sequence.
//! (`cargo test -p tickcast lag` runs this and the simulator's lag tests.)

#![allow(clippy::disallowed_methods)]

mod common;

use common::{Client, Daemon, converge, simulator};
use tickcast_bench::control::Reply;

#[test]
fn lag_tiny_ring_resyncs_subscribers_over_loopback() {
    let sim = simulator(8, 20_000.0, Some(40_000), 11);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--ring-capacity",
        "16",
    ]);
    let mut a = Client::connect(&d.url(""));
    let mut b = Client::connect(&d.url(""));
    for c in [&mut a, &mut b] {
        let r = c.subscribe(1, &["*"], 10);
        assert!(matches!(r, Reply::Subscribed { .. }), "{r:?}");
    }
    converge(&sim, &mut [(&mut a, 10), (&mut b, 10)]);
    assert!(
        d.metric("tickcast_ring_resyncs_total") >= 1,
        "the shard never fell behind its 16-slot ring: the test proves nothing"
    );
    for (c, name) in [(&a, "a"), (&b, "b")] {
        assert!(c.close.is_none(), "{name}: closed {:?}", c.close);
        // Book streams restart from a snapshot and stay contiguous; trades lost in the
        // dropped part of the ring show as a seq jump on the trade stream (documented in
        // docs/architecture.md, "The ring and falling behind").
        let book_errors: Vec<&String> = c
            .seq_errors
            .iter()
            .filter(|e| !e.contains("trades stream"))
            .collect();
        assert!(book_errors.is_empty(), "{name}: {book_errors:?}");
    }
}
