//! SIGTERM with 1,000 connected clients: each gets close 1001, the process exits 0 within the
//! shutdown deadline.

#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Client, Daemon, simulator};
use tickcast_bench::control::Reply;

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    // 1,000 client sockets here plus 1,000 in the daemon (which inherits this limit).
    let _ = rlimit::increase_nofile_limit(8192);
    let sim = simulator(5, 1_000.0, None, 9);
    let mut d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "2",
        "--shutdown-deadline",
        "5",
    ]);
    let mut clients: Vec<Client> = (0..1000).map(|_| Client::connect(&d.url(""))).collect();
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| i % 10 == 0) {
        let symbol = ["*"];
        assert!(matches!(
            c.subscribe(i as u64, &symbol, 10),
            Reply::Subscribed { .. }
        ));
    }
    // The 1,000 clients plus the /metrics request itself.
    assert_eq!(d.metric("tickcast_connections"), 1001);
    let status = d
        .terminate(Duration::from_secs(10))
        .expect("did not exit within the deadline");
    assert!(status.success(), "exit status {status:?}");
    let mut codes = std::collections::HashMap::new();
    for c in &mut clients {
        *codes
            .entry(c.until_closed(Duration::from_secs(5)))
            .or_insert(0) += 1;
    }
    assert_eq!(
        codes.get(&Some(1001)),
        Some(&1000),
        "close codes: {codes:?}"
    );
}
