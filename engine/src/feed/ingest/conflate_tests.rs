//! Conflated ticks in the ingester, through [`Replay`] with two shards: one encoding per
//! (stream, tier, tick), shared by both shards' rings; nothing when the stream did not move;
//! a tier no shard watches stops.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::*;
use crate::config::FeedUrl;
use crate::fanout::ConnId;
use crate::replay::epoch::Epoch;

const SYMBOLS: &str =
    r#"{"type":"symbols","symbols":[{"symbol":"AAA-USD","px_decimals":2,"qty_decimals":2}]}"#;
const SNAPSHOT: &str = r#"{"type":"snapshot","symbol":"AAA-USD","seq":100,"ts":1,"bids":[["10.00","1.00"],["9.00","1.00"]],"asks":[["11.00","1.00"]]}"#;

fn update(seq: u64) -> String {
    format!(
        r#"{{"type":"l2update","symbol":"AAA-USD","seq":{seq},"ts":2,"changes":[["buy","10.00","{}.00"]]}}"#,
        seq % 50 + 1
    )
}

#[test]
fn one_conflated_snapshot_per_tier_and_tick_shared_by_every_shard() {
    let polls: Vec<Poll> = (0..2).map(|_| Poll::new().unwrap()).collect();
    let rings: Vec<Arc<Ring>> = polls
        .iter()
        .map(|p| {
            let waker = mio::Waker::new(p.registry(), Token(0)).unwrap();
            Arc::new(Ring::new(1024, waker))
        })
        .collect();
    let interest = Arc::new(Interest::new(2, 16));
    let (tx, rx) = crossbeam_channel::unbounded();
    let metrics = Arc::new(Metrics::new(2));
    let ctx = IngestContext {
        feed: FeedUrl::parse("ws://127.0.0.1:1/feed").unwrap(),
        rings: rings.clone(),
        interest: interest.clone(),
        symbols: Arc::new(SymbolDirectory::default()),
        requests: rx,
        metrics: metrics.clone(),
        shutdown: Arc::new(AtomicBool::new(false)),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        stall_timeout: DEFAULT_STALL_TIMEOUT,
        epoch: Arc::new(EpochCell::new(Epoch::from_u32(0x3f9c_0a17))),
        replay: ReplayLimits::default(),
    };
    let mut r = Replay::new(ctx).unwrap();
    let now = Stamp::now();
    r.message(SYMBOLS.as_bytes(), now);
    r.message(SNAPSHOT.as_bytes(), now);
    // Depth 10 at 5 Hz, watched on both shards.
    let topic = Topic::conflated(0, 1, 2, Format::Binary);
    for shard in 0..2 {
        interest.add(shard, topic);
        tx.send(IngestRequest::Snapshot {
            shard,
            conn: ConnId {
                index: 0,
                generation: 0,
            },
            req: 0,
            topic,
        })
        .unwrap();
    }
    r.serve_requests();
    for ring in &rings {
        assert!(matches!(ring.pop(), Some(ShardMsg::Snapshot { .. })));
        assert!(ring.pop().is_none());
    }
    // Updates: no delta for the conflated topic.
    for seq in 101..=105 {
        r.message(update(seq).as_bytes(), now);
    }
    r.serve_requests();
    assert!(rings.iter().all(|ring| ring.pop().is_none()));
    // The tick: one snapshot, the same bytes in both rings, the stream's current seq.
    let t = clock::monotonic() + Duration::from_secs(1);
    r.tick_conflated(t);
    let got: Vec<Bytes> = rings
        .iter()
        .map(|ring| match ring.pop() {
            Some(ShardMsg::Record { topic: t, bytes }) => {
                assert_eq!(t, topic);
                bytes
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got[0].as_ptr(), got[1].as_ptr(), "encoded once, shared");
    let b = &got[0];
    assert_eq!(b[2], RecordKind::Snapshot as u8);
    assert_eq!(b[3] & FLAG_SNAPSHOT, FLAG_SNAPSHOT);
    let seq = u64::from_le_bytes(b[8..16].try_into().unwrap());
    assert_eq!(
        seq, 5,
        "five changes inside the depth-10 window after the snapshot"
    );
    let encoded = || metrics.ingest.conflated_snapshots.load(Ordering::Relaxed);
    assert_eq!(encoded(), 1);
    // Next tick without a change: nothing.
    r.tick_conflated(t + Duration::from_millis(200));
    assert!(rings.iter().all(|ring| ring.pop().is_none()));
    assert_eq!(encoded(), 1);
    // Unwatched everywhere: the tier stops.
    interest.remove(0, topic);
    interest.remove(1, topic);
    r.message(update(106).as_bytes(), now);
    r.tick_conflated(t + Duration::from_millis(400));
    assert!(rings.iter().all(|ring| ring.pop().is_none()));
    assert_eq!(r.ing.conflation.next_tick(), None);
}
