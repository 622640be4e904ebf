//! The slow-consumer ladder, `max_hz` tiers and snapshot pacing in the shard simulator, in
//! virtual time (`cargo test -p tickcast ladder`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::book::Level;
use crate::fanout::TRADES_STREAM;
use crate::wire::Trade;

/// Depth index of depth 10 (the simulator's book streams).
const D10: usize = DEPTH10;

impl Sim {
    /// The client of `idx` sends a subscribe request (JSON text) and the reply is read.
    fn subscribe_json(&mut self, idx: u32, json: &str) -> String {
        self.send(idx, &client_frame(0x1, json.as_bytes()));
        let frames = self.read(idx);
        frames
            .iter()
            .filter(|f| f.opcode == 0x1)
            .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
            .find(|t| t.contains(r#""op":"subscribed""#))
            .unwrap_or_else(|| panic!("no reply: {frames:?}"))
    }

    /// A book record of `sid` with `levels` levels per side.
    fn book_record(&self, kind: RecordKind, sid: u32, seq: u64, levels: usize) -> Bytes {
        let mut out = BytesMut::new();
        let hdr = RecordHeader {
            kind,
            flags: if kind == RecordKind::Snapshot { 1 } else { 0 },
            sid,
            seq,
            exch_ts: 1,
            recv_ts: 2,
        };
        let bids: Vec<Level> = (0..levels as i64)
            .map(|i| Level {
                px: 1000 - i,
                qty: 1,
            })
            .collect();
        let asks: Vec<Level> = (0..levels as i64)
            .map(|i| Level {
                px: 1001 + i,
                qty: 1,
            })
            .collect();
        wire::encode_book(&mut out, &hdr, &bids, &asks);
        out.freeze()
    }

    /// Answers every snapshot request with a snapshot of `levels` levels per side; returns
    /// the topics asked for.
    fn answer_with(&mut self, levels: usize) -> Vec<Topic> {
        let reqs = self.take_requests();
        let mut topics = Vec::new();
        for r in reqs {
            let IngestRequest::Snapshot {
                conn, req, topic, ..
            } = r
            else {
                continue;
            };
            let bytes = self.book_record(
                RecordKind::Snapshot,
                topic.sid,
                self.seq[topic.sid as usize],
                levels,
            );
            assert_eq!(
                self.ring.push(ShardMsg::Snapshot {
                    conn,
                    req,
                    topic,
                    bytes
                }),
                Push::Queued
            );
            topics.push(topic);
        }
        topics
    }

    /// The ingester's tick of a conflated topic: one snapshot record with the current seq.
    fn tick(&mut self, topic: Topic) -> Bytes {
        let bytes = self.book_record(
            RecordKind::Snapshot,
            topic.sid,
            self.seq[topic.sid as usize],
            10,
        );
        assert_eq!(
            self.ring.push(ShardMsg::Record {
                topic,
                bytes: bytes.clone()
            }),
            Push::Queued
        );
        bytes
    }

    /// Publishes trade number `n` of `sid` (trades seq = n).
    fn trade(&mut self, sid: u32, n: u64) {
        let mut out = BytesMut::new();
        let hdr = RecordHeader {
            kind: RecordKind::Trade,
            flags: 0,
            sid,
            seq: n,
            exch_ts: 1,
            recv_ts: 2,
        };
        let t = Trade {
            px: 1000,
            qty: 1,
            trade_id: n,
            taker_side: crate::book::Side::Bid,
        };
        wire::encode_trade(&mut out, &hdr, &t);
        let topic = Topic {
            sid,
            stream: TRADES_STREAM,
            format: Format::Binary,
        };
        assert_eq!(
            self.ring.push(ShardMsg::Record {
                topic,
                bytes: out.freeze()
            }),
            Push::Queued
        );
    }

    fn texts(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .filter(|f| f.opcode == 0x1)
            .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
            .collect()
    }

    fn interest(&self, topic: Topic) -> bool {
        self.core.t.ctx.interest.any(0, topic)
    }

    fn ladder_metric(&self) -> (u64, u64, u64) {
        let m = self.metrics();
        (
            m.to_conflating.load(Ordering::Relaxed),
            m.to_live.load(Ordering::Relaxed),
            m.conflating.load(Ordering::Relaxed),
        )
    }
}

fn ladder_sim() -> Sim {
    Sim::new(4, 4096, |c| {
        c.max_outbuf_bytes = 64 << 10;
        c.conflate.soft_pct = 25; // 16,375 bytes
        c.conflate.low_pct = 5; // 3,275 bytes
        c.conflate.hz = 5;
        c.conflate.dwell = Duration::from_secs(1);
        c.conflate.grace = Duration::from_secs(10);
    })
}

/// A client subscribed to the book (depth 10) and trades of S0, its snapshot read.
fn book_and_trades(sim: &mut Sim) -> u32 {
    let idx = sim.ws_client();
    sim.subscribe_json(
        idx,
        r#"{"op":"subscribe","id":1,"symbols":["S0"],"depth":10}"#,
    );
    sim.answer_with(10);
    sim.turn();
    let got: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
    assert_eq!(got, [(RecordKind::Snapshot as u8, 0, 0)]);
    idx
}

#[test]
fn ladder_conflates_books_keeps_trades_live_then_returns_to_deltas_from_a_snapshot() {
    let mut sim = ladder_sim();
    let idx = book_and_trades(&mut sim);
    let deltas = Topic::book(0, D10, Format::Binary);
    let conflated = Topic::conflated(0, D10, 2, Format::Binary); // 5 Hz
    // The client stops reading (4 KiB socket buffer); deltas and trades pile up.
    sim.socket(idx).window = 4096;
    let mut trade_no = 0;
    let mut turns = 0;
    while sim.ladder_metric().0 == 0 {
        for _ in 0..20 {
            assert!(sim.publish(0));
        }
        trade_no += 1;
        sim.trade(0, trade_no);
        sim.turn();
        turns += 1;
        assert!(turns < 100, "never conflated");
    }
    assert_eq!(sim.ladder_metric(), (1, 0, 1));
    // Its book stream left the deltas for the 5 Hz conflated topic; trades stay.
    assert!(!sim.interest(deltas) && sim.interest(conflated));
    assert!(sim.core.t.subs.get(deltas).is_empty());
    // Its buffer is past the pace mark: its fresh snapshot is not asked for yet.
    assert!(sim.take_requests().is_empty());
    // Deltas no longer reach it; trades do (and the out-buffer takes them).
    let before = sim.core.conn(idx).unwrap().out_len();
    for _ in 0..50 {
        sim.publish(0);
    }
    trade_no += 1;
    sim.trade(0, trade_no);
    sim.turn();
    let after = sim.core.conn(idx).unwrap().out_len();
    assert!(after > before && after - before < 200, "{before} → {after}");
    // It reads again: what was queued, the `conflating` notice, then room: the snapshot of
    // the conflated topic is requested.
    sim.socket(idx).window = WINDOW;
    let mut frames = sim.read(idx);
    frames.extend(sim.read(idx));
    let texts = Sim::texts(&frames);
    assert!(
        texts.iter().any(
            |t| t == r#"{"max_hz":5,"op":"conflating","symbols":["S0"]}"#
                || t.contains(r#""op":"conflating""#) && t.contains(r#""max_hz":5"#)
        ),
        "{texts:?}"
    );
    let records: Vec<_> = frames.iter().flat_map(Frame::records).collect();
    let trades: Vec<u64> = records
        .iter()
        .filter(|r| r.0 == RecordKind::Trade as u8)
        .map(|r| r.2)
        .collect();
    assert_eq!(
        trades,
        (1..=trade_no).collect::<Vec<_>>(),
        "every trade, in order"
    );
    assert_eq!(sim.answer_with(10), [conflated]);
    sim.turn();
    let got: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
    let seq = sim.seq[0];
    assert_eq!(got, [(RecordKind::Snapshot as u8, 0, seq)]);
    // Ticks arrive as replacing snapshots with the stream's current seq.
    for _ in 0..3 {
        sim.publish(0);
    }
    sim.tick(conflated);
    sim.turn();
    let got: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
    assert_eq!(got, [(RecordKind::Snapshot as u8, 0, seq + 3)]);
    // Drained, but the dwell (1 s) has not passed: still conflating.
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.ladder_metric(), (1, 0, 1));
    // After it: live again, announced, from a fresh snapshot of the deltas topic.
    sim.advance(Duration::from_millis(600));
    assert_eq!(sim.ladder_metric(), (1, 1, 0));
    let texts = Sim::texts(&sim.read(idx));
    assert!(
        texts
            .iter()
            .any(|t| t.contains(r#""op":"live""#) && t.contains("S0")),
        "{texts:?}"
    );
    assert!(sim.interest(deltas) && !sim.interest(conflated));
    assert_eq!(sim.answer_with(10), [deltas]);
    sim.publish(0);
    sim.turn();
    let got: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
    let seq = sim.seq[0];
    assert_eq!(
        got,
        [
            (RecordKind::Snapshot as u8, 0, seq - 1),
            (RecordKind::Delta as u8, 0, seq)
        ]
    );
}

#[test]
fn ladder_hysteresis_a_connection_near_the_marks_does_not_flap() {
    let mut sim = ladder_sim();
    let idx = book_and_trades(&mut sim);
    sim.socket(idx).window = 1024;
    let soft = 64 * 1024 / 100 * 25;
    let low = 64 * 1024 / 100 * 5;
    // Push it just past the soft mark.
    let mut n = 0;
    while sim.ladder_metric().0 == 0 {
        n += 1;
        sim.trade(0, n);
        sim.publish(0);
        sim.turn();
    }
    // For ten virtual seconds it hovers around the soft mark: it reads a little, trades keep
    // coming, its level stays between the marks (above low): no way back, no second move.
    for _ in 0..100 {
        for _ in 0..4 {
            n += 1;
            sim.trade(0, n);
        }
        sim.advance(Duration::from_millis(50));
        let level = sim.core.conn(idx).unwrap().out_len();
        if level > soft - 2000 {
            // Read a bit: the kernel buffer empties, the next write takes 1 KiB.
            let s = sim.socket(idx);
            s.read.clear();
            s.in_kernel.clear();
            sim.core.handle_writable(idx);
            sim.core.write_queued(&mut sim.net);
        }
        let level = sim.core.conn(idx).unwrap().out_len();
        assert!(level > low, "stays between the marks: {level}");
        assert!(!sim.is_gone(idx));
        sim.advance(Duration::from_millis(50));
    }
    assert_eq!(sim.ladder_metric(), (1, 0, 1), "one move up, none back");
    // Drained below the low mark: back to live once (the dwell is long over).
    sim.socket(idx).window = WINDOW;
    sim.read(idx);
    sim.advance(Duration::from_millis(200));
    assert_eq!(sim.ladder_metric(), (1, 1, 0));
    // Near the low mark, live: small levels never move it up again.
    for _ in 0..20 {
        sim.publish(0);
        sim.turn();
        sim.answer_with(10);
        sim.turn();
        sim.read(idx);
    }
    assert_eq!(sim.ladder_metric(), (1, 1, 0));
}

#[test]
fn ladder_a_stopped_reader_is_still_evicted() {
    // Book only: once conflating it owes nothing more, yet it never drains: evicted after
    // conflate-grace.
    let mut sim = ladder_sim();
    let idx = sim.ws_client();
    sim.subscribe_json(
        idx,
        r#"{"op":"subscribe","id":1,"symbols":["S0"],"channels":["book"],"depth":10}"#,
    );
    sim.answer_with(10);
    sim.turn();
    sim.socket(idx).window = 4096;
    while sim.ladder_metric().0 == 0 {
        for _ in 0..20 {
            sim.publish(0);
        }
        sim.turn();
    }
    sim.advance(Duration::from_secs(9));
    assert!(sim.metrics().evicted_slow.load(Ordering::Relaxed) == 0);
    sim.advance(Duration::from_millis(1200));
    assert_eq!(sim.metrics().evicted_slow.load(Ordering::Relaxed), 1);
    assert_eq!(
        sim.ladder_metric().2,
        0,
        "no longer counted on the conflating rung"
    );
    // With trades flowing it hits the hard bound sooner, as before the ladder.
    let mut sim = ladder_sim();
    let idx = book_and_trades(&mut sim);
    sim.socket(idx).window = 4096;
    let mut n = 0;
    while sim.metrics().evicted_slow.load(Ordering::Relaxed) == 0 {
        for _ in 0..50 {
            n += 1;
            sim.trade(0, n);
        }
        sim.turn();
        assert!(n < 100_000);
    }
    assert!(!sim.is_gone(idx), "kept until evict-timeout, as before");
}

#[test]
fn max_hz_tiers_share_one_encoding_and_trades_are_never_conflated() {
    let mut sim = ladder_sim();
    let a = sim.ws_client();
    let b = sim.ws_client();
    let c = sim.ws_client();
    let ra = sim.subscribe_json(
        a,
        r#"{"op":"subscribe","id":1,"symbols":["S1"],"depth":10,"max_hz":5}"#,
    );
    let rb = sim.subscribe_json(
        b,
        r#"{"op":"subscribe","id":1,"symbols":["S1"],"depth":10,"max_hz":7}"#,
    );
    let rc = sim.subscribe_json(
        c,
        r#"{"op":"subscribe","id":1,"symbols":["S1"],"depth":10,"max_hz":1}"#,
    );
    assert!(ra.contains(r#""max_hz":5"#), "{ra}");
    assert!(
        rb.contains(r#""max_hz":5"#),
        "7 is granted the 5 Hz tier: {rb}"
    );
    assert!(rc.contains(r#""max_hz":1"#), "{rc}");
    let five = Topic::conflated(1, D10, 2, Format::Binary);
    let one = Topic::conflated(1, D10, 0, Format::Binary);
    // One snapshot request per tier topic, not per subscriber.
    let mut asked = sim.answer_with(10);
    asked.sort_by_key(Topic::index);
    assert_eq!(asked, [one, five]);
    sim.turn();
    for idx in [a, b, c] {
        let got: Vec<_> = sim.read(idx).iter().flat_map(Frame::records).collect();
        assert_eq!(got, [(RecordKind::Snapshot as u8, 1, 0)]);
    }
    // Deltas are not theirs; one encoded tick of the 5 Hz tier reaches both of its
    // subscribers, byte for byte; trades reach everyone, live.
    sim.publish(1);
    sim.publish(1);
    let tick = sim.tick(five);
    sim.trade(1, 1);
    sim.turn();
    for idx in [a, b] {
        let frames = sim.read(idx);
        let got: Vec<_> = frames.iter().flat_map(Frame::records).collect();
        assert_eq!(
            got,
            [
                (RecordKind::Snapshot as u8, 1, 2),
                (RecordKind::Trade as u8, 1, 1)
            ]
        );
        let payload = &frames.iter().find(|f| f.opcode == 0x2).unwrap().payload;
        assert_eq!(&payload[8..8 + tick.len()], &tick[..], "the very bytes");
    }
    let got: Vec<_> = sim.read(c).iter().flat_map(Frame::records).collect();
    assert_eq!(got, [(RecordKind::Trade as u8, 1, 1)]);
    // Bad rates are refused with a code.
    let e = {
        sim.send(
            a,
            &client_frame(
                0x1,
                br#"{"op":"subscribe","id":2,"symbols":["S1"],"max_hz":0}"#,
            ),
        );
        Sim::texts(&sim.read(a)).join("")
    };
    assert!(e.contains("invalid_max_hz"), "{e}");
}

#[test]
fn max_hz_ceiling_caps_the_grant() {
    let mut sim = Sim::new(2, 1024, |c| c.conflate.max_hz_ceiling = 30);
    let a = sim.ws_client();
    let r = sim.subscribe_json(
        a,
        r#"{"op":"subscribe","id":1,"symbols":["S0"],"max_hz":1000}"#,
    );
    assert!(r.contains(r#""max_hz":20"#), "{r}");
}

#[test]
fn conflated_ticks_are_skipped_for_a_full_buffer_and_replaced_by_a_fresh_snapshot() {
    let mut sim = ladder_sim();
    let idx = sim.ws_client();
    sim.subscribe_json(
        idx,
        r#"{"op":"subscribe","id":1,"symbols":["S0"],"depth":10,"max_hz":5}"#,
    );
    let five = Topic::conflated(0, D10, 2, Format::Binary);
    assert_eq!(sim.answer_with(10), [five]);
    sim.turn();
    sim.read(idx);
    // It stops reading; trades fill its buffer past the pace mark (half the soft mark).
    sim.socket(idx).window = 1024;
    let mut n = 0;
    while sim.core.conn(idx).unwrap().out_len() < 64 * 1024 / 100 * 25 / 2 {
        n += 1;
        sim.trade(0, n);
        sim.turn();
    }
    sim.publish(0);
    sim.tick(five);
    sim.turn();
    assert_eq!(sim.metrics().conflated_skips.load(Ordering::Relaxed), 1);
    // The stream then goes quiet: the skipped tick is the last one. When the client drains,
    // it is sent a fresh snapshot with the current seq.
    sim.socket(idx).window = WINDOW;
    sim.read(idx);
    sim.read(idx);
    assert_eq!(sim.answer_with(10), [five]);
    sim.turn();
    let got: Vec<_> = sim
        .read(idx)
        .iter()
        .flat_map(Frame::records)
        .filter(|r| r.0 != RecordKind::Trade as u8)
        .collect();
    assert_eq!(got, [(RecordKind::Snapshot as u8, 0, sim.seq[0])]);
}

#[test]
fn snapshot_burst_of_a_star_subscription_is_paced_not_evicted() {
    // 200 symbols × 100 levels a side: 640 KB of snapshots against a 64 KiB bound. Before
    // pacing, the first drain queued them all and the client was evicted before reading.
    let mut sim = Sim::new(200, 4096, |c| {
        c.max_outbuf_bytes = 64 << 10;
    });
    let idx = sim.ws_client();
    sim.subscribe_json(
        idx,
        r#"{"op":"subscribe","id":1,"symbols":["*"],"channels":["book"],"depth":0}"#,
    );
    let mut got = std::collections::BTreeSet::new();
    let mut rounds = 0;
    sim.socket(idx).window = 16 << 10;
    while got.len() < 200 {
        let asked = sim.answer_with(100);
        assert!(asked.len() <= 16, "at most 16 in flight: {}", asked.len());
        // The feed keeps moving meanwhile.
        for sid in 0..200 {
            if sid % 7 == rounds % 7 {
                sim.publish(sid);
            }
        }
        sim.turn();
        for r in sim.read(idx).iter().flat_map(Frame::records) {
            if r.0 == RecordKind::Snapshot as u8 {
                got.insert(r.1);
            }
        }
        assert!(!sim.is_gone(idx));
        assert!(sim.core.conn(idx).unwrap().out_len() <= 64 << 10);
        rounds += 1;
        assert!(rounds < 400, "stuck at {}", got.len());
    }
    assert_eq!(sim.metrics().evicted_slow.load(Ordering::Relaxed), 0);
    assert_eq!(
        sim.ladder_metric().0,
        0,
        "a burst the server made is not pressure"
    );
}

/// One 50 ms step of a busy S0 for a reader `idx` that reads at most `read` bytes per step:
/// `deltas` deltas and a trade, a tick of the 5 Hz conflated topic every fourth step,
/// snapshot requests answered; then the reader empties its socket (of `read` bytes) and the
/// socket is writable again.
fn busy_step(sim: &mut Sim, idx: u32, step: u64, deltas: usize, read: usize) {
    for _ in 0..deltas {
        assert!(sim.publish(0));
    }
    sim.trade(0, step + 1);
    if step % 4 == 0 {
        sim.tick(Topic::conflated(0, D10, 2, Format::Binary));
    }
    sim.answer_with(10);
    sim.turn();
    let s = sim.socket(idx);
    s.window = read;
    s.in_kernel.clear();
    sim.core.handle_writable(idx);
    sim.core.write_queued(&mut sim.net);
    sim.advance(Duration::from_millis(50));
}

#[test]
fn ladder_a_reader_slower_than_its_live_stream_stays_conflated_and_one_that_recovers_goes_live() {
    let mut sim = ladder_sim();
    let idx = book_and_trades(&mut sim);
    let low = 64 * 1024 / 100 * 5;
    // Live, S0 costs ~17 KB/s (20 deltas and a trade per 50 ms); conflated, ~3 KB/s. The
    // reader reads 10 KB/s: too slow for the deltas, fast enough for the snapshots. Before the
    // rate rule it drained, went live after the dwell, filled up, climbed again, and so on.
    let mut step = 0;
    while sim.ladder_metric().0 == 0 {
        busy_step(&mut sim, idx, step, 20, 512);
        step += 1;
        assert!(step < 200, "never conflated");
    }
    let climbed = step;
    // 12 virtual seconds more: it drains below the low mark, the dwell passes, yet it stays
    // conflated (one hold counted), and is not evicted.
    let mut drained = false;
    while step < climbed + 240 {
        busy_step(&mut sim, idx, step, 20, 512);
        drained |= sim.core.conn(idx).expect("connected").out_len() <= low;
        step += 1;
    }
    assert!(
        drained,
        "it drained below the low mark: the marks alone would send it live"
    );
    assert_eq!(sim.ladder_metric(), (1, 0, 1), "one move up, none back");
    assert_eq!(sim.metrics().ladder_held.load(Ordering::Relaxed), 1);
    assert_eq!(sim.metrics().evicted_slow.load(Ordering::Relaxed), 0);
    // It recovers (reads everything): at the latest MAX_HOLD_DWELLS dwells after it climbed it
    // is tried live again, and this time it stays live.
    let hold = crate::fanout::ladder::MAX_HOLD_DWELLS as u64 * 20; // steps
    while sim.ladder_metric().1 == 0 {
        busy_step(&mut sim, idx, step, 20, WINDOW);
        step += 1;
        assert!(step <= climbed + hold + 20, "never went live");
    }
    for _ in 0..200 {
        busy_step(&mut sim, idx, step, 20, WINDOW);
        step += 1;
    }
    assert_eq!(sim.ladder_metric(), (1, 1, 0), "live, and it stays live");
    assert!(!sim.is_gone(idx));
}

#[test]
fn ladder_a_reader_that_drains_fast_goes_live_after_the_dwell() {
    // The rate rule holds only readers that showed they are slow: one that stalled for a while
    // (its backlog built up) and then drains it fast goes live after the dwell.
    let mut sim = ladder_sim();
    let idx = book_and_trades(&mut sim);
    let mut step = 0;
    while sim.ladder_metric().0 == 0 {
        // Live for a while at a slightly too slow rate.
        busy_step(&mut sim, idx, step, 20, 512);
        step += 1;
    }
    let climbed = step;
    while sim.ladder_metric().1 == 0 {
        busy_step(&mut sim, idx, step, 20, WINDOW);
        step += 1;
        assert!(step <= climbed + 30, "not live 1.5 s after it climbed");
    }
    assert_eq!(sim.metrics().ladder_held.load(Ordering::Relaxed), 0);
}

#[test]
fn ladder_a_conflating_reader_holds_a_backlog_under_the_low_mark_not_half_the_soft_mark() {
    // Eight busy symbols for a subscriber of everything that reads 600 bytes per 50 ms
    // (12 KB/s): too slow for their deltas (40 a step) and for all their conflated snapshots
    // (8 × 5 Hz × ~360 bytes), so its out-buffer is refilled whenever it has room. What stands
    // in front of each fresh snapshot is that out-buffer (its staleness): conflated snapshots
    // are now delivered and requested under the low mark while a connection conflates, not
    // under half the soft mark. (Before: median 8,924 bytes, at the former pace mark;
    // after: 4,102.)
    let mut sim = Sim::new(8, 4096, |c| {
        c.max_outbuf_bytes = 64 << 10;
        c.conflate.soft_pct = 25; // 16,375 bytes
        c.conflate.low_pct = 5; // 3,275 bytes
        c.conflate.hz = 5;
        c.conflate.dwell = Duration::from_secs(1);
        c.conflate.grace = Duration::from_secs(10);
    });
    let low = 64 * 1024 / 100 * 5;
    let idx = sim.ws_client();
    sim.subscribe_json(
        idx,
        r#"{"op":"subscribe","id":1,"symbols":["*"],"depth":10}"#,
    );
    sim.answer_with(10);
    sim.turn();
    sim.read(idx);
    let mut snapshots = [0u32; 8];
    let mut levels = Vec::new();
    let mut climbed = None;
    for step in 0..600u64 {
        for sid in 0..8 {
            for _ in 0..5 {
                assert!(sim.publish(sid));
            }
        }
        sim.trade((step % 8) as u32, step / 8 + 1);
        if step % 4 == 0 {
            for sid in 0..8 {
                sim.tick(Topic::conflated(sid, D10, 2, Format::Binary));
            }
        }
        sim.answer_with(10);
        sim.turn();
        let out = sim.core.conn(idx).expect("connected").out_len();
        sim.socket(idx).window = 600;
        let frames = sim.read(idx);
        if climbed.is_none() && sim.ladder_metric().0 == 1 {
            climbed = Some(step);
        }
        // Measured from 10 s after it climbed (its backlog from the live period drained).
        if climbed.is_some_and(|c| step >= c + 200) {
            levels.push(out);
            for (kind, sid, _) in frames.iter().flat_map(Frame::records) {
                if kind == RecordKind::Snapshot as u8 {
                    snapshots[sid as usize] += 1;
                }
            }
        }
        sim.advance(Duration::from_millis(50));
    }
    assert!(
        climbed.is_some_and(|c| c < 300),
        "it conflated: {climbed:?}"
    );
    levels.sort_unstable();
    let median = levels[levels.len() / 2];
    // Under the low mark plus what one round of ticks adds (they are checked against the
    // out-buffer as it was before the round); half the soft mark is 8,187.
    assert!(
        median <= low + low / 2,
        "median backlog {median}, low mark {low}"
    );
    // Every stream kept getting fresh snapshots.
    assert!(snapshots.iter().all(|n| *n > 0), "{snapshots:?}");
    // Held conflated by the rate rule, tried live once after MAX_HOLD_DWELLS dwells and back
    // up; never evicted.
    let (up, _, conflating) = sim.ladder_metric();
    assert!(up <= 2 && conflating == 1, "{:?}", sim.ladder_metric());
    assert_eq!(sim.metrics().evicted_slow.load(Ordering::Relaxed), 0);
}
