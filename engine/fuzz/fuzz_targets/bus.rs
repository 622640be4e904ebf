//! What an edge or the ingest node reads from NATS (docs/protocol.md §8.2), on arbitrary bytes:
//! every bus message parser (stream batches, snapshot and replay requests and replies,
//! statuses, the symbol table), and an edge's book replica (`bus/replica.rs`) fed a sequence of
//! records, as an edge feeds it the records it forwards.
//!
//! Checks, besides "never panics": a replay reply's records follow the asked position one by
//! one; a replica that accepted its records makes a snapshot that, applied to a fresh replica,
//! gives the same snapshot back (its levels, seq and checksum survive the round trip), in both
//! formats' encoders.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tickcast::book::DEPTHS;
use tickcast::bus::replica::Replica;
use tickcast::bus::{
    parse_batch, parse_replay_reply, parse_replay_request, parse_snapshot_reply,
    parse_snapshot_request, parse_status, parse_symbols,
};
use tickcast::fanout::Format;
use tickcast::wire::SymbolMeta;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let payload = Bytes::copy_from_slice(rest);
    let _ = parse_batch(&payload);
    let _ = parse_snapshot_request(rest);
    let _ = parse_snapshot_reply(&payload);
    let _ = parse_status(&payload);
    let _ = parse_symbols(rest);
    let _ = parse_replay_request(rest);
    let after = u64::from(first) * 1000;
    if let Ok((_, Some(records))) = parse_replay_reply(&payload, after) {
        for (i, (seq, _)) in records.iter().enumerate() {
            assert_eq!(*seq, after + 1 + i as u64, "replay out of order");
        }
    }

    // The replica: records as `u16 length` + bytes, one after the other.
    let d = usize::from(first) % DEPTHS.len();
    let meta = SymbolMeta {
        symbol: "BTC-USD".into(),
        sid: 0,
        px_decimals: 2,
        qty_decimals: 4,
    };
    let mut r = Replica::new(d);
    let mut at = 0;
    while at + 2 <= rest.len() {
        let len = usize::from(u16::from_le_bytes([rest[at], rest[at + 1]]));
        let rec = &rest[at + 2..rest.len().min(at + 2 + len)];
        at += 2 + len;
        if r.apply(rec).is_err() {
            assert!(!r.is_seeded() && r.encode(Format::Binary, &meta).is_none());
            continue;
        }
        let _ = r.encode(Format::Json, &meta);
        if let Some(snap) = r.encode(Format::Binary, &meta) {
            let mut again = Replica::new(d);
            again.apply(&snap).expect("a replica's own snapshot applies");
            assert_eq!(again.seq(), r.seq());
            assert_eq!(again.encode(Format::Binary, &meta), Some(snap));
        }
    }
});
