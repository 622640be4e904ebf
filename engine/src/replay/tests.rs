use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::fanout::Format;

fn t0() -> Instant {
    crate::clock::monotonic()
}

fn rec(seq: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len.max(8)];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(v)
}

fn topic(sid: u32) -> Topic {
    Topic::book(sid, 1, Format::Binary)
}

fn seqs(w: &mut ReplayWindows, t: Topic, after: u64, now: Instant) -> Result<Vec<u64>, Miss> {
    w.replay_from(t, after, now).map(|it| {
        it.map(|(s, b)| {
            assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), s);
            s
        })
        .collect()
    })
}

#[test]
fn a_hit_is_exactly_what_follows_the_position() {
    let now = t0();
    let mut w = ReplayWindows::new(ReplayLimits::default());
    let t = topic(3);
    assert_eq!(seqs(&mut w, t, 5, now), Err(Miss::NoWindow));
    assert!(w.keep(t, true, now));
    for s in 1008..=1012 {
        w.append(t, s, rec(s, 40), now);
    }
    assert_eq!(seqs(&mut w, t, 1007, now), Ok((1008..=1012).collect()));
    assert_eq!(seqs(&mut w, t, 1010, now), Ok(vec![1011, 1012]));
    assert_eq!(seqs(&mut w, t, 1012, now), Ok(vec![]));
    assert_eq!(seqs(&mut w, t, 1006, now), Err(Miss::Evicted(1007)));
    assert_eq!(
        seqs(&mut w, t, 1013, now),
        Err(Miss::Ahead {
            after: 1013,
            last: 1012
        })
    );
    let st = w.stats();
    assert_eq!((st.hits, st.misses, st.replayed), (3, 3, 7));
    assert_eq!(st.records, 5);
    assert_eq!(st.bytes, 5 * (40 + RECORD_OVERHEAD) as u64);
    // Other formats and streams are other windows.
    assert_eq!(
        seqs(&mut w, Topic::book(3, 1, Format::Json), 1007, now),
        Err(Miss::NoWindow)
    );
}

#[test]
fn a_peek_is_a_replay_that_changes_and_counts_nothing() {
    let now = t0();
    let limits = ReplayLimits {
        records: 4,
        ..ReplayLimits::default()
    };
    let mut w = ReplayWindows::new(limits);
    let t = topic(1);
    assert_eq!(w.peek_from(t, 0, now), None);
    w.keep(t, true, now);
    for s in 20..=25 {
        w.append(t, s, rec(s, 16), now);
    }
    let peeked = |w: &ReplayWindows, after: u64, at: Instant| {
        w.peek_from(t, after, at).map(|v| {
            v.iter()
                .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
                .collect::<Vec<_>>()
        })
    };
    // Holds 22..=25 (four records).
    assert_eq!(peeked(&w, 21, now), Some(vec![22, 23, 24, 25]));
    assert_eq!(peeked(&w, 24, now), Some(vec![25]));
    assert_eq!(peeked(&w, 25, now), Some(vec![]));
    assert_eq!(peeked(&w, 20, now), None);
    assert_eq!(peeked(&w, 26, now), None);
    // Past the age bound nothing is replayable, as `replay_from` would say.
    let later = now + limits.age + Duration::from_millis(1);
    assert_eq!(peeked(&w, 21, later), None);
    assert_eq!(peeked(&w, 25, later), Some(vec![]));
    let st = w.stats();
    assert_eq!((st.hits, st.misses, st.records), (0, 0, 4));
    assert_eq!(seqs(&mut w, t, 21, now), Ok(vec![22, 23, 24, 25]));
}

#[test]
fn the_same_bytes_are_held_not_copies() {
    let now = t0();
    let mut w = ReplayWindows::new(ReplayLimits::default());
    let t = topic(0);
    w.keep(t, true, now);
    let r = rec(1, 100);
    w.append(t, 1, r.clone(), now);
    let got: Vec<Bytes> = w
        .replay_from(t, 0, now)
        .unwrap()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(got[0].as_ptr(), r.as_ptr());
}

#[test]
fn bounds_by_records_bytes_and_age() {
    let now = t0();
    let limits = ReplayLimits {
        records: 3,
        bytes: 10 * (50 + RECORD_OVERHEAD),
        age: Duration::from_secs(30),
        total_bytes: usize::MAX,
    };
    let mut w = ReplayWindows::new(limits);
    let t = topic(1);
    w.keep(t, true, now);
    for s in 1..=5 {
        w.append(t, s, rec(s, 50), now);
    }
    assert_eq!(seqs(&mut w, t, 2, now), Ok(vec![3, 4, 5]));
    assert_eq!(seqs(&mut w, t, 1, now), Err(Miss::Evicted(2)));
    // Bytes: a record larger than the window leaves it empty but still numbered.
    w.append(t, 6, rec(6, 2000), now);
    assert_eq!(seqs(&mut w, t, 5, now), Err(Miss::Evicted(6)));
    assert_eq!(seqs(&mut w, t, 6, now), Ok(vec![]));
    // Age: evicted on the next call, whatever it is.
    w.append(t, 7, rec(7, 50), now);
    let later = now + Duration::from_secs(31);
    assert_eq!(seqs(&mut w, t, 6, later), Err(Miss::Evicted(7)));
    assert_eq!(seqs(&mut w, t, 7, later), Ok(vec![]));
    assert_eq!(w.stats().records, 0);
    assert_eq!(w.stats().bytes, 0);
}

#[test]
fn the_total_bound_evicts_the_oldest_records_of_any_window() {
    let now = t0();
    let cost = 100 + RECORD_OVERHEAD;
    let limits = ReplayLimits {
        records: 100,
        bytes: usize::MAX,
        age: Duration::from_secs(30),
        total_bytes: 4 * cost,
    };
    let mut w = ReplayWindows::new(limits);
    let (a, b) = (topic(1), topic(2));
    w.keep(a, true, now);
    w.keep(b, true, now);
    w.append(a, 1, rec(1, 100), now);
    w.append(a, 2, rec(2, 100), now);
    w.append(b, 1, rec(1, 100), now);
    w.append(b, 2, rec(2, 100), now);
    w.append(b, 3, rec(3, 100), now);
    // a's seq 1 was the oldest.
    assert_eq!(seqs(&mut w, a, 0, now), Err(Miss::Evicted(1)));
    assert_eq!(seqs(&mut w, a, 1, now), Ok(vec![2]));
    assert_eq!(seqs(&mut w, b, 0, now), Ok(vec![1, 2, 3]));
    assert!(w.stats().bytes <= 4 * cost as u64);
    assert_eq!(w.stats().evicted_total, 1);
}

#[test]
fn a_seq_jump_restarts_the_window() {
    let now = t0();
    let mut w = ReplayWindows::new(ReplayLimits::default());
    let t = topic(1);
    w.keep(t, true, now);
    for s in 1..=3 {
        w.append(t, s, rec(s, 10), now);
    }
    w.append(t, 10, rec(10, 10), now);
    assert_eq!(seqs(&mut w, t, 3, now), Err(Miss::Evicted(4)));
    assert_eq!(seqs(&mut w, t, 9, now), Ok(vec![10]));
    assert_eq!(w.stats().records, 1);
}

#[test]
fn unwatched_topics_linger_for_the_age_bound_then_are_forgotten() {
    let now = t0();
    let mut w = ReplayWindows::new(ReplayLimits::default());
    let t = topic(4);
    assert!(!w.keep(t, false, now), "never watched: not kept");
    assert!(w.keep(t, true, now));
    w.append(t, 1, rec(1, 10), now);
    // The last watcher left: still kept (records appended) for `age`.
    let soon = now + Duration::from_secs(5);
    assert!(w.keep(t, false, soon));
    w.append(t, 2, rec(2, 10), soon);
    assert_eq!(seqs(&mut w, t, 0, soon), Ok(vec![1, 2]));
    let late = now + Duration::from_secs(31);
    assert!(w.is_kept(t, soon));
    assert!(!w.is_kept(t, late));
    assert!(!w.keep(t, false, late));
    assert_eq!(seqs(&mut w, t, 2, late), Err(Miss::NoWindow));
    assert_eq!(w.stats().windows, 0);
    assert_eq!(w.stats().records, 0);
    // Appends to a topic that is not kept are ignored.
    w.append(t, 3, rec(3, 10), late);
    assert_eq!(w.stats().records, 0);
}

#[test]
fn replay_off_keeps_nothing() {
    let now = t0();
    let mut w = ReplayWindows::new(ReplayLimits::OFF);
    let t = topic(0);
    assert!(w.keep(t, true, now));
    assert!(!w.keep(t, false, now));
    w.append(t, 1, rec(1, 10), now);
    assert_eq!(seqs(&mut w, t, 0, now), Err(Miss::NoWindow));
}

#[test]
fn a_symbol_resumes_all_or_nothing() {
    let now = t0();
    let mut w = ReplayWindows::new(ReplayLimits::default());
    let book = Topic::book(2, 1, Format::Json);
    let trades = Topic::trades(2, Format::Json);
    w.keep(book, true, now);
    w.keep(trades, true, now);
    for s in 10..=12 {
        w.append(book, s, rec(s, 20), now);
    }
    for s in 5..=6 {
        w.append(trades, s, rec(s, 20), now);
    }
    let got = w
        .resume_symbol(true, Some((book, 10)), Some((trades, 6)), now)
        .unwrap();
    let seqs_of = |v: &Option<Vec<Bytes>>| -> Vec<u64> {
        v.iter()
            .flatten()
            .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
            .collect()
    };
    assert_eq!(seqs_of(&got.book), vec![11, 12]);
    assert_eq!(got.trades, Some(vec![]));
    // Only the book named: trades not touched.
    let got = w.resume_symbol(true, Some((book, 12)), None, now).unwrap();
    assert_eq!((got.book, got.trades), (Some(vec![]), None));
    // One stream that cannot be replayed: nothing at all.
    assert_eq!(
        w.resume_symbol(true, Some((book, 10)), Some((trades, 2)), now),
        None
    );
    // Another epoch: nothing, two misses.
    let misses = w.stats().misses;
    assert_eq!(
        w.resume_symbol(false, Some((book, 10)), Some((trades, 6)), now),
        None
    );
    assert_eq!(w.stats().misses, misses + 2);
}

#[derive(Debug, Clone)]
enum Op {
    /// Append the next record of topic `t`, of `len` bytes, `dt` ms later; `skip` seqs first.
    Append {
        t: u32,
        len: usize,
        dt: u64,
        skip: u8,
    },
    /// Resume topic `t` from `back` records before its last.
    Replay { t: u32, back: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..4, 1usize..300, 0u64..500, prop_oneof![9 => Just(0u8), 1 => 1u8..5])
            .prop_map(|(t, len, dt, skip)| Op::Append { t, len, dt, skip }),
        2 => (0u32..4, 0u64..40).prop_map(|(t, back)| Op::Replay { t, back }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random appends, bounds and resumes: a resume is exactly the records after the position,
    /// in order, or a miss; never a gap, never a record twice; memory stays within the bounds.
    #[test]
    fn replay_is_exact_or_a_miss(
        ops in proptest::collection::vec(op(), 1..400),
        records in 1usize..30,
        bytes in 200usize..5000,
        age_ms in 100u64..5000,
        total in 300usize..20_000,
    ) {
        let limits = ReplayLimits {
            records,
            bytes,
            age: Duration::from_millis(age_ms),
            total_bytes: total,
        };
        let mut w = ReplayWindows::new(limits);
        let start = t0();
        let mut now = start;
        // The model: every record ever appended per topic, and where the last restart was.
        let mut all: BTreeMap<u32, Vec<(u64, Instant)>> = BTreeMap::new();
        let mut restart: BTreeMap<u32, u64> = BTreeMap::new();
        for t in 0..4 {
            w.keep(topic(t), true, now);
        }
        for op in ops {
            match op {
                Op::Append { t, len, dt, skip } => {
                    now += Duration::from_millis(dt);
                    // Keep every topic watched so that none is forgotten.
                    for u in 0..4 {
                        w.keep(topic(u), true, now);
                    }
                    let hist = all.entry(t).or_default();
                    let last = hist.last().map_or(0, |&(s, _)| s);
                    let seq = last + 1 + u64::from(skip);
                    if skip > 0 && last > 0 {
                        restart.insert(t, seq);
                    }
                    hist.push((seq, now));
                    w.append(topic(t), seq, rec(seq, len), now);
                    let st = w.stats();
                    prop_assert!(st.bytes <= total as u64);
                }
                Op::Replay { t, back } => {
                    let hist = all.get(&t).cloned().unwrap_or_default();
                    let last = hist.last().map_or(0, |&(s, _)| s);
                    if last == 0 {
                        continue;
                    }
                    let after = last.saturating_sub(back);
                    match seqs(&mut w, topic(t), after, now) {
                        Ok(got) => {
                            let want: Vec<u64> = (after + 1..=last).collect();
                            prop_assert_eq!(&got, &want);
                            // Never across a restart, never older than the age bound.
                            if let Some(&r) = restart.get(&t) {
                                prop_assert!(after + 1 >= r);
                            }
                            for &(s, at) in &hist {
                                if s > after {
                                    prop_assert!(now.duration_since(at) <= limits.age);
                                }
                            }
                            prop_assert!(got.len() <= records);
                        }
                        Err(Miss::Evicted(_)) => {}
                        Err(m) => prop_assert!(false, "unexpected miss {m:?}"),
                    }
                }
            }
        }
    }
}
