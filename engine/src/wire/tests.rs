use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn hdr(kind: RecordKind) -> RecordHeader {
    RecordHeader {
        kind,
        flags: 0,
        sid: 0x0102_0304,
        seq: 0x1112_1314_1516_1718,
        exch_ts: 1_763_700_000_000_000_000,
        recv_ts: 1_763_700_000_000_000_123,
    }
}

fn meta(symbol: &str) -> SymbolMeta {
    SymbolMeta {
        symbol: symbol.to_owned(),
        sid: 7,
        px_decimals: 2,
        qty_decimals: 6,
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn i64_at(b: &[u8], off: usize) -> i64 {
    i64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn check_header(b: &[u8], len: usize, kind: u8, flags: u8, h: &RecordHeader) {
    assert_eq!(usize::from(u16_at(b, 0)), len);
    assert_eq!(b[2], kind);
    assert_eq!(b[3], flags);
    assert_eq!(u32_at(b, 4), h.sid);
    assert_eq!(u64_at(b, 8), h.seq);
    assert_eq!(u64_at(b, 16), h.exch_ts);
    assert_eq!(u64_at(b, 24), h.recv_ts);
}

fn json_of(out: &BytesMut) -> Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn batch_header_layout() {
    assert_eq!(batch_header(0x0203), [1, 0, 0x03, 0x02, 0, 0, 0, 0]);
}

#[test]
fn header_bytes_are_little_endian_at_fixed_offsets() {
    let mut out = BytesMut::new();
    encode_status(&mut out, &hdr(RecordKind::Status), StatusCode::FeedStale);
    let expect: [u8; 32] = [
        40, 0, // length
        4, 0, // kind, flags
        0x04, 0x03, 0x02, 0x01, // sid
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // seq
        0x00, 0x40, 0x5b, 0x36, 0xce, 0xeb, 0x79, 0x18, // exch_ts
        0x7b, 0x40, 0x5b, 0x36, 0xce, 0xeb, 0x79, 0x18, // recv_ts
    ];
    assert_eq!(&out[..32], &expect);
    assert_eq!(&out[32..], &[1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn book_snapshot_layout() {
    let h = hdr(RecordKind::Snapshot);
    let bids = [
        Level {
            px: 6_500_010,
            qty: 1_500_000,
        },
        Level {
            px: 6_500_000,
            qty: 7,
        },
    ];
    let asks = [Level {
        px: -5,
        qty: 250_000,
    }];
    let mut out = BytesMut::from(&b"xx"[..]);
    encode_book(&mut out, &h, &bids, &asks);
    assert_eq!(&out[..2], b"xx", "appends, never overwrites");
    let b = &out[2..];
    let len = 32 + 8 + 3 * 16;
    assert_eq!(b.len(), len);
    assert_eq!(book_record_len(2, 1), len);
    // Snapshots always carry FLAG_SNAPSHOT even when the caller left flags at 0.
    check_header(b, len, 1, FLAG_SNAPSHOT, &h);
    assert_eq!(u16_at(b, 32), 2);
    assert_eq!(u16_at(b, 34), 1);
    assert_eq!(u32_at(b, 36), 0);
    assert_eq!((i64_at(b, 40), i64_at(b, 48)), (6_500_010, 1_500_000));
    assert_eq!((i64_at(b, 56), i64_at(b, 64)), (6_500_000, 7));
    assert_eq!((i64_at(b, 72), i64_at(b, 80)), (-5, 250_000));
}

#[test]
fn book_delta_layout_and_empty_sides() {
    let h = hdr(RecordKind::Delta);
    let mut out = BytesMut::new();
    encode_book(&mut out, &h, &[], &[Level { px: 9, qty: 0 }]);
    check_header(&out, 56, 2, 0, &h);
    assert_eq!(u16_at(&out, 32), 0);
    assert_eq!(u16_at(&out, 34), 1);
    assert_eq!((i64_at(&out, 40), i64_at(&out, 48)), (9, 0));

    out.clear();
    encode_book(&mut out, &h, &[], &[]);
    assert_eq!(out.len(), 40);
    assert_eq!(u16_at(&out, 0), 40);
}

#[test]
fn book_record_too_long_is_rejected_and_writes_nothing() {
    let h = hdr(RecordKind::Snapshot);
    let levels = vec![Level { px: 1, qty: 1 }; MAX_BOOK_LEVELS + 1];
    let mut out = BytesMut::new();
    assert!(!fits_book_record(MAX_BOOK_LEVELS, 1));
    assert_eq!(
        try_encode_book(&mut out, &h, &levels, &[]),
        Err(WireError::TooManyLevels {
            levels: MAX_BOOK_LEVELS + 1
        })
    );
    assert!(out.is_empty());
    encode_book(&mut out, &h, &levels[1..], &levels[..1]);
    assert!(out.is_empty());
    let (bids, asks) = levels.split_at(MAX_BOOK_LEVELS / 2);
    assert!(fits_book_record(bids.len(), asks.len() - 1));
    try_encode_book(&mut out, &h, bids, &asks[1..]).unwrap();
    assert_eq!(usize::from(u16_at(&out, 0)), out.len());
    assert!(out.len() <= usize::from(u16::MAX));
}

#[test]
fn trade_layout() {
    let h = hdr(RecordKind::Trade);
    let mut out = BytesMut::new();
    let t = Trade {
        px: 6_500_020,
        qty: 10_000,
        trade_id: 42,
        taker_side: Side::Ask,
    };
    encode_trade(&mut out, &h, &t);
    check_header(&out, 64, 3, 0, &h);
    assert_eq!(out.len(), TRADE_RECORD_LEN);
    assert_eq!(i64_at(&out, 32), 6_500_020);
    assert_eq!(i64_at(&out, 40), 10_000);
    assert_eq!(u64_at(&out, 48), 42);
    assert_eq!(out[56], 1);
    assert_eq!(&out[57..64], &[0; 7]);

    out.clear();
    encode_trade(
        &mut out,
        &h,
        &Trade {
            taker_side: Side::Bid,
            ..t
        },
    );
    assert_eq!(out[56], 0);
}

#[test]
fn status_layout() {
    let h = RecordHeader {
        seq: 0,
        ..hdr(RecordKind::Status)
    };
    let mut out = BytesMut::new();
    encode_status(&mut out, &h, StatusCode::SlowConsumer);
    check_header(&out, 40, 4, 0, &h);
    assert_eq!(u16_at(&out, 32), 3);
    assert_eq!(&out[34..40], &[0; 6]);
}

#[test]
fn kind_and_code_round_trip() {
    for k in [
        RecordKind::Snapshot,
        RecordKind::Delta,
        RecordKind::Trade,
        RecordKind::Status,
    ] {
        assert_eq!(RecordKind::from_u8(k as u8), Some(k));
    }
    assert_eq!(RecordKind::from_u8(0), None);
    assert_eq!(RecordKind::from_u8(5), None);
    for c in [
        StatusCode::FeedStale,
        StatusCode::FeedResumed,
        StatusCode::SlowConsumer,
    ] {
        assert_eq!(StatusCode::from_u16(c as u16), Some(c));
    }
    assert_eq!(StatusCode::from_u16(9), None);
}

#[test]
fn book_json_fields() {
    let h = hdr(RecordKind::Snapshot);
    let mut out = BytesMut::new();
    encode_book_json(
        &mut out,
        &meta("BTC-USD"),
        &h,
        &[
            Level {
                px: 6_500_010,
                qty: 1_500_000,
            },
            Level { px: 5, qty: 1 },
        ],
        &[],
    );
    let v = json_of(&out);
    assert_eq!(
        v,
        json!({
            "kind": "snapshot", "symbol": "BTC-USD", "sid": 7, "seq": h.seq,
            "exch_ts": h.exch_ts, "recv_ts": h.recv_ts,
            "bids": [["65000.10", "1.500000"], ["0.05", "0.000001"]], "asks": []
        })
    );

    out.clear();
    encode_book_json(
        &mut out,
        &meta("BTC-USD"),
        &hdr(RecordKind::Delta),
        &[],
        &[Level { px: -100, qty: 0 }],
    );
    let v = json_of(&out);
    assert_eq!(v["kind"], "delta");
    assert_eq!(v["bids"], json!([]));
    assert_eq!(v["asks"], json!([["-1.00", "0.000000"]]));
}

#[test]
fn trade_and_status_json_fields() {
    let h = hdr(RecordKind::Trade);
    let mut out = BytesMut::new();
    let t = Trade {
        px: 6_500_020,
        qty: 10_000,
        trade_id: u64::MAX,
        taker_side: Side::Bid,
    };
    encode_trade_json(&mut out, &meta("ETH-USD"), &h, &t);
    assert_eq!(
        json_of(&out),
        json!({
            "kind": "trade", "symbol": "ETH-USD", "sid": 7, "seq": h.seq,
            "exch_ts": h.exch_ts, "recv_ts": h.recv_ts,
            "price": "65000.20", "qty": "0.010000", "trade_id": u64::MAX, "side": "buy"
        })
    );
    out.clear();
    encode_trade_json(
        &mut out,
        &meta("ETH-USD"),
        &h,
        &Trade {
            taker_side: Side::Ask,
            ..t
        },
    );
    assert_eq!(json_of(&out)["side"], "sell");

    out.clear();
    let h = RecordHeader {
        seq: 0,
        ..hdr(RecordKind::Status)
    };
    encode_status_json(&mut out, &meta("ETH-USD"), &h, StatusCode::FeedResumed);
    assert_eq!(
        json_of(&out),
        json!({
            "kind": "status", "symbol": "ETH-USD", "sid": 7, "seq": 0,
            "exch_ts": h.exch_ts, "recv_ts": h.recv_ts, "code": 2
        })
    );
}

#[test]
fn json_symbol_is_escaped() {
    let nasty = "a\"b\\c\n\u{1}\u{1f}é€";
    let mut out = BytesMut::new();
    encode_status_json(
        &mut out,
        &meta(nasty),
        &hdr(RecordKind::Status),
        StatusCode::FeedStale,
    );
    assert_eq!(json_of(&out)["symbol"], nasty);
    let mut s = BytesMut::new();
    write_json_string(&mut s, "x\u{1}\"");
    assert_eq!(&s[..], br#""x\u0001\"""#);
}

fn dec(v: i64, d: u8) -> String {
    let mut out = BytesMut::new();
    write_decimal(&mut out, v, d);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn write_decimal_cases() {
    assert_eq!(dec(0, 0), "0");
    assert_eq!(dec(0, 3), "0.000");
    assert_eq!(dec(150, 2), "1.50");
    assert_eq!(dec(5, 3), "0.005");
    assert_eq!(dec(-5, 3), "-0.005");
    assert_eq!(dec(-1234, 0), "-1234");
    assert_eq!(dec(i64::MAX, 18), "9.223372036854775807");
    assert_eq!(dec(i64::MIN, 0), "-9223372036854775808");
    assert_eq!(dec(i64::MIN, 19), "-0.9223372036854775808");
    assert_eq!(dec(1, 25), "0.0000000000000000000000001");
}

#[test]
fn parse_decimal_accepts() {
    assert_eq!(parse_decimal(b"65000.10", 2), Ok(6_500_010));
    assert_eq!(parse_decimal(b"1.5", 6), Ok(1_500_000));
    assert_eq!(parse_decimal(b"1.500000000", 2), Ok(150));
    assert_eq!(parse_decimal(b"007", 0), Ok(7));
    assert_eq!(parse_decimal(b"-0.01", 2), Ok(-1));
    assert_eq!(parse_decimal(b"-0", 2), Ok(0));
    assert_eq!(parse_decimal(b"0.000", 30), Ok(0));
    assert_eq!(parse_decimal(b"9223372036854775807", 0), Ok(i64::MAX));
    assert_eq!(parse_decimal(b"-9223372036854775808", 0), Ok(i64::MIN));
    assert_eq!(parse_decimal(b"-9.223372036854775808", 18), Ok(i64::MIN));
}

#[test]
fn parse_decimal_rejects() {
    use DecimalError::*;
    for (s, d, e) in [
        (&b""[..], 2, Empty),
        (b"-", 2, Empty),
        (b"+1", 2, Syntax),
        (b".5", 2, Syntax),
        (b"1.", 2, Syntax),
        (b"-.5", 2, Syntax),
        (b"1.2.3", 2, Syntax),
        (b"1e3", 2, Syntax),
        (b" 1", 2, Syntax),
        (b"1 ", 2, Syntax),
        (b"--1", 2, Syntax),
        (b"1,5", 2, Syntax),
        (b"1.5x", 0, Syntax),
        (b"1.001", 2, Precision),
        (b"0.5", 0, Precision),
        (b"9223372036854775808", 0, Overflow),
        (b"-9223372036854775809", 0, Overflow),
        (b"92233720368547758.08", 3, Overflow),
        (b"99999999999999999999999", 0, Overflow),
        (b"1", 19, Overflow),
    ] {
        assert_eq!(
            parse_decimal(s, d),
            Err(e),
            "{:?}",
            String::from_utf8_lossy(s)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    /// The one-pass fast path of `parse_decimal` never decides differently from the full
    /// parser: random strings over digits, sign and point, of every length around its limits.
    #[test]
    fn parse_decimal_fast_path_agrees(
        s in proptest::collection::vec(prop_oneof![
            8 => proptest::sample::select(b"0123456789".to_vec()),
            1 => Just(b'.'),
            1 => Just(b'-'),
            1 => Just(b'x'),
        ], 0..24),
        decimals in 0u8..21,
    ) {
        prop_assert_eq!(parse_decimal(&s, decimals), parse_decimal_full(&s, decimals));
        if let Some(v) = parse_decimal_fast(&s, decimals) {
            prop_assert_eq!(Ok(v), parse_decimal_full(&s, decimals));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decimal_round_trips(v in any::<i64>(), d in 0u8..=19) {
        let s = dec(v, d);
        prop_assert_eq!(parse_decimal(s.as_bytes(), d), Ok(v));
        // Independent reference: integer and fraction parts by i128 arithmetic.
        let scale = 10i128.pow(u32::from(d));
        let a = i128::from(v).abs();
        let sign = if v < 0 { "-" } else { "" };
        let expect = if d == 0 {
            format!("{sign}{a}")
        } else {
            format!("{sign}{}.{:0width$}", a / scale, a % scale, width = usize::from(d))
        };
        prop_assert_eq!(s, expect);
    }

    #[test]
    fn extra_zero_digits_are_accepted(v in any::<i64>(), d in 0u8..=12, zeros in 1usize..8) {
        let mut s = dec(v, d);
        if d == 0 {
            s.push('.');
        }
        s.extend(std::iter::repeat_n('0', zeros));
        prop_assert_eq!(parse_decimal(s.as_bytes(), d), Ok(v));
    }

    /// Short and long inputs, fast and checked paths: the same answers as an independent
    /// big-integer reference.
    #[test]
    fn parse_matches_a_wide_reference(
        neg in any::<bool>(),
        int in "[0-9]{1,22}",
        frac in proptest::option::of("[0-9]{1,22}"),
        d in 0u8..=22,
    ) {
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        s.push_str(&int);
        if let Some(f) = &frac {
            s.push('.');
            s.push_str(f);
        }
        let frac = frac.unwrap_or_default();
        let kept = &frac[..frac.len().min(usize::from(d))];
        // Documented order: digits that do not fit, then digits that would be lost.
        let head_overflows = format!("{int}{kept}").parse::<u64>().is_err();
        let expect = if head_overflows {
            Err(DecimalError::Overflow)
        } else if frac[kept.len()..].bytes().any(|b| b != b'0') {
            Err(DecimalError::Precision)
        } else {
            let digits = format!("{int}{kept:0<width$}", width = usize::from(d));
            match digits.parse::<u128>() {
                Ok(m) => {
                    let v = if neg { -(m as i128) } else { m as i128 };
                    i64::try_from(v).map_err(|_| DecimalError::Overflow)
                }
                Err(_) => Err(DecimalError::Overflow),
            }
        };
        prop_assert_eq!(parse_decimal(s.as_bytes(), d), expect, "{}", s);
    }

    #[test]
    fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..30), d in any::<u8>()) {
        let _ = parse_decimal(&s, d);
    }
}

proptest! {
    /// The JSON writer's in-place numbers are exactly `write_decimal` / `write_u64`.
    #[test]
    fn json_writer_numbers_match_the_reference(value in any::<i64>(), decimals in 0u8..=25, u in any::<u64>()) {
        let mut out = BytesMut::new();
        let mut w = JsonWriter::new(&mut out);
        w.decimal(value, decimals);
        w.lit(b" ");
        w.u64(u);
        w.finish();
        let mut want = BytesMut::new();
        write_decimal(&mut want, value, decimals);
        want.put_u8(b' ');
        write_u64(&mut want, u);
        prop_assert_eq!(&out[..], &want[..]);
    }

    /// Book records of any size (many flushes of the writer's buffer) are valid JSON holding
    /// exactly the levels given.
    #[test]
    fn book_json_round_trips(
        levels in proptest::collection::vec((any::<i64>(), any::<i64>()), 0..300),
        split in 0usize..300,
    ) {
        let levels: Vec<Level> = levels.into_iter().map(|(px, qty)| Level { px, qty }).collect();
        let (bids, asks) = levels.split_at(split.min(levels.len()));
        let m = meta("A\"B\\C");
        let mut out = BytesMut::new();
        out.put_slice(b"x");
        encode_book_json(&mut out, &m, &hdr(RecordKind::Delta), bids, asks);
        prop_assert_eq!(out[0], b'x');
        let v: Value = serde_json::from_slice(&out[1..]).unwrap();
        prop_assert_eq!(&v["symbol"], "A\"B\\C");
        for (side, want) in [("bids", bids), ("asks", asks)] {
            let got = v[side].as_array().unwrap();
            prop_assert_eq!(got.len(), want.len());
            for (g, l) in got.iter().zip(want) {
                let px = parse_decimal(g[0].as_str().unwrap().as_bytes(), m.px_decimals).unwrap();
                let qty = parse_decimal(g[1].as_str().unwrap().as_bytes(), m.qty_decimals).unwrap();
                prop_assert_eq!((px, qty), (l.px, l.qty));
            }
        }
    }
}

#[test]
fn recv_ts_reads_back_from_an_encoded_record() {
    let h = hdr(RecordKind::Status);
    let mut out = BytesMut::new();
    encode_status(&mut out, &h, StatusCode::FeedStale);
    assert_eq!(record_recv_ts(&out), Some(h.recv_ts));
    assert_eq!(record_recv_ts(&out[..31]), None);
}

// ---- book checksum (protocol 1.1 §3.2) ----------------------------------------------------

/// CRC-32 (IEEE, reflected, as zlib) bit by bit: an implementation independent of `crc32fast`.
fn crc32_reference(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// §3.2 read literally: the client's book is the top `depth` levels (0 = all); the checksum
/// covers its top `min(10, depth)` (10 for depth 0) of each side, bids then asks.
fn checksum_reference(book: &crate::book::Book, depth: u16) -> u32 {
    let n = if depth == 0 { 10 } else { depth.min(10) } as usize;
    let mut bytes = Vec::new();
    for side in [book.bids(), book.asks()] {
        let held: Vec<_> = if depth == 0 {
            side.to_vec()
        } else {
            side.iter().take(usize::from(depth)).copied().collect()
        };
        for l in held.iter().take(n) {
            bytes.extend_from_slice(&l.px.to_le_bytes());
            bytes.extend_from_slice(&l.qty.to_le_bytes());
        }
    }
    crc32_reference(&bytes)
}

#[test]
fn checksum_of_known_inputs() {
    assert_eq!(crc32_reference(b"123456789"), 0xCBF4_3926);
    assert_eq!(book_checksum(&[], &[], 10), 0);
    let l = Level { px: 1, qty: 2 };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&1i64.to_le_bytes());
    bytes.extend_from_slice(&2i64.to_le_bytes());
    assert_eq!(book_checksum(&[l], &[], 10), crc32_reference(&bytes));
    assert_eq!(checksum_levels(1), 1);
    assert_eq!(checksum_levels(10), 10);
    assert_eq!(checksum_levels(25), 10);
    assert_eq!(checksum_levels(0), 10);
}

#[test]
fn book_records_carry_the_checksum() {
    let bids = [Level { px: 100, qty: 5 }];
    let asks = [Level { px: 101, qty: 7 }];
    let crc = book_checksum(&bids, &asks, 10);
    let mut out = BytesMut::new();
    try_encode_book_crc(&mut out, &hdr(RecordKind::Delta), &bids, &asks, crc).unwrap();
    assert_eq!(out[3], FLAG_CHECKSUM);
    assert_eq!(u32_at(&out, RECORD_HEADER_LEN + 4), crc);
    assert_eq!(i64_at(&out, RECORD_HEADER_LEN + 8), 100);
    let mut out = BytesMut::new();
    try_encode_book_crc(&mut out, &hdr(RecordKind::Snapshot), &bids, &asks, crc).unwrap();
    assert_eq!(out[3], FLAG_CHECKSUM | FLAG_SNAPSHOT);
    // Too long: nothing written, as without the checksum.
    let many = vec![Level { px: 1, qty: 1 }; MAX_BOOK_LEVELS + 1];
    let mut out = BytesMut::new();
    assert!(try_encode_book_crc(&mut out, &hdr(RecordKind::Delta), &many, &[], 1).is_err());
    assert!(out.is_empty());
    let mut out = BytesMut::new();
    encode_book_json_crc(
        &mut out,
        &meta("BTC-USD"),
        &hdr(RecordKind::Delta),
        &bids,
        &asks,
        crc,
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["crc"], json!(crc));
    assert_eq!(v["bids"], json!([["1.00", "0.000005"]]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random books (a snapshot, then random changes) and every depth window: the engine's
    /// checksum of the client's book equals the literal reading of §3.2.
    #[test]
    fn checksum_matches_an_independent_implementation(
        bids in proptest::collection::btree_map(1i64..500, 1i64..1_000_000, 0..40),
        asks in proptest::collection::btree_map(500i64..1000, 1i64..1_000_000, 0..40),
        changes in proptest::collection::vec((any::<bool>(), -10i64..1010, 0i64..3), 0..60),
        depth_idx in 0usize..crate::book::DEPTH_COUNT,
    ) {
        use crate::book::{Book, DEPTHS, Side, WindowDeltas};
        let lv = |m: &std::collections::BTreeMap<i64, i64>| -> Vec<Level> {
            m.iter().map(|(&px, &qty)| Level { px, qty }).collect()
        };
        let mut book = Book::new();
        book.load_snapshot(&lv(&bids), &lv(&asks)).unwrap();
        let mut w = WindowDeltas::new();
        for (bid, px, qty) in changes {
            let side = if bid { Side::Bid } else { Side::Ask };
            book.apply(side, px, qty, &mut w).unwrap();
            let depth = DEPTHS[depth_idx];
            let n = checksum_levels(depth);
            let engine = book_checksum(
                book.top(Side::Bid, usize::from(depth)),
                book.top(Side::Ask, usize::from(depth)),
                n,
            );
            prop_assert_eq!(engine, checksum_reference(&book, depth));
        }
    }
}
