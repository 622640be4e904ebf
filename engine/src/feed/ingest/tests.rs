//! The ingester's sync logic through [`Replay`]: real rings, interest and metrics, no sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::config::FeedUrl;
use crate::fanout::ConnId;
use crate::replay::epoch::Epoch;

/// The fixture's epoch.
const EPOCH: u32 = 0x3f9c_0a17;

const SYMBOLS: &str = r#"{"type":"symbols","symbols":[{"symbol":"AAA-USD","px_decimals":2,"qty_decimals":2},{"symbol":"BBB-USD","px_decimals":2,"qty_decimals":2}]}"#;

/// Depth indexes the fixture subscribes to (depth 1 and the whole book).
const WATCHED: [usize; 2] = [0, 4];

struct Fixture {
    replay: Replay,
    ring: Arc<Ring>,
    interest: Arc<Interest>,
    requests: crossbeam_channel::Sender<IngestRequest>,
    /// Virtual time: what the ingester's loop would have read off the clocks.
    now: Stamp,
    _poll: Poll,
}

/// What came out of the ring, decoded enough to check the sync rules.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// A book or trade record: (sid, depth index or trade stream, kind, flags, seq).
    Record {
        sid: u32,
        stream: u8,
        kind: u8,
        flags: u8,
        seq: u64,
    },
    /// A status record: (sid, code).
    Status { sid: u32, code: u16 },
    /// A snapshot answering a subscription.
    Snapshot { sid: u32, seq: u64 },
    /// A resume's answer: per symbol (sid, recovered, seqs of the replayed book records, of
    /// the replayed trades, status code after them).
    Resumed(Vec<ResumedSymbol>),
}

/// (sid, recovered, replayed book seqs, replayed trade seqs, status code after them).
type ResumedSymbol = (u32, bool, Vec<u64>, Vec<u64>, Option<u16>);

fn fixture(format: Format) -> Fixture {
    let poll = Poll::new().unwrap();
    let waker = mio::Waker::new(poll.registry(), Token(7)).unwrap();
    let ring = Arc::new(Ring::new(4096, waker));
    let interest = Arc::new(Interest::new(1, 16));
    let (tx, rx) = crossbeam_channel::unbounded();
    let ctx = IngestContext {
        feed: FeedUrl::parse("ws://127.0.0.1:1/feed").unwrap(),
        rings: vec![ring.clone()],
        interest: interest.clone(),
        symbols: Arc::new(SymbolDirectory::default()),
        requests: rx,
        metrics: Arc::new(Metrics::new(1)),
        shutdown: Arc::new(AtomicBool::new(false)),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        stall_timeout: DEFAULT_STALL_TIMEOUT,
        epoch: Arc::new(EpochCell::new(Epoch::from_u32(EPOCH))),
        replay: ReplayLimits::default(),
    };
    let mut f = Fixture {
        replay: Replay::new(ctx).unwrap(),
        ring,
        interest,
        requests: tx,
        now: Stamp::now(),
        _poll: poll,
    };
    f.msg(SYMBOLS);
    f.msg(&snapshot("AAA-USD", 100));
    f.msg(&snapshot("BBB-USD", 500));
    // Subscribe one connection to both books at the watched depths, as a shard would.
    for sid in 0..2 {
        for d in WATCHED {
            let topic = Topic::book(sid, d, format);
            f.interest.add(0, topic);
            f.requests
                .send(IngestRequest::Snapshot {
                    shard: 0,
                    conn: ConnId {
                        index: 0,
                        generation: 0,
                    },
                    req: 1,
                    topic,
                })
                .unwrap();
        }
    }
    f.replay.serve_requests();
    let first = f.drain();
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(
        first
            .iter()
            .all(|o| matches!(o, Out::Snapshot { seq: 0, .. }))
    );
    f
}

fn snapshot(sym: &str, seq: u64) -> String {
    format!(
        r#"{{"type":"snapshot","symbol":"{sym}","seq":{seq},"ts":1,"bids":[["10.00","1.00"],["9.00","1.00"]],"asks":[["11.00","1.00"],["12.00","1.00"]]}}"#
    )
}

/// An update that changes the best bid's quantity (visible at every depth).
fn update(sym: &str, seq: u64) -> String {
    format!(
        r#"{{"type":"l2update","symbol":"{sym}","seq":{seq},"ts":2,"changes":[["buy","10.00","{}.00"]]}}"#,
        seq % 50 + 1
    )
}

fn heartbeat(sym: &str, seq: u64) -> String {
    format!(r#"{{"type":"heartbeat","symbol":"{sym}","seq":{seq},"ts":3}}"#)
}

impl Fixture {
    /// The `tickcast_feed_faults_total` counter of `label`.
    fn fault(&mut self, label: &str) -> u64 {
        let i = FeedMisbehaved::LABELS
            .iter()
            .position(|l| *l == label)
            .expect("a fault label");
        self.ingest_counter(|m| &m.faults[i])
    }

    fn msg(&mut self, m: &str) {
        self.replay.message(m.as_bytes(), self.now);
    }

    fn drain(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        while let Some(m) = self.ring.pop() {
            out.push(match m {
                ShardMsg::Record { topic, bytes } => {
                    let h = header(&bytes, topic.format);
                    Out::Record {
                        sid: topic.sid,
                        stream: topic.stream,
                        kind: h.0,
                        flags: h.1,
                        seq: h.2,
                    }
                }
                ShardMsg::Status { sid, format, bytes } => Out::Status {
                    sid,
                    code: status_code(&bytes, format),
                },
                ShardMsg::Snapshot { topic, bytes, .. } => Out::Snapshot {
                    sid: topic.sid,
                    seq: header(&bytes, topic.format).2,
                },
                ShardMsg::Resumed(a) => {
                    assert_eq!(a.epoch, Epoch::from_u32(EPOCH));
                    Out::Resumed(
                        a.symbols
                            .iter()
                            .map(|s| {
                                let seqs = |v: &[Bytes]| {
                                    v.iter()
                                        .map(|b| header(b, Format::Binary).2)
                                        .collect::<Vec<_>>()
                                };
                                (
                                    s.sid,
                                    s.recovered,
                                    seqs(&s.book),
                                    seqs(&s.trades),
                                    s.status.as_ref().map(|b| status_code(b, Format::Binary)),
                                )
                            })
                            .collect(),
                    )
                }
            });
        }
        out
    }

    fn ingest_counter(
        &mut self,
        f: impl Fn(&IngestMetrics) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        self.replay.serve_requests();
        f(&self.replay.metrics().ingest).load(Ordering::Relaxed)
    }
}

/// (kind, flags, seq) of a record in either format.
fn header(bytes: &[u8], format: Format) -> (u8, u8, u64) {
    match format {
        Format::Binary => (
            bytes[2],
            bytes[3],
            u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        ),
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(&bytes[1..]).unwrap();
            let kind = match v["kind"].as_str().unwrap() {
                "snapshot" => 1,
                "delta" => 2,
                "trade" => 3,
                _ => 4,
            };
            // The JSON form of the flags: snapshot by kind, checksum by a "crc" field.
            let crc = if v.get("crc").is_some() {
                wire::FLAG_CHECKSUM
            } else {
                0
            };
            (kind, u8::from(kind == 1) | crc, v["seq"].as_u64().unwrap())
        }
    }
}

fn status_code(bytes: &[u8], format: Format) -> u16 {
    match format {
        Format::Binary => {
            assert_eq!(bytes[2], RecordKind::Status as u8);
            assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 0);
            u16::from_le_bytes([bytes[32], bytes[33]])
        }
        Format::Json => {
            assert_eq!(bytes[0], b',', "JSON records are comma-prefixed");
            let v: serde_json::Value = serde_json::from_slice(&bytes[1..]).unwrap();
            assert_eq!(v["kind"], "status");
            assert_eq!(v["seq"], 0);
            u16::try_from(v["code"].as_u64().unwrap()).unwrap()
        }
    }
}

fn deltas(sid: u32, seq: u64) -> Vec<Out> {
    WATCHED
        .iter()
        .map(|&d| Out::Record {
            sid,
            stream: d as u8,
            kind: 2,
            flags: wire::FLAG_CHECKSUM,
            seq,
        })
        .collect()
}

fn resync(sid: u32, seq: u64) -> Vec<Out> {
    WATCHED
        .iter()
        .map(|&d| Out::Record {
            sid,
            stream: d as u8,
            kind: 1,
            flags: FLAG_SNAPSHOT | wire::FLAG_CHECKSUM,
            seq,
        })
        .collect()
}

#[test]
fn in_order_updates_publish_one_delta_per_watched_depth() {
    let mut f = fixture(Format::Binary);
    f.msg(&update("AAA-USD", 101));
    f.msg(&update("BBB-USD", 501));
    f.msg(&update("AAA-USD", 102));
    let mut want = deltas(0, 1);
    want.extend(deltas(1, 1));
    want.extend(deltas(0, 2));
    assert_eq!(f.drain(), want);
    assert!(f.replay.take_feed_requests().is_empty());
}

#[test]
fn gap_resyncs_that_symbol_alone_with_statuses_around_a_flagged_snapshot() {
    for format in [Format::Binary, Format::Json] {
        let mut f = fixture(format);
        f.msg(&update("AAA-USD", 101));
        f.drain();
        // 102 and 103 lost: a gap.
        f.msg(&update("AAA-USD", 104));
        assert_eq!(f.drain(), vec![Out::Status { sid: 0, code: 1 }]);
        assert_eq!(
            f.replay.take_feed_requests(),
            vec![r#"{"op":"snapshot","symbol":"AAA-USD"}"#.to_owned()]
        );
        assert!(!f.replay.is_synced(0));
        // The other symbol never pauses; the stale one's updates are ignored, no second request.
        f.msg(&update("BBB-USD", 501));
        f.msg(&update("AAA-USD", 105));
        assert_eq!(f.drain(), deltas(1, 1));
        assert!(f.replay.take_feed_requests().is_empty());
        // The snapshot replaces the clients' book, continuing each stream's seq, then resumes.
        f.msg(&snapshot("AAA-USD", 105));
        let mut want = resync(0, 2);
        want.push(Out::Status { sid: 0, code: 2 });
        assert_eq!(f.drain(), want);
        f.msg(&update("AAA-USD", 106));
        assert_eq!(f.drain(), deltas(0, 3));
        assert_eq!(f.ingest_counter(|m| &m.gaps), 1);
    }
}

#[test]
fn two_swapped_updates_are_applied_in_order_without_a_resync() {
    let mut f = fixture(Format::Binary);
    f.msg(&update("AAA-USD", 102));
    assert!(f.drain().is_empty(), "held for its predecessor");
    f.msg(&update("BBB-USD", 501));
    f.msg(&update("AAA-USD", 101));
    let mut want = deltas(1, 1);
    want.extend(deltas(0, 1));
    want.extend(deltas(0, 2));
    assert_eq!(f.drain(), want);
    assert!(f.replay.take_feed_requests().is_empty());
    assert_eq!(f.ingest_counter(|m| &m.gaps), 0);
    // A duplicate of the held update, and later the old one again, are only counted.
    f.msg(&update("AAA-USD", 104));
    f.msg(&update("AAA-USD", 104));
    f.msg(&update("AAA-USD", 101));
    assert!(f.drain().is_empty());
    assert_eq!(f.ingest_counter(|m| &m.stale), 2);
    f.msg(&update("AAA-USD", 103));
    let mut want = deltas(0, 3);
    want.extend(deltas(0, 4));
    assert_eq!(f.drain(), want);
}

#[test]
fn an_update_held_too_long_means_its_predecessor_is_lost() {
    let mut f = fixture(Format::Binary);
    f.msg(&update("AAA-USD", 102));
    // Within the window it waits (the loop expires held updates once per turn)...
    f.replay
        .expire_held(f.now.later(REORDER_WINDOW - Duration::from_millis(1)));
    assert!(f.drain().is_empty());
    assert!(f.replay.take_feed_requests().is_empty());
    // ... and at the end of it, its predecessor is lost.
    f.replay.expire_held(f.now.later(REORDER_WINDOW));
    assert_eq!(f.drain(), vec![Out::Status { sid: 0, code: 1 }]);
    assert_eq!(f.replay.take_feed_requests().len(), 1);
    // So is one that meets another gap, or a heartbeat past it.
    let mut f = fixture(Format::Binary);
    f.msg(&update("AAA-USD", 102));
    f.msg(&update("AAA-USD", 103));
    assert_eq!(f.drain(), vec![Out::Status { sid: 0, code: 1 }]);
    assert_eq!(f.fault("gap"), 1);
    let mut f = fixture(Format::Binary);
    f.msg(&update("AAA-USD", 102));
    f.msg(&heartbeat("AAA-USD", 102));
    assert_eq!(f.drain(), vec![Out::Status { sid: 0, code: 1 }]);
}

#[test]
fn duplicates_and_stale_updates_are_dropped_and_counted() {
    let mut f = fixture(Format::Binary);
    f.msg(&update("AAA-USD", 101));
    f.msg(&update("AAA-USD", 101));
    f.msg(&update("AAA-USD", 99));
    assert_eq!(f.drain(), deltas(0, 1));
    assert_eq!(f.ingest_counter(|m| &m.stale), 2);
    assert!(f.replay.take_feed_requests().is_empty());
}

#[test]
fn malformed_and_unknown_symbol_messages_never_make_a_symbol_stale() {
    let mut f = fixture(Format::Binary);
    let good = update("AAA-USD", 101);
    for bad in [
        good[..good.len() / 2].to_owned(),
        good.replace(',', ";"),
        "not json: {".to_owned(),
        update("UNLISTED-XXX", 101),
        heartbeat("UNLISTED-XXX", 7),
        r#"{"type":"l2update","symbol":"AAA-USD","seq":101,"ts":2,"changes":[["buy","1.2.3","1"]]}"#
            .to_owned(),
        r#"{"type":"mystery"}"#.to_owned(),
        String::new(),
    ] {
        f.msg(&bad);
    }
    assert!(f.drain().is_empty());
    assert!(f.replay.take_feed_requests().is_empty());
    assert_eq!(f.ingest_counter(|m| &m.bad_messages), 8);
    // All eight are counted under `malformed`, nothing under the sync faults.
    assert_eq!(f.fault("malformed"), 8);
    assert_eq!(f.fault("gap"), 0);
    assert!(f.replay.is_synced(0) && f.replay.is_synced(1));
    f.msg(&good);
    assert_eq!(f.drain(), deltas(0, 1));
}

#[test]
fn heartbeats_reveal_a_lost_last_update() {
    let mut f = fixture(Format::Binary);
    f.msg(&heartbeat("AAA-USD", 100));
    f.msg(&heartbeat("AAA-USD", 99));
    assert!(f.drain().is_empty());
    f.msg(&heartbeat("BBB-USD", 501));
    assert_eq!(f.drain(), vec![Out::Status { sid: 1, code: 1 }]);
    assert_eq!(
        f.replay.take_feed_requests(),
        vec![r#"{"op":"snapshot","symbol":"BBB-USD"}"#.to_owned()]
    );
}

#[test]
fn feed_loss_makes_every_symbol_stale_once_and_snapshots_resume_them() {
    let mut f = fixture(Format::Json);
    f.replay.feed_lost(f.now);
    assert_eq!(
        f.drain(),
        vec![
            Out::Status { sid: 0, code: 1 },
            Out::Status { sid: 1, code: 1 }
        ]
    );
    // Losing the feed again while stale says nothing new; nothing is asked of a dead feed.
    f.replay.feed_lost(f.now);
    assert!(f.drain().is_empty());
    assert!(f.replay.take_feed_requests().is_empty());
    // The next session starts with the symbols and a snapshot of each.
    f.msg(SYMBOLS);
    f.msg(&snapshot("AAA-USD", 7));
    f.msg(&snapshot("BBB-USD", 9));
    let mut want = resync(0, 1);
    want.push(Out::Status { sid: 0, code: 2 });
    want.extend(resync(1, 1));
    want.push(Out::Status { sid: 1, code: 2 });
    assert_eq!(f.drain(), want);
    f.msg(&update("AAA-USD", 8));
    assert_eq!(f.drain(), deltas(0, 2));
}

#[test]
fn a_snapshot_that_does_not_load_goes_stale_and_asks_again() {
    let mut f = fixture(Format::Binary);
    let bad = snapshot("AAA-USD", 200).replace("\"9.00\"", "\"10.00\"");
    f.msg(&bad);
    assert_eq!(f.drain(), vec![Out::Status { sid: 0, code: 1 }]);
    assert_eq!(f.replay.take_feed_requests().len(), 1);
    f.msg(&snapshot("AAA-USD", 201));
    let mut want = resync(0, 1);
    want.push(Out::Status { sid: 0, code: 2 });
    assert_eq!(f.drain(), want);
}

#[test]
fn statuses_go_only_to_shards_watching_the_symbol() {
    let mut f = fixture(Format::Binary);
    // Nobody watches BBB in JSON and nobody watches a third format: one record per format
    // with interest. Remove the interest in BBB: its gap publishes nothing.
    for d in WATCHED {
        f.interest.remove(0, Topic::book(1, d, Format::Binary));
    }
    f.msg(&update("BBB-USD", 510));
    assert!(f.drain().is_empty());
    assert_eq!(f.replay.take_feed_requests().len(), 1);
    // A trades-only subscriber still hears about its symbol.
    f.interest.add(0, Topic::trades(1, Format::Binary));
    f.msg(&snapshot("BBB-USD", 600));
    assert_eq!(f.drain(), vec![Out::Status { sid: 1, code: 2 }]);
}

/// Asks for a snapshot of `topic` as a shard would and returns its seq.
fn snapshot_seq(f: &mut Fixture, topic: Topic) -> u64 {
    f.requests
        .send(IngestRequest::Snapshot {
            shard: 0,
            conn: ConnId {
                index: 1,
                generation: 0,
            },
            req: 9,
            topic,
        })
        .unwrap();
    f.replay.serve_requests();
    let got: Vec<u64> = f
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Out::Snapshot { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1, "one snapshot answers the request");
    got[0]
}

/// The trap of issue 11: a stream nobody watches must keep its numbering, so that a position
/// names exactly one book state (a later snapshot never reuses a seq for a different book).
#[test]
fn an_unwatched_stream_keeps_its_numbering() {
    let mut f = fixture(Format::Binary);
    let topic = Topic::book(0, 1, Format::Binary); // depth 10, not watched by the fixture
    f.interest.add(0, topic);
    f.msg(&update("AAA-USD", 101));
    let held = snapshot_seq(&mut f, topic);
    assert_eq!(held, 1);
    // The only watcher leaves; the book moves at every depth.
    f.interest.remove(0, topic);
    f.msg(&update("AAA-USD", 102));
    f.msg(&update("AAA-USD", 103));
    f.drain();
    f.interest.add(0, topic);
    let again = snapshot_seq(&mut f, topic);
    assert_eq!(
        again,
        held + 2,
        "two changes of the depth-10 window while unwatched are two positions"
    );
    // A change far from its window leaves an unwatched stream's seq alone.
    f.interest.remove(0, topic);
    f.msg(
        r#"{"type":"l2update","symbol":"AAA-USD","seq":104,"ts":2,"changes":[["sell","99.00","1.00"]]}"#,
    );
    f.drain();
    f.interest.add(0, topic);
    assert_eq!(
        snapshot_seq(&mut f, topic),
        again + 1,
        "99.00 is the 3rd ask: inside depth 10"
    );
    f.interest.remove(0, topic);
    for (i, px) in (105..).zip([
        "98.00", "97.00", "96.00", "95.00", "94.00", "93.00", "92.00", "91.00",
    ]) {
        f.msg(&format!(
            r#"{{"type":"l2update","symbol":"AAA-USD","seq":{i},"ts":2,"changes":[["sell","{px}","1.00"]]}}"#
        ));
    }
    f.drain();
    f.interest.add(0, topic);
    let at = snapshot_seq(&mut f, topic);
    f.interest.remove(0, topic);
    // 11 asks now: one more beyond the 10th level does not touch the depth-10 window.
    f.msg(
        r#"{"type":"l2update","symbol":"AAA-USD","seq":113,"ts":2,"changes":[["sell","150.00","1.00"]]}"#,
    );
    f.drain();
    f.interest.add(0, topic);
    assert_eq!(snapshot_seq(&mut f, topic), at);
}

/// The `recv_ts` of every record in the ring, as JSON records show it.
fn recv_stamps(f: &mut Fixture) -> Vec<u64> {
    f.replay.serve_requests();
    let mut out = Vec::new();
    while let Some(msg) = f.ring.pop() {
        if let ShardMsg::Record { bytes, .. } | ShardMsg::Status { bytes, .. } = msg {
            let v: serde_json::Value = serde_json::from_slice(&bytes[1..]).unwrap();
            out.push(v["recv_ts"].as_u64().unwrap());
        }
    }
    out
}

#[test]
fn records_carry_the_time_the_loop_handed_down() {
    let mut f = fixture(Format::Json);
    f.drain();
    f.now = Stamp {
        mono: f.now.mono,
        realtime_ns: 1_763_700_000_123_456_789,
    };
    f.msg(&update("AAA-USD", 101));
    let stamps = recv_stamps(&mut f);
    assert!(!stamps.is_empty());
    assert!(
        stamps.iter().all(|&t| t == 1_763_700_000_123_456_789),
        "{stamps:?}"
    );
    // Status records (here: the feed lost) carry the time of the loss.
    f.replay.feed_lost(f.now.later(Duration::from_secs(1)));
    let stamps = recv_stamps(&mut f);
    assert!(!stamps.is_empty());
    assert!(
        stamps.iter().all(|&t| t == 1_763_700_001_123_456_789),
        "{stamps:?}"
    );
}

fn resume_request(epoch: u32, sid: u32, book: Option<u64>) -> IngestRequest {
    IngestRequest::Resume(Box::new(ResumeRequest {
        shard: 0,
        conn: ConnId {
            index: 3,
            generation: 0,
        },
        req: 9,
        epoch: Some(Epoch::from_u32(epoch)),
        depth_idx: WATCHED[0],
        format: Format::Binary,
        tier: None,
        symbols: vec![(sid, book, None)],
    }))
}

/// The replay windows wired into the ingester: a resume is answered from them in ring order
/// (replay up to the last record, then live continues), a replacing snapshot is part of the
/// stream, a wrong epoch or a position beyond the window is not recovered, and a stream whose
/// only watcher left stays windowed (and numbered) for the age bound, then is forgotten.
#[test]
fn resumes_are_answered_from_the_replay_windows_in_ring_order() {
    let mut f = fixture(Format::Binary);
    for seq in 101..=105 {
        f.msg(&update("AAA-USD", seq));
    }
    f.drain();
    // The client last applied seq 2 of AAA-USD's depth-1 stream (now at 5).
    f.requests.send(resume_request(EPOCH, 0, Some(2))).unwrap();
    f.replay.serve_requests();
    f.msg(&update("AAA-USD", 106));
    assert_eq!(
        f.drain()[..2],
        [
            Out::Resumed(vec![(0, true, vec![3, 4, 5], vec![], None)]),
            Out::Record {
                sid: 0,
                stream: WATCHED[0] as u8,
                kind: 2,
                flags: wire::FLAG_CHECKSUM,
                seq: 6
            },
        ]
    );
    // Another epoch, or a position past the stream, is not recovered.
    for (epoch, pos) in [(EPOCH ^ 1, 2), (EPOCH, 99)] {
        f.requests
            .send(resume_request(epoch, 0, Some(pos)))
            .unwrap();
        f.replay.serve_requests();
        assert_eq!(
            f.drain(),
            [Out::Resumed(vec![(0, false, vec![], vec![], None)])]
        );
    }
    // A gap: the stale symbol's resume replays up to its last record, then says it is stale;
    // once the feed's snapshot lands, the replacing snapshot is replayed as part of the stream.
    f.msg(&update("AAA-USD", 109));
    f.drain();
    f.requests.send(resume_request(EPOCH, 0, Some(5))).unwrap();
    f.replay.serve_requests();
    assert_eq!(
        f.drain(),
        [Out::Resumed(vec![(0, true, vec![6], vec![], Some(1))])]
    );
    f.msg(&snapshot("AAA-USD", 109));
    f.drain();
    f.requests.send(resume_request(EPOCH, 0, Some(6))).unwrap();
    f.replay.serve_requests();
    assert_eq!(
        f.drain(),
        [Out::Resumed(vec![(0, true, vec![7], vec![], None)])]
    );
    // The only watcher leaves: the stream stays windowed (exact deltas) for the age bound.
    let topic = Topic::book(0, WATCHED[0], Format::Binary);
    f.interest.remove(0, topic);
    f.msg(&update("AAA-USD", 110));
    assert!(
        f.drain().iter().all(
            |o| !matches!(o, Out::Record { stream, sid: 0, .. } if *stream == WATCHED[0] as u8)
        )
    );
    f.requests.send(resume_request(EPOCH, 0, Some(7))).unwrap();
    f.replay.serve_requests();
    assert_eq!(
        f.drain(),
        [Out::Resumed(vec![(0, true, vec![8], vec![], None)])]
    );
    // Past the age bound, the window is forgotten: not recovered.
    f.now = f
        .now
        .later(crate::replay::DEFAULT_AGE + Duration::from_secs(1));
    f.msg(&update("AAA-USD", 111));
    f.requests.send(resume_request(EPOCH, 0, Some(8))).unwrap();
    f.replay.serve_requests();
    assert_eq!(
        f.drain().last(),
        Some(&Out::Resumed(vec![(0, false, vec![], vec![], None)]))
    );
    f.replay.serve_requests();
    let m = &f.replay.metrics().replay;
    assert!(m.hits.load(Ordering::Relaxed) >= 4);
    assert!(m.misses.load(Ordering::Relaxed) >= 3);
}

/// The decoder's scanner declines anything but the feed's exact templates; simd-json then
/// decides. A valid message in another form is applied and not counted; an invalid one is
/// counted once, as `malformed`.
#[test]
fn the_scanner_keeps_the_malformed_counters_exact() {
    let mut f = fixture(Format::Binary);
    f.drain();
    let mut seq = 100;
    let mut next = |form: &dyn Fn(String) -> String| {
        seq += 1;
        form(update("AAA-USD", seq))
    };
    let valid: Vec<String> = vec![
        next(&|m| m.replace(",\"seq\"", ", \"seq\"")),
        next(&|m| format!("{m}\n")),
        next(&|m| m.replace("AAA-USD", "AAA\\u002dUSD")),
        next(&|m| {
            m.replace(
                "{\"type\":\"l2update\",",
                "{\"type\":\"l2update\",\"x\":[1],",
            )
        }),
        next(&|m| m.replace("\"ts\":2", "\"ts\":2,\"venue\":\"é\"")),
        next(&|m| m.replace("\"10.00\"", "\"10.000\"")),
        next(&|m| m),
    ];
    for (i, m) in valid.iter().enumerate() {
        f.msg(m);
        assert_eq!(f.drain(), deltas(0, 1 + i as u64), "{m}");
    }
    let invalid = [
        update("AAA-USD", 108).replace("\"seq\":108", "\"seq\":1e2"),
        update("AAA-USD", 108).replace("\"10.00\"", "\"1e1\""),
        update("AAA-USD", 108).replace("]]}", "],]}"),
        update("AAA-USD", 108) + "x",
        update("AAA-USD", 108).replace("\"buy\"", "\"bid\""),
    ];
    for m in &invalid {
        f.msg(m);
    }
    assert!(f.drain().is_empty());
    assert_eq!(f.ingest_counter(|m| &m.bad_messages), 5);
    assert_eq!(f.fault("malformed"), 5);
    assert_eq!(f.fault("gap"), 0);
    assert!(f.replay.is_synced(0));
}

/// The feed's read buffer over a real loopback socket: a message larger than the buffer
/// grows it, frames cut across reads are found whole, and the buffer shrinks back when empty.
#[test]
// A real peer thread that dribbles bytes, and a deadline for the test itself.
#[allow(clippy::disallowed_methods)]
fn the_read_buffer_grows_for_a_large_message_and_finds_frames_across_reads() {
    use std::io::Write as _;
    use std::net::TcpListener;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let big = vec![b'x'; 3 * READ_BUF + 17];
    let small: Vec<&[u8]> = vec![b"{\"a\":1}", b"{\"b\":2}"];
    let writer = std::thread::spawn(move || {
        let mut all = frame(&big);
        for s in [&b"{\"a\":1}"[..], b"{\"b\":2}"] {
            all.extend(frame(s));
        }
        // Dribbled so that frames are cut across reads.
        for chunk in all.chunks(200_003) {
            server.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        server
    });
    sock.set_nonblocking(true).unwrap();
    let mut conn = FeedConn {
        sock,
        ws: ClientWs::new([5; 32]),
        buf: vec![0; READ_BUF],
        start: 0,
        end: 0,
        need: 0,
        read_ns: 0,
        out: Vec::new(),
    };
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "got {} messages",
            got.len()
        );
        match conn.ws.next(&conn.buf[conn.start..conn.end], &mut conn.out) {
            Ok(Next::Frame(Input::Text(r), len)) => {
                got.push(conn.buf[conn.start + r.start..conn.start + r.end].to_vec());
                conn.start += len;
            }
            Ok(Next::Need(n)) => {
                conn.need = n;
                if !conn.read().unwrap() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let _server = writer.join().unwrap();
    assert_eq!(got[0].len(), 3 * READ_BUF + 17);
    assert!(got[0].iter().all(|&b| b == b'x'));
    assert_eq!(got[1], small[0]);
    assert_eq!(got[2], small[1]);
    assert!(conn.read_ns > 0, "reads are stamped");
    assert!(
        conn.buf.len() > 3 * READ_BUF,
        "the buffer grew for the large frame"
    );
    // Empty again: the next read shrinks it back.
    assert_eq!(conn.start, conn.end);
    conn.need = 0;
    assert!(!conn.read().unwrap());
    assert_eq!(conn.buf.len(), READ_BUF);
}
