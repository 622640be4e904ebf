//! Records per second one client decodes and applies: binary batches of book deltas (and a
//! few trades) for 50 symbols at depth 25, as the daemon sends them, through
//! [`Session::handle_binary`] (decode, seq check, book update, checksum when present, one book
//! event per symbol per message, events drained as a consumer would).
//!
//! `cargo bench -p tickcast-client --bench decode_apply`; throughput is in elements (records)
//! per second.

// criterion_group! makes undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickcast_client::book::checksum;
use tickcast_client::wire::{FLAG_CHECKSUM, FLAG_SNAPSHOT};
use tickcast_client::{Event, Session, SessionConfig};

type Side = Vec<(i64, i64)>;

const SYMBOLS: u32 = 50;
const DEPTH: u16 = 25;
const RECORDS_PER_BATCH: usize = 64;
const BATCHES: usize = 64;

fn record(kind: u8, flags: u8, sid: u32, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(32 + body.len());
    let len = u16::try_from(32 + body.len()).unwrap_or(u16::MAX);
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&[kind, flags]);
    r.extend_from_slice(&sid.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&[0; 16]);
    r.extend_from_slice(body);
    r
}

fn book_body(bids: &[(i64, i64)], asks: &[(i64, i64)], crc: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u16::try_from(bids.len()).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&u16::try_from(asks.len()).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&crc.to_le_bytes());
    for (p, q) in bids.iter().chain(asks) {
        b.extend_from_slice(&p.to_le_bytes());
        b.extend_from_slice(&q.to_le_bytes());
    }
    b
}

fn batch(records: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![1, 0];
    b.extend_from_slice(&u16::try_from(records.len()).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for r in records {
        b.extend_from_slice(r);
    }
    b
}

/// A connected session with every symbol's snapshot applied, and the delta batches that follow
/// (each delta moves a level's quantity near the top; a trade every eighth record).
fn setup(with_checksums: bool) -> (Session, Vec<Vec<u8>>, usize) {
    let mut s = Session::new(SessionConfig {
        depth: DEPTH,
        ..SessionConfig::default()
    });
    let names: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i}")).collect();
    s.subscribe(&names);
    let now = Instant::now();
    s.handle_connected(now);
    while s.poll_transmit().is_some() {}
    let infos: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#"{{"symbol":"{n}","sid":{i},"px_decimals":2,"qty_decimals":6}}"#))
        .collect();
    let reply = format!(
        r#"{{"op":"subscribed","id":1,"symbols":[{}]}}"#,
        infos.join(",")
    );
    s.handle_text(now, &reply).expect("reply");
    // Books of 25 levels a side around 10000.
    let mut books: Vec<(Side, Side)> = (0..SYMBOLS)
        .map(|_| {
            (
                (0..25).map(|l| (10_000 - l, 1_000 + l)).collect(),
                (0..25).map(|l| (10_001 + l, 2_000 + l)).collect(),
            )
        })
        .collect();
    let snaps: Vec<Vec<u8>> = (0..SYMBOLS)
        .map(|sid| {
            let (b, a) = &books[sid as usize];
            record(1, FLAG_SNAPSHOT, sid, 1, &book_body(b, a, 0))
        })
        .collect();
    s.handle_binary(&batch(&snaps)).expect("snapshots");
    while s.poll_event().is_some() {}
    let mut seqs = vec![1u64; SYMBOLS as usize];
    let mut trade_seq = vec![0u64; SYMBOLS as usize];
    let mut batches = Vec::new();
    let mut n = 0usize;
    for b in 0..BATCHES {
        let mut recs = Vec::new();
        for r in 0..RECORDS_PER_BATCH {
            let sid = ((b * RECORDS_PER_BATCH + r) % SYMBOLS as usize) as u32;
            let i = sid as usize;
            if r % 8 == 7 {
                trade_seq[i] += 1;
                let mut t = vec![0u8; 32];
                t[..8].copy_from_slice(&10_000i64.to_le_bytes());
                recs.push(record(3, 0, sid, trade_seq[i], &t));
            } else {
                seqs[i] += 1;
                let level = r % 5;
                let (bids, asks) = &mut books[i];
                bids[level].1 += 1;
                let change = [bids[level]];
                let crc = checksum(DEPTH, bids.iter().copied(), asks.iter().copied());
                let flags = if with_checksums { FLAG_CHECKSUM } else { 0 };
                recs.push(record(
                    2,
                    flags,
                    sid,
                    seqs[i],
                    &book_body(&change, &[], crc),
                ));
            }
            n += 1;
        }
        batches.push(batch(&recs));
    }
    (s, batches, n)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_apply");
    for (name, crc) in [("binary_deltas", false), ("binary_deltas_checksum", true)] {
        let (mut check, batches, n) = setup(crc);
        // The input is what a correct server sends: every record applies, none resyncs.
        let mut books = 0;
        for m in &batches {
            check.handle_binary(m).expect("valid");
            while let Some(ev) = check.poll_event() {
                assert!(!matches!(ev, Event::Resync(_)), "{ev:?}");
                books += usize::from(matches!(ev, Event::Book(_)));
            }
        }
        assert!(books >= batches.len());
        assert_eq!(check.checksums_seen() > 0, crc);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || setup(crc).0,
                |mut s| {
                    for m in &batches {
                        s.handle_binary(black_box(m)).expect("valid");
                        while let Some(ev) = s.poll_event() {
                            black_box(ev);
                        }
                    }
                    s
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
