//! The client against the real daemon and the real feed-sim (see `common` for how they are
//! started). Every test is bounded by `common::PATIENCE` per wait, and its processes are killed
//! when it ends (the daemon on drop, the simulator with the test).
//!
//! What the daemon does not do yet (protocol 1.1: epoch/resume and book checksums) is tested
//! with fixtures in the crate's unit tests; the tests below that touch it check what the server
//! replies and apply the 1.1 assertions as soon as it carries them.

mod common;

use std::time::Duration;

use common::{Daemon, Proxy, converge, record, simulator, truth, wait_for};
use tickcast_client::{Client, CloseCause, ConnectionState, Event, Format, Resumed, ResyncCause};

const SYMBOLS: [&str; 3] = ["BTC-USD", "ETH-USD", "SOL-USD"];

fn subscribed_states(states: &[ConnectionState]) -> Vec<(Resumed, Option<String>)> {
    states
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Subscribed { resumed, epoch } => {
                Some((resumed.clone(), epoch.clone()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn books_equal_truth_at_depth_10_and_0_in_both_formats() {
    let sim = simulator(3, 1500.0, 3000, 11);
    let d = Daemon::start("127.0.0.1:0", &sim.feed_url(), &[]);
    let mut logs = Vec::new();
    let mut clients = Vec::new();
    for (depth, format) in [
        (10u16, Format::Binary),
        (0, Format::Binary),
        (10, Format::Json),
    ] {
        let (client, events) = Client::builder([d.url()])
            .depth(depth)
            .format(format)
            .symbols(SYMBOLS)
            .build()
            .expect("build");
        clients.push(client);
        logs.push((record(events), usize::from(depth)));
    }
    for (log, depth) in &logs {
        converge(&sim, log, &SYMBOLS, *depth).await;
        let log = log.lock().expect("log");
        assert_eq!(log.subscribed(), 1);
        assert!(log.resyncs().is_empty(), "no gap: {:?}", log.resyncs());
        assert!(log.trades > 0, "trades flow too");
        for s in SYMBOLS {
            let b = &log.books[s];
            assert_eq!(usize::from(b.depth()), *depth);
            if *depth == 10 {
                assert!(b.bids().len() <= 10 && b.asks().len() <= 10);
            }
        }
    }
    // The whole book is deeper than 10 levels: depth 0 is not depth 10 in disguise.
    let (_, full) = truth(&sim, "BTC-USD", 0);
    assert!(
        full.0.len() > 10,
        "the simulator's book has {} bids",
        full.0.len()
    );
    for c in clients {
        c.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn daemon_killed_and_restarted_client_backs_off_resubscribes_and_ends_equal_to_truth() {
    // ~8 s of updates: the daemon is down for 2 s of them.
    let sim = simulator(3, 1000.0, 8000, 12);
    let mut d = Daemon::start("127.0.0.1:0", &sim.feed_url(), &[]);
    let addr = d.addr;
    let (min, cap) = (Duration::from_millis(100), Duration::from_millis(400));
    let (client, events) = Client::builder([d.url()])
        .depth(10)
        .symbols(SYMBOLS)
        .backoff(min, cap)
        .build()
        .expect("build");
    let log = record(events);
    wait_for(&log, "first books", |l| l.books.len() == SYMBOLS.len()).await;

    d.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let feed = sim.feed_url();
    let listen = addr.to_string();
    let _d = tokio::task::spawn_blocking(move || Daemon::start(&listen, &feed, &[]))
        .await
        .expect("restart");
    wait_for(&log, "the resubscription", |l| l.subscribed() >= 2).await;
    converge(&sim, &log, &SYMBOLS, 10).await;

    let log = log.lock().expect("log");
    let delays: Vec<(u32, Duration)> = log
        .states()
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Reconnecting { delay, attempt, .. } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    eprintln!("reconnect attempts (attempt, delay): {delays:?}");
    assert!(delays.len() >= 3, "the daemon was down 2 s: {delays:?}");
    for (i, (attempt, delay)) in delays.iter().enumerate() {
        assert_eq!(
            *attempt as usize,
            i + 1,
            "attempts counted until subscribed again"
        );
        // Full jitter: below min * 2^(n-1), and never past the cap.
        let ceiling = min.saturating_mul(1 << (attempt - 1).min(16)).min(cap);
        assert!(
            *delay <= ceiling,
            "attempt {attempt}: {delay:?} > {ceiling:?}"
        );
    }
    let first = delays[0].1;
    assert!(
        delays.iter().any(|(_, d)| *d != first),
        "jittered: {delays:?}"
    );
    // Each attempt went to the daemon's address and was refused until it came back.
    let states = log.states();
    let opens = states
        .iter()
        .filter(|s| matches!(s, ConnectionState::Open { .. }))
        .count();
    assert_eq!(opens, 2);
    // A restarted daemon numbers its streams afresh: nothing can be recovered.
    let subs = subscribed_states(&states);
    assert_eq!(subs.len(), 2);
    assert!(
        matches!(subs[1].0, Resumed::NotRecovered { .. }),
        "restart: {:?}",
        subs[1]
    );
    // The books restarted from snapshots after the resubscription.
    for s in SYMBOLS {
        assert!(
            log.book_events
                .iter()
                .filter(|(sym, _, snap, _)| sym == s && *snap)
                .count()
                >= 2,
            "{s}: a snapshot per subscription"
        );
    }
    drop(log);
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn connection_reset_by_a_proxy_reconnects_and_resumes_when_the_server_can() {
    let sim = simulator(3, 1000.0, 5000, 13);
    let d = Daemon::start("127.0.0.1:0", &sim.feed_url(), &[]);
    let proxy = Proxy::start(d.addr).await;
    let (client, events) = Client::builder([proxy.url()])
        .depth(10)
        .symbols(SYMBOLS)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .expect("build");
    let log = record(events);
    wait_for(&log, "first books", |l| l.books.len() == SYMBOLS.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.reset_all();
    wait_for(&log, "the resubscription", |l| l.subscribed() >= 2).await;
    converge(&sim, &log, &SYMBOLS, 10).await;

    let log = log.lock().expect("log");
    let states = log.states();
    assert!(
        states
            .iter()
            .any(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        "{states:?}"
    );
    assert_eq!(proxy.accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    let subs = subscribed_states(&states);
    let resumed_at = log
        .events
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| matches!(e, Event::Connection(ConnectionState::Subscribed { .. })))
        .nth(1)
        .map(|(i, _)| i)
        .expect("second subscribed");
    let snapshots_after = log
        .book_events
        .iter()
        .filter(|(_, _, snap, at)| *snap && *at > resumed_at)
        .count();
    if subs[0].1.is_some() {
        // A 1.1 server (its reply names an epoch): the reset connection resumes, the missed
        // records follow, and no snapshot is needed.
        assert_eq!(subs[1].0, Resumed::Recovered, "{subs:?}");
        assert_eq!(snapshots_after, 0, "recovered: no snapshot");
    } else {
        // Today's server (no epoch): nothing to resume, every book starts from a snapshot.
        eprintln!("server replies carry no epoch: resume not testable end to end yet");
        assert!(
            matches!(subs[1].0, Resumed::NotRecovered { .. }),
            "{subs:?}"
        );
        assert!(snapshots_after >= SYMBOLS.len());
    }
    drop(log);
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn corrupted_book_record_resyncs_that_symbol_when_checksums_are_sent() {
    let sim = simulator(3, 1000.0, 5000, 14);
    let d = Daemon::start("127.0.0.1:0", &sim.feed_url(), &[]);
    let proxy = Proxy::start(d.addr).await;
    let (client, events) = Client::builder([proxy.url()])
        .depth(10)
        .symbols(SYMBOLS)
        .build()
        .expect("build");
    let log = record(events);
    wait_for(&log, "first books", |l| l.books.len() == SYMBOLS.len()).await;
    proxy.arm_corruption();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let c = loop {
        if let Some(c) = proxy.corrupted() {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "nothing to corrupt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("corrupted {c:?}");
    if c.had_checksum {
        // A 1.1 server: the client's book disagrees with the checksum of that record, that
        // symbol alone is resubscribed, and every book ends equal to the truth.
        wait_for(&log, "the checksum resync", |l| {
            l.resyncs()
                .iter()
                .any(|r| matches!(r.cause, ResyncCause::Checksum { seq, .. } if seq == c.seq))
        })
        .await;
        converge(&sim, &log, &SYMBOLS, 10).await;
        let log = log.lock().expect("log");
        assert_eq!(log.resyncs().len(), 1, "one symbol: {:?}", log.resyncs());
        assert_eq!(log.subscribed(), 1, "the connection stayed up");
    } else {
        // Today's server sends no checksum: the corrupted quantity is invisible to the seq and
        // state checks (the stream is in order), so the client can only carry on. The
        // assertions above apply as soon as the server sets flag bit 1.
        eprintln!("server sends no book checksum: corruption cannot be detected yet");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = log.lock().expect("log");
        assert!(log.resyncs().is_empty(), "{:?}", log.resyncs());
        assert_eq!(log.subscribed(), 1);
    }
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn refused_upgrades_are_not_retried() {
    let sim = simulator(1, 100.0, 10, 15);
    let file = std::env::temp_dir().join(format!("tickcast-client-tokens-{}", std::process::id()));
    std::fs::write(&file, "good-token\n").expect("tokens file");
    let path = file.to_str().expect("path").to_owned();
    let d = Daemon::start("127.0.0.1:0", &sim.feed_url(), &["--tokens-file", &path]);
    for (token, status) in [(None, 401), (Some("bad-token"), 403)] {
        let mut b = Client::builder([d.url()])
            .symbols(["BTC-USD"])
            .backoff(Duration::from_millis(10), Duration::from_millis(20));
        if let Some(t) = token {
            b = b.token(t);
        }
        let (_client, mut events) = b.build().expect("build");
        let mut states = Vec::new();
        let end = tokio::time::timeout(common::PATIENCE, async {
            while let Some(ev) = events.next().await {
                if let Event::Connection(s) = ev {
                    states.push(s);
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the client stopped by itself");
        assert!(
            matches!(states.last(), Some(ConnectionState::Closed { cause: CloseCause::Refused(s) }) if *s == status),
            "{states:?}"
        );
        assert!(
            !states
                .iter()
                .any(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        );
    }
    // The right token works.
    let (client, events) = Client::builder([d.url()])
        .symbols(["BTC-USD"])
        .token("good-token")
        .build()
        .expect("build");
    let log = record(events);
    wait_for(&log, "a book", |l| !l.books.is_empty()).await;
    client.close();
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn book_example_prints_the_truth() {
    let sim = simulator(2, 2000.0, 2000, 16);
    let d = Daemon::start("127.0.0.1:0", &sim.feed_url(), &[]);
    while !sim.is_done() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bin = common::built().join("examples").join("book");
    let out = tokio::time::timeout(
        common::PATIENCE,
        tokio::process::Command::new(bin)
            .args([
                "--url",
                &d.url(),
                "--symbol",
                "ETH-USD",
                "--depth",
                "10",
                "--seconds",
                "2",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example ends after --seconds")
    .expect("run the example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let (seq, (bids, asks)) = truth(&sim, "ETH-USD", 10);
    assert_eq!(v["symbol"], "ETH-USD");
    assert_eq!(v["bids"], serde_json::json!(bids));
    assert_eq!(v["asks"], serde_json::json!(asks));
    assert_eq!(
        (v["reconnects"].as_u64(), v["resumed"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(v["seq"].as_u64().is_some(), "{line}");
    // Field order as documented.
    let keys: Vec<&str> = ["symbol", "seq", "bids", "asks", "reconnects", "resumed"].to_vec();
    let mut at = 0;
    for k in keys {
        let i = line.find(&format!("\"{k}\"")).expect("field");
        assert!(i >= at, "{k} out of order in {line}");
        at = i;
    }
    let _ = seq;
}

/// wss:// with a CA made by the test and a JWT: the client's books equal the truth, and
/// `refresh` hands the server a new token (answered `refreshed` with its exp).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn wss_with_a_custom_ca_and_a_refreshed_jwt_books_equal_truth() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let secret = "client-test-secret-of-32-bytes!!";
    let dir = std::env::temp_dir().join(format!("tickcast-client-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, chain, key) = common::test_pki();
    let (cert_p, key_p, secret_p) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("jwt"));
    std::fs::write(&cert_p, chain).expect("cert");
    std::fs::write(&key_p, key).expect("key");
    std::fs::write(&secret_p, secret).expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mint = |exp: u64| {
        encode(
            &Header::default(),
            &serde_json::json!({"exp": exp, "symbols": SYMBOLS}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let sim = simulator(3, 1500.0, 3000, 21);
    let d = common::Daemon::start_tls(
        &sim.feed_url(),
        &[
            "--tls-cert",
            cert_p.to_str().expect("path"),
            "--tls-key",
            key_p.to_str().expect("path"),
            "--jwt-secret-file",
            secret_p.to_str().expect("path"),
        ],
        common::trusting(&ca),
    );
    let (client, events) = Client::builder([d.wss_url()])
        .tls_ca_pem(ca.as_bytes().to_vec())
        .token(mint(now + 300))
        .depth(10)
        .symbols(SYMBOLS)
        .build()
        .expect("build");
    let log = record(events);
    converge(&sim, &log, &SYMBOLS, 10).await;
    client.refresh(mint(now + 600)).expect("refresh");
    wait_for(&log, "refreshed", |l| {
        l.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Refreshed { exp } if *exp == Some(now + 600)))
    })
    .await;
    client.close();
}
