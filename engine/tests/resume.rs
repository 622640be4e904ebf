//! Protocol 1.1 resume over real loopback sockets (issue 11): clients whose TCP connection is
//! reset mid-stream reconnect with `resume` and either get exactly what they missed (no
//! snapshot, first record = last + 1) or are told `recovered: false` and start from a snapshot;
//! either way their books end equal to the simulator's truth. The records are checked by an
//! independent decoder (`tickcast_bench`), including every book checksum.

#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Daemon, converge, pump_until, simulator, simulator_with};
use feed_sim::{Faults, SimConfig};
use serde_json::{Value, json};
use tickcast_bench::control::{Reply, SymbolInfo};

/// (query, depth) of the clients of most tests: two formats, a windowed and a whole book.
const CLIENTS: [(&str, u16); 4] = [("", 10), ("format=json", 0), ("", 0), ("format=json", 10)];

/// Subscribes `c` to every symbol at `depth` (book and trades); returns the reply's epoch.
fn subscribe_all(c: &mut Client, depth: u16) -> String {
    c.send(json!({"op":"subscribe","id":1,"symbols":["*"],"depth":depth}));
    match c.reply(1) {
        Reply::Subscribed {
            epoch: Some(epoch), ..
        } => epoch,
        other => panic!("{other:?}"),
    }
}

/// Subscribes again with `resume`; returns the reply's epoch and symbols.
fn resubscribe(c: &mut Client, id: u64, depth: u16, resume: Value) -> (String, Vec<SymbolInfo>) {
    c.send(json!({"op":"subscribe","id":id,"symbols":["*"],"depth":depth,"resume":resume}));
    match c.reply(id) {
        Reply::Subscribed {
            epoch: Some(epoch),
            symbols,
            ..
        } => (epoch, symbols),
        other => panic!("{other:?}"),
    }
}

/// Opens the usual clients, subscribed to everything, with some records each.
fn clients(d: &Daemon) -> (Vec<(Client, u16)>, String) {
    let mut out = Vec::new();
    let mut epoch = String::new();
    for (q, depth) in CLIENTS {
        let mut c = Client::connect(&d.url(q));
        epoch = subscribe_all(&mut c, depth);
        out.push((c, depth));
    }
    {
        let mut refs: Vec<&mut Client> = out.iter_mut().map(|(c, _)| c).collect();
        pump_until(&mut refs, "live records", |c| c.records > 300);
    }
    (out, epoch)
}

fn assert_clean(c: &Client, name: &str) {
    assert!(c.close.is_none(), "{name}: closed {:?}", c.close);
    assert!(c.seq_errors.is_empty(), "{name}: {:?}", c.seq_errors);
    assert!(c.replace_jumps.is_empty(), "{name}: {:?}", c.replace_jumps);
    assert_eq!(c.state.checksum_mismatches(), 0, "{name}");
}

/// Every named symbol was recovered; the first record of each resumed stream on the new
/// connection continues the position it resumed from, and no snapshot was sent.
fn assert_recovered(c: &Client, before: &Value, symbols: &[SymbolInfo], name: &str) {
    for s in symbols {
        assert_eq!(s.recovered, Some(true), "{name} {}", s.symbol);
        let pos = &before["streams"][&s.symbol];
        for (key, trades) in [("book", false), ("trades", true)] {
            let (Some(held), Some(&(kind, first))) =
                (pos[key].as_u64(), c.firsts.get(&(s.sid, trades)))
            else {
                continue;
            };
            assert_eq!(first, held + 1, "{name} {} {key}", s.symbol);
            assert_ne!(kind, 1, "{name} {} {key}: a snapshot", s.symbol);
        }
    }
    assert!(
        c.snapshots.is_empty(),
        "{name}: {} snapshots",
        c.snapshots.len()
    );
}

/// A client whose TCP connection is reset mid-stream reconnects within the window with
/// `resume`: `recovered: true` for every symbol, each stream continues at last + 1 with no
/// snapshot, and once the simulator stops every book equals `GET /book` at depth 10 and 0.
/// Each client is the only watcher of its (depth, format) topics, so this is also "the only
/// watcher drops, the book moves, the client resumes". Two shards: the reconnects land on
/// whichever shard the kernel picks.
#[test]
fn reset_mid_stream_then_resume_replays_exactly_what_was_missed() {
    let sim = simulator(6, 2_000.0, Some(16_000), 21);
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let (clients, epoch) = clients(&d);
    let mut resumed = Vec::new();
    for (i, (c, depth)) in clients.into_iter().enumerate() {
        let before = c.resume_positions(&epoch, true);
        let query = CLIENTS[i].0;
        let mut c = c.reset_and_reconnect(&d.url(query));
        // Away for a while: the books move.
        std::thread::sleep(Duration::from_millis(300));
        let (got, symbols) = resubscribe(&mut c, 2, depth, before.clone());
        assert_eq!(got, epoch);
        assert_eq!(symbols.len(), 6);
        pump_until(&mut [&mut c], "replayed records", |c| c.firsts.len() >= 6);
        resumed.push((c, depth, before, symbols));
    }
    {
        let mut refs: Vec<(&mut Client, usize)> = resumed
            .iter_mut()
            .map(|(c, d, ..)| (c, usize::from(*d)))
            .collect();
        converge(&sim, &mut refs);
    }
    for (c, depth, before, symbols) in &resumed {
        let name = format!("depth {depth} json {}", c.json);
        assert_clean(c, &name);
        assert_recovered(c, before, symbols, &name);
    }
    assert!(d.metric("tickcast_replay_hits_total") >= 4 * 6);
    assert!(d.metric("tickcast_resumes_served_total") >= 4);
}

/// Resumes that cannot be recovered: a position the window no longer holds (a window of 16
/// records), another epoch, and a daemon restarted (a new epoch). Each gets
/// `recovered: false`, its books start with a snapshot, and they end equal to the truth.
#[test]
fn beyond_the_window_wrong_epoch_and_restart_are_not_recovered() {
    let sim = simulator(4, 2_000.0, Some(14_000), 22);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "2",
        "--replay-records",
        "16",
    ]);
    // The restart case has a daemon of its own, restarted below.
    let mut first = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let mut restarted = Client::connect(&first.url(""));
    let first_epoch = subscribe_all(&mut restarted, 10);
    let (clients, epoch) = clients(&d);
    let mut fresh = Vec::new();
    for (i, (c, depth)) in clients.into_iter().enumerate() {
        let resume = if i % 2 == 0 {
            // Beyond the window: more than 16 records pass while away.
            c.resume_positions(&epoch, false)
        } else {
            c.resume_positions("0badf00d", true)
        };
        let mut c = c.reset_and_reconnect(&d.url(CLIENTS[i].0));
        std::thread::sleep(Duration::from_millis(800));
        let (got, symbols) = resubscribe(&mut c, 2, depth, resume);
        assert_eq!(got, epoch);
        assert!(
            symbols.iter().all(|s| s.recovered == Some(false)),
            "{symbols:?}"
        );
        // recovered: false: the client drops what it held and starts afresh.
        assert_eq!(c.forget_unrecovered(&symbols), 4);
        fresh.push((c, depth));
    }
    // A new process, a new epoch: positions of the old one are not recovered.
    pump_until(&mut [&mut restarted], "records", |c| c.records > 200);
    let resume = restarted.resume_positions(&first_epoch, true);
    first.terminate(Duration::from_secs(5));
    let second = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let mut c = restarted.reset_and_reconnect(&second.url(""));
    let (got, symbols) = resubscribe(&mut c, 2, 10, resume);
    assert_ne!(got, first_epoch, "a restarted daemon has a new epoch");
    assert_eq!(c.forget_unrecovered(&symbols), 4);
    fresh.push((c, 10));
    let mut refs: Vec<(&mut Client, usize)> = fresh
        .iter_mut()
        .map(|(c, d)| (c, usize::from(*d)))
        .collect();
    converge(&sim, &mut refs);
    for (c, depth) in &fresh {
        let name = format!("depth {depth} json {}", c.json);
        assert_clean(c, &name);
        for s in &c.symbols {
            assert_eq!(
                c.firsts.get(&(s.sid, false)).map(|f| f.0),
                Some(1),
                "{name} {}: the book starts with a snapshot",
                s.symbol
            );
        }
    }
    assert!(d.metric("tickcast_replay_misses_total") >= 16);
}

/// The only watcher of a stream drops, the book moves, the client comes back: within the age
/// bound it is sent what changed; past it (`--replay-age 1`) it is not recovered. Either way
/// its book ends equal to the truth.
#[test]
fn the_only_watcher_drops_and_comes_back_within_and_past_the_age_bound() {
    let sim = simulator(3, 1_500.0, Some(12_000), 23);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "2",
        "--replay-age",
        "1",
    ]);
    let mut done = Vec::new();
    for (away, recovered) in [
        (Duration::from_millis(400), true),
        (Duration::from_millis(2_500), false),
    ] {
        let mut c = Client::connect(&d.url(""));
        c.send(json!({"op":"subscribe","id":1,"symbols":["*"],"channels":["book"],"depth":1}));
        let Reply::Subscribed {
            epoch: Some(epoch), ..
        } = c.reply(1)
        else {
            panic!("not subscribed")
        };
        pump_until(&mut [&mut c], "books", |c| c.state.book_sids().len() == 3);
        c.pump(Duration::from_millis(200));
        let resume = c.resume_positions(&epoch, false);
        let mut c = c.reset_and_reconnect(&d.url(""));
        std::thread::sleep(away);
        c.send(json!({"op":"subscribe","id":2,"symbols":["*"],"channels":["book"],"depth":1,"resume":resume}));
        let Reply::Subscribed { symbols, .. } = c.reply(2) else {
            panic!("not subscribed")
        };
        assert!(
            symbols.iter().all(|s| s.recovered == Some(recovered)),
            "away {away:?}: {symbols:?}"
        );
        if recovered {
            pump_until(&mut [&mut c], "replays", |c| c.firsts.len() == 3);
            assert_recovered(&c, &resume, &symbols, "within the age bound");
        } else {
            c.forget_streams();
        }
        done.push(c);
    }
    let mut refs: Vec<(&mut Client, usize)> = done.iter_mut().map(|c| (c, 1)).collect();
    converge(&sim, &mut refs);
    for c in &done {
        assert_clean(c, "depth 1");
    }
}

/// Resume under feed faults: drops, duplicates, reordering and feed disconnects make symbols
/// stale and resync (flagged replacing snapshots) while the clients are away. Every resume is
/// either replayed exactly (replacing snapshots included, continuing the seq) or not
/// recovered; never a wrong book: every checksum matches and the books end equal to the truth.
#[test]
fn resume_under_feed_faults_is_exact_or_not_recovered() {
    let faults: Faults = "drop=0.01,dup=0.02,reorder=0.02,disconnect=1.3"
        .parse()
        .expect("fault spec");
    let sim = simulator_with(SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        symbols: 5,
        seed: 24,
        rate: 2_000.0,
        updates: Some(18_000),
        faults,
        ..SimConfig::default()
    });
    let d = Daemon::start(&["--feed", &sim.feed_url(), "--shards", "2"]);
    let (mut clients, epoch) = clients(&d);
    let (mut recovered, mut not_recovered) = (0, 0);
    // Several rounds of reset + resume while the feed misbehaves.
    for round in 0..4 {
        let mut next = Vec::new();
        for (i, (c, depth)) in clients.into_iter().enumerate() {
            let resume = c.resume_positions(&epoch, true);
            let mut c = c.reset_and_reconnect(&d.url(CLIENTS[i].0));
            std::thread::sleep(Duration::from_millis(150));
            let (got, symbols) = resubscribe(&mut c, 10 + round, depth, resume);
            assert_eq!(got, epoch, "feed faults never change the epoch");
            // Each symbol is all or nothing: those not recovered start afresh.
            let lost = c.forget_unrecovered(&symbols);
            not_recovered += lost;
            recovered += symbols.len() - lost;
            assert_clean(&c, "after resume");
            next.push((c, depth));
        }
        clients = next;
        let mut refs: Vec<&mut Client> = clients.iter_mut().map(|(c, _)| c).collect();
        pump_until(&mut refs, "more records", |c| c.records > 100);
    }
    let mut refs: Vec<(&mut Client, usize)> = clients
        .iter_mut()
        .map(|(c, d)| (c, usize::from(*d)))
        .collect();
    converge(&sim, &mut refs);
    for (c, depth) in &clients {
        assert_clean(c, &format!("depth {depth} json {}", c.json));
    }
    let counts = sim.fault_counts();
    assert!(counts.disconnects > 0 && counts.dropped > 0, "{counts:?}");
    assert!(
        recovered > 0,
        "no resume was recovered ({not_recovered} were not)"
    );
    assert!(d.metric("tickcast_feed_gaps_total") > 0);
}
